//! Conversions from stored records to the wire shapes of api.md §3 (job records, progress, log entries, upstream
//! messages, event-stream lines). Shared by the scheduler (submit replies) and the HTTP handlers.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, RwLock};

use base64::Engine as _;
use time::OffsetDateTime;

use protocol::rest::{
    JobLogsPayload, JobStatus, JobStatusPayload, LogEntry, Message, MessagePayload, NoticeLine,
    OutputLine, Progress, StatusLine, TRANSPORT_HTTP_POLLING, TransportMetadata,
};
use protocol::{EventId, JobId, rest};

use crate::scheduler::plan::{ClassKey, WaitInfo};
use crate::store::records::{Event, JobRecord, StoredProgress, from_micros};

/// Why each pending job waits, as the scheduler last computed it (per class, plus per-job retry delays).
#[derive(Debug, Clone, Default)]
pub struct WaitBoard {
    inner: Arc<RwLock<WaitMap>>,
}

#[derive(Debug, Default)]
struct WaitMap {
    classes: HashMap<ClassKey, WaitInfo>,
    jobs: HashMap<JobId, WaitInfo>,
}

impl WaitBoard {
    /// The wait of a pending job.
    pub fn wait_of(&self, record: &JobRecord) -> Option<WaitInfo> {
        if record.status != JobStatus::Pending {
            return None;
        }
        let map = self
            .inner
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if let Some(wait) = map.jobs.get(&record.id) {
            return Some(wait.clone());
        }
        map.classes.get(&class_key(record)).cloned()
    }

    /// The wait of a class, as the last pass computed it.
    pub fn wait_of_class(&self, key: &ClassKey) -> Option<WaitInfo> {
        let map = self
            .inner
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        map.classes.get(key).cloned()
    }

    /// Replaces the board after a placement pass.
    pub fn publish(&self, classes: HashMap<ClassKey, WaitInfo>, jobs: HashMap<JobId, WaitInfo>) {
        let mut map = self
            .inner
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        map.classes = classes;
        map.jobs = jobs;
    }
}

/// The placement class of a job.
pub fn class_key(record: &JobRecord) -> ClassKey {
    ClassKey {
        binary: record.binary.clone(),
        paths: record.paths.clone(),
    }
}

fn opt_time(value: Option<i64>) -> Option<OffsetDateTime> {
    value.map(from_micros)
}

/// `HH:MM:SS.ffffff` of a microsecond count.
pub fn format_out_time(us: i64) -> String {
    let us = us.max(0);
    let seconds = us / 1_000_000;
    format!(
        "{:02}:{:02}:{:02}.{:06}",
        seconds / 3600,
        (seconds / 60) % 60,
        seconds % 60,
        us % 1_000_000
    )
}

/// The wire progress of a stored snapshot, with `percent` and `eta_seconds` derived (api.md §3.2).
pub fn progress(stored: &StoredProgress) -> Progress {
    let out_time_seconds = stored.out_time_us.map(|us| us.max(0) as f64 / 1e6);
    let duration_seconds = stored
        .duration_us
        .filter(|us| *us > 0)
        .map(|us| us as f64 / 1e6);
    let percent = match (out_time_seconds, duration_seconds) {
        (Some(out), Some(duration)) => {
            Some(((out / duration * 100.0).clamp(0.0, 100.0) * 10.0).round() / 10.0)
        }
        _ => None,
    };
    let eta_seconds = match (out_time_seconds, duration_seconds, stored.speed) {
        (Some(out), Some(duration), Some(speed)) if speed > 0.0 => {
            Some(((duration - out) / speed).max(0.0))
        }
        _ => None,
    };
    Progress {
        frame: stored.frame,
        fps: stored.fps,
        out_time: stored.out_time_us.map(format_out_time),
        out_time_seconds,
        duration_seconds,
        percent,
        speed: stored.speed,
        bitrate_kbps: stored.bitrate_kbps,
        size_bytes: stored.size_bytes,
        eta_seconds,
        updated_at: from_micros(stored.updated_at),
    }
}

/// The API's job record (api.md §3.1).
pub fn job_record(record: &JobRecord, wait: Option<WaitInfo>) -> rest::JobRecord {
    let (wait_reason, wait_detail) = match wait {
        Some(wait) if record.status == JobStatus::Pending => {
            (Some(wait.reason.as_str().to_owned()), Some(wait.detail))
        }
        _ => (None, None),
    };
    rest::JobRecord {
        transport: TRANSPORT_HTTP_POLLING.to_owned(),
        transport_metadata: TransportMetadata {
            path: format!("/poll/jobs/{}", record.id),
        },
        job_id: record.id,
        requester_id: record.requester.clone(),
        binary_name: record.binary.clone(),
        arguments: record.arguments.clone(),
        paths: record.paths.clone(),
        working_directory: record.working_directory.clone(),
        status: record.status,
        exit_code: record.exit_code,
        worker_id: if record.status == JobStatus::Pending {
            None
        } else {
            record.worker_id.clone()
        },
        created_at: from_micros(record.created_at),
        last_update: from_micros(record.last_update),
        worker_last_seen: opt_time(record.worker_last_seen),
        client_last_seen: opt_time(record.client_last_seen),
        heartbeat_interval: record.heartbeat_interval,
        monitor: record.monitor,
        priority: record.priority,
        idempotency_key: record.idempotency_key.clone(),
        attempt: record.attempt,
        runs: record.runs,
        stdin: record.stdin,
        started_at: opt_time(record.started_at),
        finished_at: opt_time(record.finished_at),
        progress: record.progress.as_ref().map(progress),
        wait_reason,
        wait_detail,
        reason: record.reason.clone(),
        reason_detail: record.reason_detail.clone(),
    }
}

/// Strips one trailing line terminator (`\n`, `\r\n` or `\r`) and decodes lossily (api.md §3.3).
pub fn log_content(bytes: &[u8]) -> String {
    let trimmed = bytes
        .strip_suffix(b"\r\n")
        .or_else(|| bytes.strip_suffix(b"\n"))
        .or_else(|| bytes.strip_suffix(b"\r"))
        .unwrap_or(bytes);
    String::from_utf8_lossy(trimmed).into_owned()
}

/// The code of the notice stored when output reaches the cap.
pub const NOTICE_OUTPUT_TRUNCATED: &str = "output_truncated";

/// The synthetic log entry that stands for the `output_truncated` notice (api.md §3.3).
pub fn truncation_entry(id: EventId, time: i64, message: &str) -> LogEntry {
    let bytes = message
        .strip_prefix("output truncated at ")
        .and_then(|rest| rest.split(' ').next())
        .unwrap_or("?");
    LogEntry {
        id,
        stream: rest::OutputStream::Stderr,
        content: format!("[dffmpeg] output truncated at {bytes} bytes"),
        timestamp: Some(from_micros(time)),
    }
}

/// Whether a stored event shows as a log entry: output, or the truncation notice.
pub fn is_log_event(event: &Event) -> bool {
    match event {
        Event::Output { .. } => true,
        Event::Notice { code, .. } => code == NOTICE_OUTPUT_TRUNCATED,
        Event::Status { .. } => false,
    }
}

/// A stored event as a log entry, if it is one.
pub fn log_entry(id: EventId, event: &Event) -> Option<LogEntry> {
    match event {
        Event::Output {
            stream,
            time,
            bytes,
            ..
        } => Some(LogEntry {
            id,
            stream: *stream,
            content: log_content(bytes),
            timestamp: Some(from_micros(*time)),
        }),
        Event::Notice {
            code,
            time,
            message,
            ..
        } if code == NOTICE_OUTPUT_TRUNCATED => Some(truncation_entry(id, *time, message)),
        _ => None,
    }
}

/// Upstream messages from a run of events (api.md §3.5): status events each become a `job_status`; consecutive
/// output events (and the truncation notice) are grouped into `job_logs` of at most 100 entries.
pub fn messages(record: &JobRecord, events: &[(EventId, Arc<Event>)]) -> Vec<Message> {
    let mut out = Vec::new();
    let mut logs: Vec<LogEntry> = Vec::new();
    let mut logs_sender: Option<String> = None;
    let flush_logs = |out: &mut Vec<Message>, logs: &mut Vec<LogEntry>, sender: &Option<String>| {
        if let Some(last) = logs.last() {
            out.push(Message {
                message_id: last.id,
                sender_id: sender.clone(),
                recipient_id: record.requester.clone(),
                job_id: record.id,
                timestamp: last.timestamp.unwrap_or(OffsetDateTime::UNIX_EPOCH),
                sent_at: None,
                message_type: "job_logs".to_owned(),
                payload: MessagePayload::Logs(JobLogsPayload {
                    logs: std::mem::take(logs),
                }),
            });
        }
    };
    for (id, event) in events {
        match event.as_ref() {
            Event::Status {
                time,
                status,
                exit_code,
                sender,
                ..
            } => {
                flush_logs(&mut out, &mut logs, &logs_sender);
                out.push(Message {
                    message_id: *id,
                    sender_id: sender.clone(),
                    recipient_id: record.requester.clone(),
                    job_id: record.id,
                    timestamp: from_micros(*time),
                    sent_at: None,
                    message_type: "job_status".to_owned(),
                    payload: MessagePayload::Status(JobStatusPayload {
                        status: *status,
                        exit_code: *exit_code,
                        last_update: from_micros(*time),
                    }),
                });
            }
            other => {
                if let Some(entry) = log_entry(*id, other) {
                    if logs.is_empty() {
                        logs_sender = record.worker_id.clone();
                    }
                    logs.push(entry);
                    if logs.len() == 100 {
                        flush_logs(&mut out, &mut logs, &logs_sender);
                    }
                }
            }
        }
    }
    flush_logs(&mut out, &mut logs, &logs_sender);
    out
}

/// A stored event as an event-stream line, if its type is wanted.
pub fn event_line(
    id: EventId,
    event: &Event,
    types: &HashSet<rest::EventType>,
) -> Option<rest::EventLine> {
    match event {
        Event::Status {
            time,
            attempt,
            status,
            exit_code,
            worker_id,
            reason,
            reason_detail,
            ..
        } => types.contains(&rest::EventType::Status).then(|| {
            rest::EventLine::Status(StatusLine {
                id,
                time: from_micros(*time),
                attempt: *attempt,
                status: *status,
                exit_code: *exit_code,
                worker_id: worker_id.clone(),
                reason: reason.clone(),
                reason_detail: reason_detail.clone(),
            })
        }),
        Event::Output { .. } => types
            .contains(&rest::EventType::Output)
            .then(|| output_line(Some(id), event)),
        Event::Notice {
            time,
            attempt,
            code,
            message,
        } => types.contains(&rest::EventType::Notice).then(|| {
            rest::EventLine::Notice(NoticeLine {
                id,
                time: from_micros(*time),
                attempt: *attempt,
                code: code.clone(),
                message: message.clone(),
            })
        }),
    }
}

/// An output event as a line: `text` when UTF-8, else `base64`; `id` absent for output past the cap.
pub fn output_line(id: Option<EventId>, event: &Event) -> rest::EventLine {
    let Event::Output {
        attempt,
        stream,
        time,
        bytes,
        ..
    } = event
    else {
        unreachable!("output_line takes output events only");
    };
    let (text, base64) = match std::str::from_utf8(bytes) {
        Ok(text) => (Some(text.to_owned()), None),
        Err(_) => (
            None,
            Some(base64::engine::general_purpose::STANDARD.encode(bytes.as_slice())),
        ),
    };
    rest::EventLine::Output(OutputLine {
        id,
        time: from_micros(*time),
        attempt: *attempt,
        stream: *stream,
        text,
        base64,
        stored: if id.is_none() { Some(false) } else { None },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn progress_derives_percent_and_eta() {
        let stored = StoredProgress {
            frame: Some(112),
            fps: Some(48.2),
            out_time_us: Some(4_480_000),
            duration_us: Some(10_000_000),
            speed: Some(1.93),
            bitrate_kbps: None,
            size_bytes: None,
            updated_at: 0,
        };
        let progress = progress(&stored);
        assert_eq!(progress.out_time.as_deref(), Some("00:00:04.480000"));
        assert_eq!(progress.percent, Some(44.8));
        let eta = progress.eta_seconds.unwrap();
        assert!((eta - 2.86).abs() < 0.01, "{eta}");
        let no_duration = StoredProgress {
            duration_us: Some(0),
            ..stored
        };
        assert_eq!(self::progress(&no_duration).percent, None);
    }

    #[test]
    fn log_content_strips_one_terminator() {
        assert_eq!(log_content(b"frame=1\r"), "frame=1");
        assert_eq!(log_content(b"line\r\n"), "line");
        assert_eq!(log_content(b"line\n\n"), "line\n");
        assert_eq!(log_content(b"\xff\n"), "\u{fffd}");
    }

    #[test]
    fn the_log_event_test_agrees_with_log_entry() {
        let id = EventId(protocol::Ulid::from_u128(1));
        let events = [
            Event::Output {
                attempt: 1,
                seq: 0,
                stream: rest::OutputStream::Stderr,
                time: 0,
                bytes: b"x\n".to_vec().into(),
            },
            Event::Notice {
                time: 0,
                attempt: 1,
                code: NOTICE_OUTPUT_TRUNCATED.into(),
                message: "output truncated at 10 bytes".into(),
            },
            Event::Notice {
                time: 0,
                attempt: 1,
                code: "attempt_lost".into(),
                message: String::new(),
            },
            Event::Status {
                time: 0,
                attempt: 1,
                status: JobStatus::Running,
                exit_code: None,
                worker_id: None,
                reason: None,
                reason_detail: None,
                sender: None,
            },
        ];
        let kinds: Vec<bool> = events.iter().map(is_log_event).collect();
        assert_eq!(kinds, vec![true, true, false, false]);
        for event in &events {
            assert_eq!(is_log_event(event), log_entry(id, event).is_some());
        }
    }
}

//! Worker sessions as the scheduler sees them: `hello`/`welcome` with resume and cancel of held jobs
//! (worker-protocol.md §5.1, lifecycle.md W1–W6), every job-scoped frame with fencing (worker-protocol.md §7),
//! lost attempts and their retries (lifecycle.md §1.4), rejections and assignment timeouts (J7, J8), and the
//! worker-side janitor actions (R1–R4). Frames leave through each session's `SessionLink`, never a socket.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use bytes::Bytes;
use time::OffsetDateTime;
use tokio::sync::{mpsc, oneshot, watch};
use tokio::time::Instant;

use protocol::rest::{JobStatus, OutputStream, Progress, WorkerStatus};
use protocol::ws::{
    self, Ack, AckResult, AssignJob, CancelJob, CanceledJob, CoordinatorMessage, FinishedStatus,
    HeldState, Hello, JobFinished, JobLogs, JobProgress, ProtocolVersion, ResumedJob, Welcome,
    WorkerMessage, cancel_reason, close,
};
use protocol::{JobId, SessionId};

use super::{Scheduler, Transition, Tx, WorkerState};
use crate::hub::Live;
use crate::store::records::{FinishedReport, JobRecord, StoredProgress, WorkerRecord, micros};
use crate::views::{self, NOTICE_OUTPUT_TRUNCATED};

/// Something to write to a worker's socket.
#[derive(Debug, Clone)]
pub enum Outbound {
    /// An encoded binary frame.
    Frame(Bytes),
    /// Close the session with this code and reason, after the frames queued before it.
    Close(u16, String),
}

/// The scheduler's handle on one open session: a bounded queue of frames, and a way to close it even when the
/// queue is full.
#[derive(Debug, Clone)]
pub struct SessionLink {
    pub session_id: SessionId,
    pub tx: mpsc::Sender<Outbound>,
    /// Set to a close code to end the session at once (`4000`, `4003`, `4006`).
    pub kill: Arc<watch::Sender<Option<u16>>>,
}

impl SessionLink {
    /// Queues a frame; a full queue closes the session with `4006` (the worker's jobs keep their lease).
    pub fn send(&self, frame: &CoordinatorMessage) -> bool {
        match self
            .tx
            .try_send(Outbound::Frame(Bytes::from(ws::encode(frame))))
        {
            Ok(()) => true,
            Err(mpsc::error::TrySendError::Full(_)) => {
                self.kill(close::QUEUE_OVERFLOW);
                false
            }
            Err(mpsc::error::TrySendError::Closed(_)) => false,
        }
    }

    pub fn kill(&self, code: u16) {
        let _ = self.kill.send(Some(code));
    }
}

/// Why the scheduler refused a `hello`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HelloRefusal {
    pub code: &'static str,
    pub message: String,
    pub close: u16,
}

/// The `assign_job` frame of a job's current attempt (worker-protocol.md §5.3).
pub(super) fn assign_frame(record: &JobRecord) -> AssignJob {
    AssignJob {
        job_id: record.id,
        attempt: record.attempt,
        binary: record.binary.clone(),
        arguments: record.arguments.clone(),
        paths: record.paths.clone(),
        // An unmapped client directory is never sent.
        working_directory: record
            .working_directory
            .clone()
            .filter(|directory| directory.starts_with('$') || directory.starts_with("file:$")),
        heartbeat_interval_ms: record.heartbeat_interval.saturating_mul(1000),
        stdin: record.stdin,
        priority: record.priority,
        requester_id: record.requester.clone(),
    }
}

/// Worker times more than 24 h from the coordinator's clock are replaced by the receive time (limits §5).
fn worker_time(ms: i64, now: OffsetDateTime) -> i64 {
    let now_us = micros(now);
    let us = ms.saturating_mul(1000);
    if (us - now_us).abs() > 86_400_000_000 {
        now_us
    } else {
        us
    }
}

fn finite_non_negative(value: Option<f64>) -> Option<f64> {
    value.filter(|v| v.is_finite() && *v >= 0.0)
}

/// Progress as stored, with absurd values made null (limits-and-bad-input.md §5).
fn sanitize_progress(progress: &JobProgress, now: OffsetDateTime) -> StoredProgress {
    StoredProgress {
        frame: progress.frame,
        fps: finite_non_negative(progress.fps),
        out_time_us: progress.out_time_us.filter(|us| *us >= 0),
        duration_us: progress.duration_us.filter(|us| *us > 0),
        speed: finite_non_negative(progress.speed),
        bitrate_kbps: finite_non_negative(progress.bitrate_kbps),
        size_bytes: progress.total_size,
        updated_at: micros(now),
    }
}

fn finished_status(status: FinishedStatus) -> JobStatus {
    match status {
        FinishedStatus::Completed => JobStatus::Completed,
        FinishedStatus::Failed => JobStatus::Failed,
        FinishedStatus::Canceled => JobStatus::Canceled,
    }
}

/// Sleeps until `at`, or forever without one.
pub(super) async fn sleep_until_opt(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

fn coordinator() -> Option<String> {
    Some(protocol::ids::RESERVED_IDENTITY.to_owned())
}

impl Scheduler {
    /// Queues `cancel_job` for a job's current attempt to its worker.
    pub(super) fn send_cancel(&mut self, tx: &mut Tx, id: JobId, reason: &str) {
        if let Some(job) = self.jobs.get(&id)
            && let Some(worker) = job.record.worker_id.clone()
        {
            let frame = CancelJob {
                job_id: id,
                attempt: job.record.attempt,
                reason: reason.to_owned(),
            };
            tx.frames
                .push((worker, CoordinatorMessage::CancelJob(frame)));
        }
    }

    /// Is `(id, attempt)` the current, active attempt of a job held by `worker`?
    fn current(&self, id: JobId, attempt: u32, worker: &str) -> bool {
        self.jobs.get(&id).is_some_and(|job| {
            job.record.attempt == attempt
                && job.record.worker_id.as_deref() == Some(worker)
                && job.record.status.is_active()
        })
    }

    /// Answers a frame for another attempt with one `cancel_job {stale_attempt}` per `(job, attempt)` per session.
    fn stale(&mut self, tx: &mut Tx, worker: &str, id: JobId, attempt: u32) {
        if let Some(state) = self.workers.get_mut(worker)
            && state.stale_sent.insert((id, attempt))
        {
            let frame = CancelJob {
                job_id: id,
                attempt,
                reason: cancel_reason::STALE_ATTEMPT.to_owned(),
            };
            tx.frames
                .push((worker.to_owned(), CoordinatorMessage::CancelJob(frame)));
        }
    }

    fn push_notice(
        &mut self,
        tx: &mut Tx,
        id: JobId,
        code: &str,
        message: String,
        now: OffsetDateTime,
    ) {
        let Some(mut job) = self.jobs.remove(&id) else {
            return;
        };
        let event = crate::store::records::Event::Notice {
            time: micros(now),
            attempt: job.record.attempt,
            code: code.to_owned(),
            message,
        };
        self.push_event(tx, &mut job.record, event);
        self.jobs.insert(id, job);
    }

    /// W1, W2, W5: a session's `hello`. Held jobs listed at the current attempt resume; jobs the coordinator has on
    /// the worker that it does not list are lost attempts now; anything else it lists is canceled in `welcome`.
    pub(super) fn worker_hello(
        &mut self,
        hello: Hello,
        link: SessionLink,
        now: OffsetDateTime,
        reply: oneshot::Sender<Result<(), HelloRefusal>>,
    ) {
        let id = hello.worker_id.clone();
        let mut binaries: Vec<String> = hello
            .binaries
            .iter()
            .filter(|name| self.settings.allowed_binaries.contains(name))
            .cloned()
            .collect();
        binaries.sort();
        binaries.dedup();
        let mut paths = hello.paths.clone();
        paths.sort();
        paths.dedup();
        let status = if hello.status == "draining" {
            WorkerStatus::Draining
        } else {
            WorkerStatus::Online
        };
        let minor = protocol::PROTOCOL_VERSION.minor;
        let negotiated = ProtocolVersion {
            major: protocol::PROTOCOL_VERSION.major,
            minor,
        };
        let heartbeat_s =
            u32::try_from(self.settings.session.heartbeat_interval.as_secs()).unwrap_or(u32::MAX);
        let mut tx = Tx::default();
        {
            let state = self.workers.entry(id.clone()).or_insert_with(|| {
                let record = WorkerRecord {
                    first_seen: micros(now),
                    last_seen: micros(now),
                    version: None,
                    host: None,
                    binaries: Vec::new(),
                    binary_versions: Vec::new(),
                    paths: Vec::new(),
                    capabilities: Vec::new(),
                    slots: 1,
                    heartbeat_interval_s: heartbeat_s,
                    protocol_version: None,
                    last_status: "offline".to_owned(),
                };
                WorkerState::offline(id.clone(), record)
            });
            if let Some(old) = state.link.take()
                && old.session_id != link.session_id
            {
                old.kill(close::REPLACED);
            }
            state.binaries = binaries.clone();
            state.paths = paths.clone();
            state.slots = hello.max_concurrent_jobs;
            state.status = status;
            state.link = Some(link.clone());
            state.connected_since = Some(now);
            state.last_frame = Some(now);
            state.last_seen = now;
            state.stale_sent.clear();
            let record = &mut state.record;
            record.last_seen = micros(now);
            record.version = Some(hello.version.clone());
            record.host = hello.host.clone();
            record.binaries = binaries.clone();
            record.binary_versions = hello
                .binary_versions
                .clone()
                .unwrap_or_default()
                .into_iter()
                .collect();
            record.paths = paths.clone();
            record.capabilities = hello.capabilities.clone();
            record.slots = hello.max_concurrent_jobs;
            record.heartbeat_interval_s = heartbeat_s;
            record.protocol_version = Some(negotiated.to_string());
            record.last_status = status.as_str().to_owned();
            tx.batch.put_worker(&id, record);
        }
        let held: HashMap<JobId, (u32, HeldState)> = hello
            .jobs
            .iter()
            .map(|job| (job.job_id, (job.attempt, job.state)))
            .collect();
        let mine: Vec<JobId> = self
            .workers
            .get(&id)
            .map(|state| state.jobs.iter().copied().collect())
            .unwrap_or_default();
        let mut resumed = Vec::new();
        let mut after_welcome = Vec::new();
        let mut handled: HashSet<JobId> = HashSet::new();
        for job_id in mine {
            let Some(job) = self.jobs.get_mut(&job_id) else {
                continue;
            };
            match held.get(&job_id) {
                Some((attempt, _)) if *attempt == job.record.attempt => {
                    resumed.push(ResumedJob {
                        job_id,
                        attempt: job.record.attempt,
                        next_output_seq: job.record.next_output_seq,
                    });
                    job.record.worker_last_seen = Some(micros(now));
                    if job.record.status == JobStatus::Canceling {
                        after_welcome.push(CoordinatorMessage::CancelJob(CancelJob {
                            job_id,
                            attempt: job.record.attempt,
                            reason: cancel_reason::REQUESTED.to_owned(),
                        }));
                    }
                    tx.batch.put_job(&job.record, Some(job.record.status));
                    handled.insert(job_id);
                }
                _ => self.lose_attempt(&mut tx, job_id, "the worker's hello does not list it", now),
            }
        }
        let mut cancel = Vec::new();
        for held_job in &hello.jobs {
            if handled.contains(&held_job.job_id) {
                continue;
            }
            // A result the coordinator already stored for that attempt: let the outbox resend it; the `ack` will
            // say `accepted` for an identical resend.
            let already_finished = held_job.state == HeldState::Finished
                && !self.jobs.contains_key(&held_job.job_id)
                && self
                    .store
                    .job(held_job.job_id)
                    .ok()
                    .flatten()
                    .is_some_and(|record| {
                        record
                            .finished_report
                            .as_ref()
                            .is_some_and(|report| report.attempt == held_job.attempt)
                    });
            if already_finished {
                resumed.push(ResumedJob {
                    job_id: held_job.job_id,
                    attempt: held_job.attempt,
                    next_output_seq: u64::MAX,
                });
            } else {
                cancel.push(CanceledJob {
                    job_id: held_job.job_id,
                    attempt: held_job.attempt,
                    reason: cancel_reason::STALE_ATTEMPT.to_owned(),
                });
            }
        }
        let welcome = Welcome {
            session_id: link.session_id,
            protocol_version: negotiated,
            heartbeat_interval_ms: u32::try_from(
                self.settings.session.heartbeat_interval.as_millis(),
            )
            .unwrap_or(u32::MAX),
            lease_ms: u32::try_from(self.settings.thresholds.lease.as_millis()).unwrap_or(u32::MAX),
            server_time_ms: protocol::timefmt::to_unix_ms(now),
            max_frame_bytes: u32::try_from(self.settings.session.max_frame_bytes)
                .unwrap_or(u32::MAX),
            binaries,
            status: status.as_str().to_owned(),
            resumed,
            cancel,
        };
        // The welcome goes first; lost-attempt events and cancel frames follow it in the same release.
        tx.frames
            .insert(0, (id.clone(), CoordinatorMessage::Welcome(welcome)));
        for frame in after_welcome {
            tx.frames.push((id.clone(), frame));
        }
        self.place(&mut tx, now);
        tracing::info!(worker_id = %id, session_id = %link.session_id, status = status.as_str(), "worker connected");
        self.finish(tx, move |result| {
            let _ = reply.send(result.map_err(|_| HelloRefusal {
                code: ws::error_code::INTERNAL,
                message: "storage unavailable".to_owned(),
                close: close::INTERNAL,
            }));
        });
        self.schedule_worker_check();
    }

    /// W6: the session ended; the worker's jobs keep their lease until R2.
    pub(super) fn worker_gone(&mut self, worker: &str, session: SessionId, now: OffsetDateTime) {
        let Some(state) = self.workers.get_mut(worker) else {
            return;
        };
        if state
            .link
            .as_ref()
            .is_none_or(|link| link.session_id != session)
        {
            return;
        }
        self.mark_offline(worker, now);
        tracing::info!(worker_id = %worker, session_id = %session, "worker disconnected");
    }

    fn mark_offline(&mut self, worker: &str, now: OffsetDateTime) {
        let Some(state) = self.workers.get_mut(worker) else {
            return;
        };
        state.link = None;
        state.status = WorkerStatus::Offline;
        state.connected_since = None;
        state.last_seen = state.last_frame.unwrap_or(now);
        state.record.last_seen = micros(state.last_seen);
        state.record.last_status = "offline".to_owned();
        let mut batch = crate::store::Batch::new();
        batch.put_worker(worker, &state.record);
        if let Err(err) = self.store.commit(batch) {
            tracing::error!(error = %err, "store write failed");
        }
        self.schedule_worker_check();
        let mut tx = Tx::default();
        self.place(&mut tx, now);
        self.finish(tx, |_| {});
    }

    /// One frame of a session after `hello`.
    pub(super) fn worker_frame(
        &mut self,
        worker: &str,
        session: SessionId,
        frame: WorkerMessage,
        now: OffsetDateTime,
    ) {
        let Some(state) = self.workers.get_mut(worker) else {
            return;
        };
        if state
            .link
            .as_ref()
            .is_none_or(|link| link.session_id != session)
        {
            return; // a frame of a replaced session
        }
        state.last_frame = Some(now);
        state.last_seen = now;
        let mut tx = Tx::default();
        let mut durable = true;
        match frame {
            WorkerMessage::Heartbeat(heartbeat) => {
                durable = false;
                for job in &heartbeat.jobs {
                    if self.current(job.job_id, job.attempt, worker) {
                        if let Some(active) = self.jobs.get_mut(&job.job_id) {
                            active.record.worker_last_seen = Some(micros(now));
                            tx.batch.put_job(&active.record, Some(active.record.status));
                        }
                    } else if !self.finished_by(job.job_id, job.attempt) {
                        self.stale(&mut tx, worker, job.job_id, job.attempt);
                    }
                }
                let mut changed = false;
                if let Some(state) = self.workers.get_mut(worker) {
                    if let Some(mut paths) = heartbeat.paths {
                        paths.sort();
                        paths.dedup();
                        changed |= paths != state.paths;
                        state.paths = paths.clone();
                        state.record.paths = paths;
                    }
                    if let Some(binaries) = heartbeat.binaries {
                        let mut binaries: Vec<String> = binaries
                            .into_iter()
                            .filter(|name| self.settings.allowed_binaries.contains(name))
                            .collect();
                        binaries.sort();
                        binaries.dedup();
                        changed |= binaries != state.binaries;
                        state.binaries = binaries.clone();
                        state.record.binaries = binaries;
                    }
                    if changed {
                        tx.batch.put_worker(worker, &state.record);
                    }
                }
                if changed {
                    durable = true;
                    self.place(&mut tx, now);
                }
            }
            WorkerMessage::JobAccepted(accepted) => {
                if !self.current(accepted.job_id, accepted.attempt, worker) {
                    self.stale(&mut tx, worker, accepted.job_id, accepted.attempt);
                } else {
                    self.job_accepted(
                        &mut tx,
                        accepted.job_id,
                        worker,
                        accepted.started_at_ms,
                        now,
                    );
                }
            }
            WorkerMessage::JobRejected(rejected) => {
                if self.current(rejected.job_id, rejected.attempt, worker) {
                    let detail = format!(
                        "worker {worker} rejected it: {}: {}",
                        rejected.code, rejected.message
                    );
                    match self.jobs.get(&rejected.job_id).map(|job| job.record.status) {
                        Some(JobStatus::Assigned) => {
                            self.refused(&mut tx, rejected.job_id, worker, "rejected", detail, now);
                            self.place(&mut tx, now);
                        }
                        Some(JobStatus::Canceling) => {
                            let change = Transition {
                                status: JobStatus::Canceled,
                                reason: None,
                                sender: Some(worker.to_owned()),
                            };
                            self.apply(&mut tx, rejected.job_id, change, now);
                            self.place(&mut tx, now);
                        }
                        _ => {
                            tracing::warn!(worker_id = %worker, job_id = %rejected.job_id, "job_rejected for a running job; dropped")
                        }
                    }
                }
            }
            WorkerMessage::JobLogs(logs) => {
                if !self.current(logs.job_id, logs.attempt, worker) {
                    self.stale(&mut tx, worker, logs.job_id, logs.attempt);
                } else {
                    self.job_logs(&mut tx, logs, now);
                }
            }
            WorkerMessage::JobProgress(progress) => {
                durable = false;
                if !self.current(progress.job_id, progress.attempt, worker) {
                    self.stale(&mut tx, worker, progress.job_id, progress.attempt);
                } else {
                    self.job_progress(&mut tx, &progress, now);
                }
            }
            WorkerMessage::JobFinished(finished) => {
                self.job_finished(&mut tx, worker, finished, now)
            }
            WorkerMessage::JobAbandoned(abandoned) => {
                if self.current(abandoned.job_id, abandoned.attempt, worker) {
                    let cause = format!(
                        "the worker gave it back ({}: {})",
                        abandoned.reason, abandoned.message
                    );
                    self.lose_attempt(&mut tx, abandoned.job_id, &cause, now);
                    self.place(&mut tx, now);
                }
            }
            WorkerMessage::StdinWritten(_) => durable = false,
            WorkerMessage::Drain(_) => {
                if let Some(state) = self.workers.get_mut(worker)
                    && state.status == WorkerStatus::Online
                {
                    state.status = WorkerStatus::Draining;
                    state.record.last_status = "draining".to_owned();
                    tx.batch.put_worker(worker, &state.record);
                    tracing::info!(worker_id = %worker, "worker draining");
                }
                self.place(&mut tx, now);
            }
            // The session answers a second `hello` itself.
            WorkerMessage::Hello(_) => durable = false,
        }
        if durable || !tx.events.is_empty() {
            self.finish(tx, |_| {});
        } else {
            self.commit_now(tx);
        }
    }

    /// Writes a batch that needs no flush of its own (signs of life, progress) and sends its frames at once.
    fn commit_now(&mut self, tx: Tx) {
        let Tx {
            batch,
            events,
            frames,
        } = tx;
        debug_assert!(events.is_empty());
        if !batch.is_empty()
            && let Err(err) = self.store.commit(batch)
        {
            tracing::error!(error = %err, "store write failed");
            return;
        }
        for (worker, frame) in frames {
            if let Some(link) = self
                .workers
                .get(&worker)
                .and_then(|state| state.link.clone())
            {
                link.send(&frame);
            }
        }
    }

    /// The job finished at `attempt` and the coordinator stored it (heartbeats may list it until the `ack`).
    fn finished_by(&self, id: JobId, attempt: u32) -> bool {
        !self.jobs.contains_key(&id)
            && self.store.job(id).ok().flatten().is_some_and(|record| {
                record
                    .finished_report
                    .as_ref()
                    .is_some_and(|report| report.attempt == attempt)
            })
    }

    /// J6: `assigned` → `running`, `runs += 1`.
    fn job_accepted(
        &mut self,
        tx: &mut Tx,
        id: JobId,
        worker: &str,
        started_at_ms: i64,
        now: OffsetDateTime,
    ) {
        let Some(job) = self.jobs.get_mut(&id) else {
            return;
        };
        let first_start = job.record.status == JobStatus::Assigned
            || (job.record.status == JobStatus::Canceling && job.record.started_at.is_none());
        match job.record.status {
            JobStatus::Assigned | JobStatus::Canceling if first_start => {
                job.record.runs += 1;
                job.record.started_at = Some(worker_time(started_at_ms, now));
                job.record.worker_last_seen = Some(micros(now));
                if job.record.status == JobStatus::Assigned {
                    let change = Transition {
                        status: JobStatus::Running,
                        reason: None,
                        sender: Some(worker.to_owned()),
                    };
                    self.apply(tx, id, change, now);
                } else {
                    tx.batch.put_job(&job.record, Some(job.record.status));
                }
            }
            _ => {
                tracing::warn!(worker_id = %worker, job_id = %id, "a second job_accepted; dropped")
            }
        }
    }

    /// Stores output chunks by `seq` (duplicates ignored), up to `limits.max_output_bytes_per_job`.
    fn job_logs(&mut self, tx: &mut Tx, logs: JobLogs, now: OffsetDateTime) {
        let cap = self.settings.limits.max_output_bytes_per_job;
        let Some(mut job) = self.jobs.remove(&logs.job_id) else {
            return;
        };
        job.record.worker_last_seen = Some(micros(now));
        for chunk in logs.chunks {
            if chunk.seq < job.record.next_output_seq {
                continue;
            }
            job.record.next_output_seq = chunk.seq.saturating_add(1);
            if job.record.output_truncated {
                continue;
            }
            let len = chunk.data.len() as u64;
            if job.record.output_bytes.saturating_add(len) > cap {
                job.record.output_truncated = true;
                let event = crate::store::records::Event::Notice {
                    time: micros(now),
                    attempt: job.record.attempt,
                    code: NOTICE_OUTPUT_TRUNCATED.to_owned(),
                    message: format!(
                        "output truncated at {cap} bytes (limits.max_output_bytes_per_job); later output was not stored"
                    ),
                };
                self.push_event(tx, &mut job.record, event);
                continue;
            }
            job.record.output_bytes += len;
            job.record.attempt_chunks += 1;
            if chunk.stream == OutputStream::Stdout {
                job.record.attempt_stdout_bytes += len;
            }
            let event = crate::store::records::Event::Output {
                attempt: job.record.attempt,
                seq: chunk.seq,
                stream: chunk.stream,
                time: worker_time(chunk.time_ms, now),
                bytes: chunk.data,
            };
            self.push_event(tx, &mut job.record, event);
        }
        if let Some(dropped) = logs.dropped_bytes.filter(|dropped| *dropped > 0) {
            let event = crate::store::records::Event::Notice {
                time: micros(now),
                attempt: job.record.attempt,
                code: "output_gap".to_owned(),
                message: format!("the worker dropped {dropped} bytes of output while disconnected"),
            };
            self.push_event(tx, &mut job.record, event);
        }
        tx.batch.put_job(&job.record, Some(job.record.status));
        self.jobs.insert(logs.job_id, job);
    }

    /// Keeps the latest progress and relays it live, at most once per 250 ms per job.
    fn job_progress(&mut self, tx: &mut Tx, progress: &JobProgress, now: OffsetDateTime) {
        let Some(job) = self.jobs.get_mut(&progress.job_id) else {
            return;
        };
        let stored = sanitize_progress(progress, now);
        let wire: Progress = views::progress(&stored);
        job.record.progress = Some(stored);
        job.record.worker_last_seen = Some(micros(now));
        tx.batch.put_job(&job.record, Some(job.record.status));
        let due = self
            .progress_sent
            .get(&progress.job_id)
            .is_none_or(|last| now - *last >= time::Duration::milliseconds(250));
        if due {
            self.progress_sent.insert(progress.job_id, now);
            self.hub.send_live(
                progress.job_id,
                Live::Progress {
                    attempt: job.record.attempt,
                    progress: Box::new(wire),
                },
            );
        }
    }

    /// J12, J13, J15, J18: the result of an attempt; `ack` once durable.
    fn job_finished(
        &mut self,
        tx: &mut Tx,
        worker: &str,
        finished: JobFinished,
        now: OffsetDateTime,
    ) {
        let id = finished.job_id;
        let ack = |result| {
            CoordinatorMessage::Ack(Ack {
                job_id: id,
                attempt: finished.attempt,
                result,
            })
        };
        if !self.current(id, finished.attempt, worker) {
            // An identical resend for the attempt that finished the job: its first `ack` was lost.
            let identical = !self.jobs.contains_key(&id)
                && self.store.job(id).ok().flatten().is_some_and(|record| {
                    record.finished_report.as_ref().is_some_and(|report| {
                        report.attempt == finished.attempt
                            && report.status == finished_status(finished.status)
                            && report.exit_code == finished.exit_code
                    })
                });
            let result = if identical {
                AckResult::Accepted
            } else {
                AckResult::Stale
            };
            tx.frames.push((worker.to_owned(), ack(result)));
            return;
        }
        let Some(mut job) = self.jobs.remove(&id) else {
            return;
        };
        let status_before = job.record.status;
        if finished.output_seq_end > job.record.next_output_seq {
            let missing = finished.output_seq_end - job.record.next_output_seq;
            let event = crate::store::records::Event::Notice {
                time: micros(now),
                attempt: job.record.attempt,
                code: "output_gap".to_owned(),
                message: format!(
                    "{missing} output chunk(s) of attempt {} never arrived",
                    job.record.attempt
                ),
            };
            self.push_event(tx, &mut job.record, event);
        }
        if status_before == JobStatus::Assigned && finished.error.is_none() {
            job.record.runs += 1; // from `assigned`, a result counts as acceptance first (J13)
        }
        let (status, reason) = match &finished.error {
            Some(error) => (
                JobStatus::Failed,
                Some((error.code.clone(), error.message.clone())),
            ),
            None => (finished_status(finished.status), None),
        };
        job.record.exit_code = finished.exit_code;
        job.record.finished_report = Some(FinishedReport {
            attempt: finished.attempt,
            status: finished_status(finished.status),
            exit_code: finished.exit_code,
        });
        job.record.worker_last_seen = Some(micros(now));
        self.jobs.insert(id, job);
        let reason_ref = reason
            .as_ref()
            .map(|(code, message)| (code.as_str(), message.clone()));
        let change = Transition {
            status,
            reason: reason_ref,
            sender: Some(worker.to_owned()),
        };
        self.apply(tx, id, change, now);
        tx.frames
            .push((worker.to_owned(), ack(AckResult::Accepted)));
        self.place(tx, now);
    }

    /// J7 and J8: back to `pending` with the worker excluded for `job_pending_retry_delay`, or `failed` at the
    /// `scheduler.max_rejections`-th refusal.
    fn refused(
        &mut self,
        tx: &mut Tx,
        id: JobId,
        worker: &str,
        code: &str,
        detail: String,
        now: OffsetDateTime,
    ) {
        let retry_delay = time::Duration::try_from(self.settings.thresholds.retry_delay)
            .unwrap_or(time::Duration::ZERO);
        let max = self.settings.max_rejections;
        let Some(job) = self.jobs.get_mut(&id) else {
            return;
        };
        job.record.rejections += 1;
        let change = if job.record.rejections >= max {
            Transition {
                status: JobStatus::Failed,
                reason: Some(("rejected", detail)),
                sender: coordinator(),
            }
        } else {
            job.exclusions.retain(|(name, _)| name != worker);
            job.exclusions.push((worker.to_owned(), now + retry_delay));
            job.previous_worker = Some(worker.to_owned());
            Transition {
                status: JobStatus::Pending,
                reason: Some((
                    if code == "rejected" {
                        "rejected"
                    } else {
                        "assignment_timeout"
                    },
                    detail,
                )),
                sender: coordinator(),
            }
        };
        self.apply(tx, id, change, now);
    }

    /// A lost attempt (lifecycle.md §1.4): retried unless a retry is unsafe.
    pub(super) fn lose_attempt(
        &mut self,
        tx: &mut Tx,
        id: JobId,
        cause: &str,
        now: OffsetDateTime,
    ) {
        let max_attempts = self.settings.max_attempts;
        let Some(job) = self.jobs.get(&id) else {
            return;
        };
        let worker = job
            .record
            .worker_id
            .clone()
            .unwrap_or_else(|| "-".to_owned());
        let attempt = job.record.attempt;
        let status = job.record.status;
        let message = format!("attempt {attempt} on worker {worker} was lost: {cause}");
        self.push_notice(tx, id, "attempt_lost", message.clone(), now);
        let Some(job) = self.jobs.get_mut(&id) else {
            return;
        };
        let change = match status {
            JobStatus::Canceling => Transition {
                status: JobStatus::Canceled,
                reason: None,
                sender: coordinator(),
            },
            JobStatus::Assigned | JobStatus::Running if job.record.stdin_forwarded => Transition {
                status: JobStatus::Failed,
                reason: Some((
                    "worker_lost_with_stdin",
                    format!("{message}; its stdin cannot be replayed"),
                )),
                sender: coordinator(),
            },
            JobStatus::Running if job.record.attempt_stdout_bytes > 0 => Transition {
                status: JobStatus::Failed,
                reason: Some((
                    "worker_lost_after_output",
                    format!("{message}; stdout had already reached the requester"),
                )),
                sender: coordinator(),
            },
            JobStatus::Running if job.record.runs >= max_attempts => Transition {
                status: JobStatus::Failed,
                reason: Some((
                    "too_many_attempts",
                    format!("{message}; {} runs started", job.record.runs),
                )),
                sender: coordinator(),
            },
            JobStatus::Assigned | JobStatus::Running => {
                job.previous_worker = Some(worker.clone());
                Transition {
                    status: JobStatus::Pending,
                    reason: Some(("worker_lost", message)),
                    sender: coordinator(),
                }
            }
            _ => return,
        };
        tracing::info!(job_id = %id, worker_id = %worker, attempt, cause, "attempt lost");
        self.apply(tx, id, change, now);
    }

    /// R1: close a silent session (`4003`); the worker is offline from now on.
    pub(super) fn reap_session(&mut self, worker: &str, now: OffsetDateTime) -> bool {
        let Some(link) = self
            .workers
            .get(worker)
            .and_then(|state| state.link.clone())
        else {
            return false;
        };
        link.kill(close::HEARTBEAT_TIMEOUT);
        tracing::warn!(worker_id = %worker, "silent session reaped");
        self.mark_offline(worker, now);
        true
    }

    /// R2: every job of an offline worker whose lease ended is a lost attempt.
    pub(super) fn lease_expired(&mut self, tx: &mut Tx, worker: &str, now: OffsetDateTime) -> bool {
        if self
            .workers
            .get(worker)
            .is_none_or(WorkerState::session_open)
        {
            return false;
        }
        let ids: Vec<JobId> = self
            .workers
            .get(worker)
            .map(|state| state.jobs.iter().copied().collect())
            .unwrap_or_default();
        for id in &ids {
            self.lose_attempt(tx, *id, "its lease expired", now);
        }
        !ids.is_empty()
    }

    /// R3: a running job on a connected worker went silent.
    pub(super) fn job_silent(
        &mut self,
        tx: &mut Tx,
        id: JobId,
        attempt: u32,
        now: OffsetDateTime,
    ) -> bool {
        let Some(job) = self.jobs.get(&id) else {
            return false;
        };
        if job.record.attempt != attempt || job.record.status != JobStatus::Running {
            return false;
        }
        self.send_cancel(tx, id, cancel_reason::JOB_SILENT);
        self.lose_attempt(tx, id, "it went silent", now);
        true
    }

    /// R4 (J8): `assigned` without `job_accepted` too long.
    pub(super) fn assignment_timeout(
        &mut self,
        tx: &mut Tx,
        id: JobId,
        attempt: u32,
        now: OffsetDateTime,
    ) -> bool {
        let Some(job) = self.jobs.get(&id) else {
            return false;
        };
        if job.record.attempt != attempt || job.record.status != JobStatus::Assigned {
            return false;
        }
        let Some(worker) = job.record.worker_id.clone() else {
            return false;
        };
        self.send_cancel(tx, id, cancel_reason::ASSIGNMENT_TIMEOUT);
        let detail = format!(
            "worker {worker} did not accept it within {} s: assignment_timeout",
            self.settings.thresholds.assignment_timeout.as_secs_f64()
        );
        self.refused(tx, id, &worker, "assignment_timeout", detail, now);
        true
    }

    /// Recomputes when R1 or R2 can next fire: the earliest session timeout or lease end.
    pub(super) fn schedule_worker_check(&mut self) {
        let timeout = time::Duration::try_from(self.settings.thresholds.session_timeout)
            .unwrap_or(time::Duration::MAX);
        let lease =
            time::Duration::try_from(self.settings.thresholds.lease).unwrap_or(time::Duration::MAX);
        self.next_worker_check = self
            .workers
            .values()
            .filter_map(|state| match (&state.link, state.last_frame) {
                (Some(_), Some(last)) => Some(last + timeout),
                (None, _) if !state.jobs.is_empty() => Some(state.last_seen + lease),
                _ => None,
            })
            .min();
    }

    /// The monotonic instant of the next R1/R2 check (just past the threshold).
    pub(super) fn worker_check_instant(&self) -> Option<Instant> {
        let at = self.next_worker_check?;
        let wait = at - OffsetDateTime::now_utc() + time::Duration::milliseconds(10);
        let wait = std::time::Duration::try_from(wait).unwrap_or(std::time::Duration::ZERO);
        Some(Instant::now() + wait)
    }
}

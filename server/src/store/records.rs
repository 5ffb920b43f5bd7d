//! Stored records (storage.md §4): versioned MessagePack values, separate from the wire types in `protocol`, so an
//! API change never becomes a storage migration. Readers accept every version and convert to the newest; writers
//! write the newest. Times are Unix microseconds.

use serde::{Deserialize, Serialize};
use serde_bytes::ByteBuf;
use time::OffsetDateTime;

use protocol::rest::{JobStatus, OutputStream};
use protocol::{EventId, JobId};

/// Unix microseconds of a wall-clock time (saturating).
pub fn micros(value: OffsetDateTime) -> i64 {
    i64::try_from(value.unix_timestamp_nanos() / 1_000).unwrap_or(if value.year() < 1970 {
        i64::MIN
    } else {
        i64::MAX
    })
}

/// The wall-clock time of Unix microseconds (clamped to the representable range).
pub fn from_micros(value: i64) -> OffsetDateTime {
    OffsetDateTime::from_unix_timestamp_nanos(i128::from(value) * 1_000)
        .unwrap_or(OffsetDateTime::UNIX_EPOCH)
}

/// A job's status as one byte: the first byte of its `jobs_by_status` key.
pub fn status_byte(status: JobStatus) -> u8 {
    match status {
        JobStatus::Pending => 1,
        JobStatus::Assigned => 2,
        JobStatus::Running => 3,
        JobStatus::Canceling => 4,
        JobStatus::Completed => 5,
        JobStatus::Failed => 6,
        JobStatus::Canceled => 7,
    }
}

/// Latest progress of a run, as stored (not an event).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct StoredProgress {
    pub frame: Option<u64>,
    pub fps: Option<f64>,
    pub out_time_us: Option<i64>,
    pub duration_us: Option<i64>,
    pub speed: Option<f64>,
    pub bitrate_kbps: Option<f64>,
    pub size_bytes: Option<u64>,
    pub updated_at: i64,
}

/// Everything the coordinator knows about one job.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JobRecordV1 {
    pub id: JobId,
    pub requester: String,
    pub binary: String,
    pub arguments: Vec<String>,
    pub paths: Vec<String>,
    pub working_directory: Option<String>,
    pub monitor: bool,
    pub heartbeat_interval: u32,
    pub priority: i32,
    pub idempotency_key: Option<String>,
    pub stdin: bool,
    pub status: JobStatus,
    /// The fencing counter: incremented at every assignment.
    pub attempt: u32,
    /// Attempts that reached `running`.
    pub runs: u32,
    /// Rejections and assignment timeouts in total (J7, J8), for `scheduler.max_rejections`.
    pub rejections: u32,
    pub worker_id: Option<String>,
    pub created_at: i64,
    pub last_update: i64,
    pub started_at: Option<i64>,
    pub finished_at: Option<i64>,
    pub worker_last_seen: Option<i64>,
    pub client_last_seen: Option<i64>,
    pub exit_code: Option<i32>,
    pub reason: Option<String>,
    pub reason_detail: Option<String>,
    /// Stdout bytes stored for the current attempt (a lost run after stdout is not retried).
    pub attempt_stdout_bytes: u64,
    /// Output bytes stored for the job over all attempts (`limits.max_output_bytes_per_job`).
    pub output_bytes: u64,
    /// The `output_truncated` notice was stored.
    pub output_truncated: bool,
    /// Next output `seq` expected from the current attempt; lower ones are duplicates.
    pub next_output_seq: u64,
    /// Output chunks stored for the current attempt (a shortfall against `output_seq_end` is a gap).
    pub attempt_chunks: u64,
    /// Stdin bytes or the EOF were forwarded to the current attempt.
    pub stdin_forwarded: bool,
    pub progress: Option<StoredProgress>,
    /// Status and exit code the worker reported for the attempt that finished the job (an identical resend of
    /// `job_finished` is acknowledged `accepted`).
    pub finished_report: Option<FinishedReport>,
    /// The job's last event id, so new ids keep increasing across restarts (storage.md §4.3).
    pub last_event_id: Option<EventId>,
}

/// What a worker reported when it finished the job.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FinishedReport {
    pub attempt: u32,
    pub status: JobStatus,
    pub exit_code: Option<i32>,
}

/// The newest job record shape.
pub type JobRecord = JobRecordV1;

/// A job record as stored: versioned.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum StoredJob {
    V1(JobRecordV1),
}

impl From<StoredJob> for JobRecord {
    fn from(stored: StoredJob) -> JobRecord {
        match stored {
            StoredJob::V1(record) => record,
        }
    }
}

/// A stored event of a job's history.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum EventV1 {
    Status {
        time: i64,
        attempt: u32,
        status: JobStatus,
        exit_code: Option<i32>,
        worker_id: Option<String>,
        reason: Option<String>,
        reason_detail: Option<String>,
        /// Upstream's `sender_id` of the `job_status` message derived from this event.
        sender: Option<String>,
    },
    Output {
        attempt: u32,
        seq: u64,
        stream: OutputStream,
        time: i64,
        bytes: ByteBuf,
    },
    Notice {
        time: i64,
        attempt: u32,
        code: String,
        message: String,
    },
}

impl EventV1 {
    pub fn time(&self) -> i64 {
        match self {
            EventV1::Status { time, .. }
            | EventV1::Output { time, .. }
            | EventV1::Notice { time, .. } => *time,
        }
    }

    pub fn is_output(&self) -> bool {
        matches!(self, EventV1::Output { .. })
    }
}

/// The newest event shape.
pub type Event = EventV1;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum StoredEvent {
    V1(EventV1),
}

impl From<StoredEvent> for Event {
    fn from(stored: StoredEvent) -> Event {
        match stored {
            StoredEvent::V1(event) => event,
        }
    }
}

/// The job an idempotency key names, and the fingerprint of the request that created it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IdempotencyV1 {
    pub job_id: JobId,
    pub fingerprint: [u8; 32],
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum StoredIdempotency {
    V1(IdempotencyV1),
}

/// How an identity's HMAC key is kept.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum KeyStorage {
    /// Unencrypted key bytes (no `encryption.keys_file`).
    Plain(ByteBuf),
}

/// A named principal (auth.md §1).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IdentityV1 {
    pub role: protocol::admin::Role,
    pub key: KeyStorage,
    /// Normalised networks (`10.0.0.0/8`, `::1/128`).
    pub cidrs: Vec<String>,
    pub created_at: i64,
    pub updated_at: i64,
}

pub type Identity = IdentityV1;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum StoredIdentity {
    V1(IdentityV1),
}

impl From<StoredIdentity> for Identity {
    fn from(stored: StoredIdentity) -> Identity {
        match stored {
            StoredIdentity::V1(identity) => identity,
        }
    }
}

/// What the coordinator remembers of a worker between sessions.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WorkerRecordV1 {
    pub first_seen: i64,
    pub last_seen: i64,
    pub version: Option<String>,
    pub host: Option<String>,
    pub binaries: Vec<String>,
    pub binary_versions: Vec<(String, String)>,
    pub paths: Vec<String>,
    pub capabilities: Vec<String>,
    pub slots: u32,
    pub heartbeat_interval_s: u32,
    pub protocol_version: Option<String>,
    /// `online`, `draining` or `offline` when last written.
    pub last_status: String,
}

pub type WorkerRecord = WorkerRecordV1;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum StoredWorker {
    V1(WorkerRecordV1),
}

impl From<StoredWorker> for WorkerRecord {
    fn from(stored: StoredWorker) -> WorkerRecord {
        match stored {
            StoredWorker::V1(worker) => worker,
        }
    }
}

/// A signature already used inside its timestamp window (auth.md §4).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReplayV1 {
    pub client_id: String,
    pub signature: [u8; 32],
    /// Unix seconds after which the entry is dropped.
    pub expires_at: i64,
    /// The job a submit created.
    pub job_id: Option<JobId>,
}

pub type ReplayRecord = ReplayV1;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum StoredReplay {
    V1(ReplayV1),
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::datetime;

    #[test]
    fn micros_round_trip() {
        let value = datetime!(2026-11-24 18:24:07.490073 UTC);
        assert_eq!(from_micros(micros(value)), value);
    }

    #[test]
    fn status_bytes_are_distinct() {
        let mut bytes: Vec<u8> = JobStatus::ALL.iter().map(|s| status_byte(*s)).collect();
        bytes.sort_unstable();
        bytes.dedup();
        assert_eq!(bytes.len(), 7);
    }
}

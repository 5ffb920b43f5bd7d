//! REST bodies (api.md §3–§5): what clients send and what the coordinator answers. Field order of upstream shapes
//! is kept as api.md lists it, because serde serialises struct fields in declaration order.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use crate::ids::{EventId, JobId};
use crate::timefmt::rfc3339;

/// The only transport offered (api.md §3.1).
pub const TRANSPORT_HTTP_POLLING: &str = "http_polling";

/// A job's status (lifecycle.md §1.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub enum JobStatus {
    Pending,
    Assigned,
    Running,
    Canceling,
    Completed,
    Failed,
    Canceled,
}

impl JobStatus {
    pub const ALL: [JobStatus; 7] = [
        JobStatus::Pending,
        JobStatus::Assigned,
        JobStatus::Running,
        JobStatus::Canceling,
        JobStatus::Completed,
        JobStatus::Failed,
        JobStatus::Canceled,
    ];

    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            JobStatus::Completed | JobStatus::Failed | JobStatus::Canceled
        )
    }

    pub fn is_active(self) -> bool {
        !self.is_terminal()
    }

    /// `assigned`, `running` and `canceling` hold one of the worker's slots.
    pub fn occupies_slot(self) -> bool {
        matches!(
            self,
            JobStatus::Assigned | JobStatus::Running | JobStatus::Canceling
        )
    }

    pub fn as_str(self) -> &'static str {
        match self {
            JobStatus::Pending => "pending",
            JobStatus::Assigned => "assigned",
            JobStatus::Running => "running",
            JobStatus::Canceling => "canceling",
            JobStatus::Completed => "completed",
            JobStatus::Failed => "failed",
            JobStatus::Canceled => "canceled",
        }
    }
}

impl fmt::Display for JobStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for JobStatus {
    type Err = ();
    fn from_str(text: &str) -> Result<JobStatus, ()> {
        JobStatus::ALL
            .into_iter()
            .find(|status| status.as_str() == text)
            .ok_or(())
    }
}

/// `POST /jobs/submit` body (api.md §5.1). Unknown and duplicate fields are refused; ranges are checked by the
/// coordinator after parsing, so the error names the field.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct JobRequest {
    /// Must be one of the coordinator's `allowed_binaries`.
    pub binary_name: String,
    #[serde(default)]
    pub arguments: Vec<String>,
    /// Path-variable names the job needs.
    #[serde(default)]
    pub paths: Vec<String>,
    #[serde(default)]
    pub working_directory: Option<String>,
    /// Must contain `http_polling`; absent means `["http_polling"]`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub supported_transports: Option<Vec<String>>,
    #[serde(default)]
    pub monitor: bool,
    /// Seconds; `null` or 0 means the coordinator's default.
    #[serde(default)]
    pub heartbeat_interval: Option<i64>,
    /// −1000 to 1000; higher runs first.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub priority: i64,
    /// 1–128 printable ASCII characters.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idempotency_key: Option<String>,
    /// The requester will forward stdin.
    #[serde(default, skip_serializing_if = "is_false")]
    pub stdin: bool,
}

fn is_zero(value: &i64) -> bool {
    *value == 0
}

fn is_false(value: &bool) -> bool {
    !*value
}

/// `{"path": "/poll/jobs/<job_id>"}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct TransportMetadata {
    pub path: String,
}

/// Latest progress of a run (api.md §3.2).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Progress {
    pub frame: Option<u64>,
    pub fps: Option<f64>,
    pub out_time: Option<String>,
    pub out_time_seconds: Option<f64>,
    pub duration_seconds: Option<f64>,
    pub percent: Option<f64>,
    pub speed: Option<f64>,
    pub bitrate_kbps: Option<f64>,
    pub size_bytes: Option<u64>,
    pub eta_seconds: Option<f64>,
    #[serde(with = "rfc3339")]
    #[cfg_attr(feature = "openapi", schema(value_type = String, format = DateTime))]
    pub updated_at: OffsetDateTime,
}

/// A job as the API shows it (api.md §3.1). Upstream fields first, in upstream's order.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct JobRecord {
    pub transport: String,
    pub transport_metadata: TransportMetadata,
    pub job_id: JobId,
    pub requester_id: String,
    pub binary_name: String,
    pub arguments: Vec<String>,
    pub paths: Vec<String>,
    pub working_directory: Option<String>,
    pub status: JobStatus,
    pub exit_code: Option<i32>,
    pub worker_id: Option<String>,
    #[serde(with = "rfc3339")]
    #[cfg_attr(feature = "openapi", schema(value_type = String, format = DateTime))]
    pub created_at: OffsetDateTime,
    #[serde(with = "rfc3339")]
    #[cfg_attr(feature = "openapi", schema(value_type = String, format = DateTime))]
    pub last_update: OffsetDateTime,
    #[serde(with = "rfc3339::option")]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<String>, format = DateTime))]
    pub worker_last_seen: Option<OffsetDateTime>,
    #[serde(with = "rfc3339::option")]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<String>, format = DateTime))]
    pub client_last_seen: Option<OffsetDateTime>,
    pub heartbeat_interval: u32,
    pub monitor: bool,
    pub priority: i32,
    pub idempotency_key: Option<String>,
    pub attempt: u32,
    pub runs: u32,
    pub stdin: bool,
    #[serde(with = "rfc3339::option")]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<String>, format = DateTime))]
    pub started_at: Option<OffsetDateTime>,
    #[serde(with = "rfc3339::option")]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<String>, format = DateTime))]
    pub finished_at: Option<OffsetDateTime>,
    pub progress: Option<Progress>,
    pub wait_reason: Option<String>,
    pub wait_detail: Option<String>,
    pub reason: Option<String>,
    pub reason_detail: Option<String>,
}

/// `{"status": "ok", "detail": null}` (api.md §1.2).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct CommandResponse {
    pub status: String,
    pub detail: Option<String>,
}

impl CommandResponse {
    pub fn ok() -> CommandResponse {
        CommandResponse {
            status: "ok".to_owned(),
            detail: None,
        }
    }

    pub fn ok_with(detail: &str) -> CommandResponse {
        CommandResponse {
            status: "ok".to_owned(),
            detail: Some(detail.to_owned()),
        }
    }
}

/// Detail of a cancel or heartbeat on a terminal job.
pub const DETAIL_JOB_ALREADY_FINISHED: &str = "Job already finished";

/// Which output stream a chunk came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub enum OutputStream {
    Stdout,
    Stderr,
}

impl OutputStream {
    pub fn as_str(self) -> &'static str {
        match self {
            OutputStream::Stdout => "stdout",
            OutputStream::Stderr => "stderr",
        }
    }
}

/// One stored output chunk as upstream's log entry (api.md §3.3).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct LogEntry {
    pub id: EventId,
    pub stream: OutputStream,
    pub content: String,
    #[serde(with = "rfc3339::option")]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<String>, format = DateTime))]
    pub timestamp: Option<OffsetDateTime>,
}

/// `GET /jobs/{id}/logs` answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct LogsResponse {
    pub logs: Vec<LogEntry>,
    pub last_message_id: Option<EventId>,
}

/// A worker's status (lifecycle.md §2.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub enum WorkerStatus {
    Online,
    Draining,
    Offline,
}

impl WorkerStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            WorkerStatus::Online => "online",
            WorkerStatus::Draining => "draining",
            WorkerStatus::Offline => "offline",
        }
    }
}

/// A worker as the API shows it (api.md §3.4).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct WorkerInfo {
    pub worker_id: String,
    pub capabilities: Vec<String>,
    pub binaries: Vec<String>,
    pub paths: Vec<String>,
    pub registration_interval: u32,
    pub version: Option<String>,
    pub status: WorkerStatus,
    #[serde(with = "rfc3339")]
    #[cfg_attr(feature = "openapi", schema(value_type = String, format = DateTime))]
    pub last_seen: OffsetDateTime,
    pub max_concurrent_jobs: u32,
    pub running_jobs: u32,
    #[serde(with = "rfc3339::option")]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<String>, format = DateTime))]
    pub connected_since: Option<OffsetDateTime>,
    pub host: Option<String>,
    pub protocol_version: Option<String>,
}

/// Payload of an upstream `job_status` message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct JobStatusPayload {
    pub status: JobStatus,
    pub exit_code: Option<i32>,
    #[serde(with = "rfc3339")]
    #[cfg_attr(feature = "openapi", schema(value_type = String, format = DateTime))]
    pub last_update: OffsetDateTime,
}

/// Payload of an upstream `job_logs` message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct JobLogsPayload {
    pub logs: Vec<LogEntry>,
}

/// The payload of a [`Message`], by `message_type`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub enum MessagePayload {
    Status(JobStatusPayload),
    Logs(JobLogsPayload),
}

/// Upstream's message envelope on `/poll/jobs/{id}` (api.md §3.5).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Message {
    pub message_id: EventId,
    pub sender_id: Option<String>,
    pub recipient_id: String,
    pub job_id: JobId,
    #[serde(with = "rfc3339")]
    #[cfg_attr(feature = "openapi", schema(value_type = String, format = DateTime))]
    pub timestamp: OffsetDateTime,
    #[serde(with = "rfc3339::option")]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<String>, format = DateTime))]
    pub sent_at: Option<OffsetDateTime>,
    /// `job_status` or `job_logs`.
    pub message_type: String,
    pub payload: MessagePayload,
}

/// A long-poll answer, and one NDJSON line of the streaming variant.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct PollResponse {
    pub messages: Vec<Message>,
}

/// One check of the deep health answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct HealthCheck {
    /// `online` or `unhealthy`.
    pub status: String,
    pub detail: Option<String>,
}

/// `GET /health` (api.md §4.2).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct HealthResponse {
    /// `online`, `shutdown` or `unhealthy`.
    pub status: String,
    pub version: String,
    pub databases: Option<BTreeMap<String, HealthCheck>>,
    pub transports: Option<BTreeMap<String, HealthCheck>>,
}

/// The actions of `POST /admin/janitor` (api.md §5.8).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub enum JanitorAction {
    RunAll,
    CleanWorkers,
    CleanJobs,
    Prune,
}

impl JanitorAction {
    pub fn as_str(self) -> &'static str {
        match self {
            JanitorAction::RunAll => "run_all",
            JanitorAction::CleanWorkers => "clean_workers",
            JanitorAction::CleanJobs => "clean_jobs",
            JanitorAction::Prune => "prune",
        }
    }
}

/// `POST /admin/janitor` body.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct JanitorRequest {
    pub action: JanitorAction,
}

/// `202` answer of `POST /admin/janitor`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct JanitorResponse {
    pub message: String,
    pub action: JanitorAction,
}

/// A status event as the event stream shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct StatusLine {
    pub id: EventId,
    #[serde(with = "rfc3339")]
    #[cfg_attr(feature = "openapi", schema(value_type = String, format = DateTime))]
    pub time: OffsetDateTime,
    pub attempt: u32,
    pub status: JobStatus,
    pub exit_code: Option<i32>,
    pub worker_id: Option<String>,
    pub reason: Option<String>,
    pub reason_detail: Option<String>,
}

/// An output chunk as the event stream shows it: `text` when the bytes are UTF-8, else `base64`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct OutputLine {
    /// Absent for output past the cap, which is relayed live and not stored.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<EventId>,
    #[serde(with = "rfc3339")]
    #[cfg_attr(feature = "openapi", schema(value_type = String, format = DateTime))]
    pub time: OffsetDateTime,
    pub attempt: u32,
    pub stream: OutputStream,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub text: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub base64: Option<String>,
    /// `false` for output past the cap.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stored: Option<bool>,
}

/// A notice as the event stream shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct NoticeLine {
    pub id: EventId,
    #[serde(with = "rfc3339")]
    #[cfg_attr(feature = "openapi", schema(value_type = String, format = DateTime))]
    pub time: OffsetDateTime,
    pub attempt: u32,
    /// `attempt_lost`, `output_truncated`, `output_gap`.
    pub code: String,
    pub message: String,
}

/// Live progress as the event stream shows it (never stored).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ProgressLine {
    #[serde(with = "rfc3339")]
    #[cfg_attr(feature = "openapi", schema(value_type = String, format = DateTime))]
    pub time: OffsetDateTime,
    pub attempt: u32,
    pub progress: Progress,
}

/// The first line of an event stream: the record as of the connection.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct JobLine {
    pub job: Box<JobRecord>,
}

/// One line of `GET /jobs/{id}/events` (api.md §5.5).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub enum EventLine {
    Job(JobLine),
    Status(StatusLine),
    Output(OutputLine),
    Notice(NoticeLine),
    Progress(ProgressLine),
}

/// The `types` filter of the event stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EventType {
    Status,
    Output,
    Progress,
    Notice,
}

impl FromStr for EventType {
    type Err = ();
    fn from_str(text: &str) -> Result<EventType, ()> {
        match text {
            "status" => Ok(EventType::Status),
            "output" => Ok(EventType::Output),
            "progress" => Ok(EventType::Progress),
            "notice" => Ok(EventType::Notice),
            _ => Err(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn job_request_refuses_unknown_and_duplicate_fields() {
        let err =
            serde_json::from_str::<JobRequest>(r#"{"binary_name":"ffmpeg","x":1}"#).unwrap_err();
        assert!(err.to_string().contains("unknown field `x`"), "{err}");
        let err = serde_json::from_str::<JobRequest>(
            r#"{"binary_name":"ffmpeg","arguments":[],"arguments":[]}"#,
        )
        .unwrap_err();
        assert!(
            err.to_string().contains("duplicate field `arguments`"),
            "{err}"
        );
        let err = serde_json::from_str::<JobRequest>(r#"{"arguments":[]}"#).unwrap_err();
        assert!(
            err.to_string().contains("missing field `binary_name`"),
            "{err}"
        );
    }

    #[test]
    fn upstream_submit_body_parses() {
        let body = r#"{"binary_name": "ffprobe", "arguments": ["-v", "error", "-show_format", "$Media/in.mp4"], "paths": ["Media"], "working_directory": "$Media", "supported_transports": ["http_polling"], "monitor": true, "heartbeat_interval": null}"#;
        let request: JobRequest = serde_json::from_str(body).unwrap();
        assert_eq!(request.binary_name, "ffprobe");
        assert_eq!(request.arguments.len(), 4);
        assert!(request.monitor);
        assert_eq!(request.heartbeat_interval, None);
        assert_eq!(request.priority, 0);
    }

    #[test]
    fn statuses_parse_and_classify() {
        for status in JobStatus::ALL {
            assert_eq!(status.as_str().parse::<JobStatus>(), Ok(status));
            assert_eq!(status.is_active(), !status.is_terminal());
        }
        assert!(JobStatus::Canceling.occupies_slot());
        assert!(!JobStatus::Pending.occupies_slot());
        assert!("bogus".parse::<JobStatus>().is_err());
    }
}

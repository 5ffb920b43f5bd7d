//! The worker session protocol on `GET /worker/ws` (worker-protocol.md): one binary WebSocket message per protocol
//! message, MessagePack maps with a `type` key. Decoding is strict about shape (depth limit, no trailing bytes,
//! list bounds) and lenient about unknown fields, which belong to newer minor versions.

use std::collections::BTreeMap;
use std::fmt;
use std::io::Cursor;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_bytes::ByteBuf;

use crate::ids::{JobId, SessionId, check_simple_name};
use crate::rest::OutputStream;

/// A protocol version, `{major, minor}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct ProtocolVersion {
    pub major: u16,
    pub minor: u16,
}

impl fmt::Display for ProtocolVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.major, self.minor)
    }
}

/// The version this build speaks (worker-protocol.md §3).
pub const PROTOCOL_VERSION: ProtocolVersion = ProtocolVersion { major: 1, minor: 0 };

/// Nesting deeper than this is malformed (worker-protocol.md §2).
pub const MAX_DEPTH: usize = 32;
/// Lists in frames other than `hello` hold at most this many items (limits-and-bad-input.md §2.2).
pub const MAX_LIST_ITEMS: usize = 4096;
/// The worker never puts more data than this in one frame (worker-protocol.md §2).
pub const MAX_DATA_PER_FRAME: usize = 256 * 1024;

/// WebSocket close codes (worker-protocol.md §6).
pub mod close {
    pub const NORMAL: u16 = 1000;
    pub const GOING_AWAY: u16 = 1001;
    pub const UNSUPPORTED_DATA: u16 = 1003;
    pub const INVALID_PAYLOAD: u16 = 1007;
    pub const POLICY: u16 = 1008;
    pub const TOO_BIG: u16 = 1009;
    pub const INTERNAL: u16 = 1011;
    pub const REPLACED: u16 = 4000;
    pub const HELLO_TIMEOUT: u16 = 4001;
    pub const VERSION_UNSUPPORTED: u16 = 4002;
    pub const HEARTBEAT_TIMEOUT: u16 = 4003;
    pub const IDENTITY_REVOKED: u16 = 4004;
    pub const INVALID_HELLO: u16 = 4005;
    pub const QUEUE_OVERFLOW: u16 = 4006;
}

/// `error` codes (worker-protocol.md §5.9).
pub mod error_code {
    pub const HELLO_REQUIRED: &str = "hello_required";
    pub const UNEXPECTED_MESSAGE: &str = "unexpected_message";
    pub const IDENTITY_MISMATCH: &str = "identity_mismatch";
    pub const INVALID_HELLO: &str = "invalid_hello";
    pub const PROTOCOL_VERSION_UNSUPPORTED: &str = "protocol_version_unsupported";
    pub const MALFORMED_MESSAGE: &str = "malformed_message";
    pub const UNKNOWN_MESSAGE: &str = "unknown_message";
    pub const INTERNAL: &str = "internal";
}

/// A job the worker process still holds from an earlier session.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum HeldState {
    Running,
    /// A `job_finished` waits in the outbox.
    Finished,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HeldJob {
    pub job_id: JobId,
    pub attempt: u32,
    pub state: HeldState,
}

/// The fencing pair of a job-scoped frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct JobRef {
    pub job_id: JobId,
    pub attempt: u32,
}

/// `hello` (worker-protocol.md §4.1).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hello {
    pub worker_id: String,
    pub version: String,
    pub protocol_version: ProtocolVersion,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
    pub binaries: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub binary_versions: Option<BTreeMap<String, String>>,
    pub paths: Vec<String>,
    pub capabilities: Vec<String>,
    pub max_concurrent_jobs: u32,
    /// `online` or `draining`; anything else is an invalid hello, not a malformed frame.
    pub status: String,
    pub jobs: Vec<HeldJob>,
}

impl Hello {
    /// The bounds of worker-protocol.md §4.1 and limits-and-bad-input.md §2.2; the error says which one failed.
    pub fn validate(&self) -> Result<(), String> {
        if self.version.len() > 64 {
            return Err("version: longer than 64 bytes".to_owned());
        }
        if self.host.as_ref().is_some_and(|host| host.len() > 255) {
            return Err("host: longer than 255 bytes".to_owned());
        }
        if self.binaries.len() > 64 {
            return Err("binaries: more than 64 items".to_owned());
        }
        for name in &self.binaries {
            if check_simple_name(name).is_err() {
                return Err(format!(
                    "binaries: invalid binary name '{}'",
                    truncate(name)
                ));
            }
        }
        if let Some(versions) = &self.binary_versions {
            if versions.len() > 64 {
                return Err("binary_versions: more than 64 entries".to_owned());
            }
            if let Some((name, _)) = versions
                .iter()
                .find(|(name, value)| name.len() > 200 || value.len() > 200)
            {
                return Err(format!(
                    "binary_versions: entry '{}' longer than 200 bytes",
                    truncate(name)
                ));
            }
        }
        if self.paths.len() > 1024 {
            return Err("paths: more than 1024 items".to_owned());
        }
        for name in &self.paths {
            if check_simple_name(name).is_err() {
                return Err(format!(
                    "paths: invalid path variable name '{}'",
                    truncate(name)
                ));
            }
        }
        if self.capabilities.len() > 64 {
            return Err("capabilities: more than 64 items".to_owned());
        }
        if self.capabilities.iter().any(|tag| tag.len() > 64) {
            return Err("capabilities: an item is longer than 64 bytes".to_owned());
        }
        if !(1..=1024).contains(&self.max_concurrent_jobs) {
            return Err(format!(
                "max_concurrent_jobs: must be between 1 and 1024, got {}",
                self.max_concurrent_jobs
            ));
        }
        if self.status != "online" && self.status != "draining" {
            return Err(format!(
                "status: expected online or draining, got '{}'",
                truncate(&self.status)
            ));
        }
        if self.jobs.len() > 4096 {
            return Err("jobs: more than 4096 items".to_owned());
        }
        Ok(())
    }
}

fn truncate(text: &str) -> String {
    if text.len() <= 64 {
        return text.to_owned();
    }
    let mut end = 64;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &text[..end])
}

/// `heartbeat` (worker-protocol.md §4.2).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Heartbeat {
    pub seq: u64,
    pub jobs: Vec<JobRef>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub paths: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub binaries: Option<Vec<String>>,
}

/// `job_accepted` (worker-protocol.md §4.3).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobAccepted {
    pub job_id: JobId,
    pub attempt: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pid: Option<u32>,
    pub started_at_ms: i64,
}

/// `job_rejected` (worker-protocol.md §4.4).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobRejected {
    pub job_id: JobId,
    pub attempt: u32,
    pub code: String,
    pub message: String,
}

/// Codes of `job_rejected`.
pub mod reject_code {
    pub const DRAINING: &str = "draining";
    pub const NO_CAPACITY: &str = "no_capacity";
    pub const BINARY_UNAVAILABLE: &str = "binary_unavailable";
    pub const PATH_VARIABLE_UNAVAILABLE: &str = "path_variable_unavailable";
    pub const WORKING_DIRECTORY_UNAVAILABLE: &str = "working_directory_unavailable";
    pub const SPAWN_FAILED: &str = "spawn_failed";
}

/// One output chunk: bytes exactly as the process wrote them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OutputChunk {
    pub seq: u64,
    pub stream: OutputStream,
    pub time_ms: i64,
    pub data: ByteBuf,
}

/// `job_logs` (worker-protocol.md §4.5).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobLogs {
    pub job_id: JobId,
    pub attempt: u32,
    pub chunks: Vec<OutputChunk>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dropped_bytes: Option<u64>,
}

/// `job_progress` (worker-protocol.md §4.6).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JobProgress {
    pub job_id: JobId,
    pub attempt: u32,
    pub time_ms: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub frame: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fps: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub out_time_us: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub speed: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bitrate_kbps: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub total_size: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duration_us: Option<i64>,
}

/// The outcome a worker reports in `job_finished`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FinishedStatus {
    Completed,
    Failed,
    Canceled,
}

/// Why a job could not run (`path_escape`, `argument_not_allowed`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobError {
    pub code: String,
    pub message: String,
}

/// `job_finished` (worker-protocol.md §4.7).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobFinished {
    pub job_id: JobId,
    pub attempt: u32,
    pub status: FinishedStatus,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exit_code: Option<i32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signal: Option<i32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<JobError>,
    pub finished_at_ms: i64,
    pub output_seq_end: u64,
}

/// `job_abandoned` (worker-protocol.md §4.8).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobAbandoned {
    pub job_id: JobId,
    pub attempt: u32,
    /// `worker_shutdown` or `internal_error`.
    pub reason: String,
    pub message: String,
}

/// `stdin_written` (worker-protocol.md §4.9).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StdinWritten {
    pub job_id: JobId,
    pub attempt: u32,
    pub offset: u64,
    pub closed: bool,
}

/// `drain` from the worker (worker-protocol.md §4.10).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WorkerDrain {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// Every message a worker sends.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum WorkerMessage {
    Hello(Hello),
    Heartbeat(Heartbeat),
    JobAccepted(JobAccepted),
    JobRejected(JobRejected),
    JobLogs(JobLogs),
    JobProgress(JobProgress),
    JobFinished(JobFinished),
    JobAbandoned(JobAbandoned),
    StdinWritten(StdinWritten),
    Drain(WorkerDrain),
}

impl WorkerMessage {
    /// The `type` names this direction knows.
    pub const TYPES: &'static [&'static str] = &[
        "hello",
        "heartbeat",
        "job_accepted",
        "job_rejected",
        "job_logs",
        "job_progress",
        "job_finished",
        "job_abandoned",
        "stdin_written",
        "drain",
    ];

    pub fn type_name(&self) -> &'static str {
        match self {
            WorkerMessage::Hello(_) => "hello",
            WorkerMessage::Heartbeat(_) => "heartbeat",
            WorkerMessage::JobAccepted(_) => "job_accepted",
            WorkerMessage::JobRejected(_) => "job_rejected",
            WorkerMessage::JobLogs(_) => "job_logs",
            WorkerMessage::JobProgress(_) => "job_progress",
            WorkerMessage::JobFinished(_) => "job_finished",
            WorkerMessage::JobAbandoned(_) => "job_abandoned",
            WorkerMessage::StdinWritten(_) => "stdin_written",
            WorkerMessage::Drain(_) => "drain",
        }
    }

    fn check_lists(&self) -> Result<(), String> {
        let too_long = |name: &str, len: usize| {
            if len > MAX_LIST_ITEMS {
                Err(format!("{name}: more than {MAX_LIST_ITEMS} items"))
            } else {
                Ok(())
            }
        };
        match self {
            WorkerMessage::Heartbeat(heartbeat) => {
                too_long("jobs", heartbeat.jobs.len())?;
                too_long("paths", heartbeat.paths.as_ref().map_or(0, Vec::len))?;
                too_long("binaries", heartbeat.binaries.as_ref().map_or(0, Vec::len))
            }
            WorkerMessage::JobLogs(logs) => too_long("chunks", logs.chunks.len()),
            _ => Ok(()),
        }
    }
}

/// A held job the coordinator lets the worker keep (`welcome.resumed`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ResumedJob {
    pub job_id: JobId,
    pub attempt: u32,
    pub next_output_seq: u64,
}

/// A held job the worker must kill without reporting (`welcome.cancel`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CanceledJob {
    pub job_id: JobId,
    pub attempt: u32,
    pub reason: String,
}

/// `welcome` (worker-protocol.md §5.1).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Welcome {
    pub session_id: SessionId,
    pub protocol_version: ProtocolVersion,
    pub heartbeat_interval_ms: u32,
    pub lease_ms: u32,
    pub server_time_ms: i64,
    pub max_frame_bytes: u32,
    pub binaries: Vec<String>,
    pub status: String,
    pub resumed: Vec<ResumedJob>,
    pub cancel: Vec<CanceledJob>,
}

/// `heartbeat_ack` (worker-protocol.md §5.2).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HeartbeatAck {
    pub seq: u64,
    pub server_time_ms: i64,
}

/// `assign_job` (worker-protocol.md §5.3).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AssignJob {
    pub job_id: JobId,
    pub attempt: u32,
    pub binary: String,
    pub arguments: Vec<String>,
    pub paths: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub working_directory: Option<String>,
    pub heartbeat_interval_ms: u32,
    pub stdin: bool,
    pub priority: i32,
    pub requester_id: String,
}

/// `cancel_job` (worker-protocol.md §5.4).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CancelJob {
    pub job_id: JobId,
    pub attempt: u32,
    pub reason: String,
}

/// Reasons of `cancel_job`.
pub mod cancel_reason {
    pub const REQUESTED: &str = "requested";
    pub const CLIENT_GONE: &str = "client_gone";
    pub const ASSIGNMENT_TIMEOUT: &str = "assignment_timeout";
    pub const JOB_SILENT: &str = "job_silent";
    pub const LEASE_EXPIRED: &str = "lease_expired";
    pub const CANCEL_TIMEOUT: &str = "cancel_timeout";
    pub const STALE_ATTEMPT: &str = "stale_attempt";

    /// Reasons after which the worker reports nothing: the attempt is already given up.
    pub fn reports_nothing(reason: &str) -> bool {
        matches!(
            reason,
            STALE_ATTEMPT | ASSIGNMENT_TIMEOUT | JOB_SILENT | LEASE_EXPIRED
        )
    }
}

/// `job_stdin` (worker-protocol.md §5.5).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobStdin {
    pub job_id: JobId,
    pub attempt: u32,
    pub offset: u64,
    pub data: ByteBuf,
    pub eof: bool,
}

/// The answer to `job_finished`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AckResult {
    Accepted,
    Stale,
}

/// `ack` (worker-protocol.md §5.6).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ack {
    pub job_id: JobId,
    pub attempt: u32,
    pub result: AckResult,
}

/// `drain` from the coordinator (worker-protocol.md §5.7).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DrainRequest {
    pub reason: String,
}

/// `shutdown` (worker-protocol.md §5.8).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Shutdown {
    pub reason: String,
    pub reconnect_after_ms: u32,
}

/// `error` (worker-protocol.md §5.9). Its shape never changes, so a refusal is always readable.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorFrame {
    pub code: String,
    pub message: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub job_id: Option<JobId>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attempt: Option<u32>,
    pub fatal: bool,
}

/// Every message the coordinator sends.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum CoordinatorMessage {
    Welcome(Welcome),
    HeartbeatAck(HeartbeatAck),
    AssignJob(AssignJob),
    CancelJob(CancelJob),
    JobStdin(JobStdin),
    Ack(Ack),
    Drain(DrainRequest),
    Shutdown(Shutdown),
    Error(ErrorFrame),
}

impl CoordinatorMessage {
    /// The `type` names this direction knows.
    pub const TYPES: &'static [&'static str] = &[
        "welcome",
        "heartbeat_ack",
        "assign_job",
        "cancel_job",
        "job_stdin",
        "ack",
        "drain",
        "shutdown",
        "error",
    ];

    pub fn type_name(&self) -> &'static str {
        match self {
            CoordinatorMessage::Welcome(_) => "welcome",
            CoordinatorMessage::HeartbeatAck(_) => "heartbeat_ack",
            CoordinatorMessage::AssignJob(_) => "assign_job",
            CoordinatorMessage::CancelJob(_) => "cancel_job",
            CoordinatorMessage::JobStdin(_) => "job_stdin",
            CoordinatorMessage::Ack(_) => "ack",
            CoordinatorMessage::Drain(_) => "drain",
            CoordinatorMessage::Shutdown(_) => "shutdown",
            CoordinatorMessage::Error(_) => "error",
        }
    }
}

/// Why a frame was not decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// Undecodable, trailing bytes, a missing or ill-typed field, too deep, a list over its bound: fatal.
    #[error("malformed message: {0}")]
    Malformed(String),
    /// A well-formed message of a type this side does not know: answered, not fatal.
    #[error("unknown message type '{0}'")]
    UnknownType(String),
}

#[derive(Deserialize)]
struct TypeProbe {
    #[serde(rename = "type")]
    kind: String,
}

/// Only the parts of `hello` that never change shape, for version negotiation before the full decode.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct HelloHead {
    #[serde(rename = "type")]
    pub kind: String,
    pub worker_id: String,
    pub protocol_version: ProtocolVersion,
}

fn decode_exact<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, DecodeError> {
    let mut deserializer = rmp_serde::Deserializer::new(Cursor::new(bytes));
    deserializer.set_max_depth(MAX_DEPTH);
    let value =
        T::deserialize(&mut deserializer).map_err(|err| DecodeError::Malformed(err.to_string()))?;
    let position = deserializer.get_ref().position();
    if position != bytes.len() as u64 {
        return Err(DecodeError::Malformed(format!(
            "{} bytes after the message",
            bytes.len() as u64 - position
        )));
    }
    Ok(value)
}

fn decode_tagged<T: DeserializeOwned>(bytes: &[u8], known: &[&str]) -> Result<T, DecodeError> {
    let probe: TypeProbe = decode_exact(bytes)?;
    if !known.contains(&probe.kind.as_str()) {
        return Err(DecodeError::UnknownType(probe.kind));
    }
    decode_exact(bytes)
}

/// Decodes one frame from a worker.
pub fn decode_worker_message(bytes: &[u8]) -> Result<WorkerMessage, DecodeError> {
    let message: WorkerMessage = decode_tagged(bytes, WorkerMessage::TYPES)?;
    message.check_lists().map_err(DecodeError::Malformed)?;
    Ok(message)
}

/// Decodes the version-stable head of a `hello` frame.
pub fn decode_hello_head(bytes: &[u8]) -> Result<HelloHead, DecodeError> {
    decode_exact(bytes)
}

/// Decodes one frame from the coordinator.
pub fn decode_coordinator_message(bytes: &[u8]) -> Result<CoordinatorMessage, DecodeError> {
    decode_tagged(bytes, CoordinatorMessage::TYPES)
}

/// Encodes a message as a MessagePack map with field names.
pub fn encode<T: Serialize>(message: &T) -> Vec<u8> {
    // Every message type serialises infallibly: no maps with non-string keys, no unsupported types.
    rmp_serde::to_vec_named(message).expect("protocol messages always encode")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn heartbeat_matches_the_spec_bytes() {
        let bytes = encode(&WorkerMessage::Heartbeat(Heartbeat {
            seq: 1,
            jobs: vec![],
            paths: None,
            binaries: None,
        }));
        let expected = [
            0x83, 0xa4, b't', b'y', b'p', b'e', 0xa9, b'h', b'e', b'a', b'r', b't', b'b', b'e',
            b'a', b't', 0xa3, b's', b'e', b'q', 0x01, 0xa4, b'j', b'o', b'b', b's', 0x90,
        ];
        assert_eq!(bytes, expected);
    }

    #[test]
    fn trailing_bytes_are_malformed() {
        let mut bytes = encode(&WorkerMessage::Drain(WorkerDrain { reason: None }));
        bytes.push(0xc0);
        assert!(matches!(
            decode_worker_message(&bytes),
            Err(DecodeError::Malformed(_))
        ));
    }

    #[test]
    fn unknown_types_are_not_fatal() {
        let bytes = encode(&CoordinatorMessage::Shutdown(Shutdown {
            reason: "x".into(),
            reconnect_after_ms: 1,
        }));
        assert_eq!(
            decode_worker_message(&bytes),
            Err(DecodeError::UnknownType("shutdown".into()))
        );
    }

    #[test]
    fn deep_nesting_is_malformed() {
        // {"type":"drain","reason": [[[[...]]]]} nested 40 deep
        let mut bytes = vec![
            0x82, 0xa4, b't', b'y', b'p', b'e', 0xa5, b'd', b'r', b'a', b'i', b'n',
        ];
        bytes.extend_from_slice(&[0xa6, b'r', b'e', b'a', b's', b'o', b'n']);
        bytes.extend(std::iter::repeat_n(0x91, 40));
        bytes.push(0xc0);
        assert!(matches!(
            decode_worker_message(&bytes),
            Err(DecodeError::Malformed(_))
        ));
    }

    #[test]
    fn garbage_is_malformed() {
        assert!(matches!(
            decode_worker_message(b"\xff\x00garbage"),
            Err(DecodeError::Malformed(_))
        ));
        assert!(matches!(
            decode_worker_message(b""),
            Err(DecodeError::Malformed(_))
        ));
        assert!(matches!(
            decode_worker_message(&encode(&5u32)),
            Err(DecodeError::Malformed(_))
        ));
    }

    #[test]
    fn oversized_lists_are_malformed() {
        let jobs = (0..=MAX_LIST_ITEMS as u32)
            .map(|attempt| JobRef {
                job_id: JobId(crate::Ulid::from_u128(1)),
                attempt,
            })
            .collect();
        let bytes = encode(&WorkerMessage::Heartbeat(Heartbeat {
            seq: 1,
            jobs,
            paths: None,
            binaries: None,
        }));
        assert!(matches!(
            decode_worker_message(&bytes),
            Err(DecodeError::Malformed(_))
        ));
    }
}

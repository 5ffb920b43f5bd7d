//! The stable error codes of api.md §6 and the error body every HTTP error carries (api.md §1.1). Codes are only
//! ever added, never renamed; the HTTP status of each code is fixed here so the server and clients agree.

use std::fmt;

use serde::{Deserialize, Serialize};

/// A stable, snake_case error code (api.md §6).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub enum ErrorCode {
    AuthRequired,
    AuthIncomplete,
    AuthUnknownClient,
    AuthIpNotAllowed,
    AuthBadTimestamp,
    AuthClockSkew,
    AuthBadSignature,
    AuthReplayed,
    RoleNotAllowed,
    PermissionDenied,
    Forbidden,
    InvalidJobId,
    InvalidCursor,
    InvalidQuery,
    UnsupportedBinary,
    NoSupportedTransport,
    InvalidPathVariable,
    PathEscape,
    ArgumentNotAllowed,
    MalformedJson,
    InvalidBody,
    UnsupportedMediaType,
    BodyTooLarge,
    RequestTimeout,
    IdempotencyConflict,
    StdinNotEnabled,
    JobNotStarted,
    JobFinished,
    StdinOffset,
    StdinWindowFull,
    ReplayCacheFull,
    JobNotFound,
    WorkerNotFound,
    NotFound,
    DashboardDisabled,
    ApiDocsDisabled,
    MethodNotAllowed,
    UpstreamWorkerRoute,
    WebsocketRequired,
    QueueFull,
    TooManyConnections,
    TooManyStreams,
    TooManySessions,
    ShuttingDown,
    Overloaded,
    StoreUnavailable,
    Internal,
    /// A code this build does not know (sent by a newer coordinator). Never sent.
    #[serde(other)]
    Unknown,
}

impl ErrorCode {
    /// Every code, in the order of api.md §6 (for documentation and tests).
    pub const ALL: &'static [ErrorCode] = &[
        ErrorCode::AuthRequired,
        ErrorCode::AuthIncomplete,
        ErrorCode::AuthUnknownClient,
        ErrorCode::AuthIpNotAllowed,
        ErrorCode::AuthBadTimestamp,
        ErrorCode::AuthClockSkew,
        ErrorCode::AuthBadSignature,
        ErrorCode::AuthReplayed,
        ErrorCode::RoleNotAllowed,
        ErrorCode::PermissionDenied,
        ErrorCode::Forbidden,
        ErrorCode::InvalidJobId,
        ErrorCode::InvalidCursor,
        ErrorCode::InvalidQuery,
        ErrorCode::UnsupportedBinary,
        ErrorCode::NoSupportedTransport,
        ErrorCode::InvalidPathVariable,
        ErrorCode::PathEscape,
        ErrorCode::ArgumentNotAllowed,
        ErrorCode::MalformedJson,
        ErrorCode::InvalidBody,
        ErrorCode::UnsupportedMediaType,
        ErrorCode::BodyTooLarge,
        ErrorCode::RequestTimeout,
        ErrorCode::IdempotencyConflict,
        ErrorCode::StdinNotEnabled,
        ErrorCode::JobNotStarted,
        ErrorCode::JobFinished,
        ErrorCode::StdinOffset,
        ErrorCode::StdinWindowFull,
        ErrorCode::ReplayCacheFull,
        ErrorCode::JobNotFound,
        ErrorCode::WorkerNotFound,
        ErrorCode::NotFound,
        ErrorCode::DashboardDisabled,
        ErrorCode::ApiDocsDisabled,
        ErrorCode::MethodNotAllowed,
        ErrorCode::UpstreamWorkerRoute,
        ErrorCode::WebsocketRequired,
        ErrorCode::QueueFull,
        ErrorCode::TooManyConnections,
        ErrorCode::TooManyStreams,
        ErrorCode::TooManySessions,
        ErrorCode::ShuttingDown,
        ErrorCode::Overloaded,
        ErrorCode::StoreUnavailable,
        ErrorCode::Internal,
    ];

    /// The HTTP status that always goes with this code.
    pub fn status(self) -> u16 {
        use ErrorCode::*;
        match self {
            AuthRequired | AuthIncomplete | AuthUnknownClient | AuthIpNotAllowed
            | AuthBadTimestamp | AuthClockSkew | AuthBadSignature | AuthReplayed => 401,
            RoleNotAllowed | PermissionDenied | Forbidden => 403,
            InvalidJobId | InvalidCursor | UnsupportedBinary | NoSupportedTransport
            | InvalidPathVariable | PathEscape | ArgumentNotAllowed => 400,
            InvalidQuery | MalformedJson | InvalidBody => 422,
            UnsupportedMediaType => 415,
            BodyTooLarge => 413,
            RequestTimeout => 408,
            IdempotencyConflict | StdinNotEnabled | JobNotStarted | JobFinished | StdinOffset => {
                409
            }
            StdinWindowFull | ReplayCacheFull => 429,
            JobNotFound | WorkerNotFound | NotFound | DashboardDisabled | ApiDocsDisabled => 404,
            MethodNotAllowed => 405,
            UpstreamWorkerRoute => 410,
            WebsocketRequired => 426,
            QueueFull | TooManyConnections | TooManyStreams | TooManySessions | ShuttingDown
            | Overloaded | StoreUnavailable => 503,
            Internal | Unknown => 500,
        }
    }

    /// The snake_case name, as on the wire.
    pub fn as_str(self) -> &'static str {
        use ErrorCode::*;
        match self {
            AuthRequired => "auth_required",
            AuthIncomplete => "auth_incomplete",
            AuthUnknownClient => "auth_unknown_client",
            AuthIpNotAllowed => "auth_ip_not_allowed",
            AuthBadTimestamp => "auth_bad_timestamp",
            AuthClockSkew => "auth_clock_skew",
            AuthBadSignature => "auth_bad_signature",
            AuthReplayed => "auth_replayed",
            RoleNotAllowed => "role_not_allowed",
            PermissionDenied => "permission_denied",
            Forbidden => "forbidden",
            InvalidJobId => "invalid_job_id",
            InvalidCursor => "invalid_cursor",
            InvalidQuery => "invalid_query",
            UnsupportedBinary => "unsupported_binary",
            NoSupportedTransport => "no_supported_transport",
            InvalidPathVariable => "invalid_path_variable",
            PathEscape => "path_escape",
            ArgumentNotAllowed => "argument_not_allowed",
            MalformedJson => "malformed_json",
            InvalidBody => "invalid_body",
            UnsupportedMediaType => "unsupported_media_type",
            BodyTooLarge => "body_too_large",
            RequestTimeout => "request_timeout",
            IdempotencyConflict => "idempotency_conflict",
            StdinNotEnabled => "stdin_not_enabled",
            JobNotStarted => "job_not_started",
            JobFinished => "job_finished",
            StdinOffset => "stdin_offset",
            StdinWindowFull => "stdin_window_full",
            ReplayCacheFull => "replay_cache_full",
            JobNotFound => "job_not_found",
            WorkerNotFound => "worker_not_found",
            NotFound => "not_found",
            DashboardDisabled => "dashboard_disabled",
            ApiDocsDisabled => "api_docs_disabled",
            MethodNotAllowed => "method_not_allowed",
            UpstreamWorkerRoute => "upstream_worker_route",
            WebsocketRequired => "websocket_required",
            QueueFull => "queue_full",
            TooManyConnections => "too_many_connections",
            TooManyStreams => "too_many_streams",
            TooManySessions => "too_many_sessions",
            ShuttingDown => "shutting_down",
            Overloaded => "overloaded",
            StoreUnavailable => "store_unavailable",
            Internal => "internal",
            Unknown => "unknown",
        }
    }

    /// Whether an answer with this code carries `Retry-After: 1` (api.md §6).
    pub fn retry_after(self) -> bool {
        self.status() == 503
            || matches!(
                self,
                ErrorCode::StdinWindowFull | ErrorCode::ReplayCacheFull
            )
    }
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The body of every HTTP error (api.md §1.1).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ErrorBody {
    /// Human-readable; upstream's exact text where upstream had the error.
    pub detail: String,
    pub code: ErrorCode,
    /// Only on `409 stdin_offset`: the next byte offset the coordinator expects.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expected_offset: Option<u64>,
}

impl ErrorBody {
    pub fn new(code: ErrorCode, detail: impl Into<String>) -> ErrorBody {
        ErrorBody {
            detail: detail.into(),
            code,
            expected_offset: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_through_serde() {
        for code in ErrorCode::ALL {
            let json = serde_json::to_string(code).unwrap();
            assert_eq!(json, format!("\"{}\"", code.as_str()));
            let back: ErrorCode = serde_json::from_str(&json).unwrap();
            assert_eq!(back, *code);
        }
    }

    #[test]
    fn unknown_codes_decode_as_unknown() {
        let body: ErrorBody =
            serde_json::from_str(r#"{"detail":"x","code":"from_the_future"}"#).unwrap();
        assert_eq!(body.code, ErrorCode::Unknown);
    }

    #[test]
    fn body_shape() {
        let body = ErrorBody::new(ErrorCode::JobNotFound, "Job not found");
        assert_eq!(
            serde_json::to_string(&body).unwrap(),
            r#"{"detail":"Job not found","code":"job_not_found"}"#
        );
        assert_eq!(ErrorCode::QueueFull.status(), 503);
        assert!(ErrorCode::QueueFull.retry_after());
        assert!(ErrorCode::ReplayCacheFull.retry_after());
        assert!(!ErrorCode::InvalidBody.retry_after());
    }
}

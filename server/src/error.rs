//! `ApiError`: the only error type handlers return. One mapping gives the status and the stable `ErrorCode` of
//! api.md §6; a 500 always says `Internal Server Error` on the wire and keeps its cause for the one log line the
//! error middleware writes. Module errors convert with `From`.

use std::sync::Arc;

use axum::Json;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

use protocol::{ErrorBody, ErrorCode};

use crate::{scheduler, store};

/// An error answer: a code, the detail the caller reads, and for 5xx the cause that is logged.
#[derive(Debug)]
pub struct ApiError {
    pub code: ErrorCode,
    pub detail: String,
    pub expected_offset: Option<u64>,
    pub source: Option<Arc<dyn std::error::Error + Send + Sync>>,
}

/// The cause of a 5xx answer, carried to the logging middleware in the response extensions.
#[derive(Debug, Clone)]
pub struct LoggedCause(pub String);

impl ApiError {
    pub fn new(code: ErrorCode, detail: impl Into<String>) -> ApiError {
        ApiError {
            code,
            detail: detail.into(),
            expected_offset: None,
            source: None,
        }
    }

    pub fn internal(source: impl std::error::Error + Send + Sync + 'static) -> ApiError {
        ApiError {
            code: ErrorCode::Internal,
            detail: "Internal Server Error".to_owned(),
            expected_offset: None,
            source: Some(Arc::new(source)),
        }
    }

    pub fn not_found() -> ApiError {
        ApiError::new(ErrorCode::NotFound, "Not Found")
    }

    pub fn job_not_found() -> ApiError {
        ApiError::new(ErrorCode::JobNotFound, "Job not found")
    }

    pub fn invalid_job_id() -> ApiError {
        ApiError::new(ErrorCode::InvalidJobId, "Invalid job ID")
    }

    pub fn permission(detail: &str) -> ApiError {
        ApiError::new(ErrorCode::PermissionDenied, detail)
    }

    pub fn invalid_query(name: &str, reason: &str) -> ApiError {
        ApiError::new(
            ErrorCode::InvalidQuery,
            format!("Invalid query parameter '{name}': {reason}"),
        )
    }

    pub fn invalid_body(detail: impl Into<String>) -> ApiError {
        ApiError::new(ErrorCode::InvalidBody, detail)
    }

    pub fn shutting_down() -> ApiError {
        ApiError::new(ErrorCode::ShuttingDown, "Shutting down")
    }

    pub fn store_unavailable() -> ApiError {
        ApiError::new(ErrorCode::StoreUnavailable, "Storage unavailable")
    }

    pub fn overloaded() -> ApiError {
        ApiError::new(ErrorCode::Overloaded, "Coordinator overloaded; retry later")
    }

    pub fn status(&self) -> StatusCode {
        StatusCode::from_u16(self.code.status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
    }
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.code, self.detail)
    }
}

impl From<store::Error> for ApiError {
    fn from(err: store::Error) -> ApiError {
        match err {
            store::Error::Unavailable => ApiError::store_unavailable(),
            other => ApiError::internal(other),
        }
    }
}

impl From<scheduler::Error> for ApiError {
    fn from(err: scheduler::Error) -> ApiError {
        match err {
            scheduler::Error::UnknownJob(_) => ApiError::job_not_found(),
            scheduler::Error::QueueFull => ApiError::new(ErrorCode::QueueFull, "Job queue full"),
            scheduler::Error::IdempotencyConflict => ApiError::new(
                ErrorCode::IdempotencyConflict,
                "Idempotency key reused with a different request",
            ),
            scheduler::Error::Overloaded => ApiError::overloaded(),
            scheduler::Error::Unavailable => ApiError::store_unavailable(),
            scheduler::Error::Stopped => ApiError::shutting_down(),
            scheduler::Error::Store(err) => ApiError::internal(err),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status();
        let detail = if status == StatusCode::INTERNAL_SERVER_ERROR {
            "Internal Server Error".to_owned()
        } else {
            self.detail.clone()
        };
        let body = ErrorBody {
            detail,
            code: self.code,
            expected_offset: self.expected_offset,
        };
        let mut response = (status, Json(body)).into_response();
        if self.code.retry_after() {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        }
        if matches!(
            self.code,
            ErrorCode::BodyTooLarge | ErrorCode::RequestTimeout
        ) {
            response
                .headers_mut()
                .insert(header::CONNECTION, HeaderValue::from_static("close"));
        }
        if status.is_server_error() {
            let cause = match &self.source {
                Some(source) => format!("{}: {}", self.detail, error_chain(source.as_ref())),
                None => self.detail.clone(),
            };
            response.extensions_mut().insert(LoggedCause(cause));
        }
        response
    }
}

/// `outer: inner: innermost`.
pub fn error_chain(err: &(dyn std::error::Error + 'static)) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

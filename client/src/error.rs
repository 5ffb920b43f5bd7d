//! The REST client's error type: what the coordinator refused (`Api`, with its stable code), what never reached it
//! or never came back (`Transport`), and what came back unreadable (`Decode`, `UnexpectedStatus`). The admin
//! protocol has its own error type in `admin`.

use protocol::ErrorBody;

/// A failed REST call.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The coordinator answered with a non-2xx status and the error body of api.md §1.1.
    #[error("the coordinator answered {status} {}: {}", body.code, body.detail)]
    Api {
        status: u16,
        body: ErrorBody,
        /// The `X-Request-Id` of the answer, to find the coordinator's log line.
        request_id: Option<String>,
    },
    /// A non-2xx answer whose body is not an `ErrorBody` (a reverse proxy's page, a truncated body).
    #[error("the coordinator answered {status} without an error body: {body}")]
    UnexpectedStatus {
        status: u16,
        /// The first bytes of the body, decoded lossily.
        body: String,
        request_id: Option<String>,
    },
    /// The request could not be sent, or the answer could not be received.
    #[error("request to the coordinator failed")]
    Transport(#[source] reqwest::Error),
    /// A 2xx answer (or a stream line) that does not decode into the expected type.
    #[error("decoding the coordinator's answer")]
    Decode(#[source] DecodeError),
    /// The base URL or a path given to the client is unusable; nothing was sent.
    #[error("invalid request: {0}")]
    InvalidRequest(String),
}

impl Error {
    /// The stable error code when the coordinator sent one.
    pub fn code(&self) -> Option<protocol::ErrorCode> {
        match self {
            Error::Api { body, .. } => Some(body.code),
            _ => None,
        }
    }

    /// The HTTP status of a refused request.
    pub fn status(&self) -> Option<u16> {
        match self {
            Error::Api { status, .. } | Error::UnexpectedStatus { status, .. } => Some(*status),
            Error::Transport(err) => err.status().map(|status| status.as_u16()),
            _ => None,
        }
    }
}

impl From<DecodeError> for Error {
    fn from(err: DecodeError) -> Error {
        Error::Decode(err)
    }
}

/// Why bytes from the coordinator do not decode. Produced by the pure decoders in [`crate::ndjson`] as well.
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    /// The bytes are not the JSON of the expected type.
    #[error("invalid {what}: {source}")]
    Json {
        /// What was being decoded (`JobRecord`, `event line`, …).
        what: &'static str,
        source: serde_json::Error,
    },
    /// An NDJSON line grew past the decoder's limit without a newline.
    #[error("stream line longer than {limit} bytes")]
    LineTooLong { limit: usize },
    /// The stream ended in the middle of a line.
    #[error("stream ended in the middle of a line ({bytes} bytes without a newline)")]
    Truncated { bytes: usize },
}

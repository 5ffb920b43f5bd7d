//! The transport of the worker session (worker-protocol.md §1, §2, §7): opening the signed WebSocket upgrade,
//! telling an HTTP refusal from a transport failure, the writer task that owns the socket's sending half, frame
//! encoding, and the reconnect backoff.
//!
//! Not here: what the frames mean, timers and job state (the agent owns those), and reading (the agent reads the
//! receiving half itself, so frames are handled in the order they arrive).

use std::time::Duration;

use futures_util::SinkExt;
use futures_util::stream::SplitSink;
use protocol::signing::{RequestToSign, new_nonce, sign_request};
use protocol::ws::WorkerMessage;
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::protocol::frame::CloseFrame;
use tokio_tungstenite::tungstenite::{self, Message};
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

use crate::config::Identity;

/// The path of the session endpoint, signed without any path base.
pub const SESSION_PATH: &str = "/worker/ws";
/// The largest message before the coordinator has said otherwise (`worker_session.max_frame_bytes` default).
pub const DEFAULT_MAX_FRAME_BYTES: usize = 1 << 20;
/// How long opening a connection (TCP, TLS, upgrade) may take.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// The socket of one session.
pub type WsStream = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// Why a connection could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    /// The coordinator answered the upgrade with an HTTP error (401, 403, 426, 503, …).
    #[error("the coordinator refused the worker: {status} {detail}")]
    Refused {
        /// The HTTP status.
        status: u16,
        /// The error body's `detail`, or the body's first bytes, or the status text.
        detail: String,
    },
    /// TCP, TLS or the WebSocket handshake failed.
    #[error("connecting to {url}: {source}")]
    Transport {
        url: String,
        #[source]
        source: tungstenite::Error,
    },
    /// No answer in time.
    #[error("connecting to {url}: no answer within {} s", timeout.as_secs())]
    Timeout { url: String, timeout: Duration },
    /// The URL or a header value is unusable; retrying cannot help until the configuration changes.
    #[error("building the upgrade request for {url}: {message}")]
    Request { url: String, message: String },
}

/// Opens the session socket: `GET {url}` signed for `/worker/ws` with a fresh nonce, no extensions, messages and
/// frames capped at `max_frame_bytes`.
pub async fn connect(
    url: &str,
    identity: &Identity,
    max_frame_bytes: usize,
) -> Result<WsStream, ConnectError> {
    let request_error = |message: String| ConnectError::Request {
        url: url.to_owned(),
        message,
    };
    let mut request = url
        .into_client_request()
        .map_err(|error| request_error(error.to_string()))?;
    let nonce = new_nonce();
    let headers = sign_request(
        &identity.client_id,
        &identity.key,
        RequestToSign {
            method: "GET",
            path: SESSION_PATH,
            query: "",
            body: b"",
            timestamp: unix_now(),
            nonce: Some(&nonce),
        },
    );
    for (name, value) in headers.pairs() {
        let value =
            HeaderValue::from_str(&value).map_err(|error| request_error(error.to_string()))?;
        request.headers_mut().insert(name, value);
    }
    let config = WebSocketConfig::default()
        .max_message_size(Some(max_frame_bytes))
        .max_frame_size(Some(max_frame_bytes));
    let attempt = tokio_tungstenite::connect_async_with_config(request, Some(config), true);
    match tokio::time::timeout(CONNECT_TIMEOUT, attempt).await {
        Err(_) => Err(ConnectError::Timeout {
            url: url.to_owned(),
            timeout: CONNECT_TIMEOUT,
        }),
        Ok(Ok((stream, _response))) => Ok(stream),
        Ok(Err(tungstenite::Error::Http(response))) => {
            let status = response.status();
            let detail = response
                .body()
                .as_deref()
                .and_then(refusal_detail)
                .unwrap_or_else(|| status.canonical_reason().unwrap_or("").to_owned());
            Err(ConnectError::Refused {
                status: status.as_u16(),
                detail,
            })
        }
        Ok(Err(source)) => Err(ConnectError::Transport {
            url: url.to_owned(),
            source,
        }),
    }
}

/// The `detail` of an error body, else the body's first line when it is short text.
fn refusal_detail(body: &[u8]) -> Option<String> {
    /// The one field needed from the error body of api.md §1.1 (its `code` may be newer than this build).
    #[derive(serde::Deserialize)]
    struct Detail {
        detail: String,
    }
    if let Ok(error) = serde_json::from_slice::<Detail>(body) {
        return Some(error.detail);
    }
    let text = String::from_utf8_lossy(body);
    let line = text.lines().next()?.trim();
    (!line.is_empty()).then(|| line.chars().take(200).collect())
}

/// Unix time in whole seconds, for `x-dffmpeg-timestamp`.
fn unix_now() -> i64 {
    time::OffsetDateTime::now_utc().unix_timestamp()
}

/// What the writer task sends.
#[derive(Debug)]
pub enum Outbound {
    /// One encoded protocol message, as a binary WebSocket message.
    Frame(Vec<u8>),
    /// A Close frame; the writer ends after it.
    Close { code: u16, reason: String },
}

/// Encodes a protocol message.
pub fn encode(message: &WorkerMessage) -> Outbound {
    Outbound::Frame(protocol::ws::encode(message))
}

/// Owns the sending half: writes each queued item in order, without buffering; ends after a Close, when the queue
/// is closed, or on the first write error.
pub async fn write_loop(
    mut sink: SplitSink<WsStream, Message>,
    mut queue: mpsc::Receiver<Outbound>,
) -> Result<(), tungstenite::Error> {
    while let Some(item) = queue.recv().await {
        match item {
            Outbound::Frame(bytes) => sink.send(Message::binary(bytes)).await?,
            Outbound::Close { code, reason } => {
                sink.send(Message::Close(Some(CloseFrame {
                    code: code.into(),
                    reason: reason.into(),
                })))
                .await?;
                return Ok(());
            }
        }
    }
    Ok(())
}

/// The reconnect backoff of worker-protocol.md §7: `initial` doubling to `max`, each delay randomised ±50 %.
#[derive(Debug, Clone)]
pub struct Backoff {
    initial: Duration,
    max: Duration,
    next: Duration,
}

/// A session that lasted this long resets the backoff.
pub const BACKOFF_RESET_AFTER: Duration = Duration::from_secs(60);

impl Backoff {
    pub fn new(initial: Duration, max: Duration) -> Backoff {
        Backoff {
            initial,
            max: max.max(initial),
            next: initial,
        }
    }

    /// The next delay, randomised; the one after it doubles (up to the ceiling).
    pub fn next_delay(&mut self) -> Duration {
        let base = self.next;
        self.next = (self.next * 2).min(self.max);
        base.mul_f64(rand::random_range(0.5..=1.5))
    }

    /// Back to the initial delay.
    pub fn reset(&mut self) {
        self.next = self.initial;
    }

    /// The base (before randomisation) of the next delay.
    pub fn peek(&self) -> Duration {
        self.next
    }
}

/// `interval` randomised by ±`spread` (0.1 for heartbeats).
pub fn jittered(interval: Duration, spread: f64) -> Duration {
    interval.mul_f64(rand::random_range((1.0 - spread)..=(1.0 + spread)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_to_the_ceiling_with_jitter() {
        let mut backoff = Backoff::new(Duration::from_millis(500), Duration::from_secs(4));
        let mut bases = Vec::new();
        for _ in 0..6 {
            let base = backoff.peek();
            let delay = backoff.next_delay();
            assert!(
                delay >= base / 2 && delay <= base * 3 / 2,
                "{delay:?} not within ±50 % of {base:?}"
            );
            bases.push(base.as_millis());
        }
        assert_eq!(bases, [500, 1000, 2000, 4000, 4000, 4000]);
        backoff.reset();
        assert_eq!(backoff.peek(), Duration::from_millis(500));
        let beat = jittered(Duration::from_secs(5), 0.1);
        assert!(beat >= Duration::from_millis(4500) && beat <= Duration::from_millis(5500));
    }

    #[test]
    fn refusal_details() {
        assert_eq!(
            refusal_detail(br#"{"detail":"Invalid HMAC signature","code":"auth_bad_signature"}"#),
            Some("Invalid HMAC signature".to_owned())
        );
        assert_eq!(
            refusal_detail(b"Bad Gateway\n<html>"),
            Some("Bad Gateway".to_owned())
        );
        assert_eq!(refusal_detail(b""), None);
    }
}

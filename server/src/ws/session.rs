//! One worker session (worker-protocol.md §2, §6, §7): `hello` within `hello_timeout`, then frames handled in
//! arrival order with one command in flight to the scheduler, and a writer that drains the session's bounded
//! queue. Protocol errors answer with an `error` frame and a close code; the coordinator keeps serving everyone
//! else. The scheduler never touches the socket: it queues frames on the `SessionLink` or sets a kill code.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::ws::{CloseFrame, Message, WebSocket};
use bytes::Bytes;
use futures_util::stream::{SplitSink, SplitStream};
use futures_util::{SinkExt, StreamExt};
use tokio::sync::{mpsc, watch};
use tracing::Instrument;

use protocol::ws::{
    self, CoordinatorMessage, DecodeError, ErrorFrame, HeartbeatAck, Hello, Shutdown,
    WorkerMessage, close, error_code,
};
use protocol::{SessionId, Ulid};

use crate::scheduler::{Outbound, SessionLink};
use crate::state::{AppState, SessionTicket};

/// A refusal: the `error` frame, then the close code.
struct Refusal {
    frame: ErrorFrame,
    close: u16,
}

fn refusal(code: &str, message: impl Into<String>, close: u16) -> Refusal {
    Refusal {
        frame: ErrorFrame {
            code: code.to_owned(),
            message: message.into(),
            job_id: None,
            attempt: None,
            fatal: true,
        },
        close,
    }
}

fn error_bytes(frame: ErrorFrame) -> Bytes {
    Bytes::from(ws::encode(&CoordinatorMessage::Error(frame)))
}

/// Runs a session until it ends, then tells the scheduler.
pub(super) async fn run(socket: WebSocket, worker: String, state: AppState, ticket: SessionTicket) {
    let session = SessionId(Ulid::generate());
    let span = tracing::info_span!("session", worker_id = %worker, session_id = %session);
    serve(socket, worker, session, state, ticket)
        .instrument(span)
        .await;
}

async fn close_with(sink: &mut SplitSink<WebSocket, Message>, code: u16, reason: &str) {
    let frame = CloseFrame {
        code,
        reason: reason.into(),
    };
    let _ = tokio::time::timeout(
        Duration::from_secs(2),
        sink.send(Message::Close(Some(frame))),
    )
    .await;
}

async fn refuse(sink: &mut SplitSink<WebSocket, Message>, refusal: Refusal) {
    tracing::warn!(code = %refusal.frame.code, close = refusal.close, message = %refusal.frame.message, "session refused");
    let _ = tokio::time::timeout(
        Duration::from_secs(2),
        sink.send(Message::Binary(error_bytes(refusal.frame.clone()))),
    )
    .await;
    close_with(sink, refusal.close, &refusal.frame.code).await;
}

/// Checks the first frame: version, identity, shape, bounds (worker-protocol.md §3, §4.1).
fn read_hello(bytes: &[u8], worker: &str) -> Result<Hello, Refusal> {
    match ws::decode_hello_head(bytes) {
        Ok(head) if head.kind == "hello" => {
            let ours = protocol::PROTOCOL_VERSION;
            if head.protocol_version.major != ours.major {
                let upgrade = if head.protocol_version.major > ours.major {
                    "the coordinator"
                } else {
                    "dffmpeg-worker"
                };
                return Err(refusal(
                    error_code::PROTOCOL_VERSION_UNSUPPORTED,
                    format!(
                        "worker speaks protocol {}; this coordinator speaks {}.0 to {}; upgrade {upgrade}",
                        head.protocol_version, ours.major, ours
                    ),
                    close::VERSION_UNSUPPORTED,
                ));
            }
            if head.worker_id != worker {
                return Err(refusal(
                    error_code::IDENTITY_MISMATCH,
                    format!(
                        "hello names worker '{}' but the request was signed by '{worker}'",
                        head.worker_id
                    ),
                    close::POLICY,
                ));
            }
            match ws::decode_worker_message(bytes) {
                Ok(WorkerMessage::Hello(hello)) => {
                    hello.validate().map_err(|message| {
                        refusal(error_code::INVALID_HELLO, message, close::INVALID_HELLO)
                    })?;
                    Ok(hello)
                }
                Ok(_) | Err(DecodeError::UnknownType(_)) => Err(refusal(
                    error_code::HELLO_REQUIRED,
                    "the first message must be hello",
                    close::POLICY,
                )),
                Err(DecodeError::Malformed(message)) => Err(refusal(
                    error_code::MALFORMED_MESSAGE,
                    message,
                    close::INVALID_PAYLOAD,
                )),
            }
        }
        _ => match ws::decode_worker_message(bytes) {
            Err(DecodeError::Malformed(message)) => Err(refusal(
                error_code::MALFORMED_MESSAGE,
                message,
                close::INVALID_PAYLOAD,
            )),
            _ => Err(refusal(
                error_code::HELLO_REQUIRED,
                "the first message must be hello",
                close::POLICY,
            )),
        },
    }
}

/// Is this a message-size error of the WebSocket layer?
fn too_big(err: &axum::Error) -> bool {
    let text = err.to_string().to_ascii_lowercase();
    text.contains("too long")
        || text.contains("too big")
        || text.contains("space limit")
        || text.contains("capacity")
}

async fn serve(
    socket: WebSocket,
    worker: String,
    session: SessionId,
    state: AppState,
    mut ticket: SessionTicket,
) {
    let settings = &state.settings.session;
    let (mut sink, mut stream) = socket.split();
    let hello_deadline = tokio::time::Instant::now() + settings.hello_timeout;
    let hello = loop {
        let next = tokio::select! {
            next = tokio::time::timeout_at(hello_deadline, stream.next()) => next,
            () = state.closing.cancelled() => {
                close_with(&mut sink, close::GOING_AWAY, "shutting down").await;
                return;
            }
        };
        match next {
            Err(_) => {
                tracing::warn!("no hello within hello_timeout");
                close_with(
                    &mut sink,
                    close::HELLO_TIMEOUT,
                    "no hello within hello_timeout",
                )
                .await;
                return;
            }
            Ok(None) => return,
            Ok(Some(Err(err))) => {
                if too_big(&err) {
                    close_with(&mut sink, close::TOO_BIG, "message too big").await;
                }
                return;
            }
            Ok(Some(Ok(Message::Binary(bytes)))) => match read_hello(&bytes, &worker) {
                Ok(hello) => break hello,
                Err(refused) => {
                    refuse(&mut sink, refused).await;
                    return;
                }
            },
            Ok(Some(Ok(Message::Text(_)))) => {
                close_with(
                    &mut sink,
                    close::UNSUPPORTED_DATA,
                    "text frames are not part of the protocol",
                )
                .await;
                return;
            }
            Ok(Some(Ok(Message::Close(_)))) => return,
            Ok(Some(Ok(_))) => continue, // ping and pong
        }
    };
    let (tx, rx) = mpsc::channel(settings.send_queue_frames);
    let (kill_tx, kill_rx) = watch::channel(None);
    let kill = Arc::new(kill_tx);
    let link = SessionLink {
        session_id: session,
        tx: tx.clone(),
        kill: kill.clone(),
    };
    match state.scheduler.worker_hello(hello, link.clone()).await {
        Ok(Ok(())) => {}
        Ok(Err(refused)) => {
            let frame = ErrorFrame {
                code: refused.code.to_owned(),
                message: refused.message,
                job_id: None,
                attempt: None,
                fatal: true,
            };
            refuse(
                &mut sink,
                Refusal {
                    frame,
                    close: refused.close,
                },
            )
            .await;
            return;
        }
        Err(_) => {
            close_with(&mut sink, close::GOING_AWAY, "shutting down").await;
            return;
        }
    }
    ticket.promote(session);
    let stall = settings.heartbeat_interval * settings.missed_heartbeats;
    let writer = write_loop(sink, rx, kill_rx, state.closing.clone(), stall);
    tokio::pin!(writer);
    tokio::select! {
        () = &mut writer => {}
        () = read_loop(stream, &link, &state, &worker, session) => {
            // Let the writer send what the reader queued (an error and its close), else close now.
            let drained = tokio::time::timeout(Duration::from_millis(500), &mut writer).await.is_ok();
            if !drained {
                let _ = kill.send(Some(close::NORMAL));
                let _ = tokio::time::timeout(Duration::from_secs(2), &mut writer).await;
            }
        }
    }
    drop(tx);
    state.scheduler.worker_gone(&worker, session).await;
}

/// Sends queued frames until a close, a kill or shutdown. A peer that takes no bytes for `stall` is dropped.
async fn write_loop(
    mut sink: SplitSink<WebSocket, Message>,
    mut rx: mpsc::Receiver<Outbound>,
    mut kill: watch::Receiver<Option<u16>>,
    closing: tokio_util::sync::CancellationToken,
    stall: Duration,
) {
    loop {
        let item = tokio::select! {
            biased;
            changed = kill.changed() => {
                let code = if changed.is_ok() { kill.borrow().unwrap_or(close::NORMAL) } else { close::NORMAL };
                close_with(&mut sink, code, "").await;
                return;
            }
            () = closing.cancelled() => {
                let shutdown = CoordinatorMessage::Shutdown(Shutdown {
                    reason: "the coordinator is shutting down".to_owned(),
                    reconnect_after_ms: 1000,
                });
                let _ = tokio::time::timeout(Duration::from_secs(2), sink.send(Message::Binary(Bytes::from(ws::encode(&shutdown))))).await;
                close_with(&mut sink, close::GOING_AWAY, "shutting down").await;
                return;
            }
            item = rx.recv() => item,
        };
        let message = match item {
            Some(Outbound::Frame(bytes)) => Message::Binary(bytes),
            Some(Outbound::Close(code, reason)) => {
                close_with(&mut sink, code, &reason).await;
                return;
            }
            None => return,
        };
        let sent = tokio::select! {
            biased;
            _ = kill.changed() => return, // killed while the peer does not read: drop the connection
            sent = tokio::time::timeout(stall, sink.send(message)) => sent,
        };
        if !matches!(sent, Ok(Ok(()))) {
            tracing::warn!("the worker stopped reading; session dropped");
            return;
        }
    }
}

/// Reads frames in order; each goes to the scheduler and is applied before the next is read.
async fn read_loop(
    mut stream: SplitStream<WebSocket>,
    link: &SessionLink,
    state: &AppState,
    worker: &str,
    session: SessionId,
) {
    let mut logged: HashSet<&'static str> = HashSet::new();
    let queue = |item: Outbound| {
        if link.tx.try_send(item).is_err() {
            link.kill(close::QUEUE_OVERFLOW);
        }
    };
    while let Some(next) = stream.next().await {
        let bytes = match next {
            Ok(Message::Binary(bytes)) => bytes,
            Ok(Message::Text(_)) => {
                tracing::warn!("text frame from the worker");
                queue(Outbound::Close(
                    close::UNSUPPORTED_DATA,
                    "text frames are not part of the protocol".into(),
                ));
                return;
            }
            Ok(Message::Close(_)) => return,
            Ok(_) => continue,
            Err(err) => {
                if too_big(&err) {
                    tracing::warn!("message over max_frame_bytes");
                    link.kill(close::TOO_BIG);
                }
                return;
            }
        };
        match ws::decode_worker_message(&bytes) {
            Ok(WorkerMessage::Hello(_)) => {
                let frame = refusal(
                    error_code::UNEXPECTED_MESSAGE,
                    "a second hello in one session",
                    close::POLICY,
                );
                tracing::warn!(code = error_code::UNEXPECTED_MESSAGE, "session closed");
                queue(Outbound::Frame(error_bytes(frame.frame)));
                queue(Outbound::Close(
                    close::POLICY,
                    error_code::UNEXPECTED_MESSAGE.into(),
                ));
                return;
            }
            Ok(frame) => {
                let heartbeat = match &frame {
                    WorkerMessage::Heartbeat(heartbeat) => Some(heartbeat.seq),
                    _ => None,
                };
                if state
                    .scheduler
                    .worker_frame(worker, session, frame)
                    .await
                    .is_err()
                {
                    return;
                }
                if let Some(seq) = heartbeat {
                    let ack = CoordinatorMessage::HeartbeatAck(HeartbeatAck {
                        seq,
                        server_time_ms: protocol::timefmt::to_unix_ms(
                            time::OffsetDateTime::now_utc(),
                        ),
                    });
                    queue(Outbound::Frame(Bytes::from(ws::encode(&ack))));
                }
            }
            Err(DecodeError::UnknownType(kind)) => {
                if logged.insert(error_code::UNKNOWN_MESSAGE) {
                    tracing::warn!(kind = %kind, "unknown message type");
                }
                let frame = ErrorFrame {
                    code: error_code::UNKNOWN_MESSAGE.to_owned(),
                    message: format!("unknown message type '{kind}'"),
                    job_id: None,
                    attempt: None,
                    fatal: false,
                };
                queue(Outbound::Frame(error_bytes(frame)));
            }
            Err(DecodeError::Malformed(message)) => {
                tracing::warn!(code = error_code::MALFORMED_MESSAGE, message = %message, "session closed");
                let frame = refusal(
                    error_code::MALFORMED_MESSAGE,
                    message,
                    close::INVALID_PAYLOAD,
                );
                queue(Outbound::Frame(error_bytes(frame.frame)));
                queue(Outbound::Close(
                    close::INVALID_PAYLOAD,
                    error_code::MALFORMED_MESSAGE.into(),
                ));
                return;
            }
        }
    }
}

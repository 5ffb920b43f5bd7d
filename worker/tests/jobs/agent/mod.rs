//! Black-box tests of the whole worker (`Worker::build` + `run_until`) against a fake coordinator written here with
//! tokio-tungstenite's server side on 127.0.0.1: it checks the signed upgrade (or refuses it with 401), speaks
//! `protocol::ws` frames, and answers heartbeats. Jobs are real ffmpeg runs. Every wait is bounded and names what
//! did not happen.

mod cli;
mod drain;
mod jobs;
mod session;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use dffmpeg_worker::config::{Config, Loaded};
use dffmpeg_worker::{RunError, Worker, WorkerSignal};
use futures_util::{SinkExt, StreamExt};
use protocol::signing::{self, HmacKey, NonceParts};
use protocol::ws::{
    AssignJob, CanceledJob, CoordinatorMessage, Hello, JobAccepted, ResumedJob, Welcome,
    WorkerMessage, decode_worker_message,
};
use protocol::{JobId, SessionId, Ulid};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio::time::{Instant, timeout};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::handshake::server::{ErrorResponse, Request, Response};
use tokio_tungstenite::tungstenite::http;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::{Bytes, Message};

use crate::program;

pub(crate) const WORKER_ID: &str = "worker01";
pub(crate) const KEY: &str = "agU939Kjy2TA/QuqjyZ0lHrjWrYGxB+pEb3LZUfqK5Y=";
/// How long any single expected event may take.
pub(crate) const WAIT: Duration = Duration::from_secs(20);

/// A coordinator stand-in: accepts signed upgrades on `/worker/ws` and hands each session to the test.
pub(crate) struct FakeCoordinator {
    pub(crate) addr: SocketAddr,
    sessions: mpsc::Receiver<FakeSession>,
    /// Upgrades still to refuse with 401.
    refuse: Arc<AtomicUsize>,
    /// Every upgrade request seen, refused or not.
    attempts: Arc<AtomicUsize>,
    task: JoinHandle<()>,
}

impl Drop for FakeCoordinator {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl FakeCoordinator {
    /// Listens on 127.0.0.1:0; the request path must be `{path_base}/worker/ws`, signed as `/worker/ws`.
    pub(crate) async fn start() -> FakeCoordinator {
        FakeCoordinator::start_with_base("").await
    }

    pub(crate) async fn start_with_base(path_base: &str) -> FakeCoordinator {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (sessions_tx, sessions) = mpsc::channel(8);
        let refuse = Arc::new(AtomicUsize::new(0));
        let attempts = Arc::new(AtomicUsize::new(0));
        let expected_path = format!("{path_base}/worker/ws");
        let task = tokio::spawn({
            let refuse = refuse.clone();
            let attempts = attempts.clone();
            async move {
                loop {
                    let Ok((stream, _)) = listener.accept().await else {
                        return;
                    };
                    let sessions_tx = sessions_tx.clone();
                    let refuse = refuse.clone();
                    let attempts = attempts.clone();
                    let expected_path = expected_path.clone();
                    tokio::spawn(async move {
                        // The error type is tungstenite's (`Callback`), large or not.
                        #[allow(clippy::result_large_err)]
                        let callback = move |request: &Request, response: Response| {
                            attempts.fetch_add(1, Ordering::SeqCst);
                            if let Some((status, detail)) = check_upgrade(request, &expected_path) {
                                return Err(refusal(status, detail));
                            }
                            if refuse
                                .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| {
                                    n.checked_sub(1)
                                })
                                .is_ok()
                            {
                                return Err(refusal(401, "Invalid HMAC signature"));
                            }
                            Ok(response)
                        };
                        if let Ok(ws) = tokio_tungstenite::accept_hdr_async(stream, callback).await
                        {
                            let _ = sessions_tx.send(FakeSession::new(ws)).await;
                        }
                    });
                }
            }
        });
        FakeCoordinator {
            addr,
            sessions,
            refuse,
            attempts,
            task,
        }
    }

    /// Refuses the next `count` upgrades with 401.
    pub(crate) fn refuse_next(&self, count: usize) {
        self.refuse.store(count, Ordering::SeqCst);
    }

    /// Upgrade requests seen so far.
    pub(crate) fn attempts(&self) -> usize {
        self.attempts.load(Ordering::SeqCst)
    }

    /// The next accepted session.
    pub(crate) async fn next_session(&mut self, what: &str) -> FakeSession {
        timeout(WAIT, self.sessions.recv())
            .await
            .unwrap_or_else(|_| panic!("{what}: the worker did not connect within {WAIT:?}"))
            .expect("the accept loop ended")
    }

    /// The next session after its `hello`, welcomed with the given terms and nothing held.
    pub(crate) async fn connect(&mut self, heartbeat_ms: u32) -> (FakeSession, Hello) {
        let mut session = self.next_session("first session").await;
        let hello = session.hello().await;
        session
            .welcome(heartbeat_ms, heartbeat_ms * 5, vec![], vec![])
            .await;
        (session, hello)
    }
}

/// The upgrade must be for the session path and carry a valid signature of `GET /worker/ws` with a nonce; else
/// the status and detail of the refusal.
fn check_upgrade(request: &Request, expected_path: &str) -> Option<(u16, &'static str)> {
    if request.uri().path() != expected_path {
        return Some((404, "Not Found"));
    }
    let header = |name: &str| {
        request
            .headers()
            .get(name)
            .and_then(|value| value.to_str().ok())
            .map(str::to_owned)
    };
    let (Some(client_id), Some(timestamp), Some(signature), Some(nonce)) = (
        header(signing::HEADER_CLIENT_ID),
        header(signing::HEADER_TIMESTAMP),
        header(signing::HEADER_SIGNATURE),
        header(signing::HEADER_NONCE),
    ) else {
        return Some((401, "Missing authentication headers"));
    };
    let key = HmacKey::parse(KEY).unwrap();
    let canonical = signing::canonical_string(
        "GET",
        "/worker/ws",
        &timestamp,
        b"",
        Some(NonceParts {
            query: request.uri().query().unwrap_or(""),
            nonce: &nonce,
        }),
    );
    let valid = client_id == WORKER_ID
        && signing::nonce_is_valid(&nonce)
        && signing::decode_signature(&signature)
            .is_some_and(|decoded| signing::verify(&key, &canonical, &decoded));
    (!valid).then_some((401, "Invalid HMAC signature"))
}

fn refusal(status: u16, detail: &str) -> ErrorResponse {
    http::Response::builder()
        .status(status)
        .header("content-type", "application/json")
        .body(Some(format!(
            r#"{{"detail":"{detail}","code":"auth_bad_signature"}}"#
        )))
        .unwrap()
}

/// One accepted session, seen from the coordinator's side.
pub(crate) struct FakeSession {
    ws: WebSocketStream<TcpStream>,
    /// Answer each heartbeat with a heartbeat_ack while reading.
    pub(crate) auto_ack: bool,
}

/// What ended a session from the worker's side.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Ended {
    Closed(Option<u16>),
    Dropped,
}

impl FakeSession {
    fn new(ws: WebSocketStream<TcpStream>) -> FakeSession {
        FakeSession { ws, auto_ack: true }
    }

    /// The next protocol frame, or how the session ended. Heartbeats are answered when `auto_ack`.
    pub(crate) async fn recv_raw(&mut self) -> Result<WorkerMessage, Ended> {
        loop {
            match self.ws.next().await {
                Some(Ok(Message::Binary(bytes))) => {
                    let message = decode_worker_message(&bytes).unwrap_or_else(|error| {
                        panic!("the worker sent an undecodable frame: {error}")
                    });
                    if let (true, WorkerMessage::Heartbeat(heartbeat)) = (self.auto_ack, &message) {
                        let ack = CoordinatorMessage::HeartbeatAck(protocol::ws::HeartbeatAck {
                            seq: heartbeat.seq,
                            server_time_ms: dffmpeg_worker::now_ms(),
                        });
                        let _ = self
                            .ws
                            .send(Message::binary(protocol::ws::encode(&ack)))
                            .await;
                    }
                    return Ok(message);
                }
                Some(Ok(Message::Text(text))) => panic!("the worker sent a text frame: {text}"),
                Some(Ok(Message::Close(frame))) => {
                    return Err(Ended::Closed(frame.map(|frame| u16::from(frame.code))));
                }
                Some(Ok(_)) => {}
                Some(Err(_)) | None => return Err(Ended::Dropped),
            }
        }
    }

    /// The next frame within [`WAIT`]; a close fails the test.
    pub(crate) async fn recv(&mut self, what: &str) -> WorkerMessage {
        match timeout(WAIT, self.recv_raw()).await {
            Ok(Ok(message)) => message,
            Ok(Err(ended)) => panic!("{what}: the session ended ({ended:?})"),
            Err(_) => panic!("{what}: no frame within {WAIT:?}"),
        }
    }

    /// Frames until one matches, skipping (and returning) the others.
    pub(crate) async fn until(
        &mut self,
        what: &str,
        mut matches: impl FnMut(&WorkerMessage) -> bool,
    ) -> (WorkerMessage, Vec<WorkerMessage>) {
        let deadline = Instant::now() + WAIT;
        let mut skipped = Vec::new();
        loop {
            let message = match tokio::time::timeout_at(deadline, self.recv_raw()).await {
                Ok(Ok(message)) => message,
                Ok(Err(ended)) => {
                    panic!("{what}: the session ended ({ended:?}) first; frames: {skipped:?}")
                }
                Err(_) => panic!(
                    "{what}: did not arrive within {WAIT:?}; frames: {}",
                    summary(&skipped)
                ),
            };
            if matches(&message) {
                return (message, skipped);
            }
            skipped.push(message);
        }
    }

    /// Sends `assign_job` for `arguments` and waits for its `job_accepted`, skipping the frames before it.
    pub(crate) async fn start_job(
        &mut self,
        job_id: JobId,
        attempt: u32,
        arguments: Vec<String>,
    ) -> JobAccepted {
        self.send(CoordinatorMessage::AssignJob(assign_args(
            job_id, attempt, arguments,
        )))
        .await;
        let (accepted, _) = self
            .until("job_accepted", |m| {
                matches!(m, WorkerMessage::JobAccepted(_))
            })
            .await;
        let WorkerMessage::JobAccepted(accepted) = accepted else {
            unreachable!()
        };
        accepted
    }

    /// Frames until the session ends; returns them and how it ended.
    pub(crate) async fn until_end(&mut self, what: &str) -> (Vec<WorkerMessage>, Ended) {
        let deadline = Instant::now() + WAIT;
        let mut frames = Vec::new();
        loop {
            match tokio::time::timeout_at(deadline, self.recv_raw()).await {
                Ok(Ok(message)) => frames.push(message),
                Ok(Err(ended)) => return (frames, ended),
                Err(_) => panic!(
                    "{what}: the session did not end within {WAIT:?}; frames: {}",
                    summary(&frames)
                ),
            }
        }
    }

    pub(crate) async fn hello(&mut self) -> Hello {
        match self.recv("hello").await {
            WorkerMessage::Hello(hello) => hello,
            other => panic!("the first frame is not hello: {other:?}"),
        }
    }

    pub(crate) async fn send(&mut self, message: CoordinatorMessage) {
        self.ws
            .send(Message::binary(protocol::ws::encode(&message)))
            .await
            .expect("sending to the worker");
    }

    pub(crate) async fn send_raw(&mut self, message: Message) {
        self.ws.send(message).await.expect("sending to the worker");
    }

    pub(crate) async fn welcome(
        &mut self,
        heartbeat_ms: u32,
        lease_ms: u32,
        resumed: Vec<ResumedJob>,
        cancel: Vec<CanceledJob>,
    ) {
        self.send(CoordinatorMessage::Welcome(Welcome {
            session_id: SessionId(Ulid::generate()),
            protocol_version: protocol::PROTOCOL_VERSION,
            heartbeat_interval_ms: heartbeat_ms,
            lease_ms,
            server_time_ms: dffmpeg_worker::now_ms(),
            max_frame_bytes: 1 << 20,
            binaries: vec!["ffmpeg".into(), "ffprobe".into()],
            status: "online".into(),
            resumed,
            cancel,
        }))
        .await;
    }

    pub(crate) async fn close(&mut self, code: u16) {
        let _ = self
            .ws
            .send(Message::Close(Some(CloseFrame {
                code: CloseCode::from(code),
                reason: "test".into(),
            })))
            .await;
    }

    pub(crate) async fn ping(&mut self, payload: &'static [u8]) {
        self.send_raw(Message::Ping(Bytes::from_static(payload)))
            .await;
    }

    /// The next Pong, skipping protocol frames.
    pub(crate) async fn expect_pong(&mut self) -> Vec<u8> {
        let deadline = Instant::now() + WAIT;
        loop {
            match tokio::time::timeout_at(deadline, self.ws.next()).await {
                Ok(Some(Ok(Message::Pong(payload)))) => return payload.to_vec(),
                Ok(Some(Ok(_))) => {}
                other => panic!("no pong: {other:?}"),
            }
        }
    }
}

/// Frame types, for failure messages.
pub(crate) fn summary(frames: &[WorkerMessage]) -> String {
    frames
        .iter()
        .map(WorkerMessage::type_name)
        .collect::<Vec<_>>()
        .join(", ")
}

/// A running worker under test.
pub(crate) struct TestWorker {
    pub(crate) signals: mpsc::Sender<WorkerSignal>,
    handle: JoinHandle<Result<(), RunError>>,
    /// The worker's directory: `media/` is the root of `$Media`.
    pub(crate) dir: tempfile::TempDir,
    pub(crate) media: PathBuf,
}

impl TestWorker {
    /// A worker for `fake` with short timers; `tweak` adjusts the configuration.
    pub(crate) async fn start(
        fake: &FakeCoordinator,
        tweak: impl FnOnce(&mut Config),
    ) -> TestWorker {
        let dir = tempfile::tempdir().unwrap();
        let media = std::fs::canonicalize(dir.path()).unwrap().join("media");
        std::fs::create_dir(&media).unwrap();
        let Loaded {
            mut config,
            identity,
            ..
        } = test_config(dir.path(), fake.addr);
        tweak(&mut config);
        let worker = timeout(WAIT, Worker::build(config, identity))
            .await
            .expect("Worker::build did not finish in time")
            .expect("Worker::build failed");
        let (signals, signals_rx) = mpsc::channel(8);
        let handle = tokio::spawn(worker.run_until(signals_rx));
        TestWorker {
            signals,
            handle,
            dir,
            media,
        }
    }

    pub(crate) async fn signal(&self, signal: WorkerSignal) {
        self.signals
            .send(signal)
            .await
            .expect("the worker stopped listening to signals");
    }

    /// What `run_until` returned, within [`WAIT`].
    pub(crate) async fn exit(self, what: &str) -> Result<(), RunError> {
        timeout(WAIT, self.handle)
            .await
            .unwrap_or_else(|_| panic!("{what}: run_until did not return within {WAIT:?}"))
            .expect("the worker task panicked")
    }

    /// Whether `run_until` has returned.
    pub(crate) fn has_exited(&self) -> bool {
        self.handle.is_finished()
    }
}

/// The configuration of a test worker: `dir/media` as `$Media`, real ffmpeg and ffprobe (and `cat` for stdin),
/// reconnects after 50 ms doubling to 400 ms, a 2 s kill grace.
pub(crate) fn test_config(dir: &Path, coordinator: SocketAddr) -> Loaded {
    let text = format!(
        "client_id: {WORKER_ID}\nhmac_key: {KEY}\ncoordinator:\n  host: 127.0.0.1\n  port: {}\n\
         binaries:\n  ffmpeg: {}\n  ffprobe: {}\n  cat: /bin/cat\npaths:\n  Media: {}\n\
         reconnect:\n  initial_delay: 50ms\n  max_delay: 400ms\nkill_grace_seconds: 2\n\
         mount_check_interval: 1h\nmax_concurrent_jobs: 2\n",
        coordinator.port(),
        program("ffmpeg").display(),
        program("ffprobe").display(),
        dir.join("media").display(),
    );
    Config::from_yaml(&dir.join("worker.yaml"), &text, &|_| None).unwrap()
}

pub(crate) fn new_job_id() -> JobId {
    JobId(Ulid::generate())
}

/// An `assign_job` with a 5 s job heartbeat and no stdin.
pub(crate) fn assign(
    job_id: JobId,
    attempt: u32,
    binary: &str,
    arguments: &[&str],
    paths: &[&str],
) -> AssignJob {
    AssignJob {
        job_id,
        attempt,
        binary: binary.to_owned(),
        arguments: arguments
            .iter()
            .map(|argument| (*argument).to_owned())
            .collect(),
        paths: paths.iter().map(|name| (*name).to_owned()).collect(),
        working_directory: None,
        heartbeat_interval_ms: 5000,
        stdin: false,
        priority: 0,
        requester_id: "client01".to_owned(),
    }
}

/// A realtime ffmpeg that runs for `seconds` unless stopped.
pub(crate) fn long_ffmpeg(seconds: u32) -> Vec<String> {
    vec![
        "-nostdin".into(),
        "-re".into(),
        "-f".into(),
        "lavfi".into(),
        "-i".into(),
        format!("testsrc=duration={seconds}:size=160x120:rate=25"),
        "-f".into(),
        "null".into(),
        "-".into(),
    ]
}

pub(crate) fn assign_args(job_id: JobId, attempt: u32, arguments: Vec<String>) -> AssignJob {
    AssignJob {
        arguments,
        ..assign(job_id, attempt, "ffmpeg", &[], &[])
    }
}

//! Worker sessions on `/worker/ws` with `FakeWorker` (a test worker that speaks the protocol): the upgrade checks,
//! hello/welcome, push placement, the job lifecycle, fencing, bad frames and close codes, resume and lost attempts.

use std::time::Duration;

use client::Method;
use futures_util::{SinkExt, StreamExt};
use serde_bytes::ByteBuf;
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::{self, Message};
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

use protocol::ErrorCode;
use protocol::rest::{JobRequest, JobStatus, OutputStream, WorkerStatus};
use protocol::ws::{
    self, AckResult, AssignJob, CoordinatorMessage, FinishedStatus, Heartbeat, HeldJob, HeldState,
    Hello, JobAccepted, JobFinished, JobLogs, JobProgress, JobRef, JobRejected, OutputChunk,
    Welcome, WorkerDrain, WorkerMessage,
};
use protocol::{JobId, signing};

use super::{TestApp, transcode};

type Socket = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// A test worker speaking the protocol over a real WebSocket.
#[allow(missing_debug_implementations)]
pub struct FakeWorker {
    pub id: String,
    socket: Socket,
    pub welcome: Welcome,
    seq: u64,
}

pub(crate) fn hello(id: &str, paths: &[&str], slots: u32) -> Hello {
    Hello {
        worker_id: id.to_owned(),
        version: "0.1.0".to_owned(),
        protocol_version: protocol::PROTOCOL_VERSION,
        host: Some("test-host".to_owned()),
        binaries: vec!["ffmpeg".to_owned(), "ffprobe".to_owned()],
        binary_versions: None,
        paths: paths.iter().map(|p| (*p).to_owned()).collect(),
        capabilities: vec![],
        max_concurrent_jobs: slots,
        status: "online".to_owned(),
        jobs: vec![],
    }
}

impl TestApp {
    /// The signed upgrade request of `id`, with `tweak` applied to the signature headers.
    async fn upgrade(
        &self,
        id: &str,
        tweak: impl FnOnce(&mut signing::SignedHeaders),
    ) -> Result<Socket, tungstenite::Error> {
        let client = self.client_as(id);
        let nonce = signing::new_nonce();
        let mut signed = client
            .signed_headers(
                &Method::GET,
                "/worker/ws",
                b"",
                client::unix_now(),
                Some(&nonce),
            )
            .unwrap();
        tweak(&mut signed);
        let mut request = format!("ws://{}/worker/ws", self.addr)
            .into_client_request()
            .unwrap();
        for (name, value) in signed.pairs() {
            request.headers_mut().insert(name, value.parse().unwrap());
        }
        tokio_tungstenite::connect_async(request)
            .await
            .map(|(socket, _)| socket)
    }

    /// Connects `id` with its own `hello` and waits for `welcome`.
    pub async fn connect_with(&self, hello: Hello) -> FakeWorker {
        let id = hello.worker_id.clone();
        let mut socket = self
            .upgrade(&id, |_| {})
            .await
            .expect("the upgrade succeeds");
        socket
            .send(Message::Binary(
                ws::encode(&WorkerMessage::Hello(hello)).into(),
            ))
            .await
            .unwrap();
        let mut worker = FakeWorker {
            id,
            socket,
            welcome: placeholder_welcome(),
            seq: 0,
        };
        match worker.recv().await {
            CoordinatorMessage::Welcome(welcome) => worker.welcome = welcome,
            other => panic!("expected welcome, got {other:?}"),
        }
        worker
    }

    pub async fn connect_worker(&self, id: &str, paths: &[&str], slots: u32) -> FakeWorker {
        self.connect_with(hello(id, paths, slots)).await
    }
}

fn placeholder_welcome() -> Welcome {
    Welcome {
        session_id: protocol::SessionId(protocol::Ulid::NIL),
        protocol_version: protocol::PROTOCOL_VERSION,
        heartbeat_interval_ms: 0,
        lease_ms: 0,
        server_time_ms: 0,
        max_frame_bytes: 0,
        binaries: vec![],
        status: String::new(),
        resumed: vec![],
        cancel: vec![],
    }
}

/// How a session ended, as the worker saw it.
#[derive(Debug, PartialEq, Eq)]
pub enum Ended {
    Closed(u16),
    Dropped,
}

impl FakeWorker {
    pub async fn send(&mut self, message: WorkerMessage) {
        self.socket
            .send(Message::Binary(ws::encode(&message).into()))
            .await
            .unwrap();
    }

    pub async fn send_raw(&mut self, message: Message) {
        let _ = self.socket.send(message).await;
    }

    /// The next protocol message (heartbeat acks included), within 10 s.
    pub async fn recv(&mut self) -> CoordinatorMessage {
        loop {
            let next = tokio::time::timeout(Duration::from_secs(10), self.socket.next())
                .await
                .unwrap_or_else(|_| panic!("{}: no frame within 10 s", self.id));
            match next {
                Some(Ok(Message::Binary(bytes))) => {
                    return ws::decode_coordinator_message(&bytes).unwrap();
                }
                Some(Ok(Message::Close(frame))) => panic!("{}: closed: {frame:?}", self.id),
                Some(Ok(_)) => continue,
                other => panic!("{}: connection ended: {other:?}", self.id),
            }
        }
    }

    /// The next message that is not a heartbeat ack.
    pub async fn recv_skipping_acks(&mut self) -> CoordinatorMessage {
        loop {
            match self.recv().await {
                CoordinatorMessage::HeartbeatAck(_) => continue,
                other => return other,
            }
        }
    }

    pub async fn expect_assignment(&mut self) -> AssignJob {
        match self.recv_skipping_acks().await {
            CoordinatorMessage::AssignJob(assign) => assign,
            other => panic!("{}: expected assign_job, got {other:?}", self.id),
        }
    }

    /// Reads until the session closes; the close code, or `Dropped` without a close frame.
    pub async fn expect_end(&mut self) -> (Vec<CoordinatorMessage>, Ended) {
        let mut frames = Vec::new();
        loop {
            let next = tokio::time::timeout(Duration::from_secs(10), self.socket.next())
                .await
                .unwrap_or_else(|_| panic!("{}: the session did not end within 10 s", self.id));
            match next {
                Some(Ok(Message::Binary(bytes))) => {
                    frames.push(ws::decode_coordinator_message(&bytes).unwrap())
                }
                Some(Ok(Message::Close(Some(frame)))) => {
                    return (frames, Ended::Closed(u16::from(frame.code)));
                }
                Some(Ok(Message::Close(None))) | None | Some(Err(_)) => {
                    return (frames, Ended::Dropped);
                }
                Some(Ok(_)) => continue,
            }
        }
    }

    pub async fn heartbeat(&mut self, jobs: Vec<JobRef>) {
        self.seq += 1;
        let seq = self.seq;
        self.send(WorkerMessage::Heartbeat(Heartbeat {
            seq,
            jobs,
            paths: None,
            binaries: None,
        }))
        .await;
        match self.recv().await {
            CoordinatorMessage::HeartbeatAck(ack) => assert_eq!(ack.seq, seq),
            other => panic!("expected heartbeat_ack, got {other:?}"),
        }
    }

    pub async fn accept(&mut self, assign: &AssignJob) {
        self.send(WorkerMessage::JobAccepted(JobAccepted {
            job_id: assign.job_id,
            attempt: assign.attempt,
            pid: Some(4242),
            started_at_ms: protocol::timefmt::to_unix_ms(time::OffsetDateTime::now_utc()),
        }))
        .await;
    }

    pub async fn logs(&mut self, assign: &AssignJob, seq: u64, stream: OutputStream, data: &[u8]) {
        self.send(WorkerMessage::JobLogs(JobLogs {
            job_id: assign.job_id,
            attempt: assign.attempt,
            chunks: vec![OutputChunk {
                seq,
                stream,
                time_ms: protocol::timefmt::to_unix_ms(time::OffsetDateTime::now_utc()),
                data: ByteBuf::from(data.to_vec()),
            }],
            dropped_bytes: None,
        }))
        .await;
    }

    pub fn finished(
        job_id: JobId,
        attempt: u32,
        status: FinishedStatus,
        exit_code: Option<i32>,
        seq_end: u64,
    ) -> WorkerMessage {
        WorkerMessage::JobFinished(JobFinished {
            job_id,
            attempt,
            status,
            exit_code,
            signal: None,
            error: None,
            finished_at_ms: protocol::timefmt::to_unix_ms(time::OffsetDateTime::now_utc()),
            output_seq_end: seq_end,
        })
    }

    /// Sends `job_finished` and returns the `ack` result.
    pub async fn finish(
        &mut self,
        job_id: JobId,
        attempt: u32,
        status: FinishedStatus,
        exit_code: Option<i32>,
        seq_end: u64,
    ) -> AckResult {
        self.send(FakeWorker::finished(
            job_id, attempt, status, exit_code, seq_end,
        ))
        .await;
        match self.recv_skipping_acks().await {
            CoordinatorMessage::Ack(ack) => {
                assert_eq!((ack.job_id, ack.attempt), (job_id, attempt));
                ack.result
            }
            other => panic!("expected ack, got {other:?}"),
        }
    }

    pub async fn close(mut self) {
        let _ = self.socket.close(None).await;
    }
}

async fn status_of(app: &TestApp, job: JobId) -> protocol::rest::JobRecord {
    app.client.job_status(job).await.unwrap()
}

#[tokio::test]
async fn upgrades_are_authenticated_before_any_101() {
    let app = TestApp::spawn().await;
    let forged = app
        .upgrade("worker01", |signed| {
            signed.signature = signing::sign(&signing::HmacKey::generate(), "x")
        })
        .await;
    assert!(
        matches!(forged, Err(tungstenite::Error::Http(ref response)) if response.status() == 401),
        "{forged:?}"
    );
    let expired = app
        .upgrade("worker01", |signed| {
            let client = app.client_as("worker01");
            *signed = client
                .signed_headers(
                    &Method::GET,
                    "/worker/ws",
                    b"",
                    client::unix_now() - 400,
                    Some(&signing::new_nonce()),
                )
                .unwrap();
        })
        .await;
    assert!(
        matches!(expired, Err(tungstenite::Error::Http(ref response)) if response.status() == 401)
    );
    let mut request = format!("ws://{}/worker/ws", app.addr)
        .into_client_request()
        .unwrap();
    request.headers_mut().remove("x-dffmpeg-client-id");
    let missing = tokio_tungstenite::connect_async(request).await;
    assert!(
        matches!(missing, Err(tungstenite::Error::Http(ref response)) if response.status() == 401)
    );
    let as_client = app.upgrade("client01", |_| {}).await;
    assert!(
        matches!(as_client, Err(tungstenite::Error::Http(ref response)) if response.status() == 403)
    );
    let plain = app
        .client_as("worker01")
        .send_signed(Method::GET, "/worker/ws", "", Vec::<(&str, &str)>::new())
        .await
        .unwrap();
    assert_eq!(plain.status, 426);
    assert_eq!(
        plain.error_body().unwrap().code,
        ErrorCode::WebsocketRequired
    );
    assert!(
        app.client.workers(None).await.unwrap().is_empty(),
        "nothing was upgraded"
    );
    app.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_job_is_pushed_in_its_submit_commit_and_runs_to_completion() {
    let app = TestApp::spawn().await;
    let mut worker = app.connect_worker("worker01", &["Media"], 2).await;
    assert_eq!(worker.welcome.heartbeat_interval_ms, 5000);
    assert_eq!(worker.welcome.lease_ms, 22_500);
    assert_eq!(worker.welcome.status, "online");
    assert_eq!(worker.welcome.binaries, vec!["ffmpeg", "ffprobe"]);
    let workers = app.client.workers(None).await.unwrap();
    assert_eq!(workers.len(), 1);
    assert_eq!(
        (workers[0].status, workers[0].max_concurrent_jobs),
        (WorkerStatus::Online, 2)
    );
    assert_eq!(workers[0].protocol_version.as_deref(), Some("1.0"));
    let deep = app.client.health(true).await.unwrap();
    assert_eq!(
        deep.transports.unwrap()["websocket"].detail.as_deref(),
        Some("1 worker session")
    );

    let submitted = app.client.submit(&transcode()).await.unwrap().job;
    assert_eq!(
        submitted.status,
        JobStatus::Assigned,
        "placed in the submit's own commit"
    );
    assert_eq!(
        (submitted.worker_id.as_deref(), submitted.attempt),
        (Some("worker01"), 1)
    );
    let assign = worker.expect_assignment().await;
    assert_eq!((assign.job_id, assign.attempt), (submitted.job_id, 1));
    assert_eq!(assign.arguments, transcode().arguments);
    assert_eq!(assign.working_directory.as_deref(), Some("$Media"));
    assert_eq!(assign.heartbeat_interval_ms, 5000);
    worker.accept(&assign).await;
    worker
        .logs(
            &assign,
            0,
            OutputStream::Stderr,
            b"frame=1 time=00:00:00.04\r",
        )
        .await;
    worker
        .send(WorkerMessage::JobProgress(JobProgress {
            job_id: assign.job_id,
            attempt: 1,
            time_ms: 0,
            frame: Some(25),
            fps: Some(50.0),
            out_time_us: Some(1_000_000),
            speed: Some(2.0),
            bitrate_kbps: None,
            total_size: Some(1000),
            duration_us: Some(4_000_000),
        }))
        .await;
    worker
        .heartbeat(vec![JobRef {
            job_id: assign.job_id,
            attempt: 1,
        }])
        .await;
    let running = status_of(&app, assign.job_id).await;
    assert_eq!((running.status, running.runs), (JobStatus::Running, 1));
    let progress = running.progress.unwrap();
    assert_eq!(progress.percent, Some(25.0));
    assert_eq!(progress.eta_seconds, Some(1.5));
    assert!(running.worker_last_seen.is_some());
    worker
        .logs(&assign, 1, OutputStream::Stdout, b"done\n")
        .await;
    let ack = worker
        .finish(assign.job_id, 1, FinishedStatus::Completed, Some(0), 2)
        .await;
    assert_eq!(ack, AckResult::Accepted);
    let done = status_of(&app, assign.job_id).await;
    assert_eq!(
        (done.status, done.exit_code),
        (JobStatus::Completed, Some(0))
    );
    assert!(done.finished_at.is_some());
    let logs = app.client.logs(assign.job_id, None, None).await.unwrap();
    let contents: Vec<&str> = logs
        .logs
        .iter()
        .map(|entry| entry.content.as_str())
        .collect();
    assert_eq!(contents, vec!["frame=1 time=00:00:00.04", "done"]);
    // The upstream channel shows the statuses in order, the worker as sender of its own.
    let messages = app
        .client
        .poll(assign.job_id, None, 0)
        .await
        .unwrap()
        .messages;
    let statuses: Vec<(String, Option<String>)> = messages
        .iter()
        .filter_map(|m| match &m.payload {
            protocol::rest::MessagePayload::Status(s) => {
                Some((s.status.to_string(), m.sender_id.clone()))
            }
            _ => None,
        })
        .collect();
    assert_eq!(
        statuses,
        vec![
            ("pending".into(), None),
            ("assigned".into(), None),
            ("running".into(), Some("worker01".into())),
            ("completed".into(), Some("worker01".into())),
        ]
    );
    // An identical resend (its ack was lost) is accepted again; an old attempt is stale.
    assert_eq!(
        worker
            .finish(assign.job_id, 1, FinishedStatus::Completed, Some(0), 2)
            .await,
        AckResult::Accepted
    );
    assert_eq!(
        worker
            .finish(assign.job_id, 1, FinishedStatus::Failed, Some(1), 2)
            .await,
        AckResult::Stale
    );
    assert_eq!(
        status_of(&app, assign.job_id).await.status,
        JobStatus::Completed,
        "a stale report changes nothing"
    );
    app.shutdown().await.unwrap();
}

#[tokio::test]
async fn placement_follows_path_variables_and_slots() {
    let app = TestApp::spawn().await;
    let mut media = app.connect_worker("worker01", &["Media"], 1).await;
    let mut other = app.connect_worker("worker02", &["Other"], 1).await;
    let on_other = app
        .client
        .submit(&JobRequest {
            arguments: vec!["$Other/x".into()],
            paths: vec!["Other".into()],
            working_directory: None,
            ..transcode()
        })
        .await
        .unwrap()
        .job;
    assert_eq!(on_other.worker_id.as_deref(), Some("worker02"));
    assert_eq!(other.expect_assignment().await.job_id, on_other.job_id);
    let first = app.client.submit(&transcode()).await.unwrap().job;
    let second = app.client.submit(&transcode()).await.unwrap().job;
    assert_eq!(first.worker_id.as_deref(), Some("worker01"));
    assert_eq!(
        second.status,
        JobStatus::Pending,
        "one slot: the second waits"
    );
    assert_eq!(second.wait_reason.as_deref(), Some("all_workers_busy"));
    let nobody = app
        .client
        .submit(&JobRequest {
            paths: vec!["Media".into(), "Nowhere".into()],
            ..transcode()
        })
        .await
        .unwrap()
        .job;
    assert_eq!(nobody.wait_reason.as_deref(), Some("no_worker_with_paths"));
    assert_eq!(
        nobody.wait_detail.as_deref(),
        Some("no online worker has path variable(s): Nowhere")
    );
    let assign = media.expect_assignment().await;
    assert_eq!(assign.job_id, first.job_id);
    media.accept(&assign).await;
    assert_eq!(
        media
            .finish(assign.job_id, 1, FinishedStatus::Completed, Some(0), 0)
            .await,
        AckResult::Accepted
    );
    // The freed slot takes the next job at once.
    let next = media.expect_assignment().await;
    assert_eq!(next.job_id, second.job_id);
    app.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_rejected_job_goes_to_another_worker_and_the_rejecter_is_excluded() {
    let app = TestApp::spawn().await;
    let mut first = app.connect_worker("worker01", &["Media"], 1).await;
    let job = app.client.submit(&transcode()).await.unwrap().job;
    let assign = first.expect_assignment().await;
    let mut second = app.connect_worker("worker02", &["Media"], 1).await;
    first
        .send(WorkerMessage::JobRejected(JobRejected {
            job_id: assign.job_id,
            attempt: 1,
            code: "path_variable_unavailable".into(),
            message: "Media is not mounted".into(),
        }))
        .await;
    let again = second.expect_assignment().await;
    assert_eq!((again.job_id, again.attempt), (job.job_id, 2));
    let record = status_of(&app, job.job_id).await;
    assert_eq!(
        (record.status, record.worker_id.as_deref()),
        (JobStatus::Assigned, Some("worker02"))
    );
    app.shutdown().await.unwrap();
}

#[tokio::test]
async fn bad_frames_close_only_their_session() {
    let app =
        TestApp::spawn_with(|config| config.worker_session.max_frame_bytes = 512 * 1024).await;
    let mut healthy = app.connect_worker("worker02", &["Media"], 1).await;

    let mut garbage = app.connect_worker("worker01", &["Media"], 1).await;
    garbage
        .send_raw(Message::Binary(vec![0xc1, 0xff, 0x00].into()))
        .await;
    let (frames, ended) = garbage.expect_end().await;
    assert!(
        matches!(&frames[..], [CoordinatorMessage::Error(e)] if e.code == "malformed_message" && e.fatal),
        "{frames:?}"
    );
    assert_eq!(ended, Ended::Closed(1007));

    let mut unknown = app.connect_worker("worker01", &["Media"], 1).await;
    let bytes =
        rmp_serde::to_vec_named(&serde_json::json!({"type": "from_the_future", "x": 1})).unwrap();
    unknown.send_raw(Message::Binary(bytes.into())).await;
    match unknown.recv().await {
        CoordinatorMessage::Error(error) => assert_eq!(
            (error.code.as_str(), error.fatal),
            ("unknown_message", false)
        ),
        other => panic!("{other:?}"),
    }
    unknown.heartbeat(vec![]).await; // the session goes on

    unknown
        .send_raw(Message::Binary(vec![0u8; 600 * 1024].into()))
        .await;
    let (_, ended) = unknown.expect_end().await;
    assert!(
        matches!(ended, Ended::Closed(1009) | Ended::Dropped),
        "{ended:?}"
    );

    let mut text = app.connect_worker("worker01", &["Media"], 1).await;
    text.send_raw(Message::Text("hello".into())).await;
    assert_eq!(text.expect_end().await.1, Ended::Closed(1003));

    let mut twice = app.connect_worker("worker01", &["Media"], 1).await;
    twice
        .send(WorkerMessage::Hello(hello("worker01", &["Media"], 1)))
        .await;
    let (frames, ended) = twice.expect_end().await;
    assert!(
        matches!(&frames[..], [CoordinatorMessage::Error(e)] if e.code == "unexpected_message")
    );
    assert_eq!(ended, Ended::Closed(1008));

    healthy.heartbeat(vec![]).await;
    let job = app.client.submit(&transcode()).await.unwrap().job;
    assert_eq!(
        healthy.expect_assignment().await.job_id,
        job.job_id,
        "the other session kept serving"
    );
    app.shutdown().await.unwrap();
}

#[tokio::test]
async fn invalid_hellos_get_their_error_and_close_code() {
    let app =
        TestApp::spawn_with(|config| config.worker_session.hello_timeout = Duration::from_secs(1))
            .await;
    let cases: Vec<(Hello, &str, u16)> = vec![
        (
            Hello {
                worker_id: "worker02".into(),
                ..hello("worker01", &[], 1)
            },
            "identity_mismatch",
            1008,
        ),
        (
            Hello {
                max_concurrent_jobs: 0,
                ..hello("worker01", &[], 1)
            },
            "invalid_hello",
            4005,
        ),
        (
            Hello {
                status: "sleepy".into(),
                ..hello("worker01", &[], 1)
            },
            "invalid_hello",
            4005,
        ),
        (
            Hello {
                paths: vec!["bad name".into()],
                ..hello("worker01", &[], 1)
            },
            "invalid_hello",
            4005,
        ),
        (
            Hello {
                protocol_version: ws::ProtocolVersion { major: 2, minor: 0 },
                ..hello("worker01", &[], 1)
            },
            "protocol_version_unsupported",
            4002,
        ),
    ];
    for (hello, code, close) in cases {
        let mut socket = app.upgrade("worker01", |_| {}).await.unwrap();
        socket
            .send(Message::Binary(
                ws::encode(&WorkerMessage::Hello(hello)).into(),
            ))
            .await
            .unwrap();
        let mut worker = FakeWorker {
            id: "worker01".into(),
            socket,
            welcome: placeholder_welcome(),
            seq: 0,
        };
        let (frames, ended) = worker.expect_end().await;
        assert!(
            matches!(&frames[..], [CoordinatorMessage::Error(e)] if e.code == code),
            "{code}: {frames:?}"
        );
        assert_eq!(ended, Ended::Closed(close), "{code}");
    }
    let mut first = app.upgrade("worker01", |_| {}).await.unwrap();
    first
        .send(Message::Binary(
            ws::encode(&WorkerMessage::Drain(WorkerDrain { reason: None })).into(),
        ))
        .await
        .unwrap();
    let mut worker = FakeWorker {
        id: "worker01".into(),
        socket: first,
        welcome: placeholder_welcome(),
        seq: 0,
    };
    let (frames, ended) = worker.expect_end().await;
    assert!(matches!(&frames[..], [CoordinatorMessage::Error(e)] if e.code == "hello_required"));
    assert_eq!(ended, Ended::Closed(1008));
    let silent = app.upgrade("worker01", |_| {}).await.unwrap();
    let mut worker = FakeWorker {
        id: "worker01".into(),
        socket: silent,
        welcome: placeholder_welcome(),
        seq: 0,
    };
    assert_eq!(
        worker.expect_end().await.1,
        Ended::Closed(4001),
        "no hello within hello_timeout"
    );
    assert!(
        app.client.workers(None).await.unwrap().is_empty(),
        "never marked online"
    );
    app.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_new_session_replaces_the_old_and_held_jobs_resume_or_are_lost() {
    let app = TestApp::spawn().await;
    let mut worker = app.connect_worker("worker01", &["Media"], 2).await;
    let kept = app.client.submit(&transcode()).await.unwrap().job;
    let forgotten = app.client.submit(&transcode()).await.unwrap().job;
    let a = worker.expect_assignment().await;
    let b = worker.expect_assignment().await;
    worker.accept(&a).await;
    worker.accept(&b).await;
    worker.logs(&a, 0, OutputStream::Stderr, b"line\n").await;
    worker.heartbeat(vec![]).await;
    let held = vec![HeldJob {
        job_id: kept.job_id,
        attempt: 1,
        state: HeldState::Running,
    }];
    let mut second = app
        .connect_with(Hello {
            jobs: held,
            ..hello("worker01", &["Media"], 2)
        })
        .await;
    assert_eq!(
        worker.expect_end().await.1,
        Ended::Closed(4000),
        "the old session is replaced"
    );
    let resumed = &second.welcome.resumed;
    assert_eq!(resumed.len(), 1);
    assert_eq!(
        (
            resumed[0].job_id,
            resumed[0].attempt,
            resumed[0].next_output_seq
        ),
        (kept.job_id, 1, 1)
    );
    // Not listed at hello: a lost attempt, re-queued and placed again at once (here on the same worker, the only one).
    let again = second.expect_assignment().await;
    assert_eq!((again.job_id, again.attempt), (forgotten.job_id, 2));
    let record = status_of(&app, forgotten.job_id).await;
    assert_eq!(
        record.runs, 1,
        "the lost run counted, the new attempt has not started: {record:?}"
    );
    assert_eq!(
        status_of(&app, kept.job_id).await.status,
        JobStatus::Running
    );
    // A stale attempt in a heartbeat gets one cancel_job.
    second
        .send(WorkerMessage::Heartbeat(Heartbeat {
            seq: 1,
            jobs: vec![JobRef {
                job_id: forgotten.job_id,
                attempt: 1,
            }],
            paths: None,
            binaries: None,
        }))
        .await;
    let mut saw_cancel = false;
    for _ in 0..2 {
        match second.recv().await {
            CoordinatorMessage::CancelJob(cancel) => {
                assert_eq!(
                    (cancel.job_id, cancel.attempt, cancel.reason.as_str()),
                    (forgotten.job_id, 1, "stale_attempt")
                );
                saw_cancel = true;
            }
            CoordinatorMessage::HeartbeatAck(_) => {}
            other => panic!("{other:?}"),
        }
    }
    assert!(saw_cancel);
    app.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_lost_worker_s_job_is_requeued_after_the_lease_and_completes_elsewhere() {
    let app = TestApp::spawn().await;
    let mut first = app.connect_worker("worker01", &["Media"], 1).await;
    let job = app.client.submit(&transcode()).await.unwrap().job;
    let assign = first.expect_assignment().await;
    first.accept(&assign).await;
    first
        .heartbeat(vec![JobRef {
            job_id: job.job_id,
            attempt: 1,
        }])
        .await;
    first.close().await;
    super::eventually(10, "worker01 offline", || async {
        app.client
            .worker("worker01")
            .await
            .is_ok_and(|w| w.status == WorkerStatus::Offline)
    })
    .await;
    assert_eq!(
        status_of(&app, job.job_id).await.status,
        JobStatus::Running,
        "the job keeps its lease"
    );
    let now = time::OffsetDateTime::now_utc();
    let summary = app.janitor_sweep(now + time::Duration::seconds(10)).await;
    assert_eq!(summary["leases_expired"], 0);
    let summary = app.janitor_sweep(now + time::Duration::seconds(23)).await;
    assert_eq!(summary["leases_expired"], 1);
    let record = status_of(&app, job.job_id).await;
    assert_eq!(
        (record.status, record.reason.as_deref()),
        (JobStatus::Pending, Some("worker_lost"))
    );
    let mut second = app.connect_worker("worker02", &["Media"], 1).await;
    let again = second.expect_assignment().await;
    assert_eq!((again.job_id, again.attempt), (job.job_id, 2));
    second.accept(&again).await;
    assert_eq!(
        second
            .finish(job.job_id, 2, FinishedStatus::Completed, Some(0), 0)
            .await,
        AckResult::Accepted
    );
    let done = status_of(&app, job.job_id).await;
    assert_eq!(
        (done.status, done.attempt, done.runs),
        (JobStatus::Completed, 2, 2)
    );
    let events = app
        .client
        .events(
            job.job_id,
            &client::EventsQuery {
                follow: Some(false),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    let lines: Vec<_> = events.collect().await;
    let notices = lines
        .iter()
        .filter(|line| matches!(line, Ok(client::StreamItem::Line(protocol::rest::EventLine::Notice(n))) if n.code == "attempt_lost"))
        .count();
    assert_eq!(notices, 1, "the loss is a notice");
    app.shutdown().await.unwrap();
}

#[tokio::test]
async fn cancel_reaches_the_worker_and_its_report_finishes_the_job() {
    let app = TestApp::spawn().await;
    let mut worker = app.connect_worker("worker01", &["Media"], 1).await;
    let job = app.client.submit(&transcode()).await.unwrap().job;
    let assign = worker.expect_assignment().await;
    worker.accept(&assign).await;
    worker.heartbeat(vec![]).await;
    app.client.cancel(job.job_id).await.unwrap();
    assert_eq!(
        status_of(&app, job.job_id).await.status,
        JobStatus::Canceling
    );
    match worker.recv_skipping_acks().await {
        CoordinatorMessage::CancelJob(cancel) => {
            assert_eq!(
                (cancel.job_id, cancel.attempt, cancel.reason.as_str()),
                (job.job_id, 1, "requested")
            )
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(
        worker
            .finish(job.job_id, 1, FinishedStatus::Canceled, Some(143), 0)
            .await,
        AckResult::Accepted
    );
    let done = status_of(&app, job.job_id).await;
    assert_eq!(
        (done.status, done.exit_code),
        (JobStatus::Canceled, Some(143))
    );
    app.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_draining_worker_takes_nothing_new_and_assignment_timeouts_requeue() {
    let app = TestApp::spawn().await;
    let mut worker = app.connect_worker("worker01", &["Media"], 2).await;
    let job = app.client.submit(&transcode()).await.unwrap().job;
    let assign = worker.expect_assignment().await;
    // Never accepted: R4 requeues it and tells the worker.
    let now = time::OffsetDateTime::now_utc();
    let clean_jobs = protocol::rest::JanitorAction::CleanJobs;
    let summary = app
        .janitor_action(clean_jobs, now + time::Duration::seconds(11))
        .await;
    assert_eq!(summary["assignments_timed_out"], 1);
    match worker.recv_skipping_acks().await {
        CoordinatorMessage::CancelJob(cancel) => assert_eq!(cancel.reason, "assignment_timeout"),
        other => panic!("{other:?}"),
    }
    let record = status_of(&app, assign.job_id).await;
    assert_eq!(
        (record.status, record.reason.as_deref()),
        (JobStatus::Pending, Some("assignment_timeout"))
    );
    assert_eq!(
        record.wait_reason.as_deref(),
        Some("retry_delay"),
        "the only worker is excluded for it"
    );
    worker
        .send(WorkerMessage::Drain(WorkerDrain {
            reason: Some("SIGTERM".into()),
        }))
        .await;
    worker.heartbeat(vec![]).await;
    assert_eq!(
        app.client.worker("worker01").await.unwrap().status,
        WorkerStatus::Draining
    );
    let summary = app
        .janitor_action(clean_jobs, now + time::Duration::seconds(17))
        .await;
    assert_eq!(summary["exclusions_expired"], 1);
    let record = status_of(&app, job.job_id).await;
    assert_eq!(
        (record.status, record.wait_reason.as_deref()),
        (JobStatus::Pending, Some("all_workers_draining"))
    );
    app.shutdown().await.unwrap();
}

#[tokio::test]
async fn shutdown_sends_workers_a_shutdown_frame_and_closes_1001() {
    let app = TestApp::spawn().await;
    let mut worker = app.connect_worker("worker01", &["Media"], 1).await;
    let server = tokio::spawn(app.shutdown());
    let (frames, ended) = worker.expect_end().await;
    assert!(
        matches!(&frames[..], [CoordinatorMessage::Shutdown(s)] if s.reconnect_after_ms == 1000),
        "{frames:?}"
    );
    assert_eq!(ended, Ended::Closed(1001));
    let _ = CloseCode::Away;
    server.await.unwrap().unwrap();
}

#[tokio::test]
async fn a_silent_running_job_is_lost_and_a_stuck_cancel_times_out() {
    let app = TestApp::spawn().await;
    let mut worker = app.connect_worker("worker01", &["Media"], 2).await;
    let silent = app.client.submit(&transcode()).await.unwrap().job;
    let stuck = app.client.submit(&transcode()).await.unwrap().job;
    let a = worker.expect_assignment().await;
    let b = worker.expect_assignment().await;
    worker.accept(&a).await;
    worker.accept(&b).await;
    worker.heartbeat(vec![]).await;
    app.client.cancel(stuck.job_id).await.unwrap();
    match worker.recv_skipping_acks().await {
        CoordinatorMessage::CancelJob(cancel) => assert_eq!(cancel.job_id, stuck.job_id),
        other => panic!("{other:?}"),
    }
    let now = time::OffsetDateTime::now_utc();
    let clean_jobs = protocol::rest::JanitorAction::CleanJobs;
    // hb 5 s × 2.5: silent after 12.5 s.
    let summary = app
        .janitor_action(clean_jobs, now + time::Duration::seconds(12))
        .await;
    assert_eq!(summary["jobs_silent"], 0);
    let summary = app
        .janitor_action(clean_jobs, now + time::Duration::seconds(13))
        .await;
    assert_eq!(summary["jobs_silent"], 1);
    match worker.recv_skipping_acks().await {
        CoordinatorMessage::CancelJob(cancel) => {
            assert_eq!(
                (cancel.job_id, cancel.reason.as_str()),
                (silent.job_id, "job_silent")
            )
        }
        other => panic!("{other:?}"),
    }
    let record = status_of(&app, silent.job_id).await;
    assert_eq!(
        record.attempt, 2,
        "lost, requeued and placed again: {record:?}"
    );
    // The cancel the worker never confirmed: canceled after job_cancel_timeout, and the worker is asked again.
    let summary = app
        .janitor_action(clean_jobs, now + time::Duration::seconds(31))
        .await;
    assert_eq!(summary["cancels_timed_out"], 1);
    let record = status_of(&app, stuck.job_id).await;
    assert_eq!(
        (record.status, record.reason.as_deref()),
        (JobStatus::Canceled, Some("cancel_timeout"))
    );
    app.shutdown().await.unwrap();
}

#[tokio::test]
async fn the_last_allowed_refusal_fails_the_job() {
    let app = TestApp::spawn_with(|config| config.scheduler.max_rejections = 2).await;
    let mut first = app.connect_worker("worker01", &["Media"], 1).await;
    let mut second = app.connect_worker("worker02", &["Media"], 1).await;
    let job = app.client.submit(&transcode()).await.unwrap().job;
    let (mut holder, mut other) = if job.worker_id.as_deref() == Some("worker01") {
        (first, second)
    } else {
        (second, first)
    };
    for _ in 0..2 {
        let assign = holder.expect_assignment().await;
        holder
            .send(WorkerMessage::JobRejected(JobRejected {
                job_id: assign.job_id,
                attempt: assign.attempt,
                code: "binary_unavailable".into(),
                message: "ffmpeg vanished".into(),
            }))
            .await;
        holder.heartbeat(vec![]).await; // answered after the rejection was applied
        std::mem::swap(&mut holder, &mut other);
    }
    let record = app.client.job_status(job.job_id).await.unwrap();
    assert_eq!(
        (record.status, record.reason.as_deref()),
        (JobStatus::Failed, Some("rejected")),
        "{record:?}"
    );
    assert!(record.reason_detail.unwrap().contains("binary_unavailable"));
    first = holder;
    second = other;
    first.heartbeat(vec![]).await;
    second.heartbeat(vec![]).await;
    app.shutdown().await.unwrap();
}

#[tokio::test]
async fn the_session_cap_refuses_with_503_and_a_silent_session_is_reaped() {
    let app = TestApp::spawn_with(|config| config.worker_session.max_sessions = 1).await;
    let mut worker = app.connect_worker("worker01", &["Media"], 1).await;
    let refused = app.upgrade("worker02", |_| {}).await;
    match refused {
        Err(tungstenite::Error::Http(response)) => {
            assert_eq!(response.status(), 503);
            let body: protocol::ErrorBody =
                serde_json::from_slice(response.body().as_deref().unwrap_or_default()).unwrap();
            assert_eq!(body.code, ErrorCode::TooManySessions);
        }
        other => panic!("expected 503, got {other:?}"),
    }
    // R1: no frame for heartbeat_interval × missed_heartbeats (15 s): the session is closed 4003.
    let now = time::OffsetDateTime::now_utc();
    let clean_workers = protocol::rest::JanitorAction::CleanWorkers;
    let summary = app
        .janitor_action(clean_workers, now + time::Duration::seconds(14))
        .await;
    assert_eq!(summary["sessions_reaped"], 0);
    let summary = app
        .janitor_action(clean_workers, now + time::Duration::seconds(16))
        .await;
    assert_eq!(summary["sessions_reaped"], 1);
    assert_eq!(worker.expect_end().await.1, Ended::Closed(4003));
    assert_eq!(
        app.client.worker("worker01").await.unwrap().status,
        WorkerStatus::Offline
    );
    app.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_worker_that_stops_reading_is_closed_on_queue_overflow_and_keeps_its_jobs() {
    let app = TestApp::spawn_with(|config| {
        config.worker_session.send_queue_frames = 16;
        config.limits.max_argument_bytes = 1 << 20;
        config.limits.max_job_bytes = 2 << 20;
        config.limits.max_body_bytes = 2 << 20;
    })
    .await;
    let mut healthy = app.connect_worker("worker02", &["Other"], 1).await;
    // Reads nothing from here on: its socket buffers fill, then the 16 frames of its send queue.
    let stalled = app.connect_worker("worker01", &["Media"], 1000).await;
    let mut request = transcode();
    request.arguments.push("x".repeat(900 * 1024)); // each assign_job frame is about 900 KiB
    let mut submitted = Vec::new();
    for _ in 0..200 {
        submitted.push(app.client.submit(&request).await.unwrap().job.job_id);
        if app.client.worker("worker01").await.unwrap().status == WorkerStatus::Offline {
            break;
        }
    }
    assert!(
        submitted.len() < 200,
        "200 frames of 900 KiB never overflowed a 16-frame queue"
    );
    // Its jobs keep their lease (worker-protocol.md §7): still assigned to it, nothing requeued yet.
    for job in &submitted {
        let record = status_of(&app, *job).await;
        assert_eq!(
            (record.status, record.worker_id.as_deref(), record.attempt),
            (JobStatus::Assigned, Some("worker01"), 1),
            "{job}"
        );
    }
    // The socket was dropped mid-frame or closed with 4006: either way the session is over for the worker.
    drop(stalled);
    // Other sessions are untouched (`heartbeat` waits for its ack).
    healthy.heartbeat(vec![]).await;
    assert_eq!(
        app.client.worker("worker02").await.unwrap().status,
        WorkerStatus::Online
    );
    app.shutdown().await.unwrap();
}

#[tokio::test]
async fn output_past_the_cap_is_not_stored_and_one_notice_says_so() {
    let app =
        TestApp::spawn_with(|config| config.limits.max_output_bytes_per_job = 64 * 1024).await;
    let mut worker = app.connect_worker("worker01", &["Media"], 1).await;
    app.client.submit(&transcode()).await.unwrap();
    let assign = worker.expect_assignment().await;
    worker.accept(&assign).await;
    let line = |byte: u8, len: usize| {
        let mut data = vec![byte; len - 1];
        data.push(b'\n');
        data
    };
    // 40 KiB + 20 KiB fit under 64 KiB; the 10 KiB chunk would cross the cap (chunks are never cut), and nothing
    // after it is stored, not even one byte.
    worker
        .logs(&assign, 0, OutputStream::Stderr, &line(b'a', 40 * 1024))
        .await;
    worker
        .logs(&assign, 1, OutputStream::Stdout, &line(b'b', 20 * 1024))
        .await;
    worker
        .logs(&assign, 2, OutputStream::Stderr, &line(b'c', 10 * 1024))
        .await;
    worker.logs(&assign, 3, OutputStream::Stderr, b"\n").await;
    let ack = worker
        .finish(assign.job_id, 1, FinishedStatus::Completed, Some(0), 4)
        .await;
    assert_eq!(ack, AckResult::Accepted);
    let done = status_of(&app, assign.job_id).await;
    assert_eq!(
        (done.status, done.exit_code),
        (JobStatus::Completed, Some(0)),
        "the job's result is unaffected"
    );

    let query = client::EventsQuery {
        follow: Some(false),
        types: Some(vec![
            protocol::rest::EventType::Output,
            protocol::rest::EventType::Notice,
        ]),
        ..Default::default()
    };
    let mut kinds = Vec::new();
    let mut stream = app.client.events(assign.job_id, &query).await.unwrap();
    while let Some(item) = stream.next().await {
        match item.unwrap() {
            client::StreamItem::Line(protocol::rest::EventLine::Output(output)) => {
                assert!(output.id.is_some(), "stored output has an id");
                let text = output.text.unwrap_or_default();
                kinds.push(format!("output {}", text.len()));
            }
            client::StreamItem::Line(protocol::rest::EventLine::Notice(notice)) => {
                kinds.push(format!("{}: {}", notice.code, notice.message));
            }
            _ => {}
        }
    }
    assert_eq!(
        kinds,
        vec![
            "output 40960".to_owned(),
            "output 20480".to_owned(),
            "output_truncated: output truncated at 65536 bytes (limits.max_output_bytes_per_job); later output was not stored".to_owned(),
        ],
        "two chunks, then one notice, and no output_gap: the later chunks arrived"
    );

    let logs = app.client.logs(assign.job_id, None, None).await.unwrap();
    let contents: Vec<String> = logs
        .logs
        .iter()
        .map(|entry| {
            if entry.content.starts_with("[dffmpeg]") {
                entry.content.clone()
            } else {
                format!("{} bytes", entry.content.len())
            }
        })
        .collect();
    assert_eq!(
        contents,
        vec![
            "40959 bytes",
            "20479 bytes",
            "[dffmpeg] output truncated at 65536 bytes"
        ]
    );
    app.shutdown().await.unwrap();
}

//! The session: signed upgrade, hello, heartbeats, Ping, refusals and backoff, close codes, the worker-side lease,
//! SIGHUP re-checks.

use std::time::Duration;

use dffmpeg_worker::{RunError, WorkerSignal};
use protocol::ws::{CoordinatorMessage, ErrorFrame, HeldState, WorkerMessage, close};

use super::{Ended, FakeCoordinator, TestWorker, WORKER_ID, long_ffmpeg, new_job_id};
use crate::{process_gone, wait_gone};

#[tokio::test]
async fn hello_welcome_heartbeats_and_pong() {
    let mut fake = FakeCoordinator::start().await;
    let worker = TestWorker::start(&fake, |config| {
        config.capabilities = vec!["gpu".into()];
        config.max_concurrent_jobs = 3;
    })
    .await;
    let mut session = fake.next_session("first connection").await;
    let hello = session.hello().await;
    assert_eq!(hello.worker_id, WORKER_ID);
    assert_eq!(hello.version, protocol::VERSION);
    assert_eq!(hello.protocol_version, protocol::PROTOCOL_VERSION);
    assert_eq!(hello.binaries, ["cat", "ffmpeg", "ffprobe"]);
    let versions = hello
        .binary_versions
        .clone()
        .expect("binary versions are probed");
    assert!(
        versions["ffmpeg"].starts_with("ffmpeg version"),
        "{versions:?}"
    );
    assert!(versions["ffprobe"].starts_with("ffprobe version"));
    assert_eq!(hello.paths, ["Media"]);
    assert_eq!(hello.capabilities, ["gpu"]);
    assert_eq!(hello.max_concurrent_jobs, 3);
    assert_eq!(hello.status, "online");
    assert!(hello.jobs.is_empty());
    assert_eq!(hello.validate(), Ok(()));

    session.welcome(200, 1000, vec![], vec![]).await;
    for seq in 1..=2 {
        match session.recv("heartbeat").await {
            WorkerMessage::Heartbeat(heartbeat) => {
                assert_eq!(heartbeat.seq, seq);
                assert!(heartbeat.jobs.is_empty());
                assert_eq!(heartbeat.paths, None, "paths only when they changed");
                assert_eq!(heartbeat.binaries, None);
            }
            other => panic!("expected heartbeat {seq}, got {other:?}"),
        }
    }
    session.ping(b"are you there").await;
    assert_eq!(session.expect_pong().await, b"are you there");
    assert!(!worker.has_exited());
}

#[tokio::test]
async fn upgrades_are_signed_without_the_path_base() {
    let mut fake = FakeCoordinator::start_with_base("/dffmpeg").await;
    let _worker = TestWorker::start(&fake, |config| {
        config.coordinator.path_base = "/dffmpeg".into();
    })
    .await;
    // The fake accepts only `/dffmpeg/worker/ws` whose signature covers `/worker/ws`.
    let mut session = fake.next_session("connection through the path base").await;
    assert_eq!(session.hello().await.worker_id, WORKER_ID);
}

#[tokio::test]
async fn a_refused_upgrade_is_retried_with_backoff() {
    let mut fake = FakeCoordinator::start().await;
    fake.refuse_next(2);
    let worker = TestWorker::start(&fake, |_| {}).await;
    let mut session = fake.next_session("connection after two refusals").await;
    assert_eq!(fake.attempts(), 3, "two refused attempts, then this one");
    session.hello().await;
    assert!(!worker.has_exited(), "a refusal never ends the worker");
}

#[tokio::test]
async fn heartbeat_timeout_close_reconnects_at_once_and_others_with_backoff() {
    let mut fake = FakeCoordinator::start().await;
    let worker = TestWorker::start(&fake, |_| {}).await;
    for code in [
        close::HEARTBEAT_TIMEOUT,
        close::GOING_AWAY,
        close::IDENTITY_REVOKED,
        1011,
    ] {
        let (mut session, _) = fake.connect(1000).await;
        session.close(code).await;
        let mut next = fake
            .next_session(&format!("reconnect after close {code}"))
            .await;
        assert_eq!(next.hello().await.worker_id, WORKER_ID);
        next.close(close::GOING_AWAY).await;
        drop(session);
    }
    assert!(!worker.has_exited());
}

#[tokio::test]
async fn close_4002_exits_with_code_3() {
    let mut fake = FakeCoordinator::start().await;
    let worker = TestWorker::start(&fake, |_| {}).await;
    let mut session = fake.next_session("connection").await;
    session.hello().await;
    let message =
        "worker speaks protocol 1.0; this coordinator speaks 2.0 to 2.1; upgrade dffmpeg-worker";
    session
        .send(CoordinatorMessage::Error(ErrorFrame {
            code: "protocol_version_unsupported".into(),
            message: message.into(),
            job_id: None,
            attempt: None,
            fatal: true,
        }))
        .await;
    session.close(close::VERSION_UNSUPPORTED).await;
    let error = worker.exit("close 4002").await.unwrap_err();
    assert_eq!(
        error,
        RunError::VersionUnsupported {
            message: message.into()
        }
    );
    assert_eq!(error.exit_code(), 3);
}

#[tokio::test]
async fn close_4005_exits_with_code_1() {
    let mut fake = FakeCoordinator::start().await;
    let worker = TestWorker::start(&fake, |_| {}).await;
    let mut session = fake.next_session("connection").await;
    session.hello().await;
    session.close(close::INVALID_HELLO).await;
    let error = worker.exit("close 4005").await.unwrap_err();
    assert!(matches!(error, RunError::InvalidHello { .. }), "{error:?}");
    assert_eq!(error.exit_code(), 1);
}

#[tokio::test]
async fn close_4000_kills_the_jobs_and_exits_1() {
    let mut fake = FakeCoordinator::start().await;
    let worker = TestWorker::start(&fake, |_| {}).await;
    let (mut session, _) = fake.connect(500).await;
    let job_id = new_job_id();
    let accepted = session.start_job(job_id, 1, long_ffmpeg(60)).await;
    let pid = accepted.pid.expect("a pid") as i32;
    session.close(close::REPLACED).await;
    let error = worker.exit("close 4000").await.unwrap_err();
    assert_eq!(
        error.to_string(),
        "another session of worker01 replaced this one; is a second dffmpeg-worker running with the same client_id?"
    );
    assert_eq!(error.exit_code(), 1);
    wait_gone(pid, Duration::from_secs(10), "the job of a replaced worker").await;
}

#[tokio::test]
async fn the_worker_side_lease_gives_jobs_up_when_the_coordinator_is_silent() {
    let mut fake = FakeCoordinator::start().await;
    let worker = TestWorker::start(&fake, |_| {}).await;
    let mut session = fake.next_session("connection").await;
    session.hello().await;
    // heartbeat 300 ms, lease 1200 ms: the connection is dropped after 900 ms of silence, the jobs go after 900 ms.
    session.welcome(300, 1200, vec![], vec![]).await;
    let job_id = new_job_id();
    let accepted = session.start_job(job_id, 1, long_ffmpeg(60)).await;
    let pid = accepted.pid.expect("a pid") as i32;
    // Silence: no heartbeat_ack any more, and later connections are refused, so there is no session.
    fake.refuse_next(usize::MAX);
    session.auto_ack = false;
    let (_, ended) = session.until_end("the silent session").await;
    assert_ne!(ended, Ended::Closed(Some(close::NORMAL)));
    wait_gone(pid, Duration::from_secs(10), "a job given up by the lease").await;
    assert!(process_gone(pid));
    // Once the coordinator answers again, the worker holds nothing.
    fake.refuse_next(0);
    let mut next = fake.next_session("reconnection after the lease").await;
    let hello = next.hello().await;
    assert!(hello.jobs.is_empty(), "{:?}", hello.jobs);
    assert!(!worker.has_exited());
}

#[tokio::test]
async fn a_shutdown_frame_keeps_the_jobs_and_they_resume() {
    let mut fake = FakeCoordinator::start().await;
    let _worker = TestWorker::start(&fake, |_| {}).await;
    let (mut session, _) = fake.connect(500).await;
    let job_id = new_job_id();
    session.start_job(job_id, 4, long_ffmpeg(60)).await;
    session
        .send(CoordinatorMessage::Shutdown(protocol::ws::Shutdown {
            reason: "restart".into(),
            reconnect_after_ms: 100,
        }))
        .await;
    session.close(close::GOING_AWAY).await;
    let mut next = fake.next_session("reconnection after shutdown").await;
    let hello = next.hello().await;
    assert_eq!(hello.jobs.len(), 1);
    assert_eq!(
        (
            hello.jobs[0].job_id,
            hello.jobs[0].attempt,
            hello.jobs[0].state
        ),
        (job_id, 4, HeldState::Running)
    );
}

#[tokio::test]
async fn sighup_rechecks_paths_and_the_next_heartbeat_reports_them() {
    let mut fake = FakeCoordinator::start().await;
    let worker = TestWorker::start(&fake, |_| {}).await;
    let (mut session, hello) = fake.connect(200).await;
    assert_eq!(hello.paths, ["Media"]);
    std::fs::remove_dir(&worker.media).unwrap();
    worker.signal(WorkerSignal::Hangup).await;
    let (heartbeat, _) = session
        .until(
            "a heartbeat with the changed paths",
            |m| matches!(m, WorkerMessage::Heartbeat(h) if h.paths.is_some()),
        )
        .await;
    let WorkerMessage::Heartbeat(heartbeat) = heartbeat else {
        unreachable!()
    };
    assert_eq!(heartbeat.paths, Some(vec![]));
    assert_eq!(heartbeat.binaries, None);
}

#[tokio::test]
async fn https_connects_with_tls() {
    use tokio::io::AsyncReadExt;

    // A plain TCP listener standing in for an https coordinator: the first bytes must be a TLS ClientHello.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let fake = FakeCoordinator::start().await;
    let worker = TestWorker::start(&fake, |config| {
        config.coordinator.scheme = dffmpeg_worker::config::Scheme::Https;
        config.coordinator.port = port;
    })
    .await;
    let (mut stream, _) = tokio::time::timeout(super::WAIT, listener.accept())
        .await
        .expect("the worker connects")
        .unwrap();
    let mut head = [0u8; 3];
    tokio::time::timeout(super::WAIT, stream.read_exact(&mut head))
        .await
        .expect("the worker sends a ClientHello")
        .unwrap();
    assert_eq!(head[0], 0x16, "a TLS handshake record");
    assert_eq!(head[1], 0x03);
    drop(stream);
    // The failed handshake is retried like any failed connection.
    tokio::time::timeout(super::WAIT, listener.accept())
        .await
        .expect("the worker retries")
        .unwrap();
    assert!(!worker.has_exited());
}

//! Signals (cli.md §3.4): SIGTERM drains and exits 0 after the reports are acknowledged; a second signal gives the
//! running jobs back with `job_abandoned`; without draining, SIGTERM does that at once.

use std::time::Duration;

use dffmpeg_worker::WorkerSignal;
use protocol::ws::{
    Ack, AckResult, CoordinatorMessage, FinishedStatus, WorkerMessage, close, reject_code,
};

use super::{Ended, FakeCoordinator, TestWorker, assign, long_ffmpeg, new_job_id, summary};
use crate::wait_gone;

#[tokio::test]
async fn sigterm_drains_then_closes_1000_and_returns_ok() {
    let mut fake = FakeCoordinator::start().await;
    let worker = TestWorker::start(&fake, |_| {}).await;
    let (mut session, _) = fake.connect(300).await;
    let job_id = new_job_id();
    // About two seconds of realtime work.
    session.start_job(job_id, 1, long_ffmpeg(2)).await;
    worker.signal(WorkerSignal::Terminate).await;
    let (drain, _) = session
        .until("drain", |m| matches!(m, WorkerMessage::Drain(_)))
        .await;
    let WorkerMessage::Drain(drain) = drain else {
        unreachable!()
    };
    assert_eq!(drain.reason.as_deref(), Some("SIGTERM"));
    let late = new_job_id();
    session
        .send(CoordinatorMessage::AssignJob(assign(
            late,
            1,
            "ffmpeg",
            &["-version"],
            &[],
        )))
        .await;
    let (rejected, _) = session
        .until("job_rejected draining", |m| {
            matches!(m, WorkerMessage::JobRejected(_))
        })
        .await;
    let WorkerMessage::JobRejected(rejected) = rejected else {
        unreachable!()
    };
    assert_eq!(
        (rejected.job_id, rejected.code.as_str()),
        (late, reject_code::DRAINING)
    );
    let (finished, _) = session
        .until("job_finished of the running job", |m| {
            matches!(m, WorkerMessage::JobFinished(_))
        })
        .await;
    let WorkerMessage::JobFinished(finished) = finished else {
        unreachable!()
    };
    assert_eq!(
        finished.status,
        FinishedStatus::Completed,
        "the running job finishes normally"
    );
    assert!(!worker.has_exited(), "the worker waits for the ack");
    session
        .send(CoordinatorMessage::Ack(Ack {
            job_id,
            attempt: 1,
            result: AckResult::Accepted,
        }))
        .await;
    let (frames, ended) = session.until_end("the drained session").await;
    assert_eq!(
        ended,
        Ended::Closed(Some(close::NORMAL)),
        "after {}",
        summary(&frames)
    );
    assert_eq!(worker.exit("drained worker").await, Ok(()));
}

#[tokio::test]
async fn a_second_signal_gives_the_jobs_back() {
    let mut fake = FakeCoordinator::start().await;
    let worker = TestWorker::start(&fake, |_| {}).await;
    let (mut session, _) = fake.connect(300).await;
    let job_id = new_job_id();
    let accepted = session.start_job(job_id, 1, long_ffmpeg(60)).await;
    worker.signal(WorkerSignal::Interrupt).await;
    session
        .until(
            "drain",
            |m| matches!(m, WorkerMessage::Drain(d) if d.reason.as_deref() == Some("SIGINT")),
        )
        .await;
    worker.signal(WorkerSignal::Terminate).await;
    let (abandoned, skipped) = session
        .until("job_abandoned", |m| {
            matches!(m, WorkerMessage::JobAbandoned(_))
        })
        .await;
    let WorkerMessage::JobAbandoned(abandoned) = abandoned else {
        unreachable!()
    };
    assert_eq!(
        (
            abandoned.job_id,
            abandoned.attempt,
            abandoned.reason.as_str()
        ),
        (job_id, 1, "worker_shutdown")
    );
    assert!(
        !skipped
            .iter()
            .any(|m| matches!(m, WorkerMessage::JobFinished(_))),
        "an abandoned job is not reported finished"
    );
    let (_, ended) = session.until_end("the stopped session").await;
    assert_eq!(ended, Ended::Closed(Some(close::NORMAL)));
    assert_eq!(worker.exit("stopped worker").await, Ok(()));
    wait_gone(
        accepted.pid.unwrap() as i32,
        Duration::from_secs(10),
        "an abandoned job",
    )
    .await;
}

#[tokio::test]
async fn sigterm_without_draining_stops_at_once() {
    let mut fake = FakeCoordinator::start().await;
    let worker = TestWorker::start(&fake, |config| config.enable_job_draining = false).await;
    let (mut session, _) = fake.connect(300).await;
    let job_id = new_job_id();
    session.start_job(job_id, 1, long_ffmpeg(60)).await;
    worker.signal(WorkerSignal::Terminate).await;
    session
        .until(
            "job_abandoned",
            |m| matches!(m, WorkerMessage::JobAbandoned(a) if a.job_id == job_id),
        )
        .await;
    let (_, ended) = session.until_end("the stopped session").await;
    assert_eq!(ended, Ended::Closed(Some(close::NORMAL)));
    assert_eq!(worker.exit("stopped worker").await, Ok(()));
}

#[tokio::test]
async fn an_idle_worker_drains_at_once_and_a_drain_frame_acts_as_sigterm() {
    let mut fake = FakeCoordinator::start().await;
    let worker = TestWorker::start(&fake, |_| {}).await;
    let (mut session, _) = fake.connect(300).await;
    session
        .send(CoordinatorMessage::Drain(protocol::ws::DrainRequest {
            reason: "dffmpeg-admin worker drain".into(),
        }))
        .await;
    let (_, ended) = session.until_end("the drained session").await;
    assert_eq!(ended, Ended::Closed(Some(close::NORMAL)));
    assert_eq!(worker.exit("drained worker").await, Ok(()));
}

#[tokio::test]
async fn a_worker_draining_while_disconnected_says_so_in_hello() {
    let mut fake = FakeCoordinator::start().await;
    let worker = TestWorker::start(&fake, |_| {}).await;
    let (mut session, _) = fake.connect(300).await;
    let job_id = new_job_id();
    session.start_job(job_id, 1, long_ffmpeg(60)).await;
    fake.refuse_next(1);
    session.close(1011).await;
    worker.signal(WorkerSignal::Terminate).await;
    let mut next = fake.next_session("reconnection while draining").await;
    let hello = next.hello().await;
    assert_eq!(hello.status, "draining");
    assert_eq!(hello.jobs.len(), 1);
    next.welcome(300, 1500, vec![], vec![]).await;
    worker.signal(WorkerSignal::Terminate).await;
    next.until("job_abandoned", |m| {
        matches!(m, WorkerMessage::JobAbandoned(_))
    })
    .await;
    assert_eq!(worker.exit("stopped worker").await, Ok(()));
}

#[tokio::test]
async fn the_drain_timeout_gives_the_remaining_jobs_back() {
    let mut fake = FakeCoordinator::start().await;
    let worker = TestWorker::start(&fake, |config| {
        config.drain_timeout_seconds = Some(Duration::from_millis(300));
    })
    .await;
    let (mut session, _) = fake.connect(300).await;
    let job_id = new_job_id();
    session.start_job(job_id, 1, long_ffmpeg(60)).await;
    worker.signal(WorkerSignal::Terminate).await;
    let (abandoned, skipped) = session
        .until("job_abandoned at the drain timeout", |m| {
            matches!(m, WorkerMessage::JobAbandoned(_))
        })
        .await;
    assert!(
        skipped.iter().any(|m| matches!(m, WorkerMessage::Drain(_))),
        "drain came first: {}",
        summary(&skipped)
    );
    let WorkerMessage::JobAbandoned(abandoned) = abandoned else {
        unreachable!()
    };
    assert_eq!(abandoned.reason, "worker_shutdown");
    let (_, ended) = session.until_end("the stopped session").await;
    assert_eq!(ended, Ended::Closed(Some(close::NORMAL)));
    assert_eq!(worker.exit("worker after the drain timeout").await, Ok(()));
}

//! A draining worker (SIGTERM) finishes its job, takes no new one, and exits 0.

use nix::sys::signal::Signal;
use protocol::rest::{JobStatus, WorkerStatus};

use super::{FAST, Farm, make_clip, slow_job, transcode};

#[tokio::test]
async fn sigterm_drains_the_worker() {
    let farm = Farm::start(FAST).await;
    make_clip(&farm.media.join("long.mp4"), 5).await;
    let mut worker = farm.worker("worker01", &[("Media", &farm.media)], 1).await;
    let running = farm.submit(&slow_job("long.mp4", "drain.mp4")).await;
    farm.wait_job(running, 30, "running", |job| {
        job.status == JobStatus::Running
    })
    .await;
    worker.signal(Signal::SIGTERM);
    super::eventually(10, "worker01 draining", || async {
        farm.api
            .worker("worker01")
            .await
            .is_ok_and(|w| w.status == WorkerStatus::Draining)
    })
    .await;
    let waiting = farm.submit(&transcode("after.mp4")).await;
    let done = farm.wait_terminal(running, 60).await;
    assert_eq!(
        (done.status, done.exit_code),
        (JobStatus::Completed, Some(0))
    );
    let status = worker.wait_exit(30).await;
    assert_eq!(status.code(), Some(0), "drained worker exits 0");
    let record = farm.api.job_status(waiting).await.unwrap();
    assert_eq!(
        record.status,
        JobStatus::Pending,
        "the draining worker took no new job"
    );
    assert_eq!(record.attempt, 0);
}

//! A worker killed with `-9` mid-job: its ffmpeg dies with it (parent-death signal), the job is requeued when
//! the lease ends, and completes on the other worker as attempt 2.

use nix::sys::signal::Signal;
use protocol::rest::JobStatus;

use super::{FAST, Farm, eventually, make_clip, processes_with, slow_job};

#[tokio::test]
async fn a_killed_worker_s_job_completes_elsewhere_as_attempt_2() {
    let farm = Farm::start(FAST).await;
    make_clip(&farm.media.join("long.mp4"), 6).await;
    let mut first = farm.worker("worker01", &[("Media", &farm.media)], 1).await;
    let output = format!("killed-{}.mp4", std::process::id());
    let id = farm.submit(&slow_job("long.mp4", &output)).await;
    let output = farm.media.join(&output).display().to_string();
    farm.wait_job(id, 30, "running on worker01", |job| {
        job.status == JobStatus::Running
    })
    .await;
    eventually(10, "the job's ffmpeg runs", || async {
        !processes_with(&output).is_empty()
    })
    .await;
    let orphans = processes_with(&output);
    let _second = farm.worker("worker02", &[("Media", &farm.media)], 1).await;
    first.kill9().await;
    eventually(10, "worker01's ffmpeg dies with it", || async {
        orphans.iter().all(|pid| {
            nix::sys::signal::kill(nix::unistd::Pid::from_raw(*pid), None::<Signal>).is_err()
        })
    })
    .await;
    let done = farm.wait_terminal(id, 60).await;
    assert_eq!(
        (done.status, done.attempt, done.runs),
        (JobStatus::Completed, 2, 2),
        "{done:?}"
    );
    assert_eq!(done.worker_id.as_deref(), Some("worker02"));
    let history = super::transcode::status_history(&farm, id).await;
    assert!(
        history.contains(&(JobStatus::Pending, 1)),
        "requeued after attempt 1: {history:?}"
    );
}

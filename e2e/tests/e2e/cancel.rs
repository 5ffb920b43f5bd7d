//! Cancel of a running job: the worker's ffmpeg goes and the job is `canceled` within a second.

use protocol::rest::JobStatus;

use super::{FAST, Farm, eventually, make_clip, processes_with, slow_job};

#[tokio::test]
async fn canceling_a_running_job_stops_its_ffmpeg_at_once() {
    let farm = Farm::start(FAST).await;
    make_clip(&farm.media.join("long.mp4"), 20).await;
    let _worker = farm.worker("worker01", &[("Media", &farm.media)], 1).await;
    let output = format!("cancel-{}.mp4", std::process::id());
    let id = farm.submit(&slow_job("long.mp4", &output)).await;
    let output = farm.media.join(&output).display().to_string();
    farm.wait_job(id, 30, "running", |job| job.status == JobStatus::Running)
        .await;
    eventually(10, "the job's ffmpeg runs", || async {
        !processes_with(&output).is_empty()
    })
    .await;
    let started = tokio::time::Instant::now();
    farm.api.cancel(id).await.unwrap();
    let done = farm
        .wait_job(id, 5, "canceled", |job| job.status == JobStatus::Canceled)
        .await;
    let took = started.elapsed();
    assert!(
        processes_with(&output).is_empty(),
        "the ffmpeg process is gone"
    );
    assert_eq!(done.reason.as_deref(), Some("canceled_by_requester"));
    // Figures go to the closing notes and BENCHMARKS.md, never into an assertion.
    println!("cancel to canceled (process group gone): {took:?}");
}

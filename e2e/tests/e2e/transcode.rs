//! The real coordinator, a real worker and real ffmpeg transcode a clip submitted through the REST API.

use client::{EventsQuery, StreamItem};
use futures_util::StreamExt;
use protocol::rest::{EventLine, JobStatus};

use super::{FAST, Farm, make_clip, run_ok, slow_job, transcode};

/// The statuses of a job's stored status events, in order.
pub(crate) async fn status_history(farm: &Farm, id: protocol::JobId) -> Vec<(JobStatus, u32)> {
    let query = EventsQuery {
        follow: Some(false),
        ..Default::default()
    };
    let lines: Vec<_> = farm.api.events(id, &query).await.unwrap().collect().await;
    lines
        .into_iter()
        .filter_map(|line| match line {
            Ok(StreamItem::Line(EventLine::Status(status))) => {
                Some((status.status, status.attempt))
            }
            _ => None,
        })
        .collect()
}

#[tokio::test]
async fn a_clip_is_transcoded_end_to_end() {
    let farm = Farm::start(FAST).await;
    let _worker = farm.worker("worker01", &[("Media", &farm.media)], 2).await;
    let id = farm.submit(&transcode("out.mp4")).await;
    let done = farm.wait_terminal(id, 60).await;
    assert_eq!(
        (done.status, done.exit_code, done.attempt, done.runs),
        (JobStatus::Completed, Some(0), 1, 1),
        "{done:?}"
    );
    let out = farm.media.join("out.mp4");
    assert!(out.is_file(), "the output exists");
    run_ok(
        "ffprobe",
        &["-v", "error", "-show_format", out.to_str().unwrap()],
    )
    .await;
    let history = status_history(&farm, id).await;
    assert_eq!(
        history,
        vec![
            (JobStatus::Pending, 0),
            (JobStatus::Assigned, 1),
            (JobStatus::Running, 1),
            (JobStatus::Completed, 1)
        ]
    );
    let logs = farm.api.logs(id, None, None).await.unwrap();
    assert!(
        logs.logs
            .iter()
            .any(|entry| entry.content.contains("Input #0")),
        "ffmpeg's stderr is readable: {:?}",
        logs.logs
    );
}

#[tokio::test]
async fn a_real_time_job_shows_moving_progress_with_a_percent() {
    let farm = Farm::start(FAST).await;
    make_clip(&farm.media.join("long.mp4"), 6).await;
    let _worker = farm.worker("worker01", &[("Media", &farm.media)], 1).await;
    let id = farm.submit(&slow_job("long.mp4", "slow.mp4")).await;
    let first = farm
        .wait_job(id, 30, "running with a percent", |job| {
            job.status == JobStatus::Running
                && job.progress.as_ref().and_then(|p| p.percent).is_some()
        })
        .await;
    let first_percent = first.progress.as_ref().unwrap().percent.unwrap();
    assert_eq!(first.progress.as_ref().unwrap().duration_seconds, Some(6.0));
    let later = farm
        .wait_job(id, 30, "the percent moving", |job| {
            job.progress
                .as_ref()
                .and_then(|p| p.percent)
                .is_some_and(|percent| percent > first_percent)
        })
        .await;
    let progress = later.progress.unwrap();
    assert!(progress.out_time_seconds.unwrap() > 0.0);
    assert!(progress.percent.unwrap() <= 100.0);
    let done = farm.wait_terminal(id, 60).await;
    assert_eq!(
        (done.status, done.exit_code),
        (JobStatus::Completed, Some(0))
    );
}

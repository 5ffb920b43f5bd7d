//! Janitor rules driven by `janitor_sweep(now)` (lifecycle.md §4), never by sleeping.

use protocol::rest::{JobRequest, JobStatus};
use time::OffsetDateTime;

use super::{TestApp, transcode};

#[tokio::test]
async fn a_job_no_worker_can_take_fails_after_the_pending_timeout() {
    let app = TestApp::spawn().await;
    let job = app.client.submit(&transcode()).await.unwrap().job;
    assert_eq!(job.wait_reason.as_deref(), Some("no_worker_online"));
    let now = OffsetDateTime::now_utc();
    let summary = app.janitor_sweep(now + time::Duration::seconds(29)).await;
    assert_eq!(summary["jobs_unplaceable"], 0);
    assert_eq!(
        app.client.job_status(job.job_id).await.unwrap().status,
        JobStatus::Pending
    );
    let summary = app.janitor_sweep(now + time::Duration::seconds(31)).await;
    assert_eq!(summary["jobs_unplaceable"], 1);
    let failed = app.client.job_status(job.job_id).await.unwrap();
    assert_eq!(failed.status, JobStatus::Failed);
    assert_eq!(failed.reason.as_deref(), Some("no_fitting_worker"));
    assert_eq!(
        failed.reason_detail.as_deref(),
        Some("no worker is connected")
    );
    assert_eq!(failed.exit_code, None);
    for counter in [
        "sessions_reaped",
        "leases_expired",
        "jobs_pruned",
        "replay_entries_dropped",
    ] {
        assert!(summary.contains_key(counter), "run_all reports {counter}");
    }
    app.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_monitored_job_whose_client_stops_heartbeating_is_canceled() {
    let app = TestApp::spawn().await;
    let watched = app
        .client
        .submit(&JobRequest {
            monitor: true,
            ..transcode()
        })
        .await
        .unwrap()
        .job;
    let now = OffsetDateTime::now_utc();
    let summary = app.janitor_sweep(now + time::Duration::seconds(12)).await;
    assert_eq!(
        summary["clients_gone"], 0,
        "hb 5 s × 2.5 = 12.5 s not reached"
    );
    let summary = app.janitor_sweep(now + time::Duration::seconds(14)).await;
    assert_eq!(summary["clients_gone"], 1);
    let record = app.client.job_status(watched.job_id).await.unwrap();
    assert_eq!(record.status, JobStatus::Canceled);
    assert_eq!(record.reason.as_deref(), Some("client_gone"));
    app.shutdown().await.unwrap();
}

#[tokio::test]
async fn finished_jobs_are_pruned_after_retention() {
    let app = TestApp::spawn().await;
    let job = app.client.submit(&transcode()).await.unwrap().job;
    app.client.cancel(job.job_id).await.unwrap();
    let now = OffsetDateTime::now_utc();
    let summary = app.janitor_sweep(now + time::Duration::days(29)).await;
    assert_eq!(summary["jobs_pruned"], 0);
    let summary = app.janitor_sweep(now + time::Duration::days(31)).await;
    assert_eq!(summary["jobs_pruned"], 1);
    let err = app.client.job_status(job.job_id).await.unwrap_err();
    assert_eq!(err.status(), Some(404), "pruned jobs answer 404");
    app.shutdown().await.unwrap();
}

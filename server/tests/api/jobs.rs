//! Job and worker routes (api.md §5.2, §5.3, §5.7): list, status, cancel, heartbeat, logs, workers.

use client::{JobsQuery, Method};
use protocol::ErrorCode;
use protocol::rest::{JobRequest, JobStatus, TRANSPORT_HTTP_POLLING};

use super::{TestApp, transcode};

#[tokio::test]
async fn a_submitted_job_is_stored_pending_with_its_wait_reason() {
    let app = TestApp::spawn().await;
    let submitted = app.client.submit(&transcode()).await.unwrap();
    let job = &submitted.job;
    assert_eq!(job.status, JobStatus::Pending);
    assert_eq!(job.transport, TRANSPORT_HTTP_POLLING);
    assert_eq!(
        job.transport_metadata.path,
        format!("/poll/jobs/{}", job.job_id)
    );
    assert_eq!(job.requester_id, "client01");
    assert_eq!(job.heartbeat_interval, 5, "default_job_heartbeat_interval");
    assert_eq!(job.wait_reason.as_deref(), Some("no_worker_online"));
    assert_eq!(job.worker_id, None);
    assert_eq!((job.attempt, job.runs), (0, 0));
    assert!(job.client_last_seen.is_some(), "set at submit (upstream)");
    let status = app.client.job_status(job.job_id).await.unwrap();
    assert_eq!(status.job_id, job.job_id);
    assert_eq!(
        status.wait_detail.as_deref(),
        Some("no worker is connected")
    );
    let raw = app
        .client
        .send_signed(
            Method::GET,
            &format!("/jobs/{}/status", job.job_id),
            "",
            Vec::<(&str, &str)>::new(),
        )
        .await
        .unwrap();
    assert_eq!(
        raw.header("cache-control"),
        Some("no-cache, no-store, must-revalidate")
    );
    assert_eq!(raw.header("x-content-type-options"), Some("nosniff"));
    assert!(raw.header("x-request-id").is_some_and(|id| id.len() == 26));
    let text = String::from_utf8(raw.body.to_vec()).unwrap();
    assert!(
        text.starts_with(
            r#"{"transport":"http_polling","transport_metadata":{"path":"/poll/jobs/"#
        ),
        "upstream field order: {text}"
    );
    app.shutdown().await.unwrap();
}

#[tokio::test]
async fn lists_are_newest_first_filtered_and_paged() {
    let app = TestApp::spawn().await;
    let mut ids = Vec::new();
    for n in 0..5 {
        let request = JobRequest {
            priority: n,
            ..transcode()
        };
        ids.push(app.client.submit(&request).await.unwrap().job.job_id);
    }
    app.client.cancel(ids[1]).await.unwrap();
    app.client_as("client02")
        .submit(&transcode())
        .await
        .unwrap();
    let all = app.client.jobs_list(&JobsQuery::default()).await.unwrap();
    assert_eq!(
        all.iter().map(|job| job.job_id).collect::<Vec<_>>(),
        ids.iter().rev().copied().collect::<Vec<_>>()
    );
    let pending = app
        .client
        .jobs_list(&JobsQuery {
            status: Some(vec![JobStatus::Pending]),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(pending.len(), 4);
    let page = app
        .client
        .jobs_list(&JobsQuery {
            since_id: Some(ids[3]),
            limit: Some(2),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(
        page.iter().map(|job| job.job_id).collect::<Vec<_>>(),
        vec![ids[2], ids[1]]
    );
    let active_only = app
        .client
        .jobs_list(&JobsQuery {
            window: Some(0),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(active_only.len(), 4, "window 0 keeps active jobs only");
    let admin_own = app.admin.jobs_list(&JobsQuery::default()).await.unwrap();
    assert!(admin_own.is_empty(), "admins list their own jobs");
    let too_many = app
        .client
        .send_signed(
            Method::GET,
            "/jobs?limit=10001",
            "",
            Vec::<(&str, &str)>::new(),
        )
        .await
        .unwrap();
    assert_eq!(too_many.error_body().unwrap().code, ErrorCode::InvalidQuery);
    app.shutdown().await.unwrap();
}

#[tokio::test]
async fn cancel_and_heartbeat_answer_upstream_command_responses() {
    let app = TestApp::spawn().await;
    let job = app
        .client
        .submit(&JobRequest {
            monitor: false,
            ..transcode()
        })
        .await
        .unwrap()
        .job;
    let beat = app
        .client
        .client_heartbeat(job.job_id, Some(true))
        .await
        .unwrap();
    assert_eq!((beat.status.as_str(), beat.detail), ("ok", None));
    assert!(
        app.client.job_status(job.job_id).await.unwrap().monitor,
        "monitor=true was applied"
    );
    let canceled = app.client.cancel(job.job_id).await.unwrap();
    assert_eq!((canceled.status.as_str(), canceled.detail), ("ok", None));
    let record = app.client.job_status(job.job_id).await.unwrap();
    assert_eq!(record.status, JobStatus::Canceled);
    assert_eq!(record.reason.as_deref(), Some("canceled_by_requester"));
    assert!(record.finished_at.is_some());
    assert_eq!(record.wait_reason, None);
    let again = app.client.cancel(job.job_id).await.unwrap();
    assert_eq!(again.detail.as_deref(), Some("Job already finished"));
    let beat = app.client.client_heartbeat(job.job_id, None).await.unwrap();
    assert_eq!(beat.detail.as_deref(), Some("Job already finished"));
    // An admin canceling someone else's job.
    let other = app.client.submit(&transcode()).await.unwrap().job;
    app.admin.cancel(other.job_id).await.unwrap();
    assert_eq!(
        app.client
            .job_status(other.job_id)
            .await
            .unwrap()
            .reason
            .as_deref(),
        Some("canceled_by_admin")
    );
    let logs = app.client.logs(job.job_id, None, None).await.unwrap();
    assert!(logs.logs.is_empty());
    assert_eq!(logs.last_message_id, None);
    app.shutdown().await.unwrap();
}

#[tokio::test]
async fn workers_routes_answer_any_role() {
    let app = TestApp::spawn().await;
    assert!(app.client.workers(None).await.unwrap().is_empty());
    assert!(
        app.client_as("worker01")
            .workers(None)
            .await
            .unwrap()
            .is_empty()
    );
    let err = app.client.worker("worker01").await.unwrap_err();
    assert!(
        matches!(&err, client::Error::Api { status: 404, body, .. } if body.code == ErrorCode::WorkerNotFound && body.detail == "Worker not found")
    );
    let err = app.client.worker("bad id!").await.unwrap_err();
    assert_eq!(err.status(), Some(404));
    app.shutdown().await.unwrap();
}

#[tokio::test]
async fn health_routes_and_removed_worker_routes() {
    let app = TestApp::spawn().await;
    let health = app.client.health(false).await.unwrap();
    assert_eq!(
        (health.status.as_str(), health.databases.is_none()),
        ("online", true)
    );
    let deep = app.client.health(true).await.unwrap();
    let databases = deep.databases.unwrap();
    assert_eq!(
        databases.keys().collect::<Vec<_>>(),
        vec!["auth", "jobs", "messages", "workers"]
    );
    assert!(databases.values().all(|check| check.status == "online"));
    assert_eq!(
        deep.transports.unwrap()["websocket"].detail.as_deref(),
        Some("0 worker sessions")
    );
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let root = http.get(&app.base).send().await.unwrap();
    assert_eq!(root.status(), 307);
    assert_eq!(root.headers()["location"], "/health");
    for (method, path) in [
        ("POST", "/worker/register"),
        ("POST", "/worker/w1/verify"),
        ("POST", "/worker/deregister"),
        ("GET", "/poll/worker"),
        ("POST", "/jobs/01JDQ3V6K9Z8Y7X6W5V4T3S2R1/accept"),
        ("POST", "/jobs/01JDQ3V6K9Z8Y7X6W5V4T3S2R1/reject"),
        ("POST", "/jobs/01JDQ3V6K9Z8Y7X6W5V4T3S2R1/worker_heartbeat"),
        ("POST", "/jobs/01JDQ3V6K9Z8Y7X6W5V4T3S2R1/logs"),
        ("POST", "/jobs/01JDQ3V6K9Z8Y7X6W5V4T3S2R1/status"),
    ] {
        let response = http
            .request(method.parse().unwrap(), format!("{}{path}", app.base))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 410, "{method} {path}");
        let body: protocol::ErrorBody = response.json().await.unwrap();
        assert_eq!(body.code, ErrorCode::UpstreamWorkerRoute);
    }
    let not_found = http
        .get(format!("{}/nowhere", app.base))
        .send()
        .await
        .unwrap();
    assert_eq!(not_found.status(), 404);
    let body: protocol::ErrorBody = not_found.json().await.unwrap();
    assert_eq!(
        (body.code, body.detail.as_str()),
        (ErrorCode::NotFound, "Not Found")
    );
    let wrong_method = http
        .delete(format!("{}/jobs", app.base))
        .send()
        .await
        .unwrap();
    assert_eq!(wrong_method.status(), 405);
    assert!(wrong_method.headers().contains_key("allow"));
    let body: protocol::ErrorBody = wrong_method.json().await.unwrap();
    assert_eq!(body.code, ErrorCode::MethodNotAllowed);
    app.shutdown().await.unwrap();
}

//! Graceful shutdown (lifecycle.md §6.2): `/health` turns 503, open streams end, the server returns in time;
//! a second signal skips the waits.

use std::time::Duration;

use client::EventsQuery;
use futures_util::StreamExt;

use super::{TestApp, transcode};

#[tokio::test]
async fn a_signal_turns_health_503_ends_streams_and_stops_in_time() {
    let mut app =
        TestApp::spawn_with(|config| config.shutdown_delay_seconds = Duration::from_secs(30)).await;
    let job = app.client.submit(&transcode()).await.unwrap().job;
    let mut stream = app
        .client
        .events(
            job.job_id,
            &EventsQuery {
                keepalive: Some(60),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    stream.next().await.unwrap().unwrap();
    let server = app.take_server();
    app.signal("SIGTERM").await;
    super::eventually(10, "/health answers 503 shutdown", || async {
        let http = reqwest::get(format!("{}/health", app.base)).await.unwrap();
        http.status() == 503
            && http
                .json::<protocol::rest::HealthResponse>()
                .await
                .unwrap()
                .status
                == "shutdown"
    })
    .await;
    // Still serving during the shutdown delay.
    assert_eq!(
        app.client.job_status(job.job_id).await.unwrap().job_id,
        job.job_id
    );
    // A second signal skips the 30 s delay: the open stream ends and the server returns.
    app.signal("SIGINT").await;
    let ended = tokio::time::timeout(Duration::from_secs(10), async {
        while let Some(item) = stream.next().await {
            if item.is_err() {
                break;
            }
        }
    })
    .await;
    assert!(ended.is_ok(), "the open event stream ended");
    let result = tokio::time::timeout(Duration::from_secs(10), server)
        .await
        .expect("run returns in time")
        .unwrap();
    assert!(result.is_ok(), "{result:?}");
}

#[tokio::test]
async fn a_stop_writes_the_clean_marker_and_the_restart_finds_every_job() {
    let app = TestApp::spawn().await;
    let mut ids = Vec::new();
    for _ in 0..5 {
        ids.push(app.client.submit(&transcode()).await.unwrap().job.job_id);
    }
    let (result, dir) = app.stop().await;
    result.unwrap();
    let opened = super::open_stopped_store(dir.path()).await;
    assert!(!opened.unclean, "the stop was clean");
    for id in ids {
        assert!(opened.store.job(id).unwrap().is_some());
    }
}

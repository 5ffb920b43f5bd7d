//! Follow channels: upstream's `/poll/jobs/{id}` (long poll and NDJSON) and `/jobs/{id}/events`.

use std::time::Duration;

use client::{EventsQuery, Method, StreamItem};
use futures_util::StreamExt;
use protocol::rest::{EventLine, EventType, JobStatus, MessagePayload};

use super::{TestApp, transcode};

#[tokio::test]
async fn long_polls_deliver_job_status_messages_with_working_cursors() {
    let app = TestApp::spawn().await;
    let job = app.client.submit(&transcode()).await.unwrap().job;
    let first = app.client.poll(job.job_id, None, 0).await.unwrap();
    assert_eq!(first.messages.len(), 1);
    let message = &first.messages[0];
    assert_eq!(message.message_type, "job_status");
    assert_eq!(message.recipient_id, "client01");
    assert_eq!(message.sender_id, None, "pending at submit has no sender");
    assert_eq!(message.sent_at, None);
    let MessagePayload::Status(payload) = &message.payload else {
        panic!("a status payload")
    };
    assert_eq!(payload.status, JobStatus::Pending);
    let cursor = message.message_id;
    let empty = app.client.poll(job.job_id, Some(cursor), 0).await.unwrap();
    assert!(empty.messages.is_empty(), "nothing after the cursor");
    // A long poll waits and wakes on the next event.
    let waiting = {
        let c = app.client.clone();
        tokio::spawn(async move { c.poll(job.job_id, Some(cursor), 30).await.unwrap() })
    };
    tokio::time::sleep(Duration::from_millis(100)).await;
    app.client.cancel(job.job_id).await.unwrap();
    let woken = tokio::time::timeout(Duration::from_secs(10), waiting)
        .await
        .expect("the long poll wakes")
        .unwrap();
    assert_eq!(woken.messages.len(), 1);
    assert_eq!(
        woken.messages[0].sender_id.as_deref(),
        Some("client01"),
        "the canceling identity"
    );
    let MessagePayload::Status(payload) = &woken.messages[0].payload else {
        panic!("a status payload")
    };
    assert_eq!(payload.status, JobStatus::Canceled);
    assert!(woken.messages[0].message_id > cursor);
    let raw = app
        .client
        .send_signed(
            Method::GET,
            &format!("/poll/jobs/{}?last_message_id=zzz", job.job_id),
            "",
            Vec::<(&str, &str)>::new(),
        )
        .await
        .unwrap();
    assert_eq!(raw.error_body().unwrap().detail, "Invalid last_message_id");
    app.shutdown().await.unwrap();
}

#[tokio::test]
async fn the_ndjson_poll_stream_sends_messages_as_they_happen() {
    let app = TestApp::spawn().await;
    let job = app.client.submit(&transcode()).await.unwrap().job;
    let mut stream = app.client.poll_stream(job.job_id, None, 1).await.unwrap();
    let first = tokio::time::timeout(Duration::from_secs(10), stream.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(first.messages.len(), 1);
    app.client.cancel(job.job_id).await.unwrap();
    let next = tokio::time::timeout(Duration::from_secs(10), stream.next())
        .await
        .expect("a line")
        .unwrap()
        .unwrap();
    let MessagePayload::Status(payload) = &next.messages[0].payload else {
        panic!("a status payload")
    };
    assert_eq!(payload.status, JobStatus::Canceled);
    drop(stream);
    app.shutdown().await.unwrap();
}

async fn next_line(stream: &mut client::EventStream) -> Option<EventLine> {
    loop {
        match tokio::time::timeout(Duration::from_secs(10), stream.next())
            .await
            .expect("a line in time")
        {
            Some(Ok(StreamItem::Line(line))) => return Some(line),
            Some(Ok(StreamItem::Keepalive)) => continue,
            Some(Err(err)) => panic!("{err}"),
            None => return None,
        }
    }
}

#[tokio::test]
async fn the_event_stream_starts_with_the_job_and_ends_after_the_terminal_status() {
    let app = TestApp::spawn().await;
    let job = app.client.submit(&transcode()).await.unwrap().job;
    let mut stream = app
        .client
        .events(
            job.job_id,
            &EventsQuery {
                keepalive: Some(1),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    let EventLine::Job(first) = next_line(&mut stream).await.unwrap() else {
        panic!("the job line comes first")
    };
    assert_eq!(first.job.job_id, job.job_id);
    let EventLine::Status(pending) = next_line(&mut stream).await.unwrap() else {
        panic!("then the stored status")
    };
    assert_eq!(pending.status, JobStatus::Pending);
    app.client.cancel(job.job_id).await.unwrap();
    let EventLine::Status(canceled) = next_line(&mut stream).await.unwrap() else {
        panic!("the live status")
    };
    assert_eq!(canceled.status, JobStatus::Canceled);
    assert_eq!(canceled.reason.as_deref(), Some("canceled_by_requester"));
    assert!(canceled.id > pending.id);
    assert!(
        next_line(&mut stream).await.is_none(),
        "the stream ends after the terminal status"
    );
    // Resuming after the last id of a finished job gives the job line and ends.
    let query = EventsQuery {
        after: Some(canceled.id),
        follow: Some(false),
        ..Default::default()
    };
    let lines: Vec<_> = app
        .client
        .events(job.job_id, &query)
        .await
        .unwrap()
        .collect()
        .await;
    assert_eq!(lines.len(), 1);
    let types = EventsQuery {
        types: Some(vec![EventType::Notice]),
        follow: Some(false),
        ..Default::default()
    };
    let lines: Vec<_> = app
        .client
        .events(job.job_id, &types)
        .await
        .unwrap()
        .collect()
        .await;
    assert_eq!(lines.len(), 1, "only the job line: no notices");
    let raw = app
        .client
        .send_signed(
            Method::GET,
            &format!("/jobs/{}/events?after=nope", job.job_id),
            "",
            Vec::<(&str, &str)>::new(),
        )
        .await
        .unwrap();
    assert_eq!(raw.error_body().unwrap().detail, "Invalid after");
    let raw = app
        .client
        .send_signed(
            Method::GET,
            &format!("/jobs/{}/events?keepalive=61", job.job_id),
            "",
            Vec::<(&str, &str)>::new(),
        )
        .await
        .unwrap();
    assert_eq!(raw.status, 422);
    app.shutdown().await.unwrap();
}

#[tokio::test]
async fn the_stream_cap_refuses_with_503() {
    let app = TestApp::spawn_with(|config| config.limits.max_streams = 1).await;
    let job = app.client.submit(&transcode()).await.unwrap().job;
    let _open = app
        .client
        .events(job.job_id, &EventsQuery::default())
        .await
        .unwrap();
    let refused = app
        .client
        .send_signed(
            Method::GET,
            &format!("/jobs/{}/events", job.job_id),
            "",
            Vec::<(&str, &str)>::new(),
        )
        .await
        .unwrap();
    assert_eq!(refused.status, 503);
    assert_eq!(refused.header("retry-after"), Some("1"));
    assert_eq!(
        refused.error_body().unwrap().code,
        protocol::ErrorCode::TooManyStreams
    );
    app.shutdown().await.unwrap();
}

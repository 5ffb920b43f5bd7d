//! The REST client on real sockets: what it sends (method, path, query, headers, body, signature) and how it reads
//! what comes back (records, error bodies, NDJSON streams, raw answers).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use client::query::percent_decode;
use client::{Client, Error, EventsQuery, JobsQuery, Method, SigningMode, StreamItem};
use futures_util::StreamExt;
use protocol::ids::{EventId, JobId};
use protocol::rest::{EventLine, EventType, JanitorAction, JobRequest, JobStatus};
use protocol::signing::{
    HmacKey, NonceParts, canonical_string, decode_signature, nonce_is_valid, verify,
};
use protocol::{ErrorBody, ErrorCode};

use crate::fake_http::{FakeServer, Reply, Request};

const KEY: &str = "qHdOvnF4mlz6TSStMCoY6KvEpDQGpcteNU2LMGInyuY=";
const JOB_ID: &str = "01JDQ3V6K9Z8Y7X6W5V4T3S2R1";
const TEST_TIMEOUT: Duration = Duration::from_secs(10);

const JOB_RECORD: &str = r#"{"transport":"http_polling","transport_metadata":{"path":"/poll/jobs/01JDQ3V6K9Z8Y7X6W5V4T3S2R1"},
 "job_id":"01JDQ3V6K9Z8Y7X6W5V4T3S2R1","requester_id":"client01","binary_name":"ffmpeg",
 "arguments":["-y","-i","$Media/input.mp4","-c:v","libx264","-preset","veryfast","out.mp4"],
 "paths":["Media"],"working_directory":"$Media","status":"running","exit_code":null,"worker_id":"worker01",
 "created_at":"2026-11-24T18:24:07.490073Z","last_update":"2026-11-24T18:24:07.611402Z",
 "worker_last_seen":"2026-11-24T18:24:09.002113Z","client_last_seen":"2026-11-24T18:24:08.998001Z",
 "heartbeat_interval":5,"monitor":true,"priority":0,"idempotency_key":null,"attempt":1,"runs":1,"stdin":false,
 "started_at":"2026-11-24T18:24:07.611402Z","finished_at":null,
 "progress":{"frame":112,"fps":48.2,"out_time":"00:00:04.480000","out_time_seconds":4.48,"duration_seconds":10.0,
             "percent":44.8,"speed":1.93,"bitrate_kbps":812.4,"size_bytes":455212,"eta_seconds":2.86,
             "updated_at":"2026-11-24T18:24:09.002113Z"},
 "wait_reason":null,"wait_detail":null,"reason":null,"reason_detail":null}"#;

const WORKER: &str = r#"{"worker_id":"worker01","capabilities":[],"binaries":["ffmpeg","ffprobe"],"paths":["Media"],
"registration_interval":5,"version":"0.1.0","status":"online","last_seen":"2026-11-24T18:24:48.143597Z",
"max_concurrent_jobs":2,"running_jobs":1,"connected_since":"2026-11-24T18:20:01.000412Z","host":"nas",
"protocol_version":"1.0"}"#;

fn key() -> HmacKey {
    HmacKey::parse(KEY).unwrap()
}

fn job_id() -> JobId {
    JobId::parse(JOB_ID).unwrap()
}

fn client_for(server: &FakeServer) -> Client {
    Client::new(&server.url(), "client01", key()).unwrap()
}

/// Checks a request's signature as the coordinator does (auth.md §2–3), the path base stripped first.
fn check_signature(request: &Request, path_base: &str) -> Result<(), String> {
    let timestamp = request
        .header("x-dffmpeg-timestamp")
        .ok_or("no timestamp")?;
    let signature = request
        .header("x-dffmpeg-signature")
        .ok_or("no signature")?;
    assert_eq!(request.header("x-dffmpeg-client-id"), Some("client01"));
    let path = request
        .path()
        .strip_prefix(path_base)
        .ok_or("path base missing")?;
    let extension = request.header("x-dffmpeg-nonce").map(|nonce| NonceParts {
        query: request.query(),
        nonce,
    });
    let canonical = canonical_string(
        &request.method,
        &percent_decode(path),
        timestamp,
        &request.body,
        extension,
    );
    let decoded = decode_signature(signature).ok_or("signature does not decode")?;
    if verify(&key(), &canonical, &decoded) {
        Ok(())
    } else {
        Err(format!("bad signature over {canonical}"))
    }
}

async fn within<F: Future>(future: F) -> F::Output {
    tokio::time::timeout(TEST_TIMEOUT, future)
        .await
        .expect("the test's request did not finish in time")
}

#[tokio::test]
async fn submit_signs_each_request_with_a_fresh_nonce_and_reports_replays() {
    let count = AtomicUsize::new(0);
    let server = FakeServer::start(move |_| {
        let reply = Reply::json(200, JOB_RECORD);
        if count.fetch_add(1, Ordering::SeqCst) == 0 {
            reply
        } else {
            reply.header("Idempotent-Replayed", "true")
        }
    })
    .await;
    let client = client_for(&server);
    let request = JobRequest {
        binary_name: "ffmpeg".into(),
        arguments: vec!["-i".into(), "$Media/in.mp4".into()],
        paths: vec!["Media".into()],
        monitor: true,
        idempotency_key: Some("k1".into()),
        ..JobRequest::default()
    };
    let first = within(client.submit(&request)).await.unwrap();
    assert!(!first.replayed);
    assert_eq!(first.job.job_id, job_id());
    assert_eq!(first.job.status, JobStatus::Running);
    let second = within(client.submit(&request)).await.unwrap();
    assert!(second.replayed);

    let requests = server.requests();
    assert_eq!(requests.len(), 2);
    for sent in &requests {
        assert_eq!(sent.method, "POST");
        assert_eq!(sent.target, "/jobs/submit");
        assert_eq!(sent.header("content-type"), Some("application/json"));
        assert_eq!(
            serde_json::from_slice::<JobRequest>(&sent.body).unwrap(),
            request
        );
        assert!(nonce_is_valid(sent.header("x-dffmpeg-nonce").unwrap()));
        check_signature(sent, "").unwrap();
    }
    assert_ne!(
        requests[0].header("x-dffmpeg-nonce"),
        requests[1].header("x-dffmpeg-nonce")
    );
}

#[tokio::test]
async fn upstream_signing_sends_no_nonce_and_leaves_the_query_unsigned() {
    let server = FakeServer::start(|_| Reply::json(200, &format!("[{JOB_RECORD}]"))).await;
    let client = client_for(&server).with_signing(SigningMode::Upstream);
    let query = JobsQuery {
        window: Some(600),
        status: Some(vec![JobStatus::Running]),
        ..JobsQuery::default()
    };
    let jobs = within(client.jobs_list(&query)).await.unwrap();
    assert_eq!(jobs.len(), 1);
    let sent = server.only_request();
    assert_eq!(sent.target, "/jobs?window=600&status=running");
    assert!(sent.header("x-dffmpeg-nonce").is_none());
    check_signature(&sent, "").unwrap();
    // The upstream canonical string has four parts: a changed query still verifies.
    let mut tampered = sent.clone();
    tampered.target = "/jobs?window=1".into();
    check_signature(&tampered, "").unwrap();
}

#[tokio::test]
async fn the_nonce_extension_signs_the_query() {
    let server = FakeServer::start(|_| Reply::json(200, "[]")).await;
    let client = client_for(&server);
    within(client.jobs_list(&JobsQuery {
        limit: Some(5),
        ..JobsQuery::default()
    }))
    .await
    .unwrap();
    let sent = server.only_request();
    assert_eq!(sent.target, "/jobs?limit=5");
    check_signature(&sent, "").unwrap();
    let mut tampered = sent.clone();
    tampered.target = "/jobs?limit=6".into();
    assert!(check_signature(&tampered, "").is_err());
}

#[tokio::test]
async fn error_bodies_become_api_errors_and_other_bodies_do_not() {
    let server = FakeServer::start(|request| {
        if request.path().ends_with("/status") {
            Reply::json(404, r#"{"detail":"Job not found","code":"job_not_found"}"#)
                .header("x-request-id", "req-1")
        } else {
            Reply {
                status: 502,
                headers: vec![],
                parts: vec![b"<html>bad gateway</html>".to_vec()],
            }
        }
    })
    .await;
    let client = client_for(&server);
    match within(client.job_status(job_id())).await {
        Err(Error::Api {
            status: 404,
            body,
            request_id,
        }) => {
            assert_eq!(
                body,
                ErrorBody::new(ErrorCode::JobNotFound, "Job not found")
            );
            assert_eq!(request_id.as_deref(), Some("req-1"));
        }
        other => panic!("expected an Api error, got {other:?}"),
    }
    match within(client.cancel(job_id())).await {
        Err(Error::UnexpectedStatus {
            status: 502, body, ..
        }) => assert!(body.contains("bad gateway")),
        other => panic!("expected UnexpectedStatus, got {other:?}"),
    }
}

#[tokio::test]
async fn invalid_json_in_a_2xx_answer_is_a_decode_error() {
    let server = FakeServer::start(|_| Reply::json(200, r#"{"status":"ok""#)).await;
    let err = within(client_for(&server).cancel(job_id()))
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Decode(_)), "{err:?}");
}

#[tokio::test]
async fn transport_failures_are_transport_errors() {
    let server = FakeServer::start(|_| Reply::json(200, "{}")).await;
    let url = server.url();
    drop(server);
    // Nothing listens any more (or the port was reused by something that is not us: either way not a 2xx body).
    let client = Client::new(&url, "client01", key())
        .unwrap()
        .with_request_timeout(Duration::from_secs(2));
    let err = within(client.health(false)).await.unwrap_err();
    assert!(
        matches!(err, Error::Transport(_) | Error::UnexpectedStatus { .. }),
        "{err:?}"
    );
}

#[tokio::test]
async fn the_path_base_is_sent_but_not_signed() {
    let server = FakeServer::start(|_| {
        Reply::json(200, r#"{"status":"ok","detail":"Job already finished"}"#)
    })
    .await;
    let client = Client::new(&format!("{}/proxy/", server.url()), "client01", key()).unwrap();
    let answer = within(client.cancel(job_id())).await.unwrap();
    assert_eq!(answer.detail.as_deref(), Some("Job already finished"));
    let sent = server.only_request();
    assert_eq!(sent.target, format!("/proxy/jobs/{JOB_ID}/cancel"));
    check_signature(&sent, "/proxy").unwrap();
    assert!(
        check_signature(&sent, "").is_err(),
        "the path base must not be signed"
    );
}

#[tokio::test]
async fn small_routes_send_their_queries_and_bodies() {
    let server = FakeServer::start(|request| match request.path() {
        "/workers" => Reply::json(200, &format!("[{WORKER}]")),
        path if path.starts_with("/workers/") => Reply::json(200, WORKER),
        "/admin/janitor" => Reply::json(202, r#"{"message":"Action accepted","action":"prune"}"#),
        path if path.ends_with("/logs") => {
            Reply::json(200, r#"{"logs":[],"last_message_id":null}"#)
        }
        _ => Reply::json(200, r#"{"status":"ok","detail":null}"#),
    })
    .await;
    let client = client_for(&server);
    let cursor = EventId::parse("01JDQ3V6KA0M6QW8N4C1ZV3B7E").unwrap();
    within(client.client_heartbeat(job_id(), Some(true)))
        .await
        .unwrap();
    within(client.client_heartbeat(job_id(), None))
        .await
        .unwrap();
    let logs = within(client.logs(job_id(), Some(cursor), Some(50)))
        .await
        .unwrap();
    assert!(logs.logs.is_empty());
    assert_eq!(within(client.workers(Some(600))).await.unwrap().len(), 1);
    assert_eq!(
        within(client.worker("worker 01/x"))
            .await
            .unwrap()
            .worker_id,
        "worker01"
    );
    let janitor = within(client.janitor(JanitorAction::Prune)).await.unwrap();
    assert_eq!(janitor.action, JanitorAction::Prune);

    let requests = server.requests();
    let targets: Vec<(&str, &str)> = requests
        .iter()
        .map(|r| (r.method.as_str(), r.target.as_str()))
        .collect();
    assert_eq!(
        targets,
        vec![
            (
                "POST",
                "/jobs/01JDQ3V6K9Z8Y7X6W5V4T3S2R1/client_heartbeat?monitor=true"
            ),
            ("POST", "/jobs/01JDQ3V6K9Z8Y7X6W5V4T3S2R1/client_heartbeat"),
            (
                "GET",
                "/jobs/01JDQ3V6K9Z8Y7X6W5V4T3S2R1/logs?since_message_id=01JDQ3V6KA0M6QW8N4C1ZV3B7E&limit=50"
            ),
            ("GET", "/workers?window=600"),
            ("GET", "/workers/worker%2001%2Fx"),
            ("POST", "/admin/janitor"),
        ]
    );
    assert_eq!(requests[5].body, br#"{"action":"prune"}"#);
    assert_eq!(requests[5].header("content-type"), Some("application/json"));
    for request in &requests {
        check_signature(request, "").unwrap();
    }
}

#[tokio::test]
async fn events_stream_reassembles_split_lines_and_exposes_keepalives() {
    let status = r#"{"type":"status","id":"01JDQ3V6KA0M6QW8N4C1ZV3B7E","time":"2026-11-24T18:24:07.498677Z","attempt":1,"status":"completed","exit_code":0,"worker_id":"worker01","reason":null,"reason_detail":null}"#;
    let output = r#"{"type":"output","id":"01JDQ3V6KA0M6QW8N4C1ZV3B7D","time":"2026-11-24T18:24:07.498677Z","attempt":1,"stream":"stdout","text":"hello\n"}"#;
    let job_line = format!(r#"{{"type":"job","job":{}}}"#, JOB_RECORD.replace('\n', ""));
    let body = format!("{job_line}\n\n{output}\n{status}\n");
    let (head, tail) = body.split_at(body.len() / 2);
    let (head_a, head_b) = head.split_at(7);
    let parts = [head_a.to_owned(), head_b.to_owned(), tail.to_owned()];
    let server = FakeServer::start(move |_| {
        Reply::ndjson(&parts.iter().map(String::as_str).collect::<Vec<_>>())
    })
    .await;
    let client = client_for(&server);
    let query = EventsQuery {
        after: None,
        follow: Some(true),
        keepalive: Some(5),
        types: Some(vec![EventType::Status, EventType::Output]),
    };
    let stream = within(client.events(job_id(), &query)).await.unwrap();
    let items: Vec<_> = within(stream.collect::<Vec<_>>()).await;
    let items: Vec<StreamItem<EventLine>> = items.into_iter().map(Result::unwrap).collect();
    assert_eq!(items.len(), 4, "{items:?}");
    assert!(
        matches!(&items[0], StreamItem::Line(EventLine::Job(line)) if line.job.job_id == job_id())
    );
    assert_eq!(items[1], StreamItem::Keepalive);
    assert!(
        matches!(&items[2], StreamItem::Line(EventLine::Output(line)) if line.text.as_deref() == Some("hello\n"))
    );
    assert!(
        matches!(&items[3], StreamItem::Line(EventLine::Status(line)) if line.status == JobStatus::Completed)
    );

    let sent = server.only_request();
    assert_eq!(
        sent.target,
        format!("/jobs/{JOB_ID}/events?follow=true&keepalive=5&types=status,output")
    );
    assert_eq!(sent.header("accept"), Some("application/x-ndjson"));
    check_signature(&sent, "").unwrap();
}

#[tokio::test]
async fn a_hostile_stream_ends_with_an_error_not_a_panic() {
    let server =
        FakeServer::start(|_| Reply::ndjson(&["\n", "{\"type\":\"status\",\"id\":3}\n", "\n"]))
            .await;
    let stream = within(client_for(&server).events(job_id(), &EventsQuery::default()))
        .await
        .unwrap();
    let items: Vec<_> = within(stream.collect::<Vec<_>>()).await;
    assert_eq!(items.len(), 2, "{items:?}");
    assert!(matches!(items[0], Ok(StreamItem::Keepalive)));
    assert!(matches!(items[1], Err(Error::Decode(_))));
}

#[tokio::test]
async fn a_refused_stream_is_an_api_error() {
    let server = FakeServer::start(|_| {
        Reply::json(
            503,
            r#"{"detail":"Too many open streams","code":"too_many_streams"}"#,
        )
    })
    .await;
    let err = within(client_for(&server).events(job_id(), &EventsQuery::default()))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Some(ErrorCode::TooManyStreams));
    assert_eq!(err.status(), Some(503));
}

#[tokio::test]
async fn polling_long_and_streaming() {
    let message = r#"{"message_id":"01JDQ3V6KA0M6QW8N4C1ZV3B7E","sender_id":null,"recipient_id":"client01","job_id":"01JDQ3V6K9Z8Y7X6W5V4T3S2R1","timestamp":"2026-11-24T18:24:07.498677Z","sent_at":null,"message_type":"job_status","payload":{"status":"assigned","exit_code":null,"last_update":"2026-11-24T18:24:07.498677Z"}}"#;
    let line = format!(r#"{{"messages":[{message}]}}"#);
    let streamed = format!("\n{line}\n\n\n{line}\n");
    let long = line.clone();
    let server = FakeServer::start(move |request| {
        if request.header("accept") == Some("application/x-ndjson") {
            let (a, b) = streamed.split_at(30);
            Reply::ndjson(&[a, b])
        } else {
            Reply::json(200, &long)
        }
    })
    .await;
    let client = client_for(&server);
    let cursor = EventId::parse("01JDQ3V6KA0M6QW8N4C1ZV3B7D").unwrap();
    let answer = within(client.poll(job_id(), Some(cursor), 1))
        .await
        .unwrap();
    assert_eq!(answer.messages.len(), 1);
    let stream = within(client.poll_stream(job_id(), None, 2)).await.unwrap();
    let lines: Vec<_> = within(stream.collect::<Vec<_>>()).await;
    assert_eq!(lines.len(), 2, "keepalives are skipped: {lines:?}");
    assert!(
        lines
            .iter()
            .all(|line| line.as_ref().is_ok_and(|poll| poll.messages.len() == 1))
    );
    let requests = server.requests();
    assert_eq!(
        requests[0].target,
        format!("/poll/jobs/{JOB_ID}?last_message_id=01JDQ3V6KA0M6QW8N4C1ZV3B7D&wait=1")
    );
    assert_eq!(requests[1].target, format!("/poll/jobs/{JOB_ID}?wait=2"));
}

#[tokio::test]
async fn raw_requests_replay_identical_signed_bytes() {
    let server = FakeServer::start(|request| {
        let stale = request
            .header("x-dffmpeg-timestamp")
            .and_then(|ts| ts.parse::<i64>().ok())
            .is_some_and(|ts| (client::unix_now() - ts).abs() > 300);
        if stale {
            Reply::json(
                401,
                r#"{"detail":"Request timestamp outside allowed window","code":"auth_clock_skew"}"#,
            )
        } else {
            Reply::json(200, r#"{"status":"ok","detail":null}"#)
        }
    })
    .await;
    let client = client_for(&server);
    let path = format!("/jobs/{JOB_ID}/cancel");
    let nonce = protocol::signing::new_nonce();
    let fresh = client
        .signed_headers(&Method::POST, &path, b"", client::unix_now(), Some(&nonce))
        .unwrap();
    let first = within(client.send_raw(Method::POST, &path, Vec::new(), fresh.pairs()))
        .await
        .unwrap();
    let second = within(client.send_raw(Method::POST, &path, Vec::new(), fresh.pairs()))
        .await
        .unwrap();
    assert_eq!((first.status, second.status), (200, 200));
    let stale = client
        .signed_headers(
            &Method::POST,
            &path,
            b"",
            client::unix_now() - 301,
            Some(&nonce),
        )
        .unwrap();
    let refused = within(client.send_raw(Method::POST, &path, Vec::new(), stale.pairs()))
        .await
        .unwrap();
    assert_eq!(refused.status, 401);
    assert_eq!(
        refused.error_body().map(|body| body.code),
        Some(ErrorCode::AuthClockSkew)
    );
    assert_eq!(refused.header("content-type"), Some("application/json"));

    let requests = server.requests();
    assert_eq!(
        requests[0].headers, requests[1].headers,
        "a replay sends the same signed headers"
    );
    for request in &requests {
        check_signature(request, "").unwrap();
    }
}

#[tokio::test]
async fn send_signed_appends_extra_headers_after_the_signature() {
    let server =
        FakeServer::start(|_| Reply::json(422, r#"{"detail":"x","code":"invalid_body"}"#)).await;
    let client = client_for(&server);
    let answer = within(client.send_signed(
        Method::POST,
        "/jobs/submit?odd=a b",
        &b"{not json"[..],
        [
            ("content-type", "application/json"),
            ("x-dffmpeg-client-id", "someone-else"),
        ],
    ))
    .await
    .unwrap();
    assert_eq!(answer.status, 422);
    let sent = server.only_request();
    assert_eq!(
        sent.all("x-dffmpeg-client-id"),
        vec!["client01", "someone-else"]
    );
    assert_eq!(sent.target, "/jobs/submit?odd=a%20b");
    assert_eq!(sent.body, b"{not json");
    check_signature(&sent, "").unwrap();
}

#[tokio::test]
async fn health_is_unsigned_and_reads_shutdown_answers() {
    let server = FakeServer::start(|request| {
        if request.query() == "deep=true" {
            Reply::json(200, r#"{"status":"online","version":"0.1.0","databases":{"jobs":{"status":"online","detail":null}},"transports":null}"#)
        } else {
            Reply::json(503, r#"{"status":"shutdown","version":"0.1.0","databases":null,"transports":null}"#)
        }
    })
    .await;
    let client = client_for(&server);
    assert_eq!(
        within(client.health(false)).await.unwrap().status,
        "shutdown"
    );
    let deep = within(client.health(true)).await.unwrap();
    assert_eq!(deep.status, "online");
    assert!(deep.databases.is_some());
    for request in server.requests() {
        assert!(request.header("x-dffmpeg-signature").is_none());
    }
}

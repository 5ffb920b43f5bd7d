//! `POST /jobs/submit` (api.md §5.1, limits-and-bad-input.md §3): every refusal has its status, code and detail,
//! in the documented check order, and leaves nothing behind; an accepted submit is stored before its `200`.

use client::Method;
use protocol::ErrorCode;
use protocol::rest::{JobRequest, JobStatus};

use super::{TestApp, transcode};

async fn refused(
    app: &TestApp,
    body: &str,
    content_type: Option<&str>,
) -> (u16, ErrorCode, String) {
    let headers: Vec<(&str, &str)> = content_type
        .map(|ct| ("content-type", ct))
        .into_iter()
        .collect();
    let response = app
        .client
        .send_signed(Method::POST, "/jobs/submit", body.to_owned(), headers)
        .await
        .unwrap();
    let error = response
        .error_body()
        .unwrap_or_else(|| panic!("refused: {body}"));
    (response.status, error.code, error.detail)
}

fn job_json(tweak: impl FnOnce(&mut serde_json::Value)) -> String {
    let mut value = serde_json::to_value(transcode()).unwrap();
    tweak(&mut value);
    value.to_string()
}

#[tokio::test]
async fn bad_submits_get_their_code_and_nothing_is_written() {
    let app = TestApp::spawn().await;
    let cases: Vec<(String, Option<&str>, u16, ErrorCode, &str)> = vec![
        (
            "{".into(),
            None,
            422,
            ErrorCode::MalformedJson,
            "Malformed JSON at line 1 column 1: EOF while parsing an object",
        ),
        (
            "".into(),
            None,
            422,
            ErrorCode::MalformedJson,
            "Malformed JSON at line 1 column 0: EOF while parsing a value",
        ),
        (
            job_json(|v| v["x"] = 1.into()),
            None,
            422,
            ErrorCode::InvalidBody,
            "unknown field 'x'",
        ),
        (
            job_json(|v| v["arguments"] = "x".into()),
            None,
            422,
            ErrorCode::InvalidBody,
            "arguments: invalid type: string \"x\", expected an array",
        ),
        (
            job_json(|v| v["binary_name"] = "x264".into()),
            None,
            400,
            ErrorCode::UnsupportedBinary,
            "Unsupported binary name: x264",
        ),
        (
            job_json(|v| v["supported_transports"] = serde_json::json!([])),
            None,
            400,
            ErrorCode::NoSupportedTransport,
            "No supported transports",
        ),
        (
            job_json(|v| v["arguments"][2] = "$Media/../etc/passwd".into()),
            None,
            400,
            ErrorCode::PathEscape,
            "Path escapes its variable root: $Media/../etc/passwd",
        ),
        (
            job_json(|v| v["working_directory"] = "$Other/x".into()),
            None,
            400,
            ErrorCode::InvalidPathVariable,
            "Working directory uses path variable 'Other' that is not listed in paths",
        ),
        (
            job_json(|v| v["paths"] = serde_json::json!(["bad name"])),
            None,
            400,
            ErrorCode::InvalidPathVariable,
            "Invalid path variable name: bad name",
        ),
        (
            job_json(|v| v["priority"] = 5000.into()),
            None,
            422,
            ErrorCode::InvalidBody,
            "priority: must be between -1000 and 1000",
        ),
        (
            job_json(|v| v["heartbeat_interval"] = (-1).into()),
            None,
            422,
            ErrorCode::InvalidBody,
            "heartbeat_interval: must be 0 or between 1 and 3600",
        ),
        (
            job_json(|v| v["arguments"][0] = "a\u{0}b".into()),
            None,
            422,
            ErrorCode::InvalidBody,
            "arguments[0]: contains a NUL character",
        ),
        (
            job_json(|_| {}),
            Some("text/plain"),
            415,
            ErrorCode::UnsupportedMediaType,
            "Unsupported Content-Type 'text/plain'; send application/json",
        ),
    ];
    for (body, content_type, status, code, detail) in cases {
        let got = refused(&app, &body, content_type).await;
        assert_eq!(got, (status, code, detail.to_owned()), "body {body}");
    }
    // A literal `$Var` not listed in paths is an ordinary argument (upstream behaviour).
    let literal = app
        .client
        .submit(&JobRequest {
            arguments: vec!["-metadata".into(), "title=$Other".into()],
            ..transcode()
        })
        .await
        .unwrap();
    assert_eq!(literal.job.status, JobStatus::Pending);
    let jobs = app.client.jobs_list(&Default::default()).await.unwrap();
    assert_eq!(jobs.len(), 1, "only the good submit made a job");
    app.shutdown().await.unwrap();
}

#[tokio::test]
async fn body_limits_are_judged_before_authentication() {
    let app = TestApp::spawn_with(|config| config.limits.max_body_bytes = 64 * 1024).await;
    let http = reqwest::Client::new();
    let big = vec![b' '; 64 * 1024 + 1];
    let unsigned = http
        .post(format!("{}/jobs/submit", app.base))
        .body(big.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(unsigned.status(), 413, "oversized and unsigned: 413 first");
    let body: protocol::ErrorBody = unsigned.json().await.unwrap();
    assert_eq!(body.detail, "Request body too large (limit 65536 bytes)");
    let unsigned_gzip = http
        .post(format!("{}/jobs/submit", app.base))
        .header("content-encoding", "gzip")
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(unsigned_gzip.status(), 415);
    let unsigned_json = http
        .post(format!("{}/jobs/submit", app.base))
        .body("{")
        .send()
        .await
        .unwrap();
    assert_eq!(
        unsigned_json.status(),
        401,
        "unsigned and malformed JSON: 401 first"
    );
    // A chunked body that crosses the limit while it is read.
    let stream =
        futures_util::stream::iter((0..80).map(|_| Ok::<_, std::io::Error>(vec![b' '; 1024])));
    let signed_headers = app
        .client
        .signed_headers(
            &Method::POST,
            "/jobs/submit",
            &[],
            client::unix_now(),
            Some(&protocol::signing::new_nonce()),
        )
        .unwrap();
    let mut request = http
        .post(format!("{}/jobs/submit", app.base))
        .body(reqwest::Body::wrap_stream(stream));
    for (name, value) in signed_headers.pairs() {
        request = request.header(name, value);
    }
    assert_eq!(request.send().await.unwrap().status(), 413);
    app.shutdown().await.unwrap();
}

#[tokio::test]
async fn bad_ids_and_cursors_get_400_before_the_lookup() {
    let app = TestApp::spawn().await;
    let c = &app.client;
    for path in [
        "/jobs/not-a-ulid/status",
        "/jobs/8ZZZZZZZZZZZZZZZZZZZZZZZZZ/status",
        "/jobs/01JDQ3V6K9Z8Y7X6W5V4T3S2RI/logs",
    ] {
        let response = c
            .send_signed(Method::GET, path, "", Vec::<(&str, &str)>::new())
            .await
            .unwrap();
        let body = response.error_body().unwrap();
        assert_eq!(
            (response.status, body.code, body.detail.as_str()),
            (400, ErrorCode::InvalidJobId, "Invalid job ID"),
            "{path}"
        );
    }
    let unknown = "01JDQ3V6K9Z8Y7X6W5V4T3S2R1";
    let response = c
        .send_signed(
            Method::GET,
            &format!("/jobs/{unknown}/logs?since_message_id=zzz"),
            "",
            Vec::<(&str, &str)>::new(),
        )
        .await
        .unwrap();
    let body = response.error_body().unwrap();
    assert_eq!(
        (response.status, body.detail.as_str()),
        (400, "Invalid since_message_id"),
        "cursor before lookup"
    );
    let response = c
        .send_signed(
            Method::GET,
            &format!("/jobs/{unknown}/status"),
            "",
            Vec::<(&str, &str)>::new(),
        )
        .await
        .unwrap();
    assert_eq!(
        (response.status, response.error_body().unwrap().code),
        (404, ErrorCode::JobNotFound)
    );
    let lower = unknown.to_ascii_lowercase();
    let response = c
        .send_signed(
            Method::GET,
            &format!("/jobs/{lower}/status"),
            "",
            Vec::<(&str, &str)>::new(),
        )
        .await
        .unwrap();
    assert_eq!(response.status, 404, "lower case is a valid id");
    let response = c
        .send_signed(
            Method::GET,
            "/jobs?window=9223372036854775807",
            "",
            Vec::<(&str, &str)>::new(),
        )
        .await
        .unwrap();
    assert_eq!(response.status, 200);
    let response = c
        .send_signed(
            Method::GET,
            "/jobs?window=-1",
            "",
            Vec::<(&str, &str)>::new(),
        )
        .await
        .unwrap();
    assert_eq!(
        (response.status, response.error_body().unwrap().code),
        (422, ErrorCode::InvalidQuery)
    );
    let response = c
        .send_signed(
            Method::GET,
            "/jobs?since_id=nope",
            "",
            Vec::<(&str, &str)>::new(),
        )
        .await
        .unwrap();
    assert_eq!(response.error_body().unwrap().detail, "Invalid since_id");
    let response = c
        .send_signed(
            Method::GET,
            "/jobs?status=pending,bogus",
            "",
            Vec::<(&str, &str)>::new(),
        )
        .await
        .unwrap();
    assert_eq!(response.error_body().unwrap().code, ErrorCode::InvalidQuery);
    for path in ["/jobs/", "//jobs", "/jobs/./x"] {
        let response = c
            .send_signed(Method::GET, path, "", Vec::<(&str, &str)>::new())
            .await
            .unwrap();
        assert_eq!(response.status, 404, "{path}");
    }
    app.shutdown().await.unwrap();
}

#[tokio::test]
async fn idempotency_keys_by_body_or_header() {
    let app = TestApp::spawn().await;
    let request = JobRequest {
        idempotency_key: Some("run-1".into()),
        ..transcode()
    };
    let first = app.client.submit(&request).await.unwrap();
    let again = app.client.submit(&request).await.unwrap();
    assert!(!first.replayed && again.replayed);
    assert_eq!(first.job.job_id, again.job.job_id);
    let conflict = app
        .client
        .submit(&JobRequest {
            priority: 5,
            ..request.clone()
        })
        .await
        .unwrap_err();
    assert!(
        matches!(&conflict, client::Error::Api { status: 409, body, .. } if body.code == ErrorCode::IdempotencyConflict)
    );
    let body = serde_json::to_vec(&transcode()).unwrap();
    let by_header = app
        .client
        .send_signed(
            Method::POST,
            "/jobs/submit",
            body.clone(),
            [("idempotency-key", "run-1")],
        )
        .await
        .unwrap();
    assert_eq!(by_header.status, 200);
    assert_eq!(by_header.header("idempotent-replayed"), Some("true"));
    let mismatch = app
        .client
        .send_signed(
            Method::POST,
            "/jobs/submit",
            serde_json::to_vec(&request).unwrap(),
            [("idempotency-key", "run-2")],
        )
        .await
        .unwrap();
    assert_eq!(mismatch.error_body().unwrap().code, ErrorCode::InvalidBody);
    // Another requester's key is its own.
    let other = app.client_as("client02").submit(&request).await.unwrap();
    assert!(!other.replayed);
    app.shutdown().await.unwrap();
}

#[tokio::test]
async fn concurrent_submits_share_flushes() {
    let app = TestApp::spawn().await;
    let mut report = Vec::new();
    for clients in [1usize, 8, 64] {
        let (flushes_before, waiters_before) = app.state.store.stats();
        let per_client = if clients == 1 { 50 } else { 400 / clients };
        let mut tasks = Vec::new();
        for _ in 0..clients {
            let c = app.client.clone();
            tasks.push(tokio::spawn(async move {
                for _ in 0..per_client {
                    c.submit(&transcode()).await.unwrap();
                }
            }));
        }
        for task in tasks {
            task.await.unwrap();
        }
        let (flushes, waiters) = app.state.store.stats();
        let submits = clients * per_client;
        let flushes = flushes - flushes_before;
        println!(
            "{clients:>2} concurrent clients: {submits} submits, {flushes} flushes, {:.2} submits per flush, {} waiters",
            submits as f64 / flushes as f64,
            waiters - waiters_before
        );
        report.push((clients, submits as f64 / flushes as f64));
    }
    assert!(
        report[0].1 <= 1.5,
        "one client at a time: about one flush per submit"
    );
    assert!(
        report[2].1 > 2.0,
        "64 concurrent clients share flushes: {report:?}"
    );
    app.shutdown().await.unwrap();
}

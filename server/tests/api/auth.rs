//! Authentication (auth.md §3–§5): upstream signatures verify, every failure is a 401 with its code, replays are
//! refused (submits answered idempotently), roles are enforced.

use client::{Method, SigningMode};
use protocol::ErrorCode;
use protocol::signing::{self, HmacKey};

use super::{TestApp, transcode};

fn code_of(response: &client::RawResponse) -> ErrorCode {
    response
        .error_body()
        .unwrap_or_else(|| panic!("an error body, got {}", response.status))
        .code
}

#[tokio::test]
async fn a_request_signed_as_upstream_signs_it_is_accepted() {
    let app = TestApp::spawn().await;
    let upstream = app.client.clone().with_signing(SigningMode::Upstream);
    let jobs = upstream.jobs_list(&Default::default()).await.unwrap();
    assert!(jobs.is_empty());
    // Exactly upstream's body spacing (Python json.dumps), signed without a nonce.
    let body = r#"{"binary_name": "ffprobe", "arguments": ["-v", "error", "-show_format", "$Media/in.mp4"], "paths": ["Media"], "working_directory": "$Media", "supported_transports": ["http_polling"], "monitor": true, "heartbeat_interval": null}"#;
    let response = upstream
        .send_signed(
            Method::POST,
            "/jobs/submit",
            body,
            [("content-type", "application/json")],
        )
        .await
        .unwrap();
    assert_eq!(
        response.status,
        200,
        "{:?}",
        String::from_utf8_lossy(&response.body)
    );
    let job: protocol::rest::JobRecord = response.json().unwrap();
    assert_eq!(job.binary_name, "ffprobe");
    assert_eq!(job.status, protocol::rest::JobStatus::Pending);
    assert!(job.monitor);
    app.shutdown().await.unwrap();
}

#[tokio::test]
async fn every_authentication_failure_is_a_401_with_its_code() {
    let app = TestApp::spawn().await;
    let c = &app.client;
    let now = client::unix_now();
    let unsigned = c
        .send_raw(Method::GET, "/jobs", "", Vec::<(&str, &str)>::new())
        .await
        .unwrap();
    assert_eq!(
        (unsigned.status, code_of(&unsigned)),
        (401, ErrorCode::AuthRequired)
    );
    assert_eq!(
        unsigned.error_body().unwrap().detail,
        "Authentication required"
    );

    let partial = c
        .send_raw(
            Method::GET,
            "/jobs",
            "",
            [("x-dffmpeg-client-id", "client01")],
        )
        .await
        .unwrap();
    assert_eq!(
        (partial.status, code_of(&partial)),
        (401, ErrorCode::AuthIncomplete)
    );

    let twice = c
        .send_signed(
            Method::GET,
            "/jobs",
            "",
            [("x-dffmpeg-client-id", "client01")],
        )
        .await
        .unwrap();
    assert_eq!(
        code_of(&twice),
        ErrorCode::AuthIncomplete,
        "an x-dffmpeg-* header twice"
    );

    let stranger = client::Client::new(&app.base, "nobody", HmacKey::generate()).unwrap();
    let unknown = stranger
        .send_signed(Method::GET, "/jobs", "", Vec::<(&str, &str)>::new())
        .await
        .unwrap();
    assert_eq!(
        (unknown.status, code_of(&unknown)),
        (401, ErrorCode::AuthUnknownClient)
    );
    assert_eq!(unknown.error_body().unwrap().detail, "Invalid user");

    let wrong_key = client::Client::new(&app.base, "client01", HmacKey::generate()).unwrap();
    let bad = wrong_key
        .send_signed(Method::GET, "/jobs", "", Vec::<(&str, &str)>::new())
        .await
        .unwrap();
    assert_eq!(
        (bad.status, code_of(&bad)),
        (401, ErrorCode::AuthBadSignature)
    );
    assert_eq!(bad.error_body().unwrap().detail, "Invalid HMAC signature");

    // Signed over one body, sent with another: the body hash differs.
    let headers = c
        .signed_headers(
            &Method::POST,
            "/jobs/submit",
            b"{}",
            now,
            Some(&signing::new_nonce()),
        )
        .unwrap();
    let tampered = c
        .send_raw(
            Method::POST,
            "/jobs/submit",
            r#"{"binary_name":"ffmpeg"}"#,
            headers.pairs(),
        )
        .await
        .unwrap();
    assert_eq!(code_of(&tampered), ErrorCode::AuthBadSignature);

    // 10 s past the window each way, from a fresh clock reading: a slow run must not drift back into the window.
    for skew in [-310, 310, -100_000] {
        let headers = c
            .signed_headers(
                &Method::GET,
                "/jobs",
                b"",
                client::unix_now() + skew,
                Some(&signing::new_nonce()),
            )
            .unwrap();
        let stale = c
            .send_raw(Method::GET, "/jobs", "", headers.pairs())
            .await
            .unwrap();
        assert_eq!(
            (stale.status, code_of(&stale)),
            (401, ErrorCode::AuthClockSkew),
            "skew {skew}"
        );
        assert_eq!(
            stale.error_body().unwrap().detail,
            "Request timestamp outside allowed window"
        );
    }
    for bad_timestamp in ["12.5", "+1795544691", "1e9", "abc", "99999999999999999999"] {
        let mut headers = c
            .signed_headers(&Method::GET, "/jobs", b"", now, None)
            .unwrap();
        headers.timestamp = bad_timestamp.to_owned();
        let response = c
            .send_raw(Method::GET, "/jobs", "", headers.pairs())
            .await
            .unwrap();
        assert_eq!(
            (response.status, code_of(&response)),
            (401, ErrorCode::AuthBadTimestamp),
            "{bad_timestamp}"
        );
    }
    let mut headers = c
        .signed_headers(&Method::GET, "/jobs", b"", now, None)
        .unwrap();
    headers.signature = "not base64".to_owned();
    let response = c
        .send_raw(Method::GET, "/jobs", "", headers.pairs())
        .await
        .unwrap();
    assert_eq!(code_of(&response), ErrorCode::AuthBadSignature);

    let faraway = app.client_as("faraway");
    let outside = faraway
        .send_signed(Method::GET, "/jobs", "", Vec::<(&str, &str)>::new())
        .await
        .unwrap();
    assert_eq!(
        (outside.status, code_of(&outside)),
        (401, ErrorCode::AuthIpNotAllowed)
    );
    assert_eq!(
        outside.error_body().unwrap().detail,
        "Client IP not allowed"
    );
    app.shutdown().await.unwrap();
}

#[tokio::test]
async fn replayed_mutations_are_refused_and_a_replayed_submit_gets_the_same_job() {
    let app = TestApp::spawn().await;
    let c = &app.client;
    let now = client::unix_now();
    let body = serde_json::to_vec(&transcode()).unwrap();
    let headers = c
        .signed_headers(&Method::POST, "/jobs/submit", &body, now, None)
        .unwrap();
    let first = c
        .send_raw(Method::POST, "/jobs/submit", body.clone(), headers.pairs())
        .await
        .unwrap();
    assert_eq!(first.status, 200);
    assert!(first.header("idempotent-replayed").is_none());
    let again = c
        .send_raw(Method::POST, "/jobs/submit", body.clone(), headers.pairs())
        .await
        .unwrap();
    assert_eq!(again.status, 200);
    assert_eq!(again.header("idempotent-replayed"), Some("true"));
    let a: protocol::rest::JobRecord = first.json().unwrap();
    let b: protocol::rest::JobRecord = again.json().unwrap();
    assert_eq!(a.job_id, b.job_id, "no second job");
    assert_eq!(c.jobs_list(&Default::default()).await.unwrap().len(), 1);

    let path = format!("/jobs/{}/client_heartbeat", a.job_id);
    let headers = c
        .signed_headers(&Method::POST, &path, b"", now, None)
        .unwrap();
    let first = c
        .send_raw(Method::POST, &path, "", headers.pairs())
        .await
        .unwrap();
    assert_eq!(first.status, 200);
    let replayed = c
        .send_raw(Method::POST, &path, "", headers.pairs())
        .await
        .unwrap();
    assert_eq!(
        (replayed.status, code_of(&replayed)),
        (401, ErrorCode::AuthReplayed)
    );
    assert_eq!(replayed.error_body().unwrap().detail, "Replayed request");

    let path = format!("/jobs/{}/cancel", a.job_id);
    let headers = c
        .signed_headers(&Method::POST, &path, b"", now, None)
        .unwrap();
    assert_eq!(
        c.send_raw(Method::POST, &path, "", headers.pairs())
            .await
            .unwrap()
            .status,
        200
    );
    let replayed = c
        .send_raw(Method::POST, &path, "", headers.pairs())
        .await
        .unwrap();
    assert_eq!(code_of(&replayed), ErrorCode::AuthReplayed);

    // A submit whose first request created no job is refused when repeated.
    let junk = b"{\"binary_name\":\"x264\"}".to_vec();
    let headers = c
        .signed_headers(&Method::POST, "/jobs/submit", &junk, now, None)
        .unwrap();
    let refused = c
        .send_raw(Method::POST, "/jobs/submit", junk.clone(), headers.pairs())
        .await
        .unwrap();
    assert_eq!(code_of(&refused), ErrorCode::UnsupportedBinary);
    let repeated = c
        .send_raw(Method::POST, "/jobs/submit", junk, headers.pairs())
        .await
        .unwrap();
    assert_eq!(code_of(&repeated), ErrorCode::AuthReplayed);
    // Reads are never replay-checked.
    let headers = c
        .signed_headers(&Method::GET, "/jobs", b"", now, None)
        .unwrap();
    assert_eq!(
        c.send_raw(Method::GET, "/jobs", "", headers.pairs())
            .await
            .unwrap()
            .status,
        200
    );
    assert_eq!(
        c.send_raw(Method::GET, "/jobs", "", headers.pairs())
            .await
            .unwrap()
            .status,
        200
    );
    app.shutdown().await.unwrap();
}

#[tokio::test]
async fn roles_are_enforced() {
    let app = TestApp::spawn().await;
    let worker = app.client_as("worker01");
    let err = worker.submit(&transcode()).await.unwrap_err();
    assert_eq!(err.code(), Some(ErrorCode::RoleNotAllowed));
    assert!(
        matches!(&err, client::Error::Api { status: 403, body, .. } if body.detail == "Role 'worker' may not submit jobs")
    );
    let err = worker.jobs_list(&Default::default()).await.unwrap_err();
    assert!(
        matches!(&err, client::Error::Api { status: 403, body, .. } if body.detail == "Role 'worker' may not list jobs")
    );
    let err = app
        .client
        .janitor(protocol::rest::JanitorAction::RunAll)
        .await
        .unwrap_err();
    assert!(
        matches!(&err, client::Error::Api { status: 403, body, .. } if body.detail == "Admin role required")
    );
    let accepted = app
        .admin
        .janitor(protocol::rest::JanitorAction::RunAll)
        .await
        .unwrap();
    assert_eq!(accepted.message, "Action accepted");
    // A job is visible to its requester and admins, not to another client.
    let job = app.client.submit(&transcode()).await.unwrap().job;
    let other = app.client_as("client02");
    let err = other.job_status(job.job_id).await.unwrap_err();
    assert!(
        matches!(&err, client::Error::Api { status: 403, body, .. } if body.detail == "No permission to job" && body.code == ErrorCode::PermissionDenied)
    );
    let err = other.cancel(job.job_id).await.unwrap_err();
    assert!(
        matches!(&err, client::Error::Api { status: 403, body, .. } if body.detail == "No permission to cancel job")
    );
    let err = other.client_heartbeat(job.job_id, None).await.unwrap_err();
    assert!(
        matches!(&err, client::Error::Api { status: 403, body, .. } if body.detail == "No permission to heartbeat for this job")
    );
    let err = other.logs(job.job_id, None, None).await.unwrap_err();
    assert!(
        matches!(&err, client::Error::Api { status: 403, body, .. } if body.detail == "No permission to view job logs")
    );
    assert_eq!(
        app.admin.job_status(job.job_id).await.unwrap().job_id,
        job.job_id
    );
    app.shutdown().await.unwrap();
}

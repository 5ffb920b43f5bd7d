//! The HTTP edge (limits-and-bad-input.md §3.1) and storage faults (§8): a slow head is closed without an answer
//! while others are served, a stalled body is `408`, and a failed flush answers `503 store_unavailable`, stops the
//! coordinator with an error, and loses nothing acknowledged before.

use std::ops::Bound;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use client::Method;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use dffmpeg_coordinator::app::{self, Application};
use dffmpeg_coordinator::config::Config;
use dffmpeg_coordinator::store::{Engine, EngineError, Entries, RawWrite, SledEngine, TreeName};
use protocol::ErrorCode;
use protocol::rest::JanitorAction;

use super::{TestApp, transcode};

#[tokio::test]
async fn a_slow_head_is_closed_silently_while_others_are_served() {
    let app =
        TestApp::spawn_with(|config| config.limits.header_read_timeout = Duration::from_secs(1))
            .await;
    let mut slow = TcpStream::connect(app.addr).await.unwrap();
    slow.write_all(b"GET /health HTTP/1.1\r\nHost: x\r\nX-Slow: ")
        .await
        .unwrap();
    // Meanwhile a signed request on a fresh connection is answered.
    assert!(app.client.jobs_list(&Default::default()).await.is_ok());
    let mut buffer = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(10), slow.read_to_end(&mut buffer)).await;
    assert!(read.is_ok(), "the slow connection was closed");
    assert!(
        buffer.is_empty(),
        "without a response: {:?}",
        String::from_utf8_lossy(&buffer)
    );
    app.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_stalled_body_gets_408() {
    let app =
        TestApp::spawn_with(|config| config.limits.request_timeout = Duration::from_secs(1)).await;
    let body = serde_json::to_vec(&transcode()).unwrap();
    let signed = app
        .client
        .signed_headers(
            &Method::POST,
            "/jobs/submit",
            &body,
            client::unix_now(),
            Some(&protocol::signing::new_nonce()),
        )
        .unwrap();
    let mut head = format!(
        "POST /jobs/submit HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (name, value) in signed.pairs() {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    head.push_str("\r\n");
    let mut stream = TcpStream::connect(app.addr).await.unwrap();
    stream.write_all(head.as_bytes()).await.unwrap();
    stream.write_all(&body[..10]).await.unwrap();
    let mut answer = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut answer))
        .await
        .expect("an answer")
        .unwrap();
    let text = String::from_utf8_lossy(&answer);
    assert!(text.starts_with("HTTP/1.1 408"), "{text}");
    assert!(text.contains(r#""code":"request_timeout""#), "{text}");
    assert!(text.contains("Request not received within 1 s"), "{text}");
    assert!(
        app.client
            .jobs_list(&Default::default())
            .await
            .unwrap()
            .is_empty(),
        "nothing was written"
    );
    app.shutdown().await.unwrap();
}

/// The sled engine with a switch that makes every flush fail.
#[derive(Debug)]
struct FailingFlush {
    inner: SledEngine,
    fail: Arc<AtomicBool>,
}

impl Engine for FailingFlush {
    fn apply(&self, writes: &[RawWrite]) -> Result<(), EngineError> {
        self.inner.apply(writes)
    }
    fn get(&self, tree: TreeName, key: &[u8]) -> Result<Option<Vec<u8>>, EngineError> {
        self.inner.get(tree, key)
    }
    fn range(
        &self,
        tree: TreeName,
        from: Bound<Vec<u8>>,
        to: Bound<Vec<u8>>,
        reverse: bool,
        limit: usize,
    ) -> Result<Entries, EngineError> {
        self.inner.range(tree, from, to, reverse, limit)
    }
    fn flush(&self) -> Result<(), EngineError> {
        if self.fail.load(Ordering::SeqCst) {
            return Err(EngineError::Io("injected: fsync failed (EIO)".into()));
        }
        self.inner.flush()
    }
    fn existed(&self) -> bool {
        self.inner.existed()
    }
}

#[tokio::test]
async fn a_failed_flush_answers_503_stops_the_coordinator_and_loses_nothing_acknowledged() {
    let dir = tempfile::tempdir().unwrap();
    let identities = super::add_identities(dir.path(), &super::STANDARD_IDENTITIES).await;
    let fail = Arc::new(AtomicBool::new(false));
    let config = Config::for_tests(dir.path());
    let switch = fail.clone();
    let mut tries = 0;
    let app = loop {
        let switch = switch.clone();
        match Application::build_with_engine(config.clone(), false, move |inner| {
            Arc::new(FailingFlush {
                inner,
                fail: switch,
            })
        })
        .await
        {
            Ok(app) => break app,
            Err(app::Error::Store(dffmpeg_coordinator::store::Error::Locked { .. }))
                if tries < 100 =>
            {
                tries += 1;
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            Err(err) => panic!("{err}"),
        }
    };
    let base = format!("http://{}", app.local_addr());
    let app_state = app.state();
    let (_signals, rx) = tokio::sync::mpsc::channel(1);
    let server = tokio::spawn(app.run(rx));
    let api = client::Client::new(&base, "client01", identities[0].key.clone()).unwrap();
    let acknowledged = api.submit(&transcode()).await.unwrap().job.job_id;
    // The janitor's startup pass asks for a flush too. An on-demand pass answers only after it, and its own flush
    // request is registered before the answer; the flush below covers both. From here nothing but the next submit
    // flushes (the janitor's next pass is an hour away, and no worker is connected).
    app_state.janitor.run(JanitorAction::RunAll).await.unwrap();
    app_state.store.flush().await.unwrap();
    drop(app_state); // it holds the store open
    fail.store(true, Ordering::SeqCst);
    let err = api.submit(&transcode()).await.unwrap_err();
    assert_eq!(err.code(), Some(ErrorCode::StoreUnavailable), "{err:?}");
    assert_eq!(err.status(), Some(503));
    let result = tokio::time::timeout(Duration::from_secs(15), server)
        .await
        .expect("the coordinator stops")
        .unwrap();
    assert!(matches!(result, Err(app::Error::StoreFailed)), "{result:?}");
    let opened = super::open_stopped_store(dir.path()).await;
    assert!(opened.unclean, "no clean-stop marker after a failed flush");
    assert!(
        opened.store.job(acknowledged).unwrap().is_some(),
        "the acknowledged job survived"
    );
}

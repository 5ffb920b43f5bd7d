//! Actor tests: the scheduler driven through its handle over a real store in a temp dir, with the flusher running.

use std::time::Duration;

use time::OffsetDateTime;
use tokio_util::sync::CancellationToken;

use super::*;
use crate::config::Config;
use crate::janitor::Rules;
use crate::store::Store;

struct Harness {
    handle: SchedulerHandle,
    store: Store,
    hub: EventHub,
    waits: WaitBoard,
    stop: CancellationToken,
    _dir: tempfile::TempDir,
}

fn settings(dir: &std::path::Path) -> Arc<Settings> {
    let mut config = Config::for_tests(dir);
    config.limits.max_pending_jobs = 3;
    Arc::new(Settings::from_config(&config, false))
}

impl Harness {
    /// Submits a job (monitored or not) and returns its id.
    async fn submit_id(&self, monitor: bool) -> JobId {
        self.handle
            .submit(job(None, monitor), soon())
            .await
            .unwrap()
            .record
            .job_id
    }
}

async fn start() -> Harness {
    let dir = tempfile::tempdir().unwrap();
    let opened = Store::open(dir.path(), 8 << 20).unwrap();
    let stop = CancellationToken::new();
    tokio::spawn(opened.flusher.run(stop.clone()));
    let hub = EventHub::new();
    let waits = WaitBoard::default();
    let (handle, scheduler) = new(
        opened.store.clone(),
        hub.clone(),
        waits.clone(),
        settings(dir.path()),
        Vec::new(),
        Vec::new(),
        OffsetDateTime::now_utc(),
    );
    tokio::spawn(scheduler.run(stop.clone()));
    Harness {
        handle,
        store: opened.store,
        hub,
        waits,
        stop,
        _dir: dir,
    }
}

fn job(key: Option<&str>, monitor: bool) -> ValidJob {
    let mut job = ValidJob {
        requester: "client01".into(),
        binary: "ffmpeg".into(),
        arguments: vec!["-i".into(), "$Media/in.mp4".into(), "out.mp4".into()],
        paths: vec!["Media".into()],
        working_directory: Some("$Media".into()),
        monitor,
        heartbeat_interval: 5,
        priority: 0,
        idempotency_key: key.map(str::to_owned),
        stdin: false,
        fingerprint: [0; 32],
        replay: None,
    };
    job.fingerprint = crate::http::fingerprint(&job);
    job
}

fn soon() -> Instant {
    Instant::now() + Duration::from_secs(5)
}

#[tokio::test]
async fn a_submit_is_stored_pending_with_a_wait_reason_and_its_event_published() {
    let h = start().await;
    let submitted = h.handle.submit(job(None, false), soon()).await.unwrap();
    assert!(!submitted.replayed);
    assert_eq!(submitted.record.status, JobStatus::Pending);
    assert_eq!(
        submitted.record.wait_reason.as_deref(),
        Some("no_worker_online")
    );
    let stored = h.store.job(submitted.record.job_id).unwrap().unwrap();
    assert_eq!(stored.status, JobStatus::Pending);
    let events = h.store.events(stored.id, None, None, 10).unwrap();
    assert_eq!(events.len(), 1, "the pending status event");
    assert_eq!(
        h.hub.durable_floor(stored.id),
        None,
        "released after the flush"
    );
    assert_eq!(
        h.waits.wait_of(&stored).unwrap().reason.as_str(),
        "no_worker_online"
    );
    h.stop.cancel();
}

#[tokio::test]
async fn idempotency_keys_replay_or_conflict() {
    let h = start().await;
    let first = h
        .handle
        .submit(job(Some("k1"), false), soon())
        .await
        .unwrap();
    let again = h
        .handle
        .submit(job(Some("k1"), false), soon())
        .await
        .unwrap();
    assert!(again.replayed);
    assert_eq!(again.record.job_id, first.record.job_id);
    let mut different = job(Some("k1"), false);
    different.arguments.push("-y".into());
    different.fingerprint = crate::http::fingerprint(&different);
    assert!(matches!(
        h.handle.submit(different, soon()).await,
        Err(Error::IdempotencyConflict)
    ));
    assert_eq!(h.handle.counts().await.unwrap(), (1, 1));
    h.stop.cancel();
}

#[tokio::test]
async fn the_queue_has_a_cap() {
    let h = start().await;
    for _ in 0..3 {
        h.handle.submit(job(None, false), soon()).await.unwrap();
    }
    assert!(matches!(
        h.handle.submit(job(None, false), soon()).await,
        Err(Error::QueueFull)
    ));
    h.stop.cancel();
}

#[tokio::test]
async fn cancel_of_a_pending_job_is_immediate_and_final() {
    let h = start().await;
    let submitted = h.handle.submit(job(None, false), soon()).await.unwrap();
    let id = submitted.record.job_id;
    let by = Canceler {
        identity: "client01".into(),
        as_admin: false,
    };
    assert_eq!(
        h.handle.cancel(id, by.clone(), None).await.unwrap(),
        CancelOutcome::Canceled
    );
    let stored = h.store.job(id).unwrap().unwrap();
    assert_eq!(stored.status, JobStatus::Canceled);
    assert_eq!(stored.reason.as_deref(), Some("canceled_by_requester"));
    assert!(stored.finished_at.is_some());
    assert_eq!(
        h.handle.cancel(id, by, None).await.unwrap(),
        CancelOutcome::AlreadyFinished
    );
    assert_eq!(h.handle.counts().await.unwrap(), (0, 0));
    h.stop.cancel();
}

#[tokio::test]
async fn janitor_fails_unplaceable_classes_after_the_pending_timeout() {
    let h = start().await;
    let id = h.submit_id(false).await;
    let now = OffsetDateTime::now_utc();
    let all = Rules::of(protocol::rest::JanitorAction::CleanJobs);
    let summary = h
        .handle
        .janitor(all, now + time::Duration::seconds(20))
        .await
        .unwrap();
    assert_eq!(summary.get("jobs_unplaceable"), None);
    assert_eq!(h.store.job(id).unwrap().unwrap().status, JobStatus::Pending);
    let summary = h
        .handle
        .janitor(all, now + time::Duration::seconds(31))
        .await
        .unwrap();
    assert_eq!(summary.get("jobs_unplaceable"), Some(&1));
    h.store.flush().await.unwrap();
    let stored = h.store.job(id).unwrap().unwrap();
    assert_eq!(stored.status, JobStatus::Failed);
    assert_eq!(stored.reason.as_deref(), Some("no_fitting_worker"));
    assert_eq!(
        stored.reason_detail.as_deref(),
        Some("no worker is connected")
    );
    h.stop.cancel();
}

#[tokio::test]
async fn a_silent_monitoring_client_gets_its_pending_job_canceled() {
    let h = start().await;
    let watched = h.submit_id(true).await;
    let unwatched = h.submit_id(false).await;
    let now = OffsetDateTime::now_utc();
    let rules = Rules::of(protocol::rest::JanitorAction::CleanJobs);
    let summary = h
        .handle
        .janitor(rules, now + time::Duration::seconds(10))
        .await
        .unwrap();
    assert_eq!(summary.get("clients_gone"), None, "12.5 s not reached");
    let before = h
        .store
        .job(watched)
        .unwrap()
        .unwrap()
        .client_last_seen
        .unwrap();
    h.handle
        .client_heartbeat(watched, Some(true), soon())
        .await
        .unwrap();
    assert!(
        h.store
            .job(watched)
            .unwrap()
            .unwrap()
            .client_last_seen
            .unwrap()
            >= before,
        "the heartbeat is recorded"
    );
    let summary = h
        .handle
        .janitor(rules, now + time::Duration::seconds(20))
        .await
        .unwrap();
    assert_eq!(summary.get("clients_gone"), Some(&1));
    h.store.flush().await.unwrap();
    let stored = h.store.job(watched).unwrap().unwrap();
    assert_eq!(
        (stored.status, stored.reason.as_deref()),
        (JobStatus::Canceled, Some("client_gone"))
    );
    assert_eq!(
        h.store.job(unwatched).unwrap().unwrap().status,
        JobStatus::Pending
    );
    h.stop.cancel();
}

#[tokio::test]
async fn an_open_follow_stream_keeps_a_monitored_job_alive() {
    let h = start().await;
    let id = h.submit_id(true).await;
    h.handle.follower_seen(id, StreamChange::Opened).await;
    let now = OffsetDateTime::now_utc();
    let rules = Rules::of(protocol::rest::JanitorAction::CleanJobs);
    let summary = h
        .handle
        .janitor(rules, now + time::Duration::seconds(25))
        .await
        .unwrap();
    assert_eq!(summary.get("clients_gone"), None);
    h.handle.follower_seen(id, StreamChange::Closed).await;
    let summary = h
        .handle
        .janitor(rules, now + time::Duration::seconds(25))
        .await
        .unwrap();
    assert_eq!(summary.get("clients_gone"), Some(&1));
    h.stop.cancel();
}

#[tokio::test]
async fn event_ids_increase_per_job_and_survive_a_reload() {
    let h = start().await;
    let id = h.submit_id(false).await;
    let record = h.store.job(id).unwrap().unwrap();
    let last = record.last_event_id.unwrap();
    let (handle, scheduler) = new(
        h.store.clone(),
        h.hub.clone(),
        h.waits.clone(),
        settings(h._dir.path()),
        vec![record],
        Vec::new(),
        OffsetDateTime::now_utc(),
    );
    let stop = CancellationToken::new();
    tokio::spawn(scheduler.run(stop.clone()));
    let by = Canceler {
        identity: "admin".into(),
        as_admin: true,
    };
    assert_eq!(
        handle.cancel(id, by, None).await.unwrap(),
        CancelOutcome::Canceled
    );
    let events = h.store.events(id, None, None, 10).unwrap();
    assert_eq!(events.len(), 2);
    assert!(events[1].0 > last);
    assert_eq!(
        h.store.job(id).unwrap().unwrap().reason.as_deref(),
        Some("canceled_by_admin")
    );
    stop.cancel();
    h.stop.cancel();
}

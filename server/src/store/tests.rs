//! Store tests on a real sled database in a temp dir.

use super::*;
use protocol::UlidGenerator;
use records::{EventV1, JobRecordV1, micros};
use std::sync::atomic::AtomicUsize;

pub(crate) fn sample_job(id: JobId, requester: &str, status: JobStatus) -> JobRecord {
    let now = micros(time::OffsetDateTime::now_utc());
    JobRecordV1 {
        id,
        requester: requester.to_owned(),
        binary: "ffmpeg".into(),
        arguments: vec!["-i".into(), "$Media/in.mp4".into()],
        paths: vec!["Media".into()],
        working_directory: None,
        monitor: false,
        heartbeat_interval: 5,
        priority: 0,
        idempotency_key: None,
        stdin: false,
        status,
        attempt: 0,
        runs: 0,
        rejections: 0,
        worker_id: None,
        created_at: now,
        last_update: now,
        started_at: None,
        finished_at: if status.is_terminal() {
            Some(now)
        } else {
            None
        },
        worker_last_seen: None,
        client_last_seen: Some(now),
        exit_code: None,
        reason: None,
        reason_detail: None,
        attempt_stdout_bytes: 0,
        output_bytes: 0,
        output_truncated: false,
        next_output_seq: 0,
        attempt_chunks: 0,
        stdin_forwarded: false,
        progress: None,
        finished_report: None,
        last_event_id: None,
    }
}

fn open(dir: &Path) -> Opened {
    try_open(dir).unwrap()
}

/// Opens a store whose last handle may have just dropped: sled releases its lock from a background thread, so a
/// `Locked` answer is retried briefly; any other outcome is returned.
fn try_open(dir: &Path) -> Result<Opened, Error> {
    for _ in 0..100 {
        match Store::open(dir, 8 << 20) {
            Err(Error::Locked { .. }) => {}
            other => return other,
        }
        #[allow(clippy::disallowed_methods)] // a plain test thread, not a runtime worker
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    panic!("the store stayed locked");
}

#[tokio::test]
async fn reopen_finds_committed_jobs_and_tracks_clean_stops() {
    let dir = tempfile::tempdir().unwrap();
    let id = JobId(Ulid::generate());
    {
        let opened = open(dir.path());
        assert!(opened.created);
        assert!(!opened.unclean);
        let stop = CancellationToken::new();
        let flusher = tokio::spawn(opened.flusher.run(stop.clone()));
        let mut batch = Batch::new();
        batch.put_job(&sample_job(id, "client01", JobStatus::Pending), None);
        opened.store.commit_durable(batch).await.unwrap();
        stop.cancel();
        flusher.await.unwrap();
        // dropped without `mark_clean_stop`: the next open reports an unclean stop
    }
    {
        let opened = open(dir.path());
        assert!(!opened.created);
        assert!(opened.unclean, "no clean_stop marker: unclean");
        assert_eq!(
            opened.store.job(id).unwrap().unwrap().status,
            JobStatus::Pending
        );
        assert_eq!(
            opened
                .store
                .jobs_with_status(JobStatus::Pending)
                .unwrap()
                .len(),
            1
        );
        opened.store.mark_clean_stop().unwrap();
    }
    let opened = open(dir.path());
    assert!(!opened.unclean, "clean_stop was written");
    drop(opened);
    let opened = open(dir.path());
    assert!(opened.unclean, "every open removes the marker durably");
}

#[test]
fn a_second_open_is_locked() {
    let dir = tempfile::tempdir().unwrap();
    let _first = open(dir.path());
    let err = Store::open(dir.path(), 8 << 20).unwrap_err();
    assert!(matches!(err, Error::Locked { .. }), "{err}");
    assert!(
        err.to_string().contains("is in use by another process"),
        "{err}"
    );
}

#[test]
fn a_newer_schema_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    {
        let opened = open(dir.path());
        let mut batch = Batch::new();
        batch.put_meta(META_SCHEMA, encode(&2u32));
        opened.store.commit(batch).unwrap();
        opened.store.mark_clean_stop().unwrap();
    }
    let err = try_open(dir.path()).unwrap_err();
    assert_eq!(
        err.to_string(),
        "database was written by a newer dffmpeg (schema 2); this build reads schema 1"
    );
}

#[test]
fn status_changes_move_index_entries_and_startup_repairs_stale_ones() {
    let dir = tempfile::tempdir().unwrap();
    let id = JobId(Ulid::generate());
    {
        let opened = open(dir.path());
        let mut job = sample_job(id, "client01", JobStatus::Pending);
        let mut batch = Batch::new();
        batch.put_job(&job, None);
        opened.store.commit(batch).unwrap();
        job.status = JobStatus::Assigned;
        let mut batch = Batch::new();
        batch.put_job(&job, Some(JobStatus::Pending));
        opened.store.commit(batch).unwrap();
        assert!(
            opened
                .store
                .jobs_with_status(JobStatus::Pending)
                .unwrap()
                .is_empty()
        );
        assert_eq!(
            opened
                .store
                .jobs_with_status(JobStatus::Assigned)
                .unwrap()
                .len(),
            1
        );
        // A stale index entry, as a crash between unrelated writes could never leave but a bug might.
        let mut batch = Batch::new();
        batch.put(
            TreeName::JobsByStatus,
            status_key(JobStatus::Running, id),
            Vec::new(),
        );
        opened.store.commit(batch).unwrap();
        opened.store.shared.engine.flush().unwrap();
    }
    let opened = open(dir.path());
    assert_eq!(opened.repaired, 1);
    assert!(
        opened
            .store
            .jobs_with_status(JobStatus::Running)
            .unwrap()
            .is_empty()
    );
    assert_eq!(
        opened
            .store
            .jobs_with_status(JobStatus::Assigned)
            .unwrap()
            .len(),
        1
    );
}

#[test]
fn events_come_back_in_id_order_after_a_cursor() {
    let dir = tempfile::tempdir().unwrap();
    let opened = open(dir.path());
    let job = JobId(Ulid::generate());
    let other = JobId(Ulid::generate());
    let mut generator = UlidGenerator::new();
    let ids: Vec<EventId> = (0..5).map(|_| EventId(generator.next_id())).collect();
    let mut batch = Batch::new();
    for (n, id) in ids.iter().enumerate() {
        let event = EventV1::Notice {
            time: 0,
            attempt: 1,
            code: "x".into(),
            message: n.to_string(),
        };
        batch.put_event(job, *id, &event);
        batch.put_event(other, *id, &event);
    }
    opened.store.commit(batch).unwrap();
    let all = opened.store.events(job, None, None, usize::MAX).unwrap();
    assert_eq!(all.iter().map(|(id, _)| *id).collect::<Vec<_>>(), ids);
    let after = opened.store.events(job, Some(ids[1]), None, 2).unwrap();
    assert_eq!(
        after.iter().map(|(id, _)| *id).collect::<Vec<_>>(),
        ids[2..4].to_vec()
    );
    let before = opened
        .store
        .events(job, None, Some(ids[2]), usize::MAX)
        .unwrap();
    assert_eq!(before.len(), 2);
    let last = opened.store.last_events(job, None, 2, |_| true).unwrap();
    assert_eq!(
        last.iter().map(|(id, _)| *id).collect::<Vec<_>>(),
        ids[3..5].to_vec()
    );
}

#[test]
fn requester_listing_pages_newest_first() {
    let dir = tempfile::tempdir().unwrap();
    let opened = open(dir.path());
    let mut generator = UlidGenerator::new();
    let ids: Vec<JobId> = (0..600).map(|_| JobId(generator.next_id())).collect();
    let mut batch = Batch::new();
    for id in &ids {
        batch.put_job(&sample_job(*id, "alice", JobStatus::Pending), None);
    }
    batch.put_job(
        &sample_job(JobId(generator.next_id()), "alice2", JobStatus::Pending),
        None,
    );
    opened.store.commit(batch).unwrap();
    let newest = opened
        .store
        .jobs_of_requester("alice", None, 1000, |_| true)
        .unwrap();
    assert_eq!(newest.len(), 600, "alice2 is not alice");
    assert_eq!(newest[0].id, ids[599]);
    let page = opened
        .store
        .jobs_of_requester("alice", Some(ids[300]), 10, |_| true)
        .unwrap();
    assert_eq!(
        page.iter().map(|job| job.id).collect::<Vec<_>>(),
        ids[290..300].iter().rev().copied().collect::<Vec<_>>()
    );
    let odd = opened
        .store
        .jobs_of_requester("alice", None, 5, |job| job.id.to_bytes()[15] % 2 == 1)
        .unwrap();
    assert_eq!(odd.len(), 5);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_waiters_share_flushes() {
    let dir = tempfile::tempdir().unwrap();
    let opened = open(dir.path());
    let store = opened.store.clone();
    let stop = CancellationToken::new();
    let flusher = tokio::spawn(opened.flusher.run(stop.clone()));
    let released = Arc::new(AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for _ in 0..64 {
        let store = store.clone();
        let released = released.clone();
        tasks.push(tokio::spawn(async move {
            for _ in 0..10 {
                let mut batch = Batch::new();
                batch.put_job(
                    &sample_job(JobId(Ulid::generate()), "c", JobStatus::Pending),
                    None,
                );
                store.commit_durable(batch).await.unwrap();
                released.fetch_add(1, Ordering::SeqCst);
            }
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
    assert_eq!(released.load(Ordering::SeqCst), 640);
    let (flushes, waiters) = store.stats();
    assert_eq!(waiters, 640);
    assert!(
        flushes < 640,
        "group commit: {flushes} flushes for 640 waiters"
    );
    stop.cancel();
    flusher.await.unwrap();
}

#[derive(Debug)]
struct FailingFlush(SledEngine, AtomicBool);

impl Engine for FailingFlush {
    fn apply(&self, writes: &[RawWrite]) -> Result<(), EngineError> {
        self.0.apply(writes)
    }
    fn get(&self, tree: TreeName, key: &[u8]) -> Result<Option<Vec<u8>>, EngineError> {
        self.0.get(tree, key)
    }
    fn range(
        &self,
        tree: TreeName,
        from: Bound<Vec<u8>>,
        to: Bound<Vec<u8>>,
        reverse: bool,
        limit: usize,
    ) -> Result<Entries, EngineError> {
        self.0.range(tree, from, to, reverse, limit)
    }
    fn flush(&self) -> Result<(), EngineError> {
        if self.1.load(Ordering::SeqCst) {
            Err(EngineError::Io("injected fsync failure".into()))
        } else {
            self.0.flush()
        }
    }
    fn existed(&self) -> bool {
        self.0.existed()
    }
}

#[tokio::test]
async fn a_failed_flush_is_fatal_and_never_retried() {
    let dir = tempfile::tempdir().unwrap();
    let engine = Arc::new(FailingFlush(
        SledEngine::open(dir.path(), 8 << 20).unwrap(),
        AtomicBool::new(false),
    ));
    let opened = Store::open_engine(engine.clone(), dir.path()).unwrap();
    let store = opened.store.clone();
    let stop = CancellationToken::new();
    let flusher = tokio::spawn(opened.flusher.run(stop.clone()));
    engine.1.store(true, Ordering::SeqCst);
    let mut batch = Batch::new();
    batch.put_job(
        &sample_job(JobId(Ulid::generate()), "c", JobStatus::Pending),
        None,
    );
    assert!(matches!(
        store.commit_durable(batch).await,
        Err(Error::Unavailable)
    ));
    assert!(store.is_failed());
    assert!(store.fatal().is_cancelled());
    engine.1.store(false, Ordering::SeqCst);
    let mut batch = Batch::new();
    batch.put_job(
        &sample_job(JobId(Ulid::generate()), "c", JobStatus::Pending),
        None,
    );
    assert!(
        matches!(store.commit(batch), Err(Error::Unavailable)),
        "no write after a failed flush"
    );
    assert_eq!(
        store.flush().await,
        Err(Unavailable),
        "a later flush never succeeds"
    );
    stop.cancel();
    flusher.await.unwrap();
}

#[test]
fn replay_entries_are_found_by_expiry() {
    let dir = tempfile::tempdir().unwrap();
    let opened = open(dir.path());
    let mut batch = Batch::new();
    for (n, expires_at) in [100i64, 200, 300].into_iter().enumerate() {
        batch.put_replay(&ReplayRecord {
            client_id: "c".into(),
            signature: [n as u8; 32],
            expires_at,
            job_id: None,
        });
    }
    opened.store.commit(batch).unwrap();
    assert_eq!(opened.store.replay_entries_from(200).unwrap().len(), 2);
    let expired = opened.store.replay_entries_expired(250, 10).unwrap();
    assert_eq!(expired.len(), 2);
    let mut batch = Batch::new();
    for entry in &expired {
        batch.delete_replay(entry);
    }
    opened.store.commit(batch).unwrap();
    assert_eq!(
        opened.store.replay_entries_expired(1000, 10).unwrap().len(),
        1
    );
}

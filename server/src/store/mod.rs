//! The store: every piece of coordinator state that outlives a process, in domain terms (jobs, events, identities,
//! workers, idempotency and replay entries), over an `Engine` (only sled is built). It owns the durability rule of
//! storage.md §2 through the group-commit `Flusher`: writers apply a change (not durable yet) and register a
//! follow-up; the flusher runs one flush at a time and releases every follow-up the flush covers, in order.
//! It knows nothing of HTTP, sessions or scheduling.

mod engine;
pub mod records;

use std::ops::Bound;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use protocol::rest::JobStatus;
use protocol::{EventId, JobId, Ulid};

pub use engine::{Engine, EngineError, Entries, RawWrite, SledEngine, TreeName};
use records::{
    Event, IdempotencyV1, Identity, JobRecord, ReplayRecord, StoredEvent, StoredIdempotency,
    StoredIdentity, StoredJob, StoredReplay, StoredWorker, WorkerRecord, status_byte,
};

/// The schema this build reads and writes (storage.md §4.1).
pub const SCHEMA_VERSION: u32 = 1;

/// Store failures, naming what was being read or written.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("database {} is in use by another process (a running coordinator or dffmpeg-admin)", path.display())]
    Locked { path: PathBuf },
    #[error("{}: {source}", path.display())]
    Open {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "database was written by a newer dffmpeg (schema {found}); this build reads schema {supported}"
    )]
    SchemaTooNew { found: u32, supported: u32 },
    #[error("record {key} in tree {tree} does not decode: {detail}; see \"Backups\" in the README")]
    Corrupt {
        tree: &'static str,
        key: String,
        detail: String,
    },
    #[error("{0}")]
    Engine(String),
    #[error("storage unavailable: an earlier flush failed")]
    Unavailable,
    #[error("{0}")]
    Inconsistent(String),
}

impl From<EngineError> for Error {
    fn from(err: EngineError) -> Error {
        match err {
            EngineError::Locked { path } => Error::Locked { path },
            EngineError::Open { path, source } => Error::Open { path, source },
            other => Error::Engine(other.to_string()),
        }
    }
}

/// The outcome handed to follow-ups: `Err` when the flush covering them failed.
pub type FlushResult = Result<(), Unavailable>;

/// The flush covering a change failed: the change is not acknowledged.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("storage unavailable")]
pub struct Unavailable;

/// Work to release once the change it follows is durable (HTTP replies, frames, events).
pub type FollowUp = Box<dyn FnOnce(FlushResult) + Send + 'static>;

/// Counters of the group commit, for metrics and the closing notes' "submits per flush".
#[derive(Debug, Default)]
pub struct FlushStats {
    pub flushes: AtomicU64,
    pub waiters: AtomicU64,
}

#[derive(Debug)]
struct Shared {
    engine: Arc<dyn Engine>,
    path: PathBuf,
    failed: AtomicBool,
    /// Cancelled when a flush fails: the coordinator must stop (exit 1).
    fatal: CancellationToken,
    stats: FlushStats,
    flusher: mpsc::UnboundedSender<FollowUp>,
}

/// A cheap-to-clone handle on the store.
#[derive(Debug, Clone)]
pub struct Store {
    shared: Arc<Shared>,
}

/// The group-commit flusher: spawn `run` once; it ends when `stop` is cancelled, after releasing every waiter.
#[derive(Debug)]
pub struct Flusher {
    shared: Arc<Shared>,
    // Unbounded on purpose: every sender is bounded upstream (the scheduler inbox, one command per session, the
    // HTTP admission deadline), and the flusher must never make the scheduler wait.
    rx: mpsc::UnboundedReceiver<FollowUp>,
}

/// What opening found.
#[derive(Debug)]
pub struct Opened {
    pub store: Store,
    pub flusher: Flusher,
    /// The database existed and was not closed cleanly.
    pub unclean: bool,
    /// The database was created by this open.
    pub created: bool,
    /// Index entries rebuilt by the consistency check.
    pub repaired: usize,
}

/// A batch of changes applied atomically by [`Store::commit`].
#[derive(Debug, Default)]
pub struct Batch {
    writes: Vec<RawWrite>,
}

const META_SCHEMA: &[u8] = b"schema_version";
const META_CREATED: &[u8] = b"created_at";
const META_INSTANCE: &[u8] = b"instance_id";
const META_CLEAN_STOP: &[u8] = b"clean_stop";

fn encode<T: Serialize>(value: &T) -> Vec<u8> {
    // Records are plain structs and enums: encoding cannot fail.
    rmp_serde::to_vec_named(value).expect("stored records always encode")
}

fn decode<T: DeserializeOwned>(tree: TreeName, key: &[u8], bytes: &[u8]) -> Result<T, Error> {
    rmp_serde::from_slice(bytes).map_err(|err| Error::Corrupt {
        tree: tree.as_str(),
        key: printable_key(key),
        detail: err.to_string(),
    })
}

fn printable_key(key: &[u8]) -> String {
    if key.len() == 16 {
        return Ulid::from_bytes(key.try_into().unwrap_or([0; 16])).to_string();
    }
    key.iter()
        .map(|&b| {
            if b.is_ascii_graphic() {
                (b as char).to_string()
            } else {
                format!("\\x{b:02x}")
            }
        })
        .collect()
}

fn job_key(id: JobId) -> Vec<u8> {
    id.to_bytes().to_vec()
}

fn status_key(status: JobStatus, id: JobId) -> Vec<u8> {
    let mut key = Vec::with_capacity(17);
    key.push(status_byte(status));
    key.extend_from_slice(&id.to_bytes());
    key
}

fn requester_key(requester: &str, id: Option<JobId>) -> Vec<u8> {
    let mut key = Vec::with_capacity(requester.len() + 17);
    key.extend_from_slice(requester.as_bytes());
    key.push(0);
    if let Some(id) = id {
        key.extend_from_slice(&id.to_bytes());
    }
    key
}

fn finish_key(finished_at_us: i64, id: JobId) -> Vec<u8> {
    let ms = u64::try_from(finished_at_us.max(0) / 1_000).unwrap_or(0);
    let mut key = Vec::with_capacity(24);
    key.extend_from_slice(&ms.to_be_bytes());
    key.extend_from_slice(&id.to_bytes());
    key
}

fn event_key(job: JobId, event: EventId) -> Vec<u8> {
    let mut key = Vec::with_capacity(32);
    key.extend_from_slice(&job.to_bytes());
    key.extend_from_slice(&event.to_bytes());
    key
}

fn idempotency_key(requester: &str, key: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(requester.len() + key.len() + 1);
    out.extend_from_slice(requester.as_bytes());
    out.push(0);
    out.extend_from_slice(key.as_bytes());
    out
}

/// Replay keys lead with the expiry (seconds, big-endian) so expired entries are one range scan; ARCHITECTURE.md
/// records this departure from storage.md §4.2's `client id ‖ 0x00 ‖ signature`.
fn replay_key(entry: &ReplayRecord) -> Vec<u8> {
    let mut key = Vec::with_capacity(8 + entry.client_id.len() + 33);
    key.extend_from_slice(
        &u64::try_from(entry.expires_at.max(0))
            .unwrap_or(0)
            .to_be_bytes(),
    );
    key.extend_from_slice(entry.client_id.as_bytes());
    key.push(0);
    key.extend_from_slice(&entry.signature);
    key
}

/// The 16 ULID bytes at `offset` of an index or event key.
fn ulid_at(key: &[u8], offset: usize) -> Option<[u8; 16]> {
    key.get(offset..offset.checked_add(16)?)
        .and_then(|bytes| <[u8; 16]>::try_from(bytes).ok())
}

fn prefix_end(prefix: &[u8]) -> Bound<Vec<u8>> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xFF {
            end.push(last + 1);
            return Bound::Excluded(end);
        }
    }
    Bound::Unbounded
}

impl Batch {
    pub fn new() -> Batch {
        Batch::default()
    }

    pub fn is_empty(&self) -> bool {
        self.writes.is_empty()
    }

    fn put(&mut self, tree: TreeName, key: Vec<u8>, value: Vec<u8>) {
        self.writes.push(RawWrite {
            tree,
            key,
            value: Some(value),
        });
    }

    fn delete(&mut self, tree: TreeName, key: Vec<u8>) {
        self.writes.push(RawWrite {
            tree,
            key,
            value: None,
        });
    }

    /// Writes a job record and keeps its indexes: `previous` is the status currently indexed (`None` for a new
    /// job, which also gets its requester index).
    pub fn put_job(&mut self, record: &JobRecord, previous: Option<JobStatus>) {
        match previous {
            None => self.put(
                TreeName::JobsByRequester,
                requester_key(&record.requester, Some(record.id)),
                Vec::new(),
            ),
            Some(previous) if previous != record.status => {
                self.delete(TreeName::JobsByStatus, status_key(previous, record.id));
            }
            Some(_) => {}
        }
        if previous != Some(record.status) {
            self.put(
                TreeName::JobsByStatus,
                status_key(record.status, record.id),
                Vec::new(),
            );
            if record.status.is_terminal()
                && let Some(finished_at) = record.finished_at
            {
                self.put(
                    TreeName::JobsByFinish,
                    finish_key(finished_at, record.id),
                    Vec::new(),
                );
            }
        }
        self.put(
            TreeName::Jobs,
            job_key(record.id),
            encode(&StoredJob::V1(record.clone())),
        );
    }

    pub fn put_event(&mut self, job: JobId, id: EventId, event: &Event) {
        self.put(
            TreeName::Events,
            event_key(job, id),
            encode(&StoredEvent::V1(event.clone())),
        );
    }

    pub fn delete_event(&mut self, job: JobId, id: EventId) {
        self.delete(TreeName::Events, event_key(job, id));
    }

    pub fn put_idempotency(
        &mut self,
        requester: &str,
        key: &str,
        job_id: JobId,
        fingerprint: [u8; 32],
    ) {
        let value = encode(&StoredIdempotency::V1(IdempotencyV1 {
            job_id,
            fingerprint,
        }));
        self.put(
            TreeName::Idempotency,
            idempotency_key(requester, key),
            value,
        );
    }

    pub fn put_replay(&mut self, entry: &ReplayRecord) {
        self.put(
            TreeName::Replay,
            replay_key(entry),
            encode(&StoredReplay::V1(entry.clone())),
        );
    }

    pub fn delete_replay(&mut self, entry: &ReplayRecord) {
        self.delete(TreeName::Replay, replay_key(entry));
    }

    pub fn put_identity(&mut self, client_id: &str, identity: &Identity) {
        self.put(
            TreeName::Identities,
            client_id.as_bytes().to_vec(),
            encode(&StoredIdentity::V1(identity.clone())),
        );
    }

    pub fn delete_identity(&mut self, client_id: &str) {
        self.delete(TreeName::Identities, client_id.as_bytes().to_vec());
    }

    pub fn put_worker(&mut self, worker_id: &str, record: &WorkerRecord) {
        self.put(
            TreeName::Workers,
            worker_id.as_bytes().to_vec(),
            encode(&StoredWorker::V1(record.clone())),
        );
    }

    pub fn delete_worker(&mut self, worker_id: &str) {
        self.delete(TreeName::Workers, worker_id.as_bytes().to_vec());
    }

    /// Removes a terminal job's record and indexes (its events are deleted separately, see `Store::event_ids`).
    pub fn delete_job(&mut self, record: &JobRecord) {
        self.delete(TreeName::Jobs, job_key(record.id));
        self.delete(TreeName::JobsByStatus, status_key(record.status, record.id));
        self.delete(
            TreeName::JobsByRequester,
            requester_key(&record.requester, Some(record.id)),
        );
        if let Some(finished_at) = record.finished_at {
            self.delete(TreeName::JobsByFinish, finish_key(finished_at, record.id));
        }
        if let Some(key) = &record.idempotency_key {
            self.delete(
                TreeName::Idempotency,
                idempotency_key(&record.requester, key),
            );
        }
    }

    fn put_meta(&mut self, name: &[u8], value: Vec<u8>) {
        self.put(TreeName::Meta, name.to_vec(), value);
    }
}

impl Store {
    /// Opens the store in `dir` (created with mode 0700 if missing), checks the schema, handles `clean_stop`
    /// durably and runs the startup consistency checks (storage.md §5). Nothing is served before this returns.
    pub fn open(dir: &Path, cache_capacity_bytes: u64) -> Result<Opened, Error> {
        let engine = SledEngine::open(dir, cache_capacity_bytes)?;
        Store::open_engine(Arc::new(engine), dir)
    }

    /// Opens over any engine (tests wrap the sled engine to inject faults).
    pub fn open_engine(engine: Arc<dyn Engine>, dir: &Path) -> Result<Opened, Error> {
        #[allow(clippy::disallowed_methods)] // bounded upstream: see the comment on `Flusher::rx`
        let (tx, rx) = mpsc::unbounded_channel();
        let shared = Arc::new(Shared {
            engine,
            path: dir.to_path_buf(),
            failed: AtomicBool::new(false),
            fatal: CancellationToken::new(),
            stats: FlushStats::default(),
            flusher: tx,
        });
        let store = Store {
            shared: shared.clone(),
        };
        let engine = &store.shared.engine;
        let schema = engine.get(TreeName::Meta, META_SCHEMA)?;
        let created = schema.is_none();
        let mut unclean = false;
        let mut batch = Batch::new();
        match schema {
            None => {
                batch.put_meta(META_SCHEMA, encode(&SCHEMA_VERSION));
                batch.put_meta(
                    META_CREATED,
                    encode(&records::micros(time::OffsetDateTime::now_utc())),
                );
                batch.put_meta(META_INSTANCE, encode(&Ulid::generate().to_string()));
            }
            Some(bytes) => {
                let found: u32 = decode(TreeName::Meta, META_SCHEMA, &bytes)?;
                if found > SCHEMA_VERSION {
                    return Err(Error::SchemaTooNew {
                        found,
                        supported: SCHEMA_VERSION,
                    });
                }
                unclean = engine.get(TreeName::Meta, META_CLEAN_STOP)?.is_none();
            }
        }
        batch.delete(TreeName::Meta, META_CLEAN_STOP.to_vec());
        let repaired = store.check_indexes(&mut batch)?;
        store.shared.engine.apply(&batch.writes)?;
        store.shared.engine.flush()?;
        Ok(Opened {
            store,
            flusher: Flusher { shared, rx },
            unclean,
            created,
            repaired,
        })
    }

    /// Index entries that disagree with their record are rebuilt from the record; a record that cannot be decoded
    /// refuses the start.
    fn check_indexes(&self, batch: &mut Batch) -> Result<usize, Error> {
        let mut repaired = 0;
        for status in JobStatus::ALL
            .into_iter()
            .filter(|status| status.is_active())
        {
            let prefix = vec![status_byte(status)];
            for (key, _) in self.range(TreeName::JobsByStatus, &prefix)? {
                let Some(id) = ulid_at(&key, 1) else {
                    batch.delete(TreeName::JobsByStatus, key);
                    repaired += 1;
                    continue;
                };
                let id = JobId::from_bytes(id);
                match self.job(id)? {
                    Some(record) if record.status == status => {}
                    Some(record) => {
                        batch.delete(TreeName::JobsByStatus, key);
                        batch.put(
                            TreeName::JobsByStatus,
                            status_key(record.status, id),
                            Vec::new(),
                        );
                        repaired += 1;
                    }
                    None => {
                        batch.delete(TreeName::JobsByStatus, key);
                        repaired += 1;
                    }
                }
            }
        }
        for (key, value) in self.range(TreeName::Jobs, &[])? {
            let record: JobRecord = decode::<StoredJob>(TreeName::Jobs, &key, &value)?.into();
            if record.status.is_active()
                && self
                    .shared
                    .engine
                    .get(
                        TreeName::JobsByStatus,
                        &status_key(record.status, record.id),
                    )?
                    .is_none()
            {
                batch.put(
                    TreeName::JobsByStatus,
                    status_key(record.status, record.id),
                    Vec::new(),
                );
                repaired += 1;
            }
        }
        Ok(repaired)
    }

    fn range(&self, tree: TreeName, prefix: &[u8]) -> Result<Entries, Error> {
        Ok(self.shared.engine.range(
            tree,
            Bound::Included(prefix.to_vec()),
            prefix_end(prefix),
            false,
            usize::MAX,
        )?)
    }

    /// The directory of the store, as configured.
    pub fn path(&self) -> &Path {
        &self.shared.path
    }

    /// Applies a batch atomically. Not durable until a flush covers it: register follow-ups with `after_flush`.
    pub fn commit(&self, batch: Batch) -> Result<(), Error> {
        if self.is_failed() {
            return Err(Error::Unavailable);
        }
        if let Err(err) = self.shared.engine.apply(&batch.writes) {
            // A write that fails before its flush is a storage fault like a failed flush (limits §8).
            self.fail();
            return Err(err.into());
        }
        Ok(())
    }

    /// Runs `followup` once a flush that started after this call has completed (or failed).
    pub fn after_flush(&self, followup: FollowUp) {
        if self.is_failed() {
            followup(Err(Unavailable));
            return;
        }
        if let Err(mpsc::error::SendError(followup)) = self.shared.flusher.send(followup) {
            // The flusher has stopped (final shutdown): flush directly.
            let result = self.shared.engine.flush().map_err(|_| {
                self.fail();
                Unavailable
            });
            followup(result);
        }
    }

    /// Waits until everything written before this call is durable.
    pub async fn flush(&self) -> Result<(), Unavailable> {
        let (tx, rx) = oneshot::channel();
        self.after_flush(Box::new(move |result| {
            let _ = tx.send(result);
        }));
        rx.await.unwrap_or(Err(Unavailable))
    }

    /// Flushes directly, without the flusher task (startup, before it runs).
    pub async fn flush_now(&self) -> Result<(), Error> {
        let engine = self.shared.engine.clone();
        match tokio::task::spawn_blocking(move || engine.flush()).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(err)) => {
                self.fail();
                Err(err.into())
            }
            Err(_) => Err(Error::Unavailable),
        }
    }

    /// Commits and waits for the flush that covers the batch.
    pub async fn commit_durable(&self, batch: Batch) -> Result<(), Error> {
        self.commit(batch)?;
        self.flush().await.map_err(|_| Error::Unavailable)
    }

    /// Marks the store failed: every later write and waiter gets `Unavailable`, and the coordinator stops.
    fn fail(&self) {
        self.shared.failed.store(true, Ordering::SeqCst);
        self.shared.fatal.cancel();
    }

    pub fn is_failed(&self) -> bool {
        self.shared.failed.load(Ordering::SeqCst)
    }

    /// Cancelled when a flush or write failed.
    pub fn fatal(&self) -> CancellationToken {
        self.shared.fatal.clone()
    }

    pub fn stats(&self) -> (u64, u64) {
        (
            self.shared.stats.flushes.load(Ordering::Relaxed),
            self.shared.stats.waiters.load(Ordering::Relaxed),
        )
    }

    /// Writes `clean_stop` durably: the next open knows this stop was clean.
    pub fn mark_clean_stop(&self) -> Result<(), Error> {
        if self.is_failed() {
            return Err(Error::Unavailable);
        }
        let mut batch = Batch::new();
        batch.put_meta(
            META_CLEAN_STOP,
            encode(&records::micros(time::OffsetDateTime::now_utc())),
        );
        self.shared.engine.apply(&batch.writes)?;
        self.shared.engine.flush()?;
        Ok(())
    }

    /// Reads one key of `tree` (deep health check).
    pub fn probe(&self, tree: TreeName) -> Result<(), Error> {
        if self.is_failed() {
            return Err(Error::Unavailable);
        }
        self.shared
            .engine
            .range(tree, Bound::Unbounded, Bound::Unbounded, false, 1)?;
        Ok(())
    }

    pub fn job(&self, id: JobId) -> Result<Option<JobRecord>, Error> {
        let key = job_key(id);
        match self.shared.engine.get(TreeName::Jobs, &key)? {
            Some(bytes) => Ok(Some(
                decode::<StoredJob>(TreeName::Jobs, &key, &bytes)?.into(),
            )),
            None => Ok(None),
        }
    }

    /// The records named by index entries whose job id sits at `offset` of the key (entries whose record is gone
    /// are skipped).
    fn jobs_of_index(&self, entries: Entries, offset: usize) -> Result<Vec<JobRecord>, Error> {
        let mut out = Vec::new();
        for (key, _) in entries {
            if let Some(id) = ulid_at(&key, offset)
                && let Some(record) = self.job(JobId::from_bytes(id))?
            {
                out.push(record);
            }
        }
        Ok(out)
    }

    /// Every job with one of the given statuses, in id order.
    pub fn jobs_with_status(&self, status: JobStatus) -> Result<Vec<JobRecord>, Error> {
        self.jobs_of_index(
            self.range(TreeName::JobsByStatus, &[status_byte(status)])?,
            1,
        )
    }

    /// A requester's jobs, newest first, with ids below `before`, at most `limit`; `keep` filters without counting
    /// the refused ones against the limit.
    pub fn jobs_of_requester(
        &self,
        requester: &str,
        before: Option<JobId>,
        limit: usize,
        mut keep: impl FnMut(&JobRecord) -> bool,
    ) -> Result<Vec<JobRecord>, Error> {
        let prefix = requester_key(requester, None);
        let upper = match before {
            Some(before) => Bound::Excluded(requester_key(requester, Some(before))),
            None => prefix_end(&prefix),
        };
        let mut out = Vec::new();
        let mut cursor = upper;
        const PAGE: usize = 256;
        loop {
            let page = self.shared.engine.range(
                TreeName::JobsByRequester,
                Bound::Included(prefix.clone()),
                cursor.clone(),
                true,
                PAGE,
            )?;
            let full = page.len() == PAGE;
            for (key, _) in &page {
                let Some(id) = ulid_at(key, prefix.len()) else {
                    continue;
                };
                if let Some(record) = self.job(JobId::from_bytes(id))?
                    && keep(&record)
                {
                    out.push(record);
                    if out.len() >= limit {
                        return Ok(out);
                    }
                }
            }
            match page.last() {
                Some((key, _)) if full => cursor = Bound::Excluded(key.clone()),
                _ => return Ok(out),
            }
        }
    }

    /// A job's events with ids above `after` (and below `before`, if given), in id order, at most `limit`.
    pub fn events(
        &self,
        job: JobId,
        after: Option<EventId>,
        before: Option<EventId>,
        limit: usize,
    ) -> Result<Vec<(EventId, Event)>, Error> {
        let lower = match after {
            Some(after) => Bound::Excluded(event_key(job, after)),
            None => Bound::Included(job.to_bytes().to_vec()),
        };
        let upper = match before {
            Some(before) => Bound::Excluded(event_key(job, before)),
            None => prefix_end(&job.to_bytes()),
        };
        let mut out = Vec::new();
        for (key, value) in
            self.shared
                .engine
                .range(TreeName::Events, lower, upper, false, limit)?
        {
            let Some(id) = ulid_at(&key, 16) else {
                continue;
            };
            let event: Event = decode::<StoredEvent>(TreeName::Events, &key, &value)?.into();
            out.push((EventId::from_bytes(id), event));
        }
        Ok(out)
    }

    /// The newest `limit` events matching `keep` with ids above `after`, oldest first (for `logs?limit=`).
    pub fn last_events(
        &self,
        job: JobId,
        after: Option<EventId>,
        limit: usize,
        mut keep: impl FnMut(&Event) -> bool,
    ) -> Result<Vec<(EventId, Event)>, Error> {
        let lower = match after {
            Some(after) => Bound::Excluded(event_key(job, after)),
            None => Bound::Included(job.to_bytes().to_vec()),
        };
        let mut out = Vec::new();
        for (key, value) in self.shared.engine.range(
            TreeName::Events,
            lower,
            prefix_end(&job.to_bytes()),
            true,
            usize::MAX,
        )? {
            let Some(id) = ulid_at(&key, 16) else {
                continue;
            };
            let event: Event = decode::<StoredEvent>(TreeName::Events, &key, &value)?.into();
            if keep(&event) {
                out.push((EventId::from_bytes(id), event));
                if out.len() >= limit {
                    break;
                }
            }
        }
        out.reverse();
        Ok(out)
    }

    pub fn idempotency(&self, requester: &str, key: &str) -> Result<Option<IdempotencyV1>, Error> {
        let raw = idempotency_key(requester, key);
        match self.shared.engine.get(TreeName::Idempotency, &raw)? {
            Some(bytes) => {
                match decode::<StoredIdempotency>(TreeName::Idempotency, &raw, &bytes)? {
                    StoredIdempotency::V1(entry) => Ok(Some(entry)),
                }
            }
            None => Ok(None),
        }
    }

    /// Every record of a tree keyed by a name (identities, workers), newest shape.
    fn named<S: DeserializeOwned + Into<T>, T>(
        &self,
        tree: TreeName,
    ) -> Result<Vec<(String, T)>, Error> {
        let mut out = Vec::new();
        for (key, value) in self.range(tree, &[])? {
            let record: T = decode::<S>(tree, &key, &value)?.into();
            out.push((String::from_utf8_lossy(&key).into_owned(), record));
        }
        Ok(out)
    }

    pub fn identities(&self) -> Result<Vec<(String, Identity)>, Error> {
        self.named::<StoredIdentity, Identity>(TreeName::Identities)
    }

    pub fn identity(&self, client_id: &str) -> Result<Option<Identity>, Error> {
        match self
            .shared
            .engine
            .get(TreeName::Identities, client_id.as_bytes())?
        {
            Some(bytes) => Ok(Some(
                decode::<StoredIdentity>(TreeName::Identities, client_id.as_bytes(), &bytes)?
                    .into(),
            )),
            None => Ok(None),
        }
    }

    pub fn workers(&self) -> Result<Vec<(String, WorkerRecord)>, Error> {
        self.named::<StoredWorker, WorkerRecord>(TreeName::Workers)
    }

    /// Replay entries whose expiry is at or after `now_s` (Unix seconds).
    pub fn replay_entries_from(&self, now_s: i64) -> Result<Vec<ReplayRecord>, Error> {
        let from = u64::try_from(now_s.max(0))
            .unwrap_or(0)
            .to_be_bytes()
            .to_vec();
        let mut out = Vec::new();
        for (key, value) in self.shared.engine.range(
            TreeName::Replay,
            Bound::Included(from),
            Bound::Unbounded,
            false,
            usize::MAX,
        )? {
            match decode::<StoredReplay>(TreeName::Replay, &key, &value)? {
                StoredReplay::V1(entry) => out.push(entry),
            }
        }
        Ok(out)
    }

    /// Replay entries that expired before `now_s`, at most `limit`.
    pub fn replay_entries_expired(
        &self,
        now_s: i64,
        limit: usize,
    ) -> Result<Vec<ReplayRecord>, Error> {
        let to = u64::try_from(now_s.max(0))
            .unwrap_or(0)
            .to_be_bytes()
            .to_vec();
        let mut out = Vec::new();
        for (key, value) in self.shared.engine.range(
            TreeName::Replay,
            Bound::Unbounded,
            Bound::Excluded(to),
            false,
            limit,
        )? {
            match decode::<StoredReplay>(TreeName::Replay, &key, &value)? {
                StoredReplay::V1(entry) => out.push(entry),
            }
        }
        Ok(out)
    }

    /// Terminal jobs that finished before `before_us`, oldest first, at most `limit`.
    pub fn jobs_finished_before(
        &self,
        before_us: i64,
        limit: usize,
    ) -> Result<Vec<JobRecord>, Error> {
        let to = finish_key(before_us, JobId::from_bytes([0; 16]));
        let entries = self.shared.engine.range(
            TreeName::JobsByFinish,
            Bound::Unbounded,
            Bound::Excluded(to),
            false,
            limit,
        )?;
        self.jobs_of_index(entries, 8)
    }
}

impl Flusher {
    /// One flush at a time, no artificial delay: wait for the first waiter, take every waiter queued by then,
    /// flush, release them in order. Ends when `stop` is cancelled, after releasing the waiters still queued.
    pub async fn run(mut self, stop: CancellationToken) {
        loop {
            let first = tokio::select! {
                biased;
                next = self.rx.recv() => next,
                () = stop.cancelled() => None,
            };
            let Some(first) = first else { break };
            self.flush_round(first).await;
        }
        self.rx.close();
        while let Ok(first) = self.rx.try_recv() {
            self.flush_round(first).await;
        }
    }

    async fn flush_round(&mut self, first: FollowUp) {
        let mut waiters = vec![first];
        while let Ok(next) = self.rx.try_recv() {
            waiters.push(next);
        }
        let result = if self.shared.failed.load(Ordering::SeqCst) {
            Err(Unavailable)
        } else {
            let engine = self.shared.engine.clone();
            match tokio::task::spawn_blocking(move || engine.flush()).await {
                Ok(Ok(())) => Ok(()),
                Ok(Err(err)) => {
                    tracing::error!(error = %err, "store flush failed; the coordinator stops");
                    Err(Unavailable)
                }
                Err(_) => Err(Unavailable),
            }
        };
        if result.is_err() {
            self.shared.failed.store(true, Ordering::SeqCst);
            self.shared.fatal.cancel();
        }
        self.shared.stats.flushes.fetch_add(1, Ordering::Relaxed);
        self.shared
            .stats
            .waiters
            .fetch_add(waiters.len() as u64, Ordering::Relaxed);
        for waiter in waiters {
            waiter(result);
        }
    }
}

#[cfg(test)]
mod tests;

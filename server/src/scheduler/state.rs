//! The scheduler's in-memory state: active jobs, the pending queue grouped into placement classes, and workers.
//! Owned by the actor alone; nothing here is shared or locked.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};

use time::OffsetDateTime;

use protocol::JobId;
use protocol::rest::{WorkerInfo, WorkerStatus};

use super::SessionLink;
use super::plan::{ClassKey, JobFacts, QueueKey, WorkerSlots};
use crate::janitor::{JobView, WorkerView};
use crate::store::records::{JobRecord, WorkerRecord, from_micros};
use crate::views::class_key;

/// An active job: its record plus what only matters while it runs.
#[derive(Debug, Clone)]
pub struct ActiveJob {
    pub record: JobRecord,
    /// When the current status began (R4, R7); restarted at startup.
    pub since: OffsetDateTime,
    /// Workers not offered this job until the given time (J7, J8; R8).
    pub exclusions: Vec<(String, OffsetDateTime)>,
    /// The worker of the previous attempt, avoided while another candidate exists.
    pub previous_worker: Option<String>,
    /// Open follow streams of the requester (R6).
    pub open_streams: u32,
    /// R6 acted already (J11 is done once).
    pub client_gone_done: bool,
}

impl ActiveJob {
    pub fn new(record: JobRecord, now: OffsetDateTime) -> ActiveJob {
        ActiveJob {
            record,
            since: now,
            exclusions: Vec::new(),
            previous_worker: None,
            open_streams: 0,
            client_gone_done: false,
        }
    }

    pub fn view<'a>(&'a self, workers: &BTreeMap<String, WorkerState>) -> JobView<'a> {
        let worker_connected = self
            .record
            .worker_id
            .as_ref()
            .and_then(|id| workers.get(id))
            .is_some_and(WorkerState::session_open);
        JobView {
            id: self.record.id,
            status: self.record.status,
            attempt: self.record.attempt,
            monitor: self.record.monitor,
            heartbeat_interval: self.record.heartbeat_interval,
            since: self.since,
            client_last_seen: self
                .record
                .client_last_seen
                .map_or(self.since, from_micros)
                .max(self.since),
            job_last_seen: self.record.worker_last_seen.map(from_micros),
            worker_connected,
            open_streams: self.open_streams,
            client_gone_done: self.client_gone_done,
            exclusions: &self.exclusions,
        }
    }
}

/// One placement class of pending jobs.
#[derive(Debug, Default, Clone)]
struct Class {
    jobs: BTreeSet<QueueKey>,
    /// Since when no worker could ever take the class (R5); `None` while one could.
    unplaceable_since: Option<OffsetDateTime>,
}

/// Pending jobs by class, each class in queue order (priority, then id).
#[derive(Debug, Default, Clone)]
pub struct Queue {
    classes: BTreeMap<ClassKey, Class>,
    len: usize,
}

impl Queue {
    pub fn insert(&mut self, record: &JobRecord) {
        if self
            .classes
            .entry(class_key(record))
            .or_default()
            .jobs
            .insert((Reverse(record.priority), record.id))
        {
            self.len += 1;
        }
    }

    pub fn remove(&mut self, record: &JobRecord) {
        let key = class_key(record);
        if let Some(class) = self.classes.get_mut(&key) {
            if class.jobs.remove(&(Reverse(record.priority), record.id)) {
                self.len -= 1;
            }
            if class.jobs.is_empty() {
                self.classes.remove(&key);
            }
        }
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn class_keys(&self) -> Vec<ClassKey> {
        self.classes.keys().cloned().collect()
    }

    pub fn class(&self, key: &ClassKey) -> Option<&BTreeSet<QueueKey>> {
        self.classes.get(key).map(|class| &class.jobs)
    }

    pub fn unplaceable_since(&self, key: &ClassKey) -> Option<OffsetDateTime> {
        self.classes
            .get(key)
            .and_then(|class| class.unplaceable_since)
    }

    /// Starts the class's unplaceable clock when its wait counts toward the timeout, stops it otherwise.
    pub fn set_wait(&mut self, key: &ClassKey, counts: bool, now: OffsetDateTime) {
        if let Some(class) = self.classes.get_mut(key) {
            if counts {
                class.unplaceable_since.get_or_insert(now);
            } else {
                class.unplaceable_since = None;
            }
        }
    }
}

/// A worker the scheduler knows: its record, and its session while one is open.
#[derive(Debug, Clone)]
pub struct WorkerState {
    pub id: String,
    pub record: WorkerRecord,
    pub status: WorkerStatus,
    /// Binaries offered (reported ∩ `allowed_binaries`), sorted.
    pub binaries: Vec<String>,
    /// Healthy path variables, sorted.
    pub paths: Vec<String>,
    pub slots: u32,
    /// Jobs `assigned`, `running` or `canceling` on it: one slot each.
    pub jobs: BTreeSet<JobId>,
    pub last_assigned_at: Option<OffsetDateTime>,
    /// Last frame of the open session.
    pub last_frame: Option<OffsetDateTime>,
    /// Last sign of life, kept while offline (R2).
    pub last_seen: OffsetDateTime,
    /// The open session, if any.
    pub link: Option<SessionLink>,
    /// Start of the current session.
    pub connected_since: Option<OffsetDateTime>,
    /// `(job, attempt)` pairs already answered with `cancel_job {stale_attempt}` in this session.
    pub stale_sent: HashSet<(JobId, u32)>,
}

impl WorkerState {
    /// A worker known from its stored record, without a session.
    pub fn offline(id: String, record: WorkerRecord) -> WorkerState {
        WorkerState {
            id,
            binaries: record.binaries.clone(),
            paths: record.paths.clone(),
            slots: record.slots,
            jobs: BTreeSet::new(),
            last_assigned_at: None,
            last_frame: None,
            last_seen: from_micros(record.last_seen),
            link: None,
            connected_since: None,
            stale_sent: HashSet::new(),
            status: WorkerStatus::Offline,
            record,
        }
    }

    /// The worker as the API shows it (api.md §3.4).
    pub fn info(&self) -> WorkerInfo {
        WorkerInfo {
            worker_id: self.id.clone(),
            capabilities: self.record.capabilities.clone(),
            binaries: self.binaries.clone(),
            paths: self.paths.clone(),
            registration_interval: self.record.heartbeat_interval_s,
            version: self.record.version.clone(),
            status: self.status,
            last_seen: self.last_seen,
            max_concurrent_jobs: self.slots,
            running_jobs: self.used(),
            connected_since: self.connected_since,
            host: self.record.host.clone(),
            protocol_version: self.record.protocol_version.clone(),
        }
    }

    /// Slots in use.
    pub fn used(&self) -> u32 {
        u32::try_from(self.jobs.len()).unwrap_or(u32::MAX)
    }

    pub fn session_open(&self) -> bool {
        self.link.is_some()
    }

    pub fn slots(&self) -> WorkerSlots<'_> {
        WorkerSlots {
            id: &self.id,
            online: self.status == WorkerStatus::Online,
            binaries: &self.binaries,
            paths: &self.paths,
            used: self.used(),
            max: self.slots,
            last_assigned_at: self.last_assigned_at,
        }
    }

    pub fn view(&self) -> WorkerView<'_> {
        WorkerView {
            id: &self.id,
            session_last_frame: if self.session_open() {
                self.last_frame
            } else {
                None
            },
            offline_with_jobs_since: if !self.session_open() && !self.jobs.is_empty() {
                Some(self.last_seen)
            } else {
                None
            },
        }
    }
}

/// Per-job facts for `plan`.
pub(super) struct Facts<'a> {
    pub jobs: &'a HashMap<JobId, ActiveJob>,
}

impl JobFacts for Facts<'_> {
    fn excluded(&self, job: JobId, worker: &str) -> bool {
        self.jobs
            .get(&job)
            .is_some_and(|job| job.exclusions.iter().any(|(name, _)| name == worker))
    }

    fn previous_worker(&self, job: JobId) -> Option<&str> {
        self.jobs
            .get(&job)
            .and_then(|job| job.previous_worker.as_deref())
    }
}

//! Job scheduler: the only owner of job state and the only writer of assignment (lifecycle.md §3.1). Handlers,
//! worker sessions, the janitor and the admin service reach it through `SchedulerHandle`; decisions about placement
//! come from the pure `plan()`, decisions about time from the pure `janitor::sweep()`. Each input and everything
//! it causes (a submit and the placement pass it triggers) is applied as one batch; its follow-ups (the HTTP
//! reply, frames, events) are released by the group-commit flusher once the batch is durable. The actor itself
//! never waits for a flush.

pub mod plan;
mod state;
mod workers;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;

use time::OffsetDateTime;
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use protocol::rest::{self, JobStatus};
use protocol::ws::{CoordinatorMessage, Hello, WorkerMessage};
use protocol::{EventId, JobId, SessionId, UlidGenerator};

use crate::hub::EventHub;
use crate::janitor::{self, Action, ClassView, JobView, Rules, WorkerView};
use crate::settings::Settings;
use crate::store::records::{Event, JobRecord, JobRecordV1, ReplayRecord, WorkerRecord, micros};
use crate::store::{self, Batch, Store};
use crate::views::{self, WaitBoard};

pub use state::{ActiveJob, Queue, WorkerState};
use workers::sleep_until_opt;
pub use workers::{HelloRefusal, Outbound, SessionLink};

/// Scheduler failures, in domain words.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("job {0} not found")]
    UnknownJob(JobId),
    #[error("job queue full")]
    QueueFull,
    #[error("idempotency key reused with a different request")]
    IdempotencyConflict,
    #[error("the scheduler did not take the request in time")]
    Overloaded,
    #[error("storage unavailable")]
    Unavailable,
    #[error("the scheduler has stopped")]
    Stopped,
    #[error("reading the store")]
    Store(#[source] store::Error),
}

impl From<store::Error> for Error {
    fn from(err: store::Error) -> Error {
        match err {
            store::Error::Unavailable => Error::Unavailable,
            other => Error::Store(other),
        }
    }
}

/// A submit that passed every check of api.md §5.1 up to idempotency.
#[derive(Debug, Clone)]
pub struct ValidJob {
    pub requester: String,
    pub binary: String,
    pub arguments: Vec<String>,
    /// Sorted, without duplicates.
    pub paths: Vec<String>,
    pub working_directory: Option<String>,
    pub monitor: bool,
    pub heartbeat_interval: u32,
    pub priority: i32,
    pub idempotency_key: Option<String>,
    pub stdin: bool,
    /// SHA-256 over the fields that make two submits "identical" (api.md §5.1).
    pub fingerprint: [u8; 32],
    /// The replay entry of the signed request, written in the same commit.
    pub replay: Option<ReplayRecord>,
}

/// The answer to a submit.
#[derive(Debug, Clone)]
pub struct Submitted {
    pub record: rest::JobRecord,
    /// An idempotent repeat: the job already existed.
    pub replayed: bool,
}

/// Who asks for a cancel.
#[derive(Debug, Clone)]
pub struct Canceler {
    pub identity: String,
    /// An admin canceling someone else's job, or `dffmpeg-admin job cancel`.
    pub as_admin: bool,
}

/// The outcome of a cancel (J3, J10, J18).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CancelOutcome {
    Canceled,
    Canceling,
    AlreadyFinished,
}

/// The outcome of a client heartbeat.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HeartbeatOutcome {
    Recorded,
    AlreadyFinished,
}

type Reply<T> = oneshot::Sender<Result<T, Error>>;

/// Every input the scheduler reacts to.
#[derive(Debug)]
enum Command {
    Submit {
        job: Box<ValidJob>,
        now: OffsetDateTime,
        reply: Reply<Submitted>,
    },
    Cancel {
        job: JobId,
        by: Canceler,
        now: OffsetDateTime,
        reply: Reply<CancelOutcome>,
    },
    ClientHeartbeat {
        job: JobId,
        monitor: Option<bool>,
        now: OffsetDateTime,
        reply: Reply<HeartbeatOutcome>,
    },
    /// A sign of life from a follow stream (opened, keepalive, closed).
    FollowerSeen {
        job: JobId,
        now: OffsetDateTime,
        streams: StreamChange,
    },
    Janitor {
        rules: Rules,
        now: OffsetDateTime,
        reply: Reply<BTreeMap<String, u64>>,
    },
    /// How many jobs are pending (tests, health).
    Counts { reply: Reply<(usize, usize)> },
    /// Every known worker, as the API shows it.
    Workers { reply: Reply<Vec<rest::WorkerInfo>> },
    /// A session's validated `hello` (W1, W2, W5); the `welcome` goes out through the link after its flush.
    WorkerHello {
        hello: Box<Hello>,
        link: SessionLink,
        now: OffsetDateTime,
        reply: oneshot::Sender<Result<(), HelloRefusal>>,
    },
    /// One frame of a session after `hello`, handled in arrival order.
    WorkerFrame {
        worker: String,
        session: SessionId,
        frame: Box<WorkerMessage>,
        now: OffsetDateTime,
        reply: oneshot::Sender<()>,
    },
    /// A session ended (W6).
    WorkerGone {
        worker: String,
        session: SessionId,
        now: OffsetDateTime,
    },
}

/// How a follower sign of life changes the job's open-stream count.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StreamChange {
    Opened,
    Keepalive,
    Closed,
}

/// The way in: a bounded inbox, so senders wait their turn.
#[derive(Debug, Clone)]
pub struct SchedulerHandle {
    tx: mpsc::Sender<Command>,
}

impl SchedulerHandle {
    async fn ask<T>(
        &self,
        deadline: Option<Instant>,
        make: impl FnOnce(Reply<T>) -> Command,
    ) -> Result<T, Error> {
        let (reply, rx) = oneshot::channel();
        let command = make(reply);
        match deadline {
            Some(deadline) => {
                match tokio::time::timeout_at(deadline, self.tx.send(command)).await {
                    Ok(Ok(())) => {}
                    Ok(Err(_)) => return Err(Error::Stopped),
                    Err(_) => return Err(Error::Overloaded),
                }
            }
            None => self.tx.send(command).await.map_err(|_| Error::Stopped)?,
        }
        rx.await.map_err(|_| Error::Stopped)?
    }

    /// Submits a job; it must be admitted by `deadline` (`503 overloaded` otherwise), then waits for the outcome.
    pub async fn submit(&self, job: ValidJob, deadline: Instant) -> Result<Submitted, Error> {
        let now = OffsetDateTime::now_utc();
        self.ask(Some(deadline), |reply| Command::Submit {
            job: Box::new(job),
            now,
            reply,
        })
        .await
    }

    pub async fn cancel(
        &self,
        job: JobId,
        by: Canceler,
        deadline: Option<Instant>,
    ) -> Result<CancelOutcome, Error> {
        let now = OffsetDateTime::now_utc();
        self.ask(deadline, |reply| Command::Cancel {
            job,
            by,
            now,
            reply,
        })
        .await
    }

    pub async fn client_heartbeat(
        &self,
        job: JobId,
        monitor: Option<bool>,
        deadline: Instant,
    ) -> Result<HeartbeatOutcome, Error> {
        let now = OffsetDateTime::now_utc();
        self.ask(Some(deadline), |reply| Command::ClientHeartbeat {
            job,
            monitor,
            now,
            reply,
        })
        .await
    }

    /// A follow stream's sign of life; never blocks (a full inbox drops a keepalive, not an open or close).
    pub async fn follower_seen(&self, job: JobId, streams: StreamChange) {
        let command = Command::FollowerSeen {
            job,
            now: OffsetDateTime::now_utc(),
            streams,
        };
        if streams == StreamChange::Keepalive {
            let _ = self.tx.try_send(command);
        } else {
            let _ = self.tx.send(command).await;
        }
    }

    /// Runs the scheduler's janitor rules at `now`; the summary counts each action by its counter.
    pub async fn janitor(
        &self,
        rules: Rules,
        now: OffsetDateTime,
    ) -> Result<BTreeMap<String, u64>, Error> {
        self.ask(None, |reply| Command::Janitor { rules, now, reply })
            .await
    }

    /// Every known worker (live sessions and stored records).
    pub async fn workers(&self) -> Result<Vec<rest::WorkerInfo>, Error> {
        self.ask(None, |reply| Command::Workers { reply }).await
    }

    /// Registers a session's `hello`; `Ok` once the scheduler accepted it (the `welcome` follows on the link).
    pub async fn worker_hello(
        &self,
        hello: Hello,
        link: SessionLink,
    ) -> Result<Result<(), HelloRefusal>, Error> {
        let (reply, rx) = oneshot::channel();
        let now = OffsetDateTime::now_utc();
        self.tx
            .send(Command::WorkerHello {
                hello: Box::new(hello),
                link,
                now,
                reply,
            })
            .await
            .map_err(|_| Error::Stopped)?;
        rx.await.map_err(|_| Error::Stopped)
    }

    /// Hands over one frame and waits until it is applied (one command in flight per session).
    pub async fn worker_frame(
        &self,
        worker: &str,
        session: SessionId,
        frame: WorkerMessage,
    ) -> Result<(), Error> {
        let (reply, rx) = oneshot::channel();
        let now = OffsetDateTime::now_utc();
        let command = Command::WorkerFrame {
            worker: worker.to_owned(),
            session,
            frame: Box::new(frame),
            now,
            reply,
        };
        self.tx.send(command).await.map_err(|_| Error::Stopped)?;
        rx.await.map_err(|_| Error::Stopped)
    }

    /// A session ended.
    pub async fn worker_gone(&self, worker: &str, session: SessionId) {
        let now = OffsetDateTime::now_utc();
        let _ = self
            .tx
            .send(Command::WorkerGone {
                worker: worker.to_owned(),
                session,
                now,
            })
            .await;
    }

    /// `(pending, active)` job counts.
    pub async fn counts(&self) -> Result<(usize, usize), Error> {
        self.ask(None, |reply| Command::Counts { reply }).await
    }
}

/// The actor. Build with [`new`], then spawn [`Scheduler::run`].
#[derive(Debug)]
pub struct Scheduler {
    rx: mpsc::Receiver<Command>,
    store: Store,
    hub: EventHub,
    waits: WaitBoard,
    settings: Arc<Settings>,
    jobs: HashMap<JobId, ActiveJob>,
    queue: Queue,
    workers: BTreeMap<String, WorkerState>,
    job_ids: UlidGenerator,
    event_ids: UlidGenerator,
    /// When the precise timers of R1 and R2 next need a look (a wall-clock time).
    next_worker_check: Option<OffsetDateTime>,
    /// Last live progress sent to followers per job (at most one per 250 ms).
    progress_sent: HashMap<JobId, OffsetDateTime>,
}

/// Builds the scheduler over the active jobs loaded from the store. Every clock that measures a peer's silence
/// restarts at `now` (lifecycle.md §6.1 step 4). Nothing is spawned here.
pub fn new(
    store: Store,
    hub: EventHub,
    waits: WaitBoard,
    settings: Arc<Settings>,
    active: Vec<JobRecord>,
    known_workers: Vec<(String, WorkerRecord)>,
    now: OffsetDateTime,
) -> (SchedulerHandle, Scheduler) {
    let (tx, rx) = mpsc::channel(1024);
    let mut scheduler = Scheduler {
        rx,
        store,
        hub,
        waits,
        settings,
        jobs: HashMap::new(),
        queue: Queue::default(),
        workers: BTreeMap::new(),
        job_ids: UlidGenerator::new(),
        event_ids: UlidGenerator::new(),
        next_worker_check: None,
        progress_sent: HashMap::new(),
    };
    for (id, record) in known_workers {
        scheduler
            .workers
            .insert(id.clone(), WorkerState::offline(id, record));
    }
    for mut record in active {
        if record.monitor {
            record.client_last_seen = Some(micros(now));
        }
        scheduler.job_ids.observe(record.id.ulid());
        if let Some(last) = record.last_event_id {
            scheduler.event_ids.observe(last.ulid());
        }
        if record.status == JobStatus::Pending {
            scheduler.queue.insert(&record);
        }
        if record.status.occupies_slot()
            && let Some(worker) = record
                .worker_id
                .as_ref()
                .and_then(|id| scheduler.workers.get_mut(id))
        {
            worker.jobs.insert(record.id);
            // The lease restarts now: the coordinator itself was down (lifecycle.md §6.1).
            worker.last_seen = now;
        }
        scheduler
            .jobs
            .insert(record.id, ActiveJob::new(record, now));
    }
    scheduler.schedule_worker_check();
    (SchedulerHandle { tx }, scheduler)
}

/// Changes collected while applying one input, committed as one batch.
#[derive(Debug, Default)]
struct Tx {
    batch: Batch,
    events: Vec<(JobId, EventId, Arc<Event>)>,
    /// Frames to workers, sent once the batch is durable.
    frames: Vec<(String, CoordinatorMessage)>,
}

/// The status change to record.
struct Transition<'a> {
    status: JobStatus,
    reason: Option<(&'a str, String)>,
    sender: Option<String>,
}

impl Scheduler {
    /// Applies inputs in arrival order until `cancel` fires.
    pub async fn run(mut self, cancel: CancellationToken) {
        let mut tx = Tx::default();
        self.place(&mut tx, OffsetDateTime::now_utc());
        self.finish(tx, |_| {});
        loop {
            let wake = self.worker_check_instant();
            let command = tokio::select! {
                biased;
                () = cancel.cancelled() => break,
                command = self.rx.recv() => match command {
                    Some(command) => command,
                    None => break,
                },
                () = sleep_until_opt(wake) => {
                    // The precise timers of R1 and R2: the same rules the janitor runs, at the current time.
                    let rules = Rules { workers: true, jobs: false, prune: false, place: true };
                    self.janitor(rules, OffsetDateTime::now_utc());
                    continue;
                }
            };
            self.handle(command);
        }
    }

    fn handle(&mut self, command: Command) {
        match command {
            Command::Submit { job, now, reply } => self.submit(*job, now, reply),
            Command::Cancel {
                job,
                by,
                now,
                reply,
            } => self.cancel(job, by, now, reply),
            Command::ClientHeartbeat {
                job,
                monitor,
                now,
                reply,
            } => self.client_heartbeat(job, monitor, now, reply),
            Command::FollowerSeen { job, now, streams } => self.follower_seen(job, now, streams),
            Command::Janitor { rules, now, reply } => {
                let summary = self.janitor(rules, now);
                let _ = reply.send(Ok(summary));
            }
            Command::Counts { reply } => {
                let _ = reply.send(Ok((self.queue.len(), self.jobs.len())));
            }
            Command::Workers { reply } => {
                let _ = reply.send(Ok(self.workers.values().map(WorkerState::info).collect()));
            }
            Command::WorkerHello {
                hello,
                link,
                now,
                reply,
            } => self.worker_hello(*hello, link, now, reply),
            Command::WorkerFrame {
                worker,
                session,
                frame,
                now,
                reply,
            } => {
                self.worker_frame(&worker, session, *frame, now);
                let _ = reply.send(());
            }
            Command::WorkerGone {
                worker,
                session,
                now,
            } => self.worker_gone(&worker, session, now),
        }
    }

    /// Commits the batch and hands its follow-ups to the flusher: floors first, so no follower reads an event
    /// before its flush; then, once durable, events, and the reply.
    fn finish(&mut self, tx: Tx, reply: impl FnOnce(Result<(), Error>) + Send + 'static) {
        let Tx {
            batch,
            events,
            frames,
        } = tx;
        let frames: Vec<(SessionLink, CoordinatorMessage)> = frames
            .into_iter()
            .filter_map(|(worker, frame)| {
                let link = self
                    .workers
                    .get(&worker)
                    .and_then(|state| state.link.clone())?;
                Some((link, frame))
            })
            .collect();
        let mut order: Vec<JobId> = Vec::new();
        let mut seen = HashSet::new();
        for (job, id, _) in &events {
            if seen.insert(*job) {
                self.hub.note_unflushed(*job, *id);
                order.push(*job);
            }
        }
        let hub = self.hub.clone();
        if !batch.is_empty()
            && let Err(err) = self.store.commit(batch)
        {
            tracing::error!(error = %err, "store write failed; the coordinator stops");
            for job in order {
                hub.release(job, Vec::new());
            }
            reply(Err(Error::Unavailable));
            return;
        }
        self.store.after_flush(Box::new(move |result| {
            let mut by_job: HashMap<JobId, Vec<(EventId, Arc<Event>)>> = HashMap::new();
            if result.is_ok() {
                for (job, id, event) in events {
                    by_job.entry(job).or_default().push((id, event));
                }
            }
            for job in order {
                hub.release(job, by_job.remove(&job).unwrap_or_default());
            }
            if result.is_ok() {
                for (link, frame) in frames {
                    link.send(&frame);
                }
            }
            reply(result.map_err(|_| Error::Unavailable));
        }));
    }

    fn next_event_id(&mut self, record: &mut JobRecord) -> EventId {
        if let Some(last) = record.last_event_id {
            self.event_ids.observe(last.ulid());
        }
        let id = EventId(self.event_ids.next_id());
        record.last_event_id = Some(id);
        id
    }

    fn push_event(&mut self, tx: &mut Tx, record: &mut JobRecord, event: Event) {
        let id = self.next_event_id(record);
        tx.batch.put_event(record.id, id, &event);
        tx.events.push((record.id, id, Arc::new(event)));
    }

    /// Records a status change of `record` with its event; the caller writes the record.
    fn transition(
        &mut self,
        tx: &mut Tx,
        record: &mut JobRecord,
        change: Transition<'_>,
        now: OffsetDateTime,
    ) {
        record.status = change.status;
        record.last_update = micros(now);
        match change.reason {
            Some((code, detail)) => {
                record.reason = Some(code.to_owned());
                record.reason_detail = Some(detail);
            }
            None if change.status == JobStatus::Assigned => {
                record.reason = None;
                record.reason_detail = None;
            }
            None => {}
        }
        if change.status.is_terminal() {
            record.finished_at = Some(micros(now));
        }
        let event = Event::Status {
            time: micros(now),
            attempt: record.attempt,
            status: change.status,
            exit_code: record.exit_code,
            worker_id: record.worker_id.clone(),
            reason: record.reason.clone(),
            reason_detail: record.reason_detail.clone(),
            sender: change.sender,
        };
        self.push_event(tx, record, event);
    }

    /// Moves an active job to a new status and writes it: index entries follow; a terminal job leaves memory.
    fn apply(&mut self, tx: &mut Tx, id: JobId, change: Transition<'_>, now: OffsetDateTime) {
        let Some(mut job) = self.jobs.remove(&id) else {
            return;
        };
        let previous = job.record.status;
        let previous_worker = job.record.worker_id.clone();
        if previous == JobStatus::Pending && change.status != JobStatus::Pending {
            self.queue.remove(&job.record);
        }
        if change.status == JobStatus::Pending {
            job.record.worker_id = None;
        }
        self.transition(tx, &mut job.record, change, now);
        job.since = now;
        let (was, is) = (previous.occupies_slot(), job.record.status.occupies_slot());
        if was && !is {
            if let Some(worker) = previous_worker
                .as_ref()
                .and_then(|id| self.workers.get_mut(id))
            {
                worker.jobs.remove(&id);
            }
        } else if !was
            && is
            && let Some(worker) = job
                .record
                .worker_id
                .as_ref()
                .and_then(|id| self.workers.get_mut(id))
        {
            worker.jobs.insert(id);
        }
        if job.record.status.is_terminal() {
            self.progress_sent.remove(&id);
        }
        tx.batch.put_job(&job.record, Some(previous));
        if job.record.status == JobStatus::Pending && previous != JobStatus::Pending {
            self.queue.insert(&job.record);
        }
        if job.record.status.is_active() {
            self.jobs.insert(id, job);
        }
    }

    fn submit(&mut self, job: ValidJob, now: OffsetDateTime, reply: Reply<Submitted>) {
        if let Some(key) = &job.idempotency_key {
            let existing = match self.store.idempotency(&job.requester, key) {
                Ok(existing) => existing,
                Err(err) => {
                    let _ = reply.send(Err(err.into()));
                    return;
                }
            };
            if let Some(entry) = existing {
                if entry.fingerprint != job.fingerprint {
                    let _ = reply.send(Err(Error::IdempotencyConflict));
                    return;
                }
                match self.current_record(entry.job_id) {
                    Ok(Some(record)) => {
                        let record = views::job_record(&record, self.waits.wait_of(&record));
                        // Answer after the flush that covers the original, which may still be in flight.
                        self.finish(Tx::default(), move |result| {
                            let _ = reply.send(result.map(|()| Submitted {
                                record,
                                replayed: true,
                            }));
                        });
                        return;
                    }
                    Ok(None) => {} // pruned: the key names no job any more
                    Err(err) => {
                        let _ = reply.send(Err(err.into()));
                        return;
                    }
                }
            }
        }
        if self.queue.len() >= self.settings.limits.max_pending_jobs {
            let _ = reply.send(Err(Error::QueueFull));
            return;
        }
        let id = JobId(
            self.job_ids
                .next_at(u64::try_from(micros(now) / 1000).unwrap_or(0)),
        );
        let mut record = JobRecordV1 {
            id,
            requester: job.requester.clone(),
            binary: job.binary,
            arguments: job.arguments,
            paths: job.paths,
            working_directory: job.working_directory,
            monitor: job.monitor,
            heartbeat_interval: job.heartbeat_interval,
            priority: job.priority,
            idempotency_key: job.idempotency_key.clone(),
            stdin: job.stdin,
            status: JobStatus::Pending,
            attempt: 0,
            runs: 0,
            rejections: 0,
            worker_id: None,
            created_at: micros(now),
            last_update: micros(now),
            started_at: None,
            finished_at: None,
            worker_last_seen: None,
            client_last_seen: Some(micros(now)),
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
        };
        let mut tx = Tx::default();
        let change = Transition {
            status: JobStatus::Pending,
            reason: None,
            sender: None,
        };
        self.transition(&mut tx, &mut record, change, now);
        tx.batch.put_job(&record, None);
        if let Some(key) = &job.idempotency_key {
            tx.batch
                .put_idempotency(&job.requester, key, id, job.fingerprint);
        }
        if let Some(mut replay) = job.replay {
            replay.job_id = Some(id);
            tx.batch.put_replay(&replay);
        }
        self.queue.insert(&record);
        self.jobs.insert(id, ActiveJob::new(record, now));
        self.place(&mut tx, now);
        let Ok(Some(record)) = self.current_record(id) else {
            let _ = reply.send(Err(Error::UnknownJob(id)));
            return;
        };
        let wire = views::job_record(&record, self.waits.wait_of(&record));
        self.finish(tx, move |result| {
            let _ = reply.send(result.map(|()| Submitted {
                record: wire,
                replayed: false,
            }));
        });
    }

    /// The in-memory record of an active job, else the stored one.
    fn current_record(&self, id: JobId) -> Result<Option<JobRecord>, store::Error> {
        match self.jobs.get(&id) {
            Some(job) => Ok(Some(job.record.clone())),
            None => self.store.job(id),
        }
    }

    fn cancel(
        &mut self,
        id: JobId,
        by: Canceler,
        now: OffsetDateTime,
        reply: Reply<CancelOutcome>,
    ) {
        let Some(job) = self.jobs.get(&id) else {
            let outcome = match self.store.job(id) {
                Ok(Some(_)) => Ok(CancelOutcome::AlreadyFinished),
                Ok(None) => Err(Error::UnknownJob(id)),
                Err(err) => Err(err.into()),
            };
            let _ = reply.send(outcome);
            return;
        };
        let reason = if by.as_admin {
            "canceled_by_admin"
        } else {
            "canceled_by_requester"
        };
        let detail = format!("canceled by {}", by.identity);
        let mut tx = Tx::default();
        let outcome = match job.record.status {
            JobStatus::Pending => {
                let change = Transition {
                    status: JobStatus::Canceled,
                    reason: Some((reason, detail)),
                    sender: Some(by.identity),
                };
                self.apply(&mut tx, id, change, now);
                CancelOutcome::Canceled
            }
            JobStatus::Assigned | JobStatus::Running => {
                let change = Transition {
                    status: JobStatus::Canceling,
                    reason: Some((reason, detail)),
                    sender: Some(by.identity),
                };
                self.apply(&mut tx, id, change, now);
                self.send_cancel(&mut tx, id, protocol::ws::cancel_reason::REQUESTED);
                CancelOutcome::Canceling
            }
            // Already canceling: nothing changes but the worker is asked again.
            _ => {
                self.send_cancel(&mut tx, id, protocol::ws::cancel_reason::REQUESTED);
                CancelOutcome::Canceling
            }
        };
        self.place(&mut tx, now);
        self.finish(tx, move |result| {
            let _ = reply.send(result.map(|()| outcome));
        });
    }

    fn client_heartbeat(
        &mut self,
        id: JobId,
        monitor: Option<bool>,
        now: OffsetDateTime,
        reply: Reply<HeartbeatOutcome>,
    ) {
        let Some(job) = self.jobs.get_mut(&id) else {
            let outcome = match self.store.job(id) {
                Ok(Some(_)) => Ok(HeartbeatOutcome::AlreadyFinished),
                Ok(None) => Err(Error::UnknownJob(id)),
                Err(err) => Err(err.into()),
            };
            let _ = reply.send(outcome);
            return;
        };
        job.record.client_last_seen = Some(micros(now));
        job.client_gone_done = false;
        let changed = monitor.is_some_and(|monitor| monitor != job.record.monitor);
        if let Some(monitor) = monitor {
            job.record.monitor = monitor;
        }
        let mut tx = Tx::default();
        tx.batch.put_job(&job.record, Some(job.record.status));
        if changed {
            self.finish(tx, move |result| {
                let _ = reply.send(result.map(|()| HeartbeatOutcome::Recorded));
            });
        } else {
            // `client_last_seen` rides on the next flush (storage.md §2): write it and answer now.
            let result = self.store.commit(tx.batch).map_err(Error::from);
            let _ = reply.send(result.map(|()| HeartbeatOutcome::Recorded));
        }
    }

    fn follower_seen(&mut self, id: JobId, now: OffsetDateTime, streams: StreamChange) {
        let Some(job) = self.jobs.get_mut(&id) else {
            return;
        };
        match streams {
            StreamChange::Opened => job.open_streams += 1,
            StreamChange::Closed => job.open_streams = job.open_streams.saturating_sub(1),
            StreamChange::Keepalive => {}
        }
        job.record.client_last_seen = Some(micros(now));
        let mut batch = Batch::new();
        batch.put_job(&job.record, Some(job.record.status));
        if let Err(err) = self.store.commit(batch) {
            tracing::error!(error = %err, "store write failed");
        }
    }

    /// One placement pass: plans, applies the assignments to this batch, and publishes wait reasons.
    fn place(&mut self, tx: &mut Tx, now: OffsetDateTime) {
        let keys: Vec<plan::ClassKey> = self.queue.class_keys();
        let workers: Vec<&WorkerState> = self
            .workers
            .values()
            .filter(|worker| worker.session_open())
            .collect();
        let slots: Vec<plan::WorkerSlots<'_>> =
            workers.iter().map(|worker| worker.slots()).collect();
        let classes: Vec<plan::ClassQueue<'_>> = keys
            .iter()
            .filter_map(|key| {
                self.queue
                    .class(key)
                    .map(|jobs| plan::ClassQueue { key, jobs })
            })
            .collect();
        let facts = state::Facts { jobs: &self.jobs };
        let result = plan::plan(&classes, &slots, &facts);
        let worker_ids: Vec<String> = workers.iter().map(|worker| worker.id.clone()).collect();
        let class_waits: HashMap<plan::ClassKey, plan::WaitInfo> = classes
            .iter()
            .map(|class| class.key.clone())
            .zip(result.class_waits.iter().cloned())
            .collect();
        drop(classes);
        for assignment in &result.assignments {
            self.assign(tx, assignment.job, &worker_ids[assignment.worker], now);
        }
        for (key, wait) in &class_waits {
            self.queue
                .set_wait(key, wait.reason.counts_toward_timeout(), now);
        }
        let job_waits: HashMap<JobId, plan::WaitInfo> = result.retry_waits.into_iter().collect();
        self.waits.publish(class_waits, job_waits);
    }

    /// J2: `pending` → `assigned`, `attempt += 1`.
    fn assign(&mut self, tx: &mut Tx, id: JobId, worker: &str, now: OffsetDateTime) {
        let Some(job) = self.jobs.get_mut(&id) else {
            return;
        };
        job.record.attempt += 1;
        job.record.worker_id = Some(worker.to_owned());
        job.record.next_output_seq = 0;
        job.record.attempt_chunks = 0;
        job.record.attempt_stdout_bytes = 0;
        job.record.stdin_forwarded = false;
        job.record.progress = None;
        let change = Transition {
            status: JobStatus::Assigned,
            reason: None,
            sender: None,
        };
        self.apply(tx, id, change, now);
        if let Some(state) = self.workers.get_mut(worker) {
            state.last_assigned_at = Some(now);
        }
        if let Some(job) = self.jobs.get(&id) {
            tx.frames.push((
                worker.to_owned(),
                CoordinatorMessage::AssignJob(workers::assign_frame(&job.record)),
            ));
        }
    }

    /// Runs the scheduler's janitor rules and applies their actions.
    fn janitor(&mut self, rules: Rules, now: OffsetDateTime) -> BTreeMap<String, u64> {
        let thresholds = self.settings.thresholds.clone();
        let actions = {
            let job_views: Vec<JobView<'_>> = self
                .jobs
                .values()
                .map(|job| job.view(&self.workers))
                .collect();
            let keys = self.queue.class_keys();
            let class_views: Vec<ClassView<'_>> = keys
                .iter()
                .map(|key| ClassView {
                    key,
                    unplaceable_since: self.queue.unplaceable_since(key),
                })
                .collect();
            let worker_views: Vec<WorkerView<'_>> =
                self.workers.values().map(WorkerState::view).collect();
            janitor::sweep(
                &job_views,
                &class_views,
                &worker_views,
                now,
                &thresholds,
                rules,
            )
        };
        let mut summary = BTreeMap::new();
        let mut tx = Tx::default();
        for action in actions {
            if self.apply_action(&mut tx, &action, now) {
                *summary.entry(action.counter().to_owned()).or_insert(0) += 1;
            }
        }
        if rules.place || rules.jobs {
            self.place(&mut tx, now);
        }
        self.finish(tx, |_| {});
        self.schedule_worker_check();
        summary
    }

    /// Applies one janitor action if the job is still in the status and attempt it was computed for.
    fn apply_action(&mut self, tx: &mut Tx, action: &Action, now: OffsetDateTime) -> bool {
        let coordinator = Some(protocol::ids::RESERVED_IDENTITY.to_owned());
        match action {
            Action::Unplaceable { class } => {
                let Some(wait) = self.waits.wait_of_class(class) else {
                    return false;
                };
                let ids: Vec<JobId> = self
                    .queue
                    .class(class)
                    .map(|jobs| jobs.iter().map(|(_, id)| *id).collect())
                    .unwrap_or_default();
                for id in &ids {
                    let change = Transition {
                        status: JobStatus::Failed,
                        reason: Some(("no_fitting_worker", wait.detail.clone())),
                        sender: coordinator.clone(),
                    };
                    self.apply(tx, *id, change, now);
                }
                !ids.is_empty()
            }
            Action::ClientGone {
                job,
                attempt,
                status,
            } => {
                let Some(active) = self.jobs.get_mut(job) else {
                    return false;
                };
                if active.record.attempt != *attempt
                    || active.record.status != *status
                    || active.client_gone_done
                {
                    return false;
                }
                active.client_gone_done = true;
                let detail = format!(
                    "the requester showed no sign of life for {} s",
                    (f64::from(active.record.heartbeat_interval)
                        * self.settings.thresholds.job_silence_factor)
                );
                let next = if *status == JobStatus::Pending {
                    JobStatus::Canceled
                } else {
                    JobStatus::Canceling
                };
                let change = Transition {
                    status: next,
                    reason: Some(("client_gone", detail)),
                    sender: coordinator,
                };
                self.apply(tx, *job, change, now);
                if next == JobStatus::Canceling {
                    self.send_cancel(tx, *job, protocol::ws::cancel_reason::CLIENT_GONE);
                }
                true
            }
            Action::CancelTimeout { job, attempt } => {
                let Some(active) = self.jobs.get(job) else {
                    return false;
                };
                if active.record.attempt != *attempt || active.record.status != JobStatus::Canceling
                {
                    return false;
                }
                let detail = format!(
                    "the worker did not confirm the cancel within {} s",
                    self.settings.thresholds.cancel_timeout.as_secs_f64()
                );
                // The worker is asked once more, so a process that ignored the first cancel still goes.
                self.send_cancel(tx, *job, protocol::ws::cancel_reason::CANCEL_TIMEOUT);
                let change = Transition {
                    status: JobStatus::Canceled,
                    reason: Some(("cancel_timeout", detail)),
                    sender: coordinator,
                };
                self.apply(tx, *job, change, now);
                true
            }
            Action::ExclusionExpired { job, worker } => {
                let Some(active) = self.jobs.get_mut(job) else {
                    return false;
                };
                let before = active.exclusions.len();
                active
                    .exclusions
                    .retain(|(name, until)| !(name == worker && *until <= now));
                before != active.exclusions.len()
            }
            Action::ReapSession { worker } => self.reap_session(worker, now),
            Action::LeaseExpired { worker } => self.lease_expired(tx, worker, now),
            Action::JobSilent { job, attempt } => self.job_silent(tx, *job, *attempt, now),
            Action::AssignmentTimeout { job, attempt } => {
                self.assignment_timeout(tx, *job, *attempt, now)
            }
        }
    }
}

#[cfg(test)]
mod tests;

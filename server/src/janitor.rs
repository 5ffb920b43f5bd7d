//! The janitor (lifecycle.md §4): the pure `sweep(now)` over every timed rule R1–R8, the retention pruning of R9
//! and R10, and the loop that runs a pass at startup and then every `interval ± jitter`. `sweep` decides; the
//! scheduler applies its actions (only if each job is still in the status and attempt it was computed for), so
//! the janitor never changes a job itself. Tests drive it with `sweep_once(&state, now)`, never with sleeps.

use std::collections::BTreeMap;
use std::time::Duration;

use rand::Rng;
use time::OffsetDateTime;
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use protocol::JobId;
use protocol::rest::{JanitorAction, JobStatus};

use crate::scheduler::plan::ClassKey;
use crate::state::AppState;
use crate::store::records::micros;
use crate::store::{self, Batch};

/// Which rules a pass evaluates.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rules {
    /// R1, R2.
    pub workers: bool,
    /// R3–R8.
    pub jobs: bool,
    /// R9, R10.
    pub prune: bool,
    /// A placement pass (the safety net).
    pub place: bool,
}

impl Rules {
    pub fn of(action: JanitorAction) -> Rules {
        match action {
            JanitorAction::RunAll => Rules {
                workers: true,
                jobs: true,
                prune: true,
                place: true,
            },
            JanitorAction::CleanWorkers => Rules {
                workers: true,
                jobs: false,
                prune: false,
                place: false,
            },
            JanitorAction::CleanJobs => Rules {
                workers: false,
                jobs: true,
                prune: false,
                place: false,
            },
            JanitorAction::Prune => Rules {
                workers: false,
                jobs: false,
                prune: true,
                place: false,
            },
        }
    }
}

/// The thresholds of lifecycle.md §4.1, from the configuration.
#[derive(Debug, Clone)]
pub struct Thresholds {
    /// `si × missed_heartbeats` (R1).
    pub session_timeout: Duration,
    /// `session_timeout × worker_threshold_factor` (R2).
    pub lease: Duration,
    /// `job_heartbeat_threshold_factor` (R3, R6).
    pub job_silence_factor: f64,
    pub assignment_timeout: Duration,
    pub retry_delay: Duration,
    pub pending_timeout: Duration,
    pub cancel_timeout: Duration,
}

/// A job as the sweep sees it.
#[derive(Debug, Clone)]
pub struct JobView<'a> {
    pub id: JobId,
    pub status: JobStatus,
    pub attempt: u32,
    pub monitor: bool,
    pub heartbeat_interval: u32,
    /// When the current status began (restarted at startup).
    pub since: OffsetDateTime,
    pub client_last_seen: OffsetDateTime,
    /// Last frame that mentioned the job (running jobs).
    pub job_last_seen: Option<OffsetDateTime>,
    /// The worker's session is open.
    pub worker_connected: bool,
    pub open_streams: u32,
    /// R6 already acted on this attempt.
    pub client_gone_done: bool,
    pub exclusions: &'a [(String, OffsetDateTime)],
}

/// A class of pending jobs as the sweep sees it.
#[derive(Debug, Clone)]
pub struct ClassView<'a> {
    pub key: &'a ClassKey,
    pub unplaceable_since: Option<OffsetDateTime>,
}

/// A worker as the sweep sees it.
#[derive(Debug, Clone)]
pub struct WorkerView<'a> {
    pub id: &'a str,
    /// Last frame of the open session, if one is open.
    pub session_last_frame: Option<OffsetDateTime>,
    /// When it was last seen, if it has no session and still holds jobs.
    pub offline_with_jobs_since: Option<OffsetDateTime>,
}

/// One decision of a pass.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// R1: close the silent session (`4003`).
    ReapSession { worker: String },
    /// R2: the worker's lease expired; its jobs are lost attempts.
    LeaseExpired { worker: String },
    /// R3: a running job on a connected worker went silent.
    JobSilent { job: JobId, attempt: u32 },
    /// R4: `assigned` without `job_accepted` too long.
    AssignmentTimeout { job: JobId, attempt: u32 },
    /// R5: a class no worker could take for `job_pending_timeout`.
    Unplaceable { class: ClassKey },
    /// R6: the monitored requester is gone.
    ClientGone {
        job: JobId,
        attempt: u32,
        status: JobStatus,
    },
    /// R7: `canceling` too long.
    CancelTimeout { job: JobId, attempt: u32 },
    /// R8: a retry-delay exclusion ended.
    ExclusionExpired { job: JobId, worker: String },
}

impl Action {
    /// The counter of cli.md §2.2 this action adds to.
    pub fn counter(&self) -> &'static str {
        match self {
            Action::ReapSession { .. } => "sessions_reaped",
            Action::LeaseExpired { .. } => "leases_expired",
            Action::JobSilent { .. } => "jobs_silent",
            Action::AssignmentTimeout { .. } => "assignments_timed_out",
            Action::Unplaceable { .. } => "jobs_unplaceable",
            Action::ClientGone { .. } => "clients_gone",
            Action::CancelTimeout { .. } => "cancels_timed_out",
            Action::ExclusionExpired { .. } => "exclusions_expired",
        }
    }
}

/// The counters a pass reports, for the rules it ran (cli.md §2.2).
pub fn counters_of(rules: Rules) -> Vec<&'static str> {
    let mut names = Vec::new();
    if rules.workers {
        names.extend(["sessions_reaped", "leases_expired"]);
    }
    if rules.jobs {
        names.extend([
            "jobs_silent",
            "assignments_timed_out",
            "jobs_unplaceable",
            "clients_gone",
            "cancels_timed_out",
            "exclusions_expired",
        ]);
    }
    if rules.prune {
        names.extend([
            "jobs_pruned",
            "outputs_pruned",
            "workers_pruned",
            "replay_entries_dropped",
        ]);
    }
    names
}

fn elapsed(now: OffsetDateTime, since: OffsetDateTime) -> Duration {
    let delta = now - since;
    if delta.is_negative() {
        Duration::ZERO
    } else {
        delta.unsigned_abs()
    }
}

fn scaled(seconds: u32, factor: f64) -> Duration {
    Duration::from_secs_f64((f64::from(seconds) * factor).max(0.0))
}

/// Evaluates the rules of a pass. Pure: the same views and `now` give the same actions.
pub fn sweep(
    jobs: &[JobView<'_>],
    classes: &[ClassView<'_>],
    workers: &[WorkerView<'_>],
    now: OffsetDateTime,
    thresholds: &Thresholds,
    rules: Rules,
) -> Vec<Action> {
    let mut actions = Vec::new();
    if rules.workers {
        for worker in workers {
            if let Some(last) = worker.session_last_frame
                && elapsed(now, last) > thresholds.session_timeout
            {
                actions.push(Action::ReapSession {
                    worker: worker.id.to_owned(),
                });
            }
            if let Some(last) = worker.offline_with_jobs_since
                && elapsed(now, last) > thresholds.lease
            {
                actions.push(Action::LeaseExpired {
                    worker: worker.id.to_owned(),
                });
            }
        }
    }
    if !rules.jobs {
        return actions;
    }
    for job in jobs {
        let silence = scaled(job.heartbeat_interval, thresholds.job_silence_factor);
        match job.status {
            JobStatus::Running if job.worker_connected => {
                let last = job.job_last_seen.unwrap_or(job.since).max(job.since);
                if elapsed(now, last) > silence {
                    actions.push(Action::JobSilent {
                        job: job.id,
                        attempt: job.attempt,
                    });
                    continue;
                }
            }
            JobStatus::Assigned if elapsed(now, job.since) > thresholds.assignment_timeout => {
                actions.push(Action::AssignmentTimeout {
                    job: job.id,
                    attempt: job.attempt,
                });
                continue;
            }
            JobStatus::Canceling if elapsed(now, job.since) > thresholds.cancel_timeout => {
                actions.push(Action::CancelTimeout {
                    job: job.id,
                    attempt: job.attempt,
                });
                continue;
            }
            _ => {}
        }
        if job.monitor
            && job.status.is_active()
            && job.status != JobStatus::Canceling
            && !job.client_gone_done
            && job.open_streams == 0
            && elapsed(now, job.client_last_seen) > silence
        {
            actions.push(Action::ClientGone {
                job: job.id,
                attempt: job.attempt,
                status: job.status,
            });
            continue;
        }
        for (worker, until) in job.exclusions {
            if *until <= now {
                actions.push(Action::ExclusionExpired {
                    job: job.id,
                    worker: worker.clone(),
                });
            }
        }
    }
    for class in classes {
        if let Some(since) = class.unplaceable_since
            && elapsed(now, since) >= thresholds.pending_timeout
        {
            actions.push(Action::Unplaceable {
                class: class.key.clone(),
            });
        }
    }
    actions
}

/// Retention (R9) and replay-entry expiry (R10): deletes terminal jobs past `retention.finished_jobs` with their
/// events, idempotency and replay entries; output events of terminal jobs past `retention.job_output`; offline
/// worker records past `retention.offline_workers`; expired replay entries, from the store and the cache.
pub async fn prune(
    state: &AppState,
    now: OffsetDateTime,
    summary: &mut BTreeMap<String, u64>,
) -> Result<(), store::Error> {
    let retention = state.settings.retention.clone();
    let store = &state.store;
    let cutoff = |keep: Duration| micros(now) - i64::try_from(keep.as_micros()).unwrap_or(i64::MAX);
    let mut batch = Batch::new();
    let mut jobs_pruned = 0u64;
    for record in
        store.jobs_finished_before(cutoff(retention.finished_jobs), retention.prune_batch)?
    {
        for (id, _) in store.events(record.id, None, None, usize::MAX)? {
            batch.delete_event(record.id, id);
        }
        batch.delete_job(&record);
        jobs_pruned += 1;
    }
    let mut outputs_pruned = 0u64;
    let remaining = retention.prune_batch.saturating_sub(jobs_pruned as usize);
    let output_cutoff = cutoff(retention.job_output);
    for record in store.jobs_finished_before(output_cutoff, remaining.max(1) * 4)? {
        let mut pruned_any = false;
        for (id, event) in store.events(record.id, None, None, usize::MAX)? {
            if event.is_output() {
                batch.delete_event(record.id, id);
                pruned_any = true;
            }
        }
        if pruned_any {
            outputs_pruned += 1;
        }
    }
    let mut workers_pruned = 0u64;
    let worker_cutoff = cutoff(retention.offline_workers);
    let connected = state.sessions.connected();
    for (worker_id, record) in store.workers()? {
        if record.last_seen < worker_cutoff && !connected.contains(&worker_id) {
            batch.delete_worker(&worker_id);
            workers_pruned += 1;
        }
    }
    let now_s = now.unix_timestamp();
    let expired = store.replay_entries_expired(now_s, 100_000)?;
    for entry in &expired {
        batch.delete_replay(entry);
    }
    let dropped = state.replay.expire(now_s) as u64;
    if !batch.is_empty() {
        store.commit(batch)?;
    }
    *summary.entry("jobs_pruned".into()).or_default() += jobs_pruned;
    *summary.entry("outputs_pruned".into()).or_default() += outputs_pruned;
    *summary.entry("workers_pruned".into()).or_default() += workers_pruned;
    *summary.entry("replay_entries_dropped".into()).or_default() +=
        dropped.max(expired.len() as u64);
    Ok(())
}

/// Runs one janitor pass of `action` at `now`: the scheduler's rules, then pruning. The summary maps each counter
/// of the action to its count.
pub async fn sweep_once(
    state: &AppState,
    action: JanitorAction,
    now: OffsetDateTime,
) -> Result<BTreeMap<String, u64>, crate::scheduler::Error> {
    let rules = Rules::of(action);
    let mut summary: BTreeMap<String, u64> = counters_of(rules)
        .into_iter()
        .map(|name| (name.to_owned(), 0))
        .collect();
    if rules.workers || rules.jobs || rules.place {
        for (name, count) in state.scheduler.janitor(rules, now).await? {
            *summary.entry(name).or_default() += count;
        }
    }
    if rules.prune {
        prune(state, now, &mut summary)
            .await
            .map_err(crate::scheduler::Error::Store)?;
    }
    Ok(summary)
}

/// A request to run an action now (`POST /admin/janitor`, `dffmpeg-admin janitor run`).
#[derive(Debug)]
pub struct JanitorRequest {
    pub action: JanitorAction,
    pub reply: Option<oneshot::Sender<BTreeMap<String, u64>>>,
}

/// Handle to queue on-demand actions behind the pass in progress.
#[derive(Debug, Clone)]
pub struct JanitorHandle {
    tx: mpsc::Sender<JanitorRequest>,
}

impl JanitorHandle {
    /// Queues an action; `false` if the janitor has stopped or its queue is full.
    pub fn request(&self, action: JanitorAction) -> bool {
        self.tx
            .try_send(JanitorRequest {
                action,
                reply: None,
            })
            .is_ok()
    }

    /// Queues an action and waits for its summary.
    pub async fn run(&self, action: JanitorAction) -> Option<BTreeMap<String, u64>> {
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(JanitorRequest {
                action,
                reply: Some(reply),
            })
            .await
            .ok()?;
        rx.await.ok()
    }
}

/// The janitor loop.
#[derive(Debug)]
pub struct Janitor {
    rx: mpsc::Receiver<JanitorRequest>,
    interval: Duration,
    jitter: Duration,
}

/// Builds the janitor and its handle (nothing is spawned here).
pub fn new(interval: Duration, jitter: Duration) -> (JanitorHandle, Janitor) {
    let (tx, rx) = mpsc::channel(64);
    (
        JanitorHandle { tx },
        Janitor {
            rx,
            interval,
            jitter,
        },
    )
}

/// `max(1 s, interval + U(−b, b))` with `b = min(interval / 2, jitter)` (lifecycle.md §4.2).
pub fn next_delay(interval: Duration, jitter: Duration, unit: f64) -> Duration {
    let spread = jitter.min(interval / 2).as_secs_f64();
    let seconds = interval.as_secs_f64() + spread * (2.0 * unit.clamp(0.0, 1.0) - 1.0);
    Duration::from_secs_f64(seconds.max(1.0))
}

impl Janitor {
    /// First pass at once, then every jittered interval; on-demand actions queue behind the pass in progress
    /// (the startup pass included: an action's summary is never reported before the startup pass has ended).
    /// Stops (no further pass) when `cancel` fires: shutdown step 1.
    pub async fn run(mut self, state: AppState, cancel: CancellationToken) {
        if cancel.is_cancelled() {
            return;
        }
        if let Err(err) = sweep_once(&state, JanitorAction::RunAll, OffsetDateTime::now_utc()).await
        {
            tracing::warn!(error = %err, "startup janitor pass failed");
        }
        let mut delay = next_delay(self.interval, self.jitter, rand::rng().random::<f64>());
        loop {
            let request = tokio::select! {
                biased;
                () = cancel.cancelled() => return,
                request = self.rx.recv() => match request {
                    Some(request) => Some(request),
                    None => return,
                },
                () = tokio::time::sleep(delay) => None,
            };
            let action = request
                .as_ref()
                .map_or(JanitorAction::RunAll, |request| request.action);
            let summary = match sweep_once(&state, action, OffsetDateTime::now_utc()).await {
                Ok(summary) => summary,
                Err(err) => {
                    tracing::warn!(error = %err, action = action.as_str(), "janitor pass failed");
                    BTreeMap::new()
                }
            };
            let acted: u64 = summary.values().sum();
            if acted > 0 {
                tracing::info!(action = action.as_str(), ?summary, "janitor pass");
            }
            match request {
                Some(JanitorRequest {
                    reply: Some(reply), ..
                }) => {
                    let _ = reply.send(summary);
                }
                Some(_) => {}
                None => delay = next_delay(self.interval, self.jitter, rand::rng().random::<f64>()),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use protocol::Ulid;
    use time::macros::datetime;

    fn thresholds() -> Thresholds {
        Thresholds {
            session_timeout: Duration::from_secs(15),
            lease: Duration::from_millis(22_500),
            job_silence_factor: 2.5,
            assignment_timeout: Duration::from_secs(10),
            retry_delay: Duration::from_secs(5),
            pending_timeout: Duration::from_secs(30),
            cancel_timeout: Duration::from_secs(30),
        }
    }

    fn job(status: JobStatus, since: OffsetDateTime) -> JobView<'static> {
        JobView {
            id: JobId(Ulid::from_u128(7)),
            status,
            attempt: 1,
            monitor: false,
            heartbeat_interval: 5,
            since,
            client_last_seen: since,
            job_last_seen: None,
            worker_connected: true,
            open_streams: 0,
            client_gone_done: false,
            exclusions: &[],
        }
    }

    const ALL: Rules = Rules {
        workers: true,
        jobs: true,
        prune: false,
        place: false,
    };

    #[test]
    fn each_rule_fires_only_past_its_threshold() {
        let t0 = datetime!(2026-11-24 18:00:00 UTC);
        let at = |secs: f64| t0 + time::Duration::seconds_f64(secs);
        let th = thresholds();
        // R4
        let assigned = [job(JobStatus::Assigned, t0)];
        assert!(sweep(&assigned, &[], &[], at(10.0), &th, ALL).is_empty());
        assert_eq!(
            sweep(&assigned, &[], &[], at(10.1), &th, ALL)[0].counter(),
            "assignments_timed_out"
        );
        // R3
        let running = [job(JobStatus::Running, t0)];
        assert!(sweep(&running, &[], &[], at(12.5), &th, ALL).is_empty());
        assert_eq!(
            sweep(&running, &[], &[], at(12.6), &th, ALL)[0].counter(),
            "jobs_silent"
        );
        // R7
        let canceling = [job(JobStatus::Canceling, t0)];
        assert!(sweep(&canceling, &[], &[], at(30.0), &th, ALL).is_empty());
        assert_eq!(
            sweep(&canceling, &[], &[], at(30.1), &th, ALL)[0].counter(),
            "cancels_timed_out"
        );
        // R6 (a): only monitored jobs with no open stream
        let mut monitored = job(JobStatus::Pending, t0);
        monitored.monitor = true;
        assert!(
            sweep(
                std::slice::from_ref(&monitored),
                &[],
                &[],
                at(12.5),
                &th,
                ALL
            )
            .is_empty()
        );
        assert_eq!(
            sweep(
                std::slice::from_ref(&monitored),
                &[],
                &[],
                at(12.6),
                &th,
                ALL
            )[0]
            .counter(),
            "clients_gone"
        );
        monitored.open_streams = 1;
        assert!(
            sweep(
                std::slice::from_ref(&monitored),
                &[],
                &[],
                at(100.0),
                &th,
                ALL
            )
            .is_empty()
        );
        // R5
        let key = ClassKey {
            binary: "ffmpeg".into(),
            paths: vec![],
        };
        let classes = [ClassView {
            key: &key,
            unplaceable_since: Some(t0),
        }];
        assert!(sweep(&[], &classes, &[], at(29.9), &th, ALL).is_empty());
        assert_eq!(
            sweep(&[], &classes, &[], at(30.0), &th, ALL),
            vec![Action::Unplaceable { class: key.clone() }]
        );
        // R1, R2
        let workers = [WorkerView {
            id: "w1",
            session_last_frame: Some(t0),
            offline_with_jobs_since: None,
        }];
        assert!(sweep(&[], &[], &workers, at(15.0), &th, ALL).is_empty());
        assert_eq!(
            sweep(&[], &[], &workers, at(15.1), &th, ALL)[0].counter(),
            "sessions_reaped"
        );
        let offline = [WorkerView {
            id: "w1",
            session_last_frame: None,
            offline_with_jobs_since: Some(t0),
        }];
        assert!(sweep(&[], &[], &offline, at(22.5), &th, ALL).is_empty());
        assert_eq!(
            sweep(&[], &[], &offline, at(22.6), &th, ALL)[0].counter(),
            "leases_expired"
        );
        // rules switched off
        let only_workers = Rules {
            workers: true,
            jobs: false,
            prune: false,
            place: false,
        };
        assert!(sweep(&assigned, &classes, &[], at(100.0), &th, only_workers).is_empty());
    }

    #[test]
    fn jittered_delays_stay_in_bounds() {
        let interval = Duration::from_secs(10);
        let jitter = Duration::from_millis(500);
        assert_eq!(
            next_delay(interval, jitter, 0.0),
            Duration::from_millis(9_500)
        );
        assert_eq!(
            next_delay(interval, jitter, 1.0),
            Duration::from_millis(10_500)
        );
        assert_eq!(
            next_delay(Duration::from_secs(1), Duration::from_secs(5), 0.0),
            Duration::from_secs(1)
        );
    }
}

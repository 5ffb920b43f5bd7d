//! The worker process around the job-execution core: [`Worker::build`] runs the start-up checks of cli.md §3.1,
//! [`Worker::run_until`] runs the session loop (worker-protocol.md §1, §4, §5, §7; cli.md §3.1–§3.4) until the
//! worker drains, is stopped, or must exit.
//!
//! One task, the agent, owns every piece of state: the held jobs (running, or finished with a `job_finished` in the
//! outbox), the connection, the timers (heartbeat, liveness, worker-side lease, reconnect, health re-checks, drain)
//! and the drain state. Everything else talks to it through bounded channels: each job has a task that forwards the
//! core's events ([`JobMessage`]), a stdin writer per job that has stdin, the writer task that owns the socket's
//! sending half, the connect task, and the health check. The agent reads frames itself, in order, and never awaits
//! the socket: frames go to the writer's bounded queue, and job output stays in each job's `JobOutput` (which drops
//! the oldest chunks on overflow) until the queue has room, so a slow or absent coordinator never blocks a job.
//!
//! Not here: running a process ([`crate::process`]), path translation ([`crate::paths`]), the checks themselves
//! ([`crate::health`]), the transport ([`crate::session`]), and the argument policy (not built yet: the
//! configuration refuses its switches).

mod connection;
mod jobs;
mod stdin;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use futures_util::StreamExt;
use futures_util::stream::SplitStream;
use protocol::SessionId;
use protocol::ws::{
    AssignJob, CancelJob, ErrorFrame, FinishedStatus, HeldJob as HeldJobEntry, HeldState, Hello,
    JobAbandoned, JobAccepted, JobError, JobFinished, JobProgress, JobRef, JobRejected, JobStdin,
    PROTOCOL_VERSION, StdinWritten, Welcome, WorkerDrain, WorkerMessage, cancel_reason, close,
    reject_code,
};
use protocol::ws::{CoordinatorMessage, DecodeError, decode_coordinator_message};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio::time::{Instant, sleep_until};
use tokio_tungstenite::tungstenite::{self, Message};
use tokio_util::task::TaskTracker;

use crate::config::{Config, Identity};
use crate::health::{BinaryHealth, Health, HealthChecker, RootHealth, check_executable};
use crate::output::{JobOutput, OutputConfig};
use crate::paths::{PathRoots, check_working_directory};
use crate::process::{ExitInfo, JobCommand, JobControl, JobEvent, JobSettings, RunningJob};
use crate::progress::{ProgressMode, ProgressSnapshot};
use crate::session::{
    self, BACKOFF_RESET_AFTER, Backoff, ConnectError, DEFAULT_MAX_FRAME_BYTES, Outbound, WsStream,
};

/// Frames queued for the writer. Output is queued only while more than [`OUTPUT_RESERVE`] places are free, so
/// control frames always find room and at most 16 output frames (4 MiB) wait in memory; a queue that still fills
/// means the coordinator does not read, and the connection is dropped.
const OUTBOUND_CAPACITY: usize = 64;
const OUTPUT_RESERVE: usize = 48;
/// Events from job tasks and stdin writers. Each job sends few events (progress is throttled to 2 per second).
const JOB_EVENTS_CAPACITY: usize = 256;
/// The heartbeat interval assumed before the first `welcome`.
const DEFAULT_HEARTBEAT: Duration = Duration::from_secs(5);
/// Intervals without a frame from the coordinator before the connection is dropped (the coordinator's default).
const MISSED_HEARTBEATS: u32 = 3;
/// A forced stop waits this long at most for outstanding `ack`s.
const FORCED_ACK_WAIT: Duration = Duration::from_secs(5);
/// A closing writer gets this long to send what it has.
const WRITER_FINISH_WAIT: Duration = Duration::from_secs(2);
/// Tasks (jobs, readers, writers) get this long to end when the worker returns.
const TASKS_WAIT: Duration = Duration::from_secs(5);
/// A clock further than this from the coordinator's is logged.
const CLOCK_SKEW_WARNING_MS: i64 = 60_000;
/// No job's heartbeat interval is taken as shorter than this.
const MIN_JOB_HEARTBEAT: Duration = Duration::from_millis(100);

/// A signal the worker reacts to, delivered through a channel so tests can drive them (cli.md §3.4).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WorkerSignal {
    /// SIGTERM: drain (a second one forces the stop).
    Terminate,
    /// SIGINT: as SIGTERM.
    Interrupt,
    /// SIGHUP: re-run the binary and path checks now.
    Hangup,
}

impl WorkerSignal {
    /// `SIGTERM`, `SIGINT`, `SIGHUP`: the `drain.reason` and the log field.
    pub fn name(self) -> &'static str {
        match self {
            WorkerSignal::Terminate => "SIGTERM",
            WorkerSignal::Interrupt => "SIGINT",
            WorkerSignal::Hangup => "SIGHUP",
        }
    }
}

/// Why the worker could not start.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BuildError {
    /// None of the configured binaries is usable: `ffmpeg: /usr/bin/ffmpeg: No such file or directory (os error 2)`,
    /// one `; `-separated entry per binary.
    #[error("no usable binary: {0}")]
    NoUsableBinary(String),
}

/// Why [`Worker::run_until`] ended other than by a drain or a forced stop.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RunError {
    /// Close 4002: the coordinator does not speak this worker's protocol version; retrying cannot help.
    #[error("protocol version not supported: {message}")]
    VersionUnsupported { message: String },
    /// Close 4005: the coordinator refused the `hello` (a configuration problem).
    #[error("the coordinator refused the hello: {message}")]
    InvalidHello { message: String },
    /// Close 4000 on the current session: another process took over this identity.
    #[error(
        "another session of {worker_id} replaced this one; is a second dffmpeg-worker running with the same client_id?"
    )]
    Replaced { worker_id: String },
}

impl RunError {
    /// The process exit code (cli.md §3.4): 3 for an unsupported protocol version, else 1.
    pub fn exit_code(&self) -> u8 {
        match self {
            RunError::VersionUnsupported { .. } => 3,
            RunError::InvalidHello { .. } | RunError::Replaced { .. } => 1,
        }
    }
}

/// A started-up worker: configuration, identity and the first health reading.
#[derive(Debug)]
pub struct Worker {
    config: Config,
    identity: Identity,
    checker: HealthChecker,
    health: Health,
}

impl Worker {
    /// Runs the start-up checks (binaries with their versions, path roots) and logs each result with the lines of
    /// cli.md §3.1. Fails when no binary is usable. Connects to nothing.
    pub async fn build(config: Config, identity: Identity) -> Result<Worker, BuildError> {
        let checker = HealthChecker::new(&config);
        let health = checker.check(None).await;
        log_health_changes(None, &health);
        if health.usable_binaries().is_empty() {
            let details: Vec<String> = health
                .binaries
                .iter()
                .map(|(name, binary)| match binary {
                    BinaryHealth::Unavailable {
                        path: Some(path),
                        error,
                    } => format!("{name}: {}: {error}", path.display()),
                    BinaryHealth::Unavailable { path: None, error } => format!("{name}: {error}"),
                    BinaryHealth::Ready { path, .. } => format!("{name}: {}", path.display()),
                })
                .collect();
            return Err(BuildError::NoUsableBinary(details.join("; ")));
        }
        Ok(Worker {
            config,
            identity,
            checker,
            health,
        })
    }

    /// The start-up health reading.
    pub fn health(&self) -> &Health {
        &self.health
    }

    /// Runs the session loop until the worker has drained (`Ok`, exit 0), was stopped by a second signal (`Ok`),
    /// or must exit with an error. Signals come in through `signals`; a closed channel means no more signals.
    pub async fn run_until(self, signals: mpsc::Receiver<WorkerSignal>) -> Result<(), RunError> {
        Agent::new(self, signals).run().await
    }
}

/// Logs each binary and path variable whose state is new or changed (all of them at start).
fn log_health_changes(previous: Option<&Health>, health: &Health) {
    for (name, binary) in &health.binaries {
        if previous.and_then(|previous| previous.binaries.get(name)) == Some(binary) {
            continue;
        }
        match binary {
            BinaryHealth::Ready { path, version } => tracing::info!(
                name = %name,
                path = %path.display(),
                version = version.as_deref().unwrap_or("unknown"),
                "binary ready"
            ),
            BinaryHealth::Unavailable { path, error } => tracing::warn!(
                name = %name,
                path = %path.as_deref().map_or_else(|| name.clone(), |path| path.display().to_string()),
                error = %error,
                "binary unavailable"
            ),
        }
    }
    for (name, root) in &health.paths {
        if previous.and_then(|previous| previous.paths.get(name)) == Some(root) {
            continue;
        }
        match root {
            RootHealth::Healthy { canonical, .. } => {
                tracing::info!(name = %name, root = %canonical.display(), "path variable ready")
            }
            RootHealth::Unhealthy { configured, reason } => tracing::warn!(
                name = %name,
                root = %configured.display(),
                reason = %reason,
                "path variable unhealthy"
            ),
        }
    }
}

/// What job tasks and stdin writers tell the agent.
#[derive(Debug)]
enum JobMessage {
    Progress(JobRef, ProgressSnapshot),
    Exited(JobRef, ExitInfo),
    StdinWritten {
        job: JobRef,
        offset: u64,
        closed: bool,
    },
}

/// A job this worker holds: running, or finished with its report in the outbox.
#[derive(Debug)]
struct HeldJob {
    /// `assign_job.heartbeat_interval_ms`: heartbeats go at least this often while the job is held.
    heartbeat_interval: Duration,
    output: JobOutput,
    phase: JobPhase,
    /// The latest progress not yet sent (while disconnected only the latest is kept).
    progress: Option<JobProgress>,
    /// The latest `stdin_written` not yet sent (one per flush interval at most).
    stdin_written: Option<StdinWritten>,
}

#[derive(Debug)]
enum JobPhase {
    Running {
        control: JobControl,
        /// Set by a forced stop: the end is reported as `job_abandoned`, not `job_finished`.
        abandon: bool,
        /// Feeds the job's stdin writer; `None` without stdin.
        stdin: Option<stdin::StdinSender>,
    },
    /// The outbox entry, kept until `ack`.
    Finished {
        report: JobFinished,
        /// Sent on the current connection (resent once after every reconnect).
        sent: bool,
    },
}

impl HeldJob {
    fn is_running(&self) -> bool {
        matches!(self.phase, JobPhase::Running { .. })
    }

    /// Stops the process at once, without a report (stale attempt, lease lost, replaced session).
    fn kill(&self) {
        if let JobPhase::Running { control, .. } = &self.phase {
            control.kill_now();
        }
    }
}

/// The lease terms of the last `welcome`.
#[derive(Debug, Clone, Copy)]
struct LeaseTerms {
    heartbeat_interval: Duration,
    lease: Duration,
}

impl LeaseTerms {
    /// Worker-side give-up: `lease − heartbeat_interval` without a frame from the coordinator.
    fn give_up_after(&self) -> Duration {
        self.lease.saturating_sub(self.heartbeat_interval)
    }
}

/// The connection's state.
#[derive(Debug)]
enum Link {
    /// Waiting to reconnect.
    Down { retry_at: Instant },
    /// The connect task is opening a socket.
    Connecting {
        task: JoinHandle<Result<WsStream, ConnectError>>,
    },
    /// A socket is open (a session once `welcome` arrived).
    Up(Box<Connection>),
}

#[derive(Debug)]
struct Connection {
    stream: SplitStream<WsStream>,
    outbound: mpsc::Sender<Outbound>,
    writer: JoinHandle<Result<(), tungstenite::Error>>,
    opened_at: Instant,
    last_frame: Instant,
    /// What `hello` reported, becoming the session's baseline for heartbeat changes.
    hello_paths: Vec<String>,
    hello_binaries: Vec<String>,
    session: Option<Session>,
    /// Set when the writer's queue was full: the coordinator does not read, the connection is dropped.
    overloaded: bool,
    /// The writer's handle has returned (it must not be awaited again).
    writer_done: bool,
}

#[derive(Debug)]
struct Session {
    id: SessionId,
    heartbeat_interval: Duration,
    established_at: Instant,
    heartbeat_seq: u64,
    next_heartbeat: Instant,
    reported_paths: Vec<String>,
    reported_binaries: Vec<String>,
}

impl Connection {
    /// Queues a frame; false when it could not be queued (queue full: marked overloaded; writer gone).
    fn send(&mut self, message: &WorkerMessage) -> bool {
        match self.outbound.try_send(session::encode(message)) {
            Ok(()) => true,
            Err(mpsc::error::TrySendError::Full(_)) => {
                self.overloaded = true;
                false
            }
            Err(mpsc::error::TrySendError::Closed(_)) => false,
        }
    }

    /// Whether output may be queued now.
    fn has_output_room(&self) -> bool {
        !self.overloaded && self.outbound.capacity() > OUTPUT_RESERVE
    }
}

/// Something that happened on the connection.
enum LinkEvent {
    Connected(Result<Box<WsStream>, ConnectError>),
    Message(Option<Result<Message, tungstenite::Error>>),
    WriterEnded,
}

impl Link {
    /// The next connection event; pending while waiting to reconnect.
    async fn next_event(&mut self) -> LinkEvent {
        match self {
            Link::Down { .. } => std::future::pending().await,
            Link::Connecting { task } => LinkEvent::Connected(match task.await {
                Ok(result) => result.map(Box::new),
                Err(error) => Err(ConnectError::Request {
                    url: String::new(),
                    message: format!("the connect task failed: {error}"),
                }),
            }),
            Link::Up(connection) => {
                let Connection {
                    stream,
                    writer,
                    writer_done,
                    ..
                } = &mut **connection;
                if *writer_done {
                    return LinkEvent::Message(stream.next().await);
                }
                tokio::select! {
                    message = stream.next() => LinkEvent::Message(message),
                    _ = writer => {
                        *writer_done = true;
                        LinkEvent::WriterEnded
                    }
                }
            }
        }
    }

    fn session(&mut self) -> Option<&mut Connection> {
        match self {
            Link::Up(connection) if connection.session.is_some() => Some(connection),
            _ => None,
        }
    }
}

/// How to reconnect after a connection ends.
#[derive(Debug, Clone, Copy)]
enum Retry {
    Backoff,
    Now,
}

/// A drain in progress (cli.md §3.4).
#[derive(Debug, Clone, Copy)]
struct Drain {
    since: Instant,
    /// `drain_timeout_seconds` after the drain began.
    deadline: Option<Instant>,
}

/// A forced stop in progress.
#[derive(Debug, Clone, Copy)]
struct Forced {
    /// Set once no job runs: outstanding reports get until then for their `ack`.
    ack_deadline: Option<Instant>,
}

/// The settings the agent reads.
#[derive(Debug)]
struct Settings {
    url: String,
    max_concurrent_jobs: u32,
    capabilities: Vec<String>,
    enable_job_draining: bool,
    min_drain: Duration,
    drain_timeout: Option<Duration>,
    kill_grace: Duration,
    progress: ProgressMode,
    default_working_directory: Option<PathBuf>,
    follow_symlinks_outside_roots: bool,
    output: OutputConfig,
    flush_interval: Duration,
    check_interval: Duration,
    host: Option<String>,
}

struct Agent {
    settings: Settings,
    identity: Identity,
    checker: HealthChecker,
    health: Health,
    path_roots: PathRoots,
    jobs: BTreeMap<JobRef, HeldJob>,
    job_events_tx: mpsc::Sender<JobMessage>,
    job_events: mpsc::Receiver<JobMessage>,
    signals: mpsc::Receiver<WorkerSignal>,
    signals_open: bool,
    link: Link,
    backoff: Backoff,
    /// The last frame from the coordinator, on any connection.
    last_contact: Option<Instant>,
    lease: Option<LeaseTerms>,
    max_frame_bytes: usize,
    /// `shutdown.reconnect_after_ms` of the current connection.
    reconnect_after: Option<Duration>,
    /// The last `error` frame, whose message explains a following close 4002 or 4005.
    last_error: Option<ErrorFrame>,
    drain: Option<Drain>,
    forced: Option<Forced>,
    health_task: Option<JoinHandle<Health>>,
    next_health_check: Instant,
    next_flush: Instant,
    tasks: TaskTracker,
    exit: Option<Result<(), RunError>>,
}

impl Agent {
    fn new(worker: Worker, signals: mpsc::Receiver<WorkerSignal>) -> Agent {
        let Worker {
            config,
            identity,
            checker,
            health,
        } = worker;
        let now = Instant::now();
        let settings = Settings {
            url: config.coordinator.session_url(),
            max_concurrent_jobs: config.max_concurrent_jobs,
            capabilities: config.capabilities.clone(),
            enable_job_draining: config.enable_job_draining,
            min_drain: config.min_drain_time_seconds,
            drain_timeout: config.drain_timeout_seconds,
            kill_grace: config.kill_grace_seconds,
            progress: config.progress.mode(),
            default_working_directory: config.default_working_directory.clone(),
            follow_symlinks_outside_roots: config.follow_symlinks_outside_roots,
            output: config.output.to_output_config(),
            flush_interval: Duration::from_millis(config.output.flush_interval_ms),
            check_interval: config.mount_check_interval,
            host: host_name(),
        };
        let (job_events_tx, job_events) = mpsc::channel(JOB_EVENTS_CAPACITY);
        let path_roots = health.path_roots(settings.follow_symlinks_outside_roots);
        Agent {
            next_health_check: now + settings.check_interval,
            next_flush: now,
            settings,
            identity,
            checker,
            health,
            path_roots,
            jobs: BTreeMap::new(),
            job_events_tx,
            job_events,
            signals,
            signals_open: true,
            link: Link::Down { retry_at: now },
            backoff: Backoff::new(config.reconnect.initial_delay, config.reconnect.max_delay),
            last_contact: None,
            lease: None,
            max_frame_bytes: DEFAULT_MAX_FRAME_BYTES,
            reconnect_after: None,
            last_error: None,
            drain: None,
            forced: None,
            health_task: None,
            tasks: TaskTracker::new(),
            exit: None,
        }
    }

    async fn run(mut self) -> Result<(), RunError> {
        loop {
            self.check_done(Instant::now());
            if let Some(result) = self.exit.take() {
                return self.finish(result).await;
            }
            let deadline = self.next_deadline(Instant::now());
            tokio::select! {
                signal = self.signals.recv(), if self.signals_open => self.on_signal(signal),
                Some(message) = self.job_events.recv() => self.on_job_message(message),
                event = self.link.next_event() => self.on_link_event(event).await,
                health = join_health(&mut self.health_task) => self.on_health(health),
                () = sleep_until(deadline) => self.on_timers(Instant::now()),
            }
            if let Link::Up(connection) = &self.link
                && connection.overloaded
            {
                self.disconnect(
                    "the coordinator does not read the worker's frames".to_owned(),
                    None,
                    Retry::Backoff,
                );
            }
        }
    }

    // ----- timers -------------------------------------------------------------------------------------------

    fn heartbeat_interval(&self, session_interval: Duration) -> Duration {
        self.jobs
            .values()
            .map(|job| job.heartbeat_interval.max(MIN_JOB_HEARTBEAT))
            .fold(session_interval, Duration::min)
    }

    /// The span without a frame after which a connection is dropped.
    fn liveness_span(&self) -> Duration {
        let heartbeat = self
            .lease
            .map_or(DEFAULT_HEARTBEAT, |terms| terms.heartbeat_interval);
        heartbeat * MISSED_HEARTBEATS
    }

    fn lease_deadline(&self) -> Option<Instant> {
        if self.jobs.is_empty() || matches!(&self.link, Link::Up(c) if c.session.is_some()) {
            return None;
        }
        let terms = self.lease?;
        Some(self.last_contact? + terms.give_up_after())
    }

    fn next_deadline(&self, now: Instant) -> Instant {
        let mut deadline = now + Duration::from_secs(3600);
        let mut consider = |at: Option<Instant>| {
            if let Some(at) = at {
                deadline = deadline.min(at);
            }
        };
        match &self.link {
            Link::Down { retry_at } => consider(Some(*retry_at)),
            Link::Connecting { .. } => {}
            Link::Up(connection) => {
                consider(Some(connection.last_frame + self.liveness_span()));
                if let Some(session) = &connection.session {
                    consider(Some(session.next_heartbeat));
                    if !self.jobs.is_empty() {
                        consider(Some(self.next_flush));
                    }
                }
            }
        }
        consider(self.lease_deadline());
        if self.health_task.is_none() {
            consider(Some(self.next_health_check));
        }
        if let Some(drain) = self.drain {
            consider(drain.deadline.filter(|_| self.forced.is_none()));
            if self.jobs.is_empty() {
                consider(Some(drain.since + self.settings.min_drain));
            }
        }
        if let Some(forced) = self.forced {
            consider(forced.ack_deadline);
        }
        deadline
    }

    fn on_timers(&mut self, now: Instant) {
        if self.link.session().is_some() && now >= self.next_flush {
            self.flush();
            self.next_flush = now + self.settings.flush_interval;
        }
        self.heartbeat_if_due(now);
        let liveness_span = self.liveness_span();
        if let Link::Up(connection) = &self.link
            && now >= connection.last_frame + liveness_span
        {
            self.disconnect(
                format!(
                    "no frame from the coordinator for {} s",
                    liveness_span.as_secs_f64()
                ),
                None,
                Retry::Backoff,
            );
        }
        if let Some(deadline) = self.lease_deadline()
            && now >= deadline
        {
            let silent = self
                .last_contact
                .map_or(Duration::ZERO, |contact| now - contact);
            let n_jobs = self.jobs.len();
            tracing::error!(
                "lost contact with the coordinator for {} s; {n_jobs} jobs given up",
                silent.as_secs()
            );
            self.give_up_all_jobs();
        }
        if let Link::Down { retry_at } = self.link
            && now >= retry_at
        {
            self.start_connecting();
        }
        if self.health_task.is_none() && now >= self.next_health_check {
            self.start_health_check();
        }
        if let Some(Drain {
            deadline: Some(deadline),
            ..
        }) = self.drain
            && self.forced.is_none()
            && now >= deadline
        {
            tracing::warn!("drain timeout reached; stopping the running jobs");
            self.force_stop();
        }
    }

    fn heartbeat_if_due(&mut self, now: Instant) {
        let Some(session_interval) = self
            .link
            .session()
            .and_then(|connection| connection.session.as_ref())
            .map(|session| session.heartbeat_interval)
        else {
            return;
        };
        let interval = self.heartbeat_interval(session_interval);
        let jobs: Vec<JobRef> = self.jobs.keys().copied().collect();
        let paths = self.health.healthy_paths();
        let binaries = self.health.usable_binaries();
        let Some(connection) = self.link.session() else {
            return;
        };
        let Some(session) = connection.session.as_mut() else {
            return;
        };
        if now < session.next_heartbeat {
            return;
        }
        session.heartbeat_seq += 1;
        let heartbeat = protocol::ws::Heartbeat {
            seq: session.heartbeat_seq,
            jobs,
            paths: (paths != session.reported_paths).then(|| paths.clone()),
            binaries: (binaries != session.reported_binaries).then(|| binaries.clone()),
        };
        session.reported_paths = paths;
        session.reported_binaries = binaries;
        session.next_heartbeat = now + session::jittered(interval, 0.1);
        connection.send(&WorkerMessage::Heartbeat(heartbeat));
    }

    // ----- signals, drain, exit ----------------------------------------------------------------------------

    fn on_signal(&mut self, signal: Option<WorkerSignal>) {
        let Some(signal) = signal else {
            self.signals_open = false;
            return;
        };
        match signal {
            WorkerSignal::Hangup => {
                tracing::info!(
                    signal = signal.name(),
                    "re-checking binaries and path roots"
                );
                if self.health_task.is_none() {
                    self.start_health_check();
                }
            }
            WorkerSignal::Terminate | WorkerSignal::Interrupt => {
                if self.forced.is_some() {
                    tracing::info!(signal = signal.name(), "already stopping");
                } else if self.drain.is_some() {
                    tracing::warn!(
                        signal = signal.name(),
                        "second signal; stopping the running jobs"
                    );
                    self.force_stop();
                } else if self.settings.enable_job_draining {
                    self.start_drain(signal.name(), true);
                } else {
                    self.start_drain(signal.name(), true);
                    self.force_stop();
                }
            }
        }
    }

    /// Stops taking jobs; tells the coordinator when `announce` (a drain it asked for needs no answer).
    fn start_drain(&mut self, reason: &str, announce: bool) {
        if self.drain.is_some() {
            return;
        }
        let now = Instant::now();
        self.drain = Some(Drain {
            since: now,
            deadline: self.settings.drain_timeout.map(|timeout| now + timeout),
        });
        tracing::info!(reason, running_jobs = self.running_jobs(), "draining");
        if announce && let Some(connection) = self.link.session() {
            connection.send(&WorkerMessage::Drain(WorkerDrain {
                reason: Some(reason.to_owned()),
            }));
        }
    }

    /// Stops every running job (SIGTERM, grace, SIGKILL); each is given back with `job_abandoned` when it ends.
    fn force_stop(&mut self) {
        if self.forced.is_some() {
            return;
        }
        if self.drain.is_none() {
            self.start_drain("shutdown", false);
        }
        self.forced = Some(Forced { ack_deadline: None });
        for job in self.jobs.values_mut() {
            if let JobPhase::Running {
                control, abandon, ..
            } = &mut job.phase
            {
                *abandon = true;
                control.terminate();
            }
        }
    }

    /// Decides whether the worker is done (drained, or the forced stop finished).
    fn check_done(&mut self, now: Instant) {
        if self.exit.is_some() {
            return;
        }
        if let Some(forced) = &mut self.forced {
            if self.jobs.values().any(HeldJob::is_running) {
                return;
            }
            let deadline = *forced.ack_deadline.get_or_insert(now + FORCED_ACK_WAIT);
            if self.jobs.is_empty() || now >= deadline {
                tracing::info!(unacknowledged = self.jobs.len(), "stopped");
                self.exit = Some(Ok(()));
            }
            return;
        }
        if let Some(drain) = self.drain
            && self.jobs.is_empty()
            && now >= drain.since + self.settings.min_drain
        {
            tracing::info!("drained");
            self.exit = Some(Ok(()));
        }
    }

    /// Closes the connection (1000 when leaving cleanly), stops whatever still runs, and waits for the tasks.
    async fn finish(mut self, result: Result<(), RunError>) -> Result<(), RunError> {
        match std::mem::replace(
            &mut self.link,
            Link::Down {
                retry_at: Instant::now(),
            },
        ) {
            Link::Up(connection) => {
                let Connection {
                    outbound,
                    mut writer,
                    writer_done,
                    ..
                } = *connection;
                if result.is_ok() {
                    let _ = outbound.try_send(Outbound::Close {
                        code: close::NORMAL,
                        reason: "drained".to_owned(),
                    });
                }
                drop(outbound);
                if !writer_done
                    && tokio::time::timeout(WRITER_FINISH_WAIT, &mut writer)
                        .await
                        .is_err()
                {
                    writer.abort();
                }
            }
            Link::Connecting { task } => task.abort(),
            Link::Down { .. } => {}
        }
        if let Some(task) = self.health_task.take() {
            task.abort();
        }
        for job in self.jobs.values() {
            job.kill();
        }
        self.jobs.clear();
        // Job tasks may be waiting to send their last event: with the receiver gone they end at once.
        drop(self.job_events);
        self.tasks.close();
        if tokio::time::timeout(TASKS_WAIT, self.tasks.wait())
            .await
            .is_err()
        {
            tracing::warn!("job tasks still running after {} s", TASKS_WAIT.as_secs());
        }
        result
    }

    // ----- health ------------------------------------------------------------------------------------------

    fn start_health_check(&mut self) {
        let checker = self.checker.clone();
        let previous = self.health.clone();
        self.health_task = Some(tokio::spawn(
            async move { checker.check(Some(&previous)).await },
        ));
    }

    fn on_health(&mut self, health: Option<Health>) {
        self.health_task = None;
        self.next_health_check = Instant::now() + self.settings.check_interval;
        let Some(health) = health else {
            return;
        };
        log_health_changes(Some(&self.health), &health);
        self.path_roots = health.path_roots(self.settings.follow_symlinks_outside_roots);
        self.health = health;
    }
}

/// Waits for the running health check; pending when there is none.
async fn join_health(task: &mut Option<JoinHandle<Health>>) -> Option<Health> {
    match task {
        Some(handle) => handle.await.ok(),
        None => std::future::pending().await,
    }
}

/// The host name for `hello.host` (at most 255 bytes), from the kernel.
fn host_name() -> Option<String> {
    let name = std::fs::read_to_string("/proc/sys/kernel/hostname").ok()?;
    let name = name.trim();
    (!name.is_empty() && name.len() <= 255).then(|| name.to_owned())
}

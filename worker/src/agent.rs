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

    // ----- connection --------------------------------------------------------------------------------------

    fn start_connecting(&mut self) {
        let url = self.settings.url.clone();
        let identity = self.identity.clone();
        let max_frame_bytes = self.max_frame_bytes;
        self.link = Link::Connecting {
            task: tokio::spawn(
                async move { session::connect(&url, &identity, max_frame_bytes).await },
            ),
        };
    }

    async fn on_link_event(&mut self, event: LinkEvent) {
        match event {
            LinkEvent::Connected(Ok(stream)) => self.on_connected(stream),
            LinkEvent::Connected(Err(error)) => {
                match &error {
                    ConnectError::Refused { status, detail } => {
                        tracing::error!(status, detail = %detail, "coordinator refused the worker")
                    }
                    other => tracing::warn!(error = %other, "connecting to the coordinator failed"),
                }
                self.schedule_reconnect(Retry::Backoff, None);
            }
            LinkEvent::Message(message) => self.on_message(message).await,
            LinkEvent::WriterEnded => self.disconnect(
                "sending to the coordinator failed".to_owned(),
                None,
                Retry::Backoff,
            ),
        }
    }

    fn on_connected(&mut self, stream: Box<WsStream>) {
        let (sink, stream) = (*stream).split();
        let (outbound, queue) = mpsc::channel(OUTBOUND_CAPACITY);
        let writer = self.tasks.spawn(session::write_loop(sink, queue));
        let now = Instant::now();
        let hello = self.hello();
        let mut connection = Connection {
            stream,
            outbound,
            writer,
            opened_at: now,
            last_frame: now,
            hello_paths: hello.paths.clone(),
            hello_binaries: hello.binaries.clone(),
            session: None,
            overloaded: false,
            writer_done: false,
        };
        tracing::debug!(url = %self.settings.url, held_jobs = hello.jobs.len(), "sending hello");
        connection.send(&WorkerMessage::Hello(hello));
        self.reconnect_after = None;
        self.link = Link::Up(Box::new(connection));
    }

    fn hello(&self) -> Hello {
        let jobs = self
            .jobs
            .iter()
            .map(|(job, held)| HeldJobEntry {
                job_id: job.job_id,
                attempt: job.attempt,
                state: if held.is_running() {
                    HeldState::Running
                } else {
                    HeldState::Finished
                },
            })
            .collect();
        Hello {
            worker_id: self.identity.client_id.clone(),
            version: protocol::VERSION.to_owned(),
            protocol_version: PROTOCOL_VERSION,
            host: self.settings.host.clone(),
            binaries: self.health.usable_binaries(),
            binary_versions: self.health.binary_versions(),
            paths: self.health.healthy_paths(),
            capabilities: self.settings.capabilities.clone(),
            max_concurrent_jobs: self.settings.max_concurrent_jobs,
            status: if self.drain.is_some() {
                "draining"
            } else {
                "online"
            }
            .to_owned(),
            jobs,
        }
    }

    /// Drops the current connection, logs `disconnected`, and schedules the reconnect.
    fn disconnect(&mut self, error: String, close_code: Option<u16>, retry: Retry) {
        let session = match &self.link {
            Link::Up(connection) => connection
                .session
                .as_ref()
                .map(|session| (session.id, session.established_at.elapsed())),
            _ => None,
        };
        let session_id = session.map(|(id, _)| id.to_string()).unwrap_or_default();
        match close_code {
            Some(code) => {
                tracing::warn!(close_code = code, reason = %error, session_id = %session_id, "disconnected")
            }
            None => tracing::warn!(error = %error, session_id = %session_id, "disconnected"),
        }
        let session_lasted = session.map(|(_, lasted)| lasted);
        if let Link::Up(connection) = std::mem::replace(
            &mut self.link,
            Link::Down {
                retry_at: Instant::now(),
            },
        ) {
            let Connection {
                outbound,
                mut writer,
                writer_done,
                ..
            } = *connection;
            drop(outbound);
            // The writer sends what is queued (an error frame, a Close) and ends; a stuck one is stopped.
            if !writer_done {
                self.tasks.spawn(async move {
                    if tokio::time::timeout(WRITER_FINISH_WAIT, &mut writer)
                        .await
                        .is_err()
                    {
                        writer.abort();
                    }
                });
            }
        }
        self.schedule_reconnect(retry, session_lasted);
    }

    fn schedule_reconnect(&mut self, retry: Retry, session_lasted: Option<Duration>) {
        if session_lasted.is_some_and(|lasted| lasted >= BACKOFF_RESET_AFTER) {
            self.backoff.reset();
        }
        let delay = match (self.reconnect_after.take(), retry) {
            (Some(after), _) => after,
            (None, Retry::Now) => Duration::ZERO,
            (None, Retry::Backoff) => self.backoff.next_delay(),
        };
        tracing::info!(
            delay_ms = u64::try_from(delay.as_millis()).unwrap_or(u64::MAX),
            "reconnecting"
        );
        self.link = Link::Down {
            retry_at: Instant::now() + delay,
        };
    }

    async fn on_message(&mut self, message: Option<Result<Message, tungstenite::Error>>) {
        let message = match message {
            None => {
                return self.disconnect("the connection ended".to_owned(), None, Retry::Backoff);
            }
            Some(Err(error)) => return self.disconnect(error.to_string(), None, Retry::Backoff),
            Some(Ok(message)) => message,
        };
        let now = Instant::now();
        self.last_contact = Some(now);
        if let Link::Up(connection) = &mut self.link {
            connection.last_frame = now;
        }
        match message {
            Message::Binary(bytes) => match decode_coordinator_message(&bytes) {
                Ok(frame) => self.on_frame(frame).await,
                Err(DecodeError::UnknownType(kind)) => {
                    tracing::warn!(code = protocol::ws::error_code::UNKNOWN_MESSAGE, message_type = %kind,
                        "unknown message type from the coordinator")
                }
                Err(DecodeError::Malformed(detail)) => {
                    if let Link::Up(connection) = &mut self.link {
                        let _ = connection.outbound.try_send(error_frame(
                            protocol::ws::error_code::MALFORMED_MESSAGE,
                            &detail,
                        ));
                        let _ = connection.outbound.try_send(Outbound::Close {
                            code: close::INVALID_PAYLOAD,
                            reason: "malformed message".to_owned(),
                        });
                    }
                    self.disconnect(
                        format!("malformed message from the coordinator: {detail}"),
                        None,
                        Retry::Backoff,
                    );
                }
            },
            Message::Text(_) => {
                if let Link::Up(connection) = &mut self.link {
                    let _ = connection.outbound.try_send(Outbound::Close {
                        code: close::UNSUPPORTED_DATA,
                        reason: "text frame".to_owned(),
                    });
                }
                self.disconnect(
                    "the coordinator sent a text frame".to_owned(),
                    None,
                    Retry::Backoff,
                );
            }
            // tungstenite answers a Ping with a Pong on its own; both count as signs of life.
            Message::Ping(_) | Message::Pong(_) | Message::Frame(_) => {}
            Message::Close(frame) => self.on_close(frame),
        }
    }

    fn on_close(&mut self, frame: Option<tungstenite::protocol::CloseFrame>) {
        let (code, reason) = match &frame {
            Some(frame) => (u16::from(frame.code), frame.reason.to_string()),
            None => (1005, String::new()),
        };
        let explained = || {
            self.last_error
                .as_ref()
                .map_or_else(|| reason.clone(), |error| error.message.clone())
        };
        match code {
            close::VERSION_UNSUPPORTED => {
                let message = explained();
                tracing::error!(close_code = code, message = %message, "the coordinator does not support this protocol version");
                self.exit = Some(Err(RunError::VersionUnsupported { message }));
            }
            close::INVALID_HELLO => {
                let message = explained();
                tracing::error!(close_code = code, message = %message, "the coordinator refused the hello");
                self.exit = Some(Err(RunError::InvalidHello { message }));
            }
            close::REPLACED => {
                let error = RunError::Replaced {
                    worker_id: self.identity.client_id.clone(),
                };
                tracing::error!(close_code = code, "{error}");
                self.give_up_all_jobs();
                self.exit = Some(Err(error));
            }
            close::HEARTBEAT_TIMEOUT => self.disconnect(reason, Some(code), Retry::Now),
            close::IDENTITY_REVOKED => {
                tracing::error!(
                    close_code = code,
                    worker_id = %self.identity.client_id,
                    "the coordinator deleted this identity or rotated its key"
                );
                self.disconnect(reason, Some(code), Retry::Backoff);
            }
            _ => self.disconnect(reason, Some(code), Retry::Backoff),
        }
    }

    // ----- frames ------------------------------------------------------------------------------------------

    async fn on_frame(&mut self, frame: CoordinatorMessage) {
        let established = self.link.session().is_some();
        match frame {
            CoordinatorMessage::Welcome(welcome) if !established => self.on_welcome(welcome),
            CoordinatorMessage::Error(error) => {
                if error.fatal {
                    tracing::error!(code = %error.code, message = %error.message, "error from the coordinator");
                } else {
                    tracing::warn!(code = %error.code, message = %error.message, "error from the coordinator");
                }
                self.last_error = Some(error);
            }
            CoordinatorMessage::Shutdown(shutdown) => {
                tracing::info!(reason = %shutdown.reason, reconnect_after_ms = shutdown.reconnect_after_ms,
                    "the coordinator is shutting down");
                self.reconnect_after = Some(Duration::from_millis(u64::from(
                    shutdown.reconnect_after_ms,
                )));
            }
            other if !established => {
                tracing::warn!(
                    message_type = other.type_name(),
                    "frame before welcome ignored"
                );
            }
            CoordinatorMessage::Welcome(_) => tracing::warn!("second welcome ignored"),
            CoordinatorMessage::HeartbeatAck(_) => {}
            CoordinatorMessage::AssignJob(assign) => self.on_assign(assign).await,
            CoordinatorMessage::CancelJob(cancel) => self.on_cancel(cancel),
            CoordinatorMessage::JobStdin(frame) => self.on_stdin(frame),
            CoordinatorMessage::Ack(ack) => {
                let job = JobRef {
                    job_id: ack.job_id,
                    attempt: ack.attempt,
                };
                match self.jobs.get(&job) {
                    Some(held) if !held.is_running() => {
                        tracing::debug!(job_id = %job.job_id, attempt = job.attempt, result = ?ack.result, "report acknowledged");
                        self.jobs.remove(&job);
                    }
                    Some(_) => {
                        tracing::warn!(job_id = %job.job_id, attempt = job.attempt, "ack for a running job ignored")
                    }
                    None => {}
                }
            }
            CoordinatorMessage::Drain(drain) => {
                if self.drain.is_none() {
                    tracing::info!(reason = %drain.reason, "the coordinator asked this worker to drain");
                    self.start_drain(&drain.reason, false);
                }
            }
        }
    }

    fn on_welcome(&mut self, welcome: Welcome) {
        if welcome.protocol_version.major != PROTOCOL_VERSION.major {
            tracing::warn!(protocol_version = %welcome.protocol_version, "welcome with another major version");
        }
        let skew = welcome.server_time_ms - crate::now_ms();
        if skew.abs() > CLOCK_SKEW_WARNING_MS {
            tracing::warn!(
                difference_ms = skew,
                "this worker's clock differs from the coordinator's"
            );
        }
        let heartbeat_interval =
            Duration::from_millis(u64::from(welcome.heartbeat_interval_ms.max(1)));
        self.lease = Some(LeaseTerms {
            heartbeat_interval,
            lease: Duration::from_millis(u64::from(welcome.lease_ms)),
        });
        if welcome.max_frame_bytes > 0 {
            self.max_frame_bytes = welcome.max_frame_bytes as usize;
        }
        tracing::info!(
            url = %self.settings.url,
            session_id = %welcome.session_id,
            protocol_version = %welcome.protocol_version,
            lease_ms = welcome.lease_ms,
            "connected"
        );
        let offered = self.health.usable_binaries();
        let refused: Vec<&String> = offered
            .iter()
            .filter(|name| !welcome.binaries.contains(name))
            .collect();
        if !refused.is_empty() {
            tracing::info!(binaries = ?refused, "binaries not in the coordinator's allowed_binaries");
        }
        for canceled in &welcome.cancel {
            let job = JobRef {
                job_id: canceled.job_id,
                attempt: canceled.attempt,
            };
            if let Some(held) = self.jobs.remove(&job) {
                tracing::info!(job_id = %job.job_id, attempt = job.attempt, reason = %canceled.reason,
                    "held job given up at the coordinator's request");
                held.kill();
            }
        }
        for resumed in &welcome.resumed {
            let job = JobRef {
                job_id: resumed.job_id,
                attempt: resumed.attempt,
            };
            if let Some(held) = self.jobs.get(&job) {
                let first = held.output.resend_from(resumed.next_output_seq);
                tracing::debug!(job_id = %job.job_id, attempt = job.attempt,
                    next_output_seq = resumed.next_output_seq, first_resent = first, "job resumed");
            }
        }
        for (job, held) in self.jobs.iter_mut() {
            if !welcome
                .resumed
                .iter()
                .any(|resumed| resumed.job_id == job.job_id && resumed.attempt == job.attempt)
            {
                // Kept: the coordinator's fencing answers any frame about it (`cancel_job`, `ack {stale}`).
                tracing::warn!(job_id = %job.job_id, attempt = job.attempt, "held job neither resumed nor canceled");
            }
            if let JobPhase::Finished { sent, .. } = &mut held.phase {
                *sent = false;
            }
        }
        let now = Instant::now();
        let interval = self.heartbeat_interval(heartbeat_interval);
        if let Link::Up(connection) = &mut self.link {
            connection.session = Some(Session {
                id: welcome.session_id,
                heartbeat_interval,
                established_at: now,
                heartbeat_seq: 0,
                next_heartbeat: now + session::jittered(interval, 0.1),
                reported_paths: std::mem::take(&mut connection.hello_paths),
                reported_binaries: std::mem::take(&mut connection.hello_binaries),
            });
            tracing::debug!(session_id = %welcome.session_id, opened_ms = connection.opened_at.elapsed().as_millis() as u64, "session established");
        }
        // Resent output, then the outbox, right after welcome.
        self.flush();
        self.next_flush = now + self.settings.flush_interval;
    }

    // ----- jobs --------------------------------------------------------------------------------------------

    fn running_jobs(&self) -> usize {
        self.jobs.values().filter(|job| job.is_running()).count()
    }

    /// Kills every held job and discards its reports (lease lost, session replaced).
    fn give_up_all_jobs(&mut self) {
        for held in std::mem::take(&mut self.jobs).into_values() {
            held.kill();
        }
    }

    fn send_to_session(&mut self, message: WorkerMessage) {
        if let Some(connection) = self.link.session() {
            connection.send(&message);
        }
    }

    fn reject(&mut self, job: JobRef, code: &str, message: String) {
        tracing::info!(job_id = %job.job_id, attempt = job.attempt, code, message = %message, "job rejected");
        self.send_to_session(WorkerMessage::JobRejected(JobRejected {
            job_id: job.job_id,
            attempt: job.attempt,
            code: code.to_owned(),
            message,
        }));
    }

    async fn on_assign(&mut self, assign: AssignJob) {
        let job = JobRef {
            job_id: assign.job_id,
            attempt: assign.attempt,
        };
        if self.jobs.contains_key(&job) {
            tracing::warn!(job_id = %job.job_id, attempt = job.attempt, "duplicate assign_job ignored");
            return;
        }
        // An earlier attempt of the same job still here is stale: killed, its reports dropped.
        let stale: Vec<JobRef> = self
            .jobs
            .keys()
            .filter(|held| held.job_id == assign.job_id)
            .copied()
            .collect();
        for old in stale {
            if let Some(held) = self.jobs.remove(&old) {
                tracing::info!(job_id = %old.job_id, attempt = old.attempt, new_attempt = job.attempt,
                    "earlier attempt stopped");
                held.kill();
            }
        }
        if self.drain.is_some() || self.forced.is_some() {
            return self.reject(
                job,
                reject_code::DRAINING,
                "the worker is draining".to_owned(),
            );
        }
        let running = self.running_jobs();
        if running >= self.settings.max_concurrent_jobs as usize {
            return self.reject(
                job,
                reject_code::NO_CAPACITY,
                format!(
                    "all {} slots of this worker are busy",
                    self.settings.max_concurrent_jobs
                ),
            );
        }
        let Some(executable) = self.health.executable(&assign.binary).map(PathBuf::from) else {
            return self.reject(
                job,
                reject_code::BINARY_UNAVAILABLE,
                format!("binary {} is not available on this worker", assign.binary),
            );
        };
        if let Err(error) = check_executable(&executable) {
            return self.reject(
                job,
                reject_code::BINARY_UNAVAILABLE,
                format!(
                    "binary {} ({}): {error}",
                    assign.binary,
                    executable.display()
                ),
            );
        }
        if let Err(error) = self.path_roots.check_variables(&assign.paths) {
            return self.reject(job, error.code(), error.to_string());
        }
        let unhealthy: Vec<&str> = assign
            .paths
            .iter()
            .filter(|name| self.path_roots.root(name).is_none_or(|root| !root.is_dir()))
            .map(String::as_str)
            .collect();
        if !unhealthy.is_empty() {
            return self.reject(
                job,
                reject_code::PATH_VARIABLE_UNAVAILABLE,
                format!(
                    "path variables not available on this worker: {}",
                    unhealthy.join(", ")
                ),
            );
        }
        // Check 5, the argument policy: its switches are refused at start, so every job passes.
        let resolved = match self
            .path_roots
            .resolve_assignment(&assign, self.settings.default_working_directory.as_deref())
        {
            Ok(resolved) => resolved,
            Err(error) if error.is_rejection() => {
                return self.reject(job, error.code(), error.to_string());
            }
            Err(error) => {
                return self.fail_without_running(job, &assign, error.code(), error.to_string());
            }
        };
        if let Err(error) = check_working_directory(resolved.working_directory.as_deref()) {
            return self.reject(job, error.code(), error.to_string());
        }
        let command = JobCommand {
            binary_name: assign.binary.clone(),
            executable,
            arguments: resolved.arguments,
            working_directory: resolved.working_directory,
            stdin: assign.stdin,
        };
        let settings = JobSettings {
            progress: self.settings.progress,
            kill_grace: self.settings.kill_grace,
            output: self.settings.output.clone(),
            tasks: Some(self.tasks.clone()),
            ..JobSettings::default()
        };
        // The spawn goes through the core's spawner thread and takes a few milliseconds; frames wait meanwhile.
        self.spawn(job, assign, command, settings).await;
    }

    /// Starts the process; reports `job_accepted` or `job_rejected {spawn_failed}`.
    async fn spawn(
        &mut self,
        job: JobRef,
        assign: AssignJob,
        command: JobCommand,
        settings: JobSettings,
    ) {
        let mut running = match crate::process::spawn_job(command, &settings).await {
            Ok(running) => running,
            Err(error) => {
                return self.reject(job, error.code(), error.os_error().to_string());
            }
        };
        let pid = running.pid();
        let started_at_ms = running.started_at_ms();
        let stdin = running.take_stdin().map(|pipe| {
            let (sender, receiver) = stdin::channel();
            self.tasks.spawn(stdin::write_stdin(
                job,
                pipe,
                receiver,
                self.job_events_tx.clone(),
            ));
            sender
        });
        let held = HeldJob {
            heartbeat_interval: Duration::from_millis(u64::from(assign.heartbeat_interval_ms)),
            output: running.output().clone(),
            phase: JobPhase::Running {
                control: running.control(),
                abandon: false,
                stdin,
            },
            progress: None,
            stdin_written: None,
        };
        let job_heartbeat = held.heartbeat_interval.max(MIN_JOB_HEARTBEAT);
        self.jobs.insert(job, held);
        self.tasks
            .spawn(drive_job(job, running, self.job_events_tx.clone()));
        // A job with a shorter heartbeat interval brings the next heartbeat forward.
        if let Some(session) = self
            .link
            .session()
            .and_then(|connection| connection.session.as_mut())
        {
            let due = Instant::now() + session::jittered(job_heartbeat, 0.1);
            session.next_heartbeat = session.next_heartbeat.min(due);
        }
        tracing::info!(job_id = %job.job_id, attempt = job.attempt, pid, binary = %assign.binary,
            requester_id = %assign.requester_id, "job started");
        self.send_to_session(WorkerMessage::JobAccepted(JobAccepted {
            job_id: job.job_id,
            attempt: job.attempt,
            pid: Some(pid),
            started_at_ms,
        }));
    }

    /// `job_finished {failed, exit_code nil, error}` without `job_accepted` (path escape), kept in the outbox.
    fn fail_without_running(
        &mut self,
        job: JobRef,
        assign: &AssignJob,
        code: &str,
        message: String,
    ) {
        tracing::info!(job_id = %job.job_id, attempt = job.attempt, code, message = %message, "job failed before running");
        let report = JobFinished {
            job_id: job.job_id,
            attempt: job.attempt,
            status: FinishedStatus::Failed,
            exit_code: None,
            signal: None,
            error: Some(JobError {
                code: code.to_owned(),
                message,
            }),
            finished_at_ms: crate::now_ms(),
            output_seq_end: 0,
        };
        self.jobs.insert(
            job,
            HeldJob {
                heartbeat_interval: Duration::from_millis(u64::from(assign.heartbeat_interval_ms)),
                output: JobOutput::new(&self.settings.output),
                phase: JobPhase::Finished {
                    report,
                    sent: false,
                },
                progress: None,
                stdin_written: None,
            },
        );
        self.flush();
    }

    fn on_cancel(&mut self, cancel: CancelJob) {
        let job = JobRef {
            job_id: cancel.job_id,
            attempt: cancel.attempt,
        };
        let Some(held) = self.jobs.get(&job) else {
            tracing::debug!(job_id = %job.job_id, attempt = job.attempt, reason = %cancel.reason,
                "cancel_job for a job not held here ignored");
            return;
        };
        if cancel_reason::reports_nothing(&cancel.reason) {
            tracing::info!(job_id = %job.job_id, attempt = job.attempt, reason = %cancel.reason, "job given up");
            held.kill();
            self.jobs.remove(&job);
        } else if let JobPhase::Running { control, .. } = &held.phase {
            tracing::info!(job_id = %job.job_id, attempt = job.attempt, reason = %cancel.reason, "canceling job");
            control.cancel();
        }
    }

    fn on_stdin(&mut self, frame: JobStdin) {
        let job = JobRef {
            job_id: frame.job_id,
            attempt: frame.attempt,
        };
        match self.jobs.get(&job).map(|held| &held.phase) {
            Some(JobPhase::Running {
                stdin: Some(stdin), ..
            }) => stdin.send(frame),
            Some(_) => {
                tracing::debug!(job_id = %job.job_id, attempt = job.attempt, "job_stdin for a job without stdin dropped")
            }
            None => {}
        }
    }

    fn on_job_message(&mut self, message: JobMessage) {
        match message {
            JobMessage::Progress(job, snapshot) => {
                if let Some(held) = self.jobs.get_mut(&job)
                    && held.is_running()
                {
                    held.progress =
                        Some(snapshot.to_message(job.job_id, job.attempt, crate::now_ms()));
                }
            }
            JobMessage::StdinWritten {
                job,
                offset,
                closed,
            } => {
                if let Some(held) = self.jobs.get_mut(&job) {
                    held.stdin_written = Some(StdinWritten {
                        job_id: job.job_id,
                        attempt: job.attempt,
                        offset,
                        closed,
                    });
                }
            }
            JobMessage::Exited(job, exit) => self.on_exited(job, exit),
        }
    }

    fn on_exited(&mut self, job: JobRef, exit: ExitInfo) {
        let Some(held) = self.jobs.get_mut(&job) else {
            return;
        };
        let JobPhase::Running { abandon, .. } = &held.phase else {
            return;
        };
        if *abandon {
            tracing::info!(job_id = %job.job_id, attempt = job.attempt, exit_code = exit.exit_code, "job abandoned");
            // Its last output first (kept in the job's history at the coordinator), then the give-back.
            self.flush_job(job);
            self.jobs.remove(&job);
            self.send_to_session(WorkerMessage::JobAbandoned(JobAbandoned {
                job_id: job.job_id,
                attempt: job.attempt,
                reason: "worker_shutdown".to_owned(),
                message: "the worker is shutting down".to_owned(),
            }));
            return;
        }
        let report = exit.to_finished(
            job.job_id,
            job.attempt,
            crate::now_ms(),
            held.output.next_seq(),
        );
        tracing::info!(job_id = %job.job_id, attempt = job.attempt, status = ?report.status,
            exit_code = exit.exit_code, output_seq_end = report.output_seq_end, "job finished");
        held.phase = JobPhase::Finished {
            report,
            sent: false,
        };
        self.flush_job(job);
    }

    // ----- sending -----------------------------------------------------------------------------------------

    /// Sends what every held job has waiting: progress, output (round-robin, while the queue has room),
    /// `stdin_written`, and outbox reports whose output is all out.
    fn flush(&mut self) {
        let Some(connection) = self.link.session() else {
            return;
        };
        for held in self.jobs.values_mut() {
            send_job_extras(connection, held);
        }
        loop {
            let mut sent_any = false;
            for (job, held) in self.jobs.iter_mut() {
                if !connection.has_output_room() {
                    break;
                }
                if let Some(batch) = held.output.take_batch() {
                    connection.send(&WorkerMessage::JobLogs(
                        batch.into_message(job.job_id, job.attempt),
                    ));
                    sent_any = true;
                }
            }
            if !sent_any || !connection.has_output_room() {
                break;
            }
        }
        for held in self.jobs.values_mut() {
            send_report_if_ready(connection, held);
        }
    }

    /// [`Agent::flush`] for one job.
    fn flush_job(&mut self, job: JobRef) {
        let Some(connection) = self.link.session() else {
            return;
        };
        let Some(held) = self.jobs.get_mut(&job) else {
            return;
        };
        send_job_extras(connection, held);
        while connection.has_output_room() {
            let Some(batch) = held.output.take_batch() else {
                break;
            };
            connection.send(&WorkerMessage::JobLogs(
                batch.into_message(job.job_id, job.attempt),
            ));
        }
        send_report_if_ready(connection, held);
    }
}

/// Progress and `stdin_written` waiting for one job.
fn send_job_extras(connection: &mut Connection, held: &mut HeldJob) {
    if let Some(progress) = held.progress.take()
        && !connection.send(&WorkerMessage::JobProgress(progress.clone()))
    {
        held.progress = Some(progress);
    }
    if let Some(written) = held.stdin_written.take()
        && !connection.send(&WorkerMessage::StdinWritten(written.clone()))
    {
        held.stdin_written = Some(written);
    }
}

/// The outbox report, once per connection, after the job's last output.
fn send_report_if_ready(connection: &mut Connection, held: &mut HeldJob) {
    if let JobPhase::Finished { report, sent } = &mut held.phase
        && !*sent
        && !held.output.has_unsent()
        && held.progress.is_none()
        && connection.send(&WorkerMessage::JobFinished(report.clone()))
    {
        *sent = true;
    }
}

/// An `error` frame from the worker (only `malformed_message`, before a close 1007). `WorkerMessage` has no
/// `error` variant; the message has the same shape in both directions (worker-protocol.md §5.9), so the
/// coordinator's type encodes it.
fn error_frame(code: &str, message: &str) -> Outbound {
    Outbound::Frame(protocol::ws::encode(&CoordinatorMessage::Error(
        ErrorFrame {
            code: code.to_owned(),
            message: message.to_owned(),
            job_id: None,
            attempt: None,
            fatal: true,
        },
    )))
}

/// Forwards a job's events to the agent until the process has ended.
async fn drive_job(job: JobRef, mut running: RunningJob, events: mpsc::Sender<JobMessage>) {
    while let Some(event) = running.next_event().await {
        let message = match event {
            JobEvent::Progress(snapshot) => JobMessage::Progress(job, snapshot),
            JobEvent::Exited(exit) => JobMessage::Exited(job, exit),
        };
        if events.send(message).await.is_err() {
            break;
        }
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

//! Running one job process (cli.md §3.2 rows argv, environment, file descriptors, process group, stdout/stderr,
//! cancel, end; §3.3 for where progress comes from).
//!
//! [`spawn_job`] starts the process and a few tasks that live as long as it does: one reader per pipe (stdout,
//! stderr, and fd 3 in `pipe` progress mode) feeding [`crate::output`]'s chunker and buffer and
//! [`crate::progress`]'s parsers, and one supervisor that owns the process, applies stop requests, throttles progress
//! and reports the end. The caller gets a [`RunningJob`]: its pid, its [`JobOutput`], a [`JobControl`] and a stream
//! of [`JobEvent`]s ending with [`JobEvent::Exited`].
//!
//! Not here: the checks before the spawn (paths, policy, capacity), the stdin writer (the caller gets the pipe),
//! turning events into frames, and the outbox.

mod os;

use std::ffi::{OsStr, OsString};
use std::io;
use std::os::fd::OwnedFd;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::PathBuf;
use std::process::{Child, ExitStatus, Stdio};
use std::sync::Arc;
use std::time::Duration;

use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use protocol::JobId;
use protocol::rest::OutputStream;
use protocol::ws::{FinishedStatus, JobFinished};
use tokio::io::AsyncReadExt;
use tokio::net::unix::pipe;
use tokio::sync::{Notify, mpsc, watch};
use tokio::task::JoinHandle;
use tokio::time::{Instant, sleep_until};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::output::{ChunkMode, Chunker, JobOutput, OutputConfig};
use crate::progress::{
    DurationTracker, PROGRESS_INTERVAL, ProgressBlockParser, ProgressMode, ProgressSnapshot,
    ProgressThrottle, StatsLineParser,
};

/// Largest single read from a pipe.
const READ_SIZE: usize = 64 * 1024;
/// How long the pipes may still be read after the process has ended (cli.md §3.2 "end").
pub const PIPE_DRAIN_LIMIT: Duration = Duration::from_secs(2);
/// Capacity of a job's event channel; only progress can fill it, and progress is skipped rather than waited for.
const EVENT_CAPACITY: usize = 32;

/// What to run: the result of the checks and of [`crate::paths`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobCommand {
    /// The job's `binary` (`ffmpeg`, `ffprobe`): progress is read only for `ffmpeg`.
    pub binary_name: String,
    /// The configured executable, argv\[0\].
    pub executable: PathBuf,
    /// The resolved arguments, passed as they are (after `-progress pipe:3` when that is inserted).
    pub arguments: Vec<OsString>,
    /// `None`: the worker's own working directory.
    pub working_directory: Option<PathBuf>,
    /// `assign_job.stdin`: a pipe instead of `/dev/null`.
    pub stdin: bool,
}

/// The worker settings a job runs with.
#[derive(Debug, Clone)]
pub struct JobSettings {
    /// `progress` (config.md §3).
    pub progress: ProgressMode,
    /// `kill_grace_seconds`: SIGTERM → SIGKILL delay.
    pub kill_grace: Duration,
    /// `output.*`.
    pub output: OutputConfig,
    /// Spacing of progress events (500 ms).
    pub progress_interval: Duration,
    /// How long pipes are read after the process ended (2 s).
    pub pipe_drain_limit: Duration,
    /// Notified whenever any chunk of this job arrives (see [`JobOutput::with_waker`]).
    pub output_waker: Option<Arc<Notify>>,
    /// Tracks the job's tasks, so shutdown can wait for them; `None` spawns them untracked.
    pub tasks: Option<TaskTracker>,
}

impl Default for JobSettings {
    fn default() -> Self {
        JobSettings {
            progress: ProgressMode::Pipe,
            kill_grace: Duration::from_secs(5),
            output: OutputConfig::default(),
            progress_interval: PROGRESS_INTERVAL,
            pipe_drain_limit: PIPE_DRAIN_LIMIT,
            output_waker: None,
            tasks: None,
        }
    }
}

/// Where a job's progress comes from, after cli.md §3.3's rules.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProgressSource {
    /// `-progress pipe:3` was inserted; fd 3 is read.
    Pipe,
    /// Stats lines in stderr.
    Stderr,
    /// No progress (mode `off`, or not `ffmpeg`).
    Off,
}

/// The arguments after argv\[0\] and the progress source: `-progress pipe:3` goes first when the mode is `pipe`,
/// the binary is `ffmpeg` and the arguments have no `-progress` of their own (then stats lines are used). Nothing
/// else is added, removed or reordered.
pub fn prepare_arguments(
    binary_name: &str,
    arguments: &[OsString],
    mode: ProgressMode,
) -> (Vec<OsString>, ProgressSource) {
    let source = if binary_name != "ffmpeg" {
        ProgressSource::Off
    } else {
        let has_progress = arguments
            .iter()
            .any(|argument| argument == "-progress" || argument == "-/progress");
        match mode {
            ProgressMode::Off => ProgressSource::Off,
            ProgressMode::Stderr => ProgressSource::Stderr,
            ProgressMode::Pipe if has_progress => ProgressSource::Stderr,
            ProgressMode::Pipe => ProgressSource::Pipe,
        }
    };
    let mut argv = Vec::with_capacity(arguments.len() + 2);
    if source == ProgressSource::Pipe {
        argv.push(OsString::from("-progress"));
        argv.push(OsString::from("pipe:3"));
    }
    argv.extend(arguments.iter().cloned());
    (argv, source)
}

/// How stdout is cut: binary when an `ffmpeg` output goes to stdout (`-`, `pipe:`, `pipe:1`), else decided by the
/// bytes themselves ([`ChunkMode::Auto`]).
pub fn stdout_chunk_mode(binary_name: &str, arguments: &[OsString]) -> ChunkMode {
    if binary_name != "ffmpeg" {
        return ChunkMode::Auto;
    }
    let to_stdout = arguments.iter().enumerate().any(|(index, argument)| {
        let is_stdout = ["-", "pipe:", "pipe:1", "/dev/stdout"]
            .iter()
            .any(|name| argument == OsStr::new(name));
        let option = index
            .checked_sub(1)
            .map(|previous| arguments[previous].as_os_str());
        is_stdout && !matches!(option, Some(option) if option == "-i" || option == "-progress")
    });
    if to_stdout {
        ChunkMode::Binary
    } else {
        ChunkMode::Auto
    }
}

/// Whether a variable is kept in a job's environment: every one except those starting with `DFFMPEG_`.
pub fn keeps_env_var(name: &OsStr) -> bool {
    !name.as_encoded_bytes().starts_with(b"DFFMPEG_")
}

/// Why a job process could not be started (`job_rejected {spawn_failed}`).
#[derive(Debug, thiserror::Error)]
pub enum SpawnError {
    #[error("creating the progress pipe: {source}")]
    ProgressPipe { source: io::Error },
    #[error("starting {}: {source}", executable.display())]
    Start {
        executable: PathBuf,
        source: io::Error,
    },
    #[error("setting up the pipes of process {pid}: {source}")]
    Pipes { pid: u32, source: io::Error },
}

impl SpawnError {
    /// The `job_rejected` code.
    pub fn code(&self) -> &'static str {
        protocol::ws::reject_code::SPAWN_FAILED
    }

    /// The OS error, the `job_rejected` message.
    pub fn os_error(&self) -> &io::Error {
        match self {
            SpawnError::ProgressPipe { source }
            | SpawnError::Start { source, .. }
            | SpawnError::Pipes { source, .. } => source,
        }
    }
}

/// How a job process ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ExitInfo {
    /// `canceled` when a [`JobControl::cancel`] sent SIGTERM before the process ended; else `completed` for exit 0
    /// and `failed` for anything else.
    pub status: FinishedStatus,
    /// The exit status, or 128 + N when killed by signal N.
    pub exit_code: i32,
    /// N when killed by signal N.
    pub signal: Option<i32>,
    /// Whether every pipe reached EOF within the drain limit (false: a leftover process kept one open).
    pub output_complete: bool,
}

impl ExitInfo {
    fn from_status(status: ExitStatus, canceled: bool, output_complete: bool) -> ExitInfo {
        let (exit_code, signal) = match (status.code(), status.signal()) {
            (Some(code), _) => (code, None),
            (None, Some(signal)) => (128 + signal, Some(signal)),
            (None, None) => (-1, None),
        };
        let status = if canceled {
            FinishedStatus::Canceled
        } else if exit_code == 0 && signal.is_none() {
            FinishedStatus::Completed
        } else {
            FinishedStatus::Failed
        };
        ExitInfo {
            status,
            exit_code,
            signal,
            output_complete,
        }
    }

    /// The `job_finished` report; `output_seq_end` is [`JobOutput::next_seq`] once the last batch is taken.
    pub fn to_finished(
        &self,
        job_id: JobId,
        attempt: u32,
        finished_at_ms: i64,
        output_seq_end: u64,
    ) -> JobFinished {
        JobFinished {
            job_id,
            attempt,
            status: self.status,
            exit_code: Some(self.exit_code),
            signal: self.signal,
            error: None,
            finished_at_ms,
            output_seq_end,
        }
    }
}

/// What a running job reports.
#[derive(Debug, Clone, PartialEq)]
pub enum JobEvent {
    /// A progress snapshot to send as `job_progress`, already throttled (one per interval at most, only changes,
    /// the unsent change flushed just before [`JobEvent::Exited`]).
    Progress(ProgressSnapshot),
    /// The process has ended and its output is all in the [`JobOutput`]: send the remaining batches, then
    /// `job_finished`. Always the last event.
    Exited(ExitInfo),
}

/// The stop requests made so far; each only ever turns on.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct StopRequest {
    /// SIGTERM, SIGKILL after the grace; the job ends `canceled`.
    cancel: bool,
    /// SIGTERM, SIGKILL after the grace; the status stays what the exit says (forced shutdown, `job_abandoned`).
    terminate: bool,
    /// SIGKILL now (stale attempt, lease lost, replaced session: no report will be sent).
    kill: bool,
}

/// Stops a job. Cheap to clone; when every clone (and the [`RunningJob`]) is dropped, the process group is killed,
/// so a job is never left running unsupervised.
#[derive(Debug, Clone)]
pub struct JobControl {
    requests: Arc<watch::Sender<StopRequest>>,
}

impl JobControl {
    /// `cancel_job`: SIGTERM to the process group, SIGKILL after `kill_grace` if it still runs; reported `canceled`.
    pub fn cancel(&self) {
        self.requests.send_modify(|request| request.cancel = true);
    }

    /// A forced stop that is not a cancel (drain timeout, shutdown): the same signals, the status from the exit.
    pub fn terminate(&self) {
        self.requests
            .send_modify(|request| request.terminate = true);
    }

    /// SIGKILL to the process group now.
    pub fn kill_now(&self) {
        self.requests.send_modify(|request| request.kill = true);
    }
}

/// A started job. Drive it with [`RunningJob::next_event`] until [`JobEvent::Exited`]; take output batches from
/// [`RunningJob::output`] at the session's pace.
#[derive(Debug)]
pub struct RunningJob {
    pid: u32,
    started_at_ms: i64,
    progress_source: ProgressSource,
    output: JobOutput,
    control: JobControl,
    stdin: Option<pipe::Sender>,
    events: mpsc::Receiver<JobEvent>,
}

impl RunningJob {
    /// The process id, also its process group id.
    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// When the process started (`job_accepted.started_at_ms`).
    pub fn started_at_ms(&self) -> i64 {
        self.started_at_ms
    }

    /// Where progress comes from for this job.
    pub fn progress_source(&self) -> ProgressSource {
        self.progress_source
    }

    /// The job's output buffer.
    pub fn output(&self) -> &JobOutput {
        &self.output
    }

    /// A handle to stop the job from elsewhere.
    pub fn control(&self) -> JobControl {
        self.control.clone()
    }

    /// The write end of the process's stdin, when the job has one (taken once, by the stdin writer).
    pub fn take_stdin(&mut self) -> Option<pipe::Sender> {
        self.stdin.take()
    }

    /// The next event; `None` after [`JobEvent::Exited`] has been received.
    pub async fn next_event(&mut self) -> Option<JobEvent> {
        self.events.recv().await
    }

    /// [`JobControl::cancel`].
    pub fn cancel(&self) {
        self.control.cancel();
    }

    /// [`JobControl::terminate`].
    pub fn terminate(&self) {
        self.control.terminate();
    }

    /// [`JobControl::kill_now`].
    pub fn kill_now(&self) {
        self.control.kill_now();
    }
}

/// Starts a job (cli.md §3.2 check 8 and onwards): argv\[0\] the executable, never a shell; the worker's environment
/// minus `DFFMPEG_*`; stdin `/dev/null` or a pipe; stdout and stderr pipes; fd 3 the progress pipe when
/// `-progress pipe:3` is inserted; nothing else inherited; a new process group; default signal dispositions and an
/// empty mask; SIGKILL as the parent-death signal. Spawns the job's reader and supervisor tasks on the current
/// runtime (or `settings.tasks`); they end shortly after the process does.
pub async fn spawn_job(
    command: JobCommand,
    settings: &JobSettings,
) -> Result<RunningJob, SpawnError> {
    let (arguments, progress_source) =
        prepare_arguments(&command.binary_name, &command.arguments, settings.progress);
    let stdout_mode = stdout_chunk_mode(&command.binary_name, &command.arguments);

    let mut std_command = std::process::Command::new(&command.executable);
    std_command
        .args(&arguments)
        .env_clear()
        .envs(std::env::vars_os().filter(|(name, _)| keeps_env_var(name)))
        .stdin(if command.stdin {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0);
    if let Some(directory) = &command.working_directory {
        std_command.current_dir(directory);
    }
    let (progress_read, progress_write) = if progress_source == ProgressSource::Pipe {
        let (read_end, write_end) =
            os::progress_pipe().map_err(|source| SpawnError::ProgressPipe { source })?;
        (Some(read_end), Some(write_end))
    } else {
        (None, None)
    };
    os::prepare_child(
        &mut std_command,
        progress_write.as_ref().map(std::os::fd::AsRawFd::as_raw_fd),
    );
    let mut child = os::spawn(std_command, progress_write)
        .await
        .map_err(|source| SpawnError::Start {
            executable: command.executable.clone(),
            source,
        })?;
    let started_at_ms = crate::now_ms();
    let pid = child.id();

    let pipes = match JobPipes::take(&mut child, progress_read) {
        Ok(pipes) => pipes,
        Err(source) => {
            kill_group(pid, Signal::SIGKILL);
            // Reaped on a blocking thread: the process was just killed, so the wait is short.
            tokio::task::spawn_blocking(move || child.wait());
            return Err(SpawnError::Pipes { pid, source });
        }
    };

    let spawner = TaskSpawner {
        tasks: settings.tasks.clone(),
    };
    let output = match &settings.output_waker {
        Some(waker) => JobOutput::with_waker(&settings.output, waker.clone()),
        None => JobOutput::new(&settings.output),
    };
    let stop_reading = CancellationToken::new();

    // Progress plumbing: parsers publish their latest reading; the supervisor throttles.
    let argument_text: Vec<String> = command
        .arguments
        .iter()
        .map(|argument| argument.to_string_lossy().into_owned())
        .collect();
    let tracker =
        (progress_source != ProgressSource::Off).then(|| DurationTracker::new(&argument_text));
    let (duration_tx, duration_rx) =
        watch::channel(tracker.as_ref().and_then(DurationTracker::duration_us));
    let (snapshot_tx, snapshot_rx) = watch::channel::<Option<ProgressSnapshot>>(None);

    let mut readers = Vec::new();
    readers.push(spawner.spawn(pump_output(
        OutputStream::Stdout,
        pipes.stdout,
        Chunker::new(
            stdout_mode,
            settings.output.max_chunk_bytes,
            settings.output.flush_interval,
        ),
        output.clone(),
        StderrTaps::default(),
        stop_reading.clone(),
    )));
    let mut taps = StderrTaps {
        duration: tracker.map(|tracker| (tracker, duration_tx)),
        stats: None,
    };
    let mut snapshot_tx = Some(snapshot_tx);
    if progress_source == ProgressSource::Stderr {
        taps.stats = snapshot_tx
            .take()
            .map(|sender| (StatsLineParser::new(), sender));
    }
    readers.push(spawner.spawn(pump_output(
        OutputStream::Stderr,
        pipes.stderr,
        Chunker::new(
            ChunkMode::Auto,
            settings.output.max_chunk_bytes,
            settings.output.flush_interval,
        ),
        output.clone(),
        taps,
        stop_reading.clone(),
    )));
    if let (Some(progress), Some(sender)) = (pipes.progress, snapshot_tx.take()) {
        readers.push(spawner.spawn(pump_progress(progress, sender, stop_reading.clone())));
    }

    let (requests_tx, requests_rx) = watch::channel(StopRequest::default());
    let (events_tx, events_rx) = mpsc::channel(EVENT_CAPACITY);
    let supervisor = Supervisor {
        pid,
        child,
        kill_grace: settings.kill_grace,
        pipe_drain_limit: settings.pipe_drain_limit,
        requests: requests_rx,
        events: events_tx,
        snapshots: snapshot_rx,
        durations: duration_rx,
        throttle: ProgressThrottle::new(settings.progress_interval),
        readers,
        stop_reading,
    };
    spawner.spawn(supervisor.run());

    Ok(RunningJob {
        pid,
        started_at_ms,
        progress_source,
        output,
        control: JobControl {
            requests: Arc::new(requests_tx),
        },
        stdin: pipes.stdin,
        events: events_rx,
    })
}

/// Spawns on the job's tracker when there is one.
struct TaskSpawner {
    tasks: Option<TaskTracker>,
}

impl TaskSpawner {
    fn spawn<F>(&self, future: F) -> JoinHandle<F::Output>
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        match &self.tasks {
            Some(tasks) => tasks.spawn(future),
            None => tokio::spawn(future),
        }
    }
}

/// The worker's ends of a child's pipes, registered with the runtime.
struct JobPipes {
    stdin: Option<pipe::Sender>,
    stdout: pipe::Receiver,
    stderr: pipe::Receiver,
    progress: Option<pipe::Receiver>,
}

impl JobPipes {
    fn take(child: &mut Child, progress: Option<OwnedFd>) -> io::Result<JobPipes> {
        let missing = || io::Error::other("a pipe of the child is missing");
        let stdin = match child.stdin.take() {
            Some(stdin) => Some(pipe::Sender::from_owned_fd(OwnedFd::from(stdin))?),
            None => None,
        };
        let stdout =
            pipe::Receiver::from_owned_fd(OwnedFd::from(child.stdout.take().ok_or_else(missing)?))?;
        let stderr =
            pipe::Receiver::from_owned_fd(OwnedFd::from(child.stderr.take().ok_or_else(missing)?))?;
        let progress = match progress {
            Some(fd) => Some(pipe::Receiver::from_owned_fd(fd)?),
            None => None,
        };
        Ok(JobPipes {
            stdin,
            stdout,
            stderr,
            progress,
        })
    }
}

/// Sends `signal` to the process group `pid`; an already empty group is fine.
fn kill_group(pid: u32, signal: Signal) {
    let Ok(raw) = i32::try_from(pid) else {
        return;
    };
    match killpg(Pid::from_raw(raw), signal) {
        Ok(()) | Err(nix::errno::Errno::ESRCH) => {}
        Err(error) => {
            tracing::warn!(pid, %signal, %error, "signalling a job's process group failed")
        }
    }
}

/// Sleeps until `deadline`, or forever without one.
async fn sleep_until_some(deadline: Option<Instant>) {
    match deadline {
        Some(deadline) => sleep_until(deadline).await,
        None => std::future::pending().await,
    }
}

/// The parsers that read a copy of stderr.
#[derive(Default)]
struct StderrTaps {
    duration: Option<(DurationTracker, watch::Sender<Option<i64>>)>,
    stats: Option<(StatsLineParser, watch::Sender<Option<ProgressSnapshot>>)>,
}

impl StderrTaps {
    fn feed(&mut self, bytes: &[u8]) {
        if let Some((tracker, sender)) = &mut self.duration
            && tracker.wants_stderr()
            && tracker.feed(bytes)
        {
            sender.send_replace(tracker.duration_us());
        }
        if let Some((parser, sender)) = &mut self.stats
            && let Some(snapshot) = parser.feed(bytes)
        {
            sender.send_replace(Some(snapshot));
        }
    }

    fn finish(&mut self) {
        if let Some((parser, sender)) = &mut self.stats
            && let Some(snapshot) = parser.finish()
        {
            sender.send_replace(Some(snapshot));
        }
    }
}

/// Reads one output pipe until EOF (true) or until told to stop (false), chunking into `output`. Reads whatever is
/// available, up to 64 KiB at once; never waits on the consumer.
async fn pump_output(
    stream: OutputStream,
    mut pipe: pipe::Receiver,
    mut chunker: Chunker,
    output: JobOutput,
    mut taps: StderrTaps,
    stop: CancellationToken,
) -> bool {
    let mut buffer = vec![0u8; READ_SIZE];
    let mut emit = |chunk: Vec<u8>| {
        output.push(stream, chunk);
    };
    let reached_eof = loop {
        let idle_deadline = chunker.idle_deadline();
        tokio::select! {
            biased;
            () = stop.cancelled() => break false,
            () = sleep_until_some(idle_deadline) => chunker.on_idle(Instant::now(), &mut emit),
            read = pipe.read(&mut buffer) => match read {
                Ok(0) => break true,
                Ok(length) => {
                    chunker.feed(&buffer[..length], Instant::now(), &mut emit);
                    taps.feed(&buffer[..length]);
                }
                Err(error) if error.kind() == io::ErrorKind::Interrupted => {}
                Err(error) => {
                    tracing::warn!(stream = stream.as_str(), %error, "reading a job's output failed");
                    break false;
                }
            },
        }
    };
    chunker.finish(&mut emit);
    taps.finish();
    reached_eof
}

/// Reads the `-progress` pipe until EOF (true) or until told to stop (false), publishing each completed block.
async fn pump_progress(
    mut pipe: pipe::Receiver,
    snapshots: watch::Sender<Option<ProgressSnapshot>>,
    stop: CancellationToken,
) -> bool {
    let mut parser = ProgressBlockParser::new();
    let mut buffer = vec![0u8; 4096];
    loop {
        tokio::select! {
            biased;
            () = stop.cancelled() => return false,
            read = pipe.read(&mut buffer) => match read {
                Ok(0) => return true,
                Ok(length) => {
                    if let Some(snapshot) = parser.feed(&buffer[..length]) {
                        snapshots.send_replace(Some(snapshot));
                    }
                }
                Err(error) if error.kind() == io::ErrorKind::Interrupted => {}
                Err(error) => {
                    tracing::warn!(%error, "reading a job's progress pipe failed");
                    return false;
                }
            },
        }
    }
}

/// Owns the process: applies stop requests, throttles progress, and reports the end.
struct Supervisor {
    pid: u32,
    child: Child,
    kill_grace: Duration,
    pipe_drain_limit: Duration,
    requests: watch::Receiver<StopRequest>,
    events: mpsc::Sender<JobEvent>,
    snapshots: watch::Receiver<Option<ProgressSnapshot>>,
    durations: watch::Receiver<Option<i64>>,
    throttle: ProgressThrottle,
    readers: Vec<JoinHandle<bool>>,
    stop_reading: CancellationToken,
}

impl Supervisor {
    async fn run(mut self) {
        let watch = os::ExitWatch::new(self.pid);
        let exited = watch.exited();
        tokio::pin!(exited);
        let mut done = StopRequest::default();
        let mut grace_deadline = None;
        let mut requests_open = true;
        let mut snapshots_open = true;
        let mut durations_open = true;
        loop {
            let progress_due = self.throttle.next_due();
            tokio::select! {
                biased;
                () = &mut exited => break,
                changed = self.requests.changed(), if requests_open => {
                    let request = if changed.is_ok() {
                        *self.requests.borrow_and_update()
                    } else {
                        // Every handle is gone: nobody can stop or report this job any more.
                        requests_open = false;
                        StopRequest { kill: true, ..StopRequest::default() }
                    };
                    if request.kill && !done.kill {
                        kill_group(self.pid, Signal::SIGKILL);
                        done.kill = true;
                    }
                    if (request.cancel && !done.cancel) || (request.terminate && !done.terminate && !done.cancel) {
                        kill_group(self.pid, Signal::SIGTERM);
                        grace_deadline.get_or_insert(Instant::now() + self.kill_grace);
                    }
                    done.cancel |= request.cancel;
                    done.terminate |= request.terminate;
                }
                () = sleep_until_some(grace_deadline) => {
                    kill_group(self.pid, Signal::SIGKILL);
                    grace_deadline = None;
                }
                changed = self.snapshots.changed(), if snapshots_open => {
                    snapshots_open = changed.is_ok();
                    self.offer_progress();
                }
                changed = self.durations.changed(), if durations_open => {
                    durations_open = changed.is_ok();
                    self.offer_progress();
                }
                () = sleep_until_some(progress_due) => {}
            }
            self.send_due_progress();
        }

        // The process has ended but is not reaped: its group id is still reserved, so this reaches only its group.
        kill_group(self.pid, Signal::SIGKILL);
        let status = self.reap().await;
        let output_complete = self.drain_readers().await;
        self.offer_progress();
        if let Some(snapshot) = self.throttle.flush() {
            let _ = self.events.send(JobEvent::Progress(snapshot)).await;
        }
        let info = ExitInfo::from_status(status, done.cancel, output_complete);
        let _ = self.events.send(JobEvent::Exited(info)).await;
    }

    /// The latest reading with the latest duration, into the throttle.
    fn offer_progress(&mut self) {
        let latest = self.snapshots.borrow_and_update().clone();
        let duration_us = *self.durations.borrow_and_update();
        if let Some(mut snapshot) = latest {
            snapshot.duration_us = duration_us;
            self.throttle.update(snapshot);
        }
    }

    fn send_due_progress(&mut self) {
        let now = Instant::now();
        let Some(snapshot) = self.throttle.due(now) else {
            return;
        };
        match self.events.try_send(JobEvent::Progress(snapshot.clone())) {
            Ok(()) => self.throttle.mark_sent(now),
            // The consumer is behind: try again an interval later rather than wait for it.
            Err(mpsc::error::TrySendError::Full(_)) => self.throttle.postpone(now),
            Err(mpsc::error::TrySendError::Closed(_)) => self.throttle.mark_sent(now),
        }
    }

    /// The exit status of the terminated process.
    async fn reap(&mut self) -> ExitStatus {
        loop {
            match self.child.try_wait() {
                Ok(Some(status)) => return status,
                Ok(None) => tokio::time::sleep(Duration::from_millis(5)).await,
                Err(error) => {
                    tracing::warn!(pid = self.pid, %error, "reaping a job process failed");
                    return ExitStatus::from_raw(0xff00);
                }
            }
        }
    }

    /// Lets the readers reach EOF within the drain limit, then stops them; true when all reached EOF.
    async fn drain_readers(&mut self) -> bool {
        let readers = std::mem::take(&mut self.readers);
        let deadline = Instant::now() + self.pipe_drain_limit;
        let mut complete = true;
        for mut reader in readers {
            let finished = match tokio::time::timeout_at(deadline, &mut reader).await {
                Ok(finished) => finished,
                Err(_) => {
                    // A leftover process (outside the group) still holds the pipe: stop reading, keep what came.
                    self.stop_reading.cancel();
                    reader.await
                }
            };
            complete &= finished.unwrap_or(false);
        }
        self.stop_reading.cancel();
        complete
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn os(arguments: &[&str]) -> Vec<OsString> {
        arguments.iter().map(OsString::from).collect()
    }

    #[test]
    fn progress_pipe_goes_first_only_for_ffmpeg_without_its_own_progress() {
        let arguments = os(&["-i", "in.mkv", "-c:v", "libx264", "out.mp4"]);
        let (argv, source) = prepare_arguments("ffmpeg", &arguments, ProgressMode::Pipe);
        assert_eq!(source, ProgressSource::Pipe);
        assert_eq!(
            argv,
            os(&[
                "-progress",
                "pipe:3",
                "-i",
                "in.mkv",
                "-c:v",
                "libx264",
                "out.mp4"
            ])
        );

        let own = os(&["-progress", "http://x", "-i", "in.mkv", "out.mp4"]);
        assert_eq!(
            prepare_arguments("ffmpeg", &own, ProgressMode::Pipe),
            (own.clone(), ProgressSource::Stderr)
        );
        assert_eq!(
            prepare_arguments("ffmpeg", &arguments, ProgressMode::Stderr),
            (arguments.clone(), ProgressSource::Stderr)
        );
        assert_eq!(
            prepare_arguments("ffmpeg", &arguments, ProgressMode::Off),
            (arguments.clone(), ProgressSource::Off)
        );
        assert_eq!(
            prepare_arguments("ffprobe", &arguments, ProgressMode::Pipe),
            (arguments.clone(), ProgressSource::Off)
        );
        assert_eq!(
            prepare_arguments("ffmpeg", &[], ProgressMode::Pipe).0,
            os(&["-progress", "pipe:3"])
        );
    }

    #[test]
    fn stdout_is_binary_when_an_output_goes_there() {
        let mode = |arguments: &[&str]| stdout_chunk_mode("ffmpeg", &os(arguments));
        assert_eq!(
            mode(&["-i", "in.mkv", "-f", "rawvideo", "-"]),
            ChunkMode::Binary
        );
        assert_eq!(
            mode(&["-i", "in.mkv", "-f", "mpegts", "pipe:1"]),
            ChunkMode::Binary
        );
        assert_eq!(mode(&["-i", "-", "out.mp4"]), ChunkMode::Auto);
        assert_eq!(mode(&["-i", "pipe:", "out.mp4"]), ChunkMode::Auto);
        assert_eq!(
            mode(&["-progress", "pipe:1", "-i", "x", "out.mp4"]),
            ChunkMode::Auto
        );
        assert_eq!(
            stdout_chunk_mode("ffprobe", &os(&["-of", "json", "-"])),
            ChunkMode::Auto
        );
    }

    #[test]
    fn only_dffmpeg_variables_are_removed() {
        assert!(!keeps_env_var(OsStr::new("DFFMPEG_HMAC_KEY")));
        assert!(!keeps_env_var(OsStr::new("DFFMPEG_")));
        assert!(keeps_env_var(OsStr::new("dffmpeg_lower")));
        assert!(keeps_env_var(OsStr::new("PATH")));
        assert!(keeps_env_var(OsStr::new("X_DFFMPEG_Y")));
    }

    #[test]
    fn exit_statuses() {
        let exited = |code: i32| ExitStatus::from_raw(code << 8);
        let killed = |signal: i32| ExitStatus::from_raw(signal);
        let info = ExitInfo::from_status(exited(0), false, true);
        assert_eq!(
            (info.status, info.exit_code, info.signal),
            (FinishedStatus::Completed, 0, None)
        );
        let info = ExitInfo::from_status(exited(1), false, true);
        assert_eq!(
            (info.status, info.exit_code, info.signal),
            (FinishedStatus::Failed, 1, None)
        );
        let info = ExitInfo::from_status(killed(9), false, true);
        assert_eq!(
            (info.status, info.exit_code, info.signal),
            (FinishedStatus::Failed, 137, Some(9))
        );
        let info = ExitInfo::from_status(killed(15), true, true);
        assert_eq!(
            (info.status, info.exit_code, info.signal),
            (FinishedStatus::Canceled, 143, Some(15))
        );
        let info = ExitInfo::from_status(exited(0), true, false);
        assert_eq!(
            info.status,
            FinishedStatus::Canceled,
            "a cancel wins even when the process then exits 0"
        );
        let finished = info.to_finished(JobId(protocol::Ulid::from_u128(5)), 2, 77, 12);
        assert_eq!(
            (
                finished.exit_code,
                finished.output_seq_end,
                finished.finished_at_ms
            ),
            (Some(0), 12, 77)
        );
    }
}

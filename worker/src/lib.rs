//! dffmpeg worker: runs the jobs a coordinator pushes over an authenticated WebSocket session and streams their
//! output, progress and results back (cli.md §3, worker-protocol.md).
//!
//! Reading order:
//!
//! - [`config`] loads `dffmpeg-worker.yaml` and the environment into a [`config::Config`] and an
//!   [`config::Identity`];
//! - [`health`] checks binaries and path roots (start, re-checks, SIGHUP);
//! - [`agent`] holds [`Worker`]: `Worker::build` runs the start-up checks, `Worker::run_until` the session loop,
//!   jobs, outbox, drain and signals;
//! - [`session`] opens the signed WebSocket, writes frames and computes the reconnect backoff;
//! - the job-execution core: [`paths::PathRoots`] resolves `$Var` arguments and the working directory, or refuses
//!   an escape; [`process::spawn_job`] starts the process and returns a [`process::RunningJob`] whose events
//!   ([`process::JobEvent`]) carry throttled progress and the final [`process::ExitInfo`]; [`output::JobOutput`] is
//!   the per-job output buffer `job_logs` batches are taken from; [`progress`] holds the pure parsers;
//! - [`check`] is `dffmpeg-worker --check`; `conf::init_logging` installs the log subscriber.
//!
//! Not here (yet): the argument policy checker (limits-and-bad-input.md §4; its switches are refused at start) and
//! mount recovery.

pub mod agent;
pub mod check;
pub mod config;
pub mod health;
pub mod output;
pub mod paths;
pub mod process;
pub mod progress;
pub mod session;

pub use agent::{BuildError, RunError, Worker, WorkerSignal};

/// Wall-clock milliseconds since the Unix epoch, the `time_ms` of the worker protocol.
pub fn now_ms() -> i64 {
    let nanos = time::OffsetDateTime::now_utc().unix_timestamp_nanos();
    i64::try_from(nanos / 1_000_000).unwrap_or(i64::MAX)
}

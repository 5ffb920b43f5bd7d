//! dffmpeg worker: the job-execution core. It turns an `assign_job` into a supervised ffmpeg process and turns that
//! process's pipes into output chunks, progress snapshots and an exit report (cli.md §3.2–§3.3, worker-protocol.md
//! §4.5–§4.7, §7).
//!
//! Not here (yet): the WebSocket session loop, configuration loading, binary and mount health checks, the argument
//! policy (limits-and-bad-input.md §4), the stdin writer and the `dffmpeg-worker` binary. Those drive the APIs below:
//!
//! - [`paths::PathRoots`] resolves `$Var` arguments and the working directory, or refuses an escape;
//! - [`process::spawn_job`] starts the process and returns a [`process::RunningJob`] whose events
//!   ([`process::JobEvent`]) carry throttled progress and the final [`process::ExitInfo`];
//! - [`output::JobOutput`] is the per-job output buffer the session takes `job_logs` batches from;
//! - [`progress`] holds the pure parsers (progress blocks, stats lines, expected duration) and the send throttle.

pub mod output;
pub mod paths;
pub mod process;
pub mod progress;

/// Wall-clock milliseconds since the Unix epoch, the `time_ms` of the worker protocol.
pub fn now_ms() -> i64 {
    let nanos = time::OffsetDateTime::now_utc().unix_timestamp_nanos();
    i64::try_from(nanos / 1_000_000).unwrap_or(i64::MAX)
}

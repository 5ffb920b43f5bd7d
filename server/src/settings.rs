//! The settings the running parts read, derived once from the configuration: plain values, no serde, so the
//! scheduler, janitor and handlers never see the configuration tree itself.

use std::path::PathBuf;
use std::time::Duration;

use crate::config::Config;
use crate::janitor::Thresholds;

pub use crate::config::TrustedProxy;

/// Limits on requests and jobs (limits-and-bad-input.md §2.1).
#[derive(Debug, Clone)]
pub struct Limits {
    pub max_body_bytes: u64,
    pub max_connections: usize,
    pub header_read_timeout: Duration,
    pub request_timeout: Duration,
    pub max_streams: usize,
    pub max_poll_wait: Duration,
    pub max_pending_jobs: usize,
    pub max_arguments: usize,
    pub max_argument_bytes: usize,
    pub max_job_bytes: usize,
    pub max_paths: usize,
    pub max_output_bytes_per_job: u64,
    pub stdin_window_bytes: u64,
    pub max_list_items: usize,
}

/// Worker session settings.
#[derive(Debug, Clone)]
pub struct SessionSettings {
    pub heartbeat_interval: Duration,
    pub missed_heartbeats: u32,
    pub hello_timeout: Duration,
    pub max_sessions: usize,
    pub max_frame_bytes: usize,
    pub send_queue_frames: usize,
}

/// Retention of finished work (storage.md §6).
#[derive(Debug, Clone)]
pub struct Retention {
    pub finished_jobs: Duration,
    pub job_output: Duration,
    pub offline_workers: Duration,
    pub prune_batch: usize,
}

/// Everything the running coordinator reads.
#[derive(Debug, Clone)]
pub struct Settings {
    pub version: String,
    pub dev: bool,
    pub database_path: PathBuf,
    pub cache_capacity_bytes: u64,
    pub allowed_binaries: Vec<String>,
    pub default_job_heartbeat_interval: u32,
    pub web_dashboard_enabled: bool,
    pub api_docs_enabled: bool,
    pub trusted_proxies: Vec<TrustedProxy>,
    pub timestamp_tolerance_seconds: i64,
    pub refuse_replays: bool,
    pub shutdown_delay: Duration,
    pub shutdown_timeout: Duration,
    pub max_attempts: u32,
    pub max_rejections: u32,
    pub janitor_interval: Duration,
    pub janitor_jitter: Duration,
    pub thresholds: Thresholds,
    pub limits: Limits,
    pub session: SessionSettings,
    pub retention: Retention,
}

impl Settings {
    /// The lease of a worker's jobs after its last frame (lifecycle.md §5).
    pub fn lease(&self) -> Duration {
        self.thresholds.lease
    }
}

impl Settings {
    /// The settings of a configuration; `dev` is `--dev` (or `dev_mode`).
    pub fn from_config(config: &Config, dev: bool) -> Settings {
        let session = &config.worker_session;
        let janitor = &config.janitor;
        let session_timeout = session.heartbeat_interval * session.missed_heartbeats;
        let limits = &config.limits;
        let usize_of = |value: u64| usize::try_from(value).unwrap_or(usize::MAX);
        Settings {
            version: protocol::VERSION.to_owned(),
            dev: dev || config.dev_mode,
            database_path: config.database.path.clone(),
            cache_capacity_bytes: u64::from(config.database.cache_capacity_mb) << 20,
            allowed_binaries: config.allowed_binaries.clone(),
            default_job_heartbeat_interval: config.default_job_heartbeat_interval,
            web_dashboard_enabled: config.web_dashboard_enabled,
            api_docs_enabled: config.api_docs_enabled || dev || config.dev_mode,
            trusted_proxies: config.trusted_proxies.clone(),
            timestamp_tolerance_seconds: i64::from(config.security.timestamp_tolerance_seconds),
            refuse_replays: config.security.refuse_replays,
            shutdown_delay: config.shutdown_delay_seconds,
            shutdown_timeout: config.shutdown_timeout_seconds,
            max_attempts: config.scheduler.max_attempts,
            max_rejections: config.scheduler.max_rejections,
            janitor_interval: janitor.interval,
            janitor_jitter: janitor.jitter,
            thresholds: Thresholds {
                session_timeout,
                lease: session_timeout.mul_f64(janitor.worker_threshold_factor),
                job_silence_factor: janitor.job_heartbeat_threshold_factor,
                assignment_timeout: janitor.job_assignment_timeout,
                retry_delay: janitor.job_pending_retry_delay,
                pending_timeout: janitor.job_pending_timeout,
                cancel_timeout: janitor.job_cancel_timeout,
            },
            limits: Limits {
                max_body_bytes: limits.max_body_bytes,
                max_connections: limits.max_connections,
                header_read_timeout: limits.header_read_timeout,
                request_timeout: limits.request_timeout,
                max_streams: limits.max_streams,
                max_poll_wait: limits.max_poll_wait,
                max_pending_jobs: limits.max_pending_jobs,
                max_arguments: limits.max_arguments,
                max_argument_bytes: usize_of(limits.max_argument_bytes),
                max_job_bytes: usize_of(limits.max_job_bytes),
                max_paths: limits.max_paths,
                max_output_bytes_per_job: limits.max_output_bytes_per_job,
                stdin_window_bytes: limits.stdin_window_bytes,
                max_list_items: limits.max_list_items,
            },
            session: SessionSettings {
                heartbeat_interval: session.heartbeat_interval,
                missed_heartbeats: session.missed_heartbeats,
                hello_timeout: session.hello_timeout,
                max_sessions: session.max_sessions,
                max_frame_bytes: usize_of(session.max_frame_bytes),
                send_queue_frames: session.send_queue_frames,
            },
            retention: Retention {
                finished_jobs: config.retention.finished_jobs,
                job_output: config.retention.job_output,
                offline_workers: config.retention.offline_workers,
                prune_batch: config.retention.prune_batch as usize,
            },
        }
    }
}

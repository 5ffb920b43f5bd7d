//! The coordinator's configuration (config.md §2): the `Config` tree with every key of §2.3 and the defaults of
//! §2.4, the search order of §2.1, range checks (done while parsing, by `conf`'s typed helpers), the cross-key
//! rules, relative paths, and the upstream keys of dffmpeg 0.4. Errors are the one-line causes of
//! limits-and-bad-input.md §6.
//!
//! Not here: applying the settings (logging, binding, reload on SIGHUP, the keys file's content), and the generic
//! parsing machinery, which lives in `conf` and is shared with the worker and the client.

use std::ffi::OsString;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use conf::{ConfigError, KeyMap, UpstreamKey};
use ipnet::IpNet;
use serde::{Deserialize, Deserializer};

pub use conf::ArgumentPolicy;

/// The environment variable naming the file (step 2 of the search order).
pub const ENV_VAR: &str = "DFFMPEG_COORDINATOR_CONFIG";
/// The file searched in the working directory (step 3).
pub const LOCAL_FILE_NAME: &str = "dffmpeg-coordinator.yaml";
/// The file searched in `~/.config/dffmpeg/` and `/etc/dffmpeg/` (steps 4 and 5).
pub const USER_FILE_NAME: &str = "coordinator.yaml";
/// The longest Unix socket path (`sun_path` holds 108 bytes with the terminating NUL).
pub const MAX_SOCKET_PATH_BYTES: usize = 107;

const DATABASE_UPSTREAM: &str = "upstream dffmpeg 0.4 database settings are not supported; set database.path \
                                 (a directory for the embedded store)";

/// Upstream dffmpeg 0.4 keys (config.md §2.3 "Upstream keys").
pub const UPSTREAM_KEYS: &[UpstreamKey] = &[
    UpstreamKey::warn(
        "handshake_delay_seconds",
        "has no effect (workers use WebSocket sessions)",
    ),
    UpstreamKey::warn(
        "transports",
        "only http_polling is offered; transports is ignored",
    ),
    UpstreamKey::refuse("database.defaults", DATABASE_UPSTREAM),
    UpstreamKey::refuse("database.engine_defaults", DATABASE_UPSTREAM),
    UpstreamKey::refuse("database.repositories", DATABASE_UPSTREAM),
    UpstreamKey::refuse(
        "*.auth.encryption_keys",
        "upstream dffmpeg 0.4 key is not supported; put the keys in the file named by encryption.keys_file",
    ),
    UpstreamKey::refuse(
        "*.auth.encryption_keys_file",
        "upstream dffmpeg 0.4 key is not supported; use encryption.keys_file",
    ),
    UpstreamKey::refuse(
        "*.auth.default_encryption_key_id",
        "upstream dffmpeg 0.4 key is not supported; use encryption.default_key_id",
    ),
];

/// A configuration error. `Display` is the one line printed after `dffmpeg-coordinator: loading configuration: `;
/// the coordinator exits 2 on any of them (cli.md §1.3).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// The file could not be read: missing, unreadable, over 1 MiB, not UTF-8.
    #[error("{0}")]
    Read(ConfigError),
    /// The file is not valid YAML, or does not fit the tree: unknown key, wrong type, value out of range,
    /// refused upstream key.
    #[error("{0}")]
    Parse(ConfigError),
    /// The values parse but do not go together: cross-key rules, paths.
    #[error("{0}")]
    Invalid(ConfigError),
}

/// The outcome of [`Config::load`].
#[derive(Debug, Clone, PartialEq)]
pub struct Loaded {
    /// The settings.
    pub config: Config,
    /// The file read, as found; `None` when no file exists and the defaults apply.
    pub source: Option<PathBuf>,
    /// Warnings to log once the logger is up (upstream keys, unknown URL schemes), one line each.
    pub warnings: Vec<String>,
}

pub use conf::LogFormat;

/// Store engine; only sled is built in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Engine {
    /// The embedded sled store.
    #[default]
    Sled,
}

/// An entry of `trusted_proxies`: any peer (`"*"`) or a network.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TrustedProxy {
    /// `"*"`: every peer.
    Any,
    /// An address or network.
    Network(IpNet),
}

impl TrustedProxy {
    /// Whether a peer at `addr` is covered.
    pub fn contains(&self, addr: &IpAddr) -> bool {
        match self {
            TrustedProxy::Any => true,
            TrustedProxy::Network(net) => net.contains(addr),
        }
    }
}

impl<'de> Deserialize<'de> for TrustedProxy {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<TrustedProxy, D::Error> {
        let text = String::deserialize(deserializer)?;
        if text == "*" {
            return Ok(TrustedProxy::Any);
        }
        conf::parse_network(&text)
            .map(TrustedProxy::Network)
            .map_err(serde::de::Error::custom)
    }
}

/// The coordinator's settings (config.md §2.3). Every key has a default; an empty file means all defaults.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Bind address (IPv4, IPv6 or host name); `--host` overrides.
    pub host: String,
    /// Bind port; 0 picks a free port. `--port` overrides.
    #[serde(deserialize_with = "conf::int::ranged::<_, u16, 0, 65535>")]
    pub port: u16,
    /// The level or filter directive written in the file; `None` when not written, so that `--dev`'s `debug`
    /// default applies (see [`Config::log_level`]).
    pub log_level: Option<String>,
    /// Log line format.
    pub log_format: LogFormat,
    /// Same as `--dev`.
    pub dev_mode: bool,
    /// Serve `/status…`.
    pub web_dashboard_enabled: bool,
    /// Who may see the dashboard.
    #[serde(deserialize_with = "conf::net::list")]
    pub allowed_dashboard_ips: Vec<IpNet>,
    /// Show job arguments, working directory and output on the dashboard.
    pub dashboard_show_job_details: bool,
    /// Who may read `/metrics`.
    #[serde(deserialize_with = "conf::net::list")]
    pub allowed_metrics_ips: Vec<IpNet>,
    /// Peers whose `X-Forwarded-For` is believed.
    pub trusted_proxies: Vec<TrustedProxy>,
    /// Binary names jobs may use and workers may offer.
    #[serde(deserialize_with = "binary_names")]
    pub allowed_binaries: Vec<String>,
    /// Job heartbeat interval in seconds when a submit gives none.
    #[serde(deserialize_with = "conf::int::ranged::<_, u32, 1, 3600>")]
    pub default_job_heartbeat_interval: u32,
    /// Time between entering shutdown (health 503) and closing the listener.
    #[serde(deserialize_with = "conf::duration::deserialize")]
    pub shutdown_delay_seconds: Duration,
    /// Bound on the rest of the shutdown.
    #[serde(deserialize_with = "conf::duration::deserialize")]
    pub shutdown_timeout_seconds: Duration,
    /// Serve `/docs`, `/redoc`, `/openapi.json`.
    pub api_docs_enabled: bool,
    /// Unix socket for `dffmpeg-admin`: as written (resolved against the file's directory), else
    /// `<database.path>/admin.sock`. At most [`MAX_SOCKET_PATH_BYTES`].
    #[serde(deserialize_with = "nullable_path")]
    pub admin_socket: PathBuf,
    /// `database` section.
    pub database: Database,
    /// `encryption` section.
    pub encryption: Encryption,
    /// `security` section.
    pub security: Security,
    /// `janitor` section.
    pub janitor: Janitor,
    /// `scheduler` section.
    pub scheduler: Scheduler,
    /// `worker_session` section.
    pub worker_session: WorkerSession,
    /// `limits` section.
    pub limits: Limits,
    /// `retention` section.
    pub retention: Retention,
    /// `argument_policy` section.
    pub argument_policy: ArgumentPolicy,
    /// Upstream key, accepted with a warning and ignored.
    pub handshake_delay_seconds: conf::Ignored,
    /// Upstream section, accepted with a warning and ignored.
    pub transports: conf::Ignored,
}

/// `database`: the embedded store.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Database {
    /// Directory of the store (created with mode 0700 if missing).
    pub path: PathBuf,
    /// Store engine.
    pub engine: Engine,
    /// sled page cache size in MiB.
    #[serde(deserialize_with = "conf::int::ranged::<_, u32, 8, 65536>")]
    pub cache_capacity_mb: u32,
}

/// `encryption`: sealing of stored HMAC keys (auth.md §6.2).
#[derive(Debug, Clone, PartialEq, Eq, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Encryption {
    /// YAML keys file; `None`: keys are stored unencrypted.
    pub keys_file: Option<PathBuf>,
    /// Key id for new seals; may be omitted when the file holds one key.
    #[serde(deserialize_with = "key_id")]
    pub default_key_id: Option<String>,
}

/// `security`: signed-request checks.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Security {
    /// Allowed clock difference for signed requests, in seconds.
    #[serde(deserialize_with = "conf::int::ranged::<_, u32, 30, 3600>")]
    pub timestamp_tolerance_seconds: u32,
    /// Replay refusal (auth.md §4).
    pub refuse_replays: bool,
}

/// `janitor`: the periodic sweep (lifecycle.md).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Janitor {
    /// Time between janitor passes (at least 1 s).
    #[serde(deserialize_with = "conf::duration::at_least::<_, 1000>")]
    pub interval: Duration,
    /// Random ± spread of the interval, capped at half the interval.
    #[serde(deserialize_with = "conf::duration::deserialize")]
    pub jitter: Duration,
    /// Lease after a worker's last frame = session timeout × this (at least 1).
    #[serde(deserialize_with = "conf::float::at_least::<_, 1>")]
    pub worker_threshold_factor: f64,
    /// A running job silent for `heartbeat_interval ×` this is lost (at least 1).
    #[serde(deserialize_with = "conf::float::at_least::<_, 1>")]
    pub job_heartbeat_threshold_factor: f64,
    /// `assigned` without `job_accepted` for this long goes back to `pending`.
    #[serde(deserialize_with = "conf::duration::deserialize")]
    pub job_assignment_timeout: Duration,
    /// After a reject or assignment timeout, that worker is not offered the job again for this long.
    #[serde(deserialize_with = "conf::duration::deserialize")]
    pub job_pending_retry_delay: Duration,
    /// A pending job that no worker could ever take fails after this long.
    #[serde(deserialize_with = "conf::duration::deserialize")]
    pub job_pending_timeout: Duration,
    /// `canceling` longer than this becomes `canceled`.
    #[serde(deserialize_with = "conf::duration::deserialize")]
    pub job_cancel_timeout: Duration,
}

/// `scheduler`: retries.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Scheduler {
    /// Most runs a job may start before a lost run fails it.
    #[serde(deserialize_with = "conf::int::ranged::<_, u32, 1, 100>")]
    pub max_attempts: u32,
    /// Rejections (or assignment timeouts) in total before a job fails with `rejected`.
    #[serde(deserialize_with = "conf::int::ranged::<_, u32, 1, 100>")]
    pub max_rejections: u32,
}

/// `worker_session`: the worker WebSocket sessions.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct WorkerSession {
    /// Interval sent to workers in `welcome` (1–60 s).
    #[serde(deserialize_with = "conf::duration::ranged::<_, 1000, 60_000>")]
    pub heartbeat_interval: Duration,
    /// Intervals without a frame before a session is reaped.
    #[serde(deserialize_with = "conf::int::ranged::<_, u32, 2, 20>")]
    pub missed_heartbeats: u32,
    /// Time allowed between `101` and `hello` (1–300 s).
    #[serde(deserialize_with = "conf::duration::ranged::<_, 1000, 300_000>")]
    pub hello_timeout: Duration,
    /// Concurrent sessions; more get `503`.
    #[serde(deserialize_with = "conf::int::ranged::<_, usize, 1, 1_000_000>")]
    pub max_sessions: usize,
    /// Largest message either way, in bytes (512KiB–16MiB).
    #[serde(deserialize_with = "conf::size::ranged::<_, { 512 << 10 }, { 16 << 20 }>")]
    pub max_frame_bytes: u64,
    /// Outbound queue per session, in frames.
    #[serde(deserialize_with = "conf::int::ranged::<_, usize, 16, 65536>")]
    pub send_queue_frames: usize,
}

/// `limits` (limits-and-bad-input.md §2.1).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Limits {
    /// Largest request body in bytes (64KiB–64MiB).
    #[serde(deserialize_with = "conf::size::ranged::<_, { 64 << 10 }, { 64 << 20 }>")]
    pub max_body_bytes: u64,
    /// Open HTTP connections, not counting upgraded worker sessions.
    #[serde(deserialize_with = "conf::int::ranged::<_, usize, 16, 1_000_000>")]
    pub max_connections: usize,
    /// Time to receive a request's headers (1–300 s).
    #[serde(deserialize_with = "conf::duration::ranged::<_, 1000, 300_000>")]
    pub header_read_timeout: Duration,
    /// Time from the end of a request's head to its body and admission (1–3600 s).
    #[serde(deserialize_with = "conf::duration::ranged::<_, 1000, 3_600_000>")]
    pub request_timeout: Duration,
    /// Open long polls, NDJSON streams and SSE streams together.
    #[serde(deserialize_with = "conf::int::ranged::<_, usize, 1, 1_000_000>")]
    pub max_streams: usize,
    /// Upper bound for `wait` on `/poll/jobs` (1–3600 s).
    #[serde(deserialize_with = "conf::duration::ranged::<_, 1000, 3_600_000>")]
    pub max_poll_wait: Duration,
    /// Pending jobs; further submits get `503 Job queue full`.
    #[serde(deserialize_with = "conf::int::ranged::<_, usize, 1, 10_000_000>")]
    pub max_pending_jobs: usize,
    /// Arguments per job.
    #[serde(deserialize_with = "conf::int::ranged::<_, usize, 1, 65536>")]
    pub max_arguments: usize,
    /// Bytes per argument (1KiB–1MiB, at most `max_job_bytes`).
    #[serde(deserialize_with = "conf::size::ranged::<_, { 1 << 10 }, { 1 << 20 }>")]
    pub max_argument_bytes: u64,
    /// All strings of one job together (at least 1KiB, at most `max_body_bytes` and half of
    /// `worker_session.max_frame_bytes`).
    #[serde(deserialize_with = "conf::size::at_least::<_, { 1 << 10 }>")]
    pub max_job_bytes: u64,
    /// Path variables per job.
    #[serde(deserialize_with = "conf::int::ranged::<_, usize, 1, 1024>")]
    pub max_paths: usize,
    /// Output stored per job (64KiB–16GiB).
    #[serde(deserialize_with = "conf::size::ranged::<_, { 64 << 10 }, { 16 << 30 }>")]
    pub max_output_bytes_per_job: u64,
    /// Stdin forwarded but not yet written by the worker, per job (64KiB–256MiB).
    #[serde(deserialize_with = "conf::size::ranged::<_, { 64 << 10 }, { 256 << 20 }>")]
    pub stdin_window_bytes: u64,
    /// Upper bound for list `limit`s.
    #[serde(deserialize_with = "conf::int::ranged::<_, usize, 100, 1_000_000>")]
    pub max_list_items: usize,
}

/// `retention`: pruning of finished jobs and offline workers.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Retention {
    /// Terminal jobs with all their events are deleted this long after finishing.
    #[serde(deserialize_with = "conf::duration::deserialize")]
    pub finished_jobs: Duration,
    /// Output events of terminal jobs are deleted this long after finishing.
    #[serde(deserialize_with = "conf::duration::deserialize")]
    pub job_output: Duration,
    /// Worker records offline this long are deleted.
    #[serde(deserialize_with = "conf::duration::deserialize")]
    pub offline_workers: Duration,
    /// Jobs pruned per janitor pass at most (at least 1).
    #[serde(deserialize_with = "conf::int::at_least::<_, u32, 1>")]
    pub prune_batch: u32,
}

const DAY: Duration = Duration::from_secs(86_400);

fn strings(items: &[&str]) -> Vec<String> {
    items.iter().map(|item| (*item).to_owned()).collect()
}

fn networks(items: &[&str]) -> Vec<IpNet> {
    items
        .iter()
        .filter_map(|item| conf::parse_network(item).ok())
        .collect()
}

impl Default for Config {
    /// The embedded defaults of config.md §2.4: `127.0.0.1:8000`, store `./dffmpeg-data`.
    fn default() -> Config {
        let database = Database::default();
        Config {
            host: "127.0.0.1".to_owned(),
            port: 8000,
            log_level: None,
            log_format: LogFormat::Text,
            dev_mode: false,
            web_dashboard_enabled: true,
            allowed_dashboard_ips: networks(&["0.0.0.0/0", "::/0"]),
            dashboard_show_job_details: true,
            allowed_metrics_ips: networks(&["0.0.0.0/0", "::/0"]),
            trusted_proxies: networks(&["127.0.0.1", "::1"])
                .into_iter()
                .map(TrustedProxy::Network)
                .collect(),
            allowed_binaries: strings(&["ffmpeg", "ffprobe"]),
            default_job_heartbeat_interval: 5,
            shutdown_delay_seconds: Duration::ZERO,
            shutdown_timeout_seconds: Duration::from_secs(10),
            api_docs_enabled: true,
            admin_socket: database.path.join("admin.sock"),
            database,
            encryption: Encryption::default(),
            security: Security::default(),
            janitor: Janitor::default(),
            scheduler: Scheduler::default(),
            worker_session: WorkerSession::default(),
            limits: Limits::default(),
            retention: Retention::default(),
            argument_policy: ArgumentPolicy::default(),
            handshake_delay_seconds: conf::Ignored,
            transports: conf::Ignored,
        }
    }
}

impl Default for Database {
    fn default() -> Database {
        Database {
            path: PathBuf::from("./dffmpeg-data"),
            engine: Engine::Sled,
            cache_capacity_mb: 64,
        }
    }
}

impl Default for Security {
    fn default() -> Security {
        Security {
            timestamp_tolerance_seconds: 300,
            refuse_replays: true,
        }
    }
}

impl Default for Janitor {
    fn default() -> Janitor {
        Janitor {
            interval: Duration::from_secs(10),
            jitter: Duration::from_millis(500),
            worker_threshold_factor: 1.5,
            job_heartbeat_threshold_factor: 2.5,
            job_assignment_timeout: Duration::from_secs(10),
            job_pending_retry_delay: Duration::from_secs(5),
            job_pending_timeout: Duration::from_secs(30),
            job_cancel_timeout: Duration::from_secs(30),
        }
    }
}

impl Default for Scheduler {
    fn default() -> Scheduler {
        Scheduler {
            max_attempts: 3,
            max_rejections: 5,
        }
    }
}

impl Default for WorkerSession {
    fn default() -> WorkerSession {
        WorkerSession {
            heartbeat_interval: Duration::from_secs(5),
            missed_heartbeats: 3,
            hello_timeout: Duration::from_secs(10),
            max_sessions: 20_000,
            max_frame_bytes: 1 << 20,
            send_queue_frames: 1024,
        }
    }
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            max_body_bytes: 1 << 20,
            max_connections: 4096,
            header_read_timeout: Duration::from_secs(10),
            request_timeout: Duration::from_secs(30),
            max_streams: 4096,
            max_poll_wait: Duration::from_secs(60),
            max_pending_jobs: 100_000,
            max_arguments: 4096,
            max_argument_bytes: 32 << 10,
            max_job_bytes: 256 << 10,
            max_paths: 64,
            max_output_bytes_per_job: 64 << 20,
            stdin_window_bytes: 4 << 20,
            max_list_items: 10_000,
        }
    }
}

impl Default for Retention {
    fn default() -> Retention {
        Retention {
            finished_jobs: DAY * 30,
            job_output: DAY * 7,
            offline_workers: DAY * 30,
            prune_batch: 1000,
        }
    }
}

impl Config {
    /// Finds, reads and checks the file by the search order of config.md §2.1 (`explicit` is `--config`), with
    /// the process environment and the real directories. No file anywhere: the defaults, `source` `None`.
    pub fn load(explicit: Option<&Path>) -> Result<Loaded, Error> {
        Config::load_with(
            explicit,
            |name| std::env::var_os(name),
            &conf::Places::from_process(),
        )
    }

    /// [`Config::load`] with the environment and the searched directories given, for tests.
    pub fn load_with(
        explicit: Option<&Path>,
        env: impl Fn(&str) -> Option<OsString>,
        places: &conf::Places,
    ) -> Result<Loaded, Error> {
        let env_value = env(ENV_VAR);
        let candidates = conf::candidates(places, LOCAL_FILE_NAME, USER_FILE_NAME);
        let Some(file) = conf::locate(explicit, env_value.as_deref(), &candidates) else {
            return Ok(Loaded {
                config: Config::default(),
                source: None,
                warnings: Vec::new(),
            });
        };
        let text = conf::read_file(&file).map_err(Error::Read)?;
        Config::from_yaml(&file, &text)
    }

    /// Parses and checks the text of `file` (shown in messages as given). Used by [`Config::load`], by a reload,
    /// and by the `config_yaml` fuzz target.
    pub fn from_yaml(file: &Path, text: &str) -> Result<Loaded, Error> {
        let shown = file.display().to_string();
        let parsed = conf::parse::<Config>(&shown, text, UPSTREAM_KEYS).map_err(Error::Parse)?;
        let conf::Parsed {
            value: mut config,
            keys,
            mut warnings,
        } = parsed;
        config.resolve_paths(file, &keys)?;
        config.check(&keys)?;
        warnings.extend(config.argument_policy.warnings("argument_policy"));
        Ok(Loaded {
            config,
            source: Some(file.to_path_buf()),
            warnings,
        })
    }

    /// Refuses settings this build parses but does not implement yet (run at startup, not by the parser, so
    /// files written for later builds still parse).
    pub fn refuse_unbuilt(&self) -> Result<(), Error> {
        if let Some(path) = &self.encryption.keys_file {
            return Err(Error::Invalid(conf::ConfigError::bare(format!(
                "encryption.keys_file ({}): keys encrypted at rest are not available in this build yet; leave it unset",
                path.display()
            ))));
        }
        Ok(())
    }

    /// Settings for black-box tests: `127.0.0.1:0`, the store in `dir`, a janitor interval of one hour (tests step
    /// the janitor themselves), everything else default.
    pub fn for_tests(dir: &Path) -> Config {
        Config {
            host: "127.0.0.1".to_owned(),
            port: 0,
            admin_socket: dir.join("admin.sock"),
            database: Database {
                path: dir.to_path_buf(),
                ..Database::default()
            },
            janitor: Janitor {
                interval: Duration::from_secs(3600),
                ..Janitor::default()
            },
            ..Config::default()
        }
    }

    /// The log level or filter to use before `RUST_LOG` is considered: the file's `log_level` if written, else
    /// `debug` in development mode, else `info`.
    pub fn log_level(&self, dev: bool) -> &str {
        match &self.log_level {
            Some(level) => level,
            None if dev => "debug",
            None => "info",
        }
    }

    /// Paths written in the file are relative to its directory; `admin_socket` defaults to
    /// `<database.path>/admin.sock`; socket paths must fit.
    fn resolve_paths(&mut self, file: &Path, keys: &KeyMap) -> Result<(), Error> {
        let invalid = |key: &str, message: &str| Error::Invalid(keys.error(key, message));
        if self.database.path.as_os_str().is_empty() {
            return Err(invalid("database.path", "must not be empty"));
        }
        if keys.contains("database.path") {
            self.database.path = conf::resolve_path(file, &self.database.path);
        }
        if let Some(keys_file) = &self.encryption.keys_file {
            if keys_file.as_os_str().is_empty() {
                return Err(invalid("encryption.keys_file", "must not be empty"));
            }
            self.encryption.keys_file = Some(conf::resolve_path(file, keys_file));
        }
        let explicit_socket =
            keys.contains("admin_socket") && !self.admin_socket.as_os_str().is_empty();
        self.admin_socket = if explicit_socket {
            conf::resolve_path(file, &self.admin_socket)
        } else {
            self.database.path.join("admin.sock")
        };
        if self.admin_socket.as_os_str().len() > MAX_SOCKET_PATH_BYTES {
            let message = format!("longer than {MAX_SOCKET_PATH_BYTES} bytes");
            return Err(if explicit_socket {
                invalid("admin_socket", &message)
            } else {
                Error::Invalid(ConfigError::bare(format!("admin_socket: {message}")))
            });
        }
        Ok(())
    }

    /// The checks that involve several keys, or that parsing cannot do.
    fn check(&self, keys: &KeyMap) -> Result<(), Error> {
        if self.host.trim().is_empty() {
            return Err(Error::Invalid(keys.error("host", "must not be empty")));
        }
        // Parsed now so files stay valid; refused while this build does not enforce them, so no operator
        // believes a switch protects them when it does not.
        let policy = &self.argument_policy;
        let not_yet = "not enforced by this build yet; leave it off";
        for (key, on) in [
            ("argument_policy.deny_url_inputs", policy.deny_url_inputs),
            (
                "argument_policy.deny_unmapped_absolute_paths",
                policy.deny_unmapped_absolute_paths,
            ),
            (
                "argument_policy.deny_file_reading_filters",
                policy.deny_file_reading_filters,
            ),
            (
                "argument_policy.denied_options",
                !policy.denied_options.is_empty(),
            ),
        ] {
            if on {
                return Err(Error::Invalid(keys.error(key, not_yet)));
            }
        }

        let limits = &self.limits;
        let size = conf::format_size;
        let file_error = |message: String| Err(Error::Invalid(keys.file_error(message)));
        if limits.max_argument_bytes > limits.max_job_bytes {
            return file_error(format!(
                "limits.max_argument_bytes ({}) must be at most limits.max_job_bytes ({})",
                size(limits.max_argument_bytes),
                size(limits.max_job_bytes)
            ));
        }
        if limits.max_job_bytes > limits.max_body_bytes {
            return file_error(format!(
                "limits.max_job_bytes ({}) must be at most limits.max_body_bytes ({})",
                size(limits.max_job_bytes),
                size(limits.max_body_bytes)
            ));
        }
        if limits.max_job_bytes > self.worker_session.max_frame_bytes / 2 {
            return file_error(format!(
                "limits.max_job_bytes ({}) must be at most half of worker_session.max_frame_bytes ({})",
                size(limits.max_job_bytes),
                size(self.worker_session.max_frame_bytes)
            ));
        }
        Ok(())
    }
}

/// `allowed_binaries` entries: 1–64 characters `[A-Za-z0-9._-]`.
fn binary_names<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Vec<String>, D::Error> {
    conf::checked_strings(
        deserializer,
        |name| match protocol::ids::check_simple_name(name) {
            Ok(()) => Ok(name.to_owned()),
            Err(_) => Err(format!(
                "expected a binary name of 1–64 characters [A-Za-z0-9._-], got '{}'",
                conf::shown(name)
            )),
        },
    )
}

/// `encryption.default_key_id`: null, or 1–64 characters `[A-Za-z0-9._-]` (auth.md §6.2).
fn key_id<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<String>, D::Error> {
    let Some(id) = Option::<String>::deserialize(deserializer)? else {
        return Ok(None);
    };
    match protocol::ids::check_simple_name(&id) {
        Ok(()) => Ok(Some(id)),
        Err(_) => Err(serde::de::Error::custom(format!(
            "expected a key id of 1–64 characters [A-Za-z0-9._-], got '{}'",
            conf::shown(&id)
        ))),
    }
}

/// A path, `null` giving the empty path (meaning "the default").
fn nullable_path<'de, D: Deserializer<'de>>(deserializer: D) -> Result<PathBuf, D::Error> {
    Option::<PathBuf>::deserialize(deserializer).map(Option::unwrap_or_default)
}

#[cfg(test)]
mod tests {
    use super::*;

    const FILE: &str = "dffmpeg-coordinator.yaml";

    /// config.md §2.4, verbatim.
    const ALL_DEFAULTS: &str = r#"host: 127.0.0.1
port: 8000
log_level: info
log_format: text
web_dashboard_enabled: true
allowed_dashboard_ips: ["0.0.0.0/0", "::/0"]
dashboard_show_job_details: true
allowed_metrics_ips: ["0.0.0.0/0", "::/0"]
trusted_proxies: ["127.0.0.1", "::1"]
allowed_binaries: [ffmpeg, ffprobe]
default_job_heartbeat_interval: 5
shutdown_delay_seconds: 0
shutdown_timeout_seconds: 10
api_docs_enabled: true
# admin_socket: ./dffmpeg-data/admin.sock
database:
  path: ./dffmpeg-data
  engine: sled
  cache_capacity_mb: 64
encryption:
  keys_file: null
  default_key_id: null
security:
  timestamp_tolerance_seconds: 300
  refuse_replays: true
janitor:
  interval: 10
  jitter: 0.5
  worker_threshold_factor: 1.5
  job_heartbeat_threshold_factor: 2.5
  job_assignment_timeout: 10
  job_pending_retry_delay: 5
  job_pending_timeout: 30
  job_cancel_timeout: 30
scheduler:
  max_attempts: 3
  max_rejections: 5
worker_session:
  heartbeat_interval: 5
  missed_heartbeats: 3
  hello_timeout: 10
  max_sessions: 20000
  max_frame_bytes: 1MiB
  send_queue_frames: 1024
limits:
  max_body_bytes: 1MiB
  max_connections: 4096
  header_read_timeout: 10
  request_timeout: 30
  max_streams: 4096
  max_poll_wait: 60
  max_pending_jobs: 100000
  max_arguments: 4096
  max_argument_bytes: 32KiB
  max_job_bytes: 256KiB
  max_paths: 64
  max_output_bytes_per_job: 64MiB
  stdin_window_bytes: 4MiB
  max_list_items: 10000
retention:
  finished_jobs: 30d
  job_output: 7d
  offline_workers: 30d
  prune_batch: 1000
argument_policy:
  deny_url_inputs: false
  allowed_protocols: [file, pipe]
  deny_unmapped_absolute_paths: false
  allowed_absolute_paths: [/dev/null, /dev/dri/]
  deny_file_reading_filters: false
  denied_options: []
"#;

    fn parse(text: &str) -> Result<Loaded, Error> {
        Config::from_yaml(Path::new(FILE), text)
    }

    fn line(text: &str) -> String {
        match parse(text) {
            Ok(loaded) => panic!("{text:?} was accepted: {loaded:?}"),
            Err(err) => err.to_string(),
        }
    }

    /// `section.key: value` as YAML.
    fn setting(key: &str, value: &str) -> String {
        match key.split_once('.') {
            Some((section, key)) => format!("{section}:\n  {key}: {value}\n"),
            None => format!("{key}: {value}\n"),
        }
    }

    fn no_env(_: &str) -> Option<OsString> {
        None
    }

    #[test]
    fn the_written_out_defaults_are_the_defaults() {
        let loaded = parse(ALL_DEFAULTS).unwrap();
        // Writing `log_level: info` is the one difference: it then wins over --dev's `debug`.
        assert_eq!(
            loaded.config,
            Config {
                log_level: Some("info".to_owned()),
                ..Config::default()
            }
        );
        assert!(loaded.warnings.is_empty());
        assert_eq!(loaded.source.as_deref(), Some(Path::new(FILE)));
        let in_cwd =
            Config::from_yaml(Path::new("./dffmpeg-coordinator.yaml"), ALL_DEFAULTS).unwrap();
        assert_eq!(in_cwd.config, loaded.config);
        assert_eq!(parse("").unwrap().config, Config::default());
        assert_eq!(parse("# nothing\n").unwrap().config, Config::default());
    }

    #[test]
    fn defaults() {
        let config = Config::default();
        assert_eq!((config.host.as_str(), config.port), ("127.0.0.1", 8000));
        assert_eq!(config.database.path, PathBuf::from("./dffmpeg-data"));
        assert_eq!(
            config.admin_socket,
            PathBuf::from("./dffmpeg-data/admin.sock")
        );
        assert_eq!(
            config.admin_socket.to_str(),
            Some("./dffmpeg-data/admin.sock")
        );
        assert_eq!(
            config.retention.finished_jobs,
            Duration::from_secs(30 * 86_400)
        );
        assert_eq!(config.janitor.jitter, Duration::from_millis(500));
        assert_eq!(config.allowed_metrics_ips.len(), 2);
        assert_eq!(config.log_level(false), "info");
        assert_eq!(config.log_level(true), "debug");
        let written = Config {
            log_level: Some("warn".to_owned()),
            ..Config::default()
        };
        assert_eq!(written.log_level(true), "warn");
    }

    #[test]
    fn for_tests() {
        let dir = Path::new("/tmp/x");
        let config = Config::for_tests(dir);
        assert_eq!((config.host.as_str(), config.port), ("127.0.0.1", 0));
        assert_eq!(config.database.path, dir);
        assert_eq!(config.admin_socket, dir.join("admin.sock"));
        assert_eq!(config.janitor.interval, Duration::from_secs(3600));
        assert_eq!(config.limits, Limits::default());
    }

    #[test]
    fn parses_other_values() {
        let text = "host: '::'\nport: 0\nlog_level: dffmpeg=trace\nlog_format: json\n\
                    trusted_proxies: ['*', 10.0.0.0/8]\nallowed_binaries: [ffmpeg, ffmpeg-7.1_x]\n\
                    shutdown_delay_seconds: 1.5\nencryption:\n  keys_file: /etc/dffmpeg/keys.yaml\n  \
                    default_key_id: k2026a\nworker_session:\n  max_frame_bytes: 16MiB\nlimits:\n  \
                    max_job_bytes: 8MiB\n  max_body_bytes: 64MiB\n  max_argument_bytes: 1MiB\n";
        let config = parse(text).unwrap().config;
        assert_eq!(config.host, "::");
        assert_eq!(config.port, 0);
        assert_eq!(config.log_level(true), "dffmpeg=trace");
        assert_eq!(config.log_format, LogFormat::Json);
        assert_eq!(config.trusted_proxies[0], TrustedProxy::Any);
        assert!(config.trusted_proxies[0].contains(&"192.0.2.1".parse().unwrap()));
        assert!(config.trusted_proxies[1].contains(&"10.1.2.3".parse().unwrap()));
        assert!(!config.trusted_proxies[1].contains(&"11.1.2.3".parse().unwrap()));
        assert_eq!(config.allowed_binaries, ["ffmpeg", "ffmpeg-7.1_x"]);
        assert_eq!(config.shutdown_delay_seconds, Duration::from_millis(1500));
        assert_eq!(
            config.encryption.keys_file,
            Some(PathBuf::from("/etc/dffmpeg/keys.yaml"))
        );
        assert_eq!(config.encryption.default_key_id.as_deref(), Some("k2026a"));
        assert_eq!(config.limits.max_job_bytes, 8 << 20);
    }

    #[test]
    fn limits_rows_for_the_coordinator_file() {
        let cases: &[(&str, &str)] = &[
            (
                "- a\n",
                "dffmpeg-coordinator.yaml:1:1: expected a mapping of settings",
            ),
            (
                "port: [\n",
                "dffmpeg-coordinator.yaml:1:7: invalid YAML: unclosed bracket '['",
            ),
            (
                "janitor:\n  interval: 1\n  interval: 2\n",
                "dffmpeg-coordinator.yaml:3:3: duplicate key 'janitor.interval'",
            ),
            (
                "janitor:\n  intervall: 3\n",
                "dffmpeg-coordinator.yaml:2:3: unknown key 'janitor.intervall'; expected one of: interval, \
                 jitter, worker_threshold_factor, job_heartbeat_threshold_factor, job_assignment_timeout, \
                 job_pending_retry_delay, job_pending_timeout, job_cancel_timeout",
            ),
            (
                "janitor:\n  interval: soon\n",
                "dffmpeg-coordinator.yaml:2:3: janitor.interval: expected a duration (seconds, or a string \
                 such as \"10s\")",
            ),
            (
                "limits:\n  max_connections: 4\n",
                "dffmpeg-coordinator.yaml:2:3: limits.max_connections: must be between 16 and 1000000, got 4",
            ),
            (
                "log_format: xml\n",
                "dffmpeg-coordinator.yaml:1:1: log_format: expected one of text, json, got 'xml'",
            ),
            (
                "allowed_metrics_ips:\n  - 127.0.0.1\n  - 10.0.0.1/8\n",
                "dffmpeg-coordinator.yaml:3:5: allowed_metrics_ips[1]: invalid network '10.0.0.1/8': host \
                 bits set; did you mean 10.0.0.0/8?",
            ),
            (
                "argument_policy:\n  denied_options:\n    - dump_attachment\n",
                "dffmpeg-coordinator.yaml:3:7: argument_policy.denied_options[0]: expected an option name \
                 such as \"-dump_attachment\", got 'dump_attachment'",
            ),
            (
                "limits:\n  max_job_bytes: 768KiB\n",
                "dffmpeg-coordinator.yaml: limits.max_job_bytes (768KiB) must be at most half of \
                 worker_session.max_frame_bytes (1MiB)",
            ),
            (
                "limits:\n  max_argument_bytes: 512KiB\n",
                "dffmpeg-coordinator.yaml: limits.max_argument_bytes (512KiB) must be at most \
                 limits.max_job_bytes (256KiB)",
            ),
            (
                "limits:\n  max_body_bytes: 128KiB\n",
                "dffmpeg-coordinator.yaml: limits.max_job_bytes (256KiB) must be at most \
                 limits.max_body_bytes (128KiB)",
            ),
            (
                &format!("port: 1\nadmin_socket: /{}\n", "s".repeat(107)),
                "dffmpeg-coordinator.yaml:2:1: admin_socket: longer than 107 bytes",
            ),
            (
                &format!("database:\n  path: /{}\n", "d".repeat(96)),
                "admin_socket: longer than 107 bytes",
            ),
        ];
        for (text, expected) in cases {
            assert_eq!(line(text), *expected, "{text:?}");
        }
        // At the limit exactly, both are fine.
        assert!(parse(&format!("admin_socket: /{}\n", "s".repeat(106))).is_ok());
        assert!(parse(&format!("database:\n  path: /{}\n", "d".repeat(95))).is_ok());
    }

    #[test]
    fn alias_bombs_are_invalid_yaml() {
        let mut text = String::from("a0: &a0 [x, x, x, x, x, x, x, x, x, x]\n");
        for level in 1..12 {
            let prev = format!("*a{}", level - 1);
            let items = [prev.as_str(); 10].join(", ");
            text.push_str(&format!("a{level}: &a{level} [{items}]\n"));
        }
        let line = line(&text);
        assert!(line.starts_with("dffmpeg-coordinator.yaml:"), "{line}");
        assert!(line.contains(": invalid YAML: "), "{line}");
    }

    #[test]
    fn unknown_url_schemes_only_warn() {
        let loaded = parse("argument_policy:\n  allowed_protocols: [file, htpp, HTTPS]\n").unwrap();
        assert_eq!(
            loaded.config.argument_policy.allowed_protocols,
            ["file", "htpp", "https"]
        );
        assert_eq!(
            loaded.warnings,
            ["argument_policy.allowed_protocols: 'htpp' is not a URL scheme FFmpeg knows"]
        );
    }

    #[test]
    fn upstream_keys() {
        let loaded = parse(
            "handshake_delay_seconds: 5\ntransports:\n  http_polling: {enabled: true}\n  rabbitmq: {}\n",
        )
        .unwrap();
        assert_eq!(loaded.config, Config::default());
        assert_eq!(
            loaded.warnings,
            [
                "handshake_delay_seconds: has no effect (workers use WebSocket sessions)",
                "transports: only http_polling is offered; transports is ignored",
            ]
        );
        for key in ["defaults", "engine_defaults", "repositories"] {
            assert_eq!(
                line(&format!("database:\n  path: ./d\n  {key}: {{}}\n")),
                format!(
                    "dffmpeg-coordinator.yaml:3:3: database.{key}: upstream dffmpeg 0.4 database settings are \
                     not supported; set database.path (a directory for the embedded store)"
                )
            );
        }
        assert_eq!(
            line("auth:\n  encryption_keys: [a]\n"),
            "dffmpeg-coordinator.yaml:2:3: auth.encryption_keys: upstream dffmpeg 0.4 key is not supported; \
             put the keys in the file named by encryption.keys_file"
        );
        assert_eq!(
            line("coordinator:\n  auth:\n    encryption_keys_file: /k\n"),
            "dffmpeg-coordinator.yaml:3:5: coordinator.auth.encryption_keys_file: upstream dffmpeg 0.4 key \
             is not supported; use encryption.keys_file"
        );
        assert_eq!(
            line("auth:\n  default_encryption_key_id: k\n"),
            "dffmpeg-coordinator.yaml:2:3: auth.default_encryption_key_id: upstream dffmpeg 0.4 key is not \
             supported; use encryption.default_key_id"
        );
        // Accepted upstream keys are not offered as valid keys.
        let unknown = line("hots: x\n");
        assert!(unknown.starts_with(
            "dffmpeg-coordinator.yaml:1:1: unknown key 'hots'; expected one of: host, port, "
        ));
        assert!(unknown.ends_with("retention, argument_policy"), "{unknown}");
    }

    #[test]
    fn every_range_is_checked() {
        let cases: &[(&str, &str, &str)] = &[
            ("port", "65536", "must be between 0 and 65535, got 65536"),
            ("port", "-1", "must be between 0 and 65535, got -1"),
            (
                "default_job_heartbeat_interval",
                "0",
                "must be between 1 and 3600, got 0",
            ),
            (
                "default_job_heartbeat_interval",
                "3601",
                "must be between 1 and 3600, got 3601",
            ),
            (
                "database.cache_capacity_mb",
                "7",
                "must be between 8 and 65536, got 7",
            ),
            (
                "database.cache_capacity_mb",
                "65537",
                "must be between 8 and 65536, got 65537",
            ),
            (
                "security.timestamp_tolerance_seconds",
                "29",
                "must be between 30 and 3600, got 29",
            ),
            (
                "security.timestamp_tolerance_seconds",
                "3601",
                "must be between 30 and 3600, got 3601",
            ),
            (
                "janitor.interval",
                "0.999",
                "must be at least 1s, got 999ms",
            ),
            (
                "janitor.worker_threshold_factor",
                "0.9",
                "must be at least 1, got 0.9",
            ),
            (
                "janitor.job_heartbeat_threshold_factor",
                "0",
                "must be at least 1, got 0",
            ),
            (
                "scheduler.max_attempts",
                "0",
                "must be between 1 and 100, got 0",
            ),
            (
                "scheduler.max_attempts",
                "101",
                "must be between 1 and 100, got 101",
            ),
            (
                "scheduler.max_rejections",
                "0",
                "must be between 1 and 100, got 0",
            ),
            (
                "scheduler.max_rejections",
                "101",
                "must be between 1 and 100, got 101",
            ),
            (
                "worker_session.heartbeat_interval",
                "500ms",
                "must be between 1s and 1m, got 500ms",
            ),
            (
                "worker_session.heartbeat_interval",
                "61",
                "must be between 1s and 1m, got 61s",
            ),
            (
                "worker_session.missed_heartbeats",
                "1",
                "must be between 2 and 20, got 1",
            ),
            (
                "worker_session.missed_heartbeats",
                "21",
                "must be between 2 and 20, got 21",
            ),
            (
                "worker_session.hello_timeout",
                "0",
                "must be between 1s and 5m, got 0s",
            ),
            (
                "worker_session.hello_timeout",
                "301",
                "must be between 1s and 5m, got 301s",
            ),
            (
                "worker_session.max_sessions",
                "0",
                "must be between 1 and 1000000, got 0",
            ),
            (
                "worker_session.max_sessions",
                "1000001",
                "must be between 1 and 1000000, got 1000001",
            ),
            (
                "worker_session.max_frame_bytes",
                "511KiB",
                "must be between 512KiB and 16MiB, got 511KiB",
            ),
            (
                "worker_session.max_frame_bytes",
                "17MiB",
                "must be between 512KiB and 16MiB, got 17MiB",
            ),
            (
                "worker_session.send_queue_frames",
                "15",
                "must be between 16 and 65536, got 15",
            ),
            (
                "worker_session.send_queue_frames",
                "65537",
                "must be between 16 and 65536, got 65537",
            ),
            (
                "limits.max_body_bytes",
                "63KiB",
                "must be between 64KiB and 64MiB, got 63KiB",
            ),
            (
                "limits.max_body_bytes",
                "65MiB",
                "must be between 64KiB and 64MiB, got 65MiB",
            ),
            (
                "limits.max_connections",
                "1000001",
                "must be between 16 and 1000000, got 1000001",
            ),
            (
                "limits.header_read_timeout",
                "0",
                "must be between 1s and 5m, got 0s",
            ),
            (
                "limits.header_read_timeout",
                "301",
                "must be between 1s and 5m, got 301s",
            ),
            (
                "limits.request_timeout",
                "0.5",
                "must be between 1s and 1h, got 500ms",
            ),
            (
                "limits.request_timeout",
                "3601",
                "must be between 1s and 1h, got 3601s",
            ),
            (
                "limits.max_streams",
                "0",
                "must be between 1 and 1000000, got 0",
            ),
            (
                "limits.max_streams",
                "1000001",
                "must be between 1 and 1000000, got 1000001",
            ),
            (
                "limits.max_poll_wait",
                "0",
                "must be between 1s and 1h, got 0s",
            ),
            (
                "limits.max_poll_wait",
                "2h",
                "must be between 1s and 1h, got 2h",
            ),
            (
                "limits.max_pending_jobs",
                "0",
                "must be between 1 and 10000000, got 0",
            ),
            (
                "limits.max_pending_jobs",
                "10000001",
                "must be between 1 and 10000000, got 10000001",
            ),
            (
                "limits.max_arguments",
                "0",
                "must be between 1 and 65536, got 0",
            ),
            (
                "limits.max_arguments",
                "65537",
                "must be between 1 and 65536, got 65537",
            ),
            (
                "limits.max_argument_bytes",
                "1023",
                "must be between 1KiB and 1MiB, got 1023B",
            ),
            (
                "limits.max_argument_bytes",
                "2MiB",
                "must be between 1KiB and 1MiB, got 2MiB",
            ),
            (
                "limits.max_job_bytes",
                "1000",
                "must be at least 1KiB, got 1000B",
            ),
            ("limits.max_paths", "0", "must be between 1 and 1024, got 0"),
            (
                "limits.max_paths",
                "1025",
                "must be between 1 and 1024, got 1025",
            ),
            (
                "limits.max_output_bytes_per_job",
                "1KiB",
                "must be between 64KiB and 16GiB, got 1KiB",
            ),
            (
                "limits.max_output_bytes_per_job",
                "17GiB",
                "must be between 64KiB and 16GiB, got 17GiB",
            ),
            (
                "limits.stdin_window_bytes",
                "63KiB",
                "must be between 64KiB and 256MiB, got 63KiB",
            ),
            (
                "limits.stdin_window_bytes",
                "257MiB",
                "must be between 64KiB and 256MiB, got 257MiB",
            ),
            (
                "limits.max_list_items",
                "99",
                "must be between 100 and 1000000, got 99",
            ),
            (
                "limits.max_list_items",
                "1000001",
                "must be between 100 and 1000000, got 1000001",
            ),
            ("retention.prune_batch", "0", "must be at least 1, got 0"),
        ];
        for (key, value, message) in cases {
            let position = if key.contains('.') { "2:3" } else { "1:1" };
            assert_eq!(
                line(&setting(key, value)),
                format!("{FILE}:{position}: {key}: {message}"),
                "{key}: {value}"
            );
        }
    }

    #[test]
    fn range_bounds_are_inclusive() {
        let text = "port: 65535\ndefault_job_heartbeat_interval: 3600\ndatabase:\n  cache_capacity_mb: 8\n\
                    security:\n  timestamp_tolerance_seconds: 30\njanitor:\n  interval: 1\n  \
                    worker_threshold_factor: 1\nscheduler:\n  max_attempts: 100\n  max_rejections: 1\n\
                    worker_session:\n  heartbeat_interval: 60\n  missed_heartbeats: 20\n  hello_timeout: 1\n  \
                    max_sessions: 1000000\n  max_frame_bytes: 512KiB\n  send_queue_frames: 16\nlimits:\n  \
                    max_body_bytes: 64KiB\n  max_connections: 16\n  header_read_timeout: 300\n  \
                    request_timeout: 1h\n  max_streams: 1\n  max_poll_wait: 3600\n  max_pending_jobs: 10000000\n  \
                    max_arguments: 65536\n  max_argument_bytes: 1KiB\n  max_job_bytes: 1KiB\n  max_paths: 1024\n  \
                    max_output_bytes_per_job: 16GiB\n  stdin_window_bytes: 256MiB\n  max_list_items: 100\n\
                    retention:\n  prune_batch: 1\n";
        let config = parse(text).unwrap().config;
        assert_eq!(config.port, 65535);
        assert_eq!(
            config.worker_session.heartbeat_interval,
            Duration::from_secs(60)
        );
        assert_eq!(config.limits.max_output_bytes_per_job, 16 << 30);
        assert_eq!(config.limits.max_job_bytes, 1 << 10);
    }

    #[test]
    fn other_refusals() {
        let cases: &[(&str, &str)] = &[
            (
                "database:\n  engine: rocksdb\n",
                "dffmpeg-coordinator.yaml:2:3: database.engine: expected one of sled, got 'rocksdb'",
            ),
            (
                "trusted_proxies: ['*', '10.0.0.1/8']\n",
                "dffmpeg-coordinator.yaml:1:24: trusted_proxies[1]: invalid network '10.0.0.1/8': host bits \
                 set; did you mean 10.0.0.0/8?",
            ),
            (
                "allowed_binaries: [ffmpeg, 'ff mpeg']\n",
                "dffmpeg-coordinator.yaml:1:28: allowed_binaries[1]: expected a binary name of 1–64 \
                 characters [A-Za-z0-9._-], got 'ff mpeg'",
            ),
            (
                "encryption:\n  default_key_id: 'k/1'\n",
                "dffmpeg-coordinator.yaml:2:3: encryption.default_key_id: expected a key id of 1–64 \
                 characters [A-Za-z0-9._-], got 'k/1'",
            ),
            (
                "host: ''\n",
                "dffmpeg-coordinator.yaml:1:1: host: must not be empty",
            ),
            (
                "database:\n  path: ''\n",
                "dffmpeg-coordinator.yaml:2:3: database.path: must not be empty",
            ),
            (
                "encryption:\n  keys_file: ''\n",
                "dffmpeg-coordinator.yaml:2:3: encryption.keys_file: must not be empty",
            ),
            (
                "database:\n  path: [a]\n",
                "dffmpeg-coordinator.yaml:2:3: database.path: expected a string",
            ),
            (
                "dev_mode: sometimes\n",
                "dffmpeg-coordinator.yaml:1:1: dev_mode: expected a boolean (true or false)",
            ),
        ];
        for (text, expected) in cases {
            assert_eq!(line(text), *expected, "{text:?}");
        }
    }

    #[test]
    fn relative_paths_follow_the_file() {
        let file = Path::new("/srv/dffmpeg/conf/coordinator.yaml");
        let text = "database:\n  path: ../data\nencryption:\n  keys_file: keys.yaml\n";
        let config = Config::from_yaml(file, text).unwrap().config;
        assert_eq!(
            config.database.path,
            PathBuf::from("/srv/dffmpeg/conf/../data")
        );
        assert_eq!(
            config.admin_socket,
            PathBuf::from("/srv/dffmpeg/conf/../data/admin.sock")
        );
        assert_eq!(
            config.encryption.keys_file,
            Some(PathBuf::from("/srv/dffmpeg/conf/keys.yaml"))
        );

        let config = Config::from_yaml(file, "admin_socket: ./run/admin.sock\n")
            .unwrap()
            .config;
        assert_eq!(
            config.admin_socket,
            PathBuf::from("/srv/dffmpeg/conf/run/admin.sock")
        );
        // A default stays relative to the working directory.
        assert_eq!(config.database.path, PathBuf::from("./dffmpeg-data"));

        let config = Config::from_yaml(
            file,
            "database:\n  path: /var/lib/dffmpeg\nadmin_socket: null\n",
        )
        .unwrap()
        .config;
        assert_eq!(
            config.admin_socket,
            PathBuf::from("/var/lib/dffmpeg/admin.sock")
        );

        let config = Config::from_yaml(
            Path::new("./dffmpeg-coordinator.yaml"),
            "database:\n  path: data\n",
        )
        .unwrap()
        .config;
        assert_eq!(config.admin_socket.to_str(), Some("data/admin.sock"));
    }

    #[test]
    fn search_order() {
        let dir = tempfile::tempdir().unwrap();
        let places = conf::Places {
            cwd: dir.path().join("cwd"),
            home: Some(dir.path().join("home")),
            system: dir.path().join("etc"),
        };
        let write = |path: &Path, port: u16| {
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(path, format!("port: {port}\n")).unwrap();
        };
        let port = |loaded: &Loaded| loaded.config.port;

        let none = Config::load_with(None, no_env, &places).unwrap();
        assert_eq!(none.source, None);
        assert_eq!(none.config, Config::default());

        let system = dir.path().join("etc/coordinator.yaml");
        write(&system, 5);
        let loaded = Config::load_with(None, no_env, &places).unwrap();
        assert_eq!(
            (port(&loaded), loaded.source.as_deref()),
            (5, Some(system.as_path()))
        );

        write(&dir.path().join("home/.config/dffmpeg/coordinator.yaml"), 4);
        assert_eq!(port(&Config::load_with(None, no_env, &places).unwrap()), 4);

        write(&dir.path().join("cwd/dffmpeg-coordinator.yaml"), 3);
        assert_eq!(port(&Config::load_with(None, no_env, &places).unwrap()), 3);

        let from_env = dir.path().join("env.yaml");
        write(&from_env, 2);
        let env = |name: &str| (name == ENV_VAR).then(|| from_env.clone().into_os_string());
        assert_eq!(port(&Config::load_with(None, env, &places).unwrap()), 2);
        let empty_env = |name: &str| (name == ENV_VAR).then(OsString::new);
        assert_eq!(
            port(&Config::load_with(None, empty_env, &places).unwrap()),
            3
        );

        let explicit = dir.path().join("explicit.yaml");
        write(&explicit, 1);
        let loaded = Config::load_with(Some(&explicit), env, &places).unwrap();
        assert_eq!(
            (port(&loaded), loaded.source.as_deref()),
            (1, Some(explicit.as_path()))
        );

        // A missing explicit or environment file is an error, even with other candidates present.
        let missing = dir.path().join("missing.yaml");
        assert_eq!(
            Config::load_with(Some(&missing), no_env, &places).unwrap_err(),
            Error::Read(ConfigError::in_file(
                &missing.display().to_string(),
                "No such file or directory (os error 2)"
            ))
        );
        let missing_env = |name: &str| (name == ENV_VAR).then(|| missing.clone().into_os_string());
        assert_eq!(
            Config::load_with(None, missing_env, &places)
                .unwrap_err()
                .to_string(),
            format!(
                "{}: No such file or directory (os error 2)",
                missing.display()
            )
        );
    }

    #[test]
    fn unreadable_files() {
        let dir = tempfile::tempdir().unwrap();
        let places = conf::Places {
            cwd: dir.path().to_path_buf(),
            home: None,
            system: dir.path().join("etc"),
        };
        let big = dir.path().join("big.yaml");
        std::fs::write(&big, "#".repeat(2 << 20)).unwrap();
        assert_eq!(
            Config::load_with(Some(&big), no_env, &places)
                .unwrap_err()
                .to_string(),
            format!(
                "{}: larger than 1 MiB; is this the right file?",
                big.display()
            )
        );
        let latin1 = dir.path().join("latin1.yaml");
        std::fs::write(&latin1, b"host: \xff\n").unwrap();
        assert_eq!(
            Config::load_with(Some(&latin1), no_env, &places)
                .unwrap_err()
                .to_string(),
            format!("{}: not valid UTF-8 at byte 6", latin1.display())
        );
        // The file found in the working directory is shown as found.
        std::fs::write(dir.path().join(LOCAL_FILE_NAME), "port: x\n").unwrap();
        assert_eq!(
            Config::load_with(None, no_env, &places)
                .unwrap_err()
                .to_string(),
            format!(
                "{}: port: expected an integer",
                dir.path().join(LOCAL_FILE_NAME).display()
            )
            .replacen(": port", ":1:1: port", 1)
        );
    }

    fn coordinator_yamlish() -> impl proptest::strategy::Strategy<Value = String> {
        use proptest::prelude::*;
        let token = prop_oneof![
            Just("port: ".to_owned()),
            Just("admin_socket: ".to_owned()),
            Just("database:\n  path: ".to_owned()),
            Just("limits:\n  max_job_bytes: ".to_owned()),
            Just("worker_session:\n  max_frame_bytes: ".to_owned()),
            Just("trusted_proxies: ".to_owned()),
            Just("argument_policy:\n  allowed_protocols: ".to_owned()),
            Just("auth:\n  encryption_keys: ".to_owned()),
            Just("transports: ".to_owned()),
            Just("\n".to_owned()),
            Just("[".to_owned()),
            Just("]".to_owned()),
            Just(", ".to_owned()),
            Just("'*'".to_owned()),
            Just("768KiB".to_owned()),
            Just("1e9".to_owned()),
            Just("/".to_owned()),
            "[ -~]{0,8}",
        ];
        proptest::collection::vec(token, 0..24).prop_map(|tokens| tokens.concat())
    }

    proptest::proptest! {
        #[test]
        fn any_text_gives_a_config_or_one_line(text in "\\PC{0,160}") {
            if let Err(err) = parse(&text) {
                proptest::prop_assert!(!err.to_string().contains('\n'));
            }
        }

        #[test]
        fn coordinator_like_text_gives_a_config_or_one_line(text in coordinator_yamlish()) {
            match parse(&text) {
                Ok(loaded) => proptest::prop_assert!(
                    loaded.config.admin_socket.as_os_str().len() <= MAX_SOCKET_PATH_BYTES
                ),
                Err(err) => proptest::prop_assert!(!err.to_string().contains('\n')),
            }
        }
    }
}

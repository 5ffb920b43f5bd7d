//! The worker's configuration (config.md §3): the `Config` tree with every key and its default, the search order
//! (`--config`, `DFFMPEG_WORKER_CONFIG`, `./dffmpeg-worker.yaml`, `~/.config/dffmpeg/worker.yaml`,
//! `/etc/dffmpeg/worker.yaml`), the environment overrides (`DFFMPEG_WORKER_ID`, `DFFMPEG_HMAC_KEY`,
//! `DFFMPEG_COORDINATOR_URL`), the key precedence, range checks and the upstream keys of dffmpeg 0.4. Errors are the
//! one-line causes of limits-and-bad-input.md §6; the worker exits 1 on any of them.
//!
//! Not here: applying the settings (health checks, the session, logging) and the generic parsing machinery, which
//! lives in `conf` and is shared with the coordinator and the client. The environment is a parameter, so tests never
//! touch the process environment.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use conf::{ConfigError, KeyMap, UpstreamKey};
use protocol::signing::HmacKey;
use serde::{Deserialize, Deserializer};

use crate::output::OutputConfig;
use crate::progress::ProgressMode;

pub use conf::ArgumentPolicy;

/// The environment variable naming the file (step 2 of the search order).
pub const ENV_CONFIG: &str = "DFFMPEG_WORKER_CONFIG";
/// Overrides `client_id`.
pub const ENV_WORKER_ID: &str = "DFFMPEG_WORKER_ID";
/// Overrides `hmac_key` and `hmac_key_file`.
pub const ENV_HMAC_KEY: &str = "DFFMPEG_HMAC_KEY";
/// Overrides the `coordinator` section: `scheme://host[:port][/path_base]`.
pub const ENV_COORDINATOR_URL: &str = "DFFMPEG_COORDINATOR_URL";
/// The file searched in the working directory (step 3).
pub const LOCAL_FILE_NAME: &str = "dffmpeg-worker.yaml";
/// The file searched in `~/.config/dffmpeg/` and `/etc/dffmpeg/` (steps 4 and 5).
pub const USER_FILE_NAME: &str = "worker.yaml";

const NO_EFFECT: &str = "has no effect (the worker keeps one WebSocket session to the coordinator)";
const NO_EFFECT_BATCHING: &str = "has no effect (output is batched every output.flush_interval_ms)";

/// Upstream dffmpeg 0.4 keys, accepted with a warning (config.md §3).
pub const UPSTREAM_KEYS: &[UpstreamKey] = &[
    UpstreamKey::warn("registration_interval", NO_EFFECT),
    UpstreamKey::warn("jitter", NO_EFFECT),
    UpstreamKey::warn("log_batch_size", NO_EFFECT_BATCHING),
    UpstreamKey::warn("log_batch_delay", NO_EFFECT_BATCHING),
    UpstreamKey::warn("transports", NO_EFFECT),
];

/// Binaries offered when the `binaries` map is empty, looked up on `PATH`.
pub const DEFAULT_BINARIES: [&str; 2] = ["ffmpeg", "ffprobe"];

/// A configuration error. `Display` is the one line printed after `dffmpeg-worker: loading configuration: `; the
/// worker exits 1 on any of them (cli.md §3.4).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// The file could not be read: missing, unreadable, over 1 MiB, not UTF-8.
    #[error("{0}")]
    Read(ConfigError),
    /// The file is not valid YAML, or does not fit the tree: unknown key, wrong type, value out of range.
    #[error("{0}")]
    Parse(ConfigError),
    /// The values parse but cannot be used: names, the identity, the key, the environment overrides.
    #[error("{0}")]
    Invalid(ConfigError),
}

/// The outcome of [`Config::load`].
#[derive(Debug, Clone, PartialEq)]
pub struct Loaded {
    /// The settings, with `DFFMPEG_COORDINATOR_URL` and `DFFMPEG_WORKER_ID` applied.
    pub config: Config,
    /// Who the worker signs as.
    pub identity: Identity,
    /// The file read, as found; `None` when the environment alone configures the worker.
    pub source: Option<PathBuf>,
    /// Warnings to log once the logger is up (upstream keys, several keys set, unknown URL schemes), one line each.
    pub warnings: Vec<String>,
}

/// The worker's identity: its `client_id` and HMAC key. `Debug` never shows the key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    /// The identity (role `worker`), also `hello.worker_id`.
    pub client_id: String,
    /// The identity's key.
    pub key: HmacKey,
}

/// A secret string from the file (`hmac_key`): never shown by `Debug`.
#[derive(Clone, PartialEq, Eq, Default, Deserialize)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    /// The secret text.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

pub use conf::LogFormat;

/// `progress`: how progress is read (cli.md §3.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ProgressSetting {
    /// `-progress pipe:3` (the default).
    #[default]
    Pipe,
    /// Stats lines in a copy of stderr.
    Stderr,
    /// No progress.
    Off,
}

impl ProgressSetting {
    /// The job-execution core's mode.
    pub fn mode(self) -> ProgressMode {
        match self {
            ProgressSetting::Pipe => ProgressMode::Pipe,
            ProgressSetting::Stderr => ProgressMode::Stderr,
            ProgressSetting::Off => ProgressMode::Off,
        }
    }
}

/// `coordinator.scheme`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Scheme {
    /// Plain HTTP; the session uses `ws`.
    #[default]
    Http,
    /// HTTPS; the session uses `wss`.
    Https,
}

impl Scheme {
    /// `http` or `https`.
    pub fn as_str(self) -> &'static str {
        match self {
            Scheme::Http => "http",
            Scheme::Https => "https",
        }
    }

    fn default_port(self) -> u16 {
        match self {
            Scheme::Http => 80,
            Scheme::Https => 443,
        }
    }
}

/// The worker's settings (config.md §3). Every key but the identity has a default; with the environment overrides
/// set, no file is needed.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// The worker identity as written in the file; [`Loaded::identity`] has the effective one.
    pub client_id: Option<String>,
    /// The identity's key, inline (lowest precedence).
    pub hmac_key: Option<Secret>,
    /// A file holding the key, surrounding whitespace trimmed (resolved against the file's directory).
    pub hmac_key_file: Option<PathBuf>,
    /// `coordinator` section.
    pub coordinator: Coordinator,
    /// Executables by binary name; empty: `ffmpeg` and `ffprobe` on `PATH`.
    pub binaries: BTreeMap<String, PathBuf>,
    /// Local root of each path variable.
    pub paths: BTreeMap<String, PathBuf>,
    /// Slots.
    #[serde(deserialize_with = "conf::int::ranged::<_, u32, 1, 1024>")]
    pub max_concurrent_jobs: u32,
    /// Free-form tags reported to the coordinator (at most 64, each at most 64 bytes).
    pub capabilities: Vec<String>,
    /// SIGTERM → SIGKILL delay when a job is stopped.
    #[serde(deserialize_with = "conf::duration::deserialize")]
    pub kill_grace_seconds: Duration,
    /// SIGTERM drains; `false`: SIGTERM stops the running jobs and gives them back at once.
    pub enable_job_draining: bool,
    /// Shortest time between the drain and exit.
    #[serde(deserialize_with = "conf::duration::deserialize")]
    pub min_drain_time_seconds: Duration,
    /// Longest drain; `None` waits for the jobs.
    #[serde(deserialize_with = "conf::duration::option")]
    pub drain_timeout_seconds: Option<Duration>,
    /// How progress is read.
    pub progress: ProgressSetting,
    /// Working directory for jobs without a mapped one; `None`: the worker's own.
    pub default_working_directory: Option<PathBuf>,
    /// Allow resolved paths whose real location leaves their variable's root.
    pub follow_symlinks_outside_roots: bool,
    /// `output` section.
    pub output: Output,
    /// `reconnect` section.
    pub reconnect: Reconnect,
    /// How often binaries, path roots and mounts are re-checked (at least 100 ms).
    #[serde(deserialize_with = "conf::duration::at_least::<_, 100>")]
    pub mount_check_interval: Duration,
    /// `mount_management` section.
    pub mount_management: MountManagement,
    /// `argument_policy` section; every switch must be off in this version (the worker-side checker comes later).
    pub argument_policy: ArgumentPolicy,
    /// `error`, `warn`, `info`, `debug`, `trace`, or a tracing filter directive. `RUST_LOG` wins.
    pub log_level: String,
    /// Log line format.
    pub log_format: LogFormat,
    /// Upstream key, accepted with a warning and ignored.
    pub registration_interval: conf::Ignored,
    /// Upstream key, accepted with a warning and ignored.
    pub jitter: conf::Ignored,
    /// Upstream key, accepted with a warning and ignored.
    pub log_batch_size: conf::Ignored,
    /// Upstream key, accepted with a warning and ignored.
    pub log_batch_delay: conf::Ignored,
    /// Upstream section, accepted with a warning and ignored.
    pub transports: conf::Ignored,
}

/// `coordinator`: where the coordinator listens.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Coordinator {
    /// `https` connects with `wss`.
    pub scheme: Scheme,
    /// Host name or address (an IPv6 address without brackets).
    pub host: String,
    /// Port.
    #[serde(deserialize_with = "conf::int::ranged::<_, u16, 1, 65535>")]
    pub port: u16,
    /// A prefix a reverse proxy strips: empty, or starting with `/` (a trailing `/` is dropped). Never signed.
    pub path_base: String,
}

impl Default for Coordinator {
    fn default() -> Coordinator {
        Coordinator {
            scheme: Scheme::Http,
            host: "127.0.0.1".to_owned(),
            port: 8000,
            path_base: String::new(),
        }
    }
}

impl Coordinator {
    /// The host as it goes into a URL: an IPv6 address in brackets.
    fn url_host(&self) -> String {
        if self.host.contains(':') && !self.host.starts_with('[') {
            format!("[{}]", self.host)
        } else {
            self.host.clone()
        }
    }

    /// `http://host:port/path_base`, as shown in logs and by `--check`; also the REST base URL.
    pub fn base_url(&self) -> String {
        format!(
            "{}://{}:{}{}",
            self.scheme.as_str(),
            self.url_host(),
            self.port,
            self.path_base
        )
    }

    /// The session URL: `{ws|wss}://host:port{path_base}/worker/ws` (worker-protocol.md §1).
    pub fn session_url(&self) -> String {
        let scheme = match self.scheme {
            Scheme::Http => "ws",
            Scheme::Https => "wss",
        };
        format!(
            "{scheme}://{}:{}{}{}",
            self.url_host(),
            self.port,
            self.path_base,
            crate::session::SESSION_PATH
        )
    }

    /// Parses `DFFMPEG_COORDINATOR_URL`: `scheme://host[:port][/path_base]`, the port defaulting to 80 or 443.
    pub fn from_url(text: &str) -> Result<Coordinator, ConfigError> {
        let refuse = || {
            ConfigError::bare(format!(
                "{ENV_COORDINATOR_URL}: expected scheme://host[:port][/path_base], got '{}'",
                conf::shown(text)
            ))
        };
        let (scheme, rest) = text.split_once("://").ok_or_else(refuse)?;
        let scheme = match scheme {
            "http" => Scheme::Http,
            "https" => Scheme::Https,
            _ => return Err(refuse()),
        };
        if rest.contains(['?', '#', '@']) || rest.chars().any(|c| c.is_whitespace()) {
            return Err(refuse());
        }
        let (authority, path) = match rest.find('/') {
            Some(slash) => (&rest[..slash], &rest[slash..]),
            None => (rest, ""),
        };
        let (host, port) = if let Some(bracketed) = authority.strip_prefix('[') {
            let (host, after) = bracketed.split_once(']').ok_or_else(refuse)?;
            let port = match after {
                "" => None,
                after => Some(after.strip_prefix(':').ok_or_else(refuse)?),
            };
            (host, port)
        } else {
            match authority.split_once(':') {
                Some((host, port)) => (host, Some(port)),
                None => (authority, None),
            }
        };
        if host.is_empty() {
            return Err(refuse());
        }
        let port = match port {
            None => scheme.default_port(),
            Some(digits) if !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit()) => {
                match digits.parse::<u16>() {
                    Ok(port) if port > 0 => port,
                    _ => return Err(refuse()),
                }
            }
            Some(_) => return Err(refuse()),
        };
        Ok(Coordinator {
            scheme,
            host: host.to_owned(),
            port,
            path_base: path.trim_end_matches('/').to_owned(),
        })
    }
}

/// `output`: chunking, batching and buffering of job output (worker-protocol.md §4.5, §7).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Output {
    /// Output batching interval and partial-line idle flush, in milliseconds.
    #[serde(deserialize_with = "conf::int::ranged::<_, u64, 5, 1000>")]
    pub flush_interval_ms: u64,
    /// Largest output chunk, in bytes (4KiB–256KiB).
    #[serde(deserialize_with = "conf::size::ranged::<_, { 4 << 10 }, { 256 << 10 }>")]
    pub max_chunk_bytes: u64,
    /// Unsent output kept per job while disconnected, in bytes (at least 64KiB).
    #[serde(deserialize_with = "conf::size::at_least::<_, { 64 << 10 }>")]
    pub buffer_bytes: u64,
}

impl Default for Output {
    fn default() -> Output {
        Output {
            flush_interval_ms: 50,
            max_chunk_bytes: 64 << 10,
            buffer_bytes: 8 << 20,
        }
    }
}

impl Output {
    /// The job-execution core's output settings.
    pub fn to_output_config(&self) -> OutputConfig {
        OutputConfig {
            flush_interval: Duration::from_millis(self.flush_interval_ms),
            max_chunk_bytes: usize::try_from(self.max_chunk_bytes).unwrap_or(64 << 10),
            buffer_bytes: usize::try_from(self.buffer_bytes).unwrap_or(usize::MAX),
            ..OutputConfig::default()
        }
    }
}

/// `reconnect`: the session's reconnect backoff (worker-protocol.md §7).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Reconnect {
    /// First reconnect delay (at least 10 ms).
    #[serde(deserialize_with = "conf::duration::at_least::<_, 10>")]
    pub initial_delay: Duration,
    /// Backoff ceiling (at least 10 ms).
    #[serde(deserialize_with = "conf::duration::at_least::<_, 10>")]
    pub max_delay: Duration,
}

impl Default for Reconnect {
    fn default() -> Reconnect {
        Reconnect {
            initial_delay: Duration::from_millis(500),
            max_delay: Duration::from_secs(30),
        }
    }
}

/// `mount_management`: managed mount points. Parsed and used by the health check (a root under or containing an
/// unmounted managed mount is unhealthy); the recovery (`systemctl start`) is not built yet.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MountManagement {
    /// Try `systemctl start <unit>.mount` for a managed mount that is down.
    pub recovery: bool,
    /// Prefix that with `sudo -n`.
    pub sudo: bool,
    /// Managed mount points.
    pub mounts: Vec<ManagedMount>,
}

impl Default for MountManagement {
    fn default() -> MountManagement {
        MountManagement {
            recovery: true,
            sudo: false,
            mounts: Vec::new(),
        }
    }
}

/// One managed mount: a path, or `{path, dependencies}`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ManagedMount {
    /// The mount point.
    pub path: PathBuf,
    /// Mount points this one needs first.
    pub dependencies: Vec<PathBuf>,
}

impl<'de> Deserialize<'de> for ManagedMount {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<ManagedMount, D::Error> {
        #[derive(Deserialize)]
        #[serde(deny_unknown_fields)]
        struct Full {
            path: PathBuf,
            #[serde(default)]
            dependencies: Vec<PathBuf>,
        }
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Entry {
            Path(PathBuf),
            Full(Full),
        }
        match Entry::deserialize(deserializer) {
            Ok(Entry::Path(path)) => Ok(ManagedMount {
                path,
                dependencies: Vec::new(),
            }),
            Ok(Entry::Full(full)) => Ok(ManagedMount {
                path: full.path,
                dependencies: full.dependencies,
            }),
            Err(_) => Err(serde::de::Error::custom(
                "expected a mount point path, or {path, dependencies: [path, …]}",
            )),
        }
    }
}

impl Default for Config {
    fn default() -> Config {
        Config {
            client_id: None,
            hmac_key: None,
            hmac_key_file: None,
            coordinator: Coordinator::default(),
            binaries: BTreeMap::new(),
            paths: BTreeMap::new(),
            max_concurrent_jobs: 2,
            capabilities: Vec::new(),
            kill_grace_seconds: Duration::from_secs(5),
            enable_job_draining: true,
            min_drain_time_seconds: Duration::ZERO,
            drain_timeout_seconds: None,
            progress: ProgressSetting::Pipe,
            default_working_directory: None,
            follow_symlinks_outside_roots: false,
            output: Output::default(),
            reconnect: Reconnect::default(),
            mount_check_interval: Duration::from_secs(15),
            mount_management: MountManagement::default(),
            argument_policy: ArgumentPolicy::default(),
            log_level: "info".to_owned(),
            log_format: LogFormat::Text,
            registration_interval: conf::Ignored,
            jitter: conf::Ignored,
            log_batch_size: conf::Ignored,
            log_batch_delay: conf::Ignored,
            transports: conf::Ignored,
        }
    }
}

/// The environment as the loader sees it: a lookup function, so tests never mutate the process environment.
pub type EnvLookup<'a> = &'a dyn Fn(&str) -> Option<OsString>;

impl Config {
    /// Finds, reads and checks the file by the search order (`explicit` is `--config`) and applies the
    /// environment overrides, with the process environment and the real directories.
    pub fn load(explicit: Option<&Path>) -> Result<Loaded, Error> {
        let env = |name: &str| std::env::var_os(name);
        Config::load_with(explicit, &env, &conf::Places::from_process())
    }

    /// [`Config::load`] with the environment and the searched directories given, for tests.
    pub fn load_with(
        explicit: Option<&Path>,
        env: EnvLookup<'_>,
        places: &conf::Places,
    ) -> Result<Loaded, Error> {
        let env_value = env(ENV_CONFIG);
        let candidates = conf::candidates(places, LOCAL_FILE_NAME, USER_FILE_NAME);
        match conf::locate(explicit, env_value.as_deref(), &candidates) {
            Some(file) => {
                let text = conf::read_file(&file).map_err(Error::Read)?;
                Config::from_yaml(&file, &text, env)
            }
            None => Config::from_env_only(env),
        }
    }

    /// Parses and checks the text of `file` (shown in messages as given), then applies the environment.
    pub fn from_yaml(file: &Path, text: &str, env: EnvLookup<'_>) -> Result<Loaded, Error> {
        let shown = file.display().to_string();
        let parsed = conf::parse::<Config>(&shown, text, UPSTREAM_KEYS).map_err(Error::Parse)?;
        let conf::Parsed {
            value: mut config,
            keys,
            mut warnings,
        } = parsed;
        config.resolve_paths(file);
        config.check(&keys)?;
        warnings.extend(config.argument_policy.warnings("argument_policy"));
        let identity = config.finish(Some(&keys), env, &mut warnings)?;
        Ok(Loaded {
            config,
            identity,
            source: Some(file.to_path_buf()),
            warnings,
        })
    }

    /// No file anywhere: the defaults plus the environment, which must then name the identity and the key.
    fn from_env_only(env: EnvLookup<'_>) -> Result<Loaded, Error> {
        let mut config = Config::default();
        let mut warnings = Vec::new();
        let identity = config.finish(None, env, &mut warnings)?;
        Ok(Loaded {
            config,
            identity,
            source: None,
            warnings,
        })
    }

    /// Paths written in the file are relative to its directory.
    fn resolve_paths(&mut self, file: &Path) {
        let resolve = |path: &mut PathBuf| *path = conf::resolve_path(file, path);
        if let Some(path) = &mut self.hmac_key_file {
            resolve(path);
        }
        if let Some(path) = &mut self.default_working_directory {
            resolve(path);
        }
        self.binaries.values_mut().for_each(resolve);
        self.paths.values_mut().for_each(resolve);
    }

    /// Checks that parsing cannot do: names, bounds that `hello` would refuse, the path base, the policy switches.
    fn check(&mut self, keys: &KeyMap) -> Result<(), Error> {
        let invalid = |key: &str, message: String| Err(Error::Invalid(keys.error(key, message)));
        if let Some(client_id) = &self.client_id
            && protocol::ids::check_identity_id(client_id).is_err()
        {
            return invalid(
                "client_id",
                format!(
                    "expected 1–64 characters [A-Za-z0-9._@-] starting with a letter or digit, got '{}'",
                    conf::shown(client_id)
                ),
            );
        }
        if self.coordinator.host.trim().is_empty() {
            return invalid("coordinator.host", "must not be empty".to_owned());
        }
        let path_base = self.coordinator.path_base.trim_end_matches('/').to_owned();
        if !path_base.is_empty() && !path_base.starts_with('/') {
            return invalid(
                "coordinator.path_base",
                format!(
                    "expected a path starting with '/', got '{}'",
                    conf::shown(&self.coordinator.path_base)
                ),
            );
        }
        self.coordinator.path_base = path_base;
        for (section, names, limit) in [
            ("binaries", self.binaries.keys().collect::<Vec<_>>(), 64),
            ("paths", self.paths.keys().collect::<Vec<_>>(), 1024),
        ] {
            if names.len() > limit {
                return invalid(section, format!("more than {limit} entries"));
            }
            for name in names {
                if protocol::ids::check_simple_name(name).is_err() {
                    let what = if section == "binaries" {
                        "binary name"
                    } else {
                        "path variable name"
                    };
                    return invalid(
                        &format!("{section}.{name}"),
                        format!(
                            "expected a {what} of 1–64 characters [A-Za-z0-9._-], got '{}'",
                            conf::shown(name)
                        ),
                    );
                }
            }
        }
        if self.capabilities.len() > 64 {
            return invalid("capabilities", "more than 64 items".to_owned());
        }
        if let Some(index) = self.capabilities.iter().position(|tag| tag.len() > 64) {
            return invalid(
                &format!("capabilities[{index}]"),
                "longer than 64 bytes".to_owned(),
            );
        }
        if self.reconnect.max_delay < self.reconnect.initial_delay {
            return Err(Error::Invalid(keys.file_error(format!(
                "reconnect.max_delay ({}) must be at least reconnect.initial_delay ({})",
                conf::format_duration(self.reconnect.max_delay),
                conf::format_duration(self.reconnect.initial_delay)
            ))));
        }
        let policy = &self.argument_policy;
        for (key, on) in [
            ("deny_url_inputs", policy.deny_url_inputs),
            (
                "deny_unmapped_absolute_paths",
                policy.deny_unmapped_absolute_paths,
            ),
            (
                "deny_file_reading_filters",
                policy.deny_file_reading_filters,
            ),
            ("denied_options", !policy.denied_options.is_empty()),
        ] {
            if on {
                return invalid(
                    &format!("argument_policy.{key}"),
                    "this dffmpeg-worker cannot check the argument policy yet; turn the switch off here \
                     (the coordinator still checks its own argument_policy)"
                        .to_owned(),
                );
            }
        }
        Ok(())
    }

    /// Applies `DFFMPEG_COORDINATOR_URL` and `DFFMPEG_WORKER_ID`, and finds the key by its precedence.
    fn finish(
        &mut self,
        keys: Option<&KeyMap>,
        env: EnvLookup<'_>,
        warnings: &mut Vec<String>,
    ) -> Result<Identity, Error> {
        let env_text = |name: &str| -> Result<Option<String>, Error> {
            match env(name) {
                None => Ok(None),
                Some(value) if value.is_empty() => Ok(None),
                Some(value) => value.into_string().map(Some).map_err(|_| {
                    Error::Invalid(ConfigError::bare(format!("{name}: not valid UTF-8")))
                }),
            }
        };
        if let Some(url) = env_text(ENV_COORDINATOR_URL)? {
            self.coordinator = Coordinator::from_url(&url).map_err(Error::Invalid)?;
        }
        let client_id = match env_text(ENV_WORKER_ID)? {
            Some(client_id) => {
                if protocol::ids::check_identity_id(&client_id).is_err() {
                    return Err(Error::Invalid(ConfigError::bare(format!(
                        "{ENV_WORKER_ID}: expected 1–64 characters [A-Za-z0-9._@-] starting with a letter or \
                         digit, got '{}'",
                        conf::shown(&client_id)
                    ))));
                }
                client_id
            }
            None => match (&self.client_id, keys) {
                (Some(client_id), _) => client_id.clone(),
                (None, Some(keys)) => {
                    return Err(Error::Invalid(keys.file_error(format!(
                        "client_id: required (or set {ENV_WORKER_ID})"
                    ))));
                }
                (None, None) => {
                    return Err(Error::Invalid(ConfigError::bare(format!(
                        "no configuration file found (looked in ./{LOCAL_FILE_NAME}, \
                         ~/.config/dffmpeg/{USER_FILE_NAME}, /etc/dffmpeg/{USER_FILE_NAME}) and {ENV_WORKER_ID} \
                         is not set"
                    ))));
                }
            },
        };
        self.client_id = Some(client_id.clone());

        let env_key = env_text(ENV_HMAC_KEY)?;
        let set: Vec<&str> = [
            env_key.as_ref().map(|_| ENV_HMAC_KEY),
            self.hmac_key_file.as_ref().map(|_| "hmac_key_file"),
            self.hmac_key.as_ref().map(|_| "hmac_key"),
        ]
        .into_iter()
        .flatten()
        .collect();
        if set.len() > 1 {
            warnings.push(format!(
                "more than one HMAC key is set ({}); using {}",
                set.join(", "),
                set[0]
            ));
        }
        const KEY_FORMAT: &str = "expected standard base64 of 32 bytes (44 characters)";
        let key = if let Some(text) = env_key {
            HmacKey::parse(text.trim()).map_err(|_| {
                Error::Invalid(ConfigError::bare(format!("{ENV_HMAC_KEY}: {KEY_FORMAT}")))
            })?
        } else if let Some(path) = &self.hmac_key_file {
            let text = conf::read_file(path)
                .map_err(|err| Error::Invalid(ConfigError::bare(format!("hmac_key_file {err}"))))?;
            HmacKey::parse(text.trim()).map_err(|_| {
                Error::Invalid(ConfigError::bare(format!(
                    "hmac_key_file {}: {KEY_FORMAT}",
                    path.display()
                )))
            })?
        } else if let Some(secret) = &self.hmac_key {
            HmacKey::parse(secret.expose().trim()).map_err(|_| {
                let message = format!("hmac_key: {KEY_FORMAT}");
                Error::Invalid(match keys {
                    Some(keys) => ConfigError::at(keys.file(), keys.location("hmac_key"), message),
                    None => ConfigError::bare(message),
                })
            })?
        } else {
            let message = match keys {
                Some(keys) => format!(
                    "no HMAC key: set hmac_key or hmac_key_file in {}, or {ENV_HMAC_KEY}",
                    keys.file()
                ),
                None => format!(
                    "no HMAC key: set {ENV_HMAC_KEY}, or hmac_key or hmac_key_file in a configuration file"
                ),
            };
            return Err(Error::Invalid(ConfigError::bare(message)));
        };
        Ok(Identity { client_id, key })
    }

    /// The binaries to check: the `binaries` map, or `ffmpeg` and `ffprobe` (paths `None`: look up on `PATH`).
    pub fn binary_entries(&self) -> Vec<(String, Option<PathBuf>)> {
        if self.binaries.is_empty() {
            DEFAULT_BINARIES
                .iter()
                .map(|name| ((*name).to_owned(), None))
                .collect()
        } else {
            self.binaries
                .iter()
                .map(|(name, path)| (name.clone(), Some(path.clone())))
                .collect()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const FILE: &str = "dffmpeg-worker.yaml";
    const KEY: &str = "agU939Kjy2TA/QuqjyZ0lHrjWrYGxB+pEb3LZUfqK5Y=";
    const OTHER_KEY: &str = "qHdOvnF4mlz6TSStMCoY6KvEpDQGpcteNU2LMGInyuY=";

    /// config.md §3's example, plus an inline key.
    const EXAMPLE: &str = "client_id: worker01
hmac_key: agU939Kjy2TA/QuqjyZ0lHrjWrYGxB+pEb3LZUfqK5Y=
coordinator:
  host: coordinator.lan
  port: 8000
binaries:
  ffmpeg: /usr/lib/jellyfin-ffmpeg/ffmpeg
  ffprobe: /usr/lib/jellyfin-ffmpeg/ffprobe
paths:
  Media: /mnt/media
  Transcodes: /srv/jellyfin/transcodes
max_concurrent_jobs: 2
mount_management:
  mounts: [/mnt/media]
";

    fn no_env(_: &str) -> Option<OsString> {
        None
    }

    fn parse_with(text: &str, env: EnvLookup<'_>) -> Result<Loaded, Error> {
        Config::from_yaml(Path::new(FILE), text, env)
    }

    fn parse(text: &str) -> Result<Loaded, Error> {
        parse_with(text, &no_env)
    }

    fn line(text: &str) -> String {
        match parse(text) {
            Ok(loaded) => panic!("{text:?} was accepted: {loaded:?}"),
            Err(err) => err.to_string(),
        }
    }

    fn with_identity(text: &str) -> String {
        format!("client_id: worker01\nhmac_key: {KEY}\n{text}")
    }

    fn env_of(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<OsString> + use<> {
        let pairs: Vec<(String, String)> = pairs
            .iter()
            .map(|(name, value)| ((*name).to_owned(), (*value).to_owned()))
            .collect();
        move |name: &str| {
            pairs
                .iter()
                .find(|(key, _)| key == name)
                .map(|(_, value)| OsString::from(value))
        }
    }

    #[test]
    fn the_example_parses() {
        let loaded = parse(EXAMPLE).unwrap();
        let config = &loaded.config;
        assert_eq!(loaded.identity.client_id, "worker01");
        assert_eq!(loaded.identity.key, HmacKey::parse(KEY).unwrap());
        assert_eq!(config.coordinator.host, "coordinator.lan");
        assert_eq!(config.coordinator.base_url(), "http://coordinator.lan:8000");
        assert_eq!(
            config.coordinator.session_url(),
            "ws://coordinator.lan:8000/worker/ws"
        );
        assert_eq!(
            config.binaries["ffmpeg"],
            PathBuf::from("/usr/lib/jellyfin-ffmpeg/ffmpeg")
        );
        assert_eq!(config.paths.len(), 2);
        assert_eq!(
            config.mount_management.mounts,
            [ManagedMount {
                path: PathBuf::from("/mnt/media"),
                dependencies: vec![]
            }]
        );
        assert!(loaded.warnings.is_empty());
        assert!(
            !format!("{loaded:?}").contains(KEY),
            "the key is never shown"
        );
    }

    #[test]
    fn defaults() {
        let config = parse(&with_identity("")).unwrap().config;
        assert_eq!(
            config,
            Config {
                client_id: Some("worker01".to_owned()),
                hmac_key: Some(Secret(KEY.to_owned())),
                ..Config::default()
            }
        );
        assert_eq!(config.max_concurrent_jobs, 2);
        assert_eq!(config.kill_grace_seconds, Duration::from_secs(5));
        assert!(config.enable_job_draining);
        assert_eq!(config.output.flush_interval_ms, 50);
        assert_eq!(config.output.max_chunk_bytes, 64 << 10);
        assert_eq!(config.output.buffer_bytes, 8 << 20);
        assert_eq!(config.reconnect.initial_delay, Duration::from_millis(500));
        assert_eq!(config.reconnect.max_delay, Duration::from_secs(30));
        assert_eq!(config.mount_check_interval, Duration::from_secs(15));
        assert!(config.mount_management.recovery);
        assert_eq!(config.progress, ProgressSetting::Pipe);
        assert_eq!(
            config.binary_entries(),
            [("ffmpeg".to_owned(), None), ("ffprobe".to_owned(), None)]
        );
        let output = config.output.to_output_config();
        assert_eq!(output.flush_interval, Duration::from_millis(50));
        assert_eq!(output.buffer_bytes, 8 << 20);
    }

    #[test]
    fn other_values() {
        let text = with_identity(
            "coordinator:\n  scheme: https\n  host: '::1'\n  port: 8443\n  path_base: /dffmpeg/\n\
             progress: stderr\nkill_grace_seconds: 1.5\ndrain_timeout_seconds: 2m\n\
             output:\n  flush_interval_ms: 5\n  max_chunk_bytes: 4KiB\n  buffer_bytes: 1MiB\n\
             mount_management:\n  mounts: [{path: /mnt/a, dependencies: [/mnt]}, /mnt/b]\n\
             log_format: json\ncapabilities: [gpu, nvenc]\n",
        );
        let config = parse(&text).unwrap().config;
        assert_eq!(config.coordinator.path_base, "/dffmpeg");
        assert_eq!(config.coordinator.base_url(), "https://[::1]:8443/dffmpeg");
        assert_eq!(
            config.coordinator.session_url(),
            "wss://[::1]:8443/dffmpeg/worker/ws"
        );
        assert_eq!(config.progress.mode(), ProgressMode::Stderr);
        assert_eq!(config.kill_grace_seconds, Duration::from_millis(1500));
        assert_eq!(config.drain_timeout_seconds, Some(Duration::from_secs(120)));
        assert_eq!(config.output.max_chunk_bytes, 4096);
        assert_eq!(config.mount_management.mounts.len(), 2);
        assert_eq!(
            config.mount_management.mounts[0].dependencies,
            [PathBuf::from("/mnt")]
        );
        assert_eq!(config.log_format, LogFormat::Json);
    }

    #[test]
    fn exact_error_lines() {
        let cases: &[(&str, &str)] = &[
            (
                "client_id: w\nhmac_key: x\nmax_concurent_jobs: 3\n",
                "dffmpeg-worker.yaml:3:1: unknown key 'max_concurent_jobs'; expected one of: client_id, \
                 hmac_key, hmac_key_file, coordinator, binaries, paths, max_concurrent_jobs, capabilities, \
                 kill_grace_seconds, enable_job_draining, min_drain_time_seconds, drain_timeout_seconds, \
                 progress, default_working_directory, follow_symlinks_outside_roots, output, reconnect, \
                 mount_check_interval, mount_management, argument_policy, log_level, log_format",
            ),
            (
                "max_concurrent_jobs: 0\n",
                "dffmpeg-worker.yaml:1:1: max_concurrent_jobs: must be between 1 and 1024, got 0",
            ),
            (
                "output:\n  flush_interval_ms: 2000\n",
                "dffmpeg-worker.yaml:2:3: output.flush_interval_ms: must be between 5 and 1000, got 2000",
            ),
            (
                "output:\n  max_chunk_bytes: 1MiB\n",
                "dffmpeg-worker.yaml:2:3: output.max_chunk_bytes: must be between 4KiB and 256KiB, got 1MiB",
            ),
            (
                "progress: fast\n",
                "dffmpeg-worker.yaml:1:1: progress: expected one of pipe, stderr, off, got 'fast'",
            ),
            (
                "log_format: xml\n",
                "dffmpeg-worker.yaml:1:1: log_format: expected one of text, json, got 'xml'",
            ),
            (
                "kill_grace_seconds: soon\n",
                "dffmpeg-worker.yaml:1:1: kill_grace_seconds: expected a duration (seconds, or a string such \
                 as \"10s\")",
            ),
            (
                "coordinator:\n  port: 0\n",
                "dffmpeg-worker.yaml:2:3: coordinator.port: must be between 1 and 65535, got 0",
            ),
            (
                "binaries:\n  'ff mpeg': /usr/bin/ffmpeg\n",
                "dffmpeg-worker.yaml:2:3: binaries.ff mpeg: expected a binary name of 1–64 characters \
                 [A-Za-z0-9._-], got 'ff mpeg'",
            ),
            (
                "coordinator:\n  path_base: dffmpeg\n",
                "dffmpeg-worker.yaml:2:3: coordinator.path_base: expected a path starting with '/', got \
                 'dffmpeg'",
            ),
            (
                "argument_policy:\n  deny_url_inputs: true\n",
                "dffmpeg-worker.yaml:2:3: argument_policy.deny_url_inputs: this dffmpeg-worker cannot check \
                 the argument policy yet; turn the switch off here (the coordinator still checks its own \
                 argument_policy)",
            ),
            (
                "argument_policy:\n  denied_options: [dump_attachment]\n",
                "dffmpeg-worker.yaml:2:20: argument_policy.denied_options[0]: expected an option name such as \
                 \"-dump_attachment\", got 'dump_attachment'",
            ),
            (
                "reconnect:\n  initial_delay: 10\n  max_delay: 1\n",
                "dffmpeg-worker.yaml: reconnect.max_delay (1s) must be at least reconnect.initial_delay (10s)",
            ),
            (
                "client_id: 'bad id'\n",
                "dffmpeg-worker.yaml:1:1: client_id: expected 1–64 characters [A-Za-z0-9._@-] starting with a \
                 letter or digit, got 'bad id'",
            ),
        ];
        let mut wrong = Vec::new();
        for (text, expected) in cases {
            let got = line(text);
            if &got != expected {
                wrong.push(format!(
                    "{text:?}\n  got:      {got}\n  expected: {expected}"
                ));
            }
        }
        assert!(wrong.is_empty(), "{}", wrong.join("\n"));
    }

    #[test]
    fn identity_errors() {
        assert_eq!(
            line("hmac_key: x\n"),
            "dffmpeg-worker.yaml: client_id: required (or set DFFMPEG_WORKER_ID)"
        );
        assert_eq!(
            line("client_id: worker01\n"),
            "no HMAC key: set hmac_key or hmac_key_file in dffmpeg-worker.yaml, or DFFMPEG_HMAC_KEY"
        );
        let malformed = line("client_id: worker01\nhmac_key: c2VjcmV0\n");
        assert_eq!(
            malformed,
            "dffmpeg-worker.yaml:2:1: hmac_key: expected standard base64 of 32 bytes (44 characters)"
        );
        assert!(!malformed.contains("c2VjcmV0"), "the key is never echoed");
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("w.key");
        let text = format!("client_id: w1\nhmac_key_file: {}\n", missing.display());
        assert_eq!(
            line(&text),
            format!(
                "hmac_key_file {}: No such file or directory (os error 2)",
                missing.display()
            )
        );
        let env = env_of(&[(ENV_HMAC_KEY, "nope")]);
        assert_eq!(
            parse_with("client_id: w1\n", &env).unwrap_err().to_string(),
            "DFFMPEG_HMAC_KEY: expected standard base64 of 32 bytes (44 characters)"
        );
        let err = Config::load_with(
            None,
            &no_env,
            &conf::Places {
                cwd: dir.path().to_path_buf(),
                home: None,
                system: dir.path().join("etc"),
            },
        )
        .unwrap_err();
        assert_eq!(
            err.to_string(),
            "no configuration file found (looked in ./dffmpeg-worker.yaml, ~/.config/dffmpeg/worker.yaml, \
             /etc/dffmpeg/worker.yaml) and DFFMPEG_WORKER_ID is not set"
        );
    }

    #[test]
    fn key_precedence_and_trim() {
        let dir = tempfile::tempdir().unwrap();
        let key_file = dir.path().join("w.key");
        std::fs::write(&key_file, format!("\n  {OTHER_KEY}\n\n")).unwrap();
        let config_file = dir.path().join("worker.yaml");
        let text = format!("client_id: w1\nhmac_key: {KEY}\nhmac_key_file: w.key\n");
        let loaded = Config::from_yaml(&config_file, &text, &no_env).unwrap();
        assert_eq!(loaded.config.hmac_key_file.as_deref(), Some(&*key_file));
        assert_eq!(loaded.identity.key, HmacKey::parse(OTHER_KEY).unwrap());
        assert_eq!(
            loaded.warnings,
            ["more than one HMAC key is set (hmac_key_file, hmac_key); using hmac_key_file"]
        );
        let env = env_of(&[(ENV_HMAC_KEY, KEY)]);
        let loaded = Config::from_yaml(&config_file, &text, &env).unwrap();
        assert_eq!(loaded.identity.key, HmacKey::parse(KEY).unwrap());
        assert_eq!(
            loaded.warnings,
            [
                "more than one HMAC key is set (DFFMPEG_HMAC_KEY, hmac_key_file, hmac_key); using \
                 DFFMPEG_HMAC_KEY"
            ]
        );
    }

    #[test]
    fn environment_alone_configures_the_worker() {
        let dir = tempfile::tempdir().unwrap();
        let places = conf::Places {
            cwd: dir.path().to_path_buf(),
            home: Some(dir.path().join("home")),
            system: dir.path().join("etc"),
        };
        let env = env_of(&[
            (ENV_WORKER_ID, "worker02"),
            (ENV_HMAC_KEY, KEY),
            (ENV_COORDINATOR_URL, "https://proxy.lan/dffmpeg/"),
        ]);
        let loaded = Config::load_with(None, &env, &places).unwrap();
        assert_eq!(loaded.source, None);
        assert_eq!(loaded.identity.client_id, "worker02");
        assert_eq!(loaded.config.coordinator.port, 443);
        assert_eq!(
            loaded.config.coordinator.base_url(),
            "https://proxy.lan:443/dffmpeg"
        );

        // The search order: the environment variable names the file, a file in the working directory is found.
        std::fs::write(dir.path().join(LOCAL_FILE_NAME), "max_concurrent_jobs: 7\n").unwrap();
        let loaded = Config::load_with(None, &env, &places).unwrap();
        assert_eq!(loaded.config.max_concurrent_jobs, 7);
        assert_eq!(
            loaded.identity.client_id, "worker02",
            "the environment wins"
        );
        let named = dir.path().join("named.yaml");
        std::fs::write(&named, "max_concurrent_jobs: 9\n").unwrap();
        let env_named = env_of(&[
            (ENV_CONFIG, named.to_str().unwrap()),
            (ENV_WORKER_ID, "worker02"),
            (ENV_HMAC_KEY, KEY),
        ]);
        let loaded = Config::load_with(None, &env_named, &places).unwrap();
        assert_eq!(loaded.config.max_concurrent_jobs, 9);
        let missing = dir.path().join("missing.yaml");
        assert_eq!(
            Config::load_with(Some(&missing), &env, &places)
                .unwrap_err()
                .to_string(),
            format!(
                "{}: No such file or directory (os error 2)",
                missing.display()
            )
        );
    }

    #[test]
    fn coordinator_urls() {
        let ok = |text: &str| Coordinator::from_url(text).unwrap();
        assert_eq!(ok("http://c.lan").port, 80);
        assert_eq!(ok("http://c.lan:8000").port, 8000);
        assert_eq!(ok("http://127.0.0.1:9/").path_base, "");
        assert_eq!(ok("http://[::1]:9/a/b").host, "::1");
        assert_eq!(ok("http://[::1]:9/a/b").path_base, "/a/b");
        assert_eq!(ok("https://[fe80::1]").port, 443);
        for bad in [
            "x",
            "c.lan:8000",
            "ftp://c.lan",
            "http://",
            "http://:80",
            "http://c.lan:0",
            "http://c.lan:70000",
            "http://c.lan:+80",
            "http://c.lan:x",
            "http://c.lan/?a=b",
            "http://user@c.lan",
            "http://[::1",
            "http://c lan",
        ] {
            assert_eq!(
                Coordinator::from_url(bad).unwrap_err().to_string(),
                format!(
                    "DFFMPEG_COORDINATOR_URL: expected scheme://host[:port][/path_base], got '{bad}'"
                ),
                "{bad}"
            );
        }
    }

    #[test]
    fn upstream_keys_warn() {
        let text = with_identity(
            "registration_interval: 5\njitter: 1\nlog_batch_size: 10\nlog_batch_delay: 1\n\
             transports:\n  http_polling: {}\n",
        );
        let loaded = parse(&text).unwrap();
        assert_eq!(
            loaded.warnings,
            [
                format!("registration_interval: {NO_EFFECT}"),
                format!("jitter: {NO_EFFECT}"),
                format!("log_batch_size: {NO_EFFECT_BATCHING}"),
                format!("log_batch_delay: {NO_EFFECT_BATCHING}"),
                format!("transports: {NO_EFFECT}"),
            ]
        );
    }

    #[test]
    fn relative_paths_follow_the_file() {
        let text = with_identity(
            "binaries:\n  ffmpeg: bin/ffmpeg\npaths:\n  Media: ./media\ndefault_working_directory: work\n",
        );
        let loaded =
            Config::from_yaml(Path::new("/etc/dffmpeg/worker.yaml"), &text, &no_env).unwrap();
        assert_eq!(
            loaded.config.binaries["ffmpeg"],
            PathBuf::from("/etc/dffmpeg/bin/ffmpeg")
        );
        assert_eq!(
            loaded.config.paths["Media"],
            PathBuf::from("/etc/dffmpeg/media")
        );
        assert_eq!(
            loaded.config.default_working_directory,
            Some(PathBuf::from("/etc/dffmpeg/work"))
        );
    }
}

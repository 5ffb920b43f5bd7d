//! What the worker can offer right now (cli.md §3.1 rows "binaries", "path roots", "re-checks"): which configured
//! binaries are usable executables (with the first line of `<binary> -version`), and which path variables have a
//! healthy root (canonicalised, a readable directory, not under or over an unmounted managed mount).
//!
//! A [`HealthChecker`] is built once from the configuration; [`HealthChecker::check`] returns a fresh [`Health`]
//! and is run at start, every `mount_check_interval` and on SIGHUP. Not here: logging the changes and reporting
//! them in heartbeats (the session does that), and mount recovery (`systemctl start`), which is not built yet.

use std::collections::{BTreeMap, BTreeSet};
use std::ffi::OsString;
use std::io;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use nix::unistd::{AccessFlags, access};

use crate::config::{Config, ManagedMount};
use crate::paths::PathRoots;

/// How long `<binary> -version` may take.
pub const VERSION_PROBE_TIMEOUT: Duration = Duration::from_secs(10);
/// `hello.binary_versions` values are at most this long (worker-protocol.md §4.1).
const MAX_VERSION_BYTES: usize = 200;

/// The state of one configured binary.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BinaryHealth {
    /// A regular file executable by the worker's user.
    Ready {
        /// The executable (argv\[0\] of jobs).
        path: PathBuf,
        /// The first line of `-version`, when the probe worked.
        version: Option<String>,
    },
    /// Missing, not a regular file, or not executable.
    Unavailable {
        /// The configured path, or `None` when the name was not found on `PATH`.
        path: Option<PathBuf>,
        /// Why, e.g. `No such file or directory (os error 2)`.
        error: String,
    },
}

/// The state of one path variable's root.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RootHealth {
    /// A readable directory, not affected by an unmounted managed mount.
    Healthy {
        /// The root as configured.
        configured: PathBuf,
        /// The canonical root (symbolic links resolved, trailing `/` dropped).
        canonical: PathBuf,
    },
    /// Not offered.
    Unhealthy {
        /// The root as configured.
        configured: PathBuf,
        /// Why, e.g. `/mnt/media is not mounted`.
        reason: String,
    },
}

/// One health reading.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Health {
    /// Every configured binary by name.
    pub binaries: BTreeMap<String, BinaryHealth>,
    /// Every configured path variable by name.
    pub paths: BTreeMap<String, RootHealth>,
}

impl Health {
    /// Names of the usable binaries, sorted (`hello.binaries`).
    pub fn usable_binaries(&self) -> Vec<String> {
        self.binaries
            .iter()
            .filter(|(_, health)| matches!(health, BinaryHealth::Ready { .. }))
            .map(|(name, _)| name.clone())
            .collect()
    }

    /// `hello.binary_versions`: the probed version of each usable binary; `None` when no probe worked.
    pub fn binary_versions(&self) -> Option<BTreeMap<String, String>> {
        let versions: BTreeMap<String, String> = self
            .binaries
            .iter()
            .filter_map(|(name, health)| match health {
                BinaryHealth::Ready {
                    version: Some(version),
                    ..
                } => Some((name.clone(), version.clone())),
                _ => None,
            })
            .collect();
        (!versions.is_empty()).then_some(versions)
    }

    /// The executable of a usable binary.
    pub fn executable(&self, name: &str) -> Option<&Path> {
        match self.binaries.get(name) {
            Some(BinaryHealth::Ready { path, .. }) => Some(path),
            _ => None,
        }
    }

    /// Names of the healthy path variables, sorted (`hello.paths`).
    pub fn healthy_paths(&self) -> Vec<String> {
        self.paths
            .iter()
            .filter(|(_, health)| matches!(health, RootHealth::Healthy { .. }))
            .map(|(name, _)| name.clone())
            .collect()
    }

    /// The healthy roots, for translating job paths. A root that vanished since the check is left out.
    pub fn path_roots(&self, follow_symlinks_outside_roots: bool) -> PathRoots {
        let mut roots = PathRoots::new(
            std::iter::empty::<(String, PathBuf)>(),
            follow_symlinks_outside_roots,
        )
        .unwrap_or_default();
        for (name, health) in &self.paths {
            if let RootHealth::Healthy { canonical, .. } = health
                && let Err(error) = roots.insert(name.clone(), canonical)
            {
                tracing::warn!(name = %name, %error, "path variable root vanished");
            }
        }
        roots
    }
}

/// Runs the checks of cli.md §3.1 for one configuration.
#[derive(Debug, Clone)]
pub struct HealthChecker {
    /// Binary names with their configured path (`None`: look up on `PATH`).
    binaries: Vec<(String, Option<PathBuf>)>,
    paths: BTreeMap<String, PathBuf>,
    mounts: Vec<ManagedMount>,
    /// `PATH` as the worker started with it.
    search_path: Option<OsString>,
    /// Where the mount table is read (`/proc/self/mountinfo`).
    mountinfo: PathBuf,
}

impl HealthChecker {
    /// A checker for `config`, searching the process's `PATH` for unconfigured binaries.
    pub fn new(config: &Config) -> HealthChecker {
        HealthChecker {
            binaries: config.binary_entries(),
            paths: config.paths.clone(),
            mounts: config.mount_management.mounts.clone(),
            search_path: std::env::var_os("PATH"),
            mountinfo: PathBuf::from("/proc/self/mountinfo"),
        }
    }

    /// Checks everything. Versions are probed for binaries that became usable or changed path since `previous`;
    /// others keep their known version.
    pub async fn check(&self, previous: Option<&Health>) -> Health {
        let checker = self.clone();
        // File-system calls can block (a hung network mount is exactly what this looks for): off the runtime.
        let mut health = match tokio::task::spawn_blocking(move || checker.check_files()).await {
            Ok(health) => health,
            Err(error) => {
                tracing::warn!(%error, "the health check failed");
                return previous.cloned().unwrap_or_default();
            }
        };
        for (name, binary) in &mut health.binaries {
            let BinaryHealth::Ready { path, version } = binary else {
                continue;
            };
            let known = previous.and_then(|previous| match previous.binaries.get(name) {
                Some(BinaryHealth::Ready {
                    path: old_path,
                    version,
                }) if old_path == path => Some(version.clone()),
                _ => None,
            });
            *version = match known {
                Some(known) => known,
                None => match probe_version(path).await {
                    Ok(line) => Some(line),
                    Err(error) => {
                        tracing::warn!(name = %name, path = %path.display(), %error, "binary version probe failed");
                        None
                    }
                },
            };
        }
        health
    }

    /// The synchronous part: binaries and roots, no version probes.
    fn check_files(&self) -> Health {
        let binaries = self
            .binaries
            .iter()
            .map(|(name, configured)| {
                let health = match configured {
                    Some(path) => match check_executable(path) {
                        Ok(()) => BinaryHealth::Ready {
                            path: path.clone(),
                            version: None,
                        },
                        Err(error) => BinaryHealth::Unavailable {
                            path: Some(path.clone()),
                            error,
                        },
                    },
                    None => match self.find_on_path(name) {
                        Some(path) => BinaryHealth::Ready {
                            path,
                            version: None,
                        },
                        None => BinaryHealth::Unavailable {
                            path: None,
                            error: "not found on PATH".to_owned(),
                        },
                    },
                };
                (name.clone(), health)
            })
            .collect();
        let unmounted = self.unmounted_mounts();
        let paths = self
            .paths
            .iter()
            .map(|(name, root)| (name.clone(), check_root(root, &unmounted)))
            .collect();
        Health { binaries, paths }
    }

    /// The first `PATH` entry holding an executable regular file called `name`.
    fn find_on_path(&self, name: &str) -> Option<PathBuf> {
        let search_path = self.search_path.as_ref()?;
        std::env::split_paths(search_path)
            .filter(|directory| !directory.as_os_str().is_empty())
            .map(|directory| directory.join(name))
            .find(|candidate| check_executable(candidate).is_ok())
    }

    /// Managed mounts that are not mount points now. Without a readable mount table nothing counts as unmounted.
    fn unmounted_mounts(&self) -> Vec<PathBuf> {
        if self.mounts.is_empty() {
            return Vec::new();
        }
        let table = match std::fs::read_to_string(&self.mountinfo) {
            Ok(table) => table,
            Err(error) => {
                tracing::warn!(file = %self.mountinfo.display(), %error, "reading the mount table failed");
                return Vec::new();
            }
        };
        let mounted = mount_points(&table);
        self.mounts
            .iter()
            .map(|mount| &mount.path)
            .filter(|path| {
                let canonical = std::fs::canonicalize(path).unwrap_or_else(|_| (*path).clone());
                !mounted.contains(&canonical) && !mounted.contains(*path)
            })
            .cloned()
            .collect()
    }
}

/// Usable = a regular file (after symbolic links) executable by the worker's user. The error is the OS error text.
pub fn check_executable(path: &Path) -> Result<(), String> {
    let metadata = std::fs::metadata(path).map_err(|error| error.to_string())?;
    if !metadata.is_file() {
        return Err("not a regular file".to_owned());
    }
    access(path, AccessFlags::X_OK).map_err(|errno| io::Error::from(errno).to_string())
}

/// A root is healthy when it canonicalises to a readable directory that no unmounted managed mount affects.
fn check_root(configured: &Path, unmounted: &[PathBuf]) -> RootHealth {
    let unhealthy = |reason: String| RootHealth::Unhealthy {
        configured: configured.to_path_buf(),
        reason,
    };
    if let Some(mount) = unmounted
        .iter()
        .find(|mount| configured.starts_with(mount) || mount.starts_with(configured))
    {
        return unhealthy(format!("{} is not mounted", mount.display()));
    }
    let canonical = match std::fs::canonicalize(configured) {
        Ok(canonical) => canonical,
        Err(error) => return unhealthy(error.to_string()),
    };
    if let Some(mount) = unmounted
        .iter()
        .find(|mount| canonical.starts_with(mount) || mount.starts_with(&canonical))
    {
        return unhealthy(format!("{} is not mounted", mount.display()));
    }
    if !canonical.is_dir() {
        return unhealthy("not a directory".to_owned());
    }
    if let Err(error) = std::fs::read_dir(&canonical) {
        return unhealthy(error.to_string());
    }
    RootHealth::Healthy {
        configured: configured.to_path_buf(),
        canonical,
    }
}

/// The mount points of a `/proc/self/mountinfo` text (field 5, with its octal escapes undone).
fn mount_points(table: &str) -> BTreeSet<PathBuf> {
    table
        .lines()
        .filter_map(|line| line.split(' ').nth(4))
        .map(|field| PathBuf::from(unescape_octal(field)))
        .collect()
}

/// `\040` → space, as the kernel escapes mount paths.
fn unescape_octal(field: &str) -> String {
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut index = 0;
    while index < bytes.len() {
        if bytes[index] == b'\\'
            && index + 4 <= bytes.len()
            && bytes[index + 1..index + 4]
                .iter()
                .all(|b| (b'0'..=b'7').contains(b))
        {
            let value = bytes[index + 1..index + 4]
                .iter()
                .fold(0u32, |value, digit| value * 8 + u32::from(digit - b'0'));
            let value = u8::try_from(value).unwrap_or(b'?');
            out.push(value);
            index += 4;
        } else {
            out.push(bytes[index]);
            index += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The first line of `<path> -version` (stdin `/dev/null`, 10 s at most), cut to 200 bytes.
pub async fn probe_version(path: &Path) -> Result<String, String> {
    let mut command = tokio::process::Command::new(path);
    command
        .arg("-version")
        .env_clear()
        .envs(std::env::vars_os().filter(|(name, _)| crate::process::keeps_env_var(name)))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .kill_on_drop(true);
    let output = match tokio::time::timeout(VERSION_PROBE_TIMEOUT, command.output()).await {
        Ok(Ok(output)) => output,
        Ok(Err(error)) => return Err(error.to_string()),
        Err(_) => {
            return Err(format!(
                "no answer within {} s",
                VERSION_PROBE_TIMEOUT.as_secs()
            ));
        }
    };
    if !output.status.success() {
        return Err(format!("-version {}", output.status));
    }
    let text = String::from_utf8_lossy(&output.stdout);
    let line = text.lines().next().unwrap_or("").trim();
    if line.is_empty() {
        return Err("-version printed nothing".to_owned());
    }
    Ok(truncate(line, MAX_VERSION_BYTES))
}

fn truncate(text: &str, max_bytes: usize) -> String {
    if text.len() <= max_bytes {
        return text.to_owned();
    }
    let mut end = max_bytes;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    text[..end].to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn executables() {
        let dir = tempfile::tempdir().unwrap();
        let script = dir.path().join("tool");
        std::fs::write(&script, "#!/bin/sh\n").unwrap();
        std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
        assert_eq!(check_executable(&script), Ok(()));
        assert_eq!(
            check_executable(&dir.path().join("missing")),
            Err("No such file or directory (os error 2)".to_owned())
        );
        assert_eq!(
            check_executable(dir.path()),
            Err("not a regular file".to_owned())
        );
        let plain = dir.path().join("plain");
        std::fs::write(&plain, "x").unwrap();
        std::fs::set_permissions(&plain, std::fs::Permissions::from_mode(0o644)).unwrap();
        assert_eq!(
            check_executable(&plain),
            Err("Permission denied (os error 13)".to_owned())
        );
    }

    #[test]
    fn mount_table_and_roots() {
        let table = "36 35 98:0 / /mnt/media rw,noatime master:1 - ext3 /dev/root rw\n\
                     37 35 98:0 / /mnt/with\\040space rw - ext3 /dev/x rw\n";
        let points = mount_points(table);
        assert!(points.contains(Path::new("/mnt/media")));
        assert!(points.contains(Path::new("/mnt/with space")));

        let dir = tempfile::tempdir().unwrap();
        let root = std::fs::canonicalize(dir.path()).unwrap();
        let media = root.join("media");
        std::fs::create_dir(&media).unwrap();
        assert_eq!(
            check_root(&media, &[]),
            RootHealth::Healthy {
                configured: media.clone(),
                canonical: media.clone()
            }
        );
        assert_eq!(
            check_root(&media, std::slice::from_ref(&root)),
            RootHealth::Unhealthy {
                configured: media.clone(),
                reason: format!("{} is not mounted", root.display())
            }
        );
        let missing = root.join("missing");
        assert_eq!(
            check_root(&missing, &[]),
            RootHealth::Unhealthy {
                configured: missing.clone(),
                reason: "No such file or directory (os error 2)".to_owned()
            }
        );
        let file = root.join("file");
        std::fs::write(&file, "x").unwrap();
        assert!(matches!(
            check_root(&file, &[]),
            RootHealth::Unhealthy { reason, .. } if reason == "not a directory"
        ));
    }

    #[test]
    fn versions_are_cut_at_a_char_boundary() {
        assert_eq!(truncate("abc", 2), "ab");
        assert_eq!(truncate("aé", 2), "a");
        assert_eq!(truncate("abc", 200), "abc");
    }
}

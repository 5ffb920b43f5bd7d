//! Finding and reading a configuration file: the search order of config.md §2.1 (and its worker and client
//! twins), the size and encoding checks of limits-and-bad-input.md §6, and resolving relative paths written in a
//! file against that file's directory. Parsing is `yaml`'s business.

use std::ffi::{OsStr, OsString};
use std::fs::File;
use std::io::Read;
use std::path::{Component, Path, PathBuf};

use crate::error::ConfigError;

/// The largest configuration file read (1 MiB).
pub const MAX_FILE_BYTES: u64 = 1 << 20;

/// Reads a configuration file as UTF-8 text. Errors name the file as given:
/// `<file>: <OS error>`, `<file>: larger than 1 MiB; is this the right file?`,
/// `<file>: not valid UTF-8 at byte <n>`.
pub fn read_file(path: &Path) -> Result<String, ConfigError> {
    let shown = path.display().to_string();
    let os_error = |err: std::io::Error| ConfigError::in_file(&shown, err.to_string());
    let too_large = || ConfigError::in_file(&shown, "larger than 1 MiB; is this the right file?");
    let file = File::open(path).map_err(os_error)?;
    if file.metadata().map_err(os_error)?.len() > MAX_FILE_BYTES {
        return Err(too_large());
    }
    // The length can change between the check and the read (or lie, for special files): read one byte past the
    // limit at most.
    let mut bytes = Vec::new();
    file.take(MAX_FILE_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(os_error)?;
    if bytes.len() as u64 > MAX_FILE_BYTES {
        return Err(too_large());
    }
    String::from_utf8(bytes).map_err(|err| {
        ConfigError::in_file(
            &shown,
            format!("not valid UTF-8 at byte {}", err.utf8_error().valid_up_to()),
        )
    })
}

/// The directories a program searches, injectable so that tests never depend on the machine.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Places {
    /// The working directory; `.` in production, so that the file found is shown as `./dffmpeg-….yaml`.
    pub cwd: PathBuf,
    /// The home directory (`$HOME`), if known; `~/.config/dffmpeg/` is searched under it.
    pub home: Option<PathBuf>,
    /// The system directory, `/etc/dffmpeg` in production.
    pub system: PathBuf,
}

impl Places {
    /// The real places: `.`, `$HOME` (unset or empty: none), `/etc/dffmpeg`.
    pub fn from_process() -> Places {
        Places::from_env(|name| std::env::var_os(name))
    }

    /// `.`, `/etc/dffmpeg` and the home directory read through `env("HOME")`.
    pub fn from_env(env: impl Fn(&str) -> Option<OsString>) -> Places {
        Places {
            cwd: PathBuf::from("."),
            home: env("HOME")
                .filter(|home| !home.is_empty())
                .map(PathBuf::from),
            system: PathBuf::from("/etc/dffmpeg"),
        }
    }
}

/// Steps 3–5 of the search order: `<cwd>/<local_name>`, `<home>/.config/dffmpeg/<user_name>`,
/// `<system>/<user_name>`; for the coordinator `dffmpeg-coordinator.yaml` and `coordinator.yaml`.
pub fn candidates(places: &Places, local_name: &str, user_name: &str) -> Vec<PathBuf> {
    let mut paths = vec![places.cwd.join(local_name)];
    if let Some(home) = &places.home {
        paths.push(home.join(".config").join("dffmpeg").join(user_name));
    }
    paths.push(places.system.join(user_name));
    paths
}

/// The file to read, by the search order of config.md §2.1: the explicit path (`--config`), else the environment
/// variable's value (empty counts as unset), else the first candidate that exists; `None` when there is none.
/// An explicit or environment path is returned whether or not it exists: reading it then reports the OS error.
pub fn locate(
    explicit: Option<&Path>,
    env_value: Option<&OsStr>,
    candidates: &[PathBuf],
) -> Option<PathBuf> {
    if let Some(path) = explicit {
        return Some(path.to_path_buf());
    }
    if let Some(value) = env_value.filter(|value| !value.is_empty()) {
        return Some(PathBuf::from(value));
    }
    // An unreadable directory on the way counts as absence, so that a later candidate still applies.
    candidates
        .iter()
        .find(|path| path.try_exists().unwrap_or(false))
        .cloned()
}

/// A path written in `config_file`, taken relative to that file's directory unless absolute (config.md §1).
/// A file in the working directory (`./x.yaml`, `x.yaml`) leaves the path as written.
pub fn resolve_path(config_file: &Path, written: &Path) -> PathBuf {
    let dir = config_file.parent().unwrap_or(Path::new(""));
    let in_cwd = dir.components().all(|c| matches!(c, Component::CurDir));
    if written.is_absolute() || in_cwd {
        return written.to_path_buf();
    }
    let mut tail = written.components().peekable();
    while tail.peek() == Some(&Component::CurDir) {
        tail.next();
    }
    dir.join(tail.collect::<PathBuf>())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_and_refuses_with_exact_lines() {
        let dir = tempfile::tempdir().unwrap();
        let good = dir.path().join("good.yaml");
        std::fs::write(&good, "port: 1\n").unwrap();
        assert_eq!(read_file(&good).unwrap(), "port: 1\n");

        let missing = dir.path().join("missing.yaml");
        assert_eq!(
            read_file(&missing).unwrap_err().to_string(),
            format!(
                "{}: No such file or directory (os error 2)",
                missing.display()
            )
        );

        let big = dir.path().join("big.yaml");
        std::fs::write(&big, vec![b'#'; (MAX_FILE_BYTES + 1) as usize]).unwrap();
        assert_eq!(
            read_file(&big).unwrap_err().to_string(),
            format!(
                "{}: larger than 1 MiB; is this the right file?",
                big.display()
            )
        );
        let exact = dir.path().join("exact.yaml");
        std::fs::write(&exact, vec![b'#'; MAX_FILE_BYTES as usize]).unwrap();
        assert!(read_file(&exact).is_ok());

        let latin1 = dir.path().join("latin1.yaml");
        std::fs::write(&latin1, b"host: caf\xe9\n").unwrap();
        assert_eq!(
            read_file(&latin1).unwrap_err().to_string(),
            format!("{}: not valid UTF-8 at byte 9", latin1.display())
        );

        let error = read_file(dir.path()).unwrap_err().to_string();
        assert_eq!(
            error,
            format!("{}: Is a directory (os error 21)", dir.path().display())
        );
    }

    #[test]
    fn search_order() {
        let dir = tempfile::tempdir().unwrap();
        let places = Places {
            cwd: dir.path().join("cwd"),
            home: Some(dir.path().join("home")),
            system: dir.path().join("etc"),
        };
        let list = candidates(&places, "dffmpeg-coordinator.yaml", "coordinator.yaml");
        assert_eq!(
            list,
            vec![
                dir.path().join("cwd/dffmpeg-coordinator.yaml"),
                dir.path().join("home/.config/dffmpeg/coordinator.yaml"),
                dir.path().join("etc/coordinator.yaml"),
            ]
        );
        assert_eq!(locate(None, None, &list), None);
        for path in list.iter().rev() {
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(path, "").unwrap();
            assert_eq!(locate(None, None, &list).as_ref(), Some(path));
        }
        assert_eq!(
            locate(None, Some(OsStr::new("")), &list).as_ref(),
            Some(&list[0])
        );
        assert_eq!(
            locate(None, Some(OsStr::new("/nope.yaml")), &list),
            Some(PathBuf::from("/nope.yaml"))
        );
        assert_eq!(
            locate(
                Some(Path::new("x.yaml")),
                Some(OsStr::new("/nope.yaml")),
                &list
            ),
            Some(PathBuf::from("x.yaml"))
        );
        let no_home = Places {
            home: None,
            ..places
        };
        assert_eq!(candidates(&no_home, "a", "b").len(), 2);
    }

    #[test]
    fn places_from_env() {
        let places = Places::from_env(|name| (name == "HOME").then(|| OsString::from("/home/u")));
        assert_eq!(places.home, Some(PathBuf::from("/home/u")));
        assert_eq!(places.cwd, PathBuf::from("."));
        assert_eq!(Places::from_env(|_| Some(OsString::new())).home, None);
        assert_eq!(
            candidates(&places, "dffmpeg-coordinator.yaml", "coordinator.yaml")[0],
            PathBuf::from("./dffmpeg-coordinator.yaml")
        );
    }

    #[test]
    fn relative_paths_follow_the_file() {
        let resolve = |file: &str, written: &str| resolve_path(Path::new(file), Path::new(written));
        assert_eq!(
            resolve("/etc/dffmpeg/c.yaml", "./data"),
            PathBuf::from("/etc/dffmpeg/data")
        );
        assert_eq!(
            resolve("/etc/dffmpeg/c.yaml", "data/x"),
            PathBuf::from("/etc/dffmpeg/data/x")
        );
        assert_eq!(
            resolve("/etc/dffmpeg/c.yaml", "../data"),
            PathBuf::from("/etc/dffmpeg/../data")
        );
        assert_eq!(
            resolve("/etc/dffmpeg/c.yaml", "/var/lib/d"),
            PathBuf::from("/var/lib/d")
        );
        assert_eq!(resolve("./c.yaml", "./data").as_os_str(), "./data");
        assert_eq!(resolve("c.yaml", "data").as_os_str(), "data");
        assert_eq!(resolve("conf/c.yaml", "./data").as_os_str(), "conf/data");
    }
}

//! The two keys `dffmpeg-admin` needs from the coordinator's configuration file: `admin_socket` and
//! `database.path` (config.md §2.3), found with the coordinator's search order (config.md §2.1). Every other key is
//! tolerated here and left to the coordinator to validate; the one-shot child reads the same file.

use std::ffi::OsString;
use std::path::{Path, PathBuf};

use serde::Deserialize;

/// The environment variable of search step 2.
pub(crate) const CONFIG_ENV: &str = "DFFMPEG_COORDINATOR_CONFIG";
/// `database.path` when the file has none.
const DEFAULT_DATABASE_PATH: &str = "./dffmpeg-data";
const SOCKET_FILE_NAME: &str = "admin.sock";

/// Where the admin finds the coordinator.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct AdminConfig {
    /// The file read, `None` when none was found (defaults apply).
    pub(crate) file: Option<PathBuf>,
    pub(crate) admin_socket: PathBuf,
    pub(crate) database_path: PathBuf,
}

/// The file's keys this program reads; others are ignored.
#[derive(Debug, Default, Deserialize)]
struct FileKeys {
    #[serde(default)]
    admin_socket: Option<PathBuf>,
    #[serde(default)]
    database: Option<DatabaseKeys>,
}

#[derive(Debug, Default, Deserialize)]
struct DatabaseKeys {
    #[serde(default)]
    path: Option<PathBuf>,
}

/// The inputs of the search order, taken from the process by [`SearchOrder::from_process`].
#[derive(Debug, Clone, Default)]
pub(crate) struct SearchOrder {
    /// `--config`.
    pub(crate) cli: Option<PathBuf>,
    /// `DFFMPEG_COORDINATOR_CONFIG`; empty counts as unset.
    pub(crate) env: Option<OsString>,
    /// `$HOME`, for `~/.config/dffmpeg/coordinator.yaml`.
    pub(crate) home: Option<PathBuf>,
    /// `/etc/dffmpeg/coordinator.yaml` (a parameter so tests can point it elsewhere).
    pub(crate) system_file: PathBuf,
}

impl SearchOrder {
    /// The search order of this process.
    pub(crate) fn from_process(cli: Option<PathBuf>) -> SearchOrder {
        SearchOrder {
            cli,
            env: std::env::var_os(CONFIG_ENV),
            home: std::env::var_os("HOME")
                .filter(|home| !home.is_empty())
                .map(PathBuf::from),
            system_file: PathBuf::from("/etc/dffmpeg/coordinator.yaml"),
        }
    }

    /// The file to read: an explicit one (`--config`, the environment) even if missing, so reading it reports the
    /// error; otherwise the first candidate that exists.
    pub(crate) fn find(&self) -> Option<PathBuf> {
        if let Some(cli) = &self.cli {
            return Some(cli.clone());
        }
        if let Some(env) = self.env.as_ref().filter(|value| !value.is_empty()) {
            return Some(PathBuf::from(env));
        }
        let mut candidates = vec![PathBuf::from("./dffmpeg-coordinator.yaml")];
        if let Some(home) = &self.home {
            candidates.push(home.join(".config/dffmpeg/coordinator.yaml"));
        }
        candidates.push(self.system_file.clone());
        candidates.into_iter().find(|candidate| candidate.exists())
    }
}

/// Finds and reads the configuration. The error is the message after `dffmpeg-admin: ` (exit 1).
pub(crate) fn load(search: &SearchOrder) -> Result<AdminConfig, String> {
    let Some(file) = search.find() else {
        return Ok(from_keys(None, FileKeys::default()));
    };
    let text = std::fs::read_to_string(&file)
        .map_err(|err| format!("loading configuration: {}: {err}", file.display()))?;
    let keys = parse(&text)
        .map_err(|message| format!("loading configuration: {}{message}", file.display()))?;
    Ok(from_keys(Some(file), keys))
}

/// Parses the file's text; the error starts with `:line:column: ` when the parser knows the place.
fn parse(text: &str) -> Result<FileKeys, String> {
    match serde_saphyr::from_str::<Option<FileKeys>>(text) {
        Ok(keys) => Ok(keys.unwrap_or_default()),
        Err(err) => {
            let place = err.location().map(|at| (at.line(), at.column()));
            let rendered = err.without_snippet().to_string();
            let mut message = rendered
                .lines()
                .map(str::trim)
                .find(|line| !line.is_empty())
                .unwrap_or("invalid YAML");
            let Some((line, column)) = place else {
                return Err(format!(": {message}"));
            };
            // The place goes in front, as config.md §1 writes it; the parser's own copy of it is dropped.
            let suffix = format!(" at line {line}, column {column}");
            if let Some(bare) = message.strip_suffix(&suffix) {
                message = bare;
            }
            Err(format!(":{line}:{column}: {message}"))
        }
    }
}

/// Applies the defaults. Paths written in the file are relative to the file's directory; defaults to the working
/// directory (config.md §1).
fn from_keys(file: Option<PathBuf>, keys: FileKeys) -> AdminConfig {
    let base = file
        .as_deref()
        .and_then(Path::parent)
        .unwrap_or(Path::new(""));
    let resolve = |path: PathBuf| {
        if path.is_absolute() {
            path
        } else {
            base.join(path)
        }
    };
    let database_path = match keys.database.and_then(|database| database.path) {
        Some(path) => resolve(path),
        None => PathBuf::from(DEFAULT_DATABASE_PATH),
    };
    let admin_socket = match keys.admin_socket {
        Some(path) => resolve(path),
        None => database_path.join(SOCKET_FILE_NAME),
    };
    AdminConfig {
        file,
        admin_socket,
        database_path,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nowhere() -> SearchOrder {
        SearchOrder {
            system_file: PathBuf::from("/nonexistent/dffmpeg/coordinator.yaml"),
            ..SearchOrder::default()
        }
    }

    #[test]
    fn defaults_without_a_file() {
        let config = from_keys(None, FileKeys::default());
        assert_eq!(config.database_path, PathBuf::from("./dffmpeg-data"));
        assert_eq!(
            config.admin_socket.display().to_string(),
            "./dffmpeg-data/admin.sock"
        );
    }

    #[test]
    fn keys_are_read_and_others_tolerated() {
        let keys = parse("port: 9000\ndatabase:\n  path: /var/lib/dffmpeg\n  cache: 1\njanitor:\n  interval: 5\n").unwrap();
        let config = from_keys(Some(PathBuf::from("/etc/dffmpeg/coordinator.yaml")), keys);
        assert_eq!(config.database_path, PathBuf::from("/var/lib/dffmpeg"));
        assert_eq!(
            config.admin_socket,
            PathBuf::from("/var/lib/dffmpeg/admin.sock")
        );

        let keys = parse("admin_socket: run/admin.sock\n").unwrap();
        let config = from_keys(Some(PathBuf::from("/srv/conf/coordinator.yaml")), keys);
        assert_eq!(
            config.admin_socket,
            PathBuf::from("/srv/conf/run/admin.sock")
        );
        assert_eq!(config.database_path, PathBuf::from("./dffmpeg-data"));

        let keys = parse("database:\n  path: data\n").unwrap();
        let config = from_keys(Some(PathBuf::from("/srv/conf/coordinator.yaml")), keys);
        assert_eq!(
            config.admin_socket,
            PathBuf::from("/srv/conf/data/admin.sock")
        );
    }

    #[test]
    fn empty_and_comment_only_files_are_defaults() {
        for text in ["", "\n", "# nothing here\n"] {
            let keys = parse(text).unwrap();
            assert!(keys.admin_socket.is_none() && keys.database.is_none());
        }
    }

    #[test]
    fn bad_yaml_is_one_line_with_a_place() {
        let err = parse("database:\n  path: [unclosed\n").unwrap_err();
        assert!(err.starts_with(":2:9: "), "{err}");
        assert!(!err.contains("at line"), "{err}");
        assert!(!err.contains('\n'), "{err}");
        let err = parse("database: 3\n").unwrap_err();
        assert!(!err.contains('\n'), "{err}");
    }

    #[test]
    fn search_order() {
        let dir = tempfile::tempdir().unwrap();
        let home_file = dir.path().join(".config/dffmpeg/coordinator.yaml");
        let explicit = dir.path().join("explicit.yaml");
        let mut search = nowhere();
        assert_eq!(search.find(), None);
        search.home = Some(dir.path().to_owned());
        assert_eq!(search.find(), None);
        std::fs::create_dir_all(home_file.parent().unwrap()).unwrap();
        std::fs::write(&home_file, "").unwrap();
        assert_eq!(search.find(), Some(home_file.clone()));
        search.env = Some(OsString::new());
        assert_eq!(
            search.find(),
            Some(home_file.clone()),
            "an empty variable counts as unset"
        );
        search.env = Some(explicit.clone().into_os_string());
        assert_eq!(
            search.find(),
            Some(explicit.clone()),
            "a missing file named by the variable is still chosen"
        );
        search.cli = Some(PathBuf::from("/cli.yaml"));
        assert_eq!(search.find(), Some(PathBuf::from("/cli.yaml")));
        let err = load(&search).unwrap_err();
        assert!(
            err.starts_with("loading configuration: /cli.yaml: "),
            "{err}"
        );
    }
}

//! Path-variable translation (cli.md §3.2, rows "variable paths", "other arguments", "escapes", "working
//! directory"): the worker's canonical roots, the rewriting of `$Name…` and `file:$Name…` arguments, the escape check
//! made just before the spawn, and the choice of the job's working directory.
//!
//! Not here: whether a root is healthy (mount checks and re-checks belong to the session), the argument policy of
//! limits-and-bad-input.md §4 (it runs on the unresolved arguments before this module), and spawning.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::fmt;
use std::fs;
use std::io;
use std::path::{Component, Path, PathBuf};

use protocol::ws::AssignJob;

/// Most symbolic links followed by hand while locating a dangling link's target (the kernel's own limit is 40).
const MAX_LINK_HOPS: usize = 40;

/// The worker's path variables: each name mapped to its canonical root directory.
#[derive(Debug, Clone, Default)]
pub struct PathRoots {
    roots: BTreeMap<String, PathBuf>,
    /// `follow_symlinks_outside_roots`: when true, only the `..` rule applies.
    follow_symlinks_outside_roots: bool,
}

/// Why a configured root could not be used.
#[derive(Debug, thiserror::Error)]
pub enum RootError {
    #[error("canonicalising the root of path variable {name} ({}): {source}", root.display())]
    Canonicalise {
        name: String,
        root: PathBuf,
        source: io::Error,
    },
    #[error("the root of path variable {name} ({}) is not a directory", root.display())]
    NotADirectory { name: String, root: PathBuf },
}

/// Why an argument or the working directory was refused as an escape.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EscapeReason {
    /// The text after `$Name` has a `..` segment.
    ParentSegment,
    /// The path's real location (symbolic links resolved) is not under the root.
    OutsideRoot,
    /// The path's real location could not be determined (a link loop, an unreadable link).
    Unresolvable,
}

impl fmt::Display for EscapeReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            EscapeReason::ParentSegment => "parent directory '..'",
            EscapeReason::OutsideRoot => "a symbolic link leads outside the root",
            EscapeReason::Unresolvable => "its real location cannot be resolved",
        })
    }
}

/// Why a job's paths could not be resolved. [`ResolveError::code`] gives the protocol code.
#[derive(Debug, thiserror::Error)]
pub enum ResolveError {
    /// cli.md §3.2 check 4: `job_rejected {path_variable_unavailable}`.
    #[error("path variables not available on this worker: {}", names.join(", "))]
    VariableUnavailable { names: Vec<String> },
    /// cli.md §3.2 check 6: `job_finished {failed, error: path_escape}`.
    #[error("argument {index} escapes the root of ${variable} ({reason}): {argument}")]
    ArgumentEscape {
        index: usize,
        argument: String,
        variable: String,
        reason: EscapeReason,
    },
    /// cli.md §3.2 check 6 for `assign_job.working_directory`.
    #[error("working directory escapes the root of ${variable} ({reason}): {working_directory}")]
    WorkingDirectoryEscape {
        working_directory: String,
        variable: String,
        reason: EscapeReason,
    },
    /// cli.md §3.2 check 7: `job_rejected {working_directory_unavailable}`.
    #[error("working directory {} is not usable: {source}", path.display())]
    WorkingDirectoryUnavailable { path: PathBuf, source: io::Error },
}

impl ResolveError {
    /// The `job_rejected` code or `job_finished.error.code` this refusal is reported with.
    pub fn code(&self) -> &'static str {
        match self {
            ResolveError::VariableUnavailable { .. } => {
                protocol::ws::reject_code::PATH_VARIABLE_UNAVAILABLE
            }
            ResolveError::ArgumentEscape { .. } | ResolveError::WorkingDirectoryEscape { .. } => {
                "path_escape"
            }
            ResolveError::WorkingDirectoryUnavailable { .. } => {
                protocol::ws::reject_code::WORKING_DIRECTORY_UNAVAILABLE
            }
        }
    }

    /// True when the job is refused with `job_rejected` (it may run elsewhere); false when it fails with
    /// `job_finished {failed}` (it would escape anywhere).
    pub fn is_rejection(&self) -> bool {
        !matches!(
            self,
            ResolveError::ArgumentEscape { .. } | ResolveError::WorkingDirectoryEscape { .. }
        )
    }
}

/// A job's arguments and working directory after translation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResolvedJob {
    /// The arguments to pass after argv\[0\], in order, variables replaced by their roots.
    pub arguments: Vec<OsString>,
    /// Where the process runs; `None` means the worker's own working directory.
    pub working_directory: Option<PathBuf>,
}

/// An argument split into its `$Name` parts: `[file:]$Name[/rest]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct VariableRef<'a> {
    file_prefix: bool,
    name: &'a str,
    /// Empty or starting with `/`.
    rest: &'a str,
}

fn parse_variable_ref(argument: &str) -> Option<VariableRef<'_>> {
    let (file_prefix, body) = match argument.strip_prefix("file:") {
        Some(body) => (true, body),
        None => (false, argument),
    };
    let body = body.strip_prefix('$')?;
    let (name, rest) = match body.find('/') {
        Some(slash) => (&body[..slash], &body[slash..]),
        None => (body, ""),
    };
    Some(VariableRef {
        file_prefix,
        name,
        rest,
    })
}

impl PathRoots {
    /// Canonicalises each root (symbolic links resolved, trailing `/` dropped); fails on the first root that does
    /// not exist or is not a directory. Build it again after a health re-check with only the healthy roots.
    pub fn new<I, N, P>(
        roots: I,
        follow_symlinks_outside_roots: bool,
    ) -> Result<PathRoots, RootError>
    where
        I: IntoIterator<Item = (N, P)>,
        N: Into<String>,
        P: AsRef<Path>,
    {
        let mut path_roots = PathRoots {
            roots: BTreeMap::new(),
            follow_symlinks_outside_roots,
        };
        for (name, root) in roots {
            path_roots.insert(name, root)?;
        }
        Ok(path_roots)
    }

    /// Adds or replaces one variable, canonicalising its root.
    pub fn insert(
        &mut self,
        name: impl Into<String>,
        root: impl AsRef<Path>,
    ) -> Result<(), RootError> {
        let name = name.into();
        let root = root.as_ref();
        let canonical = fs::canonicalize(root).map_err(|source| RootError::Canonicalise {
            name: name.clone(),
            root: root.to_path_buf(),
            source,
        })?;
        if !canonical.is_dir() {
            return Err(RootError::NotADirectory {
                name,
                root: root.to_path_buf(),
            });
        }
        self.roots.insert(name, canonical);
        Ok(())
    }

    /// The canonical root of `name`, if configured.
    pub fn root(&self, name: &str) -> Option<&Path> {
        self.roots.get(name).map(PathBuf::as_path)
    }

    /// The configured variable names, sorted.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.roots.keys().map(String::as_str)
    }

    /// cli.md §3.2 check 4: every variable the job lists is configured here.
    pub fn check_variables(&self, job_paths: &[String]) -> Result<(), ResolveError> {
        let mut missing: Vec<String> = job_paths
            .iter()
            .filter(|name| !self.roots.contains_key(name.as_str()))
            .cloned()
            .collect();
        if missing.is_empty() {
            return Ok(());
        }
        missing.sort();
        missing.dedup();
        Err(ResolveError::VariableUnavailable { names: missing })
    }

    /// [`PathRoots::resolve`] on the fields of an `assign_job`.
    pub fn resolve_assignment(
        &self,
        job: &AssignJob,
        default_working_directory: Option<&Path>,
    ) -> Result<ResolvedJob, ResolveError> {
        self.resolve(
            &job.paths,
            &job.arguments,
            job.working_directory.as_deref(),
            default_working_directory,
        )
    }

    /// Translates a job's arguments and working directory (cli.md §3.2 checks 4 and 6). Arguments that are not
    /// `[file:]$Name[/…]` with `Name` in `job_paths` pass byte for byte. `working_directory` is resolved like an
    /// argument, a `file:` prefix dropped; when absent, `default_working_directory`, else `None` (the worker's own).
    /// The escape check touches the file system: call this just before the spawn.
    pub fn resolve(
        &self,
        job_paths: &[String],
        arguments: &[String],
        working_directory: Option<&str>,
        default_working_directory: Option<&Path>,
    ) -> Result<ResolvedJob, ResolveError> {
        self.check_variables(job_paths)?;
        let mut resolved = Vec::with_capacity(arguments.len());
        for (index, argument) in arguments.iter().enumerate() {
            match self.translate(job_paths, argument) {
                Translation::Unchanged => resolved.push(OsString::from(argument)),
                Translation::Resolved { file_prefix, path } => {
                    let mut text = OsString::new();
                    if file_prefix {
                        text.push("file:");
                    }
                    text.push(path.as_os_str());
                    resolved.push(text);
                }
                Translation::Escape { variable, reason } => {
                    return Err(ResolveError::ArgumentEscape {
                        index,
                        argument: argument.clone(),
                        variable: variable.to_owned(),
                        reason,
                    });
                }
            }
        }
        let working_directory = match working_directory {
            None => default_working_directory.map(Path::to_path_buf),
            Some(directory) => Some(match self.translate(job_paths, directory) {
                Translation::Unchanged => PathBuf::from(directory),
                Translation::Resolved { path, .. } => path,
                Translation::Escape { variable, reason } => {
                    return Err(ResolveError::WorkingDirectoryEscape {
                        working_directory: directory.to_owned(),
                        variable: variable.to_owned(),
                        reason,
                    });
                }
            }),
        };
        Ok(ResolvedJob {
            arguments: resolved,
            working_directory,
        })
    }

    fn translate<'a>(&self, job_paths: &[String], argument: &'a str) -> Translation<'a> {
        let Some(reference) = parse_variable_ref(argument) else {
            return Translation::Unchanged;
        };
        if !job_paths.iter().any(|name| name == reference.name) {
            return Translation::Unchanged;
        }
        let Some(root) = self.roots.get(reference.name) else {
            // check_variables ran first; a listed variable is always configured here.
            return Translation::Unchanged;
        };
        let escape = |reason| Translation::Escape {
            variable: reference.name,
            reason,
        };
        if reference.rest.split('/').any(|segment| segment == "..") {
            return escape(EscapeReason::ParentSegment);
        }
        let mut path = root.clone().into_os_string();
        path.push(reference.rest);
        let path = PathBuf::from(path);
        if !self.follow_symlinks_outside_roots {
            match real_location(&path) {
                Ok(real) if real.starts_with(root) => {}
                Ok(_) => return escape(EscapeReason::OutsideRoot),
                Err(reason) => return escape(reason),
            }
        }
        Translation::Resolved {
            file_prefix: reference.file_prefix,
            path,
        }
    }
}

enum Translation<'a> {
    Unchanged,
    Resolved {
        file_prefix: bool,
        path: PathBuf,
    },
    Escape {
        variable: &'a str,
        reason: EscapeReason,
    },
}

/// Where `path` really lands: its longest existing prefix canonicalised, with the missing rest appended. A dangling
/// symbolic link at the end of that prefix is followed by hand, since writing through it would create its target.
fn real_location(path: &Path) -> Result<PathBuf, EscapeReason> {
    let mut current = path.to_path_buf();
    for _ in 0..MAX_LINK_HOPS {
        let components: Vec<Component<'_>> = current.components().collect();
        let mut existing = components.len();
        while existing > 0 {
            let prefix: PathBuf = components[..existing].iter().collect();
            // Any failure (missing, not a directory, no permission) means the process cannot reach it either.
            if fs::symlink_metadata(&prefix).is_ok() {
                break;
            }
            existing -= 1;
        }
        let prefix: PathBuf = components[..existing].iter().collect();
        let missing = &components[existing..];
        if missing
            .iter()
            .any(|component| matches!(component, Component::ParentDir))
        {
            return Err(EscapeReason::ParentSegment);
        }
        match fs::canonicalize(&prefix) {
            Ok(mut real) => {
                real.extend(missing);
                return Ok(real);
            }
            Err(_) => {
                let is_link =
                    fs::symlink_metadata(&prefix).is_ok_and(|meta| meta.file_type().is_symlink());
                let target = fs::read_link(&prefix).map_err(|_| EscapeReason::Unresolvable)?;
                let parent = prefix.parent().ok_or(EscapeReason::Unresolvable)?;
                if !is_link {
                    return Err(EscapeReason::Unresolvable);
                }
                let mut next = parent.join(target);
                next.extend(missing);
                current = next;
            }
        }
    }
    Err(EscapeReason::Unresolvable)
}

/// cli.md §3.2 check 7: the working directory exists and is a directory. `None` (the worker's own) always passes.
pub fn check_working_directory(directory: Option<&Path>) -> Result<(), ResolveError> {
    let Some(directory) = directory else {
        return Ok(());
    };
    let unavailable = |source| ResolveError::WorkingDirectoryUnavailable {
        path: directory.to_path_buf(),
        source,
    };
    let meta = fs::metadata(directory).map_err(unavailable)?;
    if !meta.is_dir() {
        return Err(unavailable(io::Error::new(
            io::ErrorKind::NotADirectory,
            "not a directory",
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    struct Fixture {
        _dir: tempfile::TempDir,
        base: PathBuf,
        root: PathBuf,
    }

    /// base/media_real (the root, configured through base/media_link/ with a trailing slash), base/outside.
    fn fixture() -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let base = fs::canonicalize(dir.path()).unwrap();
        let real = base.join("media_real");
        fs::create_dir_all(real.join("sub")).unwrap();
        fs::create_dir_all(base.join("outside")).unwrap();
        fs::write(real.join("in.mkv"), b"x").unwrap();
        fs::write(base.join("outside/secret"), b"x").unwrap();
        symlink(&real, base.join("media_link")).unwrap();
        symlink("sub", real.join("inside_link")).unwrap();
        symlink("../outside", real.join("outside_link")).unwrap();
        symlink("../outside/nothing", real.join("dangling_out")).unwrap();
        symlink("sub/missing", real.join("dangling_in")).unwrap();
        symlink("loop_b", real.join("loop_a")).unwrap();
        symlink("loop_a", real.join("loop_b")).unwrap();
        symlink(base.join("outside/secret"), real.join("abs_out")).unwrap();
        Fixture {
            _dir: dir,
            base,
            root: real,
        }
    }

    fn roots(fixture: &Fixture, follow: bool) -> PathRoots {
        let mut link = fixture.base.join("media_link").into_os_string();
        link.push("/");
        PathRoots::new(
            [
                ("Media", PathBuf::from(link)),
                ("Other", fixture.base.join("outside")),
            ],
            follow,
        )
        .unwrap()
    }

    enum Want {
        /// Passed byte for byte.
        Same,
        Becomes(&'static str),
        Escape(EscapeReason),
        /// (third column only) as without the option.
        AsStrict,
    }

    #[test]
    fn roots_are_canonical() {
        let fixture = fixture();
        let roots = roots(&fixture, false);
        assert_eq!(roots.root("Media"), Some(fixture.root.as_path()));
        assert_eq!(roots.names().collect::<Vec<_>>(), ["Media", "Other"]);
        assert!(matches!(
            PathRoots::new([("Gone", fixture.base.join("missing"))], false),
            Err(RootError::Canonicalise { .. })
        ));
        assert!(matches!(
            PathRoots::new([("File", fixture.root.join("in.mkv"))], false),
            Err(RootError::NotADirectory { .. })
        ));
    }

    #[test]
    fn arguments_table() {
        use EscapeReason::*;
        let cases: &[(&str, Want, Want)] = &[
            // (argument, without follow_symlinks_outside_roots, with it)
            (
                "$Media/in.mkv",
                Want::Becomes("{root}/in.mkv"),
                Want::Becomes("{root}/in.mkv"),
            ),
            (
                "file:$Media/in.mkv",
                Want::Becomes("file:{root}/in.mkv"),
                Want::Becomes("file:{root}/in.mkv"),
            ),
            ("$Media", Want::Becomes("{root}"), Want::Becomes("{root}")),
            (
                "file:$Media",
                Want::Becomes("file:{root}"),
                Want::Becomes("file:{root}"),
            ),
            (
                "$Media/",
                Want::Becomes("{root}/"),
                Want::Becomes("{root}/"),
            ),
            (
                "$Media/new/dir/out.mp4",
                Want::Becomes("{root}/new/dir/out.mp4"),
                Want::AsStrict,
            ),
            (
                "$Media/sub//x.ts",
                Want::Becomes("{root}/sub//x.ts"),
                Want::AsStrict,
            ),
            ("$Media/...", Want::Becomes("{root}/..."), Want::AsStrict),
            ("$Media/a..b", Want::Becomes("{root}/a..b"), Want::AsStrict),
            (
                "$Media/inside_link/x",
                Want::Becomes("{root}/inside_link/x"),
                Want::AsStrict,
            ),
            (
                "$Media/dangling_in",
                Want::Becomes("{root}/dangling_in"),
                Want::AsStrict,
            ),
            (
                "$Media/../outside/secret",
                Want::Escape(ParentSegment),
                Want::Escape(ParentSegment),
            ),
            (
                "$Media/sub/../in.mkv",
                Want::Escape(ParentSegment),
                Want::Escape(ParentSegment),
            ),
            (
                "$Media/in.mkv/..",
                Want::Escape(ParentSegment),
                Want::Escape(ParentSegment),
            ),
            (
                "file:$Media/..",
                Want::Escape(ParentSegment),
                Want::Escape(ParentSegment),
            ),
            (
                "$Media/outside_link/secret",
                Want::Escape(OutsideRoot),
                Want::Becomes("{root}/outside_link/secret"),
            ),
            (
                "$Media/outside_link",
                Want::Escape(OutsideRoot),
                Want::Becomes("{root}/outside_link"),
            ),
            (
                "$Media/outside_link/new.mp4",
                Want::Escape(OutsideRoot),
                Want::Becomes("{root}/outside_link/new.mp4"),
            ),
            (
                "$Media/abs_out",
                Want::Escape(OutsideRoot),
                Want::Becomes("{root}/abs_out"),
            ),
            (
                "$Media/dangling_out",
                Want::Escape(OutsideRoot),
                Want::Becomes("{root}/dangling_out"),
            ),
            (
                "$Media/loop_a",
                Want::Escape(Unresolvable),
                Want::Becomes("{root}/loop_a"),
            ),
            // not a listed variable, or not a variable at all: byte for byte
            ("$Other/secret", Want::Same, Want::Same),
            ("$Unknown/x", Want::Same, Want::Same),
            ("$Mediax/y", Want::Same, Want::Same),
            ("$media/y", Want::Same, Want::Same),
            ("x$Media/y", Want::Same, Want::Same),
            ("file:x$Media", Want::Same, Want::Same),
            ("$", Want::Same, Want::Same),
            ("$/x", Want::Same, Want::Same),
            ("-i", Want::Same, Want::Same),
            ("../x", Want::Same, Want::Same),
            ("", Want::Same, Want::Same),
        ];
        let fixture = fixture();
        let root = fixture.root.to_str().unwrap();
        let job_paths = vec!["Media".to_owned()];
        for follow in [false, true] {
            let roots = roots(&fixture, follow);
            for (argument, strict, relaxed) in cases {
                let want = if follow && !matches!(relaxed, Want::AsStrict) {
                    relaxed
                } else {
                    strict
                };
                let arguments = vec!["-y".to_owned(), (*argument).to_owned()];
                let result = roots.resolve(&job_paths, &arguments, None, None);
                match (want, result) {
                    (Want::AsStrict, _) => unreachable!("only in the third column"),
                    (Want::Same, Ok(resolved)) => {
                        assert_eq!(
                            resolved.arguments,
                            [OsString::from("-y"), OsString::from(argument)],
                            "{argument}"
                        )
                    }
                    (Want::Becomes(text), Ok(resolved)) => assert_eq!(
                        resolved.arguments[1],
                        OsString::from(text.replace("{root}", root)),
                        "{argument} (follow {follow})"
                    ),
                    (
                        Want::Escape(reason),
                        Err(ResolveError::ArgumentEscape {
                            index,
                            argument: named,
                            reason: got,
                            ..
                        }),
                    ) => {
                        assert_eq!(
                            (index, named.as_str(), got),
                            (1, *argument, *reason),
                            "{argument} (follow {follow})"
                        )
                    }
                    (_, other) => panic!("{argument} (follow {follow}): unexpected {other:?}"),
                }
            }
        }
    }

    #[test]
    fn escape_errors_name_the_argument_and_code() {
        let fixture = fixture();
        let roots = roots(&fixture, false);
        let error = roots
            .resolve(
                &["Media".to_owned()],
                &["-i".to_owned(), "$Media/../outside/secret".to_owned()],
                None,
                None,
            )
            .unwrap_err();
        assert_eq!(error.code(), "path_escape");
        assert!(!error.is_rejection());
        assert_eq!(
            error.to_string(),
            "argument 1 escapes the root of $Media (parent directory '..'): $Media/../outside/secret"
        );
    }

    #[test]
    fn unknown_variables_are_unavailable() {
        let fixture = fixture();
        let roots = roots(&fixture, false);
        let job_paths = vec!["Nope".to_owned(), "Media".to_owned(), "Also".to_owned()];
        let error = roots.resolve(&job_paths, &[], None, None).unwrap_err();
        assert_eq!(error.code(), "path_variable_unavailable");
        assert!(error.is_rejection());
        assert_eq!(
            error.to_string(),
            "path variables not available on this worker: Also, Nope"
        );
        assert!(
            roots
                .check_variables(&["Media".to_owned(), "Other".to_owned()])
                .is_ok()
        );
    }

    #[test]
    fn working_directory_table() {
        let fixture = fixture();
        let roots = roots(&fixture, false);
        let default = fixture.base.join("outside");
        let job_paths = vec!["Media".to_owned()];
        type Case<'a> = (
            Option<&'a str>,
            Option<&'a Path>,
            Result<Option<PathBuf>, EscapeReason>,
        );
        let cases: &[Case<'_>] = &[
            (
                Some("$Media/sub"),
                Some(&default),
                Ok(Some(fixture.root.join("sub"))),
            ),
            (
                Some("file:$Media/sub"),
                None,
                Ok(Some(fixture.root.join("sub"))),
            ),
            (Some("$Media"), None, Ok(Some(fixture.root.clone()))),
            (
                Some("/srv/plain"),
                None,
                Ok(Some(PathBuf::from("/srv/plain"))),
            ),
            (Some("$Other/x"), None, Ok(Some(PathBuf::from("$Other/x")))),
            (None, Some(&default), Ok(Some(default.clone()))),
            (None, None, Ok(None)),
            (
                Some("$Media/../outside"),
                None,
                Err(EscapeReason::ParentSegment),
            ),
            (
                Some("$Media/outside_link"),
                None,
                Err(EscapeReason::OutsideRoot),
            ),
        ];
        for (directory, default, want) in cases {
            let result = roots.resolve(&job_paths, &[], *directory, *default);
            match (want, result) {
                (Ok(path), Ok(resolved)) => {
                    assert_eq!(&resolved.working_directory, path, "{directory:?}")
                }
                (
                    Err(reason),
                    Err(ResolveError::WorkingDirectoryEscape {
                        reason: got,
                        working_directory,
                        ..
                    }),
                ) => {
                    assert_eq!(
                        (got, working_directory.as_str()),
                        (*reason, directory.unwrap())
                    )
                }
                (_, other) => panic!("{directory:?}: unexpected {other:?}"),
            }
        }
    }

    #[test]
    fn working_directory_must_be_a_directory() {
        let fixture = fixture();
        assert!(check_working_directory(None).is_ok());
        assert!(check_working_directory(Some(&fixture.root)).is_ok());
        for bad in [fixture.root.join("in.mkv"), fixture.root.join("missing")] {
            let error = check_working_directory(Some(&bad)).unwrap_err();
            assert_eq!(error.code(), "working_directory_unavailable");
        }
    }

    #[test]
    fn assignment_fields_are_used() {
        let fixture = fixture();
        let roots = roots(&fixture, false);
        let job = AssignJob {
            job_id: protocol::JobId(protocol::Ulid::from_u128(7)),
            attempt: 1,
            binary: "ffmpeg".to_owned(),
            arguments: vec!["-i".to_owned(), "$Media/in.mkv".to_owned()],
            paths: vec!["Media".to_owned()],
            working_directory: Some("$Media/sub".to_owned()),
            heartbeat_interval_ms: 5000,
            stdin: false,
            priority: 0,
            requester_id: "client01".to_owned(),
        };
        let resolved = roots.resolve_assignment(&job, None).unwrap();
        assert_eq!(
            resolved.arguments[1],
            fixture.root.join("in.mkv").into_os_string()
        );
        assert_eq!(resolved.working_directory, Some(fixture.root.join("sub")));
    }

    proptest::proptest! {
        #[test]
        fn arguments_without_a_listed_variable_pass_unchanged(argument in "\\PC*") {
            let roots = PathRoots::default();
            let resolved = roots.resolve(&[], std::slice::from_ref(&argument), None, None).unwrap();
            proptest::prop_assert_eq!(&resolved.arguments[0], &OsString::from(&argument));
        }
    }
}

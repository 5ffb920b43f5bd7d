//! The admin protocol client (storage.md §7): newline-delimited JSON over the coordinator's admin socket, or over
//! the stdin/stdout of a one-shot `dffmpeg-coordinator --admin-stdio` child; and the choice between the two of
//! cli.md §2.1. It speaks the protocol and reports failures with the messages of cli.md §2.3; printing them and
//! choosing exit codes is the caller's job (`dffmpeg-admin`, `dffmpeg-bench`).

use std::fmt;
use std::io;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::time::Duration;

use protocol::admin::{AdminCommand, AdminResponseLine, HelloArgs, HelloResult};
use serde_json::Value;
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::net::UnixStream;
use tokio::process::{Child, ChildStderr, Command};

/// How long the client waits for each reply (cli.md §2.1).
pub const REPLY_TIMEOUT: Duration = Duration::from_secs(60);
/// The coordinator binary's file name.
pub const COORDINATOR_BINARY: &str = "dffmpeg-coordinator";
/// The exit code of `--admin-stdio` when another process holds the database (cli.md §1.3).
pub const EXIT_DATABASE_LOCKED: i32 = 3;
/// Cap on one reply line; `job.list` of 1000 records is a few MiB.
const MAX_REPLY_LINE_BYTES: usize = 256 * 1024 * 1024;
/// How much of a child's stderr is kept to report its failure.
const STDERR_TAIL_BYTES: usize = 16 * 1024;
/// How long a child that closed its stdout gets to exit before it is killed.
const CHILD_EXIT_GRACE: Duration = Duration::from_secs(10);

/// The error of a command the coordinator refused (`ok: false`), with its stable code and message.
pub type RemoteError = protocol::admin::AdminError;

/// Why an admin request failed. `Display` is the one line `dffmpeg-admin` prints after `dffmpeg-admin: `.
#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    /// The coordinator refused the command; the message is the protocol's.
    #[error("{}", .0.message)]
    Remote(RemoteError),
    /// No reply within the reply timeout.
    #[error("the coordinator did not answer within {} s", .0.as_secs())]
    Timeout(Duration),
    /// The one-shot child found the database locked (it exited 3 without answering).
    #[error("{detail}")]
    DatabaseLocked { detail: String },
    /// The one-shot child failed; `message` is its one stderr line without the `dffmpeg-coordinator: ` prefix.
    #[error("{message}")]
    CoordinatorFailed {
        message: String,
        exit_code: Option<i32>,
    },
    /// The socket is not there and no coordinator binary was found to open the store directly.
    #[error(
        "the coordinator is not running and {COORDINATOR_BINARY} was not found next to {program} or on PATH"
    )]
    CoordinatorNotFound { program: String },
    /// Connecting to the socket was refused by its file permissions (`EACCES`, `EPERM`).
    #[error("permission denied on the admin socket {}{}; run {program} as that user or as root", path.display(), OwnerNote(*owner_uid, *mode))]
    PermissionDenied {
        path: PathBuf,
        owner_uid: Option<u32>,
        mode: Option<u32>,
        program: String,
    },
    /// The coordinator closed the connection before answering `hello`: its peer-credential check refused us.
    #[error("the coordinator refused uid {uid} on the admin socket {}; run {program} as {} or as root", path.display(), RunAs(*owner_uid))]
    PeerRefused {
        path: PathBuf,
        uid: u32,
        owner_uid: Option<u32>,
        program: String,
    },
    /// The connection closed after `hello` with requests unanswered.
    #[error("the coordinator closed the admin connection without answering")]
    Closed,
    /// A reply that does not follow the protocol.
    #[error("invalid reply from the coordinator: {0}")]
    Protocol(String),
    /// Any other I/O failure, with what was being done.
    #[error("{action}: {source}")]
    Io { action: String, source: io::Error },
}

/// ` (owner uid 998, mode 0600)` when known.
struct OwnerNote(Option<u32>, Option<u32>);

impl fmt::Display for OwnerNote {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (self.0, self.1) {
            (Some(uid), Some(mode)) => write!(f, " (owner uid {uid}, mode {:04o})", mode & 0o7777),
            (Some(uid), None) => write!(f, " (owner uid {uid})"),
            (None, Some(mode)) => write!(f, " (mode {:04o})", mode & 0o7777),
            (None, None) => Ok(()),
        }
    }
}

/// `uid 998`, or `the coordinator's user` when the socket's owner is unknown.
struct RunAs(Option<u32>);

impl fmt::Display for RunAs {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Some(uid) => write!(f, "uid {uid}"),
            None => f.write_str("the coordinator's user"),
        }
    }
}

/// Which way the coordinator was reached.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AdminTransport {
    /// The running coordinator's admin socket.
    Socket { path: PathBuf },
    /// A one-shot `dffmpeg-coordinator --admin-stdio` child that opened the store directly.
    OneShot { binary: PathBuf },
}

/// What [`connect`] needs to reach the coordinator either way.
#[derive(Debug, Clone)]
pub struct AdminTarget {
    /// `admin_socket` of the coordinator's configuration.
    pub socket: PathBuf,
    /// `database.path`, named in the locked-database message.
    pub database: PathBuf,
    /// The configuration file found, passed to the child as `--config`; `None` when none was found.
    pub config_file: Option<PathBuf>,
    /// The coordinator binary for one-shot mode; `None` looks it up ([`find_coordinator_binary`]).
    pub coordinator_binary: Option<PathBuf>,
    pub reply_timeout: Duration,
    /// The program named in messages (`dffmpeg-admin`).
    pub program: String,
}

impl AdminTarget {
    /// A target with the default timeout, binary lookup and program name.
    pub fn new(socket: impl Into<PathBuf>, database: impl Into<PathBuf>) -> AdminTarget {
        AdminTarget {
            socket: socket.into(),
            database: database.into(),
            config_file: None,
            coordinator_binary: None,
            reply_timeout: REPLY_TIMEOUT,
            program: "dffmpeg-admin".to_owned(),
        }
    }
}

/// How a failed connect to the admin socket is handled (cli.md §2.1 step 1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SocketFailure {
    /// `EACCES` or `EPERM`: exit 4, no fallback.
    PermissionDenied,
    /// Socket file missing or `ECONNREFUSED`: the coordinator is not running; use one-shot mode. The text says
    /// which, for the locked-database message.
    NotRunning(&'static str),
    /// Anything else is reported as it is.
    Other,
}

/// Classifies the error of connecting to the admin socket.
pub fn classify_socket_error(err: &io::Error) -> SocketFailure {
    match err.kind() {
        io::ErrorKind::PermissionDenied => SocketFailure::PermissionDenied,
        io::ErrorKind::NotFound => SocketFailure::NotRunning("no socket file"),
        io::ErrorKind::ConnectionRefused => SocketFailure::NotRunning("connection refused"),
        _ => SocketFailure::Other,
    }
}

/// Reaches the coordinator the way cli.md §2.1 chooses: the admin socket if it answers, else a one-shot child.
/// `hello` has been exchanged when this returns; [`AdminConnection::transport`] tells which way was used.
pub async fn connect(target: &AdminTarget) -> Result<AdminConnection, AdminError> {
    let connected = tokio::time::timeout(target.reply_timeout, UnixStream::connect(&target.socket))
        .await
        .map_err(|_| AdminError::Timeout(target.reply_timeout))?;
    let reason = match connected {
        Ok(stream) => return AdminConnection::from_socket(stream, target).await,
        Err(err) => match classify_socket_error(&err) {
            SocketFailure::PermissionDenied => return Err(permission_denied(target)),
            SocketFailure::NotRunning(reason) => reason,
            SocketFailure::Other => {
                return Err(AdminError::Io {
                    action: format!("connecting to the admin socket {}", target.socket.display()),
                    source: err,
                });
            }
        },
    };
    let binary = match &target.coordinator_binary {
        Some(binary) => binary.clone(),
        None => find_coordinator_binary().ok_or_else(|| AdminError::CoordinatorNotFound {
            program: target.program.clone(),
        })?,
    };
    match AdminConnection::spawn_stdio(&binary, target.config_file.as_deref(), target.reply_timeout)
        .await
    {
        Err(AdminError::DatabaseLocked { .. }) => Err(AdminError::DatabaseLocked {
            detail: format!(
                "the database {} is locked by another process and the admin socket {} did not answer ({reason}); \
                 is the coordinator starting or stopping?",
                target.database.display(),
                target.socket.display()
            ),
        }),
        other => other,
    }
}

fn permission_denied(target: &AdminTarget) -> AdminError {
    let metadata = std::fs::metadata(&target.socket).ok();
    AdminError::PermissionDenied {
        path: target.socket.clone(),
        owner_uid: metadata.as_ref().map(MetadataExt::uid),
        mode: metadata.as_ref().map(MetadataExt::mode),
        program: target.program.clone(),
    }
}

/// The coordinator binary next to the current executable, else the first on `PATH`.
pub fn find_coordinator_binary() -> Option<PathBuf> {
    let beside = std::env::current_exe()
        .ok()
        .and_then(|exe| exe.parent().map(|dir| dir.join(COORDINATOR_BINARY)));
    if let Some(path) = beside.filter(|path| is_executable(path)) {
        return Some(path);
    }
    let search = std::env::var_os("PATH")?;
    std::env::split_paths(&search)
        .map(|dir| dir.join(COORDINATOR_BINARY))
        .find(|path| is_executable(path))
}

fn is_executable(path: &Path) -> bool {
    std::fs::metadata(path)
        .is_ok_and(|metadata| metadata.is_file() && metadata.permissions().mode() & 0o111 != 0)
}

/// The one-shot child and what it wrote on stderr.
#[derive(Debug)]
struct ChildState {
    child: Child,
    /// `None` once stderr reached its end.
    stderr: Option<ChildStderr>,
    /// The last bytes of stderr, to report a failure.
    stderr_tail: Vec<u8>,
}

impl ChildState {
    fn keep_stderr(&mut self, bytes: &[u8]) {
        self.stderr_tail.extend_from_slice(bytes);
        if self.stderr_tail.len() > STDERR_TAIL_BYTES {
            let excess = self.stderr_tail.len() - STDERR_TAIL_BYTES;
            self.stderr_tail.drain(..excess);
        }
    }

    /// After stdout closed: collects the rest of stderr and the exit status, and turns them into the error.
    async fn failure(&mut self) -> AdminError {
        let collect = async {
            if let Some(mut stderr) = self.stderr.take() {
                let mut rest = Vec::new();
                // A read error only loses diagnostics.
                let _ = stderr.read_to_end(&mut rest).await;
                self.keep_stderr(&rest);
            }
            self.child.wait().await
        };
        let status = match tokio::time::timeout(CHILD_EXIT_GRACE, collect).await {
            Ok(Ok(status)) => Some(status),
            Ok(Err(_)) => None,
            Err(_) => {
                // The child closed stdout but lingers; it will not answer.
                let _ = self.child.start_kill();
                None
            }
        };
        child_error(status, &self.stderr_tail)
    }
}

/// The error for a child that stopped answering: exit 3 is the locked database, anything else its last stderr line.
fn child_error(status: Option<ExitStatus>, stderr: &[u8]) -> AdminError {
    let code = status.and_then(|status| status.code());
    if code == Some(EXIT_DATABASE_LOCKED) {
        return AdminError::DatabaseLocked {
            detail: "the database is locked by another process".to_owned(),
        };
    }
    let text = String::from_utf8_lossy(stderr);
    let line = text.lines().map(str::trim).rfind(|line| !line.is_empty());
    let message = match line {
        Some(line) => line
            .strip_prefix(&format!("{COORDINATOR_BINARY}: "))
            .unwrap_or(line)
            .to_owned(),
        None => match status {
            Some(status) => format!("the coordinator exited ({status}) without answering"),
            None => "the coordinator closed its output without answering".to_owned(),
        },
    };
    AdminError::CoordinatorFailed {
        message,
        exit_code: code,
    }
}

/// What one step of reading produced.
enum ReadStep {
    /// `line` holds a complete line.
    Line,
    /// Part of a line was read.
    More,
    /// The reply stream ended.
    Eof,
    Stderr(Vec<u8>),
    StderrEof,
}

/// The reading half: reply lines, and for a child its stderr, drained while waiting so it never blocks.
struct ReplyReader {
    reader: BufReader<Box<dyn AsyncRead + Send + Unpin>>,
    child: Option<ChildState>,
    reply_timeout: Duration,
}

impl ReplyReader {
    /// The next reply line, within the reply timeout. `Ok(None)`: the stream ended.
    async fn next_line(&mut self) -> Result<Option<Vec<u8>>, AdminError> {
        let timeout = self.reply_timeout;
        match tokio::time::timeout(timeout, self.read_line()).await {
            Ok(result) => result,
            Err(_) => Err(AdminError::Timeout(timeout)),
        }
    }

    async fn read_line(&mut self) -> Result<Option<Vec<u8>>, AdminError> {
        let mut line = Vec::new();
        loop {
            let step = {
                let reader = &mut self.reader;
                let line = &mut line;
                let stderr = self.child.as_mut().and_then(|child| child.stderr.as_mut());
                let from_stdout = async move {
                    let available = reader.fill_buf().await?;
                    if available.is_empty() {
                        return Ok::<_, io::Error>(ReadStep::Eof);
                    }
                    match available.iter().position(|&byte| byte == b'\n') {
                        Some(end) => {
                            line.extend_from_slice(&available[..end]);
                            reader.consume(end + 1);
                            Ok(ReadStep::Line)
                        }
                        None => {
                            let n_bytes = available.len();
                            line.extend_from_slice(available);
                            reader.consume(n_bytes);
                            Ok(ReadStep::More)
                        }
                    }
                };
                let from_stderr = async move {
                    match stderr {
                        Some(stderr) => {
                            let mut chunk = vec![0; 4096];
                            let n_bytes = stderr.read(&mut chunk).await?;
                            chunk.truncate(n_bytes);
                            Ok(if n_bytes == 0 {
                                ReadStep::StderrEof
                            } else {
                                ReadStep::Stderr(chunk)
                            })
                        }
                        None => std::future::pending().await,
                    }
                };
                tokio::select! {
                    biased;
                    step = from_stdout => step,
                    step = from_stderr => step,
                }
            };
            match step {
                Ok(ReadStep::Line) => return Ok(Some(line)),
                Ok(ReadStep::More) if line.len() > MAX_REPLY_LINE_BYTES => {
                    return Err(AdminError::Protocol(format!(
                        "reply line longer than {MAX_REPLY_LINE_BYTES} bytes"
                    )));
                }
                Ok(ReadStep::More) => {}
                Ok(ReadStep::Stderr(bytes)) => {
                    if let Some(child) = self.child.as_mut() {
                        child.keep_stderr(&bytes);
                    }
                }
                Ok(ReadStep::StderrEof) => {
                    if let Some(child) = self.child.as_mut() {
                        child.stderr = None;
                    }
                }
                Ok(ReadStep::Eof) => return Ok(None),
                Err(err) if is_disconnect(&err) => return Ok(None),
                Err(err) => {
                    return Err(AdminError::Io {
                        action: "reading the coordinator's reply".to_owned(),
                        source: err,
                    });
                }
            }
        }
    }

    /// Reads the replies to ids `first_id .. first_id + count`, in any order.
    async fn read_replies(
        &mut self,
        first_id: u64,
        count: usize,
    ) -> Result<Vec<AdminResponseLine>, AdminError> {
        let mut replies: Vec<Option<AdminResponseLine>> = vec![None; count];
        let mut received = 0;
        while received < count {
            let Some(line) = self.next_line().await? else {
                return Err(AdminError::Closed);
            };
            let reply: AdminResponseLine = serde_json::from_slice(&line)
                .map_err(|err| AdminError::Protocol(format!("not a response line: {err}")))?;
            if reply.v != protocol::admin::ADMIN_PROTOCOL_VERSION {
                return Err(AdminError::Protocol(format!(
                    "unsupported protocol version {}",
                    reply.v
                )));
            }
            let slot = reply
                .id
                .checked_sub(first_id)
                .and_then(|offset| usize::try_from(offset).ok())
                .and_then(|offset| replies.get_mut(offset));
            match slot {
                Some(slot @ None) => *slot = Some(reply),
                Some(Some(_)) => {
                    return Err(AdminError::Protocol(format!(
                        "a second reply to request {}",
                        reply.id
                    )));
                }
                None => {
                    // The coordinator answers a line it could not read with its own error, under an id of its own.
                    let detail = reply.error.map(|error| error.message).unwrap_or_default();
                    return Err(AdminError::Protocol(format!(
                        "reply to unknown request {}: {detail}",
                        reply.id
                    )));
                }
            }
            received += 1;
        }
        Ok(replies.into_iter().flatten().collect())
    }
}

fn is_disconnect(err: &io::Error) -> bool {
    matches!(
        err.kind(),
        io::ErrorKind::BrokenPipe | io::ErrorKind::ConnectionReset | io::ErrorKind::UnexpectedEof
    )
}

/// One admin session: requests go out as lines, replies come back by id.
pub struct AdminConnection {
    writer: Box<dyn AsyncWrite + Send + Unpin>,
    replies: ReplyReader,
    next_id: u64,
    transport: AdminTransport,
    hello: HelloResult,
}

impl fmt::Debug for AdminConnection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AdminConnection")
            .field("transport", &self.transport)
            .field("hello", &self.hello)
            .field("next_id", &self.next_id)
            .finish_non_exhaustive()
    }
}

impl AdminConnection {
    /// Connects to an admin socket and exchanges `hello`. Unlike [`connect`] there is no fallback.
    pub async fn connect_socket(target: &AdminTarget) -> Result<AdminConnection, AdminError> {
        let connected =
            tokio::time::timeout(target.reply_timeout, UnixStream::connect(&target.socket))
                .await
                .map_err(|_| AdminError::Timeout(target.reply_timeout))?;
        match connected {
            Ok(stream) => AdminConnection::from_socket(stream, target).await,
            Err(err) if classify_socket_error(&err) == SocketFailure::PermissionDenied => {
                Err(permission_denied(target))
            }
            Err(err) => Err(AdminError::Io {
                action: format!("connecting to the admin socket {}", target.socket.display()),
                source: err,
            }),
        }
    }

    async fn from_socket(
        stream: UnixStream,
        target: &AdminTarget,
    ) -> Result<AdminConnection, AdminError> {
        let (read_half, write_half) = stream.into_split();
        let mut connection = AdminConnection {
            writer: Box::new(write_half),
            replies: ReplyReader {
                reader: BufReader::new(Box::new(read_half)),
                child: None,
                reply_timeout: target.reply_timeout,
            },
            next_id: 1,
            transport: AdminTransport::Socket {
                path: target.socket.clone(),
            },
            hello: HelloResult {
                coordinator_version: String::new(),
                mode: String::new(),
            },
        };
        match connection.exchange_hello().await {
            Ok(()) => Ok(connection),
            Err(AdminError::Closed) => Err(AdminError::PeerRefused {
                path: target.socket.clone(),
                uid: nix::unistd::geteuid().as_raw(),
                owner_uid: std::fs::metadata(&target.socket)
                    .ok()
                    .map(|metadata| metadata.uid()),
                program: target.program.clone(),
            }),
            Err(err) => Err(err),
        }
    }

    /// Starts `binary [--config FILE] --admin-stdio` in the current directory and environment and exchanges
    /// `hello`. A child that exits 3 before answering is [`AdminError::DatabaseLocked`]; one that fails otherwise
    /// is [`AdminError::CoordinatorFailed`] with its last stderr line.
    pub async fn spawn_stdio(
        binary: &Path,
        config_file: Option<&Path>,
        reply_timeout: Duration,
    ) -> Result<AdminConnection, AdminError> {
        let mut command = Command::new(binary);
        if let Some(config_file) = config_file {
            command.arg("--config").arg(config_file);
        }
        command
            .arg("--admin-stdio")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = command.spawn().map_err(|err| AdminError::Io {
            action: format!("starting {}", binary.display()),
            source: err,
        })?;
        let (Some(stdin), Some(stdout), stderr) =
            (child.stdin.take(), child.stdout.take(), child.stderr.take())
        else {
            // Unreachable with piped stdio; reported rather than assumed.
            let _ = child.start_kill();
            return Err(AdminError::Protocol(
                "the child's standard streams are not connected".to_owned(),
            ));
        };
        let mut connection = AdminConnection {
            writer: Box::new(stdin),
            replies: ReplyReader {
                reader: BufReader::new(Box::new(stdout)),
                child: Some(ChildState {
                    child,
                    stderr,
                    stderr_tail: Vec::new(),
                }),
                reply_timeout,
            },
            next_id: 1,
            transport: AdminTransport::OneShot {
                binary: binary.to_owned(),
            },
            hello: HelloResult {
                coordinator_version: String::new(),
                mode: String::new(),
            },
        };
        connection.exchange_hello().await?;
        Ok(connection)
    }

    async fn exchange_hello(&mut self) -> Result<(), AdminError> {
        let hello = AdminCommand::Hello(HelloArgs {
            client_version: protocol::VERSION.to_owned(),
        });
        let result = self.request(&hello).await?;
        self.hello = serde_json::from_value(result)
            .map_err(|err| AdminError::Protocol(format!("invalid hello result: {err}")))?;
        Ok(())
    }

    /// Which way the coordinator was reached.
    pub fn transport(&self) -> &AdminTransport {
        &self.transport
    }

    /// The coordinator's answer to `hello`.
    pub fn hello(&self) -> &HelloResult {
        &self.hello
    }

    /// Sends one command and waits for its reply: the `result`, or [`AdminError::Remote`] when refused.
    pub async fn request(&mut self, command: &AdminCommand) -> Result<Value, AdminError> {
        let mut results = self.pipeline(std::slice::from_ref(command)).await?;
        match results.pop() {
            Some(Ok(value)) => Ok(value),
            Some(Err(remote)) => Err(AdminError::Remote(remote)),
            None => Err(AdminError::Closed),
        }
    }

    /// Sends several commands at once (the coordinator's writes can share flushes) and collects their replies, in
    /// the order of `commands`. Each command succeeds or fails on its own; the outer error is a transport failure.
    pub async fn pipeline(
        &mut self,
        commands: &[AdminCommand],
    ) -> Result<Vec<Result<Value, RemoteError>>, AdminError> {
        if commands.is_empty() {
            return Ok(Vec::new());
        }
        let first_id = self.next_id;
        self.next_id += commands.len() as u64;
        let mut text = String::new();
        for (offset, command) in (0u64..).zip(commands) {
            let line = serde_json::to_string(&command.to_line(first_id + offset))
                .map_err(|err| AdminError::Protocol(format!("encoding a request: {err}")))?;
            text.push_str(&line);
            text.push('\n');
        }
        // Written and read at once, so a long pipeline cannot fill both directions' buffers and stall. Once the
        // replies are in (or failed, a timeout included) a write still blocked is abandoned.
        let (written, replies) = {
            let writer = &mut self.writer;
            let write = async move {
                writer.write_all(text.as_bytes()).await?;
                writer.flush().await
            };
            let read = self.replies.read_replies(first_id, commands.len());
            tokio::pin!(write, read);
            let mut written: Option<io::Result<()>> = None;
            loop {
                tokio::select! {
                    result = &mut write, if written.is_none() => written = Some(result),
                    replies = &mut read => break (written, replies),
                }
            }
        };
        let replies = match (written, replies) {
            (_, Ok(replies)) => replies,
            (_, Err(AdminError::Closed)) => return Err(self.closed_error().await),
            (Some(Err(err)), Err(_)) if !is_disconnect(&err) => {
                return Err(AdminError::Io {
                    action: "sending a request to the coordinator".to_owned(),
                    source: err,
                });
            }
            (_, Err(err)) => return Err(err),
        };
        replies
            .into_iter()
            .map(|reply| match (reply.ok, reply.result, reply.error) {
                (true, result, _) => Ok(Ok(result.unwrap_or(Value::Null))),
                (false, _, Some(error)) => Ok(Err(error)),
                (false, _, None) => Err(AdminError::Protocol(format!(
                    "reply {} failed without an error",
                    reply.id
                ))),
            })
            .collect()
    }

    /// The error for a reply stream that ended early: the child's failure, or `Closed` for a socket.
    async fn closed_error(&mut self) -> AdminError {
        match self.replies.child.as_mut() {
            Some(child) => child.failure().await,
            None => AdminError::Closed,
        }
    }

    /// Ends the session: closes our side, and for a one-shot child waits for it to flush and exit. A child that
    /// exits non-zero is reported with its stderr line.
    pub async fn close(self) -> Result<(), AdminError> {
        let AdminConnection {
            mut writer,
            replies,
            ..
        } = self;
        // Closing our side is the end-of-session signal; a failure here means the peer is gone already.
        let _ = writer.shutdown().await;
        drop(writer);
        let Some(mut child) = replies.child else {
            return Ok(());
        };
        let collect = async {
            if let Some(mut stderr) = child.stderr.take() {
                let mut rest = Vec::new();
                let _ = stderr.read_to_end(&mut rest).await;
                child.keep_stderr(&rest);
            }
            child.child.wait().await
        };
        let status = match tokio::time::timeout(replies.reply_timeout, collect).await {
            Ok(Ok(status)) => status,
            Ok(Err(err)) => {
                return Err(AdminError::Io {
                    action: "waiting for the coordinator to exit".to_owned(),
                    source: err,
                });
            }
            Err(_) => {
                let _ = child.child.start_kill();
                return Err(AdminError::Timeout(replies.reply_timeout));
            }
        };
        if status.success() {
            Ok(())
        } else {
            Err(child_error(Some(status), &child.stderr_tail))
        }
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::process::ExitStatusExt;

    use super::*;

    #[test]
    fn socket_errors_choose_the_way() {
        let kinds = [
            (13, SocketFailure::PermissionDenied),            // EACCES
            (1, SocketFailure::PermissionDenied),             // EPERM
            (2, SocketFailure::NotRunning("no socket file")), // ENOENT
            (111, SocketFailure::NotRunning("connection refused")), // ECONNREFUSED
            (20, SocketFailure::Other),                       // ENOTDIR
        ];
        for (errno, expected) in kinds {
            assert_eq!(
                classify_socket_error(&io::Error::from_raw_os_error(errno)),
                expected,
                "errno {errno}"
            );
        }
    }

    #[test]
    fn messages_match_cli_md() {
        let err = AdminError::PermissionDenied {
            path: PathBuf::from("./dffmpeg-data/admin.sock"),
            owner_uid: Some(998),
            mode: Some(0o140600),
            program: "dffmpeg-admin".into(),
        };
        assert_eq!(
            err.to_string(),
            "permission denied on the admin socket ./dffmpeg-data/admin.sock (owner uid 998, mode 0600); run \
             dffmpeg-admin as that user or as root"
        );
        let err = AdminError::PeerRefused {
            path: PathBuf::from("./dffmpeg-data/admin.sock"),
            uid: 1000,
            owner_uid: Some(998),
            program: "dffmpeg-admin".into(),
        };
        assert_eq!(
            err.to_string(),
            "the coordinator refused uid 1000 on the admin socket ./dffmpeg-data/admin.sock; run dffmpeg-admin as uid \
             998 or as root"
        );
        assert_eq!(
            AdminError::Timeout(REPLY_TIMEOUT).to_string(),
            "the coordinator did not answer within 60 s"
        );
        assert_eq!(
            AdminError::CoordinatorNotFound {
                program: "dffmpeg-admin".into()
            }
            .to_string(),
            "the coordinator is not running and dffmpeg-coordinator was not found next to dffmpeg-admin or on PATH"
        );
    }

    #[test]
    fn child_failures_report_the_last_stderr_line() {
        let locked = child_error(Some(ExitStatus::from_raw(3 << 8)), b"");
        assert!(matches!(locked, AdminError::DatabaseLocked { .. }));
        let failed = child_error(
            Some(ExitStatus::from_raw(2 << 8)),
            b"some log line\ndffmpeg-coordinator: loading configuration: /x.yaml: Permission denied (os error 13)\n\n",
        );
        match failed {
            AdminError::CoordinatorFailed { message, exit_code } => {
                assert_eq!(
                    message,
                    "loading configuration: /x.yaml: Permission denied (os error 13)"
                );
                assert_eq!(exit_code, Some(2));
            }
            other => panic!("expected CoordinatorFailed, got {other:?}"),
        }
        let silent = child_error(Some(ExitStatus::from_raw(1 << 8)), b"");
        assert_eq!(
            silent.to_string(),
            "the coordinator exited (exit status: 1) without answering"
        );
    }
}

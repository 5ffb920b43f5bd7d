//! The operating-system side of starting and watching a job process: the long-lived spawner thread, the child setup
//! between fork and exec (fd 3, inherited descriptors, signals, parent-death signal), and exit detection through a
//! pidfd. This is the worker's one module allowed `unsafe` code (STYLE.md §6); every block says why it is sound.
//!
//! Not here: argv and environment (the caller builds the `Command`), reading pipes, signalling policy.
#![allow(unsafe_code)]

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::process::{Child, Command};
use std::sync::OnceLock;
use std::sync::mpsc;

use nix::fcntl::{FcntlArg, OFlag, fcntl};
use nix::libc;
use nix::sys::signal::{Signal, killpg};
use nix::sys::wait::{Id, WaitPidFlag, waitid};
use nix::unistd::Pid;
use tokio::io::unix::AsyncFd;
use tokio::sync::oneshot;

/// The descriptor number of the progress pipe in the child (`-progress pipe:3`).
pub(super) const PROGRESS_FD: RawFd = 3;

/// A spawn handed to the spawner thread.
struct SpawnRequest {
    command: Command,
    /// The child's end of the progress pipe: kept open until the fork is done, then closed in the worker.
    child_progress_end: Option<OwnedFd>,
    reply: oneshot::Sender<io::Result<Child>>,
}

/// The spawner thread's queue. The thread is started once and never ends: a child's parent-death signal fires when
/// the thread that forked it ends, so forking from a short-lived thread (a tokio blocking thread) would kill jobs.
static SPAWNER: OnceLock<Result<mpsc::Sender<SpawnRequest>, String>> = OnceLock::new();

fn spawner() -> io::Result<&'static mpsc::Sender<SpawnRequest>> {
    let spawner = SPAWNER.get_or_init(|| {
        let (sender, receiver) = mpsc::channel::<SpawnRequest>();
        std::thread::Builder::new()
            .name("dffmpeg-spawner".to_owned())
            .spawn(move || spawner_loop(receiver))
            .map(|_| sender)
            .map_err(|error| error.to_string())
    });
    spawner
        .as_ref()
        .map_err(|error| io::Error::other(format!("starting the spawner thread: {error}")))
}

fn spawner_loop(receiver: mpsc::Receiver<SpawnRequest>) {
    // The sender lives in a static, so this loop runs for the life of the process.
    for mut request in receiver {
        let result = request.command.spawn();
        drop(request.child_progress_end.take());
        if let Err(Ok(mut child)) = request.reply.send(result) {
            // The caller gave up waiting: nobody owns this process, so it must not run.
            let _ = killpg(Pid::from_raw(child.id() as i32), Signal::SIGKILL);
            let _ = child.wait();
        }
    }
}

/// Starts `command` on the spawner thread. `child_progress_end` is the write end of the progress pipe, already
/// registered with [`prepare_child`]; it is closed in the worker once the child has it.
pub(super) async fn spawn(
    command: Command,
    child_progress_end: Option<OwnedFd>,
) -> io::Result<Child> {
    let (reply, receive) = oneshot::channel();
    spawner()?
        .send(SpawnRequest {
            command,
            child_progress_end,
            reply,
        })
        .map_err(|_| io::Error::other("the spawner thread is gone"))?;
    receive
        .await
        .map_err(|_| io::Error::other("the spawner thread dropped the request"))?
}

/// A pipe for `-progress pipe:3`: (worker's read end, child's write end), both close-on-exec, the write end never
/// on 0–2 so the child's stdio setup cannot overwrite it.
pub(super) fn progress_pipe() -> io::Result<(OwnedFd, OwnedFd)> {
    let (read_end, write_end) = nix::unistd::pipe2(OFlag::O_CLOEXEC)?;
    if write_end.as_raw_fd() > 2 {
        return Ok((read_end, write_end));
    }
    let raised = fcntl(&write_end, FcntlArg::F_DUPFD_CLOEXEC(PROGRESS_FD))?;
    // SAFETY: F_DUPFD_CLOEXEC returned a new descriptor that nothing else owns.
    let raised = unsafe { OwnedFd::from_raw_fd(raised) };
    Ok((read_end, raised))
}

/// Registers the child setup that runs between fork and exec: the progress pipe on fd 3, close-on-exec on every
/// other descriptor above 2, default signal dispositions, an empty signal mask, and SIGKILL as the parent-death
/// signal. The caller sets the process group (`process_group(0)`) and stdio through the safe `Command` API.
pub(super) fn prepare_child(command: &mut Command, progress_write_fd: Option<RawFd>) {
    let parent = std::process::id() as libc::pid_t;
    let closure = move || -> io::Result<()> {
        // Only async-signal-safe calls from here on: no allocation, no locks (this runs in the forked child).
        // SAFETY (for the calls below): each is a plain system call on this process's own descriptors or signal
        // state, with pointers to locals that outlive the call.
        unsafe {
            let first_closed = match progress_write_fd {
                Some(fd) if fd == PROGRESS_FD => {
                    if libc::fcntl(PROGRESS_FD, libc::F_SETFD, 0) == -1 {
                        return Err(io::Error::last_os_error());
                    }
                    PROGRESS_FD + 1
                }
                Some(fd) => {
                    // dup2 leaves the new descriptor without close-on-exec.
                    if libc::dup2(fd, PROGRESS_FD) == -1 {
                        return Err(io::Error::last_os_error());
                    }
                    PROGRESS_FD + 1
                }
                None => PROGRESS_FD,
            };
            // Everything above is close-on-exec already (std and tokio open that way); this also covers descriptors
            // a library opened without it. Close-on-exec rather than close: std's exec-error pipe must survive.
            // Failure (a kernel before 5.11) leaves only the close-on-exec flags, which is acceptable.
            libc::syscall(
                libc::SYS_close_range,
                first_closed as libc::c_uint,
                libc::c_uint::MAX,
                libc::CLOSE_RANGE_CLOEXEC,
            );

            for signal in 1..=64 {
                if signal == libc::SIGKILL || signal == libc::SIGSTOP {
                    continue;
                }
                let mut action: libc::sigaction = std::mem::zeroed();
                action.sa_sigaction = libc::SIG_DFL;
                // Fails for numbers that are not signals or that glibc reserves; exec resets handlers anyway.
                libc::sigaction(signal, &action, std::ptr::null_mut());
            }
            let mut empty: libc::sigset_t = std::mem::zeroed();
            libc::sigemptyset(&mut empty);
            if libc::sigprocmask(libc::SIG_SETMASK, &empty, std::ptr::null_mut()) == -1 {
                return Err(io::Error::last_os_error());
            }

            if libc::prctl(
                libc::PR_SET_PDEATHSIG,
                libc::SIGKILL as libc::c_ulong,
                0,
                0,
                0,
            ) == -1
            {
                return Err(io::Error::last_os_error());
            }
            // The worker died before the death signal was armed: do not start an orphan.
            if libc::getppid() != parent {
                return Err(io::Error::from_raw_os_error(libc::ESRCH));
            }
        }
        Ok(())
    };
    // SAFETY: the closure only makes async-signal-safe system calls (see inside) and touches no shared state.
    unsafe {
        std::os::unix::process::CommandExt::pre_exec(command, closure);
    }
}

/// Tells when a child process has terminated, without reaping it, so its process group id stays reserved while the
/// rest of the group is killed.
#[derive(Debug)]
pub(super) struct ExitWatch {
    pid: u32,
    pidfd: Option<AsyncFd<OwnedFd>>,
}

impl ExitWatch {
    /// Opens a pidfd (Linux 5.3) for `pid`, a child of this process that has not been reaped; without one, the
    /// wait falls back to a blocking `waitid(WNOWAIT)` on a blocking thread.
    pub(super) fn new(pid: u32) -> ExitWatch {
        // SAFETY: pidfd_open takes two integers and returns a new descriptor or -1.
        let raw =
            unsafe { libc::syscall(libc::SYS_pidfd_open, pid as libc::pid_t, 0 as libc::c_uint) };
        let pidfd = if raw >= 0 {
            // SAFETY: the kernel just returned this descriptor to us; nothing else owns it.
            let fd = unsafe { OwnedFd::from_raw_fd(raw as RawFd) };
            // SAFETY: the AsyncFd owns the OwnedFd, so the descriptor stays open and the same until it is dropped.
            unsafe { AsyncFd::register_with_interest(fd, tokio::io::Interest::READABLE) }.ok()
        } else {
            None
        };
        ExitWatch { pid, pidfd }
    }

    /// Resolves once the process has terminated (it stays a zombie until reaped). Create the future once and poll
    /// it to completion: the fallback's blocking wait cannot be cancelled.
    pub(super) async fn exited(&self) {
        if let Some(pidfd) = &self.pidfd
            && pidfd.readable().await.is_ok()
        {
            return;
        }
        let pid = Pid::from_raw(self.pid as i32);
        let waited = tokio::task::spawn_blocking(move || {
            loop {
                match waitid(Id::Pid(pid), WaitPidFlag::WEXITED | WaitPidFlag::WNOWAIT) {
                    Err(nix::errno::Errno::EINTR) => continue,
                    other => return other,
                }
            }
        })
        .await;
        if let Ok(Err(error)) = waited {
            tracing::warn!(pid = self.pid, %error, "waiting for a job process failed");
        }
    }
}

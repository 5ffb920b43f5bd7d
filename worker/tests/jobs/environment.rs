//! What a job process inherits: the environment without `DFFMPEG_*`, stdin `/dev/null`, stdout and stderr pipes, fd 3
//! the progress pipe, nothing else; argv with `-progress pipe:3` first.

use std::collections::BTreeMap;
use std::fs::File;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::Duration;

use dffmpeg_worker::process::{JobCommand, JobSettings, RunningJob, spawn_job};
use protocol::ws::FinishedStatus;

use crate::{args, command, program, run_to_end};

/// Set by [`environment_has_no_dffmpeg_variables`] when it runs this test binary again.
const PROBE_SWITCH: &str = "DFFMPEG_TEST_ENV_PROBE";
const PROBE_TEST: &str = "environment::probe_environment_of_a_job";

/// Runs only inside the child test process started by [`environment_has_no_dffmpeg_variables`] (the tests cannot
/// set variables in their own process without `unsafe`); elsewhere it returns at once.
#[tokio::test]
async fn probe_environment_of_a_job() {
    if std::env::var_os(PROBE_SWITCH).is_none() {
        return;
    }
    assert!(
        std::env::var_os("DFFMPEG_HMAC_KEY").is_some(),
        "the worker itself has the key"
    );
    let mut job = start_retrying(command("env", program("env"), vec![])).await;
    let finished = run_to_end(&mut job, Duration::from_secs(10), "env").await;
    assert_eq!(finished.exit.status, FinishedStatus::Completed);
    let environment = finished.stdout_text();
    assert!(
        environment.lines().any(|line| line == "KEEP_ME=kept"),
        "other variables stay: {environment}"
    );
    assert!(
        environment.lines().any(|line| line.starts_with("PATH=")),
        "PATH stays: {environment}"
    );
    let leaked: Vec<&str> = environment
        .lines()
        .filter(|line| line.starts_with("DFFMPEG_"))
        .collect();
    assert!(
        leaked.is_empty(),
        "DFFMPEG_* variables reached the job: {leaked:?}"
    );
    println!("environment probe ran");
}

#[tokio::test]
async fn environment_has_no_dffmpeg_variables() {
    let test_binary = std::env::current_exe().unwrap();
    let output = tokio::time::timeout(
        Duration::from_secs(60),
        tokio::process::Command::new(&test_binary)
            .args(["--exact", PROBE_TEST, "--nocapture", "--test-threads=1"])
            .env(PROBE_SWITCH, "1")
            .env("DFFMPEG_HMAC_KEY", "secret-key")
            .env("DFFMPEG_WORKER_ID", "worker01")
            .env("KEEP_ME", "kept")
            .output(),
    )
    .await
    .expect("the environment probe finishes within 60 s")
    .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "the probe failed: {stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        stdout.contains("environment probe ran"),
        "the probe test did not run: {stdout}"
    );
}

/// Starts a job, retrying while the executable is busy (a script written by the test may still be open for writing
/// in a process another test is forking: ETXTBSY).
async fn start_retrying(job_command: JobCommand) -> RunningJob {
    for _ in 0..100 {
        match spawn_job(job_command.clone(), &JobSettings::default()).await {
            Ok(job) => return job,
            Err(error) if error.os_error().raw_os_error() == Some(nix::libc::ETXTBSY) => {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            Err(error) => panic!(
                "starting {} failed: {error}",
                job_command.executable.display()
            ),
        }
    }
    panic!(
        "{} stayed busy (ETXTBSY) for 2 s",
        job_command.executable.display()
    );
}

fn write_script(path: &Path, text: &str) {
    std::fs::write(path, text).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755)).unwrap();
}

#[tokio::test]
async fn descriptors_and_argv_of_an_ffmpeg_job() {
    let directory = tempfile::tempdir().unwrap();
    // A stand-in "ffmpeg" that shows its argv, writes a progress block to fd 3 and lists its descriptors.
    let fake = directory.path().join("ffmpeg");
    write_script(
        &fake,
        "#!/bin/sh\nprintf 'args:%s\\n' \"$*\"\nprintf 'frame=7\\nout_time_us=1000\\nprogress=end\\n' >&3\n\
         exec ls -l /proc/self/fd\n",
    );
    // A descriptor this process leaves inheritable: the job must not get it.
    let leaky = File::open(&fake).unwrap();
    nix::fcntl::fcntl(
        &leaky,
        nix::fcntl::FcntlArg::F_SETFD(nix::fcntl::FdFlag::empty()),
    )
    .unwrap();

    let mut job =
        start_retrying(command("ffmpeg", &fake, args(&["-i", "in.mkv", "out.mp4"]))).await;
    let finished = run_to_end(&mut job, Duration::from_secs(10), "fake ffmpeg").await;
    drop(leaky);
    assert_eq!(
        finished.exit.status,
        FinishedStatus::Completed,
        "stderr: {}",
        finished.stderr_text()
    );
    let stdout = finished.stdout_text();
    assert_eq!(
        stdout.lines().next(),
        Some("args:-progress pipe:3 -i in.mkv out.mp4"),
        "argv: {stdout}"
    );
    let descriptors: BTreeMap<u32, String> = stdout
        .lines()
        .filter_map(|line| {
            let (left, target) = line.split_once(" -> ")?;
            let fd = left.rsplit(' ').next()?.parse().ok()?;
            // ls's own handle on /proc/self/fd
            (!target.starts_with("/proc/")).then(|| (fd, target.to_owned()))
        })
        .collect();
    assert_eq!(
        descriptors.keys().copied().collect::<Vec<_>>(),
        [0, 1, 2, 3],
        "only stdio and fd 3: {stdout}"
    );
    assert_eq!(descriptors[&0], "/dev/null");
    for fd in [1, 2, 3] {
        assert!(
            descriptors[&fd].starts_with("pipe:"),
            "fd {fd} is a pipe: {stdout}"
        );
    }
    let (_, progress) = finished
        .progress
        .last()
        .expect("the block on fd 3 becomes progress");
    assert_eq!(
        (progress.frame, progress.out_time_us),
        (Some(7), Some(1000))
    );
}

#[tokio::test]
async fn no_fd_3_without_the_progress_pipe() {
    let mut job = start_retrying(command(
        "sh",
        program("sh"),
        args(&["-c", "exec ls /proc/self/fd"]),
    ))
    .await;
    let finished = run_to_end(&mut job, Duration::from_secs(10), "ls of descriptors").await;
    let text = finished.stdout_text();
    let descriptors: Vec<&str> = text.lines().collect();
    // 0, 1, 2 and ls's own directory handle (3).
    assert_eq!(
        descriptors,
        ["0", "1", "2", "3"],
        "nothing else is inherited"
    );
}

//! Black-box tests of the job-execution core with real processes: real ffmpeg on clips the tests generate, and a few
//! shell stand-ins where ffmpeg cannot show the property (environment, descriptors, huge stderr lines, signals).
//! Every wait is bounded and fails with a message naming what did not happen.

mod agent;
mod environment;
mod ffmpeg;
mod output;
mod signals;

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::time::Duration;

use dffmpeg_worker::process::{ExitInfo, JobCommand, JobEvent, JobSettings, RunningJob, spawn_job};
use dffmpeg_worker::progress::ProgressSnapshot;
use protocol::rest::OutputStream;
use protocol::ws::OutputChunk;
use tokio::time::{Instant, sleep_until};

/// Everything a job reported.
#[derive(Debug)]
pub struct Finished {
    pub exit: ExitInfo,
    /// Progress events with the time they arrived.
    pub progress: Vec<(Instant, ProgressSnapshot)>,
    pub chunks: Vec<OutputChunk>,
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
    pub dropped: u64,
}

impl Finished {
    pub fn stdout_text(&self) -> String {
        String::from_utf8_lossy(&self.stdout).into_owned()
    }

    pub fn stderr_text(&self) -> String {
        String::from_utf8_lossy(&self.stderr).into_owned()
    }
}

/// Finds a program on `PATH`; the tests need ffmpeg and ffprobe installed (`apt-get install ffmpeg`).
pub fn program(name: &str) -> PathBuf {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .map(|directory| directory.join(name))
        .find(|candidate| candidate.is_file())
        .unwrap_or_else(|| {
            panic!("{name} is not on PATH; these tests run real {name} (apt-get install ffmpeg)")
        })
}

pub fn args(arguments: &[&str]) -> Vec<OsString> {
    arguments.iter().map(OsString::from).collect()
}

/// A job of `binary_name` run by `executable`.
pub fn command(
    binary_name: &str,
    executable: impl Into<PathBuf>,
    arguments: Vec<OsString>,
) -> JobCommand {
    JobCommand {
        binary_name: binary_name.to_owned(),
        executable: executable.into(),
        arguments,
        working_directory: None,
        stdin: false,
    }
}

pub fn ffmpeg_command(arguments: &[&str]) -> JobCommand {
    command("ffmpeg", program("ffmpeg"), args(arguments))
}

pub async fn start(command: JobCommand, settings: &JobSettings) -> RunningJob {
    let what = command.executable.display().to_string();
    tokio::time::timeout(Duration::from_secs(10), spawn_job(command, settings))
        .await
        .unwrap_or_else(|_| panic!("starting {what} did not finish within 10 s"))
        .unwrap_or_else(|error| panic!("starting {what} failed: {error}"))
}

/// Drives a job to its end, taking output as the session would, within `limit`.
pub async fn run_to_end(job: &mut RunningJob, limit: Duration, what: &str) -> Finished {
    let output = job.output().clone();
    let deadline = Instant::now() + limit;
    let mut progress = Vec::new();
    let mut chunks = Vec::new();
    let mut dropped = 0;
    let take = |chunks: &mut Vec<OutputChunk>, dropped: &mut u64| {
        while let Some(batch) = output.take_batch() {
            *dropped += batch.dropped_bytes.unwrap_or(0);
            chunks.extend(batch.chunks);
        }
    };
    let exit = loop {
        tokio::select! {
            event = job.next_event() => match event {
                Some(JobEvent::Progress(snapshot)) => progress.push((Instant::now(), snapshot)),
                Some(JobEvent::Exited(exit)) => break exit,
                None => panic!("{what}: the events ended without an Exited event"),
            },
            () = output.ready() => take(&mut chunks, &mut dropped),
            () = sleep_until(deadline) => panic!("{what}: the job did not end within {limit:?}"),
        }
    };
    take(&mut chunks, &mut dropped);
    assert!(
        tokio::time::timeout(Duration::from_secs(5), job.next_event())
            .await
            .expect("events end after Exited")
            .is_none(),
        "{what}: an event came after Exited"
    );
    for (index, chunk) in chunks.iter().enumerate() {
        if dropped == 0 {
            assert_eq!(
                chunk.seq, index as u64,
                "{what}: seq counts chunks from 0 without gaps"
            );
        }
    }
    if dropped == 0 {
        assert_eq!(
            output.next_seq(),
            chunks.len() as u64,
            "{what}: output_seq_end is the number of chunks"
        );
    }
    let collect = |stream: OutputStream| -> Vec<u8> {
        chunks
            .iter()
            .filter(|chunk| chunk.stream == stream)
            .flat_map(|chunk| chunk.data.iter().copied())
            .collect()
    };
    let stdout = collect(OutputStream::Stdout);
    let stderr = collect(OutputStream::Stderr);
    Finished {
        exit,
        progress,
        chunks,
        stdout,
        stderr,
        dropped,
    }
}

/// Runs a helper program to completion (clip generation, ffprobe), failing the test on error.
pub async fn run_helper(program_path: &Path, arguments: &[&str]) -> std::process::Output {
    let what = format!("{} {}", program_path.display(), arguments.join(" "));
    let output = tokio::time::timeout(
        Duration::from_secs(60),
        tokio::process::Command::new(program_path)
            .args(arguments)
            .stdin(std::process::Stdio::null())
            .output(),
    )
    .await
    .unwrap_or_else(|_| panic!("{what} did not finish within 60 s"))
    .unwrap_or_else(|error| panic!("{what} could not run: {error}"));
    assert!(
        output.status.success(),
        "{what} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    output
}

/// A 2 s, 320x240, 25 fps MPEG-4 clip made with lavfi's testsrc.
pub async fn make_clip(directory: &Path) -> PathBuf {
    let clip = directory.join("clip.mkv");
    let clip_text = clip.to_str().expect("temp paths are UTF-8");
    run_helper(
        &program("ffmpeg"),
        &[
            "-nostdin",
            "-v",
            "error",
            "-f",
            "lavfi",
            "-i",
            "testsrc=duration=2:size=320x240:rate=25",
            "-c:v",
            "mpeg4",
            "-y",
            clip_text,
        ],
    )
    .await;
    clip
}

/// Whether `pid` no longer runs: it does not exist, or it is a zombie waiting for a reaper.
pub fn process_gone(pid: i32) -> bool {
    match nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), None) {
        Err(nix::errno::Errno::ESRCH) => true,
        _ => std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .map(|stat| {
                stat.rsplit_once(") ")
                    .is_some_and(|(_, rest)| rest.starts_with('Z'))
            })
            .unwrap_or(true),
    }
}

/// Waits until `pid` is gone, failing after `limit` with `what`.
pub async fn wait_gone(pid: i32, limit: Duration, what: &str) {
    let deadline = Instant::now() + limit;
    while !process_gone(pid) {
        assert!(
            Instant::now() < deadline,
            "{what}: process {pid} still runs after {limit:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

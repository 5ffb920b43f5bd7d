//! Cancel, kill and exit: whole process groups go, signals become 128 + N, leftovers are killed at the end.

use std::time::Duration;

use dffmpeg_worker::process::{JobEvent, JobSettings};
use protocol::ws::FinishedStatus;

use crate::{args, command, ffmpeg_command, process_gone, program, run_to_end, start, wait_gone};

#[tokio::test]
async fn cancel_stops_ffmpeg_and_reports_canceled() {
    let mut job = start(
        ffmpeg_command(&[
            "-nostdin",
            "-re",
            "-f",
            "lavfi",
            "-i",
            "testsrc=duration=600:size=160x120:rate=25",
            "-f",
            "null",
            "-",
        ]),
        &JobSettings::default(),
    )
    .await;
    let pid = job.pid() as i32;
    // Wait until it really runs: the first progress report.
    let first = tokio::time::timeout(Duration::from_secs(20), job.next_event())
        .await
        .expect("a running ffmpeg reports progress within 20 s");
    assert!(matches!(first, Some(JobEvent::Progress(_))), "{first:?}");
    let canceled_at = tokio::time::Instant::now();
    job.cancel();
    let finished = run_to_end(&mut job, Duration::from_secs(10), "canceled ffmpeg").await;
    assert_eq!(
        finished.exit.status,
        FinishedStatus::Canceled,
        "stderr: {}",
        finished.stderr_text()
    );
    assert!(
        canceled_at.elapsed() < Duration::from_secs(5),
        "ffmpeg stops on SIGTERM, before the kill grace"
    );
    assert!(
        process_gone(pid),
        "the process is gone once Exited is reported"
    );
}

#[tokio::test]
async fn cancel_kills_the_whole_group_after_the_grace() {
    // The shell and its child ignore SIGTERM, so only the SIGKILL after the grace ends them.
    let directory = tempfile::tempdir().unwrap();
    let pid_file = directory.path().join("child.pid");
    let script = format!(
        "trap '' TERM; sleep 1000 & echo $! > '{}'; wait",
        pid_file.display()
    );
    let settings = JobSettings {
        kill_grace: Duration::from_millis(300),
        ..JobSettings::default()
    };
    let mut job = start(
        command("sh", program("sh"), args(&["-c", &script])),
        &settings,
    )
    .await;
    let shell = job.pid() as i32;
    let child = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            let text = std::fs::read_to_string(&pid_file).unwrap_or_default();
            if let Some((pid, _)) = text.split_once('\n') {
                return pid
                    .parse::<i32>()
                    .expect("the shell writes its child's pid");
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("the shell writes its child's pid within 10 s");
    let canceled_at = tokio::time::Instant::now();
    job.cancel();
    let finished = run_to_end(&mut job, Duration::from_secs(10), "SIGTERM-proof group").await;
    assert!(
        canceled_at.elapsed() >= Duration::from_millis(300),
        "SIGKILL waits for the grace"
    );
    assert_eq!(
        (
            finished.exit.status,
            finished.exit.exit_code,
            finished.exit.signal
        ),
        (FinishedStatus::Canceled, 128 + 9, Some(9))
    );
    assert!(process_gone(shell));
    wait_gone(
        child,
        Duration::from_secs(5),
        "the shell's child, in the same group",
    )
    .await;
}

#[tokio::test]
async fn a_process_killed_by_a_signal_exits_with_128_plus_n() {
    let mut job = start(
        command("sh", program("sh"), args(&["-c", "kill -USR1 $$"])),
        &JobSettings::default(),
    )
    .await;
    let finished = run_to_end(&mut job, Duration::from_secs(10), "self-signalled shell").await;
    assert_eq!(
        (
            finished.exit.status,
            finished.exit.exit_code,
            finished.exit.signal
        ),
        (FinishedStatus::Failed, 128 + 10, Some(10))
    );

    let mut job = start(
        ffmpeg_command(&[
            "-nostdin",
            "-re",
            "-f",
            "lavfi",
            "-i",
            "testsrc=duration=600",
            "-f",
            "null",
            "-",
        ]),
        &JobSettings::default(),
    )
    .await;
    job.kill_now();
    let finished = run_to_end(&mut job, Duration::from_secs(10), "killed ffmpeg").await;
    assert_eq!(
        (
            finished.exit.status,
            finished.exit.exit_code,
            finished.exit.signal
        ),
        (FinishedStatus::Failed, 128 + 9, Some(9)),
        "kill_now is not a cancel"
    );
}

#[tokio::test]
async fn terminate_is_not_reported_as_canceled() {
    let mut job = start(
        command("sleep", program("sleep"), args(&["1000"])),
        &JobSettings::default(),
    )
    .await;
    job.terminate();
    let finished = run_to_end(&mut job, Duration::from_secs(10), "terminated sleep").await;
    assert_eq!(
        (
            finished.exit.status,
            finished.exit.exit_code,
            finished.exit.signal
        ),
        (FinishedStatus::Failed, 128 + 15, Some(15))
    );
}

#[tokio::test]
async fn leftovers_in_the_group_are_killed_when_the_process_exits() {
    // The shell exits at once; its background child keeps stdout open until the group is killed.
    let mut job = start(
        command("sh", program("sh"), args(&["-c", "sleep 1000 & echo $!"])),
        &JobSettings::default(),
    )
    .await;
    let finished = run_to_end(
        &mut job,
        Duration::from_secs(10),
        "shell with a leftover child",
    )
    .await;
    assert_eq!(finished.exit.status, FinishedStatus::Completed);
    assert!(
        finished.exit.output_complete,
        "the pipes reach EOF once the leftover is killed"
    );
    let child: i32 = finished
        .stdout_text()
        .trim()
        .parse()
        .expect("the shell prints its child's pid");
    wait_gone(child, Duration::from_secs(5), "the leftover child").await;
}

#[tokio::test]
async fn a_process_outside_the_group_holding_a_pipe_delays_the_end_by_the_drain_limit_only() {
    let settings = JobSettings {
        pipe_drain_limit: Duration::from_millis(300),
        ..JobSettings::default()
    };
    let directory = tempfile::tempdir().unwrap();
    let pid_file = directory.path().join("escaped.pid");
    // The shell ends only once its child has left the group (setsid) and written its pid.
    let script = format!(
        "setsid sh -c 'echo $$ > \"$0\"; exec sleep 1000' '{pid}' & while [ ! -s '{pid}' ]; do sleep 0.01; done; cat '{pid}'",
        pid = pid_file.display()
    );
    let mut job = start(
        command("sh", program("sh"), args(&["-c", &script])),
        &settings,
    )
    .await;
    let finished = run_to_end(
        &mut job,
        Duration::from_secs(10),
        "shell with an escaped child",
    )
    .await;
    let escaped: i32 = finished
        .stdout_text()
        .trim()
        .parse()
        .expect("the shell prints its child's pid");
    assert_eq!(finished.exit.status, FinishedStatus::Completed);
    assert!(
        !finished.exit.output_complete,
        "the escaped child still holds the pipes"
    );
    let _ = nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(escaped),
        nix::sys::signal::Signal::SIGKILL,
    );
    wait_gone(
        escaped,
        Duration::from_secs(5),
        "the escaped child after the test killed it",
    )
    .await;
}

#[tokio::test]
async fn dropping_every_handle_kills_the_job() {
    let job = start(
        command("sleep", program("sleep"), args(&["1000"])),
        &JobSettings::default(),
    )
    .await;
    let pid = job.pid() as i32;
    drop(job);
    wait_gone(pid, Duration::from_secs(5), "a job nobody holds").await;
}

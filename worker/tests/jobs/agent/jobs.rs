//! Jobs over the session: assign → accepted → logs → progress → finished → ack; the outbox across reconnects;
//! resumed output; cancels; the rejections and the path escape of cli.md §3.2; stdin.

use std::time::Duration;

use protocol::rest::OutputStream;
use protocol::ws::{
    Ack, AckResult, CancelJob, CanceledJob, CoordinatorMessage, FinishedStatus, HeldState,
    JobFinished, JobStdin, ResumedJob, WorkerMessage, close, reject_code,
};
use serde_bytes::ByteBuf;

use super::{
    FakeCoordinator, FakeSession, TestWorker, assign, assign_args, long_ffmpeg, new_job_id, summary,
};
use crate::{make_clip, process_gone, program, run_helper, wait_gone};

fn finished_of(message: WorkerMessage) -> JobFinished {
    match message {
        WorkerMessage::JobFinished(finished) => finished,
        other => panic!("expected job_finished, got {other:?}"),
    }
}

/// The output bytes of one stream in `frames`, with every chunk's seq.
fn output(frames: &[WorkerMessage], stream: OutputStream) -> (Vec<u8>, Vec<u64>) {
    let mut bytes = Vec::new();
    let mut seqs = Vec::new();
    for frame in frames {
        if let WorkerMessage::JobLogs(logs) = frame {
            for chunk in &logs.chunks {
                seqs.push(chunk.seq);
                if chunk.stream == stream {
                    bytes.extend_from_slice(&chunk.data);
                }
            }
        }
    }
    (bytes, seqs)
}

async fn accepted_pid(session: &mut FakeSession) -> i32 {
    let (accepted, skipped) = session
        .until("job_accepted", |m| {
            matches!(m, WorkerMessage::JobAccepted(_))
        })
        .await;
    let WorkerMessage::JobAccepted(accepted) = accepted else {
        unreachable!()
    };
    assert!(
        skipped
            .iter()
            .all(|m| matches!(m, WorkerMessage::Heartbeat(_))),
        "{}",
        summary(&skipped)
    );
    accepted.pid.expect("job_accepted carries the pid") as i32
}

#[tokio::test]
async fn a_transcode_runs_end_to_end_and_its_ack_empties_the_outbox() {
    let mut fake = FakeCoordinator::start().await;
    let worker = TestWorker::start(&fake, |_| {}).await;
    make_clip(&worker.media).await;
    let (mut session, _) = fake.connect(300).await;
    let job_id = new_job_id();
    session
        .send(CoordinatorMessage::AssignJob(assign(
            job_id,
            1,
            "ffmpeg",
            &[
                "-nostdin",
                "-y",
                "-i",
                "$Media/clip.mkv",
                "-c:v",
                "mpeg4",
                "$Media/out.mkv",
            ],
            &["Media"],
        )))
        .await;
    accepted_pid(&mut session).await;
    let (finished, frames) = session
        .until("job_finished", |m| {
            matches!(m, WorkerMessage::JobFinished(_))
        })
        .await;
    let finished = finished_of(finished);
    assert_eq!(
        finished.status,
        FinishedStatus::Completed,
        "frames: {}",
        summary(&frames)
    );
    assert_eq!(
        (finished.exit_code, finished.signal, finished.error.clone()),
        (Some(0), None, None)
    );
    let (stderr, seqs) = output(&frames, OutputStream::Stderr);
    let stderr = String::from_utf8_lossy(&stderr);
    assert!(stderr.contains("ffmpeg version"), "stderr: {stderr}");
    assert!(stderr.contains("Input #0"), "stderr: {stderr}");
    assert_eq!(
        seqs,
        (0..finished.output_seq_end).collect::<Vec<_>>(),
        "every chunk once, in order"
    );
    assert!(
        frames
            .iter()
            .any(|m| matches!(m, WorkerMessage::JobProgress(p) if p.job_id == job_id)),
        "progress was reported: {}",
        summary(&frames)
    );
    // The last job_logs comes before job_finished; nothing of this job follows it.
    let probe = run_helper(
        &program("ffprobe"),
        &[
            "-v",
            "error",
            "-show_entries",
            "format=duration",
            "-of",
            "csv=p=0",
            worker.media.join("out.mkv").to_str().unwrap(),
        ],
    )
    .await;
    assert!(
        String::from_utf8_lossy(&probe.stdout)
            .trim()
            .starts_with('2'),
        "the output is a 2 s clip"
    );

    // Held until the ack, then gone from heartbeats.
    let (heartbeat, _) = session
        .until("a heartbeat listing the finished job", |m| {
            matches!(m, WorkerMessage::Heartbeat(_))
        })
        .await;
    let WorkerMessage::Heartbeat(heartbeat) = heartbeat else {
        unreachable!()
    };
    assert_eq!(heartbeat.jobs.len(), 1);
    session
        .send(CoordinatorMessage::Ack(Ack {
            job_id,
            attempt: 1,
            result: AckResult::Accepted,
        }))
        .await;
    session
        .until(
            "a heartbeat without the acknowledged job",
            |m| matches!(m, WorkerMessage::Heartbeat(h) if h.jobs.is_empty()),
        )
        .await;
}

#[tokio::test]
async fn an_unacknowledged_report_is_resent_once_per_connection_after_its_output() {
    let mut fake = FakeCoordinator::start().await;
    let _worker = TestWorker::start(&fake, |_| {}).await;
    let (mut session, _) = fake.connect(200).await;
    let job_id = new_job_id();
    session
        .send(CoordinatorMessage::AssignJob(assign(
            job_id,
            2,
            "ffmpeg",
            &["-nostdin", "-version"],
            &[],
        )))
        .await;
    let (first, frames) = session
        .until("job_finished", |m| {
            matches!(m, WorkerMessage::JobFinished(_))
        })
        .await;
    let first = finished_of(first);
    let (first_stdout, _) = output(&frames, OutputStream::Stdout);
    assert!(String::from_utf8_lossy(&first_stdout).starts_with("ffmpeg version"));
    assert!(first.output_seq_end > 0);
    // No ack: the report stays in the outbox through two reconnects.
    for round in 0..2 {
        session.close(1011).await;
        let mut next = fake.next_session(&format!("reconnection {round}")).await;
        let hello = next.hello().await;
        assert_eq!(hello.jobs.len(), 1);
        assert_eq!(
            (
                hello.jobs[0].job_id,
                hello.jobs[0].attempt,
                hello.jobs[0].state
            ),
            (job_id, 2, HeldState::Finished)
        );
        // Resume from seq 0: the kept output comes again, then the report, exactly once.
        next.welcome(
            200,
            1000,
            vec![ResumedJob {
                job_id,
                attempt: 2,
                next_output_seq: 0,
            }],
            vec![],
        )
        .await;
        let (resent, frames) = next
            .until("the resent job_finished", |m| {
                matches!(m, WorkerMessage::JobFinished(_))
            })
            .await;
        assert_eq!(finished_of(resent), first);
        let (stdout, seqs) = output(&frames, OutputStream::Stdout);
        assert_eq!(
            stdout, first_stdout,
            "the output is resent from next_output_seq"
        );
        assert_eq!(seqs, (0..first.output_seq_end).collect::<Vec<_>>());
        // Two heartbeats later, still no second copy on this connection.
        let mut heartbeats = 0;
        while heartbeats < 2 {
            match next.recv("heartbeats after the resend").await {
                WorkerMessage::Heartbeat(heartbeat) => {
                    heartbeats += 1;
                    assert_eq!(heartbeat.jobs.len(), 1, "held until the ack");
                }
                other => panic!("nothing but heartbeats after the resend, got {other:?}"),
            }
        }
        session = next;
    }
    session
        .send(CoordinatorMessage::Ack(Ack {
            job_id,
            attempt: 2,
            result: AckResult::Stale,
        }))
        .await;
    session
        .until(
            "a heartbeat without the job",
            |m| matches!(m, WorkerMessage::Heartbeat(h) if h.jobs.is_empty()),
        )
        .await;
}

#[tokio::test]
async fn welcome_cancel_kills_a_held_job_and_drops_its_reports() {
    let mut fake = FakeCoordinator::start().await;
    let worker = TestWorker::start(&fake, |_| {}).await;
    let (mut session, _) = fake.connect(300).await;
    let job_id = new_job_id();
    session
        .send(CoordinatorMessage::AssignJob(assign_args(
            job_id,
            1,
            long_ffmpeg(60),
        )))
        .await;
    let pid = accepted_pid(&mut session).await;
    session.close(close::GOING_AWAY).await;
    let mut next = fake.next_session("reconnection").await;
    let hello = next.hello().await;
    assert_eq!(hello.jobs.len(), 1);
    assert_eq!(hello.jobs[0].state, HeldState::Running);
    next.welcome(
        300,
        1500,
        vec![],
        vec![CanceledJob {
            job_id,
            attempt: 1,
            reason: "stale_attempt".into(),
        }],
    )
    .await;
    wait_gone(pid, Duration::from_secs(10), "a job canceled by welcome").await;
    // Nothing about it ever comes: two heartbeats without it and no report.
    let mut heartbeats = 0;
    while heartbeats < 2 {
        match next.recv("heartbeats after welcome.cancel").await {
            WorkerMessage::Heartbeat(heartbeat) => {
                heartbeats += 1;
                assert!(heartbeat.jobs.is_empty());
            }
            WorkerMessage::JobLogs(_) => {}
            other => panic!("no report for a canceled held job, got {other:?}"),
        }
    }
    assert!(!worker.has_exited());
}

#[tokio::test]
async fn cancel_requested_reports_canceled_and_the_group_is_gone() {
    let mut fake = FakeCoordinator::start().await;
    let _worker = TestWorker::start(&fake, |_| {}).await;
    let (mut session, _) = fake.connect(300).await;
    let job_id = new_job_id();
    session
        .send(CoordinatorMessage::AssignJob(assign_args(
            job_id,
            1,
            long_ffmpeg(60),
        )))
        .await;
    let pid = accepted_pid(&mut session).await;
    session
        .until("first progress", |m| {
            matches!(m, WorkerMessage::JobProgress(_))
        })
        .await;
    // Unknown jobs and attempts are ignored.
    for (id, attempt) in [(new_job_id(), 1), (job_id, 2)] {
        session
            .send(CoordinatorMessage::CancelJob(CancelJob {
                job_id: id,
                attempt,
                reason: "requested".into(),
            }))
            .await;
    }
    session
        .send(CoordinatorMessage::CancelJob(CancelJob {
            job_id,
            attempt: 1,
            reason: "requested".into(),
        }))
        .await;
    let (finished, _) = session
        .until("job_finished canceled", |m| {
            matches!(m, WorkerMessage::JobFinished(_))
        })
        .await;
    let finished = finished_of(finished);
    assert_eq!(finished.status, FinishedStatus::Canceled);
    assert_eq!(finished.job_id, job_id);
    assert!(
        process_gone(pid),
        "the process group is gone once job_finished is sent"
    );
}

#[tokio::test]
async fn cancel_for_a_given_up_attempt_reports_nothing() {
    let mut fake = FakeCoordinator::start().await;
    let _worker = TestWorker::start(&fake, |_| {}).await;
    let (mut session, _) = fake.connect(200).await;
    let job_id = new_job_id();
    session
        .send(CoordinatorMessage::AssignJob(assign_args(
            job_id,
            1,
            long_ffmpeg(60),
        )))
        .await;
    let pid = accepted_pid(&mut session).await;
    session
        .send(CoordinatorMessage::CancelJob(CancelJob {
            job_id,
            attempt: 1,
            reason: "job_silent".into(),
        }))
        .await;
    wait_gone(pid, Duration::from_secs(10), "a job canceled as silent").await;
    session
        .until(
            "a heartbeat without the job",
            |m| matches!(m, WorkerMessage::Heartbeat(h) if h.jobs.is_empty()),
        )
        .await;
    let mut heartbeats = 0;
    while heartbeats < 2 {
        match session.recv("heartbeats").await {
            WorkerMessage::Heartbeat(_) => heartbeats += 1,
            WorkerMessage::JobLogs(_) | WorkerMessage::JobProgress(_) => {}
            other => panic!("nothing reported for a given-up attempt, got {other:?}"),
        }
    }
}

#[tokio::test]
async fn a_new_attempt_stops_the_earlier_one_here() {
    let mut fake = FakeCoordinator::start().await;
    let _worker = TestWorker::start(&fake, |_| {}).await;
    let (mut session, _) = fake.connect(300).await;
    let job_id = new_job_id();
    session
        .send(CoordinatorMessage::AssignJob(assign_args(
            job_id,
            1,
            long_ffmpeg(60),
        )))
        .await;
    let first_pid = accepted_pid(&mut session).await;
    session
        .send(CoordinatorMessage::AssignJob(assign_args(
            job_id,
            2,
            long_ffmpeg(60),
        )))
        .await;
    let (accepted, _) = session
        .until(
            "job_accepted of attempt 2",
            |m| matches!(m, WorkerMessage::JobAccepted(a) if a.attempt == 2),
        )
        .await;
    wait_gone(first_pid, Duration::from_secs(10), "the earlier attempt").await;
    let (heartbeat, skipped) = session
        .until("a heartbeat", |m| matches!(m, WorkerMessage::Heartbeat(_)))
        .await;
    assert!(
        !skipped
            .iter()
            .any(|m| matches!(m, WorkerMessage::JobFinished(f) if f.attempt == 1)),
        "no report for the earlier attempt"
    );
    let WorkerMessage::Heartbeat(heartbeat) = heartbeat else {
        unreachable!()
    };
    assert_eq!(heartbeat.jobs.len(), 1);
    assert_eq!(heartbeat.jobs[0].attempt, 2);
    drop(accepted);
}

/// Sends an `assign_job` and returns the message of its `job_rejected`, which must have `code`.
async fn expect_rejection(
    session: &mut FakeSession,
    message: CoordinatorMessage,
    code: &str,
) -> String {
    let CoordinatorMessage::AssignJob(job) = &message else {
        unreachable!()
    };
    let job_id = job.job_id;
    session.send(message).await;
    let (rejected, skipped) = session
        .until(&format!("job_rejected {code}"), |m| {
            matches!(m, WorkerMessage::JobRejected(r) if r.job_id == job_id)
                || matches!(m, WorkerMessage::JobAccepted(a) if a.job_id == job_id)
        })
        .await;
    let WorkerMessage::JobRejected(rejected) = rejected else {
        panic!(
            "expected a rejection {code}, got {rejected:?} after {}",
            summary(&skipped)
        )
    };
    assert_eq!(rejected.code, code, "{}", rejected.message);
    rejected.message
}

#[tokio::test]
async fn rejections_carry_the_exact_codes() {
    let mut fake = FakeCoordinator::start().await;
    // An executable whose interpreter does not exist: usable by the checks, refused by the kernel at exec.
    let scripts = tempfile::tempdir().unwrap();
    let broken = scripts.path().join("broken");
    std::fs::write(&broken, "#!/nonexistent/interpreter\n").unwrap();
    std::fs::set_permissions(&broken, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let worker = TestWorker::start(&fake, |config| {
        config.max_concurrent_jobs = 1;
        config.binaries.insert("broken".into(), broken.clone());
    })
    .await;
    std::fs::write(worker.media.join("file"), b"x").unwrap();
    let (mut session, _) = fake.connect(500).await;

    let message = expect_rejection(
        &mut session,
        CoordinatorMessage::AssignJob(assign(new_job_id(), 1, "x264", &["-h"], &[])),
        reject_code::BINARY_UNAVAILABLE,
    )
    .await;
    assert_eq!(message, "binary x264 is not available on this worker");
    let message = expect_rejection(
        &mut session,
        CoordinatorMessage::AssignJob(assign(
            new_job_id(),
            1,
            "ffmpeg",
            &["-i", "$Nope/a.mkv"],
            &["Media", "Nope"],
        )),
        reject_code::PATH_VARIABLE_UNAVAILABLE,
    )
    .await;
    assert_eq!(message, "path variables not available on this worker: Nope");
    let mut in_missing = assign(new_job_id(), 1, "ffmpeg", &["-version"], &["Media"]);
    in_missing.working_directory = Some("$Media/missing".into());
    expect_rejection(
        &mut session,
        CoordinatorMessage::AssignJob(in_missing),
        reject_code::WORKING_DIRECTORY_UNAVAILABLE,
    )
    .await;
    let mut in_file = assign(new_job_id(), 1, "ffmpeg", &["-version"], &["Media"]);
    in_file.working_directory = Some("$Media/file".into());
    expect_rejection(
        &mut session,
        CoordinatorMessage::AssignJob(in_file),
        reject_code::WORKING_DIRECTORY_UNAVAILABLE,
    )
    .await;

    let message = expect_rejection(
        &mut session,
        CoordinatorMessage::AssignJob(assign(new_job_id(), 1, "broken", &[], &[])),
        reject_code::SPAWN_FAILED,
    )
    .await;
    assert_eq!(message, "No such file or directory (os error 2)");

    // One slot: a second job while the first runs.
    let running = new_job_id();
    session
        .send(CoordinatorMessage::AssignJob(assign_args(
            running,
            1,
            long_ffmpeg(60),
        )))
        .await;
    accepted_pid(&mut session).await;
    let message = expect_rejection(
        &mut session,
        CoordinatorMessage::AssignJob(assign(new_job_id(), 1, "ffmpeg", &["-version"], &[])),
        reject_code::NO_CAPACITY,
    )
    .await;
    assert_eq!(message, "all 1 slots of this worker are busy");

    // Draining comes first, even before capacity.
    session
        .send(CoordinatorMessage::Drain(protocol::ws::DrainRequest {
            reason: "admin".into(),
        }))
        .await;
    expect_rejection(
        &mut session,
        CoordinatorMessage::AssignJob(assign(new_job_id(), 1, "ffmpeg", &["-version"], &[])),
        reject_code::DRAINING,
    )
    .await;
}

#[tokio::test]
async fn a_path_escape_fails_the_job_without_running_it() {
    let mut fake = FakeCoordinator::start().await;
    let worker = TestWorker::start(&fake, |_| {}).await;
    let (mut session, _) = fake.connect(500).await;
    let outside = worker.dir.path().join("escaped.mkv");
    let job_id = new_job_id();
    session
        .send(CoordinatorMessage::AssignJob(assign(
            job_id,
            3,
            "ffmpeg",
            &[
                "-f",
                "lavfi",
                "-i",
                "testsrc=duration=1",
                "$Media/../escaped.mkv",
            ],
            &["Media"],
        )))
        .await;
    let (finished, skipped) = session
        .until("job_finished path_escape", |m| {
            matches!(
                m,
                WorkerMessage::JobFinished(_)
                    | WorkerMessage::JobAccepted(_)
                    | WorkerMessage::JobRejected(_)
            )
        })
        .await;
    let finished = finished_of(finished);
    assert_eq!(
        finished.status,
        FinishedStatus::Failed,
        "{}",
        summary(&skipped)
    );
    assert_eq!(
        (finished.exit_code, finished.signal, finished.output_seq_end),
        (None, None, 0)
    );
    let error = finished.error.expect("an error");
    assert_eq!(error.code, "path_escape");
    assert!(
        error.message.contains("$Media/../escaped.mkv"),
        "{}",
        error.message
    );
    assert!(!outside.exists(), "nothing ran");
    // Kept in the outbox until its ack, like any report.
    session
        .send(CoordinatorMessage::Ack(Ack {
            job_id,
            attempt: 3,
            result: AckResult::Accepted,
        }))
        .await;
    session
        .until(
            "a heartbeat without the job",
            |m| matches!(m, WorkerMessage::Heartbeat(h) if h.jobs.is_empty()),
        )
        .await;
}

#[tokio::test]
async fn stdin_frames_are_written_in_order_and_eof_closes_the_pipe() {
    let mut fake = FakeCoordinator::start().await;
    let _worker = TestWorker::start(&fake, |_| {}).await;
    let (mut session, _) = fake.connect(500).await;
    let job_id = new_job_id();
    let mut job = assign(job_id, 1, "cat", &[], &[]);
    job.stdin = true;
    session.send(CoordinatorMessage::AssignJob(job)).await;
    accepted_pid(&mut session).await;
    let frames = [
        (0, &b"hello "[..], false),
        (3, &b"lo world"[..], false),
        (11, &b"\n"[..], true),
    ];
    for (offset, data, eof) in frames {
        session
            .send(CoordinatorMessage::JobStdin(JobStdin {
                job_id,
                attempt: 1,
                offset,
                data: ByteBuf::from(data.to_vec()),
                eof,
            }))
            .await;
    }
    let (finished, frames) = session
        .until("job_finished of cat", |m| {
            matches!(m, WorkerMessage::JobFinished(_))
        })
        .await;
    assert_eq!(finished_of(finished).status, FinishedStatus::Completed);
    let (stdout, _) = output(&frames, OutputStream::Stdout);
    assert_eq!(
        stdout, b"hello world\n",
        "overlapping bytes are written once"
    );
    let last_written = frames
        .iter()
        .filter_map(|m| match m {
            WorkerMessage::StdinWritten(written) => Some((written.offset, written.closed)),
            _ => None,
        })
        .next_back();
    assert_eq!(last_written, Some((12, true)));
}

#[tokio::test]
async fn a_job_that_ends_while_disconnected_is_reported_after_the_reconnect_with_dropped_bytes() {
    let mut fake = FakeCoordinator::start().await;
    let _worker = TestWorker::start(&fake, |config| config.output.buffer_bytes = 64 << 10).await;
    let (mut session, _) = fake.connect(300).await;
    let job_id = new_job_id();
    // About 11 MiB of raw video on stdout, far more than the 64 KiB buffer.
    session
        .send(CoordinatorMessage::AssignJob(assign(
            job_id,
            1,
            "ffmpeg",
            &[
                "-nostdin",
                "-f",
                "lavfi",
                "-i",
                "testsrc=duration=2:size=320x240:rate=25",
                "-f",
                "rawvideo",
                "-pix_fmt",
                "rgb24",
                "-",
            ],
            &[],
        )))
        .await;
    // Disconnected before the process is even accepted: nobody reads its output until it has ended.
    fake.refuse_next(usize::MAX);
    let pid = accepted_pid(&mut session).await;
    session.close(1011).await;
    drop(session);
    wait_gone(
        pid,
        Duration::from_secs(20),
        "a job writing while disconnected",
    )
    .await;
    fake.refuse_next(0);
    let mut next = fake.next_session("reconnection after the job ended").await;
    let hello = next.hello().await;
    assert_eq!(hello.jobs.len(), 1);
    assert_eq!(hello.jobs[0].state, HeldState::Finished);
    next.welcome(
        300,
        1500,
        vec![ResumedJob {
            job_id,
            attempt: 1,
            next_output_seq: 0,
        }],
        vec![],
    )
    .await;
    let (finished, frames) = next
        .until("the job_finished after the reconnect", |m| {
            matches!(m, WorkerMessage::JobFinished(_))
        })
        .await;
    let finished = finished_of(finished);
    assert_eq!(finished.status, FinishedStatus::Completed);
    let dropped: u64 = frames
        .iter()
        .filter_map(|m| match m {
            WorkerMessage::JobLogs(logs) => logs.dropped_bytes,
            _ => None,
        })
        .sum();
    // 11 MiB written; at most 4 MiB queued before the disconnect, 1 MiB of sent history and 64 KiB kept.
    assert!(
        dropped > 4 << 20,
        "the oldest output was dropped: {dropped} bytes"
    );
    let (stdout, seqs) = output(&frames, OutputStream::Stdout);
    assert!(
        stdout.len() <= (1 << 20) + (64 << 10),
        "at most the sent history and the buffer are kept: {}",
        stdout.len()
    );
    assert_eq!(
        seqs.last().map(|seq| seq + 1),
        Some(finished.output_seq_end),
        "the newest chunks are kept"
    );
}

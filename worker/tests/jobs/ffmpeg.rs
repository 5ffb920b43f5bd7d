//! Real ffmpeg jobs: a transcode, progress with a known duration, a failing job, and spawn failures.

use std::time::Duration;

use dffmpeg_worker::process::{JobSettings, ProgressSource, SpawnError, spawn_job};
use dffmpeg_worker::progress::ProgressMode;
use protocol::ws::FinishedStatus;

use crate::{command, ffmpeg_command, make_clip, program, run_helper, run_to_end, start};

#[tokio::test]
async fn a_transcode_completes_and_its_output_probes() {
    let directory = tempfile::tempdir().unwrap();
    let clip = make_clip(directory.path()).await;
    let out = directory.path().join("out.mp4");
    let mut job = start(
        ffmpeg_command(&[
            "-nostdin",
            "-i",
            clip.to_str().unwrap(),
            "-c:v",
            "mpeg4",
            "-y",
            out.to_str().unwrap(),
        ]),
        &JobSettings::default(),
    )
    .await;
    assert_eq!(job.progress_source(), ProgressSource::Pipe);
    let finished = run_to_end(&mut job, Duration::from_secs(60), "transcode").await;
    assert_eq!(
        (
            finished.exit.status,
            finished.exit.exit_code,
            finished.exit.signal
        ),
        (FinishedStatus::Completed, 0, None),
        "stderr: {}",
        finished.stderr_text()
    );
    assert!(finished.exit.output_complete);
    assert!(
        finished.stderr_text().contains("Input #0"),
        "ffmpeg's stderr arrives unchanged"
    );
    assert!(
        !finished.stderr_text().contains("progress=continue"),
        "progress goes to fd 3, not stderr"
    );
    let (_, last) = finished
        .progress
        .last()
        .expect("at least the final progress is reported");
    assert_eq!(
        last.frame,
        Some(50),
        "the final block counts all 50 frames: {last:?}"
    );
    assert_eq!(
        last.duration_us,
        Some(2_000_000),
        "D comes from input #0's Duration line"
    );

    let probe = run_helper(
        &program("ffprobe"),
        &[
            "-v",
            "error",
            "-show_entries",
            "format=duration:stream=codec_name,width,height",
            "-of",
            "default=noprint_wrappers=1",
            out.to_str().unwrap(),
        ],
    )
    .await;
    let probe = String::from_utf8_lossy(&probe.stdout);
    assert!(
        probe.contains("codec_name=mpeg4") && probe.contains("width=320"),
        "ffprobe says: {probe}"
    );
    let duration: f64 = probe
        .lines()
        .find_map(|line| line.strip_prefix("duration="))
        .and_then(|value| value.parse().ok())
        .unwrap_or_else(|| panic!("ffprobe printed no duration: {probe}"));
    assert!(
        (1.9..=2.1).contains(&duration),
        "the output lasts about 2 s, not {duration}"
    );
}

#[tokio::test]
async fn a_realtime_job_reports_increasing_progress_with_a_known_duration() {
    let directory = tempfile::tempdir().unwrap();
    let clip = make_clip(directory.path()).await;
    let started = tokio::time::Instant::now();
    let mut job = start(
        ffmpeg_command(&[
            "-nostdin",
            "-re",
            "-i",
            clip.to_str().unwrap(),
            "-f",
            "null",
            "-",
        ]),
        &JobSettings::default(),
    )
    .await;
    let finished = run_to_end(&mut job, Duration::from_secs(30), "-re job").await;
    assert_eq!(
        finished.exit.status,
        FinishedStatus::Completed,
        "stderr: {}",
        finished.stderr_text()
    );
    let progress = &finished.progress;
    assert!(
        progress.len() >= 3,
        "a 2 s realtime job reports progress several times: {progress:?}"
    );
    let times: Vec<i64> = progress
        .iter()
        .filter_map(|(_, snapshot)| snapshot.out_time_us)
        .collect();
    assert_eq!(
        times.len(),
        progress.len(),
        "every report has out_time_us: {progress:?}"
    );
    assert!(
        times.windows(2).all(|pair| pair[0] <= pair[1]),
        "out_time never goes back: {times:?}"
    );
    assert!(
        times.first() < times.last(),
        "out_time increases: {times:?}"
    );
    for (_, snapshot) in progress {
        let duration = snapshot
            .duration_us
            .expect("D is known from the Duration line");
        assert_eq!(duration, 2_000_000);
        let percent = snapshot.out_time_us.unwrap_or(0) as f64 * 100.0 / duration as f64;
        assert!(
            (0.0..=105.0).contains(&percent),
            "a percent can be computed: {percent}"
        );
    }
    // At most one report per 500 ms, plus the final flush (the unsent change). Counted over the whole run rather
    // than judged per pair of arrivals: a loaded machine delays one delivery and shortens the next gap.
    let ran = started.elapsed();
    let allowed = (ran.as_millis() / 500) as usize + 2;
    assert!(
        progress.len() <= allowed,
        "{} reports in {ran:?}: more than one per 500 ms",
        progress.len()
    );
    let last = &progress.last().unwrap().1;
    assert_eq!(
        last.frame,
        Some(50),
        "the final report is the end state: {last:?}"
    );
}

#[tokio::test]
async fn a_failing_ffmpeg_reports_its_exit_code() {
    let directory = tempfile::tempdir().unwrap();
    let missing = directory.path().join("missing.mkv");
    let out = directory.path().join("out.mp4");
    let mut job = start(
        ffmpeg_command(&[
            "-nostdin",
            "-i",
            missing.to_str().unwrap(),
            out.to_str().unwrap(),
        ]),
        &JobSettings::default(),
    )
    .await;
    let finished = run_to_end(&mut job, Duration::from_secs(30), "failing ffmpeg").await;
    assert_eq!(
        (
            finished.exit.status,
            finished.exit.exit_code,
            finished.exit.signal
        ),
        (FinishedStatus::Failed, 1, None)
    );
    assert!(
        finished.stderr_text().contains("No such file or directory"),
        "stderr: {}",
        finished.stderr_text()
    );
}

#[tokio::test]
async fn stats_lines_are_the_progress_when_the_job_has_its_own_progress_option() {
    let directory = tempfile::tempdir().unwrap();
    let clip = make_clip(directory.path()).await;
    let own_progress = directory.path().join("progress.txt");
    let mut job = start(
        ffmpeg_command(&[
            "-nostdin",
            "-progress",
            own_progress.to_str().unwrap(),
            "-i",
            clip.to_str().unwrap(),
            "-f",
            "null",
            "-",
        ]),
        &JobSettings::default(),
    )
    .await;
    assert_eq!(job.progress_source(), ProgressSource::Stderr);
    let finished = run_to_end(
        &mut job,
        Duration::from_secs(30),
        "job with its own -progress",
    )
    .await;
    assert_eq!(
        finished.exit.status,
        FinishedStatus::Completed,
        "stderr: {}",
        finished.stderr_text()
    );
    let (_, last) = finished.progress.last().expect("stats lines give progress");
    assert_eq!(
        (last.frame, last.duration_us),
        (Some(50), Some(2_000_000)),
        "{last:?}"
    );
    assert!(
        std::fs::read_to_string(&own_progress)
            .unwrap()
            .contains("progress=end"),
        "the job's own -progress works"
    );
}

#[tokio::test]
async fn no_progress_in_off_mode_or_for_other_binaries() {
    let directory = tempfile::tempdir().unwrap();
    let clip = make_clip(directory.path()).await;
    let settings = JobSettings {
        progress: ProgressMode::Off,
        ..JobSettings::default()
    };
    let mut job = start(
        ffmpeg_command(&["-nostdin", "-i", clip.to_str().unwrap(), "-f", "null", "-"]),
        &settings,
    )
    .await;
    let finished = run_to_end(&mut job, Duration::from_secs(30), "progress off").await;
    assert_eq!(finished.exit.status, FinishedStatus::Completed);
    assert!(finished.progress.is_empty(), "{:?}", finished.progress);

    let ffprobe = command(
        "ffprobe",
        program("ffprobe"),
        crate::args(&[
            "-v",
            "error",
            "-show_entries",
            "format=duration",
            "-of",
            "json",
            clip.to_str().unwrap(),
        ]),
    );
    let mut job = start(ffprobe, &JobSettings::default()).await;
    assert_eq!(job.progress_source(), ProgressSource::Off);
    let finished = run_to_end(&mut job, Duration::from_secs(30), "ffprobe").await;
    assert_eq!(finished.exit.status, FinishedStatus::Completed);
    assert!(finished.progress.is_empty());
    assert!(
        finished.stdout_text().contains("\"duration\""),
        "stdout: {}",
        finished.stdout_text()
    );
}

#[tokio::test]
async fn a_missing_executable_is_a_spawn_failure() {
    let job = spawn_job(
        command("ffmpeg", "/nonexistent/ffmpeg", vec![]),
        &JobSettings::default(),
    )
    .await;
    let error = job.expect_err("a missing executable does not start");
    assert!(matches!(error, SpawnError::Start { .. }), "{error:?}");
    assert_eq!(error.code(), "spawn_failed");
    assert_eq!(error.os_error().kind(), std::io::ErrorKind::NotFound);
}

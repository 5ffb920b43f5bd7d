//! Output arrives complete and unaltered: megabytes of media on stdout, a 1 MiB stderr line without a newline,
//! stdin and working directory plumbing.

use std::time::Duration;

use dffmpeg_worker::output::OutputConfig;
use dffmpeg_worker::process::JobSettings;
use protocol::rest::OutputStream;
use protocol::ws::FinishedStatus;
use tokio::io::AsyncWriteExt;

use crate::{args, command, ffmpeg_command, program, run_helper, run_to_end, start};

const RAW_VIDEO: &[&str] = &[
    "-nostdin",
    "-v",
    "error",
    "-f",
    "lavfi",
    "-i",
    "testsrc=duration=4:size=320x240:rate=25",
    "-f",
    "rawvideo",
    "-pix_fmt",
    "yuv420p",
];

#[tokio::test]
async fn megabytes_on_stdout_arrive_byte_for_byte() {
    let directory = tempfile::tempdir().unwrap();
    let reference = directory.path().join("reference.yuv");
    let mut reference_arguments = RAW_VIDEO.to_vec();
    reference_arguments.push(reference.to_str().unwrap());
    run_helper(&program("ffmpeg"), &reference_arguments).await;
    let expected = std::fs::read(&reference).unwrap();
    assert_eq!(
        expected.len(),
        100 * 320 * 240 * 3 / 2,
        "100 frames of yuv420p"
    );

    let mut job_arguments = RAW_VIDEO.to_vec();
    job_arguments.push("-");
    let mut job = start(ffmpeg_command(&job_arguments), &JobSettings::default()).await;
    let finished = run_to_end(&mut job, Duration::from_secs(60), "rawvideo to stdout").await;
    assert_eq!(
        finished.exit.status,
        FinishedStatus::Completed,
        "stderr: {}",
        finished.stderr_text()
    );
    assert_eq!(
        finished.dropped, 0,
        "a consumer that keeps up loses nothing"
    );
    assert_eq!(
        finished.stdout.len(),
        expected.len(),
        "every byte of stdout arrives"
    );
    assert!(finished.stdout == expected, "stdout arrives unaltered");
    let max = OutputConfig::default().max_chunk_bytes;
    for chunk in finished
        .chunks
        .iter()
        .filter(|chunk| chunk.stream == OutputStream::Stdout)
    {
        assert!(
            chunk.data.len() <= max,
            "chunk {} has {} bytes",
            chunk.seq,
            chunk.data.len()
        );
    }
}

#[tokio::test]
async fn a_one_mebibyte_stderr_line_without_newline_arrives_whole() {
    const SIZE: usize = 1 << 20;
    let script = format!("head -c {SIZE} /dev/zero | tr '\\0' x >&2; printf done");
    let mut job = start(
        command("sh", program("sh"), args(&["-c", &script])),
        &JobSettings::default(),
    )
    .await;
    let finished = run_to_end(&mut job, Duration::from_secs(30), "1 MiB stderr line").await;
    assert_eq!(finished.exit.status, FinishedStatus::Completed);
    assert_eq!(
        finished.stderr.len(),
        SIZE,
        "every byte of the line arrives"
    );
    assert!(finished.stderr.iter().all(|&byte| byte == b'x'));
    assert_eq!(finished.stdout, b"done");
    let max = OutputConfig::default().max_chunk_bytes;
    let stderr_chunks: Vec<_> = finished
        .chunks
        .iter()
        .filter(|chunk| chunk.stream == OutputStream::Stderr)
        .collect();
    assert!(stderr_chunks.iter().all(|chunk| chunk.data.len() <= max));
    assert!(
        stderr_chunks.len() >= SIZE / max,
        "the line is cut at the chunk size"
    );
}

#[tokio::test]
async fn lines_are_chunked_per_line_and_streams_share_seq() {
    let script = "printf 'one\\ntwo\\r\\nthree\\rfour'; printf 'err\\n' >&2";
    let mut job = start(
        command("sh", program("sh"), args(&["-c", script])),
        &JobSettings::default(),
    )
    .await;
    let finished = run_to_end(&mut job, Duration::from_secs(30), "line chunking").await;
    let stdout: Vec<&[u8]> = finished
        .chunks
        .iter()
        .filter(|chunk| chunk.stream == OutputStream::Stdout)
        .map(|chunk| chunk.data.as_slice())
        .collect();
    assert_eq!(stdout, [&b"one\n"[..], b"two\r\n", b"three\r", b"four"]);
    assert_eq!(finished.stderr, b"err\n");
    assert_eq!(finished.chunks.len(), 5, "seq is shared by both streams");
}

#[tokio::test]
async fn stdin_pipe_and_working_directory() {
    let directory = tempfile::tempdir().unwrap();
    let mut cat = command("cat", program("cat"), vec![]);
    cat.stdin = true;
    let mut job = start(cat, &JobSettings::default()).await;
    let mut stdin = job.take_stdin().expect("a job with stdin gets a pipe");
    stdin.write_all(b"hello through stdin\n").await.unwrap();
    drop(stdin);
    let finished = run_to_end(&mut job, Duration::from_secs(30), "cat").await;
    assert_eq!(finished.stdout, b"hello through stdin\n");

    let mut pwd = command("pwd", program("pwd"), vec![]);
    pwd.working_directory = Some(directory.path().to_path_buf());
    let mut job = start(pwd, &JobSettings::default()).await;
    assert!(job.take_stdin().is_none(), "no stdin pipe unless asked");
    let finished = run_to_end(&mut job, Duration::from_secs(30), "pwd").await;
    let expected = std::fs::canonicalize(directory.path()).unwrap();
    assert_eq!(
        finished.stdout_text().trim_end(),
        expected.to_str().unwrap()
    );
}

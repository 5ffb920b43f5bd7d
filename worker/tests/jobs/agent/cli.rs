//! The `dffmpeg-worker` binary: `--version`, configuration errors and a missing binary (exact lines, exit 1),
//! `--check` against an unreachable coordinator.

use std::path::Path;
use std::process::Output;
use std::time::Duration;

use super::{KEY, WAIT};
use crate::program;

async fn run_worker(arguments: &[&str], env: &[(&str, &str)], cwd: &Path) -> Output {
    let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_dffmpeg-worker"));
    command
        .args(arguments)
        .current_dir(cwd)
        .env_remove("DFFMPEG_WORKER_CONFIG")
        .env_remove("DFFMPEG_WORKER_ID")
        .env_remove("DFFMPEG_HMAC_KEY")
        .env_remove("DFFMPEG_COORDINATOR_URL")
        .env_remove("RUST_LOG")
        .env("HOME", cwd)
        .stdin(std::process::Stdio::null())
        .kill_on_drop(true);
    for (name, value) in env {
        command.env(name, value);
    }
    tokio::time::timeout(WAIT, command.output())
        .await
        .expect("dffmpeg-worker did not exit in time")
        .expect("dffmpeg-worker could not run")
}

fn stderr_lines(output: &Output) -> Vec<String> {
    String::from_utf8_lossy(&output.stderr)
        .lines()
        .map(str::to_owned)
        .collect()
}

#[tokio::test]
async fn version_prints_the_name_and_version() {
    let dir = tempfile::tempdir().unwrap();
    let output = run_worker(&["--version"], &[], dir.path()).await;
    assert_eq!(output.status.code(), Some(0));
    assert_eq!(
        String::from_utf8_lossy(&output.stdout),
        "dffmpeg-worker 0.1.0\n"
    );
    let usage = run_worker(&["--bogus"], &[], dir.path()).await;
    assert_eq!(usage.status.code(), Some(2));
}

/// File text, environment, the expected line.
type Case<'a> = (String, Vec<(&'a str, &'a str)>, String);

#[tokio::test]
async fn configuration_errors_are_one_line_and_exit_1() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("w.yaml");
    let file_text = file.display().to_string();
    let cases: Vec<Case<'_>> = vec![
        (
            "client_id: worker01\nhmac_key: x\nmax_concurrent_jobs: 0\n".to_owned(),
            vec![],
            format!(
                "dffmpeg-worker: loading configuration: {file_text}:3:1: max_concurrent_jobs: must be between 1 and \
                 1024, got 0"
            ),
        ),
        (
            "client_id: worker01\n".to_owned(),
            vec![],
            format!(
                "dffmpeg-worker: loading configuration: no HMAC key: set hmac_key or hmac_key_file in {file_text}, \
                 or DFFMPEG_HMAC_KEY"
            ),
        ),
        (
            "client_id: worker01\n".to_owned(),
            vec![("DFFMPEG_HMAC_KEY", KEY), ("DFFMPEG_COORDINATOR_URL", "coordinator.lan")],
            "dffmpeg-worker: loading configuration: DFFMPEG_COORDINATOR_URL: expected scheme://host[:port][/path_base], \
             got 'coordinator.lan'"
                .to_owned(),
        ),
    ];
    for (text, env, expected) in cases {
        std::fs::write(&file, &text).unwrap();
        let output = run_worker(&["--config", &file_text], &env, dir.path()).await;
        assert_eq!(
            output.status.code(),
            Some(1),
            "{text:?}: {:?}",
            stderr_lines(&output)
        );
        assert_eq!(stderr_lines(&output), [expected]);
    }
    let missing = dir.path().join("missing.yaml");
    let output = run_worker(&["-c", missing.to_str().unwrap()], &[], dir.path()).await;
    assert_eq!(output.status.code(), Some(1));
    assert_eq!(
        stderr_lines(&output),
        [format!(
            "dffmpeg-worker: loading configuration: {}: No such file or directory (os error 2)",
            missing.display()
        )]
    );
}

#[tokio::test]
async fn no_usable_binary_exits_1_with_the_line() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("w.yaml");
    let missing = dir.path().join("bin/ffmpeg");
    std::fs::write(
        &file,
        format!(
            "client_id: worker01\nhmac_key: {KEY}\nbinaries:\n  ffmpeg: {}\nlog_level: off\n",
            missing.display()
        ),
    )
    .unwrap();
    let output = run_worker(&["-c", file.to_str().unwrap()], &[], dir.path()).await;
    assert_eq!(output.status.code(), Some(1));
    assert_eq!(
        stderr_lines(&output),
        [format!(
            "dffmpeg-worker: no usable binary: ffmpeg: {}: No such file or directory (os error 2)",
            missing.display()
        )]
    );
}

#[tokio::test]
async fn check_prints_one_line_each_and_fails_without_a_coordinator() {
    let dir = tempfile::tempdir().unwrap();
    let media = dir.path().join("media");
    std::fs::create_dir(&media).unwrap();
    // A port nothing listens on: bind, note, close.
    let port = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap().port()
    };
    let file = dir.path().join("w.yaml");
    std::fs::write(
        &file,
        format!(
            "client_id: worker01\nhmac_key: {KEY}\ncoordinator:\n  port: {port}\nbinaries:\n  ffmpeg: {}\n  \
             ffprobe: /nonexistent/ffprobe\npaths:\n  Media: {}\n  Gone: {}\nlog_level: off\n",
            program("ffmpeg").display(),
            media.display(),
            dir.path().join("gone").display(),
        ),
    )
    .unwrap();
    let output = tokio::time::timeout(
        Duration::from_secs(30),
        run_worker(&["--check", "-c", file.to_str().unwrap()], &[], dir.path()),
    )
    .await
    .expect("--check ends");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), 5, "{stdout}");
    assert!(
        lines[0].starts_with(&format!(
            "binary ffmpeg {} ok: ffmpeg version",
            program("ffmpeg").display()
        )),
        "{}",
        lines[0]
    );
    assert_eq!(
        lines[1],
        "binary ffprobe /nonexistent/ffprobe unavailable: No such file or directory (os error 2)"
    );
    assert_eq!(
        lines[2],
        format!(
            "path Gone {} unhealthy: No such file or directory (os error 2)",
            dir.path().join("gone").display()
        )
    );
    assert_eq!(lines[3], format!("path Media {} ok", media.display()));
    assert!(
        lines[4].starts_with(&format!("coordinator http://127.0.0.1:{port} failed: ")),
        "{}",
        lines[4]
    );
    assert_eq!(output.status.code(), Some(1));
}

#[tokio::test]
async fn check_passes_when_the_coordinator_accepts_the_credentials() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    // A coordinator stand-in for one signed `GET /workers/worker01`, answered 404 (credentials accepted).
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let server = tokio::spawn(async move {
        let (mut stream, _) = listener.accept().await.unwrap();
        let mut head = Vec::new();
        let mut buffer = [0u8; 1024];
        while !head.windows(4).any(|window| window == b"\r\n\r\n") {
            let read = stream.read(&mut buffer).await.unwrap();
            assert!(read > 0, "the request head ended early");
            head.extend_from_slice(&buffer[..read]);
        }
        let body = r#"{"detail":"Worker not found","code":"worker_not_found"}"#;
        let response = format!(
            "HTTP/1.1 404 Not Found\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
            body.len()
        );
        stream.write_all(response.as_bytes()).await.unwrap();
        String::from_utf8_lossy(&head).into_owned()
    });
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("w.yaml");
    std::fs::write(
        &file,
        format!(
            "client_id: worker01\nhmac_key: {KEY}\ncoordinator:\n  port: {port}\nbinaries:\n  ffmpeg: {}\n\
             log_level: off\n",
            program("ffmpeg").display()
        ),
    )
    .unwrap();
    let output = run_worker(&["--check", "-c", file.to_str().unwrap()], &[], dir.path()).await;
    let head = tokio::time::timeout(WAIT, server)
        .await
        .expect("the check request arrived")
        .unwrap();
    assert!(
        head.starts_with("GET /workers/worker01 HTTP/1.1\r\n"),
        "{head}"
    );
    let head = head.to_ascii_lowercase();
    for header in [
        "x-dffmpeg-client-id: worker01",
        "x-dffmpeg-signature: ",
        "x-dffmpeg-nonce: ",
    ] {
        assert!(head.contains(header), "{header} missing in {head}");
    }
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert_eq!(
        stdout.lines().last(),
        Some(
            format!("coordinator http://127.0.0.1:{port} ok: credentials of worker01 accepted")
                .as_str()
        ),
        "{stdout}"
    );
    assert_eq!(output.status.code(), Some(0), "{stdout}");
}

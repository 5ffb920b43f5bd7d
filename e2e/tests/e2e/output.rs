//! Output volume: megabytes on stdout, and a 1 MiB stderr line without a newline, both complete.

use protocol::rest::{JobRequest, JobStatus};

use super::{FAST, Farm};

#[tokio::test]
async fn megabytes_of_stdout_complete() {
    let farm = Farm::start(FAST).await;
    let _worker = farm.worker("worker01", &[("Media", &farm.media)], 1).await;
    // 50 frames of 320x240 rgb24: 11.5 MB of raw video on stdout.
    let request = JobRequest {
        binary_name: "ffmpeg".into(),
        arguments: vec![
            "-v".into(),
            "error".into(),
            "-f".into(),
            "lavfi".into(),
            "-i".into(),
            "testsrc=duration=2:size=320x240:rate=25".into(),
            "-pix_fmt".into(),
            "rgb24".into(),
            "-f".into(),
            "rawvideo".into(),
            "-".into(),
        ],
        ..JobRequest::default()
    };
    let id = farm.submit(&request).await;
    let done = farm.wait_terminal(id, 120).await;
    assert_eq!(
        (done.status, done.exit_code),
        (JobStatus::Completed, Some(0)),
        "{done:?}"
    );
    let query = client::EventsQuery {
        follow: Some(false),
        types: Some(vec![protocol::rest::EventType::Output]),
        ..Default::default()
    };
    use futures_util::StreamExt;
    let lines: Vec<_> = farm.api.events(id, &query).await.unwrap().collect().await;
    let mut stored = 0usize;
    for line in lines {
        if let client::StreamItem::Line(protocol::rest::EventLine::Output(output)) = line.unwrap() {
            stored += match (&output.text, &output.base64) {
                (Some(text), _) => text.len(),
                (None, Some(encoded)) => base64_len(encoded),
                _ => 0,
            };
        }
    }
    // The worker never blocks ffmpeg on its pipes: what its 8 MiB buffer could not hold while the coordinator was
    // busy is dropped and reported (worker-protocol.md §7). Every byte is stored or accounted for in a notice.
    let query = client::EventsQuery {
        follow: Some(false),
        types: Some(vec![protocol::rest::EventType::Notice]),
        ..Default::default()
    };
    let notices: Vec<_> = farm.api.events(id, &query).await.unwrap().collect().await;
    let mut dropped = 0usize;
    for line in notices {
        if let client::StreamItem::Line(protocol::rest::EventLine::Notice(notice)) = line.unwrap() {
            assert_eq!(notice.code, "output_gap", "{notice:?}");
            let count = notice
                .message
                .strip_prefix("the worker dropped ")
                .and_then(|rest| rest.split(' ').next());
            dropped += count
                .and_then(|n| n.parse::<usize>().ok())
                .unwrap_or_else(|| panic!("a byte count: {notice:?}"));
        }
    }
    println!("stdout: {stored} bytes stored, {dropped} dropped by the worker's buffer");
    assert_eq!(
        stored + dropped,
        320 * 240 * 3 * 50,
        "every stdout byte was stored or reported dropped"
    );
}

fn base64_len(encoded: &str) -> usize {
    let padding = encoded.bytes().rev().take_while(|b| *b == b'=').count();
    encoded.len() / 4 * 3 - padding
}

#[tokio::test]
async fn a_one_mebibyte_stderr_line_without_newline_completes() {
    let farm = Farm::start(FAST).await;
    // The worker offers "ffprobe" as a script that writes one 1 MiB line to stderr and no newline.
    let script = farm.dir.path().join("long-line.sh");
    std::fs::write(
        &script,
        "#!/bin/sh\nhead -c 1048576 /dev/zero | tr '\\000' 'x' >&2\n",
    )
    .unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
    let extra = "progress: off\n";
    let config = farm.dir.path().join("worker01.yaml");
    let yaml = farm
        .worker_yaml("worker01", &[("Media", &farm.media)], 1, farm.port, extra)
        .replace(
            "ffprobe: /usr/bin/ffprobe",
            &format!("ffprobe: {}", script.display()),
        );
    std::fs::write(&config, yaml).unwrap();
    let _worker = super::spawn_worker("worker01", &config, &farm.dir.path().join("worker01.log"));
    super::eventually(20, "worker01 online", || async {
        farm.api
            .worker("worker01")
            .await
            .is_ok_and(|w| w.status == protocol::rest::WorkerStatus::Online)
    })
    .await;
    let id = farm
        .submit(&JobRequest {
            binary_name: "ffprobe".into(),
            ..JobRequest::default()
        })
        .await;
    let done = farm.wait_terminal(id, 60).await;
    assert_eq!(
        (done.status, done.exit_code),
        (JobStatus::Completed, Some(0)),
        "{done:?}"
    );
    let logs = farm.api.logs(id, None, None).await.unwrap();
    let total: usize = logs.logs.iter().map(|entry| entry.content.len()).sum();
    assert_eq!(total, 1 << 20, "every byte of the line arrived, in chunks");
}

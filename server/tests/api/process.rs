//! The real `dffmpeg-coordinator` binary: the README's run command with no configuration file, exit codes,
//! `kill -9` after a burst of acknowledged submits (every acknowledged job survives), SIGTERM with open streams.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use client::EventsQuery;
use futures_util::StreamExt;
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

use protocol::admin::{AdminCommand, IdentityInfo, Role, UserAddArgs};
use protocol::signing::HmacKey;

use super::transcode;

const BINARY: &str = env!("CARGO_BIN_EXE_dffmpeg-coordinator");

/// A coordinator process and the address its `ready` line named.
struct Running {
    child: Child,
    addr: String,
}

fn command(dir: &Path, args: &[&str]) -> Command {
    let mut command = Command::new(BINARY);
    command
        .args(args)
        .current_dir(dir)
        .env("HOME", dir)
        .env_remove("DFFMPEG_COORDINATOR_CONFIG")
        .env_remove("RUST_LOG")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    command
}

/// Starts the binary and waits (bounded) for its `ready` line.
async fn start(dir: &Path, args: &[&str]) -> Running {
    let mut child = command(dir, args).spawn().unwrap();
    let stderr = child.stderr.take().unwrap();
    let mut lines = BufReader::new(stderr).lines();
    let addr = tokio::time::timeout(Duration::from_secs(20), async {
        while let Some(line) = lines.next_line().await.unwrap() {
            if let Some(rest) = line.split("ready addr=").nth(1) {
                return rest.split_whitespace().next().unwrap().to_owned();
            }
            if line.contains("\"message\":\"ready\"") {
                let value: serde_json::Value = serde_json::from_str(&line).unwrap();
                return value["fields"]["addr"].as_str().unwrap().to_owned();
            }
        }
        panic!("the coordinator exited before its ready line");
    })
    .await
    .expect("a ready line within 20 s");
    // Keep draining stderr so the child never blocks on a full pipe.
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    Running { child, addr }
}

fn write_config(dir: &Path) -> PathBuf {
    let path = dir.join("coordinator.yaml");
    std::fs::write(
        &path,
        "host: 127.0.0.1\nport: 0\nlog_format: json\ndatabase:\n  path: ./data\n",
    )
    .unwrap();
    path
}

async fn add_user(dir: &Path, config: &Path, id: &str) -> HmacKey {
    let mut admin = client::admin::AdminConnection::spawn_stdio(
        Path::new(BINARY),
        Some(config),
        Duration::from_secs(30),
    )
    .await
    .unwrap();
    let args = UserAddArgs {
        client_id: id.to_owned(),
        role: Role::Client,
        cidrs: vec![],
        key: None,
    };
    let value = admin.request(&AdminCommand::UserAdd(args)).await.unwrap();
    admin.close().await.unwrap();
    let _ = dir;
    let info: IdentityInfo = serde_json::from_value(value).unwrap();
    HmacKey::parse(info.hmac_key.as_deref().unwrap()).unwrap()
}

async fn wait_exit(child: &mut Child, secs: u64) -> std::process::ExitStatus {
    tokio::time::timeout(Duration::from_secs(secs), child.wait())
        .await
        .expect("the process exits in time")
        .unwrap()
}

#[tokio::test]
async fn with_no_configuration_file_it_serves_health_and_stops_on_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let mut running = start(dir.path(), &["--port", "0"]).await;
    let health = reqwest::get(format!("http://{}/health", running.addr))
        .await
        .unwrap();
    assert_eq!(health.status(), 200);
    assert!(
        dir.path().join("dffmpeg-data").is_dir(),
        "the store is under ./dffmpeg-data"
    );
    kill(
        Pid::from_raw(running.child.id().unwrap() as i32),
        Signal::SIGTERM,
    )
    .unwrap();
    let status = wait_exit(&mut running.child, 15).await;
    assert_eq!(status.code(), Some(0));
}

#[tokio::test]
async fn configuration_errors_exit_2_with_one_line() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.yaml");
    std::fs::write(&path, "janitor:\n  intervall: 5\n").unwrap();
    let output = command(dir.path(), &["--config", path.to_str().unwrap()])
        .output()
        .await
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8(output.stderr).unwrap();
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(
        stderr.starts_with("dffmpeg-coordinator: loading configuration: "),
        "{stderr}"
    );
    assert!(
        stderr.contains(":2:3: unknown key 'janitor.intervall'; expected one of: interval"),
        "{stderr}"
    );
    let missing = command(dir.path(), &["--config", "/nonexistent/x.yaml"])
        .output()
        .await
        .unwrap();
    assert_eq!(missing.status.code(), Some(2));
    let usage = command(dir.path(), &["--port", "70000"])
        .output()
        .await
        .unwrap();
    assert_eq!(usage.status.code(), Some(2));
}

#[tokio::test]
async fn every_acknowledged_submit_survives_kill_9() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path());
    let key = add_user(dir.path(), &config, "client01").await;
    let mut running = start(dir.path(), &["--config", config.to_str().unwrap()]).await;
    let base = format!("http://{}", running.addr);
    // The database is locked while the coordinator runs: a one-shot admin session exits 3.
    let locked = command(
        dir.path(),
        &["--config", config.to_str().unwrap(), "--admin-stdio"],
    )
    .output()
    .await
    .unwrap();
    assert_eq!(locked.status.code(), Some(3));
    assert!(locked.stdout.is_empty(), "nothing on stdout");
    let api = client::Client::new(&base, "client01", key.clone()).unwrap();
    let mut tasks = Vec::new();
    for _ in 0..16 {
        let api = api.clone();
        tasks.push(tokio::spawn(async move {
            let mut ids = Vec::new();
            for _ in 0..12 {
                ids.push(api.submit(&transcode()).await.unwrap().job.job_id);
            }
            ids
        }));
    }
    let mut acknowledged = Vec::new();
    for task in tasks {
        acknowledged.extend(task.await.unwrap());
    }
    // Right after the last 200: no clean stop, no final flush.
    running.child.start_kill().unwrap();
    let status = wait_exit(&mut running.child, 10).await;
    assert_eq!(status.code(), None, "killed by a signal");
    let mut restarted = start(dir.path(), &["--config", config.to_str().unwrap()]).await;
    let api = client::Client::new(&format!("http://{}", restarted.addr), "client01", key).unwrap();
    for id in &acknowledged {
        let job = api
            .job_status(*id)
            .await
            .unwrap_or_else(|err| panic!("acknowledged job {id} lost: {err}"));
        assert_eq!(job.status, protocol::rest::JobStatus::Pending);
    }
    assert_eq!(acknowledged.len(), 192);
    let listed = api.jobs_list(&Default::default()).await.unwrap();
    assert_eq!(listed.len(), 192);
    kill(
        Pid::from_raw(restarted.child.id().unwrap() as i32),
        Signal::SIGTERM,
    )
    .unwrap();
    assert_eq!(wait_exit(&mut restarted.child, 15).await.code(), Some(0));
}

#[tokio::test]
async fn sigterm_ends_open_streams_and_exits_0() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path());
    let key = add_user(dir.path(), &config, "client01").await;
    let mut running = start(dir.path(), &["--config", config.to_str().unwrap()]).await;
    let api = client::Client::new(&format!("http://{}", running.addr), "client01", key).unwrap();
    let job = api.submit(&transcode()).await.unwrap().job;
    let mut stream = api
        .events(
            job.job_id,
            &EventsQuery {
                keepalive: Some(60),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    stream.next().await.unwrap().unwrap();
    let poll = {
        let api = api.clone();
        tokio::spawn(async move {
            api.poll(job.job_id, Some(protocol::EventId(protocol::Ulid::MAX)), 60)
                .await
        })
    };
    tokio::time::sleep(Duration::from_millis(200)).await;
    kill(
        Pid::from_raw(running.child.id().unwrap() as i32),
        Signal::SIGTERM,
    )
    .unwrap();
    let ended = tokio::time::timeout(Duration::from_secs(10), async {
        while let Some(Ok(_)) = stream.next().await {}
    })
    .await;
    assert!(ended.is_ok(), "the event stream ended");
    let answered = tokio::time::timeout(Duration::from_secs(10), poll)
        .await
        .expect("the long poll is answered")
        .unwrap()
        .unwrap();
    assert!(
        answered.messages.is_empty(),
        "shutdown answers pending polls with no messages"
    );
    assert_eq!(wait_exit(&mut running.child, 15).await.code(), Some(0));
}

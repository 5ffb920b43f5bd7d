//! End-to-end tests: the real `dffmpeg-coordinator`, real `dffmpeg-worker` processes and real ffmpeg on clips the
//! tests generate, all on 127.0.0.1. Cargo gives a package's tests only its own binaries, so the binaries are found
//! next to this test executable in the target directory: `.ci/run` builds every binary of the workspace first.
//! Every wait is bounded and names what did not happen.

mod cancel;
mod drain;
mod failures;
mod output;
mod placement;
mod reconnect;
mod transcode;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

use protocol::JobId;
use protocol::admin::{AdminCommand, IdentityInfo, Role, UserAddArgs};
use protocol::rest::{JobRecord, JobRequest};
use protocol::signing::HmacKey;

/// A binary of the workspace, from the target directory of this test.
pub fn bin(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("the test executable");
    let dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("target/<profile>/deps/..");
    let path = dir.join(name);
    assert!(
        path.is_file(),
        "{} is missing: build every binary first (cargo build --workspace --bins)",
        path.display()
    );
    path
}

/// A port on 127.0.0.1 that was free a moment ago (the coordinator keeps one port across restarts, so workers find
/// it again). Another process may take it in between: `Farm::start` then picks another.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Settings that make the timers of a test run short (config.md §2.3 ranges allow these).
pub const FAST: &str = "worker_session:\n  heartbeat_interval: 1\n  missed_heartbeats: 2\njanitor:\n  interval: 1\n  jitter: 0\n";

/// Runs a command to completion (bounded) and asserts it succeeded.
pub async fn run_ok(program: &str, args: &[&str]) {
    let output = tokio::time::timeout(
        Duration::from_secs(60),
        Command::new(program).args(args).output(),
    )
    .await
    .expect("the command finishes within 60 s")
    .unwrap();
    assert!(
        output.status.success(),
        "{program} {args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
}

/// Generates a test clip with ffmpeg.
pub async fn make_clip(path: &Path, seconds: u32) {
    let source = format!("testsrc=duration={seconds}:size=320x240:rate=25");
    run_ok(
        "ffmpeg",
        &[
            "-v",
            "error",
            "-y",
            "-f",
            "lavfi",
            "-i",
            &source,
            "-c:v",
            "mpeg4",
            path.to_str().unwrap(),
        ],
    )
    .await;
}

/// A running coordinator process.
#[allow(missing_debug_implementations)]
pub struct Coordinator {
    child: Child,
}

/// A running worker process.
#[allow(missing_debug_implementations)]
pub struct Worker {
    pub id: String,
    child: Child,
    pub log: PathBuf,
}

/// A coordinator with its data directory, a media directory with a clip, identities and workers.
#[allow(missing_debug_implementations)]
pub struct Farm {
    pub dir: tempfile::TempDir,
    pub media: PathBuf,
    pub port: u16,
    config: PathBuf,
    coordinator: Option<Coordinator>,
    pub api: client::Client,
    keys: HashMap<String, HmacKey>,
}

impl Farm {
    /// Starts a coordinator with `extra` YAML appended to its test configuration.
    pub async fn start(extra: &str) -> Farm {
        let dir = tempfile::tempdir().unwrap();
        let media = dir.path().join("media");
        std::fs::create_dir_all(&media).unwrap();
        make_clip(&media.join("in.mp4"), 2).await;
        let config = dir.path().join("coordinator.yaml");
        let write_config = |port: u16| {
            let yaml = format!(
                "host: 127.0.0.1\nport: {port}\nlog_format: json\nlog_level: info\nshutdown_timeout_seconds: 5\ndatabase:\n  path: ./data\n{extra}"
            );
            std::fs::write(&config, yaml).unwrap();
        };
        let mut port = free_port();
        write_config(port);
        let mut keys = HashMap::new();
        let mut admin = client::admin::AdminConnection::spawn_stdio(
            &bin("dffmpeg-coordinator"),
            Some(&config),
            Duration::from_secs(30),
        )
        .await
        .unwrap();
        for (id, role) in [
            ("client01", Role::Client),
            ("worker01", Role::Worker),
            ("worker02", Role::Worker),
            ("worker03", Role::Worker),
        ] {
            let args = UserAddArgs {
                client_id: id.into(),
                role,
                cidrs: vec![],
                key: None,
            };
            let value = admin.request(&AdminCommand::UserAdd(args)).await.unwrap();
            let info: IdentityInfo = serde_json::from_value(value).unwrap();
            keys.insert(
                id.to_owned(),
                HmacKey::parse(info.hmac_key.as_deref().unwrap()).unwrap(),
            );
        }
        admin.close().await.unwrap();
        let mut attempts = 0;
        let coordinator = loop {
            match Farm::spawn_coordinator(dir.path(), &config, port).await {
                Ok(coordinator) => break coordinator,
                // The port was taken between `free_port` and the bind: pick another.
                Err(log) if attempts < 5 && log.contains("Address already in use") => {
                    attempts += 1;
                    port = free_port();
                    write_config(port);
                }
                Err(log) => panic!("the coordinator did not start:\n{log}"),
            }
        };
        let api = client::Client::new(
            &format!("http://127.0.0.1:{port}"),
            "client01",
            keys["client01"].clone(),
        )
        .unwrap();
        Farm {
            dir,
            media,
            port,
            config,
            coordinator: Some(coordinator),
            api,
            keys,
        }
    }

    /// Restarts the coordinator on its port and waits until it is ready.
    pub async fn start_coordinator(&mut self) {
        let coordinator = Farm::spawn_coordinator(self.dir.path(), &self.config, self.port)
            .await
            .unwrap_or_else(|log| panic!("the coordinator did not restart:\n{log}"));
        self.coordinator = Some(coordinator);
    }

    /// Starts a coordinator process and waits for its own `ready` line naming `port` (so a process of another
    /// test on that port is never mistaken for it) and then `/health`; `Err` carries the log if it exited first.
    async fn spawn_coordinator(
        dir: &Path,
        config: &Path,
        port: u16,
    ) -> Result<Coordinator, String> {
        let log_path = dir.join("coordinator.log");
        let ready_lines = |text: &str| {
            let addr = format!("127.0.0.1:{port}");
            text.lines()
                .filter(|line| line.contains("\"ready\"") && line.contains(&addr))
                .count()
        };
        let before = ready_lines(&std::fs::read_to_string(&log_path).unwrap_or_default());
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log_path)
            .unwrap();
        let mut child = Command::new(bin("dffmpeg-coordinator"))
            .arg("--config")
            .arg(config)
            .current_dir(dir)
            .env_remove("RUST_LOG")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        loop {
            let text = std::fs::read_to_string(&log_path).unwrap_or_default();
            if ready_lines(&text) > before {
                break;
            }
            if child.try_wait().unwrap().is_some() {
                return Err(text);
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "the coordinator was not ready within 20 s:\n{text}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let url = format!("http://127.0.0.1:{port}/health");
        eventually(20, "the coordinator answers /health", || async {
            reqwest_free_get(&url).await == Some(200)
        })
        .await;
        Ok(Coordinator { child })
    }

    /// Stops the coordinator: `kill -9`, or SIGTERM and a wait for exit 0.
    pub async fn stop_coordinator(&mut self, kill9: bool) {
        let mut coordinator = self.coordinator.take().expect("a running coordinator");
        if kill9 {
            coordinator.child.start_kill().unwrap();
            let _ = wait_exit(&mut coordinator.child, 10).await;
        } else {
            signal(&coordinator.child, nix::sys::signal::Signal::SIGTERM);
            let status = wait_exit(&mut coordinator.child, 15).await;
            assert_eq!(
                status.code(),
                Some(0),
                "the coordinator exits 0 after SIGTERM"
            );
        }
    }

    pub fn key(&self, id: &str) -> HmacKey {
        self.keys[id].clone()
    }

    /// The YAML of a worker (`port` overrides the coordinator's, for a relay in between).
    pub fn worker_yaml(
        &self,
        id: &str,
        paths: &[(&str, &Path)],
        slots: u32,
        port: u16,
        extra: &str,
    ) -> String {
        let mut yaml = format!(
            "client_id: {id}\nhmac_key: \"{}\"\ncoordinator:\n  host: 127.0.0.1\n  port: {port}\nmax_concurrent_jobs: {slots}\nlog_format: json\nbinaries:\n  ffmpeg: /usr/bin/ffmpeg\n  ffprobe: /usr/bin/ffprobe\nreconnect:\n  initial_delay: 0.2\n  max_delay: 1\npaths:\n",
            self.keys[id].to_base64()
        );
        for (name, root) in paths {
            yaml.push_str(&format!("  {name}: {}\n", root.display()));
        }
        yaml.push_str(extra);
        yaml
    }

    /// Starts a worker process and waits until the coordinator lists it online.
    pub async fn worker(&self, id: &str, paths: &[(&str, &Path)], slots: u32) -> Worker {
        self.worker_via(id, paths, slots, self.port, "").await
    }

    pub async fn worker_via(
        &self,
        id: &str,
        paths: &[(&str, &Path)],
        slots: u32,
        port: u16,
        extra: &str,
    ) -> Worker {
        let config = self.dir.path().join(format!("{id}.yaml"));
        std::fs::write(&config, self.worker_yaml(id, paths, slots, port, extra)).unwrap();
        let worker = spawn_worker(id, &config, &self.dir.path().join(format!("{id}.log")));
        eventually(20, &format!("{id} online"), || async {
            self.api
                .worker(id)
                .await
                .is_ok_and(|w| w.status == protocol::rest::WorkerStatus::Online)
        })
        .await;
        worker
    }

    pub async fn submit(&self, request: &JobRequest) -> JobId {
        self.api.submit(request).await.unwrap().job.job_id
    }

    /// Waits until the job satisfies `check`; returns the record.
    pub async fn wait_job(
        &self,
        id: JobId,
        secs: u64,
        what: &str,
        check: impl Fn(&JobRecord) -> bool,
    ) -> JobRecord {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(secs);
        loop {
            if let Ok(record) = self.api.job_status(id).await {
                if check(&record) {
                    return record;
                }
                assert!(
                    tokio::time::Instant::now() < deadline,
                    "timed out waiting for job {id}: {what}; last seen {record:?}"
                );
            } else {
                assert!(
                    tokio::time::Instant::now() < deadline,
                    "timed out waiting for job {id}: {what}"
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Waits for a terminal status, then until the event stream has delivered it: a status read may show a change
    /// one flush early (storage.md §2), and the job's last output and notices are readable only after that flush.
    pub async fn wait_terminal(&self, id: JobId, secs: u64) -> JobRecord {
        let record = self
            .wait_job(id, secs, "a terminal status", |job| {
                job.status.is_terminal()
            })
            .await;
        let query = client::EventsQuery {
            types: Some(vec![protocol::rest::EventType::Status]),
            ..Default::default()
        };
        let lines = tokio::time::timeout(Duration::from_secs(30), async {
            use futures_util::StreamExt;
            self.api
                .events(id, &query)
                .await
                .unwrap()
                .collect::<Vec<_>>()
                .await
        })
        .await
        .expect("the event stream of a finished job ends within 30 s");
        let last = lines
            .into_iter()
            .rev()
            .find_map(|line| match line.unwrap() {
                client::StreamItem::Line(protocol::rest::EventLine::Status(status)) => Some(status),
                _ => None,
            });
        assert_eq!(
            last.map(|status| status.status),
            Some(record.status),
            "the stream ends with the terminal status"
        );
        record
    }
}

pub fn spawn_worker(id: &str, config: &Path, log: &Path) -> Worker {
    let file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .unwrap();
    let child = Command::new(bin("dffmpeg-worker"))
        .arg("--config")
        .arg(config)
        .env_remove("RUST_LOG")
        .env_remove("DFFMPEG_WORKER_CONFIG")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(file)
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    Worker {
        id: id.to_owned(),
        child,
        log: log.to_path_buf(),
    }
}

impl Worker {
    pub fn pid(&self) -> i32 {
        self.child.id().expect("a running worker") as i32
    }

    pub fn signal(&self, signal: nix::sys::signal::Signal) {
        self::signal(&self.child, signal);
    }

    pub async fn kill9(&mut self) {
        self.child.start_kill().unwrap();
        let _ = wait_exit(&mut self.child, 10).await;
    }

    pub async fn wait_exit(&mut self, secs: u64) -> std::process::ExitStatus {
        wait_exit(&mut self.child, secs).await
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

fn signal(child: &Child, signal: nix::sys::signal::Signal) {
    let pid = nix::unistd::Pid::from_raw(child.id().expect("a running process") as i32);
    nix::sys::signal::kill(pid, signal).unwrap();
}

pub async fn wait_exit(child: &mut Child, secs: u64) -> std::process::ExitStatus {
    tokio::time::timeout(Duration::from_secs(secs), child.wait())
        .await
        .unwrap_or_else(|_| panic!("the process did not exit within {secs} s"))
        .unwrap()
}

/// A GET without any client library: the status code, or `None` when nothing answers.
pub async fn reqwest_free_get(url: &str) -> Option<u16> {
    let address = url.strip_prefix("http://")?.split('/').next()?.to_owned();
    let path = format!("/{}", url.strip_prefix("http://")?.split_once('/')?.1);
    let mut stream = tokio::net::TcpStream::connect(&address).await.ok()?;
    use tokio::io::AsyncWriteExt;
    stream
        .write_all(
            format!("GET {path} HTTP/1.1\r\nHost: {address}\r\nConnection: close\r\n\r\n")
                .as_bytes(),
        )
        .await
        .ok()?;
    let mut lines = BufReader::new(stream).lines();
    let first = lines.next_line().await.ok()??;
    first.split_whitespace().nth(1)?.parse().ok()
}

/// Waits for `check` to hold, polling every 50 ms, at most `secs` seconds.
pub async fn eventually<F, Fut>(secs: u64, what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + Duration::from_secs(secs);
    loop {
        if check().await {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for: {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Processes whose command line contains `needle` (to prove that no ffmpeg was left behind).
pub fn processes_with(needle: &str) -> Vec<i32> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        let Ok(cmdline) = std::fs::read(entry.path().join("cmdline")) else {
            continue;
        };
        let text = String::from_utf8_lossy(&cmdline).replace('\0', " ");
        if text.contains(needle) && !text.contains("dffmpeg-e2e") && !text.contains("/e2e-") {
            found.push(pid);
        }
    }
    found
}

/// A transcode of the test clip to `$Media/<output>`.
pub fn transcode(output: &str) -> JobRequest {
    JobRequest {
        binary_name: "ffmpeg".into(),
        arguments: vec![
            "-y".into(),
            "-v".into(),
            "info".into(),
            "-i".into(),
            "$Media/in.mp4".into(),
            "-c:v".into(),
            "mpeg4".into(),
            format!("$Media/{output}"),
        ],
        paths: vec!["Media".into()],
        working_directory: Some("$Media".into()),
        ..JobRequest::default()
    }
}

/// A job that reads `$Media/<input>` at real-time speed (`-re`), so it runs as long as the clip.
pub fn slow_job(input: &str, output: &str) -> JobRequest {
    JobRequest {
        binary_name: "ffmpeg".into(),
        arguments: vec![
            "-y".into(),
            "-re".into(),
            "-i".into(),
            format!("$Media/{input}"),
            "-c:v".into(),
            "mpeg4".into(),
            format!("$Media/{output}"),
        ],
        paths: vec!["Media".into()],
        working_directory: Some("$Media".into()),
        ..JobRequest::default()
    }
}

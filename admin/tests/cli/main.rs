//! `dffmpeg-admin` as its users meet it (cli.md §2): the built binary run in a temp working directory, reaching
//! either a fake one-shot coordinator (the client crate's `tests/fixtures/fake-coordinator` script, found next to
//! the binary as the real one would be) or an in-test admin socket. Exact lines and exit codes.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::OnceLock;
use std::time::Duration;

use protocol::admin::{AdminCommand, AdminRequestLine, AdminResponseLine};
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::UnixListener;
use tokio::process::Command;

const FAKE_COORDINATOR: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../client/tests/fixtures/fake-coordinator"
);
const KEY: &str = "qHdOvnF4mlz6TSStMCoY6KvEpDQGpcteNU2LMGInyuY=";
/// The key the fake hands out when none is given.
const FAKE_KEY: &str = "Z2VuZXJhdGVkLWtleS1mb3ItJGNsaWVudC1pZC0wMDA=";
const RUN_TIMEOUT: Duration = Duration::from_secs(30);

/// Directories holding a link to the built `dffmpeg-admin`: one with the fake coordinator beside it, one alone.
/// Links, not copies, so nothing executable is written while other tests start processes.
struct Installs {
    with_coordinator: PathBuf,
    alone: PathBuf,
}

fn installs() -> &'static Installs {
    static INSTALLS: OnceLock<Installs> = OnceLock::new();
    INSTALLS.get_or_init(|| {
        let root = Path::new(env!("CARGO_TARGET_TMPDIR"))
            .join(format!("admin-cli-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        let installs = Installs {
            with_coordinator: root.join("with-coordinator"),
            alone: root.join("alone"),
        };
        for dir in [&installs.with_coordinator, &installs.alone] {
            std::fs::create_dir_all(dir).unwrap();
            let admin = dir.join("dffmpeg-admin");
            if std::fs::hard_link(env!("CARGO_BIN_EXE_dffmpeg-admin"), &admin).is_err() {
                std::fs::copy(env!("CARGO_BIN_EXE_dffmpeg-admin"), &admin).unwrap();
            }
        }
        let script = std::fs::canonicalize(FAKE_COORDINATOR).unwrap();
        std::os::unix::fs::symlink(
            script,
            installs.with_coordinator.join("dffmpeg-coordinator"),
        )
        .unwrap();
        installs
    })
}

#[derive(Debug)]
struct Run {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

/// Runs `dffmpeg-admin args…` in `cwd` with a controlled environment: `HOME` = `cwd`, no
/// `DFFMPEG_COORDINATOR_CONFIG`, and a `PATH` without any coordinator.
async fn run_in(install: &Path, cwd: &Path, args: &[&str], env: &[(&str, &str)]) -> Run {
    let mut command = Command::new(install.join("dffmpeg-admin"));
    command
        .args(args)
        .current_dir(cwd)
        .env("HOME", cwd)
        .env("PATH", "/nonexistent")
        .env_remove("DFFMPEG_COORDINATOR_CONFIG")
        .env_remove("FAKE_COORDINATOR_LOG")
        .stdin(Stdio::null())
        .kill_on_drop(true);
    for (name, value) in env {
        command.env(name, value);
    }
    let output = tokio::time::timeout(RUN_TIMEOUT, command.output())
        .await
        .expect("dffmpeg-admin did not finish in time")
        .expect("running dffmpeg-admin");
    Run {
        code: output.status.code(),
        stdout: String::from_utf8(output.stdout).unwrap(),
        stderr: String::from_utf8(output.stderr).unwrap(),
    }
}

async fn run(cwd: &Path, args: &[&str]) -> Run {
    run_in(&installs().with_coordinator, cwd, args, &[]).await
}

/// Writes `./dffmpeg-coordinator.yaml` steering the fake; returns the fake's log path.
fn coordinator_yaml(cwd: &Path, mode: &str) -> PathBuf {
    let log = cwd.join("fake.log");
    let text = format!(
        "port: 0\nlog_level: info\nfake_mode: {mode}\nfake_log: {}\n",
        log.display()
    );
    std::fs::write(cwd.join("dffmpeg-coordinator.yaml"), text).unwrap();
    log
}

/// The fake's log: its arguments, then the request lines it read.
fn read_log(log: &Path) -> (String, Vec<AdminRequestLine>) {
    let text = std::fs::read_to_string(log).unwrap();
    let mut lines = text.lines();
    let args = lines
        .next()
        .unwrap()
        .strip_prefix("args: ")
        .unwrap()
        .to_owned();
    let requests = lines
        .map(|line| serde_json::from_str(line.strip_prefix("line: ").unwrap()).unwrap())
        .collect();
    (args, requests)
}

fn added(id: &str, key: &str) -> String {
    format!("User '{id}' added successfully.\nHMAC Key: {key}\n")
}

#[tokio::test]
async fn version_help_and_usage_errors() {
    let cwd = tempfile::tempdir().unwrap();
    let version = run(cwd.path(), &["--version"]).await;
    assert_eq!(
        (version.code, version.stdout.as_str()),
        (Some(0), "dffmpeg-admin 0.1.0\n")
    );
    let bare = run(cwd.path(), &[]).await;
    assert_eq!(bare.code, Some(2));
    assert!(bare.stderr.contains("Usage: dffmpeg-admin"), "{bare:?}");
    assert!(bare.stdout.is_empty());
    for args in [
        &["user"][..],
        &["user", "add"],
        &["user", "add", "a", "--frobnicate"],
        &["user", "list"],
    ] {
        let usage = run(cwd.path(), args).await;
        assert_eq!(usage.code, Some(2), "{args:?}: {usage:?}");
        assert!(usage.stdout.is_empty(), "{args:?}: {usage:?}");
    }
}

#[tokio::test]
async fn bad_input_exits_2_with_one_line_before_anything_is_contacted() {
    let cwd = tempfile::tempdir().unwrap();
    let cases: &[(&[&str], &str)] = &[
        (
            &["user", "add", "a", "--role", "root"],
            "invalid role 'root'; expected client, worker or admin",
        ),
        (
            &["user", "add", "a", "--cidr", "10.0.0.1/8"],
            "invalid CIDR '10.0.0.1/8': host bits set; did you mean 10.0.0.0/8?",
        ),
        (
            &["user", "add", "a", "--allowed-cidrs", "10.0.0.0/8", "lan"],
            "invalid CIDR 'lan': not an IP address or network",
        ),
        (
            &["user", "add", "a b"],
            "invalid client id 'a b': use 1–64 characters A–Z a–z 0–9 . _ @ -, starting with a letter or digit",
        ),
        (
            &["user", "add", "ok", "coordinator"],
            "client id 'coordinator' is reserved",
        ),
        (
            &["user", "add", "a", "--key", "c2hvcnQ="],
            "invalid key: expected standard base64 of exactly 32 bytes (44 characters ending in '=')",
        ),
        (
            &["user", "add", "a", "b", "--key", KEY],
            "--key can only be used with a single client id",
        ),
    ];
    for (args, message) in cases {
        // The lone install has no coordinator at all: an exit 2 proves nothing was reached for.
        let result = run_in(&installs().alone, cwd.path(), args, &[]).await;
        assert_eq!(result.code, Some(2), "{args:?}: {result:?}");
        assert_eq!(
            result.stderr,
            format!("dffmpeg-admin: {message}\n"),
            "{args:?}"
        );
        assert!(result.stdout.is_empty());
    }
}

#[tokio::test]
async fn adds_a_user_through_the_one_shot_coordinator() {
    let cwd = tempfile::tempdir().unwrap();
    let log = coordinator_yaml(cwd.path(), "ok");
    let args = [
        "user",
        "add",
        "late",
        "--role",
        "worker",
        "--cidr",
        "10.0.0.1",
        "--allowed-cidrs",
        "192.168.1.0/24",
        "10.0.0.1/32",
    ];
    let result = run(cwd.path(), &args).await;
    assert_eq!(result.code, Some(0), "{result:?}");
    assert_eq!(result.stdout, added("late", FAKE_KEY));
    assert_eq!(result.stderr, "");
    let (child_args, requests) = read_log(&log);
    assert_eq!(
        child_args,
        "--config ./dffmpeg-coordinator.yaml --admin-stdio"
    );
    assert_eq!(requests.len(), 2);
    assert_eq!(requests[0].command, "hello");
    assert_eq!(requests[1].command, "user.add");
    assert_eq!(
        requests[1].args,
        json!({"client_id": "late", "role": "worker", "cidrs": ["10.0.0.1/32", "192.168.1.0/24"], "key": null})
    );
}

#[tokio::test]
async fn keeps_a_given_key() {
    let cwd = tempfile::tempdir().unwrap();
    let log = coordinator_yaml(cwd.path(), "ok");
    let result = run(cwd.path(), &["user", "add", "upstream01", "--key", KEY]).await;
    assert_eq!(result.code, Some(0), "{result:?}");
    assert_eq!(result.stdout, added("upstream01", KEY));
    let (_, requests) = read_log(&log);
    assert_eq!(requests[1].args["key"], json!(KEY));
    assert_eq!(
        requests[1].args["cidrs"],
        json!([]),
        "no CIDR given: the coordinator's default"
    );
}

#[tokio::test]
async fn without_a_configuration_file_it_warns_and_passes_no_config() {
    let cwd = tempfile::tempdir().unwrap();
    let log = cwd.path().join("fake.log");
    let env = [("FAKE_COORDINATOR_LOG", log.to_str().unwrap())];
    let result = run_in(
        &installs().with_coordinator,
        cwd.path(),
        &["-v", "user", "add", "a"],
        &env,
    )
    .await;
    assert_eq!(result.code, Some(0), "{result:?}");
    assert_eq!(
        result.stderr,
        "dffmpeg-admin: warning: no configuration file found; using defaults\n\
         dffmpeg-admin: coordinator not running; opened the store directly\n"
    );
    assert_eq!(result.stdout, added("a", FAKE_KEY));
    assert_eq!(read_log(&log).0, "--admin-stdio");
}

#[tokio::test]
async fn the_environment_variable_names_the_file() {
    let cwd = tempfile::tempdir().unwrap();
    std::fs::create_dir(cwd.path().join("conf")).unwrap();
    let log = cwd.path().join("fake.log");
    std::fs::write(
        cwd.path().join("conf/c.yaml"),
        format!("fake_log: {}\n", log.display()),
    )
    .unwrap();
    let env = [("DFFMPEG_COORDINATOR_CONFIG", "conf/c.yaml")];
    let result = run_in(
        &installs().with_coordinator,
        cwd.path(),
        &["user", "add", "a"],
        &env,
    )
    .await;
    assert_eq!(result.code, Some(0), "{result:?}");
    assert_eq!(read_log(&log).0, "--config conf/c.yaml --admin-stdio");

    let env = [("DFFMPEG_COORDINATOR_CONFIG", "conf/missing.yaml")];
    let result = run_in(
        &installs().with_coordinator,
        cwd.path(),
        &["user", "add", "a"],
        &env,
    )
    .await;
    assert_eq!(result.code, Some(1));
    assert_eq!(
        result.stderr,
        "dffmpeg-admin: loading configuration: conf/missing.yaml: No such file or directory (os error 2)\n"
    );
}

#[tokio::test]
async fn json_prints_the_identity_object_or_an_array() {
    let cwd = tempfile::tempdir().unwrap();
    coordinator_yaml(cwd.path(), "ok");
    let one = run(cwd.path(), &["user", "add", "a", "--json"]).await;
    assert_eq!(one.code, Some(0), "{one:?}");
    assert!(
        one.stdout.ends_with('\n') && one.stdout.lines().count() == 1,
        "{one:?}"
    );
    let value: Value = serde_json::from_str(&one.stdout).unwrap();
    assert_eq!(
        value,
        json!({"client_id": "a", "role": "client", "allowed_cidrs": ["0.0.0.0/0", "::/0"], "key_storage": "plain",
               "key_id": null, "created_at": "2026-11-24T18:30:00.000000Z",
               "updated_at": "2026-11-24T18:30:00.000000Z", "hmac_key": FAKE_KEY})
    );
    assert!(
        one.stdout
            .starts_with(r#"{"client_id":"a","role":"client","allowed_cidrs""#),
        "field order is kept"
    );

    let several = run(cwd.path(), &["--json", "user", "add", "a", "b"]).await;
    assert_eq!(several.code, Some(0), "{several:?}");
    let value: Value = serde_json::from_str(&several.stdout).unwrap();
    let ids: Vec<&str> = value
        .as_array()
        .unwrap()
        .iter()
        .map(|item| item["client_id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, vec!["a", "b"]);
}

#[tokio::test]
async fn several_ids_succeed_or_fail_on_their_own() {
    let cwd = tempfile::tempdir().unwrap();
    let log = coordinator_yaml(cwd.path(), "ok");
    let result = run(cwd.path(), &["user", "add", "a", "taken", "b"]).await;
    assert_eq!(result.code, Some(1), "{result:?}");
    assert_eq!(
        result.stdout,
        format!("{}{}", added("a", FAKE_KEY), added("b", FAKE_KEY))
    );
    assert_eq!(
        result.stderr,
        "dffmpeg-admin: User 'taken' already exists.\n"
    );
    let (_, requests) = read_log(&log);
    let ids: Vec<u64> = requests.iter().map(|request| request.id).collect();
    assert_eq!(ids, vec![1, 2, 3, 4]);
}

#[tokio::test]
async fn protocol_codes_map_to_exit_codes() {
    let cwd = tempfile::tempdir().unwrap();
    coordinator_yaml(cwd.path(), "ok");
    let result = run(cwd.path(), &["user", "add", "refused"]).await;
    assert_eq!(result.code, Some(2), "invalid_argument exits 2: {result:?}");
    assert_eq!(result.stderr, "dffmpeg-admin: refused by the fake\n");
    let result = run(cwd.path(), &["user", "add", "taken"]).await;
    assert_eq!(result.code, Some(1), "{result:?}");
}

#[tokio::test]
async fn a_locked_database_exits_3() {
    let cwd = tempfile::tempdir().unwrap();
    coordinator_yaml(cwd.path(), "locked");
    let result = run(cwd.path(), &["user", "add", "a"]).await;
    assert_eq!(result.code, Some(3), "{result:?}");
    assert_eq!(
        result.stderr,
        "dffmpeg-admin: the database ./dffmpeg-data is locked by another process and the admin socket \
         ./dffmpeg-data/admin.sock did not answer (no socket file); is the coordinator starting or stopping?\n"
    );
    assert!(result.stdout.is_empty());
}

#[tokio::test]
async fn a_failing_coordinator_exits_1_with_its_line() {
    let cwd = tempfile::tempdir().unwrap();
    coordinator_yaml(cwd.path(), "fail");
    let result = run(cwd.path(), &["user", "add", "a"]).await;
    assert_eq!(result.code, Some(1), "{result:?}");
    assert_eq!(
        result.stderr,
        "dffmpeg-admin: loading configuration: ./dffmpeg-coordinator.yaml:1:1: unknown key 'janitor.intervall'\n"
    );
}

#[tokio::test]
async fn no_coordinator_binary_exits_1() {
    let cwd = tempfile::tempdir().unwrap();
    std::fs::write(cwd.path().join("dffmpeg-coordinator.yaml"), "").unwrap();
    let result = run_in(&installs().alone, cwd.path(), &["user", "add", "a"], &[]).await;
    assert_eq!(result.code, Some(1), "{result:?}");
    assert_eq!(
        result.stderr,
        "dffmpeg-admin: the coordinator is not running and dffmpeg-coordinator was not found next to dffmpeg-admin \
         or on PATH\n"
    );
}

/// An in-test admin socket: answers `hello` and `user.add`, recording the requests; or closes every connection
/// at once (the coordinator's peer check refusing us).
fn serve_socket(
    path: &Path,
    refuse: bool,
) -> (
    tokio::task::JoinHandle<()>,
    std::sync::Arc<std::sync::Mutex<Vec<Value>>>,
) {
    let listener = UnixListener::bind(path).unwrap();
    let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let recorded = std::sync::Arc::clone(&seen);
    let task = tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            if refuse {
                continue;
            }
            let (read_half, mut write_half) = stream.into_split();
            let mut lines = BufReader::new(read_half).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                let request: AdminRequestLine = serde_json::from_str(&line).unwrap();
                recorded.lock().unwrap().push(request.args.clone());
                let result = match AdminCommand::from_line(&request).unwrap() {
                    AdminCommand::Hello(_) => {
                        json!({"coordinator_version": "0.1.0-sock", "mode": "socket"})
                    }
                    AdminCommand::UserAdd(args) => {
                        json!({"client_id": args.client_id, "role": args.role,
                        "allowed_cidrs": args.cidrs, "key_storage": "plain", "key_id": null,
                        "created_at": "2026-11-24T18:30:00.000000Z", "updated_at": "2026-11-24T18:30:00.000000Z",
                        "hmac_key": "socket-key"})
                    }
                    other => panic!("unexpected command {other:?}"),
                };
                let mut text =
                    serde_json::to_string(&AdminResponseLine::success(request.id, result)).unwrap();
                text.push('\n');
                if write_half.write_all(text.as_bytes()).await.is_err() {
                    break;
                }
            }
        }
    });
    (task, seen)
}

#[tokio::test]
async fn a_running_coordinator_is_reached_through_its_socket() {
    let cwd = tempfile::tempdir().unwrap();
    std::fs::create_dir(cwd.path().join("dffmpeg-data")).unwrap();
    let (server, seen) = serve_socket(&cwd.path().join("dffmpeg-data/admin.sock"), false);
    let result = run_in(
        &installs().alone,
        cwd.path(),
        &["user", "add", "a", "b", "--verbose", "--cidr", "::1"],
        &[],
    )
    .await;
    assert_eq!(result.code, Some(0), "{result:?}");
    assert_eq!(
        result.stderr,
        "dffmpeg-admin: warning: no configuration file found; using defaults\n\
         dffmpeg-admin: using the admin socket ./dffmpeg-data/admin.sock (coordinator 0.1.0-sock)\n"
    );
    assert_eq!(
        result.stdout,
        format!("{}{}", added("a", "socket-key"), added("b", "socket-key"))
    );
    let seen = seen.lock().unwrap().clone();
    assert_eq!(seen.len(), 3);
    assert_eq!(
        seen[2],
        json!({"client_id": "b", "role": "client", "cidrs": ["::1/128"], "key": null})
    );
    server.abort();
}

#[tokio::test]
async fn configured_paths_are_relative_to_the_file() {
    let cwd = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(cwd.path().join("conf/run")).unwrap();
    std::fs::write(
        cwd.path().join("conf/c.yaml"),
        "admin_socket: run/admin.sock\ndatabase:\n  path: data\n",
    )
    .unwrap();
    let (server, _) = serve_socket(&cwd.path().join("conf/run/admin.sock"), false);
    let result = run_in(
        &installs().alone,
        cwd.path(),
        &["-c", "conf/c.yaml", "-v", "user", "add", "a"],
        &[],
    )
    .await;
    assert_eq!(result.code, Some(0), "{result:?}");
    assert_eq!(
        result.stderr,
        "dffmpeg-admin: using the admin socket conf/run/admin.sock (coordinator 0.1.0-sock)\n"
    );
    server.abort();
}

#[tokio::test]
async fn a_refused_peer_exits_4() {
    let cwd = tempfile::tempdir().unwrap();
    std::fs::create_dir(cwd.path().join("dffmpeg-data")).unwrap();
    let (server, _) = serve_socket(&cwd.path().join("dffmpeg-data/admin.sock"), true);
    let result = run_in(&installs().alone, cwd.path(), &["user", "add", "a"], &[]).await;
    assert_eq!(result.code, Some(4), "{result:?}");
    let uid = nix::unistd::geteuid().as_raw();
    assert!(
        result.stderr.ends_with(&format!(
            "dffmpeg-admin: the coordinator refused uid {uid} on the admin socket ./dffmpeg-data/admin.sock; run \
             dffmpeg-admin as uid {uid} or as root\n"
        )),
        "{result:?}"
    );
    server.abort();
}

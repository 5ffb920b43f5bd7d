//! The admin client: one-shot sessions against `tests/fixtures/fake-coordinator` (a shell script speaking the
//! `--admin-stdio` protocol, steered by its `--config` file), socket sessions against an in-test listener, and the
//! way-choosing of cli.md §2.1.

use std::path::{Path, PathBuf};
use std::time::Duration;

use client::admin::{self, AdminConnection, AdminError, AdminTarget, AdminTransport};
use protocol::admin::{
    AdminCommand, AdminErrorCode, AdminRequestLine, AdminResponseLine, IdentityInfo, Role,
    UserAddArgs,
};
use serde_json::json;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::UnixListener;

const FAKE_COORDINATOR: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/tests/fixtures/fake-coordinator"
);
const TEST_TIMEOUT: Duration = Duration::from_secs(20);

fn fake() -> PathBuf {
    PathBuf::from(FAKE_COORDINATOR)
}

/// A config file steering the fake, and its log.
fn fake_config(dir: &Path, mode: &str) -> (PathBuf, PathBuf) {
    let config = dir.join("coordinator.yaml");
    let log = dir.join("fake.log");
    std::fs::write(
        &config,
        format!("port: 0\nfake_mode: {mode}\nfake_log: {}\n", log.display()),
    )
    .unwrap();
    (config, log)
}

fn user_add(client_id: &str) -> AdminCommand {
    AdminCommand::UserAdd(UserAddArgs {
        client_id: client_id.into(),
        role: Role::Worker,
        cidrs: vec!["10.0.0.0/8".into()],
        key: None,
    })
}

fn target(dir: &Path, config: Option<PathBuf>) -> AdminTarget {
    let mut target = AdminTarget::new(dir.join("data/admin.sock"), dir.join("data"));
    target.config_file = config;
    target.coordinator_binary = Some(fake());
    target.reply_timeout = Duration::from_secs(10);
    target
}

async fn within<F: Future>(future: F) -> F::Output {
    tokio::time::timeout(TEST_TIMEOUT, future)
        .await
        .expect("the admin exchange did not finish in time")
}

#[tokio::test]
async fn one_shot_session_numbers_and_pipelines_requests() {
    let dir = tempfile::tempdir().unwrap();
    let (config, log) = fake_config(dir.path(), "ok");
    let mut connection = within(AdminConnection::spawn_stdio(
        &fake(),
        Some(&config),
        Duration::from_secs(10),
    ))
    .await
    .unwrap();
    assert_eq!(
        connection.transport(),
        &AdminTransport::OneShot { binary: fake() }
    );
    assert_eq!(connection.hello().coordinator_version, "0.1.0-fake");
    assert_eq!(connection.hello().mode, "stdio");

    let value = within(connection.request(&user_add("late"))).await.unwrap();
    let identity: IdentityInfo = serde_json::from_value(value).unwrap();
    assert_eq!(identity.client_id, "late");
    assert_eq!(identity.role, Role::Worker);
    assert_eq!(identity.allowed_cidrs, vec!["10.0.0.0/8"]);
    assert!(identity.hmac_key.is_some());

    match within(connection.request(&user_add("taken"))).await {
        Err(AdminError::Remote(remote)) => {
            assert_eq!(remote.code, AdminErrorCode::UserExists);
            assert_eq!(remote.message, "User 'taken' already exists.");
        }
        other => panic!("expected a remote error, got {other:?}"),
    }

    let outcomes = within(connection.pipeline(&[user_add("a"), user_add("taken"), user_add("b")]))
        .await
        .unwrap();
    assert_eq!(outcomes.len(), 3);
    assert_eq!(outcomes[0].as_ref().unwrap()["client_id"], json!("a"));
    assert_eq!(
        outcomes[1].as_ref().unwrap_err().code,
        AdminErrorCode::UserExists
    );
    assert_eq!(outcomes[2].as_ref().unwrap()["client_id"], json!("b"));
    within(connection.close()).await.unwrap();

    let log = std::fs::read_to_string(log).unwrap();
    let mut lines = log.lines();
    assert_eq!(
        lines.next(),
        Some(format!("args: --config {} --admin-stdio", config.display()).as_str())
    );
    let requests: Vec<AdminRequestLine> = lines
        .map(|line| serde_json::from_str(line.strip_prefix("line: ").unwrap()).unwrap())
        .collect();
    let ids: Vec<u64> = requests.iter().map(|request| request.id).collect();
    assert_eq!(ids, vec![1, 2, 3, 4, 5, 6]);
    assert_eq!(requests[0].command, "hello");
    assert_eq!(
        requests[0].args,
        json!({"client_version": protocol::VERSION})
    );
    assert_eq!(requests[1].command, "user.add");
}

#[tokio::test]
async fn a_missing_socket_means_one_shot_and_a_locked_database_is_distinct() {
    let dir = tempfile::tempdir().unwrap();
    let (config, _) = fake_config(dir.path(), "locked");
    let err = within(admin::connect(&target(dir.path(), Some(config))))
        .await
        .unwrap_err();
    match err {
        AdminError::DatabaseLocked { detail } => assert_eq!(
            detail,
            format!(
                "the database {0}/data is locked by another process and the admin socket {0}/data/admin.sock did \
                 not answer (no socket file); is the coordinator starting or stopping?",
                dir.path().display()
            )
        ),
        other => panic!("expected DatabaseLocked, got {other:?}"),
    }
}

#[tokio::test]
async fn a_refused_connection_falls_back_to_one_shot() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("data")).unwrap();
    // A socket file nobody listens on: connect gets ECONNREFUSED.
    drop(std::os::unix::net::UnixListener::bind(dir.path().join("data/admin.sock")).unwrap());
    let (config, _) = fake_config(dir.path(), "ok");
    let connection = within(admin::connect(&target(dir.path(), Some(config.clone()))))
        .await
        .unwrap();
    assert_eq!(
        connection.transport(),
        &AdminTransport::OneShot { binary: fake() }
    );
    within(connection.close()).await.unwrap();

    let (config, _) = fake_config(dir.path(), "locked");
    let err = within(admin::connect(&target(dir.path(), Some(config))))
        .await
        .unwrap_err();
    assert!(
        err.to_string()
            .contains("did not answer (connection refused)"),
        "{err}"
    );
}

#[tokio::test]
async fn a_failing_child_is_reported_with_its_last_stderr_line() {
    let dir = tempfile::tempdir().unwrap();
    let (config, _) = fake_config(dir.path(), "fail");
    let err = within(admin::connect(&target(dir.path(), Some(config.clone()))))
        .await
        .unwrap_err();
    match err {
        AdminError::CoordinatorFailed { message, exit_code } => {
            assert_eq!(
                message,
                format!(
                    "loading configuration: {}:1:1: unknown key 'janitor.intervall'",
                    config.display()
                )
            );
            assert_eq!(exit_code, Some(2));
        }
        other => panic!("expected CoordinatorFailed, got {other:?}"),
    }
}

#[tokio::test]
async fn a_child_dying_mid_session_is_reported() {
    let dir = tempfile::tempdir().unwrap();
    let (config, _) = fake_config(dir.path(), "crash");
    let mut connection = within(admin::connect(&target(dir.path(), Some(config))))
        .await
        .unwrap();
    let err = within(connection.request(&user_add("late")))
        .await
        .unwrap_err();
    assert!(
        matches!(&err, AdminError::CoordinatorFailed { message, exit_code: Some(1) } if message == "committing: storage unavailable"),
        "{err:?}"
    );
}

#[tokio::test]
async fn a_silent_child_times_out() {
    let dir = tempfile::tempdir().unwrap();
    let (config, _) = fake_config(dir.path(), "silent");
    let err = within(AdminConnection::spawn_stdio(
        &fake(),
        Some(&config),
        Duration::from_millis(300),
    ))
    .await
    .unwrap_err();
    assert!(matches!(err, AdminError::Timeout(_)), "{err:?}");
    assert_eq!(
        AdminError::Timeout(admin::REPLY_TIMEOUT).to_string(),
        "the coordinator did not answer within 60 s"
    );
}

#[tokio::test]
async fn a_noisy_stderr_is_drained_while_waiting() {
    let dir = tempfile::tempdir().unwrap();
    let (config, _) = fake_config(dir.path(), "noisy");
    let connection = within(AdminConnection::spawn_stdio(
        &fake(),
        Some(&config),
        Duration::from_secs(10),
    ))
    .await
    .unwrap();
    within(connection.close()).await.unwrap();
}

#[tokio::test]
async fn a_missing_binary_is_an_io_error_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let mut target = target(dir.path(), None);
    target.coordinator_binary = Some(dir.path().join("no-such-coordinator"));
    let err = within(admin::connect(&target)).await.unwrap_err();
    assert!(err.to_string().starts_with(&format!(
        "starting {}",
        dir.path().join("no-such-coordinator").display()
    )));
}

/// How the in-test admin socket behaves.
#[derive(Debug, Clone, Copy)]
enum SocketPeer {
    /// Answers `hello` and `user.add`.
    Serves,
    /// Closes every connection at once, as the coordinator's peer-credential check does.
    RefusesPeer,
    /// Answers `hello`, then closes.
    ClosesAfterHello,
    /// Answers `hello`, then neither reads nor answers, keeping the connection open.
    StallsAfterHello,
}

fn serve_socket(path: &Path, peer: SocketPeer) -> tokio::task::JoinHandle<()> {
    let listener = UnixListener::bind(path).unwrap();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            if matches!(peer, SocketPeer::RefusesPeer) {
                drop(stream);
                continue;
            }
            let (read_half, mut write_half) = stream.into_split();
            let mut lines = BufReader::new(read_half).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                let request: AdminRequestLine = serde_json::from_str(&line).unwrap();
                let reply = match AdminCommand::from_line(&request).unwrap() {
                    AdminCommand::Hello(_) => AdminResponseLine::success(
                        request.id,
                        json!({"coordinator_version": "0.1.0-sock", "mode": "socket"}),
                    ),
                    AdminCommand::UserAdd(args) => AdminResponseLine::success(
                        request.id,
                        json!({"client_id": args.client_id, "role": args.role, "allowed_cidrs": args.cidrs,
                               "key_storage": "plain", "key_id": null, "created_at": "2026-11-24T18:30:00.000000Z",
                               "updated_at": "2026-11-24T18:30:00.000000Z", "hmac_key": "k"}),
                    ),
                    other => panic!("unexpected command {other:?}"),
                };
                let mut text = serde_json::to_string(&reply).unwrap();
                text.push('\n');
                write_half.write_all(text.as_bytes()).await.unwrap();
                if matches!(peer, SocketPeer::ClosesAfterHello) {
                    break;
                }
                if matches!(peer, SocketPeer::StallsAfterHello) {
                    std::future::pending::<()>().await;
                }
            }
        }
    })
}

#[tokio::test]
async fn a_listening_socket_is_used() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("data")).unwrap();
    let server = serve_socket(&dir.path().join("data/admin.sock"), SocketPeer::Serves);
    let mut target = target(dir.path(), None);
    target.coordinator_binary = Some(dir.path().join("never-started"));
    let mut connection = within(admin::connect(&target)).await.unwrap();
    assert_eq!(
        connection.transport(),
        &AdminTransport::Socket {
            path: dir.path().join("data/admin.sock")
        }
    );
    assert_eq!(connection.hello().coordinator_version, "0.1.0-sock");
    let outcomes = within(connection.pipeline(&[user_add("a"), user_add("b")]))
        .await
        .unwrap();
    assert_eq!(outcomes[1].as_ref().unwrap()["client_id"], json!("b"));
    within(connection.close()).await.unwrap();
    server.abort();
}

#[tokio::test]
async fn a_peer_refused_before_hello_is_a_permission_failure() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("data")).unwrap();
    let server = serve_socket(&dir.path().join("data/admin.sock"), SocketPeer::RefusesPeer);
    let err = within(admin::connect(&target(dir.path(), None)))
        .await
        .unwrap_err();
    match &err {
        AdminError::PeerRefused { uid, owner_uid, .. } => {
            assert_eq!(*uid, nix::unistd::geteuid().as_raw());
            assert_eq!(*owner_uid, Some(nix::unistd::geteuid().as_raw()));
        }
        other => panic!("expected PeerRefused, got {other:?}"),
    }
    assert!(
        err.to_string().starts_with("the coordinator refused uid "),
        "{err}"
    );
    server.abort();
}

#[tokio::test]
async fn a_socket_closing_after_hello_is_a_closed_connection() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("data")).unwrap();
    let server = serve_socket(
        &dir.path().join("data/admin.sock"),
        SocketPeer::ClosesAfterHello,
    );
    let mut connection = within(admin::connect(&target(dir.path(), None)))
        .await
        .unwrap();
    let err = within(connection.request(&user_add("a")))
        .await
        .unwrap_err();
    assert!(matches!(err, AdminError::Closed), "{err:?}");
    server.abort();
}

#[tokio::test]
async fn a_stalled_peer_times_out_even_with_a_blocked_write() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("data")).unwrap();
    let server = serve_socket(
        &dir.path().join("data/admin.sock"),
        SocketPeer::StallsAfterHello,
    );
    let mut target = target(dir.path(), None);
    target.reply_timeout = Duration::from_millis(500);
    let mut connection = within(admin::connect(&target)).await.unwrap();
    // Far more than a socket buffer holds, so the write blocks while the replies never come.
    let commands: Vec<AdminCommand> = (0..20_000)
        .map(|n| user_add(&format!("user{n:05}")))
        .collect();
    let err = within(connection.pipeline(&commands)).await.unwrap_err();
    assert!(matches!(err, AdminError::Timeout(_)), "{err:?}");
    server.abort();
}

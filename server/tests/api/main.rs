//! Black-box tests of the coordinator: the real `Application` on 127.0.0.1:0 with a real store in a temp dir,
//! driven over HTTP by the real client, one module per feature. `process` runs the real binary.

mod auth;
mod docs;
mod edge;
mod janitor;
mod jobs;
mod process;
mod sessions;
mod shutdown;
mod streams;
mod submit;

use std::time::Duration;

use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use dffmpeg_coordinator::admin::AdminService;
use dffmpeg_coordinator::app::{self, Application};
use dffmpeg_coordinator::config::Config;
use dffmpeg_coordinator::state::AppState;
use dffmpeg_coordinator::store::Store;
use protocol::admin::{AdminCommand, IdentityInfo, Role, UserAddArgs};
use protocol::rest::JobRequest;
use protocol::signing::HmacKey;

/// One identity made for a test.
#[derive(Debug, Clone)]
pub struct Identity {
    pub id: String,
    pub key: HmacKey,
}

/// A running coordinator and its identities.
#[allow(missing_debug_implementations)]
pub struct TestApp {
    pub addr: std::net::SocketAddr,
    pub base: String,
    pub state: AppState,
    pub client: client::Client,
    pub admin: client::Client,
    pub identities: Vec<Identity>,
    signals: mpsc::Sender<String>,
    server: Option<JoinHandle<Result<(), app::Error>>>,
    pub dir: tempfile::TempDir,
}

/// Identities every test app has: `client01`, `client02` (clients), `worker01`, `worker02` (workers), `admin01`
/// (admin), `faraway` (a client allowed only from 10.0.0.0/8).
pub const STANDARD_IDENTITIES: [(&str, Role, &[&str]); 6] = [
    ("client01", Role::Client, &[]),
    ("client02", Role::Client, &[]),
    ("worker01", Role::Worker, &[]),
    ("admin01", Role::Admin, &[]),
    ("faraway", Role::Client, &["10.0.0.0/8"]),
    ("worker02", Role::Worker, &[]),
];

/// Opens a stopped coordinator's store. sled releases its lock from a background thread after the last handle
/// drops, so a store that was just closed may still be locked for a moment: retry briefly.
pub async fn open_stopped_store(dir: &std::path::Path) -> dffmpeg_coordinator::store::Opened {
    let mut tries = 0;
    loop {
        match Store::open(dir, 8 << 20) {
            Ok(opened) => return opened,
            Err(dffmpeg_coordinator::store::Error::Locked { .. }) if tries < 100 => {
                tries += 1;
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            Err(err) => panic!("opening the stopped store: {err}"),
        }
    }
}

/// Creates identities in a stopped store, as `dffmpeg-admin` does offline.
pub async fn add_identities(
    dir: &std::path::Path,
    wanted: &[(&str, Role, &[&str])],
) -> Vec<Identity> {
    let opened = open_stopped_store(dir).await;
    let stop = tokio_util::sync::CancellationToken::new();
    let flusher = tokio::spawn(opened.flusher.run(stop.clone()));
    let service = AdminService::stdio(opened.store.clone());
    let mut out = Vec::new();
    for (id, role, cidrs) in wanted {
        let args = UserAddArgs {
            client_id: (*id).to_owned(),
            role: *role,
            cidrs: cidrs.iter().map(|c| (*c).to_owned()).collect(),
            key: None,
        };
        let value = service.handle(AdminCommand::UserAdd(args)).await.unwrap();
        let info: IdentityInfo = serde_json::from_value(value).unwrap();
        out.push(Identity {
            id: info.client_id,
            key: HmacKey::parse(&info.hmac_key.unwrap()).unwrap(),
        });
    }
    opened.store.flush().await.unwrap();
    stop.cancel();
    flusher.await.unwrap();
    opened.store.mark_clean_stop().unwrap();
    out
}

impl TestApp {
    pub async fn spawn() -> TestApp {
        TestApp::spawn_with(|_| {}).await
    }

    pub async fn spawn_with(tweak: impl FnOnce(&mut Config)) -> TestApp {
        let dir = tempfile::tempdir().unwrap();
        let identities = add_identities(dir.path(), &STANDARD_IDENTITIES).await;
        let mut config = Config::for_tests(dir.path());
        tweak(&mut config);
        // sled releases its lock from a background thread after the last handle drops: retry briefly.
        let mut tries = 0;
        let app = loop {
            match Application::build(config.clone(), false).await {
                Ok(app) => break app,
                Err(app::Error::Store(dffmpeg_coordinator::store::Error::Locked { .. }))
                    if tries < 100 =>
                {
                    tries += 1;
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                Err(err) => panic!("building the coordinator: {err}"),
            }
        };
        let addr = app.local_addr();
        let state = app.state();
        let (signals, rx) = mpsc::channel(4);
        let server = tokio::spawn(app.run(rx));
        let base = format!("http://{addr}");
        let client = client::Client::new(&base, "client01", identities[0].key.clone()).unwrap();
        let admin = client::Client::new(&base, "admin01", identities[3].key.clone()).unwrap();
        TestApp {
            addr,
            base,
            state,
            client,
            admin,
            identities,
            signals,
            server: Some(server),
            dir,
        }
    }

    /// A client signing as one of the standard identities.
    pub fn client_as(&self, id: &str) -> client::Client {
        let identity = self
            .identities
            .iter()
            .find(|identity| identity.id == id)
            .unwrap();
        client::Client::new(&self.base, id, identity.key.clone()).unwrap()
    }

    /// Runs a janitor pass of every rule at `now`.
    pub async fn janitor_sweep(
        &self,
        now: time::OffsetDateTime,
    ) -> std::collections::BTreeMap<String, u64> {
        self.janitor_action(protocol::rest::JanitorAction::RunAll, now)
            .await
    }

    /// Runs one janitor action at `now` (`clean_jobs` leaves live sessions alone while time is moved ahead).
    pub async fn janitor_action(
        &self,
        action: protocol::rest::JanitorAction,
        now: time::OffsetDateTime,
    ) -> std::collections::BTreeMap<String, u64> {
        dffmpeg_coordinator::janitor::sweep_once(&self.state, action, now)
            .await
            .unwrap()
    }

    /// Sends a shutdown signal; the server must return within 10 s.
    pub async fn shutdown(mut self) -> Result<(), app::Error> {
        let _ = self.signals.send("SIGTERM".to_owned()).await;
        let server = self.server.take().unwrap();
        tokio::time::timeout(Duration::from_secs(10), server)
            .await
            .expect("the coordinator stops within 10 s")
            .unwrap()
    }

    /// Stops like `shutdown` and hands back the data directory.
    pub async fn stop(mut self) -> (Result<(), app::Error>, tempfile::TempDir) {
        let _ = self.signals.send("SIGTERM".to_owned()).await;
        let server = self.server.take().unwrap();
        let result = tokio::time::timeout(Duration::from_secs(10), server)
            .await
            .expect("the coordinator stops within 10 s")
            .unwrap();
        (result, self.dir)
    }

    /// A second signal (forces the shutdown).
    pub async fn signal(&self, name: &str) {
        self.signals.send(name.to_owned()).await.unwrap();
    }

    pub fn take_server(&mut self) -> JoinHandle<Result<(), app::Error>> {
        self.server.take().unwrap()
    }
}

/// A small ffmpeg job on `$Media`.
pub fn transcode() -> JobRequest {
    JobRequest {
        binary_name: "ffmpeg".into(),
        arguments: vec![
            "-y".into(),
            "-i".into(),
            "$Media/in.mp4".into(),
            "$Media/out.mp4".into(),
        ],
        paths: vec!["Media".into()],
        working_directory: Some("$Media".into()),
        ..JobRequest::default()
    }
}

/// Waits for `check` to hold, polling every 20 ms, at most `secs` seconds; the message names what did not happen.
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
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

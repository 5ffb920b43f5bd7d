//! `Application`: `build` opens and checks the store, loads the state and binds the listener; `run` spawns every
//! task (the one place tasks are spawned), serves with our own HTTP/1 accept loop (header-read timeout, STYLE.md
//! §8), and on the first signal walks the shutdown of lifecycle.md §6.2 within `shutdown_timeout_seconds`. A
//! second signal skips the waits; a failed flush or a core task that ends stops everything with an error.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use axum::Router;
use axum::extract::ConnectInfo;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use time::OffsetDateTime;
use tokio::net::TcpListener;
use tokio::sync::{Semaphore, mpsc};
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tower::ServiceExt;

use protocol::admin::Role;
use protocol::rest::JobStatus;

use crate::config::Config;
use crate::hub::EventHub;
use crate::identity::{CachedIdentity, IdentityCache, ReplayCache};
use crate::janitor::{self, Janitor};
use crate::scheduler::{self, Scheduler};
use crate::settings::Settings;
use crate::state::{AppState, SessionRegistry, StreamCounter};
use crate::store::{self, Engine, Flusher, SledEngine, Store};
use crate::views::WaitBoard;

/// Why the coordinator could not start or did not stop cleanly.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("opening the store: {0}")]
    Store(#[source] store::Error),
    #[error("binding {addr}: {source}")]
    Bind {
        addr: String,
        source: std::io::Error,
    },
    #[error("the identity of '{client_id}' does not decode; see \"Backups\" in the README")]
    Identity { client_id: String },
    #[error("a store flush failed; memory and disk may disagree, so the coordinator stopped")]
    StoreFailed,
    #[error("core task '{0}' ended on its own")]
    TaskEnded(&'static str),
    #[error("the final flush failed")]
    FinalFlush,
}

/// The built coordinator, bound but not yet serving.
#[derive(Debug)]
pub struct Application {
    listener: TcpListener,
    state: AppState,
    scheduler: Scheduler,
    janitor: Janitor,
    flusher: Flusher,
    started: Instant,
}

/// The identity every start makes sure exists (auth.md §6.3).
pub const LOCALADMIN: &str = "localadmin";

fn load_identities(
    store: &Store,
    cache: &IdentityCache,
    now: OffsetDateTime,
) -> Result<bool, Error> {
    let mut has_localadmin = false;
    for (client_id, identity) in store.identities().map_err(Error::Store)? {
        let cached = CachedIdentity::from_stored(&identity).ok_or(Error::Identity {
            client_id: client_id.clone(),
        })?;
        cache.insert(&client_id, cached);
        has_localadmin |= client_id == LOCALADMIN;
    }
    if !has_localadmin {
        let identity = crate::admin::new_identity(
            Role::Admin,
            vec!["127.0.0.0/8".to_owned(), "::1/128".to_owned()],
            protocol::signing::HmacKey::generate(),
            now,
        );
        let mut batch = store::Batch::new();
        batch.put_identity(LOCALADMIN, &identity);
        store.commit(batch).map_err(Error::Store)?;
        let cached = CachedIdentity::from_stored(&identity).ok_or(Error::Identity {
            client_id: LOCALADMIN.to_owned(),
        })?;
        cache.insert(LOCALADMIN, cached);
        tracing::info!(client_id = LOCALADMIN, "identity created");
    }
    Ok(!has_localadmin)
}

impl Application {
    /// Opens the store (startup checks included), loads identities, replay entries, active jobs and workers,
    /// creates `localadmin` if missing, and binds the listener. Nothing is served yet.
    pub async fn build(config: Config, dev: bool) -> Result<Application, Error> {
        Application::build_with_engine(config, dev, |engine| Arc::new(engine)).await
    }

    /// `build` over the sled engine as wrapped by `wrap`: the store trait's seam, used by tests to inject
    /// storage faults.
    pub async fn build_with_engine(
        config: Config,
        dev: bool,
        wrap: impl FnOnce(SledEngine) -> Arc<dyn Engine>,
    ) -> Result<Application, Error> {
        let started = Instant::now();
        let settings = Arc::new(Settings::from_config(&config, dev));
        let engine = SledEngine::open(&config.database.path, settings.cache_capacity_bytes)
            .map_err(|err| Error::Store(err.into()))?;
        let opened =
            Store::open_engine(wrap(engine), &config.database.path).map_err(Error::Store)?;
        if opened.unclean {
            tracing::warn!(path = %config.database.path.display(), "store recovered after an unclean stop");
        }
        if opened.repaired > 0 {
            tracing::warn!(
                entries = opened.repaired,
                "index entries rebuilt from their records"
            );
        }
        let store = opened.store;
        let now = OffsetDateTime::now_utc();
        tracing::warn!(
            "HMAC keys are stored unencrypted; set encryption.keys_file to encrypt them"
        );
        let identities = IdentityCache::default();
        load_identities(&store, &identities, now)?;
        let replay = ReplayCache::default();
        for entry in store
            .replay_entries_from(now.unix_timestamp())
            .map_err(Error::Store)?
        {
            replay.load(
                &entry.client_id,
                entry.signature,
                entry.expires_at,
                entry.job_id,
            );
        }
        let mut active = Vec::new();
        for status in JobStatus::ALL
            .into_iter()
            .filter(|status| status.is_active())
        {
            active.extend(store.jobs_with_status(status).map_err(Error::Store)?);
        }
        let workers = store.workers().map_err(Error::Store)?;
        tracing::info!(
            path = %config.database.path.display(),
            active_jobs = active.len(),
            identities = identities.len(),
            workers = workers.len(),
            "store opened"
        );
        store.flush_now().await.map_err(Error::Store)?;
        let hub = EventHub::new();
        let waits = WaitBoard::default();
        let (scheduler_handle, scheduler) = scheduler::new(
            store.clone(),
            hub.clone(),
            waits.clone(),
            settings.clone(),
            active,
            workers,
            now,
        );
        let (janitor_handle, janitor) =
            janitor::new(settings.janitor_interval, settings.janitor_jitter);
        let addr = format!("{}:{}", config.host, config.port);
        let listener = TcpListener::bind(&addr)
            .await
            .map_err(|source| Error::Bind {
                addr: addr.clone(),
                source,
            })?;
        let budget = usize::try_from(settings.limits.max_body_bytes.saturating_mul(64))
            .unwrap_or(usize::MAX);
        let state = AppState {
            store,
            scheduler: scheduler_handle,
            janitor: janitor_handle,
            sessions: SessionRegistry::default(),
            hub,
            waits,
            identities,
            replay,
            settings,
            streams: StreamCounter::default(),
            body_budget: Arc::new(Semaphore::new(budget.min(Semaphore::MAX_PERMITS))),
            shutting_down: Arc::new(std::sync::atomic::AtomicBool::new(false)),
            cancel: CancellationToken::new(),
            closing: CancellationToken::new(),
            tasks: TaskTracker::new(),
        };
        Ok(Application {
            listener,
            state,
            scheduler,
            janitor,
            flusher: opened.flusher,
            started,
        })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.listener
            .local_addr()
            .unwrap_or_else(|_| SocketAddr::from(([127, 0, 0, 1], 0)))
    }

    /// The shared handles (tests drive the janitor and inspect the store through them).
    pub fn state(&self) -> AppState {
        self.state.clone()
    }

    /// Serves until the first message on `signals` (its text names the signal), then shuts down; a second message
    /// skips the remaining waits.
    pub async fn run(self, mut signals: mpsc::Receiver<String>) -> Result<(), Error> {
        let Application {
            listener,
            state,
            scheduler,
            janitor,
            flusher,
            started,
        } = self;
        let flusher_stop = CancellationToken::new();
        let flusher_task = tokio::spawn(flusher.run(flusher_stop.clone()));
        let core_ended = CancellationToken::new();
        let scheduler_task = supervise(
            "scheduler",
            scheduler.run(state.cancel.child_token()),
            core_ended.clone(),
        );
        let janitor_stop = state.cancel.child_token();
        let janitor_task = supervise(
            "janitor",
            janitor.run(state.clone(), janitor_stop.clone()),
            CancellationToken::new(),
        );
        let connections = TaskTracker::new();
        let addr = listener
            .local_addr()
            .map(|addr| addr.to_string())
            .unwrap_or_default();
        let router = crate::http::router(state.clone());
        let accept_task = tokio::spawn(accept_loop(
            listener,
            router,
            state.closing.clone(),
            connections.clone(),
            state.settings.limits.header_read_timeout,
        ));
        let fatal = state.store.fatal();
        tracing::info!(
            addr = %addr,
            startup_ms = started.elapsed().as_millis() as u64,
            "ready"
        );
        let mut outcome: Result<(), Error> = Ok(());
        let signal = tokio::select! {
            signal = signals.recv() => signal.unwrap_or_else(|| "shutdown".to_owned()),
            () = fatal.cancelled() => {
                outcome = Err(Error::StoreFailed);
                "store failure".to_owned()
            }
            () = core_ended.cancelled() => {
                outcome = Err(Error::TaskEnded("scheduler"));
                "core task ended".to_owned()
            }
        };
        // Step 1: health answers 503; no janitor pass runs any more.
        state.shutting_down.store(true, Ordering::SeqCst);
        janitor_stop.cancel();
        tracing::info!(signal = %signal, "shutting down");
        let forced = CancellationToken::new();
        {
            let forced = forced.clone();
            tokio::spawn(async move {
                if let Some(signal) = signals.recv().await {
                    tracing::warn!(signal = %signal, "shutdown forced");
                    forced.cancel();
                }
            });
        }
        // Step 2: the shutdown delay, serving normally.
        if outcome.is_ok() {
            tokio::select! {
                () = tokio::time::sleep(state.settings.shutdown_delay) => {}
                () = forced.cancelled() => {}
            }
        }
        // Steps 3 and 4: stop accepting; streams and long polls end; requests in flight finish.
        let deadline = Instant::now() + state.settings.shutdown_timeout;
        state.closing.cancel();
        let _ = accept_task.await;
        connections.close();
        state.tasks.close();
        let drained = async {
            connections.wait().await;
            state.tasks.wait().await;
        };
        tokio::select! {
            () = drained => {}
            () = tokio::time::sleep_until(deadline) => {
                tracing::warn!(connections = connections.len(), tasks = state.tasks.len(), "requests still running at the shutdown deadline; abandoned");
            }
            () = forced.cancelled() => {}
        }
        // Step 6: stop the scheduler and the janitor, then the final flush.
        state.cancel.cancel();
        let _ = tokio::time::timeout(Duration::from_secs(2), scheduler_task).await;
        let _ = tokio::time::timeout(Duration::from_secs(2), janitor_task).await;
        let flushed = state.store.flush().await;
        flusher_stop.cancel();
        let _ = flusher_task.await;
        if flushed.is_err() {
            return Err(outcome.err().unwrap_or(Error::FinalFlush));
        }
        if outcome.is_ok()
            && let Err(err) = state.store.mark_clean_stop()
        {
            tracing::error!(error = %err, "writing the clean-stop marker failed");
            return Err(Error::FinalFlush);
        }
        tracing::info!(uptime_s = started.elapsed().as_secs(), "stopped");
        outcome
    }
}

/// Runs a core task and cancels `ended` when it finishes or panics, so the coordinator stops and says why.
fn supervise(
    name: &'static str,
    task: impl Future<Output = ()> + Send + 'static,
    ended: CancellationToken,
) -> JoinHandle<()> {
    // The task runs in its own spawn so that a panic is caught by its join handle, not lost with the supervisor.
    let inner = tokio::spawn(task);
    tokio::spawn(async move {
        match inner.await {
            Ok(()) => tracing::debug!(task = name, "task ended"),
            Err(err) if err.is_panic() => {
                tracing::error!(task = name, "core task panicked; the coordinator stops")
            }
            Err(_) => tracing::debug!(task = name, "task cancelled"),
        }
        ended.cancel();
    })
}

/// Accepts connections until `closing`, each served by hyper's HTTP/1 with the header-read timeout.
async fn accept_loop(
    listener: TcpListener,
    router: Router,
    closing: CancellationToken,
    connections: TaskTracker,
    header_read_timeout: Duration,
) {
    let mut last_error_log: Option<Instant> = None;
    loop {
        let accepted = tokio::select! {
            biased;
            () = closing.cancelled() => break,
            accepted = listener.accept() => accepted,
        };
        let (stream, peer) = match accepted {
            Ok(accepted) => accepted,
            Err(err) => {
                if last_error_log.is_none_or(|at| at.elapsed() >= Duration::from_secs(1)) {
                    tracing::warn!(error = %err, "accepting a connection failed");
                    last_error_log = Some(Instant::now());
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let router = router.clone();
        let closing = closing.clone();
        connections.spawn(async move {
            let service =
                hyper::service::service_fn(move |mut request: hyper::Request<Incoming>| {
                    request.extensions_mut().insert(ConnectInfo(peer));
                    router.clone().oneshot(request)
                });
            let mut builder = hyper::server::conn::http1::Builder::new();
            builder
                .timer(TokioTimer::new())
                .header_read_timeout(header_read_timeout)
                .max_buf_size(64 * 1024)
                .max_headers(100);
            let connection = builder
                .serve_connection(TokioIo::new(stream), service)
                .with_upgrades();
            tokio::pin!(connection);
            tokio::select! {
                _ = connection.as_mut() => {}
                () = closing.cancelled() => {
                    connection.as_mut().graceful_shutdown();
                    let _ = connection.await;
                }
            }
        });
    }
}

//! `AppState`: the handles every request handler, session and background task shares. Every field is a handle
//! (cheap to clone, no outer `Arc`); the state itself lives in the scheduler, the store and the caches.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use protocol::SessionId;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::hub::EventHub;
use crate::identity::{IdentityCache, ReplayCache};
use crate::janitor::JanitorHandle;
use crate::scheduler::SchedulerHandle;
use crate::settings::Settings;
use crate::store::Store;
use crate::views::WaitBoard;

/// Open worker sessions and upgrades waiting for `hello` (a tiny map: one entry per connected worker).
#[derive(Debug, Clone, Default)]
pub struct SessionRegistry {
    inner: Arc<Mutex<Registry>>,
}

#[derive(Debug, Default)]
struct Registry {
    /// Sessions past `hello`: session id → worker id.
    sessions: HashMap<SessionId, String>,
    /// Upgrades waiting for `hello`, per identity.
    waiting: HashMap<String, usize>,
}

/// Upgrades waiting for `hello` allowed per identity (limits-and-bad-input.md §2.2).
pub const MAX_WAITING_PER_IDENTITY: usize = 4;

/// A place in the registry, from the upgrade until the session ends.
#[derive(Debug)]
pub struct SessionTicket {
    registry: SessionRegistry,
    worker: String,
    session: Option<SessionId>,
}

impl SessionRegistry {
    fn lock(&self) -> std::sync::MutexGuard<'_, Registry> {
        self.inner
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Admits an upgrade if fewer than `max` sessions (waiting ones included) exist and the identity has fewer than
    /// four waiting for `hello`.
    pub fn try_admit(&self, worker: &str, max: usize) -> Option<SessionTicket> {
        let mut registry = self.lock();
        let waiting: usize = registry.waiting.values().sum();
        if registry.sessions.len() + waiting >= max
            || registry.waiting.get(worker).copied().unwrap_or(0) >= MAX_WAITING_PER_IDENTITY
        {
            return None;
        }
        *registry.waiting.entry(worker.to_owned()).or_default() += 1;
        Some(SessionTicket {
            registry: self.clone(),
            worker: worker.to_owned(),
            session: None,
        })
    }

    /// Worker ids with an open session.
    pub fn connected(&self) -> HashSet<String> {
        self.lock().sessions.values().cloned().collect()
    }

    /// Open sessions (past `hello`).
    pub fn len(&self) -> usize {
        self.lock().sessions.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl SessionTicket {
    /// The session passed `hello`.
    pub fn promote(&mut self, session: SessionId) {
        let mut registry = self.registry.lock();
        if let Some(count) = registry.waiting.get_mut(&self.worker) {
            *count -= 1;
            if *count == 0 {
                registry.waiting.remove(&self.worker);
            }
        }
        registry.sessions.insert(session, self.worker.clone());
        self.session = Some(session);
    }
}

impl Drop for SessionTicket {
    fn drop(&mut self) {
        let mut registry = self.registry.lock();
        match self.session {
            Some(session) => {
                registry.sessions.remove(&session);
            }
            None => {
                if let Some(count) = registry.waiting.get_mut(&self.worker) {
                    *count -= 1;
                    if *count == 0 {
                        registry.waiting.remove(&self.worker);
                    }
                }
            }
        }
    }
}

/// Counts open streams (long polls, NDJSON and SSE streams) against `limits.max_streams`.
#[derive(Debug, Clone, Default)]
pub struct StreamCounter {
    open: Arc<AtomicUsize>,
}

/// One open stream; frees its slot when dropped.
#[derive(Debug)]
pub struct StreamSlot {
    open: Arc<AtomicUsize>,
}

impl StreamCounter {
    /// Takes a slot if fewer than `max` are open.
    pub fn try_open(&self, max: usize) -> Option<StreamSlot> {
        let mut current = self.open.load(Ordering::SeqCst);
        loop {
            if current >= max {
                return None;
            }
            match self.open.compare_exchange(
                current,
                current + 1,
                Ordering::SeqCst,
                Ordering::SeqCst,
            ) {
                Ok(_) => {
                    return Some(StreamSlot {
                        open: self.open.clone(),
                    });
                }
                Err(actual) => current = actual,
            }
        }
    }

    pub fn open(&self) -> usize {
        self.open.load(Ordering::SeqCst)
    }
}

impl Drop for StreamSlot {
    fn drop(&mut self) {
        self.open.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Shared handles.
#[derive(Debug, Clone)]
pub struct AppState {
    pub store: Store,
    pub scheduler: SchedulerHandle,
    pub janitor: JanitorHandle,
    pub sessions: SessionRegistry,
    pub hub: EventHub,
    pub waits: WaitBoard,
    pub identities: IdentityCache,
    pub replay: ReplayCache,
    pub settings: Arc<Settings>,
    pub streams: StreamCounter,
    /// Bytes of request bodies held in memory, all connections together (limits-and-bad-input.md §2.2).
    pub body_budget: Arc<Semaphore>,
    /// Set at the first shutdown signal: `/health` answers 503.
    pub shutting_down: Arc<AtomicBool>,
    /// Every long-lived task; cancelled last.
    pub cancel: CancellationToken,
    /// Cancelled when the listener closes: streams and long polls end, new requests get `503 shutting_down`.
    pub closing: CancellationToken,
    pub tasks: TaskTracker,
}

impl AppState {
    pub fn is_shutting_down(&self) -> bool {
        self.shutting_down.load(Ordering::SeqCst)
    }
}

//! `AppState`: the handles every request handler, session and background task shares. Every field is a handle
//! (cheap to clone, no outer `Arc`); the state itself lives in the scheduler, the store and the caches.

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

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

/// Open worker sessions by worker id (a tiny map: one entry per connected worker).
#[derive(Debug, Clone, Default)]
pub struct SessionRegistry {
    inner: Arc<Mutex<HashSet<String>>>,
}

impl SessionRegistry {
    /// Worker ids with an open session.
    pub fn connected(&self) -> HashSet<String> {
        self.inner
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone()
    }

    pub fn len(&self) -> usize {
        self.inner
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
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

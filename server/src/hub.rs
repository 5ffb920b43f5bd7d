//! Event fan-out to followers (`/jobs/{id}/events`, `/poll/jobs/{id}`), and the durability floor that keeps a
//! follower from reading an event before the flush that covers it (storage.md §2). The scheduler notes a job's first
//! unflushed event before writing it, and releases it (publishing the events) in the flush's follow-up; readers
//! never return stored events at or above the floor. Per-job channels exist only while someone follows the job.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};

use tokio::sync::broadcast;

use protocol::rest::Progress;
use protocol::{EventId, JobId};

use crate::store::records::Event;

/// How many live items a follower may fall behind before it resyncs from the store.
const CHANNEL_CAPACITY: usize = 512;

/// One item a follower receives live.
#[derive(Debug, Clone)]
pub enum Live {
    /// A stored event, durable.
    Event(EventId, Arc<Event>),
    /// Live progress (never stored).
    Progress {
        attempt: u32,
        progress: Box<Progress>,
    },
    /// Output past the cap: relayed, not stored.
    Uncapped { attempt: u32, event: Arc<Event> },
}

#[derive(Debug, Default)]
struct Entry {
    tx: Option<broadcast::Sender<Live>>,
    /// First event id of each committed batch not yet flushed, oldest first.
    unflushed: VecDeque<EventId>,
}

/// Per-job live channels and durability floors. Cheap to clone.
#[derive(Debug, Clone, Default)]
pub struct EventHub {
    inner: Arc<Mutex<HashMap<JobId, Entry>>>,
}

impl EventHub {
    pub fn new() -> EventHub {
        EventHub::default()
    }

    /// Subscribes to a job's live items. Subscribe before reading the store, so nothing falls in between.
    pub fn subscribe(&self, job: JobId) -> broadcast::Receiver<Live> {
        let mut inner = self.lock();
        let entry = inner.entry(job).or_default();
        match &entry.tx {
            Some(tx) => tx.subscribe(),
            None => {
                let (tx, rx) = broadcast::channel(CHANNEL_CAPACITY);
                entry.tx = Some(tx);
                rx
            }
        }
    }

    /// Stored events with this id or above are not durable yet.
    pub fn durable_floor(&self, job: JobId) -> Option<EventId> {
        self.lock()
            .get(&job)
            .and_then(|entry| entry.unflushed.front().copied())
    }

    /// Called by the scheduler before a batch with events of `job` (the first being `first`) is written.
    pub fn note_unflushed(&self, job: JobId, first: EventId) {
        self.lock()
            .entry(job)
            .or_default()
            .unflushed
            .push_back(first);
    }

    /// Called in the flush follow-up of that batch: lifts the floor and publishes the now durable events.
    pub fn release(&self, job: JobId, events: Vec<(EventId, Arc<Event>)>) {
        let mut inner = self.lock();
        let Some(entry) = inner.get_mut(&job) else {
            return;
        };
        entry.unflushed.pop_front();
        if let Some(tx) = &entry.tx {
            for (id, event) in events {
                let _ = tx.send(Live::Event(id, event));
            }
        }
        Self::forget_if_idle(&mut inner, job);
    }

    /// Sends a live-only item to the job's current followers.
    pub fn send_live(&self, job: JobId, item: Live) {
        let mut inner = self.lock();
        if let Some(tx) = inner.get(&job).and_then(|entry| entry.tx.as_ref()) {
            let _ = tx.send(item);
        }
        Self::forget_if_idle(&mut inner, job);
    }

    /// Drops the job's entry once nobody follows it and nothing is in flight (called by followers on exit too).
    pub fn unsubscribe(&self, job: JobId) {
        let mut inner = self.lock();
        Self::forget_if_idle(&mut inner, job);
    }

    fn forget_if_idle(inner: &mut HashMap<JobId, Entry>, job: JobId) {
        if let Some(entry) = inner.get_mut(&job) {
            if entry.tx.as_ref().is_some_and(|tx| tx.receiver_count() == 0) {
                entry.tx = None;
            }
            if entry.tx.is_none() && entry.unflushed.is_empty() {
                inner.remove(&job);
            }
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<JobId, Entry>> {
        // A panic while holding this lock leaves the map consistent (every operation is a single step).
        self.inner
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Jobs with an entry (tests: entries do not leak).
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use protocol::Ulid;

    fn notice() -> Arc<Event> {
        Arc::new(Event::Notice {
            time: 0,
            attempt: 1,
            code: "x".into(),
            message: String::new(),
        })
    }

    #[test]
    fn the_floor_follows_batches_in_order_and_entries_go_away() {
        let hub = EventHub::new();
        let job = JobId(Ulid::generate());
        let (a, b) = (EventId(Ulid::from_u128(10)), EventId(Ulid::from_u128(20)));
        hub.note_unflushed(job, a);
        hub.note_unflushed(job, b);
        assert_eq!(hub.durable_floor(job), Some(a));
        let mut rx = hub.subscribe(job);
        hub.release(job, vec![(a, notice())]);
        assert_eq!(hub.durable_floor(job), Some(b));
        assert!(matches!(rx.try_recv(), Ok(Live::Event(id, _)) if id == a));
        hub.release(job, vec![(b, notice())]);
        assert_eq!(hub.durable_floor(job), None);
        drop(rx);
        hub.unsubscribe(job);
        assert!(hub.is_empty());
    }
}

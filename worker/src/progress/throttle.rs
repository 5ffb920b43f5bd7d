//! The sender-side rule of worker-protocol.md §4.6: at most one `job_progress` per interval (500 ms) per job, only
//! when a field changed, and the unsent change flushed once at the end.

use std::time::Duration;

use tokio::time::Instant;

use super::ProgressSnapshot;

/// The default spacing between two progress reports of one job.
pub const PROGRESS_INTERVAL: Duration = Duration::from_millis(500);

/// Decides which snapshots go out. Feed every new reading with [`ProgressThrottle::update`]; send what
/// [`ProgressThrottle::due`] returns and confirm with [`ProgressThrottle::mark_sent`]; wake up at
/// [`ProgressThrottle::next_due`]; at the end send [`ProgressThrottle::flush`].
#[derive(Debug, Clone)]
pub struct ProgressThrottle {
    interval: Duration,
    last_sent: Option<ProgressSnapshot>,
    last_sent_at: Option<Instant>,
    /// The newest reading, when it differs from the last one sent.
    pending: Option<ProgressSnapshot>,
}

impl Default for ProgressThrottle {
    fn default() -> Self {
        ProgressThrottle::new(PROGRESS_INTERVAL)
    }
}

impl ProgressThrottle {
    pub fn new(interval: Duration) -> ProgressThrottle {
        ProgressThrottle {
            interval,
            last_sent: None,
            last_sent_at: None,
            pending: None,
        }
    }

    /// Records the newest reading; a reading equal to the last one sent cancels any pending change.
    pub fn update(&mut self, snapshot: ProgressSnapshot) {
        if self.last_sent.as_ref() == Some(&snapshot) {
            self.pending = None;
        } else {
            self.pending = Some(snapshot);
        }
    }

    /// The pending change, if one may be sent at `now`.
    pub fn due(&self, now: Instant) -> Option<&ProgressSnapshot> {
        let pending = self.pending.as_ref()?;
        match self.last_sent_at {
            Some(sent_at) if now < sent_at + self.interval => None,
            _ => Some(pending),
        }
    }

    /// Confirms that the pending change went out at `now`.
    pub fn mark_sent(&mut self, now: Instant) {
        if let Some(snapshot) = self.pending.take() {
            self.last_sent = Some(snapshot);
            self.last_sent_at = Some(now);
        }
    }

    /// The pending change could not go out at `now`: keep it, and try again an interval later.
    pub fn postpone(&mut self, now: Instant) {
        self.last_sent_at = Some(now);
    }

    /// When a pending change becomes due, if one waits.
    pub fn next_due(&self) -> Option<Instant> {
        self.pending.as_ref()?;
        Some(
            self.last_sent_at
                .map_or_else(Instant::now, |sent_at| sent_at + self.interval),
        )
    }

    /// The change not sent yet, whatever the interval: sent once just before the attempt's last `job_logs`.
    pub fn flush(&mut self) -> Option<ProgressSnapshot> {
        let snapshot = self.pending.take()?;
        self.last_sent = Some(snapshot.clone());
        Some(snapshot)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(frame: u64) -> ProgressSnapshot {
        ProgressSnapshot {
            frame: Some(frame),
            ..ProgressSnapshot::default()
        }
    }

    #[test]
    fn one_per_interval_and_only_changes() {
        let start = Instant::now();
        let at = |ms| start + Duration::from_millis(ms);
        let mut throttle = ProgressThrottle::default();
        assert_eq!(throttle.due(at(0)), None);
        throttle.update(frame(1));
        assert_eq!(
            throttle.due(at(0)),
            Some(&frame(1)),
            "the first reading goes out at once"
        );
        throttle.mark_sent(at(0));
        throttle.update(frame(2));
        assert_eq!(throttle.due(at(100)), None);
        assert_eq!(throttle.next_due(), Some(at(500)));
        throttle.update(frame(3));
        assert_eq!(
            throttle.due(at(500)),
            Some(&frame(3)),
            "only the newest reading is kept"
        );
        throttle.mark_sent(at(500));
        throttle.update(frame(3));
        assert_eq!(
            throttle.due(at(2000)),
            None,
            "unchanged readings are not sent"
        );
        assert_eq!(throttle.next_due(), None);
        throttle.update(frame(4));
        throttle.update(frame(3));
        assert_eq!(
            throttle.due(at(2000)),
            None,
            "a change undone before it went out is not sent"
        );
    }

    #[test]
    fn unsent_change_is_flushed_once() {
        let start = Instant::now();
        let mut throttle = ProgressThrottle::default();
        throttle.update(frame(1));
        throttle.mark_sent(start);
        throttle.update(frame(2));
        assert_eq!(throttle.due(start + Duration::from_millis(10)), None);
        assert_eq!(throttle.flush(), Some(frame(2)));
        assert_eq!(throttle.flush(), None);
        throttle.update(frame(2));
        assert_eq!(throttle.flush(), None, "already sent by the flush");
    }

    #[test]
    fn a_failed_send_stays_pending() {
        let start = Instant::now();
        let mut throttle = ProgressThrottle::default();
        throttle.update(frame(1));
        assert!(throttle.due(start).is_some());
        // not confirmed: still due later
        assert_eq!(
            throttle.due(start + Duration::from_millis(1)),
            Some(&frame(1))
        );
        throttle.postpone(start);
        assert_eq!(
            throttle.due(start + Duration::from_millis(1)),
            None,
            "postponed by an interval"
        );
        assert_eq!(throttle.due(start + PROGRESS_INTERVAL), Some(&frame(1)));
    }
}

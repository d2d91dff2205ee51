//! Wall time, behind a trait so that a test can set it (STYLE habit 5: every outside effect sits
//! behind a trait with a fake).
//!
//! The controllers read wall time where they compare it with a time the API server stored: a
//! Lease's `renewTime` (has a Node been lost?), a Revision's `creationTimestamp` (has its image
//! waited long enough to be pinned, has it passed its progress deadline?). Tokio's paused clock
//! cannot move those comparisons, so they read the [`Clock`] of the
//! [`Context`](crate::Context) instead, and a test that holds a [`ManualClock`] decides what
//! time it is.
//!
//! Time that only measures intervals within this process (the autoscaler's windows, backoffs,
//! requeues) stays on tokio's `Instant`, which tests pause and advance. Times that are only
//! written down, not decided on (an Event's timestamps, a condition's `lastTransitionTime`),
//! stay on the system clock.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use stratus_api::Timestamp;

/// A source of wall time.
pub trait Clock: Send + Sync {
    /// The time now. Not monotonic: a wall clock may be set back, and the callers compare it
    /// with timestamps that were written by other machines anyway.
    fn now(&self) -> SystemTime;
}

/// The system's wall clock: what every Context reads unless it is given another.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> SystemTime {
        SystemTime::now()
    }
}

/// A clock that stands still until it is set or advanced, for tests. It is made shared (an
/// `Arc`), so that the test keeps a handle to move it while the Context reads it.
#[derive(Debug)]
pub struct ManualClock {
    now: Mutex<SystemTime>,
}

impl ManualClock {
    /// A clock that says `now` until it is moved.
    pub fn new(now: SystemTime) -> Arc<ManualClock> {
        Arc::new(ManualClock { now: Mutex::new(now) })
    }

    /// Sets the time, forwards or back.
    pub fn set(&self, now: SystemTime) {
        *self.lock() = now;
    }

    /// Moves the time forward by `by` (saturating at the latest time a `SystemTime` holds).
    pub fn advance(&self, by: Duration) {
        let mut now = self.lock();
        if let Some(later) = now.checked_add(by) {
            *now = later;
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, SystemTime> {
        // A `SystemTime` is replaced whole: a panicking holder cannot leave it half-written.
        self.now.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl Clock for ManualClock {
    fn now(&self) -> SystemTime {
        *self.lock()
    }
}

/// `t` as an API timestamp, to the second (as every timestamp the controllers write).
pub fn timestamp(t: SystemTime) -> Timestamp {
    let secs = t.duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
    Timestamp { seconds: i64::try_from(secs).unwrap_or(i64::MAX), nanos: 0 }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_manual_clock_moves_only_when_told_and_every_handle_sees_it() {
        let start = UNIX_EPOCH + Duration::from_secs(1_000);
        let clock = ManualClock::new(start);
        let shared: Arc<dyn Clock> = clock.clone();
        assert_eq!(shared.now(), start);
        clock.advance(Duration::from_secs(5));
        assert_eq!(shared.now(), start + Duration::from_secs(5));
        clock.set(start);
        assert_eq!(shared.now(), start, "set back");
        assert_eq!(timestamp(start + Duration::from_millis(1_500)), Timestamp { seconds: 1_001, nanos: 0 });
    }
}

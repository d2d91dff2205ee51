//! What a pool tells about its load: the gauges of requests in flight and queued, the demand
//! [`crate::Gateway::demand`] reports, and the cumulative [`Load`] that demand reports to the
//! autoscaler are computed from (the integral over time of the requests in flight or queued).

use std::sync::atomic::Ordering;

use tokio::time::Instant;

use super::{Load, PoolState, RevisionDemand, RevisionPool};

impl RevisionPool {
    /// The pool's cumulative load up to `now` (all pools of one report are measured up to the
    /// same instant; a change after it that is already counted shifts the integral by the time
    /// between them).
    pub(crate) fn load(&self, now: Instant) -> Load {
        let state = self.lock();
        Load {
            busy_ns: state.busy_ns_until(now),
            requests: self.requests.load(Ordering::Relaxed),
            queued: state.waiters.iter().filter(|w| !w.tx.is_closed()).count() as u64,
            latency: std::array::from_fn(|i| self.latency[i].load(Ordering::Relaxed)),
        }
    }

    /// The revision's current demand.
    pub(crate) fn demand(&self) -> RevisionDemand {
        let state = self.lock();
        RevisionDemand {
            namespace: self.key.namespace.clone(),
            revision: self.key.name.clone(),
            in_flight: state.in_flight(),
            queued: state.waiters.iter().filter(|w| !w.tx.is_closed()).count() as u64,
            requests: self.requests.load(Ordering::Relaxed),
            endpoints: state.endpoints.len(),
        }
    }

    /// Brings the gauges and the load integral up to date after the counts changed.
    pub(super) fn publish(&self, state: &mut PoolState) {
        let in_flight = state.in_flight();
        let queued = state.waiters.len() as u64;
        let now = Instant::now();
        state.busy_ns = state.busy_ns_until(now);
        state.level_since = now;
        state.level = in_flight + queued;
        self.metrics.in_flight.set(i64::try_from(in_flight).unwrap_or(i64::MAX));
        self.metrics.queued.set(i64::try_from(queued).unwrap_or(i64::MAX));
    }
}

impl PoolState {
    pub(super) fn in_flight(&self) -> u64 {
        self.endpoints.iter().map(|e| u64::from(e.in_flight)).sum()
    }

    /// `busy_ns` integrated up to `now`.
    fn busy_ns_until(&self, now: Instant) -> u128 {
        let elapsed = now.saturating_duration_since(self.level_since).as_nanos();
        self.busy_ns.saturating_add(elapsed.saturating_mul(u128::from(self.level)))
    }
}

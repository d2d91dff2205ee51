//! Outlier detection (Envoy's passive kind): an endpoint that fails `consecutive_failures`
//! times in a row is ejected for `base_ejection`, doubling with each ejection in a row up to
//! `max_ejection`, never more than `max_ejection_percent` of the endpoints at once. When its
//! time is up it takes requests again, on probation: a success forgives its history, a failure
//! ejects it again at once.

use std::sync::Arc;

use tokio::time::Instant;
use tracing::{info, warn};

use super::{Outcome, RevisionPool};

impl RevisionPool {
    /// Counts how a request sent to `endpoint` went, ejecting the endpoint when it keeps failing.
    pub(super) fn record(self: &Arc<Self>, endpoint: u64, outcome: Outcome) {
        let now = Instant::now();
        let mut state = self.lock();
        let total = state.endpoints.len();
        let ejected = state.endpoints.iter().filter(|e| e.is_ejected(now)).count();
        let Some(e) = state.endpoints.iter_mut().find(|e| e.id == endpoint) else { return };
        // Answers to requests sent before an ejection say nothing new about the endpoint.
        if e.is_ejected(now) {
            return;
        }
        match outcome {
            Outcome::Success => {
                e.consecutive_failures = 0;
                e.ejections = 0;
                e.ejected_until = None;
            }
            Outcome::Failure => {
                e.consecutive_failures = e.consecutive_failures.saturating_add(1);
                let threshold = self.outliers.consecutive_failures;
                let on_probation = e.ejections > 0;
                let allowed = (ejected + 1) * 100 <= usize::from(self.outliers.max_ejection_percent) * total;
                if threshold == 0 || !(on_probation || e.consecutive_failures >= threshold) || !allowed {
                    return;
                }
                let factor = 1u32.checked_shl(e.ejections.min(31)).unwrap_or(u32::MAX);
                let length = self.outliers.base_ejection.saturating_mul(factor).min(self.outliers.max_ejection);
                let until = now + length;
                e.ejected_until = Some(until);
                e.ejections = e.ejections.saturating_add(1);
                e.consecutive_failures = 0;
                self.metrics.ejections.inc();
                warn!(revision = %self.key, endpoint = %e.address, ejected_for = ?length, "endpoint ejected");
                self.readmit_at(until);
            }
        }
    }

    /// Serves waiting requests when an ejection ends: nothing else would wake them.
    fn readmit_at(self: &Arc<Self>, until: Instant) {
        // Outcomes are recorded by request handlers, which run on the runtime; without one
        // there is nobody to wake either.
        let Ok(runtime) = tokio::runtime::Handle::try_current() else { return };
        let pool = Arc::downgrade(self);
        runtime.spawn(async move {
            tokio::time::sleep_until(until).await;
            if let Some(pool) = pool.upgrade() {
                info!(revision = %pool.key, "ejection over, endpoint re-admitted");
                let mut state = pool.lock();
                pool.dispatch(&mut state);
            }
        });
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use std::time::Duration;

    use crate::pool::testing::{in_secs, pool, settings, soon};

    use super::*;

    #[tokio::test(start_paused = true)]
    async fn failing_endpoints_are_ejected_for_doubling_times() {
        let pool = pool(10);
        pool.configure(settings(0, &["bad:1", "good:1"]));
        let bad_id = |pool: &Arc<RevisionPool>| pool.lock().endpoints[0].id;
        let fail = |pool: &Arc<RevisionPool>, n: usize| {
            for _ in 0..n {
                pool.record(bad_id(pool), Outcome::Failure);
            }
        };
        let ejected = |pool: &Arc<RevisionPool>| pool.lock().endpoints[0].is_ejected(Instant::now());
        fail(&pool, 4);
        assert!(!ejected(&pool));
        fail(&pool, 1);
        assert!(ejected(&pool));
        for _ in 0..4 {
            assert_eq!(pool.acquire(&[], soon()).await.unwrap().address(), "good:1");
        }
        // Re-admitted after 30 s; one failure on probation ejects it again, for 60 s.
        tokio::time::advance(Duration::from_secs(30)).await;
        assert!(!ejected(&pool));
        fail(&pool, 1);
        assert!(ejected(&pool));
        tokio::time::advance(Duration::from_secs(59)).await;
        assert!(ejected(&pool));
        tokio::time::advance(Duration::from_secs(1)).await;
        assert!(!ejected(&pool));
        // A success forgives: the next ejection needs five failures again.
        pool.record(bad_id(&pool), Outcome::Success);
        fail(&pool, 4);
        assert!(!ejected(&pool));
    }

    #[tokio::test(start_paused = true)]
    async fn the_last_healthy_share_is_never_ejected() {
        let pair = pool(10);
        pair.configure(settings(0, &["a:1", "b:1"]));
        let ids: Vec<u64> = pair.lock().endpoints.iter().map(|e| e.id).collect();
        for _ in 0..5 {
            pair.record(ids[0], Outcome::Failure);
            pair.record(ids[1], Outcome::Failure);
        }
        let now = Instant::now();
        let ejected = pair.lock().endpoints.iter().filter(|e| e.is_ejected(now)).count();
        assert_eq!(ejected, 1, "50% of two endpoints is one");
        // A single endpoint is never ejected: there is nowhere else to go.
        let single = pool(10);
        single.configure(settings(0, &["only:1"]));
        let id = single.lock().endpoints[0].id;
        for _ in 0..10 {
            single.record(id, Outcome::Failure);
        }
        assert!(!single.lock().endpoints[0].is_ejected(Instant::now()));
    }

    #[tokio::test(start_paused = true)]
    async fn waiters_are_served_when_an_ejection_ends() {
        let pool = pool(10);
        pool.configure(settings(1, &["a:1", "b:1"]));
        let a = pool.lock().endpoints[0].id;
        for _ in 0..5 {
            pool.record(a, Outcome::Failure);
        }
        let _b = pool.acquire(&[], soon()).await.unwrap();
        let p = Arc::clone(&pool);
        let deadline = in_secs(60);
        let waiting = tokio::spawn(async move { p.acquire(&[], deadline).await.map(|l| l.address().to_string()) });
        assert_eq!(waiting.await.unwrap(), Ok("a:1".to_string()));
    }
}

//! Metering for billing: each endpoint's busy periods (while it has at least one request in
//! flight: from its 0 → 1 transition to its return to 0) and the requests sent to it. The
//! timestamps are taken on those transitions only, under the pool's lock that granting and
//! releasing a lease hold anyway, so metering adds no lock and no clock read to most requests.
//! The gateway's metering loop takes each window's usage with [`RevisionPool::take_usage`].

use std::time::{Duration, Instant};

use stratus_client::usage::{Subject, Taken};
use tracing::{error, warn};

use super::RevisionPool;

/// How long usage waits for its revision's billing mode and limits before it is given up.
const UNBILLED_FOR_AT_MOST: Duration = Duration::from_secs(3600);

/// One endpoint's usage of one window, taken while the revision's billing was unknown.
pub(crate) struct Unbilled {
    instance: std::sync::Arc<str>,
    window: (i64, i64),
    taken: Taken,
    since: Instant,
}

/// One report's worth: whose usage, of which window, and what it was.
pub(crate) type Usage = (Subject, (i64, i64), Taken);

impl RevisionPool {
    /// Hands over the usage of the window `[start, end)` of every endpoint that had requests or
    /// busy time in it (a period still in progress is cut at `end` and continues), with what
    /// its report says of the instance. Endpoints removed since the last window hand over their
    /// last usage and are then forgotten. Usage of a revision whose billing mode and limits are
    /// not known yet is kept, and handed over with its own window once they are (for at most
    /// an hour).
    pub(crate) fn take_usage(&self, start: i64, end: i64) -> Vec<Usage> {
        let mut state = self.lock();
        let state = &mut *state;
        let mut taken = Vec::new();
        for e in state.endpoints.iter_mut().chain(state.retired.iter_mut()) {
            let t = e.meter.take(start, end);
            if !t.periods.is_empty() || t.requests > 0 {
                taken.push(Unbilled {
                    instance: e.instance.clone(),
                    window: (start, end),
                    taken: t,
                    since: Instant::now(),
                });
            }
        }
        state.retired.retain(|e| e.in_flight > 0 || !e.meter.is_idle());
        let Some(billing) = state.billing.clone() else {
            if !taken.is_empty() {
                warn!(revision = %self.key, instances = taken.len(), "usage kept until the revision's billing mode and limits are known");
            }
            state.unbilled.append(&mut taken);
            let before = state.unbilled.len();
            state.unbilled.retain(|u| u.since.elapsed() < UNBILLED_FOR_AT_MOST);
            if state.unbilled.len() < before {
                error!(revision = %self.key, reports = before - state.unbilled.len(), "usage lost: the revision's billing mode and limits stayed unknown for an hour");
            }
            return Vec::new();
        };
        std::mem::take(&mut state.unbilled)
            .into_iter()
            .chain(taken)
            .map(|u| {
                let subject = Subject {
                    namespace: self.key.namespace.clone(),
                    service: billing.service.clone(),
                    revision: self.key.name.clone(),
                    instance: u.instance.to_string(),
                    billing_mode: billing.mode,
                    cpu_millis: billing.cpu_millis,
                    memory_bytes: billing.memory_bytes,
                };
                (subject, u.window, u.taken)
            })
            .collect()
    }

    /// Takes back the request counted for `endpoint`: its connection failed and the request is
    /// sent to another, which counts it (one request, billed once).
    pub(crate) fn not_served(&self, endpoint: u64) {
        let mut state = self.lock();
        let state = &mut *state;
        if let Some(e) = state.endpoints.iter_mut().chain(state.retired.iter_mut()).find(|e| e.id == endpoint) {
            e.meter.uncount();
        }
    }

    /// Whether nothing is left to report and nothing is in flight: a pool no route names any
    /// more can then be forgotten.
    pub(crate) fn usage_is_settled(&self) -> bool {
        let state = self.lock();
        state.unbilled.is_empty()
            && state.endpoints.iter().chain(state.retired.iter()).all(|e| e.in_flight == 0 && e.meter.is_idle())
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use crate::pool::testing::{pool, settings, soon};

    #[tokio::test(start_paused = true)]
    async fn overlapping_requests_are_one_busy_period_and_each_is_counted() {
        let pool = pool(10);
        pool.configure(settings(0, &["a:1", "b:1"]));
        let before = stratus_client::usage::now_millis();
        let first = pool.acquire(&[], soon()).await.unwrap();
        let second = pool.acquire(&[], soon()).await.unwrap();
        let third = pool.acquire(&[], soon()).await.unwrap();
        assert_eq!(first.address(), third.address());
        drop(first);
        drop(third);
        drop(second);
        let after = stratus_client::usage::now_millis();
        let mut taken = pool.take_usage(before - 10_000, after + 10_000);
        taken.sort_by(|x, y| x.0.instance.cmp(&y.0.instance));
        let instances: Vec<_> = taken.iter().map(|(s, _, t)| (s.instance.as_str(), t.requests)).collect();
        assert_eq!(instances, [("hello-00001-a", 2), ("hello-00001-b", 1)]);
        for (subject, _, t) in &taken {
            assert_eq!((subject.service.as_str(), subject.revision.as_str()), ("hello", "hello-00001"));
            // One period at most (none when it lasted less than a millisecond), within the test.
            assert!(t.periods.len() <= 1);
            assert!(t.periods.iter().all(|&(s, e)| before <= s && e <= after));
        }
        // Nothing happened since: nothing to report.
        assert!(pool.take_usage(after + 10_000, after + 20_000).is_empty());
    }

    #[tokio::test(start_paused = true)]
    async fn a_period_in_progress_is_cut_at_the_window_end() {
        let pool = pool(10);
        pool.configure(settings(0, &["a:1"]));
        let before = stratus_client::usage::now_millis();
        let lease = pool.acquire(&[], soon()).await.unwrap();
        // Windows far in the future: the request is still in flight at their ends.
        let end = before + 60_000;
        let first = pool.take_usage(before - 10_000, end);
        assert_eq!(first[0].2.requests, 1);
        assert_eq!(first[0].2.periods.len(), 1);
        assert_eq!(first[0].2.periods[0].1, end);
        let second = pool.take_usage(end, end + 10_000);
        assert_eq!(second[0].2.requests, 0);
        assert_eq!(second[0].2.periods, vec![(end, end + 10_000)]);
        drop(lease);
    }

    #[tokio::test(start_paused = true)]
    async fn a_request_whose_connection_failed_counts_on_the_endpoint_that_served_it() {
        let pool = pool(10);
        pool.configure(settings(0, &["a:1", "b:1"]));
        let now = stratus_client::usage::now_millis();
        let failed = pool.acquire(&[], soon()).await.unwrap();
        failed.not_served();
        let served = pool.acquire(&[failed.endpoint_id()], soon()).await.unwrap();
        assert_ne!(served.address(), failed.address());
        drop((failed, served));
        let mut taken = pool.take_usage(now - 10_000, now + 60_000);
        taken.sort_by(|x, y| x.0.instance.cmp(&y.0.instance));
        let counts: Vec<u64> = taken.iter().map(|(_, _, t)| t.requests).collect();
        assert_eq!(counts.iter().sum::<u64>(), 1, "{taken:?}");
    }

    #[tokio::test(start_paused = true)]
    async fn usage_waits_for_the_revisions_billing_and_keeps_its_window() {
        let pool = pool(10);
        let mut unknown = settings(0, &["a:1"]);
        unknown.billing = None;
        pool.configure(unknown.clone());
        let now = stratus_client::usage::now_millis();
        drop(pool.acquire(&[], soon()).await.unwrap());
        assert!(pool.take_usage(now - 10_000, now + 10_000).is_empty(), "nothing to say whose it is yet");
        assert!(!pool.usage_is_settled());
        // The Revision is read: the kept usage goes out with the window it was taken in.
        pool.configure(settings(0, &["a:1"]));
        let taken = pool.take_usage(now + 10_000, now + 20_000);
        assert_eq!(taken.len(), 1);
        assert_eq!((taken[0].1, taken[0].2.requests), ((now - 10_000, now + 10_000), 1));
        assert!(pool.usage_is_settled());
    }

    #[tokio::test(start_paused = true)]
    async fn a_removed_endpoint_reports_its_last_usage_once() {
        let pool = pool(10);
        pool.configure(settings(0, &["a:1"]));
        let now = stratus_client::usage::now_millis();
        let lease = pool.acquire(&[], soon()).await.unwrap();
        pool.configure(settings(0, &["b:1"]));
        drop(lease);
        let taken = pool.take_usage(now - 10_000, now + 60_000);
        assert_eq!(taken.len(), 1);
        assert_eq!(taken[0].0.instance, "hello-00001-a");
        assert_eq!(taken[0].2.requests, 1);
        assert!(pool.take_usage(now + 60_000, now + 120_000).is_empty());
    }
}

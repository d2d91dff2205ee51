//! Which endpoint a request goes to: the eligible one (not excluded by the request, not
//! ejected, below the concurrency limit) with the fewest requests in flight, ties going round
//! the endpoints; and the endpoints kept in step with the revision's settings.

use std::collections::HashMap;
use std::sync::Arc;

use tokio::time::Instant;

use super::{Endpoint, EndpointSpec, PoolState};

impl PoolState {
    /// Replaces the endpoints with those of `specs`. Endpoints that stay (same address) keep
    /// their id, their in-flight count and their ejection state; new ones get a fresh id.
    pub(super) fn replace_endpoints(&mut self, specs: Vec<EndpointSpec>) {
        let mut old: HashMap<Arc<str>, Endpoint> =
            self.endpoints.drain(..).map(|e| (Arc::clone(&e.address), e)).collect();
        let mut endpoints = Vec::with_capacity(specs.len());
        for spec in specs {
            let endpoint = match old.remove(&spec.address) {
                // The same address with another instance behind it is another endpoint.
                Some(mut e) if e.instance == spec.instance => {
                    e.protocol = spec.protocol;
                    e
                }
                other => {
                    self.retire(other);
                    self.next_id += 1;
                    Endpoint::new(self.next_id, spec)
                }
            };
            endpoints.push(endpoint);
        }
        for (_, gone) in old {
            self.retire(Some(gone));
        }
        self.endpoints = endpoints;
    }

    /// Keeps a removed endpoint whose usage is not reported yet, or that still has requests in
    /// flight, until [`super::RevisionPool::take_usage`] hands its last usage over.
    fn retire(&mut self, endpoint: Option<Endpoint>) {
        if let Some(e) = endpoint.filter(|e| e.in_flight > 0 || !e.meter.is_idle()) {
            self.retired.push(e);
        }
    }

    /// The eligible endpoint with the fewest requests in flight: not excluded, not ejected, below
    /// the concurrency limit.
    pub(super) fn pick(&mut self, exclude: &[u64], now: Instant) -> Option<usize> {
        let n = self.endpoints.len();
        let mut best: Option<usize> = None;
        for k in 0..n {
            let i = (self.cursor + k) % n;
            let e = &self.endpoints[i];
            if self.is_full(e) || e.is_ejected(now) || exclude.contains(&e.id) {
                continue;
            }
            if best.is_none_or(|b| e.in_flight < self.endpoints[b].in_flight) {
                best = Some(i);
            }
        }
        if best.is_some() {
            self.cursor = self.cursor.wrapping_add(1);
        }
        best
    }

    /// Whether any endpoint could take a request now.
    pub(super) fn has_capacity(&self, now: Instant) -> bool {
        self.endpoints.iter().any(|e| !e.is_ejected(now) && !self.is_full(e))
    }

    fn is_full(&self, e: &Endpoint) -> bool {
        self.concurrency > 0 && e.in_flight >= self.concurrency
    }

    /// Whether the revision cannot take more requests and cannot grow: as many endpoints as its
    /// `maxInstances` (at least one), each at its concurrency cap. An unlimited concurrency is
    /// never at capacity, and an ejected endpoint is not at its cap.
    pub(super) fn at_capacity(&self) -> bool {
        self.concurrency > 0
            && !self.endpoints.is_empty()
            && self.endpoints.len() >= self.max_instances as usize
            && self.endpoints.iter().all(|e| self.is_full(e))
    }
}

impl Endpoint {
    fn new(id: u64, spec: EndpointSpec) -> Endpoint {
        Endpoint {
            id,
            address: spec.address,
            protocol: spec.protocol,
            in_flight: 0,
            consecutive_failures: 0,
            ejections: 0,
            ejected_until: None,
            instance: spec.instance,
            meter: stratus_client::usage::Meter::default(),
        }
    }

    pub(super) fn is_ejected(&self, now: Instant) -> bool {
        self.ejected_until.is_some_and(|until| now < until)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use crate::pool::testing::{pool, settings, soon};
    use crate::pool::{AcquireError, Lease};

    #[tokio::test(start_paused = true)]
    async fn picks_the_endpoint_with_the_fewest_requests_in_flight() {
        let pool = pool(10);
        pool.configure(settings(0, &["a:1", "b:1", "c:1"]));
        let mut held = Vec::new();
        for _ in 0..6 {
            held.push(pool.acquire(&[], soon()).await.unwrap());
        }
        let count = |held: &[Lease], addr: &str| held.iter().filter(|l| l.address() == addr).count();
        assert_eq!([count(&held, "a:1"), count(&held, "b:1"), count(&held, "c:1")], [2, 2, 2]);
        // Free two slots of b: the next two requests both go to b.
        let b: Vec<usize> = held.iter().enumerate().filter(|(_, l)| l.address() == "b:1").map(|(i, _)| i).collect();
        held.remove(b[1]);
        held.remove(b[0]);
        let next = [pool.acquire(&[], soon()).await.unwrap(), pool.acquire(&[], soon()).await.unwrap()];
        assert!(next.iter().all(|l| l.address() == "b:1"));
        assert_eq!(pool.demand().in_flight, 6);
    }

    #[tokio::test(start_paused = true)]
    async fn a_retry_avoids_the_endpoints_it_tried() {
        let pool = pool(10);
        pool.configure(settings(0, &["a:1", "b:1"]));
        let first = pool.acquire(&[], soon()).await.unwrap();
        let tried = [first.endpoint_id()];
        let retry = pool.acquire(&tried, soon()).await.unwrap();
        assert_ne!(retry.address(), first.address());
        let both = [first.endpoint_id(), retry.endpoint_id()];
        assert_eq!(pool.acquire(&both, soon()).await.err(), Some(AcquireError::Exhausted));
    }

    #[tokio::test(start_paused = true)]
    async fn reconfiguring_keeps_the_state_of_endpoints_that_stay() {
        let pool = pool(10);
        pool.configure(settings(0, &["a:1", "b:1"]));
        let lease = pool.acquire(&[], soon()).await.unwrap();
        let kept = lease.address().to_string();
        pool.configure(settings(0, &[kept.as_str(), "c:1"]));
        assert_eq!(pool.demand().in_flight, 1);
        assert_eq!(pool.demand().endpoints, 2);
        drop(lease);
        assert_eq!(pool.demand().in_flight, 0);
        // A lease of a removed endpoint ends without touching the others.
        let other = pool.acquire(&[], soon()).await.unwrap();
        pool.configure(settings(0, &["d:1"]));
        drop(other);
        assert_eq!(pool.demand().in_flight, 0);
    }
}

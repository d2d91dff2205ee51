//! The waiting requests: how many may wait ([`QueueLimits::bound`]), and how freed capacity
//! reaches them. Every change that frees capacity (a released lease, a new endpoint, a
//! re-admitted one) calls [`RevisionPool::dispatch`], which hands it to the head of the queue
//! directly, so that a newcomer never overtakes a request that was waiting.

use std::sync::Arc;

use tokio::time::Instant;

use super::{AcquireError, Lease, PoolState, QueueLimits, RevisionPool};

/// Requests that may wait per request an instance takes at once.
const QUEUE_PER_SLOT: u64 = 10;

impl QueueLimits {
    /// The queue bound of a revision whose instances take `concurrency` requests at once (0:
    /// unlimited) and that may have `max_instances` of them: `10 × concurrency ×
    /// max_instances`, at least `floor`, at most `cap`. An unlimited concurrency gives no
    /// capacity to follow, so it gets `cap`.
    pub(crate) fn bound(self, concurrency: u32, max_instances: u32) -> usize {
        if concurrency == 0 {
            return self.cap;
        }
        let slots = u64::from(concurrency).saturating_mul(u64::from(max_instances.max(1)));
        let wanted = usize::try_from(slots.saturating_mul(QUEUE_PER_SLOT)).unwrap_or(usize::MAX);
        wanted.max(self.floor).min(self.cap)
    }
}

impl RevisionPool {
    /// Hands free capacity to waiting requests, first come first served. A waiter that cannot
    /// use any free endpoint (it tried them all) does not block those behind it. Then tells the
    /// waiting requests that will get no lease: all of them when the revision has no endpoint
    /// and cannot start, those past their at-capacity deadline when it is at capacity.
    pub(super) fn dispatch(self: &Arc<Self>, state: &mut PoolState) {
        let now = Instant::now();
        if state.endpoints.is_empty()
            && let Some(failure) = state.failure.clone()
        {
            for waiter in state.waiters.drain(..) {
                // A request that gave up meanwhile needs no answer.
                let _ = waiter.tx.send(Err(AcquireError::CannotStart(Arc::clone(&failure))));
            }
            self.publish(state);
            return;
        }
        let mut i = 0;
        while i < state.waiters.len() {
            if state.waiters[i].tx.is_closed() {
                state.waiters.remove(i);
                continue;
            }
            if !state.has_capacity(now) {
                break;
            }
            let exclude = std::mem::take(&mut state.waiters[i].exclude);
            let Some(chosen) = state.pick(&exclude, now) else {
                state.waiters[i].exclude = exclude;
                i += 1;
                continue;
            };
            let Some(waiter) = state.waiters.remove(i) else { break };
            let lease = self.grant(state, chosen);
            if let Err(Ok(mut lease)) = waiter.tx.send(Ok(lease)) {
                // The request gave up in the meantime: take the slot back and go on.
                lease.armed = false;
                let metering = state.metering;
                if let Some(e) = state.endpoints.get_mut(chosen) {
                    e.in_flight = e.in_flight.saturating_sub(1);
                    if metering {
                        e.meter.uncount();
                        if e.in_flight == 0 {
                            e.meter.stop(stratus_client::usage::now_millis());
                        }
                    }
                }
            }
        }
        if state.at_capacity() {
            let mut i = 0;
            while i < state.waiters.len() {
                if state.waiters[i].at_capacity > now {
                    i += 1;
                    continue;
                }
                if let Some(waiter) = state.waiters.remove(i) {
                    let _ = waiter.tx.send(Err(AcquireError::AtCapacity));
                }
            }
        }
        self.publish(state);
    }

    pub(super) fn grant(self: &Arc<Self>, state: &mut PoolState, index: usize) -> Lease {
        let metering = state.metering;
        let e = &mut state.endpoints[index];
        e.in_flight += 1;
        if metering {
            e.meter.count();
            if e.in_flight == 1 {
                e.meter.start(stratus_client::usage::now_millis());
            }
        }
        let lease = Lease {
            pool: Arc::clone(self),
            endpoint: e.id,
            address: Arc::clone(&e.address),
            protocol: e.protocol,
            armed: true,
        };
        self.publish(state);
        lease
    }

    pub(super) fn release(self: &Arc<Self>, endpoint: u64) {
        let mut state = self.lock();
        let state_ref = &mut *state;
        let found = state_ref.endpoints.iter_mut().chain(state_ref.retired.iter_mut()).find(|e| e.id == endpoint);
        if let Some(e) = found {
            e.in_flight = e.in_flight.saturating_sub(1);
            if e.in_flight == 0 && e.meter.is_open() {
                e.meter.stop(stratus_client::usage::now_millis());
            }
        }
        self.dispatch(&mut state);
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use std::time::Duration;

    use crate::pool::testing::{in_secs, pool, pool_with, settings, soon};
    use crate::pool::{Deadlines, PoolSettings};

    use super::*;

    #[tokio::test(start_paused = true)]
    async fn concurrency_limit_queues_and_hands_over_in_order() {
        let pool = pool(10);
        pool.configure(settings(1, &["a:1"]));
        let first = pool.acquire(&[], soon()).await.unwrap();
        let (tx, mut served) = tokio::sync::mpsc::unbounded_channel();
        for n in 1..=3 {
            let (p, tx) = (Arc::clone(&pool), tx.clone());
            tokio::spawn(async move {
                let lease = p.acquire(&[], soon()).await;
                let _ = tx.send((n, lease.is_ok()));
                // Dropping the lease passes the slot on.
            });
            // Let it queue before the next one comes.
            tokio::task::yield_now().await;
        }
        assert_eq!(pool.demand().queued, 3);
        assert_eq!(pool.demand().in_flight, 1);
        drop(first);
        let mut order = Vec::new();
        for _ in 0..3 {
            order.push(served.recv().await.unwrap());
        }
        assert_eq!(order, [(1, true), (2, true), (3, true)]);
        assert_eq!((pool.demand().in_flight, pool.demand().queued), (0, 0));
    }

    #[tokio::test(start_paused = true)]
    async fn a_full_queue_rejects_and_a_deadline_ends_the_wait() {
        let pool = pool(1);
        pool.configure(settings(1, &["a:1"]));
        let _busy = pool.acquire(&[], soon()).await.unwrap();
        let p = Arc::clone(&pool);
        let waiting = tokio::spawn(async move { p.acquire(&[], in_secs(1)).await.err() });
        tokio::task::yield_now().await;
        assert_eq!(pool.acquire(&[], soon()).await.err(), Some(AcquireError::QueueFull { limit: 1 }));
        assert_eq!(waiting.await.unwrap(), Some(AcquireError::TimedOut { endpoints: 1 }));
        assert_eq!(pool.demand().queued, 0);
    }

    #[tokio::test(start_paused = true)]
    async fn requests_wait_for_the_first_endpoint() {
        let pool = pool(10);
        let p = Arc::clone(&pool);
        let waiting = tokio::spawn(async move { p.acquire(&[], soon()).await.map(|l| l.address().to_string()) });
        tokio::task::yield_now().await;
        assert_eq!(pool.demand().queued, 1);
        assert_eq!(pool.metrics.cold_starts.get(), 0);
        pool.configure(settings(1, &["new:1"]));
        assert_eq!(waiting.await.unwrap(), Ok("new:1".to_string()));
        // One cold start: requests waited at zero and the first instance came.
        assert_eq!(pool.metrics.cold_starts.get(), 1);
        pool.configure(settings(1, &["new:1", "new:2"]));
        assert_eq!(pool.metrics.cold_starts.get(), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn a_retry_waiting_for_a_busy_endpoint_does_not_hold_up_others() {
        let pool = pool(10);
        pool.configure(settings(1, &["a:1", "b:1"]));
        let mut held = vec![pool.acquire(&[], soon()).await.unwrap(), pool.acquire(&[], soon()).await.unwrap()];
        held.retain(|l| l.address() == "b:1");
        let a = pool.lock().endpoints.iter().find(|e| e.address.as_ref() == "a:1").map(|e| e.id).unwrap();
        // Only a is free; a retry that must avoid a waits for b …
        let p = Arc::clone(&pool);
        let retry = tokio::spawn(async move { p.acquire(&[a], soon()).await.map(|_| ()) });
        tokio::task::yield_now().await;
        assert_eq!(pool.demand().queued, 1);
        // … while a newcomer takes a at once, although it arrived later.
        let newcomer = tokio::time::timeout(Duration::from_millis(1), pool.acquire(&[], soon())).await;
        assert_eq!(newcomer.map(|l| l.map(|l| l.address().to_string())), Ok(Ok("a:1".to_string())));
        retry.abort();
    }

    #[tokio::test(start_paused = true)]
    async fn at_capacity_requests_wait_only_until_their_capacity_deadline() {
        let pool = pool(1);
        let at_max = |max_instances| PoolSettings { max_instances, ..settings(1, &["a:1"]) };
        pool.configure(at_max(1));
        let _busy = pool.acquire(&[], soon()).await.unwrap();
        let deadlines = |capacity: u64| Deadlines {
            queue: Instant::now() + Duration::from_secs(60),
            at_capacity: Instant::now() + Duration::from_secs(capacity),
        };
        let started = Instant::now();
        let (p, d) = (Arc::clone(&pool), deadlines(1));
        let waiting = tokio::spawn(async move { p.acquire(&[], d).await.err() });
        tokio::task::yield_now().await;
        // A full queue at capacity says "at capacity" too.
        assert_eq!(pool.acquire(&[], deadlines(1)).await.err(), Some(AcquireError::AtCapacity));
        assert_eq!(waiting.await.unwrap(), Some(AcquireError::AtCapacity));
        assert_eq!(started.elapsed(), Duration::from_secs(1));

        // Below maxInstances the revision can still grow: the request waits on …
        pool.configure(at_max(2));
        let (p, d) = (Arc::clone(&pool), deadlines(1));
        let started = Instant::now();
        let waiting = tokio::spawn(async move { p.acquire(&[], d).await.err() });
        tokio::task::yield_now().await;
        tokio::time::advance(Duration::from_secs(5)).await;
        assert_eq!(pool.demand().queued, 1);
        // … until the revision is at capacity after all: past its capacity deadline, it is
        // told at once.
        pool.configure(at_max(1));
        assert_eq!(waiting.await.unwrap(), Some(AcquireError::AtCapacity));
        assert_eq!(started.elapsed(), Duration::from_secs(5));
    }

    #[test]
    fn the_queue_bound_follows_the_capacity_the_revision_may_reach() {
        let limits = QueueLimits { floor: 100, cap: 10_000 };
        // 10 × containerConcurrency × maxInstances …
        assert_eq!(limits.bound(10, 10), 1_000);
        assert_eq!(limits.bound(80, 5), 4_000);
        // … no less than the floor …
        assert_eq!(limits.bound(1, 1), 100);
        assert_eq!(limits.bound(3, 3), 100);
        // … no more than the cap, also when the product overflows …
        assert_eq!(limits.bound(80, 100), 10_000);
        assert_eq!(limits.bound(u32::MAX, u32::MAX), 10_000);
        // … and the cap for an unlimited concurrency, which has no capacity to follow.
        assert_eq!(limits.bound(0, 1), 10_000);
        // The cap bounds memory: it wins over a larger floor.
        assert_eq!(QueueLimits { floor: 50, cap: 20 }.bound(1, 1), 20);
    }

    #[tokio::test(start_paused = true)]
    async fn configure_recomputes_the_queue_bound() {
        let pool = pool_with(QueueLimits { floor: 100, cap: 10_000 });
        let bound = |pool: &Arc<RevisionPool>| pool.lock().queue_bound;
        let with = |concurrency, max_instances| PoolSettings { max_instances, ..settings(concurrency, &["a:1"]) };
        // Nothing known yet: the cap.
        assert_eq!(bound(&pool), 10_000);
        pool.configure(with(10, 10));
        assert_eq!(bound(&pool), 1_000);
        pool.configure(with(10, 30));
        assert_eq!(bound(&pool), 3_000);
        pool.configure(with(2, 1));
        assert_eq!(bound(&pool), 100);
        pool.configure(with(0, 1));
        assert_eq!(bound(&pool), 10_000);
    }

    #[tokio::test(start_paused = true)]
    async fn a_scaling_revision_queues_beyond_the_floor_up_to_its_bound() {
        // Issue 9: two instances of containerConcurrency 10 placed out of maxInstances 10. The
        // old fixed queue of 100 refused the 101st waiting request; the bound is now 1,000.
        let pool = pool_with(QueueLimits { floor: 100, cap: 10_000 });
        pool.configure(PoolSettings { max_instances: 10, ..settings(10, &["a:1", "b:1"]) });
        let mut held = Vec::new();
        for _ in 0..20 {
            held.push(pool.acquire(&[], soon()).await.unwrap());
        }
        let (tx, mut served) = tokio::sync::mpsc::unbounded_channel();
        for _ in 0..190 {
            let (p, tx) = (Arc::clone(&pool), tx.clone());
            tokio::spawn(async move {
                let _ = tx.send(p.acquire(&[], in_secs(60)).await.map(|_| ()));
            });
        }
        drop(tx);
        // Every one of them queues: none is answered before capacity frees up.
        while pool.demand().queued < 190 {
            assert!(served.try_recv().is_err(), "a request was refused instead of queued");
            tokio::task::yield_now().await;
        }
        assert_eq!((pool.demand().in_flight, pool.demand().queued), (20, 190));
        // As the leases are released, every waiting request is served in turn.
        drop(held);
        let mut answers = 0;
        while let Some(answer) = served.recv().await {
            assert_eq!(answer, Ok(()));
            answers += 1;
        }
        assert_eq!(answers, 190);
        // The bound is still a bound: one busy instance of two allowed, containerConcurrency 1,
        // holds 20 waiting requests and refuses the 21st.
        let full = pool_with(QueueLimits { floor: 1, cap: 10_000 });
        full.configure(PoolSettings { max_instances: 2, ..settings(1, &["a:1"]) });
        let _busy = full.acquire(&[], soon()).await.unwrap();
        let waiting: Vec<_> = (0..20)
            .map(|_| {
                let p = Arc::clone(&full);
                tokio::spawn(async move { p.acquire(&[], soon()).await.err() })
            })
            .collect();
        while full.demand().queued < 20 {
            tokio::task::yield_now().await;
        }
        assert_eq!(full.acquire(&[], soon()).await.err(), Some(AcquireError::QueueFull { limit: 20 }));
        for w in waiting {
            w.abort();
        }
    }
}

//! The balancer of one revision: its endpoints, the requests in flight to each, and the requests
//! waiting for one.
//!
//! A request takes a [`Lease`] on the endpoint with the fewest requests in flight, never more than
//! the revision's `containerConcurrency` per endpoint. When no endpoint can take it (all busy,
//! all ejected, or none ready yet: a revision scaled to zero) it waits in a FIFO queue. The queue
//! is bounded by the capacity the revision may reach (see [`QueueLimits`]), so that demand beyond
//! what is placed now waits for the instances being added instead of being refused; a request
//! that finds it full is refused at once ([`AcquireError::QueueFull`]).
//! A released lease, a new endpoint and a re-admitted endpoint each hand the freed capacity to the
//! head of the queue directly, so a newcomer can never overtake a request that was waiting.
//!
//! Scale from zero and its limits: a request that finds no endpoint pokes the autoscaler (through
//! the [`Poker`]) and waits; when the revision cannot start (its status says why, see
//! [`PoolSettings::failure`]) the waiting requests fail at once instead of at their deadline. A
//! revision at its `maxInstances` with every endpoint at its concurrency cap cannot grow: its
//! requests wait only until their shorter at-capacity deadline, then fail with
//! [`AcquireError::AtCapacity`] (the client should come back later).
//!
//! Endpoints that keep failing are ejected for a while (Envoy's passive outlier detection): after
//! `consecutive_failures` connect failures or 5xx answers in a row, for `base_ejection` doubling
//! with each ejection in a row. When the time is up the endpoint takes requests again; the first
//! one is the probe: a success forgives its history, a failure ejects it again at once.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use stratus_client::runtime::ObjectRef;
use tokio::sync::oneshot;
use tokio::time::Instant;
use tracing::{info, warn};

use crate::autoscaler::Poker;
use crate::metrics::PoolMetrics;

/// How an endpoint speaks HTTP.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Protocol {
    /// HTTP/1.1.
    Http1,
    /// HTTP/2 over cleartext with prior knowledge (h2c).
    H2c,
}

/// When endpoints are ejected, and for how long.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OutlierDetection {
    /// Connect failures or 5xx answers in a row that eject an endpoint. 0 turns ejection off.
    pub consecutive_failures: u32,
    /// The first ejection's length; each further ejection in a row doubles it.
    pub base_ejection: Duration,
    /// The longest an ejection lasts.
    pub max_ejection: Duration,
    /// At most this share of a revision's endpoints is ejected at once, so that a revision whose
    /// every endpoint fails keeps answering (with the failures) instead of holding all requests.
    pub max_ejection_percent: u8,
}

impl Default for OutlierDetection {
    fn default() -> Self {
        OutlierDetection {
            consecutive_failures: 5,
            base_ejection: Duration::from_secs(30),
            max_ejection: Duration::from_secs(300),
            max_ejection_percent: 50,
        }
    }
}

/// How many requests may wait for one revision. The bound follows the capacity the revision may
/// reach, `10 × containerConcurrency × maxInstances` (Knative's queue-proxy lets ten requests
/// wait per request an instance takes at once), kept between `floor` and `cap`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct QueueLimits {
    /// The least bound: what a revision of small capacity may still hold, e.g. a burst arriving
    /// while it scales from zero.
    pub floor: usize,
    /// The greatest bound, whatever the capacity (and whatever `floor`): it bounds the memory a
    /// revision's waiting requests take. Also the bound of a revision whose concurrency is
    /// unlimited.
    pub cap: usize,
}

/// Requests that may wait per request an instance takes at once.
const QUEUE_PER_SLOT: u64 = 10;

/// One ready address of a revision.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct EndpointSpec {
    /// `host:port`, already checked to be a valid URI authority.
    pub address: Arc<str>,
    pub protocol: Protocol,
}

/// What a revision's pool needs to know of it; replaced whenever its objects change.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct PoolSettings {
    /// Requests one endpoint takes at once; 0 means unlimited.
    pub concurrency: u32,
    /// The revision's request timeout (`timeoutSeconds`).
    pub timeout: Duration,
    /// The revision's `scaling.maxInstances` (at least 1): with this many endpoints, all at their
    /// concurrency cap, the revision is at capacity.
    pub max_instances: u32,
    /// Why the revision cannot start, when its status says so: the text its waiting requests
    /// fail with while it has no endpoint.
    pub failure: Option<Arc<str>>,
    pub endpoints: Vec<EndpointSpec>,
}

/// How long a request may wait for an endpoint.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Deadlines {
    /// The end of any wait: [`AcquireError::TimedOut`], or [`AcquireError::AtCapacity`] when the
    /// revision is at capacity then.
    pub queue: Instant,
    /// The end of a wait while the revision is at capacity (no later than `queue`).
    pub at_capacity: Instant,
}

impl Deadlines {
    /// One deadline for both.
    #[cfg(test)]
    pub(crate) fn until(deadline: Instant) -> Deadlines {
        Deadlines { queue: deadline, at_capacity: deadline }
    }
}

/// Why no lease was granted.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub(crate) enum AcquireError {
    /// `limit` requests already wait, the revision's bound now (see [`QueueLimits`]).
    #[error("the queue of the revision is full ({limit} requests wait)")]
    QueueFull { limit: usize },
    /// The revision has no endpoint and its status says it cannot start; the text says why.
    #[error("{0}")]
    CannotStart(Arc<str>),
    /// The revision is at its `maxInstances` with every endpoint busy, and the request waited
    /// until its at-capacity deadline (or found the queue full).
    #[error("the revision is at capacity")]
    AtCapacity,
    /// The deadline passed while queued. `endpoints` is how many the revision had then.
    #[error("no endpoint became free in time")]
    TimedOut { endpoints: usize },
    /// Every endpoint of the revision was already tried by this request.
    #[error("every endpoint was tried")]
    Exhausted,
}

/// How a request sent on a lease went, for outlier detection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Outcome {
    Success,
    /// A connect failure, a broken exchange, or a 5xx answer.
    Failure,
}

/// A revision's point-in-time demand, as [`crate::Gateway::demand`] reports it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RevisionDemand {
    pub namespace: String,
    pub revision: String,
    /// Requests sent to an endpoint whose response has not finished.
    pub in_flight: u64,
    /// Requests waiting for an endpoint (all busy, or none ready: scale from zero).
    pub queued: u64,
    /// Requests admitted for the revision (past the rate limit) since the gateway started.
    pub requests: u64,
    /// Endpoints known, ejected ones included.
    pub endpoints: usize,
}

/// The balancer of one revision. Shared by the routing tables that name the revision and by the
/// requests holding its leases; its state outlives table rebuilds.
pub(crate) struct RevisionPool {
    key: ObjectRef,
    queue_limits: QueueLimits,
    outliers: OutlierDetection,
    metrics: PoolMetrics,
    poker: Arc<Poker>,
    requests: AtomicU64,
    state: Mutex<PoolState>,
}

/// A pool's cumulative load since it was created, for demand reports: the difference of two
/// snapshots is the load of the period between them.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Load {
    /// The integral over time of the requests in flight or queued, in request-nanoseconds.
    pub busy_ns: u128,
    /// Requests admitted (see [`RevisionPool::count_request`]).
    pub requests: u64,
    /// Requests waiting now.
    pub queued: u64,
}

/// The right to send one request to one endpoint. Dropping it frees the slot, which goes to the
/// first waiting request if there is one.
///
/// Never drop a lease while holding its pool's lock: releasing takes that lock.
pub(crate) struct Lease {
    pool: Arc<RevisionPool>,
    endpoint: u64,
    address: Arc<str>,
    protocol: Protocol,
    /// Cleared when the lease was never handed out, so that dropping it releases nothing.
    armed: bool,
}

struct PoolState {
    concurrency: u32,
    timeout: Duration,
    /// Requests that may wait: [`QueueLimits::bound`] of the current settings.
    queue_bound: usize,
    endpoints: Vec<Endpoint>,
    waiters: VecDeque<Waiter>,
    next_id: u64,
    /// Where the next scan starts, so that ties go round the endpoints instead of to the first.
    cursor: usize,
    max_instances: u32,
    failure: Option<Arc<str>>,
    /// Requests in flight or queued, since `level_since`; `busy_ns` integrates it up to then.
    level: u64,
    level_since: Instant,
    busy_ns: u128,
}

struct Endpoint {
    /// Unique within the pool, so that a lease of a removed endpoint never touches a new one.
    id: u64,
    address: Arc<str>,
    protocol: Protocol,
    in_flight: u32,
    consecutive_failures: u32,
    /// Ejections in a row without a success between them; > 0 means "on probation".
    ejections: u32,
    ejected_until: Option<Instant>,
}

struct Waiter {
    /// Unique within the pool (shared with endpoint ids), to leave the queue by.
    id: u64,
    /// A lease, or why the request will get none.
    tx: oneshot::Sender<Result<Lease, AcquireError>>,
    /// Endpoints this request already failed to connect to.
    exclude: Vec<u64>,
    /// When the request gives up if the revision is at capacity.
    at_capacity: Instant,
}

impl RevisionPool {
    /// An empty pool: requests wait until [`RevisionPool::configure`] gives it endpoints, and
    /// poke the autoscaler through `poker` meanwhile. Until then the revision's capacity is
    /// unknown, and up to `queue_limits.cap` requests may wait.
    pub(crate) fn new(
        key: ObjectRef,
        queue_limits: QueueLimits,
        outliers: OutlierDetection,
        metrics: PoolMetrics,
        poker: Arc<Poker>,
        timeout: Duration,
    ) -> RevisionPool {
        let state = PoolState {
            concurrency: 0,
            timeout,
            queue_bound: queue_limits.bound(0, u32::MAX),
            endpoints: Vec::new(),
            waiters: VecDeque::new(),
            next_id: 0,
            cursor: 0,
            max_instances: u32::MAX,
            failure: None,
            level: 0,
            level_since: Instant::now(),
            busy_ns: 0,
        };
        RevisionPool {
            key,
            queue_limits,
            outliers,
            metrics,
            poker,
            requests: AtomicU64::new(0),
            state: Mutex::new(state),
        }
    }

    /// The revision's namespace and name.
    pub(crate) fn key(&self) -> &ObjectRef {
        &self.key
    }

    /// The revision's request timeout.
    pub(crate) fn timeout(&self) -> Duration {
        self.lock().timeout
    }

    /// Counts one request admitted here, for [`RevisionPool::demand`].
    pub(crate) fn count_request(&self) {
        self.requests.fetch_add(1, Ordering::Relaxed);
    }

    /// Counts one answered request in the revision's metrics.
    pub(crate) fn observe(&self, status: http::StatusCode, elapsed: Duration) {
        self.metrics.record(status, elapsed);
    }

    /// Applies new settings. Endpoints that stay (same address) keep their in-flight count and
    /// ejection state; removed ones take no new requests, and their leases still in use end
    /// harmlessly. The queue bound follows the new concurrency and `maxInstances`; requests
    /// already waiting keep their place when it shrinks below their number, and newcomers are
    /// refused until the queue is below it again. Waiting requests are served by the new
    /// capacity at once, fail at once when the revision has no endpoint and a `failure`, and
    /// poke the autoscaler when they are left without an endpoint.
    pub(crate) fn configure(self: &Arc<Self>, settings: PoolSettings) {
        let mut state = self.lock();
        state.concurrency = settings.concurrency;
        state.timeout = settings.timeout;
        state.max_instances = settings.max_instances.max(1);
        state.queue_bound = self.queue_limits.bound(state.concurrency, state.max_instances);
        state.failure = settings.failure;
        let mut old: HashMap<Arc<str>, Endpoint> =
            state.endpoints.drain(..).map(|e| (Arc::clone(&e.address), e)).collect();
        let mut endpoints = Vec::with_capacity(settings.endpoints.len());
        for spec in settings.endpoints {
            let endpoint = match old.remove(&spec.address) {
                Some(mut e) => {
                    e.protocol = spec.protocol;
                    e
                }
                None => {
                    state.next_id += 1;
                    Endpoint::new(state.next_id, spec)
                }
            };
            endpoints.push(endpoint);
        }
        state.endpoints = endpoints;
        self.dispatch(&mut state);
        let stranded = state.endpoints.is_empty() && !state.waiters.is_empty();
        drop(state);
        if stranded {
            self.poker.poke(&self.key);
        }
    }

    /// A lease on the least loaded endpoint that this request has not tried (`exclude`), waiting
    /// in the queue when none can take it now. A request that finds no endpoint at all pokes the
    /// autoscaler first.
    ///
    /// Fails at once when every endpoint is excluded ([`AcquireError::Exhausted`]), when the
    /// revision has no endpoint and cannot start ([`AcquireError::CannotStart`], also sent to
    /// the waiting requests as soon as that becomes known), and when the queue holds as many
    /// requests as its bound ([`AcquireError::AtCapacity`] if the revision is at capacity, else
    /// [`AcquireError::QueueFull`]). A request still waiting at `deadlines.at_capacity` while
    /// the revision is at capacity, or at `deadlines.queue`, fails with
    /// [`AcquireError::AtCapacity`] if the revision is at capacity then and with
    /// [`AcquireError::TimedOut`] otherwise. Cancel-safe: a dropped call leaves the queue, and a
    /// lease granted at that moment is released.
    pub(crate) async fn acquire(
        self: &Arc<Self>,
        exclude: &[u64],
        deadlines: Deadlines,
    ) -> Result<Lease, AcquireError> {
        if self.lock().endpoints.is_empty() {
            self.poker.poke(&self.key);
        }
        let (mut rx, queued) = {
            let mut state = self.lock();
            state.waiters.retain(|w| !w.tx.is_closed());
            if state.endpoints.is_empty()
                && let Some(failure) = &state.failure
            {
                return Err(AcquireError::CannotStart(Arc::clone(failure)));
            }
            if !exclude.is_empty() && state.endpoints.iter().all(|e| exclude.contains(&e.id)) {
                return Err(AcquireError::Exhausted);
            }
            // Only when nobody waits: otherwise this request would overtake them.
            if state.waiters.is_empty()
                && let Some(i) = state.pick(exclude, Instant::now())
            {
                return Ok(self.grant(&mut state, i));
            }
            if state.waiters.len() >= state.queue_bound {
                return Err(match state.at_capacity() {
                    true => AcquireError::AtCapacity,
                    false => AcquireError::QueueFull { limit: state.queue_bound },
                });
            }
            let (tx, rx) = oneshot::channel();
            state.next_id += 1;
            let id = state.next_id;
            let at_capacity = deadlines.at_capacity.min(deadlines.queue);
            state.waiters.push_back(Waiter { id, tx, exclude: exclude.to_vec(), at_capacity });
            // Those ahead may be waiting only for endpoints they must not use (a retry), while
            // this request can take a free one now.
            self.dispatch(&mut state);
            (rx, Queued { pool: self, id })
        };
        // A lease granted after a deadline is dropped with the receiver, and so released.
        let mut capacity_checked = deadlines.at_capacity >= deadlines.queue;
        let result = loop {
            tokio::select! {
                biased;
                granted = &mut rx => match granted {
                    Ok(result) => break result,
                    // The sender is only dropped unanswered for a receiver that is gone, so this
                    // is the deadline.
                    Err(_) => break Err(self.gave_up()),
                },
                () = tokio::time::sleep_until(deadlines.at_capacity), if !capacity_checked => {
                    if self.lock().at_capacity() {
                        break Err(AcquireError::AtCapacity);
                    }
                    // Not at capacity now; should it get there later, `dispatch` ends the wait.
                    capacity_checked = true;
                }
                () = tokio::time::sleep_until(deadlines.queue) => break Err(self.gave_up()),
            }
        };
        drop(rx);
        drop(queued);
        result
    }

    /// Why a request that waited until its deadline got no lease.
    fn gave_up(&self) -> AcquireError {
        let state = self.lock();
        match state.at_capacity() {
            true => AcquireError::AtCapacity,
            false => AcquireError::TimedOut { endpoints: state.endpoints.len() },
        }
    }

    /// The pool's cumulative load up to `now` (all pools of one report are measured up to the
    /// same instant; a change after it that is already counted shifts the integral by the time
    /// between them).
    pub(crate) fn load(&self, now: Instant) -> Load {
        let state = self.lock();
        Load {
            busy_ns: state.busy_ns_until(now),
            requests: self.requests.load(Ordering::Relaxed),
            queued: state.waiters.iter().filter(|w| !w.tx.is_closed()).count() as u64,
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

    /// Hands free capacity to waiting requests, first come first served. A waiter that cannot
    /// use any free endpoint (it tried them all) does not block those behind it. Then tells the
    /// waiting requests that will get no lease: all of them when the revision has no endpoint
    /// and cannot start, those past their at-capacity deadline when it is at capacity.
    fn dispatch(self: &Arc<Self>, state: &mut PoolState) {
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
                if let Some(e) = state.endpoints.get_mut(chosen) {
                    e.in_flight = e.in_flight.saturating_sub(1);
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

    fn grant(self: &Arc<Self>, state: &mut PoolState, index: usize) -> Lease {
        let e = &mut state.endpoints[index];
        e.in_flight += 1;
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

    fn release(self: &Arc<Self>, endpoint: u64) {
        let mut state = self.lock();
        if let Some(e) = state.endpoints.iter_mut().find(|e| e.id == endpoint) {
            e.in_flight = e.in_flight.saturating_sub(1);
        }
        self.dispatch(&mut state);
    }

    fn record(self: &Arc<Self>, endpoint: u64, outcome: Outcome) {
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

    /// Brings the gauges and the load integral up to date after the counts changed.
    fn publish(&self, state: &mut PoolState) {
        let in_flight = state.in_flight();
        let queued = state.waiters.len() as u64;
        let now = Instant::now();
        state.busy_ns = state.busy_ns_until(now);
        state.level_since = now;
        state.level = in_flight + queued;
        self.metrics.in_flight.set(i64::try_from(in_flight).unwrap_or(i64::MAX));
        self.metrics.queued.set(i64::try_from(queued).unwrap_or(i64::MAX));
    }

    // Nothing below can panic between two steps of an update, so a poisoned lock still guards
    // consistent state.
    fn lock(&self) -> MutexGuard<'_, PoolState> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

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

/// A request's place in the queue: leaving it (served, timed out or cancelled) removes it at once,
/// so that the queue length and its gauge count only requests still waiting.
struct Queued<'a> {
    pool: &'a Arc<RevisionPool>,
    id: u64,
}

impl Drop for Queued<'_> {
    fn drop(&mut self) {
        let mut state = self.pool.lock();
        state.waiters.retain(|w| w.id != self.id);
        self.pool.publish(&mut state);
    }
}

impl Lease {
    /// The endpoint's pool-unique id, to exclude it from a retry.
    pub(crate) fn endpoint_id(&self) -> u64 {
        self.endpoint
    }

    /// The endpoint's `host:port`.
    pub(crate) fn address(&self) -> &str {
        &self.address
    }

    pub(crate) fn protocol(&self) -> Protocol {
        self.protocol
    }

    /// Reports how the request went, for outlier detection. The lease stays held.
    pub(crate) fn record(&self, outcome: Outcome) {
        self.pool.record(self.endpoint, outcome);
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        if self.armed {
            self.pool.release(self.endpoint);
        }
    }
}

impl PoolState {
    /// The eligible endpoint with the fewest requests in flight: not excluded, not ejected, below
    /// the concurrency limit.
    fn pick(&mut self, exclude: &[u64], now: Instant) -> Option<usize> {
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
    fn has_capacity(&self, now: Instant) -> bool {
        self.endpoints.iter().any(|e| !e.is_ejected(now) && !self.is_full(e))
    }

    fn is_full(&self, e: &Endpoint) -> bool {
        self.concurrency > 0 && e.in_flight >= self.concurrency
    }

    fn in_flight(&self) -> u64 {
        self.endpoints.iter().map(|e| u64::from(e.in_flight)).sum()
    }

    /// Whether the revision cannot take more requests and cannot grow: as many endpoints as its
    /// `maxInstances` (at least one), each at its concurrency cap. An unlimited concurrency is
    /// never at capacity, and an ejected endpoint is not at its cap.
    fn at_capacity(&self) -> bool {
        self.concurrency > 0
            && !self.endpoints.is_empty()
            && self.endpoints.len() >= self.max_instances as usize
            && self.endpoints.iter().all(|e| self.is_full(e))
    }

    /// `busy_ns` integrated up to `now`.
    fn busy_ns_until(&self, now: Instant) -> u128 {
        let elapsed = now.saturating_duration_since(self.level_since).as_nanos();
        self.busy_ns.saturating_add(elapsed.saturating_mul(u128::from(self.level)))
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
        }
    }

    fn is_ejected(&self, now: Instant) -> bool {
        self.ejected_until.is_some_and(|until| now < until)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    /// A pool whose queue holds `bound` requests, whatever the revision's capacity.
    fn pool(bound: usize) -> Arc<RevisionPool> {
        pool_with(QueueLimits { floor: bound, cap: bound })
    }

    fn pool_with(queue_limits: QueueLimits) -> Arc<RevisionPool> {
        let key = ObjectRef::new("default", "hello-00001");
        let metrics = crate::metrics::Metrics::default().pool_metrics(&key);
        let poker = Poker::disabled();
        Arc::new(RevisionPool::new(
            key,
            queue_limits,
            OutlierDetection::default(),
            metrics,
            poker,
            Duration::from_secs(10),
        ))
    }

    fn settings(concurrency: u32, addresses: &[&str]) -> PoolSettings {
        let endpoints =
            addresses.iter().map(|a| EndpointSpec { address: Arc::from(*a), protocol: Protocol::Http1 }).collect();
        PoolSettings { concurrency, timeout: Duration::from_secs(10), max_instances: 100, failure: None, endpoints }
    }

    fn soon() -> Deadlines {
        in_secs(5)
    }

    fn in_secs(secs: u64) -> Deadlines {
        Deadlines::until(Instant::now() + Duration::from_secs(secs))
    }

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
        pool.configure(settings(1, &["new:1"]));
        assert_eq!(waiting.await.unwrap(), Ok("new:1".to_string()));
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

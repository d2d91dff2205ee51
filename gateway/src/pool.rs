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
//!
//! The pool's types are defined here, with its two entry points, [`RevisionPool::configure`]
//! and [`RevisionPool::acquire`]. Each file under `pool/` adds one concern's behaviour to these
//! types and imports nothing from its siblings: `endpoints` picks the endpoint for a request and
//! keeps the endpoints in step with the settings, `queue` hands freed capacity to the waiting
//! requests and bounds their number, `outliers` ejects failing endpoints and re-admits them, and
//! `load` keeps the gauges and the load the autoscaler is told, and `usage` meters each
//! endpoint's busy periods and requests for billing.

mod endpoints;
mod load;
mod outliers;
mod queue;
mod usage;
pub(crate) use usage::Usage;

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use stratus_client::runtime::ObjectRef;
use tokio::sync::oneshot;
use tokio::time::Instant;

use crate::metrics::PoolMetrics;
use crate::poke::Poker;

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

/// One ready address of a revision.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct EndpointSpec {
    /// `host:port`, already checked to be a valid URI authority.
    pub address: Arc<str>,
    pub protocol: Protocol,
    /// The Instance behind the address, which its usage is reported as.
    pub instance: Arc<str>,
}

/// What a revision's usage reports say of it besides the instance (see `usage`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Billing {
    pub service: String,
    /// `billing::MODE_REQUEST` or `billing::MODE_INSTANCE`.
    pub mode: &'static str,
    /// The serving container's limits.
    pub cpu_millis: i64,
    pub memory_bytes: i64,
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
    /// How the revision's usage is billed; `None` while it is unknown (the Revision is not
    /// cached, or its limits do not parse: see `routes`).
    pub billing: Option<Arc<Billing>>,
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
    /// Answered requests by latency, cumulative (see [`LATENCY_BUCKETS`]).
    latency: [AtomicU64; LATENCY_BUCKETS],
    state: Mutex<PoolState>,
}

/// How many latency buckets demand reports carry: bucket `i < 16` counts requests answered in
/// at most 2^i ms, the last one those that took longer (`RevisionDemand.latency_buckets`).
pub(crate) const LATENCY_BUCKETS: usize = 17;

/// The latency bucket of a request that took `elapsed`.
fn latency_bucket(elapsed: Duration) -> usize {
    let mut bound = Duration::from_millis(1);
    for i in 0..LATENCY_BUCKETS - 1 {
        if elapsed <= bound {
            return i;
        }
        bound *= 2;
    }
    LATENCY_BUCKETS - 1
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
    /// Requests answered, by latency bucket (see [`LATENCY_BUCKETS`]).
    pub latency: [u64; LATENCY_BUCKETS],
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

/// Everything behind a pool's lock.
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
    /// Whether endpoints' busy periods and requests are metered (see `usage`).
    metering: bool,
    billing: Option<Arc<Billing>>,
    /// Endpoints removed by a new configuration whose usage is not reported yet (or that still
    /// have requests in flight): their leases still release here.
    retired: Vec<Endpoint>,
    /// Usage taken while the revision's billing mode and limits were unknown, reported with its
    /// own window once they are known (see `usage`).
    unbilled: Vec<usage::Unbilled>,
}

/// One endpoint of the revision, with the requests in flight to it and its ejection state.
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
    /// The Instance behind the address.
    instance: Arc<str>,
    /// Its busy periods and requests not yet reported (only while metering).
    meter: stratus_client::usage::Meter,
}

/// A request waiting in the queue.
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
    /// unknown, and up to `queue_limits.cap` requests may wait. With `metering`, each
    /// endpoint's busy periods and requests are kept for [`RevisionPool::take_usage`].
    pub(crate) fn new(
        key: ObjectRef,
        queue_limits: QueueLimits,
        outliers: OutlierDetection,
        metrics: PoolMetrics,
        poker: Arc<Poker>,
        timeout: Duration,
        metering: bool,
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
            metering,
            billing: None,
            retired: Vec::new(),
            unbilled: Vec::new(),
        };
        RevisionPool {
            key,
            queue_limits,
            outliers,
            metrics,
            poker,
            requests: AtomicU64::new(0),
            latency: std::array::from_fn(|_| AtomicU64::new(0)),
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
        self.latency[latency_bucket(elapsed)].fetch_add(1, Ordering::Relaxed);
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
        // Unknown for a moment (the Revision left the cache and comes back) keeps what was known.
        if settings.billing.is_some() {
            state.billing = settings.billing;
        }
        let waiting_at_zero = state.endpoints.is_empty() && state.waiters.iter().any(|w| !w.tx.is_closed());
        state.replace_endpoints(settings.endpoints);
        if waiting_at_zero && !state.endpoints.is_empty() {
            self.metrics.cold_starts.inc();
        }
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

    /// Whether the revision has an endpoint now (a request that finds none is held for a cold
    /// start).
    pub(crate) fn has_endpoints(&self) -> bool {
        !self.lock().endpoints.is_empty()
    }

    /// Why a request that waited until its deadline got no lease.
    fn gave_up(&self) -> AcquireError {
        let state = self.lock();
        match state.at_capacity() {
            true => AcquireError::AtCapacity,
            false => AcquireError::TimedOut { endpoints: state.endpoints.len() },
        }
    }

    // Nothing below can panic between two steps of an update, so a poisoned lock still guards
    // consistent state.
    fn lock(&self) -> MutexGuard<'_, PoolState> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
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

    /// The request could not be sent here (its connection failed) and goes to another
    /// endpoint: it is not counted as this endpoint's. The lease stays held.
    pub(crate) fn not_served(&self) {
        self.pool.not_served(self.endpoint);
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

#[cfg(test)]
pub(crate) mod testing {
    //! What the tests of every part of the pool build their pools from.

    use super::*;

    /// A pool whose queue holds `bound` requests, whatever the revision's capacity.
    pub(super) fn pool(bound: usize) -> Arc<RevisionPool> {
        pool_with(QueueLimits { floor: bound, cap: bound })
    }

    pub(super) fn pool_with(queue_limits: QueueLimits) -> Arc<RevisionPool> {
        pool_poking(queue_limits, Poker::disabled(), Duration::from_secs(10))
    }

    /// The pool of revision `default/hello-00001`, poking through `poker`, with requests timing
    /// out after `timeout`.
    pub(crate) fn pool_poking(queue_limits: QueueLimits, poker: Arc<Poker>, timeout: Duration) -> Arc<RevisionPool> {
        let key = ObjectRef::new("default", "hello-00001");
        let metrics = crate::metrics::Metrics::default().pool_metrics(&key);
        Arc::new(RevisionPool::new(key, queue_limits, OutlierDetection::default(), metrics, poker, timeout, true))
    }

    /// Settings with an endpoint at each of `addresses`, the instance behind `x:1` being
    /// `hello-00001-x`.
    pub(super) fn settings(concurrency: u32, addresses: &[&str]) -> PoolSettings {
        let endpoints = addresses
            .iter()
            .map(|a| EndpointSpec {
                address: Arc::from(*a),
                protocol: Protocol::Http1,
                instance: Arc::from(format!("hello-00001-{}", a.split(':').next().unwrap_or_default())),
            })
            .collect();
        let billing = Some(Arc::new(Billing {
            service: "hello".into(),
            mode: stratus_api::billing::MODE_REQUEST,
            cpu_millis: 1000,
            memory_bytes: 512 << 20,
        }));
        PoolSettings {
            concurrency,
            timeout: Duration::from_secs(10),
            max_instances: 100,
            failure: None,
            endpoints,
            billing,
        }
    }

    pub(super) fn soon() -> Deadlines {
        in_secs(5)
    }

    pub(super) fn in_secs(secs: u64) -> Deadlines {
        Deadlines::until(Instant::now() + Duration::from_secs(secs))
    }
}

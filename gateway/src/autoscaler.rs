//! The gateway's side of autoscaling: it streams the demand it sees per revision to the
//! autoscaler (`Autoscaler.ReportDemand`, one report per period on a stream that stays open and
//! is reopened with backoff when it breaks), and pokes it (`Autoscaler.Poke`, see
//! [`crate::poke`]) when a request finds a revision without an endpoint, so that scaling from
//! zero starts at once instead of at the next report.
//!
//! Both are hints: the gateway serves the same whether the autoscaler answers or not. Failed
//! pokes are logged at debug; a broken report stream at warn.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Weak};
use std::time::Duration;

use futures::channel::mpsc;
use rand::Rng;
use stratus_api::v1 as api;
use stratus_api::v1::autoscaler_client::AutoscalerClient;
use stratus_client::runtime::ObjectRef;
use stratus_client::{Bearer, Credentials};
use tokio::time::{Instant, MissedTickBehavior};
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Channel, Endpoint};
use tracing::{debug, info, warn};

use crate::pool::{Load, RevisionPool};

/// How long connecting to the autoscaler may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// The first wait before reopening a broken report stream; it doubles up to [`MAX_BACKOFF`].
const MIN_BACKOFF: Duration = Duration::from_secs(1);
const MAX_BACKOFF: Duration = Duration::from_secs(30);
/// A report stream that lasted this long was healthy: the next break starts the backoff over.
const STABLE: Duration = Duration::from_secs(10);

/// A channel to the autoscaler at `endpoint` (e.g. `http://127.0.0.1:7073`), connected on first
/// use and reconnected by tonic whenever needed. Fails only when `endpoint` is not a URI.
///
/// Must be called within a tokio runtime.
/// The autoscaler's client, presenting the gateway's token (the autoscaler takes reports from
/// gateways only).
pub(crate) type Autoscaler = AutoscalerClient<InterceptedService<Channel, Bearer>>;

/// With `tls`, over TLS: the autoscaler verified with the cluster CA, the gateway's client
/// certificate presented (and its token, which such an autoscaler does not need).
pub(crate) fn connect(
    endpoint: &str,
    tls: Option<&crate::AutoscalerTls>,
    credentials: Credentials,
) -> Result<Autoscaler, stratus_client::Error> {
    let configure = |e: Endpoint| {
        e.connect_timeout(CONNECT_TIMEOUT)
            .tcp_nodelay(true)
            // The report stream stays open for hours: find out when the peer is gone.
            .http2_keep_alive_interval(Duration::from_secs(30))
            .keep_alive_timeout(Duration::from_secs(10))
            .keep_alive_while_idle(true)
    };
    let channel = match tls {
        Some(tls) => stratus_client::tls::channel(endpoint, tls.ca_pem.as_bytes(), &tls.identity, None, configure)?,
        None => configure(
            Endpoint::from_shared(endpoint.to_string())
                .map_err(|_| stratus_client::Error::BadEndpoint(endpoint.to_string()))?,
        )
        .connect_lazy(),
    };
    Ok(AutoscalerClient::with_interceptor(channel, Bearer::new(credentials)))
}

/// Turns the pools' cumulative [`Load`]s into per-period demand: each report covers the time
/// since the previous one.
pub(crate) struct Meter {
    at: Instant,
    /// The load of each pool at the previous report, and which pool it was (a revision that
    /// left the routes and came back has a new pool, whose counts start over).
    last: HashMap<ObjectRef, (Weak<RevisionPool>, Load)>,
}

impl Meter {
    /// A meter whose first period starts now.
    pub(crate) fn new() -> Meter {
        Meter { at: Instant::now(), last: HashMap::new() }
    }

    /// The demand of each of `pools` since the previous call (or since the meter, or the pool,
    /// was created): in-flight requests (proxied and queued) averaged over the period, arrivals
    /// during it, requests queued now, and the period's length. Forgets pools not given.
    pub(crate) fn report(&mut self, pools: &[Arc<RevisionPool>]) -> Vec<api::RevisionDemand> {
        let now = Instant::now();
        let period = now.saturating_duration_since(self.at);
        self.at = now;
        let mut last = HashMap::with_capacity(pools.len());
        let mut demand = Vec::with_capacity(pools.len());
        for pool in pools {
            let load = pool.load(now);
            let before = match self.last.get(pool.key()) {
                Some((weak, before)) if std::ptr::eq(weak.as_ptr(), Arc::as_ptr(pool)) => *before,
                // A pool created during this period: its counts began within it.
                _ => Load::default(),
            };
            let busy = load.busy_ns.saturating_sub(before.busy_ns);
            // Lossy only beyond 2^53 request-nanoseconds a period (104 days of one request).
            #[allow(clippy::cast_precision_loss)]
            let concurrency = if period.is_zero() { 0.0 } else { busy as f64 / period.as_nanos() as f64 };
            demand.push(api::RevisionDemand {
                namespace: pool.key().namespace.clone(),
                revision: pool.key().name.clone(),
                concurrency,
                requests: i64::try_from(load.requests.saturating_sub(before.requests)).unwrap_or(i64::MAX),
                queued: i64::try_from(load.queued).unwrap_or(i64::MAX),
                period_ms: i64::try_from(period.as_millis()).unwrap_or(i64::MAX),
                latency_buckets: load
                    .latency
                    .iter()
                    .zip(before.latency)
                    .map(|(now, then)| i64::try_from(now.saturating_sub(then)).unwrap_or(i64::MAX))
                    .collect(),
            });
            last.insert(pool.key().clone(), (Arc::downgrade(pool), load));
        }
        self.last = last;
        demand.sort_by(|a, b| (&a.namespace, &a.revision).cmp(&(&b.namespace, &b.revision)));
        demand
    }
}

type Call = Pin<Box<dyn Future<Output = Result<tonic::Response<api::DemandAck>, tonic::Status>> + Send>>;

/// An open `ReportDemand` stream: where reports go, and the call that ends when it breaks.
struct Stream {
    reports: mpsc::Sender<api::DemandReport>,
    call: Call,
    opened: Instant,
}

/// Sends a [`api::DemandReport`] of every routed revision (those with no demand included: a
/// report replaces the gateway's previous one) every `period` as `gateway`, until `pools` (the
/// balancers of the routed revisions) returns `None` because the gateway was dropped. The
/// stream is opened at the first report and reopened, after a backoff from [`MIN_BACKOFF`]
/// doubling to [`MAX_BACKOFF`] (reset by a stream that lasted [`STABLE`]), when it breaks.
/// Reports made while no stream is open, or that the stream cannot take yet, are dropped: the
/// next one covers only its own period.
pub(crate) async fn report_demand(
    pools: impl Fn() -> Option<Vec<Arc<RevisionPool>>>,
    client: Autoscaler,
    gateway: String,
    period: Duration,
) {
    let open = move |reports| -> Call {
        let mut client = client.clone();
        Box::pin(async move { client.report_demand(tonic::Request::new(reports)).await })
    };
    report(pools, open, "the autoscaler", gateway, period).await;
}

/// Sends the same reports as [`report_demand`] to the API server, which keeps a few minutes of
/// them for users to read (a Service's requests per second and latency), with the same
/// period, reopening and dropping rules.
pub(crate) async fn report_traffic(
    pools: impl Fn() -> Option<Vec<Arc<RevisionPool>>>,
    client: stratus_client::Client,
    gateway: String,
    period: Duration,
) {
    let open = move |reports| -> Call {
        let client = client.clone();
        Box::pin(async move { client.report_traffic(tonic::Request::new(reports)).await })
    };
    report(pools, open, "the API server", gateway, period).await;
}

/// The report loop of [`report_demand`] and [`report_traffic`]: `open` starts a call that
/// streams the reports it is given to `peer`.
async fn report(
    pools: impl Fn() -> Option<Vec<Arc<RevisionPool>>>,
    open: impl Fn(mpsc::Receiver<api::DemandReport>) -> Call,
    peer: &'static str,
    gateway: String,
    period: Duration,
) {
    // A zero period would make the ticker panic.
    let period = period.max(Duration::from_millis(10));
    let mut meter = Meter::new();
    let mut ticker = tokio::time::interval_at(Instant::now() + period, period);
    ticker.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut stream: Option<Stream> = None;
    let mut backoff = MIN_BACKOFF;
    let mut retry_at = Instant::now();
    loop {
        let broke = tokio::select! {
            _ = ticker.tick() => {
                let Some(pools) = pools() else { return };
                let report = api::DemandReport { gateway: gateway.clone(), revisions: meter.report(&pools) };
                if stream.is_none() && Instant::now() >= retry_at {
                    let (reports, rx) = mpsc::channel(1);
                    stream = Some(Stream { reports, call: open(rx), opened: Instant::now() });
                }
                let Some(open) = &mut stream else { continue };
                match open.reports.try_send(report) {
                    Ok(()) => None,
                    Err(e) if e.is_full() => {
                        debug!(peer, "the previous demand report was not taken yet; dropping this one");
                        None
                    }
                    // The call ended and dropped the stream's receiver; its result says why.
                    Err(_) => Some(Err(tonic::Status::unavailable("the report stream closed"))),
                }
            }
            result = ended(&mut stream) => Some(result.map(drop)),
        };
        let Some(result) = broke else { continue };
        let lasted = stream.take().map_or(Duration::ZERO, |s| s.opened.elapsed());
        if lasted >= STABLE {
            backoff = MIN_BACKOFF;
        }
        let jitter = rand::rng().random_range(0.8..1.2);
        let wait = backoff.mul_f64(jitter);
        match result {
            Ok(()) => info!(peer, retry_in = ?wait, "the demand report stream was closed"),
            Err(status) => warn!(
                peer,
                retry_in = ?wait,
                code = ?status.code(),
                error = status.message(),
                "reporting demand failed"
            ),
        }
        retry_at = Instant::now() + wait;
        backoff = (backoff * 2).min(MAX_BACKOFF);
    }
}

/// Completes when the open stream's call ends; never when none is open.
async fn ended(stream: &mut Option<Stream>) -> Result<tonic::Response<api::DemandAck>, tonic::Status> {
    match stream {
        Some(s) => (&mut s.call).await,
        None => std::future::pending().await,
    }
}

/// The gateway's default name in reports: `{hostname}-{pid}`, or `gateway-{random}` when the
/// host name cannot be read.
pub(crate) fn default_name() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty());
    match host {
        Some(host) => format!("{host}-{}", std::process::id()),
        None => format!("gateway-{:016x}", rand::rng().random::<u64>()),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use std::sync::atomic::{AtomicUsize, Ordering};

    use futures::FutureExt;

    use super::*;
    use crate::poke::{POKE_INTERVAL, PokeFn, Poker};
    use crate::pool::testing::pool_poking;
    use crate::pool::{Deadlines, PoolSettings, QueueLimits};

    fn pool(poker: Arc<Poker>) -> Arc<RevisionPool> {
        pool_poking(QueueLimits { floor: 10, cap: 10 }, poker, Duration::from_secs(60))
    }

    fn in_secs(secs: u64) -> Deadlines {
        Deadlines::until(Instant::now() + Duration::from_secs(secs))
    }

    #[tokio::test(start_paused = true)]
    async fn demand_is_time_weighted_over_the_period() {
        let pool = pool(Poker::disabled());
        let mut meter = Meter::new();
        tokio::time::advance(Duration::from_millis(500)).await;
        // Two requests wait for the second half of the first second.
        let waiting: Vec<_> = (0..2)
            .map(|_| {
                pool.count_request();
                let p = Arc::clone(&pool);
                tokio::spawn(async move { p.acquire(&[], in_secs(60)).await.map(drop) })
            })
            .collect();
        tokio::task::yield_now().await;
        tokio::time::advance(Duration::from_millis(500)).await;
        let first = meter.report(std::slice::from_ref(&pool));
        assert_eq!(first.len(), 1);
        assert!((first[0].concurrency - 1.0).abs() < 1e-6, "{first:?}");
        assert_eq!((first[0].requests, first[0].queued, first[0].period_ms), (2, 2, 1000));
        // Both wait through the next second, then leave.
        tokio::time::advance(Duration::from_secs(1)).await;
        let second = meter.report(std::slice::from_ref(&pool));
        assert!((second[0].concurrency - 2.0).abs() < 1e-6, "{second:?}");
        assert_eq!((second[0].requests, second[0].queued), (0, 2));
        for w in &waiting {
            w.abort();
        }
        for w in waiting {
            let _ = w.await;
        }
        tokio::time::advance(Duration::from_secs(1)).await;
        let third = meter.report(std::slice::from_ref(&pool));
        assert_eq!((third[0].concurrency, third[0].requests, third[0].queued), (0.0, 0, 0));
        // A pool that replaces the revision's old one starts from zero, not from the old counts.
        let fresh = self::pool(Poker::disabled());
        fresh.count_request();
        let fourth = meter.report(&[fresh]);
        assert_eq!(fourth[0].requests, 1);
    }

    #[tokio::test(start_paused = true)]
    async fn a_request_at_zero_pokes_and_one_that_cannot_start_fails_at_once() {
        let poked = Arc::new(AtomicUsize::new(0));
        let send: PokeFn = {
            let poked = Arc::clone(&poked);
            Arc::new(move |_| {
                poked.fetch_add(1, Ordering::SeqCst);
                async { Ok(()) }.boxed()
            })
        };
        let pool = pool(Poker::new(send, POKE_INTERVAL));
        let p = Arc::clone(&pool);
        let waiting = tokio::spawn(async move { p.acquire(&[], in_secs(60)).await.map(drop) });
        tokio::task::yield_now().await;
        assert_eq!(poked.load(Ordering::SeqCst), 1);
        assert_eq!(pool.demand().queued, 1);
        let failure: Arc<str> = Arc::from("revision hello-00001 cannot start: ContainerMissing: nope");
        let settings = PoolSettings {
            concurrency: 1,
            timeout: Duration::from_secs(60),
            max_instances: 1,
            failure: Some(Arc::clone(&failure)),
            endpoints: Vec::new(),
            billing: None,
        };
        pool.configure(settings);
        let started = Instant::now();
        let result = waiting.await.unwrap();
        assert_eq!(result, Err(crate::pool::AcquireError::CannotStart(Arc::clone(&failure))));
        assert_eq!(started.elapsed(), Duration::ZERO, "woken at once, not at the deadline");
        // Later requests fail at once too, and still poke (the failure may be transient).
        tokio::time::advance(POKE_INTERVAL).await;
        let result = pool.acquire(&[], in_secs(60)).await.map(drop);
        assert_eq!(result, Err(crate::pool::AcquireError::CannotStart(failure)));
        assert_eq!(poked.load(Ordering::SeqCst), 2);
    }
}

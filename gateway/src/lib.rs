//! The Stratus gateway: the HTTP data plane (DESIGN §7).
//!
//! [`Gateway`] watches Services, Revisions, Endpoints and Nodes and routes each request by its host:
//! `{service}.{namespace}.{domain}` to the Service's traffic split (`status.traffic`, weighted
//! random per request), `{tag}-{service}.{namespace}.{domain}` to the tagged revision. Within a
//! revision it sends each request to the endpoint with the fewest requests in flight, at most
//! `containerConcurrency` at once per endpoint; the rest wait in a queue, which is also where
//! requests for a revision with no ready instance wait for one (scale from zero). Connect
//! failures are retried on another endpoint, failing endpoints are ejected for a while, services
//! are rate limited (`spec.rateLimitRps`), and every request is bounded by its revision's
//! `timeoutSeconds`.
//!
//! An Endpoints address is used only when its host is one of the addresses its node's agent
//! published (`Node.status.addresses`) and that node is Ready: the gateway connects only where
//! an agent put an instance, whatever else an Endpoints object may name (see `routes`). This is
//! decided when the caches change, not per request.
//!
//! Overload is backpressure, not a wall of errors: while a revision scales up, the demand beyond
//! the instances placed so far waits for the ones being added. Each revision's queue is bounded
//! by the capacity the revision may reach, ten waiting requests per request its instances may
//! take at once as Knative's queue-proxy allows: `10 × containerConcurrency × maxInstances`,
//! at least [`GatewayConfig::queue_floor`] and at most [`GatewayConfig::queue_cap`] (the cap
//! also for an unlimited `containerConcurrency`). In time, a wait is bounded by the revision's
//! timeout (or [`GatewayConfig::queue_timeout`]), and by the shorter at-capacity wait below. A
//! request that finds the queue full is refused at once the way Cloud Run refuses what it
//! cannot serve: 429 with `Retry-After: 1`.
//!
//! With an autoscaler ([`GatewayConfig::autoscaler`]) the gateway is also the activator: it
//! streams each revision's demand to the autoscaler every second and pokes it as soon as a
//! request finds a revision without an instance. Requests held for a revision that cannot start
//! (its `Ready` condition is False with a reason such as `ContainerMissing`) get 503 naming the
//! reason as soon as the gateway sees that status; requests for a revision at its
//! `maxInstances` with every instance at its `containerConcurrency` wait at most
//! [`GatewayConfig::at_capacity_timeout`] and then get 429 with `Retry-After`.
//!
//! With [`GatewayConfig::metering`] the gateway meters each instance for billing: the periods
//! it had a request in flight and the requests sent to it, reported per clock-aligned window as
//! UsageReports through an on-disk spool (see `stratus_client::usage`).
//!
//! ```no_run
//! # async fn example() -> Result<(), Box<dyn std::error::Error>> {
//! use stratus_gateway::{Gateway, GatewayConfig};
//!
//! let client = stratus_client::Client::new("http://127.0.0.1:7070")?;
//! let gateway = Gateway::new(client, GatewayConfig::default());
//! let admin = tokio::net::TcpListener::bind("127.0.0.1:8081").await?;
//! tokio::spawn(gateway.clone().serve_admin(admin, std::future::pending()));
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:8080").await?;
//! gateway.serve(listener, async { let _ = tokio::signal::ctrl_c().await; }).await?;
//! # Ok(())
//! # }
//! ```

use std::convert::Infallible;
use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, RwLock, Weak};
use std::time::Duration;

use futures::stream::{BoxStream, SelectAll};
use futures::{FutureExt, StreamExt};
use http::{Method, Request, Response, StatusCode};
use hyper::body::Incoming;
use hyper::service::service_fn;
use stratus_api::v1::{Endpoints, Node, Revision, Service};
use stratus_client::runtime::Informer;
use stratus_client::{Client, ErrorChain, ListParams};
use tokio::net::TcpListener;
use tokio::sync::{Semaphore, oneshot, watch};
use tracing::{debug, error};

mod autoscaler;
mod cidr;
mod h1;
mod headers;
mod invoker;
mod metrics;
mod poke;
mod pool;
mod proxy;
mod ratelimit;
mod routes;
pub mod tls;
mod trace;

pub use cidr::{Cidr, CidrError};
pub use pool::{OutlierDetection, RevisionDemand};

use metrics::Metrics;
use poke::Poker;
use pool::{QueueLimits, RevisionPool};
use proxy::{ProxyBody, ProxyError, Upstreams};
use routes::{Registry, ServiceRoute, Sources, Table};

/// What can stop a listener.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Accepting connections failed for a reason other than a passing shortage.
    #[error("accepting a connection failed")]
    Accept(#[source] std::io::Error),
    /// A thread that serves connections (see [`GatewayConfig::proxy_threads`]) could not start.
    #[error("starting the gateway's proxy threads failed")]
    Start(#[source] std::io::Error),
    /// A thread that serves connections ended without saying how: it panicked.
    #[error("a proxy thread of the gateway stopped unexpectedly")]
    ThreadLost,
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// How the gateway behaves. Every default works on one machine.
#[derive(Clone, Debug)]
pub struct GatewayConfig {
    /// Hosts are `{service}.{namespace}.{domain}`. Default `localhost`, which clients such as
    /// curl resolve to loopback with any subdomain.
    pub domain: String,
    /// The least number of requests that may wait per revision (for a busy or not yet ready
    /// instance). A revision's queue holds `10 × containerConcurrency × maxInstances` requests
    /// (ten per request its instances may take at once, as Knative's queue-proxy), never fewer
    /// than this nor more than [`GatewayConfig::queue_cap`]; the bound follows the revision's
    /// settings as they change. A request that finds the queue full gets 429 with
    /// `Retry-After: 1`. Default 100 (the `--max-queue` of earlier versions, then a fixed bound).
    pub queue_floor: usize,
    /// The most requests that may wait per revision, whatever its capacity (also when
    /// `queue_floor` is larger): it bounds the memory held by one revision's queue, and is the
    /// bound of a revision whose `containerConcurrency` is 0 (unlimited). Default 10,000.
    pub queue_cap: usize,
    /// The longest a request waits in a revision's queue. `None` (the default) means the
    /// revision's own `timeoutSeconds`, which is what a request for a revision scaled to zero
    /// must be able to wait for an instance to start.
    pub queue_timeout: Option<Duration>,
    /// Further endpoints tried when connecting fails, or when the exchange of an idempotent
    /// request whose body was not read breaks before an answer. Default 2.
    pub max_retries: u32,
    /// How long connecting to an endpoint may take. Default 2 s.
    pub connect_timeout: Duration,
    /// When failing endpoints are ejected.
    pub outliers: OutlierDetection,
    /// How long a shutdown waits for open exchanges to finish. Default 30 s.
    pub drain_timeout: Duration,
    /// The longest a request waits for a revision at capacity (as many ready instances as its
    /// `maxInstances`, each at its `containerConcurrency`) before it gets 429 with
    /// `Retry-After: 1`; the revision's timeout when shorter. Default 10 s, as Cloud Run.
    pub at_capacity_timeout: Duration,
    /// The autoscaler's gRPC endpoint, e.g. `http://127.0.0.1:7073`, or several separated by
    /// commas: one per controller replica. When set, demand is reported to each every
    /// `report_period` (only the leader acts on it; a standby that takes over has the demand
    /// at once) and each is poked when a request waits for a revision without an instance;
    /// when one cannot be reached the gateway serves the same, and logs. An endpoint that is
    /// not a URI is logged as an error when the gateway starts, and left out. Default none.
    pub autoscaler: Option<String>,
    /// With an `https://` autoscaler: the cluster CA that verifies it and the gateway's client
    /// certificate (`system:gateway:NAME`, NAME being [`GatewayConfig::name`]), which the
    /// autoscaler's demand service requires. Default none (an `http://` autoscaler, which
    /// checks the gateway's token instead).
    pub autoscaler_tls: Option<AutoscalerTls>,
    /// How often demand is reported to the autoscaler (at least every 10 ms). Default 1 s.
    pub report_period: Duration,
    /// The gateway's identity in demand reports: each report replaces the previous one of the
    /// same name, so it must be unique among the gateways. Default `{hostname}-{pid}`.
    pub name: String,
    /// The audience (`aud`) the tokens of callers of private services must carry: the API
    /// server's. Default `stratus`.
    pub token_audience: String,
    /// The networks of the proxies in front of the gateway (load balancers, TLS terminators)
    /// whose forwarding headers are believed. A request from one of them keeps its
    /// `Forwarded`, `X-Forwarded-For` (the proxy is appended to both), `X-Forwarded-Proto`,
    /// `X-Forwarded-Host` and `X-Real-IP`; from any other peer those are dropped and written
    /// afresh from the connection. Default none: every client is told apart by its own address.
    pub trusted_proxies: Vec<Cidr>,
    /// Answer plain-HTTP requests with a redirect (308) to HTTPS on this port instead of
    /// proxying them. Default none.
    pub https_redirect: Option<u16>,
    /// Timeouts and the connection limit of the proxy's listeners (the drain is
    /// `drain_timeout`).
    pub limits: stratus_support::server::Limits,
    /// Usage metering for billing. Default none (the binaries turn it on).
    pub metering: Option<Metering>,
    /// Threads that serve the proxy's connections, each on a single-threaded runtime of its
    /// own with its own upstream connections (as nginx's worker processes), so that a
    /// request's work stays on one core. 0 serves them on the runtime that calls
    /// [`Gateway::serve`]. The listener's connection limit is shared by its threads. Dropping
    /// the future that serves stops the threads as a shutdown does: each drains its open
    /// exchanges for up to `drain_timeout`. Default: one per CPU.
    pub proxy_threads: usize,
}

/// How the gateway meters usage: each instance's busy periods and requests, reported for every
/// window of `window` (aligned to whole multiples of it on the clock, except the first, which
/// starts with the gateway, and the last, cut when the gateway is dropped) as a UsageReport of
/// source `gateway`/[`GatewayConfig::name`] (made a DNS label), through `spool`.
#[derive(Clone, Debug)]
pub struct Metering {
    pub spool: Arc<stratus_client::usage::Spool>,
    /// Default 10 s.
    pub window: Duration,
}

impl Metering {
    pub const DEFAULT_WINDOW: Duration = Duration::from_secs(10);
}

/// How the gateway reaches the autoscaler over TLS.
#[derive(Clone, Debug)]
pub struct AutoscalerTls {
    /// The cluster CA (PEM), the only root the autoscaler's certificate may chain to.
    pub ca_pem: String,
    /// The gateway's client certificate, presented as it is renewed.
    pub identity: stratus_client::tls::ClientIdentity,
}

impl Default for GatewayConfig {
    fn default() -> Self {
        GatewayConfig {
            domain: "localhost".to_string(),
            queue_floor: 100,
            queue_cap: 10_000,
            queue_timeout: None,
            max_retries: 2,
            connect_timeout: Duration::from_secs(2),
            outliers: OutlierDetection::default(),
            drain_timeout: Duration::from_secs(30),
            at_capacity_timeout: Duration::from_secs(10),
            autoscaler: None,
            autoscaler_tls: None,
            report_period: Duration::from_secs(1),
            name: autoscaler::default_name(),
            token_audience: "stratus".into(),
            trusted_proxies: Vec::new(),
            https_redirect: None,
            limits: stratus_support::server::Limits::default(),
            metering: None,
            proxy_threads: std::thread::available_parallelism().map_or(1, usize::from),
        }
    }
}

/// A running gateway: its informers, routing table and balancers. Cheap to clone; clones share
/// everything, so one clone can serve while another reports [`Gateway::demand`].
#[derive(Clone)]
pub struct Gateway {
    shared: Arc<Shared>,
}

/// What request handlers share.
pub(crate) struct Shared {
    config: GatewayConfig,
    metrics: Metrics,
    /// The current table: replaced whole, never changed in place.
    table: RwLock<Arc<Table>>,
    /// Held while a table is built, so that two builds never interleave.
    registry: Mutex<Registry>,
    sources: Sources,
    /// Set once the caches were complete and a table was built from them.
    ready: AtomicBool,
    /// Admits the callers of private services.
    invokers: invoker::Invokers,
    /// Dropped with the gateway, which stops the usage spool's sender.
    _metering: Option<tokio::sync::oneshot::Sender<()>>,
    /// With metering: the start of the usage not yet spooled (the clock when the gateway
    /// started, then the end of each window as its reports are written). What lies after it
    /// is spooled when the gateway is dropped ([`Shared`]'s `Drop`).
    metered_from: Mutex<i64>,
    _informers: (Informer<Service>, Informer<Revision>, Informer<Endpoints>, Informer<Node>),
}

impl Gateway {
    /// Starts watching Services, Revisions and Endpoints of every namespace, and Nodes, through
    /// `client`; routes follow every change from then on. Until the first complete list of all
    /// four is in, requests are answered 503 (and `/readyz` says not ready). With an autoscaler
    /// configured, starts reporting demand to it.
    ///
    /// Must be called within a tokio runtime. The watches and reports stop when the last clone
    /// is dropped.
    pub fn new(client: Client, config: GatewayConfig) -> Gateway {
        let endpoints =
            config.autoscaler.as_deref().map_or_else(Vec::new, |list| list.split(',').map(str::trim).collect());
        let autoscalers: Vec<_> = endpoints
            .into_iter()
            .filter_map(|endpoint| match autoscaler::connect(endpoint, config.autoscaler_tls.as_ref(), client.credentials()) {
                Ok(client) => Some(client),
                Err(e) => {
                    error!(endpoint, error = %ErrorChain(&e), "the autoscaler endpoint is not valid; not reporting demand to it");
                    None
                }
            })
            .collect();
        let poker = if autoscalers.is_empty() { Poker::disabled() } else { Poker::grpc(autoscalers.clone()) };
        let all = ListParams::default();
        let services = Informer::<Service>::spawn(client.clone(), all.clone());
        let revisions = Informer::<Revision>::spawn(client.clone(), all.clone());
        let endpoints = Informer::<Endpoints>::spawn(client.clone(), all.clone());
        let nodes = Informer::<Node>::spawn(client.clone(), all);
        let invokers = invoker::Invokers::new(client.clone(), config.token_audience.clone());
        let mut changes: SelectAll<BoxStream<'static, ()>> = SelectAll::new();
        changes.push(services.subscribe().map(drop).boxed());
        changes.push(revisions.subscribe().map(drop).boxed());
        changes.push(endpoints.subscribe().map(drop).boxed());
        changes.push(nodes.subscribe().map(drop).boxed());
        let sources = Sources {
            services: services.store(),
            revisions: revisions.store(),
            endpoints: endpoints.store(),
            nodes: nodes.store(),
        };
        let metrics = Metrics::new(config.metering.as_ref().map(|m| m.spool.metrics()));
        let queue_limits = QueueLimits { floor: config.queue_floor, cap: config.queue_cap };
        let metering = config.metering.clone();
        let registry = Registry::new(queue_limits, config.outliers.clone(), metrics.clone(), poker, metering.is_some());
        let metering_stop = metering.as_ref().map(|m| {
            let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
            tokio::spawn(Arc::clone(&m.spool).run(client.clone(), async move {
                let _ = stopped.await;
            }));
            stop
        });
        let shared = Arc::new(Shared {
            config,
            metrics,
            table: RwLock::new(Arc::new(Table::default())),
            registry: Mutex::new(registry),
            sources,
            ready: AtomicBool::new(false),
            invokers,
            _metering: metering_stop,
            metered_from: Mutex::new(stratus_client::usage::now_millis()),
            _informers: (services, revisions, endpoints, nodes),
        });
        if let Some(metering) = metering {
            let source = stratus_client::usage::source_label(&shared.config.name);
            tokio::spawn(meter_usage(Arc::downgrade(&shared), metering, source));
        }
        tokio::spawn(follow_changes(Arc::downgrade(&shared), changes));
        for client in autoscalers {
            let (name, period) = (shared.config.name.clone(), shared.config.report_period);
            let gateway = Arc::downgrade(&shared);
            let pools = move || gateway.upgrade().map(|shared| shared.pools());
            tokio::spawn(autoscaler::report_demand(pools, client, name, period));
        }
        // The API server keeps a few minutes of the same reports for users to read.
        let (name, period) = (shared.config.name.clone(), shared.config.report_period);
        let gateway = Arc::downgrade(&shared);
        let pools = move || gateway.upgrade().map(|shared| shared.pools());
        tokio::spawn(autoscaler::report_traffic(pools, client.clone(), name, period));
        Gateway { shared }
    }

    /// Proxies the connections of `listener` (HTTP/1.1 and h2c, upgrades included) until
    /// `shutdown` completes, then drains open exchanges for up to `drain_timeout`. With
    /// [`GatewayConfig::https_redirect`], requests are redirected to HTTPS instead.
    ///
    /// Fails only when accepting fails for good (see [`Error::Accept`]).
    pub async fn serve(self, listener: TcpListener, shutdown: impl Future<Output = ()>) -> Result<()> {
        self.serve_with(listener, None, shutdown).await
    }

    /// [`Gateway::serve`] over TLS (`tls` from [`tls::GatewayCertificates::server_config`]):
    /// HTTP/2 or HTTP/1.1 by ALPN, and `X-Forwarded-Proto: https` to the workloads.
    pub async fn serve_tls(
        self,
        listener: TcpListener,
        tls: Arc<rustls::ServerConfig>,
        shutdown: impl Future<Output = ()>,
    ) -> Result<()> {
        self.serve_with(listener, Some(tls), shutdown).await
    }

    async fn serve_with(
        self,
        listener: TcpListener,
        tls: Option<Arc<rustls::ServerConfig>>,
        shutdown: impl Future<Output = ()>,
    ) -> Result<()> {
        let shared = self.shared;
        if let Ok(addr) = listener.local_addr() {
            stratus_support::server::log_listening("the gateway", addr, tls.is_some());
        }
        let threads = shared.config.proxy_threads;
        if threads == 0 {
            let limits = shared.config.limits.clone();
            return serve_connections(shared, listener, tls, limits, shutdown).await;
        }
        // Each thread accepts from the same socket and serves what it accepted on its own
        // single-threaded runtime, with its own upstream connections, as nginx's worker
        // processes do: a request, its upstream connection and their wake-ups stay on one core.
        let listener = listener.into_std().map_err(Error::Accept)?;
        // Dropped with this future, which stops the threads too.
        let (stop, stopped) = watch::channel(false);
        // One connection limit for the listener, whichever thread accepts.
        let limits = stratus_support::server::Limits {
            connection_permits: Some(Arc::new(Semaphore::new(shared.config.limits.max_connections))),
            ..shared.config.limits.clone()
        };
        let mut finished = Vec::with_capacity(threads);
        for i in 0..threads {
            let listener = listener.try_clone().map_err(Error::Start)?;
            let (shared, tls, limits, mut stopped) =
                (Arc::clone(&shared), tls.clone(), limits.clone(), stopped.clone());
            let (done, outcome) = oneshot::channel();
            let run = move || {
                let result = tokio::runtime::Builder::new_current_thread().enable_all().build().map_err(Error::Start);
                let result = result.and_then(|runtime| {
                    let result = runtime.block_on(async move {
                        let listener = TcpListener::from_std(listener).map_err(Error::Start)?;
                        // Stops when told, or when the serving future is dropped.
                        let stop = async move {
                            let _ = stopped.wait_for(|s| *s).await;
                        };
                        serve_connections(shared, listener, tls, limits, stop).await
                    });
                    // Whatever the connections spawned ends here, before the caller hears of it.
                    drop(runtime);
                    result
                });
                let _ = done.send(result);
            };
            std::thread::Builder::new().name(format!("gateway-proxy-{i}")).spawn(run).map_err(Error::Start)?;
            finished.push(outcome);
        }
        drop(listener);
        let mut finished = futures::future::select_all(finished);
        // The first thread to end early (accepting failed for good) stops the others.
        let early = tokio::select! {
            () = shutdown => None,
            (result, _, rest) = &mut finished => Some((result, rest)),
        };
        let _ = stop.send(true);
        let (first, rest) = match early {
            Some((result, rest)) => (result, rest),
            None => {
                let (result, _, rest) = finished.await;
                (result, rest)
            }
        };
        // A thread whose sender went without a word panicked.
        let mut outcome = first.unwrap_or(Err(Error::ThreadLost));
        for result in futures::future::join_all(rest).await {
            if outcome.is_ok() {
                outcome = result.unwrap_or(Err(Error::ThreadLost));
            }
        }
        outcome
    }

    /// Serves `/metrics` (Prometheus, OpenMetrics text), `/healthz` (the process answers) and
    /// `/readyz` (routes are loaded) on `listener` until `shutdown` completes.
    pub async fn serve_admin(self, listener: TcpListener, shutdown: impl Future<Output = ()>) -> Result<()> {
        let shared = self.shared;
        let limits = stratus_support::server::Limits { drain: Duration::from_secs(1), ..Default::default() };
        stratus_support::server::serve(listener, None, limits, shutdown, move |_| {
            let shared = Arc::clone(&shared);
            service_fn(move |req| std::future::ready(Ok::<_, Infallible>(admin(&shared, &req))))
        })
        .await
        .map_err(Error::Accept)
    }

    /// Each routed revision's demand now: requests in flight and queued, requests so far, and
    /// endpoints known. Sorted by namespace and revision. This is what the autoscaler reads.
    pub fn demand(&self) -> Vec<RevisionDemand> {
        let mut demand: Vec<RevisionDemand> = self.shared.registry().pools().map(|p| p.demand()).collect();
        demand.sort_by(|a, b| (&a.namespace, &a.revision).cmp(&(&b.namespace, &b.revision)));
        demand
    }

    /// Whether the routes are loaded: the caches were complete once and a table was built.
    pub fn is_ready(&self) -> bool {
        self.shared.ready.load(Ordering::Acquire)
    }
}

impl Shared {
    /// The service and revision a request for `host` goes to.
    fn route(&self, host: &str) -> Result<(Arc<ServiceRoute>, Arc<RevisionPool>), ProxyError> {
        if !self.ready.load(Ordering::Acquire) {
            return Err(ProxyError::NotReady);
        }
        let table = Arc::clone(&self.table.read().unwrap_or_else(PoisonError::into_inner));
        let route = table.route(host, &self.config.domain).ok_or_else(|| ProxyError::UnknownHost(host.to_string()))?;
        match route.revision() {
            Some(pool) => Ok((route.service, pool)),
            None => Err(ProxyError::NoTraffic(route.service.key.clone())),
        }
    }

    /// Builds a table from the caches and puts it in place.
    fn rebuild(&self) {
        let mut registry = self.registry();
        let table = Arc::new(registry.build(&self.sources));
        *self.table.write().unwrap_or_else(PoisonError::into_inner) = table;
    }

    /// The balancers of every routed revision now.
    fn metered_from(&self) -> MutexGuard<'_, i64> {
        self.metered_from.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn pools(&self) -> Vec<Arc<RevisionPool>> {
        self.registry().pools().cloned().collect()
    }

    // A build that panicked halfway leaves each balancer and bucket consistent (they have their
    // own locks); the next build recreates whatever it dropped.
    fn registry(&self) -> MutexGuard<'_, Registry> {
        self.registry.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Rebuilds the table after every burst of cache changes, from the first complete list on. Ends
/// when the gateway is dropped (the informers stop and their change streams end).
async fn follow_changes(shared: Weak<Shared>, mut changes: SelectAll<BoxStream<'static, ()>>) {
    let Some(sources) = shared.upgrade().map(|s| s.sources.clone()) else { return };
    let synced = async move {
        sources.services.wait_synced().await;
        sources.revisions.wait_synced().await;
        sources.endpoints.wait_synced().await;
        sources.nodes.wait_synced().await;
    };
    tokio::pin!(synced);
    loop {
        tokio::select! {
            () = &mut synced => break,
            change = changes.next() => if change.is_none() { return },
        }
    }
    loop {
        // Everything that arrived together makes one table.
        while let Some(Some(())) = changes.next().now_or_never() {}
        let Some(shared) = shared.upgrade() else { return };
        shared.rebuild();
        if !shared.ready.swap(true, Ordering::AcqRel) {
            debug!("routes loaded");
        }
        drop(shared);
        if changes.next().await.is_none() {
            return;
        }
    }
}

/// At the end of every metering window, spools one UsageReport per instance that had requests
/// or busy time in it. Ends when the gateway is dropped (which spools the window in progress).
/// A revision no Service routes to any more keeps its pool until its last requests ended and
/// their usage is spooled.
///
/// Windows are aligned to whole multiples of `metering.window` on the clock, except the first,
/// which starts when the gateway did: a gateway restarted under the same name within the
/// window its predecessor spooled at shutdown must not reuse that report's name (the API would
/// answer AlreadyExists, and the spool would drop the new report as already stored).
async fn meter_usage(shared: Weak<Shared>, metering: Metering, source: String) {
    use stratus_client::usage::{now_millis, until_millis, window_start};
    let window = i64::try_from(metering.window.as_millis()).unwrap_or(i64::MAX).max(1);
    loop {
        let Some(start) = shared.upgrade().map(|s| *s.metered_from()) else { return };
        let end = window_start(start, window).saturating_add(window);
        // The timer runs on the monotonic clock and reports are named by the wall clock: sleep
        // again if it woke before the wall clock reached the window's end.
        while now_millis() < end {
            tokio::time::sleep(until_millis(end)).await;
        }
        let Some(shared) = shared.upgrade() else { return };
        let mut from = shared.metered_from();
        spool_usage(&shared, &metering, &source, (*from, end));
        *from = end;
    }
}

/// Spools one UsageReport per instance that had requests or busy time in `[start, end)` (and
/// per window of usage kept while its revision's billing was unknown). An instance's usage
/// from two pools of its revision (one no longer routed, one routed again since) is one report.
fn spool_usage(shared: &Shared, metering: &Metering, source: &str, (start, end): (i64, i64)) {
    let mut reports: std::collections::BTreeMap<(String, i64), pool::Usage> = std::collections::BTreeMap::new();
    for pool in shared.pools() {
        for (subject, window, taken) in pool.take_usage(start, end) {
            match reports.entry((subject.instance.clone(), window.0)) {
                std::collections::btree_map::Entry::Occupied(mut e) => e.get_mut().2.merge(taken),
                std::collections::btree_map::Entry::Vacant(e) => {
                    e.insert((subject, window, taken));
                }
            }
        }
    }
    for (subject, window, taken) in reports.into_values() {
        let report =
            stratus_client::usage::report(stratus_api::billing::SOURCE_GATEWAY, source, &subject, window, &taken);
        if let Err(e) = metering.spool.write(&report) {
            error!(instance = subject.instance, error = %ErrorChain(&e), "a usage report could not be spooled");
        }
    }
    shared.registry().forget_settled();
}

impl Drop for Shared {
    /// A gateway that stops (SIGTERM, a rolling update), once its last exchanges are drained,
    /// spools the usage of the window in progress cut at now, instead of losing it: the next
    /// process started on the same spool sends it. Only `kill -9` loses that window.
    fn drop(&mut self) {
        let Some(metering) = self.config.metering.clone() else { return };
        let source = stratus_client::usage::source_label(&self.config.name);
        let from = *self.metered_from();
        let end = stratus_client::usage::now_millis();
        if end > from {
            spool_usage(self, &metering, &source, (from, end));
        }
    }
}

/// Serves the connections of `listener` on the current runtime until `shutdown` completes, with
/// upstream connections of its own.
async fn serve_connections(
    shared: Arc<Shared>,
    listener: TcpListener,
    tls: Option<Arc<rustls::ServerConfig>>,
    limits: stratus_support::server::Limits,
    shutdown: impl Future<Output = ()>,
) -> Result<()> {
    let limits = stratus_support::server::Limits { drain: shared.config.drain_timeout, ..limits };
    let redirect = if tls.is_none() { shared.config.https_redirect } else { None };
    let scheme = if tls.is_some() { "https" } else { "http" };
    let upstreams = Arc::new(Upstreams::new(shared.config.connect_timeout));
    stratus_support::server::serve(listener, tls, limits, shutdown, move |peer| {
        let (shared, upstreams) = (Arc::clone(&shared), Arc::clone(&upstreams));
        service_fn(move |req: Request<Incoming>| {
            let (shared, upstreams) = (Arc::clone(&shared), Arc::clone(&upstreams));
            async move {
                Ok::<_, Infallible>(match redirect {
                    Some(port) => proxy::redirect_to_https(&req, port),
                    None => proxy::handle(shared, &upstreams, req, peer.addr, scheme).await,
                })
            }
        })
    })
    .await
    .map_err(Error::Accept)
}

fn admin(shared: &Shared, req: &Request<Incoming>) -> Response<ProxyBody> {
    if req.method() != Method::GET {
        return proxy::text_response(StatusCode::METHOD_NOT_ALLOWED, "only GET is served here\n".into());
    }
    match req.uri().path() {
        "/metrics" => {
            let mut response = proxy::text_response(StatusCode::OK, shared.metrics.encode());
            response
                .headers_mut()
                .insert(http::header::CONTENT_TYPE, http::HeaderValue::from_static(metrics::CONTENT_TYPE));
            response
        }
        "/healthz" => proxy::text_response(StatusCode::OK, "ok\n".into()),
        "/readyz" if shared.ready.load(Ordering::Acquire) => proxy::text_response(StatusCode::OK, "ok\n".into()),
        "/readyz" => proxy::text_response(StatusCode::SERVICE_UNAVAILABLE, "routes are not loaded yet\n".into()),
        path => proxy::text_response(StatusCode::NOT_FOUND, format!("nothing at {path}\n")),
    }
}

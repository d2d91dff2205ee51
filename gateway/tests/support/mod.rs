//! A gateway in front of a real in-process API server, backends that are small hyper servers on
//! loopback ports, and the objects that connect them.

#![allow(dead_code)] // each test binary uses its own part of this module

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use bytes::Bytes;
use http::header::HOST;
use http::{HeaderMap, Request, Response, StatusCode, Uri};
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Empty, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::client::legacy::Client as HttpClient;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use stratus_api::Resource;
use stratus_api::v1::autoscaler_server::{Autoscaler, AutoscalerServer};
use stratus_api::v1::{
    Condition, Container, DemandAck, DemandReport, EndpointAddress, Endpoints, EndpointsSpec, Node, NodeAddress,
    NodeStatus, ObjectMeta, PokeRequest, PokeResponse, Revision, RevisionSpec, RevisionStatus, Service, ServiceStatus,
    TrafficTarget,
};
use stratus_apiserver::testing::TestServer;
use stratus_client::Client;
use stratus_gateway::{Gateway, GatewayConfig};
use tokio::net::TcpListener;
use tokio::sync::{Mutex, mpsc, watch};
use tokio::task::JoinHandle;
use tokio::time::Instant;

pub type BoxError = Box<dyn std::error::Error + Send + Sync>;
pub type TestBody = UnsyncBoxBody<Bytes, BoxError>;

/// How long any condition may take to come true: generous, for a loaded two-core machine.
pub const WAIT: Duration = Duration::from_secs(20);
pub const NS: &str = "default";
/// The node the harness's Endpoints addresses are on.
pub const NODE: &str = "node-1";

/// An API server, a gateway watching it (proxy and admin listeners on free ports) and an HTTP
/// client, with the Node [`NODE`] Ready at `127.0.0.1` (where the backends listen), which the
/// Endpoints this harness writes name. Everything stops when it is dropped.
pub struct Harness {
    pub api: Client,
    pub gateway: Gateway,
    pub addr: SocketAddr,
    pub admin: SocketAddr,
    http: HttpClient<HttpConnector, TestBody>,
    stop: watch::Sender<bool>,
    pub server: TestServer,
}

impl Harness {
    pub async fn start() -> Result<Harness> {
        Harness::start_with(GatewayConfig::default()).await
    }

    /// Starts everything and waits until the gateway has loaded its (empty) routes.
    pub async fn start_with(config: GatewayConfig) -> Result<Harness> {
        Harness::start_on(TestServer::start().await, config).await
    }

    /// A gateway on the API server `server` (one a [`Harness::stop`]ped harness left running),
    /// waiting until it has loaded its routes.
    pub async fn start_on(server: TestServer, config: GatewayConfig) -> Result<Harness> {
        let api = Client::new(&server.endpoint)?.with_token(&server.token);
        register_node(&api, NODE, &["127.0.0.1"]).await?;
        let gateway = Gateway::new(api.clone(), config);
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let admin_listener = TcpListener::bind("127.0.0.1:0").await?;
        let (addr, admin) = (listener.local_addr()?, admin_listener.local_addr()?);
        let (stop, stopped) = watch::channel(false);
        let until_stopped = |mut rx: watch::Receiver<bool>| async move {
            let _ = rx.wait_for(|stop| *stop).await;
        };
        tokio::spawn(gateway.clone().serve(listener, until_stopped(stopped.clone())));
        tokio::spawn(gateway.clone().serve_admin(admin_listener, until_stopped(stopped)));
        let http = HttpClient::builder(TokioExecutor::new()).build_http();
        let harness = Harness { api, gateway, addr, admin, http, stop, server };
        eventually("the gateway to load its routes", || std::future::ready(harness.gateway.is_ready())).await?;
        Ok(harness)
    }

    /// Stops the gateway as its binary does on SIGTERM (it stops accepting, drains, and is
    /// dropped once its servers return) and hands back the API server, still running.
    pub fn stop(self) -> TestServer {
        let _ = self.stop.send(true);
        self.server
    }

    /// Creates a Revision with one container.
    pub async fn revision(&self, name: &str, concurrency: i32, timeout_seconds: i32) -> Result<()> {
        self.revision_spec(name, revision_spec(concurrency, timeout_seconds)).await
    }

    /// Creates a Revision of `spec`.
    pub async fn revision_spec(&self, name: &str, spec: RevisionSpec) -> Result<()> {
        let rev = Revision { metadata: meta(name), spec: Some(spec), ..Default::default() };
        self.api.create(rev).await.with_context(|| format!("creating revision {name}"))?;
        Ok(())
    }

    /// Writes the `Ready` condition of Revision `name`'s status, as its controller would.
    pub async fn revision_ready(&self, name: &str, status: &str, reason: &str, message: &str) -> Result<()> {
        let mut rev = self.api.get::<Revision>(NS, name).await?;
        let ready = Condition {
            r#type: "Ready".into(),
            status: status.into(),
            reason: reason.into(),
            message: message.into(),
            ..Default::default()
        };
        rev.status = Some(RevisionStatus { conditions: vec![ready], ..Default::default() });
        self.api.update_status(rev).await.with_context(|| format!("writing the status of revision {name}"))?;
        Ok(())
    }

    /// Creates a Service whose status routes `traffic`, given as (revision, percent, tag).
    pub async fn service(&self, name: &str, rate_limit_rps: Option<i32>, traffic: &[(&str, i32, &str)]) -> Result<()> {
        let mut svc = Service::with_image(name, "example/hello:1");
        svc.meta_mut().namespace = NS.into();
        if let Some(spec) = svc.spec.as_mut() {
            spec.rate_limit_rps = rate_limit_rps;
        }
        let mut svc = self.api.create(svc).await.with_context(|| format!("creating service {name}"))?;
        let traffic = traffic
            .iter()
            .map(|(revision, percent, tag)| TrafficTarget {
                revision_name: revision.to_string(),
                latest_revision: Some(false),
                percent: Some(*percent),
                tag: tag.to_string(),
                ..Default::default()
            })
            .collect();
        svc.status = Some(ServiceStatus { traffic, ..Default::default() });
        self.api.update_status(svc).await.with_context(|| format!("writing the traffic of service {name}"))?;
        Ok(())
    }

    /// Sets the Endpoints of `revision` to `addresses`, given as (host:port, protocol), on node
    /// [`NODE`], creating the object if needed.
    pub async fn endpoints(&self, revision: &str, addresses: &[(String, &str)]) -> Result<()> {
        let spec = EndpointsSpec {
            revision_name: revision.into(),
            addresses: addresses
                .iter()
                .enumerate()
                .map(|(i, (address, protocol))| EndpointAddress {
                    address: address.clone(),
                    instance_name: format!("{revision}-{i}"),
                    node_name: NODE.into(),
                    protocol: protocol.to_string(),
                    ..Default::default()
                })
                .collect(),
        };
        match self.api.get::<Endpoints>(NS, revision).await {
            Ok(mut eps) => {
                eps.spec = Some(spec);
                self.api.update(eps).await?;
            }
            Err(stratus_client::Error::NotFound(_)) => {
                self.api.create(Endpoints { metadata: meta(revision), spec: Some(spec), ..Default::default() }).await?;
            }
            Err(e) => return Err(e.into()),
        }
        Ok(())
    }

    /// Waits until the gateway routes to `revision` and knows `count` endpoints of it.
    pub async fn wait_endpoints(&self, revision: &str, count: usize) -> Result<()> {
        eventually(&format!("{count} endpoints of {revision}"), || {
            let demand = self.gateway.demand();
            std::future::ready(demand.iter().any(|d| d.revision == revision && d.endpoints == count))
        })
        .await
    }

    /// The demand the gateway reports for `revision`.
    pub fn queued(&self, revision: &str) -> u64 {
        self.gateway.demand().iter().find(|d| d.revision == revision).map_or(0, |d| d.queued)
    }

    /// Sends `req` (a path-only URI and a Host header) to the gateway.
    pub async fn send(&self, mut req: Request<TestBody>) -> Result<Response<Incoming>> {
        let path = req.uri().path_and_query().map_or("/", |p| p.as_str()).to_string();
        *req.uri_mut() = format!("http://{}{path}", self.addr).parse::<Uri>()?;
        Ok(tokio::time::timeout(WAIT, self.http.request(req)).await.context("the gateway did not answer")??)
    }

    /// GETs `path` from `host` through the gateway; the status, headers and body as text.
    pub async fn get(&self, host: &str, path: &str) -> Result<(StatusCode, HeaderMap, String)> {
        let req = Request::get(path).header(HOST, host).body(empty())?;
        let response = self.send(req).await?;
        read(response).await
    }

    /// GETs `path` from the admin listener.
    pub async fn admin(&self, path: &str) -> Result<(StatusCode, String)> {
        let uri: Uri = format!("http://{}{path}", self.admin).parse()?;
        let response = self.http.request(Request::get(uri).body(empty())?).await?;
        let (status, _, body) = read(response).await?;
        Ok((status, body))
    }
}

/// A backend: a hyper server (HTTP/1.1 and h2c, with upgrades) on a loopback port. Counts its
/// requests; stops accepting when dropped.
pub struct Backend {
    pub addr: SocketAddr,
    pub hits: Arc<AtomicUsize>,
    task: JoinHandle<()>,
}

impl Backend {
    pub async fn start<F, Fut>(handler: F) -> Result<Backend>
    where
        F: Fn(Request<Incoming>) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Response<TestBody>> + Send + 'static,
    {
        Backend::start_on("127.0.0.1", handler).await
    }

    /// A backend on a free port of `ip` (any of 127/8 is local on Linux).
    pub async fn start_on<F, Fut>(ip: &str, handler: F) -> Result<Backend>
    where
        F: Fn(Request<Incoming>) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Response<TestBody>> + Send + 'static,
    {
        let listener = TcpListener::bind((ip, 0)).await?;
        let addr = listener.local_addr()?;
        let hits = Arc::new(AtomicUsize::new(0));
        let handler = Arc::new(handler);
        let counter = Arc::clone(&hits);
        let task = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let (handler, counter) = (Arc::clone(&handler), Arc::clone(&counter));
                tokio::spawn(async move {
                    let service = service_fn(move |req| {
                        counter.fetch_add(1, Ordering::SeqCst);
                        let response = handler(req);
                        async move { Ok::<_, Infallible>(response.await) }
                    });
                    let builder = auto::Builder::new(TokioExecutor::new());
                    let _ = builder.serve_connection_with_upgrades(TokioIo::new(stream), service).await;
                });
            }
        });
        Ok(Backend { addr, hits, task })
    }

    /// A backend answering every request with 200 and its name.
    pub async fn named(name: &'static str) -> Result<Backend> {
        Backend::start(move |_| async move { text(StatusCode::OK, name) }).await
    }

    /// This backend as an endpoint address of `protocol`.
    pub fn endpoint(&self, protocol: &'static str) -> (String, &'static str) {
        (self.addr.to_string(), protocol)
    }

    pub fn hits(&self) -> usize {
        self.hits.load(Ordering::SeqCst)
    }
}

impl Drop for Backend {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A backend answering every request with 200 and its name once `gate` is open (set to true),
/// holding it until then.
pub async fn gated(name: &'static str, gate: watch::Receiver<bool>) -> Result<Backend> {
    Backend::start(move |_| {
        let mut gate = gate.clone();
        async move {
            let _ = gate.wait_for(|open| *open).await;
            text(StatusCode::OK, name)
        }
    })
    .await
}

/// The spec of a revision with one container.
pub fn revision_spec(concurrency: i32, timeout_seconds: i32) -> RevisionSpec {
    RevisionSpec {
        containers: vec![Container { image: "example/hello:1".into(), ..Default::default() }],
        container_concurrency: Some(concurrency),
        timeout_seconds: Some(timeout_seconds),
        ..Default::default()
    }
}

/// An Autoscaler gRPC server on a loopback port that passes on every demand report and poke it
/// receives. Stops when dropped.
pub struct FakeAutoscaler {
    /// `http://127.0.0.1:{port}`.
    pub endpoint: String,
    pub reports: Mutex<mpsc::UnboundedReceiver<DemandReport>>,
    pub pokes: Mutex<mpsc::UnboundedReceiver<PokeRequest>>,
    /// Report streams opened so far.
    pub streams: Arc<AtomicUsize>,
    _stop: watch::Sender<bool>,
}

struct Recorder {
    reports: mpsc::UnboundedSender<DemandReport>,
    pokes: mpsc::UnboundedSender<PokeRequest>,
    streams: Arc<AtomicUsize>,
    /// Every report stream fails after this many reports.
    break_after: Option<usize>,
}

#[tonic::async_trait]
impl Autoscaler for Recorder {
    async fn report_demand(
        &self,
        request: tonic::Request<tonic::Streaming<DemandReport>>,
    ) -> Result<tonic::Response<DemandAck>, tonic::Status> {
        self.streams.fetch_add(1, Ordering::SeqCst);
        let mut reports = request.into_inner();
        let mut received = 0;
        while let Some(report) = reports.message().await? {
            let _ = self.reports.send(report);
            received += 1;
            if self.break_after.is_some_and(|n| received >= n) {
                return Err(tonic::Status::unavailable("the fake autoscaler breaks its streams"));
            }
        }
        Ok(tonic::Response::new(DemandAck {}))
    }

    async fn poke(&self, request: tonic::Request<PokeRequest>) -> Result<tonic::Response<PokeResponse>, tonic::Status> {
        let _ = self.pokes.send(request.into_inner());
        Ok(tonic::Response::new(PokeResponse {}))
    }
}

impl FakeAutoscaler {
    pub async fn start() -> Result<FakeAutoscaler> {
        FakeAutoscaler::start_with(None).await
    }

    /// A fake autoscaler that fails every report stream after `break_after` reports, if given.
    pub async fn start_with(break_after: Option<usize>) -> Result<FakeAutoscaler> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let endpoint = format!("http://{}", listener.local_addr()?);
        let (reports_tx, reports) = mpsc::unbounded_channel();
        let (pokes_tx, pokes) = mpsc::unbounded_channel();
        let streams = Arc::new(AtomicUsize::new(0));
        let recorder = Recorder { reports: reports_tx, pokes: pokes_tx, streams: Arc::clone(&streams), break_after };
        let service = AutoscalerServer::new(recorder);
        let (stop, mut stopped) = watch::channel(false);
        tokio::spawn(tonic::transport::Server::builder().add_service(service).serve_with_incoming_shutdown(
            tonic::transport::server::TcpIncoming::from(listener),
            async move {
                let _ = stopped.wait_for(|stop| *stop).await;
            },
        ));
        Ok(FakeAutoscaler { endpoint, reports: Mutex::new(reports), pokes: Mutex::new(pokes), streams, _stop: stop })
    }

    /// The next demand report, failing after [`WAIT`].
    pub async fn next_report(&self) -> Result<DemandReport> {
        let next = tokio::time::timeout(WAIT, self.reports.lock().await.recv()).await;
        next.context("no demand report came")?.context("the fake autoscaler stopped")
    }

    /// The next poke, failing after [`WAIT`].
    pub async fn next_poke(&self) -> Result<PokeRequest> {
        let next = tokio::time::timeout(WAIT, self.pokes.lock().await.recv()).await;
        next.context("no poke came")?.context("the fake autoscaler stopped")
    }
}

/// Registers the Node `name`, Ready, at `addresses` (as its agent would publish them), or
/// rewrites the status of one registered already.
pub async fn register_node(api: &Client, name: &str, addresses: &[&str]) -> Result<()> {
    let mut node = match api.get::<Node>("", name).await {
        Ok(node) => node,
        Err(stratus_client::Error::NotFound(_)) => {
            let node =
                Node { metadata: Some(ObjectMeta { name: name.into(), ..Default::default() }), ..Default::default() };
            api.create(node).await.with_context(|| format!("creating node {name}"))?
        }
        Err(e) => return Err(e.into()),
    };
    let ready =
        Condition { r#type: "Ready".into(), status: "True".into(), reason: "AgentReady".into(), ..Default::default() };
    let addresses =
        addresses.iter().map(|a| NodeAddress { r#type: "InternalIP".into(), address: a.to_string() }).collect();
    node.status = Some(NodeStatus { conditions: vec![ready], addresses, ..Default::default() });
    api.update_status(node).await.with_context(|| format!("writing the status of node {name}"))?;
    Ok(())
}

/// An address nothing listens on: connecting is refused.
pub async fn dead_address() -> Result<String> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    Ok(listener.local_addr()?.to_string())
}

/// Polls `check` until it is true, failing after [`WAIT`].
pub async fn eventually<F, Fut>(what: &str, mut check: F) -> Result<()>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = Instant::now() + WAIT;
    loop {
        if check().await {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("timed out waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// A response's status, headers and whole body as text.
pub async fn read(response: Response<Incoming>) -> Result<(StatusCode, HeaderMap, String)> {
    let (parts, body) = response.into_parts();
    let body = tokio::time::timeout(WAIT, body.collect()).await.context("the body did not end")??.to_bytes();
    Ok((parts.status, parts.headers, String::from_utf8_lossy(&body).into_owned()))
}

pub fn text(status: StatusCode, body: impl Into<Bytes>) -> Response<TestBody> {
    let mut response = Response::new(Full::new(body.into()).map_err(|never| match never {}).boxed_unsync());
    *response.status_mut() = status;
    response
}

pub fn empty() -> TestBody {
    Empty::new().map_err(|never| match never {}).boxed_unsync()
}

pub fn full(body: impl Into<Bytes>) -> TestBody {
    Full::new(body.into()).map_err(|never| match never {}).boxed_unsync()
}

/// The host of `service` under the default domain.
pub fn host(service: &str) -> String {
    format!("{service}.{NS}.localhost")
}

fn meta(name: &str) -> Option<ObjectMeta> {
    Some(ObjectMeta { name: name.into(), namespace: NS.into(), ..Default::default() })
}

/// FNV-1a, to compare large bodies without keeping them.
pub fn fnv(hash: u64, bytes: &[u8]) -> u64 {
    bytes.iter().fold(hash, |h, b| (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3))
}

pub const FNV_START: u64 = 0xcbf2_9ce4_8422_2325;

/// A revision `mirror-1` behind service `mirror` whose backend answers with the headers it got,
/// one `name: value` per line.
pub async fn mirror(h: &Harness) -> Result<Backend> {
    let mirror = Backend::start(|req: Request<Incoming>| async move {
        let lines: Vec<String> =
            req.headers().iter().map(|(k, v)| format!("{k}: {}", v.to_str().unwrap_or("<binary>"))).collect();
        text(StatusCode::OK, lines.join("\n"))
    })
    .await?;
    h.revision("mirror-1", 0, 30).await?;
    h.endpoints("mirror-1", &[mirror.endpoint("http1")]).await?;
    h.service("mirror", None, &[("mirror-1", 100, "")]).await?;
    h.wait_endpoints("mirror-1", 1).await?;
    Ok(mirror)
}

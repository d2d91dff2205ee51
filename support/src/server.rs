//! The one accept loop of every Stratus HTTP and gRPC server (API server, node agent,
//! controllers' metrics, gateway): HTTP/1.1 and HTTP/2 on one port, in clear or over TLS, with
//! the limits that keep slow or idle clients from exhausting the process.
//!
//! - **TLS** (optional): a handshake must finish within the header timeout; a client speaking
//!   plain HTTP to a TLS port gets a `400` saying so, as Go's servers answer.
//! - **Header timeout**: the first request's head on a connection must arrive within
//!   `header_read_timeout` (the loop's own timer); a later one on a kept-alive HTTP/1
//!   connection within `idle_timeout + header_read_timeout` of the previous response (hyper's).
//! - **Idle timeout**: a connection with no request in flight for `idle_timeout` is closed
//!   gracefully (GOAWAY on HTTP/2). A request is in flight until its response body has been sent,
//!   so long watches and streams are never idle.
//! - **Connection limit**: past `max_connections`, new connections are closed at once rather
//!   than left queued, and a warning says so (at most once a second).
//! - **HTTP/2 keep-alive pings** find dead peers.
//! - **Graceful shutdown**: on `shutdown`, stop accepting, let open exchanges finish for up to
//!   `drain`, then close the rest.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use http::{Request, Response};
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;
use hyper::service::Service;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, watch};
use tokio::task::JoinSet;
use tracing::{debug, info, warn};

/// How a server treats its connections. [`Limits::default`] suits every Stratus server.
#[derive(Debug, Clone)]
pub struct Limits {
    /// A request's head (and a TLS handshake) must arrive within this.
    pub header_read_timeout: Duration,
    /// A connection with nothing in flight for this long is closed.
    pub idle_timeout: Duration,
    /// Connections beyond this many are closed as soon as they are accepted.
    pub max_connections: usize,
    /// The permits of `max_connections`, when several servers share them (one listener served
    /// by several threads); `None` gives each server its own.
    pub connection_permits: Option<Arc<Semaphore>>,
    /// HTTP/2 pings this often; a peer that does not answer within `keep_alive_timeout` is gone.
    pub keep_alive_interval: Duration,
    pub keep_alive_timeout: Duration,
    /// On shutdown, open exchanges get this long to finish.
    pub drain: Duration,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            header_read_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(120),
            max_connections: 10_000,
            connection_permits: None,
            keep_alive_interval: Duration::from_secs(30),
            keep_alive_timeout: Duration::from_secs(20),
            drain: Duration::from_secs(10),
        }
    }
}

/// Who is on the other end of a connection.
#[derive(Debug, Clone)]
pub struct Peer {
    pub addr: SocketAddr,
    /// Whether the connection is TLS.
    pub secure: bool,
    /// The client's certificate chain, leaf first, when it presented one (mutual TLS).
    pub client_certificates: Option<Arc<[rustls::pki_types::CertificateDer<'static>]>>,
}

/// What the server says to a plain-HTTP client on a TLS port.
const PLAIN_HTTP_ANSWER: &[u8] = b"HTTP/1.1 400 Bad Request\r\ncontent-type: text/plain; charset=utf-8\r\n\
connection: close\r\ncontent-length: 48\r\n\r\nClient sent an HTTP request to an HTTPS server.\n";

/// The first byte of every TLS connection: a handshake record.
const TLS_HANDSHAKE: u8 = 0x16;

/// Serves connections from `listener` with the service `make(peer)` returns for each, until
/// `shutdown` completes; over TLS when `tls` is given. Fails only when accepting fails for a
/// reason that waiting does not cure; running out of file descriptors pauses the loop.
pub async fn serve<F, S, B>(
    listener: TcpListener,
    tls: Option<Arc<rustls::ServerConfig>>,
    limits: Limits,
    shutdown: impl Future<Output = ()>,
    make: F,
) -> io::Result<()>
where
    F: Fn(Peer) -> S + Send + Sync + 'static,
    S: Service<Request<Incoming>, Response = Response<B>> + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    B: Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let make = Arc::new(make);
    let mut builder = auto::Builder::new(TokioExecutor::new());
    // hyper starts its HTTP/1 header timer as soon as it waits for a request, so on a kept-alive
    // connection it would also close one idle between requests, and abruptly: with the header
    // timeout alone, after 10 s instead of `idle_timeout`, and a client that sent its next
    // request just then saw the connection reset (Schemathesis once: "SSL EOF"). The loop below
    // times the first request's head itself and closes idle connections gracefully, so hyper's
    // timer only has to bound a later head that trickles in: it ends after the idle timeout.
    builder.http1().timer(TokioTimer::new()).header_read_timeout(limits.idle_timeout + limits.header_read_timeout);
    builder
        .http2()
        .timer(TokioTimer::new())
        .keep_alive_interval(limits.keep_alive_interval)
        .keep_alive_timeout(limits.keep_alive_timeout);
    let builder = Arc::new(builder);
    let acceptor = tls.map(tokio_rustls::TlsAcceptor::from);
    let permits = limits.connection_permits.clone().unwrap_or_else(|| Arc::new(Semaphore::new(limits.max_connections)));
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut connections = JoinSet::new();
    let mut last_refusal: Option<Instant> = None;
    let limits = Arc::new(limits);
    tokio::pin!(shutdown);
    loop {
        let (stream, addr) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) if is_transient(&e) => {
                    warn!(error = %e, "accept failed; pausing");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
                Err(e) => return Err(e),
            },
            Some(_) = connections.join_next() => continue,
            () = &mut shutdown => break,
        };
        let Ok(permit) = Arc::clone(&permits).try_acquire_owned() else {
            if last_refusal.is_none_or(|t| t.elapsed() >= Duration::from_secs(1)) {
                warn!(limit = limits.max_connections, %addr, "too many open connections; closing new ones");
                last_refusal = Some(Instant::now());
            }
            drop(stream);
            continue;
        };
        // Latency matters more than packet count for request/response traffic.
        let _ = stream.set_nodelay(true);
        let (builder, acceptor, limits, stop, make) =
            (Arc::clone(&builder), acceptor.clone(), Arc::clone(&limits), stop_rx.clone(), Arc::clone(&make));
        connections.spawn(async move {
            let _permit = permit;
            let mut peer = Peer { addr, secure: acceptor.is_some(), client_certificates: None };
            match acceptor {
                None => run_connection(&builder, stream, Tracked::new(make(peer)), &limits, stop).await,
                Some(acceptor) => {
                    let Some(stream) = handshake(stream, addr, &acceptor, limits.header_read_timeout).await else {
                        return;
                    };
                    peer.client_certificates =
                        stream.get_ref().1.peer_certificates().map(|c| Arc::from(c.to_vec().into_boxed_slice()));
                    run_connection(&builder, stream, Tracked::new(make(peer)), &limits, stop).await
                }
            }
        });
    }
    drop(listener);
    let _ = stop_tx.send(true);
    let drain = limits.drain;
    let drained = tokio::time::timeout(drain, async { while connections.join_next().await.is_some() {} }).await;
    if drained.is_err() {
        warn!(open = connections.len(), "connections still open after the drain timeout; closing them");
        connections.shutdown().await;
    }
    Ok(())
}

/// [`serve`] for a tower service that is the same for every connection (an axum router, tonic's
/// routes).
pub async fn serve_tower<S, B>(
    listener: TcpListener,
    tls: Option<Arc<rustls::ServerConfig>>,
    limits: Limits,
    shutdown: impl Future<Output = ()>,
    service: S,
) -> io::Result<()>
where
    S: tower_service::Service<Request<Incoming>, Response = Response<B>> + Clone + Send + Sync + 'static,
    S::Future: Send + 'static,
    S::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    B: Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    serve(listener, tls, limits, shutdown, move |_peer| hyper_util::service::TowerToHyperService::new(service.clone()))
        .await
}

/// [`serve_tower`], and each request carries the connection's [`Peer`] in its extensions, so
/// that a handler can see the client certificate the caller presented (tonic keeps request
/// extensions: `request.extensions().get::<Peer>()`).
pub async fn serve_tower_with_peer<S, B>(
    listener: TcpListener,
    tls: Option<Arc<rustls::ServerConfig>>,
    limits: Limits,
    shutdown: impl Future<Output = ()>,
    service: S,
) -> io::Result<()>
where
    S: tower_service::Service<Request<Incoming>, Response = Response<B>> + Clone + Send + Sync + 'static,
    S::Future: Send + 'static,
    S::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    B: Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    serve(listener, tls, limits, shutdown, move |peer| {
        hyper_util::service::TowerToHyperService::new(WithPeer { inner: service.clone(), peer })
    })
    .await
}

/// A tower service that puts the connection's [`Peer`] in every request's extensions.
#[derive(Clone)]
struct WithPeer<S> {
    inner: S,
    peer: Peer,
}

impl<S, B> tower_service::Service<Request<B>> for WithPeer<S>
where
    S: tower_service::Service<Request<B>>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = S::Future;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: Request<B>) -> S::Future {
        req.extensions_mut().insert(self.peer.clone());
        self.inner.call(req)
    }
}

/// Ends a TLS handshake, or answers a plain-HTTP client, within `timeout`.
async fn handshake(
    stream: TcpStream,
    addr: SocketAddr,
    acceptor: &tokio_rustls::TlsAcceptor,
    timeout: Duration,
) -> Option<tokio_rustls::server::TlsStream<TcpStream>> {
    let result = tokio::time::timeout(timeout, async {
        let mut first = [0u8; 1];
        match stream.peek(&mut first).await {
            Ok(1) if first[0] != TLS_HANDSHAKE => {
                let mut stream = stream;
                let _ = stream.write_all(PLAIN_HTTP_ANSWER).await;
                let _ = stream.shutdown().await;
                debug!(%addr, "plain HTTP on a TLS port; answered 400");
                None
            }
            Ok(1) => match acceptor.accept(stream).await {
                Ok(stream) => Some(stream),
                Err(e) => {
                    debug!(%addr, error = %e, "TLS handshake failed");
                    None
                }
            },
            _ => None,
        }
    })
    .await;
    result.unwrap_or_else(|_| {
        debug!(%addr, "TLS handshake timed out");
        None
    })
}

/// Serves one connection until it ends, closing it when it has been idle for the idle timeout
/// or when the server stops (after which it gets `drain` to finish).
async fn run_connection<I, S, B>(
    builder: &auto::Builder<TokioExecutor>,
    io: I,
    service: Tracked<S>,
    limits: &Limits,
    mut stop: watch::Receiver<bool>,
) where
    I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    S: Service<Request<Incoming>, Response = Response<B>> + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    B: Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let activity = Arc::clone(&service.activity);
    let connection = builder.serve_connection_with_upgrades(TokioIo::new(io), service);
    tokio::pin!(connection);
    let mut closing_since: Option<Instant> = None;
    loop {
        let deadline = match closing_since {
            // Told to close: the connection gets `drain` to finish what it is doing.
            Some(since) => since + limits.drain,
            None => activity.idle_deadline(limits),
        };
        tokio::select! {
            result = connection.as_mut() => {
                if let Err(e) = result {
                    debug!(error = %e, "connection ended with an error");
                }
                return;
            }
            changed = stop.changed(), if closing_since.is_none() => {
                let _ = changed;
                connection.as_mut().graceful_shutdown();
                closing_since = Some(Instant::now());
            }
            () = tokio::time::sleep_until(deadline.into()) => {
                if closing_since.is_some() {
                    debug!("connection did not finish in time; closing it");
                    return;
                }
                if activity.is_idle(limits) {
                    debug!("closing an idle connection");
                    connection.as_mut().graceful_shutdown();
                    closing_since = Some(Instant::now());
                }
            }
        }
    }
}

/// What one connection is doing: requests in flight, and when that last changed.
#[derive(Debug)]
struct Activity {
    started: Instant,
    in_flight: AtomicUsize,
    /// Milliseconds after `started` of the last request start or end.
    last_change_ms: AtomicU64,
    /// Whether a request's head has arrived yet.
    requested: AtomicBool,
}

impl Activity {
    fn touch(&self) {
        let ms = u64::try_from(self.started.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.last_change_ms.store(ms, Ordering::Relaxed);
    }

    /// Until the first request, a connection gets the header timeout; after, the idle timeout.
    fn allowance(&self, limits: &Limits) -> Duration {
        if self.requested.load(Ordering::Relaxed) { limits.idle_timeout } else { limits.header_read_timeout }
    }

    fn idle_deadline(&self, limits: &Limits) -> Instant {
        let last = self.started + Duration::from_millis(self.last_change_ms.load(Ordering::Relaxed));
        last + self.allowance(limits)
    }

    fn is_idle(&self, limits: &Limits) -> bool {
        self.in_flight.load(Ordering::Relaxed) == 0 && Instant::now() >= self.idle_deadline(limits)
    }
}

/// A service that counts its requests in flight until their response bodies are done.
struct Tracked<S> {
    inner: S,
    activity: Arc<Activity>,
}

impl<S> Tracked<S> {
    fn new(inner: S) -> Tracked<S> {
        let activity = Activity {
            started: Instant::now(),
            in_flight: AtomicUsize::new(0),
            last_change_ms: AtomicU64::new(0),
            requested: AtomicBool::new(false),
        };
        Tracked { inner, activity: Arc::new(activity) }
    }
}

impl<S, B> Service<Request<Incoming>> for Tracked<S>
where
    S: Service<Request<Incoming>, Response = Response<B>>,
    S::Future: Send + 'static,
{
    type Response = Response<TrackedBody<B>>;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, S::Error>> + Send>>;

    fn call(&self, req: Request<Incoming>) -> Self::Future {
        self.activity.requested.store(true, Ordering::Relaxed);
        let guard = InFlight::new(Arc::clone(&self.activity));
        let future = self.inner.call(req);
        Box::pin(async move {
            let response = future.await?;
            Ok(response.map(|body| TrackedBody { inner: body, guard }))
        })
    }
}

/// One request in flight; dropping it ends the request.
pub struct InFlight(Arc<Activity>);

impl InFlight {
    fn new(activity: Arc<Activity>) -> InFlight {
        activity.in_flight.fetch_add(1, Ordering::Relaxed);
        activity.touch();
        InFlight(activity)
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
        self.0.touch();
    }
}

pin_project_lite::pin_project! {
    /// A response body that keeps its request in flight until it is dropped.
    pub struct TrackedBody<B> {
        #[pin]
        inner: B,
        guard: InFlight,
    }
}

impl<B: Body> Body for TrackedBody<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<B::Data>, B::Error>>> {
        self.project().inner.poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// Accept errors that concern one connection, or a shortage that passes.
fn is_transient(e: &io::Error) -> bool {
    const EMFILE: i32 = 24;
    const ENFILE: i32 = 23;
    const ENOBUFS: i32 = 105;
    const ENOMEM: i32 = 12;
    matches!(e.kind(), io::ErrorKind::ConnectionAborted | io::ErrorKind::ConnectionReset | io::ErrorKind::Interrupted)
        || matches!(e.raw_os_error(), Some(EMFILE | ENFILE | ENOBUFS | ENOMEM))
}

/// Logs where a server listens and how.
pub fn log_listening(what: &str, addr: SocketAddr, secure: bool) {
    info!(%addr, scheme = if secure { "https" } else { "http" }, "serving {what}");
}

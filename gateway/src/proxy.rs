//! One request's way through the gateway: host → service → revision → rate limit → endpoint →
//! answer, streamed back under the revision's deadline.

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::header::{CONNECTION, CONTENT_TYPE, HOST, HeaderValue, RETRY_AFTER, UPGRADE};
use http::{HeaderMap, Method, Request, Response, StatusCode, Uri, Version};
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Empty, Full};
use hyper::body::{Body, Frame, Incoming, SizeHint};
use hyper::upgrade::OnUpgrade;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use stratus_client::runtime::ObjectRef;
use tokio::time::{Instant, Sleep};
use tracing::{debug, info};

use crate::h1::{self, H1Body, H1Pool};
use crate::headers::{self, X_REQUEST_ID};
use crate::invoker::Refusal;
use crate::pool::{AcquireError, Deadlines, Lease, Outcome, Protocol, RevisionPool};
use crate::ratelimit::retry_after_secs;
use crate::trace::{self, RequestTrace};
use stratus_client::ErrorChain;
use stratus_support::otel;

use crate::Shared;

pub(crate) type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The body of every response the gateway sends.
pub(crate) type ProxyBody = UnsyncBoxBody<Bytes, BoxError>;

type UpstreamClient = Client<HttpConnector, RequestBody>;

/// Why a request got an answer of the gateway's own instead of an endpoint's. The messages are
/// what the client reads; they name the service or revision but no internal address.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ProxyError {
    #[error("no service answers to host {0:?}")]
    UnknownHost(String),
    /// A private service's caller is not admitted.
    #[error("{0}")]
    Refused(#[from] crate::invoker::Refusal),
    #[error("service {0} has no revision to send requests to yet")]
    NoTraffic(ObjectRef),
    #[error("the gateway is still loading its routes")]
    NotReady,
    #[error("service {service} is over its request rate limit")]
    RateLimited { service: ObjectRef, retry_after: u64 },
    /// The revision's queue holds its bound (`limit`): overload the client should back off from.
    #[error("revision {revision} already has {limit} requests waiting for an instance; retry later")]
    QueueFull { revision: ObjectRef, limit: usize },
    /// The revision's status says why it cannot start; the text names the revision.
    #[error("{0}")]
    CannotStart(Arc<str>),
    #[error("revision {0} is at its maximum number of instances and all of them are busy; retry later")]
    AtCapacity(ObjectRef),
    #[error("no instance of revision {revision} became ready within {waited:?}")]
    NoInstance { revision: ObjectRef, waited: Duration },
    #[error("no instance of revision {revision} was free to take the request within {waited:?}")]
    Busy { revision: ObjectRef, waited: Duration },
    #[error("cannot connect to revision {revision}")]
    Connect {
        revision: ObjectRef,
        #[source]
        source: BoxError,
    },
    #[error("revision {revision} failed to answer")]
    Upstream {
        revision: ObjectRef,
        #[source]
        source: BoxError,
    },
    #[error("revision {revision} did not answer within {timeout:?}")]
    Timeout { revision: ObjectRef, timeout: Duration },
    #[error("revision {0} switched protocols although the request asked for no upgrade")]
    UnexpectedUpgrade(ObjectRef),
    #[error("revision {revision} has an endpoint address that makes no URI")]
    BadAddress {
        revision: ObjectRef,
        #[source]
        source: http::Error,
    },
}

/// The response body ended because the revision's timeout passed while it streamed.
#[derive(Debug, thiserror::Error)]
#[error("the revision's timeout of {0:?} passed while the response streamed")]
struct DeadlineExceeded(Duration);

/// The upstream clients, each with its own connection pool: HTTP/1.1 exchanges driven by the
/// request's own task for requests without a body (see `h1`), hyper's HTTP/1.1 client for the
/// rest, and HTTP/2 with prior knowledge for h2c endpoints.
pub(crate) struct Upstreams {
    h1: Arc<H1Pool>,
    http1: UpstreamClient,
    h2c: UpstreamClient,
}

impl Upstreams {
    pub(crate) fn new(connect_timeout: Duration) -> Upstreams {
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        connector.set_connect_timeout(Some(connect_timeout));
        let mut builder = Client::builder(TokioExecutor::new());
        builder.pool_timer(TokioTimer::new()).pool_idle_timeout(Duration::from_secs(90)).timer(TokioTimer::new());
        let http1 = builder.build(connector.clone());
        let h2c = builder.http2_only(true).build(connector);
        Upstreams { h1: Arc::new(H1Pool::new(connect_timeout)), http1, h2c }
    }

    fn client(&self, protocol: Protocol) -> &UpstreamClient {
        match protocol {
            Protocol::Http1 => &self.http1,
            Protocol::H2c => &self.h2c,
        }
    }
}

/// Answers one request that came from `peer` to a listener of `scheme` (`http` or `https`): the
/// endpoint's response, or the gateway's own when it cannot be had. Never fails: every error
/// becomes a response.
pub(crate) async fn handle(
    shared: Arc<Shared>,
    upstreams: &Upstreams,
    mut req: Request<Incoming>,
    peer: SocketAddr,
    scheme: &'static str,
) -> Response<ProxyBody> {
    let started = Instant::now();
    let request_id = headers::ensure_request_id(req.headers_mut());
    let host = request_host(&req);
    let trace = RequestTrace::start(req.headers(), req.method(), &host, req.uri().path());
    let mut route_span = trace.as_ref().map(|t| t.step("gateway.route"));
    let mut end_route = |error: Option<&ProxyError>| {
        if let Some(span) = route_span.take() {
            trace::end_step(span, error.map(ToString::to_string));
        }
    };
    let (revision, result) = match shared.route(&host) {
        Err(e) => {
            shared.metrics.record_unrouted();
            end_route(Some(&e));
            (None, Err(e))
        }
        Ok((service, pool)) => {
            let admitted = match service.private {
                true => shared.invokers.admit(req.headers_mut(), &service.key).await.map_err(ProxyError::Refused),
                false => {
                    shared.invokers.neuter(req.headers_mut()).await;
                    Ok(())
                }
            };
            let limited = service.rate_limit.as_ref().map(|bucket| bucket.try_acquire(Instant::now()));
            let result = match (admitted, limited) {
                (Err(refused), _) => {
                    end_route(Some(&refused));
                    Err(refused)
                }
                (Ok(()), Some(Err(wait))) => {
                    let e =
                        ProxyError::RateLimited { service: service.key.clone(), retry_after: retry_after_secs(wait) };
                    end_route(Some(&e));
                    Err(e)
                }
                _ => {
                    end_route(None);
                    // Only admitted requests are demand the autoscaler should meet.
                    pool.count_request();
                    let arrival = Arrival { peer, scheme, host: &host, started, trace: trace.as_ref() };
                    forward(&shared, upstreams, &pool, req, arrival).await
                }
            };
            (Some(pool), result)
        }
    };
    let mut response = result.unwrap_or_else(|e| {
        match &e {
            // Expected under overload, once per refused request: not worth a log line each.
            ProxyError::UnknownHost(_)
            | ProxyError::RateLimited { .. }
            | ProxyError::AtCapacity(_)
            | ProxyError::QueueFull { .. } => debug!(host, error = %ErrorChain(&e)),
            _ => info!(host, request_id = ?request_id, error = %ErrorChain(&e), "request failed"),
        }
        error_response(&e)
    });
    response.headers_mut().entry(X_REQUEST_ID).or_insert(request_id);
    if let Some(pool) = &revision {
        pool.observe(response.status(), started.elapsed());
    }
    if let Some(trace) = trace {
        let status = response.status();
        trace.finish(revision.as_ref().map(|p| p.key()), status, response.headers_mut());
    }
    response
}

/// How a request came: from whom, over which scheme, for which host, when, and its spans.
struct Arrival<'a> {
    peer: SocketAddr,
    scheme: &'static str,
    host: &'a str,
    started: Instant,
    trace: Option<&'a RequestTrace>,
}

/// Sends the request to an endpoint of `pool`, retrying on another endpoint while connecting
/// fails (nothing was sent then) or, for an idempotent request whose body was not read, while
/// the exchange breaks before an answer; returns the response with its body bound to the lease and
/// the deadline.
async fn forward(
    shared: &Shared,
    upstreams: &Upstreams,
    pool: &Arc<RevisionPool>,
    mut req: Request<Incoming>,
    arrival: Arrival<'_>,
) -> Result<Response<ProxyBody>, ProxyError> {
    let Arrival { peer, scheme, host, started, trace } = arrival;
    let revision = pool.key();
    let timeout = pool.timeout();
    let deadline = started + timeout;
    let queue_deadline = shared.config.queue_timeout.map_or(deadline, |t| deadline.min(started + t));
    let deadlines = Deadlines {
        queue: queue_deadline,
        at_capacity: queue_deadline.min(started + shared.config.at_capacity_timeout),
    };
    let waited = queue_deadline.saturating_duration_since(started);
    let upgrade = headers::upgrade_protocol(req.headers()).filter(|_| req.version() == Version::HTTP_11);
    let client_upgrade = upgrade.is_some().then(|| hyper::upgrade::on(&mut req));
    // What the request's own task can send to an HTTP/1.1 endpoint (see `h1`).
    let bodiless = client_upgrade.is_none() && is_idempotent(req.method()) && req.body().is_end_stream();
    let (parts, body) = req.into_parts();
    let mut headers = parts.headers;
    let trusted = shared.config.trusted_proxies.iter().any(|net| net.contains(peer.ip()));
    let peer = headers::Peer { ip: peer.ip(), host, scheme, trusted };
    headers::prepare_request(&mut headers, peer, upgrade.as_ref());
    // An absolute-form target (or HTTP/2's :authority) names the host the request was routed
    // by, and the Host header must say the same (RFC 9112 §3.2.2).
    if parts.uri.authority().is_some()
        && let Ok(value) = HeaderValue::from_str(host)
    {
        headers.insert(HOST, value);
    }
    let path = parts.uri.path_and_query().map_or("/", |p| p.as_str());
    let slot = BodySlot::new(body);
    let mut tried = Vec::new();
    let mut last_connect_error: Option<BoxError> = None;
    loop {
        let queue_span =
            trace.map(|t| t.step(if pool.has_endpoints() { "gateway.queue" } else { "gateway.activator" }));
        let acquired = pool.acquire(&tried, deadlines).await;
        if let Some(span) = queue_span {
            trace::end_step(span, acquired.as_ref().err().map(ToString::to_string));
        }
        let lease = match acquired {
            Ok(lease) => lease,
            Err(AcquireError::QueueFull { limit }) => {
                return Err(ProxyError::QueueFull { revision: revision.clone(), limit });
            }
            Err(AcquireError::CannotStart(why)) => return Err(ProxyError::CannotStart(why)),
            Err(AcquireError::AtCapacity) => return Err(ProxyError::AtCapacity(revision.clone())),
            Err(AcquireError::TimedOut { endpoints: 0 }) => {
                return Err(ProxyError::NoInstance { revision: revision.clone(), waited });
            }
            Err(AcquireError::TimedOut { .. }) => {
                return Err(ProxyError::Busy { revision: revision.clone(), waited });
            }
            Err(AcquireError::Exhausted) => {
                return Err(match last_connect_error {
                    Some(source) => ProxyError::Connect { revision: revision.clone(), source },
                    None => ProxyError::NoInstance { revision: revision.clone(), waited },
                });
            }
        };
        let attempt = trace.map(|t| t.upstream(lease.address()));
        let sent = if bodiless && lease.protocol() == Protocol::Http1 {
            let head = match &attempt {
                Some(cx) => {
                    let mut headers = headers.clone();
                    otel::inject(cx, &mut headers);
                    h1::request_head(&parts.method, path, host, &headers)
                }
                None => h1::request_head(&parts.method, path, host, &headers),
            };
            let sent = upstreams.h1.send(lease.address(), &parts.method, &head);
            tokio::time::timeout_at(deadline, sent).await.map(|sent| {
                sent.map(Sent::H1).map_err(|e| match e.is_connect() {
                    true => SendError::Connect(e.into()),
                    false => SendError::Exchange(e.into()),
                })
            })
        } else {
            let target = Target { method: &parts.method, path, host, headers: &headers };
            let mut upstream = upstream_request(target, &lease, &slot)
                .map_err(|source| ProxyError::BadAddress { revision: revision.clone(), source })?;
            if let Some(cx) = &attempt {
                otel::inject(cx, upstream.headers_mut());
            }
            let sent = upstreams.client(lease.protocol()).request(upstream);
            tokio::time::timeout_at(deadline, sent).await.map(|sent| {
                sent.map(Sent::Hyper).map_err(|e| match e.is_connect() {
                    true => SendError::Connect(e.into()),
                    false => SendError::Exchange(e.into()),
                })
            })
        };
        if let Some(cx) = &attempt {
            let outcome = match &sent {
                Ok(Ok(response)) => Ok(response.status()),
                Ok(Err(SendError::Connect(e) | SendError::Exchange(e))) => Err(ErrorChain(e.as_ref()).to_string()),
                Err(_) => Err(format!("no response within {timeout:?}")),
            };
            trace::end_upstream(cx, outcome);
        }
        let response = match sent {
            Err(_) => return Err(ProxyError::Timeout { revision: revision.clone(), timeout }),
            Ok(Ok(response)) => response,
            Ok(Err(SendError::Connect(e))) => {
                lease.record(Outcome::Failure);
                debug!(%revision, endpoint = lease.address(), error = %ErrorChain(e.as_ref()), "connect failed");
                if slot.untouched() && tried.len() < shared.config.max_retries as usize {
                    lease.not_served();
                    tried.push(lease.endpoint_id());
                    last_connect_error = Some(e);
                    continue;
                }
                return Err(ProxyError::Connect { revision: revision.clone(), source: e });
            }
            Ok(Err(SendError::Exchange(e))) => {
                lease.record(Outcome::Failure);
                // The exchange broke before an answer: the endpoint closed a pooled connection
                // as the request went out on it, or went away (its instance was killed). An
                // idempotent request (RFC 9110 §9.2.2) whose body was never read is sent to
                // another endpoint, as nginx's `proxy_next_upstream error` does; anything
                // else may have been acted on and fails.
                if is_idempotent(&parts.method)
                    && client_upgrade.is_none()
                    && slot.untouched()
                    && tried.len() < shared.config.max_retries as usize
                {
                    debug!(%revision, endpoint = lease.address(), error = %ErrorChain(e.as_ref()), "exchange failed; trying another endpoint");
                    lease.not_served();
                    tried.push(lease.endpoint_id());
                    continue;
                }
                return Err(ProxyError::Upstream { revision: revision.clone(), source: e });
            }
        };
        let outcome = if response.status().is_server_error() { Outcome::Failure } else { Outcome::Success };
        lease.record(outcome);
        return match response {
            Sent::Hyper(response) => respond(revision, response, lease, deadline, timeout, client_upgrade),
            Sent::H1(response) => respond_h1(revision, response, lease, deadline, timeout),
        };
    }
}

/// What an upstream request is made of, whichever endpoint it goes to.
struct Target<'a> {
    method: &'a Method,
    path: &'a str,
    /// The host the client asked for.
    host: &'a str,
    headers: &'a HeaderMap,
}

/// The request for hyper's client to send `target` to the endpoint of `lease`, with the client's
/// body as `slot` holds it.
fn upstream_request(target: Target<'_>, lease: &Lease, slot: &BodySlot) -> Result<Request<RequestBody>, http::Error> {
    let mut upstream = Request::new(RequestBody::new(slot.clone()));
    *upstream.method_mut() = target.method.clone();
    *upstream.uri_mut() = upstream_uri(lease.address(), target.path)?;
    *upstream.headers_mut() = target.headers.clone();
    match lease.protocol() {
        Protocol::Http1 => {
            *upstream.version_mut() = Version::HTTP_11;
            // An HTTP/2 client sent the host as :authority; HTTP/1.1 wants it in Host, and
            // the upstream client would otherwise write the endpoint's address there.
            if let Ok(value) = HeaderValue::from_str(target.host) {
                upstream.headers_mut().entry(HOST).or_insert(value);
            }
        }
        Protocol::H2c => {
            // :authority is the endpoint's address, which keys the connection pool; a Host
            // header that differs is not allowed beside it (RFC 9113 §8.3.1). The original
            // host travels in X-Forwarded-Host and Forwarded.
            *upstream.version_mut() = Version::HTTP_2;
            let headers = upstream.headers_mut();
            headers.remove(HOST);
            // HTTP/2 has no upgrades: the endpoint answers the request as it is.
            headers.remove(CONNECTION);
            headers.remove(UPGRADE);
        }
    }
    Ok(upstream)
}

/// An endpoint's answer, from either client.
enum Sent {
    Hyper(Response<Incoming>),
    H1(Response<H1Body>),
}

impl Sent {
    fn status(&self) -> StatusCode {
        match self {
            Sent::Hyper(response) => response.status(),
            Sent::H1(response) => response.status(),
        }
    }
}

/// Why an attempt got no answer.
enum SendError {
    /// Nothing was sent.
    Connect(BoxError),
    /// The exchange broke.
    Exchange(BoxError),
}

/// Whether a request with `method` may be sent twice without changing its effect.
fn is_idempotent(method: &Method) -> bool {
    matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS | Method::TRACE | Method::PUT | Method::DELETE)
}

/// Turns an endpoint's response into the client's: hop-by-hop headers removed, the body streamed
/// until the deadline, the lease held until the body ends; a 101 becomes a tunnel.
fn respond(
    revision: &ObjectRef,
    mut response: Response<Incoming>,
    lease: Lease,
    deadline: Instant,
    timeout: Duration,
    client_upgrade: Option<OnUpgrade>,
) -> Result<Response<ProxyBody>, ProxyError> {
    if response.status() == StatusCode::SWITCHING_PROTOCOLS {
        let Some(client) = client_upgrade else {
            return Err(ProxyError::UnexpectedUpgrade(revision.clone()));
        };
        let upstream = hyper::upgrade::on(&mut response);
        let (mut parts, _) = response.into_parts();
        let protocol = parts.headers.get(UPGRADE).cloned();
        headers::strip_hop_by_hop(&mut parts.headers);
        parts.headers.insert(CONNECTION, HeaderValue::from_static("upgrade"));
        if let Some(protocol) = protocol {
            parts.headers.insert(UPGRADE, protocol);
        }
        parts.version = Version::HTTP_11;
        tokio::spawn(tunnel(client, upstream, lease, deadline));
        return Ok(Response::from_parts(parts, Empty::new().map_err(|never| match never {}).boxed_unsync()));
    }
    Ok(stream_response(response, lease, deadline, timeout))
}

/// [`respond`] for a response read by the request's own task, which never asked to upgrade.
fn respond_h1(
    revision: &ObjectRef,
    response: Response<H1Body>,
    lease: Lease,
    deadline: Instant,
    timeout: Duration,
) -> Result<Response<ProxyBody>, ProxyError> {
    if response.status() == StatusCode::SWITCHING_PROTOCOLS {
        return Err(ProxyError::UnexpectedUpgrade(revision.clone()));
    }
    Ok(stream_response(response, lease, deadline, timeout))
}

/// The client's response for an endpoint's: hop-by-hop headers removed, and the body streamed
/// until the deadline with the lease held until it ends.
fn stream_response<B>(response: Response<B>, lease: Lease, deadline: Instant, timeout: Duration) -> Response<ProxyBody>
where
    B: Body<Data = Bytes> + Unpin + Send + 'static,
    B::Error: Into<BoxError>,
{
    let (mut parts, body) = response.into_parts();
    headers::strip_hop_by_hop(&mut parts.headers);
    // The client's connection has its own version; hyper answers in it.
    parts.version = Version::HTTP_11;
    let body = ResponseBody { inner: body, deadline, timer: None, timeout, lease: Some(lease) };
    Response::from_parts(parts, body.boxed_unsync())
}

/// Copies bytes both ways between an upgraded client connection and an upgraded endpoint
/// connection until either closes or the deadline passes; the lease is held meanwhile.
async fn tunnel(client: OnUpgrade, upstream: OnUpgrade, lease: Lease, deadline: Instant) {
    let copy = async {
        let (client, upstream) = tokio::try_join!(client, upstream)?;
        let (mut client, mut upstream) = (TokioIo::new(client), TokioIo::new(upstream));
        tokio::io::copy_bidirectional(&mut client, &mut upstream).await?;
        Ok::<_, BoxError>(())
    };
    match tokio::time::timeout_at(deadline, copy).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => debug!(endpoint = lease.address(), error = %ErrorChain(e.as_ref()), "upgraded connection failed"),
        Err(_) => debug!(endpoint = lease.address(), "upgraded connection closed at the revision's timeout"),
    }
    drop(lease);
}

/// The host a request is for: its URI authority (HTTP/2 `:authority`, or an absolute-form
/// target) before the `Host` header, as RFC 9112 §3.2.2 orders them.
fn request_host<B>(req: &Request<B>) -> String {
    if let Some(authority) = req.uri().authority() {
        return authority.as_str().to_string();
    }
    req.headers().get(HOST).and_then(|h| h.to_str().ok()).unwrap_or_default().to_string()
}

fn upstream_uri(address: &str, path: &str) -> Result<Uri, http::Error> {
    Uri::builder().scheme("http").authority(address).path_and_query(path).build()
}

/// A permanent redirect (308, which keeps the method and body) to the same host and path over
/// HTTPS on `port`.
pub(crate) fn redirect_to_https<B>(req: &Request<B>, port: u16) -> Response<ProxyBody> {
    let host = request_host(req);
    // The host without its port; brackets of an IPv6 literal stay.
    let bare = match host.rsplit_once(':') {
        Some((name, p)) if p.bytes().all(|b| b.is_ascii_digit()) && !name.ends_with(':') => name,
        _ => host.as_str(),
    };
    let path = req.uri().path_and_query().map_or("/", |p| p.as_str());
    let authority = if port == 443 { bare.to_string() } else { format!("{bare}:{port}") };
    let location = Uri::builder().scheme("https").authority(authority.as_str()).path_and_query(path).build();
    match location.ok().and_then(|l| HeaderValue::from_str(&l.to_string()).ok()) {
        Some(location) => {
            let mut response = text_response(
                StatusCode::PERMANENT_REDIRECT,
                format!("use HTTPS: {}\n", location.to_str().unwrap_or_default()),
            );
            response.headers_mut().insert(http::header::LOCATION, location);
            response
        }
        None => text_response(StatusCode::BAD_REQUEST, format!("the host {host:?} cannot be redirected to HTTPS\n")),
    }
}

/// The gateway's own answer for `error`: plain text naming the problem.
fn error_response(error: &ProxyError) -> Response<ProxyBody> {
    let status = match error {
        ProxyError::UnknownHost(_) => StatusCode::NOT_FOUND,
        ProxyError::Refused(Refusal::Unauthenticated(_)) => StatusCode::UNAUTHORIZED,
        ProxyError::Refused(Refusal::Forbidden(_)) => StatusCode::FORBIDDEN,
        ProxyError::Refused(Refusal::Unavailable(_)) => StatusCode::SERVICE_UNAVAILABLE,
        // What cannot be served now but may be soon: the client should back off and retry.
        ProxyError::RateLimited { .. } | ProxyError::AtCapacity(_) | ProxyError::QueueFull { .. } => {
            StatusCode::TOO_MANY_REQUESTS
        }
        ProxyError::NoTraffic(_)
        | ProxyError::NotReady
        | ProxyError::CannotStart(_)
        | ProxyError::NoInstance { .. }
        | ProxyError::Busy { .. } => StatusCode::SERVICE_UNAVAILABLE,
        ProxyError::Connect { .. }
        | ProxyError::Upstream { .. }
        | ProxyError::UnexpectedUpgrade(_)
        | ProxyError::BadAddress { .. } => StatusCode::BAD_GATEWAY,
        ProxyError::Timeout { .. } => StatusCode::GATEWAY_TIMEOUT,
    };
    let mut response = text_response(status, format!("{error}\n"));
    match error {
        ProxyError::RateLimited { retry_after, .. } => {
            response.headers_mut().insert(RETRY_AFTER, HeaderValue::from(*retry_after));
        }
        ProxyError::Refused(Refusal::Unauthenticated(_)) => {
            response
                .headers_mut()
                .insert(http::header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer realm=\"stratus\""));
        }
        // The queue moves as instances free up or are added, so a second is a fair wait.
        ProxyError::AtCapacity(_) | ProxyError::QueueFull { .. } => {
            response.headers_mut().insert(RETRY_AFTER, HeaderValue::from_static("1"));
        }
        _ => {}
    }
    response
}

/// A plain-text response.
pub(crate) fn text_response(status: StatusCode, body: String) -> Response<ProxyBody> {
    let mut response = Response::new(Full::new(Bytes::from(body)).map_err(|never| match never {}).boxed_unsync());
    *response.status_mut() = status;
    response.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static("text/plain; charset=utf-8"));
    response
}

/// The client's request body, shared by the attempts to send it. The first attempt that polls it
/// takes it; an attempt that failed before connecting leaves it in place for the next, which is
/// how a retry can be sure that nothing was sent.
#[derive(Clone)]
struct BodySlot(Arc<Mutex<Option<Incoming>>>);

impl BodySlot {
    fn new(body: Incoming) -> BodySlot {
        BodySlot(Arc::new(Mutex::new(Some(body))))
    }

    fn untouched(&self) -> bool {
        self.lock().is_some()
    }

    // Only `take` and reads happen under the lock: it cannot be poisoned halfway.
    fn lock(&self) -> std::sync::MutexGuard<'_, Option<Incoming>> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// The body of one attempt's upstream request: the client's body once polled.
pub(crate) struct RequestBody {
    slot: BodySlot,
    taken: Option<Incoming>,
}

impl RequestBody {
    fn new(slot: BodySlot) -> RequestBody {
        RequestBody { slot, taken: None }
    }
}

impl Body for RequestBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let this = self.get_mut();
        if this.taken.is_none() {
            this.taken = this.slot.lock().take();
        }
        match &mut this.taken {
            Some(body) => Pin::new(body).poll_frame(cx),
            // Another attempt has the body; this one is never sent (see `forward`).
            None => Poll::Ready(None),
        }
    }

    fn is_end_stream(&self) -> bool {
        match &self.taken {
            Some(body) => body.is_end_stream(),
            None => self.slot.lock().as_ref().is_none_or(Body::is_end_stream),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.taken {
            Some(body) => body.size_hint(),
            None => self.slot.lock().as_ref().map(Body::size_hint).unwrap_or_default(),
        }
    }
}

/// An endpoint's response body on its way to the client. It fails (and so aborts the response)
/// when the deadline passes first, and releases the lease as soon as it ends.
struct ResponseBody<B> {
    inner: B,
    deadline: Instant,
    /// Set the first time the body has to wait: a body that is there at once (most of them)
    /// costs no timer.
    timer: Option<Pin<Box<Sleep>>>,
    timeout: Duration,
    lease: Option<Lease>,
}

impl<B> ResponseBody<B> {
    fn exceeded(&mut self) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        self.lease = None;
        Poll::Ready(Some(Err(Box::new(DeadlineExceeded(self.timeout)))))
    }
}

impl<B> Body for ResponseBody<B>
where
    B: Body<Data = Bytes> + Unpin,
    B::Error: Into<BoxError>,
{
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.get_mut();
        if this.lease.is_none() {
            return Poll::Ready(None);
        }
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(None) => {
                this.lease = None;
                Poll::Ready(None)
            }
            Poll::Ready(Some(Err(e))) => {
                this.lease = None;
                Poll::Ready(Some(Err(e.into())))
            }
            // A body that always has data ready is cut all the same.
            Poll::Ready(Some(Ok(_))) if Instant::now() >= this.deadline => this.exceeded(),
            Poll::Ready(Some(Ok(frame))) => Poll::Ready(Some(Ok(frame))),
            Poll::Pending => {
                let deadline = this.deadline;
                let timer = this.timer.get_or_insert_with(|| Box::pin(tokio::time::sleep_until(deadline)));
                match timer.as_mut().poll(cx) {
                    Poll::Ready(()) => this.exceeded(),
                    Poll::Pending => Poll::Pending,
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.lease.is_none() || self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    /// The status and `Retry-After` of the gateway's answer to `error`.
    fn answer(error: &ProxyError) -> (StatusCode, Option<String>) {
        let response = error_response(error);
        let retry_after = response.headers().get(RETRY_AFTER).map(|v| v.to_str().unwrap().to_string());
        (response.status(), retry_after)
    }

    #[test]
    fn overload_answers_429_with_retry_after_and_failures_keep_their_status() {
        let revision = ObjectRef::new("default", "hello-00001");
        let full = ProxyError::QueueFull { revision: revision.clone(), limit: 1000 };
        assert_eq!(answer(&full), (StatusCode::TOO_MANY_REQUESTS, Some("1".into())));
        assert_eq!(
            full.to_string(),
            "revision default/hello-00001 already has 1000 requests waiting for an instance; retry later"
        );
        assert_eq!(
            answer(&ProxyError::AtCapacity(revision.clone())),
            (StatusCode::TOO_MANY_REQUESTS, Some("1".into()))
        );
        let limited = ProxyError::RateLimited { service: revision.clone(), retry_after: 3 };
        assert_eq!(answer(&limited), (StatusCode::TOO_MANY_REQUESTS, Some("3".into())));
        // A revision that cannot start, and a wait that ran out, are not overload.
        let cannot = ProxyError::CannotStart(Arc::from("revision hello-00001 cannot start: ContainerMissing"));
        assert_eq!(answer(&cannot), (StatusCode::SERVICE_UNAVAILABLE, None));
        let waited = Duration::from_secs(10);
        assert_eq!(answer(&ProxyError::Busy { revision: revision.clone(), waited }).0, StatusCode::SERVICE_UNAVAILABLE);
        let timeout = ProxyError::Timeout { revision, timeout: waited };
        assert_eq!(answer(&timeout), (StatusCode::GATEWAY_TIMEOUT, None));
    }
}

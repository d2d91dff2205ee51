//! The typed client of the Stratus gRPC API, and the controller runtime built on it.
//!
//! [`Client`] speaks the generic resource API (`stratus.v1.ResourceService`) with typed methods
//! for every [`Resource`] and dynamic ones for [`AnyObject`]s (the CLI's case).

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use futures::stream::BoxStream;
use futures::{StreamExt, TryStreamExt};
use stratus_api::v1::auth_service_client::AuthServiceClient;
use stratus_api::v1::resource_service_client::ResourceServiceClient;
use stratus_api::v1::traffic_metrics_client::TrafficMetricsClient;
use stratus_api::v1::{
    ApplyRequest, CanIRequest, CanIResponse, CreateRequest, CreateTokenRequest, DeleteRequest, GetRequest, ListRequest,
    ListServiceTrafficRequest, ListServiceTrafficResponse, LogLine, LoginRequest, LogsRequest, Object, ObjectKey,
    TokenResponse, UpdateRequest, WatchRequest, WhoAmIRequest, WhoAmIResponse,
};
use stratus_api::{AnyObject, Resource};
use stratus_support::otel;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Channel, Endpoint};

pub mod join;
pub mod review;
pub mod runtime;
pub mod tls;
pub mod usage;

pub use runtime::ErrorChain;

/// The address the API server listens on when nothing else is configured.
pub const DEFAULT_SERVER: &str = "https://127.0.0.1:7070";

/// What can go wrong talking to the API server. Each maps one status of the API.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    AlreadyExists(String),
    /// The object changed since it was read (stale resourceVersion).
    #[error("{0}")]
    Conflict(String),
    /// The object or request is invalid; the message names the field.
    #[error("{0}")]
    Invalid(String),
    /// The requested resourceVersion is older than the server's history: relist.
    #[error("{0}")]
    Gone(String),
    #[error("{0}")]
    TooLarge(String),
    #[error("{0}")]
    Forbidden(String),
    /// The request carried no token, or one the server refused (expired, unknown, revoked).
    #[error("{0}")]
    Unauthenticated(String),
    /// The object is not in a state to serve the request yet (e.g. the logs of an Instance no
    /// node runs yet); the same request may succeed later.
    #[error("{0}")]
    FailedPrecondition(String),
    /// The server could not be reached.
    #[error("cannot reach the Stratus API at {endpoint}: {message}")]
    Unavailable { endpoint: String, message: String },
    /// The server answered, but something it needs for the request is unreachable: its store,
    /// or the agent of the node whose logs were asked for. The message names what.
    #[error("{0}")]
    ServiceUnavailable(String),
    #[error("invalid server address {0:?}: expected a URL such as https://127.0.0.1:7070")]
    BadEndpoint(String),
    /// The server is HTTPS but no CA to verify it was given, or the CA is unusable.
    #[error("{0}")]
    Tls(String),
    #[error("the server answered with a {got} where a {want} was expected")]
    UnexpectedKind { want: &'static str, got: &'static str },
    #[error("the server's answer was missing {0}")]
    Malformed(&'static str),
    #[error("server error: {0}")]
    Server(String),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    fn from_status(status: tonic::Status, endpoint: &str) -> Error {
        let msg = status.message().to_string();
        use tonic::Code;
        match status.code() {
            Code::NotFound => Error::NotFound(msg),
            Code::AlreadyExists => Error::AlreadyExists(msg),
            Code::Aborted => Error::Conflict(msg),
            Code::FailedPrecondition => Error::FailedPrecondition(msg),
            Code::InvalidArgument => Error::Invalid(msg),
            // tonic itself answers OUT_OF_RANGE for a message over its size limit.
            Code::OutOfRange if msg.contains("message length too large") => Error::TooLarge(msg),
            Code::OutOfRange => Error::Gone(msg),
            Code::ResourceExhausted => Error::TooLarge(msg),
            Code::PermissionDenied => Error::Forbidden(msg),
            Code::Unauthenticated => Error::Unauthenticated(msg),
            // tonic keeps the transport error as the source of a status it made itself; a
            // status without one is the server's own answer.
            Code::Unavailable if std::error::Error::source(&status).is_none() => Error::ServiceUnavailable(msg),
            // A connection that broke under the call ("transport error", Unknown) is a server
            // that could not be reached as much as one that refused to connect.
            Code::Unavailable | Code::Unknown if std::error::Error::source(&status).is_some() => {
                let reason = unavailable_reason(&status);
                if is_tls_failure(&reason) {
                    Error::Tls(format!(
                        "cannot verify the Stratus API at {endpoint}: {reason} (is the certificate authority the \
                         cluster's, DATA_DIR/pki/ca.crt, and the server's address one its certificate names?)"
                    ))
                } else {
                    Error::Unavailable { endpoint: endpoint.to_string(), message: reason }
                }
            }
            _ => Error::Server(msg),
        }
    }

    /// Whether retrying the same request later may succeed (connection trouble).
    pub fn is_transient(&self) -> bool {
        matches!(self, Error::Unavailable { .. } | Error::ServiceUnavailable(_) | Error::Server(_))
    }
}

/// Whether a call failed before anything of it was sent: the connection to the server could
/// not be made (tonic marks such failures with a [`tonic::ConnectError`] in the status' source
/// chain). Such a call may be sent again to another server whatever it does.
fn never_sent(status: &tonic::Status) -> bool {
    let mut source = std::error::Error::source(status);
    while let Some(error) = source {
        if error.is::<tonic::ConnectError>() {
            return true;
        }
        source = error.source();
    }
    false
}

/// Whether a transport failure is TLS refusing the peer (rustls' wording), not a peer that is
/// away: an unknown issuer, a name the certificate does not hold, a plain-HTTP server.
fn is_tls_failure(reason: &str) -> bool {
    ["invalid peer certificate", "certificate", "InvalidContentType", "corrupt message", "peer is incompatible"]
        .iter()
        .any(|needle| reason.contains(needle))
}

fn unavailable_reason(status: &tonic::Status) -> String {
    // tonic puts the transport error in the source chain; its message is the useful part.
    let mut source: Option<&dyn std::error::Error> = std::error::Error::source(status);
    let mut last = status.message().to_string();
    while let Some(s) = source {
        last = s.to_string();
        source = s.source();
    }
    last
}

/// How a list is narrowed and paged.
#[derive(Debug, Clone, Default)]
pub struct ListParams {
    /// Empty: all namespaces (for namespaced kinds).
    pub namespace: String,
    pub label_selector: String,
    pub field_selector: String,
    /// At most this many items per page (0: the server's maximum).
    pub limit: i32,
    pub continue_token: String,
}

/// One page of a list.
#[derive(Debug, Clone)]
pub struct ObjectList<T> {
    pub items: Vec<T>,
    /// Watch from here to see every change after the list.
    pub resource_version: String,
    /// Non-empty when more items remain.
    pub continue_token: String,
}

/// A change seen by a watch.
#[derive(Debug, Clone, PartialEq)]
pub enum WatchEvent<T> {
    Added(T),
    Modified(T),
    Deleted(T),
    /// Every change up to this resourceVersion has been delivered.
    Bookmark(String),
}

/// What `apply` did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ApplyResult {
    Created,
    Configured,
    Unchanged,
}

impl std::fmt::Display for ApplyResult {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            ApplyResult::Created => "created",
            ApplyResult::Configured => "configured",
            ApplyResult::Unchanged => "unchanged",
        })
    }
}

/// Where a client's bearer token comes from.
#[derive(Clone, Default)]
pub enum Credentials {
    /// No token: only the open calls (login) succeed.
    #[default]
    None,
    /// The same token on every request.
    Token(Arc<str>),
    /// Asked before every request: for a holder that renews its token before it expires.
    Source(Arc<dyn Fn() -> String + Send + Sync>),
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the token itself.
        f.write_str(match self {
            Credentials::None => "Credentials::None",
            Credentials::Token(_) => "Credentials::Token(..)",
            Credentials::Source(_) => "Credentials::Source(..)",
        })
    }
}

/// Adds `authorization: Bearer …` to every request, and the leadership term's fence
/// ([`stratus_api::fence`]) when the client has one.
#[derive(Clone)]
pub struct Bearer {
    credentials: Credentials,
    fence: Option<Arc<str>>,
}

impl Bearer {
    /// An interceptor presenting `credentials`, for other gRPC clients of the platform.
    pub fn new(credentials: Credentials) -> Bearer {
        Bearer { credentials, fence: None }
    }
}

impl tonic::service::Interceptor for Bearer {
    fn call(&mut self, mut req: tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> {
        if let Some(fence) = &self.fence {
            let value = fence.parse().map_err(|_| {
                tonic::Status::invalid_argument("the leader's identity holds characters a header cannot carry")
            })?;
            req.metadata_mut().insert(stratus_api::fence::METADATA, value);
        }
        // A call made under a traced span (a reconcile) continues its trace in the API server.
        if otel::enabled()
            && let Some(value) = otel::traceparent(&otel::Context::current()).and_then(|v| v.parse().ok())
        {
            req.metadata_mut().insert("traceparent", value);
        }
        let token = match &self.credentials {
            Credentials::None => return Ok(req),
            Credentials::Token(t) => t.to_string(),
            Credentials::Source(f) => f(),
        };
        let value = format!("Bearer {token}")
            .parse()
            .map_err(|_| tonic::Status::unauthenticated("the token holds characters a header cannot carry"))?;
        req.metadata_mut().insert("authorization", value);
        Ok(req)
    }
}

type Authed = InterceptedService<Channel, Bearer>;

/// How long a connection to an API server may take to open.
pub(crate) const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);

/// How much of a head start each server gets over the next when a client with several first
/// looks for one that takes connections (see [`Client::probe`]).
const PROBE_STAGGER: Duration = Duration::from_millis(250);

/// One API server a client may send its calls to.
struct Server {
    endpoint: String,
    channel: Channel,
}

impl Server {
    /// The host and port of the server, for a plain TCP connection to it.
    fn address(&self) -> Option<(String, u16)> {
        let uri: http::Uri = self.endpoint.parse().ok()?;
        let host = uri.host()?.trim_start_matches('[').trim_end_matches(']').to_string();
        let port = uri.port_u16().unwrap_or(if uri.scheme_str() == Some("http") { 80 } else { 443 });
        Some((host, port))
    }
}

/// The API servers of a client, and the one its calls go to now. A call that cannot reach the
/// current one moves every clone of the client on to the next (see [`Client::call`]).
struct Servers {
    list: Vec<Server>,
    current: AtomicUsize,
    /// Set once the first call has looked for a server that takes connections; the calls made
    /// meanwhile wait for it.
    probed: tokio::sync::OnceCell<()>,
}

/// When a call that could not reach an API server is sent to the next one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Retry {
    /// Always: doing it twice does what doing it once does (reads, watches, apply, login).
    Always,
    /// Only when it never left this process (the connection to the server could not be made):
    /// a create, update or delete that broke in flight may have been done.
    IfUnsent,
}

/// A connection to one API server, presenting a client's credentials.
struct Conn {
    channel: Channel,
    bearer: Bearer,
}

impl Conn {
    fn resources(self) -> ResourceServiceClient<Authed> {
        ResourceServiceClient::with_interceptor(self.channel, self.bearer).max_decoding_message_size(64 * 1024 * 1024)
    }

    fn traffic(self) -> TrafficMetricsClient<Authed> {
        TrafficMetricsClient::with_interceptor(self.channel, self.bearer).max_decoding_message_size(64 * 1024 * 1024)
    }

    fn auth(self) -> AuthServiceClient<Authed> {
        AuthServiceClient::with_interceptor(self.channel, self.bearer)
    }
}

/// A client of the API. Several API servers may be given (`https://a:7070,https://b:7070`):
/// calls go to one until it cannot be reached, then to the next. Cheap to clone; clones share
/// the connections and the server in use.
#[derive(Clone)]
pub struct Client {
    servers: Arc<Servers>,
    credentials: Credentials,
    /// The leadership term every request is part of, if any ([`Client::with_fence`]).
    fence: Option<Arc<str>>,
}

/// The API servers named by `endpoints`: one URL, or several separated by commas. A bare
/// `host:port` is HTTPS.
fn endpoints(endpoints: &str) -> Result<Vec<String>> {
    let list: Vec<String> = endpoints
        .split(',')
        .map(str::trim)
        .map(|e| if e.contains("://") { e.to_string() } else { format!("https://{e}") })
        .collect();
    if list.iter().any(|e| e == "https://") {
        return Err(Error::BadEndpoint(endpoints.to_string()));
    }
    Ok(list)
}

impl Client {
    /// A client of the plain-HTTP server at `endpoint` (e.g. `http://127.0.0.1:7070`): for
    /// servers in the same process. An `https://` endpoint needs [`Client::with_ca`].
    pub fn new(endpoint: &str) -> Result<Client> {
        Client::with_ca(endpoint, None)
    }

    /// A client of the server at `endpoint` (or of the servers, when it names several separated
    /// by commas) that trusts only `ca_pem` (the cluster CA, PEM) to sign its certificate when
    /// the endpoint is `https://`. A bare `host:port` is HTTPS. Connects lazily: an unreachable
    /// server shows as [`Error::Unavailable`] on the first request.
    pub fn with_ca(endpoint: &str, ca_pem: Option<&[u8]>) -> Result<Client> {
        let list = endpoints(endpoint)?
            .into_iter()
            .map(|endpoint| {
                let mut builder = Endpoint::from_shared(endpoint.clone())
                    .map_err(|_| Error::BadEndpoint(endpoint.clone()))?
                    .connect_timeout(CONNECT_TIMEOUT)
                    .tcp_nodelay(true)
                    .http2_keep_alive_interval(Duration::from_secs(30));
                if endpoint.starts_with("https://") {
                    let ca = ca_pem.ok_or_else(|| {
                        Error::Tls(format!(
                            "{endpoint} is HTTPS but no certificate authority was given to verify it \
                             (--certificate-authority, or the context's certificate-authority-data)"
                        ))
                    })?;
                    let tls = tonic::transport::ClientTlsConfig::new()
                        .ca_certificate(tonic::transport::Certificate::from_pem(ca));
                    builder = builder.tls_config(tls).map_err(|e| {
                        Error::Tls(format!("the certificate authority for {endpoint} is unusable: {e}"))
                    })?;
                }
                Ok(Server { channel: builder.connect_lazy(), endpoint })
            })
            .collect::<Result<_>>()?;
        Ok(Client::over(list, Credentials::None))
    }

    /// A client of the HTTPS server at `endpoint` (or servers, separated by commas) that trusts
    /// only `ca_pem` and proves who it is with `identity`'s certificate (a node's), presenting
    /// its current certificate on each new connection. Connects lazily.
    pub fn with_identity(endpoint: &str, ca_pem: &[u8], identity: &tls::ClientIdentity) -> Result<Client> {
        let list = endpoints(endpoint)?
            .into_iter()
            .map(|endpoint| {
                let channel = tls::channel(&endpoint, ca_pem, identity, None, |e| {
                    e.connect_timeout(CONNECT_TIMEOUT).http2_keep_alive_interval(Duration::from_secs(30))
                })?;
                Ok(Server { endpoint, channel })
            })
            .collect::<Result<_>>()?;
        Ok(Client::over(list, Credentials::None))
    }

    fn over(list: Vec<Server>, credentials: Credentials) -> Client {
        let servers = Servers { list, current: AtomicUsize::new(0), probed: tokio::sync::OnceCell::new() };
        Client { servers: Arc::new(servers), credentials, fence: None }
    }

    /// The same client (sharing its connections) presenting `credentials` on every request.
    pub fn with_credentials(&self, credentials: Credentials) -> Client {
        Client { servers: self.servers.clone(), credentials, fence: self.fence.clone() }
    }

    /// The same client, its requests part of the leadership term `fence`: the API server
    /// refuses its writes (FailedPrecondition) once the Lease has another holder or another
    /// term began ([`stratus_api::fence`]).
    pub fn with_fence(&self, fence: &stratus_api::fence::Fence) -> Client {
        Client { fence: Some(fence.to_string().into()), ..self.clone() }
    }

    /// The credentials this client presents.
    pub fn credentials(&self) -> Credentials {
        self.credentials.clone()
    }

    /// The server calls go to now, and a connection to it.
    fn current(&self) -> (usize, Conn) {
        let i = self.servers.current.load(Ordering::Acquire) % self.servers.list.len();
        (
            i,
            Conn {
                channel: self.servers.list[i].channel.clone(),
                bearer: Bearer { credentials: self.credentials.clone(), fence: self.fence.clone() },
            },
        )
    }

    /// What a failed call to server `i` means: its error, naming the server. When the server
    /// could not be reached, the calls after it go to the next server (unless another call has
    /// moved on already).
    fn failed(&self, i: usize, status: tonic::Status) -> Error {
        let error = Error::from_status(status, &self.servers.list[i].endpoint);
        if matches!(error, Error::Unavailable { .. }) {
            self.away(i);
        }
        error
    }

    /// Server `i` cannot be reached: the calls after this one go to the next server, unless
    /// another call has moved on already.
    fn away(&self, i: usize) {
        let next = (i + 1) % self.servers.list.len();
        let _ = self.servers.current.compare_exchange(i, next, Ordering::AcqRel, Ordering::Acquire);
    }

    /// With several servers, the first call of a client looks for one that takes connections,
    /// as Happy Eyeballs does: it opens a TCP connection to the current server, then to the
    /// next one [`PROBE_STAGGER`] later or as soon as the one before failed, and so on, and
    /// sends its calls to the first that accepts. A server that is down without refusing
    /// connections (its host or container gone, a partition) would otherwise cost every new
    /// client, such as each `stratus` command, the whole connect timeout before the next server
    /// is tried. The search takes at most the connect timeout; when no server accepted by then,
    /// calls start at the current server as before, and fail over as they do. Calls made while
    /// it looks wait for it; each later call goes where the calls before it went.
    pub(crate) async fn probe(&self) {
        if self.servers.list.len() >= 2 {
            self.servers.probed.get_or_init(|| self.find_live_server()).await;
        }
    }

    /// See [`Client::probe`].
    async fn find_live_server(&self) {
        let servers = &self.servers;
        let count = servers.list.len();
        let first = servers.current.load(Ordering::Acquire) % count;
        let connect = |i: usize| {
            let address = servers.list[i].address();
            async move {
                let (host, port) = address?;
                tokio::net::TcpStream::connect((host, port)).await.ok().map(|_| i)
            }
        };
        let search = async {
            let mut running = futures::stream::FuturesUnordered::new();
            let mut started = 0;
            loop {
                if started < count {
                    running.push(connect((first + started) % count));
                    started += 1;
                }
                let stagger = tokio::time::sleep(PROBE_STAGGER);
                tokio::pin!(stagger);
                loop {
                    tokio::select! {
                        Some(outcome) = running.next() => {
                            if outcome.is_some() {
                                return outcome;
                            }
                            // That one failed: the next starts now.
                            if started < count {
                                break;
                            }
                        }
                        () = &mut stagger, if started < count => break,
                        else => return None,
                    }
                }
            }
        };
        let Ok(Some(i)) = tokio::time::timeout(CONNECT_TIMEOUT, search).await else { return };
        if i != first {
            tracing::debug!(
                skipped = servers.list[first].endpoint,
                endpoint = servers.list[i].endpoint,
                "the first API server did not take a connection in time; calls go to the next that did"
            );
        }
        // Unless a call has moved on already.
        let _ = servers.current.compare_exchange(first, i, Ordering::AcqRel, Ordering::Acquire);
    }

    /// Sends `req` (`send` sends it over the connection it is given) to the current server and,
    /// when that server cannot be reached and `retry` allows, to each of the others in turn.
    /// Returns the answer and the endpoint of the server that gave it.
    async fn call<Req: Clone, R, Fut>(
        &self,
        retry: Retry,
        req: Req,
        send: impl Fn(Conn, Req) -> Fut,
    ) -> Result<(R, &str)>
    where
        Fut: Future<Output = Result<tonic::Response<R>, tonic::Status>>,
    {
        self.probe().await;
        let mut tried = Vec::new();
        loop {
            let (i, conn) = self.current();
            let status = match send(conn, req.clone()).await {
                Ok(answer) => return Ok((answer.into_inner(), &self.servers.list[i].endpoint)),
                Err(status) => status,
            };
            let unsent = never_sent(&status);
            let error = self.failed(i, status);
            let Error::Unavailable { message, .. } = &error else { return Err(error) };
            tried.push(i);
            let next = self.servers.current.load(Ordering::Acquire) % self.servers.list.len();
            if tried.contains(&next) || (retry == Retry::IfUnsent && !unsent) {
                if tried.len() == 1 {
                    return Err(error);
                }
                let endpoints: Vec<&str> = tried.iter().map(|&i| self.servers.list[i].endpoint.as_str()).collect();
                return Err(Error::Unavailable { endpoint: endpoints.join(", "), message: message.clone() });
            }
        }
    }

    /// Streams a gateway's traffic reports to the API server's `TrafficMetrics` service (which
    /// keeps a few minutes of them for users to read), presenting this client's credentials.
    /// Ends when the stream does; a server that cannot be reached makes the next call go to
    /// the next server.
    pub async fn report_traffic(
        &self,
        reports: impl tonic::IntoStreamingRequest<Message = stratus_api::v1::DemandReport>,
    ) -> Result<tonic::Response<stratus_api::v1::DemandAck>, tonic::Status> {
        self.probe().await;
        let (i, conn) = self.current();
        let mut service = TrafficMetricsClient::with_interceptor(conn.channel, conn.bearer);
        let result = service.report(reports).await;
        // A status tonic made itself (it keeps the transport error as its source) means the
        // server was not reached or the connection broke; one without is the server's answer.
        if let Err(status) = &result
            && status.code() == tonic::Code::Unavailable
            && std::error::Error::source(status).is_some()
        {
            self.away(i);
        }
        result
    }

    /// The same client presenting `token` on every request.
    pub fn with_token(&self, token: &str) -> Client {
        self.with_credentials(Credentials::Token(token.into()))
    }

    // ------------------------------------------------------------ identity

    /// Logs in with a user's name and password (the password grant).
    pub async fn login(&self, username: &str, password: &str) -> Result<TokenResponse> {
        let req = LoginRequest { username: username.to_string(), password: password.to_string() };
        // A second login only makes a second token; the first is never used.
        Ok(self.call(Retry::Always, req, async |c, req| c.auth().login(req).await).await?.0)
    }

    /// A token for the ServiceAccount `namespace/name`, lasting `duration` (`None`: an hour).
    pub async fn create_token(&self, namespace: &str, name: &str, duration: Option<Duration>) -> Result<TokenResponse> {
        let duration_seconds = duration.map(|d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX)).unwrap_or(0);
        let req = CreateTokenRequest { namespace: namespace.to_string(), name: name.to_string(), duration_seconds };
        Ok(self.call(Retry::Always, req, async |c, req| c.auth().create_token(req).await).await?.0)
    }

    /// The latest complete slot of traffic (requests per second, concurrency, latency) of every
    /// Service of `namespace` (of every namespace when empty) that this client may list, as the
    /// gateways that report to the server reached measured it.
    pub async fn service_traffic(&self, namespace: &str) -> Result<ListServiceTrafficResponse> {
        let req = ListServiceTrafficRequest { namespace: namespace.to_string() };
        Ok(self.call(Retry::Always, req, async |c, req| c.traffic().list_service_traffic(req).await).await?.0)
    }

    /// Who the server says this client's token is.
    pub async fn who_am_i(&self) -> Result<WhoAmIResponse> {
        Ok(self.call(Retry::Always, WhoAmIRequest {}, async |c, req| c.auth().who_am_i(req).await).await?.0)
    }

    /// Whether this client's caller may do `verb` on `kind` in `namespace` ("*": every one).
    pub async fn can_i(&self, verb: &str, kind: &str, namespace: &str, name: &str) -> Result<CanIResponse> {
        let req = CanIRequest {
            verb: verb.to_string(),
            kind: kind.to_string(),
            namespace: namespace.to_string(),
            name: name.to_string(),
        };
        Ok(self.call(Retry::Always, req, async |c, req| c.auth().can_i(req).await).await?.0)
    }

    /// The API server calls go to now.
    pub fn endpoint(&self) -> &str {
        &self.servers.list[self.current().0].endpoint
    }

    // ------------------------------------------------------------ dynamic

    pub async fn create_any(&self, obj: AnyObject) -> Result<AnyObject> {
        let req = CreateRequest { object: Some(obj.into_object()) };
        unwrap_object(self.call(Retry::IfUnsent, req, async |c, req| c.resources().create(req).await).await?.0)
    }

    pub async fn get_any(&self, kind: &str, namespace: &str, name: &str) -> Result<AnyObject> {
        let req = GetRequest { key: Some(key(kind, namespace, name)) };
        unwrap_object(self.call(Retry::Always, req, async |c, req| c.resources().get(req).await).await?.0)
    }

    pub async fn list_any(&self, kind: &str, params: &ListParams) -> Result<ObjectList<AnyObject>> {
        let req = ListRequest {
            kind: kind.to_string(),
            namespace: params.namespace.clone(),
            label_selector: params.label_selector.clone(),
            field_selector: params.field_selector.clone(),
            limit: params.limit,
            continue_token: params.continue_token.clone(),
        };
        let resp = self.call(Retry::Always, req, async |c, req| c.resources().list(req).await).await?.0;
        let items = resp.items.into_iter().map(unwrap_object).collect::<Result<Vec<_>>>()?;
        Ok(ObjectList { items, resource_version: resp.resource_version, continue_token: resp.continue_token })
    }

    /// Every page of a list, read one after the other.
    pub async fn list_all_any(&self, kind: &str, params: &ListParams) -> Result<ObjectList<AnyObject>> {
        let mut params = params.clone();
        let mut all = self.list_any(kind, &params).await?;
        while !all.continue_token.is_empty() {
            params.continue_token = std::mem::take(&mut all.continue_token);
            let page = self.list_any(kind, &params).await?;
            all.items.extend(page.items);
            all.continue_token = page.continue_token;
        }
        Ok(all)
    }

    /// Replaces metadata and spec; `obj` must carry the resourceVersion it was read at.
    pub async fn update_any(&self, obj: AnyObject) -> Result<AnyObject> {
        let req = UpdateRequest { object: Some(obj.into_object()) };
        unwrap_object(self.call(Retry::IfUnsent, req, async |c, req| c.resources().update(req).await).await?.0)
    }

    /// Replaces status only; `obj` must carry the resourceVersion it was read at.
    pub async fn update_status_any(&self, obj: AnyObject) -> Result<AnyObject> {
        let req = UpdateRequest { object: Some(obj.into_object()) };
        unwrap_object(self.call(Retry::IfUnsent, req, async |c, req| c.resources().update_status(req).await).await?.0)
    }

    /// Deletes an object (only if still at `resource_version`, when given). Returns its last
    /// state: with `deletionTimestamp` set if finalizers keep it for now.
    pub async fn delete_any(
        &self,
        kind: &str,
        namespace: &str,
        name: &str,
        resource_version: Option<&str>,
    ) -> Result<AnyObject> {
        let req = DeleteRequest {
            key: Some(key(kind, namespace, name)),
            resource_version: resource_version.unwrap_or_default().to_string(),
        };
        unwrap_object(self.call(Retry::IfUnsent, req, async |c, req| c.resources().delete(req).await).await?.0)
    }

    /// Creates the object, or updates its metadata and spec, keeping status.
    pub async fn apply_any(&self, obj: AnyObject) -> Result<(AnyObject, ApplyResult)> {
        let req = ApplyRequest { object: Some(obj.into_object()) };
        // Applying the same object twice leaves what applying it once does.
        let resp = self.call(Retry::Always, req, async |c, req| c.resources().apply(req).await).await?.0;
        let result = match resp.result.as_str() {
            "created" => ApplyResult::Created,
            "configured" => ApplyResult::Configured,
            "unchanged" => ApplyResult::Unchanged,
            _ => return Err(Error::Malformed("the apply result")),
        };
        Ok((unwrap_object(resp.object.ok_or(Error::Malformed("the object"))?)?, result))
    }

    /// Watches a kind. With an empty `resource_version`, every current object first arrives as
    /// `Added`; otherwise the changes after that version. The stream ends with [`Error::Gone`]
    /// when the version is older than the server's history.
    pub async fn watch_any(
        &self,
        kind: &str,
        params: &ListParams,
        resource_version: &str,
        bookmarks: bool,
    ) -> Result<BoxStream<'static, Result<WatchEvent<AnyObject>>>> {
        let req = WatchRequest {
            kind: kind.to_string(),
            namespace: params.namespace.clone(),
            label_selector: params.label_selector.clone(),
            field_selector: params.field_selector.clone(),
            resource_version: resource_version.to_string(),
            allow_bookmarks: bookmarks,
        };
        let (stream, endpoint) = self.call(Retry::Always, req, async |c, req| c.resources().watch(req).await).await?;
        let endpoint = endpoint.to_string();
        Ok(stream
            .map_err(move |s| Error::from_status(s, &endpoint))
            .and_then(|ev| async move {
                let obj = unwrap_object(ev.object.ok_or(Error::Malformed("the watched object"))?);
                match ev.r#type.as_str() {
                    "ADDED" => Ok(WatchEvent::Added(obj?)),
                    "MODIFIED" => Ok(WatchEvent::Modified(obj?)),
                    "DELETED" => Ok(WatchEvent::Deleted(obj?)),
                    "BOOKMARK" => Ok(WatchEvent::Bookmark(obj?.meta().resource_version.clone())),
                    _ => Err(Error::Malformed("a known watch event type")),
                }
            })
            .boxed())
    }

    /// The container output of an Instance, or of every Instance of a Service (`kind` names
    /// either: "instance", "svc", …; each line names its instance). `tail` keeps only the last
    /// lines of each container; with `follow` the stream goes on with new lines until the
    /// containers stop, the server shuts down or the stream is dropped. For a Service, only
    /// the Instances that exist when the call is made are followed.
    ///
    /// Fails with [`Error::NotFound`] when the object or its container does not exist,
    /// [`Error::FailedPrecondition`] when no node runs it yet, and
    /// [`Error::ServiceUnavailable`] (naming the node) when its node's agent cannot be reached.
    pub async fn logs(
        &self,
        kind: &str,
        namespace: &str,
        name: &str,
        follow: bool,
        tail: Option<u64>,
    ) -> Result<BoxStream<'static, Result<LogLine>>> {
        let req = LogsRequest {
            key: Some(key(kind, namespace, name)),
            follow,
            // More lines than i64::MAX is all of them.
            tail_lines: tail.map(|n| i64::try_from(n).unwrap_or(i64::MAX)),
        };
        let (stream, endpoint) = self.call(Retry::Always, req, async |c, req| c.resources().logs(req).await).await?;
        let endpoint = endpoint.to_string();
        Ok(stream.map_err(move |s| Error::from_status(s, &endpoint)).boxed())
    }

    // ------------------------------------------------------------ typed

    pub async fn create<K: Resource>(&self, obj: K) -> Result<K> {
        typed(self.create_any(obj.into_any()).await?)
    }

    pub async fn get<K: Resource>(&self, namespace: &str, name: &str) -> Result<K> {
        typed(self.get_any(K::INFO.kind, namespace, name).await?)
    }

    pub async fn list<K: Resource>(&self, params: &ListParams) -> Result<ObjectList<K>> {
        let list = self.list_any(K::INFO.kind, params).await?;
        Ok(ObjectList {
            items: list.items.into_iter().map(typed).collect::<Result<_>>()?,
            resource_version: list.resource_version,
            continue_token: list.continue_token,
        })
    }

    /// Every page of a list.
    pub async fn list_all<K: Resource>(&self, params: &ListParams) -> Result<ObjectList<K>> {
        let list = self.list_all_any(K::INFO.kind, params).await?;
        Ok(ObjectList {
            items: list.items.into_iter().map(typed).collect::<Result<_>>()?,
            resource_version: list.resource_version,
            continue_token: list.continue_token,
        })
    }

    pub async fn update<K: Resource>(&self, obj: K) -> Result<K> {
        typed(self.update_any(obj.into_any()).await?)
    }

    pub async fn update_status<K: Resource>(&self, obj: K) -> Result<K> {
        typed(self.update_status_any(obj.into_any()).await?)
    }

    pub async fn delete<K: Resource>(&self, namespace: &str, name: &str) -> Result<K> {
        typed(self.delete_any(K::INFO.kind, namespace, name, None).await?)
    }

    pub async fn apply<K: Resource>(&self, obj: K) -> Result<(K, ApplyResult)> {
        let (obj, result) = self.apply_any(obj.into_any()).await?;
        Ok((typed(obj)?, result))
    }

    pub async fn watch<K: Resource>(
        &self,
        params: &ListParams,
        resource_version: &str,
        bookmarks: bool,
    ) -> Result<BoxStream<'static, Result<WatchEvent<K>>>> {
        let stream = self.watch_any(K::INFO.kind, params, resource_version, bookmarks).await?;
        Ok(stream
            .map(|ev| match ev? {
                WatchEvent::Added(o) => Ok(WatchEvent::Added(typed(o)?)),
                WatchEvent::Modified(o) => Ok(WatchEvent::Modified(typed(o)?)),
                WatchEvent::Deleted(o) => Ok(WatchEvent::Deleted(typed(o)?)),
                WatchEvent::Bookmark(rv) => Ok(WatchEvent::Bookmark(rv)),
            })
            .boxed())
    }
}

fn key(kind: &str, namespace: &str, name: &str) -> ObjectKey {
    ObjectKey { kind: kind.to_string(), namespace: namespace.to_string(), name: name.to_string() }
}

fn unwrap_object(obj: Object) -> Result<AnyObject> {
    obj.kind.ok_or(Error::Malformed("the object"))
}

fn typed<K: Resource>(obj: AnyObject) -> Result<K> {
    K::from_any(obj).map_err(|other| Error::UnexpectedKind { want: K::INFO.kind, got: other.info().kind })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_unavailable_answer_of_the_server_is_not_an_unreachable_server() {
        let answered = Error::from_status(tonic::Status::unavailable("cannot reach the agent of node n1"), "http://s");
        assert!(matches!(&answered, Error::ServiceUnavailable(m) if m == "cannot reach the agent of node n1"));
        assert!(answered.is_transient());

        let mut made = tonic::Status::unavailable("tcp connect error");
        made.set_source(std::sync::Arc::new(std::io::Error::from(std::io::ErrorKind::ConnectionRefused)));
        let unreachable = Error::from_status(made, "http://s");
        assert!(
            matches!(&unreachable, Error::Unavailable { endpoint, .. } if endpoint == "http://s"),
            "{unreachable:?}"
        );
    }

    #[test]
    fn a_failed_precondition_is_neither_a_conflict_nor_transient() {
        let e = Error::from_status(tonic::Status::failed_precondition("not scheduled yet"), "http://s");
        assert!(matches!(&e, Error::FailedPrecondition(m) if m == "not scheduled yet"));
        assert!(!e.is_transient());
    }
}

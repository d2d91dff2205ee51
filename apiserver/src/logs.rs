//! Container logs, relayed from the node agents: `ResourceService/Logs` over gRPC and
//! `GET …/namespaces/{ns}/{instances|services}/{name}/log` over HTTP (as Kubernetes'
//! `pods/log`).
//!
//! The API server keeps no logs. For an Instance it reads the Node the Instance is bound to,
//! asks that node's agent (`stratus.v1.NodeAgent/Logs` at the Node's `status.agentEndpoint`)
//! and forwards its stream; for a Service it does so for every Instance of the Service and
//! merges the streams, each line naming its instance.
//!
//! The server dials only where it belongs: a node whose `Ready` condition is True, at an
//! endpoint `http(s)://HOST[:PORT]` whose HOST is one of the addresses the node's agent
//! published (`status.addresses`), with no user information, path, query or fragment. Anything
//! else is refused before a connection is made, naming the node and why (see [`agent_of`]).
//!
//! Over TLS ([`AgentTls`]: the server holds the cluster CA, or was given a client
//! certificate for agents) the server dials agents only at `https://` endpoints, trusting the
//! cluster CA alone, presenting its own client certificate (common name `system:apiserver`,
//! which is the only caller an agent's logs service answers), and requiring the agent's
//! certificate to name the node it dials as its DNS name (a node's certificate does, see
//! `stratus_agent::server`): an agent showing another node's certificate is refused, naming
//! both. Without TLS (tests in one process) it dials `http://` and presents its token.
//!
//! [`Logs`] holds the connections to the agents; the servers keep it beside the [`Registry`],
//! which it reads the objects through.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime};

use axum::body::Body;
use axum::http::{Method, Uri, header};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use futures::stream::{self, BoxStream, StreamExt};
use stratus_api::resource::lookup_kind;
use stratus_api::v1::node_agent_client::NodeAgentClient;
use stratus_api::v1::{AgentLogsRequest, Instance, LogLine, Node, Service};
use stratus_api::{AnyObject, KindInfo, Resource};
use tonic::transport::{Channel, Endpoint};

use crate::auth::{Caller, Verb};
use crate::error::{ApiError, ApiResult, Reason};
use crate::registry::{MAX_PAGE, Registry, Selection};

/// The most Instances of one Service whose logs one request streams at once: each is a stream
/// from an agent held open for as long as the request lasts.
pub const MAX_SERVICE_STREAMS: usize = 100;

/// The most agent endpoints whose channels are kept; past it the cache starts afresh (streams
/// in progress keep their own handles, so nothing in flight is cut).
const MAX_AGENT_CHANNELS: usize = 1024;

/// How long connecting to an agent may take before the request fails as unavailable.
const AGENT_CONNECT_TIMEOUT: Duration = Duration::from_secs(3);

/// A followed stream from an agent on a host that vanished without closing its connections
/// ends after about this long without an answer to a keep-alive ping.
const AGENT_KEEPALIVE: Duration = Duration::from_secs(30);
const AGENT_KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(10);

/// What to read.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LogOptions {
    /// Keep streaming new lines until the containers stop, the caller hangs up or the server
    /// shuts down.
    pub follow: bool,
    /// Only the last N lines of each container (before following); `None`: all of them.
    pub tail_lines: Option<i64>,
}

/// The lines of one logs request; an error ends it.
pub type LogLines = BoxStream<'static, ApiResult<LogLine>>;

/// The logs of both protocols: the registry the objects are read through, and the connections
/// to the node agents, shared by every log request. Cheap to clone; clones share the
/// connections.
#[derive(Clone)]
pub struct Logs {
    registry: Registry,
    agents: Arc<AgentChannels>,
    /// The API server's own token, presented to the agents (who answer nobody else).
    token: Option<crate::auth::service::ComponentToken>,
    /// The client certificate presented to agents over TLS, and the CA they are verified with.
    tls: Option<Arc<AgentTls>>,
}

/// How the API server dials agents over TLS: the cluster CA (PEM), the only root an agent's
/// certificate may chain to, and the server's client certificate, issued by the cluster CA
/// held in this process (and then renewed here at two thirds of its life) or supplied.
pub struct AgentTls {
    ca_pem: String,
    identity: stratus_support::tls::ClientIdentity,
    /// The CA that issued `identity` and when the certificate was issued and expires, when it
    /// is renewed here.
    issuer: Option<(Arc<stratus_auth::pki::Ca>, Mutex<Validity>)>,
}

/// When a certificate was issued and when it expires.
type Validity = (SystemTime, SystemTime);

impl std::fmt::Debug for AgentTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AgentTls").field("issued_here", &self.issuer.is_some()).finish_non_exhaustive()
    }
}

/// How long a client certificate for agents issued here is valid; it is renewed at two thirds.
const AGENT_CLIENT_VALIDITY: Duration = Duration::from_secs(30 * 24 * 3600);

impl AgentTls {
    /// The supplied client certificate `identity` (common name `system:apiserver`, from the
    /// cluster CA), verifying agents with `ca_pem`.
    pub fn supplied(ca_pem: String, identity: stratus_support::tls::ClientIdentity) -> AgentTls {
        AgentTls { ca_pem, identity, issuer: None }
    }

    /// A client certificate issued now by `ca`, held in this process, and renewed by it when
    /// two thirds of its life have passed (checked whenever an agent is dialled).
    pub fn issued(ca: Arc<stratus_auth::pki::Ca>) -> Result<AgentTls, String> {
        let identity = stratus_support::tls::ClientIdentity::default();
        let validity = issue_agent_client(&ca, &identity)?;
        let ca_pem = ca.cert_pem().to_string();
        Ok(AgentTls { ca_pem, identity, issuer: Some((ca, Mutex::new(validity))) })
    }

    /// Renews an issued certificate when two thirds of its life have passed; a failure is
    /// logged and the current one kept (it is tried again at the next dial).
    fn keep_current(&self) {
        let Some((ca, validity)) = &self.issuer else { return };
        let mut validity = validity.lock().unwrap_or_else(PoisonError::into_inner);
        let (issued, not_after) = *validity;
        let life = not_after.duration_since(issued).unwrap_or_default();
        if SystemTime::now() < issued + life * 2 / 3 {
            return;
        }
        match issue_agent_client(ca, &self.identity) {
            Ok(renewed) => {
                *validity = renewed;
                tracing::info!("renewed the API server's client certificate for agents");
            }
            Err(e) => tracing::error!(error = %e, "renewing the API server's client certificate for agents failed"),
        }
    }
}

/// Issues the API server's client certificate for agents with `ca` into `identity`; returns
/// when it was issued and when it expires.
fn issue_agent_client(
    ca: &stratus_auth::pki::Ca,
    identity: &stratus_support::tls::ClientIdentity,
) -> Result<Validity, String> {
    use stratus_api::identity::{APISERVER_USER, APISERVERS_GROUP};
    let now = SystemTime::now();
    let names = [APISERVER_USER.to_string(), APISERVERS_GROUP.to_string()];
    let issued = ca
        .issue(stratus_auth::pki::Usage::Client, &names, AGENT_CLIENT_VALIDITY)
        .map_err(|e| format!("issuing the API server's client certificate for agents: {e}"))?;
    identity
        .set(issued.cert_pem.as_bytes(), issued.key_pem.as_bytes())
        .map_err(|e| format!("using the API server's client certificate for agents: {e}"))?;
    Ok((now, issued.not_after))
}

/// gRPC channels to node agents, one per endpoint. A channel connects lazily and reconnects by
/// itself after its connection broke, so one made on first use serves every later request.
#[derive(Default)]
pub struct AgentChannels {
    channels: Mutex<HashMap<String, Channel>>,
}

impl Logs {
    /// Logs read through `registry`, with no agent connected yet.
    pub fn new(registry: Registry) -> Logs {
        Logs { registry, agents: Arc::default(), token: None, tls: None }
    }

    /// The same, dialling agents over TLS with `tls` (see the module's documentation).
    pub fn with_tls(mut self, tls: AgentTls) -> Logs {
        self.tls = Some(Arc::new(tls));
        self
    }

    /// The same, presenting `token` to the agents.
    pub fn with_token(mut self, token: crate::auth::service::ComponentToken) -> Logs {
        self.token = Some(token);
        self
    }

    /// The container output of the Instance `namespace/name`, or of every Instance of the Service
    /// `namespace/name` (`kind` names either, in any of its forms: "Instance", "inst", "svc", …).
    ///
    /// The caller is admitted for [`Verb::Logs`] on the object itself; the Instances, Nodes and
    /// Services read to find the agents are read on the server's own behalf, as reading a pod's
    /// log in Kubernetes needs no right to read its node.
    ///
    /// Fails before streaming with NotFound when the object (or, for an Instance, its container)
    /// does not exist, FailedPrecondition when no node runs it yet, its node is not Ready or its
    /// node's agent endpoint is refused (see the module's documentation), and ServiceUnavailable
    /// naming the node and endpoint when its agent cannot be reached. An agent failing midway ends the
    /// stream with such an error. Followed streams end when the server shuts down.
    pub async fn stream(
        &self,
        caller: &Caller,
        kind: &str,
        namespace: &str,
        name: &str,
        opts: LogOptions,
    ) -> ApiResult<LogLines> {
        let info = lookup_kind(kind).ok_or_else(|| {
            ApiError::new(Reason::NotFound, format!("the server doesn't have a resource type {kind:?}"))
        })?;
        if info != &Instance::INFO && info != &Service::INFO {
            return Err(ApiError::new(
                Reason::BadRequest,
                format!("logs are kept for instances and services, not for {}", info.plural),
            ));
        }
        if name.is_empty() {
            return Err(ApiError::new(
                Reason::BadRequest,
                format!("a name is required to read the logs of a {}", info.singular),
            ));
        }
        if let Some(n) = opts.tail_lines
            && n < 0
        {
            return Err(ApiError::new(Reason::BadRequest, format!("tailLines: {n} is negative; give 0 or more")));
        }
        let namespace = if namespace.is_empty() { stratus_api::DEFAULT_NAMESPACE } else { namespace };
        self.registry.authorize(caller, Verb::Logs, info, namespace, name, None).await?;
        let lines = if info == &Instance::INFO {
            let instance = read::<Instance>(&self.registry, namespace, name).await?;
            match self.locate(&instance).await? {
                Placement::Agent(agent) => self.open(agent, &instance, opts).await?,
                Placement::Nowhere(why) => return Err(why),
            }
        } else {
            self.service_logs(namespace, name, opts).await?
        };
        Ok(lines.take_until(self.registry.closed()).boxed())
    }

    /// `GET /apis/stratus.dev/v1/namespaces/{ns}/{instances|services}/{name}/log?follow=true&tailLines=N`:
    /// the lines as `text/plain`, one per line; a Service's prefixed with `[instance] ` as
    /// `kubectl logs --prefix` does. An error before the first byte is the usual JSON `Status`; one
    /// midway aborts the response, so that a client never takes a cut stream for a complete one.
    pub async fn http(
        &self,
        caller: &Caller,
        method: &Method,
        info: &KindInfo,
        namespace: &str,
        name: &str,
        query: &HashMap<String, String>,
    ) -> ApiResult<Response> {
        if method != Method::GET {
            return Err(ApiError::new(Reason::MethodNotAllowed, format!("{method} is not supported on logs: use GET")));
        }
        let follow = match query.get("follow").map(String::as_str) {
            None | Some("false" | "0") => false,
            Some("true" | "1") => true,
            Some(other) => {
                return Err(ApiError::new(Reason::BadRequest, format!("follow: {other:?} is not true or false")));
            }
        };
        let tail_lines = match query.get("tailLines") {
            None => None,
            Some(n) => Some(n.parse::<i64>().map_err(|_| {
                ApiError::new(Reason::BadRequest, format!("tailLines: {n:?} is not a number of lines"))
            })?),
        };
        let prefixed = info == &Service::INFO;
        let lines = self.stream(caller, info.kind, namespace, name, LogOptions { follow, tail_lines }).await?;
        let body = lines.map(move |item| match item {
            Ok(l) if prefixed => Ok(Bytes::from(format!("[{}] {}\n", l.instance, l.line))),
            Ok(l) => {
                let mut text = l.line.into_bytes();
                text.push(b'\n');
                Ok(Bytes::from(text))
            }
            Err(e) => Err(std::io::Error::other(e.message)),
        });
        Ok(([(header::CONTENT_TYPE, "text/plain; charset=utf-8")], Body::from_stream(body)).into_response())
    }

    /// The logs of every Instance of a Service: with `follow`, merged as lines arrive; without, one
    /// instance after another in name order, as `kubectl logs -l` prints them.
    ///
    /// The Instances are those that exist when the request arrives: with `follow`, one started
    /// later is not picked up (ask again to see it). Instances that no node runs yet, whose node
    /// is not Ready, or whose container the agent has not made yet, have no logs and are left
    /// out; a node whose agent endpoint is refused fails the request, as an unreachable one does.
    async fn service_logs(&self, namespace: &str, name: &str, opts: LogOptions) -> ApiResult<LogLines> {
        read::<Service>(&self.registry, namespace, name).await?;
        let mut instances = list_instances(&self.registry, namespace, name).await?;
        if instances.is_empty() {
            return Err(ApiError::new(
                Reason::FailedPrecondition,
                format!("service {namespace}/{name} has no instances (it may be scaled to zero)"),
            ));
        }
        if instances.len() > MAX_SERVICE_STREAMS {
            return Err(ApiError::new(
                Reason::BadRequest,
                format!(
                    "service {namespace}/{name} has {} instances, more than the {MAX_SERVICE_STREAMS} whose logs are \
                     streamed at once: ask for the logs of one instance",
                    instances.len()
                ),
            ));
        }
        instances.sort_by(|a, b| a.meta().name.cmp(&b.meta().name));
        let mut placed = Vec::new();
        for instance in &instances {
            let in_error =
                |e: ApiError| ApiError::new(e.reason, format!("instance {}: {}", instance.meta().name, e.message));
            match self.locate(instance).await.map_err(in_error)? {
                Placement::Agent(agent) => placed.push((instance, agent)),
                Placement::Nowhere(why) => {
                    tracing::debug!(%namespace, instance = %instance.meta().name, reason = %why, "no logs here");
                }
            }
        }
        let opened = futures::future::join_all(
            placed.into_iter().map(|(i, agent)| async move { (i, self.open(agent, i, opts).await) }),
        )
        .await;
        let mut streams = Vec::new();
        for (instance, result) in opened {
            match result {
                Ok(lines) => streams.push(lines),
                Err(e) if matches!(e.reason, Reason::NotFound | Reason::FailedPrecondition) => {
                    tracing::debug!(%namespace, instance = %instance.meta().name, reason = %e, "no logs yet");
                }
                Err(e) => {
                    return Err(ApiError::new(e.reason, format!("instance {}: {}", instance.meta().name, e.message)));
                }
            }
        }
        if streams.is_empty() {
            return Err(ApiError::new(
                Reason::FailedPrecondition,
                format!("no instance of service {namespace}/{name} has a container on a node yet"),
            ));
        }
        Ok(if opts.follow { stream::select_all(streams).boxed() } else { stream::iter(streams).flatten().boxed() })
    }

    /// Where the logs of `instance` are read: the agent of its node, or nowhere now (not
    /// scheduled, on a node that is not registered or not Ready), with the reason. Fails when
    /// the node cannot be read, has not published its agent endpoint (ServiceUnavailable), or
    /// published one the server does not dial (FailedPrecondition, see [`agent_of`]).
    async fn locate(&self, instance: &Instance) -> ApiResult<Placement> {
        let meta = instance.meta();
        let (namespace, name) = (&meta.namespace, &meta.name);
        let node_name = instance.spec.as_ref().map(|s| s.node_name.as_str()).unwrap_or_default();
        if node_name.is_empty() {
            return Ok(Placement::Nowhere(ApiError::new(
                Reason::FailedPrecondition,
                format!("instance {namespace}/{name} is not scheduled to a node yet"),
            )));
        }
        let node = match read::<Node>(&self.registry, "", node_name).await {
            Ok(node) => node,
            Err(e) if e.reason == Reason::NotFound => {
                return Ok(Placement::Nowhere(ApiError::new(
                    Reason::FailedPrecondition,
                    format!("instance {namespace}/{name} is bound to node {node_name}, which is not registered"),
                )));
            }
            Err(e) => return Err(e),
        };
        if let Some(why) = stratus_api::node::not_ready_reason(&node) {
            return Ok(Placement::Nowhere(ApiError::new(
                Reason::FailedPrecondition,
                format!("instance {namespace}/{name} is on node {node_name}, which is not Ready: {why}"),
            )));
        }
        let agent = agent_of(node_name, &node)?;
        if self.tls.is_some() && !agent.endpoint.starts_with("https://") {
            return Err(ApiError::new(
                Reason::FailedPrecondition,
                format!(
                    "node {node_name}'s agent endpoint {:?} is refused: this server dials agents only over https \
                     (an agent serves TLS once it has its node's certificate: join the node)",
                    agent.endpoint
                ),
            ));
        }
        Ok(Placement::Agent(agent))
    }

    /// Opens the agent stream of one Instance, from `agent` (see [`Logs::locate`]).
    async fn open(&self, agent: Agent, instance: &Instance, opts: LogOptions) -> ApiResult<LogLines> {
        let meta = instance.meta();
        let (namespace, name) = (meta.namespace.clone(), meta.name.clone());
        if let Some(tls) = &self.tls {
            tls.keep_current();
        }
        let channel = self.agents.channel(&agent, self.tls.as_deref()).map_err(|e| {
            ApiError::new(
                Reason::ServiceUnavailable,
                format!("node {}'s agent endpoint {:?} is not usable: {e}", agent.node, agent.endpoint),
            )
        })?;
        let request = AgentLogsRequest {
            namespace,
            instance: name,
            instance_uid: meta.uid.clone(),
            follow: opts.follow,
            tail_lines: opts.tail_lines,
        };
        let token = self.token.clone();
        let bearer = move |mut req: tonic::Request<()>| {
            if let Some(token) = &token {
                let value = format!("Bearer {}", token())
                    .parse()
                    .map_err(|_| tonic::Status::internal("the API server's token is not a header value"))?;
                req.metadata_mut().insert("authorization", value);
            }
            Ok(req)
        };
        let lines = NodeAgentClient::with_interceptor(channel, bearer)
            .logs(request)
            .await
            .map_err(|s| agent.error(&s, false))?
            .into_inner();
        Ok(lines.map(move |item| item.map_err(|s| agent.error(&s, true))).boxed())
    }
}

impl AgentChannels {
    /// The channel to `agent` (at e.g. `https://10.0.0.5:7071`), made on first use: over TLS
    /// with `tls`, verifying that the agent's certificate names `agent.node`. Fails only when
    /// the endpoint is not a URL (or the CA is unusable); an agent that cannot be reached, or
    /// shows the wrong certificate, shows on the first call.
    fn channel(&self, agent: &Agent, tls: Option<&AgentTls>) -> Result<Channel, String> {
        // The node is part of the key: the same endpoint is verified for the node it belongs to.
        let key = format!("{}@{}", agent.node, agent.endpoint);
        // Nothing below can panic, so a poisoned lock still holds a consistent map.
        let mut channels = self.channels.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(channel) = channels.get(&key) {
            return Ok(channel.clone());
        }
        let channel = match tls {
            None => Endpoint::from_shared(agent.endpoint.clone())
                .map_err(|e| e.to_string())?
                .connect_timeout(AGENT_CONNECT_TIMEOUT)
                .tcp_nodelay(true)
                .http2_keep_alive_interval(AGENT_KEEPALIVE)
                .keep_alive_timeout(AGENT_KEEPALIVE_TIMEOUT)
                .connect_lazy(),
            Some(tls) => tls_channel(agent, tls)?,
        };
        if channels.len() >= MAX_AGENT_CHANNELS {
            // Endpoints of nodes long gone would otherwise pile up forever.
            channels.clear();
        }
        channels.insert(key, channel.clone());
        Ok(channel)
    }
}

/// A channel to `agent` over TLS: the cluster CA the only root, the server's client
/// certificate presented, and the agent's certificate required to name `agent.node`.
fn tls_channel(agent: &Agent, tls: &AgentTls) -> Result<Channel, String> {
    let uri: Uri = agent.endpoint.parse().map_err(|e| format!("not a URL: {e}"))?;
    let (Some(host), Some(authority)) = (uri.host(), uri.authority()) else {
        return Err("it names no host".into());
    };
    let config = stratus_support::tls::client_config_with_identity(tls.ca_pem.as_bytes(), &tls.identity)
        .map_err(|e| format!("the TLS configuration for agents: {e}"))?;
    let verifier = NodeVerifier::new(tls.ca_pem.as_bytes(), &agent.node)?;
    let mut config = config;
    config.dangerous().set_certificate_verifier(Arc::new(verifier));
    // The connector makes the TLS connection itself; tonic is told plain HTTP so it does not
    // add its own.
    let connector = stratus_support::tls::connector_verifying(config, host, &agent.node);
    Ok(Endpoint::from_shared(format!("http://{authority}"))
        .map_err(|e| e.to_string())?
        .connect_timeout(AGENT_CONNECT_TIMEOUT)
        .http2_keep_alive_interval(AGENT_KEEPALIVE)
        .keep_alive_timeout(AGENT_KEEPALIVE_TIMEOUT)
        .connect_with_connector_lazy(connector))
}

/// Verifies an agent's certificate as WebPKI does (chain to the cluster CA, valid now, for
/// servers) for the name of its node, and says whose certificate it is when it names another
/// node.
#[derive(Debug)]
struct NodeVerifier {
    inner: Arc<rustls::client::WebPkiServerVerifier>,
    node: String,
}

impl NodeVerifier {
    fn new(ca_pem: &[u8], node: &str) -> Result<NodeVerifier, String> {
        let roots = stratus_support::tls::roots(ca_pem, "the cluster CA").map_err(|e| e.to_string())?;
        let inner = rustls::client::WebPkiServerVerifier::builder_with_provider(
            Arc::new(roots),
            stratus_support::tls::provider(),
        )
        .build()
        .map_err(|e| format!("the verifier of agents' certificates: {e}"))?;
        Ok(NodeVerifier { inner, node: node.to_string() })
    }
}

impl rustls::client::danger::ServerCertVerifier for NodeVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &rustls::pki_types::CertificateDer<'_>,
        intermediates: &[rustls::pki_types::CertificateDer<'_>],
        server_name: &rustls::pki_types::ServerName<'_>,
        ocsp_response: &[u8],
        now: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        use rustls::CertificateError::{NotValidForName, NotValidForNameContext};
        match self.inner.verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now) {
            Err(rustls::Error::InvalidCertificate(NotValidForName | NotValidForNameContext { .. })) => {
                let holder = stratus_auth::pki::subject_of(end_entity)
                    .map_or_else(|_| "an unreadable subject".to_string(), |s| format!("{:?}", s.common_name));
                Err(rustls::Error::General(format!(
                    "the agent's certificate is not node {}'s: it was issued to {holder}",
                    self.node
                )))
            }
            other => other,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

/// Where an Instance's logs are read from.
enum Placement {
    /// The agent of the node that runs it.
    Agent(Agent),
    /// Nowhere now: not scheduled, or on a node that is not registered or not Ready. The error
    /// says which; a Service's logs leave such an instance out.
    Nowhere(ApiError),
}

/// The agent one stream comes from, to name in its errors.
struct Agent {
    node: String,
    endpoint: String,
}

/// The agent of the Ready node `node_name`, when its `status.agentEndpoint` is one the server
/// dials: `http` or `https`, a host that is one of the node's `status.addresses`, an optional
/// port, and nothing else (no user information, path, query or fragment).
///
/// Fails with ServiceUnavailable when the node has published no endpoint, and with
/// FailedPrecondition naming the node, the endpoint and what is wrong with it otherwise: the
/// endpoint is the node's own report, and the server must not be made to connect elsewhere.
fn agent_of(node_name: &str, node: &Node) -> ApiResult<Agent> {
    let endpoint = node.status.as_ref().map(|s| s.agent_endpoint.clone()).unwrap_or_default();
    if endpoint.is_empty() {
        return Err(ApiError::new(
            Reason::ServiceUnavailable,
            format!("node {node_name} has not reported where its agent listens (status.agentEndpoint)"),
        ));
    }
    match refusal(node, &endpoint) {
        None => Ok(Agent { node: node_name.to_string(), endpoint }),
        Some(why) => Err(ApiError::new(
            Reason::FailedPrecondition,
            format!("node {node_name}'s agent endpoint {endpoint:?} is refused: {why}"),
        )),
    }
}

/// Why the server does not dial `endpoint` for `node`, or `None` when it does (see [`agent_of`]).
fn refusal(node: &Node, endpoint: &str) -> Option<String> {
    let uri = match endpoint.parse::<Uri>() {
        Ok(uri) => uri,
        Err(e) => return Some(format!("it is not a URL ({e})")),
    };
    match uri.scheme_str() {
        Some("http" | "https") => {}
        Some(other) => return Some(format!("its scheme {other:?} is neither http nor https")),
        None => return Some("it has no scheme (http or https)".into()),
    }
    let Some(authority) = uri.authority() else { return Some("it names no host".into()) };
    if authority.as_str().contains('@') {
        return Some("it carries user information".into());
    }
    // `Uri` drops a fragment; it has no business in an endpoint either.
    if !matches!(uri.path(), "" | "/") || uri.query().is_some() || endpoint.contains('#') {
        return Some("an agent endpoint has no path, query or fragment".into());
    }
    let host = authority.host();
    if stratus_api::node::has_address(node, host) {
        return None;
    }
    let published: Vec<&str> = stratus_api::node::addresses(node).collect();
    Some(match published.is_empty() {
        true => format!("its host {host} is not an address of the node, which published none (status.addresses)"),
        false => format!("its host {host} is not one of the node's addresses ({})", published.join(", ")),
    })
}

impl Agent {
    /// What the caller is told when a call to this agent fails, at the start of the stream or
    /// `midway`. A status the agent sent keeps its meaning; NotFound and FailedPrecondition
    /// keep their message too (the agent names the instance and node in them), the others get
    /// the node and endpoint added. A status that tonic made itself because the connection
    /// failed (it carries the transport error as its source) becomes ServiceUnavailable naming
    /// the node, the endpoint and the innermost cause.
    fn error(&self, status: &tonic::Status, midway: bool) -> ApiError {
        let Some(source) = std::error::Error::source(status) else {
            let reason = match status.code() {
                tonic::Code::NotFound => return ApiError::new(Reason::NotFound, status.message()),
                tonic::Code::FailedPrecondition => return ApiError::new(Reason::FailedPrecondition, status.message()),
                tonic::Code::InvalidArgument => Reason::BadRequest,
                tonic::Code::Unavailable => Reason::ServiceUnavailable,
                _ => Reason::InternalError,
            };
            return ApiError::new(
                reason,
                format!("{} (answered by the agent of node {} at {})", status.message(), self.node, self.endpoint),
            );
        };
        // The innermost cause says what happened (e.g. "Connection refused (os error 111)").
        let mut cause = source;
        while let Some(next) = cause.source() {
            cause = next;
        }
        let what = if midway { "lost the connection to" } else { "cannot reach" };
        ApiError::new(
            Reason::ServiceUnavailable,
            format!("{what} the agent of node {} at {}: {cause}", self.node, self.endpoint),
        )
    }
}

/// Reads one object on the server's own behalf.
async fn read<K: Resource>(registry: &Registry, namespace: &str, name: &str) -> ApiResult<K> {
    let obj = registry.get(&Caller::system(), K::INFO.kind, namespace, name).await?;
    typed(obj)
}

/// Every Instance of the Service `namespace/name`, across list pages.
async fn list_instances(registry: &Registry, namespace: &str, name: &str) -> ApiResult<Vec<Instance>> {
    let sel = Selection {
        namespace: namespace.to_string(),
        labels: String::new(),
        fields: format!("spec.serviceName={name}"),
    };
    let system = Caller::system();
    let mut instances = Vec::new();
    let mut token = String::new();
    loop {
        let page = registry.list(&system, Instance::INFO.kind, &sel, MAX_PAGE, &token).await?;
        for obj in page.items {
            instances.push(typed(obj)?);
        }
        if page.continue_token.is_empty() {
            return Ok(instances);
        }
        token = page.continue_token;
    }
}

fn typed<K: Resource>(obj: AnyObject) -> ApiResult<K> {
    K::from_any(obj).map_err(|other| {
        ApiError::internal(format!("the store holds a {} where a {} belongs", other.info().kind, K::INFO.kind))
    })
}

#[cfg(test)]
mod tests {
    use stratus_api::v1::{NodeAddress, NodeStatus};

    use super::*;

    fn node(endpoint: &str, addresses: &[&str]) -> Node {
        let addresses =
            addresses.iter().map(|a| NodeAddress { r#type: "InternalIP".into(), address: a.to_string() }).collect();
        let status = NodeStatus { agent_endpoint: endpoint.into(), addresses, ..Default::default() };
        Node { status: Some(status), ..Default::default() }
    }

    fn refused(endpoint: &str, addresses: &[&str]) -> Option<String> {
        refusal(&node(endpoint, addresses), endpoint)
    }

    #[test]
    fn only_a_bare_endpoint_on_an_address_of_the_node_is_dialled() {
        for ok in ["http://10.0.0.5:7071", "https://10.0.0.5:7071/", "http://10.0.0.5", "http://node-1:7071"] {
            assert_eq!(refused(ok, &["10.0.0.5", "node-1"]), None, "{ok}");
        }
        assert_eq!(refused("http://[fd00::5]:7071", &["fd00::5"]), None);
        let cases = [
            ("http://10.0.0.6:7071", "its host 10.0.0.6 is not one of the node's addresses (10.0.0.5, node-1)"),
            ("http://169.254.169.254/latest", "an agent endpoint has no path, query or fragment"),
            ("http://10.0.0.5:7071/x", "an agent endpoint has no path, query or fragment"),
            ("http://10.0.0.5:7071?a=b", "an agent endpoint has no path, query or fragment"),
            ("http://10.0.0.5:7071#top", "an agent endpoint has no path, query or fragment"),
            ("http://me@10.0.0.5:7071", "it carries user information"),
            ("http://u:p@10.0.0.5:7071", "it carries user information"),
            ("unix://10.0.0.5:7071", "its scheme \"unix\" is neither http nor https"),
            ("10.0.0.5:7071", "it has no scheme (http or https)"),
        ];
        for (endpoint, why) in cases {
            assert_eq!(refused(endpoint, &["10.0.0.5", "node-1"]).as_deref(), Some(why), "{endpoint}");
        }
        assert!(refused("http://exa mple", &["10.0.0.5"]).is_some_and(|w| w.starts_with("it is not a URL")));
        assert_eq!(
            refused("http://127.0.0.1:7071", &[]).as_deref(),
            Some("its host 127.0.0.1 is not an address of the node, which published none (status.addresses)")
        );
    }

    #[test]
    fn a_refused_endpoint_names_the_node_and_why() {
        let e = agent_of("n1", &node("http://10.9.9.9:2379", &["10.0.0.5"])).err().map(|e| (e.reason, e.message));
        assert_eq!(
            e,
            Some((
                Reason::FailedPrecondition,
                "node n1's agent endpoint \"http://10.9.9.9:2379\" is refused: its host 10.9.9.9 is not one of the \
                 node's addresses (10.0.0.5)"
                    .to_string()
            ))
        );
        let e = agent_of("n1", &node("", &["10.0.0.5"])).err().map(|e| e.reason);
        assert_eq!(e, Some(Reason::ServiceUnavailable));
    }
}

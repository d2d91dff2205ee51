//! Container logs, relayed from the node agents: `ResourceService/Logs` over gRPC and
//! `GET …/namespaces/{ns}/{instances|services}/{name}/log` over HTTP (as Kubernetes'
//! `pods/log`).
//!
//! The API server keeps no logs. For an Instance it reads the Node the Instance is bound to,
//! asks that node's agent (`stratus.v1.NodeAgent/Logs` at the Node's `status.agentEndpoint`)
//! and forwards its stream; for a Service it does so for every Instance of the Service and
//! merges the streams, each line naming its instance.
//!
//! [`Logs`] holds the connections to the agents; the servers keep it beside the [`Registry`],
//! which it reads the objects through.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use axum::body::Body;
use axum::http::{Method, header};
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
        Logs { registry, agents: Arc::default(), token: None }
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
    /// does not exist, FailedPrecondition when no node runs it yet, and ServiceUnavailable naming
    /// the node and endpoint when its agent cannot be reached. An agent failing midway ends the
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
            self.open(&instance, opts).await?
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
    /// later is not picked up (ask again to see it). Instances that no node runs yet, or whose
    /// container the agent has not made yet, have no logs and are left out.
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
        let opened = futures::future::join_all(instances.iter().map(|i| self.open(i, opts))).await;
        let mut streams = Vec::new();
        for (instance, result) in instances.iter().zip(opened) {
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

    /// Opens the agent stream of one Instance.
    async fn open(&self, instance: &Instance, opts: LogOptions) -> ApiResult<LogLines> {
        let meta = instance.meta();
        let (namespace, name) = (meta.namespace.clone(), meta.name.clone());
        let node_name = instance.spec.as_ref().map(|s| s.node_name.as_str()).unwrap_or_default();
        if node_name.is_empty() {
            return Err(ApiError::new(
                Reason::FailedPrecondition,
                format!("instance {namespace}/{name} is not scheduled to a node yet"),
            ));
        }
        let node = match read::<Node>(&self.registry, "", node_name).await {
            Ok(node) => node,
            Err(e) if e.reason == Reason::NotFound => {
                return Err(ApiError::new(
                    Reason::FailedPrecondition,
                    format!("instance {namespace}/{name} is bound to node {node_name}, which is not registered"),
                ));
            }
            Err(e) => return Err(e),
        };
        let endpoint = node.status.as_ref().map(|s| s.agent_endpoint.clone()).unwrap_or_default();
        if endpoint.is_empty() {
            return Err(ApiError::new(
                Reason::ServiceUnavailable,
                format!("node {node_name} has not reported where its agent listens (status.agentEndpoint)"),
            ));
        }
        let agent = Agent { node: node_name.to_string(), endpoint };
        let channel = self.agents.channel(&agent.endpoint).map_err(|e| {
            ApiError::new(
                Reason::ServiceUnavailable,
                format!("node {}'s agent endpoint {:?} is not a URL: {e}", agent.node, agent.endpoint),
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
    /// The channel to the agent at `endpoint` (e.g. `http://10.0.0.5:7071`), made on first use.
    /// Fails only when `endpoint` is not a URL; an agent that cannot be reached shows on the
    /// first call.
    fn channel(&self, endpoint: &str) -> Result<Channel, tonic::transport::Error> {
        // Nothing below can panic, so a poisoned lock still holds a consistent map.
        let mut channels = self.channels.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(channel) = channels.get(endpoint) {
            return Ok(channel.clone());
        }
        let channel = Endpoint::from_shared(endpoint.to_string())?
            .connect_timeout(AGENT_CONNECT_TIMEOUT)
            .tcp_nodelay(true)
            .http2_keep_alive_interval(AGENT_KEEPALIVE)
            .keep_alive_timeout(AGENT_KEEPALIVE_TIMEOUT)
            .connect_lazy();
        if channels.len() >= MAX_AGENT_CHANNELS {
            // Endpoints of nodes long gone would otherwise pile up forever.
            channels.clear();
        }
        channels.insert(endpoint.to_string(), channel.clone());
        Ok(channel)
    }
}

/// The agent one stream comes from, to name in its errors.
struct Agent {
    node: String,
    endpoint: String,
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

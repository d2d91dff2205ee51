//! The routing table: which host goes to which revisions, built from the informer caches.
//!
//! A [`Table`] is immutable. Every change of a Service, Revision, Endpoints or Node builds a new one,
//! which replaces the old one for the requests that start after it; requests already routed keep
//! theirs. What must outlive a table (each revision's balancer state, each service's token
//! bucket) lives in the [`Registry`] and is shared by the tables that name it.
//!
//! An Endpoints address becomes an endpoint only when its node vouches for it: the Node its
//! `nodeName` names is Ready and its host is one of the addresses the node's agent published
//! (`status.addresses`; the agent publishes instances on its advertise address, which is the
//! node's InternalIP). Anything else (an address of another host, a node that is unknown, gone
//! or not Ready) is left out, logged once for as long as it stays left out. A Node's change
//! builds a new table like any other, so requests pay nothing for the check.
//!
//! An address may also name the instance's container address (`containerAddress`, published
//! by agents that advertise them). The gateway connects there instead of to the published port
//! when the node vouches for that too: its IP lies in one of the instance networks the node
//! published (`status.instanceCidrs`). Otherwise the published port is used, logged once.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use http::uri::Authority;
use rand::Rng;
use stratus_api::defaults;
use stratus_api::v1::{EndpointAddress, Endpoints, Node, Revision, Service};
use stratus_client::runtime::{ObjectRef, Store};
use tokio::time::Instant;
use tracing::warn;

use crate::cidr::Cidr;
use crate::metrics::Metrics;
use crate::poke::Poker;
use crate::pool::{Billing, EndpointSpec, OutlierDetection, PoolSettings, Protocol, QueueLimits, RevisionPool};
use crate::ratelimit::TokenBucket;

/// Where a host's requests go.
#[derive(Default)]
pub(crate) struct Table {
    /// namespace → service name → route.
    services: HashMap<String, HashMap<String, Arc<ServiceRoute>>>,
}

/// The routes of one Service.
pub(crate) struct ServiceRoute {
    pub key: ObjectRef,
    /// Revisions with a share of the traffic, and their percent (> 0).
    targets: Vec<(u32, Arc<RevisionPool>)>,
    /// Sum of the percents.
    total: u32,
    /// tag → revision, for `{tag}-{service}` hosts.
    tags: HashMap<String, Arc<RevisionPool>>,
    pub rate_limit: Option<Arc<TokenBucket>>,
    /// Served only to callers with the invoker role (`stratus.dev/invoker: authenticated`).
    pub private: bool,
}

/// A resolved host: a Service, and the revision a tag pins, if any.
pub(crate) struct Route {
    pub service: Arc<ServiceRoute>,
    pinned: Option<Arc<RevisionPool>>,
}

/// What outlives routing tables: per-revision balancers, per-service token buckets.
pub(crate) struct Registry {
    queue_limits: QueueLimits,
    outliers: OutlierDetection,
    metrics: Metrics,
    poker: Arc<Poker>,
    pools: HashMap<ObjectRef, Arc<RevisionPool>>,
    limits: HashMap<ObjectRef, Arc<TokenBucket>>,
    /// Whether pools meter usage for billing.
    metering: bool,
    /// While metering, the pools of revisions no route names any more, kept until their usage
    /// is reported and nothing holds them (see [`Registry::forget_settled`]). A revision routed
    /// again meanwhile gets a new pool; the usage of both is reported together.
    retired: Vec<Arc<RevisionPool>>,
    /// The Endpoints addresses the last table left out because their node did not vouch for
    /// them, so that each is logged once, not on every build.
    refused: HashSet<Refused>,
}

/// An Endpoints address left out of a table: the revision's Endpoints, and the address.
type Refused = (ObjectRef, String);

/// The caches a table is built from.
#[derive(Clone)]
pub(crate) struct Sources {
    pub services: Store<Service>,
    pub revisions: Store<Revision>,
    pub endpoints: Store<Endpoints>,
    /// The Nodes, which vouch for the addresses of Endpoints.
    pub nodes: Store<Node>,
}

impl Table {
    /// The route of `host` (a Host header or `:authority`, port ignored) under `domain`.
    pub(crate) fn route(&self, host: &str, domain: &str) -> Option<Route> {
        let (label, namespace) = parse_host(host, domain)?;
        let services = self.services.get(&namespace)?;
        if let Some(service) = services.get(&label) {
            return Some(Route { service: Arc::clone(service), pinned: None });
        }
        // `{tag}-{service}`: both may contain dashes, so try every split; a service whose whole
        // name matches was preferred above.
        label.match_indices('-').find_map(|(i, _)| {
            let (tag, name) = (&label[..i], &label[i + 1..]);
            let service = services.get(name)?;
            let pinned = service.tags.get(tag)?;
            Some(Route { service: Arc::clone(service), pinned: Some(Arc::clone(pinned)) })
        })
    }
}

impl ServiceRoute {
    /// The revision for one request: weighted random by percent.
    fn pick(&self) -> Option<&Arc<RevisionPool>> {
        if self.total == 0 {
            return None;
        }
        let roll = rand::rng().random_range(0..self.total);
        pick_weighted(self.targets.iter().map(|(w, _)| *w), roll).map(|i| &self.targets[i].1)
    }
}

impl Route {
    /// The revision this request goes to; `None` when the Service has no traffic target yet.
    pub(crate) fn revision(&self) -> Option<Arc<RevisionPool>> {
        match &self.pinned {
            Some(pool) => Some(Arc::clone(pool)),
            None => self.service.pick().cloned(),
        }
    }
}

impl Registry {
    /// An empty registry; its pools poke the autoscaler through `poker`.
    pub(crate) fn new(
        queue_limits: QueueLimits,
        outliers: OutlierDetection,
        metrics: Metrics,
        poker: Arc<Poker>,
        metering: bool,
    ) -> Registry {
        Registry {
            metering,
            queue_limits,
            outliers,
            metrics,
            poker,
            pools: HashMap::new(),
            limits: HashMap::new(),
            refused: HashSet::new(),
            retired: Vec::new(),
        }
    }

    /// The balancers of every routed revision, and of those routed before whose usage may not
    /// be reported yet.
    pub(crate) fn pools(&self) -> impl Iterator<Item = &Arc<RevisionPool>> {
        self.pools.values().chain(self.retired.iter())
    }

    /// Forgets the retired pools whose usage is all reported and that no request holds.
    pub(crate) fn forget_settled(&mut self) {
        self.retired.retain(|p| Arc::strong_count(p) > 1 || !p.usage_is_settled());
    }

    /// Builds the table of the caches' current contents, updating the balancers and buckets it
    /// names and forgetting those no Service names any more.
    pub(crate) fn build(&mut self, sources: &Sources) -> Table {
        let now = Instant::now();
        let mut table = Table::default();
        let mut pools = HashMap::new();
        let mut limits = HashMap::new();
        let mut refused = HashSet::new();
        let networks = InstanceNetworks::of(&sources.nodes);
        for svc in sources.services.list() {
            let key = ObjectRef::from_obj(svc.as_ref());
            let status = svc.status.clone().unwrap_or_default();
            let mut targets = Vec::new();
            let mut tags = HashMap::new();
            for target in &status.traffic {
                let name = match target.revision_name.as_str() {
                    // A target that follows the latest revision may be written unresolved.
                    "" if target.latest_revision == Some(true) => status.latest_ready_revision_name.as_str(),
                    name => name,
                };
                if name.is_empty() {
                    continue;
                }
                let revision = ObjectRef::new(key.namespace.clone(), name);
                let pool = match pools.get(&revision) {
                    Some(pool) => Arc::clone(pool),
                    None => {
                        let pool = self.pool(&revision, &key.name, sources, &networks, &mut refused);
                        pools.insert(revision, Arc::clone(&pool));
                        pool
                    }
                };
                let percent = u32::try_from(target.percent.unwrap_or(0)).unwrap_or(0);
                if percent > 0 {
                    targets.push((percent, Arc::clone(&pool)));
                }
                if !target.tag.is_empty() {
                    tags.insert(target.tag.to_ascii_lowercase(), pool);
                }
            }
            let rps = svc.spec.as_ref().and_then(|s| s.rate_limit_rps).unwrap_or(0);
            let rate_limit = u32::try_from(rps).ok().filter(|r| *r > 0).map(|rps| {
                let bucket = self.limits.remove(&key).unwrap_or_else(|| Arc::new(TokenBucket::new(rps, now)));
                if bucket.rate() != rps {
                    bucket.set_rate(rps, now);
                }
                limits.insert(key.clone(), Arc::clone(&bucket));
                bucket
            });
            let total = targets.iter().map(|(w, _)| w).sum();
            let private =
                stratus_api::identity::requires_authentication(&stratus_api::Resource::meta(svc.as_ref()).annotations);
            let route = ServiceRoute { key: key.clone(), targets, total, tags, rate_limit, private };
            table.services.entry(key.namespace).or_default().insert(key.name, Arc::new(route));
        }
        for gone in self.pools.keys().filter(|k| !pools.contains_key(*k)) {
            self.metrics.forget_revision(gone);
        }
        let old = std::mem::replace(&mut self.pools, pools);
        if self.metering {
            // Its requests in flight still end, and what they used is still reported.
            self.retired.extend(old.into_iter().filter(|(k, _)| !self.pools.contains_key(k)).map(|(_, p)| p));
        }
        self.limits = limits;
        self.refused = refused;
        table
    }

    /// The balancer of `revision`, created if new, with its settings brought up to date. The
    /// addresses its Endpoints names that are left out go into `refused`; those the last build
    /// did not leave out already are logged.
    fn pool(
        &mut self,
        revision: &ObjectRef,
        service: &str,
        sources: &Sources,
        networks: &InstanceNetworks,
        refused: &mut HashSet<Refused>,
    ) -> Arc<RevisionPool> {
        let settings = pool_settings(revision, service, sources, networks, &self.refused, refused);
        let pool = match self.pools.get(revision) {
            Some(pool) => Arc::clone(pool),
            None => Arc::new(RevisionPool::new(
                revision.clone(),
                self.queue_limits,
                self.outliers.clone(),
                self.metrics.pool_metrics(revision),
                Arc::clone(&self.poker),
                settings.timeout,
                self.metering,
            )),
        };
        pool.configure(settings);
        pool
    }
}

/// A revision's balancer settings from its Revision (defaults until it is cached) and Endpoints,
/// with only the addresses their nodes vouch for (see [`unvouched`]). Those left out are added
/// to `refused`, and logged unless they are in `known` (left out by the last build). `service`
/// is the Service that routes to it.
fn pool_settings(
    revision: &ObjectRef,
    service: &str,
    sources: &Sources,
    networks: &InstanceNetworks,
    known: &HashSet<Refused>,
    refused: &mut HashSet<Refused>,
) -> PoolSettings {
    let rev = sources.revisions.get(&revision.namespace, &revision.name);
    let failure = rev.as_deref().and_then(cannot_start);
    let spec = rev.as_ref().and_then(|r| r.spec.clone()).unwrap_or_default();
    let concurrency = spec.container_concurrency.unwrap_or(defaults::CONTAINER_CONCURRENCY);
    let timeout = spec.timeout_seconds.unwrap_or(defaults::TIMEOUT_SECONDS);
    let max_instances = spec.scaling.as_ref().and_then(|s| s.max_instances).unwrap_or(defaults::MAX_INSTANCES);
    // The port the revision declares tells its protocol when an address does not.
    let declared = match spec.containers.iter().flat_map(|c| &c.ports).any(|p| p.name == "h2c") {
        true => Protocol::H2c,
        false => Protocol::Http1,
    };
    let mut endpoints = Vec::new();
    if let Some(eps) = sources.endpoints.get(&revision.namespace, &revision.name) {
        for a in eps.spec.iter().flat_map(|s| &s.addresses) {
            let Ok(authority) = a.address.parse::<Authority>() else {
                warn!(endpoints = %ObjectRef::from_obj(eps.as_ref()), address = a.address, "skipping a malformed address");
                continue;
            };
            if let Some(why) = unvouched(a, authority.host(), &sources.nodes) {
                let key = (ObjectRef::from_obj(eps.as_ref()), a.address.clone());
                if !known.contains(&key) {
                    warn!(endpoints = %key.0, address = a.address, node = a.node_name, "not proxying to an address: {why}");
                }
                refused.insert(key);
                continue;
            }
            // The instance's own address where its node vouches for it: no engine port proxy
            // or NAT between the gateway and the workload. Else its published port.
            let mut address = a.address.as_str();
            if !a.container_address.is_empty() {
                match container_unvouched(&a.container_address, &a.node_name, networks) {
                    None => address = a.container_address.as_str(),
                    Some(why) => {
                        let key = (ObjectRef::from_obj(eps.as_ref()), a.container_address.clone());
                        if !known.contains(&key) {
                            warn!(endpoints = %key.0, address = a.container_address, node = a.node_name, "using the published port instead of the container address: {why}");
                        }
                        refused.insert(key);
                    }
                }
            }
            let protocol = match a.protocol.as_str() {
                "h2c" => Protocol::H2c,
                "" => declared,
                _ => Protocol::Http1,
            };
            let instance = Arc::from(a.instance_name.as_str());
            endpoints.push(EndpointSpec { address: Arc::from(address), protocol, instance });
        }
    }
    let billing = rev.as_deref().and_then(|r| billing(r, &spec, service));
    PoolSettings {
        billing,
        concurrency: u32::try_from(concurrency).unwrap_or(0),
        timeout: Duration::from_secs(u64::try_from(timeout).unwrap_or(1).max(1)),
        max_instances: u32::try_from(max_instances).unwrap_or(1).max(1),
        failure,
        endpoints,
    }
}

/// What usage reports of `rev` (whose spec is `spec`) say of it: its Service (the label the
/// Service controller puts on it, else `routed_by`), billing mode and serving container's
/// limits. `None`, logged,
/// when its limits do not parse (the API server fills and checks them, so only a Revision
/// written around it lacks them).
fn billing(rev: &Revision, spec: &stratus_api::v1::RevisionSpec, routed_by: &str) -> Option<Arc<Billing>> {
    let meta = stratus_api::Resource::meta(rev);
    let service = meta
        .labels
        .get(stratus_api::wellknown::labels::SERVICE)
        .filter(|s| !s.is_empty())
        .map_or_else(|| routed_by.to_string(), Clone::clone);
    match stratus_client::usage::billed_limits(&spec.containers) {
        Ok((cpu_millis, memory_bytes)) => Some(Arc::new(Billing {
            service,
            mode: stratus_api::billing::billing_mode(spec.cpu_throttling.unwrap_or(true)),
            cpu_millis,
            memory_bytes,
        })),
        Err(e) => {
            warn!(revision = %ObjectRef::from_obj(rev), "its usage cannot be reported: {e}");
            None
        }
    }
}

/// Why the node of Endpoints address `a` (whose host is `host`) does not vouch for it, or `None`
/// when it does: the node is cached, Ready, and `host` is one of its published addresses.
fn unvouched(a: &EndpointAddress, host: &str, nodes: &Store<Node>) -> Option<String> {
    if a.node_name.is_empty() {
        return Some("it names no node".into());
    }
    let Some(node) = nodes.get("", &a.node_name) else {
        return Some(format!("node {} is not registered", a.node_name));
    };
    if let Some(why) = stratus_api::node::not_ready_reason(&node) {
        return Some(format!("node {} is not Ready: {why}", a.node_name));
    }
    if !stratus_api::node::has_address(&node, host) {
        return Some(format!("{host} is not an address of node {}", a.node_name));
    }
    None
}

/// The instance networks every Ready node published (`status.instanceCidrs`), with the node
/// that published each. Entries that are not networks are left out, and so are the networks of
/// nodes that are not Ready: Node objects stay when their host is gone or renamed, and a stale
/// one would otherwise keep a live node's instances off their container addresses for good
/// (the gateway does not route to a node that is not Ready anyway).
pub(crate) struct InstanceNetworks(Vec<(Cidr, Arc<str>)>);

impl InstanceNetworks {
    pub(crate) fn of(nodes: &Store<Node>) -> InstanceNetworks {
        let mut networks = Vec::new();
        for node in nodes.list() {
            let Some(status) = node.status.as_ref().filter(|s| !s.instance_cidrs.is_empty()) else { continue };
            if stratus_api::node::not_ready_reason(&node).is_some() {
                continue;
            }
            let name: Arc<str> = Arc::from(node.metadata.as_ref().map_or("", |m| m.name.as_str()));
            // A network written with host bits (`172.18.0.5/16`) is taken as the network it names.
            let parsed = status.instance_cidrs.iter().filter_map(|c| match c.parse::<Cidr>() {
                Ok(net) | Err(crate::cidr::CidrError::HostBits { network: net, .. }) => Some(net),
                Err(_) => None,
            });
            networks.extend(parsed.map(|net| (net, Arc::clone(&name))));
        }
        InstanceNetworks(networks)
    }
}

/// Why `address`, an instance's container address on node `node_name` (Ready, as
/// [`unvouched`] checked), may not be connected to: it is not an IP and port, its IP is in none
/// of the instance networks the node published, or it is also in another node's (Docker picks
/// the same default subnets on every host, and a gateway would reach whichever container holds
/// the address on its own side). `None`: it may.
fn container_unvouched(address: &str, node_name: &str, networks: &InstanceNetworks) -> Option<String> {
    let Ok(socket) = address.parse::<std::net::SocketAddr>() else {
        return Some(format!("{address} is not an IP address and port"));
    };
    let ip = socket.ip();
    let mut own = networks.0.iter().filter(|(_, node)| &**node == node_name).peekable();
    if own.peek().is_none() {
        return Some(format!("node {node_name} publishes no instance network"));
    }
    let published: Vec<Cidr> = own.map(|(net, _)| *net).collect();
    if !published.iter().any(|net| net.contains(ip)) {
        let list: Vec<String> = published.iter().map(ToString::to_string).collect();
        return Some(format!("{ip} is in none of node {node_name}'s instance networks ({})", list.join(", ")));
    }
    networks.0.iter().find(|(net, node)| &**node != node_name && net.contains(ip)).map(|(net, other)| {
        format!(
            "{ip} is also in node {other}'s instance network {net}, so it may be another container there \
             (give each node an instance network of its own)"
        )
    })
}

/// Reasons of a False `Ready` that only mean "not yet": the revision is still starting.
const STARTING: [&str; 2] = ["Deploying", "ContainersNotReady"];

/// Why `rev` cannot start, when its `Ready` condition is False with a reason other than one of
/// [`STARTING`] (or none): `revision {name} cannot start: {reason}: {message}`.
pub(crate) fn cannot_start(rev: &Revision) -> Option<Arc<str>> {
    let ready = rev.status.as_ref()?.conditions.iter().find(|c| c.r#type == "Ready")?;
    if ready.status != "False" || ready.reason.is_empty() || STARTING.contains(&ready.reason.as_str()) {
        return None;
    }
    let name = rev.metadata.as_ref().map_or("", |m| m.name.as_str());
    let text = match ready.message.as_str() {
        "" => format!("revision {name} cannot start: {}", ready.reason),
        message => format!("revision {name} cannot start: {}: {message}", ready.reason),
    };
    Some(Arc::from(text))
}

/// Splits `{label}.{namespace}.{domain}` (any case, with or without a port or a trailing dot)
/// into its lowercase label and namespace; `None` for any other host.
pub(crate) fn parse_host(host: &str, domain: &str) -> Option<(String, String)> {
    if host.starts_with('[') {
        return None; // an IPv6 literal names no service
    }
    let host = match host.rsplit_once(':') {
        Some((name, port)) if port.bytes().all(|b| b.is_ascii_digit()) => name,
        Some(_) => return None,
        None => host,
    };
    let host = host.strip_suffix('.').unwrap_or(host).to_ascii_lowercase();
    let domain = domain.trim_matches('.').to_ascii_lowercase();
    let rest = host.strip_suffix(domain.as_str())?.strip_suffix('.')?;
    let (label, namespace) = rest.split_once('.')?;
    if label.is_empty() || namespace.is_empty() || namespace.contains('.') {
        return None;
    }
    Some((label.to_string(), namespace.to_string()))
}

/// The index of the weight whose cumulative range holds `roll` (`0 <= roll < sum of weights`).
pub(crate) fn pick_weighted(weights: impl IntoIterator<Item = u32>, roll: u32) -> Option<usize> {
    let mut upto = 0u32;
    for (i, w) in weights.into_iter().enumerate() {
        upto = upto.saturating_add(w);
        if roll < upto {
            return Some(i);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use stratus_api::v1::{
        EndpointAddress, EndpointsSpec, ObjectMeta, RevisionSpec, ServiceSpec, ServiceStatus, TrafficTarget,
    };
    use stratus_client::runtime::Writer;

    use super::*;

    #[test]
    fn hosts_parse_into_label_and_namespace() {
        let p = |h: &str| parse_host(h, "localhost");
        assert_eq!(p("hello.default.localhost"), Some(("hello".into(), "default".into())));
        assert_eq!(p("Hello.Default.LOCALHOST:8080"), Some(("hello".into(), "default".into())));
        assert_eq!(p("hello.default.localhost."), Some(("hello".into(), "default".into())));
        assert_eq!(p("v2-hello.prod.localhost"), Some(("v2-hello".into(), "prod".into())));
        assert_eq!(parse_host("a.b.run.example.com", ".run.example.com."), Some(("a".into(), "b".into())));
        for bad in ["localhost", "default.localhost", "a.b.c.localhost", ".default.localhost", "a..localhost"] {
            assert_eq!(p(bad), None, "{bad}");
        }
        for bad in ["hello.default.example.com", "hello.defaultlocalhost", "[::1]:8080", "a.b.localhost:x"] {
            assert_eq!(p(bad), None, "{bad}");
        }
    }

    #[test]
    fn weighted_pick_follows_the_cumulative_ranges() {
        let w = [50, 0, 30, 20];
        assert_eq!(pick_weighted(w, 0), Some(0));
        assert_eq!(pick_weighted(w, 49), Some(0));
        assert_eq!(pick_weighted(w, 50), Some(2));
        assert_eq!(pick_weighted(w, 79), Some(2));
        assert_eq!(pick_weighted(w, 80), Some(3));
        assert_eq!(pick_weighted(w, 99), Some(3));
        assert_eq!(pick_weighted(w, 100), None);
        assert_eq!(pick_weighted([], 0), None);
        // Every roll of the range lands on a weight in proportion to it.
        let mut hits = [0; 4];
        for roll in 0..100 {
            hits[pick_weighted(w, roll).unwrap_or(9)] += 1;
        }
        assert_eq!(hits, w);
    }

    fn meta(ns: &str, name: &str, rv: &str) -> Option<ObjectMeta> {
        Some(ObjectMeta { namespace: ns.into(), name: name.into(), resource_version: rv.into(), ..Default::default() })
    }

    fn target(revision: &str, percent: i32, tag: &str) -> TrafficTarget {
        TrafficTarget { revision_name: revision.into(), percent: Some(percent), tag: tag.into(), ..Default::default() }
    }

    struct Fixture {
        services: Writer<Service>,
        revisions: Writer<Revision>,
        endpoints: Writer<Endpoints>,
        nodes: Writer<Node>,
        registry: Registry,
    }

    impl Fixture {
        fn new() -> Fixture {
            let queue_limits = QueueLimits { floor: 10, cap: 10 };
            let registry =
                Registry::new(queue_limits, OutlierDetection::default(), Metrics::default(), Poker::disabled(), true);
            let nodes = Writer::new();
            nodes.upsert(node("node-1", "True", &["127.0.0.1", "node-1"], "1"));
            Fixture { services: Writer::new(), revisions: Writer::new(), endpoints: Writer::new(), nodes, registry }
        }

        fn service(&self, name: &str, rps: Option<i32>, traffic: Vec<TrafficTarget>, rv: &str) {
            self.services.upsert(Service {
                metadata: meta("default", name, rv),
                spec: Some(ServiceSpec { rate_limit_rps: rps, ..Default::default() }),
                status: Some(ServiceStatus { traffic, ..Default::default() }),
                ..Default::default()
            });
        }

        fn build(&mut self) -> Table {
            let sources = Sources {
                services: self.services.store(),
                revisions: self.revisions.store(),
                endpoints: self.endpoints.store(),
                nodes: self.nodes.store(),
            };
            self.registry.build(&sources)
        }
    }

    /// A Node whose Ready condition is `ready`, at `addresses`.
    fn node(name: &str, ready: &str, addresses: &[&str], rv: &str) -> Node {
        use stratus_api::v1::{Condition, NodeAddress, NodeStatus};
        let addresses =
            addresses.iter().map(|a| NodeAddress { r#type: "InternalIP".into(), address: a.to_string() }).collect();
        let conditions = vec![Condition { r#type: "Ready".into(), status: ready.into(), ..Default::default() }];
        Node {
            metadata: meta("", name, rv),
            status: Some(NodeStatus { addresses, conditions, ..Default::default() }),
            ..Default::default()
        }
    }

    fn address(address: &str, node: &str) -> EndpointAddress {
        EndpointAddress { address: address.into(), node_name: node.into(), ..Default::default() }
    }

    /// An address of node `node` whose instance also has the container address `container`.
    fn with_container(address: &str, node: &str, container: &str) -> EndpointAddress {
        EndpointAddress { container_address: container.into(), ..self::address(address, node) }
    }

    /// The Endpoints of revision `default/hello-1`, with `addresses`.
    fn hello_endpoints(addresses: Vec<EndpointAddress>) -> Endpoints {
        Endpoints {
            metadata: meta("default", "hello-1", "4"),
            spec: Some(EndpointsSpec { revision_name: "hello-1".into(), addresses }),
            ..Default::default()
        }
    }

    /// A node at `host` (its Ready condition `ready`) that published the instance networks
    /// `cidrs`.
    fn advertising(name: &str, ready: &str, host: &str, cidrs: &[&str]) -> Node {
        let mut node = node(name, ready, &[host], "2");
        if let Some(s) = node.status.as_mut() {
            s.instance_cidrs = cidrs.iter().map(ToString::to_string).collect();
        }
        node
    }

    /// The settings of revision `default/hello-1` from what `f` caches, with the addresses
    /// left out (sorted), and the instance networks they were built with.
    fn hello_settings(f: &Fixture) -> (PoolSettings, Vec<String>, InstanceNetworks) {
        let sources = Sources {
            services: f.services.store(),
            revisions: f.revisions.store(),
            endpoints: f.endpoints.store(),
            nodes: f.nodes.store(),
        };
        let (known, mut refused) = (HashSet::new(), HashSet::new());
        let networks = InstanceNetworks::of(&sources.nodes);
        let revision = ObjectRef::new("default", "hello-1");
        let settings = pool_settings(&revision, "hello", &sources, &networks, &known, &mut refused);
        let mut refused: Vec<String> = refused.into_iter().map(|(_, a)| a).collect();
        refused.sort();
        (settings, refused, networks)
    }

    fn routed(table: &Table, host: &str) -> Option<(String, Option<String>)> {
        let route = table.route(host, "localhost")?;
        Some((route.service.key.to_string(), route.pinned.as_ref().map(|p| p.key().name.clone())))
    }

    #[test]
    fn hosts_resolve_to_services_and_tags() {
        let mut f = Fixture::new();
        f.service("hello", None, vec![target("hello-1", 100, "stable"), target("hello-2", 0, "canary")], "1");
        f.service("canary-hello", None, vec![target("other-1", 100, "")], "2");
        let table = f.build();
        assert_eq!(routed(&table, "hello.default.localhost"), Some(("default/hello".into(), None)));
        assert_eq!(
            routed(&table, "stable-hello.default.localhost"),
            Some(("default/hello".into(), Some("hello-1".into())))
        );
        // A service named like a tagged host wins over the tag.
        assert_eq!(routed(&table, "canary-hello.default.localhost"), Some(("default/canary-hello".into(), None)));
        assert_eq!(routed(&table, "beta-hello.default.localhost"), None);
        assert_eq!(routed(&table, "hello.other.localhost"), None);
        let route = table.route("hello.default.localhost", "localhost").map(|r| r.revision());
        assert_eq!(route.flatten().map(|p| p.key().name.clone()), Some("hello-1".into()));
    }

    #[test]
    fn balancers_and_buckets_survive_rebuilds_and_follow_their_objects() {
        let mut f = Fixture::new();
        f.service("hello", Some(5), vec![target("hello-1", 100, "")], "1");
        f.revisions.upsert(Revision {
            metadata: meta("default", "hello-1", "2"),
            spec: Some(RevisionSpec { container_concurrency: Some(3), timeout_seconds: Some(7), ..Default::default() }),
            ..Default::default()
        });
        let address = |a: &str, p: &str| EndpointAddress { protocol: p.into(), ..address(a, "node-1") };
        f.endpoints.upsert(Endpoints {
            metadata: meta("default", "hello-1", "3"),
            spec: Some(EndpointsSpec {
                revision_name: "hello-1".into(),
                addresses: vec![address("127.0.0.1:1", "h2c"), address("not an address", "")],
            }),
            ..Default::default()
        });
        let first = f.build();
        let pool = |t: &Table| t.route("hello.default.localhost", "localhost").and_then(|r| r.revision());
        let p1 = pool(&first).map(|p| (Arc::as_ptr(&p), p.timeout(), p.demand().endpoints));
        assert!(matches!(p1, Some((_, t, 1)) if t == Duration::from_secs(7)), "the malformed address is skipped");
        let bucket =
            |t: &Table| t.route("hello.default.localhost", "localhost").and_then(|r| r.service.rate_limit.clone());
        let b1 = bucket(&first).map(|b| Arc::as_ptr(&b));

        f.service("hello", Some(9), vec![target("hello-1", 100, "")], "4");
        let second = f.build();
        assert_eq!(pool(&second).map(|p| Arc::as_ptr(&p)), p1.map(|p| p.0));
        assert_eq!(bucket(&second).map(|b| Arc::as_ptr(&b)), b1);
        assert_eq!(bucket(&second).map(|b| b.rate()), Some(9));

        f.service("hello", None, vec![target("hello-2", 100, "")], "5");
        let third = f.build();
        assert!(bucket(&third).is_none());
        assert_eq!(pool(&third).map(|p| p.key().name.clone()), Some("hello-2".into()));
        // Metering keeps hello-1's pool until its usage is reported and nothing holds it.
        assert_eq!(f.registry.pools().count(), 2, "hello-1 is kept while metering");
        f.registry.forget_settled();
        assert_eq!(f.registry.pools().count(), 2, "the old tables still hold hello-1");
        drop((first, second));
        f.registry.forget_settled();
        assert_eq!(f.registry.pools().count(), 1, "hello-1 is forgotten");
    }

    #[test]
    fn only_addresses_their_ready_node_published_become_endpoints() {
        let mut f = Fixture::new();
        f.service("hello", None, vec![target("hello-1", 100, "")], "1");
        f.nodes.upsert(node("node-2", "True", &["10.0.0.2"], "2"));
        f.nodes.upsert(node("sick", "False", &["10.0.0.3"], "3"));
        f.endpoints.upsert(hello_endpoints(vec![
            address("127.0.0.1:1", "node-1"),
            address("10.0.0.2:2", "node-2"),
            // Another host's port, under the name of a node that did not publish it.
            address("10.9.9.9:2379", "node-1"),
            address("127.0.0.1:3", "node-2"),
            address("10.0.0.3:4", "sick"),
            address("10.0.0.4:5", "gone"),
            address("127.0.0.1:6", ""),
        ]));
        let endpoints = |t: &Table| {
            let pool = t.route("hello.default.localhost", "localhost").and_then(|r| r.revision());
            pool.map_or(0, |p| p.demand().endpoints)
        };
        let refused = |f: &Fixture| {
            let mut r: Vec<String> = f.registry.refused.iter().map(|(_, a)| a.clone()).collect();
            r.sort();
            r
        };
        assert_eq!(endpoints(&f.build()), 2);
        assert_eq!(refused(&f), ["10.0.0.3:4", "10.0.0.4:5", "10.9.9.9:2379", "127.0.0.1:3", "127.0.0.1:6"]);

        // The check follows the nodes: one that becomes Ready vouches for its address, one that
        // stops being Ready no longer does.
        f.nodes.upsert(node("sick", "True", &["10.0.0.3"], "5"));
        f.nodes.upsert(node("node-2", "Unknown", &["10.0.0.2"], "6"));
        assert_eq!(endpoints(&f.build()), 2);
        assert_eq!(refused(&f), ["10.0.0.2:2", "10.0.0.4:5", "10.9.9.9:2379", "127.0.0.1:3", "127.0.0.1:6"]);
    }

    #[test]
    fn container_addresses_are_used_inside_the_instance_networks_their_node_published() {
        let f = Fixture::new();
        f.nodes.upsert(advertising("node-2", "True", "10.0.0.2", &["172.18.0.0/16", "not a network"]));
        f.endpoints.upsert(hello_endpoints(vec![
            with_container("10.0.0.2:30001", "node-2", "172.18.0.5:8080"),
            // Outside the node's instance networks: its published port instead.
            with_container("10.0.0.2:30002", "node-2", "10.9.9.9:2379"),
            with_container("10.0.0.2:30003", "node-2", "not an address"),
            // A node that published no instance network.
            with_container("127.0.0.1:30004", "node-1", "172.18.0.6:8080"),
            address("10.0.0.2:30005", "node-2"),
        ]));
        let (settings, refused, _) = hello_settings(&f);
        let used: Vec<&str> = settings.endpoints.iter().map(|e| &*e.address).collect();
        assert_eq!(used, ["172.18.0.5:8080", "10.0.0.2:30002", "10.0.0.2:30003", "127.0.0.1:30004", "10.0.0.2:30005"]);
        assert_eq!(refused, ["10.9.9.9:2379", "172.18.0.6:8080", "not an address"]);
    }

    /// Two nodes that published the same instance network (Docker's default subnet on two
    /// hosts) make their containers' addresses ambiguous: both go through their published
    /// ports. A third node's network elsewhere, or a node that is not Ready, takes nothing from
    /// the others.
    #[test]
    fn container_addresses_in_a_network_two_nodes_published_are_not_used() {
        let f = Fixture::new();
        for (name, host, cidr) in [
            ("node-2", "10.0.0.2", "172.17.0.0/16"),
            ("node-3", "10.0.0.3", "172.17.0.0/16"),
            ("node-4", "10.0.0.4", "172.19.0.0/16"),
        ] {
            f.nodes.upsert(advertising(name, "True", host, &[cidr]));
        }
        // A node that is not Ready (gone, renamed) takes nothing from the others.
        f.nodes.upsert(advertising("stale", "Unknown", "10.0.0.9", &["172.19.0.0/16"]));
        f.endpoints.upsert(hello_endpoints(vec![
            with_container("10.0.0.2:30001", "node-2", "172.17.0.5:8080"),
            with_container("10.0.0.3:30001", "node-3", "172.17.0.5:8080"),
            with_container("10.0.0.4:30001", "node-4", "172.19.0.5:8080"),
        ]));
        let (settings, refused, networks) = hello_settings(&f);
        let used: Vec<&str> = settings.endpoints.iter().map(|e| &*e.address).collect();
        assert_eq!(used, ["10.0.0.2:30001", "10.0.0.3:30001", "172.19.0.5:8080"]);
        assert_eq!(refused, ["172.17.0.5:8080"]);
        let why = container_unvouched("172.17.0.5:8080", "node-2", &networks).unwrap_or_default();
        assert!(why.contains("also in node node-3's instance network 172.17.0.0/16"), "{why}");
    }

    #[test]
    fn unresolved_latest_targets_follow_the_latest_ready_revision() {
        let mut f = Fixture::new();
        let latest = TrafficTarget { latest_revision: Some(true), percent: Some(100), ..Default::default() };
        f.services.upsert(Service {
            metadata: meta("default", "hello", "1"),
            status: Some(ServiceStatus {
                latest_ready_revision_name: "hello-3".into(),
                traffic: vec![latest],
                ..Default::default()
            }),
            ..Default::default()
        });
        let table = f.build();
        let route = table.route("hello.default.localhost", "localhost").and_then(|r| r.revision());
        assert_eq!(route.map(|p| p.key().name.clone()), Some("hello-3".into()));
    }

    #[test]
    fn only_a_ready_false_with_a_lasting_reason_means_cannot_start() {
        use stratus_api::v1::{Condition, RevisionStatus};
        let rev = |status: &str, reason: &str, message: &str| Revision {
            metadata: meta("default", "hello-00001", "1"),
            status: Some(RevisionStatus {
                conditions: vec![Condition {
                    r#type: "Ready".into(),
                    status: status.into(),
                    reason: reason.into(),
                    message: message.into(),
                    ..Default::default()
                }],
                ..Default::default()
            }),
            ..Default::default()
        };
        let text = |r: &Revision| cannot_start(r).map(|t| t.to_string());
        assert_eq!(
            text(&rev("False", "ContainerMissing", "127.0.0.1:5000/nope:v1: manifest unknown")).as_deref(),
            Some("revision hello-00001 cannot start: ContainerMissing: 127.0.0.1:5000/nope:v1: manifest unknown")
        );
        assert_eq!(
            text(&rev("False", "ExitCode3", "")).as_deref(),
            Some("revision hello-00001 cannot start: ExitCode3")
        );
        for (status, reason) in
            [("False", "Deploying"), ("False", "ContainersNotReady"), ("False", ""), ("Unknown", "x"), ("True", "")]
        {
            assert_eq!(text(&rev(status, reason, "m")), None, "{status} {reason}");
        }
        assert_eq!(cannot_start(&Revision::default()), None);
    }
}

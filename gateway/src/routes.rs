//! The routing table: which host goes to which revisions, built from the informer caches.
//!
//! A [`Table`] is immutable. Every change of a Service, Revision or Endpoints builds a new one,
//! which replaces the old one for the requests that start after it; requests already routed keep
//! theirs. What must outlive a table (each revision's balancer state, each service's token
//! bucket) lives in the [`Registry`] and is shared by the tables that name it.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use http::uri::Authority;
use rand::Rng;
use stratus_api::defaults;
use stratus_api::v1::{Endpoints, Revision, Service};
use stratus_client::runtime::{ObjectRef, Store};
use tokio::time::Instant;
use tracing::warn;

use crate::metrics::Metrics;
use crate::poke::Poker;
use crate::pool::{EndpointSpec, OutlierDetection, PoolSettings, Protocol, QueueLimits, RevisionPool};
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
}

/// The caches a table is built from.
#[derive(Clone)]
pub(crate) struct Sources {
    pub services: Store<Service>,
    pub revisions: Store<Revision>,
    pub endpoints: Store<Endpoints>,
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
    ) -> Registry {
        Registry { queue_limits, outliers, metrics, poker, pools: HashMap::new(), limits: HashMap::new() }
    }

    /// The balancers of every routed revision.
    pub(crate) fn pools(&self) -> impl Iterator<Item = &Arc<RevisionPool>> {
        self.pools.values()
    }

    /// Builds the table of the caches' current contents, updating the balancers and buckets it
    /// names and forgetting those no Service names any more.
    pub(crate) fn build(&mut self, sources: &Sources) -> Table {
        let now = Instant::now();
        let mut table = Table::default();
        let mut pools = HashMap::new();
        let mut limits = HashMap::new();
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
                        let pool = self.pool(&revision, sources);
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
        self.pools = pools;
        self.limits = limits;
        table
    }

    /// The balancer of `revision`, created if new, with its settings brought up to date.
    fn pool(&mut self, revision: &ObjectRef, sources: &Sources) -> Arc<RevisionPool> {
        let settings = pool_settings(revision, sources);
        let pool = match self.pools.get(revision) {
            Some(pool) => Arc::clone(pool),
            None => Arc::new(RevisionPool::new(
                revision.clone(),
                self.queue_limits,
                self.outliers.clone(),
                self.metrics.pool_metrics(revision),
                Arc::clone(&self.poker),
                settings.timeout,
            )),
        };
        pool.configure(settings);
        pool
    }
}

/// A revision's balancer settings from its Revision (defaults until it is cached) and Endpoints.
fn pool_settings(revision: &ObjectRef, sources: &Sources) -> PoolSettings {
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
            if a.address.parse::<Authority>().is_err() {
                warn!(endpoints = %ObjectRef::from_obj(eps.as_ref()), address = a.address, "skipping a malformed address");
                continue;
            }
            let protocol = match a.protocol.as_str() {
                "h2c" => Protocol::H2c,
                "" => declared,
                _ => Protocol::Http1,
            };
            endpoints.push(EndpointSpec { address: Arc::from(a.address.as_str()), protocol });
        }
    }
    PoolSettings {
        concurrency: u32::try_from(concurrency).unwrap_or(0),
        timeout: Duration::from_secs(u64::try_from(timeout).unwrap_or(1).max(1)),
        max_instances: u32::try_from(max_instances).unwrap_or(1).max(1),
        failure,
        endpoints,
    }
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
        registry: Registry,
    }

    impl Fixture {
        fn new() -> Fixture {
            let queue_limits = QueueLimits { floor: 10, cap: 10 };
            let registry =
                Registry::new(queue_limits, OutlierDetection::default(), Metrics::default(), Poker::disabled());
            Fixture { services: Writer::new(), revisions: Writer::new(), endpoints: Writer::new(), registry }
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
            };
            self.registry.build(&sources)
        }
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
        let address =
            |a: &str, p: &str| EndpointAddress { address: a.into(), protocol: p.into(), ..Default::default() };
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
        assert_eq!(f.registry.pools().count(), 1, "hello-1 is forgotten");
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

//! A cluster without agents, for the tests of the scheduler, endpoints and nodes controllers: a
//! real in-process API server, and Nodes, Leases and Instances written by hand as agents and the
//! revisions controller would write them.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)] // each test file uses a part

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use stratus_api::v1::{
    Condition, Container, ContainerPort, Event, Instance, InstanceSpec, InstanceStatus, Lease, LeaseSpec, Namespace,
    Node, NodeStatus, ResourceRequirements,
};
use stratus_api::{Resource, Timestamp};
use stratus_apiserver::testing::TestServer;
use stratus_client::runtime::ApiWriter;
use stratus_client::{Client, Error, ListParams};
use stratus_controllers::context::NODE_LEASE_NAMESPACE;
use stratus_controllers::{Config, Context, Metrics};
use tokio::sync::watch;

/// Polls `check` every 20 ms (a condition with a deadline, not a guess at timing) until it
/// succeeds; panics with its last answer after [`PATIENCE`].
pub async fn eventually<T, F, Fut>(what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, String>>,
{
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        match check().await {
            Ok(v) => return v,
            Err(last) if tokio::time::Instant::now() >= deadline => {
                panic!("timed out waiting for {what}; last: {last}")
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
        }
    }
}

/// The longest any wait takes before the test fails.
pub const PATIENCE: Duration = Duration::from_secs(30);

pub const NAMESPACE: &str = "default";

pub struct Cluster {
    _server: TestServer,
    pub client: Client,
    stop: watch::Sender<bool>,
}

impl Cluster {
    pub async fn start() -> Cluster {
        let server = TestServer::start().await;
        let client = Client::new(&server.endpoint).unwrap().with_token(&server.token);
        let (stop, _) = watch::channel(false);
        Cluster { _server: server, client, stop }
    }

    /// A fresh Context (its own informers and metrics), as one controller replica has.
    pub fn context(&self, node_grace: Duration) -> Arc<Context> {
        let config = Config { node_grace, ..Default::default() };
        Context::new(self.client.clone(), config, Arc::new(Metrics::default()))
    }

    /// [`Cluster::context`] whose controllers write through `writer` (see `Context::writer`),
    /// reporting to `metrics`.
    pub fn context_writing_through(
        &self,
        node_grace: Duration,
        metrics: Arc<Metrics>,
        writer: Arc<dyn ApiWriter>,
    ) -> Arc<Context> {
        let config = Config { node_grace, ..Default::default() };
        Context::builder(self.client.clone(), config, metrics).writer(writer).start()
    }

    /// Resolves when the cluster is dropped: the shutdown of the controllers a test runs.
    pub fn shutdown(&self) -> impl Future<Output = ()> + Send + 'static {
        let mut rx = self.stop.subscribe();
        async move {
            let _ = rx.wait_for(|stopped| *stopped).await;
        }
    }

    /// Registers a Ready node with this allocatable (and room for 110 instances).
    pub async fn add_node(&self, name: &str, cpu: &str, memory: &str) -> Node {
        let mut node = Node::default();
        node.meta_mut().name = name.into();
        let mut node = self.client.create(node).await.unwrap();
        let quantities = [("cpu", cpu), ("memory", memory), ("instances", "110")]
            .into_iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect::<std::collections::BTreeMap<_, _>>();
        node.status = Some(NodeStatus {
            capacity: quantities.clone(),
            allocatable: quantities,
            conditions: vec![ready_condition(true)],
            ..Default::default()
        });
        self.client.update_status(node).await.unwrap()
    }

    /// Reports the node Ready or not, as its agent does.
    pub async fn set_node_ready(&self, name: &str, ready: bool) {
        let mut node: Node = self.client.get("", name).await.unwrap();
        let status = node.status.get_or_insert_with(Default::default);
        status.conditions.retain(|c| c.r#type != "Ready");
        status.conditions.push(ready_condition(ready));
        self.client.update_status(node).await.unwrap();
    }

    /// Renews the node's Lease now (creating it, and its namespace, if needed), as its agent
    /// does.
    pub async fn renew_lease(&self, node: &str, duration_seconds: i32) {
        renew_lease(&self.client, node, duration_seconds).await;
    }

    /// Creates an Instance of `revision` requesting `cpu` and `memory`, as the revisions
    /// controller does (pending unless `node` is given).
    pub async fn create_instance(&self, name: &str, revision: &str, cpu: &str, memory: &str, node: &str) -> Instance {
        self.client.create(instance(name, revision, cpu, memory, node)).await.unwrap()
    }

    pub async fn instance(&self, name: &str) -> Instance {
        self.client.get(NAMESPACE, name).await.unwrap()
    }

    /// Sets an Instance's status through `f`, retrying on conflicts (the agent's writes).
    pub async fn update_instance_status(&self, name: &str, f: impl Fn(&mut InstanceStatus)) -> Instance {
        loop {
            let mut inst = self.instance(name).await;
            f(inst.status.get_or_insert_with(Default::default));
            match self.client.update_status(inst).await {
                Ok(inst) => return inst,
                Err(Error::Conflict(_)) => continue,
                Err(e) => panic!("updating the status of {name}: {e}"),
            }
        }
    }

    /// Every Instance, read from the API server.
    pub async fn instances(&self) -> Vec<Instance> {
        self.client.list_all::<Instance>(&ListParams::default()).await.unwrap().items
    }

    /// The Events about the object named `name` with this reason.
    pub async fn events(&self, name: &str, reason: &str) -> Vec<Event> {
        let params = ListParams { namespace: NAMESPACE.into(), ..Default::default() };
        let events = self.client.list_all::<Event>(&params).await.unwrap().items;
        events
            .into_iter()
            .filter(|e| {
                let spec = e.spec.clone().unwrap_or_default();
                spec.reason == reason && spec.involved_object.is_some_and(|o| o.name == name)
            })
            .collect()
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let _ = self.stop.send(true);
    }
}

/// Polls `check` every 20 ms until it gives a value; fails the test after [`PATIENCE`], saying
/// what was awaited and the last thing seen.
pub async fn wait_for<T, Fut>(what: &str, mut check: impl FnMut() -> Fut) -> T
where
    Fut: Future<Output = Result<T, String>>,
{
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        let last = match check().await {
            Ok(v) => return v,
            Err(last) => last,
        };
        if tokio::time::Instant::now() > deadline {
            panic!("timed out waiting for {what}; last seen: {last}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// How many reconciles of `controller` succeeded, from its metrics.
pub fn reconciles(metrics: &Metrics, controller: &str) -> u64 {
    reconciles_with(metrics, controller, "ok")
}

/// How many reconciles of `controller` ended with `result` ("ok" or "error"), from its metrics.
pub fn reconciles_with(metrics: &Metrics, controller: &str, result: &str) -> u64 {
    let prefix = format!("stratus_controllers_reconciles_total{{controller=\"{controller}\",result=\"{result}\"}} ");
    metrics.encode().lines().find_map(|l| l.strip_prefix(&prefix)?.trim().parse().ok()).unwrap_or(0)
}

/// Renews `node`'s Lease now, creating it (and its namespace) if needed, as its agent does.
pub async fn renew_lease(client: &Client, node: &str, duration_seconds: i32) {
    let spec = LeaseSpec {
        holder_identity: node.into(),
        lease_duration_seconds: duration_seconds,
        renew_time: Some(now()),
        ..Default::default()
    };
    match client.get::<Lease>(NODE_LEASE_NAMESPACE, node).await {
        Ok(mut lease) => {
            lease.spec = Some(spec);
            client.update(lease).await.unwrap();
        }
        Err(Error::NotFound(_)) => {
            let mut ns = Namespace::default();
            ns.meta_mut().name = NODE_LEASE_NAMESPACE.into();
            match client.create(ns).await {
                Ok(_) | Err(Error::AlreadyExists(_)) => {}
                Err(e) => panic!("creating the lease namespace: {e}"),
            }
            let mut lease = Lease { spec: Some(spec), ..Default::default() };
            lease.meta_mut().name = node.into();
            lease.meta_mut().namespace = NODE_LEASE_NAMESPACE.into();
            client.create(lease).await.unwrap();
        }
        Err(e) => panic!("reading the lease of {node}: {e}"),
    }
}

pub fn instance(name: &str, revision: &str, cpu: &str, memory: &str, node: &str) -> Instance {
    let mut inst = Instance::default();
    let meta = inst.meta_mut();
    meta.name = name.into();
    meta.namespace = NAMESPACE.into();
    meta.labels.insert("stratus.dev/service".into(), "web".into());
    meta.labels.insert("stratus.dev/revision".into(), revision.into());
    let quantities = [("cpu", cpu), ("memory", memory)].into_iter().map(|(k, v)| (k.to_string(), v.to_string()));
    inst.spec = Some(InstanceSpec {
        service_name: "web".into(),
        revision_name: revision.into(),
        node_name: node.into(),
        containers: vec![Container {
            name: "user-container".into(),
            image: "127.0.0.1:5000/hello:v1".into(),
            ports: vec![ContainerPort { name: "http1".into(), container_port: 8080, protocol: "TCP".into() }],
            resources: Some(ResourceRequirements { requests: quantities.collect(), limits: Default::default() }),
            ..Default::default()
        }],
        container_concurrency: 80,
        timeout_seconds: 300,
        termination_grace_period_seconds: 10,
        cpu_throttling: None,
        startup_cpu_boost: None,
    });
    inst
}

pub fn ready_condition(ready: bool) -> Condition {
    Condition {
        r#type: "Ready".into(),
        status: if ready { "True" } else { "False" }.into(),
        reason: if ready { "AgentReady" } else { "RuntimeUnavailable" }.into(),
        ..Default::default()
    }
}

pub fn condition<'a>(conditions: &'a [Condition], kind: &str) -> Option<&'a Condition> {
    conditions.iter().find(|c| c.r#type == kind)
}

pub fn node_of(inst: &Instance) -> &str {
    inst.spec.as_ref().map(|s| s.node_name.as_str()).unwrap_or_default()
}

pub fn status_of(inst: &Instance) -> InstanceStatus {
    inst.status.clone().unwrap_or_default()
}

fn now() -> Timestamp {
    let d = SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).unwrap();
    Timestamp { seconds: i64::try_from(d.as_secs()).unwrap(), nanos: i32::try_from(d.subsec_nanos()).unwrap() }
}

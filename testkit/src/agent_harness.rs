//! A node agent under test: an in-process API server and the agent's real loops and reconciler
//! over any [`Runtime`] — the fake one for the agent's own tests, Docker for the end-to-end
//! ones — with the helpers to create Instances and wait on what the agent makes of them.

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use stratus_agent::AgentConfig;
use stratus_agent::runtime::Runtime;
use stratus_api::Resource;
use stratus_api::v1::{Container, ContainerPort, Instance, InstanceSpec, InstanceStatus, ResourceRequirements};
use stratus_apiserver::testing::TestServer;
use stratus_client::{Client, ListParams, WatchEvent};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// How a harness runs: the agent's configuration and what differs with the runtime's speed.
#[derive(Clone, Debug)]
pub struct HarnessConfig {
    /// The agent's configuration; its `node_name` is the node the harness's Instances go to.
    pub agent: AgentConfig,
    /// How long [`AgentHarness::wait_for`] waits before it fails the test.
    pub patience: Duration,
    /// The `terminationGracePeriodSeconds` of the Instances [`AgentHarness::create`] makes.
    pub termination_grace_period_seconds: i32,
}

/// An API server of its own and a node agent running against it on `runtime`. The agent can be
/// stopped and started again over the same runtime, as a restarted agent would find it.
/// Dropping the harness shuts the server down and tells the agent to stop.
pub struct AgentHarness<R: Runtime> {
    _server: TestServer,
    /// A client of the harness's API server.
    pub client: Client,
    /// What the agent runs as: the service account of its node.
    agent_client: Client,
    /// The runtime the agent runs on, for the test to drive and inspect.
    pub runtime: Arc<R>,
    /// What [`AgentHarness::run_agent`] starts the agent with.
    pub cfg: AgentConfig,
    patience: Duration,
    termination_grace_period_seconds: i32,
    stop: Option<oneshot::Sender<()>>,
    agent: Option<JoinHandle<()>>,
}

impl<R: Runtime> AgentHarness<R> {
    /// Starts an in-process API server and the agent on `runtime`.
    pub async fn start(runtime: R, config: HarnessConfig) -> AgentHarness<R> {
        let server = TestServer::start().await;
        let client = Client::new(&server.endpoint).expect("a client of the test server").with_token(&server.token);
        // The agent is itself: a service account confined to its node, as in a real cluster.
        let node = config.agent.node_name.clone();
        let agent_token = server
            .identity
            .component_token(&format!("node-{node}"), stratus_api::identity::roles::SYSTEM_AGENT, &node)
            .await
            .expect("the agent's service account");
        let agent_client = client.with_credentials(stratus_client::Credentials::Source(agent_token));
        let mut h = AgentHarness {
            _server: server,
            client,
            agent_client,
            runtime: Arc::new(runtime),
            cfg: config.agent,
            patience: config.patience,
            termination_grace_period_seconds: config.termination_grace_period_seconds,
            stop: None,
            agent: None,
        };
        h.run_agent();
        h
    }

    /// The name of the agent's node.
    pub fn node(&self) -> &str {
        &self.cfg.node_name
    }

    /// Starts the agent (again) with `cfg`, over the harness's runtime.
    pub fn run_agent(&mut self) {
        let (stop, stopped) = oneshot::channel::<()>();
        let runtime: Arc<dyn Runtime> = self.runtime.clone();
        self.agent = Some(tokio::spawn(stratus_agent::agent::run(
            self.cfg.clone(),
            self.agent_client.clone(),
            runtime,
            None,
            async move {
                let _ = stopped.await;
            },
        )));
        self.stop = Some(stop);
    }

    /// Stops the agent and waits until it has ended; its containers stay as they are.
    ///
    /// # Panics
    /// When the agent panicked.
    pub async fn stop_agent(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(agent) = self.agent.take() {
            agent.await.expect("the agent ends without a panic");
        }
    }

    /// Creates the Instance `default/name` of the service `hello` (revision `hello-00001`) on
    /// the agent's node: one container of `image` with `args`, serving HTTP on 8080, limited to
    /// 500m of CPU and `memory`.
    pub async fn create(&self, name: &str, image: &str, args: &[&str], memory: &str) -> Instance {
        self.create_with(name, container(image, args, memory)).await
    }

    /// Creates the Instance `default/name` as [`AgentHarness::create`] does, with `container`
    /// (see [`container`]) as its one container.
    pub async fn create_with(&self, name: &str, container: Container) -> Instance {
        self.client.create(self.instance_with(name, container)).await.expect("create the instance")
    }

    /// The Instance [`AgentHarness::create`] makes, not created yet, for a test to change first.
    pub fn instance(&self, name: &str, image: &str, args: &[&str], memory: &str) -> Instance {
        self.instance_with(name, container(image, args, memory))
    }

    /// The Instance [`AgentHarness::create_with`] makes, not created yet.
    pub fn instance_with(&self, name: &str, container: Container) -> Instance {
        let mut inst = Instance::default();
        inst.meta_mut().name = name.into();
        inst.meta_mut().namespace = "default".into();
        inst.spec = Some(InstanceSpec {
            service_name: "hello".into(),
            revision_name: "hello-00001".into(),
            node_name: self.cfg.node_name.clone(),
            containers: vec![container],
            container_concurrency: 80,
            timeout_seconds: 300,
            termination_grace_period_seconds: self.termination_grace_period_seconds,
            cpu_throttling: None,
            startup_cpu_boost: None,
        });
        inst
    }

    /// [`wait_for`] with the harness's client and patience.
    pub async fn wait_for(&self, name: &str, what: &str, f: impl Fn(&Instance) -> bool) -> Instance {
        wait_for(&self.client, name, what, self.patience, f).await
    }
}

/// The container [`AgentHarness::create`] gives an Instance: `image` with `args`, serving HTTP on
/// 8080, limited to 500m of CPU and `memory`.
pub fn container(image: &str, args: &[&str], memory: &str) -> Container {
    Container {
        image: image.into(),
        args: args.iter().map(|a| a.to_string()).collect(),
        ports: vec![ContainerPort { container_port: 8080, name: "http1".into(), protocol: "TCP".into() }],
        resources: Some(ResourceRequirements {
            limits: [("cpu".to_string(), "500m".to_string()), ("memory".to_string(), memory.to_string())].into(),
            requests: Default::default(),
        }),
        image_pull_policy: "IfNotPresent".into(),
        ..Default::default()
    }
}

/// Waits until the Instance `default/name` satisfies `f`, watching it (no polling), and
/// returns it.
///
/// # Panics
/// When it does not within `patience`, naming `what` it never got and its last status.
pub async fn wait_for(
    client: &Client,
    name: &str,
    what: &str,
    patience: Duration,
    f: impl Fn(&Instance) -> bool,
) -> Instance {
    let params = ListParams { field_selector: format!("metadata.name={name}"), ..Default::default() };
    let mut w = client.watch::<Instance>(&params, "", false).await.expect("watch the instance");
    let mut last = None;
    let found = tokio::time::timeout(patience, async {
        while let Some(ev) = w.next().await {
            if let WatchEvent::Added(i) | WatchEvent::Modified(i) = ev.expect("a watch event") {
                if f(&i) {
                    return Some(i);
                }
                last = Some(i);
            }
        }
        None
    })
    .await;
    match found {
        Ok(Some(i)) => i,
        _ => panic!("instance {name} never got {what}; last seen: {:#?}", last.map(|i| i.status)),
    }
}

/// The Instance's status, or the empty one.
pub fn status(i: &Instance) -> InstanceStatus {
    i.status.clone().unwrap_or_default()
}

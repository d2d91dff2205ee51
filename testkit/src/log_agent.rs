//! A node agent that serves only logs: the agent's real `stratus.v1.NodeAgent` log service on a
//! loopback port, over a fake runtime whose containers' lines and failures the test controls
//! (`fake.log`, `fake.set_unreachable`). With helpers to register its Node and to create the
//! Instances whose logs are asked for.

use std::collections::BTreeMap;
use std::sync::Arc;

use stratus_agent::logs::LogService;
use stratus_agent::runtime::fake::FakeRuntime;
use stratus_agent::runtime::{ContainerConfig, LogStream, labels};
use stratus_api::Resource;
use stratus_api::v1::{Container, Instance, InstanceSpec, Node, NodeStatus};
use stratus_client::Client;
use tokio::sync::oneshot;

/// The log service of node `node` on a loopback port; stops when dropped.
pub struct LogAgent {
    /// Where it listens, e.g. `http://127.0.0.1:40123`.
    pub endpoint: String,
    pub node: String,
    /// The runtime it reads from: containers, their lines, and whether it answers at all.
    pub fake: FakeRuntime,
    _stop: oneshot::Sender<()>,
}

impl LogAgent {
    /// Starts the log service of `node` over an empty fake runtime, answering anyone.
    pub async fn start(node: &str) -> LogAgent {
        LogAgent::serve(node, None).await
    }

    /// Starts the log service of `node` answering only the API server, as a real agent does:
    /// tokens are reviewed with the API through `client`.
    pub async fn start_reviewed(node: &str, client: &Client) -> LogAgent {
        let roles = &[stratus_api::identity::roles::SYSTEM_APISERVER];
        LogAgent::serve(node, Some(Arc::new(stratus_client::review::TokenReview::new(client.clone(), roles)))).await
    }

    async fn serve(node: &str, review: Option<Arc<stratus_client::review::TokenReview>>) -> LogAgent {
        let fake = FakeRuntime::new();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind a loopback port");
        let addr = listener.local_addr().expect("local address");
        let (stop, stopped) = oneshot::channel::<()>();
        let mut service = LogService::new(Arc::new(fake.clone()), node.to_string());
        if let Some(review) = review {
            service = service.with_review(review);
        }
        let service = service.into_server();
        tokio::spawn(tonic::transport::Server::builder().add_service(service).serve_with_incoming_shutdown(
            tonic::transport::server::TcpIncoming::from(listener),
            async {
                let _ = stopped.await;
            },
        ));
        LogAgent { endpoint: format!("http://{addr}"), node: node.to_string(), fake, _stop: stop }
    }

    /// Registers this agent's Node with the server behind `client`, as an agent does.
    pub async fn register(&self, client: &Client) {
        register_node(client, &self.node, &self.endpoint).await;
    }

    /// A running container of `instance` on this node that has written `lines` to stdout;
    /// returns its id.
    pub fn run(&self, instance: &Instance, lines: &[&str]) -> String {
        run_container(&self.fake, &self.node, instance, lines)
    }
}

/// A running container of `instance` on `node`, labelled as the agent labels its own, that
/// has written `lines` to stdout; returns its id.
pub fn run_container(fake: &FakeRuntime, node: &str, instance: &Instance, lines: &[&str]) -> String {
    let meta = instance.meta();
    let labels: BTreeMap<String, String> = [
        (labels::NODE, node),
        (labels::NAMESPACE, meta.namespace.as_str()),
        (labels::INSTANCE, meta.name.as_str()),
        (labels::INSTANCE_UID, meta.uid.as_str()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    let config = ContainerConfig { name: meta.name.clone(), image: "img".into(), labels, ..Default::default() };
    let id = fake.insert(config, true);
    for line in lines {
        fake.log(&id, LogStream::Stdout, line);
    }
    id
}

/// Registers a Node whose agent listens at `endpoint`, as an agent does: create, then status.
pub async fn register_node(client: &Client, name: &str, endpoint: &str) {
    let mut node = Node::default();
    node.meta_mut().name = name.into();
    let mut node = client.create(node).await.expect("create the node");
    node.status = Some(NodeStatus { agent_endpoint: endpoint.into(), ..Default::default() });
    client.update_status(node).await.expect("set the node's agent endpoint");
}

/// Creates an Instance of `service` bound to `node` (none when empty), with one container of
/// the image `img`.
pub async fn create_instance(client: &Client, name: &str, service: &str, node: &str) -> Instance {
    let mut inst = Instance::default();
    inst.meta_mut().name = name.into();
    inst.spec = Some(InstanceSpec {
        service_name: service.into(),
        node_name: node.into(),
        containers: vec![Container { image: "img".into(), ..Default::default() }],
        ..Default::default()
    });
    client.create(inst).await.expect("create the instance")
}

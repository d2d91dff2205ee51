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
use stratus_api::v1::{Condition, Container, Instance, InstanceSpec, Node, NodeAddress, NodeStatus};
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

    /// Starts the log service of `node` over TLS, as an agent with a TLS identity serves it:
    /// with the certificate `ca` issues to node `certificate_of` (`node` itself, or another
    /// node's to test refusals), asking clients for one from `ca` and answering only the API
    /// server's. Its endpoint is `https://127.0.0.1:PORT`.
    pub async fn start_tls(node: &str, certificate_of: &str, ca: &stratus_auth::pki::Ca) -> LogAgent {
        use stratus_api::identity::{NODES_GROUP, node_user};
        let issued = ca
            .issue_client_and_server(
                &node_user(certificate_of),
                NODES_GROUP,
                &[certificate_of.to_string()],
                std::time::Duration::from_secs(3600),
            )
            .expect("a node's certificate");
        let identity = stratus_client::tls::ClientIdentity::new(issued.cert_pem.as_bytes(), issued.key_pem.as_bytes())
            .expect("the node's certificate is usable");
        let tls = stratus_agent::AgentTls { ca_pem: ca.cert_pem().to_string(), identity };
        let config = stratus_agent::server::tls_config(&tls).expect("the agent's TLS configuration");
        let fake = FakeRuntime::new();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind a loopback port");
        let addr = listener.local_addr().expect("local address");
        let (stop, stopped) = oneshot::channel::<()>();
        let service = LogService::new(Arc::new(fake.clone()), node.to_string()).with_apiserver_certificate();
        let routes = tonic::service::Routes::new(service.into_server()).prepare();
        tokio::spawn(stratus_support::server::serve_tower_with_peer(
            listener,
            Some(config),
            stratus_support::server::Limits::default(),
            async {
                let _ = stopped.await;
            },
            routes,
        ));
        LogAgent { endpoint: format!("https://{addr}"), node: node.to_string(), fake, _stop: stop }
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
/// The node is Ready, with the addresses of a node on this machine (InternalIP `127.0.0.1`,
/// where the test agents listen, and its name as Hostname), which the API server checks the
/// endpoint's host against before it dials.
pub async fn register_node(client: &Client, name: &str, endpoint: &str) {
    let mut node = Node::default();
    node.meta_mut().name = name.into();
    let mut node = client.create(node).await.expect("create the node");
    node.status = Some(node_status(name, endpoint));
    client.update_status(node).await.expect("set the node's agent endpoint");
}

/// The status [`register_node`] writes: Ready, at `127.0.0.1` and `name`, its agent at
/// `endpoint`.
pub fn node_status(name: &str, endpoint: &str) -> NodeStatus {
    let address = |r#type: &str, address: &str| NodeAddress { r#type: r#type.into(), address: address.into() };
    NodeStatus {
        agent_endpoint: endpoint.into(),
        addresses: vec![address("InternalIP", "127.0.0.1"), address("Hostname", name)],
        conditions: vec![Condition {
            r#type: "Ready".into(),
            status: "True".into(),
            reason: "AgentReady".into(),
            ..Default::default()
        }],
        ..Default::default()
    }
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

//! `stratus up`'s wiring of TLS between the parts: with the cluster CA in the process, the
//! agents serve TLS with their node's certificate, the API server dials them with its own, and
//! the autoscaler's demand service is served over TLS to gateways' certificates.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use stratus_agent::AgentConfig;
use stratus_agent::runtime::fake::FakeRuntime;
use stratus_agent::runtime::{LogStream, labels};
use stratus_api::Resource;
use stratus_api::v1::{Container, Instance, InstanceSpec};
use stratus_platform::tls::ServingTls;

/// How long any one step may take before the test fails rather than hangs.
const STEP: Duration = Duration::from_secs(30);

#[tokio::test]
async fn in_one_process_logs_come_from_an_agent_over_tls() {
    let dir = tempfile::tempdir().unwrap();
    let bind = || tokio::net::TcpListener::bind("127.0.0.1:0");
    let (api, agent, gateway) = (bind().await.unwrap(), bind().await.unwrap(), bind().await.unwrap());
    let tls = ServingTls::Issued {
        pki_dir: dir.path().join("pki"),
        names: vec!["127.0.0.1".into()],
        validity: Duration::from_secs(3600),
    };
    let fake = FakeRuntime::new();
    let mut config = AgentConfig::new("n1");
    config.node_status_interval = Duration::from_millis(200);
    let store = stratus_apiserver::StoreOptions::Embedded { data_dir: dir.path().join("data") };
    let platform = stratus_platform::Builder::serve_api(store, api)
        .api_tls(tls)
        .controllers(stratus_controllers::Config::default())
        .gateway(gateway, stratus_gateway::GatewayConfig::default())
        .agent(config, Arc::new(fake.clone()), Some(agent))
        .start()
        .await
        .unwrap();
    let autoscaler = platform.autoscaler.clone().unwrap_or_default();
    assert!(autoscaler.starts_with("https://"), "the demand service is served over TLS: {autoscaler}");

    // The node registers itself at an https:// endpoint.
    let client = platform.client.clone();
    let node = tokio::time::timeout(STEP, async {
        loop {
            if let Ok(node) = client.get::<stratus_api::v1::Node>("", "n1").await
                && stratus_api::node::not_ready_reason(&node).is_none()
            {
                return node;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await
    .expect("the node becomes Ready");
    let endpoint = node.status.map(|s| s.agent_endpoint).unwrap_or_default();
    assert!(endpoint.starts_with("https://"), "{endpoint}");

    // An Instance bound to the node, whose container writes a line.
    let mut inst = Instance::default();
    inst.meta_mut().name = "web-1".into();
    inst.meta_mut().namespace = "default".into();
    inst.spec = Some(InstanceSpec {
        service_name: "web".into(),
        node_name: "n1".into(),
        containers: vec![Container { image: "img".into(), ..Default::default() }],
        ..Default::default()
    });
    client.create(inst).await.unwrap();
    let id = tokio::time::timeout(STEP, async {
        loop {
            let made = fake
                .containers()
                .into_iter()
                .find(|c| c.config.labels.get(labels::INSTANCE).is_some_and(|i| i == "web-1"));
            if let Some(c) = made {
                return c.status.id;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await
    .expect("the agent makes the instance's container");
    fake.log(&id, LogStream::Stdout, "hello over tls");

    let lines = client.logs("Instance", "default", "web-1", false, None).await.unwrap();
    let lines: Vec<String> = lines.map(|l| l.unwrap().line).collect().await;
    assert!(lines.contains(&"hello over tls".to_string()), "{lines:?}");
    platform.stop();
    platform.stopped().await.unwrap();
}

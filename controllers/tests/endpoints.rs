//! The endpoints controller against a real API server: a Revision's Endpoints follow its
//! Instances as they become ready, unready and terminating.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod cluster;

use std::time::Duration;

use cluster::{Cluster, NAMESPACE, PATIENCE, wait_for};
use futures::StreamExt;
use stratus_api::Resource;
use stratus_api::v1::{Container, ContainerPort, Endpoints, Revision, RevisionSpec};
use stratus_client::{ListParams, WatchEvent};
use stratus_controllers::endpoints;

async fn create_revision(cluster: &Cluster, name: &str, port_name: &str) -> Revision {
    let mut rev = Revision {
        spec: Some(RevisionSpec {
            containers: vec![Container {
                image: "127.0.0.1:5000/hello:v1".into(),
                ports: vec![ContainerPort { name: port_name.into(), container_port: 8080, protocol: "TCP".into() }],
                ..Default::default()
            }],
            ..Default::default()
        }),
        ..Default::default()
    };
    rev.meta_mut().name = name.into();
    rev.meta_mut().namespace = NAMESPACE.into();
    rev.meta_mut().labels.insert("stratus.dev/service".into(), "web".into());
    cluster.client.create(rev).await.unwrap()
}

/// Waits until the revision's Endpoints lists exactly these (instance, address) pairs.
async fn wait_endpoints(cluster: &Cluster, revision: &str, want: &[(&str, &str)]) -> Endpoints {
    wait_for(&format!("the endpoints of {revision} to be {want:?}"), || async {
        let ep = match cluster.client.get::<Endpoints>(NAMESPACE, revision).await {
            Ok(ep) => ep,
            Err(e) => return Err(e.to_string()),
        };
        let spec = ep.spec.clone().unwrap_or_default();
        let got: Vec<(&str, &str)> =
            spec.addresses.iter().map(|a| (a.instance_name.as_str(), a.address.as_str())).collect();
        if got == want { Ok(ep.clone()) } else { Err(format!("{got:?}")) }
    })
    .await
}

async fn make_ready(cluster: &Cluster, name: &str, address: &str) {
    let address = address.to_string();
    cluster
        .update_instance_status(name, move |s| {
            s.phase = "Running".into();
            s.ready = true;
            s.address = address.clone();
        })
        .await;
}

#[tokio::test]
async fn endpoints_follow_ready_unready_and_terminating_instances() {
    let cluster = Cluster::start().await;
    let ctx = cluster.context(Duration::from_secs(15));
    tokio::spawn(endpoints::run(ctx.clone(), cluster.shutdown()));
    let rev = create_revision(&cluster, "web-00001", "h2c").await;

    // No instance yet: an empty Endpoints, owned by the revision.
    let ep = wait_endpoints(&cluster, "web-00001", &[]).await;
    let owner = &ep.meta().owner_references[0];
    assert_eq!(
        (owner.kind.as_str(), owner.name.as_str(), owner.uid.as_str()),
        ("Revision", "web-00001", rev.meta().uid.as_str())
    );
    assert!(owner.controller);
    assert_eq!(ep.meta().labels.get("stratus.dev/service").map(String::as_str), Some("web"));

    for (name, node) in [("web-a", "n1"), ("web-b", "n2"), ("web-c", "n1")] {
        cluster.create_instance(name, "web-00001", "100m", "64Mi", node).await;
    }
    // Another revision's ready instance never shows up here.
    cluster.create_instance("other-a", "web-00002", "100m", "64Mi", "n1").await;
    make_ready(&cluster, "other-a", "127.0.0.1:9000").await;

    make_ready(&cluster, "web-b", "127.0.0.1:9002").await;
    make_ready(&cluster, "web-a", "127.0.0.1:9001").await;
    let ep = wait_endpoints(&cluster, "web-00001", &[("web-a", "127.0.0.1:9001"), ("web-b", "127.0.0.1:9002")]).await;
    let spec = ep.spec.unwrap();
    assert_eq!(spec.revision_name, "web-00001");
    assert!(spec.addresses.iter().all(|a| a.protocol == "h2c"), "{:?}", spec.addresses);
    assert_eq!(spec.addresses[0].node_name, "n1");
    assert_eq!(spec.addresses[1].node_name, "n2");

    // A change that leaves the list alone writes nothing: the first write after it is the one
    // that takes web-b out.
    let current = cluster.client.get::<Endpoints>(NAMESPACE, "web-00001").await.unwrap();
    let params = ListParams {
        namespace: NAMESPACE.into(),
        field_selector: "metadata.name=web-00001".into(),
        ..Default::default()
    };
    let mut writes = cluster.client.watch::<Endpoints>(&params, &current.meta().resource_version, false).await.unwrap();
    cluster.update_instance_status("web-a", |s| s.restart_count += 1).await;
    cluster.update_instance_status("web-b", |s| s.ready = false).await;
    let next = tokio::time::timeout(PATIENCE, writes.next()).await.expect("a write").expect("the watch is open");
    let WatchEvent::Modified(written) = next.unwrap() else { panic!("not a modification") };
    let listed: Vec<_> = written.spec.unwrap().addresses.into_iter().map(|a| a.instance_name).collect();
    assert_eq!(listed, ["web-a"], "the endpoints were rewritten without a change");

    // Terminating (the agent's first step when deleting): out, though still ready for a moment.
    make_ready(&cluster, "web-c", "127.0.0.1:9003").await;
    wait_endpoints(&cluster, "web-00001", &[("web-a", "127.0.0.1:9001"), ("web-c", "127.0.0.1:9003")]).await;
    cluster.update_instance_status("web-c", |s| s.reason = "Terminating".into()).await;
    wait_endpoints(&cluster, "web-00001", &[("web-a", "127.0.0.1:9001")]).await;

    // Deleted: out.
    cluster.client.delete::<stratus_api::v1::Instance>(NAMESPACE, "web-a").await.unwrap();
    wait_endpoints(&cluster, "web-00001", &[]).await;
}

#[tokio::test]
async fn an_instance_being_deleted_leaves_the_endpoints_and_http1_is_the_default() {
    let cluster = Cluster::start().await;
    let ctx = cluster.context(Duration::from_secs(15));
    tokio::spawn(endpoints::run(ctx, cluster.shutdown()));
    create_revision(&cluster, "api-00001", "http1").await;

    let mut inst = cluster::instance("api-a", "api-00001", "100m", "64Mi", "n1");
    inst.meta_mut().finalizers.push("stratus.dev/agent".into());
    cluster.client.create(inst).await.unwrap();
    make_ready(&cluster, "api-a", "127.0.0.1:9100").await;
    let ep = wait_endpoints(&cluster, "api-00001", &[("api-a", "127.0.0.1:9100")]).await;
    assert_eq!(ep.spec.unwrap().addresses[0].protocol, "http1");

    // The finalizer keeps it, with a deletionTimestamp and its status untouched.
    cluster.client.delete::<stratus_api::v1::Instance>(NAMESPACE, "api-a").await.unwrap();
    wait_endpoints(&cluster, "api-00001", &[]).await;
    assert!(cluster.instance("api-a").await.status.unwrap().ready);
}

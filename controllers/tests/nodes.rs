//! The nodes controller against a real API server: Nodes whose Lease runs out are NotReady and
//! their Instances failed or released; Nodes whose agents keep renewing are left alone.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod cluster;

use std::time::Duration;

use cluster::{Cluster, NAMESPACE, condition, reconciles, status_of, wait_for};
use stratus_api::Resource;
use stratus_api::v1::{Instance, Node};
use stratus_client::Error;
use stratus_controllers::context::NODE_LEASE_NAMESPACE;
use stratus_controllers::nodes::{self, AGENT_FINALIZER};

/// Short, so that the tests wait about a second for a lease to run out.
const GRACE: Duration = Duration::from_secs(1);
const LEASE_SECONDS: i32 = 1;
/// The lease of a node whose agent keeps renewing (every 200 ms): long enough that a test
/// process starved of CPU for a second (two cores, CI's tests in parallel) does not let it run
/// out, which a 1 s lease did once in CI.
const RENEWED_LEASE_SECONDS: i32 = 3;

async fn ready_condition(cluster: &Cluster, node: &str) -> (String, String, String) {
    let node: Node = cluster.client.get("", node).await.unwrap();
    let conditions = node.status.unwrap_or_default().conditions;
    let c = condition(&conditions, "Ready").cloned().unwrap_or_default();
    (c.status, c.reason, c.message)
}

async fn run_instance(cluster: &Cluster, name: &str, node: &str, finalizer: bool) {
    let mut inst = cluster::instance(name, "web-00001", "100m", "64Mi", node);
    if finalizer {
        inst.meta_mut().finalizers.push(AGENT_FINALIZER.into());
    }
    cluster.client.create(inst).await.unwrap();
    cluster
        .update_instance_status(name, |s| {
            s.phase = "Running".into();
            s.ready = true;
            s.address = "127.0.0.1:9000".into();
        })
        .await;
}

/// Renews `node`'s lease (for [`RENEWED_LEASE_SECONDS`]) now and then every 200 ms, as its
/// agent would, until the cluster is dropped. The first renewal is done when this returns: a
/// controller started after it sees a lease (a renewal left to the task could come after the
/// controller's first check under load, and the node would be lost for having none).
async fn keep_renewing(cluster: &Cluster, node: &'static str) {
    cluster.renew_lease(node, RENEWED_LEASE_SECONDS).await;
    let client = cluster.client.clone();
    let shutdown = cluster.shutdown();
    tokio::spawn(async move {
        let renew = async {
            loop {
                tokio::time::sleep(Duration::from_millis(200)).await;
                cluster::renew_lease(&client, node, RENEWED_LEASE_SECONDS).await;
            }
        };
        tokio::select! {
            () = renew => {}
            () = shutdown => {}
        }
    });
}

#[tokio::test]
async fn a_node_whose_lease_expires_is_not_ready_and_its_instances_fail() {
    let cluster = Cluster::start().await;
    cluster.add_node("lost", "4", "8Gi").await;
    cluster.add_node("alive", "4", "8Gi").await;
    cluster.renew_lease("lost", LEASE_SECONDS).await;
    keep_renewing(&cluster, "alive").await;
    run_instance(&cluster, "on-lost", "lost", true).await;
    run_instance(&cluster, "leaving-lost", "lost", true).await;
    cluster.client.delete::<Instance>(NAMESPACE, "leaving-lost").await.unwrap();
    run_instance(&cluster, "on-alive", "alive", true).await;
    tokio::spawn(nodes::run(cluster.context(GRACE), cluster.shutdown()));

    let (_, reason, message) = wait_for("the lost node to be NotReady", || async {
        let c = ready_condition(&cluster, "lost").await;
        if c.0 == "False" { Ok(c) } else { Err(format!("{c:?}")) }
    })
    .await;
    assert_eq!(reason, "NodeLost");
    assert!(message.starts_with("the node agent stopped renewing its lease at "), "{message}");
    let events = wait_for("the NodeNotReady event", || async {
        let events = cluster.events("lost", "NodeNotReady").await;
        if events.is_empty() { Err("none".to_string()) } else { Ok(events) }
    })
    .await;
    assert_eq!(events[0].spec.clone().unwrap().r#type, "Warning");

    let failed = wait_for("the instance of the lost node to fail", || async {
        let status = status_of(&cluster.instance("on-lost").await);
        if status.phase == "Failed" { Ok(status) } else { Err(format!("{status:?}")) }
    })
    .await;
    assert!(!failed.ready);
    assert_eq!(failed.reason, "NodeLost");
    assert!(failed.message.starts_with("node lost is lost: "), "{}", failed.message);

    // The instance being deleted is released: nothing else would ever remove the finalizer.
    wait_for("the deleted instance of the lost node to go", || async {
        match cluster.client.get::<Instance>(NAMESPACE, "leaving-lost").await {
            Err(Error::NotFound(_)) => Ok(()),
            other => Err(format!("{other:?}")),
        }
    })
    .await;

    // The node whose agent renews is untouched, and so is what runs there.
    assert_eq!(ready_condition(&cluster, "alive").await.0, "True");
    let alive = status_of(&cluster.instance("on-alive").await);
    assert_eq!((alive.phase.as_str(), alive.ready), ("Running", true));
}

#[tokio::test]
async fn a_node_that_never_had_a_lease_is_lost_after_the_grace() {
    let cluster = Cluster::start().await;
    cluster.add_node("silent", "4", "8Gi").await;
    tokio::spawn(nodes::run(cluster.context(GRACE), cluster.shutdown()));
    let (_, reason, message) = wait_for("the node without a lease to be NotReady", || async {
        let c = ready_condition(&cluster, "silent").await;
        if c.0 == "False" { Ok(c) } else { Err(format!("{c:?}")) }
    })
    .await;
    assert_eq!(reason, "NodeStatusUnknown");
    assert!(message.contains("since it registered at"), "{message}");
}

#[tokio::test]
async fn a_renewed_lease_keeps_the_node_alone_and_the_agent_gets_the_last_word() {
    let cluster = Cluster::start().await;
    cluster.add_node("lost", "4", "8Gi").await;
    cluster.add_node("alive", "4", "8Gi").await;
    cluster.renew_lease("lost", LEASE_SECONDS).await;
    let started = tokio::time::Instant::now();
    keep_renewing(&cluster, "alive").await;
    let ctx = cluster.context(GRACE);
    tokio::spawn(nodes::run(ctx.clone(), cluster.shutdown()));

    // The lease left alone runs out; the renewed one does not, though the test goes on past
    // the time its first renewal would have run out (below).
    wait_for("the lost node to be NotReady", || async {
        let c = ready_condition(&cluster, "lost").await;
        if c.0 == "False" { Ok(()) } else { Err(format!("{c:?}")) }
    })
    .await;
    assert_eq!(ready_condition(&cluster, "alive").await.0, "True");

    // Its agent comes back: it renews the lease and reports Ready; the controller does not
    // fight it through later checks.
    let expired = ctx.node_leases.store().get(NODE_LEASE_NAMESPACE, "lost").unwrap().meta().resource_version.clone();
    keep_renewing(&cluster, "lost").await;
    wait_for("the controller to see the renewed lease", || async {
        let lease = ctx.node_leases.store().get(NODE_LEASE_NAMESPACE, "lost").unwrap();
        if lease.meta().resource_version != expired { Ok(()) } else { Err("not renewed".to_string()) }
    })
    .await;
    cluster.set_node_ready("lost", true).await;
    let seen = reconciles(&ctx.metrics, nodes::NAME);
    let first_renewal_ran_out = started + Duration::from_secs(RENEWED_LEASE_SECONDS.unsigned_abs().into()) + GRACE;
    wait_for("a few more checks of the nodes, past the first renewal's end", || async {
        let now = reconciles(&ctx.metrics, nodes::NAME);
        let past = tokio::time::Instant::now() >= first_renewal_ran_out;
        if now >= seen + 4 && past { Ok(()) } else { Err(format!("{now} reconciles")) }
    })
    .await;
    assert_eq!(ready_condition(&cluster, "lost").await.0, "True");
    assert_eq!(ready_condition(&cluster, "alive").await.0, "True");
}

//! Decisions on wall time follow the Context's clock, not the system's: with a `ManualClock`, a
//! test moves a Node past its lease, or a Revision past its pin wait and its progress deadline,
//! through the real controllers and a real API server, without waiting for either.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod cluster;

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use cluster::{Cluster, NAMESPACE, condition, reconciles, status_of, wait_for};
use stratus_api::Resource;
use stratus_api::v1::{Container, ContainerPort, Instance, Node, Revision, RevisionSpec};
use stratus_client::{Error, ListParams};
use stratus_controllers::clock::{self, Clock, ManualClock};
use stratus_controllers::revisions::{self, PIN_WAIT, PROGRESS_DEADLINE_EXCEEDED, REVISION_LABEL};
use stratus_controllers::services::SERVICE_LABEL;
use stratus_controllers::{Config, Context, Metrics, nodes};

/// Far longer than a test runs: only the manual clock can make this much time pass.
const LONG: Duration = Duration::from_secs(3600);

/// A Context whose controllers read the time from `clock`.
fn context(cluster: &Cluster, config: Config, clock: &Arc<ManualClock>) -> Arc<Context> {
    Context::builder(cluster.client.clone(), config, Arc::new(Metrics::default())).clock(clock.clone()).start()
}

/// Waits until `controller` has reconciled at least `count` times.
async fn wait_reconciles(ctx: &Context, controller: &str, count: u64) {
    wait_for(&format!("{count} reconciles of {controller}"), || async {
        let seen = reconciles(&ctx.metrics, controller);
        if seen >= count { Ok(()) } else { Err(format!("{seen} reconciles")) }
    })
    .await;
}

async fn node_ready(cluster: &Cluster, name: &str) -> (String, String) {
    let node: Node = cluster.client.get("", name).await.unwrap();
    let c = condition(&node.status.unwrap_or_default().conditions, "Ready").cloned().unwrap_or_default();
    (c.status, c.reason)
}

#[tokio::test]
async fn a_node_is_lost_when_the_clock_passes_its_lease_and_not_before() {
    let cluster = Cluster::start().await;
    cluster.add_node("n1", "4", "8Gi").await;
    cluster.renew_lease("n1", 10).await;
    cluster.create_instance("web-1", "web-00001", "100m", "64Mi", "n1").await;
    let started = clock::timestamp(SystemTime::now());
    cluster
        .update_instance_status("web-1", |s| {
            s.phase = "Running".into();
            s.ready = true;
            s.started_at = Some(started);
        })
        .await;
    // A grace of an hour: by the system's clock the node cannot be lost while the test runs.
    let clock = ManualClock::new(SystemTime::now());
    let ctx = context(&cluster, Config { node_grace: LONG, ..Config::default() }, &clock);
    tokio::spawn(nodes::run(ctx.clone(), cluster.shutdown()));

    // Checked, and left alone: by the clock, the lease was renewed a moment ago.
    wait_reconciles(&ctx, nodes::NAME, 1).await;
    assert_eq!(node_ready(&cluster, "n1").await.0, "True");

    // Two hours later by the clock (and a second or so by the system's): lost.
    clock.advance(2 * LONG);
    wait_for("the node to be lost", || async {
        let (status, reason) = node_ready(&cluster, "n1").await;
        if status == "False" { Ok(reason) } else { Err(format!("Ready={status} ({reason})")) }
    })
    .await;
    let failed = wait_for("its instance to fail", || async {
        let status = status_of(&cluster.instance("web-1").await);
        if status.phase == "Failed" { Ok(status) } else { Err(format!("{status:?}")) }
    })
    .await;
    assert_eq!(failed.reason, nodes::NODE_LOST);
    // It finished when the clock says, not when the system's clock does.
    assert_eq!(failed.finished_at, Some(clock::timestamp(clock.now())));
}

/// A Revision of service `web` serving `127.0.0.1:5000/hello:v1`, as the services controller
/// would make it, except that no services controller runs to pin its image.
fn revision(name: &str) -> Revision {
    let mut rev = Revision {
        spec: Some(RevisionSpec {
            containers: vec![Container {
                name: "user-container".into(),
                image: "127.0.0.1:5000/hello:v1".into(),
                ports: vec![ContainerPort { name: "http1".into(), container_port: 8080, protocol: "TCP".into() }],
                ..Default::default()
            }],
            ..Default::default()
        }),
        ..Default::default()
    };
    rev.meta_mut().name = name.into();
    rev.meta_mut().namespace = NAMESPACE.into();
    rev.meta_mut().labels.insert(SERVICE_LABEL.into(), "web".into());
    rev
}

/// Changes a label of the revision, so that its controller looks at it again now (it would
/// otherwise wait, by the system's clock, for the time it last computed).
async fn touch(cluster: &Cluster, name: &str, value: &str) {
    loop {
        let mut rev: Revision = cluster.client.get(NAMESPACE, name).await.unwrap();
        rev.meta_mut().labels.insert("touched".into(), value.into());
        match cluster.client.update(rev).await {
            Ok(_) => return,
            // The controller wrote its status meanwhile.
            Err(Error::Conflict(_)) => continue,
            Err(e) => panic!("touching revision {name}: {e}"),
        }
    }
}

async fn instances_of(cluster: &Cluster, revision: &str) -> Vec<Instance> {
    let params = ListParams {
        namespace: NAMESPACE.into(),
        label_selector: format!("{REVISION_LABEL}={revision}"),
        ..Default::default()
    };
    cluster.client.list_all::<Instance>(&params).await.unwrap().items
}

#[tokio::test]
async fn a_revision_waits_for_its_pin_and_fails_at_its_deadline_when_the_clock_says() {
    let cluster = Cluster::start().await;
    let clock = ManualClock::new(SystemTime::now());
    let ctx = context(&cluster, Config { progress_deadline: LONG, ..Config::default() }, &clock);
    tokio::spawn(revisions::run(ctx.clone(), cluster.shutdown()));
    cluster.client.create(revision("web-00001")).await.unwrap();

    // Its image is not pinned: its instance waits, for as long as the clock stands still.
    wait_reconciles(&ctx, "revisions", 1).await;
    touch(&cluster, "web-00001", "1").await;
    wait_reconciles(&ctx, "revisions", 2).await;
    assert!(instances_of(&cluster, "web-00001").await.is_empty(), "no instance within the pin wait");

    // Past the pin wait by the clock: the instance starts with the image as written.
    clock.advance(PIN_WAIT + Duration::from_secs(2));
    touch(&cluster, "web-00001", "2").await;
    wait_for("the revision's instance", || async {
        let n = instances_of(&cluster, "web-00001").await.len();
        if n == 1 { Ok(()) } else { Err(format!("{n} instances")) }
    })
    .await;

    // No agent runs, so it never becomes ready: past the deadline by the clock, the revision
    // fails and gives its instance back.
    clock.advance(LONG);
    touch(&cluster, "web-00001", "3").await;
    let ready = wait_for("the revision to fail", || async {
        let rev: Revision = cluster.client.get(NAMESPACE, "web-00001").await.map_err(|e| e.to_string())?;
        let c = condition(&rev.status.unwrap_or_default().conditions, "Ready").cloned().unwrap_or_default();
        if c.status == "False" { Ok(c) } else { Err(format!("Ready={} ({})", c.status, c.reason)) }
    })
    .await;
    assert_eq!(ready.reason, PROGRESS_DEADLINE_EXCEEDED);
    assert!(ready.message.contains("progress deadline (3600s)"), "{}", ready.message);
    wait_for("its instance to go", || async {
        let n = instances_of(&cluster, "web-00001").await.len();
        if n == 0 { Ok(()) } else { Err(format!("{n} instances")) }
    })
    .await;
}

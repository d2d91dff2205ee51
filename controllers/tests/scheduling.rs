//! The scheduler against a real API server: filtering, scoring, unschedulable Instances, and two
//! schedulers racing over the same Nodes.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod cluster;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use cluster::{Cluster, condition, node_of, reconciles_with, status_of, wait_for};
use futures::FutureExt;
use futures::future::BoxFuture;
use stratus_api::v1::{Instance, Node};
use stratus_api::{AnyObject, Resource};
use stratus_client::runtime::ApiWriter;
use stratus_client::{Client, Error};
use stratus_controllers::Metrics;
use stratus_controllers::scheduler::{self, RESERVATIONS_ANNOTATION, SETTLED_ANNOTATION};

const GRACE: Duration = Duration::from_secs(15);

/// Starts one scheduler on its own Context.
fn start_scheduler(cluster: &Cluster) {
    tokio::spawn(scheduler::run(cluster.context(GRACE), cluster.shutdown()));
}

async fn wait_bound(cluster: &Cluster, name: &str) -> Instance {
    wait_for(&format!("{name} to be bound"), || async {
        let inst = cluster.instance(name).await;
        if node_of(&inst).is_empty() { Err(format!("{:?}", inst.status)) } else { Ok(inst) }
    })
    .await
}

#[tokio::test]
async fn binds_to_the_only_node_with_room() {
    let cluster = Cluster::start().await;
    cluster.add_node("small", "1", "4Gi").await;
    cluster.add_node("big", "4", "8Gi").await;
    cluster.add_node("down", "8", "16Gi").await;
    cluster.set_node_ready("down", false).await;
    start_scheduler(&cluster);

    cluster.create_instance("web-1", "web-00001", "2", "1Gi", "").await;
    let inst = wait_bound(&cluster, "web-1").await;
    assert_eq!(node_of(&inst), "big");

    let scheduled = wait_for("the Scheduled event", || async {
        let events = cluster.events("web-1", "Scheduled").await;
        events.into_iter().next().ok_or_else(|| "no event".to_string())
    })
    .await;
    assert_eq!(scheduled.spec.unwrap().message, "assigned default/web-1 to big");

    // The bind was reserved on the node first.
    let big: Node = cluster.client.get("", "big").await.unwrap();
    let reservations = big.meta().annotations.get(RESERVATIONS_ANNOTATION).expect("a reservation");
    assert!(reservations.contains(&inst.meta().uid), "{reservations}");
}

#[tokio::test]
async fn spreads_a_revision_before_filling_the_emptiest_node() {
    let cluster = Cluster::start().await;
    cluster.add_node("node-a", "4", "8Gi").await;
    cluster.add_node("node-b", "4", "8Gi").await;
    // Another revision already takes a quarter of node-a: least-allocated alone would put three
    // of the four on node-b.
    cluster.create_instance("other-1", "other-00001", "1", "1Gi", "node-a").await;
    start_scheduler(&cluster);

    for i in 0..4 {
        cluster.create_instance(&format!("web-{i}"), "web-00001", "500m", "512Mi", "").await;
    }
    let mut per_node = BTreeMap::<String, usize>::new();
    for i in 0..4 {
        let inst = wait_bound(&cluster, &format!("web-{i}")).await;
        *per_node.entry(node_of(&inst).to_string()).or_default() += 1;
    }
    assert_eq!(per_node, BTreeMap::from([("node-a".to_string(), 2), ("node-b".to_string(), 2)]));
}

#[tokio::test]
async fn an_instance_larger_than_every_node_waits_for_a_node_with_room() {
    let cluster = Cluster::start().await;
    cluster.add_node("n1", "1", "4Gi").await;
    cluster.add_node("n2", "1500m", "4Gi").await;
    cluster.add_node("n3", "8", "16Gi").await;
    cluster.set_node_ready("n3", false).await;
    start_scheduler(&cluster);

    cluster.create_instance("huge", "web-00001", "2", "1Gi", "").await;
    let pending = wait_for("huge to be unschedulable", || async {
        let inst = cluster.instance("huge").await;
        let status = status_of(&inst);
        if status.reason == "Unschedulable" { Ok(inst) } else { Err(format!("{status:?}")) }
    })
    .await;
    let status = status_of(&pending);
    assert_eq!(status.phase, "Pending");
    assert_eq!(status.message, "0/3 nodes are available: 2 Insufficient cpu (need 2, 1500m free at most), 1 NotReady");
    let scheduled = condition(&status.conditions, "Scheduled").expect("a Scheduled condition");
    assert_eq!((scheduled.status.as_str(), scheduled.reason.as_str()), ("False", "Unschedulable"));
    assert!(node_of(&pending).is_empty());
    let failed = wait_for("the FailedScheduling event", || async {
        cluster.events("huge", "FailedScheduling").await.into_iter().next().ok_or_else(|| "no event".to_string())
    })
    .await;
    assert_eq!(failed.spec.unwrap().message, status.message);

    // A node with room joins: the instance is bound at once (not at the periodic retry), and
    // what the scheduler wrote is cleared.
    cluster.add_node("n4", "4", "8Gi").await;
    let inst = wait_bound(&cluster, "huge").await;
    assert_eq!(node_of(&inst), "n4");
    let inst = wait_for("the Scheduled condition to turn True", || async {
        let inst = cluster.instance("huge").await;
        let status = status_of(&inst);
        match condition(&status.conditions, "Scheduled") {
            Some(c) if c.status == "True" => Ok(inst),
            other => Err(format!("{other:?}")),
        }
    })
    .await;
    assert_eq!(status_of(&inst).reason, "");
}

#[tokio::test]
async fn a_finished_instance_makes_room() {
    let cluster = Cluster::start().await;
    cluster.add_node("n1", "1", "4Gi").await;
    cluster.create_instance("old", "web-00001", "1", "1Gi", "n1").await;
    start_scheduler(&cluster);

    cluster.create_instance("new", "web-00002", "1", "1Gi", "").await;
    wait_for("new to be unschedulable", || async {
        let status = status_of(&cluster.instance("new").await);
        if status.reason == "Unschedulable" { Ok(()) } else { Err(format!("{status:?}")) }
    })
    .await;
    cluster.update_instance_status("old", |s| s.phase = "Succeeded".into()).await;
    assert_eq!(node_of(&wait_bound(&cluster, "new").await), "n1");
}

/// Two schedulers, each with its own caches, race to fill ten nodes that have room for exactly
/// two instances each. Without the reservations on the Nodes this overbooks a node in about one
/// round of four (measured); the rounds make a regression likely to show.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_schedulers_never_double_book() {
    for round in 0..3 {
        let cluster = Cluster::start().await;
        for n in 0..10 {
            cluster.add_node(&format!("node-{n}"), "1", "64Gi").await;
        }
        start_scheduler(&cluster);
        start_scheduler(&cluster);

        let creates = (0..20).map(|i| {
            let client = cluster.client.clone();
            // Several revisions, so that spreading does not line the two schedulers up.
            let inst = cluster::instance(&format!("web-{i:02}"), &format!("web-{:05}", i % 7), "500m", "256Mi", "");
            async move { client.create(inst).await.unwrap() }
        });
        futures::future::join_all(creates).await;

        let instances = wait_for(&format!("all 20 instances to be bound (round {round})"), || async {
            let instances = cluster.instances().await;
            let pending: Vec<_> =
                instances.iter().filter(|i| node_of(i).is_empty()).map(|i| i.meta().name.clone()).collect();
            if pending.is_empty() { Ok(instances) } else { Err(format!("pending: {pending:?}")) }
        })
        .await;
        let mut per_node = BTreeMap::<String, usize>::new();
        for inst in &instances {
            *per_node.entry(node_of(inst).to_string()).or_default() += 1;
        }
        assert!(per_node.values().all(|n| *n == 2), "round {round}: overbooked: {per_node:?}");
    }
}

/// A reservation on a Node holds room for a bind in flight that the cache does not show, and
/// is dropped once its Instance has changed (the bind it stood for can then never succeed).
#[tokio::test]
async fn a_reservation_in_flight_holds_its_room_until_it_is_dead() {
    let cluster = Cluster::start().await;
    cluster.add_node("node-a", "1", "4Gi").await;
    let ctx = cluster.context(GRACE);
    tokio::spawn(scheduler::run(ctx.clone(), cluster.shutdown()));

    // "other" fits nowhere, so this scheduler leaves it pending; another scheduler is taken to
    // be binding it to node-a at its current resourceVersion, with a reservation of 500m.
    cluster.create_instance("other", "web-00001", "8", "1Gi", "").await;
    let other = wait_for("other to be unschedulable", || async {
        let inst = cluster.instance("other").await;
        if status_of(&inst).reason == "Unschedulable" { Ok(inst) } else { Err(format!("{:?}", inst.status)) }
    })
    .await;
    let mut node: Node = cluster.client.get("", "node-a").await.unwrap();
    let reservation =
        format!(r#"[["{}","default/other","{}",500,0]]"#, other.meta().uid, other.meta().resource_version);
    node.meta_mut().annotations.insert(RESERVATIONS_ANNOTATION.into(), reservation);
    cluster.client.update(node).await.unwrap();

    // The cache shows node-a empty, but its reservations leave no room for a whole cpu.
    let failed_before = errors(&ctx.metrics, scheduler::NAME);
    cluster.create_instance("whole", "web-00002", "1", "1Gi", "").await;
    wait_for("the scheduler to find node-a full", || async {
        let failed = errors(&ctx.metrics, scheduler::NAME);
        if failed > failed_before { Ok(()) } else { Err("no failed attempt yet".to_string()) }
    })
    .await;
    assert!(node_of(&cluster.instance("whole").await).is_empty());

    // "other" changes: the reserved bind can no longer succeed, so the room is free.
    let mut other = cluster.instance("other").await;
    other.meta_mut().labels.insert("touched".into(), "yes".into());
    cluster.client.update(other).await.unwrap();
    let whole = wait_bound(&cluster, "whole").await;
    assert_eq!(node_of(&whole), "node-a");
    let node: Node = cluster.client.get("", "node-a").await.unwrap();
    let reservations = &node.meta().annotations[RESERVATIONS_ANNOTATION];
    assert!(reservations.contains(&whole.meta().uid) && !reservations.contains("default/other"), "{reservations}");
}

/// A Node's reservations hold only the binds in flight: a reservation settles every earlier
/// entry whose bind the scheduler's cache shows, and raises the Node's settled-through version
/// past it, so that the annotation does not grow with the Instances the Node runs.
#[tokio::test]
async fn reservations_settle_so_a_full_node_carries_only_binds_in_flight() {
    let cluster = Cluster::start().await;
    cluster.add_node("n1", "64", "256Gi").await;
    let ctx = cluster.context(GRACE);
    tokio::spawn(scheduler::run(ctx.clone(), cluster.shutdown()));

    for i in 0..40 {
        cluster.create_instance(&format!("web-{i:02}"), "web-00001", "100m", "64Mi", "").await;
    }
    let bound = wait_for("all 40 bound, as the scheduler's cache shows", || async {
        let cached = ctx.instances.store().list();
        let bound: Vec<_> = cached.iter().filter(|i| node_of(i) == "n1").cloned().collect();
        if bound.len() == 40 { Ok(bound) } else { Err(format!("{} of 40 bound in the cache", bound.len())) }
    })
    .await;
    let newest = bound.iter().map(|i| i.meta().resource_version.parse::<u64>().unwrap()).max().unwrap();

    // One more bind: its reservation settles the forty, whose binds the cache shows.
    let last = cluster.create_instance("web-40", "web-00001", "100m", "64Mi", "").await;
    wait_bound(&cluster, "web-40").await;
    let node: Node = cluster.client.get("", "n1").await.unwrap();
    let entries: Vec<serde_json::Value> =
        serde_json::from_str(&node.meta().annotations[RESERVATIONS_ANNOTATION]).unwrap();
    assert_eq!(entries.len(), 1, "only the newest bind is in flight: {entries:?}");
    assert!(entries[0].to_string().contains(&last.meta().uid), "{entries:?}");
    let settled: u64 = node.meta().annotations[SETTLED_ANNOTATION].parse().unwrap();
    assert!(settled >= newest, "settled through {settled}, but the newest settled bind is at {newest}");
}

/// A scheduler whose Instance cache is older than a Node's settled-through version does not
/// reserve there: it could miss binds whose entries were settled. It binds once it may.
#[tokio::test]
async fn a_scheduler_whose_cache_is_older_than_the_settled_binds_waits() {
    let cluster = Cluster::start().await;
    let ctx = cluster.context(GRACE);
    tokio::spawn(scheduler::run(ctx.clone(), cluster.shutdown()));
    cluster.add_node("n1", "4", "8Gi").await;
    // As if another scheduler had settled binds at a version this one has not seen.
    let mut node: Node = cluster.client.get("", "n1").await.unwrap();
    node.meta_mut().annotations.insert(SETTLED_ANNOTATION.into(), u64::MAX.to_string());
    cluster.client.update(node).await.unwrap();

    let failed_before = errors(&ctx.metrics, scheduler::NAME);
    cluster.create_instance("web-1", "web-00001", "1", "1Gi", "").await;
    wait_for("the scheduler to find its cache too old", || async {
        let failed = errors(&ctx.metrics, scheduler::NAME);
        if failed > failed_before + 1 { Ok(()) } else { Err(format!("{} failed attempts", failed - failed_before)) }
    })
    .await;
    assert!(node_of(&cluster.instance("web-1").await).is_empty(), "bound although its cache was too old");

    // The version comes within reach: the retry binds.
    let mut node: Node = cluster.client.get("", "n1").await.unwrap();
    node.meta_mut().annotations.insert(SETTLED_ANNOTATION.into(), "1".into());
    cluster.client.update(node).await.unwrap();
    assert_eq!(node_of(&wait_bound(&cluster, "web-1").await), "n1");
}

/// How many reconciles of `controller` failed, from its metrics.
fn errors(metrics: &stratus_controllers::Metrics, controller: &str) -> u64 {
    let prefix = format!("stratus_controllers_reconciles_total{{controller=\"{controller}\",result=\"error\"}} ");
    metrics.encode().lines().find_map(|l| l.strip_prefix(&prefix)?.trim().parse().ok()).unwrap_or(0)
}

// ---------------------------------------------------------------- writes that fail

/// Which updates [`Conflicting`] answers with a Conflict instead of sending.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Target {
    /// An update of an Instance that sets its node: a bind.
    Bind,
    /// An update of a Node: a reservation.
    Reservation,
}

/// The real client, but for the first `conflicts` writes of `target`, which fail with a
/// Conflict as if another writer had won the race; records every update it sees.
struct Conflicting {
    client: Client,
    target: Target,
    conflicts: Mutex<u32>,
    /// Each update as (target, object name, whether it was sent).
    seen: Mutex<Vec<(Target, String, bool)>>,
}

impl Conflicting {
    fn new(client: &Client, target: Target, conflicts: u32) -> Arc<Conflicting> {
        Arc::new(Conflicting {
            client: client.clone(),
            target,
            conflicts: Mutex::new(conflicts),
            seen: Mutex::new(Vec::new()),
        })
    }

    /// The updates of `target` seen so far: whether each was sent (false: failed here).
    fn attempts(&self, target: Target) -> Vec<bool> {
        self.seen.lock().unwrap().iter().filter(|(t, _, _)| *t == target).map(|(_, _, sent)| *sent).collect()
    }
}

impl ApiWriter for Conflicting {
    fn update_any(&self, obj: AnyObject) -> BoxFuture<'_, Result<AnyObject, Error>> {
        let target = match &obj {
            AnyObject::Node(_) => Some(Target::Reservation),
            AnyObject::Instance(inst) if !node_of(inst).is_empty() => Some(Target::Bind),
            _ => None,
        };
        let name = obj.meta().name.clone();
        let fail = target == Some(self.target) && {
            let mut left = self.conflicts.lock().unwrap();
            let fail = *left > 0;
            *left = left.saturating_sub(1);
            fail
        };
        if let Some(target) = target {
            self.seen.lock().unwrap().push((target, name.clone(), !fail));
        }
        if fail {
            let message = format!("the object {name} has been modified; injected by the test");
            return async move { Err(Error::Conflict(message)) }.boxed();
        }
        self.client.update_any(obj).boxed()
    }

    fn update_status_any(&self, obj: AnyObject) -> BoxFuture<'_, Result<AnyObject, Error>> {
        self.client.update_status_any(obj).boxed()
    }
}

/// Starts a scheduler writing through `writer`; returns its metrics.
fn start_scheduler_writing_through(cluster: &Cluster, writer: Arc<Conflicting>) -> Arc<Metrics> {
    let metrics = Arc::new(Metrics::default());
    let ctx = cluster.context_writing_through(GRACE, metrics.clone(), writer);
    tokio::spawn(scheduler::run(ctx, cluster.shutdown()));
    metrics
}

/// The reservation entries on `node` that name `uid`.
async fn reservations_of(cluster: &Cluster, node: &str, uid: &str) -> usize {
    let node: Node = cluster.client.get("", node).await.unwrap();
    let raw = node.meta().annotations.get(RESERVATIONS_ANNOTATION).cloned().unwrap_or_default();
    raw.matches(uid).count()
}

#[tokio::test]
async fn a_bind_that_loses_a_conflict_is_retried_and_binds() {
    let cluster = Cluster::start().await;
    cluster.add_node("n1", "4", "8Gi").await;
    let writer = Conflicting::new(&cluster.client, Target::Bind, 1);
    let metrics = start_scheduler_writing_through(&cluster, writer.clone());

    let created = cluster.create_instance("web-1", "web-00001", "1", "1Gi", "").await;
    let inst = wait_bound(&cluster, "web-1").await;
    assert_eq!(node_of(&inst), "n1");
    assert_eq!(writer.attempts(Target::Bind), [false, true], "the conflict, then the retried bind");
    assert_eq!(reconciles_with(&metrics, scheduler::NAME, "error"), 1, "the conflict failed one reconcile");
    // The retry replaced the reservation of the failed bind rather than adding a second one.
    let reservations = writer.attempts(Target::Reservation);
    assert_eq!(reservations, [true, true], "reserved before each bind");
    assert_eq!(reservations_of(&cluster, "n1", &created.meta().uid).await, 1);
}

#[tokio::test]
async fn a_reservation_that_loses_a_conflict_is_retried_and_binds() {
    let cluster = Cluster::start().await;
    cluster.add_node("n1", "4", "8Gi").await;
    let writer = Conflicting::new(&cluster.client, Target::Reservation, 1);
    let metrics = start_scheduler_writing_through(&cluster, writer.clone());

    let created = cluster.create_instance("web-1", "web-00001", "1", "1Gi", "").await;
    let inst = wait_bound(&cluster, "web-1").await;
    assert_eq!(node_of(&inst), "n1");
    assert_eq!(writer.attempts(Target::Reservation), [false, true], "the conflict, then the retried reservation");
    assert_eq!(writer.attempts(Target::Bind), [true], "no bind without a reservation");
    assert_eq!(reconciles_with(&metrics, scheduler::NAME, "error"), 1, "the conflict failed one reconcile");
    assert_eq!(reservations_of(&cluster, "n1", &created.meta().uid).await, 1);
}

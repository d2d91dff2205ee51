//! Node lifecycle: a Node whose agent stopped renewing its Lease is NotReady, and what ran there
//! is failed so that it is replaced elsewhere (DESIGN §5), as Kubernetes' node lifecycle
//! controller and pod garbage collector do for lost nodes.
//!
//! A Node's heartbeat is the Lease named after it in [`NODE_LEASE_NAMESPACE`]. The Node is lost
//! when now (as the Context's [`Clock`](crate::clock::Clock) says) is past
//! `renewTime + max(leaseDurationSeconds, grace)` (`grace` is [`crate::Config::node_grace`]), or
//! when it has no Lease and registered more than `grace` ago. For a lost Node the controller
//!
//! - sets the condition `Ready=False` (reason `NodeLost`, or `NodeStatusUnknown` when there never
//!   was a Lease) with a `NodeNotReady` Event when it turns so;
//! - fails its unfinished Instances (phase Failed, not ready, reason `NodeLost`), so that the
//!   revisions controller replaces them;
//! - removes the agent's finalizer from its Instances being deleted: no agent will ever release
//!   them.
//!
//! It never writes Ready=True: when the Lease is renewed again, the agent reports its own
//! readiness, and the controller leaves the Node alone. Each Node is checked when it or its
//! Lease or one of its Instances changes, and at the latest one second after its Lease would
//! run out (every second while it is lost).

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use futures::StreamExt;
use stratus_api::v1::{Instance, Lease, Node};
use stratus_api::{Resource, Timestamp};
use stratus_client::Error as ApiError;
use stratus_client::runtime::{Action, ChangeKind, Controller, ObjectRef, RateLimit};
use tracing::{info, warn};

use crate::clock;
use crate::context::{Context, NODE_LEASE_NAMESPACE};
use crate::events::EventType;
use crate::instances::{is_finished, node_name};
use crate::status::{self as conditions, Cond, FALSE, READY};

/// The controller's name in metrics and logs.
pub const NAME: &str = "nodes";

/// The node agent's finalizer on the Instances it runs.
pub use stratus_api::wellknown::finalizers::AGENT as AGENT_FINALIZER;

/// The reason of a lost Node's `Ready=False`, and of its failed Instances.
pub const NODE_LOST: &str = "NodeLost";

/// The reason of `Ready=False` for a Node whose agent never renewed a Lease.
pub const NODE_STATUS_UNKNOWN: &str = "NodeStatusUnknown";

/// The longest a Node goes unchecked.
const CHECK_INTERVAL: Duration = Duration::from_secs(1);

const WORKERS: usize = 2;

/// Failed writes are retried soon: a lost node's instances are waiting to be replaced.
const RATE_LIMIT: RateLimit = RateLimit { base: Duration::from_millis(20), max: Duration::from_secs(5), jitter: 0.5 };

/// Why handling a lost Node failed; it is retried with backoff.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("marking node {node} NotReady failed")]
    MarkNotReady {
        node: String,
        #[source]
        source: ApiError,
    },
    #[error("failing instance {instance} of lost node {node} failed")]
    FailInstance {
        instance: ObjectRef,
        node: String,
        #[source]
        source: ApiError,
    },
    #[error("releasing instance {instance} of lost node {node} failed")]
    ReleaseInstance {
        instance: ObjectRef,
        node: String,
        #[source]
        source: ApiError,
    },
}

/// What a Node's Lease says about it at some moment.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Heartbeat {
    /// Renewed in time (or the Node is younger than the grace period): it is lost if nothing
    /// changes for `remaining`.
    Alive { remaining: Duration },
    /// The Lease ran out; it was last renewed at `renewed`.
    Expired { renewed: Timestamp },
    /// No Lease, and the Node registered at `registered`, longer ago than the grace period.
    Missing { registered: Timestamp },
}

/// Reads `node`'s heartbeat from its `lease` at `now`; see the module documentation. A Lease
/// that was never renewed counts from its acquisition, else from its creation.
pub fn heartbeat(node: &Node, lease: Option<&Lease>, grace: Duration, now: SystemTime) -> Heartbeat {
    let Some(lease) = lease else {
        let registered = node.meta().creation_timestamp.unwrap_or_default();
        return match remaining(registered, grace, now) {
            Some(remaining) => Heartbeat::Alive { remaining },
            None => Heartbeat::Missing { registered },
        };
    };
    let spec = lease.spec.clone().unwrap_or_default();
    let renewed = spec.renew_time.or(spec.acquire_time).or(lease.meta().creation_timestamp).unwrap_or_default();
    let duration = Duration::from_secs(u64::try_from(spec.lease_duration_seconds).unwrap_or(0));
    match remaining(renewed, duration.max(grace), now) {
        Some(remaining) => Heartbeat::Alive { remaining },
        None => Heartbeat::Expired { renewed },
    }
}

/// Runs the controller until `shutdown`.
pub async fn run(ctx: Arc<Context>, shutdown: impl Future<Output = ()> + Send) {
    // `stratus_controllers_node_ready` follows every Node's Ready condition, whoever set it.
    let mut changes = ctx.nodes.subscribe();
    let metrics = ctx.metrics.clone();
    let readiness = async move {
        while let Some(change) = changes.next().await {
            let node = &change.object;
            let ready = match change.kind {
                ChangeKind::Deleted => None,
                ChangeKind::Added | ChangeKind::Modified => {
                    Some(node.status.as_ref().is_some_and(|s| conditions::is_true(&s.conditions, READY)))
                }
            };
            metrics.set_node_ready(&node.meta().name, ready);
        }
    };
    let controller = Controller::new(&ctx.nodes, ctx.clone())
        .watches(&ctx.node_leases, |lease: &Lease| vec![ObjectRef::new("", lease.meta().name.clone())])
        // An Instance bound to (or being deleted from) a lost node is handled at once.
        .watches(&ctx.instances, |inst: &Instance| {
            let node = node_name(inst);
            if node.is_empty() { Vec::new() } else { vec![ObjectRef::new("", node)] }
        })
        .rate_limit(RATE_LIMIT)
        .metrics(NAME, ctx.metrics.clone())
        .run(reconcile, |_, _, _| Action::backoff(), WORKERS, shutdown);
    let mut controller = std::pin::pin!(controller);
    tokio::select! {
        () = &mut controller => return,
        // The informer is gone: nothing more to follow.
        () = readiness => {}
    }
    controller.await;
}

async fn reconcile(node: Arc<Node>, ctx: Arc<Context>) -> Result<Action, Error> {
    check(&node, &ctx).await
}

async fn check(node: &Node, ctx: &Context) -> Result<Action, Error> {
    let name = &node.meta().name;
    let lease = ctx.node_leases.store().get(NODE_LEASE_NAMESPACE, name);
    let (reason, message) = match heartbeat(node, lease.as_deref(), ctx.config.node_grace, ctx.clock.now()) {
        Heartbeat::Alive { remaining } => return Ok(Action::requeue(remaining.min(CHECK_INTERVAL))),
        Heartbeat::Expired { renewed } => {
            (NODE_LOST, format!("the node agent stopped renewing its lease at {}", rfc3339(renewed)))
        }
        Heartbeat::Missing { registered } => (
            NODE_STATUS_UNKNOWN,
            format!("no node agent has renewed a lease for this node since it registered at {}", rfc3339(registered)),
        ),
    };
    // Every step is taken even if another fails (the Instances wait to be replaced whatever
    // the Node's status says); the first failure requeues the node.
    let mut first_error = mark_not_ready(node, ctx, reason, &message).await.err();
    for inst in ctx.instances.store().list().iter().filter(|i| node_name(i) == name.as_str()) {
        let result = if inst.meta().deletion_timestamp.is_some() && has_agent_finalizer(inst) {
            release(inst, name, ctx).await
        } else if !is_finished(inst) {
            fail(inst, name, &message, ctx).await
        } else {
            Ok(())
        };
        if let Err(e) = result {
            // Only the first error is returned (and logged by the controller): log the others.
            if first_error.is_some() {
                warn!(error = ?e, "handling an instance of a lost node failed");
            }
            first_error.get_or_insert(e);
        }
    }
    match first_error {
        Some(e) => Err(e),
        None => Ok(Action::requeue(CHECK_INTERVAL)),
    }
}

/// Sets `Ready=False` for `reason` unless it already says so; records `NodeNotReady` when the
/// Node turns lost.
async fn mark_not_ready(node: &Node, ctx: &Context, reason: &str, message: &str) -> Result<(), Error> {
    let name = &node.meta().name;
    let mut status = node.status.clone().unwrap_or_default();
    let before = status.clone();
    let was_lost = conditions::get(&status.conditions, READY).is_some_and(|c| c.status == FALSE && c.reason == reason);
    conditions::set(&mut status.conditions, &Cond::new(READY, FALSE, reason, message));
    if status == before {
        return Ok(());
    }
    let mut updated = node.clone();
    updated.status = Some(status);
    match ctx.client.update_status(updated).await {
        Ok(_) => {}
        Err(ApiError::NotFound(_)) => return Ok(()),
        Err(source) => return Err(Error::MarkNotReady { node: name.clone(), source }),
    }
    if !was_lost {
        warn!(node = %name, %reason, %message, "node lost");
        ctx.events.record(node, EventType::Warning, "NodeNotReady", message).await;
    }
    Ok(())
}

/// Fails an Instance of a lost Node so that it is replaced.
async fn fail(inst: &Instance, node: &str, why: &str, ctx: &Context) -> Result<(), Error> {
    let key = ObjectRef::from_obj(inst);
    let message = format!("node {node} is lost: {why}");
    let mut status = inst.status.clone().unwrap_or_default();
    status.phase = "Failed".into();
    status.ready = false;
    status.reason = NODE_LOST.into();
    status.message = message.clone();
    if status.started_at.is_some() && status.finished_at.is_none() {
        status.finished_at = Some(clock::timestamp(ctx.clock.now()));
    }
    conditions::set(&mut status.conditions, &Cond::new(READY, FALSE, NODE_LOST, message.clone()));
    let mut updated = inst.clone();
    updated.status = Some(status);
    match ctx.client.update_status(updated).await {
        Ok(_) => {}
        Err(ApiError::NotFound(_)) => return Ok(()),
        Err(source) => return Err(Error::FailInstance { instance: key, node: node.to_string(), source }),
    }
    info!(instance = %key, %node, "failed the instance of a lost node");
    ctx.events.record(inst, EventType::Warning, NODE_LOST, &message).await;
    Ok(())
}

/// Removes the agent's finalizer from an Instance being deleted on a lost Node, so that the
/// deletion completes.
async fn release(inst: &Instance, node: &str, ctx: &Context) -> Result<(), Error> {
    let key = ObjectRef::from_obj(inst);
    let mut released = inst.clone();
    released.meta_mut().finalizers.retain(|f| f != AGENT_FINALIZER);
    match ctx.client.update(released).await {
        Ok(_) | Err(ApiError::NotFound(_)) => {
            info!(instance = %key, %node, "released the instance of a lost node");
            Ok(())
        }
        Err(source) => Err(Error::ReleaseInstance { instance: key, node: node.to_string(), source }),
    }
}

fn has_agent_finalizer(inst: &Instance) -> bool {
    inst.meta().finalizers.iter().any(|f| f == AGENT_FINALIZER)
}

/// How long from `now` until `since + period` passes; `None` once it has.
fn remaining(since: Timestamp, period: Duration, now: SystemTime) -> Option<Duration> {
    let deadline = system_time(since).checked_add(period)?;
    deadline.duration_since(now).ok().filter(|d| !d.is_zero())
}

fn system_time(t: Timestamp) -> SystemTime {
    let secs = Duration::from_secs(u64::try_from(t.seconds).unwrap_or(0));
    let nanos = Duration::from_nanos(u64::try_from(t.nanos).unwrap_or(0));
    SystemTime::UNIX_EPOCH + secs + nanos
}

/// A timestamp as RFC 3339 (its proto3 JSON form), for messages.
fn rfc3339(t: Timestamp) -> String {
    match serde_json::to_value(t) {
        Ok(serde_json::Value::String(s)) => s,
        _ => format!("{}s after the epoch", t.seconds),
    }
}

#[cfg(test)]
mod tests {
    use stratus_api::v1::LeaseSpec;

    use super::*;

    fn at(seconds: i64) -> SystemTime {
        system_time(Timestamp { seconds, nanos: 0 })
    }

    fn node(created: i64) -> Node {
        let mut node = Node::default();
        node.meta_mut().name = "n1".into();
        node.meta_mut().creation_timestamp = Some(Timestamp { seconds: created, nanos: 0 });
        node
    }

    fn lease(renewed: i64, duration: i32) -> Lease {
        Lease {
            spec: Some(LeaseSpec {
                renew_time: Some(Timestamp { seconds: renewed, nanos: 0 }),
                lease_duration_seconds: duration,
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    #[test]
    fn a_lease_expires_after_the_longer_of_its_duration_and_the_grace() {
        let grace = Duration::from_secs(15);
        let (n, short, long) = (node(0), lease(1000, 10), lease(1000, 40));
        assert_eq!(
            heartbeat(&n, Some(&short), grace, at(1010)),
            Heartbeat::Alive { remaining: Duration::from_secs(5) }
        );
        assert_eq!(
            heartbeat(&n, Some(&short), grace, at(1015)),
            Heartbeat::Expired { renewed: Timestamp { seconds: 1000, nanos: 0 } }
        );
        assert_eq!(heartbeat(&n, Some(&long), grace, at(1039)), Heartbeat::Alive { remaining: Duration::from_secs(1) });
        assert!(matches!(heartbeat(&n, Some(&long), grace, at(1041)), Heartbeat::Expired { .. }));
    }

    #[test]
    fn a_node_without_a_lease_is_lost_once_older_than_the_grace() {
        let grace = Duration::from_secs(15);
        assert_eq!(heartbeat(&node(100), None, grace, at(110)), Heartbeat::Alive { remaining: Duration::from_secs(5) });
        assert_eq!(
            heartbeat(&node(100), None, grace, at(116)),
            Heartbeat::Missing { registered: Timestamp { seconds: 100, nanos: 0 } }
        );
    }

    #[test]
    fn a_lease_never_renewed_counts_from_its_acquisition() {
        let mut l = lease(0, 10);
        if let Some(spec) = l.spec.as_mut() {
            spec.renew_time = None;
            spec.acquire_time = Some(Timestamp { seconds: 500, nanos: 0 });
        }
        assert!(matches!(heartbeat(&node(0), Some(&l), Duration::ZERO, at(505)), Heartbeat::Alive { .. }));
        assert!(matches!(heartbeat(&node(0), Some(&l), Duration::ZERO, at(511)), Heartbeat::Expired { .. }));
    }

    #[test]
    fn timestamps_print_as_rfc3339() {
        assert_eq!(rfc3339(Timestamp { seconds: 0, nanos: 0 }), "1970-01-01T00:00:00+00:00");
    }
}

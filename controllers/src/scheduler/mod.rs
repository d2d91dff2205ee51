//! The scheduler: binds pending Instances to Nodes with room (DESIGN §5), as kube-scheduler does
//! for Pods.
//!
//! An Instance is pending while its `spec.nodeName` is empty, it is not being deleted and it has
//! not finished. For each, the scheduler
//!
//! 1. **filters** the Nodes: `Ready=True`, neither cordoned (`spec.unschedulable`) nor being
//!    deleted, and allocatable minus the requests of the Instances already there (those not
//!    Succeeded or Failed) fits the Instance's cpu, memory and one more instance;
//! 2. **scores** the rest: fewest Instances of the same revision first (spread), then the lowest
//!    `max(cpu %, memory %)` after placement (least allocated), then the node name (over more
//!    than 100 nodes, the node looked at first). Over more
//!    than 100 nodes only a sample is scored, as kube-scheduler's `percentageOfNodesToScore`
//!    does: the first nodes that fit (500 of 5,000) from where the previous decision stopped
//!    looking, so that a decision costs a tenth of the nodes and successive ones spread;
//! 3. **reserves** room on the chosen Node (see below, from the cached Node: a stale one costs
//!    a Conflict and a retry), and
//! 4. **binds**: updates the Instance's `spec.nodeName` at the resourceVersion it read, so that an
//!    Instance changed or bound meanwhile is not bound again (a Conflict is retried with backoff).
//!
//! An Instance's requests are its serving container's `resources.requests`, per resource; a
//! request left out is derived from the limit by the cluster's overcommit policy
//! ([`stratus_api::capacity`]: CPU overcommitted, memory not). The revisions controller writes
//! the derived requests into the Instances it makes, so this matters only for Instances made
//! otherwise. Limits are the node agent's business (the engine enforces them). An Instance that
//! fits nowhere stays Pending with reason `Unschedulable`, a message counting why the nodes were
//! rejected and naming the revisions that hold the most of what is short (`0/3 nodes are
//! available: 2 Insufficient cpu (need 2, 1500m free at most), 1 NotReady; largest holders:
//! default/web-00001 (4 instances, 1200m cpu), …`), the condition `Scheduled=False` and a
//! `FailedScheduling` Event. It is tried again when a Node's readiness, cordon or allocatable
//! changes, when an Instance bound somewhere finishes or goes away, and every 15 s.
//!
//! # Accounting
//! Choices are made from the informer caches plus the binds this scheduler made that the cache
//! does not show yet ("assumed", as kube-scheduler's assume cache), so that a burst of binds does
//! not pile onto the node that looked emptiest before the first of them came back through the
//! watch. Both are kept incrementally from the caches' change streams, so that a decision costs
//! O(nodes), not O(instances).
//!
//! # Reservations: why two schedulers never double-book
//! A bind writes the Instance only: two schedulers (two replicas during a leader hand-over, a
//! partitioned old leader) binding *different* Instances to one Node would both succeed. So every
//! bind is preceded by a reservation on the Node itself, written at the Node's resourceVersion:
//! the annotation [`RESERVATIONS_ANNOTATION`] lists the Instances being bound there, with their
//! requests. The reserving scheduler reads the Node fresh, settles or drops the entries it can,
//! checks that the Instance fits beside the rest and beside the Instances its cache shows bound
//! there, and writes the list back with its own entry. The API server serialises writes of one
//! Node, so each reservation is checked against every earlier one: a scheduler whose cache is
//! stale gets a Conflict, or finds the Node full, and retries after a backoff.
//!
//! An entry is **settled** once the reserving scheduler's cache shows its Instance bound to the
//! Node: its requests are then counted from the cache, and the entry goes. So that no other
//! scheduler's cache misses it, the Node's [`SETTLED_ANNOTATION`] is raised to the
//! resourceVersion at which the bind was seen, and a scheduler whose Instance cache is not yet
//! current through that version may not reserve there (it retries once its cache has caught
//! up). The list thus holds only the binds in flight, a handful, however many Instances the
//! Node runs: it does not grow the Node by an entry per Instance.
//!
//! An entry is **dropped** once its Instance provably holds nothing: it finished (Succeeded or
//! Failed), it is gone (NotFound, or another uid under its name), it is bound to another Node, or
//! it is still unbound at a resourceVersion other than the one the reservation was made at (its
//! bind, which carries that version, can then never succeed). Phases are taken as final once
//! Succeeded or Failed, as Kubernetes takes them.
//!
//! # Layout
//! `fit` holds the capacity model and where an Instance fits (no I/O), `cache` keeps it current
//! from the informers, `reservations` reads and writes the Node annotation. This module is the
//! controller: it decides from the cache, reserves, binds and reports. Its writes (reservations,
//! binds, status) go through [`Context::writer`], so that a test can fail them; it reads through
//! the client.

use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::pin::pin;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::Poll;
use std::time::Duration;

use futures::{StreamExt, stream};
use stratus_api::Resource;
use stratus_api::v1::{Instance, Node};
use stratus_client::runtime::{Action, ChangeKind, Controller, ObjectRef, RateLimit, Store};
use stratus_client::{Error as ApiError, Result as ApiResult};
use tracing::info;

use crate::context::Context;
use crate::events::EventType;
use crate::instances::node_name;
use crate::status::{self as conditions, Cond, FALSE, TRUE};

mod cache;
mod fit;
#[cfg(test)]
mod fixtures;
mod reservations;

use cache::Cache;
use fit::{NodeFacts, Placement, check, place_from, revision_key};
use reservations::{Reservation, encode_reservations, holds, reservations, settled_through, version};

pub use fit::{Resources, requests};
pub use reservations::{RESERVATIONS_ANNOTATION, SETTLED_ANNOTATION};
pub use stratus_api::serving_container;

// The Instance helpers live in `crate::instances`, shared with the other controllers; this one
// stays reachable where it was public before.
pub use crate::instances::is_finished;

/// The controller's name in metrics and logs.
pub const NAME: &str = "scheduler";

/// The Instance condition the scheduler owns, as Kubernetes' `PodScheduled`.
pub const SCHEDULED_CONDITION: &str = "Scheduled";

/// The status reason of an Instance that fits on no Node.
pub const UNSCHEDULABLE: &str = "Unschedulable";

/// How often an unschedulable Instance is tried again when nothing it waits for changes.
const UNSCHEDULABLE_RETRY: Duration = Duration::from_secs(15);

/// Decisions are serialised by a lock; more workers overlap the API round-trips of binds.
const WORKERS: usize = 256;

/// Conflicts and stale caches resolve within milliseconds; cap the backoff well below the
/// default 1000 s so that a contended Instance is not parked for minutes.
const RATE_LIMIT: RateLimit = RateLimit { base: Duration::from_millis(10), max: Duration::from_secs(10), jitter: 0.5 };

/// Why scheduling one Instance failed; the Instance is retried with backoff.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("reading node {node} to reserve room on it failed")]
    ReadNode {
        node: String,
        #[source]
        source: ApiError,
    },
    #[error("checking whether {instance} still holds its reservation on node {node} failed")]
    ReadReserved {
        instance: ObjectRef,
        node: String,
        #[source]
        source: ApiError,
    },
    #[error(
        "the instance cache is at resourceVersion {current}, older than the {settled} node {node} requires to reserve room for {instance} there; retrying once it catches up"
    )]
    StaleCache { node: String, instance: ObjectRef, current: u64, settled: u64 },
    #[error("node {node} has no room for {instance} after all ({reasons}); the cache was stale")]
    NoRoom { node: String, instance: ObjectRef, reasons: String },
    #[error("reserving room for {instance} on node {node} failed")]
    Reserve {
        instance: ObjectRef,
        node: String,
        #[source]
        source: ApiError,
    },
    #[error("binding {instance} to node {node} failed")]
    Bind {
        instance: ObjectRef,
        node: String,
        #[source]
        source: ApiError,
    },
    #[error("writing the scheduling status of {instance} failed")]
    WriteStatus {
        instance: ObjectRef,
        #[source]
        source: ApiError,
    },
}

/// Runs the scheduler until `shutdown`. Nothing is decided before the Instance and Node caches
/// have synced, so that an empty cache never makes an Instance look unschedulable.
pub async fn run(ctx: Arc<Context>, shutdown: impl Future<Output = ()> + Send) {
    let mut shutdown = pin!(shutdown);
    tokio::select! {
        () = &mut shutdown => return,
        () = async { tokio::join!(ctx.instances.wait_synced(), ctx.nodes.wait_synced()); } => {}
    }
    let sched = Arc::new(Scheduler { ctx: ctx.clone(), cache: Mutex::new(Cache::new(&ctx)) });

    // Room appears when a Node's facts change (not on every heartbeat or reservation) ...
    let instances = ctx.instances.store();
    // Seeded with the Nodes as they are: every pending Instance is reconciled once at the start
    // anyway, and a large cluster's initial list should not queue them once per Node.
    let known = ctx.nodes.store().list().iter().map(|n| (n.meta().name.clone(), NodeFacts::of(n))).collect();
    let node_facts: Mutex<HashMap<String, NodeFacts>> = Mutex::new(known);
    let nodes_changed = ctx.nodes.subscribe().flat_map(move |change| {
        let name = change.object.meta().name.clone();
        let mut seen = lock(&node_facts);
        let changed = match change.kind {
            // A node going away makes no room.
            ChangeKind::Deleted => {
                seen.remove(&name);
                false
            }
            _ => {
                let facts = NodeFacts::of(&change.object);
                seen.insert(name, facts.clone()).as_ref() != Some(&facts)
            }
        };
        drop(seen);
        stream::iter(if changed { pending(&instances) } else { Vec::new() })
    });
    // ... and when an Instance bound somewhere finishes or goes away.
    let instances = ctx.instances.store();
    let instances_freed = ctx.instances.subscribe().flat_map(move |change| {
        let inst = &change.object;
        let frees = !node_name(inst).is_empty()
            && match change.kind {
                ChangeKind::Deleted => true,
                ChangeKind::Modified => is_finished(inst),
                ChangeKind::Added => false,
            };
        stream::iter(if frees { pending(&instances) } else { Vec::new() })
    });

    let controller = Controller::new(&ctx.instances, sched.clone())
        .triggers(nodes_changed)
        .triggers(instances_freed)
        .rate_limit(RATE_LIMIT)
        .metrics(NAME, ctx.metrics.clone())
        .run(reconcile, |_, _, _| Action::backoff(), WORKERS, shutdown);
    // The cache follows the informers for as long as the controller runs.
    tokio::select! {
        () = controller => {}
        () = sched.follow() => {}
    }
}

async fn reconcile(inst: Arc<Instance>, sched: Arc<Scheduler>) -> Result<Action, Error> {
    sched.schedule(&inst).await
}

/// The scheduler's state, shared by its workers.
struct Scheduler {
    ctx: Arc<Context>,
    cache: Mutex<Cache>,
}

/// A decision about one pending Instance.
enum Decision<'a> {
    /// This scheduler's bind of the Instance is in flight or not yet in the cache.
    InFlight,
    /// Fits nowhere; why.
    Unschedulable(String),
    /// Bind to this node; the room is assumed taken until the guard is kept or dropped.
    Bind(Assumption<'a>),
}

impl Scheduler {
    fn lock(&self) -> MutexGuard<'_, Cache> {
        lock(&self.cache)
    }

    /// One step for one Instance: see the module documentation.
    async fn schedule(&self, inst: &Arc<Instance>) -> Result<Action, Error> {
        if !node_name(inst).is_empty() {
            return self.mark_scheduled(inst).await;
        }
        if inst.meta().deletion_timestamp.is_some() || is_finished(inst) {
            return Ok(Action::await_change());
        }
        let req = match requests(inst, &self.ctx.config.overcommit) {
            Ok(req) => req,
            Err(why) => {
                // Nothing but a change of the Instance can fix this: no periodic retry.
                self.mark_unschedulable(inst, &format!("the instance's requests cannot be read: {why}")).await?;
                return Ok(Action::await_change());
            }
        };
        let assumption = match self.decide(inst, req) {
            Decision::InFlight => return Ok(Action::await_change()),
            Decision::Unschedulable(message) => {
                self.mark_unschedulable(inst, &message).await?;
                return Ok(Action::requeue(UNSCHEDULABLE_RETRY));
            }
            Decision::Bind(assumption) => assumption,
        };
        let key = ObjectRef::from_obj(inst.as_ref());
        let node = assumption.node.clone();
        self.reserve(inst, &node, req).await?;

        let mut bound = Instance::clone(inst);
        bound.spec.get_or_insert_with(Default::default).node_name = node.clone();
        match self.ctx.writer.update(bound).await {
            Ok(_) => {
                assumption.keep();
                info!(instance = %key, %node, "bound");
                // Recorded beside the next decisions, not before them: an Event is for people
                // and never changes what is decided.
                let (events, inst) = (self.ctx.events.clone(), Arc::clone(inst));
                tokio::spawn(async move {
                    let message = format!("assigned {key} to {node}");
                    events.record(inst.as_ref(), EventType::Normal, "Scheduled", &message).await;
                });
                Ok(Action::await_change())
            }
            // Deleted meanwhile: nothing to schedule. Its reservation dies with it.
            Err(ApiError::NotFound(_)) => Ok(Action::await_change()),
            Err(source) => Err(Error::Bind { instance: key, node, source }),
        }
    }

    /// Chooses a node for `inst` from the caches and, if one fits, assumes the room taken.
    fn decide(&self, inst: &Instance, req: Resources) -> Decision<'_> {
        let key = ObjectRef::from_obj(inst);
        let uid = inst.meta().uid.clone();
        let mut cache = self.lock();
        cache.sync();
        if cache.assumed.get(&key).is_some_and(|a| a.uid == uid) {
            return Decision::InFlight;
        }
        let cache = &mut *cache;
        match place_from(&cache.nodes, req, revision_key(inst).as_ref(), &mut cache.cursor) {
            Ok(node) => {
                let placement =
                    Placement { uid: uid.clone(), node: node.clone(), revision: revision_key(inst), requests: req };
                cache.assume(key.clone(), placement);
                Decision::Bind(Assumption { sched: self, key, uid, node, kept: false })
            }
            Err(message) => Decision::Unschedulable(message),
        }
    }

    /// Reserves room for `inst` on `node_name` in the Node's reservations; see the module
    /// documentation. Fails when the fresh Node shows no room (the cache was stale), when this
    /// scheduler's cache is older than the Node's settled-through version, or when another
    /// scheduler wrote the Node meanwhile (Conflict).
    async fn reserve(&self, inst: &Instance, node_name: &str, req: Resources) -> Result<(), Error> {
        let instance = ObjectRef::from_obj(inst);
        // Read before the Node: the cache is at least this current when it is consulted below.
        let current = version(&self.ctx.instances.store().resource_version()).unwrap_or(0);
        // The cached Node, when there is one: the write below is at its resourceVersion, so
        // a stale copy costs a Conflict and a retry, never a double booking.
        let mut node: Node = match self.ctx.nodes.store().get("", node_name) {
            Some(cached) => Node::clone(&cached),
            None => self
                .ctx
                .client
                .get("", node_name)
                .await
                .map_err(|source| Error::ReadNode { node: node_name.to_string(), source })?,
        };
        let mut settled = settled_through(&node);
        if current < settled {
            return Err(Error::StaleCache { node: node_name.to_string(), instance, current, settled });
        }
        let mut used = Resources::default();
        let mut counted = HashSet::new();
        let mut kept = Vec::new();
        for r in reservations(&node) {
            // Our own earlier entry (a bind that failed) is replaced below.
            if r.uid == inst.meta().uid || counted.contains(&r.uid) {
                continue;
            }
            let standing = self.standing(&r, node_name).await.map_err(|source| Error::ReadReserved {
                instance: r.instance.clone(),
                node: node_name.to_string(),
                source,
            })?;
            match standing {
                Standing::Released => {}
                // Counted below with the Instances the cache shows bound here.
                Standing::Settled(at) => settled = settled.max(at),
                Standing::Held => {
                    used = used.plus(r.requests);
                    counted.insert(r.uid.clone());
                    kept.push(r);
                }
            }
        }
        // Instances bound without a reservation (bound at creation, by hand, or whose
        // reservation was settled) count too.
        let own = inst.meta().uid.as_str();
        used = used.plus(self.lock().bound_requests(node_name, |uid| uid != own && !counted.contains(uid)));
        let unfit = check(&NodeFacts::of(&node), used, req);
        if !unfit.is_empty() {
            let reasons = unfit.iter().map(|(reason, free)| reason.describe(req, *free)).collect::<Vec<_>>().join(", ");
            return Err(Error::NoRoom { node: node_name.to_string(), instance, reasons });
        }
        kept.push(Reservation {
            uid: inst.meta().uid.clone(),
            instance: instance.clone(),
            resource_version: inst.meta().resource_version.clone(),
            requests: req,
        });
        let annotations = &mut node.meta_mut().annotations;
        annotations.insert(RESERVATIONS_ANNOTATION.to_string(), encode_reservations(&kept));
        if settled > 0 {
            annotations.insert(SETTLED_ANNOTATION.to_string(), settled.to_string());
        }
        self.ctx.writer.update(node).await.map_err(|source| Error::Reserve {
            instance,
            node: node_name.to_string(),
            source,
        })?;
        Ok(())
    }

    /// Where reservation `r` on `node` stands. The cache answers when what it shows is final
    /// or errs on the side of "held"; otherwise a fresh read does.
    async fn standing(&self, r: &Reservation, node: &str) -> ApiResult<Standing> {
        if let Some(cached) = self.ctx.instances.store().get_ref(&r.instance)
            && cached.meta().uid == r.uid
            && let Some(held) = holds(&cached, r, node)
        {
            if !held {
                return Ok(Standing::Released);
            }
            // The bind is in the cache: the entry can go, once every scheduler that reserves
            // here is made to have seen it.
            if node_name(&cached) == node
                && let Some(at) = version(&cached.meta().resource_version)
            {
                return Ok(Standing::Settled(at));
            }
            return Ok(Standing::Held);
        }
        match self.ctx.client.get::<Instance>(&r.instance.namespace, &r.instance.name).await {
            // Unbound at another resourceVersion: the reserved bind can no longer succeed. Bound
            // here but not in the cache yet: held, and settled by a later reservation.
            Ok(fresh) if fresh.meta().uid == r.uid => {
                Ok(if holds(&fresh, r, node).unwrap_or(false) { Standing::Held } else { Standing::Released })
            }
            Ok(_) | Err(ApiError::NotFound(_)) => Ok(Standing::Released),
            Err(e) => Err(e),
        }
    }

    /// Writes that `inst` fits nowhere, once per distinct message, with a `FailedScheduling`
    /// Event.
    async fn mark_unschedulable(&self, inst: &Instance, message: &str) -> Result<(), Error> {
        let mut status = inst.status.clone().unwrap_or_default();
        let before = status.clone();
        status.phase = "Pending".into();
        status.ready = false;
        status.reason = UNSCHEDULABLE.into();
        status.message = message.into();
        conditions::set(&mut status.conditions, &Cond::new(SCHEDULED_CONDITION, FALSE, UNSCHEDULABLE, message));
        if status == before {
            return Ok(());
        }
        let key = ObjectRef::from_obj(inst);
        let mut updated = inst.clone();
        updated.status = Some(status);
        match self.ctx.writer.update_status(updated).await {
            Ok(_) => {}
            Err(ApiError::NotFound(_)) => return Ok(()),
            Err(source) => return Err(Error::WriteStatus { instance: key, source }),
        }
        info!(instance = %key, %message, "unschedulable");
        self.ctx.events.record(inst, EventType::Warning, "FailedScheduling", message).await;
        Ok(())
    }

    /// Clears what [`Scheduler::mark_unschedulable`] wrote once the Instance is bound, leaving
    /// the rest of the status to the node agent.
    async fn mark_scheduled(&self, inst: &Instance) -> Result<Action, Error> {
        let Some(status) = &inst.status else { return Ok(Action::await_change()) };
        let stale_condition =
            conditions::get(&status.conditions, SCHEDULED_CONDITION).is_some_and(|c| c.status != TRUE);
        let stale_reason = status.reason == UNSCHEDULABLE;
        if !stale_condition && !stale_reason {
            return Ok(Action::await_change());
        }
        let mut status = status.clone();
        if stale_reason {
            status.reason.clear();
            status.message.clear();
        }
        conditions::set(&mut status.conditions, &Cond::true_(SCHEDULED_CONDITION));
        let mut updated = inst.clone();
        updated.status = Some(status);
        match self.ctx.writer.update_status(updated).await {
            Ok(_) | Err(ApiError::NotFound(_)) => Ok(Action::await_change()),
            Err(source) => Err(Error::WriteStatus { instance: ObjectRef::from_obj(inst), source }),
        }
    }

    /// Applies the caches' changes to the scheduler's cache as they come, until the informers
    /// are gone. Decisions apply whatever is pending themselves; this keeps the change streams
    /// from growing while no decision is made.
    async fn follow(&self) {
        std::future::poll_fn(|cx| {
            let mut cache = self.lock();
            cache.follower = Some(cx.waker().clone());
            if cache.drain(cx) { Poll::Pending } else { Poll::Ready(()) }
        })
        .await;
        std::future::pending::<()>().await
    }
}

/// Where one reservation on a Node stands, for the next reservation there.
enum Standing {
    /// Its bind may still land, or has landed where this scheduler's cache does not show it:
    /// the entry stays and its requests count.
    Held,
    /// Its Instance is bound there and the cache shows it, at this resourceVersion: the entry
    /// goes, and the Node's settled-through version is raised to cover it.
    Settled(u64),
    /// Its Instance provably holds nothing there: the entry goes.
    Released,
}

/// The room one decision took, released when dropped unless kept (the bind succeeded; the
/// cache then takes over once it shows the bind).
struct Assumption<'a> {
    sched: &'a Scheduler,
    key: ObjectRef,
    uid: String,
    node: String,
    kept: bool,
}

impl Assumption<'_> {
    fn keep(mut self) {
        self.kept = true;
    }
}

impl Drop for Assumption<'_> {
    fn drop(&mut self) {
        if !self.kept {
            self.sched.lock().forget(&self.key, &self.uid);
        }
    }
}

/// The pending Instances (to try again when room may have appeared).
fn pending(store: &Store<Instance>) -> Vec<ObjectRef> {
    store
        .list()
        .iter()
        .filter(|i| node_name(i).is_empty() && i.meta().deletion_timestamp.is_none() && !is_finished(i))
        .map(|i| ObjectRef::from_obj(i.as_ref()))
        .collect()
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // Every update of the guarded state completes before anything that can panic: a poisoned
    // lock still guards consistent state.
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

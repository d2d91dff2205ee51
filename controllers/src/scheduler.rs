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
//!    `max(cpu %, memory %)` after placement (least allocated), then the node name;
//! 3. **reserves** room on the chosen Node (see below), and
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
//! the annotation [`RESERVATIONS_ANNOTATION`] lists the Instances bound, or being bound, there by
//! a scheduler, with their requests. The reserving scheduler reads the Node fresh, drops the
//! entries it can prove released, checks that the Instance fits beside the others (and beside
//! the Instances its cache shows bound there without an entry), and writes the list back with
//! its own entry. The API server serialises writes of one Node, so each reservation is checked
//! against every earlier one: a scheduler whose cache is stale gets a Conflict, or finds the
//! Node full, and retries after a backoff.
//!
//! An entry is dropped only once its Instance provably holds nothing: it finished (Succeeded or
//! Failed), it is gone (NotFound, or another uid under its name), it is bound to another Node, or
//! it is still unbound at a resourceVersion other than the one the reservation was made at (its
//! bind, which carries that version, can then never succeed). Phases are taken as final once
//! Succeeded or Failed, as Kubernetes takes them.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::future::Future;
use std::pin::pin;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::{Poll, Waker};
use std::time::{Duration, Instant};

use futures::{StreamExt, stream};
use serde_json::{Value, json};
use stratus_api::Resource;
use stratus_api::capacity::Overcommit;
use stratus_api::quantity::{Format, Quantity};
use stratus_api::v1::{Instance, Node};
use stratus_client::runtime::{Action, Change, ChangeKind, Controller, ObjectRef, RateLimit, Store, Subscription};
use stratus_client::{Error as ApiError, Result as ApiResult};
use tracing::{info, warn};

use crate::context::Context;
use crate::events::EventType;
use crate::status::{self as conditions, Cond, FALSE, TRUE};

/// The controller's name in metrics and logs.
pub const NAME: &str = "scheduler";

/// The Node annotation holding the scheduler's reservations: a JSON array with one
/// `[uid, "namespace/name", resourceVersion, cpuMillis, memoryBytes]` per Instance bound or
/// being bound there. Written only by schedulers, always at the Node's resourceVersion.
pub use stratus_api::wellknown::annotations::SCHEDULER_RESERVATIONS as RESERVATIONS_ANNOTATION;

/// The Instance condition the scheduler owns, as Kubernetes' `PodScheduled`.
pub const SCHEDULED_CONDITION: &str = "Scheduled";

/// The status reason of an Instance that fits on no Node.
pub const UNSCHEDULABLE: &str = "Unschedulable";

/// How often an unschedulable Instance is tried again when nothing it waits for changes.
const UNSCHEDULABLE_RETRY: Duration = Duration::from_secs(15);

/// Decisions are serialised by a lock; more workers overlap the API round-trips of binds.
const WORKERS: usize = 4;

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

/// What an Instance asks for, or what a Node offers: millicores, bytes and a count of instances.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Resources {
    pub cpu_millis: i128,
    pub memory_bytes: i128,
    pub instances: i128,
}

impl Resources {
    fn plus(self, other: Resources) -> Resources {
        Resources {
            cpu_millis: self.cpu_millis.saturating_add(other.cpu_millis),
            memory_bytes: self.memory_bytes.saturating_add(other.memory_bytes),
            instances: self.instances.saturating_add(other.instances),
        }
    }

    fn minus(self, other: Resources) -> Resources {
        Resources {
            cpu_millis: self.cpu_millis.saturating_sub(other.cpu_millis),
            memory_bytes: self.memory_bytes.saturating_sub(other.memory_bytes),
            instances: self.instances.saturating_sub(other.instances),
        }
    }

    /// What one Instance takes when its requests cannot be read: its slot, nothing more.
    const ONE_INSTANCE: Resources = Resources { cpu_millis: 0, memory_bytes: 0, instances: 1 };
}

pub use stratus_api::serving_container;

/// An Instance's requests: per resource, its serving container's `resources.requests`, else
/// its limit divided by `policy`'s ratio, else nothing; and one instance. Fails, naming the
/// field, on a value that is not a non-negative quantity.
pub fn requests(inst: &Instance, policy: &Overcommit) -> Result<Resources, String> {
    let containers = inst.spec.as_ref().map(|s| s.containers.as_slice()).unwrap_or_default();
    let amounts = policy.requests(serving_container(containers).and_then(|c| c.resources.as_ref()))?;
    Ok(Resources { cpu_millis: amounts.cpu_millis, memory_bytes: amounts.memory_bytes, instances: 1 })
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
        .observe_queue(ctx.metrics.queue_observer(NAME))
        .run(reconcile, |_, _, _| Action::backoff(), WORKERS, shutdown);
    // The cache follows the informers for as long as the controller runs.
    tokio::select! {
        () = controller => {}
        () = sched.follow() => {}
    }
}

async fn reconcile(inst: Arc<Instance>, sched: Arc<Scheduler>) -> Result<Action, Error> {
    let start = Instant::now();
    let result = sched.schedule(&inst).await;
    sched.ctx.metrics.observe(NAME, start, result.is_ok());
    result
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
        match self.ctx.client.update(bound).await {
            Ok(_) => {
                assumption.keep();
                info!(instance = %key, %node, "bound");
                let message = format!("assigned {key} to {node}");
                self.ctx.events.record(inst.as_ref(), EventType::Normal, "Scheduled", &message).await;
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
        match place(&cache.nodes, &cache.usage, req, revision_key(inst).as_ref()) {
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
    /// documentation. Fails when the fresh Node shows no room (the cache was stale) or when
    /// another scheduler wrote the Node meanwhile (Conflict).
    async fn reserve(&self, inst: &Instance, node_name: &str, req: Resources) -> Result<(), Error> {
        let instance = ObjectRef::from_obj(inst);
        let mut node: Node = self
            .ctx
            .client
            .get("", node_name)
            .await
            .map_err(|source| Error::ReadNode { node: node_name.to_string(), source })?;
        let mut used = Resources::default();
        let mut counted = HashSet::new();
        let mut kept = Vec::new();
        for r in reservations(&node) {
            // Our own earlier entry (a bind that failed) is replaced below.
            if r.uid == inst.meta().uid || counted.contains(&r.uid) {
                continue;
            }
            let held = self.still_reserved(&r, node_name).await.map_err(|source| Error::ReadReserved {
                instance: r.instance.clone(),
                node: node_name.to_string(),
                source,
            })?;
            if held {
                used = used.plus(r.requests);
                counted.insert(r.uid.clone());
                kept.push(r);
            }
        }
        // Instances bound without a reservation (bound at creation, or by hand) count too.
        let bound = self.lock().bound_to(node_name);
        for p in bound {
            if p.uid != inst.meta().uid && counted.insert(p.uid.clone()) {
                used = used.plus(p.requests);
            }
        }
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
        node.meta_mut().annotations.insert(RESERVATIONS_ANNOTATION.to_string(), encode_reservations(&kept));
        self.ctx.client.update(node).await.map_err(|source| Error::Reserve {
            instance,
            node: node_name.to_string(),
            source,
        })?;
        Ok(())
    }

    /// Whether reservation `r` on `node` may still be, or become, a bind. The cache answers when
    /// what it shows is final or errs on the side of "held"; otherwise a fresh read does.
    async fn still_reserved(&self, r: &Reservation, node: &str) -> ApiResult<bool> {
        if let Some(cached) = self.ctx.instances.store().get_ref(&r.instance)
            && cached.meta().uid == r.uid
            && let Some(held) = holds(&cached, r, node)
        {
            return Ok(held);
        }
        match self.ctx.client.get::<Instance>(&r.instance.namespace, &r.instance.name).await {
            // Unbound at another resourceVersion: the reserved bind can no longer succeed.
            Ok(fresh) if fresh.meta().uid == r.uid => Ok(holds(&fresh, r, node).unwrap_or(false)),
            Ok(_) | Err(ApiError::NotFound(_)) => Ok(false),
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
        match self.ctx.client.update_status(updated).await {
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
        match self.ctx.client.update_status(updated).await {
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

/// Where an Instance sits, for accounting.
#[derive(Clone, Debug)]
struct Placement {
    uid: String,
    node: String,
    revision: Option<RevisionKey>,
    requests: Resources,
}

/// A revision: namespace and name.
type RevisionKey = (String, String);

/// What is taken on one Node: by the Instances the cache shows there and the assumed binds.
#[derive(Debug, Default)]
struct NodeUsage {
    used: Resources,
    /// What each revision holds here: its instances (for spreading) and their requests (to say
    /// where capacity went).
    by_revision: HashMap<RevisionKey, Resources>,
    /// The Instances the cache shows bound here (not the assumed ones).
    bound: HashMap<ObjectRef, Placement>,
}

/// What the scheduler needs to know of a Node.
#[derive(Clone, Debug, PartialEq, Eq)]
struct NodeFacts {
    ready: bool,
    /// Cordoned or being deleted.
    cordoned: bool,
    allocatable: Result<Resources, String>,
}

impl NodeFacts {
    fn of(node: &Node) -> NodeFacts {
        let status = node.status.clone().unwrap_or_default();
        let ready = conditions::is_true(&status.conditions, conditions::READY);
        let cordoned = node.spec.as_ref().is_some_and(|s| s.unschedulable) || node.meta().deletion_timestamp.is_some();
        let quantity = |key: &str| -> Result<Quantity, String> {
            let value = status.allocatable.get(key).map_or("0", String::as_str);
            let q: Quantity = value.parse().map_err(|e| format!("status.allocatable.{key}: {e}"))?;
            if q.is_negative() { Err(format!("status.allocatable.{key}: {value:?} is negative")) } else { Ok(q) }
        };
        // Allocatable is rounded down, and a quantity the node does not report is zero: a node
        // never offers more than it reported.
        let allocatable = (|| {
            Ok(Resources {
                cpu_millis: bounded(quantity("cpu")?.nanos() / 1_000_000),
                memory_bytes: bounded(quantity("memory")?.nanos() / 1_000_000_000),
                instances: bounded(quantity("instances")?.nanos() / 1_000_000_000),
            })
        })();
        NodeFacts { ready, cordoned, allocatable }
    }
}

/// The scheduler's view of the cluster, kept from the informers' change streams.
struct Cache {
    instance_changes: Subscription<Instance>,
    node_changes: Subscription<Node>,
    /// The follower's waker: a decision that drains the streams itself wakes it, since polling
    /// them with another waker unregistered its own.
    follower: Option<Waker>,
    /// Nodes by name, so that ties go to the first name.
    nodes: BTreeMap<String, NodeFacts>,
    usage: HashMap<String, NodeUsage>,
    /// Where each bound, unfinished Instance sits.
    placed: HashMap<ObjectRef, Placement>,
    /// Binds of this scheduler the cache does not show yet.
    assumed: HashMap<ObjectRef, Placement>,
    /// How requests left out are derived from limits.
    policy: Overcommit,
}

impl Cache {
    fn new(ctx: &Context) -> Cache {
        Cache {
            instance_changes: ctx.instances.subscribe(),
            node_changes: ctx.nodes.subscribe(),
            follower: None,
            nodes: BTreeMap::new(),
            usage: HashMap::new(),
            placed: HashMap::new(),
            assumed: HashMap::new(),
            policy: ctx.config.overcommit,
        }
    }

    /// Applies every change already delivered, so that the cache is at least as current as the
    /// informers' stores were when this was called (they notify before their readers see a
    /// change).
    fn sync(&mut self) {
        self.drain(&mut std::task::Context::from_waker(Waker::noop()));
        if let Some(follower) = &self.follower {
            follower.wake_by_ref();
        }
    }

    /// Applies the changes that are ready; returns whether any stream is still open.
    fn drain(&mut self, cx: &mut std::task::Context<'_>) -> bool {
        let mut open = false;
        loop {
            match self.node_changes.poll_next_unpin(cx) {
                Poll::Ready(Some(change)) => self.apply_node(&change),
                Poll::Ready(None) => break,
                Poll::Pending => {
                    open = true;
                    break;
                }
            }
        }
        loop {
            match self.instance_changes.poll_next_unpin(cx) {
                Poll::Ready(Some(change)) => self.apply_instance(&change),
                Poll::Ready(None) => break,
                Poll::Pending => {
                    open = true;
                    break;
                }
            }
        }
        open
    }

    fn apply_node(&mut self, change: &Change<Node>) {
        let name = change.object.meta().name.clone();
        match change.kind {
            ChangeKind::Deleted => {
                self.nodes.remove(&name);
            }
            ChangeKind::Added | ChangeKind::Modified => {
                self.nodes.insert(name, NodeFacts::of(&change.object));
            }
        }
    }

    fn apply_instance(&mut self, change: &Change<Instance>) {
        let key = change.key();
        let inst = &change.object;
        if let Some(old) = self.placed.remove(&key) {
            if let Some(usage) = self.usage.get_mut(&old.node) {
                usage.bound.remove(&key);
            }
            self.take(&old, false);
        }
        if change.kind != ChangeKind::Deleted
            && let Some(p) = placement(inst, &self.policy)
        {
            self.usage.entry(p.node.clone()).or_default().bound.insert(key.clone(), p.clone());
            self.take(&p, true);
            self.placed.insert(key.clone(), p);
        }
        // The cache now shows the assumed bind (or the Instance is gone): stop assuming it.
        let settled = self.assumed.get(&key).is_some_and(|a| {
            change.kind == ChangeKind::Deleted || inst.meta().uid != a.uid || !node_name(inst).is_empty()
        });
        if settled && let Some(a) = self.assumed.remove(&key) {
            self.take(&a, false);
        }
    }

    fn assume(&mut self, key: ObjectRef, p: Placement) {
        self.take(&p, true);
        if let Some(old) = self.assumed.insert(key, p) {
            self.take(&old, false);
        }
    }

    /// Releases an assumption of `key` (if it is still `uid`'s).
    fn forget(&mut self, key: &ObjectRef, uid: &str) {
        if self.assumed.get(key).is_some_and(|a| a.uid == uid)
            && let Some(a) = self.assumed.remove(key)
        {
            self.take(&a, false);
        }
    }

    /// Adds (`taken`) or removes a placement's share of its node.
    fn take(&mut self, p: &Placement, taken: bool) {
        let usage = self.usage.entry(p.node.clone()).or_default();
        usage.used = if taken { usage.used.plus(p.requests) } else { usage.used.minus(p.requests) };
        if let Some(rev) = &p.revision {
            let held = usage.by_revision.entry(rev.clone()).or_default();
            *held = if taken { held.plus(p.requests) } else { held.minus(p.requests) };
            if held.instances <= 0 {
                usage.by_revision.remove(rev);
            }
        }
        if usage.used == Resources::default() && usage.bound.is_empty() && usage.by_revision.is_empty() {
            self.usage.remove(&p.node);
        }
    }

    /// The Instances the cache shows bound to `node`, after applying what is pending.
    fn bound_to(&mut self, node: &str) -> Vec<Placement> {
        self.sync();
        self.usage.get(node).map(|u| u.bound.values().cloned().collect()).unwrap_or_default()
    }
}

/// Why a Node cannot take an Instance.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
enum Unfit {
    NotReady,
    Cordoned,
    BadAllocatable,
    Insufficient(Kind),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
enum Kind {
    Cpu,
    Memory,
    Instances,
}

impl Kind {
    fn of(self, r: Resources) -> i128 {
        match self {
            Kind::Cpu => r.cpu_millis,
            Kind::Memory => r.memory_bytes,
            Kind::Instances => r.instances,
        }
    }

    fn format(self, v: i128) -> String {
        match self {
            Kind::Cpu => Quantity::from_millis(v).to_string(),
            // Binary units when they are exact (512Mi), decimal otherwise (1G).
            Kind::Memory if v % 1024 == 0 => Quantity::from_units(v, Format::BinarySi).to_string(),
            Kind::Memory => Quantity::from_units(v, Format::DecimalSi).to_string(),
            Kind::Instances => v.to_string(),
        }
    }
}

impl Unfit {
    /// The reason as the unschedulable message words it; `max_free` is the most any rejected
    /// node has free of the resource that fell short.
    fn describe(self, req: Resources, max_free: i128) -> String {
        match self {
            Unfit::NotReady => "NotReady".into(),
            Unfit::Cordoned => "cordoned".into(),
            Unfit::BadAllocatable => "unreadable allocatable".into(),
            Unfit::Insufficient(Kind::Instances) => "Too many instances".into(),
            Unfit::Insufficient(kind) => {
                let name = if kind == Kind::Cpu { "cpu" } else { "memory" };
                format!(
                    "Insufficient {name} (need {}, {} free at most)",
                    kind.format(kind.of(req)),
                    kind.format(max_free)
                )
            }
        }
    }
}

/// Why `facts` (with `used` taken) cannot take `req`, with the amount free for each shortage;
/// empty when it fits. A node that is not Ready or is cordoned gets that one reason only.
fn check(facts: &NodeFacts, used: Resources, req: Resources) -> Vec<(Unfit, i128)> {
    if !facts.ready {
        return vec![(Unfit::NotReady, 0)];
    }
    if facts.cordoned {
        return vec![(Unfit::Cordoned, 0)];
    }
    let Ok(alloc) = &facts.allocatable else { return vec![(Unfit::BadAllocatable, 0)] };
    [Kind::Cpu, Kind::Memory, Kind::Instances]
        .into_iter()
        .filter_map(|kind| {
            let free = kind.of(*alloc).saturating_sub(kind.of(used)).max(0);
            (kind.of(req) > free).then_some((Unfit::Insufficient(kind), free))
        })
        .collect()
}

/// The best node for `req` (see the module documentation), or the unschedulable message.
fn place(
    nodes: &BTreeMap<String, NodeFacts>,
    usage: &HashMap<String, NodeUsage>,
    req: Resources,
    revision: Option<&RevisionKey>,
) -> Result<String, String> {
    let mut best: Option<((i128, i128), &str)> = None;
    // Per reason: how many nodes, and the most any of them has free.
    let mut reasons: BTreeMap<Unfit, (usize, i128)> = BTreeMap::new();
    for (name, facts) in nodes {
        let node_usage = usage.get(name);
        let used = node_usage.map(|u| u.used).unwrap_or_default();
        let unfit = check(facts, used, req);
        if !unfit.is_empty() {
            for (reason, free) in unfit {
                let entry = reasons.entry(reason).or_default();
                entry.0 += 1;
                entry.1 = entry.1.max(free);
            }
            continue;
        }
        let same_revision = revision.and_then(|r| node_usage?.by_revision.get(r)).map_or(0, |held| held.instances);
        let score = (same_revision, load(&facts.allocatable, used.plus(req)));
        // Nodes come in name order: a later node wins only with a strictly better score.
        if best.is_none_or(|(b, _)| score < b) {
            best = Some((score, name));
        }
    }
    if let Some((_, name)) = best {
        return Ok(name.to_string());
    }
    if nodes.is_empty() {
        return Err("0/0 nodes are available: no node is registered".into());
    }
    let mut reasons: Vec<_> = reasons.into_iter().collect();
    // Most common first; equal counts in a fixed order.
    reasons.sort_by(|(ra, (na, _)), (rb, (nb, _))| nb.cmp(na).then(ra.cmp(rb)));
    // Where the resource that fell short most often went.
    let short = reasons.iter().find_map(|(reason, _)| match reason {
        Unfit::Insufficient(kind @ (Kind::Cpu | Kind::Memory)) => Some(*kind),
        _ => None,
    });
    let parts: Vec<String> =
        reasons.into_iter().map(|(reason, (count, free))| format!("{count} {}", reason.describe(req, free))).collect();
    let mut message = format!("0/{} nodes are available: {}", nodes.len(), parts.join(", "));
    if let Some(kind) = short {
        let holders = largest_holders(usage, kind, HOLDERS_NAMED);
        if !holders.is_empty() {
            message.push_str("; largest holders: ");
            message.push_str(&holders.join(", "));
        }
    }
    Err(message)
}

/// How many revisions an unschedulable message names.
const HOLDERS_NAMED: usize = 3;

/// The `count` revisions that hold the most of `kind` over all nodes, most first, each as
/// `namespace/revision (N instances, X cpu)`.
fn largest_holders(usage: &HashMap<String, NodeUsage>, kind: Kind, count: usize) -> Vec<String> {
    let mut held: HashMap<&RevisionKey, Resources> = HashMap::new();
    for node in usage.values() {
        for (rev, r) in &node.by_revision {
            let total = held.entry(rev).or_default();
            *total = total.plus(*r);
        }
    }
    let mut held: Vec<(&RevisionKey, Resources)> = held.into_iter().filter(|(_, r)| kind.of(*r) > 0).collect();
    held.sort_by(|(ka, a), (kb, b)| kind.of(*b).cmp(&kind.of(*a)).then(ka.cmp(kb)));
    let name = if kind == Kind::Cpu { "cpu" } else { "memory" };
    held.into_iter()
        .take(count)
        .map(|((namespace, revision), r)| {
            let plural = if r.instances == 1 { "" } else { "s" };
            format!("{namespace}/{revision} ({} instance{plural}, {} {name})", r.instances, kind.format(kind.of(r)))
        })
        .collect()
}

/// How full a node would be, in millionths: the larger of its cpu and memory shares.
fn load(alloc: &Result<Resources, String>, after: Resources) -> i128 {
    let Ok(alloc) = alloc else { return i128::MAX };
    let share = |used: i128, total: i128| match (used, total) {
        (u, _) if u <= 0 => 0,
        (_, t) if t <= 0 => i128::MAX,
        (u, t) => u.saturating_mul(1_000_000) / t,
    };
    share(after.cpu_millis, alloc.cpu_millis).max(share(after.memory_bytes, alloc.memory_bytes))
}

/// One entry of a Node's [`RESERVATIONS_ANNOTATION`].
#[derive(Clone, Debug, PartialEq, Eq)]
struct Reservation {
    uid: String,
    instance: ObjectRef,
    /// The Instance's resourceVersion the bind is made at.
    resource_version: String,
    requests: Resources,
}

/// The reservations on `node`. Entries that cannot be read are skipped (only schedulers write
/// the annotation; one edited by hand loses its unreadable entries, never blocks the node).
fn reservations(node: &Node) -> Vec<Reservation> {
    let Some(raw) = node.meta().annotations.get(RESERVATIONS_ANNOTATION) else { return Vec::new() };
    let entries = match serde_json::from_str::<Vec<Value>>(raw) {
        Ok(entries) => entries,
        Err(e) => {
            warn!(node = %node.meta().name, error = %e, "ignoring an unreadable {RESERVATIONS_ANNOTATION} annotation");
            return Vec::new();
        }
    };
    entries
        .iter()
        .filter_map(|entry| {
            let parsed = decode_reservation(entry);
            if parsed.is_none() {
                warn!(node = %node.meta().name, %entry, "ignoring an unreadable reservation");
            }
            parsed
        })
        .collect()
}

fn decode_reservation(entry: &Value) -> Option<Reservation> {
    let [uid, instance, rv, cpu, memory] = entry.as_array()?.as_slice() else { return None };
    let (namespace, name) = instance.as_str()?.split_once('/')?;
    Some(Reservation {
        uid: uid.as_str()?.to_string(),
        instance: ObjectRef::new(namespace, name),
        resource_version: rv.as_str()?.to_string(),
        requests: Resources { cpu_millis: cpu.as_i64()?.into(), memory_bytes: memory.as_i64()?.into(), instances: 1 },
    })
}

fn encode_reservations(entries: &[Reservation]) -> String {
    let clamp = |v: i128| i64::try_from(v).unwrap_or(i64::MAX);
    let values: Vec<Value> = entries
        .iter()
        .map(|r| {
            json!([
                r.uid,
                format!("{}/{}", r.instance.namespace, r.instance.name),
                r.resource_version,
                clamp(r.requests.cpu_millis),
                clamp(r.requests.memory_bytes),
            ])
        })
        .collect();
    Value::Array(values).to_string()
}

/// Whether `inst` (the reservation's Instance: same uid) still holds `r` on `node`, when its
/// state proves it either way; `None` when it is unbound at another resourceVersion, which a
/// cached copy cannot tell from a stale one.
fn holds(inst: &Instance, r: &Reservation, node: &str) -> Option<bool> {
    if is_finished(inst) {
        return Some(false);
    }
    match node_name(inst) {
        bound if bound == node => Some(true),
        "" if inst.meta().resource_version == r.resource_version => Some(true),
        "" => None,
        _elsewhere => Some(false),
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

fn placement(inst: &Instance, policy: &Overcommit) -> Option<Placement> {
    let node = node_name(inst);
    if node.is_empty() || is_finished(inst) {
        return None;
    }
    Some(Placement {
        uid: inst.meta().uid.clone(),
        node: node.to_string(),
        revision: revision_key(inst),
        // An Instance bound with unreadable requests still takes its slot.
        requests: requests(inst, policy).unwrap_or(Resources::ONE_INSTANCE),
    })
}

fn revision_key(inst: &Instance) -> Option<RevisionKey> {
    let rev = inst.spec.as_ref().map(|s| s.revision_name.as_str()).unwrap_or_default();
    (!rev.is_empty()).then(|| (inst.meta().namespace.clone(), rev.to_string()))
}

/// The node an Instance is bound to; empty while pending.
pub(crate) fn node_name(inst: &Instance) -> &str {
    inst.spec.as_ref().map(|s| s.node_name.as_str()).unwrap_or_default()
}

/// Whether the Instance finished (Succeeded or Failed) and holds no resources any more.
pub fn is_finished(inst: &Instance) -> bool {
    inst.status.as_ref().is_some_and(|s| matches!(s.phase.as_str(), "Succeeded" | "Failed"))
}

/// Keeps any one amount far enough below `i128::MAX` that sums of them cannot overflow.
fn bounded(v: i128) -> i128 {
    v.clamp(0, i128::from(i64::MAX))
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // Every update of the guarded state completes before anything that can panic: a poisoned
    // lock still guards consistent state.
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use stratus_api::v1::{
        Condition, Container, InstanceSpec, InstanceStatus, NodeSpec, NodeStatus, ResourceRequirements,
    };

    use super::*;

    fn instance(requests: &[(&str, &str)], limits: &[(&str, &str)]) -> Instance {
        let map = |kv: &[(&str, &str)]| kv.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        let mut inst = Instance {
            spec: Some(InstanceSpec {
                revision_name: "web-00001".into(),
                containers: vec![
                    Container { name: "sidecar".into(), ..Default::default() },
                    Container {
                        name: "app".into(),
                        ports: vec![Default::default()],
                        resources: Some(ResourceRequirements { requests: map(requests), limits: map(limits) }),
                        ..Default::default()
                    },
                ],
                ..Default::default()
            }),
            ..Default::default()
        };
        inst.meta_mut().namespace = "default".into();
        inst.meta_mut().name = "web-1".into();
        inst.meta_mut().uid = "u1".into();
        inst.meta_mut().resource_version = "7".into();
        inst
    }

    fn facts(cpu: &str, memory: &str, instances: &str) -> NodeFacts {
        let mut node = Node {
            status: Some(NodeStatus {
                allocatable: [("cpu", cpu), ("memory", memory), ("instances", instances)]
                    .into_iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect(),
                conditions: vec![Condition { r#type: "Ready".into(), status: "True".into(), ..Default::default() }],
                ..Default::default()
            }),
            ..Default::default()
        };
        node.meta_mut().name = "n".into();
        NodeFacts::of(&node)
    }

    fn req(cpu_millis: i128, memory_bytes: i128) -> Resources {
        Resources { cpu_millis, memory_bytes, instances: 1 }
    }

    #[test]
    fn requests_are_the_serving_containers_requests_else_derived_from_its_limits() {
        let policy = Overcommit::default();
        let inst = instance(&[("cpu", "250m")], &[("cpu", "1"), ("memory", "512Mi")]);
        assert_eq!(requests(&inst, &policy), Ok(req(250, 512 << 20)));
        // Limits only, as every Cloud Run and Knative manifest: cpu overcommitted, memory not.
        let limits_only = instance(&[], &[("cpu", "1"), ("memory", "512Mi")]);
        assert_eq!(requests(&limits_only, &policy), Ok(req(50, 512 << 20)));
        let kubernetes = Overcommit::new(1.0, 1.0).unwrap();
        assert_eq!(requests(&limits_only, &kubernetes), Ok(req(1000, 512 << 20)));
        let generous = Overcommit::new(4.0, 2.0).unwrap();
        assert_eq!(requests(&limits_only, &generous), Ok(req(250, 256 << 20)));
        let none = instance(&[], &[]);
        assert_eq!(requests(&none, &policy), Ok(req(0, 0)));
        let bad = instance(&[("memory", "12XB")], &[]);
        let err = requests(&bad, &policy);
        assert!(err.clone().is_err_and(|e| e.starts_with("resources.requests.memory")), "{err:?}");
    }

    #[test]
    fn limits_overcommit_the_node_and_requests_fill_it() {
        // Two cores: twenty one-vCPU services by their limits (each asks 50m) ...
        let mut nodes = BTreeMap::new();
        nodes.insert("laptop".to_string(), facts("2", "24Gi", "110"));
        let policy = Overcommit::default();
        let one_vcpu = requests(&instance(&[], &[("cpu", "1"), ("memory", "512Mi")]), &policy).unwrap();
        let mut usage: HashMap<String, NodeUsage> = HashMap::new();
        for i in 0..40 {
            assert_eq!(place(&nodes, &usage, one_vcpu, None), Ok("laptop".into()), "instance {i}");
            let u = usage.entry("laptop".into()).or_default();
            u.used = u.used.plus(one_vcpu);
        }
        // ... and the forty-first finds the cpu requested in full.
        let err = place(&nodes, &usage, one_vcpu, None).unwrap_err();
        assert!(err.starts_with("0/1 nodes are available: 1 Insufficient cpu (need 50m, 0 free at most)"), "{err}");
        // Memory is never overcommitted: 24Gi holds 48 of 512Mi, by requests or by limits.
        let big = requests(&instance(&[], &[("cpu", "10m"), ("memory", "8Gi")]), &policy).unwrap();
        let mut usage: HashMap<String, NodeUsage> = HashMap::new();
        for _ in 0..3 {
            assert!(place(&nodes, &usage, big, None).is_ok());
            let u = usage.entry("laptop".into()).or_default();
            u.used = u.used.plus(big);
        }
        assert!(place(&nodes, &usage, big, None).unwrap_err().contains("Insufficient memory"));
    }

    #[test]
    fn the_unschedulable_message_names_the_largest_holders() {
        let mut nodes = BTreeMap::new();
        nodes.insert("a".to_string(), facts("1", "8Gi", "110"));
        let mut usage: HashMap<String, NodeUsage> = HashMap::new();
        let u = usage.entry("a".into()).or_default();
        let held = [("big", 3, 600), ("small", 1, 100), ("mid", 2, 300)];
        for (rev, instances, cpu) in held {
            let r = Resources { cpu_millis: cpu, memory_bytes: 1 << 20, instances };
            u.by_revision.insert(("default".into(), rev.into()), r);
            u.used = u.used.plus(r);
        }
        let err = place(&nodes, &usage, req(100, 0), None).unwrap_err();
        assert_eq!(
            err,
            "0/1 nodes are available: 1 Insufficient cpu (need 100m, 0 free at most); largest holders: \
             default/big (3 instances, 600m cpu), default/mid (2 instances, 300m cpu), \
             default/small (1 instance, 100m cpu)"
        );
    }

    #[test]
    fn allocatable_is_read_and_rounded_down() {
        let f = facts("1500m", "23Gi", "110");
        assert_eq!(f.allocatable, Ok(Resources { cpu_millis: 1500, memory_bytes: 23 << 30, instances: 110 }));
        assert!(f.ready && !f.cordoned);
        assert!(facts("lots", "1Gi", "1").allocatable.is_err());
    }

    #[test]
    fn spread_comes_before_least_allocated_and_ties_go_by_name() {
        let mut nodes = BTreeMap::new();
        nodes.insert("b".to_string(), facts("4", "8Gi", "110"));
        nodes.insert("a".to_string(), facts("4", "8Gi", "110"));
        let rev = ("default".to_string(), "web-00001".to_string());
        let mut usage: HashMap<String, NodeUsage> = HashMap::new();
        // Equal nodes: the first name.
        assert_eq!(place(&nodes, &usage, req(500, 0), Some(&rev)), Ok("a".into()));
        // "a" is emptier but already runs this revision: spread wins.
        let a = usage.entry("a".into()).or_default();
        a.by_revision.insert(rev.clone(), req(500, 0));
        a.used = req(500, 0);
        let b = usage.entry("b".into()).or_default();
        b.used = req(3000, 0);
        assert_eq!(place(&nodes, &usage, req(500, 0), Some(&rev)), Ok("b".into()));
        // Another revision: least allocated.
        assert_eq!(place(&nodes, &usage, req(500, 0), None), Ok("a".into()));
    }

    #[test]
    fn the_unschedulable_message_counts_the_reasons() {
        let mut nodes = BTreeMap::new();
        nodes.insert("a".to_string(), facts("1500m", "8Gi", "110"));
        nodes.insert("b".to_string(), facts("1", "8Gi", "110"));
        let mut not_ready = facts("8", "8Gi", "110");
        not_ready.ready = false;
        nodes.insert("c".to_string(), not_ready);
        let message = place(&nodes, &HashMap::new(), req(2000, 1 << 30), None);
        assert_eq!(
            message,
            Err("0/3 nodes are available: 2 Insufficient cpu (need 2, 1500m free at most), 1 NotReady".into())
        );
        let mut cordoned = facts("8", "8Gi", "0");
        assert_eq!(check(&cordoned, Resources::default(), req(1, 1)), vec![(Unfit::Insufficient(Kind::Instances), 0)]);
        cordoned.cordoned = true;
        assert_eq!(check(&cordoned, Resources::default(), req(1, 1)), vec![(Unfit::Cordoned, 0)]);
        assert_eq!(
            place(&BTreeMap::new(), &HashMap::new(), req(1, 1), None).map_err(|m| m.starts_with("0/0")),
            Err(true)
        );
    }

    #[test]
    fn memory_prints_in_the_units_that_are_exact() {
        assert_eq!(Kind::Memory.format(512 << 20), "512Mi");
        assert_eq!(Kind::Memory.format(1_000_000_000), "1G");
        assert_eq!(Kind::Cpu.format(1500), "1500m");
    }

    #[test]
    fn reservations_round_trip_and_skip_garbage() {
        let r = Reservation {
            uid: "u1".into(),
            instance: ObjectRef::new("default", "web-1"),
            resource_version: "42".into(),
            requests: req(500, 128 << 20),
        };
        let mut node = Node::default();
        let encoded = encode_reservations(std::slice::from_ref(&r));
        let with_garbage = encoded.replacen('[', "[[\"broken\"],", 1);
        node.meta_mut().annotations.insert(RESERVATIONS_ANNOTATION.into(), with_garbage);
        assert_eq!(reservations(&node), vec![r]);
        node.meta_mut().annotations.insert(RESERVATIONS_ANNOTATION.into(), "not json".into());
        assert_eq!(reservations(&node), vec![]);
    }

    #[test]
    fn a_reservation_is_released_only_on_proof() {
        let mut inst = instance(&[], &[]);
        let r = Reservation {
            uid: "u1".into(),
            instance: ObjectRef::new("default", "web-1"),
            resource_version: "7".into(),
            requests: req(0, 0),
        };
        // Unbound at the reserved version: the bind may still land.
        assert_eq!(holds(&inst, &r, "n1"), Some(true));
        // Unbound at another version: a cached copy cannot tell.
        inst.meta_mut().resource_version = "8".into();
        assert_eq!(holds(&inst, &r, "n1"), None);
        if let Some(spec) = inst.spec.as_mut() {
            spec.node_name = "n1".into();
        }
        assert_eq!(holds(&inst, &r, "n1"), Some(true));
        assert_eq!(holds(&inst, &r, "n2"), Some(false));
        inst.status = Some(InstanceStatus { phase: "Failed".into(), ..Default::default() });
        assert_eq!(holds(&inst, &r, "n1"), Some(false));
    }

    #[test]
    fn a_cordoned_or_deleted_node_takes_nothing() {
        let mut node = Node { spec: Some(NodeSpec { unschedulable: true }), ..Default::default() };
        assert!(NodeFacts::of(&node).cordoned);
        node.spec = None;
        node.meta_mut().deletion_timestamp = Some(Default::default());
        assert!(NodeFacts::of(&node).cordoned);
    }
}

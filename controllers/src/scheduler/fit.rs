//! The capacity model and its arithmetic, without I/O: what an Instance asks for, what a Node
//! offers and what is taken on it, whether an Instance fits, and which node is best (see the
//! [scheduler's documentation](super) for the rules).
//!
//! The values are defined here and the [`Cache`](super::cache) keeps them current, not the
//! other way round: where an Instance fits is decided, and tested, from values alone.

use std::collections::{BTreeMap, HashMap};

use stratus_api::Resource;
use stratus_api::capacity::Overcommit;
use stratus_api::quantity::{Format, Quantity};
use stratus_api::serving_container;
use stratus_api::v1::{Instance, Node};
use stratus_client::runtime::ObjectRef;

use crate::status as conditions;

/// What an Instance asks for, or what a Node offers: millicores, bytes and a count of instances.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Resources {
    pub cpu_millis: i128,
    pub memory_bytes: i128,
    pub instances: i128,
}

impl Resources {
    pub(super) fn plus(self, other: Resources) -> Resources {
        Resources {
            cpu_millis: self.cpu_millis.saturating_add(other.cpu_millis),
            memory_bytes: self.memory_bytes.saturating_add(other.memory_bytes),
            instances: self.instances.saturating_add(other.instances),
        }
    }

    pub(super) fn minus(self, other: Resources) -> Resources {
        Resources {
            cpu_millis: self.cpu_millis.saturating_sub(other.cpu_millis),
            memory_bytes: self.memory_bytes.saturating_sub(other.memory_bytes),
            instances: self.instances.saturating_sub(other.instances),
        }
    }

    /// What one Instance takes when its requests cannot be read: its slot, nothing more.
    pub(super) const ONE_INSTANCE: Resources = Resources { cpu_millis: 0, memory_bytes: 0, instances: 1 };
}

/// An Instance's requests: per resource, its serving container's `resources.requests`, else
/// its limit divided by `policy`'s ratio, else nothing; and one instance. Fails, naming the
/// field, on a value that is not a non-negative quantity.
pub fn requests(inst: &Instance, policy: &Overcommit) -> Result<Resources, String> {
    let containers = inst.spec.as_ref().map(|s| s.containers.as_slice()).unwrap_or_default();
    let amounts = policy.requests(serving_container(containers).and_then(|c| c.resources.as_ref()))?;
    Ok(Resources { cpu_millis: amounts.cpu_millis, memory_bytes: amounts.memory_bytes, instances: 1 })
}

/// A revision: namespace and name.
pub(super) type RevisionKey = (String, String);

/// Where an Instance sits, for accounting.
#[derive(Clone, Debug)]
pub(super) struct Placement {
    pub(super) uid: String,
    pub(super) node: String,
    pub(super) revision: Option<RevisionKey>,
    pub(super) requests: Resources,
}

/// What is taken on one Node: by the Instances the cache shows there and the assumed binds.
#[derive(Clone, Debug, Default)]
pub(super) struct NodeUsage {
    pub(super) used: Resources,
    /// What each revision holds here: its instances (for spreading) and their requests (to say
    /// where capacity went). A handful of entries, compared by number.
    by_revision: Vec<(RevisionId, Resources)>,
    /// Bit `id % 64` of each revision in `by_revision`: most nodes a placement looks at hold
    /// nothing of its revision, and this says so without following `by_revision` to the heap
    /// (a cache miss per node, most of a placement's time).
    revision_bits: u64,
    /// The Instances the cache shows bound here (not the assumed ones).
    pub(super) bound: HashMap<ObjectRef, Placement>,
}

impl NodeUsage {
    fn is_empty(&self) -> bool {
        self.used == Resources::default() && self.bound.is_empty() && self.by_revision.is_empty()
    }
}

/// A revision as the nodes' usages name it: a number given while any node holds the revision,
/// so that a placement compares a number on each node it looks at instead of looking two
/// strings up in a hash table there (hashing them, and a cache miss for each string).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(super) struct RevisionId(u64);

impl RevisionId {
    fn bit(self) -> u64 {
        1 << (self.0 % 64)
    }
}

/// The numbers of the revisions some node holds, each with how many nodes hold it.
#[derive(Debug, Default)]
struct Revisions {
    ids: HashMap<RevisionKey, (RevisionId, usize)>,
    keys: HashMap<RevisionId, RevisionKey>,
    next: u64,
}

impl Revisions {
    fn id(&self, key: &RevisionKey) -> Option<RevisionId> {
        self.ids.get(key).map(|(id, _)| *id)
    }

    /// `key`'s number, given one more node holds it.
    fn hold(&mut self, key: &RevisionKey) -> RevisionId {
        if let Some((id, nodes)) = self.ids.get_mut(key) {
            *nodes += 1;
            return *id;
        }
        let id = RevisionId(self.next);
        self.next += 1;
        self.ids.insert(key.clone(), (id, 1));
        self.keys.insert(id, key.clone());
        id
    }

    /// One node fewer holds `id`; forgotten when none does.
    fn release(&mut self, id: RevisionId) {
        let Some(key) = self.keys.get(&id) else { return };
        if let Some((_, nodes)) = self.ids.get_mut(key) {
            *nodes -= 1;
            if *nodes == 0 {
                self.ids.remove(key);
                self.keys.remove(&id);
            }
        }
    }
}

/// One node as the scheduler sees it: its facts while it is registered, and what is taken on
/// it (which can outlive the Node: Instances bound to a node that went away).
#[derive(Clone, Debug, Default)]
pub(super) struct NodeState {
    pub(super) facts: Option<NodeFacts>,
    pub(super) usage: NodeUsage,
}

/// The nodes by name, each with its facts and usage side by side: a placement walks them in
/// order and reads both from one entry, instead of looking each node's usage up in a hash
/// table (a cache miss per node, most of a decision's time at 5,000 nodes).
#[derive(Debug, Default)]
pub(super) struct Nodes {
    map: BTreeMap<String, NodeState>,
    /// How many have facts (are registered).
    registered: usize,
    revisions: Revisions,
}

impl Nodes {
    /// Sets or (with `None`) clears `name`'s facts.
    pub(super) fn set_facts(&mut self, name: &str, facts: Option<NodeFacts>) {
        match (self.map.get_mut(name), facts) {
            (Some(state), facts) => {
                match (state.facts.is_some(), facts.is_some()) {
                    (false, true) => self.registered += 1,
                    (true, false) => self.registered -= 1,
                    _ => {}
                }
                state.facts = facts;
                self.prune(name);
            }
            (None, Some(facts)) => {
                self.map.insert(name.to_string(), NodeState { facts: Some(facts), usage: NodeUsage::default() });
                self.registered += 1;
            }
            (None, None) => {}
        }
    }

    pub(super) fn usage(&self, name: &str) -> Option<&NodeUsage> {
        self.map.get(name).map(|s| &s.usage)
    }

    /// `name`'s usage, made empty if the node had none; [`Nodes::prune`] afterwards.
    pub(super) fn usage_mut(&mut self, name: &str) -> &mut NodeUsage {
        if !self.map.contains_key(name) {
            self.map.insert(name.to_string(), NodeState::default());
        }
        match self.map.get_mut(name) {
            Some(state) => &mut state.usage,
            None => unreachable!("inserted above"),
        }
    }

    /// Adds (`taken`) or removes `requests` held by `revision` on `node`, then forgets the node
    /// if it is neither registered nor holds anything.
    pub(super) fn take(&mut self, node: &str, revision: Option<&RevisionKey>, requests: Resources, taken: bool) {
        let usage = self.usage_mut(node);
        usage.used = if taken { usage.used.plus(requests) } else { usage.used.minus(requests) };
        if let Some(key) = revision {
            let (map, revisions) = (&mut self.map, &mut self.revisions);
            let Some(usage) = map.get_mut(node).map(|s| &mut s.usage) else { return };
            let held = &mut usage.by_revision;
            let known = revisions.id(key);
            let at = known.and_then(|id| held.iter().position(|(h, _)| *h == id));
            let at = match at {
                Some(at) => at,
                // Nothing of it here to give back.
                None if !taken => return self.prune(node),
                None => {
                    held.push((revisions.hold(key), Resources::default()));
                    held.len() - 1
                }
            };
            let (id, amount) = &mut held[at];
            *amount = if taken { amount.plus(requests) } else { amount.minus(requests) };
            if amount.instances <= 0 {
                let id = *id;
                held.swap_remove(at);
                revisions.release(id);
            }
            usage.revision_bits = held.iter().fold(0, |bits, (id, _)| bits | id.bit());
        }
        self.prune(node);
    }

    /// The number of `key`, if any node holds it.
    fn revision_id(&self, key: &RevisionKey) -> Option<RevisionId> {
        self.revisions.id(key)
    }

    fn revision_key(&self, id: RevisionId) -> Option<&RevisionKey> {
        self.revisions.keys.get(&id)
    }

    /// Forgets `name` once it is neither registered nor holds anything.
    pub(super) fn prune(&mut self, name: &str) {
        if self.map.get(name).is_some_and(|s| s.facts.is_none() && s.usage.is_empty()) {
            self.map.remove(name);
        }
    }

    /// How many nodes are registered.
    pub(super) fn len(&self) -> usize {
        self.registered
    }

    pub(super) fn is_empty(&self) -> bool {
        self.registered == 0
    }

    fn usages(&self) -> impl Iterator<Item = &NodeUsage> {
        self.map.values().map(|s| &s.usage)
    }

    /// The registered nodes in name order from `start` (all of them when `None`), wrapping
    /// round to those before it.
    fn from<'a>(&'a self, start: Option<&'a str>) -> impl Iterator<Item = (&'a String, &'a NodeFacts, &'a NodeUsage)> {
        use std::ops::Bound;
        let from = start.map_or(Bound::Unbounded, Bound::Included);
        let after = self.map.range::<str, _>((from, Bound::Unbounded));
        let before = start.map(|s| self.map.range::<str, _>((Bound::Unbounded, Bound::Excluded(s))));
        after
            .chain(before.into_iter().flatten())
            .filter_map(|(name, state)| Some((name, state.facts.as_ref()?, &state.usage)))
    }

    /// Nodes made of facts and usages kept apart, for tests.
    #[cfg(test)]
    pub(super) fn of(facts: &BTreeMap<String, NodeFacts>, usage: &HashMap<String, NodeUsage>) -> Nodes {
        let mut nodes = Nodes::default();
        for (name, f) in facts {
            nodes.set_facts(name, Some(f.clone()));
        }
        for (name, u) in usage {
            // Revisions held are numbered through `take`; a copied list would not be.
            assert!(u.by_revision.is_empty(), "build the revisions {name} holds with Nodes::take");
            *nodes.usage_mut(name) = u.clone();
        }
        nodes
    }
}

/// What the scheduler needs to know of a Node.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct NodeFacts {
    ready: bool,
    /// Cordoned or being deleted.
    cordoned: bool,
    allocatable: Result<Resources, String>,
}

impl NodeFacts {
    pub(super) fn of(node: &Node) -> NodeFacts {
        // Read in place: every reservation and heartbeat of a node comes through here.
        let status = node.status.as_ref();
        let ready = status.is_some_and(|s| conditions::is_true(&s.conditions, conditions::READY));
        let cordoned = node.spec.as_ref().is_some_and(|s| s.unschedulable) || node.meta().deletion_timestamp.is_some();
        let quantity = |key: &str| -> Result<Quantity, String> {
            let value = status.and_then(|s| s.allocatable.get(key)).map_or("0", String::as_str);
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

/// Why a Node cannot take an Instance.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(super) enum Unfit {
    NotReady,
    Cordoned,
    BadAllocatable,
    Insufficient(Kind),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(super) enum Kind {
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
    pub(super) fn describe(self, req: Resources, max_free: i128) -> String {
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
pub(super) fn check(facts: &NodeFacts, used: Resources, req: Resources) -> Vec<(Unfit, i128)> {
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

/// The best node for `req` among all nodes, in name order (see [`place_from`]).
#[cfg(test)]
pub(super) fn place(
    nodes: &BTreeMap<String, NodeFacts>,
    usage: &HashMap<String, NodeUsage>,
    req: Resources,
    revision: Option<&RevisionKey>,
) -> Result<String, String> {
    place_from(&Nodes::of(nodes, usage), req, revision, &mut Cursor::default())
}

/// Where the next placement starts looking among many nodes: the node after the last one the
/// previous placement looked at, so that successive placements look at different nodes.
#[derive(Debug, Default)]
pub(super) struct Cursor(Option<String>);

/// How many nodes that fit a placement looks for before it chooses among them, out of `all`,
/// as kube-scheduler's adaptive `percentageOfNodesToScore`: every node up to 100, then 50%
/// less a point per 125 nodes, at least 5% and at least 100 (500 of 5,000 nodes).
pub(super) fn nodes_to_score(all: usize) -> usize {
    if all <= 100 {
        return all;
    }
    let percent = 50usize.saturating_sub(all / 125).max(5);
    (all * percent / 100).max(100)
}

/// The best node for `req` (see the module documentation), or the unschedulable message.
/// Over more than 100 nodes, only the first [`nodes_to_score`] that fit, from `cursor` on
/// (wrapping), are scored, as kube-scheduler does: a decision then costs a fraction of the
/// nodes, and the cursor moves on so that the next one looks at others. The message of an
/// Instance that fits nowhere still counts every node (all were looked at).
pub(super) fn place_from(
    nodes: &Nodes,
    req: Resources,
    revision: Option<&RevisionKey>,
    cursor: &mut Cursor,
) -> Result<String, String> {
    let wanted = nodes_to_score(nodes.len());
    // No node holds a revision without a number: then it is nowhere.
    let revision = revision.and_then(|r| nodes.revision_id(r));
    let start = cursor.0.take().filter(|_| wanted < nodes.len());
    let mut order = nodes.from(start.as_deref());
    let mut feasible = 0;
    let mut best: Option<((i128, i128), &str)> = None;
    // Per reason: how many nodes, and the most any of them has free.
    let mut reasons: BTreeMap<Unfit, (usize, i128)> = BTreeMap::new();
    for (name, facts, node_usage) in order.by_ref() {
        let used = node_usage.used;
        let unfit = check(facts, used, req);
        if !unfit.is_empty() {
            for (reason, free) in unfit {
                let entry = reasons.entry(reason).or_default();
                entry.0 += 1;
                entry.1 = entry.1.max(free);
            }
            continue;
        }
        let same_revision = revision
            .filter(|r| node_usage.revision_bits & r.bit() != 0)
            .and_then(|r| node_usage.by_revision.iter().find(|(held, _)| *held == r))
            .map_or(0, |(_, held)| held.instances);
        let score = (same_revision, load(&facts.allocatable, used.plus(req)));
        // A node looked at later wins only with a strictly better score.
        if best.is_none_or(|(b, _)| score < b) {
            best = Some((score, name));
        }
        feasible += 1;
        if feasible == wanted {
            break;
        }
    }
    if wanted < nodes.len() {
        cursor.0 = order.next().map(|(name, ..)| name.clone());
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
        let holders = largest_holders(nodes, kind, HOLDERS_NAMED);
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
fn largest_holders(nodes: &Nodes, kind: Kind, count: usize) -> Vec<String> {
    let mut held: HashMap<RevisionId, Resources> = HashMap::new();
    for node in nodes.usages() {
        for (rev, r) in &node.by_revision {
            let total = held.entry(*rev).or_default();
            *total = total.plus(*r);
        }
    }
    let mut held: Vec<(&RevisionKey, Resources)> = held
        .into_iter()
        .filter(|(_, r)| kind.of(*r) > 0)
        .filter_map(|(id, r)| Some((nodes.revision_key(id)?, r)))
        .collect();
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
        // In 64 bits when it fits (always, for real amounts): 128-bit division is slow, and a
        // placement divides twice per node it looks at.
        (u, t) => match (i64::try_from(u).ok().and_then(|u| u.checked_mul(1_000_000)), i64::try_from(t)) {
            (Some(u), Ok(t)) => i128::from(u / t),
            _ => u.saturating_mul(1_000_000) / t,
        },
    };
    share(after.cpu_millis, alloc.cpu_millis).max(share(after.memory_bytes, alloc.memory_bytes))
}

pub(super) fn revision_key(inst: &Instance) -> Option<RevisionKey> {
    let rev = inst.spec.as_ref().map(|s| s.revision_name.as_str()).unwrap_or_default();
    (!rev.is_empty()).then(|| (inst.meta().namespace.clone(), rev.to_string()))
}

/// Keeps any one amount far enough below `i128::MAX` that sums of them cannot overflow.
fn bounded(v: i128) -> i128 {
    v.clamp(0, i128::from(i64::MAX))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use stratus_api::v1::{Condition, NodeSpec, NodeStatus};

    use super::*;
    use crate::scheduler::fixtures::{instance, req};

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
        let mut nodes = Nodes::of(&nodes, &HashMap::new());
        let held = [("big", 3, 600), ("small", 1, 100), ("mid", 2, 300)];
        for (rev, instances, cpu) in held {
            let r = Resources { cpu_millis: cpu, memory_bytes: 1 << 20, instances };
            nodes.take("a", Some(&("default".into(), rev.into())), r, true);
        }
        let err = place_from(&nodes, req(100, 0), None, &mut Cursor::default()).unwrap_err();
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
        let mut nodes = Nodes::of(&nodes, &HashMap::new());
        let place = |nodes: &Nodes, rev| place_from(nodes, req(500, 0), rev, &mut Cursor::default());
        // Equal nodes: the first name.
        assert_eq!(place(&nodes, Some(&rev)), Ok("a".into()));
        // "a" is emptier but already runs this revision: spread wins.
        nodes.take("a", Some(&rev), req(500, 0), true);
        nodes.take("b", None, req(3000, 0), true);
        assert_eq!(place(&nodes, Some(&rev)), Ok("b".into()));
        // Another revision: least allocated.
        assert_eq!(place(&nodes, None), Ok("a".into()));
        assert_eq!(place(&nodes, Some(&("default".into(), "web-00002".into()))), Ok("a".into()));
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
    fn a_cordoned_or_deleted_node_takes_nothing() {
        let mut node = Node { spec: Some(NodeSpec { unschedulable: true }), ..Default::default() };
        assert!(NodeFacts::of(&node).cordoned);
        node.spec = None;
        node.meta_mut().deletion_timestamp = Some(Default::default());
        assert!(NodeFacts::of(&node).cordoned);
    }

    #[test]
    fn a_nodes_usage_outlives_its_registration_and_only_registered_nodes_count() {
        let mut nodes = Nodes::default();
        nodes.set_facts("a", Some(facts("1", "1Gi", "110")));
        nodes.set_facts("b", Some(facts("1", "1Gi", "110")));
        nodes.usage_mut("a").used = req(1000, 0);
        assert_eq!(nodes.len(), 2);
        // "a" goes away with an instance still bound there: its usage stays, uncounted.
        nodes.set_facts("a", None);
        assert_eq!(nodes.len(), 1);
        assert_eq!(nodes.usage("a").map(|u| u.used), Some(req(1000, 0)));
        assert_eq!(place_from(&nodes, req(100, 0), None, &mut Cursor::default()), Ok("b".into()));
        // Back again, it is full.
        nodes.set_facts("a", Some(facts("1", "1Gi", "110")));
        assert_eq!(nodes.len(), 2);
        let full = place_from(&nodes, req(1000, 0), None, &mut Cursor::default());
        assert_eq!(full, Ok("b".into()));
        // Unregistered and empty: forgotten.
        nodes.set_facts("b", None);
        assert!(nodes.usage("b").is_none());
        nodes.usage_mut("a").used = Resources::default();
        nodes.set_facts("a", None);
        assert!(nodes.is_empty() && nodes.usage("a").is_none());
    }

    #[test]
    fn revisions_that_share_a_bit_are_still_told_apart() {
        let mut nodes = Nodes::default();
        nodes.set_facts("a", Some(facts("64", "8Gi", "110")));
        nodes.set_facts("b", Some(facts("64", "8Gi", "110")));
        let mut cordoned = facts("64", "8Gi", "110");
        cordoned.cordoned = true;
        nodes.set_facts("c", Some(cordoned));
        let rev = |i: usize| ("default".to_string(), format!("web-{i:05}"));
        // The first revision only on "c" (never chosen), so that it keeps its number; the next
        // 64 on "a" ("b" is fuller): the 65th shares its bit with the first.
        nodes.take("c", Some(&rev(0)), req(10, 0), true);
        for i in 1..65 {
            nodes.take("a", Some(&rev(i)), req(10, 0), true);
        }
        nodes.take("b", None, req(20_000, 0), true);
        let (first, last) = (nodes.revision_id(&rev(0)).unwrap(), nodes.revision_id(&rev(64)).unwrap());
        assert!(first != last && first.bit() == last.bit());
        assert_ne!(nodes.usage("a").unwrap().revision_bits & first.bit(), 0);
        // Spread first: "a" holds the 65th, which goes to "b"; "a" holds nothing of the first,
        // though its bit is set there, so the first goes to the emptier "a".
        let mut cursor = Cursor::default();
        assert_eq!(place_from(&nodes, req(10, 0), Some(&rev(64)), &mut cursor), Ok("b".into()));
        assert_eq!(place_from(&nodes, req(10, 0), Some(&rev(0)), &mut cursor), Ok("a".into()));
    }

    #[test]
    fn a_revision_has_a_number_while_a_node_holds_it() {
        let mut nodes = Nodes::default();
        nodes.set_facts("a", Some(facts("4", "8Gi", "110")));
        nodes.set_facts("b", Some(facts("4", "8Gi", "110")));
        let (web, api) =
            (("default".to_string(), "web-00001".to_string()), ("default".to_string(), "api-00001".to_string()));
        nodes.take("a", Some(&web), req(100, 0), true);
        nodes.take("a", Some(&web), req(100, 0), true);
        nodes.take("b", Some(&web), req(100, 0), true);
        nodes.take("b", Some(&api), req(100, 0), true);
        let id = nodes.revision_id(&web).unwrap();
        assert_eq!(nodes.revision_key(id), Some(&web));
        assert_eq!(nodes.usage("a").unwrap().by_revision, vec![(id, req(100, 0).plus(req(100, 0)))]);
        assert_eq!(nodes.usage("a").unwrap().revision_bits, id.bit());
        // Giving back what a node does not hold changes nothing of the revision.
        nodes.take("a", Some(&api), req(100, 0), false);
        assert!(nodes.revision_id(&api).is_some());
        // Until the last instance of it goes, from the last node.
        nodes.take("a", Some(&web), req(100, 0), false);
        nodes.take("a", Some(&web), req(100, 0), false);
        assert!(nodes.usage("a").unwrap().by_revision.is_empty());
        assert_eq!(nodes.usage("a").unwrap().revision_bits, 0);
        assert_eq!(nodes.revision_id(&web), Some(id));
        nodes.take("b", Some(&web), req(100, 0), false);
        assert_eq!((nodes.revision_id(&web), nodes.revision_key(id)), (None, None));
        // Held again, it gets a new number: an old one never names another revision.
        nodes.take("a", Some(&web), req(100, 0), true);
        assert!(nodes.revision_id(&web).is_some_and(|again| again != id));
        // A node that goes away once it holds nothing is forgotten.
        nodes.take("b", Some(&api), req(100, 0), false);
        nodes.set_facts("b", None);
        assert!(nodes.usage("b").is_none() && nodes.revision_id(&api).is_none());
    }

    #[test]
    fn over_many_nodes_a_placement_scores_a_sample_and_the_next_looks_further() {
        assert_eq!(nodes_to_score(3), 3);
        assert_eq!(nodes_to_score(100), 100);
        assert_eq!(nodes_to_score(1000), 420);
        assert_eq!(nodes_to_score(5000), 500);
        assert_eq!(nodes_to_score(100_000), 5000);
        // 1,000 equal, empty nodes: 420 are scored each time, from where the last look ended.
        let nodes: BTreeMap<String, NodeFacts> =
            (0..1000).map(|i| (format!("n{i:04}"), facts("4", "8Gi", "110"))).collect();
        let all = Nodes::of(&nodes, &HashMap::new());
        let mut cursor = Cursor::default();
        let chosen: Vec<String> = (0..4).map(|_| place_from(&all, req(100, 0), None, &mut cursor).unwrap()).collect();
        assert_eq!(chosen, ["n0000", "n0420", "n0840", "n0260"]);
        // Nothing fits: every node was looked at, and the message counts them all.
        let message = place_from(&all, req(5000, 0), None, &mut cursor).unwrap_err();
        assert!(message.starts_with("0/1000 nodes are available: 1000 Insufficient cpu"), "{message}");
        // A node that fits, beyond the first sample, is still found.
        let mut usage = HashMap::new();
        for i in 0..999 {
            let full = Resources { cpu_millis: 4000, memory_bytes: 0, instances: 1 };
            usage.insert(format!("n{i:04}"), NodeUsage { used: full, ..Default::default() });
        }
        assert_eq!(place_from(&Nodes::of(&nodes, &usage), req(100, 0), None, &mut cursor), Ok("n0999".into()));
    }
}

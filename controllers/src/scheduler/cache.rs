//! The scheduler's incremental view of the cluster: the Nodes' facts and what is taken on each,
//! kept from the informers' change streams, plus the binds this scheduler made that the caches
//! do not show yet (see "Accounting" in the [scheduler's documentation](super)).

use std::collections::HashMap;
use std::task::{Poll, Waker};

use futures::StreamExt;
use stratus_api::Resource;
use stratus_api::capacity::Overcommit;
use stratus_api::v1::{Instance, Node};
use stratus_client::runtime::{Change, ChangeKind, ObjectRef, Subscription};

use super::fit::{NodeFacts, Nodes, Placement, Resources, requests, revision_key};
use crate::context::Context;
use crate::instances::{is_finished, node_name};

/// The scheduler's view of the cluster, kept from the informers' change streams.
pub(super) struct Cache {
    instance_changes: Subscription<Instance>,
    node_changes: Subscription<Node>,
    /// The follower's waker: a decision that drains the streams itself wakes it, since polling
    /// them with another waker unregistered its own.
    pub(super) follower: Option<Waker>,
    /// Nodes by name (so that ties go to the first name), with what is taken on each.
    pub(super) nodes: Nodes,
    /// Where each bound, unfinished Instance sits.
    placed: HashMap<ObjectRef, Placement>,
    /// Binds of this scheduler the cache does not show yet.
    pub(super) assumed: HashMap<ObjectRef, Placement>,
    /// How requests left out are derived from limits.
    policy: Overcommit,
    /// Where the next placement starts looking (see [`super::fit::place_from`]).
    pub(super) cursor: super::fit::Cursor,
}

impl Cache {
    pub(super) fn new(ctx: &Context) -> Cache {
        Cache {
            instance_changes: ctx.instances.subscribe(),
            node_changes: ctx.nodes.subscribe(),
            follower: None,
            nodes: Nodes::default(),
            placed: HashMap::new(),
            assumed: HashMap::new(),
            policy: ctx.config.overcommit,
            cursor: Default::default(),
        }
    }

    /// Applies every change already delivered, so that the cache is at least as current as the
    /// informers' stores were when this was called (they notify before their readers see a
    /// change).
    pub(super) fn sync(&mut self) {
        self.drain(&mut std::task::Context::from_waker(Waker::noop()));
        if let Some(follower) = &self.follower {
            follower.wake_by_ref();
        }
    }

    /// Applies the changes that are ready; returns whether any stream is still open.
    pub(super) fn drain(&mut self, cx: &mut std::task::Context<'_>) -> bool {
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
        let name = &change.object.meta().name;
        match change.kind {
            ChangeKind::Deleted => self.nodes.set_facts(name, None),
            ChangeKind::Added | ChangeKind::Modified => self.nodes.set_facts(name, Some(NodeFacts::of(&change.object))),
        }
    }

    fn apply_instance(&mut self, change: &Change<Instance>) {
        let key = change.key();
        let inst = &change.object;
        if let Some(old) = self.placed.remove(&key) {
            self.nodes.usage_mut(&old.node).bound.remove(&key);
            self.take(&old, false);
        }
        if change.kind != ChangeKind::Deleted
            && let Some(p) = placement(inst, &self.policy)
        {
            self.nodes.usage_mut(&p.node).bound.insert(key.clone(), p.clone());
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

    pub(super) fn assume(&mut self, key: ObjectRef, p: Placement) {
        self.take(&p, true);
        if let Some(old) = self.assumed.insert(key, p) {
            self.take(&old, false);
        }
    }

    /// Releases an assumption of `key` (if it is still `uid`'s).
    pub(super) fn forget(&mut self, key: &ObjectRef, uid: &str) {
        if self.assumed.get(key).is_some_and(|a| a.uid == uid)
            && let Some(a) = self.assumed.remove(key)
        {
            self.take(&a, false);
        }
    }

    /// Adds (`taken`) or removes a placement's share of its node.
    fn take(&mut self, p: &Placement, taken: bool) {
        self.nodes.take(&p.node, p.revision.as_ref(), p.requests, taken);
    }

    /// The sum of the requests of the Instances the cache shows bound to `node` (after applying
    /// what is pending) whose uid `counts`.
    pub(super) fn bound_requests(&mut self, node: &str, counts: impl Fn(&str) -> bool) -> Resources {
        self.sync();
        let Some(usage) = self.nodes.usage(node) else { return Resources::default() };
        usage.bound.values().filter(|p| counts(&p.uid)).fold(Resources::default(), |sum, p| sum.plus(p.requests))
    }
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

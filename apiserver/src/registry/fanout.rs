//! Watches of one node's objects (`fieldSelector=spec.nodeName=…`: every agent watches its
//! Instances so), served from one store watch per kind instead of one each.
//!
//! With a store watch per API watch, every change of an Instance went to every agent's watch,
//! and each decoded it (and its previous value) and matched it against its selector, only to
//! drop it: at 5,000 nodes a bind cost 5,000 decodes, wake-ups and JSON conversions. Here a
//! [`Hub`] per kind decodes each change once and hands it to the watches of the nodes it names
//! (before and after the change, so that a watch also sees an Instance leave its node), found
//! by a map keyed by node name, as the watch cache of kube-apiserver indexes pod watches by
//! `spec.nodeName`.
//!
//! A hub keeps the last [`RING`] changes, so that a watch from a recent resourceVersion (an
//! agent's list is a moment older than its watch) is served from memory. A watch from before
//! what the ring holds, or made while the hub is not running, takes a store watch of its own,
//! as every watch did before. A watch that falls [`BUFFER`] changes behind ends with `Gone`, as
//! a store watch does, and its client lists again; so do all of a hub's watches when its store
//! watch ends (the next watch starts a new hub).

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use futures::StreamExt;
use futures::stream::BoxStream;
use stratus_api::{AnyObject, KindInfo};
use tokio::sync::mpsc;

use super::Registry;
use super::objects::prefix_of;
use crate::error::{ApiError, ApiResult};

/// How many changes a hub keeps for watches that start a little in the past.
pub(super) const RING: usize = 1024;

/// How many changes a watch may have undelivered before it is ended with `Gone`.
const BUFFER: usize = 1024;

/// One change of an object of the hub's kind, decoded once for every watch it concerns.
#[derive(Debug)]
pub(super) struct Change {
    pub(super) revision: i64,
    /// The object after the change; `None` when it was deleted.
    pub(super) object: Option<Arc<AnyObject>>,
    /// The object before the change (for a deletion, with the deletion's resourceVersion).
    pub(super) previous: Option<Arc<AnyObject>>,
}

impl Change {
    /// The nodes this change concerns: the object's node before and after it.
    fn nodes(&self) -> impl Iterator<Item = &str> {
        let before = self.previous.as_deref().and_then(node_of);
        let after = self.object.as_deref().and_then(node_of).filter(|n| Some(*n) != before);
        before.into_iter().chain(after)
    }
}

/// What a hub's watch receives.
#[derive(Debug, Clone)]
pub(super) enum Item {
    Change(Arc<Change>),
    /// Every change up to this revision has been delivered.
    Progress(i64),
}

/// The node an object is bound to (`spec.nodeName` of an Instance), if any.
fn node_of(obj: &AnyObject) -> Option<&str> {
    match obj {
        AnyObject::Instance(i) => i.spec.as_ref().map(|s| s.node_name.as_str()).filter(|n| !n.is_empty()),
        _ => None,
    }
}

/// The hubs of the kinds watched by node, started on the first such watch.
#[derive(Default)]
pub(super) struct Fanouts {
    /// Held while a hub starts, so that a kind never gets two.
    hubs: tokio::sync::Mutex<HashMap<&'static str, Arc<Hub>>>,
}

impl Fanouts {
    /// A stream of the changes concerning node `node` after revision `after`, from the hub of
    /// `info`'s kind; `None` when the hub cannot serve it (the caller then watches the store).
    pub(super) async fn subscribe(
        &self,
        registry: &Registry,
        info: &'static KindInfo,
        node: &str,
        after: i64,
    ) -> ApiResult<Option<BoxStream<'static, ApiResult<Item>>>> {
        let hub = {
            let mut hubs = self.hubs.lock().await;
            match hubs.get(info.kind) {
                Some(hub) if hub.running() => Arc::clone(hub),
                _ => {
                    let Some(hub) = Hub::start(registry, info).await? else { return Ok(None) };
                    hubs.insert(info.kind, Arc::clone(&hub));
                    hub
                }
            }
        };
        Ok(hub.subscribe(node, after))
    }

    /// How many watches the hubs serve (for tests and metrics).
    #[cfg(test)]
    pub(super) fn watchers(&self) -> usize {
        let hubs = self.hubs.try_lock().expect("no hub is starting");
        hubs.values().map(|h| h.state().subscribers.values().map(Vec::len).sum::<usize>()).sum()
    }
}

/// The changes of one kind, from one store watch, for the watches of each node.
pub(super) struct Hub {
    state: Mutex<State>,
}

struct State {
    /// False once the store watch ended: the hub serves no new watch.
    running: bool,
    /// Every change up to this revision has been handed out.
    position: i64,
    /// The ring holds every change after this revision.
    floor: i64,
    ring: VecDeque<Arc<Change>>,
    subscribers: HashMap<String, Vec<Subscriber>>,
}

struct Subscriber {
    /// Changes up to this revision were replayed from the ring (or precede the watch).
    after: i64,
    tx: mpsc::Sender<ApiResult<Item>>,
}

impl Hub {
    /// Starts a hub at the store's current revision, with its pump; `None` on a store never
    /// written, where a watch from revision 0 means "from now" and the ring could not say
    /// what it covers.
    async fn start(registry: &Registry, info: &'static KindInfo) -> ApiResult<Option<Arc<Hub>>> {
        let store = &registry.store;
        let at = store.current_revision().await?;
        if at <= 0 {
            return Ok(None);
        }
        let events = store.watch(&prefix_of(info, ""), at).await?;
        let hub = Arc::new(Hub {
            state: Mutex::new(State {
                running: true,
                position: at,
                floor: at,
                ring: VecDeque::new(),
                subscribers: HashMap::new(),
            }),
        });
        tokio::spawn(pump(Arc::clone(&hub), registry.clone(), info, events));
        Ok(Some(hub))
    }

    fn state(&self) -> MutexGuard<'_, State> {
        lock(&self.state)
    }

    fn running(&self) -> bool {
        self.state().running
    }

    /// Registers a watch of `node` after `after`, first replaying what the ring holds after it;
    /// `None` when the ring no longer reaches back to `after` or the hub has stopped.
    fn subscribe(&self, node: &str, after: i64) -> Option<BoxStream<'static, ApiResult<Item>>> {
        let mut state = self.state();
        if !state.running || after < state.floor {
            return None;
        }
        let (tx, rx) = mpsc::channel(BUFFER);
        for change in state.ring.iter().filter(|c| c.revision > after && c.nodes().any(|n| n == node)) {
            // More than a buffer's worth to replay: the store watch serves it instead.
            tx.try_send(Ok(Item::Change(Arc::clone(change)))).ok()?;
        }
        let after = after.max(state.position);
        state.subscribers.entry(node.to_owned()).or_default().push(Subscriber { after, tx });
        Some(futures::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|item| (item, rx)) }).boxed())
    }

    /// Hands `change` to the watches of the nodes it concerns and keeps it in the ring.
    fn publish(&self, change: Change) {
        let change = Arc::new(change);
        let mut state = self.state();
        state.position = state.position.max(change.revision);
        state.ring.push_back(Arc::clone(&change));
        while state.ring.len() > RING {
            if let Some(old) = state.ring.pop_front() {
                state.floor = old.revision;
            }
        }
        for node in change.nodes() {
            let Some(subscribers) = state.subscribers.get_mut(node) else { continue };
            subscribers.retain(|s| change.revision <= s.after || send(&s.tx, Ok(Item::Change(Arc::clone(&change)))));
            if subscribers.is_empty() {
                state.subscribers.remove(node);
            }
        }
    }

    /// Tells every watch that everything up to `revision` was delivered, and forgets the
    /// watches that ended.
    fn progress(&self, revision: i64) {
        let mut state = self.state();
        state.position = state.position.max(revision);
        let position = state.position;
        state.subscribers.retain(|_, subscribers| {
            // Never older than where the watch started (it may start ahead of the hub): its
            // client resumes from the bookmark, and must not get again what its list held.
            subscribers.retain(|s| match s.tx.try_send(Ok(Item::Progress(position.max(s.after)))) {
                // Behind: the next change tells it.
                Ok(()) | Err(mpsc::error::TrySendError::Full(_)) => true,
                Err(mpsc::error::TrySendError::Closed(_)) => false,
            });
            !subscribers.is_empty()
        });
    }

    /// Ends every watch with `error` and serves no new one.
    fn stop(&self, error: &ApiError) {
        let mut state = self.state();
        state.running = false;
        for (_, subscribers) in state.subscribers.drain() {
            for s in subscribers {
                let _ = s.tx.try_send(Err(error.clone()));
            }
        }
    }
}

/// Sends `item` to a watch; false when it ended or fell a whole buffer behind. Either way it
/// is then forgotten: its stream ends once drained, and the watch reads that end as `Gone`
/// (see [`gone`]): its client lists again.
fn send(tx: &mpsc::Sender<ApiResult<Item>>, item: ApiResult<Item>) -> bool {
    tx.try_send(item).is_ok()
}

/// What a watch of a hub reports when its stream ends without a word: it fell behind, or its
/// hub stopped.
pub(super) fn gone() -> ApiError {
    ApiError::new(crate::error::Reason::Gone, "the watch fell behind or its source restarted: list again")
}

/// Feeds `hub` from the store watch `events` until it ends or the server closes; then stops
/// the hub, ending its watches.
async fn pump(hub: Arc<Hub>, registry: Registry, info: &'static KindInfo, mut events: stratus_store::WatchStream) {
    let mut closing = registry.closing.clone();
    let mut beat = tokio::time::interval(super::read::HEARTBEAT);
    beat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let error = loop {
        let event = tokio::select! {
            event = events.next() => event,
            _ = beat.tick() => {
                let position = hub.state().position;
                hub.progress(position);
                continue;
            }
            _ = closing.wait_for(|c| *c) => break ApiError::new(crate::error::Reason::ServiceUnavailable, "the server is shutting down"),
        };
        let change = match event {
            None => break ApiError::new(crate::error::Reason::Gone, "the watch ended: list again"),
            Some(Err(e)) => break ApiError::from(e),
            Some(Ok(stratus_store::WatchEvent::Progress { revision })) => {
                // Told on the heartbeat, not on every store tick: a bookmark a second to
                // every agent would cost more than the changes do.
                let mut state = hub.state();
                state.position = state.position.max(revision);
                continue;
            }
            Some(Ok(stratus_store::WatchEvent::Put { kv, prev })) => {
                let decoded = registry
                    .decode(info, &kv)
                    .and_then(|obj| Ok((obj, prev.as_ref().map(|p| registry.decode(info, p)).transpose()?)));
                match decoded {
                    Ok((obj, prev)) => {
                        Change { revision: kv.mod_revision, object: Some(Arc::new(obj)), previous: prev.map(Arc::new) }
                    }
                    Err(e) => break e,
                }
            }
            Some(Ok(stratus_store::WatchEvent::Delete { prev, revision })) => match registry.decode(info, &prev) {
                Ok(mut obj) => {
                    obj.meta_mut().resource_version = revision.to_string();
                    Change { revision, object: None, previous: Some(Arc::new(obj)) }
                }
                Err(e) => break e,
            },
        };
        hub.publish(change);
    };
    hub.stop(&error);
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use std::time::Duration;

    use futures::StreamExt;
    use stratus_api::Resource;
    use stratus_api::v1::{Container, Instance, InstanceSpec};

    use super::*;
    use crate::auth::Caller;
    use crate::registry::{Selection, WatchEvent};

    fn instance(name: &str, node: &str) -> AnyObject {
        let mut inst = Instance::default();
        inst.meta_mut().name = name.into();
        inst.meta_mut().namespace = "default".into();
        inst.spec = Some(InstanceSpec {
            node_name: node.into(),
            containers: vec![Container { image: "img".into(), ..Default::default() }],
            ..Default::default()
        });
        inst.into_any()
    }

    fn of_node(node: &str) -> Selection {
        Selection { fields: format!("spec.nodeName={node}"), ..Default::default() }
    }

    async fn next(w: &mut BoxStream<'static, ApiResult<WatchEvent>>) -> (String, String) {
        let ev = tokio::time::timeout(Duration::from_secs(10), w.next()).await.expect("an event in time");
        let ev = ev.expect("the watch goes on").expect("not an error");
        (ev.kind.to_string(), ev.object.meta().name.clone())
    }

    /// Watches of nodes get exactly their node's changes, from one hub: as ADDED when bound
    /// there, MODIFIED, DELETED; a watch from a past revision gets the same from the ring; one
    /// that starts before the hub's ring watches the store, and sees the same.
    #[tokio::test]
    async fn watches_by_node_get_their_nodes_changes_from_one_hub() {
        let (_dir, _closing, registry) = Registry::for_test().await;
        let caller = Caller::system();
        let mut ns = stratus_api::v1::Namespace::default();
        ns.meta_mut().name = "default".into();
        registry.create(&caller, ns.into_any()).await.unwrap();
        let start = registry.store.current_revision().await.unwrap().to_string();
        registry.create(&caller, instance("before", "node-1")).await.unwrap();
        let at = registry.store.current_revision().await.unwrap().to_string();

        let kind = Instance::INFO.kind;
        let mut one = registry.watch(&caller, kind, &of_node("node-1"), &at, false).await.unwrap();
        let mut two = registry.watch(&caller, kind, &of_node("node-2"), &at, false).await.unwrap();
        registry.create(&caller, instance("a", "node-1")).await.unwrap();
        registry.create(&caller, instance("b", "node-2")).await.unwrap();
        let unbound = registry.create(&caller, instance("c", "")).await.unwrap();
        let AnyObject::Instance(mut c) = unbound else { panic!("an instance") };
        c.spec.as_mut().unwrap().node_name = "node-1".into();
        let bound = registry.update(&caller, c.into_any()).await.unwrap();
        let mut c = bound;
        c.meta_mut().labels.insert("k".into(), "v".into());
        registry.update(&caller, c).await.unwrap();
        registry.delete(&caller, kind, "default", "b", None).await.unwrap();
        registry.delete(&caller, kind, "default", "a", None).await.unwrap();

        let want_one = [("ADDED", "a"), ("ADDED", "c"), ("MODIFIED", "c"), ("DELETED", "a")];
        for want in want_one {
            assert_eq!(next(&mut one).await, (want.0.to_string(), want.1.to_string()));
        }
        for want in [("ADDED", "b"), ("DELETED", "b")] {
            assert_eq!(next(&mut two).await, (want.0.to_string(), want.1.to_string()));
        }
        assert_eq!(registry.fanouts.watchers(), 2, "both watches are the hub's");

        // From the revision both started at: replayed from the hub's ring.
        let mut again = registry.watch(&caller, kind, &of_node("node-1"), &at, false).await.unwrap();
        for want in want_one {
            assert_eq!(next(&mut again).await, (want.0.to_string(), want.1.to_string()));
        }
        assert_eq!(registry.fanouts.watchers(), 3);
        // From before the hub: from the store, with the change the hub never saw.
        let mut old = registry.watch(&caller, kind, &of_node("node-1"), &start, false).await.unwrap();
        assert_eq!(next(&mut old).await, ("ADDED".to_string(), "before".to_string()));
        for want in want_one {
            assert_eq!(next(&mut old).await, (want.0.to_string(), want.1.to_string()));
        }
        assert_eq!(registry.fanouts.watchers(), 3);

        // A watch that starts ahead of the hub (a change of another kind moved the store on)
        // never gets a bookmark older than its start.
        let mut other = stratus_api::v1::Namespace::default();
        other.meta_mut().name = "other".into();
        registry.create(&caller, other.into_any()).await.unwrap();
        let ahead = registry.store.current_revision().await.unwrap();
        let mut bookmarked = registry.watch(&caller, kind, &of_node("node-9"), &ahead.to_string(), true).await.unwrap();
        let hub = registry.fanouts.hubs.try_lock().unwrap().get(kind).cloned().unwrap();
        hub.progress(0);
        let ev = tokio::time::timeout(Duration::from_secs(10), bookmarked.next()).await.unwrap().unwrap().unwrap();
        assert_eq!(ev.kind, "BOOKMARK");
        assert!(ev.object.meta().resource_version.parse::<i64>().unwrap() >= ahead, "{:?}", ev.object.meta());
        drop(bookmarked);
        hub.progress(0);
        assert_eq!(registry.fanouts.watchers(), 3, "a heartbeat forgets the watches that ended");

        // A dropped watch is forgotten at the next change it would get.
        drop(one);
        registry.create(&caller, instance("d", "node-1")).await.unwrap();
        assert_eq!(next(&mut again).await, ("ADDED".to_string(), "d".to_string()));
        assert_eq!(registry.fanouts.watchers(), 2);
    }
}

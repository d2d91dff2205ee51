//! The local cache an informer keeps of one kind, and the notifications of its changes.
//!
//! [`Store`] is the read side: cheap to clone, read-only, handing out `Arc<K>` so that readers
//! never copy objects and can never change the cache (clone the object to change it). [`Writer`]
//! is the write side; the informer owns one, and tests can use one to fill a cache by hand.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::pin::Pin;
use std::sync::{Arc, PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::task::{Context, Poll};

use futures::Stream;
use stratus_api::Resource;
use tokio::sync::{mpsc, watch};

use super::ObjectRef;

/// What happened to an object.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ChangeKind {
    Added,
    Modified,
    Deleted,
}

/// One change of the cache, as subscribers see it. For [`ChangeKind::Deleted`], `object` is the
/// last state the cache knew.
#[derive(Debug)]
pub struct Change<K> {
    pub kind: ChangeKind,
    pub object: Arc<K>,
}

impl<K: Resource> Change<K> {
    /// The reference of the changed object.
    pub fn key(&self) -> ObjectRef {
        ObjectRef::from_obj(self.object.as_ref())
    }
}

// Derived Clone would require K: Clone; only the Arc is cloned.
impl<K> Clone for Change<K> {
    fn clone(&self) -> Self {
        Change { kind: self.kind, object: Arc::clone(&self.object) }
    }
}

/// A read-only view of the cache of one kind. Clones share the cache.
///
/// Lists are returned in key order (namespace, then name). Reads take a short lock and never
/// wait for the network.
pub struct Store<K> {
    shared: Arc<Shared<K>>,
}

/// The write side of a [`Store`]: applies changes and notifies subscribers, in order, under the
/// same lock, so that a subscriber never sees a change before the cache holds it.
///
/// Dropping the writer ends every [`Subscription`] (the cache stays readable, but goes stale).
pub struct Writer<K> {
    store: Store<K>,
}

/// A stream of the changes of a [`Store`], from [`Store::subscribe`]. Unbounded, so that a slow
/// subscriber delays nothing and misses nothing; it ends when the store's writer is dropped.
pub struct Subscription<K> {
    rx: mpsc::UnboundedReceiver<Change<K>>,
}

struct Shared<K> {
    state: RwLock<State<K>>,
    synced: watch::Sender<bool>,
}

struct State<K> {
    /// namespace → name → object; doubles as the namespace index.
    objects: BTreeMap<String, BTreeMap<String, Arc<K>>>,
    /// label key → label value → objects carrying that label.
    by_label: HashMap<String, HashMap<String, BTreeSet<ObjectRef>>>,
    subscribers: Vec<mpsc::UnboundedSender<Change<K>>>,
    /// The resourceVersion the cache is known to be current through (see
    /// [`Store::resource_version`]); empty until the writer says.
    resource_version: String,
    /// Set when the writer is gone: nothing will change any more.
    closed: bool,
}

impl<K> Clone for Store<K> {
    fn clone(&self) -> Self {
        Store { shared: Arc::clone(&self.shared) }
    }
}

impl<K: Resource> Store<K> {
    /// The object `namespace/name` (namespace empty for cluster-scoped kinds), if cached.
    pub fn get(&self, namespace: &str, name: &str) -> Option<Arc<K>> {
        self.read().objects.get(namespace)?.get(name).cloned()
    }

    /// The object `r` names, if cached.
    pub fn get_ref(&self, r: &ObjectRef) -> Option<Arc<K>> {
        self.get(&r.namespace, &r.name)
    }

    /// Every cached object.
    pub fn list(&self) -> Vec<Arc<K>> {
        self.read().objects.values().flat_map(|names| names.values().cloned()).collect()
    }

    /// The cached objects of one namespace (`""`: the cluster-scoped ones).
    pub fn list_by_namespace(&self, namespace: &str) -> Vec<Arc<K>> {
        self.read().objects.get(namespace).map(|names| names.values().cloned().collect()).unwrap_or_default()
    }

    /// The cached objects whose label `key` is `value`.
    pub fn list_by_label(&self, key: &str, value: &str) -> Vec<Arc<K>> {
        let state = self.read();
        let Some(refs) = state.by_label.get(key).and_then(|values| values.get(value)) else {
            return Vec::new();
        };
        refs.iter().filter_map(|r| state.objects.get(&r.namespace)?.get(&r.name).cloned()).collect()
    }

    /// How many objects are cached.
    pub fn len(&self) -> usize {
        self.read().objects.values().map(BTreeMap::len).sum()
    }

    /// Whether nothing is cached.
    pub fn is_empty(&self) -> bool {
        self.read().objects.is_empty()
    }

    /// The resourceVersion through which the cache is known to show every change: that of the
    /// last list, watch event or bookmark applied (the informer advances it after applying
    /// each). Empty until then, and for caches filled by hand. Changes up to it have been
    /// delivered to subscribers too.
    pub fn resource_version(&self) -> String {
        self.read().resource_version.clone()
    }

    /// Whether the cache has been filled by a complete list at least once. It stays true while
    /// the informer relists: the cache is then stale but whole.
    pub fn has_synced(&self) -> bool {
        *self.shared.synced.borrow()
    }

    /// Resolves once [`Store::has_synced`] is true. Wrap it in a timeout: a server that never
    /// answers keeps it pending.
    pub async fn wait_synced(&self) {
        let mut rx = self.shared.synced.subscribe();
        // `self` keeps the sender alive, so waiting can only end with the value turning true.
        let _ = rx.wait_for(|synced| *synced).await;
    }

    /// Subscribes to the changes of this cache. Every object already cached is first delivered
    /// as [`ChangeKind::Added`], so a late subscriber sees the same world as an early one.
    pub fn subscribe(&self) -> Subscription<K> {
        let (tx, rx) = mpsc::unbounded_channel();
        let mut state = self.write();
        for names in state.objects.values() {
            for obj in names.values() {
                // The receiver is still in hand: this send cannot fail.
                let _ = tx.send(Change { kind: ChangeKind::Added, object: Arc::clone(obj) });
            }
        }
        if !state.closed {
            state.subscribers.push(tx);
        }
        Subscription { rx }
    }

    // A panic while holding the lock cannot leave the state half-updated (the updates below
    // cannot panic between their steps), so a poisoned lock is safe to keep using.
    fn read(&self) -> RwLockReadGuard<'_, State<K>> {
        self.shared.state.read().unwrap_or_else(PoisonError::into_inner)
    }

    fn write(&self) -> RwLockWriteGuard<'_, State<K>> {
        self.shared.state.write().unwrap_or_else(PoisonError::into_inner)
    }
}

impl<K: Resource> Default for Writer<K> {
    fn default() -> Self {
        Writer::new()
    }
}

impl<K: Resource> Writer<K> {
    /// An empty, unsynced cache.
    pub fn new() -> Writer<K> {
        let state = State {
            objects: BTreeMap::new(),
            by_label: HashMap::new(),
            subscribers: Vec::new(),
            resource_version: String::new(),
            closed: false,
        };
        let shared = Shared { state: RwLock::new(state), synced: watch::Sender::new(false) };
        Writer { store: Store { shared: Arc::new(shared) } }
    }

    /// The read side of this cache.
    pub fn store(&self) -> Store<K> {
        self.store.clone()
    }

    /// Adds or replaces an object. Subscribers are told `Added` or `Modified`, unless the cache
    /// already holds this very resourceVersion (a repeated event changes nothing).
    pub fn upsert(&self, obj: K) {
        let mut state = self.store.write();
        let meta = obj.meta();
        let kind = match state.get(&meta.namespace, &meta.name) {
            Some(old) if old.meta().resource_version == meta.resource_version => return,
            Some(_) => ChangeKind::Modified,
            None => ChangeKind::Added,
        };
        let obj = Arc::new(obj);
        state.insert(Arc::clone(&obj));
        state.notify(Change { kind, object: obj });
    }

    /// Removes the object `obj` names; subscribers are told `Deleted` with `obj` as its final
    /// state. Nothing happens if it is not cached.
    pub fn delete(&self, obj: K) {
        let mut state = self.store.write();
        if state.remove(&ObjectRef::from_obj(&obj)).is_some() {
            state.notify(Change { kind: ChangeKind::Deleted, object: Arc::new(obj) });
        }
    }

    /// Replaces the whole cache with the result of a list, telling subscribers only the
    /// difference: objects that appeared, changed (another resourceVersion) or disappeared.
    /// This is how deletions missed while a watch was down become visible. Marks the cache
    /// synced.
    pub fn replace(&self, objects: Vec<K>) {
        let mut state = self.store.write();
        let mut gone: BTreeSet<ObjectRef> =
            state.objects.iter().flat_map(|(ns, names)| names.keys().map(move |n| ObjectRef::new(ns, n))).collect();
        for obj in objects {
            let r = ObjectRef::from_obj(&obj);
            gone.remove(&r);
            let kind = match state.get(&r.namespace, &r.name) {
                Some(old) if old.meta().resource_version == obj.meta().resource_version => continue,
                Some(_) => ChangeKind::Modified,
                None => ChangeKind::Added,
            };
            let obj = Arc::new(obj);
            state.insert(Arc::clone(&obj));
            state.notify(Change { kind, object: obj });
        }
        for r in gone {
            if let Some(old) = state.remove(&r) {
                state.notify(Change { kind: ChangeKind::Deleted, object: old });
            }
        }
        drop(state);
        self.mark_synced();
    }

    /// Records that the cache now shows every change through `resource_version` (after a
    /// list, an event or a bookmark at that version has been applied).
    pub fn advance(&self, resource_version: &str) {
        self.store.write().resource_version = resource_version.to_string();
    }

    /// Marks the cache synced: waiters of [`Store::wait_synced`] proceed.
    pub fn mark_synced(&self) {
        self.store.shared.synced.send_replace(true);
    }
}

impl<K> Drop for Writer<K> {
    fn drop(&mut self) {
        let mut state = self.store.shared.state.write().unwrap_or_else(PoisonError::into_inner);
        state.closed = true;
        state.subscribers.clear();
    }
}

impl<K: Resource> State<K> {
    fn get(&self, namespace: &str, name: &str) -> Option<&Arc<K>> {
        self.objects.get(namespace)?.get(name)
    }

    fn insert(&mut self, obj: Arc<K>) {
        let r = ObjectRef::from_obj(obj.as_ref());
        self.remove(&r);
        for (key, value) in &obj.meta().labels {
            self.by_label.entry(key.clone()).or_default().entry(value.clone()).or_default().insert(r.clone());
        }
        self.objects.entry(r.namespace).or_default().insert(r.name, obj);
    }

    /// Removes an object and its index entries, dropping index sets that become empty so that
    /// churn of labels or namespaces does not grow the maps.
    fn remove(&mut self, r: &ObjectRef) -> Option<Arc<K>> {
        let names = self.objects.get_mut(&r.namespace)?;
        let old = names.remove(&r.name)?;
        if names.is_empty() {
            self.objects.remove(&r.namespace);
        }
        for (key, value) in &old.meta().labels {
            if let Some(values) = self.by_label.get_mut(key) {
                if let Some(refs) = values.get_mut(value) {
                    refs.remove(r);
                    if refs.is_empty() {
                        values.remove(value);
                    }
                }
                if values.is_empty() {
                    self.by_label.remove(key);
                }
            }
        }
        Some(old)
    }

    /// Sends a change to every subscriber, forgetting those that went away.
    fn notify(&mut self, change: Change<K>) {
        self.subscribers.retain(|tx| tx.send(change.clone()).is_ok());
    }
}

impl<K> Subscription<K> {
    /// The next change, or `None` once the cache's writer is gone.
    pub async fn recv(&mut self) -> Option<Change<K>> {
        self.rx.recv().await
    }
}

impl<K> Stream for Subscription<K> {
    type Item = Change<K>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Change<K>>> {
        self.rx.poll_recv(cx)
    }
}

#[cfg(test)]
mod tests {
    use stratus_api::v1::{Instance, ObjectMeta};

    use super::*;

    fn inst(ns: &str, name: &str, rv: &str, labels: &[(&str, &str)]) -> Instance {
        let labels = labels.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        let metadata = ObjectMeta {
            namespace: ns.into(),
            name: name.into(),
            resource_version: rv.into(),
            labels,
            ..Default::default()
        };
        Instance { metadata: Some(metadata), ..Default::default() }
    }

    fn names(objs: Vec<Arc<Instance>>) -> Vec<String> {
        objs.iter().map(|o| ObjectRef::from_obj(o.as_ref()).to_string()).collect()
    }

    fn drain(sub: &mut Subscription<Instance>) -> Vec<(ChangeKind, String, String)> {
        let mut out = Vec::new();
        while let Ok(c) = sub.rx.try_recv() {
            out.push((c.kind, c.key().to_string(), c.object.meta().resource_version.clone()));
        }
        out
    }

    #[test]
    fn indexes_follow_updates_and_deletes() {
        let writer = Writer::new();
        let store = writer.store();
        writer.upsert(inst("a", "x", "1", &[("app", "web")]));
        writer.upsert(inst("a", "y", "2", &[("app", "db")]));
        writer.upsert(inst("b", "x", "3", &[("app", "web"), ("tier", "front")]));

        assert_eq!(store.len(), 3);
        assert_eq!(names(store.list()), ["a/x", "a/y", "b/x"]);
        assert_eq!(names(store.list_by_namespace("a")), ["a/x", "a/y"]);
        assert_eq!(names(store.list_by_label("app", "web")), ["a/x", "b/x"]);
        assert_eq!(store.get("b", "x").map(|o| o.meta().resource_version.clone()), Some("3".into()));

        // A relabel moves the object between index entries; a delete removes it from all.
        writer.upsert(inst("a", "x", "4", &[("app", "db")]));
        assert_eq!(names(store.list_by_label("app", "web")), ["b/x"]);
        assert_eq!(names(store.list_by_label("app", "db")), ["a/x", "a/y"]);
        writer.delete(inst("b", "x", "3", &[]));
        assert!(store.list_by_label("app", "web").is_empty());
        assert!(store.list_by_label("tier", "front").is_empty());
        assert!(store.list_by_namespace("b").is_empty());
        assert!(store.get("b", "x").is_none());

        let state = store.read();
        assert!(!state.by_label.contains_key("tier"), "empty index entries are dropped");
        assert!(!state.objects.contains_key("b"));
    }

    #[test]
    fn replace_emits_only_the_difference() {
        let writer = Writer::new();
        let store = writer.store();
        let mut sub = store.subscribe();
        writer.replace(vec![inst("a", "keep", "1", &[]), inst("a", "change", "2", &[]), inst("a", "drop", "3", &[])]);
        assert!(store.has_synced());
        assert_eq!(drain(&mut sub).len(), 3);

        writer.replace(vec![inst("a", "keep", "1", &[]), inst("a", "change", "5", &[]), inst("a", "new", "6", &[])]);
        let mut changes = drain(&mut sub);
        changes.sort_by(|a, b| a.1.cmp(&b.1));
        assert_eq!(
            changes,
            [
                (ChangeKind::Modified, "a/change".into(), "5".into()),
                // The deleted object arrives in its last known state.
                (ChangeKind::Deleted, "a/drop".into(), "3".into()),
                (ChangeKind::Added, "a/new".into(), "6".into()),
            ]
        );
        assert_eq!(names(store.list()), ["a/change", "a/keep", "a/new"]);
    }

    #[test]
    fn repeated_events_are_not_notified() {
        let writer = Writer::new();
        let mut sub = writer.store().subscribe();
        writer.upsert(inst("a", "x", "1", &[]));
        writer.upsert(inst("a", "x", "1", &[]));
        writer.delete(inst("a", "y", "1", &[]));
        assert_eq!(drain(&mut sub), [(ChangeKind::Added, "a/x".into(), "1".into())]);
    }

    #[test]
    fn late_subscribers_get_the_cache_first_and_end_with_the_writer() {
        let writer = Writer::new();
        writer.upsert(inst("a", "x", "1", &[]));
        let mut sub = writer.store().subscribe();
        writer.upsert(inst("a", "x", "2", &[]));
        let store = writer.store();
        drop(writer);
        assert_eq!(
            drain(&mut sub),
            [(ChangeKind::Added, "a/x".into(), "1".into()), (ChangeKind::Modified, "a/x".into(), "2".into())]
        );
        assert!(sub.rx.is_closed() && sub.rx.is_empty());
        // Subscribing to a cache whose writer is gone still replays it, then ends.
        let mut late = store.subscribe();
        assert_eq!(drain(&mut late).len(), 1);
        assert!(late.rx.is_closed());
    }
}

//! Reads: get, list (paged, filtered by selectors, each page read at one revision) and watch
//! (an initial list at one revision, then the changes after it, so that nothing is missed
//! between the two).

use futures::stream::{BoxStream, StreamExt};
use stratus_api::fence::Fence;
use stratus_api::selector::{FieldSelector, LabelSelector};
use stratus_api::v1::{Lease, Namespace};
use stratus_api::{AnyObject, KindInfo, Resource};
use stratus_store::ListOptions;

use super::access::Memo;
use super::objects::{key_of, kind_info, not_found, parse_rv, prefix_of, scoped_namespace};
use super::redact;
use super::{ListPage, MAX_PAGE, Registry, Selection, WatchEvent};
use crate::auth::{Caller, Verb};
use crate::error::{ApiError, ApiResult, Reason};

/// How many keys a filtered list reads from the store at a time.
const SCAN_CHUNK: usize = 500;

impl Registry {
    /// Whether a write of the leadership term `fence` may be made: the Lease it names still has
    /// its holder at its transition count ([`stratus_api::fence`]). Refused as FailedPrecondition
    /// naming who holds the Lease now. Without a fence, every write may be made.
    pub async fn fenced(&self, fence: Option<&Fence>) -> ApiResult<()> {
        let Some(fence) = fence else { return Ok(()) };
        let info = kind_info(Lease::INFO.kind)?;
        let lease = match self.read(info, &fence.namespace, &fence.name).await? {
            Some((AnyObject::Lease(lease), _)) => Some(lease),
            _ => None,
        };
        fence.admits(lease.as_ref()).map_err(|message| {
            self.metrics().fenced_writes.inc();
            ApiError::new(Reason::FailedPrecondition, message)
        })
    }

    pub async fn get(&self, caller: &Caller, kind: &str, namespace: &str, name: &str) -> ApiResult<AnyObject> {
        let info = kind_info(kind)?;
        let namespace = scoped_namespace(info, namespace);
        self.authorize(caller, Verb::Get, info, &namespace, name, None).await?;
        self.read(info, &namespace, name)
            .await?
            .map(|(o, _)| redact(o))
            .ok_or_else(|| not_found(info, &namespace, name))
    }

    pub async fn list(
        &self,
        caller: &Caller,
        kind: &str,
        sel: &Selection,
        limit: usize,
        token: &str,
    ) -> ApiResult<ListPage> {
        let info = kind_info(kind)?;
        let namespace = if info.namespaced { sel.namespace.clone() } else { String::new() };
        self.authorize_reads(caller, Verb::List, info, &namespace).await?;
        let mut memo = Memo::default();
        let labels = LabelSelector::parse(&sel.labels).map_err(|e| ApiError::new(Reason::BadRequest, e.to_string()))?;
        let fields = FieldSelector::parse(&sel.fields).map_err(|e| ApiError::new(Reason::BadRequest, e.to_string()))?;
        let limit = if limit == 0 || limit > MAX_PAGE { MAX_PAGE } else { limit };
        let prefix = prefix_of(info, &namespace);

        let (mut revision, mut start_after) = (None, None);
        if !token.is_empty() {
            let (rev, after) = decode_token(token)?;
            revision = Some(rev);
            start_after = Some(format!("{prefix}{after}"));
        }
        let mut items = Vec::new();
        // The token continues after the last item returned, never after a key the caller may
        // not see (its name would be in the token).
        let mut last_returned = start_after.clone();
        loop {
            let page = self
                .store
                .list(
                    &prefix,
                    ListOptions { start_after: start_after.clone(), limit: SCAN_CHUNK.max(limit + 1), revision },
                )
                .await
                .map_err(|e| match e {
                    stratus_store::Error::Compacted { .. } => {
                        ApiError::new(Reason::Gone, "the continue token has expired: list again from the start")
                    }
                    other => other.into(),
                })?;
            revision = Some(page.revision);
            let exhausted = !page.more;
            for kv in page.items {
                let obj = self.decode(info, &kv)?;
                if labels.matches(&obj.meta().labels)
                    && fields.matches(&obj)
                    && self.visible(caller, &obj, &mut memo).await?
                {
                    if items.len() == limit {
                        // One more match exists: the page is full and continues after the last item.
                        let last = last_returned.unwrap_or_default();
                        return Ok(ListPage {
                            items,
                            resource_version: page.revision.to_string(),
                            continue_token: encode_token(page.revision, last.strip_prefix(&prefix).unwrap_or(&last)),
                        });
                    }
                    items.push(redact(obj));
                    last_returned = Some(kv.key.clone());
                }
                start_after = Some(kv.key);
            }
            if exhausted {
                return Ok(ListPage {
                    items,
                    resource_version: revision.unwrap_or_default().to_string(),
                    continue_token: String::new(),
                });
            }
        }
    }

    /// Watches a kind. With `resource_version` empty or "0", every current object first arrives
    /// as ADDED; otherwise the changes after that version, or [`Reason::Gone`] when it is older
    /// than the history. An object that stops matching the selectors arrives as DELETED, one
    /// that starts to as ADDED, as in Kubernetes.
    pub async fn watch(
        &self,
        caller: &Caller,
        kind: &str,
        sel: &Selection,
        resource_version: &str,
        bookmarks: bool,
    ) -> ApiResult<BoxStream<'static, ApiResult<WatchEvent>>> {
        let info = kind_info(kind)?;
        let namespace = if info.namespaced { sel.namespace.clone() } else { String::new() };
        self.authorize_reads(caller, Verb::Watch, info, &namespace).await?;
        let mut memo = Memo::default();
        let labels = LabelSelector::parse(&sel.labels).map_err(|e| ApiError::new(Reason::BadRequest, e.to_string()))?;
        let fields = FieldSelector::parse(&sel.fields).map_err(|e| ApiError::new(Reason::BadRequest, e.to_string()))?;
        let prefix = prefix_of(info, &namespace);

        let mut initial = Vec::new();
        let after = match resource_version {
            "" | "0" => {
                // Every page is read at the first page's revision, and the watch starts there:
                // a change between pages is then in the watch, never lost between the two.
                let (mut start_after, mut at) = (None, None);
                loop {
                    let page =
                        self.store.list(&prefix, ListOptions { start_after, limit: MAX_PAGE, revision: at }).await?;
                    at = Some(page.revision);
                    for kv in &page.items {
                        let obj = self.decode(info, kv)?;
                        if labels.matches(&obj.meta().labels)
                            && fields.matches(&obj)
                            && self.visible(caller, &obj, &mut memo).await?
                        {
                            initial.push(Ok(WatchEvent { kind: "ADDED", object: redact(obj) }));
                        }
                    }
                    if !page.more {
                        break page.revision;
                    }
                    start_after = page.items.last().map(|kv| kv.key.clone());
                }
            }
            rv => {
                let rv = parse_rv(rv)?;
                let current = self.store.current_revision().await?;
                if rv > current {
                    return Err(ApiError::new(
                        Reason::BadRequest,
                        format!("resourceVersion {rv} is newer than the server's current version {current}"),
                    ));
                }
                rv
            }
        };
        // An agent's watch of its node's Instances: from the kind's hub, which hands it only
        // the changes of that node (see `fanout`), when it can.
        let by_node = fields.required("spec.nodeName").filter(|n| !n.is_empty() && info.kind == "Instance");
        if let Some(node) = by_node.map(str::to_owned)
            && let Some(items) = self.fanouts.subscribe(self, info, &node, after).await?
        {
            let selected = move |o: &AnyObject| {
                (namespace.is_empty() || o.meta().namespace == namespace)
                    && labels.matches(&o.meta().labels)
                    && fields.matches(o)
            };
            let events = self.hub_events(caller, items, selected, bookmarks, info);
            let mut closing = self.closing.clone();
            let closed = async move {
                let _ = closing.wait_for(|c| *c).await;
            };
            return Ok(futures::stream::iter(initial).chain(events).take_until(closed).boxed());
        }
        let stream = self.store.watch(&prefix, after).await?;
        let stream = if bookmarks { with_heartbeat(stream, after, HEARTBEAT) } else { stream };
        let selected = move |o: &AnyObject| labels.matches(&o.meta().labels) && fields.matches(o);
        let gauge = self.metrics.watch_started();
        let (registry, caller) = (self.clone(), caller.clone());
        let events = stream.filter_map(move |ev| {
            let _gauge = &gauge;
            let (registry, caller, selected) = (registry.clone(), caller.clone(), selected.clone());
            async move {
                // Whether the caller may read the object is asked again for every event: a
                // binding removed since the watch began hides what follows.
                let matches = async |o: &AnyObject| -> ApiResult<bool> {
                    Ok(selected(o) && registry.visible(&caller, o, &mut Memo::default()).await?)
                };
                match ev {
                    Err(e) => Some(Err(ApiError::from(e))),
                    Ok(stratus_store::WatchEvent::Put { kv, prev }) => {
                        let classify = async || -> ApiResult<Option<WatchEvent>> {
                            let obj = registry.decode(info, &kv)?;
                            let was = match &prev {
                                Some(p) => matches(&registry.decode(info, p)?).await?,
                                None => false,
                            };
                            let Some(kind) = change_kind(was, matches(&obj).await?) else { return Ok(None) };
                            Ok(Some(WatchEvent { kind, object: redact(obj) }))
                        };
                        classify().await.transpose()
                    }
                    Ok(stratus_store::WatchEvent::Delete { prev, revision }) => match registry.decode(info, &prev) {
                        Ok(mut obj) => match matches(&obj).await {
                            Ok(true) => {
                                obj.meta_mut().resource_version = revision.to_string();
                                Some(Ok(WatchEvent { kind: "DELETED", object: redact(obj) }))
                            }
                            Ok(false) => None,
                            Err(e) => Some(Err(e)),
                        },
                        Err(e) => Some(Err(e)),
                    },
                    Ok(stratus_store::WatchEvent::Progress { revision }) if bookmarks => {
                        let mut obj = bookmark_object(info);
                        obj.meta_mut().resource_version = revision.to_string();
                        Some(Ok(WatchEvent { kind: "BOOKMARK", object: obj }))
                    }
                    Ok(stratus_store::WatchEvent::Progress { .. }) => None,
                }
            }
        });
        let mut closing = self.closing.clone();
        let closed = async move {
            let _ = closing.wait_for(|c| *c).await;
        };
        Ok(futures::stream::iter(initial).chain(events).take_until(closed).boxed())
    }

    /// The events of a watch served by a hub: its changes classified as the store-fed watch
    /// classifies them (ADDED when an object starts to be `selected` and visible to `caller`,
    /// MODIFIED while it stays so, DELETED when it stops or goes), bookmarks when asked, and
    /// `Gone` when the hub's stream ends (the watch fell behind, or the hub stopped).
    fn hub_events(
        &self,
        caller: &Caller,
        items: BoxStream<'static, ApiResult<super::fanout::Item>>,
        selected: impl Fn(&AnyObject) -> bool + Clone + Send + Sync + 'static,
        bookmarks: bool,
        info: &'static KindInfo,
    ) -> BoxStream<'static, ApiResult<WatchEvent>> {
        use super::fanout::Item;
        let gauge = self.metrics.watch_started();
        let (registry, caller) = (self.clone(), caller.clone());
        let events = items.filter_map(move |item| {
            let _gauge = &gauge;
            let (registry, caller, selected) = (registry.clone(), caller.clone(), selected.clone());
            async move {
                let matches = async |o: &AnyObject| -> ApiResult<bool> {
                    Ok(selected(o) && registry.visible(&caller, o, &mut Memo::default()).await?)
                };
                let change = match item {
                    Err(e) => return Some(Err(e)),
                    Ok(Item::Progress(revision)) if bookmarks => {
                        let mut obj = bookmark_object(info);
                        obj.meta_mut().resource_version = revision.to_string();
                        return Some(Ok(WatchEvent { kind: "BOOKMARK", object: obj }));
                    }
                    Ok(Item::Progress(_)) => return None,
                    Ok(Item::Change(change)) => change,
                };
                let classify = async || -> ApiResult<Option<WatchEvent>> {
                    let was = match &change.previous {
                        Some(p) => matches(p).await?,
                        None => false,
                    };
                    let (kind, object) = match (&change.object, was) {
                        (Some(obj), was) => match change_kind(was, matches(obj).await?) {
                            Some(kind) => (kind, obj),
                            None => return Ok(None),
                        },
                        (None, true) => match &change.previous {
                            Some(prev) => ("DELETED", prev),
                            None => return Ok(None),
                        },
                        (None, false) => return Ok(None),
                    };
                    Ok(Some(WatchEvent { kind, object: redact(AnyObject::clone(object)) }))
                };
                classify().await.transpose()
            }
        });
        events.chain(futures::stream::once(async { Err(super::fanout::gone()) })).boxed()
    }

    /// Refuses a list or watch the caller may not make: in one namespace, as the namespace's
    /// roles say; across namespaces or of a cluster-scoped kind, only when no object of the
    /// kind could be the caller's (the items are then filtered one by one).
    async fn authorize_reads(
        &self,
        caller: &Caller,
        verb: Verb,
        info: &'static KindInfo,
        namespace: &str,
    ) -> ApiResult<()> {
        if info.namespaced && !namespace.is_empty() {
            self.authorize(caller, verb, info, namespace, "", None).await
        } else {
            self.authorize_collection(caller, verb, info)
        }
    }

    pub(super) async fn read(
        &self,
        info: &'static KindInfo,
        namespace: &str,
        name: &str,
    ) -> ApiResult<Option<(AnyObject, i64)>> {
        if name.is_empty() {
            return Err(ApiError::new(
                Reason::BadRequest,
                format!("a name is required to address a {}", info.singular),
            ));
        }
        let key = key_of(info, namespace, name);
        match self.store.get(&key).await? {
            Some(kv) => Ok(Some((self.decode(info, &kv)?, kv.mod_revision))),
            None => Ok(None),
        }
    }
}

/// How long a watch that asked for bookmarks goes without one: then it gets a bookmark at the
/// last version it was sent. The embedded store sends progress every second, etcd every ten
/// minutes; a client that hears nothing for a few heartbeats knows its stream is dead, even
/// when the connection under it says nothing (the console reconnects after 25 s).
pub const HEARTBEAT: std::time::Duration = std::time::Duration::from_secs(10);

/// `stream`, with a progress event at the last revision it delivered (`after` before any)
/// whenever `quiet` passes without an event. Ahead of the per-event filtering, so a bookmark
/// also says that filtering is not stuck.
/// What a watch reports of a change to an object that matched its selection before (`was`)
/// and matches after (`is`): ADDED when it starts to, MODIFIED while it does, DELETED when it
/// stops, nothing when it never did.
fn change_kind(was: bool, is: bool) -> Option<&'static str> {
    match (was, is) {
        (false, true) => Some("ADDED"),
        (true, true) => Some("MODIFIED"),
        (true, false) => Some("DELETED"),
        (false, false) => None,
    }
}

fn with_heartbeat(
    stream: stratus_store::WatchStream,
    after: i64,
    quiet: std::time::Duration,
) -> stratus_store::WatchStream {
    futures::stream::unfold((stream, after), move |(mut stream, last)| async move {
        // Cancelling `next` loses nothing: an event is taken only when it is ready.
        match tokio::time::timeout(quiet, stream.next()).await {
            Ok(Some(Ok(event))) => {
                let revision = event.revision().max(last);
                Some((Ok(event), (stream, revision)))
            }
            Ok(Some(Err(e))) => Some((Err(e), (stream, last))),
            Ok(None) => None,
            Err(_) => Some((Ok(stratus_store::WatchEvent::Progress { revision: last }), (stream, last))),
        }
    })
    .boxed()
}

fn bookmark_object(info: &KindInfo) -> AnyObject {
    // An empty encoding decodes to the kind's default object.
    let mut obj = match AnyObject::decode(info, &[]) {
        Ok(o) => o,
        Err(_) => Namespace::default().into_any(),
    };
    obj.set_type_meta();
    obj
}

/// A continue token, as Kubernetes': the revision the list is read at and where it goes on,
/// as the key of the last item relative to the list's prefix (`default/hello`), so that a
/// token names a position in any list and never a key outside it. Keys are made of names, so
/// the token is URL-safe as it is: `42.default/hello`.
fn encode_token(revision: i64, after: &str) -> String {
    format!("{revision}.{after}")
}

fn decode_token(token: &str) -> ApiResult<(i64, String)> {
    let bad = || ApiError::new(Reason::BadRequest, format!("continue token {token:?} is not one this server issued"));
    if !stratus_api::patterns::is_continue_token(token) {
        return Err(bad());
    }
    let (rev, after) = token.split_once('.').ok_or_else(bad)?;
    Ok((rev.parse::<i64>().map_err(|_| bad())?, after.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_quiet_watch_gets_a_bookmark_at_the_last_revision_it_was_sent() {
        let put = |revision: i64| {
            let kv = stratus_store::KeyValue {
                key: "/k".into(),
                value: Default::default(),
                create_revision: revision,
                mod_revision: revision,
                lease: 0,
            };
            Ok(stratus_store::WatchEvent::Put { kv, prev: None })
        };
        let events = futures::stream::iter([put(5), put(7)]).chain(futures::stream::pending()).boxed();
        let mut stream = with_heartbeat(events, 3, HEARTBEAT);
        let started = tokio::time::Instant::now();
        assert_eq!(stream.next().await.map(|e| e.map(|e| e.revision()).ok()), Some(Some(5)));
        assert_eq!(stream.next().await.map(|e| e.map(|e| e.revision()).ok()), Some(Some(7)));
        assert_eq!(started.elapsed(), std::time::Duration::ZERO, "events are not held back");
        for beat in 1..=2 {
            let event = stream.next().await.unwrap().unwrap();
            assert_eq!(event, stratus_store::WatchEvent::Progress { revision: 7 });
            assert_eq!(started.elapsed(), HEARTBEAT * beat);
        }
        // Before any event: the version the watch started after.
        let mut quiet = with_heartbeat(futures::stream::pending().boxed(), 3, HEARTBEAT);
        assert_eq!(quiet.next().await.unwrap().unwrap(), stratus_store::WatchEvent::Progress { revision: 3 });
    }

    #[test]
    fn continue_tokens_round_trip_and_reject_garbage() {
        let t = encode_token(42, "default/hello");
        assert_eq!(t, "42.default/hello");
        assert_eq!(decode_token(&t).ok(), Some((42, "default/hello".to_string())));
        for bad in ["", "x", "12", "12.A", "abc.00", "-1.a", "1.a b", "1.a%00"] {
            assert!(decode_token(bad).is_err(), "{bad}");
        }
    }
}

//! The generic resource logic behind both protocols: validation and defaulting, optimistic
//! concurrency, generations, status, finalizers, namespaces, lists and watches, over a
//! [`Store`]. gRPC and HTTP handlers only translate to and from these calls.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use futures::stream::{BoxStream, StreamExt};
use stratus_api::resource::{KINDS, lookup_kind};
use stratus_api::selector::{FieldSelector, LabelSelector};
use stratus_api::v1::{Namespace, NamespaceStatus};
use stratus_api::{AnyObject, KindInfo, Resource, Timestamp};
use stratus_store::{KeyValue, ListOptions, Store};
use tokio::sync::Notify;

use crate::admission::{Admission, Caller, Verb};
use crate::error::{ApiError, ApiResult, Reason};
use crate::metrics::Metrics;

/// The most items one list page returns; larger lists continue with a token.
pub const MAX_PAGE: usize = 1000;

/// How many keys a filtered list reads from the store at a time.
const SCAN_CHUNK: usize = 500;

/// The key prefix under which every object is stored.
const ROOT: &str = "/registry/";

/// How long a namespace's contents wait between sweeps while it terminates.
const NAMESPACE_SWEEP: Duration = Duration::from_secs(2);

/// What a list or watch selects.
#[derive(Debug, Clone, Default)]
pub struct Selection {
    /// Empty: every namespace.
    pub namespace: String,
    pub labels: String,
    pub fields: String,
}

/// One page of a list.
pub struct ListPage {
    pub items: Vec<AnyObject>,
    pub resource_version: String,
    pub continue_token: String,
}

/// One watch event, as both protocols send it.
#[derive(Debug, Clone, PartialEq)]
pub struct WatchEvent {
    /// "ADDED", "MODIFIED", "DELETED" or "BOOKMARK".
    pub kind: &'static str,
    pub object: AnyObject,
}

/// What apply did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Applied {
    Created,
    Configured,
    Unchanged,
}

impl Applied {
    pub fn as_str(self) -> &'static str {
        match self {
            Applied::Created => "created",
            Applied::Configured => "configured",
            Applied::Unchanged => "unchanged",
        }
    }
}

/// The resource registry. Cheap to clone.
#[derive(Clone)]
pub struct Registry {
    store: Arc<dyn Store>,
    admission: Arc<dyn Admission>,
    metrics: Arc<Metrics>,
    namespace_sweep: Arc<Notify>,
    /// Becomes true when the server shuts down; open watches end then.
    closing: tokio::sync::watch::Receiver<bool>,
    /// Connections to node agents, shared by every log request of both protocols.
    agents: Arc<crate::logs::AgentChannels>,
}

impl Registry {
    pub fn new(
        store: Arc<dyn Store>,
        admission: Arc<dyn Admission>,
        metrics: Arc<Metrics>,
        closing: tokio::sync::watch::Receiver<bool>,
    ) -> Registry {
        Registry {
            store,
            admission,
            metrics,
            namespace_sweep: Arc::new(Notify::new()),
            closing,
            agents: Arc::default(),
        }
    }

    pub fn store(&self) -> &Arc<dyn Store> {
        &self.store
    }

    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    /// The admission policy, for requests served outside the registry (logs).
    pub(crate) fn admission(&self) -> &dyn Admission {
        self.admission.as_ref()
    }

    pub(crate) fn agents(&self) -> &crate::logs::AgentChannels {
        &self.agents
    }

    /// Completes when the server starts shutting down: streams that never end by themselves
    /// (watches, followed logs) end then, so that connections can drain.
    pub(crate) fn closed(&self) -> impl Future<Output = ()> + Send + 'static {
        let mut closing = self.closing.clone();
        async move {
            let _ = closing.wait_for(|c| *c).await;
        }
    }

    /// Makes sure the `default` namespace exists.
    pub async fn bootstrap(&self) -> ApiResult<()> {
        let mut ns = Namespace::default();
        ns.meta_mut().name = stratus_api::DEFAULT_NAMESPACE.to_string();
        match self.create(&Caller::system(), ns.into_any()).await {
            Ok(_) => Ok(()),
            Err(e) if e.reason == Reason::AlreadyExists => Ok(()),
            Err(e) => Err(e),
        }
    }

    // ---------------------------------------------------------------- reads

    pub async fn get(&self, caller: &Caller, kind: &str, namespace: &str, name: &str) -> ApiResult<AnyObject> {
        let info = kind_info(kind)?;
        let namespace = scoped_namespace(info, namespace);
        self.admission.admit(caller, Verb::Get, info, &namespace, name, None)?;
        self.read(info, &namespace, name).await?.map(|(o, _)| o).ok_or_else(|| not_found(info, &namespace, name))
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
        self.admission.admit(caller, Verb::List, info, &namespace, "", None)?;
        let labels = LabelSelector::parse(&sel.labels).map_err(|e| ApiError::new(Reason::BadRequest, e.to_string()))?;
        let fields = FieldSelector::parse(&sel.fields).map_err(|e| ApiError::new(Reason::BadRequest, e.to_string()))?;
        let limit = if limit == 0 || limit > MAX_PAGE { MAX_PAGE } else { limit };
        let prefix = prefix_of(info, &namespace);

        let (mut revision, mut start_after) = (None, None);
        if !token.is_empty() {
            let (rev, key) = decode_token(token)?;
            if !key.starts_with(&prefix) {
                return Err(ApiError::new(Reason::BadRequest, "the continue token belongs to another list"));
            }
            revision = Some(rev);
            start_after = Some(key);
        }
        let mut items = Vec::new();
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
                let obj = decode(info, &kv)?;
                if labels.matches(&obj.meta().labels) && fields.matches(&obj) {
                    if items.len() == limit {
                        // One more match exists: the page is full and continues after the last item.
                        let last = start_after.unwrap_or_default();
                        return Ok(ListPage {
                            items,
                            resource_version: page.revision.to_string(),
                            continue_token: encode_token(page.revision, &last),
                        });
                    }
                    items.push(obj);
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
        self.admission.admit(caller, Verb::Watch, info, &namespace, "", None)?;
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
                        let obj = decode(info, kv)?;
                        if labels.matches(&obj.meta().labels) && fields.matches(&obj) {
                            initial.push(Ok(WatchEvent { kind: "ADDED", object: obj }));
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
        let stream = self.store.watch(&prefix, after).await?;
        let matches = move |o: &AnyObject| labels.matches(&o.meta().labels) && fields.matches(o);
        let gauge = self.metrics.watch_started();
        let events = stream.filter_map(move |ev| {
            let _gauge = &gauge;
            let out = match ev {
                Err(e) => Some(Err(ApiError::from(e))),
                Ok(stratus_store::WatchEvent::Put { kv, prev }) => {
                    let classify = || -> ApiResult<Option<WatchEvent>> {
                        let obj = decode(info, &kv)?;
                        let was = match &prev {
                            Some(p) => matches(&decode(info, p)?),
                            None => false,
                        };
                        let kind = match (was, matches(&obj)) {
                            (false, true) => "ADDED",
                            (true, true) => "MODIFIED",
                            (true, false) => "DELETED",
                            (false, false) => return Ok(None),
                        };
                        Ok(Some(WatchEvent { kind, object: obj }))
                    };
                    classify().transpose()
                }
                Ok(stratus_store::WatchEvent::Delete { prev, revision }) => match decode(info, &prev) {
                    Ok(mut obj) if matches(&obj) => {
                        obj.meta_mut().resource_version = revision.to_string();
                        Some(Ok(WatchEvent { kind: "DELETED", object: obj }))
                    }
                    Ok(_) => None,
                    Err(e) => Some(Err(e)),
                },
                Ok(stratus_store::WatchEvent::Progress { revision }) if bookmarks => {
                    let mut obj = bookmark_object(info);
                    obj.meta_mut().resource_version = revision.to_string();
                    Some(Ok(WatchEvent { kind: "BOOKMARK", object: obj }))
                }
                Ok(stratus_store::WatchEvent::Progress { .. }) => None,
            };
            futures::future::ready(out)
        });
        let mut closing = self.closing.clone();
        let closed = async move {
            let _ = closing.wait_for(|c| *c).await;
        };
        Ok(futures::stream::iter(initial).chain(events).take_until(closed).boxed())
    }

    // ---------------------------------------------------------------- writes

    pub async fn create(&self, caller: &Caller, mut obj: AnyObject) -> ApiResult<AnyObject> {
        prepare(&mut obj)?;
        let info = obj.info();
        let (namespace, name) = (obj.meta().namespace.clone(), obj.meta().name.clone());
        self.admission.admit(caller, Verb::Create, info, &namespace, &name, Some(&obj))?;
        if info.namespaced {
            self.check_namespace_open(&namespace).await?;
        }
        let meta = obj.meta_mut();
        meta.uid = uuid::Uuid::new_v4().to_string();
        meta.creation_timestamp = Some(now());
        meta.deletion_timestamp = None;
        meta.generation = 1;
        meta.resource_version.clear();
        // Status is written by controllers through UpdateStatus, never by a create;
        // a namespace starts Active.
        obj.clear_status();
        if let AnyObject::Namespace(ns) = &mut obj {
            ns.status = Some(NamespaceStatus { phase: "Active".into() });
        }
        let key = key_of(info, &namespace, &name);
        let rev = self.store.create(&key, obj.encode_to_vec().into(), 0).await.map_err(|e| match e {
            stratus_store::Error::AlreadyExists { .. } => {
                ApiError::new(Reason::AlreadyExists, format!("{} {name:?} already exists", info.plural))
            }
            other => other.into(),
        })?;
        obj.meta_mut().resource_version = rev.to_string();
        if info.namespaced {
            // The namespace may have started terminating, and its sweeper may have found it
            // empty, between the check above and this write: undo rather than orphan.
            if let Err(e) = self.check_namespace_open(&namespace).await {
                let _ = self.store.delete(&key, Some(rev)).await;
                return Err(e);
            }
        }
        Ok(obj)
    }

    /// Replaces labels, annotations, finalizers, owner references and spec. The object must
    /// carry the resourceVersion it was read at.
    pub async fn update(&self, caller: &Caller, mut obj: AnyObject) -> ApiResult<AnyObject> {
        let info = obj.info();
        let namespace = scoped_namespace(info, &obj.meta().namespace);
        let name = obj.meta().name.clone();
        let stored = self.read(info, &namespace, &name).await?;
        if let Some((current, _)) = &stored {
            stratus_api::knative::release_changed_annotations(&mut obj, current);
        }
        prepare(&mut obj)?;
        if let Some((current, _)) = &stored {
            validate_update(&obj, current)?;
        }
        self.admission.admit(caller, Verb::Update, info, &namespace, &name, Some(&obj))?;
        let expected = required_rv(&obj)?;
        let (current, rev) = stored.ok_or_else(|| not_found(info, &namespace, &name))?;
        if rev != expected {
            return Err(conflict(info, &name));
        }
        let next = merge_update(&current, &obj)?;
        self.write_merged(info, &current, next, rev).await
    }

    /// Replaces the status only. The object must carry the resourceVersion it was read at.
    pub async fn update_status(&self, caller: &Caller, mut obj: AnyObject) -> ApiResult<AnyObject> {
        obj.set_type_meta();
        let info = obj.info();
        let namespace = scoped_namespace(info, &obj.meta().namespace);
        let name = obj.meta().name.clone();
        self.admission.admit(caller, Verb::UpdateStatus, info, &namespace, &name, Some(&obj))?;
        let expected = required_rv(&obj)?;
        let (current, rev) =
            self.read(info, &namespace, &name).await?.ok_or_else(|| not_found(info, &namespace, &name))?;
        if rev != expected {
            return Err(conflict(info, &name));
        }
        let mut next = current.clone();
        next.copy_status_from(&obj);
        stratus_api::validation::validate(&next).map_err(|e| ApiError::invalid(info.kind, &name, e))?;
        if next.status_eq(&current) {
            return Ok(current);
        }
        self.put(info, next, rev).await
    }

    /// Deletes an object, or, while it has finalizers, marks it with a deletionTimestamp.
    /// Deleting a namespace terminates it: everything in it is deleted, then the namespace.
    pub async fn delete(
        &self,
        caller: &Caller,
        kind: &str,
        namespace: &str,
        name: &str,
        precondition: Option<&str>,
    ) -> ApiResult<AnyObject> {
        let info = kind_info(kind)?;
        let namespace = scoped_namespace(info, namespace);
        self.admission.admit(caller, Verb::Delete, info, &namespace, name, None)?;
        let precondition = precondition.filter(|p| !p.is_empty());
        // Without a precondition a delete means "whatever it is now": a concurrent write
        // (a status update, a lease renewal) is no reason to fail, so read again and retry.
        let mut attempts = 0;
        loop {
            attempts += 1;
            match self.delete_once(info, &namespace, name, precondition).await {
                Err(e) if e.reason == Reason::Conflict && precondition.is_none() && attempts < 8 => continue,
                other => return other,
            }
        }
    }

    async fn delete_once(
        &self,
        info: &'static KindInfo,
        namespace: &str,
        name: &str,
        precondition: Option<&str>,
    ) -> ApiResult<AnyObject> {
        let namespace = namespace.to_string();
        let (current, rev) =
            self.read(info, &namespace, name).await?.ok_or_else(|| not_found(info, &namespace, name))?;
        if let Some(want) = precondition
            && parse_rv(want)? != rev
        {
            return Err(conflict(info, name));
        }
        if let AnyObject::Namespace(_) = &current {
            if name == stratus_api::DEFAULT_NAMESPACE {
                return Err(ApiError::new(Reason::Forbidden, "namespace \"default\" cannot be deleted"));
            }
            let mut next = current.clone();
            if next.meta().deletion_timestamp.is_none() {
                next.meta_mut().deletion_timestamp = Some(now());
                if let AnyObject::Namespace(ns) = &mut next {
                    ns.status = Some(NamespaceStatus { phase: "Terminating".into() });
                }
                next = self.put(info, next, rev).await?;
            }
            self.namespace_sweep.notify_one();
            return Ok(next);
        }
        if !current.meta().finalizers.is_empty() {
            if current.meta().deletion_timestamp.is_some() {
                return Ok(current);
            }
            let mut next = current.clone();
            next.meta_mut().deletion_timestamp = Some(now());
            return self.put(info, next, rev).await;
        }
        let key = key_of(info, &namespace, name);
        let (_, deleted_at) = self.store.delete(&key, Some(rev)).await.map_err(|e| match e {
            stratus_store::Error::Conflict { .. } => conflict(info, name),
            stratus_store::Error::NotFound { .. } => not_found(info, &namespace, name),
            other => other.into(),
        })?;
        let mut gone = current;
        gone.meta_mut().resource_version = deleted_at.to_string();
        Ok(gone)
    }

    /// Creates the object, or brings an existing one's labels, annotations and spec to what is
    /// given (keeping status, and finalizers and owners unless given). Retries on conflicts
    /// with concurrent writers, since apply carries no resourceVersion of its own.
    pub async fn apply(&self, caller: &Caller, mut obj: AnyObject) -> ApiResult<(AnyObject, Applied)> {
        let raw = obj.clone();
        prepare(&mut obj)?;
        let info = obj.info();
        let (namespace, name) = (obj.meta().namespace.clone(), obj.meta().name.clone());
        self.admission.admit(caller, Verb::Apply, info, &namespace, &name, Some(&obj))?;
        for _ in 0..8 {
            let Some((current, rev)) = self.read(info, &namespace, &name).await? else {
                match self.create(caller, obj.clone()).await {
                    Ok(created) => return Ok((created, Applied::Created)),
                    Err(e) if e.reason == Reason::AlreadyExists => continue,
                    Err(e) => return Err(e),
                }
            };
            if current.meta().deletion_timestamp.is_some() {
                return Err(ApiError::new(
                    Reason::Conflict,
                    format!("{} {name:?} is being deleted; apply again once it is gone", info.singular),
                ));
            }
            let mut desired = raw.clone();
            stratus_api::knative::release_changed_annotations(&mut desired, &current);
            prepare(&mut desired)?;
            validate_update(&desired, &current)?;
            let (given, have) = (desired.meta_mut(), current.meta());
            if given.finalizers.is_empty() {
                given.finalizers = have.finalizers.clone();
            }
            if given.owner_references.is_empty() {
                given.owner_references = have.owner_references.clone();
            }
            let next = merge_update(&current, &desired)?;
            if next == current {
                return Ok((current, Applied::Unchanged));
            }
            match self.write_merged(info, &current, next, rev).await {
                Ok(o) => return Ok((o, Applied::Configured)),
                Err(e) if e.reason == Reason::Conflict => continue,
                Err(e) => return Err(e),
            }
        }
        Err(ApiError::new(
            Reason::Conflict,
            format!("{} {name:?} keeps changing concurrently; try again", info.singular),
        ))
    }

    // ---------------------------------------------------------------- namespaces

    /// Deletes the contents of terminating namespaces, and the namespaces once empty. Runs
    /// until `shutdown`; woken at once by a namespace delete, and every few seconds for
    /// contents whose finalizers were removed meanwhile.
    pub async fn run_namespace_finalizer(self, mut shutdown: tokio::sync::watch::Receiver<bool>) {
        loop {
            if let Err(e) = self.sweep_namespaces().await {
                tracing::warn!(error = %e, "sweeping terminating namespaces failed");
            }
            tokio::select! {
                _ = self.namespace_sweep.notified() => {}
                _ = tokio::time::sleep(NAMESPACE_SWEEP) => {}
                _ = shutdown.changed() => return,
            }
        }
    }

    async fn sweep_namespaces(&self) -> ApiResult<()> {
        let system = Caller::system();
        let ns_info = &<Namespace as Resource>::INFO;
        let namespaces = self.store.list(&prefix_of(ns_info, ""), ListOptions::default()).await?;
        for kv in namespaces.items {
            let ns = decode(ns_info, &kv)?;
            if ns.meta().deletion_timestamp.is_none() {
                continue;
            }
            let name = ns.meta().name.clone();
            let mut empty = true;
            for info in KINDS.iter().filter(|k| k.namespaced) {
                let contents = self.store.list(&prefix_of(info, &name), ListOptions::default()).await?;
                for item in contents.items {
                    empty = false;
                    let obj = decode(info, &item)?;
                    if obj.meta().deletion_timestamp.is_none() {
                        match self.delete(&system, info.kind, &name, &obj.meta().name, None).await {
                            Ok(_) => {}
                            Err(e) if matches!(e.reason, Reason::NotFound | Reason::Conflict) => {}
                            Err(e) => return Err(e),
                        }
                    }
                }
            }
            if empty && ns.meta().finalizers.is_empty() {
                match self.store.delete(&kv.key, Some(kv.mod_revision)).await {
                    Ok(_) => tracing::info!(namespace = %name, "namespace deleted"),
                    Err(stratus_store::Error::Conflict { .. } | stratus_store::Error::NotFound { .. }) => {}
                    Err(e) => return Err(e.into()),
                }
            }
        }
        Ok(())
    }

    async fn check_namespace_open(&self, namespace: &str) -> ApiResult<()> {
        let info = &<Namespace as Resource>::INFO;
        match self.read(info, "", namespace).await? {
            None => Err(ApiError::new(Reason::NotFound, format!("namespace {namespace:?} not found"))),
            Some((ns, _)) if ns.meta().deletion_timestamp.is_some() => Err(ApiError::new(
                Reason::Forbidden,
                format!("namespace {namespace:?} is being terminated: nothing new can be created in it"),
            )),
            Some(_) => Ok(()),
        }
    }

    // ---------------------------------------------------------------- helpers

    async fn read(&self, info: &'static KindInfo, namespace: &str, name: &str) -> ApiResult<Option<(AnyObject, i64)>> {
        if name.is_empty() {
            return Err(ApiError::new(
                Reason::BadRequest,
                format!("a name is required to address a {}", info.singular),
            ));
        }
        let key = key_of(info, namespace, name);
        match self.store.get(&key).await? {
            Some(kv) => Ok(Some((decode(info, &kv)?, kv.mod_revision))),
            None => Ok(None),
        }
    }

    /// Writes `next` in place of `current` (read at `rev`): unchanged is a no-op, and a deleted
    /// object whose last finalizer went away is removed.
    async fn write_merged(
        &self,
        info: &'static KindInfo,
        current: &AnyObject,
        next: AnyObject,
        rev: i64,
    ) -> ApiResult<AnyObject> {
        if next == *current {
            return Ok(next);
        }
        // A terminating namespace is removed only by the sweeper, once it is empty.
        let is_namespace = matches!(next, AnyObject::Namespace(_));
        if next.meta().deletion_timestamp.is_some() && next.meta().finalizers.is_empty() && !is_namespace {
            let (namespace, name) = (next.meta().namespace.clone(), next.meta().name.clone());
            let key = key_of(info, &namespace, &name);
            let (_, deleted_at) = self.store.delete(&key, Some(rev)).await.map_err(|e| match e {
                stratus_store::Error::Conflict { .. } => conflict(info, &name),
                stratus_store::Error::NotFound { .. } => not_found(info, &namespace, &name),
                other => other.into(),
            })?;
            let mut gone = next;
            gone.meta_mut().resource_version = deleted_at.to_string();
            return Ok(gone);
        }
        self.put(info, next, rev).await
    }

    async fn put(&self, info: &'static KindInfo, mut obj: AnyObject, rev: i64) -> ApiResult<AnyObject> {
        let (namespace, name) = (obj.meta().namespace.clone(), obj.meta().name.clone());
        obj.meta_mut().resource_version.clear();
        let key = key_of(info, &namespace, &name);
        let new_rev = self.store.update(&key, obj.encode_to_vec().into(), rev).await.map_err(|e| match e {
            stratus_store::Error::Conflict { .. } => conflict(info, &name),
            stratus_store::Error::NotFound { .. } => not_found(info, &namespace, &name),
            other => other.into(),
        })?;
        obj.meta_mut().resource_version = new_rev.to_string();
        Ok(obj)
    }
}

/// Defaults and validates a client's object, with errors naming the fields.
fn validate_update(obj: &AnyObject, stored: &AnyObject) -> ApiResult<()> {
    stratus_api::validation::validate_update(obj, stored)
        .map_err(|e| ApiError::invalid(obj.info().kind, &obj.meta().name, e))
}

fn prepare(obj: &mut AnyObject) -> ApiResult<()> {
    stratus_api::prepare(obj).map_err(|e| ApiError::invalid(obj.info().kind, &obj.meta().name, e))
}

/// The stored object after an update of `current` to `given`: what a client may change
/// (labels, annotations, finalizers, owners, spec) from `given`, the rest from `current`.
fn merge_update(current: &AnyObject, given: &AnyObject) -> ApiResult<AnyObject> {
    let info = current.info();
    let (have, want) = (current.meta(), given.meta());
    if !want.uid.is_empty() && want.uid != have.uid {
        return Err(ApiError::new(
            Reason::Conflict,
            format!(
                "metadata.uid: {:?} does not match the stored object's {:?}; it may have been deleted and recreated",
                want.uid, have.uid
            ),
        ));
    }
    if let AnyObject::Revision(_) = current
        && !current.spec_eq(given)
    {
        return Err(ApiError::new(
            Reason::Unprocessable,
            "spec: a Revision is immutable; change the Service's template to make a new one",
        ));
    }
    let mut next = current.clone();
    next.meta_mut().resource_version.clear();
    let meta = next.meta_mut();
    meta.labels = want.labels.clone();
    meta.annotations = want.annotations.clone();
    meta.finalizers = want.finalizers.clone();
    meta.owner_references = want.owner_references.clone();
    if !current.spec_eq(given) {
        next.copy_spec_from(given);
        next.meta_mut().generation += 1;
    }
    stratus_api::validation::validate(&next).map_err(|e| ApiError::invalid(info.kind, &next.meta().name, e))?;
    let mut current_plain = current.clone();
    current_plain.meta_mut().resource_version.clear();
    if next == current_plain {
        return Ok(current.clone());
    }
    Ok(next)
}

fn kind_info(kind: &str) -> ApiResult<&'static KindInfo> {
    lookup_kind(kind)
        .ok_or_else(|| ApiError::new(Reason::NotFound, format!("the server doesn't have a resource type {kind:?}")))
}

fn scoped_namespace(info: &KindInfo, namespace: &str) -> String {
    match (info.namespaced, namespace.is_empty()) {
        (false, _) => String::new(),
        (true, true) => stratus_api::DEFAULT_NAMESPACE.to_string(),
        (true, false) => namespace.to_string(),
    }
}

fn key_of(info: &KindInfo, namespace: &str, name: &str) -> String {
    if info.namespaced {
        format!("{ROOT}{}/{namespace}/{name}", info.plural)
    } else {
        format!("{ROOT}{}/{name}", info.plural)
    }
}

fn prefix_of(info: &KindInfo, namespace: &str) -> String {
    if info.namespaced && !namespace.is_empty() {
        format!("{ROOT}{}/{namespace}/", info.plural)
    } else {
        format!("{ROOT}{}/", info.plural)
    }
}

fn decode(info: &KindInfo, kv: &KeyValue) -> ApiResult<AnyObject> {
    let mut obj = AnyObject::decode(info, &kv.value).map_err(ApiError::internal)?;
    obj.meta_mut().resource_version = kv.mod_revision.to_string();
    Ok(obj)
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

fn not_found(info: &KindInfo, namespace: &str, name: &str) -> ApiError {
    let msg = if info.namespaced {
        format!("{} {name:?} not found in namespace {namespace:?}", info.plural)
    } else {
        format!("{} {name:?} not found", info.plural)
    };
    ApiError::new(Reason::NotFound, msg)
}

fn conflict(info: &KindInfo, name: &str) -> ApiError {
    ApiError::new(
        Reason::Conflict,
        format!(
            "operation cannot be fulfilled on {} {name:?}: the object has been modified; read it again and retry",
            info.plural
        ),
    )
}

fn parse_rv(rv: &str) -> ApiResult<i64> {
    rv.parse::<i64>().ok().filter(|r| *r >= 0).ok_or_else(|| {
        ApiError::new(Reason::BadRequest, format!("metadata.resourceVersion: {rv:?} is not a resource version"))
    })
}

fn required_rv(obj: &AnyObject) -> ApiResult<i64> {
    let rv = &obj.meta().resource_version;
    if rv.is_empty() {
        return Err(ApiError::invalid(
            obj.info().kind,
            &obj.meta().name,
            stratus_api::validation::FieldError::new(
                "metadata.resourceVersion",
                "is required for an update: send back the version you read",
            )
            .into(),
        ));
    }
    parse_rv(rv)
}

fn encode_token(revision: i64, last_key: &str) -> String {
    let hex: String = last_key.bytes().map(|b| format!("{b:02x}")).collect();
    format!("{revision}.{hex}")
}

fn decode_token(token: &str) -> ApiResult<(i64, String)> {
    let bad = || ApiError::new(Reason::BadRequest, format!("continue token {token:?} is not one this server issued"));
    let (rev, hex) = token.split_once('.').ok_or_else(bad)?;
    let rev = rev.parse::<i64>().map_err(|_| bad())?;
    if hex.len() % 2 != 0 {
        return Err(bad());
    }
    let bytes = (0..hex.len())
        .step_by(2)
        .map(|i| hex.get(i..i + 2).and_then(|h| u8::from_str_radix(h, 16).ok()))
        .collect::<Option<Vec<u8>>>()
        .ok_or_else(bad)?;
    Ok((rev, String::from_utf8(bytes).map_err(|_| bad())?))
}

fn now() -> Timestamp {
    let secs = SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
    Timestamp { seconds: i64::try_from(secs).unwrap_or(i64::MAX), nanos: 0 }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn continue_tokens_round_trip_and_reject_garbage() {
        let t = encode_token(42, "/registry/services/default/hello");
        assert_eq!(decode_token(&t).ok(), Some((42, "/registry/services/default/hello".to_string())));
        for bad in ["", "x", "12", "12.zz", "abc.00", "1.0"] {
            assert!(decode_token(bad).is_err(), "{bad}");
        }
    }
}

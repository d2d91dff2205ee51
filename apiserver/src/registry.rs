//! The generic resource logic behind both protocols: validation and defaulting, optimistic
//! concurrency, generations, status, finalizers, namespaces, lists and watches, over a
//! [`Store`]. gRPC and HTTP handlers only translate to and from these calls.
//!
//! The [`Registry`] and the types of its answers are defined here; each file under `registry/`
//! adds a part of its methods: `read` gets, lists and watches; `write` creates, updates,
//! deletes and applies, keeping the rules of a namespace's life that each write must keep; and
//! `namespaces` creates the `default` namespace and runs the sweeper that empties terminating
//! namespaces and removes them. `objects` says where objects live in the store and how they are
//! read back. Besides the types here, `objects` is all the parts import; their methods call
//! each other in one direction only: `namespaces` uses `write`, which uses `read`.

mod access;
mod fanout;
mod namespaces;
mod objects;
mod quota;
mod read;
mod reencrypt;
mod write;

use std::sync::Arc;

use stratus_api::AnyObject;
use stratus_store::Store;
use tokio::sync::Notify;

use crate::metrics::Metrics;
pub use quota::ScalingBounds;

/// The most items one list page returns; larger lists continue with a token.
pub const MAX_PAGE: usize = 1000;

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
    metrics: Arc<Metrics>,
    audit: Option<Arc<crate::audit::Audit>>,
    /// The keys Secrets are sealed with; without them Secrets are refused (503).
    encryption: Option<Arc<crate::encryption::Keys>>,
    bounds: ScalingBounds,
    /// Who tokens speak for, as authentication last read them; writes here drop what they change.
    subjects: Arc<crate::auth::authn::Subjects>,
    namespace_sweep: Arc<Notify>,
    /// Becomes true when the server shuts down; open watches end then.
    closing: tokio::sync::watch::Receiver<bool>,
    /// The watches of one node's objects, served from one store watch per kind.
    fanouts: Arc<fanout::Fanouts>,
}

impl Registry {
    pub fn new(store: Arc<dyn Store>, metrics: Arc<Metrics>, closing: tokio::sync::watch::Receiver<bool>) -> Registry {
        Registry {
            store,
            metrics,
            audit: None,
            encryption: None,
            bounds: ScalingBounds::default(),
            subjects: Arc::default(),
            namespace_sweep: Arc::new(Notify::new()),
            closing,
            fanouts: Arc::default(),
        }
    }

    /// A registry over a new embedded store in a temporary directory, for unit tests. The
    /// directory lives as long as the returned guard, and the registry stays open as long as the
    /// sender. The registry comes last, so that `let (_dir, _closing, registry) = …` drops it
    /// first.
    #[cfg(test)]
    pub(crate) async fn for_test() -> (tempfile::TempDir, tokio::sync::watch::Sender<bool>, Registry) {
        #![allow(clippy::unwrap_used)]
        let dir = tempfile::tempdir().unwrap();
        let store = stratus_store::embedded::EmbeddedStore::open(dir.path().join("data")).await.unwrap();
        let (closing_tx, closing) = tokio::sync::watch::channel(false);
        (dir, closing_tx, Registry::new(store, Arc::default(), closing))
    }

    /// The same registry, writing the audit log `audit`.
    pub fn with_audit(mut self, audit: Option<Arc<crate::audit::Audit>>) -> Registry {
        self.audit = audit;
        self
    }

    /// The same registry, sealing Secrets with `keys`.
    pub fn with_encryption(mut self, keys: Option<Arc<crate::encryption::Keys>>) -> Registry {
        self.encryption = keys;
        self
    }

    pub(crate) fn subjects(&self) -> &Arc<crate::auth::authn::Subjects> {
        &self.subjects
    }

    /// The bounds revisions are held to.
    pub fn bounds(&self) -> ScalingBounds {
        self.bounds
    }

    /// The same registry, holding revisions to `bounds`.
    pub fn with_bounds(mut self, bounds: ScalingBounds) -> Registry {
        self.bounds = bounds;
        self
    }

    /// Records one request in the audit log, when there is one.
    pub(crate) fn audit_request(
        &self,
        caller: &crate::auth::Caller,
        verb: &str,
        kind: &str,
        namespace: &str,
        name: &str,
        code: u16,
    ) {
        if let Some(audit) = &self.audit {
            audit.record(&crate::audit::Entry { caller, verb, kind, namespace, name, code });
        }
    }

    pub fn store(&self) -> &Arc<dyn Store> {
        &self.store
    }

    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    /// A Namespace or Tenant as [`Registry::read_internal`] reads it, from the cache the
    /// subjects' watch keeps current when it is there.
    pub(crate) async fn read_cached(
        &self,
        info: &'static stratus_api::KindInfo,
        name: &str,
    ) -> crate::error::ApiResult<Option<AnyObject>> {
        let key = objects::key_of(info, "", name);
        if let Some(found) = self.subjects.object(&key) {
            return Ok(found);
        }
        let generation = self.subjects.generation();
        let found = self.read(info, "", name).await?.map(|(o, _)| o);
        self.subjects.put_object(&key, found.clone(), generation);
        Ok(found)
    }

    /// Reads one object for the API server's own use (authentication), with no caller to
    /// authorise and nothing redacted.
    pub(crate) async fn read_internal(
        &self,
        info: &'static stratus_api::KindInfo,
        namespace: &str,
        name: &str,
    ) -> crate::error::ApiResult<Option<AnyObject>> {
        Ok(self.read(info, namespace, name).await?.map(|(o, _)| o))
    }

    /// Completes when the server starts shutting down: streams that never end by themselves
    /// (watches, followed logs) end then, so that connections can drain.
    pub(crate) fn closed(&self) -> impl Future<Output = ()> + Send + 'static {
        let mut closing = self.closing.clone();
        async move {
            let _ = closing.wait_for(|c| *c).await;
        }
    }
}

/// What no caller is ever sent: a User's password hash.
pub(crate) fn redact(mut obj: AnyObject) -> AnyObject {
    if let AnyObject::User(u) = &mut obj
        && let Some(spec) = u.spec.as_mut()
    {
        spec.password_hash.clear();
        spec.password.clear();
    }
    obj
}

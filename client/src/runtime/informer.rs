//! The informer: a reflector that keeps a [`Store`] equal to the server's objects of one kind.
//!
//! It runs as a state machine (kube-runtime's `watcher`): **list** every page, replace the cache
//! with the result (telling subscribers the difference) and remember the list's
//! resourceVersion; then **watch** from that version with bookmarks, applying each event and
//! advancing the version. A watch that breaks is reopened from the last version seen, so no event
//! is missed or repeated; a watch answered with Gone (the version was compacted away) goes back to
//! listing. Every failure waits out an exponential backoff with jitter, so an unreachable or
//! failing server is never hammered.

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use stratus_api::Resource;
use tokio::task::JoinHandle;
use tracing::{debug, warn};

use super::store::{Store, Subscription, Writer};
use super::{ErrorChain, ObjectRef, backoff_delay};
use crate::{Client, ListParams, WatchEvent};

/// Why the informer is retrying. Logged, never returned: the informer retries until dropped.
#[derive(Debug, thiserror::Error)]
enum Error {
    #[error("listing {kind} failed")]
    ListFailed {
        kind: &'static str,
        #[source]
        source: crate::Error,
    },
    #[error("watching {kind} from resourceVersion {resource_version:?} failed")]
    WatchFailed {
        kind: &'static str,
        resource_version: String,
        #[source]
        source: crate::Error,
    },
    #[error("the watch of {kind} ended")]
    WatchEnded { kind: &'static str },
}

/// How an informer pages its lists and backs off after failures.
#[derive(Clone, Debug)]
pub struct InformerConfig {
    /// Items per list page (0: the server's maximum).
    pub page_size: i32,
    /// The first retry delay; it doubles with each consecutive failure.
    pub backoff_base: Duration,
    pub backoff_max: Duration,
}

impl Default for InformerConfig {
    fn default() -> Self {
        InformerConfig {
            page_size: 500,
            backoff_base: Duration::from_millis(200),
            backoff_max: Duration::from_secs(30),
        }
    }
}

/// A running reflector of the objects of kind `K` that match a [`ListParams`] (namespace,
/// label and field selectors), with its cache.
///
/// Cheap to clone. The background task runs while any clone exists and stops when the last one
/// is dropped; [`Subscription`]s then end. Must be created inside a tokio runtime.
///
/// It never gives up: while the server is unreachable or rejects the request (say, a malformed
/// selector) it logs and retries with backoff, and [`Store::wait_synced`] stays pending.
pub struct Informer<K> {
    store: Store<K>,
    task: Arc<AbortOnDrop>,
}

struct AbortOnDrop(JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

impl<K> Clone for Informer<K> {
    fn clone(&self) -> Self {
        Informer { store: self.store.clone(), task: Arc::clone(&self.task) }
    }
}

impl<K: Resource> Informer<K> {
    /// Starts an informer with the default configuration.
    pub fn spawn(client: Client, params: ListParams) -> Informer<K> {
        Informer::spawn_with(client, params, InformerConfig::default())
    }

    /// Starts an informer. `params.limit` and `params.continue_token` are ignored: paging is the
    /// informer's business (`config.page_size`).
    pub fn spawn_with(client: Client, params: ListParams, config: InformerConfig) -> Informer<K> {
        let writer = Writer::new();
        let store = writer.store();
        let params = ListParams { limit: config.page_size, continue_token: String::new(), ..params };
        let reflector = Reflector { client, params, config, writer, failures: 0 };
        let task = tokio::spawn(reflector.run());
        Informer { store, task: Arc::new(AbortOnDrop(task)) }
    }

    /// The cache. Complete once [`Store::has_synced`].
    pub fn store(&self) -> Store<K> {
        self.store.clone()
    }

    /// The changes of the cache; see [`Store::subscribe`].
    pub fn subscribe(&self) -> Subscription<K> {
        self.store.subscribe()
    }

    /// Resolves once the first list is in the cache.
    pub async fn wait_synced(&self) {
        self.store.wait_synced().await
    }
}

struct Reflector<K> {
    client: Client,
    params: ListParams,
    config: InformerConfig,
    writer: Writer<K>,
    /// Consecutive failures, for the backoff.
    failures: u32,
}

impl<K: Resource> Reflector<K> {
    async fn run(mut self) {
        loop {
            let mut resource_version = match self.list().await {
                Ok(rv) => rv,
                Err(e) => {
                    self.back_off(&e).await;
                    continue;
                }
            };
            // Watch until the server says the version is gone, then relist; any other failure
            // reopens the watch from where it stopped. Both wait out the backoff first, so a
            // server that keeps answering Gone is not relisted in a tight loop.
            loop {
                let error = self.watch(&mut resource_version).await;
                self.back_off(&error).await;
                if matches!(error, Error::WatchFailed { source: crate::Error::Gone(_), .. }) {
                    break;
                }
            }
        }
    }

    /// Lists every page into the cache; returns the list's resourceVersion.
    async fn list(&mut self) -> Result<String, Error> {
        let list = self
            .client
            .list_all::<K>(&self.params)
            .await
            .map_err(|source| Error::ListFailed { kind: K::INFO.kind, source })?;
        debug!(kind = K::INFO.kind, items = list.items.len(), resource_version = list.resource_version, "listed");
        self.writer.replace(list.items);
        self.writer.advance(&list.resource_version);
        Ok(list.resource_version)
    }

    /// Watches from `resource_version`, advancing it with every event; returns why it stopped.
    async fn watch(&mut self, resource_version: &mut String) -> Error {
        let kind = K::INFO.kind;
        let failed = |rv: &str, source| Error::WatchFailed { kind, resource_version: rv.to_string(), source };
        let mut stream = match self.client.watch::<K>(&self.params, resource_version, true).await {
            Ok(stream) => stream,
            Err(source) => return failed(resource_version, source),
        };
        while let Some(event) = stream.next().await {
            let event = match event {
                Ok(event) => event,
                Err(source) => return failed(resource_version, source),
            };
            // The server answered: whatever failed before has recovered.
            self.failures = 0;
            match event {
                WatchEvent::Added(obj) | WatchEvent::Modified(obj) => {
                    resource_version.clone_from(&obj.meta().resource_version);
                    self.writer.upsert(obj);
                    self.writer.advance(resource_version);
                }
                WatchEvent::Deleted(obj) => {
                    resource_version.clone_from(&obj.meta().resource_version);
                    debug!(kind, object = %ObjectRef::from_obj(&obj), "deleted");
                    self.writer.delete(obj);
                    self.writer.advance(resource_version);
                }
                WatchEvent::Bookmark(rv) => {
                    self.writer.advance(&rv);
                    *resource_version = rv;
                }
            }
        }
        Error::WatchEnded { kind }
    }

    async fn back_off(&mut self, error: &Error) {
        // Half jitter: informers of many processes restarted together spread out their relists.
        let delay = backoff_delay(self.config.backoff_base, self.config.backoff_max, 0.5, self.failures);
        self.failures = self.failures.saturating_add(1);
        warn!(error = %ErrorChain(error), retry_in = ?delay, "informer retrying");
        tokio::time::sleep(delay).await;
    }
}

//! The writes a controller makes, behind a trait, so that a controller test can observe them or
//! make them fail (a bind that loses an optimistic-concurrency race) without a server that
//! misbehaves on cue. client-go's replicaset controller does the same with its
//! `PodControlInterface`.
//!
//! Only the writes that a controller test needs to see or fail go through [`ApiWriter`]; today
//! those are the scheduler's updates. Other controllers move to it, and other verbs join it, as
//! their tests need them. Reads stay on the [`Client`] and the informer caches.

use futures::FutureExt;
use futures::future::BoxFuture;
use stratus_api::{AnyObject, Resource};

use crate::{Client, Result, typed};

/// The writes of the API a controller makes through its seam. [`Client`] is the real one; a test
/// wraps it (or replaces it) to see every write and to answer some with an error of its choice.
///
/// The methods are those of [`Client`], taking and returning dynamic objects so that the trait
/// can be shared as `Arc<dyn ApiWriter>`; the typed forms are methods of `dyn ApiWriter`.
pub trait ApiWriter: Send + Sync {
    /// Replaces metadata and spec, as [`Client::update_any`]: `obj` must carry the
    /// resourceVersion it was read at, or the write fails with [`crate::Error::Conflict`].
    fn update_any(&self, obj: AnyObject) -> BoxFuture<'_, Result<AnyObject>>;

    /// Replaces status only, as [`Client::update_status_any`], under the same condition.
    fn update_status_any(&self, obj: AnyObject) -> BoxFuture<'_, Result<AnyObject>>;
}

impl ApiWriter for Client {
    fn update_any(&self, obj: AnyObject) -> BoxFuture<'_, Result<AnyObject>> {
        Client::update_any(self, obj).boxed()
    }

    fn update_status_any(&self, obj: AnyObject) -> BoxFuture<'_, Result<AnyObject>> {
        Client::update_status_any(self, obj).boxed()
    }
}

impl dyn ApiWriter {
    /// [`ApiWriter::update_any`] of a typed object, as [`Client::update`].
    pub async fn update<K: Resource>(&self, obj: K) -> Result<K> {
        typed(self.update_any(obj.into_any()).await?)
    }

    /// [`ApiWriter::update_status_any`] of a typed object, as [`Client::update_status`].
    pub async fn update_status<K: Resource>(&self, obj: K) -> Result<K> {
        typed(self.update_status_any(obj.into_any()).await?)
    }
}

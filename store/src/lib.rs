//! The storage layer of the API server.
//!
//! [`Store`] is a revisioned key-value store in the shape of etcd v3: every write gets a new,
//! strictly increasing store revision; each key remembers the revision that created it and the
//! one that last modified it; writes can be guarded by the modification revision the writer read
//! (optimistic concurrency); a prefix can be listed at a past revision and watched from a past
//! revision until that history is compacted; keys can be attached to leases that expire.
//!
//! Two backends implement it and pass one conformance suite (`tests/conformance.rs`):
//! [`embedded::EmbeddedStore`], a crash-safe write-ahead-logged store in a data directory, and
//! [`etcd::EtcdStore`], etcd v3 through `etcd-client`.

use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use futures::stream::BoxStream;

pub mod embedded;
pub mod etcd;

/// A store revision. Revisions start at 1 and never go backwards.
pub type Revision = i64;

/// The id of a lease. Zero means "no lease".
pub type LeaseId = i64;

/// One key as stored.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeyValue {
    pub key: String,
    pub value: Bytes,
    /// The revision of the write that created this key (since it last did not exist).
    pub create_revision: Revision,
    /// The revision of the last write to this key.
    pub mod_revision: Revision,
    /// The lease the key is attached to, or 0.
    pub lease: LeaseId,
}

/// The result of a list.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ListResult {
    /// The keys, in ascending key order.
    pub items: Vec<KeyValue>,
    /// The store revision the list was read at.
    pub revision: Revision,
    /// True when `limit` cut the list short; continue with `start_after` = the last key.
    pub more: bool,
}

/// Options of a list.
#[derive(Clone, Debug, Default)]
pub struct ListOptions {
    /// Only keys strictly greater than this one (pagination).
    pub start_after: Option<String>,
    /// At most this many items; 0 means no limit.
    pub limit: usize,
    /// Read at this past revision instead of the current one. Fails with
    /// [`Error::Compacted`] when that revision has been compacted away, and with
    /// [`Error::FutureRevision`] when it is ahead of the store.
    pub revision: Option<Revision>,
}

/// One change seen by a watch.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum WatchEvent {
    /// The key was created or modified. `prev` is the value before, when there was one.
    Put { kv: KeyValue, prev: Option<KeyValue> },
    /// The key was deleted at `revision`; `prev` is its last value.
    Delete { prev: KeyValue, revision: Revision },
    /// Every change up to and including `revision` has been delivered on this stream.
    Progress { revision: Revision },
}

impl WatchEvent {
    /// The revision this event happened at.
    pub fn revision(&self) -> Revision {
        match self {
            WatchEvent::Put { kv, .. } => kv.mod_revision,
            WatchEvent::Delete { revision, .. } => *revision,
            WatchEvent::Progress { revision } => *revision,
        }
    }
}

/// A stream of watch events. Events arrive in revision order, each change exactly once. The
/// stream ends with `Err(Error::Compacted)` if the watcher fell so far behind that history it
/// still needed was compacted, and with other errors if the backend failed.
pub type WatchStream = BoxStream<'static, Result<WatchEvent>>;

/// Errors of the store.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("key {key:?} already exists")]
    AlreadyExists { key: String },
    #[error("key {key:?} not found")]
    NotFound { key: String },
    #[error("key {key:?} was modified: expected revision {expected}, found {actual}")]
    Conflict { key: String, expected: Revision, actual: Revision },
    #[error("revision {requested} has been compacted (oldest available is {compacted})")]
    Compacted { requested: Revision, compacted: Revision },
    #[error("revision {requested} is ahead of the store's revision {current}")]
    FutureRevision { requested: Revision, current: Revision },
    #[error("lease {0} not found")]
    LeaseNotFound(LeaseId),
    #[error("value of {size} bytes exceeds the store's limit of {limit} bytes")]
    TooLarge { size: usize, limit: usize },
    #[error("storage i/o failed: {0}")]
    Io(#[from] std::io::Error),
    #[error("data file is corrupt: {0}")]
    Corrupt(String),
    #[error("etcd request failed: {0}")]
    Etcd(#[source] etcd_client::Error),
    #[error("the store is shut down")]
    Closed,
    /// The store cannot take writes now (see [`Store::health`]); the text says why.
    #[error("the store is unhealthy: {0}")]
    Unhealthy(String),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// The largest value any backend accepts (etcd's default request limit is 1.5 MiB).
pub const MAX_VALUE_SIZE: usize = 1024 * 1024 + 512 * 1024;

/// Fails with [`Error::TooLarge`] when `value` exceeds [`MAX_VALUE_SIZE`].
pub(crate) fn check_value_size(value: &[u8]) -> Result<()> {
    if value.len() > MAX_VALUE_SIZE {
        return Err(Error::TooLarge { size: value.len(), limit: MAX_VALUE_SIZE });
    }
    Ok(())
}

/// A revisioned key-value store. All methods are safe to call concurrently.
#[async_trait]
pub trait Store: Send + Sync + 'static {
    /// The value of `key` now, or `None`.
    async fn get(&self, key: &str) -> Result<Option<KeyValue>>;

    /// The keys starting with `prefix`, in key order, as of one revision.
    async fn list(&self, prefix: &str, opts: ListOptions) -> Result<ListResult>;

    /// Creates `key` if it does not exist (else [`Error::AlreadyExists`]), attached to `lease`
    /// (0 for none). Returns the new key's revision.
    async fn create(&self, key: &str, value: Bytes, lease: LeaseId) -> Result<Revision>;

    /// Replaces the value of `key` if its mod revision is still `expected`
    /// (else [`Error::Conflict`], or [`Error::NotFound`] if it is gone). Keeps the key's lease.
    /// Returns the new revision.
    async fn update(&self, key: &str, value: Bytes, expected: Revision) -> Result<Revision>;

    /// Deletes `key`, if `expected` is given only when its mod revision is still `expected`.
    /// Returns the deleted key as it was and the revision of the delete.
    async fn delete(&self, key: &str, expected: Option<Revision>) -> Result<(KeyValue, Revision)>;

    /// Watches every key starting with `prefix` for changes after revision `after`
    /// (so a watch from a list's revision sees exactly what the list did not). `after` = 0 means
    /// from now. Fails with [`Error::Compacted`] when `after` is older than the compacted history,
    /// and may fail with [`Error::FutureRevision`] when it is ahead of the store (the embedded
    /// store always does; etcd waits for such a revision, so callers check first).
    async fn watch(&self, prefix: &str, after: Revision) -> Result<WatchStream>;

    /// The current revision of the store.
    async fn current_revision(&self) -> Result<Revision>;

    /// Discards the history before `revision`: later lists at, and watches from, older
    /// revisions fail with [`Error::Compacted`].
    async fn compact(&self, revision: Revision) -> Result<()>;

    /// Grants a lease that expires `ttl` after its last keep-alive, deleting its keys.
    async fn grant_lease(&self, ttl: Duration) -> Result<LeaseId>;

    /// Renews a lease for another TTL.
    async fn keep_alive(&self, lease: LeaseId) -> Result<()>;

    /// Revokes a lease now, deleting its keys.
    async fn revoke_lease(&self, lease: LeaseId) -> Result<()>;

    /// Whether the store can take writes now. Fails with [`Error::Unhealthy`] naming the
    /// reason: for the embedded store, a write to its log (or a snapshot) that failed, until a
    /// later one succeeds; for etcd, the errors and alarms its status reports (such as
    /// `NOSPACE`), or a member without a leader. Fails with the backend's error when the
    /// backend cannot be asked, and with [`Error::Closed`] once the store is closed.
    async fn health(&self) -> Result<()>;
}

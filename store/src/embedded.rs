//! [`EmbeddedStore`]: the store of a single machine, kept in memory and made durable by a
//! write-ahead log in a data directory.
//!
//! Writes go through one committer thread. It takes every write waiting, checks each one's
//! preconditions against the state as the earlier writes of the batch leave it, appends the
//! whole batch to the log as one checksummed frame, fsyncs once, and only then applies the
//! batch to the in-memory state, publishes its events to the watchers and acknowledges the
//! writers. Readers therefore never see a write that a crash could still undo.
//!
//! The state is multi-versioned: every key keeps its versions back to the compaction
//! revision, and the events since then are kept in order, so lists at past revisions and
//! watches from past revisions are served from memory.

mod wal;

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet, VecDeque};
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::ops::Bound;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock, PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use futures::StreamExt;
use tokio::sync::{Notify, mpsc, oneshot, watch};
use tokio::time::{Instant, MissedTickBehavior};

use self::wal::{FrameBuf, LOCK_FILE, LOG_FILE, Record, TMP_FILE};
use crate::{
    Error, KeyValue, LeaseId, ListOptions, ListResult, Result, Revision, Store, WatchEvent, WatchStream,
    check_value_size,
};

/// Tuning of an [`EmbeddedStore`].
#[derive(Clone, Debug)]
pub struct EmbeddedOptions {
    /// A watch stream on which nothing was sent for this long gets a
    /// [`WatchEvent::Progress`]. Default 1 s.
    pub progress_interval: Duration,
    /// How many events a watch stream may have undelivered before it is ended with
    /// [`Error::Compacted`] (its consumer is too slow and must relist). Default 1024.
    pub watch_buffer: usize,
    /// The log is rewritten as a snapshot once it is larger than this many bytes and
    /// [`snapshot_ratio`](Self::snapshot_ratio) times larger than the snapshot would be.
    /// Default 64 MiB.
    pub snapshot_min_bytes: u64,
    /// See [`snapshot_min_bytes`](Self::snapshot_min_bytes). Default 4.
    pub snapshot_ratio: u64,
}

impl Default for EmbeddedOptions {
    fn default() -> Self {
        EmbeddedOptions {
            progress_interval: Duration::from_secs(1),
            watch_buffer: 1024,
            snapshot_min_bytes: 64 << 20,
            snapshot_ratio: 4,
        }
    }
}

/// At most this many writes (and about this many bytes) are committed with one fsync, to bound
/// the latency of the writers at the head of a batch.
const MAX_BATCH_OPS: usize = 4096;
const MAX_BATCH_BYTES: usize = 64 << 20;
/// A rough per-version overhead, for estimating the size of a snapshot.
const VERSION_OVERHEAD: u64 = 40;

/// The embedded backend. Open it with [`EmbeddedStore::open`]; [`close`](Self::close) it to
/// release the directory. Dropping it without closing also stops it, but releases the
/// directory only once its background work has noticed.
pub struct EmbeddedStore {
    shared: Arc<Shared>,
    ops: mpsc::Sender<Op>,
    shutdown: watch::Sender<bool>,
}

struct Shared {
    state: RwLock<State>,
    syncs: AtomicU64,
    leases_changed: Notify,
    options: EmbeddedOptions,
}

impl Shared {
    // A panic while the lock was held cannot leave the state half-changed in a way that
    // matters more than refusing all further service would, so poisoning is ignored.
    fn read(&self) -> RwLockReadGuard<'_, State> {
        self.state.read().unwrap_or_else(PoisonError::into_inner)
    }

    fn write(&self) -> RwLockWriteGuard<'_, State> {
        self.state.write().unwrap_or_else(PoisonError::into_inner)
    }
}

impl EmbeddedStore {
    /// Opens (creating if needed) the store in `dir` with default options. See
    /// [`open_with`](Self::open_with).
    pub async fn open(dir: impl AsRef<Path>) -> Result<Arc<EmbeddedStore>> {
        Self::open_with(dir, EmbeddedOptions::default()).await
    }

    /// Opens (creating if needed) the store in `dir`: replays its log, truncating a write torn
    /// by a crash, and starts the committer and the lease and progress timers on the current
    /// tokio runtime. Leases that existed get a fresh TTL from now. Fails with
    /// [`Error::Corrupt`] when the log is damaged other than at its tail, and with
    /// [`Error::Io`] (kind `WouldBlock`) when another store has the directory open.
    pub async fn open_with(dir: impl AsRef<Path>, options: EmbeddedOptions) -> Result<Arc<EmbeddedStore>> {
        let dir = dir.as_ref().to_path_buf();
        let (state, log) = tokio::task::spawn_blocking(move || recover(&dir))
            .await
            .map_err(|e| Error::Io(io::Error::other(format!("recovery task failed: {e}"))))??;
        let shared = Arc::new(Shared {
            state: RwLock::new(state),
            syncs: AtomicU64::new(0),
            leases_changed: Notify::new(),
            options,
        });
        let (ops, rx) = mpsc::channel(1024);
        let committer = Committer { shared: shared.clone(), log, failure: None };
        std::thread::Builder::new().name("stratus-store-committer".into()).spawn(move || committer.run(rx))?;
        let (shutdown, _) = watch::channel(false);
        tokio::spawn(expire_leases(shared.clone(), ops.clone(), shutdown.subscribe()));
        tokio::spawn(send_progress(shared.clone(), shutdown.subscribe()));
        Ok(Arc::new(EmbeddedStore { shared, ops, shutdown }))
    }

    /// Stops the store: writes already submitted are committed, every watch stream ends with
    /// [`Error::Closed`], the directory is released, and every later call fails with
    /// [`Error::Closed`]. Fails with [`Error::Io`] if a write to the log had failed earlier.
    pub async fn close(&self) -> Result<()> {
        self.shutdown.send_replace(true);
        let (reply, rx) = oneshot::channel();
        if self.ops.send(Op::Close { reply }).await.is_err() {
            return Ok(());
        }
        match rx.await {
            Ok(Some(failure)) => Err(failure.error()),
            Ok(None) | Err(_) => Ok(()),
        }
    }

    /// Rewrites the log now as a snapshot of the retained state (normally done automatically
    /// when the log has grown large relative to that state).
    pub async fn snapshot(&self) -> Result<()> {
        self.submit(|reply| Op::Snapshot { reply }).await
    }

    /// How many fsyncs of the log have committed writes since the store was opened.
    pub fn wal_syncs(&self) -> u64 {
        self.shared.syncs.load(Ordering::Relaxed)
    }

    async fn submit<T>(&self, op: impl FnOnce(oneshot::Sender<Result<T>>) -> Op) -> Result<T> {
        let (reply, rx) = oneshot::channel();
        self.ops.send(op(reply)).await.map_err(|_| Error::Closed)?;
        rx.await.map_err(|_| Error::Closed)?
    }

    fn read_open(&self) -> Result<RwLockReadGuard<'_, State>> {
        let state = self.shared.read();
        if state.closed {
            return Err(Error::Closed);
        }
        Ok(state)
    }
}

#[async_trait]
impl Store for EmbeddedStore {
    async fn get(&self, key: &str) -> Result<Option<KeyValue>> {
        Ok(self.read_open()?.latest(key))
    }

    async fn list(&self, prefix: &str, opts: ListOptions) -> Result<ListResult> {
        let state = self.read_open()?;
        let revision = match opts.revision {
            Some(r) if r > 0 => r,
            _ => state.revision,
        };
        if revision < state.compacted {
            return Err(Error::Compacted { requested: revision, compacted: state.compacted });
        }
        if revision > state.revision {
            return Err(Error::FutureRevision { requested: revision, current: state.revision });
        }
        let lower = match &opts.start_after {
            Some(after) if after.as_str() >= prefix => Bound::Excluded(after.as_str()),
            _ => Bound::Included(prefix),
        };
        let mut result = ListResult { items: Vec::new(), revision, more: false };
        for (key, versions) in state.keys.range::<str, _>((lower, Bound::Unbounded)) {
            if !key.starts_with(prefix) {
                break;
            }
            let Some(kv) = version_at(versions, revision).and_then(|v| v.to_kv(key)) else {
                continue;
            };
            if opts.limit > 0 && result.items.len() == opts.limit {
                result.more = true;
                break;
            }
            result.items.push(kv);
        }
        Ok(result)
    }

    async fn create(&self, key: &str, value: Bytes, lease: LeaseId) -> Result<Revision> {
        check_value_size(&value)?;
        self.submit(|reply| Op::Create { key: key.to_owned(), value, lease, reply }).await
    }

    async fn update(&self, key: &str, value: Bytes, expected: Revision) -> Result<Revision> {
        check_value_size(&value)?;
        self.submit(|reply| Op::Update { key: key.to_owned(), value, expected, reply }).await
    }

    async fn delete(&self, key: &str, expected: Option<Revision>) -> Result<(KeyValue, Revision)> {
        self.submit(|reply| Op::Delete { key: key.to_owned(), expected, reply }).await
    }

    async fn watch(&self, prefix: &str, after: Revision) -> Result<WatchStream> {
        let mut state = self.shared.write();
        if state.closed {
            return Err(Error::Closed);
        }
        let after = if after > 0 { after } else { state.revision };
        if after > state.revision {
            return Err(Error::FutureRevision { requested: after, current: state.revision });
        }
        // Events at the compaction revision itself are kept, as etcd does.
        if after + 1 < state.compacted {
            return Err(Error::Compacted { requested: after + 1, compacted: state.compacted });
        }
        // History and registration under one lock: the committer publishes under the same
        // lock, so every event lands either in the replay or in the channel, never both.
        let first = state.history.partition_point(|e| e.revision() <= after);
        let replay: VecDeque<WatchEvent> =
            state.history.range(first..).filter(|e| event_key(e).starts_with(prefix)).cloned().collect();
        let (tx, rx) = mpsc::channel(self.shared.options.watch_buffer.max(1));
        let end = Arc::new(OnceLock::new());
        state.watchers.push(Watcher {
            prefix: prefix.to_owned(),
            after,
            tx,
            end: end.clone(),
            idle: replay.is_empty(),
        });
        let stream = WatchRx { replay, rx, end, done: false };
        Ok(futures::stream::unfold(stream, WatchRx::next).boxed())
    }

    async fn current_revision(&self) -> Result<Revision> {
        Ok(self.read_open()?.revision)
    }

    async fn compact(&self, revision: Revision) -> Result<()> {
        self.submit(|reply| Op::Compact { revision, reply }).await
    }

    async fn grant_lease(&self, ttl: Duration) -> Result<LeaseId> {
        self.submit(|reply| Op::Grant { ttl, reply }).await
    }

    async fn keep_alive(&self, lease: LeaseId) -> Result<()> {
        let mut state = self.shared.write();
        if state.closed {
            return Err(Error::Closed);
        }
        let now = Instant::now();
        match state.leases.get_mut(&lease) {
            // A lease past its deadline is as good as revoked even before the expiry task
            // got to it: reviving it would race with the deletion of its keys.
            Some(l) if l.deadline > now => {
                l.deadline = deadline(now, l.ttl);
                Ok(())
            }
            _ => Err(Error::LeaseNotFound(lease)),
        }
    }

    async fn revoke_lease(&self, lease: LeaseId) -> Result<()> {
        self.submit(|reply| Op::Revoke { lease, reply }).await
    }
}

fn deadline(now: Instant, ttl: Duration) -> Instant {
    now.checked_add(ttl).unwrap_or_else(|| now + Duration::from_secs(100 * 365 * 86_400))
}

fn event_key(e: &WatchEvent) -> &str {
    match e {
        WatchEvent::Put { kv, .. } => &kv.key,
        WatchEvent::Delete { prev, .. } => &prev.key,
        WatchEvent::Progress { .. } => "",
    }
}

/// One version of a key: a value, or a tombstone when `value` is `None`.
#[derive(Clone)]
struct Version {
    revision: Revision,
    create_revision: Revision,
    lease: LeaseId,
    value: Option<Bytes>,
}

impl Version {
    fn to_kv(&self, key: &str) -> Option<KeyValue> {
        Some(KeyValue {
            key: key.to_owned(),
            value: self.value.clone()?,
            create_revision: self.create_revision,
            mod_revision: self.revision,
            lease: self.lease,
        })
    }
}

/// The version of a key visible at `revision`.
fn version_at(versions: &[Version], revision: Revision) -> Option<&Version> {
    let i = versions.partition_point(|v| v.revision <= revision);
    versions.get(i.checked_sub(1)?)
}

struct Lease {
    ttl: Duration,
    deadline: Instant,
    keys: BTreeSet<String>,
}

struct State {
    revision: Revision,
    /// Lists at, and watches from, revisions below this one fail with `Compacted`.
    compacted: Revision,
    next_lease: LeaseId,
    /// Every key's versions, oldest first: those at or after `compacted`, plus the newest one
    /// before it when that is a value (it is what a list at `compacted` sees).
    keys: BTreeMap<String, Vec<Version>>,
    /// The events at or after `compacted`, in revision order, one per revision.
    history: VecDeque<WatchEvent>,
    leases: HashMap<LeaseId, Lease>,
    watchers: Vec<Watcher>,
    /// Roughly how many bytes a snapshot would take now.
    snapshot_estimate: u64,
    closed: bool,
}

impl State {
    fn new() -> Self {
        State {
            revision: 1,
            compacted: 0,
            next_lease: 1,
            keys: BTreeMap::new(),
            history: VecDeque::new(),
            leases: HashMap::new(),
            watchers: Vec::new(),
            snapshot_estimate: 0,
            closed: false,
        }
    }

    fn latest(&self, key: &str) -> Option<KeyValue> {
        self.keys.get(key)?.last()?.to_kv(key)
    }

    /// Applies one log record, returning the event it produced. Fails only on a record that
    /// contradicts the state, which means the log is corrupt.
    fn apply(&mut self, record: Record, now: Instant) -> Result<Option<WatchEvent>> {
        let corrupt = |what: String| Err(Error::Corrupt(what));
        match record {
            Record::Header { revision, compacted, next_lease } => {
                (self.revision, self.compacted, self.next_lease) = (revision, compacted, next_lease);
                Ok(None)
            }
            Record::Put(kv) => {
                if kv.mod_revision != self.revision + 1 {
                    return corrupt(format!("put at revision {} after {}", kv.mod_revision, self.revision));
                }
                let prev = self.latest(&kv.key);
                if let Some(lease) = self.leases.get_mut(&kv.lease) {
                    lease.keys.insert(kv.key.clone());
                }
                self.revision = kv.mod_revision;
                self.push_version(&kv.key, Some(kv.value.clone()), kv.create_revision, kv.lease);
                let event = WatchEvent::Put { kv, prev };
                self.history.push_back(event.clone());
                Ok(Some(event))
            }
            Record::Base(kv) => {
                if self.keys.contains_key(&kv.key) {
                    return corrupt(format!("second base version of {:?}", kv.key));
                }
                if let Some(lease) = self.leases.get_mut(&kv.lease) {
                    lease.keys.insert(kv.key.clone());
                }
                self.snapshot_estimate += (kv.key.len() + kv.value.len()) as u64 + VERSION_OVERHEAD;
                let version = Version {
                    revision: kv.mod_revision,
                    create_revision: kv.create_revision,
                    lease: kv.lease,
                    value: Some(kv.value),
                };
                self.keys.insert(kv.key, vec![version]);
                Ok(None)
            }
            Record::Delete { key, revision } => {
                let Some(prev) = self.latest(&key) else {
                    return corrupt(format!("delete of missing key {key:?}"));
                };
                if revision != self.revision + 1 {
                    return corrupt(format!("delete at revision {revision} after {}", self.revision));
                }
                if let Some(lease) = self.leases.get_mut(&prev.lease) {
                    lease.keys.remove(&key);
                }
                self.revision = revision;
                self.push_version(&key, None, 0, 0);
                let event = WatchEvent::Delete { prev, revision };
                self.history.push_back(event.clone());
                Ok(Some(event))
            }
            Record::Compact { revision } => {
                if revision > self.revision || revision <= self.compacted {
                    return corrupt(format!("compaction to {revision} at {}", self.revision));
                }
                self.compact(revision);
                Ok(None)
            }
            Record::Grant { lease, ttl } => {
                let l = Lease { ttl, deadline: deadline(now, ttl), keys: BTreeSet::new() };
                self.leases.insert(lease, l);
                self.next_lease = self.next_lease.max(lease + 1);
                Ok(None)
            }
            Record::Revoke { lease } => {
                self.leases.remove(&lease);
                Ok(None)
            }
        }
    }

    fn push_version(&mut self, key: &str, value: Option<Bytes>, create: Revision, lease: LeaseId) {
        let size = key.len() + value.as_ref().map_or(0, |v| v.len());
        self.snapshot_estimate += size as u64 + VERSION_OVERHEAD;
        let version = Version { revision: self.revision, create_revision: create, lease, value };
        match self.keys.get_mut(key) {
            Some(versions) => versions.push(version),
            None => {
                self.keys.insert(key.to_owned(), vec![version]);
            }
        }
    }

    fn compact(&mut self, revision: Revision) {
        self.compacted = revision;
        let keep_from = self.history.partition_point(|e| e.revision() < revision);
        self.history.drain(..keep_from);
        let mut estimate = 0;
        self.keys.retain(|key, versions| {
            let newer = versions.partition_point(|v| v.revision < revision);
            // The newest version before the compaction revision stays if it is a value.
            let keep = match newer.checked_sub(1).and_then(|i| versions.get(i)) {
                Some(v) if v.value.is_some() => newer - 1,
                _ => newer,
            };
            versions.drain(..keep);
            for v in versions.iter() {
                let size = key.len() + v.value.as_ref().map_or(0, |v| v.len());
                estimate += size as u64 + VERSION_OVERHEAD;
            }
            !versions.is_empty()
        });
        self.snapshot_estimate = estimate;
    }

    /// The log records that rebuild this state: leases, then the versions older than the
    /// history, then the history itself.
    fn snapshot_records(&self) -> Vec<Record> {
        let start = self.history.front().map_or(self.revision, |e| e.revision() - 1);
        let mut records =
            vec![Record::Header { revision: start, compacted: self.compacted, next_lease: self.next_lease }];
        let mut leases: Vec<_> = self.leases.iter().collect();
        leases.sort_by_key(|(id, _)| **id);
        records.extend(leases.into_iter().map(|(id, l)| Record::Grant { lease: *id, ttl: l.ttl }));
        for (key, versions) in &self.keys {
            let base = versions.iter().take_while(|v| v.revision <= start);
            records.extend(base.filter_map(|v| v.to_kv(key)).map(Record::Base));
        }
        records.extend(self.history.iter().filter_map(|e| match e {
            WatchEvent::Put { kv, .. } => Some(Record::Put(kv.clone())),
            WatchEvent::Delete { prev, revision } => {
                Some(Record::Delete { key: prev.key.clone(), revision: *revision })
            }
            WatchEvent::Progress { .. } => None,
        }));
        records
    }

    /// Sends `events` to the watchers they match, ending the stream of any watcher whose
    /// buffer is full rather than dropping an event.
    fn publish(&mut self, events: &[WatchEvent]) {
        let current = self.revision;
        self.watchers.retain_mut(|w| {
            for e in events {
                if e.revision() <= w.after || !event_key(e).starts_with(&w.prefix) {
                    continue;
                }
                match w.tx.try_send(e.clone()) {
                    Ok(()) => w.idle = false,
                    Err(mpsc::error::TrySendError::Full(_)) => {
                        let _ = w.end.set(End::Lagged { requested: e.revision(), current });
                        return false;
                    }
                    Err(mpsc::error::TrySendError::Closed(_)) => return false,
                }
            }
            true
        });
    }
}

struct Watcher {
    prefix: String,
    after: Revision,
    tx: mpsc::Sender<WatchEvent>,
    end: Arc<OnceLock<End>>,
    /// Nothing was sent since the last progress tick.
    idle: bool,
}

/// Why the store stopped feeding a watch stream.
enum End {
    Lagged { requested: Revision, current: Revision },
    Closed,
}

struct WatchRx {
    replay: VecDeque<WatchEvent>,
    rx: mpsc::Receiver<WatchEvent>,
    end: Arc<OnceLock<End>>,
    done: bool,
}

impl WatchRx {
    async fn next(mut self) -> Option<(Result<WatchEvent>, WatchRx)> {
        if self.done {
            return None;
        }
        if let Some(e) = self.replay.pop_front() {
            return Some((Ok(e), self));
        }
        if let Some(e) = self.rx.recv().await {
            return Some((Ok(e), self));
        }
        // The channel is closed and drained: every event queued before the end was delivered.
        self.done = true;
        let err = match self.end.get() {
            Some(End::Lagged { requested, current }) => Error::Compacted { requested: *requested, compacted: *current },
            Some(End::Closed) | None => Error::Closed,
        };
        Some((Err(err), self))
    }
}

/// An I/O failure of the log, after which the store accepts no more writes: what reached the
/// disk is unknown, so only a restart (replaying the log) can tell.
#[derive(Clone)]
struct Failure {
    kind: io::ErrorKind,
    message: String,
}

impl Failure {
    fn error(&self) -> Error {
        Error::Io(io::Error::new(self.kind, format!("log write failed: {}", self.message)))
    }
}

enum Op {
    Create { key: String, value: Bytes, lease: LeaseId, reply: oneshot::Sender<Result<Revision>> },
    Update { key: String, value: Bytes, expected: Revision, reply: oneshot::Sender<Result<Revision>> },
    Delete { key: String, expected: Option<Revision>, reply: oneshot::Sender<Result<(KeyValue, Revision)>> },
    Compact { revision: Revision, reply: oneshot::Sender<Result<()>> },
    Grant { ttl: Duration, reply: oneshot::Sender<Result<LeaseId>> },
    Revoke { lease: LeaseId, reply: oneshot::Sender<Result<()>> },
    Snapshot { reply: oneshot::Sender<Result<()>> },
    Close { reply: oneshot::Sender<Option<Failure>> },
}

impl Op {
    fn size(&self) -> usize {
        match self {
            Op::Create { key, value, .. } | Op::Update { key, value, .. } => key.len() + value.len(),
            _ => 64,
        }
    }
}

/// Sends an operation's planned result once its batch is durable (or has failed).
type Completion = Box<dyn FnOnce(Option<&Failure>) + Send>;

fn completion<T: Send + 'static>(reply: oneshot::Sender<Result<T>>, result: Result<T>) -> Completion {
    Box::new(move |failure| {
        // The writer may have stopped waiting; nothing is owed to it then.
        let _ = reply.send(match failure {
            Some(f) => Err(f.error()),
            None => result,
        });
    })
}

/// A batch being planned: the state as the batch's earlier operations leave it.
struct Plan<'a> {
    state: &'a State,
    revision: Revision,
    compacted: Revision,
    next_lease: LeaseId,
    /// Keys written by this batch: their latest value, `None` once deleted.
    keys: HashMap<String, Option<KeyValue>>,
    granted: HashSet<LeaseId>,
    revoked: HashSet<LeaseId>,
    records: Vec<Record>,
}

impl Plan<'_> {
    fn current(&self, key: &str) -> Option<KeyValue> {
        match self.keys.get(key) {
            Some(kv) => kv.clone(),
            None => self.state.latest(key),
        }
    }

    fn lease_exists(&self, lease: LeaseId) -> bool {
        self.granted.contains(&lease) || (self.state.leases.contains_key(&lease) && !self.revoked.contains(&lease))
    }

    fn put(&mut self, key: String, value: Bytes, create: Option<Revision>, lease: LeaseId) -> Revision {
        self.revision += 1;
        let kv = KeyValue {
            key: key.clone(),
            value,
            create_revision: create.unwrap_or(self.revision),
            mod_revision: self.revision,
            lease,
        };
        self.keys.insert(key, Some(kv.clone()));
        self.records.push(Record::Put(kv));
        self.revision
    }

    fn delete(&mut self, key: &str, expected: Option<Revision>) -> Result<(KeyValue, Revision)> {
        let current = self.current(key).ok_or_else(|| Error::NotFound { key: key.to_owned() })?;
        if let Some(expected) = expected.filter(|e| *e != current.mod_revision) {
            let actual = current.mod_revision;
            return Err(Error::Conflict { key: key.to_owned(), expected, actual });
        }
        self.revision += 1;
        self.keys.insert(key.to_owned(), None);
        self.records.push(Record::Delete { key: key.to_owned(), revision: self.revision });
        Ok((current, self.revision))
    }

    /// Plans one operation, returning how to complete it.
    fn op(&mut self, op: Op) -> Option<Completion> {
        Some(match op {
            Op::Create { key, value, lease, reply } => {
                let result = if self.current(&key).is_some() {
                    Err(Error::AlreadyExists { key })
                } else if lease != 0 && !self.lease_exists(lease) {
                    Err(Error::LeaseNotFound(lease))
                } else {
                    Ok(self.put(key, value, None, lease))
                };
                completion(reply, result)
            }
            Op::Update { key, value, expected, reply } => {
                let result = match self.current(&key) {
                    None => Err(Error::NotFound { key }),
                    Some(cur) if cur.mod_revision != expected => {
                        Err(Error::Conflict { key, expected, actual: cur.mod_revision })
                    }
                    Some(cur) => Ok(self.put(key, value, Some(cur.create_revision), cur.lease)),
                };
                completion(reply, result)
            }
            Op::Delete { key, expected, reply } => completion(reply, self.delete(&key, expected)),
            Op::Compact { revision, reply } => {
                let result = if revision > self.revision {
                    Err(Error::FutureRevision { requested: revision, current: self.revision })
                } else {
                    if revision > self.compacted {
                        self.compacted = revision;
                        self.records.push(Record::Compact { revision });
                    }
                    Ok(())
                };
                completion(reply, result)
            }
            Op::Grant { ttl, reply } => {
                let lease = self.next_lease;
                self.next_lease += 1;
                self.granted.insert(lease);
                self.records.push(Record::Grant { lease, ttl });
                completion(reply, Ok(lease))
            }
            Op::Revoke { lease, reply } => {
                let result = if self.lease_exists(lease) {
                    let mut keys: BTreeSet<String> =
                        self.state.leases.get(&lease).map(|l| l.keys.clone()).unwrap_or_default();
                    keys.extend(self.keys.keys().cloned());
                    for key in keys {
                        if self.current(&key).is_some_and(|kv| kv.lease == lease) {
                            // The key exists, so the delete cannot fail.
                            let _ = self.delete(&key, None);
                        }
                    }
                    self.granted.remove(&lease);
                    self.revoked.insert(lease);
                    self.records.push(Record::Revoke { lease });
                    Ok(())
                } else {
                    Err(Error::LeaseNotFound(lease))
                };
                completion(reply, result)
            }
            Op::Snapshot { .. } | Op::Close { .. } => return None,
        })
    }
}

/// The log file being appended to.
struct Log {
    dir: PathBuf,
    file: File,
    len: u64,
    /// Held (locked) for as long as the store has the directory open.
    _lock: File,
}

impl Log {
    fn append(&mut self, frame: &[u8]) -> io::Result<()> {
        self.file.write_all(frame)?;
        self.file.sync_data()?;
        self.len += frame.len() as u64;
        Ok(())
    }

    /// Replaces the log with one holding `records`.
    fn rewrite(&mut self, records: &[Record]) -> io::Result<()> {
        (self.file, self.len) = write_log(&self.dir, records)?;
        Ok(())
    }
}

/// Writes `records` as a new log: aside, fsynced, renamed over the log, and the directory
/// fsynced, so a crash leaves either the old log or the new one. Returns the new log opened
/// for appending, and its length.
fn write_log(dir: &Path, records: &[Record]) -> io::Result<(File, u64)> {
    let tmp = dir.join(TMP_FILE);
    let mut out = io::BufWriter::new(File::create(&tmp)?);
    let mut len = 0;
    let mut frame = FrameBuf::new();
    for (i, record) in records.iter().enumerate() {
        frame.push(record);
        // The header must be alone in the first frame.
        if i == 0 || frame.payload_len() >= wal::SNAPSHOT_FRAME {
            let bytes = std::mem::replace(&mut frame, FrameBuf::new()).finish();
            out.write_all(&bytes)?;
            len += bytes.len() as u64;
        }
    }
    let bytes = frame.finish();
    out.write_all(&bytes)?;
    len += bytes.len() as u64;
    let file = out.into_inner().map_err(io::IntoInnerError::into_error)?;
    file.sync_all()?;
    drop(file);
    fs::rename(&tmp, dir.join(LOG_FILE))?;
    sync_dir(dir)?;
    let file = OpenOptions::new().append(true).open(dir.join(LOG_FILE))?;
    Ok((file, len))
}

fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// Opens the directory: takes its lock, creates an empty log if there is none, replays the
/// log and truncates a torn tail.
fn recover(dir: &Path) -> Result<(State, Log)> {
    fs::create_dir_all(dir)?;
    let lock = OpenOptions::new().create(true).truncate(false).write(true).open(dir.join(LOCK_FILE))?;
    lock.try_lock().map_err(|e| match e {
        fs::TryLockError::WouldBlock => Error::Io(io::Error::new(
            io::ErrorKind::WouldBlock,
            format!("data directory {} is in use by another store", dir.display()),
        )),
        fs::TryLockError::Error(e) => Error::Io(e),
    })?;
    // A leftover of a crash during a snapshot; the log it was to replace is intact.
    match fs::remove_file(dir.join(TMP_FILE)) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e.into()),
        _ => {}
    }
    let path = dir.join(LOG_FILE);
    let mut state = State::new();
    if !path.try_exists()? {
        let (file, len) = write_log(dir, &state.snapshot_records())?;
        return Ok((state, Log { dir: dir.to_owned(), file, len, _lock: lock }));
    }
    let data = fs::read(&path)?;
    let now = Instant::now();
    let valid = wal::parse(&data, |record| state.apply(record, now).map(|_| ()))?;
    let file = OpenOptions::new().append(true).open(&path)?;
    if valid < data.len() {
        tracing::warn!(
            path = %path.display(),
            offset = valid,
            "truncating a write torn by a crash at the end of the log"
        );
        file.set_len(valid as u64)?;
        file.sync_all()?;
    }
    let log = Log { dir: dir.to_owned(), file, len: valid as u64, _lock: lock };
    Ok((state, log))
}

struct Committer {
    shared: Arc<Shared>,
    log: Log,
    failure: Option<Failure>,
}

impl Committer {
    fn run(mut self, mut ops: mpsc::Receiver<Op>) {
        let mut close = None;
        while let Some(first) = ops.blocking_recv() {
            let mut batch = Vec::new();
            let mut bytes = 0;
            let mut next = Some(first);
            while let Some(op) = next.take() {
                if let Op::Close { reply } = op {
                    close = Some(reply);
                    break;
                }
                bytes += op.size();
                batch.push(op);
                if batch.len() < MAX_BATCH_OPS && bytes < MAX_BATCH_BYTES {
                    next = ops.try_recv().ok();
                }
            }
            self.commit(batch);
            if close.is_some() {
                break;
            }
        }
        // Operations still queued fail with `Closed` as their reply channels drop with `ops`.
        drop(ops);
        let mut state = self.shared.write();
        state.closed = true;
        for w in state.watchers.drain(..) {
            let _ = w.end.set(End::Closed);
        }
        drop(state);
        let failure = self.failure.take();
        // Release the directory before acknowledging, so it can be reopened at once.
        drop(self);
        if let Some(reply) = close {
            let _ = reply.send(failure);
        }
    }

    fn commit(&mut self, batch: Vec<Op>) {
        let mut snapshots = Vec::new();
        let mut completions = Vec::new();
        let records = {
            let state = self.shared.read();
            let mut plan = Plan {
                state: &state,
                revision: state.revision,
                compacted: state.compacted,
                next_lease: state.next_lease,
                keys: HashMap::new(),
                granted: HashSet::new(),
                revoked: HashSet::new(),
                records: Vec::new(),
            };
            for op in batch {
                if let Op::Snapshot { reply } = op {
                    snapshots.push(reply);
                } else if let Some(done) = plan.op(op) {
                    completions.push(done);
                }
            }
            plan.records
        };
        if self.failure.is_none() && !records.is_empty() {
            let mut frame = FrameBuf::new();
            for record in &records {
                frame.push(record);
            }
            match self.log.append(&frame.finish()) {
                Ok(()) => {
                    self.shared.syncs.fetch_add(1, Ordering::Relaxed);
                    self.apply(records);
                }
                Err(e) => self.fail(&e),
            }
        }
        for done in completions {
            done(self.failure.as_ref());
        }
        let options = &self.shared.options;
        let estimate = self.shared.read().snapshot_estimate;
        let due = self.log.len > options.snapshot_min_bytes && self.log.len / options.snapshot_ratio.max(1) > estimate;
        if self.failure.is_none() && (due || !snapshots.is_empty()) {
            let records = self.shared.read().snapshot_records();
            if let Err(e) = self.log.rewrite(&records) {
                self.fail(&e);
            }
        }
        for reply in snapshots {
            let _ = reply.send(self.failure.as_ref().map_or(Ok(()), |f| Err(f.error())));
        }
    }

    fn apply(&mut self, records: Vec<Record>) {
        let now = Instant::now();
        let mut events = Vec::new();
        let mut leases_changed = false;
        let mut state = self.shared.write();
        for record in records {
            leases_changed |= matches!(record, Record::Grant { .. });
            match state.apply(record, now) {
                Ok(event) => events.extend(event),
                Err(e) => {
                    // The plan checked everything apply does, so this is a bug; stop writing
                    // rather than diverge further from the log.
                    tracing::error!(error = %e, "committed record does not apply to the state");
                    self.failure = Some(Failure { kind: io::ErrorKind::InvalidData, message: e.to_string() });
                    break;
                }
            }
        }
        state.publish(&events);
        drop(state);
        if leases_changed {
            self.shared.leases_changed.notify_one();
        }
    }

    fn fail(&mut self, e: &io::Error) {
        tracing::error!(error = %e, "writing the store log failed; refusing further writes");
        self.failure = Some(Failure { kind: e.kind(), message: e.to_string() });
    }
}

/// Revokes leases whose deadline passed, through the committer like any other write.
async fn expire_leases(shared: Arc<Shared>, ops: mpsc::Sender<Op>, mut shutdown: watch::Receiver<bool>) {
    loop {
        let next = shared.read().leases.values().map(|l| l.deadline).min();
        let expiry = async {
            match next {
                Some(at) => tokio::time::sleep_until(at).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = shutdown.changed() => return,
            () = shared.leases_changed.notified() => continue,
            () = expiry => {}
        }
        let now = Instant::now();
        let expired: Vec<LeaseId> =
            shared.read().leases.iter().filter(|(_, l)| l.deadline <= now).map(|(id, _)| *id).collect();
        let mut replies = Vec::new();
        for lease in expired {
            let (reply, rx) = oneshot::channel();
            if ops.send(Op::Revoke { lease, reply }).await.is_err() {
                return;
            }
            replies.push(rx);
        }
        for rx in replies {
            match rx.await {
                Ok(Ok(())) | Ok(Err(Error::LeaseNotFound(_))) => {}
                // The store is closed or can no longer write; retrying would spin.
                Ok(Err(_)) | Err(_) => return,
            }
        }
    }
}

/// Sends a progress event to every watch stream that was sent nothing for an interval.
async fn send_progress(shared: Arc<Shared>, mut shutdown: watch::Receiver<bool>) {
    let period = shared.options.progress_interval.max(Duration::from_millis(1));
    let mut ticks = tokio::time::interval_at(Instant::now() + period, period);
    ticks.set_missed_tick_behavior(MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = shutdown.changed() => return,
            _ = ticks.tick() => {}
        }
        // Under the write lock no batch is being published, so everything up to the current
        // revision has been queued on every stream ahead of this event.
        let mut state = shared.write();
        let revision = state.revision;
        state.watchers.retain_mut(|w| {
            if w.tx.is_closed() {
                return false;
            }
            if w.idle && revision >= w.after {
                // A full buffer means the consumer is behind anyway; the next event tells it.
                let _ = w.tx.try_send(WatchEvent::Progress { revision });
            }
            w.idle = true;
            true
        });
    }
}

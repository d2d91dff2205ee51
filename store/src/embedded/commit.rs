//! The committer: the one thread that writes. It takes every write waiting (group commit),
//! plans the batch against the state as its earlier writes leave it, appends the batch to the
//! log as one frame with one fsync, and only then applies it to the state, publishes its
//! events and answers the writers. It also rewrites the log as a snapshot when the log has
//! grown large relative to the state.
//!
//! After a failed write to the log it refuses every further write: what reached the disk is
//! unknown, so only a restart (replaying the log) can tell.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::io;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::{Notify, mpsc, oneshot};
use tokio::time::Instant;

use super::mvcc::State;
use super::wal::{FrameBuf, Log, Record};
use crate::{Error, KeyValue, LeaseId, Result, Revision};

/// At most this many writes (and about this many bytes) are committed with one fsync, to bound
/// the latency of the writers at the head of a batch.
const MAX_BATCH_OPS: usize = 4096;
const MAX_BATCH_BYTES: usize = 64 << 20;

/// What the committer shares with the store's readers and timers: the state it applies batches
/// to, the count of its fsyncs, and a signal that it granted a lease.
pub(super) struct Shared {
    state: RwLock<State>,
    pub(super) syncs: AtomicU64,
    pub(super) leases_changed: Notify,
}

/// A request to the committer, with where its answer goes.
pub(super) enum Op {
    Create { key: String, value: Bytes, lease: LeaseId, reply: oneshot::Sender<Result<Revision>> },
    Update { key: String, value: Bytes, expected: Revision, reply: oneshot::Sender<Result<Revision>> },
    Delete { key: String, expected: Option<Revision>, reply: oneshot::Sender<Result<(KeyValue, Revision)>> },
    Compact { revision: Revision, reply: oneshot::Sender<Result<()>> },
    Grant { ttl: Duration, reply: oneshot::Sender<Result<LeaseId>> },
    Revoke { lease: LeaseId, reply: oneshot::Sender<Result<()>> },
    Snapshot { reply: oneshot::Sender<Result<()>> },
    Close { reply: oneshot::Sender<Option<Failure>> },
}

/// An I/O failure of the log, after which the store accepts no more writes: what reached the
/// disk is unknown, so only a restart (replaying the log) can tell.
#[derive(Clone)]
pub(super) struct Failure {
    kind: io::ErrorKind,
    message: String,
}

/// The committer's own state; it runs on a thread of its own (see [`Committer::run`]).
pub(super) struct Committer {
    shared: Arc<Shared>,
    log: Log,
    failure: Option<Failure>,
    /// The log is rewritten once it is larger than this and `snapshot_ratio` times larger
    /// than the snapshot would be.
    snapshot_min_bytes: u64,
    snapshot_ratio: u64,
}

impl Shared {
    pub(super) fn new(state: State) -> Self {
        Shared { state: RwLock::new(state), syncs: AtomicU64::new(0), leases_changed: Notify::new() }
    }

    // A panic while the lock was held cannot leave the state half-changed in a way that
    // matters more than refusing all further service would, so poisoning is ignored.
    pub(super) fn read(&self) -> RwLockReadGuard<'_, State> {
        self.state.read().unwrap_or_else(PoisonError::into_inner)
    }

    pub(super) fn write(&self) -> RwLockWriteGuard<'_, State> {
        self.state.write().unwrap_or_else(PoisonError::into_inner)
    }
}

impl Op {
    fn size(&self) -> usize {
        match self {
            Op::Create { key, value, .. } | Op::Update { key, value, .. } => key.len() + value.len(),
            _ => 64,
        }
    }
}

impl Failure {
    pub(super) fn error(&self) -> Error {
        Error::Io(io::Error::new(self.kind, format!("log write failed: {}", self.message)))
    }
}

impl Committer {
    pub(super) fn new(shared: Arc<Shared>, log: Log, snapshot_min_bytes: u64, snapshot_ratio: u64) -> Self {
        Committer { shared, log, failure: None, snapshot_min_bytes, snapshot_ratio }
    }

    /// Commits the operations of `ops` in batches until [`Op::Close`] or until every sender is
    /// gone; then ends every watch stream and releases the directory.
    pub(super) fn run(mut self, mut ops: mpsc::Receiver<Op>) {
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
        state.watchers.close();
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
        let estimate = self.shared.read().snapshot_estimate;
        let log_len = self.log.len();
        let due = log_len > self.snapshot_min_bytes && log_len / self.snapshot_ratio.max(1) > estimate;
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
        self.granted.contains(&lease) || (self.state.has_lease(lease) && !self.revoked.contains(&lease))
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
                    let mut keys: BTreeSet<String> = self.state.lease_keys(lease);
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

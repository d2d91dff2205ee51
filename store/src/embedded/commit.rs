//! The committer: the one thread that writes. It takes every write waiting (group commit),
//! plans the batch against the state as its earlier writes leave it, appends the batch to the
//! log as one frame with one fsync, and only then applies it to the state, publishes its
//! events and answers the writers. It also rewrites the log as a snapshot when the log has
//! grown large relative to the state.
//!
//! A failed write to the log (a full disk, no descriptor left) fails its batch and makes the
//! store report itself unhealthy with the reason. The next batch first repairs the log: it
//! reopens the file and cuts whatever the failed write left after the last good frame, so no
//! unacknowledged write can come back at the next start; then it appends. Once a write or a
//! snapshot succeeds the store is healthy again, with nothing acknowledged lost and no restart.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::io;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard};
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
/// to, the count of its fsyncs, a signal that it granted a lease, and what is wrong with the
/// log, if anything.
pub(super) struct Shared {
    state: RwLock<State>,
    pub(super) syncs: AtomicU64,
    pub(super) leases_changed: Notify,
    failure: Mutex<Option<Failure>>,
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

/// Why the log could not be written: an I/O error of a step (`what`), which the next write
/// retries after repairing the log, or (`lasting`) a committed batch that did not apply to the
/// state, after which the store takes no more writes until it is reopened.
#[derive(Clone, Debug)]
pub(super) struct Failure {
    what: &'static str,
    kind: io::ErrorKind,
    message: String,
    lasting: bool,
}

/// The committer's own state; it runs on a thread of its own (see [`Committer::run`]).
pub(super) struct Committer {
    shared: Arc<Shared>,
    log: Log,
    /// Set while the log needs repair (or, when lasting, for good); mirrored in `shared`.
    failure: Option<Failure>,
    /// The log is rewritten once it is larger than this and `snapshot_ratio` times larger
    /// than the snapshot would be.
    snapshot_min_bytes: u64,
    snapshot_ratio: u64,
}

impl Shared {
    pub(super) fn new(state: State) -> Self {
        Shared {
            state: RwLock::new(state),
            syncs: AtomicU64::new(0),
            leases_changed: Notify::new(),
            failure: Mutex::new(None),
        }
    }

    /// What is wrong with the log now, if anything.
    pub(super) fn failure(&self) -> Option<Failure> {
        self.failure.lock().unwrap_or_else(PoisonError::into_inner).clone()
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
    /// The error a write gets while the log is failed.
    pub(super) fn error(&self) -> Error {
        Error::Io(io::Error::new(self.kind, self.to_string()))
    }
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} failed: {}", self.what, self.message)?;
        if self.lasting {
            write!(f, " (no more writes are taken; restart the server)")
        } else {
            write!(f, " (the next write retries)")
        }
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
        let written = if records.is_empty() {
            // Nothing to write: the plan's answers (conflicts, not found) stand on their own.
            Ok(())
        } else {
            let mut frame = FrameBuf::new();
            for record in &records {
                frame.push(record);
            }
            self.write(&frame.finish())
        };
        match &written {
            Ok(()) if !records.is_empty() => {
                self.shared.syncs.fetch_add(1, Ordering::Relaxed);
                self.apply(records);
            }
            _ => {}
        }
        // A batch that was written but did not apply is not acknowledged either.
        let failure = written.err().or_else(|| self.failure.clone().filter(|f| f.lasting));
        for done in completions {
            done(failure.as_ref());
        }
        let estimate = self.shared.read().snapshot_estimate;
        let log_len = self.log.len();
        let due = log_len > self.snapshot_min_bytes && log_len / self.snapshot_ratio.max(1) > estimate;
        if due || !snapshots.is_empty() {
            let result = self.snapshot();
            for reply in snapshots {
                let _ = reply.send(result.clone().map_err(|f| f.error()));
            }
        }
    }

    /// Appends one frame, repairing the log first if an earlier write failed.
    fn write(&mut self, frame: &[u8]) -> Result<(), Failure> {
        self.repaired()?;
        match self.log.append(frame) {
            Ok(()) => {
                self.set_failure(None);
                Ok(())
            }
            Err(e) => {
                let failure = self.fail("appending to the store log", &e);
                // Cut the failed frame off now, so that it cannot come back if the process
                // stops before the next write; if this fails too, the next write tries again.
                let _ = self.log.repair();
                Err(failure)
            }
        }
    }

    /// Rewrites the log as a snapshot of the state, repairing it first if needed.
    fn snapshot(&mut self) -> Result<(), Failure> {
        self.repaired()?;
        let records = self.shared.read().snapshot_records();
        match self.log.rewrite(&records) {
            Ok(()) => {
                self.set_failure(None);
                Ok(())
            }
            Err(e) => Err(self.fail("writing a snapshot of the store log", &e)),
        }
    }

    /// Repairs the log when an earlier write failed; fails when that cannot be done (now, or
    /// for good).
    fn repaired(&mut self) -> Result<(), Failure> {
        match &self.failure {
            None => Ok(()),
            Some(f) if f.lasting => Err(f.clone()),
            Some(_) => match self.log.repair() {
                Ok(()) => {
                    tracing::info!("repaired the store log after a failed write; retrying");
                    Ok(())
                }
                Err(e) => Err(self.fail("repairing the store log after a failed write", &e)),
            },
        }
    }

    fn apply(&mut self, records: Vec<Record>) {
        let now = Instant::now();
        let mut events = Vec::new();
        let mut leases_changed = false;
        let mut broken = None;
        let shared = Arc::clone(&self.shared);
        let mut state = shared.write();
        for record in records {
            leases_changed |= matches!(record, Record::Grant { .. });
            match state.apply(record, now) {
                Ok(event) => events.extend(event),
                Err(e) => {
                    // The plan checked everything apply does, so this is a bug; stop writing
                    // rather than diverge further from the log.
                    tracing::error!(error = %e, "committed record does not apply to the state");
                    broken = Some(Failure {
                        what: "applying a committed write",
                        kind: io::ErrorKind::InvalidData,
                        message: e.to_string(),
                        lasting: true,
                    });
                    break;
                }
            }
        }
        state.publish(&events);
        drop(state);
        if broken.is_some() {
            self.set_failure(broken);
        }
        if leases_changed {
            self.shared.leases_changed.notify_one();
        }
    }

    /// Records that step `what` failed with `e` (the store is unhealthy until a write succeeds).
    fn fail(&mut self, what: &'static str, e: &io::Error) -> Failure {
        let failure = Failure { what, kind: e.kind(), message: e.to_string(), lasting: false };
        tracing::error!(error = %e, "{what} failed; the store is unhealthy until a write succeeds");
        self.set_failure(Some(failure.clone()));
        failure
    }

    fn set_failure(&mut self, failure: Option<Failure>) {
        if failure.is_none() && self.failure.as_ref().is_some_and(|f| f.lasting) {
            return;
        }
        if failure.is_none() && self.failure.is_some() {
            tracing::info!("the store log is written again; the store is healthy");
        }
        *self.shared.failure.lock().unwrap_or_else(PoisonError::into_inner) = failure.clone();
        self.failure = failure;
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

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;
    use crate::embedded::wal;

    /// Commits one create of `key` and returns its answer.
    fn create(committer: &mut Committer, key: &str) -> Result<Revision> {
        let (reply, mut rx) = oneshot::channel();
        committer.commit(vec![Op::Create { key: key.into(), value: Bytes::from_static(b"v"), lease: 0, reply }]);
        rx.try_recv().expect("answered within the batch")
    }

    /// The keys a fresh replay of the log in `dir` holds.
    fn replayed(dir: &std::path::Path) -> Vec<String> {
        let mut state = State::new();
        let now = Instant::now();
        let log = wal::recover(dir, &state.snapshot_records(), |r| state.apply(r, now).map(|_| ())).unwrap();
        drop(log);
        let list = state.list("/", &Default::default()).unwrap();
        list.items.into_iter().map(|kv| kv.key).collect()
    }

    #[test]
    fn a_failed_append_is_reported_and_repaired_by_the_next_write() {
        let dir = tempfile::tempdir().unwrap();
        let state = State::new();
        let log = wal::recover(dir.path(), &state.snapshot_records(), |_| Ok(())).unwrap();
        let shared = Arc::new(Shared::new(state));
        let mut committer = Committer::new(Arc::clone(&shared), log, u64::MAX, 4);

        create(&mut committer, "/a").expect("a healthy log takes writes");
        assert!(shared.failure().is_none());

        // A frame half written, then the disk refuses the rest.
        committer.log.break_after(&[0xab; 40]).unwrap();
        let err = create(&mut committer, "/b").expect_err("the append fails");
        assert!(err.to_string().contains("appending to the store log failed"), "{err}");
        let failure = shared.failure().expect("the failure is reported");
        assert!(!failure.lasting && failure.to_string().contains("the next write retries"), "{failure}");
        assert!(shared.read().latest("/b").is_none(), "an unacknowledged write is not applied");

        // The next write reopens the log, cuts the half-written frame and appends.
        create(&mut committer, "/c").expect("the next write repairs the log");
        assert!(shared.failure().is_none(), "healthy again");
        // A snapshot works on the repaired log too.
        let (reply, mut rx) = oneshot::channel();
        committer.commit(vec![Op::Snapshot { reply }]);
        rx.try_recv().unwrap().expect("snapshot");
        create(&mut committer, "/d").unwrap();
        drop(committer);
        assert_eq!(replayed(dir.path()), ["/a", "/c", "/d"]);
    }

    #[test]
    fn a_failed_snapshot_leaves_the_log_whole_and_is_reported() {
        let dir = tempfile::tempdir().unwrap();
        let state = State::new();
        let log = wal::recover(dir.path(), &state.snapshot_records(), |_| Ok(())).unwrap();
        let shared = Arc::new(Shared::new(state));
        let mut committer = Committer::new(Arc::clone(&shared), log, u64::MAX, 4);
        create(&mut committer, "/a").unwrap();
        // The snapshot cannot be written aside: a directory stands where its file goes.
        std::fs::create_dir(dir.path().join("store.wal.tmp")).unwrap();
        let (reply, mut rx) = oneshot::channel();
        committer.commit(vec![Op::Snapshot { reply }]);
        let err = rx.try_recv().unwrap().expect_err("the snapshot fails");
        assert!(err.to_string().contains("writing a snapshot of the store log failed"), "{err}");
        assert!(shared.failure().is_some());
        std::fs::remove_dir(dir.path().join("store.wal.tmp")).unwrap();
        create(&mut committer, "/b").expect("writes go on");
        assert!(shared.failure().is_none());
        drop(committer);
        assert_eq!(replayed(dir.path()), ["/a", "/b"]);
    }
}

//! The in-memory, multi-versioned state of the embedded store: every key's versions back to the
//! compaction revision, the events since then, the leases, and the watchers (kept here so that
//! one lock covers the state and the delivery of its changes).
//!
//! The state changes only by applying log records ([`State::apply`]), at recovery and after
//! each commit, so what is in memory is always what replaying the log gives.

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::ops::Bound;
use std::time::Duration;

use bytes::Bytes;
use tokio::time::Instant;

use super::wal::Record;
use super::watch::Watchers;
use crate::{Error, KeyValue, LeaseId, ListOptions, ListResult, Result, Revision, WatchEvent, WatchStream};

/// A rough per-version overhead, for estimating the size of a snapshot.
const VERSION_OVERHEAD: u64 = 40;

/// The whole state of an open store, behind one lock (see `commit::Shared`).
pub(super) struct State {
    pub(super) revision: Revision,
    /// Lists at, and watches from, revisions below this one fail with `Compacted`.
    pub(super) compacted: Revision,
    pub(super) next_lease: LeaseId,
    /// Every key's versions, oldest first: those at or after `compacted`, plus the newest one
    /// before it when that is a value (it is what a list at `compacted` sees).
    keys: BTreeMap<String, Vec<Version>>,
    /// The events at or after `compacted`, in revision order, one per revision.
    history: VecDeque<WatchEvent>,
    leases: HashMap<LeaseId, Lease>,
    pub(super) watchers: Watchers,
    /// Roughly how many bytes a snapshot would take now.
    pub(super) snapshot_estimate: u64,
    pub(super) closed: bool,
}

impl State {
    pub(super) fn new() -> Self {
        State {
            revision: 1,
            compacted: 0,
            next_lease: 1,
            keys: BTreeMap::new(),
            history: VecDeque::new(),
            leases: HashMap::new(),
            watchers: Watchers::new(),
            snapshot_estimate: 0,
            closed: false,
        }
    }

    pub(super) fn latest(&self, key: &str) -> Option<KeyValue> {
        self.keys.get(key)?.last()?.to_kv(key)
    }

    /// The keys starting with `prefix` as of `opts.revision` (default: now), as
    /// [`Store::list`](crate::Store::list) promises.
    pub(super) fn list(&self, prefix: &str, opts: &ListOptions) -> Result<ListResult> {
        let revision = match opts.revision {
            Some(r) if r > 0 => r,
            _ => self.revision,
        };
        if revision < self.compacted {
            return Err(Error::Compacted { requested: revision, compacted: self.compacted });
        }
        if revision > self.revision {
            return Err(Error::FutureRevision { requested: revision, current: self.revision });
        }
        let lower = match &opts.start_after {
            Some(after) if after.as_str() >= prefix => Bound::Excluded(after.as_str()),
            _ => Bound::Included(prefix),
        };
        let mut result = ListResult { items: Vec::new(), revision, more: false };
        for (key, versions) in self.keys.range::<str, _>((lower, Bound::Unbounded)) {
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

    /// Starts a watch of `prefix` after revision `after` (0: now), as
    /// [`Store::watch`](crate::Store::watch) promises: the retained history after `after`
    /// first, then every change published later, with at most `buffer` events undelivered.
    pub(super) fn watch(&mut self, prefix: &str, after: Revision, buffer: usize) -> Result<WatchStream> {
        let after = if after > 0 { after } else { self.revision };
        if after > self.revision {
            return Err(Error::FutureRevision { requested: after, current: self.revision });
        }
        // Events at the compaction revision itself are kept, as etcd does.
        if after + 1 < self.compacted {
            return Err(Error::Compacted { requested: after + 1, compacted: self.compacted });
        }
        // History and registration under one lock: the committer publishes under the same
        // lock, so every event lands either in the replay or in the channel, never both.
        let first = self.history.partition_point(|e| e.revision() <= after);
        Ok(self.watchers.add(prefix, after, self.history.range(first..), buffer))
    }

    /// Sends `events` to the watchers they match (see [`Watchers::publish`]).
    pub(super) fn publish(&mut self, events: &[WatchEvent]) {
        let current = self.revision;
        self.watchers.publish(events, current);
    }

    /// Renews `lease` for another TTL from `now`. Fails with [`Error::LeaseNotFound`] when it
    /// does not exist or its deadline has passed.
    pub(super) fn keep_alive(&mut self, lease: LeaseId, now: Instant) -> Result<()> {
        match self.leases.get_mut(&lease) {
            // A lease past its deadline is as good as revoked even before the expiry task
            // got to it: reviving it would race with the deletion of its keys.
            Some(l) if l.deadline > now => {
                l.deadline = deadline(now, l.ttl);
                Ok(())
            }
            _ => Err(Error::LeaseNotFound(lease)),
        }
    }

    pub(super) fn has_lease(&self, lease: LeaseId) -> bool {
        self.leases.contains_key(&lease)
    }

    /// The keys attached to `lease` (none when it does not exist).
    pub(super) fn lease_keys(&self, lease: LeaseId) -> BTreeSet<String> {
        self.leases.get(&lease).map(|l| l.keys.clone()).unwrap_or_default()
    }

    /// When the next lease expires, if there is any.
    pub(super) fn next_lease_deadline(&self) -> Option<Instant> {
        self.leases.values().map(|l| l.deadline).min()
    }

    /// The leases whose deadline is `now` or earlier.
    pub(super) fn expired_leases(&self, now: Instant) -> Vec<LeaseId> {
        self.leases.iter().filter(|(_, l)| l.deadline <= now).map(|(id, _)| *id).collect()
    }

    /// Applies one log record, returning the event it produced. Fails only on a record that
    /// contradicts the state, which means the log is corrupt.
    pub(super) fn apply(&mut self, record: Record, now: Instant) -> Result<Option<WatchEvent>> {
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

    /// The log records that rebuild this state: leases, then the versions older than the
    /// history, then the history itself.
    pub(super) fn snapshot_records(&self) -> Vec<Record> {
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
}

/// One version of a key: a value, or a tombstone when `value` is `None`.
#[derive(Clone)]
struct Version {
    revision: Revision,
    create_revision: Revision,
    lease: LeaseId,
    value: Option<Bytes>,
}

struct Lease {
    ttl: Duration,
    deadline: Instant,
    keys: BTreeSet<String>,
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

fn deadline(now: Instant, ttl: Duration) -> Instant {
    now.checked_add(ttl).unwrap_or_else(|| now + Duration::from_secs(100 * 365 * 86_400))
}

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
//!
//! The parts, each using only those listed before it: `wal` is the log (its format, appending
//! and rewriting it, and reading it back at open); `watch` holds the watchers and delivers
//! events to them; `mvcc` is the versioned state; `commit` is the committer. This file ties
//! them together behind the [`Store`] trait, with the timers that expire leases and send
//! progress events.

mod commit;
mod mvcc;
mod wal;
mod watch;

use std::io;
use std::path::Path;
use std::sync::atomic::Ordering;
use std::sync::{Arc, RwLockReadGuard};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use tokio::sync::{mpsc, oneshot};
use tokio::time::{Instant, MissedTickBehavior};

use self::commit::{Committer, Op, Shared};
use self::mvcc::State;
pub use self::wal::Repaired;
use crate::{
    Error, KeyValue, LeaseId, ListOptions, ListResult, Result, Revision, Store, WatchStream, check_value_size,
};

/// Tuning of an [`EmbeddedStore`].
#[derive(Clone, Debug)]
pub struct EmbeddedOptions {
    /// A watch stream on which nothing was sent for this long gets a
    /// [`WatchEvent::Progress`](crate::WatchEvent::Progress). Default 1 s.
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

/// The embedded backend. Open it with [`EmbeddedStore::open`]; [`close`](Self::close) it to
/// release the directory. Dropping it without closing also stops it, but releases the
/// directory only once its background work has noticed.
pub struct EmbeddedStore {
    shared: Arc<Shared>,
    ops: mpsc::Sender<Op>,
    shutdown: tokio::sync::watch::Sender<bool>,
    options: EmbeddedOptions,
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
        let (state, log) = tokio::task::spawn_blocking(move || {
            let mut state = State::new();
            // The leases' fresh TTL runs from when the log has been read, not from before.
            let mut now = None;
            let log = wal::recover(&dir, &state.snapshot_records(), |record| {
                let now = *now.get_or_insert_with(Instant::now);
                state.apply(record, now).map(|_| ())
            })?;
            Ok::<_, Error>((state, log))
        })
        .await
        .map_err(|e| Error::Io(io::Error::other(format!("recovery task failed: {e}"))))??;
        let shared = Arc::new(Shared::new(state));
        let (ops, rx) = mpsc::channel(1024);
        let committer = Committer::new(shared.clone(), log, options.snapshot_min_bytes, options.snapshot_ratio);
        std::thread::Builder::new().name("stratus-store-committer".into()).spawn(move || committer.run(rx))?;
        let (shutdown, _) = tokio::sync::watch::channel(false);
        tokio::spawn(expire_leases(shared.clone(), ops.clone(), shutdown.subscribe()));
        tokio::spawn(send_progress(shared.clone(), options.progress_interval, shutdown.subscribe()));
        Ok(Arc::new(EmbeddedStore { shared, ops, shutdown, options }))
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

    /// Cuts the log of the store in `dir` at its first damaged frame (damage that is not a
    /// write torn by a crash, which [`open`](Self::open) refuses), keeping every frame before
    /// it. Returns what was cut, or `None` when there was no such damage. The writes after the
    /// damage are lost, even those that could still be read; [`Repaired`] counts them.
    ///
    /// Fails when the directory is in use by a store, holds no log, or the damage is in the
    /// log's first frame (then nothing could be kept).
    pub async fn repair(dir: impl AsRef<Path>) -> Result<Option<Repaired>> {
        let dir = dir.as_ref().to_path_buf();
        tokio::task::spawn_blocking(move || wal::repair(&dir))
            .await
            .map_err(|e| Error::Io(io::Error::other(format!("repair task failed: {e}"))))?
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
        self.read_open()?.list(prefix, &opts)
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
        state.watch(prefix, after, self.options.watch_buffer)
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
        state.keep_alive(lease, Instant::now())
    }

    async fn revoke_lease(&self, lease: LeaseId) -> Result<()> {
        self.submit(|reply| Op::Revoke { lease, reply }).await
    }

    async fn health(&self) -> Result<()> {
        drop(self.read_open()?);
        match self.shared.failure() {
            None => Ok(()),
            Some(failure) => Err(Error::Unhealthy(failure.to_string())),
        }
    }
}

/// Revokes leases whose deadline passed, through the committer like any other write.
async fn expire_leases(shared: Arc<Shared>, ops: mpsc::Sender<Op>, mut shutdown: tokio::sync::watch::Receiver<bool>) {
    loop {
        let next = shared.read().next_lease_deadline();
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
        let expired = shared.read().expired_leases(Instant::now());
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

/// Sends a progress event to every watch stream that was sent nothing for `interval`.
async fn send_progress(shared: Arc<Shared>, interval: Duration, mut shutdown: tokio::sync::watch::Receiver<bool>) {
    let period = interval.max(Duration::from_millis(1));
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
        state.watchers.send_progress(revision);
    }
}

//! The watchers of the embedded store and the delivery of events to them.
//!
//! Each watch stream replays the retained history it asked for, then takes events from a
//! bounded channel that the committer fills as it publishes. The committer never waits for a
//! watcher: one whose buffer is full is ended with [`Error::Compacted`] (it must relist), so
//! a slow consumer can neither stall the writers nor miss an event unnoticed.

use std::collections::VecDeque;
use std::sync::{Arc, OnceLock};

use futures::StreamExt;
use tokio::sync::mpsc;

use crate::{Error, Result, Revision, WatchEvent, WatchStream};

/// Every open watch stream's sending end.
pub(super) struct Watchers {
    list: Vec<Watcher>,
}

impl Watchers {
    pub(super) fn new() -> Self {
        Watchers { list: Vec::new() }
    }

    /// Registers a watcher of `prefix` that has seen everything up to revision `after`, and
    /// returns its stream: the events of `history` under `prefix` first, then those published
    /// later, with at most `buffer` of them undelivered. The caller holds the lock that
    /// [`publish`](Self::publish) is called under, so `history` and the published events
    /// neither overlap nor leave a gap.
    pub(super) fn add<'a>(
        &mut self,
        prefix: &str,
        after: Revision,
        history: impl Iterator<Item = &'a WatchEvent>,
        buffer: usize,
    ) -> WatchStream {
        let replay: VecDeque<WatchEvent> = history.filter(|e| event_key(e).starts_with(prefix)).cloned().collect();
        let (tx, rx) = mpsc::channel(buffer.max(1));
        let end = Arc::new(OnceLock::new());
        self.list.push(Watcher { prefix: prefix.to_owned(), after, tx, end: end.clone(), idle: replay.is_empty() });
        let stream = WatchRx { replay, rx, end, done: false };
        futures::stream::unfold(stream, WatchRx::next).boxed()
    }

    /// Sends `events` to the watchers they match, ending the stream of any watcher whose
    /// buffer is full rather than dropping an event. `current` is the store's revision after
    /// them, which a lagging watcher is told.
    pub(super) fn publish(&mut self, events: &[WatchEvent], current: Revision) {
        self.list.retain_mut(|w| {
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

    /// Sends a progress event at `revision` to every watcher that was sent nothing since the
    /// previous call, and forgets the streams that were dropped. The caller holds the publish
    /// lock, so everything up to `revision` is already queued ahead of the progress event.
    pub(super) fn send_progress(&mut self, revision: Revision) {
        self.list.retain_mut(|w| {
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

    /// Ends every stream with [`Error::Closed`], once it has delivered what was queued.
    pub(super) fn close(&mut self) {
        for w in self.list.drain(..) {
            let _ = w.end.set(End::Closed);
        }
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

fn event_key(e: &WatchEvent) -> &str {
    match e {
        WatchEvent::Put { kv, .. } => &kv.key,
        WatchEvent::Delete { prev, .. } => &prev.key,
        WatchEvent::Progress { .. } => "",
    }
}

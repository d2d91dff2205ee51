//! Pokes: the gateway asks the autoscaler (`Autoscaler.Poke`) to scale a revision up at once
//! when a request finds it without an endpoint, so that scaling from zero starts now instead of
//! at the next demand report (see [`crate::autoscaler`]).
//!
//! A poke is a hint: the gateway serves the same whether the autoscaler answers or not, and a
//! failed poke is logged at debug. The pools poke through the [`Poker`] they are given; this
//! module knows nothing of them.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use futures::FutureExt;
use futures::future::BoxFuture;
use stratus_api::v1 as api;
use stratus_client::runtime::ObjectRef;
use tokio::time::Instant;
use tracing::debug;

/// Pokes for one revision are at least this far apart.
pub(crate) const POKE_INTERVAL: Duration = Duration::from_millis(500);
/// How long one poke may take.
const POKE_TIMEOUT: Duration = Duration::from_secs(2);

/// What a poke does: one `Poke` call for a revision.
pub(crate) type PokeFn = Arc<dyn Fn(ObjectRef) -> BoxFuture<'static, Result<(), tonic::Status>> + Send + Sync>;

/// Pokes the autoscaler for revisions that requests wait for, deduplicated per revision: at most
/// one poke in flight and one per [`POKE_INTERVAL`]. Disabled (every poke a no-op) when the
/// gateway has no autoscaler.
pub(crate) struct Poker {
    send: Option<PokeFn>,
    interval: Duration,
    /// Revisions poked lately: when, and whether that poke is still in flight.
    recent: Mutex<HashMap<ObjectRef, Recent>>,
}

#[derive(Clone, Copy)]
struct Recent {
    at: Instant,
    in_flight: bool,
}

impl Poker {
    /// A poker that never pokes.
    pub(crate) fn disabled() -> Arc<Poker> {
        Arc::new(Poker { send: None, interval: POKE_INTERVAL, recent: Mutex::new(HashMap::new()) })
    }

    /// A poker that calls `send` for each poke that is not a duplicate.
    pub(crate) fn new(send: PokeFn, interval: Duration) -> Arc<Poker> {
        Arc::new(Poker { send: Some(send), interval, recent: Mutex::new(HashMap::new()) })
    }

    /// A poker that calls `Autoscaler.Poke` on every one of `autoscalers` (one per controller
    /// replica; only the leader acts on it) at once, each call bounded by [`POKE_TIMEOUT`]. A
    /// poke succeeds when one of them took it.
    pub(crate) fn grpc(autoscalers: Vec<crate::autoscaler::Autoscaler>) -> Arc<Poker> {
        let send: PokeFn = Arc::new(move |revision: ObjectRef| {
            let calls = autoscalers.iter().map(|client| {
                let mut client = client.clone();
                let request =
                    api::PokeRequest { namespace: revision.namespace.clone(), revision: revision.name.clone() };
                async move {
                    match tokio::time::timeout(POKE_TIMEOUT, client.poke(request)).await {
                        Ok(answer) => answer.map(drop),
                        Err(_) => {
                            Err(tonic::Status::deadline_exceeded("the autoscaler did not answer the poke in time"))
                        }
                    }
                }
            });
            let asked = autoscalers.len();
            futures::future::join_all(calls)
                .map(move |answers| {
                    let mut failures: Vec<_> = answers.into_iter().filter_map(Result::err).collect();
                    if failures.len() == asked && !failures.is_empty() { Err(failures.swap_remove(0)) } else { Ok(()) }
                })
                .boxed()
        });
        Poker::new(send, POKE_INTERVAL)
    }

    /// Asks the autoscaler to scale `revision` up now, in the background, unless a poke for it
    /// is in flight or was sent less than the interval ago. Never blocks and never fails: a
    /// failed poke is logged at debug. Does nothing outside a tokio runtime.
    pub(crate) fn poke(self: &Arc<Self>, revision: &ObjectRef) {
        let Some(send) = &self.send else { return };
        let Ok(runtime) = tokio::runtime::Handle::try_current() else { return };
        let now = Instant::now();
        {
            let mut recent = self.recent();
            recent.retain(|_, r| r.in_flight || now.saturating_duration_since(r.at) < self.interval);
            if recent.contains_key(revision) {
                return;
            }
            recent.insert(revision.clone(), Recent { at: now, in_flight: true });
        }
        let call = send(revision.clone());
        let poker = Arc::downgrade(self);
        let revision = revision.clone();
        runtime.spawn(async move {
            match call.await {
                Ok(()) => debug!(%revision, "poked the autoscaler"),
                Err(status) => {
                    debug!(%revision, code = ?status.code(), error = status.message(), "poking the autoscaler failed")
                }
            }
            if let Some(poker) = poker.upgrade()
                && let Some(r) = poker.recent().get_mut(&revision)
            {
                r.in_flight = false;
            }
        });
    }

    // Only inserts, removals and flag updates happen under the lock: it cannot be left halfway.
    fn recent(&self) -> MutexGuard<'_, HashMap<ObjectRef, Recent>> {
        self.recent.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use std::sync::atomic::{AtomicUsize, Ordering};

    use tokio::sync::oneshot;

    use super::*;

    /// Lets the tasks woken so far run (the runtime is current-thread and its time paused).
    async fn settle() {
        for _ in 0..3 {
            tokio::task::yield_now().await;
        }
    }

    #[tokio::test(start_paused = true)]
    async fn pokes_are_deduplicated_per_revision() {
        // Each poke stays in flight until the test answers it.
        let held: Arc<Mutex<Vec<oneshot::Sender<()>>>> = Arc::default();
        let calls = Arc::new(AtomicUsize::new(0));
        let send: PokeFn = {
            let (held, calls) = (Arc::clone(&held), Arc::clone(&calls));
            Arc::new(move |_| {
                calls.fetch_add(1, Ordering::SeqCst);
                let (done, answered) = oneshot::channel();
                held.lock().unwrap().push(done);
                async move {
                    let _ = answered.await;
                    Ok(())
                }
                .boxed()
            })
        };
        let answer_all = || {
            for done in held.lock().unwrap().drain(..) {
                done.send(()).unwrap();
            }
        };
        let poker = Poker::new(send, POKE_INTERVAL);
        let (a, b) = (ObjectRef::new("default", "a-1"), ObjectRef::new("default", "b-1"));
        for _ in 0..10 {
            poker.poke(&a);
        }
        poker.poke(&b);
        assert_eq!(calls.load(Ordering::SeqCst), 2, "one per revision");
        // Past the interval, but the first poke of a is still in flight.
        tokio::time::advance(POKE_INTERVAL * 2).await;
        poker.poke(&a);
        assert_eq!(calls.load(Ordering::SeqCst), 2, "one in flight at most");
        // Answered: the next poke goes out, and the one after it only an interval later.
        answer_all();
        settle().await;
        poker.poke(&a);
        assert_eq!(calls.load(Ordering::SeqCst), 3);
        answer_all();
        settle().await;
        poker.poke(&a);
        assert_eq!(calls.load(Ordering::SeqCst), 3, "one per interval at most");
        tokio::time::advance(POKE_INTERVAL).await;
        poker.poke(&a);
        assert_eq!(calls.load(Ordering::SeqCst), 4);
        answer_all();
    }
}

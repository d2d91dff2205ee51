//! The demand the gateways report, kept for the autoscaler: a [`DemandStore`] that the gRPC
//! service ([`crate::autoscaler::DemandService`]) fills and the autoscaler controller reads.
//!
//! It is a module of its own, below both, so that the [`Context`](crate::Context) can hold the
//! store every controller run shares without depending on the autoscaler that uses the Context.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use futures::Stream;
use stratus_api::v1::DemandReport;
use stratus_client::runtime::ObjectRef;
use tokio::sync::mpsc;
use tokio::time::Instant;

/// Reports of a gateway that sent nothing for longer than this are ignored.
pub const STALE_AFTER: Duration = Duration::from_secs(3);
/// Pokes older than this are forgotten (they only matter within a scale-to-zero grace).
const POKE_MEMORY: Duration = Duration::from_secs(600);
/// Pokes waiting for the controller; beyond, a poke is only recorded (the next tick sees it).
const POKE_QUEUE: usize = 1024;

/// The demand of one revision: the sum of the live gateways' latest reports.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Demand {
    /// Requests in flight, averaged over the reports' periods.
    pub concurrency: f64,
    /// Requests per second.
    pub rps: f64,
    /// Requests waiting for an instance.
    pub queued: f64,
}

impl Demand {
    /// Whether any request was seen: in flight, arrived or waiting.
    pub fn active(&self) -> bool {
        self.concurrency > 0.0 || self.rps > 0.0 || self.queued > 0.0
    }

    fn add(&mut self, other: &Demand) {
        self.concurrency += other.concurrency;
        self.rps += other.rps;
        self.queued += other.queued;
    }
}

/// One gateway's latest report.
#[derive(Debug)]
struct GatewayReport {
    at: Instant,
    revisions: HashMap<ObjectRef, Demand>,
}

#[derive(Debug, Default)]
struct Inner {
    gateways: HashMap<String, GatewayReport>,
    pokes: HashMap<ObjectRef, Instant>,
    /// The running autoscaler controller's poke queue, if one runs.
    poke_tx: Option<mpsc::Sender<ObjectRef>>,
}

/// The demand the gateways report and the pokes they send, shared by the
/// [`DemandService`](crate::autoscaler::DemandService) that fills it and the controller that
/// reads it. Cheap to clone (one shared store).
#[derive(Debug, Clone, Default)]
pub struct DemandStore {
    inner: Arc<Mutex<Inner>>,
}

impl DemandStore {
    pub fn new() -> DemandStore {
        DemandStore::default()
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // The data stays consistent whatever a panicking holder did: every update is one
        // assignment.
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Replaces what `gateway` reported before with `report`, received at `at`. Entries without
    /// a namespace or revision are skipped; negative or non-finite numbers count as zero, and
    /// a period that is not positive as one second.
    pub fn report(&self, report: &DemandReport, at: Instant) {
        let mut revisions: HashMap<ObjectRef, Demand> = HashMap::new();
        for r in &report.revisions {
            if r.namespace.is_empty() || r.revision.is_empty() {
                continue;
            }
            let period = if r.period_ms > 0 {
                Duration::from_millis(r.period_ms.unsigned_abs())
            } else {
                Duration::from_secs(1)
            };
            #[allow(clippy::cast_precision_loss)] // request counts far below 2^52
            let demand = Demand {
                concurrency: non_negative(r.concurrency),
                rps: non_negative(r.requests as f64 / period.as_secs_f64()),
                queued: non_negative(r.queued as f64),
            };
            revisions.entry(ObjectRef::new(r.namespace.clone(), r.revision.clone())).or_default().add(&demand);
        }
        let mut inner = self.lock();
        inner.gateways.retain(|_, g| at.saturating_duration_since(g.at) <= STALE_AFTER);
        inner.gateways.insert(report.gateway.clone(), GatewayReport { at, revisions });
    }

    /// The demand of `revision` at `now`, summed over the gateways that reported within
    /// [`STALE_AFTER`].
    pub fn demand(&self, revision: &ObjectRef, now: Instant) -> Demand {
        let inner = self.lock();
        let mut sum = Demand::default();
        for g in inner.gateways.values().filter(|g| now.saturating_duration_since(g.at) <= STALE_AFTER) {
            if let Some(d) = g.revisions.get(revision) {
                sum.add(d);
            }
        }
        sum
    }

    /// A request waits for `revision`, which has no ready instance: it is wanted as of `at`,
    /// and the running autoscaler evaluates it at once.
    pub fn poke(&self, revision: ObjectRef, at: Instant) {
        let mut inner = self.lock();
        inner.pokes.retain(|_, t| at.saturating_duration_since(*t) <= POKE_MEMORY);
        let last = inner.pokes.entry(revision.clone()).or_insert(at);
        *last = (*last).max(at);
        if let Some(tx) = &inner.poke_tx {
            match tx.try_send(revision) {
                // A full queue already holds work; the poke's time is recorded for the tick.
                Ok(()) | Err(mpsc::error::TrySendError::Full(_)) => {}
                Err(mpsc::error::TrySendError::Closed(_)) => inner.poke_tx = None,
            }
        }
    }

    /// The last poke of `revision`, if one was sent within the last ten minutes.
    pub fn last_poke(&self, revision: &ObjectRef) -> Option<Instant> {
        self.lock().pokes.get(revision).copied()
    }

    /// The revisions poked from now on, for one controller: a later call takes over the feed.
    pub(crate) fn poked(&self) -> impl Stream<Item = ObjectRef> + Send + 'static {
        let (tx, rx) = mpsc::channel(POKE_QUEUE);
        self.lock().poke_tx = Some(tx);
        futures::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|key| (key, rx)) })
    }
}

fn non_negative(x: f64) -> f64 {
    if x.is_finite() { x.max(0.0) } else { 0.0 }
}

#[cfg(test)]
mod tests {
    use stratus_api::v1::RevisionDemand;

    use super::*;

    fn report(gateway: &str, revision: &str, concurrency: f64, requests: i64) -> DemandReport {
        DemandReport {
            gateway: gateway.into(),
            revisions: vec![RevisionDemand {
                namespace: "default".into(),
                revision: revision.into(),
                concurrency,
                requests,
                queued: 0,
                period_ms: 1000,
                latency_buckets: Vec::new(),
            }],
        }
    }

    #[tokio::test(start_paused = true)]
    async fn gateways_add_up_replace_their_reports_and_age_out() {
        let store = DemandStore::new();
        let web = ObjectRef::new("default", "web-00001");
        store.report(&report("g1", "web-00001", 10.0, 20), Instant::now());
        store.report(&report("g2", "web-00001", 5.0, 10), Instant::now());
        assert_eq!(store.demand(&web, Instant::now()), Demand { concurrency: 15.0, rps: 30.0, queued: 0.0 });
        store.report(&report("g1", "web-00001", 1.0, 0), Instant::now());
        assert_eq!(store.demand(&web, Instant::now()).concurrency, 6.0, "g1's report replaced");

        tokio::time::advance(Duration::from_secs(2)).await;
        store.report(&report("g2", "web-00001", 2.0, 0), Instant::now());
        tokio::time::advance(Duration::from_millis(1500)).await;
        assert_eq!(store.demand(&web, Instant::now()).concurrency, 2.0, "g1 is silent for 3.5 s");
        assert!(!store.demand(&ObjectRef::new("other", "web-00001"), Instant::now()).active());

        // Nonsense numbers count as nothing.
        let mut bad = report("g3", "web-00001", f64::NAN, -5);
        bad.revisions[0].period_ms = 0;
        store.report(&bad, Instant::now());
        assert_eq!(store.demand(&web, Instant::now()).concurrency, 2.0);
    }

    #[tokio::test(start_paused = true)]
    async fn pokes_are_recorded_and_fed_to_the_running_controller() {
        use futures::StreamExt;
        let store = DemandStore::new();
        let web = ObjectRef::new("default", "web-00001");
        store.poke(web.clone(), Instant::now());
        assert_eq!(store.last_poke(&web), Some(Instant::now()));
        let mut poked = std::pin::pin!(store.poked());
        tokio::time::advance(Duration::from_secs(1)).await;
        store.poke(web.clone(), Instant::now());
        assert_eq!(poked.next().await, Some(web.clone()));
        assert_eq!(store.last_poke(&web), Some(Instant::now()));
    }
}

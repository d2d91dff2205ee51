//! The autoscaler (DESIGN §5): Knative's KPA as a controller. Gateways report the demand they
//! see per revision to a [`DemandService`] (the `stratus.v1.Autoscaler` gRPC service), which
//! keeps it in a [`DemandStore`]; the controller ([`run`]) evaluates every revision each
//! [`Config::autoscale_tick`](crate::Config) with a [`Scaler`] and writes
//! `status.desiredInstances` and `status.scaleReason`, which the revisions controller follows.
//!
//! What it guarantees:
//! - **Demand.** Each gateway's latest report replaces its previous one; reports of a gateway
//!   silent for more than [`STALE_AFTER`] are ignored; live gateways' reports add up.
//! - **Evaluation.** Every revision is evaluated at most once per tick (rate limits and panic
//!   state advance per evaluation), except that a [`Poke`](DemandService) evaluates its
//!   revision at once: a revision at zero that is poked gets at least one instance without
//!   waiting for the tick. The rules are those of [`crate::kpa`]; a revision is *routable* when
//!   its Service's `status.traffic` names it with percent > 0 or a tag, or when it is the
//!   Service's latest created revision.
//! - **Writes.** `desiredInstances` and `scaleReason` are written (update_status, optimistic
//!   concurrency) only when the count or the rule that decided it ([`Kind`]) changes: the
//!   reason's numbers are those of the evaluation that made the change.
//! - **Restarts.** Scalers live in memory, per leadership term. A new term starts each
//!   revision's scaler afresh: a revision the autoscaler had scaled to zero stays there until a
//!   request; any other waits a full grace before it may be scaled to zero.
//!
//! Wiring: make a [`DemandStore`], serve it with [`serve_autoscaler`] on a listener the
//! gateways reach, and run the controllers with [`crate::run_with_demand`] (or a
//! [`Context::with_demand`]) on the same store.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use futures::Stream;
use stratus_api::Resource;
use stratus_api::v1::autoscaler_server::{Autoscaler, AutoscalerServer};
use stratus_api::v1::{DemandAck, DemandReport, PokeRequest, PokeResponse, Revision, Service};
use stratus_client::Error as ClientError;
use stratus_client::runtime::{Action, Controller, ObjectRef};
use tokio::sync::mpsc;
use tokio::time::Instant;
use tonic::{Request, Response, Status, Streaming};
use tracing::{debug, info, warn};

use crate::context::Context;
use crate::kpa::{Decision, Kind, Observed, Policy, Sample, Scaler};
use crate::revisions::REVISION_LABEL;
use crate::status::{self, READY};

/// Reports of a gateway that sent nothing for longer than this are ignored.
pub const STALE_AFTER: Duration = Duration::from_secs(3);
/// Pokes older than this are forgotten (they only matter within a scale-to-zero grace).
const POKE_MEMORY: Duration = Duration::from_secs(600);
/// Pokes waiting for the controller; beyond, a poke is only recorded (the next tick sees it).
const POKE_QUEUE: usize = 1024;
const CONTROLLER: &str = "autoscaler";
const WORKERS: usize = 2;

/// What failed, naming the step and the object.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("updating the scale of revision {revision} failed")]
    UpdateStatus {
        revision: ObjectRef,
        #[source]
        source: ClientError,
    },
    #[error("serving the autoscaler on {addr} failed")]
    Serve {
        addr: String,
        #[source]
        source: tonic::transport::Error,
    },
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

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

/// The demand the gateways report and the pokes they send, shared by the [`DemandService`]
/// that fills it and the controller that reads it. Cheap to clone (one shared store).
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
    fn poked(&self) -> impl Stream<Item = ObjectRef> + Send + 'static {
        let (tx, rx) = mpsc::channel(POKE_QUEUE);
        self.lock().poke_tx = Some(tx);
        futures::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|key| (key, rx)) })
    }
}

fn non_negative(x: f64) -> f64 {
    if x.is_finite() { x.max(0.0) } else { 0.0 }
}

/// The `stratus.v1.Autoscaler` gRPC service over a [`DemandStore`].
#[derive(Debug, Clone)]
pub struct DemandService {
    store: DemandStore,
}

impl DemandService {
    pub fn new(store: DemandStore) -> DemandService {
        DemandService { store }
    }

    /// The service, ready for `tonic::transport::Server::builder().add_service(…)`.
    pub fn into_server(self) -> AutoscalerServer<DemandService> {
        AutoscalerServer::new(self)
    }
}

#[tonic::async_trait]
impl Autoscaler for DemandService {
    /// Stores each report as it arrives. A report without a gateway name ends the stream with
    /// `InvalidArgument`; the stream ending (or failing) keeps what was reported, which ages out.
    async fn report_demand(
        &self,
        request: Request<Streaming<DemandReport>>,
    ) -> std::result::Result<Response<DemandAck>, Status> {
        let mut reports = request.into_inner();
        while let Some(report) = reports.message().await? {
            if report.gateway.is_empty() {
                return Err(Status::invalid_argument("a demand report needs the name of its gateway"));
            }
            self.store.report(&report, Instant::now());
        }
        Ok(Response::new(DemandAck {}))
    }

    /// Records the poke and returns at once; the scale-up happens in the controller.
    async fn poke(&self, request: Request<PokeRequest>) -> std::result::Result<Response<PokeResponse>, Status> {
        let poke = request.into_inner();
        if poke.namespace.is_empty() || poke.revision.is_empty() {
            return Err(Status::invalid_argument("a poke needs the namespace and the name of a revision"));
        }
        self.store.poke(ObjectRef::new(poke.namespace, poke.revision), Instant::now());
        Ok(Response::new(PokeResponse {}))
    }
}

/// Serves the `stratus.v1.Autoscaler` gRPC service over `demand` on `listener` (plain HTTP/2)
/// until `shutdown`, then lets open streams finish.
pub async fn serve_autoscaler(
    listener: tokio::net::TcpListener,
    demand: DemandStore,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<()> {
    let addr = listener.local_addr().map_or_else(|_| "a listener".to_string(), |a: SocketAddr| a.to_string());
    tonic::transport::Server::builder()
        .add_service(DemandService::new(demand).into_server())
        .serve_with_incoming_shutdown(tonic::transport::server::TcpIncoming::from(listener), shutdown)
        .await
        .map_err(|source| Error::Serve { addr, source })
}

/// One revision's scaler and what it last decided.
struct Tracked {
    uid: String,
    scaler: Scaler,
    last: Option<Decision>,
}

/// The controller's context: the shared one and the scalers of this leadership term.
struct State {
    ctx: Arc<Context>,
    scalers: Mutex<HashMap<ObjectRef, Tracked>>,
}

/// Runs the autoscaler controller until `shutdown`. Pokes sent to the context's demand store
/// while it runs are evaluated at once.
pub async fn run(ctx: Arc<Context>, shutdown: impl Future<Output = ()> + Send) {
    let pokes = ctx.demand.poked();
    let state = Arc::new(State { ctx: ctx.clone(), scalers: Mutex::new(HashMap::new()) });
    Controller::new(&ctx.revisions, state).triggers(pokes).run(reconcile, error_policy, WORKERS, shutdown).await;
}

fn error_policy(_: Arc<Revision>, _: &Error, _: Arc<State>) -> Action {
    Action::backoff()
}

async fn reconcile(rev: Arc<Revision>, state: Arc<State>) -> Result<Action> {
    let start = std::time::Instant::now();
    let result = scale(&rev, &state).await;
    state.ctx.metrics.observe(CONTROLLER, start, result.is_ok());
    result
}

/// One evaluation of a revision (when due), then the write of its decision (when needed).
async fn scale(rev: &Revision, state: &State) -> Result<Action> {
    let ctx = &state.ctx;
    let key = ObjectRef::from_obj(rev);
    let tick = ctx.config.autoscale_tick;
    if rev.meta().deletion_timestamp.is_some() {
        lock(&state.scalers).remove(&key);
        return Ok(Action::await_change());
    }
    let now = Instant::now();
    let previous = rev.status.clone().unwrap_or_default();
    let decision = {
        let mut scalers = lock(&state.scalers);
        let revisions = ctx.revisions.store();
        if scalers.len() > revisions.len() {
            scalers.retain(|k, _| revisions.get_ref(k).is_some());
        }
        let config = ctx.config.scaler_config();
        let spec = rev.spec.clone().unwrap_or_default();
        let (policy, bad_window) = Policy::from_revision(&spec, &rev.meta().annotations, &config);
        let uid = &rev.meta().uid;
        let fresh = || {
            if let Some(bad) = &bad_window {
                warn!(revision = %key, "{bad}");
            }
            // Scaled to zero by the autoscaler before: it stays there until a request.
            let idle = !previous.scale_reason.is_empty() && previous.desired_instances == 0;
            Tracked { uid: uid.clone(), scaler: Scaler::new(config.clone(), now, idle), last: None }
        };
        let tracked = scalers.entry(key.clone()).or_insert_with(fresh);
        if &tracked.uid != uid {
            // Another revision under the same name.
            *tracked = fresh();
        }
        let poke = ctx.demand.last_poke(&key);
        let evaluated = tracked.scaler.last_evaluated();
        let poked = poke.is_some_and(|p| evaluated.is_none_or(|e| p > e));
        let elapsed = evaluated.map(|e| now.saturating_duration_since(e));
        let due = poked || elapsed.is_none_or(|e| e >= tick);
        if let Some(p) = poke {
            tracked.scaler.mark_active(p);
        }
        if due {
            let demand = ctx.demand.demand(&key, now);
            let (ready, cpu_millis) = ready_instances(ctx, rev);
            let sample = Sample { concurrency: demand.concurrency, rps: demand.rps, cpu_millis };
            tracked.scaler.record(now, sample, demand.active());
            let observed = Observed {
                ready,
                ever_ready: previous.ready_instances > 0 || status::is_true(&previous.conditions, READY),
                routable: routable(ctx, rev),
            };
            let decision = tracked.scaler.evaluate(now, &policy, observed);
            debug!(revision = %key, desired = decision.desired, reason = %decision.reason, "evaluated");
            tracked.last = Some(decision);
        }
        match &tracked.last {
            Some(d) if needs_write(&previous, d) => d.clone(),
            // Nothing to write: next evaluation at the next tick.
            _ => {
                let wait = elapsed.filter(|_| !due).map_or(tick, |e| tick.saturating_sub(e));
                return Ok(Action::requeue(wait.max(Duration::from_millis(1))));
            }
        }
    };

    let mut updated = rev.clone();
    let status = updated.status.get_or_insert_with(Default::default);
    status.desired_instances = decision.desired;
    status.scale_reason = decision.reason.clone();
    ctx.client.update_status(updated).await.map_err(|source| Error::UpdateStatus { revision: key.clone(), source })?;
    info!(
        revision = %key,
        from = previous.desired_instances,
        to = decision.desired,
        reason = %decision.reason,
        "scaled a revision"
    );
    Ok(Action::requeue(tick))
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Whether the status must change to say `decision`: another count, or another rule.
fn needs_write(status: &stratus_api::v1::RevisionStatus, decision: &Decision) -> bool {
    status.desired_instances != decision.desired || Kind::of_reason(&status.scale_reason) != Some(decision.kind)
}

/// The ready instances of `rev` in the cache (not being deleted), and the CPU they use.
fn ready_instances(ctx: &Context, rev: &Revision) -> (i32, f64) {
    let meta = rev.meta();
    let mut ready = 0i32;
    let mut cpu = 0i64;
    for inst in ctx.instances.store().list_by_label(REVISION_LABEL, &meta.name) {
        let im = inst.meta();
        let owned = im.owner_references.iter().any(|o| o.controller && o.uid == meta.uid);
        let Some(st) = inst.status.as_ref() else { continue };
        if im.namespace != meta.namespace || im.deletion_timestamp.is_some() || !owned || !st.ready {
            continue;
        }
        ready = ready.saturating_add(1);
        cpu = cpu.saturating_add(st.usage.as_ref().map_or(0, |u| u.cpu_millis.max(0)));
    }
    #[allow(clippy::cast_precision_loss)] // millicores far below 2^52
    (ready, cpu as f64)
}

/// Whether `rev` receives traffic (its Service's `status.traffic` names it with percent > 0 or
/// a tag) or is its Service's latest created revision.
pub fn routable(ctx: &Context, rev: &Revision) -> bool {
    let meta = rev.meta();
    let svc = meta
        .owner_references
        .iter()
        .find(|o| o.controller && o.kind == Service::INFO.kind)
        .and_then(|o| ctx.services.store().get(&meta.namespace, &o.name).filter(|s| s.meta().uid == o.uid));
    svc.is_some_and(|svc| is_routed(rev, &svc))
}

/// [`routable`], given the Service.
pub fn is_routed(rev: &Revision, svc: &Service) -> bool {
    let name = &rev.meta().name;
    let Some(st) = svc.status.as_ref() else { return false };
    &st.latest_created_revision_name == name
        || st.traffic.iter().any(|t| &t.revision_name == name && (t.percent.unwrap_or(0) > 0 || !t.tag.is_empty()))
}

#[cfg(test)]
mod tests {
    use stratus_api::v1::{RevisionDemand, ServiceStatus, TrafficTarget};

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

    #[test]
    fn traffic_tags_and_the_latest_revision_are_routable() {
        let mut rev = Revision::default();
        rev.meta_mut().name = "web-00001".into();
        let svc = |status: ServiceStatus| Service { status: Some(status), ..Default::default() };
        let target = |percent: i32, tag: &str| TrafficTarget {
            revision_name: "web-00001".into(),
            percent: Some(percent),
            tag: tag.into(),
            ..Default::default()
        };
        assert!(!is_routed(&rev, &Service::default()));
        assert!(is_routed(&rev, &svc(ServiceStatus { traffic: vec![target(100, "")], ..Default::default() })));
        assert!(is_routed(&rev, &svc(ServiceStatus { traffic: vec![target(0, "old")], ..Default::default() })));
        assert!(!is_routed(&rev, &svc(ServiceStatus { traffic: vec![target(0, "")], ..Default::default() })));
        let latest = ServiceStatus { latest_created_revision_name: "web-00001".into(), ..Default::default() };
        assert!(is_routed(&rev, &svc(latest)));
    }
}

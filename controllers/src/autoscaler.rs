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
//!   request; any other waits a full grace before it may be scaled to zero. Every replica
//!   serves the demand service, standbys too, and gateways report to all of them
//!   (`--autoscaler A,B`), so a standby that takes over evaluates its first tick on the demand
//!   of the last seconds and keeps the count (tests/failover.rs).
//!
//! Wiring: make a [`DemandStore`], serve it with [`serve_autoscaler`] on a listener the
//! gateways reach, and run the controllers with [`crate::run_with_demand`] (or a
//! [`Context::with_demand`]) on the same store.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;
use stratus_api::identity::roles;
use stratus_client::review::TokenReview;

use stratus_api::Resource;
use stratus_api::v1::autoscaler_server::{Autoscaler, AutoscalerServer};
use stratus_api::v1::{DemandAck, DemandReport, PokeRequest, PokeResponse, Revision, Service};
use stratus_client::Error as ClientError;
use stratus_client::runtime::{Action, Controller, ObjectRef};
use tokio::time::Instant;
use tonic::{Request, Response, Status, Streaming};
use tracing::{debug, info, warn};

use crate::context::Context;
use crate::kpa::{Decision, Kind, Observed, Policy, Sample, Scaler};
use crate::metrics::ScaleSample;
use crate::revisions::REVISION_LABEL;
use crate::status::{self, READY};

/// The store lives in [`crate::demand`], below the Context; re-exported where it always was.
pub use crate::demand::{Demand, DemandStore, STALE_AFTER};

/// The controller's name in metrics and logs.
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
        source: std::io::Error,
    },
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// The `stratus.v1.Autoscaler` gRPC service over a [`DemandStore`].
#[derive(Debug, Clone)]
pub struct DemandService {
    store: DemandStore,
    /// Who may report and poke: gateways, when set.
    callers: Option<Callers>,
}

/// How the demand service knows a gateway.
#[derive(Debug, Clone)]
enum Callers {
    /// By its token, reviewed with the API (plain HTTP/2; cluster admins pass too).
    Review(Arc<TokenReview>),
    /// By its client certificate from the cluster CA (`system:gateway:NAME`), over TLS.
    GatewayCertificate,
}

/// The cluster roles whose tokens the demand service takes.
pub const REPORTERS: &[&str] = &[roles::SYSTEM_GATEWAY, roles::CLUSTER_ADMIN];

impl DemandService {
    pub fn new(store: DemandStore) -> DemandService {
        DemandService { store, callers: None }
    }

    /// Takes calls only from callers `review` lets in.
    pub fn with_review(mut self, review: Arc<TokenReview>) -> DemandService {
        self.callers = Some(Callers::Review(review));
        self
    }

    /// Takes calls only from callers that presented a gateway's client certificate
    /// (`system:gateway:NAME`), which the server's TLS configuration verified against the
    /// cluster CA; the server must put the connection's `Peer` in the requests
    /// (`stratus_support::server::serve_tower_with_peer`). A gateway reports only as itself.
    pub fn with_gateway_certificates(mut self) -> DemandService {
        self.callers = Some(Callers::GatewayCertificate);
        self
    }

    /// Admits the caller; returns the gateway it proved to be, when it proved it by
    /// certificate.
    async fn admit<T>(&self, request: &Request<T>) -> std::result::Result<Option<String>, Status> {
        match &self.callers {
            None => Ok(None),
            Some(Callers::Review(review)) => review.check(request.metadata()).await.map(|_| None),
            Some(Callers::GatewayCertificate) => {
                let subject = stratus_client::tls::caller_subject(request)?;
                match stratus_api::identity::parse_gateway_user(&subject.common_name) {
                    Some(gateway) => Ok(Some(gateway.to_string())),
                    None => Err(Status::permission_denied(format!(
                        "the autoscaler takes demand only from gateways (a certificate for {}), not from {:?}",
                        stratus_api::identity::gateway_user("NAME"),
                        subject.common_name
                    ))),
                }
            }
        }
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
        let proven = self.admit(&request).await?;
        let mut reports = request.into_inner();
        while let Some(report) = reports.message().await? {
            if report.gateway.is_empty() {
                return Err(Status::invalid_argument("a demand report needs the name of its gateway"));
            }
            if let Some(gateway) = proven.as_ref().filter(|g| **g != report.gateway) {
                return Err(Status::permission_denied(format!(
                    "gateway {gateway} may report only its own demand, not that of gateway {:?}",
                    report.gateway
                )));
            }
            self.store.report(&report, Instant::now());
        }
        Ok(Response::new(DemandAck {}))
    }

    /// Records the poke and returns at once; the scale-up happens in the controller.
    async fn poke(&self, request: Request<PokeRequest>) -> std::result::Result<Response<PokeResponse>, Status> {
        self.admit(&request).await?;
        let poke = request.into_inner();
        if poke.namespace.is_empty() || poke.revision.is_empty() {
            return Err(Status::invalid_argument("a poke needs the namespace and the name of a revision"));
        }
        self.store.poke(ObjectRef::new(poke.namespace, poke.revision), Instant::now());
        Ok(Response::new(PokeResponse {}))
    }
}

/// Serves the `stratus.v1.Autoscaler` gRPC service over `demand` on `listener` (plain HTTP/2)
/// until `shutdown`, then lets open streams finish. Only gateways (and cluster admins) are
/// answered: `review` checks their tokens with the API server.
pub async fn serve_autoscaler(
    listener: tokio::net::TcpListener,
    demand: DemandStore,
    review: Arc<TokenReview>,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<()> {
    let addr = listener.local_addr().map_or_else(|_| "a listener".to_string(), |a: SocketAddr| a.to_string());
    let routes = tonic::service::Routes::new(DemandService::new(demand).with_review(review).into_server()).prepare();
    stratus_support::server::serve_tower(listener, None, stratus_support::server::Limits::default(), shutdown, routes)
        .await
        .map_err(|source| Error::Serve { addr, source })
}

/// [`serve_autoscaler`] over TLS with `tls` (which should require client certificates from
/// the cluster CA: `Certificates::server_config_requiring_clients`): only callers that present
/// a gateway's certificate (`system:gateway:NAME`) are answered, and each reports only as
/// itself.
pub async fn serve_autoscaler_tls(
    listener: tokio::net::TcpListener,
    demand: DemandStore,
    tls: Arc<rustls::ServerConfig>,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<()> {
    let addr = listener.local_addr().map_or_else(|_| "a listener".to_string(), |a: SocketAddr| a.to_string());
    let routes =
        tonic::service::Routes::new(DemandService::new(demand).with_gateway_certificates().into_server()).prepare();
    let limits = stratus_support::server::Limits::default();
    stratus_support::server::serve_tower_with_peer(listener, Some(tls), limits, shutdown, routes)
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
    // Nothing is evaluated before the Services and Instances are cached: an empty Service
    // cache makes every revision look unroutable (minInstances then does not hold), an empty
    // Instance cache makes it look unready. A new leader would scale a revision below its
    // minInstances for one tick.
    let mut shutdown = std::pin::pin!(shutdown);
    tokio::select! {
        () = &mut shutdown => return,
        () = async {
            tokio::join!(ctx.revisions.wait_synced(), ctx.services.wait_synced(), ctx.instances.wait_synced());
        } => {}
    }
    let pokes = ctx.demand.poked();
    let state = Arc::new(State { ctx: ctx.clone(), scalers: Mutex::new(HashMap::new()) });
    Controller::new(&ctx.revisions, state)
        .triggers(pokes)
        .metrics(CONTROLLER, ctx.metrics.clone())
        .run(reconcile, error_policy, WORKERS, shutdown)
        .await;
}

fn error_policy(_: Arc<Revision>, _: &Error, _: Arc<State>) -> Action {
    Action::backoff()
}

async fn reconcile(rev: Arc<Revision>, state: Arc<State>) -> Result<Action> {
    scale(&rev, &state).await
}

/// One evaluation of a revision (when due), then the write of its decision (when needed).
async fn scale(rev: &Revision, state: &State) -> Result<Action> {
    let ctx = &state.ctx;
    let key = ObjectRef::from_obj(rev);
    let tick = ctx.config.autoscale_tick;
    if rev.meta().deletion_timestamp.is_some() {
        lock(&state.scalers).remove(&key);
        ctx.metrics.forget_revision(&key.namespace, &key.name);
        return Ok(Action::await_change());
    }
    let now = Instant::now();
    let previous = rev.status.clone().unwrap_or_default();
    let decision = {
        let mut scalers = lock(&state.scalers);
        let revisions = ctx.revisions.store();
        if scalers.len() > revisions.len() {
            scalers.retain(|k, _| {
                let known = revisions.get_ref(k).is_some();
                if !known {
                    ctx.metrics.forget_revision(&k.namespace, &k.name);
                }
                known
            });
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
            let sample = ScaleSample {
                desired: decision.desired,
                ready,
                panicking: decision.panicking,
                concurrency: demand.concurrency,
                rps: demand.rps,
            };
            ctx.metrics.record_scale(&key.namespace, &key.name, sample);
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
    use stratus_api::v1::{ServiceStatus, TrafficTarget};

    use super::*;

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

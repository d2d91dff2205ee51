//! A Service's recent traffic, for people to read: the requests per second and latency the
//! gateways measure, kept in memory for [`HISTORY`].
//!
//! ```text
//! gRPC  stratus.v1.TrafficMetrics/Report   gateways stream their DemandReports here (the
//!                                          same ones the autoscaler takes), once a second
//! GET   /apis/stratus.dev/v1/namespaces/{ns}/services/{name}/metrics
//!                                          the Service's last HISTORY in STEP slots
//! ```
//!
//! The API server stores nothing of it: a report adds its revisions' request counts and
//! latency buckets into the slot of [`STEP`] seconds it arrived in, slots older than
//! [`HISTORY`] are dropped, and a restarted server starts empty. With several API servers
//! each holds what the gateways that reached it reported (a gateway reports to the server its
//! API client is connected to), as the autoscaler's replicas each hold what reached them.
//!
//! Only gateways (`system:gateway`) and cluster admins may report. Reading is authorized as
//! reading the Service: whoever may get the Service may read its traffic, and anyone else is
//! answered exactly as for the Service (404 or 403).

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use axum::Router;
use axum::extract::{Path, State};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde_json::{Value, json};
use stratus_api::AnyObject;
use stratus_api::Resource;
use stratus_api::identity::roles;
use stratus_api::v1::traffic_metrics_server::TrafficMetrics;
use stratus_api::v1::{
    DemandAck, DemandReport, ListServiceTrafficRequest, ListServiceTrafficResponse, Revision, Service, ServiceTraffic,
};
use tonic::{Request, Response as GrpcResponse, Status, Streaming};

use crate::auth::Caller;
use crate::error::{ApiError, ApiResult, Reason};
use crate::http::error_response;
use crate::registry::{MAX_PAGE, Registry, Selection};

/// The length of one slot of history.
pub const STEP: Duration = Duration::from_secs(5);
/// How much history is kept and answered.
pub const HISTORY: Duration = Duration::from_secs(15 * 60);
/// The most revisions whose history is kept; past it, reports of new revisions are dropped
/// until old ones age out (a revision without traffic for [`HISTORY`] is forgotten).
pub const MAX_REVISIONS: usize = 20_000;
/// Latency buckets in a report: bucket `i < 16` counts requests answered in at most 2^i ms,
/// the last one those that took longer (`RevisionDemand.latency_buckets`).
pub const LATENCY_BUCKETS: usize = 17;

/// The requests of one revision in one slot, summed over the gateways' reports.
#[derive(Debug, Clone, Default, PartialEq)]
struct Slot {
    /// Seconds since the epoch of the slot's start, a multiple of [`STEP`].
    start: u64,
    requests: u64,
    latency: [u64; LATENCY_BUCKETS],
    /// Requests in flight (or waiting) times the milliseconds they were: the reports'
    /// concurrency weighted by their periods, so that over the slot it averages to
    /// `concurrency_ms / STEP`.
    concurrency_ms: f64,
}

/// The slots of each revision with requests, oldest first, by (namespace, revision).
type Revisions = HashMap<(String, String), VecDeque<Slot>>;

/// The traffic of several revisions in one slot, while a series is added up.
#[derive(Default)]
struct Sum {
    requests: u64,
    latency: [u64; LATENCY_BUCKETS],
    concurrency_ms: f64,
    by_revision: BTreeMap<String, u64>,
}

impl Sum {
    fn add(&mut self, revision: &str, slot: &Slot) {
        self.requests += slot.requests;
        for (total, count) in self.latency.iter_mut().zip(slot.latency) {
            *total += count;
        }
        self.concurrency_ms += slot.concurrency_ms;
        if slot.requests > 0 {
            *self.by_revision.entry(revision.to_string()).or_default() += slot.requests;
        }
    }

    /// The slot that starts at `start` as a [`Point`].
    fn point(self, start: u64) -> Point {
        #[allow(clippy::cast_precision_loss)] // counts far below 2^52
        let per_second = |n: u64| n as f64 / STEP.as_secs_f64();
        Point {
            time: start + STEP.as_secs(),
            requests_per_second: per_second(self.requests),
            concurrency: self.concurrency_ms / (STEP.as_secs_f64() * 1000.0),
            p50_ms: quantile(&self.latency, 0.5),
            p99_ms: quantile(&self.latency, 0.99),
            revisions: self.by_revision.into_iter().map(|(name, n)| (name, per_second(n))).collect(),
        }
    }
}

/// The recent traffic of every revision, as the gateways report it. Cheap to clone (one
/// shared store).
#[derive(Debug, Clone, Default)]
pub struct TrafficHistory {
    revisions: Arc<Mutex<Revisions>>,
}

impl TrafficHistory {
    pub fn new() -> TrafficHistory {
        TrafficHistory::default()
    }

    fn lock(&self) -> MutexGuard<'_, Revisions> {
        // Every update leaves the map consistent, whatever a panicking holder did.
        self.revisions.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Adds `report`, received at `now` (seconds since the epoch), into the slot of `now`.
    /// Revisions without requests add nothing; negative counts count as zero.
    pub fn record(&self, report: &DemandReport, now: u64) {
        let start = slot_start(now);
        let mut revisions = self.lock();
        for r in &report.revisions {
            let requests = u64::try_from(r.requests).unwrap_or(0);
            let mut latency = [0u64; LATENCY_BUCKETS];
            for (bucket, count) in latency.iter_mut().zip(&r.latency_buckets) {
                *bucket = u64::try_from(*count).unwrap_or(0);
            }
            #[allow(clippy::cast_precision_loss)] // periods far below 2^52 ms
            let concurrency_ms = if r.concurrency.is_finite() && r.concurrency > 0.0 {
                r.concurrency * r.period_ms.max(0) as f64
            } else {
                0.0
            };
            if requests == 0 && latency.iter().all(|c| *c == 0) && concurrency_ms == 0.0 {
                continue;
            }
            if r.namespace.is_empty() || r.revision.is_empty() {
                continue;
            }
            let key = (r.namespace.clone(), r.revision.clone());
            if !revisions.contains_key(&key) && revisions.len() >= MAX_REVISIONS {
                forget_old(&mut revisions, now);
                if revisions.len() >= MAX_REVISIONS {
                    continue;
                }
            }
            let slots = revisions.entry(key).or_default();
            if slots.back().is_none_or(|s| s.start < start) {
                slots.push_back(Slot { start, ..Slot::default() });
            }
            // A report's slot is the newest (reports arrive in order of time), or it fell into
            // an older one while the clock stepped back: it is added there.
            if let Some(slot) = slots.iter_mut().rev().find(|s| s.start <= start) {
                slot.requests = slot.requests.saturating_add(requests);
                for (total, count) in slot.latency.iter_mut().zip(latency) {
                    *total = total.saturating_add(count);
                }
                slot.concurrency_ms += concurrency_ms;
            }
            while slots.front().is_some_and(|s| s.start + HISTORY.as_secs() <= now) {
                slots.pop_front();
            }
        }
    }

    /// The traffic of `revisions` of `namespace` over the [`HISTORY`] before `now`: one point a
    /// complete slot, oldest first (the slot `now` is in is not complete, and left out).
    pub fn series(&self, namespace: &str, revisions: &[String], now: u64) -> Vec<Point> {
        let end = slot_start(now);
        let first = end.saturating_sub(HISTORY.as_secs());
        let mut points: BTreeMap<u64, Sum> = (first..end)
            .step_by(usize::try_from(STEP.as_secs()).unwrap_or(1))
            .map(|start| (start, Sum::default()))
            .collect();
        let stored = self.lock();
        for revision in revisions {
            let Some(slots) = stored.get(&(namespace.to_string(), revision.clone())) else { continue };
            for slot in slots {
                let Some(sum) = points.get_mut(&slot.start) else { continue };
                sum.add(revision, slot);
            }
        }
        drop(stored);
        points.into_iter().map(|(start, sum)| sum.point(start)).collect()
    }

    /// The traffic of `revisions` of `namespace` in the last complete slot before `now` (the
    /// last point of [`TrafficHistory::series`]).
    pub fn latest(&self, namespace: &str, revisions: &[String], now: u64) -> Point {
        let start = slot_start(now).saturating_sub(STEP.as_secs());
        let mut sum = Sum::default();
        let stored = self.lock();
        for revision in revisions {
            let Some(slots) = stored.get(&(namespace.to_string(), revision.clone())) else { continue };
            if let Some(slot) = slots.iter().rev().find(|s| s.start == start) {
                sum.add(revision, slot);
            }
        }
        drop(stored);
        sum.point(start)
    }
}

/// The traffic of one slot.
#[derive(Debug, Clone, PartialEq)]
pub struct Point {
    /// The end of the slot, in seconds since the epoch.
    pub time: u64,
    pub requests_per_second: f64,
    /// Requests in flight or waiting, averaged over the slot.
    pub concurrency: f64,
    /// The median and 99th percentile latency of the requests answered in the slot, in
    /// milliseconds; `None` when none was.
    pub p50_ms: Option<f64>,
    pub p99_ms: Option<f64>,
    /// Requests per second by revision (revisions with requests only).
    pub revisions: BTreeMap<String, f64>,
}

fn slot_start(now: u64) -> u64 {
    now - now % STEP.as_secs()
}

/// Drops every revision whose newest slot is older than [`HISTORY`].
fn forget_old(revisions: &mut Revisions, now: u64) {
    revisions.retain(|_, slots| slots.back().is_some_and(|s| s.start + HISTORY.as_secs() > now));
}

/// The `q` quantile of the requests counted in `buckets`, in milliseconds, interpolated
/// linearly within the bucket it falls in (as Prometheus's `histogram_quantile`); a quantile in
/// the last bucket (over 2^15 ms) is that bucket's lower bound. `None` without requests.
fn quantile(buckets: &[u64; LATENCY_BUCKETS], q: f64) -> Option<f64> {
    let total: u64 = buckets.iter().sum();
    if total == 0 {
        return None;
    }
    #[allow(clippy::cast_precision_loss)] // counts far below 2^52
    let rank = q * total as f64;
    let mut below = 0u64;
    for (i, count) in buckets.iter().enumerate() {
        let upper = f64::from(1u32 << i.min(LATENCY_BUCKETS - 2));
        if i == LATENCY_BUCKETS - 1 {
            return Some(upper);
        }
        let lower = if i == 0 { 0.0 } else { upper / 2.0 };
        #[allow(clippy::cast_precision_loss)]
        let (below_f, count_f) = (below as f64, *count as f64);
        if *count > 0 && below_f + count_f >= rank {
            return Some(lower + (upper - lower) * ((rank - below_f) / count_f).clamp(0.0, 1.0));
        }
        below += count;
    }
    None
}

fn unix_now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

// ---------------------------------------------------------------- gRPC: the gateways' reports

/// `stratus.v1.TrafficMetrics`: takes the gateways' report streams into a [`TrafficHistory`].
pub struct Reports {
    history: TrafficHistory,
    registry: Registry,
}

impl Reports {
    pub fn new(history: TrafficHistory, registry: Registry) -> Reports {
        Reports { history, registry }
    }
}

#[tonic::async_trait]
impl TrafficMetrics for Reports {
    async fn report(&self, req: Request<Streaming<DemandReport>>) -> Result<GrpcResponse<DemandAck>, Status> {
        let caller = crate::auth::authn::caller_of(req.extensions()).map_err(Status::from)?;
        if !may_report(&caller) {
            return Err(Status::permission_denied(format!(
                "{} may not report traffic: only gateways ({}) and {} may",
                caller.user,
                roles::SYSTEM_GATEWAY,
                roles::CLUSTER_ADMIN
            )));
        }
        let mut reports = req.into_inner();
        while let Some(report) = reports.message().await? {
            self.history.record(&report, unix_now());
        }
        Ok(GrpcResponse::new(DemandAck {}))
    }

    async fn list_service_traffic(
        &self,
        req: Request<ListServiceTrafficRequest>,
    ) -> Result<GrpcResponse<ListServiceTrafficResponse>, Status> {
        let start = Instant::now();
        let caller = crate::auth::authn::caller_of(req.extensions()).map_err(Status::from)?;
        let namespace = req.into_inner().namespace;
        let result = list_service_traffic(&self.registry, &self.history, &caller, &namespace).await;
        let code = result.as_ref().map_or_else(|e| e.reason.http_status(), |_| 200);
        self.registry.metrics().observe("grpc", "servicetraffic", code, start.elapsed().as_secs_f64());
        Ok(GrpcResponse::new(result.map_err(Status::from)?))
    }
}

/// Every page of `kind` in `sel`, read as `caller`.
async fn list_every(registry: &Registry, caller: &Caller, kind: &str, sel: &Selection) -> ApiResult<Vec<AnyObject>> {
    let mut items = Vec::new();
    let mut token = String::new();
    loop {
        let page = registry.list(caller, kind, sel, MAX_PAGE, &token).await?;
        items.extend(page.items);
        if page.continue_token.is_empty() {
            return Ok(items);
        }
        token = page.continue_token;
    }
}

/// The latest slot of traffic of every Service in `namespace` (every namespace when empty)
/// that `caller` may list: Services are listed as the caller, their revisions as the system.
async fn list_service_traffic(
    registry: &Registry,
    history: &TrafficHistory,
    caller: &Caller,
    namespace: &str,
) -> ApiResult<ListServiceTrafficResponse> {
    let sel = Selection { namespace: namespace.to_string(), labels: String::new(), fields: String::new() };
    let services = list_every(registry, caller, Service::INFO.kind, &sel).await?;
    let mut revisions: HashMap<(String, String), Vec<String>> = HashMap::new();
    for revision in list_every(registry, &Caller::system(), Revision::INFO.kind, &sel).await? {
        let meta = revision.meta();
        if let Some(service) = meta.labels.get(stratus_api::wellknown::labels::SERVICE) {
            revisions.entry((meta.namespace.clone(), service.clone())).or_default().push(meta.name.clone());
        }
    }
    let now = unix_now();
    let mut time = 0;
    let items = services
        .iter()
        .map(|service| {
            let meta = service.meta();
            let of_service = revisions.get(&(meta.namespace.clone(), meta.name.clone()));
            let point = history.latest(&meta.namespace, of_service.map_or(&[][..], Vec::as_slice), now);
            time = point.time;
            ServiceTraffic {
                namespace: meta.namespace.clone(),
                name: meta.name.clone(),
                requests_per_second: point.requests_per_second,
                concurrency: point.concurrency,
                p50_ms: point.p50_ms,
                p99_ms: point.p99_ms,
            }
        })
        .collect();
    let step = STEP.as_secs();
    Ok(ListServiceTrafficResponse {
        items,
        time: i64::try_from(if time == 0 { slot_start(now) } else { time }).unwrap_or(i64::MAX),
        step_seconds: i64::try_from(step).unwrap_or(i64::MAX),
    })
}

fn may_report(caller: &Caller) -> bool {
    [roles::SYSTEM_GATEWAY, roles::CLUSTER_ADMIN].contains(&caller.cluster_role.as_str())
}

// ---------------------------------------------------------------- HTTP: reading a Service's

#[derive(Clone)]
struct Reader {
    registry: Registry,
    history: TrafficHistory,
}

/// `GET /apis/stratus.dev/v1/namespaces/{ns}/services/{name}/metrics`.
pub fn router(registry: Registry, history: TrafficHistory) -> Router {
    Router::new()
        .route("/apis/stratus.dev/v1/namespaces/{namespace}/services/{name}/metrics", get(read))
        .with_state(Reader { registry, history })
}

async fn read(
    State(r): State<Reader>,
    Path((namespace, name)): Path<(String, String)>,
    caller: Option<axum::Extension<Caller>>,
) -> Response {
    let start = Instant::now();
    let response = match caller {
        None => error_response(&ApiError::new(Reason::Unauthorized, "no credentials")),
        Some(axum::Extension(caller)) => match service_metrics(&r, &caller, &namespace, &name).await {
            Ok(body) => axum::Json(body).into_response(),
            Err(e) => error_response(&e),
        },
    };
    r.registry.metrics().observe("http", "metrics", response.status().as_u16(), start.elapsed().as_secs_f64());
    response
}

/// The answer: the Service's traffic, every revision it has now together.
async fn service_metrics(r: &Reader, caller: &Caller, namespace: &str, name: &str) -> ApiResult<Value> {
    // Read as the caller: whoever may not get the Service learns nothing more here.
    r.registry.get(caller, Service::INFO.kind, namespace, name).await?;
    let sel = Selection {
        namespace: namespace.to_string(),
        labels: format!("{}={name}", stratus_api::wellknown::labels::SERVICE),
        fields: String::new(),
    };
    let mut revisions = Vec::new();
    let mut token = String::new();
    loop {
        let page = r.registry.list(&Caller::system(), Revision::INFO.kind, &sel, MAX_PAGE, &token).await?;
        revisions.extend(page.items.iter().map(|o| o.meta().name.clone()));
        if page.continue_token.is_empty() {
            break;
        }
        token = page.continue_token;
    }
    let points: Vec<Value> = r
        .history
        .series(namespace, &revisions, unix_now())
        .into_iter()
        .map(|p| {
            json!({"time": p.time, "requestsPerSecond": p.requests_per_second, "concurrency": p.concurrency, "p50Ms": p.p50_ms,
                   "p99Ms": p.p99_ms, "revisions": p.revisions})
        })
        .collect();
    Ok(json!({
        "apiVersion": "stratus.dev/v1",
        "kind": "ServiceMetrics",
        "metadata": {"namespace": namespace, "name": name},
        "stepSeconds": STEP.as_secs(),
        "windowSeconds": HISTORY.as_secs(),
        "points": points,
    }))
}

#[cfg(test)]
mod tests {
    use stratus_api::v1::RevisionDemand;

    use super::*;

    fn report(revision: &str, requests: i64, latency: Vec<i64>) -> DemandReport {
        DemandReport {
            gateway: "g".into(),
            revisions: vec![RevisionDemand {
                namespace: "default".into(),
                revision: revision.into(),
                requests,
                latency_buckets: latency,
                period_ms: 1000,
                ..Default::default()
            }],
        }
    }

    #[test]
    fn reports_add_up_per_slot_and_age_out() {
        let history = TrafficHistory::new();
        let t0 = 1_000_000; // a multiple of STEP
        // Two gateways' reports in the first slot, one in the next.
        history.record(&report("web-1", 10, vec![0, 0, 10]), t0 + 1);
        history.record(&report("web-1", 15, vec![0, 0, 0, 15]), t0 + 3);
        history.record(&report("web-2", 5, vec![5]), t0 + 6);
        history.record(&report("other-1", 99, vec![99]), t0 + 6);
        let revisions = ["web-1".to_string(), "web-2".to_string()];
        let points = history.series("default", &revisions, t0 + 12);
        assert_eq!(points.len(), usize::try_from(HISTORY.as_secs() / STEP.as_secs()).unwrap());
        let [.., first, second] = points.as_slice() else { panic!("too few points") };
        assert_eq!((first.time, second.time), (t0 + 5, t0 + 10));
        assert_eq!(first.requests_per_second, 25.0 / 5.0);
        // 10 requests in (2, 4] ms and 15 in (4, 8] ms: the median is in the second bucket.
        let p50 = first.p50_ms.unwrap();
        assert!((4.0..=8.0).contains(&p50), "{p50}");
        assert_eq!(first.p99_ms.map(f64::round), Some(8.0));
        assert_eq!(second.revisions, BTreeMap::from([("web-2".to_string(), 1.0)]), "other-1 is not asked for");
        assert_eq!(second.p50_ms, Some(0.5));
        assert!(points[..points.len() - 2].iter().all(|p| p.requests_per_second == 0.0 && p.p50_ms.is_none()));

        // After HISTORY, the slots are gone.
        let later = t0 + HISTORY.as_secs() + 20;
        history.record(&report("web-1", 1, vec![1]), later);
        assert_eq!(
            history.series("default", &revisions, later + 5).iter().map(|p| p.requests_per_second).sum::<f64>(),
            0.2
        );
        // Reports of other namespaces and revisions without requests are kept apart or skipped.
        assert!(history.series("elsewhere", &revisions, later + 5).iter().all(|p| p.requests_per_second == 0.0));
        history.record(&report("idle-1", 0, vec![]), later);
        assert!(!history.lock().contains_key(&("default".to_string(), "idle-1".to_string())));
    }

    #[test]
    fn the_latest_slot_sums_revisions_and_averages_concurrency_over_the_slot() {
        let history = TrafficHistory::new();
        let t0 = 2_000_000; // a multiple of STEP
        let with_concurrency = |revision: &str, requests: i64, concurrency: f64| {
            let mut r = report(revision, requests, vec![0, requests]);
            r.revisions[0].concurrency = concurrency;
            r
        };
        // Five one-second reports of 4 in flight from one gateway, and three of 2, 2 and 3 from
        // another: on average 4 + 7/5 over the slot.
        for second in 0..5 {
            history.record(&with_concurrency("web-1", 10, 4.0), t0 + second);
        }
        history.record(&with_concurrency("web-2", 5, 2.0), t0 + 1);
        history.record(&with_concurrency("web-2", 5, 2.0), t0 + 2);
        let mut long = with_concurrency("web-2", 0, 3.0);
        long.revisions[0].latency_buckets.clear();
        history.record(&long, t0 + 3); // in flight, none finished: counted all the same
        history.record(&with_concurrency("web-1", 99, 9.0), t0 + 5); // the next slot, still open
        let revisions = ["web-1".to_string(), "web-2".to_string()];
        let latest = history.latest("default", &revisions, t0 + 7);
        assert_eq!(latest.time, t0 + 5);
        assert!((latest.requests_per_second - 12.0).abs() < 1e-9, "{latest:?}");
        assert!((latest.concurrency - 5.4).abs() < 1e-9, "{latest:?}");
        assert_eq!(latest.p50_ms, Some(1.5));
        assert_eq!(history.series("default", &revisions, t0 + 7).last(), Some(&latest));
        // Then the next slot is the latest, and after it one without reports.
        assert!((history.latest("default", &revisions, t0 + 12).requests_per_second - 19.8).abs() < 1e-9);
        assert_eq!(history.latest("default", &revisions, t0 + 17).requests_per_second, 0.0);
    }

    #[test]
    fn quantiles_interpolate_within_buckets() {
        let mut buckets = [0u64; LATENCY_BUCKETS];
        assert_eq!(quantile(&buckets, 0.5), None);
        buckets[0] = 100; // all within 1 ms
        assert_eq!(quantile(&buckets, 0.5), Some(0.5));
        assert_eq!(quantile(&buckets, 0.99), Some(0.99));
        let mut slow = [0u64; LATENCY_BUCKETS];
        slow[LATENCY_BUCKETS - 1] = 1;
        assert_eq!(quantile(&slow, 0.5), Some(32768.0), "past the last bound: its lower bound");
    }

    #[test]
    fn only_gateways_and_cluster_admins_report() {
        let mut caller = Caller::system();
        caller.cluster_role = roles::SYSTEM_GATEWAY.into();
        assert!(may_report(&caller));
        caller.cluster_role = roles::SYSTEM_CONTROLLERS.into();
        assert!(!may_report(&caller));
        caller.cluster_role = String::new();
        assert!(!may_report(&caller));
    }
}

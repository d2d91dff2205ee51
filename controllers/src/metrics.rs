//! The controllers' Prometheus metrics: reconciles by controller and outcome, their durations,
//! each controller's work queue (depth, adds, retries), and whether this replica leads.
//!
//! Every controller reports here through the runtime ([`ControllerMetrics`]): it is built with
//! `Controller::metrics(NAME, ctx.metrics.clone())` and never times itself.

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::get;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use stratus_client::runtime::{ControllerMetrics, ReconcileOutcome};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct Outcome {
    pub controller: String,
    pub result: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ControllerLabel {
    pub controller: String,
}

pub struct Metrics {
    registry: Registry,
    reconciles: Family<Outcome, Counter>,
    durations: Family<ControllerLabel, Histogram>,
    queue_depth: Family<ControllerLabel, Gauge>,
    queue_adds: Family<ControllerLabel, Counter>,
    queue_retries: Family<ControllerLabel, Counter>,
    pub leader: Gauge,
    /// Billing: usage reports folded into the ledger, of which adjustments (late reports
    /// folded into a later bucket), invoices written, budget thresholds crossed and budget
    /// webhook calls by result ("ok", "error").
    pub billing_reports_folded: Counter,
    pub billing_adjustments: Counter,
    pub billing_invoices_written: Counter,
    pub billing_budget_crossings: Counter,
    pub billing_webhook_calls: Family<WebhookResult, Counter>,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct WebhookResult {
    pub result: String,
}

impl Default for Metrics {
    fn default() -> Metrics {
        let mut registry = Registry::with_prefix("stratus_controllers");
        let reconciles = Family::<Outcome, Counter>::default();
        let durations = Family::<ControllerLabel, Histogram>::new_with_constructor(|| {
            Histogram::new(exponential_buckets(0.0005, 2.0, 16))
        });
        let leader = Gauge::default();
        let queue_depth = Family::<ControllerLabel, Gauge>::default();
        let queue_adds = Family::<ControllerLabel, Counter>::default();
        let queue_retries = Family::<ControllerLabel, Counter>::default();
        registry.register("queue_depth", "Keys waiting in a controller's work queue", queue_depth.clone());
        registry.register("queue_adds", "Keys added to a controller's work queue", queue_adds.clone());
        registry.register("queue_retries", "Keys requeued after their backoff by a controller", queue_retries.clone());
        registry.register("reconciles", "Reconciles by controller and result (ok, error)", reconciles.clone());
        registry.register("reconcile_duration_seconds", "How long reconciles take", durations.clone());
        registry.register("leader", "1 while this replica leads and runs the controllers", leader.clone());
        let billing_reports_folded = Counter::default();
        let billing_adjustments = Counter::default();
        let billing_invoices_written = Counter::default();
        let billing_budget_crossings = Counter::default();
        let billing_webhook_calls = Family::<WebhookResult, Counter>::default();
        registry.register(
            "billing_reports_folded",
            "Usage reports folded into the ledger",
            billing_reports_folded.clone(),
        );
        registry.register(
            "billing_adjustments",
            "Usage reports that arrived after their bucket closed, folded into an open one",
            billing_adjustments.clone(),
        );
        registry.register(
            "billing_invoices_written",
            "Invoices created or rewritten",
            billing_invoices_written.clone(),
        );
        registry.register(
            "billing_budget_crossings",
            "Budget thresholds crossed (one Event each)",
            billing_budget_crossings.clone(),
        );
        registry.register(
            "billing_webhook_calls",
            "Budget webhook calls by result (ok, error)",
            billing_webhook_calls.clone(),
        );
        Metrics {
            registry,
            reconciles,
            durations,
            queue_depth,
            queue_adds,
            queue_retries,
            leader,
            billing_reports_folded,
            billing_adjustments,
            billing_invoices_written,
            billing_budget_crossings,
            billing_webhook_calls,
        }
    }
}

impl Metrics {
    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}

/// The series of the controller named `controller`: `stratus_controllers_reconciles_total` and
/// `_reconcile_duration_seconds` by reconcile, `_queue_depth`, `_queue_adds_total` and
/// `_queue_retries_total` by queue change.
impl ControllerMetrics for Metrics {
    /// The queue series exist, at zero, from the moment the controller runs: a dashboard tells
    /// an idle controller from one that does not run.
    fn started(&self, controller: &str) {
        let label = label(controller);
        // Creating a series is what is wanted here; the guards `get_or_create` returns are not.
        let _ = self.queue_depth.get_or_create(&label);
        let _ = self.queue_adds.get_or_create(&label);
        let _ = self.queue_retries.get_or_create(&label);
    }

    fn reconciled(&self, controller: &str, duration: Duration, outcome: ReconcileOutcome) {
        let result = outcome.as_str().into();
        self.reconciles.get_or_create(&Outcome { controller: controller.into(), result }).inc();
        self.durations.get_or_create(&label(controller)).observe(duration.as_secs_f64());
    }

    fn queue_depth(&self, controller: &str, delta: i64) {
        self.queue_depth.get_or_create(&label(controller)).inc_by(delta);
    }

    fn queue_added(&self, controller: &str) {
        self.queue_adds.get_or_create(&label(controller)).inc();
    }

    fn queue_retried(&self, controller: &str) {
        self.queue_retries.get_or_create(&label(controller)).inc();
    }
}

/// Serves `/metrics` (`metrics`, OpenMetrics text) and `/healthz` (the process answers) on
/// `listener` until `shutdown` completes; fails only when serving fails.
pub async fn serve_metrics(
    listener: tokio::net::TcpListener,
    metrics: Arc<Metrics>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let app =
        Router::new()
            .route(
                "/metrics",
                get(move || {
                    let body = metrics.encode();
                    async move {
                        ([(header::CONTENT_TYPE, "application/openmetrics-text; version=1.0.0; charset=utf-8")], body)
                    }
                }),
            )
            .route("/healthz", get(|| async { "ok".into_response() }));
    stratus_support::server::serve_tower(listener, None, stratus_support::server::Limits::default(), shutdown, app)
        .await
}

fn label(controller: &str) -> ControllerLabel {
    ControllerLabel { controller: controller.into() }
}

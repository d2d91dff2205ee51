//! The controllers' Prometheus metrics: reconciles by controller and outcome, their durations,
//! each controller's work queue (depth, adds, retries), whether this replica leads, what the
//! autoscaler decided for each revision and which Nodes are Ready.
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

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RevisionLabel {
    pub namespace: String,
    pub revision: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct NodeLabel {
    pub node: String,
}

/// What the autoscaler saw and decided for one revision at one evaluation.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct ScaleSample {
    pub desired: i32,
    pub ready: i32,
    pub panicking: bool,
    /// The demand the gateways reported: requests in flight (averaged) and per second.
    pub concurrency: f64,
    pub rps: f64,
}

/// A gauge of a float value.
type FloatGauge = Gauge<f64, std::sync::atomic::AtomicU64>;

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
    desired_instances: Family<RevisionLabel, Gauge>,
    ready_instances: Family<RevisionLabel, Gauge>,
    panic: Family<RevisionLabel, Gauge>,
    observed_concurrency: Family<RevisionLabel, FloatGauge>,
    observed_rps: Family<RevisionLabel, FloatGauge>,
    node_ready: Family<NodeLabel, Gauge>,
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
        let desired_instances = Family::<RevisionLabel, Gauge>::default();
        let ready_instances = Family::<RevisionLabel, Gauge>::default();
        let panic = Family::<RevisionLabel, Gauge>::default();
        let observed_concurrency = Family::<RevisionLabel, FloatGauge>::default();
        let observed_rps = Family::<RevisionLabel, FloatGauge>::default();
        let node_ready = Family::<NodeLabel, Gauge>::default();
        registry.register(
            "autoscaler_desired_instances",
            "The instances the autoscaler wants for a revision, at its last evaluation",
            desired_instances.clone(),
        );
        registry.register(
            "autoscaler_ready_instances",
            "The ready instances of a revision the autoscaler counted at its last evaluation",
            ready_instances.clone(),
        );
        registry.register("autoscaler_panic", "1 while the autoscaler is in panic mode for a revision", panic.clone());
        registry.register(
            "autoscaler_observed_concurrency",
            "Requests in flight at a revision, as the gateways reported them",
            observed_concurrency.clone(),
        );
        registry.register(
            "autoscaler_observed_rps",
            "Requests per second to a revision, as the gateways reported them",
            observed_rps.clone(),
        );
        registry.register("node_ready", "1 while a Node is Ready, 0 otherwise", node_ready.clone());
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
            desired_instances,
            ready_instances,
            panic,
            observed_concurrency,
            observed_rps,
            node_ready,
        }
    }
}

impl Metrics {
    /// Records the autoscaler's evaluation of revision `namespace/revision`.
    pub fn record_scale(&self, namespace: &str, revision: &str, sample: ScaleSample) {
        let labels = RevisionLabel { namespace: namespace.into(), revision: revision.into() };
        self.desired_instances.get_or_create(&labels).set(sample.desired.into());
        self.ready_instances.get_or_create(&labels).set(sample.ready.into());
        self.panic.get_or_create(&labels).set(i64::from(sample.panicking));
        self.observed_concurrency.get_or_create(&labels).set(sample.concurrency);
        self.observed_rps.get_or_create(&labels).set(sample.rps);
    }

    /// Drops the autoscaler's series of a revision that is gone.
    pub fn forget_revision(&self, namespace: &str, revision: &str) {
        let labels = RevisionLabel { namespace: namespace.into(), revision: revision.into() };
        self.desired_instances.remove(&labels);
        self.ready_instances.remove(&labels);
        self.panic.remove(&labels);
        self.observed_concurrency.remove(&labels);
        self.observed_rps.remove(&labels);
    }

    /// Records whether Node `node` is Ready (`None`: it is gone).
    pub fn set_node_ready(&self, node: &str, ready: Option<bool>) {
        let label = NodeLabel { node: node.into() };
        match ready {
            Some(ready) => {
                self.node_ready.get_or_create(&label).set(i64::from(ready));
            }
            None => {
                self.node_ready.remove(&label);
            }
        }
    }

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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn autoscaler_and_node_series_are_written_and_forgotten() {
        let metrics = Metrics::default();
        let sample = ScaleSample { desired: 3, ready: 2, panicking: true, concurrency: 1.5, rps: 20.0 };
        metrics.record_scale("default", "hello-00001", sample);
        metrics.set_node_ready("n1", Some(true));
        metrics.set_node_ready("n2", Some(false));
        let text = metrics.encode();
        let rev = r#"{namespace="default",revision="hello-00001"}"#;
        for line in [
            format!("stratus_controllers_autoscaler_desired_instances{rev} 3"),
            format!("stratus_controllers_autoscaler_ready_instances{rev} 2"),
            format!("stratus_controllers_autoscaler_panic{rev} 1"),
            format!("stratus_controllers_autoscaler_observed_concurrency{rev} 1.5"),
            format!("stratus_controllers_autoscaler_observed_rps{rev} 20.0"),
            r#"stratus_controllers_node_ready{node="n1"} 1"#.to_string(),
            r#"stratus_controllers_node_ready{node="n2"} 0"#.to_string(),
        ] {
            assert!(text.contains(&line), "no {line} in:\n{text}");
        }
        metrics.forget_revision("default", "hello-00001");
        metrics.set_node_ready("n2", None);
        let text = metrics.encode();
        assert!(!text.contains("hello-00001") && !text.contains("n2"), "{text}");
    }
}

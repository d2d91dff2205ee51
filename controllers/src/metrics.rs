//! The controllers' Prometheus metrics: reconciles by controller and outcome, their durations,
//! and whether this replica leads.

use std::time::Instant;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

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
    pub leader: Gauge,
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
        registry.register("queue_depth", "Keys waiting in a controller's work queue", queue_depth.clone());
        registry.register("reconciles", "Reconciles by controller and result (ok, error)", reconciles.clone());
        registry.register("reconcile_duration_seconds", "How long reconciles take", durations.clone());
        registry.register("leader", "1 while this replica leads and runs the controllers", leader.clone());
        Metrics { registry, reconciles, durations, queue_depth, leader }
    }
}

impl Metrics {
    /// Records one reconcile of `controller` that started at `start`.
    pub fn observe(&self, controller: &str, start: Instant, ok: bool) {
        let result = if ok { "ok" } else { "error" };
        self.reconciles.get_or_create(&Outcome { controller: controller.into(), result: result.into() }).inc();
        self.durations
            .get_or_create(&ControllerLabel { controller: controller.into() })
            .observe(start.elapsed().as_secs_f64());
    }

    /// A callback for `Controller::observe_queue` that sets `controller`'s queue depth.
    pub fn queue_observer(&self, controller: &str) -> impl Fn(usize) + Send + Sync + 'static {
        let gauge = self.queue_depth.get_or_create(&ControllerLabel { controller: controller.into() }).clone();
        move |len| {
            gauge.set(i64::try_from(len).unwrap_or(i64::MAX));
        }
    }

    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}

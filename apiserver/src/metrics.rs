//! The API server's Prometheus metrics.

use std::sync::Arc;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    pub protocol: String,
    pub verb: String,
    pub code: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct FieldLabels {
    pub field: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct VerbLabels {
    pub protocol: String,
    pub verb: String,
}

/// Request counts and latencies by protocol and verb, open watches, and the usage reports
/// refused as impossible (by the field at fault: a reporter whose reports are refused is losing
/// a tenant's usage, and its operator must see why).
pub struct Metrics {
    registry: Registry,
    /// Billing's metrics, named `stratus_…` as the gateway's and controllers' are.
    billing: Registry,
    requests: Family<RequestLabels, Counter>,
    latency: Family<VerbLabels, Histogram>,
    watches: Gauge,
    reports_refused: Family<FieldLabels, Counter>,
    /// Writes refused because their leadership term was over ([`stratus_api::fence`]).
    pub fenced_writes: Counter,
}

impl Default for Metrics {
    fn default() -> Metrics {
        let mut registry = Registry::with_prefix("stratus_apiserver");
        let requests = Family::<RequestLabels, Counter>::default();
        let latency = Family::<VerbLabels, Histogram>::new_with_constructor(|| {
            Histogram::new(exponential_buckets(0.0005, 2.0, 16))
        });
        let watches = Gauge::default();
        registry.register("requests", "API requests by protocol, verb and HTTP status code", requests.clone());
        registry.register("request_duration_seconds", "API request latency", latency.clone());
        registry.register("watches", "Watch streams open now", watches.clone());
        let fenced_writes = Counter::default();
        registry.register(
            "fenced_writes",
            "Writes refused because the leader that sent them no longer held its Lease",
            fenced_writes.clone(),
        );
        let mut billing = Registry::with_prefix("stratus");
        let reports_refused = Family::<FieldLabels, Counter>::default();
        billing.register(
            "usage_reports_refused",
            "UsageReports refused as invalid, by the field at fault",
            reports_refused.clone(),
        );
        Metrics { registry, billing, requests, latency, watches, reports_refused, fenced_writes }
    }
}

impl Metrics {
    pub fn observe(&self, protocol: &str, verb: &str, code: u16, seconds: f64) {
        self.requests.get_or_create(&RequestLabels { protocol: protocol.into(), verb: verb.into(), code }).inc();
        self.latency.get_or_create(&VerbLabels { protocol: protocol.into(), verb: verb.into() }).observe(seconds);
    }

    /// Counts one refused UsageReport under each field at fault (a period's index left out, so
    /// that the labels stay few).
    pub fn usage_report_refused<'a>(&self, fields: impl IntoIterator<Item = &'a str>) {
        let mut seen: Vec<&str> = Vec::new();
        for field in fields {
            let field = field.split_once('[').map_or(field, |(head, _)| head);
            if !seen.contains(&field) {
                seen.push(field);
                self.reports_refused.get_or_create(&FieldLabels { field: field.to_string() }).inc();
            }
        }
    }

    /// Counts a watch as open until the returned guard drops.
    pub fn watch_started(self: &Arc<Self>) -> WatchGuard {
        self.watches.inc();
        WatchGuard(self.clone())
    }

    /// The metrics in the Prometheus text format.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode_registry(&mut out, &self.registry);
        let _ = prometheus_client::encoding::text::encode_registry(&mut out, &self.billing);
        let _ = prometheus_client::encoding::text::encode_eof(&mut out);
        out
    }
}

pub struct WatchGuard(Arc<Metrics>);

impl Drop for WatchGuard {
    fn drop(&mut self) {
        self.0.watches.dec();
    }
}

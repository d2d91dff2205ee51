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
pub struct VerbLabels {
    pub protocol: String,
    pub verb: String,
}

/// Request counts and latencies by protocol and verb, and open watches.
pub struct Metrics {
    registry: Registry,
    requests: Family<RequestLabels, Counter>,
    latency: Family<VerbLabels, Histogram>,
    watches: Gauge,
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
        Metrics { registry, requests, latency, watches }
    }
}

impl Metrics {
    pub fn observe(&self, protocol: &str, verb: &str, code: u16, seconds: f64) {
        self.requests.get_or_create(&RequestLabels { protocol: protocol.into(), verb: verb.into(), code }).inc();
        self.latency.get_or_create(&VerbLabels { protocol: protocol.into(), verb: verb.into() }).observe(seconds);
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
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}

pub struct WatchGuard(Arc<Metrics>);

impl Drop for WatchGuard {
    fn drop(&mut self) {
        self.0.watches.dec();
    }
}

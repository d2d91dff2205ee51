//! The gateway's Prometheus metrics, per revision: requests by status class, latency, requests in
//! flight, queue depth and ejections.

use std::sync::Arc;
use std::time::Duration;

use http::StatusCode;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use stratus_client::runtime::ObjectRef;

/// The content type of [`Metrics::encode`]'s output.
pub(crate) const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

const CLASSES: [&str; 5] = ["1xx", "2xx", "3xx", "4xx", "5xx"];

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RevisionLabels {
    namespace: String,
    revision: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    namespace: String,
    revision: String,
    /// `2xx`, `4xx`, …
    class: &'static str,
}

type HistogramFamily = Family<RevisionLabels, Histogram, fn() -> Histogram>;

/// One revision's series.
#[derive(Clone, Debug)]
pub(crate) struct PoolMetrics {
    /// By status class, in the order of `CLASSES`.
    requests: [Counter; 5],
    duration: Histogram,
    pub in_flight: Gauge,
    pub queued: Gauge,
    pub ejections: Counter,
    /// Times requests waited for the revision's first instance (it had none) and got one.
    pub cold_starts: Counter,
}

/// The registry and its metric families. Cheap to clone; clones share everything.
#[derive(Clone)]
pub(crate) struct Metrics {
    registry: Arc<Registry>,
    requests: Family<RequestLabels, Counter>,
    duration: HistogramFamily,
    in_flight: Family<RevisionLabels, Gauge>,
    queued: Family<RevisionLabels, Gauge>,
    ejections: Family<RevisionLabels, Counter>,
    cold_starts: Family<RevisionLabels, Counter>,
    unrouted: Counter,
}

impl Default for Metrics {
    fn default() -> Metrics {
        Metrics::new(None)
    }
}

impl Metrics {
    /// The gateway's series, and the usage spool's when it meters.
    pub(crate) fn new(usage: Option<&stratus_client::usage::SpoolMetrics>) -> Metrics {
        let mut registry = Registry::with_prefix("stratus_gateway");
        if let Some(usage) = usage {
            usage.register(&mut registry);
        }
        let requests = Family::default();
        // 1 ms to about 33 s; longer requests land in +Inf.
        let duration: HistogramFamily =
            Family::new_with_constructor(|| Histogram::new(exponential_buckets(0.001, 2.0, 16)));
        let in_flight = Family::default();
        let queued = Family::default();
        let ejections = Family::default();
        let cold_starts = Family::default();
        let unrouted = Counter::default();
        registry.register("requests", "Requests routed to a revision, by status class of the answer", requests.clone());
        registry.register(
            "request_duration_seconds",
            "Time from a request's arrival to its response headers",
            duration.clone(),
        );
        registry.register("requests_in_flight", "Requests sent to an instance and not finished", in_flight.clone());
        registry.register("queue_depth", "Requests waiting for an instance", queued.clone());
        registry.register("endpoint_ejections", "Endpoints ejected for failing", ejections.clone());
        registry.register(
            "cold_starts",
            "Times requests waited for a revision without an instance until its first one was ready",
            cold_starts.clone(),
        );
        registry.register(
            "unrouted_requests",
            "Requests for an unknown host or a service without traffic",
            unrouted.clone(),
        );
        Metrics {
            registry: Arc::new(registry),
            requests,
            duration,
            in_flight,
            queued,
            ejections,
            cold_starts,
            unrouted,
        }
    }
}

impl Metrics {
    /// The handles of one revision's series, kept by its balancer so that counting a request
    /// neither hashes labels nor allocates.
    pub(crate) fn pool_metrics(&self, revision: &ObjectRef) -> PoolMetrics {
        let labels = labels(revision);
        let requests = CLASSES.map(|class| {
            let labels =
                RequestLabels { namespace: labels.namespace.clone(), revision: labels.revision.clone(), class };
            self.requests.get_or_create(&labels).clone()
        });
        PoolMetrics {
            requests,
            duration: self.duration.get_or_create(&labels).clone(),
            in_flight: self.in_flight.get_or_create(&labels).clone(),
            queued: self.queued.get_or_create(&labels).clone(),
            ejections: self.ejections.get_or_create(&labels).clone(),
            cold_starts: self.cold_starts.get_or_create(&labels).clone(),
        }
    }

    /// Counts a request that reached no revision.
    pub(crate) fn record_unrouted(&self) {
        self.unrouted.inc();
    }

    /// Drops the series of a revision no service routes to any more.
    pub(crate) fn forget_revision(&self, revision: &ObjectRef) {
        let labels = labels(revision);
        self.duration.remove(&labels);
        self.in_flight.remove(&labels);
        self.queued.remove(&labels);
        self.ejections.remove(&labels);
        self.cold_starts.remove(&labels);
        let RevisionLabels { namespace, revision } = labels;
        for class in CLASSES {
            self.requests.remove(&RequestLabels { namespace: namespace.clone(), revision: revision.clone(), class });
        }
    }

    /// Every metric in the OpenMetrics text format.
    pub(crate) fn encode(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}

impl PoolMetrics {
    /// Counts one answered request.
    pub(crate) fn record(&self, status: StatusCode, elapsed: Duration) {
        // Status codes are 100..=999; 6xx and up are no standard class and count as 5xx.
        let class = usize::from(status.as_u16() / 100).clamp(1, 5) - 1;
        self.requests[class].inc();
        self.duration.observe(elapsed.as_secs_f64());
    }
}

fn labels(revision: &ObjectRef) -> RevisionLabels {
    RevisionLabels { namespace: revision.namespace.clone(), revision: revision.name.clone() }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_are_counted_by_class_and_forgotten_with_their_revision() {
        let metrics = Metrics::default();
        let rev = ObjectRef::new("default", "hello-1");
        let pool = metrics.pool_metrics(&rev);
        pool.record(StatusCode::OK, Duration::from_millis(3));
        pool.record(StatusCode::SERVICE_UNAVAILABLE, Duration::from_millis(3));
        pool.queued.set(4);
        pool.cold_starts.inc();
        let text = metrics.encode();
        let line = r#"stratus_gateway_requests_total{namespace="default",revision="hello-1",class="2xx"} 1"#;
        assert!(text.contains(line), "{text}");
        assert!(text.contains(r#"class="5xx"} 1"#), "{text}");
        assert!(text.contains(r#"stratus_gateway_queue_depth{namespace="default",revision="hello-1"} 4"#), "{text}");
        assert!(text.contains("stratus_gateway_request_duration_seconds_bucket"), "{text}");
        let cold = r#"stratus_gateway_cold_starts_total{namespace="default",revision="hello-1"} 1"#;
        assert!(text.contains(cold), "{text}");
        metrics.forget_revision(&rev);
        assert!(!metrics.encode().contains("hello-1"));
    }
}

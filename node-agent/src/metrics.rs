//! The agent's Prometheus metrics: per-container CPU and memory, usage samples, and the usage
//! spool's counters when the agent meters.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ContainerLabels {
    pub namespace: String,
    pub instance: String,
    pub revision: String,
}

pub struct Metrics {
    registry: Registry,
    cpu: Family<ContainerLabels, Gauge>,
    memory: Family<ContainerLabels, Gauge>,
    samples: Counter,
}

impl Default for Metrics {
    fn default() -> Metrics {
        Metrics::new(None)
    }
}

impl Metrics {
    /// The agent's metrics, with the usage spool's counters when it meters.
    pub fn new(usage: Option<&stratus_client::usage::SpoolMetrics>) -> Metrics {
        let mut registry = Registry::with_prefix("stratus_agent");
        if let Some(usage) = usage {
            usage.register(&mut registry);
        }
        let cpu = Family::<ContainerLabels, Gauge>::default();
        let memory = Family::<ContainerLabels, Gauge>::default();
        let samples = Counter::default();
        registry.register("container_cpu_millicores", "CPU in use by an instance's container", cpu.clone());
        registry.register("container_memory_bytes", "Memory in use by an instance's container", memory.clone());
        registry.register("usage_samples", "Usage samples taken", samples.clone());
        Metrics { registry, cpu, memory, samples }
    }

    pub fn record(&self, labels: &ContainerLabels, cpu_millis: i64, memory_bytes: i64) {
        self.cpu.get_or_create(labels).set(cpu_millis);
        self.memory.get_or_create(labels).set(memory_bytes);
        self.samples.inc();
    }

    /// Drops the series of a container that is gone.
    pub fn forget(&self, labels: &ContainerLabels) {
        self.cpu.remove(labels);
        self.memory.remove(labels);
    }

    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}

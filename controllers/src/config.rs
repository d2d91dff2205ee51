//! The controllers' configuration, with defaults that work on one machine.

use std::time::Duration;

use stratus_api::capacity::Overcommit;

use crate::kpa::ScalerConfig;

#[derive(Debug, Clone)]
pub struct Config {
    /// The domain services are reached under: `http://{service}.{namespace}.{domain}`.
    pub domain: String,
    /// The gateway's port, in service URLs (omitted when 80).
    pub gateway_port: u16,
    /// How many revisions of a service are kept besides those receiving traffic.
    pub revision_retention: usize,
    /// A Node whose Lease was not renewed for this long is NotReady.
    pub node_grace: Duration,
    /// Where the leader-election Lease lives, and this replica's identity.
    pub system_namespace: String,
    pub identity: String,
    /// Registries that are reached over plain HTTP when resolving image digests (loopback
    /// registries always are).
    pub insecure_registries: Vec<String>,
    /// Hosts besides a registry's own whose token services (a challenge's `realm`) may be asked
    /// when resolving image digests; Docker Hub's `auth.docker.io` always may for Docker Hub.
    pub registry_auth_hosts: Vec<String>,
    /// How often the autoscaler evaluates every revision (Knative's tick-interval).
    pub autoscale_tick: Duration,
    /// The window demand is averaged over in normal operation; the annotation
    /// `autoscaling.knative.dev/window` overrides it per revision.
    pub stable_window: Duration,
    /// A revision without requests for this long is scaled to zero (unless `minInstances > 0`).
    pub scale_to_zero_grace: Duration,
    /// The panic window, in percent of the stable window.
    pub panic_window_percentage: f64,
    /// The autoscaler panics when the panic window needs this percentage of the ready instances.
    pub panic_threshold: f64,
    /// How requests left out of a manifest are derived from its limits (see
    /// [`stratus_api::capacity`]): CPU overcommitted 20×, memory not, by default.
    pub overcommit: Overcommit,
    /// How long a new revision may take to become ready before it is failed and its instances
    /// removed, unless its annotation `serving.knative.dev/progress-deadline` says otherwise.
    /// Default 600 s, as Knative.
    pub progress_deadline: Duration,
    /// Billing: how late usage reports may be expected (the time after a ledger bucket ends
    /// until its reports are normally in) and the grace after that during which a late report
    /// still lands in its own bucket. A bucket closes at `end + watermark + grace`; reports
    /// arriving later are folded into the open bucket as adjustments. Default 1 min and 5 min.
    pub billing_watermark: Duration,
    pub billing_grace: Duration,
    /// How often the billing controller folds new reports, closes buckets, rewrites invoices
    /// and follows budgets. Default 10 s.
    pub billing_interval: Duration,
}

impl Default for Config {
    fn default() -> Config {
        Config {
            domain: "localhost".into(),
            gateway_port: 8080,
            revision_retention: 5,
            node_grace: Duration::from_secs(15),
            system_namespace: stratus_api::wellknown::namespaces::SYSTEM.into(),
            identity: format!("stratus-controllers-{}", std::process::id()),
            insecure_registries: Vec::new(),
            registry_auth_hosts: Vec::new(),
            autoscale_tick: Duration::from_secs(2),
            stable_window: Duration::from_secs(60),
            scale_to_zero_grace: Duration::from_secs(30),
            panic_window_percentage: 10.0,
            panic_threshold: 200.0,
            overcommit: Overcommit::default(),
            progress_deadline: Duration::from_secs(600),
            billing_watermark: Duration::from_secs(60),
            billing_grace: Duration::from_secs(300),
            billing_interval: Duration::from_secs(10),
        }
    }
}

impl Config {
    /// The autoscaler's knobs, as every revision's scaler gets them. A sample covers at most
    /// two ticks back, so that a late tick does not leave a hole in the averages.
    pub fn scaler_config(&self) -> ScalerConfig {
        ScalerConfig {
            stable_window: self.stable_window,
            panic_window_percentage: self.panic_window_percentage,
            panic_threshold: self.panic_threshold,
            scale_to_zero_grace: self.scale_to_zero_grace,
            max_sample_span: self.autoscale_tick.saturating_mul(2).max(Duration::from_secs(1)),
            ..ScalerConfig::default()
        }
    }

    /// The URL of a service (or of one of its tags).
    pub fn url(&self, host_prefix: &str, namespace: &str) -> String {
        let port = if self.gateway_port == 80 { String::new() } else { format!(":{}", self.gateway_port) };
        format!("http://{host_prefix}.{namespace}.{}{port}", self.domain)
    }
}

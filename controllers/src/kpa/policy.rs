//! How revisions scale: the knobs every scaler shares ([`ScalerConfig`]) and each revision's
//! [`Policy`], read from its spec and annotations with Knative's defaults.

use std::collections::BTreeMap;
use std::time::Duration;

use stratus_api::defaults;
use stratus_api::quantity::Quantity;
use stratus_api::v1::RevisionSpec;

/// The annotation that overrides the stable window of one revision, e.g. `"10s"` or `"2m"`;
/// refused at admission unless [`parse_window`] reads it.
pub use stratus_api::knative::{MAX_WINDOW, MIN_WINDOW, WINDOW as WINDOW_ANNOTATION, parse_window};
/// The concurrency target when `containerConcurrency` is 0 (unlimited), as in Knative.
pub const DEFAULT_CONCURRENCY_TARGET: f64 = 100.0;
/// The requests-per-second target per instance, as in Knative.
pub const DEFAULT_RPS_TARGET: f64 = 200.0;

/// The knobs every scaler shares. The defaults are Knative's.
#[derive(Debug, Clone, PartialEq)]
pub struct ScalerConfig {
    /// The window demand is averaged over to decide in normal operation.
    pub stable_window: Duration,
    /// The panic window, in percent of the stable window.
    pub panic_window_percentage: f64,
    /// Panic starts when the panic window needs this percentage of the ready instances.
    pub panic_threshold: f64,
    /// An idle revision (no request, no poke) is scaled to zero after this long.
    pub scale_to_zero_grace: Duration,
    /// At most `max(ready, 1) × max_scale_up_rate` instances per evaluation.
    pub max_scale_up_rate: f64,
    /// At least `ready / max_scale_down_rate` instances per evaluation.
    pub max_scale_down_rate: f64,
    /// The longest a sample is taken to cover, back from its time.
    pub max_sample_span: Duration,
}

impl Default for ScalerConfig {
    fn default() -> ScalerConfig {
        ScalerConfig {
            stable_window: Duration::from_secs(60),
            panic_window_percentage: 10.0,
            panic_threshold: 200.0,
            scale_to_zero_grace: Duration::from_secs(30),
            max_scale_up_rate: 1000.0,
            max_scale_down_rate: 2.0,
            max_sample_span: Duration::from_secs(4),
        }
    }
}

/// What demand is measured in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Metric {
    /// Requests in flight.
    Concurrency,
    /// Requests per second.
    Rps,
    /// CPU in use, in millicores.
    Cpu,
}

impl Metric {
    /// The metric named in `scaling.metric`; empty or unknown names mean concurrency (the API
    /// server validates the name).
    pub fn parse(name: &str) -> Metric {
        match name {
            "rps" => Metric::Rps,
            "cpu" => Metric::Cpu,
            _ => Metric::Concurrency,
        }
    }

    pub(super) fn unit(self) -> &'static str {
        match self {
            Metric::Concurrency => "in flight",
            Metric::Rps => "requests/s",
            Metric::Cpu => "millicores",
        }
    }
}

/// How one revision scales: read from its spec and annotations by [`Policy::from_revision`].
#[derive(Debug, Clone, PartialEq)]
pub struct Policy {
    pub metric: Metric,
    /// The metric's target per instance (> 0).
    pub target: f64,
    /// The fraction of the target to aim for, in (0, 1].
    pub utilization: f64,
    /// `minInstances` (≥ 0).
    pub min: i32,
    /// `maxInstances`; `i32::MAX` when unbounded.
    pub max: i32,
    /// `initialScale` (≥ 0).
    pub initial_scale: i32,
    /// The stable window of this revision.
    pub stable_window: Duration,
}

/// A revision's window annotation that could not be used (the configured window is used).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "annotation {WINDOW_ANNOTATION}={value:?} is not a duration between {}s and {}s (such as 10s or 2m)",
    MIN_WINDOW.as_secs(),
    MAX_WINDOW.as_secs()
)]
pub struct BadWindow {
    pub value: String,
}

impl Policy {
    /// The policy of a revision with `spec` and `annotations`; the defaults fill what the spec
    /// leaves out. A window annotation that cannot be used is returned alongside the policy,
    /// which then has the configured window.
    pub fn from_revision(
        spec: &RevisionSpec,
        annotations: &BTreeMap<String, String>,
        config: &ScalerConfig,
    ) -> (Policy, Option<BadWindow>) {
        let scaling = spec.scaling.clone().unwrap_or_default();
        let metric = Metric::parse(&scaling.metric);
        let explicit = scaling.target.filter(|t| t.is_finite() && *t > 0.0);
        let target = match metric {
            Metric::Concurrency => {
                let cc = spec.container_concurrency.unwrap_or(defaults::CONTAINER_CONCURRENCY);
                let limit = if cc > 0 { f64::from(cc) } else { DEFAULT_CONCURRENCY_TARGET };
                explicit.map_or(limit, |t| t.min(limit))
            }
            Metric::Rps => explicit.unwrap_or(DEFAULT_RPS_TARGET),
            Metric::Cpu => explicit.unwrap_or_else(|| cpu_limit_millis(spec)),
        };
        let utilization = f64::from(
            scaling.target_utilization_percentage.unwrap_or(defaults::TARGET_UTILIZATION_PERCENTAGE).clamp(1, 100),
        ) / 100.0;
        let max = scaling.max_instances.unwrap_or(defaults::MAX_INSTANCES);
        let (stable_window, bad) = match annotations.get(WINDOW_ANNOTATION) {
            None => (config.stable_window, None),
            Some(value) => match parse_window(value) {
                Some(window) => (window, None),
                None => (config.stable_window, Some(BadWindow { value: value.clone() })),
            },
        };
        let policy = Policy {
            metric,
            target,
            utilization,
            min: scaling.min_instances.unwrap_or(defaults::MIN_INSTANCES).max(0),
            max: if max <= 0 { i32::MAX } else { max },
            initial_scale: scaling.initial_scale.unwrap_or(defaults::INITIAL_SCALE).max(0),
            stable_window,
        };
        (policy, bad)
    }
}

/// The CPU limit of one instance in millicores: the sum over its containers (a container
/// without a readable limit counts the default, one CPU).
pub fn cpu_limit_millis(spec: &RevisionSpec) -> f64 {
    let default = defaults::CPU_LIMIT.parse::<Quantity>().map_or(1000, |q| q.ceil_millis());
    let millis: i128 = spec
        .containers
        .iter()
        .map(|c| {
            let limit = c.resources.as_ref().and_then(|r| r.limits.get("cpu"));
            limit.and_then(|l| l.parse::<Quantity>().ok()).map_or(default, |q| q.ceil_millis()).max(0)
        })
        .sum();
    // Beyond f64's exact integers only for absurd limits; precision does not matter there.
    #[allow(clippy::cast_precision_loss)]
    let millis = millis as f64;
    if millis > 0.0 { millis } else { 1000.0 }
}

#[cfg(test)]
mod tests {
    use stratus_api::v1::{Container, ResourceRequirements, Scaling};

    use super::*;

    #[test]
    fn policies_read_the_spec_with_knative_defaults() {
        let config = ScalerConfig::default();
        let none = BTreeMap::new();
        let spec = |cc: i32, scaling: Scaling| RevisionSpec {
            container_concurrency: Some(cc),
            scaling: Some(scaling),
            containers: vec![Container {
                resources: Some(ResourceRequirements {
                    limits: [("cpu".to_string(), "500m".to_string())].into(),
                    ..Default::default()
                }),
                ..Default::default()
            }],
            ..Default::default()
        };
        let (p, bad) = Policy::from_revision(&spec(10, Scaling::default()), &none, &config);
        assert_eq!(
            (p.metric, p.target, p.utilization, p.min, p.max, p.initial_scale),
            (Metric::Concurrency, 10.0, 0.7, 0, 100, 1)
        );
        assert_eq!((p.stable_window, bad), (Duration::from_secs(60), None));
        assert_eq!(Policy::from_revision(&spec(0, Scaling::default()), &none, &config).0.target, 100.0);
        let explicit = Scaling { target: Some(5.0), ..Default::default() };
        assert_eq!(Policy::from_revision(&spec(10, explicit), &none, &config).0.target, 5.0);
        let above = Scaling { target: Some(50.0), ..Default::default() };
        assert_eq!(
            Policy::from_revision(&spec(10, above), &none, &config).0.target,
            10.0,
            "at most containerConcurrency"
        );
        let rps = Scaling { metric: "rps".into(), ..Default::default() };
        assert_eq!(Policy::from_revision(&spec(10, rps), &none, &config).0.target, 200.0);
        let cpu = Scaling { metric: "cpu".into(), target_utilization_percentage: Some(80), ..Default::default() };
        let (p, _) = Policy::from_revision(&spec(10, cpu), &none, &config);
        assert_eq!((p.metric, p.target, p.utilization), (Metric::Cpu, 500.0, 0.8));
        let unbounded = Scaling { max_instances: Some(0), min_instances: Some(-1), ..Default::default() };
        let (p, _) = Policy::from_revision(&spec(10, unbounded), &none, &config);
        assert_eq!((p.min, p.max), (0, i32::MAX));

        let window = |v: &str| [(WINDOW_ANNOTATION.to_string(), v.to_string())].into();
        let (p, bad) = Policy::from_revision(&spec(10, Scaling::default()), &window("10s"), &config);
        assert_eq!((p.stable_window, bad), (Duration::from_secs(10), None));
        let (p, bad) = Policy::from_revision(&spec(10, Scaling::default()), &window("soon"), &config);
        assert_eq!(p.stable_window, Duration::from_secs(60));
        assert_eq!(bad.map(|b| b.value), Some("soon".to_string()));
    }

    #[test]
    fn windows_parse_like_go_durations() {
        assert_eq!(parse_window("10s"), Some(Duration::from_secs(10)));
        assert_eq!(parse_window("1m30s"), Some(Duration::from_secs(90)));
        assert_eq!(parse_window("1500ms"), Some(Duration::from_millis(1500)));
        assert_eq!(parse_window("1h"), Some(Duration::from_secs(3600)));
        for bad in ["", "10", "500ms", "2h", "s", "1d", "-5s", "1.5s"] {
            assert_eq!(parse_window(bad), None, "{bad}");
        }
    }
}

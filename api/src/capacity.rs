//! The capacity model: what an instance asks of a node (its *requests*, which the scheduler
//! places by) and what it may use (its *limits*, which the container engine enforces), as
//! Kubernetes has them.
//!
//! A manifest may give both. Cloud Run and Knative manifests give only limits (and Stratus
//! defaults the limits to Cloud Run's 1 vCPU and 512Mi), so the request of a resource left
//! without one is derived from its limit by the cluster's [`Overcommit`] policy:
//!
//! - **CPU is overcommitted**, by default 20×: a 1 vCPU limit requests 50m. A serverless
//!   instance spends most of its life waiting for requests, and with CPU throttling (Cloud Run's
//!   default) it gets CPU only while it serves one; reserving the full limit would leave nodes
//!   idle and fill a two-core laptop with two services. Knative makes the same call: it gives
//!   the user container no CPU request at all (its queue-proxy sidecar requests 25m). CPU that
//!   is short is shared out, not lost: instances slow down, nothing is killed.
//! - **Memory is not overcommitted** by default (ratio 1): memory cannot be taken back from a
//!   process without killing it, so a node never promises more than it has.
//!
//! Requests given explicitly are honoured as written (validation keeps them at or below the
//! limit).

use crate::quantity::{Format, Quantity};
use crate::v1::ResourceRequirements;

pub const CPU: &str = "cpu";
pub const MEMORY: &str = "memory";

/// CPU and memory in the units the scheduler counts: millicores and bytes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Amounts {
    pub cpu_millis: i128,
    pub memory_bytes: i128,
}

impl Amounts {
    pub fn plus(self, other: Amounts) -> Amounts {
        Amounts {
            cpu_millis: self.cpu_millis.saturating_add(other.cpu_millis),
            memory_bytes: self.memory_bytes.saturating_add(other.memory_bytes),
        }
    }
}

/// How far requests derived from limits undercut them: a request is its limit divided by the
/// ratio. A ratio of 1 derives requests equal to the limits, as Kubernetes does.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Overcommit {
    cpu: f64,
    memory: f64,
}

impl Default for Overcommit {
    fn default() -> Overcommit {
        Overcommit { cpu: Overcommit::DEFAULT_CPU, memory: Overcommit::DEFAULT_MEMORY }
    }
}

impl Overcommit {
    /// See the module documentation for the reasoning.
    pub const DEFAULT_CPU: f64 = 20.0;
    pub const DEFAULT_MEMORY: f64 = 1.0;
    /// Beyond this a derived request rounds to nothing useful.
    pub const MAX_RATIO: f64 = 1000.0;

    /// A policy with these ratios; each must be a number from 1 to [`Overcommit::MAX_RATIO`].
    pub fn new(cpu: f64, memory: f64) -> Result<Overcommit, String> {
        for (name, ratio) in [("cpu", cpu), ("memory", memory)] {
            if !(1.0..=Overcommit::MAX_RATIO).contains(&ratio) {
                return Err(format!(
                    "the {name} overcommit ratio {ratio} is not a number from 1 (no overcommit) to {}",
                    Overcommit::MAX_RATIO
                ));
            }
        }
        Ok(Overcommit { cpu, memory })
    }

    pub fn cpu(&self) -> f64 {
        self.cpu
    }

    pub fn memory(&self) -> f64 {
        self.memory
    }

    /// The request derived from `limit` for `resource` ("cpu" or "memory"), as a quantity:
    /// the limit divided by the ratio, rounded up to a millicore or a byte.
    fn derive(&self, resource: &str, limit: &Quantity) -> Quantity {
        let ratio = if resource == CPU { self.cpu } else { self.memory };
        if ratio == 1.0 {
            return *limit;
        }
        if resource == CPU {
            Quantity::from_millis(divide_up(limit.ceil_millis(), ratio))
        } else {
            let bytes = divide_up(limit.ceil_units(), ratio);
            // Binary units when exact (512Mi / 2 = 256Mi), decimal otherwise.
            let format = if bytes % 1024 == 0 { Format::BinarySi } else { Format::DecimalSi };
            Quantity::from_units(bytes, format)
        }
    }

    /// Sets every request left unset (cpu, memory) from its limit. What is stored then says
    /// what the scheduler counted.
    pub fn fill_requests(&self, resources: &mut ResourceRequirements) {
        for resource in [CPU, MEMORY] {
            if resources.requests.contains_key(resource) {
                continue;
            }
            if let Some(limit) = resources.limits.get(resource).and_then(|l| l.parse::<Quantity>().ok())
                && !limit.is_negative()
            {
                resources.requests.insert(resource.to_string(), self.derive(resource, &limit).to_string());
            }
        }
    }

    /// The requests of a container with `resources`: per resource, the request where given,
    /// else the limit divided by the ratio, else nothing. Fails, naming the field, on a value
    /// that is not a non-negative quantity.
    pub fn requests(&self, resources: Option<&ResourceRequirements>) -> Result<Amounts, String> {
        let Some(r) = resources else { return Ok(Amounts::default()) };
        let amount = |resource: &str| -> Result<i128, String> {
            let q = match (r.requests.get(resource), r.limits.get(resource)) {
                (Some(v), _) => quantity(v, "requests", resource)?,
                (None, Some(v)) => self.derive(resource, &quantity(v, "limits", resource)?),
                (None, None) => return Ok(0),
            };
            Ok(in_units(resource, &q))
        };
        Ok(Amounts { cpu_millis: amount(CPU)?, memory_bytes: amount(MEMORY)? })
    }
}

/// The limits of a container with `resources` (nothing for a resource without one). Fails,
/// naming the field, on a value that is not a non-negative quantity.
pub fn limits(resources: Option<&ResourceRequirements>) -> Result<Amounts, String> {
    let Some(r) = resources else { return Ok(Amounts::default()) };
    let amount = |resource: &str| -> Result<i128, String> {
        r.limits.get(resource).map_or(Ok(0), |v| Ok(in_units(resource, &quantity(v, "limits", resource)?)))
    };
    Ok(Amounts { cpu_millis: amount(CPU)?, memory_bytes: amount(MEMORY)? })
}

fn quantity(value: &str, field: &str, resource: &str) -> Result<Quantity, String> {
    let q: Quantity = value.parse().map_err(|e| format!("resources.{field}.{resource}: {e}"))?;
    if q.is_negative() {
        return Err(format!("resources.{field}.{resource}: {value:?} is negative"));
    }
    Ok(q)
}

/// Millicores for cpu, bytes for memory, rounded up; never more than `i64::MAX`, so that sums
/// of amounts cannot overflow.
fn in_units(resource: &str, q: &Quantity) -> i128 {
    let v = if resource == CPU { q.ceil_millis() } else { q.ceil_units() };
    v.clamp(0, i128::from(i64::MAX))
}

/// `amount / ratio`, rounded up; `ratio` is at least 1, so the result is at most `amount`.
fn divide_up(amount: i128, ratio: f64) -> i128 {
    let amount = amount.clamp(0, i128::from(i64::MAX));
    // An f64 holds amounts up to 2^53 exactly; above that the rounding is far below a byte's
    // worth of a percent.
    #[allow(clippy::cast_precision_loss, clippy::cast_possible_truncation)]
    let derived = ((amount as f64) / ratio).ceil() as i128;
    derived.clamp(0, amount)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn res(limits: &[(&str, &str)], requests: &[(&str, &str)]) -> ResourceRequirements {
        let map = |kv: &[(&str, &str)]| kv.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        ResourceRequirements { limits: map(limits), requests: map(requests) }
    }

    #[test]
    fn requests_given_are_honoured() {
        let r = res(&[("cpu", "2"), ("memory", "1Gi")], &[("cpu", "250m"), ("memory", "256Mi")]);
        let got = Overcommit::default().requests(Some(&r)).unwrap();
        assert_eq!(got, Amounts { cpu_millis: 250, memory_bytes: 256 << 20 });
    }

    #[test]
    fn requests_left_out_are_derived_from_limits_by_the_policy() {
        let r = res(&[("cpu", "1"), ("memory", "512Mi")], &[]);
        // The default: cpu / 20, memory as the limit.
        let got = Overcommit::default().requests(Some(&r)).unwrap();
        assert_eq!(got, Amounts { cpu_millis: 50, memory_bytes: 512 << 20 });
        // Kubernetes' rule (no overcommit): requests are the limits.
        let none = Overcommit::new(1.0, 1.0).unwrap();
        assert_eq!(none.requests(Some(&r)).unwrap(), Amounts { cpu_millis: 1000, memory_bytes: 512 << 20 });
        // Memory may be overcommitted when the operator says so.
        let both = Overcommit::new(4.0, 2.0).unwrap();
        assert_eq!(both.requests(Some(&r)).unwrap(), Amounts { cpu_millis: 250, memory_bytes: 256 << 20 });
        // Rounded up: a request never rounds to nothing.
        let tiny = res(&[("cpu", "1m"), ("memory", "3")], &[]);
        assert_eq!(both.requests(Some(&tiny)).unwrap(), Amounts { cpu_millis: 1, memory_bytes: 2 });
        // One given, one derived.
        let mixed = res(&[("cpu", "1"), ("memory", "512Mi")], &[("memory", "128Mi")]);
        assert_eq!(
            Overcommit::default().requests(Some(&mixed)).unwrap(),
            Amounts { cpu_millis: 50, memory_bytes: 128 << 20 }
        );
        assert_eq!(Overcommit::default().requests(None).unwrap(), Amounts::default());
    }

    #[test]
    fn nothing_overcommits_memory_by_default() {
        let policy = Overcommit::default();
        assert_eq!(policy.memory(), 1.0);
        for limit in ["512Mi", "1Gi", "3", "1500M", "7Ki"] {
            let r = res(&[("memory", limit)], &[]);
            let want: Quantity = limit.parse().unwrap();
            assert_eq!(policy.requests(Some(&r)).unwrap().memory_bytes, want.ceil_units(), "{limit}");
        }
    }

    #[test]
    fn filled_requests_are_what_the_scheduler_counts() {
        let policy = Overcommit::new(8.0, 2.0).unwrap();
        let mut r = res(&[("cpu", "1"), ("memory", "1Gi")], &[("cpu", "300m")]);
        let counted = policy.requests(Some(&r)).unwrap();
        policy.fill_requests(&mut r);
        assert_eq!(r.requests.get("cpu").map(String::as_str), Some("300m"), "given requests stay");
        assert_eq!(r.requests.get("memory").map(String::as_str), Some("512Mi"));
        // Once filled, the policy no longer matters.
        assert_eq!(Overcommit::new(1.0, 1.0).unwrap().requests(Some(&r)).unwrap(), counted);
    }

    #[test]
    fn bad_ratios_and_bad_quantities_are_refused_with_their_names() {
        assert!(Overcommit::new(0.5, 1.0).unwrap_err().contains("cpu overcommit ratio 0.5"));
        assert!(Overcommit::new(2.0, f64::NAN).unwrap_err().contains("memory overcommit ratio"));
        assert!(Overcommit::new(1e6, 1.0).is_err());
        let r = res(&[("cpu", "lots")], &[]);
        assert!(Overcommit::default().requests(Some(&r)).unwrap_err().starts_with("resources.limits.cpu:"));
        let r = res(&[("memory", "-1Gi")], &[]);
        assert!(limits(Some(&r)).unwrap_err().contains("negative"));
    }

    #[test]
    fn limits_read_as_amounts() {
        let r = res(&[("cpu", "1500m"), ("memory", "1Gi")], &[("cpu", "1")]);
        assert_eq!(limits(Some(&r)).unwrap(), Amounts { cpu_millis: 1500, memory_bytes: 1 << 30 });
        assert_eq!(limits(None).unwrap(), Amounts::default());
    }
}

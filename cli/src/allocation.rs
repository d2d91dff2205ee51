//! Where a node's capacity went: the requests and limits of the Instances bound to it, as the
//! scheduler counts them (issue 9), for `stratus get nodes` and `stratus describe node`.
//!
//! The scheduler places Instances by their *requests*; the container engine enforces their
//! *limits*. What counts of an Instance is its serving container's resources, and an Instance
//! holds room on its node from the moment it is bound (`spec.nodeName`) until it finishes
//! (phase `Succeeded` or `Failed`): the rules of `stratus_controllers::scheduler`, restated
//! here so that what the CLI prints adds up to what the scheduler decided.

use std::collections::BTreeMap;

use stratus_api::capacity::{self, Amounts, Overcommit};
use stratus_api::quantity::{Format, Quantity};
use stratus_api::serving_container;
use stratus_api::v1::{Instance, Node};

/// The status reason of an Instance the scheduler could place on no node; its status message
/// says why (`stratus_controllers::scheduler::UNSCHEDULABLE`).
pub const UNSCHEDULABLE: &str = "Unschedulable";

/// What one Instance, or the Instances on one Node together, hold.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Held {
    pub requests: Amounts,
    pub limits: Amounts,
    pub instances: i128,
}

impl Held {
    fn plus(self, other: Held) -> Held {
        Held {
            requests: self.requests.plus(other.requests),
            limits: self.limits.plus(other.limits),
            instances: self.instances.saturating_add(other.instances),
        }
    }
}

/// What a Node offers the scheduler, per resource; `None` where the node reports nothing (or
/// nothing that reads as a quantity), so that no percentage is made up for it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Allocatable {
    pub cpu_millis: Option<i128>,
    pub memory_bytes: Option<i128>,
    pub instances: Option<i128>,
}

impl Allocatable {
    pub fn of(node: &Node) -> Allocatable {
        let allocatable = node.status.as_ref().map(|s| &s.allocatable);
        let get = |key: &str| {
            allocatable.and_then(|a| a.get(key)).and_then(|v| v.parse::<Quantity>().ok()).filter(|q| !q.is_negative())
        };
        Allocatable {
            cpu_millis: get(capacity::CPU).map(|q| q.ceil_millis()),
            memory_bytes: get(capacity::MEMORY).map(|q| q.ceil_units()),
            instances: get("instances").map(|q| q.ceil_units()),
        }
    }
}

/// The node whose room `inst` holds: the one it is bound to, unless it has finished.
pub fn node_held(inst: &Instance) -> Option<&str> {
    let node = inst.spec.as_ref().map(|s| s.node_name.as_str()).filter(|n| !n.is_empty())?;
    let finished = inst.status.as_ref().is_some_and(|s| matches!(s.phase.as_str(), "Succeeded" | "Failed"));
    (!finished).then_some(node)
}

/// The requests and limits of one Instance: those of its serving container. Fails, naming the
/// field, on a value that is not a non-negative quantity.
pub fn held(inst: &Instance) -> Result<Held, String> {
    let containers = inst.spec.as_ref().map(|s| s.containers.as_slice()).unwrap_or_default();
    let resources = serving_container(containers).and_then(|c| c.resources.as_ref());
    // The revisions controller writes requests into every Instance it makes, so the policy
    // matters only for an Instance made by hand without them; for those, take Kubernetes' rule
    // (a request left out is the limit) rather than guess the cluster's overcommit ratio.
    let requests = Overcommit::new(1.0, 1.0)?.requests(resources)?;
    Ok(Held { requests, limits: capacity::limits(resources)?, instances: 1 })
}

/// What the Instances bound to each Node hold, by node name. An Instance whose resources do
/// not read still takes its slot, as the scheduler counts it.
pub fn per_node<'a>(instances: impl IntoIterator<Item = &'a Instance>) -> BTreeMap<String, Held> {
    let mut totals: BTreeMap<String, Held> = BTreeMap::new();
    for inst in instances {
        if let Some(node) = node_held(inst) {
            let one = held(inst).unwrap_or(Held { instances: 1, ..Held::default() });
            let total = totals.entry(node.to_string()).or_default();
            *total = total.plus(one);
        }
    }
    totals
}

/// Millicores as Kubernetes writes cpu: `150m`, `2`.
pub fn cpu(millis: i128) -> String {
    Quantity::from_millis(millis).to_string()
}

/// Bytes as Kubernetes writes memory: binary units when exact (`1536Mi`), decimal otherwise.
pub fn memory(bytes: i128) -> String {
    let format = if bytes % 1024 == 0 { Format::BinarySi } else { Format::DecimalSi };
    Quantity::from_units(bytes, format).to_string()
}

/// `used` as a whole percentage of `of`, rounded down as kubectl rounds it; nothing when there
/// is nothing to divide by.
pub fn percent(used: i128, of: Option<i128>) -> Option<i128> {
    of.filter(|of| *of > 0).map(|of| used.saturating_mul(100) / of)
}

/// kubectl's `describe node` cell: `150m (7%)`, or the amount alone without an allocatable.
pub fn with_percent(text: String, used: i128, of: Option<i128>) -> String {
    match percent(used, of) {
        Some(p) => format!("{text} ({p}%)"),
        None => text,
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use stratus_api::v1::{Container, ContainerPort, InstanceSpec, InstanceStatus, NodeStatus, ResourceRequirements};

    use super::*;

    fn resources(limits: &[(&str, &str)], requests: &[(&str, &str)]) -> Option<ResourceRequirements> {
        let map = |kv: &[(&str, &str)]| kv.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        Some(ResourceRequirements { limits: map(limits), requests: map(requests) })
    }

    fn instance(node: &str, phase: &str, containers: Vec<Container>) -> Instance {
        Instance {
            spec: Some(InstanceSpec { node_name: node.into(), containers, ..Default::default() }),
            status: Some(InstanceStatus { phase: phase.into(), ..Default::default() }),
            ..Default::default()
        }
    }

    fn container(limits: &[(&str, &str)], requests: &[(&str, &str)]) -> Container {
        Container { resources: resources(limits, requests), ..Default::default() }
    }

    #[test]
    fn the_serving_container_counts_and_requests_default_to_limits() {
        let sidecar = container(&[("cpu", "4"), ("memory", "4Gi")], &[]);
        let serving = Container {
            ports: vec![ContainerPort { container_port: 8080, ..Default::default() }],
            ..container(&[("cpu", "1"), ("memory", "512Mi")], &[("cpu", "50m")])
        };
        let inst = instance("n1", "Running", vec![sidecar, serving]);
        let got = held(&inst).unwrap();
        // cpu as requested; memory without a request counts its limit, not the 20× policy.
        assert_eq!(got.requests, Amounts { cpu_millis: 50, memory_bytes: 512 << 20 });
        assert_eq!(got.limits, Amounts { cpu_millis: 1000, memory_bytes: 512 << 20 });
        assert_eq!(got.instances, 1);
        let bad = instance("n1", "", vec![container(&[("cpu", "lots")], &[])]);
        assert!(held(&bad).unwrap_err().contains("resources.limits.cpu"));
    }

    #[test]
    fn bound_unfinished_instances_are_summed_per_node() {
        let c = || container(&[("cpu", "1"), ("memory", "1Gi")], &[("cpu", "100m"), ("memory", "256Mi")]);
        let instances = [
            instance("n1", "Running", vec![c()]),
            instance("n1", "Pending", vec![c()]),
            instance("n1", "Succeeded", vec![c()]),
            instance("n1", "Failed", vec![c()]),
            instance("n2", "Running", vec![container(&[("cpu", "bad")], &[])]),
            instance("", "Pending", vec![c()]),
        ];
        let totals = per_node(&instances);
        assert_eq!(totals.len(), 2, "{totals:?}");
        assert_eq!(
            totals["n1"],
            Held {
                requests: Amounts { cpu_millis: 200, memory_bytes: 512 << 20 },
                limits: Amounts { cpu_millis: 2000, memory_bytes: 2 << 30 },
                instances: 2,
            }
        );
        assert_eq!(totals["n2"], Held { instances: 1, ..Held::default() }, "an unreadable instance takes its slot");
    }

    #[test]
    fn amounts_print_as_quantities_with_kubectls_percentages() {
        assert_eq!(cpu(150), "150m");
        assert_eq!(cpu(2000), "2");
        assert_eq!(cpu(0), "0");
        assert_eq!(memory(1536 << 20), "1536Mi");
        assert_eq!(memory(1_500_000_000), "1500M");
        assert_eq!(percent(150, Some(2000)), Some(7), "rounded down");
        assert_eq!(percent(1, Some(0)), None);
        assert_eq!(with_percent("3".into(), 3, Some(110)), "3 (2%)");
        assert_eq!(with_percent("3".into(), 3, None), "3");
    }

    #[test]
    fn allocatable_reads_what_the_node_reports() {
        let node = Node {
            status: Some(NodeStatus {
                allocatable: [
                    ("cpu".to_string(), "1500m".to_string()),
                    ("memory".to_string(), "2Gi".to_string()),
                    ("instances".to_string(), "nonsense".to_string()),
                ]
                .into(),
                ..Default::default()
            }),
            ..Default::default()
        };
        assert_eq!(
            Allocatable::of(&node),
            Allocatable { cpu_millis: Some(1500), memory_bytes: Some(2 << 30), instances: None }
        );
        assert_eq!(Allocatable::of(&Node::default()), Allocatable::default());
    }
}

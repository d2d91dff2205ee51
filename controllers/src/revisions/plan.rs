//! The instance plan, without I/O: which of a revision's Instances go and how many are made,
//! and what a new Instance looks like.

use std::sync::Arc;

use stratus_api::capacity::Overcommit;
use stratus_api::v1::{Instance, InstanceSpec, ObjectMeta, OwnerReference, Revision};
use stratus_api::wellknown::labels::{REVISION as REVISION_LABEL, SERVICE as SERVICE_LABEL};
use stratus_api::{API_VERSION, Resource, defaults};

use crate::digest;
use crate::instances::{is_bound, is_finished, is_ready};

/// The random characters that end an Instance's name.
const NAME_SUFFIX: usize = 5;

/// Why an instance is deleted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Why {
    /// It stopped for good (`Failed` or `Succeeded`): it is replaced.
    Stopped,
    /// More instances run than are wanted.
    Surplus,
    /// The revision failed: it holds nothing.
    RevisionFailed,
}

/// What to do with a revision's instances.
#[derive(Debug, Default)]
pub(super) struct InstancePlan {
    pub(super) delete: Vec<(Arc<Instance>, Why)>,
    /// The running (or starting) instances that stay.
    pub(super) keep: Vec<Arc<Instance>>,
    pub(super) create: usize,
}

impl InstancePlan {
    pub(super) fn has_work(&self, may_create: bool) -> bool {
        !self.delete.is_empty() || (may_create && self.create > 0)
    }
}

/// Decides which instances go and how many are made so that `desired` run.
pub(super) fn plan_instances(instances: &[Arc<Instance>], desired: i32) -> InstancePlan {
    let desired = usize::try_from(desired).unwrap_or(0);
    let mut plan = InstancePlan::default();
    for inst in instances {
        if inst.meta().deletion_timestamp.is_some() {
            continue;
        }
        if is_finished(inst) {
            plan.delete.push((inst.clone(), Why::Stopped));
        } else {
            plan.keep.push(inst.clone());
        }
    }
    if plan.keep.len() > desired {
        // Least useful first: not on a node, then not ready, then the youngest.
        plan.keep.sort_by_key(|i| {
            let created = i.meta().creation_timestamp.map_or(0, |t| t.seconds);
            (is_bound(i), is_ready(i), std::cmp::Reverse(created), std::cmp::Reverse(i.meta().name.clone()))
        });
        let surplus = plan.keep.len() - desired;
        plan.delete.extend(plan.keep.drain(..surplus).map(|i| (i, Why::Surplus)));
    }
    plan.create = desired.saturating_sub(plan.keep.len());
    plan
}

/// An instance of `rev` named `{revision}-{suffix}`: everything an agent needs to run it, with
/// the serving container's image pinned when the digest is known and the requests the
/// template leaves out derived from its limits by `policy`.
pub(super) fn instance_for(rev: &Revision, suffix: &str, policy: &Overcommit) -> Instance {
    let meta = rev.meta();
    let spec = rev.spec.clone().unwrap_or_default();
    let digest = rev.status.as_ref().map(|s| s.image_digest.clone()).unwrap_or_default();
    let mut containers = spec.containers;
    for c in &mut containers {
        policy.fill_requests(c.resources.get_or_insert_with(Default::default));
    }
    if !digest.is_empty()
        && let Some(i) = digest::serving_container(&containers)
    {
        containers[i].image = digest;
    }
    let service = meta
        .labels
        .get(SERVICE_LABEL)
        .cloned()
        .or_else(|| meta.owner_references.iter().find(|o| o.controller && o.kind == "Service").map(|o| o.name.clone()))
        .unwrap_or_default();
    let mut labels = std::collections::BTreeMap::new();
    labels.insert(SERVICE_LABEL.to_string(), service.clone());
    labels.insert(REVISION_LABEL.to_string(), meta.name.clone());
    Instance {
        metadata: Some(ObjectMeta {
            name: format!("{}-{suffix}", meta.name),
            namespace: meta.namespace.clone(),
            labels,
            owner_references: vec![OwnerReference {
                api_version: API_VERSION.into(),
                kind: Revision::INFO.kind.into(),
                name: meta.name.clone(),
                uid: meta.uid.clone(),
                controller: true,
                block_owner_deletion: true,
            }],
            ..Default::default()
        }),
        spec: Some(InstanceSpec {
            service_name: service,
            revision_name: meta.name.clone(),
            node_name: String::new(),
            containers,
            container_concurrency: spec.container_concurrency.unwrap_or(defaults::CONTAINER_CONCURRENCY),
            timeout_seconds: spec.timeout_seconds.unwrap_or(defaults::TIMEOUT_SECONDS),
            termination_grace_period_seconds: spec
                .termination_grace_period_seconds
                .unwrap_or(defaults::TERMINATION_GRACE_PERIOD_SECONDS),
            // The agent meters the instance by its revision's billing mode.
            cpu_throttling: spec.cpu_throttling,
            // The agent gives it more CPU until it is first ready.
            startup_cpu_boost: spec.startup_cpu_boost,
        }),
        ..Default::default()
    }
}

pub(super) fn random_suffix() -> String {
    const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";
    (0..NAME_SUFFIX).map(|_| char::from(ALPHABET[rand::random_range(0..ALPHABET.len())])).collect()
}

#[cfg(test)]
mod tests {
    use stratus_api::v1::{InstanceStatus, RevisionStatus};

    use super::*;
    use crate::revisions::fixtures::{instance, revision, running};

    #[test]
    fn stopped_instances_are_replaced_and_the_least_useful_surplus_goes() {
        let failed = instance("a", 1, "n1", InstanceStatus { phase: "Failed".into(), ..Default::default() });
        let old_ready = instance("b", 1, "n1", running(true));
        let young_ready = instance("c", 5, "n1", running(true));
        let not_ready = instance("d", 2, "n1", running(false));
        let unscheduled = instance("e", 0, "", InstanceStatus::default());
        let all = vec![failed, old_ready, young_ready, not_ready, unscheduled];

        let plan = plan_instances(&all, 4);
        assert_eq!(
            plan.delete.iter().map(|(i, w)| (i.meta().name.as_str(), *w)).collect::<Vec<_>>(),
            [("a", Why::Stopped)]
        );
        assert_eq!(plan.create, 0);

        let plan = plan_instances(&all, 1);
        let deleted: Vec<(&str, Why)> = plan.delete.iter().map(|(i, w)| (i.meta().name.as_str(), *w)).collect();
        assert_eq!(deleted, [("a", Why::Stopped), ("e", Why::Surplus), ("d", Why::Surplus), ("c", Why::Surplus)]);
        assert_eq!(plan.keep.iter().map(|i| i.meta().name.as_str()).collect::<Vec<_>>(), ["b"]);

        let plan = plan_instances(&all, 6);
        assert_eq!(plan.create, 2, "the failed one is replaced and one more made");
    }

    #[test]
    fn instances_carry_the_pinned_image_and_the_revision_settings() {
        let mut rev = revision(0);
        let pinned = format!("127.0.0.1:5000/hello@sha256:{}", "ab".repeat(32));
        rev.status = Some(RevisionStatus { image_digest: pinned.clone(), ..Default::default() });
        let inst = instance_for(&rev, "abcde", &Overcommit::default());
        assert_eq!(inst.meta().name, "hello-00001-abcde");
        assert_eq!(inst.meta().labels.get(REVISION_LABEL).map(String::as_str), Some("hello-00001"));
        assert_eq!(inst.meta().labels.get(SERVICE_LABEL).map(String::as_str), Some("hello"));
        let owner = &inst.meta().owner_references[0];
        assert!(owner.controller && owner.block_owner_deletion && owner.uid == "rev-uid");
        let spec = inst.spec.unwrap_or_default();
        assert_eq!(spec.containers[0].image, pinned);
        assert_eq!((spec.service_name.as_str(), spec.revision_name.as_str()), ("hello", "hello-00001"));
        assert_eq!(spec.container_concurrency, 10);
        assert_eq!(spec.timeout_seconds, defaults::TIMEOUT_SECONDS);
        assert_eq!(spec.termination_grace_period_seconds, defaults::TERMINATION_GRACE_PERIOD_SECONDS);
        assert!(spec.node_name.is_empty());
        let suffix = random_suffix();
        assert!(suffix.len() == 5 && suffix.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit()));
    }

    #[test]
    fn instances_carry_the_revision_billing_mode() {
        for mode in [Some(false), Some(true), None] {
            let mut rev = revision(0);
            if let Some(spec) = rev.spec.as_mut() {
                spec.cpu_throttling = mode;
            }
            let inst = instance_for(&rev, "abcde", &Overcommit::default());
            assert_eq!(inst.spec.unwrap_or_default().cpu_throttling, mode, "revision's cpu_throttling {mode:?}");
        }
    }

    #[test]
    fn instances_carry_the_revision_startup_cpu_boost() {
        for boost in [Some(false), Some(true), None] {
            let mut rev = revision(0);
            if let Some(spec) = rev.spec.as_mut() {
                spec.startup_cpu_boost = boost;
            }
            let inst = instance_for(&rev, "abcde", &Overcommit::default());
            assert_eq!(inst.spec.unwrap_or_default().startup_cpu_boost, boost, "revision's boost {boost:?}");
        }
    }

    #[test]
    fn instances_carry_requests_derived_from_their_limits() {
        let mut rev = revision(0);
        if let Some(spec) = rev.spec.as_mut() {
            let limits = [("cpu".to_string(), "1".to_string()), ("memory".to_string(), "512Mi".to_string())];
            spec.containers[0].resources = Some(stratus_api::v1::ResourceRequirements {
                limits: limits.into(),
                requests: [("memory".to_string(), "256Mi".to_string())].into(),
            });
        }
        let inst = instance_for(&rev, "abcde", &Overcommit::default());
        let resources = inst.spec.unwrap_or_default().containers[0].resources.clone().unwrap_or_default();
        assert_eq!(resources.requests.get("cpu").map(String::as_str), Some("50m"), "cpu: the limit / 20");
        assert_eq!(resources.requests.get("memory").map(String::as_str), Some("256Mi"), "as given");
        assert_eq!(resources.limits.get("cpu").map(String::as_str), Some("1"), "limits stay");
    }
}

//! The status computation, without I/O: a revision's counts and its conditions
//! `ContainerHealthy`, `ResourcesAvailable` and `Ready`, from its instances and its previous
//! status (see the [revisions controller's documentation](super) for what they promise).

use std::sync::Arc;

use stratus_api::Resource;
use stratus_api::v1::{Instance, Revision, RevisionStatus};

use crate::instances::{is_bound, is_ready};
use crate::services::{CONTAINER_MISSING, IMAGE_NOT_FOUND, IMAGE_RESOLVED};
use crate::status::{self, Cond, FALSE, READY, TRUE, UNKNOWN};

const CONTAINER_HEALTHY: &str = "ContainerHealthy";
const RESOURCES_AVAILABLE: &str = "ResourcesAvailable";

/// Why the instances of a revision cannot run, as one of them reports it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct Failure {
    /// The condition it makes False: ContainerHealthy or ResourcesAvailable.
    condition: &'static str,
    pub(super) reason: String,
    pub(super) message: String,
}

/// What an instance that is not ready says about why it cannot run, if it says anything.
pub(super) fn failure_of(inst: &Instance) -> Option<Failure> {
    let st = inst.status.as_ref()?;
    if st.ready {
        return None;
    }
    let name = &inst.meta().name;
    let message = format!("instance {name}: {}", stable_message(&st.message));
    let (condition, reason) = match st.reason.as_str() {
        "ErrImagePull" | "ImagePullBackOff" => (CONTAINER_HEALTHY, CONTAINER_MISSING.to_string()),
        "CrashLoopBackOff" => match st.exit_code {
            Some(code) => (CONTAINER_HEALTHY, format!("ExitCode{code}")),
            // Restarted by a failing liveness probe rather than by an exit.
            None => (CONTAINER_HEALTHY, "CrashLoopBackOff".to_string()),
        },
        "OOMKilled" => (CONTAINER_HEALTHY, "OOMKilled".to_string()),
        "CreateContainerError" | "CreateContainerConfigError" | "RunContainerError" | "InvalidSpec" => {
            (CONTAINER_HEALTHY, st.reason.clone())
        }
        "Unschedulable" => (RESOURCES_AVAILABLE, st.reason.clone()),
        _ => return None,
    };
    Some(Failure { condition, reason, message })
}

/// The agent's message without the backoff it appends ("… (retrying in 20s)", "…; back-off 40s
/// restarting it"), which changes with every retry and would rewrite the status each time.
fn stable_message(message: &str) -> &str {
    let cut = [" (retrying in ", "; back-off "].iter().filter_map(|m| message.find(m)).min();
    cut.map_or(message, |i| &message[..i])
}

/// The revision's status for `active`, its instances that run or start.
pub(super) fn desired_status(
    rev: &Revision,
    previous: &RevisionStatus,
    desired: i32,
    active: &[Arc<Instance>],
) -> RevisionStatus {
    let actual = i32::try_from(active.len()).unwrap_or(i32::MAX);
    let ready_count = i32::try_from(active.iter().filter(|i| is_ready(i)).count()).unwrap_or(i32::MAX);
    let mut sorted: Vec<&Arc<Instance>> = active.iter().collect();
    sorted.sort_by(|a, b| a.meta().name.cmp(&b.meta().name));
    let failures: Vec<Failure> = sorted.iter().filter_map(|i| failure_of(i)).collect();
    let container_failure = failures.iter().find(|f| f.condition == CONTAINER_HEALTHY);
    let resource_failure = failures.iter().find(|f| f.condition == RESOURCES_AVAILABLE);
    // The image could not be resolved: the revision's conditions say ContainerMissing, as
    // Knative's, whatever the registry's answer was.
    let image = status::get(&previous.conditions, IMAGE_RESOLVED)
        .filter(|c| c.status == FALSE)
        .map(|c| (if c.reason == IMAGE_NOT_FOUND { CONTAINER_MISSING.to_string() } else { c.reason.clone() }, c));
    let was = |type_: &'static str| {
        status::get(&previous.conditions, type_).map(|c| {
            let st = match c.status.as_str() {
                TRUE => TRUE,
                FALSE => FALSE,
                _ => UNKNOWN,
            };
            Cond::new(type_, st, c.reason.clone(), c.message.clone())
        })
    };
    let was_ready = status::is_true(&previous.conditions, READY);

    let container_healthy = if let Some(f) = container_failure.filter(|_| ready_count == 0) {
        Cond::new(CONTAINER_HEALTHY, FALSE, f.reason.clone(), f.message.clone())
    } else if ready_count > 0 {
        Cond::true_(CONTAINER_HEALTHY)
    } else if let Some((reason, c)) = image.clone().filter(|_| !was_ready) {
        Cond::new(CONTAINER_HEALTHY, FALSE, reason, c.message.clone())
    } else {
        was(CONTAINER_HEALTHY).unwrap_or_else(|| Cond::new(CONTAINER_HEALTHY, UNKNOWN, "", ""))
    };
    let resources_available = if let Some(f) = resource_failure {
        Cond::new(RESOURCES_AVAILABLE, FALSE, f.reason.clone(), f.message.clone())
    } else if active.iter().any(|i| is_bound(i)) {
        Cond::true_(RESOURCES_AVAILABLE)
    } else {
        was(RESOURCES_AVAILABLE).unwrap_or_else(|| Cond::new(RESOURCES_AVAILABLE, UNKNOWN, "", ""))
    };

    let ready_cond = if ready_count > 0 {
        Cond::true_(READY)
    } else if let Some(f) = container_failure.or(resource_failure) {
        Cond::new(READY, FALSE, f.reason.clone(), f.message.clone())
    } else if was_ready {
        // It has served, and nothing says it cannot: it is starting (from zero, or replacing
        // instances). Traffic keeps coming to it; the gateway holds requests meanwhile.
        Cond::true_(READY)
    } else if let Some((reason, c)) = image {
        Cond::new(READY, FALSE, reason, c.message.clone())
    } else if desired == 0 {
        was(READY).unwrap_or_else(|| {
            Cond::new(READY, UNKNOWN, "Inactive", "no instances are wanted: the revision is scaled to zero")
        })
    } else {
        Cond::new(
            READY,
            UNKNOWN,
            "Deploying",
            format!("waiting for an instance to become ready ({actual} of {desired} started)"),
        )
    };

    let mut next = previous.clone();
    next.observed_generation = rev.meta().generation;
    next.actual_instances = actual;
    next.ready_instances = ready_count;
    for c in [&container_healthy, &resources_available, &ready_cond] {
        status::set(&mut next.conditions, c);
    }
    next
}

#[cfg(test)]
mod tests {
    use stratus_api::v1::InstanceStatus;

    use super::*;
    use crate::revisions::fixtures::{instance, revision, running};

    #[test]
    fn readiness_says_why_a_revision_cannot_run() {
        let rev = revision(0);
        let crashing = instance(
            "i1",
            1,
            "n1",
            InstanceStatus {
                phase: "Running".into(),
                reason: "CrashLoopBackOff".into(),
                exit_code: Some(3),
                message: "the container exited with code 3; its last line: no DATABASE_URL; back-off 20s restarting it"
                    .into(),
                ..Default::default()
            },
        );
        let st = desired_status(&rev, &RevisionStatus::default(), 1, &[crashing]);
        let ready = status::get(&st.conditions, READY).cloned().unwrap_or_default();
        assert_eq!((ready.status.as_str(), ready.reason.as_str()), (FALSE, "ExitCode3"));
        assert_eq!(ready.message, "instance i1: the container exited with code 3; its last line: no DATABASE_URL");
        assert_eq!(status::status(&st.conditions, CONTAINER_HEALTHY), FALSE);

        let pulling = instance(
            "i2",
            1,
            "n1",
            InstanceStatus {
                phase: "Pending".into(),
                reason: "ImagePullBackOff".into(),
                message: "pull access denied (retrying in 10s)".into(),
                ..Default::default()
            },
        );
        let st = desired_status(&rev, &RevisionStatus::default(), 1, &[pulling]);
        let ready = status::get(&st.conditions, READY).cloned().unwrap_or_default();
        assert_eq!(
            (ready.reason.as_str(), ready.message.as_str()),
            (CONTAINER_MISSING, "instance i2: pull access denied")
        );

        // The node refused to run it as configured (runAsNonRoot and a root image).
        let refused = instance(
            "i5",
            1,
            "n1",
            InstanceStatus {
                phase: "Pending".into(),
                reason: "CreateContainerConfigError".into(),
                message: "container has runAsNonRoot and image img will run as root (retrying in 10s)".into(),
                ..Default::default()
            },
        );
        let st = desired_status(&rev, &RevisionStatus::default(), 1, &[refused]);
        let healthy = status::get(&st.conditions, CONTAINER_HEALTHY).cloned().unwrap_or_default();
        assert_eq!(
            (healthy.status.as_str(), healthy.reason.as_str(), healthy.message.as_str()),
            (
                FALSE,
                "CreateContainerConfigError",
                "instance i5: container has runAsNonRoot and image img will run as root"
            )
        );

        // Ready once an instance is; kept ready at zero and while starting again.
        let st = desired_status(&rev, &RevisionStatus::default(), 1, &[instance("i3", 1, "n1", running(true))]);
        assert_eq!((st.ready_instances, st.actual_instances), (1, 1));
        assert_eq!(status::status(&st.conditions, READY), TRUE);
        let at_zero = desired_status(&rev, &st, 0, &[]);
        assert_eq!(status::status(&at_zero.conditions, READY), TRUE);
        let starting = desired_status(&rev, &at_zero, 1, &[instance("i4", 2, "", InstanceStatus::default())]);
        assert_eq!(status::status(&starting.conditions, READY), TRUE);

        // Never ready, nothing known: Deploying; the image the registry did not know: ContainerMissing.
        let st = desired_status(&rev, &RevisionStatus::default(), 1, &[]);
        assert_eq!(status::get(&st.conditions, READY).map(|c| c.reason.as_str()), Some("Deploying"));
        let mut unresolved = RevisionStatus::default();
        status::set(
            &mut unresolved.conditions,
            &Cond::new(IMAGE_RESOLVED, FALSE, CONTAINER_MISSING, "x: manifest unknown"),
        );
        let st = desired_status(&rev, &unresolved, 1, &[]);
        let ready = status::get(&st.conditions, READY).cloned().unwrap_or_default();
        assert_eq!(
            (ready.status.as_str(), ready.reason.as_str(), ready.message.as_str()),
            (FALSE, CONTAINER_MISSING, "x: manifest unknown")
        );
        assert_eq!(
            status::status(&st.conditions, IMAGE_RESOLVED),
            FALSE,
            "the services controller's condition is kept"
        );
        // Running the same computation on its own result changes nothing.
        assert_eq!(desired_status(&rev, &st, 1, &[]), st);
    }
}

//! The waits a revision is given against the clock, without I/O: for its image to be pinned
//! before its instances start, and for it to become ready before its progress deadline.
//! `now` is the caller's: the Context's clock ([`crate::clock`]).

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use stratus_api::v1::{Instance, Revision, RevisionStatus};
use stratus_api::{Resource, knative};

use super::readiness::failure_of;
use crate::config::Config;
use crate::digest;
use crate::instances::{is_finished, is_ready};
use crate::services::{CONTAINER_MISSING, IMAGE_NOT_FOUND, IMAGE_RESOLVED};
use crate::status::{self, Cond, FALSE, READY, TRUE};

/// How long a new revision's instances wait for its image to be pinned before they start with
/// the image as written.
pub const PIN_WAIT: Duration = Duration::from_secs(30);

/// The reason of a revision that did not become ready within its progress deadline (Knative's).
pub const PROGRESS_DEADLINE_EXCEEDED: &str = "ProgressDeadlineExceeded";

/// The progress deadline of `rev`: its annotation, else the cluster's.
pub(super) fn deadline(rev: &Revision, config: &Config) -> Duration {
    match knative::progress_deadline(&rev.meta().annotations) {
        Some(Ok(deadline)) => deadline,
        // Refused at admission; a revision stored before that rule gets the default.
        Some(Err(_)) | None => config.progress_deadline,
    }
}

/// Where a revision stands against its progress deadline.
#[derive(Clone, Debug, PartialEq)]
pub(super) enum Progress {
    /// It has been ready, or no instance is wanted of it: no deadline applies.
    Done,
    /// Not ready yet, and the deadline is this far away.
    Within(Duration),
    /// Failed: it gets no instances, and this `Ready` condition.
    Failed(Cond),
}

/// Where `rev` (with `previous` status, `desired` instances wanted and `instances` as they are)
/// stands at `now` against `deadline`. See the module documentation.
pub(super) fn progress(
    rev: &Revision,
    previous: &RevisionStatus,
    desired: i32,
    instances: &[Arc<Instance>],
    deadline: Duration,
    now: SystemTime,
) -> Progress {
    let ready_cond = status::get(&previous.conditions, READY);
    if let Some(c) = ready_cond.filter(|c| c.status == FALSE && c.reason == PROGRESS_DEADLINE_EXCEEDED) {
        return Progress::Failed(Cond::new(READY, FALSE, PROGRESS_DEADLINE_EXCEEDED, c.message.clone()));
    }
    if let Some(c) =
        status::get(&previous.conditions, IMAGE_RESOLVED).filter(|c| c.status == FALSE && c.reason == IMAGE_NOT_FOUND)
    {
        return Progress::Failed(Cond::new(READY, FALSE, CONTAINER_MISSING, c.message.clone()));
    }
    let active: Vec<&Arc<Instance>> =
        instances.iter().filter(|i| i.meta().deletion_timestamp.is_none() && !is_finished(i)).collect();
    if ready_cond.is_some_and(|c| c.status == TRUE) || active.iter().any(|i| is_ready(i)) || desired <= 0 {
        return Progress::Done;
    }
    let created = rev.meta().creation_timestamp.map_or(0, |t| u64::try_from(t.seconds).unwrap_or(0));
    let elapsed = now.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs()).saturating_sub(created);
    if let Some(left) = deadline.checked_sub(Duration::from_secs(elapsed)).filter(|d| !d.is_zero()) {
        return Progress::Within(left);
    }
    // Why, as its instances say it (the same instance each time: by name).
    let mut sorted = active.clone();
    sorted.sort_by(|a, b| a.meta().name.cmp(&b.meta().name));
    let why = match sorted.iter().find_map(|i| failure_of(i)) {
        Some(f) => format!("{}: {}", f.reason, f.message),
        None => format!("{} of {desired} instances started, none ready", active.len()),
    };
    let message =
        format!("the revision did not become ready within its progress deadline ({}s); {why}", deadline.as_secs());
    Progress::Failed(Cond::new(READY, FALSE, PROGRESS_DEADLINE_EXCEEDED, message))
}

/// How much longer instances should wait for the services controller to pin `rev`'s image;
/// `None` when they need not (pinned, resolution failed, or waited long enough).
pub(super) fn pin_wait(rev: &Revision, now: SystemTime) -> Option<Duration> {
    let status = rev.status.clone().unwrap_or_default();
    let containers = rev.spec.as_ref().map(|s| s.containers.as_slice()).unwrap_or_default();
    if !status.image_digest.is_empty()
        || status::get(&status.conditions, IMAGE_RESOLVED).is_some()
        || digest::serving_container(containers).is_none()
    {
        return None;
    }
    let created = rev.meta().creation_timestamp.map_or(0, |t| u64::try_from(t.seconds).unwrap_or(0));
    let now = now.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    PIN_WAIT.checked_sub(Duration::from_secs(now.saturating_sub(created))).filter(|d| !d.is_zero())
}

#[cfg(test)]
mod tests {
    use stratus_api::v1::InstanceStatus;

    use super::*;
    use crate::revisions::fixtures::{instance, revision, running};
    use crate::revisions::plan::plan_instances;
    use crate::revisions::readiness::desired_status;

    #[test]
    fn a_revision_that_never_becomes_ready_fails_at_its_deadline_and_holds_nothing() {
        let mut rev = revision(0);
        rev.meta_mut().creation_timestamp = Some(stratus_api::Timestamp { seconds: 1_000, nanos: 0 });
        let at = |secs| UNIX_EPOCH + Duration::from_secs(secs);
        let deadline = Duration::from_secs(10);
        let crashing = instance(
            "i1",
            1_000,
            "n1",
            InstanceStatus {
                phase: "Running".into(),
                reason: "CrashLoopBackOff".into(),
                exit_code: Some(3),
                message: "the container exited with code 3; back-off 20s restarting it".into(),
                ..Default::default()
            },
        );
        let none = RevisionStatus::default();
        let all = std::slice::from_ref(&crashing);
        assert_eq!(progress(&rev, &none, 1, all, deadline, at(1_004)), Progress::Within(Duration::from_secs(6)));
        let Progress::Failed(failed) = progress(&rev, &none, 1, all, deadline, at(1_010)) else {
            panic!("past the deadline the revision fails")
        };
        assert_eq!((failed.status, failed.reason.as_str()), (FALSE, PROGRESS_DEADLINE_EXCEEDED));
        assert_eq!(
            failed.message,
            "the revision did not become ready within its progress deadline (10s); ExitCode3: instance i1: the \
             container exited with code 3"
        );
        // It holds nothing: every instance goes, none is made.
        let plan = plan_instances(all, 0);
        assert_eq!((plan.delete.len(), plan.create), (1, 0));
        // Failed for good, even with its instances gone and the clock turned back.
        let mut st = desired_status(&rev, &none, 0, &[]);
        status::set(&mut st.conditions, &failed);
        assert!(matches!(progress(&rev, &st, 1, &[], deadline, at(1_001)), Progress::Failed(c) if c == failed));

        // Ready once (or nothing wanted): no deadline.
        let ready = desired_status(&rev, &none, 1, &[instance("i2", 1_000, "n1", running(true))]);
        assert_eq!(progress(&rev, &ready, 1, &[], deadline, at(9_999)), Progress::Done);
        assert_eq!(progress(&rev, &none, 0, &[], deadline, at(9_999)), Progress::Done);
        // No instance says why: the count does.
        let Progress::Failed(c) = progress(&rev, &none, 2, &[], deadline, at(1_011)) else { panic!("fails") };
        assert!(c.message.ends_with("0 of 2 instances started, none ready"), "{}", c.message);
    }

    #[test]
    fn an_image_the_registry_does_not_know_fails_the_revision_at_once() {
        let rev = revision(0);
        let mut st = RevisionStatus::default();
        status::set(
            &mut st.conditions,
            &Cond::new(IMAGE_RESOLVED, FALSE, IMAGE_NOT_FOUND, "127.0.0.1:5000/nope:v1: manifest unknown"),
        );
        let Progress::Failed(c) = progress(&rev, &st, 1, &[], Duration::from_secs(600), UNIX_EPOCH) else {
            panic!("fails without waiting for the deadline")
        };
        assert_eq!(
            (c.reason.as_str(), c.message.as_str()),
            (CONTAINER_MISSING, "127.0.0.1:5000/nope:v1: manifest unknown")
        );
        // A registry that cannot be reached is no proof: the instances may still pull.
        status::set(&mut st.conditions, &Cond::new(IMAGE_RESOLVED, FALSE, CONTAINER_MISSING, "cannot reach"));
        assert!(matches!(progress(&rev, &st, 1, &[], Duration::from_secs(600), UNIX_EPOCH), Progress::Within(_)));
    }

    #[test]
    fn the_deadline_is_the_annotations_else_the_clusters() {
        let mut rev = revision(0);
        let config = Config { progress_deadline: Duration::from_secs(42), ..Config::default() };
        assert_eq!(deadline(&rev, &config), Duration::from_secs(42));
        rev.meta_mut().annotations.insert(knative::PROGRESS_DEADLINE.into(), "5s".into());
        assert_eq!(deadline(&rev, &config), Duration::from_secs(5));
    }

    #[test]
    fn instances_wait_a_while_for_the_pinned_image() {
        let mut rev = revision(0);
        rev.meta_mut().creation_timestamp = Some(stratus_api::Timestamp { seconds: 1_000, nanos: 0 });
        let at = |secs| UNIX_EPOCH + Duration::from_secs(secs);
        assert_eq!(pin_wait(&rev, at(1_010)), Some(Duration::from_secs(20)));
        assert_eq!(pin_wait(&rev, at(1_030)), None);
        let mut resolved = rev.clone();
        let mut st = RevisionStatus::default();
        status::set(&mut st.conditions, &Cond::new(IMAGE_RESOLVED, FALSE, CONTAINER_MISSING, "x"));
        resolved.status = Some(st);
        assert_eq!(pin_wait(&resolved, at(1_001)), None, "a failed resolution waits no longer");
    }
}

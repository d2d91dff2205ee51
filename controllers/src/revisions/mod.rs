//! The revisions controller: keeps each Revision's Instances at the count it should have, and
//! reports whether the revision can serve.
//!
//! What it guarantees:
//! - **The count.** A revision should have `status.desiredInstances` instances, which the
//!   autoscaler ([`crate::autoscaler`]) writes with the reason in `status.scaleReason`; this
//!   controller never writes either. Until the autoscaler has written them (`scaleReason` is
//!   empty), a new revision gets `initialScale` instances (at most `maxInstances`): see
//!   [`desired_instances`].
//! - **The Instances.** Missing ones are created (`{revision}-{5 random characters}`, labels
//!   `stratus.dev/service` and [`REVISION_LABEL`], a controller ownerReference to the
//!   revision, the revision's containers with the serving image replaced by the pinned digest);
//!   `Failed` (or `Succeeded`) ones are deleted and replaced; a surplus is deleted, those not
//!   on a node first, then those not ready, then the youngest. Instances being deleted count
//!   for nothing. A new revision's instances wait (up to [`PIN_WAIT`]) for the services
//!   controller to pin its image, so that they run the digest and not a moving tag.
//! - **The status**: `actualInstances`, `readyInstances`,
//!   `observedGeneration` and the conditions `ContainerHealthy`, `ResourcesAvailable` and
//!   `Ready`. Ready means "can serve": True once an instance is ready and kept True while the
//!   revision scales (to zero and back, or replaces instances), False when it cannot run, with
//!   the reason and message of an instance that shows why: `ContainerMissing` (the image cannot
//!   be pulled, or the registry did not know it), `ExitCode<n>` (the container keeps exiting;
//!   the message carries its last line), `OOMKilled`. `imageDigest` and the `ImageResolved`
//!   condition belong to the services controller and are kept as they are.
//!
//! - **The progress deadline.** A revision that has never been ready, while instances are
//!   wanted of it, gets until its deadline (annotation `serving.knative.dev/progress-deadline`,
//!   else [`crate::Config::progress_deadline`], 600 s as Knative) from its creation, as the
//!   Context's [clock](crate::clock) tells the time (the pin wait too). Past it, it
//!   is failed for good: `Ready` False with reason [`PROGRESS_DEADLINE_EXCEEDED`] and the reason
//!   of its instances in the message, and its instances are deleted, so that a broken image or
//!   a crashing container holds nothing on any node. An image that the registry says does not
//!   exist (`ImageResolved` False, reason `ImageNotFound`) fails the revision at once, and for
//!   as long as that is so. A new revision of the service (a changed template, a changed
//!   deadline annotation) tries again.
//! - **The requests.** Each Instance carries the requests the scheduler counts: those the
//!   template gives, the rest derived from its limits by the cluster's overcommit policy
//!   ([`stratus_api::capacity`]).
//!
//! Events on the Revision: `InstanceCreated`, `InstanceDeleted`, `RevisionReady`,
//! `RevisionFailed`.
//!
//! Writes to Instances are decided on the cache, then checked against a fresh list from the
//! API server before they are made: the cache may not show an instance created a moment ago,
//! and acting on it would create one too many.
//!
//! The pieces, each without I/O: `plan` decides which Instances go and what a new one looks
//! like, `readiness` computes the status, `progress` the waits against the clock. This module
//! reads and writes.

use std::sync::Arc;

use stratus_api::v1::{Instance, Revision, RevisionStatus};
use stratus_api::{Resource, defaults};
use stratus_client::Error as ClientError;
use stratus_client::runtime::{Action, Controller, ObjectRef};
use tracing::info;

use crate::children;
use crate::context::Context;
use crate::events::EventType;
use crate::status::{self, Cond, FALSE, READY, TRUE};

#[cfg(test)]
mod fixtures;
mod plan;
mod progress;
mod readiness;

use plan::{Why, instance_for, plan_instances, random_suffix};
use progress::{Progress, deadline, pin_wait, progress};
use readiness::desired_status;

pub use progress::{PIN_WAIT, PROGRESS_DEADLINE_EXCEEDED};

/// The label every Instance carries: the name of its Revision.
pub use stratus_api::wellknown::labels::REVISION as REVISION_LABEL;

/// The controller's name in metrics and logs.
const CONTROLLER: &str = "revisions";
const WORKERS: usize = 4;
/// Random names tried for one new instance before giving up until the next reconcile.
const NAME_ATTEMPTS: usize = 3;

/// The condition that says whether the tenant's quota left room for every instance wanted.
pub const WITHIN_QUOTA: &str = "WithinQuota";

/// How soon a revision held back by its tenant's quota looks again (room may have been made in
/// another of the tenant's namespaces, which this revision would not hear of).
const QUOTA_RETRY: std::time::Duration = std::time::Duration::from_secs(15);

/// What failed, naming the step and the object.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("listing the instances of revision {revision} failed")]
    ListInstances {
        revision: ObjectRef,
        #[source]
        source: ClientError,
    },
    #[error("creating an instance of revision {revision} failed")]
    CreateInstance {
        revision: ObjectRef,
        #[source]
        source: ClientError,
    },
    #[error("deleting instance {instance} failed")]
    DeleteInstance {
        instance: ObjectRef,
        #[source]
        source: ClientError,
    },
    #[error("updating the status of revision {revision} failed")]
    UpdateStatus {
        revision: ObjectRef,
        #[source]
        source: ClientError,
    },
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Runs the revisions controller until `shutdown`.
pub async fn run(ctx: Arc<Context>, shutdown: impl Future<Output = ()> + Send) {
    Controller::new(&ctx.revisions, ctx.clone())
        .owns(&ctx.instances)
        .metrics(CONTROLLER, ctx.metrics.clone())
        .run(reconcile, error_policy, WORKERS, shutdown)
        .await;
}

fn error_policy(_: Arc<Revision>, _: &Error, _: Arc<Context>) -> Action {
    Action::backoff()
}

async fn reconcile(rev: Arc<Revision>, ctx: Arc<Context>) -> Result<Action> {
    reconcile_revision(&rev, &ctx).await
}

/// One pass over a Revision: its instances, then its status. See the module documentation.
async fn reconcile_revision(rev: &Revision, ctx: &Context) -> Result<Action> {
    if rev.meta().deletion_timestamp.is_some() {
        // Its instances go with it through the garbage collector.
        return Ok(Action::await_change());
    }
    let now = ctx.clock.now();
    let previous = rev.status.clone().unwrap_or_default();
    let mut instances = owned(rev, ctx.instances.store().list_by_label(REVISION_LABEL, &rev.meta().name));
    let progress = progress(rev, &previous, desired_instances(rev), &instances, deadline(rev, &ctx.config), now);
    // A failed revision holds nothing.
    let desired = if matches!(progress, Progress::Failed(_)) { 0 } else { desired_instances(rev) };
    let pin_wait = pin_wait(rev, now);

    let mut plan = plan_instances(&instances, desired);
    if plan.has_work(pin_wait.is_none()) {
        instances = listed_instances(ctx, rev).await?;
        plan = plan_instances(&instances, desired);
    }
    if matches!(progress, Progress::Failed(_)) {
        for (_, why) in &mut plan.delete {
            if *why == Why::Surplus {
                *why = Why::RevisionFailed;
            }
        }
    }
    for (inst, why) in &plan.delete {
        delete_instance(ctx, rev, inst, why).await?;
    }
    let mut now_active: Vec<Arc<Instance>> = plan.keep.clone();
    // The tenant's quota stops the count where admission would refuse the next instance.
    let mut over_quota = None;
    if pin_wait.is_none() {
        for _ in 0..plan.create {
            match create_instance(ctx, rev).await {
                Ok(created) => now_active.push(Arc::new(created)),
                Err(Error::CreateInstance { source: ClientError::Forbidden(msg), .. })
                    if msg.contains("exceeded quota") =>
                {
                    over_quota = Some(msg);
                    break;
                }
                Err(e) => return Err(e),
            }
        }
    }

    let mut next = desired_status(rev, &previous, desired, &now_active);
    if let Progress::Failed(failure) = &progress {
        status::set(&mut next.conditions, failure);
    }
    match &over_quota {
        Some(msg) => {
            let was = status::get(&previous.conditions, WITHIN_QUOTA);
            if !was.is_some_and(|c| c.status == FALSE && c.message == *msg) {
                ctx.events.record(rev, EventType::Warning, "QuotaExceeded", msg).await;
            }
            status::set(&mut next.conditions, &Cond::new(WITHIN_QUOTA, FALSE, "QuotaExceeded", msg.clone()));
        }
        None if status::get(&previous.conditions, WITHIN_QUOTA).is_some() && plan.create > 0 => {
            status::set(&mut next.conditions, &Cond::true_(WITHIN_QUOTA));
        }
        None => {}
    }
    if next != previous {
        let mut updated = rev.clone();
        updated.status = Some(next.clone());
        ctx.client
            .update_status(updated)
            .await
            .map_err(|source| Error::UpdateStatus { revision: ObjectRef::from_obj(rev), source })?;
        record_transition(ctx, rev, &previous, &next).await;
    }
    let pin_wait = pin_wait.filter(|_| plan.create > 0);
    let deadline_wait = match progress {
        Progress::Within(left) => Some(left),
        _ => None,
    };
    let quota_wait = over_quota.map(|_| QUOTA_RETRY);
    Ok(match pin_wait.into_iter().chain(deadline_wait).chain(quota_wait).min() {
        Some(wait) => Action::requeue(wait),
        None => Action::await_change(),
    })
}

/// How many instances `rev` should have: `status.desiredInstances` once the autoscaler has
/// written it (with a `scaleReason`), `initialScale` (at most `maxInstances`) before.
pub fn desired_instances(rev: &Revision) -> i32 {
    let status = rev.status.as_ref();
    if let Some(st) = status.filter(|s| !s.scale_reason.is_empty()) {
        return st.desired_instances.max(0);
    }
    let scaling = rev.spec.as_ref().and_then(|s| s.scaling.clone()).unwrap_or_default();
    let initial = scaling.initial_scale.unwrap_or(defaults::INITIAL_SCALE).max(0);
    match scaling.max_instances.unwrap_or(defaults::MAX_INSTANCES) {
        max if max > 0 => initial.min(max),
        _ => initial,
    }
}

/// The instances among `instances` that `rev` controls.
fn owned(rev: &Revision, instances: Vec<Arc<Instance>>) -> Vec<Arc<Instance>> {
    instances.into_iter().filter(|i| children::controls(rev, i.as_ref())).collect()
}

/// The revision's instances as the API server has them now.
async fn listed_instances(ctx: &Context, rev: &Revision) -> Result<Vec<Arc<Instance>>> {
    children::list_controlled(&ctx.client, rev, REVISION_LABEL)
        .await
        .map_err(|source| Error::ListInstances { revision: ObjectRef::from_obj(rev), source })
}

/// Deletes an instance if it is still the one that was looked at; gone already is done.
async fn delete_instance(ctx: &Context, rev: &Revision, inst: &Instance, why: &Why) -> Result<()> {
    let instance = ObjectRef::from_obj(inst);
    let rv = inst.meta().resource_version.as_str();
    match ctx.client.delete_any(Instance::INFO.kind, &instance.namespace, &instance.name, Some(rv)).await {
        Ok(_) => {}
        Err(ClientError::NotFound(_)) => return Ok(()),
        Err(source) => return Err(Error::DeleteInstance { instance, source }),
    }
    let message = match why {
        Why::Stopped => {
            let st = inst.status.clone().unwrap_or_default();
            let detail = if st.reason.is_empty() { st.phase.clone() } else { format!("{}, {}", st.phase, st.reason) };
            format!("deleted instance {} ({detail}) to replace it", instance.name)
        }
        Why::Surplus => format!("deleted instance {}: more were running than wanted", instance.name),
        Why::RevisionFailed => {
            format!("deleted instance {}: the revision failed and holds no instances", instance.name)
        }
    };
    info!(%instance, ?why, "deleted an instance");
    ctx.events.record(rev, EventType::Normal, "InstanceDeleted", &message).await;
    Ok(())
}

/// Creates one instance of `rev` under a fresh random name.
async fn create_instance(ctx: &Context, rev: &Revision) -> Result<Instance> {
    let mut attempt = 0;
    loop {
        attempt += 1;
        let inst = instance_for(rev, &random_suffix(), &ctx.config.overcommit);
        match ctx.client.create(inst).await {
            Ok(created) => {
                let name = &created.meta().name;
                info!(instance = %name, "created an instance");
                ctx.events.record(rev, EventType::Normal, "InstanceCreated", &format!("created instance {name}")).await;
                return Ok(created);
            }
            // Five random characters rarely collide; when they do, draw again.
            Err(ClientError::AlreadyExists(_)) if attempt < NAME_ATTEMPTS => continue,
            Err(source) => return Err(Error::CreateInstance { revision: ObjectRef::from_obj(rev), source }),
        }
    }
}

/// Records events when Ready changes.
async fn record_transition(ctx: &Context, rev: &Revision, previous: &RevisionStatus, next: &RevisionStatus) {
    let before = status::get(&previous.conditions, READY);
    let Some(after) = status::get(&next.conditions, READY) else { return };
    let same =
        before.is_some_and(|b| (&b.status, &b.reason, &b.message) == (&after.status, &after.reason, &after.message));
    if same {
        return;
    }
    match after.status.as_str() {
        TRUE if before.is_none_or(|b| b.status != TRUE) => {
            let message = format!("revision {} is ready", rev.meta().name);
            ctx.events.record(rev, EventType::Normal, "RevisionReady", &message).await;
        }
        FALSE => {
            let message = format!("{}: {}", after.reason, after.message);
            ctx.events.record(rev, EventType::Warning, "RevisionFailed", &message).await;
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::revisions::fixtures::revision;

    #[test]
    fn the_count_is_the_autoscalers_once_written_and_the_initial_scale_before() {
        let mut rev = revision(0);
        assert_eq!(desired_instances(&rev), 1, "initialScale defaults to 1");
        if let Some(scaling) = rev.spec.as_mut().and_then(|s| s.scaling.as_mut()) {
            scaling.initial_scale = Some(5);
        }
        assert_eq!(desired_instances(&rev), 3, "at most maxInstances");
        rev.status = Some(RevisionStatus { desired_instances: 0, ..Default::default() });
        assert_eq!(desired_instances(&rev), 3, "0 without a reason is not the autoscaler's");
        rev.status = Some(RevisionStatus {
            desired_instances: 0,
            scale_reason: "scaled to zero after 30s without requests".into(),
            ..Default::default()
        });
        assert_eq!(desired_instances(&rev), 0);
        rev.status = Some(RevisionStatus { desired_instances: 7, scale_reason: "stable".into(), ..Default::default() });
        assert_eq!(desired_instances(&rev), 7);
    }
}

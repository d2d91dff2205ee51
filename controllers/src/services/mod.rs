//! The services controller: a Service's template becomes immutable Revisions, and the Service's
//! status reports them, its URL and its resolved traffic table (Knative's Configuration and
//! Route in one).
//!
//! What it guarantees:
//! - **One Revision per template.** The revision made for the current template (spec, labels
//!   and annotations) is found by comparing the template with the latest created revision's;
//!   when it differs a new Revision is made, named `spec.template.metadata.name` or
//!   `{service}-{NNNNN}`, one above the highest number in use. Applying the same template again
//!   makes nothing; changing a template back to an older one makes a new revision, as Knative
//!   does. A given name whose revision exists with another template (or belongs to someone
//!   else) is refused: `ConfigurationsReady` turns False with reason `RevisionNameTaken`.
//! - **Revisions are marked.** Label [`SERVICE_LABEL`], annotation [`GENERATION_ANNOTATION`]
//!   (the Service generation it was made for, which orders revisions) and a controller
//!   ownerReference to the Service (the garbage collector deletes it with the Service).
//! - **Revisions are pinned.** The serving container's image is resolved to a digest
//!   ([`crate::digest`]) when the revision is made: `status.imageDigest` holds `repo@sha256:…`
//!   and condition [`IMAGE_RESOLVED`] says how resolution went (False, reason
//!   `ImageNotFound` when the registry says the image does not exist, `ContainerMissing`
//!   otherwise, with the registry's answer). A failed resolution is retried with
//!   backoff on later reconciles; the revisions controller waits for the first outcome before
//!   it starts instances, so that they run the pinned image. An image whose pull policy is
//!   `Never` lives on the nodes only and is not resolved (`ImageResolved` True, reason
//!   `PullPolicyNever`).
//! - **Status as Knative reports it**: `url`, `address`, `observedGeneration`,
//!   `latestCreatedRevisionName`, `latestReadyRevisionName`, `traffic` (each `latestRevision`
//!   entry names the latest ready revision; tagged entries get their own URL) and the conditions
//!   `ConfigurationsReady` (the latest created revision is ready), `RoutesReady` (every traffic
//!   target can serve) and `Ready` (both).
//! - **Retention.** Besides the revisions that traffic names and the latest created and ready
//!   ones, the newest `revision_retention` revisions are kept; older ones are deleted.
//!
//! Events on the Service: `RevisionCreated`, `RevisionDeleted`, `RevisionFailed`,
//! `RevisionNameTaken`.
//!
//! The pieces: `template` finds, names and makes the template's revision, `digests` resolves
//! and records image digests, `traffic` computes the status (without I/O), and `error` holds
//! the error every piece returns. This module reconciles a Service with them and deletes what
//! retention lets go.

use std::collections::BTreeSet;
use std::sync::Arc;

use stratus_api::Resource;
use stratus_api::v1::{Revision, Service, ServiceStatus};
use stratus_client::Error as ClientError;
use stratus_client::runtime::{Action, Controller, ObjectRef};
use tracing::info;

use crate::children;
use crate::context::Context;
use crate::events::EventType;
use crate::status::{self, FALSE};

mod digests;
mod error;
#[cfg(test)]
mod fixtures;
mod template;
mod traffic;

use digests::{Shared, resolve_pending_digests};
use template::{Plan, create_revision, plan, sort_newest_first};
use traffic::{CONFIGURATIONS_READY, desired_status};

pub use digests::{CONTAINER_MISSING, IMAGE_NOT_FOUND, IMAGE_RESOLVED};
pub use error::{Error, Result};
pub use template::{GENERATION_ANNOTATION, SERVICE_LABEL};

/// The controller's name in metrics and logs.
const CONTROLLER: &str = "services";
const WORKERS: usize = 2;

/// Runs the services controller until `shutdown`.
pub async fn run(ctx: Arc<Context>, shutdown: impl Future<Output = ()> + Send) {
    let shared = Arc::new(Shared::new(ctx.clone()));
    Controller::new(&ctx.services, shared)
        .owns(&ctx.revisions)
        .metrics(CONTROLLER, ctx.metrics.clone())
        .run(reconcile, error_policy, WORKERS, shutdown)
        .await;
}

fn error_policy(_: Arc<Service>, _: &Error, _: Arc<Shared>) -> Action {
    Action::backoff()
}

async fn reconcile(svc: Arc<Service>, shared: Arc<Shared>) -> Result<Action> {
    reconcile_service(&svc, &shared).await
}

/// One pass over a Service: its revision for the current template, its pending digests, its
/// status, then retention. See the module documentation.
async fn reconcile_service(svc: &Service, shared: &Shared) -> Result<Action> {
    if svc.meta().deletion_timestamp.is_some() {
        // Its revisions go with it through the garbage collector.
        return Ok(Action::await_change());
    }
    let ctx = &shared.ctx;
    let namespace_revisions = ctx.revisions.store().list_by_namespace(&svc.meta().namespace);
    let mut revisions = owned(svc, namespace_revisions.clone());
    let mut plan = plan(svc, &revisions, &namespace_revisions);
    if matches!(plan, Plan::Create(_)) {
        // A revision made moments ago may not be cached yet: decide again on a fresh list
        // before making another.
        revisions = listed_revisions(ctx, svc).await?;
        plan = self::plan(svc, &revisions, &namespace_revisions);
        if let Plan::Create(name) = &plan {
            let created = create_revision(shared, svc, name).await?;
            revisions.push(Arc::new(created));
            plan = Plan::Current(name.clone());
        }
    }
    sort_newest_first(&mut revisions);

    let retry_in = resolve_pending_digests(shared, &mut revisions).await?;

    let previous = svc.status.clone().unwrap_or_default();
    let status = desired_status(svc, &revisions, &plan, &ctx.config);
    if status != previous {
        let mut next = svc.clone();
        next.status = Some(status.clone());
        ctx.client
            .update_status(next)
            .await
            .map_err(|source| Error::UpdateStatus { service: ObjectRef::from_obj(svc), source })?;
        record_transitions(ctx, svc, &previous, &status).await;
    }

    delete_beyond_retention(ctx, svc, &revisions, &status).await?;
    shared.prune_retries();
    Ok(match retry_in {
        Some(delay) => Action::requeue(delay),
        None => Action::await_change(),
    })
}

/// The revisions among `revisions` that `svc` controls and that are not being deleted.
fn owned(svc: &Service, revisions: Vec<Arc<Revision>>) -> Vec<Arc<Revision>> {
    revisions
        .into_iter()
        .filter(|r| r.meta().deletion_timestamp.is_none() && children::controls(svc, r.as_ref()))
        .collect()
}

/// The Service's revisions, as [`owned`] takes them, as the API server has them now.
async fn listed_revisions(ctx: &Context, svc: &Service) -> Result<Vec<Arc<Revision>>> {
    let listed = children::list_controlled(&ctx.client, svc, SERVICE_LABEL)
        .await
        .map_err(|source| Error::ListRevisions { service: ObjectRef::from_obj(svc), source })?;
    Ok(owned(svc, listed))
}

/// Records events for conditions that just turned False.
async fn record_transitions(ctx: &Context, svc: &Service, previous: &ServiceStatus, next: &ServiceStatus) {
    let before = status::get(&previous.conditions, CONFIGURATIONS_READY);
    let Some(after) = status::get(&next.conditions, CONFIGURATIONS_READY) else { return };
    let changed =
        before.is_none_or(|b| (&b.status, &b.reason, &b.message) != (&after.status, &after.reason, &after.message));
    if changed && after.status == FALSE {
        ctx.events.record(svc, EventType::Warning, &after.reason, &after.message).await;
    }
}

/// Deletes the revisions beyond the retention count that nothing refers to. `revisions` are
/// newest first.
async fn delete_beyond_retention(
    ctx: &Context,
    svc: &Service,
    revisions: &[Arc<Revision>],
    status: &ServiceStatus,
) -> Result<()> {
    let spec_traffic = svc.spec.as_ref().map(|s| s.traffic.as_slice()).unwrap_or_default();
    let mut protected: BTreeSet<&str> = BTreeSet::new();
    protected.insert(&status.latest_created_revision_name);
    protected.insert(&status.latest_ready_revision_name);
    protected.extend(status.traffic.iter().map(|t| t.revision_name.as_str()));
    protected.extend(spec_traffic.iter().map(|t| t.revision_name.as_str()));
    let keep = ctx.config.revision_retention;
    let victims = revisions.iter().filter(|r| !protected.contains(r.meta().name.as_str())).skip(keep);
    for rev in victims {
        let revision = ObjectRef::from_obj(rev.as_ref());
        let rv = rev.meta().resource_version.as_str();
        match ctx.client.delete_any(Revision::INFO.kind, &revision.namespace, &revision.name, Some(rv)).await {
            Ok(_) => {
                info!(%revision, keep, "deleted a revision beyond the retention count");
                let message =
                    format!("deleted revision {}: no traffic names it and {keep} newer ones are kept", revision.name);
                ctx.events.record(svc, EventType::Normal, "RevisionDeleted", &message).await;
            }
            // Deleted already; the cache had not caught up.
            Err(ClientError::NotFound(_)) => {}
            Err(source) => return Err(Error::DeleteRevision { revision, source }),
        }
    }
    Ok(())
}

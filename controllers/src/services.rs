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

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use stratus_api::v1::{
    Address, Container, ObjectMeta, OwnerReference, Revision, RevisionTemplate, Service, ServiceStatus, TrafficTarget,
};
use stratus_api::{API_VERSION, Resource};
use stratus_client::runtime::{Action, Controller, ObjectRef};
use stratus_client::{Error as ClientError, ListParams};
use tokio::time::Instant;
use tracing::{debug, info, warn};

use crate::context::Context;
use crate::digest::{self, Resolver};
use crate::events::EventType;
use crate::status::{self, Cond, FALSE, READY, TRUE, UNKNOWN};

/// The annotation with the Service generation a Revision was made for.
pub use stratus_api::wellknown::annotations::SERVICE_GENERATION as GENERATION_ANNOTATION;
/// The label every Revision (and Instance) carries: the name of its Service.
pub use stratus_api::wellknown::labels::SERVICE as SERVICE_LABEL;
/// The Revision condition this controller owns: whether the image was resolved to a digest.
pub const IMAGE_RESOLVED: &str = "ImageResolved";
/// The reason of a revision whose image cannot be found or pulled.
pub const CONTAINER_MISSING: &str = "ContainerMissing";
/// The reason of [`IMAGE_RESOLVED`] when the registry answered that the image does not exist:
/// the revision is failed at once (it would only pull in vain), and starts should a later
/// retry find the image.
pub const IMAGE_NOT_FOUND: &str = "ImageNotFound";

const CONFIGURATIONS_READY: &str = "ConfigurationsReady";
const ROUTES_READY: &str = "RoutesReady";
const CONTROLLER: &str = "services";
const WORKERS: usize = 2;
/// Retries of a failed digest resolution: the first after this, doubling up to the cap.
const DIGEST_RETRY_BASE: Duration = Duration::from_secs(5);
const DIGEST_RETRY_MAX: Duration = Duration::from_secs(300);
/// Attempts at recording a digest while other writers change the revision's status.
const STATUS_ATTEMPTS: usize = 3;

/// What failed, naming the step and the object.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("listing the revisions of service {service} failed")]
    ListRevisions {
        service: ObjectRef,
        #[source]
        source: ClientError,
    },
    #[error("creating revision {revision} failed")]
    CreateRevision {
        revision: ObjectRef,
        #[source]
        source: ClientError,
    },
    #[error("recording the image digest of revision {revision} failed")]
    RecordDigest {
        revision: ObjectRef,
        #[source]
        source: ClientError,
    },
    #[error("deleting revision {revision}, beyond the retention count, failed")]
    DeleteRevision {
        revision: ObjectRef,
        #[source]
        source: ClientError,
    },
    #[error("updating the status of service {service} failed")]
    UpdateStatus {
        service: ObjectRef,
        #[source]
        source: ClientError,
    },
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Runs the services controller until `shutdown`.
pub async fn run(ctx: Arc<Context>, shutdown: impl Future<Output = ()> + Send) {
    let resolver = Resolver::new(ctx.config.insecure_registries.clone(), digest::DEFAULT_TIMEOUT);
    let shared = Arc::new(Shared { ctx: ctx.clone(), resolver, retries: Mutex::new(HashMap::new()) });
    Controller::new(&ctx.services, shared).owns(&ctx.revisions).run(reconcile, error_policy, WORKERS, shutdown).await;
}

/// What the reconciles share besides the [`Context`].
struct Shared {
    ctx: Arc<Context>,
    resolver: Resolver,
    /// Backoff of failed digest resolutions, by revision uid. Lost on restart, which only
    /// means one early retry.
    retries: Mutex<HashMap<String, Retry>>,
}

#[derive(Clone, Copy, Debug)]
struct Retry {
    failures: u32,
    next: Instant,
}

impl Shared {
    /// When the digest of revision `uid` may be resolved again (now when never tried).
    fn retry_at(&self, uid: &str) -> Option<Instant> {
        self.retries.lock().unwrap_or_else(PoisonError::into_inner).get(uid).map(|r| r.next)
    }

    /// Records the outcome of a resolution of revision `uid`'s image.
    fn resolved(&self, uid: &str, ok: bool) {
        let mut retries = self.retries.lock().unwrap_or_else(PoisonError::into_inner);
        if ok {
            retries.remove(uid);
            return;
        }
        let failures = retries.get(uid).map_or(0, |r| r.failures);
        let delay = DIGEST_RETRY_BASE.saturating_mul(1 << failures.min(16)).min(DIGEST_RETRY_MAX);
        retries.insert(uid.to_string(), Retry { failures: failures + 1, next: Instant::now() + delay });
    }

    /// Forgets the retries of revisions that no longer exist.
    fn prune_retries(&self) {
        let mut retries = self.retries.lock().unwrap_or_else(PoisonError::into_inner);
        if retries.is_empty() {
            return;
        }
        let live: BTreeSet<String> = self.ctx.revisions.store().list().iter().map(|r| r.meta().uid.clone()).collect();
        retries.retain(|uid, _| live.contains(uid));
    }
}

fn error_policy(_: Arc<Service>, _: &Error, _: Arc<Shared>) -> Action {
    Action::backoff()
}

async fn reconcile(svc: Arc<Service>, shared: Arc<Shared>) -> Result<Action> {
    let start = std::time::Instant::now();
    let result = reconcile_service(&svc, &shared).await;
    shared.ctx.metrics.observe(CONTROLLER, start, result.is_ok());
    result
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

/// Which revision the current template has.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Plan {
    /// This revision was made from the current template.
    Current(String),
    /// None was: make one of this name.
    Create(String),
    /// The template names a revision that exists and was made from something else.
    NameTaken { name: String, message: String },
}

/// Decides which revision the current template has, from the Service's revisions (`owned`)
/// and every revision of its namespace (whose names a new revision must not take).
fn plan(svc: &Service, owned: &[Arc<Revision>], namespace: &[Arc<Revision>]) -> Plan {
    let template = template_of(svc);
    let service = &svc.meta().name;
    let given = template.metadata.as_ref().map(|m| m.name.clone()).unwrap_or_default();
    if !given.is_empty() {
        if let Some(rev) = owned.iter().find(|r| r.meta().name == given) {
            if made_from(rev, &template) {
                return Plan::Current(given);
            }
            let message = format!(
                "revision {given} exists with a different template and revisions cannot change: name the changed \
                 template anew in spec.template.metadata.name, or remove the name to have one generated"
            );
            return Plan::NameTaken { name: given, message };
        }
        if let Some(other) = namespace.iter().find(|r| r.meta().name == given) {
            let owner = other
                .meta()
                .labels
                .get(SERVICE_LABEL)
                .map_or_else(|| "is not a revision of this service".to_string(), |s| format!("belongs to service {s}"));
            let message = format!(
                "revision {given} already exists and {owner}: choose another name in spec.template.metadata.name"
            );
            return Plan::NameTaken { name: given, message };
        }
        return Plan::Create(given);
    }
    // The latest created revision, as the status says and as the revisions themselves say (the
    // status may not have been written after the last creation).
    let recorded = svc.status.as_ref().map(|s| s.latest_created_revision_name.as_str()).unwrap_or_default();
    let newest = owned.iter().max_by(|a, b| order_key(a).cmp(&order_key(b)));
    let current = owned.iter().filter(|r| r.meta().name == recorded).chain(newest).find(|r| made_from(r, &template));
    if let Some(rev) = current {
        return Plan::Current(rev.meta().name.clone());
    }
    // A template change always moves the generation; a revision made for this generation is
    // this template's, whatever the comparison says. This bounds the damage of a comparison
    // that goes wrong (say, a new default): one revision, not one per reconcile.
    if let Some(rev) = newest.filter(|r| order_key(r).0 == svc.meta().generation) {
        return Plan::Current(rev.meta().name.clone());
    }
    let highest = owned.iter().chain(namespace).filter_map(|r| revision_number(service, &r.meta().name)).max();
    Plan::Create(format!("{service}-{:05}", highest.unwrap_or(0) + 1))
}

/// The template of a Service, as stored (defaulted by the API server).
fn template_of(svc: &Service) -> RevisionTemplate {
    svc.spec.as_ref().and_then(|s| s.template.clone()).unwrap_or_default()
}

/// Whether `rev` was made from `template`: the same spec, and the same labels and annotations
/// apart from those the platform adds.
fn made_from(rev: &Revision, template: &RevisionTemplate) -> bool {
    let meta = template.metadata.clone().unwrap_or_default();
    let own_labels = |m: &BTreeMap<String, String>| strip(m, &[SERVICE_LABEL]);
    let own_annotations = |m: &BTreeMap<String, String>| strip(m, &[GENERATION_ANNOTATION]);
    rev.spec == template.spec
        && own_labels(&rev.meta().labels) == own_labels(&meta.labels)
        && own_annotations(&rev.meta().annotations) == own_annotations(&meta.annotations)
}

fn strip(map: &BTreeMap<String, String>, keys: &[&str]) -> BTreeMap<String, String> {
    map.iter().filter(|(k, _)| !keys.contains(&k.as_str())).map(|(k, v)| (k.clone(), v.clone())).collect()
}

/// N of a revision named `{service}-N` (digits only).
fn revision_number(service: &str, name: &str) -> Option<u64> {
    let digits = name.strip_prefix(service)?.strip_prefix('-')?;
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

/// Orders revisions by when they were made: the Service generation they were made for, then
/// creation time, then name.
fn order_key(rev: &Revision) -> (i64, i64, String) {
    let meta = rev.meta();
    let generation = meta.annotations.get(GENERATION_ANNOTATION).and_then(|g| g.parse().ok()).unwrap_or(0);
    let created = meta.creation_timestamp.map_or(0, |t| t.seconds);
    (generation, created, meta.name.clone())
}

fn sort_newest_first(revisions: &mut [Arc<Revision>]) {
    revisions.sort_by_key(|r| std::cmp::Reverse(order_key(r)));
}

/// The revisions among `revisions` that `svc` controls and that are not being deleted.
fn owned(svc: &Service, revisions: Vec<Arc<Revision>>) -> Vec<Arc<Revision>> {
    let uid = &svc.meta().uid;
    revisions
        .into_iter()
        .filter(|r| {
            r.meta().deletion_timestamp.is_none()
                && r.meta().owner_references.iter().any(|o| o.controller && o.kind == "Service" && &o.uid == uid)
        })
        .collect()
}

/// The Service's revisions as the API server has them now.
async fn listed_revisions(ctx: &Context, svc: &Service) -> Result<Vec<Arc<Revision>>> {
    let params = ListParams {
        namespace: svc.meta().namespace.clone(),
        label_selector: format!("{SERVICE_LABEL}={}", svc.meta().name),
        ..Default::default()
    };
    let list = ctx
        .client
        .list_all::<Revision>(&params)
        .await
        .map_err(|source| Error::ListRevisions { service: ObjectRef::from_obj(svc), source })?;
    Ok(owned(svc, list.items.into_iter().map(Arc::new).collect()))
}

/// Makes revision `name` from the Service's template, pinned to its image's digest when the
/// registry can say it.
async fn create_revision(shared: &Shared, svc: &Service, name: &str) -> Result<Revision> {
    let ctx = &shared.ctx;
    let template = template_of(svc);
    let spec = template.spec.clone().unwrap_or_default();
    // Resolved before the revision exists, so that the revision is pinned moments after it
    // appears: the revisions controller holds its instances back until then.
    let resolution = resolve(shared, &spec.containers).await;
    let template_meta = template.metadata.unwrap_or_default();
    let mut labels = template_meta.labels;
    labels.insert(SERVICE_LABEL.into(), svc.meta().name.clone());
    let mut annotations = template_meta.annotations;
    annotations.insert(GENERATION_ANNOTATION.into(), svc.meta().generation.to_string());
    let rev = Revision {
        metadata: Some(ObjectMeta {
            name: name.to_string(),
            namespace: svc.meta().namespace.clone(),
            labels,
            annotations,
            owner_references: vec![controller_ref(svc)],
            ..Default::default()
        }),
        spec: Some(spec),
        ..Default::default()
    };
    let revision = ObjectRef::new(svc.meta().namespace.clone(), name);
    let created = ctx.client.create(rev).await.map_err(|source| Error::CreateRevision { revision, source })?;
    info!(revision = name, "created a revision");
    ctx.events.record(svc, EventType::Normal, "RevisionCreated", &format!("created revision {name}")).await;
    match resolution {
        Some(resolution) => record_resolution(shared, &created, resolution).await,
        None => Ok(created),
    }
}

/// How a revision's image was pinned.
enum Resolution {
    /// To this reference (`repo@sha256:…`).
    Pinned(String),
    /// Not at all: the image is pulled never, so it is local to the nodes and no registry need
    /// know it.
    Local,
    Failed(digest::Error),
}

/// Pins the serving image of `containers`; `None` when there is no container.
async fn resolve(shared: &Shared, containers: &[Container]) -> Option<Resolution> {
    let container = &containers[digest::serving_container(containers)?];
    if container.image_pull_policy == "Never" {
        return Some(Resolution::Local);
    }
    Some(match shared.resolver.resolve(&container.image).await {
        Ok(pinned) => Resolution::Pinned(pinned),
        Err(e) => Resolution::Failed(e),
    })
}

/// The controller ownerReference of a Service's revisions.
fn controller_ref(svc: &Service) -> OwnerReference {
    OwnerReference {
        api_version: API_VERSION.into(),
        kind: Service::INFO.kind.into(),
        name: svc.meta().name.clone(),
        uid: svc.meta().uid.clone(),
        controller: true,
        block_owner_deletion: true,
    }
}

/// Resolves, again, the images of the revisions whose digest is not known yet and whose retry
/// is due; updates `revisions` with what was recorded. Returns when the next retry is due.
async fn resolve_pending_digests(shared: &Shared, revisions: &mut [Arc<Revision>]) -> Result<Option<Duration>> {
    let now = Instant::now();
    let mut next_retry: Option<Instant> = None;
    for rev in revisions.iter_mut() {
        let status = rev.status.clone().unwrap_or_default();
        if !status.image_digest.is_empty() || status::is_true(&status.conditions, IMAGE_RESOLVED) {
            continue;
        }
        if let Some(at) = shared.retry_at(&rev.meta().uid)
            && at > now
        {
            next_retry = Some(next_retry.map_or(at, |n| n.min(at)));
            continue;
        }
        let containers = rev.spec.as_ref().map(|s| s.containers.as_slice()).unwrap_or_default();
        let Some(resolution) = resolve(shared, containers).await else { continue };
        let recorded = record_resolution(shared, rev, resolution).await?;
        if let Some(at) = shared.retry_at(&recorded.meta().uid) {
            next_retry = Some(next_retry.map_or(at, |n| n.min(at)));
        }
        *rev = Arc::new(recorded);
    }
    Ok(next_retry.map(|at| at.saturating_duration_since(now)))
}

/// Records how resolving `rev`'s image went: `status.imageDigest` and condition
/// [`IMAGE_RESOLVED`]. Status is shared with the revisions controller, so a conflict is met by
/// reading the revision again and reapplying only these two fields.
async fn record_resolution(shared: &Shared, rev: &Revision, resolution: Resolution) -> Result<Revision> {
    let ctx = &shared.ctx;
    let revision = ObjectRef::from_obj(rev);
    shared.resolved(&rev.meta().uid, !matches!(resolution, Resolution::Failed(_)));
    let cond = match &resolution {
        Resolution::Pinned(pinned) => {
            debug!(%revision, %pinned, "pinned the revision's image");
            Cond::true_(IMAGE_RESOLVED)
        }
        Resolution::Local => Cond::new(
            IMAGE_RESOLVED,
            TRUE,
            "PullPolicyNever",
            "imagePullPolicy is Never: instances run the nodes' own image, as written",
        ),
        Resolution::Failed(e) => {
            let message = error_chain(e);
            warn!(%revision, %message, "cannot resolve the revision's image to a digest");
            let reason = if matches!(e, digest::Error::NotFound { .. }) { IMAGE_NOT_FOUND } else { CONTAINER_MISSING };
            Cond::new(IMAGE_RESOLVED, FALSE, reason, message)
        }
    };
    let mut current = rev.clone();
    for attempt in 1..=STATUS_ATTEMPTS {
        let mut status = current.status.clone().unwrap_or_default();
        if let Resolution::Pinned(pinned) = &resolution {
            status.image_digest.clone_from(pinned);
        }
        status::set(&mut status.conditions, &cond);
        if current.status.as_ref() == Some(&status) {
            return Ok(current);
        }
        let mut next = current.clone();
        next.status = Some(status);
        match ctx.client.update_status(next).await {
            Ok(written) => return Ok(written),
            Err(ClientError::Conflict(_)) if attempt < STATUS_ATTEMPTS => {
                current = ctx
                    .client
                    .get::<Revision>(&revision.namespace, &revision.name)
                    .await
                    .map_err(|source| Error::RecordDigest { revision: revision.clone(), source })?;
                if current.meta().uid != rev.meta().uid {
                    // Deleted and made again meanwhile: this resolution was for another object.
                    return Ok(current);
                }
            }
            Err(source) => return Err(Error::RecordDigest { revision, source }),
        }
    }
    Ok(current)
}

/// The Service's status as its revisions make it now. `revisions` are the Service's, newest
/// first.
fn desired_status(
    svc: &Service,
    revisions: &[Arc<Revision>],
    plan: &Plan,
    config: &crate::config::Config,
) -> ServiceStatus {
    let previous = svc.status.clone().unwrap_or_default();
    let (name, namespace) = (&svc.meta().name, &svc.meta().namespace);
    let by_name: BTreeMap<&str, &Revision> = revisions.iter().map(|r| (r.meta().name.as_str(), r.as_ref())).collect();
    let ready = |n: &str| by_name.get(n).map_or(UNKNOWN, |r| revision_ready(r).status);

    let latest_created = match plan {
        Plan::Current(n) => n.clone(),
        Plan::Create(_) | Plan::NameTaken { .. } => {
            let recorded = previous.latest_created_revision_name.as_str();
            if by_name.contains_key(recorded) {
                recorded.to_string()
            } else {
                revisions.first().map(|r| r.meta().name.clone()).unwrap_or_default()
            }
        }
    };
    // As Knative: the latest created revision once it is ready; until then the one that was
    // (traffic does not move back to an older revision because a newer one failed).
    let latest_ready = if ready(&latest_created) == TRUE {
        latest_created.clone()
    } else if ready(&previous.latest_ready_revision_name) == TRUE {
        previous.latest_ready_revision_name.clone()
    } else {
        revisions.iter().find(|r| revision_ready(r).status == TRUE).map(|r| r.meta().name.clone()).unwrap_or_default()
    };

    let configurations = match plan {
        Plan::NameTaken { message, .. } => Cond::new(CONFIGURATIONS_READY, FALSE, "RevisionNameTaken", message.clone()),
        _ => match by_name.get(latest_created.as_str()) {
            None => Cond::new(CONFIGURATIONS_READY, UNKNOWN, "RevisionMissing", "waiting for the revision to be made"),
            Some(rev) => {
                let cond = revision_ready(rev);
                match cond.status {
                    TRUE => Cond::true_(CONFIGURATIONS_READY),
                    FALSE => {
                        Cond::new(CONFIGURATIONS_READY, FALSE, "RevisionFailed", failed_message(&latest_created, &cond))
                    }
                    _ => Cond::new(
                        CONFIGURATIONS_READY,
                        UNKNOWN,
                        "Deploying",
                        format!("waiting for revision {latest_created} to become ready"),
                    ),
                }
            }
        },
    };

    let spec_traffic = svc.spec.as_ref().map(|s| s.traffic.clone()).unwrap_or_default();
    let mut traffic = Vec::new();
    let mut route_parts = Vec::new();
    for (i, t) in spec_traffic.iter().enumerate() {
        let latest = t.latest_revision.unwrap_or(t.revision_name.is_empty());
        let carries = t.percent.unwrap_or(0) > 0 || !t.tag.is_empty();
        let target = if latest { latest_ready.clone() } else { t.revision_name.clone() };
        let cond = if latest && target.is_empty() {
            // No revision has been ready yet: the route waits for the latest created one.
            match by_name.get(latest_created.as_str()).map(|r| revision_ready(r)) {
                Some(c) if c.status == FALSE => {
                    Cond::new(ROUTES_READY, FALSE, "RevisionFailed", failed_message(&latest_created, &c))
                }
                _ => Cond::new(ROUTES_READY, UNKNOWN, "RevisionNotReady", "waiting for a revision to become ready"),
            }
        } else if let Some(rev) = by_name.get(target.as_str()) {
            let c = revision_ready(rev);
            match c.status {
                _ if !carries => Cond::true_(ROUTES_READY),
                TRUE => Cond::true_(ROUTES_READY),
                FALSE => Cond::new(ROUTES_READY, FALSE, "RevisionFailed", failed_message(&target, &c)),
                _ => Cond::new(
                    ROUTES_READY,
                    UNKNOWN,
                    "RevisionNotReady",
                    format!("waiting for revision {target}, named in spec.traffic[{i}], to become ready"),
                ),
            }
        } else {
            Cond::new(
                ROUTES_READY,
                FALSE,
                "RevisionMissing",
                format!("spec.traffic[{i}] names revision {target}, which is not a revision of service {name}"),
            )
        };
        route_parts.push(cond);
        // Until some revision has been ready, the route points at the latest created one, so
        // that requests wait for it (the gateway holds them while it starts) or learn why it
        // cannot start, rather than finding no route at all.
        let target = if latest && target.is_empty() { latest_created.clone() } else { target };
        if !target.is_empty() && by_name.contains_key(target.as_str()) {
            let url =
                if t.tag.is_empty() { String::new() } else { config.url(&format!("{}-{name}", t.tag), namespace) };
            traffic.push(TrafficTarget {
                revision_name: target,
                latest_revision: Some(latest),
                percent: t.percent,
                tag: t.tag.clone(),
                url,
                configuration_name: String::new(),
            });
        }
    }
    let routes = status::summarize(ROUTES_READY, &route_parts.iter().collect::<Vec<_>>());
    let ready_cond = status::summarize(READY, &[&configurations, &routes]);

    let mut conditions = previous.conditions.clone();
    for c in [&configurations, &routes, &ready_cond] {
        status::set(&mut conditions, c);
    }
    let url = config.url(name, namespace);
    ServiceStatus {
        observed_generation: svc.meta().generation,
        conditions,
        url: url.clone(),
        latest_created_revision_name: latest_created,
        latest_ready_revision_name: latest_ready,
        traffic,
        address: Some(Address { url }),
    }
}

/// A revision's Ready condition as the revisions controller reports it (Unknown until then).
fn revision_ready(rev: &Revision) -> Cond {
    let conditions = rev.status.as_ref().map(|s| s.conditions.as_slice()).unwrap_or_default();
    match status::get(conditions, READY) {
        Some(c) if c.status == TRUE => Cond::true_(READY),
        Some(c) if c.status == FALSE => Cond::new(READY, FALSE, c.reason.clone(), c.message.clone()),
        Some(c) => Cond::new(READY, UNKNOWN, c.reason.clone(), c.message.clone()),
        None => Cond::new(READY, UNKNOWN, "", ""),
    }
}

fn failed_message(revision: &str, cond: &Cond) -> String {
    match (cond.reason.is_empty(), cond.message.is_empty()) {
        (_, true) => format!("revision {revision} failed ({})", cond.reason),
        (true, false) => format!("revision {revision} failed: {}", cond.message),
        (false, false) => format!("revision {revision} failed ({}): {}", cond.reason, cond.message),
    }
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

/// An error and its causes, for a condition message: `a: b: c`.
pub(crate) fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        out.push_str(": ");
        out.push_str(&s.to_string());
        source = s.source();
    }
    out
}

#[cfg(test)]
mod tests {
    use stratus_api::v1::{Container, EnvVar, RevisionSpec, ServiceSpec};

    use super::*;

    fn with_ready(mut rev: Revision, status_: &'static str, reason: &str, message: &str) -> Revision {
        let mut st = rev.status.take().unwrap_or_default();
        status::set(&mut st.conditions, &Cond::new(READY, status_, reason, message));
        rev.status = Some(st);
        rev
    }

    fn service(traffic: Vec<TrafficTarget>, template_name: &str, env: &str) -> Service {
        let container = Container {
            image: "127.0.0.1:5000/hello:v1".into(),
            env: vec![EnvVar { name: "GREETING".into(), value: env.into() }],
            ..Default::default()
        };
        let template = RevisionTemplate {
            metadata: Some(ObjectMeta { name: template_name.into(), ..Default::default() }),
            spec: Some(RevisionSpec { containers: vec![container], ..Default::default() }),
        };
        let mut svc = Service {
            spec: Some(ServiceSpec { template: Some(template), traffic, ..Default::default() }),
            ..Default::default()
        };
        let meta = svc.meta_mut();
        meta.name = "hello".into();
        meta.namespace = "default".into();
        meta.uid = "svc-uid".into();
        meta.generation = 3;
        svc
    }

    fn revision_of(svc: &Service, name: &str, generation: i64) -> Revision {
        let template = template_of(svc);
        let mut rev = Revision { spec: template.spec, ..Default::default() };
        let meta = rev.meta_mut();
        meta.name = name.into();
        meta.namespace = "default".into();
        meta.labels.insert(SERVICE_LABEL.into(), "hello".into());
        meta.annotations.insert(GENERATION_ANNOTATION.into(), generation.to_string());
        meta.owner_references.push(controller_ref(svc));
        rev
    }

    fn latest(percent: i32) -> TrafficTarget {
        TrafficTarget { latest_revision: Some(true), percent: Some(percent), ..Default::default() }
    }

    #[test]
    fn a_template_gets_one_revision_and_changes_get_the_next_number() {
        let v1 = service(vec![latest(100)], "", "one");
        assert_eq!(plan(&v1, &[], &[]), Plan::Create("hello-00001".into()));
        let r1 = Arc::new(revision_of(&v1, "hello-00001", 1));
        assert_eq!(
            plan(&v1, std::slice::from_ref(&r1), std::slice::from_ref(&r1)),
            Plan::Current("hello-00001".into())
        );

        let v2 = service(vec![latest(100)], "", "two");
        // Numbers in use by anyone in the namespace are skipped.
        let foreign = Arc::new(Revision {
            metadata: Some(ObjectMeta { name: "hello-00007".into(), ..Default::default() }),
            ..Default::default()
        });
        assert_eq!(plan(&v2, std::slice::from_ref(&r1), &[r1.clone(), foreign]), Plan::Create("hello-00008".into()));
        // A template changed back to an older one makes a new revision, as Knative does.
        let r2 = Arc::new(revision_of(&v2, "hello-00002", 2));
        assert_eq!(plan(&v1, &[r1.clone(), r2.clone()], &[]), Plan::Create("hello-00003".into()));
        // Never two revisions for one generation (the fixture's is 3).
        let r3 = Arc::new(revision_of(&v2, "hello-00003", 3));
        assert_eq!(plan(&v1, &[r1.clone(), r3], &[]), Plan::Current("hello-00003".into()));
        // Labels of the template count; the platform's own do not.
        let mut labelled = v2.clone();
        let meta = labelled.spec.as_mut().and_then(|s| s.template.as_mut()).and_then(|t| t.metadata.as_mut());
        meta.map(|m| m.labels.insert("team".into(), "a".into()));
        assert_eq!(plan(&labelled, &[r1, r2.clone()], &[]), Plan::Create("hello-00003".into()));
        assert!(made_from(&r2, &template_of(&v2)));
    }

    #[test]
    fn a_given_name_is_used_once_per_template() {
        let named = service(vec![latest(100)], "hello-blue", "one");
        assert_eq!(plan(&named, &[], &[]), Plan::Create("hello-blue".into()));
        let blue = Arc::new(revision_of(&named, "hello-blue", 1));
        assert_eq!(plan(&named, std::slice::from_ref(&blue), &[]), Plan::Current("hello-blue".into()));
        let changed = service(vec![latest(100)], "hello-blue", "two");
        let Plan::NameTaken { name, message } =
            plan(&changed, std::slice::from_ref(&blue), std::slice::from_ref(&blue))
        else {
            panic!("a changed template under a used name must be refused");
        };
        assert_eq!(name, "hello-blue");
        assert!(message.contains("hello-blue") && message.contains("spec.template.metadata.name"), "{message}");
        // A name used by another service's revision is refused too.
        let mut theirs = revision_of(&named, "hello-blue", 1);
        theirs.meta_mut().labels.insert(SERVICE_LABEL.into(), "other".into());
        let Plan::NameTaken { message, .. } = plan(&named, &[], &[Arc::new(theirs)]) else { panic!("taken") };
        assert!(message.contains("service other"), "{message}");
    }

    #[test]
    fn status_resolves_traffic_to_the_latest_ready_revision() {
        let config = crate::config::Config::default();
        let tagged = TrafficTarget {
            revision_name: "hello-00001".into(),
            latest_revision: Some(false),
            percent: Some(0),
            tag: "old".into(),
            ..Default::default()
        };
        let svc = service(vec![latest(100), tagged], "", "two");
        let r1 = Arc::new(with_ready(revision_of(&svc, "hello-00001", 1), TRUE, "", ""));
        let r2 = Arc::new(revision_of(&svc, "hello-00002", 2));
        let revisions = vec![r2.clone(), r1.clone()];

        // The new revision is not ready yet: traffic stays on the old one.
        let st = desired_status(&svc, &revisions, &Plan::Current("hello-00002".into()), &config);
        assert_eq!(st.latest_created_revision_name, "hello-00002");
        assert_eq!(st.latest_ready_revision_name, "hello-00001");
        assert_eq!(st.traffic.len(), 2);
        assert_eq!((st.traffic[0].revision_name.as_str(), st.traffic[0].percent), ("hello-00001", Some(100)));
        assert_eq!(st.traffic[1].url, "http://old-hello.default.localhost:8080");
        assert_eq!(st.url, "http://hello.default.localhost:8080");
        assert_eq!(status::status(&st.conditions, CONFIGURATIONS_READY), UNKNOWN);
        assert_eq!(status::status(&st.conditions, ROUTES_READY), TRUE);
        assert_eq!(status::status(&st.conditions, READY), UNKNOWN);

        // Ready: traffic moves.
        let r2 = Arc::new(with_ready((*r2).clone(), TRUE, "", ""));
        let st = desired_status(&svc, &[r2, r1.clone()], &Plan::Current("hello-00002".into()), &config);
        assert_eq!(st.traffic[0].revision_name, "hello-00002");
        assert_eq!(status::status(&st.conditions, READY), TRUE);

        // Failed: the Service says why, and traffic stays where it was.
        let bad =
            Arc::new(with_ready(revision_of(&svc, "hello-00002", 2), FALSE, "ContainerMissing", "x: manifest unknown"));
        let mut svc_before = svc.clone();
        svc_before.status =
            Some(ServiceStatus { latest_ready_revision_name: "hello-00001".into(), ..Default::default() });
        let st = desired_status(&svc_before, &[bad, r1], &Plan::Current("hello-00002".into()), &config);
        let ready = status::get(&st.conditions, READY).cloned().unwrap_or_default();
        assert_eq!((ready.status.as_str(), ready.reason.as_str()), (FALSE, "RevisionFailed"));
        assert!(ready.message.contains("manifest unknown"), "{}", ready.message);
        assert_eq!(st.traffic[0].revision_name, "hello-00001");
    }

    #[test]
    fn a_traffic_target_naming_no_revision_fails_the_route() {
        let config = crate::config::Config::default();
        let pinned = TrafficTarget {
            revision_name: "hello-09999".into(),
            latest_revision: Some(false),
            percent: Some(100),
            ..Default::default()
        };
        let svc = service(vec![pinned], "", "one");
        let r1 = Arc::new(with_ready(revision_of(&svc, "hello-00001", 1), TRUE, "", ""));
        let st = desired_status(&svc, &[r1], &Plan::Current("hello-00001".into()), &config);
        let routes = status::get(&st.conditions, ROUTES_READY).cloned().unwrap_or_default();
        assert_eq!((routes.status.as_str(), routes.reason.as_str()), (FALSE, "RevisionMissing"));
        assert!(routes.message.contains("hello-09999"));
        assert!(st.traffic.is_empty());
    }

    #[test]
    fn revision_numbers_are_read_from_names() {
        assert_eq!(revision_number("hello", "hello-00042"), Some(42));
        assert_eq!(revision_number("hello", "hello-blue"), None);
        assert_eq!(revision_number("hello", "hello-world-00001"), None);
        assert_eq!(revision_number("hello", "hello-"), None);
    }
}

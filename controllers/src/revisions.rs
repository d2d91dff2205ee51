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
//!   else [`crate::Config::progress_deadline`], 600 s as Knative) from its creation. Past it, it
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

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use stratus_api::capacity::Overcommit;
use stratus_api::v1::{Instance, InstanceSpec, ObjectMeta, OwnerReference, Revision, RevisionStatus};
use stratus_api::{API_VERSION, Resource, defaults, knative};
use stratus_client::runtime::{Action, Controller, ObjectRef};
use stratus_client::{Error as ClientError, ListParams};
use tracing::info;

use crate::config::Config;
use crate::context::Context;
use crate::digest;
use crate::events::EventType;
use crate::services::{CONTAINER_MISSING, IMAGE_NOT_FOUND, IMAGE_RESOLVED, SERVICE_LABEL};
use crate::status::{self, Cond, FALSE, READY, TRUE, UNKNOWN};

/// The label every Instance carries: the name of its Revision.
pub use stratus_api::wellknown::labels::REVISION as REVISION_LABEL;
/// How long a new revision's instances wait for its image to be pinned before they start with
/// the image as written.
pub const PIN_WAIT: Duration = Duration::from_secs(30);

/// The reason of a revision that did not become ready within its progress deadline (Knative's).
pub const PROGRESS_DEADLINE_EXCEEDED: &str = "ProgressDeadlineExceeded";

const CONTAINER_HEALTHY: &str = "ContainerHealthy";
const RESOURCES_AVAILABLE: &str = "ResourcesAvailable";
const CONTROLLER: &str = "revisions";
const WORKERS: usize = 4;
/// Random names tried for one new instance before giving up until the next reconcile.
const NAME_ATTEMPTS: usize = 3;
const NAME_SUFFIX: usize = 5;

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
        .run(reconcile, error_policy, WORKERS, shutdown)
        .await;
}

fn error_policy(_: Arc<Revision>, _: &Error, _: Arc<Context>) -> Action {
    Action::backoff()
}

async fn reconcile(rev: Arc<Revision>, ctx: Arc<Context>) -> Result<Action> {
    let start = std::time::Instant::now();
    let result = reconcile_revision(&rev, &ctx).await;
    ctx.metrics.observe(CONTROLLER, start, result.is_ok());
    result
}

/// One pass over a Revision: its instances, then its status. See the module documentation.
async fn reconcile_revision(rev: &Revision, ctx: &Context) -> Result<Action> {
    if rev.meta().deletion_timestamp.is_some() {
        // Its instances go with it through the garbage collector.
        return Ok(Action::await_change());
    }
    let now = SystemTime::now();
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
    if pin_wait.is_none() {
        for _ in 0..plan.create {
            now_active.push(Arc::new(create_instance(ctx, rev).await?));
        }
    }

    let mut next = desired_status(rev, &previous, desired, &now_active);
    if let Progress::Failed(failure) = &progress {
        status::set(&mut next.conditions, failure);
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
    Ok(match pin_wait.into_iter().chain(deadline_wait).min() {
        Some(wait) => Action::requeue(wait),
        None => Action::await_change(),
    })
}

/// The progress deadline of `rev`: its annotation, else the cluster's.
fn deadline(rev: &Revision, config: &Config) -> Duration {
    match knative::progress_deadline(&rev.meta().annotations) {
        Some(Ok(deadline)) => deadline,
        // Refused at admission; a revision stored before that rule gets the default.
        Some(Err(_)) | None => config.progress_deadline,
    }
}

/// Where a revision stands against its progress deadline.
#[derive(Clone, Debug, PartialEq)]
enum Progress {
    /// It has been ready, or no instance is wanted of it: no deadline applies.
    Done,
    /// Not ready yet, and the deadline is this far away.
    Within(Duration),
    /// Failed: it gets no instances, and this `Ready` condition.
    Failed(Cond),
}

/// Where `rev` (with `previous` status, `desired` instances wanted and `instances` as they are)
/// stands at `now` against `deadline`. See the module documentation.
fn progress(
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
        instances.iter().filter(|i| i.meta().deletion_timestamp.is_none() && !stopped(i)).collect();
    if ready_cond.is_some_and(|c| c.status == TRUE) || active.iter().any(|i| ready(i)) || desired <= 0 {
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

/// How much longer instances should wait for the services controller to pin `rev`'s image;
/// `None` when they need not (pinned, resolution failed, or waited long enough).
fn pin_wait(rev: &Revision, now: SystemTime) -> Option<Duration> {
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

/// The instances among `instances` that `rev` controls.
fn owned(rev: &Revision, instances: Vec<Arc<Instance>>) -> Vec<Arc<Instance>> {
    let (namespace, uid) = (&rev.meta().namespace, &rev.meta().uid);
    instances
        .into_iter()
        .filter(|i| {
            &i.meta().namespace == namespace
                && i.meta().owner_references.iter().any(|o| o.controller && o.kind == "Revision" && &o.uid == uid)
        })
        .collect()
}

/// The revision's instances as the API server has them now.
async fn listed_instances(ctx: &Context, rev: &Revision) -> Result<Vec<Arc<Instance>>> {
    let params = ListParams {
        namespace: rev.meta().namespace.clone(),
        label_selector: format!("{REVISION_LABEL}={}", rev.meta().name),
        ..Default::default()
    };
    let list = ctx
        .client
        .list_all::<Instance>(&params)
        .await
        .map_err(|source| Error::ListInstances { revision: ObjectRef::from_obj(rev), source })?;
    Ok(owned(rev, list.items.into_iter().map(Arc::new).collect()))
}

/// Why an instance is deleted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Why {
    /// It stopped for good (`Failed` or `Succeeded`): it is replaced.
    Stopped,
    /// More instances run than are wanted.
    Surplus,
    /// The revision failed: it holds nothing.
    RevisionFailed,
}

/// What to do with a revision's instances.
#[derive(Debug, Default)]
struct InstancePlan {
    delete: Vec<(Arc<Instance>, Why)>,
    /// The running (or starting) instances that stay.
    keep: Vec<Arc<Instance>>,
    create: usize,
}

impl InstancePlan {
    fn has_work(&self, may_create: bool) -> bool {
        !self.delete.is_empty() || (may_create && self.create > 0)
    }
}

/// Decides which instances go and how many are made so that `desired` run.
fn plan_instances(instances: &[Arc<Instance>], desired: i32) -> InstancePlan {
    let desired = usize::try_from(desired).unwrap_or(0);
    let mut plan = InstancePlan::default();
    for inst in instances {
        if inst.meta().deletion_timestamp.is_some() {
            continue;
        }
        if stopped(inst) {
            plan.delete.push((inst.clone(), Why::Stopped));
        } else {
            plan.keep.push(inst.clone());
        }
    }
    if plan.keep.len() > desired {
        // Least useful first: not on a node, then not ready, then the youngest.
        plan.keep.sort_by_key(|i| {
            let created = i.meta().creation_timestamp.map_or(0, |t| t.seconds);
            (scheduled(i), ready(i), std::cmp::Reverse(created), std::cmp::Reverse(i.meta().name.clone()))
        });
        let surplus = plan.keep.len() - desired;
        plan.delete.extend(plan.keep.drain(..surplus).map(|i| (i, Why::Surplus)));
    }
    plan.create = desired.saturating_sub(plan.keep.len());
    plan
}

fn stopped(inst: &Instance) -> bool {
    matches!(inst.status.as_ref().map(|s| s.phase.as_str()), Some("Failed" | "Succeeded"))
}

fn ready(inst: &Instance) -> bool {
    inst.status.as_ref().is_some_and(|s| s.ready)
}

fn scheduled(inst: &Instance) -> bool {
    inst.spec.as_ref().is_some_and(|s| !s.node_name.is_empty())
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

/// An instance of `rev` named `{revision}-{suffix}`: everything an agent needs to run it, with
/// the serving container's image pinned when the digest is known and the requests the
/// template leaves out derived from its limits by `policy`.
fn instance_for(rev: &Revision, suffix: &str, policy: &Overcommit) -> Instance {
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
        }),
        ..Default::default()
    }
}

fn random_suffix() -> String {
    const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";
    (0..NAME_SUFFIX).map(|_| char::from(ALPHABET[rand::random_range(0..ALPHABET.len())])).collect()
}

/// Why the instances of a revision cannot run, as one of them reports it.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Failure {
    /// The condition it makes False: ContainerHealthy or ResourcesAvailable.
    condition: &'static str,
    reason: String,
    message: String,
}

/// What an instance that is not ready says about why it cannot run, if it says anything.
fn failure_of(inst: &Instance) -> Option<Failure> {
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
        "CreateContainerError" | "RunContainerError" | "InvalidSpec" => (CONTAINER_HEALTHY, st.reason.clone()),
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
fn desired_status(rev: &Revision, previous: &RevisionStatus, desired: i32, active: &[Arc<Instance>]) -> RevisionStatus {
    let actual = i32::try_from(active.len()).unwrap_or(i32::MAX);
    let ready_count = i32::try_from(active.iter().filter(|i| ready(i)).count()).unwrap_or(i32::MAX);
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
    } else if active.iter().any(|i| scheduled(i)) {
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
#[allow(clippy::unwrap_used)]
mod tests {
    use stratus_api::v1::{Container, InstanceStatus, RevisionSpec, Scaling};

    use super::*;

    fn revision(min: i32) -> Revision {
        let spec = RevisionSpec {
            containers: vec![Container {
                image: "127.0.0.1:5000/hello:v1".into(),
                ports: vec![stratus_api::v1::ContainerPort { container_port: 8080, ..Default::default() }],
                ..Default::default()
            }],
            scaling: Some(Scaling { min_instances: Some(min), max_instances: Some(3), ..Default::default() }),
            container_concurrency: Some(10),
            ..Default::default()
        };
        let mut rev = Revision { spec: Some(spec), ..Default::default() };
        let meta = rev.meta_mut();
        meta.name = "hello-00001".into();
        meta.namespace = "default".into();
        meta.uid = "rev-uid".into();
        meta.generation = 1;
        meta.labels.insert(SERVICE_LABEL.into(), "hello".into());
        rev
    }

    fn instance(name: &str, created: i64, node: &str, st: InstanceStatus) -> Arc<Instance> {
        let mut inst = instance_for(&revision(0), "x", &Overcommit::default());
        inst.meta_mut().name = name.into();
        inst.meta_mut().creation_timestamp = Some(stratus_api::Timestamp { seconds: created, nanos: 0 });
        if let Some(spec) = inst.spec.as_mut() {
            spec.node_name = node.into();
        }
        inst.status = Some(st);
        Arc::new(inst)
    }

    fn running(ready: bool) -> InstanceStatus {
        InstanceStatus { phase: "Running".into(), ready, ..Default::default() }
    }

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

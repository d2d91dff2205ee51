//! The Instance reconciler: makes the engine's containers match the Instances bound to this node.
//!
//! Level-triggered: every call reads the Instance (from the informer cache) and the engine's
//! containers carrying the Instance's uid, and takes one step toward "one running container,
//! probed, whose state is in the Instance's status". It runs again on every change of the
//! Instance, on every change of the container's probe results, and every `sync_interval` while
//! a container runs (to notice one that died).
//!
//! Restarts are counted exactly once: `status.containerId` names the container the status
//! describes; an exited container is counted when it is the one named there, and the count
//! and the cleared `containerId` are written before the container is removed.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime};

use stratus_api::quantity::Quantity;
use stratus_api::v1::{Container, Instance, InstanceStatus, ResourceUsage, Secret};
use stratus_api::{Resource, defaults, serving_container};
use stratus_client::Client;
use stratus_client::runtime::{Action, ObjectRef};
use tokio::sync::mpsc;
use tracing::{debug, info, warn};

use stratus_client::usage::now_millis;

use crate::config::{AgentConfig, FINALIZER};
use crate::metering::{self, Meters, millis_of};
use crate::node::{now, set_condition, to_timestamp};
use crate::probe::{ProbeSpec, Prober};
use crate::runtime::{ContainerConfig, ContainerStatus, LogOptions, Runtime, Usage, labels};
use crate::security;

/// Why a reconcile failed; it is retried with backoff.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("talking to the API server failed: {0}")]
    Api(#[from] stratus_client::Error),
    #[error("the container engine failed: {0}")]
    Runtime(#[from] crate::runtime::Error),
}

/// Doubling delays per instance, for crash loops and failing pulls.
#[derive(Debug, Clone, Copy)]
struct Backoff {
    until: Instant,
    delay: Duration,
}

/// What every reconcile shares.
pub struct Context {
    pub client: Client,
    pub runtime: Arc<dyn Runtime>,
    pub cfg: AgentConfig,
    probers: Mutex<HashMap<String, Prober>>,
    backoff: Mutex<HashMap<String, Backoff>>,
    usage: Mutex<HashMap<String, (Usage, SystemTime)>>,
    /// When each serving instance being deleted left Endpoints (see `drain_delay`).
    draining: Mutex<HashMap<String, Instant>>,
    /// Each instance's billable time (see [`crate::metering`]).
    pub meters: Meters,
    /// The containers started with a startup CPU boost whose limit is back to the instance's
    /// (after a restart of the agent the set is empty, and the limit is set once more).
    unboosted: Mutex<HashSet<String>>,
    trigger: mpsc::UnboundedSender<ObjectRef>,
}

impl Context {
    /// A context, and the stream of keys its probes and samplers ask to reconcile.
    pub fn new(
        client: Client,
        runtime: Arc<dyn Runtime>,
        cfg: AgentConfig,
    ) -> (Arc<Context>, mpsc::UnboundedReceiver<ObjectRef>) {
        let (trigger, keys) = mpsc::unbounded_channel();
        let meters = match &cfg.metering {
            Some(m) => Meters::new(metering::first_window_start(
                metering::reported_until(m.spool.dir()),
                m.window_millis(),
                now_millis(),
            )),
            None => Meters::off(),
        };
        let ctx = Context {
            client,
            runtime,
            cfg,
            probers: Mutex::default(),
            backoff: Mutex::default(),
            usage: Mutex::default(),
            draining: Mutex::default(),
            meters,
            unboosted: Mutex::default(),
            trigger,
        };
        (Arc::new(ctx), keys)
    }

    /// Records a usage sample of a container and asks for its instance to be reconciled.
    pub fn record_usage(&self, container_id: &str, usage: Usage, key: ObjectRef) {
        lock(&self.usage).insert(container_id.to_string(), (usage, SystemTime::now()));
        let _ = self.trigger.send(key);
    }

    /// The ids of the containers being probed (the running ones this agent knows).
    pub fn probed_containers(&self) -> Vec<String> {
        lock(&self.probers).keys().cloned().collect()
    }

    fn forget_container(&self, id: &str) {
        lock(&self.probers).remove(id);
        lock(&self.usage).remove(id);
        lock(&self.unboosted).remove(id);
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // Nothing here can be left half-updated by a panic; keep going.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// What to do after an error: back off (the controller's per-key exponential backoff).
pub fn error_policy(_: Arc<Instance>, _: &Error, _: Arc<Context>) -> Action {
    Action::backoff()
}

/// One step toward the Instance's desired state. See the module documentation.
pub async fn reconcile(inst: Arc<Instance>, ctx: Arc<Context>) -> Result<Action, Error> {
    let meta = inst.meta();
    if inst.spec.as_ref().map(|s| s.node_name.as_str()) != Some(ctx.cfg.node_name.as_str()) {
        return Ok(Action::await_change());
    }
    let containers = ctx.runtime.list(&[(labels::INSTANCE_UID, meta.uid.as_str())]).await?;
    if meta.deletion_timestamp.is_some() {
        return terminate(&inst, containers, &ctx).await;
    }
    if !meta.finalizers.iter().any(|f| f == FINALIZER) {
        let mut with = (*inst).clone();
        with.meta_mut().finalizers.push(FINALIZER.to_string());
        ctx.client.update(with).await?;
        // The update comes back through the informer and triggers the next step.
        return Ok(Action::await_change());
    }
    let status = inst.status.clone().unwrap_or_default();
    // The container the status describes; failing that (a status lost, an adoption after a
    // restart of the agent), the newest one.
    let mut containers = containers;
    containers.sort_by_key(|c| c.started_at);
    let current_idx = containers
        .iter()
        .position(|c| !status.container_id.is_empty() && c.id == status.container_id)
        .or_else(|| containers.iter().rposition(|c| c.running));
    let current = current_idx.map(|i| containers.remove(i));
    for extra in containers {
        debug!(container = %extra.id, "removing a leftover container of the instance");
        ctx.runtime.remove(&extra.id).await?;
        ctx.forget_container(&extra.id);
        ctx.meters.ended(&inst, &extra.id, now_millis());
    }
    match current {
        Some(c) if c.running => running(&inst, status, c, &ctx).await,
        Some(c) => exited(&inst, status, c, &ctx).await,
        None => {
            let mut status = status;
            if !status.container_id.is_empty() {
                // Our container vanished (removed from outside): that is a restart too.
                ctx.forget_container(&status.container_id);
                ctx.meters.ended(&inst, &status.container_id, now_millis());
                status.restart_count += 1;
                status.container_id.clear();
                status.reason = "ContainerMissing".into();
                status.message = "the container disappeared; starting a new one".into();
            }
            start(&inst, status, &ctx).await
        }
    }
}

async fn start(inst: &Instance, mut status: InstanceStatus, ctx: &Arc<Context>) -> Result<Action, Error> {
    let uid = inst.meta().uid.clone();
    let backoff = lock(&ctx.backoff).get(&uid).copied();
    if let Some(b) = backoff {
        let now = Instant::now();
        if b.until > now {
            write_status(ctx, inst, status).await?;
            return Ok(Action::requeue(b.until - now));
        }
    }
    let spec = inst.spec.clone().unwrap_or_default();
    let Some(container) = serving_container(&spec.containers) else {
        status.phase = "Failed".into();
        status.reason = "InvalidSpec".into();
        status.message = "the instance has no container".into();
        write_status(ctx, inst, status).await?;
        return Ok(Action::await_change());
    };

    // The image, by the pull policy.
    let image = container.image.clone();
    let digest = match (container.image_pull_policy.as_str(), ctx.runtime.image_digest(&image).await?) {
        ("Never", Some(d)) | ("IfNotPresent" | "", Some(d)) => Ok(d),
        ("Never", None) => Err(format!("image {image} is not present and the pull policy is Never")),
        _ => ctx.runtime.pull(&image).await.map_err(|e| match e {
            crate::runtime::Error::Pull { message, .. } => message,
            other => other.to_string(),
        }),
    };
    let digest = match digest {
        Ok(d) => d,
        Err(message) => {
            let delay = bump(ctx, &uid, ctx.cfg.pull_backoff);
            let again = matches!(status.reason.as_str(), "ErrImagePull" | "ImagePullBackOff");
            status.phase = "Pending".into();
            status.ready = false;
            status.reason = if again { "ImagePullBackOff" } else { "ErrImagePull" }.into();
            status.message = format!("{message} (retrying in {})", human(delay));
            warn!(image = %image, %message, "pulling the image failed");
            write_status(ctx, inst, status).await?;
            return Ok(Action::requeue(delay));
        }
    };

    // Variables from Secrets are read now, as the container starts, and go nowhere but into it.
    let secrets = match secret_env(&ctx.client, &inst.meta().namespace, container).await? {
        Ok(values) => values,
        Err(message) => return failed_to_run(ctx, inst, status, "CreateContainerConfigError", message).await,
    };
    let mut config = container_config(inst, container, &ctx.cfg, status.restart_count, &secrets);
    if spec.startup_cpu_boost == Some(true) {
        config.nano_cpus = boosted_nano_cpus(config.nano_cpus, node_nano_cpus());
    }
    let sc = container.security_context.as_ref();
    match security::identity(ctx.runtime.as_ref(), &image, sc, ctx.cfg.require_non_root).await {
        Ok(identity) => (config.user, config.cap_add) = (identity.user, identity.cap_add),
        Err(security::Error::Refused(message)) => {
            return failed_to_run(ctx, inst, status, security::REFUSED_REASON, message).await;
        }
        Err(security::Error::Runtime(e)) => return Err(e.into()),
    }
    let created_at = now_millis();
    let id = match ctx.runtime.create(&config).await {
        Ok(id) => id,
        Err(e) => return failed_to_run(ctx, inst, status, "CreateContainerError", e.to_string()).await,
    };
    if let Err(e) = ctx.runtime.start(&id).await {
        let _ = ctx.runtime.remove(&id).await;
        return failed_to_run(ctx, inst, status, "RunContainerError", e.to_string()).await;
    }
    let state = ctx.runtime.inspect(&id).await?.unwrap_or_default();
    info!(container = %id, image = %image, "started the container");
    ctx.meters.started(inst, &id, created_at, state.started_at.map_or_else(now_millis, millis_of));
    status.phase = "Running".into();
    status.ready = false;
    status.container_id = id;
    status.image_digest = digest;
    status.address = state.host_port.map(|p| format!("{}:{p}", ctx.cfg.publish_address())).unwrap_or_default();
    // Advertised once a probe has reached it from here (see `probe::ProbeStatus::direct`).
    status.container_address.clear();
    status.started_at = Some(to_timestamp(state.started_at.unwrap_or_else(SystemTime::now)));
    status.finished_at = None;
    status.reason = "ContainerCreating".into();
    status.message = "waiting for the readiness probe".into();
    set_condition(&mut status.conditions, "Ready", "False", "ContainerCreating", "waiting for the readiness probe");
    let updated = write_status(ctx, inst, status).await?;
    if let Some(state) = ctx.runtime.inspect(&updated.status.clone().unwrap_or_default().container_id).await? {
        ensure_prober(ctx, &updated, &state);
    }
    Ok(Action::requeue(ctx.cfg.sync_interval))
}

async fn failed_to_run(
    ctx: &Arc<Context>,
    inst: &Instance,
    mut status: InstanceStatus,
    reason: &str,
    message: String,
) -> Result<Action, Error> {
    let delay = bump(ctx, &inst.meta().uid, ctx.cfg.crash_backoff);
    warn!(%reason, %message, "the container could not be started");
    status.phase = "Pending".into();
    status.ready = false;
    status.reason = reason.to_string();
    status.message = format!("{message} (retrying in {})", human(delay));
    set_condition(&mut status.conditions, "Ready", "False", reason, &message);
    write_status(ctx, inst, status).await?;
    Ok(Action::requeue(delay))
}

async fn running(
    inst: &Instance,
    mut status: InstanceStatus,
    c: ContainerStatus,
    ctx: &Arc<Context>,
) -> Result<Action, Error> {
    ctx.meters.adopt(inst, &c, status.ready);
    let probe = ensure_prober(ctx, inst, &c);
    if probe.failed {
        // A liveness (or startup) failure: restart, as Kubernetes does.
        info!(container = %c.id, reason = %probe.message, "restarting the container");
        let grace = grace_period(inst);
        let stopping = now_millis();
        ctx.meters.stopping(inst, &c.id, stopping);
        ctx.runtime.stop(&c.id, grace).await?;
        ctx.meters.ended(inst, &c.id, exited_at(ctx, &c.id, stopping).await?);
        let delay = bump(ctx, &inst.meta().uid, ctx.cfg.crash_backoff);
        status.restart_count += 1;
        status.container_id.clear();
        status.ready = false;
        status.reason = "CrashLoopBackOff".into();
        status.message = format!("{}; back-off {} restarting the container", probe.message, human(delay));
        status.finished_at = Some(now());
        set_condition(&mut status.conditions, "Ready", "False", "CrashLoopBackOff", &status.message.clone());
        write_status(ctx, inst, status).await?;
        ctx.runtime.remove(&c.id).await?;
        ctx.forget_container(&c.id);
        return Ok(Action::requeue(delay));
    }
    let ready = probe.started && probe.ready;
    // A container that has run a while without crashing earns a fresh backoff.
    let long_enough = c.started_at.and_then(|t| t.elapsed().ok()).is_some_and(|d| d > Duration::from_secs(60));
    if ready && long_enough {
        lock(&ctx.backoff).remove(&inst.meta().uid);
    }
    status.phase = "Running".into();
    status.ready = ready;
    status.container_id = c.id.clone();
    if let Some(port) = c.host_port {
        status.address = format!("{}:{port}", ctx.cfg.publish_address());
    }
    status.container_address = container_address(ctx, inst, c.ip.filter(|_| probe.direct));
    if let Some(t) = c.started_at {
        status.started_at = Some(to_timestamp(t));
    }
    status.exit_code = None;
    if ready {
        ctx.meters.ready(inst, now_millis());
        status.reason.clear();
        status.message.clear();
        set_condition(&mut status.conditions, "Ready", "True", "", "");
    } else {
        status.reason = "ContainersNotReady".into();
        status.message =
            if probe.message.is_empty() { "waiting for the readiness probe".into() } else { probe.message };
        set_condition(&mut status.conditions, "Ready", "False", "ContainersNotReady", &status.message.clone());
    }
    if let Some((usage, at)) = lock(&ctx.usage).get(&c.id).copied() {
        status.usage = Some(ResourceUsage {
            cpu_millis: usage.cpu_millis,
            memory_bytes: usage.memory_bytes,
            sampled_at: Some(to_timestamp(at)),
        });
    }
    write_status(ctx, inst, status).await?;
    if ready {
        end_startup_boost(ctx, inst, &c.id).await;
    }
    Ok(Action::requeue(ctx.cfg.sync_interval))
}

/// The CPU limit of a container started with the startup CPU boost, in nano-CPUs: twice its
/// own `limit`, at least one CPU, at most `node` (the engine refuses more than the host has).
/// Without a limit (0) there is nothing to boost.
pub fn boosted_nano_cpus(limit: i64, node: i64) -> i64 {
    const ONE_CPU: i64 = 1_000_000_000;
    if limit <= 0 {
        return limit;
    }
    let boosted = limit.saturating_mul(2).max(ONE_CPU);
    if node > 0 { boosted.min(node).max(limit) } else { boosted }
}

/// The CPUs this node has, in nano-CPUs (0 when unknown).
fn node_nano_cpus() -> i64 {
    std::thread::available_parallelism()
        .map_or(0, |n| i64::try_from(n.get()).unwrap_or(0).saturating_mul(1_000_000_000))
}

/// Once an instance started with the startup CPU boost is ready, its container gets its own
/// CPU limit back, without a restart. A failure is logged and tried again at the next sync.
async fn end_startup_boost(ctx: &Context, inst: &Instance, container_id: &str) {
    let spec = inst.spec.as_ref();
    if spec.and_then(|s| s.startup_cpu_boost) != Some(true) || lock(&ctx.unboosted).contains(container_id) {
        return;
    }
    let limit = spec.and_then(|s| serving_container(&s.containers)).map_or(0, cpu_limit_nanos);
    if limit <= 0 {
        return;
    }
    match ctx.runtime.update_cpu(container_id, limit).await {
        Ok(()) => {
            info!(container = %container_id, cpu_limit_nanos = limit, "ready: the startup CPU boost ends");
            lock(&ctx.unboosted).insert(container_id.to_string());
        }
        Err(e) => warn!(container = %container_id, error = %e, "could not end the startup CPU boost; retrying"),
    }
}

/// A container's CPU limit in nano-CPUs; 0 when it has none.
fn cpu_limit_nanos(c: &Container) -> i64 {
    let limit = c.resources.as_ref().and_then(|r| r.limits.get("cpu")).and_then(|v| v.parse::<Quantity>().ok());
    limit.map_or(0, |q| i64::try_from(q.nanos()).unwrap_or(i64::MAX))
}

async fn exited(
    inst: &Instance,
    mut status: InstanceStatus,
    c: ContainerStatus,
    ctx: &Arc<Context>,
) -> Result<Action, Error> {
    ctx.forget_container(&c.id);
    ctx.meters.ended(inst, &c.id, c.finished_at.map_or_else(now_millis, millis_of));
    if status.container_id != c.id {
        // Counted already (or never ours to count): only clean up.
        ctx.runtime.remove(&c.id).await?;
        return Ok(Action::requeue(Duration::ZERO));
    }
    let code = c.exit_code.unwrap_or(-1);
    let last_line = last_log_line(ctx, &c.id).await;
    let delay = bump(ctx, &inst.meta().uid, ctx.cfg.crash_backoff);
    status.restart_count += 1;
    status.container_id.clear();
    status.ready = false;
    status.exit_code = Some(i32::try_from(code).unwrap_or(-1));
    status.finished_at = Some(c.finished_at.map(to_timestamp).unwrap_or_else(now));
    let why = if c.oom_killed {
        status.reason = "OOMKilled".into();
        let limit = memory_limit(inst).map(|q| format!(" of {q}")).unwrap_or_default();
        format!("the container exceeded its memory limit{limit} and was killed (exit code {code})")
    } else {
        status.reason = "CrashLoopBackOff".into();
        match &last_line {
            Some(line) => format!("the container exited with code {code}; its last line: {line}"),
            None => format!("the container exited with code {code}"),
        }
    };
    status.message = format!("{why}; back-off {} restarting it", human(delay));
    set_condition(&mut status.conditions, "Ready", "False", &status.reason.clone(), &status.message.clone());
    info!(container = %c.id, code, oom = c.oom_killed, "the container exited");
    write_status(ctx, inst, status).await?;
    ctx.runtime.remove(&c.id).await?;
    Ok(Action::requeue(delay))
}

/// Stops and removes the instance's containers gracefully, records the end, and lets the
/// Instance go by removing the agent's finalizer.
async fn terminate(inst: &Instance, containers: Vec<ContainerStatus>, ctx: &Arc<Context>) -> Result<Action, Error> {
    let mut status = inst.status.clone().unwrap_or_default();
    let mut current = inst.clone();
    let uid = inst.meta().uid.clone();
    if status.ready || status.reason != "Terminating" {
        // First out of Endpoints, then, once gateways had time to notice, stopped.
        if status.ready && containers.iter().any(|c| c.running) {
            lock(&ctx.draining).insert(uid.clone(), Instant::now());
        }
        status.ready = false;
        status.reason = "Terminating".into();
        status.message = "the instance is being deleted".into();
        set_condition(&mut status.conditions, "Ready", "False", "Terminating", "the instance is being deleted");
        current = write_status(ctx, &current, status.clone()).await?;
    }
    let since = lock(&ctx.draining).get(&uid).copied();
    if let Some(since) = since {
        let waited = since.elapsed();
        if waited < ctx.cfg.drain_delay {
            return Ok(Action::requeue(ctx.cfg.drain_delay - waited));
        }
    }
    let grace = grace_period(inst);
    let mut exit_code = status.exit_code;
    let was_ready = inst.status.as_ref().is_some_and(|s| s.ready);
    for c in &containers {
        let mut ended = None;
        if c.running {
            // One the agent found running only now (it was deleted while no agent ran).
            ctx.meters.adopt(inst, c, was_ready);
            info!(container = %c.id, ?grace, "stopping the container");
            let stopping = now_millis();
            ctx.meters.stopping(inst, &c.id, stopping);
            ctx.runtime.stop(&c.id, grace).await?;
            ended = Some(exited_at(ctx, &c.id, stopping).await?);
        }
        if c.id == status.container_id {
            exit_code =
                ctx.runtime.inspect(&c.id).await?.and_then(|s| s.exit_code).map(|e| i32::try_from(e).unwrap_or(-1));
        }
        ctx.runtime.remove(&c.id).await?;
        ctx.forget_container(&c.id);
        ctx.meters.ended(inst, &c.id, ended.unwrap_or_else(now_millis));
    }
    lock(&ctx.backoff).remove(&uid);
    lock(&ctx.draining).remove(&uid);
    if current.meta().finalizers.iter().any(|f| f == FINALIZER) {
        if !status.container_id.is_empty() || status.finished_at.is_none() {
            status.container_id.clear();
            status.exit_code = exit_code;
            status.phase = if matches!(exit_code, Some(0) | None) { "Succeeded" } else { "Failed" }.into();
            if status.started_at.is_some() {
                status.finished_at = Some(now());
            }
            status.message = "the container was stopped".into();
            current = write_status(ctx, &current, status).await?;
        }
        current.meta_mut().finalizers.retain(|f| f != FINALIZER);
        match ctx.client.update(current).await {
            Ok(_) | Err(stratus_client::Error::NotFound(_)) => {}
            Err(e) => return Err(e.into()),
        }
        info!("the instance's container is gone; released the instance");
    }
    ctx.meters.removed(&uid);
    Ok(Action::await_change())
}

/// Starts probing `c` unless it is probed already; returns what the probes found so far.
fn ensure_prober(ctx: &Arc<Context>, inst: &Instance, c: &ContainerStatus) -> crate::probe::ProbeStatus {
    let mut probers = lock(&ctx.probers);
    if let Some(p) = probers.get(&c.id) {
        return p.status();
    }
    let Some(port) = c.host_port else { return Default::default() };
    let spec = inst.spec.clone().unwrap_or_default();
    let container = serving_container(&spec.containers).cloned().unwrap_or_default();
    let serving_port = serving_port(&container);
    let resolve = |p: &Option<stratus_api::v1::Probe>, field: &str| -> Result<Option<ProbeSpec>, String> {
        p.as_ref().map(|p| ProbeSpec::from_api(p, serving_port, field)).transpose()
    };
    let specs = (|| -> Result<_, String> {
        Ok((
            resolve(&container.startup_probe, "startupProbe")?,
            resolve(&container.readiness_probe, "readinessProbe")?.unwrap_or_else(ProbeSpec::default_readiness),
            resolve(&container.liveness_probe, "livenessProbe")?,
        ))
    })();
    let (startup, readiness, liveness) = match specs {
        Ok(s) => s,
        Err(message) => {
            // An unprobeable spec is reported, and the container is treated as never ready.
            warn!(%message, "cannot probe the container");
            (None, ProbeSpec::default_readiness(), None)
        }
    };
    let key = ObjectRef::new(inst.meta().namespace.clone(), inst.meta().name.clone());
    let trigger = ctx.trigger.clone();
    let address = format!("{}:{port}", ctx.cfg.publish_address());
    let direct = (ctx.cfg.probe_container_address || ctx.cfg.advertise_container_address)
        .then_some(c.ip)
        .flatten()
        .map(|ip| std::net::SocketAddr::new(ip, u16::try_from(serving_port).unwrap_or(8080)));
    let prober = Prober::start(address, direct, startup, readiness, liveness, move || {
        let _ = trigger.send(key.clone());
    });
    let status = prober.status();
    probers.insert(c.id.clone(), prober);
    status
}

/// Writes `status` unless it is what the Instance already says; returns the Instance as stored.
async fn write_status(ctx: &Context, inst: &Instance, status: InstanceStatus) -> Result<Instance, Error> {
    if inst.status.as_ref() == Some(&status) {
        return Ok(inst.clone());
    }
    let mut next = inst.clone();
    next.status = Some(status);
    Ok(ctx.client.update_status(next).await?)
}

/// The next delay of a doubling backoff for `uid`, starting at `base`, capped at `max`.
fn bump(ctx: &Context, uid: &str, (base, max): (Duration, Duration)) -> Duration {
    let mut map = lock(&ctx.backoff);
    let delay = match map.get(uid) {
        Some(b) => (b.delay * 2).min(max),
        None => base,
    };
    map.insert(uid.to_string(), Backoff { until: Instant::now() + delay, delay });
    delay
}

async fn last_log_line(ctx: &Context, id: &str) -> Option<String> {
    use futures::StreamExt;
    let mut stream =
        ctx.runtime.logs(id, LogOptions { follow: false, tail: Some(1), ..Default::default() }).await.ok()?;
    let mut last = None;
    while let Some(Ok(line)) = stream.next().await {
        if !line.line.trim().is_empty() {
            last = Some(line.line);
        }
    }
    last
}

/// `20s`, `2m40s` or `200ms`, as people read delays.
fn human(d: Duration) -> String {
    let secs = d.as_secs();
    match secs {
        0 => format!("{}ms", d.as_millis()),
        1..60 => format!("{secs}s"),
        _ if secs.is_multiple_of(60) => format!("{}m", secs / 60),
        _ => format!("{}m{}s", secs / 60, secs % 60),
    }
}

fn grace_period(inst: &Instance) -> Duration {
    let secs = inst.spec.as_ref().map(|s| s.termination_grace_period_seconds).filter(|s| *s > 0);
    Duration::from_secs(u64::try_from(secs.unwrap_or(defaults::TERMINATION_GRACE_PERIOD_SECONDS)).unwrap_or(10))
}

/// Where gateways may reach `inst`'s serving port on its own network (`ip`, given once a probe
/// reached it from this host, whose network gateways here share), when this agent advertises
/// container addresses; empty otherwise.
fn container_address(ctx: &Context, inst: &Instance, ip: Option<std::net::IpAddr>) -> String {
    // IPv4 only, as the API takes container addresses.
    let Some(ip) = ip.filter(|ip| ctx.cfg.advertise_container_address && ip.is_ipv4()) else {
        return String::new();
    };
    let spec = inst.spec.as_ref();
    let port = spec.and_then(|s| serving_container(&s.containers)).map_or(defaults::PORT, serving_port);
    match u16::try_from(port) {
        Ok(port) => std::net::SocketAddr::new(ip, port).to_string(),
        Err(_) => String::new(),
    }
}

fn serving_port(c: &Container) -> i32 {
    c.ports.first().map(|p| p.container_port).filter(|p| *p > 0).unwrap_or(defaults::PORT)
}

fn memory_limit(inst: &Instance) -> Option<Quantity> {
    let spec = inst.spec.as_ref()?;
    let c = serving_container(&spec.containers)?;
    c.resources.as_ref()?.limits.get("memory")?.parse().ok()
}

/// The values of `c`'s variables taken from Secrets (`valueFrom.secretKeyRef`), by variable
/// name, read through the API. The inner error says which Secret or key is missing when one a
/// variable needs is (an optional reference that is missing leaves its variable out); the
/// outer one is a failure to reach the API, retried.
async fn secret_env(
    client: &Client,
    namespace: &str,
    c: &Container,
) -> Result<Result<HashMap<String, String>, String>, Error> {
    let mut values = HashMap::new();
    let mut read: HashMap<String, Option<Secret>> = HashMap::new();
    for var in &c.env {
        let Some(r) = var.value_from.as_ref().and_then(|f| f.secret_key_ref.as_ref()) else { continue };
        if !read.contains_key(&r.name) {
            let secret = match client.get::<Secret>(namespace, &r.name).await {
                Ok(s) => Some(s),
                Err(stratus_client::Error::NotFound(_)) => None,
                Err(e) => return Err(e.into()),
            };
            read.insert(r.name.clone(), secret);
        }
        let optional = r.optional.unwrap_or(false);
        match read.get(&r.name).and_then(Option::as_ref).map(|s| s.data.get(&r.key)) {
            Some(Some(value)) => {
                values.insert(var.name.clone(), value.clone());
            }
            _ if optional => {}
            Some(None) => {
                return Ok(Err(format!(
                    "key {:?} of secret {:?} is not there (variable {}): add it, or mark the reference optional",
                    r.key, r.name, var.name
                )));
            }
            None => {
                return Ok(Err(format!(
                    "secret {:?} not found in namespace {namespace:?} (variable {}): create it, or mark the reference optional",
                    r.name, var.name
                )));
            }
        }
    }
    Ok(Ok(values))
}

/// The engine's container for `c`, with the runtime contract of Cloud Run and Knative.
/// `secrets` holds the values of the variables taken from Secrets (see [`secret_env`]); a
/// variable taken from a Secret but not in it is left out (an optional one that is missing).
pub fn container_config(
    inst: &Instance,
    c: &Container,
    cfg: &AgentConfig,
    restarts: i32,
    secrets: &HashMap<String, String>,
) -> ContainerConfig {
    let meta = inst.meta();
    let spec = inst.spec.clone().unwrap_or_default();
    let port = serving_port(c);
    let limits = c.resources.as_ref().map(|r| r.limits.clone()).unwrap_or_default();
    let quantity = |k: &str| limits.get(k).and_then(|v| v.parse::<Quantity>().ok());
    let nano_cpus = cpu_limit_nanos(c);
    let memory_bytes = quantity("memory").map(|q| i64::try_from(q.ceil_units()).unwrap_or(i64::MAX)).unwrap_or(0);
    let mut env = vec![
        ("PORT".to_string(), port.to_string()),
        ("K_SERVICE".to_string(), spec.service_name.clone()),
        ("K_CONFIGURATION".to_string(), spec.service_name.clone()),
        ("K_REVISION".to_string(), spec.revision_name.clone()),
    ];
    env.extend(c.env.iter().filter_map(|e| match &e.value_from {
        None => Some((e.name.clone(), e.value.clone())),
        Some(_) => secrets.get(&e.name).map(|v| (e.name.clone(), v.clone())),
    }));
    let sc = c.security_context.clone().unwrap_or_default();
    let labels = [
        (labels::NODE, cfg.node_name.clone()),
        (labels::INSTANCE_UID, meta.uid.clone()),
        (labels::NAMESPACE, meta.namespace.clone()),
        (labels::INSTANCE, meta.name.clone()),
        (labels::REVISION, spec.revision_name.clone()),
        (labels::SERVICE, spec.service_name.clone()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect();
    let short_uid: String = meta.uid.chars().filter(char::is_ascii_alphanumeric).take(8).collect();
    let name: String = format!("stratus-{}-{}-{short_uid}-{restarts}", meta.namespace, meta.name)
        .chars()
        .map(|ch| if ch.is_ascii_alphanumeric() || "_.-".contains(ch) { ch } else { '-' })
        .take(200)
        .collect();
    ContainerConfig {
        name,
        image: c.image.clone(),
        command: c.command.clone(),
        args: c.args.clone(),
        working_dir: c.working_dir.clone(),
        env,
        labels,
        port: u16::try_from(port).unwrap_or(8080),
        host_ip: cfg.publish_address().to_owned(),
        network: cfg.instance_network.clone(),
        nano_cpus,
        memory_bytes,
        pids_limit: cfg.pids_limit,
        // Who it runs as and what it may do are decided against the image: `security::identity`.
        cap_add: Vec::new(),
        user: String::new(),
        read_only_root_fs: sc.read_only_root_filesystem.unwrap_or(false),
        // /tmp lives in memory, so it can never hold more than the memory limit allows.
        tmp_size_bytes: if memory_bytes > 0 { memory_bytes } else { 64 << 20 },
    }
}

/// When container `id`, stopped by the agent from `stopping` on, exited: the engine's
/// `FinishedAt`, kept between `stopping` and now (an engine's clock or a missing time must not
/// bill less than the stop took, nor more than it has taken).
async fn exited_at(ctx: &Context, id: &str, stopping: i64) -> Result<i64, Error> {
    let finished = ctx.runtime.inspect(id).await?.and_then(|s| s.finished_at).map(millis_of);
    let now = now_millis();
    Ok(finished.map_or(now, |f| f.clamp(stopping, now.max(stopping))))
}

#[cfg(test)]
mod tests {
    use super::boosted_nano_cpus;

    const CPU: i64 = 1_000_000_000;

    #[test]
    fn the_boost_doubles_the_limit_to_at_least_one_cpu_within_the_node() {
        assert_eq!(boosted_nano_cpus(CPU / 10, 4 * CPU), CPU, "100m starts with a whole CPU");
        assert_eq!(boosted_nano_cpus(CPU, 4 * CPU), 2 * CPU);
        assert_eq!(boosted_nano_cpus(3 * CPU, 4 * CPU), 4 * CPU, "never more than the node has");
        assert_eq!(boosted_nano_cpus(6 * CPU, 4 * CPU), 6 * CPU, "never less than the limit");
        assert_eq!(boosted_nano_cpus(CPU, 0), 2 * CPU, "a node of unknown size");
        assert_eq!(boosted_nano_cpus(0, 4 * CPU), 0, "no limit: nothing to boost");
    }
}

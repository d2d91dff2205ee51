//! The agent as a whole: node status and heartbeat, the Instance controller, usage sampling,
//! garbage collection of unclaimed containers, and the agent's own server (metrics, logs).

use std::collections::HashSet;
use std::sync::Arc;

use futures::FutureExt;
use stratus_api::Resource;
use stratus_api::v1::Instance;
use stratus_client::runtime::{Informer, ObjectRef};
use stratus_client::{Client, ListParams};
use tokio::sync::watch;
use tokio_stream::wrappers::UnboundedReceiverStream;
use tracing::{error, info, warn};

use crate::config::AgentConfig;
use crate::instance::{self, Context};
use crate::metrics::{ContainerLabels, Metrics};
use crate::runtime::{Runtime, labels};

/// How many Instances are reconciled at once.
const WORKERS: usize = 4;

/// Runs the agent until `shutdown` resolves. Containers keep running when the agent stops:
/// the next agent adopts them. `listener`, when given, serves `/metrics`, `/healthz` and the
/// agent's gRPC service.
pub async fn run(
    cfg: AgentConfig,
    client: Client,
    runtime: Arc<dyn Runtime>,
    listener: Option<tokio::net::TcpListener>,
    shutdown: impl Future<Output = ()> + Send,
) {
    info!(node = %cfg.node_name, "starting the node agent");
    let (stop_tx, stop) = watch::channel(false);
    let (ready_tx, _ready) = watch::channel(false);
    let metrics = Arc::new(Metrics::new(cfg.metering.as_ref().map(|m| m.spool.metrics())));

    let params = ListParams { field_selector: format!("spec.nodeName={}", cfg.node_name), ..Default::default() };
    let informer = Informer::<Instance>::spawn(client.clone(), params);
    let (ctx, keys) = Context::new(client.clone(), runtime.clone(), cfg.clone());

    let mut tasks = tokio::task::JoinSet::new();
    tasks.spawn(crate::node::run_status(client.clone(), runtime.clone(), cfg.clone(), ready_tx, stop.clone()));
    tasks.spawn(crate::node::run_lease(client.clone(), cfg.clone(), stop.clone()));
    tasks.spawn(sample_usage(informer.clone(), ctx.clone(), metrics.clone(), stop.clone()));
    tasks.spawn(collect_garbage(informer.clone(), runtime.clone(), cfg.clone(), stop.clone()));
    if let Some(metering) = cfg.metering.clone() {
        let mut stopped = stop.clone();
        tasks.spawn(Arc::clone(&metering.spool).run(client.clone(), async move {
            let _ = stopped.wait_for(|s| *s).await;
        }));
        tasks.spawn(meter_usage(informer.clone(), ctx.clone(), metering, stop.clone()));
    }
    if let Some(listener) = listener {
        // Over TLS the API server is known by its certificate; in plain HTTP, by its token.
        let (callers, tls) = match &cfg.tls {
            Some(tls) => match crate::server::tls_config(tls) {
                Ok(config) => (crate::server::Callers::ApiServerCertificate, Some(config)),
                Err(e) => {
                    // Serving logs in clear, or to anyone, is not a fallback: serve nothing.
                    error!(error = %e, "the agent's TLS configuration is unusable; not serving metrics or logs");
                    (crate::server::Callers::ApiServerCertificate, None)
                }
            },
            None => {
                let review = Arc::new(stratus_client::review::TokenReview::new(
                    client.clone(),
                    &[stratus_api::identity::roles::SYSTEM_APISERVER],
                ));
                (crate::server::Callers::Review(review), None)
            }
        };
        let usable = cfg.tls.is_none() || tls.is_some();
        let router = crate::server::router(
            metrics.clone(),
            runtime.clone(),
            cfg.node_name.clone(),
            stop.clone(),
            callers,
            cfg.log_limits,
        );
        let mut stop = stop.clone();
        if usable {
            tasks.spawn(async move {
                let limits = stratus_support::server::Limits::default();
                let stopping = async move {
                    let _ = stop.wait_for(|s| *s).await;
                };
                let served =
                    stratus_support::server::serve_tower_with_peer(listener, tls, limits, stopping, router).await;
                if let Err(e) = served {
                    warn!(error = %e, "the agent's server failed");
                }
            });
        }
    }
    let controller = stratus_client::runtime::Controller::new(&informer, ctx)
        .triggers(UnboundedReceiverStream::new(keys))
        .run(instance::reconcile, instance::error_policy, WORKERS, shutdown.map(|_| ()));
    controller.await;
    info!("stopping the node agent; containers keep running");
    let _ = stop_tx.send(true);
    while tasks.join_next().await.is_some() {}
}

/// Samples every running container's CPU and memory each `usage_interval`, for `/metrics` and
/// (through a reconcile) the Instance's status.
async fn sample_usage(
    informer: Informer<Instance>,
    ctx: Arc<Context>,
    metrics: Arc<Metrics>,
    mut stop: watch::Receiver<bool>,
) {
    let mut known: HashSet<ContainerLabels> = HashSet::new();
    loop {
        tokio::select! {
            _ = tokio::time::sleep(ctx.cfg.usage_interval) => {}
            _ = stop.changed() => return,
        }
        let mut seen = HashSet::new();
        for inst in informer.store().list() {
            let Some(status) = inst.status.as_ref().filter(|s| !s.container_id.is_empty()) else { continue };
            let meta = inst.meta();
            let labels = ContainerLabels {
                namespace: meta.namespace.clone(),
                instance: meta.name.clone(),
                revision: inst.spec.as_ref().map(|s| s.revision_name.clone()).unwrap_or_default(),
            };
            match ctx.runtime.stats(&status.container_id).await {
                Ok(usage) => {
                    metrics.record(&labels, usage.cpu_millis, usage.memory_bytes);
                    seen.insert(labels);
                    let key = ObjectRef::new(meta.namespace.clone(), meta.name.clone());
                    ctx.record_usage(&status.container_id, usage, key);
                }
                Err(e) => tracing::debug!(error = %e, container = %status.container_id, "sampling usage failed"),
            }
        }
        for gone in known.difference(&seen) {
            metrics.forget(gone);
        }
        known = seen;
    }
}

/// Reports the instances' metered time (see [`crate::metering`]): first adopts the running
/// containers of this node's Instances once the cache has synced, so that their time since the
/// first window is metered before any window is taken; then at the end of every window spools
/// a report per instance with time in it and records the window as reported. As the agent
/// stops, reports what removed instances had in the window in progress.
async fn meter_usage(
    informer: Informer<Instance>,
    ctx: Arc<Context>,
    metering: crate::metering::Metering,
    mut stop: watch::Receiver<bool>,
) {
    use stratus_client::usage::{now_millis, source_label, until_millis, window_start};
    let source = source_label(&ctx.cfg.node_name);
    let window = metering.window_millis();
    let store = informer.store();
    tokio::select! {
        _ = store.wait_synced() => {}
        _ = stop.changed() => return,
    }
    // Adoption needs the engine; until it answers, the windows wait (nothing is lost: the
    // containers' time is metered from their start).
    loop {
        match ctx.runtime.list(&[(labels::NODE, ctx.cfg.node_name.as_str())]).await {
            Ok(containers) => {
                let instances: std::collections::HashMap<String, Arc<Instance>> =
                    store.list().into_iter().map(|i| (i.meta().uid.clone(), i)).collect();
                for c in containers.iter().filter(|c| c.running) {
                    let uid = c.labels.get(labels::INSTANCE_UID).map(String::as_str).unwrap_or_default();
                    if let Some(inst) = instances.get(uid) {
                        let was_ready = inst.status.as_ref().is_some_and(|s| s.ready);
                        ctx.meters.adopt(inst, c, was_ready);
                    }
                }
                break;
            }
            Err(e) => warn!(error = %e, "listing containers to meter failed; retrying"),
        }
        tokio::select! {
            _ = tokio::time::sleep(ctx.cfg.sync_interval) => {}
            _ = stop.changed() => return,
        }
    }
    let mut start = ctx.meters.floor();
    loop {
        let end = window_start(start, window).saturating_add(window);
        tokio::select! {
            _ = tokio::time::sleep(until_millis(end)) => {}
            _ = stop.changed() => {
                // The next agent reports this window of the instances still here; the removed
                // ones only this agent knows of.
                let now = now_millis().max(start + 1);
                crate::metering::spool_reports(&metering.spool, &source, (start, now), ctx.meters.take_removed(start, now));
                return;
            }
        }
        crate::metering::spool_reports(&metering.spool, &source, (start, end), ctx.meters.take(start, end));
        if let Err(e) = crate::metering::record_reported_until(metering.spool.dir(), end) {
            error!(error = %e, "recording the reported usage failed; the next agent may report this window again (deduplicated by name)");
        }
        start = end;
    }
}

/// Removes containers of this node that no Instance claims (left by a deleted Instance while
/// the agent was down, or made by hand with Stratus labels), every `gc_interval` once the
/// Instance cache has synced.
async fn collect_garbage(
    informer: Informer<Instance>,
    runtime: Arc<dyn Runtime>,
    cfg: AgentConfig,
    mut stop: watch::Receiver<bool>,
) {
    let store = informer.store();
    tokio::select! {
        _ = store.wait_synced() => {}
        _ = stop.changed() => return,
    }
    loop {
        let claimed: HashSet<String> = informer.store().list().iter().map(|i| i.meta().uid.clone()).collect();
        match runtime.list(&[(labels::NODE, cfg.node_name.as_str())]).await {
            Ok(containers) => {
                for c in containers {
                    let uid = c.labels.get(labels::INSTANCE_UID).cloned().unwrap_or_default();
                    if claimed.contains(&uid) {
                        continue;
                    }
                    info!(container = %c.id, name = %c.name, "removing a container no instance claims");
                    if let Err(e) = runtime.remove(&c.id).await {
                        warn!(error = %e, container = %c.id, "removing an unclaimed container failed");
                    }
                }
            }
            Err(e) => tracing::debug!(error = %e, "listing containers for garbage collection failed"),
        }
        tokio::select! {
            _ = tokio::time::sleep(cfg.gc_interval) => {}
            _ = stop.changed() => return,
        }
    }
}

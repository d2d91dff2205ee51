//! Hollow nodes: many Nodes served by one process without a container engine, to load the
//! control plane as a cluster of that size would (as Kubernetes' kubemark does with hollow
//! kubelets).
//!
//! Each hollow node registers its Node (Ready, with the allocatable it is given) and renews its
//! Lease as a real agent does ([`LeaseRenewer`], every `renew_interval`, the first renewals
//! spread over one interval). The Instances bound to a hollow node are reported Running and
//! Ready at once, without a container; one being deleted is let go (a hollow node holds no
//! finalizer). One informer of the Instances serves every hollow node of the process: a real
//! agent's watch per node would cost the API server what 5,000 agents' watches cost it, but
//! the process could not run 5,000 of them.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use futures::{StreamExt, TryStreamExt};
use stratus_api::Resource;
use stratus_api::v1::{Condition, Instance, InstanceStatus, Node, NodeAddress, NodeStatus};
use stratus_client::runtime::{Action, Controller, Informer};
use stratus_client::{Client, Error as ApiError, ListParams};
use tokio::sync::watch;
use tracing::warn;

use crate::node::{LeaseRenewer, now};

/// What the hollow nodes of one process look like.
#[derive(Clone, Debug)]
pub struct HollowConfig {
    /// Node names are `{prefix}{index:05}`.
    pub prefix: String,
    pub nodes: usize,
    /// Allocatable (and capacity) of each: quantities.
    pub cpu: String,
    pub memory: String,
    pub max_instances: u32,
    pub lease_duration: Duration,
    pub renew_interval: Duration,
    /// Registrations and status writes in flight at once.
    pub concurrency: usize,
}

impl Default for HollowConfig {
    /// Kubernetes' node heartbeat: a 40 s lease renewed every 10 s.
    fn default() -> HollowConfig {
        HollowConfig {
            prefix: "hollow-".into(),
            nodes: 100,
            cpu: "32".into(),
            memory: "128Gi".into(),
            max_instances: 110,
            lease_duration: Duration::from_secs(40),
            renew_interval: Duration::from_secs(10),
            concurrency: 32,
        }
    }
}

impl HollowConfig {
    pub fn node_name(&self, index: usize) -> String {
        format!("{}{index:05}", self.prefix)
    }

    fn is_mine(&self, node: &str) -> bool {
        node.strip_prefix(&self.prefix)
            .and_then(|n| n.parse::<usize>().ok())
            .is_some_and(|n| n < self.nodes && self.node_name(n) == node)
    }
}

/// Registers the hollow nodes (every Node is there and Ready when this returns), then keeps
/// their Leases and Instances in the background until `shutdown`.
pub async fn start(
    client: Client,
    config: HollowConfig,
    shutdown: watch::Receiver<bool>,
) -> Result<tokio::task::JoinHandle<()>, ApiError> {
    futures::stream::iter(0..config.nodes)
        .map(|i| register(&client, &config, config.node_name(i)))
        .buffer_unordered(config.concurrency.max(1))
        .try_collect::<Vec<()>>()
        .await?;
    let config = Arc::new(config);
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..config.nodes {
        let (client, config, mut shutdown) = (client.clone(), config.clone(), shutdown.clone());
        tasks.spawn(async move {
            let mut lease = LeaseRenewer::new(&config.node_name(i), config.lease_duration);
            // Spread over one interval, so that the renewals do not all come at once.
            let offset = config.renew_interval.mul_f64(i as f64 / config.nodes.max(1) as f64);
            let mut next = tokio::time::Instant::now() + offset;
            loop {
                tokio::select! {
                    () = tokio::time::sleep_until(next) => {}
                    _ = shutdown.changed() => return,
                }
                next += config.renew_interval;
                if let Err(e) = lease.renew(&client).await {
                    warn!(node = %config.node_name(i), error = %e, "renewing a hollow node's lease failed");
                }
            }
        });
    }
    let instances = Informer::<Instance>::spawn(client.clone(), ListParams::default());
    let state = Arc::new(Hollow { client, config: config.clone() });
    let mut stop = shutdown.clone();
    let controller = Controller::new(&instances, state).run(
        reconcile,
        |_, _, _| Action::backoff(),
        config.concurrency.max(1),
        async move {
            let _ = stop.wait_for(|s| *s).await;
        },
    );
    Ok(tokio::spawn(async move {
        controller.await;
        tasks.shutdown().await;
        drop(instances);
    }))
}

struct Hollow {
    client: Client,
    config: Arc<HollowConfig>,
}

async fn register(client: &Client, config: &HollowConfig, name: String) -> Result<(), ApiError> {
    let mut node = Node::default();
    node.meta_mut().name = name.clone();
    node.meta_mut().labels.insert(stratus_api::wellknown::labels::HOSTNAME.into(), name.clone());
    let mut node = match client.create(node).await {
        Ok(node) => node,
        Err(ApiError::AlreadyExists(_)) => client.get("", &name).await?,
        Err(e) => return Err(e),
    };
    let quantities: BTreeMap<String, String> = [
        ("cpu".to_string(), config.cpu.clone()),
        ("memory".to_string(), config.memory.clone()),
        ("instances".to_string(), config.max_instances.to_string()),
    ]
    .into();
    let mut conditions = Vec::new();
    crate::node::set_condition(&mut conditions, "Ready", "True", "HollowNode", "a hollow node: no container runs here");
    node.status = Some(NodeStatus {
        capacity: quantities.clone(),
        allocatable: quantities,
        conditions,
        addresses: vec![NodeAddress { r#type: "Hostname".into(), address: name }],
        ..Default::default()
    });
    client.update_status(node).await?;
    Ok(())
}

/// Reports an Instance bound to a hollow node Running and Ready, once.
async fn reconcile(inst: Arc<Instance>, hollow: Arc<Hollow>) -> Result<Action, ApiError> {
    let node = inst.spec.as_ref().map_or("", |s| s.node_name.as_str());
    let status = inst.status.clone().unwrap_or_default();
    let finished = matches!(status.phase.as_str(), "Succeeded" | "Failed");
    if !hollow.config.is_mine(node) || inst.meta().deletion_timestamp.is_some() || finished || status.ready {
        return Ok(Action::await_change());
    }
    let started = now();
    let ready = Condition {
        r#type: "Ready".into(),
        status: "True".into(),
        reason: "HollowNode".into(),
        message: "reported running by a hollow node".into(),
        last_transition_time: Some(started),
        severity: String::new(),
    };
    let mut updated = Instance::clone(&inst);
    updated.status = Some(InstanceStatus {
        phase: "Running".into(),
        ready: true,
        conditions: vec![ready],
        started_at: Some(started),
        ..status
    });
    match hollow.client.update_status(updated).await {
        Ok(_) | Err(ApiError::NotFound(_)) => Ok(Action::await_change()),
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_its_own_nodes_are_served() {
        let config = HollowConfig { nodes: 3, ..Default::default() };
        assert_eq!(config.node_name(2), "hollow-00002");
        assert!(config.is_mine("hollow-00000") && config.is_mine("hollow-00002"));
        assert!(!config.is_mine("hollow-00003"), "beyond the count");
        assert!(!config.is_mine("hollow-2") && !config.is_mine("node-1") && !config.is_mine(""));
    }
}

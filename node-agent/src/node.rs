//! The Node this agent stands for: registration, status (capacity, allocatable, addresses,
//! engine health) and the heartbeat Lease.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use stratus_api::quantity::{Format, Quantity};
use stratus_api::v1::{Condition, Lease, LeaseSpec, Node, NodeAddress, NodeInfo};
use stratus_api::{Resource, Timestamp};
use stratus_client::{Client, Error as ApiError};
use tokio::sync::watch;
use tracing::{info, warn};

use crate::config::{AgentConfig, NODE_LEASE_NAMESPACE};
use crate::runtime::Runtime;

/// How many instances a node takes at most, as Kubernetes' default pod limit.
const MAX_INSTANCES: i64 = 110;

/// Keeps the Node's status current until `shutdown`: engine facts when the engine answers,
/// `Ready=False` with the reason when it does not (retrying with backoff, one log line per
/// change of state). `ready` carries whether the engine answered at the last look.
pub async fn run_status(
    client: Client,
    runtime: Arc<dyn Runtime>,
    cfg: AgentConfig,
    ready: watch::Sender<bool>,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut delay = Duration::from_secs(1);
    let mut was_ok = None;
    loop {
        let engine = runtime.info().await;
        let ok = engine.is_ok();
        match (&engine, was_ok) {
            (Err(e), Some(true) | None) => warn!(
                "{e}; is the Docker engine running? (start it, e.g. `systemctl start docker`); the node is NotReady and the agent keeps retrying"
            ),
            (Ok(_), Some(false)) => info!("the container engine answers again; the node is Ready"),
            _ => {}
        }
        was_ok = Some(ok);
        let _ = ready.send(ok);
        let cidrs = match (ok, cfg.advertise_container_address) {
            (true, true) => match runtime.network_subnets(&cfg.instance_network).await {
                Ok(cidrs) => Some(cidrs),
                Err(e) => {
                    warn!(network = %cfg.instance_network, error = %e, "reading the instances' network failed; its subnets stay as published");
                    None
                }
            },
            _ => None,
        };
        if let Err(e) = write_status(&client, &cfg, engine.as_ref().map_err(ToString::to_string), cidrs).await {
            warn!(error = %e, "updating the node's status failed");
        }
        // Healthy: the regular interval. Unhealthy: back off from 1 s, so a restarted engine is
        // noticed soon without hammering one that stays down.
        let wait = if ok {
            delay = Duration::from_secs(1);
            cfg.node_status_interval
        } else {
            let d = delay;
            delay = (delay * 2).min(cfg.node_status_interval);
            d
        };
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = shutdown.changed() => return,
        }
    }
}

async fn write_status(
    client: &Client,
    cfg: &AgentConfig,
    engine: Result<&crate::runtime::EngineInfo, String>,
    instance_cidrs: Option<Vec<String>>,
) -> Result<(), ApiError> {
    let mut node = match client.get::<Node>("", &cfg.node_name).await {
        Ok(n) => n,
        Err(ApiError::NotFound(_)) => {
            let mut n = Node::default();
            n.meta_mut().name = cfg.node_name.clone();
            n.meta_mut().labels.insert(stratus_api::wellknown::labels::HOSTNAME.into(), cfg.node_name.clone());
            match client.create(n).await {
                Ok(n) => {
                    info!(node = %cfg.node_name, "registered the node");
                    n
                }
                Err(ApiError::AlreadyExists(_)) => client.get::<Node>("", &cfg.node_name).await?,
                Err(e) => return Err(e),
            }
        }
        Err(e) => return Err(e),
    };
    let previous = node.status.clone().unwrap_or_default();
    let mut status = previous.clone();
    let (ready, reason, message) = match engine {
        Ok(info) => {
            let cpu_millis = i64::from(info.cpus) * 1000;
            let memory = i64::try_from(info.memory_bytes).unwrap_or(i64::MAX);
            status.capacity = [
                ("cpu".to_string(), Quantity::from_millis(cpu_millis.into()).to_string()),
                ("memory".to_string(), Quantity::from_units(memory.into(), Format::BinarySi).to_string()),
                ("instances".to_string(), MAX_INSTANCES.to_string()),
            ]
            .into();
            let alloc_cpu = (cpu_millis - cfg.reserved_cpu_millis).max(0);
            let alloc_mem = (memory - cfg.reserved_memory_bytes).max(0);
            status.allocatable = [
                ("cpu".to_string(), Quantity::from_millis(alloc_cpu.into()).to_string()),
                ("memory".to_string(), Quantity::from_units(alloc_mem.into(), Format::BinarySi).to_string()),
                ("instances".to_string(), MAX_INSTANCES.to_string()),
            ]
            .into();
            status.node_info = Some(NodeInfo {
                agent_version: env!("CARGO_PKG_VERSION").to_string(),
                container_runtime_version: info.version.clone(),
                operating_system: info.operating_system.clone(),
                architecture: info.architecture.clone(),
                kernel_version: info.kernel_version.clone(),
            });
            ("True", "AgentReady", "the agent is running and the container engine answers".to_string())
        }
        Err(e) => ("False", "RuntimeUnavailable", e),
    };
    status.addresses = vec![
        NodeAddress { r#type: "InternalIP".into(), address: cfg.advertise_address.clone() },
        NodeAddress { r#type: "Hostname".into(), address: cfg.node_name.clone() },
    ];
    // Instances are reached at the publish address: the gateways route to an instance only at
    // an address its node published.
    if cfg.publish_address() != cfg.advertise_address {
        status.addresses.push(NodeAddress { r#type: "InternalIP".into(), address: cfg.publish_address().to_owned() });
    }
    status.agent_endpoint = cfg.agent_endpoint.clone();
    // The instances' own network, where gateways may reach them directly (`None`: unknown
    // now, as published before; an agent that does not advertise publishes none).
    if !cfg.advertise_container_address {
        status.instance_cidrs.clear();
    } else if let Some(cidrs) = instance_cidrs {
        status.instance_cidrs = cidrs;
    }
    set_condition(&mut status.conditions, "Ready", ready, reason, &message);
    if status == previous {
        return Ok(());
    }
    node.status = Some(status);
    client.update_status(node).await.map(|_| ())
}

/// Sets a condition, moving its transition time only when its status changes.
pub fn set_condition(conditions: &mut Vec<Condition>, kind: &str, status: &str, reason: &str, message: &str) {
    let now = now();
    match conditions.iter_mut().find(|c| c.r#type == kind) {
        Some(c) => {
            if c.status != status {
                c.last_transition_time = Some(now);
            }
            c.status = status.to_string();
            c.reason = reason.to_string();
            c.message = message.to_string();
        }
        None => conditions.push(Condition {
            r#type: kind.to_string(),
            status: status.to_string(),
            reason: reason.to_string(),
            message: message.to_string(),
            last_transition_time: Some(now),
            severity: String::new(),
        }),
    }
}

/// Renews the Node's Lease every `lease_renew_interval` until `shutdown`. The nodes
/// controller marks a node whose Lease expired NotReady.
pub async fn run_lease(client: Client, cfg: AgentConfig, mut shutdown: watch::Receiver<bool>) {
    let mut failing = false;
    let mut lease = LeaseRenewer::new(&cfg.node_name, cfg.lease_duration);
    loop {
        match lease.renew(&client).await {
            Ok(()) if failing => {
                info!("renewing the node lease works again");
                failing = false;
            }
            Ok(()) => {}
            Err(e) => {
                if !failing {
                    warn!(error = %e, "renewing the node lease failed; retrying");
                }
                failing = true;
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(cfg.lease_renew_interval) => {}
            _ = shutdown.changed() => return,
        }
    }
}

/// A node's Lease, kept between renewals so that a renewal is one write: the copy from the
/// last one is updated at its resourceVersion, and read again only when that fails (someone
/// else wrote it, or it is gone).
pub struct LeaseRenewer {
    node: String,
    duration: Duration,
    last: Option<Lease>,
}

impl LeaseRenewer {
    pub fn new(node: &str, duration: Duration) -> LeaseRenewer {
        LeaseRenewer { node: node.to_string(), duration, last: None }
    }

    /// Renews the Lease now, making it if there is none.
    pub async fn renew(&mut self, client: &Client) -> Result<(), ApiError> {
        let spec = LeaseSpec {
            holder_identity: self.node.clone(),
            lease_duration_seconds: i32::try_from(self.duration.as_secs()).unwrap_or(i32::MAX),
            renew_time: Some(now_precise()),
            ..Default::default()
        };
        // The kept copy first; when it is stale (a Conflict), once more from a fresh read.
        let cached = self.last.take();
        let from_cache = cached.is_some();
        let mut lease = match cached {
            Some(lease) => lease,
            None => match self.read(client, &spec).await? {
                Some(lease) => lease,
                None => return Ok(()),
            },
        };
        let acquire_time = lease.spec.as_ref().and_then(|s| s.acquire_time);
        lease.spec = Some(LeaseSpec { acquire_time, ..spec.clone() });
        match client.update(lease).await {
            Ok(renewed) => {
                self.last = Some(renewed);
                Ok(())
            }
            Err(ApiError::Conflict(_) | ApiError::NotFound(_)) if from_cache => Box::pin(self.renew(client)).await,
            Err(e) => Err(e),
        }
    }

    /// The Lease as stored; `None` when there was none and this made it.
    async fn read(&mut self, client: &Client, spec: &LeaseSpec) -> Result<Option<Lease>, ApiError> {
        match client.get::<Lease>(NODE_LEASE_NAMESPACE, &self.node).await {
            Ok(lease) => Ok(Some(lease)),
            // The lease namespace is the API server's to make (it does at its first start).
            Err(ApiError::NotFound(_)) => {
                let mut lease = Lease::default();
                lease.meta_mut().name = self.node.clone();
                lease.meta_mut().namespace = NODE_LEASE_NAMESPACE.to_string();
                lease.spec = Some(LeaseSpec { acquire_time: spec.renew_time, ..spec.clone() });
                match client.create(lease).await {
                    Ok(created) => {
                        self.last = Some(created);
                        Ok(None)
                    }
                    Err(ApiError::AlreadyExists(_)) => Ok(None),
                    Err(e) => Err(e),
                }
            }
            Err(e) => Err(e),
        }
    }
}

/// Now, to the second (as Kubernetes timestamps).
pub fn now() -> Timestamp {
    let secs = SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
    Timestamp { seconds: i64::try_from(secs).unwrap_or(i64::MAX), nanos: 0 }
}

/// Now, to the microsecond (lease renewals).
pub fn now_precise() -> Timestamp {
    to_timestamp(SystemTime::now())
}

pub fn to_timestamp(t: SystemTime) -> Timestamp {
    let d = t.duration_since(SystemTime::UNIX_EPOCH).unwrap_or_default();
    Timestamp {
        seconds: i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
        nanos: i32::try_from(d.subsec_micros() * 1000).unwrap_or(0),
    }
}

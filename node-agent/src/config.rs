//! The agent's configuration, with defaults that work on one machine.

use std::time::Duration;

/// Everything the agent is told; see `stratus-agent --help` for the flags.
#[derive(Debug, Clone)]
pub struct AgentConfig {
    /// The Node's name (default: the hostname).
    pub node_name: String,
    /// The Node's address: it advertises it, and container ports are published there unless
    /// `publish_address` says otherwise.
    pub advertise_address: String,
    /// The host address container ports are published on, where the gateway (and the agent's
    /// probes) reach instances; `None`: the advertise address. A node in a container that
    /// drives its host's engine (`hack/cluster.sh`) publishes on an address of the host that
    /// its network reaches, not on its own.
    pub publish_address: Option<String>,
    /// CPU (millicores) and memory (bytes) kept back from Stratus for the host itself.
    pub reserved_cpu_millis: i64,
    pub reserved_memory_bytes: i64,
    /// Where the API server reaches this agent's gRPC service (logs).
    pub agent_endpoint: String,
    /// How long the Node's Lease is valid; it is renewed every `lease_renew_interval`.
    pub lease_duration: Duration,
    pub lease_renew_interval: Duration,
    /// How often the Node's status (capacity, engine health) is refreshed.
    pub node_status_interval: Duration,
    /// How often a running instance's container is inspected even when nothing changed.
    pub sync_interval: Duration,
    /// How often CPU and memory use are sampled.
    pub usage_interval: Duration,
    /// How often containers that no Instance claims are looked for.
    pub gc_interval: Duration,
    /// Restart delays after a crash (CrashLoopBackOff): base, doubling, capped.
    pub crash_backoff: (Duration, Duration),
    /// Retry delays after a failed pull (ImagePullBackOff): base, doubling, capped.
    pub pull_backoff: (Duration, Duration),
    /// At most this many processes per container.
    pub pids_limit: i64,
    /// How long a deleted instance that was serving stays up after leaving Endpoints, so that
    /// gateways stop sending to it before it is asked to stop (SIGTERM).
    pub drain_delay: Duration,
    /// The engine network instances' containers join: made if missing, as a bridge on which
    /// they cannot reach one another (see the runtime's `ContainerConfig::network`).
    pub instance_network: String,
    /// Every container must run as a non-root user, as if each said `runAsNonRoot: true`.
    pub require_non_root: bool,
    /// Whether this agent can reach its containers on their own addresses (it runs in the
    /// host's network namespace, as under `stratus up`): TCP readiness probes then connect
    /// there, where a refused connection means nothing listens, instead of waiting to see the
    /// engine's port proxy keep a connection open. Falls back to the published port.
    pub probe_container_address: bool,
    /// Whether the platform's gateways can reach this node's containers on their own addresses
    /// (they share its host, as under `stratus up`, or the instances' network is routed to
    /// them, as pod networks are in Kubernetes). The agent then publishes the instances'
    /// network on its Node (`status.instanceCidrs`) and each instance's address on it
    /// (`status.containerAddress`), and gateways connect there instead of through the engine's
    /// port publishing (its userland proxy and NAT). Off, instances are reached on published
    /// ports only.
    pub advertise_container_address: bool,
    /// What the agent relays of a container's output (`stratus logs`): lines cut at this many
    /// bytes, and at most this many lines a second per instance; see [`crate::logs`].
    pub log_limits: crate::logs::LogLimits,
    /// The node's certificate and the cluster CA: with them the agent's server speaks TLS only
    /// and its logs service answers only the API server's certificate (see [`crate::server`]).
    /// Without them it is plain HTTP and the API server's token is checked instead.
    pub tls: Option<AgentTls>,
    /// Metering for billing (see [`crate::metering`]): the instances' lives and start-ups and
    /// shut-downs, reported per window through a spool. `None`: off.
    pub metering: Option<crate::metering::Metering>,
}

/// What the agent serves TLS with.
#[derive(Debug, Clone)]
pub struct AgentTls {
    /// The cluster CA (PEM): callers' client certificates must chain to it.
    pub ca_pem: String,
    /// The node's certificate (`system:node:NAME`, the node's name as its DNS name, for clients
    /// and servers), served as it is renewed.
    pub identity: stratus_client::tls::ClientIdentity,
}

/// The network instances join unless the agent is told otherwise.
pub const DEFAULT_INSTANCE_NETWORK: &str = "stratus-instances";

/// The namespace that holds the Nodes' heartbeat Leases.
pub use stratus_api::wellknown::namespaces::NODE_LEASE as NODE_LEASE_NAMESPACE;

/// The finalizer the agent holds on every Instance bound to its node until its container is gone.
pub use stratus_api::wellknown::finalizers::AGENT as FINALIZER;

impl AgentConfig {
    /// Where container ports are published and instances are reached.
    pub fn publish_address(&self) -> &str {
        self.publish_address.as_deref().unwrap_or(&self.advertise_address)
    }

    /// The defaults for a node named `node_name`.
    pub fn new(node_name: impl Into<String>) -> AgentConfig {
        AgentConfig {
            node_name: node_name.into(),
            advertise_address: "127.0.0.1".into(),
            publish_address: None,
            reserved_cpu_millis: 0,
            reserved_memory_bytes: 0,
            agent_endpoint: "http://127.0.0.1:7071".into(),
            lease_duration: Duration::from_secs(15),
            lease_renew_interval: Duration::from_secs(4),
            node_status_interval: Duration::from_secs(10),
            sync_interval: Duration::from_secs(2),
            usage_interval: Duration::from_secs(5),
            gc_interval: Duration::from_secs(30),
            crash_backoff: (Duration::from_secs(10), Duration::from_secs(300)),
            pull_backoff: (Duration::from_secs(5), Duration::from_secs(300)),
            pids_limit: 1024,
            drain_delay: Duration::from_secs(2),
            instance_network: DEFAULT_INSTANCE_NETWORK.into(),
            require_non_root: false,
            probe_container_address: false,
            advertise_container_address: false,
            log_limits: crate::logs::LogLimits::default(),
            tls: None,
            metering: None,
        }
    }
}

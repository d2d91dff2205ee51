//! What every controller shares: the API client, the informer caches of every kind they read
//! (one informer per kind, shared), the event recorder and the configuration.

use std::sync::Arc;

use stratus_api::v1::{Endpoints, Instance, Lease, Node, Revision, Service};
use stratus_client::runtime::Informer;
use stratus_client::{Client, ListParams};

use crate::autoscaler::DemandStore;
use crate::config::Config;
use crate::events::EventRecorder;
use crate::metrics::Metrics;

pub struct Context {
    pub client: Client,
    pub config: Config,
    pub services: Informer<Service>,
    pub revisions: Informer<Revision>,
    pub instances: Informer<Instance>,
    pub endpoints: Informer<Endpoints>,
    pub nodes: Informer<Node>,
    /// The Nodes' heartbeat Leases.
    pub node_leases: Informer<Lease>,
    pub events: EventRecorder,
    pub metrics: Arc<Metrics>,
    /// The demand the gateways report, read by the autoscaler.
    pub demand: DemandStore,
}

/// The namespace of the Nodes' heartbeat Leases (written by the node agents).
pub use stratus_api::wellknown::namespaces::NODE_LEASE as NODE_LEASE_NAMESPACE;

impl Context {
    /// Starts the informers (they list and watch in the background), with a demand store of
    /// its own that nothing reports to (see [`Context::with_demand`]).
    pub fn new(client: Client, config: Config, metrics: Arc<Metrics>) -> Arc<Context> {
        Context::with_demand(client, config, metrics, DemandStore::default())
    }

    /// Starts the informers, with the autoscaler reading `demand` (the store a
    /// [`crate::autoscaler::DemandService`] fills).
    pub fn with_demand(client: Client, config: Config, metrics: Arc<Metrics>, demand: DemandStore) -> Arc<Context> {
        let all = ListParams::default();
        let leases = ListParams { namespace: NODE_LEASE_NAMESPACE.into(), ..Default::default() };
        Arc::new(Context {
            services: Informer::spawn(client.clone(), all.clone()),
            revisions: Informer::spawn(client.clone(), all.clone()),
            instances: Informer::spawn(client.clone(), all.clone()),
            endpoints: Informer::spawn(client.clone(), all.clone()),
            nodes: Informer::spawn(client.clone(), all),
            node_leases: Informer::spawn(client.clone(), leases),
            events: EventRecorder::new(client.clone(), "stratus-controllers"),
            client,
            config,
            metrics,
            demand,
        })
    }

    /// Waits until every cache has listed once.
    pub async fn wait_synced(&self) {
        self.services.wait_synced().await;
        self.revisions.wait_synced().await;
        self.instances.wait_synced().await;
        self.endpoints.wait_synced().await;
        self.nodes.wait_synced().await;
        self.node_leases.wait_synced().await;
    }
}

//! What every controller shares: the API client and the seam its tested writes go through, the
//! informer caches of every kind they read (one informer per kind, shared), the event recorder,
//! the configuration, the demand the gateways report and the clock.

use std::sync::Arc;

use stratus_api::v1::{Endpoints, Instance, Lease, Node, Revision, Service};
use stratus_client::runtime::{ApiWriter, Informer};
use stratus_client::{Client, ListParams};

use crate::clock::{Clock, SystemClock};
use crate::config::Config;
use crate::demand::DemandStore;
use crate::events::EventRecorder;
use crate::metrics::Metrics;

pub struct Context {
    pub client: Client,
    /// The writes a controller test observes or fails go through here: the client itself
    /// unless [`ContextBuilder::writer`] gave another. Today the scheduler's updates (its binds,
    /// reservations and status writes); other controllers move their writes here as their
    /// tests need to see or fail them, and meanwhile write through `client`.
    pub writer: Arc<dyn ApiWriter>,
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
    /// Wall time, for the decisions that compare it with stored timestamps (see
    /// [`crate::clock`]): the system's unless [`ContextBuilder::clock`] gave another.
    pub clock: Arc<dyn Clock>,
}

/// The namespace of the Nodes' heartbeat Leases (written by the node agents).
pub use stratus_api::wellknown::namespaces::NODE_LEASE as NODE_LEASE_NAMESPACE;

/// A [`Context`] whose parts are not all the defaults: another demand store, another clock,
/// another writer.
/// Nothing starts until [`ContextBuilder::start`].
#[must_use = "a builder starts nothing until `start`"]
pub struct ContextBuilder {
    client: Client,
    config: Config,
    metrics: Arc<Metrics>,
    demand: DemandStore,
    clock: Arc<dyn Clock>,
    writer: Option<Arc<dyn ApiWriter>>,
}

impl Context {
    /// Starts the informers (they list and watch in the background), with a demand store of
    /// its own that nothing reports to (see [`Context::with_demand`]) and the system clock.
    pub fn new(client: Client, config: Config, metrics: Arc<Metrics>) -> Arc<Context> {
        Context::builder(client, config, metrics).start()
    }

    /// Starts the informers, with the autoscaler reading `demand` (the store a
    /// [`crate::autoscaler::DemandService`] fills) and the system clock.
    pub fn with_demand(client: Client, config: Config, metrics: Arc<Metrics>, demand: DemandStore) -> Arc<Context> {
        Context::builder(client, config, metrics).demand(demand).start()
    }

    /// A Context to be given other parts before it starts, for instance a test's clock:
    ///
    /// ```no_run
    /// # fn example(client: stratus_client::Client) {
    /// use std::sync::Arc;
    /// use std::time::SystemTime;
    /// use stratus_controllers::clock::ManualClock;
    /// use stratus_controllers::{Config, Context, Metrics};
    ///
    /// let clock = ManualClock::new(SystemTime::now());
    /// let metrics = Arc::new(Metrics::default());
    /// let ctx = Context::builder(client, Config::default(), metrics).clock(clock.clone()).start();
    /// # }
    /// ```
    pub fn builder(client: Client, config: Config, metrics: Arc<Metrics>) -> ContextBuilder {
        ContextBuilder {
            client,
            config,
            metrics,
            demand: DemandStore::default(),
            clock: Arc::new(SystemClock),
            writer: None,
        }
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

impl ContextBuilder {
    /// The autoscaler reads `demand` instead of a store of its own.
    pub fn demand(self, demand: DemandStore) -> ContextBuilder {
        ContextBuilder { demand, ..self }
    }

    /// The controllers read wall time from `clock` instead of the system's.
    pub fn clock(self, clock: Arc<dyn Clock>) -> ContextBuilder {
        ContextBuilder { clock, ..self }
    }

    /// The controllers write through `writer` instead of the client (see [`Context::writer`]):
    /// a test's wrapper that records writes or answers some with an error.
    pub fn writer(self, writer: Arc<dyn ApiWriter>) -> ContextBuilder {
        ContextBuilder { writer: Some(writer), ..self }
    }

    /// Starts the informers (they list and watch in the background).
    pub fn start(self) -> Arc<Context> {
        let ContextBuilder { client, config, metrics, demand, clock, writer } = self;
        let writer = writer.unwrap_or_else(|| Arc::new(client.clone()));
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
            writer,
            config,
            metrics,
            demand,
            clock,
        })
    }
}

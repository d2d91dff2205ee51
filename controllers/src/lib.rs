//! The Stratus controllers, in one process: each a reconciler over the shared informer caches
//! (DESIGN §5). Several replicas may run; a Lease elects the one that acts.
//!
//! | controller | module | what it reconciles |
//! |---|---|---|
//! | services | [`services`] | a Service's template → immutable Revisions; its status, URL and traffic |
//! | revisions | [`revisions`] | a Revision's Instances to its desired count; its readiness |
//! | scheduler | [`scheduler`] | pending Instances → a Node with room |
//! | endpoints | [`endpoints`] | a Revision's ready Instances → its Endpoints |
//! | nodes | [`nodes`] | Nodes whose Lease expired → NotReady, their Instances failed |
//! | garbage collector | [`gc`] | objects whose owner is gone → deleted |
//! | autoscaler | [`autoscaler`], [`kpa`] | gateways' demand → a Revision's `desiredInstances` |
//! | billing | [`billing`] | UsageReports → LedgerEntries → Invoices; Budgets' thresholds |
//!
//! The autoscaler's demand arrives over gRPC: serve a [`DemandStore`] with
//! [`serve_autoscaler`] where the gateways reach it, and run the controllers with
//! [`run_with_demand`] on the same store; [`serve_metrics`] serves their [`Metrics`].

use std::sync::Arc;

use futures::FutureExt;
use stratus_api::Resource;
use stratus_api::v1::Namespace;
use stratus_client::Client;
use stratus_client::runtime::{LeaderElectionConfig, LeaderElector};
use tokio::sync::watch;
use tracing::{info, warn};

pub mod autoscaler;
pub mod billing;
mod children;
pub mod clock;
pub mod config;
pub mod context;
pub mod demand;
pub mod digest;
pub mod endpoints;
pub mod events;
pub mod gc;
mod instances;
pub mod kpa;
pub mod metrics;
pub mod nodes;
pub mod revisions;
pub mod scheduler;
pub mod services;
pub mod status;

pub use autoscaler::{DemandService, DemandStore, serve_autoscaler, serve_autoscaler_tls};
pub use config::Config;
pub use context::Context;
pub use metrics::{Metrics, serve_metrics};

/// The name of the leader-election Lease.
pub const LEADER_LEASE: &str = "stratus-controllers";

/// Runs every controller while this replica holds the leader Lease, until `shutdown`; the
/// autoscaler reads `demand`, which a [`serve_autoscaler`] on the same store fills:
///
/// ```no_run
/// # async fn example(client: stratus_client::Client, shutdown: impl Future<Output = ()> + Send + Clone + 'static)
/// # -> anyhow::Result<()> {
/// use std::sync::Arc;
/// use stratus_controllers::{Config, DemandStore, Metrics};
///
/// let demand = DemandStore::new();
/// let listener = tokio::net::TcpListener::bind("127.0.0.1:7073").await?;
/// // Gateways' tokens are checked with the API server, through `client`.
/// let review = Arc::new(stratus_client::review::TokenReview::new(client.clone(), stratus_controllers::autoscaler::REPORTERS));
/// tokio::spawn(stratus_controllers::serve_autoscaler(listener, demand.clone(), review, shutdown.clone()));
/// let metrics = Arc::new(Metrics::default());
/// stratus_controllers::run_with_demand(client, Config::default(), metrics, demand, shutdown).await;
/// # Ok(())
/// # }
/// ```
///
/// Only the leader acts on the demand: gateways should report to every replica (or to the
/// one that leads).
pub async fn run_with_demand(
    client: Client,
    config: Config,
    metrics: Arc<Metrics>,
    demand: DemandStore,
    shutdown: impl Future<Output = ()> + Send,
) {
    let (stop_tx, stop) = watch::channel(false);
    let mut shutdown = std::pin::pin!(shutdown.map(|_| ()));
    // The Lease's namespace must exist before anyone can hold the Lease. The API server makes
    // `stratus-system` at its first start; another is made here when the account may.
    let mut ns = Namespace::default();
    ns.meta_mut().name = config.system_namespace.clone();
    loop {
        let made = match client.get::<Namespace>("", &config.system_namespace).await {
            Ok(_) => Ok(()),
            Err(stratus_client::Error::NotFound(_)) => match client.create(ns.clone()).await {
                Ok(_) | Err(stratus_client::Error::AlreadyExists(_)) => Ok(()),
                Err(e) => Err(e),
            },
            Err(e) => Err(e),
        };
        match made {
            Ok(()) => break,
            Err(e) => {
                warn!(error = %e, "the {} namespace is not there yet; retrying", config.system_namespace);
                tokio::select! {
                    _ = tokio::time::sleep(std::time::Duration::from_secs(1)) => {}
                    _ = &mut shutdown => return,
                }
            }
        }
    }
    let elector = match LeaderElector::new(
        client.clone(),
        LeaderElectionConfig::new(config.system_namespace.clone(), LEADER_LEASE, config.identity.clone()),
    ) {
        Ok(e) => e,
        Err(e) => {
            warn!(error = %e, "leader election cannot start");
            return;
        }
    };
    let mut leading = elector.subscribe();
    let fence = elector.fence();
    let mut elector_stop = stop.clone();
    let election = tokio::spawn(elector.run(async move {
        let _ = elector_stop.wait_for(|s| *s).await;
    }));
    loop {
        tokio::select! {
            r = leading.wait_for(|l| *l) => if r.is_err() { break },
            _ = &mut shutdown => break,
        }
        info!(identity = %config.identity, "leading: starting the controllers");
        metrics.leader.set(1);
        // Every request of the term carries its fence: once the Lease is another's, the API
        // server refuses this term's writes, even before this replica notices and stops.
        let term_client = match fence.borrow().as_ref() {
            Some(fence) => client.with_fence(fence),
            None => client.clone(),
        };
        let ctx = Context::with_demand(term_client, config.clone(), metrics.clone(), demand.clone());
        let mut lost = leading.clone();
        let term = async move {
            let _ = lost.wait_for(|l| !*l).await;
        };
        let mut stop_rx = stop.clone();
        let (term_tx, term_rx) = watch::channel(false);
        // A task, so that the controllers run while this one waits for the term to end.
        let controllers = tokio::spawn(run_controllers(ctx, term_rx));
        let ended_by_shutdown = tokio::select! {
            _ = term => false,
            _ = &mut shutdown => true,
            _ = stop_rx.changed() => true,
        };
        let _ = term_tx.send(true);
        if let Err(e) = controllers.await {
            warn!(error = %e, "the controllers stopped abnormally");
        }
        metrics.leader.set(0);
        if ended_by_shutdown {
            break;
        }
        warn!("lost the leader Lease: controllers stopped until it is won again");
    }
    let _ = stop_tx.send(true);
    let _ = election.await;
}

/// Every controller, until `stop` becomes true.
async fn run_controllers(ctx: Arc<Context>, stop: watch::Receiver<bool>) {
    let until = |mut rx: watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|s| *s).await;
    };
    tokio::join!(
        services::run(ctx.clone(), until(stop.clone())),
        revisions::run(ctx.clone(), until(stop.clone())),
        scheduler::run(ctx.clone(), until(stop.clone())),
        endpoints::run(ctx.clone(), until(stop.clone())),
        nodes::run(ctx.clone(), until(stop.clone())),
        gc::run(ctx.clone(), until(stop.clone())),
        autoscaler::run(ctx.clone(), until(stop.clone())),
        billing::run(ctx.clone(), until(stop.clone())),
    );
}

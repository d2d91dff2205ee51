//! The controller runtime: what every Stratus controller, agent and gateway is built from.
//!
//! - [`Informer`] lists and watches one kind into a local, read-only [`Store`] and tells
//!   subscribers what changed ([`Change`]), relisting after a lost watch.
//! - [`WorkQueue`] hands keys to workers with client-go's guarantees: one key is never processed
//!   twice at once, and failures are retried with per-key exponential backoff.
//! - [`Controller`] joins the two: changes become keys, keys become calls of a reconcile function
//!   that returns an [`Action`].
//! - [`LeaderElector`] makes one of several replicas the leader through a `Lease` object.
//! - [`ControllerMetrics`] receives what a controller measures: its reconciles and its queue.
//! - [`ApiWriter`] is the seam through which a controller writes, so that its tests can observe
//!   and fail those writes.
//!
//! The shapes follow kube-runtime and client-go; see `DESIGN.md` §5 for how controllers use them.
//! A leader-elected controller, put together:
//!
//! ```no_run
//! # use std::sync::Arc;
//! # use stratus_api::v1::Revision;
//! # use stratus_client::{Client, ListParams};
//! # use stratus_client::runtime::{Action, Controller, Informer, LeaderElectionConfig, LeaderElector};
//! # #[derive(Debug, thiserror::Error)]
//! # #[error("failed")]
//! # struct Error;
//! # async fn example(client: Client) -> Result<(), Box<dyn std::error::Error>> {
//! async fn reconcile(rev: Arc<Revision>, client: Arc<Client>) -> Result<Action, Error> {
//!     // Read the current state, move the world one step toward `rev`'s spec.
//!     Ok(Action::await_change())
//! }
//!
//! let revisions = Informer::<Revision>::spawn(client.clone(), ListParams::default());
//! let config = LeaderElectionConfig::new("stratus-system", "stratus-controllers", "host-1");
//! let elector = LeaderElector::new(client.clone(), config)?;
//! let mut leading = elector.subscribe();
//! tokio::spawn(elector.run(std::future::pending()));
//! let ctx = Arc::new(client);
//! loop {
//!     leading.wait_for(|leader| *leader).await?;
//!     let mut lost = leading.clone();
//!     let lost = async move {
//!         let _ = lost.wait_for(|leader| !*leader).await;
//!     };
//!     Controller::new(&revisions, ctx.clone()).run(reconcile, |_, _, _| Action::backoff(), 4, lost).await;
//! }
//! # }
//! ```

use std::fmt;
use std::time::Duration;

use stratus_api::Resource;

pub mod controller;
pub mod informer;
pub mod leader;
pub mod metrics;
pub mod store;
pub mod workqueue;
pub mod writes;

pub use controller::{Action, Controller};
pub use informer::{Informer, InformerConfig};
pub use leader::{LeaderElectionConfig, LeaderElector};
pub use metrics::{ControllerMetrics, ReconcileOutcome};
pub use store::{Change, ChangeKind, Store, Subscription, Writer};
pub use workqueue::{RateLimit, WorkQueue};
pub use writes::ApiWriter;

/// Names one object of a known kind: its namespace (empty for cluster-scoped kinds) and name.
///
/// Ordered by namespace, then name, so that lists built from it are deterministic.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ObjectRef {
    pub namespace: String,
    pub name: String,
}

impl ObjectRef {
    /// The reference of `namespace/name`; the namespace is empty for cluster-scoped kinds.
    pub fn new(namespace: impl Into<String>, name: impl Into<String>) -> ObjectRef {
        ObjectRef { namespace: namespace.into(), name: name.into() }
    }

    /// The reference of `obj`, read from its metadata.
    pub fn from_obj<K: Resource>(obj: &K) -> ObjectRef {
        let meta = obj.meta();
        ObjectRef::new(meta.namespace.clone(), meta.name.clone())
    }
}

/// `namespace/name`, or `name` for cluster-scoped objects, as `AnyObject::key` writes it.
impl fmt::Display for ObjectRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.namespace.is_empty() { f.write_str(&self.name) } else { write!(f, "{}/{}", self.namespace, self.name) }
    }
}

/// The delay before retry number `attempt` (0-based): `base · 2^attempt`, capped at `max`, then
/// shortened by a random fraction of up to `jitter` (0 to 1). Taking jitter off rather than
/// adding it keeps the cap a hard bound while still spreading out retries that failed together.
pub(crate) fn backoff_delay(base: Duration, max: Duration, jitter: f64, attempt: u32) -> Duration {
    // 2^attempt overflows u32 past 31 and Duration soon after; both mean "at the cap".
    let exp = base.checked_mul(1u32.checked_shl(attempt.min(31)).unwrap_or(u32::MAX)).unwrap_or(max);
    let capped = exp.min(max);
    let jitter = jitter.clamp(0.0, 1.0);
    if jitter == 0.0 {
        return capped;
    }
    capped.mul_f64(1.0 - jitter * rand::random::<f64>())
}

/// Formats an error with its sources on one line, for logs and messages: `listing Instance
/// failed: cannot reach …`. The one such formatter of the workspace.
pub struct ErrorChain<'a>(pub &'a (dyn std::error::Error + 'a));

impl fmt::Display for ErrorChain<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)?;
        let mut source = self.0.source();
        while let Some(s) = source {
            write!(f, ": {s}")?;
            source = s.source();
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_the_cap_and_jitter_only_shortens() {
        let (base, max) = (Duration::from_millis(5), Duration::from_secs(1000));
        assert_eq!(backoff_delay(base, max, 0.0, 0), Duration::from_millis(5));
        assert_eq!(backoff_delay(base, max, 0.0, 3), Duration::from_millis(40));
        assert_eq!(backoff_delay(base, max, 0.0, 40), max);
        assert_eq!(backoff_delay(base, max, 0.0, u32::MAX), max);
        for attempt in 0..50 {
            let full = backoff_delay(base, max, 0.0, attempt);
            let jittered = backoff_delay(base, max, 0.5, attempt);
            assert!(jittered <= full && jittered >= full / 2, "{attempt}: {jittered:?} vs {full:?}");
        }
    }

    #[test]
    fn refs_display_as_keys() {
        assert_eq!(ObjectRef::new("default", "web").to_string(), "default/web");
        assert_eq!(ObjectRef::new("", "node-1").to_string(), "node-1");
    }
}

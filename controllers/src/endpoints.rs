//! Endpoints: the ready Instances of each Revision, written as the Revision's `Endpoints` for the
//! gateways (DESIGN §5), as Kubernetes' endpoints controller does for a Service's Pods.
//!
//! For each Revision, the Endpoints named after it in its namespace (controlled by it through an
//! ownerReference, so that it goes with the Revision) lists, sorted by address, every Instance of
//! the Revision (`spec.revisionName`) that is
//!
//! - ready (`status.ready`), with an address (`host:port`),
//! - neither finished nor terminating (no `deletionTimestamp`, reason not `Terminating`),
//!
//! with its instance and node names, the protocol of the Revision's serving port (`h2c` or
//! `http1`) and, when its node advertises one, its address on its own network
//! (`status.containerAddress`, which gateways prefer where the node vouches for it). An Instance's change reaches its Revision's Endpoints at once (through the informer
//! watch, well within a second); the Endpoints is written only when what it would list changes.

use std::future::Future;
use std::sync::Arc;

use stratus_api::v1::{EndpointAddress, Endpoints, EndpointsSpec, Instance, OwnerReference, Revision};
use stratus_api::{Resource, serving_container};
use stratus_client::Error as ApiError;
use stratus_client::runtime::{Action, Controller, ObjectRef};
use tracing::debug;

use crate::context::Context;
use crate::instances::is_finished;

/// The controller's name in metrics and logs.
pub const NAME: &str = "endpoints";

/// The label naming the Service of a Revision (and of its Instances and Endpoints).
pub use stratus_api::wellknown::labels::SERVICE as SERVICE_LABEL;

/// The label naming the Revision of an Instance or Endpoints.
pub use stratus_api::wellknown::labels::REVISION as REVISION_LABEL;

const WORKERS: usize = 4;

/// Why writing a Revision's Endpoints failed; it is retried with backoff.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("creating the endpoints of revision {revision} failed")]
    Create {
        revision: ObjectRef,
        #[source]
        source: ApiError,
    },
    #[error("updating the endpoints of revision {revision} failed")]
    Update {
        revision: ObjectRef,
        #[source]
        source: ApiError,
    },
}

/// Runs the controller until `shutdown`.
pub async fn run(ctx: Arc<Context>, shutdown: impl Future<Output = ()> + Send) {
    Controller::new(&ctx.revisions, ctx.clone())
        .owns(&ctx.endpoints)
        .watches(&ctx.instances, |inst: &Instance| {
            let rev = inst.spec.as_ref().map(|s| s.revision_name.as_str()).unwrap_or_default();
            if rev.is_empty() { Vec::new() } else { vec![ObjectRef::new(inst.meta().namespace.clone(), rev)] }
        })
        .metrics(NAME, ctx.metrics.clone())
        .run(reconcile, |_, _, _| Action::backoff(), WORKERS, shutdown)
        .await;
}

async fn reconcile(rev: Arc<Revision>, ctx: Arc<Context>) -> Result<Action, Error> {
    sync(&rev, &ctx).await
}

/// Whether an Instance should receive requests.
pub fn serves(inst: &Instance) -> bool {
    let Some(status) = &inst.status else { return false };
    status.ready
        && has_port(&status.address)
        && status.reason != "Terminating"
        && inst.meta().deletion_timestamp.is_none()
        && !is_finished(inst)
}

/// The protocol of a Revision's serving port: `h2c` when its name says so, else `http1`.
pub fn protocol(rev: &Revision) -> &'static str {
    let containers = rev.spec.as_ref().map(|s| s.containers.as_slice()).unwrap_or_default();
    let named_h2c = serving_container(containers).and_then(|c| c.ports.first()).is_some_and(|p| p.name == "h2c");
    if named_h2c { "h2c" } else { "http1" }
}

/// The Endpoints `rev` should have, given the cached Instances of its namespace.
fn desired(rev: &Revision, instances: &[Arc<Instance>]) -> EndpointsSpec {
    let name = &rev.meta().name;
    let protocol = protocol(rev);
    let mut addresses: Vec<EndpointAddress> = instances
        .iter()
        .filter(|i| i.spec.as_ref().is_some_and(|s| &s.revision_name == name) && serves(i))
        .map(|i| EndpointAddress {
            address: i.status.as_ref().map(|s| s.address.clone()).unwrap_or_default(),
            instance_name: i.meta().name.clone(),
            node_name: i.spec.as_ref().map(|s| s.node_name.clone()).unwrap_or_default(),
            protocol: protocol.to_string(),
            container_address: i.status.as_ref().map(|s| s.container_address.clone()).unwrap_or_default(),
        })
        .collect();
    addresses.sort_by(|a, b| a.address.cmp(&b.address).then_with(|| a.instance_name.cmp(&b.instance_name)));
    EndpointsSpec { revision_name: name.clone(), addresses }
}

/// Writes `rev`'s Endpoints if it is missing or lists anything else.
async fn sync(rev: &Revision, ctx: &Context) -> Result<Action, Error> {
    let meta = rev.meta();
    let key = ObjectRef::from_obj(rev);
    let spec = desired(rev, &ctx.instances.store().list_by_namespace(&meta.namespace));
    let owner = OwnerReference {
        api_version: stratus_api::API_VERSION.into(),
        kind: Revision::INFO.kind.into(),
        name: meta.name.clone(),
        uid: meta.uid.clone(),
        controller: true,
        block_owner_deletion: true,
    };
    let mut labels = std::collections::BTreeMap::new();
    if let Some(service) = meta.labels.get(SERVICE_LABEL) {
        labels.insert(SERVICE_LABEL.to_string(), service.clone());
    }
    labels.insert(REVISION_LABEL.to_string(), meta.name.clone());

    let Some(current) = ctx.endpoints.store().get(&meta.namespace, &meta.name) else {
        let mut ep = Endpoints { spec: Some(spec), ..Default::default() };
        let m = ep.meta_mut();
        m.name = meta.name.clone();
        m.namespace = meta.namespace.clone();
        m.labels = labels;
        m.owner_references = vec![owner];
        // AlreadyExists means the cache is behind: retried once it has caught up.
        ctx.client.create(ep).await.map_err(|source| Error::Create { revision: key.clone(), source })?;
        debug!(revision = %key, "created the endpoints");
        return Ok(Action::await_change());
    };
    // Another controller owner (a deleted Revision of the same name) gives way to this one.
    let mut owners: Vec<OwnerReference> =
        current.meta().owner_references.iter().filter(|o| !o.controller || **o == owner).cloned().collect();
    if !owners.contains(&owner) {
        owners.push(owner);
    }
    let mut want_labels = current.meta().labels.clone();
    want_labels.extend(labels);
    if current.spec.as_ref() == Some(&spec)
        && current.meta().owner_references == owners
        && current.meta().labels == want_labels
    {
        return Ok(Action::await_change());
    }
    let mut updated = Endpoints::clone(&current);
    updated.spec = Some(spec);
    updated.meta_mut().owner_references = owners;
    updated.meta_mut().labels = want_labels;
    match ctx.client.update(updated).await {
        Ok(_) => {
            debug!(revision = %key, "updated the endpoints");
            Ok(Action::await_change())
        }
        // Deleted meanwhile: the deletion brings the key back, and the next pass creates it.
        Err(ApiError::NotFound(_)) => Ok(Action::await_change()),
        Err(source) => Err(Error::Update { revision: key, source }),
    }
}

/// Whether `address` is `host:port` with a valid port (what the API accepts in Endpoints).
fn has_port(address: &str) -> bool {
    address.rsplit_once(':').is_some_and(|(host, port)| !host.is_empty() && port.parse::<u16>().is_ok_and(|p| p > 0))
}

#[cfg(test)]
mod tests {
    use stratus_api::v1::{Container, ContainerPort, InstanceSpec, InstanceStatus, RevisionSpec};

    use super::*;

    fn revision(port_name: &str) -> Revision {
        let mut rev = Revision {
            spec: Some(RevisionSpec {
                containers: vec![Container {
                    ports: vec![ContainerPort { name: port_name.into(), container_port: 8080, ..Default::default() }],
                    ..Default::default()
                }],
                ..Default::default()
            }),
            ..Default::default()
        };
        rev.meta_mut().name = "web-00001".into();
        rev.meta_mut().namespace = "default".into();
        rev
    }

    fn instance(name: &str, revision: &str, ready: bool, address: &str) -> Arc<Instance> {
        let mut inst = Instance {
            spec: Some(InstanceSpec { revision_name: revision.into(), node_name: "n1".into(), ..Default::default() }),
            status: Some(InstanceStatus {
                phase: "Running".into(),
                ready,
                address: address.into(),
                ..Default::default()
            }),
            ..Default::default()
        };
        inst.meta_mut().name = name.into();
        inst.meta_mut().namespace = "default".into();
        Arc::new(inst)
    }

    #[test]
    fn only_ready_addressed_live_instances_of_the_revision_are_listed_sorted() {
        let mut terminating = (*instance("e", "web-00001", true, "10.0.0.5:80")).clone();
        terminating.meta_mut().deletion_timestamp = Some(Default::default());
        let instances = vec![
            instance("b", "web-00001", true, "10.0.0.2:80"),
            instance("a", "web-00001", true, "10.0.0.1:80"),
            instance("c", "web-00001", false, "10.0.0.3:80"),
            instance("d", "web-00002", true, "10.0.0.4:80"),
            Arc::new(terminating),
            instance("f", "web-00001", true, ""),
            instance("g", "web-00001", true, "nonsense"),
        ];
        let spec = desired(&revision("h2c"), &instances);
        let listed: Vec<_> = spec.addresses.iter().map(|a| (a.instance_name.as_str(), a.address.as_str())).collect();
        assert_eq!(listed, [("a", "10.0.0.1:80"), ("b", "10.0.0.2:80")]);
        assert!(spec.addresses.iter().all(|a| a.protocol == "h2c" && a.node_name == "n1"));
        assert_eq!(spec.revision_name, "web-00001");
    }

    #[test]
    fn the_protocol_is_http1_unless_the_port_says_h2c() {
        assert_eq!(protocol(&revision("h2c")), "h2c");
        assert_eq!(protocol(&revision("http1")), "http1");
        assert_eq!(protocol(&revision("")), "http1");
    }
}

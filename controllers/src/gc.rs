//! The garbage collector: objects whose owners are gone are deleted, which is how deleting a
//! Service deletes its Revisions, and deleting a Revision its Instances and Endpoints
//! (cascading, in the background, as Kubernetes does by default).
//!
//! What it guarantees:
//! - A Revision, Instance or Endpoints is deleted when it has ownerReferences and none of its
//!   owners exists: an owner exists when an object of its kind, name and uid does (an object
//!   of the same name with another uid is a different object). Owners of kinds this process
//!   does not cache (anything but Service, Revision, Instance, Endpoints and Node) are taken
//!   to exist: nothing is deleted on their account.
//! - Nothing is deleted on the word of a cache alone. Caches of different kinds are not in step
//!   (a Revision can be cached before the Service that made it), so an owner missing from the
//!   cache is looked up on the API server before its dependent is deleted, and the delete is
//!   conditional on the dependent's resourceVersion.
//! - Nothing is deleted before every cache has synced.
//! - A dependent is looked at when it appears or changes, when one of its owners is deleted,
//!   and every [`RESYNC`] anyway.
//!
//! Deleting an Instance only marks it while the node agent's finalizer holds it; the agent
//! stops its container and lets it go.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use futures::{FutureExt, StreamExt, future, stream};
use stratus_api::Resource;
use stratus_api::resource::lookup_kind;
use stratus_api::v1::{Endpoints, Instance, OwnerReference, Revision};
use stratus_client::Error as ClientError;
use stratus_client::runtime::{Action, ChangeKind, Controller, Informer, ObjectRef, Store};
use tracing::info;

use crate::context::Context;

/// How often every dependent is looked at even when nothing changed.
pub const RESYNC: Duration = Duration::from_secs(30);

/// The controller's name in metrics and logs.
const CONTROLLER: &str = "gc";

/// What failed, naming the step and the object.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("looking up {kind} {owner}, owner of {dependent}, failed")]
    LookupOwner {
        kind: String,
        owner: ObjectRef,
        dependent: ObjectRef,
        #[source]
        source: ClientError,
    },
    #[error("deleting {kind} {dependent}, whose owners are gone, failed")]
    Delete {
        kind: &'static str,
        dependent: ObjectRef,
        #[source]
        source: ClientError,
    },
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Runs the garbage collector until `shutdown`.
pub async fn run(ctx: Arc<Context>, shutdown: impl Future<Output = ()> + Send) {
    let shutdown = shutdown.shared();
    // A dependent is only judged once its owners' caches are complete.
    let synced = async {
        tokio::join!(
            ctx.services.wait_synced(),
            ctx.revisions.wait_synced(),
            ctx.instances.wait_synced(),
            ctx.endpoints.wait_synced(),
            ctx.nodes.wait_synced(),
        )
    };
    tokio::select! {
        _ = synced => {}
        () = shutdown.clone() => return,
    }
    tokio::join!(
        collector::<Revision>(&ctx, &ctx.revisions, shutdown.clone()),
        collector::<Instance>(&ctx, &ctx.instances, shutdown.clone()),
        collector::<Endpoints>(&ctx, &ctx.endpoints, shutdown),
    );
}

/// The collector of the dependents of kind `K`: reconciles each when it changes, when one of
/// its owners (a Service or a Revision) is deleted, and every [`RESYNC`].
async fn collector<K: Resource>(ctx: &Arc<Context>, dependents: &Informer<K>, shutdown: impl Future<Output = ()>) {
    let owner_deleted = stream::select(
        deleted_owners(&ctx.services, dependents.store()),
        deleted_owners(&ctx.revisions, dependents.store()),
    );
    Controller::new(dependents, ctx.clone())
        .triggers(owner_deleted)
        .metrics(CONTROLLER, ctx.metrics.clone())
        .run(reconcile::<K>, |_, _, _| Action::backoff(), 1, shutdown)
        .await;
}

/// The dependents (in `dependents`) of every object of `owners` that is deleted.
fn deleted_owners<O: Resource, K: Resource>(
    owners: &Informer<O>,
    dependents: Store<K>,
) -> impl futures::Stream<Item = ObjectRef> + Send + 'static {
    owners.subscribe().filter(|change| future::ready(change.kind == ChangeKind::Deleted)).flat_map(move |change| {
        let owner = change.object.meta();
        let refs: Vec<ObjectRef> = dependents
            .list_by_namespace(&owner.namespace)
            .iter()
            .filter(|d| d.meta().owner_references.iter().any(|o| o.uid == owner.uid))
            .map(|d| ObjectRef::from_obj(d.as_ref()))
            .collect();
        stream::iter(refs)
    })
}

async fn reconcile<K: Resource>(obj: Arc<K>, ctx: Arc<Context>) -> Result<Action> {
    collect(obj.as_ref(), &ctx).await
}

/// Deletes `obj` if it has owners and none exists; otherwise looks again after [`RESYNC`].
async fn collect<K: Resource>(obj: &K, ctx: &Context) -> Result<Action> {
    let meta = obj.meta();
    if meta.deletion_timestamp.is_some() || meta.owner_references.is_empty() {
        return Ok(Action::await_change());
    }
    let dependent = ObjectRef::from_obj(obj);
    if meta.owner_references.iter().any(|o| cached(ctx, &meta.namespace, o)) {
        return Ok(Action::requeue(RESYNC));
    }
    // Missing from the caches; the API server has the last word.
    for owner in &meta.owner_references {
        if exists(ctx, &meta.namespace, owner, &dependent).await? {
            return Ok(Action::requeue(RESYNC));
        }
    }
    let kind = K::INFO.kind;
    match ctx.client.delete_any(kind, &dependent.namespace, &dependent.name, Some(&meta.resource_version)).await {
        Ok(_) => {
            let owners: Vec<String> = meta.owner_references.iter().map(|o| format!("{} {}", o.kind, o.name)).collect();
            info!(kind, object = %dependent, owners = owners.join(", "), "deleted: its owners are gone");
            Ok(Action::await_change())
        }
        Err(ClientError::NotFound(_)) => Ok(Action::await_change()),
        // Changed since it was cached: the new version comes through the cache and is judged
        // again (the backoff covers a cache that is slow to show it).
        Err(source) => Err(Error::Delete { kind, dependent, source }),
    }
}

/// Where an owner of an object in `namespace` lives: owners of namespaced kinds are in the same
/// namespace (ownerReferences do not cross namespaces), cluster-scoped ones in none.
fn owner_ref(namespace: &str, owner: &OwnerReference) -> Option<ObjectRef> {
    let info = lookup_kind(&owner.kind)?;
    Some(ObjectRef::new(if info.namespaced { namespace } else { "" }, owner.name.clone()))
}

/// Whether the cache holds `owner` (that very object: same uid). Kinds not cached count as
/// present.
fn cached(ctx: &Context, namespace: &str, owner: &OwnerReference) -> bool {
    let Some(r) = owner_ref(namespace, owner) else { return true };
    let uid = |o: Option<String>| o.is_some_and(|u| u == owner.uid);
    match owner.kind.as_str() {
        "Service" => uid(ctx.services.store().get_ref(&r).map(|o| o.meta().uid.clone())),
        "Revision" => uid(ctx.revisions.store().get_ref(&r).map(|o| o.meta().uid.clone())),
        "Instance" => uid(ctx.instances.store().get_ref(&r).map(|o| o.meta().uid.clone())),
        "Endpoints" => uid(ctx.endpoints.store().get_ref(&r).map(|o| o.meta().uid.clone())),
        "Node" => uid(ctx.nodes.store().get_ref(&r).map(|o| o.meta().uid.clone())),
        _ => true,
    }
}

/// Whether the API server has `owner` (that very object: same uid).
async fn exists(ctx: &Context, namespace: &str, owner: &OwnerReference, dependent: &ObjectRef) -> Result<bool> {
    // An owner of an unknown kind cannot be looked up; it is not ours to judge.
    let Some(r) = owner_ref(namespace, owner) else { return Ok(true) };
    match ctx.client.get_any(&owner.kind, &r.namespace, &r.name).await {
        Ok(found) => Ok(found.meta().uid == owner.uid),
        Err(ClientError::NotFound(_)) => Ok(false),
        Err(source) => {
            Err(Error::LookupOwner { kind: owner.kind.clone(), owner: r, dependent: dependent.clone(), source })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn owners_live_in_their_dependents_namespace_unless_cluster_scoped() {
        let owner = |kind: &str| OwnerReference { kind: kind.into(), name: "x".into(), ..Default::default() };
        assert_eq!(owner_ref("ns", &owner("Service")), Some(ObjectRef::new("ns", "x")));
        assert_eq!(owner_ref("ns", &owner("Node")), Some(ObjectRef::new("", "x")));
        assert_eq!(owner_ref("ns", &owner("Gadget")), None);
    }
}

//! A parent's children as a controller reads them: the objects that carry the parent's name in
//! a label and name it their controller (a Service's Revisions, a Revision's Instances). The
//! label finds them; only the controller reference makes them the parent's, so an object
//! labelled by hand, or left by a deleted parent of the same name, is never taken for a child.

use std::sync::Arc;

use stratus_api::Resource;
use stratus_client::{Client, Error as ClientError, ListParams};

/// Whether `parent` controls `child`: they share a namespace and `child` has a controller
/// owner reference to `parent`'s kind and uid.
pub(crate) fn controls<P: Resource, C: Resource>(parent: &P, child: &C) -> bool {
    let (parent, kind, child) = (parent.meta(), P::INFO.kind, child.meta());
    child.namespace == parent.namespace
        && child.owner_references.iter().any(|o| o.controller && o.kind == kind && o.uid == parent.uid)
}

/// The children of `parent` as the API server has them now: the objects of its namespace
/// labelled `label={parent's name}` that it [`controls`]. Fails as the list fails.
pub(crate) async fn list_controlled<P: Resource, C: Resource>(
    client: &Client,
    parent: &P,
    label: &str,
) -> Result<Vec<Arc<C>>, ClientError> {
    let params = ListParams {
        namespace: parent.meta().namespace.clone(),
        label_selector: format!("{label}={}", parent.meta().name),
        ..Default::default()
    };
    let list = client.list_all::<C>(&params).await?;
    Ok(list.items.into_iter().filter(|child| controls(parent, child)).map(Arc::new).collect())
}

#[cfg(test)]
mod tests {
    use stratus_api::v1::{OwnerReference, Revision, Service};

    use super::*;

    fn service() -> Service {
        let mut svc = Service::default();
        let meta = svc.meta_mut();
        (meta.namespace, meta.name, meta.uid) = ("default".into(), "hello".into(), "uid-1".into());
        svc
    }

    fn revision(namespace: &str, owner: OwnerReference) -> Revision {
        let mut rev = Revision::default();
        rev.meta_mut().namespace = namespace.into();
        rev.meta_mut().owner_references.push(owner);
        rev
    }

    #[test]
    fn only_a_controller_reference_to_the_parent_in_its_namespace_makes_a_child() {
        let svc = service();
        let owner =
            OwnerReference { kind: "Service".into(), uid: "uid-1".into(), controller: true, ..Default::default() };
        assert!(controls(&svc, &revision("default", owner.clone())));
        assert!(!controls(&svc, &revision("other", owner.clone())), "another namespace");
        let not_controller = OwnerReference { controller: false, ..owner.clone() };
        assert!(!controls(&svc, &revision("default", not_controller)), "an owner that is not the controller");
        let other_uid = OwnerReference { uid: "uid-2".into(), ..owner.clone() };
        assert!(!controls(&svc, &revision("default", other_uid)), "a deleted parent of the same name");
        let other_kind = OwnerReference { kind: "Revision".into(), ..owner };
        assert!(!controls(&svc, &revision("default", other_kind)), "another kind with the same uid");
    }
}

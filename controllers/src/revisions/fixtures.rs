//! Revisions and Instances as the revisions controller's unit tests build them.

use std::sync::Arc;

use stratus_api::Resource;
use stratus_api::capacity::Overcommit;
use stratus_api::v1::{Container, Instance, InstanceStatus, Revision, RevisionSpec, Scaling};

use super::plan::instance_for;
use crate::services::SERVICE_LABEL;

/// Revision `default/hello-00001` of service `hello` (uid `rev-uid`): one container serving on
/// 8080, `minInstances` as given, at most 3, `containerConcurrency` 10.
pub(super) fn revision(min: i32) -> Revision {
    let spec = RevisionSpec {
        containers: vec![Container {
            image: "127.0.0.1:5000/hello:v1".into(),
            ports: vec![stratus_api::v1::ContainerPort { container_port: 8080, ..Default::default() }],
            ..Default::default()
        }],
        scaling: Some(Scaling { min_instances: Some(min), max_instances: Some(3), ..Default::default() }),
        container_concurrency: Some(10),
        ..Default::default()
    };
    let mut rev = Revision { spec: Some(spec), ..Default::default() };
    let meta = rev.meta_mut();
    meta.name = "hello-00001".into();
    meta.namespace = "default".into();
    meta.uid = "rev-uid".into();
    meta.generation = 1;
    meta.labels.insert(SERVICE_LABEL.into(), "hello".into());
    rev
}

/// An Instance of [`revision`] named `name`, created at `created` seconds, on `node`, with
/// status `st`.
pub(super) fn instance(name: &str, created: i64, node: &str, st: InstanceStatus) -> Arc<Instance> {
    let mut inst = instance_for(&revision(0), "x", &Overcommit::default());
    inst.meta_mut().name = name.into();
    inst.meta_mut().creation_timestamp = Some(stratus_api::Timestamp { seconds: created, nanos: 0 });
    if let Some(spec) = inst.spec.as_mut() {
        spec.node_name = node.into();
    }
    inst.status = Some(st);
    Arc::new(inst)
}

/// The status of a running Instance.
pub(super) fn running(ready: bool) -> InstanceStatus {
    InstanceStatus { phase: "Running".into(), ready, ..Default::default() }
}

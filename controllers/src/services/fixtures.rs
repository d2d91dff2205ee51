//! Services and Revisions as the services controller's unit tests build them.

use stratus_api::Resource;
use stratus_api::v1::{
    Container, EnvVar, ObjectMeta, Revision, RevisionSpec, RevisionTemplate, Service, ServiceSpec, TrafficTarget,
};

use super::template::{GENERATION_ANNOTATION, SERVICE_LABEL, controller_ref, template_of};
use crate::status::{self, Cond, READY};

/// `rev` with its Ready condition reported as given.
pub(super) fn with_ready(mut rev: Revision, status_: &'static str, reason: &str, message: &str) -> Revision {
    let mut st = rev.status.take().unwrap_or_default();
    status::set(&mut st.conditions, &Cond::new(READY, status_, reason, message));
    rev.status = Some(st);
    rev
}

/// Service `default/hello` (generation 3) with this traffic and a template named
/// `template_name` (empty: none) whose only difference from others is `env`.
pub(super) fn service(traffic: Vec<TrafficTarget>, template_name: &str, env: &str) -> Service {
    let container = Container {
        image: "127.0.0.1:5000/hello:v1".into(),
        env: vec![EnvVar { name: "GREETING".into(), value: env.into(), value_from: None }],
        ..Default::default()
    };
    let template = RevisionTemplate {
        metadata: Some(ObjectMeta { name: template_name.into(), ..Default::default() }),
        spec: Some(RevisionSpec { containers: vec![container], ..Default::default() }),
    };
    let mut svc = Service {
        spec: Some(ServiceSpec { template: Some(template), traffic, ..Default::default() }),
        ..Default::default()
    };
    let meta = svc.meta_mut();
    meta.name = "hello".into();
    meta.namespace = "default".into();
    meta.uid = "svc-uid".into();
    meta.generation = 3;
    svc
}

/// Revision `name` made from `svc`'s template for Service generation `generation`.
pub(super) fn revision_of(svc: &Service, name: &str, generation: i64) -> Revision {
    let template = template_of(svc);
    let mut rev = Revision { spec: template.spec, ..Default::default() };
    let meta = rev.meta_mut();
    meta.name = name.into();
    meta.namespace = "default".into();
    meta.labels.insert(SERVICE_LABEL.into(), "hello".into());
    meta.annotations.insert(GENERATION_ANNOTATION.into(), generation.to_string());
    meta.owner_references.push(controller_ref(svc));
    rev
}

/// A traffic target for the latest ready revision.
pub(super) fn latest(percent: i32) -> TrafficTarget {
    TrafficTarget { latest_revision: Some(true), percent: Some(percent), ..Default::default() }
}

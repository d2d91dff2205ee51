//! Defaulting: what an object means when a field is left out, filled in before validation so
//! that what is stored is explicit. The defaults are Cloud Run's.

use crate::resource::AnyObject;
use crate::v1::{ContainerPort, ResourceRequirements, RevisionSpec, Scaling, ServiceSpec, TrafficTarget};

pub const CONTAINER_CONCURRENCY: i32 = 80;
pub const TIMEOUT_SECONDS: i32 = 300;
pub const PORT: i32 = 8080;
pub const MIN_INSTANCES: i32 = 0;
pub const MAX_INSTANCES: i32 = 100;
pub const TARGET_UTILIZATION_PERCENTAGE: i32 = 70;
pub const INITIAL_SCALE: i32 = 1;
pub const TERMINATION_GRACE_PERIOD_SECONDS: i32 = 10;
pub const CPU_LIMIT: &str = "1";
pub const MEMORY_LIMIT: &str = "512Mi";
/// The name Knative gives a revision's only container.
pub const CONTAINER_NAME: &str = "user-container";

/// Fills every defaulted field of `obj` that is unset, and sets `apiVersion` and `kind`.
pub fn apply(obj: &mut AnyObject) {
    obj.set_type_meta();
    if obj.info().namespaced && obj.meta().namespace.is_empty() {
        obj.meta_mut().namespace = crate::DEFAULT_NAMESPACE.to_string();
    }
    match obj {
        AnyObject::Service(s) => service_spec(s.spec.get_or_insert_with(Default::default)),
        AnyObject::Revision(r) => revision_spec(r.spec.get_or_insert_with(Default::default)),
        AnyObject::Event(e) => {
            let spec = e.spec.get_or_insert_with(Default::default);
            if spec.r#type.is_empty() {
                spec.r#type = "Normal".into();
            }
            if spec.count == 0 {
                spec.count = 1;
            }
        }
        AnyObject::Secret(secret) if secret.r#type.is_empty() => secret.r#type = "Opaque".into(),
        _ => {}
    }
}

fn service_spec(spec: &mut ServiceSpec) {
    let template = spec.template.get_or_insert_with(Default::default);
    revision_spec(template.spec.get_or_insert_with(Default::default));
    if spec.traffic.is_empty() {
        spec.traffic.push(TrafficTarget { latest_revision: Some(true), percent: Some(100), ..Default::default() });
    }
    for t in &mut spec.traffic {
        if t.latest_revision.is_none() {
            t.latest_revision = Some(t.revision_name.is_empty());
        }
        if t.percent.is_none() {
            t.percent = Some(0);
        }
    }
}

/// Fills the defaults of a revision template.
pub fn revision_spec(spec: &mut RevisionSpec) {
    spec.container_concurrency.get_or_insert(CONTAINER_CONCURRENCY);
    spec.timeout_seconds.get_or_insert(TIMEOUT_SECONDS);
    spec.cpu_throttling.get_or_insert(true);
    spec.termination_grace_period_seconds.get_or_insert(TERMINATION_GRACE_PERIOD_SECONDS);
    let scaling = spec.scaling.get_or_insert_with(Scaling::default);
    scaling.min_instances.get_or_insert(MIN_INSTANCES);
    scaling.max_instances.get_or_insert(MAX_INSTANCES.max(scaling.min_instances.unwrap_or(0)));
    if scaling.metric.is_empty() {
        scaling.metric = "concurrency".into();
    }
    scaling.target_utilization_percentage.get_or_insert(TARGET_UTILIZATION_PERCENTAGE);
    scaling.initial_scale.get_or_insert(INITIAL_SCALE);

    let single = spec.containers.len() == 1;
    for (i, c) in spec.containers.iter_mut().enumerate() {
        if c.name.is_empty() {
            c.name = if i == 0 { CONTAINER_NAME.to_string() } else { format!("container-{i}") };
        }
        if let Some(sc) = &mut c.security_context {
            crate::pod_security::normalize(sc);
        }
        if c.image_pull_policy.is_empty() {
            c.image_pull_policy = "IfNotPresent".into();
        }
        if single && c.ports.is_empty() {
            c.ports.push(ContainerPort { container_port: PORT, ..Default::default() });
        }
        for p in &mut c.ports {
            if p.name.is_empty() {
                p.name = "http1".into();
            }
            if p.container_port == 0 {
                p.container_port = PORT;
            }
            if p.protocol.is_empty() {
                p.protocol = "TCP".into();
            }
        }
        let res = c.resources.get_or_insert_with(ResourceRequirements::default);
        for (resource, default) in [("cpu", CPU_LIMIT), ("memory", MEMORY_LIMIT)] {
            // A request above the default limit raises the limit to it (a limit left out must
            // not make a request invalid); a request that does not parse is validation's to report.
            let requested = res.requests.get(resource).filter(|r| {
                let (r, d) = (r.parse::<crate::quantity::Quantity>(), default.parse::<crate::quantity::Quantity>());
                matches!((r, d), (Ok(r), Ok(d)) if r.nanos() > d.nanos())
            });
            let limit = requested.cloned().unwrap_or_else(|| default.to_string());
            res.limits.entry(resource.into()).or_insert(limit);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Resource;
    use crate::v1::{Container, RevisionTemplate, Service};

    #[test]
    fn service_defaults_are_cloud_runs() {
        let svc = Service {
            spec: Some(ServiceSpec {
                template: Some(RevisionTemplate {
                    metadata: None,
                    spec: Some(RevisionSpec {
                        containers: vec![Container { image: "hello".into(), ..Default::default() }],
                        ..Default::default()
                    }),
                }),
                ..Default::default()
            }),
            ..Default::default()
        };
        let mut any = svc.into_any();
        apply(&mut any);
        let AnyObject::Service(svc) = any else { unreachable!() };
        let spec = svc.spec.unwrap_or_default();
        let rs = spec.template.and_then(|t| t.spec).unwrap_or_default();
        assert_eq!(rs.container_concurrency, Some(80));
        assert_eq!(rs.timeout_seconds, Some(300));
        let scaling = rs.scaling.unwrap_or_default();
        assert_eq!(scaling.max_instances, Some(100));
        assert_eq!(scaling.min_instances, Some(0));
        assert_eq!(rs.containers[0].ports[0].container_port, 8080);
        assert_eq!(rs.containers[0].name, "user-container");
        assert_eq!(spec.traffic.len(), 1);
        assert_eq!(spec.traffic[0].percent, Some(100));
        assert_eq!(spec.traffic[0].latest_revision, Some(true));
    }

    #[test]
    fn a_request_above_the_default_limit_raises_the_limit() {
        let container = |requests: &[(&str, &str)]| Container {
            image: "hello".into(),
            resources: Some(ResourceRequirements {
                requests: requests.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
                ..Default::default()
            }),
            ..Default::default()
        };
        let mut spec =
            RevisionSpec { containers: vec![container(&[("cpu", "2"), ("memory", "100Mi")])], ..Default::default() };
        revision_spec(&mut spec);
        let limits = spec.containers[0].resources.clone().unwrap_or_default().limits;
        assert_eq!(limits.get("cpu").map(String::as_str), Some("2"));
        assert_eq!(limits.get("memory").map(String::as_str), Some(MEMORY_LIMIT));
    }
}

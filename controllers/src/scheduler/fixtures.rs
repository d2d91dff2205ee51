//! Instances and requests as the scheduler's unit tests build them.

use stratus_api::Resource;
use stratus_api::v1::{Container, Instance, InstanceSpec, ResourceRequirements};

use super::fit::Resources;

/// Instance `default/web-1` (uid `u1`, resourceVersion 7) of revision `web-00001`, its serving
/// container (the one with a port, after a sidecar) with these requests and limits.
pub(super) fn instance(requests: &[(&str, &str)], limits: &[(&str, &str)]) -> Instance {
    let map = |kv: &[(&str, &str)]| kv.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
    let mut inst = Instance {
        spec: Some(InstanceSpec {
            revision_name: "web-00001".into(),
            containers: vec![
                Container { name: "sidecar".into(), ..Default::default() },
                Container {
                    name: "app".into(),
                    ports: vec![Default::default()],
                    resources: Some(ResourceRequirements { requests: map(requests), limits: map(limits) }),
                    ..Default::default()
                },
            ],
            ..Default::default()
        }),
        ..Default::default()
    };
    inst.meta_mut().namespace = "default".into();
    inst.meta_mut().name = "web-1".into();
    inst.meta_mut().uid = "u1".into();
    inst.meta_mut().resource_version = "7".into();
    inst
}

/// One instance's worth of cpu and memory.
pub(super) fn req(cpu_millis: i128, memory_bytes: i128) -> Resources {
    Resources { cpu_millis, memory_bytes, instances: 1 }
}

//! The Stratus resource model.
//!
//! Every kind is generated from `proto/` (the single source of truth). The same object has one
//! shape everywhere: protobuf over gRPC and in the store, proto3 JSON (camelCase, the Kubernetes
//! layout of apiVersion/kind/metadata/spec/status) over HTTP and in YAML manifests.

pub mod billing;
pub mod capacity;
pub mod decode;
pub mod defaults;
pub mod duration;
pub mod fence;
pub mod identity;
mod json_numbers;
pub mod knative;
pub mod node;
pub mod patterns;
pub mod pod_security;
pub mod quantity;
pub mod resource;
pub mod selector;
pub mod time;
pub mod validation;
pub mod wellknown;

/// The generated types of `stratus.v1`.
#[allow(clippy::all, clippy::unwrap_used, missing_docs)]
pub mod v1 {
    include!(concat!(env!("OUT_DIR"), "/stratus.v1.rs"));
    include!(concat!(env!("OUT_DIR"), "/stratus.v1.serde.rs"));
}

/// The encoded descriptors of every Stratus proto, for gRPC server reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/stratus_descriptor.bin"));

/// The API group and version of every platform kind.
pub const API_VERSION: &str = "stratus.dev/v1";

/// The namespace that exists from the start and that namespaced requests default to.
pub const DEFAULT_NAMESPACE: &str = "default";

pub use pbjson_types::Timestamp;
pub use resource::{AnyObject, KindInfo, Resource};
pub use v1::*;

/// The container of a revision (or instance) that receives requests: the first with a port,
/// else the first. Its resources are what the scheduler counts and its port is what the
/// gateway reaches; the others are sidecars.
pub fn serving_container(containers: &[Container]) -> Option<&Container> {
    containers.iter().find(|c| !c.ports.is_empty()).or_else(|| containers.first())
}

/// Everything done to an object before it is stored: Knative/Cloud Run annotations become spec
/// fields, defaults are filled, and the result is validated.
pub fn prepare(obj: &mut AnyObject) -> Result<(), validation::ErrorList> {
    prepare_with(obj, None)
}

/// [`prepare`] for an object that replaces `stored` (an update or an apply): validated with
/// [`validation::validate_replacing`], so that a container whose `securityContext` is unchanged
/// is not held to Pod Security rules made after it was stored.
pub fn prepare_replacing(obj: &mut AnyObject, stored: &AnyObject) -> Result<(), validation::ErrorList> {
    prepare_with(obj, Some(stored))
}

fn prepare_with(obj: &mut AnyObject, stored: Option<&AnyObject>) -> Result<(), validation::ErrorList> {
    if let AnyObject::Service(svc) = obj
        && let Some(template) = svc.spec.as_mut().and_then(|s| s.template.as_mut())
    {
        let annotations = template.metadata.as_ref().map(|m| m.annotations.clone()).unwrap_or_default();
        let spec = template.spec.get_or_insert_with(Default::default);
        knative::apply_annotations(spec, &annotations, "spec.template.metadata.annotations")?;
    }
    defaults::apply(obj);
    match stored {
        Some(stored) => validation::validate_replacing(obj, stored),
        None => validation::validate(obj),
    }
}

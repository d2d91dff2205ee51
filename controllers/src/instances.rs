//! What the controllers read of an Instance, read the same way by each of them: the scheduler
//! (what is pending, what holds room), the revisions controller (what runs, what is replaced),
//! the endpoints controller (what serves) and the nodes controller (what a lost node ran).
//!
//! Phases are taken as final once `Succeeded` or `Failed`, as Kubernetes takes them.

use stratus_api::v1::Instance;

/// The node an Instance is bound to; empty while pending.
pub fn node_name(inst: &Instance) -> &str {
    inst.spec.as_ref().map(|s| s.node_name.as_str()).unwrap_or_default()
}

/// Whether the Instance is bound to a node.
pub fn is_bound(inst: &Instance) -> bool {
    !node_name(inst).is_empty()
}

/// Whether the Instance finished (Succeeded or Failed) and holds no resources any more.
pub fn is_finished(inst: &Instance) -> bool {
    inst.status.as_ref().is_some_and(|s| matches!(s.phase.as_str(), "Succeeded" | "Failed"))
}

/// Whether the Instance's agent reports it ready.
pub fn is_ready(inst: &Instance) -> bool {
    inst.status.as_ref().is_some_and(|s| s.ready)
}

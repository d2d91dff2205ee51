//! The Node annotation through which schedulers reserve room before they bind: how an entry is
//! read and written, and when it is released. Why it exists: "Reservations" in the
//! [scheduler's documentation](super).

use serde_json::{Value, json};
use stratus_api::Resource;
use stratus_api::v1::{Instance, Node};
use stratus_client::runtime::ObjectRef;
use tracing::warn;

use super::fit::Resources;
use crate::instances::{is_finished, node_name};

/// The Node annotation holding the scheduler's reservations: a JSON array with one
/// `[uid, "namespace/name", resourceVersion, cpuMillis, memoryBytes]` per Instance bound or
/// being bound there. Written only by schedulers, always at the Node's resourceVersion.
pub use stratus_api::wellknown::annotations::SCHEDULER_RESERVATIONS as RESERVATIONS_ANNOTATION;

/// The Node annotation holding the Instance resourceVersion through which a scheduler's cache
/// must be current to reserve room on the Node: every reservation dropped because its bind had
/// become visible was visible at or before it. Written with the reservations.
pub use stratus_api::wellknown::annotations::SCHEDULER_SETTLED_THROUGH as SETTLED_ANNOTATION;

/// A resourceVersion as a number, for ordering. The store's versions are its revisions; one
/// that is not a number (a cache filled by hand) orders before every other.
pub(super) fn version(resource_version: &str) -> Option<u64> {
    resource_version.parse().ok()
}

/// The resourceVersion recorded in `node`'s [`SETTLED_ANNOTATION`]; 0 when there is none. An
/// unreadable value is skipped as an unreadable reservation is (only schedulers write it).
pub(super) fn settled_through(node: &Node) -> u64 {
    let Some(raw) = node.meta().annotations.get(SETTLED_ANNOTATION) else { return 0 };
    version(raw).unwrap_or_else(|| {
        warn!(node = %node.meta().name, value = %raw, "ignoring an unreadable {SETTLED_ANNOTATION} annotation");
        0
    })
}

/// One entry of a Node's [`RESERVATIONS_ANNOTATION`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct Reservation {
    pub(super) uid: String,
    pub(super) instance: ObjectRef,
    /// The Instance's resourceVersion the bind is made at.
    pub(super) resource_version: String,
    pub(super) requests: Resources,
}

/// The reservations on `node`. Entries that cannot be read are skipped (only schedulers write
/// the annotation; one edited by hand loses its unreadable entries, never blocks the node).
pub(super) fn reservations(node: &Node) -> Vec<Reservation> {
    let Some(raw) = node.meta().annotations.get(RESERVATIONS_ANNOTATION) else { return Vec::new() };
    let entries = match serde_json::from_str::<Vec<Value>>(raw) {
        Ok(entries) => entries,
        Err(e) => {
            warn!(node = %node.meta().name, error = %e, "ignoring an unreadable {RESERVATIONS_ANNOTATION} annotation");
            return Vec::new();
        }
    };
    entries
        .iter()
        .filter_map(|entry| {
            let parsed = decode_reservation(entry);
            if parsed.is_none() {
                warn!(node = %node.meta().name, %entry, "ignoring an unreadable reservation");
            }
            parsed
        })
        .collect()
}

fn decode_reservation(entry: &Value) -> Option<Reservation> {
    let [uid, instance, rv, cpu, memory] = entry.as_array()?.as_slice() else { return None };
    let (namespace, name) = instance.as_str()?.split_once('/')?;
    Some(Reservation {
        uid: uid.as_str()?.to_string(),
        instance: ObjectRef::new(namespace, name),
        resource_version: rv.as_str()?.to_string(),
        requests: Resources { cpu_millis: cpu.as_i64()?.into(), memory_bytes: memory.as_i64()?.into(), instances: 1 },
    })
}

pub(super) fn encode_reservations(entries: &[Reservation]) -> String {
    let clamp = |v: i128| i64::try_from(v).unwrap_or(i64::MAX);
    let values: Vec<Value> = entries
        .iter()
        .map(|r| {
            json!([
                r.uid,
                format!("{}/{}", r.instance.namespace, r.instance.name),
                r.resource_version,
                clamp(r.requests.cpu_millis),
                clamp(r.requests.memory_bytes),
            ])
        })
        .collect();
    Value::Array(values).to_string()
}

/// Whether `inst` (the reservation's Instance: same uid) still holds `r` on `node`, when its
/// state proves it either way; `None` when it is unbound at another resourceVersion, which a
/// cached copy cannot tell from a stale one.
pub(super) fn holds(inst: &Instance, r: &Reservation, node: &str) -> Option<bool> {
    if is_finished(inst) {
        return Some(false);
    }
    match node_name(inst) {
        bound if bound == node => Some(true),
        "" if inst.meta().resource_version == r.resource_version => Some(true),
        "" => None,
        _elsewhere => Some(false),
    }
}

#[cfg(test)]
mod tests {
    use stratus_api::v1::InstanceStatus;

    use super::*;
    use crate::scheduler::fixtures::{instance, req};

    #[test]
    fn reservations_round_trip_and_skip_garbage() {
        let r = Reservation {
            uid: "u1".into(),
            instance: ObjectRef::new("default", "web-1"),
            resource_version: "42".into(),
            requests: req(500, 128 << 20),
        };
        let mut node = Node::default();
        let encoded = encode_reservations(std::slice::from_ref(&r));
        let with_garbage = encoded.replacen('[', "[[\"broken\"],", 1);
        node.meta_mut().annotations.insert(RESERVATIONS_ANNOTATION.into(), with_garbage);
        assert_eq!(reservations(&node), vec![r]);
        node.meta_mut().annotations.insert(RESERVATIONS_ANNOTATION.into(), "not json".into());
        assert_eq!(reservations(&node), vec![]);
    }

    #[test]
    fn settled_through_reads_a_version_or_nothing() {
        let mut node = Node::default();
        assert_eq!(settled_through(&node), 0);
        node.meta_mut().annotations.insert(SETTLED_ANNOTATION.into(), "1234".into());
        assert_eq!(settled_through(&node), 1234);
        node.meta_mut().annotations.insert(SETTLED_ANNOTATION.into(), "-3".into());
        assert_eq!(settled_through(&node), 0);
        assert_eq!(version(""), None);
    }

    #[test]
    fn a_reservation_is_released_only_on_proof() {
        let mut inst = instance(&[], &[]);
        let r = Reservation {
            uid: "u1".into(),
            instance: ObjectRef::new("default", "web-1"),
            resource_version: "7".into(),
            requests: req(0, 0),
        };
        // Unbound at the reserved version: the bind may still land.
        assert_eq!(holds(&inst, &r, "n1"), Some(true));
        // Unbound at another version: a cached copy cannot tell.
        inst.meta_mut().resource_version = "8".into();
        assert_eq!(holds(&inst, &r, "n1"), None);
        if let Some(spec) = inst.spec.as_mut() {
            spec.node_name = "n1".into();
        }
        assert_eq!(holds(&inst, &r, "n1"), Some(true));
        assert_eq!(holds(&inst, &r, "n2"), Some(false));
        inst.status = Some(InstanceStatus { phase: "Failed".into(), ..Default::default() });
        assert_eq!(holds(&inst, &r, "n1"), Some(false));
    }
}

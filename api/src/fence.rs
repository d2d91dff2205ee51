//! Fencing tokens: how the API server refuses the writes of a leader that was deposed.
//!
//! A leader-elected client (the controllers) sends, with every request of a leadership term,
//! the metadata [`METADATA`]: the Lease it leads by, its identity and the Lease's
//! `leaseTransitions` when it took it ([`Fence`]). The API server takes a write that carries one
//! only while the Lease still names that holder at that transition count, so a leader that
//! lost its Lease (partitioned, paused, slow to notice) cannot write over its successor, even
//! in the seconds before it notices and stops. Reads are never refused.
//!
//! Only the holder and the transition count are compared, never times: the server's clock is
//! not the candidates'. A Lease that expired but that nobody took yet still fences nobody out.

use std::fmt;
use std::str::FromStr;

use crate::v1::Lease;

/// The gRPC metadata (and HTTP header) a fenced request carries.
pub const METADATA: &str = "stratus-fence";

/// One leadership term: the Lease `namespace/name`, held by `holder` since its
/// `leaseTransitions` became `transitions`. Written `namespace/name:transitions:holder`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fence {
    pub namespace: String,
    pub name: String,
    pub holder: String,
    pub transitions: i32,
}

impl fmt::Display for Fence {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}:{}:{}", self.namespace, self.name, self.transitions, self.holder)
    }
}

impl FromStr for Fence {
    type Err = String;

    fn from_str(s: &str) -> Result<Fence, String> {
        let bad = || format!("{METADATA} {s:?}: expected NAMESPACE/NAME:TRANSITIONS:HOLDER");
        let (lease, rest) = s.split_once(':').ok_or_else(bad)?;
        let (transitions, holder) = rest.split_once(':').ok_or_else(bad)?;
        let (namespace, name) = lease.split_once('/').ok_or_else(bad)?;
        let transitions = transitions.parse().map_err(|_| bad())?;
        if namespace.is_empty() || name.is_empty() || holder.is_empty() {
            return Err(bad());
        }
        Ok(Fence { namespace: namespace.into(), name: name.into(), holder: holder.into(), transitions })
    }
}

impl Fence {
    /// Whether a write of this term may be made while the Lease is `lease` (`None`: it does not
    /// exist). The error says why not, for the refusal's message.
    pub fn admits(&self, lease: Option<&Lease>) -> Result<(), String> {
        let Some(spec) = lease.and_then(|l| l.spec.as_ref()) else {
            return Err(format!("{} no longer leads: lease {}/{} is gone", self.holder, self.namespace, self.name));
        };
        if spec.holder_identity == self.holder && spec.lease_transitions == self.transitions {
            return Ok(());
        }
        let now = if spec.holder_identity.is_empty() { "nobody".to_string() } else { spec.holder_identity.clone() };
        Err(format!(
            "{} no longer leads: lease {}/{} is held by {now} (transition {}, this write is of transition {})",
            self.holder, self.namespace, self.name, spec.lease_transitions, self.transitions
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::v1::LeaseSpec;

    fn lease(holder: &str, transitions: i32) -> Lease {
        let spec = LeaseSpec { holder_identity: holder.into(), lease_transitions: transitions, ..Default::default() };
        Lease { spec: Some(spec), ..Default::default() }
    }

    #[test]
    fn a_fence_is_written_and_read_back() {
        let fence = Fence {
            namespace: "stratus-system".into(),
            name: "stratus-controllers".into(),
            holder: "host-1:42".into(),
            transitions: 7,
        };
        assert_eq!(fence.to_string(), "stratus-system/stratus-controllers:7:host-1:42");
        assert_eq!(fence.to_string().parse::<Fence>(), Ok(fence));
        for bad in ["", "ns/name", "ns/name:x:h", "name:1:h", "ns/name:1:", "/name:1:h"] {
            assert!(bad.parse::<Fence>().is_err(), "{bad:?}");
        }
    }

    #[test]
    fn only_the_holder_at_its_transition_is_admitted() {
        let fence: Fence = "ns/l:3:a".parse().unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(fence.admits(Some(&lease("a", 3))), Ok(()));
        let taken = fence.admits(Some(&lease("b", 4))).unwrap_err();
        assert_eq!(taken, "a no longer leads: lease ns/l is held by b (transition 4, this write is of transition 3)");
        // Taken back later: a new term, which the old term's writes are not part of.
        assert!(fence.admits(Some(&lease("a", 5))).is_err());
        assert!(fence.admits(Some(&lease("", 3))).unwrap_err().contains("held by nobody"));
        assert!(fence.admits(None).unwrap_err().contains("is gone"));
    }
}

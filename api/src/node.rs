//! What a Node vouches for: whether it is Ready, and which hosts are its own.
//!
//! The API server dials a node's agent (`status.agentEndpoint`) and the gateway proxies to the
//! instance addresses of Endpoints (each naming its node); both go only to a host the node's
//! agent published in `status.addresses`, and only while the node is Ready. These are the
//! checks they share.

use std::net::IpAddr;

use crate::v1::{Condition, Node};

/// The condition that says a node's agent is up and its container engine answers.
pub const READY: &str = "Ready";

/// The node's `Ready` condition, if it has one.
pub fn ready_condition(node: &Node) -> Option<&Condition> {
    node.status.as_ref()?.conditions.iter().find(|c| c.r#type == READY)
}

/// Whether the node's `Ready` condition is `True`. A node without one (just registered, or
/// written by something other than its agent) is not Ready.
pub fn is_ready(node: &Node) -> bool {
    ready_condition(node).is_some_and(|c| c.status == "True")
}

/// Why the node is not Ready, for error messages: `its Ready condition is False (Reason:
/// message)`, or `it has no Ready condition`; `None` when it is Ready.
pub fn not_ready_reason(node: &Node) -> Option<String> {
    let Some(ready) = ready_condition(node) else { return Some("it has no Ready condition".into()) };
    if ready.status == "True" {
        return None;
    }
    let status = if ready.status.is_empty() { "empty" } else { ready.status.as_str() };
    Some(match (ready.reason.as_str(), ready.message.as_str()) {
        ("", "") => format!("its Ready condition is {status}"),
        (reason, "") => format!("its Ready condition is {status} ({reason})"),
        ("", message) => format!("its Ready condition is {status} ({message})"),
        (reason, message) => format!("its Ready condition is {status} ({reason}: {message})"),
    })
}

/// The addresses the node's agent published (`status.addresses`), in their order.
pub fn addresses(node: &Node) -> impl Iterator<Item = &str> {
    node.status.iter().flat_map(|s| &s.addresses).map(|a| a.address.as_str()).filter(|a| !a.is_empty())
}

/// Whether `host` (an IP address, an IPv6 address in brackets as in a URL, or a host name) is one
/// of the node's addresses. IP addresses compare as addresses (`::1` matches `[::1]` and
/// `0:0::1`); names compare without regard to ASCII case or a trailing dot.
pub fn has_address(node: &Node, host: &str) -> bool {
    let host = Host::of(host);
    addresses(node).any(|a| Host::of(a) == host)
}

/// A host in the form it is compared in.
#[derive(PartialEq, Eq)]
enum Host {
    Ip(IpAddr),
    Name(String),
}

impl Host {
    fn of(text: &str) -> Host {
        let bare = text.strip_prefix('[').and_then(|t| t.strip_suffix(']')).unwrap_or(text);
        match bare.parse::<IpAddr>() {
            Ok(ip) => Host::Ip(ip),
            Err(_) => Host::Name(text.strip_suffix('.').unwrap_or(text).to_ascii_lowercase()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::v1::{NodeAddress, NodeStatus};

    fn node(ready: Option<(&str, &str, &str)>, addresses: &[&str]) -> Node {
        let conditions = ready
            .map(|(status, reason, message)| Condition {
                r#type: READY.into(),
                status: status.into(),
                reason: reason.into(),
                message: message.into(),
                ..Default::default()
            })
            .into_iter()
            .collect();
        let addresses =
            addresses.iter().map(|a| NodeAddress { r#type: "InternalIP".into(), address: a.to_string() }).collect();
        Node { status: Some(NodeStatus { conditions, addresses, ..Default::default() }), ..Default::default() }
    }

    #[test]
    fn only_a_true_ready_condition_is_ready() {
        assert!(is_ready(&node(Some(("True", "AgentReady", "")), &[])));
        assert_eq!(not_ready_reason(&node(Some(("True", "", "")), &[])), None);
        let lost = node(Some(("Unknown", "NodeLost", "the lease expired")), &[]);
        assert!(!is_ready(&lost));
        assert_eq!(
            not_ready_reason(&lost).as_deref(),
            Some("its Ready condition is Unknown (NodeLost: the lease expired)")
        );
        assert_eq!(
            not_ready_reason(&node(Some(("False", "RuntimeUnavailable", "")), &[])).as_deref(),
            Some("its Ready condition is False (RuntimeUnavailable)")
        );
        assert!(!is_ready(&node(None, &[])));
        assert!(!is_ready(&Node::default()));
        assert_eq!(not_ready_reason(&Node::default()).as_deref(), Some("it has no Ready condition"));
    }

    #[test]
    fn hosts_match_the_published_addresses_only() {
        let n = node(None, &["10.0.0.5", "node-1", "fd00::5", ""]);
        for host in ["10.0.0.5", "node-1", "NODE-1", "node-1.", "fd00::5", "[fd00::5]", "[fd00:0::5]"] {
            assert!(has_address(&n, host), "{host}");
        }
        for host in ["10.0.0.6", "127.0.0.1", "node-2", "", "[10.0.0.5]x", "10.0.0.5:80", "fd00::6"] {
            assert!(!has_address(&n, host), "{host}");
        }
        assert!(!has_address(&Node::default(), "10.0.0.5"));
    }
}

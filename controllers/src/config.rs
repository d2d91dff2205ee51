//! The controllers' configuration, with defaults that work on one machine.

use std::time::Duration;

#[derive(Debug, Clone)]
pub struct Config {
    /// The domain services are reached under: `http://{service}.{namespace}.{domain}`.
    pub domain: String,
    /// The gateway's port, in service URLs (omitted when 80).
    pub gateway_port: u16,
    /// How many revisions of a service are kept besides those receiving traffic.
    pub revision_retention: usize,
    /// A Node whose Lease was not renewed for this long is NotReady.
    pub node_grace: Duration,
    /// Where the leader-election Lease lives, and this replica's identity.
    pub system_namespace: String,
    pub identity: String,
    /// Registries that are reached over plain HTTP when resolving image digests (loopback
    /// registries always are).
    pub insecure_registries: Vec<String>,
}

impl Default for Config {
    fn default() -> Config {
        Config {
            domain: "localhost".into(),
            gateway_port: 8080,
            revision_retention: 5,
            node_grace: Duration::from_secs(15),
            system_namespace: "stratus-system".into(),
            identity: format!("stratus-controllers-{}", std::process::id()),
            insecure_registries: Vec::new(),
        }
    }
}

impl Config {
    /// The URL of a service (or of one of its tags).
    pub fn url(&self, host_prefix: &str, namespace: &str) -> String {
        let port = if self.gateway_port == 80 { String::new() } else { format!(":{}", self.gateway_port) };
        format!("http://{host_prefix}.{namespace}.{}{port}", self.domain)
    }
}

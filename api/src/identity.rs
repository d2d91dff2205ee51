//! The vocabulary of identity shared by the API server, the CLI and the gateway: the roles a
//! RoleBinding or a User/ServiceAccount may name, the subjects a binding binds, and how a
//! service account is named as a user.
//!
//! What each role may do is decided in one place, the API server's authorizer; this module only
//! names them, so that a manifest naming an unknown role is refused before it is stored.

/// Roles granted in one namespace by a RoleBinding, from least to most.
pub mod roles {
    /// get, list, watch and read the logs of the namespace's objects.
    pub const VIEWER: &str = "viewer";
    /// A viewer who also creates, changes and deletes Services (and their Revisions).
    pub const DEVELOPER: &str = "developer";
    /// A developer who also manages the namespace's RoleBindings and ServiceAccounts.
    pub const ADMIN: &str = "admin";
    /// May call the namespace's private Services through the gateway; nothing else.
    pub const INVOKER: &str = "invoker";
    /// Every role a RoleBinding may grant.
    pub const NAMESPACED: &[&str] = &[VIEWER, DEVELOPER, ADMIN, INVOKER];

    /// Admin of every namespace of the subject's tenant; creates namespaces and users for it.
    pub const TENANT_ADMIN: &str = "tenant-admin";
    /// Everything.
    pub const CLUSTER_ADMIN: &str = "cluster-admin";
    /// The controllers: the platform's kinds everywhere, never identities.
    pub const SYSTEM_CONTROLLERS: &str = "system:controllers";
    /// A gateway: reads Services, Revisions and Endpoints; writes nothing.
    pub const SYSTEM_GATEWAY: &str = "system:gateway";
    /// A node's agent: its own Node and Lease, and the Instances bound to it.
    pub const SYSTEM_AGENT: &str = "system:agent";
    /// The API server calling the agents (for logs). Grants nothing at the API: a token of it
    /// that an agent kept is worth nothing there.
    pub const SYSTEM_APISERVER: &str = "system:apiserver";
    /// The cluster-wide roles a User may hold.
    pub const USER_CLUSTER: &[&str] = &[TENANT_ADMIN, CLUSTER_ADMIN];
    /// The cluster-wide roles a ServiceAccount may hold.
    pub const ACCOUNT_CLUSTER: &[&str] =
        &[TENANT_ADMIN, CLUSTER_ADMIN, SYSTEM_CONTROLLERS, SYSTEM_GATEWAY, SYSTEM_AGENT, SYSTEM_APISERVER];
}

/// The kinds of subject a RoleBinding binds.
pub mod subjects {
    pub const USER: &str = "User";
    pub const SERVICE_ACCOUNT: &str = "ServiceAccount";
    /// Every user of the named tenant.
    pub const TENANT: &str = "Tenant";
    pub const ALL: &[&str] = &[USER, SERVICE_ACCOUNT, TENANT];
}

/// The tenant that owns the `default` namespace and the first admin.
pub const DEFAULT_TENANT: &str = "default";

/// The user that `stratus up` and `stratus-apiserver --bootstrap-admin` create.
pub const BOOTSTRAP_ADMIN: &str = "admin";

/// On a Service: `authenticated` makes it private (Cloud Run's "require authentication"): the
/// gateway serves it only to callers whose token holds the `invoker` role on it.
pub const INVOKER_ANNOTATION: &str = "stratus.dev/invoker";

/// Cloud Run's way to say a service is public: `"true"` turns the invoker check off, `"false"`
/// keeps it on.
pub const CLOUD_RUN_INVOKER_IAM_DISABLED: &str = "run.googleapis.com/invoker-iam-disabled";

/// Whether a Service with these annotations is private.
pub fn requires_authentication(annotations: &std::collections::BTreeMap<String, String>) -> bool {
    annotations.get(INVOKER_ANNOTATION).is_some_and(|v| v.eq_ignore_ascii_case("authenticated"))
        || annotations.get(CLOUD_RUN_INVOKER_IAM_DISABLED).is_some_and(|v| v.eq_ignore_ascii_case("false"))
}

/// The prefix of a service account's user name.
const SERVICE_ACCOUNT_PREFIX: &str = "system:serviceaccount:";

/// The user name of a service account, as Kubernetes writes it:
/// `system:serviceaccount:NAMESPACE:NAME`.
pub fn service_account_user(namespace: &str, name: &str) -> String {
    format!("{SERVICE_ACCOUNT_PREFIX}{namespace}:{name}")
}

/// The namespace and name of a service account's user name; `None` for any other name.
pub fn parse_service_account_user(user: &str) -> Option<(&str, &str)> {
    user.strip_prefix(SERVICE_ACCOUNT_PREFIX)?.split_once(':').filter(|(ns, name)| !ns.is_empty() && !name.is_empty())
}

/// The prefix of a node's user name in its client certificate's common name.
const NODE_PREFIX: &str = "system:node:";

/// The group (the certificate's organisation) every node's certificate names.
pub const NODES_GROUP: &str = "system:nodes";

/// The user name of node `name`, as Kubernetes writes it: `system:node:NAME`; the common
/// name of the node's client certificate.
pub fn node_user(name: &str) -> String {
    format!("{NODE_PREFIX}{name}")
}

/// The node a user name `system:node:NAME` names, when NAME is a valid Node name.
pub fn parse_node_user(user: &str) -> Option<&str> {
    user.strip_prefix(NODE_PREFIX).filter(|name| crate::validation::dns_subdomain(name).is_ok())
}

/// The common name of the API server's client certificate, which it presents to node agents
/// (who answer no one else).
pub const APISERVER_USER: &str = "system:apiserver";

/// The group of the API server's client certificate.
pub const APISERVERS_GROUP: &str = "system:apiservers";

const GATEWAY_PREFIX: &str = "system:gateway:";

/// The group (the certificate's organisation) of every gateway's client certificate.
pub const GATEWAYS_GROUP: &str = "system:gateways";

/// The common name of gateway `name`'s client certificate, which it presents to the
/// autoscaler's demand service: `system:gateway:NAME`.
pub fn gateway_user(name: &str) -> String {
    format!("{GATEWAY_PREFIX}{name}")
}

/// The gateway a common name `system:gateway:NAME` names, when NAME is not empty.
pub fn parse_gateway_user(user: &str) -> Option<&str> {
    user.strip_prefix(GATEWAY_PREFIX).filter(|name| !name.is_empty())
}

/// What nodes and the API server exchange when a node joins (the JSON bodies of
/// `POST /auth/bootstrap-tokens` and `POST /auth/node-certificate`; see docs/api.md).
pub mod join {
    use serde::{Deserialize, Serialize};

    /// Where the cluster CA's certificate is served, to anyone.
    pub const CA_PATH: &str = "/.well-known/stratus-ca.crt";
    /// Where a node asks for its client certificate (with a bootstrap token, or its current
    /// certificate).
    pub const NODE_CERTIFICATE_PATH: &str = "/auth/node-certificate";
    /// Where an admin makes bootstrap tokens.
    pub const BOOTSTRAP_TOKENS_PATH: &str = "/auth/bootstrap-tokens";

    /// What an admin asks of a bootstrap token.
    #[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
    #[serde(rename_all = "camelCase", default)]
    pub struct BootstrapTokenRequest {
        /// 0: an hour.
        pub ttl_seconds: u64,
        /// How many nodes may join with it; 0: one.
        pub uses: u32,
        pub description: String,
    }

    /// A new bootstrap token, as its maker sees it once.
    #[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
    #[serde(rename_all = "camelCase")]
    pub struct BootstrapToken {
        /// `ID.SECRET`.
        pub token: String,
        /// Seconds since the epoch.
        pub expires: i64,
        pub uses: u32,
    }

    /// What a node sends to be given a certificate.
    #[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
    #[serde(rename_all = "camelCase")]
    pub struct NodeCertificateRequest {
        pub node_name: String,
        /// A PEM PKCS#10 request for `CN=system:node:NODE_NAME`.
        pub csr: String,
    }

    /// What a node is given: its certificate and the CA that signed it (and the API's).
    #[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
    #[serde(rename_all = "camelCase")]
    pub struct NodeCertificate {
        pub certificate: String,
        pub ca: String,
        /// Seconds since the epoch.
        pub expires: i64,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_names_round_trip() {
        assert_eq!(node_user("n1"), "system:node:n1");
        assert_eq!(parse_node_user(&node_user("worker-1.example")), Some("worker-1.example"));
        for other in ["n1", "system:node:", "system:node:Bad_Name", "system:serviceaccount:a:b", "system:node:a/b"] {
            assert_eq!(parse_node_user(other), None, "{other}");
        }
    }

    #[test]
    fn service_account_names_round_trip() {
        let user = service_account_user("ops", "deployer");
        assert_eq!(user, "system:serviceaccount:ops:deployer");
        assert_eq!(parse_service_account_user(&user), Some(("ops", "deployer")));
        for other in ["alice", "system:serviceaccount:", "system:serviceaccount:ops", "system:serviceaccount::x"] {
            assert_eq!(parse_service_account_user(other), None, "{other}");
        }
    }
}

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

#[cfg(test)]
mod tests {
    use super::*;

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

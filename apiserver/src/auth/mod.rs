//! Authentication and authorisation: the one layer every request of both protocols passes
//! before it touches a resource (DESIGN §3).
//!
//! - [`tokens`] keeps the signing keys (in the store, rotated on a schedule) and issues and
//!   verifies the JWTs callers present.
//! - [`authn`] turns a request's `Authorization: Bearer …` into a [`Caller`], on HTTP and gRPC
//!   alike (one tower layer in front of both), and answers 401 when it cannot.
//! - [`policy`] decides, from facts alone, whether a caller may do a verb on a kind in a
//!   namespace; the registry gathers the facts (`registry/access.rs`) and asks it before
//!   every read and write.
//! - [`nodes`] gives nodes their client certificates (joining with a bootstrap token,
//!   renewing with the current certificate) and turns a verified certificate into a caller.
//! - [`service`] serves the token endpoint, the JWKS and discovery documents, and the gRPC
//!   `AuthService` (login, service-account tokens, whoami, can-i).

pub mod authn;
pub mod nodes;
pub mod policy;
pub mod service;
pub mod tokens;

/// Who is asking, as established by [`authn`] from the request's token or client certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    /// `alice`, or `system:serviceaccount:NAMESPACE:NAME`, or `system:node:NAME`, or
    /// `system:apiserver`.
    pub user: String,
    pub kind: SubjectKind,
    /// The tenant the caller belongs to (a service account: its namespace's); empty for the
    /// API server itself and for accounts in namespaces of no tenant.
    pub tenant: String,
    /// The caller's role over more than one namespace (`tenant-admin`, `cluster-admin`,
    /// `system:…`), or empty.
    pub cluster_role: String,
    /// For `system:agent` (a node's certificate, or a service account of the role): the node
    /// the caller is.
    pub node: String,
    /// When the caller's token (or certificate) expires (seconds since the epoch); 0 for
    /// internal callers.
    pub expires: i64,
    /// "grpc", "http" or "internal".
    pub protocol: &'static str,
    /// Where the request came from (for the audit log and login limits).
    pub client: Option<std::net::IpAddr>,
    /// The request's `X-Request-Id`, or one made for it.
    pub request_id: String,
}

/// What kind of subject a caller is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SubjectKind {
    User,
    ServiceAccount,
    /// A node, by its client certificate (`system:node:NAME`).
    Node,
    /// The API server itself (bootstrap, namespace termination, log relays).
    System,
}

impl SubjectKind {
    pub fn as_str(self) -> &'static str {
        match self {
            SubjectKind::User => "User",
            SubjectKind::ServiceAccount => "ServiceAccount",
            SubjectKind::Node => "Node",
            SubjectKind::System => "System",
        }
    }
}

impl Caller {
    /// The API server itself: may do everything.
    pub fn system() -> Caller {
        Caller {
            user: "system:apiserver".into(),
            kind: SubjectKind::System,
            tenant: String::new(),
            cluster_role: stratus_api::identity::roles::CLUSTER_ADMIN.into(),
            node: String::new(),
            expires: 0,
            protocol: "internal",
            client: None,
            request_id: String::new(),
        }
    }

    /// Whoever sent a request that proved no identity (for the audit log).
    pub fn anonymous(protocol: &'static str) -> Caller {
        Caller {
            user: "system:anonymous".into(),
            kind: SubjectKind::User,
            cluster_role: String::new(),
            protocol,
            ..Caller::system()
        }
    }

    /// For a service account: its namespace and name.
    pub fn service_account(&self) -> Option<(&str, &str)> {
        match self.kind {
            SubjectKind::ServiceAccount => stratus_api::identity::parse_service_account_user(&self.user),
            _ => None,
        }
    }
}

/// The verb of a request, as roles name them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Verb {
    Get,
    List,
    Watch,
    Create,
    Update,
    UpdateStatus,
    Delete,
    Apply,
    /// Reading the container output of an object (the `log` subresource).
    Logs,
    /// Calling a private Service through the gateway.
    Invoke,
    /// Issuing a token for a ServiceAccount.
    CreateToken,
}

impl Verb {
    /// The verb `can-i` and RBAC rules name: `get`, `list`, …, `patch` for apply.
    pub fn parse(s: &str) -> Option<Verb> {
        Some(match s.to_ascii_lowercase().as_str() {
            "get" => Verb::Get,
            "list" => Verb::List,
            "watch" => Verb::Watch,
            "create" => Verb::Create,
            "update" => Verb::Update,
            "update-status" | "updatestatus" => Verb::UpdateStatus,
            "delete" => Verb::Delete,
            "patch" | "apply" => Verb::Apply,
            "logs" | "log" => Verb::Logs,
            "invoke" => Verb::Invoke,
            "create-token" | "token" => Verb::CreateToken,
            _ => return None,
        })
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Verb::Get => "get",
            Verb::List => "list",
            Verb::Watch => "watch",
            Verb::Create => "create",
            Verb::Update => "update",
            Verb::UpdateStatus => "update-status",
            Verb::Delete => "delete",
            Verb::Apply => "patch",
            Verb::Logs => "logs",
            Verb::Invoke => "invoke",
            Verb::CreateToken => "create-token",
        }
    }

    /// Whether the verb only reads.
    pub fn is_read(self) -> bool {
        matches!(self, Verb::Get | Verb::List | Verb::Watch | Verb::Logs)
    }
}

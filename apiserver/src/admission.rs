//! Authentication, authorisation and admission: the one place every request of both
//! protocols passes before it touches a resource. Today it lets everything through; tenancy
//! and RBAC plug in here without touching a handler.

use stratus_api::{AnyObject, KindInfo};

use crate::error::ApiResult;

/// Who is asking, as established by the protocol layer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    /// The authenticated user; "system:anonymous" when the request carried no credentials.
    pub user: String,
    /// "grpc", "http" or "internal".
    pub protocol: &'static str,
}

impl Caller {
    /// The API server itself (bootstrap, namespace termination).
    pub fn system() -> Caller {
        Caller { user: "system:apiserver".into(), protocol: "internal" }
    }

    pub fn anonymous(protocol: &'static str) -> Caller {
        Caller { user: "system:anonymous".into(), protocol }
    }
}

/// The verb of a request, as RBAC rules name them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
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
}

/// Decides whether a request may proceed; may inspect (not change) the object written.
pub trait Admission: Send + Sync + 'static {
    fn admit(
        &self,
        caller: &Caller,
        verb: Verb,
        kind: &KindInfo,
        namespace: &str,
        name: &str,
        object: Option<&AnyObject>,
    ) -> ApiResult<()>;
}

/// Admits every request: the policy until tenancy and RBAC land.
pub struct AllowAll;

impl Admission for AllowAll {
    fn admit(
        &self,
        caller: &Caller,
        verb: Verb,
        kind: &KindInfo,
        namespace: &str,
        name: &str,
        _: Option<&AnyObject>,
    ) -> ApiResult<()> {
        tracing::trace!(user = %caller.user, ?verb, kind = kind.kind, namespace, name, "admitted");
        Ok(())
    }
}

//! Authorisation inside the registry: before every read and write the registry gathers what
//! the policy needs to know about the target (which tenant owns it, which roles the caller
//! holds in its namespace) and asks [`policy::decide`]. A hidden target is answered exactly as
//! a missing one; lists and watches leave out every object the caller may not read.
//!
//! Callers with a cluster-wide role (cluster-admin, the components) need no facts, so their
//! requests cost no extra reads.

use std::collections::HashMap;

use stratus_api::identity::{roles, subjects};
use stratus_api::v1::{Namespace, RoleBinding, User};
use stratus_api::{AnyObject, KindInfo, Resource};
use stratus_store::ListOptions;

use super::Registry;
use super::objects::{decode, not_found, prefix_of};
use crate::auth::policy::{self, Decision, Facts, Owner};
use crate::auth::{Caller, SubjectKind, Verb};
use crate::error::{ApiError, ApiResult, Reason};

/// What is known about one namespace for one caller: who owns it and the caller's roles there.
type NamespaceFacts = (Owner, Vec<String>);

/// Facts already gathered during one list, by namespace.
#[derive(Default)]
pub(crate) struct Memo(HashMap<String, NamespaceFacts>);

/// Whether the caller's role reaches every namespace, so that no fact needs reading.
fn cluster_wide(caller: &Caller) -> bool {
    !caller.cluster_role.is_empty() && caller.cluster_role != roles::TENANT_ADMIN
}

impl Registry {
    /// Refuses the request unless `caller` may do `verb` on the target: 404 (as if missing) when
    /// the target is hidden from the caller, 403 when it is only forbidden. `object` is the
    /// stored object (or, for a create, the one to be) when the caller has it at hand.
    pub(crate) async fn authorize(
        &self,
        caller: &Caller,
        verb: Verb,
        info: &'static KindInfo,
        namespace: &str,
        name: &str,
        object: Option<&AnyObject>,
    ) -> ApiResult<()> {
        let decision = self.decision(caller, verb, info, namespace, name, object, &mut Memo::default()).await?;
        // Refused writes are recorded with their outcome by the write itself.
        if !decision.allowed()
            && !matches!(verb, Verb::Create | Verb::Update | Verb::UpdateStatus | Verb::Delete | Verb::Apply)
        {
            let code = if matches!(decision, Decision::Hidden) { 404 } else { 403 };
            self.audit_request(caller, verb.as_str(), info.plural, namespace, name, code);
        }
        match decision {
            Decision::Allow => Ok(()),
            Decision::Forbidden(why) => Err(ApiError::new(Reason::Forbidden, why)),
            Decision::Hidden if info.namespaced && name.is_empty() => {
                Err(ApiError::new(Reason::NotFound, format!("namespace {namespace:?} not found")))
            }
            Decision::Hidden => Err(not_found(info, namespace, name)),
        }
    }

    /// Refuses a list or watch of every namespace (or of a cluster-scoped kind) only when the
    /// caller may read no object of the kind at all; which objects it may read is decided for
    /// each one by [`Registry::visible`].
    pub(crate) fn authorize_collection(&self, caller: &Caller, verb: Verb, info: &'static KindInfo) -> ApiResult<()> {
        let decision = if cluster_wide(caller) {
            let facts = Facts { owner: Owner::Nobody, roles: &[], object: None };
            policy::decide(caller, verb, info, "", "", &facts)
        } else if matches!(info.kind, "Node" | "Lease") {
            Decision::Forbidden(format!("{} may not {} {}", caller.user, verb.as_str(), info.plural))
        } else {
            Decision::Allow
        };
        match decision {
            Decision::Forbidden(why) => Err(ApiError::new(Reason::Forbidden, why)),
            _ => Ok(()),
        }
    }

    /// Whether `caller` may read `obj` (a list's or watch's item).
    pub(crate) async fn visible(&self, caller: &Caller, obj: &AnyObject, memo: &mut Memo) -> ApiResult<bool> {
        let meta = obj.meta();
        let decision =
            self.decision(caller, Verb::Get, obj.info(), &meta.namespace, &meta.name, Some(obj), memo).await?;
        Ok(decision.allowed())
    }

    #[allow(clippy::too_many_arguments)]
    async fn decision(
        &self,
        caller: &Caller,
        verb: Verb,
        info: &'static KindInfo,
        namespace: &str,
        name: &str,
        object: Option<&AnyObject>,
        memo: &mut Memo,
    ) -> ApiResult<Decision> {
        if cluster_wide(caller) {
            let facts = Facts { owner: Owner::Nobody, roles: &[], object };
            return Ok(policy::decide(caller, verb, info, namespace, name, &facts));
        }
        let (owner, roles) = match info.kind {
            "Namespace" => {
                let owner = match object {
                    Some(AnyObject::Namespace(ns)) => owner_of(ns),
                    _ => Owner::Missing,
                };
                match owner {
                    // A namespace being created has no bindings yet.
                    Owner::Tenant(_) if verb == Verb::Create => (owner, Vec::new()),
                    _ if name.is_empty() => (owner, Vec::new()),
                    _ => self.namespace_facts(caller, name, memo).await?,
                }
            }
            "Tenant" => (Owner::Tenant(name.to_string()), Vec::new()),
            "User" => {
                let owner = match object {
                    Some(AnyObject::User(u)) => {
                        Owner::Tenant(u.spec.as_ref().map(|s| s.tenant.clone()).unwrap_or_default())
                    }
                    Some(_) | None if name.is_empty() => Owner::Tenant(caller.tenant.clone()),
                    _ => match self.read(&User::INFO, "", name).await? {
                        Some((AnyObject::User(u), _)) => {
                            Owner::Tenant(u.spec.as_ref().map(|s| s.tenant.clone()).unwrap_or_default())
                        }
                        _ => Owner::Missing,
                    },
                };
                (owner, Vec::new())
            }
            _ if info.namespaced => self.namespace_facts(caller, namespace, memo).await?,
            _ => (Owner::Nobody, Vec::new()),
        };
        let facts = Facts { owner, roles: &roles, object };
        Ok(policy::decide(caller, verb, info, namespace, name, &facts))
    }

    /// The owner of `namespace` and the roles `caller` holds there.
    async fn namespace_facts(&self, caller: &Caller, namespace: &str, memo: &mut Memo) -> ApiResult<NamespaceFacts> {
        if let Some(found) = memo.0.get(namespace) {
            return Ok(found.clone());
        }
        let owner = match self.read_cached(&Namespace::INFO, namespace).await? {
            Some(AnyObject::Namespace(ns)) => owner_of(&ns),
            _ => Owner::Missing,
        };
        let roles = match owner {
            Owner::Tenant(ref t) if *t == caller.tenant => self.bound_roles(caller, namespace).await?,
            _ => Vec::new(),
        };
        memo.0.insert(namespace.to_string(), (owner.clone(), roles.clone()));
        Ok((owner, roles))
    }

    /// The roles the RoleBindings of `namespace` grant `caller`.
    async fn bound_roles(&self, caller: &Caller, namespace: &str) -> ApiResult<Vec<String>> {
        let prefix = prefix_of(&RoleBinding::INFO, namespace);
        let mut roles = Vec::new();
        let mut start_after = None;
        loop {
            let page = self.store.list(&prefix, ListOptions { start_after, limit: 500, revision: None }).await?;
            for kv in &page.items {
                if let AnyObject::RoleBinding(rb) = decode(&RoleBinding::INFO, kv)? {
                    let spec = rb.spec.unwrap_or_default();
                    if spec.subjects.iter().any(|s| binds(s, caller, namespace)) && !roles.contains(&spec.role) {
                        roles.push(spec.role);
                    }
                }
            }
            if !page.more {
                return Ok(roles);
            }
            start_after = page.items.last().map(|kv| kv.key.clone());
        }
    }
}

fn owner_of(ns: &Namespace) -> Owner {
    match ns.spec.as_ref().map(|s| s.tenant.as_str()).unwrap_or("") {
        "" => Owner::Nobody,
        t => Owner::Tenant(t.to_string()),
    }
}

/// Whether a binding's subject is the caller.
fn binds(subject: &stratus_api::v1::Subject, caller: &Caller, namespace: &str) -> bool {
    match subject.kind.as_str() {
        subjects::USER => caller.kind == SubjectKind::User && subject.name == caller.user,
        subjects::TENANT => caller.kind == SubjectKind::User && subject.name == caller.tenant,
        subjects::SERVICE_ACCOUNT => {
            let ns = if subject.namespace.is_empty() { namespace } else { subject.namespace.as_str() };
            caller.service_account() == Some((ns, subject.name.as_str()))
        }
        _ => false,
    }
}

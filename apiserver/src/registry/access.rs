//! Authorisation inside the registry: before every read and write the registry gathers what
//! the policy needs to know about the target (which tenant owns it, which roles the caller
//! holds in its namespace) and asks [`policy::decide`]. A hidden target is answered exactly as
//! a missing one; lists and watches leave out every object the caller may not read.
//!
//! Callers with a cluster-wide role (cluster-admin, the components) need no facts, so their
//! requests cost no extra reads.

use std::collections::HashMap;

use stratus_api::identity::{roles, subjects};
use stratus_api::v1::{Instance, Namespace, RoleBinding, User};
use stratus_api::{AnyObject, KindInfo, Resource};
use stratus_store::ListOptions;

use super::Registry;
use super::objects::{not_found, prefix_of};
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
            let facts = Facts { owner: Owner::Nobody, roles: &[], object: None, used_here: false };
            policy::decide(caller, verb, info, "", "", &facts)
        } else if matches!(info.kind, "Node" | "Lease" | "UsageReport") {
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
            // A node may read only the Instances bound to it: which one this is decides.
            let stored;
            let object = match object {
                None if caller.cluster_role == roles::SYSTEM_AGENT && info.kind == "Instance" && !name.is_empty() => {
                    stored = self.read(info, namespace, name).await?.map(|(o, _)| o);
                    stored.as_ref()
                }
                other => other,
            };
            let used_here = caller.cluster_role == roles::SYSTEM_AGENT
                && info.kind == "Secret"
                && verb == Verb::Get
                && self.used_on_node(&caller.node, namespace, name).await?;
            let facts = Facts { owner: Owner::Nobody, roles: &[], object, used_here };
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
            // A tenant's bill and budgets name their tenant in their spec.
            "Invoice" | "LedgerEntry" | "Budget" => {
                let owner = match object {
                    Some(obj) => Owner::Tenant(billing_tenant(obj).to_string()),
                    None if name.is_empty() => Owner::Tenant(caller.tenant.clone()),
                    None => match self.read(info, "", name).await? {
                        Some((obj, _)) => Owner::Tenant(billing_tenant(&obj).to_string()),
                        None => Owner::Missing,
                    },
                };
                (owner, Vec::new())
            }
            _ if info.namespaced => self.namespace_facts(caller, namespace, memo).await?,
            _ => (Owner::Nobody, Vec::new()),
        };
        let facts = Facts { owner, roles: &roles, object, used_here: false };
        Ok(policy::decide(caller, verb, info, namespace, name, &facts))
    }

    /// Refuses an agent's update of an Instance that changes more than its finalizers (the
    /// policy lets agents update the Instances bound to them only to hold them while their
    /// containers stop): a node that could change an Instance's spec could run something else
    /// there, or point it at a Secret to read.
    pub(crate) fn check_node_update(caller: &Caller, current: &AnyObject, next: &AnyObject) -> ApiResult<()> {
        if caller.cluster_role != roles::SYSTEM_AGENT {
            return Ok(());
        }
        let (AnyObject::Instance(current), AnyObject::Instance(next)) = (current, next) else { return Ok(()) };
        let (was, now) = (current.meta(), next.meta());
        let same = current.spec == next.spec
            && was.labels == now.labels
            && was.annotations == now.annotations
            && was.owner_references == now.owner_references;
        if same {
            Ok(())
        } else {
            Err(ApiError::new(
                Reason::Forbidden,
                format!(
                    "{} may change only the finalizers of instance {:?} (its status through update-status)",
                    caller.user, was.name
                ),
            ))
        }
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

    /// Whether an Instance bound to `node` in `namespace` takes a variable from the Secret
    /// `secret`: what lets the node's agent read it. One read of the namespace's Instances, made
    /// only for an agent's get of a Secret (when a container starts).
    async fn used_on_node(&self, node: &str, namespace: &str, secret: &str) -> ApiResult<bool> {
        if node.is_empty() || secret.is_empty() {
            return Ok(false);
        }
        let prefix = prefix_of(&Instance::INFO, namespace);
        let mut start_after = None;
        loop {
            let page = self.store.list(&prefix, ListOptions { start_after, limit: 500, revision: None }).await?;
            for kv in &page.items {
                if let AnyObject::Instance(inst) = self.decode(&Instance::INFO, kv)?
                    && let Some(spec) = inst.spec.as_ref().filter(|s| s.node_name == node)
                    && spec.containers.iter().flat_map(|c| &c.env).any(|e| {
                        e.value_from.as_ref().and_then(|f| f.secret_key_ref.as_ref()).is_some_and(|r| r.name == secret)
                    })
                {
                    return Ok(true);
                }
            }
            if !page.more {
                return Ok(false);
            }
            start_after = page.items.last().map(|kv| kv.key.clone());
        }
    }

    /// The roles the RoleBindings of `namespace` grant `caller`.
    async fn bound_roles(&self, caller: &Caller, namespace: &str) -> ApiResult<Vec<String>> {
        let prefix = prefix_of(&RoleBinding::INFO, namespace);
        let mut roles = Vec::new();
        let mut start_after = None;
        loop {
            let page = self.store.list(&prefix, ListOptions { start_after, limit: 500, revision: None }).await?;
            for kv in &page.items {
                if let AnyObject::RoleBinding(rb) = self.decode(&RoleBinding::INFO, kv)? {
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

/// The tenant an Invoice, LedgerEntry or Budget belongs to (`spec.tenant`); empty for any other
/// object.
pub(crate) fn billing_tenant(obj: &AnyObject) -> &str {
    match obj {
        AnyObject::Invoice(i) => i.spec.as_ref().map(|s| s.tenant.as_str()),
        AnyObject::LedgerEntry(l) => l.spec.as_ref().map(|s| s.tenant.as_str()),
        AnyObject::Budget(b) => b.spec.as_ref().map(|s| s.tenant.as_str()),
        _ => None,
    }
    .unwrap_or("")
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

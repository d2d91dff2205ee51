//! Who may do what: the roles of Stratus as one pure function, [`decide`], from a caller, a
//! verb, a kind and the facts the registry gathered about the target. Nothing here reads the
//! store, so every rule is tested on its own.
//!
//! The answer is one of three: allowed; forbidden (403: the caller may see the target but not
//! do this to it); or hidden (404: the caller may not even know the target exists, so the
//! answer is the same as for a missing one). A tenant's objects are hidden from every other
//! tenant; system kinds (Node, Lease) are merely forbidden, since their existence says nothing
//! about anyone.

use stratus_api::identity::roles;
use stratus_api::wellknown::namespaces::NODE_LEASE;
use stratus_api::{AnyObject, KindInfo};

use super::{Caller, Verb};

/// Who owns the target of a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Owner {
    /// A tenant: the tenant of a namespaced object's namespace, a Namespace's `spec.tenant`, a
    /// User's `spec.tenant`, or a Tenant itself.
    Tenant(String),
    /// The target exists but belongs to no tenant (a system namespace, a Node).
    Nobody,
    /// The target (or its namespace) does not exist.
    Missing,
}

/// What the registry found out about the target before asking.
#[derive(Debug, Clone)]
pub struct Facts<'a> {
    pub owner: Owner,
    /// The roles the caller holds in the target's namespace through RoleBindings.
    pub roles: &'a [String],
    /// The object as stored (or, for a create, as it will be), when the rule needs it.
    pub object: Option<&'a AnyObject>,
    /// For a Secret a node agent asks for: whether an Instance bound to the agent's node takes
    /// a variable from it (the only Secrets an agent may read).
    pub used_here: bool,
}

/// The answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    Allow,
    /// 403, with the reason.
    Forbidden(String),
    /// 404, as if the target did not exist.
    Hidden,
}

impl Decision {
    pub fn allowed(&self) -> bool {
        *self == Decision::Allow
    }
}

/// Whether `caller` may do `verb` on the object `name` of `kind` in `namespace` (`name` empty
/// for list, watch and create).
pub fn decide(caller: &Caller, verb: Verb, kind: &KindInfo, namespace: &str, name: &str, facts: &Facts) -> Decision {
    let forbidden = || {
        let what = if name.is_empty() { kind.plural.to_string() } else { format!("{} {name:?}", kind.plural) };
        let scope = if namespace.is_empty() { String::new() } else { format!(" in namespace {namespace:?}") };
        Decision::Forbidden(format!("{} may not {} {what}{scope}", caller.user, verb.as_str()))
    };
    let allow_if = |ok: bool| if ok { Decision::Allow } else { forbidden() };
    match caller.cluster_role.as_str() {
        roles::CLUSTER_ADMIN => return Decision::Allow,
        roles::SYSTEM_CONTROLLERS => return allow_if(controllers_may(verb, kind)),
        roles::SYSTEM_GATEWAY => return allow_if(gateway_may(verb, kind)),
        roles::SYSTEM_AGENT => {
            return match agent_may(caller, verb, kind, namespace, name, facts) {
                Some(true) => Decision::Allow,
                Some(false) => forbidden(),
                None => Decision::Hidden,
            };
        }
        _ => {}
    }
    let own = matches!(&facts.owner, Owner::Tenant(t) if !caller.tenant.is_empty() && *t == caller.tenant);
    let tenant_admin = caller.cluster_role == roles::TENANT_ADMIN && own;
    match kind.kind {
        "Node" | "Lease" => forbidden(),
        "Tenant" if own => allow_if(matches!(verb, Verb::Get | Verb::List | Verb::Watch)),
        "Tenant" => Decision::Hidden,
        "User" => {
            let own_user = caller.kind == super::SubjectKind::User && name == caller.user;
            if tenant_admin {
                let role = match facts.object {
                    Some(AnyObject::User(u)) => u.spec.as_ref().map(|s| s.cluster_role.as_str()).unwrap_or(""),
                    _ => "",
                };
                allow_if((role != roles::CLUSTER_ADMIN || verb.is_read()) && verb != Verb::UpdateStatus)
            } else if own && own_user {
                allow_if(verb == Verb::Get)
            } else if own && verb.is_read() && name.is_empty() {
                // Listing users answers with the caller's own entry only (the filter hides the rest).
                Decision::Allow
            } else {
                Decision::Hidden
            }
        }
        "Namespace" if tenant_admin => allow_if(verb != Verb::UpdateStatus && verb != Verb::Logs),
        "Namespace" if own && !facts.roles.is_empty() => allow_if(matches!(verb, Verb::Get | Verb::List | Verb::Watch)),
        "Namespace" if own && verb == Verb::Create => forbidden(),
        "Namespace" => Decision::Hidden,
        // Prices are public; only a cluster admin (or the controllers) sets them.
        "PriceList" => allow_if(matches!(verb, Verb::Get | Verb::List | Verb::Watch)),
        // Usage reports are the platform's raw input: no user sees them.
        "UsageReport" => Decision::Hidden,
        // A billing object of another tenant may not be made: refused, not hidden, since none
        // exists yet whose existence the answer could give away.
        "Invoice" | "LedgerEntry" | "Budget" if !own && verb == Verb::Create => forbidden(),
        _ if !own => Decision::Hidden,
        // A tenant's users read its bill; the billing controller alone writes it.
        "Invoice" | "LedgerEntry" => allow_if(matches!(verb, Verb::Get | Verb::List | Verb::Watch)),
        // A tenant admin sets its tenant's budgets; their status is the controller's.
        "Budget" => allow_if(
            matches!(verb, Verb::Get | Verb::List | Verb::Watch)
                || (tenant_admin && matches!(verb, Verb::Create | Verb::Update | Verb::Apply | Verb::Delete)),
        ),
        // A tenant admin's accounts may be tenant admins too, never more.
        "ServiceAccount" if tenant_admin && account_role(facts.object) == Some(roles::TENANT_ADMIN) => {
            allow_if(matches!(
                verb,
                Verb::Get
                    | Verb::List
                    | Verb::Watch
                    | Verb::Create
                    | Verb::Update
                    | Verb::Apply
                    | Verb::Delete
                    | Verb::CreateToken
            ))
        }
        _ if tenant_admin => allow_if(namespace_role_may(roles::ADMIN, verb, kind, facts.object)),
        _ if facts.roles.is_empty() => Decision::Hidden,
        _ => allow_if(facts.roles.iter().any(|r| namespace_role_may(r, verb, kind, facts.object))),
    }
}

/// What a role granted in one namespace allows there.
fn namespace_role_may(role: &str, verb: Verb, kind: &KindInfo, object: Option<&AnyObject>) -> bool {
    let workload = matches!(kind.kind, "Service" | "Revision" | "Instance" | "Endpoints" | "Event");
    let identity = matches!(kind.kind, "ServiceAccount" | "RoleBinding");
    let read = matches!(verb, Verb::Get | Verb::List | Verb::Watch);
    let write = matches!(verb, Verb::Create | Verb::Update | Verb::Apply | Verb::Delete);
    match role {
        roles::VIEWER => workload && (read || verb == Verb::Logs),
        // A viewer reads no Secret (as Kubernetes' view role); a developer reads and writes them.
        roles::DEVELOPER => {
            namespace_role_may(roles::VIEWER, verb, kind, object)
                || (kind.kind == "Service" && (write || verb == Verb::Invoke))
                || (kind.kind == "Secret" && (read || write))
                || (kind.kind == "Revision" && verb == Verb::Delete)
        }
        roles::ADMIN => {
            // A namespace's admin holds no role beyond it: it may neither make an account with a
            // cluster-wide role nor take a token of one.
            let beyond = account_role(object).is_some_and(|r| !r.is_empty());
            namespace_role_may(roles::DEVELOPER, verb, kind, object)
                || (identity && (read || (write && !beyond)))
                || (kind.kind == "ServiceAccount" && verb == Verb::CreateToken && !beyond)
        }
        roles::INVOKER => kind.kind == "Service" && verb == Verb::Invoke,
        _ => false,
    }
}

/// The cluster-wide role of a ServiceAccount `object`.
fn account_role(object: Option<&AnyObject>) -> Option<&str> {
    match object {
        Some(AnyObject::ServiceAccount(sa)) => Some(sa.spec.as_ref().map(|s| s.cluster_role.as_str()).unwrap_or("")),
        _ => None,
    }
}

/// The controllers manage the platform's kinds everywhere and read namespaces and tenants;
/// identities are not theirs. They get a Secret by name (never list or watch them): a Budget's
/// webhook signing key.
fn controllers_may(verb: Verb, kind: &KindInfo) -> bool {
    match kind.kind {
        "Service" | "Revision" | "Instance" | "Endpoints" | "Event" | "Lease" | "Node" => {
            !matches!(verb, Verb::Logs | Verb::Invoke | Verb::CreateToken)
        }
        "Namespace" | "Tenant" => matches!(verb, Verb::Get | Verb::List | Verb::Watch),
        "Secret" => verb == Verb::Get,
        // Billing: the controller folds usage into ledgers and invoices and follows budgets.
        "PriceList" | "UsageReport" | "LedgerEntry" | "Invoice" | "Budget" => {
            !matches!(verb, Verb::Logs | Verb::Invoke | Verb::CreateToken)
        }
        _ => false,
    }
}

/// A gateway reads what it routes by (Nodes: whose published addresses vouch for Endpoints)
/// and writes nothing but the usage it meters (UsageReports, created once each; a second
/// delivery answers AlreadyExists).
fn gateway_may(verb: Verb, kind: &KindInfo) -> bool {
    let read = matches!(verb, Verb::Get | Verb::List | Verb::Watch);
    match kind.kind {
        "Service" | "Revision" | "Endpoints" | "Instance" | "Namespace" | "Node" => read,
        "UsageReport" => verb == Verb::Create,
        _ => false,
    }
}

/// An agent is one node, and sees and changes only what runs there (Kubernetes'
/// NodeRestriction): it reads Nodes and writes its own Node and Lease; it reads the Instances
/// bound to it (`spec.nodeName`) and writes their status and, to hold them while their
/// containers stop, their finalizers (the registry refuses any other change of them, see
/// `Registry::check_node_update`); it reads, one at a time, the Secrets those Instances take
/// variables from; it reports Events and reads none. `None`: the target is hidden (an
/// Instance bound elsewhere, or missing, answers as a missing one).
fn agent_may(caller: &Caller, verb: Verb, kind: &KindInfo, namespace: &str, name: &str, facts: &Facts) -> Option<bool> {
    let read = matches!(verb, Verb::Get | Verb::List | Verb::Watch);
    let own_node = !caller.node.is_empty() && name == caller.node;
    Some(match kind.kind {
        "Node" => read || (own_node && matches!(verb, Verb::Create | Verb::Update | Verb::UpdateStatus | Verb::Apply)),
        "Lease" => {
            namespace == NODE_LEASE && own_node && matches!(verb, Verb::Get | Verb::Create | Verb::Update | Verb::Apply)
        }
        "Instance" => match facts.object {
            Some(AnyObject::Instance(i)) => {
                let bound_here = i.spec.as_ref().is_some_and(|s| !caller.node.is_empty() && s.node_name == caller.node);
                if !bound_here {
                    return None;
                }
                read || matches!(verb, Verb::Update | Verb::UpdateStatus)
            }
            // A list or watch, whose items are then filtered one by one.
            None if name.is_empty() => matches!(verb, Verb::List | Verb::Watch),
            _ => return None,
        },
        "Event" => verb == Verb::Create,
        // The usage of its own instances, as itself.
        "UsageReport" => {
            verb == Verb::Create
                && matches!(facts.object, Some(AnyObject::UsageReport(r)) if r.spec.as_ref().is_some_and(|s| {
                    s.source_kind == stratus_api::billing::SOURCE_AGENT && !caller.node.is_empty() && s.source == caller.node
                }))
        }
        "Namespace" => verb == Verb::Get,
        // One at a time, and only what its own containers take: never a list of them.
        "Secret" => verb == Verb::Get && facts.used_here,
        _ => false,
    })
}

#[cfg(test)]
mod tests {
    use stratus_api::Resource;
    use stratus_api::v1::{Instance, InstanceSpec, Lease, Namespace, Node, RoleBinding, Service, ServiceAccount, User};

    use super::*;
    use crate::auth::SubjectKind;

    fn user(name: &str, tenant: &str, cluster_role: &str) -> Caller {
        Caller {
            user: name.into(),
            kind: SubjectKind::User,
            tenant: tenant.into(),
            cluster_role: cluster_role.into(),
            node: String::new(),
            expires: 0,
            protocol: "test",
            client: None,
            request_id: String::new(),
        }
    }

    fn account(role: &str, node: &str) -> Caller {
        Caller {
            user: format!("system:serviceaccount:stratus-system:{role}"),
            kind: SubjectKind::ServiceAccount,
            tenant: String::new(),
            cluster_role: role.into(),
            node: node.into(),
            expires: 0,
            protocol: "test",
            client: None,
            request_id: String::new(),
        }
    }

    fn facts<'a>(tenant: &str, roles: &'a [String]) -> Facts<'a> {
        Facts { owner: Owner::Tenant(tenant.into()), roles, object: None, used_here: false }
    }

    const ALL_VERBS: [Verb; 11] = [
        Verb::Get,
        Verb::List,
        Verb::Watch,
        Verb::Create,
        Verb::Update,
        Verb::UpdateStatus,
        Verb::Delete,
        Verb::Apply,
        Verb::Logs,
        Verb::Invoke,
        Verb::CreateToken,
    ];

    #[test]
    fn another_tenants_objects_are_hidden_whatever_the_role() {
        for role in ["", roles::TENANT_ADMIN] {
            let alice = user("alice", "a", role);
            let bound = vec![roles::ADMIN.to_string()];
            for kind in [Service::INFO, ServiceAccount::INFO, RoleBinding::INFO, Namespace::INFO, User::INFO] {
                for verb in ALL_VERBS {
                    let d = decide(&alice, verb, &kind, "b-ns", "x", &facts("b", &bound));
                    assert_eq!(d, Decision::Hidden, "{role:?} {verb:?} {}", kind.kind);
                }
            }
        }
    }

    #[test]
    fn the_roles_of_a_namespace_grant_what_they_say() {
        let bob = user("bob", "a", "");
        let svc = Service::INFO;
        let may = |role: &str, verb: Verb, kind: &KindInfo| {
            decide(&bob, verb, kind, "ns", "x", &facts("a", &[role.to_string()])).allowed()
        };
        for verb in [Verb::Get, Verb::List, Verb::Watch, Verb::Logs] {
            assert!(may(roles::VIEWER, verb, &svc), "viewer {verb:?}");
        }
        for verb in [Verb::Create, Verb::Update, Verb::Apply, Verb::Delete, Verb::Invoke, Verb::UpdateStatus] {
            assert!(!may(roles::VIEWER, verb, &svc), "viewer {verb:?}");
        }
        for verb in [Verb::Create, Verb::Update, Verb::Apply, Verb::Delete, Verb::Invoke] {
            assert!(may(roles::DEVELOPER, verb, &svc), "developer {verb:?}");
        }
        assert!(!may(roles::DEVELOPER, Verb::UpdateStatus, &svc));
        assert!(!may(roles::DEVELOPER, Verb::Create, &RoleBinding::INFO));
        assert!(!may(roles::DEVELOPER, Verb::Create, &Instance::INFO));
        assert!(may(roles::ADMIN, Verb::Create, &RoleBinding::INFO));
        assert!(may(roles::ADMIN, Verb::CreateToken, &ServiceAccount::INFO));
        assert!(!may(roles::DEVELOPER, Verb::CreateToken, &ServiceAccount::INFO));
        assert!(may(roles::INVOKER, Verb::Invoke, &svc));
        assert!(!may(roles::INVOKER, Verb::Get, &svc));
        // No binding in the namespace: the namespace's objects are not there for bob.
        assert_eq!(decide(&bob, Verb::Get, &svc, "ns", "x", &facts("a", &[])), Decision::Hidden);
        // A viewer is told "forbidden" for what it sees but may not do.
        let d = decide(&bob, Verb::Delete, &svc, "ns", "x", &facts("a", &[roles::VIEWER.to_string()]));
        assert!(matches!(d, Decision::Forbidden(m) if m.contains("bob may not delete services \"x\"")));
    }

    #[test]
    fn a_tenant_admin_runs_its_tenant_and_no_more() {
        let carol = user("carol", "a", roles::TENANT_ADMIN);
        for verb in [Verb::Create, Verb::Delete, Verb::Get] {
            assert!(decide(&carol, verb, &Namespace::INFO, "", "n", &facts("a", &[])).allowed(), "{verb:?}");
            assert!(decide(&carol, verb, &RoleBinding::INFO, "n", "x", &facts("a", &[])).allowed(), "{verb:?}");
        }
        let mut admin = User::default();
        admin.spec.get_or_insert_default().cluster_role = roles::CLUSTER_ADMIN.into();
        let admin = admin.into_any();
        let f = Facts { owner: Owner::Tenant("a".into()), roles: &[], object: Some(&admin), used_here: false };
        assert!(matches!(decide(&carol, Verb::Create, &User::INFO, "", "root", &f), Decision::Forbidden(_)));
        assert!(matches!(decide(&carol, Verb::Get, &Node::INFO, "", "n1", &facts("a", &[])), Decision::Forbidden(_)));
        let mut system = ServiceAccount::default();
        system.spec.get_or_insert_default().cluster_role = roles::SYSTEM_AGENT.into();
        let system = system.into_any();
        let f = Facts { owner: Owner::Tenant("a".into()), roles: &[], object: Some(&system), used_here: false };
        assert!(matches!(decide(&carol, Verb::Create, &ServiceAccount::INFO, "n", "x", &f), Decision::Forbidden(_)));
        assert!(matches!(
            decide(&carol, Verb::CreateToken, &ServiceAccount::INFO, "n", "x", &f),
            Decision::Forbidden(_)
        ));
        let mut peer = ServiceAccount::default();
        peer.spec.get_or_insert_default().cluster_role = roles::TENANT_ADMIN.into();
        let peer = peer.into_any();
        let f = Facts { owner: Owner::Tenant("a".into()), roles: &[], object: Some(&peer), used_here: false };
        assert!(decide(&carol, Verb::Create, &ServiceAccount::INFO, "n", "x", &f).allowed());
        assert!(decide(&carol, Verb::CreateToken, &ServiceAccount::INFO, "n", "x", &f).allowed());
        // A namespace's admin can make neither such an account nor a token of one.
        let ada = user("ada", "a", "");
        let admin_role = [roles::ADMIN.to_string()];
        let f = Facts { owner: Owner::Tenant("a".into()), roles: &admin_role, object: Some(&peer), used_here: false };
        for verb in [Verb::Create, Verb::Update, Verb::Apply, Verb::CreateToken] {
            assert!(
                matches!(decide(&ada, verb, &ServiceAccount::INFO, "n", "x", &f), Decision::Forbidden(_)),
                "{verb:?}"
            );
        }
        let plain = ServiceAccount::default().into_any();
        let f = Facts { owner: Owner::Tenant("a".into()), roles: &admin_role, object: Some(&plain), used_here: false };
        assert!(decide(&ada, Verb::CreateToken, &ServiceAccount::INFO, "n", "x", &f).allowed());
        // Status is the components'.
        let mut u = User::default();
        u.spec.get_or_insert_default().tenant = "a".into();
        let u = u.into_any();
        let f = Facts { owner: Owner::Tenant("a".into()), roles: &[], object: Some(&u), used_here: false };
        assert!(matches!(decide(&carol, Verb::UpdateStatus, &User::INFO, "", "bob", &f), Decision::Forbidden(_)));
    }

    #[test]
    fn secrets_are_for_developers_and_admins_never_viewers() {
        let bob = user("bob", "a", "");
        let secret = stratus_api::v1::Secret::INFO;
        let may = |role: &str, verb: Verb| {
            decide(&bob, verb, &secret, "ns", "db", &facts("a", &[role.to_string()])).allowed()
        };
        for verb in [Verb::Get, Verb::List, Verb::Watch, Verb::Create, Verb::Update, Verb::Apply, Verb::Delete] {
            assert!(!may(roles::VIEWER, verb), "viewer {verb:?}");
            assert!(!may(roles::INVOKER, verb), "invoker {verb:?}");
            assert!(may(roles::DEVELOPER, verb), "developer {verb:?}");
            assert!(may(roles::ADMIN, verb), "admin {verb:?}");
        }
        // A viewer sees the namespace, so it is told "forbidden"; another tenant learns nothing.
        let d = decide(&bob, Verb::Get, &secret, "ns", "db", &facts("a", &[roles::VIEWER.to_string()]));
        assert!(matches!(d, Decision::Forbidden(m) if m.contains("bob may not get secrets \"db\"")));
        let admin = [roles::ADMIN.to_string()];
        assert_eq!(decide(&bob, Verb::Get, &secret, "ns", "db", &facts("b", &admin)), Decision::Hidden);
        let carol = user("carol", "a", roles::TENANT_ADMIN);
        assert!(decide(&carol, Verb::Get, &secret, "ns", "db", &facts("a", &[])).allowed());
        // The components: an agent gets one Secret its node's instances use, and nothing else.
        let agent = account(roles::SYSTEM_AGENT, "n1");
        let used = Facts { owner: Owner::Nobody, roles: &[], object: None, used_here: true };
        let unused = Facts { used_here: false, ..used.clone() };
        assert!(decide(&agent, Verb::Get, &secret, "ns", "db", &used).allowed());
        assert!(!decide(&agent, Verb::Get, &secret, "ns", "db", &unused).allowed());
        for verb in [Verb::List, Verb::Watch, Verb::Create, Verb::Update, Verb::Delete] {
            assert!(!decide(&agent, verb, &secret, "ns", "db", &used).allowed(), "agent {verb:?}");
        }
        // The controllers read one at a time (a Budget's webhook key), never list or write; a
        // gateway reads none.
        let controllers = account(roles::SYSTEM_CONTROLLERS, "");
        assert!(decide(&controllers, Verb::Get, &secret, "ns", "db", &unused).allowed());
        for verb in [Verb::List, Verb::Watch, Verb::Create, Verb::Update, Verb::Delete] {
            assert!(!decide(&controllers, verb, &secret, "ns", "db", &unused).allowed(), "controllers {verb:?}");
        }
        assert!(!decide(&account(roles::SYSTEM_GATEWAY, ""), Verb::Get, &secret, "ns", "db", &used).allowed());
    }

    #[test]
    fn a_tenant_reads_its_own_bill_and_sets_its_budgets() {
        use stratus_api::v1::{Budget, Invoice, LedgerEntry, PriceList, UsageReport};
        let (bob, carol) = (user("bob", "a", ""), user("carol", "a", roles::TENANT_ADMIN));
        let read = [Verb::Get, Verb::List, Verb::Watch];
        for kind in [Invoice::INFO, LedgerEntry::INFO, Budget::INFO] {
            for verb in ALL_VERBS {
                for who in [&bob, &carol] {
                    let mine = decide(who, verb, &kind, "", "x", &facts("a", &[])).allowed();
                    let budget_write = who.user == "carol"
                        && kind.kind == "Budget"
                        && matches!(verb, Verb::Create | Verb::Update | Verb::Apply | Verb::Delete);
                    assert_eq!(mine, read.contains(&verb) || budget_write, "{} {verb:?} {}", who.user, kind.kind);
                    let theirs = decide(who, verb, &kind, "", "x", &facts("b", &[]));
                    if verb == Verb::Create {
                        assert!(matches!(theirs, Decision::Forbidden(_)), "{} {verb:?} {}", who.user, kind.kind);
                    } else {
                        assert_eq!(theirs, Decision::Hidden, "{} {verb:?} {}", who.user, kind.kind);
                    }
                }
            }
        }
        let public = Facts { owner: Owner::Nobody, roles: &[], object: None, used_here: false };
        for verb in ALL_VERBS {
            let d = decide(&bob, verb, &PriceList::INFO, "", "default", &public);
            assert_eq!(d.allowed(), read.contains(&verb), "PriceList {verb:?}");
            assert_eq!(decide(&carol, verb, &UsageReport::INFO, "", "r", &public), Decision::Hidden, "{verb:?}");
        }
        // A user of no tenant reads no tenant's bill.
        let nobody = user("nobody", "", "");
        assert_eq!(decide(&nobody, Verb::Get, &Invoice::INFO, "", "x", &facts("", &[])), Decision::Hidden);
    }

    #[test]
    fn users_see_themselves_and_their_tenant() {
        let bob = user("bob", "a", "");
        assert!(decide(&bob, Verb::Get, &User::INFO, "", "bob", &facts("a", &[])).allowed());
        assert_eq!(decide(&bob, Verb::Get, &User::INFO, "", "eve", &facts("a", &[])), Decision::Hidden);
        assert!(matches!(decide(&bob, Verb::Update, &User::INFO, "", "bob", &facts("a", &[])), Decision::Forbidden(_)));
        let tenant = stratus_api::v1::Tenant::INFO;
        assert!(decide(&bob, Verb::Get, &tenant, "", "a", &facts("a", &[])).allowed());
        assert_eq!(decide(&bob, Verb::Get, &tenant, "", "b", &facts("b", &[])), Decision::Hidden);
    }

    #[test]
    fn components_get_narrow_roles() {
        let agent = account(roles::SYSTEM_AGENT, "n1");
        let none = Facts { owner: Owner::Nobody, roles: &[], object: None, used_here: false };
        assert!(!decide(&agent, Verb::Create, &Service::INFO, "default", "", &none).allowed());
        assert!(decide(&agent, Verb::Update, &Lease::INFO, NODE_LEASE, "n1", &none).allowed());
        assert!(!decide(&agent, Verb::Update, &Lease::INFO, NODE_LEASE, "n2", &none).allowed());
        assert!(decide(&agent, Verb::UpdateStatus, &Node::INFO, "", "n1", &none).allowed());
        assert!(!decide(&agent, Verb::UpdateStatus, &Node::INFO, "", "n2", &none).allowed());
        let bound = |node: &str| {
            Instance { spec: Some(InstanceSpec { node_name: node.into(), ..Default::default() }), ..Default::default() }
                .into_any()
        };
        let (here, there) = (bound("n1"), bound("n2"));
        let on = |o| Facts { owner: Owner::Nobody, roles: &[], object: Some(o), used_here: false };
        for verb in [Verb::Get, Verb::List, Verb::Watch, Verb::Update, Verb::UpdateStatus] {
            assert!(decide(&agent, verb, &Instance::INFO, "default", "i", &on(&here)).allowed(), "{verb:?}");
        }
        for verb in [Verb::Create, Verb::Apply, Verb::Delete, Verb::Logs] {
            assert!(!decide(&agent, verb, &Instance::INFO, "default", "i", &on(&here)).allowed(), "{verb:?}");
        }
        // Another node's instances are not there for it, whatever it asks; nor is a missing one.
        for verb in ALL_VERBS {
            let d = decide(&agent, verb, &Instance::INFO, "default", "i", &on(&there));
            assert_eq!(d, Decision::Hidden, "{verb:?}");
        }
        assert_eq!(decide(&agent, Verb::Get, &Instance::INFO, "default", "i", &none), Decision::Hidden);
        // Lists and watches are allowed, their items filtered one by one.
        assert!(decide(&agent, Verb::List, &Instance::INFO, "", "", &none).allowed());
        assert!(decide(&agent, Verb::Watch, &Instance::INFO, "default", "", &none).allowed());
        // It reports events and reads none.
        let event = stratus_api::v1::Event::INFO;
        assert!(decide(&agent, Verb::Create, &event, "default", "e", &none).allowed());
        for verb in [Verb::Get, Verb::List, Verb::Watch, Verb::Delete] {
            assert!(!decide(&agent, verb, &event, "default", "e", &none).allowed(), "{verb:?}");
        }

        let gateway = account(roles::SYSTEM_GATEWAY, "");
        for verb in ALL_VERBS {
            let d = decide(&gateway, verb, &Service::INFO, "default", "x", &none);
            assert_eq!(d.allowed(), matches!(verb, Verb::Get | Verb::List | Verb::Watch), "{verb:?}");
            let d = decide(&gateway, verb, &Node::INFO, "", "n1", &none);
            assert_eq!(d.allowed(), matches!(verb, Verb::Get | Verb::List | Verb::Watch), "Node {verb:?}");
        }
        let controllers = account(roles::SYSTEM_CONTROLLERS, "");
        assert!(decide(&controllers, Verb::Create, &Instance::INFO, "default", "", &none).allowed());
        assert!(!decide(&controllers, Verb::Create, &RoleBinding::INFO, "default", "", &none).allowed());
        assert!(!decide(&controllers, Verb::Get, &User::INFO, "", "admin", &none).allowed());

        // Usage: a gateway and an agent create reports (an agent only its own node's) and
        // read none; the controllers fold them.
        let report = |kind: &str, source: &str| {
            stratus_api::v1::UsageReport {
                spec: Some(stratus_api::v1::UsageReportSpec {
                    source_kind: kind.into(),
                    source: source.into(),
                    ..Default::default()
                }),
                ..Default::default()
            }
            .into_any()
        };
        let info = stratus_api::v1::UsageReport::INFO;
        let (mine, other_node, posing) = (report("agent", "n1"), report("agent", "n2"), report("gateway", "n1"));
        assert!(decide(&agent, Verb::Create, &info, "", "r", &on(&mine)).allowed());
        assert!(!decide(&agent, Verb::Create, &info, "", "r", &on(&other_node)).allowed());
        assert!(!decide(&agent, Verb::Create, &info, "", "r", &on(&posing)).allowed());
        assert!(!decide(&agent, Verb::Get, &info, "", "r", &on(&mine)).allowed());
        for verb in ALL_VERBS {
            assert_eq!(decide(&gateway, verb, &info, "", "r", &none).allowed(), verb == Verb::Create, "{verb:?}");
        }
        assert!(decide(&controllers, Verb::UpdateStatus, &info, "", "r", &none).allowed());
        assert!(decide(&controllers, Verb::Create, &stratus_api::v1::Invoice::INFO, "", "", &none).allowed());
        // A Budget's webhook key: the controllers get a Secret, and do nothing else with them.
        for verb in ALL_VERBS {
            let d = decide(&controllers, verb, &stratus_api::v1::Secret::INFO, "default", "hook", &none);
            assert_eq!(d.allowed(), verb == Verb::Get, "Secret {verb:?}");
        }
    }
}

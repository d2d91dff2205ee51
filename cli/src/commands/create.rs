//! `stratus create`: the objects of identity and tenancy from flags (tenants, namespaces, users,
//! service accounts, role bindings), and tokens for service accounts.

use std::io::Write;

use stratus_api::identity::{DEFAULT_TENANT, subjects};
use stratus_api::resource::lookup_kind;
use stratus_api::v1::{
    Namespace, NamespaceSpec, RoleBinding, RoleBindingSpec, Secret, ServiceAccount, ServiceAccountSpec, Subject,
    Tenant, TenantQuota, TenantSpec, User, UserSpec,
};
use stratus_api::{AnyObject, Resource};

use super::Ctx;
use crate::Io;
use crate::args::{
    CreateCommand, CreateNamespaceArgs, CreateRoleBindingArgs, CreateSecretArgs, CreateSecretCommand,
    CreateServiceAccountArgs, CreateTenantArgs, CreateTokenArgs, CreateUserArgs,
};
use crate::error::{Error, Result};
use crate::output::qualified_name;
use crate::prompt;

pub(crate) async fn run(ctx: &Ctx, cmd: CreateCommand, io: &mut Io) -> Result<()> {
    let object = match cmd {
        CreateCommand::Tenant(args) => tenant(args),
        CreateCommand::Namespace(args) => namespace(args),
        CreateCommand::User(args) => user(args, io)?,
        CreateCommand::ServiceAccount(args) => service_account(ctx, args),
        CreateCommand::RoleBinding(args) => role_binding(ctx, args),
        CreateCommand::Secret(CreateSecretCommand::Generic(args)) => secret(ctx, args)?,
        CreateCommand::Token(args) => return token(ctx, args, io).await,
    };
    create(ctx, object, io).await
}

/// Checks `object` as the server will, then creates it and says so as kubectl does
/// (`tenant/acme created`).
async fn create(ctx: &Ctx, object: AnyObject, io: &mut Io) -> Result<()> {
    let name = qualified_name(&object);
    let mut checked = object.clone();
    // The server gives a user or namespace without a tenant its creator's; any will do here.
    match &mut checked {
        AnyObject::User(u) => set_if_empty(&mut u.spec.get_or_insert_default().tenant, DEFAULT_TENANT),
        AnyObject::Namespace(ns) => set_if_empty(&mut ns.spec.get_or_insert_default().tenant, DEFAULT_TENANT),
        _ => {}
    }
    if let Err(list) = stratus_api::prepare(&mut checked) {
        return Error::from_many(list.0.iter().map(|e| Error::Usage(format!("{name}: {e}"))).collect());
    }
    ctx.client.create_any(object).await.map_err(|e| Error::object(&name, e))?;
    writeln!(io.out, "{name} created")?;
    Ok(())
}

fn set_if_empty(field: &mut String, value: &str) {
    if field.is_empty() {
        *field = value.to_string();
    }
}

fn named<K: Resource>(mut object: K, namespace: Option<&str>, name: String) -> AnyObject {
    object.meta_mut().name = name;
    if let Some(ns) = namespace {
        object.meta_mut().namespace = ns.to_string();
    }
    object.into_any()
}

fn tenant(args: CreateTenantArgs) -> AnyObject {
    let quota = TenantQuota {
        max_cpu: args.max_cpu.unwrap_or_default(),
        max_memory: args.max_memory.unwrap_or_default(),
        max_instances: args.max_instances,
        max_services: args.max_services,
    };
    let spec = TenantSpec {
        display_name: args.display_name.unwrap_or_default(),
        quota: (quota != TenantQuota::default()).then_some(quota),
        ..Default::default()
    };
    named(Tenant { spec: Some(spec), ..Default::default() }, None, args.name)
}

fn namespace(args: CreateNamespaceArgs) -> AnyObject {
    let spec = NamespaceSpec { tenant: args.tenant.unwrap_or_default() };
    named(Namespace { spec: Some(spec), ..Default::default() }, None, args.name)
}

/// A user with the password from stdin, or asked for twice at the terminal.
fn user(args: CreateUserArgs, io: &mut Io) -> Result<AnyObject> {
    let password = if args.password_stdin {
        prompt::read_stdin_secret(&mut io.stdin)?
    } else {
        let first = prompt::ask(io.prompt.as_mut(), &format!("Password for {}: ", args.name))?;
        let again = prompt::ask(io.prompt.as_mut(), "Type it again: ")?;
        if first != again {
            return Err(Error::Usage("the two passwords differ; nothing was created".into()));
        }
        first
    };
    let spec = UserSpec {
        tenant: args.tenant.unwrap_or_default(),
        display_name: args.display_name.unwrap_or_default(),
        password,
        cluster_role: args.cluster_role.unwrap_or_default(),
        password_hash: String::new(),
    };
    Ok(named(User { spec: Some(spec), ..Default::default() }, None, args.name))
}

fn service_account(ctx: &Ctx, args: CreateServiceAccountArgs) -> AnyObject {
    let spec = ServiceAccountSpec {
        cluster_role: args.cluster_role.unwrap_or_default(),
        node_name: args.node.unwrap_or_default(),
    };
    named(ServiceAccount { spec: Some(spec), ..Default::default() }, Some(&ctx.namespace.name), args.name)
}

/// A Secret of `--from-literal` pairs; a key given twice is refused, as kubectl does.
fn secret(ctx: &Ctx, args: CreateSecretArgs) -> Result<AnyObject> {
    let mut data = std::collections::BTreeMap::new();
    for pair in args.from_literal {
        let Some((key, value)) = pair.split_once('=') else {
            return Err(Error::Usage(format!("--from-literal takes KEY=VALUE; {:?} has no '='", key_of(&pair))));
        };
        if data.insert(key.to_string(), value.to_string()).is_some() {
            return Err(Error::Usage(format!("--from-literal gives the key {key:?} twice")));
        }
    }
    let secret = Secret { data, r#type: args.secret_type.unwrap_or_default(), ..Default::default() };
    Ok(named(secret, Some(&ctx.namespace.name), args.name))
}

/// What a malformed `--from-literal` is called in a message: never its value, which a pair
/// without '=' might be all of.
fn key_of(pair: &str) -> String {
    format!("<{} characters>", pair.chars().count())
}

fn role_binding(ctx: &Ctx, args: CreateRoleBindingArgs) -> AnyObject {
    let subject = |kind: &str, name: String, namespace: Option<String>| Subject {
        kind: kind.to_string(),
        name,
        namespace: namespace.unwrap_or_default(),
    };
    let subjects = (args.users.into_iter().map(|u| subject(subjects::USER, u, None)))
        .chain(args.service_accounts.into_iter().map(|(ns, name)| subject(subjects::SERVICE_ACCOUNT, name, ns)))
        .chain(args.tenants.into_iter().map(|t| subject(subjects::TENANT, t, None)))
        .collect();
    let spec = RoleBindingSpec { role: args.role, subjects };
    named(RoleBinding { spec: Some(spec), ..Default::default() }, Some(&ctx.namespace.name), args.name)
}

/// `stratus create token serviceaccount/NAME`: prints the token alone, for `$(…)`; with
/// `--bootstrap`, a bootstrap token for joining nodes.
async fn token(ctx: &Ctx, args: CreateTokenArgs, io: &mut Io) -> Result<()> {
    if args.bootstrap {
        let made = ctx
            .client
            .create_bootstrap_token(args.duration, args.uses.unwrap_or(1), "stratus create token --bootstrap")
            .await
            .map_err(|e| Error::object("bootstrap token", e))?;
        if !args.print_join_command {
            writeln!(io.out, "{}", made.token)?;
            return Ok(());
        }
        let ca = ctx.ca_pem.as_deref().map(String::from_utf8_lossy).ok_or_else(|| {
            Error::Usage(
                "--print-join-command needs the server's CA (--certificate-authority, or the context's)".into(),
            )
        })?;
        let pin = stratus_auth::pki::ca_cert_hash(&ca).map_err(|e| Error::Usage(e.to_string()))?;
        writeln!(
            io.out,
            "stratus-agent --join {} --token {} --ca-cert-hash {pin} --node-name NODE --data-dir /var/lib/stratus-agent",
            ctx.server, made.token
        )?;
        return Ok(());
    }
    let Some(account) = args.service_account.as_deref() else {
        return Err(Error::Usage("give serviceaccount/NAME, or --bootstrap".into()));
    };
    let name = service_account_name(account)?;
    let namespace = &ctx.namespace.name;
    let issued = ctx.client.create_token(namespace, name, args.duration).await.map_err(|e| match e {
        stratus_client::Error::NotFound(_) => ctx.not_found(&ServiceAccount::INFO, name),
        other => Error::object(format!("serviceaccount/{name}"), other),
    })?;
    writeln!(io.out, "{}", issued.access_token)?;
    Ok(())
}

/// The name in `NAME` or `serviceaccount/NAME` (any name of the kind: `sa/NAME`).
fn service_account_name(arg: &str) -> Result<&str> {
    let name = match arg.split_once('/') {
        None => arg,
        Some((kind, name)) => {
            if lookup_kind(kind).is_none_or(|k| k.kind != ServiceAccount::INFO.kind) {
                return Err(Error::Usage(format!(
                    "tokens are made for service accounts only: give serviceaccount/NAME, not {arg:?}"
                )));
            }
            name
        }
    };
    if name.is_empty() || name.contains('/') {
        return Err(Error::Usage(format!("{arg:?} is not NAME or serviceaccount/NAME")));
    }
    Ok(name)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn a_token_is_for_a_service_account_named_either_way() {
        assert_eq!(service_account_name("ci").unwrap(), "ci");
        assert_eq!(service_account_name("serviceaccount/ci").unwrap(), "ci");
        assert_eq!(service_account_name("sa/ci").unwrap(), "ci");
        let err = service_account_name("user/alice").unwrap_err().to_string();
        assert!(err.starts_with("tokens are made for service accounts only"), "{err}");
        assert!(service_account_name("sa/").is_err());
        assert!(service_account_name("sa/a/b").is_err());
    }

    #[test]
    fn a_tenant_without_quota_flags_has_no_quota() {
        let args = CreateTenantArgs {
            name: "acme".into(),
            display_name: None,
            max_cpu: None,
            max_memory: None,
            max_instances: None,
            max_services: None,
        };
        let AnyObject::Tenant(t) = tenant(args) else { panic!("not a tenant") };
        assert_eq!(t.spec.unwrap().quota, None);
        let args = CreateTenantArgs {
            name: "acme".into(),
            display_name: Some("Acme".into()),
            max_cpu: Some("8".into()),
            max_memory: None,
            max_instances: None,
            max_services: Some(3),
        };
        let AnyObject::Tenant(t) = tenant(args) else { panic!("not a tenant") };
        let quota = t.spec.unwrap().quota.unwrap();
        assert_eq!((quota.max_cpu.as_str(), quota.max_services), ("8", Some(3)));
    }
}

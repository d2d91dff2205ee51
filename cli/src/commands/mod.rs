//! One module per command; this one dispatches and holds what they share.

use std::io::Write;

use clap::CommandFactory;
use stratus_api::KindInfo;
use stratus_client::{Client, ListParams};

use crate::args::{AuthCommand, Cli, Command};
use crate::config::{self, Config, Namespace, Overrides};
use crate::error::{Error, Result};
use crate::target::Group;
use crate::{Environment, Io, table};

mod apply;
mod auth;
mod bench;
mod billing;
mod config_cmd;
mod create;
mod delete;
mod describe;
mod get;
mod image;
mod logs;
mod top;
mod wait;

/// What a command that talks to the API server works with.
pub(crate) struct Ctx {
    /// Presents [`Ctx::token`] on every request.
    pub client: Client,
    pub namespace: Namespace,
    pub server: String,
    /// `STRATUS_TOKEN`, or the current context's; `None` when no one is logged in.
    pub token: Option<String>,
    /// The CA bundle (PEM) the server is verified with, when it is HTTPS.
    pub ca_pem: Option<Vec<u8>>,
}

impl Ctx {
    /// The namespace to address an object of `info`'s kind in: none for cluster-scoped kinds.
    pub fn namespace_for(&self, info: &KindInfo) -> &str {
        if info.namespaced { &self.namespace.name } else { "" }
    }

    /// The not-found error for `name` of `info`'s kind in the command's namespace.
    pub fn not_found(&self, info: &KindInfo, name: &str) -> Error {
        Error::NotFound {
            plural: info.plural,
            name: name.to_string(),
            namespace: info.namespaced.then(|| self.namespace.name.clone()),
        }
    }

    /// List parameters for `info`'s kind: the command's namespace, or every namespace.
    pub fn list_params(
        &self,
        info: &KindInfo,
        all_namespaces: bool,
        labels: Option<&str>,
        fields: Option<&str>,
    ) -> ListParams {
        ListParams {
            namespace: if all_namespaces { String::new() } else { self.namespace_for(info).to_string() },
            label_selector: labels.unwrap_or_default().to_string(),
            field_selector: fields.unwrap_or_default().to_string(),
            ..Default::default()
        }
    }

    /// kubectl's message for an empty list, for stderr so that scripts reading stdout see nothing.
    pub fn nothing_found(&self, groups: &[Group], all_namespaces: bool) -> String {
        if !all_namespaces && groups.iter().any(|g| g.info.namespaced) {
            format!("No resources found in {} namespace.", self.namespace.name)
        } else {
            "No resources found".to_string()
        }
    }

    /// A request about the object `name` of `info`'s kind failed: not found is said as such,
    /// anything else names the object.
    pub fn object_error(&self, info: &KindInfo, name: &str, err: stratus_client::Error) -> Error {
        match err {
            stratus_client::Error::NotFound(_) => self.not_found(info, name),
            other => Error::object(format!("{}/{name}", info.singular), other),
        }
    }
}

pub(crate) async fn run(cli: Cli, env: &Environment, io: &mut Io) -> Result<()> {
    let Cli { server, namespace, certificate_authority, command } = cli;
    let env = &match certificate_authority {
        Some(path) => Environment { certificate_authority: Some(path), ..env.clone() },
        None => env.clone(),
    };
    let connect = || connect(server.as_deref(), namespace.as_deref(), env);
    match command {
        Command::Apply(args) => apply::run(&connect()?, args, io).await,
        Command::Get(args) => get::run(&connect()?, args, io).await,
        Command::Describe(args) => describe::run(&connect()?, args, io).await,
        Command::Delete(args) => delete::run(&connect()?, args, io).await,
        Command::Wait(args) => wait::run(&connect()?, args, io).await,
        Command::Logs(args) => logs::run(&connect()?, args, io).await,
        Command::Top(args) => top::run(&connect()?, args, io).await,
        Command::Bench(args) => bench::run(args, connect, io).await,
        Command::Create(cmd) => create::run(&connect()?, cmd, io).await,
        Command::Login(args) => auth::login(args, server.as_deref(), env, io).await,
        Command::Logout => auth::logout(server.as_deref(), env, io),
        Command::Whoami(args) => auth::whoami(&connect()?, args, io).await,
        Command::Auth(AuthCommand::CanI(args)) => auth::can_i(&connect()?, args, io).await,
        Command::Auth(AuthCommand::PrintAccessToken) => auth::print_access_token(&connect()?, io),
        Command::Up(args) => crate::up::run(args, namespace.as_deref(), env, io).await,
        Command::Down(args) => crate::down::run(args, env, io).await,
        Command::Config(cmd) => config_cmd::run(cmd, server.as_deref(), namespace.as_deref(), env, io),
        Command::Billing(cmd) => billing::run(&connect()?, cmd, io).await,
        Command::Image(cmd) => image::run(&connect()?, cmd, io).await,
        Command::ApiResources => api_resources(io),
        Command::Completion(args) => {
            clap_complete::generate(args.shell, &mut Cli::command(), "stratus", &mut io.out);
            Ok(())
        }
    }
}

/// The client, namespace and token of a command, from the flags, the environment and the
/// config file. Without a token the client still connects: the server's refusal says to log in.
fn connect(server: Option<&str>, namespace: Option<&str>, env: &Environment) -> Result<Ctx> {
    let path = env.config_path.as_deref();
    let config = Config::load(path)?;
    let given = Overrides {
        flag_server: server,
        env_server: env.server.as_deref(),
        flag_namespace: namespace,
        env_token: env.token.as_deref(),
        ca_file: env.certificate_authority.as_deref(),
    };
    let conn = config::resolve(given, &config, path)?;
    let client = Client::with_ca(&conn.server, conn.ca_pem.as_deref())?;
    let client = match &conn.token {
        Some(token) => client.with_token(token),
        None => client,
    };
    Ok(Ctx { client, namespace: conn.namespace, server: conn.server, token: conn.token, ca_pem: conn.ca_pem })
}

pub(crate) use apply::apply_items;

/// `stratus api-resources`: kubectl's table of kinds.
fn api_resources(io: &mut Io) -> Result<()> {
    let header: Vec<String> = ["NAME", "SHORTNAMES", "APIVERSION", "NAMESPACED", "KIND"].map(String::from).into();
    let rows: Vec<Vec<String>> = stratus_api::resource::KINDS
        .iter()
        .map(|k| {
            vec![
                k.plural.to_string(),
                k.short_names.join(","),
                stratus_api::API_VERSION.to_string(),
                k.namespaced.to_string(),
                k.kind.to_string(),
            ]
        })
        .collect();
    io.out.write_all(table::render(&header, &rows, false).as_bytes())?;
    Ok(())
}

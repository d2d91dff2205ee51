//! Who the CLI is to the server: `login`, `logout`, `whoami`, `auth can-i` and
//! `auth print-access-token`.

use std::io::Write;
use std::time::SystemTime;

use serde_json::json;
use stratus_api::v1::WhoAmIResponse;
use stratus_client::Client;

use super::Ctx;
use crate::args::{CanIArgs, DataFormat, LoginArgs, WhoamiArgs};
use crate::config::{self, Config, Overrides};
use crate::error::{Error, Result};
use crate::format::{human_duration, rfc3339, unix_seconds};
use crate::output::{or_none, to_json_text, to_yaml_text};
use crate::{Environment, Io, prompt, table};

/// `stratus login`: the password grant, then the token kept in the context of the server. The
/// config file is written only once the server has given a token that it also accepts.
pub(crate) async fn login(args: LoginArgs, server: Option<&str>, env: &Environment, io: &mut Io) -> Result<()> {
    let path = env.config_path.as_deref();
    let mut config = Config::load(path)?;
    let given = Overrides {
        flag_server: server,
        env_server: env.server.as_deref(),
        ca_file: env.certificate_authority.as_deref(),
        ..Default::default()
    };
    let resolved = config::resolve(given, &config, path)?;
    let (server, ca_pem) = (resolved.server, resolved.ca_pem);
    let username = match args.username.filter(|u| !u.is_empty()) {
        Some(u) => u,
        None => {
            let last = config.clone().login_context(&server).user.clone();
            if last.is_empty() {
                return Err(Error::Usage("give the user to log in as with --username".into()));
            }
            last
        }
    };
    let password = if args.password_stdin {
        prompt::read_stdin_secret(&mut io.stdin)?
    } else {
        prompt::ask(io.prompt.as_mut(), &format!("Password for {username}: "))?
    };

    let client = Client::with_ca(&server, ca_pem.as_deref())?;
    let issued = client.login(&username, &password).await.map_err(|e| match e {
        stratus_client::Error::Unauthenticated(reason) => Error::LoginFailed(reason),
        other => Error::from(other),
    })?;
    let me = client.with_token(&issued.access_token).who_am_i().await?;

    let context = config.login_context(&server);
    context.user.clone_from(&username);
    context.token.clone_from(&issued.access_token);
    if let Some(ca) = &ca_pem {
        context.set_certificate_authority(ca);
    }
    config.save(config::writable(path)?)?;
    let tenant = if me.tenant.is_empty() { String::new() } else { format!(" (tenant {})", me.tenant) };
    writeln!(
        io.out,
        "Logged in to {server} as {username}{tenant}; the token expires in {}.",
        human_duration(issued.expires_in)
    )?;
    Ok(())
}

/// `stratus logout`: deletes the token of the current context (with `--server`, of the context
/// for that server). The token itself stays valid until it expires: tokens are not revoked.
pub(crate) fn logout(server: Option<&str>, env: &Environment, io: &mut Io) -> Result<()> {
    let path = env.config_path.as_deref();
    let mut config = Config::load(path)?;
    let name = match server.filter(|s| !s.is_empty()) {
        Some(server) => {
            let for_server = |c: &&config::Context| config::same_server(&c.server, server);
            let current = config.current(path)?.filter(for_server);
            current.or_else(|| config.contexts.iter().find(for_server)).map(|c| c.name.clone())
        }
        None => config.current(path)?.map(|c| c.name.clone()),
    };
    let Some(context) = name.as_deref().and_then(|n| config.context_mut(n)).filter(|c| !c.token.is_empty()) else {
        let at = server.map(|s| format!(" to {s}")).unwrap_or_default();
        writeln!(io.out, "Not logged in{at}.")?;
        return Ok(());
    };
    context.token.clear();
    let said = format!("Logged out of {} (context {:?}).", context.server, context.name);
    config.save(config::writable(path)?)?;
    writeln!(io.out, "{said}")?;
    if env.token.is_some() {
        writeln!(io.err, "warning: STRATUS_TOKEN is set, and is still presented")?;
    }
    Ok(())
}

/// `stratus whoami`: what the server makes of the token, as kubectl's `auth whoami` shows it.
pub(crate) async fn whoami(ctx: &Ctx, args: WhoamiArgs, io: &mut Io) -> Result<()> {
    let me = ctx.client.who_am_i().await?;
    let text = match args.output {
        None => whoami_table(&me, SystemTime::now()),
        Some(DataFormat::Json) => to_json_text(&whoami_json(&me))?,
        Some(DataFormat::Yaml) => to_yaml_text(&whoami_json(&me))?,
    };
    io.out.write_all(text.as_bytes())?;
    Ok(())
}

fn whoami_table(me: &WhoAmIResponse, now: SystemTime) -> String {
    let expires = match &me.expires_at {
        Some(t) => format!("{} (in {})", rfc3339(t), human_duration(t.seconds - unix_seconds(now))),
        None => "<never>".to_string(),
    };
    let header = vec!["ATTRIBUTE".to_string(), "VALUE".to_string()];
    let rows: Vec<Vec<String>> = [
        ("Username", or_none(&me.username)),
        ("Kind", or_none(&me.kind)),
        ("Tenant", or_none(&me.tenant)),
        ("Cluster-Role", or_none(&me.cluster_role)),
        ("Expires", expires),
    ]
    .into_iter()
    .map(|(k, v)| vec![k.to_string(), v])
    .collect();
    table::render(&header, &rows, false)
}

fn whoami_json(me: &WhoAmIResponse) -> serde_json::Value {
    json!({
        "username": me.username,
        "kind": me.kind,
        "tenant": me.tenant,
        "clusterRole": me.cluster_role,
        "expiresAt": me.expires_at.as_ref().map(rfc3339),
    })
}

/// `stratus auth can-i VERB KIND[/NAME]`: `yes` (exit 0) or `no` (exit 1, the reason on
/// stderr), as `kubectl auth can-i` answers.
pub(crate) async fn can_i(ctx: &Ctx, args: CanIArgs, io: &mut Io) -> Result<()> {
    let (kind, name) = match args.resource.split_once('/') {
        Some((_, "")) => return Err(Error::Usage(format!("{:?} is not KIND or KIND/NAME", args.resource))),
        Some((kind, name)) => (kind, name),
        None => (args.resource.as_str(), ""),
    };
    let info = crate::target::kind(kind)?;
    let namespace = match (args.all_namespaces, info.namespaced) {
        (true, _) => "*",
        (false, true) => ctx.namespace.name.as_str(),
        (false, false) => "",
    };
    let answer = ctx.client.can_i(&args.verb, info.kind, namespace, name).await?;
    if args.quiet {
        return if answer.allowed { Ok(()) } else { Err(Error::Silent) };
    }
    if answer.allowed {
        writeln!(io.out, "yes")?;
        return Ok(());
    }
    writeln!(io.out, "no")?;
    if !answer.reason.is_empty() {
        writeln!(io.err, "{}", answer.reason.replace('\n', " "))?;
    }
    Err(Error::Silent)
}

/// `stratus auth print-access-token`: the token requests present, for other tools.
pub(crate) fn print_access_token(ctx: &Ctx, io: &mut Io) -> Result<()> {
    let token = ctx.token.as_deref().ok_or_else(|| Error::NoToken { server: ctx.server.clone() })?;
    writeln!(io.out, "{token}")?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use stratus_api::Timestamp;

    use super::*;

    #[test]
    fn whoami_shows_every_attribute_and_when_the_token_expires() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        let me = WhoAmIResponse {
            username: "alice".into(),
            tenant: "acme".into(),
            kind: "User".into(),
            cluster_role: String::new(),
            expires_at: Some(Timestamp { seconds: 1_700_000_000 + 12 * 3600, nanos: 0 }),
        };
        let text = whoami_table(&me, now);
        let lines: Vec<Vec<&str>> = text.lines().map(|l| l.split_whitespace().collect()).collect();
        assert_eq!(lines[0], ["ATTRIBUTE", "VALUE"]);
        assert_eq!(lines[1], ["Username", "alice"]);
        assert_eq!(lines[2], ["Kind", "User"]);
        assert_eq!(lines[3], ["Tenant", "acme"]);
        assert_eq!(lines[4], ["Cluster-Role", "<none>"]);
        assert_eq!(lines[5], ["Expires", "2023-11-15T10:13:20Z", "(in", "12h)"]);
        let json = whoami_json(&me);
        assert_eq!(json["clusterRole"], "");
        assert_eq!(json["expiresAt"], "2023-11-15T10:13:20Z");
    }
}

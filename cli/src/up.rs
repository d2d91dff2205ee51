//! `stratus up`: the whole platform for one machine in this process: the API server on the
//! embedded store, the controllers, the gateway and a node agent. Stopping it leaves workloads
//! running; the next `stratus up` adopts them (`stratus down` removes them).
//!
//! The first start makes the user `admin` (cluster-admin) with a random password, kept in
//! `DATA_DIR/admin-password`; every start logs this CLI in as admin, in the config context of
//! the server (made current), so that `stratus apply` and `stratus get` work right away.

use std::io::Write;
use std::path::{Path, PathBuf};

use stratus_api::Resource;
use stratus_apiserver::StoreOptions;
use stratus_client::{Client, ErrorChain};

use crate::args::UpArgs;
use crate::config::{self, Config, Namespace};
use crate::error::{Error, Result};
use crate::{Environment, Io, commands, manifest};

pub(crate) async fn run(args: UpArgs, namespace: Option<&str>, env: &Environment, io: &mut Io) -> Result<()> {
    let data_dir: PathBuf = args
        .data_dir
        .clone()
        .or_else(|| env.data_dir.clone())
        .ok_or_else(|| Error::Up("there is no home directory to keep the data in; pass --data-dir".to_string()))?;
    // The manifests are read and checked first: a typo is reported before anything starts.
    let namespace = Namespace {
        name: namespace.unwrap_or(stratus_api::DEFAULT_NAMESPACE).to_string(),
        explicit: namespace.is_some(),
    };
    let sources = manifest::read(&args.filenames, &mut io.stdin)?;
    let items = manifest::load(&sources, &namespace, true)?;

    // Every component of the platform shares this process's descriptors.
    stratus_support::raise_open_file_limit();
    // Traces, when OTEL_EXPORTER_OTLP_ENDPOINT names a collector: every component's spans.
    let traces = stratus_support::otel::init("stratus").map_err(|e| Error::Up(format!("traces: {e}")))?;
    std::fs::create_dir_all(&data_dir)
        .map_err(|e| Error::Up(format!("cannot create the data directory {}: {e}", data_dir.display())))?;
    let api_listener = tokio::net::TcpListener::bind(&args.listen).await.map_err(|e| {
        let hint = if e.kind() == std::io::ErrorKind::AddrInUse {
            " — is another `stratus up` running? pick another address with --listen"
        } else {
            ""
        };
        Error::Up(format!("cannot listen on {}: {e}{hint}", args.listen))
    })?;
    let gateway_listener = tokio::net::TcpListener::bind(&args.gateway_listen).await.map_err(|e| {
        Error::Up(format!(
            "the gateway cannot listen on {}: {e}; pick another address with --gateway-listen",
            args.gateway_listen
        ))
    })?;
    let gateway_https_listener = tokio::net::TcpListener::bind(&args.gateway_https_listen).await.map_err(|e| {
        Error::Up(format!(
            "the gateway cannot serve HTTPS on {}: {e}; pick another address with --gateway-https-listen",
            args.gateway_https_listen
        ))
    })?;
    let password_file = data_dir.join(ADMIN_PASSWORD_FILE);
    // The gateway's usage reports wait here until the API has them (see stratus_client::usage).
    let usage_dir = data_dir.join("usage").join("gateway");
    let spool = stratus_client::usage::Spool::open(
        &usage_dir,
        stratus_client::usage::Spool::DEFAULT_MAX_FILES,
        stratus_client::usage::SpoolMetrics::default(),
    )
    .map_err(|e| Error::Up(format!("cannot open the usage spool {}: {e}", usage_dir.display())))?;
    let metering = stratus_gateway::Metering { spool, window: stratus_gateway::Metering::DEFAULT_WINDOW };
    let gateway_admin = bind(&args.gateway_admin_listen, "the gateway's metrics", "--gateway-admin-listen").await?;
    let controllers_metrics =
        bind(&args.controllers_metrics_listen, "the controllers' metrics", "--controllers-metrics-listen").await?;
    let api_addr = api_listener.local_addr().map_err(|e| Error::Up(format!("the API listener has no address: {e}")))?;
    let mut platform =
        stratus_platform::Builder::serve_api(StoreOptions::Embedded { data_dir: data_dir.clone() }, api_listener)
            .api_config(stratus_apiserver::Config {
                images: Some(stratus_apiserver::images::ImagesConfig::new(&args.registry, data_dir.join("uploads"))),
                ..Default::default()
            })
            .api_tls(stratus_platform::tls::ServingTls::Issued {
                pki_dir: data_dir.join("pki"),
                names: stratus_platform::tls::ServingTls::default_names(api_addr, &[]),
                validity: stratus_auth::pki::SERVING_VALIDITY,
            })
            .bootstrap_admin(&password_file)
            .gateway(
                gateway_listener,
                stratus_gateway::GatewayConfig {
                    domain: args.domain.clone(),
                    metering: Some(metering),
                    ..Default::default()
                },
            )
            .gateway_tls(
                gateway_https_listener,
                stratus_platform::tls::GatewayTls { issue_with_cluster_ca: true, ..Default::default() },
            )
            .gateway_admin(gateway_admin)
            .controllers_metrics(controllers_metrics)
            .controllers(stratus_controllers::Config {
                domain: args.domain.clone(),
                identity: format!("stratus-up-{}", std::process::id()),
                ..Default::default()
            });
    if !args.no_agent {
        let (config, runtime, listener) = agent(&args, &data_dir).await?;
        platform = platform.agent(config, runtime, Some(listener));
    }
    let mut platform = platform.start().await.map_err(|e| Error::Up(ErrorChain(&e).to_string()))?;
    let admin_password = platform.admin_password.take();
    // One signal stops everything; the agent's containers keep running, to be adopted by the
    // next `stratus up`.
    let stopper = platform.stopper();
    // The handler is installed here, before the banner says the platform is up.
    let signal = stratus_support::shutdown_signal();
    tokio::spawn(async move {
        signal.await;
        stopper.stop();
    });
    let endpoint = &platform.endpoint;
    let client = platform.client.clone();
    let login = log_in(endpoint, platform.ca_pem.as_deref(), admin_password, &password_file, env).await;
    let (Ok(said) | Err(said)) = &login;
    let ca = data_dir.join("pki").join(stratus_auth::pki::CA_CERT_FILE);
    let mut banner = format!(
        "Stratus API listening on {endpoint} (gRPC and HTTP), data in {}\n{said}\n\n{}\n\
         Try:\n  stratus apply -f manifests/hello.yaml\n  stratus get services\n",
        data_dir.display(),
        console_banner(endpoint, &password_file, &ca)
    );
    // Logged in, the current context is this server's; otherwise other terminals need telling.
    if login.is_err() && endpoint != stratus_client::DEFAULT_SERVER {
        banner.push_str(&format!(
            "\nOther terminals reach it with:\n  export STRATUS_SERVER={endpoint}\n  \
             export STRATUS_CERTIFICATE_AUTHORITY={}\n",
            ca.display()
        ));
    }
    banner.push_str("\nPress Ctrl-C to stop.\n");
    io.out.write_all(banner.as_bytes())?;
    io.out.flush()?;

    if !items.is_empty() {
        let services: Vec<(String, String)> = items
            .iter()
            .filter_map(|item| match &item.object {
                stratus_api::AnyObject::Service(s) => Some((s.meta().namespace.clone(), s.meta().name.clone())),
                _ => None,
            })
            .collect();
        // A manifest the server refuses is reported; the server keeps running for the others.
        if let Err(e) = commands::apply_items(&client, items, io.out.as_mut()).await {
            e.report(&mut io.err);
        }
        let https = platform
            .gateway_https
            .map(|addr| Https { port: addr.port(), ca: data_dir.join("pki").join(stratus_auth::pki::CA_CERT_FILE) });
        for (namespace, name) in services {
            announce(&client, &namespace, &name, https.as_ref(), &mut platform.stopping(), io).await?;
        }
    }
    let _ = platform.stopping().wait_for(|s| *s).await;
    if let Err(e) = platform.stopped().await {
        writeln!(io.err, "error: {}", ErrorChain(&e))?;
    }
    if let Some(traces) = traces {
        traces.shutdown().await;
    }
    writeln!(io.out, "Stratus API stopped.")?;
    Ok(())
}

/// Where the first admin's password is kept, in the data directory.
const ADMIN_PASSWORD_FILE: &str = "admin-password";

/// Where the web console is and how to log in to it: as `admin` with the password `stratus up`
/// made (the file), or as any user made with `stratus create user`. The browser does not know
/// the cluster CA that signed the server's certificate, so it warns until the CA is trusted.
fn console_banner(endpoint: &str, password_file: &Path, ca: &Path) -> String {
    use stratus_api::identity::BOOTSTRAP_ADMIN as ADMIN;
    format!(
        "Web console: {}/ui\n  \
         log in as {ADMIN} with the password in {} (or as a user made with `stratus create user`);\n  \
         the browser warns about the certificate until it trusts the cluster CA {}\n",
        endpoint.trim_end_matches('/'),
        password_file.display(),
        ca.display()
    )
}

/// Logs this CLI in as admin, with the password this start made or the one in
/// `password_file`, and keeps the token in the context of `endpoint`, made current. Says what
/// to tell the user: where the password is, or (as an error) why the CLI is not logged in and
/// what to do. An error does not stop `up`: the server is worth running anyway.
async fn log_in(
    endpoint: &str,
    ca_pem: Option<&str>,
    made: Option<String>,
    password_file: &Path,
    env: &Environment,
) -> std::result::Result<String, String> {
    use stratus_api::identity::BOOTSTRAP_ADMIN as ADMIN;
    let file = password_file.display();
    let password = match made {
        Some(p) => p,
        None => std::fs::read_to_string(password_file).map_err(|e| {
            format!(
                "The admin's password file {file} cannot be read ({e}): log in with \
                 `stratus login --server {endpoint} --username {ADMIN}` if you know the password, or as another user"
            )
        })?,
    };
    let password = password.trim_end_matches(['\n', '\r']);
    let issued = match Client::with_ca(endpoint, ca_pem.map(str::as_bytes)) {
        Ok(client) => client.login(ADMIN, password).await,
        Err(e) => Err(e),
    };
    let token = issued
        .map_err(|e| {
            format!(
                "This CLI could not log in as {ADMIN} with the password in {file} ({e}): log in with \
                 `stratus login --server {endpoint}`"
            )
        })?
        .access_token;
    match save_login(endpoint, ca_pem, ADMIN, &token, env.config_path.as_deref()) {
        Ok(context) => Ok(format!(
            "This CLI is logged in as {ADMIN} (cluster-admin), in the context {context:?}; the admin's password \
             is in {file}"
        )),
        Err(e) => Err(format!(
            "The token of {ADMIN} cannot be kept ({e}): log in with `stratus login --server {endpoint} --username \
             {ADMIN}`; the password is in {file}"
        )),
    }
}

/// Keeps `token` of `user` in the context of `server`, made current; returns its name.
fn save_login(server: &str, ca_pem: Option<&str>, user: &str, token: &str, path: Option<&Path>) -> Result<String> {
    let mut config = Config::load(path)?;
    let context = config.login_context(server);
    context.user = user.to_string();
    context.token = token.to_string();
    if let Some(ca) = ca_pem {
        context.set_certificate_authority(ca.as_bytes());
    }
    let name = context.name.clone();
    config.save(config::writable(path)?)?;
    Ok(name)
}

/// Where the gateway serves HTTPS, and the CA that verifies it.
struct Https {
    port: u16,
    ca: PathBuf,
}

impl Https {
    /// The HTTPS URL of a service whose URL is `http://HOST[:PORT]`.
    fn url(&self, http_url: &str) -> Option<String> {
        let rest = http_url.strip_prefix("http://")?;
        let (authority, path) = rest.split_once('/').map_or((rest, ""), |(a, p)| (a, p));
        let host = authority.rsplit_once(':').map_or(authority, |(h, _)| h);
        let port = if self.port == 443 { String::new() } else { format!(":{}", self.port) };
        Some(format!("https://{host}{port}/{path}").trim_end_matches('/').to_string())
    }
}

/// Waits (showing progress) until an applied service is Ready, then prints its URL and a
/// `curl` line that works; says why when it cannot get Ready. Gives up waiting on shutdown.
async fn announce(
    client: &Client,
    namespace: &str,
    name: &str,
    https: Option<&Https>,
    stop: &mut tokio::sync::watch::Receiver<bool>,
    io: &mut Io,
) -> Result<()> {
    use stratus_api::v1::Service;
    let started = std::time::Instant::now();
    let mut last_line = String::new();
    loop {
        let svc: Service = client.get(namespace, name).await?;
        let status = svc.status.clone().unwrap_or_default();
        let ready = status.conditions.iter().find(|c| c.r#type == "Ready").cloned().unwrap_or_default();
        if ready.status == "True" && !status.url.is_empty() {
            writeln!(
                io.out,
                "service/{name} is ready in {:.1}s: {url}\n  curl {url}",
                started.elapsed().as_secs_f64(),
                url = status.url
            )?;
            if let Some(https) = https.and_then(|h| h.url(&status.url).map(|url| (h, url))) {
                writeln!(io.out, "  curl --cacert {} {}", https.0.ca.display(), https.1)?;
            }
            return Ok(());
        }
        let line = if ready.status == "False" {
            format!("service/{name} is not ready: {} {}", ready.reason, ready.message)
        } else {
            format!("waiting for service/{name} to become ready…")
        };
        if line != last_line {
            writeln!(io.out, "{line}")?;
            io.out.flush()?;
            last_line = line;
        }
        if started.elapsed() > std::time::Duration::from_secs(120) {
            writeln!(io.out, "service/{name} is still not ready; see `stratus describe service {name}`")?;
            return Ok(());
        }
        tokio::select! {
            _ = tokio::time::sleep(std::time::Duration::from_millis(200)) => {}
            _ = stop.wait_for(|s| *s) => return Ok(()),
        }
    }
}

/// The node agent for this machine: its configuration, the Docker engine (which need not be up:
/// the node is NotReady until it answers) and where it serves its metrics and logs. It meters
/// its instances, spooling the reports under `data_dir`/usage/agent-NODE.
async fn agent(
    args: &UpArgs,
    data_dir: &std::path::Path,
) -> Result<(stratus_agent::AgentConfig, std::sync::Arc<dyn stratus_agent::runtime::Runtime>, tokio::net::TcpListener)>
{
    let node_name = match &args.node_name {
        Some(n) => n.clone(),
        None => stratus_support::hostname()
            .ok_or_else(|| Error::Up("cannot tell this machine's hostname; pass --node-name".into()))?,
    };
    let listener = tokio::net::TcpListener::bind(&args.agent_listen).await.map_err(|e| {
        Error::Up(format!(
            "the node agent cannot listen on {}: {e}; pick another address with --agent-listen",
            args.agent_listen
        ))
    })?;
    let runtime = std::sync::Arc::new(stratus_agent::runtime::lazy::LazyDocker::new(args.docker_host.clone()));
    // The agent's usage reports, and its record of the last window reported, stay here until
    // the API has them (see stratus_agent::metering).
    let usage_dir = data_dir.join("usage").join(format!("agent-{}", stratus_client::usage::source_label(&node_name)));
    let spool = stratus_client::usage::Spool::open(
        &usage_dir,
        stratus_client::usage::Spool::DEFAULT_MAX_FILES,
        stratus_client::usage::SpoolMetrics::default(),
    )
    .map_err(|e| Error::Up(format!("cannot open the agent's usage spool {}: {e}", usage_dir.display())))?;
    let mut config = stratus_agent::AgentConfig::new(node_name);
    config.require_non_root = args.require_non_root;
    // The agent runs on this host, beside the engine and the gateway: both reach containers on
    // their own addresses, so the agent probes them there and advertises them to the gateway
    // (no engine port proxy on the request path).
    config.probe_container_address = true;
    config.advertise_container_address = true;
    config.metering =
        Some(stratus_agent::metering::Metering { spool, window: stratus_agent::metering::Metering::DEFAULT_WINDOW });
    Ok((config, runtime, listener))
}

/// Binds `addr` for `what`, naming the flag that picks another address when it is taken.
async fn bind(addr: &str, what: &str, flag: &str) -> Result<tokio::net::TcpListener, Error> {
    tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|e| Error::Up(format!("cannot serve {what} on {addr}: {e}; pick another address with {flag}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_banner_says_where_the_console_is_and_who_logs_in() {
        let text =
            console_banner("https://127.0.0.1:7070/", Path::new("/d/admin-password"), Path::new("/d/pki/ca.crt"));
        assert!(text.starts_with("Web console: https://127.0.0.1:7070/ui\n"), "{text}");
        assert!(text.contains("log in as admin with the password in /d/admin-password"), "{text}");
        assert!(text.contains("/d/pki/ca.crt"), "{text}");
    }
}

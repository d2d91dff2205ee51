//! `stratus up`: the whole platform for one machine in this process: the API server on the
//! embedded store, the controllers, the gateway and a node agent. Stopping it leaves workloads
//! running; the next `stratus up` adopts them (`stratus down` removes them).

use std::io::Write;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use stratus_api::Resource;
use stratus_apiserver::{ApiServer, StoreOptions};
use stratus_client::Client;
use tokio::task::JoinHandle;

use crate::args::UpArgs;
use crate::config::Namespace;
use crate::error::{Error, Result};
use crate::{Environment, Io, commands, manifest};

/// A server started by [`start`].
pub struct Running {
    /// `http://ADDR`, where clients on this machine reach it.
    pub endpoint: String,
    pub addr: SocketAddr,
    task: JoinHandle<Result<(), stratus_apiserver::Error>>,
}

impl Running {
    /// Waits until the server has stopped: after its shutdown future completed and open
    /// connections drained.
    pub async fn stopped(self) -> Result<()> {
        match self.task.await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(Error::Up(e.to_string())),
            Err(e) => Err(Error::Up(format!("the API server stopped unexpectedly: {e}"))),
        }
    }
}

/// Opens the embedded store in `data_dir` (creating the directory), listens on `listen` and
/// serves the API in a task until `shutdown` completes. Requests are accepted as soon as this
/// returns: the socket is bound before, so early clients wait in its backlog.
pub async fn start(
    listen: &str,
    data_dir: &Path,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<Running> {
    std::fs::create_dir_all(data_dir)
        .map_err(|e| Error::Up(format!("cannot create the data directory {}: {e}", data_dir.display())))?;
    let store = stratus_apiserver::open_store(&StoreOptions::Embedded { data_dir: data_dir.to_path_buf() })
        .await
        .map_err(|e| Error::Up(e.to_string()))?;
    let server = ApiServer::new(store).await.map_err(|e| Error::Up(e.to_string()))?;
    let listener = tokio::net::TcpListener::bind(listen).await.map_err(|e| {
        let hint = if e.kind() == std::io::ErrorKind::AddrInUse {
            " — is another `stratus up` running? pick another address with --listen"
        } else {
            ""
        };
        Error::Up(format!("cannot listen on {listen}: {e}{hint}"))
    })?;
    let addr = listener.local_addr().map_err(|e| Error::Up(format!("cannot listen on {listen}: {e}")))?;
    let task = tokio::spawn(server.serve(listener, shutdown));
    Ok(Running { endpoint: endpoint_for(addr), addr, task })
}

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

    // One signal stops everything: the agent first (its containers keep running, to be adopted
    // by the next `stratus up`), then the API server.
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    tokio::spawn(async move {
        stratus_support::shutdown_signal().await;
        let _ = stop_tx.send(true);
    });
    let stopped = |mut rx: tokio::sync::watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|s| *s).await;
    };
    let running = start(&args.listen, &data_dir, stopped(stop_rx.clone())).await?;
    let endpoint = &running.endpoint;
    let agent = if args.no_agent { None } else { Some(start_agent(&args, endpoint, stopped(stop_rx.clone())).await?) };
    let gateway_listener = tokio::net::TcpListener::bind(&args.gateway_listen).await.map_err(|e| {
        Error::Up(format!(
            "the gateway cannot listen on {}: {e}; pick another address with --gateway-listen",
            args.gateway_listen
        ))
    })?;
    let gateway_port =
        gateway_listener.local_addr().map_err(|e| Error::Up(format!("the gateway cannot listen: {e}")))?.port();
    let client = Client::new(endpoint)?;
    // The autoscaler's demand service, on a loopback port of its own that only the gateway uses.
    let demand = stratus_controllers::autoscaler::DemandStore::new();
    let autoscaler = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .map_err(|e| Error::Up(format!("the autoscaler cannot listen on a loopback port: {e}")))?;
    let autoscaler_endpoint = format!(
        "http://{}",
        autoscaler.local_addr().map_err(|e| Error::Up(format!("the autoscaler cannot listen: {e}")))?
    );
    let autoscaler =
        tokio::spawn(stratus_controllers::serve_autoscaler(autoscaler, demand.clone(), stopped(stop_rx.clone())));
    let gateway = stratus_gateway::Gateway::new(
        client.clone(),
        stratus_gateway::GatewayConfig {
            domain: args.domain.clone(),
            autoscaler: Some(autoscaler_endpoint),
            ..Default::default()
        },
    );
    let gateway = tokio::spawn(gateway.serve(gateway_listener, stopped(stop_rx.clone())));
    let controllers_config = stratus_controllers::Config {
        domain: args.domain.clone(),
        gateway_port,
        identity: format!("stratus-up-{}", std::process::id()),
        ..Default::default()
    };
    let controllers = tokio::spawn(stratus_controllers::run_with_demand(
        client.clone(),
        controllers_config,
        std::sync::Arc::new(stratus_controllers::Metrics::default()),
        demand,
        stopped(stop_rx.clone()),
    ));
    let mut banner = format!(
        "Stratus API listening on {endpoint} (gRPC and HTTP), data in {}\n\n\
         Try:\n  stratus apply -f manifests/hello.yaml\n  stratus get services\n",
        data_dir.display()
    );
    if endpoint != stratus_client::DEFAULT_SERVER {
        banner.push_str(&format!("\nOther terminals reach it with:\n  export STRATUS_SERVER={endpoint}\n"));
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
        for (namespace, name) in services {
            announce(&client, &namespace, &name, &mut stop_rx.clone(), io).await?;
        }
    }
    if let Some(agent) = agent {
        let _ = agent.await;
    }
    let _ = controllers.await;
    if let Ok(Err(e)) = autoscaler.await {
        writeln!(io.err, "error: the autoscaler failed: {e}")?;
    }
    match gateway.await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => writeln!(io.err, "error: the gateway failed: {e}")?,
        Err(e) => writeln!(io.err, "error: the gateway stopped unexpectedly: {e}")?,
    }
    running.stopped().await?;
    writeln!(io.out, "Stratus API stopped.")?;
    Ok(())
}

/// Waits (showing progress) until an applied service is Ready, then prints its URL and a
/// `curl` line that works; says why when it cannot get Ready. Gives up waiting on shutdown.
async fn announce(
    client: &Client,
    namespace: &str,
    name: &str,
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

/// Starts the node agent for this machine in a task, talking to the API at `endpoint`. The
/// Docker engine need not be up: the node is NotReady until it answers.
async fn start_agent(
    args: &UpArgs,
    endpoint: &str,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<JoinHandle<()>> {
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
    let addr = listener.local_addr().map_err(|e| Error::Up(format!("the node agent cannot listen: {e}")))?;
    let mut cfg = stratus_agent::AgentConfig::new(node_name);
    cfg.agent_endpoint = endpoint_for(addr);
    let runtime = std::sync::Arc::new(stratus_agent::runtime::lazy::LazyDocker::new(args.docker_host.clone()));
    let client = Client::new(endpoint)?;
    Ok(tokio::spawn(stratus_agent::agent::run(cfg, client, runtime, Some(listener), shutdown)))
}

/// Where a client on this machine connects: a server listening on every address is reached
/// on loopback.
fn endpoint_for(addr: SocketAddr) -> String {
    let ip = match addr.ip() {
        ip if ip.is_unspecified() && ip.is_ipv4() => std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST),
        ip if ip.is_unspecified() => std::net::IpAddr::V6(std::net::Ipv6Addr::LOCALHOST),
        ip => ip,
    };
    format!("http://{}", SocketAddr::new(ip, addr.port()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clients_reach_a_wildcard_listener_on_loopback() {
        let at = |s: &str| endpoint_for(s.parse().unwrap_or_else(|e| panic!("{s}: {e}")));
        assert_eq!(at("0.0.0.0:7070"), "http://127.0.0.1:7070");
        assert_eq!(at("[::]:7070"), "http://[::1]:7070");
        assert_eq!(at("10.1.2.3:80"), "http://10.1.2.3:80");
    }
}

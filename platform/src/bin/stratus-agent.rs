//! `stratus-agent`: flags, tracing, then the node agent through
//! [`stratus_platform::Builder::connect`].

use std::sync::Arc;

use anyhow::Context;
use clap::Parser;
use stratus_agent::AgentConfig;
use stratus_agent::runtime::lazy::LazyDocker;

/// The Stratus node agent: runs the Instances bound to this node as Docker containers.
#[derive(Parser, Debug)]
#[command(
    name = "stratus-agent",
    version,
    about = "The Stratus node agent: runs the Instances bound to its node as Docker containers",
    long_about = None
)]
struct Args {
    #[command(flatten)]
    api: stratus_platform::connect::ApiFlags,
    /// This node's name (default: the hostname).
    #[arg(long, env = "STRATUS_NODE_NAME")]
    node_name: Option<String>,
    /// The Docker engine (default: DOCKER_HOST, else the local socket).
    #[arg(long, env = "DOCKER_HOST")]
    docker_host: Option<String>,
    /// CPU kept back for the host, in millicores.
    #[arg(long, default_value = "0")]
    reserved_cpu: String,
    /// Memory kept back for the host, e.g. 512Mi.
    #[arg(long, default_value = "0")]
    reserved_memory: String,
    /// The address container ports are published on and the node advertises.
    #[arg(long, env = "STRATUS_ADVERTISE_ADDRESS", default_value = "127.0.0.1")]
    advertise_address: String,
    /// Where the agent serves /metrics, /healthz and its gRPC service (logs).
    #[arg(long, env = "STRATUS_AGENT_LISTEN", default_value = "127.0.0.1:7071")]
    listen: String,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    stratus_support::init_tracing();
    let args = Args::parse();
    let node_name = match args.node_name {
        Some(n) => n,
        None => stratus_support::hostname().context("cannot tell the hostname; pass --node-name")?,
    };
    let mut cfg = AgentConfig::new(node_name);
    let cpu: stratus_api::quantity::Quantity =
        args.reserved_cpu.parse().with_context(|| format!("--reserved-cpu {:?}", args.reserved_cpu))?;
    let memory: stratus_api::quantity::Quantity =
        args.reserved_memory.parse().with_context(|| format!("--reserved-memory {:?}", args.reserved_memory))?;
    cfg.reserved_cpu_millis = i64::try_from(cpu.ceil_millis()).context("--reserved-cpu is too large")?;
    cfg.reserved_memory_bytes = i64::try_from(memory.ceil_units()).context("--reserved-memory is too large")?;
    cfg.advertise_address = args.advertise_address;
    let listener = tokio::net::TcpListener::bind(&args.listen)
        .await
        .with_context(|| format!("cannot listen on {}", args.listen))?;
    // The engine may come up after the agent: the node is NotReady until it answers.
    let runtime = LazyDocker::new(args.docker_host);
    // The agent advertises the listener's address as its endpoint.
    let platform = args.api.builder()?.agent(cfg, Arc::new(runtime), Some(listener)).start().await?;
    platform.run_until(stratus_support::shutdown_signal()).await?;
    Ok(())
}

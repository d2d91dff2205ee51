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
    /// The node's address, which it advertises (and publishes container ports on, unless
    /// --publish-address says otherwise).
    #[arg(long, env = "STRATUS_ADVERTISE_ADDRESS", default_value = "127.0.0.1")]
    advertise_address: String,
    /// The host address container ports are published on, where gateways reach instances
    /// (default: the advertise address). For an agent in a container that drives its host's
    /// engine: an address of the host that the cluster's network reaches.
    #[arg(long, env = "STRATUS_PUBLISH_ADDRESS", value_name = "IP")]
    publish_address: Option<std::net::IpAddr>,
    /// Where the agent serves /metrics, /healthz and its gRPC service (logs).
    #[arg(long, env = "STRATUS_AGENT_LISTEN", default_value = "127.0.0.1:7071")]
    listen: String,
    /// Run every container as a non-root user, as if each said `runAsNonRoot: true`: one whose
    /// image runs as root (or as a user name) and that sets no non-zero `runAsUser` is refused.
    #[arg(long, env = "STRATUS_REQUIRE_NON_ROOT")]
    require_non_root: bool,
    /// The Docker network instances join; made if missing, with inter-container traffic off.
    #[arg(long, env = "STRATUS_INSTANCE_NETWORK", default_value = stratus_agent::config::DEFAULT_INSTANCE_NETWORK)]
    instance_network: String,
    /// The gateways can reach this node's containers on their own addresses on the instance
    /// network (they run on this host, or that network is routed to them): publish the
    /// network's subnets on the Node and each instance's address on it, so that gateways
    /// connect there instead of through the engine's published ports (its userland proxy).
    /// Also probes containers there. Leave off when the network is private to this host, and
    /// give each advertising node an instance network of its own (Docker picks the same
    /// subnets on every host): a gateway connects to whichever container has the address.
    #[arg(long, env = "STRATUS_ADVERTISE_CONTAINER_ADDRESS")]
    advertise_container_address: bool,
    /// Log lines longer than this many bytes are cut (and marked) when relayed.
    #[arg(long, default_value_t = stratus_agent::logs::LogLimits::default().max_line_bytes)]
    log_max_line_bytes: usize,
    /// Join the cluster whose API is at this URL (https://…): fetch its CA, pinned by
    /// --ca-cert-hash, and exchange the bootstrap token given as --token for this node's client
    /// certificate, kept in --data-dir. From then on (and on every later start, with or without
    /// --join) the agent proves who it is with the certificate, renewed before it expires. It
    /// talks to the API servers given with --apiserver, or to this URL when none is given.
    #[arg(long, env = "STRATUS_JOIN", value_name = "URL")]
    join: Option<String>,
    /// With --join: `sha256:HEX`, the SHA-256 of the cluster CA's public key (SubjectPublicKeyInfo),
    /// as `stratus create token --bootstrap` prints it.
    #[arg(long, env = "STRATUS_CA_CERT_HASH", value_name = "sha256:HEX", requires = "join")]
    ca_cert_hash: Option<String>,
    /// Where the agent keeps its identity (pki/node.crt, pki/node.key, pki/ca.crt).
    #[arg(long, env = "STRATUS_AGENT_DATA_DIR", default_value = "/var/lib/stratus-agent")]
    data_dir: std::path::PathBuf,
    /// At most this many lines of each second of one instance's output are relayed; the rest are
    /// dropped and counted in a notice line (0: no limit).
    #[arg(long, default_value_t = stratus_agent::logs::LogLimits::default().lines_per_second)]
    log_lines_per_second: u32,
    /// Meter the instances for billing and send the usage to the API as UsageReports of this
    /// node: an instance-based revision's containers for their whole life, a request-based
    /// one's for their start-up and shut-down (the gateways meter its requests).
    /// `--metering=false` turns it off.
    #[arg(long, env = "STRATUS_METERING", default_value_t = true, action = clap::ArgAction::Set, value_name = "BOOL")]
    metering: bool,
    /// Where usage reports wait (one 0600 file each) until the API has them, with the record of
    /// the last window reported, so that an agent started again resumes where the last one
    /// stopped, neither losing nor repeating a window. Made if missing. Default: DATA_DIR/usage
    /// (see --data-dir).
    #[arg(long, env = "STRATUS_USAGE_DIR", value_name = "DIR")]
    usage_dir: Option<std::path::PathBuf>,
    /// The length of a usage report's window, in seconds; windows are aligned to whole multiples
    /// of it on the clock.
    #[arg(long, default_value_t = 60, value_parser = clap::value_parser!(u64).range(1..=3600))]
    usage_window_seconds: u64,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    stratus_support::init_tracing();
    stratus_support::raise_open_file_limit();
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
    cfg.publish_address = args.publish_address.map(|ip| ip.to_string());
    cfg.require_non_root = args.require_non_root;
    cfg.instance_network = args.instance_network;
    cfg.advertise_container_address = args.advertise_container_address;
    cfg.probe_container_address = args.advertise_container_address;
    anyhow::ensure!(args.log_max_line_bytes > 0, "--log-max-line-bytes must be at least 1");
    cfg.log_limits = stratus_agent::logs::LogLimits {
        max_line_bytes: args.log_max_line_bytes,
        lines_per_second: args.log_lines_per_second,
    };
    if args.metering {
        let dir = args.usage_dir.clone().unwrap_or_else(|| args.data_dir.join("usage"));
        let spool = stratus_client::usage::Spool::open(
            &dir,
            stratus_client::usage::Spool::DEFAULT_MAX_FILES,
            stratus_client::usage::SpoolMetrics::default(),
        )
        .with_context(|| format!("cannot open the usage spool (--usage-dir {})", dir.display()))?;
        cfg.metering = Some(stratus_agent::metering::Metering {
            spool,
            window: std::time::Duration::from_secs(args.usage_window_seconds),
        });
    }
    let listener = tokio::net::TcpListener::bind(&args.listen)
        .await
        .with_context(|| format!("cannot listen on {}", args.listen))?;
    // The engine may come up after the agent: the node is NotReady until it answers.
    let runtime = LazyDocker::new(args.docker_host);
    // The agent advertises the listener's address as its endpoint.
    let pki_dir = args.data_dir.join("pki");
    let joined = pki_dir.join(stratus_platform::join::NODE_CERT_FILE).exists();
    if args.join.is_none() && !joined {
        let platform = args.api.builder()?.agent(cfg, Arc::new(runtime), Some(listener)).start().await?;
        platform.run_until(stratus_support::shutdown_signal()).await?;
        return Ok(());
    }
    // A node's certificate: got now by joining, or kept from before.
    // After joining, the agent talks to every API server given with --apiserver (and fails over
    // between them); given none, to the one it joined through.
    let endpoint = match &args.join {
        Some(url) if args.api.apiserver == stratus_client::DEFAULT_SERVER => url.clone(),
        _ => args.api.apiserver.clone(),
    };
    let join = match (&args.join, &args.api.token, &args.ca_cert_hash) {
        (Some(url), Some(token), Some(hash)) => Some(stratus_platform::join::Join {
            endpoint: url.clone(),
            token: token.trim().to_string(),
            ca_cert_hash: hash.clone(),
        }),
        (Some(_), _, _) if !joined => {
            anyhow::bail!("--join needs --token BOOTSTRAP_TOKEN and --ca-cert-hash sha256:HEX")
        }
        _ => None,
    };
    let creds = stratus_platform::join::NodeCredentials::load_or_join(&pki_dir, &cfg.node_name, join.as_ref()).await?;
    // The node's certificate is also the agent's serving certificate (it names the node), so
    // the agent serves TLS (advertising an https:// endpoint) and answers only the API
    // server's certificate.
    cfg.tls = Some(stratus_agent::AgentTls { ca_pem: creds.ca_pem.clone(), identity: creds.identity.clone() });
    let platform = stratus_platform::Builder::connect(endpoint)
        .certificate_authority(creds.ca_pem.clone())
        .client_identity(creds.identity.clone())
        .agent(cfg, Arc::new(runtime), Some(listener))
        .start()
        .await?;
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let renewal = tokio::spawn(creds.keep_renewed(platform.client.clone(), stopped));
    platform.run_until(stratus_support::shutdown_signal()).await?;
    let _ = stop.send(true);
    let _ = renewal.await;
    Ok(())
}

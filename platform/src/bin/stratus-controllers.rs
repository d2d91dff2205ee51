//! `stratus-controllers`: flags, tracing, then the controllers with the autoscaler's gRPC
//! service and `/metrics` and `/healthz` through [`stratus_platform::Builder::connect`], until
//! SIGTERM or Ctrl-C.

/// mimalloc, not glibc's malloc: see `stratus-apiserver.rs`.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::time::Duration;

use anyhow::Context as _;
use clap::Parser;
use stratus_api::capacity::Overcommit;
use stratus_controllers::Config;

/// The Stratus controllers: services, revisions, scheduler, endpoints, nodes and garbage
/// collection, leader-elected so that several replicas can run.
#[derive(Parser, Debug)]
#[command(
    name = "stratus-controllers",
    version,
    about = "The Stratus controllers: services, revisions, scheduler, endpoints, nodes, garbage collector, autoscaler",
    long_about = None
)]
struct Args {
    #[command(flatten)]
    api: stratus_platform::connect::ApiFlags,
    /// The domain services are reached under: http://{service}.{namespace}.{domain}.
    #[arg(long, env = "STRATUS_DOMAIN", default_value = "localhost")]
    domain: String,
    /// The gateway's port, in service URLs (omitted when 80).
    #[arg(long, env = "STRATUS_GATEWAY_PORT", default_value_t = 8080)]
    gateway_port: u16,
    /// How many revisions of a service are kept besides those receiving traffic.
    #[arg(long, env = "STRATUS_REVISION_RETENTION", default_value_t = 5)]
    revision_retention: usize,
    /// How long a node may go without renewing its lease before it is NotReady, e.g. 15s, 1m.
    #[arg(long, env = "STRATUS_NODE_GRACE", default_value = "15s", value_parser = parse_duration)]
    node_grace: Duration,
    /// This replica's name in leader election [default: hostname-pid].
    #[arg(long, env = "STRATUS_IDENTITY")]
    identity: Option<String>,
    /// Registries reached over plain HTTP when resolving image digests (loopback ones always are).
    #[arg(long = "insecure-registry", env = "STRATUS_INSECURE_REGISTRIES", value_delimiter = ',')]
    insecure_registries: Vec<String>,
    /// A host besides a registry's own whose token service may be asked for pull tokens (a
    /// registry's challenge naming any other is refused); repeat for several. Docker Hub's
    /// auth.docker.io is always allowed for Docker Hub.
    #[arg(
        long = "registry-auth-host",
        env = "STRATUS_REGISTRY_AUTH_HOSTS",
        value_delimiter = ',',
        value_name = "HOST"
    )]
    registry_auth_hosts: Vec<String>,
    /// Where the autoscaler's gRPC service (stratus.v1.Autoscaler) listens for the gateways'
    /// demand reports and pokes.
    #[arg(long, env = "STRATUS_AUTOSCALER_LISTEN", default_value = "127.0.0.1:7073")]
    autoscaler_listen: String,
    /// Serve the autoscaler's service over TLS with this certificate (PEM chain; read again
    /// when it changes), answering only gateways' client certificates (system:gateway:NAME)
    /// from --autoscaler-client-ca-file. Needs --autoscaler-tls-key-file and
    /// --autoscaler-client-ca-file; without them it is plain HTTP/2, checking gateways' tokens.
    #[arg(long, value_name = "PATH", requires_all = ["autoscaler_tls_key_file", "autoscaler_client_ca_file"])]
    autoscaler_tls_cert_file: Option<std::path::PathBuf>,
    /// The key of --autoscaler-tls-cert-file (PEM).
    #[arg(long, value_name = "PATH", requires = "autoscaler_tls_cert_file")]
    autoscaler_tls_key_file: Option<std::path::PathBuf>,
    /// The cluster CA (PEM) gateways' client certificates must chain to.
    #[arg(long, value_name = "PATH", requires = "autoscaler_tls_cert_file")]
    autoscaler_client_ca_file: Option<std::path::PathBuf>,
    /// Where /metrics and /healthz are served.
    #[arg(long, env = "STRATUS_CONTROLLERS_METRICS_LISTEN", default_value = "127.0.0.1:7072")]
    metrics_listen: String,
    /// The autoscaler's stable window (per revision: annotation autoscaling.knative.dev/window).
    #[arg(long, env = "STRATUS_STABLE_WINDOW", default_value = "60s", value_parser = parse_duration)]
    stable_window: Duration,
    /// The panic window, as a percentage of the stable window.
    #[arg(long, env = "STRATUS_PANIC_WINDOW_PERCENTAGE", default_value_t = 10.0)]
    panic_window_percentage: f64,
    /// Panic when the panic window's demand reaches this percentage of the ready capacity.
    #[arg(long, env = "STRATUS_PANIC_THRESHOLD", default_value_t = 200.0)]
    panic_threshold: f64,
    /// How long a revision goes without requests before it is scaled to zero.
    #[arg(long, env = "STRATUS_SCALE_TO_ZERO_GRACE", default_value = "30s", value_parser = parse_duration)]
    scale_to_zero_grace: Duration,
    /// How often the autoscaler evaluates each revision.
    #[arg(long, env = "STRATUS_AUTOSCALE_TICK", default_value = "2s", value_parser = parse_duration)]
    autoscale_tick: Duration,
    /// CPU overcommit: a CPU request left out of a manifest is its limit divided by this
    /// (1 = Kubernetes' rule, requests equal limits). Serverless instances mostly wait for
    /// requests, so the default 20 places a 1-vCPU service by 50m.
    #[arg(long, env = "STRATUS_CPU_OVERCOMMIT", default_value_t = Overcommit::DEFAULT_CPU)]
    cpu_overcommit: f64,
    /// Memory overcommit, as --cpu-overcommit. Default 1 (none): memory cannot be taken back
    /// without killing.
    #[arg(long, env = "STRATUS_MEMORY_OVERCOMMIT", default_value_t = Overcommit::DEFAULT_MEMORY)]
    memory_overcommit: f64,
    /// How long a new revision may take to become ready before it is failed and its instances
    /// removed (per revision: annotation serving.knative.dev/progress-deadline).
    #[arg(long, env = "STRATUS_PROGRESS_DEADLINE", default_value = "600s", value_parser = parse_duration)]
    progress_deadline: Duration,
    /// Billing: how often usage reports are folded into the ledger, buckets closed, invoices
    /// rewritten and budgets checked.
    #[arg(long, env = "STRATUS_BILLING_INTERVAL", default_value = "10s", value_parser = parse_duration)]
    billing_interval: Duration,
    /// Billing: how late usage reports are normally expected after a ledger bucket (an hour)
    /// ends. The bucket closes at its end + this + --billing-grace; reports arriving later are
    /// billed as adjustments in the bucket open then, never dropped.
    #[arg(long, env = "STRATUS_BILLING_WATERMARK", default_value = "1m", value_parser = parse_duration)]
    billing_watermark: Duration,
    /// Billing: the grace after the watermark during which a late usage report still lands in
    /// its own ledger bucket.
    #[arg(long, env = "STRATUS_BILLING_GRACE", default_value = "5m", value_parser = parse_duration)]
    billing_grace: Duration,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    stratus_support::init_tracing();
    let traces = stratus_support::otel::init("stratus-controllers")?;
    stratus_support::raise_open_file_limit();
    let args = Args::parse();
    let identity = args.identity.unwrap_or_else(|| {
        let host = stratus_support::hostname().unwrap_or_else(|| "stratus-controllers".into());
        format!("{host}-{}", std::process::id())
    });
    let config = Config {
        domain: args.domain,
        gateway_port: args.gateway_port,
        revision_retention: args.revision_retention,
        node_grace: args.node_grace,
        identity,
        insecure_registries: args.insecure_registries,
        registry_auth_hosts: args.registry_auth_hosts,
        stable_window: args.stable_window,
        panic_window_percentage: args.panic_window_percentage,
        panic_threshold: args.panic_threshold,
        scale_to_zero_grace: args.scale_to_zero_grace,
        autoscale_tick: args.autoscale_tick,
        overcommit: Overcommit::new(args.cpu_overcommit, args.memory_overcommit)
            .map_err(|e| anyhow::anyhow!("--cpu-overcommit/--memory-overcommit: {e}"))?,
        progress_deadline: args.progress_deadline,
        billing_interval: args.billing_interval,
        billing_watermark: args.billing_watermark,
        billing_grace: args.billing_grace,
        ..Config::default()
    };
    let metrics = tokio::net::TcpListener::bind(&args.metrics_listen)
        .await
        .with_context(|| format!("cannot listen on {}", args.metrics_listen))?;
    let autoscaler = tokio::net::TcpListener::bind(&args.autoscaler_listen)
        .await
        .with_context(|| format!("cannot listen on {}", args.autoscaler_listen))?;
    let mut builder = args.api.builder()?;
    if let (Some(cert), Some(key), Some(ca)) =
        (args.autoscaler_tls_cert_file, args.autoscaler_tls_key_file, args.autoscaler_client_ca_file)
    {
        builder = builder.autoscaler_tls(stratus_platform::tls::ServingTls::Files {
            cert,
            key,
            ca,
            recheck: Duration::from_secs(30),
        });
    }
    let platform =
        builder.controllers(config).autoscaler_listener(autoscaler).controllers_metrics(metrics).start().await?;
    platform.run_until(stratus_support::shutdown_signal()).await?;
    if let Some(traces) = traces {
        traces.shutdown().await;
    }
    Ok(())
}

/// `15s`, `500ms`, `2m`, `1h`, or a number of seconds.
fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (number, unit) = s.split_at(split);
    let n: u64 = number.parse().map_err(|_| format!("{s:?} is not a duration such as 15s, 500ms or 2m"))?;
    let unit_of = |secs: u64| Duration::from_secs(n.saturating_mul(secs));
    match unit {
        "ms" => Ok(Duration::from_millis(n)),
        "" | "s" => Ok(unit_of(1)),
        "m" => Ok(unit_of(60)),
        "h" => Ok(unit_of(3600)),
        other => Err(format!("{s:?} has an unknown unit {other:?} (use ms, s, m or h)")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_like_kubernetes_flags() {
        assert_eq!(parse_duration("15s"), Ok(Duration::from_secs(15)));
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("30"), Ok(Duration::from_secs(30)));
        assert!(parse_duration("soon").is_err());
        assert!(parse_duration("5d").is_err());
    }

    #[test]
    fn the_flags_parse_with_their_defaults() {
        let args = Args::try_parse_from(["stratus-controllers", "--node-grace", "3s"]).expect("flags parse");
        assert_eq!(args.node_grace, Duration::from_secs(3));
        assert_eq!(args.metrics_listen, "127.0.0.1:7072");
        assert_eq!(args.autoscaler_listen, "127.0.0.1:7073");
        assert_eq!(args.gateway_port, 8080);
        let defaults = Config::default();
        assert_eq!(
            (args.billing_interval, args.billing_watermark, args.billing_grace),
            (defaults.billing_interval, defaults.billing_watermark, defaults.billing_grace)
        );
        let set = Args::try_parse_from([
            "stratus-controllers",
            "--billing-interval",
            "500ms",
            "--billing-watermark",
            "2s",
            "--billing-grace",
            "1m",
        ])
        .expect("flags parse");
        assert_eq!(
            (set.billing_interval, set.billing_watermark, set.billing_grace),
            (Duration::from_millis(500), Duration::from_secs(2), Duration::from_secs(60))
        );
    }
}

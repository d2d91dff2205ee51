//! `stratus-gateway`: flags, tracing, then the gateway and its admin server through
//! [`stratus_platform::Builder::connect`].

/// mimalloc, not glibc's malloc, as `stratus up` runs the gateway: under `wrk` the gateway spent
/// about a fifth less CPU per request with it (docs/benchmarks.md, issue 16).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::time::Duration;

use anyhow::Context;
use clap::Parser;
use stratus_gateway::{Cidr, GatewayConfig, Metering};
use tokio::net::TcpListener;

/// The Stratus gateway: routes HTTP requests by host to the instances of a service's revisions.
#[derive(Parser, Debug)]
#[command(
    name = "stratus-gateway",
    version,
    about = "The Stratus gateway: the HTTP data plane that routes requests by host to the ready instances of a service's revisions",
    long_about = None
)]
struct Args {
    #[command(flatten)]
    api: stratus_platform::connect::ApiFlags,
    /// Where requests are served.
    #[arg(long, env = "STRATUS_GATEWAY_LISTEN", default_value = "127.0.0.1:8080")]
    listen: String,
    /// Where /metrics, /healthz and /readyz are served.
    #[arg(long, env = "STRATUS_GATEWAY_ADMIN_LISTEN", default_value = "127.0.0.1:8081")]
    admin_listen: String,
    /// Services answer at {service}.{namespace}.{domain}.
    #[arg(long, env = "STRATUS_DOMAIN", default_value = "localhost")]
    domain: String,
    /// The least number of requests that may wait per revision for an instance. A revision's
    /// queue holds 10 × containerConcurrency × maxInstances requests, at least this many and at
    /// most --queue-cap; a request that finds it full gets 429 with Retry-After: 1.
    #[arg(long, visible_alias = "max-queue", default_value_t = 100)]
    queue_floor: usize,
    /// The most requests that may wait per revision, whatever its capacity: bounds the memory
    /// of one revision's queue, and is the bound when containerConcurrency is 0 (unlimited).
    #[arg(long, default_value_t = 10_000)]
    queue_cap: usize,
    /// The longest a request waits for an instance, in seconds (default: the revision's timeout).
    #[arg(long)]
    queue_timeout_seconds: Option<u64>,
    /// The autoscaler's gRPC endpoint (e.g. http://127.0.0.1:7073), or the endpoints of every
    /// controller replica separated by commas: demand is reported to each every second (so a
    /// standby that takes over has it at once), and each is poked when a request waits for a
    /// revision with no instance.
    #[arg(long, env = "STRATUS_AUTOSCALER", value_parser = parse_endpoints)]
    autoscaler: Option<String>,
    /// With an https:// --autoscaler: the cluster CA (PEM) that verifies it. Needs
    /// --autoscaler-client-cert and --autoscaler-client-key.
    #[arg(long, value_name = "PATH", requires_all = ["autoscaler_client_cert", "autoscaler_client_key"])]
    autoscaler_ca_file: Option<std::path::PathBuf>,
    /// The gateway's client certificate (PEM) for the autoscaler: common name
    /// system:gateway:NAME (NAME being --name), from the cluster CA.
    #[arg(long, value_name = "PATH", requires = "autoscaler_ca_file")]
    autoscaler_client_cert: Option<std::path::PathBuf>,
    /// The key of --autoscaler-client-cert (PEM).
    #[arg(long, value_name = "PATH", requires = "autoscaler_ca_file")]
    autoscaler_client_key: Option<std::path::PathBuf>,
    /// This gateway's name in demand reports; must be unique among gateways (default: hostname-pid).
    #[arg(long, env = "STRATUS_GATEWAY_NAME")]
    name: Option<String>,
    /// A network (CIDR, e.g. 10.0.0.0/8, or one address) of proxies in front of the gateway
    /// whose Forwarded, X-Forwarded-For/-Proto/-Host and X-Real-IP headers are believed;
    /// repeat for several. Other clients' forwarding headers are replaced. Default: none.
    #[arg(long = "trusted-proxy", value_name = "CIDR")]
    trusted_proxies: Vec<Cidr>,
    /// Serve HTTPS on this address too (HTTP/2 and HTTP/1.1 by ALPN), with the certificates of
    /// --tls-certificate.
    #[arg(long, value_name = "ADDR", requires = "tls_certificates")]
    https_listen: Option<String>,
    /// A certificate for HTTPS: `NAME=CERT_FILE,KEY_FILE` served to clients asking for NAME
    /// (`*.example.com` for every subdomain, chosen by SNI), or `CERT_FILE,KEY_FILE` for the
    /// rest. Repeat for several.
    #[arg(long = "tls-certificate", value_name = "[NAME=]CERT,KEY")]
    tls_certificates: Vec<stratus_platform::tls::SuppliedCertificate>,
    /// Answer plain HTTP with a redirect to HTTPS on this port (308), instead of proxying it.
    #[arg(long, value_name = "PORT")]
    https_redirect: Option<u16>,
    /// Meter each instance for billing (the time it had a request in flight, and the requests
    /// sent to it) and send the usage to the API as UsageReports. `--metering=false` turns it off.
    #[arg(long, env = "STRATUS_METERING", default_value_t = true, action = clap::ArgAction::Set, value_name = "BOOL")]
    metering: bool,
    /// Where usage reports wait (one 0600 file each) until the API has them; reports left by a
    /// gateway that stopped are sent when it starts again. Made if missing.
    #[arg(long, env = "STRATUS_USAGE_DIR", default_value = "data/usage/gateway")]
    usage_dir: std::path::PathBuf,
    /// The length of a usage report's window, in seconds; windows are aligned to whole
    /// multiples of it on the clock.
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..=3600))]
    usage_window_seconds: u64,
    /// Threads that serve the proxy's connections, each with its own share of the connections
    /// and its own upstream connections (default: one per CPU; 0 serves them on the shared
    /// runtime).
    #[arg(long, env = "STRATUS_GATEWAY_THREADS", value_parser = clap::value_parser!(u16).range(0..=1024))]
    threads: Option<u16>,
}

/// Accepts an endpoint only if it is an absolute `http://` URI (the channel speaks h2c; TLS is
/// not built in).
fn parse_endpoints(value: &str) -> Result<String, String> {
    for endpoint in value.split(',').map(str::trim) {
        let expected = || format!("{endpoint:?}: expected http://host:port or https://host:port");
        let uri: http::Uri = endpoint.parse().map_err(|_| expected())?;
        if !matches!((uri.scheme_str(), uri.authority()), (Some("http" | "https"), Some(_))) {
            return Err(expected());
        }
    }
    Ok(value.to_string())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    stratus_support::init_tracing();
    let traces = stratus_support::otel::init("stratus-gateway")?;
    stratus_support::raise_open_file_limit();
    let args = Args::parse();
    let listener =
        TcpListener::bind(&args.listen).await.with_context(|| format!("cannot listen on {}", args.listen))?;
    let admin = TcpListener::bind(&args.admin_listen)
        .await
        .with_context(|| format!("cannot listen on {}", args.admin_listen))?;
    let autoscaler_tls = match (&args.autoscaler_ca_file, &args.autoscaler_client_cert, &args.autoscaler_client_key) {
        (Some(ca), Some(cert), Some(key)) => {
            let read = |p: &std::path::PathBuf| std::fs::read(p).with_context(|| format!("reading {}", p.display()));
            let ca_pem = String::from_utf8(read(ca)?).with_context(|| format!("{}: not PEM text", ca.display()))?;
            let identity = stratus_client::tls::ClientIdentity::new(&read(cert)?, &read(key)?)
                .with_context(|| format!("--autoscaler-client-cert {}", cert.display()))?;
            Some(stratus_gateway::AutoscalerTls { ca_pem, identity })
        }
        _ => None,
    };
    let metering = match args.metering {
        true => {
            let spool = stratus_client::usage::Spool::open(
                &args.usage_dir,
                stratus_client::usage::Spool::DEFAULT_MAX_FILES,
                stratus_client::usage::SpoolMetrics::default(),
            )
            .with_context(|| format!("cannot open the usage spool (--usage-dir {})", args.usage_dir.display()))?;
            Some(Metering { spool, window: Duration::from_secs(args.usage_window_seconds) })
        }
        false => None,
    };
    let config = GatewayConfig {
        autoscaler_tls,
        domain: args.domain,
        queue_floor: args.queue_floor,
        queue_cap: args.queue_cap,
        queue_timeout: args.queue_timeout_seconds.map(Duration::from_secs),
        autoscaler: args.autoscaler,
        trusted_proxies: args.trusted_proxies,
        https_redirect: args.https_redirect,
        metering,
        ..GatewayConfig::default()
    };
    let config = match args.threads {
        Some(threads) => GatewayConfig { proxy_threads: threads.into(), ..config },
        None => config,
    };
    let config = match args.name {
        Some(name) => GatewayConfig { name, ..config },
        None => config,
    };
    tracing::info!(
        listen = %listener.local_addr()?,
        admin = %admin.local_addr()?,
        domain = config.domain,
        autoscaler = config.autoscaler.as_deref().unwrap_or("none"),
        name = config.name,
        trusted_proxies = ?config.trusted_proxies.iter().map(ToString::to_string).collect::<Vec<_>>(),
        "gateway starting"
    );
    let mut builder = args.api.builder()?.gateway(listener, config).gateway_admin(admin);
    if let Some(addr) = &args.https_listen {
        let https = TcpListener::bind(addr).await.with_context(|| format!("cannot listen on {addr}"))?;
        let tls =
            stratus_platform::tls::GatewayTls { certificates: args.tls_certificates, issue_with_cluster_ca: false };
        builder = builder.gateway_tls(https, tls);
    }
    let platform = builder.start().await?;
    platform
        .run_until(async {
            stratus_support::shutdown_signal().await;
            tracing::info!("shutting down");
        })
        .await?;
    if let Some(traces) = traces {
        traces.shutdown().await;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use clap::CommandFactory;

    use super::*;

    #[test]
    fn the_queue_flags_parse_and_the_old_name_still_works() {
        Args::command().debug_assert();
        let defaults = Args::try_parse_from(["stratus-gateway"]).unwrap();
        assert_eq!((defaults.queue_floor, defaults.queue_cap), (100, 10_000));
        let set = Args::try_parse_from(["stratus-gateway", "--queue-floor", "50", "--queue-cap", "500"]).unwrap();
        assert_eq!((set.queue_floor, set.queue_cap), (50, 500));
        let old = Args::try_parse_from(["stratus-gateway", "--max-queue", "7"]).unwrap();
        assert_eq!(old.queue_floor, 7);
        let help = Args::command().render_long_help().to_string();
        assert!(help.contains("--max-queue") && help.contains("--queue-cap"), "{help}");
    }

    #[test]
    fn the_autoscaler_may_be_several_over_http_or_https() {
        let several = "http://a:7073, https://b:7073";
        let args = Args::try_parse_from(["stratus-gateway", "--autoscaler", several]).unwrap();
        assert_eq!(args.autoscaler.as_deref(), Some(several));
        for bad in ["a:7073", "http://a:7073,", "ftp://a:7073", "http://a:7073,b"] {
            let error = Args::try_parse_from(["stratus-gateway", "--autoscaler", bad]).unwrap_err().to_string();
            assert!(error.contains("expected http://host:port or https://host:port"), "{bad}: {error}");
        }
    }

    #[test]
    fn trusted_proxies_are_none_by_default_repeatable_and_checked() {
        let defaults = Args::try_parse_from(["stratus-gateway"]).unwrap();
        assert!(defaults.trusted_proxies.is_empty());
        let set = Args::try_parse_from(["stratus-gateway", "--trusted-proxy", "10.0.0.0/8", "--trusted-proxy", "::1"])
            .unwrap();
        let nets: Vec<String> = set.trusted_proxies.iter().map(ToString::to_string).collect();
        assert_eq!(nets, ["10.0.0.0/8", "::1/128"]);
        let err = Args::try_parse_from(["stratus-gateway", "--trusted-proxy", "10.0.0.1/8"]).unwrap_err().to_string();
        assert!(err.contains("bits set past its prefix length"), "{err}");
    }
}

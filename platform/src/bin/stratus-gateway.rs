//! `stratus-gateway`: flags, tracing, then the gateway and its admin server through
//! [`stratus_platform::Builder::connect`].

use std::time::Duration;

use anyhow::Context;
use clap::Parser;
use stratus_gateway::GatewayConfig;
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
    /// The autoscaler's gRPC endpoint (e.g. http://127.0.0.1:7073): demand is reported to it
    /// every second, and it is poked when a request waits for a revision with no instance.
    #[arg(long, env = "STRATUS_AUTOSCALER", value_parser = parse_endpoint)]
    autoscaler: Option<String>,
    /// This gateway's name in demand reports; must be unique among gateways (default: hostname-pid).
    #[arg(long, env = "STRATUS_GATEWAY_NAME")]
    name: Option<String>,
}

/// Accepts an endpoint only if it is an absolute `http://` URI (the channel speaks h2c; TLS is
/// not built in).
fn parse_endpoint(value: &str) -> Result<String, String> {
    let uri: http::Uri = value.parse().map_err(|e| format!("not a URI: {e}"))?;
    match (uri.scheme_str(), uri.authority()) {
        (Some("http"), Some(_)) => Ok(value.to_string()),
        _ => Err("expected http://host:port".to_string()),
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    stratus_support::init_tracing();
    let args = Args::parse();
    let listener =
        TcpListener::bind(&args.listen).await.with_context(|| format!("cannot listen on {}", args.listen))?;
    let admin = TcpListener::bind(&args.admin_listen)
        .await
        .with_context(|| format!("cannot listen on {}", args.admin_listen))?;
    let config = GatewayConfig {
        domain: args.domain,
        queue_floor: args.queue_floor,
        queue_cap: args.queue_cap,
        queue_timeout: args.queue_timeout_seconds.map(Duration::from_secs),
        autoscaler: args.autoscaler,
        ..GatewayConfig::default()
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
        "gateway starting"
    );
    let platform = args.api.builder()?.gateway(listener, config).gateway_admin(admin).start().await?;
    platform
        .run_until(async {
            stratus_support::shutdown_signal().await;
            tracing::info!("shutting down");
        })
        .await?;
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
}

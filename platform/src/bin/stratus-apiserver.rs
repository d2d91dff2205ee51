//! `stratus-apiserver`: flags, tracing, then the API server alone through
//! [`stratus_platform::Builder::serve_api`].

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use clap::{Parser, ValueEnum};
use stratus_apiserver::StoreOptions;
use stratus_platform::Builder;

#[derive(Clone, Copy, Debug, ValueEnum)]
enum StoreKind {
    Embedded,
    Etcd,
}

/// The Stratus API server: resources over gRPC and HTTP/JSON on one port.
#[derive(Parser, Debug)]
#[command(
    name = "stratus-apiserver",
    version,
    about = "The Stratus API server: resources over gRPC and HTTP/JSON on one port, stored in etcd or the embedded store",
    long_about = None
)]
struct Args {
    /// Address to serve gRPC and HTTP on.
    #[arg(long, env = "STRATUS_LISTEN", default_value = stratus_apiserver::DEFAULT_LISTEN)]
    listen: String,
    /// Where resources are stored.
    #[arg(long, env = "STRATUS_STORE", value_enum, default_value = "embedded")]
    store: StoreKind,
    /// Directory of the embedded store.
    #[arg(long, env = "STRATUS_DATA_DIR", default_value = ".stratus/data")]
    data_dir: PathBuf,
    /// etcd client URLs, comma-separated (with --store etcd).
    #[arg(long, env = "STRATUS_ETCD_ENDPOINTS", value_delimiter = ',', default_value = "http://127.0.0.1:2379")]
    etcd_endpoints: Vec<String>,
    /// On first start, create the cluster admin `admin` (tenant `default`) with a random
    /// password written to this file (mode 0600; it must not exist yet). Without it, a new
    /// cluster has no user and refuses every request.
    #[arg(long, env = "STRATUS_BOOTSTRAP_ADMIN", value_name = "PASSWORD_FILE")]
    bootstrap_admin: Option<PathBuf>,
    /// The issuer (`iss`) of the tokens this server signs: the URL clients reach the API at.
    #[arg(long, env = "STRATUS_ISSUER", default_value = "https://stratus.local")]
    issuer: String,
    /// How long a token from `stratus login` lasts, e.g. 12h.
    #[arg(long, default_value = "12h", value_parser = duration)]
    login_token_ttl: Duration,
    /// The longest any token may last; a retired signing key verifies this long after its
    /// retirement.
    #[arg(long, default_value = "720h", value_parser = duration)]
    max_token_ttl: Duration,
    /// How often a new signing key is made.
    #[arg(long, default_value = "24h", value_parser = duration)]
    signing_key_rotation: Duration,
    /// Write the audit log (a JSON line per write and per refused request) to this file.
    #[arg(long, env = "STRATUS_AUDIT_LOG", value_name = "PATH")]
    audit_log: Option<PathBuf>,
    /// Rotate the audit log past this many megabytes (five old files are kept).
    #[arg(long, default_value_t = 100)]
    audit_log_max_mb: u64,
    /// A host name the API is reached by, besides IP addresses and localhost (repeat; `*.example.com`
    /// for every subdomain). Requests naming another Host are refused (DNS rebinding).
    #[arg(long = "allowed-host", value_name = "HOST")]
    allowed_hosts: Vec<String>,
    /// The largest minInstances a revision may ask for.
    #[arg(long, default_value_t = 100)]
    max_min_instances: i32,
    /// The largest maxInstances a revision may ask for.
    #[arg(long, default_value_t = 1000)]
    max_max_instances: i32,
    /// The largest initialScale a revision may ask for.
    #[arg(long, default_value_t = 100)]
    max_initial_scale: i32,
    /// An origin whose web pages may call the API, e.g. https://console.example.com (repeat).
    #[arg(long = "allowed-origin", value_name = "ORIGIN")]
    allowed_origins: Vec<String>,
}

fn duration(s: &str) -> Result<Duration, String> {
    let d = stratus_api::duration::parse(s).map_err(|e| e.to_string())?;
    if d.is_zero() { Err("must be longer than zero".into()) } else { Ok(d) }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    stratus_support::init_tracing();
    let args = Args::parse();
    let store = match args.store {
        StoreKind::Embedded => StoreOptions::Embedded { data_dir: args.data_dir },
        StoreKind::Etcd => StoreOptions::Etcd { endpoints: args.etcd_endpoints },
    };
    let listener = tokio::net::TcpListener::bind(&args.listen)
        .await
        .with_context(|| format!("cannot listen on {}", args.listen))?;
    let tokens = stratus_apiserver::auth::tokens::TokenConfig {
        issuer: args.issuer,
        login_ttl: args.login_token_ttl,
        max_ttl: args.max_token_ttl,
        rotation: args.signing_key_rotation,
        ..Default::default()
    };
    let audit = args.audit_log.map(|path| stratus_apiserver::audit::AuditConfig {
        max_bytes: args.audit_log_max_mb.saturating_mul(1024 * 1024),
        ..stratus_apiserver::audit::AuditConfig::new(path)
    });
    let guard = stratus_apiserver::guard::GuardConfig { hosts: args.allowed_hosts, origins: args.allowed_origins };
    let bounds = stratus_apiserver::registry::ScalingBounds {
        max_min_instances: args.max_min_instances,
        max_max_instances: args.max_max_instances,
        max_initial_scale: args.max_initial_scale,
    };
    let config = stratus_apiserver::Config { tokens, guard, audit, bounds };
    let mut builder = Builder::serve_api(store, listener).api_config(config);
    if let Some(file) = &args.bootstrap_admin {
        builder = builder.bootstrap_admin(file);
    }
    let platform = builder.start().await?;
    if let (Some(file), Some(_)) = (&args.bootstrap_admin, &platform.admin_password) {
        tracing::info!(file = %file.display(), "created the cluster admin \"admin\"; its password is in the file");
    }
    platform.run_until(stratus_support::shutdown_signal()).await?;
    Ok(())
}

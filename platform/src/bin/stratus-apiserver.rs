//! `stratus-apiserver`: flags, tracing, then the API server alone through
//! [`stratus_platform::Builder::serve_api`].

use std::path::PathBuf;

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
    let platform = Builder::serve_api(store, listener).start().await?;
    platform.run_until(stratus_support::shutdown_signal()).await?;
    Ok(())
}

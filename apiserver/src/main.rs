//! `stratus-apiserver`: flags, tracing, then [`stratus_apiserver::ApiServer::serve`].

use std::path::PathBuf;

use anyhow::Context;
use clap::{Parser, ValueEnum};
use stratus_apiserver::{ApiServer, StoreOptions};

#[derive(Clone, Copy, Debug, ValueEnum)]
enum StoreKind {
    Embedded,
    Etcd,
}

/// The Stratus API server: resources over gRPC and HTTP/JSON on one port.
#[derive(Parser, Debug)]
#[command(version, about, long_about = None)]
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
    let opts = match args.store {
        StoreKind::Embedded => StoreOptions::Embedded { data_dir: args.data_dir },
        StoreKind::Etcd => StoreOptions::Etcd { endpoints: args.etcd_endpoints },
    };
    let store = stratus_apiserver::open_store(&opts).await?;
    let server = ApiServer::new(store).await?;
    let listener = tokio::net::TcpListener::bind(&args.listen)
        .await
        .with_context(|| format!("cannot listen on {}", args.listen))?;
    server.serve(listener, stratus_support::shutdown_signal()).await?;
    Ok(())
}

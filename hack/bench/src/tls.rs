//! `stratus-bench tls`: API write throughput over TLS against plaintext, side by side in one
//! run: two API servers on one embedded store, one serving HTTPS with a certificate of a
//! cluster CA (as every binary does), one plain HTTP (as in-process tests do), the same typed
//! gRPC client writing to each.
//!
//! `cargo run -p stratus-bench --release -- tls --seconds 3 --out docs/benchmarks-tls.json`

use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use clap::Args as ClapArgs;
use serde_json::json;
use stratus_api::v1::Service;
use stratus_auth::pki::Ca;
use stratus_client::{Client, ListParams};

#[derive(ClapArgs)]
pub struct Args {
    /// Seconds each throughput measurement runs.
    #[arg(long, default_value_t = 3.0)]
    seconds: f64,
    /// Concurrent clients to measure with.
    #[arg(long, value_delimiter = ',', default_value = "1,16,64")]
    clients: Vec<usize>,
    /// Where to write the results as JSON.
    #[arg(long, default_value = "docs/benchmarks-tls.json")]
    out: String,
}

pub async fn run(args: Args) -> Result<()> {
    let window = Duration::from_secs_f64(args.seconds);
    let dir = tempfile::tempdir()?;
    let store: Arc<dyn stratus_store::Store> =
        stratus_store::embedded::EmbeddedStore::open(dir.path().join("data")).await?;
    let ca = Ca::generate()?;
    let certificates = crate::loopback_certificates(&ca)?;
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let mut clients = Vec::new();
    for (name, tls) in [("plaintext", None), ("tls", Some(certificates.server_config()?))] {
        let config = stratus_apiserver::Config { tls: tls.clone(), ..Default::default() };
        let server = stratus_apiserver::ApiServer::with_config(Arc::clone(&store), config).await?;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let scheme = if tls.is_some() { "https" } else { "http" };
        let endpoint = format!("{scheme}://{}", listener.local_addr()?);
        let role = stratus_api::identity::roles::CLUSTER_ADMIN;
        let token = server.identity().component_token(&format!("bench-{name}"), role, "").await?;
        let client = Client::with_ca(&endpoint, Some(ca.cert_pem().as_bytes()))?
            .with_credentials(stratus_client::Credentials::Source(token));
        let mut rx = stopped.clone();
        tokio::spawn(server.serve(listener, async move {
            let _ = rx.wait_for(|s| *s).await;
        }));
        // Warm the connection up (and the TLS session) before measuring.
        client.list::<Service>(&ListParams::default()).await.with_context(|| format!("the {name} server answers"))?;
        clients.push((name, client));
    }

    let mut rows = Vec::new();
    for &n in &args.clients {
        let mut row = json!({"op": "create", "clients": n});
        for (name, client) in &clients {
            let per_sec = crate::store::creates(client, n, window, &format!("tls-{name}-{n}")).await?;
            row[*name] = json!(per_sec);
        }
        rows.push(row);
    }
    let _ = stop.send(true);
    println!("\nAPI creates/s through the typed gRPC client, {}s each, embedded store\n", args.seconds);
    println!("| clients | plaintext | TLS | TLS / plaintext |");
    println!("|---:|---:|---:|---:|");
    for r in &rows {
        let (plain, tls) = (r["plaintext"].as_f64().unwrap_or(0.0), r["tls"].as_f64().unwrap_or(0.0));
        println!("| {} | {plain:.0} | {tls:.0} | {:.2} |", r["clients"], tls / plain.max(1.0));
    }
    let doc = json!({"seconds": args.seconds, "rows": rows});
    std::fs::write(&args.out, serde_json::to_string_pretty(&doc)?).with_context(|| format!("writing {}", args.out))?;
    Ok(())
}

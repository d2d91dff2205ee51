//! `stratus-bench`: measurements of Stratus's parts against the references the issues name,
//! side by side in one run each. Not tests: they print tables and write JSON.
//!
//! ```text
//! cargo run -p stratus-bench --release -- store       # API server writes/s and watch latency, embedded vs etcd
//! cargo run -p stratus-bench --release -- scheduler   # placements/s, 10,000 instances over 1,000 nodes
//! cargo run -p stratus-bench --release -- gateway     # wrk: direct vs nginx vs the Stratus gateway
//! cargo run -p stratus-bench --release -- coldstart   # docker run vs a request to a service at zero
//! cargo run -p stratus-bench --release -- autoscale   # step load with `stratus bench`, and its chart
//! cargo run -p stratus-bench --release -- tls         # API writes/s over TLS vs plaintext
//! ```

use anyhow::Result;
use clap::{Parser, Subcommand};

/// mimalloc, the allocator of the binaries that run the gateway (`stratus up`,
/// `stratus-gateway`): the gateway measured here in this process allocates as it does there.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

mod gateway;
mod memory;
mod procs;
mod scale;
mod scheduler;
mod serving;
mod store;
mod tls;

#[derive(Parser)]
#[command(about = "Benchmarks of Stratus, each against its reference in one run")]
struct Cli {
    #[command(subcommand)]
    bench: Bench,
}

#[derive(Subcommand)]
enum Bench {
    Store(store::Args),
    Scheduler(scheduler::Args),
    /// The control plane with hollow nodes: placements/s, API latency, memory
    Scale(scale::Args),
    /// Resident memory of stratus up and of an agent, idle and with services
    Memory(memory::Args),
    Gateway(gateway::Args),
    Coldstart(serving::ColdArgs),
    Autoscale(serving::StepArgs),
    Tls(tls::Args),
}

#[tokio::main]
async fn main() -> Result<()> {
    match Cli::parse().bench {
        Bench::Store(args) => store::run(args).await,
        Bench::Scheduler(args) => scheduler::run(args).await,
        Bench::Scale(args) => scale::run(args).await,
        Bench::Memory(args) => memory::run(args).await,
        Bench::Gateway(args) => gateway::run(args).await,
        Bench::Coldstart(args) => serving::coldstart(args).await,
        Bench::Autoscale(args) => serving::autoscale(args).await,
        Bench::Tls(args) => tls::run(args).await,
    }
}

/// A client of `server` at `endpoint` as a cluster admin (the service account
/// `stratus-system/bench-admin`): every request is authenticated and authorised as a user's is.
async fn admin_client(server: &stratus_apiserver::ApiServer, endpoint: &str) -> Result<stratus_client::Client> {
    let role = stratus_api::identity::roles::CLUSTER_ADMIN;
    let token = server.identity().component_token("bench-admin", role, "").await?;
    Ok(stratus_client::Client::new(endpoint)?.with_credentials(stratus_client::Credentials::Source(token)))
}

/// Serving certificates for `127.0.0.1` issued by `ca`, as the default certificate.
fn loopback_certificates(ca: &stratus_auth::pki::Ca) -> Result<std::sync::Arc<stratus_support::tls::Certificates>> {
    let issued =
        ca.issue(stratus_auth::pki::Usage::Server, &["127.0.0.1".into()], std::time::Duration::from_secs(3600))?;
    let certificates = stratus_support::tls::Certificates::new();
    certificates.set_default(stratus_support::tls::certified_key(
        issued.cert_pem.as_bytes(),
        issued.key_pem.as_bytes(),
        "bench",
    )?);
    Ok(certificates)
}

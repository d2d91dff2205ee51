//! `stratus-bench memory`: resident memory of `stratus up` (the API server, the controllers and
//! the gateway in one process, with the embedded store) and of a node agent, idle and with
//! `--services` services, in one run.
//!
//! `stratus up --no-agent` and a `stratus-agent` joined to it with a bootstrap token (as a
//! second machine would) run as processes of their own. The services use the example image
//! with `initial-scale: 0`, so that what is measured is the platform holding them (objects,
//! routes, caches, watches), not containers starting.

use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, ensure};
use clap::Args as ClapArgs;
use serde_json::json;
use stratus_api::Resource;
use stratus_api::v1::{Node, Revision};
use stratus_client::{Client, ListParams};

use crate::procs::{Proc, Rss, admin_client, path, sibling, spawn};

#[derive(ClapArgs)]
pub struct Args {
    #[arg(long, default_value_t = 100)]
    services: usize,
    /// How long each state is left to settle before it is measured.
    #[arg(long, default_value = "15", value_name = "SECONDS")]
    settle: u64,
    /// Where to write the result as JSON.
    #[arg(long, default_value = "docs/benchmarks-memory.json")]
    out: String,
}

pub async fn run(args: Args) -> Result<()> {
    let dir = tempfile::tempdir()?;
    let port = || format!("127.0.0.1:{}", stratus_testkit::free_port());
    let api = port();
    let endpoint = format!("https://{api}");
    let data = dir.path().join("up");
    let node = format!("bench-memory-{}", std::process::id());
    let _cleanup = RemoveContainers(node.clone());
    // Its own CLI configuration: `stratus up` logs in and would change the user's.
    let config = dir.path().join("config");
    let up_args = [
        "up",
        "--no-agent",
        "--listen",
        &api,
        "--gateway-listen",
        &port(),
        "--gateway-https-listen",
        &port(),
        "--gateway-admin-listen",
        &port(),
        "--controllers-metrics-listen",
        &port(),
        "--data-dir",
        &path(&data),
    ];
    let up = {
        let log = std::fs::File::create(dir.path().join("up.log"))?;
        let child = Command::new(sibling("stratus")?)
            .args(up_args)
            .env("STRATUS_CONFIG", &config)
            .stdout(std::process::Stdio::null())
            .stderr(log)
            .spawn()
            .context("starting stratus up")?;
        Proc(child)
    };
    let ca_file = data.join("pki").join("ca.crt");
    let (admin, token) = admin_client(&endpoint, &ca_file, &data.join("admin-password")).await?;

    // A node agent joins as a second machine's would.
    let cli = |cli_args: &[&str]| -> Result<String> {
        let out = Command::new(sibling("stratus")?)
            .args(["--server", &endpoint, "--certificate-authority", &path(&ca_file)])
            .args(cli_args)
            .env("STRATUS_CONFIG", &config)
            .env("STRATUS_TOKEN", &token)
            .output()?;
        ensure!(out.status.success(), "stratus {cli_args:?}: {}", String::from_utf8_lossy(&out.stderr));
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
    };
    let join = cli(&["create", "token", "--bootstrap", "--ttl", "1h", "--print-join-command"])?;
    let word_after = |flag: &str| join.split_whitespace().skip_while(|w| *w != flag).nth(1).map(str::to_string);
    let bootstrap = word_after("--token").context("no --token in the join command")?;
    let pin = word_after("--ca-cert-hash").context("no --ca-cert-hash in the join command")?;
    let agent = spawn(
        "stratus-agent",
        &[
            "--join",
            &endpoint,
            "--apiserver",
            &endpoint,
            "--token",
            &bootstrap,
            "--ca-cert-hash",
            &pin,
            "--node-name",
            &node,
            "--data-dir",
            &path(&dir.path().join("agent")),
            "--listen",
            "127.0.0.1:0",
        ],
        &dir.path().join("agent.log"),
    )?;
    wait_for("the node to be Ready", || async { node_ready(&admin, &node).await }).await?;

    tokio::time::sleep(Duration::from_secs(args.settle)).await;
    let idle = (Rss::of(&up), Rss::of(&agent));

    eprintln!("applying {} services…", args.services);
    let manifest: String = (0..args.services).map(service).collect();
    let manifest_file = dir.path().join("services.yaml");
    std::fs::write(&manifest_file, manifest)?;
    cli(&["apply", "-f", &path(&manifest_file)])?;
    let wanted = args.services;
    wait_for("every service's revision", || async {
        let revisions = admin.list_all::<Revision>(&ListParams::default()).await?.items;
        Ok(revisions.iter().filter(|r| r.meta().name.starts_with("mem-")).count() >= wanted)
    })
    .await?;
    tokio::time::sleep(Duration::from_secs(args.settle)).await;
    let loaded = (Rss::of(&up), Rss::of(&agent));

    println!("\nResident memory, {} s after each state settles\n", args.settle);
    println!("| process | idle MB | with {} services MB | peak MB |", args.services);
    println!("|---|---:|---:|---:|");
    println!(
        "| stratus up (API server, controllers, gateway, embedded store) | {:.1} | {:.1} | {:.1} |",
        idle.0.mb(),
        loaded.0.mb(),
        loaded.0.peak_mb()
    );
    println!("| stratus-agent | {:.1} | {:.1} | {:.1} |", idle.1.mb(), loaded.1.mb(), loaded.1.peak_mb());
    let doc = json!({
        "services": args.services,
        "stratus_up_mb": {"idle": idle.0.mb(), "services": loaded.0.mb(), "peak": loaded.0.peak_mb()},
        "agent_mb": {"idle": idle.1.mb(), "services": loaded.1.mb(), "peak": loaded.1.peak_mb()},
    });
    std::fs::write(&args.out, serde_json::to_string_pretty(&doc)?).with_context(|| format!("writing {}", args.out))?;
    drop(agent);
    drop(up);
    Ok(())
}

/// One service of the example image that starts no instance until a request comes.
fn service(i: usize) -> String {
    format!(
        "---\napiVersion: stratus.dev/v1\nkind: Service\nmetadata: {{name: mem-{i:03}}}\nspec:\n  template:\n    \
         metadata:\n      annotations: {{autoscaling.knative.dev/initial-scale: \"0\"}}\n    spec:\n      \
         containers: [{{image: \"127.0.0.1:5000/hello:v1\", resources: {{limits: {{cpu: 100m, memory: 64Mi}}}}}}]\n"
    )
}

async fn node_ready(client: &Client, name: &str) -> Result<bool> {
    Ok(match client.get::<Node>("", name).await {
        Ok(node) => node.status.is_some_and(|s| s.conditions.iter().any(|c| c.r#type == "Ready" && c.status == "True")),
        Err(stratus_client::Error::NotFound(_)) => false,
        Err(e) => return Err(e.into()),
    })
}

async fn wait_for(what: &str, mut f: impl AsyncFnMut() -> Result<bool>) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(300);
    while !f().await? {
        ensure!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    Ok(())
}

/// Removes the agent's containers when dropped.
struct RemoveContainers(String);

impl Drop for RemoveContainers {
    fn drop(&mut self) {
        let filter = format!("label={}={}", stratus_api::wellknown::labels::NODE, self.0);
        if let Ok(out) = Command::new("docker").args(["ps", "-aq", "--filter", &filter]).output() {
            for id in String::from_utf8_lossy(&out.stdout).split_whitespace() {
                let _ = Command::new("docker").args(["rm", "-f", id]).output();
            }
        }
    }
}

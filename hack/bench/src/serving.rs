//! `stratus-bench coldstart` and `stratus-bench autoscale`: the whole platform in this process
//! (API server, controllers with short autoscaling windows, gateway, a node agent on the real
//! Docker engine) serving the example image (`hack/images.sh`).
//!
//! - coldstart: time from `docker run` to the first 200, against time from the first request
//!   to its response through Stratus at zero, with and without the startup CPU boost, all with
//!   the same limits (cpu 100m, memory 64Mi), `--runs` of each; medians, p90 and the ratios.
//! - autoscale: the step-load run of the e2e tests (containerConcurrency 10, `?sleep_ms=100`,
//!   1 → 100 in flight) driven by `stratus bench`, reporting how long after the step enough
//!   instances were Ready, with `stratus bench`'s timeline and chart.

use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail, ensure};
use clap::Args as ClapArgs;
use serde_json::json;
use stratus_api::v1::Revision;
use stratus_client::Client;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const IMAGE: &str = "127.0.0.1:5000/hello:v1";

#[derive(ClapArgs)]
pub struct ColdArgs {
    #[arg(long, default_value_t = 20)]
    runs: usize,
    #[arg(long, default_value = "docs/benchmarks-coldstart.json")]
    out: String,
}

#[derive(ClapArgs)]
pub struct StepArgs {
    /// Seconds of 100 in-flight requests.
    #[arg(long, default_value_t = 30)]
    seconds: u64,
    #[arg(long, default_value = "docs/benchmarks-autoscale.json")]
    out: String,
    #[arg(long, default_value = "docs/autoscale.svg")]
    chart: String,
}

/// The platform on loopback; stops when dropped.
struct Platform {
    client: Client,
    api: String,
    gateway: std::net::SocketAddr,
    node: String,
    running: stratus_platform::Platform,
    _dir: tempfile::TempDir,
}

impl Drop for Platform {
    fn drop(&mut self) {
        self.running.stop();
        let ids = docker(&[
            "ps",
            "-aq",
            "--filter",
            &format!("label={}={}", stratus_api::wellknown::labels::NODE, self.node),
        ]);
        for id in ids.lines().filter(|l| !l.is_empty()) {
            docker(&["rm", "-f", id]);
        }
    }
}

fn docker(args: &[&str]) -> String {
    Command::new("docker")
        .args(args)
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default()
}

async fn platform() -> Result<Platform> {
    let img = Command::new("docker").args(["image", "inspect", IMAGE]).output()?;
    ensure!(img.status.success(), "{IMAGE} is missing: run hack/images.sh");
    let dir = tempfile::tempdir()?;
    let config = stratus_controllers::Config {
        stable_window: Duration::from_secs(6),
        scale_to_zero_grace: Duration::from_secs(2),
        autoscale_tick: Duration::from_millis(500),
        ..Default::default()
    };
    let node = format!("bench-{}", std::process::id());
    let mut cfg = stratus_agent::AgentConfig::new(node.clone());
    cfg.sync_interval = Duration::from_millis(250);
    cfg.drain_delay = Duration::from_millis(500);
    // As under `stratus up`: the agent and the gateway are on the engine's host.
    cfg.probe_container_address = true;
    cfg.advertise_container_address = true;
    let runtime = Arc::new(stratus_agent::runtime::docker::DockerRuntime::connect(None)?);
    let store = stratus_apiserver::StoreOptions::Embedded { data_dir: dir.path().join("data") };
    let running = stratus_platform::Builder::serve_api(store, tokio::net::TcpListener::bind("127.0.0.1:0").await?)
        .gateway(
            tokio::net::TcpListener::bind("127.0.0.1:0").await?,
            stratus_gateway::GatewayConfig { domain: "localhost".into(), ..Default::default() },
        )
        .controllers(config)
        .agent(cfg, runtime, None)
        .start()
        .await?;
    let client = running.client.clone();
    let api = running.endpoint.clone();
    let gateway = running.gateway.context("the platform has a gateway")?;
    Ok(Platform { client, api, gateway, node, running, _dir: dir })
}

async fn apply(client: &Client, yaml: &str) -> Result<()> {
    for doc in stratus_api::decode::decode_manifest(yaml) {
        let (_, mut obj) = doc.map_err(|e| anyhow::anyhow!("{e}"))?;
        stratus_api::prepare(&mut obj).map_err(|e| anyhow::anyhow!("{e}"))?;
        client.apply_any(obj).await?;
    }
    Ok(())
}

fn service(name: &str, extra: &str) -> String {
    format!(
        "apiVersion: stratus.dev/v1\nkind: Service\nmetadata: {{name: {name}}}\nspec:\n  template:\n    spec:\n      \
         containers: [{{image: \"{IMAGE}\", resources: {{limits: {{cpu: 100m, memory: 64Mi}}}}}}]\n{extra}\n"
    )
}

async fn revision(client: &Client, name: &str) -> Result<Revision> {
    Ok(client.get("default", name).await?)
}

async fn wait_for(what: &str, mut f: impl AsyncFnMut() -> Result<bool>) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(120);
    while !f().await? {
        if Instant::now() > deadline {
            bail!("timed out waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Ok(())
}

/// One GET with `Host`; the status code.
async fn get(addr: std::net::SocketAddr, host: &str) -> Result<u16> {
    let mut s = tokio::net::TcpStream::connect(addr).await?;
    s.write_all(format!("GET / HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n").as_bytes()).await?;
    let mut out = Vec::new();
    s.read_to_end(&mut out).await?;
    let text = String::from_utf8_lossy(&out);
    text.split_whitespace().nth(1).and_then(|c| c.parse().ok()).context("an HTTP status line")
}

fn percentile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() as f64 - 1.0) * q).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

/// The limits of every cold start measured, as `docker run` flags and as a service's.
const COLD_CPU: &str = "100m";
const COLD_DOCKER_CPUS: &str = "0.1";
const COLD_MEMORY: &str = "64Mi";
const COLD_DOCKER_MEMORY: &str = "64m";

/// `docker run` with the cold-start limits until the first 200, in milliseconds.
async fn docker_cold_start() -> Result<f64> {
    let start = Instant::now();
    let id = docker(&[
        "run",
        "-d",
        "--cpus",
        COLD_DOCKER_CPUS,
        "--memory",
        COLD_DOCKER_MEMORY,
        "-p",
        "127.0.0.1::8080",
        IMAGE,
    ]);
    ensure!(!id.is_empty(), "docker run failed");
    let port = docker(&["port", &id, "8080/tcp"]);
    let addr: std::net::SocketAddr =
        port.lines().next().context("a published port")?.trim().parse().context("the published address")?;
    loop {
        if matches!(get(addr, "localhost").await, Ok(200)) {
            break;
        }
        ensure!(start.elapsed() < Duration::from_secs(30), "the container never answered");
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let ms = start.elapsed().as_secs_f64() * 1000.0;
    docker(&["rm", "-f", &id]);
    Ok(ms)
}

/// Waits until the revision `name`-00001 is at zero with no container left on the node.
async fn at_zero(p: &Platform, name: &str) -> Result<()> {
    let revision_name = format!("{name}-00001");
    let label = format!("{}={}", stratus_api::wellknown::labels::SERVICE, name);
    wait_for("scale to zero", async || {
        let r = revision(&p.client, &revision_name).await;
        let zero = r.is_ok_and(|r| r.status.is_some_and(|s| s.desired_instances == 0 && s.actual_instances == 0));
        let node = format!("label={}={}", stratus_api::wellknown::labels::NODE, p.node);
        Ok(zero && docker(&["ps", "-aq", "--filter", &node, "--filter", &format!("label={label}")]).is_empty())
    })
    .await
}

/// The first request to service `name` at zero until its response, in milliseconds.
async fn stratus_cold_start(p: &Platform, name: &str) -> Result<f64> {
    at_zero(p, name).await?;
    let start = Instant::now();
    let code = get(p.gateway, &format!("{name}.default.localhost")).await?;
    ensure!(code == 200, "{name}: the first request got {code}");
    Ok(start.elapsed().as_secs_f64() * 1000.0)
}

pub async fn coldstart(args: ColdArgs) -> Result<()> {
    // Three paths with the same limits, taken in turn in every run so that drift of the
    // machine touches all three alike: `docker run`; a request to a service at zero; the
    // same with Cloud Run's startup CPU boost.
    let p = platform().await?;
    let limits = format!("resources: {{limits: {{cpu: {COLD_CPU}, memory: {COLD_MEMORY}}}}}");
    let yaml = |name: &str, annotations: &str| {
        format!(
            "apiVersion: stratus.dev/v1\nkind: Service\nmetadata: {{name: {name}}}\nspec:\n  template:\n    \
             metadata: {{annotations: {{{annotations}}}}}\n    spec:\n      containers: [{{image: \"{IMAGE}\", {limits}}}]\n"
        )
    };
    apply(&p.client, &yaml("cold", "")).await?;
    apply(&p.client, &yaml("boosted", "run.googleapis.com/startup-cpu-boost: \"true\"")).await?;
    let (mut docker_ms, mut stratus_ms, mut boosted_ms) = (Vec::new(), Vec::new(), Vec::new());
    for run in 0..args.runs {
        docker_ms.push(docker_cold_start().await?);
        stratus_ms.push(stratus_cold_start(&p, "cold").await?);
        boosted_ms.push(stratus_cold_start(&p, "boosted").await?);
        eprintln!(
            "run {}: docker run {:.0} ms, stratus {:.0} ms, stratus with the boost {:.0} ms",
            run + 1,
            docker_ms[run],
            stratus_ms[run],
            boosted_ms[run]
        );
    }
    drop(p);
    for v in [&mut docker_ms, &mut stratus_ms, &mut boosted_ms] {
        v.sort_by(f64::total_cmp);
    }
    let stats = |v: &[f64]| (percentile(v, 0.5), percentile(v, 0.9));
    let ((dm, dp), (sm, sp), (bm, bp)) = (stats(&docker_ms), stats(&stratus_ms), stats(&boosted_ms));
    println!("\nCold start with cpu {COLD_CPU}, memory {COLD_MEMORY}, {} runs each\n", args.runs);
    println!("| path | median ms | p90 ms | / docker run (median) |");
    println!("|---|---:|---:|---:|");
    println!(
        "| `docker run --cpus {COLD_DOCKER_CPUS} --memory {COLD_DOCKER_MEMORY}` → first 200 | {dm:.0} | {dp:.0} | 1.00 |"
    );
    println!("| first request → response, Stratus at zero | {sm:.0} | {sp:.0} | {:.2} |", sm / dm);
    println!("| the same with `startup-cpu-boost` | {bm:.0} | {bp:.0} | {:.2} |", bm / dm);
    let doc = json!({"runs": args.runs, "cpu": COLD_CPU, "memory": COLD_MEMORY, "docker_ms": docker_ms,
                     "stratus_ms": stratus_ms, "boosted_ms": boosted_ms,
                     "median_ratio": sm / dm, "p90_ratio": sp / dp,
                     "boosted_median_ratio": bm / dm, "boosted_p90_ratio": bp / dp});
    std::fs::write(&args.out, serde_json::to_string_pretty(&doc)?)?;
    Ok(())
}

pub async fn autoscale(args: StepArgs) -> Result<()> {
    let p = platform().await?;
    apply(&p.client, &service("step", "      containerConcurrency: 10\n      scaling: {maxInstances: 20}")).await?;
    wait_for("the service to be ready", async || {
        let r = revision(&p.client, "step-00001").await;
        Ok(r.is_ok_and(|r| r.status.is_some_and(|s| s.ready_instances >= 1)))
    })
    .await?;
    // `stratus bench`, next to this binary, drives the load and draws the chart.
    let exe = std::env::current_exe()?;
    let stratus = exe.with_file_name("stratus");
    ensure!(stratus.exists(), "{} is not built (cargo build --release -p stratus-cli)", stratus.display());
    let timeline = format!("{}.timeline.json", args.out.trim_end_matches(".json"));
    let mut bench = tokio::process::Command::new(&stratus)
        .args(["--server", &p.api, "bench", "step", "--path", "/?sleep_ms=100"])
        .args(["--stage", "5s:1c", "--stage", &format!("{}s:100c", args.seconds), "--stage", "15s:0"])
        .args(["--out-json", &timeline, "--chart", &args.chart])
        .spawn()
        .context("start stratus bench")?;
    // The step is 5 s in; time from then until 15 instances (100 / (10 × 70%)) are Ready.
    tokio::time::sleep(Duration::from_secs(5)).await;
    let step = Instant::now();
    let mut ready_after = None;
    let mut desired_after = None;
    while step.elapsed() < Duration::from_secs(args.seconds) {
        let r = revision(&p.client, "step-00001").await?;
        let st = r.status.unwrap_or_default();
        if desired_after.is_none() && st.desired_instances >= 15 {
            desired_after = Some(step.elapsed());
        }
        if ready_after.is_none() && st.ready_instances >= 15 {
            ready_after = Some(step.elapsed());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let status = bench.wait().await?;
    ensure!(status.success(), "stratus bench failed");
    let secs = |d: Option<Duration>| d.map(|d| d.as_secs_f64());
    println!("\nStep load 1 → 100 in flight (containerConcurrency 10, sleep 100 ms)\n");
    println!("| desired reaches 15 after | 15 instances Ready after |");
    println!("|---:|---:|");
    println!("| {:.1} s | {:.1} s |", secs(desired_after).unwrap_or(f64::NAN), secs(ready_after).unwrap_or(f64::NAN));
    let doc = json!({"desired_15_after_s": secs(desired_after), "ready_15_after_s": secs(ready_after),
                     "timeline": timeline, "chart": args.chart});
    std::fs::write(&args.out, serde_json::to_string_pretty(&doc)?)?;
    Ok(())
}

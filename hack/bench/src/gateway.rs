//! `stratus-bench gateway`: wrk against the hello container directly, through nginx configured
//! as a plain reverse proxy, and through the Stratus gateway, in one run on this machine.
//! Needs `wrk` and `nginx` (Debian packages) and the example image (`hack/images.sh`).

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail, ensure};
use clap::Args as ClapArgs;
use serde_json::json;
use stratus_api::Resource;
use stratus_api::v1::{
    Container, EndpointAddress, Endpoints, EndpointsSpec, Revision, RevisionSpec, Service, ServiceStatus, TrafficTarget,
};
use stratus_client::Client;

#[derive(ClapArgs)]
pub struct Args {
    /// Seconds per wrk run.
    #[arg(long, default_value_t = 10)]
    seconds: u64,
    /// Open connections.
    #[arg(long, default_value_t = 64)]
    connections: u32,
    /// wrk threads.
    #[arg(long, default_value_t = 2)]
    threads: u32,
    #[arg(long, default_value = "docs/benchmarks-gateway.json")]
    out: String,
}

const IMAGE: &str = "127.0.0.1:5000/hello:v1";

/// A container or process removed/killed when dropped.
struct Cleanup(Box<dyn FnMut()>);

impl Drop for Cleanup {
    fn drop(&mut self) {
        (self.0)();
    }
}

pub async fn run(args: Args) -> Result<()> {
    for tool in ["wrk", "nginx", "docker"] {
        ensure!(which(tool), "{tool} is not installed (apt-get install -y wrk nginx)");
    }
    // The workload: one hello container, no CPU limit, published on loopback.
    let out = Command::new("docker").args(["run", "-d", "-p", "127.0.0.1::8080", IMAGE]).output()?;
    ensure!(out.status.success(), "docker run failed: {}", String::from_utf8_lossy(&out.stderr));
    let id = String::from_utf8_lossy(&out.stdout).trim().to_string();
    let rm_id = id.clone();
    let _container = Cleanup(Box::new(move || {
        let _ = Command::new("docker").args(["rm", "-f", &rm_id]).output();
    }));
    let port = String::from_utf8_lossy(&Command::new("docker").args(["port", &id, "8080/tcp"]).output()?.stdout)
        .lines()
        .next()
        .and_then(|l| l.rsplit_once(':').map(|(_, p)| p.trim().to_string()))
        .context("the container's published port")?;
    let direct = format!("127.0.0.1:{port}");
    wait_http(&direct).await?;

    // nginx as a plain reverse proxy with upstream keep-alive.
    let dir = tempfile::tempdir()?;
    let nginx_port = free_port()?;
    let conf = format!(
        "worker_processes 2;\npid {dir}/nginx.pid;\nerror_log {dir}/error.log;\nevents {{ worker_connections 1024; }}\n\
         http {{ access_log off; client_body_temp_path {dir}; proxy_temp_path {dir};\n\
           upstream hello {{ server {direct}; keepalive 128; }}\n\
           server {{ listen 127.0.0.1:{nginx_port}; location / {{ proxy_pass http://hello; proxy_http_version 1.1;\n\
             proxy_set_header Connection \"\"; proxy_set_header Host $host; }} }} }}\n",
        dir = dir.path().display()
    );
    let conf_path = dir.path().join("nginx.conf");
    std::fs::write(&conf_path, conf)?;
    let mut nginx = Command::new("nginx")
        .args(["-c"])
        .arg(&conf_path)
        .args(["-g", "daemon off;"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .context("start nginx")?;
    let _nginx = Cleanup(Box::new(move || {
        let _ = nginx.kill();
        let _ = nginx.wait();
    }));
    let nginx_addr = format!("127.0.0.1:{nginx_port}");
    wait_http(&nginx_addr).await?;

    // The Stratus gateway, routing bench.default.localhost to the container through objects
    // written by hand (no controllers: this measures the data path only).
    let store_dir = tempfile::tempdir()?;
    let store = stratus_store::embedded::EmbeddedStore::open(store_dir.path().join("data")).await?;
    let server = stratus_apiserver::ApiServer::new(store).await?;
    let api = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let client = crate::admin_client(&server, &format!("http://{}", api.local_addr()?)).await?;
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let until = |mut rx: tokio::sync::watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|s| *s).await;
    };
    tokio::spawn(server.serve(api, until(stopped.clone())));
    register(&client, &direct).await?;
    let gw = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let gateway_addr = gw.local_addr()?.to_string();
    let config = stratus_gateway::GatewayConfig { domain: "localhost".into(), ..Default::default() };
    tokio::spawn(stratus_gateway::Gateway::new(client, config).serve(gw, until(stopped.clone())));
    wait_routed(&gateway_addr).await?;

    let mut rows = Vec::new();
    for (name, addr, host) in [
        ("direct", direct.as_str(), None),
        ("nginx", nginx_addr.as_str(), None),
        ("stratus-gateway", gateway_addr.as_str(), Some("bench.default.localhost")),
    ] {
        let r = wrk(&args, addr, host)?;
        eprintln!("{name}: {r}");
        rows.push((name, r));
    }
    let _ = stop.send(true);
    let rps = |n: &str| rows.iter().find(|(k, _)| *k == n).and_then(|(_, r)| r["rps"].as_f64()).unwrap_or(0.0);
    println!("\nwrk -t{} -c{} -d{}s, GET / of the hello container\n", args.threads, args.connections, args.seconds);
    println!("| path | requests/s | p50 ms | p99 ms |");
    println!("|---|---:|---:|---:|");
    for (name, r) in &rows {
        println!(
            "| {name} | {:.0} | {:.2} | {:.2} |",
            r["rps"].as_f64().unwrap_or(0.0),
            r["p50_ms"].as_f64().unwrap_or(0.0),
            r["p99_ms"].as_f64().unwrap_or(0.0)
        );
    }
    println!(
        "\ngateway / nginx = {:.2}, gateway / direct = {:.2}",
        rps("stratus-gateway") / rps("nginx"),
        rps("stratus-gateway") / rps("direct")
    );
    let doc = json!({
        "wrk": {"threads": args.threads, "connections": args.connections, "seconds": args.seconds},
        "results": rows.iter().map(|(n, r)| json!({"path": n, "result": r})).collect::<Vec<_>>(),
        "gateway_over_nginx": rps("stratus-gateway") / rps("nginx"),
        "gateway_over_direct": rps("stratus-gateway") / rps("direct"),
    });
    std::fs::write(&args.out, serde_json::to_string_pretty(&doc)?).with_context(|| format!("writing {}", args.out))?;
    Ok(())
}

async fn register(client: &Client, address: &str) -> Result<()> {
    let mut rev = Revision::default();
    rev.meta_mut().name = "bench-00001".into();
    rev.spec = Some(RevisionSpec {
        containers: vec![Container { image: IMAGE.into(), ..Default::default() }],
        container_concurrency: Some(0),
        timeout_seconds: Some(300),
        ..Default::default()
    });
    client.create(rev).await?;
    let mut ep = Endpoints::default();
    ep.meta_mut().name = "bench-00001".into();
    ep.spec = Some(EndpointsSpec {
        revision_name: "bench-00001".into(),
        addresses: vec![EndpointAddress {
            address: address.into(),
            instance_name: "bench".into(),
            node_name: "local".into(),
            protocol: "http1".into(),
        }],
    });
    client.create(ep).await?;
    let mut svc = Service::with_image("bench", IMAGE);
    svc = client.create(svc).await?;
    svc.status = Some(ServiceStatus {
        url: "http://bench.default.localhost".into(),
        traffic: vec![TrafficTarget {
            revision_name: "bench-00001".into(),
            percent: Some(100),
            latest_revision: Some(true),
            ..Default::default()
        }],
        ..Default::default()
    });
    client.update_status(svc).await?;
    Ok(())
}

/// Runs wrk and reads requests/s and the latency percentiles from its report.
fn wrk(args: &Args, addr: &str, host: Option<&str>) -> Result<serde_json::Value> {
    let mut cmd = Command::new("wrk");
    cmd.args(["-t", &args.threads.to_string(), "-c", &args.connections.to_string()]).args([
        "-d",
        &format!("{}s", args.seconds),
        "--latency",
    ]);
    if let Some(h) = host {
        cmd.args(["-H", &format!("Host: {h}")]);
    }
    let out = cmd.arg(format!("http://{addr}/")).output().context("run wrk")?;
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    ensure!(out.status.success(), "wrk failed: {text}{}", String::from_utf8_lossy(&out.stderr));
    let field = |label: &str| -> Option<f64> {
        text.lines()
            .find(|l| l.trim_start().starts_with(label))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(parse_wrk)
    };
    let errors = text.lines().any(|l| l.contains("Non-2xx") || l.contains("Socket errors"));
    Ok(json!({
        "rps": text.lines().find(|l| l.starts_with("Requests/sec:")).and_then(|l| l.split_whitespace().nth(1)).and_then(|v| v.parse::<f64>().ok()),
        "p50_ms": field("50%"),
        "p99_ms": field("99%"),
        "errors": errors,
    }))
}

/// wrk prints latencies as `812.00us`, `1.23ms` or `1.02s`; in milliseconds.
fn parse_wrk(v: &str) -> Option<f64> {
    if let Some(n) = v.strip_suffix("us") {
        n.parse::<f64>().ok().map(|x| x / 1000.0)
    } else if let Some(n) = v.strip_suffix("ms") {
        n.parse().ok()
    } else if let Some(n) = v.strip_suffix('s') {
        n.parse::<f64>().ok().map(|x| x * 1000.0)
    } else {
        None
    }
}

fn which(tool: &str) -> bool {
    Command::new("sh").args(["-c", &format!("command -v {tool}")]).output().is_ok_and(|o| o.status.success())
}

fn free_port() -> Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

async fn wait_http(addr: &str) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline {
        if stratus_testkit::http_get(addr, "/").await.is_ok_and(|r| r.contains(" 200 ")) {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    bail!("{addr} never answered")
}

async fn wait_routed(gateway: &str) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline {
        let out = Command::new("curl")
            .args(["-s", "-o", "/dev/null", "-w", "%{http_code}", "-H", "Host: bench.default.localhost"])
            .arg(format!("http://{gateway}/"))
            .output()?;
        if String::from_utf8_lossy(&out.stdout) == "200" {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    bail!("the gateway never routed bench.default.localhost")
}

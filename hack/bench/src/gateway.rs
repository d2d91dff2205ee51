//! `stratus-bench gateway`: wrk against the hello container directly, through nginx configured
//! as a plain reverse proxy, and through the Stratus gateway over HTTP and over HTTPS, in one
//! run on this machine. Each of direct, nginx and the gateway is measured against both ways of
//! reaching the container: its port published on loopback (through the engine's userland
//! proxy, `docker-proxy`) and its own address on the engine's bridge (as the gateway reaches
//! instances under `stratus up`, whose agent advertises container addresses).
//! Each row also gives the CPU that the processes proxying on its path used per request, user
//! and kernel (`/proc/PID/stat` before and after the run): steadier than requests per second,
//! which move by up to a quarter between runs on a shared 2-core machine.
//! Needs `wrk` and `nginx` (Debian packages) and the example image (`hack/images.sh`).

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail, ensure};
use clap::Args as ClapArgs;
use serde_json::json;
use stratus_api::Resource;
use stratus_api::v1::{
    Condition, Container, EndpointAddress, Endpoints, EndpointsSpec, Node, NodeAddress, NodeStatus,
    ResourceRequirements, Revision, RevisionSpec, Service, ServiceStatus, TrafficTarget,
};
use stratus_client::Client;

use crate::procs::{children, clock_ticks, cpu_ticks};

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
    /// Measure only this path (its name as in the table; repeat the flag for more), in the
    /// table's order, for comparing builds. The default measures every path.
    #[arg(long)]
    only: Vec<String>,
    /// Measure every path this many times, in the table's order and then in the reverse order
    /// by turns, so that no path gains from its place; each row is then the run with the median
    /// requests/s of its path (the lower of the two middle ones for an even number).
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=99))]
    rounds: u32,
}

const IMAGE: &str = "127.0.0.1:5000/hello:v1";

/// A container or process removed/killed when dropped.
struct Cleanup(Box<dyn FnMut()>);

impl Drop for Cleanup {
    fn drop(&mut self) {
        (self.0)();
    }
}

/// The paths of the table, in its order.
const PATHS: [&str; 9] = [
    "direct, published port (docker-proxy)",
    "nginx, published port",
    "stratus-gateway, published port",
    "direct, container address",
    "nginx, container address",
    "stratus-gateway",
    "stratus-gateway (shared runtime)",
    "stratus-gateway (metering on)",
    "stratus-gateway (HTTPS)",
];

pub async fn run(args: Args) -> Result<()> {
    if let Some(unknown) = args.only.iter().find(|o| !PATHS.contains(&o.as_str())) {
        bail!("--only: there is no path {unknown:?}; the paths are {PATHS:?}");
    }
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
    // The engine's userland proxy of that port: part of every path through the published port.
    let docker_proxy = docker_proxy_pids(&port);
    wait_http(&direct).await?;
    let ip = String::from_utf8_lossy(
        &Command::new("docker")
            .args(["inspect", "-f", "{{range .NetworkSettings.Networks}}{{.IPAddress}} {{end}}", &id])
            .output()?
            .stdout,
    )
    .split_whitespace()
    .next()
    .map(str::to_string)
    .context("the container's address")?;
    let container = format!("{ip}:8080");
    wait_http(&container).await?;

    // nginx as a plain reverse proxy with upstream keep-alive, one server for each way of
    // reaching the container.
    let dir = tempfile::tempdir()?;
    let (nginx_port, nginx_container_port) = (free_port()?, free_port()?);
    let conf = format!(
        "worker_processes 2;\npid {dir}/nginx.pid;\nerror_log {dir}/error.log;\nevents {{ worker_connections 1024; }}\n\
         http {{ access_log off; client_body_temp_path {dir}; proxy_temp_path {dir};\n\
           upstream hello {{ server {direct}; keepalive 128; }}\n\
           upstream helloc {{ server {container}; keepalive 128; }}\n\
           server {{ listen 127.0.0.1:{nginx_port}; location / {{ proxy_pass http://hello; proxy_http_version 1.1;\n\
             proxy_set_header Connection \"\"; proxy_set_header Host $host; }} }}\n\
           server {{ listen 127.0.0.1:{nginx_container_port}; location / {{ proxy_pass http://helloc; proxy_http_version 1.1;\n\
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
    let nginx_pid = nginx.id();
    // SIGTERM, not SIGKILL: nginx's master stops its workers only when it is asked to.
    let _nginx = Cleanup(Box::new(move || {
        let stopped = Command::new("kill").args(["-TERM", &nginx.id().to_string()]).status();
        if !stopped.is_ok_and(|s| s.success()) {
            let _ = nginx.kill();
        }
        let _ = nginx.wait();
    }));
    let nginx_addr = format!("127.0.0.1:{nginx_port}");
    let nginx_container_addr = format!("127.0.0.1:{nginx_container_port}");
    wait_http(&nginx_addr).await?;
    wait_http(&nginx_container_addr).await?;
    // The master and its workers.
    let nginx_pids: Vec<u32> = std::iter::once(nginx_pid).chain(children(nginx_pid)).collect();

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
    register(&client, &direct, &container).await?;
    let gw = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let gateway_addr = gw.local_addr()?.to_string();
    let config = stratus_gateway::GatewayConfig { domain: "localhost".into(), ..Default::default() };
    let gateway = stratus_gateway::Gateway::new(client.clone(), config);
    tokio::spawn(gateway.clone().serve(gw, until(stopped.clone())));
    // The same gateway serving on the bench's shared runtime instead of threads of its own.
    let config = stratus_gateway::GatewayConfig { domain: "localhost".into(), proxy_threads: 0, ..Default::default() };
    let shared_runtime = stratus_gateway::Gateway::new(client.clone(), config);
    let gwr = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let shared_runtime_addr = gwr.local_addr()?.to_string();
    tokio::spawn(shared_runtime.serve(gwr, until(stopped.clone())));
    // The same route through a gateway that meters every instance for billing, as the binaries
    // do by default: busy periods and requests per instance, reported every 10 s through a
    // spool on disk to the same API server.
    let usage_dir = tempfile::tempdir()?;
    let spool = stratus_client::usage::Spool::open(
        usage_dir.path(),
        stratus_client::usage::Spool::DEFAULT_MAX_FILES,
        stratus_client::usage::SpoolMetrics::default(),
    )?;
    let metering = stratus_gateway::Metering { spool, window: stratus_gateway::Metering::DEFAULT_WINDOW };
    let config = stratus_gateway::GatewayConfig {
        domain: "localhost".into(),
        name: "bench-metered".into(),
        metering: Some(metering),
        ..Default::default()
    };
    let metered = stratus_gateway::Gateway::new(client.clone(), config);
    let gwm = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let metered_addr = gwm.local_addr()?.to_string();
    tokio::spawn(metered.serve(gwm, until(stopped.clone())));
    // The same gateway over HTTPS, with a certificate of a cluster CA (wrk asks for
    // 127.0.0.1, which sends no SNI, so it is the default certificate).
    let ca = stratus_auth::pki::Ca::generate()?;
    let certificates = crate::loopback_certificates(&ca)?;
    let tls = stratus_gateway::tls::GatewayCertificates::new(certificates, None, "localhost").server_config()?;
    let gws = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let gateway_tls_addr = gws.local_addr()?.to_string();
    tokio::spawn(gateway.serve_tls(gws, tls, until(stopped.clone())));
    for host in [PUBLISHED_HOST, CONTAINER_HOST] {
        wait_routed(&gateway_addr, host).await?;
        wait_routed(&metered_addr, host).await?;
        wait_routed(&shared_runtime_addr, host).await?;
    }

    let mut rows = Vec::new();
    // The published port first, then the container's address; the gateway's variants
    // (metering, HTTPS) reach the container as `stratus up` does.
    // Each path with the processes that proxy on it, whose CPU is measured: the engine's
    // userland proxy on the published port, nginx, and this process for the gateway (which
    // also holds the API server, idle during the runs).
    let bench = vec![std::process::id()];
    let with = |a: &[u32], b: &[u32]| [a, b].concat();
    let urls = [
        ("direct, published port (docker-proxy)", format!("http://{direct}/"), None, docker_proxy.clone()),
        ("nginx, published port", format!("http://{nginx_addr}/"), None, with(&nginx_pids, &docker_proxy)),
        (
            "stratus-gateway, published port",
            format!("http://{gateway_addr}/"),
            Some(PUBLISHED_HOST),
            with(&bench, &docker_proxy),
        ),
        ("direct, container address", format!("http://{container}/"), None, Vec::new()),
        ("nginx, container address", format!("http://{nginx_container_addr}/"), None, nginx_pids.clone()),
        ("stratus-gateway", format!("http://{gateway_addr}/"), Some(CONTAINER_HOST), bench.clone()),
        (
            "stratus-gateway (shared runtime)",
            format!("http://{shared_runtime_addr}/"),
            Some(CONTAINER_HOST),
            bench.clone(),
        ),
        ("stratus-gateway (metering on)", format!("http://{metered_addr}/"), Some(CONTAINER_HOST), bench.clone()),
        ("stratus-gateway (HTTPS)", format!("https://{gateway_tls_addr}/"), Some(CONTAINER_HOST), bench.clone()),
    ];
    debug_assert!(urls.iter().map(|(n, ..)| *n).eq(PATHS));
    let selected = |name: &str| args.only.is_empty() || args.only.iter().any(|o| o == name);
    let mut order: Vec<_> = urls.iter().filter(|(n, ..)| selected(n)).collect();
    let mut runs: Vec<(&str, Vec<serde_json::Value>)> = order.iter().map(|(n, ..)| (*n, Vec::new())).collect();
    for round in 1..=args.rounds {
        for (name, url, host, proxies) in &order {
            let r = wrk(&args, url, *host, proxies)?;
            eprintln!("{name} (round {round}): {r}");
            if let Some((_, results)) = runs.iter_mut().find(|(n, _)| n == name) {
                results.push(r);
            }
        }
        let rps = |n: &str| runs.iter().find(|(k, _)| *k == n).and_then(|(_, r)| r.last()?["rps"].as_f64());
        if let (Some(gateway), Some(nginx)) = (rps("stratus-gateway"), rps("nginx, container address")) {
            eprintln!("round {round}: gateway / nginx at the container address = {:.2}", gateway / nginx);
        }
        order.reverse();
    }
    for (name, mut results) in runs.clone() {
        results.sort_by(|a, b| a["rps"].as_f64().unwrap_or(0.0).total_cmp(&b["rps"].as_f64().unwrap_or(0.0)));
        if let Some(median) = results.get(results.len().saturating_sub(1) / 2) {
            rows.push((name, median.clone()));
        }
    }
    // Metering on against off, in a run of one round: each is measured twice, in the order off,
    // on, on, off (the loop above ran off, then on), so that neither gains from running later;
    // their rows are the means of the two runs.
    let metering_pair = ["stratus-gateway (metering on)", "stratus-gateway"];
    let pair_measured = args.rounds == 1 && metering_pair.iter().all(|n| selected(n));
    for name in metering_pair.into_iter().filter(|_| pair_measured) {
        let Some((_, url, host, proxies)) = urls.iter().find(|(n, ..)| *n == name) else { continue };
        let again = wrk(&args, url, *host, proxies)?;
        eprintln!("{name}, again: {again}");
        if let Some((_, first)) = rows.iter_mut().find(|(n, _)| *n == name) {
            *first = mean(first, &again);
        }
    }
    // The metered run must have produced usage: wait for its last window to be reported.
    let metered_requests = if selected("stratus-gateway (metering on)") { wait_metered(&client).await? } else { 0 };
    eprintln!("metered: {metered_requests} requests in the UsageReports of gateway bench-metered");
    let _ = stop.send(true);
    let rps = |n: &str| rows.iter().find(|(k, _)| *k == n).and_then(|(_, r)| r["rps"].as_f64()).unwrap_or(0.0);
    println!("\nwrk -t{} -c{} -d{}s, GET / of the hello container\n", args.threads, args.connections, args.seconds);
    println!("| path | requests/s | p50 ms | p99 ms | proxies' CPU per request µs (user + kernel) |");
    println!("|---|---:|---:|---:|---:|");
    for (name, r) in &rows {
        let cpu = match (r["cpu_us"].as_f64(), r["user_us"].as_f64(), r["kernel_us"].as_f64()) {
            (Some(all), Some(user), Some(kernel)) => format!("{all:.1} ({user:.1} + {kernel:.1})"),
            _ => "none on the path".to_string(),
        };
        println!(
            "| {name} | {:.0} | {:.2} | {:.2} | {cpu} |",
            r["rps"].as_f64().unwrap_or(0.0),
            r["p50_ms"].as_f64().unwrap_or(0.0),
            r["p99_ms"].as_f64().unwrap_or(0.0)
        );
    }
    let ratios = [
        ("gateway (container address) / nginx (published port)", "stratus-gateway", "nginx, published port"),
        ("gateway / nginx, both at the container address", "stratus-gateway", "nginx, container address"),
        ("gateway / nginx, both at the published port", "stratus-gateway, published port", "nginx, published port"),
        (
            "gateway (container address) / direct at the published port (docker-proxy)",
            "stratus-gateway",
            "direct, published port (docker-proxy)",
        ),
        ("gateway / direct, both at the container address", "stratus-gateway", "direct, container address"),
    ];
    println!();
    for (what, a, b) in ratios {
        println!("- {what}: {:.2}", rps(a) / rps(b));
    }
    println!(
        "- gateway HTTPS / HTTP = {:.2}, metering on / off = {:.2}",
        rps("stratus-gateway (HTTPS)") / rps("stratus-gateway"),
        rps("stratus-gateway (metering on)") / rps("stratus-gateway")
    );
    let doc = json!({
        "wrk": {"threads": args.threads, "connections": args.connections, "seconds": args.seconds},
        "rounds": runs.iter().map(|(n, r)| json!({"path": n, "runs": r})).collect::<Vec<_>>(),
        "results": rows.iter().map(|(n, r)| json!({"path": n, "result": r})).collect::<Vec<_>>(),
        "ratios": ratios.iter().map(|(what, a, b)| json!({"ratio": what, "value": rps(a) / rps(b)})).collect::<Vec<_>>(),
        "gateway_https_over_http": rps("stratus-gateway (HTTPS)") / rps("stratus-gateway"),
        "metering_on_over_off": rps("stratus-gateway (metering on)") / rps("stratus-gateway"),
        "metered_requests": metered_requests,
    });
    std::fs::write(&args.out, serde_json::to_string_pretty(&doc)?).with_context(|| format!("writing {}", args.out))?;
    Ok(())
}

/// The mean of two wrk results (requests/s, latency percentiles and CPU per request).
fn mean(a: &serde_json::Value, b: &serde_json::Value) -> serde_json::Value {
    let avg = |k: &str| (a[k].as_f64().unwrap_or(0.0) + b[k].as_f64().unwrap_or(0.0)) / 2.0;
    let cpu = |k: &str| Some(avg(k)).filter(|_| a[k].is_number() && b[k].is_number());
    let errors = a["errors"].as_bool().unwrap_or(true) || b["errors"].as_bool().unwrap_or(true);
    json!({
        "rps": avg("rps"), "p50_ms": avg("p50_ms"), "p99_ms": avg("p99_ms"), "errors": errors, "runs": 2,
        "cpu_us": cpu("cpu_us"), "user_us": cpu("user_us"), "kernel_us": cpu("kernel_us"),
    })
}

/// The engine's userland proxies that listen on `port`.
fn docker_proxy_pids(port: &str) -> Vec<u32> {
    crate::procs::processes()
        .filter(|(_, _, cmdline)| {
            let args: Vec<&str> = cmdline.split('\0').collect();
            args.first().is_some_and(|a| a.ends_with("docker-proxy"))
                && args.windows(2).any(|w| w[0] == "-host-port" && w[1] == port)
        })
        .map(|(p, ..)| p)
        .collect()
}

/// The requests the metering gateway reported, once its reports stop growing (the last
/// window is sent within a window and a bit after the load ends).
async fn wait_metered(client: &Client) -> Result<i64> {
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(60);
    let mut last = (-1, 0);
    loop {
        let reports =
            client.list_all::<stratus_api::v1::UsageReport>(&stratus_client::ListParams::default()).await?.items;
        let requests: i64 = reports
            .iter()
            .filter_map(|r| r.spec.as_ref())
            .filter(|s| s.source == "bench-metered")
            .map(|s| s.requests)
            .sum();
        let seen = (i64::try_from(reports.len()).unwrap_or(i64::MAX), requests);
        if seen == last && requests > 0 {
            return Ok(requests);
        }
        ensure!(tokio::time::Instant::now() < deadline, "the metering gateway reported no usage within a minute");
        last = seen;
        tokio::time::sleep(stratus_gateway::Metering::DEFAULT_WINDOW + std::time::Duration::from_secs(2)).await;
    }
}

/// The hosts of the benchmark's two services: one reaches the container on its published port,
/// the other on its own address.
const PUBLISHED_HOST: &str = "bench.default.localhost";
const CONTAINER_HOST: &str = "benchc.default.localhost";

/// Registers node `local` (Ready, publishing `address`'s host and the container's address as
/// its instance network), a revision and Endpoints for each service, and the services.
async fn register(client: &Client, address: &str, container: &str) -> Result<()> {
    // The gateway proxies only to an address its Ready node published, and to a container
    // address only inside an instance network it published (here the container's alone).
    let host = address.rsplit_once(':').map_or(address, |(host, _)| host);
    let container_ip = container.rsplit_once(':').map_or(container, |(host, _)| host);
    let mut node = Node::default();
    node.meta_mut().name = "local".into();
    let mut node = client.create(node).await?;
    node.status = Some(NodeStatus {
        addresses: vec![NodeAddress { r#type: "InternalIP".into(), address: host.into() }],
        conditions: vec![Condition { r#type: "Ready".into(), status: "True".into(), ..Default::default() }],
        instance_cidrs: vec![format!("{container_ip}/32")],
        ..Default::default()
    });
    client.update_status(node).await?;
    for (service, revision, container_address) in [("bench", "bench-00001", ""), ("benchc", "benchc-00001", container)]
    {
        register_service(client, service, revision, address, container_address).await?;
    }
    Ok(())
}

/// A service routed to one revision whose one endpoint is `address` (and `container_address`,
/// which the gateway prefers, when not empty).
async fn register_service(
    client: &Client,
    service: &str,
    revision: &str,
    address: &str,
    container_address: &str,
) -> Result<()> {
    let mut rev = Revision::default();
    rev.meta_mut().name = revision.into();
    rev.spec = Some(RevisionSpec {
        // Limits, so that the metering gateway can price what it measures.
        containers: vec![Container {
            image: IMAGE.into(),
            resources: Some(ResourceRequirements {
                limits: [("cpu".to_string(), "1".to_string()), ("memory".to_string(), "512Mi".to_string())].into(),
                ..Default::default()
            }),
            ..Default::default()
        }],
        container_concurrency: Some(0),
        timeout_seconds: Some(300),
        ..Default::default()
    });
    client.create(rev).await?;
    let mut ep = Endpoints::default();
    ep.meta_mut().name = revision.into();
    ep.spec = Some(EndpointsSpec {
        revision_name: revision.into(),
        addresses: vec![EndpointAddress {
            address: address.into(),
            instance_name: service.into(),
            node_name: "local".into(),
            protocol: "http1".into(),
            container_address: container_address.into(),
        }],
    });
    client.create(ep).await?;
    let mut svc = Service::with_image(service, IMAGE);
    svc = client.create(svc).await?;
    svc.status = Some(ServiceStatus {
        url: format!("http://{service}.default.localhost"),
        traffic: vec![TrafficTarget {
            revision_name: revision.into(),
            percent: Some(100),
            latest_revision: Some(true),
            ..Default::default()
        }],
        ..Default::default()
    });
    client.update_status(svc).await?;
    Ok(())
}

/// Runs wrk and reads requests/s and the latency percentiles from its report, and the CPU that
/// the processes `proxies` used meanwhile, per request.
fn wrk(args: &Args, url: &str, host: Option<&str>, proxies: &[u32]) -> Result<serde_json::Value> {
    let mut cmd = Command::new("wrk");
    cmd.args(["-t", &args.threads.to_string(), "-c", &args.connections.to_string()]).args([
        "-d",
        &format!("{}s", args.seconds),
        "--latency",
    ]);
    if let Some(h) = host {
        cmd.args(["-H", &format!("Host: {h}")]);
    }
    let before = cpu_ticks(proxies);
    let out = cmd.arg(url).output().context("run wrk")?;
    let after = cpu_ticks(proxies);
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    ensure!(out.status.success(), "wrk failed: {text}{}", String::from_utf8_lossy(&out.stderr));
    let field = |label: &str| -> Option<f64> {
        text.lines()
            .find(|l| l.trim_start().starts_with(label))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(parse_wrk)
    };
    let errors = text.lines().any(|l| l.contains("Non-2xx") || l.contains("Socket errors"));
    // wrk's first line of results: `  123456 requests in 10.00s, 12.34MB read`.
    let requests = text
        .lines()
        .find(|l| l.contains(" requests in "))
        .and_then(|l| l.split_whitespace().next())
        .and_then(|n| n.parse::<f64>().ok())
        .filter(|n| *n > 0.0);
    let hz = clock_ticks();
    let per_request = |ticks: u64| requests.map(|n| ticks as f64 / hz / n * 1e6);
    let (user, kernel) = (after.0.saturating_sub(before.0), after.1.saturating_sub(before.1));
    let measured = !proxies.is_empty();
    Ok(json!({
        "cpu_us": per_request(user + kernel).filter(|_| measured),
        "user_us": per_request(user).filter(|_| measured),
        "kernel_us": per_request(kernel).filter(|_| measured),
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

async fn wait_routed(gateway: &str, host: &str) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline {
        let out = Command::new("curl")
            .args(["-s", "-o", "/dev/null", "-w", "%{http_code}", "-H", &format!("Host: {host}")])
            .arg(format!("http://{gateway}/"))
            .output()?;
        if String::from_utf8_lossy(&out.stdout) == "200" {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    bail!("the gateway never routed {host}")
}

//! The real binaries end to end: `stratus up`, `stratus-apiserver` on etcd and on the embedded
//! store, the `stratus` CLI against them, restarts and `kill -9`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use futures::StreamExt;
use stratus_api::Resource;
use stratus_api::v1::Service;
use stratus_client::{Client, ListParams, WatchEvent};
use stratus_testkit::{EtcdServer, binary, free_port, http_get, http_get_as, https_get, https_get_with_token};

/// Removes every container of a node when dropped (also when the test panicked).
struct RemoveContainers(String);

impl Drop for RemoveContainers {
    fn drop(&mut self) {
        let _ = Command::new(binary("stratus")).args(["down", "--node", &self.0]).output();
    }
}

/// A child process killed when dropped.
struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("repository root").to_path_buf()
}

/// Waits until the API server at `addr` answers /readyz over TLS, verified with the cluster CA
/// it makes at `ca` on first start.
async fn wait_ready(addr: &str, ca: &Path, proc: &mut Proc) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Ok(Some(status)) = proc.0.try_wait() {
            panic!("the server exited before it was ready: {status}");
        }
        if let Ok(ca) = std::fs::read(ca)
            && https_get(addr, "/readyz", &ca)
                .await
                .is_ok_and(|r| r.starts_with("HTTP/1.0 200") || r.starts_with("HTTP/1.1 200"))
        {
            return;
        }
        assert!(Instant::now() < deadline, "the server at {addr} did not become ready");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn apiserver(args: &[&str]) -> Proc {
    Proc(
        Command::new(binary("stratus-apiserver"))
            .args(args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start stratus-apiserver"),
    )
}

/// Runs the CLI against `server` (verified with `ca`), presenting `token`, and returns its
/// output.
fn stratus(server: &str, ca: &Path, token: &str, args: &[&str]) -> Output {
    Command::new(binary("stratus"))
        .arg("--server")
        .arg(server)
        .arg("--certificate-authority")
        .arg(ca)
        .args(args)
        .current_dir(repo_root())
        .env("STRATUS_CONFIG", "/nonexistent/stratus-config")
        .env("STRATUS_TOKEN", token)
        .output()
        .expect("run stratus")
}

/// A client of `server` that trusts the cluster CA at `ca`.
fn client_of(server: &str, ca: &Path) -> Client {
    let ca = std::fs::read(ca).expect("the cluster CA");
    Client::with_ca(server, Some(&ca)).unwrap()
}

/// Logs in as the first admin, whose password the server wrote to `password_file`.
async fn admin_token(server: &str, ca: &Path, password_file: &Path) -> String {
    let password = std::fs::read_to_string(password_file).expect("the admin's password file");
    let token = client_of(server, ca).login("admin", password.trim()).await.expect("the admin logs in");
    token.access_token
}

fn text(o: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr))
}

fn service(name: &str) -> Service {
    Service::with_image(name, "127.0.0.1:5000/stratus/hello:v1")
}

/// The README's first command runs `stratus up` with the example manifests: the services it
/// applies are then listed by `stratus get services`.
#[tokio::test]
async fn stratus_up_serves_the_examples() {
    let dir = tempfile::tempdir().unwrap();
    let addr = format!("127.0.0.1:{}", free_port());
    let server = format!("https://{addr}");
    let ca = dir.path().join("pki").join("ca.crt");
    let node = format!("e2e-up-{}", free_port());
    // `stratus up` leaves its workloads running when it stops; remove them when the test ends.
    let _cleanup = RemoveContainers(node.clone());
    let mut up = Proc(
        Command::new(binary("stratus"))
            .args(["up", "--listen", &addr, "--agent-listen", "127.0.0.1:0", "--gateway-listen", "127.0.0.1:0"])
            .args(["--gateway-https-listen", "127.0.0.1:0", "--gateway-admin-listen", "127.0.0.1:0"])
            .args(["--controllers-metrics-listen", "127.0.0.1:0"])
            .args(["--node-name", &node, "--data-dir"])
            .arg(dir.path())
            .args(["-f", "manifests/hello.yaml", "-f", "manifests/knative-hello.yaml"])
            .current_dir(repo_root())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start stratus up"),
    );
    wait_ready(&addr, &ca, &mut up).await;
    let token = admin_token(&server, &ca, &dir.path().join("admin-password")).await;
    // The examples are applied right after the server answers; wait for them (bounded).
    let deadline = Instant::now() + Duration::from_secs(30);
    let listing = loop {
        let out = stratus(&server, &ca, &token, &["get", "services"]);
        let t = text(&out);
        if out.status.success() && t.contains("hello-knative") && t.lines().any(|l| l.starts_with("hello ")) {
            break t;
        }
        assert!(Instant::now() < deadline, "the examples were not applied: {t}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(listing.starts_with("NAME"), "{listing}");

    // `stratus up` runs a node agent for this machine: its node registers and, with the
    // Docker engine answering, becomes Ready.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let out = stratus(&server, &ca, &token, &["get", "node", &node]);
        let t = text(&out);
        if out.status.success() && t.lines().any(|l| l.starts_with(&node) && l.contains(" Ready")) {
            break;
        }
        assert!(Instant::now() < deadline, "the node never became Ready: {t}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// What `stratus up` offers Prometheus and Grafana: every metric a shipped dashboard
/// (manifests/observability/dashboards) queries is exported by a running `stratus up` serving
/// traffic, and Debian's Prometheus, with the shipped configuration
/// (manifests/observability/prometheus.yml, its default addresses replaced by this test's),
/// scrapes all four components and answers the gateway's request rate under load.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stratus_up_is_scraped_with_the_shipped_configuration_its_dashboards_query_real_metrics_and_top_shows_them() {
    let dir = tempfile::tempdir().unwrap();
    let port = || format!("127.0.0.1:{}", free_port());
    let (api, gateway, https, agent, gateway_admin, controllers) = (port(), port(), port(), port(), port(), port());
    let server = format!("https://{api}");
    let ca = dir.path().join("pki").join("ca.crt");
    let node = format!("e2e-obs-{}", free_port());
    let _cleanup = RemoveContainers(node.clone());
    let log = std::fs::File::create(dir.path().join("up.log")).unwrap();
    let mut up = Proc(
        Command::new(binary("stratus"))
            .args(["up", "--listen", &api, "--gateway-listen", &gateway, "--gateway-https-listen", &https])
            .args(["--agent-listen", &agent, "--gateway-admin-listen", &gateway_admin])
            .args(["--controllers-metrics-listen", &controllers, "--node-name", &node, "--data-dir"])
            .arg(dir.path())
            .args(["-f", "manifests/hello.yaml"])
            .current_dir(repo_root())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start stratus up"),
    );
    wait_ready(&api, &ca, &mut up).await;
    let up_log = || std::fs::read_to_string(dir.path().join("up.log")).unwrap_or_default();
    let admin = admin_token(&server, &ca, &dir.path().join("admin-password")).await;
    let run = |args: &[&str]| {
        let out = stratus(&server, &ca, &admin, args);
        assert!(out.status.success(), "stratus {args:?}: {}", text(&out));
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    };
    // Prometheus reads the API server's metrics as a service account of its own, with no role.
    run(&["create", "serviceaccount", "prometheus", "-n", "stratus-system"]);
    let scraper = run(&["create", "token", "serviceaccount/prometheus", "-n", "stratus-system", "--duration", "1h"]);

    // Traffic through the gateway, from the first answer of hello to the end of the test.
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        match http_get_as(&gateway, "hello.default.localhost", "/").await {
            Ok(r) if r.starts_with("HTTP/1.1 200") || r.starts_with("HTTP/1.0 200") => break,
            other => assert!(Instant::now() < deadline, "hello never answered: {other:?}\n{}", up_log()),
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let load = {
        let gateway = gateway.clone();
        AbortOnDrop(tokio::spawn(async move {
            loop {
                let _ = http_get_as(&gateway, "hello.default.localhost", "/").await;
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }))
    };

    // Every metric the dashboards name is exported (some appear with their first sample: the
    // agent's, the autoscaler's, so they are awaited).
    let wanted = dashboard_metrics();
    let ca_pem = std::fs::read(&ca).unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let mut exported = BTreeSet::new();
        for scrape in [
            https_get_with_token(&api, "/metrics", &ca_pem, &scraper).await,
            https_get(&agent, "/metrics", &ca_pem).await,
            http_get(&gateway_admin, "/metrics").await,
            http_get(&controllers, "/metrics").await,
        ] {
            let scrape = scrape.expect("a component's /metrics answers");
            assert!(scrape.starts_with("HTTP/1.1 200") || scrape.starts_with("HTTP/1.0 200"), "{scrape}");
            exported.extend(metric_names(&scrape));
        }
        let missing: Vec<_> = wanted.iter().filter(|(name, _)| !exported.contains(*name)).collect();
        if missing.is_empty() {
            break;
        }
        assert!(Instant::now() < deadline, "dashboards query metrics nothing exports: {missing:?}");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }

    // `stratus top` shows the same traffic: hello's requests per second, its instance's
    // memory, and the node it runs on.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let services = run(&["top", "services"]);
        let instances = run(&["top", "instances", "--sort-by", "memory"]);
        let nodes = run(&["top", "nodes"]);
        let row = |table: &str, name: &str| -> Vec<String> {
            let line = table.lines().find(|l| l.split_whitespace().next() == Some(name));
            line.map(|l| l.split_whitespace().map(String::from).collect()).unwrap_or_default()
        };
        let hello = row(&services, "hello");
        let rps: f64 = hello.get(1).and_then(|v| v.parse().ok()).unwrap_or(0.0);
        let latency_known = hello.get(2).is_some_and(|v| v.ends_with("ms") || v.ends_with('s'));
        let instance_memory = instances
            .lines()
            .skip(1)
            .find(|l| l.split_whitespace().nth(1) == Some("hello"))
            .and_then(|l| l.split_whitespace().nth(5).map(String::from))
            .unwrap_or_default();
        let node_row = row(&nodes, &node);
        let node_instances: u32 = node_row.get(5).and_then(|v| v.parse().ok()).unwrap_or(0);
        if rps > 0.0
            && latency_known
            && (instance_memory.ends_with("Mi") || instance_memory.ends_with("Ki"))
            && node_instances >= 1
        {
            assert!(services.starts_with("NAME"), "{services}");
            eprintln!("{services}\n\n{instances}\n\n{nodes}");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "stratus top never showed hello under load:\n{services}\n{instances}\n{nodes}"
        );
        tokio::time::sleep(Duration::from_secs(1)).await;
    }

    // Prometheus with the shipped configuration, pointed at this test's addresses.
    let prom_dir = dir.path().join("prometheus");
    std::fs::create_dir_all(&prom_dir).unwrap();
    let mut config = std::fs::read_to_string(repo_root().join("manifests/observability/prometheus.yml")).unwrap();
    for (default, ours) in [
        ("127.0.0.1:7070", &api),
        ("127.0.0.1:7071", &agent),
        ("127.0.0.1:7072", &controllers),
        ("127.0.0.1:8081", &gateway_admin),
    ] {
        assert!(config.contains(default), "the shipped configuration has no target {default}");
        config = config.replace(default, ours);
    }
    std::fs::write(prom_dir.join("prometheus.yml"), config).unwrap();
    std::fs::copy(&ca, prom_dir.join("ca.crt")).unwrap();
    std::fs::write(prom_dir.join("apiserver.token"), &scraper).unwrap();
    let prom_addr = port();
    let prom_log = std::fs::File::create(dir.path().join("prometheus.log")).unwrap();
    let _prometheus = Proc(
        Command::new("prometheus")
            .arg(format!("--config.file={}", prom_dir.join("prometheus.yml").display()))
            .arg(format!("--storage.tsdb.path={}", dir.path().join("tsdb").display()))
            .arg(format!("--web.listen-address={prom_addr}"))
            .stdout(Stdio::null())
            .stderr(prom_log)
            .spawn()
            .expect("start prometheus (hack/install-deps.sh installs it)"),
    );
    let prom_log = || std::fs::read_to_string(dir.path().join("prometheus.log")).unwrap_or_default();
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let up_targets = prometheus_query(&prom_addr, "up").await;
        let rate = prometheus_query(&prom_addr, "sum(rate(stratus_gateway_requests_total[15s]))").await;
        let all_up = up_targets.as_ref().is_ok_and(|r| r.len() == 4 && r.iter().all(|(_, v)| *v == 1.0));
        let serving = rate.as_ref().is_ok_and(|r| r.first().is_some_and(|(_, v)| *v > 0.0));
        if all_up && serving {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "Prometheus never scraped everything: up: {up_targets:?}; gateway request rate: {rate:?}\n{}",
            prom_log()
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    drop(load);
}

/// A task aborted when dropped (also when the test panicked).
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Every `stratus_…` metric the shipped dashboards' queries and variables name, with where.
fn dashboard_metrics() -> BTreeMap<String, String> {
    let dir = repo_root().join("manifests/observability/dashboards");
    let mut names = BTreeMap::new();
    let mut files = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_none_or(|e| e != "json") {
            continue;
        }
        files += 1;
        let dashboard: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap())
            .unwrap_or_else(|e| panic!("{} is not JSON: {e}", path.display()));
        let mut queries = Vec::new();
        collect_queries(&dashboard, &mut queries);
        assert!(!queries.is_empty(), "{} has no query", path.display());
        for query in queries {
            let found = stratus_metrics_in(&query);
            assert!(!found.is_empty(), "{}: a query names no Stratus metric: {query}", path.display());
            for name in found {
                names.entry(name).or_insert_with(|| path.file_name().unwrap().to_string_lossy().to_string());
            }
        }
    }
    assert!(files >= 4, "expected the four dashboards in {}", dir.display());
    names
}

/// The PromQL of every panel target (`expr`) and templating variable (`query`).
fn collect_queries(v: &serde_json::Value, out: &mut Vec<String>) {
    match v {
        serde_json::Value::Object(map) => {
            for (key, value) in map {
                match (key.as_str(), value) {
                    ("expr", serde_json::Value::String(q)) => out.push(q.clone()),
                    ("query", serde_json::Value::String(q)) if q.contains("stratus_") => out.push(q.clone()),
                    ("query", serde_json::Value::Object(q)) => {
                        if let Some(serde_json::Value::String(q)) = q.get("query") {
                            out.push(q.clone());
                        }
                    }
                    _ => collect_queries(value, out),
                }
            }
        }
        serde_json::Value::Array(items) => items.iter().for_each(|i| collect_queries(i, out)),
        _ => {}
    }
}

/// The identifiers starting with `stratus_` in a PromQL expression.
fn stratus_metrics_in(query: &str) -> Vec<String> {
    let is_ident = |c: char| c.is_ascii_alphanumeric() || c == '_' || c == ':';
    let mut names = Vec::new();
    let mut rest = query;
    while let Some(at) = rest.find("stratus_") {
        // Only where an identifier starts, not inside another one.
        let starts = rest[..at].chars().next_back().is_none_or(|c| !is_ident(c));
        let len = rest[at..].find(|c: char| !is_ident(c)).unwrap_or(rest.len() - at);
        if starts {
            names.push(rest[at..at + len].to_string());
        }
        rest = &rest[at + len..];
    }
    names
}

/// The metric names with samples in a Prometheus (or OpenMetrics) exposition, after its HTTP
/// head.
fn metric_names(response: &str) -> BTreeSet<String> {
    let body = response.split_once("\r\n\r\n").map_or(response, |(_, b)| b);
    body.lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .filter_map(|l| l.split(['{', ' ']).next())
        .map(str::to_string)
        .collect()
}

/// The series of an instant query to the Prometheus at `addr`: each one's labels and value.
async fn prometheus_query(addr: &str, query: &str) -> Result<Vec<(serde_json::Value, f64)>, String> {
    let encoded: String = query
        .bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect();
    let reply = http_get(addr, &format!("/api/v1/query?query={encoded}")).await.map_err(|e| e.to_string())?;
    let body = reply.split_once("\r\n\r\n").map_or("", |(_, b)| b);
    let answer: serde_json::Value = serde_json::from_str(body).map_err(|e| format!("{e}: {reply}"))?;
    let results = answer["data"]["result"].as_array().ok_or_else(|| format!("no result: {answer}"))?;
    Ok(results
        .iter()
        .map(|r| (r["metric"].clone(), r["value"][1].as_str().and_then(|v| v.parse().ok()).unwrap_or(f64::NAN)))
        .collect())
}

/// `stratus-apiserver --store etcd` keeps objects in etcd: they outlive the server process, and
/// a second server on the same etcd sees and streams the first one's writes.
#[tokio::test]
async fn apiservers_on_one_etcd_share_state() {
    let etcd = EtcdServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let password_file = dir.path().join("admin-password");
    // Both servers share one cluster CA (as the servers of one cluster must).
    let pki = dir.path().join("pki");
    let ca = pki.join("ca.crt");
    let (a, b) = (format!("127.0.0.1:{}", free_port()), format!("127.0.0.1:{}", free_port()));
    let args = |listen: &str| {
        vec![
            "--pki-dir".to_string(),
            pki.display().to_string(),
            "--store".into(),
            "etcd".into(),
            "--etcd-endpoints".into(),
            etcd.endpoint.clone(),
            "--listen".into(),
            listen.to_string(),
            "--bootstrap-admin".into(),
            password_file.display().to_string(),
        ]
    };
    let a_args = args(&a);
    let mut pa = apiserver(&a_args.iter().map(String::as_str).collect::<Vec<_>>());
    wait_ready(&a, &ca, &mut pa).await;
    // One login serves both servers: they sign and verify with the keys kept in etcd.
    let token = admin_token(&format!("https://{a}"), &ca, &password_file).await;

    let out = stratus(&format!("https://{a}"), &ca, &token, &["apply", "-f", "manifests/knative-hello.yaml"]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("service/hello-knative created"), "{}", text(&out));

    let b_args = args(&b);
    let mut pb = apiserver(&b_args.iter().map(String::as_str).collect::<Vec<_>>());
    wait_ready(&b, &ca, &mut pb).await;
    let out = stratus(&format!("https://{b}"), &ca, &token, &["get", "service", "hello-knative", "-o", "json"]);
    assert!(out.status.success(), "{}", text(&out));
    let obj: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(obj["apiVersion"], "stratus.dev/v1");
    assert_eq!(obj["spec"]["template"]["spec"]["containers"][0]["env"][0]["name"], "TARGET");

    // A watch through B sees a write through A.
    let client = |addr: &str| client_of(&format!("https://{addr}"), &ca).with_token(&token);
    let (client_a, cb) = (client(&a), client(&b));
    let list = cb.list::<Service>(&ListParams::default()).await.unwrap();
    let mut w = cb.watch::<Service>(&ListParams::default(), &list.resource_version, false).await.unwrap();
    client_a.create(service("cross")).await.unwrap();
    let ev = tokio::time::timeout(Duration::from_secs(10), w.next()).await.expect("event in time").unwrap().unwrap();
    assert!(matches!(ev, WatchEvent::Added(ref s) if s.meta().name == "cross"), "{ev:?}");

    // Both servers gone, a new one still has everything.
    drop(pa);
    drop(pb);
    let mut pc = apiserver(&a_args.iter().map(String::as_str).collect::<Vec<_>>());
    wait_ready(&a, &ca, &mut pc).await;
    let names: Vec<_> = client_a
        .list::<Service>(&ListParams::default())
        .await
        .unwrap()
        .items
        .iter()
        .map(|s| s.meta().name.clone())
        .collect();
    assert_eq!(names, ["cross", "hello-knative"]);
}

/// Every write the API server acknowledged on the embedded store survives `kill -9`.
#[tokio::test]
async fn embedded_apiserver_survives_kill_9() {
    let dir = tempfile::tempdir().unwrap();
    let addr = format!("127.0.0.1:{}", free_port());
    let data = dir.path().join("data");
    let password_file = dir.path().join("admin-password");
    let args = [
        "--store",
        "embedded",
        "--data-dir",
        data.to_str().unwrap(),
        "--listen",
        &addr,
        "--bootstrap-admin",
        password_file.to_str().unwrap(),
    ];
    let ca = data.join("pki").join("ca.crt");
    let server = format!("https://{addr}");
    let mut client = None;
    let mut acked = Vec::new();
    for round in 0..3 {
        let mut p = apiserver(&args);
        wait_ready(&addr, &ca, &mut p).await;
        if round == 0 {
            // The token (and the CA) outlive the restarts: the signing keys are in the store,
            // the CA in the data directory.
            let token = admin_token(&server, &ca, &password_file).await;
            client = Some(client_of(&server, &ca).with_token(&token));
        }
        let client = client.clone().expect("logged in in the first round");
        // Several concurrent writers; kill the server while they are writing.
        let mut tasks = Vec::new();
        for w in 0..4 {
            let c = client.clone();
            tasks.push(tokio::spawn(async move {
                let mut ok = Vec::new();
                for i in 0.. {
                    let name = format!("r{round}-w{w}-{i}");
                    match c.create(service(&name)).await {
                        Ok(_) => ok.push(name),
                        Err(_) => break,
                    }
                }
                ok
            }));
        }
        // Let some writes land, then SIGKILL (Child::kill sends SIGKILL).
        let deadline = Instant::now() + Duration::from_secs(20);
        while client.list_all::<Service>(&ListParams::default()).await.map(|l| l.items.len()).unwrap_or(0)
            < acked.len() + 40
        {
            assert!(Instant::now() < deadline, "writes did not land");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        p.0.kill().unwrap();
        p.0.wait().unwrap();
        for t in tasks {
            acked.extend(t.await.unwrap());
        }
    }
    let mut p = apiserver(&args);
    wait_ready(&addr, &ca, &mut p).await;
    let stored: std::collections::HashSet<_> = client
        .expect("logged in")
        .list_all::<Service>(&ListParams::default())
        .await
        .unwrap()
        .items
        .iter()
        .map(|s| s.meta().name.clone())
        .collect();
    let lost: Vec<_> = acked.iter().filter(|n| !stored.contains(*n)).collect();
    assert!(lost.is_empty(), "{} acknowledged writes lost after kill -9: {:?}", lost.len(), &lost[..lost.len().min(5)]);
    assert!(acked.len() >= 120, "too few writes to prove anything: {}", acked.len());
}

/// The CLI's failures are one clear line and a non-zero exit.
#[tokio::test]
async fn cli_reports_an_unreachable_server_clearly() {
    let server = format!("http://127.0.0.1:{}", free_port());
    let out = Command::new(binary("stratus"))
        .args(["--server", &server, "get", "services"])
        .env("STRATUS_CONFIG", "/nonexistent/stratus-config")
        .output()
        .expect("run stratus");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.starts_with("error: cannot reach the Stratus API at"), "{err}");
    assert!(err.contains("stratus up"), "{err}");
    assert_eq!(err.trim_end().lines().count(), 1, "{err}");
}

/// A cluster started without bootstrap credentials has no user: every request but the open
/// probes and discovery is refused, whatever token it carries.
#[tokio::test]
async fn a_cluster_without_bootstrap_credentials_refuses_every_request() {
    let dir = tempfile::tempdir().unwrap();
    let addr = format!("127.0.0.1:{}", free_port());
    let data = dir.path().join("data");
    let mut p = apiserver(&["--store", "embedded", "--data-dir", data.to_str().unwrap(), "--listen", &addr]);
    let ca_path = data.join("pki").join("ca.crt");
    wait_ready(&addr, &ca_path, &mut p).await;
    let ca = std::fs::read(&ca_path).unwrap();
    let server = format!("https://{addr}");
    for token in ["", "garbage", "eyJhbGciOiJub25lIn0.eyJzdWIiOiJhZG1pbiJ9."] {
        let out = stratus(&server, &ca_path, token, &["get", "services"]);
        assert!(!out.status.success(), "{token:?}: {}", text(&out));
        assert!(text(&out).contains("stratus login"), "{token:?}: {}", text(&out));
    }
    for path in ["/apis/stratus.dev/v1/namespaces/default/services", "/metrics", "/openapi.json", "/apis"] {
        let reply = https_get(&addr, path, &ca).await.unwrap();
        assert!(reply.lines().next().is_some_and(|l| l.contains(" 401 ")), "{path}: {reply}");
        assert!(reply.to_ascii_lowercase().contains("www-authenticate: bearer"), "{path}: {reply}");
    }
    for path in ["/healthz", "/readyz", "/.well-known/jwks.json", "/.well-known/openid-configuration"] {
        let reply = https_get(&addr, path, &ca).await.unwrap();
        assert!(reply.lines().next().is_some_and(|l| l.contains(" 200 ")), "{path}: {reply}");
    }
    let refused = client_of(&server, &ca_path).login("admin", "anything").await;
    assert!(matches!(refused, Err(stratus_client::Error::Unauthenticated(_))), "{refused:?}");

    // The port speaks only TLS: plain HTTP is told so, and nothing else is answered.
    let plain = http_get(&addr, "/healthz").await.unwrap();
    assert!(plain.starts_with("HTTP/1.1 400"), "{plain}");
    assert!(plain.contains("HTTP request to an HTTPS server"), "{plain}");
    // A client that trusts another CA refuses the server.
    let stranger = stratus_auth::pki::Ca::generate().unwrap();
    let distrusting = Client::with_ca(&server, Some(stranger.cert_pem().as_bytes())).unwrap();
    let refused = distrusting.login("admin", "anything").await;
    assert!(matches!(refused, Err(stratus_client::Error::Tls(_))), "{refused:?}");
    // A plain-HTTP client gets no API either.
    let plain_client = Client::new(&format!("http://{addr}")).unwrap().login("admin", "anything").await;
    assert!(plain_client.is_err(), "{plain_client:?}");
}

/// With `OTEL_EXPORTER_OTLP_ENDPOINT` set, `stratus up` sends its spans to that collector: a
/// request through the gateway is one trace (under the client's `traceparent`) with its route,
/// queue (or activator hold) and upstream spans, the workload gets a `traceparent` naming the
/// upstream span, the client gets the trace back in `traceresponse`; the controllers'
/// reconciles carry their traces into the API server, whose requests show their store calls.
#[tokio::test]
async fn a_request_is_traced_through_the_gateway_to_the_workload_and_reconciles_into_the_store() {
    let receiver = stratus_testkit::otlp::OtlpReceiver::start().await;
    let dir = tempfile::tempdir().unwrap();
    let port = || format!("127.0.0.1:{}", free_port());
    let (api, gateway, https, agent) = (port(), port(), port(), port());
    let node = format!("e2e-trace-{}", free_port());
    let _cleanup = RemoveContainers(node.clone());
    let manifest = dir.path().join("traced.yaml");
    std::fs::write(
        &manifest,
        "apiVersion: stratus.dev/v1\nkind: Service\nmetadata:\n  name: traced\nspec:\n  template:\n    spec:\n      \
         containers:\n        - image: 127.0.0.1:5000/hello:v1\n          args: [\"env\"]\n",
    )
    .unwrap();
    let log = std::fs::File::create(dir.path().join("up.log")).unwrap();
    let mut up = Proc(
        Command::new(binary("stratus"))
            .args(["up", "--listen", &api, "--gateway-listen", &gateway, "--gateway-https-listen", &https])
            .args(["--agent-listen", &agent, "--node-name", &node, "--gateway-admin-listen", "127.0.0.1:0"])
            .args(["--controllers-metrics-listen", "127.0.0.1:0", "--data-dir"])
            .arg(dir.path())
            .arg("-f")
            .arg(&manifest)
            .env("OTEL_EXPORTER_OTLP_ENDPOINT", receiver.endpoint())
            .env("OTEL_BSP_SCHEDULE_DELAY", "200")
            .env("STRATUS_CONFIG", dir.path().join("config"))
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start stratus up"),
    );
    wait_ready(&api, &dir.path().join("pki").join("ca.crt"), &mut up).await;
    let up_log = || std::fs::read_to_string(dir.path().join("up.log")).unwrap_or_default();

    // One request under a trace of the client's, retried (each in a new trace) until served.
    let deadline = Instant::now() + Duration::from_secs(120);
    let (trace_id, client_span, answer) = loop {
        let trace_id = format!("{:032x}", rand_u128());
        let client_span = format!("{:016x}", rand_u128() as u64 | 1);
        let header = format!("traceparent: 00-{trace_id}-{client_span}-01\r\n");
        match stratus_testkit::http_get_with_headers(&gateway, "traced.default.localhost", "/headers", &header).await {
            Ok(r) if r.starts_with("HTTP/1.1 200") || r.starts_with("HTTP/1.0 200") => {
                break (trace_id, client_span, r);
            }
            other => assert!(Instant::now() < deadline, "traced never answered: {other:?}\n{}", up_log()),
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    };
    let (head, body) = answer.split_once("\r\n\r\n").expect("an HTTP answer");
    let seen: serde_json::Value = serde_json::from_str(body).expect("/headers answers JSON");
    let workload_parent = seen["traceparent"][0].as_str().expect("the workload got a traceparent").to_string();
    let parts: Vec<&str> = workload_parent.split('-').collect();
    assert_eq!(parts.len(), 4, "{workload_parent}");
    assert_eq!(parts[1], trace_id, "the workload's traceparent continues the client's trace");
    assert_ne!(parts[2], client_span, "the workload's parent is the gateway's span, not the client's");
    let traceresponse = head
        .lines()
        .find_map(|l| l.strip_prefix("traceresponse: ").or_else(|| l.strip_prefix("Traceresponse: ")))
        .unwrap_or_else(|| panic!("no traceresponse in the answer:\n{head}"));
    assert!(traceresponse.contains(&trace_id), "{traceresponse}");

    let named = |spans: &[stratus_testkit::otlp::ReceivedSpan], name: &str| {
        spans.iter().filter(|s| s.trace_id == trace_id && s.name == name).cloned().collect::<Vec<_>>()
    };
    let spans = receiver
        .wait_for(Duration::from_secs(30), |spans| {
            !named(spans, "gateway.request").is_empty() && !named(spans, "gateway.upstream").is_empty()
        })
        .await
        .unwrap_or_else(|| panic!("the gateway's spans never arrived: {:#?}", receiver.spans()));
    let request = &named(&spans, "gateway.request")[0];
    assert_eq!(request.parent_span_id, client_span, "the request span is the client's span's child");
    assert_eq!(request.kind, 2, "a server span");
    assert_eq!(request.attributes.get("http.response.status_code").map(String::as_str), Some("200"));
    assert_eq!(request.attributes.get("stratus.revision").map(String::as_str), Some("traced-00001"));
    let route = named(&spans, "gateway.route");
    assert_eq!(route.len(), 1, "{spans:#?}");
    assert_eq!(route[0].parent_span_id, request.span_id);
    let waited: Vec<_> = spans
        .iter()
        .filter(|s| s.trace_id == trace_id && (s.name == "gateway.queue" || s.name == "gateway.activator"))
        .collect();
    assert!(!waited.is_empty() && waited.iter().all(|s| s.parent_span_id == request.span_id), "{spans:#?}");
    let upstream = named(&spans, "gateway.upstream");
    assert!(upstream.iter().all(|s| s.parent_span_id == request.span_id && s.kind == 3), "{upstream:#?}");
    assert!(
        upstream.iter().any(|s| s.span_id == parts[2]),
        "the workload's traceparent names an upstream span: {workload_parent} vs {upstream:#?}"
    );
    // `stratus up`'s agent advertises its containers' own addresses, which it reached: the
    // gateway connects there, not through the engine's port proxy on 127.0.0.1.
    let served_by = upstream.iter().find(|s| s.span_id == parts[2]).and_then(|s| s.attributes.get("server.address"));
    assert!(
        served_by.is_some_and(|a| !a.starts_with("127.") && !a.is_empty()),
        "the gateway reached the workload at {served_by:?}, not its container address"
    );

    // The controllers' reconciles reach the API server in their traces, and it shows the store.
    let spans = receiver
        .wait_for(Duration::from_secs(30), |spans| {
            spans.iter().any(|api| {
                api.scope == "stratus-apiserver"
                    && spans.iter().any(|r| r.span_id == api.parent_span_id && r.name.starts_with("reconcile "))
                    && spans.iter().any(|s| s.parent_span_id == api.span_id && s.name.starts_with("store."))
            })
        })
        .await
        .unwrap_or_else(|| {
            let names: BTreeSet<_> = receiver.spans().into_iter().map(|s| (s.scope, s.name)).collect();
            panic!("no reconcile → API → store trace; spans seen: {names:#?}")
        });
    assert!(spans.iter().all(|s| s.service == "stratus"), "every span is of service.name stratus");
    let names: BTreeSet<_> = spans.iter().map(|s| format!("{} {}", s.scope, s.name)).collect();
    eprintln!("{} spans received, of {} kinds: {names:#?}", spans.len(), names.len());
}

/// A random number for ids, from the standard library's randomly seeded hasher.
fn rand_u128() -> u128 {
    use std::hash::{BuildHasher, Hasher};
    let mut a = std::collections::hash_map::RandomState::new().build_hasher();
    a.write_u8(1);
    let mut b = std::collections::hash_map::RandomState::new().build_hasher();
    b.write_u8(2);
    (u128::from(a.finish()) << 64) | u128::from(b.finish())
}

//! The whole platform on loopback for end-to-end tests: the API server, the controllers and the
//! gateway in the test's process, node agents in it or as processes, all driving the real
//! Docker engine with the example image (`127.0.0.1:5000/hello:v1`, built by `hack/images.sh`,
//! which `hack/test.sh` runs first).
#![allow(clippy::unwrap_used, clippy::expect_used, dead_code)]

use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use stratus_agent::AgentConfig;
use stratus_agent::runtime::docker::DockerRuntime;
use stratus_api::v1::{Instance, Service};
use stratus_apiserver::StoreOptions;
use stratus_client::{Client, ListParams};
use stratus_platform::Platform;
use stratus_testkit::{binary, free_port};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

pub const IMAGE: &str = "127.0.0.1:5000/hello:v1";
pub const PATIENCE: Duration = Duration::from_secs(90);

pub fn docker(args: &[&str]) -> String {
    let out = Command::new("docker").args(args).output().expect("run docker");
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// Removes every container of a node when dropped (also when the test panicked).
pub struct NodeCleanup(pub String);

impl Drop for NodeCleanup {
    fn drop(&mut self) {
        let ids = docker(&["ps", "-aq", "--filter", &format!("label=stratus.dev/node={}", self.0)]);
        for id in ids.lines().filter(|l| !l.is_empty()) {
            docker(&["rm", "-f", id]);
        }
    }
}

/// A child process killed when dropped.
pub struct Proc(pub Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The whole platform on loopback: API server, controllers and gateway in this process, and
/// node agents (in this process, or as `stratus-agent` processes), started through the one
/// wiring point, `stratus_platform`.
pub struct Cluster {
    pub platform: Platform,
    pub client: Client,
    /// A cluster admin's token (the service account `stratus-system/e2e-admin`), for the CLI.
    pub token: String,
    pub gateway: SocketAddr,
    pub nodes: Vec<NodeCleanup>,
    _dir: tempfile::TempDir,
}

impl Cluster {
    pub async fn start(test: &str, node_grace: Duration) -> Cluster {
        let mut c = Cluster::control_plane(test, node_grace).await;
        c.add_agent(&format!("e2e-{test}-{}", free_port())).await;
        c
    }

    /// With the autoscaler's windows short (a 6 s stable window, a 3 s scale-to-zero grace, a
    /// 500 ms tick), so that scaling tests take seconds.
    pub async fn autoscaling(test: &str) -> Cluster {
        let mut c = Cluster::build(test, Duration::from_secs(15), true).await;
        c.add_agent(&format!("e2e-{test}-{}", free_port())).await;
        c
    }

    /// API server, controllers and gateway, without any node; Knative's default windows.
    pub async fn control_plane(test: &str, node_grace: Duration) -> Cluster {
        Cluster::build(test, node_grace, false).await
    }

    async fn build(test: &str, node_grace: Duration, short_windows: bool) -> Cluster {
        let image = Command::new("docker").args(["image", "inspect", IMAGE]).output().expect("run docker");
        assert!(image.status.success(), "{IMAGE} is missing: run hack/images.sh (hack/test.sh does)");
        let dir = tempfile::tempdir().unwrap();
        let mut config =
            stratus_controllers::Config { node_grace, identity: format!("e2e-{test}"), ..Default::default() };
        if short_windows {
            config.stable_window = Duration::from_secs(6);
            config.scale_to_zero_grace = Duration::from_secs(3);
            config.autoscale_tick = Duration::from_millis(500);
        }
        let api = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let gateway = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let store = StoreOptions::Embedded { data_dir: dir.path().join("data") };
        let platform = stratus_platform::Builder::serve_api(store, api)
            .gateway(gateway, stratus_gateway::GatewayConfig { domain: "localhost".into(), ..Default::default() })
            .controllers(config)
            .start()
            .await
            .unwrap();
        let client = platform.client.clone();
        let gateway = platform.gateway.unwrap();
        let identity = platform.identity().expect("the API is served in this process");
        let admin = stratus_api::identity::roles::CLUSTER_ADMIN;
        let token = identity.component_token("e2e-admin", admin, "").await.unwrap()();
        Cluster { platform, client, token, gateway, nodes: Vec::new(), _dir: dir }
    }

    /// `http://127.0.0.1:PORT` of the API.
    pub fn endpoint(&self) -> &str {
        &self.platform.endpoint
    }

    /// Runs a node agent in this process.
    pub async fn add_agent(&mut self, node: &str) {
        let mut cfg = AgentConfig::new(node);
        cfg.sync_interval = Duration::from_millis(250);
        cfg.lease_renew_interval = Duration::from_millis(500);
        cfg.drain_delay = Duration::from_millis(500);
        let runtime = Arc::new(DockerRuntime::connect(None).expect("docker"));
        self.platform.add_agent(cfg, runtime, None).await.unwrap();
        self.nodes.push(NodeCleanup(node.to_string()));
    }

    /// A token of the service account `node` runs as (role system:agent, confined to `node`).
    pub async fn agent_token(&self, node: &str) -> String {
        let identity = self.platform.identity().expect("the API is served in this process");
        let role = stratus_api::identity::roles::SYSTEM_AGENT;
        identity.component_token(&format!("node-{node}"), role, node).await.unwrap()()
    }

    /// Runs a node agent as a `stratus-agent` process, as its node's service account.
    pub async fn agent_process(&mut self, node: &str) -> Proc {
        self.nodes.push(NodeCleanup(node.to_string()));
        let token = self.agent_token(node).await;
        Proc(
            Command::new(binary("stratus-agent"))
                .args(["--apiserver", &self.platform.endpoint, "--node-name", node, "--listen", "127.0.0.1:0"])
                .env("STRATUS_TOKEN", token)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("start stratus-agent"),
        )
    }

    pub async fn apply(&self, yaml: &str) {
        for doc in stratus_api::decode::decode_manifest(yaml) {
            let (_, mut obj) = doc.expect("a valid manifest");
            stratus_api::prepare(&mut obj).expect("a valid manifest");
            self.client.apply_any(obj).await.expect("applied");
        }
    }

    pub async fn service(&self, name: &str) -> Service {
        self.client.get("default", name).await.unwrap()
    }

    /// Waits until the service satisfies `f`; on timeout, fails showing its status.
    pub async fn wait_service(&self, name: &str, what: &str, f: impl Fn(&Service) -> bool) -> Service {
        let deadline = Instant::now() + PATIENCE;
        loop {
            let svc = self.service(name).await;
            if f(&svc) {
                return svc;
            }
            assert!(Instant::now() < deadline, "service {name} never got {what}: {:#?}", svc.status);
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    pub async fn wait_ready(&self, name: &str) -> Service {
        self.wait_service(name, "Ready", |s| condition(s, "Ready") == "True").await
    }

    pub async fn instances(&self, label: &str) -> Vec<Instance> {
        let params = ListParams { label_selector: label.to_string(), ..Default::default() };
        self.client.list_all::<Instance>(&params).await.unwrap().items
    }

    /// One request through the gateway to `host`.
    pub async fn get(&self, host: &str, path: &str) -> (u16, String) {
        request(self.gateway, host, path).await
    }
}

pub fn condition(svc: &Service, kind: &str) -> String {
    svc.status
        .as_ref()
        .and_then(|s| s.conditions.iter().find(|c| c.r#type == kind))
        .map(|c| c.status.clone())
        .unwrap_or_default()
}

pub fn host(service: &str) -> String {
    format!("{service}.default.localhost")
}

/// An HTTP/1.1 request with `Connection: close`; (0, error) when it fails.
pub async fn request(addr: SocketAddr, host: &str, path: &str) -> (u16, String) {
    let attempt = async {
        let mut s = tokio::net::TcpStream::connect(addr).await?;
        s.write_all(format!("GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n").as_bytes()).await?;
        let mut out = Vec::new();
        s.read_to_end(&mut out).await?;
        std::io::Result::Ok(String::from_utf8_lossy(&out).to_string())
    };
    match tokio::time::timeout(Duration::from_secs(30), attempt).await {
        Ok(Ok(reply)) => {
            let code = reply.split_whitespace().nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
            let body = reply.split_once("\r\n\r\n").map(|(_, b)| b.to_string()).unwrap_or_default();
            (code, dechunk(&body))
        }
        Ok(Err(e)) => (0, e.to_string()),
        Err(_) => (0, "timed out".into()),
    }
}

/// The body of a chunked response, or the body itself.
pub fn dechunk(body: &str) -> String {
    let mut out = String::new();
    let mut rest = body;
    loop {
        let Some((size, after)) = rest.split_once("\r\n") else { return body.to_string() };
        let Ok(n) = usize::from_str_radix(size.trim(), 16) else { return body.to_string() };
        if n == 0 {
            return out;
        }
        let Some(chunk) = after.get(..n) else { return body.to_string() };
        out.push_str(chunk);
        rest = after.get(n + 2..).unwrap_or("");
    }
}

/// A Service running the example image: `container` is added under its container, `spec`
/// under the revision template's spec (both already indented, or empty).
pub fn service(name: &str, container: &str, spec: &str) -> String {
    format!(
        r#"
apiVersion: stratus.dev/v1
kind: Service
metadata:
  name: {name}
spec:
  template:
    spec:
      containers:
        - image: {IMAGE}
{container}
{spec}
"#
    )
}

pub fn hello(name: &str, target: &str, extra_spec: &str) -> String {
    let container = format!(
        "          env:\n            - name: TARGET\n              value: {target}\n          resources:\n            limits: {{cpu: 250m, memory: 64Mi}}"
    );
    service(name, &container, extra_spec)
}

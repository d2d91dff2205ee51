//! The whole platform on loopback for end-to-end tests: the API server, the controllers and the
//! gateway in the test's process (or the controllers and the gateway as `stratus-controllers`
//! and `stratus-gateway` processes a test may `kill -9` and start again: [`Component`]), node
//! agents in it or as processes, all driving the real Docker engine with the example image
//! (`127.0.0.1:5000/hello:v1`, built by `hack/images.sh`, which `hack/test.sh` runs first).
#![allow(clippy::unwrap_used, clippy::expect_used, dead_code)]

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
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

/// A platform binary run as a process that a test may `kill -9` ([`Component::kill9`]) and
/// start again with the same flags, ports, directories and token ([`Component::restart`]).
/// Its output is appended to one log file over all its starts. Killed when dropped.
pub struct Component {
    binary: PathBuf,
    args: Vec<String>,
    token: String,
    log: PathBuf,
    /// Where it answers /readyz, when it does.
    pub admin: Option<SocketAddr>,
    child: Option<Child>,
    /// How many times it was started.
    pub starts: u32,
}

impl Component {
    pub fn start(binary: &str, args: Vec<String>, token: String, log: PathBuf, admin: Option<SocketAddr>) -> Component {
        let mut c =
            Component { binary: stratus_testkit::binary(binary), args, token, log, admin, child: None, starts: 0 };
        c.spawn();
        c
    }

    fn spawn(&mut self) {
        assert!(self.child.is_none(), "{} is already running", self.binary.display());
        let log = std::fs::OpenOptions::new().create(true).append(true).open(&self.log).expect("open the log");
        let child = Command::new(&self.binary)
            .args(&self.args)
            .env("STRATUS_TOKEN", &self.token)
            .env("RUST_LOG", std::env::var("RUST_LOG").unwrap_or_else(|_| "info".into()))
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("start {}: {e}", self.binary.display()));
        self.child = Some(child);
        self.starts += 1;
    }

    /// SIGKILL, and waits until the process is gone.
    pub fn kill9(&mut self) {
        let mut child = self.child.take().expect("the process runs");
        child.kill().expect("SIGKILL");
        child.wait().expect("reap the killed process");
    }

    /// SIGTERM, and waits (up to [`PATIENCE`]) until the process has exited, as it does once it
    /// has drained and stopped.
    pub async fn terminate(&mut self) {
        let pid = self.child.as_ref().expect("the process runs").id().to_string();
        let sent = Command::new("kill").args(["-TERM", &pid]).status().expect("run kill");
        assert!(sent.success(), "kill -TERM {pid} failed");
        let deadline = Instant::now() + PATIENCE;
        loop {
            let child = self.child.as_mut().expect("the process runs");
            if let Some(status) = child.try_wait().expect("wait for the process") {
                self.child = None;
                assert!(
                    status.success(),
                    "{} exited with {status} on SIGTERM:\n{}",
                    self.binary.display(),
                    self.log_tail(40)
                );
                return;
            }
            assert!(Instant::now() < deadline, "{} did not exit on SIGTERM", self.binary.display());
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Starts it again as it was started first.
    pub fn restart(&mut self) {
        self.spawn();
    }

    /// Fails when the process exited by itself (a crash), showing its log.
    pub fn assert_running(&mut self) {
        if let Some(status) = self.child.as_mut().and_then(|c| c.try_wait().ok().flatten()) {
            panic!("{} exited: {status}; its log ends with:\n{}", self.binary.display(), self.log_tail(40));
        }
    }

    /// Waits until /readyz on `admin` answers 200.
    pub async fn wait_ready(&mut self) {
        let admin = self.admin.expect("the component serves /readyz").to_string();
        let deadline = Instant::now() + PATIENCE;
        loop {
            self.assert_running();
            if stratus_testkit::http_get(&admin, "/readyz").await.is_ok_and(|r| r.contains(" 200 ")) {
                return;
            }
            assert!(Instant::now() < deadline, "{} never got ready:\n{}", self.binary.display(), self.log_tail(40));
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The last `n` lines of its log.
    pub fn log_tail(&self, n: usize) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(n)..].join("\n")
    }
}

impl Drop for Component {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
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
    /// The cluster CA's certificate file.
    ca: String,
    pub nodes: Vec<NodeCleanup>,
    _dir: tempfile::TempDir,
}

/// Stops the platform and, on a multi-threaded runtime, waits until every part has ended before
/// the fields drop and `nodes` removes the nodes' containers. An agent's reconcile that is
/// creating a container finishes first (reconciles in progress finish on shutdown), so that the
/// container exists when the cleanup lists them; else another worker thread could create it just
/// after (seen once: a container of `panic` left behind). On a current-thread runtime nothing
/// can be waited for here: the runtime drops the agent's tasks without running them again, and
/// only a container call the engine had already received when the test ended can still leave a
/// container (none seen so far).
impl Drop for Cluster {
    fn drop(&mut self) {
        self.platform.stop();
        let Ok(runtime) = tokio::runtime::Handle::try_current() else { return };
        if runtime.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread {
            // Longer than the gateway's drain (30 s), which a request still open may take.
            let joined = tokio::task::block_in_place(|| {
                runtime.block_on(tokio::time::timeout(Duration::from_secs(45), self.platform.join()))
            });
            match joined {
                Ok(Ok(())) => {}
                Ok(Err(e)) => eprintln!("the platform stopped with an error: {e}"),
                Err(_) => eprintln!("the platform did not stop within 45 s; cleaning up anyway"),
            }
        }
    }
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

    /// The API server in this process and one node agent, without controllers or gateway: the
    /// test runs those as processes ([`Cluster::controllers_process`],
    /// [`Cluster::gateway_process`]). `gateway` is the port the gateway process is to listen on.
    pub async fn without_controllers_and_gateway(test: &str) -> Cluster {
        let mut c = Cluster::assemble(test, Duration::from_secs(15), false, false).await;
        c.add_agent(&format!("e2e-{test}-{}", free_port())).await;
        c
    }

    async fn build(test: &str, node_grace: Duration, short_windows: bool) -> Cluster {
        Cluster::assemble(test, node_grace, short_windows, true).await
    }

    async fn assemble(test: &str, node_grace: Duration, short_windows: bool, in_process: bool) -> Cluster {
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
        // As every binary does: the API over TLS, verified with the cluster CA.
        let tls = stratus_platform::tls::ServingTls::Issued {
            pki_dir: dir.path().join("pki"),
            names: vec!["127.0.0.1".into()],
            validity: Duration::from_secs(24 * 3600),
        };
        // Uploaded images go to the registry the example image is in (hack/images.sh).
        let images = stratus_apiserver::images::ImagesConfig::new("127.0.0.1:5000", dir.path().join("uploads"));
        let mut builder = stratus_platform::Builder::serve_api(store, api)
            .api_tls(tls)
            .api_config(stratus_apiserver::Config { images: Some(images), ..Default::default() });
        let gateway = if in_process {
            let gw = stratus_gateway::GatewayConfig { domain: "localhost".into(), ..Default::default() };
            builder = builder.gateway(gateway, gw).controllers(config);
            None
        } else {
            let addr = gateway.local_addr().unwrap();
            drop(gateway);
            Some(addr)
        };
        let platform = builder.start().await.unwrap();
        let client = platform.client.clone();
        let gateway = gateway.or(platform.gateway).unwrap();
        let identity = platform.identity().expect("the API is served in this process");
        let admin = stratus_api::identity::roles::CLUSTER_ADMIN;
        let token = identity.component_token("e2e-admin", admin, "").await.unwrap()();
        let ca = dir.path().join("pki").join("ca.crt").display().to_string();
        Cluster { platform, client, token, gateway, ca, nodes: Vec::new(), _dir: dir }
    }

    /// The cluster CA's certificate file, which verifies the API (`--certificate-authority`).
    pub fn ca(&self) -> &str {
        &self.ca
    }

    /// `https://127.0.0.1:PORT` of the API.
    pub fn endpoint(&self) -> &str {
        &self.platform.endpoint
    }

    /// Runs the `stratus` CLI against this cluster as its admin (no config file): its exit code,
    /// standard output and standard error.
    pub async fn stratus(&self, args: &[&str]) -> (i32, String, String) {
        let out = tokio::process::Command::new(binary("stratus"))
            .args(["--server", self.endpoint(), "--certificate-authority", self.ca()])
            .args(args)
            .env("STRATUS_CONFIG", "/nonexistent/stratus-config")
            .env("STRATUS_TOKEN", &self.token)
            .output()
            .await
            .expect("run stratus");
        let text = |b: &[u8]| String::from_utf8_lossy(b).to_string();
        (out.status.code().unwrap_or(-1), text(&out.stdout), text(&out.stderr))
    }

    /// Starts the `stratus` CLI against this cluster as its admin, as [`Cluster::stratus`], and
    /// leaves it running (killed when dropped); its output is piped.
    pub fn stratus_running(&self, args: &[&str]) -> tokio::process::Child {
        tokio::process::Command::new(binary("stratus"))
            .args(["--server", self.endpoint(), "--certificate-authority", self.ca()])
            .args(args)
            .env("STRATUS_CONFIG", "/nonexistent/stratus-config")
            .env("STRATUS_TOKEN", &self.token)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("start stratus")
    }

    /// A headless Chromium that trusts this cluster's API certificate, on the console, logged
    /// in as `user` with `password` (the login form sent; what the page shows next is the
    /// test's to wait for).
    pub async fn console(&self, user: &str, password: &str) -> stratus_testkit::console::Browser {
        let pki = self.dir().join("pki");
        let browser =
            stratus_testkit::console::Browser::start_trusting(&[&pki.join("apiserver.crt"), &pki.join("ca.crt")]).await;
        browser.goto(&format!("{}/ui/", self.endpoint())).await;
        browser.fill("#username", user).await;
        browser.fill("#password", password).await;
        browser.click("#login").await;
        browser
    }

    /// The test's own directory (removed when the cluster is dropped).
    pub fn dir(&self) -> &Path {
        self._dir.path()
    }

    /// A token of the service account `stratus-system/{name}` with the cluster role `role`.
    pub async fn component_token(&self, name: &str, role: &str) -> String {
        let identity = self.platform.identity().expect("the API is served in this process");
        identity.component_token(name, role, "").await.unwrap()()
    }

    /// `stratus-controllers` as a process, as the service account `e2e-controllers`, with the
    /// identity `e2e-{test}` in leader election at every start (so that a replica started
    /// after a `kill -9` takes the lease over at once instead of waiting for it to expire),
    /// and `extra` flags. Its log is `{dir}/controllers.log`.
    pub async fn controllers_process(&self, test: &str, extra: &[&str]) -> Component {
        let token = self.component_token("e2e-controllers", stratus_api::identity::roles::SYSTEM_CONTROLLERS).await;
        let mut args = self.api_args();
        let port = self.gateway.port().to_string();
        let identity = format!("e2e-{test}");
        for a in ["--domain", "localhost", "--gateway-port", &port, "--identity", &identity] {
            args.push(a.to_string());
        }
        for a in ["--metrics-listen", "127.0.0.1:0", "--autoscaler-listen", "127.0.0.1:0"] {
            args.push(a.to_string());
        }
        args.extend(extra.iter().map(|a| a.to_string()));
        Component::start("stratus-controllers", args, token, self.dir().join("controllers.log"), None)
    }

    /// `stratus-gateway` as a process on [`Cluster::gateway`], as the service account
    /// `e2e-gateway`, named `name`, with `extra` flags; it answers /readyz on the returned
    /// component's `admin` address. Its log is `{dir}/gateway.log`.
    pub async fn gateway_process(&self, name: &str, extra: &[&str]) -> Component {
        let token = self.component_token("e2e-gateway", stratus_api::identity::roles::SYSTEM_GATEWAY).await;
        let admin: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
        let mut args = self.api_args();
        let (listen, admin_listen) = (self.gateway.to_string(), admin.to_string());
        for a in ["--listen", &listen, "--admin-listen", &admin_listen, "--domain", "localhost", "--name", name] {
            args.push(a.to_string());
        }
        args.extend(extra.iter().map(|a| a.to_string()));
        Component::start("stratus-gateway", args, token, self.dir().join("gateway.log"), Some(admin))
    }

    fn api_args(&self) -> Vec<String> {
        ["--apiserver", self.endpoint(), "--certificate-authority", self.ca()].map(String::from).to_vec()
    }

    /// Runs a node agent in this process. It serves its logs service on a loopback port over
    /// TLS with its node's certificate, as a joined node does, so the API can relay logs.
    pub async fn add_agent(&mut self, node: &str) {
        let mut cfg = AgentConfig::new(node);
        cfg.sync_interval = Duration::from_millis(250);
        cfg.lease_renew_interval = Duration::from_millis(500);
        cfg.drain_delay = Duration::from_millis(500);
        let runtime = Arc::new(DockerRuntime::connect(None).expect("docker"));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        self.platform.add_agent(cfg, runtime, Some(listener)).await.unwrap();
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
        self.agent_process_with(node, &[]).await
    }

    /// Runs a node agent as a `stratus-agent` process with `extra` flags, its data directory
    /// `{dir}/agent-{node}` (kept across restarts of the same node's agent).
    pub async fn agent_process_with(&mut self, node: &str, extra: &[&str]) -> Proc {
        if !self.nodes.iter().any(|n| n.0 == node) {
            self.nodes.push(NodeCleanup(node.to_string()));
        }
        let token = self.agent_token(node).await;
        let data_dir = self.dir().join(format!("agent-{node}"));
        Proc(
            Command::new(binary("stratus-agent"))
                .args(["--apiserver", &self.platform.endpoint, "--node-name", node, "--listen", "127.0.0.1:0"])
                .args(["--certificate-authority", &self.ca])
                .arg("--data-dir")
                .arg(&data_dir)
                .args(extra)
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

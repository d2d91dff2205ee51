//! The node agent against the real Docker engine, with the real example image
//! (`127.0.0.1:5000/hello:v1`, built and pushed by `hack/images.sh`, which `hack/test.sh` runs
//! first). Each test has its own API server and its own node name, and removes every container
//! of its node when it ends.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{NodeCleanup, Proc, docker};

use std::ops::{Deref, DerefMut};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use futures::StreamExt;
use serde_json::Value;
use stratus_agent::AgentConfig;
use stratus_agent::config::NODE_LEASE_NAMESPACE;
use stratus_agent::runtime::docker::DockerRuntime;
use stratus_agent::runtime::{LogOptions, Runtime};
use stratus_api::Resource;
use stratus_api::v1::{Container, Instance, InstanceSpec, Lease};
use stratus_apiserver::testing::TestServer;
use stratus_client::{Client, ListParams, WatchEvent};
use stratus_testkit::agent_harness::{AgentHarness, HarnessConfig, status, wait_for};
use stratus_testkit::{binary, free_port, http_get};

const IMAGE: &str = "127.0.0.1:5000/hello:v1";
const PATIENCE: Duration = Duration::from_secs(60);

fn require_image() {
    let out = Command::new("docker").args(["image", "inspect", IMAGE]).output().expect("run docker");
    assert!(out.status.success(), "{IMAGE} is missing: run hack/images.sh (hack/test.sh does) before these tests");
}

/// The agent harness on Docker, removing every container of its node when dropped.
struct Harness {
    // First, so that the agent is told to stop before its containers are removed.
    agent: AgentHarness<DockerRuntime>,
    _cleanup: NodeCleanup,
}

impl Harness {
    async fn start(test: &str) -> Harness {
        require_image();
        let node = format!("e2e-{test}-{}", free_port());
        let mut cfg = AgentConfig::new(node.clone());
        cfg.lease_duration = Duration::from_secs(1);
        cfg.lease_renew_interval = Duration::from_millis(250);
        cfg.sync_interval = Duration::from_millis(200);
        cfg.node_status_interval = Duration::from_secs(1);
        cfg.usage_interval = Duration::from_secs(1);
        cfg.gc_interval = Duration::from_millis(500);
        cfg.crash_backoff = (Duration::from_millis(500), Duration::from_secs(10));
        cfg.pull_backoff = (Duration::from_millis(500), Duration::from_secs(10));
        cfg.drain_delay = Duration::from_millis(300);
        let config = HarnessConfig { agent: cfg, patience: PATIENCE, termination_grace_period_seconds: 5 };
        let runtime = DockerRuntime::connect(None).expect("docker");
        Harness { agent: AgentHarness::start(runtime, config).await, _cleanup: NodeCleanup(node) }
    }
}

impl Deref for Harness {
    type Target = AgentHarness<DockerRuntime>;

    fn deref(&self) -> &Self::Target {
        &self.agent
    }
}

impl DerefMut for Harness {
    fn deref_mut(&mut self) -> &mut Self::Target {
        &mut self.agent
    }
}

fn inspect(id: &str) -> Value {
    let v: Value = serde_json::from_str(&docker(&["inspect", id])).expect("docker inspect json");
    v[0].clone()
}

/// An HTTP GET to an instance's address; returns the body.
async fn get(address: &str, path: &str) -> String {
    let reply = http_get(address, path).await.expect("the instance answers");
    assert!(reply.starts_with("HTTP/1.0 200") || reply.starts_with("HTTP/1.1 200"), "{reply}");
    reply.split_once("\r\n\r\n").map(|(_, b)| b.to_string()).unwrap_or_default()
}

#[tokio::test]
async fn an_instance_runs_hardened_and_answers() {
    let h = Harness::start("run").await;
    h.create("web", IMAGE, &[], "64Mi").await;
    let i = h.wait_for("web", "Ready", |i| status(i).ready).await;
    let st = status(&i);
    assert_eq!(st.phase, "Running");
    assert!(st.image_digest.starts_with("127.0.0.1:5000/hello@sha256:"), "{}", st.image_digest);
    let body = get(&st.address, "/").await;
    assert!(body.starts_with("Hello World!"), "{body}");

    let c = inspect(&st.container_id);
    let hc = &c["HostConfig"];
    assert_eq!(hc["NanoCpus"], 500_000_000);
    assert_eq!(hc["Memory"], 64 << 20);
    assert_eq!(hc["MemorySwap"], 64 << 20);
    assert!(hc["PidsLimit"].as_i64().unwrap_or(0) > 0);
    assert_eq!(hc["Privileged"], false);
    assert!(hc["SecurityOpt"].to_string().contains("no-new-privileges"), "{}", hc["SecurityOpt"]);
    assert_eq!(hc["CapDrop"], serde_json::json!(["ALL"]));
    assert!(hc["Tmpfs"]["/tmp"].is_string(), "{}", hc["Tmpfs"]);
    assert_ne!(hc["NetworkMode"], "host");
    assert_ne!(hc["PidMode"], "host");
    assert_eq!(c["Config"]["Labels"]["stratus.dev/instance-uid"], i.meta().uid.as_str());
    assert_eq!(c["Config"]["OpenStdin"], false);
}

#[tokio::test]
async fn containers_get_the_cloud_run_runtime_contract() {
    let h = Harness::start("env").await;
    h.create("env", IMAGE, &["env"], "96Mi").await;
    let i = h.wait_for("env", "Ready", |i| status(i).ready).await;
    let report: Value = serde_json::from_str(&get(&status(&i).address, "/env").await).expect("env report is JSON");
    let env = &report["env"];
    assert_eq!(env["PORT"], "8080");
    assert_eq!(env["K_SERVICE"], "hello");
    assert_eq!(env["K_CONFIGURATION"], "hello");
    assert_eq!(env["K_REVISION"], "hello-00001");
    assert_eq!(report["tmp_writable"], true, "{report}");
    assert_eq!(report["stdin_eof"], true, "{report}");
    assert_eq!(report["memory_limit_bytes"], 96 << 20, "{report}");
    // 500m of CPU: a quota of half the period.
    let (quota, period) = (report["cpu_quota_us"].as_i64().unwrap_or(0), report["cpu_period_us"].as_i64().unwrap_or(0));
    assert!(period > 0 && quota * 2 == period, "{report}");
}

#[tokio::test]
async fn a_killed_container_is_restarted_and_counted() {
    let h = Harness::start("kill").await;
    h.create("victim", IMAGE, &[], "64Mi").await;
    let i = h.wait_for("victim", "Ready", |i| status(i).ready).await;
    let first = status(&i).container_id;
    docker(&["kill", &first]);
    let i = h.wait_for("victim", "a restart", |i| status(i).restart_count == 1).await;
    let st = status(&i);
    assert_eq!(st.exit_code, Some(137));
    assert!(!st.reason.is_empty() && st.message.contains("exited with code 137"), "{st:?}");
    let i = h.wait_for("victim", "Ready again", |i| status(i).ready && status(i).container_id != first).await;
    assert_eq!(status(&i).restart_count, 1);
    get(&status(&i).address, "/").await;
}

#[tokio::test]
async fn the_memory_hog_is_oom_killed_and_the_crasher_backs_off() {
    let h = Harness::start("oom").await;
    h.create("hog", IMAGE, &["oom"], "32Mi").await;
    h.create("crasher", IMAGE, &["crash"], "64Mi").await;
    let i = h.wait_for("hog", "OOMKilled", |i| status(i).reason == "OOMKilled").await;
    assert!(status(&i).message.contains("memory limit of 32Mi"), "{}", status(&i).message);

    let i = h.wait_for("crasher", "CrashLoopBackOff", |i| status(i).reason == "CrashLoopBackOff").await;
    assert_eq!(status(&i).exit_code, Some(3));
    assert!(status(&i).message.contains("back-off 500ms"), "{}", status(&i).message);
    let i = h.wait_for("crasher", "a longer back-off", |i| status(i).restart_count >= 2).await;
    assert!(status(&i).message.contains("back-off 1s"), "{}", status(&i).message);
}

#[tokio::test]
async fn a_never_ready_container_says_why_and_a_missing_image_fails_to_pull() {
    let h = Harness::start("never").await;
    h.create("shy", IMAGE, &["never-ready"], "64Mi").await;
    h.create("ghost", "127.0.0.1:5000/no-such-image:v1", &[], "64Mi").await;
    // ErrImagePull lasts only until the first retry, while the probe failure stays: look at the
    // missing image first (a slow machine once saw ImagePullBackOff already).
    let i = h.wait_for("ghost", "ErrImagePull", |i| status(i).reason == "ErrImagePull").await;
    assert_eq!(status(&i).phase, "Pending");
    assert!(!status(&i).message.is_empty());
    let i = h.wait_for("shy", "a probe failure", |i| status(i).message.contains("readiness probe failed")).await;
    assert!(!status(&i).ready);
    assert_eq!(status(&i).phase, "Running");
    h.wait_for("ghost", "ImagePullBackOff", |i| status(i).reason == "ImagePullBackOff").await;
}

#[tokio::test]
async fn deleting_an_instance_sends_sigterm_and_removes_its_container() {
    let h = Harness::start("del").await;
    h.create("bye", IMAGE, &[], "64Mi").await;
    let i = h.wait_for("bye", "Ready", |i| status(i).ready).await;
    let id = status(&i).container_id;
    let runtime = DockerRuntime::connect(None).unwrap();
    let mut logs = runtime.logs(&id, LogOptions { follow: true, tail: None, ..Default::default() }).await.unwrap();
    // Read the container's output while it is deleted (the stream is read as it is polled).
    let (first_tx, first_rx) = tokio::sync::oneshot::channel();
    let collector = tokio::spawn(async move {
        let mut lines = Vec::new();
        let mut first_tx = Some(first_tx);
        while let Ok(Some(item)) = tokio::time::timeout(Duration::from_secs(30), logs.next()).await {
            match item {
                Ok(l) => lines.push(l.line),
                Err(e) => lines.push(format!("error: {e}")),
            }
            if let Some(tx) = first_tx.take() {
                let _ = tx.send(());
            }
        }
        lines
    });
    first_rx.await.expect("the container's first line");
    let params = ListParams { field_selector: "metadata.name=bye".into(), ..Default::default() };
    let mut w = h.client.watch::<Instance>(&params, &i.meta().resource_version, false).await.unwrap();
    h.client.delete::<Instance>("default", "bye").await.unwrap();
    let mut finished = false;
    tokio::time::timeout(PATIENCE, async {
        while let Some(ev) = w.next().await {
            match ev.unwrap() {
                WatchEvent::Modified(i) => finished |= status(&i).finished_at.is_some(),
                WatchEvent::Deleted(_) => return,
                _ => {}
            }
        }
    })
    .await
    .expect("instance deleted");
    assert!(finished, "finishedAt was never recorded");
    let lines = collector.await.unwrap();
    assert!(lines.iter().any(|l| l.contains("received SIGTERM")), "{lines:?}");
    assert!(docker(&["ps", "-aq", "--filter", &format!("id={id}")]).is_empty(), "the container is still there");
}

#[tokio::test]
async fn the_lease_is_renewed_and_expires_when_the_agent_stops() {
    let mut h = Harness::start("lease").await;
    let renew_time = |l: &Lease| l.spec.as_ref().and_then(|s| s.renew_time).unwrap_or_default();
    let deadline = Instant::now() + PATIENCE;
    let first = loop {
        if let Ok(l) = h.client.get::<Lease>(NODE_LEASE_NAMESPACE, h.node()).await {
            break l;
        }
        assert!(Instant::now() < deadline, "no lease");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    loop {
        let l: Lease = h.client.get(NODE_LEASE_NAMESPACE, h.node()).await.unwrap();
        if renew_time(&l) != renew_time(&first) {
            break;
        }
        assert!(Instant::now() < deadline, "the lease was never renewed");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    h.stop_agent().await;
    let last: Lease = h.client.get(NODE_LEASE_NAMESPACE, h.node()).await.unwrap();
    // Past its duration (1 s) with no renewal: expired.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let now: Lease = h.client.get(NODE_LEASE_NAMESPACE, h.node()).await.unwrap();
    assert_eq!(renew_time(&now), renew_time(&last), "renewed after the agent stopped");
    let expiry = renew_time(&now).seconds + i64::from(now.spec.unwrap().lease_duration_seconds);
    let wall = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() as i64;
    assert!(expiry <= wall, "the lease has not expired");
}

/// `stratus-agent` for `node`, as the node's service account.
async fn agent_process(server: &TestServer, node: &str) -> Proc {
    let role = stratus_api::identity::roles::SYSTEM_AGENT;
    let token = server.identity.component_token(&format!("node-{node}"), role, node).await.unwrap()();
    Proc(
        Command::new(binary("stratus-agent"))
            .args(["--apiserver", &server.endpoint, "--node-name", node, "--listen", "127.0.0.1:0"])
            .env("STRATUS_TOKEN", token)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start stratus-agent"),
    )
}

#[tokio::test]
async fn a_sigkilled_agent_adopts_its_containers_and_removes_orphans() {
    require_image();
    let server = TestServer::start().await;
    let client = Client::new(&server.endpoint).unwrap().with_token(&server.token);
    let node = format!("e2e-adopt-{}", free_port());
    let _cleanup = NodeCleanup(node.clone());
    let mut agent = agent_process(&server, &node).await;

    let mut inst = Instance::default();
    inst.meta_mut().name = "kept".into();
    inst.spec = Some(InstanceSpec {
        service_name: "hello".into(),
        revision_name: "hello-00001".into(),
        node_name: node.clone(),
        containers: vec![Container { image: IMAGE.into(), ..Default::default() }],
        ..Default::default()
    });
    client.create(inst).await.unwrap();
    let i = wait_for(&client, "kept", "Ready", PATIENCE, |i| status(i).ready).await;
    let id = status(&i).container_id;

    agent.0.kill().unwrap();
    agent.0.wait().unwrap();
    let orphan = docker(&[
        "run",
        "-d",
        "--label",
        &format!("stratus.dev/node={node}"),
        "--label",
        "stratus.dev/instance-uid=no-such-instance",
        IMAGE,
    ]);
    assert!(!orphan.is_empty());
    let _agent = agent_process(&server, &node).await;

    let deadline = Instant::now() + PATIENCE;
    while !docker(&["ps", "-aq", "--filter", &format!("id={orphan}")]).is_empty() {
        assert!(Instant::now() < deadline, "the orphan container was not removed");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let i: Instance = client.get("default", "kept").await.unwrap();
    assert_eq!(status(&i).container_id, id, "the running container was replaced");
    assert_eq!(inspect(&id)["State"]["Running"], true);
    assert_eq!(status(&i).restart_count, 0);
    get(&status(&i).address, "/").await;
}

#[tokio::test]
async fn stratus_down_removes_the_containers_of_a_node() {
    let mut h = Harness::start("down").await;
    h.create("one", IMAGE, &[], "64Mi").await;
    let i = h.wait_for("one", "Ready", |i| status(i).ready).await;
    h.stop_agent().await;
    let id = status(&i).container_id;
    assert_eq!(inspect(&id)["State"]["Running"], true, "stopping the agent stopped its container");
    let out = Command::new(binary("stratus")).args(["down", "--node", h.node()]).output().expect("run stratus down");
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(out.status.success(), "{text}{}", String::from_utf8_lossy(&out.stderr));
    assert!(text.contains("1 Stratus container(s) removed"), "{text}");
    assert!(docker(&["ps", "-aq", "--filter", &format!("id={id}")]).is_empty(), "the container is still there");
}

/// A `stratus-agent` process joins a TLS API with a bootstrap token and the CA's pin alone: its
/// Node becomes Ready under its certificate's identity, its key and certificate are kept
/// private in its data directory, and the token cannot join another node.
#[tokio::test]
async fn an_agent_joins_with_a_bootstrap_token_and_its_node_becomes_ready() {
    use std::os::unix::fs::PermissionsExt;
    let server = TestServer::start_tls(Default::default()).await;
    let ca_pem = server.ca.as_ref().unwrap().cert_pem().to_string();
    let admin = Client::with_ca(&server.endpoint, Some(ca_pem.as_bytes())).unwrap().with_token(&server.token);
    let token = admin.create_bootstrap_token(None, 1, "e2e").await.unwrap().token;
    let hash = stratus_auth::pki::ca_cert_hash(&ca_pem).unwrap();
    let node = format!("e2e-join-{}", free_port());
    let _cleanup = NodeCleanup(node.clone());
    let dir = tempfile::tempdir().unwrap();
    let _agent = Proc(
        Command::new(binary("stratus-agent"))
            .args(["--join", &server.endpoint, "--ca-cert-hash", &hash, "--node-name", &node])
            .args(["--listen", "127.0.0.1:0", "--data-dir"])
            .arg(dir.path())
            .env("STRATUS_TOKEN", &token)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start stratus-agent"),
    );
    let deadline = Instant::now() + PATIENCE;
    loop {
        let ready = match admin.get::<stratus_api::v1::Node>("", &node).await {
            Ok(n) => n.status.unwrap_or_default().conditions.iter().any(|c| c.r#type == "Ready" && c.status == "True"),
            Err(stratus_client::Error::NotFound(_)) => false,
            Err(e) => panic!("reading node {node}: {e}"),
        };
        if ready {
            break;
        }
        assert!(Instant::now() < deadline, "node {node} did not become Ready within {PATIENCE:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    for file in ["node.key", "node.crt", "ca.crt"] {
        let mode = std::fs::metadata(dir.path().join("pki").join(file)).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "{file}");
    }
    // The token was used up by the join.
    let (_, csr) = stratus_auth::pki::client_request("system:node:another", "system:nodes").unwrap();
    let anonymous = Client::with_ca(&server.endpoint, Some(ca_pem.as_bytes())).unwrap();
    let refused = anonymous.node_certificate("another", &csr, Some(&token)).await;
    assert!(matches!(refused, Err(stratus_client::Error::Unauthenticated(_))), "{refused:?}");
}

//! The real binaries end to end: `stratus up`, `stratus-apiserver` on etcd and on the embedded
//! store, the `stratus` CLI against them, restarts and `kill -9`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use futures::StreamExt;
use stratus_api::Resource;
use stratus_api::v1::Service;
use stratus_client::{Client, ListParams, WatchEvent};
use stratus_testkit::{EtcdServer, binary, free_port, http_get};

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

/// Waits until the API server at `addr` answers /readyz.
async fn wait_ready(addr: &str, proc: &mut Proc) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Ok(Some(status)) = proc.0.try_wait() {
            panic!("the server exited before it was ready: {status}");
        }
        if http_get(addr, "/readyz").await.is_ok_and(|r| r.starts_with("HTTP/1.0 200") || r.starts_with("HTTP/1.1 200"))
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

/// Runs the CLI against `server`, presenting `token`, and returns its output.
fn stratus(server: &str, token: &str, args: &[&str]) -> Output {
    Command::new(binary("stratus"))
        .arg("--server")
        .arg(server)
        .args(args)
        .current_dir(repo_root())
        .env("STRATUS_CONFIG", "/nonexistent/stratus-config")
        .env("STRATUS_TOKEN", token)
        .output()
        .expect("run stratus")
}

/// Logs in as the first admin, whose password the server wrote to `password_file`.
async fn admin_token(server: &str, password_file: &Path) -> String {
    let password = std::fs::read_to_string(password_file).expect("the admin's password file");
    let token = Client::new(server).unwrap().login("admin", password.trim()).await.expect("the admin logs in");
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
    let server = format!("http://{addr}");
    let node = format!("e2e-up-{}", free_port());
    // `stratus up` leaves its workloads running when it stops; remove them when the test ends.
    let _cleanup = RemoveContainers(node.clone());
    let mut up = Proc(
        Command::new(binary("stratus"))
            .args(["up", "--listen", &addr, "--agent-listen", "127.0.0.1:0", "--gateway-listen", "127.0.0.1:0"])
            .args(["--node-name", &node, "--data-dir"])
            .arg(dir.path())
            .args(["-f", "manifests/hello.yaml", "-f", "manifests/knative-hello.yaml"])
            .current_dir(repo_root())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start stratus up"),
    );
    wait_ready(&addr, &mut up).await;
    let token = admin_token(&server, &dir.path().join("admin-password")).await;
    // The examples are applied right after the server answers; wait for them (bounded).
    let deadline = Instant::now() + Duration::from_secs(30);
    let listing = loop {
        let out = stratus(&server, &token, &["get", "services"]);
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
        let out = stratus(&server, &token, &["get", "node", &node]);
        let t = text(&out);
        if out.status.success() && t.lines().any(|l| l.starts_with(&node) && l.contains(" Ready")) {
            break;
        }
        assert!(Instant::now() < deadline, "the node never became Ready: {t}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// `stratus-apiserver --store etcd` keeps objects in etcd: they outlive the server process, and
/// a second server on the same etcd sees and streams the first one's writes.
#[tokio::test]
async fn apiservers_on_one_etcd_share_state() {
    let etcd = EtcdServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let password_file = dir.path().join("admin-password");
    let (a, b) = (format!("127.0.0.1:{}", free_port()), format!("127.0.0.1:{}", free_port()));
    let args = |listen: &str| {
        vec![
            "--store".to_string(),
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
    wait_ready(&a, &mut pa).await;
    // One login serves both servers: they sign and verify with the keys kept in etcd.
    let token = admin_token(&format!("http://{a}"), &password_file).await;

    let out = stratus(&format!("http://{a}"), &token, &["apply", "-f", "manifests/knative-hello.yaml"]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("service/hello-knative created"), "{}", text(&out));

    let b_args = args(&b);
    let mut pb = apiserver(&b_args.iter().map(String::as_str).collect::<Vec<_>>());
    wait_ready(&b, &mut pb).await;
    let out = stratus(&format!("http://{b}"), &token, &["get", "service", "hello-knative", "-o", "json"]);
    assert!(out.status.success(), "{}", text(&out));
    let obj: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(obj["apiVersion"], "stratus.dev/v1");
    assert_eq!(obj["spec"]["template"]["spec"]["containers"][0]["env"][0]["name"], "TARGET");

    // A watch through B sees a write through A.
    let client = |addr: &str| Client::new(&format!("http://{addr}")).unwrap().with_token(&token);
    let (ca, cb) = (client(&a), client(&b));
    let list = cb.list::<Service>(&ListParams::default()).await.unwrap();
    let mut w = cb.watch::<Service>(&ListParams::default(), &list.resource_version, false).await.unwrap();
    ca.create(service("cross")).await.unwrap();
    let ev = tokio::time::timeout(Duration::from_secs(10), w.next()).await.expect("event in time").unwrap().unwrap();
    assert!(matches!(ev, WatchEvent::Added(ref s) if s.meta().name == "cross"), "{ev:?}");

    // Both servers gone, a new one still has everything.
    drop(pa);
    drop(pb);
    let mut pc = apiserver(&a_args.iter().map(String::as_str).collect::<Vec<_>>());
    wait_ready(&a, &mut pc).await;
    let names: Vec<_> =
        ca.list::<Service>(&ListParams::default()).await.unwrap().items.iter().map(|s| s.meta().name.clone()).collect();
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
    let mut client = Client::new(&format!("http://{addr}")).unwrap();
    let mut acked = Vec::new();
    for round in 0..3 {
        let mut p = apiserver(&args);
        wait_ready(&addr, &mut p).await;
        if round == 0 {
            // The token outlives the restarts: the signing keys are in the store.
            client = client.with_token(&admin_token(&format!("http://{addr}"), &password_file).await);
        }
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
    wait_ready(&addr, &mut p).await;
    let stored: std::collections::HashSet<_> = client
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
    let out = stratus(&server, "", &["get", "services"]);
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
    wait_ready(&addr, &mut p).await;
    let server = format!("http://{addr}");
    for token in ["", "garbage", "eyJhbGciOiJub25lIn0.eyJzdWIiOiJhZG1pbiJ9."] {
        let out = stratus(&server, token, &["get", "services"]);
        assert!(!out.status.success(), "{token:?}: {}", text(&out));
        assert!(text(&out).contains("stratus login"), "{token:?}: {}", text(&out));
    }
    for path in ["/apis/stratus.dev/v1/namespaces/default/services", "/metrics", "/openapi.json", "/apis"] {
        let reply = http_get(&addr, path).await.unwrap();
        assert!(reply.lines().next().is_some_and(|l| l.contains(" 401 ")), "{path}: {reply}");
        assert!(reply.to_ascii_lowercase().contains("www-authenticate: bearer"), "{path}: {reply}");
    }
    for path in ["/healthz", "/readyz", "/.well-known/jwks.json", "/.well-known/openid-configuration"] {
        let reply = http_get(&addr, path).await.unwrap();
        assert!(reply.lines().next().is_some_and(|l| l.contains(" 200 ")), "{path}: {reply}");
    }
    let refused = Client::new(&server).unwrap().login("admin", "anything").await;
    assert!(matches!(refused, Err(stratus_client::Error::Unauthenticated(_))), "{refused:?}");
}

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
use stratus_testkit::{EtcdServer, binary, free_port, http_get, https_get};

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

//! Helpers for tests and benchmarks only: a real etcd server started on free loopback ports
//! (over TLS with client certificates if asked), and the paths of the workspace's built
//! binaries; behind features, a node agent under test over any runtime (`agent-harness`), a
//! node agent serving logs (`log-agent`) and a headless Chromium for the web console
//! (`console`); an OTLP trace receiver (`otlp`); a small tmpfs to fill up; a TCP relay whose connections can be cut. Failures panic with a clear message: this is
//! scaffolding, and a test that cannot set up must fail loudly, never skip.
#![allow(clippy::expect_used, clippy::unwrap_used)]

#[cfg(feature = "agent-harness")]
pub mod agent_harness;
#[cfg(feature = "console")]
pub mod console;
pub mod flood;
#[cfg(feature = "log-agent")]
pub mod log_agent;
#[cfg(feature = "otlp")]
pub mod otlp;
pub mod relay;
pub mod tmpfs;

use std::fs::File;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use tempfile::TempDir;

/// Where Debian's `etcd-server` package installs etcd.
pub const ETCD: &str = "/usr/bin/etcd";

/// How long a server may take to start.
const STARTUP: Duration = Duration::from_secs(30);

/// A real single-member etcd in a temporary directory; killed when dropped.
pub struct EtcdServer {
    /// The client URL, e.g. `http://127.0.0.1:40123` (`https://` for [`EtcdServer::start_tls`]).
    pub endpoint: String,
    /// What a client of an etcd started with [`EtcdServer::start_tls`] trusts and presents.
    pub tls: Option<EtcdClientTls>,
    /// Where etcd answers `/health` over plain HTTP, e.g. `127.0.0.1:40124`.
    health_addr: String,
    child: Child,
    dir: TempDir,
}

/// The client side of an etcd served over TLS: the CA that signed its serving certificate (for
/// `127.0.0.1`) and a client certificate it accepts (common name `stratus-apiserver`), as PEM
/// and as files in the server's directory (for flags such as `--etcd-cacert`).
pub struct EtcdClientTls {
    pub ca_pem: String,
    pub cert_pem: String,
    pub key_pem: String,
    pub ca_file: PathBuf,
    pub cert_file: PathBuf,
    pub key_file: PathBuf,
}

impl EtcdServer {
    /// Starts etcd on free loopback ports and waits until it accepts connections.
    ///
    /// # Panics
    /// When etcd is not installed (`hack/install-deps.sh` installs it) or does not start.
    pub async fn start() -> EtcdServer {
        EtcdServer::start_with(false).await
    }

    /// [`EtcdServer::start`], serving clients over TLS only (`https://`) and only those that
    /// present a certificate of its CA (`--client-cert-auth`): a fresh CA made with
    /// `stratus_auth::pki` signs its serving certificate for `127.0.0.1` and the client
    /// certificate in [`EtcdServer::tls`].
    ///
    /// # Panics
    /// As [`EtcdServer::start`], and when the certificates cannot be made.
    pub async fn start_tls() -> EtcdServer {
        EtcdServer::start_with(true).await
    }

    async fn start_with(tls: bool) -> EtcdServer {
        assert!(
            Path::new(ETCD).exists(),
            "{ETCD} is missing: install Debian's etcd-server package (hack/install-deps.sh does)"
        );
        let mut log = String::new();
        // A port found free can be taken by another process before etcd binds it: try again.
        for _ in 0..3 {
            let dir = tempfile::tempdir().expect("temporary directory");
            let (client, peer, metrics) = (free_port(), free_port(), free_port());
            let scheme = if tls { "https" } else { "http" };
            let client_url = format!("{scheme}://127.0.0.1:{client}");
            let peer_url = format!("http://127.0.0.1:{peer}");
            let health_addr = format!("127.0.0.1:{metrics}");
            let out = File::create(dir.path().join("etcd.log")).expect("etcd log file");
            let mut command = Command::new(ETCD);
            command
                .args(["--name", "t", "--data-dir"])
                .arg(dir.path().join("data"))
                .args(["--listen-client-urls", &client_url, "--advertise-client-urls", &client_url])
                .args(["--listen-peer-urls", &peer_url, "--initial-advertise-peer-urls", &peer_url])
                .args(["--initial-cluster", &format!("t={peer_url}"), "--initial-cluster-state", "new"])
                // /health over plain HTTP whatever the client URLs speak.
                .args(["--listen-metrics-urls", &format!("http://{health_addr}")])
                // Fast elections make the minimum lease TTL 1 s instead of 2 s.
                .args(["--heartbeat-interval", "10", "--election-timeout", "100"])
                .args(["--experimental-watch-progress-notify-interval", "200ms"])
                .stdout(out.try_clone().expect("etcd log file"))
                .stderr(out);
            let client_tls = tls.then(|| {
                let (server, client) = make_tls(dir.path());
                command.arg("--cert-file").arg(&server.0).arg("--key-file").arg(&server.1);
                command.arg("--trusted-ca-file").arg(&client.ca_file).arg("--client-cert-auth");
                client
            });
            let child = command.spawn().expect("start etcd");
            let mut server = EtcdServer { endpoint: client_url, tls: client_tls, health_addr, child, dir };
            if server.wait_healthy().await {
                return server;
            }
            log = server.log();
        }
        panic!("etcd did not start; its last log:\n{log}");
    }

    async fn wait_healthy(&mut self) -> bool {
        let deadline = Instant::now() + STARTUP;
        let addr = self.health_addr.clone();
        while Instant::now() < deadline {
            if matches!(self.child.try_wait(), Ok(Some(_))) {
                return false;
            }
            // etcd answers /health once it has a leader.
            if let Ok(body) = http_get(&addr, "/health").await
                && body.contains("\"health\":\"true\"")
            {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        false
    }

    /// What etcd has logged so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("etcd.log")).unwrap_or_default()
    }
}

impl Drop for EtcdServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Makes a CA in `dir`, a serving certificate for `127.0.0.1` and a client certificate
/// (`stratus-apiserver`), all written there; returns the server's certificate and key files
/// and the client's side.
fn make_tls(dir: &Path) -> ((PathBuf, PathBuf), EtcdClientTls) {
    use stratus_auth::pki::{Ca, Usage};
    let validity = Duration::from_secs(3600);
    let ca = Ca::generate().expect("make a CA");
    let server = ca.issue(Usage::Server, &["127.0.0.1".into()], validity).expect("issue etcd's certificate");
    let client = ca.issue(Usage::Client, &["stratus-apiserver".into()], validity).expect("issue a client certificate");
    let write = |name: &str, pem: &str| {
        let path = dir.join(name);
        std::fs::write(&path, pem).expect("write a TLS file");
        path
    };
    let server_files = (write("server.crt", &server.cert_pem), write("server.key", &server.key_pem));
    let client = EtcdClientTls {
        ca_file: write("ca.crt", ca.cert_pem()),
        cert_file: write("client.crt", &client.cert_pem),
        key_file: write("client.key", &client.key_pem),
        ca_pem: ca.cert_pem().to_string(),
        cert_pem: client.cert_pem,
        key_pem: client.key_pem,
    };
    (server_files, client)
}

/// A loopback port that was free a moment ago.
pub fn free_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind a loopback port");
    l.local_addr().expect("local address").port()
}

/// The path of a binary of this workspace, built in the same profile as the running test
/// (`hack/test.sh` builds them all before the tests run).
///
/// # Panics
/// When the binary has not been built.
pub fn binary(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("path of the test binary");
    // target/debug/deps/test-hash → target/debug
    let dir = exe.parent().and_then(Path::parent).expect("target directory");
    let path = dir.join(name);
    assert!(path.exists(), "{} is not built: run `cargo build --workspace --bins` first", path.display());
    path
}

/// A minimal HTTP/1.0 GET, enough to poll a health endpoint without an HTTP client crate.
pub async fn http_get(addr: &str, path: &str) -> std::io::Result<String> {
    http_get_as(addr, addr, path).await
}

/// [`http_get`] naming `host` in the request's Host header (a service, through a gateway).
pub async fn http_get_as(addr: &str, host: &str, path: &str) -> std::io::Result<String> {
    http_get_with_headers(addr, host, path, "").await
}

/// [`http_get_as`] sending `headers` too: whole lines, each ending in `\r\n`.
pub async fn http_get_with_headers(addr: &str, host: &str, path: &str, headers: &str) -> std::io::Result<String> {
    let s = tokio::time::timeout(Duration::from_secs(2), tokio::net::TcpStream::connect(addr)).await??;
    exchange(s, host, path, headers).await
}

/// [`http_get`] over TLS, trusting only `ca_pem` and checking the certificate names the host
/// of `addr`.
pub async fn https_get(addr: &str, path: &str, ca_pem: &[u8]) -> std::io::Result<String> {
    https_get_with_token(addr, path, ca_pem, "").await
}

/// [`https_get`] presenting `token` as a bearer token (none when empty).
pub async fn https_get_with_token(addr: &str, path: &str, ca_pem: &[u8], token: &str) -> std::io::Result<String> {
    let config = stratus_support::tls::client_config(ca_pem).map_err(std::io::Error::other)?;
    let host = addr.rsplit_once(':').map_or(addr, |(h, _)| h).trim_start_matches('[').trim_end_matches(']');
    let name = rustls::pki_types::ServerName::try_from(host.to_string()).map_err(std::io::Error::other)?;
    let connector = tokio_rustls::TlsConnector::from(std::sync::Arc::new(config));
    let s = tokio::time::timeout(Duration::from_secs(2), async {
        let tcp = tokio::net::TcpStream::connect(addr).await?;
        connector.connect(name, tcp).await
    })
    .await??;
    let authorization = if token.is_empty() { String::new() } else { format!("Authorization: Bearer {token}\r\n") };
    exchange(s, addr, path, &authorization).await
}

async fn exchange(
    mut s: impl tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
    host: &str,
    path: &str,
    headers: &str,
) -> std::io::Result<String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    s.write_all(format!("GET {path} HTTP/1.0\r\nHost: {host}\r\n{headers}\r\n").as_bytes()).await?;
    let mut out = String::new();
    // A TLS peer may close without close_notify after answering; what was read is the answer.
    match tokio::time::timeout(Duration::from_secs(2), s.read_to_string(&mut out)).await? {
        Ok(_) => Ok(out),
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof && !out.is_empty() => Ok(out),
        Err(e) => Err(e),
    }
}

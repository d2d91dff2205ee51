//! Helpers for tests and benchmarks only: a real etcd server started on free loopback ports,
//! and the paths of the workspace's built binaries; behind features, a node agent under test
//! over any runtime (`agent-harness`) and a node agent serving logs (`log-agent`). Failures
//! panic with a clear message: this is scaffolding, and a test that cannot set up must fail
//! loudly, never skip.
#![allow(clippy::expect_used, clippy::unwrap_used)]

#[cfg(feature = "agent-harness")]
pub mod agent_harness;
#[cfg(feature = "log-agent")]
pub mod log_agent;

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
    /// The client URL, e.g. `http://127.0.0.1:40123`.
    pub endpoint: String,
    child: Child,
    dir: TempDir,
}

impl EtcdServer {
    /// Starts etcd on free loopback ports and waits until it accepts connections.
    ///
    /// # Panics
    /// When etcd is not installed (`hack/install-deps.sh` installs it) or does not start.
    pub async fn start() -> EtcdServer {
        assert!(
            Path::new(ETCD).exists(),
            "{ETCD} is missing: install Debian's etcd-server package (hack/install-deps.sh does)"
        );
        let mut log = String::new();
        // A port found free can be taken by another process before etcd binds it: try again.
        for _ in 0..3 {
            let dir = tempfile::tempdir().expect("temporary directory");
            let (client, peer) = (free_port(), free_port());
            let client_url = format!("http://127.0.0.1:{client}");
            let peer_url = format!("http://127.0.0.1:{peer}");
            let out = File::create(dir.path().join("etcd.log")).expect("etcd log file");
            let child = Command::new(ETCD)
                .args(["--name", "t", "--data-dir"])
                .arg(dir.path().join("data"))
                .args(["--listen-client-urls", &client_url, "--advertise-client-urls", &client_url])
                .args(["--listen-peer-urls", &peer_url, "--initial-advertise-peer-urls", &peer_url])
                .args(["--initial-cluster", &format!("t={peer_url}"), "--initial-cluster-state", "new"])
                // Fast elections make the minimum lease TTL 1 s instead of 2 s.
                .args(["--heartbeat-interval", "10", "--election-timeout", "100"])
                .args(["--experimental-watch-progress-notify-interval", "200ms"])
                .stdout(out.try_clone().expect("etcd log file"))
                .stderr(out)
                .spawn()
                .expect("start etcd");
            let mut server = EtcdServer { endpoint: client_url, child, dir };
            if server.wait_healthy().await {
                return server;
            }
            log = server.log();
        }
        panic!("etcd did not start; its last log:\n{log}");
    }

    async fn wait_healthy(&mut self) -> bool {
        let deadline = Instant::now() + STARTUP;
        let addr = self.endpoint.trim_start_matches("http://").to_string();
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
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::time::timeout(Duration::from_secs(2), tokio::net::TcpStream::connect(addr)).await??;
    s.write_all(format!("GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n").as_bytes()).await?;
    let mut out = String::new();
    tokio::time::timeout(Duration::from_secs(2), s.read_to_string(&mut out)).await??;
    Ok(out)
}

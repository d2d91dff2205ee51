//! Startup, readiness and liveness probes, with Kubernetes' semantics: a probe runs every
//! `periodSeconds` with a `timeoutSeconds` deadline; `failureThreshold` consecutive failures
//! flip it to failing, `successThreshold` consecutive successes back. Until the first readiness
//! success, readiness is tried every few milliseconds (as Knative's queue-proxy does) so a cold
//! instance is Ready as soon as it listens. Without a readiness probe, readiness is a TCP
//! connect to the serving port.
//!
//! Probes reach the container through its published port on the host, so they may only target
//! the serving port (0 or the container port).

use std::time::Duration;

use std::net::SocketAddr;
use stratus_api::v1::Probe;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use tokio::net::TcpStream;
use tokio::sync::watch;

/// How long a TCP probe's connection must stay open to count as reaching a listener.
const TCP_SETTLE: Duration = Duration::from_millis(30);

/// How often readiness is tried before its first success.
const EAGER_PERIOD: Duration = Duration::from_millis(5);

/// What the probes found so far.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ProbeStatus {
    /// The startup probe succeeded (or there is none).
    pub started: bool,
    pub ready: bool,
    /// The liveness or startup probe failed past its threshold: restart the container.
    pub failed: bool,
    /// Why, for the instance's status (the last failure's message).
    pub message: String,
    /// A connection to the container's own address succeeded from here: the agent may
    /// advertise that address to gateways on this host.
    pub direct: bool,
}

/// One probe, resolved against the container's address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProbeSpec {
    pub action: Action,
    pub initial_delay: Duration,
    pub period: Duration,
    pub timeout: Duration,
    pub success_threshold: u32,
    pub failure_threshold: u32,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    Tcp,
    Http { path: String, headers: Vec<(String, String)> },
}

impl ProbeSpec {
    /// The spec of `probe` for a container serving on `port`; an error names the field at fault.
    pub fn from_api(probe: &Probe, port: i32, field: &str) -> Result<ProbeSpec, String> {
        let secs = |v: i32, default: u64| {
            if v > 0 { Duration::from_secs(u64::try_from(v).unwrap_or(default)) } else { Duration::from_secs(default) }
        };
        let count = |v: i32, default: u32| if v > 0 { u32::try_from(v).unwrap_or(default) } else { default };
        let action = match (&probe.http_get, &probe.tcp_socket) {
            (Some(h), _) => {
                check_port(h.port, port, &format!("{field}.httpGet.port"))?;
                let path = if h.path.is_empty() { "/".to_string() } else { h.path.clone() };
                Action::Http {
                    path,
                    headers: h.http_headers.iter().map(|x| (x.name.clone(), x.value.clone())).collect(),
                }
            }
            (None, Some(t)) => {
                check_port(t.port, port, &format!("{field}.tcpSocket.port"))?;
                Action::Tcp
            }
            (None, None) => return Err(format!("{field}: no httpGet or tcpSocket")),
        };
        Ok(ProbeSpec {
            action,
            initial_delay: if probe.initial_delay_seconds > 0 {
                secs(probe.initial_delay_seconds, 0)
            } else {
                Duration::ZERO
            },
            period: secs(probe.period_seconds, 10),
            timeout: secs(probe.timeout_seconds, 1),
            success_threshold: count(probe.success_threshold, 1),
            failure_threshold: count(probe.failure_threshold, 3),
        })
    }

    /// The readiness probe used when the container declares none.
    pub fn default_readiness() -> ProbeSpec {
        ProbeSpec {
            action: Action::Tcp,
            initial_delay: Duration::ZERO,
            period: Duration::from_secs(10),
            timeout: Duration::from_secs(1),
            success_threshold: 1,
            failure_threshold: 3,
        }
    }
}

fn check_port(probe_port: i32, port: i32, field: &str) -> Result<(), String> {
    if probe_port == 0 || probe_port == port {
        Ok(())
    } else {
        Err(format!("{field}: {probe_port} is not the serving port {port}; only the serving port can be probed"))
    }
}

/// Probes a container at `address` (host:port) until dropped, publishing what it finds.
pub struct Prober {
    task: tokio::task::JoinHandle<()>,
    status: watch::Receiver<ProbeStatus>,
}

impl Drop for Prober {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Prober {
    /// Starts probing. `changed` is called after every change of the status.
    pub fn start(
        address: String,
        direct: Option<SocketAddr>,
        startup: Option<ProbeSpec>,
        readiness: ProbeSpec,
        liveness: Option<ProbeSpec>,
        changed: impl Fn() + Send + Sync + 'static,
    ) -> Prober {
        let (tx, status) = watch::channel(ProbeStatus { started: startup.is_none(), ..Default::default() });
        let task = tokio::spawn(async move {
            let direct = Direct::new(direct);
            let publish = |f: &dyn Fn(&mut ProbeStatus)| {
                let mut changed_now = false;
                tx.send_if_modified(|s| {
                    let before = s.clone();
                    f(s);
                    changed_now = *s != before;
                    changed_now
                });
                if changed_now {
                    changed();
                }
            };
            if let Some(spec) = startup {
                tokio::time::sleep(spec.initial_delay).await;
                let mut failures = 0;
                loop {
                    match check(&address, &direct, &spec).await {
                        Ok(()) => {
                            publish(&|s| s.started = true);
                            break;
                        }
                        Err(e) => {
                            failures += 1;
                            if failures >= spec.failure_threshold {
                                publish(&|s| {
                                    s.failed = true;
                                    s.message = format!("startup probe failed: {e}");
                                });
                                return;
                            }
                        }
                    }
                    tokio::time::sleep(spec.period).await;
                }
            }
            let readiness_loop = async {
                tokio::time::sleep(readiness.initial_delay).await;
                let (mut successes, mut failures, mut ever_ready) = (0u32, 0u32, false);
                loop {
                    let checked = check(&address, &direct, &readiness).await;
                    if direct.reached() {
                        publish(&|s| s.direct = true);
                    }
                    match checked {
                        Ok(()) => {
                            failures = 0;
                            successes += 1;
                            if successes >= readiness.success_threshold || !ever_ready {
                                ever_ready = true;
                                publish(&|s| {
                                    s.ready = true;
                                    if !s.failed {
                                        s.message.clear();
                                    }
                                });
                            }
                        }
                        Err(e) => {
                            successes = 0;
                            failures += 1;
                            if !ever_ready || failures >= readiness.failure_threshold {
                                let msg = format!("readiness probe failed: {e}");
                                publish(&|s| {
                                    s.ready = false;
                                    if !s.failed {
                                        s.message = msg.clone();
                                    }
                                });
                            }
                        }
                    }
                    tokio::time::sleep(if ever_ready { readiness.period } else { EAGER_PERIOD }).await;
                }
            };
            let liveness_loop = async {
                let Some(spec) = liveness else { return std::future::pending::<()>().await };
                tokio::time::sleep(spec.initial_delay).await;
                let mut failures = 0;
                loop {
                    match check(&address, &direct, &spec).await {
                        Ok(()) => failures = 0,
                        Err(e) => {
                            failures += 1;
                            if failures >= spec.failure_threshold {
                                publish(&|s| {
                                    s.failed = true;
                                    s.ready = false;
                                    s.message = format!("liveness probe failed: {e}");
                                });
                                return std::future::pending::<()>().await;
                            }
                        }
                    }
                    tokio::time::sleep(spec.period).await;
                }
            };
            tokio::join!(readiness_loop, liveness_loop);
        });
        Prober { task, status }
    }

    pub fn status(&self) -> ProbeStatus {
        self.status.borrow().clone()
    }
}

/// The container's own address, for TCP probes: tried first, briefly; a connection there means
/// the workload listens. Once it cannot be reached at all (a timeout: no route from here), it
/// is not tried again.
struct Direct {
    address: Option<SocketAddr>,
    reachable: std::sync::atomic::AtomicBool,
    /// A connection there succeeded once.
    reached: std::sync::atomic::AtomicBool,
}

impl Direct {
    fn new(address: Option<SocketAddr>) -> Direct {
        Direct {
            address,
            reachable: std::sync::atomic::AtomicBool::new(true),
            reached: std::sync::atomic::AtomicBool::new(false),
        }
    }

    fn reached(&self) -> bool {
        self.reached.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Whether the workload listens, as seen on its own address; `false` when unknown.
    async fn listens(&self) -> bool {
        let Some(address) = self.address else { return false };
        if !self.reachable.load(std::sync::atomic::Ordering::Relaxed) {
            return false;
        }
        match tokio::time::timeout(DIRECT_CONNECT, TcpStream::connect(address)).await {
            Ok(Ok(_)) => {
                self.reached.store(true, std::sync::atomic::Ordering::Relaxed);
                true
            }
            // Refused: nothing listens yet (the published port would say the same, slower).
            Ok(Err(_)) => false,
            Err(_) => {
                self.reachable.store(false, std::sync::atomic::Ordering::Relaxed);
                false
            }
        }
    }
}

/// How long connecting to a container's own address may take: it is on this host.
const DIRECT_CONNECT: Duration = Duration::from_millis(50);

/// Runs one probe.
async fn check(address: &str, direct: &Direct, spec: &ProbeSpec) -> Result<(), String> {
    match spec.action {
        Action::Tcp if direct.listens().await => return Ok(()),
        Action::Tcp => {}
        // An HTTP probe goes through the published port; the container's address is only
        // tried, until it answers once, to learn whether it can be advertised.
        Action::Http { .. } if !direct.reached() => {
            direct.listens().await;
        }
        Action::Http { .. } => {}
    }
    let attempt = async {
        let mut stream = TcpStream::connect(address).await.map_err(|e| format!("dial tcp {address}: {e}"))?;
        let Action::Http { path, headers } = &spec.action else {
            // A published port is held open by the engine's proxy whether or not the container
            // listens; the proxy then closes the connection at once. Only a connection that
            // stays open (or greets us) reached a listener.
            let mut byte = [0u8; 1];
            return match tokio::time::timeout(TCP_SETTLE, stream.read(&mut byte)).await {
                Ok(Ok(0)) => {
                    Err(format!("dial tcp {address}: the connection was closed: nothing listens in the container"))
                }
                Ok(Err(e)) => Err(format!("dial tcp {address}: {e}")),
                Ok(Ok(_)) | Err(_) => Ok(()),
            };
        };
        let mut request = format!(
            "GET {path} HTTP/1.1\r\nHost: {address}\r\nUser-Agent: stratus-probe/1.0\r\nAccept: */*\r\nConnection: close\r\n"
        );
        for (name, value) in headers {
            request.push_str(&format!("{name}: {value}\r\n"));
        }
        request.push_str("\r\n");
        stream.write_all(request.as_bytes()).await.map_err(|e| format!("sending the probe to {address}: {e}"))?;
        let mut head = [0u8; 64];
        let n = stream.read(&mut head).await.map_err(|e| format!("reading the probe's answer: {e}"))?;
        let line = String::from_utf8_lossy(&head[..n]);
        let code = line.split_whitespace().nth(1).and_then(|c| c.parse::<u16>().ok());
        match code {
            Some(c) if (200..400).contains(&c) => Ok(()),
            Some(c) => Err(format!("HTTP probe to {path} failed with status code {c}")),
            None => Err(format!("HTTP probe to {path}: no HTTP answer")),
        }
    };
    match tokio::time::timeout(spec.timeout, attempt).await {
        Ok(r) => r,
        Err(_) => Err(format!("probe to {address} timed out after {:?}", spec.timeout)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};
    use stratus_api::v1::{HttpGetAction, TcpSocketAction};

    async fn http_server(healthy: Arc<AtomicBool>) -> String {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr").to_string();
        tokio::spawn(async move {
            while let Ok((mut s, _)) = listener.accept().await {
                let code = if healthy.load(Ordering::SeqCst) { 200 } else { 503 };
                let mut buf = [0u8; 1024];
                let _ = s.read(&mut buf).await;
                let _ = s.write_all(format!("HTTP/1.1 {code} X\r\ncontent-length: 0\r\n\r\n").as_bytes()).await;
            }
        });
        addr
    }

    fn fast(action: Action, failure_threshold: u32) -> ProbeSpec {
        ProbeSpec {
            action,
            initial_delay: Duration::ZERO,
            period: Duration::from_millis(20),
            timeout: Duration::from_secs(1),
            success_threshold: 1,
            failure_threshold,
        }
    }

    async fn wait_for(p: &Prober, f: impl Fn(&ProbeStatus) -> bool) -> ProbeStatus {
        let mut rx = p.status.clone();
        let got = tokio::time::timeout(Duration::from_secs(10), rx.wait_for(|s| f(s))).await;
        got.expect("probe status in time").expect("prober alive").clone()
    }

    #[tokio::test]
    async fn readiness_follows_the_http_answer() {
        let healthy = Arc::new(AtomicBool::new(true));
        let addr = http_server(healthy.clone()).await;
        let spec = fast(Action::Http { path: "/healthz".into(), headers: vec![] }, 2);
        let p = Prober::start(addr, None, None, spec, None, || {});
        wait_for(&p, |s| s.ready).await;
        healthy.store(false, Ordering::SeqCst);
        let s = wait_for(&p, |s| !s.ready).await;
        assert!(s.message.contains("status code 503"), "{}", s.message);
        healthy.store(true, Ordering::SeqCst);
        wait_for(&p, |s| s.ready).await;
    }

    #[tokio::test]
    async fn liveness_failure_asks_for_a_restart() {
        let healthy = Arc::new(AtomicBool::new(false));
        let addr = http_server(healthy).await;
        let live = fast(Action::Http { path: "/".into(), headers: vec![] }, 3);
        let p = Prober::start(addr, None, None, fast(Action::Tcp, 3), Some(live), || {});
        let s = wait_for(&p, |s| s.failed).await;
        assert!(s.message.starts_with("liveness probe failed"), "{}", s.message);
    }

    #[tokio::test]
    async fn nothing_listening_is_never_ready_and_says_why() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = listener.local_addr().expect("addr").to_string();
        drop(listener);
        let p = Prober::start(addr, None, None, fast(Action::Tcp, 1), None, || {});
        let s = wait_for(&p, |s| !s.message.is_empty()).await;
        assert!(!s.ready);
        assert!(s.message.contains("dial tcp"), "{}", s.message);
    }

    /// The engine's userland proxy accepts a connection to a published port whether or not the
    /// workload listens, and closes it at once when it does not: a TCP probe believes the
    /// container's own address first, where a refused connection is an answer.
    #[tokio::test]
    async fn a_tcp_probe_believes_the_container_address_over_a_proxy_that_accepts_anything() {
        let proxy = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let published = proxy.local_addr().expect("addr").to_string();
        tokio::spawn(async move {
            while let Ok((s, _)) = proxy.accept().await {
                drop(s);
            }
        });
        let free = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let container = free.local_addr().expect("addr");
        drop(free);
        let p = Prober::start(published, Some(container), None, fast(Action::Tcp, 1), None, || {});
        let s = wait_for(&p, |s| !s.message.is_empty()).await;
        assert!(!s.ready, "nothing listens in the container yet");
        assert!(!s.direct, "the container's address has not answered");
        assert!(s.message.contains("nothing listens"), "{}", s.message);
        let _workload = std::net::TcpListener::bind(container).expect("bind the container's port");
        let s = wait_for(&p, |s| s.ready).await;
        assert!(s.direct, "ready through the container's address, which may be advertised");
    }

    /// An HTTP probe goes through the published port, and tries the container's address only
    /// to learn whether it answers (so that it may be advertised).
    #[tokio::test]
    async fn an_http_probe_learns_whether_the_container_address_answers() {
        let healthy = Arc::new(AtomicBool::new(true));
        let addr = http_server(healthy).await;
        let container: std::net::SocketAddr = addr.parse().expect("an address");
        let spec = fast(Action::Http { path: "/healthz".into(), headers: vec![] }, 1);
        let p = Prober::start(addr.clone(), Some(container), None, spec.clone(), None, || {});
        let s = wait_for(&p, |s| s.ready && s.direct).await;
        assert!(s.message.is_empty(), "{}", s.message);
        // A container address that refuses: ready through the published port, not advertised.
        let free = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let refusing = free.local_addr().expect("addr");
        drop(free);
        let p = Prober::start(addr, Some(refusing), None, spec, None, || {});
        let s = wait_for(&p, |s| s.ready).await;
        assert!(!s.direct);
    }

    #[test]
    fn only_the_serving_port_can_be_probed() {
        let probe =
            Probe { tcp_socket: Some(TcpSocketAction { port: 9090, host: String::new() }), ..Default::default() };
        let err = ProbeSpec::from_api(&probe, 8080, "readinessProbe").expect_err("other port");
        assert!(err.contains("readinessProbe.tcpSocket.port"), "{err}");
        let probe = Probe {
            http_get: Some(HttpGetAction { port: 0, ..Default::default() }),
            period_seconds: 3,
            ..Default::default()
        };
        let spec = ProbeSpec::from_api(&probe, 8080, "livenessProbe").expect("serving port");
        assert_eq!(spec.period, Duration::from_secs(3));
        assert_eq!(spec.failure_threshold, 3);
        assert_eq!(spec.action, Action::Http { path: "/".into(), headers: vec![] });
    }
}

//! `hello`: the example workload of Stratus, and the one image every Docker test runs.
//!
//! By default it is a tiny HTTP server on `0.0.0.0:$PORT` (8080): `/` answers
//! `Hello {TARGET}! from {instance}`, `/healthz` answers 200, and any path takes the query knobs
//! `sleep_ms=N` (wait before answering), `cpu_ms=N` (burn CPU that long), `exclusive=1` (fail with
//! 500 when another exclusive request is in flight) and `status=N` (answer
//! with that status). It logs one line per request to stdout, and on SIGTERM stops accepting,
//! finishes the requests in flight and exits 0 — it runs as PID 1 in a container, where nothing
//! else would handle the signal.
//!
//! The first argument picks a mode, so that one image serves every test through the Kubernetes
//! `args` field:
//!
//! | mode | behaviour |
//! |---|---|
//! | `serve` (default) | the HTTP server above |
//! | `env` | the HTTP server, plus `GET /env`: a JSON report of the environment the container got, `GET /headers` and `GET /dial` (below) |
//! | `crash` | prints a line to stderr and exits 3 after about 200 ms |
//! | `never-ready` | never listens; waits for SIGTERM and exits 0 |
//! | `oom` | allocates and touches memory in 16 MiB steps until the kernel kills it |
//!
//! `GET /headers` (env mode only) answers the request's headers as JSON (`{"name": ["value"]}`):
//! what reached the workload through the gateway.
//!
//! `GET /dial?addr=IP:PORT` (env mode only) is a test aid for network isolation: it opens a TCP
//! connection to that address (an IP literal, no name lookup), closes it at once without
//! sending anything, and reports `{"addr", "connected", "error"}` as JSON. It gives up after
//! `timeout_ms` (default 1000, at most 5000), so a test of a blocked address stays short.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::fmt;
use std::io::{Read, Write};
use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::header::{CONTENT_TYPE, HeaderValue};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;
use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::watch;

const USAGE: &str = "usage: hello [serve|env|crash|never-ready|oom]";

/// Knob values above this are refused: a typo must not pin a thread for days.
const MAX_KNOB_MS: u64 = 3_600_000;

/// How long `/dial` waits for a connection by default, and at most.
const DIAL_TIMEOUT: Duration = Duration::from_millis(1000);
const MAX_DIAL_TIMEOUT: Duration = Duration::from_millis(5000);

/// The step of the `oom` mode.
const OOM_STEP: usize = 16 << 20;

/// Where the `oom` mode gives up when nothing limits its memory, so that running it by mistake
/// outside a limited container does not exhaust the host.
const OOM_UNLIMITED_CAP: u64 = 1 << 30;

/// A cgroup v1 memory limit at or above this means "no limit" (the kernel reports
/// `PAGE_COUNTER_MAX` pages, about 2^63 bytes).
const CGROUP_V1_UNLIMITED: u64 = 1 << 62;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    Serve,
    Env,
    Crash,
    NeverReady,
    Oom,
}

impl Mode {
    const ALL: [Mode; 5] = [Mode::Serve, Mode::Env, Mode::Crash, Mode::NeverReady, Mode::Oom];

    /// The first argument that selects the mode.
    fn name(self) -> &'static str {
        match self {
            Mode::Serve => "serve",
            Mode::Env => "env",
            Mode::Crash => "crash",
            Mode::NeverReady => "never-ready",
            Mode::Oom => "oom",
        }
    }
}

fn main() -> ExitCode {
    let mode = match std::env::args().nth(1) {
        None => Mode::Serve,
        Some(name) => match Mode::ALL.into_iter().find(|mode| mode.name() == name) {
            Some(mode) => mode,
            None => {
                err(format_args!("hello: unknown mode {name:?}; {USAGE}"));
                return ExitCode::from(2);
            }
        },
    };
    match mode {
        Mode::Crash => crash(),
        Mode::Oom => oom(),
        Mode::Serve | Mode::Env | Mode::NeverReady => {
            let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
                Ok(runtime) => runtime,
                Err(e) => {
                    err(format_args!("hello: cannot start the async runtime: {e}"));
                    return ExitCode::FAILURE;
                }
            };
            runtime.block_on(async {
                let outcome = if mode == Mode::NeverReady { never_ready().await } else { serve(mode).await };
                match outcome {
                    Ok(()) => ExitCode::SUCCESS,
                    Err(e) => {
                        err(format_args!("hello: {e}"));
                        ExitCode::FAILURE
                    }
                }
            })
        }
    }
}

/// Writes one line to stdout. A closed stdout must not kill the server (as `println!` would by
/// panicking), so write errors are ignored.
fn out(line: fmt::Arguments<'_>) {
    let mut stdout = std::io::stdout().lock();
    let _ = writeln!(stdout, "{line}");
    let _ = stdout.flush();
}

/// Writes one line to stderr, ignoring errors for the same reason as [`out`].
fn err(line: fmt::Arguments<'_>) {
    let _ = writeln!(std::io::stderr().lock(), "{line}");
}

fn crash() -> ExitCode {
    out(format_args!("hello: mode crash, exiting with code 3 in 200 ms"));
    // Long enough to be seen running, short enough to keep crash-loop tests fast.
    std::thread::sleep(Duration::from_millis(200));
    err(format_args!("hello: crashing on purpose"));
    ExitCode::from(3)
}

fn oom() -> ExitCode {
    let limit = memory_limit().ok().flatten();
    // Past twice a known limit the kernel should long have stepped in; say so instead of
    // growing forever.
    let cap = limit.map_or(OOM_UNLIMITED_CAP, |limit| limit.saturating_mul(2));
    out(format_args!("hello: mode oom, memory limit {limit:?} bytes, allocating in 16 MiB steps"));
    let mut held: Vec<Vec<u8>> = Vec::new();
    let mut total: u64 = 0;
    while total < cap {
        // Non-zero bytes, so that every page is written and really counted against the cgroup
        // (zeroed allocations may be mapped lazily).
        held.push(std::hint::black_box(vec![0xa5_u8; OOM_STEP]));
        total += OOM_STEP as u64;
        out(format_args!("hello: holding {} MiB", total >> 20));
    }
    err(format_args!("hello: holding {} MiB and still alive; giving up", total >> 20));
    ExitCode::FAILURE
}

async fn never_ready() -> Result<(), String> {
    let mut sigterm = signal(SignalKind::terminate()).map_err(|e| format!("cannot handle SIGTERM: {e}"))?;
    out(format_args!("hello: mode never-ready, not listening"));
    sigterm.recv().await;
    out(format_args!("hello: received SIGTERM, exiting"));
    Ok(())
}

/// What every request handler reads.
struct Context {
    target: String,
    instance: String,
    /// `Some` in `env` mode only: the outcome of the one read of stdin made at startup (the
    /// watched value stays `None` until that read returns).
    stdin: Option<watch::Receiver<Option<StdinState>>>,
    /// Requests with `?exclusive=1` in flight: such a request fails if it overlaps another.
    exclusive: std::sync::atomic::AtomicUsize,
}

/// Holds one `exclusive` slot until dropped.
struct Exclusive<'a>(&'a std::sync::atomic::AtomicUsize);

impl Drop for Exclusive<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
    }
}

async fn serve(mode: Mode) -> Result<(), String> {
    // Installed before listening, so that a SIGTERM arriving as soon as the port answers is
    // handled rather than fatal.
    let mut sigterm = signal(SignalKind::terminate()).map_err(|e| format!("cannot handle SIGTERM: {e}"))?;
    let mut sigint = signal(SignalKind::interrupt()).map_err(|e| format!("cannot handle SIGINT: {e}"))?;

    let port = match std::env::var("PORT") {
        Ok(port) if !port.is_empty() => port.parse::<u16>().map_err(|e| format!("PORT={port:?} is not a port: {e}"))?,
        _ => 8080,
    };
    let context = Arc::new(Context {
        target: std::env::var("TARGET").unwrap_or_else(|_| "World".to_owned()),
        instance: instance_name(),
        stdin: (mode == Mode::Env).then(watch_stdin),
        exclusive: Default::default(),
    });

    let address = SocketAddr::from(([0, 0, 0, 0], port));
    let listener = TcpListener::bind(address).await.map_err(|e| format!("cannot listen on {address}: {e}"))?;
    out(format_args!("hello: mode {}, listening on {address} as {}", mode.name(), context.instance));

    let graceful = GracefulShutdown::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let (stream, _) = match accepted {
                    Ok(accepted) => accepted,
                    Err(e) => {
                        // Usually transient (out of file descriptors, a connection reset before
                        // it was accepted): report, pause briefly so as not to spin, go on.
                        err(format_args!("hello: accept failed: {e}"));
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                let context = context.clone();
                let service = service_fn(move |request| handle(request, context.clone()));
                let connection = http1::Builder::new().serve_connection(TokioIo::new(stream), service);
                let connection = graceful.watch(connection);
                tokio::spawn(async move {
                    if let Err(e) = connection.await {
                        err(format_args!("hello: connection error: {e}"));
                    }
                });
            }
            _ = sigterm.recv() => {
                out(format_args!("hello: received SIGTERM, draining"));
                break;
            }
            _ = sigint.recv() => {
                out(format_args!("hello: received SIGINT, draining"));
                break;
            }
        }
    }
    // New connections are refused from here on; those open finish their current request (idle
    // keep-alive connections close at once).
    drop(listener);
    let open = graceful.count();
    graceful.shutdown().await;
    out(format_args!("hello: drained {open} connection(s), exiting"));
    Ok(())
}

/// The name this instance answers with: the container's hostname.
fn instance_name() -> String {
    if let Ok(name) = std::env::var("HOSTNAME")
        && !name.is_empty()
    {
        return name;
    }
    match std::fs::read_to_string("/etc/hostname") {
        Ok(name) if !name.trim().is_empty() => name.trim().to_owned(),
        _ => "unknown".to_owned(),
    }
}

async fn handle(request: Request<Incoming>, context: Arc<Context>) -> Result<Response<Full<Bytes>>, Infallible> {
    let started = Instant::now();
    let response = respond(&request, &context).await;
    let target = request.uri().path_and_query().map_or("/", |p| p.as_str());
    out(format_args!(
        "{} {} {} {}ms",
        request.method(),
        target,
        response.status().as_u16(),
        started.elapsed().as_millis()
    ));
    Ok(response)
}

async fn respond(request: &Request<Incoming>, context: &Context) -> Response<Full<Bytes>> {
    let knobs = match Knobs::parse(request.uri().query().unwrap_or("")) {
        Ok(knobs) => knobs,
        Err(message) => return text(StatusCode::BAD_REQUEST, message),
    };
    let _slot = if knobs.exclusive {
        let others = context.exclusive.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        let slot = Exclusive(&context.exclusive);
        if others > 0 {
            return text(StatusCode::INTERNAL_SERVER_ERROR, format!("{others} other exclusive request(s) in flight"));
        }
        Some(slot)
    } else {
        None
    };
    if let Some(sleep) = knobs.sleep {
        tokio::time::sleep(sleep).await;
    }
    if let Some(cpu) = knobs.cpu {
        // On a blocking thread, so that other requests keep being served meanwhile.
        if let Err(e) = tokio::task::spawn_blocking(move || burn_cpu(cpu)).await {
            return text(StatusCode::INTERNAL_SERVER_ERROR, format!("burning CPU failed: {e}"));
        }
    }
    if let Some(status) = knobs.status {
        return text(status, format!("{} as requested", status));
    }
    match request.uri().path() {
        "/" => text(StatusCode::OK, format!("Hello {}! from {}", context.target, context.instance)),
        "/healthz" => text(StatusCode::OK, "ok".to_owned()),
        "/env" => match &context.stdin {
            Some(stdin) => json(&environment_report(stdin.clone()).await),
            None => text(StatusCode::NOT_FOUND, "/env is served in env mode only".to_owned()),
        },
        "/headers" if context.stdin.is_some() => json(&request_headers(request.headers())),
        "/dial" if context.stdin.is_some() => match dial_request(request.uri().query().unwrap_or("")) {
            Ok((addr, timeout)) => json(&dial(addr, timeout).await),
            Err(message) => text(StatusCode::BAD_REQUEST, message),
        },
        path => text(StatusCode::NOT_FOUND, format!("no such path: {path}")),
    }
}

/// The request's headers as JSON, each name with its values (the test aid `/headers`: what
/// the gateway forwarded, such as the `traceparent` it gave the request).
fn request_headers(headers: &hyper::HeaderMap) -> serde_json::Value {
    let mut out = serde_json::Map::new();
    for name in headers.keys() {
        let values = headers.get_all(name).iter().map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned());
        out.insert(name.as_str().to_owned(), values.collect::<Vec<_>>().into());
    }
    serde_json::Value::Object(out)
}

/// The address and timeout of a `/dial` request: `addr=IP:PORT`, optional `timeout_ms`.
fn dial_request(query: &str) -> Result<(SocketAddr, Duration), String> {
    let mut addr = None;
    let mut timeout = DIAL_TIMEOUT;
    for pair in query.split('&').filter(|pair| !pair.is_empty()) {
        let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
        match name {
            "addr" => {
                let parsed = value.parse::<SocketAddr>().map_err(|_| format!("addr={value:?} is not IP:PORT"))?;
                addr = Some(parsed);
            }
            "timeout_ms" => timeout = parse_ms(name, value)?.min(MAX_DIAL_TIMEOUT),
            _ => {}
        }
    }
    Ok((addr.ok_or("addr=IP:PORT is required")?, timeout))
}

/// Tries one TCP connection to `addr`, closing it at once; the outcome as JSON.
async fn dial(addr: SocketAddr, timeout: Duration) -> serde_json::Value {
    let error = match tokio::time::timeout(timeout, tokio::net::TcpStream::connect(addr)).await {
        Ok(Ok(_stream)) => None,
        Ok(Err(e)) => Some(e.to_string()),
        Err(_) => Some(format!("timed out after {}ms", timeout.as_millis())),
    };
    serde_json::json!({ "addr": addr.to_string(), "connected": error.is_none(), "error": error })
}

/// A plain-text response; the body ends with a newline so that `curl` output reads well.
fn text(status: StatusCode, mut body: String) -> Response<Full<Bytes>> {
    body.push('\n');
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    response.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static("text/plain; charset=utf-8"));
    response
}

fn json(value: &serde_json::Value) -> Response<Full<Bytes>> {
    let mut body = value.to_string();
    body.push('\n');
    let mut response = Response::new(Full::new(Bytes::from(body)));
    response.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    response
}

/// The query knobs every path accepts.
#[derive(Debug, Default, PartialEq, Eq)]
struct Knobs {
    sleep: Option<Duration>,
    cpu: Option<Duration>,
    status: Option<StatusCode>,
    /// Fail with 500 if another exclusive request is in flight (for concurrency tests).
    exclusive: bool,
}

impl Knobs {
    /// Parses `sleep_ms`, `cpu_ms` and `status` from a query string; other parameters are
    /// ignored, a bad value of a known one is an error naming it.
    fn parse(query: &str) -> Result<Knobs, String> {
        let mut knobs = Knobs::default();
        for pair in query.split('&').filter(|pair| !pair.is_empty()) {
            let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
            match name {
                "sleep_ms" => knobs.sleep = Some(parse_ms(name, value)?),
                "cpu_ms" => knobs.cpu = Some(parse_ms(name, value)?),
                "exclusive" => knobs.exclusive = !matches!(value, "0" | "false"),
                "status" => {
                    let status = value
                        .parse::<u16>()
                        .ok()
                        .and_then(|code| StatusCode::from_u16(code).ok())
                        .ok_or_else(|| format!("status={value:?} is not an HTTP status (100-999)"))?;
                    knobs.status = Some(status);
                }
                _ => {}
            }
        }
        Ok(knobs)
    }
}

fn parse_ms(name: &str, value: &str) -> Result<Duration, String> {
    match value.parse::<u64>() {
        Ok(ms) if ms <= MAX_KNOB_MS => Ok(Duration::from_millis(ms)),
        _ => Err(format!("{name}={value:?} is not a number of milliseconds (0-{MAX_KNOB_MS})")),
    }
}

/// Keeps one CPU busy for `duration` of wall-clock time (under a CPU limit that is less CPU
/// time, which is what a throttled request would see too).
fn burn_cpu(duration: Duration) {
    let end = Instant::now() + duration;
    let mut x: u64 = 1;
    while Instant::now() < end {
        for _ in 0..10_000 {
            x = std::hint::black_box(x.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1));
        }
    }
}

/// What a single read of stdin returned.
#[derive(Debug, Clone, PartialEq, Eq)]
enum StdinState {
    Eof,
    Data,
    Error(String),
}

/// Reads one byte of stdin on a thread of its own, once: with stdin open but idle the read
/// blocks forever, which must cost neither a request nor a runtime thread.
fn watch_stdin() -> watch::Receiver<Option<StdinState>> {
    let (sender, receiver) = watch::channel(None);
    std::thread::spawn(move || {
        let mut byte = [0_u8; 1];
        let state = match std::io::stdin().lock().read(&mut byte) {
            Ok(0) => StdinState::Eof,
            Ok(_) => StdinState::Data,
            Err(e) => StdinState::Error(e.to_string()),
        };
        let _ = sender.send(Some(state));
    });
    receiver
}

/// The `/env` report: what the container was given, as seen from inside.
async fn environment_report(mut stdin: watch::Receiver<Option<StdinState>>) -> serde_json::Value {
    let env: BTreeMap<String, String> = std::env::vars_os()
        .map(|(name, value)| (name.to_string_lossy().into_owned(), value.to_string_lossy().into_owned()))
        .collect();
    // A read of a closed stdin returns at once; one still pending after this long is blocked
    // on an open stdin.
    let stdin = match tokio::time::timeout(Duration::from_millis(500), stdin.wait_for(Option::is_some)).await {
        Ok(Ok(state)) => (*state).clone(),
        _ => None,
    };
    let (stdin_eof, stdin_state) = match stdin {
        Some(StdinState::Eof) => (true, "eof".to_owned()),
        Some(StdinState::Data) => (false, "data".to_owned()),
        Some(StdinState::Error(e)) => (false, format!("error: {e}")),
        None => (false, "blocked".to_owned()),
    };
    let tmp_error = probe_tmp().err();
    // A read-only root filesystem refuses this with EROFS whoever asks (root included).
    let root_error = probe_dir(std::path::Path::new("/")).err();
    let (uid, gid) = ids();
    let (cpu_quota_us, cpu_period_us) = cpu_limit().ok().flatten().unzip();
    serde_json::json!({
        "env": env,
        "tmp_writable": tmp_error.is_none(),
        "tmp_error": tmp_error,
        "root_writable": root_error.is_none(),
        "root_error": root_error,
        "stdin_eof": stdin_eof,
        "stdin": stdin_state,
        "uid": uid,
        "gid": gid,
        "memory_limit_bytes": memory_limit().unwrap_or_else(|e| { err(format_args!("hello: {e}")); None }),
        "cpu_quota_us": cpu_quota_us,
        "cpu_period_us": cpu_period_us,
        "cpu_limit_millis": cpu_quota_us.zip(cpu_period_us).map(|(quota, period)| quota * 1000 / period.max(1)),
    })
}

/// Writes a file in /tmp and reads it back.
fn probe_tmp() -> Result<(), String> {
    probe_dir(&std::env::temp_dir())
}

/// Writes a file in `dir` and reads it back.
fn probe_dir(dir: &std::path::Path) -> Result<(), String> {
    let path = dir.join(format!("hello-probe-{}", std::process::id()));
    let written = b"hello probe";
    std::fs::write(&path, written).map_err(|e| format!("write {}: {e}", path.display()))?;
    let read = std::fs::read(&path).map_err(|e| format!("read {}: {e}", path.display()));
    let _ = std::fs::remove_file(&path);
    if read? == written { Ok(()) } else { Err(format!("{} read back differently", path.display())) }
}

/// The effective uid and gid, from `/proc/self/status` (`Uid: real effective saved fs`).
fn ids() -> (Option<u32>, Option<u32>) {
    let Ok(status) = std::fs::read_to_string("/proc/self/status") else { return (None, None) };
    let field = |name: &str| {
        status
            .lines()
            .find_map(|line| line.strip_prefix(name))
            .and_then(|rest| rest.split_whitespace().nth(1))
            .and_then(|id| id.parse().ok())
    };
    (field("Uid:"), field("Gid:"))
}

/// The cgroup memory limit in bytes (v1 or v2); `None` when unlimited or not found.
fn memory_limit() -> Result<Option<u64>, String> {
    if let Some(v1) = read_cgroup_file("/sys/fs/cgroup/memory/memory.limit_in_bytes")? {
        let limit = parse_cgroup_number(&v1)?;
        return Ok((limit < CGROUP_V1_UNLIMITED).then_some(limit));
    }
    match read_cgroup_file("/sys/fs/cgroup/memory.max")? {
        Some(v2) if v2 == "max" => Ok(None),
        Some(v2) => parse_cgroup_number(&v2).map(Some),
        None => Ok(None),
    }
}

/// The CFS quota and period in microseconds (v1 or v2); `None` when unlimited or not found.
fn cpu_limit() -> Result<Option<(u64, u64)>, String> {
    if let Some(quota) = read_cgroup_file("/sys/fs/cgroup/cpu/cpu.cfs_quota_us")? {
        // v1 says -1 for "no quota".
        if quota.starts_with('-') {
            return Ok(None);
        }
        let period = read_cgroup_file("/sys/fs/cgroup/cpu/cpu.cfs_period_us")?
            .ok_or("cpu.cfs_quota_us without cpu.cfs_period_us")?;
        return Ok(Some((parse_cgroup_number(&quota)?, parse_cgroup_number(&period)?)));
    }
    let Some(max) = read_cgroup_file("/sys/fs/cgroup/cpu.max")? else { return Ok(None) };
    match max.split_once(' ') {
        Some(("max", _)) => Ok(None),
        Some((quota, period)) => Ok(Some((parse_cgroup_number(quota)?, parse_cgroup_number(period)?))),
        None => Err(format!("cpu.max {max:?} is not \"QUOTA PERIOD\"")),
    }
}

/// A cgroup file's trimmed content, or `None` if it does not exist.
fn read_cgroup_file(path: &str) -> Result<Option<String>, String> {
    match std::fs::read_to_string(path) {
        Ok(content) => Ok(Some(content.trim().to_owned())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(format!("read {path}: {e}")),
    }
}

fn parse_cgroup_number(value: &str) -> Result<u64, String> {
    value.parse().map_err(|e| format!("cgroup value {value:?} is not a number: {e}"))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn knobs_parse_known_parameters_and_ignore_others() {
        let knobs = Knobs::parse("sleep_ms=5&x=y&cpu_ms=7&status=503&flag&exclusive=1").unwrap();
        assert_eq!(
            knobs,
            Knobs {
                sleep: Some(Duration::from_millis(5)),
                cpu: Some(Duration::from_millis(7)),
                status: Some(StatusCode::SERVICE_UNAVAILABLE),
                exclusive: true,
            }
        );
        assert_eq!(Knobs::parse("").unwrap(), Knobs::default());
    }

    #[test]
    fn dial_requests_take_an_ip_literal_and_a_bounded_timeout() {
        let addr: SocketAddr = "10.0.0.1:80".parse().unwrap();
        assert_eq!(dial_request("addr=10.0.0.1:80").unwrap(), (addr, DIAL_TIMEOUT));
        assert_eq!(dial_request("timeout_ms=200&addr=10.0.0.1:80").unwrap(), (addr, Duration::from_millis(200)));
        assert_eq!(dial_request("addr=10.0.0.1:80&timeout_ms=999999").unwrap(), (addr, MAX_DIAL_TIMEOUT));
        assert!(dial_request("addr=example.com:80").unwrap_err().contains("addr"));
        assert!(dial_request("").unwrap_err().contains("required"));
    }

    #[tokio::test]
    async fn dial_reports_whether_it_connected() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let open = listener.local_addr().unwrap();
        assert_eq!(dial(open, DIAL_TIMEOUT).await["connected"], true);
        drop(listener);
        let closed = dial(open, DIAL_TIMEOUT).await;
        assert_eq!(closed["connected"], false, "{closed}");
        assert!(closed["error"].as_str().is_some_and(|e| !e.is_empty()), "{closed}");
    }

    #[test]
    fn knobs_refuse_bad_values_naming_them() {
        assert!(Knobs::parse("sleep_ms=abc").unwrap_err().contains("sleep_ms"));
        assert!(Knobs::parse("cpu_ms=99999999999").unwrap_err().contains("cpu_ms"));
        assert!(Knobs::parse("status=42").unwrap_err().contains("status"));
        assert!(Knobs::parse("status=").unwrap_err().contains("status"));
    }
}

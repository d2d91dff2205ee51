//! The Docker runtime against the real engine (the local socket, or `DOCKER_HOST`), running the
//! example image `127.0.0.1:5000/hello:v1`. A test that finds the image (or the registry at
//! 127.0.0.1:5000) missing runs `hack/images.sh` once, under a file lock shared by every test
//! process, and fails naming that script if it still is.
//!
//! Every container is named uniquely, labelled `stratus.dev/test`, and removed by a guard, also
//! when the test fails.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::future::Future;
use std::path::Path;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use futures::StreamExt;
use serde_json::Value;
use stratus_agent::runtime::docker::DockerRuntime;
use stratus_agent::runtime::{ContainerConfig, ContainerStatus, Error, LogLine, LogOptions, LogStream, Runtime};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const IMAGE: &str = "127.0.0.1:5000/hello:v1";
const TEST_LABEL: &str = "stratus.dev/test";
/// The agent's network for instances, which the runtime makes when missing.
const NETWORK: &str = stratus_agent::config::DEFAULT_INSTANCE_NETWORK;
/// Generous: two CPUs are shared with compilers while the tests run.
const PATIENCE: Duration = Duration::from_secs(30);

/// Connects to the engine and makes sure the test image is present locally and in the registry.
async fn engine() -> DockerRuntime {
    let runtime = DockerRuntime::connect(None).unwrap_or_else(|e| panic!("these tests need a Docker engine: {e}"));
    ensure_image(&runtime).await;
    runtime
}

/// Pulls the test image; when that fails, runs hack/images.sh (which starts the registry and
/// builds and pushes the image) and pulls again. The file lock keeps concurrent test
/// processes from building at once; the others find the image there when they get the lock.
async fn ensure_image(runtime: &DockerRuntime) {
    let lock_path = std::env::temp_dir().join("stratus-hello-image.lock");
    let lock = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&lock_path)
        .unwrap_or_else(|e| panic!("cannot open {}: {e}", lock_path.display()));
    lock.lock().unwrap_or_else(|e| panic!("cannot lock {}: {e}", lock_path.display()));
    if runtime.pull(IMAGE).await.is_ok() {
        return;
    }
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../hack/images.sh");
    eprintln!("{IMAGE} is missing; running {}", script.display());
    let status =
        std::process::Command::new(&script).status().unwrap_or_else(|e| panic!("cannot run {}: {e}", script.display()));
    assert!(status.success(), "hack/images.sh failed ({status}); run it by hand to see why");
    if let Err(e) = runtime.pull(IMAGE).await {
        panic!("{IMAGE} is still not available after hack/images.sh: {e}");
    }
}

/// Removes its container when dropped, by name, so that it also covers a test that fails
/// between create and start.
struct Cleanup {
    name: String,
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        let name = self.name.clone();
        // The test's runtime may be gone or panicking: remove on a runtime of our own.
        let removed = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().ok()?;
            runtime.block_on(async { DockerRuntime::connect(None).ok()?.remove(&name).await.ok() })
        })
        .join();
        if !matches!(removed, Ok(Some(()))) {
            eprintln!("could not remove the test container {}; remove it by hand", self.name);
        }
    }
}

fn unique_name(test: &str) -> String {
    static COUNTER: AtomicU32 = AtomicU32::new(0);
    let nanos = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.subsec_nanos()).unwrap_or(0);
    format!("stratus-test-{test}-{}-{nanos}-{}", std::process::id(), COUNTER.fetch_add(1, Ordering::Relaxed))
}

/// A hardened container of the test image in `mode`, publishing 8080 on loopback.
fn config(test: &str, mode: &str) -> ContainerConfig {
    ContainerConfig {
        name: unique_name(test),
        image: IMAGE.into(),
        args: vec![mode.into()],
        env: vec![("TARGET".into(), "Docker".into())],
        labels: BTreeMap::from([(TEST_LABEL.to_owned(), test.to_owned())]),
        port: 8080,
        host_ip: "127.0.0.1".into(),
        network: NETWORK.into(),
        nano_cpus: 500_000_000,
        memory_bytes: 128 << 20,
        pids_limit: 64,
        read_only_root_fs: true,
        tmp_size_bytes: 8 << 20,
        ..Default::default()
    }
}

/// Creates the container (guarded) and returns its id, without starting it.
async fn create(runtime: &DockerRuntime, config: &ContainerConfig) -> (Cleanup, String) {
    let cleanup = Cleanup { name: config.name.clone() };
    let id = runtime.create(config).await.unwrap_or_else(|e| panic!("create {}: {e}", config.name));
    (cleanup, id)
}

async fn run(runtime: &DockerRuntime, config: &ContainerConfig) -> (Cleanup, String) {
    let (cleanup, id) = create(runtime, config).await;
    runtime.start(&id).await.unwrap_or_else(|e| panic!("start {}: {e}", config.name));
    (cleanup, id)
}

/// Polls `probe` until it gives a value, failing the test after `PATIENCE`.
async fn eventually<T, F, Fut>(what: &str, mut probe: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + PATIENCE;
    loop {
        if let Some(value) = probe().await {
            return value;
        }
        assert!(Instant::now() < deadline, "gave up after {PATIENCE:?} waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn running_status(runtime: &DockerRuntime, id: &str) -> ContainerStatus {
    let status = runtime.inspect(id).await.unwrap().expect("the container exists");
    assert!(status.running, "not running: {status:?}");
    status
}

async fn exited(runtime: &DockerRuntime, id: &str) -> ContainerStatus {
    eventually("the container to exit", || async {
        runtime.inspect(id).await.unwrap().filter(|status| !status.running && status.exit_code.is_some())
    })
    .await
}

/// A plain HTTP/1.1 GET: (status, body), or the I/O error.
async fn http_get(port: u16, path: &str) -> std::io::Result<(u16, String)> {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).await?;
    let request = format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await?;
    let mut response = Vec::new();
    stream.read_to_end(&mut response).await?;
    let response = String::from_utf8_lossy(&response);
    let invalid =
        || std::io::Error::new(std::io::ErrorKind::InvalidData, format!("not an HTTP response: {response:?}"));
    let (head, body) = response.split_once("\r\n\r\n").ok_or_else(invalid)?;
    let status = head.split(' ').nth(1).and_then(|code| code.parse().ok()).ok_or_else(invalid)?;
    Ok((status, body.to_owned()))
}

/// Waits until the container answers `GET /` with 200, and returns the body.
async fn serving(port: u16) -> String {
    eventually("the container to answer HTTP", || async {
        match http_get(port, "/").await {
            Ok((200, body)) => Some(body),
            _ => None,
        }
    })
    .await
}

async fn all_logs(runtime: &DockerRuntime, id: &str, tail: Option<u64>) -> Vec<LogLine> {
    let stream = runtime.logs(id, LogOptions { follow: false, tail, ..Default::default() }).await.unwrap();
    stream.map(|line| line.unwrap()).collect().await
}

fn texts(lines: &[LogLine]) -> Vec<&str> {
    lines.iter().map(|line| line.line.as_str()).collect()
}

#[tokio::test]
async fn connect_negotiates_with_the_engine_and_reports_it() {
    // The engine here (20.10) speaks an older API than bollard's default: nothing below would
    // answer without negotiation.
    let runtime = DockerRuntime::connect(None).unwrap();
    let info = runtime.info().await.unwrap();
    assert!(info.cpus > 0 && info.memory_bytes > 0, "{info:?}");
    assert!(info.version.starts_with("docker://") && info.version.len() > "docker://".len(), "{info:?}");
    assert_eq!(info.operating_system, "linux");
    assert!(!info.kernel_version.is_empty(), "{info:?}");
}

#[tokio::test]
async fn an_unreachable_engine_is_reported_with_where_it_was_looked_for() {
    fn check(endpoint: &str, expected: &str, result: Result<impl std::fmt::Debug, Error>) {
        match result {
            Err(Error::Unreachable { endpoint: reported, message }) => {
                assert_eq!(reported, endpoint);
                assert!(message.to_lowercase().contains(expected), "{endpoint}: {message}");
                let display = Error::Unreachable { endpoint: reported, message }.to_string();
                assert!(display.contains(endpoint), "{display}");
            }
            other => panic!("{endpoint}: expected Unreachable, got {other:?}"),
        }
    }
    // Endpoints that cannot work fail at once...
    check("unix:///nonexistent.sock", "/nonexistent.sock", DockerRuntime::connect(Some("unix:///nonexistent.sock")));
    check("ssh://somewhere", "unsupported scheme", DockerRuntime::connect(Some("ssh://somewhere")));
    // ...one that may come up later fails each call while it does not answer.
    let runtime = DockerRuntime::connect(Some("tcp://127.0.0.1:9")).unwrap();
    check("tcp://127.0.0.1:9", "refused", runtime.info().await);
    check("tcp://127.0.0.1:9", "refused", runtime.inspect("anything").await);
}

#[tokio::test]
async fn a_started_container_runs_and_answers_on_its_published_port() {
    let runtime = engine().await;
    let config = config("serve", "serve");
    let (_cleanup, id) = run(&runtime, &config).await;

    let status = running_status(&runtime, &id).await;
    assert_eq!(status.id, id);
    assert_eq!(status.name, config.name);
    assert_eq!(status.labels, config.labels);
    assert_eq!((status.exit_code, status.oom_killed, status.finished_at), (None, false, None));
    assert!(status.started_at.is_some_and(|t| t <= SystemTime::now()), "{status:?}");
    assert!(status.error.is_empty(), "{status:?}");
    let port = status.host_port.expect("a published host port");

    let body = serving(port).await;
    assert!(body.starts_with("Hello Docker! from "), "{body}");
    assert_eq!(http_get(port, "/healthz").await.unwrap().0, 200);
    assert_eq!(http_get(port, "/anything?status=503").await.unwrap().0, 503);

    let listed = runtime.list(&[(TEST_LABEL, "serve")]).await.unwrap();
    assert!(listed.iter().any(|c| c.id == id && c.running && c.host_port == Some(port)), "{listed:?}");
}

#[tokio::test]
async fn containers_are_created_with_the_limits_and_hardening_asked_for() {
    let runtime = engine().await;
    let config = ContainerConfig {
        memory_bytes: 96 << 20,
        cap_add: vec!["NET_BIND_SERVICE".into()],
        user: "1000:1000".into(),
        working_dir: "/srv".into(),
        tmp_size_bytes: 4 << 20,
        ..config("hardening", "env")
    };
    let (_cleanup, id) = run(&runtime, &config).await;

    // As the engine recorded it.
    let inspect = runtime.client().await.unwrap().inspect_container(&id, None).await.unwrap();
    let host = inspect.host_config.expect("a host config");
    assert_eq!(host.nano_cpus, Some(500_000_000));
    assert_eq!((host.memory, host.memory_swap), (Some(96 << 20), Some(96 << 20)));
    assert_eq!(host.pids_limit, Some(64));
    assert_eq!(host.security_opt, Some(vec!["no-new-privileges".to_owned()]));
    assert_eq!(host.cap_drop, Some(vec!["ALL".to_owned()]));
    assert!(host.cap_add.unwrap_or_default().iter().any(|c| c.ends_with("NET_BIND_SERVICE")));
    assert_eq!((host.privileged, host.readonly_rootfs), (Some(false), Some(true)));
    assert_eq!(host.tmpfs.unwrap_or_default().get("/tmp").map(String::as_str), Some("rw,nosuid,nodev,size=4194304"));
    assert_eq!(host.pid_mode.as_deref().unwrap_or(""), "");
    assert_ne!(host.ipc_mode.as_deref(), Some("host"));
    assert_eq!(host.restart_policy.and_then(|p| p.name).map(|n| n.to_string()), Some("no".to_owned()));
    let bindings = host.port_bindings.unwrap_or_default();
    let binding = &bindings["8080/tcp"].as_ref().expect("8080 is published")[0];
    assert_eq!((binding.host_ip.as_deref(), binding.host_port.as_deref()), (Some("127.0.0.1"), Some("")));
    let container = inspect.config.expect("a config");
    assert_eq!((container.open_stdin, container.tty), (Some(false), Some(false)));
    assert_eq!((container.user.as_deref(), container.working_dir.as_deref()), (Some("1000:1000"), Some("/srv")));
    assert_eq!(container.cmd, Some(vec!["env".to_owned()]));
    assert_eq!(container.entrypoint, Some(vec!["/hello".to_owned()]), "the image's entrypoint is kept");
    let networks = inspect.network_settings.and_then(|n| n.networks).unwrap_or_default();
    assert_eq!(networks.keys().collect::<Vec<_>>(), [NETWORK], "on the isolated network only");

    // As the kernel enforces it: the process's own status.
    let pid = inspect.state.and_then(|s| s.pid).filter(|pid| *pid > 0).expect("the container's pid");
    let proc_status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let field = |name: &str| {
        proc_status.lines().find_map(|l| l.strip_prefix(name)).map(str::trim).unwrap_or_else(|| panic!("no {name}"))
    };
    // 2: a seccomp filter is installed (0 would be none: unconfined).
    assert_eq!(field("Seccomp:"), "2", "{proc_status}");
    assert_eq!(field("NoNewPrivs:"), "1", "{proc_status}");
    // Only CAP_NET_BIND_SERVICE (bit 10) is left to the container at all (the bounding set);
    // as uid 1000 the process holds none of it.
    let set = |name: &str| u64::from_str_radix(field(name), 16).unwrap();
    assert_eq!(set("CapBnd:"), 1 << 10, "{proc_status}");
    for name in ["CapEff:", "CapPrm:", "CapInh:", "CapAmb:"] {
        assert_eq!(set(name) & !(1 << 10), 0, "{name} {proc_status}");
    }

    // As the workload sees it.
    let running = running_status(&runtime, &id).await;
    assert!(running.ip.is_some_and(|ip| !ip.is_loopback()), "its own address on {NETWORK}: {running:?}");
    let port = running.host_port.unwrap();
    serving(port).await;
    let (code, body) = http_get(port, "/env").await.unwrap();
    assert_eq!(code, 200, "{body}");
    let report: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(report["env"]["TARGET"], "Docker", "{report}");
    assert_eq!((report["uid"].as_u64(), report["gid"].as_u64()), (Some(1000), Some(1000)), "{report}");
    assert_eq!(report["stdin_eof"], true, "{report}");
    assert_eq!(report["tmp_writable"], true, "{report}");
    assert_eq!(report["root_writable"], false, "{report}");
    assert!(report["root_error"].as_str().is_some_and(|e| e.contains("Read-only file system")), "{report}");
    assert_eq!(report["memory_limit_bytes"].as_u64(), Some(96 << 20), "{report}");
    assert_eq!(report["cpu_limit_millis"].as_u64(), Some(500), "{report}");

    // The CPU limit changes in place (the startup CPU boost ends this way): the engine records
    // it, the running workload sees it, and it is the same process.
    runtime.update_cpu(&id, 250_000_000).await.unwrap();
    let updated = runtime.client().await.unwrap().inspect_container(&id, None).await.unwrap();
    assert_eq!(updated.host_config.and_then(|h| h.nano_cpus), Some(250_000_000));
    assert_eq!(updated.state.and_then(|s| s.pid), Some(pid), "not restarted");
    let (_, body) = http_get(port, "/env").await.unwrap();
    let report: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(report["cpu_limit_millis"].as_u64(), Some(250), "{report}");
}

#[tokio::test]
async fn stop_sends_sigterm_which_the_workload_handles_at_once() {
    let runtime = engine().await;
    let (_cleanup, id) = run(&runtime, &config("stop", "serve")).await;
    serving(running_status(&runtime, &id).await.host_port.unwrap()).await;

    let started = Instant::now();
    runtime.stop(&id, Duration::from_secs(20)).await.unwrap();
    // Had the signal been ignored, the engine would have waited out the grace period and
    // killed the container (exit code 137).
    assert!(started.elapsed() < Duration::from_secs(10), "stop took {:?}", started.elapsed());
    let status = runtime.inspect(&id).await.unwrap().unwrap();
    assert!(!status.running, "{status:?}");
    assert_eq!(status.exit_code, Some(0), "{status:?}");
    assert_eq!(status.host_port, None, "{status:?}");
    assert!(status.finished_at.is_some() && status.finished_at >= status.started_at, "{status:?}");
    let logs = all_logs(&runtime, &id, None).await;
    assert!(texts(&logs).iter().any(|line| line.contains("received SIGTERM")), "{logs:?}");

    // Stopping a stopped container is fine.
    runtime.stop(&id, Duration::from_secs(1)).await.unwrap();
}

#[tokio::test]
async fn a_workload_that_never_listens_still_stops_on_sigterm() {
    let runtime = engine().await;
    let (_cleanup, id) = run(&runtime, &config("never-ready", "never-ready")).await;
    eventually("the never-ready mode to start", || async {
        texts(&all_logs(&runtime, &id, None).await).iter().any(|l| l.contains("not listening")).then_some(())
    })
    .await;
    let port = running_status(&runtime, &id).await.host_port.unwrap();
    assert!(http_get(port, "/").await.is_err(), "nothing should answer HTTP");
    runtime.stop(&id, Duration::from_secs(20)).await.unwrap();
    assert_eq!(runtime.inspect(&id).await.unwrap().unwrap().exit_code, Some(0));
}

#[tokio::test]
async fn the_crash_mode_exits_with_code_3_whether_chosen_by_args_or_by_command() {
    let runtime = engine().await;
    let by_args = config("crash-args", "crash");
    let by_command = ContainerConfig {
        command: vec!["/hello".into(), "crash".into()],
        args: vec![],
        ..config("crash-command", "unused")
    };
    for config in [by_args, by_command] {
        let (_cleanup, id) = run(&runtime, &config).await;
        let status = exited(&runtime, &id).await;
        assert_eq!(status.exit_code, Some(3), "{}: {status:?}", config.name);
        assert!(!status.oom_killed, "{status:?}");
        let (started, finished) = (status.started_at.unwrap(), status.finished_at.unwrap());
        assert!(finished >= started, "{status:?}");

        // Both streams, tagged, with the engine's timestamps.
        let logs = all_logs(&runtime, &id, None).await;
        let stdout = logs.iter().find(|l| l.stream == LogStream::Stdout).expect("a stdout line");
        let stderr = logs.iter().find(|l| l.stream == LogStream::Stderr).expect("a stderr line");
        assert!(stdout.line.starts_with("hello: mode crash"), "{logs:?}");
        assert_eq!(stderr.line, "hello: crashing on purpose", "{logs:?}");
        for line in [stdout, stderr] {
            let at = line.timestamp.expect("a timestamp");
            let slack = Duration::from_secs(2);
            assert!(at + slack >= started && at <= finished + slack, "{line:?} outside {status:?}");
        }
    }
}

#[tokio::test]
async fn a_container_over_its_memory_limit_is_reported_oom_killed() {
    let runtime = engine().await;
    let config = ContainerConfig { memory_bytes: 64 << 20, tmp_size_bytes: 1 << 20, ..config("oom", "oom") };
    let (_cleanup, id) = run(&runtime, &config).await;
    let status = exited(&runtime, &id).await;
    assert!(status.oom_killed, "{status:?}");
    assert_eq!(status.exit_code, Some(137), "{status:?}");
}

#[tokio::test]
async fn pull_returns_the_repo_digest_that_image_digest_reports() {
    let runtime = engine().await;
    let digest = runtime.pull(IMAGE).await.unwrap();
    assert!(digest.starts_with("127.0.0.1:5000/hello@sha256:"), "{digest}");
    assert_eq!(runtime.image_digest(IMAGE).await.unwrap(), Some(digest));
    assert_eq!(runtime.image_digest("127.0.0.1:5000/absent:v1").await.unwrap(), None);
}

#[tokio::test]
async fn pulls_that_cannot_succeed_fail_quickly_with_the_engine_message() {
    let runtime = engine().await;
    for (image, expected) in [("127.0.0.1:5000/nope:v1", "not found"), ("127.0.0.1:9/nope:v1", "connection refused")] {
        let started = Instant::now();
        match runtime.pull(image).await {
            Err(Error::Pull { image: reported, message }) => {
                assert_eq!(reported, image);
                assert!(message.contains(expected), "{image}: {message}");
            }
            other => panic!("{image}: expected a pull error, got {other:?}"),
        }
        assert!(started.elapsed() < Duration::from_secs(15), "{image}: took {:?}", started.elapsed());
    }
}

#[tokio::test]
async fn logs_honour_tail_and_follow() {
    let runtime = engine().await;
    let (_cleanup, id) = run(&runtime, &config("logs", "serve")).await;
    let port = running_status(&runtime, &id).await.host_port.unwrap();
    serving(port).await;
    for path in ["/one", "/two", "/three"] {
        http_get(port, path).await.unwrap();
    }
    // The engine copies output asynchronously: wait until the last request shows.
    let tail = eventually("the requests in the logs", || async {
        let tail = all_logs(&runtime, &id, Some(2)).await;
        tail.last().is_some_and(|l| l.line.starts_with("GET /three ")).then_some(tail)
    })
    .await;
    assert_eq!(tail.len(), 2, "{tail:?}");
    assert!(tail[0].line.starts_with("GET /two 404 "), "{tail:?}");
    assert!(tail.iter().all(|l| l.stream == LogStream::Stdout && l.timestamp.is_some()), "{tail:?}");

    // Follow: the last line first (which shows the engine has the request), then new lines as
    // they come, and the end of the stream when the container stops.
    let mut follow = runtime.logs(&id, LogOptions { follow: true, tail: Some(1), ..Default::default() }).await.unwrap();
    let mut next_line = async || tokio::time::timeout(PATIENCE, follow.next()).await.expect("a line").unwrap().unwrap();
    let line = next_line().await;
    assert!(line.line.starts_with("GET /three 404 "), "{line:?}");
    http_get(port, "/followed").await.unwrap();
    let line = next_line().await;
    assert!(line.line.starts_with("GET /followed 404 "), "{line:?}");
    runtime.stop(&id, Duration::from_secs(10)).await.unwrap();
    let rest: Vec<LogLine> =
        tokio::time::timeout(PATIENCE, follow.map(|l| l.unwrap()).collect()).await.expect("the stream to end");
    assert!(texts(&rest).iter().any(|l| l.contains("received SIGTERM")), "{rest:?}");
}

#[tokio::test]
async fn stats_report_cpu_and_memory_in_use() {
    let runtime = engine().await;
    let (_cleanup, id) = run(&runtime, &config("stats", "serve")).await;
    let port = running_status(&runtime, &id).await.host_port.unwrap();
    serving(port).await;
    // Keep one CPU busy (capped at the container's half CPU) while the engine samples.
    let burn = tokio::spawn(async move { http_get(port, "/?cpu_ms=6000").await });
    let usage = eventually("CPU use to show", || async {
        let usage = runtime.stats(&id).await.unwrap();
        (usage.cpu_millis > 100).then_some(usage)
    })
    .await;
    assert!(usage.cpu_millis <= 700, "the half-CPU limit should cap it: {usage:?}");
    assert!(usage.memory_bytes > 0, "{usage:?}");
    burn.abort();
}

#[tokio::test]
async fn list_selects_by_every_label_and_reports_created_containers() {
    let runtime = engine().await;
    let run_id = unique_name("list");
    let labelled = |role: &str| {
        let mut config = config("list", "serve");
        config.labels.insert("stratus.dev/test-run".into(), run_id.clone());
        config.labels.insert("stratus.dev/test-role".into(), role.into());
        config
    };
    let (a, b) = (labelled("a"), labelled("b"));
    let (_cleanup_a, id_a) = create(&runtime, &a).await;
    let (_cleanup_b, id_b) = create(&runtime, &b).await;

    let mut both: Vec<String> =
        runtime.list(&[("stratus.dev/test-run", &run_id)]).await.unwrap().into_iter().map(|c| c.id).collect();
    both.sort();
    let mut expected = vec![id_a.clone(), id_b];
    expected.sort();
    assert_eq!(both, expected);

    let only_a = runtime.list(&[("stratus.dev/test-run", &run_id), ("stratus.dev/test-role", "a")]).await.unwrap();
    assert_eq!(only_a.len(), 1, "{only_a:?}");
    let created = &only_a[0];
    assert_eq!((created.id.as_str(), created.name.as_str()), (id_a.as_str(), a.name.as_str()));
    assert_eq!(created.labels, a.labels);
    assert!(!created.running, "{created:?}");
    assert_eq!(
        (created.exit_code, created.host_port, created.started_at, created.finished_at),
        (None, None, None, None)
    );
}

#[tokio::test]
async fn missing_containers_and_refused_requests_map_to_the_trait_errors() {
    let runtime = engine().await;
    let missing = unique_name("missing");
    assert!(runtime.inspect(&missing).await.unwrap().is_none());
    runtime.remove(&missing).await.unwrap();
    assert!(matches!(runtime.start(&missing).await, Err(Error::NotFound(id)) if id == missing));
    assert!(matches!(runtime.stop(&missing, Duration::from_secs(1)).await, Err(Error::NotFound(_))));
    assert!(matches!(runtime.stats(&missing).await, Err(Error::NotFound(_))));
    assert!(matches!(runtime.logs(&missing, LogOptions::default()).await, Err(Error::NotFound(_))));

    // The engine's own words for what it refuses.
    let absent = ContainerConfig { image: "127.0.0.1:5000/absent:v1".into(), ..config("absent", "serve") };
    let _cleanup = Cleanup { name: absent.name.clone() };
    match runtime.create(&absent).await {
        Err(Error::Engine(message)) => assert!(message.contains("No such image"), "{message}"),
        other => panic!("expected an engine error, got {other:?}"),
    }
    // A start the engine refuses: its error, and the failed container's state.
    let broken = ContainerConfig { command: vec!["/nonexistent".into()], ..config("broken", "serve") };
    let (_cleanup, id) = create(&runtime, &broken).await;
    match runtime.start(&id).await {
        Err(Error::Engine(message)) => assert!(message.contains("/nonexistent"), "{message}"),
        other => panic!("expected the engine to refuse the start, got {other:?}"),
    }
    let status = runtime.inspect(&id).await.unwrap().unwrap();
    assert!(!status.running, "{status:?}");
    assert_eq!(status.exit_code, Some(127), "{status:?}");
    assert!(status.error.contains("/nonexistent"), "{status:?}");

    let config = config("conflict", "serve");
    let (_cleanup, _id) = create(&runtime, &config).await;
    match runtime.create(&config).await {
        Err(Error::Engine(message)) => assert!(message.contains("already in use"), "{message}"),
        other => panic!("expected a name conflict, got {other:?}"),
    }
}

/// `GET /dial?addr=…` of the container in env mode on `port`: whether it connected.
async fn dials(port: u16, addr: &str) -> bool {
    let (code, body) = http_get(port, &format!("/dial?addr={addr}&timeout_ms=1000")).await.unwrap();
    assert_ne!(code, 404, "the image predates /dial: run hack/images.sh to rebuild it ({body})");
    assert_eq!(code, 200, "{body}");
    let report: Value = serde_json::from_str(&body).unwrap();
    report["connected"].as_bool().unwrap_or_else(|| panic!("{report}"))
}

/// The container's address on `network`, and the host's (its gateway) there.
async fn addresses(runtime: &DockerRuntime, id: &str, network: &str) -> (String, String) {
    let inspect = runtime.client().await.unwrap().inspect_container(id, None).await.unwrap();
    let networks = inspect.network_settings.and_then(|n| n.networks).unwrap_or_default();
    let endpoint = networks.get(network).unwrap_or_else(|| panic!("not on {network}: {networks:?}"));
    (endpoint.ip_address.clone().unwrap(), endpoint.gateway.clone().unwrap())
}

#[tokio::test]
async fn instances_cannot_reach_one_another_nor_the_hosts_loopback_ports() {
    let runtime = engine().await;
    let (_a_cleanup, a) = run(&runtime, &config("isolated-a", "env")).await;
    let (_b_cleanup, b) = run(&runtime, &config("isolated-b", "env")).await;
    let a_port = running_status(&runtime, &a).await.host_port.unwrap();
    let b_port = running_status(&runtime, &b).await.host_port.unwrap();
    // Both serve through their published ports, as the gateway reaches them.
    serving(a_port).await;
    serving(b_port).await;
    let (b_ip, gateway) = addresses(&runtime, &b, NETWORK).await;

    // The control: on Docker's default bridge, the same request does connect, so a refusal
    // below is the network's doing, not the probe's.
    let open = |test: &str| ContainerConfig { network: "bridge".into(), ..config(test, "env") };
    let (_c_cleanup, c) = run(&runtime, &open("open-c")).await;
    let (_d_cleanup, d) = run(&runtime, &open("open-d")).await;
    let c_port = running_status(&runtime, &c).await.host_port.unwrap();
    serving(c_port).await;
    serving(running_status(&runtime, &d).await.host_port.unwrap()).await;
    let (d_ip, _) = addresses(&runtime, &d, "bridge").await;
    assert!(dials(c_port, &format!("{d_ip}:8080")).await, "the control could not connect");

    // On the instances' network: not to another instance...
    assert!(!dials(a_port, &format!("{b_ip}:8080")).await, "instance a reached instance b at {b_ip}:8080");
    // ...nor to what the host serves on loopback (Stratus's ports, the published ones), by
    // way of the host's address on the network.
    let host_service = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let host_port = host_service.local_addr().unwrap().port();
    for port in [host_port, b_port] {
        assert!(!dials(a_port, &format!("{gateway}:{port}")).await, "instance a reached the host's 127.0.0.1:{port}");
    }
    // It still reaches itself: the probe works on this network.
    assert!(dials(a_port, "127.0.0.1:8080").await);
}

#[tokio::test]
async fn the_network_is_made_once_isolated_and_an_open_one_of_its_name_is_refused() {
    let runtime = engine().await;
    let name = unique_name("net");
    let docker = runtime.client().await.unwrap().clone();
    struct RemoveNetwork(String);
    impl Drop for RemoveNetwork {
        fn drop(&mut self) {
            let _ = std::process::Command::new("docker").args(["network", "rm", &self.0]).output();
        }
    }
    let _remove = RemoveNetwork(name.clone());
    // Made on first use, with inter-container traffic off; then reused.
    let first = ContainerConfig { network: name.clone(), ..config("net-a", "serve") };
    let (_a, a) = create(&runtime, &first).await;
    let second = ContainerConfig { network: name.clone(), ..config("net-b", "serve") };
    let (_b, b) = create(&runtime, &second).await;
    let inspect = docker.inspect_network(&name, None).await.unwrap();
    let options = inspect.options.unwrap_or_default();
    assert_eq!(options.get("com.docker.network.bridge.enable_icc").map(String::as_str), Some("false"));
    for id in [a, b] {
        let host = docker.inspect_container(&id, None).await.unwrap().host_config.unwrap();
        assert_eq!(host.network_mode, inspect.id, "{id} is not on the network");
    }

    // A network of the name that lets containers talk is not used.
    let open = unique_name("open-net");
    let _remove_open = RemoveNetwork(open.clone());
    let status = std::process::Command::new("docker").args(["network", "create", &open]).output().unwrap();
    assert!(status.status.success(), "{status:?}");
    let on_open = ContainerConfig { network: open.clone(), ..config("net-open", "serve") };
    let _cleanup = Cleanup { name: on_open.name.clone() };
    match runtime.create(&on_open).await {
        Err(Error::Engine(message)) => {
            assert!(message.contains("enable_icc is not false") && message.contains("docker network rm"), "{message}")
        }
        other => panic!("expected a refusal, got {other:?}"),
    }
    // Nor the host's.
    let host = ContainerConfig { network: "host".into(), ..config("net-host", "serve") };
    assert!(matches!(runtime.create(&host).await, Err(Error::Engine(m)) if m.contains("host's network")));
}

#[tokio::test]
async fn run_as_non_root_with_a_root_image_fails_the_instance_on_docker() {
    use stratus_agent::AgentConfig;
    use stratus_agent::runtime::labels;
    use stratus_api::v1::{Container, SecurityContext};
    use stratus_testkit::agent_harness::{AgentHarness, HarnessConfig, container, status};

    let runtime = engine().await;
    let node = unique_name("non-root");
    let harness = HarnessConfig {
        agent: AgentConfig::new(node.clone()),
        patience: PATIENCE,
        termination_grace_period_seconds: 1,
    };
    let h = AgentHarness::start(runtime.clone(), harness).await;
    let non_root = SecurityContext { run_as_non_root: Some(true), ..Default::default() };
    h.create_with("root", Container { security_context: Some(non_root), ..container(IMAGE, &[], "64Mi") }).await;
    let i = h.wait_for("root", "the refusal", |i| status(i).reason == "CreateContainerConfigError").await;
    let st = status(&i);
    // The example image is FROM scratch with no USER: root.
    assert!(
        st.message.starts_with(&format!("container has runAsNonRoot and image {IMAGE} will run as root")),
        "{}",
        st.message
    );
    assert_eq!((st.phase.as_str(), st.container_id.as_str()), ("Pending", ""));
    assert!(runtime.list(&[(labels::NODE, node.as_str())]).await.unwrap().is_empty(), "a container was made");
}

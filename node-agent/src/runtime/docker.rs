//! [`DockerRuntime`]: the [`Runtime`] of a real Docker engine, through bollard.
//!
//! The engine may be older than bollard's default API version (Debian 12 ships 20.10, API 1.41),
//! so the version is negotiated before the first request. Errors keep the engine's own message:
//! that is what an operator needs to read in an Instance's status.

use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use bollard::Docker;
use bollard::container::LogOutput;
use bollard::errors::Error as DockerError;
use bollard::models::{
    ContainerCpuStats, ContainerCreateBody, ContainerInspectResponse, ContainerStateStatusEnum, ContainerStatsResponse,
    HealthConfig, HostConfig, HostConfigLogConfig, PortBinding, RestartPolicy, RestartPolicyNameEnum,
};
use bollard::query_parameters::{
    CreateContainerOptions, CreateImageOptions, ListContainersOptions, LogsOptions, RemoveContainerOptions,
    StatsOptions, StopContainerOptions,
};
use futures::stream::BoxStream;
use futures::{StreamExt, TryStreamExt};
use tokio::sync::OnceCell;
use tracing::{debug, warn};

use super::{
    ContainerConfig, ContainerStatus, EngineInfo, Error, LogLine, LogOptions, LogStream, Result, Runtime, Usage,
};

/// Where the engine listens when neither the caller nor `DOCKER_HOST` says otherwise.
pub const DEFAULT_DOCKER_HOST: &str = "unix:///var/run/docker.sock";

/// How long one request may wait for the engine's response headers. Streams (logs, pulls) are
/// not bounded by it once they have started; `stop` adds the grace period to it.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(60);

/// A pull whose progress stream stays silent this long is given up: the engine reports progress
/// every few hundred milliseconds while it downloads, so silence means a stuck registry.
const PULL_IDLE_TIMEOUT: Duration = Duration::from_secs(120);

/// How many containers `list` inspects at once.
const LIST_CONCURRENCY: usize = 8;

/// Log rotation of every container, as the kubelet's defaults (10 MiB × 5 files): a chatty
/// workload must not fill the host's disk.
const LOG_MAX_SIZE: &str = "10m";
const LOG_MAX_FILES: &str = "5";

/// A Docker engine. Cheap to clone; clones share the connection and the negotiated version.
#[derive(Clone)]
pub struct DockerRuntime {
    docker: Docker,
    /// The address connected to, for error messages.
    endpoint: String,
    /// Set once the API version has been negotiated with the engine.
    negotiated: Arc<OnceCell<()>>,
}

impl fmt::Debug for DockerRuntime {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DockerRuntime")
            .field("endpoint", &self.endpoint)
            .field("api_version", &self.docker.client_version().to_string())
            .field("negotiated", &self.negotiated.initialized())
            .finish()
    }
}

impl DockerRuntime {
    /// A runtime for the engine at `docker_host` (`unix:///path`, a bare socket path,
    /// `tcp://host:port` or `http://host:port`), else at `$DOCKER_HOST`, else at
    /// [`DEFAULT_DOCKER_HOST`].
    ///
    /// The engine is not contacted here: the API version is negotiated on first use, and again
    /// on each use until that succeeds, so that an agent can start before its engine and report
    /// it unavailable meanwhile. Fails with [`Error::Unreachable`] naming the endpoint when the
    /// endpoint cannot work at all: a socket that does not exist, a scheme other than those
    /// above (TLS and SSH are not supported). Every method fails the same way while the engine
    /// does not answer.
    pub fn connect(docker_host: Option<&str>) -> Result<DockerRuntime> {
        let endpoint = match docker_host.filter(|host| !host.is_empty()) {
            Some(host) => host.to_owned(),
            None => std::env::var("DOCKER_HOST")
                .ok()
                .filter(|host| !host.is_empty())
                .unwrap_or_else(|| DEFAULT_DOCKER_HOST.to_owned()),
        };
        let unreachable = |message: String| Error::Unreachable { endpoint: endpoint.clone(), message };
        let timeout = REQUEST_TIMEOUT.as_secs();
        let version = bollard::API_DEFAULT_VERSION;
        let docker = if endpoint.starts_with("unix://") {
            Docker::connect_with_unix(&endpoint, timeout, version)
        } else if endpoint.starts_with('/') {
            Docker::connect_with_unix(&format!("unix://{endpoint}"), timeout, version)
        } else if endpoint.starts_with("tcp://") || endpoint.starts_with("http://") {
            Docker::connect_with_http(&endpoint, timeout, version)
        } else {
            return Err(unreachable("unsupported scheme; use unix://, tcp:// or http://".to_owned()));
        }
        .map_err(|e| unreachable(error_chain(&e)))?;
        Ok(DockerRuntime { docker, endpoint, negotiated: Arc::new(OnceCell::new()) })
    }

    /// The client, once the API version is agreed with the engine: bollard speaks a newer
    /// version than older engines (Debian 12's 20.10 knows 1.41) accept, and puts the version
    /// in every request's path.
    async fn ready(&self) -> Result<&Docker> {
        self.negotiated
            .get_or_try_init(|| async {
                // The clone shares the version with `self.docker`, which negotiation lowers.
                let docker =
                    self.docker.clone().negotiate_version().await.map_err(|e| Error::Unreachable {
                        endpoint: self.endpoint.clone(),
                        message: error_chain(&e),
                    })?;
                let api_version = docker.client_version();
                debug!(endpoint = %self.endpoint, %api_version, "connected to the Docker engine");
                Ok::<(), Error>(())
            })
            .await?;
        Ok(&self.docker)
    }

    /// The endpoint this runtime talks to.
    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    /// The bollard client, for callers (and tests) that need more than the [`Runtime`] trait;
    /// its API version is negotiated with the engine.
    pub async fn client(&self) -> Result<&Docker> {
        self.ready().await
    }

    fn error(&self, e: DockerError) -> Error {
        map_error(&self.endpoint, e)
    }

    /// Like [`DockerRuntime::error`], but the engine's 404 becomes [`Error::NotFound`].
    fn container_error(&self, id: &str, e: DockerError) -> Error {
        match status_code(&e) {
            Some(404) => Error::NotFound(id.to_owned()),
            _ => self.error(e),
        }
    }
}

#[async_trait]
impl Runtime for DockerRuntime {
    async fn info(&self) -> Result<EngineInfo> {
        let info = self.ready().await?.info().await.map_err(|e| self.error(e))?;
        Ok(EngineInfo {
            cpus: info.ncpu.and_then(|n| u32::try_from(n).ok()).unwrap_or(0),
            memory_bytes: info.mem_total.and_then(|n| u64::try_from(n).ok()).unwrap_or(0),
            version: format!("docker://{}", info.server_version.unwrap_or_default()),
            operating_system: info.os_type.unwrap_or_default(),
            architecture: info.architecture.unwrap_or_default(),
            kernel_version: info.kernel_version.unwrap_or_default(),
        })
    }

    async fn image_digest(&self, image: &str) -> Result<Option<String>> {
        let inspect = match self.ready().await?.inspect_image(image).await {
            Ok(inspect) => inspect,
            Err(e) if status_code(&e) == Some(404) => return Ok(None),
            Err(e) => return Err(self.error(e)),
        };
        let wanted = familiar_name(repository(image));
        let digest = inspect
            .repo_digests
            .unwrap_or_default()
            .into_iter()
            .find(|digest| digest.split_once('@').is_some_and(|(repo, _)| familiar_name(repo) == wanted));
        // An image built locally and never pushed or pulled has no repo digest; its id still
        // pins exactly what runs.
        Ok(digest.or(inspect.id))
    }

    async fn pull(&self, image: &str) -> Result<String> {
        let reference = with_default_tag(image);
        let pull_error = |message: String| Error::Pull { image: image.to_owned(), message };
        let options = CreateImageOptions { from_image: Some(reference.clone()), ..Default::default() };
        let mut progress = self.ready().await?.create_image(Some(options), None, None);
        loop {
            match tokio::time::timeout(PULL_IDLE_TIMEOUT, progress.next()).await {
                Ok(None) => break,
                Ok(Some(Ok(_))) => {}
                Ok(Some(Err(e))) => {
                    return Err(match e {
                        DockerError::DockerResponseServerError { message, .. } => pull_error(message),
                        DockerError::DockerStreamError { error } => pull_error(error),
                        other => self.error(other),
                    });
                }
                Err(_) => {
                    return Err(pull_error(format!("no progress for {}s", PULL_IDLE_TIMEOUT.as_secs())));
                }
            }
        }
        match self.image_digest(&reference).await? {
            Some(digest) => Ok(digest),
            None => Err(pull_error("the engine reported success but does not have the image".to_owned())),
        }
    }

    async fn create(&self, config: &ContainerConfig) -> Result<String> {
        let options = CreateContainerOptions { name: Some(config.name.clone()), ..Default::default() };
        let docker = self.ready().await?;
        let response =
            docker.create_container(Some(options), container_body(config)).await.map_err(|e| self.error(e))?;
        for warning in response.warnings.iter().filter(|w| !w.is_empty()) {
            warn!(container = %config.name, %warning, "the engine warned about the container");
        }
        Ok(response.id)
    }

    async fn start(&self, id: &str) -> Result<()> {
        // 304 (already running) counts as success in bollard.
        self.ready().await?.start_container(id, None).await.map_err(|e| self.container_error(id, e))
    }

    async fn stop(&self, id: &str, grace: Duration) -> Result<()> {
        let seconds = stop_timeout_seconds(grace);
        let options = StopContainerOptions { t: Some(seconds), signal: None };
        // The engine answers once the container is down: after at most the grace period, plus
        // the time SIGKILL takes. The usual request timeout must not cut that short.
        let docker = self.ready().await?.clone().with_timeout(REQUEST_TIMEOUT.saturating_add(grace));
        // 304 (not running) counts as success in bollard.
        docker.stop_container(id, Some(options)).await.map_err(|e| self.container_error(id, e))
    }

    async fn remove(&self, id: &str) -> Result<()> {
        // `v`: anonymous volumes (an image's VOLUME) go with the container instead of leaking.
        let options = RemoveContainerOptions { force: true, v: true, link: false };
        match self.ready().await?.remove_container(id, Some(options)).await {
            Ok(()) => Ok(()),
            Err(e) if status_code(&e) == Some(404) => Ok(()),
            // Someone else's removal is under way; the container is going either way.
            Err(DockerError::DockerResponseServerError { status_code: 409, message })
                if message.contains("already in progress") =>
            {
                Ok(())
            }
            Err(e) => Err(self.error(e)),
        }
    }

    async fn inspect(&self, id: &str) -> Result<Option<ContainerStatus>> {
        match self.ready().await?.inspect_container(id, None).await {
            Ok(inspect) => Ok(Some(container_status(inspect))),
            Err(e) if status_code(&e) == Some(404) => Ok(None),
            Err(e) => Err(self.error(e)),
        }
    }

    async fn list(&self, labels: &[(&str, &str)]) -> Result<Vec<ContainerStatus>> {
        let mut filters = HashMap::new();
        if !labels.is_empty() {
            let filter = |(k, v): &(&str, &str)| if v.is_empty() { k.to_string() } else { format!("{k}={v}") };
            filters.insert("label".to_owned(), labels.iter().map(filter).collect());
        }
        let options = ListContainersOptions { all: true, filters: Some(filters), ..Default::default() };
        let summaries = self.ready().await?.list_containers(Some(options)).await.map_err(|e| self.error(e))?;
        // The list omits exit codes, OOM kills, times and errors; inspect each container for
        // them. One removed in between is simply not listed.
        let statuses: Vec<Option<ContainerStatus>> = futures::stream::iter(summaries.into_iter().filter_map(|s| s.id))
            .map(|id| async move { self.inspect(&id).await })
            .buffered(LIST_CONCURRENCY)
            .try_collect()
            .await?;
        Ok(statuses.into_iter().flatten().collect())
    }

    async fn stats(&self, id: &str) -> Result<Usage> {
        // stream=false, one_shot=false: the engine samples twice about a second apart and sends
        // both (`precpu_stats`), which a CPU rate needs.
        let options = StatsOptions { stream: false, one_shot: false };
        let mut stats = self.ready().await?.stats(id, Some(options));
        match stats.next().await {
            Some(Ok(stats)) => Ok(usage(&stats)),
            Some(Err(e)) => Err(self.container_error(id, e)),
            None => Err(Error::Engine(format!("the engine sent no stats for container {id}"))),
        }
    }

    async fn logs(&self, id: &str, options: LogOptions) -> Result<BoxStream<'static, Result<LogLine>>> {
        // The stream reports a missing container only once polled; ask first, so that the
        // caller gets NotFound as the trait promises. The logs request itself goes out when the
        // stream is first polled: `follow` with `tail: Some(0)` starts from that moment.
        if self.inspect(id).await?.is_none() {
            return Err(Error::NotFound(id.to_owned()));
        }
        let request = LogsOptions {
            follow: options.follow,
            stdout: true,
            stderr: true,
            timestamps: true,
            tail: options.tail.map_or_else(|| "all".to_owned(), |n| n.to_string()),
            ..Default::default()
        };
        let frames = self.ready().await?.logs(id, Some(request)).boxed();
        let state = LogState {
            frames,
            splitter: LineSplitter::default(),
            ready: VecDeque::new(),
            done: false,
            endpoint: self.endpoint.clone(),
        };
        let lines = futures::stream::unfold(state, |mut state| async move {
            loop {
                if let Some(line) = state.ready.pop_front() {
                    return Some((line, state));
                }
                if state.done {
                    return None;
                }
                match state.frames.next().await {
                    Some(Ok(frame)) => state.ready.extend(state.splitter.push(frame).into_iter().map(Ok)),
                    Some(Err(e)) => {
                        state.done = true;
                        state.ready.extend(state.splitter.finish().into_iter().map(Ok));
                        state.ready.push_back(Err(map_error(&state.endpoint, e)));
                    }
                    None => {
                        state.done = true;
                        state.ready.extend(state.splitter.finish().into_iter().map(Ok));
                    }
                }
            }
        });
        Ok(lines.boxed())
    }
}

/// The engine's container for `config`: the trait's settings, plus the hardening every
/// Stratus container gets.
fn container_body(config: &ContainerConfig) -> ContainerCreateBody {
    let positive = |n: i64| (n > 0).then_some(n);
    let not_empty = |s: &str| (!s.is_empty()).then(|| s.to_owned());
    let port = (config.port > 0).then(|| format!("{}/tcp", config.port));
    let port_bindings = port.clone().map(|port| {
        // HostPort "": the engine picks a free port; `inspect` reports it.
        let binding = PortBinding { host_ip: Some(config.host_ip.clone()), host_port: Some(String::new()) };
        HashMap::from([(port, Some(vec![binding]))])
    });
    let mut tmpfs_options = "rw,nosuid,nodev".to_owned();
    if config.tmp_size_bytes > 0 {
        tmpfs_options.push_str(&format!(",size={}", config.tmp_size_bytes));
    }
    let host_config = HostConfig {
        nano_cpus: positive(config.nano_cpus),
        memory: positive(config.memory_bytes),
        // Equal to the memory limit: no swap beyond it, so the limit is what the workload gets
        // and an overrun is an OOM kill rather than a slow death in swap.
        memory_swap: positive(config.memory_bytes),
        pids_limit: positive(config.pids_limit),
        security_opt: Some(vec!["no-new-privileges".to_owned()]),
        cap_drop: Some(vec!["ALL".to_owned()]),
        cap_add: Some(config.cap_add.clone()),
        privileged: Some(false),
        readonly_rootfs: Some(config.read_only_root_fs),
        tmpfs: Some(HashMap::from([("/tmp".to_owned(), tmpfs_options)])),
        port_bindings,
        // Own network, IPC, PID and UTS namespaces, stated rather than left to the daemon's
        // configurable defaults.
        network_mode: Some("bridge".to_owned()),
        ipc_mode: Some("private".to_owned()),
        pid_mode: Some(String::new()),
        uts_mode: Some(String::new()),
        // The agent restarts crashed containers itself, with backoff, and reports each restart.
        restart_policy: Some(RestartPolicy { name: Some(RestartPolicyNameEnum::NO), maximum_retry_count: None }),
        auto_remove: Some(false),
        // json-file whatever the daemon's default: `logs` must be able to read it back.
        log_config: Some(HostConfigLogConfig {
            typ: Some("json-file".to_owned()),
            config: Some(HashMap::from([
                ("max-size".to_owned(), LOG_MAX_SIZE.to_owned()),
                ("max-file".to_owned(), LOG_MAX_FILES.to_owned()),
            ])),
        }),
        ..Default::default()
    };
    ContainerCreateBody {
        image: Some(config.image.clone()),
        // An empty command keeps the image's entrypoint and empty args its cmd. A command
        // without args runs without the image's cmd, as in Kubernetes: the engine only falls
        // back to the image's cmd when the entrypoint is not overridden.
        entrypoint: (!config.command.is_empty()).then(|| config.command.clone()),
        cmd: (!config.args.is_empty()).then(|| config.args.clone()),
        working_dir: not_empty(&config.working_dir),
        user: not_empty(&config.user),
        env: Some(config.env.iter().map(|(name, value)| format!("{name}={value}")).collect()),
        labels: Some(config.labels.iter().map(|(k, v)| (k.clone(), v.clone())).collect()),
        exposed_ports: port.map(|port| vec![port]),
        // Stdin closed (reads see EOF at once), no TTY: output goes to the logs, demultiplexed.
        open_stdin: Some(false),
        stdin_once: Some(false),
        attach_stdin: Some(false),
        tty: Some(false),
        // The agent probes the container itself; an image's HEALTHCHECK would only cost CPU.
        healthcheck: Some(HealthConfig { test: Some(vec!["NONE".to_owned()]), ..Default::default() }),
        host_config: Some(host_config),
        ..Default::default()
    }
}

fn container_status(inspect: ContainerInspectResponse) -> ContainerStatus {
    let state = inspect.state.unwrap_or_default();
    let running = state.running.unwrap_or(false);
    let finished_at = state.finished_at.as_deref().and_then(parse_time);
    let code = state.exit_code.unwrap_or(0);
    // A created container reports exit code 0 without having run; one whose start failed keeps
    // the status "created" but gets the failure's code (126, 127…).
    let exit_code = match state.status {
        Some(ContainerStateStatusEnum::EXITED | ContainerStateStatusEnum::DEAD) => Some(code),
        _ if !running && (finished_at.is_some() || code != 0) => Some(code),
        _ => None,
    };
    // The first published host port, whichever container port it is for: Stratus publishes one.
    let host_port = inspect
        .network_settings
        .and_then(|settings| settings.ports)
        .into_iter()
        .flatten()
        .filter_map(|(_, bindings)| bindings)
        .flatten()
        .find_map(|binding| binding.host_port.and_then(|port| port.parse::<u16>().ok()).filter(|port| *port > 0));
    ContainerStatus {
        id: inspect.id.unwrap_or_default(),
        name: inspect.name.map(|name| name.trim_start_matches('/').to_owned()).unwrap_or_default(),
        labels: inspect.config.and_then(|config| config.labels).unwrap_or_default().into_iter().collect(),
        running,
        exit_code,
        oom_killed: state.oom_killed.unwrap_or(false),
        started_at: state.started_at.as_deref().and_then(parse_time),
        finished_at,
        host_port: if running { host_port } else { None },
        error: state.error.unwrap_or_default(),
    }
}

/// CPU (over the engine's two samples) and memory (the working set, as the kubelet counts it).
fn usage(stats: &ContainerStatsResponse) -> Usage {
    let total = |cpu: Option<&ContainerCpuStats>| {
        let container = cpu.and_then(|cpu| cpu.cpu_usage.as_ref()).and_then(|usage| usage.total_usage);
        (container.unwrap_or(0), cpu.and_then(|cpu| cpu.system_cpu_usage).unwrap_or(0))
    };
    let (cpu_now, system_now) = total(stats.cpu_stats.as_ref());
    let (cpu_before, system_before) = total(stats.precpu_stats.as_ref());
    let cpu_delta = cpu_now.saturating_sub(cpu_before);
    let system_delta = system_now.saturating_sub(system_before);
    let online_cpus = stats
        .cpu_stats
        .as_ref()
        .and_then(|cpu| {
            cpu.online_cpus.filter(|n| *n > 0).map(u64::from).or_else(|| {
                cpu.cpu_usage.as_ref().and_then(|usage| usage.percpu_usage.as_ref()).map(|per| per.len() as u64)
            })
        })
        .filter(|n| *n > 0)
        .unwrap_or(1);
    // The system counter covers every CPU, so the share of it times the CPU count is the number
    // of CPUs the container kept busy.
    let cpu_millis = if system_delta > 0 {
        (cpu_delta as f64 / system_delta as f64 * online_cpus as f64 * 1000.0).round() as i64
    } else {
        0
    };
    // Page cache that can be dropped under pressure is not counted (`inactive_file`, as the
    // kubelet's working set and `docker stats` do); all of `cache` is not subtracted, as it
    // includes the tmpfs at /tmp, which does count against the limit and toward an OOM kill.
    let memory = stats.memory_stats.as_ref();
    let used = memory.and_then(|memory| memory.usage).unwrap_or(0);
    let inactive_file = memory
        .and_then(|memory| memory.stats.as_ref())
        .and_then(|stats| stats.get("total_inactive_file").or_else(|| stats.get("inactive_file")).copied())
        .unwrap_or(0);
    let memory_bytes = i64::try_from(used.saturating_sub(inactive_file)).unwrap_or(i64::MAX);
    Usage { cpu_millis, memory_bytes }
}

/// Docker's stop timeout is whole seconds; a partial second is rounded up so that the
/// workload gets at least the grace it was promised.
fn stop_timeout_seconds(grace: Duration) -> i32 {
    let seconds = grace.as_secs() + u64::from(grace.subsec_nanos() > 0);
    i32::try_from(seconds).unwrap_or(i32::MAX)
}

/// The state of a log stream being turned into lines.
struct LogState {
    frames: BoxStream<'static, Result<LogOutput, DockerError>>,
    splitter: LineSplitter,
    ready: VecDeque<Result<LogLine>>,
    done: bool,
    endpoint: String,
}

/// Turns the engine's log frames into lines. A frame is one log entry with its timestamp in
/// front (`2024-05-01T12:00:00.123456789Z message\n`); a line longer than the engine's buffer
/// (16 KiB) comes as several entries, so text without a newline waits, per stream, for the
/// rest of its line, and the line keeps the timestamp of its first part.
#[derive(Default)]
struct LineSplitter {
    /// The unfinished line of stdout and of stderr.
    partial: [Option<(Vec<u8>, Option<SystemTime>)>; 2],
}

impl LineSplitter {
    fn push(&mut self, frame: LogOutput) -> Vec<LogLine> {
        let (stream, bytes) = match frame {
            LogOutput::StdErr { message } => (LogStream::Stderr, message),
            // A container with a TTY sends raw output (Console); Stratus creates none, but an
            // adopted one may have it. Stdin is never echoed; keep it with stdout rather than lose it.
            LogOutput::StdOut { message } | LogOutput::Console { message } | LogOutput::StdIn { message } => {
                (LogStream::Stdout, message)
            }
        };
        let (timestamp, mut text) = split_timestamp(&bytes);
        let slot = &mut self.partial[stream_index(stream)];
        let mut lines = Vec::new();
        while let Some(newline) = text.iter().position(|b| *b == b'\n') {
            let (mut line, started) = slot.take().unwrap_or_else(|| (Vec::new(), timestamp));
            line.extend_from_slice(&text[..newline]);
            lines.push(log_line(stream, line, started));
            text = &text[newline + 1..];
        }
        if !text.is_empty() {
            let (line, _) = slot.get_or_insert_with(|| (Vec::new(), timestamp));
            line.extend_from_slice(text);
        }
        lines
    }

    /// The unfinished lines, once no more frames will come.
    fn finish(&mut self) -> Vec<LogLine> {
        [LogStream::Stdout, LogStream::Stderr]
            .into_iter()
            .filter_map(|stream| {
                let (line, started) = self.partial[stream_index(stream)].take()?;
                Some(log_line(stream, line, started))
            })
            .collect()
    }
}

fn stream_index(stream: LogStream) -> usize {
    match stream {
        LogStream::Stdout => 0,
        LogStream::Stderr => 1,
    }
}

fn log_line(stream: LogStream, mut line: Vec<u8>, timestamp: Option<SystemTime>) -> LogLine {
    if line.last() == Some(&b'\r') {
        line.pop();
    }
    LogLine { stream, line: String::from_utf8_lossy(&line).into_owned(), timestamp }
}

/// Splits the engine's timestamp off the front of a log entry; an entry without one is kept
/// whole.
fn split_timestamp(entry: &[u8]) -> (Option<SystemTime>, &[u8]) {
    let Some(space) = entry.iter().take(64).position(|b| *b == b' ') else { return (None, entry) };
    let parsed = std::str::from_utf8(&entry[..space]).ok().and_then(parse_time);
    match parsed {
        Some(time) => (Some(time), &entry[space + 1..]),
        None => (None, entry),
    }
}

/// Parses an RFC 3339 time as the engine writes it (`2024-05-01T12:00:00.123456789Z`, or with a
/// `±hh:mm` offset). Docker's zero time (`0001-01-01T00:00:00Z`), used for "never", and any
/// other time before 1970 give `None`.
fn parse_time(text: &str) -> Option<SystemTime> {
    let number = |range: std::ops::Range<usize>| -> Option<i64> {
        let digits = text.get(range)?;
        if digits.bytes().all(|b| b.is_ascii_digit()) { digits.parse().ok() } else { None }
    };
    let separators = [(4, b'-'), (7, b'-'), (10, b'T'), (13, b':'), (16, b':')];
    if !separators.iter().all(|(at, sep)| text.as_bytes().get(*at).is_some_and(|b| b.eq_ignore_ascii_case(sep))) {
        return None;
    }
    let (year, month, day) = (number(0..4)?, number(5..7)?, number(8..10)?);
    let (hour, minute, second) = (number(11..13)?, number(14..16)?, number(17..19)?);
    if !(1..=12).contains(&month) || !(1..=31).contains(&day) || hour > 23 || minute > 59 || second > 60 {
        return None;
    }
    let mut rest = text.get(19..)?;
    let mut nanos: u32 = 0;
    if let Some(fraction) = rest.strip_prefix('.') {
        let digits = fraction.bytes().take_while(u8::is_ascii_digit).count();
        if digits == 0 {
            return None;
        }
        // Nanoseconds: the first nine digits, padded on the right.
        let kept = &fraction[..digits.min(9)];
        nanos = kept.parse::<u32>().ok()? * 10_u32.pow(9 - kept.len() as u32);
        rest = &fraction[digits..];
    }
    let offset_seconds = match rest.as_bytes() {
        [b'Z' | b'z'] => 0,
        [sign @ (b'+' | b'-'), h1, h2, b':', m1, m2] => {
            let digits = [*h1, *h2, *m1, *m2];
            if !digits.iter().all(u8::is_ascii_digit) {
                return None;
            }
            let [h1, h2, m1, m2] = digits.map(|d| i64::from(d - b'0'));
            let offset = (h1 * 10 + h2) * 3600 + (m1 * 10 + m2) * 60;
            if *sign == b'-' { -offset } else { offset }
        }
        _ => return None,
    };
    let seconds = days_from_civil(year, month, day) * 86_400 + hour * 3600 + minute * 60 + second - offset_seconds;
    let seconds = u64::try_from(seconds).ok()?;
    Some(UNIX_EPOCH + Duration::new(seconds, nanos))
}

/// Days from 1970-01-01 to the given proleptic Gregorian date (Howard Hinnant's algorithm).
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let year = if month <= 2 { year - 1 } else { year };
    let era = year.div_euclid(400);
    let year_of_era = year - era * 400;
    let month_from_march = (month + 9) % 12;
    let day_of_year = (153 * month_from_march + 2) / 5 + day - 1;
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    era * 146_097 + day_of_era - 719_468
}

/// The repository of an image reference: without its tag or digest.
fn repository(image: &str) -> &str {
    let name = image.split_once('@').map_or(image, |(name, _)| name);
    // A colon after the last slash starts the tag; one before it belongs to a registry's port.
    let last_slash = name.rfind('/').map_or(0, |i| i + 1);
    match name[last_slash..].find(':') {
        Some(colon) => &name[..last_slash + colon],
        None => name,
    }
}

/// A repository as the engine names it in RepoDigests: Docker Hub's default registry and
/// `library/` namespace left out.
fn familiar_name(repository: &str) -> &str {
    let name = repository
        .strip_prefix("docker.io/")
        .or_else(|| repository.strip_prefix("index.docker.io/"))
        .unwrap_or(repository);
    name.strip_prefix("library/").unwrap_or(name)
}

/// The reference with `:latest` added when it has neither tag nor digest: the engine pulls
/// every tag of a bare repository name.
fn with_default_tag(image: &str) -> String {
    if image.contains('@') || repository(image) != image { image.to_owned() } else { format!("{image}:latest") }
}

/// The engine's HTTP status, when the engine answered at all.
fn status_code(e: &DockerError) -> Option<u16> {
    match e {
        DockerError::DockerResponseServerError { status_code, .. } => Some(*status_code),
        _ => None,
    }
}

/// Maps a bollard error: the engine's refusals keep its message; failing to talk to it at all
/// is [`Error::Unreachable`].
fn map_error(endpoint: &str, e: DockerError) -> Error {
    match e {
        DockerError::DockerResponseServerError { message, .. } => Error::Engine(message),
        DockerError::DockerStreamError { error } => Error::Engine(error),
        DockerError::HyperLegacyError { .. }
        | DockerError::HyperResponseError { .. }
        | DockerError::IOError { .. }
        | DockerError::SocketNotFoundError(_)
        | DockerError::RequestTimeoutError => {
            Error::Unreachable { endpoint: endpoint.to_owned(), message: error_chain(&e) }
        }
        other => Error::Engine(error_chain(&other)),
    }
}

/// An error with its causes: bollard's connection errors say only "client error (Connect)"
/// at the top, and the reason ("Connection refused") below.
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut message = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        let text = cause.to_string();
        if !message.contains(&text) {
            message.push_str(": ");
            message.push_str(&text);
        }
        source = cause.source();
    }
    message
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use std::collections::BTreeMap;

    use bollard::models::{ContainerCpuUsage, ContainerMemoryStats};
    use bytes::Bytes;

    use super::*;

    fn at(seconds: u64, nanos: u32) -> Option<SystemTime> {
        Some(UNIX_EPOCH + Duration::new(seconds, nanos))
    }

    #[test]
    fn times_parse_as_the_engine_writes_them() {
        assert_eq!(parse_time("1970-01-01T00:00:00Z"), at(0, 0));
        assert_eq!(parse_time("2026-11-25T07:56:24.673016677Z"), at(1_795_593_384, 673_016_677));
        assert_eq!(parse_time("2000-02-29T12:00:00.5Z"), at(951_825_600, 500_000_000));
        assert_eq!(parse_time("2000-02-29T14:00:00+02:00"), at(951_825_600, 0));
        assert_eq!(parse_time("2000-02-29T10:30:00.000000000123-01:30"), at(951_825_600, 0));
    }

    #[test]
    fn the_zero_time_and_garbage_are_no_time() {
        assert_eq!(parse_time("0001-01-01T00:00:00Z"), None);
        for bad in [
            "",
            "2024",
            "2024-13-01T00:00:00Z",
            "2024-01-01 00:00:00Z",
            "2024-01-01T00:00:00",
            "2024-01-01T00:00:00.Z",
            "2024-01-01T00:00:00+1:00",
            "２０２４-01-01T00:00:00Z",
        ] {
            assert_eq!(parse_time(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn repositories_drop_tag_and_digest_but_keep_the_registry_port() {
        assert_eq!(repository("127.0.0.1:5000/hello:v1"), "127.0.0.1:5000/hello");
        assert_eq!(repository("127.0.0.1:5000/hello"), "127.0.0.1:5000/hello");
        assert_eq!(repository("nginx@sha256:abc"), "nginx");
        assert_eq!(repository("registry:5000/a/b:1@sha256:abc"), "registry:5000/a/b");
        assert_eq!(familiar_name("docker.io/library/nginx"), "nginx");
        assert_eq!(familiar_name("docker.io/grafana/grafana"), "grafana/grafana");
        assert_eq!(with_default_tag("nginx"), "nginx:latest");
        assert_eq!(with_default_tag("127.0.0.1:5000/hello"), "127.0.0.1:5000/hello:latest");
        assert_eq!(with_default_tag("127.0.0.1:5000/hello:v1"), "127.0.0.1:5000/hello:v1");
        assert_eq!(with_default_tag("hello@sha256:abc"), "hello@sha256:abc");
    }

    #[test]
    fn stop_timeouts_round_up_to_whole_seconds() {
        assert_eq!(stop_timeout_seconds(Duration::ZERO), 0);
        assert_eq!(stop_timeout_seconds(Duration::from_millis(1)), 1);
        assert_eq!(stop_timeout_seconds(Duration::from_secs(10)), 10);
        assert_eq!(stop_timeout_seconds(Duration::from_millis(10_001)), 11);
        assert_eq!(stop_timeout_seconds(Duration::from_secs(u64::MAX)), i32::MAX);
    }

    fn out(text: &str) -> LogOutput {
        LogOutput::StdOut { message: Bytes::copy_from_slice(text.as_bytes()) }
    }

    fn err(text: &str) -> LogOutput {
        LogOutput::StdErr { message: Bytes::copy_from_slice(text.as_bytes()) }
    }

    fn line(stream: LogStream, text: &str, timestamp: Option<SystemTime>) -> LogLine {
        LogLine { stream, line: text.to_owned(), timestamp }
    }

    #[test]
    fn log_entries_become_tagged_lines_with_their_timestamps() {
        let mut splitter = LineSplitter::default();
        assert_eq!(
            splitter.push(out("1970-01-01T00:00:01.5Z hello\n")),
            [line(LogStream::Stdout, "hello", at(1, 500_000_000))]
        );
        assert_eq!(splitter.push(err("1970-01-01T00:00:02Z oops\r\n")), [line(LogStream::Stderr, "oops", at(2, 0))]);
        // Several lines in one entry share its timestamp; an entry without one is kept whole.
        assert_eq!(
            splitter.push(out("1970-01-01T00:00:03Z a\nb\n")),
            [line(LogStream::Stdout, "a", at(3, 0)), line(LogStream::Stdout, "b", at(3, 0))]
        );
        assert_eq!(splitter.push(out("no timestamp here\n")), [line(LogStream::Stdout, "no timestamp here", None)]);
        assert_eq!(splitter.push(out("1970-01-01T00:00:04Z \n")), [line(LogStream::Stdout, "", at(4, 0))]);
        assert!(splitter.finish().is_empty());
    }

    #[test]
    fn a_long_line_split_into_entries_is_joined_per_stream() {
        let mut splitter = LineSplitter::default();
        assert!(splitter.push(out("1970-01-01T00:00:01Z first half, ")).is_empty());
        assert_eq!(
            splitter.push(err("1970-01-01T00:00:02Z meanwhile\n")),
            [line(LogStream::Stderr, "meanwhile", at(2, 0))]
        );
        // A multi-byte character cut between entries survives.
        assert!(
            splitter
                .push(LogOutput::StdOut { message: Bytes::from_static(b"1970-01-01T00:00:03Z caf\xc3") })
                .is_empty()
        );
        assert_eq!(
            splitter.push(LogOutput::StdOut { message: Bytes::from_static(b"1970-01-01T00:00:04Z \xa9 end\n") }),
            [line(LogStream::Stdout, "first half, café end", at(1, 0))]
        );
        assert!(splitter.push(err("1970-01-01T00:00:05Z no newline at the end")).is_empty());
        assert_eq!(splitter.finish(), [line(LogStream::Stderr, "no newline at the end", at(5, 0))]);
        assert!(splitter.finish().is_empty());
    }

    fn cpu(total: u64, system: u64, online: Option<u32>, per_cpu: usize) -> ContainerCpuStats {
        ContainerCpuStats {
            cpu_usage: Some(ContainerCpuUsage {
                total_usage: Some(total),
                percpu_usage: Some(vec![0; per_cpu]),
                ..Default::default()
            }),
            system_cpu_usage: Some(system),
            online_cpus: online,
            ..Default::default()
        }
    }

    fn memory(usage: u64, stats: &[(&str, u64)]) -> ContainerMemoryStats {
        ContainerMemoryStats {
            usage: Some(usage),
            stats: Some(stats.iter().map(|(k, v)| ((*k).to_owned(), *v)).collect()),
            ..Default::default()
        }
    }

    #[test]
    fn usage_is_the_cpu_share_times_the_cpus_and_the_working_set() {
        // Half of one CPU on a 4-CPU host: 0.5/4 of the system's time.
        let stats = ContainerStatsResponse {
            cpu_stats: Some(cpu(1_500_000_000, 20_000_000_000, Some(4), 4)),
            precpu_stats: Some(cpu(1_000_000_000, 16_000_000_000, Some(4), 4)),
            memory_stats: Some(memory(100 << 20, &[("cache", 30 << 20), ("total_inactive_file", 20 << 20)])),
            ..Default::default()
        };
        assert_eq!(usage(&stats), Usage { cpu_millis: 500, memory_bytes: 80 << 20 });
        // cgroup v2 names it inactive_file; without online_cpus the per-CPU list counts.
        let stats = ContainerStatsResponse {
            cpu_stats: Some(cpu(3_000, 4_000, None, 2)),
            precpu_stats: Some(cpu(1_000, 0, None, 2)),
            memory_stats: Some(memory(10 << 20, &[("inactive_file", 4 << 20)])),
            ..Default::default()
        };
        assert_eq!(usage(&stats), Usage { cpu_millis: 1000, memory_bytes: 6 << 20 });
    }

    #[test]
    fn usage_of_a_stopped_container_is_zero() {
        assert_eq!(usage(&ContainerStatsResponse::default()), Usage::default());
    }

    #[test]
    fn the_container_body_carries_limits_hardening_and_overrides() {
        let config = ContainerConfig {
            name: "n".into(),
            image: "img:v1".into(),
            command: vec!["/bin/app".into()],
            args: vec![],
            working_dir: "/work".into(),
            env: vec![("A".into(), "1".into()), ("B".into(), "x=y".into())],
            labels: BTreeMap::from([("k".to_owned(), "v".to_owned())]),
            port: 8080,
            host_ip: "127.0.0.1".into(),
            nano_cpus: 500_000_000,
            memory_bytes: 64 << 20,
            pids_limit: 100,
            cap_add: vec!["NET_BIND_SERVICE".into()],
            user: "1000:1000".into(),
            read_only_root_fs: true,
            tmp_size_bytes: 1 << 20,
        };
        let body = container_body(&config);
        assert_eq!(body.entrypoint, Some(vec!["/bin/app".to_owned()]));
        assert_eq!(body.cmd, None);
        assert_eq!(body.env, Some(vec!["A=1".to_owned(), "B=x=y".to_owned()]));
        assert_eq!(body.exposed_ports, Some(vec!["8080/tcp".to_owned()]));
        assert_eq!(body.open_stdin, Some(false));
        let host = body.host_config.unwrap();
        assert_eq!(
            (host.nano_cpus, host.memory, host.memory_swap, host.pids_limit),
            (Some(500_000_000), Some(64 << 20), Some(64 << 20), Some(100))
        );
        assert_eq!(host.cap_drop, Some(vec!["ALL".to_owned()]));
        assert_eq!(host.tmpfs.unwrap()["/tmp"], "rw,nosuid,nodev,size=1048576");
        let binding = &host.port_bindings.unwrap()["8080/tcp"].clone().unwrap()[0];
        assert_eq!((binding.host_ip.as_deref(), binding.host_port.as_deref()), (Some("127.0.0.1"), Some("")));

        // No limits: nothing is sent, so the engine's defaults apply; no port: nothing published.
        let body =
            container_body(&ContainerConfig { image: "img".into(), args: vec!["serve".into()], ..Default::default() });
        assert_eq!((body.entrypoint, body.cmd), (None, Some(vec!["serve".to_owned()])));
        let host = body.host_config.unwrap();
        assert_eq!((host.nano_cpus, host.memory, host.memory_swap, host.pids_limit), (None, None, None, None));
        assert_eq!((host.port_bindings, body.exposed_ports), (None, None));
        assert_eq!(host.tmpfs.unwrap()["/tmp"], "rw,nosuid,nodev");
    }

    #[test]
    fn connection_failures_are_unreachable_and_refusals_keep_the_engine_message() {
        let refused = DockerError::DockerResponseServerError { status_code: 409, message: "name in use".into() };
        assert!(matches!(map_error("e", refused), Error::Engine(m) if m == "name in use"));
        let missing = map_error("unix:///x.sock", DockerError::SocketNotFoundError("/x.sock".into()));
        assert!(matches!(&missing, Error::Unreachable { endpoint, .. } if endpoint == "unix:///x.sock"), "{missing:?}");
    }
}

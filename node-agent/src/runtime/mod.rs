//! The container engine, behind a trait: [`docker::DockerRuntime`] drives a real Docker engine (and
//! [`lazy::LazyDocker`] connects to it when it comes up);
//! through bollard; [`fake::FakeRuntime`] serves the tests of everything above it.

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use futures::stream::BoxStream;

pub mod docker;
pub mod fake;
pub mod lazy;

/// Labels the agent puts on every container it creates, so that it can find them again (after
/// its own restart) and tell its containers from anyone else's.
/// `NODE` marks a container as managed by Stratus; its value is the node name.
pub mod labels {
    pub use stratus_api::wellknown::labels::{INSTANCE, INSTANCE_UID, NAMESPACE, NODE, REVISION, SERVICE};
}

/// Facts about the engine and its host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EngineInfo {
    pub cpus: u32,
    pub memory_bytes: u64,
    /// e.g. "docker://20.10.24"
    pub version: String,
    pub operating_system: String,
    pub architecture: String,
    pub kernel_version: String,
}

/// Everything needed to create one container.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ContainerConfig {
    /// The container's name in the engine (unique per engine).
    pub name: String,
    pub image: String,
    /// Overrides the image's entrypoint when not empty (Kubernetes `command`).
    pub command: Vec<String>,
    /// Overrides the image's cmd when not empty (Kubernetes `args`).
    pub args: Vec<String>,
    pub working_dir: String,
    pub env: Vec<(String, String)>,
    pub labels: BTreeMap<String, String>,
    /// The container port that receives requests; published on `host_ip` at a free host port.
    pub port: u16,
    /// The host address the port is published on (e.g. 127.0.0.1).
    pub host_ip: String,
    /// The engine network the container joins. A runtime makes it if it is missing, as a
    /// network on which containers cannot reach one another; empty = the engine's default
    /// bridge (where they can). The host's network is never used.
    pub network: String,
    /// CPU limit in billionths of a CPU (Docker's NanoCpus); 0 = none.
    pub nano_cpus: i64,
    /// Memory limit in bytes; 0 = none. Swap is not allowed beyond it.
    pub memory_bytes: i64,
    /// At most this many processes; 0 = the engine's default.
    pub pids_limit: i64,
    /// Capabilities kept; all others are dropped.
    pub cap_add: Vec<String>,
    /// "uid" or "uid:gid"; empty = the image's user.
    pub user: String,
    pub read_only_root_fs: bool,
    /// Size of the writable tmpfs at /tmp (counted against the memory limit).
    pub tmp_size_bytes: i64,
}

/// What the engine reports about one container.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ContainerStatus {
    pub id: String,
    pub name: String,
    pub labels: BTreeMap<String, String>,
    pub running: bool,
    /// Set once the container has exited.
    pub exit_code: Option<i64>,
    pub oom_killed: bool,
    pub started_at: Option<SystemTime>,
    pub finished_at: Option<SystemTime>,
    /// The host port `port` was published on, once running.
    pub host_port: Option<u16>,
    /// The container's own address on its network, once running.
    pub ip: Option<std::net::IpAddr>,
    /// The engine's error for a container that failed to start, if any.
    pub error: String,
}

/// Resource use of one container, averaged over a short sample.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Usage {
    pub cpu_millis: i64,
    pub memory_bytes: i64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogStream {
    Stdout,
    Stderr,
}

/// One line of a container's output.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogLine {
    pub stream: LogStream,
    /// The line without its trailing newline.
    pub line: String,
    pub timestamp: Option<SystemTime>,
}

/// Which logs to read.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LogOptions {
    /// Keep streaming new lines until the container stops or the stream is dropped.
    pub follow: bool,
    /// Only the last N lines (before following); `None` = all.
    pub tail: Option<u64>,
    /// Lines longer than this many bytes are cut there and marked (see [`cut_line`]), so that
    /// output without newlines cannot make the reader hold it all; 0 =
    /// [`DEFAULT_MAX_LINE_BYTES`]. Never unlimited.
    pub max_line_bytes: usize,
}

impl LogOptions {
    /// The longest line these options let through, in bytes.
    pub fn line_limit(&self) -> usize {
        if self.max_line_bytes == 0 { DEFAULT_MAX_LINE_BYTES } else { self.max_line_bytes }
    }
}

/// The longest log line relayed whole unless the reader says otherwise: 16 KiB, the size at
/// which Docker's own log drivers split a line.
pub const DEFAULT_MAX_LINE_BYTES: usize = 16 * 1024;

/// What ends a line that was cut at `max` bytes.
pub fn cut_marker(max: usize) -> String {
    format!(" [stratus: line cut at {max} bytes]")
}

/// Cuts `line` to at most `max` bytes (at a character boundary) and marks it (see
/// [`cut_marker`]) when it is longer; says whether it was.
pub fn cut_line(line: &mut String, max: usize) -> bool {
    if line.len() <= max {
        return false;
    }
    let mut end = max;
    while !line.is_char_boundary(end) {
        end -= 1;
    }
    line.truncate(end);
    line.push_str(&cut_marker(max));
    true
}

/// Errors of a runtime, each naming what failed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum Error {
    /// The engine cannot be reached at all.
    #[error("cannot reach the container engine at {endpoint}: {message}")]
    Unreachable { endpoint: String, message: String },
    /// The image does not exist in its registry (or the registry refused it).
    #[error("pulling {image} failed: {message}")]
    Pull { image: String, message: String },
    #[error("no container {0}")]
    NotFound(String),
    /// The engine refused a request (e.g. a bad configuration).
    #[error("{0}")]
    Engine(String),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// A container engine. Every method is safe to call concurrently.
#[async_trait]
pub trait Runtime: Send + Sync + 'static {
    async fn info(&self) -> Result<EngineInfo>;

    /// The image's repo digest (`repo@sha256:…`) if it is present locally.
    async fn image_digest(&self, image: &str) -> Result<Option<String>>;

    /// The user the image's configuration runs its process as (its `USER`: a name or uid,
    /// optionally `:group`), `Some("")` when it sets none (root), `None` when the image is not
    /// present locally.
    async fn image_user(&self, image: &str) -> Result<Option<String>>;

    /// Pulls the image and returns its repo digest.
    async fn pull(&self, image: &str) -> Result<String>;

    /// Creates (does not start) a container; returns its id.
    async fn create(&self, config: &ContainerConfig) -> Result<String>;

    async fn start(&self, id: &str) -> Result<()>;

    /// Changes the CPU limit of a container, running or not, without restarting it (the startup
    /// CPU boost ends this way). `nano_cpus` 0 removes the limit.
    async fn update_cpu(&self, id: &str, nano_cpus: i64) -> Result<()>;

    /// The subnets (CIDR, as `172.18.0.0/16`) of the engine network containers of
    /// [`ContainerConfig::network`] `name` join, making it first as `create` would when it is
    /// missing. An agent that advertises container addresses publishes them on its Node.
    async fn network_subnets(&self, name: &str) -> Result<Vec<String>>;

    /// Sends SIGTERM, waits up to `grace`, then SIGKILL. Stopping a stopped container is fine.
    async fn stop(&self, id: &str, grace: Duration) -> Result<()>;

    /// Removes the container (killing it if it still runs). Removing a missing one is fine.
    async fn remove(&self, id: &str) -> Result<()>;

    /// The container's state, or `None` if it does not exist.
    async fn inspect(&self, id: &str) -> Result<Option<ContainerStatus>>;

    /// Every container (running or not) carrying all of `labels`; an empty value matches any
    /// value of its label.
    async fn list(&self, labels: &[(&str, &str)]) -> Result<Vec<ContainerStatus>>;

    /// Current CPU and memory use of a running container.
    async fn stats(&self, id: &str) -> Result<Usage>;

    /// The container's output, stdout and stderr interleaved as the engine recorded them, each
    /// line at most [`LogOptions::line_limit`] bytes (longer ones cut, see [`cut_line`]).
    async fn logs(&self, id: &str, options: LogOptions) -> Result<BoxStream<'static, Result<LogLine>>>;
}

//! An in-memory [`Runtime`] for the tests of everything above the runtime: containers are
//! records whose life the test drives (exit, OOM, failing pulls), and every call is recorded.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use futures::StreamExt;
use futures::stream::BoxStream;
use tokio::sync::broadcast;

use super::{
    ContainerConfig, ContainerStatus, EngineInfo, Error, LogLine, LogOptions, LogStream, Result, Runtime, Usage,
    cut_line,
};

/// The subnet the fake engine reports for every network. Its containers have no address there
/// (`ContainerStatus::ip` is `None`): whether one answers could not be told from a test.
pub const FAKE_SUBNET: &str = "10.88.0.0/16";

/// One fake container.
#[derive(Debug, Clone)]
pub struct FakeContainer {
    pub config: ContainerConfig,
    pub status: ContainerStatus,
    pub logs: Vec<LogLine>,
    /// Set by `stop`: the grace period the container was given.
    pub stopped_with: Option<Duration>,
    pub usage: Usage,
    /// A real socket on the published port while the container "runs", so that probes and
    /// clients can connect; `None` when stopped or when its image does not listen.
    listener: Option<Arc<std::net::TcpListener>>,
}

#[derive(Default)]
struct State {
    containers: BTreeMap<String, FakeContainer>,
    images: HashMap<String, String>,
    /// The `USER` of images that set one.
    image_users: HashMap<String, String>,
    pull_errors: HashMap<String, String>,
    pulls: Vec<String>,
    stops: Vec<(String, Duration)>,
    /// Every `update_cpu`: the container, its CPU limit before and after.
    cpu_updates: Vec<(String, i64, i64)>,
    next_id: u64,
    unreachable: Option<String>,
    silent_images: Vec<String>,
    /// How long a running container takes to exit once asked to stop.
    stop_delay: Duration,
}

/// A fake engine. Cheap to clone; clones share state.
#[derive(Clone)]
pub struct FakeRuntime {
    state: Arc<Mutex<State>>,
    log_tx: broadcast::Sender<(String, LogLine)>,
}

impl Default for FakeRuntime {
    fn default() -> FakeRuntime {
        FakeRuntime::new()
    }
}

impl FakeRuntime {
    pub fn new() -> FakeRuntime {
        let state = State::default();
        FakeRuntime { state: Arc::new(Mutex::new(state)), log_tx: broadcast::channel(1024).0 }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A test that panicked while holding the lock has failed already; keep going.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Makes `image` present locally with this digest.
    pub fn add_image(&self, image: &str, digest: &str) {
        self.lock().images.insert(image.to_string(), digest.to_string());
    }

    /// Makes `image` run as `user` (its `USER`); images run as root ("") otherwise.
    pub fn set_image_user(&self, image: &str, user: &str) {
        self.lock().image_users.insert(image.to_string(), user.to_string());
    }

    /// Makes pulls of `image` fail with `message`.
    pub fn fail_pull(&self, image: &str, message: &str) {
        self.lock().pull_errors.insert(image.to_string(), message.to_string());
    }

    /// Containers of `image` never listen (they never become ready).
    pub fn never_listen(&self, image: &str) {
        self.lock().silent_images.push(image.to_string());
    }

    /// Running containers take `delay` to exit once asked to stop, as a workload finishing its
    /// work after SIGTERM would.
    pub fn set_stop_delay(&self, delay: Duration) {
        self.lock().stop_delay = delay;
    }

    /// Makes every call fail as if the engine were down (`None` brings it back).
    pub fn set_unreachable(&self, message: Option<&str>) {
        self.lock().unreachable = message.map(str::to_string);
    }

    /// The images pulled so far, in order.
    pub fn pulls(&self) -> Vec<String> {
        self.lock().pulls.clone()
    }

    /// The containers stopped so far, with the grace period each was given.
    pub fn stops(&self) -> Vec<(String, Duration)> {
        self.lock().stops.clone()
    }

    /// Every CPU limit changed by `update_cpu`: (container, before, after), in order.
    pub fn cpu_updates(&self) -> Vec<(String, i64, i64)> {
        self.lock().cpu_updates.clone()
    }

    pub fn containers(&self) -> Vec<FakeContainer> {
        self.lock().containers.values().cloned().collect()
    }

    pub fn container(&self, id: &str) -> Option<FakeContainer> {
        self.lock().containers.get(id).cloned()
    }

    /// Ends a running container as the engine would report it.
    pub fn exit(&self, id: &str, code: i64, oom_killed: bool) {
        let mut st = self.lock();
        if let Some(c) = st.containers.get_mut(id) {
            c.listener = None;
            c.status.running = false;
            c.status.exit_code = Some(code);
            c.status.oom_killed = oom_killed;
            c.status.finished_at = Some(SystemTime::now());
        }
    }

    /// Appends a line to a container's output.
    pub fn log(&self, id: &str, stream: LogStream, line: &str) {
        self.log_at(id, stream, line, SystemTime::now());
    }

    /// Appends a line to a container's output, as written at `timestamp`.
    pub fn log_at(&self, id: &str, stream: LogStream, line: &str, timestamp: SystemTime) {
        let entry = LogLine { stream, line: line.to_string(), timestamp: Some(timestamp) };
        if let Some(c) = self.lock().containers.get_mut(id) {
            c.logs.push(entry.clone());
        }
        let _ = self.log_tx.send((id.to_string(), entry));
    }

    pub fn set_usage(&self, id: &str, usage: Usage) {
        if let Some(c) = self.lock().containers.get_mut(id) {
            c.usage = usage;
        }
    }

    /// Adds a container as if created by someone else (e.g. an earlier agent).
    pub fn insert(&self, config: ContainerConfig, running: bool) -> String {
        let mut st = self.lock();
        st.next_id += 1;
        let id = format!("fake{:08}", st.next_id);
        let listener = if running && !st.silent_images.contains(&config.image) { listen() } else { None };
        let status = ContainerStatus {
            id: id.clone(),
            name: config.name.clone(),
            labels: config.labels.clone(),
            running,
            started_at: running.then(SystemTime::now),
            host_port: listener.as_ref().and_then(|l| l.local_addr().ok()).map(|a| a.port()),
            ..Default::default()
        };
        st.containers.insert(
            id.clone(),
            FakeContainer { config, status, logs: Vec::new(), stopped_with: None, usage: Usage::default(), listener },
        );
        id
    }

    fn check(&self) -> Result<()> {
        match &self.lock().unreachable {
            Some(m) => Err(Error::Unreachable { endpoint: "fake://".into(), message: m.clone() }),
            None => Ok(()),
        }
    }
}

/// A loopback socket standing for a container's published port.
fn listen() -> Option<Arc<std::net::TcpListener>> {
    std::net::TcpListener::bind("127.0.0.1:0").ok().map(Arc::new)
}

#[async_trait]
impl Runtime for FakeRuntime {
    async fn info(&self) -> Result<EngineInfo> {
        self.check()?;
        Ok(EngineInfo {
            cpus: 4,
            memory_bytes: 8 << 30,
            version: "fake://1.0".into(),
            operating_system: "linux".into(),
            architecture: "x86_64".into(),
            kernel_version: "6.1".into(),
        })
    }

    async fn image_digest(&self, image: &str) -> Result<Option<String>> {
        self.check()?;
        Ok(self.lock().images.get(image).cloned())
    }

    async fn image_user(&self, image: &str) -> Result<Option<String>> {
        self.check()?;
        let st = self.lock();
        Ok(st.images.contains_key(image).then(|| st.image_users.get(image).cloned().unwrap_or_default()))
    }

    async fn pull(&self, image: &str) -> Result<String> {
        self.check()?;
        let mut st = self.lock();
        st.pulls.push(image.to_string());
        if let Some(message) = st.pull_errors.get(image) {
            return Err(Error::Pull { image: image.to_string(), message: message.clone() });
        }
        let repo = image.rsplit_once(':').map(|(r, _)| r).unwrap_or(image);
        let digest = format!("{repo}@sha256:{:064x}", image.len());
        st.images.insert(image.to_string(), digest.clone());
        Ok(digest)
    }

    async fn create(&self, config: &ContainerConfig) -> Result<String> {
        self.check()?;
        if !self.lock().images.contains_key(&config.image) {
            return Err(Error::Engine(format!("No such image: {}", config.image)));
        }
        if self.lock().containers.values().any(|c| c.config.name == config.name) {
            return Err(Error::Engine(format!("Conflict. The container name \"/{}\" is already in use", config.name)));
        }
        Ok(self.insert(config.clone(), false))
    }

    async fn start(&self, id: &str) -> Result<()> {
        self.check()?;
        let mut st = self.lock();
        let silent = st.containers.get(id).is_some_and(|c| st.silent_images.contains(&c.config.image));
        let c = st.containers.get_mut(id).ok_or_else(|| Error::NotFound(id.to_string()))?;
        // A silent container still gets a published port, but nothing answers on it.
        c.listener = listen();
        let port = c.listener.as_ref().and_then(|l| l.local_addr().ok()).map(|a| a.port());
        if silent {
            c.listener = None;
        }
        c.status.running = true;
        c.status.exit_code = None;
        c.status.oom_killed = false;
        c.status.started_at = Some(SystemTime::now());
        c.status.finished_at = None;
        c.status.host_port = port;
        Ok(())
    }

    async fn stop(&self, id: &str, grace: Duration) -> Result<()> {
        self.check()?;
        let delay = {
            let st = self.lock();
            st.containers.get(id).filter(|c| c.status.running).map_or(Duration::ZERO, |_| st.stop_delay.min(grace))
        };
        if !delay.is_zero() {
            tokio::time::sleep(delay).await;
        }
        let mut st = self.lock();
        st.stops.push((id.to_string(), grace));
        let c = st.containers.get_mut(id).ok_or_else(|| Error::NotFound(id.to_string()))?;
        if c.status.running {
            c.listener = None;
            c.status.running = false;
            c.status.exit_code = Some(0);
            c.status.finished_at = Some(SystemTime::now());
            c.stopped_with = Some(grace);
        }
        Ok(())
    }

    async fn update_cpu(&self, id: &str, nano_cpus: i64) -> Result<()> {
        self.check()?;
        let mut st = self.lock();
        let c = st.containers.get_mut(id).ok_or_else(|| Error::NotFound(id.to_string()))?;
        let before = std::mem::replace(&mut c.config.nano_cpus, nano_cpus);
        st.cpu_updates.push((id.to_string(), before, nano_cpus));
        Ok(())
    }

    async fn network_subnets(&self, _name: &str) -> Result<Vec<String>> {
        self.check()?;
        Ok(vec![FAKE_SUBNET.to_string()])
    }

    async fn remove(&self, id: &str) -> Result<()> {
        self.check()?;
        self.lock().containers.remove(id);
        Ok(())
    }

    async fn inspect(&self, id: &str) -> Result<Option<ContainerStatus>> {
        self.check()?;
        Ok(self.lock().containers.get(id).map(|c| c.status.clone()))
    }

    async fn list(&self, labels: &[(&str, &str)]) -> Result<Vec<ContainerStatus>> {
        self.check()?;
        Ok(self
            .lock()
            .containers
            .values()
            .filter(|c| {
                labels.iter().all(|(k, v)| c.status.labels.get(*k).is_some_and(|have| v.is_empty() || have == v))
            })
            .map(|c| c.status.clone())
            .collect())
    }

    async fn stats(&self, id: &str) -> Result<Usage> {
        self.check()?;
        self.lock().containers.get(id).map(|c| c.usage).ok_or_else(|| Error::NotFound(id.to_string()))
    }

    async fn logs(&self, id: &str, options: LogOptions) -> Result<BoxStream<'static, Result<LogLine>>> {
        self.check()?;
        // Subscribe before reading the backlog so no line falls between the two.
        let live = self.log_tx.subscribe();
        let backlog = {
            let st = self.lock();
            let c = st.containers.get(id).ok_or_else(|| Error::NotFound(id.to_string()))?;
            let skip = match options.tail {
                Some(n) => c.logs.len().saturating_sub(usize::try_from(n).unwrap_or(usize::MAX)),
                None => 0,
            };
            c.logs[skip..].to_vec()
        };
        let max = options.line_limit();
        let cut = move |mut line: LogLine| {
            cut_line(&mut line.line, max);
            line
        };
        let backlog = futures::stream::iter(backlog.into_iter().map(cut).map(Ok));
        if !options.follow {
            return Ok(backlog.boxed());
        }
        let id = id.to_string();
        let live = tokio_stream::wrappers::BroadcastStream::new(live).filter_map(move |item| {
            let out = match item {
                Ok((cid, line)) if cid == id => Some(Ok(cut(line))),
                _ => None,
            };
            futures::future::ready(out)
        });
        Ok(backlog.chain(live).boxed())
    }
}

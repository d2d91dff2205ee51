//! [`DockerRuntime`]: the [`Runtime`] of a real Docker engine, through bollard.
//!
//! The engine may be older than bollard's default API version (Debian 12 ships 20.10, API 1.41),
//! so the version is negotiated before the first request. Errors keep the engine's own message:
//! that is what an operator needs to read in an Instance's status.
//!
//! This file speaks to the engine; `convert` translates between the engine's types and the
//! runtime's, and `logs` turns the engine's log frames into lines.

mod convert;
mod logs;

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bollard::Docker;
use bollard::errors::Error as DockerError;
use bollard::models::{ContainerUpdateBody, NetworkCreateRequest};
use bollard::query_parameters::{
    CreateContainerOptions, CreateImageOptions, ListContainersOptions, ListNetworksOptions, LogsOptions,
    RemoveContainerOptions, StatsOptions, StopContainerOptions,
};
use futures::stream::BoxStream;
use futures::{StreamExt, TryStreamExt};
use stratus_client::ErrorChain;
use tokio::sync::{Mutex, OnceCell};
use tracing::{debug, warn};

use self::convert::{
    ISOLATED_NETWORK_OPTIONS, container_body, container_status, network_problem, seccomp_problem, stop_timeout_seconds,
    usage,
};
use super::{ContainerConfig, ContainerStatus, EngineInfo, Error, LogLine, LogOptions, Result, Runtime, Usage};

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

/// The label on the networks the runtime makes, so that an operator can tell them apart.
const NETWORK_LABEL: &str = "stratus.dev/network";

/// The networks Docker itself provides: used by name, never made or checked.
const ENGINE_NETWORKS: &[&str] = &["bridge", "none"];

/// A Docker engine. Cheap to clone; clones share the connection and the negotiated version.
#[derive(Clone)]
pub struct DockerRuntime {
    docker: Docker,
    /// The address connected to, for error messages.
    endpoint: String,
    /// Set once the API version has been negotiated with the engine.
    negotiated: Arc<OnceCell<()>>,
    /// Why the engine would run containers without a seccomp profile (`None`: it would not),
    /// once asked.
    seccomp: Arc<OnceCell<Option<String>>>,
    /// The id of each network containers were attached to by name, once it was found or made
    /// isolated; held while one is being made, so that this runtime makes it once.
    networks: Arc<Mutex<HashMap<String, String>>>,
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
        .map_err(|e| unreachable(ErrorChain(&e).to_string()))?;
        Ok(DockerRuntime {
            docker,
            endpoint,
            negotiated: Arc::new(OnceCell::new()),
            seccomp: Arc::new(OnceCell::new()),
            networks: Arc::new(Mutex::new(HashMap::new())),
        })
    }

    /// The client, once the API version is agreed with the engine: bollard speaks a newer
    /// version than older engines (Debian 12's 20.10 knows 1.41) accept, and puts the version
    /// in every request's path.
    async fn ready(&self) -> Result<&Docker> {
        self.negotiated
            .get_or_try_init(|| async {
                // The clone shares the version with `self.docker`, which negotiation lowers.
                let docker = self.docker.clone().negotiate_version().await.map_err(|e| Error::Unreachable {
                    endpoint: self.endpoint.clone(),
                    message: ErrorChain(&e).to_string(),
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

    /// Fails unless the engine confines containers with a seccomp profile: Stratus never asks
    /// for `seccomp=unconfined`, and relies on the engine's default profile (engines before
    /// 23.0 know no name for it), which an engine without seccomp support, or one started
    /// with `--seccomp-profile=unconfined`, would not apply.
    async fn require_seccomp(&self) -> Result<()> {
        let problem = self
            .seccomp
            .get_or_try_init(|| async {
                let info = self.ready().await?.info().await.map_err(|e| self.error(e))?;
                Ok::<_, Error>(seccomp_problem(&info.security_options.unwrap_or_default()))
            })
            .await?;
        match problem {
            Some(problem) => Err(Error::Engine(format!(
                "refusing to create containers: {problem}; Stratus runs every container under the engine's \
                 default seccomp profile"
            ))),
            None => Ok(()),
        }
    }

    /// The id of the network `name`, made when missing as a bridge on which containers cannot
    /// reach one another (inter-container communication off). An existing network of that name
    /// that lets them is refused, naming the remedy.
    ///
    /// Idempotent, also across processes: engines before API 1.44 let two creates of one name
    /// both succeed, so after making it every runtime settles on the oldest network of the
    /// name, and removes the others it can (unused ones).
    async fn network_id(&self, name: &str) -> Result<String> {
        let mut known = self.networks.lock().await;
        if let Some(id) = known.get(name) {
            return Ok(id.clone());
        }
        let docker = self.ready().await?;
        let named = async || -> Result<Vec<bollard::models::Network>> {
            let filters = HashMap::from([("name".to_owned(), vec![name.to_owned()])]);
            let options = ListNetworksOptions { filters: Some(filters) };
            let networks = docker.list_networks(Some(options)).await.map_err(|e| self.error(e))?;
            // The filter matches parts of names; only the exact name counts.
            let mut networks: Vec<_> = networks.into_iter().filter(|n| n.name.as_deref() == Some(name)).collect();
            networks.sort_by_cached_key(|n| (n.created.as_deref().and_then(logs::parse_time), n.id.clone()));
            Ok(networks)
        };
        let mut networks = named().await?;
        if networks.is_empty() {
            let request = NetworkCreateRequest {
                name: name.to_owned(),
                driver: Some("bridge".to_owned()),
                options: Some(
                    ISOLATED_NETWORK_OPTIONS.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect(),
                ),
                labels: Some(HashMap::from([(NETWORK_LABEL.to_owned(), "instances".to_owned())])),
                ..Default::default()
            };
            match docker.create_network(request).await {
                Ok(_) => debug!(network = %name, "made the isolated network for instances"),
                // Made meanwhile by someone else (newer engines refuse a second of one name).
                Err(e) if status_code(&e) == Some(409) => {}
                Err(e) => return Err(self.error(e)),
            }
            networks = named().await?;
            for extra in networks.iter().skip(1).filter_map(|n| n.id.as_deref()) {
                // In use by another runtime's containers, it stays; unused, it goes.
                let _ = docker.remove_network(extra).await;
            }
        }
        let Some(network) = networks.into_iter().next() else {
            return Err(Error::Engine(format!("the network {name} vanished right after it was made")));
        };
        let id = network.id.clone().unwrap_or_default();
        if let Some(problem) = network_problem(&network) {
            return Err(Error::Engine(format!(
                "network {name} ({id}) {problem}; remove it (`docker network rm {name}`) so that the agent makes it \
                 anew, isolated"
            )));
        }
        known.insert(name.to_owned(), id.clone());
        Ok(id)
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

    async fn image_user(&self, image: &str) -> Result<Option<String>> {
        match self.ready().await?.inspect_image(image).await {
            Ok(inspect) => Ok(Some(inspect.config.and_then(|config| config.user).unwrap_or_default())),
            Err(e) if status_code(&e) == Some(404) => Ok(None),
            Err(e) => Err(self.error(e)),
        }
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
        self.require_seccomp().await?;
        let made = !config.network.is_empty() && !ENGINE_NETWORKS.contains(&config.network.as_str());
        let network = match config.network.as_str() {
            "" => "bridge".to_owned(),
            "host" => return Err(Error::Engine("refusing the host's network for a container".to_owned())),
            name if name.starts_with("container:") => {
                return Err(Error::Engine(format!("refusing to share another container's network ({name})")));
            }
            name if made => self.network_id(name).await?,
            name => name.to_owned(),
        };
        let options = CreateContainerOptions { name: Some(config.name.clone()), ..Default::default() };
        let docker = self.ready().await?;
        let mut created = docker.create_container(Some(options.clone()), container_body(config, &network)).await;
        if let Err(e) = &created
            && made
            && status_code(e) == Some(404)
        {
            // The network was removed since it was found: find or make it again, once.
            self.networks.lock().await.remove(&config.network);
            let network = self.network_id(&config.network).await?;
            created = docker.create_container(Some(options), container_body(config, &network)).await;
        }
        let response = created.map_err(|e| self.error(e))?;
        for warning in response.warnings.iter().filter(|w| !w.is_empty()) {
            warn!(container = %config.name, %warning, "the engine warned about the container");
        }
        Ok(response.id)
    }

    async fn start(&self, id: &str) -> Result<()> {
        // 304 (already running) counts as success in bollard.
        self.ready().await?.start_container(id, None).await.map_err(|e| self.container_error(id, e))
    }

    async fn update_cpu(&self, id: &str, nano_cpus: i64) -> Result<()> {
        // NanoCpus, as the container was created with (the engine refuses to mix it with a
        // CPU period and quota).
        let body = ContainerUpdateBody { nano_cpus: Some(nano_cpus), ..Default::default() };
        self.ready().await?.update_container(id, body).await.map_err(|e| self.container_error(id, e))
    }

    async fn network_subnets(&self, name: &str) -> Result<Vec<String>> {
        let name = match name {
            "" => "bridge",
            "host" => return Err(Error::Engine("containers never join the host's network".to_owned())),
            name => name,
        };
        if !ENGINE_NETWORKS.contains(&name) {
            self.network_id(name).await?;
        }
        let docker = self.ready().await?;
        let network = docker.inspect_network(name, None).await.map_err(|e| self.error(e))?;
        let configs = network.ipam.and_then(|i| i.config).unwrap_or_default();
        // IPv4 networks only, as the API takes them (an engine with IPv6 on adds a v6 subnet).
        let ipv4 = |s: &String| s.split_once('/').is_some_and(|(ip, _)| ip.parse::<std::net::Ipv4Addr>().is_ok());
        Ok(configs.into_iter().filter_map(|c| c.subnet).filter(ipv4).collect())
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
        let endpoint = self.endpoint.clone();
        let frames = self.ready().await?.logs(id, Some(request)).map_err(move |e| map_error(&endpoint, e)).boxed();
        Ok(logs::lines(frames, options.line_limit()))
    }
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
            Error::Unreachable { endpoint: endpoint.to_owned(), message: ErrorChain(&e).to_string() }
        }
        other => Error::Engine(ErrorChain(&other).to_string()),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

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
    fn connection_failures_are_unreachable_and_refusals_keep_the_engine_message() {
        let refused = DockerError::DockerResponseServerError { status_code: 409, message: "name in use".into() };
        assert!(matches!(map_error("e", refused), Error::Engine(m) if m == "name in use"));
        let missing = map_error("unix:///x.sock", DockerError::SocketNotFoundError("/x.sock".into()));
        assert!(matches!(&missing, Error::Unreachable { endpoint, .. } if endpoint == "unix:///x.sock"), "{missing:?}");
    }
}

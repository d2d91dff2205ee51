//! The Stratus API server: stores resources in etcd or the embedded store, validates and
//! defaults them, and serves them over gRPC and HTTP/JSON on one port.
//!
//! [`ApiServer::serve`] is the entry point; the binary only parses flags and calls it.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use axum::Router;
use stratus_api::Resource;
use stratus_api::v1::auth_service_server::AuthServiceServer;
use stratus_api::v1::resource_service_server::ResourceServiceServer;
use stratus_api::v1::traffic_metrics_server::TrafficMetricsServer;
use stratus_api::v1::{User, UserSpec};
use stratus_store::Store;
use tonic::server::NamedService;
use tower::ServiceExt;

pub mod audit;
pub mod auth;
pub mod console;
pub mod encryption;
pub mod error;
pub mod grpc;
pub mod guard;
pub mod http;
pub mod images;
pub mod logs;
pub mod metrics;
pub mod openapi;
pub mod registry;
#[cfg(feature = "testing")]
pub mod testing;
pub mod trace;
pub mod traffic;

pub use registry::Registry;

/// The address the API server listens on by default.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:7070";

/// The largest gRPC message accepted (an object is at most about 1.5 MiB in the store).
const MAX_GRPC_MESSAGE: usize = 4 * 1024 * 1024;

/// Errors that stop the server.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("opening the embedded store in {dir} failed: {source}")]
    OpenEmbedded {
        dir: PathBuf,
        #[source]
        source: stratus_store::Error,
    },
    #[error("connecting to etcd at {endpoints} failed: {source}")]
    ConnectEtcd {
        endpoints: String,
        #[source]
        source: stratus_store::Error,
    },
    #[error("reading {path} for TLS to etcd failed: {source}")]
    EtcdTlsFile {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("creating the default namespace failed: {0}")]
    Bootstrap(#[source] error::ApiError),
    #[error("re-encrypting secrets with the primary encryption key failed: {0}")]
    Reencrypt(#[source] error::ApiError),
    #[error("loading the encryption keys failed: {0}")]
    EncryptionKeys(#[source] encryption::Error),
    #[error("loading the token signing keys failed: {0}")]
    Keys(#[source] error::ApiError),
    #[error("creating the first admin failed: {0}")]
    BootstrapAdmin(#[source] error::ApiError),
    #[error("writing the first admin's password to {path} failed: {source}")]
    PasswordFile {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("opening the audit log {path} failed: {source}")]
    Audit {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("making the identity of {name} failed: {source}")]
    Component {
        name: String,
        #[source]
        source: error::ApiError,
    },
    #[error("setting up gRPC reflection failed: {0}")]
    Reflection(#[source] tonic_reflection::server::Error),
    #[error("reading {path}, of the client certificate for agents, failed: {source}")]
    AgentTlsFile {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("the client certificate for agents: {0}")]
    AgentTls(String),
    #[error("serving failed: {0}")]
    Serve(#[source] std::io::Error),
}

/// Where resources are stored.
#[derive(Debug, Clone)]
pub enum StoreOptions {
    /// A crash-safe store in a local directory: the default, for one machine.
    Embedded { data_dir: PathBuf },
    /// An etcd v3 cluster, for several API servers and high availability; over TLS when `tls`
    /// is given (then the endpoints are `https://`).
    Etcd { endpoints: Vec<String>, tls: Option<EtcdTlsFiles> },
}

/// The PEM files of TLS to etcd, as kube-apiserver's `--etcd-cafile`, `--etcd-certfile` and
/// `--etcd-keyfile`. They are read when the store is opened.
#[derive(Debug, Clone)]
pub struct EtcdTlsFiles {
    /// The CA bundle etcd's serving certificate must chain to.
    pub ca_cert: PathBuf,
    /// The client certificate and its key, for an etcd started with `--client-cert-auth`.
    pub client: Option<(PathBuf, PathBuf)>,
}

/// Opens the configured store.
pub async fn open_store(opts: &StoreOptions) -> Result<Arc<dyn Store>, Error> {
    match opts {
        StoreOptions::Embedded { data_dir } => {
            let store = stratus_store::embedded::EmbeddedStore::open(data_dir)
                .await
                .map_err(|source| Error::OpenEmbedded { dir: data_dir.clone(), source })?;
            Ok(store)
        }
        StoreOptions::Etcd { endpoints, tls } => {
            let tls = tls.as_ref().map(read_etcd_tls).transpose()?;
            let store = stratus_store::etcd::EtcdStore::connect_with(endpoints, tls.as_ref())
                .await
                .map_err(|source| Error::ConnectEtcd { endpoints: endpoints.join(","), source })?;
            Ok(store)
        }
    }
}

/// Reads the files of TLS to etcd.
fn read_etcd_tls(files: &EtcdTlsFiles) -> Result<stratus_store::etcd::EtcdTls, Error> {
    let read = |path: &PathBuf| std::fs::read(path).map_err(|source| Error::EtcdTlsFile { path: path.clone(), source });
    let identity = match &files.client {
        Some((cert, key)) => Some((read(cert)?, read(key)?)),
        None => None,
    };
    Ok(stratus_store::etcd::EtcdTls { ca_pem: read(&files.ca_cert)?, identity })
}

/// How an API server is set up beyond its store.
#[derive(Debug, Clone, Default)]
pub struct Config {
    pub tokens: auth::tokens::TokenConfig,
    /// The hosts and origins the API answers (DNS rebinding, cross-origin requests).
    pub guard: guard::GuardConfig,
    /// Where the audit log is written; none when not given.
    pub audit: Option<audit::AuditConfig>,
    /// The largest minInstances, maxInstances and initialScale a revision may ask for.
    pub bounds: registry::ScalingBounds,
    /// HTTPS (and gRPC over TLS) on the API port; plain HTTP when none, which only tests and
    /// benchmarks in one process use: every binary serves TLS.
    pub tls: Option<Arc<rustls::ServerConfig>>,
    /// Timeouts and the connection limit of the API port.
    pub limits: stratus_support::server::Limits,
    /// The keys Secrets are encrypted with at rest (see [`encryption`]). Without them the
    /// server refuses to store or read Secrets.
    pub encryption: Option<Arc<encryption::Keys>>,
    /// The cluster CA, when this server holds its key: it signs nodes' client certificates
    /// (see [`auth::nodes`]) and is served at `/.well-known/stratus-ca.crt`. The TLS
    /// configuration (`tls`) should then ask clients for certificates it signed
    /// (`Certificates::server_config_asking_clients`), or nodes cannot use theirs.
    pub cluster_ca: Option<Arc<stratus_auth::pki::Ca>>,
    /// How long the node certificates this server signs are valid (0: 30 days).
    pub node_certificate_validity: std::time::Duration,
    /// The client certificate presented to node agents, and the CA that verifies them, when
    /// given: agents are then dialled over TLS only (see [`logs`]). Without it, a server
    /// holding the cluster CA (`cluster_ca`) issues itself one; without either, agents are
    /// dialled in plain HTTP with the server's token.
    pub agent_tls: Option<AgentClientFiles>,
    /// The cluster's image registry that uploaded images are stored in (see [`images`]);
    /// without it the upload endpoints answer 503.
    pub images: Option<images::ImagesConfig>,
}

/// The PEM files of the API server's client certificate for agents (common name
/// `system:apiserver`, from the cluster CA) and of the CA that verifies agents. Read when the
/// server is made.
#[derive(Debug, Clone)]
pub struct AgentClientFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
    pub ca: PathBuf,
}

/// An API server over one store.
pub struct ApiServer {
    registry: Registry,
    /// Container logs, served beside the registry by both protocols.
    logs: logs::Logs,
    /// The gateways' reports of recent traffic, read per Service.
    traffic: traffic::TrafficHistory,
    tokens: Arc<auth::tokens::Tokens>,
    identity: auth::service::Identity,
    authn: Arc<auth::authn::Authn>,
    nodes: auth::nodes::Nodes,
    guard: Arc<guard::GuardConfig>,
    closing: tokio::sync::watch::Sender<bool>,
    tls: Option<Arc<rustls::ServerConfig>>,
    limits: stratus_support::server::Limits,
    images: Option<images::ImagesConfig>,
}

impl ApiServer {
    /// Prepares a server over `store` with the default configuration.
    pub async fn new(store: Arc<dyn Store>) -> Result<ApiServer, Error> {
        ApiServer::with_config(store, Config::default()).await
    }

    /// Prepares a server over `store`: creates what the platform starts with (the `default`
    /// tenant and namespace, the system namespaces) if missing, re-encrypts the Secrets sealed
    /// with an older key than the primary, and loads (or makes) the token signing keys.
    pub async fn with_config(store: Arc<dyn Store>, config: Config) -> Result<ApiServer, Error> {
        // Store calls made while serving a traced request are spans of it.
        let store: Arc<dyn Store> = Arc::new(trace::TracedStore::new(store));
        let (closing, closed) = tokio::sync::watch::channel(false);
        let audit = match &config.audit {
            Some(c) => Some(Arc::new(
                audit::Audit::open(c.clone()).map_err(|source| Error::Audit { path: c.path.clone(), source })?,
            )),
            None => None,
        };
        let registry = Registry::new(store.clone(), Arc::new(metrics::Metrics::default()), closed)
            .with_audit(audit)
            .with_bounds(config.bounds)
            .with_encryption(config.encryption.clone());
        registry.bootstrap().await.map_err(Error::Bootstrap)?;
        if let Some(keys) = &config.encryption {
            // Secrets still under an older key move to the primary, so that old keys can go.
            let rewritten = registry.reencrypt_secrets().await.map_err(Error::Reencrypt)?;
            if rewritten > 0 {
                tracing::info!(rewritten, key = keys.primary(), "re-encrypted secrets with the primary key");
            }
        }
        let mut guard = config.guard;
        // The issuer's host is where clients reach the API.
        if let Some(host) = config.tokens.issuer.split("://").nth(1).and_then(|r| r.split(['/', ':']).next()) {
            guard.hosts.push(host.to_string());
        }
        let tokens = Arc::new(auth::tokens::Tokens::load(store, config.tokens).await.map_err(Error::Keys)?);
        let identity = auth::service::Identity::new(tokens.clone(), registry.clone());
        let agent_token =
            identity.component_token("apiserver", stratus_api::identity::roles::SYSTEM_APISERVER, "").await?;
        let mut logs = logs::Logs::new(registry.clone()).with_token(agent_token);
        match (&config.agent_tls, &config.cluster_ca) {
            (Some(files), _) => {
                let read = |path: &PathBuf| {
                    std::fs::read(path).map_err(|source| Error::AgentTlsFile { path: path.clone(), source })
                };
                let (cert, key, ca) = (read(&files.cert)?, read(&files.key)?, read(&files.ca)?);
                let identity = stratus_support::tls::ClientIdentity::new(&cert, &key)
                    .map_err(|e| Error::AgentTls(e.to_string()))?;
                stratus_support::tls::roots(&ca, &files.ca.display().to_string())
                    .map_err(|e| Error::AgentTls(e.to_string()))?;
                let ca = String::from_utf8(ca)
                    .map_err(|_| Error::AgentTls(format!("{}: not PEM text", files.ca.display())))?;
                logs = logs.with_tls(logs::AgentTls::supplied(ca, identity));
            }
            (None, Some(ca)) => logs = logs.with_tls(logs::AgentTls::issued(ca.clone()).map_err(Error::AgentTls)?),
            (None, None) => {}
        }
        let authn = Arc::new(auth::authn::Authn::new(tokens.clone(), registry.clone()));
        let mut nodes = auth::nodes::Nodes::new(registry.clone(), config.cluster_ca.clone());
        if !config.node_certificate_validity.is_zero() {
            nodes = nodes.with_validity(config.node_certificate_validity);
        }
        Ok(ApiServer {
            registry,
            logs,
            traffic: traffic::TrafficHistory::new(),
            tokens,
            identity,
            authn,
            nodes,
            guard: Arc::new(guard),
            closing,
            tls: config.tls,
            limits: config.limits,
            images: config.images,
        })
    }

    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    pub fn tokens(&self) -> &Arc<auth::tokens::Tokens> {
        &self.tokens
    }

    pub fn identity(&self) -> &auth::service::Identity {
        &self.identity
    }

    /// Creates the first admin, `admin` of tenant `default` with the cluster-admin role and a
    /// random password, unless it exists. The password is written to `password_file` (mode
    /// 0600, which must not exist yet) before the user is made, and returned; `None` when the
    /// admin existed already.
    pub async fn bootstrap_admin(&self, password_file: &Path) -> Result<Option<String>, Error> {
        use stratus_api::identity::{BOOTSTRAP_ADMIN, DEFAULT_TENANT, roles};
        let info = &User::INFO;
        if self.registry.read_internal(info, "", BOOTSTRAP_ADMIN).await.map_err(Error::BootstrapAdmin)?.is_some() {
            return Ok(None);
        }
        let password = stratus_auth::password::random_password(24);
        write_secret(password_file, &password)
            .map_err(|source| Error::PasswordFile { path: password_file.to_path_buf(), source })?;
        let mut admin = User {
            spec: Some(UserSpec {
                tenant: DEFAULT_TENANT.into(),
                display_name: "Administrator".into(),
                password: password.clone(),
                cluster_role: roles::CLUSTER_ADMIN.into(),
                password_hash: String::new(),
            }),
            ..Default::default()
        };
        admin.meta_mut().name = BOOTSTRAP_ADMIN.into();
        match self.registry.create(&auth::Caller::system(), admin.into_any()).await {
            Ok(_) => Ok(Some(password)),
            Err(e) => {
                // Another server made it first, or the write failed: the file names no one.
                let _ = std::fs::remove_file(password_file);
                match e.reason {
                    error::Reason::AlreadyExists => Ok(None),
                    _ => Err(Error::BootstrapAdmin(e)),
                }
            }
        }
    }

    /// The gRPC and HTTP routes on one router: gRPC requests are told apart by their paths
    /// (`/stratus.v1.ResourceService/…`, `/grpc.reflection.v1.ServerReflection/…`).
    pub fn router(&self) -> Result<Router, Error> {
        let grpc = ResourceServiceServer::new(grpc::Grpc::new(self.registry.clone(), self.logs.clone()))
            .max_decoding_message_size(MAX_GRPC_MESSAGE)
            .max_encoding_message_size(64 * 1024 * 1024);
        let reflection = tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(stratus_api::FILE_DESCRIPTOR_SET)
            .build_v1()
            .map_err(Error::Reflection)?;
        // Older grpcurl and grpcui releases only speak v1alpha.
        let reflection_alpha = tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(stratus_api::FILE_DESCRIPTOR_SET)
            .build_v1alpha()
            .map_err(Error::Reflection)?;
        let grpc_path = format!("/{}/{{*rest}}", <ResourceServiceServer<grpc::Grpc> as NamedService>::NAME);
        let reflection_path = format!("/{}/{{*rest}}", <ReflectionServer as NamedService>::NAME);
        let reflection_alpha_path = format!("/{}/{{*rest}}", <ReflectionServerAlpha as NamedService>::NAME);
        let auth_grpc = AuthServiceServer::new(auth::service::Grpc::new(self.identity.clone()));
        let auth_path = format!("/{}/{{*rest}}", <AuthServiceServer<auth::service::Grpc> as NamedService>::NAME);
        let traffic_grpc =
            TrafficMetricsServer::new(traffic::Reports::new(self.traffic.clone(), self.registry.clone()));
        let traffic_path = format!("/{}/{{*rest}}", <TrafficMetricsServer<traffic::Reports> as NamedService>::NAME);
        let authn = self.authn.clone();
        Ok(http::router(self.registry.clone(), self.logs.clone())
            .merge(traffic::router(self.registry.clone(), self.traffic.clone()))
            .merge(auth::service::router(self.identity.clone()))
            .merge(auth::nodes::router(self.nodes.clone()))
            .merge(console::router(self.identity.clone(), self.authn.clone(), self.registry.clone()))
            .merge(images::router(self.registry.clone(), self.images.clone()))
            .route_service(&grpc_path, as_axum(grpc))
            .route_service(&auth_path, as_axum(auth_grpc))
            .route_service(&traffic_path, as_axum(traffic_grpc))
            .route_service(&reflection_path, as_axum(reflection))
            .route_service(&reflection_alpha_path, as_axum(reflection_alpha))
            .layer(axum::middleware::from_fn_with_state(authn, auth::authn::layer))
            .layer(axum::middleware::from_fn_with_state(self.guard.clone(), guard::layer))
            .layer(axum::middleware::from_fn(trace::layer)))
    }

    /// Serves until `shutdown` completes, then closes open watches and drains connections.
    pub async fn serve(
        self,
        listener: tokio::net::TcpListener,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> Result<(), Error> {
        let app = self.router()?;
        let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
        let sweeper = tokio::spawn(self.registry.clone().run_namespace_finalizer(stop_rx.clone()));
        let compactor =
            tokio::spawn(compact_periodically(self.registry.store().clone(), COMPACTION_INTERVAL, stop_rx.clone()));
        let rotation = tokio::spawn(self.tokens.clone().run_rotation(stop_rx.clone()));
        let subjects = tokio::spawn(self.authn.clone().run_invalidation(stop_rx));
        let closing = self.closing.clone();
        let shutdown = async move {
            shutdown.await;
            // Watches never end by themselves; ending them lets connections drain.
            let _ = closing.send(true);
        };
        if let Ok(addr) = listener.local_addr() {
            stratus_support::server::log_listening("the Stratus API (gRPC and HTTP)", addr, self.tls.is_some());
        }
        let served = stratus_support::server::serve(listener, self.tls, self.limits, shutdown, move |peer| {
            let app = app.clone();
            hyper::service::service_fn(move |mut req: ::http::Request<hyper::body::Incoming>| {
                req.extensions_mut().insert(axum::extract::ConnectInfo::<SocketAddr>(peer.addr));
                req.extensions_mut().insert(peer.clone());
                app.clone().oneshot(req.map(axum::body::Body::new))
            })
        })
        .await;
        let _ = stop_tx.send(true);
        let _ = sweeper.await;
        let _ = compactor.await;
        let _ = rotation.await;
        let _ = subjects.await;
        served.map_err(Error::Serve)
    }
}

/// Writes `secret` to a new file only its owner may read.
fn write_secret(path: &Path, secret: &str) -> std::io::Result<()> {
    use std::io::Write;
    #[cfg(unix)]
    use std::os::unix::fs::OpenOptionsExt;
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)?;
    }
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    options.mode(0o600);
    let mut file = options.open(path)?;
    file.write_all(secret.as_bytes())?;
    file.write_all(b"\n")?;
    file.sync_all()
}

/// How often history is compacted, and so how long a watcher may lag before it must relist.
const COMPACTION_INTERVAL: std::time::Duration = std::time::Duration::from_secs(5 * 60);

/// Compacts the store's history every `interval` to the revision seen one interval earlier
/// (as kube-apiserver does), so at least `interval` of history stays available to watchers
/// while the store's memory and log stay bounded. Several API servers may do this at once.
async fn compact_periodically(
    store: Arc<dyn Store>,
    interval: std::time::Duration,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    let mut previous = None;
    loop {
        tokio::select! {
            _ = tokio::time::sleep(interval) => {}
            _ = stop.changed() => return,
        }
        if let Some(rev) = previous {
            match store.compact(rev).await {
                Ok(()) => tracing::debug!(revision = rev, "compacted history"),
                Err(e) => tracing::warn!(error = %e, revision = rev, "compacting history failed"),
            }
        }
        previous = store.current_revision().await.ok();
    }
}

type ReflectionServer =
    tonic_reflection::server::v1::ServerReflectionServer<tonic_reflection::server::v1::ReflectionService>;
type ReflectionServerAlpha =
    tonic_reflection::server::v1alpha::ServerReflectionServer<tonic_reflection::server::v1alpha::ReflectionService>;

/// Adapts a tonic service to axum's request body type.
fn as_axum<S>(
    svc: S,
) -> impl tower::Service<
    axum::http::Request<axum::body::Body>,
    Response = axum::http::Response<tonic::body::Body>,
    Error = Infallible,
    Future = impl Send + 'static,
> + Clone
+ Send
+ Sync
+ 'static
where
    S: tower::Service<
            axum::http::Request<tonic::body::Body>,
            Response = axum::http::Response<tonic::body::Body>,
            Error = Infallible,
        > + Clone
        + Send
        + Sync
        + 'static,
    S::Future: Send + 'static,
{
    svc.map_request(|req: axum::http::Request<axum::body::Body>| req.map(tonic::body::Body::new))
}

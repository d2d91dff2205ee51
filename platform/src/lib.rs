//! The one wiring point of Stratus: the parts that run in one process — the API server, the
//! controllers with the autoscaler's demand service, the gateway and node agents — assembled by
//! one [`Builder`]. `stratus up`, the end-to-end tests and the benchmark all start the platform
//! here, so that how the parts meet (the gateway reporting demand to the autoscaler, the
//! controllers writing URLs with the gateway's port, everyone talking to the one API) is
//! written once. The parts still to come (authentication, billing, the web console) plug in
//! here too.
//!
//! ```no_run
//! # async fn example() -> Result<(), stratus_platform::Error> {
//! use stratus_platform::Builder;
//!
//! let api = tokio::net::TcpListener::bind("127.0.0.1:0").await.map_err(stratus_platform::Error::Listen)?;
//! let gateway = tokio::net::TcpListener::bind("127.0.0.1:0").await.map_err(stratus_platform::Error::Listen)?;
//! let platform = Builder::serve_api(stratus_apiserver::StoreOptions::Embedded { data_dir: "data".into() }, api)
//!     .gateway(gateway, stratus_gateway::GatewayConfig::default())
//!     .controllers(stratus_controllers::Config::default())
//!     .start()
//!     .await?;
//! println!("API at {}, gateway at {:?}", platform.endpoint, platform.gateway);
//! platform.stop();
//! platform.stopped().await?;
//! # Ok(())
//! # }
//! ```
//!
//! Every part stops when [`Platform::stop`] is called or the [`Platform`] is dropped; the agents'
//! containers keep running (the next agent of the node adopts them).
//!
//! The standalone binaries (`src/bin/`: `stratus-apiserver`, `stratus-controllers`,
//! `stratus-gateway`, `stratus-agent`) start their one part here too, with
//! [`Builder::connect`] to the API of another process where they need it, and run it with
//! [`Platform::run_until`].

pub mod connect;
pub mod join;
pub mod tls;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;

use stratus_agent::AgentConfig;
use stratus_agent::runtime::Runtime;
use stratus_api::identity::{GATEWAYS_GROUP, NODES_GROUP, node_user, roles};
use stratus_apiserver::auth::service::{ComponentToken, Identity};
use stratus_apiserver::{ApiServer, StoreOptions};
use stratus_client::review::TokenReview;
use stratus_client::{Client, Credentials, ErrorChain};
use stratus_controllers::{Config as ControllersConfig, DemandStore, Metrics};
use stratus_gateway::{Gateway, GatewayConfig};
use tokio::net::TcpListener;
use tokio::sync::{Notify, watch};
use tokio::task::JoinHandle;

/// Why the platform could not start, or how one of its parts ended.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("opening the store failed")]
    Store(#[source] stratus_apiserver::Error),
    #[error("starting the API server failed")]
    ApiServer(#[source] stratus_apiserver::Error),
    #[error("a listener has no local address")]
    Listen(#[source] std::io::Error),
    #[error("the API endpoint {0} is not usable")]
    Client(String, #[source] stratus_client::Error),
    #[error("making the identities of the platform's parts failed")]
    Identity(#[source] stratus_apiserver::Error),
    #[error("setting up TLS failed")]
    Tls(#[from] tls::Error),
    #[error("the {part} failed: {message}")]
    Part { part: &'static str, message: String },
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// The keys Secrets are sealed with: those of `file`, or an embedded store's own.
fn encryption_keys(
    store: &StoreOptions,
    file: Option<&std::path::Path>,
) -> Result<Option<Arc<stratus_apiserver::encryption::Keys>>> {
    use stratus_apiserver::encryption::Keys;
    let keys = match (file, store) {
        (Some(file), _) => Keys::load(file),
        (None, StoreOptions::Embedded { data_dir }) => Keys::load_or_create(&data_dir.join(ENCRYPTION_KEY_FILE)),
        (None, StoreOptions::Etcd { .. }) => return Ok(None),
    };
    keys.map(|k| Some(Arc::new(k))).map_err(|e| Error::ApiServer(stratus_apiserver::Error::EncryptionKeys(e)))
}

/// The key file an embedded store's data directory keeps when no other is given.
pub const ENCRYPTION_KEY_FILE: &str = "encryption-key";

/// Where the API is: served here over a store, or another process's.
enum Api {
    Serve { store: StoreOptions, listener: TcpListener },
    Connect(String),
}

/// One node agent to run in this process.
struct Agent {
    config: AgentConfig,
    runtime: Arc<dyn Runtime>,
    listener: Option<TcpListener>,
}

/// What to run; see the module documentation.
pub struct Builder {
    api: Api,
    api_config: stratus_apiserver::Config,
    api_tls: Option<tls::ServingTls>,
    ca_pem: Option<String>,
    client_identity: Option<stratus_client::tls::ClientIdentity>,
    bootstrap_admin: Option<std::path::PathBuf>,
    encryption_key_file: Option<std::path::PathBuf>,
    credentials: Credentials,
    gateway: Option<(TcpListener, GatewayConfig)>,
    gateway_admin: Option<TcpListener>,
    gateway_tls: Option<(TcpListener, tls::GatewayTls)>,
    controllers: Option<ControllersConfig>,
    autoscaler: Option<TcpListener>,
    autoscaler_tls: Option<tls::ServingTls>,
    controllers_metrics: Option<TcpListener>,
    agents: Vec<Agent>,
}

impl Builder {
    /// An API server over `store` (opened at start), serving on `listener`.
    pub fn serve_api(store: StoreOptions, listener: TcpListener) -> Builder {
        Builder::with(Api::Serve { store, listener })
    }

    /// No API server: the parts talk to the one at `endpoint`.
    pub fn connect(endpoint: impl Into<String>) -> Builder {
        Builder::with(Api::Connect(endpoint.into()))
    }

    fn with(api: Api) -> Builder {
        Builder {
            api,
            api_config: stratus_apiserver::Config::default(),
            api_tls: None,
            ca_pem: None,
            client_identity: None,
            bootstrap_admin: None,
            encryption_key_file: None,
            credentials: Credentials::None,
            gateway: None,
            gateway_admin: None,
            gateway_tls: None,
            controllers: None,
            autoscaler: None,
            autoscaler_tls: None,
            controllers_metrics: None,
            agents: Vec::new(),
        }
    }

    /// How the API server served here is set up (tokens: issuer, lifetimes, key rotation).
    pub fn api_config(mut self, config: stratus_apiserver::Config) -> Builder {
        self.api_config = config;
        self
    }

    /// Serves the API here over HTTPS (and gRPC over TLS) with this certificate; the parts
    /// verify it with the CA it names. Without it, the API served here is plain HTTP, which
    /// only in-process tests and benchmarks use.
    pub fn api_tls(mut self, tls: tls::ServingTls) -> Builder {
        self.api_tls = Some(tls);
        self
    }

    /// The CA certificate(s), PEM, that verify the API of another process
    /// ([`Builder::connect`] to an `https://` endpoint).
    pub fn certificate_authority(mut self, ca_pem: impl Into<String>) -> Builder {
        self.ca_pem = Some(ca_pem.into());
        self
    }

    /// The client certificate the parts present to the API of another process (a node's, see
    /// [`join`]), verified with [`Builder::certificate_authority`], which must be given too.
    pub fn client_identity(mut self, identity: stratus_client::tls::ClientIdentity) -> Builder {
        self.client_identity = Some(identity);
        self
    }

    /// Creates the first admin (`admin`, cluster-admin, of tenant `default`) on first start,
    /// its random password written to `password_file` (mode 0600) and kept in
    /// [`Platform::admin_password`]. Only with an API server served here.
    pub fn bootstrap_admin(mut self, password_file: impl Into<std::path::PathBuf>) -> Builder {
        self.bootstrap_admin = Some(password_file.into());
        self
    }

    /// The file of the keys Secrets are encrypted with at rest, which must exist (see
    /// `stratus_apiserver::encryption`). Without it (and without keys in the API server's
    /// config), an embedded store keeps its own in `DATA_DIR/encryption-key`, made on first
    /// start; over etcd the server then stores no Secret, since servers sharing etcd must share
    /// their keys. Only with an API server served here.
    pub fn encryption_key_file(mut self, path: impl Into<std::path::PathBuf>) -> Builder {
        self.encryption_key_file = Some(path.into());
        self
    }

    /// The credentials the parts present to the API of another process ([`Builder::connect`]).
    /// With an API served here, each part gets a service account of its own instead.
    pub fn credentials(mut self, credentials: Credentials) -> Builder {
        self.credentials = credentials;
        self
    }

    /// A gateway on `listener`. With controllers in this process, it reports demand to their
    /// autoscaler (unless `config.autoscaler` names another) and they write service URLs with
    /// its port.
    pub fn gateway(mut self, listener: TcpListener, config: GatewayConfig) -> Builder {
        self.gateway = Some((listener, config));
        self
    }

    /// The gateway also serves HTTPS on `listener`, with these certificates (and, with the
    /// API served here over TLS, certificates the cluster CA issues for hosts under the domain).
    pub fn gateway_tls(mut self, listener: TcpListener, tls: tls::GatewayTls) -> Builder {
        self.gateway_tls = Some((listener, tls));
        self
    }

    /// Where the gateway serves `/metrics`, `/healthz` and `/readyz`; not served when not given
    /// (nor without a gateway).
    pub fn gateway_admin(mut self, listener: TcpListener) -> Builder {
        self.gateway_admin = Some(listener);
        self
    }

    /// The controllers, leader-elected, with the autoscaler's demand service.
    pub fn controllers(mut self, config: ControllersConfig) -> Builder {
        self.controllers = Some(config);
        self
    }

    /// Where the autoscaler's demand service listens (gateways in other processes report
    /// there); a loopback port of its own when not given.
    pub fn autoscaler_listener(mut self, listener: TcpListener) -> Builder {
        self.autoscaler = Some(listener);
        self
    }

    /// Serves the autoscaler's demand service over TLS with these supplied files (the `ca`
    /// file is the cluster CA gateways' client certificates must chain to), answering only
    /// gateways' certificates. With the API served here over TLS from the cluster CA, this is
    /// done without being asked.
    pub fn autoscaler_tls(mut self, tls: tls::ServingTls) -> Builder {
        self.autoscaler_tls = Some(tls);
        self
    }

    /// Where the controllers serve `/metrics` and `/healthz`; not served when not given (nor
    /// without controllers).
    pub fn controllers_metrics(mut self, listener: TcpListener) -> Builder {
        self.controllers_metrics = Some(listener);
        self
    }

    /// A node agent driving `runtime`; `listener`, when given, serves its metrics and logs.
    pub fn agent(mut self, config: AgentConfig, runtime: Arc<dyn Runtime>, listener: Option<TcpListener>) -> Builder {
        self.agents.push(Agent { config, runtime, listener });
        self
    }

    /// Starts every part in its own task. Requests are accepted as soon as this returns: the
    /// sockets were bound before, so early clients wait in their backlogs.
    pub async fn start(self) -> Result<Platform> {
        let (stop, stopped) = watch::channel(false);
        let until = |mut rx: watch::Receiver<bool>| async move {
            let _ = rx.wait_for(|s| *s).await;
        };
        let mut parts = Parts::default();

        let mut ca_pem = self.ca_pem;
        let mut cluster_ca = None;
        let issued_validity =
            self.api_tls.as_ref().map_or(stratus_auth::pki::SERVING_VALIDITY, tls::ServingTls::validity);
        let (endpoint, api, identity, admin_password) = match self.api {
            Api::Serve { store, listener } => {
                let addr = listener.local_addr().map_err(Error::Listen)?;
                let mut config = self.api_config;
                if config.encryption.is_none() {
                    config.encryption = encryption_keys(&store, self.encryption_key_file.as_deref())?;
                }
                let mut scheme = "http";
                if let Some(tls) = &self.api_tls {
                    let serving = tls.prepare("apiserver")?;
                    // With the cluster CA at hand, nodes may prove themselves with certificates it
                    // signed (and join to be given one).
                    let server_config = match &serving.ca {
                        Some(ca) => serving.certificates.server_config_asking_clients(ca.cert_pem().as_bytes()),
                        None => serving.certificates.server_config(),
                    };
                    config.tls = Some(server_config.map_err(tls::Error::from)?);
                    if config.cluster_ca.is_none() {
                        config.cluster_ca.clone_from(&serving.ca);
                    }
                    ca_pem = Some(serving.ca_pem.clone());
                    cluster_ca.clone_from(&serving.ca);
                    scheme = "https";
                    parts.spawn("certificate renewal", infallible(serving.keep_current(stopped.clone())));
                }
                let store = stratus_apiserver::open_store(&store).await.map_err(Error::Store)?;
                let server = ApiServer::with_config(store, config).await.map_err(Error::ApiServer)?;
                let admin_password = match &self.bootstrap_admin {
                    Some(file) => server.bootstrap_admin(file).await.map_err(Error::ApiServer)?,
                    None => None,
                };
                let identity = server.identity().clone();
                parts.spawn("API server", server.serve(listener, until(stopped.clone())));
                (endpoint_with(scheme, addr), Some(addr), Some(identity), admin_password)
            }
            Api::Connect(endpoint) => (endpoint, None, None, None),
        };
        let connected = match (&self.client_identity, &ca_pem) {
            (Some(identity), Some(ca)) => Client::with_identity(&endpoint, ca.as_bytes(), identity),
            _ => Client::with_ca(&endpoint, ca_pem.as_deref().map(str::as_bytes)),
        }
        .map_err(|e| Error::Client(endpoint.clone(), e))?;
        // Each part as itself: a service account of its own when the API is served here.
        let as_part = async |name: &str, role: &str| -> Result<Client> {
            Ok(match &identity {
                Some(id) => connected
                    .with_credentials(source(id.component_token(name, role, "").await.map_err(Error::Identity)?)),
                None => connected.with_credentials(self.credentials.clone()),
            })
        };
        let client = as_part("platform", roles::CLUSTER_ADMIN).await?;

        // The autoscaler's demand service, which the gateway reports to and pokes.
        let mut autoscaler = None;
        let mut autoscaler_ca: Option<Arc<stratus_auth::pki::Ca>> = None;
        let demand = DemandStore::new();
        if self.controllers.is_some() {
            let listener = match self.autoscaler {
                Some(l) => l,
                None => TcpListener::bind("127.0.0.1:0").await.map_err(Error::Listen)?,
            };
            let addr = listener.local_addr().map_err(Error::Listen)?;
            // With the cluster CA here, over TLS, answering only gateways' certificates.
            // Supplied files: their CA file verifies the gateways.
            let serving =
                match (&self.autoscaler_tls, &cluster_ca, self.api_tls.as_ref().and_then(|t| t.for_listener(addr))) {
                    (Some(files), _, _) => {
                        let serving = files.prepare("autoscaler")?;
                        Some((serving.ca_pem.clone(), None, serving))
                    }
                    (None, Some(ca), Some(tls)) => {
                        Some((ca.cert_pem().to_string(), Some(ca.clone()), tls.prepare("autoscaler")?))
                    }
                    _ => None,
                };
            match serving {
                Some((client_ca, ca, serving)) => {
                    let config = serving
                        .certificates
                        .server_config_requiring_clients(client_ca.as_bytes())
                        .map_err(tls::Error::from)?;
                    autoscaler = Some(endpoint_with("https", addr));
                    autoscaler_ca = ca;
                    parts.spawn("autoscaler's certificate renewal", infallible(serving.keep_current(stopped.clone())));
                    parts.spawn(
                        "autoscaler",
                        stratus_controllers::serve_autoscaler_tls(
                            listener,
                            demand.clone(),
                            config,
                            until(stopped.clone()),
                        ),
                    );
                }
                None => {
                    autoscaler = Some(endpoint_with("http", addr));
                    // Gateways' tokens are checked with the API, as the controllers' account asks.
                    let reviewer = as_part("controllers", roles::SYSTEM_CONTROLLERS).await?;
                    let review = Arc::new(TokenReview::new(reviewer, stratus_controllers::autoscaler::REPORTERS));
                    parts.spawn(
                        "autoscaler",
                        stratus_controllers::serve_autoscaler(listener, demand.clone(), review, until(stopped.clone())),
                    );
                }
            }
        }

        let mut gateway = None;
        let mut gateway_https = None;
        if let Some((listener, mut config)) = self.gateway {
            let addr = listener.local_addr().map_err(Error::Listen)?;
            gateway = Some(addr);
            if config.autoscaler.is_none() {
                config.autoscaler.clone_from(&autoscaler);
                // The autoscaler here over TLS takes the gateway's certificate, which the CA
                // here issues and renews.
                if let (Some(ca), None) = (&autoscaler_ca, &config.autoscaler_tls) {
                    let names = [stratus_api::identity::gateway_user(&config.name), GATEWAYS_GROUP.to_string()];
                    let issuer = ca.clone();
                    let validity = issued_validity;
                    let issue = move || issuer.issue(stratus_auth::pki::Usage::Client, &names, validity);
                    let (identity, issued, not_after) = tls::issue_identity(&issue)?;
                    config.autoscaler_tls = Some(stratus_gateway::AutoscalerTls {
                        ca_pem: ca.cert_pem().to_string(),
                        identity: identity.clone(),
                    });
                    let renewal = tls::keep_issued_current(
                        format!("gateway {}'s client certificate", config.name),
                        identity,
                        issue,
                        issued,
                        not_after,
                        stopped.clone(),
                    );
                    parts.spawn("gateway's certificate renewal", infallible(renewal));
                }
            }
            let serving_domain = config.domain.clone();
            let serving = Gateway::new(as_part("gateway", roles::SYSTEM_GATEWAY).await?, config);
            if let Some(admin) = self.gateway_admin {
                parts.spawn("gateway's admin server", serving.clone().serve_admin(admin, until(stopped.clone())));
            }
            if let Some((listener, tls)) = self.gateway_tls {
                let ca = if tls.issue_with_cluster_ca { cluster_ca.clone() } else { None };
                let certificates = stratus_gateway::tls::GatewayCertificates::new(tls.supplied()?, ca, &serving_domain);
                let config = certificates.server_config().map_err(tls::Error::from)?;
                gateway_https = Some(listener.local_addr().map_err(Error::Listen)?);
                parts.spawn("gateway (HTTPS)", serving.clone().serve_tls(listener, config, until(stopped.clone())));
            }
            parts.spawn("gateway", serving.serve(listener, until(stopped.clone())));
        }

        if let Some(mut config) = self.controllers {
            if let Some(addr) = gateway {
                config.gateway_port = addr.port();
            }
            let metrics = Arc::new(Metrics::default());
            if let Some(listener) = self.controllers_metrics {
                parts.spawn(
                    "controllers' metrics server",
                    stratus_controllers::serve_metrics(listener, metrics.clone(), until(stopped.clone())),
                );
            }
            let controllers = as_part("controllers", roles::SYSTEM_CONTROLLERS).await?;
            let running = stratus_controllers::run_with_demand(controllers, config, metrics, demand, until(stopped));
            parts.spawn("controllers", infallible(running));
        }

        let credentials = self.credentials;
        let mut platform = Platform {
            endpoint,
            api,
            gateway,
            gateway_https,
            autoscaler,
            client,
            admin_password,
            ca_pem,
            cluster_ca,
            issued_validity,
            identity,
            credentials,
            stop,
            parts,
        };
        for Agent { config, runtime, listener } in self.agents {
            platform.add_agent(config, runtime, listener).await?;
        }
        Ok(platform)
    }
}

/// The running platform.
pub struct Platform {
    /// `https://ADDR` (`http://` without TLS) of the API, where clients on this machine reach it.
    pub endpoint: String,
    /// Where the API server of this process listens (none when it connected to another).
    pub api: Option<SocketAddr>,
    /// Where the gateway listens, when there is one.
    pub gateway: Option<SocketAddr>,
    /// Where the gateway serves HTTPS, when it does.
    pub gateway_https: Option<SocketAddr>,
    /// The autoscaler's demand service, when the controllers run here.
    pub autoscaler: Option<String>,
    /// A client of the API: a cluster admin when the API is served here (the service account
    /// `stratus-system/platform`), else with the builder's credentials.
    pub client: Client,
    /// The first admin's password, when this start created the admin.
    pub admin_password: Option<String>,
    /// What clients verify the API's certificate with (PEM), when it is served over TLS.
    pub ca_pem: Option<String>,
    /// The cluster CA, when the API served here uses the one in the data directory.
    pub cluster_ca: Option<Arc<stratus_auth::pki::Ca>>,
    /// How long the certificates the cluster CA here issues to the parts are valid.
    issued_validity: std::time::Duration,
    /// Issues the parts' identities, when the API is served here.
    identity: Option<Identity>,
    credentials: Credentials,
    stop: watch::Sender<bool>,
    parts: Parts,
}

impl Platform {
    /// Starts another node agent, talking to this platform's API and stopping with it;
    /// `listener`, when given, serves its metrics and logs.
    pub async fn add_agent(
        &mut self,
        mut config: AgentConfig,
        runtime: Arc<dyn Runtime>,
        listener: Option<TcpListener>,
    ) -> Result<()> {
        // With the cluster CA here, the agent serves its node's certificate, which the CA
        // issues and renews here.
        if let (Some(ca), None, Some(l)) = (&self.cluster_ca, &config.tls, &listener) {
            let (issuer, node, validity) = (ca.clone(), config.node_name.clone(), self.issued_validity);
            // The node's name, and the address it listens on when that is one address (not
            // 0.0.0.0): a scraper of its /metrics verifies the certificate by that address.
            let mut names = vec![node.clone()];
            if let Ok(addr) = l.local_addr()
                && !addr.ip().is_unspecified()
            {
                names.push(addr.ip().to_string());
            }
            let issue = move || issuer.issue_client_and_server(&node_user(&node), NODES_GROUP, &names, validity);
            let (identity, issued, not_after) = tls::issue_identity(&issue)?;
            let agent_tls = stratus_agent::AgentTls { ca_pem: ca.cert_pem().to_string(), identity: identity.clone() };
            stratus_agent::server::tls_config(&agent_tls).map_err(tls::Error::from)?;
            config.tls = Some(agent_tls);
            let what = format!("node {}'s certificate", config.node_name);
            let renewal = tls::keep_issued_current(what, identity, issue, issued, not_after, self.stop.subscribe());
            self.parts.spawn("node certificate renewal", infallible(renewal));
        }
        if let Some(l) = &listener {
            let scheme = if config.tls.is_some() { "https" } else { "http" };
            config.agent_endpoint =
                agent_endpoint(scheme, l.local_addr().map_err(Error::Listen)?, &config.advertise_address);
        }
        let client = match &self.identity {
            Some(id) => {
                let account = format!("node-{}", config.node_name);
                let token = id.component_token(&account, roles::SYSTEM_AGENT, &config.node_name).await;
                self.client.with_credentials(source(token.map_err(Error::Identity)?))
            }
            None => self.client.with_credentials(self.credentials.clone()),
        };
        let mut stopping = self.stop.subscribe();
        let running = stratus_agent::agent::run(config, client, runtime, listener, async move {
            let _ = stopping.wait_for(|s| *s).await;
        });
        self.parts.spawn("node agent", infallible(running));
        Ok(())
    }

    /// Runs until `shutdown` completes or a part ends by itself (a server that failed, an agent
    /// that gave up), then stops every part and waits for them as [`Platform::stopped`] does.
    /// This is how a binary runs its part.
    pub async fn run_until(self, shutdown: impl Future<Output = ()>) -> Result<()> {
        let ended = self.parts.ended.clone();
        tokio::select! {
            () = shutdown => {}
            () = ended.notified() => {}
        }
        self.stop();
        self.stopped().await
    }

    /// Tells every part to stop; [`Platform::stopped`] waits for them.
    pub fn stop(&self) {
        let _ = self.stop.send(true);
    }

    /// Issues the identities of this platform's parts (and of agents run elsewhere), when the
    /// API is served here.
    pub fn identity(&self) -> Option<&Identity> {
        self.identity.as_ref()
    }

    /// Turns true once the platform is told to stop (`wait_for(|s| *s)` to wait for it).
    pub fn stopping(&self) -> watch::Receiver<bool> {
        self.stop.subscribe()
    }

    /// A handle that stops the platform from elsewhere (a signal handler).
    pub fn stopper(&self) -> Stopper {
        Stopper(self.stop.clone())
    }

    /// Waits until every part has stopped (after [`Platform::stop`]); the first part that
    /// failed is the error, the others are logged.
    pub async fn stopped(mut self) -> Result<()> {
        self.join().await
    }

    /// Waits, as [`Platform::stopped`] does, without giving up the platform: for an owner that
    /// must know every part has ended (a node agent's last container call answered) before it
    /// cleans up, and only holds the platform by reference. Cancel-safe: a part is forgotten
    /// only once it has ended, so a `join` given up (a timeout) can be called again.
    pub async fn join(&mut self) -> Result<()> {
        let mut first = None;
        while let Some((_, task)) = self.parts.running.first_mut() {
            let ended = task.await;
            let (part, _) = self.parts.running.remove(0);
            let outcome = match ended {
                Ok(Ok(())) => continue,
                Ok(Err(message)) => Error::Part { part, message },
                Err(e) => Error::Part { part, message: format!("it stopped unexpectedly: {e}") },
            };
            tracing::error!(error = %outcome, "a part of the platform failed");
            first.get_or_insert(outcome);
        }
        first.map_or(Ok(()), Err)
    }
}

impl Drop for Platform {
    fn drop(&mut self) {
        let _ = self.stop.send(true);
    }
}

/// The running parts, by name, and a bell that rings when one of them ends.
#[derive(Default)]
struct Parts {
    running: Vec<(&'static str, JoinHandle<Result<(), String>>)>,
    ended: Arc<Notify>,
}

impl Parts {
    /// Runs `part` in a task of its own; its error, when it fails, is kept as text with its
    /// causes. `ended` is notified when it ends, however it ends (a panic too).
    fn spawn<E>(&mut self, name: &'static str, part: impl Future<Output = Result<(), E>> + Send + 'static)
    where
        E: std::error::Error + 'static,
    {
        let ends = Ending(self.ended.clone());
        let task = tokio::spawn(async move {
            let _ends = ends;
            part.await.map_err(|e| ErrorChain(&e).to_string())
        });
        self.running.push((name, task));
    }
}

/// Notifies when dropped: when the task that holds it ends.
struct Ending(Arc<Notify>);

impl Drop for Ending {
    fn drop(&mut self) {
        self.0.notify_one();
    }
}

/// Credentials that ask a component's token source before every request.
fn source(token: ComponentToken) -> Credentials {
    Credentials::Source(token)
}

/// A part that cannot fail.
async fn infallible(part: impl Future<Output = ()>) -> Result<(), Infallible> {
    part.await;
    Ok(())
}

/// Stops a [`Platform`] from elsewhere.
#[derive(Clone)]
pub struct Stopper(watch::Sender<bool>);

impl Stopper {
    pub fn stop(&self) {
        let _ = self.0.send(true);
    }
}

/// Where a client on this machine connects: a server listening on every address is reached on
/// loopback.
pub fn endpoint_for(addr: SocketAddr) -> String {
    endpoint_with("http", addr)
}

/// [`endpoint_for`] with another scheme (`https`).
pub fn endpoint_with(scheme: &str, addr: SocketAddr) -> String {
    let ip = match addr.ip() {
        ip if ip.is_unspecified() && ip.is_ipv4() => std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST),
        ip if ip.is_unspecified() => std::net::IpAddr::V6(std::net::Ipv6Addr::LOCALHOST),
        ip => ip,
    };
    format!("{scheme}://{}", SocketAddr::new(ip, addr.port()))
}

/// Where the API server reaches an agent listening on `addr`: there, or, for a listener on every
/// address, at the node's advertise address. The API server dials only hosts the node published
/// (its advertise address and name), so a wildcard listener must not be advertised on loopback
/// as [`endpoint_for`] would.
fn agent_endpoint(scheme: &str, addr: SocketAddr, advertise_address: &str) -> String {
    match advertise_address.parse::<std::net::IpAddr>() {
        Ok(ip) if addr.ip().is_unspecified() => endpoint_with(scheme, SocketAddr::new(ip, addr.port())),
        _ => endpoint_with(scheme, addr),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_agent_on_every_address_is_reached_at_its_advertise_address() {
        let at = |s: &str, advertised: &str| {
            agent_endpoint("http", s.parse().unwrap_or_else(|e| panic!("{s}: {e}")), advertised)
        };
        assert_eq!(at("0.0.0.0:7071", "10.0.0.5"), "http://10.0.0.5:7071");
        assert_eq!(at("[::]:7071", "fd00::5"), "http://[fd00::5]:7071");
        assert_eq!(at("127.0.0.1:7071", "10.0.0.5"), "http://127.0.0.1:7071");
        assert_eq!(at("0.0.0.0:7071", "127.0.0.1"), "http://127.0.0.1:7071");
        assert_eq!(at("0.0.0.0:7071", "not-an-ip"), "http://127.0.0.1:7071");
    }

    #[test]
    fn clients_reach_a_wildcard_listener_on_loopback() {
        let at = |s: &str| endpoint_for(s.parse().unwrap_or_else(|e| panic!("{s}: {e}")));
        assert_eq!(at("0.0.0.0:7070"), "http://127.0.0.1:7070");
        assert_eq!(at("[::]:7070"), "http://[::1]:7070");
        assert_eq!(at("10.1.2.3:80"), "http://10.1.2.3:80");
    }
}

//! The Stratus API server: stores resources in etcd or the embedded store, validates and
//! defaults them, and serves them over gRPC and HTTP/JSON on one port.
//!
//! [`ApiServer::serve`] is the entry point; the binary only parses flags and calls it.

use std::convert::Infallible;
use std::path::PathBuf;
use std::sync::Arc;

use axum::Router;
use stratus_api::v1::resource_service_server::ResourceServiceServer;
use stratus_store::Store;
use tonic::server::NamedService;
use tower::ServiceExt;

pub mod admission;
pub mod error;
pub mod grpc;
pub mod http;
pub mod logs;
pub mod metrics;
pub mod openapi;
pub mod registry;
#[cfg(feature = "testing")]
pub mod testing;

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
    #[error("creating the default namespace failed: {0}")]
    Bootstrap(#[source] error::ApiError),
    #[error("setting up gRPC reflection failed: {0}")]
    Reflection(#[source] tonic_reflection::server::Error),
    #[error("serving failed: {0}")]
    Serve(#[source] std::io::Error),
}

/// Where resources are stored.
#[derive(Debug, Clone)]
pub enum StoreOptions {
    /// A crash-safe store in a local directory: the default, for one machine.
    Embedded { data_dir: PathBuf },
    /// An etcd v3 cluster, for several API servers and high availability.
    Etcd { endpoints: Vec<String> },
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
        StoreOptions::Etcd { endpoints } => {
            let store = stratus_store::etcd::EtcdStore::connect(endpoints)
                .await
                .map_err(|source| Error::ConnectEtcd { endpoints: endpoints.join(","), source })?;
            Ok(store)
        }
    }
}

/// An API server over one store.
pub struct ApiServer {
    registry: Registry,
    /// Container logs, served beside the registry by both protocols.
    logs: logs::Logs,
    closing: tokio::sync::watch::Sender<bool>,
}

impl ApiServer {
    /// Prepares a server over `store`, creating the `default` namespace if it is missing.
    pub async fn new(store: Arc<dyn Store>) -> Result<ApiServer, Error> {
        let (closing, closed) = tokio::sync::watch::channel(false);
        let registry =
            Registry::new(store, Arc::new(admission::AllowAll), Arc::new(metrics::Metrics::default()), closed);
        registry.bootstrap().await.map_err(Error::Bootstrap)?;
        let logs = logs::Logs::new(registry.clone());
        Ok(ApiServer { registry, logs, closing })
    }

    pub fn registry(&self) -> &Registry {
        &self.registry
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
        Ok(http::router(self.registry.clone(), self.logs.clone())
            .route_service(&grpc_path, as_axum(grpc))
            .route_service(&reflection_path, as_axum(reflection))
            .route_service(&reflection_alpha_path, as_axum(reflection_alpha)))
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
        let compactor = tokio::spawn(compact_periodically(self.registry.store().clone(), COMPACTION_INTERVAL, stop_rx));
        let closing = self.closing.clone();
        let shutdown = async move {
            shutdown.await;
            // Watches never end by themselves; ending them lets connections drain.
            let _ = closing.send(true);
        };
        if let Ok(addr) = listener.local_addr() {
            tracing::info!(%addr, "serving the Stratus API (gRPC and HTTP)");
        }
        // Without TCP_NODELAY small gRPC frames wait for the peer's delayed ACK (~40 ms a request).
        let listener = axum::serve::ListenerExt::tap_io(listener, |tcp: &mut tokio::net::TcpStream| {
            if let Err(e) = tcp.set_nodelay(true) {
                tracing::debug!(error = %e, "setting TCP_NODELAY failed");
            }
        });
        let served = axum::serve(listener, app).with_graceful_shutdown(shutdown).await;
        let _ = stop_tx.send(true);
        let _ = sweeper.await;
        let _ = compactor.await;
        served.map_err(Error::Serve)
    }
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

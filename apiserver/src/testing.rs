//! An in-process API server on a free loopback port, over a fresh embedded store, for the
//! tests of other crates.

use std::net::SocketAddr;
use std::sync::Arc;

use stratus_store::Store;

use crate::auth::service::Identity;
use crate::auth::tokens::Tokens;
use crate::{ApiServer, Config, StoreOptions};

/// A running server; stops when dropped.
pub struct TestServer {
    /// `http://127.0.0.1:PORT`
    pub endpoint: String,
    pub addr: SocketAddr,
    pub store: Arc<dyn Store>,
    /// A token of the cluster-admin service account `stratus-system/test-admin`, valid for an
    /// hour: what tests present unless they test identity itself.
    pub token: String,
    /// Issues tokens for other identities (components' service accounts).
    pub identity: Identity,
    /// The signing keys, for tests of rotation.
    pub tokens: Arc<Tokens>,
    /// For a server started with [`TestServer::start_tls`]: the cluster CA, which signed the
    /// serving certificate (for `127.0.0.1`) and signs nodes' certificates.
    pub ca: Option<Arc<stratus_auth::pki::Ca>>,
    /// The temporary directory the server keeps its files in (the embedded store's under
    /// `data/`, as the encryption key); removed when the server is dropped.
    pub dir: std::path::PathBuf,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    _dir: tempfile::TempDir,
}

impl TestServer {
    /// Starts a server over a new embedded store in a temporary directory.
    ///
    /// # Panics
    /// When the server cannot be set up: this is test scaffolding.
    #[allow(clippy::expect_used)]
    pub async fn start() -> TestServer {
        TestServer::start_config(Config::default()).await
    }

    /// Starts a server set up by `config` over a new embedded store.
    #[allow(clippy::expect_used)]
    pub async fn start_config(config: Config) -> TestServer {
        let dir = tempfile::tempdir().expect("temporary directory");
        let store = crate::open_store(&StoreOptions::Embedded { data_dir: dir.path().join("data") })
            .await
            .expect("embedded store opens");
        TestServer::serve(store, config, dir).await
    }

    /// Starts a server over HTTPS (`https://127.0.0.1:PORT`) with a new cluster CA that it
    /// also asks clients' certificates of, as the binaries serve, set up otherwise by `config`.
    #[allow(clippy::expect_used)]
    pub async fn start_tls(mut config: Config) -> TestServer {
        let ca = Arc::new(stratus_auth::pki::Ca::generate().expect("a CA"));
        let issued = ca
            .issue(stratus_auth::pki::Usage::Server, &["127.0.0.1".into()], std::time::Duration::from_secs(3600))
            .expect("a serving certificate");
        let certificates = stratus_support::tls::Certificates::new();
        certificates.set_default(
            stratus_support::tls::certified_key(issued.cert_pem.as_bytes(), issued.key_pem.as_bytes(), "test")
                .expect("the serving certificate"),
        );
        config.tls =
            Some(certificates.server_config_asking_clients(ca.cert_pem().as_bytes()).expect("the TLS configuration"));
        config.cluster_ca = Some(ca.clone());
        let mut server = TestServer::start_config(config).await;
        server.endpoint = format!("https://{}", server.addr);
        server.ca = Some(ca);
        server
    }

    /// Starts a server over `store`; `dir` is kept until the server is dropped.
    #[allow(clippy::expect_used)]
    pub async fn start_with(store: Arc<dyn Store>, dir: tempfile::TempDir) -> TestServer {
        TestServer::serve(store, Config::default(), dir).await
    }

    /// Serves over `store` with `config`; without encryption keys in it, with a key file made in
    /// `dir/data/encryption-key`, as a data directory's.
    #[allow(clippy::expect_used)]
    async fn serve(store: Arc<dyn Store>, mut config: Config, dir: tempfile::TempDir) -> TestServer {
        if config.encryption.is_none() {
            let keys = crate::encryption::Keys::load_or_create(&dir.path().join("data").join("encryption-key"))
                .expect("the test's encryption key");
            config.encryption = Some(Arc::new(keys));
        }
        let server = ApiServer::with_config(store.clone(), config).await.expect("api server starts");
        let identity = server.identity().clone();
        let tokens = server.tokens().clone();
        let admin = identity
            .component_token("test-admin", stratus_api::identity::roles::CLUSTER_ADMIN, "")
            .await
            .expect("the test admin's service account");
        let token = admin();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind a loopback port");
        let addr = listener.local_addr().expect("local address");
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        tokio::spawn(server.serve(listener, async move {
            let _ = stopped.await;
        }));
        TestServer {
            endpoint: format!("http://{addr}"),
            addr,
            store,
            token,
            identity,
            tokens,
            ca: None,
            dir: dir.path().to_path_buf(),
            stop: Some(stop),
            _dir: dir,
        }
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

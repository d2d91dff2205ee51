//! A node agent's identity: a client certificate from the cluster CA, got by joining with a
//! bootstrap token (`stratus-agent --join`), kept in the agent's data directory, and renewed
//! before it expires without a restart. See `stratus_apiserver::auth::nodes` for the server's
//! side.

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use stratus_api::identity::{NODES_GROUP, node_user};
use stratus_auth::pki;
use stratus_client::Client;
use stratus_client::tls::ClientIdentity;
use tokio::sync::watch;

/// The files of a node's identity, in `DATA_DIR/pki/`.
pub const NODE_CERT_FILE: &str = "node.crt";
pub const NODE_KEY_FILE: &str = "node.key";
pub const CA_FILE: &str = "ca.crt";

/// Why a node could not get or keep its certificate.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("fetching the cluster CA from {endpoint}: {source}")]
    Discover {
        endpoint: String,
        #[source]
        source: stratus_client::Error,
    },
    #[error("asking {endpoint} for the certificate of node {node}: {source}")]
    Request {
        endpoint: String,
        node: String,
        #[source]
        source: stratus_client::Error,
    },
    #[error("making the key and certificate request: {0}")]
    Key(#[source] pki::Error),
    #[error("keeping the node's identity in {dir}: {source}")]
    Files {
        dir: PathBuf,
        #[source]
        source: pki::Error,
    },
    #[error("reading {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("the node's certificate: {0}")]
    Certificate(String),
    #[error(
        "this node has no certificate in {0} yet: join with --join https://API --token BOOTSTRAP_TOKEN --ca-cert-hash sha256:HEX"
    )]
    NotJoined(PathBuf),
}

/// A node's certificate, its key and the CA, as the agent holds them.
#[derive(Debug, Clone)]
pub struct NodeCredentials {
    pub node: String,
    pub ca_pem: String,
    /// What the agent's client presents; replaced in place on renewal.
    pub identity: ClientIdentity,
    pub not_after: SystemTime,
    /// When the certificate was issued (its validity is `not_after - issued`).
    pub issued: SystemTime,
    dir: PathBuf,
}

/// How a node that has no certificate yet gets one.
#[derive(Debug, Clone)]
pub struct Join {
    pub endpoint: String,
    pub token: String,
    /// `sha256:HEX` of the CA's public key ([`pki::ca_cert_hash`]).
    pub ca_cert_hash: String,
}

impl NodeCredentials {
    /// The identity kept in `dir` (`node.crt`, `node.key`, `ca.crt`) when there is one; else,
    /// with `join`, joins: fetches the CA pinned by its hash, sends a new key's request with
    /// the bootstrap token, and keeps what it is given (mode 0600).
    pub async fn load_or_join(dir: &Path, node: &str, join: Option<&Join>) -> Result<NodeCredentials, Error> {
        if dir.join(NODE_CERT_FILE).exists() && dir.join(NODE_KEY_FILE).exists() && dir.join(CA_FILE).exists() {
            let read = |name: &str| {
                let path = dir.join(name);
                std::fs::read_to_string(&path).map_err(|source| Error::Read { path, source })
            };
            let (cert, key, ca_pem) = (read(NODE_CERT_FILE)?, read(NODE_KEY_FILE)?, read(CA_FILE)?);
            return NodeCredentials::hold(dir, node, ca_pem, &cert, &key);
        }
        let join = join.ok_or_else(|| Error::NotJoined(dir.to_path_buf()))?;
        let ca_pem = stratus_client::join::discover_ca(&join.endpoint, &join.ca_cert_hash)
            .await
            .map_err(|source| Error::Discover { endpoint: join.endpoint.clone(), source })?;
        let client = Client::with_ca(&join.endpoint, Some(ca_pem.as_bytes()))
            .map_err(|source| Error::Discover { endpoint: join.endpoint.clone(), source })?;
        let (key, csr) = pki::client_request(&node_user(node), NODES_GROUP).map_err(Error::Key)?;
        let issued = client.node_certificate(node, &csr, Some(&join.token)).await.map_err(|source| Error::Request {
            endpoint: join.endpoint.clone(),
            node: node.to_string(),
            source,
        })?;
        let creds = NodeCredentials::hold(dir, node, ca_pem, &issued.certificate, &key)?;
        creds.save(&issued.certificate, &key)?;
        tracing::info!(node, dir = %dir.display(), "joined the cluster; keeping the node's certificate");
        Ok(creds)
    }

    fn hold(dir: &Path, node: &str, ca_pem: String, cert: &str, key: &str) -> Result<NodeCredentials, Error> {
        let identity =
            ClientIdentity::new(cert.as_bytes(), key.as_bytes()).map_err(|e| Error::Certificate(e.to_string()))?;
        let (issued, not_after) = validity(cert)?;
        Ok(NodeCredentials { node: node.to_string(), ca_pem, identity, not_after, issued, dir: dir.to_path_buf() })
    }

    fn save(&self, cert: &str, key: &str) -> Result<(), Error> {
        let files = |source| Error::Files { dir: self.dir.clone(), source };
        pki::create_private_dir(&self.dir).map_err(files)?;
        // The key first: a certificate is never on disk beside a key it does not match for long.
        pki::write_private(&self.dir.join(NODE_KEY_FILE), key.as_bytes()).map_err(files)?;
        pki::write_private(&self.dir.join(NODE_CERT_FILE), cert.as_bytes()).map_err(files)?;
        pki::write_private(&self.dir.join(CA_FILE), self.ca_pem.as_bytes()).map_err(files)
    }

    /// A client of the API at `endpoint` proving itself with this certificate.
    pub fn client(&self, endpoint: &str) -> Result<Client, stratus_client::Error> {
        Client::with_identity(endpoint, self.ca_pem.as_bytes(), &self.identity)
    }

    /// Renews the certificate through `client` (which presents it) each time two thirds of its
    /// life have passed, until `stop`: a new key, a request with it, the new certificate
    /// presented on new connections at once and written to the data directory. A failed
    /// renewal is retried a minute later (sooner near expiry).
    pub async fn keep_renewed(mut self, client: Client, mut stop: watch::Receiver<bool>) {
        loop {
            let life = self.not_after.duration_since(self.issued).unwrap_or_default();
            let renew_at = self.issued + life * 2 / 3;
            let wait = renew_at.duration_since(SystemTime::now()).unwrap_or_default();
            tokio::select! {
                () = tokio::time::sleep(wait) => {}
                _ = stop.wait_for(|s| *s) => return,
            }
            match self.renew(&client).await {
                Ok(()) => tracing::info!(node = %self.node, "renewed the node's certificate"),
                Err(e) => {
                    tracing::error!(node = %self.node, error = %e, "renewing the node's certificate failed");
                    let left = self.not_after.duration_since(SystemTime::now()).unwrap_or_default();
                    tokio::select! {
                        () = tokio::time::sleep(Duration::from_secs(60).min(left / 10).max(Duration::from_secs(1))) => {}
                        _ = stop.wait_for(|s| *s) => return,
                    }
                }
            }
        }
    }

    async fn renew(&mut self, client: &Client) -> Result<(), Error> {
        let (key, csr) = pki::client_request(&node_user(&self.node), NODES_GROUP).map_err(Error::Key)?;
        let issued = client.node_certificate(&self.node, &csr, None).await.map_err(|source| Error::Request {
            endpoint: client.endpoint().to_string(),
            node: self.node.clone(),
            source,
        })?;
        let (from, to) = validity(&issued.certificate)?;
        self.save(&issued.certificate, &key)?;
        self.identity
            .set(issued.certificate.as_bytes(), key.as_bytes())
            .map_err(|e| Error::Certificate(e.to_string()))?;
        (self.issued, self.not_after) = (from, to);
        Ok(())
    }
}

/// When the PEM certificate `cert` was issued (its notBefore) and when it expires.
fn validity(cert: &str) -> Result<(SystemTime, SystemTime), Error> {
    let der = stratus_support::tls::certificates(cert.as_bytes(), "the node's certificate")
        .map_err(|e| Error::Certificate(e.to_string()))?;
    let leaf = der.first().ok_or_else(|| Error::Certificate("holds no certificate".into()))?;
    let subject = pki::subject_of(leaf).map_err(|e| Error::Certificate(e.to_string()))?;
    Ok((subject.not_before, subject.not_after))
}

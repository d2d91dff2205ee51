//! Serving certificates that can change while the server runs: a resolver that picks a
//! certificate by the name the client asks for (SNI) and whose certificates are replaced in
//! place, so a renewed certificate is served to new connections without a restart and without
//! touching open ones.

use std::collections::HashMap;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::{Arc, RwLock};
use std::task::{Context, Poll};

use hyper_util::rt::TokioIo;
use rustls::client::ResolvesClientCert;
use rustls::pki_types::ServerName;

use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert, WebPkiClientVerifier};
use rustls::sign::CertifiedKey;

/// What can go wrong reading a certificate and its key.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{what}: holds no PEM certificate")]
    NoCertificate { what: String },
    #[error("{what}: not a PEM certificate chain: {detail}")]
    BadCertificate { what: String, detail: String },
    #[error("{what}: not a PEM private key (PKCS#8, PKCS#1 or SEC1): {detail}")]
    BadKey { what: String, detail: String },
    #[error("{what}: the key does not match the certificate")]
    Mismatch { what: String },
    #[error("reading {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("making the TLS configuration failed: {0}")]
    Config(#[source] rustls::Error),
    #[error("making the verifier of client certificates failed: {0}")]
    ClientVerifier(#[source] rustls::server::VerifierBuilderError),
}

/// The crypto every Stratus TLS endpoint uses: ring, with rustls' safe defaults.
pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// A certificate chain and key, PEM, as rustls serves them. `what` names them in errors.
pub fn certified_key(cert_pem: &[u8], key_pem: &[u8], what: &str) -> Result<Arc<CertifiedKey>, Error> {
    let chain = certificates(cert_pem, what)?;
    let key = PrivateKeyDer::from_pem_slice(key_pem)
        .map_err(|e| Error::BadKey { what: what.to_owned(), detail: e.to_string() })?;
    let provider = provider();
    let certified = CertifiedKey::from_der(chain, key, &provider).map_err(|e| match e {
        rustls::Error::InconsistentKeys(_) => Error::Mismatch { what: what.to_owned() },
        other => Error::BadKey { what: what.to_owned(), detail: other.to_string() },
    })?;
    Ok(Arc::new(certified))
}

/// The certificates in a PEM bundle, in order.
pub fn certificates(pem: &[u8], what: &str) -> Result<Vec<CertificateDer<'static>>, Error> {
    let chain = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| Error::BadCertificate { what: what.to_owned(), detail: e.to_string() })?;
    if chain.is_empty() {
        return Err(Error::NoCertificate { what: what.to_owned() });
    }
    Ok(chain)
}

/// Reads a certificate file and its key file.
pub fn read_certified_key(cert: &Path, key: &Path) -> Result<Arc<CertifiedKey>, Error> {
    let read = |path: &Path| std::fs::read(path).map_err(|source| Error::Read { path: path.into(), source });
    certified_key(&read(cert)?, &read(key)?, &cert.display().to_string())
}

/// Serving certificates by server name, replaceable while serving.
///
/// A client's SNI name is matched exactly, then against a wildcard one label up (`*.example.com`
/// for `a.example.com`), then the default certificate is served.
#[derive(Debug, Default)]
pub struct Certificates {
    default: RwLock<Option<Arc<CertifiedKey>>>,
    by_name: RwLock<HashMap<String, Arc<CertifiedKey>>>,
}

impl Certificates {
    pub fn new() -> Arc<Certificates> {
        Arc::new(Certificates::default())
    }

    /// Serves `key` when no name matches (and to clients that send no SNI).
    pub fn set_default(&self, key: Arc<CertifiedKey>) {
        if let Ok(mut slot) = self.default.write() {
            *slot = Some(key);
        }
    }

    /// Serves `key` for `name` (a DNS name, or `*.domain`).
    pub fn set(&self, name: &str, key: Arc<CertifiedKey>) {
        if let Ok(mut names) = self.by_name.write() {
            names.insert(name.to_ascii_lowercase(), key);
        }
    }

    /// The certificate served for `name`: one set for it, or for its wildcard, or the default.
    pub fn get(&self, name: Option<&str>) -> Option<Arc<CertifiedKey>> {
        name.and_then(|n| self.get_named(n)).or_else(|| self.default.read().ok().and_then(|d| d.clone()))
    }

    /// The certificate set for `name` or for the wildcard one label up; not the default.
    pub fn get_named(&self, name: &str) -> Option<Arc<CertifiedKey>> {
        let name = name.to_ascii_lowercase();
        let names = self.by_name.read().ok()?;
        let wildcard = name.split_once('.').map(|(_, parent)| format!("*.{parent}"));
        names.get(&name).or_else(|| wildcard.and_then(|w| names.get(&w))).cloned()
    }

    /// A TLS server configuration serving these certificates, offering HTTP/2 and HTTP/1.1
    /// by ALPN, with no client certificates asked for.
    pub fn server_config(self: &Arc<Self>) -> Result<Arc<rustls::ServerConfig>, Error> {
        self.config_with(WantsClients::None)
    }

    /// As [`Certificates::server_config`], and asks clients for a certificate signed by
    /// `client_ca_pem` (the cluster CA) without requiring one: a client that sends none still
    /// connects (and must prove itself otherwise, with a token); one that sends a certificate
    /// the CA did not sign, or one expired or not meant for clients, fails the handshake. The
    /// verified chain is in [`crate::server::Peer::client_certificates`].
    pub fn server_config_asking_clients(
        self: &Arc<Self>,
        client_ca_pem: &[u8],
    ) -> Result<Arc<rustls::ServerConfig>, Error> {
        self.config_with(WantsClients::Optional(roots(client_ca_pem, "the client CA")?))
    }

    /// As [`Certificates::server_config`], and accepts only clients with a certificate signed
    /// by `client_ca_pem`.
    pub fn server_config_requiring_clients(
        self: &Arc<Self>,
        client_ca_pem: &[u8],
    ) -> Result<Arc<rustls::ServerConfig>, Error> {
        self.config_with(WantsClients::Required(roots(client_ca_pem, "the client CA")?))
    }

    fn config_with(self: &Arc<Self>, clients: WantsClients) -> Result<Arc<rustls::ServerConfig>, Error> {
        config_with(Arc::clone(self) as Arc<dyn ResolvesServerCert>, clients)
    }
}

/// A TLS server configuration serving the certificate `resolver` picks (one that is renewed in
/// place, such as a node's), offering HTTP/2 and HTTP/1.1 by ALPN, and asking clients for a
/// certificate signed by `client_ca_pem` without requiring one, as
/// [`Certificates::server_config_asking_clients`].
pub fn server_config_asking_clients(
    resolver: Arc<dyn ResolvesServerCert>,
    client_ca_pem: &[u8],
) -> Result<Arc<rustls::ServerConfig>, Error> {
    config_with(resolver, WantsClients::Optional(roots(client_ca_pem, "the client CA")?))
}

fn config_with(
    resolver: Arc<dyn ResolvesServerCert>,
    clients: WantsClients,
) -> Result<Arc<rustls::ServerConfig>, Error> {
    {
        let builder = rustls::ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(Error::Config)?;
        let optional = matches!(clients, WantsClients::Optional(_));
        let builder = match clients {
            WantsClients::None => builder.with_no_client_auth(),
            WantsClients::Optional(roots) | WantsClients::Required(roots) => {
                let mut verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider());
                if optional {
                    verifier = verifier.allow_unauthenticated();
                }
                builder.with_client_cert_verifier(verifier.build().map_err(Error::ClientVerifier)?)
            }
        };
        let mut config = builder.with_cert_resolver(resolver);
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        Ok(Arc::new(config))
    }
}

/// Whether a server asks its clients for certificates, and which CA must have signed them.
enum WantsClients {
    None,
    Optional(rustls::RootCertStore),
    Required(rustls::RootCertStore),
}

/// The certificates of the PEM bundle `pem` as trust roots; `what` names them in errors.
pub fn roots(pem: &[u8], what: &str) -> Result<rustls::RootCertStore, Error> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in certificates(pem, what)? {
        roots.add(cert).map_err(|e| Error::BadCertificate { what: what.to_owned(), detail: e.to_string() })?;
    }
    Ok(roots)
}

impl ResolvesServerCert for Certificates {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        self.get(hello.server_name())
    }
}

/// A client configuration that trusts only `ca_pem`'s certificates (the cluster CA), for
/// HTTP clients of the platform's own servers.
pub fn client_config(ca_pem: &[u8]) -> Result<rustls::ClientConfig, Error> {
    let roots = roots(ca_pem, "the cluster CA")?;
    Ok(rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(Error::Config)?
        .with_root_certificates(roots)
        .with_no_client_auth())
}

// Clients that prove who they are with a certificate (node agents, the API server dialling
// agents, gateways reporting demand): the certificate is held in a [`ClientIdentity`] that can
// be replaced while the client runs, so a renewed certificate is presented on every new
// connection without a restart. tonic's own TLS takes a fixed identity, so these clients dial
// through a connector of their own ([`connector`]): TCP, then rustls with the cluster CA as the
// only root and the identity's current certificate.

/// A client certificate and key, replaceable in place; clones share it.
#[derive(Clone, Default)]
pub struct ClientIdentity {
    current: Arc<RwLock<Option<Arc<CertifiedKey>>>>,
}

impl std::fmt::Debug for ClientIdentity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientIdentity").finish_non_exhaustive()
    }
}

impl ClientIdentity {
    /// An identity presenting `cert_pem` (the chain, leaf first) with `key_pem`.
    pub fn new(cert_pem: &[u8], key_pem: &[u8]) -> Result<ClientIdentity, Error> {
        let identity = ClientIdentity::default();
        identity.set(cert_pem, key_pem)?;
        Ok(identity)
    }

    /// Presents `cert_pem` and `key_pem` from the next connection on. On error the current
    /// certificate stays.
    pub fn set(&self, cert_pem: &[u8], key_pem: &[u8]) -> Result<(), Error> {
        let key = certified_key(cert_pem, key_pem, "the client certificate")?;
        if let Ok(mut slot) = self.current.write() {
            *slot = Some(key);
        }
        Ok(())
    }

    fn get(&self) -> Option<Arc<CertifiedKey>> {
        self.current.read().ok().and_then(|c| c.clone())
    }
}

/// The same certificate, served: a node's agent serves the certificate it presents to the API
/// (it names the node both as a client and as a server), so a renewal replaces both at once.
impl rustls::server::ResolvesServerCert for ClientIdentity {
    fn resolve(&self, _: rustls::server::ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        self.get()
    }
}

impl ResolvesClientCert for ClientIdentity {
    fn resolve(&self, _: &[&[u8]], _: &[rustls::SignatureScheme]) -> Option<Arc<CertifiedKey>> {
        self.get()
    }

    fn has_certs(&self) -> bool {
        self.get().is_some()
    }
}

/// A rustls client configuration trusting only `ca_pem` and presenting `identity`, offering
/// HTTP/2 by ALPN.
pub fn client_config_with_identity(ca_pem: &[u8], identity: &ClientIdentity) -> Result<rustls::ClientConfig, Error> {
    let roots = roots(ca_pem, "the cluster CA")?;
    let mut config = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(Error::Config)?
        .with_root_certificates(roots)
        .with_client_cert_resolver(Arc::new(identity.clone()));
    config.alpn_protocols = vec![b"h2".to_vec()];
    Ok(config)
}

/// Dials `host:port` of the URI it is given over TCP, then TLS with `config`, verifying the
/// server as `host`.
#[derive(Clone)]
pub struct Connector {
    tls: tokio_rustls::TlsConnector,
    host: String,
    /// The name the server's certificate must carry.
    name: String,
}

/// A connector to `host` (the name the server's certificate must carry) with `config`.
pub fn connector(config: rustls::ClientConfig, host: &str) -> Connector {
    connector_verifying(config, host, host)
}

/// A connector to `host` with `config` that verifies the server's certificate names `name`
/// instead of `host`: a node's agent is dialled at an address and must show a certificate for
/// the node's name.
pub fn connector_verifying(config: rustls::ClientConfig, host: &str, name: &str) -> Connector {
    Connector {
        tls: tokio_rustls::TlsConnector::from(Arc::new(config)),
        host: host.to_string(),
        name: name.to_string(),
    }
}

type Dialed = TokioIo<tokio_rustls::client::TlsStream<tokio::net::TcpStream>>;

impl tower_service::Service<http::Uri> for Connector {
    type Response = Dialed;
    type Error = std::io::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Dialed, std::io::Error>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, uri: http::Uri) -> Self::Future {
        let (tls, host, name) = (self.tls.clone(), self.host.clone(), self.name.clone());
        Box::pin(async move {
            let port = uri.port_u16().unwrap_or(443);
            let tcp = tokio::net::TcpStream::connect((host.trim_matches(['[', ']']), port)).await?;
            let _ = tcp.set_nodelay(true);
            let name = ServerName::try_from(name.trim_matches(['[', ']']).to_string())
                .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))?;
            Ok(TokioIo::new(tls.connect(name, tcp).await?))
        })
    }
}

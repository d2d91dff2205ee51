//! The HTTP (not gRPC) calls of joining nodes, made over the client's own connection:
//! bootstrap tokens for admins, node certificates for agents, and fetching the cluster CA
//! before it can be trusted (pinned by its hash instead). See `stratus_api::identity::join`.

use std::sync::Arc;

use http_body_util::BodyExt;
use serde::Serialize;
use serde::de::DeserializeOwned;
use stratus_api::identity::join::{
    BOOTSTRAP_TOKENS_PATH, BootstrapToken, BootstrapTokenRequest, CA_PATH, NODE_CERTIFICATE_PATH, NodeCertificate,
    NodeCertificateRequest,
};
use tower::Service;

use crate::{Client, Credentials, Error, Result};

/// The largest answer read (a certificate, a token).
const MAX_ANSWER: usize = 256 * 1024;

impl Client {
    /// Makes a bootstrap token (cluster admins only): good for `uses` joins (0: one) for `ttl`
    /// (none: an hour).
    pub async fn create_bootstrap_token(
        &self,
        ttl: Option<std::time::Duration>,
        uses: u32,
        description: &str,
    ) -> Result<BootstrapToken> {
        let ask = BootstrapTokenRequest {
            ttl_seconds: ttl.map(|d| d.as_secs().max(1)).unwrap_or(0),
            uses,
            description: description.to_string(),
        };
        self.post_json(BOOTSTRAP_TOKENS_PATH, &ask, self.bearer()).await
    }

    /// Asks for node `node`'s client certificate for the request `csr_pem`, proving the right
    /// to it with `bootstrap_token`, or (none) with the client's own certificate.
    pub async fn node_certificate(
        &self,
        node: &str,
        csr_pem: &str,
        bootstrap_token: Option<&str>,
    ) -> Result<NodeCertificate> {
        let ask = NodeCertificateRequest { node_name: node.to_string(), csr: csr_pem.to_string() };
        self.post_json(NODE_CERTIFICATE_PATH, &ask, bootstrap_token.map(str::to_string)).await
    }

    /// The token this client presents, if any.
    fn bearer(&self) -> Option<String> {
        match &self.credentials {
            Credentials::None => None,
            Credentials::Token(t) => Some(t.to_string()),
            Credentials::Source(f) => Some(f()),
        }
    }

    /// Sends `method path` with `body` (JSON) and `bearer` over this client's connection.
    async fn call_http(
        &self,
        method: http::Method,
        path: &str,
        body: Vec<u8>,
        bearer: Option<String>,
    ) -> Result<Vec<u8>> {
        let mut req =
            http::Request::builder().method(method).uri(path).header(http::header::CONTENT_TYPE, "application/json");
        if let Some(token) = bearer {
            req = req.header(http::header::AUTHORIZATION, format!("Bearer {token}"));
        }
        let body = tonic::body::Body::new(http_body_util::Full::new(bytes::Bytes::from(body)).map_err(|e| match e {}));
        self.probe().await;
        let endpoint = self.endpoint();
        let req = req.body(body).map_err(|_| Error::BadEndpoint(format!("{endpoint}{path}")))?;
        let mut channel = self.current().1.channel;
        let unavailable = |e: tonic::transport::Error| {
            let status = tonic::Status::from_error(Box::new(e));
            Error::from_status(status, endpoint)
        };
        std::future::poll_fn(|cx| channel.poll_ready(cx)).await.map_err(unavailable)?;
        let resp = channel.call(req).await.map_err(unavailable)?;
        let status = resp.status();
        let bytes = http_body_util::Limited::new(resp.into_body(), MAX_ANSWER)
            .collect()
            .await
            .map_err(|e| Error::Server(format!("reading the answer to {path}: {e}")))?
            .to_bytes()
            .to_vec();
        if status.is_success() {
            return Ok(bytes);
        }
        let message = serde_json::from_slice::<serde_json::Value>(&bytes)
            .ok()
            .and_then(|v| v.get("message").and_then(|m| m.as_str()).map(str::to_string))
            .unwrap_or_else(|| format!("{path} answered {status}"));
        Err(match status.as_u16() {
            400 | 422 => Error::Invalid(message),
            401 => Error::Unauthenticated(message),
            403 => Error::Forbidden(message),
            404 => Error::NotFound(message),
            409 => Error::Conflict(message),
            503 => Error::ServiceUnavailable(message),
            _ => Error::Server(message),
        })
    }

    async fn post_json<T: Serialize, R: DeserializeOwned>(
        &self,
        path: &str,
        body: &T,
        bearer: Option<String>,
    ) -> Result<R> {
        let body =
            serde_json::to_vec(body).map_err(|e| Error::Server(format!("encoding the request to {path}: {e}")))?;
        let answer = self.call_http(http::Method::POST, path, body, bearer).await?;
        serde_json::from_slice(&answer).map_err(|_| Error::Malformed("the JSON body the endpoint documents"))
    }
}

/// The cluster CA of the API at `endpoint` (`https://…`), fetched over a connection that
/// cannot be verified yet and accepted only if its public key hashes to `ca_cert_hash`
/// (`sha256:HEX`, as `stratus_auth::pki::ca_cert_hash` computes it), as kubeadm's discovery.
pub async fn discover_ca(endpoint: &str, ca_cert_hash: &str) -> Result<String> {
    let endpoint = if endpoint.contains("://") { endpoint.to_string() } else { format!("https://{endpoint}") };
    let uri: tonic::transport::Uri = endpoint.parse().map_err(|_| Error::BadEndpoint(endpoint.clone()))?;
    let host = uri.host().ok_or_else(|| Error::BadEndpoint(endpoint.clone()))?.to_string();
    let config = rustls::ClientConfig::builder_with_provider(stratus_support::tls::provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| Error::Tls(e.to_string()))?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(Unverified(stratus_support::tls::provider())))
        .with_no_client_auth();
    let mut config = config;
    config.alpn_protocols = vec![b"h2".to_vec()];
    let plain = format!("http://{}", uri.authority().map(|a| a.as_str()).unwrap_or_default());
    let channel = tonic::transport::Endpoint::from_shared(plain)
        .map_err(|_| Error::BadEndpoint(endpoint.clone()))?
        .connect_timeout(crate::CONNECT_TIMEOUT)
        .connect_with_connector_lazy(crate::tls::connector(config, &host));
    let client = Client::over(vec![crate::Server { endpoint: endpoint.clone(), channel }], Credentials::None);
    let pem = client.call_http(http::Method::GET, CA_PATH, Vec::new(), None).await?;
    let pem = String::from_utf8(pem).map_err(|_| Error::Malformed("a PEM CA certificate"))?;
    let got = stratus_auth::pki::ca_cert_hash(&pem).map_err(|e| Error::Tls(format!("{endpoint}{CA_PATH}: {e}")))?;
    if !got.eq_ignore_ascii_case(ca_cert_hash.trim()) {
        return Err(Error::Tls(format!(
            "the CA {endpoint} serves hashes to {got}, not the {} it was pinned to: refusing to trust it",
            ca_cert_hash.trim()
        )));
    }
    Ok(pem)
}

/// Accepts any server certificate: only for fetching the CA, which is then checked against
/// its pinned hash before anything else is sent.
#[derive(Debug)]
struct Unverified(Arc<rustls::crypto::CryptoProvider>);

impl rustls::client::danger::ServerCertVerifier for Unverified {
    fn verify_server_cert(
        &self,
        _: &rustls::pki_types::CertificateDer<'_>,
        _: &[rustls::pki_types::CertificateDer<'_>],
        _: &rustls::pki_types::ServerName<'_>,
        _: &[u8],
        _: rustls::pki_types::UnixTime,
    ) -> std::result::Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> std::result::Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> std::result::Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

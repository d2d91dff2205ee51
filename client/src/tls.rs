//! Mutual TLS for clients that prove who they are with a certificate (node agents, gateways): the
//! certificate is held in a [`ClientIdentity`] that can be replaced while the client runs, so
//! a renewed certificate is presented on every new connection without a restart.
//!
//! tonic's own TLS takes a fixed identity, so these clients dial through a connector of their
//! own ([`connector`], kept in `stratus_support::tls` for the API server too): TCP, then rustls with the cluster CA as the only root and the identity's
//! current certificate.

use tonic::transport::Uri;

pub use stratus_support::tls::{
    ClientIdentity, Connector, client_config_with_identity as config, connector, connector_verifying,
};

/// A gRPC channel to the mutual-TLS server at `endpoint` (`https://HOST[:PORT]`), trusting only
/// `ca_pem`, presenting `identity`'s current certificate on each new connection, and verifying
/// that the server's certificate names `verify_as` (HOST when `None`). `configure` sets the
/// channel's timeouts. Connects lazily; fails only when `endpoint` is not such a URL or the CA
/// is unusable.
pub fn channel(
    endpoint: &str,
    ca_pem: &[u8],
    identity: &ClientIdentity,
    verify_as: Option<&str>,
    configure: impl FnOnce(tonic::transport::Endpoint) -> tonic::transport::Endpoint,
) -> crate::Result<tonic::transport::Channel> {
    let bad = || crate::Error::BadEndpoint(endpoint.to_string());
    let uri: Uri = endpoint.parse().map_err(|_| bad())?;
    if uri.scheme_str() != Some("https") {
        return Err(crate::Error::Tls(format!("{endpoint}: a client certificate is presented only over https://")));
    }
    let host = uri.host().ok_or_else(bad)?.to_string();
    let config = config(ca_pem, identity)
        .map_err(|e| crate::Error::Tls(format!("the TLS configuration for {endpoint} is unusable: {e}")))?;
    // The connector makes the TLS connection itself; tonic is told plain HTTP so it does not
    // add its own.
    let plain = format!("http://{}", uri.authority().map(|a| a.as_str()).unwrap_or_default());
    let builder = tonic::transport::Endpoint::from_shared(plain).map_err(|_| bad())?;
    let connector = connector_verifying(config, &host, verify_as.unwrap_or(&host));
    Ok(configure(builder).connect_with_connector_lazy(connector))
}

/// Who the caller of a gRPC request served with
/// [`stratus_support::server::serve_tower_with_peer`] is: the subject of the client certificate
/// it presented, which the server's TLS configuration verified against the cluster CA. Fails
/// with Unauthenticated, saying what is missing, when it presented none.
pub fn caller_subject<T>(request: &tonic::Request<T>) -> Result<stratus_auth::pki::Subject, tonic::Status> {
    let leaf = request
        .extensions()
        .get::<stratus_support::server::Peer>()
        .and_then(|peer| peer.client_certificates.as_ref())
        .and_then(|chain| chain.first())
        .ok_or_else(|| {
            tonic::Status::unauthenticated(
                "no client certificate was presented; this service answers only callers with one from the cluster CA",
            )
        })?;
    stratus_auth::pki::subject_of(leaf).map_err(|e| tonic::Status::unauthenticated(e.to_string()))
}

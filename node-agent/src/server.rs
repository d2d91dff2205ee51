//! The agent's own server: `/metrics`, `/healthz`, and the gRPC service the API server calls
//! for logs (`stratus.v1.NodeAgent`), on one port.
//!
//! **TLS.** An agent with a TLS identity ([`crate::AgentTls`]: it joined the cluster, or runs
//! in the process that holds the cluster CA, as in `stratus up`) serves only TLS, with its
//! node's certificate: the one it presents to the API server as a client, which the cluster CA
//! issues for both uses, with subject `system:node:NAME` and the node's name as its DNS name.
//! One certificate, not a separate serving one, because the node's name is what the API server
//! verifies an agent by: it dials the address the node published and checks that the
//! certificate names that node, so the certificate needs no IP addresses (which a joining node
//! could not prove it owns), and a renewal replaces both uses at once.
//!
//! The server asks every client for a certificate from the cluster CA without requiring one
//! (a scraper of `/metrics` has none); the logs service answers only a caller that presented the
//! API server's (common name `system:apiserver`). Without a TLS identity (tests and
//! development in one process) the server is plain HTTP and the logs service checks the
//! caller's bearer token with a `TokenReview` instead.

use std::sync::Arc;

use axum::Router;
use axum::routing::get;
use tokio::sync::watch;
use tonic::server::NamedService;
use tower::ServiceExt;

use crate::logs::{LogLimits, LogService};
use crate::metrics::Metrics;
use crate::runtime::Runtime;

/// How the logs service knows the API server.
pub enum Callers {
    /// By its bearer token, reviewed with the API (plain HTTP).
    Review(Arc<stratus_client::review::TokenReview>),
    /// By its client certificate (TLS; the server must pass the connection's peer along).
    ApiServerCertificate,
}

/// The TLS configuration of the agent's server: the node's certificate, and clients asked for
/// one from the cluster CA.
pub fn tls_config(tls: &crate::AgentTls) -> Result<Arc<rustls::ServerConfig>, stratus_support::tls::Error> {
    stratus_support::tls::server_config_asking_clients(Arc::new(tls.identity.clone()), tls.ca_pem.as_bytes())
}

/// The routes. Followed log streams end when `stop` becomes true, so a graceful shutdown of
/// the server does not wait on them.
/// The logs service answers only the API server, known by its certificate over TLS, else by
/// its token that `review` checks, and relays what `limits` let through.
pub fn router(
    metrics: Arc<Metrics>,
    runtime: Arc<dyn Runtime>,
    node: String,
    stop: watch::Receiver<bool>,
    callers: Callers,
    limits: LogLimits,
) -> Router {
    let service = LogService::new(runtime, node).with_shutdown(stop).with_limits(limits);
    let service = match callers {
        Callers::Review(review) => service.with_review(review),
        Callers::ApiServerCertificate => service.with_apiserver_certificate(),
    };
    let grpc = service.into_server();
    let path = format!(
        "/{}/{{*rest}}",
        <stratus_api::v1::node_agent_server::NodeAgentServer<LogService> as NamedService>::NAME
    );
    let grpc = grpc.map_request(|req: axum::http::Request<axum::body::Body>| req.map(tonic::body::Body::new));
    Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route(
            "/metrics",
            get(move || {
                let metrics = metrics.clone();
                async move { ([("content-type", "text/plain; version=0.0.4; charset=utf-8")], metrics.encode()) }
            }),
        )
        .route_service(&path, grpc)
}

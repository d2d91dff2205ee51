//! The agent's own server: `/metrics`, `/healthz`, and the gRPC service the API server calls
//! for logs (`stratus.v1.NodeAgent`), on one port.

use std::sync::Arc;

use axum::Router;
use axum::routing::get;
use tokio::sync::watch;
use tonic::server::NamedService;
use tower::ServiceExt;

use crate::logs::LogService;
use crate::metrics::Metrics;
use crate::runtime::Runtime;

/// The routes. Followed log streams end when `stop` becomes true, so a graceful shutdown of
/// the server does not wait on them.
/// The logs service answers only the API server, whose token `review` checks.
pub fn router(
    metrics: Arc<Metrics>,
    runtime: Arc<dyn Runtime>,
    node: String,
    stop: watch::Receiver<bool>,
    review: Arc<stratus_client::review::TokenReview>,
) -> Router {
    let grpc = LogService::new(runtime, node).with_shutdown(stop).with_review(review).into_server();
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

//! The agent's own server: `/metrics`, `/healthz`, and the gRPC service the API server calls
//! for logs, on one port.

use std::sync::Arc;

use axum::Router;
use axum::routing::get;

use crate::metrics::Metrics;
use crate::runtime::Runtime;

pub fn router(metrics: Arc<Metrics>, _runtime: Arc<dyn Runtime>, _node: String) -> Router {
    Router::new().route("/healthz", get(|| async { "ok" })).route(
        "/metrics",
        get(move || {
            let metrics = metrics.clone();
            async move { ([("content-type", "text/plain; version=0.0.4; charset=utf-8")], metrics.encode()) }
        }),
    )
}

//! The API server's spans, when traces are on ([`stratus_support::otel`]): one server span per
//! request, under the caller's trace when its `traceparent` names one (the controllers and
//! the CLI send theirs), and a child span for each call to the store made while serving it.
//!
//! ```text
//! stratus.v1.ResourceService/Update       a gRPC call (kind server), or "GET /apis/…/{name}"
//! └── store.update                        the store call, with its key (kind client)
//! ```

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use axum::extract::{MatchedPath, Request};
use axum::middleware::Next;
use axum::response::Response;
use bytes::Bytes;
use stratus_store::{KeyValue, LeaseId, ListOptions, ListResult, Result, Revision, Store, WatchStream};
use stratus_support::otel::{self, Context, FutureExt, KeyValue as Attr, SpanKind, TraceContextExt, Tracer};

const TRACER: &str = "stratus-apiserver";

/// Wraps every request in a server span (when traces are on) that the handler runs under.
pub async fn layer(req: Request, next: Next) -> Response {
    // Probes and scrapes come every few seconds and say nothing about a request's path.
    let probe = matches!(req.uri().path(), "/healthz" | "/livez" | "/readyz" | "/metrics");
    if !otel::enabled() || probe {
        return next.run(req).await;
    }
    let grpc = req
        .headers()
        .get(http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/grpc"));
    let name = if grpc {
        req.uri().path().trim_start_matches('/').to_string()
    } else {
        let route = req.extensions().get::<MatchedPath>().map_or("", MatchedPath::as_str);
        format!("{} {route}", req.method())
    };
    let mut attributes = vec![Attr::new("url.path", req.uri().path().to_string())];
    attributes.push(match grpc {
        true => Attr::new("rpc.system", "grpc"),
        false => Attr::new("http.request.method", req.method().to_string()),
    });
    let tracer = otel::tracer(TRACER);
    let parent = otel::extract(req.headers());
    let span = tracer
        .span_builder(name)
        .with_kind(SpanKind::Server)
        .with_attributes(attributes)
        .start_with_context(&tracer, &parent);
    let cx = parent.with_span(span);
    let response = next.run(req).with_context(cx.clone()).await;
    let span = cx.span();
    span.set_attribute(Attr::new("http.response.status_code", i64::from(response.status().as_u16())));
    // A failed gRPC call answers at once with its status in the headers (trailers-only).
    let grpc_status = response.headers().get("grpc-status").and_then(|v| v.to_str().ok()).and_then(|v| v.parse().ok());
    if let Some(code) = grpc_status {
        span.set_attribute(Attr::new("rpc.grpc.status_code", i64::from(code)));
    }
    if response.status().is_server_error() || grpc_status.is_some_and(|c: i32| c != 0) {
        let message = response.headers().get("grpc-message").and_then(|v| v.to_str().ok()).unwrap_or_default();
        span.set_status(otel::Status::error(format!("{} {message}", response.status())));
    }
    span.end();
    response
}

/// A [`Store`] whose calls made while serving a traced request are child spans of it. Calls
/// made outside any request (compaction, the namespace finalizer) make no span.
pub struct TracedStore {
    inner: Arc<dyn Store>,
}

impl TracedStore {
    pub fn new(inner: Arc<dyn Store>) -> TracedStore {
        TracedStore { inner }
    }
}

/// The span of a store call, when traces are on and the call is part of a traced request.
fn start(op: &'static str, key: &str) -> Option<Context> {
    if !otel::enabled() {
        return None;
    }
    let parent = Context::current();
    if !parent.has_active_span() {
        return None;
    }
    let tracer = otel::tracer(TRACER);
    let span = tracer
        .span_builder(op)
        .with_kind(SpanKind::Client)
        .with_attributes([
            Attr::new("db.operation.name", op.trim_start_matches("store.")),
            Attr::new("store.key", key.to_string()),
        ])
        .start_with_context(&tracer, &parent);
    Some(parent.with_span(span))
}

/// Ends a store call's span, failed when the call failed.
fn end<T>(cx: Option<Context>, result: &Result<T>) {
    let Some(cx) = cx else { return };
    let span = cx.span();
    if let Err(e) = result {
        span.set_status(otel::Status::error(e.to_string()));
    }
    span.end();
}

#[async_trait]
impl Store for TracedStore {
    async fn get(&self, key: &str) -> Result<Option<KeyValue>> {
        let cx = start("store.get", key);
        let result = self.inner.get(key).await;
        end(cx, &result);
        result
    }

    async fn list(&self, prefix: &str, opts: ListOptions) -> Result<ListResult> {
        let cx = start("store.list", prefix);
        let result = self.inner.list(prefix, opts).await;
        if let (Some(cx), Ok(list)) = (&cx, &result) {
            cx.span().set_attribute(Attr::new("store.items", i64::try_from(list.items.len()).unwrap_or(i64::MAX)));
        }
        end(cx, &result);
        result
    }

    async fn create(&self, key: &str, value: Bytes, lease: LeaseId) -> Result<Revision> {
        let cx = start("store.create", key);
        let result = self.inner.create(key, value, lease).await;
        end(cx, &result);
        result
    }

    async fn update(&self, key: &str, value: Bytes, expected: Revision) -> Result<Revision> {
        let cx = start("store.update", key);
        let result = self.inner.update(key, value, expected).await;
        end(cx, &result);
        result
    }

    async fn delete(&self, key: &str, expected: Option<Revision>) -> Result<(KeyValue, Revision)> {
        let cx = start("store.delete", key);
        let result = self.inner.delete(key, expected).await;
        end(cx, &result);
        result
    }

    async fn watch(&self, prefix: &str, after: Revision) -> Result<WatchStream> {
        self.inner.watch(prefix, after).await
    }

    async fn current_revision(&self) -> Result<Revision> {
        self.inner.current_revision().await
    }

    async fn compact(&self, revision: Revision) -> Result<()> {
        self.inner.compact(revision).await
    }

    async fn grant_lease(&self, ttl: Duration) -> Result<LeaseId> {
        self.inner.grant_lease(ttl).await
    }

    async fn keep_alive(&self, lease: LeaseId) -> Result<()> {
        self.inner.keep_alive(lease).await
    }

    async fn revoke_lease(&self, lease: LeaseId) -> Result<()> {
        self.inner.revoke_lease(lease).await
    }

    async fn health(&self) -> Result<()> {
        self.inner.health().await
    }
}

//! The gateway's spans, when traces are on ([`stratus_support::otel`]): one server span per
//! request (`gateway.request`) with a child for each step it takes:
//!
//! ```text
//! gateway.request         from arrival to the response's headers (kind server)
//! ├── gateway.route       finding the revision, admission (private services), rate limit
//! ├── gateway.queue       waiting for an endpoint's slot, or gateway.activator: held while
//! │                       the revision had no instance (a cold start)
//! └── gateway.upstream    one per attempt: sending to the endpoint until its response's
//!                         headers (kind client); its context is the workload's `traceparent`
//! ```
//!
//! The request span continues the client's trace when it sent a valid `traceparent`, and
//! starts one otherwise; the response carries the request span's context back as
//! `traceresponse` (W3C Trace Context Level 2), so a client can find the trace it caused.

use http::{HeaderMap, HeaderName, HeaderValue, StatusCode};
use stratus_client::runtime::ObjectRef;
use stratus_support::otel::{self, BoxedSpan, BoxedTracer, Context, KeyValue, Span, SpanKind, TraceContextExt, Tracer};

pub(crate) const TRACERESPONSE: HeaderName = HeaderName::from_static("traceresponse");

/// The spans of one request.
pub(crate) struct RequestTrace {
    tracer: BoxedTracer,
    /// The request span's context: the parent of every step.
    cx: Context,
}

impl RequestTrace {
    /// Starts the request span, under the trace `headers` carry, when traces are on.
    pub(crate) fn start(headers: &HeaderMap, method: &http::Method, host: &str, path: &str) -> Option<RequestTrace> {
        if !otel::enabled() {
            return None;
        }
        let tracer = otel::tracer("stratus-gateway");
        let parent = otel::extract(headers);
        let span = tracer
            .span_builder("gateway.request")
            .with_kind(SpanKind::Server)
            .with_attributes([
                KeyValue::new("http.request.method", method.to_string()),
                KeyValue::new("server.address", host.to_string()),
                KeyValue::new("url.path", path.to_string()),
            ])
            .start_with_context(&tracer, &parent);
        let cx = parent.with_span(span);
        Some(RequestTrace { tracer, cx })
    }

    /// A span for one step, child of the request span.
    pub(crate) fn step(&self, name: &'static str) -> BoxedSpan {
        self.tracer.start_with_context(name, &self.cx)
    }

    /// The span of one attempt to `address`, and the context that goes to the workload.
    pub(crate) fn upstream(&self, address: &str) -> Context {
        let span = self
            .tracer
            .span_builder("gateway.upstream")
            .with_kind(SpanKind::Client)
            .with_attributes([KeyValue::new("server.address", address.to_string())])
            .start_with_context(&self.tracer, &self.cx);
        self.cx.with_span(span)
    }

    /// Ends the request span with what became of the request, and writes its context into the
    /// response's `traceresponse`.
    pub(crate) fn finish(self, revision: Option<&ObjectRef>, status: StatusCode, headers: &mut HeaderMap) {
        let span = self.cx.span();
        if let Some(r) = revision {
            span.set_attribute(KeyValue::new("stratus.namespace", r.namespace.clone()));
            span.set_attribute(KeyValue::new("stratus.revision", r.name.clone()));
        }
        span.set_attribute(KeyValue::new("http.response.status_code", i64::from(status.as_u16())));
        if status.is_server_error() {
            span.set_status(otel::Status::error(status.to_string()));
        }
        if let Some(value) = otel::traceparent(&self.cx).and_then(|v| HeaderValue::from_str(&v).ok()) {
            headers.insert(TRACERESPONSE, value);
        }
        span.end();
    }
}

/// Ends an upstream attempt's span with the endpoint's status, or the error that ended it.
pub(crate) fn end_upstream(cx: &Context, outcome: Result<StatusCode, String>) {
    let span = cx.span();
    match outcome {
        Ok(status) => {
            span.set_attribute(KeyValue::new("http.response.status_code", i64::from(status.as_u16())));
            if status.is_server_error() {
                span.set_status(otel::Status::error(status.to_string()));
            }
        }
        Err(error) => span.set_status(otel::Status::error(error)),
    }
    span.end();
}

/// Ends a step's span, marking it failed with `error` when there is one.
pub(crate) fn end_step(mut span: BoxedSpan, error: Option<String>) {
    if let Some(error) = error {
        span.set_status(otel::Status::error(error));
    }
    span.end();
}

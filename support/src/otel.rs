//! Traces: OpenTelemetry spans exported over OTLP/gRPC, off unless an endpoint is configured.
//!
//! Configured as every OpenTelemetry SDK is, from the environment:
//! - `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` or `OTEL_EXPORTER_OTLP_ENDPOINT`: the collector
//!   (`http://127.0.0.1:4317`); without either, nothing is traced and spans cost nothing;
//! - `OTEL_TRACES_SAMPLER` and `OTEL_TRACES_SAMPLER_ARG`: which traces are kept (default
//!   `parentbased_always_on`; `parentbased_traceidratio` with `0.01` keeps 1% of new traces and
//!   follows the caller's decision for the rest);
//! - `OTEL_SERVICE_NAME`: the `service.name` of the spans (default: the binary's name);
//! - `OTEL_BSP_SCHEDULE_DELAY` and the other `OTEL_BSP_*`: how spans are batched.
//!
//! Components make their spans with [`tracer`] only when [`enabled`], so that an untraced
//! request pays one atomic load. Trace context travels in W3C `traceparent`/`tracestate`
//! headers ([`extract`], [`inject`]).

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use opentelemetry::global;
use opentelemetry::propagation::{Extractor, Injector, TextMapPropagator};
use opentelemetry_otlp::WithExportConfig;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::SdkTracerProvider;

pub use opentelemetry::global::{BoxedSpan, BoxedTracer};
pub use opentelemetry::trace::{FutureExt, Span, SpanKind, Status, TraceContextExt, Tracer};
pub use opentelemetry::{Context, KeyValue};

const ENDPOINT_VARS: [&str; 2] = ["OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "OTEL_EXPORTER_OTLP_ENDPOINT"];
/// How long an export may take before its batch is dropped.
const EXPORT_TIMEOUT: Duration = Duration::from_secs(10);
/// How long stopping waits for the last spans to go out.
const SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(5);

static ENABLED: AtomicBool = AtomicBool::new(false);

/// Why traces could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{var} {endpoint:?}: not an http:// URL (OTLP over gRPC; https is not supported)")]
    Endpoint { var: &'static str, endpoint: String },
    #[error("the OTLP exporter: {0}")]
    Exporter(String),
}

/// The running exporter: flushes what is left when [`Tracing::shutdown`] is called.
pub struct Tracing {
    provider: SdkTracerProvider,
    endpoint: String,
}

impl Tracing {
    /// Where spans go.
    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    /// Exports the spans still buffered and stops the exporter; traces are off afterwards.
    pub async fn shutdown(self) {
        ENABLED.store(false, Ordering::Release);
        // The SDK waits on a thread of its own; the export it waits for runs on this runtime.
        let provider = self.provider;
        let stopped = tokio::task::spawn_blocking(move || provider.shutdown_with_timeout(SHUTDOWN_TIMEOUT)).await;
        if let Ok(Err(e)) = stopped {
            tracing::warn!(error = %e, "traces: the last spans could not be exported");
        }
    }
}

/// The endpoint the environment names, if any: the first of [`ENDPOINT_VARS`] set and not
/// empty, with the variable's name.
fn configured_endpoint(get: impl Fn(&str) -> Option<String>) -> Option<(&'static str, String)> {
    ENDPOINT_VARS.iter().find_map(|var| get(var).filter(|v| !v.trim().is_empty()).map(|v| (*var, v.trim().to_string())))
}

/// Starts exporting spans when the environment names an endpoint: installs the global tracer
/// provider (with `default_service` as `service.name` unless `OTEL_SERVICE_NAME` says
/// otherwise) and the W3C trace-context propagator. `None` when no endpoint is configured.
///
/// Must be called within a tokio runtime (the gRPC channel runs on it).
pub fn init(default_service: &str) -> Result<Option<Tracing>, Error> {
    let Some((var, endpoint)) = configured_endpoint(|v| std::env::var(v).ok()) else { return Ok(None) };
    if !endpoint.starts_with("http://") {
        return Err(Error::Endpoint { var, endpoint });
    }
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_tonic()
        .with_endpoint(endpoint.clone())
        .with_timeout(EXPORT_TIMEOUT)
        .build()
        .map_err(|e| Error::Exporter(e.to_string()))?;
    let mut resource = opentelemetry_sdk::Resource::builder();
    if std::env::var_os("OTEL_SERVICE_NAME").is_none() {
        resource = resource.with_service_name(default_service.to_string());
    }
    let provider = SdkTracerProvider::builder().with_batch_exporter(exporter).with_resource(resource.build()).build();
    global::set_tracer_provider(provider.clone());
    global::set_text_map_propagator(TraceContextPropagator::new());
    ENABLED.store(true, Ordering::Release);
    tracing::info!(endpoint, "traces: exporting spans over OTLP/gRPC");
    Ok(Some(Tracing { provider, endpoint }))
}

/// Whether spans are being exported; when not, components make none.
pub fn enabled() -> bool {
    ENABLED.load(Ordering::Relaxed)
}

/// The tracer of a component (`stratus-gateway`, `stratus-apiserver`, …).
pub fn tracer(component: &'static str) -> global::BoxedTracer {
    global::tracer(component)
}

/// The trace context `headers` carry (`traceparent`, `tracestate`), or an empty one.
pub fn extract(headers: &http::HeaderMap) -> Context {
    TraceContextPropagator::new().extract(&HeaderExtractor(headers))
}

/// Writes the context of `cx`'s span into `headers` as `traceparent` (and `tracestate`),
/// replacing what was there. Nothing is written for a context without a valid span.
pub fn inject(cx: &Context, headers: &mut http::HeaderMap) {
    if cx.span().span_context().is_valid() {
        TraceContextPropagator::new().inject_context(cx, &mut HeaderInjector(headers));
    }
}

/// The `traceparent` value of `cx`'s span, when it has a valid one.
pub fn traceparent(cx: &Context) -> Option<String> {
    let span = cx.span();
    let sc = span.span_context();
    sc.is_valid().then(|| format!("00-{}-{}-{:02x}", sc.trace_id(), sc.span_id(), sc.trace_flags().to_u8()))
}

struct HeaderExtractor<'a>(&'a http::HeaderMap);

impl Extractor for HeaderExtractor<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|v| v.to_str().ok())
    }

    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(http::HeaderName::as_str).collect()
    }
}

struct HeaderInjector<'a>(&'a mut http::HeaderMap);

impl Injector for HeaderInjector<'_> {
    fn set(&mut self, key: &str, value: String) {
        if let (Ok(name), Ok(value)) = (http::HeaderName::try_from(key), http::HeaderValue::try_from(value)) {
            self.0.insert(name, value);
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use opentelemetry::trace::{SpanContext, SpanId, TraceFlags, TraceId, TraceState};

    use super::*;

    #[test]
    fn the_endpoint_is_the_traces_one_else_the_general_one_and_blank_is_none() {
        let env = |pairs: &'static [(&'static str, &'static str)]| {
            move |var: &str| pairs.iter().find(|(k, _)| *k == var).map(|(_, v)| (*v).to_string())
        };
        assert_eq!(configured_endpoint(env(&[])), None);
        assert_eq!(configured_endpoint(env(&[("OTEL_EXPORTER_OTLP_ENDPOINT", " ")])), None);
        assert_eq!(
            configured_endpoint(env(&[("OTEL_EXPORTER_OTLP_ENDPOINT", "http://a:4317")])),
            Some(("OTEL_EXPORTER_OTLP_ENDPOINT", "http://a:4317".into()))
        );
        assert_eq!(
            configured_endpoint(env(&[
                ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://a:4317"),
                ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "http://b:4317")
            ])),
            Some(("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "http://b:4317".into()))
        );
    }

    #[test]
    fn trace_context_goes_out_and_comes_back_in_headers() {
        let parent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        let mut headers = http::HeaderMap::new();
        headers.insert("traceparent", parent.parse().unwrap());
        let cx = extract(&headers);
        assert_eq!(traceparent(&cx).as_deref(), Some(parent));

        let child = SpanContext::new(
            TraceId::from_hex("4bf92f3577b34da6a3ce929d0e0e4736").unwrap(),
            SpanId::from_hex("1111111111111111").unwrap(),
            TraceFlags::SAMPLED,
            false,
            TraceState::default(),
        );
        let mut out = http::HeaderMap::new();
        inject(&Context::new().with_remote_span_context(child), &mut out);
        assert_eq!(out["traceparent"], "00-4bf92f3577b34da6a3ce929d0e0e4736-1111111111111111-01");

        // Nothing valid: nothing extracted, nothing written.
        let mut junk = http::HeaderMap::new();
        junk.insert("traceparent", "00-zz-11-01".parse().unwrap());
        let cx = extract(&junk);
        assert_eq!(traceparent(&cx), None);
        inject(&cx, &mut junk);
        assert_eq!(junk["traceparent"], "00-zz-11-01");
    }
}

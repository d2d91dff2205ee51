//! What keeps a browser from being used against the API (the first layer every request
//! passes, before authentication):
//!
//! - **DNS rebinding.** A page on `evil.example` whose name is made to resolve to 127.0.0.1
//!   reaches the API with `Host: evil.example`. Only IP literals, `localhost` and the names the
//!   server is configured for are answered; any other `Host` gets 421.
//! - **Cross-origin requests.** A request carrying `Origin` is answered only when the origin is
//!   the API's own (same scheme, host and port) or on the configured list; preflights from
//!   listed origins are answered with the CORS headers, anything else gets 403.
//! - **"Simple" requests.** A cross-site form or `fetch` can POST `text/plain` without a
//!   preflight. Writes (POST, PUT, PATCH) must say their body is JSON, YAML or a merge patch (the
//!   token endpoint: a form; an image upload: a tar; gRPC: gRPC), else 415.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use crate::auth::authn::{is_grpc, refusal};
use crate::error::{ApiError, Reason};

/// Which hosts and origins the API answers.
#[derive(Debug, Clone, Default)]
pub struct GuardConfig {
    /// Host names (besides IP literals and `localhost`) the API is reached by; `*.example.com`
    /// matches every subdomain.
    pub hosts: Vec<String>,
    /// Origins (`https://console.example.com`) whose pages may call the API.
    pub origins: Vec<String>,
}

/// The media types a write may carry.
const WRITE_TYPES: &[&str] = &[
    "application/json",
    "application/yaml",
    "application/x-yaml",
    "text/yaml",
    "application/merge-patch+json",
    "application/apply-patch+yaml",
];

impl GuardConfig {
    fn host_allowed(&self, host: &str) -> bool {
        let name = strip_port(host).trim_end_matches('.').to_ascii_lowercase();
        let literal = name.trim_start_matches('[').trim_end_matches(']');
        if literal.parse::<std::net::IpAddr>().is_ok() || name == "localhost" {
            return true;
        }
        self.hosts.iter().any(|h| {
            let h = h.to_ascii_lowercase();
            match h.strip_prefix("*.") {
                Some(domain) => name.ends_with(&format!(".{domain}")),
                None => name == h,
            }
        })
    }

    fn origin_allowed(&self, origin: &str, host: Option<&str>) -> bool {
        let origin = origin.trim_end_matches('/');
        // The API's own origin: the same host and port, by http or https.
        let own = host.is_some_and(|h| origin == format!("http://{h}") || origin == format!("https://{h}"));
        own || self.origins.iter().any(|o| o.trim_end_matches('/').eq_ignore_ascii_case(origin))
    }
}

/// `host[:port]` without the port (IPv6 literals keep their brackets).
fn strip_port(host: &str) -> &str {
    if host.starts_with('[') {
        return host.split_once(']').map(|(h, _)| &host[..=h.len()]).unwrap_or(host);
    }
    match host.rsplit_once(':') {
        Some((h, port)) if port.chars().all(|c| c.is_ascii_digit()) && !h.contains(':') => h,
        _ => host,
    }
}

fn host_of(req: &Request) -> Option<String> {
    req.headers()
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
        .or_else(|| req.uri().authority().map(|a| a.to_string()))
}

fn media_type(headers: &HeaderMap) -> Option<String> {
    let v = headers.get(header::CONTENT_TYPE)?.to_str().ok()?;
    Some(v.split(';').next().unwrap_or("").trim().to_ascii_lowercase())
}

/// The middleware.
pub async fn layer(State(config): State<Arc<GuardConfig>>, req: Request, next: Next) -> Response {
    let grpc = is_grpc(req.headers());
    let host = host_of(&req);
    if let Some(h) = host.as_deref()
        && !config.host_allowed(h)
    {
        let msg = format!("this API is not served at host {h:?} (add it with --allowed-host)");
        return (StatusCode::MISDIRECTED_REQUEST, msg).into_response();
    }
    let origin = req.headers().get(header::ORIGIN).and_then(|v| v.to_str().ok()).map(str::to_string);
    if let Some(origin) = &origin {
        if !config.origin_allowed(origin, host.as_deref()) {
            let e = ApiError::new(
                Reason::Forbidden,
                format!("requests from origin {origin:?} are not allowed (add it with --allowed-origin)"),
            );
            return refusal(&e, grpc);
        }
        if req.method() == Method::OPTIONS {
            return cors(Response::new(Body::empty()), origin, true);
        }
    }
    // A write that carries a body must say what it is; one without (a POST on a path that takes
    // none) is answered by its handler.
    let write = matches!(*req.method(), Method::POST | Method::PUT | Method::PATCH);
    let has_body = axum::body::HttpBody::size_hint(req.body()).exact() != Some(0);
    if write && has_body && !grpc {
        let form_ok = req.uri().path() == "/auth/token";
        let tar_ok = req.method() == Method::POST && crate::images::is_upload_path(req.uri().path());
        let ok = match media_type(req.headers()) {
            Some(t) => {
                WRITE_TYPES.contains(&t.as_str())
                    || (form_ok && t == "application/x-www-form-urlencoded")
                    || (tar_ok && t == crate::images::ARCHIVE_TYPE)
            }
            None => false,
        };
        if !ok {
            let e = ApiError::new(
                Reason::UnsupportedMediaType,
                "a write must carry Content-Type application/json, application/yaml or application/merge-patch+json",
            );
            return refusal(&e, false);
        }
    }
    let response = next.run(req).await;
    match origin {
        Some(origin) => cors(response, &origin, false),
        None => response,
    }
}

/// Adds the CORS headers for an allowed `origin`; for a preflight, the methods and headers too.
fn cors(mut response: Response, origin: &str, preflight: bool) -> Response {
    let h = response.headers_mut();
    if let Ok(v) = HeaderValue::from_str(origin) {
        h.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, v);
    }
    h.insert(header::VARY, HeaderValue::from_static("Origin"));
    if preflight {
        *response.status_mut() = StatusCode::NO_CONTENT;
        let h = response.headers_mut();
        h.insert(header::ACCESS_CONTROL_ALLOW_METHODS, HeaderValue::from_static("GET, POST, PUT, PATCH, DELETE"));
        h.insert(header::ACCESS_CONTROL_ALLOW_HEADERS, HeaderValue::from_static("authorization, content-type"));
        h.insert(header::ACCESS_CONTROL_MAX_AGE, HeaderValue::from_static("600"));
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_by_literal_localhost_or_configuration() {
        let c = GuardConfig { hosts: vec!["api.example.com".into(), "*.stratus.test".into()], origins: vec![] };
        for ok in [
            "127.0.0.1:7070",
            "[::1]:7070",
            "localhost",
            "localhost:7070",
            "10.0.0.5",
            "api.example.com:443",
            "x.stratus.test",
        ] {
            assert!(c.host_allowed(ok), "{ok}");
        }
        for bad in ["evil.example", "evil.example:7070", "stratus.test", "api.example.com.evil.example"] {
            assert!(!c.host_allowed(bad), "{bad}");
        }
    }

    #[test]
    fn origins_must_be_the_apis_own_or_listed() {
        let c = GuardConfig { hosts: vec![], origins: vec!["https://console.example.com".into()] };
        assert!(c.origin_allowed("http://127.0.0.1:7070", Some("127.0.0.1:7070")));
        assert!(c.origin_allowed("https://console.example.com/", Some("127.0.0.1:7070")));
        assert!(!c.origin_allowed("http://127.0.0.1:8080", Some("127.0.0.1:7070")));
        assert!(!c.origin_allowed("https://evil.example", Some("127.0.0.1:7070")));
        assert!(!c.origin_allowed("null", None));
    }
}

//! Where requests go and how one is sent: HTTP/1.1 over a pool of kept-alive connections.

use std::time::Duration;

use bytes::Bytes;
use http::header::{HOST, HeaderValue, USER_AGENT};
use http::uri::{Authority, PathAndQuery, Scheme};
use http::{Method, Request, Uri};
use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;

use super::stats::{ErrorClass, Outcome};

const AGENT: &str = concat!("stratus-bench/", env!("CARGO_PKG_VERSION"));

/// Where requests go: the URI to connect to and the `Host` header to send, which differ for
/// `*.localhost` names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// The URL as the user knows it (with `--path` applied).
    pub url: String,
    /// What the client connects to.
    uri: Uri,
    /// Sent instead of the authority of `uri`.
    host: Option<HeaderValue>,
}

impl Target {
    /// The target at `url` (`http://…`; a URL without a scheme is taken as http), with its
    /// path and query replaced by `path` when given. `localhost` and `*.localhost` names are
    /// loopback (RFC 6761): requests go to 127.0.0.1 with the name in the `Host` header, so
    /// the gateway routes them without any resolver having to know the name.
    pub fn parse(url: &str, path: Option<&str>) -> Result<Target, String> {
        let with_scheme = if url.contains("://") { url.to_string() } else { format!("http://{url}") };
        let uri: Uri = with_scheme.parse().map_err(|e| format!("invalid URL {url:?}: {e}"))?;
        match uri.scheme() {
            Some(s) if *s == Scheme::HTTP => {}
            Some(s) if *s == Scheme::HTTPS => {
                return Err(format!("cannot benchmark {url:?}: https is not supported, only http"));
            }
            _ => return Err(format!("invalid URL {url:?}: only http:// URLs are supported")),
        }
        let Some(authority) = uri.authority().cloned() else {
            return Err(format!("invalid URL {url:?}: it has no host"));
        };
        if authority.as_str().contains('@') {
            return Err(format!("invalid URL {url:?}: credentials in URLs are not supported"));
        }
        let path_and_query = match path {
            Some(p) if !p.starts_with('/') => return Err(format!("invalid --path {p:?}: it must start with /")),
            Some(p) => p.parse::<PathAndQuery>().map_err(|e| format!("invalid --path {p:?}: {e}"))?,
            None => uri.path_and_query().cloned().unwrap_or_else(|| PathAndQuery::from_static("/")),
        };
        let display = format!("http://{authority}{path_and_query}");
        let host = authority.host().to_ascii_lowercase();
        let loopback_name = host == "localhost" || host.ends_with(".localhost");
        let (connect_authority, host_header) = if loopback_name {
            let port = authority.port_u16().unwrap_or(80);
            let connect: Authority =
                format!("127.0.0.1:{port}").parse().map_err(|e| format!("invalid URL {url:?}: {e}"))?;
            let header = HeaderValue::from_str(authority.as_str()).map_err(|e| format!("invalid URL {url:?}: {e}"))?;
            (connect, Some(header))
        } else {
            (authority, None)
        };
        let uri = Uri::builder()
            .scheme(Scheme::HTTP)
            .authority(connect_authority)
            .path_and_query(path_and_query)
            .build()
            .map_err(|e| format!("invalid URL {url:?}: {e}"))?;
        Ok(Target { url: display, uri, host: host_header })
    }

    /// The address connected to, when it differs from the URL's host.
    pub fn connects_to(&self) -> Option<String> {
        self.host.as_ref().and_then(|_| self.uri.authority().map(ToString::to_string))
    }

    fn request(&self) -> Result<Request<Empty<Bytes>>, http::Error> {
        let mut req = Request::builder().method(Method::GET).uri(self.uri.clone()).header(USER_AGENT, AGENT);
        if let Some(host) = &self.host {
            req = req.header(HOST, host.clone());
        }
        req.body(Empty::new())
    }
}

/// Sends requests to one target through a shared pool of connections.
#[derive(Clone)]
pub struct Sender {
    client: Client<HttpConnector, Empty<Bytes>>,
    target: Target,
    timeout: Duration,
}

impl Sender {
    pub fn new(target: Target, timeout: Duration) -> Sender {
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        // Connections stay open between requests; a load generator that reconnected each time
        // would measure its own handshakes.
        let client = Client::builder(TokioExecutor::new()).pool_idle_timeout(Duration::from_secs(90)).build(connector);
        Sender { client, target, timeout }
    }

    pub fn target(&self) -> &Target {
        &self.target
    }

    /// Sends one request and reads the whole answer, within the timeout.
    pub async fn send(&self) -> Outcome {
        let Ok(req) = self.target.request() else {
            return Outcome::Failed(ErrorClass::Other);
        };
        let exchange = async {
            let resp = self
                .client
                .request(req)
                .await
                .map_err(|e| if e.is_connect() { ErrorClass::Connect } else { ErrorClass::Other })?;
            let status = resp.status().as_u16();
            resp.into_body().collect().await.map_err(|_| ErrorClass::Other)?;
            Ok::<_, ErrorClass>(status)
        };
        match tokio::time::timeout(self.timeout, exchange).await {
            Ok(Ok(status)) => Outcome::Answered(status),
            Ok(Err(class)) => Outcome::Failed(class),
            Err(_) => Outcome::Failed(ErrorClass::Timeout),
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn a_url_is_used_as_it_is() {
        let t = Target::parse("http://10.1.2.3:8080/a?b=1", None).unwrap();
        assert_eq!(t.url, "http://10.1.2.3:8080/a?b=1");
        assert_eq!(t.uri, "http://10.1.2.3:8080/a?b=1");
        assert_eq!(t.host, None);
        assert_eq!(t.connects_to(), None);
        let t = Target::parse("example.com", None).unwrap();
        assert_eq!(t.url, "http://example.com/");
    }

    #[test]
    fn localhost_names_go_to_loopback_with_their_host_header() {
        let t = Target::parse("http://hello.default.localhost:8080", Some("/?sleep_ms=100")).unwrap();
        assert_eq!(t.url, "http://hello.default.localhost:8080/?sleep_ms=100");
        assert_eq!(t.uri, "http://127.0.0.1:8080/?sleep_ms=100");
        assert_eq!(t.host.as_ref().unwrap(), "hello.default.localhost:8080");
        assert_eq!(t.connects_to().as_deref(), Some("127.0.0.1:8080"));
        let req = t.request().unwrap();
        assert_eq!(req.headers()[HOST], "hello.default.localhost:8080");
        let t = Target::parse("http://LocalHost/x", None).unwrap();
        assert_eq!(t.uri, "http://127.0.0.1:80/x");
    }

    #[test]
    fn path_replaces_the_path_and_query_of_the_url() {
        let t = Target::parse("http://127.0.0.1:9/old?x=1", Some("/new?sleep_ms=5")).unwrap();
        assert_eq!(t.uri, "http://127.0.0.1:9/new?sleep_ms=5");
    }

    #[test]
    fn unsupported_urls_are_refused_with_a_reason() {
        assert!(Target::parse("https://example.com", None).unwrap_err().contains("https is not supported"));
        assert!(Target::parse("ftp://example.com", None).unwrap_err().contains("only http://"));
        assert!(Target::parse("http://u:p@example.com", None).unwrap_err().contains("credentials"));
        assert!(Target::parse("http://", None).is_err());
        assert!(Target::parse("http://a b", None).is_err());
        assert!(Target::parse("http://x", Some("nope")).unwrap_err().contains("must start with /"));
        assert!(Target::parse("http://x", Some("/a b")).is_err());
    }
}

//! Image digests: what `image:tag` names right now, as the immutable `repo@sha256:…` that a
//! Revision then runs for the rest of its life (Knative's tag-to-digest resolution).
//!
//! [`Resolver::resolve`] asks the image's registry through the distribution API:
//! `HEAD /v2/<repository>/manifests/<tag>` accepting Docker v2 and OCI manifests and indexes,
//! and reads `Docker-Content-Digest`. A HEAD answer has no body, so a failure is asked again
//! with GET to report the registry's own words (`manifest unknown`). Public images of
//! registries that hand out anonymous pull tokens (Docker Hub) are resolved through the token
//! service their `WWW-Authenticate: Bearer` challenge names; registries that need credentials
//! are not supported and answer [`Error::Unauthorized`].
//!
//! Loopback registries and those listed as insecure are spoken to over plain HTTP, all others
//! over HTTPS verified against the machine's CA certificates.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use http_body_util::{BodyExt, Empty, Limited};
use hyper::body::{Bytes, Incoming};
use hyper::{HeaderMap, Method, Request, Response, StatusCode, Uri, header};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client as HttpClient;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use stratus_api::v1::Container;
use tracing::{debug, warn};

/// How long one resolution may take, token exchange included.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);

/// Every manifest media type a runnable image may have: single-platform (Docker v2, OCI) and
/// multi-platform (Docker manifest list, OCI index). The digest of an index is what a pull of
/// the tag resolves to on any platform.
const MANIFEST_TYPES: &str = "application/vnd.oci.image.index.v1+json, \
     application/vnd.docker.distribution.manifest.list.v2+json, \
     application/vnd.oci.image.manifest.v1+json, \
     application/vnd.docker.distribution.manifest.v2+json";

/// The registry of images named without one, as Docker names it and where its API is.
const DOCKER_HUB: &str = "docker.io";
const DOCKER_HUB_API: &str = "registry-1.docker.io";

/// The most of an error or token answer that is read.
const MAX_BODY: usize = 64 * 1024;

/// Why an image could not be resolved. Every message starts with the image, so that it can be
/// shown as is to the person who wrote it.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{image}: not a valid image reference: {reason}")]
    InvalidReference { image: String, reason: String },
    #[error("{image}: cannot reach the registry {registry}")]
    Unreachable {
        image: String,
        registry: String,
        #[source]
        source: hyper_util::client::legacy::Error,
    },
    #[error("{image}: the registry {registry} did not answer within {timeout:?}")]
    Timeout { image: String, registry: String, timeout: Duration },
    /// The registry has no such repository or tag; `message` is the registry's own words.
    #[error("{image}: {message}")]
    NotFound { image: String, message: String },
    #[error("{image}: the registry {registry} refused anonymous access: {message}")]
    Unauthorized { image: String, registry: String, message: String },
    #[error("{image}: the registry {registry} answered {status}: {message}")]
    Registry { image: String, registry: String, status: StatusCode, message: String },
    #[error("{image}: the registry {registry} sent no valid Docker-Content-Digest header")]
    NoDigest { image: String, registry: String },
    /// The registry's challenge sent the token request elsewhere than to itself or to an
    /// allowed token host: following it would let a registry make the controllers call any URL.
    #[error(
        "{image}: the registry {registry} sends for a token to {realm}, which is neither on the registry's host nor an \
         allowed token host (--registry-auth-host)"
    )]
    RealmNotAllowed { image: String, registry: String, realm: String },
    #[error("{image}: cannot speak HTTPS to the registry {registry}: {reason}")]
    Tls { image: String, registry: String, reason: String },
    #[error("{image}: cannot build a request to the registry {registry}")]
    Request {
        image: String,
        registry: String,
        #[source]
        source: hyper::http::Error,
    },
    #[error("{image}: cannot read the answer of {registry}")]
    Body {
        image: String,
        registry: String,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// An image reference taken apart as Docker reads it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ImageRef {
    /// The reference as written, without tag or digest: what a pinned reference starts with.
    pub name: String,
    /// Where the registry's API is: `host[:port]`.
    pub registry: String,
    /// The repository within the registry, e.g. `library/nginx`.
    pub repository: String,
    /// The tag (`latest` when none is written).
    pub tag: String,
    /// The digest, when the reference is pinned already.
    pub digest: Option<String>,
}

impl ImageRef {
    /// Parses `[registry/]repository[:tag][@digest]`. The first path component is a registry
    /// when it has a `.` or a `:` or is `localhost`; otherwise the image is on Docker Hub, where
    /// one-component names live under `library/`.
    pub fn parse(image: &str) -> Result<ImageRef> {
        let invalid = |reason: &str| Error::InvalidReference { image: image.to_string(), reason: reason.to_string() };
        let (rest, digest) = match image.split_once('@') {
            Some((rest, digest)) => {
                if !valid_digest(digest) {
                    return Err(invalid("the digest is not algorithm:hex"));
                }
                (rest, Some(digest.to_string()))
            }
            None => (image, None),
        };
        // A tag follows the last ':' after the last '/'; a ':' before that is a registry's port.
        let last_component = rest.rfind('/').map_or(0, |i| i + 1);
        let (name, tag) = match rest[last_component..].rfind(':') {
            Some(i) => (&rest[..last_component + i], &rest[last_component + i + 1..]),
            None => (rest, "latest"),
        };
        if name.is_empty() {
            return Err(invalid("the repository name is empty"));
        }
        if !valid_tag(tag) {
            return Err(invalid("a tag is 1 to 128 letters, digits, '_', '.' and '-', not starting with '.' or '-'"));
        }
        let (registry, repository) = match name.split_once('/') {
            Some((first, path)) if first.contains(['.', ':']) || first == "localhost" => {
                let registry = if first == DOCKER_HUB || first == "index.docker.io" { DOCKER_HUB_API } else { first };
                let repository = if registry == DOCKER_HUB_API && !path.contains('/') {
                    format!("library/{path}")
                } else {
                    path.to_string()
                };
                (registry.to_string(), repository)
            }
            _ if name.contains('/') => (DOCKER_HUB_API.to_string(), name.to_string()),
            _ => (DOCKER_HUB_API.to_string(), format!("library/{name}")),
        };
        let path_ok = repository.split('/').all(|c| {
            !c.is_empty()
                && c.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'.' | b'_' | b'-'))
        });
        if !path_ok {
            return Err(invalid("repository names are lowercase letters, digits, '.', '_' and '-', separated by '/'"));
        }
        Ok(ImageRef { name: name.to_string(), registry, repository, tag: tag.to_string(), digest })
    }

    /// The reference pinned to `digest`: `name@digest`.
    pub fn pinned(&self, digest: &str) -> String {
        format!("{}@{digest}", self.name)
    }
}

/// The index of the container that serves requests: the first with a port, else the first.
/// Its image is the one a Revision is pinned by.
pub fn serving_container(containers: &[Container]) -> Option<usize> {
    containers.iter().position(|c| !c.ports.is_empty()).or(if containers.is_empty() { None } else { Some(0) })
}

/// Resolves image tags to digests. Cheap to share; connections are pooled.
pub struct Resolver {
    http: HttpClient<HttpConnector, Empty<Bytes>>,
    /// `None` when no CA certificates could be loaded; `tls_unavailable` then says why.
    https: Option<HttpClient<HttpsConnector<HttpConnector>, Empty<Bytes>>>,
    tls_unavailable: String,
    insecure: Vec<String>,
    /// Hosts (besides the registry's own) whose token services may be asked.
    auth_hosts: Vec<String>,
    timeout: Duration,
}

/// The token service of Docker Hub, on a host of its own.
const DOCKER_HUB_AUTH: &str = "auth.docker.io";

/// One registry conversation, for error messages.
struct Target<'a> {
    image: &'a str,
    registry: &'a str,
}

impl Resolver {
    /// A resolver that speaks plain HTTP to loopback registries and to those in
    /// `insecure_registries` (`host` or `host:port`), and gives each resolution `timeout`.
    ///
    /// Never fails: when the machine has no CA certificates it still resolves from plain-HTTP
    /// registries, and reports [`Error::Tls`] for the others.
    pub fn new(insecure_registries: Vec<String>, timeout: Duration) -> Resolver {
        let mut connector = HttpConnector::new();
        connector.set_connect_timeout(Some(timeout));
        // The HTTPS connector hands "https" URLs to this connector for TCP.
        connector.enforce_http(false);
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let (https, tls_unavailable) =
            match hyper_rustls::HttpsConnectorBuilder::new().with_provider_and_native_roots(provider) {
                Ok(builder) => {
                    let https = builder.https_or_http().enable_http1().wrap_connector(connector.clone());
                    (Some(HttpClient::builder(TokioExecutor::new()).build(https)), String::new())
                }
                Err(e) => {
                    warn!(error = %e, "no CA certificates: image digests resolve from plain-HTTP registries only");
                    (None, format!("no CA certificates could be loaded ({e})"))
                }
            };
        Resolver {
            http: HttpClient::builder(TokioExecutor::new()).build(connector),
            https,
            tls_unavailable,
            insecure: insecure_registries,
            auth_hosts: Vec::new(),
            timeout,
        }
    }

    /// The same resolver, also following token challenges (`realm`) to `hosts` (host names
    /// or addresses, any port and scheme). Without them it asks only token services on the
    /// registry's own host, and Docker Hub's (`auth.docker.io`) for Docker Hub.
    pub fn with_auth_hosts(mut self, hosts: Vec<String>) -> Resolver {
        self.auth_hosts = hosts;
        self
    }

    /// Whether the token service at `realm` may be asked for a token to `registry`: on the
    /// registry's host (any port or scheme), on an allowed host, or Docker Hub's own.
    fn realm_allowed(&self, registry: &str, realm: &str) -> bool {
        let Some(host) = realm.parse::<hyper::Uri>().ok().and_then(|u| u.host().map(str::to_ascii_lowercase)) else {
            return false;
        };
        let host = host.trim_start_matches('[').trim_end_matches(']');
        let registry_host = registry.parse::<hyper::http::uri::Authority>().map_or_else(
            |_| registry.to_ascii_lowercase(),
            |a| a.host().trim_start_matches('[').trim_end_matches(']').to_ascii_lowercase(),
        );
        host == registry_host
            || (registry == DOCKER_HUB_API && host == DOCKER_HUB_AUTH)
            || self
                .auth_hosts
                .iter()
                .any(|allowed| allowed.trim_start_matches('[').trim_end_matches(']').eq_ignore_ascii_case(host))
    }

    /// The pinned reference (`name@sha256:…`) of what `image` names now. An image pinned
    /// already is returned as is, without asking anyone.
    pub async fn resolve(&self, image: &str) -> Result<String> {
        let r = ImageRef::parse(image)?;
        if let Some(digest) = &r.digest {
            return Ok(r.pinned(digest));
        }
        let target = Target { image, registry: &r.registry };
        match tokio::time::timeout(self.timeout, self.resolve_tag(&target, &r)).await {
            Ok(resolved) => resolved,
            Err(_) => Err(Error::Timeout { image: image.into(), registry: r.registry.clone(), timeout: self.timeout }),
        }
    }

    async fn resolve_tag(&self, target: &Target<'_>, r: &ImageRef) -> Result<String> {
        let scheme = if self.plain_http(&r.registry) { "http" } else { "https" };
        let url = format!("{scheme}://{}/v2/{}/manifests/{}", r.registry, r.repository, r.tag);
        let mut auth: Option<String> = None;
        loop {
            let head = self.send(target, Method::HEAD, &url, auth.as_deref()).await?;
            if head.status().is_success()
                && let Some(digest) = content_digest(head.headers())
            {
                debug!(image = target.image, %digest, "resolved");
                return Ok(r.pinned(&digest));
            }
            if head.status() == StatusCode::UNAUTHORIZED
                && auth.is_none()
                && let Some(challenge) = bearer_challenge(head.headers())
            {
                auth = Some(self.token(target, &challenge, &r.repository).await?);
                continue;
            }
            // HEAD answers have no body: ask again to learn why (or, from registries that only
            // send the digest with the manifest, what it is).
            let get = self.send(target, Method::GET, &url, auth.as_deref()).await?;
            let status = get.status();
            if status.is_success() {
                let digest = content_digest(get.headers())
                    .ok_or_else(|| Error::NoDigest { image: target.image.into(), registry: target.registry.into() })?;
                return Ok(r.pinned(&digest));
            }
            if status == StatusCode::UNAUTHORIZED
                && auth.is_none()
                && let Some(challenge) = bearer_challenge(get.headers())
            {
                auth = Some(self.token(target, &challenge, &r.repository).await?);
                continue;
            }
            let message = registry_message(read_body(target, get).await?.as_ref());
            let (image, registry) = (target.image.to_string(), target.registry.to_string());
            return Err(match status {
                StatusCode::NOT_FOUND => Error::NotFound {
                    image,
                    message: message.unwrap_or_else(|| format!("not found in the registry {registry}")),
                },
                StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => {
                    Error::Unauthorized { image, registry, message: message.unwrap_or_else(|| status.to_string()) }
                }
                _ => Error::Registry { image, registry, status, message: message.unwrap_or_default() },
            });
        }
    }

    /// An anonymous pull token from the token service a Bearer challenge names.
    async fn token(&self, target: &Target<'_>, challenge: &Challenge, repository: &str) -> Result<String> {
        if !self.realm_allowed(target.registry, &challenge.realm) {
            return Err(Error::RealmNotAllowed {
                image: target.image.into(),
                registry: target.registry.into(),
                realm: challenge.realm.clone(),
            });
        }
        let scope = challenge.scope.clone().unwrap_or_else(|| format!("repository:{repository}:pull"));
        let separator = if challenge.realm.contains('?') { '&' } else { '?' };
        let mut url = format!("{}{separator}scope={}", challenge.realm, query_escape(&scope));
        if let Some(service) = &challenge.service {
            url.push_str("&service=");
            url.push_str(&query_escape(service));
        }
        let resp = self.send(target, Method::GET, &url, None).await?;
        let status = resp.status();
        let body = read_body(target, resp).await?;
        let unauthorized = |message: String| Error::Unauthorized {
            image: target.image.into(),
            registry: target.registry.into(),
            message,
        };
        if !status.is_success() {
            return Err(unauthorized(format!("its token service answered {status}")));
        }
        let json: serde_json::Value = serde_json::from_slice(&body)
            .map_err(|_| unauthorized("its token service answered something other than JSON".into()))?;
        let token = json
            .get("token")
            .or_else(|| json.get("access_token"))
            .and_then(|t| t.as_str())
            .filter(|t| !t.is_empty())
            .ok_or_else(|| unauthorized("its token service gave no token".into()))?;
        Ok(format!("Bearer {token}"))
    }

    async fn send(
        &self,
        target: &Target<'_>,
        method: Method,
        url: &str,
        auth: Option<&str>,
    ) -> Result<Response<Incoming>> {
        let request_error =
            |source| Error::Request { image: target.image.into(), registry: target.registry.into(), source };
        let uri: Uri = url.parse().map_err(|e: hyper::http::uri::InvalidUri| request_error(e.into()))?;
        let https = uri.scheme_str() == Some("https");
        let mut req = Request::builder()
            .method(method)
            .uri(uri)
            .header(header::ACCEPT, MANIFEST_TYPES)
            .header(header::USER_AGENT, concat!("stratus-controllers/", env!("CARGO_PKG_VERSION")));
        if let Some(auth) = auth {
            req = req.header(header::AUTHORIZATION, auth);
        }
        let req = req.body(Empty::new()).map_err(request_error)?;
        let sent = if https {
            let Some(client) = &self.https else {
                return Err(Error::Tls {
                    image: target.image.into(),
                    registry: target.registry.into(),
                    reason: self.tls_unavailable.clone(),
                });
            };
            client.request(req).await
        } else {
            self.http.request(req).await
        };
        sent.map_err(|source| Error::Unreachable {
            image: target.image.into(),
            registry: target.registry.into(),
            source,
        })
    }

    /// Whether `registry` (`host[:port]`) is spoken to over plain HTTP: loopback hosts always
    /// (a registry on this machine rarely has a certificate), others when listed as insecure.
    pub fn plain_http(&self, registry: &str) -> bool {
        let host = host_of(registry);
        host == "localhost"
            || host.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
            || self.insecure.iter().any(|r| r == registry || r == host)
    }
}

/// The host of `host[:port]` or `[v6]:port`.
fn host_of(registry: &str) -> &str {
    if let Some(rest) = registry.strip_prefix('[') {
        return rest.split_once(']').map_or(rest, |(host, _)| host);
    }
    match registry.rsplit_once(':') {
        Some((host, port)) if port.bytes().all(|b| b.is_ascii_digit()) => host,
        _ => registry,
    }
}

/// `algorithm:hex`, e.g. `sha256:` and 64 hex digits.
fn valid_digest(digest: &str) -> bool {
    let Some((algorithm, hex)) = digest.split_once(':') else { return false };
    !algorithm.is_empty()
        && algorithm
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'+' | b'.' | b'_' | b'-'))
        && hex.len() >= 32
        && hex.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

fn valid_tag(tag: &str) -> bool {
    !tag.is_empty()
        && tag.len() <= 128
        && !tag.starts_with(['.', '-'])
        && tag.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'))
}

fn content_digest(headers: &HeaderMap) -> Option<String> {
    let digest = headers.get("docker-content-digest")?.to_str().ok()?.trim();
    valid_digest(digest).then(|| digest.to_string())
}

/// A `WWW-Authenticate: Bearer realm="…",service="…",scope="…"` challenge.
#[derive(Debug, PartialEq, Eq)]
struct Challenge {
    realm: String,
    service: Option<String>,
    scope: Option<String>,
}

fn bearer_challenge(headers: &HeaderMap) -> Option<Challenge> {
    headers.get_all(header::WWW_AUTHENTICATE).iter().filter_map(|v| v.to_str().ok()).find_map(parse_challenge)
}

fn parse_challenge(value: &str) -> Option<Challenge> {
    let (scheme, params) = value.trim().split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("bearer") {
        return None;
    }
    let (mut realm, mut service, mut scope) = (None, None, None);
    let mut rest = params.trim();
    while !rest.is_empty() {
        let (key, after) = rest.split_once('=')?;
        let (value, after) = match after.strip_prefix('"') {
            Some(quoted) => {
                let (value, after) = quoted.split_once('"')?;
                (value, after)
            }
            None => after.split_once(',').map_or((after, ""), |(v, a)| (v, a)),
        };
        match key.trim().to_ascii_lowercase().as_str() {
            "realm" => realm = Some(value.to_string()),
            "service" => service = Some(value.to_string()),
            "scope" => scope = Some(value.to_string()),
            _ => {}
        }
        rest = after.trim_start_matches([',', ' ']);
    }
    let realm = realm.filter(|r| r.starts_with("https://") || r.starts_with("http://"))?;
    Some(Challenge { realm, service, scope })
}

/// Percent-encodes a query parameter value.
fn query_escape(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for b in value.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~' | b':' | b'/') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

async fn read_body(target: &Target<'_>, resp: Response<Incoming>) -> Result<Bytes> {
    let collected = Limited::new(resp.into_body(), MAX_BODY).collect().await.map_err(|source| Error::Body {
        image: target.image.into(),
        registry: target.registry.into(),
        source,
    })?;
    Ok(collected.to_bytes())
}

/// The messages of a distribution error answer (`{"errors":[{"code":…,"message":…}]}`), joined.
fn registry_message(body: &[u8]) -> Option<String> {
    let json: serde_json::Value = serde_json::from_slice(body).ok()?;
    let messages: Vec<&str> = json
        .get("errors")?
        .as_array()?
        .iter()
        .filter_map(|e| e.get("message").and_then(|m| m.as_str()).or_else(|| e.get("code")?.as_str()))
        .filter(|m| !m.is_empty())
        .collect();
    (!messages.is_empty()).then(|| messages.join("; "))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parsed(image: &str) -> (String, String, String, String) {
        let r = ImageRef::parse(image).unwrap_or_else(|e| panic!("{image}: {e}"));
        (r.name, r.registry, r.repository, r.tag)
    }

    #[test]
    fn references_are_read_as_docker_reads_them() {
        let s = |v: &str| v.to_string();
        assert_eq!(parsed("nginx"), (s("nginx"), s(DOCKER_HUB_API), s("library/nginx"), s("latest")));
        assert_eq!(parsed("nginx:1.27"), (s("nginx"), s(DOCKER_HUB_API), s("library/nginx"), s("1.27")));
        assert_eq!(
            parsed("grafana/grafana:11"),
            (s("grafana/grafana"), s(DOCKER_HUB_API), s("grafana/grafana"), s("11"))
        );
        assert_eq!(
            parsed("docker.io/redis"),
            (s("docker.io/redis"), s(DOCKER_HUB_API), s("library/redis"), s("latest"))
        );
        assert_eq!(
            parsed("127.0.0.1:5000/hello:v1"),
            (s("127.0.0.1:5000/hello"), s("127.0.0.1:5000"), s("hello"), s("v1"))
        );
        assert_eq!(parsed("localhost/team/app"), (s("localhost/team/app"), s("localhost"), s("team/app"), s("latest")));
        assert_eq!(parsed("ghcr.io/a/b:c"), (s("ghcr.io/a/b"), s("ghcr.io"), s("a/b"), s("c")));

        let digest = format!("sha256:{}", "ab".repeat(32));
        let pinned = ImageRef::parse(&format!("127.0.0.1:5000/hello:v1@{digest}")).expect("parses");
        assert_eq!(pinned.digest.as_deref(), Some(digest.as_str()));
        assert_eq!(pinned.pinned(&digest), format!("127.0.0.1:5000/hello@{digest}"));

        for bad in ["", ":v1", "Hello", "hello:", "hello:-x", "hello@sha256:xyz", "a//b"] {
            assert!(matches!(ImageRef::parse(bad), Err(Error::InvalidReference { .. })), "{bad:?} should be rejected");
        }
    }

    #[tokio::test]
    async fn loopback_and_listed_registries_use_plain_http() {
        let r = Resolver::new(vec!["registry.lan:5000".into(), "plain.lan".into()], DEFAULT_TIMEOUT);
        for plain in
            ["127.0.0.1:5000", "localhost", "localhost:5000", "[::1]:5000", "registry.lan:5000", "plain.lan:81"]
        {
            assert!(r.plain_http(plain), "{plain}");
        }
        for tls in ["registry.lan", "registry-1.docker.io", "10.0.0.1:5000", "ghcr.io"] {
            assert!(!r.plain_http(tls), "{tls}");
        }
    }

    #[test]
    fn bearer_challenges_and_registry_errors_are_read() {
        let c = parse_challenge(
            r#"Bearer realm="https://auth.docker.io/token",service="registry.docker.io",scope="repository:library/nginx:pull""#,
        );
        assert_eq!(
            c,
            Some(Challenge {
                realm: "https://auth.docker.io/token".into(),
                service: Some("registry.docker.io".into()),
                scope: Some("repository:library/nginx:pull".into()),
            })
        );
        assert_eq!(parse_challenge(r#"Basic realm="x""#), None);
        assert_eq!(parse_challenge(r#"Bearer service="x""#), None, "no realm, no token service");
        assert_eq!(query_escape("repository:a/b:pull push"), "repository:a/b:pull%20push");

        let body = br#"{"errors":[{"code":"MANIFEST_UNKNOWN","message":"manifest unknown","detail":{}}]}"#;
        assert_eq!(registry_message(body).as_deref(), Some("manifest unknown"));
        assert_eq!(registry_message(b"<html>oops</html>"), None);
        assert_eq!(registry_message(br#"{"errors":[{"code":"DENIED"}]}"#).as_deref(), Some("DENIED"));
    }

    /// A registry on loopback: `open:v1` for anyone, `private:v1` for holders of a token its
    /// token service hands out, `nodigest:v1` without a digest header.
    async fn registry() -> String {
        registry_with_realm_host("127.0.0.1").await
    }

    /// The same, its challenges naming its token service on `realm_host` (a loopback address,
    /// so that no name has to resolve) at the same port, where the same server also answers.
    async fn registry_with_realm_host(realm_host: &str) -> String {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("address").to_string();
        let port = listener.local_addr().expect("address").port();
        let realm = format!("http://{realm_host}:{port}/token");
        if realm_host != "127.0.0.1" {
            let other = tokio::net::TcpListener::bind((realm_host, port)).await.expect("bind the token host");
            serve_registry(other, realm.clone());
        }
        serve_registry(listener, realm);
        addr
    }

    /// Serves the fake registry on `listener`, its challenges naming `realm`.
    fn serve_registry(listener: tokio::net::TcpListener, realm: String) {
        use hyper::service::service_fn;
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let realm = realm.clone();
                let service = service_fn(move |req: Request<Incoming>| {
                    let realm = realm.clone();
                    async move {
                        let digest = format!("sha256:{}", "c".repeat(64));
                        let authorized = req.headers().get(header::AUTHORIZATION).is_some_and(|v| v == "Bearer t0k");
                        let path_and_query = req.uri().path_and_query().map(|p| p.as_str()).unwrap_or_default();
                        let resp = Response::builder();
                        let resp = match path_and_query {
                            "/v2/open/manifests/v1" => resp.header("docker-content-digest", &digest),
                            "/v2/private/manifests/v1" if authorized => resp.header("docker-content-digest", &digest),
                            "/v2/private/manifests/v1" => resp.status(401).header(
                                header::WWW_AUTHENTICATE,
                                format!(r#"Bearer realm="{realm}",service="test",scope="repository:private:pull""#),
                            ),
                            "/token?scope=repository:private:pull&service=test" => {
                                return Ok::<_, std::convert::Infallible>(Response::new(http_body_util::Full::new(
                                    Bytes::from_static(br#"{"token":"t0k"}"#),
                                )));
                            }
                            "/v2/nodigest/manifests/v1" => resp,
                            _ => resp.status(404),
                        };
                        let body = if path_and_query.contains("/nope/") {
                            Bytes::from_static(
                                br#"{"errors":[{"code":"MANIFEST_UNKNOWN","message":"manifest unknown"}]}"#,
                            )
                        } else {
                            Bytes::new()
                        };
                        Ok(resp.body(http_body_util::Full::new(body)).expect("a valid response"))
                    }
                });
                let io = hyper_util::rt::TokioIo::new(stream);
                tokio::spawn(hyper::server::conn::http1::Builder::new().serve_connection(io, service));
            }
        });
    }

    #[tokio::test]
    async fn tags_resolve_through_the_registry_and_its_token_service() {
        let addr = registry().await;
        let resolver = Resolver::new(Vec::new(), DEFAULT_TIMEOUT);
        let digest = format!("sha256:{}", "c".repeat(64));
        let open = resolver.resolve(&format!("{addr}/open:v1")).await.expect("resolves");
        assert_eq!(open, format!("{addr}/open@{digest}"));
        let private = resolver.resolve(&format!("{addr}/private:v1")).await.expect("resolves with a token");
        assert_eq!(private, format!("{addr}/private@{digest}"));

        let missing = resolver.resolve(&format!("{addr}/nope:v1")).await.expect_err("unknown");
        assert_eq!(missing.to_string(), format!("{addr}/nope:v1: manifest unknown"));
        let silent = resolver.resolve(&format!("{addr}/gone:v1")).await.expect_err("unknown");
        assert_eq!(silent.to_string(), format!("{addr}/gone:v1: not found in the registry {addr}"));
        let no_digest = resolver.resolve(&format!("{addr}/nodigest:v1")).await.expect_err("no digest");
        assert!(matches!(no_digest, Error::NoDigest { .. }), "{no_digest}");
        // Pinned already: nobody is asked.
        let pinned = format!("127.0.0.1:1/x@{digest}");
        assert_eq!(resolver.resolve(&pinned).await.expect("as is"), pinned);
    }

    #[tokio::test]
    async fn token_services_are_asked_only_on_the_registry_s_host_or_an_allowed_one() {
        // The same server, but its challenge names it as 127.0.0.2: another host.
        let addr = registry_with_realm_host("127.0.0.2").await;
        let port = addr.rsplit_once(':').map(|(_, p)| p).unwrap_or_default();
        let resolver = Resolver::new(Vec::new(), DEFAULT_TIMEOUT);
        let refused = resolver.resolve(&format!("{addr}/private:v1")).await.expect_err("realm elsewhere");
        assert!(matches!(refused, Error::RealmNotAllowed { .. }), "{refused}");
        let message = refused.to_string();
        assert!(message.contains(&format!("http://127.0.0.2:{port}/token")), "names the realm: {message}");

        let allowed = Resolver::new(Vec::new(), DEFAULT_TIMEOUT).with_auth_hosts(vec!["127.0.0.2".into()]);
        let pinned = allowed.resolve(&format!("{addr}/private:v1")).await.expect("an allowed token host");
        assert!(pinned.starts_with(&format!("{addr}/private@sha256:")), "{pinned}");

        let r = Resolver::new(Vec::new(), DEFAULT_TIMEOUT);
        assert!(r.realm_allowed("registry.lan:5000", "https://registry.lan/token"), "same host, any port and scheme");
        assert!(r.realm_allowed(DOCKER_HUB_API, "https://auth.docker.io/token"));
        assert!(!r.realm_allowed("registry.lan", "https://auth.docker.io/token"));
        assert!(!r.realm_allowed("registry.lan", "http://169.254.169.254/latest/meta-data"));
        assert!(!r.realm_allowed("registry.lan", "http://registry.lan.evil.example/token"));
        assert!(r.realm_allowed("[::1]:5000", "http://[::1]:9/token"));
    }

    #[test]
    fn the_serving_container_is_the_one_with_a_port() {
        let plain = Container { name: "sidecar".into(), ..Default::default() };
        let serving = Container {
            name: "app".into(),
            ports: vec![stratus_api::v1::ContainerPort { container_port: 8080, ..Default::default() }],
            ..Default::default()
        };
        assert_eq!(serving_container(&[plain.clone(), serving]), Some(1));
        assert_eq!(serving_container(std::slice::from_ref(&plain)), Some(0));
        assert_eq!(serving_container(&[]), None);
    }
}

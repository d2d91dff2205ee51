//! Private services (Cloud Run's "require authentication"): a Service annotated
//! `stratus.dev/invoker: authenticated` is served only to requests carrying
//! `Authorization: Bearer TOKEN` of a caller with the `invoker` role on it.
//!
//! The token is checked here first, against the API server's published keys
//! (`/.well-known/jwks.json`, fetched and cached; fetched again when a token names a key not
//! seen yet): a forged, expired or foreign token never costs the API a request. Whether its
//! caller may invoke the Service is then asked of the API server's own authoriser (`CanI` with
//! the caller's token, so a deleted user or a removed binding counts), and the answer is cached
//! for a few seconds per token and Service.
//!
//! The container receives the request with the token's signature removed (as Cloud Run does):
//! it can read who called, but cannot replay the token against the API.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use http::HeaderMap;
use http::header::AUTHORIZATION;
use stratus_auth::{Expect, Jwks, PublicKeys, TokenError};
use stratus_client::Client;
use stratus_client::runtime::ObjectRef;
use tracing::warn;

/// How long an invoker decision is reused.
const DECISION_TTL: Duration = Duration::from_secs(10);
/// The soonest the keys are fetched again after a fetch.
const REFETCH_AFTER: Duration = Duration::from_secs(10);
/// The most decisions kept; past it the cache starts afresh.
const MAX_DECISIONS: usize = 10_000;
const LEEWAY_SECS: i64 = 30;

/// Why a request for a private service is refused.
#[derive(Debug, thiserror::Error)]
pub(crate) enum Refusal {
    /// 401: no token, or one that does not verify.
    #[error("{0}")]
    Unauthenticated(String),
    /// 403: a valid caller without the invoker role.
    #[error("{0}")]
    Forbidden(String),
    /// 503: the keys or the authoriser could not be reached.
    #[error("{0}")]
    Unavailable(String),
}

/// The published keys and the issuer, as last fetched.
struct Keys {
    jwks: Jwks,
    issuer: String,
    fetched: Instant,
}

/// Checks callers of private services. Shared by every request.
pub(crate) struct Invokers {
    client: Client,
    audience: String,
    keys: tokio::sync::Mutex<Option<Keys>>,
    decisions: Mutex<HashMap<(String, ObjectRef), (bool, Instant)>>,
}

impl Invokers {
    pub(crate) fn new(client: Client, audience: String) -> Invokers {
        Invokers { client, audience, keys: tokio::sync::Mutex::new(None), decisions: Mutex::new(HashMap::new()) }
    }

    /// Admits the request or says why not; on success, the token's signature is taken off the
    /// request's `Authorization` header.
    pub(crate) async fn admit(&self, headers: &mut HeaderMap, service: &ObjectRef) -> Result<(), Refusal> {
        let token = bearer(headers)
            .ok_or_else(|| Refusal::Unauthenticated(format!("service {service} requires authentication: send Authorization: Bearer TOKEN (stratus auth print-access-token)")))?
            .to_string();
        let claims = self.verify(&token).await?;
        let key = (claims.jti.clone(), service.clone());
        let cached = self
            .decisions
            .lock()
            .ok()
            .and_then(|d| d.get(&key).filter(|(_, at)| at.elapsed() < DECISION_TTL).map(|(ok, _)| *ok));
        let allowed = match cached {
            Some(allowed) => allowed,
            None => {
                let answer =
                    self.client.with_token(&token).can_i("invoke", "services", &service.namespace, &service.name).await;
                let allowed = match answer {
                    Ok(a) => a.allowed,
                    Err(stratus_client::Error::Unauthenticated(m)) => return Err(Refusal::Unauthenticated(m)),
                    Err(e) => {
                        return Err(Refusal::Unavailable(format!("cannot ask the API who may invoke {service}: {e}")));
                    }
                };
                if let Ok(mut d) = self.decisions.lock() {
                    if d.len() >= MAX_DECISIONS {
                        d.clear();
                    }
                    d.insert(key, (allowed, Instant::now()));
                }
                allowed
            }
        };
        if !allowed {
            return Err(Refusal::Forbidden(format!("{} may not invoke service {service}", claims.sub)));
        }
        // The container learns who called, not a credential it could replay.
        strip_signature(headers, &token);
        Ok(())
    }

    /// Takes the signature off a bearer token of this cluster (signed with one of the API's keys)
    /// sent to a public service: the container must not receive a credential it could replay
    /// against the API. Other Authorization headers pass untouched.
    pub(crate) async fn neuter(&self, headers: &mut HeaderMap) {
        let Some(token) = bearer(headers).map(str::to_string) else { return };
        let Some(kid) = eddsa_kid(&token) else { return };
        let ours = {
            let mut keys = self.keys.lock().await;
            let known = |k: &Option<Keys>| k.as_ref().is_some_and(|k| k.jwks.public_key(&kid).is_some());
            if !known(&keys) && keys.as_ref().is_none_or(|k| k.fetched.elapsed() >= REFETCH_AFTER) {
                match self.fetch().await {
                    Ok(fresh) => *keys = Some(fresh),
                    // Unable to tell: an EdDSA token with a key id is treated as ours.
                    Err(_) => return strip_signature(headers, &token),
                }
            }
            known(&keys)
        };
        if ours {
            strip_signature(headers, &token);
        }
    }

    async fn verify(&self, token: &str) -> Result<stratus_auth::Claims, Refusal> {
        let mut refetched = false;
        loop {
            let mut keys = self.keys.lock().await;
            let stale = keys.as_ref().is_none_or(|k| k.fetched.elapsed() >= REFETCH_AFTER);
            if keys.is_none() || (refetched && stale) {
                *keys = Some(self.fetch().await?);
            }
            let Some(k) = keys.as_ref() else { return Err(Refusal::Unavailable("no keys".into())) };
            let expect = Expect {
                issuer: &k.issuer,
                audience: &self.audience,
                now: stratus_api::time::now_seconds(),
                leeway: LEEWAY_SECS,
            };
            match stratus_auth::verify(token, &k.jwks, &expect) {
                Ok(claims) => return Ok(claims),
                // A key made since the last fetch: fetch once more (at most every few seconds).
                Err(TokenError::UnknownKey(_)) if !refetched && stale => {
                    refetched = true;
                    continue;
                }
                Err(e) => return Err(Refusal::Unauthenticated(format!("the token is not accepted: {e}"))),
            }
        }
    }

    /// Fetches the issuer and the keys from the API server.
    async fn fetch(&self) -> Result<Keys, Refusal> {
        let base = self.client.endpoint().trim_end_matches('/').to_string();
        let get = async |path: &str| -> Result<serde_json::Value, Refusal> {
            let url = format!("{base}{path}");
            let text = http_get(&url).await.map_err(|e| {
                warn!(url, error = %e, "fetching the API's keys failed");
                Refusal::Unavailable(format!("cannot fetch {url}: {e}"))
            })?;
            serde_json::from_str(&text).map_err(|e| Refusal::Unavailable(format!("{url} is not JSON: {e}")))
        };
        let discovery = get("/.well-known/openid-configuration").await?;
        let issuer = discovery["issuer"].as_str().unwrap_or_default().to_string();
        let jwks = Jwks::from_json(&get("/.well-known/jwks.json").await?)
            .map_err(|e| Refusal::Unavailable(format!("the API's keys do not read: {e}")))?;
        Ok(Keys { jwks, issuer, fetched: Instant::now() })
    }
}

/// Replaces `Bearer HEADER.PAYLOAD.SIGNATURE` with `Bearer HEADER.PAYLOAD.`.
fn strip_signature(headers: &mut HeaderMap, token: &str) {
    if let Some((signed, _)) = token.rsplit_once('.')
        && let Ok(v) = format!("Bearer {signed}.").parse()
    {
        headers.insert(AUTHORIZATION, v);
    }
}

/// The `kid` of a JWS signed with EdDSA, as the API server signs its tokens.
fn eddsa_kid(token: &str) -> Option<String> {
    use base64::Engine;
    let header = token.split('.').next()?;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(header).ok()?;
    let header: serde_json::Value = serde_json::from_slice(&bytes).ok()?;
    (header.get("alg")?.as_str()? == "EdDSA").then(|| header.get("kid")?.as_str().map(str::to_string))?
}

fn bearer(headers: &HeaderMap) -> Option<&str> {
    let v = headers.get(AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = v.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim()).filter(|t| !t.is_empty())
}

/// A plain GET over HTTP/1.1, the body as text.
async fn http_get(url: &str) -> Result<String, String> {
    use http_body_util::{BodyExt, Empty};
    use hyper_util::client::legacy::Client as HttpClient;
    use hyper_util::rt::TokioExecutor;
    let uri: http::Uri = url.parse().map_err(|e| format!("{e}"))?;
    let client = HttpClient::builder(TokioExecutor::new()).build_http::<Empty<bytes::Bytes>>();
    let response = tokio::time::timeout(Duration::from_secs(5), client.get(uri))
        .await
        .map_err(|_| "timed out".to_string())?
        .map_err(|e| e.to_string())?;
    if !response.status().is_success() {
        return Err(format!("answered {}", response.status()));
    }
    let body = response.into_body().collect().await.map_err(|e| e.to_string())?.to_bytes();
    String::from_utf8(body.to_vec()).map_err(|e| e.to_string())
}

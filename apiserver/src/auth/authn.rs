//! Authentication: every request but a few open paths carries `Authorization: Bearer TOKEN`,
//! and this layer, in front of the HTTP and gRPC routes alike, turns the token into the
//! [`Caller`] the handlers find in the request's extensions. A request with no token or a bad
//! one never reaches a handler: it is answered 401 with `WWW-Authenticate: Bearer` (gRPC:
//! `UNAUTHENTICATED`).
//!
//! A token proves its subject only while the subject exists: a User or ServiceAccount deleted
//! (or deleted and made again, with another uid) no longer authenticates with tokens issued
//! before.

use std::sync::Arc;

use std::net::SocketAddr;

use axum::extract::{ConnectInfo, Request, State};
use axum::http::{HeaderMap, HeaderValue, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use stratus_api::identity::parse_service_account_user;
use stratus_api::v1::{Namespace, ServiceAccount, User};
use stratus_api::{AnyObject, Resource};
use stratus_auth::TokenError;

use super::tokens::Tokens;
use super::{Caller, SubjectKind};
use crate::error::{ApiError, ApiResult, Reason};
use crate::registry::Registry;

/// Paths served without a token: probes, the key set and discovery, the token endpoint, and
/// the gRPC login.
pub fn is_open(path: &str) -> bool {
    matches!(path, "/healthz" | "/livez" | "/readyz" | "/auth/token" | "/stratus.v1.AuthService/Login")
        || path.starts_with("/.well-known/")
}

/// Whether a request is gRPC (its answer must be a gRPC status, not an HTTP error).
pub fn is_grpc(headers: &HeaderMap) -> bool {
    headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).is_some_and(|v| v.starts_with("application/grpc"))
}

/// Turns tokens into callers.
pub struct Authn {
    tokens: Arc<Tokens>,
    registry: Registry,
}

fn unauthorized(message: impl Into<String>) -> ApiError {
    ApiError::new(Reason::Unauthorized, message)
}

/// What a client is told about a refused token: enough to act on, nothing about keys.
fn describe(e: &TokenError) -> String {
    match e {
        TokenError::Expired => "the token has expired: run `stratus login` to get a new one".into(),
        TokenError::NotYetValid => "the token is not valid yet (nbf is in the future)".into(),
        TokenError::Issuer => "the token was not issued by this cluster (iss)".into(),
        TokenError::Audience => "the token is not meant for this API (aud)".into(),
        TokenError::UnknownKey(_) => "the token is signed by a key this cluster does not know".into(),
        TokenError::Signature => "the token's signature does not verify".into(),
        TokenError::Algorithm(alg) => format!("the token's algorithm {alg:?} is not accepted (only EdDSA)"),
        TokenError::Malformed(why) => format!("the token is malformed: {why}"),
    }
}

impl Authn {
    pub fn new(tokens: Arc<Tokens>, registry: Registry) -> Authn {
        Authn { tokens, registry }
    }

    pub fn tokens(&self) -> &Arc<Tokens> {
        &self.tokens
    }

    /// The caller a request's `Authorization` header proves.
    pub async fn authenticate(&self, headers: &HeaderMap, protocol: &'static str) -> ApiResult<Caller> {
        let value = headers.get(header::AUTHORIZATION).ok_or_else(|| {
            unauthorized("no credentials: log in with `stratus login` and send `Authorization: Bearer TOKEN`")
        })?;
        let value = value.to_str().map_err(|_| unauthorized("the Authorization header is not ASCII"))?;
        let token = match value.split_once(' ') {
            Some((scheme, token)) if scheme.eq_ignore_ascii_case("bearer") => token.trim(),
            _ => return Err(unauthorized("the Authorization header must be `Bearer TOKEN`")),
        };
        self.caller_for(token, protocol).await
    }

    /// The caller `token` proves, or 401 naming why not.
    pub async fn caller_for(&self, token: &str, protocol: &'static str) -> ApiResult<Caller> {
        let claims = self.tokens.verify(token).await.map_err(|e| unauthorized(describe(&e)))?;
        let gone = || unauthorized(format!("{} no longer exists: log in again", claims.sub));
        if let Some((namespace, name)) = parse_service_account_user(&claims.sub) {
            let Some(AnyObject::ServiceAccount(sa)) =
                self.registry.read_internal(&ServiceAccount::INFO, namespace, name).await?
            else {
                return Err(gone());
            };
            if sa.meta().uid != claims.uid {
                return Err(gone());
            }
            let tenant = match self.registry.read_internal(&Namespace::INFO, "", namespace).await? {
                Some(AnyObject::Namespace(ns)) => ns.spec.map(|s| s.tenant).unwrap_or_default(),
                _ => return Err(gone()),
            };
            let spec = sa.spec.unwrap_or_default();
            return Ok(Caller {
                user: claims.sub.clone(),
                kind: SubjectKind::ServiceAccount,
                tenant,
                cluster_role: spec.cluster_role,
                node: spec.node_name,
                expires: claims.exp,
                protocol,
                client: None,
                request_id: String::new(),
            });
        }
        let Some(AnyObject::User(user)) = self.registry.read_internal(&User::INFO, "", &claims.sub).await? else {
            return Err(gone());
        };
        if user.meta().uid != claims.uid {
            return Err(gone());
        }
        let spec = user.spec.unwrap_or_default();
        Ok(Caller {
            user: claims.sub.clone(),
            kind: SubjectKind::User,
            tenant: spec.tenant,
            cluster_role: spec.cluster_role,
            node: String::new(),
            expires: claims.exp,
            protocol,
            client: None,
            request_id: String::new(),
        })
    }
}

/// The middleware: authenticates, or answers 401 in the request's protocol.
pub async fn layer(State(authn): State<Arc<Authn>>, mut req: Request, next: Next) -> Response {
    if is_open(req.uri().path()) {
        return next.run(req).await;
    }
    let grpc = is_grpc(req.headers());
    let protocol = if grpc { "grpc" } else { "http" };
    let client = req.extensions().get::<ConnectInfo<SocketAddr>>().map(|ConnectInfo(a)| a.ip());
    let request_id = req
        .headers()
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .filter(|v| v.len() <= 128)
        .map(str::to_string)
        .unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
    match authn.authenticate(req.headers(), protocol).await {
        Ok(mut caller) => {
            caller.client = client;
            caller.request_id = request_id;
            req.extensions_mut().insert(caller);
            next.run(req).await
        }
        Err(e) => {
            if e.reason == Reason::Unauthorized {
                let caller = Caller { client, request_id, ..Caller::anonymous(protocol) };
                let (method, path) = (req.method().as_str().to_ascii_lowercase(), req.uri().path().to_string());
                authn.registry.audit_request(&caller, &method, &path, "", "", e.reason.http_status());
            }
            refusal(&e, grpc)
        }
    }
}

/// The answer to a request refused before any handler: a gRPC status, or an HTTP error with
/// `WWW-Authenticate` for a 401 (RFC 6750 §3).
pub fn refusal(e: &ApiError, grpc: bool) -> Response {
    let mut response = if grpc {
        tonic::Status::from(e.clone()).into_http::<axum::body::Body>().into_response()
    } else {
        crate::http::error_response(e)
    };
    if e.reason == Reason::Unauthorized {
        let description = e.message.replace(['"', '\\'], "'");
        let challenge =
            format!("Bearer realm=\"stratus\", error=\"invalid_token\", error_description=\"{description}\"");
        let challenge =
            HeaderValue::from_str(&challenge).unwrap_or(HeaderValue::from_static("Bearer realm=\"stratus\""));
        response.headers_mut().insert(header::WWW_AUTHENTICATE, challenge);
    }
    response
}

/// The caller the layer found, for a handler.
pub fn caller_of(extensions: &axum::http::Extensions) -> ApiResult<Caller> {
    extensions.get::<Caller>().cloned().ok_or_else(|| unauthorized("no credentials"))
}

//! The identity endpoints: the OAuth 2.0 token endpoint (`POST /auth/token`, the password
//! grant), the public keys (`/.well-known/jwks.json`) and the discovery document
//! (`/.well-known/openid-configuration`) over HTTP; `stratus.v1.AuthService` over gRPC (login,
//! service-account tokens, whoami, can-i). Both protocols share [`Identity`].

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::{ConnectInfo, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use bytes::Bytes;
use serde_json::json;
use stratus_api::identity::service_account_user;
use stratus_api::resource::lookup_kind;
use stratus_api::v1::auth_service_server::AuthService;
use stratus_api::v1::{
    CanIRequest, CanIResponse, CreateTokenRequest, LoginRequest, Namespace, ServiceAccount, ServiceAccountSpec,
    TokenResponse, User, WhoAmIRequest, WhoAmIResponse,
};
use stratus_api::{AnyObject, Resource, Timestamp};
use stratus_auth::LoginLimiter;
use tonic::{Request, Status};

use super::authn::caller_of;
use super::tokens::{Issued, Tokens};
use super::{Caller, Verb};
use crate::error::{ApiError, ApiResult, Reason};
use crate::registry::Registry;

/// How long a service-account token lasts when the request names no duration.
pub const DEFAULT_TOKEN_TTL: Duration = Duration::from_secs(3600);

/// A token source for one of the platform's own components: asked before every request, it
/// answers a token of the component's service account, issued anew when half of the last
/// one's life has passed.
pub type ComponentToken = Arc<dyn Fn() -> String + Send + Sync>;

/// How long a component's token lasts before the source issues the next.
const COMPONENT_TOKEN_TTL: Duration = Duration::from_secs(3600);

/// Failed logins allowed per user within [`LOGIN_WINDOW`] (and four times as many per client
/// address) before further attempts are refused with 429.
pub const LOGIN_FAILURES: u32 = 5;
pub const LOGIN_WINDOW: Duration = Duration::from_secs(60);

/// Logins, tokens and questions about the caller, for both protocols.
#[derive(Clone)]
pub struct Identity {
    tokens: Arc<Tokens>,
    registry: Registry,
    limiter: Arc<LoginLimiter>,
}

impl Identity {
    pub fn new(tokens: Arc<Tokens>, registry: Registry) -> Identity {
        Identity { tokens, registry, limiter: Arc::new(LoginLimiter::new(LOGIN_FAILURES, LOGIN_WINDOW)) }
    }

    /// The password grant. Unknown users and wrong passwords get the same answer in about
    /// the same time; too many failures for a user or from an address get 429.
    pub async fn login(&self, username: &str, password: &str, from: IpAddr) -> ApiResult<Issued> {
        let result = self.try_login(username, password, from).await;
        let code = result.as_ref().map_or_else(|e| e.reason.http_status(), |_| 200);
        let who = Caller {
            user: username.to_string(),
            client: Some(from),
            request_id: uuid::Uuid::new_v4().to_string(),
            ..Caller::anonymous("login")
        };
        self.registry.audit_request(&who, "login", "users", "", username, code);
        result
    }

    async fn try_login(&self, username: &str, password: &str, from: IpAddr) -> ApiResult<Issued> {
        if let Err(wait) = self.limiter.check(username, from, Instant::now()) {
            return Err(too_many(wait));
        }
        let user = match stratus_api::validation::dns_subdomain(username) {
            Ok(()) => self.registry.read_internal(&User::INFO, "", username).await?,
            Err(_) => None,
        };
        let (user, hash) = match user {
            Some(AnyObject::User(u)) => {
                let hash = u.spec.as_ref().map(|s| s.password_hash.clone()).unwrap_or_default();
                (Some(u), hash)
            }
            _ => (None, String::new()),
        };
        let password = password.to_string();
        let ok = tokio::task::spawn_blocking(move || {
            if hash.is_empty() {
                stratus_auth::password::verify_dummy(&password);
                false
            } else {
                stratus_auth::password::verify(&password, &hash)
            }
        })
        .await
        .map_err(ApiError::internal)?;
        match user {
            Some(user) if ok => {
                self.limiter.record_success(username);
                let tenant = user.spec.as_ref().map(|s| s.tenant.as_str()).unwrap_or("");
                Ok(self.tokens.issue(username, tenant, &user.meta().uid, self.tokens.config().login_ttl))
            }
            _ => {
                self.limiter.record_failure(username, from, Instant::now());
                Err(ApiError::new(Reason::Unauthorized, "invalid username or password"))
            }
        }
    }

    /// A token for the service account `namespace/name`, if `caller` may have one made.
    pub async fn service_account_token(
        &self,
        caller: &Caller,
        namespace: &str,
        name: &str,
        ttl: Duration,
    ) -> ApiResult<Issued> {
        let max = self.tokens.config().max_ttl;
        if ttl > max {
            return Err(ApiError::new(
                Reason::BadRequest,
                format!(
                    "durationSeconds: {} is longer than the longest a token may last, {}",
                    ttl.as_secs(),
                    max.as_secs()
                ),
            ));
        }
        let info = &ServiceAccount::INFO;
        // The account as stored: its role decides who may take a token of it.
        let stored = match stratus_api::validation::validate_name(info, name) {
            Ok(()) => self.registry.read_internal(info, namespace, name).await?,
            Err(_) => None,
        };
        self.registry.authorize(caller, Verb::CreateToken, info, namespace, name, stored.as_ref()).await?;
        let issued = self.issue_for_service_account(namespace, name, ttl).await;
        let code = issued.as_ref().map_or_else(|e| e.reason.http_status(), |_| 201);
        self.registry.audit_request(caller, Verb::CreateToken.as_str(), info.plural, namespace, name, code);
        issued
    }

    /// A token for a service account, with no caller to authorise: for the API server's own
    /// bootstrap of the components.
    pub async fn issue_for_service_account(&self, namespace: &str, name: &str, ttl: Duration) -> ApiResult<Issued> {
        let info = &ServiceAccount::INFO;
        let not_found = || {
            ApiError::new(Reason::NotFound, format!("serviceaccounts {name:?} not found in namespace {namespace:?}"))
        };
        let Some(sa) = self.registry.read_internal(info, namespace, name).await? else { return Err(not_found()) };
        let tenant = match self.registry.read_internal(&Namespace::INFO, "", namespace).await? {
            Some(AnyObject::Namespace(ns)) => ns.spec.map(|s| s.tenant).unwrap_or_default(),
            _ => String::new(),
        };
        Ok(self.tokens.issue(&service_account_user(namespace, name), &tenant, &sa.meta().uid, ttl))
    }

    /// The identity of one of the platform's own components: the service account `name` in
    /// `stratus-system` with the cluster role `role` (and, for an agent, its node), made if
    /// missing, and a source of its tokens.
    pub async fn component_token(&self, name: &str, role: &str, node: &str) -> Result<ComponentToken, crate::Error> {
        let namespace = stratus_api::wellknown::namespaces::SYSTEM;
        let fail = |source| crate::Error::Component { name: name.to_string(), source };
        let mut sa = ServiceAccount {
            spec: Some(ServiceAccountSpec { cluster_role: role.into(), node_name: node.into() }),
            ..Default::default()
        };
        sa.meta_mut().name = name.to_string();
        sa.meta_mut().namespace = namespace.to_string();
        self.registry.create_missing(sa.into_any()).await.map_err(fail)?;
        let uid = match self.registry.read_internal(&ServiceAccount::INFO, namespace, name).await.map_err(fail)? {
            Some(sa) => sa.meta().uid.clone(),
            None => return Err(fail(ApiError::internal("the service account vanished as it was made"))),
        };
        let tokens = self.tokens.clone();
        let sub = stratus_api::identity::service_account_user(namespace, name);
        let current = Mutex::new(tokens.issue(&sub, "", &uid, COMPONENT_TOKEN_TTL));
        Ok(Arc::new(move || {
            let mut held = current.lock().unwrap_or_else(PoisonError::into_inner);
            let half = i64::try_from(held.ttl.as_secs() / 2).unwrap_or(0);
            if held.expires - super::tokens::now_secs() < half {
                *held = tokens.issue(&sub, "", &uid, COMPONENT_TOKEN_TTL);
            }
            held.token.clone()
        }))
    }

    /// Whether `caller` may do `verb` on `kind` (in `namespace`, named `name` when given).
    pub async fn can_i(
        &self,
        caller: &Caller,
        verb: &str,
        kind: &str,
        namespace: &str,
        name: &str,
    ) -> ApiResult<(bool, String)> {
        let verb = Verb::parse(verb).ok_or_else(|| {
            ApiError::new(
                Reason::BadRequest,
                format!("verb {verb:?} is not one of get, list, watch, create, update, patch, delete, logs, invoke"),
            )
        })?;
        let info = lookup_kind(kind).ok_or_else(|| {
            ApiError::new(Reason::BadRequest, format!("the server doesn't have a resource type {kind:?}"))
        })?;
        // "*": every namespace (`can-i list services -A`).
        let every = namespace == "*";
        let namespace = match (info.namespaced, namespace.is_empty()) {
            (false, _) => "",
            (true, true) => stratus_api::DEFAULT_NAMESPACE,
            (true, false) => namespace,
        };
        // Creating a namespace or a user is asked of one in the caller's own tenant.
        let mut made = None;
        if verb == Verb::Create {
            made = match info.kind {
                "Namespace" => {
                    let mut ns = Namespace::default();
                    ns.spec.get_or_insert_default().tenant.clone_from(&caller.tenant);
                    Some(ns.into_any())
                }
                "User" => {
                    let mut u = User::default();
                    u.spec.get_or_insert_default().tenant.clone_from(&caller.tenant);
                    Some(u.into_any())
                }
                _ => None,
            };
        }
        let answer = if every || (!info.namespaced && name.is_empty() && matches!(verb, Verb::List | Verb::Watch)) {
            self.registry.authorize_collection(caller, verb, info)
        } else {
            self.registry.authorize(caller, verb, info, namespace, name, made.as_ref()).await
        };
        match answer {
            Ok(()) => Ok((true, String::new())),
            Err(e) if matches!(e.reason, Reason::Forbidden | Reason::NotFound) => Ok((false, e.message)),
            Err(e) => Err(e),
        }
    }
}

fn too_many(wait: Duration) -> ApiError {
    let secs = wait.as_secs().max(1);
    ApiError::new(Reason::TooManyRequests, format!("too many failed logins: try again in {secs} s"))
}

fn retry_after(e: &ApiError) -> Option<String> {
    // The message of a 429 ends "in N s".
    (e.reason == Reason::TooManyRequests)
        .then(|| e.message.rsplit("in ").next().and_then(|s| s.split(' ').next()).unwrap_or("60").to_string())
}

fn token_response(issued: &Issued) -> TokenResponse {
    TokenResponse {
        access_token: issued.token.clone(),
        token_type: "Bearer".into(),
        expires_in: i64::try_from(issued.ttl.as_secs()).unwrap_or(i64::MAX),
    }
}

// ---------------------------------------------------------------- HTTP

/// `/auth/token` and `/.well-known/*`.
pub fn router(identity: Identity) -> Router {
    Router::new()
        .route("/auth/token", post(token_endpoint))
        .route("/.well-known/jwks.json", get(jwks))
        .route("/.well-known/openid-configuration", get(discovery))
        .with_state(identity)
}

async fn jwks(State(id): State<Identity>) -> Response {
    ([(header::CACHE_CONTROL, "max-age=60")], axum::Json(id.tokens.jwks())).into_response()
}

async fn discovery(State(id): State<Identity>) -> Response {
    let issuer = id.tokens.config().issuer.trim_end_matches('/').to_string();
    axum::Json(json!({
        "issuer": issuer,
        "jwks_uri": format!("{issuer}/.well-known/jwks.json"),
        "token_endpoint": format!("{issuer}/auth/token"),
        "grant_types_supported": ["password"],
        "response_types_supported": ["token"],
        "subject_types_supported": ["public"],
        "id_token_signing_alg_values_supported": ["EdDSA"],
        "token_endpoint_auth_methods_supported": ["none"],
        "claims_supported": ["iss", "aud", "sub", "exp", "nbf", "iat", "jti", "tenant"],
    }))
    .into_response()
}

/// An OAuth 2.0 error (RFC 6749 §5.2).
fn oauth_error(status: StatusCode, error: &str, description: &str) -> Response {
    let mut r = (status, axum::Json(json!({"error": error, "error_description": description}))).into_response();
    r.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r
}

async fn token_endpoint(
    State(id): State<Identity>,
    peer: Option<axum::Extension<ConnectInfo<SocketAddr>>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let form = headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or("");
    if !form.to_ascii_lowercase().starts_with("application/x-www-form-urlencoded") {
        return oauth_error(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "invalid_request",
            "the body must be application/x-www-form-urlencoded",
        );
    }
    let Ok(fields) = serde_urlencoded_pairs(&body) else {
        return oauth_error(StatusCode::BAD_REQUEST, "invalid_request", "the form does not decode");
    };
    let field = |k: &str| fields.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str());
    match field("grant_type") {
        Some("password") => {}
        Some(other) => {
            return oauth_error(
                StatusCode::BAD_REQUEST,
                "unsupported_grant_type",
                &format!("grant_type {other:?} is not supported; use password"),
            );
        }
        None => return oauth_error(StatusCode::BAD_REQUEST, "invalid_request", "grant_type is required"),
    }
    let (Some(username), Some(password)) = (field("username"), field("password")) else {
        return oauth_error(StatusCode::BAD_REQUEST, "invalid_request", "username and password are required");
    };
    let from = peer.map(|axum::Extension(ConnectInfo(a))| a.ip()).unwrap_or(IpAddr::V4(Ipv4Addr::LOCALHOST));
    match id.login(username, password, from).await {
        Ok(issued) => {
            let mut r = axum::Json(token_response_json(&issued)).into_response();
            r.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
            r
        }
        Err(e) if e.reason == Reason::Unauthorized => oauth_error(StatusCode::BAD_REQUEST, "invalid_grant", &e.message),
        Err(e) if e.reason == Reason::TooManyRequests => {
            let mut r = oauth_error(StatusCode::TOO_MANY_REQUESTS, "slow_down", &e.message);
            if let Some(v) = retry_after(&e).and_then(|s| HeaderValue::from_str(&s).ok()) {
                r.headers_mut().insert(header::RETRY_AFTER, v);
            }
            r
        }
        Err(e) => crate::http::error_response(&e),
    }
}

fn token_response_json(issued: &Issued) -> serde_json::Value {
    let t = token_response(issued);
    json!({"access_token": t.access_token, "token_type": t.token_type, "expires_in": t.expires_in})
}

/// `application/x-www-form-urlencoded` name/value pairs.
fn serde_urlencoded_pairs(body: &[u8]) -> Result<Vec<(String, String)>, ()> {
    let text = std::str::from_utf8(body).map_err(|_| ())?;
    let decode = |s: &str| -> Result<String, ()> {
        let s = s.replace('+', " ");
        let bytes = s.as_bytes();
        let mut out = Vec::with_capacity(bytes.len());
        let mut i = 0;
        while i < bytes.len() {
            if bytes[i] == b'%' {
                let hex = bytes.get(i + 1..i + 3).ok_or(())?;
                let hex = std::str::from_utf8(hex).map_err(|_| ())?;
                out.push(u8::from_str_radix(hex, 16).map_err(|_| ())?);
                i += 3;
            } else {
                out.push(bytes[i]);
                i += 1;
            }
        }
        String::from_utf8(out).map_err(|_| ())
    };
    text.split('&')
        .filter(|p| !p.is_empty())
        .map(|pair| {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            Ok((decode(k)?, decode(v)?))
        })
        .collect()
}

// ---------------------------------------------------------------- gRPC

/// `stratus.v1.AuthService`.
pub struct Grpc {
    identity: Identity,
}

impl Grpc {
    pub fn new(identity: Identity) -> Grpc {
        Grpc { identity }
    }
}

fn peer_ip<T>(req: &Request<T>) -> IpAddr {
    req.extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|ConnectInfo(a)| a.ip())
        .unwrap_or(IpAddr::V4(Ipv4Addr::LOCALHOST))
}

fn status(e: ApiError) -> Status {
    let retry = retry_after(&e);
    let mut status = Status::from(e);
    if let Some(v) = retry.and_then(|s| s.parse().ok()) {
        status.metadata_mut().insert("retry-after", v);
    }
    status
}

#[tonic::async_trait]
impl AuthService for Grpc {
    async fn login(&self, req: Request<LoginRequest>) -> Result<tonic::Response<TokenResponse>, Status> {
        let from = peer_ip(&req);
        let r = req.into_inner();
        let issued = self.identity.login(&r.username, &r.password, from).await.map_err(status)?;
        Ok(tonic::Response::new(token_response(&issued)))
    }

    async fn create_token(&self, req: Request<CreateTokenRequest>) -> Result<tonic::Response<TokenResponse>, Status> {
        let caller = caller_of(req.extensions()).map_err(status)?;
        let r = req.into_inner();
        let ttl = match u64::try_from(r.duration_seconds) {
            Ok(0) => DEFAULT_TOKEN_TTL,
            Ok(s) => Duration::from_secs(s),
            Err(_) => return Err(Status::invalid_argument("durationSeconds: must not be negative")),
        };
        let namespace = if r.namespace.is_empty() { stratus_api::DEFAULT_NAMESPACE } else { r.namespace.as_str() };
        let issued = self.identity.service_account_token(&caller, namespace, &r.name, ttl).await.map_err(status)?;
        Ok(tonic::Response::new(token_response(&issued)))
    }

    async fn who_am_i(&self, req: Request<WhoAmIRequest>) -> Result<tonic::Response<WhoAmIResponse>, Status> {
        let caller = caller_of(req.extensions()).map_err(status)?;
        Ok(tonic::Response::new(WhoAmIResponse {
            username: caller.user.clone(),
            tenant: caller.tenant.clone(),
            kind: caller.kind.as_str().to_string(),
            cluster_role: caller.cluster_role.clone(),
            expires_at: (caller.expires > 0).then_some(Timestamp { seconds: caller.expires, nanos: 0 }),
        }))
    }

    async fn can_i(&self, req: Request<CanIRequest>) -> Result<tonic::Response<CanIResponse>, Status> {
        let caller = caller_of(req.extensions()).map_err(status)?;
        let r = req.into_inner();
        let (allowed, reason) =
            self.identity.can_i(&caller, &r.verb, &r.kind, &r.namespace, &r.name).await.map_err(status)?;
        Ok(tonic::Response::new(CanIResponse { allowed, reason }))
    }
}

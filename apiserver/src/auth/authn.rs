//! Authentication: every request but a few open paths carries `Authorization: Bearer TOKEN`,
//! or comes over a connection with a node's client certificate (mutual TLS, verified against the
//! cluster CA by the TLS handshake), and this layer, in front of the HTTP and gRPC routes alike,
//! turns the token or certificate into the [`Caller`] the handlers find in the request's
//! extensions. A token, when there is one, wins over the certificate (as in Kubernetes). A
//! request with no credentials or bad ones never reaches a handler: it is answered 401 with
//! `WWW-Authenticate: Bearer` (gRPC: `UNAUTHENTICATED`).
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
use super::{Caller, SubjectKind, nodes};
use crate::error::{ApiError, ApiResult, Reason};
use crate::registry::Registry;

/// Paths served without a token: probes, the key set, discovery and the cluster CA, the token
/// endpoint, the gRPC login, the node certificate endpoint (which checks its own proof:
/// a bootstrap token or a node's certificate), and the web console (its pages and its login;
/// its session route checks the session itself).
pub fn is_open(path: &str) -> bool {
    if crate::console::is_console_path(path) {
        return true;
    }
    matches!(
        path,
        "/healthz"
            | "/livez"
            | "/readyz"
            | "/auth/token"
            | "/stratus.v1.AuthService/Login"
            | nodes::NODE_CERTIFICATE_PATH
    ) || path.starts_with("/.well-known/")
}

/// Whether a request is gRPC (its answer must be a gRPC status, not an HTTP error).
pub fn is_grpc(headers: &HeaderMap) -> bool {
    headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).is_some_and(|v| v.starts_with("application/grpc"))
}

/// Turns tokens into callers.
pub struct Authn {
    tokens: Arc<Tokens>,
    registry: Registry,
    subjects: Arc<Subjects>,
}

/// What a token's subject resolved to: its object's uid, tenant, role and node.
#[derive(Clone)]
struct Resolved {
    uid: String,
    kind: SubjectKind,
    tenant: String,
    cluster_role: String,
    node: String,
}

/// Resolved subjects by name, so that a request costs no store read to say who its caller is.
/// A watch of Users, ServiceAccounts and Namespaces drops an entry as soon as its object (or, for
/// an account, its namespace) changes; while the watch is not running nothing is cached.
#[derive(Default)]
pub(crate) struct Subjects {
    entries: std::sync::Mutex<std::collections::HashMap<String, Resolved>>,
    /// Namespaces and Tenants by store key (`None`: known not to exist), read on every request
    /// that needs a tenant's facts or quota.
    objects: std::sync::Mutex<std::collections::HashMap<String, Option<stratus_api::AnyObject>>>,
    /// Bumped by every change seen: a lookup that started before one does not cache its answer.
    generation: std::sync::atomic::AtomicU64,
    watching: std::sync::atomic::AtomicBool,
}

/// The most subjects remembered; past it the cache starts afresh.
const MAX_SUBJECTS: usize = 100_000;

impl Subjects {
    fn get(&self, sub: &str) -> Option<Resolved> {
        if !self.watching.load(std::sync::atomic::Ordering::Acquire) {
            return None;
        }
        self.entries.lock().ok()?.get(sub).cloned()
    }

    fn put(&self, sub: &str, resolved: Resolved, generation: u64) {
        use std::sync::atomic::Ordering;
        if !self.watching.load(Ordering::Acquire) {
            return;
        }
        if let Ok(mut entries) = self.entries.lock()
            && self.generation.load(Ordering::Acquire) == generation
        {
            if entries.len() >= MAX_SUBJECTS {
                entries.clear();
            }
            entries.insert(sub.to_string(), resolved);
        }
    }

    /// The cached object at `key`, if it is cached: `Some(None)` when known to be absent.
    pub(crate) fn object(&self, key: &str) -> Option<Option<stratus_api::AnyObject>> {
        if !self.watching.load(std::sync::atomic::Ordering::Acquire) {
            return None;
        }
        self.objects.lock().ok()?.get(key).cloned()
    }

    /// The current generation, to pass to [`Subjects::put_object`] after a read.
    pub(crate) fn generation(&self) -> u64 {
        self.generation.load(std::sync::atomic::Ordering::Acquire)
    }

    /// Caches what was read at `key`, unless something changed since `generation`.
    pub(crate) fn put_object(&self, key: &str, obj: Option<stratus_api::AnyObject>, generation: u64) {
        use std::sync::atomic::Ordering;
        if !self.watching.load(Ordering::Acquire) {
            return;
        }
        if let Ok(mut objects) = self.objects.lock()
            && self.generation.load(Ordering::Acquire) == generation
        {
            if objects.len() >= MAX_SUBJECTS {
                objects.clear();
            }
            objects.insert(key.to_string(), obj);
        }
    }

    /// Forgets what a change to the object at `key` may have changed. Writes through this server
    /// call it at once; the watch brings other servers' writes.
    pub(crate) fn forget(&self, key: &str) {
        use std::sync::atomic::Ordering;
        self.generation.fetch_add(1, Ordering::AcqRel);
        if let Ok(mut objects) = self.objects.lock() {
            objects.remove(key);
        }
        let Ok(mut entries) = self.entries.lock() else { return };
        let rest = |prefix: &str| key.strip_prefix(prefix).map(str::to_string);
        if let Some(name) = rest("/registry/users/") {
            entries.remove(&name);
        } else if let Some(path) = rest("/registry/serviceaccounts/") {
            if let Some((ns, name)) = path.split_once('/') {
                entries.remove(&stratus_api::identity::service_account_user(ns, name));
            }
        } else if let Some(ns) = rest("/registry/namespaces/") {
            let prefix = stratus_api::identity::service_account_user(&ns, "");
            entries.retain(|sub, _| !sub.starts_with(&prefix));
        }
    }

    fn stop(&self) {
        use std::sync::atomic::Ordering;
        self.watching.store(false, Ordering::Release);
        self.generation.fetch_add(1, Ordering::AcqRel);
        if let Ok(mut entries) = self.entries.lock() {
            entries.clear();
        }
        if let Ok(mut objects) = self.objects.lock() {
            objects.clear();
        }
    }
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
        let subjects = registry.subjects().clone();
        Authn { tokens, registry, subjects }
    }

    /// Keeps the cache of resolved subjects current until `stop`: watches Users,
    /// ServiceAccounts and Namespaces from now on and drops what each change touches; a broken
    /// watch empties the cache (requests then read the store) until it is watching again.
    pub async fn run_invalidation(self: Arc<Authn>, mut stop: tokio::sync::watch::Receiver<bool>) {
        use futures::StreamExt;
        use std::sync::atomic::Ordering;
        loop {
            let store = self.registry.store().clone();
            let opened = async {
                let at = store.current_revision().await?;
                let mut streams = Vec::new();
                for prefix in
                    ["/registry/users/", "/registry/serviceaccounts/", "/registry/namespaces/", "/registry/tenants/"]
                {
                    streams.push(store.watch(prefix, at).await?);
                }
                Ok::<_, stratus_store::Error>(futures::stream::select_all(streams))
            };
            match opened.await {
                Ok(mut changes) => {
                    // What was read before the watch began may miss a change made before it (on
                    // another server): nothing read until now is kept.
                    self.subjects.generation.fetch_add(1, Ordering::AcqRel);
                    self.subjects.watching.store(true, Ordering::Release);
                    loop {
                        tokio::select! {
                            change = changes.next() => match change {
                                Some(Ok(stratus_store::WatchEvent::Put { kv, .. })) => self.subjects.forget(&kv.key),
                                Some(Ok(stratus_store::WatchEvent::Delete { prev, .. })) => self.subjects.forget(&prev.key),
                                Some(Ok(stratus_store::WatchEvent::Progress { .. })) => {}
                                Some(Err(e)) => {
                                    tracing::warn!(error = %e, "the watch behind the subject cache broke; re-opening it");
                                    break;
                                }
                                None => break,
                            },
                            _ = stop.changed() => {
                                self.subjects.stop();
                                return;
                            }
                        }
                    }
                }
                Err(e) => tracing::warn!(error = %e, "cannot watch users and accounts for the subject cache"),
            }
            self.subjects.stop();
            tokio::select! {
                _ = tokio::time::sleep(std::time::Duration::from_secs(1)) => {}
                _ = stop.changed() => return,
            }
        }
    }

    pub fn tokens(&self) -> &Arc<Tokens> {
        &self.tokens
    }

    /// The caller a request's `Authorization` header proves, or else the web console's session
    /// cookie (only with the console's header, see [`crate::console::session_token`]), or else
    /// the node the connection's client certificate names (`peer`).
    pub async fn authenticate(
        &self,
        headers: &HeaderMap,
        peer: Option<&stratus_support::server::Peer>,
        protocol: &'static str,
    ) -> ApiResult<Caller> {
        let Some(value) = headers.get(header::AUTHORIZATION) else {
            if let Some(token) = crate::console::session_token(headers) {
                return self.caller_for(token, protocol).await;
            }
            return nodes::node_caller(peer, protocol)?.ok_or_else(|| {
                unauthorized("no credentials: log in with `stratus login` and send `Authorization: Bearer TOKEN`")
            });
        };
        let value = value.to_str().map_err(|_| unauthorized("the Authorization header is not ASCII"))?;
        let token = match value.split_once(' ') {
            Some((scheme, token)) if scheme.eq_ignore_ascii_case("bearer") => token.trim(),
            _ => return Err(unauthorized("the Authorization header must be `Bearer TOKEN`")),
        };
        if nodes::is_bootstrap_token(token) {
            return Err(unauthorized(format!(
                "a bootstrap token is good only for joining a node (POST {}), not for this",
                nodes::NODE_CERTIFICATE_PATH
            )));
        }
        self.caller_for(token, protocol).await
    }

    /// The caller `token` proves, or 401 naming why not.
    pub async fn caller_for(&self, token: &str, protocol: &'static str) -> ApiResult<Caller> {
        let claims = self.tokens.verify(token).await.map_err(|e| unauthorized(describe(&e)))?;
        let gone = || unauthorized(format!("{} no longer exists: log in again", claims.sub));
        let resolved = match self.subjects.get(&claims.sub) {
            Some(r) => Some(r),
            None => {
                let generation = self.subjects.generation.load(std::sync::atomic::Ordering::Acquire);
                let found = self.resolve(&claims.sub).await?;
                if let Some(r) = &found {
                    self.subjects.put(&claims.sub, r.clone(), generation);
                }
                found
            }
        };
        let Some(r) = resolved.filter(|r| r.uid == claims.uid) else { return Err(gone()) };
        Ok(Caller {
            user: claims.sub.clone(),
            kind: r.kind,
            tenant: r.tenant,
            cluster_role: r.cluster_role,
            node: r.node,
            expires: claims.exp,
            protocol,
            client: None,
            request_id: String::new(),
        })
    }

    /// Reads who `sub` is from the store; `None` when it does not exist.
    async fn resolve(&self, sub: &str) -> ApiResult<Option<Resolved>> {
        if let Some((namespace, name)) = parse_service_account_user(sub) {
            let Some(AnyObject::ServiceAccount(sa)) =
                self.registry.read_internal(&ServiceAccount::INFO, namespace, name).await?
            else {
                return Ok(None);
            };
            let tenant = match self.registry.read_cached(&Namespace::INFO, namespace).await? {
                Some(AnyObject::Namespace(ns)) => ns.spec.map(|s| s.tenant).unwrap_or_default(),
                _ => return Ok(None),
            };
            let uid = sa.meta().uid.clone();
            let spec = sa.spec.unwrap_or_default();
            return Ok(Some(Resolved {
                uid,
                kind: SubjectKind::ServiceAccount,
                tenant,
                cluster_role: spec.cluster_role,
                node: spec.node_name,
            }));
        }
        let Some(AnyObject::User(user)) = self.registry.read_internal(&User::INFO, "", sub).await? else {
            return Ok(None);
        };
        let uid = user.meta().uid.clone();
        let spec = user.spec.unwrap_or_default();
        Ok(Some(Resolved {
            uid,
            kind: SubjectKind::User,
            tenant: spec.tenant,
            cluster_role: spec.cluster_role,
            node: String::new(),
        }))
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
    let peer = req.extensions().get::<stratus_support::server::Peer>();
    match authn.authenticate(req.headers(), peer, protocol).await {
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

//! Nodes that prove who they are: a node agent holds a client certificate from the cluster CA
//! naming it (`CN=system:node:NAME`, `O=system:nodes`), and [`super::authn`] turns that
//! certificate into the agent's [`Caller`], confined to its node by the policy.
//!
//! A node gets its first certificate by joining, as with kubeadm:
//!
//! 1. An admin makes a **bootstrap token** (`POST /auth/bootstrap-tokens`, `stratus create
//!    token --bootstrap`): `ID.SECRET` (6 and 16 characters of `[a-z0-9]`), short-lived and good
//!    for a number of joins (one by default). The server keeps only the SHA-256 of the secret,
//!    under `/bootstrap-tokens/ID` in the store (outside the registry: no API reads it), on a
//!    store lease that deletes it when it expires.
//! 2. The agent fetches the CA (`GET /.well-known/stratus-ca.crt`, open) over a connection it
//!    cannot verify yet, and accepts it only if the SHA-256 of its SubjectPublicKeyInfo is the
//!    `--ca-cert-hash` it was given ([`stratus_auth::pki::ca_cert_hash`]).
//! 3. It sends a certificate request for `CN=system:node:NAME` with the token to
//!    `POST /auth/node-certificate`; the server checks the request's signature and name, uses
//!    up one join of the token, and signs a client certificate for the request's key with the
//!    cluster CA (the request's other contents are ignored).
//!
//! The same endpoint renews a certificate: a caller that presents a node's certificate may ask
//! for a new one for the same node, with no token. A bootstrap token is worth nothing anywhere
//! else.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::Router;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::{Deserialize, Serialize};
use stratus_api::identity::{NODES_GROUP, node_user, parse_node_user, roles};
use stratus_auth::pki::{self, Ca, CertificateRequest};
use stratus_store::Store;

use super::authn::caller_of;
use super::{Caller, SubjectKind};
use crate::error::{ApiError, ApiResult, Reason};
use crate::registry::Registry;

pub use stratus_api::identity::join::{
    BOOTSTRAP_TOKENS_PATH, BootstrapToken, BootstrapTokenRequest, CA_PATH, NODE_CERTIFICATE_PATH, NodeCertificate,
    NodeCertificateRequest,
};

/// The store prefix of bootstrap tokens: outside `/registry/`, so no resource API reaches them.
const PREFIX: &str = "/bootstrap-tokens/";
/// A bootstrap token lives this long unless asked otherwise, and at most [`MAX_TTL`].
pub const DEFAULT_TTL: Duration = Duration::from_secs(3600);
pub const MAX_TTL: Duration = Duration::from_secs(7 * 24 * 3600);
/// The most joins one token may allow.
pub const MAX_USES: u32 = 1000;
/// The largest certificate request body taken.
const MAX_BODY: usize = 64 * 1024;
/// How often a token's use is retried when other joins change it at the same time.
const CONFLICT_RETRIES: usize = 16;

/// What the server keeps of a bootstrap token.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Stored {
    /// Hex SHA-256 of the secret part.
    secret_sha256: String,
    /// Seconds since the epoch.
    expires: i64,
    uses_left: u32,
    #[serde(default)]
    description: String,
    #[serde(default)]
    created_by: String,
}

/// A bootstrap token split into its parts, when it has the shape of one.
fn parse_token(token: &str) -> Option<(&str, &str)> {
    let (id, secret) = token.split_once('.')?;
    let ok = |s: &str, len: usize| s.len() == len && s.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit());
    (ok(id, 6) && ok(secret, 16)).then_some((id, secret))
}

/// Whether `token` has the shape of a bootstrap token (`abcdef.0123456789abcdef`), so that
/// authentication can say it is the wrong kind of token rather than a malformed JWT.
pub fn is_bootstrap_token(token: &str) -> bool {
    parse_token(token).is_some()
}

fn random_part(len: usize) -> String {
    const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";
    (0..len).map(|_| char::from(ALPHABET[rand::random_range(0..ALPHABET.len())])).collect()
}

fn sha256_hex(s: &str) -> String {
    ring::digest::digest(&ring::digest::SHA256, s.as_bytes()).as_ref().iter().map(|b| format!("{b:02x}")).collect()
}

fn now_secs() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX)).unwrap_or(0)
}

fn unauthorized(message: impl Into<String>) -> ApiError {
    ApiError::new(Reason::Unauthorized, message)
}

/// The answer to a bootstrap token that is not accepted, whatever the reason `why` (logged).
fn refused(why: &str) -> ApiError {
    tracing::info!(reason = why, "a bootstrap token was refused");
    unauthorized("the bootstrap token is not valid: it is unknown, expired or used up (make another)")
}

/// Bootstrap tokens and node certificates.
#[derive(Clone)]
pub struct Nodes {
    store: Arc<dyn Store>,
    registry: Registry,
    ca: Option<Arc<Ca>>,
    validity: Duration,
}

impl Nodes {
    /// Nodes joining through `registry`'s store; `ca` signs their certificates (without it,
    /// nodes cannot join here).
    pub fn new(registry: Registry, ca: Option<Arc<Ca>>) -> Nodes {
        Nodes { store: registry.store().clone(), registry, ca, validity: pki::NODE_CLIENT_VALIDITY }
    }

    /// The same, issuing certificates valid for `validity` (tests of renewal use short ones).
    pub fn with_validity(mut self, validity: Duration) -> Nodes {
        self.validity = validity;
        self
    }

    /// Makes a bootstrap token valid for `ttl`, good for `uses` joins.
    pub async fn create_token(
        &self,
        ttl: Duration,
        uses: u32,
        description: &str,
        by: &str,
    ) -> ApiResult<BootstrapToken> {
        if ttl.is_zero() || ttl > MAX_TTL {
            return Err(ApiError::new(
                Reason::BadRequest,
                format!("ttl: {}s is not between 1s and {}s", ttl.as_secs(), MAX_TTL.as_secs()),
            ));
        }
        if uses == 0 || uses > MAX_USES {
            return Err(ApiError::new(Reason::BadRequest, format!("uses: {uses} is not between 1 and {MAX_USES}")));
        }
        let expires = now_secs().saturating_add(i64::try_from(ttl.as_secs()).unwrap_or(i64::MAX));
        // The lease deletes the token a little after it stops being accepted.
        let lease = self.store.grant_lease(ttl + Duration::from_secs(60)).await?;
        for _ in 0..CONFLICT_RETRIES {
            let (id, secret) = (random_part(6), random_part(16));
            let stored = Stored {
                secret_sha256: sha256_hex(&secret),
                expires,
                uses_left: uses,
                description: description.to_string(),
                created_by: by.to_string(),
            };
            let value = serde_json::to_vec(&stored).map_err(ApiError::internal)?;
            match self.store.create(&format!("{PREFIX}{id}"), value.into(), lease).await {
                Ok(_) => return Ok(BootstrapToken { token: format!("{id}.{secret}"), expires, uses }),
                Err(stratus_store::Error::AlreadyExists { .. }) => continue,
                Err(e) => return Err(e.into()),
            }
        }
        Err(ApiError::internal("no free bootstrap token id after several tries"))
    }

    /// The token `token` names, with its store entry, when it is accepted now; else why not
    /// (for the log: the caller is told only that it is not valid).
    async fn lookup(&self, token: &str) -> ApiResult<Result<(String, stratus_store::KeyValue, Stored), &'static str>> {
        let Some((id, secret)) = parse_token(token) else { return Ok(Err("malformed")) };
        let key = format!("{PREFIX}{id}");
        let Some(kv) = self.store.get(&key).await? else { return Ok(Err("unknown")) };
        let stored: Stored = serde_json::from_slice(&kv.value).map_err(ApiError::internal)?;
        let hash = sha256_hex(secret);
        // Hashes are compared, not secrets: how long the comparison takes tells nothing usable
        // about the secret.
        Ok(if stored.secret_sha256 != hash {
            Err("wrong secret")
        } else if stored.expires <= now_secs() {
            Err("expired")
        } else if stored.uses_left == 0 {
            Err("used up")
        } else {
            Ok((key, kv, stored))
        })
    }

    /// Whether `token` would be accepted now, without using it.
    async fn check(&self, token: &str) -> ApiResult<()> {
        self.lookup(token).await?.map(|_| ()).map_err(refused)
    }

    /// Checks `token` and uses up one of its joins (deleting it with the last). Every failure
    /// is the same 401 to the caller; the log says which.
    async fn redeem(&self, token: &str) -> ApiResult<()> {
        for _ in 0..CONFLICT_RETRIES {
            let (key, kv, mut stored) = self.lookup(token).await?.map_err(refused)?;
            stored.uses_left -= 1;
            let written = if stored.uses_left == 0 {
                self.store.delete(&key, Some(kv.mod_revision)).await.map(|_| ())
            } else {
                let value = serde_json::to_vec(&stored).map_err(ApiError::internal)?;
                self.store.update(&key, value.into(), kv.mod_revision).await.map(|_| ())
            };
            match written {
                Ok(()) => return Ok(()),
                // Another join used it at the same moment: read it again.
                Err(stratus_store::Error::Conflict { .. } | stratus_store::Error::NotFound { .. }) => continue,
                Err(e) => return Err(e.into()),
            }
        }
        Err(ApiError::new(Reason::Conflict, "the bootstrap token is being used by many joins at once; try again"))
    }

    /// Signs a client certificate for node `node` from `csr_pem`, for a caller authorised as
    /// `by` (a bootstrap token, or the node's own certificate).
    async fn sign(&self, req: &NodeCertificateRequest, by: Proof) -> ApiResult<NodeCertificate> {
        let ca = self.ca.as_ref().ok_or_else(|| {
            ApiError::new(
                Reason::FailedPrecondition,
                "this API server does not hold the cluster CA's key (it serves supplied certificates), so \
                 nodes cannot join here",
            )
        })?;
        let node = req.node_name.as_str();
        if let Err(why) = stratus_api::validation::dns_subdomain(node) {
            return Err(ApiError::new(Reason::BadRequest, format!("nodeName: {why}")));
        }
        let want = node_user(node);
        // Proof first: a stranger learns nothing from how its request is refused.
        match &by {
            Proof::Node(caller) if caller.node != node => {
                return Err(ApiError::new(
                    Reason::Forbidden,
                    format!("{} may renew only its own certificate, not that of node {node:?}", caller.user),
                ));
            }
            Proof::Node(_) => {}
            Proof::Bootstrap(token) => {
                // Checked before the request, used up only once the request is good.
                self.check(token).await?;
            }
        }
        let request = CertificateRequest::from_pem(&req.csr)
            .map_err(|e| ApiError::new(Reason::BadRequest, format!("csr: {e}")))?;
        if request.common_name() != want {
            return Err(ApiError::new(
                Reason::BadRequest,
                format!("csr: the request names {:?}; a node's must name {want:?}", request.common_name()),
            ));
        }
        if let Proof::Bootstrap(token) = &by {
            self.redeem(token).await?;
        }
        let signed = ca
            // The node's name is also the certificate's DNS name: the agent serves it on its own
            // port, and the API server verifies an agent by the name of its node.
            .sign_client_and_server(&request, &want, NODES_GROUP, &[node.to_string()], self.validity)
            .map_err(|e| ApiError::internal(format!("signing the certificate of node {node}: {e}")))?;
        let expires = signed.not_after.duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
        Ok(NodeCertificate {
            certificate: signed.cert_pem,
            ca: ca.cert_pem().to_string(),
            expires: i64::try_from(expires).unwrap_or(i64::MAX),
        })
    }
}

/// What entitles a caller to a node's certificate.
enum Proof {
    Bootstrap(String),
    Node(Caller),
}

/// The routes: the CA, the node certificate endpoint (open to the authentication layer: it
/// checks its own proof), and bootstrap tokens (for cluster admins).
pub fn router(nodes: Nodes) -> Router {
    Router::new()
        .route(CA_PATH, get(ca_certificate))
        .route(NODE_CERTIFICATE_PATH, post(node_certificate))
        .route(BOOTSTRAP_TOKENS_PATH, post(bootstrap_token))
        .with_state(nodes)
}

async fn ca_certificate(State(nodes): State<Nodes>) -> Response {
    match &nodes.ca {
        Some(ca) => ([(header::CONTENT_TYPE, "application/x-pem-file")], ca.cert_pem().to_string()).into_response(),
        None => crate::http::error_response(&ApiError::new(
            Reason::NotFound,
            "this API server does not serve the cluster CA (it serves supplied certificates)",
        )),
    }
}

async fn node_certificate(State(nodes): State<Nodes>, req: Request) -> Response {
    match node_certificate_inner(&nodes, req).await {
        Ok(cert) => (StatusCode::CREATED, axum::Json(cert)).into_response(),
        Err(e) => super::authn::refusal(&e, false),
    }
}

async fn node_certificate_inner(nodes: &Nodes, req: Request) -> ApiResult<NodeCertificate> {
    let (parts, body) = req.into_parts();
    let proof = proof_of(&parts.headers, &parts.extensions)?;
    let bytes = axum::body::to_bytes(body, MAX_BODY)
        .await
        .map_err(|_| ApiError::new(Reason::RequestEntityTooLarge, format!("the body is over {MAX_BODY} bytes")))?;
    let request: NodeCertificateRequest = serde_json::from_slice(&bytes)
        .map_err(|e| ApiError::new(Reason::BadRequest, format!("the body is not a node certificate request: {e}")))?;
    let who = match &proof {
        Proof::Bootstrap(token) => format!("bootstrap token {}", token.split('.').next().unwrap_or("")),
        Proof::Node(caller) => caller.user.clone(),
    };
    let outcome = nodes.sign(&request, proof).await;
    let code = outcome.as_ref().map_or_else(|e| e.reason.http_status(), |_| 201);
    let caller = Caller { user: who.clone(), ..Caller::anonymous("http") };
    nodes.registry.audit_request(&caller, "create", "node-certificates", "", &request.node_name, code);
    match &outcome {
        Ok(_) => tracing::info!(node = %request.node_name, by = %who, "issued a node certificate"),
        Err(e) => {
            tracing::info!(node = %request.node_name, by = %who, error = %e.message, "refused a node certificate")
        }
    }
    outcome
}

/// The proof a request to the node certificate endpoint carries: a bootstrap token, or a
/// node's client certificate (when it sends no token).
fn proof_of(headers: &HeaderMap, extensions: &axum::http::Extensions) -> ApiResult<Proof> {
    if let Some(value) = headers.get(header::AUTHORIZATION) {
        let value = value.to_str().map_err(|_| unauthorized("the Authorization header is not ASCII"))?;
        return match value.split_once(' ') {
            Some((scheme, token)) if scheme.eq_ignore_ascii_case("bearer") && is_bootstrap_token(token.trim()) => {
                Ok(Proof::Bootstrap(token.trim().to_string()))
            }
            _ => Err(unauthorized(
                "a node certificate is given for a bootstrap token (`Authorization: Bearer ID.SECRET`) or a \
                 node's current certificate, nothing else",
            )),
        };
    }
    match node_caller(extensions.get::<stratus_support::server::Peer>(), "http")? {
        Some(caller) => Ok(Proof::Node(caller)),
        None => Err(unauthorized(
            "no credentials: join with a bootstrap token (`stratus create token --bootstrap`), or present the \
             node's current certificate",
        )),
    }
}

/// The node a verified client certificate on the connection names, as a caller: `None` when
/// the connection carries no certificate. A certificate that names no node (or not in the
/// `system:nodes` group) is refused rather than ignored.
pub fn node_caller(peer: Option<&stratus_support::server::Peer>, protocol: &'static str) -> ApiResult<Option<Caller>> {
    let Some(leaf) = peer.and_then(|p| p.client_certificates.as_ref()).and_then(|chain| chain.first()) else {
        return Ok(None);
    };
    let subject = pki::subject_of(leaf).map_err(|e| unauthorized(e.to_string()))?;
    if !subject.organizations.iter().any(|o| o == NODES_GROUP) {
        return Err(unauthorized(format!(
            "the client certificate of {:?} is not a node's (its organisation is not {NODES_GROUP:?})",
            subject.common_name
        )));
    }
    let node = parse_node_user(&subject.common_name).ok_or_else(|| {
        unauthorized(format!(
            "the client certificate's common name {:?} is not system:node:NODE_NAME",
            subject.common_name
        ))
    })?;
    let expires = subject.not_after.duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
    Ok(Some(Caller {
        user: subject.common_name.clone(),
        kind: SubjectKind::Node,
        tenant: String::new(),
        cluster_role: roles::SYSTEM_AGENT.into(),
        node: node.to_string(),
        expires: i64::try_from(expires).unwrap_or(i64::MAX),
        protocol,
        client: None,
        request_id: String::new(),
    }))
}

async fn bootstrap_token(State(nodes): State<Nodes>, req: Request) -> Response {
    let result = async {
        let caller = caller_of(req.extensions())?;
        let bytes = axum::body::to_bytes(req.into_body(), MAX_BODY)
            .await
            .map_err(|_| ApiError::new(Reason::RequestEntityTooLarge, format!("the body is over {MAX_BODY} bytes")))?;
        let ask: BootstrapTokenRequest = if bytes.is_empty() {
            BootstrapTokenRequest::default()
        } else {
            serde_json::from_slice(&bytes).map_err(|e| {
                ApiError::new(Reason::BadRequest, format!("the body is not a bootstrap token request: {e}"))
            })?
        };
        if caller.cluster_role != roles::CLUSTER_ADMIN {
            nodes.registry.audit_request(&caller, "create", "bootstrap-tokens", "", "", 403);
            return Err(ApiError::new(Reason::Forbidden, format!("{} may not create bootstrap tokens", caller.user)));
        }
        let ttl = if ask.ttl_seconds == 0 { DEFAULT_TTL } else { Duration::from_secs(ask.ttl_seconds) };
        let uses = if ask.uses == 0 { 1 } else { ask.uses };
        let made = nodes.create_token(ttl, uses, &ask.description, &caller.user).await?;
        let id = made.token.split('.').next().unwrap_or("").to_string();
        nodes.registry.audit_request(&caller, "create", "bootstrap-tokens", "", &id, 201);
        Ok(made)
    }
    .await;
    match result {
        Ok(made) => (StatusCode::CREATED, axum::Json(made)).into_response(),
        Err(e) => super::authn::refusal(&e, false),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_have_the_kubeadm_shape() {
        assert!(is_bootstrap_token("abcdef.0123456789abcdef"));
        for bad in ["abcdef.0123456789abcde", "ABCDEF.0123456789abcdef", "abcdef0123456789abcdef", "a.b.c", ""] {
            assert!(!is_bootstrap_token(bad), "{bad}");
        }
        let made = format!("{}.{}", random_part(6), random_part(16));
        assert!(is_bootstrap_token(&made), "{made}");
    }
}

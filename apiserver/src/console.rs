//! The web console: hand-written HTML, CSS and JavaScript (the files under `apiserver/ui/`,
//! built into the binary) served at `/ui`, and the browser session it logs in with.
//!
//! The pages talk to the same HTTP/JSON API and watch streams as every other client, as the
//! logged-in user. The session is the user's login token in a cookie the page's scripts cannot
//! read (`HttpOnly`), sent to this origin only (`SameSite=Strict`, `Secure`, the `__Host-`
//! prefix). The API takes that cookie as the caller's token only when the request also carries
//! [`CONSOLE_HEADER`], which a cross-site form cannot send and a cross-site script could send
//! only after a CORS preflight this server refuses (see [`session_token`] and `guard`).
//!
//! ```text
//! GET    /ui, /ui/             the console's page (the scripts route within it by `#/…`)
//! GET    /ui/assets/{file}     its scripts, style sheet and icon
//! GET    /ui/session           who the session is: user, tenant, expiry, namespaces to pick
//! POST   /ui/session           log in: {"username", "password"}; sets the cookie
//! DELETE /ui/session           log out: clears the cookie
//! ```
//!
//! Every answer under `/ui` carries [`CONTENT_SECURITY_POLICY`] (no inline script or style, no
//! other origin), `X-Content-Type-Options: nosniff` and `Referrer-Policy: no-referrer`.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{ConnectInfo, Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde::Deserialize;
use serde_json::json;

use crate::auth::authn::{Authn, refusal};
use crate::auth::service::Identity;
use crate::auth::{Caller, tokens::Issued};
use crate::error::{ApiError, ApiResult, Reason};
use crate::http::error_response;
use crate::registry::{Registry, Selection};

/// The policy of every console answer: scripts, styles, connections and forms of this origin
/// only, images also as `data:` URLs, never framed.
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'self'; script-src 'self'; style-src 'self'; \
     img-src 'self' data:; connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'";

/// The cookie the session lives in. `__Host-` makes the browser refuse it unless it is
/// `Secure`, has `Path=/` and no `Domain`, so no other host or path can plant one.
pub const SESSION_COOKIE: &str = "__Host-stratus-session";

/// The header that must come with the session cookie for the API to read the cookie.
pub const CONSOLE_HEADER: &str = "x-stratus-console";

/// One file of the console, built into the binary.
struct Asset {
    name: &'static str,
    content_type: &'static str,
    body: &'static [u8],
}

/// The console's files. `boot.js` (a classic script) loads `app.js` and loads the page again
/// when the network fails under it; a page of the console is one ES module (`services.js`);
/// `api.js` is what they share to talk to the API, `dom.js` how they build elements.
const ASSETS: &[Asset] = &[
    Asset { name: "console.css", content_type: "text/css; charset=utf-8", body: include_bytes!("../ui/console.css") },
    Asset { name: "boot.js", content_type: JS, body: include_bytes!("../ui/boot.js") },
    Asset { name: "app.js", content_type: JS, body: include_bytes!("../ui/app.js") },
    Asset { name: "api.js", content_type: JS, body: include_bytes!("../ui/api.js") },
    Asset { name: "dom.js", content_type: JS, body: include_bytes!("../ui/dom.js") },
    Asset { name: "login.js", content_type: JS, body: include_bytes!("../ui/login.js") },
    Asset { name: "services.js", content_type: JS, body: include_bytes!("../ui/services.js") },
    Asset { name: "deploy.js", content_type: JS, body: include_bytes!("../ui/deploy.js") },
    Asset { name: "billing.js", content_type: JS, body: include_bytes!("../ui/billing.js") },
    Asset { name: "nodes.js", content_type: JS, body: include_bytes!("../ui/nodes.js") },
    Asset { name: "images.js", content_type: JS, body: include_bytes!("../ui/images.js") },
    Asset { name: "service.js", content_type: JS, body: include_bytes!("../ui/service.js") },
    Asset { name: "icon.svg", content_type: "image/svg+xml", body: include_bytes!("../ui/icon.svg") },
];

const JS: &str = "text/javascript; charset=utf-8";

const INDEX: &[u8] = include_bytes!("../ui/index.html");

#[derive(Clone)]
struct Console {
    identity: Identity,
    authn: Arc<Authn>,
    registry: Registry,
}

/// The console's routes. Authentication does not guard them (`authn::is_open`): the pages and
/// the login must load without a token; the session routes check the cookie themselves.
pub fn router(identity: Identity, authn: Arc<Authn>, registry: Registry) -> Router {
    Router::new()
        .route("/ui", get(index))
        .route("/ui/", get(index))
        .route("/ui/assets/{file}", get(asset))
        .route("/ui/session", get(whoami).post(login).delete(logout))
        .route("/ui/{*rest}", axum::routing::any(not_found))
        .layer(axum::middleware::map_response(harden))
        .with_state(Console { identity, authn, registry })
}

/// Whether `path` is the console's (served without a token).
pub fn is_console_path(path: &str) -> bool {
    path == "/ui" || path.starts_with("/ui/")
}

/// The session token a request carries: the session cookie, when the request also carries
/// `X-Stratus-Console: 1`. Without that header the cookie is ignored, so a request a
/// cross-site page makes the browser send (a form, an image, a link) authenticates as no one.
pub fn session_token(headers: &HeaderMap) -> Option<&str> {
    let console = headers.get(CONSOLE_HEADER).is_some_and(|v| v.as_bytes() == b"1");
    if !console {
        return None;
    }
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(name, _)| *name == SESSION_COOKIE)
        .map(|(_, value)| value.trim())
        .filter(|value| !value.is_empty())
}

/// Adds the console's security headers to every answer under `/ui`.
async fn harden(mut response: Response) -> Response {
    let h = response.headers_mut();
    h.insert(header::CONTENT_SECURITY_POLICY, HeaderValue::from_static(CONTENT_SECURITY_POLICY));
    h.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    h.insert(header::REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.entry(header::CACHE_CONTROL).or_insert(HeaderValue::from_static("no-cache"));
    response
}

async fn index() -> Response {
    ([(header::CONTENT_TYPE, "text/html; charset=utf-8")], INDEX).into_response()
}

async fn asset(Path(file): Path<String>) -> Response {
    match ASSETS.iter().find(|a| a.name == file) {
        Some(a) => ([(header::CONTENT_TYPE, a.content_type)], a.body).into_response(),
        None => not_found().await,
    }
}

async fn not_found() -> Response {
    error_response(&ApiError::new(Reason::NotFound, "the console has no such page or file"))
}

/// The body of `POST /ui/session`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Credentials {
    username: String,
    password: String,
}

/// Refuses a session request without [`CONSOLE_HEADER`]: only the console's own scripts log in
/// and out (a cross-site form cannot set the header, so it cannot log a browser in as someone
/// else either).
fn require_console_header(headers: &HeaderMap) -> ApiResult<()> {
    match headers.get(CONSOLE_HEADER) {
        Some(v) if v.as_bytes() == b"1" => Ok(()),
        _ => Err(ApiError::new(Reason::Forbidden, format!("the console's session requests carry {CONSOLE_HEADER}: 1"))),
    }
}

async fn login(
    State(c): State<Console>,
    peer: Option<axum::Extension<ConnectInfo<SocketAddr>>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    if let Err(e) = require_console_header(&headers) {
        return error_response(&e);
    }
    let credentials: Credentials = match serde_json::from_slice(&body) {
        Ok(c) => c,
        Err(e) => {
            return error_response(&ApiError::new(
                Reason::BadRequest,
                format!("the body must be {{\"username\": …, \"password\": …}}: {e}"),
            ));
        }
    };
    let from = peer.map(|axum::Extension(ConnectInfo(a))| a.ip()).unwrap_or(IpAddr::V4(Ipv4Addr::LOCALHOST));
    let issued = match c.identity.login(&credentials.username, &credentials.password, from).await {
        Ok(issued) => issued,
        Err(e) => {
            let mut r = error_response(&e);
            if e.reason == Reason::TooManyRequests
                && let Some(secs) = e.message.rsplit("in ").next().and_then(|s| s.split(' ').next())
                && let Ok(v) = HeaderValue::from_str(secs)
            {
                r.headers_mut().insert(header::RETRY_AFTER, v);
            }
            return r;
        }
    };
    let session = async {
        let caller = c.authn.caller_for(&issued.token, "http").await?;
        describe(&c, &caller).await
    }
    .await;
    match session {
        Ok(body) => {
            let mut r = no_store(axum::Json(body).into_response());
            if let Ok(cookie) = HeaderValue::from_str(&session_cookie(&issued)) {
                r.headers_mut().insert(header::SET_COOKIE, cookie);
            }
            r
        }
        Err(e) => error_response(&e),
    }
}

async fn whoami(State(c): State<Console>, headers: HeaderMap) -> Response {
    let caller = match session_token(&headers) {
        Some(token) => c.authn.caller_for(token, "http").await,
        None => Err(ApiError::new(Reason::Unauthorized, "no session: log in")),
    };
    let described = match caller {
        Ok(caller) => describe(&c, &caller).await,
        Err(e) => Err(e),
    };
    match described {
        Ok(body) => no_store(axum::Json(body).into_response()),
        Err(e) => refusal(&e, false),
    }
}

async fn logout(headers: HeaderMap) -> Response {
    if let Err(e) = require_console_header(&headers) {
        return error_response(&e);
    }
    let cleared = format!("{SESSION_COOKIE}=; HttpOnly; Secure; SameSite=Strict; Path=/; Max-Age=0");
    let mut r = no_store(StatusCode::NO_CONTENT.into_response());
    r.headers_mut().insert(header::SET_COOKIE, HeaderValue::from_str(&cleared).unwrap_or(HeaderValue::from_static("")));
    r
}

/// The cookie holding `issued`. It lasts as long as the token, so the browser stops sending it
/// when the token expires and the next request finds no session.
fn session_cookie(issued: &Issued) -> String {
    format!(
        "{SESSION_COOKIE}={}; HttpOnly; Secure; SameSite=Strict; Path=/; Max-Age={}",
        issued.token,
        issued.ttl.as_secs()
    )
}

fn no_store(mut r: Response) -> Response {
    r.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r
}

/// What the console shows of a session: who, until when, and the namespaces whose Services the
/// caller may list (the namespace picker's choices), in name order.
async fn describe(c: &Console, caller: &Caller) -> ApiResult<serde_json::Value> {
    let mut namespaces = Vec::new();
    let mut token = String::new();
    loop {
        let page = c.registry.list(caller, "Namespace", &Selection::default(), 0, &token).await?;
        for ns in &page.items {
            let name = &ns.meta().name;
            let (allowed, _) = c.identity.can_i(caller, "list", "services", name, "").await?;
            if allowed {
                namespaces.push(name.clone());
            }
        }
        if page.continue_token.is_empty() {
            break;
        }
        token = page.continue_token;
    }
    namespaces.sort();
    Ok(json!({
        "username": caller.user,
        "tenant": caller.tenant,
        "clusterRole": caller.cluster_role,
        "expiresAt": caller.expires,
        "namespaces": namespaces,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every block of the stylesheet is closed: one left open (a merge once lost a `}`) turns
    /// every rule after it into part of a narrow-screen media query, and the pages below it lose
    /// their styles on a wide screen.
    #[test]
    fn the_stylesheet_closes_every_block() {
        let css = ASSETS.iter().find(|a| a.name == "console.css").map(|a| a.body).unwrap_or_default();
        let css = std::str::from_utf8(css).unwrap();
        let mut depth = 0i32;
        for (n, line) in css.lines().enumerate() {
            depth += line.matches('{').count() as i32 - line.matches('}').count() as i32;
            assert!(depth >= 0, "console.css line {}: a `}}` closes nothing", n + 1);
            if line.starts_with("/* ----") {
                assert_eq!(depth, 0, "console.css line {}: a page's section starts inside an open block", n + 1);
            }
        }
        assert_eq!(depth, 0, "console.css ends with a block open");
    }

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(*k, HeaderValue::from_str(v).unwrap());
        }
        h
    }

    #[test]
    fn the_cookie_counts_only_with_the_console_header() {
        let cookie = format!("a=b; {SESSION_COOKIE}=tok.en.sig; c=d");
        assert_eq!(session_token(&headers(&[("cookie", &cookie), (CONSOLE_HEADER, "1")])), Some("tok.en.sig"));
        assert_eq!(session_token(&headers(&[("cookie", &cookie)])), None);
        assert_eq!(session_token(&headers(&[("cookie", &cookie), (CONSOLE_HEADER, "0")])), None);
        assert_eq!(session_token(&headers(&[("cookie", "stratus-session=x"), (CONSOLE_HEADER, "1")])), None);
        assert_eq!(session_token(&headers(&[("cookie", &format!("{SESSION_COOKIE}=")), (CONSOLE_HEADER, "1")])), None);
        // HTTP/2 may split cookies over several headers.
        let split = headers(&[("cookie", "a=b"), ("cookie", &format!("{SESSION_COOKIE}=t")), (CONSOLE_HEADER, "1")]);
        assert_eq!(session_token(&split), Some("t"));
    }

    #[test]
    fn every_asset_has_a_content_type_and_a_body() {
        for a in ASSETS {
            assert!(!a.body.is_empty(), "{}", a.name);
            let ext = a.name.rsplit('.').next().unwrap();
            let expected = match ext {
                "js" => "text/javascript",
                "css" => "text/css",
                "svg" => "image/svg+xml",
                other => panic!("no content type known for .{other}"),
            };
            assert!(a.content_type.starts_with(expected), "{}: {}", a.name, a.content_type);
        }
    }
}

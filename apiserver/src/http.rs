//! The HTTP/JSON face of the registry, with Kubernetes-style paths:
//!
//! ```text
//! /apis/stratus.dev/v1/{plural}                                  list (all namespaces), create (cluster kinds)
//! /apis/stratus.dev/v1/{plural}/{name}[/status]                  cluster-scoped object
//! /apis/stratus.dev/v1/namespaces/{ns}/{plural}                  list, create (?watch=true streams)
//! /apis/stratus.dev/v1/namespaces/{ns}/{plural}/{name}[/status]  get, put, patch (apply), delete
//! /apis/stratus.dev/v1/namespaces/{ns}/{plural}/{name}/log       container logs as text (instances, services)
//! /apis/serving.knative.dev/v1/namespaces/{ns}/services[/{name}] Knative Services, converted
//! ```
//! plus `/healthz`, `/readyz`, `/metrics`, `/openapi.json` and discovery at `/apis`.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get};
use bytes::Bytes;
use futures::StreamExt;
use http_body_util::BodyExt;
use serde_json::{Value, json};
use stratus_api::knative::KNATIVE_API_VERSION;
use stratus_api::resource::KINDS;
use stratus_api::{AnyObject, KindInfo, validation};

use crate::auth::Caller;
use crate::error::{ApiError, ApiResult, Reason};
use crate::logs::Logs;
use crate::registry::{Applied, Registry, Selection};

/// The largest request body accepted.
pub const MAX_BODY_BYTES: usize = 1024 * 1024;

#[derive(Clone)]
struct Http {
    registry: Registry,
    logs: Logs,
    openapi: std::sync::Arc<Value>,
}

/// The HTTP routes, to be merged with the gRPC ones on one port.
pub fn router(registry: Registry, logs: Logs) -> Router {
    let openapi = std::sync::Arc::new(crate::openapi::document(registry.bounds()));
    Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route("/livez", get(|| async { "ok" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .route("/openapi.json", get(openapi_doc))
        .route("/apis", get(discovery))
        .route("/apis/{group}/{version}", get(discovery_group))
        .route("/apis/{group}/{version}/{*rest}", any(resource))
        .with_state(Http { registry, logs, openapi })
}

/// 200 while the store answers and can take writes; 503 naming the reason when it cannot (a
/// full disk under the embedded store, an etcd alarm), so that a load balancer stops sending
/// writes here until it recovers.
async fn readyz(State(s): State<Http>) -> Response {
    let store = s.registry.store();
    let health = match store.current_revision().await {
        Ok(_) => store.health().await,
        Err(e) => Err(e),
    };
    match health {
        Ok(()) => "ok".into_response(),
        Err(e) => (StatusCode::SERVICE_UNAVAILABLE, format!("storage not ready: {e}\n")).into_response(),
    }
}

async fn metrics(State(s): State<Http>) -> Response {
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")], s.registry.metrics().encode())
        .into_response()
}

async fn openapi_doc(State(s): State<Http>) -> Response {
    axum::Json(s.openapi.as_ref().clone()).into_response()
}

async fn discovery() -> Response {
    axum::Json(json!({
        "kind": "APIGroupList",
        "groups": [
            {"name": "stratus.dev", "versions": [{"groupVersion": stratus_api::API_VERSION, "version": "v1"}]},
            {"name": "serving.knative.dev", "versions": [{"groupVersion": KNATIVE_API_VERSION, "version": "v1"}]},
        ],
    }))
    .into_response()
}

async fn discovery_group(Path((group, version)): Path<(String, String)>) -> Response {
    let knative = match (group.as_str(), version.as_str()) {
        ("stratus.dev", "v1") => false,
        ("serving.knative.dev", "v1") => true,
        _ => return error_response(&ApiError::new(Reason::NotFound, format!("no API group {group}/{version}"))),
    };
    let resources: Vec<_> = KINDS
        .iter()
        .filter(|k| !knative || k.kind == "Service")
        .map(|k| {
            json!({"name": k.plural, "singularName": k.singular, "kind": k.kind, "namespaced": k.namespaced,
                   "shortNames": k.short_names,
                   "verbs": ["create", "delete", "get", "list", "patch", "update", "watch"]})
        })
        .collect();
    axum::Json(json!({"kind": "APIResourceList", "groupVersion": format!("{group}/{version}"), "resources": resources}))
        .into_response()
}

/// Where a request points.
#[derive(Debug, PartialEq)]
struct Target {
    info: &'static KindInfo,
    namespace: String,
    name: String,
    status: bool,
    /// The `log` subresource.
    log: bool,
}

fn parse_target(group: &str, version: &str, rest: &str) -> ApiResult<Target> {
    let nf = || ApiError::new(Reason::NotFound, format!("no such path /apis/{group}/{version}/{rest}"));
    let knative = match (group, version) {
        ("stratus.dev", "v1") => false,
        ("serving.knative.dev", "v1") => true,
        _ => return Err(nf()),
    };
    let segs: Vec<&str> = rest.split('/').filter(|s| !s.is_empty()).collect();
    let (plural, namespace, name, status, log) = match segs.as_slice() {
        ["namespaces", ns, "status"] => ("namespaces", "", *ns, true, false),
        ["namespaces", ns, plural] => (*plural, *ns, "", false, false),
        ["namespaces", ns, plural, name] => (*plural, *ns, *name, false, false),
        ["namespaces", ns, plural, name, "status"] => (*plural, *ns, *name, true, false),
        ["namespaces", ns, plural, name, "log"] if !knative => (*plural, *ns, *name, false, true),
        [plural] => (*plural, "", "", false, false),
        [plural, name] => (*plural, "", *name, false, false),
        [plural, name, "status"] => (*plural, "", *name, true, false),
        _ => return Err(nf()),
    };
    let info = KINDS.iter().copied().find(|k| k.plural == plural).ok_or_else(|| {
        ApiError::new(Reason::NotFound, format!("the server doesn't have a resource type {plural:?}"))
    })?;
    if knative && info.kind != "Service" {
        return Err(nf());
    }
    if info.namespaced && namespace.is_empty() && !name.is_empty() {
        return Err(ApiError::new(
            Reason::NotFound,
            format!("{plural} are namespaced: use /apis/{group}/{version}/namespaces/NAMESPACE/{plural}/{name}"),
        ));
    }
    if !info.namespaced && !namespace.is_empty() {
        return Err(nf());
    }
    // The path's names keep the rules of the names they address (the document says so too).
    let bad = |what: &str, e: String| ApiError::new(Reason::BadRequest, format!("{what} in the path: {e}"));
    if !namespace.is_empty() {
        validation::dns_label(namespace).map_err(|e| bad("namespace", e))?;
    }
    if !name.is_empty() {
        validation::validate_name(info, name).map_err(|e| bad("name", e))?;
    }
    Ok(Target { info, namespace: namespace.to_string(), name: name.to_string(), status, log })
}

async fn resource(
    State(s): State<Http>,
    method: Method,
    Path((group, version, rest)): Path<(String, String, String)>,
    Query(query): Query<HashMap<String, String>>,
    caller: Option<axum::Extension<Caller>>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let start = Instant::now();
    let Some(axum::Extension(caller)) = caller else {
        return error_response(&ApiError::new(Reason::Unauthorized, "no credentials"));
    };
    let mut allow = None;
    let (verb, res) = match parse_target(&group, &version, &rest) {
        Err(e) => ("unknown", Err(e)),
        Ok(t) => {
            allow = Some(allowed_methods(&t));
            if t.log {
                ("logs", s.logs.http(&caller, &method, t.info, &t.namespace, &t.name, &query).await)
            } else {
                handle(&s.registry, &caller, &method, t, &query, &headers, body).await
            }
        }
    };
    let mut response = match res {
        Ok(r) => r,
        Err(e) => error_response(&e),
    };
    // RFC 9110 §15.5.6: a 405 says which methods the target does support.
    if response.status() == StatusCode::METHOD_NOT_ALLOWED
        && let Some(allow) = allow
    {
        response.headers_mut().insert(header::ALLOW, header::HeaderValue::from_static(allow));
    }
    s.registry.metrics().observe("http", verb, response.status().as_u16(), start.elapsed().as_secs_f64());
    response
}

/// The methods `t` answers, for the `Allow` header of a 405.
fn allowed_methods(t: &Target) -> &'static str {
    match (t.log, t.status, t.name.is_empty()) {
        (true, _, _) => "GET",
        // Every namespace's objects: listed and watched here, created in a namespace.
        (false, false, true) if t.info.namespaced && t.namespace.is_empty() => "GET",
        (false, true, _) => "GET, PUT",
        (false, false, true) => "GET, POST",
        (false, false, false) => "GET, PUT, PATCH, DELETE",
    }
}

/// A boolean query parameter as the OpenAPI document declares it: absent is false, `true` or
/// `1` is true, `false` or `0` is false, and anything else is refused naming the parameter
/// (it used to be read as false, so `?watch=True` listed instead of watching).
fn query_bool(query: &HashMap<String, String>, name: &str) -> ApiResult<bool> {
    match query.get(name).map(String::as_str) {
        None => Ok(false),
        Some("true" | "1") => Ok(true),
        Some("false" | "0") => Ok(false),
        Some(other) => Err(ApiError::new(Reason::BadRequest, format!("{name}: {other:?} is not true or false"))),
    }
}

/// A whole number of seconds in a query parameter (`timeoutSeconds`), as the OpenAPI document
/// declares it; absent is `None`.
fn query_seconds(query: &HashMap<String, String>, name: &str) -> ApiResult<Option<Duration>> {
    match query.get(name).map(|v| (v, v.parse::<u64>())) {
        None => Ok(None),
        // At most i64::MAX, the document's int64.
        Some((_, Ok(secs))) if i64::try_from(secs).is_ok() => Ok(Some(Duration::from_secs(secs))),
        Some((v, _)) => {
            Err(ApiError::new(Reason::BadRequest, format!("{name}: {v:?} is not a whole number of seconds")))
        }
    }
}

/// The query of a list or watch, checked as the OpenAPI document declares it (every parameter,
/// with or without `watch`).
struct ListQuery {
    watch: bool,
    bookmarks: bool,
    timeout: Option<Duration>,
    resource_version: String,
    limit: usize,
    continue_token: String,
}

impl ListQuery {
    fn parse(query: &HashMap<String, String>) -> ApiResult<ListQuery> {
        let bad = |message: String| ApiError::new(Reason::BadRequest, message);
        let resource_version = query.get("resourceVersion").cloned().unwrap_or_default();
        if !resource_version.is_empty() && !stratus_api::patterns::is_resource_version(&resource_version) {
            return Err(bad(format!("resourceVersion: {resource_version:?} is not a resource version")));
        }
        let limit = match query.get("limit").map(|l| l.parse::<i64>().map(usize::try_from)) {
            None => 0,
            Some(Ok(Ok(l))) => l,
            Some(_) => return Err(bad("limit: must be a non-negative number".into())),
        };
        let continue_token = query.get("continue").cloned().unwrap_or_default();
        if !continue_token.is_empty() && !stratus_api::patterns::is_continue_token(&continue_token) {
            return Err(bad(format!("continue: {continue_token:?} is not a token this server issued")));
        }
        Ok(ListQuery {
            watch: query_bool(query, "watch")?,
            bookmarks: query_bool(query, "allowWatchBookmarks")?,
            timeout: query_seconds(query, "timeoutSeconds")?,
            resource_version,
            limit,
            continue_token,
        })
    }
}

async fn handle(
    registry: &Registry,
    caller: &Caller,
    method: &Method,
    t: Target,
    query: &HashMap<String, String>,
    headers: &HeaderMap,
    body: Body,
) -> (&'static str, ApiResult<Response>) {
    let kind = t.info.kind;
    let collection = t.name.is_empty();
    match (method.as_str(), collection, t.status) {
        ("GET", true, false) => {
            let sel = Selection {
                namespace: t.namespace.clone(),
                labels: query.get("labelSelector").cloned().unwrap_or_default(),
                fields: query.get("fieldSelector").cloned().unwrap_or_default(),
            };
            let q = match ListQuery::parse(query) {
                Ok(q) => q,
                Err(e) => return ("list", Err(e)),
            };
            if q.watch {
                return (
                    "watch",
                    watch(registry, caller, kind, &sel, &q.resource_version, q.bookmarks, q.timeout).await,
                );
            }
            let res = registry.list(caller, kind, &sel, q.limit, &q.continue_token).await.map(|page| {
                let items: Vec<Value> = page.items.iter().map(AnyObject::to_json).collect();
                let list = json!({
                    "apiVersion": stratus_api::API_VERSION,
                    "kind": format!("{kind}List"),
                    "metadata": {"resourceVersion": page.resource_version, "continue": page.continue_token},
                    "items": items,
                });
                axum::Json(list).into_response()
            });
            ("list", res)
        }
        ("POST", true, false) if !(t.info.namespaced && t.namespace.is_empty()) => {
            let res = async {
                let obj = read_object(&t, headers, body).await?;
                let created = registry.create(caller, obj).await?;
                Ok((StatusCode::CREATED, axum::Json(created.to_json())).into_response())
            }
            .await;
            ("create", res)
        }
        ("GET", false, _) => {
            let res = registry
                .get(caller, kind, &t.namespace, &t.name)
                .await
                .map(|o| axum::Json(o.to_json()).into_response());
            ("get", res)
        }
        ("PUT", false, status) => {
            let res = async {
                let obj = read_object(&t, headers, body).await?;
                let updated = if status {
                    registry.update_status(caller, obj).await?
                } else {
                    registry.update(caller, obj).await?
                };
                Ok(axum::Json(updated.to_json()).into_response())
            }
            .await;
            (if status { "update_status" } else { "update" }, res)
        }
        ("PATCH", false, false)
            if content_type(headers).contains("merge-patch+json") && !content_type(headers).contains("strategic") =>
        {
            let res = async {
                let patch = read_json(headers, body).await?;
                let updated = merge_patch(registry, caller, &t, patch).await?;
                Ok(axum::Json(updated.to_json()).into_response())
            }
            .await;
            ("patch", res)
        }
        ("PATCH", false, false)
            if content_type(headers).contains("patch") && !content_type(headers).contains("apply-patch") =>
        {
            (
                "patch",
                Err(ApiError::new(
                    Reason::UnsupportedMediaType,
                    format!(
                        "{} is not supported: send application/merge-patch+json, or the whole object (application/apply-patch+yaml) to apply it",
                        content_type(headers)
                    ),
                )),
            )
        }
        ("PATCH", false, false) => {
            let res = async {
                let obj = read_object(&t, headers, body).await?;
                let (obj, applied) = registry.apply(caller, obj).await?;
                let code = if applied == Applied::Created { StatusCode::CREATED } else { StatusCode::OK };
                Ok((code, [("x-stratus-apply-result", applied.as_str())], axum::Json(obj.to_json())).into_response())
            }
            .await;
            ("apply", res)
        }
        ("DELETE", false, false) => {
            let pre = query.get("resourceVersion").map(String::as_str);
            let res = registry
                .delete(caller, kind, &t.namespace, &t.name, pre)
                .await
                .map(|o| axum::Json(o.to_json()).into_response());
            ("delete", res)
        }
        _ => (
            "unknown",
            Err(ApiError::new(
                Reason::MethodNotAllowed,
                format!("{method} is not supported on {}", if collection { "a collection" } else { "an object" }),
            )),
        ),
    }
}

async fn watch(
    registry: &Registry,
    caller: &Caller,
    kind: &str,
    sel: &Selection,
    rv: &str,
    bookmarks: bool,
    timeout: Option<Duration>,
) -> ApiResult<Response> {
    let events = registry.watch(caller, kind, sel, rv, bookmarks).await?;
    // `timeoutSeconds`, as Kubernetes: the stream ends cleanly after it and the client watches
    // again from the last version it saw.
    let events = events.take_until(async move {
        match timeout {
            Some(t) => tokio::time::sleep(t).await,
            None => std::future::pending().await,
        }
    });
    let lines = events.map(|ev| {
        let line = match ev {
            Ok(ev) => json!({"type": ev.kind, "object": ev.object.to_json()}),
            Err(e) => json!({"type": "ERROR", "object": e.status_json()}),
        };
        let mut bytes = serde_json::to_vec(&line).unwrap_or_default();
        bytes.push(b'\n');
        Ok::<_, std::convert::Infallible>(Bytes::from(bytes))
    });
    Ok(([(header::CONTENT_TYPE, "application/x-ndjson")], Body::from_stream(lines)).into_response())
}

fn content_type(headers: &HeaderMap) -> &str {
    headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or("application/json")
}

/// Applies a JSON merge patch (RFC 7386) to the stored object and writes the result, at the
/// version the patch names or, when it names none, at the version just read (retrying if a
/// concurrent writer got there first).
async fn merge_patch(registry: &Registry, caller: &Caller, t: &Target, patch: Value) -> ApiResult<AnyObject> {
    if !patch.is_object() {
        return Err(ApiError::new(Reason::BadRequest, "a merge patch must be a JSON object"));
    }
    let pinned = patch.pointer("/metadata/resourceVersion").is_some();
    for _ in 0..8 {
        let current = registry.get(caller, t.info.kind, &t.namespace, &t.name).await?;
        let mut doc = current.to_json();
        merge(&mut doc, &patch);
        let mut obj = stratus_api::decode::decode_value(doc).map_err(ApiError::bad_request)?;
        check_against_path(&mut obj, t)?;
        let write =
            if t.status { registry.update_status(caller, obj).await } else { registry.update(caller, obj).await };
        match write {
            Err(e) if e.reason == Reason::Conflict && !pinned => continue,
            other => return other,
        }
    }
    Err(ApiError::new(
        Reason::Conflict,
        format!("{} {:?} keeps changing concurrently; try again", t.info.singular, t.name),
    ))
}

/// RFC 7386: objects merge key by key, `null` removes, anything else replaces.
fn merge(target: &mut Value, patch: &Value) {
    match (target, patch) {
        (Value::Object(t), Value::Object(p)) => {
            for (k, v) in p {
                if v.is_null() {
                    t.remove(k);
                } else {
                    merge(t.entry(k.clone()).or_insert(Value::Null), v);
                }
            }
        }
        (t, p) => *t = p.clone(),
    }
}

/// Reads, decodes and checks a request body against the path it was sent to.
async fn read_object(t: &Target, headers: &HeaderMap, body: Body) -> ApiResult<AnyObject> {
    let value = read_json(headers, body).await?;
    let mut obj = stratus_api::decode::decode_value(value).map_err(ApiError::bad_request)?;
    check_against_path(&mut obj, t)?;
    Ok(obj)
}

/// Reads a JSON or YAML body of at most [`MAX_BODY_BYTES`].
async fn read_json(headers: &HeaderMap, body: Body) -> ApiResult<Value> {
    let too_large = || {
        ApiError::new(Reason::RequestEntityTooLarge, format!("the request body is larger than {MAX_BODY_BYTES} bytes"))
    };
    if let Some(len) =
        headers.get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()).and_then(|v| v.parse::<usize>().ok())
        && len > MAX_BODY_BYTES
    {
        return Err(too_large());
    }
    let bytes = http_body_util::Limited::new(body, MAX_BODY_BYTES)
        .collect()
        .await
        .map_err(|e| {
            if e.downcast_ref::<http_body_util::LengthLimitError>().is_some() {
                too_large()
            } else {
                ApiError::new(Reason::BadRequest, format!("reading the request body failed: {e}"))
            }
        })?
        .to_bytes();
    let yaml = headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).is_some_and(|ct| ct.contains("yaml"));
    let value: Value = if yaml {
        let text = std::str::from_utf8(&bytes)
            .map_err(|_| ApiError::new(Reason::BadRequest, "the request body is not UTF-8 text"))?;
        yaml_serde::from_str(text)
            .map_err(|e| ApiError::new(Reason::BadRequest, format!("the request body is not valid YAML: {e}")))?
    } else {
        serde_json::from_slice(&bytes)
            .map_err(|e| ApiError::new(Reason::BadRequest, format!("the request body is not valid JSON: {e}")))?
    };
    Ok(value)
}

/// Checks the object's kind, namespace and name against the path, filling those it left out.
fn check_against_path(obj: &mut AnyObject, t: &Target) -> ApiResult<()> {
    if obj.info() != t.info {
        return Err(ApiError::new(
            Reason::BadRequest,
            format!("kind: the body is a {} but the path is for {}", obj.info().kind, t.info.plural),
        ));
    }
    let meta = obj.meta_mut();
    if t.info.namespaced {
        if meta.namespace.is_empty() {
            meta.namespace = t.namespace.clone();
        } else if !t.namespace.is_empty() && meta.namespace != t.namespace {
            return Err(ApiError::new(
                Reason::BadRequest,
                format!(
                    "metadata.namespace: {:?} does not match the namespace {:?} of the path",
                    meta.namespace, t.namespace
                ),
            ));
        }
    }
    if !t.name.is_empty() {
        if meta.name.is_empty() {
            meta.name = t.name.clone();
        } else if meta.name != t.name {
            return Err(ApiError::new(
                Reason::BadRequest,
                format!("metadata.name: {:?} does not match the name {:?} of the path", meta.name, t.name),
            ));
        }
    }
    Ok(())
}

pub(crate) fn error_response(e: &ApiError) -> Response {
    let code = StatusCode::from_u16(e.reason.http_status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    (code, axum::Json(e.status_json())).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_resolve_like_kubernetes() {
        let t = parse_target("stratus.dev", "v1", "namespaces/default/services/hello").expect("resolves");
        assert_eq!(
            (t.info.kind, t.namespace.as_str(), t.name.as_str(), t.status),
            ("Service", "default", "hello", false)
        );
        let t = parse_target("stratus.dev", "v1", "namespaces/team-a").expect("resolves");
        assert_eq!((t.info.kind, t.name.as_str()), ("Namespace", "team-a"));
        let t = parse_target("stratus.dev", "v1", "namespaces/team-a/status").expect("resolves");
        assert!(t.status && t.info.kind == "Namespace");
        let t = parse_target("stratus.dev", "v1", "nodes/n1/status").expect("resolves");
        assert!(t.status && t.info.kind == "Node");
        let t = parse_target("serving.knative.dev", "v1", "namespaces/default/services").expect("resolves");
        assert_eq!(t.info.kind, "Service");
        assert!(parse_target("serving.knative.dev", "v1", "namespaces/default/revisions").is_err());
        assert!(parse_target("stratus.dev", "v1", "services/hello").is_err());
        assert!(parse_target("stratus.dev", "v1", "pods").is_err());
        assert!(parse_target("apps", "v1", "deployments").is_err());
        assert!(parse_target("stratus.dev", "v1", "namespaces/a/nodes/x").is_err());
        let t = parse_target("stratus.dev", "v1", "namespaces/default/instances/web-1/log").expect("resolves");
        assert!(t.log && !t.status && t.info.kind == "Instance" && t.name == "web-1");
        assert!(parse_target("serving.knative.dev", "v1", "namespaces/default/services/hello/log").is_err());
        assert!(parse_target("stratus.dev", "v1", "nodes/n1/log").is_err());
    }
}

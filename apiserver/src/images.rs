//! Image upload: a user without a registry of their own sends the output of `docker save`, and
//! the image is stored in the cluster's registry under the namespace, as
//! `{registry}/{namespace}/{name}:{tag}`.
//!
//! ```text
//! POST /apis/stratus.dev/v1/namespaces/{ns}/images[?name=&tag=]   body: the tar (application/x-tar)
//! GET  /apis/stratus.dev/v1/namespaces/{ns}/images                the namespace's images
//! ```
//!
//! Both are authorised as creating (listing) a Service in the namespace. The body is streamed
//! to disk (a spool directory of the server's, removed on every path) up to a limit; then the
//! archive's image is checked and its blobs and manifest pushed with the Registry HTTP API v2.
//! Nothing is pushed until the whole archive has arrived and checked out, and the manifest,
//! which is what makes the blobs an image, goes last: a broken upload leaves nothing that a
//! name refers to.

pub mod archive;
pub mod distribution;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde_json::json;
use stratus_api::Resource;
use stratus_api::v1::Service;

use crate::Registry;
use crate::auth::{Caller, Verb};
use crate::error::{ApiError, ApiResult, Reason};
use crate::http::error_response;
use archive::{Compression, Image};
use distribution::Distribution;

/// The default largest archive accepted: 2 GiB.
pub const DEFAULT_MAX_BYTES: u64 = 2 * 1024 * 1024 * 1024;

/// The media type of an upload's body.
pub const ARCHIVE_TYPE: &str = "application/x-tar";

/// Where uploaded images go.
#[derive(Debug, Clone)]
pub struct ImagesConfig {
    /// The cluster's registry, `host:port`, reached over plain HTTP; images are named
    /// `{registry}/{namespace}/{name}:{tag}`, which is how node agents pull them.
    pub registry: String,
    /// Where archives are spooled while they arrive (created if missing): the server's data
    /// directory, since an archive may be as large as `max_bytes`.
    pub spool_dir: PathBuf,
    /// The largest archive accepted (413 past it).
    pub max_bytes: u64,
}

impl ImagesConfig {
    pub fn new(registry: impl Into<String>, spool_dir: impl Into<PathBuf>) -> ImagesConfig {
        ImagesConfig { registry: registry.into(), spool_dir: spool_dir.into(), max_bytes: DEFAULT_MAX_BYTES }
    }
}

#[derive(Clone)]
struct Images {
    registry: Registry,
    config: Option<Arc<ImagesConfig>>,
}

/// The routes of image upload. Without a configuration they answer 503, naming the flag.
pub fn router(registry: Registry, config: Option<ImagesConfig>) -> Router {
    Router::new()
        .route("/apis/stratus.dev/v1/namespaces/{namespace}/images", get(list).post(upload))
        .with_state(Images { registry, config: config.map(Arc::new) })
}

/// Whether `path` is the upload's, whose body is a tar archive (for the guard).
pub fn is_upload_path(path: &str) -> bool {
    path.strip_prefix("/apis/stratus.dev/v1/namespaces/")
        .and_then(|rest| rest.split_once('/'))
        .is_some_and(|(ns, rest)| !ns.is_empty() && rest.trim_end_matches('/') == "images")
}

impl Images {
    fn config(&self) -> ApiResult<&ImagesConfig> {
        self.config.as_deref().ok_or_else(|| {
            ApiError::new(
                Reason::ServiceUnavailable,
                "this API server has no image registry to store uploads in (start it with --registry)",
            )
        })
    }

    /// Refuses unless `caller` may `verb` Services in `namespace`.
    async fn authorize(&self, caller: &Caller, verb: Verb, namespace: &str) -> ApiResult<()> {
        stratus_api::validation::dns_label(namespace)
            .map_err(|e| ApiError::new(Reason::BadRequest, format!("namespace in the path: {e}")))?;
        self.registry.authorize(caller, verb, &Service::INFO, namespace, "", None).await
    }
}

async fn upload(
    State(s): State<Images>,
    Path(namespace): Path<String>,
    Query(query): Query<HashMap<String, String>>,
    caller: Option<axum::Extension<Caller>>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let Some(axum::Extension(caller)) = caller else {
        return error_response(&ApiError::new(Reason::Unauthorized, "no credentials"));
    };
    let result = upload_image(&s, &caller, &namespace, &query, &headers, body).await;
    let (code, name) = match &result {
        Ok(pushed) => (201, format!("{}:{}", pushed.name, pushed.tag)),
        Err(e) => (e.reason.http_status(), String::new()),
    };
    s.registry.audit_request(&caller, "create", "images", &namespace, &name, code);
    match result {
        Ok(pushed) => (StatusCode::CREATED, axum::Json(pushed.json())).into_response(),
        Err(e) => {
            if e.reason.http_status() >= 500 {
                tracing::warn!(namespace, error = %e.message, "image upload failed");
            }
            error_response(&e)
        }
    }
}

/// An image stored in the registry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pushed {
    pub name: String,
    pub tag: String,
    /// `{registry}/{namespace}/{name}:{tag}`
    pub image: String,
    /// The manifest's digest, `sha256:…`.
    pub digest: String,
}

impl Pushed {
    fn json(&self) -> serde_json::Value {
        json!({"name": self.name, "tag": self.tag, "image": self.image, "digest": self.digest})
    }
}

async fn upload_image(
    s: &Images,
    caller: &Caller,
    namespace: &str,
    query: &HashMap<String, String>,
    headers: &HeaderMap,
    body: Body,
) -> ApiResult<Pushed> {
    let config = s.config()?;
    s.authorize(caller, Verb::Create, namespace).await?;
    let media_type = headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or("");
    if media_type.split(';').next().unwrap_or("").trim() != ARCHIVE_TYPE {
        return Err(ApiError::new(
            Reason::UnsupportedMediaType,
            format!("an image upload is a docker save archive sent as {ARCHIVE_TYPE}"),
        ));
    }
    let declared = headers.get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
    if let Some(length) = declared.filter(|l| *l > config.max_bytes) {
        return Err(too_large(length, config.max_bytes));
    }
    let requested_name = query.get("name").filter(|n| !n.is_empty());
    let requested_tag = query.get("tag").filter(|t| !t.is_empty());
    if let Some(name) = requested_name {
        check_name(name)?;
    }
    if let Some(tag) = requested_tag {
        check_tag(tag)?;
    }
    std::fs::create_dir_all(&config.spool_dir).map_err(|e| {
        ApiError::internal(format!("creating the upload directory {} failed: {e}", config.spool_dir.display()))
    })?;
    // Removed when dropped: on success, on every error, and when the client goes away.
    let spool = tempfile::Builder::new()
        .prefix("upload-")
        .tempdir_in(&config.spool_dir)
        .map_err(|e| ApiError::internal(format!("making a directory in {} failed: {e}", config.spool_dir.display())))?;
    let archive =
        archive::read(body.into_data_stream(), config.max_bytes, spool.path()).await.map_err(archive_error)?;
    let image = archive.image().await.map_err(archive_error)?;
    let saved = image.repo_tags.first().map(|t| split_reference(t));
    let name = match (requested_name, &saved) {
        (Some(n), _) => n.clone(),
        (None, Some((n, _))) => n.clone(),
        (None, None) => {
            return Err(ApiError::new(
                Reason::BadRequest,
                "the archive does not name its image (no RepoTags): give one with ?name=",
            ));
        }
    };
    let tag = match (requested_tag, &saved) {
        (Some(t), _) => t.clone(),
        (None, Some((_, t))) => t.clone(),
        (None, None) => "latest".to_string(),
    };
    check_name(&name)
        .map_err(|e| ApiError::new(Reason::BadRequest, format!("{} (give a name with ?name=)", e.message)))?;
    check_tag(&tag).map_err(|e| ApiError::new(Reason::BadRequest, format!("{} (give a tag with ?tag=)", e.message)))?;
    let repository = format!("{namespace}/{name}");
    let distribution = Distribution::new(&config.registry);
    let digest = push(&distribution, &repository, &tag, &image).await.map_err(registry_error)?;
    tracing::info!(namespace, repository, tag, digest, "image uploaded");
    Ok(Pushed { image: format!("{}/{repository}:{tag}", config.registry), name, tag, digest })
}

/// Pushes the blobs the registry lacks, then the manifest; returns the manifest's digest.
async fn push(d: &Distribution, repository: &str, tag: &str, image: &Image) -> distribution::Result<String> {
    for blob in std::iter::once(&image.config).chain(&image.layers) {
        if !d.has_blob(repository, &blob.digest).await? {
            d.push_blob(repository, &blob.digest, &blob.path, blob.size).await?;
        }
    }
    let (media_type, manifest) = manifest(image);
    let bytes = serde_json::to_vec(&manifest).unwrap_or_default();
    let digest = format!("sha256:{}", archive::hex(ring::digest::digest(&ring::digest::SHA256, &bytes).as_ref()));
    d.put_manifest(repository, tag, media_type, bytes).await?;
    Ok(digest)
}

/// The manifest of `image`: OCI for an archive in the OCI layout (or with a zstd layer, which
/// Docker's media types cannot describe), Docker schema 2 otherwise; each layer typed by its
/// compression.
fn manifest(image: &Image) -> (&'static str, serde_json::Value) {
    let oci = image.oci || image.layers.iter().any(|l| l.compression == Compression::Zstd);
    let (manifest_type, config_type) = if oci {
        ("application/vnd.oci.image.manifest.v1+json", "application/vnd.oci.image.config.v1+json")
    } else {
        ("application/vnd.docker.distribution.manifest.v2+json", "application/vnd.docker.container.image.v1+json")
    };
    let layer_type = |c: Compression| match (oci, c) {
        (true, Compression::None) => "application/vnd.oci.image.layer.v1.tar",
        (true, Compression::Gzip) => "application/vnd.oci.image.layer.v1.tar+gzip",
        (_, Compression::Zstd) => "application/vnd.oci.image.layer.v1.tar+zstd",
        (false, Compression::None) => "application/vnd.docker.image.rootfs.diff.tar",
        (false, Compression::Gzip) => "application/vnd.docker.image.rootfs.diff.tar.gzip",
    };
    let layers: Vec<_> = image
        .layers
        .iter()
        .map(|l| json!({"mediaType": layer_type(l.compression), "size": l.size, "digest": l.digest}))
        .collect();
    let manifest = json!({
        "schemaVersion": 2,
        "mediaType": manifest_type,
        "config": {"mediaType": config_type, "size": image.config.size, "digest": image.config.digest},
        "layers": layers,
    });
    (manifest_type, manifest)
}

async fn list(
    State(s): State<Images>,
    Path(namespace): Path<String>,
    caller: Option<axum::Extension<Caller>>,
) -> Response {
    let Some(axum::Extension(caller)) = caller else {
        return error_response(&ApiError::new(Reason::Unauthorized, "no credentials"));
    };
    match list_images(&s, &caller, &namespace).await {
        Ok(items) => axum::Json(json!({"items": items.iter().map(Pushed::json).collect::<Vec<_>>()})).into_response(),
        Err(e) => error_response(&e),
    }
}

/// The images of `namespace`: every tag of every repository under `{namespace}/`.
async fn list_images(s: &Images, caller: &Caller, namespace: &str) -> ApiResult<Vec<Pushed>> {
    let config = s.config()?;
    s.authorize(caller, Verb::List, namespace).await?;
    let d = Distribution::new(&config.registry);
    let prefix = format!("{namespace}/");
    let mut items = Vec::new();
    for repository in d.catalog().await.map_err(registry_error)? {
        let Some(name) = repository.strip_prefix(&prefix) else { continue };
        let mut tags = d.tags(&repository).await.map_err(registry_error)?;
        tags.sort();
        for tag in tags {
            // A tag deleted between the two reads is left out.
            if let Some(digest) = d.manifest_digest(&repository, &tag).await.map_err(registry_error)? {
                let image = format!("{}/{repository}:{tag}", config.registry);
                items.push(Pushed { name: name.to_string(), tag, image, digest });
            }
        }
    }
    Ok(items)
}

/// `(name, tag)` of a reference as `docker save` records it (`127.0.0.1:5000/hello:v1`,
/// `library/nginx:latest`): the last path component, and the tag (`latest` when none).
fn split_reference(reference: &str) -> (String, String) {
    let without_digest = reference.split('@').next().unwrap_or(reference);
    let last = without_digest.rsplit('/').next().unwrap_or(without_digest);
    match last.split_once(':') {
        Some((name, tag)) => (name.to_string(), tag.to_string()),
        None => (last.to_string(), "latest".to_string()),
    }
}

/// An image name under a namespace: one path component of the Distribution spec,
/// `[a-z0-9]+([._-][a-z0-9]+)*`, at most 128 characters.
fn check_name(name: &str) -> ApiResult<()> {
    let bad = |why: &str| ApiError::new(Reason::BadRequest, format!("image name {name:?} {why}"));
    if name.is_empty() || name.len() > 128 {
        return Err(bad("must be 1 to 128 characters"));
    }
    let mut previous_separator = true;
    for c in name.chars() {
        let separator = matches!(c, '.' | '_' | '-');
        if !(c.is_ascii_lowercase() || c.is_ascii_digit() || separator) {
            return Err(bad("may hold only lowercase letters, digits, '.', '_' and '-'"));
        }
        if separator && previous_separator {
            return Err(bad("must start with a letter or digit and not repeat separators"));
        }
        previous_separator = separator;
    }
    if previous_separator {
        return Err(bad("must end with a letter or digit"));
    }
    Ok(())
}

/// A tag: `[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}`.
fn check_tag(tag: &str) -> ApiResult<()> {
    let ok = !tag.is_empty()
        && tag.len() <= 128
        && !tag.starts_with(['.', '-'])
        && tag.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'));
    if ok {
        Ok(())
    } else {
        Err(ApiError::new(
            Reason::BadRequest,
            format!(
                "image tag {tag:?} must be 1 to 128 letters, digits, '_', '.' and '-', not starting with '.' or '-'"
            ),
        ))
    }
}

fn too_large(length: u64, limit: u64) -> ApiError {
    ApiError::new(
        Reason::RequestEntityTooLarge,
        format!("the archive is {length} bytes, over the limit of {limit} bytes for an image upload"),
    )
}

fn archive_error(e: archive::Error) -> ApiError {
    use archive::Error as E;
    let reason = match &e {
        E::TooLarge { .. } => Reason::RequestEntityTooLarge,
        E::Spool { .. } => Reason::InternalError,
        _ => Reason::BadRequest,
    };
    ApiError::new(reason, e.to_string())
}

fn registry_error(e: distribution::Error) -> ApiError {
    ApiError::new(Reason::ServiceUnavailable, format!("storing the image failed: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_tags_of_saved_references() {
        assert_eq!(split_reference("127.0.0.1:5000/hello:v1"), ("hello".into(), "v1".into()));
        assert_eq!(split_reference("library/nginx"), ("nginx".into(), "latest".into()));
        assert_eq!(split_reference("docker.io/library/app:v2"), ("app".into(), "v2".into()));
        for ok in ["hello", "a.b-c_d", "x1"] {
            assert!(check_name(ok).is_ok(), "{ok}");
        }
        for bad in ["", "Hello", "a/b", "-a", "a-", "a..b", "a b"] {
            assert!(check_name(bad).is_err(), "{bad}");
        }
        assert!(check_tag("v1.0_rc-1").is_ok());
        for bad in ["", ".x", "-x", "a:b", "a/b"] {
            assert!(check_tag(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn upload_paths() {
        assert!(is_upload_path("/apis/stratus.dev/v1/namespaces/default/images"));
        assert!(!is_upload_path("/apis/stratus.dev/v1/namespaces/default/services"));
        assert!(!is_upload_path("/apis/stratus.dev/v1/namespaces//images"));
        assert!(!is_upload_path("/apis/stratus.dev/v1/namespaces/default/images/x"));
    }
}

//! A client of the Registry HTTP API v2 (the Distribution spec), as much as pushing an image
//! and listing a namespace's images need: blobs by monolithic upload (skipped when the
//! registry has them), manifests, the catalog and tag lists. Plain HTTP: the cluster's registry
//! is on loopback or a private network.

use std::path::Path;

use axum::body::Body;
use bytes::Bytes;
use http::{HeaderMap, Method, Request, StatusCode, header};
use http_body_util::BodyExt;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;

/// The media types asked for when reading a manifest's digest.
const MANIFEST_TYPES: &str = "application/vnd.docker.distribution.manifest.v2+json, \
     application/vnd.oci.image.manifest.v1+json, application/vnd.oci.image.index.v1+json, \
     application/vnd.docker.distribution.manifest.list.v2+json";

/// The largest catalog or tag list page read.
const MAX_LISTING: usize = 8 * 1024 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("the image registry at {registry} could not be reached: {source}")]
    Unreachable {
        registry: String,
        #[source]
        source: hyper_util::client::legacy::Error,
    },
    #[error("the image registry at {registry} answered {status} to {what}: {body}")]
    Refused { registry: String, what: String, status: StatusCode, body: String },
    #[error("reading {path} to send it to the registry failed: {source}")]
    Read {
        path: std::path::PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("the image registry at {registry} sent {what} that could not be read: {detail}")]
    Garbled { registry: String, what: String, detail: String },
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// One registry, by `host:port`.
#[derive(Clone)]
pub struct Distribution {
    host: String,
    client: Client<HttpConnector, Body>,
}

impl Distribution {
    pub fn new(host: impl Into<String>) -> Distribution {
        Distribution { host: host.into(), client: Client::builder(TokioExecutor::new()).build_http() }
    }

    /// Sends one request to `url` (a path on the registry, or an absolute URL it gave).
    async fn send(
        &self,
        method: Method,
        url: &str,
        headers: &[(header::HeaderName, String)],
        body: Body,
        what: &str,
    ) -> Result<(StatusCode, HeaderMap, Bytes)> {
        let url = if url.starts_with("http://") || url.starts_with("https://") {
            url.to_string()
        } else {
            format!("http://{}{url}", self.host)
        };
        let mut req = Request::builder().method(method).uri(&url);
        for (name, value) in headers {
            req = req.header(name, value);
        }
        let req = req.body(body).map_err(|e| self.garbled(what, format!("the request to {url}: {e}")))?;
        let resp = self
            .client
            .request(req)
            .await
            .map_err(|source| Error::Unreachable { registry: self.host.clone(), source })?;
        let (parts, body) = resp.into_parts();
        let limited = http_body_util::Limited::new(body, MAX_LISTING);
        let bytes = limited.collect().await.map_err(|e| self.garbled(what, e.to_string()))?.to_bytes();
        Ok((parts.status, parts.headers, bytes))
    }

    fn garbled(&self, what: &str, detail: String) -> Error {
        Error::Garbled { registry: self.host.clone(), what: what.to_string(), detail }
    }

    fn refused(&self, what: &str, status: StatusCode, body: &[u8]) -> Error {
        let text = String::from_utf8_lossy(body);
        let body = text.trim().chars().take(500).collect();
        Error::Refused { registry: self.host.clone(), what: what.to_string(), status, body }
    }

    /// Whether `repository` has the blob `digest`.
    pub async fn has_blob(&self, repository: &str, digest: &str) -> Result<bool> {
        let what = format!("HEAD of blob {digest}");
        let url = format!("/v2/{repository}/blobs/{digest}");
        let (status, _, body) = self.send(Method::HEAD, &url, &[], Body::empty(), &what).await?;
        match status {
            StatusCode::OK => Ok(true),
            StatusCode::NOT_FOUND => Ok(false),
            s => Err(self.refused(&what, s, &body)),
        }
    }

    /// Uploads the file at `path` (`size` bytes) as the blob `digest` of `repository`, in one
    /// monolithic PUT streamed from disk.
    pub async fn push_blob(&self, repository: &str, digest: &str, path: &Path, size: u64) -> Result<()> {
        let what = format!("the upload of blob {digest}");
        let start = format!("/v2/{repository}/blobs/uploads/");
        let (status, headers, body) = self.send(Method::POST, &start, &[], Body::empty(), &what).await?;
        if status != StatusCode::ACCEPTED {
            return Err(self.refused(&what, status, &body));
        }
        let location = headers
            .get(header::LOCATION)
            .and_then(|v| v.to_str().ok())
            .ok_or_else(|| self.garbled(&what, "no Location for the upload".into()))?;
        let separator = if location.contains('?') { '&' } else { '?' };
        let url = format!("{location}{separator}digest={digest}");
        let file = tokio::fs::File::open(path).await.map_err(|source| Error::Read { path: path.into(), source })?;
        let body = Body::from_stream(file_chunks(file));
        let headers = [
            (header::CONTENT_TYPE, "application/octet-stream".to_string()),
            (header::CONTENT_LENGTH, size.to_string()),
        ];
        let (status, _, body) = self.send(Method::PUT, &url, &headers, body, &what).await?;
        if status != StatusCode::CREATED {
            return Err(self.refused(&what, status, &body));
        }
        Ok(())
    }

    /// Puts `manifest` (of `media_type`) as `repository:tag`.
    pub async fn put_manifest(&self, repository: &str, tag: &str, media_type: &str, manifest: Vec<u8>) -> Result<()> {
        let what = format!("the manifest of {repository}:{tag}");
        let url = format!("/v2/{repository}/manifests/{tag}");
        let headers = [(header::CONTENT_TYPE, media_type.to_string())];
        let (status, _, body) = self.send(Method::PUT, &url, &headers, Body::from(manifest), &what).await?;
        if status != StatusCode::CREATED {
            return Err(self.refused(&what, status, &body));
        }
        Ok(())
    }

    /// Every repository of the registry, through the catalog's pages.
    pub async fn catalog(&self) -> Result<Vec<String>> {
        #[derive(serde::Deserialize)]
        struct Catalog {
            #[serde(default)]
            repositories: Option<Vec<String>>,
        }
        let mut out = Vec::new();
        let mut url = "/v2/_catalog?n=1000".to_string();
        loop {
            let (status, headers, body) = self.send(Method::GET, &url, &[], Body::empty(), "the catalog").await?;
            if status != StatusCode::OK {
                return Err(self.refused("the catalog", status, &body));
            }
            let page: Catalog =
                serde_json::from_slice(&body).map_err(|e| self.garbled("the catalog", e.to_string()))?;
            out.extend(page.repositories.unwrap_or_default());
            match next_page(&headers) {
                Some(next) => url = next,
                None => return Ok(out),
            }
        }
    }

    /// The tags of `repository` (none when it has none, or is gone).
    pub async fn tags(&self, repository: &str) -> Result<Vec<String>> {
        #[derive(serde::Deserialize)]
        struct Tags {
            #[serde(default)]
            tags: Option<Vec<String>>,
        }
        let what = format!("the tags of {repository}");
        let url = format!("/v2/{repository}/tags/list");
        let (status, _, body) = self.send(Method::GET, &url, &[], Body::empty(), &what).await?;
        match status {
            StatusCode::OK => {}
            StatusCode::NOT_FOUND => return Ok(Vec::new()),
            s => return Err(self.refused(&what, s, &body)),
        }
        let tags: Tags = serde_json::from_slice(&body).map_err(|e| self.garbled(&what, e.to_string()))?;
        Ok(tags.tags.unwrap_or_default())
    }

    /// The digest of the manifest `repository:tag`, or `None` when there is none.
    pub async fn manifest_digest(&self, repository: &str, tag: &str) -> Result<Option<String>> {
        let what = format!("HEAD of {repository}:{tag}");
        let url = format!("/v2/{repository}/manifests/{tag}");
        let headers = [(header::ACCEPT, MANIFEST_TYPES.to_string())];
        let (status, headers, body) = self.send(Method::HEAD, &url, &headers, Body::empty(), &what).await?;
        match status {
            StatusCode::OK => {}
            StatusCode::NOT_FOUND => return Ok(None),
            s => return Err(self.refused(&what, s, &body)),
        }
        let digest = headers.get("docker-content-digest").and_then(|v| v.to_str().ok());
        Ok(Some(digest.ok_or_else(|| self.garbled(&what, "no Docker-Content-Digest".into()))?.to_string()))
    }
}

/// The path of the next page a `Link: <…>; rel="next"` header points to.
fn next_page(headers: &HeaderMap) -> Option<String> {
    let link = headers.get(header::LINK)?.to_str().ok()?;
    let (target, rel) = link.split_once(';')?;
    rel.contains("rel=\"next\"").then(|| target.trim().trim_start_matches('<').trim_end_matches('>').to_string())
}

/// The chunks of `file`, read as the body is sent.
fn file_chunks(file: tokio::fs::File) -> impl futures::Stream<Item = std::io::Result<Bytes>> + Send + 'static {
    futures::stream::unfold(file, |mut file| async move {
        use tokio::io::AsyncReadExt;
        let mut buf = vec![0u8; 256 * 1024];
        match file.read(&mut buf).await {
            Ok(0) => None,
            Ok(n) => {
                buf.truncate(n);
                Some((Ok(Bytes::from(buf)), file))
            }
            Err(e) => Some((Err(e), file)),
        }
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn the_next_catalog_page_comes_from_link() {
        let mut h = HeaderMap::new();
        assert_eq!(next_page(&h), None);
        h.insert(header::LINK, "</v2/_catalog?last=b&n=1000>; rel=\"next\"".parse().unwrap());
        assert_eq!(next_page(&h).as_deref(), Some("/v2/_catalog?last=b&n=1000"));
    }
}

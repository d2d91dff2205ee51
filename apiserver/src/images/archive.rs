//! Reading a `docker save` archive as it streams in: a tar reader over the request body that
//! spools every file to disk (hashing it on the way, never holding more than one body chunk in
//! memory), then the image it holds, from `manifest.json` (every layout `docker save` writes)
//! or, when that is missing, from the OCI layout's `index.json`.
//!
//! Layers may come before the manifest that names them, so everything is spooled; the spool
//! directory is the caller's and goes with it on every path.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use bytes::{Buf, Bytes};
use futures::{Stream, StreamExt};
use serde::Deserialize;
use tokio::io::AsyncWriteExt;

const BLOCK: usize = 512;

/// The largest metadata entry (a PAX header, a GNU long name) or JSON document read into
/// memory: `manifest.json` of one image is a few KiB.
const MAX_DOCUMENT: u64 = 4 * 1024 * 1024;

/// What is wrong with an upload. Everything but `Spool` and `Body` is the archive's fault.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("the archive is larger than the limit of {limit} bytes")]
    TooLarge { limit: u64 },
    #[error("reading the request body failed: {0}")]
    Body(String),
    #[error("the archive is truncated: it ends {place} (the upload was cut short, or the file is incomplete)")]
    Truncated { place: String },
    #[error("the archive is not a tar file: {0}")]
    NotTar(String),
    #[error("the archive is not a docker save archive: {0}")]
    NotImage(String),
    #[error("the archive is damaged: {0}")]
    Damaged(String),
    #[error("writing the upload to {path} failed: {source}")]
    Spool {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// How a layer's bytes are compressed, from their first bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    None,
    Gzip,
    Zstd,
}

/// A file of the archive, spooled to disk.
#[derive(Debug, Clone)]
pub struct Spooled {
    pub path: PathBuf,
    pub size: u64,
    /// `sha256:<hex>` of the content.
    pub digest: String,
    pub compression: Compression,
}

/// One entry of the archive, by its normalised name.
#[derive(Debug, Clone)]
enum Entry {
    File(Spooled),
    /// A symbolic or hard link to another entry (the legacy layout links a repeated layer to
    /// its first copy); the target is already resolved to a name of the archive.
    Link(String),
}

/// Every file of an archive.
#[derive(Debug, Default)]
pub struct Archive {
    entries: HashMap<String, Entry>,
}

/// The image an archive holds: the spooled config and layers, in order, and the names it
/// was saved under.
#[derive(Debug)]
pub struct Image {
    pub config: Spooled,
    pub layers: Vec<Spooled>,
    /// `RepoTags` of `manifest.json`, or the OCI layout's reference names.
    pub repo_tags: Vec<String>,
    /// Whether the archive is in the OCI layout (then the manifest pushed is an OCI one).
    pub oci: bool,
}

/// The request body, read as bytes with a limit on how many.
struct Body<S> {
    stream: S,
    chunk: Bytes,
    read: u64,
    limit: u64,
}

impl<S, E> Body<S>
where
    S: Stream<Item = Result<Bytes, E>> + Unpin,
    E: std::fmt::Display,
{
    /// The next bytes of the body (at most `max`), or `None` at its end.
    async fn next(&mut self, max: usize) -> Result<Option<Bytes>> {
        while self.chunk.is_empty() {
            match self.stream.next().await {
                None => return Ok(None),
                Some(Err(e)) => return Err(Error::Body(e.to_string())),
                Some(Ok(chunk)) => {
                    self.read += chunk.len() as u64;
                    if self.read > self.limit {
                        return Err(Error::TooLarge { limit: self.limit });
                    }
                    self.chunk = chunk;
                }
            }
        }
        let n = max.min(self.chunk.len());
        Ok(Some(self.chunk.split_to(n)))
    }

    /// Exactly `n` bytes into memory (`n` is small: a header or a metadata entry), or `None`
    /// when the body ends first, with what was read.
    async fn exact(&mut self, n: usize) -> Result<std::result::Result<Vec<u8>, usize>> {
        let mut out = Vec::with_capacity(n);
        while out.len() < n {
            match self.next(n - out.len()).await? {
                Some(b) => out.extend_from_slice(&b),
                None => return Ok(Err(out.len())),
            }
        }
        Ok(Ok(out))
    }

    /// Skips `n` bytes; false when the body ends first.
    async fn skip(&mut self, mut n: u64) -> Result<bool> {
        while n > 0 {
            match self.next(usize::try_from(n).unwrap_or(usize::MAX)).await? {
                Some(b) => n -= b.len() as u64,
                None => return Ok(false),
            }
        }
        Ok(true)
    }
}

/// Reads a tar archive from `stream`, at most `limit` bytes of it, spooling every regular
/// file into `dir` (which must exist). Stops at the end-of-archive marker; an archive that
/// ends before it is truncated.
pub async fn read<S, E>(stream: S, limit: u64, dir: &Path) -> Result<Archive>
where
    S: Stream<Item = Result<Bytes, E>> + Unpin,
    E: std::fmt::Display,
{
    let mut body = Body { stream, chunk: Bytes::new(), read: 0, limit };
    let mut archive = Archive::default();
    // Set by a PAX or GNU entry for the entry that follows it.
    let mut long_name: Option<String> = None;
    let mut long_link: Option<String> = None;
    let mut pax_size: Option<u64> = None;
    let mut last = String::from("the start");
    let mut count = 0usize;
    loop {
        let header = match body.exact(BLOCK).await? {
            Ok(h) => h,
            Err(0) if count == 0 => return Err(Error::NotTar("the body is empty".into())),
            Err(_) => {
                return Err(Error::Truncated { place: format!("after {last}, without the end-of-archive marker") });
            }
        };
        if header.iter().all(|b| *b == 0) {
            if count == 0 {
                return Err(Error::NotImage("the archive holds no file".into()));
            }
            return Ok(archive);
        }
        let header = Header::parse(&header).map_err(|e| match count {
            0 => Error::NotTar(e),
            _ => Error::Damaged(format!("the header after {last}: {e}")),
        })?;
        count += 1;
        let size = pax_size.take().unwrap_or(header.size);
        let name = normalise(&long_name.take().unwrap_or_else(|| header.name.clone()));
        let padded = size.div_ceil(BLOCK as u64) * BLOCK as u64;
        let place = |done: u64| format!("inside {name:?}, after {done} of its {size} bytes");
        match header.kind {
            b'x' | b'g' | b'L' | b'K' => {
                if size > MAX_DOCUMENT {
                    return Err(Error::Damaged(format!("a metadata entry of {size} bytes after {last}")));
                }
                let data = match body.exact(size as usize).await? {
                    Ok(d) => d,
                    Err(done) => {
                        return Err(Error::Truncated { place: format!("inside a metadata entry, after {done} bytes") });
                    }
                };
                if !body.skip(padded - size).await? {
                    return Err(Error::Truncated { place: "inside a metadata entry's padding".into() });
                }
                match header.kind {
                    b'x' => {
                        let records = pax_records(&data)
                            .map_err(|e| Error::Damaged(format!("a PAX header after {last}: {e}")))?;
                        for (key, value) in records {
                            match key.as_str() {
                                "path" => long_name = Some(value),
                                "linkpath" => long_link = Some(value),
                                "size" => {
                                    pax_size = Some(value.parse().map_err(|_| {
                                        Error::Damaged(format!("a PAX header after {last} gives size {value:?}"))
                                    })?)
                                }
                                _ => {}
                            }
                        }
                    }
                    b'L' => long_name = Some(c_string(&data)),
                    b'K' => long_link = Some(c_string(&data)),
                    // A global PAX header sets defaults no docker save archive relies on.
                    _ => {}
                }
                continue;
            }
            b'0' | 0 | b'7' => {
                let spooled = spool(&mut body, dir, count, size, &place).await?;
                if !body.skip(padded - size).await? {
                    return Err(Error::Truncated { place: format!("inside the padding after {name:?}") });
                }
                archive.entries.insert(name.clone(), Entry::File(spooled));
            }
            b'1' | b'2' => {
                let target = long_link.take().unwrap_or_else(|| header.link.clone());
                let resolved = if header.kind == b'2' { resolve(&name, &target) } else { normalise(&target) };
                if !body.skip(padded).await? {
                    return Err(Error::Truncated { place: place(0) });
                }
                archive.entries.insert(name.clone(), Entry::Link(resolved));
            }
            // Directories and anything else carry nothing an image needs.
            _ => {
                if !body.skip(padded).await? {
                    return Err(Error::Truncated { place: place(0) });
                }
            }
        }
        long_link = None;
        last = format!("{name:?}");
    }
}

/// Copies the next `size` bytes of the body into a new file of `dir`, hashing them.
async fn spool<S, E>(
    body: &mut Body<S>,
    dir: &Path,
    index: usize,
    size: u64,
    place: &(dyn Fn(u64) -> String + Sync),
) -> Result<Spooled>
where
    S: Stream<Item = Result<Bytes, E>> + Unpin,
    E: std::fmt::Display,
{
    let path = dir.join(format!("entry-{index}"));
    let failed = |source| Error::Spool { path: path.clone(), source };
    let mut file = tokio::fs::File::create(&path).await.map_err(failed)?;
    let mut hash = ring::digest::Context::new(&ring::digest::SHA256);
    let mut head = Vec::with_capacity(4);
    let mut done = 0u64;
    while done < size {
        let want = usize::try_from(size - done).unwrap_or(usize::MAX);
        let Some(mut chunk) = body.next(want).await? else {
            return Err(Error::Truncated { place: place(done) });
        };
        if head.len() < 4 {
            let take = (4 - head.len()).min(chunk.len());
            head.extend_from_slice(&chunk[..take]);
        }
        hash.update(&chunk);
        done += chunk.len() as u64;
        while chunk.has_remaining() {
            file.write_all_buf(&mut chunk).await.map_err(failed)?;
        }
    }
    file.flush().await.map_err(failed)?;
    let compression = match head.as_slice() {
        [0x1f, 0x8b, ..] => Compression::Gzip,
        [0x28, 0xb5, 0x2f, 0xfd] => Compression::Zstd,
        _ => Compression::None,
    };
    Ok(Spooled { path, size, digest: format!("sha256:{}", hex(hash.finish().as_ref())), compression })
}

/// The fields of a ustar (or GNU) header this reader uses.
struct Header {
    name: String,
    link: String,
    size: u64,
    kind: u8,
}

impl Header {
    fn parse(b: &[u8]) -> std::result::Result<Header, String> {
        let stored = octal(&b[148..156]).ok_or("its checksum field is not a number")?;
        let sum: u64 =
            b.iter().enumerate().map(|(i, v)| if (148..156).contains(&i) { 32 } else { u64::from(*v) }).sum();
        if stored != sum {
            return Err(format!("its checksum is {stored}, the header sums to {sum}"));
        }
        let size = if b[124] & 0x80 != 0 {
            // GNU base-256 for sizes past 8 GiB.
            b[125..136].iter().fold(0u64, |n, v| n.saturating_mul(256).saturating_add(u64::from(*v)))
        } else {
            octal(&b[124..136]).ok_or("its size field is not a number")?
        };
        let mut name = c_string(&b[0..100]);
        if &b[257..263] == b"ustar\0" {
            let prefix = c_string(&b[345..500]);
            if !prefix.is_empty() {
                name = format!("{prefix}/{name}");
            }
        }
        Ok(Header { name, link: c_string(&b[157..257]), size, kind: b[156] })
    }
}

/// An octal number field (NUL or space terminated, possibly space padded).
fn octal(field: &[u8]) -> Option<u64> {
    let text: String = field.iter().take_while(|b| **b != 0).map(|b| *b as char).collect();
    let text = text.trim();
    if text.is_empty() {
        return Some(0);
    }
    u64::from_str_radix(text, 8).ok()
}

fn c_string(field: &[u8]) -> String {
    let end = field.iter().position(|b| *b == 0).unwrap_or(field.len());
    String::from_utf8_lossy(&field[..end]).into_owned()
}

/// The `key=value` records of a PAX extended header (`"%d %s=%s\n"`).
fn pax_records(mut data: &[u8]) -> std::result::Result<Vec<(String, String)>, String> {
    let mut out = Vec::new();
    while !data.is_empty() {
        let space = data.iter().position(|b| *b == b' ').ok_or("a record has no length")?;
        let len: usize = std::str::from_utf8(&data[..space])
            .ok()
            .and_then(|s| s.parse().ok())
            .ok_or("a record's length is not a number")?;
        if len <= space + 1 || len > data.len() || data[len - 1] != b'\n' {
            return Err("a record's length does not match it".into());
        }
        let record = String::from_utf8_lossy(&data[space + 1..len - 1]).into_owned();
        let (key, value) = record.split_once('=').ok_or("a record has no '='")?;
        out.push((key.to_string(), value.to_string()));
        data = &data[len..];
    }
    Ok(out)
}

/// A name without `./`, repeated or trailing slashes.
fn normalise(name: &str) -> String {
    let mut parts: Vec<&str> = Vec::new();
    for part in name.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            p => parts.push(p),
        }
    }
    parts.join("/")
}

/// The archive name a symbolic link at `name` pointing to `target` refers to.
fn resolve(name: &str, target: &str) -> String {
    if target.starts_with('/') {
        return normalise(target);
    }
    let dir = name.rsplit_once('/').map(|(d, _)| d).unwrap_or("");
    normalise(&format!("{dir}/{target}"))
}

pub(crate) fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// An entry of `manifest.json`.
#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct ManifestEntry {
    config: String,
    #[serde(default)]
    repo_tags: Option<Vec<String>>,
    layers: Vec<String>,
}

#[derive(Deserialize)]
struct Descriptor {
    #[serde(rename = "mediaType", default)]
    media_type: String,
    digest: String,
    #[serde(default)]
    annotations: HashMap<String, String>,
}

#[derive(Deserialize)]
struct OciIndex {
    manifests: Vec<Descriptor>,
}

#[derive(Deserialize)]
struct OciManifest {
    config: Descriptor,
    layers: Vec<Descriptor>,
}

/// What an image config must say about its layers.
#[derive(Deserialize)]
struct ImageConfig {
    rootfs: RootFs,
}

#[derive(Deserialize)]
struct RootFs {
    diff_ids: Vec<String>,
}

impl Archive {
    /// The spooled file at `name`, following links.
    fn file(&self, name: &str) -> Option<&Spooled> {
        let mut name = normalise(name);
        for _ in 0..16 {
            match self.entries.get(&name)? {
                Entry::File(f) => return Some(f),
                Entry::Link(target) => name = target.clone(),
            }
        }
        None
    }

    /// The file at `name`, or an error naming what was looking for it.
    fn need(&self, name: &str, what: &str) -> Result<&Spooled> {
        self.file(name).ok_or_else(|| Error::Damaged(format!("{what} {name:?} is missing from the archive")))
    }

    /// A small JSON document of the archive.
    async fn document<T: serde::de::DeserializeOwned>(&self, file: &Spooled, name: &str) -> Result<T> {
        if file.size > MAX_DOCUMENT {
            return Err(Error::Damaged(format!("{name} is {} bytes, too large for a JSON document", file.size)));
        }
        let bytes =
            tokio::fs::read(&file.path).await.map_err(|source| Error::Spool { path: file.path.clone(), source })?;
        serde_json::from_slice(&bytes)
            .map_err(|e| Error::Damaged(format!("{name} is not what docker save writes: {e}")))
    }

    /// The one image of the archive, checked: every file it names is there, and each
    /// uncompressed layer is the one its config's `rootfs.diff_ids` names.
    pub async fn image(&self) -> Result<Image> {
        let oci = self.file("oci-layout").is_some();
        let (config, layers, repo_tags) = if let Some(manifest) = self.file("manifest.json") {
            let entries: Vec<ManifestEntry> = self.document(manifest, "manifest.json").await?;
            let entry = match entries.as_slice() {
                [one] => one,
                [] => return Err(Error::NotImage("manifest.json lists no image".into())),
                many => {
                    return Err(Error::NotImage(format!(
                        "manifest.json lists {} images; save and upload one image at a time",
                        many.len()
                    )));
                }
            };
            let config = self.need(&entry.config, "the image config")?.clone();
            let layers = entry.layers.iter().map(|l| self.need(l, "the layer").cloned()).collect::<Result<Vec<_>>>()?;
            (config, layers, entry.repo_tags.clone().unwrap_or_default())
        } else if let Some(index) = self.file("index.json") {
            let index: OciIndex = self.document(index, "index.json").await?;
            let manifest = match index.manifests.as_slice() {
                [one] => one,
                [] => return Err(Error::NotImage("index.json lists no image".into())),
                many => {
                    return Err(Error::NotImage(format!(
                        "index.json lists {} manifests; upload an archive of one image",
                        many.len()
                    )));
                }
            };
            if manifest.media_type.contains("index") || manifest.media_type.contains("manifest.list") {
                return Err(Error::NotImage(
                    "index.json points to a multi-platform index; save a single-platform image".into(),
                ));
            }
            let file = self.need(&blob_path(&manifest.digest)?, "the image manifest")?;
            let m: OciManifest = self.document(file, "the image manifest").await?;
            let config = self.need(&blob_path(&m.config.digest)?, "the image config")?.clone();
            let layers = m
                .layers
                .iter()
                .map(|l| Ok(self.need(&blob_path(&l.digest)?, "the layer")?.clone()))
                .collect::<Result<Vec<_>>>()?;
            let tags = manifest
                .annotations
                .get("io.containerd.image.name")
                .or_else(|| manifest.annotations.get("org.opencontainers.image.ref.name"))
                .cloned()
                .into_iter()
                .collect();
            (config, layers, tags)
        } else {
            return Err(Error::NotImage("it has neither manifest.json nor index.json".into()));
        };
        let image_config: ImageConfig = self.document(&config, "the image config").await?;
        if image_config.rootfs.diff_ids.len() != layers.len() {
            return Err(Error::Damaged(format!(
                "the image config names {} layers, the manifest {}",
                image_config.rootfs.diff_ids.len(),
                layers.len()
            )));
        }
        for (i, (layer, diff_id)) in layers.iter().zip(&image_config.rootfs.diff_ids).enumerate() {
            if layer.compression == Compression::None && layer.digest != *diff_id {
                return Err(Error::Damaged(format!(
                    "layer {} has digest {}, but the image config says {diff_id}",
                    i + 1,
                    layer.digest
                )));
            }
        }
        Ok(Image { config, layers, repo_tags, oci })
    }
}

/// Where the OCI layout keeps the blob of `digest`.
fn blob_path(digest: &str) -> Result<String> {
    match digest.split_once(':') {
        Some((alg, hex)) if !alg.is_empty() && !hex.is_empty() && !hex.contains('/') && !alg.contains('/') => {
            Ok(format!("blobs/{alg}/{hex}"))
        }
        _ => Err(Error::Damaged(format!("{digest:?} is not a digest"))),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    /// A ustar archive of `files` (name, content), with the end marker when `end`.
    pub(crate) fn tar(files: &[(&str, &[u8])], end: bool) -> Vec<u8> {
        let mut out = Vec::new();
        for (name, data) in files {
            out.extend(header(name, data.len() as u64, b'0', ""));
            out.extend_from_slice(data);
            out.resize(out.len().div_ceil(BLOCK) * BLOCK, 0);
        }
        if end {
            out.extend([0u8; 2 * BLOCK]);
        }
        out
    }

    fn header(name: &str, size: u64, kind: u8, link: &str) -> Vec<u8> {
        let mut h = vec![0u8; BLOCK];
        h[..name.len()].copy_from_slice(name.as_bytes());
        h[100..107].copy_from_slice(b"0000644");
        h[124..135].copy_from_slice(format!("{size:011o}").as_bytes());
        h[156] = kind;
        h[157..157 + link.len()].copy_from_slice(link.as_bytes());
        h[257..263].copy_from_slice(b"ustar\0");
        h[263..265].copy_from_slice(b"00");
        h[148..156].copy_from_slice(b"        ");
        let sum: u32 = h.iter().map(|b| u32::from(*b)).sum();
        h[148..155].copy_from_slice(format!("{sum:06o}\0").as_bytes());
        h
    }

    fn sha(data: &[u8]) -> String {
        format!("sha256:{}", hex(ring::digest::digest(&ring::digest::SHA256, data).as_ref()))
    }

    fn chunks(data: Vec<u8>, size: usize) -> impl Stream<Item = Result<Bytes, std::io::Error>> + Unpin {
        let parts: Vec<_> = data.chunks(size).map(|c| Ok(Bytes::copy_from_slice(c))).collect();
        futures::stream::iter(parts)
    }

    /// A legacy-layout archive of one image, its layer before manifest.json.
    fn legacy(layer: &[u8]) -> Vec<u8> {
        let config = format!(r#"{{"rootfs":{{"type":"layers","diff_ids":["{}"]}}}}"#, sha(layer));
        let manifest = r#"[{"Config":"abc.json","RepoTags":["127.0.0.1:5000/hello:v1"],"Layers":["l1/layer.tar"]}]"#;
        tar(&[("l1/layer.tar", layer), ("abc.json", config.as_bytes()), ("manifest.json", manifest.as_bytes())], true)
    }

    #[tokio::test]
    async fn a_legacy_archive_in_small_chunks_gives_its_image() {
        let dir = tempfile::tempdir().unwrap();
        let layer = vec![7u8; 3000];
        let archive = read(chunks(legacy(&layer), 100), 1 << 20, dir.path()).await.unwrap();
        let image = archive.image().await.unwrap();
        assert_eq!(image.repo_tags, ["127.0.0.1:5000/hello:v1"]);
        assert_eq!(image.layers.len(), 1);
        assert_eq!(image.layers[0].digest, sha(&layer));
        assert_eq!(image.layers[0].size, 3000);
        assert_eq!(std::fs::read(&image.layers[0].path).unwrap(), layer);
        assert!(!image.oci);
    }

    #[tokio::test]
    async fn an_oci_layout_without_manifest_json_gives_its_image() {
        let dir = tempfile::tempdir().unwrap();
        let layer = b"gzip?".to_vec();
        let config = format!(r#"{{"rootfs":{{"diff_ids":["{}"]}}}}"#, sha(&layer));
        let manifest = format!(
            r#"{{"schemaVersion":2,"config":{{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"{}","size":1}},"layers":[{{"mediaType":"application/vnd.oci.image.layer.v1.tar","digest":"{}","size":5}}]}}"#,
            sha(config.as_bytes()),
            sha(&layer)
        );
        let index = format!(
            r#"{{"schemaVersion":2,"manifests":[{{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"{}","size":1,"annotations":{{"io.containerd.image.name":"docker.io/library/app:v2"}}}}]}}"#,
            sha(manifest.as_bytes())
        );
        let blob = |d: &[u8]| format!("blobs/sha256/{}", &sha(d)[7..]);
        let (lb, cb, mb) = (blob(&layer), blob(config.as_bytes()), blob(manifest.as_bytes()));
        let data = tar(
            &[
                ("oci-layout", br#"{"imageLayoutVersion":"1.0.0"}"#),
                (&lb, &layer),
                (&cb, config.as_bytes()),
                (&mb, manifest.as_bytes()),
                ("index.json", index.as_bytes()),
            ],
            true,
        );
        let image = read(chunks(data, 512), 1 << 20, dir.path()).await.unwrap().image().await.unwrap();
        assert!(image.oci);
        assert_eq!(image.repo_tags, ["docker.io/library/app:v2"]);
        assert_eq!(image.config.digest, sha(config.as_bytes()));
        assert_eq!(image.layers[0].digest, sha(&layer));
    }

    #[tokio::test]
    async fn a_symlinked_layer_is_followed() {
        let dir = tempfile::tempdir().unwrap();
        let layer = b"layer".to_vec();
        let config = format!(r#"{{"rootfs":{{"diff_ids":["{0}","{0}"]}}}}"#, sha(&layer));
        let manifest = r#"[{"Config":"c.json","Layers":["a/layer.tar","b/layer.tar"]}]"#;
        let mut data = tar(&[("a/layer.tar", &layer)], false);
        data.extend(header("b/layer.tar", 0, b'2', "../a/layer.tar"));
        data.extend(tar(&[("c.json", config.as_bytes()), ("manifest.json", manifest.as_bytes())], true));
        let image = read(chunks(data, 4096), 1 << 20, dir.path()).await.unwrap().image().await.unwrap();
        assert_eq!(image.layers.len(), 2);
        assert_eq!(image.layers[1].digest, sha(&layer));
        assert!(image.repo_tags.is_empty());
    }

    #[tokio::test]
    async fn broken_archives_say_what_is_wrong() {
        let dir = tempfile::tempdir().unwrap();
        let good = legacy(&[1u8; 2000]);
        let cut = good[..1500].to_vec();
        let e = read(chunks(cut, 700), 1 << 20, dir.path()).await.unwrap_err();
        assert!(
            e.to_string().contains("truncated: it ends inside \"l1/layer.tar\", after 988 of its 2000 bytes"),
            "{e}"
        );

        let no_end = good[..good.len() - 2 * BLOCK].to_vec();
        let e = read(chunks(no_end, 700), 1 << 20, dir.path()).await.unwrap_err();
        assert!(e.to_string().contains("after \"manifest.json\", without the end-of-archive marker"), "{e}");

        let e = read(chunks(good.clone(), 700), 1000, dir.path()).await.unwrap_err();
        assert!(matches!(e, Error::TooLarge { limit: 1000 }), "{e}");

        let e = read(chunks(b"{\"not\": \"a tar\"}".repeat(64), 700), 1 << 20, dir.path()).await.unwrap_err();
        assert!(e.to_string().starts_with("the archive is not a tar file"), "{e}");

        let mut bad_layer = good.clone();
        bad_layer[BLOCK + 10] ^= 1;
        let archive = read(chunks(bad_layer, 700), 1 << 20, dir.path()).await.unwrap();
        let e = archive.image().await.unwrap_err();
        assert!(e.to_string().contains("layer 1 has digest sha256:"), "{e}");

        let only_layer = tar(&[("l1/layer.tar", b"x")], true);
        let e = read(chunks(only_layer, 700), 1 << 20, dir.path()).await.unwrap().image().await.unwrap_err();
        assert!(e.to_string().contains("neither manifest.json nor index.json"), "{e}");
    }

    #[test]
    fn pax_records_and_names() {
        let records = pax_records(b"30 path=blobs/sha256/abcdefgh\n11 size=12\n").unwrap();
        assert_eq!(records[0], ("path".to_string(), "blobs/sha256/abcdefgh".to_string()));
        assert_eq!(records[1], ("size".to_string(), "12".to_string()));
        assert!(pax_records(b"99 path=x\n").is_err());
        assert_eq!(normalise("./a//b/"), "a/b");
        assert_eq!(resolve("b/layer.tar", "../a/layer.tar"), "a/layer.tar");
        assert!(blob_path("sha256:../../etc").is_err());
    }
}

//! `stratus image push` and `stratus image list`: uploads to the cluster's registry through
//! the API (`POST /apis/stratus.dev/v1/namespaces/{ns}/images`), streamed from a file or from
//! `docker save`, with progress on stderr.

use std::io::Write;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use futures::{Stream, StreamExt};
use http_body_util::{BodyExt, StreamBody};
use hyper::body::Frame;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use serde_json::Value;
use tokio::io::AsyncReadExt;

use super::Ctx;
use crate::Io;
use crate::args::{ImageCommand, ImageListArgs, ImagePushArgs};
use crate::error::{Error, Result};
use crate::table;

type Body = http_body_util::combinators::UnsyncBoxBody<Bytes, std::io::Error>;

pub(crate) async fn run(ctx: &Ctx, cmd: ImageCommand, io: &mut Io) -> Result<()> {
    match cmd {
        ImageCommand::Push(args) => push(ctx, args, io).await,
        ImageCommand::List(args) => list(ctx, args, io).await,
    }
}

async fn push(ctx: &Ctx, args: ImagePushArgs, io: &mut Io) -> Result<()> {
    let sent = Arc::new(AtomicU64::new(0));
    let path = std::path::Path::new(&args.source);
    let (chunks, total, docker) = if path.is_file() {
        let file =
            tokio::fs::File::open(path).await.map_err(|source| Error::Read { path: args.source.clone(), source })?;
        let total = file.metadata().await.map_err(|source| Error::Read { path: args.source.clone(), source })?.len();
        (reader_chunks(file).boxed(), Some(total), None)
    } else {
        let (chunks, child) = docker_save(&args.source)?;
        (chunks, None, Some(child))
    };
    let counted = {
        let sent = sent.clone();
        chunks.map(move |c| {
            if let Ok(bytes) = &c {
                sent.fetch_add(bytes.len() as u64, Ordering::Relaxed);
            }
            c.map(Frame::data)
        })
    };
    let mut query = Vec::new();
    if let Some(name) = &args.name {
        query.push(format!("name={}", encode(name)));
    }
    if let Some(tag) = &args.tag {
        query.push(format!("tag={}", encode(tag)));
    }
    let query = if query.is_empty() { String::new() } else { format!("?{}", query.join("&")) };
    let url = format!("{}/apis/stratus.dev/v1/namespaces/{}/images{query}", server(ctx).await, ctx.namespace.name);
    let mut request = http::Request::post(&url).header(http::header::CONTENT_TYPE, "application/x-tar");
    if let Some(total) = total {
        request = request.header(http::header::CONTENT_LENGTH, total);
    }
    let body: Body = BodyExt::boxed_unsync(StreamBody::new(counted));
    let request = request.body(body).map_err(|e| Error::Usage(format!("cannot make the request to {url}: {e}")))?;
    let what = format!("image {}", args.source);
    let answer = send(ctx, request);
    tokio::pin!(answer);
    let mut tick = tokio::time::interval(Duration::from_millis(500));
    let started = std::time::Instant::now();
    let result = loop {
        tokio::select! {
            result = &mut answer => break result,
            _ = tick.tick() => progress(io, sent.load(Ordering::Relaxed), total, started, false)?,
        }
    };
    progress(io, sent.load(Ordering::Relaxed), total, started, true)?;
    if let Some(docker) = docker {
        docker.finish().await?;
    }
    let (status, body) = result?;
    if !(200..300).contains(&status) {
        return Err(refusal(&what, status, &body));
    }
    writeln!(
        io.out,
        "pushed {} ({})",
        body["image"].as_str().unwrap_or_default(),
        body["digest"].as_str().unwrap_or_default()
    )?;
    Ok(())
}

async fn list(ctx: &Ctx, args: ImageListArgs, io: &mut Io) -> Result<()> {
    let url = format!("{}/apis/stratus.dev/v1/namespaces/{}/images", server(ctx).await, ctx.namespace.name);
    let request = http::Request::get(&url)
        .body(BodyExt::boxed_unsync(http_body_util::Empty::new().map_err(|never| match never {})))
        .map_err(|e| Error::Usage(format!("cannot make the request to {url}: {e}")))?;
    let (status, body) = send(ctx, request).await?;
    if status != 200 {
        return Err(refusal("images", status, &body));
    }
    let items = body["items"].as_array().cloned().unwrap_or_default();
    if args.output == "json" {
        writeln!(io.out, "{}", serde_json::to_string_pretty(&body).unwrap_or_default())?;
        return Ok(());
    }
    if items.is_empty() {
        writeln!(io.err, "No images found in {} namespace.", ctx.namespace.name)?;
        return Ok(());
    }
    let header: Vec<String> = ["NAME", "TAG", "IMAGE", "DIGEST"].map(String::from).into();
    let field = |i: &Value, k: &str| i[k].as_str().unwrap_or_default().to_string();
    let rows: Vec<Vec<String>> =
        items.iter().map(|i| vec![field(i, "name"), field(i, "tag"), field(i, "image"), field(i, "digest")]).collect();
    io.out.write_all(table::render(&header, &rows, false).as_bytes())?;
    Ok(())
}

/// The API server to send an image request to: with several (`--server https://a,https://b`),
/// the first that answers a call, as every other command's.
async fn server(ctx: &Ctx) -> String {
    if ctx.server.contains(',') {
        // Any answer will do, a refusal too: only a server that cannot be reached is passed over.
        let _ = ctx.client.who_am_i().await;
    }
    ctx.client.endpoint().to_string()
}

/// Sends `request` with the context's token, verifying an HTTPS server with its CA; the status
/// and the JSON answer.
async fn send(ctx: &Ctx, mut request: http::Request<Body>) -> Result<(u16, Value)> {
    if let Some(token) = &ctx.token {
        let value = format!("Bearer {token}")
            .parse()
            .map_err(|_| Error::Unauthenticated("the token is not a valid header value".into()))?;
        request.headers_mut().insert(http::header::AUTHORIZATION, value);
    }
    let builder = hyper_rustls::HttpsConnectorBuilder::new();
    let builder = match &ctx.ca_pem {
        Some(pem) => builder.with_tls_config(
            stratus_support::tls::client_config(pem)
                .map_err(|e| Error::Usage(format!("the certificate authority of {}: {e}", ctx.server)))?,
        ),
        None => builder
            .with_provider_and_native_roots(stratus_support::tls::provider())
            .map_err(|e| Error::Usage(format!("cannot load the system's certificate authorities: {e}")))?,
    };
    let connector = builder.https_or_http().enable_http1().build();
    let client = Client::builder(TokioExecutor::new()).build::<_, Body>(connector);
    let response = client.request(request).await.map_err(|_| Error::Unreachable { endpoint: ctx.server.clone() })?;
    let status = response.status().as_u16();
    let bytes = response
        .into_body()
        .collect()
        .await
        .map_err(|_| Error::Unreachable { endpoint: ctx.server.clone() })?
        .to_bytes();
    let body = serde_json::from_slice(&bytes)
        .unwrap_or_else(|_| serde_json::json!({"message": String::from_utf8_lossy(&bytes).trim().to_string()}));
    Ok((status, body))
}

/// The server's refusal, in its own words.
fn refusal(what: &str, status: u16, body: &Value) -> Error {
    let message = body["message"].as_str().unwrap_or("no reason given").to_string();
    match status {
        401 => Error::Unauthenticated(message),
        _ => Error::Usage(format!("{what}: {message} ({status})")),
    }
}

/// Prints `sent` bytes (of `total`) to stderr: redrawn in place on a terminal, else only the
/// last line.
fn progress(io: &mut Io, sent: u64, total: Option<u64>, started: std::time::Instant, done: bool) -> Result<()> {
    if !io.err_is_terminal && !done {
        return Ok(());
    }
    let mib = |b: u64| b as f64 / (1024.0 * 1024.0);
    let rate = mib(sent) / started.elapsed().as_secs_f64().max(0.001);
    let line = match total {
        Some(t) if t > 0 => {
            format!(
                "sent {:.1} / {:.1} MiB ({:.0}%), {rate:.1} MiB/s",
                mib(sent),
                mib(t),
                sent as f64 * 100.0 / t as f64
            )
        }
        _ => format!("sent {:.1} MiB, {rate:.1} MiB/s", mib(sent)),
    };
    if io.err_is_terminal {
        write!(io.err, "\r\x1b[2K{line}")?;
        if done {
            writeln!(io.err)?;
        }
    } else {
        writeln!(io.err, "{line}")?;
    }
    io.err.flush()?;
    Ok(())
}

/// The chunks of `reader`, read as the body is sent.
fn reader_chunks<R: tokio::io::AsyncRead + Unpin + Send + 'static>(
    reader: R,
) -> impl Stream<Item = std::io::Result<Bytes>> + Send + 'static {
    futures::stream::unfold(Some(reader), |reader| async move {
        let mut reader = reader?;
        let mut buf = vec![0u8; 256 * 1024];
        match reader.read(&mut buf).await {
            Ok(0) => None,
            Ok(n) => {
                buf.truncate(n);
                Some((Ok(Bytes::from(buf)), Some(reader)))
            }
            Err(e) => Some((Err(e), None)),
        }
    })
}

/// `docker save IMAGE` running, its output streamed.
struct DockerSave {
    image: String,
    child: tokio::process::Child,
}

impl DockerSave {
    /// Waits for `docker save` to end; an error with its stderr when it failed.
    async fn finish(mut self) -> Result<()> {
        let mut stderr = String::new();
        if let Some(mut err) = self.child.stderr.take() {
            let _ = err.read_to_string(&mut stderr).await;
        }
        let status = self.child.wait().await.map_err(|e| Error::Usage(format!("docker save {}: {e}", self.image)))?;
        if status.success() {
            return Ok(());
        }
        Err(Error::Usage(format!(
            "{:?} is not a file, and `docker save {}` failed ({status}): {}",
            self.image,
            self.image,
            stderr.trim()
        )))
    }
}

/// Starts `docker save IMAGE`; its output as a stream.
fn docker_save(image: &str) -> Result<(futures::stream::BoxStream<'static, std::io::Result<Bytes>>, DockerSave)> {
    let mut child = tokio::process::Command::new("docker")
        .args(["save", image])
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| {
            Error::Usage(format!("{image:?} is not a file, and `docker save` cannot be run to get it as an image: {e}"))
        })?;
    let stdout = child
        .stdout
        .take()
        .ok_or_else(|| Error::Usage(format!("docker save {image}: its output could not be read")))?;
    Ok((reader_chunks(stdout).boxed(), DockerSave { image: image.to_string(), child }))
}

/// Percent-encodes a query value.
fn encode(value: &str) -> String {
    value
        .bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

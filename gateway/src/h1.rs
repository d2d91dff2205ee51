//! Upstream HTTP/1.1 exchanges driven by the task that serves the client.
//!
//! hyper's pooled client runs a task per upstream connection and hands it each request and
//! response through channels: a pool checkout, a task and two more wake-ups per request. For the
//! common request (no body, no upgrade, an idempotent method) the gateway instead writes the
//! request and reads the response on the upstream connection itself, in the client connection's
//! task, as nginx's workers drive both connections of a request; idle connections wait in a pool
//! of the proxy thread's own ([`H1Pool`]), keyed by endpoint address. Anything else (a body to
//! stream, an upgrade, an h2c endpoint) goes through hyper's client as before.
//!
//! Responses are read by RFC 9112 §6.3: no body for HEAD, 1xx, 204 and 304; chunked when it is
//! the last transfer coding; else `Content-Length`; else until the endpoint closes. Interim
//! responses (1xx but 101) are skipped. A connection is pooled again only when its response was
//! read to the end with nothing after it, and neither side asked to close.

use std::collections::HashMap;
use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll, ready};
use std::time::Duration;

use bytes::{Buf, Bytes, BytesMut};
use http::header::{CONNECTION, CONTENT_LENGTH, HOST, TRANSFER_ENCODING};
use http::{HeaderMap, HeaderName, HeaderValue, Method, Response, StatusCode};
use hyper::body::{Body, Frame, SizeHint};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::Instant;

use crate::headers::has_token;

/// How long an idle upstream connection is kept (as the pooled client's idle timeout).
const IDLE_TIMEOUT: Duration = Duration::from_secs(90);
/// The most idle connections kept per endpoint.
const MAX_IDLE_PER_ENDPOINT: usize = 1024;
/// How often connections idle for longer than [`IDLE_TIMEOUT`] are closed, at most.
const SWEEP_PERIOD: Duration = Duration::from_secs(10);
/// The largest response head read (status line and headers): hyper's default buffer limit,
/// which the requests that take hyper's client have.
const MAX_HEAD: usize = 8192 + 4096 * 100;
/// The most response headers read.
const MAX_HEADERS: usize = 100;
/// The longest chunk-size line (with extensions) read.
const MAX_CHUNK_LINE: usize = 4096;
/// How much is read from an endpoint at once.
const READ_SIZE: usize = 16 * 1024;

/// Why an exchange failed.
#[derive(Debug, thiserror::Error)]
pub(crate) enum H1Error {
    /// Nothing was sent: connecting failed or took too long.
    #[error("connecting to {address} failed")]
    Connect {
        address: String,
        #[source]
        source: io::Error,
    },
    #[error("the exchange with {address} broke")]
    Io {
        address: String,
        #[source]
        source: io::Error,
    },
    #[error("{address} closed the connection before answering")]
    Closed { address: String },
    #[error("{address} sent a response that is not valid HTTP/1.1: {why}")]
    Invalid { address: String, why: String },
}

impl H1Error {
    pub(crate) fn is_connect(&self) -> bool {
        matches!(self, H1Error::Connect { .. })
    }
}

/// Idle upstream connections by endpoint address, for the connections of one proxy thread.
pub(crate) struct H1Pool {
    connect_timeout: Duration,
    idle: Mutex<Idle>,
}

struct Idle {
    by_address: HashMap<Box<str>, Vec<(TcpStream, Instant)>>,
    swept: Instant,
}

/// Whether an idle connection has nothing to read: the endpoint neither closed it nor wrote to
/// it. Without a system call unless the reactor saw the socket readable since a read last
/// drained it; so a byte that came a moment ago, before the reactor looked, is not seen (as in
/// hyper's pool and nginx's, which also learn of it from the event loop).
fn quiet(stream: &TcpStream) -> bool {
    matches!(stream.try_read(&mut [0; 1]), Err(e) if e.kind() == io::ErrorKind::WouldBlock)
}

impl Idle {
    /// Closes the connections idle for longer than [`IDLE_TIMEOUT`], every [`SWEEP_PERIOD`] at
    /// most, so that those to endpoints gone meanwhile are not kept open.
    fn sweep(&mut self, now: Instant) {
        if now.duration_since(self.swept) < SWEEP_PERIOD {
            return;
        }
        self.swept = now;
        self.by_address.retain(|_, list| {
            list.retain(|(stream, since)| now.duration_since(*since) < IDLE_TIMEOUT && quiet(stream));
            !list.is_empty()
        });
    }
}

impl H1Pool {
    pub(crate) fn new(connect_timeout: Duration) -> H1Pool {
        let idle = Idle { by_address: HashMap::new(), swept: Instant::now() };
        H1Pool { connect_timeout, idle: Mutex::new(idle) }
    }

    // Nothing panics under the lock but a failed allocation.
    fn idle(&self) -> std::sync::MutexGuard<'_, Idle> {
        self.idle.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The connection used last to `address` that is still fresh and quiet. One the endpoint
    /// closed, or wrote to while it was idle (an unasked `408`, say, which must not be taken for
    /// the next request's answer), is closed instead, as nginx closes an idle upstream
    /// connection that becomes readable.
    fn checkout(&self, address: &str) -> Option<TcpStream> {
        let now = Instant::now();
        let mut idle = self.idle();
        idle.sweep(now);
        let list = idle.by_address.get_mut(address)?;
        while let Some((stream, since)) = list.pop() {
            if now.duration_since(since) < IDLE_TIMEOUT && quiet(&stream) {
                return Some(stream);
            }
        }
        None
    }

    /// Keeps `stream`, whose last exchange with `address` ended cleanly, for the next request.
    fn checkin(&self, address: &str, stream: TcpStream) {
        let now = Instant::now();
        let mut idle = self.idle();
        idle.sweep(now);
        match idle.by_address.get_mut(address) {
            Some(list) if list.len() >= MAX_IDLE_PER_ENDPOINT => {}
            Some(list) => list.push((stream, now)),
            None => {
                idle.by_address.insert(address.into(), vec![(stream, now)]);
            }
        }
    }

    async fn connect(&self, address: &str) -> Result<TcpStream, H1Error> {
        let failed = |source| H1Error::Connect { address: address.to_string(), source };
        let stream = tokio::time::timeout(self.connect_timeout, TcpStream::connect(address))
            .await
            .map_err(|_| failed(io::Error::new(io::ErrorKind::TimedOut, "connect timed out")))?
            .map_err(failed)?;
        stream.set_nodelay(true).map_err(failed)?;
        Ok(stream)
    }

    /// Sends a request without a body (`head`, as [`request_head`] writes it) to `address` and
    /// reads the response's head; the body follows as the response's body is polled. A pooled
    /// connection that turns out closed before any of the response came is replaced by a new
    /// one once: the request, idempotent and without a body, is sent again on it. As in nginx,
    /// whose failures on a cached connection do not count against `proxy_next_upstream_tries`,
    /// this is not one of the gateway's retries on another endpoint (`max_retries`).
    pub(crate) async fn send(
        self: &Arc<Self>,
        address: &str,
        method: &Method,
        head: &[u8],
    ) -> Result<Response<H1Body>, H1Error> {
        if let Some(stream) = self.checkout(address) {
            match exchange(self, address, stream, method, head).await {
                Err(Stale) => {}
                Ok(result) => return result,
            }
        }
        let stream = self.connect(address).await?;
        match exchange(self, address, stream, method, head).await {
            Ok(result) => result,
            Err(Stale) => Err(H1Error::Closed { address: address.to_string() }),
        }
    }
}

/// A pooled connection failed before any of the response came: it had been closed.
struct Stale;

async fn exchange(
    pool: &Arc<H1Pool>,
    address: &str,
    mut stream: TcpStream,
    method: &Method,
    head: &[u8],
) -> Result<Result<Response<H1Body>, H1Error>, Stale> {
    let broke = |source| H1Error::Io { address: address.to_string(), source };
    if stream.write_all(head).await.is_err() {
        return Err(Stale);
    }
    let mut buf = BytesMut::with_capacity(4096);
    let mut received = false;
    loop {
        match stream.read_buf(&mut buf).await {
            Ok(0) | Err(_) if !received => return Err(Stale),
            Ok(0) => return Ok(Err(H1Error::Closed { address: address.to_string() })),
            Err(e) => return Ok(Err(broke(e))),
            Ok(_) => received = true,
        }
        match parse_head(&mut buf, method) {
            Ok(None) if buf.len() > MAX_HEAD => {
                return Ok(Err(invalid(address, format!("the response head is larger than {MAX_HEAD} bytes"))));
            }
            Ok(None) => {}
            Ok(Some(parsed)) => return Ok(Ok(respond(pool, address, stream, buf, parsed))),
            Err(why) => return Ok(Err(invalid(address, why))),
        }
    }
}

fn invalid(address: &str, why: impl Into<String>) -> H1Error {
    H1Error::Invalid { address: address.to_string(), why: why.into() }
}

/// A response head read, and how its body is framed.
struct Parsed {
    status: StatusCode,
    /// The endpoint's reason phrase when it is not the status's usual one, which the client
    /// gets too (as hyper's client keeps it).
    reason: Option<String>,
    headers: HeaderMap,
    framing: Framing,
    keep_alive: bool,
}

/// Parses the response head at the start of `buf` and takes it off; skips interim responses.
/// `None`: more is needed.
fn parse_head(buf: &mut BytesMut, method: &Method) -> Result<Option<Parsed>, String> {
    loop {
        let mut slots = [httparse::EMPTY_HEADER; MAX_HEADERS];
        let mut response = httparse::Response::new(&mut slots);
        let length = match response.parse(buf) {
            Ok(httparse::Status::Complete(length)) => length,
            Ok(httparse::Status::Partial) => return Ok(None),
            Err(e) => return Err(e.to_string()),
        };
        let code = response.code.unwrap_or_default();
        let status = StatusCode::from_u16(code).map_err(|_| format!("status {code} is not valid"))?;
        if status.is_informational() && status != StatusCode::SWITCHING_PROTOCOLS {
            buf.advance(length);
            continue;
        }
        let reason = response.reason.filter(|r| Some(*r) != status.canonical_reason()).map(str::to_string);
        // The head is copied once, and every value is a slice of that copy, not a copy each.
        let head = Bytes::copy_from_slice(&buf[..length]);
        let base = buf.as_ptr().addr();
        let mut headers = HeaderMap::with_capacity(response.headers.len());
        for h in response.headers.iter() {
            let name = HeaderName::from_bytes(h.name.as_bytes()).map_err(|_| format!("header name {:?}", h.name))?;
            let start = h.value.as_ptr().addr().wrapping_sub(base);
            let value = match start.checked_add(h.value.len()) {
                Some(end) if !h.value.is_empty() && end <= head.len() => {
                    HeaderValue::from_maybe_shared(head.slice(start..end))
                }
                _ => HeaderValue::from_bytes(h.value),
            };
            let value = value.map_err(|_| format!("the value of header {name}"))?;
            headers.append(name, value);
        }
        let http11 = response.version == Some(1);
        buf.advance(length);
        let close = headers.get_all(CONNECTION).iter().any(|v| has_token(v, "close"));
        // Both framings announced: the endpoint and the gateway may not agree on where the
        // body ends (RFC 9112 §6.1), so the connection serves no other request.
        let ambiguous = headers.contains_key(TRANSFER_ENCODING) && headers.contains_key(CONTENT_LENGTH);
        if !http11 && headers.contains_key(TRANSFER_ENCODING) {
            return Err("an HTTP/1.0 response has a Transfer-Encoding".into());
        }
        let framing = framing(status, method, &mut headers)?;
        // A 101 was not asked for on this path (no request that takes it asks to upgrade): the
        // connection speaks another protocol from here on.
        let keep_alive = http11
            && !close
            && !ambiguous
            && status != StatusCode::SWITCHING_PROTOCOLS
            && !matches!(framing, Framing::UntilClose);
        return Ok(Some(Parsed { status, reason, headers, framing, keep_alive }));
    }
}

/// How a response's body is delimited (RFC 9112 §6.3).
#[derive(Debug, PartialEq)]
enum Framing {
    Empty,
    Length(u64),
    Chunked,
    UntilClose,
}

fn framing(status: StatusCode, method: &Method, headers: &mut HeaderMap) -> Result<Framing, String> {
    if *method == Method::HEAD
        || status.is_informational()
        || status == StatusCode::NO_CONTENT
        || status == StatusCode::NOT_MODIFIED
    {
        return Ok(Framing::Empty);
    }
    if headers.contains_key(TRANSFER_ENCODING) {
        // The transfer coding wins over a Content-Length, which must not be passed on.
        headers.remove(CONTENT_LENGTH);
        let last = headers.get_all(TRANSFER_ENCODING).iter().next_back().and_then(|v| v.to_str().ok());
        let chunked = last.and_then(|v| v.rsplit(',').next()).is_some_and(|c| c.trim().eq_ignore_ascii_case("chunked"));
        return Ok(if chunked { Framing::Chunked } else { Framing::UntilClose });
    }
    let mut length = None;
    for value in headers.get_all(CONTENT_LENGTH) {
        for part in value.to_str().map_err(|_| "Content-Length is not a number".to_string())?.split(',') {
            let part = part.trim();
            // Digits only: `+5` or `0x5` parse elsewhere, and must not be passed on as they are.
            let n = Some(part)
                .filter(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()))
                .and_then(|p| p.parse::<u64>().ok())
                .ok_or_else(|| format!("Content-Length {part:?} is not a number"))?;
            if length.is_some_and(|l| l != n) {
                return Err("the response has two different Content-Lengths".into());
            }
            length = Some(n);
        }
    }
    // One value goes on to the client, written as the gateway read it.
    if let Some(n) = length {
        headers.insert(CONTENT_LENGTH, HeaderValue::from(n));
    }
    Ok(match length {
        Some(0) => Framing::Empty,
        Some(n) => Framing::Length(n),
        None => Framing::UntilClose,
    })
}

/// The response with its body; the connection goes back to the pool at once when the whole body
/// came with the head.
fn respond(
    pool: &Arc<H1Pool>,
    address: &str,
    stream: TcpStream,
    mut buf: BytesMut,
    parsed: Parsed,
) -> Response<H1Body> {
    let Parsed { status, reason, headers, framing, keep_alive } = parsed;
    let state = match framing {
        Framing::Empty => {
            if keep_alive && buf.is_empty() {
                pool.checkin(address, stream);
            }
            State::Done
        }
        Framing::Length(n) if buf.len() as u64 >= n => {
            let body = buf.split_to(usize::try_from(n).unwrap_or(usize::MAX)).freeze();
            if keep_alive && buf.is_empty() {
                pool.checkin(address, stream);
            }
            State::Whole(body)
        }
        Framing::Length(n) => State::Length { remaining: n, conn: Conn::new(pool, address, stream, buf, keep_alive) },
        Framing::Chunked => {
            State::Chunked { step: Chunk::Size, conn: Conn::new(pool, address, stream, buf, keep_alive) }
        }
        Framing::UntilClose => State::UntilClose(Conn::new(pool, address, stream, buf, false)),
    };
    let mut response = Response::new(H1Body { state });
    *response.status_mut() = status;
    *response.headers_mut() = headers;
    if let Some(reason) = reason.and_then(|r| hyper::ext::ReasonPhrase::try_from(r.into_bytes()).ok()) {
        response.extensions_mut().insert(reason);
    }
    response
}

/// Writes the head of a request without a body: `method path HTTP/1.1`, `headers`, and `Host`
/// from `host` when the headers have none.
pub(crate) fn request_head(method: &Method, path: &str, host: &str, headers: &HeaderMap) -> Vec<u8> {
    let mut head = Vec::with_capacity(256 + headers.len() * 48);
    head.extend_from_slice(method.as_str().as_bytes());
    head.push(b' ');
    head.extend_from_slice(path.as_bytes());
    head.extend_from_slice(b" HTTP/1.1\r\n");
    if !headers.contains_key(HOST) {
        head.extend_from_slice(b"host: ");
        head.extend_from_slice(host.as_bytes());
        head.extend_from_slice(b"\r\n");
    }
    for (name, value) in headers {
        head.extend_from_slice(name.as_str().as_bytes());
        head.extend_from_slice(b": ");
        head.extend_from_slice(value.as_bytes());
        head.extend_from_slice(b"\r\n");
    }
    head.extend_from_slice(b"\r\n");
    head
}

/// An upstream connection while its response's body is read.
struct Conn {
    pool: Arc<H1Pool>,
    address: Box<str>,
    stream: TcpStream,
    buf: BytesMut,
    keep_alive: bool,
}

impl Conn {
    fn new(pool: &Arc<H1Pool>, address: &str, stream: TcpStream, buf: BytesMut, keep_alive: bool) -> Conn {
        Conn { pool: Arc::clone(pool), address: address.into(), stream, buf, keep_alive }
    }

    /// Reads more into the buffer; `Ok(0)` at the end of the stream.
    fn poll_fill(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<usize>> {
        self.buf.reserve(READ_SIZE);
        loop {
            match self.stream.try_read_buf(&mut self.buf) {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => ready!(self.stream.poll_read_ready(cx))?,
                result => return Poll::Ready(result),
            }
        }
    }

    /// The body has been read to its end: the connection is pooled if it may be.
    fn finish(self) {
        if self.keep_alive && self.buf.is_empty() {
            self.pool.checkin(&self.address, self.stream);
        }
    }
}

/// The body of a response read by [`H1Pool::send`].
pub(crate) struct H1Body {
    state: State,
}

impl std::fmt::Debug for H1Body {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("H1Body").field("size_hint", &self.size_hint()).finish_non_exhaustive()
    }
}

enum State {
    Whole(Bytes),
    Length { remaining: u64, conn: Conn },
    Chunked { step: Chunk, conn: Conn },
    UntilClose(Conn),
    Done,
}

/// Where a chunked body's reading is.
#[derive(Clone, Copy)]
enum Chunk {
    /// At a chunk-size line.
    Size,
    /// In a chunk's data, with this much of it left.
    Data(u64),
    /// At the CRLF after a chunk's data.
    DataEnd,
    /// At the trailer section after the last chunk.
    Trailers,
}

fn unexpected_end() -> io::Error {
    io::Error::new(io::ErrorKind::UnexpectedEof, "the endpoint closed the connection before the body's end")
}

fn bad_chunk(why: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, format!("chunked body: {why}"))
}

impl Body for H1Body {
    type Data = Bytes;
    type Error = io::Error;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<io::Result<Frame<Bytes>>>> {
        let this = self.get_mut();
        loop {
            match &mut this.state {
                State::Done => return Poll::Ready(None),
                State::Whole(body) => {
                    let body = std::mem::take(body);
                    this.state = State::Done;
                    return Poll::Ready(Some(Ok(Frame::data(body))));
                }
                State::Length { remaining, conn } => {
                    if conn.buf.is_empty() {
                        match ready!(conn.poll_fill(cx)) {
                            Ok(0) => return this.fail(unexpected_end()),
                            Ok(_) => {}
                            Err(e) => return this.fail(e),
                        }
                    }
                    let take = conn.buf.len().min(usize::try_from(*remaining).unwrap_or(usize::MAX));
                    let data = conn.buf.split_to(take).freeze();
                    *remaining -= take as u64;
                    if *remaining == 0 {
                        this.finish();
                    }
                    return Poll::Ready(Some(Ok(Frame::data(data))));
                }
                State::UntilClose(conn) => {
                    if conn.buf.is_empty() {
                        match ready!(conn.poll_fill(cx)) {
                            Ok(0) => {
                                this.state = State::Done;
                                return Poll::Ready(None);
                            }
                            Ok(_) => {}
                            Err(e) => return this.fail(e),
                        }
                    }
                    let data = conn.buf.split().freeze();
                    return Poll::Ready(Some(Ok(Frame::data(data))));
                }
                State::Chunked { step, conn } => match decode_chunk(step, &mut conn.buf) {
                    Err(e) => return this.fail(e),
                    Ok(Some(Decoded::Data(data))) => return Poll::Ready(Some(Ok(Frame::data(data)))),
                    Ok(Some(Decoded::End(trailers))) => {
                        this.finish();
                        return Poll::Ready(trailers.map(|t| Ok(Frame::trailers(t))));
                    }
                    Ok(None) => match ready!(conn.poll_fill(cx)) {
                        Ok(0) => return this.fail(unexpected_end()),
                        Ok(_) => {}
                        Err(e) => return this.fail(e),
                    },
                },
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        matches!(self.state, State::Done)
    }

    fn size_hint(&self) -> SizeHint {
        match &self.state {
            State::Done => SizeHint::with_exact(0),
            State::Whole(body) => SizeHint::with_exact(body.len() as u64),
            State::Length { remaining, .. } => SizeHint::with_exact(*remaining),
            State::Chunked { .. } | State::UntilClose(_) => SizeHint::default(),
        }
    }
}

impl H1Body {
    /// The body ended where it should: its connection may serve another request.
    fn finish(&mut self) {
        match std::mem::replace(&mut self.state, State::Done) {
            State::Length { conn, .. } | State::Chunked { conn, .. } => conn.finish(),
            _ => {}
        }
    }

    /// The body cannot be read to its end: the connection is closed.
    fn fail(&mut self, e: io::Error) -> Poll<Option<io::Result<Frame<Bytes>>>> {
        self.state = State::Done;
        Poll::Ready(Some(Err(e)))
    }
}

/// The size a chunk-size line (without its CRLF) announces: hexadecimal digits, then optional
/// blanks and extensions (RFC 9112 §7.1.1). Nothing else is taken, so that the gateway cannot
/// read a chunk's end where the endpoint did not put it.
fn chunk_size(line: &[u8]) -> io::Result<u64> {
    if line.iter().any(|&b| b == b'\r' || b == b'\n') {
        return Err(bad_chunk("a chunk-size line has a bare CR or LF"));
    }
    let digits = line.iter().take_while(|b| b.is_ascii_hexdigit()).count();
    let rest = &line[digits..];
    let rest = &rest[rest.iter().take_while(|&&b| b == b' ' || b == b'\t').count()..];
    if digits == 0 || !(rest.is_empty() || rest[0] == b';') {
        return Err(bad_chunk("a chunk size is not hexadecimal"));
    }
    line[..digits].iter().try_fold(0u64, |size, &b| {
        let digit = u64::from((b as char).to_digit(16).unwrap_or_default());
        size.checked_mul(16).and_then(|s| s.checked_add(digit)).ok_or_else(|| bad_chunk("a chunk size is too large"))
    })
}

/// What a chunked body's buffer gave.
enum Decoded {
    Data(Bytes),
    /// The last chunk and the trailer section, with its fields if there were any.
    End(Option<HeaderMap>),
}

/// Takes what it can of a chunked body from `buf`; `None`: more must be read first.
fn decode_chunk(step: &mut Chunk, buf: &mut BytesMut) -> io::Result<Option<Decoded>> {
    loop {
        match *step {
            Chunk::Size => {
                let window = &buf[..buf.len().min(MAX_CHUNK_LINE)];
                let Some(end) = window.windows(2).position(|w| w == b"\r\n") else {
                    return match buf.len() >= MAX_CHUNK_LINE {
                        true => Err(bad_chunk("a chunk-size line is too long")),
                        false => Ok(None),
                    };
                };
                let size = chunk_size(&buf[..end])?;
                buf.advance(end + 2);
                *step = if size == 0 { Chunk::Trailers } else { Chunk::Data(size) };
            }
            Chunk::Data(left) => {
                if buf.is_empty() {
                    return Ok(None);
                }
                let take = buf.len().min(usize::try_from(left).unwrap_or(usize::MAX));
                let data = buf.split_to(take).freeze();
                let left = left - take as u64;
                *step = if left == 0 { Chunk::DataEnd } else { Chunk::Data(left) };
                return Ok(Some(Decoded::Data(data)));
            }
            Chunk::DataEnd => {
                if buf.len() < 2 {
                    return Ok(None);
                }
                if &buf[..2] != b"\r\n" {
                    return Err(bad_chunk("a chunk's data is longer than its size"));
                }
                buf.advance(2);
                *step = Chunk::Size;
            }
            Chunk::Trailers => {
                let mut slots = [httparse::EMPTY_HEADER; MAX_HEADERS];
                let (length, fields) = match httparse::parse_headers(buf, &mut slots) {
                    Ok(httparse::Status::Complete(parsed)) => parsed,
                    Ok(httparse::Status::Partial) if buf.len() > MAX_HEAD => {
                        return Err(bad_chunk("the trailer section is larger than 64 KiB"));
                    }
                    Ok(httparse::Status::Partial) => return Ok(None),
                    Err(e) => return Err(bad_chunk(&format!("the trailer section: {e}"))),
                };
                let mut trailers = HeaderMap::new();
                for field in fields {
                    // A field that makes no header is left out, as hyper's client leaves it.
                    if let (Ok(name), Ok(value)) =
                        (HeaderName::from_bytes(field.name.as_bytes()), HeaderValue::from_bytes(field.value))
                    {
                        trailers.append(name, value);
                    }
                }
                buf.advance(length);
                return Ok(Some(Decoded::End((!trailers.is_empty()).then_some(trailers))));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use http_body_util::BodyExt;
    use tokio::net::TcpListener;

    fn pool() -> Arc<H1Pool> {
        Arc::new(H1Pool::new(Duration::from_secs(2)))
    }

    /// An endpoint that answers each request on each connection with the next of `answers`,
    /// closing the connection after an answer ending in `None`; returns its address and the
    /// number of connections it accepted.
    async fn endpoint(answers: Vec<(&'static str, bool)>) -> (String, tokio::sync::watch::Receiver<usize>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap().to_string();
        let (accepted, count) = tokio::sync::watch::channel(0);
        tokio::spawn(async move {
            let mut answers = answers.into_iter();
            loop {
                let (mut stream, _) = listener.accept().await.unwrap();
                accepted.send_modify(|n| *n += 1);
                let mut buf = Vec::new();
                loop {
                    // Reads one request head.
                    while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
                        let mut chunk = [0; 1024];
                        let n = stream.read(&mut chunk).await.unwrap_or(0);
                        if n == 0 {
                            break;
                        }
                        buf.extend_from_slice(&chunk[..n]);
                    }
                    let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") else { break };
                    buf.drain(..end + 4);
                    let Some((answer, keep)) = answers.next() else { return };
                    stream.write_all(answer.as_bytes()).await.unwrap();
                    if !keep {
                        break;
                    }
                }
            }
        });
        (address, count)
    }

    async fn get(
        pool: &Arc<H1Pool>,
        address: &str,
        method: Method,
    ) -> (StatusCode, HeaderMap, Bytes, Option<HeaderMap>) {
        let head = request_head(&method, "/", "hello.default.localhost", &HeaderMap::new());
        let response = pool.send(address, &method, &head).await.unwrap();
        let (parts, body) = response.into_parts();
        let collected = body.collect().await.unwrap();
        let trailers = collected.trailers().cloned();
        (parts.status, parts.headers, collected.to_bytes(), trailers)
    }

    #[tokio::test]
    async fn reads_every_framing_and_reuses_the_connection_between_them() {
        let (address, accepted) = endpoint(vec![
            ("HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nhello", true),
            ("HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n3;x=1\r\nabc\r\n2\r\nde\r\n0\r\ngrpc-status: 0\r\n\r\n", true),
            ("HTTP/1.1 204 No Content\r\n\r\n", true),
            ("HTTP/1.1 200 OK\r\ncontent-length: 3\r\n\r\n", true),
            ("HTTP/1.1 200 OK\r\n\r\nuntil close", false),
        ])
        .await;
        let pool = pool();
        let (status, headers, body, _) = get(&pool, &address, Method::GET).await;
        assert_eq!(
            (status, headers["content-length"].to_str().unwrap(), &body[..]),
            (StatusCode::OK, "5", &b"hello"[..])
        );
        let (_, headers, body, trailers) = get(&pool, &address, Method::GET).await;
        assert_eq!(&body[..], b"abcde");
        assert_eq!(trailers.unwrap()["grpc-status"], "0");
        assert!(headers.contains_key("transfer-encoding"), "the proxy strips hop-by-hop headers, not this reader");
        let (status, _, body, _) = get(&pool, &address, Method::GET).await;
        assert_eq!((status, body.len()), (StatusCode::NO_CONTENT, 0));
        // HEAD: the Content-Length describes the GET's body, which is not sent.
        let (_, headers, body, _) = get(&pool, &address, Method::HEAD).await;
        assert_eq!((headers["content-length"].to_str().unwrap(), body.len()), ("3", 0));
        let (_, _, body, _) = get(&pool, &address, Method::GET).await;
        assert_eq!(&body[..], b"until close");
        assert_eq!(*accepted.borrow(), 1, "every exchange but the last left the connection reusable");
    }

    #[tokio::test]
    async fn a_pooled_connection_the_endpoint_closed_is_replaced() {
        // The first connection is closed after its answer although the response allowed
        // keep-alive, as an endpoint's idle timeout closes it.
        let (address, accepted) = endpoint(vec![
            ("HTTP/1.1 200 OK\r\ncontent-length: 1\r\n\r\na", false),
            ("HTTP/1.1 200 OK\r\ncontent-length: 1\r\n\r\nb", true),
        ])
        .await;
        let pool = pool();
        assert_eq!(&get(&pool, &address, Method::GET).await.2[..], b"a");
        assert_eq!(&get(&pool, &address, Method::GET).await.2[..], b"b");
        assert_eq!(*accepted.borrow(), 2);
    }

    #[tokio::test]
    async fn an_idle_connection_the_endpoint_wrote_to_is_not_reused() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap().to_string();
        let (written, mut unasked) = tokio::sync::mpsc::channel(1);
        let (go, went) = tokio::sync::watch::channel(false);
        tokio::spawn(async move {
            let mut answer = 0;
            loop {
                let (mut stream, _) = listener.accept().await.unwrap();
                let (written, mut went) = (written.clone(), went.clone());
                answer += 1;
                tokio::spawn(async move {
                    let mut buf = [0; 1024];
                    let _ = stream.read(&mut buf).await.unwrap();
                    let body = format!("{answer}");
                    let response = format!("HTTP/1.1 200 OK\r\ncontent-length: {}\r\n\r\n{body}", body.len());
                    stream.write_all(response.as_bytes()).await.unwrap();
                    // Once the client has read the answer and pooled the connection, as a
                    // server timing an idle connection out does.
                    went.wait_for(|go| *go).await.unwrap();
                    stream.write_all(b"HTTP/1.1 408 Request Timeout\r\ncontent-length: 0\r\n\r\n").await.unwrap();
                    written.send(()).await.unwrap();
                    let _ = stream.read(&mut buf).await;
                });
            }
        });
        let pool = pool();
        let first = get(&pool, &address, Method::GET).await;
        go.send(true).unwrap();
        unasked.recv().await.unwrap();
        let second = get(&pool, &address, Method::GET).await;
        assert_eq!((first.0, &first.2[..]), (StatusCode::OK, &b"1"[..]));
        assert_eq!(
            (second.0, &second.2[..]),
            (StatusCode::OK, &b"2"[..]),
            "the 408 is not the second request's answer"
        );
    }

    #[tokio::test]
    async fn a_response_that_is_not_http_fails_with_a_message() {
        let (address, _) = endpoint(vec![
            ("HTTP/1.1 200 OK\r\ncontent-length: 2\r\ncontent-length: 3\r\n\r\nabc", true),
            ("SSH-2.0-OpenSSH\r\n\r\n", true),
        ])
        .await;
        let pool = pool();
        let head = request_head(&Method::GET, "/", "h", &HeaderMap::new());
        let e = pool.send(&address, &Method::GET, &head).await.unwrap_err();
        assert!(e.to_string().contains("two different Content-Lengths"), "{e}");
        let e = pool.send(&address, &Method::GET, &head).await.unwrap_err();
        assert!(matches!(e, H1Error::Invalid { .. }), "{e}");
        let refused = pool.send("127.0.0.1:1", &Method::GET, &head).await.unwrap_err();
        assert!(refused.is_connect(), "{refused}");
    }

    #[tokio::test]
    async fn a_body_cut_short_is_an_error() {
        let (address, _) = endpoint(vec![("HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\nabc", false)]).await;
        let pool = pool();
        let head = request_head(&Method::GET, "/", "h", &HeaderMap::new());
        let response = pool.send(&address, &Method::GET, &head).await.unwrap();
        let e = response.into_body().collect().await.unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::UnexpectedEof);
    }

    #[test]
    fn chunk_sizes_are_hexadecimal_digits_and_nothing_else() {
        assert_eq!(chunk_size(b"1a").unwrap(), 26);
        assert_eq!(chunk_size(b"1A ;name=value").unwrap(), 26);
        assert_eq!(chunk_size(b"ffffffffffffffff").unwrap(), u64::MAX);
        for bad in [&b""[..], b"+1", b" 1", b"1 x", b"0x1", b"1\n2", b"10000000000000000", b";x"] {
            assert!(chunk_size(bad).is_err(), "{:?}", String::from_utf8_lossy(bad));
        }
    }

    #[test]
    fn framing_takes_digits_only_and_passes_one_content_length_on() {
        let framed = |values: &[&'static str]| {
            let mut headers = HeaderMap::new();
            for v in values {
                headers.append(CONTENT_LENGTH, HeaderValue::from_static(v));
            }
            framing(StatusCode::OK, &Method::GET, &mut headers).map(|f| (f, headers))
        };
        let (f, headers) = framed(&["5, 5", "5"]).unwrap();
        assert_eq!(f, Framing::Length(5));
        assert_eq!(headers.get_all(CONTENT_LENGTH).iter().collect::<Vec<_>>(), ["5"]);
        for bad in [&["+5"][..], &["0x5"], &[""], &["5", "6"]] {
            assert!(framed(bad).is_err(), "{bad:?}");
        }
    }

    #[tokio::test]
    async fn a_connection_that_switched_protocols_or_framed_twice_is_not_pooled() {
        let (address, accepted) = endpoint(vec![
            ("HTTP/1.1 101 Switching Protocols\r\nupgrade: websocket\r\nconnection: upgrade\r\n\r\n", true),
            ("HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\ncontent-length: 1\r\n\r\n1\r\na\r\n0\r\n\r\n", true),
            ("HTTP/1.1 299 Fine Indeed\r\ncontent-length: 1\r\n\r\nb", true),
        ])
        .await;
        let pool = pool();
        assert_eq!(get(&pool, &address, Method::GET).await.0, StatusCode::SWITCHING_PROTOCOLS);
        let (_, headers, body, _) = get(&pool, &address, Method::GET).await;
        assert_eq!((&body[..], headers.get(CONTENT_LENGTH)), (&b"a"[..], None));
        let head = request_head(&Method::GET, "/", "h", &HeaderMap::new());
        let response = pool.send(&address, &Method::GET, &head).await.unwrap();
        let reason = response.extensions().get::<hyper::ext::ReasonPhrase>().map(|r| r.as_bytes().to_vec());
        assert_eq!(reason.as_deref(), Some(&b"Fine Indeed"[..]));
        assert_eq!(*accepted.borrow(), 3, "neither the 101's connection nor the ambiguous one was reused");
    }

    #[test]
    fn the_request_head_names_the_host_once() {
        let mut headers = HeaderMap::new();
        headers.insert("x-request-id", HeaderValue::from_static("abc"));
        let head = request_head(&Method::GET, "/a?b=1", "hello.default.localhost", &headers);
        assert_eq!(
            std::str::from_utf8(&head).unwrap(),
            "GET /a?b=1 HTTP/1.1\r\nhost: hello.default.localhost\r\nx-request-id: abc\r\n\r\n"
        );
        headers.insert(HOST, HeaderValue::from_static("other"));
        let head = request_head(&Method::GET, "/", "hello.default.localhost", &headers);
        assert_eq!(std::str::from_utf8(&head).unwrap().matches("host:").count(), 1);
    }
}

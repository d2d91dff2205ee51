//! The shared accept loop against real sockets on 127.0.0.1:0: slow and idle clients are
//! closed, normal ones are served meanwhile, the connection limit holds, plain HTTP on a TLS
//! port is told so, and a renewed certificate reaches new connections without dropping open
//! ones.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::Frame;
use stratus_auth::pki::{Ca, Usage};
use stratus_support::server::{self, Limits};
use stratus_support::tls::{Certificates, certified_key, client_config};
use stratus_testkit::flood::{closed_within, idle_and_slow};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

type Body = http_body_util::combinators::BoxBody<Bytes, Infallible>;

/// A server answering `ok` (or, at `/stream`, a body that never ends) until the test ends.
async fn start(limits: Limits, tls: Option<Arc<rustls::ServerConfig>>) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    tokio::spawn(server::serve(listener, tls, limits, std::future::pending(), |_peer| {
        hyper::service::service_fn(|req: http::Request<hyper::body::Incoming>| async move {
            let body: Body = if req.uri().path() == "/stream" {
                let (tx, rx) = tokio::sync::mpsc::channel::<Result<Frame<Bytes>, Infallible>>(1);
                let _ = tx.send(Ok(Frame::data(Bytes::from_static(b"first\n")))).await;
                // Holds the stream open for as long as the body is read.
                tokio::spawn(async move {
                    tx.closed().await;
                });
                BodyExt::boxed(StreamBody::new(tokio_stream::wrappers::ReceiverStream::new(rx)))
            } else {
                BodyExt::boxed(Full::new(Bytes::from_static(b"ok")))
            };
            Ok::<_, Infallible>(http::Response::new(body))
        })
    }));
    addr
}

fn short() -> Limits {
    Limits {
        header_read_timeout: Duration::from_millis(500),
        idle_timeout: Duration::from_secs(1),
        drain: Duration::from_secs(1),
        ..Limits::default()
    }
}

async fn get(stream: &mut TcpStream, path: &str) -> String {
    stream.write_all(format!("GET {path} HTTP/1.1\r\nHost: t\r\n\r\n").as_bytes()).await.unwrap();
    let mut buf = vec![0u8; 4096];
    let n = stream.read(&mut buf).await.unwrap();
    String::from_utf8_lossy(&buf[..n]).into_owned()
}

#[tokio::test]
async fn idle_and_slow_header_connections_are_closed_while_others_are_served() {
    let addr = start(short(), None).await;
    let mut held = idle_and_slow(&addr, 1000, 100).await.unwrap();
    // A normal client is served at once, all those connections notwithstanding.
    let mut normal = TcpStream::connect(&addr).await.unwrap();
    let answer = tokio::time::timeout(Duration::from_secs(1), get(&mut normal, "/")).await.expect("served in time");
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    // Every idle and slow connection is closed after its timeout (generous bound).
    for s in &mut held {
        assert!(closed_within(s, Duration::from_secs(10)).await, "a connection stayed open");
    }
}

#[tokio::test]
async fn a_kept_alive_connection_closes_when_idle_but_not_while_streaming() {
    let addr = start(short(), None).await;
    let mut kept = TcpStream::connect(&addr).await.unwrap();
    assert!(get(&mut kept, "/").await.starts_with("HTTP/1.1 200"));
    let mut streaming = TcpStream::connect(&addr).await.unwrap();
    assert!(get(&mut streaming, "/stream").await.starts_with("HTTP/1.1 200"));
    assert!(closed_within(&mut kept, Duration::from_secs(10)).await, "the idle connection stayed open");
    // Three idle timeouts later, the stream is still open: a request is in flight.
    assert!(!closed_within(&mut streaming, Duration::from_secs(3)).await, "a streaming response was cut");
}

#[tokio::test]
async fn a_kept_alive_connection_is_served_again_after_a_pause_longer_than_the_header_timeout() {
    let limits =
        Limits { header_read_timeout: Duration::from_millis(200), idle_timeout: Duration::from_secs(5), ..short() };
    let addr = start(limits, None).await;
    let mut kept = TcpStream::connect(&addr).await.unwrap();
    assert!(get(&mut kept, "/").await.starts_with("HTTP/1.1 200"));
    // Idle for longer than the header timeout, well within the idle timeout: still open.
    tokio::time::sleep(Duration::from_millis(1000)).await;
    let again = tokio::time::timeout(Duration::from_secs(5), get(&mut kept, "/")).await.expect("answered in time");
    assert!(again.starts_with("HTTP/1.1 200"), "the kept-alive connection was closed: {again:?}");
}

#[tokio::test]
async fn connections_beyond_the_limit_are_closed_at_once() {
    let patient = Limits {
        max_connections: 3,
        header_read_timeout: Duration::from_secs(30),
        idle_timeout: Duration::from_secs(30),
        ..short()
    };
    let addr = start(patient, None).await;
    let mut held = Vec::new();
    for _ in 0..3 {
        let mut s = TcpStream::connect(&addr).await.unwrap();
        // A served request proves the connection holds a slot.
        assert!(get(&mut s, "/").await.starts_with("HTTP/1.1 200"));
        held.push(s);
    }
    let mut extra = TcpStream::connect(&addr).await.unwrap();
    assert!(closed_within(&mut extra, Duration::from_secs(5)).await, "the connection over the limit was served");
    // A slot freed is a slot for the next client (once the server has seen the close).
    drop(held.pop());
    let served = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            let mut next = TcpStream::connect(&addr).await.unwrap();
            if next.write_all(b"GET / HTTP/1.1\r\nHost: t\r\n\r\n").await.is_ok() {
                let mut buf = vec![0u8; 4096];
                if let Ok(n) = next.read(&mut buf).await
                    && n > 0
                {
                    return String::from_utf8_lossy(&buf[..n]).into_owned();
                }
            }
            tokio::task::yield_now().await;
        }
    })
    .await
    .expect("no answer after a slot was freed");
    assert!(served.starts_with("HTTP/1.1 200"), "{served}");
}

/// Servers given the same permits (one listener served by several threads) share one limit.
#[tokio::test]
async fn servers_sharing_permits_share_the_limit() {
    let shared = Limits {
        max_connections: 2,
        connection_permits: Some(Arc::new(tokio::sync::Semaphore::new(2))),
        header_read_timeout: Duration::from_secs(30),
        idle_timeout: Duration::from_secs(30),
        ..short()
    };
    let (first, second) = (start(shared.clone(), None).await, start(shared, None).await);
    let mut held = Vec::new();
    for addr in [&first, &second] {
        let mut s = TcpStream::connect(addr).await.unwrap();
        assert!(get(&mut s, "/").await.starts_with("HTTP/1.1 200"));
        held.push(s);
    }
    for addr in [&first, &second] {
        let mut extra = TcpStream::connect(addr).await.unwrap();
        assert!(
            closed_within(&mut extra, Duration::from_secs(5)).await,
            "a connection over the shared limit was served"
        );
    }
}

fn tls_server(ca: &Ca) -> (Arc<Certificates>, Arc<rustls::ServerConfig>) {
    let certs = Certificates::new();
    let issued = ca.issue(Usage::Server, &["127.0.0.1".into()], Duration::from_secs(3600)).unwrap();
    certs.set_default(certified_key(issued.cert_pem.as_bytes(), issued.key_pem.as_bytes(), "test").unwrap());
    let config = certs.server_config().unwrap();
    (certs, config)
}

async fn tls_connect(addr: &str, ca: &Ca) -> tokio_rustls::client::TlsStream<TcpStream> {
    let config = client_config(ca.cert_pem().as_bytes()).unwrap();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let tcp = TcpStream::connect(addr).await.unwrap();
    let name = rustls::pki_types::ServerName::try_from("127.0.0.1").unwrap();
    connector.connect(name, tcp).await.unwrap()
}

fn leaf(stream: &tokio_rustls::client::TlsStream<TcpStream>) -> Vec<u8> {
    stream.get_ref().1.peer_certificates().unwrap()[0].to_vec()
}

async fn tls_get(stream: &mut tokio_rustls::client::TlsStream<TcpStream>) -> String {
    stream.write_all(b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n").await.unwrap();
    let mut buf = vec![0u8; 4096];
    let n = stream.read(&mut buf).await.unwrap();
    String::from_utf8_lossy(&buf[..n]).into_owned()
}

#[tokio::test]
async fn plain_http_on_a_tls_port_is_told_so() {
    let ca = Ca::generate().unwrap();
    let (_certs, config) = tls_server(&ca);
    let addr = start(short(), Some(config)).await;
    let mut plain = TcpStream::connect(&addr).await.unwrap();
    let answer = get(&mut plain, "/").await;
    assert!(answer.starts_with("HTTP/1.1 400"), "{answer}");
    assert!(answer.contains("Client sent an HTTP request to an HTTPS server."), "{answer}");
    // A client trusting the CA is served.
    let mut tls = tls_connect(&addr, &ca).await;
    assert!(tls_get(&mut tls).await.starts_with("HTTP/1.1 200"));
}

#[tokio::test]
async fn a_client_trusting_another_ca_refuses_the_server() {
    let ca = Ca::generate().unwrap();
    let (_certs, config) = tls_server(&ca);
    let addr = start(short(), Some(config)).await;
    let stranger = Ca::generate().unwrap();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(client_config(stranger.cert_pem().as_bytes()).unwrap()));
    let tcp = TcpStream::connect(&addr).await.unwrap();
    let name = rustls::pki_types::ServerName::try_from("127.0.0.1").unwrap();
    let err = connector.connect(name, tcp).await.expect_err("an unknown issuer must be refused");
    assert!(err.to_string().contains("invalid peer certificate"), "{err}");
}

#[tokio::test]
async fn a_renewed_certificate_is_served_to_new_connections_and_open_ones_keep_going() {
    let ca = Ca::generate().unwrap();
    let (certs, config) = tls_server(&ca);
    let addr = start(Limits { idle_timeout: Duration::from_secs(30), ..short() }, Some(config)).await;
    let mut before = tls_connect(&addr, &ca).await;
    assert!(tls_get(&mut before).await.starts_with("HTTP/1.1 200"));
    let old = leaf(&before);

    let renewed = ca.issue(Usage::Server, &["127.0.0.1".into()], Duration::from_secs(3600)).unwrap();
    certs.set_default(certified_key(renewed.cert_pem.as_bytes(), renewed.key_pem.as_bytes(), "renewed").unwrap());

    let mut after = tls_connect(&addr, &ca).await;
    assert!(tls_get(&mut after).await.starts_with("HTTP/1.1 200"));
    assert_ne!(leaf(&after), old, "a new connection still got the old certificate");
    // The connection made before the renewal is still served, on the same socket.
    assert!(tls_get(&mut before).await.starts_with("HTTP/1.1 200"));
}

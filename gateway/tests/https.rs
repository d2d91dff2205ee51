//! The gateway's HTTPS listener: certificates chosen by SNI (issued by the cluster CA for hosts
//! under the domain, or supplied), HTTP/2 by ALPN, `X-Forwarded-Proto: https` to the workload,
//! and plain HTTP redirected when asked.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::sync::Arc;

use anyhow::{Result, ensure};
use http::header::HOST;
use http::{Request, StatusCode};
use http_body_util::BodyExt;
use hyper_util::rt::{TokioExecutor, TokioIo};
use stratus_auth::pki::{Ca, Usage};
use stratus_gateway::GatewayConfig;
use stratus_gateway::tls::GatewayCertificates;
use stratus_support::tls::{Certificates, certified_key, client_config};
use support::{Harness, empty, host, mirror};
use tokio::net::{TcpListener, TcpStream};

/// The gateway of `h` serving HTTPS with `certificates` on a port of its own.
async fn https(h: &Harness, certificates: Arc<GatewayCertificates>) -> Result<String> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?.to_string();
    tokio::spawn(h.gateway.clone().serve_tls(listener, certificates.server_config()?, std::future::pending()));
    Ok(addr)
}

/// Connects to `addr` asking for `name` by SNI and offering h2 and http/1.1, trusting `ca`.
async fn connect(addr: &str, name: &str, ca: &str) -> Result<tokio_rustls::client::TlsStream<TcpStream>> {
    let mut config = client_config(ca.as_bytes())?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let tcp = TcpStream::connect(addr).await?;
    Ok(connector.connect(rustls::pki_types::ServerName::try_from(name.to_string())?, tcp).await?)
}

/// GET / for `name` over HTTP/2 on `stream`; the status and the body.
async fn get_h2(stream: tokio_rustls::client::TlsStream<TcpStream>, name: &str) -> Result<(StatusCode, String)> {
    let (mut sender, conn) = hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream)).await?;
    tokio::spawn(conn);
    let req = Request::get(format!("https://{name}/")).body(empty())?;
    let response = sender.send_request(req).await?;
    let status = response.status();
    let body = response.into_body().collect().await?.to_bytes();
    Ok((status, String::from_utf8_lossy(&body).into_owned()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hosts_under_the_domain_get_a_certificate_of_the_cluster_ca_and_http2() -> Result<()> {
    let h = Harness::start().await?;
    let _mirror = mirror(&h).await?;
    let ca = Arc::new(Ca::generate()?);
    let addr = https(&h, GatewayCertificates::new(Certificates::new(), Some(Arc::clone(&ca)), "localhost")).await?;

    let name = host("mirror");
    let stream = connect(&addr, &name, ca.cert_pem()).await?;
    ensure!(stream.get_ref().1.alpn_protocol() == Some(b"h2".as_slice()), "HTTP/2 was not negotiated");
    let (status, seen) = get_h2(stream, &name).await?;
    ensure!(status == StatusCode::OK, "{status}: {seen}");
    // The workload is told the client came over HTTPS, whatever the client claimed.
    ensure!(seen.lines().any(|l| l == "x-forwarded-proto: https"), "{seen}");

    // A client that trusts another CA refuses the gateway.
    let stranger = Ca::generate()?;
    ensure!(connect(&addr, &name, stranger.cert_pem()).await.is_err(), "a foreign CA was accepted");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_supplied_certificate_is_served_for_its_name() -> Result<()> {
    let h = Harness::start().await?;
    let _mirror = mirror(&h).await?;
    // An operator's own CA and certificate for a custom domain, beside the cluster CA.
    let own = Ca::generate()?;
    let issued = own.issue(Usage::Server, &["shop.example.com".into()], std::time::Duration::from_secs(3600))?;
    let supplied = Certificates::new();
    supplied.set("shop.example.com", certified_key(issued.cert_pem.as_bytes(), issued.key_pem.as_bytes(), "shop")?);
    let cluster = Arc::new(Ca::generate()?);
    let addr = https(&h, GatewayCertificates::new(supplied, Some(Arc::clone(&cluster)), "localhost")).await?;

    // The supplied one for its name (verified with the operator's CA, not the cluster's) ...
    ensure!(connect(&addr, "shop.example.com", own.cert_pem()).await.is_ok(), "the supplied certificate");
    ensure!(connect(&addr, "shop.example.com", cluster.cert_pem()).await.is_err(), "the cluster CA signed it?");
    // ... and the cluster CA's for hosts under the domain.
    ensure!(connect(&addr, &host("mirror"), cluster.cert_pem()).await.is_ok(), "the issued certificate");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plain_http_is_redirected_to_https_when_asked() -> Result<()> {
    let h = Harness::start_with(GatewayConfig { https_redirect: Some(8443), ..GatewayConfig::default() }).await?;
    let req = Request::get("/path?q=1").header(HOST, format!("{}:8080", host("mirror"))).body(empty())?;
    let response = h.send(req).await?;
    ensure!(response.status() == StatusCode::PERMANENT_REDIRECT, "{}", response.status());
    let location = response.headers().get(http::header::LOCATION).map(|v| v.to_str().unwrap_or_default().to_string());
    ensure!(location.as_deref() == Some(&format!("https://{}:8443/path?q=1", host("mirror"))[..]), "{location:?}");
    Ok(())
}

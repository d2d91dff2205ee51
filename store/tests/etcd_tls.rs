//! The etcd store over TLS, against a real etcd that serves only TLS and asks every client for a
//! certificate of its CA (`--client-cert-auth`). The store's whole contract over TLS is in the
//! conformance suite (`etcd_tls::*`); here: what is refused.
#![allow(clippy::expect_used, clippy::unwrap_used)]

use std::time::Duration;

use bytes::Bytes;
use stratus_store::etcd::{EtcdStore, EtcdTls};
use stratus_store::{Error, Store};
use stratus_testkit::{EtcdClientTls, EtcdServer};

/// Longer than any refusal may take: connecting gives up after 10 s.
const PATIENCE: Duration = Duration::from_secs(30);

fn pem(client: &EtcdClientTls, with_cert: bool) -> EtcdTls {
    EtcdTls {
        ca_pem: client.ca_pem.clone().into_bytes(),
        identity: with_cert.then(|| (client.cert_pem.clone().into_bytes(), client.key_pem.clone().into_bytes())),
    }
}

async fn connect(endpoint: &str, tls: Option<&EtcdTls>) -> Result<std::sync::Arc<EtcdStore>, Error> {
    let endpoints = [endpoint.to_string()];
    tokio::time::timeout(PATIENCE, EtcdStore::connect_with(&endpoints, tls)).await.expect("connecting ends in time")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_a_client_with_a_certificate_of_the_ca_that_trusts_the_ca_is_served() {
    let etcd = EtcdServer::start_tls().await;
    let client = etcd.tls.as_ref().expect("started with TLS");
    assert!(etcd.endpoint.starts_with("https://127.0.0.1:"), "{}", etcd.endpoint);

    let store = connect(&etcd.endpoint, Some(&pem(client, true))).await.expect("a client with its certificate");
    let rev = store.create("/k", Bytes::from_static(b"v"), 0).await.expect("create over TLS");
    let read = store.get("/k").await.expect("get over TLS").expect("the key is there");
    assert_eq!((read.value.as_ref(), read.mod_revision), (b"v".as_ref(), rev));

    // No client certificate: etcd ends the handshake.
    let err = connect(&etcd.endpoint, Some(&pem(client, false))).await.err().expect("refused without a certificate");
    assert!(matches!(err, Error::Etcd(_)), "{err}");
    // The client sees only a closed connection; etcd says why.
    let deadline = tokio::time::Instant::now() + PATIENCE;
    while !etcd.log().contains("client didn't provide a certificate") {
        assert!(tokio::time::Instant::now() < deadline, "etcd did not log the refusal:\n{}", etcd.log());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    // A client certificate of another CA: refused too.
    let other = EtcdServer::start_tls().await;
    let stranger = other.tls.as_ref().expect("started with TLS");
    let foreign = EtcdTls { ca_pem: client.ca_pem.clone().into_bytes(), ..pem(stranger, true) };
    let err = connect(&etcd.endpoint, Some(&foreign)).await.err().expect("refused with another CA's certificate");
    assert!(matches!(err, Error::Etcd(_)), "{err}");

    // The client trusts only its CA: an etcd whose certificate another CA signed is refused.
    let err = connect(&other.endpoint, Some(&pem(client, true))).await.err().expect("an untrusted server");
    assert!(matches!(err, Error::Etcd(_)), "{err}");

    // TLS needs https:// endpoints, and an https:// etcd is not reached without TLS.
    let plain = etcd.endpoint.replacen("https://", "http://", 1);
    let err = connect(&plain, Some(&pem(client, true))).await.err().expect("TLS options with an http:// endpoint");
    assert!(err.to_string().contains("HTTPS"), "{err}");
    assert!(connect(&etcd.endpoint, None).await.is_err(), "an https:// endpoint without TLS options");
}

//! The API server's store on an etcd that serves only TLS and asks for client certificates,
//! reached with the files `--etcd-cacert`, `--etcd-cert` and `--etcd-key` name.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::PathBuf;

use stratus_apiserver::{Error, EtcdTlsFiles, StoreOptions, open_store};
use stratus_testkit::EtcdServer;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_store_is_opened_over_tls_with_the_files_given() {
    let etcd = EtcdServer::start_tls().await;
    let client = etcd.tls.as_ref().expect("started with TLS");
    let files =
        |cert: PathBuf| EtcdTlsFiles { ca_cert: client.ca_file.clone(), client: Some((cert, client.key_file.clone())) };
    let options = |tls| StoreOptions::Etcd { endpoints: vec![etcd.endpoint.clone()], tls };

    let store = open_store(&options(Some(files(client.cert_file.clone())))).await.expect("the store opens");
    let rev = store.create("/k", bytes::Bytes::from_static(b"v"), 0).await.unwrap();
    assert_eq!(store.get("/k").await.unwrap().map(|kv| kv.mod_revision), Some(rev));

    // A file that cannot be read is named.
    let missing = client.cert_file.with_file_name("nope.crt");
    match open_store(&options(Some(files(missing.clone())))).await {
        Err(Error::EtcdTlsFile { path, .. }) => assert_eq!(path, missing),
        Err(other) => panic!("{other}"),
        Ok(_) => panic!("opened with a missing certificate"),
    }
    // Without a client certificate etcd refuses, and the error names the endpoints.
    let without = EtcdTlsFiles { ca_cert: client.ca_file.clone(), client: None };
    match open_store(&options(Some(without))).await {
        Err(e @ Error::ConnectEtcd { .. }) => assert!(e.to_string().contains(&etcd.endpoint), "{e}"),
        Err(other) => panic!("{other}"),
        Ok(_) => panic!("opened without a client certificate"),
    }
}

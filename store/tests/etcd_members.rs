//! The etcd store given several members, one of which cannot be reached (stopped, or
//! restarting). The client balances requests over every member and keeps one it cannot reach
//! in the balance while it reconnects; a request given to it was never sent, and the store
//! sends it again, so every request the live member can serve succeeds.
#![allow(clippy::expect_used, clippy::unwrap_used)]

use std::time::Duration;

use bytes::Bytes;
use stratus_store::etcd::EtcdStore;
use stratus_store::{ListOptions, Store};
use stratus_testkit::EtcdServer;

/// Requests of each kind made; the balance gives about half of first tries to the dead member,
/// so all of them succeeding without sending again has a chance of 2^-100 or less.
const ROUNDS: usize = 25;

/// A loopback address where nothing listens: connecting is refused at once.
fn refused_endpoint() -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind a free port");
    let port = listener.local_addr().expect("its address").port();
    drop(listener);
    format!("http://127.0.0.1:{port}")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_a_member_that_cannot_be_reached_was_given_go_to_the_member_that_is_up() {
    let etcd = EtcdServer::start().await;
    let endpoints = [refused_endpoint(), etcd.endpoint.clone()];
    let store = tokio::time::timeout(Duration::from_secs(30), EtcdStore::connect(&endpoints))
        .await
        .expect("connecting ends in time")
        .expect("connect with one member up");

    let lease = store.grant_lease(Duration::from_secs(60)).await.expect("grant a lease");
    store.keep_alive(lease).await.expect("keep the lease alive");
    for i in 0..ROUNDS {
        let key = format!("/members/{i:02}");
        let created = store.create(&key, Bytes::from(format!("v{i}")), 0).await.expect("create");
        let read = store.get(&key).await.expect("get").expect("the key just created");
        assert_eq!((read.value.as_ref(), read.mod_revision), (format!("v{i}").as_bytes(), created));
        let updated = store.update(&key, Bytes::from_static(b"w"), created).await.expect("update");
        assert!(updated > created);
        store.current_revision().await.expect("current revision");
    }
    let listed = store.list("/members/", ListOptions::default()).await.expect("list");
    assert_eq!(listed.items.len(), ROUNDS);
    assert!(listed.items.iter().all(|kv| kv.value.as_ref() == b"w"));
    for kv in &listed.items {
        store.delete(&kv.key, Some(kv.mod_revision)).await.expect("delete");
    }
    let _watch = store.watch("/members/", 0).await.expect("watch");
    store.health().await.expect("health");
    store.revoke_lease(lease).await.expect("revoke the lease");
    assert!(store.list("/members/", ListOptions::default()).await.expect("list").items.is_empty());
}

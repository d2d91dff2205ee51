//! The API port holds up against idle and slow clients: 1,000 connections that send nothing and
//! 100 that stall in a request's head do not keep a normal client waiting, and each is closed
//! after its timeout.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use stratus_api::v1::Service;
use stratus_apiserver::Config;
use stratus_apiserver::testing::TestServer;
use stratus_client::{Client, ListParams};
use stratus_support::server::Limits;
use stratus_testkit::flood::{closed_within, idle_and_slow};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_and_slow_clients_do_not_keep_a_normal_one_waiting_and_are_closed() {
    let limits = Limits {
        header_read_timeout: Duration::from_millis(500),
        idle_timeout: Duration::from_secs(1),
        ..Limits::default()
    };
    let server = TestServer::start_tls(Config { limits, ..Default::default() }).await;
    let ca = server.ca.as_ref().unwrap().cert_pem().as_bytes().to_vec();
    let mut held = idle_and_slow(&server.addr.to_string(), 1000, 100).await.unwrap();

    let client = Client::with_ca(&server.endpoint, Some(&ca)).unwrap().with_token(&server.token);
    let listed = tokio::time::timeout(Duration::from_secs(1), client.list::<Service>(&ListParams::default())).await;
    assert!(matches!(listed, Ok(Ok(_))), "a normal request was not answered within a second: {listed:?}");

    for s in &mut held {
        assert!(closed_within(s, Duration::from_secs(10)).await, "a connection stayed open");
    }
    // The client's own connection is still good (it has a request in flight only while asking).
    client.list::<Service>(&ListParams::default()).await.unwrap();
}

//! The controllers' metrics as Prometheus reads them, with every controller running: each
//! reports its work queue, through the runtime, under its own name.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod cluster;

use std::sync::Arc;

use cluster::{Cluster, wait_for};
use stratus_controllers::{Config, DemandStore, Metrics};

/// Every controller `run_with_demand` starts, by the name its series carry.
const CONTROLLERS: [&str; 7] = ["services", "revisions", "scheduler", "endpoints", "nodes", "gc", "autoscaler"];

#[tokio::test]
async fn every_controller_exports_its_queue_depth_adds_and_retries() {
    let cluster = Cluster::start().await;
    let metrics = Arc::new(Metrics::default());
    tokio::spawn(stratus_controllers::run_with_demand(
        cluster.client.clone(),
        Config::default(),
        metrics.clone(),
        DemandStore::new(),
        cluster.shutdown(),
    ));

    let missing = |encoded: &str| {
        let mut missing = Vec::new();
        for controller in CONTROLLERS {
            for series in ["queue_depth", "queue_adds_total", "queue_retries_total"] {
                let name = format!("stratus_controllers_{series}{{controller=\"{controller}\"}} ");
                if !encoded.lines().any(|l| l.starts_with(&name)) {
                    missing.push(name);
                }
            }
        }
        missing
    };
    let encoded = wait_for("every controller's queue series", || {
        let encoded = metrics.encode();
        let missing = missing(&encoded);
        async move { if missing.is_empty() { Ok(encoded) } else { Err(format!("missing {missing:?}")) } }
    })
    .await;

    // Nothing to do in an empty cluster: every queue is empty again (or never filled).
    for controller in CONTROLLERS {
        let depth = format!("stratus_controllers_queue_depth{{controller=\"{controller}\"}} ");
        let value = encoded.lines().find_map(|l| l.strip_prefix(&depth)).unwrap();
        assert!(value.trim().parse::<i64>().unwrap() >= 0, "{controller}: {value}");
    }
    assert!(encoded.contains("stratus_controllers_leader 1"), "the controllers run while leading");
}

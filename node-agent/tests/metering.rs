//! The agent's metering against a real in-process API server, on the fake runtime: the reports
//! it spools reach the API as the node's own (source `agent`/NODE, created by the agent's
//! `system:agent` identity), and say what the module `stratus_agent::metering` promises.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use stratus_agent::AgentConfig;
use stratus_agent::metering::{Metering, REPORTED_UNTIL};
use stratus_agent::runtime::fake::FakeRuntime;
use stratus_api::Resource;
use stratus_api::billing::millis;
use stratus_api::v1::{Instance, UsageReport};
use stratus_client::ListParams;
use stratus_client::usage::{Spool, SpoolMetrics, now_millis};
use stratus_testkit::agent_harness::{AgentHarness, HarnessConfig, status};

const IMAGE: &str = "127.0.0.1:5000/hello:v1";
const PATIENCE: Duration = Duration::from_secs(30);

type Harness = AgentHarness<FakeRuntime>;

/// A harness for `node` metering in windows of `window`, spooling in a directory of its own.
async fn harness(node: &str, window: Duration) -> (Harness, tempfile::TempDir) {
    let runtime = FakeRuntime::new();
    runtime.add_image(IMAGE, "127.0.0.1:5000/hello@sha256:abc");
    let dir = tempfile::tempdir().unwrap();
    let spool = Spool::open(dir.path(), Spool::DEFAULT_MAX_FILES, SpoolMetrics::default()).unwrap();
    let mut cfg = AgentConfig::new(node);
    cfg.lease_renew_interval = Duration::from_millis(200);
    cfg.node_status_interval = Duration::from_millis(200);
    cfg.sync_interval = Duration::from_millis(100);
    cfg.usage_interval = Duration::from_millis(100);
    cfg.gc_interval = Duration::from_millis(200);
    cfg.drain_delay = Duration::from_millis(100);
    cfg.metering = Some(Metering { spool, window });
    let config = HarnessConfig { agent: cfg, patience: PATIENCE, termination_grace_period_seconds: 5 };
    (Harness::start(runtime, config).await, dir)
}

/// Creates `default/name` as the harness does, of a revision with this billing mode.
async fn create(h: &Harness, name: &str, cpu_throttling: Option<bool>) -> Instance {
    let mut inst = h.instance(name, IMAGE, &[], "64Mi");
    inst.spec.as_mut().unwrap().cpu_throttling = cpu_throttling;
    h.client.create(inst).await.unwrap()
}

/// The stored reports of instance `name`, by window.
async fn reports(h: &Harness, name: &str) -> Vec<UsageReport> {
    let mut all: Vec<UsageReport> = h
        .client
        .list::<UsageReport>(&ListParams::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .filter(|r| r.spec.as_ref().is_some_and(|s| s.instance == name))
        .collect();
    all.sort_by_key(|r| millis(r.spec.as_ref().unwrap().window_start.as_ref()));
    all
}

/// Waits until the reports of `name` satisfy `f`; returns them.
async fn reports_until(h: &Harness, name: &str, what: &str, f: impl Fn(&[UsageReport]) -> bool) -> Vec<UsageReport> {
    let mut last = Vec::new();
    let found = tokio::time::timeout(PATIENCE, async {
        loop {
            last = reports(h, name).await;
            if f(&last) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await;
    if found.is_err() {
        let specs: Vec<_> = last.iter().map(|r| &r.spec).collect();
        panic!("the reports of {name} never had {what}; last seen: {specs:#?}");
    }
    last
}

/// Waits until the agent has taken every window up to `at` and sent all it spooled; returns the
/// reports of `name` then, which are all it will ever report of that time.
async fn reports_through(h: &Harness, name: &str, at: i64) -> Vec<UsageReport> {
    let spool = h.cfg.metering.clone().unwrap().spool;
    let settled = tokio::time::timeout(PATIENCE, async {
        loop {
            let taken = stratus_agent::metering::reported_until(spool.dir()).is_some_and(|t| t >= at);
            if taken && spool.pending().unwrap().is_empty() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await;
    assert!(settled.is_ok(), "the agent never reported and sent the windows up to {at}");
    reports(h, name).await
}

/// The reports' periods in milliseconds, each checked to lie in its window, back-to-back
/// pieces (cut at windows' edges) joined.
fn periods(reports: &[UsageReport]) -> Vec<(i64, i64)> {
    let mut joined: Vec<(i64, i64)> = Vec::new();
    for r in reports {
        let spec = r.spec.as_ref().unwrap();
        let (ws, we) = (millis(spec.window_start.as_ref()).unwrap(), millis(spec.window_end.as_ref()).unwrap());
        for p in &spec.periods {
            let (s, e) = (millis(p.start.as_ref()).unwrap(), millis(p.end.as_ref()).unwrap());
            assert!(ws <= s && s < e && e <= we, "period {s}..{e} outside its window {ws}..{we}");
            match joined.last_mut() {
                Some(last) if last.1 == s => last.1 = e,
                Some(last) => {
                    assert!(last.1 < s, "periods overlap: {last:?} and {s}..{e}");
                    joined.push((s, e));
                }
                None => joined.push((s, e)),
            }
        }
    }
    joined
}

/// The last moment any report of `reports` covers.
fn covered_until(reports: &[UsageReport]) -> i64 {
    periods(reports).last().map_or(0, |p| p.1)
}

/// When the engine says container `id` started, in milliseconds.
fn started_at(h: &Harness, id: &str) -> i64 {
    stratus_agent::metering::millis_of(h.runtime.container(id).unwrap().status.started_at.unwrap())
}

/// Deletes `default/name` and waits until it is gone; returns the time just before.
async fn delete(h: &Harness, name: &str) -> i64 {
    let before = now_millis();
    h.client.delete::<Instance>("default", name).await.unwrap();
    tokio::time::timeout(PATIENCE, async {
        while h.client.get::<Instance>("default", name).await.is_ok() {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("the instance is gone");
    before
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_instance_based_life_is_reported_window_by_window_until_it_ends() {
    let (h, _dir) = harness("node-m1", Duration::from_millis(400)).await;
    create(&h, "life", Some(false)).await;
    let i = h.wait_for("life", "Ready", |i| status(i).ready).await;
    let started = started_at(&h, &status(&i).container_id);
    // A few windows: the life is cut at each window's end and continues in the next.
    reports_until(&h, "life", "three windows", |r| r.len() >= 3).await;
    let before = delete(&h, "life").await;
    let gone = now_millis();
    let all = reports_until(&h, "life", "the end of the life", |r| covered_until(r) >= before).await;
    assert_eq!(periods(&all), vec![(started, covered_until(&all))], "one unbroken life from the start");
    assert!(covered_until(&all) <= gone, "metered past the removal");
    for r in &all {
        let spec = r.spec.as_ref().unwrap();
        assert_eq!((spec.source_kind.as_str(), spec.source.as_str()), ("agent", "node-m1"));
        assert_eq!((spec.service.as_str(), spec.revision.as_str()), ("hello", "hello-00001"));
        assert_eq!(spec.billing_mode, "instance");
        assert_eq!((spec.cpu_millis, spec.memory_bytes, spec.requests), (500, 64 << 20, 0));
    }
    // Windows between the first and the last are whole.
    for r in &all[1..all.len() - 1] {
        let spec = r.spec.as_ref().unwrap();
        let p = &spec.periods;
        assert_eq!(p.len(), 1);
        assert_eq!((p[0].start, p[0].end), (spec.window_start, spec.window_end));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_based_instance_reports_only_its_start_up_and_shut_down() {
    let (h, _dir) = harness("node-m2", Duration::from_millis(300)).await;
    h.runtime.set_stop_delay(Duration::from_millis(250));
    let before_create = now_millis();
    create(&h, "req", None).await;
    h.wait_for("req", "Ready", |i| status(i).ready).await;
    let ready = now_millis();
    // Serving for a few windows is the gateways' to report, not the agent's.
    tokio::time::sleep(Duration::from_millis(1_000)).await;
    let before_delete = delete(&h, "req").await;
    let gone = now_millis();
    // The container exited before the Instance was gone: once the windows up to then are sent,
    // the shut-down is whole (waiting for the reports to reach the deletion could stop at a
    // window's edge in the middle of it).
    let all = reports_through(&h, "req", gone).await;
    let p = periods(&all);
    assert_eq!(p.len(), 2, "a start-up and a shut-down: {p:?}");
    let (start_up, shut_down) = (p[0], p[1]);
    assert!(before_create <= start_up.0 && start_up.1 <= ready, "start-up {start_up:?}");
    assert!(before_delete <= shut_down.0 && shut_down.1 <= gone, "shut-down {shut_down:?}");
    assert!(shut_down.1 - shut_down.0 >= 250, "the shut-down lasts until the exit: {shut_down:?}");
    assert!(all.iter().all(|r| r.spec.as_ref().unwrap().billing_mode == "request"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_instance_removed_mid_window_is_reported_at_the_window_end() {
    let window = Duration::from_secs(3);
    let (h, _dir) = harness("node-m3", window).await;
    create(&h, "brief", Some(false)).await;
    let i = h.wait_for("brief", "Ready", |i| status(i).ready).await;
    let started = started_at(&h, &status(&i).container_id);
    let before = delete(&h, "brief").await;
    let gone = now_millis();
    let all = reports_until(&h, "brief", "its last report", |r| covered_until(r) >= before).await;
    let p = periods(&all);
    assert_eq!(p.len(), 1, "{p:?}");
    assert!(p[0].0 == started && p[0].1 <= gone, "{p:?}");
    // The report waited for the window's end, which is at or past the end of the life (at it
    // when the window ended while the agent was still confirming the stop).
    let last = all.last().unwrap().spec.as_ref().unwrap();
    assert!(millis(last.window_end.as_ref()).unwrap() >= p[0].1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_agent_resumes_the_life_neither_losing_nor_doubling_a_window() {
    let window = Duration::from_millis(400);
    let (mut h, dir) = harness("node-m4", window).await;
    create(&h, "kept", Some(false)).await;
    let i = h.wait_for("kept", "Ready", |i| status(i).ready).await;
    let id = status(&i).container_id;
    let started = started_at(&h, &id);
    reports_until(&h, "kept", "two windows", |r| r.len() >= 2).await;
    h.stop_agent().await;

    // While no agent runs, the container does, for more than a window.
    let stopped = now_millis();
    tokio::time::sleep(window * 3).await;
    h.run_agent();
    let restarted = now_millis();
    let all = reports_until(&h, "kept", "the time after the restart", |r| covered_until(r) > restarted).await;
    assert_eq!(periods(&all), vec![(started, covered_until(&all))], "the time without an agent is billed once");
    assert!(covered_until(&all) > stopped);
    assert_eq!(status(&h.client.get::<Instance>("default", "kept").await.unwrap()).container_id, id, "adopted");

    // Without the record of what was reported, the next agent meters from the container's start:
    // the windows it reports again are named as before and already stored.
    let spool = h.cfg.metering.clone().unwrap().spool;
    tokio::time::timeout(PATIENCE, async {
        while !spool.pending().unwrap().is_empty() {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("the spool drains");
    h.stop_agent().await;
    let before: Vec<(String, String)> =
        reports(&h, "kept").await.iter().map(|r| (r.meta().name.clone(), r.meta().resource_version.clone())).collect();
    let sent_before = spool.metrics().sent.get();
    std::fs::remove_file(dir.path().join(REPORTED_UNTIL)).unwrap();
    h.run_agent();
    let restarted = now_millis();
    let all = reports_until(&h, "kept", "the time after the second restart", |r| covered_until(r) > restarted).await;
    assert_eq!(periods(&all), vec![(started, covered_until(&all))], "no window counted twice, none lost");
    for (name, version) in &before {
        let again = all.iter().find(|r| &r.meta().name == name).expect("an earlier report is still there");
        assert_eq!(&again.meta().resource_version, version, "report {name} was replaced");
    }
    // Every earlier window was sent again and answered as already stored.
    let sent = spool.metrics().sent.get() - sent_before;
    assert!(
        sent >= before.len() as u64,
        "{sent} reports sent after the second restart; {} were stored before",
        before.len()
    );
    assert!(std::fs::read_dir(dir.path().join("rejected")).unwrap().next().is_none(), "a report was refused");
}

//! Autoscaling end to end: scale to zero and back, following load, panic mode, the activator
//! path in the gateway, against the real Docker engine with the example image. Short windows
//! (a 6 s stable window, a 3 s scale-to-zero grace) keep each test within a minute.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::HashMap;
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use common::*;
use stratus_api::v1::Revision;
use stratus_testkit::binary;

fn revision(c: &Cluster, namespace: &str, name: &str) -> impl Future<Output = Revision> {
    let client = c.client.clone();
    let (namespace, name) = (namespace.to_string(), name.to_string());
    async move { client.get(&namespace, &name).await.unwrap() }
}

/// Waits until the revision `default/name`'s status satisfies `f`.
async fn wait_revision(c: &Cluster, name: &str, what: &str, f: impl Fn(&Revision) -> bool) -> Revision {
    wait_revision_in(c, "default", name, what, f).await
}

/// Waits until the revision `namespace/name`'s status satisfies `f`.
async fn wait_revision_in(
    c: &Cluster,
    namespace: &str,
    name: &str,
    what: &str,
    f: impl Fn(&Revision) -> bool,
) -> Revision {
    let deadline = Instant::now() + PATIENCE;
    loop {
        let r = revision(c, namespace, name).await;
        if f(&r) {
            return r;
        }
        assert!(Instant::now() < deadline, "revision {name} never got {what}: {:#?}", r.status);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn ready_instances(r: &Revision) -> i32 {
    r.status.as_ref().map(|s| s.ready_instances).unwrap_or(0)
}

fn desired(r: &Revision) -> i32 {
    r.status.as_ref().map(|s| s.desired_instances).unwrap_or(-1)
}

/// Waits until the revision has scaled to zero (nothing desired, nothing running).
async fn wait_zero(c: &Cluster, name: &str) {
    wait_revision(c, name, "zero instances", |r| desired(r) == 0).await;
    let deadline = Instant::now() + PATIENCE;
    while !c.instances(&format!("stratus.dev/revision={name}")).await.is_empty() {
        assert!(Instant::now() < deadline, "{name}'s instances never went away");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn cold_starts_from_zero_answer_every_first_request() {
    let c = Arc::new(Cluster::autoscaling("cold").await);
    c.apply(&hello("cold", "x", "")).await;
    c.wait_ready("cold").await;
    wait_zero(&c, "cold-00001").await;

    let start = Instant::now();
    let (code, body) = c.get(&host("cold"), "/").await;
    eprintln!("cold start: first request answered {code} in {:?}", start.elapsed());
    assert_eq!(code, 200, "{body}");

    wait_zero(&c, "cold-00001").await;
    let start = Instant::now();
    let mut all = Vec::new();
    for _ in 0..100 {
        let c = c.clone();
        all.push(tokio::spawn(async move { c.get(&host("cold"), "/").await.0 }));
    }
    let mut codes: HashMap<u16, usize> = HashMap::new();
    for r in all {
        *codes.entry(r.await.unwrap()).or_default() += 1;
    }
    eprintln!("100 concurrent first requests: {codes:?} in {:?}", start.elapsed());
    assert_eq!(codes.get(&200), Some(&100), "{codes:?}");
}

#[tokio::test]
async fn step_load_scales_to_the_kpa_value_and_back_without_errors() {
    let c = Arc::new(Cluster::autoscaling("step").await);
    // 100m of CPU each, so that 15 instances fit on this machine's node.
    c.apply(
        &hello("step", "x", "      containerConcurrency: 10\n      scaling: {maxInstances: 20}")
            .replace("cpu: 250m", "cpu: 100m"),
    )
    .await;
    c.wait_ready("step").await;
    let stop = Arc::new(AtomicBool::new(false));
    let mut clients = Vec::new();
    for _ in 0..100 {
        let (c, stop) = (c.clone(), stop.clone());
        clients.push(tokio::spawn(async move {
            let mut codes: HashMap<u16, usize> = HashMap::new();
            while !stop.load(Ordering::Relaxed) {
                *codes.entry(c.get(&host("step"), "/?sleep_ms=100").await.0).or_default() += 1;
            }
            codes
        }));
    }
    let step_at = Instant::now();
    // 100 in flight / (10 × 70%) = 14.3 → 15 instances.
    let r = wait_revision(&c, "step-00001", "15 desired instances", |r| desired(r) >= 15).await;
    eprintln!(
        "step load: desired {} after {:?} ({})",
        desired(&r),
        step_at.elapsed(),
        r.status.clone().unwrap().scale_reason
    );
    assert_eq!(desired(&r), 15, "{:?}", r.status);
    wait_revision(&c, "step-00001", "15 ready instances", |r| ready_instances(r) >= 15).await;
    eprintln!("step load: 15 instances ready {:?} after the step", step_at.elapsed());
    stop.store(true, Ordering::Relaxed);
    let mut codes: HashMap<u16, usize> = HashMap::new();
    for cl in clients {
        for (code, n) in cl.await.unwrap() {
            *codes.entry(code).or_default() += n;
        }
    }
    eprintln!("step load: {codes:?}");
    assert_eq!(codes.keys().copied().collect::<Vec<_>>(), vec![200], "{codes:?}");

    // A trickle while it scales down: nothing fails.
    let deadline = Instant::now() + PATIENCE;
    let mut trickle: HashMap<u16, usize> = HashMap::new();
    loop {
        *trickle.entry(c.get(&host("step"), "/").await.0).or_default() += 1;
        let r = revision(&c, "default", "step-00001").await;
        if desired(&r) <= 1 && ready_instances(&r) <= 1 {
            break;
        }
        assert!(Instant::now() < deadline, "never scaled down: {:?}", r.status);
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    eprintln!("scale-down under a trickle: {trickle:?}");
    assert_eq!(trickle.keys().copied().collect::<Vec<_>>(), vec![200], "{trickle:?}");
    // Then, without any request, to zero.
    wait_zero(&c, "step-00001").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sudden_burst_engages_panic_mode_visible_in_describe() {
    let c = Arc::new(Cluster::autoscaling("panic").await);
    c.apply(&hello("burst", "x", "      containerConcurrency: 2\n      scaling: {minInstances: 1, maxInstances: 30}"))
        .await;
    c.wait_ready("burst").await;
    let stop = Arc::new(AtomicBool::new(false));
    let mut clients = Vec::new();
    for _ in 0..40 {
        let (c, stop) = (c.clone(), stop.clone());
        clients.push(tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                c.get(&host("burst"), "/?sleep_ms=200").await;
            }
        }));
    }
    let r = wait_revision(&c, "burst-00001", "panic mode", |r| {
        r.status.as_ref().is_some_and(|s| s.scale_reason.to_lowercase().contains("panic"))
    })
    .await;
    stop.store(true, Ordering::Relaxed);
    for cl in clients {
        cl.await.unwrap();
    }
    eprintln!("panic: {}", r.status.clone().unwrap().scale_reason);
    let out = Command::new(binary("stratus"))
        .args(["--server", c.endpoint(), "--certificate-authority", c.ca(), "describe", "revision", "burst-00001"])
        .env("STRATUS_TOKEN", &c.token)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.to_lowercase().contains("panic"), "{text}");
}

#[tokio::test]
async fn held_requests_for_a_revision_that_cannot_start_get_503_with_the_reason() {
    let c = Cluster::autoscaling("nostart").await;
    c.apply(&hello("ghost", "x", "      timeoutSeconds: 60").replace(IMAGE, "127.0.0.1:5000/no-such-image:v1")).await;
    // Once the route exists (it points at the revision that is trying to start).
    c.wait_service("ghost", "a route", |s| s.status.as_ref().is_some_and(|st| !st.traffic.is_empty())).await;
    let start = Instant::now();
    let (code, body) = c.get(&host("ghost"), "/").await;
    eprintln!("held request for a bad image: {code} after {:?}: {body}", start.elapsed());
    assert_eq!(code, 503, "{body}");
    assert!(body.contains("ContainerMissing") || body.contains("no-such-image"), "{body}");
    assert!(start.elapsed() < Duration::from_secs(60), "held until the timeout");
}

#[tokio::test]
async fn at_max_instances_excess_requests_get_429_never_5xx() {
    let c = Arc::new(Cluster::autoscaling("max").await);
    c.apply(&hello("capped", "x", "      containerConcurrency: 1\n      scaling: {minInstances: 1, maxInstances: 1}"))
        .await;
    c.wait_ready("capped").await;
    // One instance taking one request at a time, each 6 s: the first is served at once, the
    // second after it (well within the 300 s timeout), the others wait the 10 s Cloud Run
    // allows at capacity, then get 429.
    let mut all = Vec::new();
    for _ in 0..4 {
        let c = c.clone();
        all.push(tokio::spawn(async move { c.get(&host("capped"), "/?sleep_ms=6000").await.0 }));
    }
    let mut codes: HashMap<u16, usize> = HashMap::new();
    for r in all {
        *codes.entry(r.await.unwrap()).or_default() += 1;
    }
    eprintln!("at maxInstances: {codes:?}");
    assert!(codes.get(&429).copied().unwrap_or(0) > 0, "{codes:?}");
    assert!(codes.get(&200).copied().unwrap_or(0) > 0, "{codes:?}");
    assert!(codes.keys().all(|c| *c == 200 || *c == 429), "{codes:?}");
}

#[tokio::test]
async fn overload_at_zero_is_held_then_served() {
    let c = Arc::new(Cluster::autoscaling("overload").await);
    c.apply(&hello("flood", "x", "      containerConcurrency: 1\n      scaling: {maxInstances: 10}")).await;
    c.wait_ready("flood").await;
    wait_zero(&c, "flood-00001").await;
    let start = Instant::now();
    let mut all = Vec::new();
    for _ in 0..100 {
        let c = c.clone();
        all.push(tokio::spawn(async move { c.get(&host("flood"), "/?sleep_ms=300").await.0 }));
    }
    let mut codes: HashMap<u16, usize> = HashMap::new();
    for r in all {
        *codes.entry(r.await.unwrap()).or_default() += 1;
    }
    eprintln!("overload at zero: {codes:?} in {:?}", start.elapsed());
    assert_eq!(codes.get(&200), Some(&100), "{codes:?}");
}

/// Load that would scale a service past its tenant's quota stops at the quota, and says so on
/// the Revision (condition and Event); another tenant's service under the same load scales on.
#[tokio::test]
async fn load_past_the_tenants_quota_stops_at_the_quota() {
    use stratus_api::v1::{Event, Namespace, NamespaceSpec, Tenant, TenantQuota};
    let c = Arc::new(Cluster::autoscaling("quota").await);
    let mut tenant: Tenant = c.client.get("", "default").await.unwrap();
    tenant.spec.get_or_insert_default().quota = Some(TenantQuota { max_instances: Some(2), ..Default::default() });
    c.client.update(tenant).await.unwrap();
    let mut roomy = Tenant::default();
    roomy.metadata.get_or_insert_default().name = "roomy".into();
    c.client.create(roomy).await.unwrap();
    let mut ns = Namespace { spec: Some(NamespaceSpec { tenant: "roomy".into() }), ..Default::default() };
    ns.metadata.get_or_insert_default().name = "roomy-ns".into();
    c.client.create(ns).await.unwrap();

    let spec = "      containerConcurrency: 1\n      scaling: {maxInstances: 10}";
    c.apply(&hello("busy", "x", spec)).await;
    for doc in stratus_api::decode::decode_manifest(&hello("free", "x", spec)) {
        let (_, mut obj) = doc.unwrap();
        obj.meta_mut().namespace = "roomy-ns".into();
        c.client.apply_any(obj).await.unwrap();
    }
    c.wait_ready("busy").await;

    // Six requests at a time on each, every one holding its instance for 3 s.
    let stop = Arc::new(AtomicBool::new(false));
    let mut load = Vec::new();
    for host in [host("busy"), "free.roomy-ns.localhost".to_string()] {
        for _ in 0..6 {
            let (c, stop, host) = (c.clone(), stop.clone(), host.clone());
            load.push(tokio::spawn(async move {
                let mut codes = Vec::new();
                while !stop.load(Ordering::Relaxed) {
                    codes.push(c.get(&host, "/?sleep_ms=3000").await.0);
                }
                codes
            }));
        }
    }
    let rev = wait_revision(&c, "busy-00001", "WithinQuota=False", |r| {
        r.status.as_ref().is_some_and(|s| s.conditions.iter().any(|c| c.r#type == "WithinQuota" && c.status == "False"))
    })
    .await;
    eprintln!("busy: {:?}", rev.status.as_ref().map(|s| (s.desired_instances, s.actual_instances)));
    let actual = |r: &Revision| r.status.as_ref().map(|s| s.actual_instances).unwrap_or(0);
    let free = wait_revision_in(&c, "roomy-ns", "free-00001", "more than 2 instances", |r| actual(r) > 2).await;
    let free_scaled = actual(&free);
    let busy = c.instances("stratus.dev/revision=busy-00001").await;
    let live = busy.iter().filter(|i| i.metadata.as_ref().is_some_and(|m| m.deletion_timestamp.is_none())).count();
    stop.store(true, Ordering::Relaxed);
    assert!(live <= 2, "the quota allows 2 instances, and {live} run");
    eprintln!("the other tenant's service runs {free_scaled} instances");
    let in_default = stratus_client::ListParams { namespace: "default".into(), ..Default::default() };
    let events = c.client.list::<Event>(&in_default).await.unwrap().items;
    assert!(
        events.iter().any(|e| e
            .spec
            .as_ref()
            .is_some_and(|s| s.reason == "QuotaExceeded" && s.message.contains("at most 2 instances"))),
        "no QuotaExceeded event: {events:?}"
    );
    for l in load {
        let codes = l.await.unwrap();
        assert!(codes.iter().all(|c| *c < 500), "{codes:?}");
    }
}

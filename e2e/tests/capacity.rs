//! The capacity model end to end (issue 9), on this machine's real node and the real Docker
//! engine: services placed by their requests (CPU overcommitted, memory not), revisions that
//! cannot run giving back what they hold at their progress deadline, and the README's own load
//! line served with backpressure instead of errors.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::BTreeSet;
use std::process::Command;
use std::time::{Duration, Instant};

use common::*;
use stratus_api::Resource;
use stratus_api::quantity::Quantity;
use stratus_api::v1::{Instance, Node, Revision};
use stratus_client::ListParams;
use stratus_testkit::binary;

/// A service as a user writes one: no resources (Cloud Run's defaults, 1 vCPU and 512Mi),
/// always one instance.
fn default_sized(name: &str) -> String {
    service(name, "", "      scaling: {minInstances: 1}")
}

fn example(file: &str) -> String {
    let path = format!("{}/../manifests/{file}", env!("CARGO_MANIFEST_DIR"));
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("reading {path}: {e}"))
}

async fn all_instances(c: &Cluster) -> Vec<Instance> {
    c.client.list_all::<Instance>(&ListParams::default()).await.unwrap().items
}

fn service_of(i: &Instance) -> String {
    i.spec.as_ref().map(|s| s.service_name.clone()).unwrap_or_default()
}

fn is_ready(i: &Instance) -> bool {
    i.status.as_ref().is_some_and(|s| s.ready)
}

async fn the_node(c: &Cluster) -> Node {
    let deadline = Instant::now() + PATIENCE;
    loop {
        let nodes = c.client.list_all::<Node>(&ListParams::default()).await.unwrap().items;
        if let Some(n) = nodes.into_iter().next() {
            return n;
        }
        assert!(Instant::now() < deadline, "no node registered");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn revision(c: &Cluster, name: &str) -> Option<Revision> {
    c.client.get::<Revision>("default", name).await.ok()
}

fn ready_condition(r: &Revision) -> (String, String, String) {
    let c = r.status.as_ref().and_then(|s| s.conditions.iter().find(|c| c.r#type == "Ready").cloned());
    c.map(|c| (c.status, c.reason, c.message)).unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twenty_default_sized_services_run_beside_the_examples() {
    let c = Cluster::start("twenty", Duration::from_secs(15)).await;
    c.apply(&example("hello.yaml")).await;
    c.apply(&example("knative-hello.yaml")).await;
    let names: Vec<String> = (1..=20).map(|i| format!("svc-{i:02}")).collect();
    for name in &names {
        c.apply(&default_sized(name)).await;
    }
    let mut wanted: BTreeSet<String> = names.iter().cloned().collect();
    wanted.extend(["hello".to_string(), "hello-knative".to_string()]);

    // Every service with a ready instance in one listing: at the same moment, not one after
    // another as others scale to zero.
    let deadline = Instant::now() + Duration::from_secs(180);
    let start = Instant::now();
    loop {
        let instances = all_instances(&c).await;
        let ready: BTreeSet<String> = instances.iter().filter(|i| is_ready(i)).map(service_of).collect();
        let missing: Vec<&String> = wanted.difference(&ready).collect();
        if missing.is_empty() {
            eprintln!("22 services ready side by side after {:?} ({} instances)", start.elapsed(), instances.len());
            break;
        }
        let unschedulable: Vec<String> = instances
            .iter()
            .filter_map(|i| i.status.as_ref().filter(|s| s.reason == "Unschedulable").map(|s| s.message.clone()))
            .collect();
        assert!(
            Instant::now() < deadline,
            "not ready at once: {missing:?}; unschedulable: {unschedulable:?}; {} instances",
            instances.len()
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }

    // The scheduler counted requests, derived from the limits: 50m of cpu per 1-vCPU instance,
    // memory as the limit; the engine enforces the limits.
    let instances = all_instances(&c).await;
    let one = instances.iter().find(|i| service_of(i) == "svc-01").expect("an instance of svc-01");
    let res = one.spec.as_ref().unwrap().containers[0].resources.clone().unwrap();
    assert_eq!(res.requests.get("cpu").map(String::as_str), Some("50m"), "{res:?}");
    assert_eq!(res.requests.get("memory").map(String::as_str), Some("512Mi"), "{res:?}");
    assert_eq!(res.limits.get("cpu").map(String::as_str), Some("1"), "{res:?}");
    let status = one.status.clone().unwrap();
    let nano_cpus = docker(&["inspect", "--format", "{{.HostConfig.NanoCpus}}", &status.container_id]);
    assert_eq!(nano_cpus, "1000000000", "Docker enforces the 1-vCPU limit");

    // `stratus get nodes` says where the capacity went.
    let out = Command::new(binary("stratus"))
        .args(["--server", c.endpoint(), "--certificate-authority", c.ca(), "get", "nodes"])
        .env("STRATUS_TOKEN", &c.token)
        .output()
        .expect("run stratus get nodes");
    let text = String::from_utf8_lossy(&out.stdout);
    eprintln!("{text}");
    assert!(out.status.success(), "{text}");
    assert!(text.contains("INSTANCES"), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revisions_that_cannot_run_give_back_what_they_hold() {
    let c = Cluster::start("giveback", Duration::from_secs(15)).await;
    let node = the_node(&c).await;
    let alloc: Quantity = node.status.as_ref().unwrap().allocatable["cpu"].parse().unwrap();
    let all_cpu = Quantity::from_millis(alloc.ceil_millis() - alloc.ceil_millis() % 10).to_string();

    // A container that crashes at start, asking for every CPU of the node, with a short
    // progress deadline; and an image the registry does not have.
    let crash = format!(
        r#"
apiVersion: serving.knative.dev/v1
kind: Service
metadata:
  name: crash
spec:
  template:
    metadata:
      annotations:
        serving.knative.dev/progress-deadline: 10s
    spec:
      containers:
        - image: {IMAGE}
          args: [crash]
          resources:
            requests: {{cpu: "{all_cpu}"}}
            limits: {{cpu: "{all_cpu}"}}
"#
    );
    c.apply(&crash).await;
    c.apply(&default_sized("ghost").replace(IMAGE, "127.0.0.1:5000/no-such-image:v1")).await;

    // The missing image fails at once and never gets an instance.
    let deadline = Instant::now() + PATIENCE;
    loop {
        if let Some(r) = revision(&c, "ghost-00001").await {
            let (status, reason, message) = ready_condition(&r);
            if status == "False" {
                assert_eq!(reason, "ContainerMissing", "{message}");
                assert!(message.contains("no-such-image"), "{message}");
                break;
            }
        }
        assert!(Instant::now() < deadline, "ghost-00001 never failed");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(c.instances("stratus.dev/revision=ghost-00001").await.is_empty());

    // The crashing one holds the whole node while it tries ...
    let deadline = Instant::now() + PATIENCE;
    while !c
        .instances("stratus.dev/revision=crash-00001")
        .await
        .iter()
        .any(|i| !i.spec.as_ref().unwrap().node_name.is_empty())
    {
        assert!(Instant::now() < deadline, "crash-00001 never got a node");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // ... so a new service waits for room, and is told who holds it.
    c.apply(&default_sized("after")).await;
    let deadline = Instant::now() + PATIENCE;
    let message = loop {
        let pending = c.instances("stratus.dev/service=after").await;
        if let Some(s) = pending.iter().filter_map(|i| i.status.as_ref()).find(|s| s.reason == "Unschedulable") {
            break s.message.clone();
        }
        assert!(Instant::now() < deadline, "the new service never waited for room: {pending:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    eprintln!("while crash-00001 holds the node: {message}");
    assert!(message.contains("Insufficient cpu") && message.contains("default/crash-00001"), "{message}");

    // At its deadline the crashing revision is failed with its instances' reason, and its
    // instances are gone: the new service runs.
    let deadline = Instant::now() + PATIENCE;
    loop {
        let r = revision(&c, "crash-00001").await.unwrap();
        let (status, reason, message) = ready_condition(&r);
        if reason == "ProgressDeadlineExceeded" {
            assert_eq!(status, "False");
            assert!(message.contains("ExitCode3"), "{message}");
            break;
        }
        assert!(Instant::now() < deadline, "crash-00001 never passed its deadline: {reason} {message}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    c.wait_ready("after").await;
    assert!(c.instances("stratus.dev/revision=crash-00001").await.is_empty());
    let node: Node = c.client.get("", &node.meta().name).await.unwrap();
    let reservations = node
        .meta()
        .annotations
        .get(stratus_api::wellknown::annotations::SCHEDULER_RESERVATIONS)
        .cloned()
        .unwrap_or_default();
    assert!(!reservations.contains("crash-00001"), "{reservations}");
    assert!(!reservations.contains("ghost-00001"), "{reservations}");
}

/// The README's line, `stratus bench hello --stage 10s:10rps --stage 30s:200c --path
/// '/?sleep_ms=100'`, right after the example services are up.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_readmes_bench_line_is_served_and_scales_hello() {
    let c = Cluster::start("readme", Duration::from_secs(15)).await;
    c.apply(&example("hello.yaml")).await;
    c.apply(&example("knative-hello.yaml")).await;
    c.wait_ready("hello").await;
    c.wait_ready("hello-knative").await;

    let dir = tempfile::tempdir().unwrap();
    let timeline = dir.path().join("timeline.json");
    let out = tokio::process::Command::new(binary("stratus"))
        .args(["--server", c.endpoint(), "--certificate-authority", c.ca(), "bench", "hello"])
        .env("STRATUS_TOKEN", &c.token)
        .args(["--stage", "10s:10rps", "--stage", "30s:200c", "--path", "/?sleep_ms=100"])
        .arg("--out-json")
        .arg(&timeline)
        .output()
        .await
        .expect("run stratus bench");
    let text = String::from_utf8_lossy(&out.stdout);
    eprintln!("{text}");
    assert!(out.status.success(), "{text}{}", String::from_utf8_lossy(&out.stderr));

    // "Requests    N sent, N answered, N succeeded (P%)"
    let line = text.lines().find(|l| l.starts_with("Requests")).expect("a Requests line");
    let numbers: Vec<u64> =
        line.split(|ch: char| !ch.is_ascii_digit()).filter(|s| !s.is_empty()).filter_map(|s| s.parse().ok()).collect();
    let (sent, succeeded) = (numbers[0], numbers[2]);
    assert!(sent > 1000, "{line}");
    let failed = sent - succeeded;
    assert!(failed * 100 < sent, "more than 1% failed: {line}");

    let samples: Vec<serde_json::Value> = serde_json::from_str(&std::fs::read_to_string(&timeline).unwrap()).unwrap();
    let most_ready = samples.iter().filter_map(|s| s["ready_instances"].as_u64()).max().unwrap_or(0);
    eprintln!("hello: at most {most_ready} ready instances under the load");
    assert!(most_ready > 2, "hello never had more than two ready instances: {most_ready}");
}

/// Twice what a revision can serve at once, in a closed loop: requests wait their turn in the
/// gateway (latency grows) and none fails, where the old fixed queue of 100 answered the 150
/// waiting beyond it 503 at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twice_the_capacity_in_a_closed_loop_waits_and_never_fails() {
    let c = std::sync::Arc::new(Cluster::start("twice", Duration::from_secs(15)).await);
    // Three instances, fifty requests each at once: 150 in flight; 300 clients ask.
    c.apply(&default_sized("busy").replace(
        "scaling: {minInstances: 1}",
        "containerConcurrency: 50\n      scaling: {minInstances: 3, maxInstances: 3}",
    ))
    .await;
    let deadline = Instant::now() + PATIENCE;
    while c.instances("stratus.dev/service=busy").await.iter().filter(|i| is_ready(i)).count() < 3 {
        assert!(Instant::now() < deadline, "busy never had three ready instances");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let until = Instant::now() + Duration::from_secs(5);
    let mut clients = Vec::new();
    for _ in 0..300 {
        let c = c.clone();
        clients.push(tokio::spawn(async move {
            let mut codes = std::collections::BTreeMap::<u16, usize>::new();
            let mut waited = Duration::ZERO;
            while Instant::now() < until {
                let start = Instant::now();
                *codes.entry(c.get(&host("busy"), "/?sleep_ms=100").await.0).or_default() += 1;
                waited += start.elapsed();
            }
            (codes, waited)
        }));
    }
    let mut codes = std::collections::BTreeMap::<u16, usize>::new();
    let mut waited = Duration::ZERO;
    for cl in clients {
        let (mine, time) = cl.await.unwrap();
        for (code, n) in mine {
            *codes.entry(code).or_default() += n;
        }
        waited += time;
    }
    let answered: usize = codes.values().sum();
    eprintln!(
        "twice the capacity: {codes:?}, mean latency {:?} for a 100 ms request",
        waited / u32::try_from(answered.max(1)).unwrap()
    );
    assert!(answered > 600, "{codes:?}");
    assert_eq!(codes.keys().copied().collect::<Vec<_>>(), vec![200], "{codes:?}");
}

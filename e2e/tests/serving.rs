//! Apply a manifest, get a URL that serves: the API server, the controllers, the gateway and
//! node agents driving the real Docker engine, with the real example image.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::HashMap;
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use common::*;
use stratus_api::v1::{Instance, Lease, LeaseSpec, Node, NodeStatus, Revision, Service};
use stratus_api::{AnyObject, Resource};
use stratus_client::ListParams;
use stratus_testkit::{binary, free_port};

#[tokio::test]
async fn a_service_serves_and_an_update_replaces_its_revision() {
    let c = Cluster::start("update", Duration::from_secs(15)).await;
    c.apply(&hello("hello", "one", "")).await;
    let start = Instant::now();
    let svc = c.wait_ready("hello").await;
    eprintln!("hello was Ready {:?} after apply", start.elapsed());
    let st = svc.status.clone().unwrap();
    assert_eq!(st.url, format!("http://hello.default.localhost:{}", c.gateway.port()));
    assert_eq!(st.latest_ready_revision_name, "hello-00001");
    let (code, body) = c.get(&host("hello"), "/").await;
    assert_eq!(code, 200, "{body}");
    assert!(body.starts_with("Hello one!"), "{body}");
    let rev: Revision = c.client.get("default", "hello-00001").await.unwrap();
    assert!(rev.status.unwrap().image_digest.contains("@sha256:"), "the revision is not pinned to a digest");

    c.apply(&hello("hello", "two", "")).await;
    c.wait_service("hello", "the second revision", |s| {
        s.status.as_ref().is_some_and(|st| st.latest_ready_revision_name == "hello-00002")
    })
    .await;
    let deadline = Instant::now() + PATIENCE;
    loop {
        let (code, body) = c.get(&host("hello"), "/").await;
        if code == 200 && body.starts_with("Hello two!") {
            break;
        }
        assert!(Instant::now() < deadline, "responses never changed: {code} {body}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let deadline = Instant::now() + PATIENCE;
    while !c.instances("stratus.dev/revision=hello-00001").await.is_empty() {
        assert!(Instant::now() < deadline, "the first revision's instances never went away");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // Unknown hosts are 404 naming the host.
    let (code, body) = c.get("nope.default.localhost", "/").await;
    assert_eq!(code, 404);
    assert!(body.contains("nope.default.localhost"), "{body}");
}

#[tokio::test]
async fn a_knative_manifest_serves_unchanged() {
    let c = Cluster::start("knative", Duration::from_secs(15)).await;
    c.apply(&format!(
        r#"
apiVersion: serving.knative.dev/v1
kind: Service
metadata:
  name: kn
spec:
  template:
    metadata:
      annotations:
        autoscaling.knative.dev/maxScale: "3"
    spec:
      containers:
        - image: {IMAGE}
          ports:
            - containerPort: 8080
          env:
            - name: TARGET
              value: "Knative"
"#
    ))
    .await;
    c.wait_ready("kn").await;
    let (code, body) = c.get(&host("kn"), "/").await;
    assert_eq!(code, 200, "{body}");
    assert!(body.starts_with("Hello Knative!"), "{body}");
}

#[tokio::test]
async fn traffic_splits_by_percent_and_tags_get_their_own_host() {
    let c = Cluster::start("split", Duration::from_secs(15)).await;
    c.apply(&hello("split", "a", "")).await;
    c.wait_ready("split").await;
    let traffic = r#"  traffic:
    - revisionName: split-00001
      percent: 50
      tag: old
    - latestRevision: true
      percent: 50"#;
    let yaml = hello("split", "b", "").replace("spec:\n  template:", &format!("spec:\n{traffic}\n  template:"));
    c.apply(&yaml).await;
    c.wait_service("split", "a 50/50 split over two ready revisions", |s| {
        s.status.as_ref().is_some_and(|st| {
            st.latest_ready_revision_name == "split-00002"
                && st.traffic.iter().filter(|t| t.percent == Some(50)).count() == 2
        })
    })
    .await;
    let (mut a, mut b) = (0, 0);
    let total = 2000;
    for _ in 0..total {
        let (code, body) = c.get(&host("split"), "/").await;
        assert_eq!(code, 200, "{body}");
        if body.starts_with("Hello a!") {
            a += 1;
        } else if body.starts_with("Hello b!") {
            b += 1;
        }
    }
    eprintln!("split: a={a} b={b} of {total}");
    assert_eq!(a + b, total);
    assert!((900..=1100).contains(&a), "a got {a} of {total}");
    let (code, body) = c.get("old-split.default.localhost", "/").await;
    assert_eq!(code, 200);
    assert!(body.starts_with("Hello a!"), "{body}");
}

#[tokio::test]
async fn a_rolling_update_under_load_fails_no_request() {
    let c = Arc::new(Cluster::start("rolling", Duration::from_secs(15)).await);
    c.apply(&hello("roll", "one", "")).await;
    c.wait_ready("roll").await;
    let stop = Arc::new(AtomicBool::new(false));
    let (ok, failed) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let failures = Arc::new(std::sync::Mutex::new(Vec::new()));
    let mut load = Vec::new();
    for _ in 0..4 {
        let (c, stop, ok, failed, failures) = (c.clone(), stop.clone(), ok.clone(), failed.clone(), failures.clone());
        load.push(tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                let (code, body) = c.get(&host("roll"), "/?sleep_ms=20").await;
                if code == 200 {
                    ok.fetch_add(1, Ordering::Relaxed);
                } else {
                    failed.fetch_add(1, Ordering::Relaxed);
                    failures.lock().unwrap().push(format!("{code} {body}"));
                }
            }
        }));
    }
    c.apply(&hello("roll", "two", "")).await;
    c.wait_service("roll", "the second revision", |s| {
        s.status.as_ref().is_some_and(|st| st.latest_ready_revision_name == "roll-00002")
    })
    .await;
    let deadline = Instant::now() + PATIENCE;
    while !c.instances("stratus.dev/revision=roll-00001").await.is_empty() {
        assert!(Instant::now() < deadline, "the old revision's instances never went away");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // A little more load on the new revision alone.
    tokio::time::sleep(Duration::from_millis(500)).await;
    stop.store(true, Ordering::Relaxed);
    for l in load {
        l.await.unwrap();
    }
    let (ok, failed) = (ok.load(Ordering::Relaxed), failed.load(Ordering::Relaxed));
    eprintln!("rolling update: {ok} requests succeeded, {failed} failed");
    assert!(ok > 50, "too little load to prove anything: {ok}");
    assert_eq!(failed, 0, "{:?}", failures.lock().unwrap());
}

#[tokio::test]
async fn concurrency_one_never_overlaps() {
    let c = Arc::new(Cluster::start("cc1", Duration::from_secs(15)).await);
    c.apply(&hello("one", "x", "      containerConcurrency: 1")).await;
    c.wait_ready("one").await;
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut clients = Vec::new();
    for _ in 0..5 {
        let c = c.clone();
        clients.push(tokio::spawn(async move {
            let mut codes = HashMap::new();
            while Instant::now() < deadline {
                let (code, _) = c.get(&host("one"), "/?exclusive=1&sleep_ms=20").await;
                *codes.entry(code).or_insert(0) += 1;
            }
            codes
        }));
    }
    let mut all = HashMap::new();
    for cl in clients {
        for (code, n) in cl.await.unwrap() {
            *all.entry(code).or_insert(0) += n;
        }
    }
    eprintln!("containerConcurrency 1: {all:?}");
    assert_eq!(all.keys().copied().collect::<Vec<_>>(), vec![200], "{all:?}");
}

#[tokio::test]
async fn failing_revisions_say_why() {
    let c = Cluster::start("fail", Duration::from_secs(15)).await;
    c.apply(&hello("ghost", "x", "").replace(IMAGE, "127.0.0.1:5000/no-such-image:v1")).await;
    c.apply(&hello("crash", "x", "").replace("          env:", "          args: [crash]\n          env:")).await;
    let svc = c.wait_service("ghost", "Ready=False", |s| condition(s, "Ready") == "False").await;
    let ready = svc.status.unwrap().conditions.into_iter().find(|c| c.r#type == "Ready").unwrap();
    assert!(!ready.message.is_empty(), "{ready:?}");
    let rev: Revision = c.client.get("default", "ghost-00001").await.unwrap();
    let rev_ready = rev.status.unwrap().conditions.into_iter().find(|c| c.r#type == "Ready").unwrap();
    assert_eq!(rev_ready.reason, "ContainerMissing", "{rev_ready:?}");

    c.wait_service("crash", "Ready=False", |s| condition(s, "Ready") == "False").await;
    let deadline = Instant::now() + PATIENCE;
    loop {
        let rev: Revision = c.client.get("default", "crash-00001").await.unwrap();
        let cond =
            rev.status.unwrap_or_default().conditions.into_iter().find(|c| c.r#type == "Ready").unwrap_or_default();
        if cond.reason == "ExitCode3" {
            break;
        }
        assert!(Instant::now() < deadline, "the crashing revision never said ExitCode3: {cond:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test]
async fn instances_spread_over_two_nodes_and_move_when_one_is_lost() {
    // Two nodes, each a `stratus-agent` process of its own.
    let mut c = Cluster::control_plane("nodes", Duration::from_secs(3)).await;
    let _agent_a = c.agent_process(&format!("e2e-nodes-a-{}", free_port())).await;
    let lost = format!("e2e-nodes-b-{}", free_port());
    let mut agent_b = c.agent_process(&lost).await;
    c.apply(&hello("spread", "x", "      scaling: {minInstances: 4}")).await;
    let deadline = Instant::now() + PATIENCE;
    let per_node = loop {
        let ready: Vec<Instance> = c
            .instances("stratus.dev/service=spread")
            .await
            .into_iter()
            .filter(|i| i.status.as_ref().is_some_and(|s| s.ready))
            .collect();
        let mut per_node: HashMap<String, usize> = HashMap::new();
        for i in &ready {
            *per_node.entry(i.spec.clone().unwrap_or_default().node_name).or_default() += 1;
        }
        if ready.len() == 4 && per_node.len() == 2 {
            break per_node;
        }
        assert!(Instant::now() < deadline, "4 ready instances over 2 nodes never happened: {per_node:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert!(per_node.values().all(|n| *n == 2), "{per_node:?}");

    // Lose node b: its agent is killed and its containers are gone.
    agent_b.0.kill().unwrap();
    agent_b.0.wait().unwrap();
    let out = Command::new(binary("stratus")).args(["down", "--node", &lost]).output().unwrap();
    assert!(out.status.success());
    let lost_at = Instant::now();
    let deadline = Instant::now() + PATIENCE;
    loop {
        let ready: Vec<Instance> = c
            .instances("stratus.dev/service=spread")
            .await
            .into_iter()
            .filter(|i| i.status.as_ref().is_some_and(|s| s.ready))
            .collect();
        let (code, _) = c.get(&host("spread"), "/").await;
        if ready.len() == 4 && ready.iter().all(|i| i.spec.as_ref().is_some_and(|s| s.node_name != lost)) && code == 200
        {
            break;
        }
        assert!(Instant::now() < deadline, "the lost node's instances were not replaced");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    eprintln!("recovered from the loss of a node in {:?}", lost_at.elapsed());
    let node: Node = c.client.get("", &lost).await.unwrap();
    let ready = node.status.unwrap().conditions.into_iter().find(|c| c.r#type == "Ready").unwrap();
    assert_eq!(ready.status, "False");
}

#[tokio::test]
async fn an_instance_too_big_for_every_node_waits_for_one_with_room() {
    let c = Cluster::start("big", Duration::from_secs(30)).await;
    c.apply(&hello("big", "x", "").replace("cpu: 250m", "cpu: \"64\"")).await;
    let deadline = Instant::now() + PATIENCE;
    let pending = loop {
        let insts = c.instances("stratus.dev/service=big").await;
        if let Some(i) = insts.into_iter().find(|i| i.status.as_ref().is_some_and(|s| s.reason == "Unschedulable")) {
            break i;
        }
        assert!(Instant::now() < deadline, "no Unschedulable instance");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let msg = pending.status.unwrap().message;
    assert!(msg.contains("cpu"), "{msg}");

    // A node with room joins (registered by hand: nothing runs there, but it schedules).
    let mut node = Node::default();
    node.meta_mut().name = "roomy".into();
    let node = c.client.create(node).await.unwrap();
    let mut node = node;
    node.status = Some(NodeStatus {
        capacity: [("cpu".into(), "128".into()), ("memory".into(), "512Gi".into()), ("instances".into(), "110".into())]
            .into(),
        allocatable: [
            ("cpu".into(), "128".into()),
            ("memory".into(), "512Gi".into()),
            ("instances".into(), "110".into()),
        ]
        .into(),
        conditions: vec![stratus_api::v1::Condition {
            r#type: "Ready".into(),
            status: "True".into(),
            ..Default::default()
        }],
        ..Default::default()
    });
    c.client.update_status(node).await.unwrap();
    let mut lease = Lease::default();
    lease.meta_mut().name = "roomy".into();
    lease.meta_mut().namespace = "stratus-node-lease".into();
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() as i64;
    lease.spec = Some(LeaseSpec {
        holder_identity: "roomy".into(),
        lease_duration_seconds: 3600,
        renew_time: Some(stratus_api::Timestamp { seconds: now, nanos: 0 }),
        ..Default::default()
    });
    match c.client.create(lease).await {
        Ok(_) | Err(stratus_client::Error::AlreadyExists(_)) => {}
        Err(e) => panic!("{e}"),
    }
    let deadline = Instant::now() + PATIENCE;
    loop {
        let insts = c.instances("stratus.dev/service=big").await;
        if insts.iter().any(|i| i.spec.as_ref().is_some_and(|s| s.node_name == "roomy")) {
            break;
        }
        assert!(Instant::now() < deadline, "the big instance never scheduled on the roomy node");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test]
async fn deleting_a_service_leaves_nothing_behind() {
    let c = Cluster::start("delete", Duration::from_secs(15)).await;
    c.apply(&hello("gone", "x", "")).await;
    c.wait_ready("gone").await;
    let containers = |node: &str| docker(&["ps", "-aq", "--filter", &format!("label=stratus.dev/node={node}")]);
    let node = c.nodes[0].0.clone();
    assert!(!containers(&node).is_empty());
    c.client.delete::<Service>("default", "gone").await.unwrap();
    let deadline = Instant::now() + PATIENCE;
    loop {
        let mut left = Vec::new();
        for kind in ["services", "revisions", "instances", "endpoints"] {
            let params = ListParams { namespace: "default".into(), ..Default::default() };
            for o in c.client.list_all_any(kind, &params).await.unwrap().items {
                left.push(format!("{}/{}", AnyObject::info(&o).singular, o.meta().name));
            }
        }
        if left.is_empty() && containers(&node).is_empty() {
            break;
        }
        assert!(Instant::now() < deadline, "left behind: {left:?}, containers: {}", containers(&node));
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

// Multi-threaded: the test runs the CLI as a blocking child process against the API server
// that this same runtime serves.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_gateway_limits_rates_and_times_out() {
    let c = Cluster::start("limits", Duration::from_secs(15)).await;
    c.apply(&hello("limited", "x", "").replace("spec:\n  template:", "spec:\n  rateLimitRps: 5\n  template:")).await;
    c.apply(&hello("slow", "x", "      timeoutSeconds: 1")).await;
    c.wait_ready("limited").await;
    c.wait_ready("slow").await;
    let mut codes: HashMap<u16, usize> = HashMap::new();
    for _ in 0..40 {
        *codes.entry(c.get(&host("limited"), "/").await.0).or_default() += 1;
    }
    eprintln!("rate-limited service: {codes:?}");
    assert!(codes.get(&429).copied().unwrap_or(0) > 0, "no 429 at 40 requests in a burst: {codes:?}");
    assert!(codes.get(&200).copied().unwrap_or(0) > 0, "{codes:?}");
    assert_eq!(codes.len(), 2, "only 200 and 429 expected: {codes:?}");
    let (code, body) = c.get(&host("slow"), "/?sleep_ms=3000").await;
    assert_eq!(code, 504, "{body}");

    // `stratus describe service` shows the revision and its instance with node and address.
    let out = Command::new(binary("stratus"))
        .args(["--server", c.endpoint(), "--certificate-authority", c.ca(), "describe", "service", "slow"])
        .env("STRATUS_TOKEN", &c.token)
        .output()
        .expect("run stratus describe");
    let text = String::from_utf8_lossy(&out.stdout);
    let node = &c.nodes[0].0;
    assert!(text.contains("slow-00001"), "{text}{}", String::from_utf8_lossy(&out.stderr));
    assert!(text.lines().any(|l| l.contains(node.as_str()) && l.contains("127.0.0.1:")), "{text}");
}

#[tokio::test]
async fn requests_keep_succeeding_when_an_endpoint_crashes() {
    let c = Arc::new(Cluster::start("crash", Duration::from_secs(15)).await);
    c.apply(&hello("sturdy", "x", "      scaling: {minInstances: 2}")).await;
    let deadline = Instant::now() + PATIENCE;
    let victim = loop {
        let ready: Vec<Instance> = c
            .instances("stratus.dev/service=sturdy")
            .await
            .into_iter()
            .filter(|i| i.status.as_ref().is_some_and(|s| s.ready))
            .collect();
        let endpoints = c.client.get::<stratus_api::v1::Endpoints>("default", "sturdy-00001").await;
        let listed = endpoints.ok().and_then(|e| e.spec).map(|s| s.addresses.len()).unwrap_or(0);
        if ready.len() == 2 && listed == 2 {
            break ready[0].status.clone().unwrap_or_default().container_id;
        }
        assert!(Instant::now() < deadline, "two ready endpoints never appeared");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    // The container dies under the gateway's feet; it still routes to it until the agent and
    // the endpoints controller notice. Requests must not fail meanwhile: connecting fails
    // before anything is sent, so the gateway retries them on the other endpoint.
    docker(&["kill", &victim]);
    let mut codes: HashMap<u16, usize> = HashMap::new();
    for _ in 0..200 {
        *codes.entry(c.get(&host("sturdy"), "/").await.0).or_default() += 1;
    }
    eprintln!("while an endpoint crashed: {codes:?}");
    assert_eq!(codes.keys().copied().collect::<Vec<_>>(), vec![200], "{codes:?}");
}

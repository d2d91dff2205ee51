//! The agent above the runtime: a real in-process API server, the agent's real loops and
//! reconciler, and the fake runtime standing for Docker.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use futures::StreamExt;
use stratus_agent::AgentConfig;
use stratus_agent::config::{FINALIZER, NODE_LEASE_NAMESPACE};
use stratus_agent::runtime::fake::FakeRuntime;
use stratus_agent::runtime::{ContainerConfig, labels};
use stratus_api::Resource;
use stratus_api::v1::{Container, Instance, Lease, Node, SecurityContext};
use stratus_client::{ListParams, WatchEvent};
use stratus_testkit::agent_harness::{AgentHarness, HarnessConfig, container, status};

const IMAGE: &str = "127.0.0.1:5000/hello:v1";
const PATIENCE: Duration = Duration::from_secs(20);

type Harness = AgentHarness<FakeRuntime>;

/// A harness for `node` whose fake runtime has [`IMAGE`], with every interval of the agent
/// short so that the tests are quick.
async fn harness(node: &str) -> Harness {
    harness_with(node, |_| {}).await
}

/// [`harness`], with `tweak` applied to the agent's configuration.
async fn harness_with(node: &str, tweak: impl FnOnce(&mut AgentConfig)) -> Harness {
    let runtime = FakeRuntime::new();
    runtime.add_image(IMAGE, "127.0.0.1:5000/hello@sha256:abc");
    let mut cfg = AgentConfig::new(node);
    cfg.lease_renew_interval = Duration::from_millis(200);
    cfg.node_status_interval = Duration::from_millis(200);
    cfg.sync_interval = Duration::from_millis(100);
    cfg.usage_interval = Duration::from_millis(100);
    cfg.gc_interval = Duration::from_millis(200);
    cfg.crash_backoff = (Duration::from_millis(200), Duration::from_secs(5));
    cfg.pull_backoff = (Duration::from_millis(200), Duration::from_secs(5));
    cfg.drain_delay = Duration::from_millis(300);
    cfg.reserved_cpu_millis = 500;
    tweak(&mut cfg);
    let config = HarnessConfig { agent: cfg, patience: PATIENCE, termination_grace_period_seconds: 7 };
    Harness::start(runtime, config).await
}

#[tokio::test]
async fn registers_the_node_and_renews_its_lease() {
    let h = harness("node-a").await;
    let node = tokio::time::timeout(PATIENCE, async {
        loop {
            if let Ok(n) = h.client.get::<Node>("", "node-a").await
                && n.status
                    .as_ref()
                    .is_some_and(|s| s.conditions.iter().any(|c| c.r#type == "Ready" && c.status == "True"))
            {
                return n;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await
    .expect("node registered and Ready");
    let st = node.status.unwrap();
    assert_eq!(st.capacity["cpu"], "4");
    assert_eq!(st.allocatable["cpu"], "3500m");
    assert_eq!(st.capacity["memory"], "8Gi");
    assert_eq!(st.addresses[0].address, "127.0.0.1");

    let first: Lease = h.client.get(NODE_LEASE_NAMESPACE, "node-a").await.unwrap();
    let renewed = tokio::time::timeout(PATIENCE, async {
        loop {
            let l: Lease = h.client.get(NODE_LEASE_NAMESPACE, "node-a").await.unwrap();
            if l.spec.as_ref().and_then(|s| s.renew_time) != first.spec.as_ref().and_then(|s| s.renew_time) {
                return l;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await
    .expect("lease renewed");
    assert_eq!(renewed.spec.unwrap().holder_identity, "node-a");

    // The engine going away makes the node NotReady, with the reason.
    h.runtime.set_unreachable(Some("connection refused"));
    tokio::time::timeout(PATIENCE, async {
        loop {
            let n: Node = h.client.get("", "node-a").await.unwrap();
            let ready = n.status.unwrap_or_default().conditions.into_iter().find(|c| c.r#type == "Ready").unwrap();
            if ready.status == "False" {
                assert_eq!(ready.reason, "RuntimeUnavailable");
                assert!(ready.message.contains("connection refused"), "{}", ready.message);
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await
    .expect("node NotReady");
}

/// A node in a container driving its host's engine (hack/cluster.sh) has its own address and
/// publishes instances on one of the host's: both are the node's, and instances are reached
/// (and probed) at the second.
#[tokio::test]
async fn instances_are_published_and_reached_at_the_publish_address() {
    let h = harness_with("node-p", |cfg| {
        cfg.advertise_address = "127.0.0.2".into();
        cfg.publish_address = Some("127.0.0.1".into());
    })
    .await;
    h.create("p1", IMAGE, &[], "64Mi").await;
    let i = h.wait_for("p1", "Ready", |i| status(i).ready).await;
    let c = h.runtime.container(&status(&i).container_id).expect("container exists");
    assert_eq!(c.config.host_ip, "127.0.0.1");
    assert_eq!(status(&i).address, format!("127.0.0.1:{}", c.status.host_port.unwrap()));
    let node: Node = h.client.get("", "node-p").await.unwrap();
    let addresses: Vec<String> = node.status.unwrap().addresses.into_iter().map(|a| a.address).collect();
    assert_eq!(addresses, ["127.0.0.2", "node-p", "127.0.0.1"]);
}

/// An agent that advertises container addresses publishes its instances' network on its Node;
/// an instance's own address only once a probe reached it from the agent's host (the fake's
/// containers have none; `e2e` checks that `stratus up`'s gateway reaches a real one there,
/// and the probe's tests when an address counts as reached). One that does not advertise
/// publishes neither.
#[tokio::test]
async fn container_addresses_are_advertised_only_when_configured_and_reached() {
    let h = harness_with("node-ca", |cfg| cfg.advertise_container_address = true).await;
    let mut spec = container(IMAGE, &[], "64Mi");
    spec.ports = vec![stratus_api::v1::ContainerPort { container_port: 9090, ..Default::default() }];
    h.create_with("ca1", spec).await;
    let i = h.wait_for("ca1", "Ready", |i| status(i).ready).await;
    let c = h.runtime.container(&status(&i).container_id).expect("container exists");
    assert_eq!(c.status.ip, None);
    assert_eq!(status(&i).container_address, "", "no address reached from here: none advertised");
    assert_eq!(status(&i).address, format!("127.0.0.1:{}", c.status.host_port.unwrap()));
    // The node's status is written on its own clock: watch for the write that carries them.
    let wanted =
        |n: &Node| n.status.as_ref().is_some_and(|s| s.instance_cidrs == [stratus_agent::runtime::fake::FAKE_SUBNET]);
    let params = ListParams { field_selector: "metadata.name=node-ca".into(), ..Default::default() };
    let list = h.client.list::<Node>(&params).await.unwrap();
    if !list.items.iter().any(wanted) {
        let mut changes = h.client.watch::<Node>(&params, &list.resource_version, false).await.unwrap();
        tokio::time::timeout(Duration::from_secs(10), async {
            while let Some(ev) = changes.next().await {
                if let WatchEvent::Added(n) | WatchEvent::Modified(n) = ev.unwrap()
                    && wanted(&n)
                {
                    return;
                }
            }
            panic!("the watch of node-ca ended");
        })
        .await
        .expect("the node publishes its instance network");
    }

    let h = harness("node-nca").await;
    h.create("nca1", IMAGE, &[], "64Mi").await;
    let i = h.wait_for("nca1", "Ready", |i| status(i).ready).await;
    assert_eq!(status(&i).container_address, "");
    let node: Node = h.client.get("", "node-nca").await.unwrap();
    assert!(node.status.unwrap().instance_cidrs.is_empty());
}

#[tokio::test]
async fn runs_an_instance_until_ready_with_the_runtime_contract() {
    let h = harness("node-b").await;
    h.create("i1", IMAGE, &[], "64Mi").await;
    let i = h.wait_for("i1", "Ready", |i| status(i).ready).await;
    let st = status(&i);
    assert_eq!(st.phase, "Running");
    assert!(i.meta().finalizers.contains(&FINALIZER.to_string()));
    assert_eq!(st.image_digest, "127.0.0.1:5000/hello@sha256:abc");
    assert!(st.started_at.is_some());
    let c = h.runtime.container(&st.container_id).expect("container exists");
    assert_eq!(st.address, format!("127.0.0.1:{}", c.status.host_port.unwrap()));
    let env: std::collections::HashMap<_, _> = c.config.env.iter().cloned().collect();
    assert_eq!(env["PORT"], "8080");
    assert_eq!(env["K_SERVICE"], "hello");
    assert_eq!(env["K_CONFIGURATION"], "hello");
    assert_eq!(env["K_REVISION"], "hello-00001");
    assert_eq!(c.config.nano_cpus, 500_000_000);
    assert_eq!(c.config.memory_bytes, 64 << 20);
    assert_eq!(c.config.labels[labels::INSTANCE_UID], i.meta().uid);
    assert_eq!(c.config.labels[labels::NODE], "node-b");
    assert!(c.config.pids_limit > 0);
    assert!(h.runtime.pulls().is_empty(), "an image present locally was pulled (IfNotPresent)");

    // Usage samples reach the status.
    h.runtime.set_usage(&st.container_id, stratus_agent::runtime::Usage { cpu_millis: 120, memory_bytes: 10 << 20 });
    h.wait_for("i1", "usage", |i| status(i).usage.is_some_and(|u| u.cpu_millis == 120 && u.memory_bytes == 10 << 20))
        .await;
}

#[tokio::test]
async fn crashes_restart_with_growing_backoff_and_are_counted_once() {
    let h = harness("node-c").await;
    h.create("crash", IMAGE, &["crash"], "64Mi").await;
    let i = h.wait_for("crash", "Ready", |i| status(i).ready).await;
    let first = status(&i).container_id;
    h.runtime.log(&first, stratus_agent::runtime::LogStream::Stderr, "panic: boom");
    h.runtime.exit(&first, 3, false);
    let i = h.wait_for("crash", "a counted restart", |i| status(i).restart_count == 1).await;
    let st = status(&i);
    assert_eq!(st.exit_code, Some(3));
    assert_eq!(st.reason, "CrashLoopBackOff");
    assert!(st.message.contains("exited with code 3") && st.message.contains("panic: boom"), "{}", st.message);
    assert!(st.message.contains("back-off 200ms"), "{}", st.message);
    // It comes back in a new container after the backoff.
    let i = h.wait_for("crash", "a new container", |i| status(i).ready && status(i).container_id != first).await;
    assert_eq!(status(&i).restart_count, 1, "a restart was counted twice");
    assert!(h.runtime.container(&first).is_none(), "the exited container was not removed");

    // The second crash backs off twice as long as the first.
    h.runtime.exit(&status(&i).container_id, 1, false);
    let i = h.wait_for("crash", "a second restart", |i| status(i).restart_count == 2).await;
    assert!(status(&i).message.contains("back-off 400ms"), "{}", status(&i).message);
    assert_eq!(status(&i).exit_code, Some(1));
}

#[tokio::test]
async fn oom_kills_are_reported() {
    let h = harness("node-d").await;
    h.create("hog", IMAGE, &["oom"], "64Mi").await;
    let i = h.wait_for("hog", "Ready", |i| status(i).ready).await;
    h.runtime.exit(&status(&i).container_id, 137, true);
    let i = h.wait_for("hog", "OOMKilled", |i| status(i).reason == "OOMKilled").await;
    let st = status(&i);
    assert_eq!(st.exit_code, Some(137));
    assert!(st.message.contains("memory limit of 64Mi"), "{}", st.message);
}

#[tokio::test]
async fn a_missing_image_backs_off_without_a_tight_loop() {
    let h = harness("node-e").await;
    let image = "127.0.0.1:5000/nope:v1";
    h.runtime.fail_pull(image, "manifest for 127.0.0.1:5000/nope:v1 not found: manifest unknown");
    h.create("nope", image, &[], "64Mi").await;
    let i = h.wait_for("nope", "ErrImagePull", |i| status(i).reason == "ErrImagePull").await;
    assert!(status(&i).message.contains("manifest unknown"), "{}", status(&i).message);
    let i = h.wait_for("nope", "ImagePullBackOff", |i| status(i).reason == "ImagePullBackOff").await;
    assert_eq!(status(&i).phase, "Pending");
    // Doubling from 200 ms: within ~1.5 s at most a handful of attempts.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let pulls = h.runtime.pulls().len();
    assert!((2..=6).contains(&pulls), "{pulls} pulls: not backing off");
}

#[tokio::test]
async fn never_ready_containers_stay_not_ready_with_the_probe_message() {
    let h = harness("node-f").await;
    let image = "127.0.0.1:5000/silent:v1";
    h.runtime.add_image(image, "silent@sha256:1");
    h.runtime.never_listen(image);
    h.create("silent", image, &[], "64Mi").await;
    let i = h.wait_for("silent", "a probe message", |i| status(i).message.contains("readiness probe failed")).await;
    let st = status(&i);
    assert!(!st.ready);
    assert_eq!(st.phase, "Running");
    assert_eq!(st.reason, "ContainersNotReady");
}

/// Cloud Run's startup CPU boost: the container starts with more CPU than its limit (twice it,
/// at least one CPU, at most the node's), and gets its limit back once ready, without a
/// restart; one that never gets ready keeps the boost.
#[tokio::test]
async fn the_startup_cpu_boost_lasts_until_the_instance_is_ready() {
    let h = harness("node-boost").await;
    let node_cpus = std::thread::available_parallelism().map_or(1, |n| i64::try_from(n.get()).unwrap());
    // Twice the limit of 500m is one CPU, within any node.
    let boosted = 1_000_000_000i64.min(node_cpus * 1_000_000_000);
    let mut inst = h.instance("boosted", IMAGE, &[], "64Mi");
    inst.spec.as_mut().unwrap().startup_cpu_boost = Some(true);
    h.client.create(inst).await.unwrap();
    let i = h.wait_for("boosted", "Ready", |i| status(i).ready).await;
    let id = status(&i).container_id;
    let lowered = tokio::time::timeout(PATIENCE, async {
        loop {
            if let Some(update) = h.runtime.cpu_updates().into_iter().find(|(c, _, _)| *c == id) {
                return update;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await
    .expect("the boost ends once the instance is ready");
    assert_eq!(lowered, (id.clone(), boosted, 500_000_000), "started boosted, lowered to the limit");
    assert_eq!(h.runtime.container(&id).unwrap().config.nano_cpus, 500_000_000);
    // Lowered once, and the same container goes on: no restart. A usage sample that reaches
    // the status proves later reconciles of the ready instance ran (they lower nothing more).
    let sample = stratus_agent::runtime::Usage { cpu_millis: 77, memory_bytes: 7 << 20 };
    h.runtime.set_usage(&id, sample);
    let i = h.wait_for("boosted", "a later reconcile", |i| status(i).usage.is_some_and(|u| u.cpu_millis == 77)).await;
    assert_eq!(status(&i).container_id, id);
    assert_eq!(status(&i).restart_count, 0);
    assert_eq!(h.runtime.cpu_updates().iter().filter(|(c, _, _)| *c == id).count(), 1);

    // Without the boost nothing changes; never ready, the boost stays.
    h.create("plain", IMAGE, &[], "64Mi").await;
    let plain = status(&h.wait_for("plain", "Ready", |i| status(i).ready).await).container_id;
    assert_eq!(h.runtime.container(&plain).unwrap().config.nano_cpus, 500_000_000);
    let silent = "127.0.0.1:5000/silent:v1";
    h.runtime.add_image(silent, "silent@sha256:1");
    h.runtime.never_listen(silent);
    let mut inst = h.instance("slow", silent, &[], "64Mi");
    inst.spec.as_mut().unwrap().startup_cpu_boost = Some(true);
    h.client.create(inst).await.unwrap();
    let i = h.wait_for("slow", "a probe message", |i| status(i).message.contains("readiness probe failed")).await;
    assert_eq!(h.runtime.container(&status(&i).container_id).unwrap().config.nano_cpus, boosted);
    assert!(h.runtime.cpu_updates().iter().all(|(c, _, _)| *c == id), "{:?}", h.runtime.cpu_updates());
}

#[tokio::test]
async fn deleting_stops_gracefully_then_releases_the_instance() {
    let h = harness("node-g").await;
    h.create("del", IMAGE, &[], "64Mi").await;
    let i = h.wait_for("del", "Ready", |i| status(i).ready).await;
    let id = status(&i).container_id;
    let params = ListParams { field_selector: "metadata.name=del".into(), ..Default::default() };
    let mut w = h.client.watch::<Instance>(&params, &i.meta().resource_version, false).await.unwrap();
    h.client.delete::<Instance>("default", "del").await.unwrap();
    let mut saw_finished = false;
    let mut saw_not_ready_first = false;
    tokio::time::timeout(PATIENCE, async {
        while let Some(ev) = w.next().await {
            match ev.unwrap() {
                WatchEvent::Modified(i) => {
                    let st = status(&i);
                    // The first write of a deletion: out of Endpoints while the container still runs.
                    if st.reason == "Terminating" && !st.ready && st.container_id == id && st.finished_at.is_none() {
                        saw_not_ready_first = true;
                    }
                    if st.finished_at.is_some() {
                        saw_finished = true;
                    }
                }
                WatchEvent::Deleted(_) => return,
                _ => {}
            }
        }
    })
    .await
    .expect("instance deleted");
    assert!(saw_not_ready_first, "the instance was not marked not-ready before its container went");
    assert!(saw_finished, "finishedAt was never recorded");
    assert!(h.runtime.container(&id).is_none(), "the container is still there");
    assert_eq!(h.runtime.stops(), vec![(id.clone(), Duration::from_secs(7))], "not stopped with the grace period");
    assert!(h.runtime.containers().is_empty());
}

#[tokio::test]
async fn a_restarted_agent_adopts_containers_and_removes_orphans() {
    let mut h = harness("node-h").await;
    h.create("keep", IMAGE, &[], "64Mi").await;
    let i = h.wait_for("keep", "Ready", |i| status(i).ready).await;
    let id = status(&i).container_id;
    h.stop_agent().await;

    // Meanwhile someone leaves a container with Stratus labels that no Instance claims.
    let orphan = h.runtime.insert(
        ContainerConfig {
            name: "orphan".into(),
            image: IMAGE.into(),
            labels: [
                (labels::NODE.to_string(), "node-h".to_string()),
                (labels::INSTANCE_UID.to_string(), "no-such-uid".to_string()),
            ]
            .into(),
            ..Default::default()
        },
        true,
    );
    h.run_agent();
    tokio::time::timeout(PATIENCE, async {
        while h.runtime.container(&orphan).is_some() {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await
    .expect("orphan removed");
    let i: Instance = h.client.get("default", "keep").await.unwrap();
    assert_eq!(status(&i).container_id, id, "the running container was replaced");
    assert!(h.runtime.container(&id).is_some_and(|c| c.status.running));
    assert_eq!(status(&i).restart_count, 0);
}

/// `default/name` on the harness's node, taking `DB` from key `password` of Secret `db` and
/// `OPT` from a Secret that may be missing.
fn with_secret_env(h: &Harness, name: &str) -> Instance {
    use stratus_api::v1::{EnvVar, EnvVarSource, SecretKeySelector};
    let from = |var: &str, secret: &str, key: &str, optional: Option<bool>| EnvVar {
        name: var.into(),
        value: String::new(),
        value_from: Some(EnvVarSource {
            secret_key_ref: Some(SecretKeySelector { name: secret.into(), key: key.into(), optional }),
        }),
    };
    let mut inst = h.instance(name, IMAGE, &[], "64Mi");
    inst.spec.as_mut().unwrap().containers[0].env =
        vec![from("DB", "db", "password", None), from("OPT", "nowhere", "k", Some(true))];
    inst
}

#[tokio::test]
async fn variables_from_secrets_are_read_as_the_container_starts() {
    use stratus_api::v1::Secret;
    let h = harness("node-s").await;
    h.client.create(with_secret_env(&h, "i1")).await.unwrap();
    // No Secret yet: the instance waits, saying which one it needs.
    let i = h.wait_for("i1", "a missing secret reported", |i| status(i).reason == "CreateContainerConfigError").await;
    let message = status(&i).message;
    assert!(message.contains("secret \"db\" not found in namespace \"default\" (variable DB)"), "{message}");
    assert!(h.runtime.containers().is_empty());

    // A Secret without the key: the message names the key.
    let mut secret = Secret::default();
    secret.meta_mut().name = "db".into();
    secret.data.insert("user".into(), "app".into());
    let secret = h.client.create(secret).await.unwrap();
    h.wait_for("i1", "a missing key reported", |i| status(i).message.contains("key \"password\" of secret \"db\""))
        .await;

    // With it, the container starts with the value; the optional, missing one is left out.
    let mut secret = secret;
    secret.data.insert("password".into(), "s3cr3t-agent".into());
    h.client.update(secret).await.unwrap();
    let i = h.wait_for("i1", "Ready", |i| status(i).ready).await;
    let c = h.runtime.container(&status(&i).container_id).expect("container exists");
    let env: std::collections::HashMap<_, _> = c.config.env.iter().cloned().collect();
    assert_eq!(env.get("DB").map(String::as_str), Some("s3cr3t-agent"));
    assert!(!env.contains_key("OPT"), "{env:?}");
    // The Instance names the reference, never the value.
    let stored = h.client.get::<Instance>("default", "i1").await.unwrap();
    assert!(!stratus_api::Resource::into_any(stored).to_json().to_string().contains("s3cr3t-agent"));
}

/// Creates the Instance `default/name` of `image`, as [`Harness::create`] does, with `sc` as
/// its container's security context.
async fn create_with_security(h: &Harness, name: &str, image: &str, sc: SecurityContext) -> Instance {
    h.create_with(name, Container { security_context: Some(sc), ..container(image, &[], "64Mi") }).await
}

/// Waits until the instance is refused for its security context, and returns the message.
async fn refused(h: &Harness, name: &str) -> String {
    let i = h.wait_for(name, "the refusal", |i| status(i).reason == "CreateContainerConfigError").await;
    let st = status(&i);
    assert_eq!((st.phase.as_str(), st.ready, st.container_id.as_str()), ("Pending", false, ""));
    let ready = st.conditions.iter().find(|c| c.r#type == "Ready").expect("a Ready condition");
    assert_eq!((ready.status.as_str(), ready.reason.as_str()), ("False", "CreateContainerConfigError"));
    st.message
}

#[tokio::test]
async fn run_as_non_root_with_a_root_image_fails_the_instance_without_a_container() {
    let h = harness("node-i").await;
    let non_root = SecurityContext { run_as_non_root: Some(true), ..Default::default() };
    create_with_security(&h, "root", IMAGE, non_root.clone()).await;
    let message = refused(&h, "root").await;
    assert!(
        message.starts_with("container has runAsNonRoot and image 127.0.0.1:5000/hello:v1 will run as root"),
        "{message}"
    );
    assert!(h.runtime.containers().is_empty(), "a container was made");

    // A non-root uid of its own, or an image with a numeric non-root USER, runs.
    let as_user =
        SecurityContext { run_as_user: Some(1000), read_only_root_filesystem: Some(true), ..non_root.clone() };
    create_with_security(&h, "uid", IMAGE, as_user).await;
    let i = h.wait_for("uid", "Running", |i| status(i).phase == "Running").await;
    let config = h.runtime.container(&status(&i).container_id).unwrap().config;
    assert_eq!(config.user, "1000");
    // A read-only root, with the writable tmpfs at /tmp.
    assert!(config.read_only_root_fs && config.tmp_size_bytes > 0, "{config:?}");
    let image = "127.0.0.1:5000/nonroot:v1";
    h.runtime.add_image(image, "127.0.0.1:5000/nonroot@sha256:def");
    h.runtime.set_image_user(image, "65532");
    create_with_security(&h, "image-user", image, non_root).await;
    h.wait_for("image-user", "Running", |i| status(i).phase == "Running").await;
}

#[tokio::test]
async fn a_node_that_requires_non_root_holds_every_instance_to_it() {
    let runtime = FakeRuntime::new();
    runtime.add_image(IMAGE, "127.0.0.1:5000/hello@sha256:abc");
    let mut agent = AgentConfig::new("node-j");
    agent.require_non_root = true;
    agent.crash_backoff = (Duration::from_millis(200), Duration::from_secs(5));
    let h =
        Harness::start(runtime, HarnessConfig { agent, patience: PATIENCE, termination_grace_period_seconds: 7 }).await;
    h.create("plain", IMAGE, &[], "64Mi").await;
    let message = refused(&h, "plain").await;
    assert!(message.contains("requires every container to run as a non-root user (--require-non-root)"), "{message}");

    // With a numeric non-root USER in the image it runs, on the isolated network, with no
    // capability added.
    h.runtime.set_image_user(IMAGE, "1000");
    let i = h.wait_for("plain", "Running", |i| status(i).phase == "Running").await;
    let c = h.runtime.container(&status(&i).container_id).unwrap();
    assert!(c.config.cap_add.is_empty(), "{:?}", c.config.cap_add);
    assert_eq!(c.config.network, "stratus-instances");
}

//! The services, revisions, autoscaler and garbage-collector controllers against a real
//! in-process API server, with a registry stand-in that resolves `hello:v1` to a digest. No node
//! agent runs: the tests write Instance status as an agent would. No gateway reports demand
//! either: services keep their instances through `minInstances` (1, see [`Harness::service`]),
//! and revisions without traffic scale to zero after a one-second grace.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod cluster;

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use cluster::eventually;
use http_body_util::Full;
use hyper::body::Bytes;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use stratus_api::Resource;
use stratus_api::v1::{
    Condition, Endpoints, EndpointsSpec, EnvVar, Event, Instance, InstanceStatus, ObjectMeta, OwnerReference, Revision,
    Scaling, Service, TrafficTarget,
};
use stratus_apiserver::testing::TestServer;
use stratus_client::{Client, ListParams};
use stratus_controllers::revisions::REVISION_LABEL;
use stratus_controllers::services::{GENERATION_ANNOTATION, SERVICE_LABEL};
use stratus_controllers::{Config, Context, Metrics, autoscaler, gc, revisions, services};
use tokio::sync::watch;

const NS: &str = "default";
const DIGEST: &str = "sha256:8f1a0b2c3d4e5f60718293a4b5c6d7e8f90a1b2c3d4e5f60718293a4b5c6d7e8";

/// An API server, a registry stand-in and the three controllers; all stop when dropped.
struct Harness {
    client: Client,
    /// `127.0.0.1:PORT` of the registry stand-in.
    registry: String,
    stop: watch::Sender<bool>,
    _server: TestServer,
}

impl Drop for Harness {
    fn drop(&mut self) {
        let _ = self.stop.send(true);
    }
}

impl Harness {
    async fn start(config: Config) -> Harness {
        let config = Config {
            autoscale_tick: Duration::from_millis(200),
            scale_to_zero_grace: Duration::from_secs(1),
            ..config
        };
        let server = TestServer::start().await;
        let client = Client::new(&server.endpoint).unwrap().with_token(&server.token);
        let registry = start_registry().await;
        let ctx = Context::new(client.clone(), config, Arc::new(Metrics::default()));
        let (stop, stopped) = watch::channel(false);
        let until = |mut rx: watch::Receiver<bool>| async move {
            let _ = rx.wait_for(|s| *s).await;
        };
        tokio::spawn(services::run(ctx.clone(), until(stopped.clone())));
        tokio::spawn(revisions::run(ctx.clone(), until(stopped.clone())));
        tokio::spawn(autoscaler::run(ctx.clone(), until(stopped.clone())));
        tokio::spawn(gc::run(ctx, until(stopped)));
        Harness { client, registry, stop, _server: server }
    }

    fn image(&self, repo_tag: &str) -> String {
        format!("{}/{repo_tag}", self.registry)
    }

    /// A Service named `name` running `image`, with one environment variable and one instance
    /// at least while it is routable.
    fn service(&self, name: &str, image: &str, greeting: &str) -> Service {
        let mut svc = Service::with_image(name, &self.image(image));
        svc.meta_mut().namespace = NS.into();
        let spec = template_spec(&mut svc);
        spec.scaling = Some(Scaling { min_instances: Some(1), ..Default::default() });
        let containers = &mut spec.containers;
        containers[0].env = vec![EnvVar { name: "GREETING".into(), value: greeting.into(), value_from: None }];
        svc
    }

    async fn apply(&self, svc: Service) -> Service {
        self.client.apply(svc).await.unwrap().0
    }

    async fn service_status(&self, name: &str) -> Service {
        self.client.get::<Service>(NS, name).await.unwrap()
    }

    async fn revisions(&self, service: &str) -> Vec<Revision> {
        let params = ListParams { label_selector: format!("{SERVICE_LABEL}={service}"), ..Default::default() };
        self.client.list::<Revision>(&params).await.unwrap().items
    }

    /// The instances of a revision that are not being deleted.
    async fn instances(&self, revision: &str) -> Vec<Instance> {
        let params = ListParams { label_selector: format!("{REVISION_LABEL}={revision}"), ..Default::default() };
        let items = self.client.list::<Instance>(&params).await.unwrap().items;
        items.into_iter().filter(|i| i.meta().deletion_timestamp.is_none()).collect()
    }

    /// Waits until `revision` has exactly `n` live instances, and returns them.
    async fn instances_of(&self, revision: &str, n: usize) -> Vec<Instance> {
        eventually(&format!("{n} instances of {revision}"), || async {
            let got = self.instances(revision).await;
            if got.len() == n { Ok(got) } else { Err(format!("{} instances", got.len())) }
        })
        .await
    }

    /// Writes an Instance's status as its node agent would.
    async fn agent_reports(&self, name: &str, status: InstanceStatus) {
        loop {
            let mut inst = self.client.get::<Instance>(NS, name).await.unwrap();
            inst.status = Some(status.clone());
            match self.client.update_status(inst).await {
                Ok(_) => return,
                Err(stratus_client::Error::Conflict(_)) => continue,
                Err(e) => panic!("writing the status of {name}: {e}"),
            }
        }
    }

    async fn mark_ready(&self, instances: &[Instance]) {
        for inst in instances {
            let status = InstanceStatus {
                phase: "Running".into(),
                ready: true,
                address: "127.0.0.1:9".into(),
                ..Default::default()
            };
            self.agent_reports(&inst.meta().name, status).await;
        }
    }

    /// Waits until the Service reports condition `type_` with `status`, and returns it.
    async fn service_condition(&self, name: &str, type_: &str, status: &str) -> (Service, Condition) {
        eventually(&format!("service {name} {type_}={status}"), || async {
            let svc = self.service_status(name).await;
            match condition(svc.status.as_ref().map(|s| s.conditions.as_slice()), type_) {
                Some(c) if c.status == status => Ok((svc, c)),
                other => Err(format!("{other:?}")),
            }
        })
        .await
    }

    /// Waits until the Revision reports Ready with `status`, and returns it and the condition.
    async fn revision_ready(&self, name: &str, status: &str) -> (Revision, Condition) {
        eventually(&format!("revision {name} Ready={status}"), || async {
            let rev = match self.client.get::<Revision>(NS, name).await {
                Ok(rev) => rev,
                Err(e) => return Err(e.to_string()),
            };
            match condition(rev.status.as_ref().map(|s| s.conditions.as_slice()), "Ready") {
                Some(c) if c.status == status => Ok((rev, c)),
                other => Err(format!("{other:?}")),
            }
        })
        .await
    }

    /// Waits until the Service's status describes its current generation.
    async fn observed(&self, name: &str) -> Service {
        eventually(&format!("service {name} observed"), || async {
            let svc = self.service_status(name).await;
            let observed = svc.status.as_ref().map_or(0, |s| s.observed_generation);
            if observed == svc.meta().generation { Ok(svc) } else { Err(format!("observed {observed}")) }
        })
        .await
    }

    async fn events(&self, reason: &str) -> Vec<Event> {
        let events = self.client.list::<Event>(&ListParams::default()).await.unwrap().items;
        events.into_iter().filter(|e| e.spec.as_ref().is_some_and(|s| s.reason == reason)).collect()
    }

    /// Waits until exactly `n` distinct events of `reason` were recorded (events are written
    /// just after the change they report).
    async fn expect_events(&self, reason: &str, n: usize) {
        eventually(&format!("{n} {reason} events"), || async {
            let got = self.events(reason).await;
            if got.len() == n { Ok(()) } else { Err(format!("{got:?}")) }
        })
        .await
    }
}

fn template_spec(svc: &mut Service) -> &mut stratus_api::v1::RevisionSpec {
    svc.spec
        .as_mut()
        .and_then(|s| s.template.as_mut())
        .and_then(|t| t.spec.as_mut())
        .expect("a service made by with_image has a template spec")
}

fn condition(conditions: Option<&[Condition]>, type_: &str) -> Option<Condition> {
    conditions.unwrap_or_default().iter().find(|c| c.r#type == type_).cloned()
}

/// A registry that knows one image, `hello:v1`, as the distribution API tells it.
async fn start_registry() -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let service = hyper::service::service_fn(|req: Request<hyper::body::Incoming>| async move {
                Ok::<_, Infallible>(registry_answer(req.method(), req.uri().path()))
            });
            tokio::spawn(hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(stream), service));
        }
    });
    addr.to_string()
}

fn registry_answer(method: &Method, path: &str) -> Response<Full<Bytes>> {
    let known = path == "/v2/hello/manifests/v1" && (method == Method::HEAD || method == Method::GET);
    let mut resp = if known {
        let mut resp = Response::new(Full::new(Bytes::from_static(b"{}")));
        resp.headers_mut().insert("docker-content-digest", DIGEST.parse().unwrap());
        resp
    } else {
        let body = r#"{"errors":[{"code":"MANIFEST_UNKNOWN","message":"manifest unknown"}]}"#;
        let mut resp = Response::new(Full::new(Bytes::from_static(body.as_bytes())));
        *resp.status_mut() = StatusCode::NOT_FOUND;
        resp
    };
    resp.headers_mut().insert("content-type", "application/json".parse().unwrap());
    resp
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_service_gets_pinned_revisions_instances_and_a_status() {
    let h = Harness::start(Config::default()).await;
    let svc = h.apply(h.service("hello", "hello:v1", "one")).await;

    // The revision: named, labelled, owned, pinned.
    let (rev, _) = h.revision_ready("hello-00001", "Unknown").await;
    let meta = rev.meta();
    assert_eq!(meta.labels.get(SERVICE_LABEL).map(String::as_str), Some("hello"));
    assert_eq!(meta.annotations.get(GENERATION_ANNOTATION).map(String::as_str), Some("1"));
    let owner = &meta.owner_references[0];
    assert_eq!(
        (owner.kind.as_str(), owner.name.as_str(), owner.uid.as_str()),
        ("Service", "hello", svc.meta().uid.as_str())
    );
    assert!(owner.controller && owner.block_owner_deletion);
    let pinned = format!("{}/hello@{DIGEST}", h.registry);
    let rev = eventually("hello-00001 pinned", || async {
        let rev = h.client.get::<Revision>(NS, "hello-00001").await.unwrap();
        let digest = rev.status.as_ref().map(|s| s.image_digest.clone()).unwrap_or_default();
        if digest.is_empty() { Err("no digest".to_string()) } else { Ok(rev) }
    })
    .await;
    assert_eq!(rev.status.as_ref().map(|s| s.image_digest.as_str()), Some(pinned.as_str()));

    // One instance of the pinned image, everything an agent needs.
    let instances = h.instances_of("hello-00001", 1).await;
    let inst = &instances[0];
    assert!(inst.meta().name.starts_with("hello-00001-") && inst.meta().name.len() == "hello-00001-".len() + 5);
    assert_eq!(inst.meta().labels.get(SERVICE_LABEL).map(String::as_str), Some("hello"));
    assert_eq!(inst.meta().labels.get(REVISION_LABEL).map(String::as_str), Some("hello-00001"));
    assert_eq!(inst.meta().owner_references[0].uid, rev.meta().uid);
    let spec = inst.spec.clone().unwrap_or_default();
    assert_eq!(spec.containers[0].image, pinned);
    assert_eq!(spec.containers[0].env[0].value, "one");
    assert_eq!((spec.service_name.as_str(), spec.revision_name.as_str()), ("hello", "hello-00001"));
    assert_eq!(
        (spec.container_concurrency, spec.timeout_seconds, spec.termination_grace_period_seconds),
        (80, 300, 10)
    );
    assert!(spec.node_name.is_empty(), "the scheduler binds");
    assert_eq!(spec.cpu_throttling, Some(true), "the revision's billing mode (request-based by default) is copied");

    // Ready instance → ready revision → ready service, with its URL and traffic.
    h.mark_ready(&instances).await;
    let (rev, _) = h.revision_ready("hello-00001", "True").await;
    let rs = rev.status.clone().unwrap_or_default();
    assert_eq!((rs.desired_instances, rs.actual_instances, rs.ready_instances), (1, 1, 1));
    assert_eq!(rs.observed_generation, rev.meta().generation);
    assert_eq!(rs.image_digest, pinned, "the revisions controller keeps the digest");
    let (svc, _) = h.service_condition("hello", "Ready", "True").await;
    let st = svc.status.clone().unwrap_or_default();
    assert_eq!(st.url, "http://hello.default.localhost:8080");
    assert_eq!(st.address.map(|a| a.url), Some(st.url.clone()));
    assert_eq!(st.observed_generation, svc.meta().generation);
    assert_eq!(
        (st.latest_created_revision_name.as_str(), st.latest_ready_revision_name.as_str()),
        ("hello-00001", "hello-00001")
    );
    assert_eq!(st.traffic.len(), 1);
    assert_eq!(st.traffic[0].revision_name, "hello-00001");
    assert_eq!((st.traffic[0].latest_revision, st.traffic[0].percent), (Some(true), Some(100)));
    for type_ in ["ConfigurationsReady", "RoutesReady"] {
        assert_eq!(condition(Some(&st.conditions), type_).map(|c| c.status), Some("True".into()), "{type_}");
    }
    h.expect_events("RevisionCreated", 1).await;

    // A changed environment is a new revision; traffic moves once it is ready, and the old
    // revision, now without traffic, gives up its instance but stays ready.
    h.apply(h.service("hello", "hello:v1", "two")).await;
    let (_, waiting) = h.service_condition("hello", "ConfigurationsReady", "Unknown").await;
    assert!(waiting.message.contains("hello-00002"), "{}", waiting.message);
    let instances = h.instances_of("hello-00002", 1).await;
    assert_eq!(instances[0].spec.as_ref().map(|s| s.containers[0].env[0].value.as_str()), Some("two"));
    assert_eq!(instances[0].spec.as_ref().map(|s| s.containers[0].image.as_str()), Some(pinned.as_str()));
    let during = h.service_status("hello").await.status.unwrap_or_default();
    assert_eq!(during.traffic[0].revision_name, "hello-00001", "traffic waits for the new revision");
    h.mark_ready(&instances).await;
    let svc = eventually("traffic on hello-00002", || async {
        let svc = h.service_status("hello").await;
        let st = svc.status.clone().unwrap_or_default();
        if st.latest_ready_revision_name == "hello-00002" && st.traffic[0].revision_name == "hello-00002" {
            Ok(svc)
        } else {
            Err(format!("{st:?}"))
        }
    })
    .await;
    assert_eq!(svc.status.map(|s| s.latest_created_revision_name), Some("hello-00002".into()));
    h.instances_of("hello-00001", 0).await;
    h.revision_ready("hello-00001", "True").await;

    // The same template with other traffic makes no revision; a tag gets its URL and routes
    // to (and so starts an instance of) the old revision.
    let mut again = h.service("hello", "hello:v1", "two");
    again.spec.as_mut().unwrap().traffic = vec![
        TrafficTarget { latest_revision: Some(true), percent: Some(100), ..Default::default() },
        TrafficTarget {
            revision_name: "hello-00001".into(),
            percent: Some(0),
            tag: "old".into(),
            ..Default::default()
        },
    ];
    h.apply(again).await;
    let svc = h.observed("hello").await;
    let names: Vec<String> = h.revisions("hello").await.iter().map(|r| r.meta().name.clone()).collect();
    assert_eq!(names, ["hello-00001", "hello-00002"]);
    let st = svc.status.unwrap_or_default();
    assert_eq!(st.traffic.len(), 2);
    assert_eq!(st.traffic[1].revision_name, "hello-00001");
    assert_eq!(st.traffic[1].url, "http://old-hello.default.localhost:8080");
    assert_eq!(st.traffic[1].latest_revision, Some(false));
    h.instances_of("hello-00001", 1).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_changed_template_under_a_taken_name_is_refused() {
    let h = Harness::start(Config::default()).await;
    let mut blue = h.service("hello", "hello:v1", "one");
    let template = blue.spec.as_mut().and_then(|s| s.template.as_mut()).unwrap();
    template.metadata = Some(ObjectMeta { name: "hello-blue".into(), ..Default::default() });
    let stored = h.apply(blue.clone()).await;
    h.revision_ready("hello-blue", "Unknown").await;

    // The same service changing its template under the name: refused at admission, as
    // Knative's webhook refuses it, and nothing is stored.
    let mut changed = blue.clone();
    template_spec(&mut changed).containers[0].env[0].value = "two".into();
    let err = h.client.apply(changed).await.unwrap_err();
    assert!(matches!(err, stratus_client::Error::Invalid(_)), "{err:?}");
    assert!(err.to_string().contains("spec.template.metadata.name"), "{err}");
    let now = h.service_status("hello").await;
    assert_eq!(now.meta().generation, stored.meta().generation);
    assert_eq!(now.spec, stored.spec);

    // Another service asking for the name: its controller refuses, saying whose it is.
    let mut other = h.service("other", "hello:v1", "three");
    let template = other.spec.as_mut().and_then(|s| s.template.as_mut()).unwrap();
    template.metadata = Some(ObjectMeta { name: "hello-blue".into(), ..Default::default() });
    h.apply(other).await;
    let (svc, ready) = h.service_condition("other", "Ready", "False").await;
    assert_eq!(ready.reason, "RevisionNameTaken");
    assert!(ready.message.contains("hello-blue"), "{}", ready.message);
    let configurations = condition(svc.status.as_ref().map(|s| s.conditions.as_slice()), "ConfigurationsReady");
    assert_eq!(configurations.map(|c| c.reason), Some("RevisionNameTaken".into()));
    let names: Vec<String> = h.revisions("hello").await.iter().map(|r| r.meta().name.clone()).collect();
    assert_eq!(names, ["hello-blue"]);
    h.expect_events("RevisionNameTaken", 1).await;

    // The same template again under its name is no change at all.
    h.apply(blue).await;
    let (_, configurations) = h.service_condition("hello", "ConfigurationsReady", "Unknown").await;
    assert_eq!(configurations.reason, "Deploying");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revisions_that_cannot_run_say_why() {
    let h = Harness::start(Config::default()).await;

    // An image the registry does not know.
    h.apply(h.service("nope", "nope:v1", "one")).await;
    let (rev, ready) = h.revision_ready("nope-00001", "False").await;
    assert_eq!(ready.reason, "ContainerMissing");
    assert_eq!(ready.message, format!("{}/nope:v1: manifest unknown", h.registry));
    let rs = rev.status.unwrap_or_default();
    assert!(rs.image_digest.is_empty());
    assert_eq!(condition(Some(&rs.conditions), "ImageResolved").map(|c| c.status), Some("False".into()));
    let (svc, failed) = h.service_condition("nope", "Ready", "False").await;
    assert_eq!(failed.reason, "RevisionFailed");
    assert!(failed.message.contains("nope-00001") && failed.message.contains("manifest unknown"), "{}", failed.message);
    let st = svc.status.unwrap_or_default();
    assert_eq!(condition(Some(&st.conditions), "ConfigurationsReady").map(|c| c.reason), Some("RevisionFailed".into()));
    assert_eq!(condition(Some(&st.conditions), "RoutesReady").map(|c| c.status), Some("False".into()));
    // The route points at the failing revision, so the gateway can tell waiting clients why.
    assert_eq!(st.traffic.iter().map(|t| t.revision_name.as_str()).collect::<Vec<_>>(), ["nope-00001"]);
    // One on the service, one on the revision.
    h.expect_events("RevisionFailed", 2).await;
    assert_eq!(condition(Some(&rs.conditions), "ImageResolved").map(|c| c.reason), Some("ImageNotFound".into()));

    // A registry that cannot be reached.
    let mut down = Service::with_image("down", "127.0.0.1:1/hello:v1");
    down.meta_mut().namespace = NS.into();
    h.apply(down).await;
    let (_, ready) = h.revision_ready("down-00001", "False").await;
    assert_eq!(ready.reason, "ContainerMissing");
    assert!(ready.message.contains("cannot reach the registry 127.0.0.1:1"), "{}", ready.message);
    // Its instance still starts, with the image as written: the node may reach what the
    // controller could not.
    let instances = h.instances_of("down-00001", 1).await;
    assert_eq!(instances[0].spec.as_ref().map(|s| s.containers[0].image.clone()), Some("127.0.0.1:1/hello:v1".into()));
    // The image the registry said does not exist gets no instance: it would only pull in vain
    // and hold room on a node (it failed before the other service was even applied).
    assert!(h.instances("nope-00001").await.is_empty());

    // An image pulled Never lives on the nodes only: no registry is asked.
    let mut local = Service::with_image("local", "stratus/local:dev");
    local.meta_mut().namespace = NS.into();
    template_spec(&mut local).containers[0].image_pull_policy = "Never".into();
    h.apply(local).await;
    let instances = h.instances_of("local-00001", 1).await;
    assert_eq!(instances[0].spec.as_ref().map(|s| s.containers[0].image.as_str()), Some("stratus/local:dev"));
    let rev = h.client.get::<Revision>(NS, "local-00001").await.unwrap();
    let resolved = condition(rev.status.as_ref().map(|s| s.conditions.as_slice()), "ImageResolved");
    assert_eq!(resolved.map(|c| (c.status, c.reason)), Some(("True".into(), "PullPolicyNever".into())));

    // A container that keeps exiting: its exit code, and its last line, reach the Service.
    h.apply(h.service("crash", "hello:v1", "one")).await;
    let instances = h.instances_of("crash-00001", 1).await;
    let crashing = InstanceStatus {
        phase: "Running".into(),
        reason: "CrashLoopBackOff".into(),
        exit_code: Some(1),
        restart_count: 3,
        message: "the container exited with code 1; its last line: DATABASE_URL is not set; back-off 40s restarting it"
            .into(),
        ..Default::default()
    };
    h.agent_reports(&instances[0].meta().name, crashing).await;
    let (_, ready) = h.revision_ready("crash-00001", "False").await;
    assert_eq!(ready.reason, "ExitCode1");
    assert!(ready.message.ends_with("its last line: DATABASE_URL is not set"), "{}", ready.message);
    let (_, failed) = h.service_condition("crash", "Ready", "False").await;
    assert_eq!(failed.reason, "RevisionFailed");
    assert!(failed.message.contains("ExitCode1") && failed.message.contains("DATABASE_URL"), "{}", failed.message);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_instances_are_replaced_and_a_surplus_is_removed() {
    let h = Harness::start(Config::default()).await;
    let mut svc = h.service("hello", "hello:v1", "one");
    template_spec(&mut svc).scaling = Some(Scaling { min_instances: Some(2), ..Default::default() });
    h.apply(svc.clone()).await;
    let instances = h.instances_of("hello-00001", 2).await;
    h.mark_ready(&instances).await;
    h.service_condition("hello", "Ready", "True").await;

    // A failed instance (its node was lost, say) is deleted and replaced.
    let lost = instances[0].meta().name.clone();
    let failed = InstanceStatus { phase: "Failed".into(), reason: "NodeLost".into(), ..Default::default() };
    h.agent_reports(&lost, failed).await;
    let replaced = eventually("the failed instance replaced", || async {
        let now = h.instances("hello-00001").await;
        let names: Vec<String> = now.iter().map(|i| i.meta().name.clone()).collect();
        if now.len() == 2 && !names.contains(&lost) { Ok(now) } else { Err(format!("{names:?}")) }
    })
    .await;
    assert!(replaced.iter().any(|i| i.meta().name == instances[1].meta().name), "the healthy one stays");
    assert!(h.client.get::<Instance>(NS, &lost).await.is_err(), "the failed one is gone");

    // Fewer minimum instances make a new revision with fewer instances; once it serves, the
    // old revision's instances are a surplus and go.
    template_spec(&mut svc).scaling = Some(Scaling { min_instances: Some(1), ..Default::default() });
    h.apply(svc).await;
    let instances = h.instances_of("hello-00002", 1).await;
    h.mark_ready(&instances).await;
    h.instances_of("hello-00001", 0).await;
    // The revision's status catches up with its instances a moment later.
    let rs = eventually("the old revision's status at zero", || async {
        let rev = h.client.get::<Revision>(NS, "hello-00001").await.map_err(|e| e.to_string())?;
        let rs = rev.status.unwrap_or_default();
        if (rs.desired_instances, rs.actual_instances) == (0, 0) { Ok(rs) } else { Err(format!("{rs:?}")) }
    })
    .await;
    assert_eq!(rs.scale_reason, "scaled to zero after 1s without requests (receives no traffic)");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retention_deletes_old_revisions_that_traffic_does_not_name() {
    let h = Harness::start(Config { revision_retention: 1, ..Default::default() }).await;
    h.apply(h.service("hello", "hello:v1", "v1")).await;
    let instances = h.instances_of("hello-00001", 1).await;
    h.mark_ready(&instances).await;
    h.service_condition("hello", "Ready", "True").await;

    // Traffic pinned to the first revision; three more templates.
    for (i, greeting) in ["v2", "v3", "v4"].iter().enumerate() {
        let mut svc = h.service("hello", "hello:v1", greeting);
        svc.spec.as_mut().unwrap().traffic = vec![TrafficTarget {
            revision_name: "hello-00001".into(),
            latest_revision: Some(false),
            percent: Some(100),
            ..Default::default()
        }];
        h.apply(svc).await;
        h.revision_ready(&format!("hello-0000{}", i + 2), "Unknown").await;
    }
    let names = eventually("retention applied", || async {
        let names: Vec<String> = h.revisions("hello").await.iter().map(|r| r.meta().name.clone()).collect();
        if names.len() == 3 { Ok(names) } else { Err(format!("{names:?}")) }
    })
    .await;
    // Kept: the one traffic names, the latest created, and the newest other one.
    assert_eq!(names, ["hello-00001", "hello-00003", "hello-00004"]);
    h.expect_events("RevisionDeleted", 1).await;
    // The deleted revision's instances went with it.
    h.instances_of("hello-00002", 0).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleting_a_service_deletes_its_revisions_instances_and_endpoints() {
    let h = Harness::start(Config::default()).await;
    h.apply(h.service("hello", "hello:v1", "one")).await;
    let instances = h.instances_of("hello-00001", 1).await;
    let rev = h.client.get::<Revision>(NS, "hello-00001").await.unwrap();
    // The endpoints controller does not run here: make its object by hand.
    let mut endpoints = Endpoints {
        spec: Some(EndpointsSpec { revision_name: "hello-00001".into(), addresses: vec![] }),
        ..Default::default()
    };
    let meta = endpoints.meta_mut();
    meta.name = "hello-00001".into();
    meta.namespace = NS.into();
    meta.owner_references = vec![OwnerReference {
        api_version: stratus_api::API_VERSION.into(),
        kind: "Revision".into(),
        name: "hello-00001".into(),
        uid: rev.meta().uid.clone(),
        controller: true,
        block_owner_deletion: true,
    }];
    h.client.create(endpoints).await.unwrap();
    // An object whose owner never existed is collected too; one without owners is left alone.
    let mut orphan = instances[0].clone();
    let meta = orphan.meta_mut();
    meta.name = "orphan".into();
    meta.resource_version.clear();
    meta.owner_references[0].uid = "no-such-uid".into();
    h.client.create(orphan).await.unwrap();
    let mut unowned = instances[0].clone();
    let meta = unowned.meta_mut();
    meta.name = "unowned".into();
    meta.resource_version.clear();
    meta.owner_references.clear();
    meta.labels.clear();
    h.client.create(unowned).await.unwrap();

    h.client.delete::<Service>(NS, "hello").await.unwrap();
    eventually("everything of hello gone", || async {
        let revisions = h.revisions("hello").await.len();
        let instances = h.instances("hello-00001").await.len();
        let endpoints = h.client.get::<Endpoints>(NS, "hello-00001").await.is_ok();
        if revisions == 0 && instances == 0 && !endpoints {
            Ok(())
        } else {
            Err(format!("{revisions} revisions, {instances} instances, endpoints: {endpoints}"))
        }
    })
    .await;
    assert!(h.client.get::<Instance>(NS, "unowned").await.is_ok());
}

/// Creates tenant `name` with `quota`, and its namespace `{name}-ns`.
async fn tenant_with_namespace(client: &Client, name: &str, quota: Option<stratus_api::v1::TenantQuota>) {
    let mut tenant = stratus_api::v1::Tenant {
        spec: Some(stratus_api::v1::TenantSpec { quota, ..Default::default() }),
        ..Default::default()
    };
    tenant.meta_mut().name = name.into();
    client.create(tenant).await.unwrap();
    let mut ns = stratus_api::v1::Namespace {
        spec: Some(stratus_api::v1::NamespaceSpec { tenant: name.into() }),
        ..Default::default()
    };
    ns.meta_mut().name = format!("{name}-ns");
    client.create(ns).await.unwrap();
}

#[tokio::test]
async fn a_tenants_quota_stops_its_revisions_at_the_quota_and_no_one_elses() {
    let h = Harness::start(Config::default()).await;
    let quota = stratus_api::v1::TenantQuota { max_instances: Some(3), ..Default::default() };
    tenant_with_namespace(&h.client, "small", Some(quota)).await;
    tenant_with_namespace(&h.client, "big", None).await;
    let wants_two = |name: &str, namespace: &str| {
        let mut svc = h.service(name, "hello:v1", "hi");
        svc.meta_mut().namespace = namespace.into();
        template_spec(&mut svc).scaling = Some(Scaling { min_instances: Some(2), ..Default::default() });
        svc
    };
    h.apply(wants_two("first", "small-ns")).await;
    h.instances_of("first-00001", 2).await;
    h.apply(wants_two("second", "small-ns")).await;
    h.apply(wants_two("other", "big-ns")).await;
    // The tenant holds 3 instances: the second service gets the one left, and says why not more.
    h.instances_of("second-00001", 1).await;
    let rev = eventually("the revision to say it is over quota", || async {
        let rev: Revision = h.client.get("small-ns", "second-00001").await.map_err(|e| e.to_string())?;
        let cond = rev.status.as_ref().and_then(|s| s.conditions.iter().find(|c| c.r#type == "WithinQuota").cloned());
        match cond {
            Some(c) if c.status == "False" => Ok(c),
            other => Err(format!("{other:?}")),
        }
    })
    .await;
    assert_eq!(rev.reason, "QuotaExceeded");
    assert!(rev.message.contains("exceeded quota of tenant \"small\": at most 3 instances"), "{}", rev.message);
    let events = h
        .client
        .list::<stratus_api::v1::Event>(&ListParams { namespace: "small-ns".into(), ..Default::default() })
        .await
        .unwrap();
    assert!(
        events.items.iter().any(|e| e
            .spec
            .as_ref()
            .is_some_and(|s| s.reason == "QuotaExceeded" && s.message.contains("at most 3 instances"))),
        "{:?}",
        events.items
    );
    // Another tenant is not held back, and the quota holds: still exactly 1.
    h.instances_of("other-00001", 2).await;
    assert_eq!(h.instances("second-00001").await.len(), 1);
    // A service whose minimum alone passes the quota is refused at once.
    let mut too_big = wants_two("huge", "small-ns");
    template_spec(&mut too_big).scaling = Some(Scaling { min_instances: Some(4), ..Default::default() });
    let refused = h.client.apply(too_big).await.unwrap_err();
    assert!(matches!(&refused, stratus_client::Error::Forbidden(m) if m.contains("minInstances 4")), "{refused}");
}

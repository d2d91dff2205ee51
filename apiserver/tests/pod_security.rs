//! The restricted profile at the API: a Service (Stratus or Knative, JSON or YAML) that adds a
//! capability beyond NET_BIND_SERVICE is refused naming the field, and nothing is stored.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::*;
use serde_json::json;

const SVCS: &str = "/apis/stratus.dev/v1/namespaces/default/services";

#[tokio::test]
async fn a_service_adding_a_dangerous_capability_is_refused_naming_the_field() {
    let s = start().await;
    let coll = format!("{}{SVCS}", s.endpoint);
    let field = "spec.template.spec.containers[0].securityContext.capabilities.add[1]";
    for (i, cap) in ["SYS_ADMIN", "SYS_MODULE", "DAC_READ_SEARCH", "ALL"].into_iter().enumerate() {
        let mut svc = hello(&format!("caps-{i}"));
        svc["spec"]["template"]["spec"]["containers"][0]["securityContext"] =
            json!({"capabilities": {"add": ["NET_BIND_SERVICE", cap]}});
        let r = send_json("POST", &coll, &svc).await;
        assert_eq!((r.status, r.body["reason"].as_str()), (422, Some("Invalid")), "{cap}: {}", r.text);
        assert_eq!(r.body["details"]["causes"][0]["field"], field, "{cap}: {}", r.text);
        let message = r.body["message"].as_str().unwrap_or_default();
        assert!(message.contains(&format!("{field}: \"{cap}\" cannot be added")), "{cap}: {message}");
    }
    // The Knative form, as YAML: the same rule, the same field.
    let knative = "apiVersion: serving.knative.dev/v1\nkind: Service\nmetadata: {name: kn-caps}\nspec:\n  template:\n    spec:\n      containers:\n      - image: 127.0.0.1:5000/hello:v1\n        securityContext: {capabilities: {add: [cap_net_bind_service, CAP_SYS_ADMIN]}}\n";
    let r = send_yaml("POST", &coll, knative).await;
    assert_eq!(r.status, 422, "{}", r.text);
    assert_eq!(r.body["details"]["causes"][0]["field"], field, "{}", r.text);
    let listed = get(&coll).await;
    assert_eq!(listed.body["items"].as_array().map(Vec::len), Some(0), "a refused service was stored");

    // NET_BIND_SERVICE alone is fine, stored by its canonical name.
    let mut svc = hello("bind");
    svc["spec"]["template"]["spec"]["containers"][0]["securityContext"] =
        json!({"capabilities": {"add": ["cap_net_bind_service"]}});
    let r = send_json("POST", &coll, &svc).await;
    assert_eq!(r.status, 201, "{}", r.text);
    let caps = &r.body["spec"]["template"]["spec"]["containers"][0]["securityContext"]["capabilities"]["add"];
    assert_eq!(caps, &json!(["NET_BIND_SERVICE"]));
}

/// Stores `obj` as it is, bypassing validation, as a server from before the Pod Security rules
/// did: the object is read from the store, changed by `change`, and written back.
async fn rewrite_stored<K: stratus_api::Resource>(s: &TestServer, name: &str, change: impl FnOnce(&mut K)) {
    let key = format!("/registry/{}/default/{name}", K::INFO.plural);
    let kv = s.store.get(&key).await.unwrap().expect("stored");
    let obj = stratus_api::AnyObject::decode(&K::INFO, &kv.value).unwrap();
    let mut typed = K::from_any(obj).unwrap_or_else(|_| panic!("a {}", K::INFO.kind));
    change(&mut typed);
    s.store.update(&key, typed.into_any().encode_to_vec().into(), kv.mod_revision).await.unwrap();
}

fn adding(caps: &[&str]) -> Option<stratus_api::v1::SecurityContext> {
    let add = caps.iter().map(|c| c.to_string()).collect();
    Some(stratus_api::v1::SecurityContext {
        capabilities: Some(stratus_api::v1::Capabilities { add, drop: vec![] }),
        ..Default::default()
    })
}

/// Objects stored before the rules (here: adding SYS_ADMIN) are not stuck: their status is
/// written, their other fields change, their finalizers are removed and their deletion ends;
/// only a change of the securityContext itself is held to the rules.
#[tokio::test]
async fn objects_stored_before_the_rules_still_take_status_writes_and_lose_their_finalizers() {
    use stratus_api::Resource;
    use stratus_api::v1::{Container, Instance, InstanceSpec, InstanceStatus, Service, ServiceStatus};
    let s = start().await;
    let client = stratus_client::Client::new(&s.endpoint).unwrap().with_token(&s.token);
    let mut inst = Instance::default();
    inst.meta_mut().name = "legacy-1".into();
    inst.meta_mut().finalizers = vec![stratus_api::wellknown::finalizers::AGENT.into()];
    inst.spec = Some(InstanceSpec {
        containers: vec![Container { image: "img".into(), ..Default::default() }],
        ..Default::default()
    });
    client.create(inst).await.unwrap();
    rewrite_stored::<Instance>(&s, "legacy-1", |i| {
        i.spec.as_mut().unwrap().containers[0].security_context = adding(&["SYS_ADMIN"]);
    })
    .await;

    // The agent's status write.
    let mut inst = client.get::<Instance>("default", "legacy-1").await.unwrap();
    inst.status = Some(InstanceStatus { phase: "Running".into(), ..Default::default() });
    let inst = client.update_status(inst).await.expect("a status write passes");
    assert_eq!(inst.status.as_ref().map(|s| s.phase.as_str()), Some("Running"));
    // Another field changes; the securityContext itself does not.
    let mut labelled = inst.clone();
    labelled.meta_mut().labels.insert("team".into(), "a".into());
    let inst = client.update(labelled).await.expect("an update keeping the securityContext passes");
    let mut escalated = inst.clone();
    escalated.spec.as_mut().unwrap().containers[0].security_context = adding(&["SYS_ADMIN", "NET_RAW"]);
    match client.update(escalated).await {
        Err(stratus_client::Error::Invalid(m)) => {
            assert!(m.contains("securityContext.capabilities.add[0]: \"SYS_ADMIN\" cannot be added"), "{m}")
        }
        other => panic!("a changed securityContext must be refused: {other:?}"),
    }
    // Deleted: marked while the agent's finalizer holds it, gone once the agent removes it.
    client.delete::<Instance>("default", "legacy-1").await.unwrap();
    let mut inst = client.get::<Instance>("default", "legacy-1").await.unwrap();
    assert!(inst.meta().deletion_timestamp.is_some());
    inst.meta_mut().finalizers.clear();
    client.update(inst).await.expect("removing the finalizer passes");
    assert!(matches!(client.get::<Instance>("default", "legacy-1").await, Err(stratus_client::Error::NotFound(_))));

    // A Service: its controller's status write, and an apply of the unchanged template.
    client.create(Service::with_image("legacy", "img")).await.unwrap();
    rewrite_stored::<Service>(&s, "legacy", |svc| {
        let template = svc.spec.as_mut().unwrap().template.as_mut().unwrap();
        template.spec.as_mut().unwrap().containers[0].security_context = adding(&["SYS_ADMIN"]);
    })
    .await;
    let mut svc = client.get::<Service>("default", "legacy").await.unwrap();
    svc.status = Some(ServiceStatus { url: "http://legacy.default.localhost".into(), ..Default::default() });
    client.update_status(svc.clone()).await.expect("a service's status write passes");
    let mut applied = svc;
    applied.meta_mut().resource_version.clear();
    applied.meta_mut().labels.insert("team".into(), "a".into());
    client.apply(applied).await.expect("an apply keeping the securityContext passes");
}

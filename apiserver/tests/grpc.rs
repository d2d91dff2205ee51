//! The gRPC API through the typed client, against a real in-process server.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use common::TestServer;
use futures::StreamExt;
use stratus_api::Resource;
use stratus_api::v1::{Container, Instance, InstanceSpec, Service};
use stratus_client::{Client, Error, ListParams, WatchEvent};

fn service(name: &str) -> Service {
    Service::with_image(name, "127.0.0.1:5000/hello:v1")
}

fn instance(name: &str, node: &str) -> Instance {
    let mut inst = Instance::default();
    inst.meta_mut().name = name.into();
    inst.spec = Some(InstanceSpec {
        node_name: node.into(),
        containers: vec![Container { image: "img".into(), ..Default::default() }],
        ..Default::default()
    });
    inst
}

#[tokio::test]
async fn typed_crud_and_optimistic_concurrency() {
    let s = TestServer::start().await;
    let c = Client::new(&s.endpoint).unwrap().with_token(&s.token);
    let created = c.create(service("a")).await.unwrap();
    assert_eq!(created.meta().namespace, "default");
    assert!(matches!(c.create(service("a")).await, Err(Error::AlreadyExists(_))));

    let got: Service = c.get("default", "a").await.unwrap();
    assert_eq!(got, created);
    let mut first = got.clone();
    first.meta_mut().labels.insert("k".into(), "1".into());
    let updated = c.update(first).await.unwrap();
    let mut second = got.clone();
    second.meta_mut().labels.insert("k".into(), "2".into());
    match c.update(second).await {
        Err(Error::Conflict(msg)) => assert!(msg.contains("modified"), "{msg}"),
        other => panic!("stale update: {other:?}"),
    }
    let now: Service = c.get("default", "a").await.unwrap();
    assert_eq!(now.meta().labels.get("k").map(String::as_str), Some("1"));
    assert_eq!(now, updated);

    let mut bad = service("b");
    bad.spec.as_mut().unwrap().template.as_mut().unwrap().spec.as_mut().unwrap().containers[0].image = String::new();
    match c.create(bad).await {
        Err(Error::Invalid(msg)) => {
            assert!(msg.contains("spec.template.spec.containers[0].image: is required"), "{msg}")
        }
        other => panic!("invalid create: {other:?}"),
    }
    assert!(matches!(c.get::<Service>("default", "b").await, Err(Error::NotFound(_))));
    c.delete::<Service>("default", "a").await.unwrap();
    assert!(matches!(c.get::<Service>("default", "a").await, Err(Error::NotFound(_))));
}

#[tokio::test]
async fn concurrent_updates_lose_nothing() {
    let s = TestServer::start().await;
    let c = Client::new(&s.endpoint).unwrap().with_token(&s.token);
    c.create(service("counter")).await.unwrap();
    let mut tasks = Vec::new();
    for _ in 0..8 {
        let c = c.clone();
        tasks.push(tokio::spawn(async move {
            let mut wins = 0;
            while wins < 5 {
                let mut svc: Service = c.get("default", "counter").await.unwrap();
                let n: u32 = svc.meta().annotations.get("n").map(|v| v.parse().unwrap()).unwrap_or(0);
                svc.meta_mut().annotations.insert("n".into(), (n + 1).to_string());
                match c.update(svc).await {
                    Ok(_) => wins += 1,
                    Err(Error::Conflict(_)) => {}
                    Err(e) => panic!("{e}"),
                }
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let svc: Service = c.get("default", "counter").await.unwrap();
    assert_eq!(svc.meta().annotations["n"], "40");
}

#[tokio::test]
async fn field_selectors_pick_instances_of_a_node() {
    let s = TestServer::start().await;
    let c = Client::new(&s.endpoint).unwrap().with_token(&s.token);
    for (name, node) in [("i1", "node-1"), ("i2", "node-2"), ("i3", "node-1")] {
        c.create(instance(name, node)).await.unwrap();
    }
    let params = ListParams { field_selector: "spec.nodeName=node-1".into(), ..Default::default() };
    let list = c.list::<Instance>(&params).await.unwrap();
    let names: Vec<_> = list.items.iter().map(|i| i.meta().name.clone()).collect();
    assert_eq!(names, ["i1", "i3"]);

    // A watch with the selector sees an instance bound to the node later as ADDED.
    let mut w = c.watch::<Instance>(&params, &list.resource_version, false).await.unwrap();
    let mut i4 = c.create(instance("i4", "")).await.unwrap();
    i4.spec.as_mut().unwrap().node_name = "node-1".into();
    c.update(i4).await.unwrap();
    let ev = tokio::time::timeout(Duration::from_secs(10), w.next()).await.unwrap().unwrap().unwrap();
    match ev {
        WatchEvent::Added(i) => assert_eq!(i.meta().name, "i4"),
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn watch_sees_every_change_in_order_and_gone_after_compaction() {
    let s = TestServer::start().await;
    let c = Client::new(&s.endpoint).unwrap().with_token(&s.token);
    let list = c.list::<Service>(&ListParams::default()).await.unwrap();
    let mut w = c.watch::<Service>(&ListParams::default(), &list.resource_version, false).await.unwrap();
    let writer = {
        let c = c.clone();
        tokio::spawn(async move {
            for i in 0..20 {
                c.create(service(&format!("s{i}"))).await.unwrap();
            }
            for i in 0..20 {
                c.delete::<Service>("default", &format!("s{i}")).await.unwrap();
            }
        })
    };
    let mut seen = Vec::new();
    let mut last = 0i64;
    while seen.len() < 40 {
        let ev = tokio::time::timeout(Duration::from_secs(10), w.next()).await.unwrap().unwrap().unwrap();
        let (tag, obj) = match ev {
            WatchEvent::Added(o) => ("+", o),
            WatchEvent::Deleted(o) => ("-", o),
            other => panic!("{other:?}"),
        };
        let rv: i64 = obj.meta().resource_version.parse().unwrap();
        assert!(rv > last, "events out of order");
        last = rv;
        seen.push(format!("{tag}{}", obj.meta().name));
    }
    writer.await.unwrap();
    let want: Vec<_> = (0..20).map(|i| format!("+s{i}")).chain((0..20).map(|i| format!("-s{i}"))).collect();
    assert_eq!(seen, want);

    s.store.compact(s.store.current_revision().await.unwrap()).await.unwrap();
    let res = c.watch::<Service>(&ListParams::default(), &list.resource_version, false).await;
    let gone = match res {
        Err(e) => e,
        Ok(mut stream) => stream.next().await.unwrap().unwrap_err(),
    };
    assert!(matches!(gone, Error::Gone(_)), "{gone:?}");
}

#[tokio::test]
async fn unreachable_server_is_reported_as_unavailable() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    drop(listener);
    let c = Client::new(&format!("http://{addr}")).unwrap();
    match c.get::<Service>("default", "x").await {
        Err(e @ Error::Unavailable { .. }) => assert!(e.to_string().contains(&addr.to_string()), "{e}"),
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn reflection_lists_the_resource_service() {
    use tonic_reflection::pb::v1::ServerReflectionRequest;
    use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
    use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
    use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;
    let s = TestServer::start().await;
    let channel = tonic::transport::Endpoint::from_shared(s.endpoint.clone()).unwrap().connect().await.unwrap();
    let bearer: tonic::metadata::MetadataValue<_> = format!("Bearer {}", s.token).parse().unwrap();
    let mut client = ServerReflectionClient::with_interceptor(channel, move |mut req: tonic::Request<()>| {
        req.metadata_mut().insert("authorization", bearer.clone());
        Ok(req)
    });
    let req = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    let mut resp = client.server_reflection_info(futures::stream::iter([req])).await.unwrap().into_inner();
    let msg = resp.next().await.unwrap().unwrap();
    let Some(MessageResponse::ListServicesResponse(list)) = msg.message_response else { panic!("{msg:?}") };
    assert!(list.service.iter().any(|s| s.name == "stratus.v1.ResourceService"), "{list:?}");
}

#[tokio::test]
async fn idle_watches_get_bookmarks_when_asked() {
    let s = TestServer::start().await;
    let c = Client::new(&s.endpoint).unwrap().with_token(&s.token);
    let list = c.list::<Service>(&ListParams::default()).await.unwrap();
    let mut w = c.watch::<Service>(&ListParams::default(), &list.resource_version, true).await.unwrap();
    // The embedded store reports progress on idle watches every second.
    let ev =
        tokio::time::timeout(Duration::from_secs(10), w.next()).await.expect("a bookmark in time").unwrap().unwrap();
    match ev {
        WatchEvent::Bookmark(rv) => {
            assert!(rv.parse::<i64>().unwrap() >= list.resource_version.parse::<i64>().unwrap())
        }
        other => panic!("{other:?}"),
    }
    // Without asking, an idle watch stays silent.
    let mut quiet = c.watch::<Service>(&ListParams::default(), &list.resource_version, false).await.unwrap();
    c.create(service("after")).await.unwrap();
    let ev = tokio::time::timeout(Duration::from_secs(10), quiet.next()).await.unwrap().unwrap().unwrap();
    assert!(matches!(ev, WatchEvent::Added(ref s) if s.meta().name == "after"), "{ev:?}");
}

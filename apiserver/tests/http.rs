//! The HTTP/JSON API against a real in-process server on a free port.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::*;
use serde_json::{Value, json};

const SVCS: &str = "/apis/stratus.dev/v1/namespaces/default/services";

async fn count_services(base: &str) -> usize {
    get(&format!("{base}{SVCS}")).await.body["items"].as_array().map(Vec::len).unwrap_or(usize::MAX)
}

#[tokio::test]
async fn create_get_update_delete() {
    let s = start().await;
    let base = &s.endpoint;
    let ns = get(&format!("{base}/apis/stratus.dev/v1/namespaces/default")).await;
    assert_eq!(ns.status, 200, "{}", ns.text);
    assert_eq!(ns.body["status"]["phase"], "Active");

    let created = send_json("POST", &format!("{base}{SVCS}"), &hello("web")).await;
    assert_eq!(created.status, 201, "{}", created.text);
    let obj = created.body;
    assert_eq!(obj["metadata"]["generation"], 1);
    assert!(obj["metadata"]["uid"].as_str().is_some_and(|u| u.len() == 36));
    assert_eq!(obj["spec"]["template"]["spec"]["containerConcurrency"], 80);
    assert_eq!(obj["spec"]["template"]["spec"]["timeoutSeconds"], 300);
    assert_eq!(obj["spec"]["template"]["spec"]["scaling"]["maxInstances"], 100);
    assert_eq!(obj["spec"]["template"]["spec"]["containers"][0]["ports"][0]["containerPort"], 8080);

    let url = format!("{base}{SVCS}/web");
    let got = get(&url).await;
    assert_eq!(got.status, 200);
    assert_eq!(got.body, obj);

    // A label change keeps the generation; a spec change bumps it.
    let mut labelled = obj.clone();
    labelled["metadata"]["labels"] = json!({"team": "a"});
    let r = send_json("PUT", &url, &labelled).await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.body["metadata"]["generation"], 1);
    let mut changed = r.body.clone();
    changed["spec"]["template"]["spec"]["containerConcurrency"] = json!(5);
    let r2 = send_json("PUT", &url, &changed).await;
    assert_eq!(r2.status, 200, "{}", r2.text);
    assert_eq!(r2.body["metadata"]["generation"], 2);

    // Writing with the version read before the last write is a conflict and changes nothing.
    let stale = send_json("PUT", &url, &changed).await;
    assert_eq!(stale.status, 409, "{}", stale.text);
    assert_eq!(stale.body["reason"], "Conflict");
    assert_eq!(get(&url).await.body, r2.body);

    // Status goes through /status only, and does not bump the generation.
    let mut with_status = r2.body.clone();
    with_status["status"] = json!({"url": "http://web.default.example", "observedGeneration": 2});
    let ignored = send_json("PUT", &url, &with_status).await;
    assert_eq!(ignored.status, 200);
    assert!(ignored.body.get("status").is_none(), "status written through the main resource: {}", ignored.text);
    let st = send_json("PUT", &format!("{url}/status"), &with_status).await;
    assert_eq!(st.status, 200, "{}", st.text);
    assert_eq!(st.body["status"]["url"], "http://web.default.example");
    assert_eq!(st.body["status"]["observedGeneration"], 2);
    assert_eq!(st.body["metadata"]["generation"], 2);

    let del = request("DELETE", &url, None).await;
    assert_eq!(del.status, 200);
    assert_eq!(get(&url).await.status, 404);
    assert_eq!(request("DELETE", &url, None).await.status, 404);
}

#[tokio::test]
async fn bad_input_gets_a_clear_4xx_and_stores_nothing() {
    let s = start().await;
    let base = &s.endpoint;
    let coll = format!("{base}{SVCS}");
    send_json("POST", &coll, &hello("keep")).await;

    let mut wrong_type = hello("a");
    wrong_type["spec"]["template"]["spec"]["containerConcurrency"] = json!("lots");
    let mut unknown_field = hello("a");
    unknown_field["spec"]["template"]["spec"]["containers"][0]["imagee"] = json!("x");
    let mut bad_quantity = hello("a");
    bad_quantity["spec"]["template"]["spec"]["containers"][0]["resources"] = json!({"limits": {"memory": "12XB"}});
    let mut bad_name = hello("a");
    bad_name["metadata"]["name"] = json!("Not_A_DNS_Label");
    let mut no_image = hello("a");
    no_image["spec"]["template"]["spec"]["containers"][0] = json!({"name": "c"});
    let mut bad_traffic = hello("a");
    bad_traffic["spec"]["traffic"] = json!([{"latestRevision": true, "percent": 60}]);
    let wrong_kind = json!({"apiVersion": "stratus.dev/v1", "kind": "Node", "metadata": {"name": "a"}});
    let mut other_ns = hello("a");
    other_ns["metadata"]["namespace"] = json!("elsewhere");

    let cases: Vec<(&str, Vec<u8>, u16, &str)> = vec![
        ("application/json", b"{not json".to_vec(), 400, "not valid JSON"),
        ("application/yaml", b"kind: [unclosed".to_vec(), 400, "not valid YAML"),
        ("application/json", serde_json::to_vec(&wrong_type).unwrap(), 400, "spec.template.spec.containerConcurrency"),
        (
            "application/json",
            serde_json::to_vec(&unknown_field).unwrap(),
            400,
            "spec.template.spec.containers[0].imagee",
        ),
        (
            "application/json",
            serde_json::to_vec(&bad_quantity).unwrap(),
            422,
            "spec.template.spec.containers[0].resources.limits.memory: \"12XB\"",
        ),
        (
            "application/json",
            serde_json::to_vec(&bad_name).unwrap(),
            422,
            "metadata.name: \"Not_A_DNS_Label\" is not a DNS label",
        ),
        (
            "application/json",
            serde_json::to_vec(&no_image).unwrap(),
            422,
            "spec.template.spec.containers[0].image: is required",
        ),
        ("application/json", serde_json::to_vec(&bad_traffic).unwrap(), 422, "spec.traffic: percentages add up to 60"),
        ("application/json", serde_json::to_vec(&wrong_kind).unwrap(), 400, "the body is a Node"),
        ("application/json", serde_json::to_vec(&other_ns).unwrap(), 400, "does not match the namespace"),
        ("application/json", serde_json::to_vec(&hello("keep")).unwrap(), 409, "already exists"),
        ("application/json", vec![b' '; 2 * 1024 * 1024], 413, "larger than"),
    ];
    for (ct, body, code, want) in cases {
        let r = request("POST", &coll, Some((ct, body))).await;
        assert_eq!(r.status, code, "want {want:?}: {}", r.text);
        let msg = r.body["message"].as_str().unwrap_or_default();
        assert!(msg.contains(want), "want {want:?} in {msg:?}");
        assert_eq!(r.body["kind"], "Status");
    }
    // Field errors are also given as structured causes.
    let r = send_json("POST", &coll, &bad_quantity).await;
    assert_eq!(r.body["details"]["causes"][0]["field"], "spec.template.spec.containers[0].resources.limits.memory");

    assert_eq!(count_services(base).await, 1, "a rejected request stored something");

    // Missing namespace, unknown kinds and objects.
    let r = send_json("POST", &format!("{base}/apis/stratus.dev/v1/namespaces/nope/services"), &hello("x")).await;
    assert_eq!(r.status, 404);
    assert!(r.text.contains("namespace \\\"nope\\\" not found"), "{}", r.text);
    assert_eq!(get(&format!("{base}/apis/stratus.dev/v1/namespaces/default/pods")).await.status, 404);
    assert_eq!(get(&format!("{base}{SVCS}/nope")).await.status, 404);

    // Updates without a version, and with an immutable change.
    let r = send_json("PUT", &format!("{coll}/keep"), &hello("keep")).await;
    assert_eq!(r.status, 422);
    assert!(r.text.contains("metadata.resourceVersion"), "{}", r.text);
    let mut wrong_name = get(&format!("{coll}/keep")).await.body;
    wrong_name["metadata"]["name"] = json!("other");
    assert_eq!(send_json("PUT", &format!("{coll}/keep"), &wrong_name).await.status, 400);
    let mut wrong_uid = get(&format!("{coll}/keep")).await.body;
    wrong_uid["metadata"]["uid"] = json!("00000000-0000-0000-0000-000000000000");
    assert_eq!(send_json("PUT", &format!("{coll}/keep"), &wrong_uid).await.status, 409);

    // A Revision is immutable: changing its spec is 422 and changes nothing.
    let revs = format!("{base}/apis/stratus.dev/v1/namespaces/default/revisions");
    let rev = json!({"apiVersion": "stratus.dev/v1", "kind": "Revision", "metadata": {"name": "keep-00001"},
                     "spec": {"containers": [{"image": "img:v1"}]}});
    let created = send_json("POST", &revs, &rev).await;
    assert_eq!(created.status, 201, "{}", created.text);
    let mut changed = created.body.clone();
    changed["spec"]["containers"][0]["image"] = json!("img:v2");
    let r = send_json("PUT", &format!("{revs}/keep-00001"), &changed).await;
    assert_eq!(r.status, 422, "{}", r.text);
    assert_eq!(get(&format!("{revs}/keep-00001")).await.body, created.body);

    // Bad query parameters.
    assert_eq!(get(&format!("{coll}?labelSelector=a%20in%20(b")).await.status, 400);
    assert_eq!(get(&format!("{coll}?fieldSelector=nonsense")).await.status, 400);
    assert_eq!(get(&format!("{coll}?limit=-1")).await.status, 400);
    assert_eq!(get(&format!("{coll}?limit=1&continue=garbage")).await.status, 400);
    assert_eq!(get(&format!("{coll}?watch=true&resourceVersion=abc")).await.status, 400);
}

#[tokio::test]
async fn knative_services_are_accepted_and_converted() {
    let s = start().await;
    let yaml = r#"
apiVersion: serving.knative.dev/v1
kind: Service
metadata:
  name: hello
spec:
  template:
    metadata:
      annotations:
        autoscaling.knative.dev/maxScale: "5"
    spec:
      containers:
        - image: ghcr.io/knative/helloworld-go:latest
          ports:
            - containerPort: 8080
          env:
            - name: TARGET
              value: "World"
"#;
    let r = send_yaml("POST", &format!("{}/apis/serving.knative.dev/v1/namespaces/default/services", s.endpoint), yaml)
        .await;
    assert_eq!(r.status, 201, "{}", r.text);
    assert_eq!(r.body["apiVersion"], "stratus.dev/v1");
    assert_eq!(r.body["spec"]["template"]["spec"]["scaling"]["maxInstances"], 5);
}

/// The fields of Knative's Go `serving/v1.Service` (knative.dev/serving/pkg/apis/serving/v1)
/// that hold integers, with the Go types: `int64` and `*int64`. `encoding/json` refuses to put
/// a JSON string into them, and so does serde into an `i64`, so a decode that succeeds here is
/// one that a Go client built on Knative's types would do too. Other fields are ignored, as Go
/// ignores them.
#[derive(Debug, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
struct KnativeService {
    metadata: KnativeMeta,
    spec: KnativeSpec,
    status: KnativeStatus,
}

#[derive(Debug, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
struct KnativeMeta {
    name: String,
    generation: i64,
}

#[derive(Debug, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
struct KnativeSpec {
    template: KnativeTemplate,
}

#[derive(Debug, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
struct KnativeTemplate {
    spec: KnativeRevisionSpec,
}

#[derive(Debug, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
struct KnativeRevisionSpec {
    container_concurrency: Option<i64>,
    timeout_seconds: Option<i64>,
    containers: Vec<KnativeContainer>,
}

#[derive(Debug, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
struct KnativeContainer {
    security_context: Option<KnativeSecurityContext>,
}

#[derive(Debug, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
struct KnativeSecurityContext {
    run_as_user: Option<i64>,
}

#[derive(Debug, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
struct KnativeStatus {
    observed_generation: i64,
    traffic: Vec<KnativeTraffic>,
}

#[derive(Debug, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
struct KnativeTraffic {
    percent: Option<i64>,
}

#[tokio::test]
async fn a_client_with_knatives_go_types_reads_a_service_and_its_status() {
    let s = start().await;
    let coll = format!("{}{SVCS}", s.endpoint);
    let mut svc = hello("kn");
    svc["spec"]["template"]["spec"]["containers"][0]["securityContext"] = json!({"runAsUser": 1000});
    let created = send_json("POST", &coll, &svc).await;
    assert_eq!(created.status, 201, "{}", created.text);
    let mut with_status = created.body.clone();
    // Written in the proto3 string form, which the server still reads.
    with_status["status"] = json!({
        "observedGeneration": "1",
        "url": "http://kn.default.example",
        "traffic": [{"revisionName": "kn-00001", "latestRevision": true, "percent": 100}],
    });
    let st = send_json("PUT", &format!("{coll}/kn/status"), &with_status).await;
    assert_eq!(st.status, 200, "{}", st.text);

    let got = get(&format!("{coll}/kn")).await;
    assert_eq!(got.status, 200, "{}", got.text);
    let ksvc: KnativeService = serde_json::from_value(got.body.clone())
        .unwrap_or_else(|e| panic!("a Knative client cannot decode {}: {e}", got.text));
    assert_eq!(ksvc.metadata.name, "kn");
    assert_eq!(ksvc.metadata.generation, 1);
    assert_eq!(ksvc.status.observed_generation, 1);
    assert_eq!(ksvc.status.traffic[0].percent, Some(100));
    let rev = &ksvc.spec.template.spec;
    assert_eq!((rev.container_concurrency, rev.timeout_seconds), (Some(80), Some(300)));
    assert_eq!(rev.containers[0].security_context.as_ref().and_then(|s| s.run_as_user), Some(1000));

    // A list, as an informer reads it first, decodes the same way.
    let list = get(&coll).await;
    let items: Vec<KnativeService> = serde_json::from_value(list.body["items"].clone())
        .unwrap_or_else(|e| panic!("a Knative client cannot decode the list {}: {e}", list.text));
    assert_eq!(items.iter().map(|k| k.status.observed_generation).collect::<Vec<_>>(), [1]);
}

#[tokio::test]
async fn apply_creates_then_reports_unchanged_and_configured() {
    let s = start().await;
    let url = format!("{}{SVCS}/ap", s.endpoint);
    let r = send_json("PATCH", &url, &hello("ap")).await;
    assert_eq!(r.status, 201, "{}", r.text);
    let again = request("PATCH", &url, Some(("application/json", serde_json::to_vec(&hello("ap")).unwrap()))).await;
    assert_eq!(again.status, 200);
    assert_eq!(
        again.body["metadata"]["resourceVersion"], r.body["metadata"]["resourceVersion"],
        "unchanged apply wrote"
    );
    let mut changed = hello("ap");
    changed["spec"]["template"]["spec"]["timeoutSeconds"] = json!(30);
    let c = send_json("PATCH", &url, &changed).await;
    assert_eq!(c.status, 200);
    assert_eq!(c.body["metadata"]["generation"], 2);
}

#[tokio::test]
async fn finalizers_hold_deletion_until_removed() {
    let s = start().await;
    let mut svc = hello("fin");
    svc["metadata"]["finalizers"] = json!(["stratus.dev/test"]);
    let url = format!("{}{SVCS}/fin", s.endpoint);
    assert_eq!(send_json("POST", &format!("{}{SVCS}", s.endpoint), &svc).await.status, 201);
    let del = request("DELETE", &url, None).await;
    assert_eq!(del.status, 200);
    assert!(del.body["metadata"]["deletionTimestamp"].is_string(), "{}", del.text);
    let held = get(&url).await;
    assert_eq!(held.status, 200, "deleted despite its finalizer");
    let mut released = held.body.clone();
    released["metadata"]["finalizers"] = json!([]);
    assert_eq!(send_json("PUT", &url, &released).await.status, 200);
    assert_eq!(get(&url).await.status, 404, "still there after its last finalizer went");
}

#[tokio::test]
async fn lists_page_and_select() {
    let s = start().await;
    let coll = format!("{}{SVCS}", s.endpoint);
    for i in 0..25 {
        let mut svc = hello(&format!("s{i:02}"));
        svc["metadata"]["labels"] = json!({"parity": if i % 2 == 0 { "even" } else { "odd" }});
        assert_eq!(send_json("POST", &coll, &svc).await.status, 201);
    }
    let mut names = Vec::new();
    let mut token = String::new();
    let mut pages = 0;
    loop {
        let r = get(&format!("{coll}?limit=10&continue={token}")).await;
        assert_eq!(r.status, 200, "{}", r.text);
        pages += 1;
        for item in r.body["items"].as_array().unwrap() {
            names.push(item["metadata"]["name"].as_str().unwrap().to_string());
        }
        token = r.body["metadata"]["continue"].as_str().unwrap_or_default().to_string();
        if token.is_empty() {
            break;
        }
    }
    assert_eq!(pages, 3);
    let want: Vec<_> = (0..25).map(|i| format!("s{i:02}")).collect();
    assert_eq!(names, want);

    let even = get(&format!("{coll}?labelSelector=parity%3Deven")).await;
    assert_eq!(even.body["items"].as_array().unwrap().len(), 13);
    let by_name = get(&format!("{coll}?fieldSelector=metadata.name%3Ds07")).await;
    assert_eq!(by_name.body["items"].as_array().unwrap().len(), 1);
    let paged_even = get(&format!("{coll}?labelSelector=parity%3Dodd&limit=5")).await;
    assert_eq!(paged_even.body["items"].as_array().unwrap().len(), 5);
    assert!(!paged_even.body["metadata"]["continue"].as_str().unwrap_or_default().is_empty());
    assert_eq!(paged_even.body["kind"], "ServiceList");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readyz_fails_naming_the_reason_while_the_store_cannot_write() {
    use stratus_store::Store as _;

    let Ok(disk) = stratus_testkit::tmpfs::Tmpfs::mount("2m").map_err(|why| {
        eprintln!("SKIPPED readyz_fails_naming_the_reason_while_the_store_cannot_write: {why}");
    }) else {
        return;
    };
    let ballast = disk.path().join("ballast");
    std::fs::write(&ballast, vec![0u8; 256 * 1024]).unwrap();
    let store = stratus_store::embedded::EmbeddedStore::open(disk.path().join("data")).await.unwrap();
    let s = stratus_apiserver::testing::TestServer::start_with(store.clone(), tempfile::tempdir().unwrap()).await;
    let readyz = format!("{}/readyz", s.endpoint);
    assert_eq!(get(&readyz).await.status, 200);

    // Fill the disk through the store the server writes to.
    let filler = bytes::Bytes::from(vec![b'x'; 64 * 1024]);
    let mut i = 0;
    while store.create(&format!("/filler/{i}"), filler.clone(), 0).await.is_ok() {
        i += 1;
        assert!(i < 100, "a 2 MiB disk took 6 MB");
    }
    let reply = get(&readyz).await;
    assert_eq!(reply.status, 503, "{}", reply.text);
    assert!(reply.text.contains("No space left"), "{}", reply.text);

    std::fs::remove_file(&ballast).unwrap();
    store.create("/filler/after", filler, 0).await.expect("a write once there is room");
    assert_eq!(get(&readyz).await.status, 200, "ready again without a restart");
    drop(s);
    store.close().await.unwrap();
}

#[tokio::test]
async fn health_metrics_and_openapi() {
    let s = start().await;
    assert_eq!(get(&format!("{}/healthz", s.endpoint)).await.text, "ok");
    assert_eq!(get(&format!("{}/readyz", s.endpoint)).await.status, 200);
    get(&format!("{}{SVCS}", s.endpoint)).await;
    let m = get(&format!("{}/metrics", s.endpoint)).await;
    assert!(
        m.text.contains("stratus_apiserver_requests_total{protocol=\"http\",verb=\"list\",code=\"200\"}"),
        "{}",
        m.text
    );
    let doc = get(&format!("{}/openapi.json", s.endpoint)).await;
    assert_eq!(doc.body["openapi"], "3.1.0");
    assert!(doc.body["paths"].as_object().unwrap().len() > 20);
    let d = get(&format!("{}/apis/stratus.dev/v1", s.endpoint)).await;
    assert!(d.body["resources"].as_array().unwrap().iter().any(|r| r["name"] == "services"));
    assert_eq!(get(&format!("{}/nowhere", s.endpoint)).await.status, 404);
}

#[tokio::test]
async fn http_watch_streams_events_in_order() {
    let s = start().await;
    let coll = format!("{}{SVCS}", s.endpoint);
    let created = send_json("POST", &coll, &hello("w")).await.body;
    let rv0 = created["metadata"]["resourceVersion"].as_str().unwrap().to_string();
    let mut upd = created.clone();
    upd["metadata"]["labels"] = json!({"x": "y"});
    send_json("PUT", &format!("{coll}/w"), &upd).await;
    request("DELETE", &format!("{coll}/w"), None).await;

    // From rv0: the update, then the delete. Read the streamed lines until both arrived.
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build_http::<http_body_util::Empty<bytes::Bytes>>();
    let req = hyper::Request::get(format!("{coll}?watch=true&resourceVersion={rv0}"))
        .header("authorization", format!("Bearer {}", s.token))
        .body(http_body_util::Empty::new())
        .unwrap();
    let resp = client.request(req).await.unwrap();
    assert_eq!(resp.status(), 200);
    let mut body = resp.into_body();
    let mut buf = String::new();
    let events = tokio::time::timeout(std::time::Duration::from_secs(10), async {
        use http_body_util::BodyExt;
        loop {
            let lines: Vec<Value> = buf.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
            if lines.len() >= 2 {
                return lines;
            }
            let frame = body.frame().await.unwrap().unwrap();
            if let Ok(data) = frame.into_data() {
                buf.push_str(std::str::from_utf8(&data).unwrap());
            }
        }
    })
    .await
    .expect("watch events arrive");
    assert_eq!(events[0]["type"], "MODIFIED");
    assert_eq!(events[0]["object"]["metadata"]["labels"]["x"], "y");
    assert_eq!(events[0]["object"]["metadata"]["generation"], 1, "watch events print integers as numbers");
    assert_eq!(events[1]["type"], "DELETED");

    // A version older than the compacted history is Gone.
    let rev = s.store.current_revision().await.unwrap();
    s.store.compact(rev).await.unwrap();
    let gone = get(&format!("{coll}?watch=true&resourceVersion={rv0}")).await;
    assert_eq!(gone.status, 410, "{}", gone.text);
}

#[tokio::test]
async fn deleting_a_namespace_deletes_its_contents() {
    let s = start().await;
    let base = &s.endpoint;
    let ns = json!({"apiVersion": "stratus.dev/v1", "kind": "Namespace", "metadata": {"name": "team-a"}});
    assert_eq!(send_json("POST", &format!("{base}/apis/stratus.dev/v1/namespaces"), &ns).await.status, 201);
    let coll = format!("{base}/apis/stratus.dev/v1/namespaces/team-a/services");
    assert_eq!(send_json("POST", &coll, &hello("x")).await.status, 201);
    let del = request("DELETE", &format!("{base}/apis/stratus.dev/v1/namespaces/team-a"), None).await;
    assert_eq!(del.status, 200);
    assert_eq!(del.body["status"]["phase"], "Terminating");
    // Nothing new may be created in a terminating namespace.
    let refused = send_json("POST", &coll, &hello("y")).await;
    assert!(refused.status == 403 || refused.status == 404, "{}", refused.text);

    // Wait (bounded) for the namespace to disappear, watching rather than polling.
    let client = stratus_client::Client::new(base).unwrap().with_token(&s.token);
    let mut w = client
        .watch_any(
            "namespaces",
            &stratus_client::ListParams::default(),
            del.body["metadata"]["resourceVersion"].as_str().unwrap(),
            false,
        )
        .await
        .unwrap();
    use futures::StreamExt;
    tokio::time::timeout(std::time::Duration::from_secs(20), async {
        while let Some(ev) = w.next().await {
            if let stratus_client::WatchEvent::Deleted(o) = ev.unwrap()
                && o.meta().name == "team-a"
            {
                return;
            }
        }
    })
    .await
    .expect("namespace deleted");
    assert_eq!(get(&format!("{coll}/x")).await.status, 404);
    let default = request("DELETE", &format!("{base}/apis/stratus.dev/v1/namespaces/default"), None).await;
    assert_eq!(default.status, 403);
}

#[tokio::test]
async fn editing_a_terminating_namespace_keeps_it_until_empty() {
    let s = start().await;
    let base = &s.endpoint;
    let ns = json!({"apiVersion": "stratus.dev/v1", "kind": "Namespace", "metadata": {"name": "team-b"}});
    send_json("POST", &format!("{base}/apis/stratus.dev/v1/namespaces"), &ns).await;
    let mut held = hello("held");
    held["metadata"]["finalizers"] = json!(["stratus.dev/test"]);
    let coll = format!("{base}/apis/stratus.dev/v1/namespaces/team-b/services");
    assert_eq!(send_json("POST", &coll, &held).await.status, 201);
    let ns_url = format!("{base}/apis/stratus.dev/v1/namespaces/team-b");
    let terminating = request("DELETE", &ns_url, None).await.body;
    let mut edited = terminating.clone();
    edited["metadata"]["labels"] = json!({"edited": "yes"});
    let r = send_json("PUT", &ns_url, &edited).await;
    assert_eq!(r.status, 200, "{}", r.text);
    // The held service keeps the namespace alive: both are still there.
    assert_eq!(get(&ns_url).await.status, 200, "the namespace vanished while not empty");
    assert_eq!(get(&format!("{coll}/held")).await.status, 200);
}

#[tokio::test]
async fn watch_from_a_future_version_is_rejected() {
    let s = start().await;
    let r = get(&format!("{}{SVCS}?watch=true&resourceVersion=999999999999999999", s.endpoint)).await;
    assert_eq!(r.status, 400, "{}", r.text);
    assert!(r.text.contains("newer than"), "{}", r.text);
}

#[tokio::test]
async fn knative_annotations_can_be_edited_on_an_exported_service() {
    let s = start().await;
    let mut svc = hello("scaled");
    svc["spec"]["template"]["metadata"] = json!({"annotations": {"autoscaling.knative.dev/maxScale": "5"}});
    assert_eq!(send_json("POST", &format!("{}{SVCS}", s.endpoint), &svc).await.status, 201);
    let url = format!("{}{SVCS}/scaled", s.endpoint);
    let mut exported = get(&url).await.body;
    assert_eq!(exported["spec"]["template"]["spec"]["scaling"]["maxInstances"], 5);
    exported["spec"]["template"]["metadata"]["annotations"]["autoscaling.knative.dev/maxScale"] = json!("10");
    let r = send_json("PUT", &url, &exported).await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.body["spec"]["template"]["spec"]["scaling"]["maxInstances"], 10);
    // Removing the annotation returns the field to its default.
    let mut removed = r.body.clone();
    removed["spec"]["template"]["metadata"]["annotations"] = json!({});
    let r = send_json("PUT", &url, &removed).await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.body["spec"]["template"]["spec"]["scaling"]["maxInstances"], 100);
}

#[tokio::test]
async fn merge_patches_methods_and_discovery() {
    let s = start().await;
    let base = &s.endpoint;
    send_json("POST", &format!("{base}{SVCS}"), &hello("p")).await;
    let url = format!("{base}{SVCS}/p");
    let patch = json!({"metadata": {"labels": {"team": "a"}}});
    let r = request("PATCH", &url, Some(("application/merge-patch+json", serde_json::to_vec(&patch).unwrap()))).await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.body["metadata"]["labels"]["team"], "a");
    assert_eq!(
        r.body["spec"]["template"]["spec"]["containers"][0]["image"], "127.0.0.1:5000/hello:v1",
        "a merge patch wiped the spec"
    );
    let remove = json!({"metadata": {"labels": {"team": null}}});
    let r = request("PATCH", &url, Some(("application/merge-patch+json", serde_json::to_vec(&remove).unwrap()))).await;
    assert!(r.body["metadata"].get("labels").is_none(), "{}", r.text);
    let r = request("PATCH", &url, Some(("application/strategic-merge-patch+json", b"{}".to_vec()))).await;
    assert_eq!(r.status, 415, "{}", r.text);
    let r = send_json("POST", &url, &hello("p")).await;
    assert_eq!(r.status, 405);
    // RFC 9110: a 405 names the methods the target supports.
    assert_eq!(r.headers.get("allow").and_then(|v| v.to_str().ok()), Some("GET, PUT, PATCH, DELETE"));
    let r = request("DELETE", &format!("{base}{SVCS}"), None).await;
    assert_eq!((r.status, r.headers.get("allow").and_then(|v| v.to_str().ok())), (405, Some("GET, POST")));
    let r = send_json("POST", &format!("{url}/status"), &hello("p")).await;
    assert_eq!((r.status, r.headers.get("allow").and_then(|v| v.to_str().ok())), (405, Some("GET, PUT")));
    // Boolean parameters read as the OpenAPI document says, and nothing else.
    for bad in ["null", "yes", "2", "True"] {
        let r = get(&format!("{base}{SVCS}?watch={bad}")).await;
        assert_eq!(r.status, 400, "watch={bad}: {}", r.text);
        assert!(r.text.contains("watch"), "{}", r.text);
    }
    assert_eq!(get(&format!("{base}{SVCS}?watch=false")).await.status, 200);
    assert_eq!(get(&format!("{base}{SVCS}?allowWatchBookmarks=maybe")).await.status, 400);
    assert_eq!(get(&format!("{url}/status")).await.status, 200);
    let kn = get(&format!("{base}/apis/serving.knative.dev/v1")).await;
    assert_eq!(kn.status, 200);
    assert_eq!(kn.body["resources"].as_array().unwrap().len(), 1);
}

#[tokio::test]
async fn the_path_and_the_query_keep_the_documented_grammar() {
    let s = start().await;
    let base = format!("{}/apis/stratus.dev/v1", s.endpoint);
    for (url, field) in [
        (format!("{base}/namespaces/Not_A_Label/services"), "namespace in the path"),
        (format!("{base}/namespaces/default/services/UPPER"), "name in the path"),
        (format!("{base}/namespaces/default/services?resourceVersion=%2B5"), "resourceVersion"),
        (format!("{base}/namespaces/default/services?watch=true&continue=x"), "continue"),
        (format!("{base}/namespaces/default/services?labelSelector=a%3Db%3Dc"), "invalid selector"),
    ] {
        let r = get(&url).await;
        assert_eq!(r.status, 400, "{url}: {}", r.text);
        assert!(r.text.contains(field), "{url}: {}", r.text);
    }
    let r = send_json("POST", &format!("{base}/services"), &hello("x")).await;
    assert_eq!(r.status, 405, "{}", r.text);
    let r = get(&format!("{base}/namespaces/default/services?watch=true&timeoutSeconds=0")).await;
    assert_eq!(r.status, 200, "a watch with timeoutSeconds ends: {}", r.text);
}

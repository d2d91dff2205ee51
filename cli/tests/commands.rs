//! The commands end to end, in process, against a real API server on the embedded store.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::io::Write;
use std::time::Duration;

use common::{Stratus, TestServer, closed_endpoint, example, service};
use serde_json::Value;
use stratus_api::v1::{Condition, Node, NodeStatus, ObjectMeta, Service, ServiceStatus};
use tokio::sync::mpsc;

async fn setup() -> (TestServer, Stratus) {
    let server = TestServer::start().await;
    let cli = Stratus::admin(&server);
    (server, cli)
}

#[tokio::test]
async fn a_knative_manifest_is_created_then_unchanged() {
    let (_server, cli) = setup().await;
    let manifest = example("knative-hello.yaml");
    assert_eq!(cli.run(&["apply", "-f", &manifest]).await.ok(), "service/hello-knative created\n");
    assert_eq!(cli.run(&["apply", "-f", &manifest]).await.ok(), "service/hello-knative unchanged\n");
    let json: Value =
        serde_json::from_str(cli.run(&["get", "ksvc", "hello-knative", "-o", "json"]).await.ok()).unwrap();
    let container = &json["spec"]["template"]["spec"]["containers"][0];
    assert_eq!(container["image"], "127.0.0.1:5000/hello:v1");
    assert_eq!(container["env"][0], serde_json::json!({"name": "TARGET", "value": "World"}));
}

#[tokio::test]
async fn the_example_manifests_apply_from_their_directory() {
    let (_server, cli) = setup().await;
    let dir = example("");
    let out = cli.run(&["apply", "-f", &dir]).await;
    // Name order: hello.yaml before knative-hello.yaml.
    assert_eq!(out.ok(), "service/hello created\nservice/hello-knative created\n");
    let json: Value = serde_json::from_str(cli.run(&["get", "svc", "hello", "-o", "json"]).await.ok()).unwrap();
    let spec = &json["spec"]["template"]["spec"];
    assert_eq!(spec["containerConcurrency"], 50);
    assert_eq!(spec["scaling"]["minInstances"], 0);
    assert_eq!(spec["scaling"]["maxInstances"], 10);
}

#[tokio::test]
async fn a_changed_manifest_is_configured() {
    let (_server, cli) = setup().await;
    let out = cli.run_with_stdin(&["apply", "-f", "-"], &service("web", "example/web:v1")).await;
    assert_eq!(out.ok(), "service/web created\n");
    let out = cli.run_with_stdin(&["apply", "-f", "-"], &service("web", "example/web:v2")).await;
    assert_eq!(out.ok(), "service/web configured\n");
    let out = cli.run_with_stdin(&["apply", "-f", "-"], &service("web", "example/web:v2")).await;
    assert_eq!(out.ok(), "service/web unchanged\n");
}

#[tokio::test]
async fn one_invalid_document_applies_nothing_and_each_problem_is_named() {
    let (_server, cli) = setup().await;
    let no_image = service("broken", "x").replace("      - image: x\n", "      - name: web\n");
    let typo = service("typo", "x").replace("- image:", "- imgae:");
    let text = format!("{}---\n{no_image}---\n{typo}", service("fine", "example/fine:v1"));
    let path = cli.file("app.yaml", &text);
    let out = cli.run(&["apply", "-f", &path]).await;
    let err = out.failed();
    let lines: Vec<&str> = err.lines().collect();
    assert_eq!(lines.len(), 2, "{err}");
    assert!(
        lines[0].starts_with(&format!("error: {path}: document 2: spec.template.spec.containers[0].image: ")),
        "{err}"
    );
    assert!(
        lines[1].starts_with(&format!("error: {path}: document 3: spec.template.spec.containers[0].imgae")),
        "{err}"
    );
    assert_eq!(out.out, "");
    // The valid document was not applied either.
    let out = cli.run(&["get", "svc", "fine"]).await;
    assert_eq!(out.failed(), "error: services \"fine\" not found in namespace \"default\"\n");
}

#[tokio::test]
async fn a_namespace_flag_places_objects_and_must_agree_with_the_manifest() {
    let (_server, cli) = setup().await;
    cli.run_with_stdin(&["apply", "-f", "-"], "apiVersion: stratus.dev/v1\nkind: Namespace\nmetadata:\n  name: team\n")
        .await
        .ok();
    let out = cli.run_with_stdin(&["apply", "-n", "team", "-f", "-"], &service("web", "example/web:v1")).await;
    assert_eq!(out.ok(), "service/web created\n");
    assert!(cli.run(&["get", "svc", "-n", "team"]).await.ok().contains("\nweb "));
    let elsewhere = service("web", "x").replace("  name: web\n", "  name: web\n  namespace: prod\n");
    let out = cli.run_with_stdin(&["apply", "-n", "team", "-f", "-"], &elsewhere).await;
    assert!(
        out.failed().starts_with("error: STDIN: document 1: the namespace of service/web is \"prod\""),
        "{}",
        out.err
    );
}

#[tokio::test]
async fn a_refusal_of_the_server_names_the_object_and_the_others_still_apply() {
    let (_server, cli) = setup().await;
    let text = format!(
        "{}---\n{}",
        service("web", "x").replace("  name: web\n", "  name: web\n  namespace: nowhere\n"),
        service("ok", "y")
    );
    let out = cli.run_with_stdin(&["apply", "-f", "-"], &text).await;
    assert_eq!(out.out, "service/ok created\n");
    let err = out.failed();
    assert!(err.starts_with("error: STDIN: service/web: "), "{err}");
    assert!(err.contains("nowhere"), "{err}");
    assert_eq!(err.lines().count(), 1);
}

#[tokio::test]
async fn get_lists_as_tables_and_says_when_there_is_nothing() {
    let (_server, cli) = setup().await;
    let out = cli.run(&["get", "services"]).await;
    assert_eq!(out.ok(), "");
    assert_eq!(out.err, "No resources found in default namespace.\n");
    cli.run(&["apply", "-f", &example("hello.yaml")]).await.ok();
    let table = cli.run(&["get", "svc"]).await.ok().to_string();
    let mut lines = table.lines();
    let header: Vec<&str> = lines.next().unwrap().split_whitespace().collect();
    assert_eq!(header, ["NAME", "URL", "LATESTCREATED", "LATESTREADY", "TRAFFIC", "READY", "REASON", "AGE"]);
    let row: Vec<&str> = lines.next().unwrap().split_whitespace().collect();
    assert_eq!(row[0], "hello");
    assert!(row[7].ends_with('s'), "{table}");
    let all = cli.run(&["get", "svc", "-A"]).await.ok().to_string();
    assert!(all.starts_with("NAMESPACE "), "{all}");
    assert!(all.contains("\ndefault "), "{all}");
    let names = cli.run(&["get", "svc", "-o", "name"]).await.ok().to_string();
    assert_eq!(names, "service/hello\n");
    let namespaces = cli.run(&["get", "ns"]).await.ok().to_string();
    let rows: Vec<Vec<&str>> = namespaces.lines().map(|l| l.split_whitespace().collect()).collect();
    assert!(rows.iter().any(|r| r[..3] == ["default", "Active", "default"]), "{namespaces}");
}

#[tokio::test]
async fn get_json_of_several_objects_is_a_list_and_of_one_is_the_object() {
    let (_server, cli) = setup().await;
    cli.run(&["apply", "-f", &example("")]).await.ok();
    let list: Value = serde_json::from_str(cli.run(&["get", "svc", "-o", "json"]).await.ok()).unwrap();
    assert_eq!(list["apiVersion"], "v1");
    assert_eq!(list["kind"], "List");
    assert!(!list["metadata"]["resourceVersion"].as_str().unwrap().is_empty());
    let items = list["items"].as_array().unwrap();
    let names: Vec<&str> = items.iter().map(|i| i["metadata"]["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["hello", "hello-knative"]);
    assert!(items.iter().all(|i| i["kind"] == "Service" && i["apiVersion"] == "stratus.dev/v1"));
    let one: Value = serde_json::from_str(cli.run(&["get", "svc/hello", "-o", "json"]).await.ok()).unwrap();
    assert_eq!(one["kind"], "Service");
    assert_eq!(one["metadata"]["name"], "hello");
    let two: Value =
        serde_json::from_str(cli.run(&["get", "svc", "hello", "hello-knative", "-o", "json"]).await.ok()).unwrap();
    assert_eq!(two["kind"], "List");
    assert_eq!(two["items"].as_array().unwrap().len(), 2);
}

#[tokio::test]
async fn get_yaml_applies_back_unchanged() {
    let (_server, cli) = setup().await;
    cli.run(&["apply", "-f", &example("")]).await.ok();
    let one = cli.run(&["get", "service", "hello", "-o", "yaml"]).await.ok().to_string();
    assert!(one.contains("kind: Service\n"), "{one}");
    assert_eq!(cli.run_with_stdin(&["apply", "-f", "-"], &one).await.ok(), "service/hello unchanged\n");
    let list = cli.run(&["get", "services", "-o", "yaml"]).await.ok().to_string();
    assert!(list.contains("kind: List\n"), "{list}");
    assert_eq!(
        cli.run_with_stdin(&["apply", "-f", "-"], &list).await.ok(),
        "service/hello unchanged\nservice/hello-knative unchanged\n"
    );
    let edited = one.replace("value: Stratus", "value: Edited");
    assert_ne!(edited, one);
    assert_eq!(cli.run_with_stdin(&["apply", "-f", "-"], &edited).await.ok(), "service/hello configured\n");
}

#[tokio::test]
async fn get_of_a_missing_name_prints_what_was_found_and_fails() {
    let (_server, cli) = setup().await;
    cli.run(&["apply", "-f", &example("hello.yaml")]).await.ok();
    let out = cli.run(&["get", "svc", "hello", "nope"]).await;
    assert_eq!(out.failed(), "error: services \"nope\" not found in namespace \"default\"\n");
    assert!(out.out.contains("\nhello "), "{}", out.out);
}

#[tokio::test]
async fn unknown_kinds_are_named() {
    let (_server, cli) = setup().await;
    let out = cli.run(&["get", "pods"]).await;
    assert_eq!(out.failed(), "error: the server doesn't have a resource type \"pods\"\n");
}

/// The value of the first `Key:  value` line of a describe text.
fn field<'a>(text: &'a str, key: &str) -> Option<&'a str> {
    text.lines().find_map(|l| l.trim_start().strip_prefix(&format!("{key}:")).map(str::trim))
}

#[tokio::test]
async fn describe_shows_the_object_and_the_events_about_it() {
    let (_server, cli) = setup().await;
    cli.run(&["apply", "-f", &example("hello.yaml")]).await.ok();
    let events = "\
apiVersion: stratus.dev/v1
kind: Event
metadata:
  name: hello.created
spec:
  involvedObject: {kind: Service, name: hello}
  type: Normal
  reason: Created
  message: Created revision hello-00001
  source: services-controller
---
apiVersion: stratus.dev/v1
kind: Event
metadata:
  name: other.created
spec:
  involvedObject: {kind: Service, name: other}
  reason: Unrelated
  message: about another service
";
    cli.run_with_stdin(&["apply", "-f", "-"], events).await.ok();
    let text = cli.run(&["describe", "service", "hello"]).await.ok().to_string();
    assert!(text.starts_with("Name:"), "{text}");
    assert!(text.contains("\nNamespace:"), "{text}");
    assert_eq!(field(&text, "Image"), Some("127.0.0.1:5000/hello:v1"), "{text}");
    assert_eq!(field(&text, "Max Instances"), Some("10"), "{text}");
    assert_eq!(field(&text, "Concurrency"), Some("50 requests per instance"), "{text}");
    let events = text.split("\nEvents:\n").nth(1).unwrap_or_else(|| panic!("no events section:\n{text}"));
    assert!(events.contains("Normal   Created"), "{events}");
    assert!(events.contains("services-controller   Created revision hello-00001"), "{events}");
    assert!(!events.contains("Unrelated"), "{events}");

    let out = cli.run(&["describe", "svc", "nope"]).await;
    assert_eq!(out.failed(), "error: services \"nope\" not found in namespace \"default\"\n");
}

/// An Instance `NAMESPACE/REVISION-SUFFIX` bound to `node` (none: not placed) whose container
/// requests and is limited to the given cpu and memory.
fn instance(namespace: &str, name: &str, node: &str, requests: (&str, &str), limits: (&str, &str)) -> String {
    let revision = name.rsplit_once('-').map_or(name, |(revision, _)| revision);
    format!(
        "apiVersion: stratus.dev/v1\nkind: Instance\nmetadata: {{name: {name}, namespace: {namespace}}}\nspec:\n  \
         revisionName: {revision}\n  nodeName: \"{node}\"\n  containers:\n  - image: img:v1\n    resources:\n      \
         requests: {{cpu: {}, memory: {}}}\n      limits: {{cpu: {}, memory: {}}}\n---\n",
        requests.0, requests.1, limits.0, limits.1
    )
}

#[tokio::test]
async fn nodes_show_what_the_instances_bound_to_them_request() {
    let (server, cli) = setup().await;
    let client = common::admin_client(&server);
    let node = client
        .create(Node { metadata: Some(ObjectMeta { name: "n1".into(), ..Default::default() }), ..Default::default() })
        .await
        .unwrap();
    let allocatable = [("cpu", "2"), ("memory", "4Gi"), ("instances", "110")];
    let ready = Condition { r#type: "Ready".into(), status: "True".into(), ..Default::default() };
    client
        .update_status(Node {
            status: Some(NodeStatus {
                conditions: vec![ready],
                allocatable: allocatable.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
                ..Default::default()
            }),
            ..node
        })
        .await
        .unwrap();
    // Two bound Instances in two namespaces, and one the scheduler has not placed.
    let objects = format!(
        "apiVersion: stratus.dev/v1\nkind: Namespace\nmetadata: {{name: team}}\n---\n{}{}{}",
        instance("default", "hello-00001-a", "n1", ("100m", "256Mi"), ("1", "256Mi")),
        instance("team", "api-00001-a", "n1", ("50m", "512Mi"), ("500m", "512Mi")),
        instance("default", "hello-00001-b", "", ("100m", "256Mi"), ("1", "256Mi")),
    );
    cli.run_with_stdin(&["apply", "-f", "-"], &objects).await.ok();

    let out = cli.run(&["get", "nodes"]).await;
    let lines: Vec<Vec<&str>> = out.ok().lines().map(|l| l.split_whitespace().collect()).collect();
    assert_eq!(lines[0], ["NAME", "STATUS", "CPU", "MEMORY", "INSTANCES", "AGE"], "{}", out.out);
    // 150m of 2 cpus, 768Mi of 4Gi, 2 of 110 instances.
    assert_eq!(lines[1][..7], ["n1", "Ready", "150m/2", "(7%)", "768Mi/4Gi", "(18%)", "2/110"], "{}", out.out);
    assert_eq!(out.err, "");
    let wide = cli.run(&["get", "nodes", "-o", "wide"]).await.ok().to_string();
    assert!(wide.starts_with("NAME "), "{wide}");
    assert!(wide.contains(" 150m/2 (7%) ") && wide.contains(" INTERNAL-IP "), "{wide}");
    // Machine-readable forms are the objects, unchanged.
    let json: Value = serde_json::from_str(cli.run(&["get", "node", "n1", "-o", "json"]).await.ok()).unwrap();
    assert_eq!(json["status"]["allocatable"]["cpu"], "2");

    let text = cli.run(&["describe", "node", "n1"]).await.ok().to_string();
    assert!(text.contains("\nNon-terminated Instances:  (2 in total)\n"), "{text}");
    let rows: Vec<Vec<&str>> = text
        .split("Non-terminated Instances:")
        .nth(1)
        .unwrap()
        .lines()
        .skip(3)
        .take(2)
        .map(|l| l.split_whitespace().collect())
        .collect();
    assert_eq!(
        rows[0],
        ["default", "hello-00001-a", "hello-00001", "100m", "(5%)", "1", "(50%)", "256Mi", "(6%)", "256Mi", "(6%)"],
        "{text}"
    );
    assert_eq!(rows[1][..2], ["team", "api-00001-a"], "{text}");
    let allocated = text.split("Allocated resources:\n").nth(1).unwrap_or_else(|| panic!("no allocation:\n{text}"));
    let totals: Vec<Vec<&str>> = allocated.lines().skip(3).take(3).map(|l| l.split_whitespace().collect()).collect();
    assert_eq!(totals[0], ["cpu", "150m", "(7%)", "1500m", "(75%)"], "{text}");
    assert_eq!(totals[1], ["memory", "768Mi", "(18%)", "768Mi", "(18%)"], "{text}");
    assert_eq!(totals[2], ["instances", "2", "(1%)", "2", "(1%)"], "{text}");

    // A watch counts afresh when the node changes (as it does when the scheduler reserves room
    // on it for a bind).
    let (tx, mut rx) = mpsc::unbounded_channel();
    let mut io = stratus_cli::Io {
        stdin: Box::new(std::io::empty()),
        out: Box::new(Channel(tx)),
        err: Box::new(common::Buf::default()),
        err_is_terminal: false,
        out_is_terminal: false,
        prompt: None,
    };
    let argv = ["stratus", "--server", cli.server.as_str(), "get", "nodes", "-w"];
    let watch = stratus_cli::run_args(argv, &cli.env, &mut io);
    let drive = async {
        let mut seen = String::new();
        read_until(&mut rx, &mut seen, " 150m/2 (7%) ").await;
        let third = instance("team", "api-00001-b", "n1", ("50m", "512Mi"), ("500m", "512Mi"));
        cli.run_with_stdin(&["apply", "-f", "-"], &third).await.ok();
        let mut node: Node = client.get("", "n1").await.unwrap();
        node.metadata.as_mut().unwrap().labels.insert("changed".into(), "yes".into());
        client.update(node).await.unwrap();
        read_until(&mut rx, &mut seen, " 200m/2 (10%)   1280Mi/4Gi (31%)   3/110 ").await;
    };
    let raced = async {
        tokio::select! {
            code = watch => panic!("the watch ended with {code}"),
            () = drive => {}
        }
    };
    tokio::time::timeout(Duration::from_secs(60), raced).await.expect("the watch shows the new totals");
}

#[tokio::test]
async fn events_list_oldest_first_with_their_object() {
    let (_server, cli) = setup().await;
    let event = |name: &str, reason: &str, at: &str| {
        format!(
            "apiVersion: stratus.dev/v1\nkind: Event\nmetadata:\n  name: {name}\nspec:\n  involvedObject: {{kind: Revision, name: \
             hello-00001}}\n  type: Warning\n  reason: {reason}\n  message: it happened\n  lastTimestamp: \"{at}\"\n"
        )
    };
    let text = format!(
        "{}---\n{}",
        event("a", "Later", "2024-05-01T10:00:00Z"),
        event("b", "Earlier", "2024-05-01T09:00:00Z")
    );
    cli.run_with_stdin(&["apply", "-f", "-"], &text).await.ok();
    let out = cli.run(&["get", "events"]).await.ok().to_string();
    let lines: Vec<Vec<&str>> = out.lines().map(|l| l.split_whitespace().collect()).collect();
    assert_eq!(lines[0], ["LAST", "SEEN", "TYPE", "REASON", "OBJECT", "MESSAGE"]);
    assert_eq!(lines[1][1..], ["Warning", "Earlier", "revision/hello-00001", "it", "happened"]);
    assert_eq!(lines[2][2], "Later");
}

#[tokio::test]
async fn delete_then_get_is_not_found() {
    let (_server, cli) = setup().await;
    cli.run(&["apply", "-f", &example("hello.yaml")]).await.ok();
    assert_eq!(cli.run(&["delete", "service", "hello"]).await.ok(), "service \"hello\" deleted\n");
    let out = cli.run(&["get", "svc", "hello"]).await;
    assert_eq!(out.failed(), "error: services \"hello\" not found in namespace \"default\"\n");
    assert_eq!(out.out, "");
    let out = cli.run(&["delete", "svc", "hello"]).await;
    assert_eq!(out.failed(), "error: services \"hello\" not found in namespace \"default\"\n");
    let out = cli.run(&["delete", "svc", "hello", "--ignore-not-found"]).await;
    assert_eq!(out.ok(), "");
}

#[tokio::test]
async fn delete_by_manifest_and_by_selector() {
    let (_server, cli) = setup().await;
    let dir = example("");
    cli.run(&["apply", "-f", &dir]).await.ok();
    let out = cli.run(&["delete", "-f", &example("knative-hello.yaml")]).await;
    assert_eq!(out.ok(), "service \"hello-knative\" deleted\n");
    let out = cli.run(&["delete", "svc"]).await;
    assert!(out.failed().contains("give names, -l SELECTOR or --all"), "{}", out.err);
    assert_eq!(cli.run(&["delete", "svc", "-l", "app=hello"]).await.ok(), "service \"hello\" deleted\n");
    let out = cli.run(&["get", "svc"]).await;
    assert_eq!(out.err, "No resources found in default namespace.\n");
}

/// Sets Ready on a service's status, as the services controller would.
async fn set_ready(server: &TestServer, name: &str, status: &str) {
    let client = common::admin_client(server);
    let mut svc: Service = client.get("default", name).await.unwrap();
    let generation = svc.metadata.as_ref().unwrap().generation;
    svc.status = Some(ServiceStatus {
        observed_generation: generation,
        conditions: vec![Condition { r#type: "Ready".into(), status: status.into(), ..Default::default() }],
        ..Default::default()
    });
    client.update_status(svc).await.unwrap();
}

#[tokio::test]
async fn wait_returns_once_the_condition_is_set() {
    let (server, cli) = setup().await;
    cli.run(&["apply", "-f", &example("hello.yaml")]).await.ok();
    // Whether the status lands before the wait reads the service or while it watches, the wait
    // must see it.
    let (out, ()) = tokio::join!(
        cli.run(&["wait", "service", "hello", "--for=condition=Ready", "--timeout=60s"]),
        set_ready(&server, "hello", "True"),
    );
    assert_eq!(out.ok(), "service/hello condition met\n");
    // Met already: returns at once.
    let out = cli.run(&["wait", "svc/hello", "--for=condition=ready=true", "--timeout=0"]).await;
    assert_eq!(out.ok(), "service/hello condition met\n");
}

#[tokio::test]
async fn wait_times_out_with_kubectls_message() {
    let (server, cli) = setup().await;
    cli.run(&["apply", "-f", &example("hello.yaml")]).await.ok();
    set_ready(&server, "hello", "False").await;
    let out = cli.run(&["wait", "svc", "hello", "--for=condition=Ready", "--timeout=300ms"]).await;
    assert_eq!(out.failed(), "error: timed out waiting for the condition on services/hello\n");
    assert_eq!(out.out, "");
}

#[tokio::test]
async fn wait_ignores_a_status_older_than_the_spec() {
    let (server, cli) = setup().await;
    cli.run(&["apply", "-f", &example("hello.yaml")]).await.ok();
    set_ready(&server, "hello", "True").await;
    // A new template: the Ready=True above describes the previous generation.
    let changed = std::fs::read_to_string(example("hello.yaml")).unwrap().replace("value: Stratus", "value: Changed");
    cli.run_with_stdin(&["apply", "-f", "-"], &changed).await.ok();
    let out = cli.run(&["wait", "svc", "hello", "--for=condition=Ready", "--timeout=300ms"]).await;
    assert_eq!(out.failed(), "error: timed out waiting for the condition on services/hello\n");
}

#[tokio::test]
async fn wait_for_delete() {
    let (_server, cli) = setup().await;
    cli.run(&["apply", "-f", &example("hello.yaml")]).await.ok();
    let (waited, deleted) = tokio::join!(
        cli.run(&["wait", "svc", "hello", "--for=delete", "--timeout=60s"]),
        cli.run(&["delete", "svc", "hello"]),
    );
    deleted.ok();
    assert_eq!(waited.ok(), "service/hello condition met\n");
    let out = cli.run(&["wait", "svc", "nope", "--for=condition=Ready"]).await;
    assert_eq!(out.failed(), "error: services \"nope\" not found in namespace \"default\"\n");
}

/// A writer that hands each write to the test as it happens.
struct Channel(mpsc::UnboundedSender<Vec<u8>>);

impl Write for Channel {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        // The test may have stopped reading; the command's output then goes nowhere.
        let _ = self.0.send(b.to_vec());
        Ok(b.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Reads from `rx` until the text so far contains `needle`.
async fn read_until(rx: &mut mpsc::UnboundedReceiver<Vec<u8>>, seen: &mut String, needle: &str) {
    while !seen.contains(needle) {
        let chunk = rx.recv().await.unwrap_or_else(|| panic!("output ended before {needle:?}:\n{seen}"));
        seen.push_str(&String::from_utf8_lossy(&chunk));
    }
}

#[tokio::test]
async fn get_watch_prints_the_list_then_changes() {
    let (_server, cli) = setup().await;
    cli.run_with_stdin(&["apply", "-f", "-"], &service("first", "example/a:v1")).await.ok();
    let (tx, mut rx) = mpsc::unbounded_channel();
    let mut io = stratus_cli::Io {
        stdin: Box::new(std::io::empty()),
        out: Box::new(Channel(tx)),
        err: Box::new(common::Buf::default()),
        err_is_terminal: false,
        out_is_terminal: false,
        prompt: None,
    };
    let argv = ["stratus", "--server", cli.server.as_str(), "get", "svc", "-w"];
    let watch = stratus_cli::run_args(argv, &cli.env, &mut io);
    let drive = async {
        let mut seen = String::new();
        read_until(&mut rx, &mut seen, "\nfirst ").await;
        assert!(seen.starts_with("NAME "), "{seen}");
        cli.run_with_stdin(&["apply", "-f", "-"], &service("second", "example/b:v1")).await.ok();
        read_until(&mut rx, &mut seen, "\nsecond ").await;
        cli.run(&["delete", "svc", "first"]).await.ok();
        // The deletion shows as one more row for the object.
        while seen.matches("\nfirst ").count() < 2 {
            let chunk = rx.recv().await.unwrap_or_else(|| panic!("output ended before the deletion:\n{seen}"));
            seen.push_str(&String::from_utf8_lossy(&chunk));
        }
        let rows: Vec<&str> = seen.lines().map(|l| l.split_whitespace().next().unwrap_or_default()).collect();
        assert_eq!(rows, ["NAME", "first", "second", "first"]);
    };
    let raced = async {
        tokio::select! {
            code = watch => panic!("the watch ended with {code}"),
            () = drive => {}
        }
    };
    tokio::time::timeout(Duration::from_secs(60), raced).await.expect("the watch shows the changes");
}

#[tokio::test]
async fn an_unreachable_server_is_one_clear_line() {
    let cli = Stratus::new(&closed_endpoint());
    let out = cli.run(&["get", "svc"]).await;
    assert_eq!(
        out.failed(),
        format!("error: cannot reach the Stratus API at {} — is it running? start it with `stratus up`\n", cli.server)
    );
    assert_eq!(out.out, "");
    let out = cli.run(&["apply", "-f", &example("hello.yaml")]).await;
    assert_eq!(out.err.lines().count(), 1, "{}", out.err);
    assert!(out.failed().starts_with("error: cannot reach the Stratus API at "), "{}", out.err);
}

#[tokio::test]
async fn with_several_servers_a_command_goes_to_the_one_that_answers() {
    let server = TestServer::start().await;
    let (away, also_away) = (closed_endpoint(), closed_endpoint());
    let cli = Stratus::new(&format!("{away},{}", server.endpoint)).with_token(Some(&server.token));
    assert_eq!(cli.run(&["apply", "-f", &example("hello.yaml")]).await.ok(), "service/hello created\n");
    assert!(cli.run(&["get", "services"]).await.ok().contains("hello"));

    let cli = Stratus::new(&format!("{away},{also_away}"));
    assert_eq!(
        cli.run(&["get", "svc"]).await.failed(),
        format!(
            "error: cannot reach the Stratus API at {away}, {also_away} — is it running? start it with `stratus up`\n"
        )
    );
}

#[tokio::test]
async fn the_current_context_chooses_server_and_namespace() {
    let (server, cli) = setup().await;
    let out = cli.run_bare(&["config", "set-context", "local", "--server", &server.endpoint, "-n", "team"]).await;
    assert_eq!(out.ok(), "Context \"local\" created.\n");
    assert_eq!(cli.run_bare(&["config", "use-context", "local"]).await.ok(), "Switched to context \"local\".\n");
    assert_eq!(cli.run_bare(&["config", "current-context"]).await.ok(), "local\n");
    let contexts = cli.run_bare(&["config", "get-contexts"]).await.ok().to_string();
    assert!(contexts.contains(&format!("*         local   {}   team", server.endpoint)), "{contexts}");

    // No --server: the context's server and namespace are used.
    let out = cli.run_bare(&["get", "services"]).await;
    assert_eq!(out.ok(), "");
    assert_eq!(out.err, "No resources found in team namespace.\n");
    // -n beats the context's namespace.
    let out = cli.run_bare(&["get", "services", "-n", "default"]).await;
    assert_eq!(out.err, "No resources found in default namespace.\n");

    let out = cli.run_bare(&["config", "use-context", "nope"]).await;
    assert!(out.failed().ends_with("no context exists with the name \"nope\"\n"), "{}", out.err);
}

#[tokio::test]
async fn help_has_examples_and_usage_errors_are_clap_errors() {
    let cli = Stratus::new(&closed_endpoint());
    let out = cli.run_exactly(&["stratus", "apply", "--help"], "").await;
    assert!(
        out.ok().contains("Examples:\n  # Apply a manifest\n  stratus apply -f manifests/hello.yaml"),
        "{}",
        out.out
    );
    let out = cli.run_exactly(&["stratus", "apply"], "").await;
    assert_eq!(out.code, 2);
    assert!(out.err.starts_with("error: "), "{}", out.err);
}

#[tokio::test]
async fn completion_scripts_name_the_commands() {
    let cli = Stratus::new(&closed_endpoint());
    for shell in ["bash", "zsh", "fish"] {
        let out = cli.run_exactly(&["stratus", "completion", shell], "").await;
        let script = out.ok();
        assert!(script.contains("stratus") && script.contains("apply") && script.contains("describe"), "{shell}");
    }
}

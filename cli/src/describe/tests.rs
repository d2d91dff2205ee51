//! The describers, checked against the text they print.

#![allow(clippy::unwrap_used)]

use std::time::{Duration, UNIX_EPOCH};

use stratus_api::v1::{
    EnvVar, EnvVarSource, Event, EventSpec, InstanceSpec, InstanceStatus, Lease, LeaseSpec, NodeStatus,
    ObjectReference, ResourceRequirements, RevisionStatus, RevisionTemplate, Scaling, Secret, SecretKeySelector,
    Service, ServiceSpec, ServiceStatus,
};
use stratus_api::{Resource, Timestamp};

use super::*;

const NOW: i64 = 1_000_000;

fn now() -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(NOW as u64)
}

fn ts(ago: i64) -> Option<Timestamp> {
    Some(Timestamp { seconds: NOW - ago, nanos: 0 })
}

fn service() -> AnyObject {
    Service {
        metadata: Some(ObjectMeta {
            name: "hello".into(),
            namespace: "default".into(),
            labels: [("app".to_string(), "web".to_string()), ("tier".to_string(), "front".to_string())].into(),
            creation_timestamp: ts(600),
            generation: 2,
            ..Default::default()
        }),
        spec: Some(ServiceSpec {
            template: Some(RevisionTemplate {
                metadata: None,
                spec: Some(RevisionSpec {
                    containers: vec![Container {
                        name: "user-container".into(),
                        image: "img:v1".into(),
                        env: vec![
                            EnvVar { name: "TARGET".into(), value: "World".into(), value_from: None },
                            EnvVar {
                                name: "DB".into(),
                                value: String::new(),
                                value_from: Some(EnvVarSource {
                                    secret_key_ref: Some(SecretKeySelector {
                                        name: "db".into(),
                                        key: "password".into(),
                                        optional: None,
                                    }),
                                }),
                            },
                        ],
                        ..Default::default()
                    }],
                    container_concurrency: Some(80),
                    scaling: Some(Scaling { min_instances: Some(0), max_instances: Some(10), ..Default::default() }),
                    ..Default::default()
                }),
            }),
            traffic: vec![TrafficTarget { latest_revision: Some(true), percent: Some(100), ..Default::default() }],
            ..Default::default()
        }),
        status: Some(ServiceStatus {
            conditions: vec![Condition {
                r#type: "Ready".into(),
                status: "False".into(),
                reason: "RevisionFailed".into(),
                message: "image pull failed".into(),
                last_transition_time: ts(60),
                ..Default::default()
            }],
            ..Default::default()
        }),
        ..Default::default()
    }
    .into_any()
}

fn event(reason: &str, count: i32, first_ago: i64, last_ago: i64) -> AnyObject {
    Event {
        metadata: Some(ObjectMeta {
            name: format!("hello.{reason}"),
            namespace: "default".into(),
            ..Default::default()
        }),
        spec: Some(EventSpec {
            involved_object: Some(ObjectReference {
                kind: "Service".into(),
                name: "hello".into(),
                ..Default::default()
            }),
            r#type: "Normal".into(),
            reason: reason.into(),
            message: format!("{reason} happened"),
            source: "controllers".into(),
            count,
            first_timestamp: ts(first_ago),
            last_timestamp: ts(last_ago),
        }),
        ..Default::default()
    }
    .into_any()
}

#[test]
fn a_service_reads_top_down_with_aligned_fields() {
    let text = render_with(&service(), None, &Events::List(vec![]), now());
    let expected_start = "\
Name:                hello
Namespace:           default
Labels:              app=web
                     tier=front
Annotations:         <none>
API Version:         stratus.dev/v1
Kind:                Service
Generation:          2
Creation Timestamp:  1970-01-12T13:36:40Z (10m ago)
URL:                 <none>
Template:
  Containers:
    user-container:
      Image:  img:v1
      Port:   <none>
      Environment:
        TARGET:  World
        DB:      <set to the key 'password' in secret 'db'>
  Concurrency:  80 requests per instance
  Scaling:
    Min Instances:  0
    Max Instances:  10
    Metric:         concurrency
Traffic:
  Percent   Revision   Tag
  -------   --------   ---
  100%      @latest    <none>
";
    assert!(text.starts_with(expected_start), "{text}");
    assert!(text.contains(
            "Conditions:\n  Type    Status   Reason           Age   Message\n  ----    ------   ------           ---   -------\n  Ready   False    RevisionFailed   60s   image pull failed\n"
        ), "{text}");
    assert!(text.ends_with("Events:              <none>\n"), "{text}");
}

#[test]
fn events_end_the_description_with_repeats_counted() {
    let mut events = vec![event("Scaled", 4, 600, 30), event("Created", 1, 900, 900)];
    crate::output::sort_events(&mut events);
    let text = render_with(&service(), None, &Events::List(events), now());
    let tail = text.split("Events:\n").nth(1).unwrap();
    let expected = [
        "  Type     Reason    Age                 From          Message",
        "  ----     ------    ---                 ----          -------",
        "  Normal   Created   15m                 controllers   Created happened",
        "  Normal   Scaled    30s (x4 over 10m)   controllers   Scaled happened",
    ];
    assert_eq!(tail.lines().collect::<Vec<_>>(), expected);
}

#[test]
fn an_unlistable_event_history_is_said_so() {
    let text = render_with(&service(), None, &Events::Unavailable("forbidden".into()), now());
    assert!(text.ends_with("Events:              <cannot list events: forbidden>\n"), "{text}");
}

#[test]
fn kinds_without_a_describer_show_their_fields_titled() {
    let lease = Lease {
        metadata: Some(ObjectMeta {
            name: "controllers".into(),
            namespace: "stratus-system".into(),
            ..Default::default()
        }),
        spec: Some(LeaseSpec { holder_identity: "host-a".into(), lease_duration_seconds: 15, ..Default::default() }),
        ..Default::default()
    }
    .into_any();
    let text = render_with(&lease, None, &Events::List(vec![]), now());
    assert!(text.contains("Spec:\n  Holder Identity:         host-a\n  Lease Duration Seconds:  15\n"), "{text}");
    assert!(!text.contains("Status:"), "{text}");
}

#[test]
fn a_secret_shows_its_keys_and_sizes_never_its_values() {
    let mut secret = Secret { r#type: "Opaque".into(), ..Default::default() };
    secret.meta_mut().name = "db".into();
    secret.meta_mut().namespace = "default".into();
    secret.data = [("password".to_string(), "hunter22".to_string()), ("user".to_string(), "app".to_string())].into();
    let text = render_with(&secret.into_any(), None, &Events::List(vec![]), now());
    assert!(text.contains("Type:"), "{text}");
    assert!(text.contains("Data:\n  password:  8 bytes\n  user:      3 bytes\n"), "{text}");
    assert!(!text.contains("hunter22") && !text.contains("app\n"), "{text}");
}

#[test]
fn titles_split_camel_case() {
    assert_eq!(title("revisionName"), "Revision Name");
    assert_eq!(title("spec"), "Spec");
    assert_eq!(title("maxCPU"), "Max CPU");
}

#[test]
fn probes_read_like_kubectl() {
    let p = Probe {
        http_get: Some(stratus_api::v1::HttpGetAction { path: "/healthz".into(), port: 8080, ..Default::default() }),
        timeout_seconds: 1,
        period_seconds: 10,
        success_threshold: 1,
        failure_threshold: 3,
        ..Default::default()
    };
    assert_eq!(probe_text(&p), "http-get http://:8080/healthz delay=0s timeout=1s period=10s #success=1 #failure=3");
}

#[test]
fn byte_counts_are_binary_units() {
    assert_eq!(bytes(512), "512B");
    assert_eq!(bytes(3 << 20), "3.0Mi");
    assert_eq!(bytes(3 << 29), "1.5Gi");
}

fn quantities(kv: &[(&str, &str)]) -> BTreeMap<String, String> {
    kv.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
}

/// An Instance of `revision` in `namespace`, on `node` (none: not placed), whose one
/// container has these limits and requests.
fn instance(
    namespace: &str,
    name: &str,
    revision: &str,
    node: &str,
    status: InstanceStatus,
    limits: &[(&str, &str)],
    requests: &[(&str, &str)],
) -> Instance {
    Instance {
        metadata: Some(ObjectMeta { name: name.into(), namespace: namespace.into(), ..Default::default() }),
        spec: Some(InstanceSpec {
            revision_name: revision.into(),
            node_name: node.into(),
            containers: vec![Container {
                resources: Some(ResourceRequirements { limits: quantities(limits), requests: quantities(requests) }),
                ..Default::default()
            }],
            ..Default::default()
        }),
        status: Some(status),
        ..Default::default()
    }
}

fn phase(phase: &str) -> InstanceStatus {
    InstanceStatus { phase: phase.into(), ..Default::default() }
}

fn node() -> AnyObject {
    Node {
        metadata: Some(ObjectMeta { name: "n1".into(), creation_timestamp: ts(60), ..Default::default() }),
        status: Some(NodeStatus {
            allocatable: quantities(&[("cpu", "2"), ("memory", "4Gi"), ("instances", "110")]),
            ..Default::default()
        }),
        ..Default::default()
    }
    .into_any()
}

#[test]
fn a_node_says_which_instances_hold_its_capacity() {
    let serving = [("cpu", "1"), ("memory", "512Mi")];
    let instances = vec![
        // Made by the platform: requests written beside the limits.
        instance(
            "team",
            "hello-00001-aaaaa",
            "hello-00001",
            "n1",
            phase("Running"),
            &serving,
            &[("cpu", "50m"), ("memory", "512Mi")],
        ),
        // Made by hand with limits only: requests are the limits, as Kubernetes counts them.
        instance("default", "solo", "", "n1", phase("Pending"), &[("cpu", "500m"), ("memory", "1Gi")], &[]),
        // Finished, or elsewhere: not counted.
        instance("team", "hello-00001-ccccc", "hello-00001", "n1", phase("Succeeded"), &serving, &[]),
        instance("team", "hello-00001-ddddd", "hello-00001", "n2", phase("Running"), &serving, &[]),
    ];
    let related = Related::Node(Ok(instances));
    let text = render_with(&node(), Some(&related), &Events::List(vec![]), now());
    let expected = "\
Non-terminated Instances:  (2 in total)
  Namespace   Name                Revision      CPU Requests   CPU Limits   Memory Requests   Memory Limits
  ---------   ----                --------      ------------   ----------   ---------------   -------------
  default     solo                <none>        500m (25%)     500m (25%)   1Gi (25%)         1Gi (25%)
  team        hello-00001-aaaaa   hello-00001   50m (2%)       1 (50%)      512Mi (12%)       512Mi (12%)
Allocated resources:
  (Total limits may be over 100 percent, i.e., overcommitted.)
  Resource    Requests       Limits
  --------    --------       ------
  cpu         550m (27%)     1500m (75%)
  memory      1536Mi (37%)   1536Mi (37%)
  instances   2 (1%)         2 (1%)
Events:              <none>
";
    assert!(text.ends_with(expected), "{text}");
    // The long title is not a field: the node's own fields keep their alignment.
    assert!(text.starts_with("Name:                n1\n"), "{text}");

    let empty = render_with(&node(), Some(&Related::Node(Ok(vec![]))), &Events::List(vec![]), now());
    assert!(empty.contains("Non-terminated Instances:  (0 in total)\nAllocated resources:\n"), "{empty}");
    assert!(empty.contains("  cpu         0 (0%)     0 (0%)\n"), "{empty}");
}

#[test]
fn a_node_whose_instances_cannot_be_listed_says_so() {
    let related = Related::Node(Err("forbidden".into()));
    let text = render_with(&node(), Some(&related), &Events::List(vec![]), now());
    assert!(text.contains("\nAllocated resources:  <cannot list instances: forbidden>\n"), "{text}");
    assert!(!text.contains("Non-terminated"), "{text}");
}

fn revision(name: &str, desired: i32) -> Revision {
    Revision {
        metadata: Some(ObjectMeta { name: name.into(), namespace: "default".into(), ..Default::default() }),
        status: Some(RevisionStatus { desired_instances: desired, ..Default::default() }),
        ..Default::default()
    }
}

#[test]
fn a_service_says_when_wanted_instances_wait_for_room() {
    let message = "0/1 nodes are available: 1 Insufficient cpu (need 50m, 0 free at most); largest holders: \
                       default/hello-00001 (1 instances, 1950m cpu)";
    let unschedulable = InstanceStatus {
        phase: "Pending".into(),
        reason: UNSCHEDULABLE.into(),
        message: message.into(),
        ..Default::default()
    };
    let req = [("cpu", "50m")];
    let instances = vec![
        instance("default", "hello-00002-a", "hello-00002", "n1", phase("Running"), &[], &req),
        instance("default", "hello-00002-b", "hello-00002", "", phase("Pending"), &[], &req),
        instance("default", "hello-00002-c", "hello-00002", "", unschedulable, &[], &req),
        // Placed, then failed: it does not count as placed.
        instance("default", "hello-00002-d", "hello-00002", "n1", phase("Failed"), &[], &req),
        instance("default", "hello-00001-a", "hello-00001", "n1", phase("Running"), &[], &req),
    ];
    let revisions = vec![revision("hello-00001", 1), revision("hello-00002", 4)];
    let related = Related::Service { revisions, instances };
    let text = render_with(&service(), Some(&related), &Events::List(vec![]), now());
    let capacity: Vec<&str> = text.lines().filter(|l| l.trim_start().starts_with("Capacity:")).collect();
    assert_eq!(
        capacity,
        [format!(
            "  Capacity:  the autoscaler wants 4 instances of hello-00002; 1 is placed, 3 wait for room: {message}"
        )],
        "{text}"
    );
    // Under the revisions, before the instances.
    let revisions_at = text.find("Revisions:").unwrap();
    let capacity_at = text.find("  Capacity:").unwrap();
    assert!(revisions_at < capacity_at && capacity_at < text.find("\nInstances:").unwrap(), "{text}");

    // Short without a word from the scheduler: still placing, not out of room.
    let instances = vec![instance("default", "hello-00002-a", "hello-00002", "", phase("Pending"), &[], &req)];
    let related = Related::Service { revisions: vec![revision("hello-00002", 1)], instances };
    let text = render_with(&service(), Some(&related), &Events::List(vec![]), now());
    assert!(
        text.contains(
            "\n  Capacity:  the autoscaler wants 1 instance of hello-00002; 0 are placed, 1 is not placed yet\n"
        ),
        "{text}"
    );

    // Everything placed: nothing said.
    let instances = vec![instance("default", "hello-00002-a", "hello-00002", "n1", phase("Running"), &[], &req)];
    let related = Related::Service { revisions: vec![revision("hello-00002", 1)], instances };
    let text = render_with(&service(), Some(&related), &Events::List(vec![]), now());
    assert!(!text.contains("Capacity:"), "{text}");
}

#[test]
fn a_role_binding_lists_its_subjects_with_their_namespaces() {
    use stratus_api::v1::{RoleBindingSpec, Subject};
    let subject = |kind: &str, name: &str, namespace: &str| Subject {
        kind: kind.into(),
        name: name.into(),
        namespace: namespace.into(),
    };
    let binding = RoleBinding {
        metadata: Some(ObjectMeta { name: "devs".into(), namespace: "team".into(), ..Default::default() }),
        spec: Some(RoleBindingSpec {
            role: "developer".into(),
            subjects: vec![
                subject("User", "alice", ""),
                subject("ServiceAccount", "ci", "ops"),
                subject("ServiceAccount", "deployer", ""),
            ],
        }),
        ..Default::default()
    }
    .into_any();
    let text = render_with(&binding, None, &Events::List(vec![]), now());
    assert!(text.contains("\nRole:                developer\n"), "{text}");
    // A service account named without a namespace is of the binding's namespace.
    let subjects = text.split("Subjects:\n").nth(1).unwrap();
    let rows: Vec<Vec<&str>> = subjects.lines().take(5).map(|l| l.split_whitespace().collect()).collect();
    assert_eq!(rows[0], ["Kind", "Name", "Namespace"]);
    assert_eq!(rows[2], ["User", "alice", "<none>"]);
    assert_eq!(rows[3], ["ServiceAccount", "ci", "ops"]);
    assert_eq!(rows[4], ["ServiceAccount", "deployer", "team"]);

    let empty = RoleBinding { spec: Some(RoleBindingSpec::default()), ..Default::default() }.into_any();
    assert!(render_with(&empty, None, &Events::List(vec![]), now()).contains("\nSubjects:"), "no subjects line");
}

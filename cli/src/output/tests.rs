//! The tables, checked against the text they print.

#![allow(clippy::unwrap_used)]

use std::time::{Duration, UNIX_EPOCH};

use stratus_api::Resource;
use stratus_api::v1::{
    EndpointAddress, Endpoints, EndpointsSpec, Event, EventSpec, Instance, InstanceSpec, InstanceStatus, Namespace,
    Node, NodeSpec, NodeStatus, ObjectReference, ResourceRequirements, RevisionTemplate, Scaling, Service, ServiceSpec,
    ServiceStatus,
};

use super::*;
use crate::table::render;

const NOW: u64 = 1_000_000;

fn now() -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(NOW)
}

fn meta(name: &str, ns: &str, age_secs: i64) -> ObjectMeta {
    ObjectMeta {
        name: name.into(),
        namespace: ns.into(),
        creation_timestamp: Some(Timestamp { seconds: NOW as i64 - age_secs, nanos: 0 }),
        ..Default::default()
    }
}

fn ready(status: &str, reason: &str) -> Condition {
    Condition { r#type: "Ready".into(), status: status.into(), reason: reason.into(), ..Default::default() }
}

fn service() -> AnyObject {
    Service {
        metadata: Some(meta("hello", "default", 300)),
        spec: Some(ServiceSpec {
            template: Some(RevisionTemplate {
                metadata: None,
                spec: Some(RevisionSpec {
                    containers: vec![Container { image: "img:v1".into(), ..Default::default() }],
                    container_concurrency: Some(10),
                    scaling: Some(Scaling { min_instances: Some(0), max_instances: Some(10), ..Default::default() }),
                    ..Default::default()
                }),
            }),
            ..Default::default()
        }),
        status: Some(ServiceStatus {
            url: "http://hello.default.example.com".into(),
            latest_created_revision_name: "hello-00001".into(),
            latest_ready_revision_name: "hello-00001".into(),
            conditions: vec![ready("True", "")],
            traffic: vec![stratus_api::v1::TrafficTarget {
                revision_name: "hello-00001".into(),
                percent: Some(100),
                latest_revision: Some(true),
                ..Default::default()
            }],
            ..Default::default()
        }),
        ..Default::default()
    }
    .into_any()
}

fn table(objs: &[AnyObject], opts: TableOptions) -> String {
    let header = header(objs[0].info(), opts);
    let rows: Vec<_> = objs.iter().map(|o| row(o, opts, &NodeAllocations::Unknown, now())).collect();
    for r in &rows {
        assert_eq!(r.len(), header.len(), "row {r:?} does not match header {header:?}");
    }
    render(&header, &rows, false)
}

#[test]
fn services_list_like_kn() {
    let text = table(&[service()], TableOptions::default());
    assert_eq!(
        text,
        "NAME    URL                                LATESTCREATED   LATESTREADY   TRAFFIC            READY   REASON   AGE\n\
             hello   http://hello.default.example.com   hello-00001     hello-00001   hello-00001=100%   True    <none>   5m\n"
    );
    let wide = table(&[service()], TableOptions { wide: true, ..Default::default() });
    assert!(wide.lines().next().unwrap().ends_with("AGE   IMAGE    CONCURRENCY   SCALE"), "{wide}");
    assert!(wide.lines().nth(1).unwrap().ends_with("5m    img:v1   10            0-10"), "{wide}");
}

#[test]
fn a_fresh_service_shows_unknown_and_none() {
    let svc = Service { metadata: Some(meta("new", "default", 3)), ..Default::default() }.into_any();
    let cells = row(&svc, TableOptions::default(), &NodeAllocations::Unknown, now());
    assert_eq!(cells, ["new", "<none>", "<none>", "<none>", "<none>", "Unknown", "<none>", "3s"]);
}

#[test]
fn all_namespaces_adds_a_namespace_column_to_namespaced_kinds_only() {
    let opts = TableOptions { namespace_column: true, ..Default::default() };
    assert_eq!(header(service().info(), opts)[0], "NAMESPACE");
    assert_eq!(row(&service(), opts, &NodeAllocations::Unknown, now())[0], "default");
    let node = Node { metadata: Some(meta("n1", "", 10)), ..Default::default() }.into_any();
    assert_eq!(header(node.info(), opts)[0], "NAME");
    assert_eq!(row(&node, opts, &NodeAllocations::Unknown, now())[0], "n1");
}

#[test]
fn several_kinds_qualify_names() {
    let opts = TableOptions { qualified_names: true, ..Default::default() };
    assert_eq!(row(&service(), opts, &NodeAllocations::Unknown, now())[0], "service/hello");
}

#[test]
fn instances_show_placement_and_health() {
    let inst = Instance {
        metadata: Some(meta("hello-00001-abcde", "default", 7200)),
        spec: Some(InstanceSpec {
            service_name: "hello".into(),
            revision_name: "hello-00001".into(),
            ..Default::default()
        }),
        status: Some(InstanceStatus { restart_count: 2, ..Default::default() }),
        ..Default::default()
    }
    .into_any();
    let cells = row(&inst, TableOptions::default(), &NodeAllocations::Unknown, now());
    assert_eq!(cells, ["hello-00001-abcde", "hello-00001", "<none>", "Pending", "False", "2", "<none>", "120m"]);
}

fn node(name: &str, allocatable: &[(&str, &str)]) -> AnyObject {
    Node {
        metadata: Some(meta(name, "", 5 * 86_400)),
        spec: Some(NodeSpec { unschedulable: true }),
        status: Some(NodeStatus {
            conditions: vec![ready("False", "LeaseExpired")],
            allocatable: allocatable.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
            ..Default::default()
        }),
        ..Default::default()
    }
    .into_any()
}

/// An Instance bound to `node` whose serving container requests 50m and 512Mi.
fn bound(node: &str, phase: &str) -> Instance {
    let resources = ResourceRequirements {
        limits: [("cpu".to_string(), "1".to_string()), ("memory".to_string(), "512Mi".to_string())].into(),
        requests: [("cpu".to_string(), "50m".to_string()), ("memory".to_string(), "512Mi".to_string())].into(),
    };
    Instance {
        spec: Some(InstanceSpec {
            node_name: node.into(),
            containers: vec![Container { resources: Some(resources), ..Default::default() }],
            ..Default::default()
        }),
        status: Some(InstanceStatus { phase: phase.into(), ..Default::default() }),
        ..Default::default()
    }
}

#[test]
fn nodes_report_readiness_and_what_their_instances_request_of_allocatable() {
    let n1 = node("n1", &[("cpu", "2"), ("memory", "23Gi"), ("instances", "110")]);
    let instances = [
        bound("n1", "Running"),
        bound("n1", "Running"),
        bound("n1", "Pending"),
        // Finished: it holds nothing any more.
        bound("n1", "Succeeded"),
        bound("n2", "Running"),
    ];
    let counted = NodeAllocations::Counted(allocation::per_node(&instances));
    assert_eq!(
        row(&n1, TableOptions::default(), &counted, now()),
        ["n1", "NotReady,SchedulingDisabled", "150m/2 (7%)", "1536Mi/23Gi (6%)", "3/110", "5d"]
    );
    // Nothing bound there; nothing reported by the node.
    let empty = node("n3", &[]);
    assert_eq!(row(&empty, TableOptions::default(), &counted, now())[2..5], ["0/<none>", "0/<none>", "0/<none>"]);
    // The Instances could not be listed.
    assert_eq!(
        row(&n1, TableOptions::default(), &NodeAllocations::Unknown, now())[2..5],
        ["<unknown>", "<unknown>", "<unknown>"]
    );
    let opts = TableOptions::default();
    let text = render(&header(n1.info(), opts), &[row(&n1, opts, &counted, now())], false);
    assert_eq!(
        text,
        "NAME   STATUS                        CPU           MEMORY             INSTANCES   AGE\n\
             n1     NotReady,SchedulingDisabled   150m/2 (7%)   1536Mi/23Gi (6%)   3/110       5d\n"
    );
    let wide = header(node("n1", &[]).info(), TableOptions { wide: true, ..Default::default() });
    assert_eq!(wide[..7], ["NAME", "STATUS", "CPU", "MEMORY", "INSTANCES", "AGE", "INTERNAL-IP"]);
}

#[test]
fn namespaces_are_active_unless_told_otherwise() {
    let ns = Namespace { metadata: Some(meta("team", "", 60)), ..Default::default() }.into_any();
    assert_eq!(
        row(&ns, TableOptions::default(), &NodeAllocations::Unknown, now()),
        ["team", "Active", "<none>", "60s"]
    );
}

#[test]
fn endpoints_show_three_addresses_then_a_count() {
    let addrs = (1..=5).map(|i| EndpointAddress { address: format!("10.0.0.{i}:80"), ..Default::default() });
    let ep = Endpoints {
        metadata: Some(meta("hello-00001", "default", 1)),
        spec: Some(EndpointsSpec { addresses: addrs.collect(), ..Default::default() }),
        ..Default::default()
    }
    .into_any();
    assert_eq!(
        row(&ep, TableOptions::default(), &NodeAllocations::Unknown, now())[1],
        "10.0.0.1:80,10.0.0.2:80,10.0.0.3:80 + 2 more..."
    );
}

#[test]
fn events_read_by_time_and_object_on_one_line() {
    let ev = Event {
        metadata: Some(meta("hello.1", "default", 100)),
        spec: Some(EventSpec {
            involved_object: Some(ObjectReference {
                kind: "Service".into(),
                name: "hello".into(),
                ..Default::default()
            }),
            r#type: "Warning".into(),
            reason: "Failed".into(),
            message: "line one\nline two".into(),
            last_timestamp: Some(Timestamp { seconds: NOW as i64 - 30, nanos: 0 }),
            ..Default::default()
        }),
        ..Default::default()
    }
    .into_any();
    assert_eq!(header(ev.info(), TableOptions::default()), ["LAST SEEN", "TYPE", "REASON", "OBJECT", "MESSAGE"]);
    assert_eq!(
        row(&ev, TableOptions::default(), &NodeAllocations::Unknown, now()),
        ["30s", "Warning", "Failed", "service/hello", "line one line two"]
    );
}

#[test]
fn every_kind_has_as_many_cells_as_columns() {
    for info in stratus_api::resource::KINDS {
        let mut obj = AnyObject::from_json(info, json!({"metadata": {"name": "x", "namespace": "ns"}})).unwrap();
        obj.set_type_meta();
        for wide in [false, true] {
            for namespace_column in [false, true] {
                let opts = TableOptions { wide, namespace_column, qualified_names: false };
                assert_eq!(
                    header(info, opts).len(),
                    row(&obj, opts, &NodeAllocations::Unknown, now()).len(),
                    "{} wide={wide}",
                    info.kind
                );
            }
        }
    }
}

#[test]
fn lists_have_kubectls_shape() {
    let list = list_json(&[service()], "42");
    assert_eq!(list["apiVersion"], "v1");
    assert_eq!(list["kind"], "List");
    assert_eq!(list["metadata"]["resourceVersion"], "42");
    assert_eq!(list["items"][0]["kind"], "Service");
    assert_eq!(list["items"][0]["apiVersion"], "stratus.dev/v1");
    let text = to_json_text(&list).unwrap();
    assert!(text.starts_with("{\n    \"apiVersion\": \"v1\",\n"), "{text}");
    assert!(text.ends_with("}\n"));
}

#[test]
fn names_are_singular_kind_slash_name() {
    assert_eq!(qualified_name(&service()), "service/hello");
}

#[test]
fn identities_show_their_roles_and_subjects() {
    use stratus_api::v1::{RoleBinding, RoleBindingSpec, ServiceAccountSpec, User, UserSpec};
    let opts = TableOptions::default();
    let wide = TableOptions { wide: true, ..Default::default() };
    let user = User {
        metadata: Some(meta("alice", "", 60)),
        spec: Some(UserSpec {
            tenant: "acme".into(),
            display_name: "Alice Martin".into(),
            cluster_role: "tenant-admin".into(),
            ..Default::default()
        }),
        ..Default::default()
    }
    .into_any();
    assert_eq!(header(user.info(), opts), ["NAME", "TENANT", "CLUSTER-ROLE", "AGE"]);
    assert_eq!(row(&user, opts, &NodeAllocations::Unknown, now()), ["alice", "acme", "tenant-admin", "60s"]);
    assert_eq!(row(&user, wide, &NodeAllocations::Unknown, now())[4], "Alice Martin");

    let account = stratus_api::v1::ServiceAccount {
        metadata: Some(meta("ci", "team", 5)),
        spec: Some(ServiceAccountSpec::default()),
        ..Default::default()
    }
    .into_any();
    assert_eq!(header(account.info(), opts), ["NAME", "CLUSTER-ROLE", "AGE"]);
    assert_eq!(row(&account, opts, &NodeAllocations::Unknown, now()), ["ci", "<none>", "5s"]);

    let subject = |kind: &str, name: &str, namespace: &str| Subject {
        kind: kind.into(),
        name: name.into(),
        namespace: namespace.into(),
    };
    let binding = RoleBinding {
        metadata: Some(meta("devs", "team", 5)),
        spec: Some(RoleBindingSpec {
            role: "developer".into(),
            subjects: vec![
                subject("User", "alice", ""),
                subject("ServiceAccount", "ci", "ops"),
                subject("ServiceAccount", "deployer", ""),
                subject("Tenant", "acme", ""),
            ],
        }),
        ..Default::default()
    }
    .into_any();
    assert_eq!(header(binding.info(), opts), ["NAME", "ROLE", "SUBJECTS", "AGE"]);
    assert_eq!(
        row(&binding, opts, &NodeAllocations::Unknown, now()),
        ["devs", "developer", "User/alice,ServiceAccount/ops:ci,ServiceAccount/deployer,Tenant/acme", "5s"]
    );
}

#[test]
fn a_tenant_shows_its_quota_and_unlimited_where_there_is_none() {
    use stratus_api::v1::{Tenant, TenantQuota, TenantSpec};
    let tenant = Tenant {
        metadata: Some(meta("acme", "", 5)),
        spec: Some(TenantSpec {
            quota: Some(TenantQuota { max_cpu: "4".into(), max_services: Some(5), ..Default::default() }),
            ..Default::default()
        }),
        ..Default::default()
    }
    .into_any();
    let wide = TableOptions { wide: true, ..Default::default() };
    assert_eq!(
        header(tenant.info(), wide),
        ["NAME", "DISPLAY-NAME", "MAX-CPU", "MAX-MEMORY", "MAX-INSTANCES", "AGE", "MAX-SERVICES"]
    );
    assert_eq!(
        row(&tenant, wide, &NodeAllocations::Unknown, now()),
        ["acme", "<none>", "4", "unlimited", "unlimited", "5s", "5"]
    );
}

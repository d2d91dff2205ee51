//! How objects are printed: kind-specific table columns, `-o name`, and the JSON and YAML forms
//! (a single object as itself, several as kubectl's `List`).

use std::collections::BTreeMap;
use std::time::SystemTime;

use serde::Serialize;
use serde_json::{Value, json};
use stratus_api::v1::{Condition, Container, ObjectMeta, RevisionSpec};
use stratus_api::{AnyObject, KindInfo, Timestamp};

use crate::allocation::{self, Allocatable, Held};
use crate::error::{Error, Result};
use crate::format::{age, human_duration};

/// The label that ties a Revision (and its Instances) to its Service.
pub use stratus_api::wellknown::labels::SERVICE as SERVICE_LABEL;

/// How `stratus get` lays out a table.
#[derive(Debug, Clone, Copy, Default)]
pub struct TableOptions {
    /// `-o wide`: the extra columns.
    pub wide: bool,
    /// `-A`: a NAMESPACE column first (namespaced kinds only).
    pub namespace_column: bool,
    /// Several kinds in one command: names as `service/hello`, as kubectl does.
    pub qualified_names: bool,
}

/// What the Instances bound to each Node hold, for the CPU, MEMORY and INSTANCES columns of a
/// table of Nodes (other kinds ignore it).
#[derive(Debug, Clone, Default)]
pub enum NodeAllocations {
    /// The totals by node name; a node without an entry holds nothing.
    Counted(BTreeMap<String, Held>),
    /// The Instances could not be listed: the columns say `<unknown>` rather than a total
    /// that leaves some out.
    #[default]
    Unknown,
}

/// `hello-00002=90%,hello-00001=10%` (tags as `@tag`), or `<none>` before there is a route.
fn traffic(targets: &[stratus_api::v1::TrafficTarget]) -> String {
    let parts: Vec<String> = targets
        .iter()
        .filter(|t| t.percent.unwrap_or(0) > 0 || !t.tag.is_empty())
        .map(|t| {
            let tag = if t.tag.is_empty() { String::new() } else { format!("@{}", t.tag) };
            format!("{}{tag}={}%", t.revision_name, t.percent.unwrap_or(0))
        })
        .collect();
    if parts.is_empty() { "<none>".into() } else { parts.join(",") }
}

/// The column titles of a table of `info`'s kind.
pub fn header(info: &KindInfo, opts: TableOptions) -> Vec<String> {
    let columns: &[&str] = match (info.kind, opts.wide) {
        ("Service", false) => &["NAME", "URL", "LATESTCREATED", "LATESTREADY", "TRAFFIC", "READY", "REASON", "AGE"],
        ("Service", true) => &[
            "NAME",
            "URL",
            "LATESTCREATED",
            "LATESTREADY",
            "TRAFFIC",
            "READY",
            "REASON",
            "AGE",
            "IMAGE",
            "CONCURRENCY",
            "SCALE",
        ],
        ("Revision", false) => &["NAME", "SERVICE", "READY", "DESIRED", "ACTUAL", "AGE"],
        ("Revision", true) => {
            &["NAME", "SERVICE", "READY", "DESIRED", "ACTUAL", "AGE", "IMAGE", "REASON", "SCALE REASON"]
        }
        ("Instance", false) => &["NAME", "REVISION", "NODE", "PHASE", "READY", "RESTARTS", "ADDRESS", "AGE"],
        ("Instance", true) => &[
            "NAME",
            "REVISION",
            "NODE",
            "PHASE",
            "READY",
            "RESTARTS",
            "ADDRESS",
            "AGE",
            "SERVICE",
            "CONTAINER",
            "REASON",
        ],
        ("Node", false) => &["NAME", "STATUS", "CPU", "MEMORY", "INSTANCES", "AGE"],
        ("Node", true) => &[
            "NAME",
            "STATUS",
            "CPU",
            "MEMORY",
            "INSTANCES",
            "AGE",
            "INTERNAL-IP",
            "AGENT-VERSION",
            "OS",
            "KERNEL-VERSION",
            "CONTAINER-RUNTIME",
        ],
        ("Namespace", _) => &["NAME", "STATUS", "TENANT", "AGE"],
        ("Tenant", false) => &["NAME", "DISPLAY-NAME", "MAX-CPU", "MAX-MEMORY", "MAX-INSTANCES", "AGE"],
        ("Tenant", true) => &["NAME", "DISPLAY-NAME", "MAX-CPU", "MAX-MEMORY", "MAX-INSTANCES", "AGE", "USERS"],
        ("Lease", false) => &["NAME", "HOLDER", "AGE"],
        ("Lease", true) => &["NAME", "HOLDER", "AGE", "DURATION", "RENEWED", "TRANSITIONS"],
        ("Endpoints", false) => &["NAME", "ENDPOINTS", "AGE"],
        ("Endpoints", true) => &["NAME", "ENDPOINTS", "AGE", "REVISION"],
        // Events are read by time, not by their generated names; kubectl leaves NAME out too.
        ("Event", false) => &["LAST SEEN", "TYPE", "REASON", "OBJECT", "MESSAGE"],
        ("Event", true) => {
            &["LAST SEEN", "TYPE", "REASON", "OBJECT", "SOURCE", "MESSAGE", "FIRST SEEN", "COUNT", "NAME"]
        }
        _ => &["NAME", "AGE"],
    };
    let namespace = (opts.namespace_column && info.namespaced).then(|| "NAMESPACE".to_string());
    namespace.into_iter().chain(columns.iter().map(|c| c.to_string())).collect()
}

/// The cells of one object's row, matching [`header`]; a Node's CPU, MEMORY and INSTANCES come
/// from `allocations`.
pub fn row(obj: &AnyObject, opts: TableOptions, allocations: &NodeAllocations, now: SystemTime) -> Vec<String> {
    let meta = obj.meta();
    let name = if opts.qualified_names { qualified_name(obj) } else { meta.name.clone() };
    let created = age(meta.creation_timestamp.as_ref(), now);
    let wide = opts.wide;
    let mut cells: Vec<String> = match obj {
        AnyObject::Service(s) => {
            let status = s.status.clone().unwrap_or_default();
            let ready = condition(&status.conditions, "Ready");
            let template = s.spec.as_ref().and_then(|s| s.template.as_ref()).and_then(|t| t.spec.as_ref());
            let mut cells = vec![
                name,
                or_none(&status.url),
                or_none(&status.latest_created_revision_name),
                or_none(&status.latest_ready_revision_name),
                traffic(&status.traffic),
                condition_status(ready),
                or_none(ready.map(|c| c.reason.as_str()).unwrap_or_default()),
                created,
            ];
            if wide {
                cells.extend([image(template), concurrency(template), scale_range(template)]);
            }
            cells
        }
        AnyObject::Revision(r) => {
            let status = r.status.clone().unwrap_or_default();
            let ready = condition(&status.conditions, "Ready");
            let mut cells = vec![
                name,
                or_none(&owning_service(meta)),
                condition_status(ready),
                status.desired_instances.to_string(),
                status.actual_instances.to_string(),
                created,
            ];
            if wide {
                cells.extend([
                    image(r.spec.as_ref()),
                    or_none(ready.map(|c| c.reason.as_str()).unwrap_or_default()),
                    or_none(&status.scale_reason),
                ]);
            }
            cells
        }
        AnyObject::Instance(i) => {
            let spec = i.spec.clone().unwrap_or_default();
            let status = i.status.clone().unwrap_or_default();
            let phase = if status.phase.is_empty() { "Pending".to_string() } else { status.phase.clone() };
            let mut cells = vec![
                name,
                or_none(&spec.revision_name),
                or_none(&spec.node_name),
                phase,
                if status.ready { "True" } else { "False" }.to_string(),
                status.restart_count.to_string(),
                or_none(&status.address),
                created,
            ];
            if wide {
                let container: String = status.container_id.chars().take(12).collect();
                cells.extend([or_none(&spec.service_name), or_none(&container), or_none(&status.reason)]);
            }
            cells
        }
        AnyObject::Node(n) => {
            let status = n.status.clone().unwrap_or_default();
            let unschedulable = n.spec.as_ref().is_some_and(|s| s.unschedulable);
            let mut cells = vec![name, node_status(&status.conditions, unschedulable)];
            cells.extend(node_allocation(n, &meta.name, allocations));
            cells.push(created);
            if wide {
                let info = status.node_info.clone().unwrap_or_default();
                let ip = status.addresses.iter().find(|a| a.r#type == "InternalIP").map(|a| a.address.as_str());
                cells.extend([
                    or_none(ip.unwrap_or_default()),
                    or_none(&info.agent_version),
                    or_none(&join_non_empty(&[&info.operating_system, &info.architecture], "/")),
                    or_none(&info.kernel_version),
                    or_none(&info.container_runtime_version),
                ]);
            }
            cells
        }
        AnyObject::Namespace(ns) => {
            let phase = ns.status.as_ref().map(|s| s.phase.as_str()).filter(|p| !p.is_empty()).unwrap_or("Active");
            let tenant = ns.spec.as_ref().map(|s| s.tenant.as_str()).unwrap_or_default();
            vec![name, phase.to_string(), or_none(tenant), created]
        }
        AnyObject::Tenant(t) => {
            let spec = t.spec.clone().unwrap_or_default();
            let quota = spec.quota.clone().unwrap_or_default();
            let unlimited = |s: &str| if s.is_empty() { "unlimited".to_string() } else { s.to_string() };
            let mut cells = vec![
                name,
                or_none(&spec.display_name),
                unlimited(&quota.max_cpu),
                unlimited(&quota.max_memory),
                quota.max_instances.map_or_else(|| "unlimited".to_string(), |n| n.to_string()),
                created,
            ];
            if wide {
                cells.push(or_none(&spec.users.join(",")));
            }
            cells
        }
        AnyObject::Lease(l) => {
            let spec = l.spec.clone().unwrap_or_default();
            let mut cells = vec![name, or_none(&spec.holder_identity), created];
            if wide {
                cells.extend([
                    human_duration(i64::from(spec.lease_duration_seconds)),
                    age(spec.renew_time.as_ref(), now),
                    spec.lease_transitions.to_string(),
                ]);
            }
            cells
        }
        AnyObject::Endpoints(e) => {
            let spec = e.spec.clone().unwrap_or_default();
            let addresses: Vec<&str> = spec.addresses.iter().map(|a| a.address.as_str()).collect();
            let mut cells = vec![name, endpoint_list(&addresses), created];
            if wide {
                cells.push(or_none(&spec.revision_name));
            }
            cells
        }
        AnyObject::Event(e) => {
            let spec = e.spec.clone().unwrap_or_default();
            let object = spec.involved_object.as_ref().map(reference_name).unwrap_or_default();
            let last = event_time(&spec.last_timestamp, &spec.first_timestamp, meta);
            let mut cells = vec![age(last, now), spec.r#type.clone(), spec.reason.clone(), object];
            if wide {
                let first = event_time(&spec.first_timestamp, &spec.last_timestamp, meta);
                cells.extend([
                    or_none(&spec.source),
                    spec.message.clone(),
                    age(first, now),
                    spec.count.to_string(),
                    name,
                ]);
            } else {
                cells.push(spec.message.clone());
            }
            cells
        }
    };
    if opts.namespace_column && obj.info().namespaced {
        cells.insert(0, meta.namespace.clone());
    }
    // One object, one line: a multi-line message must not break the table.
    cells.iter_mut().for_each(|c| {
        if c.contains(['\n', '\r', '\t']) {
            *c = c.replace(['\n', '\r', '\t'], " ");
        }
    });
    cells
}

/// `service/hello`: what `-o name` prints and how kubectl names an object in messages.
pub fn qualified_name(obj: &AnyObject) -> String {
    format!("{}/{}", obj.info().singular, obj.meta().name)
}

/// The JSON form of an object, with `apiVersion` and `kind` always set.
pub fn object_json(obj: &AnyObject) -> Value {
    let mut obj = obj.clone();
    obj.set_type_meta();
    obj.to_json()
}

/// Several objects as kubectl prints them: a `List`, which `stratus apply -f` reads back.
pub fn list_json<'a>(items: impl IntoIterator<Item = &'a AnyObject>, resource_version: &str) -> Value {
    json!({
        "apiVersion": "v1",
        "kind": "List",
        "items": items.into_iter().map(object_json).collect::<Vec<_>>(),
        "metadata": { "resourceVersion": resource_version },
    })
}

/// JSON indented by four spaces, as kubectl writes it, with a final newline.
pub fn to_json_text(value: &Value) -> Result<String> {
    let mut buf = Vec::new();
    let mut ser =
        serde_json::Serializer::with_formatter(&mut buf, serde_json::ser::PrettyFormatter::with_indent(b"    "));
    value.serialize(&mut ser).map_err(|e| Error::Output(std::io::Error::other(e)))?;
    buf.push(b'\n');
    String::from_utf8(buf).map_err(|e| Error::Output(std::io::Error::other(e)))
}

/// YAML, ending with a newline.
pub fn to_yaml_text(value: &Value) -> Result<String> {
    yaml_serde::to_string(value).map_err(|e| Error::Output(std::io::Error::other(e)))
}

/// The condition of `type` (case-insensitive, as `kubectl wait` matches it).
pub fn condition<'a>(conditions: &'a [Condition], r#type: &str) -> Option<&'a Condition> {
    conditions.iter().find(|c| c.r#type.eq_ignore_ascii_case(r#type))
}

/// The conditions of any object that has them.
pub fn conditions(obj: &AnyObject) -> &[Condition] {
    match obj {
        AnyObject::Service(o) => o.status.as_ref().map(|s| s.conditions.as_slice()),
        AnyObject::Revision(o) => o.status.as_ref().map(|s| s.conditions.as_slice()),
        AnyObject::Instance(o) => o.status.as_ref().map(|s| s.conditions.as_slice()),
        AnyObject::Node(o) => o.status.as_ref().map(|s| s.conditions.as_slice()),
        AnyObject::Tenant(o) => o.status.as_ref().map(|s| s.conditions.as_slice()),
        AnyObject::Namespace(_) | AnyObject::Lease(_) | AnyObject::Endpoints(_) | AnyObject::Event(_) => None,
    }
    .unwrap_or_default()
}

/// The generation the status was last written for, when the kind reports one (0 otherwise).
pub fn observed_generation(obj: &AnyObject) -> i64 {
    match obj {
        AnyObject::Service(o) => o.status.as_ref().map(|s| s.observed_generation),
        AnyObject::Revision(o) => o.status.as_ref().map(|s| s.observed_generation),
        AnyObject::Instance(o) => o.status.as_ref().map(|s| s.observed_generation),
        AnyObject::Node(o) => o.status.as_ref().map(|s| s.observed_generation),
        AnyObject::Tenant(o) => o.status.as_ref().map(|s| s.observed_generation),
        AnyObject::Namespace(_) | AnyObject::Lease(_) | AnyObject::Endpoints(_) | AnyObject::Event(_) => None,
    }
    .unwrap_or_default()
}

/// Orders events oldest first, as `kubectl describe` lists them; events of no
/// time sort first.
pub fn sort_events(events: &mut [AnyObject]) {
    events.sort_by_key(|e| {
        let spec = match e {
            AnyObject::Event(ev) => ev.spec.as_ref(),
            _ => None,
        };
        let last = spec.and_then(|s| s.last_timestamp.as_ref().or(s.first_timestamp.as_ref()));
        last.or(e.meta().creation_timestamp.as_ref()).map(|t| (t.seconds, t.nanos)).unwrap_or_default()
    });
}

/// The Service a Revision belongs to: its label, else its controlling owner.
pub fn owning_service(meta: &ObjectMeta) -> String {
    if let Some(s) = meta.labels.get(SERVICE_LABEL) {
        return s.clone();
    }
    meta.owner_references.iter().find(|o| o.kind == "Service").map(|o| o.name.clone()).unwrap_or_default()
}

/// `service/hello` for an event's involved object.
pub fn reference_name(r: &stratus_api::v1::ObjectReference) -> String {
    let kind = stratus_api::resource::lookup_kind(&r.kind)
        .map_or_else(|| r.kind.to_ascii_lowercase(), |k| k.singular.to_string());
    format!("{kind}/{}", r.name)
}

/// When an event last (or first) happened: the given time, else the other, else its creation.
pub fn event_time<'a>(
    primary: &'a Option<Timestamp>,
    fallback: &'a Option<Timestamp>,
    meta: &'a ObjectMeta,
) -> Option<&'a Timestamp> {
    primary.as_ref().or(fallback.as_ref()).or(meta.creation_timestamp.as_ref())
}

pub fn or_none(s: &str) -> String {
    if s.is_empty() { "<none>".to_string() } else { s.to_string() }
}

fn condition_status(c: Option<&Condition>) -> String {
    match c {
        Some(c) if !c.status.is_empty() => c.status.clone(),
        _ => "Unknown".to_string(),
    }
}

/// kubectl's node STATUS: Ready, NotReady or Unknown, and SchedulingDisabled when cordoned.
fn node_status(conditions: &[Condition], unschedulable: bool) -> String {
    let mut s = match condition(conditions, "Ready").map(|c| c.status.as_str()) {
        Some("True") => "Ready".to_string(),
        Some("False") => "NotReady".to_string(),
        _ => "Unknown".to_string(),
    };
    if unschedulable {
        s.push_str(",SchedulingDisabled");
    }
    s
}

/// A Node's CPU, MEMORY and INSTANCES cells: what its Instances request of what it offers,
/// `150m/2 (7%)`, `1536Mi/23Gi (6%)`, `3/110`, as `kubectl describe node` sums them.
fn node_allocation(node: &stratus_api::v1::Node, name: &str, allocations: &NodeAllocations) -> [String; 3] {
    let NodeAllocations::Counted(totals) = allocations else {
        return ["<unknown>".to_string(), "<unknown>".to_string(), "<unknown>".to_string()];
    };
    let held = totals.get(name).copied().unwrap_or_default();
    let offered = Allocatable::of(node);
    let fraction = |used: i128, of: Option<i128>, print: fn(i128) -> String| {
        format!("{}/{}", print(used), of.map_or_else(|| "<none>".to_string(), print))
    };
    let cpu = (held.requests.cpu_millis, offered.cpu_millis);
    let memory = (held.requests.memory_bytes, offered.memory_bytes);
    [
        allocation::with_percent(fraction(cpu.0, cpu.1, allocation::cpu), cpu.0, cpu.1),
        allocation::with_percent(fraction(memory.0, memory.1, allocation::memory), memory.0, memory.1),
        // A count out of a cap: the fraction says it all.
        fraction(held.instances, offered.instances, |n| n.to_string()),
    ]
}

fn first_container(spec: Option<&RevisionSpec>) -> Option<&Container> {
    spec.and_then(|s| s.containers.first())
}

fn image(spec: Option<&RevisionSpec>) -> String {
    or_none(first_container(spec).map(|c| c.image.as_str()).unwrap_or_default())
}

fn concurrency(spec: Option<&RevisionSpec>) -> String {
    match spec.and_then(|s| s.container_concurrency) {
        Some(0) => "unlimited".to_string(),
        Some(n) => n.to_string(),
        None => "<none>".to_string(),
    }
}

/// `0-10`: the instance range of a revision template.
fn scale_range(spec: Option<&RevisionSpec>) -> String {
    let scaling = spec.and_then(|s| s.scaling.as_ref());
    let bound = |v: Option<i32>| v.map_or_else(|| "?".to_string(), |n| n.to_string());
    match scaling {
        Some(s) => format!("{}-{}", bound(s.min_instances), bound(s.max_instances)),
        None => "<none>".to_string(),
    }
}

/// kubectl's ENDPOINTS cell: the first three addresses, then how many more.
fn endpoint_list(addresses: &[&str]) -> String {
    const SHOWN: usize = 3;
    if addresses.is_empty() {
        return "<none>".to_string();
    }
    let mut s = addresses.iter().take(SHOWN).copied().collect::<Vec<_>>().join(",");
    if addresses.len() > SHOWN {
        s.push_str(&format!(" + {} more...", addresses.len() - SHOWN));
    }
    s
}

fn join_non_empty(parts: &[&str], sep: &str) -> String {
    parts.iter().filter(|p| !p.is_empty()).copied().collect::<Vec<_>>().join(sep)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use std::time::{Duration, UNIX_EPOCH};

    use stratus_api::Resource;
    use stratus_api::v1::{
        EndpointAddress, Endpoints, EndpointsSpec, Event, EventSpec, Instance, InstanceSpec, InstanceStatus, Namespace,
        Node, NodeSpec, NodeStatus, ObjectReference, ResourceRequirements, RevisionTemplate, Scaling, Service,
        ServiceSpec, ServiceStatus,
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
                        scaling: Some(Scaling {
                            min_instances: Some(0),
                            max_instances: Some(10),
                            ..Default::default()
                        }),
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
}

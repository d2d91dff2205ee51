//! How objects are printed: kind-specific table columns, `-o name`, and the JSON and YAML forms
//! (a single object as itself, several as kubectl's `List`).

use std::collections::BTreeMap;
use std::time::SystemTime;

use serde::Serialize;
use serde_json::{Value, json};
use stratus_api::v1::{Condition, Container, ObjectMeta, RevisionSpec, Subject};
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
    let (narrow, extra) = columns(info.kind);
    let columns: Vec<&str> = match (info.kind, opts.wide) {
        // As kubectl: the source goes before the message, the rest of the wide columns after.
        ("Event", true) => {
            vec!["LAST SEEN", "TYPE", "REASON", "OBJECT", "SOURCE", "MESSAGE", "FIRST SEEN", "COUNT", "NAME"]
        }
        (_, true) => narrow.iter().chain(extra).copied().collect(),
        (_, false) => narrow.to_vec(),
    };
    let namespace = (opts.namespace_column && info.namespaced).then(|| "NAMESPACE".to_string());
    namespace.into_iter().chain(columns.into_iter().map(str::to_string)).collect()
}

/// A kind's columns: those of every table, and those `-o wide` adds after them.
fn columns(kind: &str) -> (&'static [&'static str], &'static [&'static str]) {
    match kind {
        "Service" => (
            &["NAME", "URL", "LATESTCREATED", "LATESTREADY", "TRAFFIC", "READY", "REASON", "AGE"],
            &["IMAGE", "CONCURRENCY", "SCALE"],
        ),
        "Revision" => (&["NAME", "SERVICE", "READY", "DESIRED", "ACTUAL", "AGE"], &["IMAGE", "REASON", "SCALE REASON"]),
        "Instance" => (
            &["NAME", "REVISION", "NODE", "PHASE", "READY", "RESTARTS", "ADDRESS", "AGE"],
            &["SERVICE", "CONTAINER", "REASON"],
        ),
        "Node" => (
            &["NAME", "STATUS", "CPU", "MEMORY", "INSTANCES", "AGE"],
            &["INTERNAL-IP", "AGENT-VERSION", "OS", "KERNEL-VERSION", "CONTAINER-RUNTIME"],
        ),
        "Namespace" => (&["NAME", "STATUS", "TENANT", "AGE"], &[]),
        "Tenant" => (&["NAME", "DISPLAY-NAME", "MAX-CPU", "MAX-MEMORY", "MAX-INSTANCES", "AGE"], &["MAX-SERVICES"]),
        "Lease" => (&["NAME", "HOLDER", "AGE"], &["DURATION", "RENEWED", "TRANSITIONS"]),
        "Endpoints" => (&["NAME", "ENDPOINTS", "AGE"], &["REVISION"]),
        "User" => (&["NAME", "TENANT", "CLUSTER-ROLE", "AGE"], &["DISPLAY-NAME"]),
        "ServiceAccount" => (&["NAME", "CLUSTER-ROLE", "AGE"], &["NODE"]),
        "RoleBinding" => (&["NAME", "ROLE", "SUBJECTS", "AGE"], &[]),
        "Secret" => (&["NAME", "TYPE", "DATA", "AGE"], &[]),
        "PriceList" => (&["NAME", "CURRENCY", "PERIOD", "AGE"], &[]),
        "UsageReport" => (&["NAME", "TENANT", "SERVICE", "INSTANCE", "MODE", "REQUESTS", "AGE"], &["SOURCE", "LEDGER"]),
        "LedgerEntry" => (&["NAME", "TENANT", "SERVICE", "MODE", "START", "REQUESTS", "CLOSED", "AGE"], &["REPORTS"]),
        "Invoice" => (&["NAME", "TENANT", "PERIOD", "TOTAL", "PHASE", "AGE"], &["SUBTOTAL", "FREE-TIER"]),
        "Budget" => (&["NAME", "TENANT", "AMOUNT", "SPENT", "CROSSED", "AGE"], &["THRESHOLDS"]),
        // Events are read by time, not by their generated names; kubectl leaves NAME out too.
        // Wide, they are laid out as kubectl's, not extended: see `header`.
        "Event" => (&["LAST SEEN", "TYPE", "REASON", "OBJECT", "MESSAGE"], &[]),
        _ => (&["NAME", "AGE"], &[]),
    }
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
            let unlimited_count = |n: Option<i32>| n.map_or_else(|| "unlimited".to_string(), |n| n.to_string());
            let mut cells = vec![
                name,
                or_none(&spec.display_name),
                unlimited(&quota.max_cpu),
                unlimited(&quota.max_memory),
                unlimited_count(quota.max_instances),
                created,
            ];
            if wide {
                cells.push(unlimited_count(quota.max_services));
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
        AnyObject::User(u) => {
            let spec = u.spec.clone().unwrap_or_default();
            let mut cells = vec![name, or_none(&spec.tenant), or_none(&spec.cluster_role), created];
            if wide {
                cells.push(or_none(&spec.display_name));
            }
            cells
        }
        AnyObject::ServiceAccount(sa) => {
            let spec = sa.spec.clone().unwrap_or_default();
            let mut cells = vec![name, or_none(&spec.cluster_role), created];
            if wide {
                cells.push(or_none(&spec.node_name));
            }
            cells
        }
        AnyObject::RoleBinding(rb) => {
            let spec = rb.spec.clone().unwrap_or_default();
            vec![name, or_none(&spec.role), or_none(&subject_list(&spec.subjects)), created]
        }
        // The number of keys, as kubectl: never a value.
        AnyObject::Secret(secret) => vec![name, or_none(&secret.r#type), secret.data.len().to_string(), created],
        AnyObject::PriceList(p) => {
            let spec = p.spec.clone().unwrap_or_default();
            let period = if spec.period.is_empty() { "monthly" } else { spec.period.as_str() };
            vec![name, or_none(&spec.currency), period.to_string(), created]
        }
        AnyObject::UsageReport(r) => {
            let spec = r.spec.clone().unwrap_or_default();
            let mut cells = vec![
                name,
                or_none(&spec.tenant),
                or_none(&spec.service),
                or_none(&spec.instance),
                or_none(&spec.billing_mode),
                spec.requests.to_string(),
                created,
            ];
            if wide {
                let ledger = r.status.as_ref().map(|s| s.ledger_entry.clone()).unwrap_or_default();
                cells.extend([format!("{}/{}", spec.source_kind, spec.source), or_none(&ledger)]);
            }
            cells
        }
        AnyObject::LedgerEntry(l) => {
            let spec = l.spec.clone().unwrap_or_default();
            let closed = l.status.as_ref().is_some_and(|s| s.closed);
            let start = stratus_api::billing::millis(spec.start.as_ref())
                .map(|ms| stratus_api::time::rfc3339(ms.div_euclid(1000)))
                .unwrap_or_default();
            let mut cells = vec![
                name,
                or_none(&spec.tenant),
                or_none(&spec.service),
                or_none(&spec.billing_mode),
                or_none(&start),
                spec.requests.to_string(),
                if closed { "True" } else { "False" }.to_string(),
                created,
            ];
            if wide {
                cells.push(spec.reports.to_string());
            }
            cells
        }
        AnyObject::Invoice(i) => {
            let spec = i.spec.clone().unwrap_or_default();
            let phase = i.status.as_ref().map(|s| s.phase.clone()).unwrap_or_default();
            let total = join_non_empty(&[&spec.total, &spec.currency], " ");
            let mut cells =
                vec![name, or_none(&spec.tenant), or_none(&spec.period), or_none(&total), or_none(&phase), created];
            if wide {
                cells.extend([or_none(&spec.subtotal), or_none(&spec.free_tier)]);
            }
            cells
        }
        AnyObject::Budget(b) => {
            let spec = b.spec.clone().unwrap_or_default();
            let status = b.status.clone().unwrap_or_default();
            let percents = |p: &[i32]| p.iter().map(|t| format!("{t}%")).collect::<Vec<_>>().join(",");
            let mut cells = vec![
                name,
                or_none(&spec.tenant),
                or_none(&spec.amount),
                or_none(&status.spent),
                or_none(&percents(&status.crossed)),
                created,
            ];
            if wide {
                cells.push(percents(&spec.thresholds));
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
        AnyObject::User(o) => o.status.as_ref().map(|s| s.conditions.as_slice()),
        AnyObject::PriceList(o) => o.status.as_ref().map(|s| s.conditions.as_slice()),
        AnyObject::UsageReport(_)
        | AnyObject::LedgerEntry(_)
        | AnyObject::Invoice(_)
        | AnyObject::Budget(_)
        | AnyObject::Namespace(_)
        | AnyObject::Lease(_)
        | AnyObject::Endpoints(_)
        | AnyObject::Event(_)
        | AnyObject::ServiceAccount(_)
        | AnyObject::RoleBinding(_)
        | AnyObject::Secret(_) => None,
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
        AnyObject::PriceList(_)
        | AnyObject::UsageReport(_)
        | AnyObject::LedgerEntry(_)
        | AnyObject::Invoice(_)
        | AnyObject::Budget(_)
        | AnyObject::Namespace(_)
        | AnyObject::Lease(_)
        | AnyObject::Endpoints(_)
        | AnyObject::Event(_)
        | AnyObject::User(_)
        | AnyObject::ServiceAccount(_)
        | AnyObject::RoleBinding(_)
        | AnyObject::Secret(_) => None,
    }
    .unwrap_or_default()
}

/// What `get -o yaml|json` prints of a Secret's values without `--show-values`: the size only.
/// `stratus apply` refuses a Secret holding such a placeholder (see [`is_hidden_value`]), so a
/// printed Secret applied back cannot replace the values with it.
pub fn hidden_value(value: &str) -> String {
    format!("<hidden: {} bytes>", value.len())
}

/// Whether `value` is what [`hidden_value`] prints.
pub fn is_hidden_value(value: &str) -> bool {
    value
        .strip_prefix("<hidden: ")
        .and_then(|r| r.strip_suffix(" bytes>"))
        .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
}

/// `obj` with a Secret's values replaced by [`hidden_value`]; any other object as it is.
pub fn hide_values(obj: &AnyObject) -> AnyObject {
    let mut obj = obj.clone();
    if let AnyObject::Secret(s) = &mut obj {
        for v in s.data.values_mut() {
            *v = hidden_value(v);
        }
    }
    obj
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

/// A RoleBinding's SUBJECTS cell: `User/alice,ServiceAccount/ops:ci,Tenant/acme`, a service
/// account's namespace written only when the binding names one.
pub fn subject_list(subjects: &[Subject]) -> String {
    let subject = |s: &Subject| match s.namespace.as_str() {
        "" => format!("{}/{}", s.kind, s.name),
        ns => format!("{}/{ns}:{}", s.kind, s.name),
    };
    subjects.iter().map(subject).collect::<Vec<_>>().join(",")
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
mod tests;

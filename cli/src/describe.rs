//! `stratus describe`: an object as kubectl describes one, for reading rather than for machines:
//! metadata, the parts of the spec that matter, the status, the conditions as a table, and the
//! events about the object.

use std::collections::BTreeMap;
use std::time::SystemTime;

use serde_json::Value;
use stratus_api::identity::subjects;
use stratus_api::v1::{
    Condition, Container, Instance, Node, ObjectMeta, Probe, Revision, RevisionSpec, RoleBinding, Service,
    TrafficTarget,
};
use stratus_api::{AnyObject, Resource};

use crate::allocation::{self, Allocatable, UNSCHEDULABLE};
use crate::format::{age, rfc3339};
use crate::output::{conditions, event_time, or_none, owning_service};

mod doc;
#[cfg(test)]
mod tests;

use doc::{Doc, Line};

/// The events about an object, or why they could not be listed.
pub enum Events {
    List(Vec<AnyObject>),
    Unavailable(String),
}

/// The objects shown with another in its description.
#[derive(Debug)]
pub enum Related {
    /// The revisions and instances a Service made.
    Service { revisions: Vec<Revision>, instances: Vec<Instance> },
    /// The Instances bound to a Node, or why they could not be listed.
    Node(Result<Vec<Instance>, String>),
}

/// The whole description of `obj`, ending with its events; with `related`, a Service's
/// revisions and their instances, or what the Instances on a Node hold.
pub fn render_with(obj: &AnyObject, related: Option<&Related>, events: &Events, now: SystemTime) -> String {
    let mut doc = Doc::default();
    metadata(&mut doc, obj, now);
    match obj {
        AnyObject::Service(s) => service(&mut doc, s),
        AnyObject::Revision(r) => revision(&mut doc, r),
        AnyObject::Instance(i) => instance(&mut doc, i, now),
        AnyObject::Node(n) => node(&mut doc, n),
        AnyObject::RoleBinding(rb) => role_binding(&mut doc, rb),
        AnyObject::Secret(secret) => secret_data(&mut doc, secret),
        // The other kinds are small: their fields, as they are, read well enough.
        AnyObject::Namespace(_)
        | AnyObject::Tenant(_)
        | AnyObject::Lease(_)
        | AnyObject::Endpoints(_)
        | AnyObject::Event(_)
        | AnyObject::User(_)
        | AnyObject::ServiceAccount(_)
        | AnyObject::PriceList(_)
        | AnyObject::UsageReport(_)
        | AnyObject::LedgerEntry(_)
        | AnyObject::Invoice(_)
        | AnyObject::Budget(_) => spec_and_status(&mut doc, obj),
    }
    match (obj, related) {
        (AnyObject::Service(svc), Some(Related::Service { revisions, instances })) => {
            related_tables(&mut doc, svc, revisions, instances, now);
        }
        (AnyObject::Node(n), Some(Related::Node(instances))) => node_allocation(&mut doc, n, instances),
        _ => {}
    }
    condition_table(&mut doc, conditions(obj), now);
    event_table(&mut doc, events, now);
    doc.render()
}

/// A Service's revisions (with the traffic each gets, and why instances its autoscaler wants
/// are not on nodes), newest first, and its instances (with their nodes and addresses).
fn related_tables(doc: &mut Doc, svc: &Service, revisions: &[Revision], instances: &[Instance], now: SystemTime) {
    let traffic = svc.status.as_ref().map(|s| s.traffic.clone()).unwrap_or_default();
    let mut revisions: Vec<_> = revisions.iter().collect();
    revisions.sort_by(|a, b| b.meta().name.cmp(&a.meta().name));
    let mut instances: Vec<_> = instances.iter().collect();
    instances.sort_by(|a, b| a.meta().name.cmp(&b.meta().name));
    doc.header(0, "Revisions");
    if revisions.is_empty() {
        doc.lines.push(Line::Text { indent: 1, text: "<none>".into() });
    } else {
        let rows = revisions
            .iter()
            .map(|r| {
                let st = r.status.clone().unwrap_or_default();
                let ready = st.conditions.iter().find(|c| c.r#type == "Ready");
                let percent: i32 =
                    traffic.iter().filter(|t| t.revision_name == r.meta().name).map(|t| t.percent.unwrap_or(0)).sum();
                vec![
                    r.meta().name.clone(),
                    ready.map(|c| c.status.clone()).unwrap_or_else(|| "Unknown".into()),
                    ready.map(|c| c.reason.clone()).filter(|r| !r.is_empty()).unwrap_or_else(|| "<none>".into()),
                    format!("{percent}%"),
                    st.desired_instances.to_string(),
                    st.ready_instances.to_string(),
                    crate::format::age(r.meta().creation_timestamp.as_ref(), now),
                ]
            })
            .collect();
        doc.table(1, &["Name", "Ready", "Reason", "Traffic", "Desired", "Ready Instances", "Age"], rows);
        for r in &revisions {
            if let Some(text) = shortfall(r, &instances) {
                doc.field(1, "Capacity", text);
            }
        }
    }
    doc.header(0, "Instances");
    if instances.is_empty() {
        doc.lines.push(Line::Text { indent: 1, text: "<none>".into() });
    } else {
        let or_none = |s: &str| if s.is_empty() { "<none>".to_string() } else { s.to_string() };
        let rows = instances
            .iter()
            .map(|i| {
                let spec = i.spec.clone().unwrap_or_default();
                let st = i.status.clone().unwrap_or_default();
                vec![
                    i.meta().name.clone(),
                    spec.revision_name,
                    or_none(&spec.node_name),
                    or_none(&st.address),
                    or_none(&st.phase),
                    st.ready.to_string(),
                    st.restart_count.to_string(),
                    or_none(&st.reason),
                ]
            })
            .collect();
        doc.table(1, &["Name", "Revision", "Node", "Address", "Phase", "Ready", "Restarts", "Reason"], rows);
    }
}

/// Why `revision` has fewer instances on nodes than its autoscaler wants, in one line, with
/// the scheduler's account of the first of its instances it could not place; nothing when
/// every instance wanted is placed.
fn shortfall(revision: &Revision, instances: &[&Instance]) -> Option<String> {
    let name = &revision.meta().name;
    let desired = i64::from(revision.status.as_ref().map_or(0, |s| s.desired_instances));
    let ours: Vec<&Instance> =
        instances.iter().copied().filter(|i| i.spec.as_ref().is_some_and(|s| &s.revision_name == name)).collect();
    let placed = i64::try_from(ours.iter().filter(|i| allocation::node_held(i).is_some()).count()).unwrap_or(i64::MAX);
    if desired <= placed {
        return None;
    }
    let waiting = desired - placed;
    let why = ours.iter().find_map(|i| {
        let pending = i.spec.as_ref().is_none_or(|s| s.node_name.is_empty());
        let status = i.status.as_ref().filter(|s| pending && s.reason == UNSCHEDULABLE && !s.message.is_empty());
        status.map(|s| s.message.as_str())
    });
    let plural = |n: i64, one: &'static str, many: &'static str| if n == 1 { one } else { many };
    let wants = format!(
        "the autoscaler wants {desired} {} of {name}; {placed} {} placed",
        plural(desired, "instance", "instances"),
        plural(placed, "is", "are"),
    );
    Some(match why {
        // One line, whatever the scheduler wrote.
        Some(message) => {
            format!("{wants}, {waiting} {} for room: {}", plural(waiting, "waits", "wait"), message.replace('\n', " "))
        }
        // Made but not scheduled yet, or not made yet: nothing says room is short.
        None => format!("{wants}, {waiting} {} not placed yet", plural(waiting, "is", "are")),
    })
}

/// kubectl's "Non-terminated Pods" and "Allocated resources" of a Node: the Instances holding
/// room on it with their requests and limits, then their totals against what it offers. Limits
/// may add up to more than the node has; requests, which the scheduler places by, may not.
fn node_allocation(doc: &mut Doc, node: &Node, instances: &Result<Vec<Instance>, String>) {
    let instances = match instances {
        Ok(list) => list,
        Err(reason) => {
            doc.text(0, format!("Allocated resources:  <cannot list instances: {reason}>"));
            return;
        }
    };
    let name = node.meta().name.as_str();
    let mut holding: Vec<&Instance> = instances.iter().filter(|i| allocation::node_held(i) == Some(name)).collect();
    holding.sort_by(|a, b| (&a.meta().namespace, &a.meta().name).cmp(&(&b.meta().namespace, &b.meta().name)));
    let offered = Allocatable::of(node);
    let cpu = |millis: i128| allocation::with_percent(allocation::cpu(millis), millis, offered.cpu_millis);
    let memory = |bytes: i128| allocation::with_percent(allocation::memory(bytes), bytes, offered.memory_bytes);
    // Text, not a field: a key this long would push every field of the description right.
    doc.text(0, format!("Non-terminated Instances:  ({} in total)", holding.len()));
    if !holding.is_empty() {
        let rows = holding
            .iter()
            .map(|i| {
                let revision = or_none(i.spec.as_ref().map(|s| s.revision_name.as_str()).unwrap_or_default());
                let amounts = match allocation::held(i) {
                    Ok(h) => [
                        cpu(h.requests.cpu_millis),
                        cpu(h.limits.cpu_millis),
                        memory(h.requests.memory_bytes),
                        memory(h.limits.memory_bytes),
                    ],
                    Err(_) => std::array::from_fn(|_| "<invalid>".to_string()),
                };
                [i.meta().namespace.clone(), i.meta().name.clone(), revision].into_iter().chain(amounts).collect()
            })
            .collect();
        let header =
            ["Namespace", "Name", "Revision", "CPU Requests", "CPU Limits", "Memory Requests", "Memory Limits"];
        doc.table(1, &header, rows);
    }
    let total = allocation::per_node(holding.iter().copied()).remove(name).unwrap_or_default();
    doc.header(0, "Allocated resources");
    doc.text(1, "(Total limits may be over 100 percent, i.e., overcommitted.)".into());
    // An instance takes one of the node's instance slots, both as what it asks and as the most
    // it may use, so the count stands in both columns.
    let instances = allocation::with_percent(total.instances.to_string(), total.instances, offered.instances);
    let rows = vec![
        vec!["cpu".to_string(), cpu(total.requests.cpu_millis), cpu(total.limits.cpu_millis)],
        vec!["memory".to_string(), memory(total.requests.memory_bytes), memory(total.limits.memory_bytes)],
        vec!["instances".to_string(), instances.clone(), instances],
    ];
    doc.table(1, &["Resource", "Requests", "Limits"], rows);
}

fn service(doc: &mut Doc, s: &Service) {
    let status = s.status.clone().unwrap_or_default();
    let spec = s.spec.clone().unwrap_or_default();
    doc.field(0, "URL", or_none(&status.url));
    if let Some(template) = &spec.template {
        doc.header(0, "Template");
        if let Some(name) = template.metadata.as_ref().map(|m| m.name.as_str()).filter(|n| !n.is_empty()) {
            doc.field(1, "Revision Name", name);
        }
        revision_spec(doc, 1, template.spec.as_ref());
    }
    if let Some(rps) = spec.rate_limit_rps.filter(|r| *r > 0) {
        doc.field(0, "Rate Limit", format!("{rps} requests/s"));
    }
    traffic(doc, 0, "Traffic", &spec.traffic, false);
    doc.header(0, "Status");
    doc.field(1, "Observed Generation", status.observed_generation.to_string());
    doc.field(1, "Latest Created Revision", or_none(&status.latest_created_revision_name));
    doc.field(1, "Latest Ready Revision", or_none(&status.latest_ready_revision_name));
    if let Some(address) = status.address.as_ref().filter(|a| !a.url.is_empty()) {
        doc.field(1, "Address", &address.url);
    }
    traffic(doc, 1, "Traffic", &status.traffic, true);
}

fn revision(doc: &mut Doc, r: &Revision) {
    let status = r.status.clone().unwrap_or_default();
    doc.field(0, "Service", or_none(&owning_service(r.meta())));
    revision_spec(doc, 0, r.spec.as_ref());
    doc.header(0, "Status");
    doc.field(1, "Observed Generation", status.observed_generation.to_string());
    doc.field(1, "Desired Instances", status.desired_instances.to_string());
    doc.field(1, "Actual Instances", status.actual_instances.to_string());
    doc.field(1, "Ready Instances", status.ready_instances.to_string());
    doc.opt(1, "Scale Reason", &status.scale_reason);
    doc.opt(1, "Image Digest", &status.image_digest);
}

fn instance(doc: &mut Doc, i: &Instance, now: SystemTime) {
    let spec = i.spec.clone().unwrap_or_default();
    let status = i.status.clone().unwrap_or_default();
    doc.field(0, "Service", or_none(&spec.service_name));
    doc.field(0, "Revision", or_none(&spec.revision_name));
    doc.field(0, "Node", or_none(&spec.node_name));
    containers(doc, 0, &spec.containers);
    doc.field(0, "Concurrency", concurrency(Some(spec.container_concurrency)));
    doc.field(0, "Timeout", format!("{}s", spec.timeout_seconds));
    doc.field(0, "Termination Grace Period", format!("{}s", spec.termination_grace_period_seconds));
    doc.header(0, "Status");
    doc.field(1, "Phase", if status.phase.is_empty() { "Pending" } else { &status.phase });
    doc.field(1, "Ready", if status.ready { "True" } else { "False" });
    doc.opt(1, "Reason", &status.reason);
    doc.opt(1, "Message", &status.message);
    doc.field(1, "Address", or_none(&status.address));
    doc.opt(1, "Container ID", &status.container_id);
    doc.opt(1, "Image Digest", &status.image_digest);
    if let Some(t) = &status.started_at {
        doc.field(1, "Started", timestamp(t, now));
    }
    if let Some(t) = &status.finished_at {
        doc.field(1, "Finished", timestamp(t, now));
    }
    if let Some(code) = status.exit_code {
        doc.field(1, "Exit Code", code.to_string());
    }
    doc.field(1, "Restarts", status.restart_count.to_string());
    if let Some(u) = &status.usage {
        let sampled = u.sampled_at.as_ref().map(|t| format!(" ({} ago)", age(Some(t), now))).unwrap_or_default();
        doc.field(1, "Usage", format!("cpu {}m, memory {}{sampled}", u.cpu_millis, bytes(u.memory_bytes)));
    }
}

fn node(doc: &mut Doc, n: &Node) {
    let status = n.status.clone().unwrap_or_default();
    doc.field(0, "Unschedulable", n.spec.as_ref().is_some_and(|s| s.unschedulable).to_string());
    if !status.addresses.is_empty() {
        doc.header(0, "Addresses");
        for a in &status.addresses {
            doc.field(1, &a.r#type, &a.address);
        }
    }
    quantities(doc, 0, "Capacity", &status.capacity);
    quantities(doc, 0, "Allocatable", &status.allocatable);
    if let Some(info) = &status.node_info {
        doc.header(0, "System Info");
        doc.opt(1, "Agent Version", &info.agent_version);
        doc.opt(1, "Container Runtime Version", &info.container_runtime_version);
        doc.opt(1, "Operating System", &info.operating_system);
        doc.opt(1, "Architecture", &info.architecture);
        doc.opt(1, "Kernel Version", &info.kernel_version);
    }
    doc.opt(0, "Agent Endpoint", &status.agent_endpoint);
}

/// kubectl's description of a RoleBinding: the role, then its subjects as a table.
fn role_binding(doc: &mut Doc, rb: &RoleBinding) {
    let spec = rb.spec.clone().unwrap_or_default();
    doc.field(0, "Role", or_none(&spec.role));
    if spec.subjects.is_empty() {
        doc.field(0, "Subjects", "<none>");
        return;
    }
    doc.header(0, "Subjects");
    let rows = spec
        .subjects
        .iter()
        .map(|s| {
            // A service account named without a namespace is the binding's own namespace's.
            let namespace = match (s.kind == subjects::SERVICE_ACCOUNT, s.namespace.as_str()) {
                (true, "") => rb.meta().namespace.clone(),
                (_, ns) => ns.to_string(),
            };
            vec![s.kind.clone(), s.name.clone(), or_none(&namespace)]
        })
        .collect();
    doc.table(1, &["Kind", "Name", "Namespace"], rows);
}

/// Spec and status as they are, fields titled, for kinds without a describer of their own.
/// A Secret's type, and its keys with the size of each value, as `kubectl describe secret`:
/// never a value.
fn secret_data(doc: &mut Doc, secret: &stratus_api::v1::Secret) {
    doc.field(0, "Type", &secret.r#type);
    doc.header(0, "Data");
    if secret.data.is_empty() {
        doc.text(1, "<none>".to_string());
    }
    for (key, value) in &secret.data {
        doc.field(1, key, format!("{} bytes", value.len()));
    }
}

fn spec_and_status(doc: &mut Doc, obj: &AnyObject) {
    let json = obj.to_json();
    for section in ["spec", "status"] {
        if let Some(Value::Object(map)) = json.get(section).filter(|v| !is_empty_value(v)) {
            doc.header(0, &title(section));
            json_fields(doc, 1, map);
        }
    }
}

fn metadata(doc: &mut Doc, obj: &AnyObject, now: SystemTime) {
    let meta = obj.meta();
    doc.field(0, "Name", &meta.name);
    if obj.info().namespaced {
        doc.field(0, "Namespace", &meta.namespace);
    }
    doc.map(0, "Labels", &meta.labels, "=");
    doc.map(0, "Annotations", &meta.annotations, ": ");
    doc.field(0, "API Version", stratus_api::API_VERSION);
    doc.field(0, "Kind", obj.info().kind);
    doc.opt(0, "UID", &meta.uid);
    doc.opt(0, "Resource Version", &meta.resource_version);
    if meta.generation != 0 {
        doc.field(0, "Generation", meta.generation.to_string());
    }
    match &meta.creation_timestamp {
        Some(t) => doc.field(0, "Creation Timestamp", timestamp(t, now)),
        None => doc.field(0, "Creation Timestamp", "<unknown>"),
    }
    if let Some(t) = &meta.deletion_timestamp {
        doc.field(0, "Deletion Timestamp", timestamp(t, now));
    }
    if !meta.finalizers.is_empty() {
        doc.field(0, "Finalizers", meta.finalizers.join(", "));
    }
    controlled_by(doc, meta);
}

fn controlled_by(doc: &mut Doc, meta: &ObjectMeta) {
    if let Some(owner) = meta.owner_references.iter().find(|o| o.controller) {
        doc.field(0, "Controlled By", format!("{}/{}", owner.kind, owner.name));
    }
}

fn revision_spec(doc: &mut Doc, indent: usize, spec: Option<&RevisionSpec>) {
    let Some(spec) = spec else { return };
    containers(doc, indent, &spec.containers);
    doc.field(indent, "Concurrency", concurrency(spec.container_concurrency));
    if let Some(t) = spec.timeout_seconds {
        doc.field(indent, "Timeout", format!("{t}s"));
    }
    doc.opt(indent, "Service Account", &spec.service_account_name);
    if let Some(throttling) = spec.cpu_throttling {
        doc.field(indent, "CPU Throttling", throttling.to_string());
    }
    if spec.startup_cpu_boost == Some(true) {
        doc.field(indent, "Startup CPU Boost", "true".to_string());
    }
    if let Some(grace) = spec.termination_grace_period_seconds {
        doc.field(indent, "Termination Grace Period", format!("{grace}s"));
    }
    if let Some(s) = &spec.scaling {
        doc.header(indent, "Scaling");
        let n = |v: Option<i32>| v.map_or_else(|| "<none>".to_string(), |v| v.to_string());
        doc.field(indent + 1, "Min Instances", n(s.min_instances));
        doc.field(indent + 1, "Max Instances", n(s.max_instances));
        if let Some(initial) = s.initial_scale {
            doc.field(indent + 1, "Initial Scale", initial.to_string());
        }
        doc.field(indent + 1, "Metric", if s.metric.is_empty() { "concurrency" } else { &s.metric });
        if let Some(target) = s.target {
            doc.field(indent + 1, "Target", target.to_string());
        }
        if let Some(u) = s.target_utilization_percentage {
            doc.field(indent + 1, "Target Utilization", format!("{u}%"));
        }
    }
}

fn containers(doc: &mut Doc, indent: usize, containers: &[Container]) {
    if containers.is_empty() {
        doc.field(indent, "Containers", "<none>");
        return;
    }
    doc.header(indent, "Containers");
    for (i, c) in containers.iter().enumerate() {
        let name = if c.name.is_empty() { format!("container-{i}") } else { c.name.clone() };
        let at = indent + 2;
        doc.header(indent + 1, &name);
        doc.field(at, "Image", or_none(&c.image));
        let ports: Vec<String> = c
            .ports
            .iter()
            .map(|p| {
                if p.name.is_empty() {
                    p.container_port.to_string()
                } else {
                    format!("{}/{}", p.container_port, p.name)
                }
            })
            .collect();
        doc.field(at, "Port", or_none(&ports.join(", ")));
        if !c.command.is_empty() {
            doc.field(at, "Command", c.command.join(" "));
        }
        if !c.args.is_empty() {
            doc.field(at, "Args", c.args.join(" "));
        }
        doc.opt(at, "Working Dir", &c.working_dir);
        if let Some(r) = &c.resources {
            quantities(doc, at, "Limits", &r.limits);
            quantities(doc, at, "Requests", &r.requests);
        }
        for (label, probe) in
            [("Startup", &c.startup_probe), ("Readiness", &c.readiness_probe), ("Liveness", &c.liveness_probe)]
        {
            if let Some(p) = probe {
                doc.field(at, label, probe_text(p));
            }
        }
        if c.env.is_empty() {
            doc.field(at, "Environment", "<none>");
        } else {
            doc.header(at, "Environment");
            // A variable from a Secret shows where it comes from, as kubectl: never its value.
            for e in &c.env {
                match e.value_from.as_ref().and_then(|f| f.secret_key_ref.as_ref()) {
                    Some(r) => {
                        let optional = if r.optional == Some(true) { ", optional" } else { "" };
                        doc.field(
                            at + 1,
                            &e.name,
                            format!("<set to the key '{}' in secret '{}'{optional}>", r.key, r.name),
                        );
                    }
                    None => doc.field(at + 1, &e.name, &e.value),
                }
            }
        }
    }
}

/// kubectl's one-line probe: `http-get http://:8080/healthz delay=0s timeout=1s period=10s #success=1 #failure=3`.
fn probe_text(p: &Probe) -> String {
    let action = if let Some(h) = &p.http_get {
        let scheme = if h.scheme.is_empty() { "http".to_string() } else { h.scheme.to_ascii_lowercase() };
        format!("http-get {scheme}://{}:{}{}", h.host, h.port, h.path)
    } else if let Some(t) = &p.tcp_socket {
        format!("tcp-socket {}:{}", t.host, t.port)
    } else {
        "<none>".to_string()
    };
    format!(
        "{action} delay={}s timeout={}s period={}s #success={} #failure={}",
        p.initial_delay_seconds, p.timeout_seconds, p.period_seconds, p.success_threshold, p.failure_threshold
    )
}

fn traffic(doc: &mut Doc, indent: usize, key: &str, targets: &[TrafficTarget], with_url: bool) {
    if targets.is_empty() {
        return;
    }
    doc.header(indent, key);
    let mut header = vec!["Percent", "Revision", "Tag"];
    if with_url {
        header.push("URL");
    }
    let rows = targets
        .iter()
        .map(|t| {
            let revision = match (t.latest_revision.unwrap_or(false), t.revision_name.is_empty()) {
                (true, true) => "@latest".to_string(),
                (true, false) => format!("@latest ({})", t.revision_name),
                (false, _) => t.revision_name.clone(),
            };
            let mut row = vec![format!("{}%", t.percent.unwrap_or(0)), revision, or_none(&t.tag)];
            if with_url {
                row.push(or_none(&t.url));
            }
            row
        })
        .collect();
    doc.table(indent + 1, &header, rows);
}

fn quantities(doc: &mut Doc, indent: usize, key: &str, map: &BTreeMap<String, String>) {
    if map.is_empty() {
        return;
    }
    doc.header(indent, key);
    for (k, v) in map {
        doc.field(indent + 1, k, v);
    }
}

fn condition_table(doc: &mut Doc, conditions: &[Condition], now: SystemTime) {
    if conditions.is_empty() {
        return;
    }
    doc.header(0, "Conditions");
    let rows = conditions
        .iter()
        .map(|c| {
            vec![
                c.r#type.clone(),
                or_none(&c.status),
                or_none(&c.reason),
                age(c.last_transition_time.as_ref(), now),
                or_none(&c.message),
            ]
        })
        .collect();
    doc.table(1, &["Type", "Status", "Reason", "Age", "Message"], rows);
}

fn event_table(doc: &mut Doc, events: &Events, now: SystemTime) {
    let events = match events {
        Events::Unavailable(reason) => {
            doc.field(0, "Events", format!("<cannot list events: {reason}>"));
            return;
        }
        Events::List(list) if list.is_empty() => {
            doc.field(0, "Events", "<none>");
            return;
        }
        Events::List(list) => list,
    };
    doc.header(0, "Events");
    let rows = events
        .iter()
        .filter_map(|e| match e {
            AnyObject::Event(e) => Some(e),
            _ => None,
        })
        .map(|e| {
            let spec = e.spec.clone().unwrap_or_default();
            let meta = e.metadata.clone().unwrap_or_default();
            let last = age(event_time(&spec.last_timestamp, &spec.first_timestamp, &meta), now);
            // kubectl's "3m (x4 over 10m)" for an event that repeated.
            let when = if spec.count > 1 {
                let first = age(event_time(&spec.first_timestamp, &spec.last_timestamp, &meta), now);
                format!("{last} (x{} over {first})", spec.count)
            } else {
                last
            };
            vec![spec.r#type, spec.reason, when, or_none(&spec.source), spec.message.replace('\n', " ")]
        })
        .collect();
    doc.table(1, &["Type", "Reason", "Age", "From", "Message"], rows);
}

/// `2025-01-02T15:04:05Z (5m ago)`.
fn timestamp(t: &stratus_api::Timestamp, now: SystemTime) -> String {
    format!("{} ({} ago)", rfc3339(t), age(Some(t), now))
}

fn concurrency(c: Option<i32>) -> String {
    match c {
        Some(0) => "unlimited".to_string(),
        Some(n) => format!("{n} requests per instance"),
        None => "<none>".to_string(),
    }
}

fn bytes(n: i64) -> String {
    const UNITS: [(&str, i64); 3] = [("Gi", 1 << 30), ("Mi", 1 << 20), ("Ki", 1 << 10)];
    for (unit, size) in UNITS {
        if n >= size {
            return format!("{:.1}{unit}", n as f64 / size as f64);
        }
    }
    format!("{n}B")
}

/// `revisionName` → `Revision Name`, as kubectl titles the fields of objects it has no
/// describer for.
fn title(key: &str) -> String {
    let mut out = String::new();
    let mut prev: Option<char> = None;
    for c in key.chars() {
        match prev {
            None => out.extend(c.to_uppercase()),
            // A word starts where a capital follows a lowercase letter or a digit: `maxCPU` is
            // `Max CPU`, not `Max C P U`.
            Some(p) if c.is_uppercase() && (p.is_lowercase() || p.is_ascii_digit()) => {
                out.push(' ');
                out.push(c);
            }
            Some(_) => out.push(c),
        }
        prev = Some(c);
    }
    out
}

fn is_empty_value(v: &Value) -> bool {
    match v {
        Value::Null => true,
        Value::Object(m) => m.values().all(is_empty_value),
        Value::Array(a) => a.is_empty(),
        Value::String(s) => s.is_empty(),
        _ => false,
    }
}

/// The fields of a JSON object, nested objects indented under their titles.
fn json_fields(doc: &mut Doc, indent: usize, map: &serde_json::Map<String, Value>) {
    for (key, value) in map {
        if is_empty_value(value) {
            continue;
        }
        let key = title(key);
        match value {
            Value::Object(inner) => {
                doc.header(indent, &key);
                json_fields(doc, indent + 1, inner);
            }
            Value::Array(items) if items.iter().all(|i| !i.is_object()) => {
                doc.field(indent, &key, items.iter().map(scalar).collect::<Vec<_>>().join(", "));
            }
            Value::Array(items) => {
                doc.header(indent, &key);
                for item in items {
                    if let Value::Object(inner) = item {
                        json_fields(doc, indent + 1, inner);
                    }
                }
            }
            other => doc.field(indent, &key, scalar(other)),
        }
    }
}

fn scalar(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

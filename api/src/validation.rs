//! Validation: every rule a stored object must satisfy, each failure naming its field path.

use std::collections::BTreeSet;
use std::fmt;

use crate::identity::{roles, subjects};
use crate::quantity::Quantity;
use crate::resource::{AnyObject, KindInfo};
use crate::v1::{Container, ObjectMeta, Probe, RevisionSpec, ServiceSpec};

/// One invalid field: `spec.template.spec.containers[0].image: is required`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldError {
    /// The field's path in the object's JSON form, e.g. `metadata.name`.
    pub path: String,
    pub message: String,
}

impl FieldError {
    pub fn new(path: impl Into<String>, message: impl Into<String>) -> FieldError {
        FieldError { path: path.into(), message: message.into() }
    }

    /// A deserialisation error with the path where it happened.
    pub fn from_serde(err: serde_path_to_error::Error<serde_json::Error>) -> FieldError {
        let path = err.path().to_string();
        let message = err.into_inner().to_string();
        // serde_json appends a position that is meaningless for an in-memory value.
        let message = match message.find(" at line ") {
            Some(i) => message[..i].to_string(),
            None => message,
        };
        FieldError { path: if path == "." { String::new() } else { path }, message }
    }
}

impl fmt::Display for FieldError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.path.is_empty() { f.write_str(&self.message) } else { write!(f, "{}: {}", self.path, self.message) }
    }
}

impl std::error::Error for FieldError {}

/// All that is wrong with one object.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ErrorList(pub Vec<FieldError>);

impl ErrorList {
    pub fn push(&mut self, path: impl Into<String>, message: impl Into<String>) {
        self.0.push(FieldError::new(path, message));
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn into_result(self) -> Result<(), ErrorList> {
        if self.0.is_empty() { Ok(()) } else { Err(self) }
    }
}

impl fmt::Display for ErrorList {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("; ")?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ErrorList {}

impl From<FieldError> for ErrorList {
    fn from(e: FieldError) -> ErrorList {
        ErrorList(vec![e])
    }
}

/// Environment variables the platform sets in every container; a manifest may not set them.
pub const RESERVED_ENV: &[&str] = &["PORT", "K_SERVICE", "K_CONFIGURATION", "K_REVISION"];

/// Checks that `name` is an RFC 1123 DNS label: at most 63 lowercase letters, digits and '-',
/// starting and ending with a letter or digit.
pub fn dns_label(name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err("is required".into());
    }
    if name.len() > 63 {
        return Err(format!("{name:?} is longer than 63 characters"));
    }
    let ok_chars = name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
    let ok_ends = !name.starts_with('-') && !name.ends_with('-');
    if ok_chars && ok_ends {
        Ok(())
    } else {
        Err(format!(
            "{name:?} is not a DNS label: use lowercase letters, digits and '-', starting and ending with a letter or digit"
        ))
    }
}

/// Checks that `name` is an RFC 1123 DNS subdomain: dot-separated DNS labels, at most 253 characters.
pub fn dns_subdomain(name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err("is required".into());
    }
    if name.len() > 253 {
        return Err(format!("{name:?} is longer than 253 characters"));
    }
    if name.split('.').all(|l| dns_label(l).is_ok()) {
        Ok(())
    } else {
        Err(format!(
            "{name:?} is not a DNS subdomain: use lowercase letters, digits, '-' and '.', starting and ending with a letter or digit"
        ))
    }
}

/// A label or annotation key: an optional DNS-subdomain prefix and '/', then a name of at most
/// 63 characters of letters, digits, '-', '_' and '.', starting and ending alphanumeric.
pub(crate) fn qualified_name(key: &str) -> Result<(), String> {
    let (prefix, name) = match key.rsplit_once('/') {
        Some((p, n)) => (Some(p), n),
        None => (None, key),
    };
    if let Some(p) = prefix {
        dns_subdomain(p).map_err(|e| format!("prefix of {key:?}: {e}"))?;
    }
    let valid = !name.is_empty()
        && name.len() <= 63
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.')
        && name.as_bytes()[0].is_ascii_alphanumeric()
        && name.as_bytes()[name.len() - 1].is_ascii_alphanumeric();
    if valid {
        Ok(())
    } else {
        Err(format!(
            "{key:?} is not a valid key: at most 63 letters, digits, '-', '_' or '.', starting and ending with a letter or digit, optionally behind a DNS prefix and '/'"
        ))
    }
}

pub(crate) fn label_value(value: &str) -> Result<(), String> {
    if value.is_empty() {
        return Ok(());
    }
    let valid = value.len() <= 63
        && value.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.')
        && value.as_bytes()[0].is_ascii_alphanumeric()
        && value.as_bytes()[value.len() - 1].is_ascii_alphanumeric();
    if valid {
        Ok(())
    } else {
        Err(format!(
            "{value:?} is not a valid label value: at most 63 letters, digits, '-', '_' or '.', starting and ending with a letter or digit"
        ))
    }
}

/// Whether names of `info`'s kind are DNS labels (they become hostnames or label values), not
/// DNS subdomains.
pub fn name_is_dns_label(info: &KindInfo) -> bool {
    matches!(info.kind, "Namespace" | "Service" | "Tenant" | "Node")
}

/// Checks a name of `info`'s kind.
pub fn validate_name(info: &KindInfo, name: &str) -> Result<(), String> {
    if name_is_dns_label(info) { dns_label(name) } else { dns_subdomain(name) }
}

/// Total size allowed for all annotations of one object, as Kubernetes.
const MAX_ANNOTATIONS_BYTES: usize = 256 * 1024;

/// Validates metadata for an object of `info`'s kind. `path` is where the metadata sits
/// (`metadata`, or `spec.template.metadata` for a template, where no name is required).
pub fn validate_meta(meta: &ObjectMeta, info: &KindInfo, path: &str, errs: &mut ErrorList) {
    let template = path != "metadata";
    if !template || !meta.name.is_empty() {
        let res = validate_name(info, &meta.name);
        if let Err(e) = res {
            errs.push(format!("{path}.name"), e);
        }
    }
    let rv = &meta.resource_version;
    if !rv.is_empty() && !crate::patterns::is_resource_version(rv) {
        errs.push(format!("{path}.resourceVersion"), format!("{rv:?} is not a resource version"));
    }
    if !template {
        if info.namespaced {
            if let Err(e) = dns_label(&meta.namespace) {
                errs.push(format!("{path}.namespace"), e);
            }
        } else if !meta.namespace.is_empty() {
            errs.push(format!("{path}.namespace"), format!("{} is cluster-scoped and takes no namespace", info.kind));
        }
    }
    for (k, v) in &meta.labels {
        if let Err(e) = qualified_name(k) {
            errs.push(format!("{path}.labels"), e);
        }
        if let Err(e) = label_value(v) {
            errs.push(format!("{path}.labels[{k}]"), e);
        }
    }
    let mut size = 0;
    for (k, v) in &meta.annotations {
        if let Err(e) = qualified_name(k) {
            errs.push(format!("{path}.annotations"), e);
        }
        size += k.len() + v.len();
    }
    if size > MAX_ANNOTATIONS_BYTES {
        errs.push(format!("{path}.annotations"), format!("total size {size} bytes exceeds {MAX_ANNOTATIONS_BYTES}"));
    }
    for (i, f) in meta.finalizers.iter().enumerate() {
        if let Err(e) = qualified_name(f) {
            errs.push(format!("{path}.finalizers[{i}]"), e);
        }
    }
    for (i, o) in meta.owner_references.iter().enumerate() {
        let p = format!("{path}.ownerReferences[{i}]");
        for (field, value) in [("apiVersion", &o.api_version), ("kind", &o.kind), ("name", &o.name), ("uid", &o.uid)] {
            if value.is_empty() {
                errs.push(format!("{p}.{field}"), "is required");
            }
        }
    }
}

/// The rules an update must keep beside [`validate`]'s, given the stored object (both
/// prepared: defaults filled). One today, Knative's: a Service's template may carry its own
/// revision name (`spec.template.metadata.name`), and a revision is immutable, so a template
/// that changes must change that name too (or drop it). Keeping the name with another template
/// is refused, naming the field, as Knative's webhook refuses it.
pub fn validate_update(new: &AnyObject, stored: &AnyObject) -> Result<(), ErrorList> {
    let mut errs = ErrorList::default();
    // What owns an object does not change: a namespace moved to another tenant would take its
    // accounts' rights (and its bill) along.
    let tenant = |o: &AnyObject| match o {
        AnyObject::Namespace(ns) => Some(ns.spec.as_ref().map(|s| s.tenant.clone()).unwrap_or_default()),
        AnyObject::User(u) => Some(u.spec.as_ref().map(|s| s.tenant.clone()).unwrap_or_default()),
        _ => None,
    };
    if let (Some(new_tenant), Some(old_tenant)) = (tenant(new), tenant(stored))
        && new_tenant != old_tenant
        && !old_tenant.is_empty()
    {
        errs.push("spec.tenant", format!("is immutable: it is {old_tenant:?}"));
    }
    if let (AnyObject::Service(new), AnyObject::Service(old)) = (new, stored) {
        let template = |s: &crate::v1::Service| s.spec.as_ref().and_then(|s| s.template.clone()).unwrap_or_default();
        let (new_t, old_t) = (template(new), template(old));
        let name = |t: &crate::v1::RevisionTemplate| t.metadata.as_ref().map(|m| m.name.clone()).unwrap_or_default();
        // What makes a revision: its spec, labels and annotations (not the name itself).
        let made_of = |t: &crate::v1::RevisionTemplate| {
            let meta = t.metadata.clone().unwrap_or_default();
            (t.spec.clone(), meta.labels, meta.annotations)
        };
        let given = name(&new_t);
        if !given.is_empty() && given == name(&old_t) && made_of(&new_t) != made_of(&old_t) {
            errs.push(
                "spec.template.metadata.name",
                format!(
                    "revision {given:?} already names the current template, and a revision cannot change: \
                     give the changed template a new name, or none"
                ),
            );
        }
    }
    errs.into_result()
}

/// The tenant a billing object belongs to: required, a DNS label.
fn tenant_of(tenant: &str, errs: &mut ErrorList) {
    match dns_label(tenant) {
        Ok(()) => {}
        Err(_) if tenant.is_empty() => errs.push("spec.tenant", "is required"),
        Err(e) => errs.push("spec.tenant", e),
    }
}

/// An exact decimal, as invoices write their sums (which can have more than 9 places).
fn exact_decimal(v: &str) -> bool {
    let digits = v.strip_prefix('-').unwrap_or(v);
    let (int, frac) = digits.split_once('.').unwrap_or((digits, "0"));
    !int.is_empty() && !frac.is_empty() && int.bytes().chain(frac.bytes()).all(|b| b.is_ascii_digit())
}

/// Validates a whole object: metadata and the kind's own rules.
pub fn validate(obj: &AnyObject) -> Result<(), ErrorList> {
    let mut errs = ErrorList::default();
    validate_meta(obj.meta(), obj.info(), "metadata", &mut errs);
    match obj {
        AnyObject::Service(s) => {
            if let Some(t) = s.spec.as_ref().and_then(|s| s.template.as_ref()).and_then(|t| t.metadata.as_ref()) {
                validate_meta(t, obj.info(), "spec.template.metadata", &mut errs);
            }
            match &s.spec {
                Some(spec) => validate_service_spec(spec, &mut errs),
                None => errs.push("spec", "is required"),
            }
        }
        AnyObject::Revision(r) => match &r.spec {
            Some(spec) => validate_revision_spec(spec, "spec", &mut errs),
            None => errs.push("spec", "is required"),
        },
        AnyObject::Instance(i) => {
            let spec = i.spec.clone().unwrap_or_default();
            if spec.containers.is_empty() {
                errs.push("spec.containers", "at least one container is required");
            }
            for (n, c) in spec.containers.iter().enumerate() {
                validate_container(c, &format!("spec.containers[{n}]"), &mut errs);
            }
            if !spec.node_name.is_empty()
                && let Err(e) = dns_label(&spec.node_name)
            {
                errs.push("spec.nodeName", e);
            }
            if let Some(st) = &i.status
                && !st.container_address.is_empty()
                && !is_container_address(&st.container_address)
            {
                errs.push(
                    "status.containerAddress",
                    format!("{:?} is not an IPv4 address and port", st.container_address),
                );
            }
        }
        AnyObject::Namespace(ns) => {
            if let Some(t) = ns.spec.as_ref().map(|s| &s.tenant).filter(|t| !t.is_empty())
                && let Err(e) = dns_label(t)
            {
                errs.push("spec.tenant", e);
            }
        }
        AnyObject::Tenant(t) => {
            if let Some(q) = t.spec.as_ref().and_then(|s| s.quota.as_ref()) {
                for (field, v) in [("maxCpu", &q.max_cpu), ("maxMemory", &q.max_memory)] {
                    if !v.is_empty() {
                        positive_quantity(v, &format!("spec.quota.{field}"), &mut errs);
                    }
                }
                if q.max_instances.is_some_and(|m| m < 0) {
                    errs.push("spec.quota.maxInstances", "must not be negative");
                }
                if q.max_services.is_some_and(|m| m < 0) {
                    errs.push("spec.quota.maxServices", "must not be negative");
                }
            }
        }
        AnyObject::Node(n) => {
            if let Some(st) = &n.status {
                for (field, map) in [("capacity", &st.capacity), ("allocatable", &st.allocatable)] {
                    for (k, v) in map {
                        if let Err(e) = v.parse::<Quantity>() {
                            errs.push(format!("status.{field}[{k}]"), e.to_string());
                        }
                    }
                }
                for (k, cidr) in st.instance_cidrs.iter().enumerate() {
                    if let Err(why) = check_cidr(cidr) {
                        errs.push(format!("status.instanceCidrs[{k}]"), why);
                    }
                }
            }
        }
        AnyObject::PriceList(p) => match &p.spec {
            Some(spec) => {
                crate::billing::Prices::parse(spec, "spec", &mut errs);
            }
            None => errs.push("spec", "is required"),
        },
        AnyObject::UsageReport(r) => match &r.spec {
            Some(spec) => {
                let now = crate::time::now_seconds().saturating_mul(1000);
                crate::billing::validate_report(&obj.meta().name, spec, now, &mut errs);
            }
            None => errs.push("spec", "is required"),
        },
        AnyObject::LedgerEntry(l) => {
            let spec = l.spec.clone().unwrap_or_default();
            tenant_of(&spec.tenant, &mut errs);
            for (field, v) in [
                ("cpuMillicoreMillis", &spec.cpu_millicore_millis),
                ("memoryKibMillis", &spec.memory_kib_millis),
                ("adjustmentCpuMillicoreMillis", &spec.adjustment_cpu_millicore_millis),
                ("adjustmentMemoryKibMillis", &spec.adjustment_memory_kib_millis),
            ] {
                if !v.is_empty() && v.parse::<u128>().is_err() {
                    errs.push(format!("spec.{field}"), format!("{v:?} is not a whole number"));
                }
            }
        }
        AnyObject::Invoice(i) => {
            let spec = i.spec.clone().unwrap_or_default();
            tenant_of(&spec.tenant, &mut errs);
            for (field, v) in [("subtotal", &spec.subtotal), ("freeTier", &spec.free_tier), ("total", &spec.total)] {
                if !v.is_empty() && v.parse::<crate::billing::Amount>().is_err() && !exact_decimal(v) {
                    errs.push(format!("spec.{field}"), format!("{v:?} is not a decimal amount"));
                }
            }
        }
        AnyObject::Budget(b) => {
            let spec = b.spec.clone().unwrap_or_default();
            tenant_of(&spec.tenant, &mut errs);
            match spec.amount.parse::<crate::billing::Amount>() {
                Ok(a) if a.0 > 0 => {}
                Ok(_) => errs.push("spec.amount", "must be more than zero"),
                Err(e) => errs.push("spec.amount", e),
            }
            if spec.thresholds.is_empty() {
                errs.push("spec.thresholds", "name at least one percentage, e.g. [50, 90, 100]");
            }
            if spec.thresholds.iter().any(|t| !(1..=1000).contains(t)) {
                errs.push("spec.thresholds", "each is a percentage of the amount, 1..1000");
            }
            if spec.thresholds.windows(2).any(|w| w[0] >= w[1]) {
                errs.push("spec.thresholds", "must be in increasing order, each once");
            }
            let webhook = !spec.webhook_url.is_empty();
            if webhook && !(spec.webhook_url.starts_with("https://") || spec.webhook_url.starts_with("http://")) {
                errs.push("spec.webhookUrl", "must be an http:// or https:// URL");
            }
            match (&spec.webhook_secret_ref, webhook) {
                (None, true) => {
                    errs.push("spec.webhookSecretRef", "is required with a webhook: calls are signed with its key")
                }
                (Some(_), false) => errs.push("spec.webhookSecretRef", "is only for a webhook"),
                (Some(r), true) => {
                    for (field, v) in [("namespace", &r.namespace), ("name", &r.name)] {
                        if let Err(e) = dns_subdomain(v) {
                            errs.push(format!("spec.webhookSecretRef.{field}"), e);
                        }
                    }
                    if let Err(e) = secret_key(&r.key) {
                        errs.push("spec.webhookSecretRef.key", e);
                    }
                }
                (None, false) => {}
            }
        }
        AnyObject::Lease(l) => {
            if l.spec.as_ref().is_some_and(|s| s.lease_duration_seconds < 0) {
                errs.push("spec.leaseDurationSeconds", "must not be negative");
            }
        }
        AnyObject::Endpoints(e) => {
            for (i, a) in e.spec.iter().flat_map(|s| s.addresses.iter()).enumerate() {
                if a.address.rsplit_once(':').and_then(|(_, p)| p.parse::<u16>().ok()).is_none() {
                    errs.push(format!("spec.addresses[{i}].address"), format!("{:?} is not host:port", a.address));
                }
                if !a.container_address.is_empty() && !is_container_address(&a.container_address) {
                    errs.push(
                        format!("spec.addresses[{i}].containerAddress"),
                        format!("{:?} is not an IPv4 address and port", a.container_address),
                    );
                }
            }
        }
        AnyObject::User(u) => {
            let spec = u.spec.clone().unwrap_or_default();
            match dns_label(&spec.tenant) {
                Ok(()) => {}
                Err(_) if spec.tenant.is_empty() => errs.push("spec.tenant", "is required"),
                Err(e) => errs.push("spec.tenant", e),
            }
            one_of(&spec.cluster_role, roles::USER_CLUSTER, "spec.clusterRole", &mut errs);
            if spec.password.chars().count() > MAX_PASSWORD {
                errs.push("spec.password", format!("is longer than {MAX_PASSWORD} characters"));
            }
            if !spec.password.is_empty() && spec.password.chars().count() < MIN_PASSWORD {
                errs.push("spec.password", format!("must have at least {MIN_PASSWORD} characters"));
            }
        }
        AnyObject::ServiceAccount(sa) => {
            let spec = sa.spec.clone().unwrap_or_default();
            one_of(&spec.cluster_role, roles::ACCOUNT_CLUSTER, "spec.clusterRole", &mut errs);
            match (spec.cluster_role == roles::SYSTEM_AGENT, spec.node_name.is_empty()) {
                (true, true) => errs.push("spec.nodeName", "is required for the role system:agent"),
                (true, false) => {
                    if let Err(e) = dns_label(&spec.node_name) {
                        errs.push("spec.nodeName", e);
                    }
                }
                (false, false) => errs.push("spec.nodeName", "is only for the role system:agent"),
                (false, true) => {}
            }
        }
        AnyObject::RoleBinding(rb) => {
            let spec = rb.spec.clone().unwrap_or_default();
            if spec.role.is_empty() {
                errs.push("spec.role", "is required");
            } else {
                one_of(&spec.role, roles::NAMESPACED, "spec.role", &mut errs);
            }
            if spec.subjects.is_empty() {
                errs.push("spec.subjects", "at least one subject is required");
            }
            for (i, s) in spec.subjects.iter().enumerate() {
                let p = format!("spec.subjects[{i}]");
                if s.kind.is_empty() {
                    errs.push(format!("{p}.kind"), "is required");
                } else {
                    one_of(&s.kind, subjects::ALL, &format!("{p}.kind"), &mut errs);
                }
                if let Err(e) = dns_label(&s.name) {
                    errs.push(format!("{p}.name"), if s.name.is_empty() { "is required".to_string() } else { e });
                }
                match (s.kind == subjects::SERVICE_ACCOUNT, s.namespace.is_empty()) {
                    (true, false) => {
                        if let Err(e) = dns_label(&s.namespace) {
                            errs.push(format!("{p}.namespace"), e);
                        }
                    }
                    (false, false) => errs.push(format!("{p}.namespace"), "is only for a ServiceAccount"),
                    _ => {}
                }
            }
        }
        AnyObject::Secret(secret) => validate_secret_data(&secret.data, &mut errs),
        AnyObject::Event(ev) => {
            let spec = ev.spec.clone().unwrap_or_default();
            if spec.reason.is_empty() {
                errs.push("spec.reason", "is required");
            }
            if !matches!(spec.r#type.as_str(), "" | "Normal" | "Warning") {
                errs.push("spec.type", format!("{:?} is not Normal or Warning", spec.r#type));
            }
        }
    }
    errs.into_result()
}

/// Whether `text` is an instance network: IPv4 in CIDR notation (`172.18.0.0/16`), a prefix
/// from 8 to 32 written without a sign or leading zero, and not in `0.0.0.0/8` or the loopback
/// `127.0.0.0/8`: gateways connect to container addresses inside it. Exactly what the OpenAPI
/// document's pattern says (`apiserver/src/openapi/rules.rs`).
fn check_cidr(text: &str) -> Result<(), String> {
    let Some((ip, prefix)) = text.split_once('/') else {
        return Err(format!("{text:?} is not an IPv4 network in CIDR notation (address/prefix length)"));
    };
    let Ok(ip) = ip.parse::<std::net::Ipv4Addr>() else {
        return Err(format!("{ip:?} in {text:?} is not an IPv4 address"));
    };
    match prefix.parse::<u8>() {
        Ok(p) if (8..=32).contains(&p) && p.to_string() == prefix => {}
        _ => return Err(format!("{prefix:?} in {text:?} is not a prefix length from 8 to 32")),
    }
    if matches!(ip.octets()[0], 0 | 127) {
        return Err(format!("{text:?} is in 0.0.0.0/8 or the loopback network"));
    }
    Ok(())
}

/// Whether `text` is an IPv4 address and port (`172.18.0.5:8080`), as a container address is.
fn is_container_address(text: &str) -> bool {
    text.parse::<std::net::SocketAddrV4>().is_ok()
}

/// [`validate`] for an object that replaces `stored` (an update, an apply, a status write, a
/// finalizer removed): the same rules, except the Pod Security rules ([`crate::pod_security`])
/// for a container whose `securityContext` is the one `stored` has at the same place (capability
/// names compared in their canonical form).
///
/// An object stored before those rules existed, or before they were tightened, would otherwise
/// fail every later write, its status and its finalizers included, and its deletion would never
/// finish. What is new must still follow the rules: a changed `securityContext`, a container
/// added or moved, and every object created (a Revision made from such a Service's template
/// is refused).
pub fn validate_replacing(obj: &AnyObject, stored: &AnyObject) -> Result<(), ErrorList> {
    let Err(errs) = validate(obj) else { return Ok(()) };
    let kept = unchanged_security_contexts(obj, stored);
    let under = |path: &str, prefix: &str| {
        path.strip_prefix(prefix).is_some_and(|rest| rest.is_empty() || rest.starts_with('.'))
    };
    let errs = errs.0.into_iter().filter(|e| !kept.iter().any(|p| under(&e.path, p))).collect();
    ErrorList(errs).into_result()
}

/// The paths (`spec.containers[0].securityContext`) of the containers of `obj` whose
/// `securityContext` is set and equal to that of `stored`'s container at the same index.
fn unchanged_security_contexts(obj: &AnyObject, stored: &AnyObject) -> Vec<String> {
    let (Some((path, new)), Some((_, old))) = (containers_of(obj), containers_of(stored)) else { return Vec::new() };
    let canonical = |c: &Container| {
        c.security_context.clone().map(|mut sc| {
            crate::pod_security::normalize(&mut sc);
            sc
        })
    };
    new.iter()
        .zip(old)
        .enumerate()
        .filter(|(_, (n, o))| n.security_context.is_some() && canonical(n) == canonical(o))
        .map(|(i, _)| format!("{path}[{i}].securityContext"))
        .collect()
}

/// The containers of `obj` and the path of their list, for the kinds that have containers.
fn containers_of(obj: &AnyObject) -> Option<(&'static str, &[Container])> {
    match obj {
        AnyObject::Service(s) => {
            let spec = s.spec.as_ref()?.template.as_ref()?.spec.as_ref()?;
            Some(("spec.template.spec.containers", spec.containers.as_slice()))
        }
        AnyObject::Revision(r) => Some(("spec.containers", r.spec.as_ref()?.containers.as_slice())),
        AnyObject::Instance(i) => Some(("spec.containers", i.spec.as_ref()?.containers.as_slice())),
        _ => None,
    }
}

fn validate_service_spec(spec: &ServiceSpec, errs: &mut ErrorList) {
    match spec.template.as_ref().and_then(|t| t.spec.as_ref()) {
        Some(rs) => validate_revision_spec(rs, "spec.template.spec", errs),
        None => errs.push("spec.template.spec", "is required"),
    }
    if spec.rate_limit_rps.is_some_and(|r| r < 0) {
        errs.push("spec.rateLimitRps", "must not be negative");
    }
    let mut total = 0i64;
    let mut tags = BTreeSet::new();
    for (i, t) in spec.traffic.iter().enumerate() {
        let p = format!("spec.traffic[{i}]");
        let latest = t.latest_revision.unwrap_or(false);
        match (latest, t.revision_name.is_empty()) {
            (true, false) => errs.push(format!("{p}.revisionName"), "cannot be set together with latestRevision: true"),
            (false, true) => errs.push(format!("{p}.revisionName"), "is required unless latestRevision is true"),
            _ => {}
        }
        if !t.revision_name.is_empty()
            && let Err(e) = dns_subdomain(&t.revision_name)
        {
            errs.push(format!("{p}.revisionName"), e);
        }
        let percent = t.percent.unwrap_or(0);
        if !(0..=100).contains(&percent) {
            errs.push(format!("{p}.percent"), format!("{percent} is not between 0 and 100"));
        }
        total += i64::from(percent);
        if !t.tag.is_empty() {
            if let Err(e) = dns_label(&t.tag) {
                errs.push(format!("{p}.tag"), e);
            }
            if !tags.insert(t.tag.clone()) {
                errs.push(format!("{p}.tag"), format!("{:?} is used twice", t.tag));
            }
        }
        if !t.url.is_empty() {
            errs.push(format!("{p}.url"), "is set by the platform and must be empty");
        }
    }
    if !spec.traffic.is_empty() && total != 100 {
        errs.push("spec.traffic", format!("percentages add up to {total}, not 100"));
    }
}

/// Validates a revision template's spec at `path`.
pub fn validate_revision_spec(spec: &RevisionSpec, path: &str, errs: &mut ErrorList) {
    if spec.containers.is_empty() {
        errs.push(format!("{path}.containers"), "at least one container is required");
    }
    if spec.containers.len() > 10 {
        errs.push(format!("{path}.containers"), "at most 10 containers are allowed");
    }
    let mut names = BTreeSet::new();
    let mut with_port = 0;
    for (i, c) in spec.containers.iter().enumerate() {
        let p = format!("{path}.containers[{i}]");
        validate_container(c, &p, errs);
        if !c.name.is_empty() && !names.insert(c.name.clone()) {
            errs.push(format!("{p}.name"), format!("{:?} is used twice", c.name));
        }
        if !c.ports.is_empty() {
            with_port += 1;
        }
    }
    if spec.containers.len() > 1 && with_port != 1 {
        errs.push(
            format!("{path}.containers"),
            format!("exactly one container must declare the port that receives requests; {with_port} do"),
        );
    }
    if let Some(cc) = spec.container_concurrency
        && !(0..=1000).contains(&cc)
    {
        errs.push(format!("{path}.containerConcurrency"), format!("{cc} is not between 0 (unlimited) and 1000"));
    }
    if let Some(t) = spec.timeout_seconds
        && !(1..=3600).contains(&t)
    {
        errs.push(format!("{path}.timeoutSeconds"), format!("{t} is not between 1 and 3600"));
    }
    if let Some(g) = spec.termination_grace_period_seconds
        && !(0..=3600).contains(&g)
    {
        errs.push(format!("{path}.terminationGracePeriodSeconds"), format!("{g} is not between 0 and 3600"));
    }
    if !spec.service_account_name.is_empty()
        && let Err(e) = dns_subdomain(&spec.service_account_name)
    {
        errs.push(format!("{path}.serviceAccountName"), e);
    }
    if let Some(s) = &spec.scaling {
        let p = format!("{path}.scaling");
        let min = s.min_instances.unwrap_or(0);
        if min < 0 {
            errs.push(format!("{p}.minInstances"), "must not be negative");
        }
        if let Some(max) = s.max_instances {
            if max < 1 {
                errs.push(format!("{p}.maxInstances"), "must be at least 1");
            } else if min > max {
                errs.push(format!("{p}.minInstances"), format!("{min} is above maxInstances {max}"));
            }
        }
        if !matches!(s.metric.as_str(), "" | "concurrency" | "rps" | "cpu") {
            errs.push(format!("{p}.metric"), format!("{:?} is not one of concurrency, rps, cpu", s.metric));
        }
        if let Some(t) = s.target
            && !(t.is_finite() && t > 0.0)
        {
            errs.push(format!("{p}.target"), format!("{t} must be a positive number"));
        }
        if let Some(u) = s.target_utilization_percentage
            && !(1..=100).contains(&u)
        {
            errs.push(format!("{p}.targetUtilizationPercentage"), format!("{u} is not between 1 and 100"));
        }
        if let Some(i) = s.initial_scale
            && i < 0
        {
            errs.push(format!("{p}.initialScale"), "must not be negative");
        }
    }
}

fn validate_container(c: &Container, p: &str, errs: &mut ErrorList) {
    if !c.name.is_empty()
        && let Err(e) = dns_label(&c.name)
    {
        errs.push(format!("{p}.name"), e);
    }
    if c.image.trim().is_empty() {
        errs.push(format!("{p}.image"), "is required");
    } else if c.image.chars().any(|ch| ch.is_whitespace() || ch.is_control()) {
        errs.push(format!("{p}.image"), format!("{:?} is not an image reference", c.image));
    }
    if !matches!(c.image_pull_policy.as_str(), "" | "IfNotPresent" | "Always" | "Never") {
        errs.push(
            format!("{p}.imagePullPolicy"),
            format!("{:?} is not one of IfNotPresent, Always, Never", c.image_pull_policy),
        );
    }
    if c.ports.len() > 1 {
        errs.push(format!("{p}.ports"), "at most one port can receive requests");
    }
    for (i, port) in c.ports.iter().enumerate() {
        let pp = format!("{p}.ports[{i}]");
        if !(1..=65535).contains(&port.container_port) {
            errs.push(format!("{pp}.containerPort"), format!("{} is not between 1 and 65535", port.container_port));
        }
        if !matches!(port.name.as_str(), "" | "http1" | "h2c") {
            errs.push(format!("{pp}.name"), format!("{:?} is not http1 or h2c", port.name));
        }
        if !matches!(port.protocol.as_str(), "" | "TCP") {
            errs.push(format!("{pp}.protocol"), format!("{:?} is not TCP", port.protocol));
        }
    }
    for (i, e) in c.env.iter().enumerate() {
        if e.name.is_empty() || e.name.contains('=') || e.name.chars().any(|ch| ch.is_control()) {
            errs.push(format!("{p}.env[{i}].name"), format!("{:?} is not a valid variable name", e.name));
        } else if RESERVED_ENV.contains(&e.name.as_str()) {
            errs.push(
                format!("{p}.env[{i}].name"),
                format!("{} is set by the platform and cannot be set here", e.name),
            );
        }
        if let Some(from) = &e.value_from {
            validate_env_source(from, !e.value.is_empty(), &format!("{p}.env[{i}]"), errs);
        }
    }
    if let Some(r) = &c.resources {
        for (field, map) in [("limits", &r.limits), ("requests", &r.requests)] {
            for (k, v) in map {
                let fp = format!("{p}.resources.{field}.{k}");
                if !matches!(k.as_str(), "cpu" | "memory") {
                    errs.push(fp, "unknown resource (only cpu and memory)");
                    continue;
                }
                positive_quantity(v, &fp, errs);
            }
        }
        for k in ["cpu", "memory"] {
            if let (Some(req), Some(lim)) = (r.requests.get(k), r.limits.get(k))
                && let (Ok(req), Ok(lim)) = (req.parse::<Quantity>(), lim.parse::<Quantity>())
                && req.nanos() > lim.nanos()
            {
                errs.push(format!("{p}.resources.requests.{k}"), format!("{req} is above the limit {lim}"));
            }
        }
    }
    for (name, probe) in [
        ("readinessProbe", &c.readiness_probe),
        ("livenessProbe", &c.liveness_probe),
        ("startupProbe", &c.startup_probe),
    ] {
        if let Some(pr) = probe {
            validate_probe(pr, &format!("{p}.{name}"), errs);
        }
    }
    if let Some(sc) = &c.security_context {
        crate::pod_security::validate(sc, &format!("{p}.securityContext"), errs);
    }
}

/// The most bytes a Secret's keys and values take together, as Kubernetes.
pub const MAX_SECRET_BYTES: usize = 1024 * 1024;

/// Checks a Secret key as Kubernetes does: letters, digits, '-', '_' and '.', at most 253
/// characters, and neither "." nor "..".
pub fn secret_key(key: &str) -> Result<(), String> {
    if key.is_empty() {
        return Err("a key must not be empty".into());
    }
    if key.len() > 253 {
        return Err(format!("{key:?} is longer than 253 characters"));
    }
    let chars = key.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
    if !chars || key == "." || key == ".." {
        return Err(format!(
            "{key:?} is not a valid key: use letters, digits, '-', '_' and '.' (and not \".\" or \"..\")"
        ));
    }
    Ok(())
}

fn validate_secret_data(data: &std::collections::BTreeMap<String, String>, errs: &mut ErrorList) {
    for key in data.keys() {
        if let Err(e) = secret_key(key) {
            errs.push(format!("data[{key:?}]"), e);
        }
    }
    let size: usize = data.iter().map(|(k, v)| k.len() + v.len()).sum();
    if size > MAX_SECRET_BYTES {
        errs.push("data", format!("takes {size} bytes, more than the {MAX_SECRET_BYTES} a Secret may hold"));
    }
}

/// `valueFrom` of the variable at `p`; `has_value` when it has a `value` too.
fn validate_env_source(from: &crate::v1::EnvVarSource, has_value: bool, p: &str, errs: &mut ErrorList) {
    if has_value {
        errs.push(format!("{p}.valueFrom"), "may not be given together with value: give one or the other");
    }
    let Some(secret) = &from.secret_key_ref else {
        errs.push(format!("{p}.valueFrom.secretKeyRef"), "is required (the only source of a value)");
        return;
    };
    if let Err(e) = dns_subdomain(&secret.name) {
        errs.push(format!("{p}.valueFrom.secretKeyRef.name"), e);
    }
    if let Err(e) = secret_key(&secret.key) {
        let e = if secret.key.is_empty() { "is required".to_string() } else { e };
        errs.push(format!("{p}.valueFrom.secretKeyRef.key"), e);
    }
}

fn validate_probe(pr: &Probe, p: &str, errs: &mut ErrorList) {
    match (&pr.http_get, &pr.tcp_socket) {
        (Some(_), Some(_)) => errs.push(p.to_string(), "set exactly one of httpGet and tcpSocket"),
        (None, None) => errs.push(p.to_string(), "one of httpGet and tcpSocket is required"),
        _ => {}
    }
    if let Some(h) = &pr.http_get {
        if !(0..=65535).contains(&h.port) {
            errs.push(format!("{p}.httpGet.port"), format!("{} is not between 1 and 65535", h.port));
        }
        if !h.path.is_empty() && !h.path.starts_with('/') {
            errs.push(format!("{p}.httpGet.path"), format!("{:?} must start with /", h.path));
        }
        if !matches!(h.scheme.as_str(), "" | "HTTP") {
            errs.push(format!("{p}.httpGet.scheme"), format!("{:?} is not HTTP", h.scheme));
        }
    }
    if let Some(t) = &pr.tcp_socket
        && !(0..=65535).contains(&t.port)
    {
        errs.push(format!("{p}.tcpSocket.port"), format!("{} is not between 1 and 65535", t.port));
    }
    for (field, v) in [
        ("initialDelaySeconds", pr.initial_delay_seconds),
        ("timeoutSeconds", pr.timeout_seconds),
        ("periodSeconds", pr.period_seconds),
        ("successThreshold", pr.success_threshold),
        ("failureThreshold", pr.failure_threshold),
    ] {
        if v < 0 {
            errs.push(format!("{p}.{field}"), "must not be negative");
        }
    }
}

/// The shortest and longest password a User may be given.
pub const MIN_PASSWORD: usize = 8;
pub const MAX_PASSWORD: usize = 256;

/// `value`, when not empty, must be one of `allowed`.
fn one_of(value: &str, allowed: &[&str], path: &str, errs: &mut ErrorList) {
    if !value.is_empty() && !allowed.contains(&value) {
        errs.push(path, format!("{value:?} is not one of {}", allowed.join(", ")));
    }
}

fn positive_quantity(v: &str, path: &str, errs: &mut ErrorList) {
    match v.parse::<Quantity>() {
        Ok(q) if q.is_negative() || q.is_zero() => errs.push(path, format!("{v:?} must be greater than zero")),
        Ok(_) => {}
        Err(e) => errs.push(path, e.to_string()),
    }
}

//! What validation checks, stated in the document: the patterns, ranges, enumerations and
//! required fields of [`stratus_api::validation`], laid over the schemas generated from the
//! proto descriptors. A generated client (or Schemathesis) that keeps to the document is
//! accepted, and what breaks it is refused.
//!
//! A few rules relate two fields and JSON Schema cannot state them; they are listed in
//! [`CROSS_FIELD_RULES`], printed in the document's description, and kept by
//! `hack/schemathesis/hooks.py` when it generates requests.

use serde_json::{Map, Value, json};
use stratus_api::patterns::{DNS_LABEL, DNS_SUBDOMAIN, LABEL_VALUE, POSITIVE_QUANTITY, QUALIFIED_NAME, QUANTITY};
use stratus_api::resource::KINDS;
use stratus_api::validation::RESERVED_ENV;
use stratus_api::{KindInfo, billing};

/// A Secret's key, as [`stratus_api::validation::secret_key`] checks it (with a length of at
/// most 253, and neither "." nor "..").
const SECRET_KEY: &str = "^[-._a-zA-Z0-9]+$";

/// A price, as [`stratus_api::billing::Price`] parses it: a decimal with at most 9 places.
/// An IPv4 address as Rust parses one: four decimal octets, no leading zeros.
const OCTET: &str = "(25[0-5]|2[0-4][0-9]|1[0-9]{2}|[1-9]?[0-9])";
const IPV4: &str = "(25[0-5]|2[0-4][0-9]|1[0-9]{2}|[1-9]?[0-9])(\\.(25[0-5]|2[0-4][0-9]|1[0-9]{2}|[1-9]?[0-9])){3}";
/// The first octet of an instance network: neither 0 nor 127 (loopback).
const FIRST_OCTET: &str = "(25[0-5]|2[0-4][0-9]|1[3-9][0-9]|12[89]|12[0-6]|1[01][0-9]|[1-9][0-9]|[1-9])";

const PRICE: &str = "^[0-9]{1,18}(\\.[0-9]{1,9})?$";
/// An exact amount as an invoice writes its sums: more places than a price may have.
const DECIMAL_AMOUNT: &str = "^(-?[0-9]{1,38}(\\.[0-9]{1,40})?)?$";

/// The rules between fields that the schemas cannot express.
pub const CROSS_FIELD_RULES: &[&str] = &[
    "metadata.namespace and metadata.name, when set, equal those of the path",
    "spec.traffic percentages add up to 100, and its tags are unique",
    "scaling.minInstances is at most scaling.maxInstances",
    "a container's resource request is at most its limit",
    "the containers of a revision have unique names, and with more than one exactly one declares a port",
    "an update keeps a Service's bring-your-own revision name only with the same template",
    "the annotations of one object take at most 256 KiB",
    "a ServiceAccount's spec.nodeName is set exactly when its clusterRole is system:agent",
    "a RoleBinding subject's namespace is set only for a ServiceAccount",
    "a User or Namespace created without spec.tenant belongs to its creator's tenant",
    "a Secret's data (keys and values) takes at most 1 MiB in all",
    "a container's securityContext.runAsUser is not 0 when its runAsNonRoot is true",
    "a UsageReport is named {sourceKind}.{source}.{namespace}.{instance}.{windowStart in ms}, its spec.namespace exists, \
     its window ends after it starts, covers at most an hour and ends at most 5 minutes ahead of the server's clock, \
     its periods lie inside the window, and only a gateway's report counts requests; its spec never changes",
    "a Budget's thresholds increase, and spec.webhookSecretRef is set exactly when spec.webhookUrl is, \
     naming a namespace of the Budget's own tenant",
    "a Budget created without spec.tenant belongs to its creator's tenant, and its amount is more than zero",
    "a PriceList's period is \"monthly\" or a duration of at least a minute that divides an hour or is whole hours",
];

/// `pattern` or the empty string.
pub fn optional(pattern: &str) -> String {
    let inner = pattern.trim_start_matches('^').trim_end_matches('$');
    format!("^({inner})?$")
}

fn string(pattern: &str) -> Value {
    json!({"type": "string", "pattern": pattern})
}

/// The capabilities a container may add, as `stratus_api::pod_security` reads them: any case,
/// with or without `CAP_`.
fn capability_pattern() -> String {
    let any_case = |name: &str| -> String {
        name.chars()
            .map(|c| {
                if c.is_ascii_alphabetic() {
                    format!("[{}{}]", c.to_ascii_uppercase(), c.to_ascii_lowercase())
                } else {
                    c.to_string()
                }
            })
            .collect()
    };
    let names: Vec<String> = stratus_api::pod_security::ALLOWED_CAPABILITIES.iter().map(|n| any_case(n)).collect();
    format!("^({})?({})$", any_case("CAP_"), names.join("|"))
}

/// A DNS label, or nothing.
fn optional_label() -> Value {
    string(&optional(DNS_LABEL))
}

/// A DNS subdomain, or nothing.
fn optional_subdomain() -> Value {
    json!({"type": "string", "pattern": optional(DNS_SUBDOMAIN), "maxLength": 253})
}

fn int(min: i64, max: i64) -> Value {
    json!({"type": "integer", "format": "int32", "minimum": min, "maximum": max})
}

fn range(format: &str, min: i64, max: i64) -> Value {
    json!({"type": "integer", "format": format, "minimum": min, "maximum": max})
}

fn non_negative(format: &str) -> Value {
    json!({"type": "integer", "format": format, "minimum": 0})
}

/// A name of `info`'s kind: a DNS label or subdomain as [`validate_meta`] checks it.
///
/// [`validate_meta`]: stratus_api::validation::validate_meta
pub fn name_schema(info: &KindInfo) -> Value {
    if stratus_api::validation::name_is_dns_label(info) {
        string(DNS_LABEL)
    } else {
        json!({"type": "string", "pattern": DNS_SUBDOMAIN, "maxLength": 253})
    }
}

/// Lays the rules over `schemas` (the generated components); `bounds` are the server's.
pub fn apply(schemas: &mut Map<String, Value>, bounds: crate::registry::ScalingBounds) {
    use stratus_api::identity::{roles, subjects};
    let enum_or_empty = |values: &[&str]| {
        let mut all = vec![""];
        all.extend_from_slice(values);
        json!({"type": "string", "enum": all})
    };
    // A quantity is text, or (as Kubernetes reads `cpu: 1`) a number of up to fifteen digits.
    let max = stratus_api::decode::MAX_NUMERIC_QUANTITY;
    let positive = json!({"anyOf": [string(POSITIVE_QUANTITY), {"type": "number", "minimum": 1e-9, "maximum": max}]});
    let any_quantity = json!({"anyOf": [string(QUANTITY), {"type": "number", "minimum": -max, "maximum": max}]});
    let quantity_map =
        json!({"type": "object", "propertyNames": {"enum": ["cpu", "memory"]}, "additionalProperties": positive});
    let image = "^[^\\s\\x00-\\x1f\\x7f-\\x9f]+$";
    let secret_key = json!({"type": "string", "pattern": SECRET_KEY, "maxLength": 253, "not": {"enum": [".", ".."]}});
    let port = "0*([0-9]{1,4}|[1-5][0-9]{4}|6[0-4][0-9]{3}|65[0-4][0-9]{2}|655[0-2][0-9]|6553[0-5])";
    let properties: &[(&str, &str, Value)] = &[
        ("ObjectMeta", "resourceVersion", string(&optional(stratus_api::patterns::RESOURCE_VERSION))),
        (
            "ObjectMeta",
            "labels",
            json!({"type": "object", "propertyNames": string(QUALIFIED_NAME), "additionalProperties": string(LABEL_VALUE)}),
        ),
        (
            "ObjectMeta",
            "annotations",
            json!({"type": "object", "propertyNames": string(QUALIFIED_NAME), "additionalProperties": {"type": "string"}}),
        ),
        ("ObjectMeta", "finalizers", json!({"type": "array", "items": string(QUALIFIED_NAME)})),
        ("OwnerReference", "apiVersion", json!({"type": "string", "minLength": 1})),
        ("OwnerReference", "kind", json!({"type": "string", "minLength": 1})),
        ("OwnerReference", "name", json!({"type": "string", "minLength": 1})),
        ("OwnerReference", "uid", json!({"type": "string", "minLength": 1})),
        ("ServiceSpec", "rateLimitRps", non_negative("int32")),
        // What a Service asks for (its status reports both a revision and latestRevision): a URL
        // is the platform's to set, and a target is `latestRevision: true` or a revision by name.
        (
            "ServiceSpec",
            "traffic",
            json!({"type": "array", "items": {"allOf": [
                {"$ref": "#/components/schemas/TrafficTarget"},
                {"properties": {"url": {"maxLength": 0}, "percent": int(0, 100), "tag": optional_label(),
                                "revisionName": optional_subdomain()}, "oneOf": [
                    {"required": ["latestRevision"], "properties": {"latestRevision": {"const": true}, "revisionName": {"maxLength": 0}}},
                    {"required": ["revisionName"], "properties": {"latestRevision": {"const": false}, "revisionName": {"type": "string", "minLength": 1}}},
                ]},
            ]}}),
        ),
        (
            "RevisionSpec",
            "containers",
            json!({"type": "array", "minItems": 1, "maxItems": 10, "items": {"$ref": "#/components/schemas/Container"}}),
        ),
        ("RevisionSpec", "containerConcurrency", int(0, 1000)),
        ("RevisionSpec", "timeoutSeconds", int(1, 3600)),
        ("RevisionSpec", "terminationGracePeriodSeconds", int(0, 3600)),
        ("RevisionSpec", "serviceAccountName", optional_subdomain()),
        ("Scaling", "minInstances", int(0, i64::from(bounds.max_min_instances))),
        ("Scaling", "maxInstances", int(1, i64::from(bounds.max_max_instances))),
        ("Scaling", "metric", json!({"type": "string", "enum": ["", "concurrency", "rps", "cpu"]})),
        ("Scaling", "target", json!({"type": "number", "exclusiveMinimum": 0, "maximum": f64::MAX})),
        ("Scaling", "targetUtilizationPercentage", int(1, 100)),
        ("Scaling", "initialScale", int(0, i64::from(bounds.max_initial_scale))),
        ("Container", "name", optional_label()),
        ("Container", "image", string(image)),
        ("Container", "imagePullPolicy", json!({"type": "string", "enum": ["", "IfNotPresent", "Always", "Never"]})),
        (
            "Container",
            "ports",
            json!({"type": "array", "maxItems": 1, "items": {"$ref": "#/components/schemas/ContainerPort"}}),
        ),
        // 0 (or none) is the default port, 8080.
        ("ContainerPort", "containerPort", int(0, 65535)),
        ("ContainerPort", "name", json!({"type": "string", "enum": ["", "http1", "h2c"]})),
        ("ContainerPort", "protocol", json!({"type": "string", "enum": ["", "TCP"]})),
        (
            "EnvVar",
            "name",
            json!({"type": "string", "pattern": "^[^=\\x00-\\x1f\\x7f-\\x9f]+$", "not": {"enum": RESERVED_ENV}}),
        ),
        ("SecretKeySelector", "name", json!({"type": "string", "pattern": DNS_SUBDOMAIN, "maxLength": 253})),
        ("SecretKeySelector", "key", secret_key.clone()),
        (
            "Secret",
            "data",
            json!({"type": "object", "propertyNames": secret_key, "additionalProperties": {"type": "string"}}),
        ),
        ("ResourceRequirements", "limits", quantity_map.clone()),
        ("ResourceRequirements", "requests", quantity_map),
        ("Probe", "initialDelaySeconds", non_negative("int32")),
        ("Probe", "timeoutSeconds", non_negative("int32")),
        ("Probe", "periodSeconds", non_negative("int32")),
        ("Probe", "successThreshold", non_negative("int32")),
        ("Probe", "failureThreshold", non_negative("int32")),
        ("HttpGetAction", "port", int(0, 65535)),
        ("HttpGetAction", "path", string("^(/[\\s\\S]*)?$")),
        ("HttpGetAction", "scheme", json!({"type": "string", "enum": ["", "HTTP"]})),
        ("TcpSocketAction", "port", int(0, 65535)),
        ("SecurityContext", "runAsUser", non_negative("int64")),
        ("SecurityContext", "runAsGroup", non_negative("int64")),
        ("SecurityContext", "allowPrivilegeEscalation", json!({"type": "boolean", "const": false})),
        ("Capabilities", "add", json!({"type": "array", "items": string(&capability_pattern())})),
        // An Instance's spec is complete (no defaults): every port is named by number.
        (
            "InstanceSpec",
            "containers",
            json!({"type": "array", "minItems": 1, "items": {"allOf": [
                {"$ref": "#/components/schemas/Container"},
                {"properties": {"ports": {"items": {"required": ["containerPort"], "properties": {"containerPort": {"type": "integer", "minimum": 1}}}}}},
            ]}}),
        ),
        // A template's name is the revision's: a DNS label, or none.
        (
            "RevisionTemplate",
            "metadata",
            json!({"allOf": [{"$ref": "#/components/schemas/ObjectMeta"},
            {"properties": {"name": {"pattern": optional(DNS_LABEL)}}}]}),
        ),
        ("InstanceSpec", "nodeName", optional_label()),
        ("NamespaceSpec", "tenant", optional_label()),
        ("TenantQuota", "maxCpu", string(&optional(POSITIVE_QUANTITY))),
        ("TenantQuota", "maxMemory", string(&optional(POSITIVE_QUANTITY))),
        ("TenantQuota", "maxInstances", non_negative("int32")),
        ("TenantQuota", "maxServices", non_negative("int32")),
        ("UserSpec", "tenant", optional_label()),
        ("UserSpec", "clusterRole", enum_or_empty(roles::USER_CLUSTER)),
        (
            "UserSpec",
            "password",
            json!({"type": "string", "maxLength": stratus_api::validation::MAX_PASSWORD,
                   "pattern": format!("^([\\s\\S]{{{},}})?$", stratus_api::validation::MIN_PASSWORD),
                   "writeOnly": true}),
        ),
        ("UserSpec", "passwordHash", json!({"type": "string", "maxLength": 0, "readOnly": true})),
        ("ServiceAccountSpec", "clusterRole", enum_or_empty(roles::ACCOUNT_CLUSTER)),
        ("ServiceAccountSpec", "nodeName", optional_label()),
        ("RoleBindingSpec", "role", json!({"type": "string", "enum": roles::NAMESPACED})),
        ("RoleBindingSpec", "subjects", json!({"type": "array", "minItems": 1})),
        ("Subject", "kind", json!({"type": "string", "enum": subjects::ALL})),
        ("Subject", "name", string(DNS_LABEL)),
        ("Subject", "namespace", optional_label()),
        ("NodeStatus", "capacity", json!({"type": "object", "additionalProperties": any_quantity})),
        ("NodeStatus", "allocatable", json!({"type": "object", "additionalProperties": any_quantity})),
        ("LeaseSpec", "leaseDurationSeconds", non_negative("int32")),
        ("EndpointAddress", "address", string(&format!("^[\\s\\S]*:\\+?{port}$"))),
        ("EndpointAddress", "containerAddress", string(&format!("^({IPV4}:{port})?$"))),
        ("InstanceStatus", "containerAddress", string(&format!("^({IPV4}:{port})?$"))),
        (
            "NodeStatus",
            "instanceCidrs",
            json!({"type": "array", "items": string(&format!("^{FIRST_OCTET}(\\.{OCTET}){{3}}/(3[0-2]|[12][0-9]|[89])$"))}),
        ),
        ("EventSpec", "reason", json!({"type": "string", "minLength": 1})),
        ("EventSpec", "type", json!({"type": "string", "enum": ["", "Normal", "Warning"]})),
        // Billing: prices are exact decimals, a report's numbers possible, a budget's sane.
        ("PriceListSpec", "currency", string("^([A-Z]{3})?$")),
        ("PriceListSpec", "period", json!({"type": "string", "pattern": "^(monthly|[0-9][0-9a-z.]*)?$"})),
        ("BillingModePrices", "cpuSecond", string(PRICE)),
        ("BillingModePrices", "memoryGibSecond", string(PRICE)),
        ("BillingModePrices", "millionRequests", string(PRICE)),
        ("FreeTier", "cpuSeconds", non_negative("int64")),
        ("FreeTier", "memoryGibSeconds", non_negative("int64")),
        ("FreeTier", "requests", non_negative("int64")),
        (
            "UsageReportSpec",
            "sourceKind",
            json!({"type": "string", "enum": [billing::SOURCE_GATEWAY, billing::SOURCE_AGENT]}),
        ),
        ("UsageReportSpec", "source", string(DNS_LABEL)),
        ("UsageReportSpec", "namespace", string(DNS_LABEL)),
        ("UsageReportSpec", "service", string(DNS_LABEL)),
        ("UsageReportSpec", "revision", string(DNS_LABEL)),
        ("UsageReportSpec", "instance", string(DNS_LABEL)),
        // Set by the server from the namespace; whatever is sent is replaced.
        ("UsageReportSpec", "tenant", json!({"type": "string", "readOnly": true})),
        (
            "UsageReportSpec",
            "billingMode",
            json!({"type": "string", "enum": [billing::MODE_REQUEST, billing::MODE_INSTANCE]}),
        ),
        ("UsageReportSpec", "cpuMillis", range("int64", 1, billing::MAX_CPU_MILLIS)),
        ("UsageReportSpec", "memoryBytes", range("int64", 1, billing::MAX_MEMORY_BYTES)),
        ("UsageReportSpec", "requests", range("int64", 0, billing::MAX_REQUESTS_PER_WINDOW)),
        ("UsageReportSpec", "periods", json!({"type": "array", "maxItems": billing::MAX_PERIODS})),
        ("BudgetSpec", "tenant", optional_label()),
        ("LedgerEntrySpec", "tenant", string(DNS_LABEL)),
        ("LedgerEntrySpec", "cpuMillicoreMillis", string("^[0-9]{0,38}$")),
        ("LedgerEntrySpec", "memoryKibMillis", string("^[0-9]{0,38}$")),
        ("LedgerEntrySpec", "adjustmentCpuMillicoreMillis", string("^[0-9]{0,38}$")),
        ("LedgerEntrySpec", "adjustmentMemoryKibMillis", string("^[0-9]{0,38}$")),
        ("InvoiceSpec", "tenant", string(DNS_LABEL)),
        ("InvoiceSpec", "subtotal", string(DECIMAL_AMOUNT)),
        ("InvoiceSpec", "freeTier", string(DECIMAL_AMOUNT)),
        ("InvoiceSpec", "total", string(DECIMAL_AMOUNT)),
        ("BudgetSpec", "amount", string("^[0-9]{1,18}(\\.[0-9]{1,9})?$")),
        (
            "BudgetSpec",
            "thresholds",
            json!({"type": "array", "minItems": 1, "uniqueItems": true, "items": int(1, 1000)}),
        ),
        ("BudgetSpec", "webhookUrl", string("^(https?://[\\s\\S]*)?$")),
        ("BudgetSecretRef", "namespace", json!({"type": "string", "pattern": DNS_SUBDOMAIN, "maxLength": 253})),
        ("BudgetSecretRef", "name", json!({"type": "string", "pattern": DNS_SUBDOMAIN, "maxLength": 253})),
        ("BudgetSecretRef", "key", secret_key.clone()),
    ];
    for (schema, property, rule) in properties {
        if let Some(p) = schemas.get_mut(*schema).and_then(|s| s.get_mut("properties")).and_then(|p| p.as_object_mut())
        {
            let merged = merge(p.get(*property).cloned().unwrap_or(Value::Null), rule);
            p.insert((*property).to_string(), merged);
        }
    }
    let required: &[(&str, &[&str])] = &[
        ("OwnerReference", &["apiVersion", "kind", "name", "uid"]),
        ("Container", &["image"]),
        ("Invoice", &["spec"]),
        ("InvoiceSpec", &["tenant"]),
        ("LedgerEntry", &["spec"]),
        ("LedgerEntrySpec", &["tenant"]),
        ("EnvVar", &["name"]),
        ("EnvVarSource", &["secretKeyRef"]),
        ("SecretKeySelector", &["name", "key"]),
        ("EndpointAddress", &["address"]),
        ("Service", &["spec"]),
        ("ServiceSpec", &["template"]),
        ("RevisionTemplate", &["spec"]),
        ("Revision", &["spec"]),
        ("RevisionSpec", &["containers"]),
        ("Instance", &["spec"]),
        ("InstanceSpec", &["containers"]),
        ("Event", &["spec"]),
        ("EventSpec", &["reason"]),
        ("RoleBinding", &["spec"]),
        ("RoleBindingSpec", &["role", "subjects"]),
        ("Subject", &["kind", "name"]),
        ("PriceList", &["spec"]),
        ("PriceListSpec", &["requestBased", "instanceBased"]),
        ("BillingModePrices", &["cpuSecond", "memoryGibSecond", "millionRequests"]),
        ("UsageReport", &["spec"]),
        (
            "UsageReportSpec",
            &[
                "sourceKind",
                "source",
                "namespace",
                "service",
                "revision",
                "instance",
                "billingMode",
                "windowStart",
                "windowEnd",
                "cpuMillis",
                "memoryBytes",
            ],
        ),
        ("UsagePeriod", &["start", "end"]),
        ("Budget", &["spec"]),
        ("BudgetSpec", &["amount", "thresholds"]),
        ("BudgetSecretRef", &["namespace", "name", "key"]),
    ];
    for (schema, fields) in required {
        if let Some(s) = schemas.get_mut(*schema).and_then(Value::as_object_mut) {
            s.insert("required".into(), json!(fields));
        }
    }
    // A variable has a value or takes one from elsewhere, not both.
    if let Some(s) = schemas.get_mut("EnvVar").and_then(Value::as_object_mut) {
        s.insert(
            "not".into(),
            json!({"required": ["value", "valueFrom"],
                   "properties": {"value": {"type": "string", "minLength": 1}, "valueFrom": {"type": "object"}}}),
        );
    }
    // A probe checks in exactly one way.
    if let Some(s) = schemas.get_mut("Probe").and_then(Value::as_object_mut) {
        let set = |field: &str| json!({"required": [field], "properties": {field: {"type": "object"}}});
        s.insert("oneOf".into(), json!([set("httpGet"), set("tcpSocket")]));
    }
    for info in KINDS {
        let Some(s) = schemas.get_mut(info.kind).and_then(Value::as_object_mut) else { continue };
        let versions: Vec<&str> = if info.kind == "Service" {
            vec![stratus_api::API_VERSION, stratus_api::knative::KNATIVE_API_VERSION]
        } else {
            vec![stratus_api::API_VERSION]
        };
        // No `type`: `null` is as good as leaving it out (ObjectMeta says which types).
        let namespace = if info.namespaced { json!({"pattern": optional(DNS_LABEL)}) } else { json!({"maxLength": 0}) };
        let mut name = name_schema(info);
        if let Some(n) = name.as_object_mut() {
            n.remove("type");
            if let Some(p) = n.get_mut("pattern") {
                *p = Value::String(optional(p.as_str().unwrap_or_default()));
            }
        }
        let mut required = vec!["apiVersion", "kind"];
        if let Some(Value::Array(more)) = s.get("required") {
            required
                .extend(more.iter().filter_map(Value::as_str).filter(|f| !required.contains(f)).collect::<Vec<_>>());
        }
        s.insert("required".into(), json!(required));
        if let Some(p) = s.get_mut("properties").and_then(Value::as_object_mut) {
            p.insert("apiVersion".into(), json!({"type": "string", "enum": versions}));
            p.insert("kind".into(), json!({"type": "string", "const": info.kind}));
            p.insert(
                "metadata".into(),
                json!({"allOf": [{"$ref": "#/components/schemas/ObjectMeta"},
                                 {"properties": {"name": name, "namespace": namespace}}]}),
            );
        }
    }
    nullable(schemas);
}

/// Proto3 JSON reads `null` as a field left out (the server drops it, see
/// `stratus_api::decode`), so every field that may be left out may be `null` too.
fn nullable(schemas: &mut Map<String, Value>) {
    for schema in schemas.values_mut() {
        let required: Vec<String> = schema
            .get("required")
            .and_then(Value::as_array)
            .map(|r| r.iter().filter_map(Value::as_str).map(String::from).collect())
            .unwrap_or_default();
        let Some(props) = schema.get_mut("properties").and_then(Value::as_object_mut) else { continue };
        for (name, prop) in props.iter_mut() {
            // So may the values of a map (an object of one schema of values).
            if let Some(values) = prop.get_mut("additionalProperties").filter(|v| v.is_object()) {
                *values = json!({"anyOf": [values.take(), {"type": "null"}]});
            }
            if !required.contains(name) {
                *prop = json!({"anyOf": [prop.take(), {"type": "null"}]});
            }
        }
    }
}

/// `rule` over `base`: `rule`'s keys win.
fn merge(base: Value, rule: &Value) -> Value {
    match (base, rule) {
        (Value::Object(mut b), Value::Object(r)) => {
            for (k, v) in r {
                b.insert(k.clone(), v.clone());
            }
            Value::Object(b)
        }
        (_, r) => r.clone(),
    }
}

//! The OpenAPI 3 document of the HTTP API, generated from the same proto descriptors the types
//! come from, so it cannot drift from what the server accepts.

use prost::Message;
use prost_types::field_descriptor_proto::{Label, Type};
use prost_types::{DescriptorProto, FileDescriptorSet};
use serde_json::{Map, Value, json};
use stratus_api::patterns::{CONTINUE_TOKEN, DNS_LABEL, FIELD_SELECTOR, LABEL_SELECTOR, RESOURCE_VERSION};
use stratus_api::resource::KINDS;

mod rules;

const PACKAGE: &str = ".stratus.v1.";

/// Builds the document. Every message of `stratus.v1` becomes a schema in `components`.
pub fn document(bounds: crate::registry::ScalingBounds) -> Value {
    let mut schemas = Map::new();
    if let Ok(set) = FileDescriptorSet::decode(stratus_api::FILE_DESCRIPTOR_SET) {
        for file in set.file.iter().filter(|f| f.package() == "stratus.v1") {
            for msg in &file.message_type {
                add_message(msg, "", &mut schemas);
            }
        }
    }
    let mut paths = Map::new();
    for k in KINDS {
        let schema = json!({"$ref": format!("#/components/schemas/{}", k.kind)});
        let list = json!({"type": "object", "properties": {
            "apiVersion": {"type": "string"}, "kind": {"type": "string"},
            "metadata": {"type": "object", "properties": {"resourceVersion": {"type": "string"}, "continue": {"type": "string"}}},
            "items": {"type": "array", "items": schema}}});
        let obj_ok = json!({"description": "the object", "content": {"application/json": {"schema": schema}}});
        let errors = error_responses();
        let body_of = |schema: &Value| json!({"required": true, "content": {"application/json": {"schema": schema}, "application/yaml": {"schema": schema}}});
        let body = body_of(&schema);
        // A create names its object in the body; elsewhere the path names it.
        let create_body = body_of(&json!({"allOf": [schema, {"required": ["metadata"],
            "properties": {"metadata": {"type": "object", "required": ["name"], "properties": {"name": {"type": "string", "minLength": 1}}}}}]}));
        // A replace sends back the version it read.
        let replace_body = body_of(&json!({"allOf": [schema, {"required": ["metadata"],
            "properties": {"metadata": {"type": "object", "required": ["resourceVersion"], "properties": {"resourceVersion": {"type": "string", "minLength": 1}}}}}]}));
        let name_param = json!({"name": "name", "in": "path", "required": true, "schema": rules::name_schema(k)});
        let ns_param = json!({"name": "namespace", "in": "path", "required": true, "schema": {"type": "string", "pattern": DNS_LABEL}});
        let list_params = json!([
            {"name": "labelSelector", "in": "query", "schema": {"type": "string", "pattern": *LABEL_SELECTOR}, "description": "e.g. app=web,tier!=db,env in (a,b),!canary"},
            {"name": "fieldSelector", "in": "query", "schema": {"type": "string", "pattern": *FIELD_SELECTOR}, "description": "e.g. spec.nodeName=node-1"},
            {"name": "limit", "in": "query", "schema": {"type": "integer", "format": "int64", "minimum": 0}, "description": "at most this many items (0: the server's maximum)"},
            {"name": "continue", "in": "query", "schema": {"type": "string", "pattern": rules::optional(CONTINUE_TOKEN)}, "description": "the metadata.continue of the previous page"},
            {"name": "watch", "in": "query", "schema": {"type": "boolean"}, "description": "stream newline-delimited JSON events (application/x-ndjson)"},
            {"name": "resourceVersion", "in": "query", "schema": {"type": "string", "pattern": rules::optional(RESOURCE_VERSION)}, "description": "with watch: the changes after this version"},
            {"name": "allowWatchBookmarks", "in": "query", "schema": {"type": "boolean"}},
            {"name": "timeoutSeconds", "in": "query", "schema": {"type": "integer", "format": "int64", "minimum": 0},
             "description": "with watch: end the stream after this many seconds"},
        ]);
        let watch_events = json!({"type": "string", "description": format!(
            "one WatchEvent (#/components/schemas/WatchEvent) of {} per line", k.plural)});
        let collection = json!({
            "get": {"operationId": format!("list{}", k.kind), "summary": format!("List or watch {}", k.plural),
                    "parameters": list_params,
                    "responses": merge(json!({"200": {"description": "the list, or with watch the events",
                        "content": {"application/json": {"schema": list}, "application/x-ndjson": {"schema": watch_events}}}}), &errors)},
            "post": {"operationId": format!("create{}", k.kind), "summary": format!("Create a {}", k.singular), "requestBody": create_body,
                     "responses": merge(json!({"201": obj_ok}), &errors)},
        });
        let item = json!({
            "get": {"operationId": format!("read{}", k.kind), "responses": merge(json!({"200": obj_ok}), &errors)},
            "put": {"operationId": format!("replace{}", k.kind), "summary": "Replace metadata and spec; send the resourceVersion read",
                    "requestBody": replace_body, "responses": merge(json!({"200": obj_ok}), &errors)},
            "patch": {"operationId": format!("apply{}", k.kind), "summary": "Apply: create, or update metadata and spec",
                      "requestBody": body, "responses": merge(json!({"200": obj_ok, "201": obj_ok}), &errors)},
            "delete": {"operationId": format!("delete{}", k.kind),
                       "parameters": [{"name": "resourceVersion", "in": "query", "schema": {"type": "string", "pattern": rules::optional(RESOURCE_VERSION)}, "description": "delete only at this version"}],
                       "responses": merge(json!({"200": obj_ok}), &errors)},
        });
        let status = json!({
            "get": {"operationId": format!("read{}Status", k.kind), "responses": merge(json!({"200": obj_ok}), &errors)},
            "put": {"operationId": format!("replace{}Status", k.kind), "summary": "Replace the status; send the resourceVersion read",
                    "requestBody": replace_body, "responses": merge(json!({"200": obj_ok}), &errors)},
        });
        let base = "/apis/stratus.dev/v1";
        let with_params = |mut v: Value, params: Value| {
            if let Some(m) = v.as_object_mut() {
                m.insert("parameters".into(), params);
            }
            v
        };
        if k.namespaced {
            paths.insert(format!("{base}/{}", k.plural), json!({"get": collection["get"]}));
            paths.insert(
                format!("{base}/namespaces/{{namespace}}/{}", k.plural),
                with_params(collection, json!([ns_param])),
            );
            paths.insert(
                format!("{base}/namespaces/{{namespace}}/{}/{{name}}", k.plural),
                with_params(item, json!([ns_param, name_param])),
            );
            paths.insert(
                format!("{base}/namespaces/{{namespace}}/{}/{{name}}/status", k.plural),
                with_params(status, json!([ns_param, name_param])),
            );
            if matches!(k.kind, "Instance" | "Service") {
                let log = json!({
                    "get": {"operationId": format!("read{}Log", k.kind),
                            "summary": "The container output as text, one line per line (a Service's prefixed with [instance])",
                            "parameters": [
                                {"name": "follow", "in": "query", "schema": {"type": "boolean"}, "description": "keep streaming new lines"},
                                {"name": "tailLines", "in": "query", "schema": {"type": "integer", "minimum": 0}, "description": "only the last N lines of each container"},
                            ],
                            "responses": merge(json!({
                                "200": {"description": "the lines", "content": {"text/plain": {"schema": {"type": "string"}}}},
                                "503": {"description": "the agent of the node cannot be reached"},
                            }), &errors)},
                });
                paths.insert(
                    format!("{base}/namespaces/{{namespace}}/{}/{{name}}/log", k.plural),
                    with_params(log, json!([ns_param, name_param])),
                );
            }
            if k.kind == "Service" {
                let point = json!({"type": "object", "required": ["time", "requestsPerSecond", "revisions"], "properties": {
                    "time": {"type": "integer", "description": "the end of the slot, seconds since the epoch"},
                    "requestsPerSecond": {"type": "number", "minimum": 0},
                    "p50Ms": {"type": ["number", "null"], "description": "median latency; null without requests"},
                    "p99Ms": {"type": ["number", "null"], "description": "99th percentile latency; null without requests"},
                    "revisions": {"type": "object", "additionalProperties": {"type": "number"}, "description": "requests per second by revision"}}});
                let metrics = json!({
                    "get": {"operationId": "readServiceMetrics",
                            "summary": "The Service's requests per second and p50/p99 latency over the last 15 minutes, in 5 s slots, as the gateways measure them",
                            "responses": merge(json!({
                                "200": {"description": "the slots, oldest first", "content": {"application/json": {"schema": {
                                    "type": "object", "required": ["kind", "stepSeconds", "windowSeconds", "points"], "properties": {
                                        "apiVersion": {"type": "string"}, "kind": {"type": "string", "const": "ServiceMetrics"},
                                        "metadata": {"type": "object"},
                                        "stepSeconds": {"type": "integer"}, "windowSeconds": {"type": "integer"},
                                        "points": {"type": "array", "items": point}}}}}},
                            }), &errors)},
                });
                paths.insert(
                    format!("{base}/namespaces/{{namespace}}/services/{{name}}/metrics"),
                    with_params(metrics, json!([ns_param, name_param])),
                );
            }
        } else {
            paths.insert(format!("{base}/{}", k.plural), collection);
            paths.insert(format!("{base}/{}/{{name}}", k.plural), with_params(item, json!([name_param])));
            paths.insert(format!("{base}/{}/{{name}}/status", k.plural), with_params(status, json!([name_param])));
        }
    }
    paths.insert("/apis/stratus.dev/v1/namespaces/{namespace}/images".into(), images_path(&error_responses()));
    rules::apply(&mut schemas, bounds);
    schemas.insert(
        "WatchEvent".into(),
        json!({"type": "object", "required": ["type", "object"], "properties": {
            "type": {"type": "string", "enum": ["ADDED", "MODIFIED", "DELETED", "BOOKMARK", "ERROR"]},
            "object": {"type": "object", "description": "the object, or with ERROR a Status"}}}),
    );
    schemas.insert(
        "Status".into(),
        json!({"type": "object", "description": "why a request failed", "properties": {
            "kind": {"type": "string"}, "status": {"type": "string"}, "message": {"type": "string"},
            "reason": {"type": "string"}, "code": {"type": "integer"},
            "details": {"type": "object", "properties": {"causes": {"type": "array", "items": {"type": "object", "properties": {
                "field": {"type": "string"}, "message": {"type": "string"}, "reason": {"type": "string"}}}}}}}}),
    );
    json!({
        "openapi": "3.1.0",
        "info": {"title": "Stratus API", "version": "v1",
                 "description": format!(
                     "Resources of the Stratus serverless container platform. The same API is served over gRPC \
                      (stratus.v1.ResourceService) on the same port.\n\nBeside what the schemas say, a request is \
                      refused unless:\n{}",
                     rules::CROSS_FIELD_RULES.iter().map(|r| format!("- {r}\n")).collect::<String>())},
        "paths": paths,
        "components": {
            "schemas": schemas,
            "securitySchemes": {"bearer": {
                "type": "http", "scheme": "bearer", "bearerFormat": "JWT",
                "description": "An access token from POST /auth/token (the OAuth 2.0 password grant), \
                                `stratus login` or `stratus create token`",
            }},
        },
        "security": [{"bearer": []}],
    })
}

/// Image uploads (`crate::images`): not a resource, but the same namespaces, tokens and errors.
fn images_path(errors: &Value) -> Value {
    let image = json!({"type": "object", "required": ["name", "tag", "image", "digest"], "properties": {
        "name": {"type": "string"}, "tag": {"type": "string"},
        "image": {"type": "string", "description": "{registry}/{namespace}/{name}:{tag}, what a Service's image names"},
        "digest": {"type": "string", "pattern": "^sha256:[0-9a-f]{64}$"}}});
    let status = json!({"application/json": {"schema": {"$ref": "#/components/schemas/Status"}}});
    let unavailable = json!({
        "502": {"description": "the cluster's registry answered badly or not at all", "content": status},
        "503": {"description": "this API server has no image registry (started without --registry)", "content": status},
    });
    json!({
        "parameters": [{"name": "namespace", "in": "path", "required": true, "schema": {"type": "string", "pattern": DNS_LABEL}}],
        "get": {"operationId": "listImages", "summary": "The images uploaded to the namespace, every tag of each",
                "responses": merge(merge(json!({"200": {"description": "the images", "content": {"application/json": {"schema": {
                    "type": "object", "required": ["items"], "properties": {"items": {"type": "array", "items": image}}}}}}}),
                    &unavailable), errors)},
        "post": {"operationId": "uploadImage",
                 "summary": "Upload the output of `docker save` (gzip or not); stored as {registry}/{namespace}/{name}:{tag}",
                 "parameters": [
                     {"name": "name", "in": "query", "schema": {"type": "string", "maxLength": 128, "pattern": "^[a-z0-9]+([._-][a-z0-9]+)*$"},
                      "description": "the image's name; default: the last part of the name the archive records"},
                     {"name": "tag", "in": "query", "schema": {"type": "string", "pattern": "^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$"},
                      "description": "its tag; default: the tag the archive records, else latest"},
                 ],
                 "requestBody": {"required": true, "content": {"application/x-tar": {"schema": {"type": "string", "format": "binary"}}}},
                 "responses": merge(merge(json!({"201": {"description": "stored", "content": {"application/json": {"schema": image}}}}),
                     &unavailable), errors)},
    })
}

fn error_responses() -> Value {
    let status = json!({"content": {"application/json": {"schema": {"$ref": "#/components/schemas/Status"}}}});
    let mut out = Map::new();
    for (code, what) in [
        ("400", "malformed: not JSON or YAML, a wrong type, an unknown field, a bad selector or query"),
        ("401", "no token, or one that is expired, malformed or not this cluster's (WWW-Authenticate: Bearer)"),
        ("403", "forbidden: the caller may see the object but not do this, or over the tenant's quota"),
        ("404", "not found, or the caller may not know it exists (another tenant's)"),
        ("409", "already exists, or a stale resourceVersion"),
        ("410", "resourceVersion too old: list again"),
        ("413", "request body too large"),
        ("415", "a write whose Content-Type is not JSON, YAML or a merge patch"),
        (
            "422",
            "invalid: a field breaks a rule, the change cannot be made to this object, or it passes the cluster's bounds; details.causes name the fields",
        ),
    ] {
        let mut v = status.clone();
        if let Some(m) = v.as_object_mut() {
            m.insert("description".into(), Value::String(what.into()));
        }
        out.insert(code.into(), v);
    }
    Value::Object(out)
}

fn merge(mut a: Value, b: &Value) -> Value {
    if let (Some(am), Some(bm)) = (a.as_object_mut(), b.as_object()) {
        for (k, v) in bm {
            am.insert(k.clone(), v.clone());
        }
    }
    a
}

fn add_message(msg: &DescriptorProto, parent: &str, schemas: &mut Map<String, Value>) {
    let name = format!("{parent}{}", msg.name());
    if msg.options.as_ref().and_then(|o| o.map_entry).unwrap_or(false) {
        return;
    }
    let mut props = Map::new();
    for field in &msg.field {
        let mut schema = match field.r#type() {
            Type::Message => {
                let type_name = field.type_name();
                // A map field refers to a nested MapEntry message; maps here are string→string.
                let nested = msg.nested_type.iter().find(|n| type_name.ends_with(&format!(".{}", n.name())));
                if let Some(entry) = nested.filter(|n| n.options.as_ref().and_then(|o| o.map_entry).unwrap_or(false)) {
                    let value = entry.field.get(1).map(scalar).unwrap_or_else(|| json!({"type": "string"}));
                    props.insert(
                        field.json_name().to_string(),
                        json!({"type": "object", "additionalProperties": value}),
                    );
                    continue;
                }
                match type_name {
                    ".google.protobuf.Timestamp" => json!({"type": "string", "format": "date-time"}),
                    t => {
                        json!({"$ref": format!("#/components/schemas/{}", t.trim_start_matches(PACKAGE).replace('.', ""))})
                    }
                }
            }
            _ => scalar(field),
        };
        if field.label() == Label::Repeated {
            schema = json!({"type": "array", "items": schema});
        }
        props.insert(field.json_name().to_string(), schema);
    }
    schemas.insert(name.clone(), json!({"type": "object", "properties": props, "additionalProperties": false}));
    for nested in &msg.nested_type {
        add_message(nested, &name, schemas);
    }
}

fn scalar(field: &prost_types::FieldDescriptorProto) -> Value {
    match field.r#type() {
        Type::Bool => json!({"type": "boolean"}),
        Type::Int32 | Type::Sint32 | Type::Sfixed32 | Type::Uint32 | Type::Fixed32 => {
            json!({"type": "integer", "format": "int32"})
        }
        // Numbers, as `AnyObject::to_json` writes them and Kubernetes clients expect, although
        // proto3 JSON would write strings. The server still reads a string there too, but a
        // generated client only needs to know what it is sent.
        Type::Int64 | Type::Sint64 | Type::Sfixed64 | Type::Uint64 | Type::Fixed64 => {
            json!({"type": "integer", "format": "int64"})
        }
        // What a 64-bit float holds (the JSON reader refuses a literal beyond it).
        Type::Double | Type::Float => json!({"type": "number", "minimum": -f64::MAX, "maximum": f64::MAX}),
        Type::Bytes => json!({"type": "string", "format": "byte"}),
        _ => json!({"type": "string"}),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn document_describes_every_kind_with_its_fields() {
        let doc = document(crate::registry::ScalingBounds::default());
        let schemas = &doc["components"]["schemas"];
        // A field that may be left out may be null (proto3 JSON); this is the field's own schema.
        let field = |schema: &str, field: &str| {
            let f = &schemas[schema]["properties"][field];
            f.get("anyOf").and_then(|a| a.get(0)).cloned().unwrap_or_else(|| f.clone())
        };
        for k in KINDS {
            assert!(schemas[k.kind]["properties"]["metadata"].is_object(), "{}", k.kind);
            assert_eq!(field(k.kind, "kind")["const"], k.kind);
        }
        assert_eq!(field("Container", "image")["type"], "string");
        assert_eq!(field("Container", "ports")["type"], "array");
        assert_eq!(field("ObjectMeta", "labels")["type"], "object");
        assert_eq!(field("ObjectMeta", "creationTimestamp")["format"], "date-time");
        // 64-bit integers are numbers, as the server prints them (not proto3's strings).
        let int64 = json!({"type": "integer", "format": "int64"});
        assert_eq!(field("ObjectMeta", "generation"), int64);
        assert_eq!(field("ServiceStatus", "observedGeneration"), int64);
        assert_eq!(field("SecurityContext", "runAsGroup"), json!({"type": "integer", "format": "int64", "minimum": 0}));
        assert_eq!(field("ResourceUsage", "memoryBytes"), int64);
        assert_eq!(field("SecurityContext", "runAsUser")["minimum"], 0);
        assert!(doc["paths"]["/apis/stratus.dev/v1/namespaces/{namespace}/services/{name}"]["put"].is_object());
        assert!(doc["paths"]["/apis/stratus.dev/v1/nodes/{name}/status"]["get"].is_object());
        assert!(doc["paths"]["/apis/stratus.dev/v1/namespaces/{namespace}/instances/{name}/log"]["get"].is_object());
    }

    #[test]
    fn the_rules_validation_checks_are_in_the_document() {
        let doc = document(crate::registry::ScalingBounds::default());
        let schemas = &doc["components"]["schemas"];
        let spec_traffic = &schemas["ServiceSpec"]["properties"]["traffic"]["anyOf"][0]["items"]["allOf"][1];
        let percent = &spec_traffic["properties"]["percent"];
        assert_eq!((percent["minimum"].as_i64(), percent["maximum"].as_i64()), (Some(0), Some(100)));
        assert_eq!(schemas["Probe"]["oneOf"].as_array().map(Vec::len), Some(2));
        assert_eq!(schemas["Service"]["required"], json!(["apiVersion", "kind", "spec"]));
        let list = &doc["paths"]["/apis/stratus.dev/v1/namespaces/{namespace}/services"]["get"]["parameters"];
        let selector = list.as_array().and_then(|p| p.iter().find(|p| p["name"] == "labelSelector"));
        assert_eq!(selector.map(|s| s["schema"]["pattern"].clone()), Some(json!(*LABEL_SELECTOR)));
        let description = doc["info"]["description"].as_str().unwrap_or_default();
        assert!(description.contains("traffic percentages add up to 100"), "{description}");
        // Only NET_BIND_SERVICE may be added, in any case, with or without CAP_.
        let added = &schemas["Capabilities"]["properties"]["add"]["anyOf"][0]["items"]["pattern"];
        let cap = "[Nn][Ee][Tt]_[Bb][Ii][Nn][Dd]_[Ss][Ee][Rr][Vv][Ii][Cc][Ee]";
        assert_eq!(added, &json!(format!("^([Cc][Aa][Pp]_)?({cap})$")), "{}", schemas["Capabilities"]);
    }
}

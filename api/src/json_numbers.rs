//! 64-bit integers as JSON numbers.
//!
//! The proto3 JSON mapping writes `int64` and `uint64` as strings (`"generation": "1"`), because
//! a JavaScript number cannot hold every 64-bit value. Kubernetes prints them as numbers, and Go
//! clients (client-go, Knative's typed clients) decode `metadata.generation` and
//! `status.observedGeneration` into an `int64`, which rejects a string. [`int64_as_numbers`]
//! turns those strings back into numbers after pbjson has serialised a message.
//!
//! Which fields hold 64-bit integers is read once from the descriptors the types are generated
//! from ([`crate::FILE_DESCRIPTOR_SET`]), not from a hand-kept list, so that a new `int64` field
//! in `proto/` prints as a number without anyone remembering to add it here.
//!
//! Reading needs nothing: the pbjson deserialisers accept a number and a string for a 64-bit
//! field, so objects written in the string form before still decode.

use std::collections::{HashMap, HashSet};
use std::sync::LazyLock;

use pbjson_types::field_descriptor_proto::Type;
use pbjson_types::{DescriptorProto, FileDescriptorSet};
use prost::Message;
use serde_json::Value;

/// Where the 64-bit integers are in the JSON value of one field.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Shape {
    /// The value is a 64-bit integer.
    Integer,
    /// The value is a message of this full name, e.g. `.stratus.v1.ServiceStatus`.
    Message(String),
    /// The value is a map (a JSON object keyed by the map's keys) of values of this shape.
    Map(Box<Shape>),
}

/// For each message that holds a 64-bit integer at some depth, the fields (by JSON name) that
/// lead to one. Messages and fields that lead to none are left out, so that converting an
/// object looks only where there is something to convert.
type Schema = HashMap<String, Vec<(String, Shape)>>;

/// Computed on first use. Should the descriptor set not decode (it is written by our own build
/// script, so it does), the schema is empty and integers stay strings, which every reader
/// accepts; the tests below fail in that case.
static SCHEMA: LazyLock<Schema> =
    LazyLock::new(|| FileDescriptorSet::decode(crate::FILE_DESCRIPTOR_SET).map(|set| schema(&set)).unwrap_or_default());

/// Rewrites every 64-bit integer in `value`, the proto3 JSON of a message named `message`
/// (fully qualified with a leading dot, e.g. `.stratus.v1.Service`), from a string to a number.
///
/// A string that does not parse as an `i64` or `u64` is kept as it is; pbjson writes only
/// integers there, so this does not happen. An unknown message name changes nothing.
pub fn int64_as_numbers(message: &str, value: &mut Value) {
    convert_message(message, value, &SCHEMA);
}

fn convert(shape: &Shape, value: &mut Value, schema: &Schema) {
    // A repeated field is an array of values of the field's shape.
    if let Value::Array(items) = value {
        for item in items {
            convert(shape, item, schema);
        }
        return;
    }
    match (shape, value) {
        (Shape::Integer, value) => {
            if let Some(number) = value.as_str().and_then(parse_integer) {
                *value = number;
            }
        }
        (Shape::Message(name), value) => convert_message(name, value, schema),
        (Shape::Map(values), Value::Object(map)) => {
            for v in map.values_mut() {
                convert(values, v, schema);
            }
        }
        _ => {}
    }
}

fn convert_message(name: &str, value: &mut Value, schema: &Schema) {
    let Value::Object(map) = value else { return };
    for (json_name, field_shape) in schema.get(name).into_iter().flatten() {
        if let Some(field) = map.get_mut(json_name) {
            convert(field_shape, field, schema);
        }
    }
}

fn parse_integer(s: &str) -> Option<Value> {
    s.parse::<i64>().map(Value::from).or_else(|_| s.parse::<u64>().map(Value::from)).ok()
}

/// Reads the schema of every message in `set`.
fn schema(set: &FileDescriptorSet) -> Schema {
    let mut messages = HashMap::new();
    // The well-known types have JSON forms of their own: a Timestamp is an RFC 3339 string,
    // not an object with `seconds`.
    for file in set.file.iter().filter(|f| f.package() != "google.protobuf") {
        let prefix = if file.package().is_empty() { String::new() } else { format!(".{}", file.package()) };
        for msg in &file.message_type {
            index(&prefix, msg, &mut messages);
        }
    }
    let candidates: Schema = messages
        .iter()
        .map(|(name, msg)| {
            let fields = msg
                .field
                .iter()
                .filter_map(|f| Some((f.json_name().to_string(), field_shape(f, &messages)?)))
                .collect();
            (name.clone(), fields)
        })
        .collect();

    // The messages that reach an integer: those with one of their own, then, until nothing
    // changes, those with a field of a message already found. Cycles in the message graph
    // (a message containing itself) end because the set only grows.
    let mut reaching = HashSet::new();
    loop {
        let before = reaching.len();
        for (name, fields) in &candidates {
            if fields.iter().any(|(_, shape)| reaches(shape, &reaching)) {
                reaching.insert(name.clone());
            }
        }
        if reaching.len() == before {
            break;
        }
    }
    candidates
        .into_iter()
        .filter(|(name, _)| reaching.contains(name))
        .map(|(name, fields)| (name, fields.into_iter().filter(|(_, shape)| reaches(shape, &reaching)).collect()))
        .collect()
}

/// Adds `msg` and its nested messages to `messages` by full name.
fn index<'a>(parent: &str, msg: &'a DescriptorProto, messages: &mut HashMap<String, &'a DescriptorProto>) {
    let name = format!("{parent}.{}", msg.name());
    for nested in &msg.nested_type {
        index(&name, nested, messages);
    }
    messages.insert(name, msg);
}

/// The shape of a field that may hold a 64-bit integer; `None` for one that cannot.
fn field_shape(
    field: &pbjson_types::FieldDescriptorProto,
    messages: &HashMap<String, &DescriptorProto>,
) -> Option<Shape> {
    match field.r#type() {
        Type::Int64 | Type::Uint64 | Type::Sint64 | Type::Fixed64 | Type::Sfixed64 => Some(Shape::Integer),
        Type::Message => {
            let type_name = field.type_name();
            // Of the well-known types (not indexed, see `schema`) only these print an integer.
            if matches!(type_name, ".google.protobuf.Int64Value" | ".google.protobuf.UInt64Value") {
                return Some(Shape::Integer);
            }
            let target = messages.get(type_name)?;
            if target.options.as_ref().and_then(|o| o.map_entry).unwrap_or(false) {
                // A map field: its JSON is an object of the entry's values (field 2); keys are
                // always strings in JSON, as in Kubernetes.
                let value = target.field.iter().find(|f| f.number() == 2)?;
                return field_shape(value, messages).map(|s| Shape::Map(Box::new(s)));
            }
            Some(Shape::Message(type_name.to_string()))
        }
        _ => None,
    }
}

fn reaches(shape: &Shape, reaching: &HashSet<String>) -> bool {
    match shape {
        Shape::Integer => true,
        Shape::Message(name) => reaching.contains(name),
        Shape::Map(values) => reaches(values, reaching),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::resource::KINDS;

    /// Every path to a 64-bit integer under `message`, `[]` marking an array or map.
    fn paths(message: &str) -> Vec<String> {
        fn walk(shape: &Shape, at: String, out: &mut Vec<String>) {
            match shape {
                Shape::Integer => out.push(at),
                Shape::Message(name) => {
                    for (field, shape) in SCHEMA.get(name).into_iter().flatten() {
                        let at = if at.is_empty() { field.clone() } else { format!("{at}.{field}") };
                        walk(shape, at, out);
                    }
                }
                Shape::Map(values) => walk(values, format!("{at}{{}}"), out),
            }
        }
        let mut out = Vec::new();
        walk(&Shape::Message(message.to_string()), String::new(), &mut out);
        out.sort();
        out
    }

    #[test]
    fn the_integer_fields_are_found_in_the_descriptors() {
        // Repeated fields are not marked: an array is converted element by element.
        assert_eq!(
            paths(".stratus.v1.Service"),
            [
                "metadata.generation",
                "spec.template.metadata.generation",
                "spec.template.spec.containers.securityContext.runAsGroup",
                "spec.template.spec.containers.securityContext.runAsUser",
                "status.observedGeneration",
            ]
        );
        assert_eq!(
            paths(".stratus.v1.Instance"),
            [
                "metadata.generation",
                "spec.containers.securityContext.runAsGroup",
                "spec.containers.securityContext.runAsUser",
                "status.observedGeneration",
                "status.usage.cpuMillis",
                "status.usage.memoryBytes",
            ]
        );
        // Every kind has at least its metadata.generation.
        for k in KINDS {
            assert!(
                paths(&format!(".stratus.v1.{}", k.kind)).contains(&"metadata.generation".to_string()),
                "{}",
                k.kind
            );
        }
        // Messages without integers are not in the schema at all.
        assert!(!SCHEMA.contains_key(".stratus.v1.Condition"));
        assert!(!SCHEMA.contains_key(".google.protobuf.Timestamp"));
    }

    #[test]
    fn strings_become_numbers_in_messages_arrays_and_nested_messages() {
        let mut value = json!({
            "metadata": {"name": "x", "generation": "3", "resourceVersion": "17"},
            "spec": {"containers": [
                {"securityContext": {"runAsUser": "1000", "runAsNonRoot": true}},
                {"securityContext": {"runAsGroup": "0"}},
                {"image": "nginx"},
            ]},
            "status": {"observedGeneration": "2", "usage": {"cpuMillis": "250", "memoryBytes": "9223372036854775807"}},
        });
        int64_as_numbers(".stratus.v1.Instance", &mut value);
        assert_eq!(
            value,
            json!({
                "metadata": {"name": "x", "generation": 3, "resourceVersion": "17"},
                "spec": {"containers": [
                    {"securityContext": {"runAsUser": 1000, "runAsNonRoot": true}},
                    {"securityContext": {"runAsGroup": 0}},
                    {"image": "nginx"},
                ]},
                "status": {"observedGeneration": 2, "usage": {"cpuMillis": 250, "memoryBytes": i64::MAX}},
            })
        );
    }

    #[test]
    fn what_is_not_an_integer_is_kept() {
        let mut value = json!({"metadata": {"generation": "lots"}, "status": {"observedGeneration": 4}});
        let before = value.clone();
        int64_as_numbers(".stratus.v1.Service", &mut value);
        assert_eq!(value, before);
        // uint64 range: larger than i64::MAX still parses.
        assert_eq!(parse_integer("18446744073709551615"), Some(json!(u64::MAX)));
        assert_eq!(parse_integer("-1"), Some(json!(-1)));
        assert_eq!(parse_integer("18446744073709551616"), None);
    }

    #[test]
    fn maps_of_integers_are_followed() {
        // No Stratus kind has a map<string, int64> today; one added tomorrow prints numbers too.
        let entry = |value: pbjson_types::FieldDescriptorProto| DescriptorProto {
            name: Some("CountsEntry".into()),
            field: vec![
                pbjson_types::FieldDescriptorProto {
                    name: Some("key".into()),
                    number: Some(1),
                    r#type: Some(Type::String as i32),
                    ..Default::default()
                },
                value,
            ],
            options: Some(pbjson_types::MessageOptions { map_entry: Some(true), ..Default::default() }),
            ..Default::default()
        };
        let int_value = pbjson_types::FieldDescriptorProto {
            name: Some("value".into()),
            number: Some(2),
            r#type: Some(Type::Int64 as i32),
            ..Default::default()
        };
        let counts = DescriptorProto {
            name: Some("Counts".into()),
            field: vec![pbjson_types::FieldDescriptorProto {
                name: Some("counts".into()),
                json_name: Some("counts".into()),
                number: Some(1),
                r#type: Some(Type::Message as i32),
                type_name: Some(".t.Counts.CountsEntry".into()),
                ..Default::default()
            }],
            nested_type: vec![entry(int_value)],
            ..Default::default()
        };
        let set = FileDescriptorSet {
            file: vec![pbjson_types::FileDescriptorProto {
                package: Some("t".into()),
                message_type: vec![counts],
                ..Default::default()
            }],
        };
        let schema = schema(&set);
        let mut value = json!({"counts": {"a": "1", "b": "2"}});
        convert(&Shape::Message(".t.Counts".into()), &mut value, &schema);
        assert_eq!(value, json!({"counts": {"a": 1, "b": 2}}));
    }
}

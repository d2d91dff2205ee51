//! Manifests: YAML or JSON documents, several per file, of Stratus kinds or Knative Services.

use serde_json::Value;

use crate::knative::KNATIVE_API_VERSION;
use crate::resource::{AnyObject, lookup_kind};
use crate::validation::{ErrorList, FieldError};

/// Why one document of a manifest could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("document {index}: {errors}")]
pub struct DocumentError {
    /// The document's position in its file, from 0.
    pub index: usize,
    pub errors: ErrorList,
}

/// Parses every document of a YAML (or JSON) text. Empty documents are skipped; a `kind: List`
/// document contributes its `items`. Each object is returned with its document index.
pub fn decode_manifest(text: &str) -> Vec<Result<(usize, AnyObject), DocumentError>> {
    let mut out = Vec::new();
    for (index, doc) in yaml_serde::Deserializer::from_str(text).enumerate() {
        let value = match <Value as serde::Deserialize>::deserialize(doc) {
            Ok(v) => v,
            Err(e) => {
                out.push(Err(DocumentError {
                    index,
                    errors: FieldError::new("", format!("invalid YAML: {e}")).into(),
                }));
                // The parser cannot resynchronise after a syntax error.
                break;
            }
        };
        if value.is_null() {
            continue;
        }
        if value.get("kind").and_then(Value::as_str) == Some("List") {
            match value.get("items").and_then(Value::as_array) {
                Some(items) => {
                    for (i, item) in items.iter().enumerate() {
                        out.push(decode_value(item.clone()).map(|o| (index, o)).map_err(|mut errors| {
                            for e in &mut errors.0 {
                                e.path = join(&format!("items[{i}]"), &e.path);
                            }
                            DocumentError { index, errors }
                        }));
                    }
                }
                None => out.push(Err(DocumentError {
                    index,
                    errors: FieldError::new("items", "a List needs an items array").into(),
                })),
            }
            continue;
        }
        out.push(decode_value(value).map(|o| (index, o)).map_err(|errors| DocumentError { index, errors }));
    }
    out
}

/// Turns one JSON object into a typed object: checks `apiVersion` and `kind`, converts a
/// Knative Service, and reports unknown fields and wrong types with their path. It neither
/// defaults nor validates; see [`crate::prepare`].
pub fn decode_value(mut value: Value) -> Result<AnyObject, ErrorList> {
    normalize(&mut value);
    let Some(map) = value.as_object_mut() else {
        return Err(FieldError::new(
            "",
            format!("expected an object with apiVersion and kind, found {}", type_name(&value)),
        )
        .into());
    };
    let api_version = match map.get("apiVersion") {
        Some(Value::String(s)) => s.clone(),
        Some(other) => {
            return Err(FieldError::new("apiVersion", format!("expected a string, found {}", type_name(other))).into());
        }
        None => return Err(FieldError::new("apiVersion", "is required").into()),
    };
    let kind = match map.get("kind") {
        Some(Value::String(s)) => s.clone(),
        Some(other) => {
            return Err(FieldError::new("kind", format!("expected a string, found {}", type_name(other))).into());
        }
        None => return Err(FieldError::new("kind", "is required").into()),
    };
    let info = match (api_version.as_str(), kind.as_str()) {
        (KNATIVE_API_VERSION, "Service") => {
            // Same field names: the conversion is the annotations, applied by `prepare`.
            map.insert("apiVersion".into(), Value::String(crate::API_VERSION.into()));
            // A manifest exported from a running service may carry its status; it is not input.
            map.remove("status");
            lookup_kind("Service")
        }
        (KNATIVE_API_VERSION, other) => {
            return Err(FieldError::new(
                "kind",
                format!("{other:?} of {KNATIVE_API_VERSION} is not supported (only Service)"),
            )
            .into());
        }
        (crate::API_VERSION, k) => lookup_kind(k).filter(|i| i.kind == k),
        (other, _) => {
            return Err(FieldError::new(
                "apiVersion",
                format!("{other:?} is not supported (use {} or {KNATIVE_API_VERSION})", crate::API_VERSION),
            )
            .into());
        }
    };
    let Some(info) = info else {
        let known: Vec<_> = crate::resource::KINDS.iter().map(|k| k.kind).collect();
        return Err(FieldError::new(
            "kind",
            format!("{kind:?} is not a kind of {api_version} (known: {})", known.join(", ")),
        )
        .into());
    };
    quantities_as_strings(&mut value);
    AnyObject::from_json(info, value).map_err(Into::into)
}

/// Kubernetes accepts `cpu: 1` as well as `cpu: "1"`; so does Stratus, in resource maps.
fn quantities_as_strings(value: &mut Value) {
    match value {
        Value::Object(map) => {
            for (k, v) in map.iter_mut() {
                if matches!(k.as_str(), "limits" | "requests" | "capacity" | "allocatable")
                    && let Value::Object(q) = v
                {
                    for qv in q.values_mut() {
                        if let Value::Number(n) = qv
                            && let Some(text) = quantity_of_number(n)
                        {
                            *qv = Value::String(text);
                        }
                    }
                }
                quantities_as_strings(v);
            }
        }
        Value::Array(items) => items.iter_mut().for_each(quantities_as_strings),
        _ => {}
    }
}

/// The largest quantity written as a bare number (fifteen digits); larger ones take a suffix
/// (`2Pi`).
pub const MAX_NUMERIC_QUANTITY: f64 = 999_999_999_999_999.0;

/// A number in a resource map as quantity text: an integer as it is, a fraction rounded to the
/// nano (Kubernetes keeps nine decimals too). `None` (so the number is refused as not a
/// string) beyond ±[`MAX_NUMERIC_QUANTITY`].
fn quantity_of_number(n: &serde_json::Number) -> Option<String> {
    if let Some(i) = n.as_i64() {
        return (i.unsigned_abs() as f64 <= MAX_NUMERIC_QUANTITY).then(|| i.to_string());
    }
    let f = n.as_f64().filter(|f| f.is_finite() && f.abs() <= MAX_NUMERIC_QUANTITY)?;
    let text = format!("{f:.9}");
    Some(text.trim_end_matches('0').trim_end_matches('.').to_string())
}

fn join(prefix: &str, path: &str) -> String {
    if path.is_empty() {
        prefix.to_string()
    } else if path.starts_with('[') {
        format!("{prefix}{path}")
    } else {
        format!("{prefix}.{path}")
    }
}

fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "an object",
    }
}

/// Reads JSON as proto3 JSON and JSON Schema (so the OpenAPI document) mean it: a field that is
/// `null` is a field left out, and a number with no fraction (`1.0`) is an integer, which the
/// typed decoders would otherwise refuse in an integer field. Beyond 2^53 a float no longer
/// says which integer was written, so it stays as it is (and is refused there).
fn normalize(value: &mut Value) {
    match value {
        Value::Number(n) if n.is_f64() => {
            if let Some(f) = n.as_f64()
                && f.fract() == 0.0
                && f.abs() <= 2f64.powi(53)
            {
                *value = Value::from(f as i64);
            }
        }
        Value::Array(items) => items.iter_mut().for_each(normalize),
        Value::Object(map) => {
            map.retain(|_, v| !v.is_null());
            map.values_mut().for_each(normalize);
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Resource;

    #[test]
    fn null_is_left_out_and_a_whole_number_written_with_a_fraction_is_an_integer() {
        let obj = decode_value(serde_json::json!({
            "apiVersion": "stratus.dev/v1", "kind": "Tenant",
            "metadata": {"name": "a", "generation": 3.0, "labels": null, "uid": null},
            "spec": {"quota": {"maxInstances": 5.0}},
        }))
        .map_err(|e| e.to_string());
        let Ok(AnyObject::Tenant(t)) = obj else { panic!("{obj:?}") };
        assert_eq!(t.meta().generation, 3);
        assert_eq!(t.spec.and_then(|s| s.quota).and_then(|q| q.max_instances), Some(5));
        let half = serde_json::json!({"apiVersion": "stratus.dev/v1", "kind": "Tenant", "metadata": {"name": "a", "generation": 1.5}});
        assert!(decode_value(half).is_err());
    }

    #[test]
    fn a_large_whole_number_written_with_a_fraction_is_read_exactly() {
        // Schemathesis sent this one; serde_json's default parser read it as 2023844860771980.8.
        let text = r#"{"apiVersion": "stratus.dev/v1", "kind": "Tenant", "metadata": {"name": "a", "generation": 2023844860771981.0}}"#;
        let value: Value = serde_json::from_str(text).unwrap_or_else(|e| panic!("{e}"));
        let obj = decode_value(value).map_err(|e| e.to_string());
        let Ok(AnyObject::Tenant(t)) = obj else { panic!("{obj:?}") };
        assert_eq!(t.meta().generation, 2_023_844_860_771_981);
    }
}

//! Label selectors (`app=web,tier!=db,env in (a,b),!canary`) and field selectors
//! (`metadata.name=x,spec.nodeName=node-1`), with the syntax and meaning Kubernetes gives them.

use std::collections::BTreeMap;

use crate::resource::AnyObject;

/// A selector that does not parse, with the reason.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid selector {selector:?}: {reason}")]
pub struct Error {
    pub selector: String,
    pub reason: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Requirement {
    Equals(String, String),
    NotEquals(String, String),
    In(String, Vec<String>),
    NotIn(String, Vec<String>),
    Exists(String),
    DoesNotExist(String),
}

/// A parsed label selector; the empty selector matches everything.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LabelSelector(Vec<Requirement>);

impl LabelSelector {
    pub fn parse(s: &str) -> Result<LabelSelector, Error> {
        let err = |reason: &str| Error { selector: s.to_string(), reason: reason.to_string() };
        if !crate::patterns::is_label_selector(s) {
            return Err(err(
                "use key, !key, key=value, key!=value, key in (v1,v2) or key notin (v1,v2), joined by ','",
            ));
        }
        let mut reqs = Vec::new();
        for part in split_top_level(s).map_err(|r| err(&r))? {
            let part = part.trim();
            if part.is_empty() {
                continue;
            }
            let req = if let Some(key) = part.strip_prefix('!') {
                Requirement::DoesNotExist(key.trim().to_string())
            } else if let Some((k, v)) = part.split_once("!=") {
                Requirement::NotEquals(k.trim().into(), v.trim().into())
            } else if let Some((k, v)) = part.split_once("==") {
                Requirement::Equals(k.trim().into(), v.trim().into())
            } else if let Some((k, v)) = part.split_once('=') {
                Requirement::Equals(k.trim().into(), v.trim().into())
            } else if let Some((k, set)) = split_set(part, " notin ") {
                Requirement::NotIn(k, set.map_err(|r| err(&r))?)
            } else if let Some((k, set)) = split_set(part, " in ") {
                Requirement::In(k, set.map_err(|r| err(&r))?)
            } else {
                Requirement::Exists(part.to_string())
            };
            let key = match &req {
                Requirement::Equals(k, _)
                | Requirement::NotEquals(k, _)
                | Requirement::In(k, _)
                | Requirement::NotIn(k, _)
                | Requirement::Exists(k)
                | Requirement::DoesNotExist(k) => k,
            };
            let key_ok = |k: &str| !k.is_empty() && k.chars().all(|c| c.is_ascii_alphanumeric() || "-_./".contains(c));
            let value_ok = |v: &str| v.chars().all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c));
            if !key_ok(key) {
                return Err(err(&format!("{part:?} does not name a label key")));
            }
            let values: Vec<&String> = match &req {
                Requirement::Equals(_, v) | Requirement::NotEquals(_, v) => vec![v],
                Requirement::In(_, set) | Requirement::NotIn(_, set) => set.iter().collect(),
                _ => vec![],
            };
            if let Some(bad) = values.iter().find(|v| !value_ok(v)) {
                return Err(err(&format!("{bad:?} is not a label value")));
            }
            reqs.push(req);
        }
        Ok(LabelSelector(reqs))
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        self.0.iter().all(|r| match r {
            Requirement::Equals(k, v) => labels.get(k) == Some(v),
            Requirement::NotEquals(k, v) => labels.get(k) != Some(v),
            Requirement::In(k, set) => labels.get(k).is_some_and(|v| set.contains(v)),
            Requirement::NotIn(k, set) => labels.get(k).is_none_or(|v| !set.contains(v)),
            Requirement::Exists(k) => labels.contains_key(k),
            Requirement::DoesNotExist(k) => !labels.contains_key(k),
        })
    }

    /// The label values this selector pins with `key=value`, for index look-ups.
    pub fn equalities(&self) -> impl Iterator<Item = (&str, &str)> {
        self.0.iter().filter_map(|r| match r {
            Requirement::Equals(k, v) => Some((k.as_str(), v.as_str())),
            _ => None,
        })
    }
}

/// Splits on commas that are not inside parentheses.
fn split_top_level(s: &str) -> Result<Vec<&str>, String> {
    let mut parts = Vec::new();
    let mut depth = 0i32;
    let mut start = 0;
    for (i, c) in s.char_indices() {
        match c {
            '(' => depth += 1,
            ')' => {
                depth -= 1;
                if depth < 0 {
                    return Err("unbalanced ')'".into());
                }
            }
            ',' if depth == 0 => {
                parts.push(&s[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    if depth != 0 {
        return Err("unbalanced '('".into());
    }
    parts.push(&s[start..]);
    Ok(parts)
}

fn split_set(part: &str, op: &str) -> Option<(String, Result<Vec<String>, String>)> {
    let (k, rest) = part.split_once(op)?;
    let rest = rest.trim();
    let set = match rest.strip_prefix('(').and_then(|r| r.strip_suffix(')')) {
        Some(inner) => Ok(inner.split(',').map(|v| v.trim().to_string()).filter(|v| !v.is_empty()).collect()),
        None => Err(format!("{rest:?} is not a parenthesised set of values")),
    };
    Some((k.trim().to_string(), set))
}

/// A parsed field selector: `path=value` and `path!=value` terms, all of which must hold.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FieldSelector(Vec<(String, bool, String)>);

impl FieldSelector {
    pub fn parse(s: &str) -> Result<FieldSelector, Error> {
        if !crate::patterns::is_field_selector(s) {
            return Err(Error {
                selector: s.into(),
                reason: "use field=value or field!=value, joined by ',', where a field is like spec.nodeName".into(),
            });
        }
        let mut terms = Vec::new();
        for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let (path, equal, value) = if let Some((p, v)) = part.split_once("!=") {
                (p, false, v)
            } else if let Some((p, v)) = part.split_once("==") {
                (p, true, v)
            } else if let Some((p, v)) = part.split_once('=') {
                (p, true, v)
            } else {
                return Err(Error {
                    selector: s.into(),
                    reason: format!("{part:?} is not field=value or field!=value"),
                });
            };
            let path = path.trim();
            if path.is_empty()
                || !path.split('.').all(|seg| !seg.is_empty() && seg.chars().all(|c| c.is_ascii_alphanumeric()))
            {
                return Err(Error {
                    selector: s.into(),
                    reason: format!("{path:?} is not a field path like spec.nodeName"),
                });
            }
            terms.push((path.to_string(), equal, value.trim().to_string()));
        }
        Ok(FieldSelector(terms))
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The value this selector requires at `path` (`path=value`), if any.
    pub fn required(&self, path: &str) -> Option<&str> {
        self.0.iter().find(|(p, eq, _)| *eq && p == path).map(|(_, _, v)| v.as_str())
    }

    /// Whether the object's fields satisfy every term. A missing field reads as "".
    pub fn matches(&self, obj: &AnyObject) -> bool {
        if self.0.is_empty() {
            return true;
        }
        // The fields watches select on most (an agent's Instances by node), read without
        // converting the whole object to JSON.
        let direct = |path: &str| -> Option<String> {
            match (path, obj) {
                ("spec.nodeName", AnyObject::Instance(i)) => {
                    Some(i.spec.as_ref().map(|s| s.node_name.clone()).unwrap_or_default())
                }
                ("metadata.name", _) => Some(obj.meta().name.clone()),
                ("metadata.namespace", _) => Some(obj.meta().namespace.clone()),
                _ => None,
            }
        };
        if let Some(all) = self
            .0
            .iter()
            .map(|(path, equal, want)| Some((direct(path)? == *want) == *equal))
            .collect::<Option<Vec<bool>>>()
        {
            return all.into_iter().all(|b| b);
        }
        let json = obj.to_json();
        self.0.iter().all(|(path, equal, want)| {
            let mut cur = &json;
            for seg in path.split('.') {
                cur = cur.get(seg).unwrap_or(&serde_json::Value::Null);
            }
            let have = match cur {
                serde_json::Value::Null => String::new(),
                serde_json::Value::String(s) => s.clone(),
                other => other.to_string(),
            };
            (have == *want) == *equal
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Resource;
    use crate::v1::{Instance, InstanceSpec};

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    #[test]
    fn label_selectors_match_as_kubernetes() {
        let l = labels(&[("app", "web"), ("env", "prod")]);
        let cases = [
            ("", true),
            ("app=web", true),
            ("app==web", true),
            ("app=db", false),
            ("app!=db", true),
            ("env in (prod, staging)", true),
            ("env notin (prod)", false),
            ("tier notin (db)", true),
            ("app", true),
            ("!app", false),
            ("!canary,app=web,env in (prod)", true),
        ];
        for (sel, want) in cases {
            assert_eq!(LabelSelector::parse(sel).expect(sel).matches(&l), want, "{sel}");
        }
    }

    #[test]
    fn bad_label_selectors_are_errors() {
        for sel in ["env in (a", "env in a", "a)", "!", "a b", "!app=web", "!=x", "a=b=c", "a in (b c)"] {
            assert!(LabelSelector::parse(sel).is_err(), "{sel}");
        }
    }

    #[test]
    fn field_selectors_read_the_json_form() {
        let mut inst = Instance::default();
        inst.meta_mut().name = "i-1".into();
        inst.spec = Some(InstanceSpec { node_name: "node-1".into(), ..Default::default() });
        let any = inst.into_any();
        assert!(FieldSelector::parse("spec.nodeName=node-1").expect("parses").matches(&any));
        assert!(FieldSelector::parse("metadata.name=i-1,spec.nodeName!=node-2").expect("parses").matches(&any));
        assert!(!FieldSelector::parse("spec.nodeName=node-2").expect("parses").matches(&any));
        assert!(FieldSelector::parse("status.phase=").expect("parses").matches(&any));
        assert!(FieldSelector::parse("spec.nodeName").is_err());
        assert!(FieldSelector::parse("spec..x=1").is_err());
    }
}

//! What the positional arguments of `get`, `describe`, `delete` and `wait` name, in kubectl's
//! forms: `KIND [NAME...]`, `KIND1,KIND2 [NAME...]` and `KIND/NAME...`.

use stratus_api::KindInfo;
use stratus_api::resource::lookup_kind;

use crate::error::{Error, Result};

/// Objects of one kind: the named ones, or every one when `names` is empty.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Group {
    pub info: &'static KindInfo,
    pub names: Vec<String>,
}

/// The kind `name` names (kind, plural, singular or short name, any case).
pub fn kind(name: &str) -> Result<&'static KindInfo> {
    lookup_kind(name).ok_or_else(|| Error::UnknownKind(name.to_string()))
}

/// Parses the positional arguments of `verb` into groups, one per kind, in the order given.
pub fn parse(args: &[String], verb: &str) -> Result<Vec<Group>> {
    let Some(first) = args.first() else {
        return Err(Error::Usage(format!(
            "you must specify the type of resource to {verb}; `stratus api-resources` lists them"
        )));
    };
    if args.iter().any(|a| a.contains('/')) {
        return parse_slash_form(args, verb);
    }
    let mut groups: Vec<Group> = Vec::new();
    for name in first.split(',') {
        if name.is_empty() {
            return Err(Error::Usage(format!("{first:?} names an empty resource type")));
        }
        let info = kind(name)?;
        if !groups.iter().any(|g| g.info == info) {
            groups.push(Group { info, names: args[1..].to_vec() });
        }
    }
    Ok(groups)
}

/// `svc/hello rev/hello-00001`: every argument must then be in that form.
fn parse_slash_form(args: &[String], verb: &str) -> Result<Vec<Group>> {
    let mut groups: Vec<Group> = Vec::new();
    for arg in args {
        let Some((kind_name, name)) = arg.split_once('/') else {
            return Err(Error::Usage(format!(
                "there is no need to give a resource type as a separate argument when passing arguments in \
                 resource/name form (e.g. `stratus {verb} service/hello` instead of `stratus {verb} service service/hello`)"
            )));
        };
        if name.is_empty() || name.contains('/') {
            return Err(Error::Usage(format!("{arg:?} is not in resource/name form")));
        }
        let info = kind(kind_name)?;
        match groups.iter_mut().find(|g| g.info == info) {
            Some(g) => g.names.push(name.to_string()),
            None => groups.push(Group { info, names: vec![name.to_string()] }),
        }
    }
    Ok(groups)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn args(a: &[&str]) -> Vec<String> {
        a.iter().map(|s| s.to_string()).collect()
    }

    fn shape(groups: &[Group]) -> Vec<(&'static str, Vec<String>)> {
        groups.iter().map(|g| (g.info.kind, g.names.clone())).collect()
    }

    #[test]
    fn kinds_are_found_by_plural_singular_short_name_and_kind() {
        for name in ["services", "service", "svc", "ksvc", "Service", "SVC"] {
            assert_eq!(kind(name).unwrap().kind, "Service", "{name}");
        }
        for (name, want) in
            [("rev", "Revision"), ("ns", "Namespace"), ("ep", "Endpoints"), ("no", "Node"), ("ev", "Event")]
        {
            assert_eq!(kind(name).unwrap().kind, want, "{name}");
        }
        assert_eq!(kind("pods").unwrap_err().to_string(), r#"the server doesn't have a resource type "pods""#);
    }

    #[test]
    fn a_kind_then_names() {
        let g = parse(&args(&["svc", "a", "b"]), "get").unwrap();
        assert_eq!(shape(&g), vec![("Service", args(&["a", "b"]))]);
        let g = parse(&args(&["revisions"]), "get").unwrap();
        assert_eq!(shape(&g), vec![("Revision", vec![])]);
    }

    #[test]
    fn several_kinds_separated_by_commas() {
        let g = parse(&args(&["svc,rev,services"]), "get").unwrap();
        assert_eq!(shape(&g), vec![("Service", vec![]), ("Revision", vec![])]);
        assert!(matches!(parse(&args(&["svc,"]), "get"), Err(Error::Usage(_))));
        assert!(matches!(parse(&args(&["svc,pods"]), "get"), Err(Error::UnknownKind(k)) if k == "pods"));
    }

    #[test]
    fn the_slash_form_groups_by_kind_in_order() {
        let g = parse(&args(&["svc/a", "rev/r1", "service/b"]), "get").unwrap();
        assert_eq!(shape(&g), vec![("Service", args(&["a", "b"])), ("Revision", args(&["r1"]))]);
    }

    #[test]
    fn the_forms_do_not_mix() {
        let err = parse(&args(&["svc", "svc/a"]), "delete").unwrap_err();
        assert!(err.to_string().contains("`stratus delete service/hello`"), "{err}");
        assert!(matches!(parse(&args(&["svc/"]), "get"), Err(Error::Usage(_))));
        assert!(matches!(parse(&args(&["pods/x"]), "get"), Err(Error::UnknownKind(_))));
    }

    #[test]
    fn nothing_is_a_usage_error() {
        let err = parse(&[], "get").unwrap_err();
        assert!(err.to_string().starts_with("you must specify the type of resource to get"), "{err}");
    }
}

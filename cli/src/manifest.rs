//! Manifests given with `-f`: files, directories and stdin, each holding YAML or JSON documents,
//! decoded and checked here before anything is sent, so that an invalid document is reported
//! with its file, position and field, and nothing is applied from a set that has one.

use std::io::Read;
use std::path::Path;

use stratus_api::AnyObject;
use stratus_api::decode::decode_manifest;
use stratus_api::validation::FieldError;

use crate::config::Namespace;
use crate::error::{Error, Result};
use crate::output::qualified_name;

/// How stdin is named in messages, as kubectl names it.
pub const STDIN: &str = "STDIN";

/// The text of one manifest file and the name it is reported under.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Source {
    pub name: String,
    pub text: String,
}

/// One object of a manifest and where it came from.
#[derive(Debug, Clone)]
pub struct Item {
    pub source: String,
    /// The document's position in its source, from 1.
    pub document: usize,
    pub object: AnyObject,
}

impl Item {
    /// `hello.yaml: service/hello`, how a failure about this object is reported.
    pub fn describe(&self) -> String {
        format!("{}: {}", self.source, qualified_name(&self.object))
    }
}

/// Reads every `-f` argument: a file, a directory (its `*.yaml`, `*.yml` and `*.json` files in
/// name order, not descending into subdirectories), or `-` for stdin. Every unreadable path
/// is reported, not only the first.
///
/// Reading is synchronous: it happens before any request is made, when nothing else runs.
pub fn read(paths: &[String], stdin: &mut dyn Read) -> Result<Vec<Source>> {
    let mut sources = Vec::new();
    let mut errors = Vec::new();
    for path in paths {
        if path == "-" {
            let mut text = String::new();
            match stdin.read_to_string(&mut text) {
                Ok(_) => sources.push(Source { name: STDIN.to_string(), text }),
                Err(source) => errors.push(Error::Read { path: STDIN.to_string(), source }),
            }
            continue;
        }
        match read_path(Path::new(path)) {
            Ok(found) => sources.extend(found),
            Err(e) => errors.push(e),
        }
    }
    Error::from_many(errors)?;
    Ok(sources)
}

fn read_path(path: &Path) -> Result<Vec<Source>> {
    let shown = path.display().to_string();
    let meta = std::fs::metadata(path).map_err(|source| match source.kind() {
        std::io::ErrorKind::NotFound => Error::PathNotFound(shown.clone()),
        _ => Error::Read { path: shown.clone(), source },
    })?;
    if !meta.is_dir() {
        return Ok(vec![read_file(path)?]);
    }
    let entries = std::fs::read_dir(path).map_err(|source| Error::Read { path: shown.clone(), source })?;
    let mut files = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|source| Error::Read { path: shown.clone(), source })?;
        let file = entry.path();
        let is_manifest = file
            .extension()
            .and_then(|e| e.to_str())
            .is_some_and(|e| ["yaml", "yml", "json"].contains(&e.to_ascii_lowercase().as_str()));
        if is_manifest && !file.is_dir() {
            files.push(file);
        }
    }
    files.sort();
    files.iter().map(|f| read_file(f)).collect()
}

fn read_file(path: &Path) -> Result<Source> {
    let name = path.display().to_string();
    match std::fs::read_to_string(path) {
        Ok(text) => Ok(Source { name, text }),
        Err(source) => Err(Error::Read { path: name, source }),
    }
}

/// Decodes every document of every source, gives namespaced objects without a namespace the
/// command's one, and, when `validate`, defaults and validates a copy of each as the server
/// will. Either every object is returned or every problem is, one per invalid field.
pub fn load(sources: &[Source], namespace: &Namespace, validate: bool) -> Result<Vec<Item>> {
    let mut items = Vec::new();
    let mut errors = Vec::new();
    for source in sources {
        let doc_error = |index: usize, e: &FieldError| Error::Document {
            file: source.name.clone(),
            document: index + 1,
            reason: e.to_string(),
        };
        for decoded in decode_manifest(&source.text) {
            let (index, mut object) = match decoded {
                Ok(d) => d,
                Err(e) => {
                    errors.extend(e.errors.0.iter().map(|fe| doc_error(e.index, fe)));
                    continue;
                }
            };
            if let AnyObject::Secret(secret) = &object
                && let Some(key) = secret.data.iter().find(|(_, v)| crate::output::is_hidden_value(v)).map(|(k, _)| k)
            {
                let reason = format!(
                    "data[{key:?}] is the placeholder `stratus get` prints without --show-values, not a value; \
                     get the Secret again with --show-values"
                );
                errors.push(Error::Document { file: source.name.clone(), document: index + 1, reason });
                continue;
            }
            if let Err(reason) = set_namespace(&mut object, namespace) {
                errors.push(Error::Document { file: source.name.clone(), document: index + 1, reason });
                continue;
            }
            if validate {
                // The server defaults and validates again; this copy only finds the problems
                // before anything is sent. What is sent is what the user wrote.
                let mut prepared = object.clone();
                if let Err(list) = stratus_api::prepare(&mut prepared) {
                    errors.extend(list.0.iter().map(|fe| doc_error(index, fe)));
                    continue;
                }
            }
            items.push(Item { source: source.name.clone(), document: index + 1, object });
        }
    }
    Error::from_many(errors)?;
    Ok(items)
}

/// kubectl's rule: a namespaced object without a namespace goes to the command's namespace; one
/// with a namespace keeps it, unless the user named a different one with `-n`.
fn set_namespace(object: &mut AnyObject, namespace: &Namespace) -> Result<(), String> {
    if !object.info().namespaced {
        return Ok(());
    }
    let own = &object.meta().namespace;
    if own.is_empty() {
        object.meta_mut().namespace = namespace.name.clone();
    } else if namespace.explicit && *own != namespace.name {
        return Err(format!(
            "the namespace of {} is {own:?}, which does not match the namespace {:?} given with -n; \
             remove one of them",
            qualified_name(object),
            namespace.name
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    const HELLO: &str = "\
apiVersion: stratus.dev/v1
kind: Service
metadata:
  name: hello
spec:
  template:
    spec:
      containers:
      - image: example/hello:v1
";

    fn ns(name: &str, explicit: bool) -> Namespace {
        Namespace { name: name.into(), explicit }
    }

    fn source(name: &str, text: &str) -> Source {
        Source { name: name.into(), text: text.into() }
    }

    fn messages(e: Error) -> Vec<String> {
        match e {
            Error::Many(v) => v.into_iter().map(|e| e.to_string()).collect(),
            other => vec![other.to_string()],
        }
    }

    #[test]
    fn objects_without_a_namespace_get_the_commands() {
        let items = load(&[source("a.yaml", HELLO)], &ns("team", false), true).unwrap();
        assert_eq!(items.len(), 1);
        assert_eq!(items[0].object.meta().namespace, "team");
        assert_eq!(items[0].document, 1);
        assert_eq!(items[0].describe(), "a.yaml: service/hello");
    }

    #[test]
    fn an_explicit_namespace_must_agree_with_the_manifest() {
        let text = HELLO.replace("name: hello\n", "name: hello\n  namespace: prod\n");
        let items = load(&[source("a.yaml", &text)], &ns("team", false), true).unwrap();
        assert_eq!(items[0].object.meta().namespace, "prod");
        let err = messages(load(&[source("a.yaml", &text)], &ns("team", true), true).unwrap_err());
        assert_eq!(
            err,
            [
                r#"a.yaml: document 1: the namespace of service/hello is "prod", which does not match the namespace "team" given with -n; remove one of them"#
            ]
        );
        assert!(load(&[source("a.yaml", &text)], &ns("prod", true), true).is_ok());
    }

    #[test]
    fn cluster_scoped_objects_keep_no_namespace() {
        let text = "apiVersion: stratus.dev/v1\nkind: Namespace\nmetadata:\n  name: team\n";
        let items = load(&[source("ns.yaml", text)], &ns("other", true), true).unwrap();
        assert_eq!(items[0].object.meta().namespace, "");
    }

    #[test]
    fn every_invalid_document_is_reported_with_file_position_and_field() {
        let bad_field = HELLO.replace("- image:", "- imag:");
        let no_image = HELLO.replace("      - image: example/hello:v1\n", "      - name: web\n");
        let text = format!("{HELLO}---\n{bad_field}---\n{no_image}");
        let err = messages(load(&[source("app.yaml", &text)], &ns("default", false), true).unwrap_err());
        assert_eq!(err.len(), 2, "{err:?}");
        assert!(err[0].starts_with("app.yaml: document 2: spec.template.spec.containers[0].imag"), "{err:?}");
        assert!(err[1].starts_with("app.yaml: document 3: spec.template.spec.containers[0].image: "), "{err:?}");
    }

    #[test]
    fn without_validation_only_decoding_errors_count() {
        let no_image = HELLO.replace("      - image: example/hello:v1\n", "      - name: web\n");
        assert!(load(&[source("a.yaml", &no_image)], &ns("default", false), false).is_ok());
        assert!(load(&[source("a.yaml", &no_image)], &ns("default", false), true).is_err());
    }

    #[test]
    fn directories_are_read_in_name_order_and_only_manifests() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("b.yml"), "b").unwrap();
        std::fs::write(dir.path().join("a.yaml"), "a").unwrap();
        std::fs::write(dir.path().join("c.json"), "c").unwrap();
        std::fs::write(dir.path().join("README.md"), "no").unwrap();
        std::fs::create_dir(dir.path().join("sub.yaml")).unwrap();
        let path = dir.path().display().to_string();
        let sources = read(std::slice::from_ref(&path), &mut std::io::empty()).unwrap();
        let texts: Vec<_> = sources.iter().map(|s| s.text.as_str()).collect();
        assert_eq!(texts, ["a", "b", "c"]);
        assert_eq!(sources[0].name, format!("{path}/a.yaml"));
    }

    #[test]
    fn stdin_is_read_for_a_dash() {
        let mut stdin = HELLO.as_bytes();
        let sources = read(&["-".to_string()], &mut stdin).unwrap();
        assert_eq!(sources, [source(STDIN, HELLO)]);
    }

    #[test]
    fn every_missing_path_is_reported() {
        let err = messages(read(&["nope.yaml".into(), "gone/".into()], &mut std::io::empty()).unwrap_err());
        assert_eq!(err, [r#"the path "nope.yaml" does not exist"#, r#"the path "gone/" does not exist"#]);
    }
}

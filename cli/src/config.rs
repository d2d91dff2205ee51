//! The config file (`~/.stratus/config`, or `STRATUS_CONFIG`) and how the server and namespace
//! of a command are chosen.
//!
//! ```yaml
//! current-context: local
//! contexts:
//! - name: local
//!   server: http://127.0.0.1:7070
//!   namespace: default
//! ```

use std::io::Write;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// The contents of the config file. Unknown keys are ignored so that a newer file still loads.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct Config {
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub current_context: String,
    #[serde(default)]
    pub contexts: Vec<Context>,
}

/// A named server and the namespace to use there by default.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Context {
    pub name: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub server: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub namespace: String,
}

/// The namespace a command works in, and whether the user named it (`-n`): an object in a
/// manifest may carry another namespace only when the user did not.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Namespace {
    pub name: String,
    pub explicit: bool,
}

/// Where a command sends its requests, and in which namespace.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Connection {
    pub server: String,
    pub namespace: Namespace,
}

impl Config {
    /// Reads the config file; a missing file (or no path at all) is an empty config.
    pub fn load(path: Option<&Path>) -> Result<Config> {
        let Some(path) = path else { return Ok(Config::default()) };
        let text = match std::fs::read_to_string(path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Config::default()),
            Err(e) => return Err(config_error(path, format!("cannot read: {e}"))),
        };
        if text.trim().is_empty() {
            return Ok(Config::default());
        }
        yaml_serde::from_str(&text).map_err(|e| config_error(path, format!("is not a valid config file: {e}")))
    }

    /// Writes the config file atomically (a crash leaves the old file or the new one, never half
    /// of one), creating its directory if needed.
    pub fn save(&self, path: &Path) -> Result<()> {
        let text = yaml_serde::to_string(self).map_err(|e| config_error(path, format!("cannot encode: {e}")))?;
        let dir = match path.parent() {
            Some(d) if !d.as_os_str().is_empty() => d,
            _ => Path::new("."),
        };
        std::fs::create_dir_all(dir)
            .map_err(|e| config_error(path, format!("cannot create {}: {e}", dir.display())))?;
        let mut tmp =
            tempfile::NamedTempFile::new_in(dir).map_err(|e| config_error(path, format!("cannot write: {e}")))?;
        tmp.write_all(text.as_bytes()).map_err(|e| config_error(path, format!("cannot write: {e}")))?;
        tmp.persist(path).map_err(|e| config_error(path, format!("cannot write: {}", e.error)))?;
        Ok(())
    }

    pub fn context(&self, name: &str) -> Option<&Context> {
        self.contexts.iter().find(|c| c.name == name)
    }

    /// The current context; `None` when none is set. A current-context that names no context
    /// is an error: silently falling back to the default server would send requests elsewhere.
    pub fn current(&self, path: Option<&Path>) -> Result<Option<&Context>> {
        if self.current_context.is_empty() {
            return Ok(None);
        }
        match self.context(&self.current_context) {
            Some(c) => Ok(Some(c)),
            None => Err(config_error(
                path.unwrap_or(Path::new("config")),
                format!(
                    "the current context {:?} does not exist; see `stratus config get-contexts`",
                    self.current_context
                ),
            )),
        }
    }
}

/// Chooses the server and namespace of a command. The server is the first of: `--server`,
/// `STRATUS_SERVER`, the current context's server, [`stratus_client::DEFAULT_SERVER`]. The
/// namespace is the first of: `-n`, the current context's namespace, `default`.
pub fn resolve(
    flag_server: Option<&str>,
    env_server: Option<&str>,
    flag_namespace: Option<&str>,
    config: &Config,
    config_path: Option<&Path>,
) -> Result<Connection> {
    let non_empty = |s: Option<&str>| s.filter(|s| !s.is_empty()).map(str::to_string);
    let server = non_empty(flag_server).or_else(|| non_empty(env_server));
    let namespace = non_empty(flag_namespace);
    // The context is consulted only when something is left to take from it, so that a broken
    // config file does not get in the way of a fully specified command line.
    let context = if server.is_none() || namespace.is_none() { config.current(config_path)? } else { None };
    let from_context = |field: fn(&Context) -> &str| context.map(field).filter(|s| !s.is_empty()).map(str::to_string);
    Ok(Connection {
        server: server
            .or_else(|| from_context(|c| &c.server))
            .unwrap_or_else(|| stratus_client::DEFAULT_SERVER.to_string()),
        namespace: match namespace {
            Some(name) => Namespace { name, explicit: true },
            None => Namespace {
                name: from_context(|c| &c.namespace).unwrap_or_else(|| stratus_api::DEFAULT_NAMESPACE.to_string()),
                explicit: false,
            },
        },
    })
}

fn config_error(path: &Path, reason: String) -> Error {
    Error::Config { path: path.display().to_string(), reason }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn config() -> Config {
        Config {
            current_context: "dev".into(),
            contexts: vec![
                Context { name: "dev".into(), server: "http://dev:7070".into(), namespace: "team".into() },
                Context { name: "bare".into(), server: String::new(), namespace: String::new() },
            ],
        }
    }

    #[test]
    fn the_flag_wins_then_the_environment_then_the_context_then_the_default() {
        let c = config();
        assert_eq!(resolve(Some("http://flag"), Some("http://env"), None, &c, None).unwrap().server, "http://flag");
        assert_eq!(resolve(None, Some("http://env"), None, &c, None).unwrap().server, "http://env");
        assert_eq!(resolve(None, None, None, &c, None).unwrap().server, "http://dev:7070");
        assert_eq!(resolve(None, None, None, &Config::default(), None).unwrap().server, "http://127.0.0.1:7070");
        // An empty value is no value.
        assert_eq!(resolve(Some(""), Some(""), None, &c, None).unwrap().server, "http://dev:7070");
    }

    #[test]
    fn the_namespace_comes_from_the_flag_then_the_context_then_default() {
        let c = config();
        let ns = resolve(None, None, Some("mine"), &c, None).unwrap().namespace;
        assert_eq!(ns, Namespace { name: "mine".into(), explicit: true });
        let ns = resolve(None, None, None, &c, None).unwrap().namespace;
        assert_eq!(ns, Namespace { name: "team".into(), explicit: false });
        let bare = Config { current_context: "bare".into(), ..config() };
        let conn = resolve(None, None, None, &bare, None).unwrap();
        assert_eq!(conn.namespace, Namespace { name: "default".into(), explicit: false });
        assert_eq!(conn.server, "http://127.0.0.1:7070");
    }

    #[test]
    fn a_dangling_current_context_is_an_error_unless_unused() {
        let c = Config { current_context: "gone".into(), ..config() };
        let err = resolve(None, None, None, &c, Some(Path::new("/x/config"))).unwrap_err();
        assert_eq!(
            err.to_string(),
            r#"/x/config: the current context "gone" does not exist; see `stratus config get-contexts`"#
        );
        assert!(resolve(Some("http://s"), None, Some("ns"), &c, None).is_ok());
    }

    #[test]
    fn the_file_round_trips_and_a_missing_file_is_empty() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub").join("config");
        assert_eq!(Config::load(Some(&path)).unwrap(), Config::default());
        config().save(&path).unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(text.contains("current-context: dev"), "{text}");
        assert_eq!(Config::load(Some(&path)).unwrap(), config());
    }

    #[test]
    fn a_malformed_file_names_itself() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config");
        std::fs::write(&path, "contexts: 7\n").unwrap();
        let err = Config::load(Some(&path)).unwrap_err().to_string();
        assert!(err.starts_with(&format!("{}: is not a valid config file", path.display())), "{err}");
    }
}

//! The config file (`~/.stratus/config`, or `STRATUS_CONFIG`) and how the server, namespace
//! and token of a command are chosen.
//!
//! ```yaml
//! current-context: 127.0.0.1:7070
//! contexts:
//! - name: 127.0.0.1:7070
//!   server: https://127.0.0.1:7070
//!   certificate-authority-data: LS0tLS1CRUdJTi…
//!   namespace: default
//!   user: admin
//!   token: eyJhbGciOiJFZERTQSIs…
//! ```
//!
//! A token is as good as a password until it expires, so the file is written readable by its
//! owner only (mode 0600).

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

/// A named server, the namespace to use there by default, and who is logged in to it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Context {
    pub name: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub server: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub namespace: String,
    /// The user who logged in last (the default of `stratus login --username`).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub user: String,
    /// The bearer token `stratus login` got; presented only to this context's server.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub token: String,
    /// The CA bundle that verifies this context's server, PEM in base64 (kubeconfig's
    /// `certificate-authority-data`).
    #[serde(default, rename = "certificate-authority-data", skip_serializing_if = "String::is_empty")]
    pub certificate_authority_data: String,
}

impl Context {
    /// Keeps `ca_pem` as this context's CA.
    pub fn set_certificate_authority(&mut self, ca_pem: &[u8]) {
        use base64::Engine;
        self.certificate_authority_data = base64::engine::general_purpose::STANDARD.encode(ca_pem);
    }
}

/// The namespace a command works in, and whether the user named it (`-n`): an object in a
/// manifest may carry another namespace only when the user did not.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Namespace {
    pub name: String,
    pub explicit: bool,
}

/// Where a command sends its requests, in which namespace, and with which token.
#[derive(Clone, PartialEq, Eq)]
pub struct Connection {
    pub server: String,
    pub namespace: Namespace,
    /// `None`: no one is logged in; only `login` will be answered.
    pub token: Option<String>,
    /// The CA bundle (PEM) that verifies an `https://` server.
    pub ca_pem: Option<Vec<u8>>,
}

impl std::fmt::Debug for Connection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the token itself: a Debug line may end up in a log or a bug report.
        f.debug_struct("Connection")
            .field("server", &self.server)
            .field("namespace", &self.namespace)
            .field("token", &self.token.as_ref().map(|_| ".."))
            .finish()
    }
}

/// What the environment adds to the flags when choosing a [`Connection`]: `STRATUS_SERVER`
/// and `STRATUS_TOKEN`.
#[derive(Debug, Clone, Copy, Default)]
pub struct Overrides<'a> {
    pub flag_server: Option<&'a str>,
    pub env_server: Option<&'a str>,
    pub flag_namespace: Option<&'a str>,
    pub env_token: Option<&'a str>,
    /// `--certificate-authority` or `STRATUS_CERTIFICATE_AUTHORITY`.
    pub ca_file: Option<&'a Path>,
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
    /// of one), creating its directory if needed. The file is its owner's only (0600), whatever
    /// it was before: it may hold tokens.
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
        // Before the first byte is written, so that no one else can ever read the token.
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            tmp.as_file()
                .set_permissions(std::fs::Permissions::from_mode(0o600))
                .map_err(|e| config_error(path, format!("cannot restrict who may read it: {e}")))?;
        }
        tmp.write_all(text.as_bytes()).map_err(|e| config_error(path, format!("cannot write: {e}")))?;
        tmp.persist(path).map_err(|e| config_error(path, format!("cannot write: {}", e.error)))?;
        Ok(())
    }

    pub fn context(&self, name: &str) -> Option<&Context> {
        self.contexts.iter().find(|c| c.name == name)
    }

    pub fn context_mut(&mut self, name: &str) -> Option<&mut Context> {
        self.contexts.iter_mut().find(|c| c.name == name)
    }

    /// The context a login to `server` is kept in, made current: the current context if it is
    /// for that server (or for none yet), else another one for that server, else a new one
    /// named after the server (`127.0.0.1:7070`). Its server is set to `server`.
    pub fn login_context(&mut self, server: &str) -> &mut Context {
        let for_server = |c: &Context| c.server.is_empty() || same_server(&c.server, server);
        let current = self.context(&self.current_context).filter(|c| for_server(c)).map(|c| c.name.clone());
        let name = current
            .or_else(|| self.contexts.iter().find(|c| same_server(&c.server, server)).map(|c| c.name.clone()))
            .unwrap_or_else(|| {
                let name = self.free_name(&context_name(server));
                self.contexts.push(Context { name: name.clone(), ..Default::default() });
                name
            });
        self.current_context.clone_from(&name);
        let index = self.contexts.iter().position(|c| c.name == name).unwrap_or_default();
        let context = &mut self.contexts[index];
        context.server = server.to_string();
        context
    }

    /// `base`, or `base-2`, `base-3`… when a context already has that name.
    fn free_name(&self, base: &str) -> String {
        (1..)
            .map(|n| if n == 1 { base.to_string() } else { format!("{base}-{n}") })
            .find(|name| self.context(name).is_none())
            .unwrap_or_else(|| base.to_string())
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

/// Chooses the server, namespace and token of a command. The server is the first of:
/// `--server`, `STRATUS_SERVER`, the current context's server,
/// [`stratus_client::DEFAULT_SERVER`]. The namespace is the first of: `-n`, the current
/// context's namespace, `default`. The token is `STRATUS_TOKEN`, else the current context's
/// when the server is that context's: a token is not handed to whatever `--server` names.
pub fn resolve(given: Overrides<'_>, config: &Config, config_path: Option<&Path>) -> Result<Connection> {
    let non_empty = |s: Option<&str>| s.filter(|s| !s.is_empty()).map(str::to_string);
    let server = non_empty(given.flag_server).or_else(|| non_empty(given.env_server));
    let namespace = non_empty(given.flag_namespace);
    let token = non_empty(given.env_token);
    // The context is consulted only when something is left to take from it, so that a broken
    // config file does not get in the way of a fully specified command line; for the token
    // alone, a current context that is not there is no token (the server then says so).
    let context = match (server.is_none() || namespace.is_none(), token.is_none()) {
        (true, _) => config.current(config_path)?,
        (false, true) => config.current(config_path).ok().flatten(),
        (false, false) => None,
    };
    let from_context = |field: fn(&Context) -> &str| context.map(field).filter(|s| !s.is_empty()).map(str::to_string);
    let server =
        server.or_else(|| from_context(|c| &c.server)).unwrap_or_else(|| stratus_client::DEFAULT_SERVER.to_string());
    let context_is_for_server = context.is_some_and(|c| c.server.is_empty() || same_server(&c.server, &server));
    let ca_pem = match given.ca_file {
        Some(file) => Some(
            std::fs::read(file)
                .map_err(|e| Error::Usage(format!("cannot read the certificate authority {}: {e}", file.display())))?,
        ),
        None if context_is_for_server => match from_context(|c| &c.certificate_authority_data) {
            Some(data) => Some(decode_ca(&data, config_path)?),
            None => None,
        },
        None => None,
    };
    Ok(Connection {
        ca_pem,
        token: token.or_else(|| if context_is_for_server { from_context(|c| &c.token) } else { None }),
        server,
        namespace: match namespace {
            Some(name) => Namespace { name, explicit: true },
            None => Namespace {
                name: from_context(|c| &c.namespace).unwrap_or_else(|| stratus_api::DEFAULT_NAMESPACE.to_string()),
                explicit: false,
            },
        },
    })
}

/// A context's `certificate-authority-data`: base64 of PEM.
fn decode_ca(data: &str, config_path: Option<&Path>) -> Result<Vec<u8>> {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.decode(data.trim()).map_err(|e| match config_path {
        Some(path) => config_error(path, format!("certificate-authority-data is not base64: {e}")),
        None => Error::Usage(format!("certificate-authority-data is not base64: {e}")),
    })
}

/// Whether two server URLs name the same server (`http://h:1/` is `http://H:1`).
pub fn same_server(a: &str, b: &str) -> bool {
    a.trim_end_matches('/').eq_ignore_ascii_case(b.trim_end_matches('/'))
}

/// The name of a context made for `server`: its host and port, `127.0.0.1:7070`.
fn context_name(server: &str) -> String {
    let bare = server.split_once("://").map_or(server, |(_, rest)| rest).trim_end_matches('/');
    let name = bare.replace('/', "-");
    if name.is_empty() { "default".to_string() } else { name }
}

/// The config file to write; without a home directory or `STRATUS_CONFIG` there is none.
pub fn writable(path: Option<&Path>) -> Result<&Path> {
    path.ok_or_else(|| Error::Config {
        path: "~/.stratus/config".into(),
        reason: "there is no home directory to keep the config in; set STRATUS_CONFIG to a file path".into(),
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
                Context {
                    name: "dev".into(),
                    server: "http://dev:7070".into(),
                    namespace: "team".into(),
                    user: "alice".into(),
                    token: "dev-token".into(),
                    ..Default::default()
                },
                Context { name: "bare".into(), ..Default::default() },
            ],
        }
    }

    fn resolve_with(server: Option<&str>, env: Option<&str>, namespace: Option<&str>, c: &Config) -> Connection {
        let given = Overrides { flag_server: server, env_server: env, flag_namespace: namespace, ..Default::default() };
        resolve(given, c, None).unwrap()
    }

    #[test]
    fn the_flag_wins_then_the_environment_then_the_context_then_the_default() {
        let c = config();
        assert_eq!(resolve_with(Some("http://flag"), Some("http://env"), None, &c).server, "http://flag");
        assert_eq!(resolve_with(None, Some("http://env"), None, &c).server, "http://env");
        assert_eq!(resolve_with(None, None, None, &c).server, "http://dev:7070");
        assert_eq!(resolve_with(None, None, None, &Config::default()).server, "https://127.0.0.1:7070");
        // An empty value is no value.
        assert_eq!(resolve_with(Some(""), Some(""), None, &c).server, "http://dev:7070");
    }

    #[test]
    fn the_namespace_comes_from_the_flag_then_the_context_then_default() {
        let c = config();
        let ns = resolve_with(None, None, Some("mine"), &c).namespace;
        assert_eq!(ns, Namespace { name: "mine".into(), explicit: true });
        let ns = resolve_with(None, None, None, &c).namespace;
        assert_eq!(ns, Namespace { name: "team".into(), explicit: false });
        let bare = Config { current_context: "bare".into(), ..config() };
        let conn = resolve_with(None, None, None, &bare);
        assert_eq!(conn.namespace, Namespace { name: "default".into(), explicit: false });
        assert_eq!(conn.server, "https://127.0.0.1:7070");
    }

    #[test]
    fn the_token_is_the_environments_else_the_contexts_for_its_own_server_only() {
        let c = config();
        assert_eq!(resolve_with(None, None, None, &c).token.as_deref(), Some("dev-token"));
        // The same server written another way still gets it.
        assert_eq!(resolve_with(Some("http://DEV:7070/"), None, None, &c).token.as_deref(), Some("dev-token"));
        // Another server does not get the context's token.
        assert_eq!(resolve_with(Some("http://elsewhere:7070"), None, None, &c).token, None);
        assert_eq!(resolve_with(None, Some("http://elsewhere:7070"), Some("ns"), &c).token, None);
        // STRATUS_TOKEN goes wherever the command goes.
        let given =
            Overrides { flag_server: Some("http://elsewhere"), env_token: Some("env-token"), ..Default::default() };
        assert_eq!(resolve(given, &c, None).unwrap().token.as_deref(), Some("env-token"));
        let given = Overrides { env_token: Some(""), ..Default::default() };
        assert_eq!(resolve(given, &c, None).unwrap().token.as_deref(), Some("dev-token"));
        assert_eq!(resolve_with(None, None, None, &Config::default()).token, None);
        // Debug output never shows it.
        assert!(!format!("{:?}", resolve_with(None, None, None, &c)).contains("dev-token"));
    }

    #[test]
    fn a_dangling_current_context_is_an_error_unless_unused() {
        let c = Config { current_context: "gone".into(), ..config() };
        let given = Overrides::default();
        let err = resolve(given, &c, Some(Path::new("/x/config"))).unwrap_err();
        assert_eq!(
            err.to_string(),
            r#"/x/config: the current context "gone" does not exist; see `stratus config get-contexts`"#
        );
        let conn = resolve_with(Some("http://s"), None, Some("ns"), &c);
        assert_eq!(conn.token, None);
    }

    #[test]
    fn a_login_goes_to_the_current_context_of_its_server_or_a_new_one() {
        // The current context is for this server: the login is kept there.
        let mut c = config();
        c.login_context("http://dev:7070/").token = "new".into();
        assert_eq!(c.current_context, "dev");
        assert_eq!(c.context("dev").unwrap().token, "new");
        assert_eq!(c.contexts.len(), 2);

        // Another server: a new context named after it, made current; the old one is untouched.
        let mut c = config();
        let made = c.login_context("https://stratus.example.com:7070");
        assert_eq!(made.name, "stratus.example.com:7070");
        made.token = "remote".into();
        assert_eq!(c.current_context, "stratus.example.com:7070");
        assert_eq!(c.context("dev").unwrap().token, "dev-token");

        // A context of that server that is not current is reused and made current.
        let mut c = config();
        c.current_context = "bare".into();
        c.contexts[1].server = "http://other:1".into();
        assert_eq!(c.login_context("http://dev:7070").name, "dev");
        assert_eq!(c.current_context, "dev");

        // A current context with no server yet takes the server.
        let mut c = Config { current_context: "bare".into(), ..config() };
        assert_eq!(c.login_context("http://127.0.0.1:7070").server, "http://127.0.0.1:7070");
        assert_eq!(c.current_context, "bare");

        // The name a new context would get is taken by another server's context.
        let mut c = Config {
            current_context: String::new(),
            contexts: vec![Context { name: "h:1".into(), server: "http://elsewhere".into(), ..Default::default() }],
        };
        assert_eq!(c.login_context("http://h:1").name, "h:1-2");
        assert_eq!(c.context("h:1").unwrap().server, "http://elsewhere");
    }

    #[test]
    fn the_file_round_trips_and_a_missing_file_is_empty() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub").join("config");
        assert_eq!(Config::load(Some(&path)).unwrap(), Config::default());
        config().save(&path).unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(text.contains("current-context: dev"), "{text}");
        assert!(text.contains("  token: dev-token\n") && text.contains("  user: alice\n"), "{text}");
        // Empty fields are left out.
        assert!(!text.contains("token: ''") && !text.contains("token: \"\""), "{text}");
        assert_eq!(Config::load(Some(&path)).unwrap(), config());
    }

    #[cfg(unix)]
    #[test]
    fn the_file_is_readable_by_its_owner_only() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config");
        // A file from before tokens were kept, readable by all: saving makes it private.
        std::fs::write(&path, "contexts: []\n").unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        config().save(&path).unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "{mode:o}");
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

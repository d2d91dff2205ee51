//! What can go wrong in a command, worded for the person at the terminal.
//!
//! Every failure is reported as lines starting `error: `; [`Error::Many`] carries several
//! (every invalid document of a manifest, every object a command could not act on).

use std::io::Write;

use stratus_client::Error as ClientError;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The API server did not answer: the one thing most users hit first, so the message says
    /// what to do about it.
    #[error("cannot reach the Stratus API at {endpoint} — is it running? start it with `stratus up`")]
    Unreachable { endpoint: String },
    /// The server refused the token, or there was none: the other thing every user hits, said
    /// with what to do. Holds the server's reason, without its own advice.
    #[error("not logged in or the token has expired ({}): run `stratus login`", without_advice(.0))]
    Unauthenticated(String),
    /// `stratus login` was refused: wrong name or password.
    #[error("login failed: {0}")]
    LoginFailed(String),
    /// There is no token to show or to present: nobody logged in to this context.
    #[error("not logged in to {server}: run `stratus login --server {server}`, or set STRATUS_TOKEN")]
    NoToken { server: String },
    #[error("the server doesn't have a resource type {0:?}")]
    UnknownKind(String),
    #[error("{}", not_found(plural, name, namespace.as_deref()))]
    NotFound { plural: &'static str, name: String, namespace: Option<String> },
    /// The server refused a request about one object, named as `service/hello` (and, for
    /// objects from a manifest, the file).
    #[error("{object}: {}", api_message(source))]
    Object { object: String, source: ClientError },
    /// The server refused a request about no object in particular (a list, a watch).
    #[error("{}", api_message(.0))]
    Api(ClientError),
    /// The command line asks for something impossible.
    #[error("{0}")]
    Usage(String),
    #[error("the path {0:?} does not exist")]
    PathNotFound(String),
    #[error("cannot read {path:?}: {source}")]
    Read { path: String, source: std::io::Error },
    /// One invalid document of a manifest; `document` counts from 1, as people do.
    #[error("{file}: document {document}: {reason}")]
    Document { file: String, document: usize, reason: String },
    /// The config file cannot be read, parsed or written, or names a context that is not there.
    #[error("{path}: {reason}")]
    Config { path: String, reason: String },
    #[error("timed out waiting for the condition on {0}")]
    TimedOut(String),
    /// An object was deleted while `wait` waited for one of its conditions.
    #[error("{0} was deleted while waiting for the condition")]
    Deleted(String),
    /// `stratus up` could not open its store, listen, or serve.
    #[error("{0}")]
    Up(String),
    /// `stratus bench` could not do what it was asked (a service without a URL, a chart).
    #[error("{0}")]
    Bench(String),
    #[error("cannot write {path:?}: {source}")]
    Write { path: String, source: std::io::Error },
    #[error("cannot write the output: {0}")]
    Output(#[from] std::io::Error),
    /// A failure the command has already told in its own words (`auth can-i` saying `no`):
    /// nothing more is reported, the exit code is 1.
    #[error("")]
    Silent,
    /// Several failures, each reported on its own line.
    #[error("{}", .0.iter().map(ToString::to_string).collect::<Vec<_>>().join("; "))]
    Many(Vec<Error>),
}

impl Error {
    /// A refusal of the server about `object` (e.g. `service/hello`), or [`Error::Unreachable`]
    /// when the server could not be asked at all.
    pub fn object(object: impl Into<String>, err: ClientError) -> Error {
        match err {
            ClientError::Unavailable { endpoint, .. } => Error::Unreachable { endpoint },
            ClientError::Unauthenticated(reason) => Error::Unauthenticated(reason),
            source => Error::Object { object: object.into(), source },
        }
    }

    /// Folds several failures into one: none is no error, one is itself.
    pub fn from_many(mut errors: Vec<Error>) -> Result<(), Error> {
        match errors.len() {
            0 => Ok(()),
            1 => Err(errors.remove(0)),
            _ => Err(Error::Many(errors)),
        }
    }

    /// Whether this failure makes every further request pointless (the server is gone, or
    /// will not take the token).
    pub fn is_fatal(&self) -> bool {
        matches!(self, Error::Unreachable { .. } | Error::Unauthenticated(_))
    }

    /// Writes the failure as `error: ` lines.
    pub fn report(&self, w: &mut dyn Write) {
        match self {
            Error::Many(errors) => errors.iter().for_each(|e| e.report(w)),
            Error::Silent => {}
            // The reader went away (`stratus get svc | head -1`): nobody is left to tell.
            Error::Output(e) if e.kind() == std::io::ErrorKind::BrokenPipe => {}
            other => {
                // The message may carry the server's own text; keep the report one line per failure.
                let line = other.to_string().replace('\n', " ");
                let _ = writeln!(w, "error: {line}");
            }
        }
        let _ = w.flush();
    }
}

impl From<ClientError> for Error {
    fn from(err: ClientError) -> Error {
        match err {
            ClientError::Unavailable { endpoint, .. } => Error::Unreachable { endpoint },
            ClientError::Unauthenticated(reason) => Error::Unauthenticated(reason),
            other => Error::Api(other),
        }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// `services "nope" not found in namespace "default"`, or without the namespace for
/// cluster-scoped kinds: kubectl's `Error from server (NotFound)` wording, with the namespace
/// said out loud because looking in the wrong one is the usual cause.
fn not_found(plural: &str, name: &str, namespace: Option<&str>) -> String {
    match namespace {
        Some(ns) => format!("{plural} {name:?} not found in namespace {ns:?}"),
        None => format!("{plural} {name:?} not found"),
    }
}

/// The server's reason for refusing a token, without the advice it may end with (`…: run
/// \`stratus login\` to get a new one`), which the CLI gives in its own words.
fn without_advice(reason: &str) -> &str {
    match reason.find("stratus login") {
        Some(at) => reason[..at].rsplit_once(": ").map_or(reason, |(before, _)| before).trim(),
        None => reason.trim(),
    }
}

/// The server's reason, prefixed with what kind of refusal it is where the reason alone would
/// not say (a conflict reads like any other message otherwise).
fn api_message(err: &ClientError) -> String {
    match err {
        ClientError::Conflict(m) => format!("conflict: {m}"),
        ClientError::Forbidden(m) => format!("forbidden: {m}"),
        ClientError::AlreadyExists(m) => format!("already exists: {m}"),
        ClientError::Invalid(m) | ClientError::NotFound(m) | ClientError::Gone(m) | ClientError::TooLarge(m) => {
            m.clone()
        }
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reported(e: &Error) -> String {
        let mut buf = Vec::new();
        e.report(&mut buf);
        String::from_utf8_lossy(&buf).into_owned()
    }

    #[test]
    fn unreachable_server_says_what_to_do() {
        let e = Error::from(ClientError::Unavailable {
            endpoint: stratus_client::DEFAULT_SERVER.to_string(),
            message: "connection refused".into(),
        });
        assert_eq!(
            reported(&e),
            "error: cannot reach the Stratus API at https://127.0.0.1:7070 — is it running? start it with `stratus up`\n"
        );
    }

    #[test]
    fn a_refused_token_is_one_line_that_says_to_log_in() {
        let e = Error::from(ClientError::Unauthenticated(
            "the token has expired: run `stratus login` to get a new one".into(),
        ));
        assert_eq!(
            reported(&e),
            "error: not logged in or the token has expired (the token has expired): run `stratus login`\n"
        );
        assert!(e.is_fatal());
        let e = Error::object(
            "service/hello",
            ClientError::Unauthenticated("the token's signature does not verify".into()),
        );
        assert_eq!(
            e.to_string(),
            "not logged in or the token has expired (the token's signature does not verify): run `stratus login`"
        );
        let e = Error::Unauthenticated(
            "no credentials: log in with `stratus login` and send `Authorization: Bearer TOKEN`".into(),
        );
        assert_eq!(e.to_string(), "not logged in or the token has expired (no credentials): run `stratus login`");
    }

    #[test]
    fn a_silent_failure_reports_nothing() {
        assert_eq!(reported(&Error::Silent), "");
    }

    #[test]
    fn not_found_names_the_namespace_when_there_is_one() {
        let e = Error::NotFound { plural: "services", name: "nope".into(), namespace: Some("default".into()) };
        assert_eq!(e.to_string(), r#"services "nope" not found in namespace "default""#);
        let e = Error::NotFound { plural: "nodes", name: "n1".into(), namespace: None };
        assert_eq!(e.to_string(), r#"nodes "n1" not found"#);
    }

    #[test]
    fn many_failures_are_one_line_each() {
        let e = Error::Many(vec![
            Error::Document { file: "a.yaml".into(), document: 1, reason: "metadata.name: is required".into() },
            Error::object("service/hello", ClientError::Conflict("the object changed".into())),
        ]);
        assert_eq!(
            reported(&e),
            "error: a.yaml: document 1: metadata.name: is required\nerror: service/hello: conflict: the object changed\n"
        );
    }

    #[test]
    fn a_refusal_about_an_object_becomes_unreachable_when_the_server_is_gone() {
        let e = Error::object(
            "service/hello",
            ClientError::Unavailable { endpoint: "http://x:1".into(), message: String::new() },
        );
        assert!(matches!(e, Error::Unreachable { ref endpoint } if endpoint == "http://x:1"));
        assert!(e.is_fatal());
    }

    #[test]
    fn a_closed_pipe_is_not_reported() {
        let e = Error::Output(std::io::Error::from(std::io::ErrorKind::BrokenPipe));
        assert_eq!(reported(&e), "");
    }

    #[test]
    fn from_many_keeps_a_single_error_as_is() {
        assert!(Error::from_many(vec![]).is_ok());
        assert!(matches!(Error::from_many(vec![Error::Usage("x".into())]), Err(Error::Usage(_))));
        assert!(matches!(
            Error::from_many(vec![Error::Usage("x".into()), Error::Usage("y".into())]),
            Err(Error::Many(_))
        ));
    }
}

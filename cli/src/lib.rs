//! `stratus`, the command-line tool of Stratus.
//!
//! It behaves the way kubectl, `kn` and `gcloud run` users expect: `apply -f`, `get`, `describe`,
//! `delete`, `wait`, with the same flags, output shapes and error wording where they make sense.
//! `stratus up` runs the API server in this process for local development. `stratus login`
//! keeps a token in the config file, which every other command presents (or `STRATUS_TOKEN`).
//!
//! The binary is a thin shell over [`parse`] and [`run`]: everything is reachable from tests,
//! with the process's standard streams and environment replaced by [`Io`] and [`Environment`].

use std::ffi::OsString;
use std::io::{IsTerminal, Read, Write};
use std::path::PathBuf;

use clap::Parser;

mod allocation;
pub mod args;
pub mod bench;
mod commands;
pub mod config;
mod describe;
mod down;
pub mod error;
pub mod format;
pub mod manifest;
mod output;
pub mod prompt;
mod table;
pub mod target;
pub mod up;

pub use args::Cli;
pub use error::Error;

/// The standard streams a command reads and writes; the process's own in the binary, buffers
/// in tests.
pub struct Io {
    pub stdin: Box<dyn Read + Send>,
    pub out: Box<dyn Write + Send>,
    pub err: Box<dyn Write + Send>,
    /// Whether `err` is a terminal, where progress can be redrawn in place.
    pub err_is_terminal: bool,
    /// Whether `out` is a terminal, where `stratus top` redraws its table in place.
    pub out_is_terminal: bool,
    /// Where a password is asked for without being shown: the controlling terminal in the
    /// binary; `None` where there is no one to ask (then `--password-stdin` is the way).
    pub prompt: Option<Box<dyn prompt::SecretPrompt>>,
}

impl Io {
    /// The process's stdin, stdout and stderr, and its controlling terminal for passwords.
    pub fn process() -> Io {
        Io {
            stdin: Box::new(std::io::stdin()),
            out: Box::new(std::io::stdout()),
            err: Box::new(std::io::stderr()),
            err_is_terminal: std::io::stderr().is_terminal(),
            out_is_terminal: std::io::stdout().is_terminal(),
            prompt: Some(Box::new(prompt::Tty)),
        }
    }
}

/// What the CLI takes from the process environment, gathered once so that tests can supply
/// their own without touching the real environment.
#[derive(Clone, Default)]
pub struct Environment {
    /// `STRATUS_SERVER`: the API server when `--server` is not given.
    pub server: Option<String>,
    /// The config file: `STRATUS_CONFIG`, else `~/.stratus/config`; `None` without a home.
    pub config_path: Option<PathBuf>,
    /// Where `stratus up` keeps its data without `--data-dir`: `STRATUS_DATA_DIR` (as for
    /// `stratus-apiserver`), else `~/.stratus/data`.
    pub data_dir: Option<PathBuf>,
    /// `STRATUS_TOKEN`: the bearer token to present, instead of the current context's (for
    /// scripts and CI, with a token from `stratus create token`).
    pub token: Option<String>,
    /// `STRATUS_CERTIFICATE_AUTHORITY` (or `--certificate-authority`): the CA bundle that
    /// verifies an `https://` server, instead of the context's `certificate-authority-data`.
    pub certificate_authority: Option<PathBuf>,
}

impl std::fmt::Debug for Environment {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the token itself.
        f.debug_struct("Environment")
            .field("server", &self.server)
            .field("config_path", &self.config_path)
            .field("data_dir", &self.data_dir)
            .field("token", &self.token.as_ref().map(|_| ".."))
            .field("certificate_authority", &self.certificate_authority)
            .finish()
    }
}

impl Environment {
    /// Reads `STRATUS_SERVER`, `STRATUS_CONFIG`, `STRATUS_DATA_DIR`, `STRATUS_TOKEN`,
    /// `STRATUS_CERTIFICATE_AUTHORITY` and `HOME`.
    /// Empty values count as unset, as a shell user who writes `STRATUS_SERVER= stratus get svc`
    /// means.
    pub fn from_process() -> Environment {
        let var = |name: &str| std::env::var_os(name).filter(|v| !v.is_empty());
        let home = var("HOME").map(PathBuf::from);
        let stratus_dir = home.map(|h| h.join(".stratus"));
        Environment {
            server: var("STRATUS_SERVER").and_then(|v| v.into_string().ok()),
            config_path: var("STRATUS_CONFIG")
                .map(PathBuf::from)
                .or_else(|| stratus_dir.as_ref().map(|d| d.join("config"))),
            data_dir: var("STRATUS_DATA_DIR").map(PathBuf::from).or_else(|| stratus_dir.map(|d| d.join("data"))),
            token: var("STRATUS_TOKEN").and_then(|v| v.into_string().ok()),
            certificate_authority: var("STRATUS_CERTIFICATE_AUTHORITY").map(PathBuf::from),
        }
    }
}

/// Parses the command line. On `--help`, `--version` or a usage error, clap's text is written
/// to `io` (help to stdout, errors to stderr) and the exit code to end with is returned.
pub fn parse<I, T>(args: I, io: &mut Io) -> Result<Cli, u8>
where
    I: IntoIterator<Item = T>,
    T: Into<OsString> + Clone,
{
    match Cli::try_parse_from(args) {
        Ok(cli) => Ok(cli),
        Err(e) => {
            let text = e.render().to_string();
            // Help and version are answers, not failures: stdout and exit 0, as clap does.
            let stream = if e.use_stderr() { &mut io.err } else { &mut io.out };
            // Nothing useful can be done if the terminal is gone.
            let _ = stream.write_all(text.as_bytes());
            let _ = stream.flush();
            Err(u8::try_from(e.exit_code()).unwrap_or(2))
        }
    }
}

/// Runs a parsed command line. Failures are reported on `io.err`, one `error: ` line each;
/// returns the process exit code (0 on success, 1 on failure).
pub async fn run(cli: Cli, env: &Environment, io: &mut Io) -> u8 {
    let result = commands::run(cli, env, io).await;
    let _ = io.out.flush();
    match result {
        Ok(()) => 0,
        Err(e) => {
            e.report(&mut io.err);
            1
        }
    }
}

/// [`parse`] then [`run`]: the whole of `stratus ARGS...` (the first item is the program name).
pub async fn run_args<I, T>(args: I, env: &Environment, io: &mut Io) -> u8
where
    I: IntoIterator<Item = T>,
    T: Into<OsString> + Clone,
{
    match parse(args, io) {
        Ok(cli) => run(cli, env, io).await,
        Err(code) => code,
    }
}

//! Runs `stratus` commands in process, against an in-process API server, with captured output.
#![allow(dead_code, unused_imports, clippy::unwrap_used, clippy::expect_used)]

use std::io::{Cursor, Write};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use stratus_cli::{Environment, Io};

pub use stratus_apiserver::testing::TestServer;

/// What a command printed and how it ended.
#[derive(Debug)]
pub struct Output {
    pub code: u8,
    pub out: String,
    pub err: String,
}

impl Output {
    /// Asserts success and returns stdout.
    #[track_caller]
    pub fn ok(&self) -> &str {
        assert_eq!(self.code, 0, "the command failed:\nstdout: {}\nstderr: {}", self.out, self.err);
        &self.out
    }

    /// Asserts failure and returns stderr.
    #[track_caller]
    pub fn failed(&self) -> &str {
        assert_eq!(self.code, 1, "the command did not fail:\nstdout: {}\nstderr: {}", self.out, self.err);
        &self.err
    }
}

/// A writer whose bytes the test reads afterwards.
#[derive(Clone, Default)]
pub struct Buf(Arc<Mutex<Vec<u8>>>);

impl Buf {
    pub fn text(&self) -> String {
        String::from_utf8(self.0.lock().unwrap().clone()).unwrap()
    }
}

impl Write for Buf {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(b);
        Ok(b.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// The CLI pointed at one server, with a config file of its own (absent until written).
pub struct Stratus {
    pub server: String,
    pub env: Environment,
    pub dir: tempfile::TempDir,
}

impl Stratus {
    pub fn new(server: &str) -> Stratus {
        let dir = tempfile::tempdir().unwrap();
        let env = Environment { server: None, config_path: Some(dir.path().join("config")), data_dir: None };
        Stratus { server: server.to_string(), env, dir }
    }

    /// `stratus --server SERVER ARGS...`
    pub async fn run(&self, args: &[&str]) -> Output {
        self.run_with_stdin(args, "").await
    }

    pub async fn run_with_stdin(&self, args: &[&str], stdin: &str) -> Output {
        let mut argv = vec!["stratus", "--server", self.server.as_str()];
        argv.extend_from_slice(args);
        self.run_exactly(&argv, stdin).await
    }

    /// `stratus ARGS...`, with no `--server`: the server comes from the config file.
    pub async fn run_bare(&self, args: &[&str]) -> Output {
        let mut argv = vec!["stratus"];
        argv.extend_from_slice(args);
        self.run_exactly(&argv, "").await
    }

    /// The command line as given: no `--server` added.
    pub async fn run_exactly(&self, argv: &[&str], stdin: &str) -> Output {
        let (out, err) = (Buf::default(), Buf::default());
        let mut io = Io {
            stdin: Box::new(Cursor::new(stdin.as_bytes().to_vec())),
            out: Box::new(out.clone()),
            err: Box::new(err.clone()),
            err_is_terminal: false,
        };
        let code = stratus_cli::run_args(argv, &self.env, &mut io).await;
        Output { code, out: out.text(), err: err.text() }
    }

    /// Writes a file in this CLI's temporary directory and returns its path.
    pub fn file(&self, name: &str, text: &str) -> String {
        let path = self.dir.path().join(name);
        std::fs::write(&path, text).unwrap();
        path.display().to_string()
    }
}

/// An example manifest of the repository, `manifests/NAME`.
pub fn example(name: &str) -> String {
    let path: PathBuf = [env!("CARGO_MANIFEST_DIR"), "..", "manifests", name].iter().collect();
    assert!(path.exists(), "{} is missing", path.display());
    path.display().to_string()
}

/// A Stratus Service manifest.
pub fn service(name: &str, image: &str) -> String {
    format!(
        "apiVersion: stratus.dev/v1\nkind: Service\nmetadata:\n  name: {name}\nspec:\n  template:\n    spec:\n      \
         containers:\n      - image: {image}\n"
    )
}

/// An address nothing listens on: a port just bound and released.
pub fn closed_endpoint() -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    drop(listener);
    format!("http://{addr}")
}

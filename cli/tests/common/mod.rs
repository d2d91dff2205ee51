//! Runs `stratus` commands in process, against an in-process API server, with captured output.
#![allow(dead_code, unused_imports, clippy::unwrap_used, clippy::expect_used)]

use std::io::{Cursor, Write};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use stratus_cli::prompt::SecretPrompt;
use stratus_cli::{Environment, Io};
use stratus_client::Client;

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
    /// A CLI no one is logged in to: it has no token.
    pub fn new(server: &str) -> Stratus {
        let dir = tempfile::tempdir().unwrap();
        let env = Environment { config_path: Some(dir.path().join("config")), ..Default::default() };
        Stratus { server: server.to_string(), env, dir }
    }

    /// A CLI presenting, as `STRATUS_TOKEN`, the token of the server's cluster-admin service
    /// account `stratus-system/test-admin`: what tests use unless they test identity itself.
    pub fn admin(server: &TestServer) -> Stratus {
        let mut cli = Stratus::new(&server.endpoint);
        cli.env.token = Some(server.token.clone());
        cli
    }

    /// The same CLI presenting `token` as `STRATUS_TOKEN` (`None`: not set).
    pub fn with_token(mut self, token: Option<&str>) -> Stratus {
        self.env.token = token.map(str::to_string);
        self
    }

    /// The config file, once a command has written it.
    pub fn config_path(&self) -> PathBuf {
        self.dir.path().join("config")
    }

    /// `stratus --server SERVER ARGS...`, with `answers` typed at the terminal, one per prompt.
    pub async fn run_answering(&self, args: &[&str], answers: &[&str]) -> Output {
        let mut argv = vec!["stratus", "--server", self.server.as_str()];
        argv.extend_from_slice(args);
        let prompt = Scripted(answers.iter().map(|a| a.to_string()).collect(), Arc::default());
        self.run_io(&argv, "", Some(Box::new(prompt))).await
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

    /// The command line as given: no `--server` added. There is no terminal to ask at.
    pub async fn run_exactly(&self, argv: &[&str], stdin: &str) -> Output {
        self.run_io(argv, stdin, None).await
    }

    async fn run_io(&self, argv: &[&str], stdin: &str, prompt: Option<Box<dyn SecretPrompt>>) -> Output {
        let (out, err) = (Buf::default(), Buf::default());
        let mut io = Io {
            stdin: Box::new(Cursor::new(stdin.as_bytes().to_vec())),
            out: Box::new(out.clone()),
            err: Box::new(err.clone()),
            err_is_terminal: false,
            out_is_terminal: false,
            prompt,
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

/// A terminal where someone types `answers`, one per prompt; the prompts shown are kept.
pub struct Scripted(pub Vec<String>, pub Arc<Mutex<Vec<String>>>);

impl SecretPrompt for Scripted {
    fn read_secret(&mut self, prompt: &str) -> std::io::Result<String> {
        self.1.lock().unwrap().push(prompt.to_string());
        if self.0.is_empty() {
            return Err(std::io::Error::new(std::io::ErrorKind::UnexpectedEof, "no more answers"));
        }
        Ok(self.0.remove(0))
    }
}

/// A client of the server as its cluster-admin service account.
pub fn admin_client(server: &TestServer) -> Client {
    Client::new(&server.endpoint).unwrap().with_token(&server.token)
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

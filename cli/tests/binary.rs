//! The `stratus` binary itself: exit codes, the process environment, stdin, signals, and
//! `stratus up` serving until it is told to stop.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::path::Path;
use std::process::{Child, ChildStdout, Command, Output, Stdio};

use common::{closed_endpoint, example};

/// `stratus ARGS...` with an environment of its own: a home and config in `home`, no
/// STRATUS_SERVER unless given.
fn stratus(home: &Path, args: &[&str]) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_stratus"));
    cmd.args(args)
        .env("HOME", home)
        .env("STRATUS_CONFIG", home.join("config"))
        .env_remove("STRATUS_SERVER")
        .env_remove("STRATUS_TOKEN")
        .env_remove("STRATUS_DATA_DIR")
        .env_remove("RUST_LOG");
    cmd
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Reads lines from a running `stratus up` until one contains `needle`; returns that line.
fn read_line_with(out: &mut BufReader<ChildStdout>, seen: &mut String, needle: &str) -> String {
    loop {
        let mut line = String::new();
        let n = out.read_line(&mut line).unwrap();
        assert!(n > 0, "stratus up ended before printing {needle:?}; it printed:\n{seen}");
        seen.push_str(&line);
        if line.contains(needle) {
            return line;
        }
    }
}

/// Asks a `stratus up` this test started to stop as a service manager would, and waits for
/// it; returns how it ended and what it printed after what was read.
fn terminate(mut server: Up) -> (std::process::ExitStatus, String) {
    let status = Command::new("kill").args(["-TERM", &server.child.id().to_string()]).status().unwrap();
    assert!(status.success(), "kill -TERM failed");
    let status = server.child.wait().unwrap();
    let mut rest = String::new();
    server.out.read_to_string(&mut rest).unwrap();
    (status, rest)
}

struct Up {
    child: Child,
    out: BufReader<ChildStdout>,
    seen: String,
    endpoint: String,
}

impl Drop for Up {
    /// A test that fails half-way must not leave its server running.
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Starts `stratus up` on a free port and waits until it says where it listens.
fn up(home: &Path, data: &Path, extra: &[&str]) -> Up {
    let data = data.display().to_string();
    // These tests are about the API side of `up`; the agent is covered end to end in e2e/.
    let mut args = vec![
        "up",
        "--no-agent",
        "--gateway-listen",
        "127.0.0.1:0",
        "--gateway-https-listen",
        "127.0.0.1:0",
        "--gateway-admin-listen",
        "127.0.0.1:0",
        "--controllers-metrics-listen",
        "127.0.0.1:0",
        "--listen",
        "127.0.0.1:0",
        "--data-dir",
        data.as_str(),
    ];
    args.extend_from_slice(extra);
    let mut child = stratus(home, &args).stdout(Stdio::piped()).stderr(Stdio::null()).spawn().unwrap();
    let mut out = BufReader::new(child.stdout.take().unwrap());
    let mut seen = String::new();
    let line = read_line_with(&mut out, &mut seen, "listening on ");
    let endpoint = line.split_whitespace().find(|w| w.starts_with("https://")).unwrap().to_string();
    Up { child, out, seen, endpoint }
}

#[test]
fn up_serves_applies_its_manifests_keeps_its_data_and_stops_on_sigterm() {
    let home = tempfile::tempdir().unwrap();
    let data = home.path().join("data");
    let mut server = up(home.path(), &data, &["-f", &example("hello.yaml")]);
    read_line_with(&mut server.out, &mut server.seen, "service/hello created");
    let password_file = data.join("admin-password");
    assert!(
        server.seen.contains(&format!(
            "This CLI is logged in as admin (cluster-admin), in the context \"{}\"; the admin's password is in {}\n",
            server.endpoint.trim_start_matches("https://"),
            password_file.display()
        )),
        "{}",
        server.seen
    );
    // Logged in, the current context is the server's: no STRATUS_SERVER needed.
    assert!(!server.seen.contains("export STRATUS_SERVER="), "{}", server.seen);
    let token = |home: &Path| {
        let config = stratus_cli::config::Config::load(Some(&home.join("config"))).unwrap();
        config.current(None).unwrap().map(|c| c.token.clone()).unwrap_or_default()
    };
    let first_token = token(home.path());
    assert!(!first_token.is_empty());

    // Another process reaches it with the context `up` wrote, as admin.
    let got = stratus(home.path(), &["get", "services"]).output().unwrap();
    assert!(got.status.success(), "{}", text(&got.stderr));
    assert!(text(&got.stdout).contains("\nhello "), "{}", text(&got.stdout));
    let got = stratus(home.path(), &["whoami", "-o", "json"]).output().unwrap();
    assert!(text(&got.stdout).contains("\"username\": \"admin\""), "{}", text(&got.stdout));

    // stdin is read for `-f -`.
    let mut apply = stratus(home.path(), &["--server", &server.endpoint, "apply", "-f", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let manifest = std::fs::read(example("knative-hello.yaml")).unwrap();
    apply.stdin.take().unwrap().write_all(&manifest).unwrap();
    let applied = apply.wait_with_output().unwrap();
    assert_eq!(text(&applied.stdout), "service/hello-knative created\n");

    let (status, rest) = terminate(server);
    assert!(status.success(), "stratus up exited with {status}");
    assert!(rest.ends_with("Stratus API stopped.\n"), "{rest}");

    // The data outlives the process, the admin too: the next start logs in with the password
    // kept in the data directory.
    let server = up(home.path(), &data, &[]);
    assert_ne!(token(home.path()), first_token);
    let got = stratus(home.path(), &["--server", &server.endpoint, "get", "svc", "-o", "name"]).output().unwrap();
    assert_eq!(text(&got.stdout), "service/hello\nservice/hello-knative\n");
    let (status, _) = terminate(server);
    assert!(status.success());

    // Without the password file, `up` still serves, and says how to log in.
    std::fs::remove_file(&password_file).unwrap();
    let mut server = up(home.path(), &data, &[]);
    let line = read_line_with(&mut server.out, &mut server.seen, "password");
    assert!(
        line.starts_with(&format!("The admin's password file {} cannot be read (", password_file.display())),
        "{line}"
    );
    assert!(line.contains("log in with `stratus login --server "), "{line}");
    let (status, _) = terminate(server);
    assert!(status.success());
}

#[test]
fn up_on_a_busy_address_says_so() {
    let home = tempfile::tempdir().unwrap();
    let busy = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = busy.local_addr().unwrap().to_string();
    let data = home.path().join("data").display().to_string();
    let out = stratus(
        home.path(),
        &["up", "--no-agent", "--gateway-listen", "127.0.0.1:0", "--listen", &addr, "--data-dir", &data],
    )
    .output()
    .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    assert!(err.starts_with(&format!("error: cannot listen on {addr}: ")), "{err}");
    assert!(err.contains("is another `stratus up` running?"), "{err}");
}

#[test]
fn an_unreachable_server_exits_1_with_one_line() {
    let home = tempfile::tempdir().unwrap();
    let endpoint = closed_endpoint();
    let out: Output = stratus(home.path(), &["get", "svc"]).env("STRATUS_SERVER", &endpoint).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(text(&out.stdout), "");
    assert_eq!(
        text(&out.stderr),
        format!("error: cannot reach the Stratus API at {endpoint} — is it running? start it with `stratus up`\n")
    );
}

#[test]
fn an_invalid_manifest_exits_1_without_contacting_the_server() {
    let home = tempfile::tempdir().unwrap();
    let path = home.path().join("bad.yaml");
    std::fs::write(&path, "apiVersion: stratus.dev/v1\nkind: Service\nmetadata:\n  name: Bad_Name\n").unwrap();
    // The server does not exist: the manifest is refused before any request would be made.
    let out = stratus(home.path(), &["apply", "-f", &path.display().to_string()])
        .env("STRATUS_SERVER", closed_endpoint())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    assert!(err.starts_with(&format!("error: {}: document 1: metadata.name: ", path.display())), "{err}");
    assert!(err.lines().all(|l| l.starts_with("error: ")), "{err}");
}

//! `stratus logs` end to end: the command, in process and as the binary, against an in-process
//! API server and real node agents (the agent's log service over a fake container runtime).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::io::Write;
use std::time::Duration;

use common::{Stratus, TestServer, closed_endpoint};
use stratus_agent::runtime::LogStream;
use stratus_api::v1::Service;
use stratus_client::Client;
use stratus_testkit::log_agent::{LogAgent, create_instance, register_node};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::sync::mpsc;

/// How long any one step may take before the test fails rather than hangs.
const STEP: Duration = Duration::from_secs(30);

/// Starts the agent of `node` and registers the Node with the server, as an agent does.
async fn start_agent(client: &Client, node: &str) -> LogAgent {
    let agent = LogAgent::start(node).await;
    agent.register(client).await;
    agent
}

/// A server, a CLI pointed at it, and the node `n1` with its agent.
async fn setup() -> (TestServer, Stratus, Client, LogAgent) {
    let server = TestServer::start().await;
    let cli = Stratus::admin(&server);
    let client = common::admin_client(&server);
    let agent = start_agent(&client, "n1").await;
    (server, cli, client, agent)
}

/// A writer that hands each write to the test as it happens.
struct Channel(mpsc::UnboundedSender<Vec<u8>>);

impl Write for Channel {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        // The test may have stopped reading; the command's output then goes nowhere.
        let _ = self.0.send(b.to_vec());
        Ok(b.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Reads from `rx` until the text so far contains `needle`.
async fn read_until(rx: &mut mpsc::UnboundedReceiver<Vec<u8>>, seen: &mut String, needle: &str) {
    while !seen.contains(needle) {
        let chunk = tokio::time::timeout(STEP, rx.recv())
            .await
            .unwrap_or_else(|_| panic!("no {needle:?} in time:\n{seen}"))
            .unwrap_or_else(|| panic!("output ended before {needle:?}:\n{seen}"));
        seen.push_str(&String::from_utf8_lossy(&chunk));
    }
}

#[tokio::test]
async fn an_instances_lines_are_printed_as_they_were_written() {
    let (_server, cli, client, agent) = setup().await;
    let inst = create_instance(&client, "web-1", "web", "n1").await;
    let id = agent.run(&inst, &["one", "two"]);
    agent.fake.log(&id, LogStream::Stderr, "three");

    assert_eq!(cli.run(&["logs", "web-1"]).await.ok(), "one\ntwo\nthree\n");
    assert_eq!(cli.run(&["logs", "instance/web-1", "--tail", "2"]).await.ok(), "two\nthree\n");
    assert_eq!(cli.run(&["logs", "inst/web-1", "--tail=0"]).await.ok(), "");
}

#[tokio::test]
async fn a_services_lines_are_prefixed_with_their_instance() {
    let (_server, cli, client, agent) = setup().await;
    let other = start_agent(&client, "n2").await;
    client.create(Service::with_image("web", "img")).await.unwrap();
    let w1 = create_instance(&client, "web-1", "web", "n1").await;
    let w2 = create_instance(&client, "web-2", "web", "n2").await;
    agent.run(&w1, &["a1", "a2"]);
    other.run(&w2, &["b1"]);

    let want = "[web-1] a1\n[web-1] a2\n[web-2] b1\n";
    assert_eq!(cli.run(&["logs", "service/web"]).await.ok(), want);
    assert_eq!(cli.run(&["logs", "svc/web", "--tail", "1"]).await.ok(), "[web-1] a2\n[web-2] b1\n");
}

#[tokio::test]
async fn follow_prints_new_lines_until_the_stream_ends() {
    let (server, cli, client, agent) = setup().await;
    let inst = create_instance(&client, "web-1", "web", "n1").await;
    let id = agent.run(&inst, &["before"]);
    let (tx, mut rx) = mpsc::unbounded_channel();
    let err = common::Buf::default();
    let mut io = stratus_cli::Io {
        stdin: Box::new(std::io::empty()),
        out: Box::new(Channel(tx)),
        err: Box::new(err.clone()),
        err_is_terminal: false,
        out_is_terminal: false,
        prompt: None,
    };
    let argv = ["stratus", "--server", cli.server.as_str(), "logs", "-f", "web-1"];
    let follow = stratus_cli::run_args(argv, &cli.env, &mut io);
    let drive = async {
        let mut seen = String::new();
        read_until(&mut rx, &mut seen, "before\n").await;
        // The backlog came through, so the agent is reading live: this line can only come live.
        agent.fake.log(&id, LogStream::Stdout, "after");
        read_until(&mut rx, &mut seen, "after\n").await;
        assert_eq!(seen, "before\nafter\n");
        // A server shutting down ends the stream; the command then ends as a success.
        drop(server);
    };
    let (code, ()) = tokio::time::timeout(STEP, async { tokio::join!(follow, drive) }).await.expect("follow ends");
    assert_eq!((code, err.text()), (0, String::new()));
}

#[tokio::test]
async fn what_has_no_logs_yet_is_one_clear_line() {
    let (_server, cli, client, _agent) = setup().await;
    create_instance(&client, "pending", "web", "").await;
    let out = cli.run(&["logs", "pending"]).await;
    assert_eq!(out.failed(), "error: instance default/pending is not scheduled to a node yet\n");
    create_instance(&client, "starting", "web", "n1").await;
    let out = cli.run(&["logs", "starting"]).await;
    assert_eq!(out.failed(), "error: instance default/starting has no container on node n1 (yet)\n");
    let out = cli.run(&["logs", "nope", "-f"]).await;
    assert_eq!(out.failed(), "error: instances \"nope\" not found in namespace \"default\"\n");
    let out = cli.run(&["logs", "svc/nope", "-n", "default"]).await;
    assert_eq!(out.failed(), "error: services \"nope\" not found in namespace \"default\"\n");
    let out = cli.run(&["logs", "rev/web-00001"]).await;
    assert_eq!(
        out.failed(),
        "error: logs are kept for instances and services, not for revisions: use instance/NAME or service/NAME\n"
    );
    assert_eq!(out.out, "");
}

#[tokio::test]
async fn an_agent_that_cannot_be_reached_is_not_taken_for_the_api_server() {
    let (_server, cli, client, _agent) = setup().await;
    let endpoint = closed_endpoint();
    register_node(&client, "n9", &endpoint).await;
    create_instance(&client, "web-1", "web", "n9").await;
    let out = cli.run(&["logs", "web-1"]).await;
    let err = out.failed();
    assert!(err.starts_with(&format!("error: cannot reach the agent of node n9 at {endpoint}: ")), "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ctrl_c_ends_a_follow_cleanly() {
    let (server, _cli, client, agent) = setup().await;
    let inst = create_instance(&client, "web-1", "web", "n1").await;
    agent.run(&inst, &["before"]);
    let home = tempfile::tempdir().unwrap();
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_stratus"))
        .args(["--server", &server.endpoint, "logs", "-f", "web-1"])
        .env("HOME", home.path())
        .env("STRATUS_CONFIG", home.path().join("config"))
        .env("STRATUS_TOKEN", &server.token)
        .env_remove("STRATUS_SERVER")
        .env_remove("RUST_LOG")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut out = BufReader::new(child.stdout.take().unwrap()).lines();
    // The handler is installed before anything is printed: once a line shows, Ctrl-C is caught.
    let first = tokio::time::timeout(STEP, out.next_line()).await.expect("a line in time").unwrap();
    assert_eq!(first.as_deref(), Some("before"));
    let pid = child.id().unwrap().to_string();
    let sent = tokio::process::Command::new("kill").args(["-INT", &pid]).status().await.unwrap();
    assert!(sent.success(), "kill -INT failed");
    let status = tokio::time::timeout(STEP, child.wait()).await.expect("stratus logs ends on Ctrl-C").unwrap();
    let mut err = String::new();
    tokio::io::AsyncReadExt::read_to_string(&mut child.stderr.take().unwrap(), &mut err).await.unwrap();
    assert!(status.success(), "{status}: {err}");
    assert_eq!(err, "");
    assert_eq!(out.next_line().await.unwrap(), None);
}

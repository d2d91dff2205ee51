//! Logs through the API server from real node agents (the agent's own log service over a fake
//! container runtime), over gRPC and HTTP.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use common::TestServer;
use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::Client as HttpClient;
use hyper_util::rt::TokioExecutor;
use stratus_agent::logs::LogService;
use stratus_agent::runtime::LogStream;
use stratus_agent::runtime::fake::FakeRuntime;
use stratus_api::v1::resource_service_client::ResourceServiceClient;
use stratus_api::v1::{LogLine, LogsRequest, ObjectKey, Service};
use stratus_client::Client;
use stratus_testkit::log_agent::{LogAgent, create_instance, register_node, run_container};
use tokio::sync::oneshot;
use tonic::Streaming;

/// How long any one step may take before the test fails rather than hangs.
const STEP: Duration = Duration::from_secs(30);

async fn open(
    s: &TestServer,
    kind: &str,
    name: &str,
    follow: bool,
    tail: Option<i64>,
) -> Result<Streaming<LogLine>, tonic::Status> {
    let mut grpc = ResourceServiceClient::connect(s.endpoint.clone()).await.unwrap();
    let key = ObjectKey { kind: kind.into(), namespace: String::new(), name: name.into() };
    let mut req = tonic::Request::new(LogsRequest { key: Some(key), follow, tail_lines: tail });
    req.metadata_mut().insert("authorization", format!("Bearer {}", s.token).parse().unwrap());
    Ok(grpc.logs(req).await?.into_inner())
}

/// Every line of a stream that ends, as (instance, line).
async fn read_all(
    s: &TestServer,
    kind: &str,
    name: &str,
    tail: Option<i64>,
) -> Result<Vec<(String, String)>, tonic::Status> {
    let mut stream = open(s, kind, name, false, tail).await?;
    let mut lines = Vec::new();
    while let Some(l) = tokio::time::timeout(STEP, stream.message()).await.expect("the stream ends")? {
        lines.push((l.instance, l.line));
    }
    Ok(lines)
}

async fn next(stream: &mut Streaming<LogLine>) -> LogLine {
    tokio::time::timeout(STEP, stream.message()).await.expect("a line in time").unwrap().expect("the stream goes on")
}

fn pairs(items: &[(&str, &str)]) -> Vec<(String, String)> {
    items.iter().map(|(a, b)| (a.to_string(), b.to_string())).collect()
}

struct Cluster {
    server: TestServer,
    client: Client,
    agent: LogAgent,
}

/// A server with the Node `n1`, whose agent runs.
async fn cluster() -> Cluster {
    let server = TestServer::start().await;
    common::present(&server.token);
    let client = Client::new(&server.endpoint).unwrap().with_token(&server.token);
    let agent = LogAgent::start_reviewed("n1", &client).await;
    register_node(&client, "n1", &agent.endpoint).await;
    Cluster { server, client, agent }
}

#[tokio::test]
async fn an_instances_logs_come_from_its_nodes_agent_with_tail() {
    let Cluster { server, client, agent } = cluster().await;
    let inst = create_instance(&client, "web-1", "web", "n1").await;
    let id = agent.run(&inst, &["one", "two"]);
    agent.fake.log(&id, LogStream::Stderr, "three");

    let all = read_all(&server, "Instance", "web-1", None).await.unwrap();
    assert_eq!(all, pairs(&[("web-1", "one"), ("web-1", "two"), ("web-1", "three")]));
    let mut tail = open(&server, "inst", "web-1", false, Some(2)).await.unwrap();
    let (a, b) = (next(&mut tail).await, next(&mut tail).await);
    assert_eq!(
        (a.line.as_str(), a.stream.as_str(), b.line.as_str(), b.stream.as_str()),
        ("two", "stdout", "three", "stderr")
    );
    assert!(a.time.is_some_and(|t| t.seconds > 0));
    assert!(tokio::time::timeout(STEP, tail.message()).await.unwrap().unwrap().is_none());
}

#[tokio::test]
async fn a_followed_instance_delivers_lines_written_after_the_call() {
    let Cluster { server, client, agent } = cluster().await;
    let inst = create_instance(&client, "web-1", "web", "n1").await;
    let id = agent.run(&inst, &["before"]);
    let mut stream = open(&server, "instance", "web-1", true, None).await.unwrap();
    assert_eq!(next(&mut stream).await.line, "before");
    // The backlog came through, so the agent is reading live: this line can only come live.
    agent.fake.log(&id, LogStream::Stdout, "after");
    assert_eq!(next(&mut stream).await.line, "after");

    // Shutting the server down ends the followed stream cleanly, so its connection drains.
    drop(server);
    assert!(tokio::time::timeout(STEP, stream.message()).await.expect("the stream ends").unwrap().is_none());
}

#[tokio::test]
async fn a_services_logs_merge_its_instances_on_several_nodes() {
    let Cluster { server, client, agent } = cluster().await;
    let other = LogAgent::start_reviewed("n2", &client).await;
    register_node(&client, "n2", &other.endpoint).await;
    client.create(Service::with_image("web", "img")).await.unwrap();
    let (w1, w2) =
        (create_instance(&client, "web-1", "web", "n1").await, create_instance(&client, "web-2", "web", "n2").await);
    // Neither scheduled yet nor given a container yet: no logs, and no failure either.
    create_instance(&client, "web-3", "web", "").await;
    create_instance(&client, "web-4", "web", "n1").await;
    let elsewhere = create_instance(&client, "api-1", "api", "n1").await;
    let (id1, id2) = (agent.run(&w1, &["a1", "a2"]), other.run(&w2, &["b1"]));
    agent.run(&elsewhere, &["not this service"]);

    // Without follow: one instance after another, in name order.
    let all = read_all(&server, "svc", "web", None).await.unwrap();
    assert_eq!(all, pairs(&[("web-1", "a1"), ("web-1", "a2"), ("web-2", "b1")]));
    let tail = read_all(&server, "Service", "web", Some(1)).await.unwrap();
    assert_eq!(tail, pairs(&[("web-1", "a2"), ("web-2", "b1")]));

    // Following: lines of both as they come.
    let mut stream = open(&server, "services", "web", true, Some(0)).await.unwrap();
    agent.fake.log(&id1, LogStream::Stdout, "a3");
    let first = next(&mut stream).await;
    assert_eq!((first.instance.as_str(), first.line.as_str()), ("web-1", "a3"));
    other.fake.log(&id2, LogStream::Stdout, "b2");
    let second = next(&mut stream).await;
    assert_eq!((second.instance.as_str(), second.line.as_str()), ("web-2", "b2"));
}

#[tokio::test]
async fn what_cannot_be_read_is_refused_with_a_reason() {
    let Cluster { server, client, agent: _agent } = cluster().await;
    let code_and_message = |r: Result<Streaming<LogLine>, tonic::Status>| {
        let status = r.expect_err("refused");
        (status.code(), status.message().to_string())
    };

    create_instance(&client, "pending", "web", "").await;
    assert_eq!(
        code_and_message(open(&server, "instance", "pending", false, None).await),
        (tonic::Code::FailedPrecondition, "instance default/pending is not scheduled to a node yet".to_string())
    );
    create_instance(&client, "starting", "web", "n1").await;
    assert_eq!(
        code_and_message(open(&server, "instance", "starting", false, None).await),
        (tonic::Code::NotFound, "instance default/starting has no container on node n1 (yet)".to_string())
    );
    let (code, message) = code_and_message(open(&server, "instance", "nope", false, None).await);
    assert_eq!(code, tonic::Code::NotFound);
    assert_eq!(message, r#"instances "nope" not found in namespace "default""#);
    let (code, message) = code_and_message(open(&server, "svc", "nope", false, None).await);
    assert_eq!(
        (code, message.as_str()),
        (tonic::Code::NotFound, r#"services "nope" not found in namespace "default""#)
    );
    client.create(Service::with_image("idle", "img")).await.unwrap();
    let (code, message) = code_and_message(open(&server, "svc", "idle", false, None).await);
    assert_eq!(code, tonic::Code::FailedPrecondition);
    assert!(message.contains("service default/idle has no instances"), "{message}");

    let (code, message) = code_and_message(open(&server, "nodes", "n1", false, None).await);
    assert_eq!(
        (code, message.as_str()),
        (tonic::Code::InvalidArgument, "logs are kept for instances and services, not for nodes")
    );
    let (code, message) = code_and_message(open(&server, "instance", "starting", false, Some(-1)).await);
    assert_eq!((code, message.as_str()), (tonic::Code::InvalidArgument, "tailLines: -1 is negative; give 0 or more"));
}

#[tokio::test]
async fn an_agent_that_cannot_be_reached_is_named_with_its_endpoint() {
    let server = TestServer::start().await;
    common::present(&server.token);
    let client = Client::new(&server.endpoint).unwrap().with_token(&server.token);
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let endpoint = format!("http://{}", listener.local_addr().unwrap());
    drop(listener);
    register_node(&client, "n9", &endpoint).await;
    create_instance(&client, "web-1", "web", "n9").await;

    let status = open(&server, "instance", "web-1", false, None).await.expect_err("refused");
    assert_eq!(status.code(), tonic::Code::Unavailable);
    assert!(
        status.message().starts_with(&format!("cannot reach the agent of node n9 at {endpoint}: ")),
        "{}",
        status.message()
    );
    // Through the typed client this is the server's answer, not a server that is down.
    match client.logs("instance", "", "web-1", false, None).await {
        Err(stratus_client::Error::ServiceUnavailable(m)) => assert!(m.contains("node n9"), "{m}"),
        Err(other) => panic!("{other:?}"),
        Ok(_) => panic!("logs of an unreachable agent"),
    }
}

#[tokio::test]
async fn the_http_log_route_streams_plain_text() {
    let Cluster { server, client, agent } = cluster().await;
    client.create(Service::with_image("web", "img")).await.unwrap();
    let inst = create_instance(&client, "web-1", "web", "n1").await;
    let id = agent.run(&inst, &["one", "two", "three"]);
    create_instance(&client, "pending", "web", "").await;
    let base = format!("{}/apis/stratus.dev/v1/namespaces/default", server.endpoint);

    let reply = common::get(&format!("{base}/instances/web-1/log?tailLines=2")).await;
    assert_eq!((reply.status, reply.text.as_str()), (200, "two\nthree\n"));
    let reply = common::get(&format!("{base}/services/web/log")).await;
    assert_eq!((reply.status, reply.text.as_str()), (200, "[web-1] one\n[web-1] two\n[web-1] three\n"));
    let reply = common::get(&format!("{base}/instances/pending/log")).await;
    assert_eq!(reply.status, 400);
    assert_eq!(reply.body["message"], "instance default/pending is not scheduled to a node yet");
    let reply = common::get(&format!("{base}/instances/web-1/log?tailLines=x")).await;
    assert_eq!(reply.status, 400, "{}", reply.text);
    let reply = common::get(&format!("{base}/instances/nope/log")).await;
    assert_eq!(reply.status, 404);
    let reply = common::request("DELETE", &format!("{base}/instances/web-1/log"), None).await;
    assert_eq!(reply.status, 405);

    // follow=true keeps the response open and sends lines as they come.
    let http = HttpClient::builder(TokioExecutor::new()).build_http::<Empty<bytes::Bytes>>();
    let req = hyper::Request::get(format!("{base}/instances/web-1/log?follow=true&tailLines=1"))
        .header("authorization", format!("Bearer {}", server.token))
        .body(Empty::new())
        .unwrap();
    let resp = tokio::time::timeout(STEP, http.request(req)).await.unwrap().unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["content-type"], "text/plain; charset=utf-8");
    let mut body = resp.into_body();
    let mut seen = String::new();
    let mut read_until = async |needle: &str| {
        while !seen.contains(needle) {
            let frame = tokio::time::timeout(STEP, body.frame()).await.unwrap().expect("the body goes on").unwrap();
            seen.push_str(&String::from_utf8_lossy(&frame.into_data().unwrap_or_default()));
        }
        seen.clone()
    };
    assert_eq!(read_until("three\n").await, "three\n");
    agent.fake.log(&id, LogStream::Stdout, "four");
    assert_eq!(read_until("four\n").await, "three\nfour\n");
}

#[tokio::test]
async fn an_agent_failing_is_named_whether_it_answers_or_goes_away() {
    let Cluster { server, client, agent } = cluster().await;
    let inst = create_instance(&client, "web-1", "web", "n1").await;
    agent.run(&inst, &["one"]);
    agent.fake.set_unreachable(Some("the docker socket is gone"));
    let status = open(&server, "instance", "web-1", false, None).await.expect_err("refused");
    assert_eq!(status.code(), tonic::Code::Unavailable);
    assert!(status.message().contains("the docker socket is gone"), "{}", status.message());
    assert!(
        status.message().ends_with(&format!("(answered by the agent of node n1 at {})", agent.endpoint)),
        "{}",
        status.message()
    );

    // An agent whose process ends while a follow is open: its runtime, connections and all,
    // lives on a thread of its own that the test ends.
    let fake = FakeRuntime::new();
    let (addr_tx, addr_rx) = oneshot::channel();
    let (kill, killed) = oneshot::channel::<()>();
    let agent_fake = fake.clone();
    let thread = std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        rt.block_on(async move {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            addr_tx.send(listener.local_addr().unwrap()).unwrap();
            let service = LogService::new(std::sync::Arc::new(agent_fake), "n2".into()).into_server();
            let serve = tonic::transport::Server::builder()
                .add_service(service)
                .serve_with_incoming(tonic::transport::server::TcpIncoming::from(listener));
            tokio::select! {
                _ = serve => {}
                _ = killed => {}
            }
        });
        // Dropping the runtime drops every connection task with it, closing the sockets.
    });
    let endpoint = format!("http://{}", addr_rx.await.unwrap());
    register_node(&client, "n2", &endpoint).await;
    let doomed = create_instance(&client, "web-2", "web", "n2").await;
    run_container(&fake, "n2", &doomed, &["before"]);
    let mut stream = open(&server, "instance", "web-2", true, None).await.unwrap();
    assert_eq!(next(&mut stream).await.line, "before");
    kill.send(()).unwrap();
    tokio::task::spawn_blocking(move || thread.join().unwrap()).await.unwrap();
    let status = tokio::time::timeout(STEP, stream.message()).await.expect("the stream ends").expect_err("an error");
    assert_eq!(status.code(), tonic::Code::Unavailable, "{status:?}");
    assert!(
        status.message().starts_with(&format!("lost the connection to the agent of node n2 at {endpoint}: ")),
        "{}",
        status.message()
    );
}

/// The agents answer the API server only: a direct call without a token, or with a token of
/// any other account, is refused, while the API's relay (above) goes through.
#[tokio::test]
async fn agents_answer_only_the_api_server() {
    let Cluster { server, client, agent } = cluster().await;
    let inst = create_instance(&client, "web-1", "web", "n1").await;
    agent.run(&inst, &["secret"]);
    let direct = |token: Option<String>| {
        let endpoint = agent.endpoint.clone();
        async move {
            let channel = tonic::transport::Endpoint::from_shared(endpoint).unwrap().connect().await.unwrap();
            let mut c = stratus_api::v1::node_agent_client::NodeAgentClient::new(channel);
            let mut req = tonic::Request::new(stratus_api::v1::AgentLogsRequest {
                namespace: "default".into(),
                instance: "web-1".into(),
                ..Default::default()
            });
            if let Some(t) = token {
                req.metadata_mut().insert("authorization", format!("Bearer {t}").parse().unwrap());
            }
            c.logs(req).await.map(|_| ())
        }
    };
    assert_eq!(direct(None).await.unwrap_err().code(), tonic::Code::Unauthenticated);
    assert_eq!(direct(Some("garbage".into())).await.unwrap_err().code(), tonic::Code::Unauthenticated);
    let gateway = server.identity.component_token("gateway", "system:gateway", "").await.unwrap()();
    assert_eq!(direct(Some(gateway)).await.unwrap_err().code(), tonic::Code::PermissionDenied);
    assert_eq!(direct(Some(server.token.clone())).await.unwrap_err().code(), tonic::Code::PermissionDenied);
    let relayed = read_all(&server, "Instance", "web-1", None).await.unwrap();
    assert_eq!(relayed, pairs(&[("web-1", "secret")]));
}

/// Rewrites the status of Node `name` with `change`, as a (misbehaving) agent could.
async fn set_node_status(client: &Client, name: &str, change: impl FnOnce(&mut stratus_api::v1::NodeStatus)) {
    let mut node = client.get::<stratus_api::v1::Node>("", name).await.unwrap();
    change(node.status.get_or_insert_with(Default::default));
    client.update_status(node).await.unwrap();
}

/// A listener that must never be connected to: the server refuses before it dials, so nothing
/// may be in its accept queue (a dial would have completed the handshake before the answer).
struct Decoy(std::net::TcpListener);

impl Decoy {
    fn bind(ip: &str) -> Decoy {
        let listener = std::net::TcpListener::bind((ip, 0)).unwrap();
        listener.set_nonblocking(true).unwrap();
        Decoy(listener)
    }

    fn port(&self) -> u16 {
        self.0.local_addr().unwrap().port()
    }

    fn assert_untouched(&self) {
        let accepted = self.0.accept();
        assert!(
            matches!(&accepted, Err(e) if e.kind() == std::io::ErrorKind::WouldBlock),
            "the server dialled the decoy: {accepted:?}"
        );
    }
}

#[tokio::test]
async fn the_server_dials_only_a_ready_nodes_agent_at_one_of_its_addresses() {
    let Cluster { server, client, agent } = cluster().await;
    let inst = create_instance(&client, "web-1", "web", "n1").await;
    agent.run(&inst, &["hello"]);
    assert_eq!(read_all(&server, "Instance", "web-1", None).await.unwrap(), pairs(&[("web-1", "hello")]));

    // Another loopback address (all of 127/8 is local on Linux) that the node did not publish.
    let elsewhere = Decoy::bind("127.0.0.2");
    let here = Decoy::bind("127.0.0.1");
    let refusals = [
        (
            format!("http://127.0.0.2:{}", elsewhere.port()),
            "its host 127.0.0.2 is not one of the node's addresses (127.0.0.1, n1)".to_string(),
        ),
        (
            format!("http://127.0.0.1:{}/v2/keys", here.port()),
            "an agent endpoint has no path, query or fragment".into(),
        ),
        (format!("http://127.0.0.1:{}?x=1", here.port()), "an agent endpoint has no path, query or fragment".into()),
        (format!("http://admin:pw@127.0.0.1:{}", here.port()), "it carries user information".into()),
    ];
    for (endpoint, why) in refusals {
        set_node_status(&client, "n1", |s| s.agent_endpoint = endpoint.clone()).await;
        let status = open(&server, "instance", "web-1", false, None).await.expect_err("refused");
        assert_eq!(
            (status.code(), status.message()),
            (
                tonic::Code::FailedPrecondition,
                format!("node n1's agent endpoint {endpoint:?} is refused: {why}").as_str()
            ),
        );
    }
    // A Service's logs fail the same way, naming the instance, rather than leave it out.
    client.create(Service::with_image("web", "img")).await.unwrap();
    let status = open(&server, "svc", "web", false, None).await.expect_err("refused");
    assert_eq!(status.code(), tonic::Code::FailedPrecondition);
    assert!(status.message().starts_with("instance web-1: node n1's agent endpoint"), "{}", status.message());
    elsewhere.assert_untouched();
    here.assert_untouched();

    // A node that is not Ready is not dialled, even at an endpoint that would be accepted.
    let endpoint = agent.endpoint.clone();
    set_node_status(&client, "n1", |s| {
        s.agent_endpoint = format!("http://127.0.0.1:{}", here.port());
        s.conditions[0].status = "False".into();
        s.conditions[0].reason = "RuntimeUnavailable".into();
        s.conditions[0].message = "docker is down".into();
    })
    .await;
    let status = open(&server, "instance", "web-1", false, None).await.expect_err("refused");
    assert_eq!(
        (status.code(), status.message()),
        (
            tonic::Code::FailedPrecondition,
            "instance default/web-1 is on node n1, which is not Ready: its Ready condition is False \
             (RuntimeUnavailable: docker is down)"
        )
    );
    let reply =
        common::get(&format!("{}/apis/stratus.dev/v1/namespaces/default/instances/web-1/log", server.endpoint)).await;
    assert_eq!(reply.status, 400, "{}", reply.text);
    // A Service's instances on such a node have no logs now, like those not scheduled yet.
    let status = open(&server, "svc", "web", false, None).await.expect_err("refused");
    assert_eq!(
        (status.code(), status.message()),
        (tonic::Code::FailedPrecondition, "no instance of service default/web has a container on a node yet")
    );
    here.assert_untouched();

    // Ready again at its own endpoint: served.
    set_node_status(&client, "n1", |s| *s = stratus_testkit::log_agent::node_status("n1", &endpoint)).await;
    assert_eq!(read_all(&server, "Instance", "web-1", None).await.unwrap(), pairs(&[("web-1", "hello")]));
}

/// A server over TLS holding the cluster CA, its client (trusting the CA), and the CA.
async fn tls_cluster() -> (TestServer, Client, std::sync::Arc<stratus_auth::pki::Ca>) {
    let server = TestServer::start_tls(stratus_apiserver::Config::default()).await;
    let ca = server.ca.clone().expect("a server over TLS holds the CA");
    let client = Client::with_ca(&server.endpoint, Some(ca.cert_pem().as_bytes())).unwrap().with_token(&server.token);
    (server, client, ca)
}

/// A channel to the agent at `endpoint` trusting `ca`, verifying the agent as node `node`, and
/// presenting `identity`.
fn agent_channel(
    endpoint: &str,
    ca: &stratus_auth::pki::Ca,
    node: &str,
    identity: &stratus_client::tls::ClientIdentity,
) -> tonic::transport::Channel {
    stratus_client::tls::channel(endpoint, ca.cert_pem().as_bytes(), identity, Some(node), |e| e).unwrap()
}

/// Asks the agent directly for the logs of `instance`, as whoever `identity` is.
async fn ask_agent(
    channel: tonic::transport::Channel,
    instance: &stratus_api::v1::Instance,
) -> Result<Vec<String>, tonic::Status> {
    use stratus_api::Resource;
    let meta = instance.meta();
    let req = stratus_api::v1::AgentLogsRequest {
        namespace: meta.namespace.clone(),
        instance: meta.name.clone(),
        instance_uid: meta.uid.clone(),
        follow: false,
        tail_lines: None,
    };
    let mut client = stratus_api::v1::node_agent_client::NodeAgentClient::new(channel);
    let mut stream = tokio::time::timeout(STEP, client.logs(req)).await.expect("the agent answers")?.into_inner();
    let mut lines = Vec::new();
    while let Some(l) = tokio::time::timeout(STEP, stream.message()).await.expect("the stream ends")? {
        lines.push(l.line);
    }
    Ok(lines)
}

#[tokio::test]
async fn over_tls_an_agent_answers_only_the_api_servers_certificate() {
    use stratus_api::identity::{APISERVER_USER, APISERVERS_GROUP, NODES_GROUP, node_user};
    use stratus_auth::pki::Usage;
    use stratus_client::tls::ClientIdentity;
    let (_server, client, ca) = tls_cluster().await;
    let agent = LogAgent::start_tls("n1", "n1", &ca).await;
    assert!(agent.endpoint.starts_with("https://"), "{}", agent.endpoint);
    register_node(&client, "n1", &agent.endpoint).await;
    let inst = create_instance(&client, "web-1", "web", "n1").await;
    agent.run(&inst, &["one", "two"]);

    // Through the API server, which dials the agent with its own certificate.
    use futures::StreamExt;
    let stream = client.logs("Instance", "default", "web-1", false, None).await.unwrap();
    let lines: Vec<String> = stream.map(|l| l.unwrap().line).collect().await;
    assert_eq!(lines, ["one", "two"]);

    let hour = Duration::from_secs(3600);
    // No client certificate: the handshake passes (metrics need none) but the call is refused.
    let none = ClientIdentity::default();
    let err = ask_agent(agent_channel(&agent.endpoint, &ca, "n1", &none), &inst).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::Unauthenticated, "{err:?}");
    assert!(err.message().contains("no client certificate"), "{err:?}");
    // A node's certificate from the cluster CA: not the API server's.
    let node = ca.issue_client_and_server(&node_user("n2"), NODES_GROUP, &["n2".into()], hour).unwrap();
    let node = ClientIdentity::new(node.cert_pem.as_bytes(), node.key_pem.as_bytes()).unwrap();
    let err = ask_agent(agent_channel(&agent.endpoint, &ca, "n1", &node), &inst).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::PermissionDenied, "{err:?}");
    assert!(err.message().contains("system:node:n2") && err.message().contains(APISERVER_USER), "{err:?}");
    // The API server's name from another CA: the handshake fails.
    let stranger = stratus_auth::pki::Ca::generate().unwrap();
    let names = [APISERVER_USER.to_string(), APISERVERS_GROUP.to_string()];
    let forged = stranger.issue(Usage::Client, &names, hour).unwrap();
    let forged = ClientIdentity::new(forged.cert_pem.as_bytes(), forged.key_pem.as_bytes()).unwrap();
    assert!(ask_agent(agent_channel(&agent.endpoint, &ca, "n1", &forged), &inst).await.is_err());
    // The API server's certificate from the cluster CA is answered.
    let apiserver = ca.issue(Usage::Client, &names, hour).unwrap();
    let apiserver = ClientIdentity::new(apiserver.cert_pem.as_bytes(), apiserver.key_pem.as_bytes()).unwrap();
    let lines = ask_agent(agent_channel(&agent.endpoint, &ca, "n1", &apiserver), &inst).await.unwrap();
    assert_eq!(lines, ["one", "two"]);
}

#[tokio::test]
async fn over_tls_the_api_server_refuses_an_agent_with_another_nodes_certificate() {
    let (_server, client, ca) = tls_cluster().await;
    // The agent at n1's endpoint shows node n2's certificate.
    let impostor = LogAgent::start_tls("n1", "n2", &ca).await;
    register_node(&client, "n1", &impostor.endpoint).await;
    let inst = create_instance(&client, "web-1", "web", "n1").await;
    impostor.run(&inst, &["secret"]);
    let err = client.logs("Instance", "default", "web-1", false, None).await.err().expect("refused");
    let message = err.to_string();
    assert!(matches!(err, stratus_client::Error::ServiceUnavailable(_)), "{err:?}");
    assert!(message.contains("node n1") && message.contains("not node n1's"), "{message}");
    assert!(message.contains("system:node:n2"), "{message}");

    // Nor is a plain-HTTP agent dialled by a server that speaks TLS to agents.
    let plain = LogAgent::start("n3").await;
    register_node(&client, "n3", &plain.endpoint).await;
    create_instance(&client, "web-3", "web", "n3").await;
    let err = client.logs("Instance", "default", "web-3", false, None).await.err().expect("refused");
    assert!(matches!(err, stratus_client::Error::FailedPrecondition(_)), "{err:?}");
    assert!(err.to_string().contains("only over https"), "{err}");
}

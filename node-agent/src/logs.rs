//! The agent's side of `stratus logs`: `stratus.v1.NodeAgent/Logs`.
//!
//! The API server finds the node an Instance is bound to and asks that node's agent; the agent
//! finds the Instance's container by the labels it put on it (see [`labels`]) and relays what
//! the container runtime reads, line by line. The agent keeps no log state of its own: the
//! container engine is the store of record.
//!
//! What it relays of one instance is bounded ([`LogLimits`]): a line is cut at a length (by the
//! runtime, which must not hold more of a line than that), and of each second of the
//! instance's output only so many lines pass; the rest are dropped, and a notice line says how
//! many. Seconds are those of the lines' own timestamps, so every reader of an instance's logs,
//! following or not, sees the same lines dropped.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use futures::StreamExt;
use futures::stream::BoxStream;
use stratus_api::Timestamp;
use stratus_api::identity::APISERVER_USER;
use stratus_api::v1::node_agent_server::{NodeAgent, NodeAgentServer};
use stratus_api::v1::{AgentLogsRequest, LogLine};
use tokio::sync::watch;
use tonic::{Request, Response, Status};

use crate::runtime::{self, ContainerStatus, LogOptions, LogStream, Runtime, labels};

/// The lines of one `Logs` call; the stream ends with an error status if reading fails midway.
pub type LogLines = BoxStream<'static, Result<LogLine, Status>>;

/// What the agent relays of one instance's output.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LogLimits {
    /// Longer lines are cut here and marked (see [`runtime::cut_line`]).
    pub max_line_bytes: usize,
    /// At most this many lines of each second of the instance's output; 0 = no limit.
    pub lines_per_second: u32,
}

impl Default for LogLimits {
    /// 16 KiB lines, 1000 lines a second.
    fn default() -> LogLimits {
        LogLimits { max_line_bytes: runtime::DEFAULT_MAX_LINE_BYTES, lines_per_second: 1000 }
    }
}

/// How the logs service tells the API server from anyone else.
#[derive(Clone)]
enum Callers {
    /// By its token, checked with the API (plain HTTP).
    Review(Arc<stratus_client::review::TokenReview>),
    /// By its client certificate (TLS).
    ApiServerCertificate,
}

/// Serves the logs of the containers on one node. Cheap to clone.
#[derive(Clone)]
pub struct LogService {
    runtime: Arc<dyn Runtime>,
    node_name: String,
    /// Turns true when the agent shuts down; every stream ends then.
    shutdown: Option<watch::Receiver<bool>>,
    /// Who may call: the API server only, when set.
    callers: Option<Callers>,
    limits: LogLimits,
}

impl LogService {
    /// Serves the logs of the containers `runtime` runs for the node `node_name`: only
    /// containers labelled with this node are ever read.
    pub fn new(runtime: Arc<dyn Runtime>, node_name: String) -> LogService {
        LogService { runtime, node_name, shutdown: None, callers: None, limits: LogLimits::default() }
    }

    /// Relays what `limits` let through instead of the defaults.
    pub fn with_limits(mut self, limits: LogLimits) -> LogService {
        self.limits = limits;
        self
    }

    /// Answers only callers `review` lets in (the API server's account): for an agent served
    /// in plain HTTP, with no certificates.
    pub fn with_review(mut self, review: Arc<stratus_client::review::TokenReview>) -> LogService {
        self.callers = Some(Callers::Review(review));
        self
    }

    /// Answers only callers that presented the API server's client certificate (common name
    /// [`APISERVER_USER`]), which the server's TLS configuration verified against the cluster
    /// CA; the server must put the connection's `Peer` in the requests
    /// (`stratus_support::server::serve_tower_with_peer`).
    pub fn with_apiserver_certificate(mut self) -> LogService {
        self.callers = Some(Callers::ApiServerCertificate);
        self
    }

    /// Ends every stream, followed ones included, once `shutdown` holds true: a followed
    /// stream never ends by itself while its container runs, and would otherwise hold a
    /// graceful shutdown of the agent's server open for good.
    pub fn with_shutdown(mut self, shutdown: watch::Receiver<bool>) -> LogService {
        self.shutdown = Some(shutdown);
        self
    }

    /// The service, ready for `tonic::transport::Server::builder().add_service(…)`.
    pub fn into_server(self) -> NodeAgentServer<LogService> {
        NodeAgentServer::new(self)
    }

    /// The container of `namespace/instance` on this node. Several may exist (an Instance
    /// deleted and recreated under the same name, a restart that made a new container): one
    /// of the Instance with `uid` is preferred when `uid` is given and one exists, then the
    /// most recently started.
    ///
    /// Fails with NOT_FOUND when there is none, which is also the case between the scheduler
    /// binding the Instance and the agent creating its container.
    async fn find(&self, namespace: &str, instance: &str, uid: &str) -> Result<ContainerStatus, Status> {
        let selector =
            [(labels::NAMESPACE, namespace), (labels::INSTANCE, instance), (labels::NODE, self.node_name.as_str())];
        let found = self.runtime.list(&selector).await.map_err(|e| {
            runtime_status(
                &e,
                &format!("listing the containers of instance {namespace}/{instance} on node {}", self.node_name),
            )
        })?;
        let of_uid = |c: &ContainerStatus| c.labels.get(labels::INSTANCE_UID).is_some_and(|u| u == uid);
        let prefer_uid = !uid.is_empty() && found.iter().any(of_uid);
        found
            .into_iter()
            .filter(|c| !prefer_uid || of_uid(c))
            // `None` (never started) sorts first, so a started container wins.
            .max_by_key(|c| c.started_at)
            .ok_or_else(|| {
                Status::not_found(format!(
                    "instance {namespace}/{instance} has no container on node {} (yet)",
                    self.node_name
                ))
            })
    }
}

#[tonic::async_trait]
impl NodeAgent for LogService {
    type LogsStream = LogLines;

    /// Streams the output of the Instance's container: the last `tail_lines` lines (all when
    /// unset), then, with `follow`, new lines until the container stops or the caller hangs up.
    async fn logs(&self, req: Request<AgentLogsRequest>) -> Result<Response<LogLines>, Status> {
        match &self.callers {
            None => {}
            Some(Callers::Review(review)) => {
                review.check(req.metadata()).await?;
            }
            Some(Callers::ApiServerCertificate) => {
                let subject = stratus_client::tls::caller_subject(&req)?;
                if subject.common_name != APISERVER_USER {
                    return Err(Status::permission_denied(format!(
                        "the agent of node {} answers only the API server ({APISERVER_USER}), not {:?}",
                        self.node_name, subject.common_name
                    )));
                }
            }
        }
        let AgentLogsRequest { namespace, instance, instance_uid, follow, tail_lines } = req.into_inner();
        if namespace.is_empty() || instance.is_empty() {
            return Err(Status::invalid_argument("namespace and instance: both are required"));
        }
        let tail = match tail_lines {
            None => None,
            Some(n) => Some(
                u64::try_from(n)
                    .map_err(|_| Status::invalid_argument(format!("tail_lines: {n} is negative; give 0 or more")))?,
            ),
        };
        let container = self.find(&namespace, &instance, &instance_uid).await?;
        let what = format!(
            "reading the logs of instance {namespace}/{instance} (container {}) on node {}",
            container.id, self.node_name
        );
        tracing::debug!(%namespace, %instance, container = %container.id, follow, ?tail, "streaming logs");
        let lines = self
            .runtime
            .logs(&container.id, LogOptions { follow, tail, max_line_bytes: self.limits.max_line_bytes })
            .await
            .map_err(|e| runtime_status(&e, &what))?;
        let lines = rate_limited(lines, self.limits.lines_per_second).map(move |item| match item {
            Ok(l) => Ok(LogLine {
                instance: instance.clone(),
                stream: stream_name(l.stream).to_string(),
                line: l.line,
                time: l.timestamp.and_then(timestamp),
            }),
            Err(e) => Err(runtime_status(&e, &what)),
        });
        let Some(mut shutdown) = self.shutdown.clone() else {
            return Ok(Response::new(lines.boxed()));
        };
        let shut_down = async move {
            // A dropped sender means the agent is gone as well.
            let _ = shutdown.wait_for(|down| *down).await;
        };
        Ok(Response::new(lines.take_until(shut_down).boxed()))
    }
}

/// How long a notice of dropped lines waits for the next line before it is sent alone: a
/// followed stream that goes quiet after a burst still says what it dropped.
const NOTICE_DELAY: Duration = Duration::from_secs(1);

/// `lines` with at most `per_second` lines of each second (by their timestamps; a line without
/// one counts when it is read) passed on; the others are dropped, and counted in a notice line
/// (on stderr) sent before the next line of a later second, after [`NOTICE_DELAY`] without
/// one, or at the end. `per_second` 0 passes everything.
pub fn rate_limited(
    lines: BoxStream<'static, runtime::Result<runtime::LogLine>>,
    per_second: u32,
) -> BoxStream<'static, runtime::Result<runtime::LogLine>> {
    if per_second == 0 {
        return lines;
    }
    struct State {
        lines: BoxStream<'static, runtime::Result<runtime::LogLine>>,
        /// The second being counted (since 1970), and how many of its lines passed.
        second: u64,
        passed: u32,
        /// Lines dropped and not yet reported, and when the first of them was written.
        dropped: u64,
        dropped_at: Option<SystemTime>,
        /// A line held back while the notice before it goes out.
        held: Option<runtime::Result<runtime::LogLine>>,
        done: bool,
    }
    impl State {
        fn notice(&mut self, per_second: u32) -> Option<runtime::Result<runtime::LogLine>> {
            if self.dropped == 0 {
                return None;
            }
            let line = format!(
                "[stratus: {} line(s) dropped: the instance wrote more than {per_second} lines in a second]",
                self.dropped
            );
            self.dropped = 0;
            Some(Ok(runtime::LogLine { stream: LogStream::Stderr, line, timestamp: self.dropped_at.take() }))
        }
    }
    let state = State { lines, second: 0, passed: 0, dropped: 0, dropped_at: None, held: None, done: false };
    futures::stream::unfold(state, move |mut st| async move {
        loop {
            if let Some(line) = st.held.take() {
                return Some((line, st));
            }
            if st.done {
                return st.notice(per_second).map(|n| (n, st));
            }
            let next = if st.dropped > 0 {
                match tokio::time::timeout(NOTICE_DELAY, st.lines.next()).await {
                    Ok(next) => next,
                    Err(_) => return st.notice(per_second).map(|n| (n, st)),
                }
            } else {
                st.lines.next().await
            };
            let line = match next {
                None => {
                    st.done = true;
                    continue;
                }
                Some(Err(e)) => {
                    st.done = true;
                    st.held = Some(Err(e));
                    match st.notice(per_second) {
                        Some(n) => return Some((n, st)),
                        None => continue,
                    }
                }
                Some(Ok(line)) => line,
            };
            let at = line.timestamp.unwrap_or_else(SystemTime::now);
            let second = at.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
            if second != st.second {
                st.second = second;
                st.passed = 0;
            }
            if st.passed >= per_second {
                st.dropped += 1;
                st.dropped_at.get_or_insert(at);
                continue;
            }
            st.passed += 1;
            // The notice of what an earlier second dropped goes first.
            match st.notice(per_second) {
                Some(n) => {
                    st.held = Some(Ok(line));
                    return Some((n, st));
                }
                None => return Some((Ok(line), st)),
            }
        }
    })
    .boxed()
}

/// A runtime failure as a status: a missing container is NOT_FOUND, an engine that cannot be
/// reached UNAVAILABLE (both may pass), anything else INTERNAL. `what` names the step.
fn runtime_status(err: &runtime::Error, what: &str) -> Status {
    let message = format!("{what} failed: {err}");
    match err {
        runtime::Error::NotFound(_) => Status::not_found(message),
        runtime::Error::Unreachable { .. } => Status::unavailable(message),
        runtime::Error::Pull { .. } | runtime::Error::Engine(_) => Status::internal(message),
    }
}

fn stream_name(stream: LogStream) -> &'static str {
    match stream {
        LogStream::Stdout => "stdout",
        LogStream::Stderr => "stderr",
    }
}

/// `t` as a protobuf timestamp; `None` for a time before 1970, which no engine records.
fn timestamp(t: SystemTime) -> Option<Timestamp> {
    let since = t.duration_since(UNIX_EPOCH).ok()?;
    Some(Timestamp { seconds: i64::try_from(since.as_secs()).ok()?, nanos: i32::try_from(since.subsec_nanos()).ok()? })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use std::collections::BTreeMap;
    use std::time::Duration;

    use stratus_api::v1::node_agent_client::NodeAgentClient;
    use tokio::sync::oneshot;
    use tonic::transport::Channel;

    use super::*;
    use crate::runtime::ContainerConfig;
    use crate::runtime::fake::FakeRuntime;

    /// The agent's service over `fake` for node `n1`, on a loopback port; stops when dropped.
    struct Agent {
        client: NodeAgentClient<Channel>,
        _stop: oneshot::Sender<()>,
    }

    async fn serve(fake: &FakeRuntime) -> Agent {
        serve_service(LogService::new(Arc::new(fake.clone()), "n1".into())).await
    }

    async fn serve_service(service: LogService) -> Agent {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop, stopped) = oneshot::channel::<()>();
        let service = service.into_server();
        tokio::spawn(tonic::transport::Server::builder().add_service(service).serve_with_incoming_shutdown(
            tonic::transport::server::TcpIncoming::from(listener),
            async {
                let _ = stopped.await;
            },
        ));
        let client = NodeAgentClient::connect(format!("http://{addr}")).await.unwrap();
        Agent { client, _stop: stop }
    }

    /// A container of `default/{instance}` on `node`, as the agent labels it.
    fn container(instance: &str, uid: &str, node: &str) -> ContainerConfig {
        let labels: BTreeMap<String, String> = [
            (labels::NODE, node),
            (labels::NAMESPACE, "default"),
            (labels::INSTANCE, instance),
            (labels::INSTANCE_UID, uid),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        ContainerConfig { name: format!("stratus-{instance}-{uid}"), image: "img".into(), labels, ..Default::default() }
    }

    fn request(instance: &str, uid: &str, follow: bool, tail: Option<i64>) -> AgentLogsRequest {
        AgentLogsRequest {
            namespace: "default".into(),
            instance: instance.into(),
            instance_uid: uid.into(),
            follow,
            tail_lines: tail,
        }
    }

    async fn read_all(agent: &mut Agent, req: AgentLogsRequest) -> Result<Vec<LogLine>, Status> {
        let mut stream = agent.client.logs(req).await?.into_inner();
        let mut lines = Vec::new();
        while let Some(line) = stream.message().await? {
            lines.push(line);
        }
        Ok(lines)
    }

    fn texts(lines: &[LogLine]) -> Vec<&str> {
        lines.iter().map(|l| l.line.as_str()).collect()
    }

    #[tokio::test]
    async fn the_last_lines_of_the_instances_container_with_their_streams() {
        let fake = FakeRuntime::new();
        let id = fake.insert(container("web-1", "u1", "n1"), true);
        fake.log(&id, LogStream::Stdout, "one");
        fake.log(&id, LogStream::Stderr, "two");
        fake.log(&id, LogStream::Stdout, "three");
        let mut agent = serve(&fake).await;

        let all = read_all(&mut agent, request("web-1", "", false, None)).await.unwrap();
        assert_eq!(texts(&all), ["one", "two", "three"]);
        let tail = read_all(&mut agent, request("web-1", "u1", false, Some(2))).await.unwrap();
        assert_eq!(texts(&tail), ["two", "three"]);
        assert_eq!(tail[0].instance, "web-1");
        assert_eq!((tail[0].stream.as_str(), tail[1].stream.as_str()), ("stderr", "stdout"));
        assert!(tail.iter().all(|l| l.time.as_ref().is_some_and(|t| t.seconds > 0)), "{tail:?}");
        assert!(read_all(&mut agent, request("web-1", "", false, Some(0))).await.unwrap().is_empty());
    }

    #[tokio::test]
    async fn the_instances_own_and_newest_container_is_chosen_on_this_node_only() {
        let fake = FakeRuntime::new();
        let old = fake.insert(container("web-1", "u-old", "n1"), true);
        fake.log(&old, LogStream::Stdout, "old instance");
        let new = fake.insert(container("web-1", "u-new", "n1"), false);
        fake.log(&new, LogStream::Stdout, "new instance");
        fake.start(&new).await.unwrap();
        let elsewhere = fake.insert(container("web-1", "u-new", "n2"), true);
        fake.log(&elsewhere, LogStream::Stdout, "another node");
        let mut agent = serve(&fake).await;

        // No uid: the most recently started.
        let lines = read_all(&mut agent, request("web-1", "", false, None)).await.unwrap();
        assert_eq!(texts(&lines), ["new instance"]);
        // The uid of the older one: its container, although another started later.
        let lines = read_all(&mut agent, request("web-1", "u-old", false, None)).await.unwrap();
        assert_eq!(texts(&lines), ["old instance"]);
        // A uid no container carries: the newest of the name still answers.
        let lines = read_all(&mut agent, request("web-1", "u-unknown", false, None)).await.unwrap();
        assert_eq!(texts(&lines), ["new instance"]);
    }

    #[tokio::test]
    async fn following_delivers_lines_written_after_the_call() {
        let fake = FakeRuntime::new();
        let id = fake.insert(container("web-1", "u1", "n1"), true);
        fake.log(&id, LogStream::Stdout, "before");
        let mut agent = serve(&fake).await;
        let mut stream = agent.client.logs(request("web-1", "u1", true, None)).await.unwrap().into_inner();
        let first = tokio::time::timeout(Duration::from_secs(30), stream.message()).await.unwrap().unwrap();
        assert_eq!(first.map(|l| l.line).as_deref(), Some("before"));
        // The backlog arrived, so the stream is subscribed: this line can only come live.
        fake.log(&id, LogStream::Stderr, "after");
        let next = tokio::time::timeout(Duration::from_secs(30), stream.message()).await.unwrap().unwrap().unwrap();
        assert_eq!((next.line.as_str(), next.stream.as_str()), ("after", "stderr"));
    }

    #[tokio::test]
    async fn followed_streams_end_when_the_agent_shuts_down() {
        let fake = FakeRuntime::new();
        let id = fake.insert(container("web-1", "u1", "n1"), true);
        fake.log(&id, LogStream::Stdout, "before");
        let (shut_down, shutdown) = watch::channel(false);
        let mut agent =
            serve_service(LogService::new(Arc::new(fake.clone()), "n1".into()).with_shutdown(shutdown)).await;
        let mut stream = agent.client.logs(request("web-1", "u1", true, None)).await.unwrap().into_inner();
        let first = tokio::time::timeout(Duration::from_secs(30), stream.message()).await.unwrap().unwrap();
        assert_eq!(first.map(|l| l.line).as_deref(), Some("before"));
        shut_down.send(true).unwrap();
        let end = tokio::time::timeout(Duration::from_secs(30), stream.message()).await.expect("the stream ends");
        assert!(end.unwrap().is_none());
    }

    #[tokio::test]
    async fn an_instance_without_a_container_is_not_found_and_says_so() {
        let fake = FakeRuntime::new();
        fake.insert(container("web-1", "u1", "n2"), true);
        let mut agent = serve(&fake).await;
        let err = read_all(&mut agent, request("web-1", "u1", false, None)).await.unwrap_err();
        assert_eq!(err.code(), tonic::Code::NotFound);
        assert_eq!(err.message(), "instance default/web-1 has no container on node n1 (yet)");
    }

    #[tokio::test]
    async fn bad_requests_and_a_down_engine_are_named() {
        let fake = FakeRuntime::new();
        let mut agent = serve(&fake).await;
        let err = read_all(&mut agent, request("web-1", "", false, Some(-1))).await.unwrap_err();
        assert_eq!(err.code(), tonic::Code::InvalidArgument);
        assert!(err.message().contains("tail_lines: -1 is negative"), "{}", err.message());
        let err = read_all(&mut agent, request("", "", false, None)).await.unwrap_err();
        assert_eq!(err.code(), tonic::Code::InvalidArgument);

        fake.set_unreachable(Some("connection refused"));
        let err = read_all(&mut agent, request("web-1", "", false, None)).await.unwrap_err();
        assert_eq!(err.code(), tonic::Code::Unavailable);
        assert!(err.message().contains("instance default/web-1 on node n1"), "{}", err.message());
        assert!(err.message().contains("connection refused"), "{}", err.message());
    }

    fn at(seconds: u64, millis: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(seconds) + Duration::from_millis(millis)
    }

    fn stamped(text: &str, time: SystemTime) -> runtime::Result<runtime::LogLine> {
        Ok(runtime::LogLine { stream: LogStream::Stdout, line: text.into(), timestamp: Some(time) })
    }

    fn texts_of(lines: &[runtime::Result<runtime::LogLine>]) -> Vec<String> {
        lines.iter().map(|l| l.as_ref().map_or_else(|e| format!("error: {e}"), |l| l.line.clone())).collect()
    }

    #[tokio::test]
    async fn each_second_passes_its_share_and_a_notice_counts_the_rest() {
        let mut input: Vec<_> = (0..5).map(|i| stamped(&format!("a{i}"), at(10, i * 100))).collect();
        input.push(stamped("b0", at(11, 0)));
        input.extend((0..4).map(|i| stamped(&format!("c{i}"), at(12, i))));
        let out: Vec<_> = rate_limited(futures::stream::iter(input).boxed(), 2).collect().await;
        let notice =
            |n: u32| format!("[stratus: {n} line(s) dropped: the instance wrote more than 2 lines in a second]");
        assert_eq!(texts_of(&out), ["a0", "a1", &notice(3), "b0", "c0", "c1", &notice(2)]);
        // The notice is on stderr, stamped with the first line it stands for.
        let first_notice = out[2].as_ref().unwrap();
        assert_eq!((first_notice.stream, first_notice.timestamp), (LogStream::Stderr, Some(at(10, 200))));

        // An error ends the stream after the notice of what was dropped before it.
        let input = vec![
            stamped("a0", at(10, 0)),
            stamped("a1", at(10, 1)),
            Err(runtime::Error::Engine("gone".into())),
            stamped("never", at(10, 2)),
        ];
        let out: Vec<_> = rate_limited(futures::stream::iter(input).boxed(), 1).collect().await;
        let notice = "[stratus: 1 line(s) dropped: the instance wrote more than 1 lines in a second]";
        assert_eq!(texts_of(&out), ["a0", notice, "error: gone"]);

        // 0: no limit.
        let input: Vec<_> = (0..50).map(|i| stamped("x", at(10, i))).collect();
        assert_eq!(rate_limited(futures::stream::iter(input).boxed(), 0).count().await, 50);
    }

    #[tokio::test(start_paused = true)]
    async fn a_followed_stream_that_goes_quiet_still_reports_what_it_dropped() {
        let (send, receive) = futures::channel::mpsc::unbounded();
        let mut limited = rate_limited(receive.boxed(), 1);
        for i in 0..3 {
            send.unbounded_send(stamped(&format!("l{i}"), at(10, i))).unwrap();
        }
        assert_eq!(limited.next().await.unwrap().unwrap().line, "l0");
        // Nothing more comes; after a second of quiet the notice comes by itself.
        let started = tokio::time::Instant::now();
        let notice = limited.next().await.unwrap().unwrap();
        assert!(notice.line.starts_with("[stratus: 2 line(s) dropped"), "{notice:?}");
        assert_eq!(started.elapsed(), NOTICE_DELAY);
        // The stream goes on.
        send.unbounded_send(stamped("later", at(20, 0))).unwrap();
        assert_eq!(limited.next().await.unwrap().unwrap().line, "later");
    }

    #[tokio::test]
    async fn the_service_relays_within_the_limits() {
        let fake = FakeRuntime::new();
        let id = fake.insert(container("web-1", "u1", "n1"), true);
        let start = SystemTime::now();
        for i in 0..10 {
            fake.log_at(&id, LogStream::Stdout, &format!("burst {i}"), start);
        }
        fake.log_at(&id, LogStream::Stdout, &"x".repeat(100), start + Duration::from_secs(1));
        let limits = LogLimits { max_line_bytes: 16, lines_per_second: 4 };
        let mut agent = serve_service(LogService::new(Arc::new(fake.clone()), "n1".into()).with_limits(limits)).await;
        let lines = read_all(&mut agent, request("web-1", "u1", false, None)).await.unwrap();
        let notice = "[stratus: 6 line(s) dropped: the instance wrote more than 4 lines in a second]";
        let cut = format!("{}{}", "x".repeat(16), runtime::cut_marker(16));
        assert_eq!(texts(&lines), ["burst 0", "burst 1", "burst 2", "burst 3", notice, &cut]);
        assert_eq!(lines[4].stream, "stderr");
    }

    #[test]
    fn times_before_1970_have_no_timestamp() {
        assert_eq!(timestamp(UNIX_EPOCH + Duration::new(5, 7)), Some(Timestamp { seconds: 5, nanos: 7 }));
        assert_eq!(timestamp(UNIX_EPOCH - Duration::from_secs(1)), None);
    }
}

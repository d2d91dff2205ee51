//! `stratus bench` end to end, in process, against a local HTTP server on 127.0.0.1 (and, for a
//! service target, an in-process API server whose service points at it).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use common::{Output, Stratus, TestServer, closed_endpoint};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use serde_json::Value;
use stratus_api::Resource;
use stratus_api::v1::{Container, Revision, RevisionSpec, RevisionStatus, Service, ServiceStatus};

/// What the test server saw.
#[derive(Default)]
struct Seen {
    requests: AtomicU64,
    in_flight: AtomicUsize,
    max_in_flight: AtomicUsize,
    last_host: std::sync::Mutex<String>,
}

/// An HTTP/1.1 server on 127.0.0.1: `?sleep_ms=N` answers after N ms; `?cycle` answers 200,
/// 429, 500 and 404 in turn, in the order requests arrive.
async fn http_server() -> (SocketAddr, Arc<Seen>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let seen = Arc::new(Seen::default());
    let state = seen.clone();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else { return };
            let state = state.clone();
            tokio::spawn(async move {
                let service = service_fn(move |req| answer(req, state.clone()));
                let _ = http1::Builder::new().serve_connection(TokioIo::new(stream), service).await;
            });
        }
    });
    (addr, seen)
}

async fn answer(req: Request<Incoming>, seen: Arc<Seen>) -> Result<Response<Full<Bytes>>, Infallible> {
    let n = seen.requests.fetch_add(1, Ordering::SeqCst);
    let now = seen.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
    seen.max_in_flight.fetch_max(now, Ordering::SeqCst);
    if let Some(host) = req.headers().get(hyper::header::HOST) {
        *seen.last_host.lock().unwrap() = host.to_str().unwrap_or_default().to_string();
    }
    let query = req.uri().query().unwrap_or_default().to_string();
    let mut status = 200;
    for pair in query.split('&') {
        match pair.split_once('=') {
            Some(("sleep_ms", ms)) => tokio::time::sleep(Duration::from_millis(ms.parse().unwrap())).await,
            _ if pair == "cycle" => status = [200, 429, 500, 404][(n % 4) as usize],
            _ => {}
        }
    }
    seen.in_flight.fetch_sub(1, Ordering::SeqCst);
    Ok(Response::builder().status(status).body(Full::new(Bytes::from_static(b"ok\n"))).unwrap())
}

/// The value of a `Name   value` line of the summary.
fn field<'a>(out: &'a str, name: &str) -> &'a str {
    out.lines().find_map(|l| l.strip_prefix(name)).unwrap_or_else(|| panic!("no {name} in:\n{out}")).trim()
}

/// The error counts of the summary, by class.
fn errors(out: &str) -> Vec<(String, u64)> {
    let lines: Vec<&str> = out.lines().collect();
    let at = lines.iter().position(|l| l.starts_with("ERRORS")).unwrap();
    let classes = lines[at].split_whitespace().skip(1);
    // The first cell is the total and its percentage.
    let counts = lines[at + 1].split_whitespace().skip(2);
    classes.zip(counts).map(|(c, n)| (c.to_string(), n.parse().unwrap())).collect()
}

fn error_count(out: &str, class: &str) -> u64 {
    errors(out).into_iter().find(|(c, _)| c == class).map(|(_, n)| n).unwrap()
}

/// The latency cells of the summary, in ms: p50, p90, p99, p99.9, max.
fn latencies(out: &str) -> Vec<f64> {
    let lines: Vec<&str> = out.lines().collect();
    let at = lines.iter().position(|l| l.starts_with("LATENCY")).unwrap();
    lines[at + 1].split_whitespace().skip(2).map(|c| c.trim_end_matches("ms").parse().unwrap()).collect()
}

async fn bench(cli: &Stratus, args: &[&str]) -> Output {
    let mut argv = vec!["bench"];
    argv.extend_from_slice(args);
    cli.run(&argv).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn open_loop_sends_on_schedule_and_writes_the_timeline_and_chart() {
    let (addr, seen) = http_server().await;
    let cli = Stratus::new(&closed_endpoint());
    let json = cli.dir.path().join("timeline.json");
    let svg = cli.dir.path().join("chart.svg");
    let url = format!("http://{addr}/ignored");
    let out = bench(
        &cli,
        &[
            &url,
            "--rate",
            "20",
            "-d",
            "2s",
            "--path",
            "/?sleep_ms=20",
            "--out-json",
            json.to_str().unwrap(),
            "--chart",
            svg.to_str().unwrap(),
        ],
    )
    .await;
    let stdout = out.ok();
    // Exactly rate × duration, every one answered: an open loop does not wait for answers.
    assert_eq!(seen.requests.load(Ordering::SeqCst), 40, "{stdout}");
    assert_eq!(field(stdout, "Requests"), "40 sent, 40 answered, 40 succeeded (100.00%)", "{stdout}");
    assert_eq!(field(stdout, "Target"), format!("http://{addr}/?sleep_ms=20"));
    let l = latencies(stdout);
    assert!(l[0] >= 20.0 && l[0] < 1000.0, "p50 {l:?}");
    assert!(l.windows(2).all(|w| w[0] <= w[1]), "percentiles out of order: {l:?}");
    assert!(errors(stdout).iter().all(|(_, n)| *n == 0), "{stdout}");
    // The progress lines went to stderr, plain (not a terminal), one a second.
    assert!(out.err.starts_with(&format!("Sending 20rps for 2s to http://{addr}/?sleep_ms=20\n")), "{}", out.err);
    assert!(out.err.lines().filter(|l| l.contains("offered 2")).count() >= 1, "{}", out.err);
    assert!(!out.err.contains('\r'));

    let timeline: Vec<Value> = serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    assert!((2..=3).contains(&timeline.len()), "{timeline:?}");
    let first = timeline[0]["offered_rps"].as_f64().unwrap();
    assert!((10.0..=30.0).contains(&first), "first second offered {first}: {timeline:?}");
    for s in &timeline {
        for key in ["t", "offered_rps", "achieved_rps", "errors", "in_flight"] {
            assert!(s[key].is_number(), "{key} in {s}");
        }
        assert!(s["ready_instances"].is_null() && s["desired_instances"].is_null(), "{s}");
        if let Some(p99) = s["p99_ms"].as_f64() {
            assert!(p99 >= 20.0, "{s}");
        }
    }
    let times: Vec<f64> = timeline.iter().map(|s| s["t"].as_f64().unwrap()).collect();
    assert!(times.windows(2).all(|w| w[0] < w[1]), "{times:?}");
    let svg = std::fs::read_to_string(&svg).unwrap();
    assert!(svg.starts_with("<svg") && svg.trim_end().ends_with("</svg>"));
    assert_eq!(svg.matches("<svg").count(), 1);
    assert!(svg.contains("<polyline") && svg.contains("p99 latency"), "{svg}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn closed_loop_keeps_that_many_requests_outstanding() {
    let (addr, seen) = http_server().await;
    let cli = Stratus::new(&closed_endpoint());
    let out = bench(&cli, &[&format!("http://{addr}"), "-c", "4", "-d", "1s", "--path", "/?sleep_ms=50"]).await;
    let stdout = out.ok();
    let sent = seen.requests.load(Ordering::SeqCst);
    // 4 workers, 50 ms a request, for a second: 80 at most, and far fewer only if the machine
    // is very busy.
    assert!((8..=84).contains(&sent), "{sent} requests:\n{stdout}");
    assert_eq!(seen.max_in_flight.load(Ordering::SeqCst), 4, "{stdout}");
    assert_eq!(field(stdout, "Requests"), format!("{sent} sent, {sent} answered, {sent} succeeded (100.00%)"));
    assert!(latencies(stdout)[0] >= 50.0, "{stdout}");
    assert!(out.err.contains("Sending 4 concurrent for 1s"), "{}", out.err);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn answers_are_classified_by_status() {
    let (addr, seen) = http_server().await;
    let cli = Stratus::new(&closed_endpoint());
    let out = bench(&cli, &[&format!("http://{addr}/?cycle"), "--stage", "1s:20rps", "--stage", "500ms:0"]).await;
    let stdout = out.ok();
    assert_eq!(seen.requests.load(Ordering::SeqCst), 20);
    assert_eq!(field(stdout, "Requests"), "20 sent, 20 answered, 5 succeeded (25.00%)", "{stdout}");
    let errors = errors(stdout);
    let expected: Vec<(String, u64)> =
        [("CONNECT", 0), ("TIMEOUT", 0), ("4XX", 5), ("429", 5), ("5XX", 5), ("OTHER", 0), ("DROPPED", 0)]
            .map(|(c, n)| (c.to_string(), n))
            .into();
    assert_eq!(errors, expected, "{stdout}");
    assert!(field(stdout, "Duration").ends_with("s, 2 stages"), "{stdout}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_closed_port_gives_connect_errors_and_slow_answers_time_out() {
    let cli = Stratus::new(&closed_endpoint());
    let out = bench(&cli, &[&closed_endpoint(), "--rate", "10", "-d", "1s"]).await;
    let stdout = out.ok();
    assert_eq!(error_count(stdout, "CONNECT"), 10, "{stdout}");
    assert_eq!(field(stdout, "Requests"), "10 sent, 0 answered, 0 succeeded (0.00%)", "{stdout}");
    let no_latency = stdout.lines().find(|l| l.starts_with("0 answers")).unwrap();
    assert_eq!(no_latency.split_whitespace().collect::<Vec<_>>(), ["0", "answers", "-", "-", "-", "-", "-"]);

    let (addr, _) = http_server().await;
    let url = format!("http://{addr}/?sleep_ms=2000");
    let out = bench(&cli, &[&url, "--rate", "10", "-d", "500ms", "--timeout", "100ms"]).await;
    assert_eq!(error_count(out.ok(), "TIMEOUT"), 5, "{}", out.out);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_beyond_max_in_flight_are_dropped() {
    let (addr, _) = http_server().await;
    let cli = Stratus::new(&closed_endpoint());
    let json = cli.dir.path().join("t.json");
    let url = format!("http://{addr}/?sleep_ms=3000");
    let args = [&url, "--rate", "20", "-d", "500ms", "--max-in-flight", "3", "--timeout", "300ms", "--out-json"];
    let out = bench(&cli, &[&args[..], &[json.to_str().unwrap()]].concat()).await;
    let stdout = out.ok();
    // 10 due within 450 ms, each outstanding for the 300 ms timeout: 3 at a time get out.
    assert_eq!(error_count(stdout, "DROPPED") + error_count(stdout, "TIMEOUT"), 10, "{stdout}");
    assert!(error_count(stdout, "DROPPED") >= 4, "{stdout}");
    assert!(field(stdout, "Requests").starts_with(&format!("{} sent,", error_count(stdout, "TIMEOUT"))));
    let timeline: Vec<Value> = serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    assert!(timeline.iter().all(|s| s["in_flight"].as_u64().unwrap() <= 3), "{timeline:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_service_is_reached_through_its_url_and_its_instances_are_sampled() {
    let (addr, seen) = http_server().await;
    let server = TestServer::start().await;
    let cli = Stratus::admin(&server);
    let client = common::admin_client(&server);
    let manifest = common::service("web", "example/web:v1");
    cli.run_with_stdin(&["apply", "-f", "-"], &manifest).await.ok();

    // Not ready yet: no URL to send to.
    let out = bench(&cli, &["web", "-d", "1s"]).await;
    assert_eq!(
        out.failed(),
        "error: service/web has no URL yet: it is not ready to serve (see `stratus describe service web`)\n"
    );
    let out = bench(&cli, &["nope", "-d", "1s"]).await;
    assert_eq!(out.failed(), "error: services \"nope\" not found in namespace \"default\"\n");

    // As the controllers would: a URL under .localhost, and two revisions with instances.
    let mut svc: Service = client.get("default", "web").await.unwrap();
    svc.status =
        Some(ServiceStatus { url: format!("http://web.default.localhost:{}", addr.port()), ..Default::default() });
    client.update_status(svc).await.unwrap();
    for (name, ready, desired) in [("web-00001", 1, 1), ("web-00002", 2, 3)] {
        let mut rev = Revision::default();
        rev.meta_mut().name = name.into();
        rev.meta_mut().labels.insert("stratus.dev/service".into(), "web".into());
        rev.spec = Some(RevisionSpec {
            containers: vec![Container { image: "example/web:v1".into(), ..Default::default() }],
            ..Default::default()
        });
        let mut rev = client.create(rev).await.unwrap();
        rev.status = Some(RevisionStatus { ready_instances: ready, desired_instances: desired, ..Default::default() });
        client.update_status(rev).await.unwrap();
    }

    let json = cli.dir.path().join("t.json");
    let svg = cli.dir.path().join("t.svg");
    let out = bench(
        &cli,
        &[
            "svc/web",
            "--stage",
            "1500ms:10rps",
            "--path",
            "/?from=bench",
            "--out-json",
            json.to_str().unwrap(),
            "--chart",
            svg.to_str().unwrap(),
        ],
    )
    .await;
    let stdout = out.ok();
    assert_eq!(seen.requests.load(Ordering::SeqCst), 15, "{stdout}");
    let host = format!("web.default.localhost:{}", addr.port());
    assert_eq!(*seen.last_host.lock().unwrap(), host);
    assert_eq!(
        field(stdout, "Target"),
        format!("http://{host}/?from=bench (service default/web, via 127.0.0.1:{})", addr.port())
    );
    let timeline: Vec<Value> = serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    assert!(!timeline.is_empty());
    // The first answer of the API may come after the first sample; the last has it.
    let last = timeline.last().unwrap();
    assert_eq!((last["ready_instances"].as_u64(), last["desired_instances"].as_u64()), (Some(3), Some(4)), "{last}");
    assert!(out.err.contains("instances 3/4 ready"), "{}", out.err);
    let svg = std::fs::read_to_string(&svg).unwrap();
    assert!(svg.contains("ready instances") && svg.contains("desired instances"));
}

#[tokio::test]
async fn impossible_requests_fail_before_sending_anything() {
    let (addr, seen) = http_server().await;
    let cli = Stratus::new(&closed_endpoint());
    let url = format!("http://{addr}/");
    let missing = cli.dir.path().join("no/such/dir/t.json");
    let out = bench(&cli, &[&url, "--out-json", missing.to_str().unwrap()]).await;
    let err = out.failed();
    assert!(err.starts_with(&format!("error: cannot write {:?}: ", missing.display().to_string())), "{err}");
    assert_eq!(err.lines().count(), 1);
    let out = bench(&cli, &[&url, "-c", "50", "--max-in-flight", "10"]).await;
    assert!(out.failed().contains("raise --max-in-flight"), "{}", out.err);
    let out = bench(&cli, &["https://example.com", "-d", "1s"]).await;
    assert_eq!(out.failed(), "error: cannot benchmark \"https://example.com\": https is not supported, only http\n");
    // A service name needs the API, which is not there.
    let out = bench(&cli, &["web", "-d", "1s"]).await;
    assert!(out.failed().starts_with("error: cannot reach the Stratus API at "), "{}", out.err);
    assert_eq!(seen.requests.load(Ordering::SeqCst), 0);
}

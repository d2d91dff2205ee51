//! The gateway against a real API server and real backends: routing by host, traffic splits,
//! balancing and queueing, retries, ejection, rate limits, a full queue, timeouts, headers, h2c
//! and gRPC-style trailers, streaming, upgrades, live route changes and holding requests for a
//! revision with no instance yet.

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use anyhow::{Context, Result, ensure};
use bytes::Bytes;
use futures::{SinkExt, StreamExt, stream};
use http::header::{CONNECTION, HOST, RETRY_AFTER, UPGRADE};
use http::{HeaderMap, HeaderValue, Method, Request, Response, StatusCode, Version};
use http_body_util::{BodyExt, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper_util::rt::{TokioExecutor, TokioIo};
use stratus_api::v1::{RevisionSpec, Scaling};
use stratus_gateway::GatewayConfig;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::watch;
use tokio::time::timeout;

use support::*;

// ---------------------------------------------------------------- routing

/// Served on the caller's runtime (no threads of its own) or on threads of its own, the
/// gateway routes the same; once stopped, the threads no longer accept connections.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serves_on_its_own_threads_or_on_the_callers_runtime() -> Result<()> {
    for threads in [0, 3] {
        let h = Harness::start_with(GatewayConfig { proxy_threads: threads, ..GatewayConfig::default() }).await?;
        let backend = Backend::named("hello-1").await?;
        h.revision("hello-1", 0, 30).await?;
        h.endpoints("hello-1", &[backend.endpoint("http1")]).await?;
        h.service("hello", None, &[("hello-1", 100, "")]).await?;
        h.wait_endpoints("hello-1", 1).await?;
        // More connections than threads, so that every thread serves some.
        let hello = host("hello");
        let answers = futures::future::join_all((0..12).map(|_| h.get(&hello, "/"))).await;
        for answer in answers {
            let (status, _, body) = answer?;
            ensure!(status == StatusCode::OK && body == "hello-1", "{threads} threads: {status} {body}");
        }
        let addr = h.addr;
        drop(h.stop());
        eventually("the stopped gateway to close its listener", || async {
            tokio::net::TcpStream::connect(addr).await.is_err()
        })
        .await?;
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn routes_by_host_and_answers_404_naming_an_unknown_host() -> Result<()> {
    let h = Harness::start().await?;
    let backend = Backend::named("hello-1").await?;
    h.revision("hello-1", 0, 30).await?;
    h.endpoints("hello-1", &[backend.endpoint("http1")]).await?;
    h.service("hello", None, &[("hello-1", 100, "")]).await?;
    h.wait_endpoints("hello-1", 1).await?;

    let (status, _, body) = h.get(&host("hello"), "/").await?;
    ensure!(status == StatusCode::OK && body == "hello-1", "{status} {body}");
    // Any port, any case, a trailing dot: the same host.
    let (status, _, body) = h.get("HELLO.default.localhost.:31337", "/x?y=1").await?;
    ensure!(status == StatusCode::OK && body == "hello-1", "{status} {body}");

    for unknown in ["nope.default.localhost", "hello.other.localhost", "hello.default.example.com"] {
        let (status, headers, body) = h.get(unknown, "/").await?;
        ensure!(status == StatusCode::NOT_FOUND, "{unknown}: {status}");
        ensure!(body.contains(unknown), "the 404 names the host: {body}");
        ensure!(headers.contains_key("x-request-id"));
    }

    let (status, metrics) = h.admin("/metrics").await?;
    ensure!(status == StatusCode::OK);
    let ok = r#"stratus_gateway_requests_total{namespace="default",revision="hello-1",class="2xx"} 2"#;
    ensure!(metrics.contains(ok), "{metrics}");
    ensure!(metrics.contains("stratus_gateway_unrouted_requests_total 3"), "{metrics}");
    ensure!(
        metrics.contains(r#"stratus_gateway_request_duration_seconds_count{namespace="default",revision="hello-1"} 2"#)
    );
    ensure!(h.admin("/healthz").await?.0 == StatusCode::OK);
    ensure!(h.admin("/readyz").await?.0 == StatusCode::OK);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn splits_traffic_by_percent() -> Result<()> {
    let h = Arc::new(Harness::start().await?);
    let (a, b) = (Backend::named("split-a").await?, Backend::named("split-b").await?);
    h.revision("split-a", 0, 30).await?;
    h.revision("split-b", 0, 30).await?;
    h.endpoints("split-a", &[a.endpoint("http1")]).await?;
    h.endpoints("split-b", &[b.endpoint("http1")]).await?;
    h.service("split", None, &[("split-a", 50, ""), ("split-b", 50, "")]).await?;
    h.wait_endpoints("split-a", 1).await?;
    h.wait_endpoints("split-b", 1).await?;

    let workers = (0..8).map(|_| {
        let h = Arc::clone(&h);
        tokio::spawn(async move {
            let mut to_a = 0;
            for _ in 0..250 {
                let (status, _, body) = h.get(&host("split"), "/").await?;
                ensure!(status == StatusCode::OK, "{status} {body}");
                to_a += usize::from(body == "split-a");
            }
            Ok(to_a)
        })
    });
    let mut to_a = 0;
    for worker in workers.collect::<Vec<_>>() {
        to_a += worker.await??;
    }
    // 2,000 requests, 50/50: within ±5% (±100) fails about once in 10^5 runs.
    ensure!((900..=1100).contains(&to_a), "{to_a} of 2000 went to split-a");
    ensure!(a.hits() + b.hits() == 2000);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tag_host_pins_its_revision() -> Result<()> {
    let h = Harness::start().await?;
    let (stable, canary) = (Backend::named("tag-1").await?, Backend::named("tag-2").await?);
    h.revision("tag-1", 0, 30).await?;
    h.revision("tag-2", 0, 30).await?;
    h.endpoints("tag-1", &[stable.endpoint("http1")]).await?;
    h.endpoints("tag-2", &[canary.endpoint("http1")]).await?;
    h.service("tagged", None, &[("tag-1", 100, "stable"), ("tag-2", 0, "canary")]).await?;
    h.wait_endpoints("tag-2", 1).await?;

    for _ in 0..10 {
        ensure!(h.get(&host("canary-tagged"), "/").await?.2 == "tag-2");
        ensure!(h.get(&host("stable-tagged"), "/").await?.2 == "tag-1");
        ensure!(h.get(&host("tagged"), "/").await?.2 == "tag-1", "0% gets no untagged traffic");
    }
    ensure!(h.get(&host("beta-tagged"), "/").await?.0 == StatusCode::NOT_FOUND);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_route_change_applies_without_dropping_an_open_connection() -> Result<()> {
    let h = Harness::start().await?;
    let (a, b) = (Backend::named("live-a").await?, Backend::named("live-b").await?);
    h.revision("live-1", 0, 30).await?;
    h.endpoints("live-1", &[a.endpoint("http1")]).await?;
    h.service("live", None, &[("live-1", 100, "")]).await?;
    h.wait_endpoints("live-1", 1).await?;

    // One keep-alive connection carries every request below.
    let stream = TcpStream::connect(h.addr).await?;
    let (mut conn, driver) = hyper::client::conn::http1::handshake::<_, TestBody>(TokioIo::new(stream)).await?;
    tokio::spawn(driver);
    let mut get = async move || -> Result<String> {
        conn.ready().await?;
        let req = Request::get("/").header(HOST, host("live")).body(empty())?;
        let (status, _, body) = read(timeout(WAIT, conn.send_request(req)).await??).await?;
        ensure!(status == StatusCode::OK, "{status} {body}");
        Ok(body)
    };
    ensure!(get().await? == "live-a");

    h.endpoints("live-1", &[a.endpoint("http1"), b.endpoint("http1")]).await?;
    h.wait_endpoints("live-1", 2).await?;
    let mut seen_b = false;
    for _ in 0..20 {
        seen_b |= get().await? == "live-b";
    }
    ensure!(seen_b, "the added endpoint takes requests");

    h.endpoints("live-1", &[b.endpoint("http1")]).await?;
    h.wait_endpoints("live-1", 1).await?;
    let hits_a = a.hits();
    for _ in 0..10 {
        ensure!(get().await? == "live-b");
    }
    ensure!(a.hits() == hits_a, "the removed endpoint takes no more requests");
    Ok(())
}

// ---------------------------------------------------------------- balancing and resilience

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn container_concurrency_one_is_never_exceeded() -> Result<()> {
    let h = Arc::new(Harness::start().await?);
    let overlap = Arc::new(AtomicUsize::new(0));
    let mut backends = Vec::new();
    for name in ["cc-a", "cc-b"] {
        let (current, overlap) = (Arc::new(AtomicUsize::new(0)), Arc::clone(&overlap));
        backends.push(
            Backend::start(move |_| {
                let (current, overlap) = (Arc::clone(&current), Arc::clone(&overlap));
                async move {
                    if current.fetch_add(1, Ordering::SeqCst) > 0 {
                        overlap.fetch_add(1, Ordering::SeqCst);
                    }
                    // Work that takes a while, so that the clients' requests pile up.
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    current.fetch_sub(1, Ordering::SeqCst);
                    text(StatusCode::OK, name)
                }
            })
            .await?,
        );
    }
    h.revision("cc-1", 1, 30).await?;
    h.endpoints("cc-1", &[backends[0].endpoint("http1"), backends[1].endpoint("http1")]).await?;
    h.service("cc", None, &[("cc-1", 100, "")]).await?;
    h.wait_endpoints("cc-1", 2).await?;

    let clients = (0..5).map(|_| {
        let h = Arc::clone(&h);
        tokio::spawn(async move {
            for _ in 0..10 {
                let (status, _, body) = h.get(&host("cc"), "/").await?;
                ensure!(status == StatusCode::OK, "{status} {body}");
            }
            Ok(())
        })
    });
    for client in clients.collect::<Vec<_>>() {
        client.await??;
    }
    ensure!(overlap.load(Ordering::SeqCst) == 0, "an endpoint got two requests at once");
    ensure!(backends[0].hits() + backends[1].hits() == 50);
    ensure!(backends.iter().all(|b| b.hits() > 0), "both endpoints were used");
    ensure!(h.gateway.demand().iter().all(|d| d.in_flight == 0 && d.queued == 0));
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_connection_is_retried_on_another_endpoint_with_the_body() -> Result<()> {
    let h = Harness::start().await?;
    let echo = Backend::start(|req: Request<Incoming>| async move {
        match req.into_body().collect().await {
            Ok(body) => text(StatusCode::OK, body.to_bytes()),
            Err(e) => text(StatusCode::BAD_REQUEST, e.to_string()),
        }
    })
    .await?;
    h.revision("retry-1", 0, 30).await?;
    h.endpoints("retry-1", &[(dead_address().await?, "http1"), echo.endpoint("http1")]).await?;
    h.service("retry", None, &[("retry-1", 100, "")]).await?;
    h.wait_endpoints("retry-1", 2).await?;

    for i in 0..10 {
        let payload = format!("payload {i}");
        let req = Request::post("/").header(HOST, host("retry")).body(full(payload.clone()))?;
        let (status, _, body) = read(h.send(req).await?).await?;
        ensure!(status == StatusCode::OK && body == payload, "{i}: {status} {body}");
    }
    ensure!(echo.hits() == 10);

    // With nowhere else to go, the client learns that the revision cannot be reached.
    h.revision("dead-1", 0, 30).await?;
    h.endpoints("dead-1", &[(dead_address().await?, "http1")]).await?;
    h.service("dead", None, &[("dead-1", 100, "")]).await?;
    h.wait_endpoints("dead-1", 1).await?;
    let (status, _, body) = h.get(&host("dead"), "/").await?;
    ensure!(status == StatusCode::BAD_GATEWAY && body.contains("cannot connect to revision default/dead-1"), "{body}");
    Ok(())
}

/// An address whose server reads a request and hangs up without answering (an instance killed
/// as a request reaches it), with how many requests it got.
async fn hanging_up_address() -> Result<(String, Arc<AtomicUsize>)> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let address = listener.local_addr()?.to_string();
    let hits = Arc::new(AtomicUsize::new(0));
    let counted = hits.clone();
    tokio::spawn(async move {
        while let Ok((mut conn, _)) = listener.accept().await {
            let mut head = [0u8; 4096];
            if matches!(conn.read(&mut head).await, Ok(n) if n > 0) {
                counted.fetch_add(1, Ordering::SeqCst);
            }
        }
    });
    Ok((address, hits))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idempotent_request_whose_exchange_breaks_is_sent_to_another_endpoint() -> Result<()> {
    let h = Harness::start().await?;
    let good = Backend::named("good").await?;
    let (hanging, hung_up) = hanging_up_address().await?;
    h.revision("broken-1", 0, 30).await?;
    h.endpoints("broken-1", &[(hanging, "http1"), good.endpoint("http1")]).await?;
    h.service("broken", None, &[("broken-1", 100, "")]).await?;
    h.wait_endpoints("broken-1", 2).await?;
    for i in 0..10 {
        let (status, _, body) = h.get(&host("broken"), "/").await?;
        ensure!(status == StatusCode::OK && body == "good", "GET {i}: {status} {body}");
    }
    ensure!(hung_up.load(Ordering::SeqCst) > 0, "no GET went to the endpoint that hangs up");

    // A POST may have been acted on before the connection broke: it is not sent again.
    let (first, first_hits) = hanging_up_address().await?;
    let (second, second_hits) = hanging_up_address().await?;
    h.revision("post-1", 0, 30).await?;
    h.endpoints("post-1", &[(first, "http1"), (second, "http1")]).await?;
    h.service("post", None, &[("post-1", 100, "")]).await?;
    h.wait_endpoints("post-1", 2).await?;
    let req = Request::post("/").header(HOST, host("post")).body(full("once"))?;
    let (status, _, body) = read(h.send(req).await?).await?;
    ensure!(status == StatusCode::BAD_GATEWAY, "{status} {body}");
    let sent = first_hits.load(Ordering::SeqCst) + second_hits.load(Ordering::SeqCst);
    ensure!(sent == 1, "the POST was sent {sent} times");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_endpoint_answering_500s_is_ejected() -> Result<()> {
    let h = Harness::start().await?;
    let bad = Backend::start(|_| async { text(StatusCode::INTERNAL_SERVER_ERROR, "broken") }).await?;
    let good = Backend::named("good").await?;
    h.revision("eject-1", 0, 30).await?;
    h.endpoints("eject-1", &[bad.endpoint("http1"), good.endpoint("http1")]).await?;
    h.service("eject", None, &[("eject-1", 100, "")]).await?;
    h.wait_endpoints("eject-1", 2).await?;

    let mut failures = 0;
    for _ in 0..50 {
        if bad.hits() >= 5 {
            break;
        }
        failures += usize::from(h.get(&host("eject"), "/").await?.0 == StatusCode::INTERNAL_SERVER_ERROR);
    }
    ensure!(failures == 5, "the failing endpoint's answers reach the client until it is ejected");
    for _ in 0..20 {
        let (status, _, body) = h.get(&host("eject"), "/").await?;
        ensure!(status == StatusCode::OK && body == "good", "{status} {body}");
    }
    ensure!(bad.hits() == 5, "the ejected endpoint got {} requests", bad.hits());
    let (_, metrics) = h.admin("/metrics").await?;
    let ejections = r#"stratus_gateway_endpoint_ejections_total{namespace="default",revision="eject-1"} 1"#;
    ensure!(metrics.contains(ejections), "{metrics}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_service_over_its_rate_limit_gets_429_with_retry_after() -> Result<()> {
    let h = Harness::start().await?;
    let backend = Backend::named("limited").await?;
    h.revision("limited-1", 0, 30).await?;
    h.endpoints("limited-1", &[backend.endpoint("http1")]).await?;
    h.service("limited", Some(2), &[("limited-1", 100, "")]).await?;
    h.wait_endpoints("limited-1", 1).await?;

    // Two requests per second with a burst of two: a hundred requests cannot all pass unless
    // they take fifty seconds.
    let mut answers = Vec::new();
    while answers.len() < 100 && answers.last().is_none_or(|(status, _)| *status != StatusCode::TOO_MANY_REQUESTS) {
        let (status, headers, _) = h.get(&host("limited"), "/").await?;
        answers.push((status, headers.get(RETRY_AFTER).cloned()));
    }
    ensure!(answers[0].0 == StatusCode::OK, "{answers:?}");
    let (status, retry_after) = answers.last().context("no answer")?;
    ensure!(*status == StatusCode::TOO_MANY_REQUESTS, "{answers:?}");
    ensure!(retry_after.as_ref().is_some_and(|v| v == "1"), "{answers:?}");
    ensure!(backend.hits() == answers.len() - 1, "a limited request never reaches the backend");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_queue_follows_the_revision_capacity_and_when_full_answers_429_with_retry_after() -> Result<()> {
    // A floor of 2, but containerConcurrency 1 and maxInstances 2: up to 20 requests may wait.
    let config = GatewayConfig { queue_floor: 2, ..GatewayConfig::default() };
    let h = Arc::new(Harness::start_with(config).await?);
    let (open, gate) = watch::channel(false);
    let backend = gated("queue-1", gate).await?;
    let scaling = Scaling { max_instances: Some(2), ..Default::default() };
    h.revision_spec("queue-1", RevisionSpec { scaling: Some(scaling), ..revision_spec(1, 30) }).await?;
    h.endpoints("queue-1", &[backend.endpoint("http1")]).await?;
    h.service("queue", None, &[("queue-1", 100, "")]).await?;
    h.wait_endpoints("queue-1", 1).await?;

    // One instance of the two it may have is placed: it takes one request, twenty wait for the
    // second (the floor alone would have refused the third).
    let get = |h: &Arc<Harness>| {
        let h = Arc::clone(h);
        tokio::spawn(async move { h.get(&host("queue"), "/").await })
    };
    let first = get(&h);
    eventually("the first request in flight", || {
        std::future::ready(h.gateway.demand().iter().any(|d| d.revision == "queue-1" && d.in_flight == 1))
    })
    .await?;
    let waiting: Vec<_> = (0..20).map(|_| get(&h)).collect();
    eventually("twenty requests queued", || std::future::ready(h.queued("queue-1") == 20)).await?;

    // The queue is full: backpressure, told at once to come back, not a 5xx.
    let (status, headers, body) = h.get(&host("queue"), "/").await?;
    ensure!(status == StatusCode::TOO_MANY_REQUESTS, "{status} {body}");
    ensure!(headers.get(RETRY_AFTER).is_some_and(|v| v == "1"), "{headers:?}");
    ensure!(body.contains("revision default/queue-1 already has 20 requests waiting for an instance"), "{body}");

    // Capacity frees up: every request that waited is served.
    open.send_replace(true);
    for request in std::iter::once(first).chain(waiting) {
        let (status, _, body) = request.await??;
        ensure!(status == StatusCode::OK && body == "queue-1", "{status} {body}");
    }
    ensure!(backend.hits() == 21, "the refused request never reached the instance");
    ensure!(h.queued("queue-1") == 0);
    Ok(())
}

// ---------------------------------------------------------------- timeouts and waiting

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_revision_timeout_gives_504_or_cuts_the_body() -> Result<()> {
    let h = Harness::start().await?;
    let slow = Backend::start(|req: Request<Incoming>| async move {
        // Slowness is the behaviour under test here, not a way to wait for something.
        if req.uri().path() == "/slow-headers" {
            tokio::time::sleep(Duration::from_secs(60)).await;
            return text(StatusCode::OK, "too late");
        }
        let first = stream::iter([Ok::<_, BoxError>(Frame::data(Bytes::from("start")))]);
        let late = stream::once(async {
            tokio::time::sleep(Duration::from_secs(60)).await;
            Ok(Frame::data(Bytes::from("end")))
        });
        Response::new(StreamBody::new(first.chain(late)).boxed_unsync())
    })
    .await?;
    h.revision("slow-1", 0, 1).await?;
    h.endpoints("slow-1", &[slow.endpoint("http1")]).await?;
    h.service("slow", None, &[("slow-1", 100, "")]).await?;
    h.wait_endpoints("slow-1", 1).await?;

    let (status, _, body) = h.get(&host("slow"), "/slow-headers").await?;
    ensure!(status == StatusCode::GATEWAY_TIMEOUT, "{status} {body}");
    ensure!(body.contains("revision default/slow-1 did not answer within 1s"), "{body}");

    let response = h.send(Request::get("/slow-body").header(HOST, host("slow")).body(empty())?).await?;
    ensure!(response.status() == StatusCode::OK);
    let mut body = response.into_body();
    let mut received = Vec::new();
    let ended = loop {
        match timeout(WAIT, body.frame()).await.context("the body was not cut")? {
            Some(Ok(frame)) => received.extend_from_slice(frame.data_ref().map_or(&[][..], |d| &d[..])),
            Some(Err(e)) => break Err(e),
            None => break Ok(()),
        }
    };
    ensure!(received == b"start", "{:?}", String::from_utf8_lossy(&received));
    ensure!(ended.is_err(), "a cut body must not look complete");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_for_a_revision_without_instances_are_held() -> Result<()> {
    let h = Arc::new(Harness::start().await?);
    h.revision("cold-1", 0, 1).await?;
    h.service("cold", None, &[("cold-1", 100, "")]).await?;
    h.revision("warm-1", 0, 20).await?;
    h.service("warm", None, &[("warm-1", 100, "")]).await?;
    h.wait_endpoints("cold-1", 0).await?;
    h.wait_endpoints("warm-1", 0).await?;

    // Nothing comes: held for the revision's timeout, then a clear 503.
    let (status, _, body) = h.get(&host("cold"), "/").await?;
    ensure!(status == StatusCode::SERVICE_UNAVAILABLE, "{status} {body}");
    ensure!(body.contains("no instance of revision default/cold-1 became ready within"), "{body}");

    // An instance comes while the request waits: it is served.
    let held = tokio::spawn({
        let h = Arc::clone(&h);
        async move { h.get(&host("warm"), "/").await }
    });
    eventually("the request to be queued", || std::future::ready(h.queued("warm-1") == 1)).await?;
    let backend = Backend::named("warm-1").await?;
    h.endpoints("warm-1", &[backend.endpoint("http1")]).await?;
    let (status, _, body) = held.await??;
    ensure!(status == StatusCode::OK && body == "warm-1", "{status} {body}");
    ensure!(h.queued("warm-1") == 0);
    Ok(())
}

// ---------------------------------------------------------------- where the gateway connects

/// An Endpoints object is only a list of addresses; the gateway connects only to those whose
/// node is Ready and published their host, so an Endpoints naming another host's port (here a
/// backend on 127.0.0.2, under a node at 127.0.0.1) is not proxied to until its node publishes
/// that host.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_endpoints_address_its_node_did_not_publish_is_not_proxied_to() -> Result<()> {
    let h = Harness::start().await?;
    let elsewhere = Backend::start_on("127.0.0.2", |_| async { text(StatusCode::OK, "elsewhere") }).await?;
    let own = Backend::named("own").await?;
    h.revision("mixed-1", 0, 30).await?;
    h.endpoints("mixed-1", &[elsewhere.endpoint("http1"), own.endpoint("http1")]).await?;
    h.service("mixed", None, &[("mixed-1", 100, "")]).await?;
    h.revision("stray-1", 0, 1).await?;
    h.endpoints("stray-1", &[elsewhere.endpoint("http1")]).await?;
    h.service("stray", None, &[("stray-1", 100, "")]).await?;
    h.wait_endpoints("mixed-1", 1).await?;
    h.wait_endpoints("stray-1", 0).await?;

    for _ in 0..10 {
        let (status, _, body) = h.get(&host("mixed"), "/").await?;
        ensure!(status == StatusCode::OK && body == "own", "{status} {body}");
    }
    // Only the foreign address: nothing to send to, so the request waits out the timeout.
    let (status, _, body) = h.get(&host("stray"), "/").await?;
    ensure!(status == StatusCode::SERVICE_UNAVAILABLE, "{status} {body}");
    ensure!(elsewhere.hits() == 0, "the gateway connected to an address its node did not publish");

    // The node publishes the address (its agent moved to it): the address is used.
    register_node(&h.api, NODE, &["127.0.0.1", "127.0.0.2"]).await?;
    h.wait_endpoints("stray-1", 1).await?;
    let (status, _, body) = h.get(&host("stray"), "/").await?;
    ensure!(status == StatusCode::OK && body == "elsewhere", "{status} {body}");

    // A node that is not Ready vouches for nothing.
    let mut node = h.api.get::<stratus_api::v1::Node>("", NODE).await?;
    if let Some(ready) = node.status.as_mut().and_then(|s| s.conditions.first_mut()) {
        ready.status = "Unknown".into();
        ready.reason = "NodeLost".into();
    }
    h.api.update_status(node).await?;
    h.wait_endpoints("mixed-1", 0).await?;
    h.wait_endpoints("stray-1", 0).await?;
    Ok(())
}

// ---------------------------------------------------------------- headers

/// The value of header `name` in what [`mirror`] answered ("" when absent).
fn seen_header(seen: &str, name: &str) -> String {
    seen.lines().find_map(|l| l.strip_prefix(&format!("{name}: "))).map(str::to_string).unwrap_or_default()
}

/// A request through the gateway to [`mirror`] carrying forged forwarding headers.
fn spoofed() -> Result<Request<TestBody>> {
    Ok(Request::get("/")
        .header(HOST, host("mirror"))
        .header("x-forwarded-for", "203.0.113.9")
        .header("x-forwarded-proto", "https")
        .header("x-forwarded-host", "bank.example")
        .header("x-real-ip", "203.0.113.9")
        .header("forwarded", "for=203.0.113.9;proto=https")
        .body(empty())?)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forwarding_and_tracing_headers_are_added_and_hop_by_hop_ones_removed() -> Result<()> {
    let h = Harness::start().await?;
    let _mirror = mirror(&h).await?;

    let req = Request::get("/")
        .header(HOST, host("mirror"))
        .header(CONNECTION, "x-hop")
        .header("x-hop", "secret")
        .header("x-custom", "kept")
        .body(empty())?;
    let response = h.send(req).await?;
    let id = response.headers().get("x-request-id").cloned().context("the response carries the request id")?;
    let (_, _, seen) = read(response).await?;
    let header = |name: &str| seen_header(&seen, name);
    ensure!(header("host") == host("mirror"), "{seen}");
    ensure!(header("forwarded") == format!("for=127.0.0.1;proto=http;host={}", host("mirror")), "{seen}");
    ensure!(header("x-forwarded-for") == "127.0.0.1", "{seen}");
    ensure!(header("x-forwarded-proto") == "http", "{seen}");
    ensure!(header("x-forwarded-host") == host("mirror"), "{seen}");
    ensure!(header("x-real-ip") == "127.0.0.1", "{seen}");
    ensure!(header("x-custom") == "kept", "{seen}");
    ensure!(header("x-hop").is_empty(), "headers named by Connection are hop-by-hop: {seen}");
    ensure!(header("x-request-id") == id.to_str()?, "{seen}");
    let traceparent = header("traceparent");
    let parts: Vec<&str> = traceparent.split('-').collect();
    ensure!(parts.len() == 4 && parts[0] == "00" && parts[1].len() == 32 && parts[2].len() == 16, "{traceparent}");

    // A client's own trace and id continue unchanged.
    let trace = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    let req = Request::get("/")
        .header(HOST, host("mirror"))
        .header("traceparent", trace)
        .header("x-request-id", "req-42")
        .body(empty())?;
    let response = h.send(req).await?;
    ensure!(response.headers().get("x-request-id") == Some(&HeaderValue::from_static("req-42")));
    let (_, _, seen) = read(response).await?;
    ensure!(seen.contains(&format!("traceparent: {trace}")) && seen.contains("x-request-id: req-42"), "{seen}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_absolute_form_target_is_routed_and_forwarded_by_its_own_host() -> Result<()> {
    let h = Harness::start().await?;
    let _mirror = mirror(&h).await?;
    let stream = TcpStream::connect(h.addr).await?;
    let (mut conn, driver) = hyper::client::conn::http1::handshake::<_, TestBody>(TokioIo::new(stream)).await?;
    tokio::spawn(driver);
    // As a client configured with the gateway as its HTTP proxy sends it.
    let req = Request::get(format!("http://{}/", host("mirror"))).header(HOST, "elsewhere.example").body(empty())?;
    let (status, _, seen) = read(timeout(WAIT, conn.send_request(req)).await??).await?;
    ensure!(status == StatusCode::OK, "{status} {seen}");
    ensure!(seen_header(&seen, "host") == host("mirror"), "the endpoint sees the host it was routed by: {seen}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_untrusted_client_cannot_forge_forwarding_headers() -> Result<()> {
    // Trusting another network is not trusting this one.
    let config = GatewayConfig { trusted_proxies: vec!["10.0.0.0/8".parse()?], ..GatewayConfig::default() };
    let h = Harness::start_with(config).await?;
    let _mirror = mirror(&h).await?;
    let (_, _, seen) = read(h.send(spoofed()?).await?).await?;
    let header = |name: &str| seen_header(&seen, name);
    ensure!(!seen.contains("203.0.113.9") && !seen.contains("bank.example") && !seen.contains("https"), "{seen}");
    ensure!(header("x-forwarded-for") == "127.0.0.1", "{seen}");
    ensure!(header("x-forwarded-proto") == "http", "{seen}");
    ensure!(header("x-forwarded-host") == host("mirror"), "{seen}");
    ensure!(header("x-real-ip") == "127.0.0.1", "{seen}");
    ensure!(header("forwarded") == format!("for=127.0.0.1;proto=http;host={}", host("mirror")), "{seen}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trusted_proxy_s_forwarding_headers_are_kept() -> Result<()> {
    let config = GatewayConfig { trusted_proxies: vec!["127.0.0.0/8".parse()?], ..GatewayConfig::default() };
    let h = Harness::start_with(config).await?;
    let _mirror = mirror(&h).await?;
    let (_, _, seen) = read(h.send(spoofed()?).await?).await?;
    let header = |name: &str| seen_header(&seen, name);
    ensure!(header("x-forwarded-for") == "203.0.113.9, 127.0.0.1", "{seen}");
    ensure!(header("x-forwarded-proto") == "https", "{seen}");
    ensure!(header("x-forwarded-host") == "bank.example", "{seen}");
    ensure!(header("x-real-ip") == "203.0.113.9", "{seen}");
    ensure!(
        header("forwarded") == format!("for=203.0.113.9;proto=https, for=127.0.0.1;proto=http;host={}", host("mirror")),
        "{seen}"
    );
    Ok(())
}

// ---------------------------------------------------------------- protocols and streaming

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h2c_endpoints_stream_both_ways_and_keep_grpc_trailers() -> Result<()> {
    let h = Harness::start().await?;
    // A gRPC-shaped echo: HTTP/2 only, each request frame echoed at once, grpc-status as trailer.
    let echo = Backend::start(|req: Request<Incoming>| async move {
        if req.version() != Version::HTTP_2 || req.headers().get("te").is_none_or(|te| te != "trailers") {
            return text(StatusCode::BAD_REQUEST, format!("{:?} {:?}", req.version(), req.headers()));
        }
        let frames = stream::unfold(Some(req.into_body()), |body| async move {
            let mut body = body?;
            loop {
                match body.frame().await {
                    Some(Ok(frame)) => match frame.into_data() {
                        Ok(data) => return Some((Ok::<_, BoxError>(Frame::data(data)), Some(body))),
                        Err(_) => continue,
                    },
                    Some(Err(e)) => return Some((Err(e.into()), None)),
                    None => {
                        let mut trailers = HeaderMap::new();
                        trailers.insert("grpc-status", HeaderValue::from_static("0"));
                        return Some((Ok(Frame::trailers(trailers)), None));
                    }
                }
            }
        });
        let mut response = Response::new(StreamBody::new(frames).boxed_unsync());
        response.headers_mut().insert("content-type", HeaderValue::from_static("application/grpc"));
        response
    })
    .await?;
    h.revision("grpc-1", 0, 30).await?;
    h.endpoints("grpc-1", &[echo.endpoint("h2c")]).await?;
    h.service("grpc", None, &[("grpc-1", 100, "")]).await?;
    h.wait_endpoints("grpc-1", 1).await?;

    // The client speaks h2c to the gateway too, with the service's host as :authority.
    let stream = TcpStream::connect(h.addr).await?;
    let (mut conn, driver) =
        hyper::client::conn::http2::handshake::<_, _, TestBody>(TokioExecutor::new(), TokioIo::new(stream)).await?;
    tokio::spawn(driver);
    let (mut tx, rx) = futures::channel::mpsc::channel::<Result<Frame<Bytes>, BoxError>>(1);
    let req = Request::builder()
        .method(Method::POST)
        .uri(format!("http://{}/echo.Echo/Chat", host("grpc")))
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .body(StreamBody::new(rx).boxed_unsync())?;
    tx.send(Ok(Frame::data(Bytes::from("ping-0")))).await?;
    let response = timeout(WAIT, conn.send_request(req)).await??;
    ensure!(response.status() == StatusCode::OK, "{:?}", response);
    let mut body = response.into_body();
    // Each message comes back before the next is sent: neither direction is buffered whole.
    for i in 0..5 {
        let frame = timeout(WAIT, body.frame()).await?.context("the echo ended early")??;
        ensure!(frame.data_ref().is_some_and(|d| *d == format!("ping-{i}")), "{frame:?}");
        if i < 4 {
            tx.send(Ok(Frame::data(Bytes::from(format!("ping-{}", i + 1))))).await?;
        }
    }
    drop(tx);
    let trailers = loop {
        match timeout(WAIT, body.frame()).await?.context("no trailers")?? {
            frame if frame.is_trailers() => break frame.into_trailers().ok(),
            _ => continue,
        }
    };
    ensure!(trailers.as_ref().and_then(|t| t.get("grpc-status")) == Some(&HeaderValue::from_static("0")));
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_bodies_stream_through_in_both_directions() -> Result<()> {
    const CHUNK: usize = 64 * 1024;
    const CHUNKS: usize = 256; // 16 MiB
    fn chunk(i: usize) -> Bytes {
        Bytes::from((0..CHUNK).map(|j| ((i * 31 + j) % 251) as u8).collect::<Vec<u8>>())
    }
    let expected = (0..CHUNKS).fold(FNV_START, |hash, i| fnv(hash, &chunk(i)));

    let h = Harness::start().await?;
    let backend = Backend::start(|req: Request<Incoming>| async move {
        if req.method() == Method::GET {
            let chunks = stream::iter((0..CHUNKS).map(|i| Ok::<_, BoxError>(Frame::data(chunk(i)))));
            return Response::new(StreamBody::new(chunks).boxed_unsync());
        }
        let (mut len, mut hash, mut body) = (0usize, FNV_START, req.into_body());
        while let Some(frame) = body.frame().await {
            match frame {
                Ok(frame) => {
                    if let Some(data) = frame.data_ref() {
                        len += data.len();
                        hash = fnv(hash, data);
                    }
                }
                Err(e) => return text(StatusCode::BAD_REQUEST, e.to_string()),
            }
        }
        text(StatusCode::OK, format!("{len} {hash}"))
    })
    .await?;
    h.revision("bulk-1", 0, 60).await?;
    h.endpoints("bulk-1", &[backend.endpoint("http1")]).await?;
    h.service("bulk", None, &[("bulk-1", 100, "")]).await?;
    h.wait_endpoints("bulk-1", 1).await?;

    let upload = stream::iter((0..CHUNKS).map(|i| Ok::<_, BoxError>(Frame::data(chunk(i)))));
    let req = Request::post("/").header(HOST, host("bulk")).body(StreamBody::new(upload).boxed_unsync())?;
    let (status, _, body) = read(h.send(req).await?).await?;
    ensure!(status == StatusCode::OK && body == format!("{} {expected}", CHUNK * CHUNKS), "{status} {body}");

    let response = h.send(Request::get("/").header(HOST, host("bulk")).body(empty())?).await?;
    let (mut len, mut hash, mut body) = (0usize, FNV_START, response.into_body());
    while let Some(frame) = timeout(WAIT, body.frame()).await? {
        if let Some(data) = frame?.data_ref() {
            len += data.len();
            hash = fnv(hash, data);
        }
    }
    ensure!(len == CHUNK * CHUNKS && hash == expected, "downloaded {len} bytes");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upgraded_connection_carries_bytes_both_ways() -> Result<()> {
    let h = Harness::start().await?;
    // A minimal upgrade handshake: 101, then whatever arrives goes back upper-cased.
    let upper = Backend::start(|mut req: Request<Incoming>| async move {
        if req.headers().get(UPGRADE).is_none() {
            return text(StatusCode::BAD_REQUEST, "upgrade expected");
        }
        let upgrade = hyper::upgrade::on(&mut req);
        tokio::spawn(async move {
            let Ok(upgraded) = upgrade.await else { return };
            let mut io = TokioIo::new(upgraded);
            let mut buf = [0u8; 1024];
            while let Ok(n @ 1..) = io.read(&mut buf).await {
                if io.write_all(&buf[..n].to_ascii_uppercase()).await.is_err() {
                    break;
                }
            }
        });
        let mut response = text(StatusCode::SWITCHING_PROTOCOLS, "");
        response.headers_mut().insert(CONNECTION, HeaderValue::from_static("upgrade"));
        response.headers_mut().insert(UPGRADE, HeaderValue::from_static("websocket"));
        response
    })
    .await?;
    h.revision("ws-1", 0, 30).await?;
    h.endpoints("ws-1", &[upper.endpoint("http1")]).await?;
    h.service("ws", None, &[("ws-1", 100, "")]).await?;
    h.wait_endpoints("ws-1", 1).await?;

    let mut stream = TcpStream::connect(h.addr).await?;
    let handshake =
        format!("GET /socket HTTP/1.1\r\nHost: {}\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n", host("ws"));
    stream.write_all(handshake.as_bytes()).await?;
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        let mut byte = [0u8; 1];
        ensure!(timeout(WAIT, stream.read(&mut byte)).await?? == 1, "closed during the handshake");
        head.push(byte[0]);
    }
    let head = String::from_utf8_lossy(&head).to_ascii_lowercase();
    ensure!(head.starts_with("http/1.1 101"), "{head}");
    ensure!(head.contains("upgrade: websocket"), "{head}");

    for word in ["hello", "again"] {
        stream.write_all(word.as_bytes()).await?;
        let mut echoed = [0u8; 5];
        timeout(WAIT, stream.read_exact(&mut echoed)).await??;
        ensure!(echoed == *word.to_ascii_uppercase().as_bytes(), "{:?}", String::from_utf8_lossy(&echoed));
    }
    Ok(())
}

/// A user of tenant `default` with a password, and their token.
async fn user_token(h: &Harness, name: &str) -> Result<String> {
    let mut user = stratus_api::v1::User {
        spec: Some(stratus_api::v1::UserSpec {
            tenant: "default".into(),
            password: format!("{name}-password"),
            ..Default::default()
        }),
        ..Default::default()
    };
    stratus_api::Resource::meta_mut(&mut user).name = name.into();
    h.api.create(user).await?;
    Ok(h.api.login(name, &format!("{name}-password")).await?.access_token)
}

#[tokio::test]
async fn private_services_serve_only_their_invokers() -> Result<()> {
    let h = Harness::start().await?;
    // The backend echoes the Authorization header it was given.
    let backend = Backend::start(|req| async move {
        let auth = req.headers().get("authorization").and_then(|v| v.to_str().ok()).unwrap_or("none").to_string();
        text(StatusCode::OK, auth)
    })
    .await?;
    h.revision("private-1", 10, 30).await?;
    h.service("private", None, &[("private-1", 100, "")]).await?;
    let mut svc = h.api.get::<stratus_api::v1::Service>(NS, "private").await?;
    stratus_api::Resource::meta_mut(&mut svc)
        .annotations
        .insert(stratus_api::identity::INVOKER_ANNOTATION.into(), "authenticated".into());
    h.api.update(svc).await?;
    h.endpoints("private-1", &[backend.endpoint("http1")]).await?;
    h.wait_endpoints("private-1", 1).await?;
    let host = "private.default.localhost";

    let (status, headers, _) = h.get(host, "/").await?;
    ensure!(status == StatusCode::UNAUTHORIZED, "no token: {status}");
    ensure!(headers.get("www-authenticate").is_some(), "no challenge: {headers:?}");
    let with = |token: String| Request::get("/").header(HOST, host).header("authorization", format!("Bearer {token}"));
    let (status, _, _) = read(h.send(with("garbage".into()).body(empty())?).await?).await?;
    ensure!(status == StatusCode::UNAUTHORIZED, "garbage: {status}");

    let ivan = user_token(&h, "ivan").await?;
    let nora = user_token(&h, "nora").await?;
    let mut binding = stratus_api::v1::RoleBinding {
        spec: Some(stratus_api::v1::RoleBindingSpec {
            role: "invoker".into(),
            subjects: vec![stratus_api::v1::Subject {
                kind: "User".into(),
                name: "ivan".into(),
                namespace: String::new(),
            }],
        }),
        ..Default::default()
    };
    let meta = stratus_api::Resource::meta_mut(&mut binding);
    (meta.name, meta.namespace) = ("invokers".into(), NS.into());
    h.api.create(binding).await?;

    let (status, _, body) = read(h.send(with(nora).body(empty())?).await?).await?;
    ensure!(status == StatusCode::FORBIDDEN, "nora: {status} {body}");
    ensure!(backend.hits.load(Ordering::SeqCst) == 0, "a refused request reached the backend");
    let (status, _, body) = read(h.send(with(ivan.clone()).body(empty())?).await?).await?;
    ensure!(status == StatusCode::OK, "ivan: {status} {body}");
    // The container sees who called, without the signature that would make it a credential.
    let (signed, _) = ivan.rsplit_once('.').context("a JWT")?;
    ensure!(body == format!("Bearer {signed}."), "forwarded: {body}");

    // Made public again, it still never receives a token of this cluster that it could replay.
    let mut svc = h.api.get::<stratus_api::v1::Service>(NS, "private").await?;
    stratus_api::Resource::meta_mut(&mut svc).annotations.clear();
    h.api.update(svc).await?;
    eventually("the service to be public", || async {
        h.get(host, "/").await.map(|(status, _, _)| status == StatusCode::OK).unwrap_or(false)
    })
    .await?;
    let (status, _, body) = read(h.send(with(ivan.clone()).body(empty())?).await?).await?;
    ensure!(status == StatusCode::OK && body == format!("Bearer {signed}."), "public: {status} {body}");
    let other = Request::get("/").header(HOST, host).header("authorization", "Bearer not-ours");
    let (_, _, body) = read(h.send(other.body(empty())?).await?).await?;
    ensure!(body == "Bearer not-ours", "another scheme's token is the service's business: {body}");
    Ok(())
}

// ---------------------------------------------------------------- slow and idle clients

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_and_slow_clients_do_not_keep_a_normal_one_waiting_and_are_closed() -> Result<()> {
    let limits = stratus_support::server::Limits {
        header_read_timeout: Duration::from_millis(500),
        idle_timeout: Duration::from_secs(1),
        ..Default::default()
    };
    let h = Harness::start_with(GatewayConfig { limits, ..GatewayConfig::default() }).await?;
    let _mirror = mirror(&h).await?;
    let mut held = stratus_testkit::flood::idle_and_slow(&h.addr.to_string(), 1000, 100).await?;
    let answered = tokio::time::timeout(Duration::from_secs(1), h.get(&host("mirror"), "/")).await;
    ensure!(matches!(answered, Ok(Ok((StatusCode::OK, _, _)))), "not served within a second: {answered:?}");
    for s in &mut held {
        ensure!(stratus_testkit::flood::closed_within(s, Duration::from_secs(10)).await, "a connection stayed open");
    }
    Ok(())
}

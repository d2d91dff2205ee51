//! The gateway as the activator, against a real API server, real backends and a fake
//! Autoscaler gRPC server: demand reports, pokes at zero, failing fast when a revision cannot
//! start, and 429 when a revision is at its maxInstances.

mod support;

use std::sync::Arc;
use std::time::Duration;

use anyhow::{Result, ensure};
use http::StatusCode;
use http::header::RETRY_AFTER;
use stratus_api::v1::{RevisionSpec, Scaling};
use stratus_gateway::GatewayConfig;
use tokio::sync::watch;
use tokio::time::Instant;

use support::*;

/// A gateway that reports to and pokes `autoscaler`, as `gw-test`.
fn config(autoscaler: &FakeAutoscaler) -> GatewayConfig {
    GatewayConfig { autoscaler: Some(autoscaler.endpoint.clone()), name: "gw-test".into(), ..GatewayConfig::default() }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn demand_reports_carry_the_requests_in_flight_and_queued() -> Result<()> {
    let autoscaler = FakeAutoscaler::start().await?;
    let h = Arc::new(Harness::start_with(config(&autoscaler)).await?);
    let (open, gate) = watch::channel(false);
    let backend = gated("busy-1", gate).await?;
    h.revision("busy-1", 1, 30).await?;
    h.endpoints("busy-1", &[backend.endpoint("http1")]).await?;
    h.service("busy", None, &[("busy-1", 100, "")]).await?;
    h.wait_endpoints("busy-1", 1).await?;

    // Reports flow before there is any demand, and name the gateway.
    let mut requests = 0;
    let report = autoscaler.next_report().await?;
    ensure!(report.gateway == "gw-test", "{report:?}");

    // One request held by the backend, two queued behind it (containerConcurrency 1).
    let held: Vec<_> = (0..3)
        .map(|_| {
            let h = Arc::clone(&h);
            tokio::spawn(async move { h.get(&host("busy"), "/").await })
        })
        .collect();
    eventually("two requests queued", || std::future::ready(h.queued("busy-1") == 2)).await?;
    // A period that the three spent entirely in the gateway reports exactly three.
    loop {
        let report = autoscaler.next_report().await?;
        let Some(demand) = report.revisions.iter().find(|d| d.revision == "busy-1") else { continue };
        ensure!(demand.namespace == NS && demand.period_ms > 0, "{demand:?}");
        requests += demand.requests;
        if (demand.concurrency - 3.0).abs() < 1e-3 {
            ensure!(demand.queued == 2, "{demand:?}");
            break;
        }
        ensure!(demand.concurrency < 3.0 + 1e-3, "{demand:?}");
    }

    open.send_replace(true);
    for request in held {
        let (status, _, body) = request.await??;
        ensure!(status == StatusCode::OK && body == "busy-1", "{status} {body}");
    }
    // Once they are answered, the demand falls to nothing; every arrival was counted once.
    loop {
        let report = autoscaler.next_report().await?;
        let Some(demand) = report.revisions.iter().find(|d| d.revision == "busy-1") else { continue };
        requests += demand.requests;
        if demand.concurrency == 0.0 && demand.queued == 0 {
            break;
        }
    }
    ensure!(requests == 3, "{requests} arrivals reported for 3 requests");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_at_zero_pokes_at_once_and_is_served_when_an_instance_comes() -> Result<()> {
    let autoscaler = FakeAutoscaler::start().await?;
    let h = Arc::new(Harness::start_with(config(&autoscaler)).await?);
    h.revision("cold-1", 0, 60).await?;
    h.service("cold", None, &[("cold-1", 100, "")]).await?;
    h.wait_endpoints("cold-1", 0).await?;

    // The instance only comes once the autoscaler was poked: the poke cannot wait for it.
    served_once_poked(&h, &[&autoscaler]).await?;
    ensure!(h.queued("cold-1") == 0);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_autoscaler_replica_gets_the_reports_and_the_pokes_even_with_one_away() -> Result<()> {
    let (first, second) = (FakeAutoscaler::start().await?, FakeAutoscaler::start().await?);
    let away = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
        format!("http://{}", listener.local_addr()?)
    };
    let autoscalers = format!("{}, {away},{}", first.endpoint, second.endpoint);
    let config = GatewayConfig { autoscaler: Some(autoscalers), name: "gw-test".into(), ..GatewayConfig::default() };
    let h = Arc::new(Harness::start_with(config).await?);
    h.revision("cold-1", 0, 60).await?;
    h.service("cold", None, &[("cold-1", 100, "")]).await?;
    h.wait_endpoints("cold-1", 0).await?;
    // Each replica has the gateway's demand, so a standby that takes over has it at once.
    for autoscaler in [&first, &second] {
        let report = autoscaler.next_report().await?;
        ensure!(report.gateway == "gw-test", "{report:?}");
    }

    // Whichever replica leads is poked.
    served_once_poked(&h, &[&first, &second]).await
}

/// Sends a request to the Service `cold`, whose revision `cold-1` has no instance; once each of
/// `autoscalers` was poked for it, gives the revision an instance, and checks that the request
/// is answered by it.
async fn served_once_poked(h: &Arc<Harness>, autoscalers: &[&FakeAutoscaler]) -> Result<()> {
    let held = tokio::spawn({
        let h = Arc::clone(h);
        async move { h.get(&host("cold"), "/").await }
    });
    for autoscaler in autoscalers {
        let poke = autoscaler.next_poke().await?;
        ensure!((poke.namespace.as_str(), poke.revision.as_str()) == (NS, "cold-1"), "{poke:?}");
    }
    let backend = Backend::named("cold-1").await?;
    h.endpoints("cold-1", &[backend.endpoint("http1")]).await?;
    let (status, _, body) = held.await??;
    ensure!(status == StatusCode::OK && body == "cold-1", "{status} {body}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn held_requests_get_503_naming_the_reason_when_the_revision_cannot_start() -> Result<()> {
    let h = Arc::new(Harness::start().await?);
    h.revision("bad-1", 0, 300).await?;
    h.service("bad", None, &[("bad-1", 100, "")]).await?;
    h.wait_endpoints("bad-1", 0).await?;

    // Still starting: requests wait.
    h.revision_ready("bad-1", "Unknown", "Deploying", "waiting for an instance to become ready").await?;
    let started = Instant::now();
    let held: Vec<_> = (0..2)
        .map(|_| {
            let h = Arc::clone(&h);
            tokio::spawn(async move { h.get(&host("bad"), "/").await })
        })
        .collect();
    eventually("two requests held", || std::future::ready(h.queued("bad-1") == 2)).await?;

    // The image is missing: both are answered as soon as the gateway sees it, far within the
    // revision's 300 s (and the harness gives up after 20 s).
    h.revision_ready("bad-1", "False", "ContainerMissing", "127.0.0.1:5000/nope:v1: manifest unknown").await?;
    let expected = "revision bad-1 cannot start: ContainerMissing: 127.0.0.1:5000/nope:v1: manifest unknown";
    for request in held {
        let (status, _, body) = request.await??;
        ensure!(status == StatusCode::SERVICE_UNAVAILABLE, "{status} {body}");
        ensure!(body.trim_end() == expected, "{body}");
    }
    ensure!(started.elapsed() < WAIT, "answered within {:?}", started.elapsed());
    ensure!(h.queued("bad-1") == 0);

    // A request that comes later is not held at all.
    let (status, _, body) = h.get(&host("bad"), "/").await?;
    ensure!(status == StatusCode::SERVICE_UNAVAILABLE && body.trim_end() == expected, "{status} {body}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn at_max_instances_extra_requests_get_429_with_retry_after() -> Result<()> {
    let at_capacity_timeout = Duration::from_secs(1);
    // A queue of two, whatever the revision's capacity.
    let config = GatewayConfig { queue_floor: 2, queue_cap: 2, at_capacity_timeout, ..GatewayConfig::default() };
    let h = Arc::new(Harness::start_with(config).await?);
    let (open, gate) = watch::channel(false);
    let backend = gated("full-1", gate).await?;
    let scaling = Scaling { max_instances: Some(1), ..Default::default() };
    h.revision_spec("full-1", RevisionSpec { scaling: Some(scaling), ..revision_spec(1, 30) }).await?;
    h.endpoints("full-1", &[backend.endpoint("http1")]).await?;
    h.service("full", None, &[("full-1", 100, "")]).await?;
    h.wait_endpoints("full-1", 1).await?;

    let get = |h: &Arc<Harness>| {
        let h = Arc::clone(h);
        tokio::spawn(async move {
            let started = Instant::now();
            let answer = h.get(&host("full"), "/").await;
            answer.map(|(status, headers, body)| (status, headers, body, started.elapsed()))
        })
    };
    // The one instance takes one request, and may not grow.
    let first = get(&h);
    eventually("the first request in flight", || {
        std::future::ready(h.gateway.demand().iter().any(|d| d.revision == "full-1" && d.in_flight == 1))
    })
    .await?;
    let waiting = [get(&h), get(&h)];
    eventually("two requests queued", || std::future::ready(h.queued("full-1") == 2)).await?;

    // The queue is full: told at once to come back.
    let (status, headers, body) = h.get(&host("full"), "/").await?;
    ensure!(status == StatusCode::TOO_MANY_REQUESTS, "{status} {body}");
    ensure!(headers.get(RETRY_AFTER).is_some_and(|v| v == "1"), "{headers:?}");
    ensure!(body.contains("revision default/full-1 is at its maximum number of instances"), "{body}");

    // The queued ones after their at-capacity wait, not the revision's 30 s timeout.
    for request in waiting {
        let (status, headers, body, waited) = request.await??;
        ensure!(status == StatusCode::TOO_MANY_REQUESTS, "{status} {body}");
        ensure!(headers.get(RETRY_AFTER).is_some_and(|v| v == "1"), "{headers:?}");
        ensure!(waited >= at_capacity_timeout && waited < Duration::from_secs(15), "waited {waited:?}");
    }

    open.send_replace(true);
    let (status, _, body, _) = first.await??;
    ensure!(status == StatusCode::OK && body == "full-1", "{status} {body}");
    ensure!(backend.hits() == 1, "no extra request reached the instance");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broken_report_stream_is_reopened() -> Result<()> {
    let autoscaler = FakeAutoscaler::start_with(Some(2)).await?;
    let h = Harness::start_with(config(&autoscaler)).await?;
    h.revision("steady-1", 0, 30).await?;
    h.service("steady", None, &[("steady-1", 100, "")]).await?;
    // Two reports, the stream fails; after a backoff a new one carries the next two.
    for _ in 0..4 {
        let report = autoscaler.next_report().await?;
        ensure!(report.gateway == "gw-test", "{report:?}");
    }
    let streams = autoscaler.streams.load(std::sync::atomic::Ordering::SeqCst);
    ensure!(streams >= 2, "{streams} streams opened");
    Ok(())
}

//! Metering end to end: a gateway proxies requests to a backend, and the UsageReports it spools
//! reach a real API server with the requests counted and the busy periods measured.

mod support;

use std::time::Duration;

use anyhow::{Result, ensure};
use http::StatusCode;
use stratus_api::billing::{MODE_REQUEST, SOURCE_GATEWAY, millis};
use stratus_api::v1::UsageReport;
use stratus_client::ListParams;
use stratus_client::usage::{Spool, SpoolMetrics};
use stratus_gateway::{GatewayConfig, Metering};

use support::*;

/// How long the backend takes to answer.
const BUSY: Duration = Duration::from_millis(100);
const REQUESTS: i64 = 5;

#[tokio::test]
async fn requests_and_busy_periods_reach_the_api_as_usage_reports() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let spool = Spool::open(dir.path(), 1000, SpoolMetrics::default())?;
    let metering = Metering { spool, window: Duration::from_secs(1) };
    let config = GatewayConfig { name: "GW_Test.1".into(), metering: Some(metering), ..Default::default() };
    let h = Harness::start_with(config).await?;
    let backend = Backend::start(|_| async {
        tokio::time::sleep(BUSY).await;
        text(StatusCode::OK, "slow")
    })
    .await?;
    h.revision("hello-1", 1, 30).await?;
    h.endpoints("hello-1", &[backend.endpoint("http1")]).await?;
    h.service("hello", None, &[("hello-1", 100, "")]).await?;
    h.wait_endpoints("hello-1", 1).await?;

    // One at a time: each request keeps the instance busy for at least BUSY (requests that
    // follow one another within a millisecond make one period).
    let started = std::time::Instant::now();
    for _ in 0..REQUESTS {
        let (status, _, _) = h.get(&host("hello"), "/").await?;
        ensure!(status == StatusCode::OK, "{status}");
    }
    let elapsed = i64::try_from(started.elapsed().as_millis())?;

    let reports = || async {
        let list = h.api.list_all::<UsageReport>(&ListParams::default()).await.map(|l| l.items).unwrap_or_default();
        list.into_iter().filter_map(|r| r.spec).filter(|s| s.source_kind == SOURCE_GATEWAY).collect::<Vec<_>>()
    };
    // A request is counted in the window it starts in, but its busy period may run past that
    // window's end: the rest comes in the next window's report. Wait for both.
    let busy_of = |reports: &[stratus_api::v1::UsageReportSpec]| -> i64 {
        let ms = |t: Option<&stratus_api::Timestamp>| millis(t).unwrap_or(0);
        reports.iter().flat_map(|r| &r.periods).map(|p| ms(p.end.as_ref()) - ms(p.start.as_ref())).sum()
    };
    let least = REQUESTS * i64::try_from(BUSY.as_millis())?;
    eventually("usage reports of every request and of its busy time", || async {
        let reports = reports().await;
        reports.iter().map(|s| s.requests).sum::<i64>() == REQUESTS && busy_of(&reports) >= least
    })
    .await?;
    let reports = reports().await;
    let mut busy_ms = 0;
    let mut periods = 0;
    for r in &reports {
        ensure!(r.source == "gw-test-1", "the source is the gateway's name as a DNS label: {}", r.source);
        ensure!(r.instance == "hello-1-0" && r.revision == "hello-1" && r.service == "hello", "{r:?}");
        ensure!(r.billing_mode == MODE_REQUEST, "{r:?}");
        ensure!(r.cpu_millis == 1000 && r.memory_bytes == 512 << 20, "the default limits: {r:?}");
        let (start, end) = (millis(r.window_start.as_ref()).unwrap_or(0), millis(r.window_end.as_ref()).unwrap_or(0));
        // The gateway's first window starts when it did; the others are whole seconds.
        ensure!(end % 1000 == 0 && end - start <= 1000, "windows end on whole seconds of the clock: {r:?}");
        for p in &r.periods {
            let (ps, pe) = (millis(p.start.as_ref()).unwrap_or(0), millis(p.end.as_ref()).unwrap_or(0));
            ensure!(start <= ps && ps < pe && pe <= end, "a period inside its window: {r:?}");
            busy_ms += pe - ps;
            periods += 1;
        }
    }
    let busy = i64::try_from(BUSY.as_millis())?;
    // The instance was busy at least as long as the backend took, and no longer than the
    // requests took from the client's side (plus a millisecond per request of rounding).
    ensure!(periods >= 1);
    ensure!(busy_ms >= REQUESTS * busy, "busy {busy_ms} ms for {REQUESTS} requests of {busy} ms");
    ensure!(busy_ms <= elapsed + REQUESTS, "busy {busy_ms} ms, but the requests took {elapsed} ms");
    let (_, metrics) = h.admin("/metrics").await?;
    ensure!(metrics.contains("stratus_gateway_usage_reports_sent_total"), "{metrics}");
    eventually("the spool to be empty", || async { dir.path().read_dir().map(|d| d.count() == 1).unwrap_or(false) })
        .await?;
    Ok(())
}

/// A gateway that stops (as on SIGTERM) spools the usage of the window in progress instead of
/// losing it, and the next gateway on the same spool sends it. That one, started under the same
/// name within the same window, reports that window under another name (its first window starts
/// when it did), so the API stores both: every request is counted once.
#[tokio::test]
async fn a_stopped_gateway_spools_its_last_window_and_its_successor_reports_beside_it() -> Result<()> {
    let dir = tempfile::tempdir()?;
    // An hour's window: no window of the clock ends during the test (unless it runs across an
    // hour's end, which only adds reports).
    let config = |spool| GatewayConfig {
        name: "gw-restarted".into(),
        metering: Some(Metering { spool, window: Duration::from_secs(3600) }),
        ..Default::default()
    };
    let spool = || Spool::open(dir.path(), 1000, SpoolMetrics::default());
    let first = Harness::start_with(config(spool()?)).await?;
    let backend = Backend::start(|_| async { text(StatusCode::OK, "ok") }).await?;
    first.revision("hello-1", 1, 30).await?;
    first.endpoints("hello-1", &[backend.endpoint("http1")]).await?;
    first.service("hello", None, &[("hello-1", 100, "")]).await?;
    first.wait_endpoints("hello-1", 1).await?;
    let api = first.api.clone();
    let reports = || async {
        let list = api.list_all::<UsageReport>(&ListParams::default()).await.map(|l| l.items).unwrap_or_default();
        list.into_iter().filter(|r| r.spec.as_ref().is_some_and(|s| s.source == "gw-restarted")).collect::<Vec<_>>()
    };
    let requests =
        |reports: &[UsageReport]| reports.iter().filter_map(|r| r.spec.as_ref()).map(|s| s.requests).sum::<i64>();
    let spooled = || dir.path().read_dir().map(|d| d.filter_map(|e| e.ok()).filter(|e| e.path().is_file()).count());

    for _ in 0..REQUESTS {
        let (status, _, _) = first.get(&host("hello"), "/").await?;
        ensure!(status == StatusCode::OK, "{status}");
    }
    let server = first.stop();
    // In the spool, or already sent by the stopping gateway's sender.
    eventually("the stopped gateway's last window spooled", || async {
        spooled().unwrap_or(0) >= 1 || requests(&reports().await) == REQUESTS
    })
    .await?;

    let second = Harness::start_on(server, config(spool()?)).await?;
    second.wait_endpoints("hello-1", 1).await?;
    eventually("the first gateway's report sent by the second", || async { requests(&reports().await) == REQUESTS })
        .await?;
    for _ in 0..REQUESTS {
        let (status, _, _) = second.get(&host("hello"), "/").await?;
        ensure!(status == StatusCode::OK, "{status}");
    }
    let _server = second.stop();
    eventually("the second gateway's last window spooled", || async {
        spooled().unwrap_or(0) >= 1 || requests(&reports().await) == 2 * REQUESTS
    })
    .await?;

    // A third process's spool sends what the second left.
    let sender = tokio::spawn(spool()?.run(api.clone(), std::future::pending()));
    eventually("every request in the API", || async { requests(&reports().await) == 2 * REQUESTS }).await?;
    sender.abort();
    let reports = reports().await;
    ensure!(reports.len() >= 2, "one report per gateway at least: {reports:?}");
    Ok(())
}

/// A request in flight when its revision stops being routed (a rollout moved all traffic on)
/// is still billed when it ends: the revision's pool is kept until its usage is reported.
#[tokio::test]
async fn a_request_outliving_its_revisions_route_is_still_reported() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let spool = Spool::open(dir.path(), 1000, SpoolMetrics::default())?;
    let metering = Metering { spool, window: Duration::from_secs(1) };
    let config = GatewayConfig { name: "gw-rollout".into(), metering: Some(metering), ..Default::default() };
    let h = Harness::start_with(config).await?;
    let (release, released) = tokio::sync::watch::channel(false);
    let old = Backend::start(move |_| {
        let mut released = released.clone();
        async move {
            let _ = released.wait_for(|r| *r).await;
            text(StatusCode::OK, "old")
        }
    })
    .await?;
    let new = Backend::start(|_| async { text(StatusCode::OK, "new") }).await?;
    h.revision("hello-1", 1, 30).await?;
    h.revision("hello-2", 1, 30).await?;
    h.endpoints("hello-1", &[old.endpoint("http1")]).await?;
    h.endpoints("hello-2", &[new.endpoint("http1")]).await?;
    h.service("hello", None, &[("hello-1", 100, "")]).await?;
    h.wait_endpoints("hello-1", 1).await?;

    let hits = std::sync::Arc::clone(&old.hits);
    let roll_out = async {
        eventually("the slow request to reach the old revision", || async {
            hits.load(std::sync::atomic::Ordering::SeqCst) == 1
        })
        .await?;
        // All traffic moves to hello-2; the old revision is routed no more.
        let mut svc = h.api.get::<stratus_api::v1::Service>(NS, "hello").await?;
        if let Some(status) = svc.status.as_mut() {
            status.traffic[0].revision_name = "hello-2".into();
        }
        h.api.update_status(svc).await?;
        eventually("requests to reach the new revision", || async {
            matches!(h.get(&host("hello"), "/").await, Ok((_, _, body)) if body == "new")
        })
        .await?;
        let released_at = stratus_client::usage::now_millis();
        release.send(true)?;
        anyhow::Ok(released_at)
    };
    let hello = host("hello");
    let (slow, rolled_out) = tokio::join!(h.get(&hello, "/"), roll_out);
    let released_at = rolled_out?;
    let (status, _, body) = slow?;
    ensure!(status == StatusCode::OK && body == "old", "{status} {body}");

    // Counted, and busy until it ended: after the revision stopped being routed.
    eventually("the old revision's request and busy time in usage reports", || async {
        let list = h.api.list_all::<UsageReport>(&ListParams::default()).await.map(|l| l.items).unwrap_or_default();
        let old: Vec<_> = list.iter().filter_map(|r| r.spec.as_ref()).filter(|s| s.revision == "hello-1").collect();
        let busy_until = old.iter().flat_map(|s| &s.periods).filter_map(|p| millis(p.end.as_ref())).max().unwrap_or(0);
        old.iter().map(|s| s.requests).sum::<i64>() == 1 && busy_until >= released_at
    })
    .await?;
    Ok(())
}

//! Billing survives `kill -9`: sequential requests of known duration go through a
//! `stratus-gateway` process while, at random moments (a seeded RNG; the seed is printed, and
//! `STRATUS_E2E_SEED` replays it), the gateway and the `stratus-controllers` process are killed
//! with SIGKILL and started again with the same flags, ports and usage spool, and the gateway
//! is once stopped with SIGTERM and started again. Afterwards the
//! invoice must equal the recount from the UsageReports, and its requests and busy time must
//! match what the client saw, within the bounds below.
//!
//! What "nothing lost" means under `kill -9` of the gateway. The gateway counts a request in
//! the window in which it hands it to an instance, and at each window's end writes that window's
//! report to the spool (fsync, then rename) before it sends it. So:
//! - a report in the spool is never lost (the next gateway sends what the last one left) and
//!   never counted twice (its name is deterministic: a second delivery answers AlreadyExists);
//! - the usage of the window in progress at the kill is in memory only and may be lost, and so
//!   may the window that had just ended if the kill came before its report was written. A
//!   request is *at risk* when the killed gateway may have counted it in such a window; every
//!   other successful request must be billed exactly once;
//! - a request that failed because of the kill may still have reached the instance and been
//!   counted in a window that was spooled before the kill (it started before the window's end
//!   and was still in flight at the kill). Such requests may be billed; requests that could not
//!   even connect (the gateway was down) never are.
//!
//! Hence: successful requests not at risk ≤ requests billed ≤ successful requests + requests
//! that failed after connecting, and per report window no more than the requests in flight
//! around it. The busy time (100 ms ticks of the union of the periods in which the instance had
//! a request in flight; one instance, concurrency 1, one request at a time) is at least the sum
//! of the sleeps of the requests not at risk (each of their periods lasts at least its sleep and
//! lies in spooled windows), and at most the ticks of the union of the intervals in which the
//! client waited for the requests that may be billed (every period lies inside one): the sleeps
//! plus the proxy's overhead, rounded up by at most one tick per busy period.
//! Stopping the gateway with SIGTERM loses nothing: once drained, it spools the window in
//! progress. Killing the controllers loses nothing: the ledger is recomputed from the reports.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use common::*;
use serde_json::Value;
use stratus_api::billing::{self, SOURCE_AGENT, SOURCE_GATEWAY, TICK_MILLIS};
use stratus_api::v1::UsageReport;
use stratus_client::ListParams;
use stratus_client::usage::{now_millis, window_start};
use stratus_testkit::free_port;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// The gateway's report window.
const WINDOW_MS: i64 = 2_000;
/// How long after a window's end its report is surely written (the metering loop wakes at the
/// end, takes every meter under its pool's lock and fsyncs one small file per instance): a
/// generous bound on a busy two-core machine.
const SPOOL_SLACK_MS: i64 = 1_500;
/// How long after a client got its response the gateway may still count the request in flight
/// (the lease is released when the upstream body is done).
const RELEASE_LAG_MS: i64 = 200;
const REQUESTS: usize = 110;
const GATEWAY_KILLS: usize = 3;
const GATEWAY_STOPS: usize = 1;
const CONTROLLERS_KILLS: usize = 3;
/// The service's limits, as in `common::hello`: 250m of CPU, 64Mi of memory.
const CPU_MILLIS: u128 = 250;
const MEMORY_KIB: u128 = 64 * 1024;
const SERVICE: &str = "metered";

/// splitmix64: a seeded generator, enough for a test's random choices.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in `lo..hi`.
    fn range(&mut self, lo: i64, hi: i64) -> i64 {
        lo + (self.next() % u64::try_from(hi - lo).unwrap()) as i64
    }
}

#[derive(Debug, Clone, PartialEq)]
enum Outcome {
    /// 200.
    Ok,
    /// The connection was refused: nothing reached the gateway.
    NotConnected,
    /// Connected, then an error or another status: it may have reached the instance.
    Failed(String),
}

/// One request as the client saw it; times in milliseconds since the epoch.
#[derive(Debug, Clone)]
struct Sent {
    start: i64,
    end: i64,
    sleep: i64,
    outcome: Outcome,
}

/// A GET of `/?sleep_ms={sleep}` through the gateway at `addr`, with `Connection: close`.
async fn send(addr: std::net::SocketAddr, sleep: i64) -> Sent {
    let start = now_millis();
    let outcome = match tokio::net::TcpStream::connect(addr).await {
        Err(_) => Outcome::NotConnected,
        Ok(mut s) => {
            let exchange = async {
                let req =
                    format!("GET /?sleep_ms={sleep} HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n\r\n", host(SERVICE));
                s.write_all(req.as_bytes()).await?;
                let mut out = Vec::new();
                s.read_to_end(&mut out).await?;
                std::io::Result::Ok(String::from_utf8_lossy(&out).to_string())
            };
            match tokio::time::timeout(Duration::from_secs(30), exchange).await {
                Ok(Ok(reply)) if reply.starts_with("HTTP/1.1 200 ") => Outcome::Ok,
                Ok(Ok(reply)) => Outcome::Failed(reply.lines().next().unwrap_or("no status line").to_string()),
                Ok(Err(e)) => Outcome::Failed(e.to_string()),
                Err(_) => Outcome::Failed("timed out".into()),
            }
        }
    };
    Sent { start, end: now_millis(), sleep, outcome }
}

/// What happens to a process during the load.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Event {
    /// `kill -9` of the gateway, then a new one.
    KillGateway,
    /// SIGTERM to the gateway, then a new one once it exited.
    StopGateway,
    /// `kill -9` of the controllers, then new ones.
    KillControllers,
}

/// A gateway kill: the clock just before SIGKILL and once the process was reaped.
#[derive(Debug, Clone, Copy)]
struct Kill {
    before: i64,
    after: i64,
}

impl Kill {
    /// From when the killed gateway's counting may be lost: the start of the window that held
    /// `before - SPOOL_SLACK_MS` (every window ending earlier had been spooled).
    fn lost_from(&self) -> i64 {
        window_start(self.before - SPOOL_SLACK_MS, WINDOW_MS)
    }

    /// Whether the gateway killed here may have counted `r` in a window it never spooled: it
    /// was sent to that gateway (before the kill) and was in flight at or after `lost_from`.
    fn puts_at_risk(&self, r: &Sent) -> bool {
        r.start < self.after && r.end + RELEASE_LAG_MS >= self.lost_from()
    }
}

/// A decimal quantity as an integer scaled by 10^`places`, exactly.
fn scaled(decimal: &str, places: u32) -> u128 {
    let (int, frac) = decimal.split_once('.').unwrap_or((decimal, ""));
    assert!(frac.len() <= places as usize, "{decimal} has more than {places} decimal places");
    let frac = format!("{frac:0<width$}", width = places as usize);
    int.parse::<u128>().unwrap() * 10u128.pow(places) + frac.parse::<u128>().unwrap_or(0)
}

/// The number of `*.json` reports waiting in a spool directory (or its `rejected/`).
fn spooled(dir: &Path) -> Vec<String> {
    let Ok(read) = std::fs::read_dir(dir) else { return Vec::new() };
    read.filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|n| n.ends_with(".json") && !n.starts_with('.'))
        .collect()
}

// Multi-threaded: the API server and the node agent run in this process while the test waits on
// child processes and sockets.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn billing_counts_every_spooled_request_once_across_kill_9() {
    let seed = std::env::var("STRATUS_E2E_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or_else(|| {
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos() as u64
    });
    eprintln!("billing kill -9 test: seed {seed} (STRATUS_E2E_SEED={seed} replays its choices)");
    let mut rng = Rng(seed);

    let c = Cluster::without_controllers_and_gateway("billing").await;
    let usage_dir = c.dir().join("usage").join("gateway");
    let (usage, window) = (usage_dir.display().to_string(), (WINDOW_MS / 1000).to_string());
    let mut gateway =
        c.gateway_process("e2e-billing", &["--usage-dir", &usage, "--usage-window-seconds", &window]).await;
    // Every second a pass; a bucket (an hour) closes 2 s + 2 s after its end, so that a report
    // held up by a kill across an hour's end is folded as an adjustment.
    let billing_flags = ["--billing-interval", "1s", "--billing-watermark", "2s", "--billing-grace", "2s"];
    let mut controllers = c.controllers_process("billing", &billing_flags).await;
    // Prices without a free tier, and a thousand times Cloud Run's, so that every line and the
    // total have an amount to compare.
    c.apply(
        r#"
apiVersion: stratus.dev/v1
kind: PriceList
metadata:
  name: default
spec:
  currency: USD
  period: monthly
  requestBased: {cpuSecond: "0.024", memoryGibSecond: "0.0025", millionRequests: "400"}
  instanceBased: {cpuSecond: "0.000018", memoryGibSecond: "0.000002", millionRequests: "0"}
"#,
    )
    .await;
    c.apply(&hello(SERVICE, "x", "      containerConcurrency: 1\n      scaling: {minInstances: 1}")).await;
    c.wait_ready(SERVICE).await;
    gateway.wait_ready().await;

    let mut sent: Vec<Sent> = Vec::new();
    // Until the gateway has the route; these requests count like the others.
    let deadline = Instant::now() + PATIENCE;
    loop {
        let r = send(c.gateway, 0).await;
        let ok = r.outcome == Outcome::Ok;
        sent.push(r);
        if ok {
            break;
        }
        assert!(Instant::now() < deadline, "the gateway never served {SERVICE}: {:?}", sent.last());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // The load: known sleeps, 50 to 450 ms; the kills at random moments within it.
    let sleeps: Vec<i64> = (0..REQUESTS).map(|_| rng.range(50, 451)).collect();
    let span = sleeps.iter().sum::<i64>();
    let events = [
        (GATEWAY_KILLS, Event::KillGateway),
        (GATEWAY_STOPS, Event::StopGateway),
        (CONTROLLERS_KILLS, Event::KillControllers),
    ];
    let mut plan: Vec<(i64, Event)> = Vec::new();
    for (n, event) in events {
        for _ in 0..n {
            plan.push((rng.range(1_000, span - 3_000), event));
        }
    }
    plan.sort_unstable();
    eprintln!("{REQUESTS} requests sleeping {span} ms in all; then (ms from the start, what): {plan:?}");
    let addr = c.gateway;
    let load = tokio::spawn(async move {
        let mut out = Vec::new();
        for sleep in sleeps {
            // While the gateway is down (refused) or starting (503 until its routes are loaded),
            // the same request again; every attempt is recorded.
            loop {
                let r = send(addr, sleep).await;
                let again = match &r.outcome {
                    Outcome::NotConnected => true,
                    Outcome::Failed(status) => status.starts_with("HTTP/1.1 503 "),
                    Outcome::Ok => false,
                };
                out.push(r);
                if !again {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
        out
    });
    let began = Instant::now();
    let mut kills = Vec::new();
    for (at, event) in plan {
        tokio::time::sleep(Duration::from_millis(u64::try_from(at).unwrap()).saturating_sub(began.elapsed())).await;
        match event {
            Event::KillGateway => {
                gateway.assert_running();
                let before = now_millis();
                gateway.kill9();
                kills.push(Kill { before, after: now_millis() });
                gateway.restart();
            }
            Event::StopGateway => {
                gateway.assert_running();
                gateway.terminate().await;
                gateway.restart();
            }
            Event::KillControllers => {
                controllers.assert_running();
                controllers.kill9();
                controllers.restart();
            }
        }
    }
    sent.extend(load.await.unwrap());
    gateway.wait_ready().await;
    controllers.assert_running();
    let gateway_starts = 1 + GATEWAY_KILLS + GATEWAY_STOPS;
    assert_eq!((gateway.starts, controllers.starts), (gateway_starts as u32, 1 + CONTROLLERS_KILLS as u32));

    // What the client saw.
    let ok: Vec<&Sent> = sent.iter().filter(|r| r.outcome == Outcome::Ok).collect();
    let maybe: Vec<&Sent> = sent.iter().filter(|r| matches!(r.outcome, Outcome::Failed(_))).collect();
    let refused = sent.iter().filter(|r| r.outcome == Outcome::NotConnected).count();
    let safe: Vec<&Sent> = ok.iter().copied().filter(|r| !kills.iter().any(|k| k.puts_at_risk(r))).collect();
    let failures: Vec<&Outcome> = maybe.iter().map(|r| &r.outcome).collect();
    eprintln!(
        "{} requests: {} succeeded ({} of them not at risk from a kill), {} failed after connecting {failures:?}, \
         {refused} refused; gateway kills {kills:?}",
        sent.len(),
        ok.len(),
        safe.len(),
        maybe.len()
    );
    assert!(safe.len() >= REQUESTS / 4, "too few requests outside the kills' reach to prove anything");

    // The spool drains: the last window's report is written, then sent; none was refused.
    let last = sent.iter().map(|r| r.end).max().unwrap();
    let deadline = Instant::now() + PATIENCE;
    loop {
        let waiting = spooled(&usage_dir);
        if now_millis() > window_start(last + RELEASE_LAG_MS, WINDOW_MS) + WINDOW_MS + SPOOL_SLACK_MS
            && waiting.is_empty()
        {
            break;
        }
        gateway.assert_running();
        assert!(Instant::now() < deadline, "the spool never drained: {waiting:?}\n{}", gateway.log_tail(30));
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let rejected = spooled(&usage_dir.join("rejected"));
    assert!(rejected.is_empty(), "reports refused by the API: {rejected:?}\n{}", gateway.log_tail(30));

    // The controller folds everything, and the invoice equals the recount.
    let period = billing::Period::Monthly.holding(sent[0].start).0;
    assert_eq!(period, billing::Period::Monthly.holding(last).0, "the test ran across a month's end; run it again");
    let deadline = Instant::now() + PATIENCE;
    let reports = loop {
        let reports: Vec<UsageReport> = c
            .client
            .list_all::<UsageReport>(&ListParams::default())
            .await
            .unwrap()
            .items
            .into_iter()
            .filter(|r| r.spec.as_ref().is_some_and(|s| s.service == SERVICE))
            .collect();
        let unfolded = reports
            .iter()
            .filter(|r| r.status.as_ref().is_none_or(|s| s.ledger_entry.is_empty()))
            .map(|r| r.metadata.as_ref().map(|m| m.name.clone()).unwrap_or_default())
            .collect::<Vec<_>>();
        let (code, out, err) = c.stratus(&["billing", "recount", "--period", &period, "--tenant", "default"]).await;
        if unfolded.is_empty() && code == 0 {
            eprintln!("recount: {}", out.trim());
            break reports;
        }
        controllers.assert_running();
        assert!(
            Instant::now() < deadline,
            "the invoice never matched the recount: not folded {unfolded:?}; recount exit {code}: {out}{err}\n{}",
            controllers.log_tail(30)
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    let (code, out, err) = c.stratus(&["billing", "invoice", "--current", "--tenant", "default", "-o", "json"]).await;
    assert_eq!(code, 0, "{out}{err}");
    let invoice: Value = serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}{err}"));
    eprintln!("invoice: {invoice}");
    let line = |item: &str| {
        let lines = invoice["lines"].as_array().unwrap();
        let found =
            lines.iter().find(|l| l["service"] == SERVICE && l["mode"] == billing::MODE_REQUEST && l["item"] == item);
        found.and_then(|l| l["quantity"].as_str()).unwrap_or_else(|| panic!("no {item} line: {invoice}")).to_string()
    };

    // Requests: every report counts each once; the invoice has them all.
    let by = |kind: &'static str| reports.iter().filter_map(|r| r.spec.as_ref()).filter(move |s| s.source_kind == kind);
    let reported: i64 = by(SOURCE_GATEWAY).map(|s| s.requests).sum();
    let billed: usize = line("requests").parse().unwrap();
    let cut = by(SOURCE_GATEWAY)
        .filter(|s| billing::millis(s.window_end.as_ref()).is_some_and(|end| end % WINDOW_MS != 0))
        .count();
    eprintln!("requests billed: {billed} in {} reports ({cut} cut short by a SIGTERM)", reports.len());
    assert_eq!(billed, usize::try_from(reported).unwrap(), "the invoice's requests against the reports'");
    assert!(
        (safe.len()..=ok.len() + maybe.len()).contains(&billed),
        "requests billed {billed}: expected at least the {} successful ones not at risk and at most the {} \
         successful ones plus the {} that failed after connecting",
        safe.len(),
        ok.len(),
        maybe.len()
    );

    // Per window, nothing counted twice: a window's reports count only requests handed to the
    // instance between its start and the moment its report was written (its end, give or take
    // SPOOL_SLACK_MS), so no more than the requests in flight then that may be billed at all.
    let mut per_window: std::collections::BTreeMap<i64, i64> = std::collections::BTreeMap::new();
    for s in by(SOURCE_GATEWAY) {
        *per_window.entry(billing::millis(s.window_start.as_ref()).unwrap()).or_default() += s.requests;
    }
    for (&from, &counted) in &per_window {
        let to = from + WINDOW_MS + SPOOL_SLACK_MS;
        let candidates = ok.iter().chain(&maybe).filter(|r| r.start <= to && r.end + RELEASE_LAG_MS >= from).count();
        assert!(
            counted <= i64::try_from(candidates).unwrap(),
            "the window from {from} counts {counted} requests, but only {candidates} may have been handed over in it"
        );
    }

    // Busy time: CPU and memory are the same ticks times the limits.
    let cpu = scaled(&line("cpu"), 6);
    assert_eq!(cpu % (CPU_MILLIS * TICK_MILLIS as u128), 0, "CPU is not whole ticks of 250m: {cpu}");
    let busy_ms = cpu / CPU_MILLIS;
    assert_eq!(line("memory"), billing::quantity_decimal("memory", busy_ms * MEMORY_KIB));
    // The node agent's start-up and shut-down periods, when it reports them, are not requests.
    let agent_ms: u128 = by(SOURCE_AGENT).map(|s| billing::usage_of(s).cpu_millicore_millis / CPU_MILLIS).sum();
    let gateway_ms = busy_ms - agent_ms;
    let ticks = |ms: i64| (ms + TICK_MILLIS - 1) / TICK_MILLIS;
    let least = ticks(safe.iter().map(|r| r.sleep).sum()) * TICK_MILLIS;
    let most = billing::ticks(ok.iter().chain(&maybe).map(|r| (r.start, r.end + RELEASE_LAG_MS))) * TICK_MILLIS;
    let expected: i64 = ok.iter().map(|r| r.sleep).sum();
    eprintln!(
        "busy time billed: {gateway_ms} ms for requests (+{agent_ms} ms from the agent); the successful requests \
         slept {expected} ms; bounds {least}..={most} ms"
    );
    assert!(
        (least..=most).contains(&i64::try_from(gateway_ms).unwrap()),
        "busy time {gateway_ms} ms outside {least}..={most} ms"
    );
}

/// The agent's share of "nothing lost, nothing twice": an instance-based service's one instance
/// runs while its node's `stratus-agent` process is killed with SIGKILL three times at random
/// moments and started again on the same data directory. The container keeps running through
/// the kills; once the service is deleted and the agent has reported every window up to the
/// removal, its reports join into exactly one period: from the container's start (as the engine
/// says) until it was stopped (as the engine says, or the end of a window that ended before the
/// agent confirmed the stop), with no gap (a lost window) and no overlap (a window counted
/// twice); and the controllers' invoice equals the recount.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_instances_life_is_billed_once_across_kill_9_of_its_agent() {
    use stratus_agent::runtime::Runtime;
    let seed = std::env::var("STRATUS_E2E_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or_else(|| {
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos() as u64
    });
    eprintln!("agent kill -9 test: seed {seed} (STRATUS_E2E_SEED={seed} replays its choices)");
    let mut rng = Rng(seed);
    const SERVICE: &str = "lifetime";
    const AGENT_WINDOW: &str = "2";

    let mut c = Cluster::control_plane("billing-agent", Duration::from_secs(30)).await;
    let node = format!("e2e-billing-agent-{}", free_port());
    let usage_dir = c.dir().join(format!("agent-{node}")).join("usage");
    let flags = ["--usage-window-seconds", AGENT_WINDOW];
    let mut agent = c.agent_process_with(&node, &flags).await;
    c.apply(&hello(SERVICE, "x", "      cpuThrottling: false\n      scaling: {minInstances: 1, maxInstances: 1}"))
        .await;
    c.wait_ready(SERVICE).await;
    let instances = c.instances(&format!("stratus.dev/service={SERVICE}")).await;
    assert_eq!(instances.len(), 1, "{instances:#?}");
    let id = instances[0].status.as_ref().map(|s| s.container_id.clone()).unwrap_or_default();
    let docker = stratus_agent::runtime::docker::DockerRuntime::connect(None).expect("docker");
    let container = docker.inspect(&id).await.unwrap().expect("the instance's container");
    let started = stratus_agent::metering::millis_of(container.started_at.expect("a start time"));

    for kill in 1..=3 {
        tokio::time::sleep(Duration::from_millis(u64::try_from(rng.range(500, 3_000)).unwrap())).await;
        drop(agent); // SIGKILL, then reaped
        eprintln!("agent killed ({kill})");
        tokio::time::sleep(Duration::from_millis(u64::try_from(rng.range(0, 2_500)).unwrap())).await;
        agent = c.agent_process_with(&node, &flags).await;
    }
    // The last agent has taken the instance up again: it has reported a window past its start.
    let restarted = now_millis();
    let deadline = Instant::now() + PATIENCE;
    while stratus_agent::metering::reported_until(&usage_dir).is_none_or(|t| t <= restarted) {
        assert!(Instant::now() < deadline, "the restarted agent never reported past {restarted}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let before_delete = now_millis();
    c.client.delete::<stratus_api::v1::Service>("default", SERVICE).await.unwrap();
    let deadline = Instant::now() + PATIENCE;
    while docker.inspect(&id).await.unwrap().is_some_and(|c| c.running) {
        assert!(Instant::now() < deadline, "the container {id} was never stopped");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let stopped = now_millis();
    // The agent confirms the exit, then lets the Instance go.
    let deadline = Instant::now() + PATIENCE;
    while !c.instances(&format!("stratus.dev/service={SERVICE}")).await.is_empty() {
        assert!(Instant::now() < deadline, "the instance was never removed");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let gone = now_millis();
    // Every window up to the stop reported, and every report sent.
    let deadline = Instant::now() + PATIENCE;
    while !(stratus_agent::metering::reported_until(&usage_dir).is_some_and(|t| t >= stopped)
        && spooled(&usage_dir).is_empty())
    {
        assert!(Instant::now() < deadline, "the agent never reported up to {stopped}: {:?}", spooled(&usage_dir));
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(spooled(&usage_dir.join("rejected")).is_empty(), "reports refused by the API");
    drop(agent);

    let reports: Vec<UsageReport> = c
        .client
        .list_all::<UsageReport>(&ListParams::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .filter(|r| r.spec.as_ref().is_some_and(|s| s.service == SERVICE && s.source_kind == SOURCE_AGENT))
        .collect();
    let mut periods: Vec<(i64, i64)> = reports
        .iter()
        .filter_map(|r| r.spec.as_ref())
        .flat_map(|s| &s.periods)
        .map(|p| (billing::millis(p.start.as_ref()).unwrap(), billing::millis(p.end.as_ref()).unwrap()))
        .collect();
    periods.sort_unstable();
    let mut joined: Vec<(i64, i64)> = Vec::new();
    for (s, e) in periods {
        match joined.last_mut() {
            Some(last) if last.1 == s => last.1 = e,
            Some(last) => {
                assert!(last.1 < s, "counted twice: {last:?} and {s}..{e}");
                joined.push((s, e));
            }
            None => joined.push((s, e)),
        }
    }
    eprintln!("{} reports; the life billed: {joined:?}; started {started}, stopped by {stopped}", reports.len());
    assert_eq!(joined.len(), 1, "one unbroken life, no window lost: {joined:?}");
    assert_eq!(joined[0].0, started, "billed from the container's start");
    // Until the engine's exit time; or, when a window ended between the exit and the agent's
    // confirmation of it, until that window's end (its report was already written): never past
    // the confirmation, which comes before the Instance is let go.
    assert!(
        (before_delete..=gone).contains(&joined[0].1),
        "billed until {}, but the container stopped between {before_delete} and {stopped} and the instance was \
         gone at {gone}",
        joined[0].1
    );

    // The controllers fold it all: the invoice equals the recount.
    let period = billing::Period::Monthly.holding(started).0;
    let deadline = Instant::now() + PATIENCE;
    loop {
        let (code, out, err) = c.stratus(&["billing", "recount", "--period", &period, "--tenant", "default"]).await;
        if code == 0 {
            eprintln!("recount: {}", out.trim());
            break;
        }
        assert!(Instant::now() < deadline, "the invoice never matched the recount: exit {code}: {out}{err}");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::future::Future;
use std::time::Duration;

use stratus_api::billing::{MODE_REQUEST, SOURCE_GATEWAY};
use stratus_apiserver::testing::TestServer;

use super::*;

/// How long any condition may take to come true on a loaded machine.
const WAIT: Duration = Duration::from_secs(20);

async fn eventually<F: Future<Output = bool>>(what: &str, mut f: impl FnMut() -> F) {
    let deadline = tokio::time::Instant::now() + WAIT;
    while !f().await {
        assert!(tokio::time::Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[test]
fn windows_are_aligned_to_the_clock() {
    assert_eq!(window_start(1_700_000_012_345, 10_000), 1_700_000_010_000);
    assert_eq!(window_start(1_700_000_010_000, 10_000), 1_700_000_010_000);
    assert_eq!(window_start(59_999, 60_000), 0);
}

#[test]
fn requests_one_at_a_time_give_their_own_periods_and_counts() {
    let mut m = Meter::default();
    for (s, e) in [(1_000, 1_200), (1_500, 1_550), (3_000, 3_100)] {
        m.count();
        m.start(s);
        m.stop(e);
    }
    let taken = m.take(0, 10_000);
    assert_eq!(taken.periods, vec![(1_000, 1_200), (1_500, 1_550), (3_000, 3_100)]);
    assert_eq!(taken.requests, 3);
    assert!(m.is_idle());
    assert_eq!(m.take(10_000, 20_000), Taken::default());
}

#[test]
fn back_to_back_work_is_one_period() {
    let mut m = Meter::default();
    m.start(100);
    m.stop(200);
    // The next request starts as the last one ends (a queued request takes the freed slot).
    m.start(200);
    m.stop(300);
    assert_eq!(m.take(0, 1_000).periods, vec![(100, 300)]);
}

#[test]
fn a_gap_inside_one_tick_joins_the_periods_and_the_bill_is_the_same() {
    let mut m = Meter::default();
    // Gaps of 30 ms and 20 ms inside the ticks [1200, 1300) and [1500, 1600): one period, the
    // ticks it touches those of the three apart. A gap that reaches the next tick keeps them apart.
    for (s, e) in [(1_150, 1_230), (1_260, 1_510), (1_530, 1_540), (1_700, 1_750)] {
        m.start(s);
        m.stop(e);
    }
    let taken = m.take(0, 10_000);
    assert_eq!(taken.periods, vec![(1_150, 1_540), (1_700, 1_750)]);
    let apart = [(1_150, 1_230), (1_260, 1_510), (1_530, 1_540), (1_700, 1_750)];
    assert_eq!(stratus_api::billing::ticks(taken.periods.iter().copied()), stratus_api::billing::ticks(apart));
}

#[test]
fn a_period_open_at_the_end_of_a_window_is_cut_and_continues() {
    let mut m = Meter::default();
    m.start(9_000);
    let first = m.take(0, 10_000);
    assert_eq!(first.periods, vec![(9_000, 10_000)]);
    assert!(m.is_open());
    m.stop(12_500);
    assert_eq!(m.take(10_000, 20_000).periods, vec![(10_000, 12_500)]);
    assert!(m.is_idle());
}

#[test]
fn what_ends_after_the_window_stays_for_the_next() {
    let mut m = Meter::default();
    // The window ends at 10 000 but is taken a little later: a period that ran over the edge
    // and one that started after it.
    m.start(9_900);
    m.stop(10_050);
    m.start(10_170);
    m.stop(10_180);
    assert_eq!(m.take(0, 10_000).periods, vec![(9_900, 10_000)]);
    assert_eq!(m.take(10_000, 20_000).periods, vec![(10_000, 10_050), (10_170, 10_180)]);
}

#[test]
fn usage_of_one_instance_and_window_from_two_meters_merges_busy_time_once() {
    let mut a = Taken { periods: vec![(100, 300), (500, 600)], requests: 2 };
    a.merge(Taken { periods: vec![(250, 400), (600, 650), (900, 950)], requests: 3 });
    assert_eq!(a, Taken { periods: vec![(100, 400), (500, 650), (900, 950)], requests: 5 });
}

fn subject() -> Subject {
    Subject {
        namespace: "default".into(),
        service: "hello".into(),
        revision: "hello-00001".into(),
        instance: "hello-00001-abcde".into(),
        billing_mode: MODE_REQUEST,
        cpu_millis: 1000,
        memory_bytes: 512 << 20,
    }
}

/// A report of the window that ended at the last whole 10 s, one request busy for 250 ms.
fn a_report(instance: &str) -> UsageReport {
    let end = window_start(now_millis(), 10_000);
    let taken = Taken { periods: vec![(end - 5_000, end - 4_750)], requests: 1 };
    report(SOURCE_GATEWAY, "gw-1", &Subject { instance: instance.into(), ..subject() }, (end - 10_000, end), &taken)
}

fn spool_in(dir: &Path) -> (Arc<Spool>, SpoolMetrics) {
    let metrics = SpoolMetrics::default();
    (Spool::open(dir, 100, metrics.clone()).unwrap(), metrics)
}

/// Runs `spool` against `client` until the returned sender is dropped.
fn run(spool: &Arc<Spool>, client: &Client) -> tokio::sync::oneshot::Sender<()> {
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(Arc::clone(spool).run(client.clone(), async move {
        let _ = stopped.await;
    }));
    stop
}

#[tokio::test]
async fn a_report_written_before_a_restart_is_sent_by_the_next_spool() {
    let server = TestServer::start().await;
    let client = Client::new(&server.endpoint).unwrap().with_token(&server.token);
    let dir = tempfile::tempdir().unwrap();
    let report = a_report("hello-00001-abcde");
    let name = report.meta().name.clone();
    {
        let (spool, _) = spool_in(dir.path());
        spool.write(&report).unwrap();
        let file = dir.path().join(format!("{name}.json"));
        let mode = std::fs::metadata(&file).unwrap().permissions();
        assert_eq!(std::os::unix::fs::PermissionsExt::mode(&mode) & 0o777, 0o600);
        // The process "crashes" before sending anything.
    }
    let (spool, metrics) = spool_in(dir.path());
    assert_eq!(metrics.pending.get(), 1);
    let _stop = run(&spool, &client);
    eventually("the report to be stored", || {
        let client = client.clone();
        let name = name.clone();
        async move { client.get::<UsageReport>("", &name).await.is_ok() }
    })
    .await;
    eventually("the delivered file to be removed", || std::future::ready(spool.pending().unwrap().is_empty())).await;
    let stored = client.get::<UsageReport>("", &name).await.unwrap();
    assert_eq!(stored.spec.unwrap().requests, 1);
    assert_eq!(metrics.sent.get(), 1);
    assert_eq!(metrics.pending.get(), 0);
}

#[tokio::test]
async fn already_stored_acknowledges_and_a_refused_report_goes_aside() {
    let server = TestServer::start().await;
    let client = Client::new(&server.endpoint).unwrap().with_token(&server.token);
    let dir = tempfile::tempdir().unwrap();
    let stored = a_report("hello-00001-stored");
    client.create(stored.clone()).await.unwrap();
    let mut impossible = a_report("hello-00001-broken");
    if let Some(spec) = impossible.spec.as_mut() {
        spec.cpu_millis = 0;
    }
    let (spool, metrics) = spool_in(dir.path());
    spool.write(&stored).unwrap();
    spool.write(&impossible).unwrap();
    let _stop = run(&spool, &client);
    eventually("both files to leave the spool", || std::future::ready(spool.pending().unwrap().is_empty())).await;
    assert_eq!(metrics.sent.get(), 1);
    assert_eq!(metrics.refused.get(), 1);
    let aside = dir.path().join(REJECTED).join(format!("{}.json", impossible.meta().name));
    assert!(aside.exists(), "the refused report is kept in rejected/");
    assert!(client.get::<UsageReport>("", &impossible.meta().name).await.is_err());
}

#[tokio::test]
async fn a_failing_api_is_retried_and_nothing_is_lost() {
    // An address nobody listens on.
    let dead = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap()
    };
    let away = Client::new(&format!("http://{dead}")).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (spool, metrics) = spool_in(dir.path());
    let report = a_report("hello-00001-abcde");
    spool.write(&report).unwrap();
    let stop = run(&spool, &away);
    eventually("two failed rounds", || std::future::ready(metrics.failures.get() >= 2)).await;
    assert_eq!(spool.pending().unwrap().len(), 1, "the report stays on disk while the API is away");
    drop(stop);
    // The API is back.
    let server = TestServer::start().await;
    let client = Client::new(&server.endpoint).unwrap().with_token(&server.token);
    let _stop = run(&spool, &client);
    eventually("the report to be delivered", || std::future::ready(spool.pending().unwrap().is_empty())).await;
    assert!(client.get::<UsageReport>("", &report.meta().name).await.is_ok());
}

#[tokio::test]
async fn a_full_spool_refuses_and_counts() {
    let dir = tempfile::tempdir().unwrap();
    let metrics = SpoolMetrics::default();
    let spool = Spool::open(dir.path(), 1, metrics.clone()).unwrap();
    spool.write(&a_report("a")).unwrap();
    // The same report again replaces its file: not a new one.
    spool.write(&a_report("a")).unwrap();
    assert!(matches!(spool.write(&a_report("b")), Err(SpoolError::Full { .. })));
    assert_eq!(metrics.unspooled.get(), 1);
    assert_eq!(spool.pending().unwrap().len(), 1);
}

#[test]
fn limits_are_read_from_the_serving_container() {
    let mut c = Container { name: "app".into(), ..Default::default() };
    assert!(billed_limits(std::slice::from_ref(&c)).unwrap_err().contains("needs cpu and memory"));
    let mut resources = stratus_api::v1::ResourceRequirements::default();
    resources.limits.insert("cpu".into(), "1500m".into());
    resources.limits.insert("memory".into(), "512Mi".into());
    c.resources = Some(resources);
    assert_eq!(billed_limits(&[c]).unwrap(), (1500, 512 << 20));
}

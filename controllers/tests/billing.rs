//! The billing controller against a real API server: usage reports, created as the gateways
//! and agents create them, folded into the ledger and invoiced to the cent as computed by hand;
//! duplicates, restarts, late reports, budgets with their Events and signed webhooks, and the
//! recount. Passes are run one at a time ([`billing::pass`]) on a manual clock, so every test
//! decides what time it is; one test runs the controller's loop.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod cluster;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::Router;
use axum::body::Bytes;
use axum::http::HeaderMap;
use axum::routing::post;
use cluster::{Cluster, eventually};
use stratus_api::Resource;
use stratus_api::billing::{self, MODE_INSTANCE, MODE_REQUEST, Period, SOURCE_AGENT, SOURCE_GATEWAY};
use stratus_api::v1::{
    BillingModePrices, Budget, BudgetSecretRef, BudgetSpec, Event, FreeTier, Invoice, LedgerEntry, Namespace,
    NamespaceSpec, PriceList, PriceListSpec, Secret, UsagePeriod, UsageReport, UsageReportSpec,
};
use stratus_client::{Error, ListParams};
use stratus_controllers::billing::{self as controller, budgets};
use stratus_controllers::clock::ManualClock;
use stratus_controllers::{Config, Context, Metrics};

const TENANT: &str = "acme";
const NS: &str = "team";
const MINUTE: i64 = 60_000;
const GIB: i64 = 1 << 30;

/// A minute five minutes ago: the bucket (and billing period) the tests' usage is in.
fn t0() -> i64 {
    let now = i64::try_from(SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_millis()).unwrap();
    now.div_euclid(MINUTE) * MINUTE - 5 * MINUTE
}

fn at(ms: i64) -> SystemTime {
    UNIX_EPOCH + Duration::from_millis(u64::try_from(ms).unwrap())
}

/// One-minute periods, so one-minute buckets; prices chosen to make cents of small usage.
fn prices(free: bool) -> PriceListSpec {
    let free =
        |cpu, memory, requests| free.then_some(FreeTier { cpu_seconds: cpu, memory_gib_seconds: memory, requests });
    PriceListSpec {
        currency: "USD".into(),
        request_based: Some(BillingModePrices {
            cpu_second: "0.01".into(),
            memory_gib_second: "0.001".into(),
            million_requests: "1000".into(), // 0.001 a request
            free: free(5, 1, 2),
        }),
        instance_based: Some(BillingModePrices {
            cpu_second: "0.008".into(),
            memory_gib_second: "0.0008".into(),
            million_requests: "0".into(),
            free: free(50, 0, 0),
        }),
        period: "1m".into(),
    }
}

struct Billing {
    cluster: Cluster,
    clock: Arc<ManualClock>,
    t0: i64,
}

impl Billing {
    /// A cluster with the tenant's namespace, the PriceList and the clock 30 s into `t0`'s minute.
    async fn start(prices: PriceListSpec) -> Billing {
        let cluster = Cluster::start().await;
        let mut ns = Namespace { spec: Some(NamespaceSpec { tenant: TENANT.into() }), ..Default::default() };
        ns.meta_mut().name = NS.into();
        cluster.client.create(ns).await.unwrap();
        // The API server made the default PriceList when it started: the test's prices replace it.
        let mut list: PriceList = cluster.client.get("", billing::DEFAULT_PRICE_LIST).await.unwrap();
        list.spec = Some(prices);
        cluster.client.update(list).await.unwrap();
        let t0 = t0();
        Billing { cluster, clock: ManualClock::new(at(t0 + 30_000)), t0 }
    }

    /// A controller replica: its own informers, metrics and webhook state, on the test's clock.
    fn replica(&self) -> (Arc<Context>, budgets::Webhooks) {
        let config = Config {
            billing_watermark: Duration::from_secs(1),
            billing_grace: Duration::from_secs(2),
            billing_interval: Duration::from_millis(50),
            ..Default::default()
        };
        let ctx = Context::builder(self.cluster.client.clone(), config, Arc::new(Metrics::default()))
            .clock(self.clock.clone())
            .start();
        (ctx, budgets::Webhooks::new())
    }

    fn set_clock(&self, offset: i64) {
        self.clock.set(at(self.t0 + offset));
    }

    /// Creates a report (`offsets` from t0), as often as `deliveries`: every repeat answers
    /// AlreadyExists.
    #[allow(clippy::too_many_arguments)]
    async fn report(
        &self,
        source_kind: &str,
        mode: &str,
        service: &str,
        instance: &str,
        window: (i64, i64),
        cpu_millis: i64,
        memory_bytes: i64,
        periods: &[(i64, i64)],
        requests: i64,
        deliveries: usize,
    ) -> UsageReport {
        let spec = UsageReportSpec {
            source_kind: source_kind.into(),
            source: if source_kind == SOURCE_AGENT { "n1" } else { "gw" }.into(),
            namespace: NS.into(),
            service: service.into(),
            revision: format!("{service}-00001"),
            instance: instance.into(),
            tenant: String::new(),
            billing_mode: mode.into(),
            window_start: Some(billing::timestamp(self.t0 + window.0)),
            window_end: Some(billing::timestamp(self.t0 + window.1)),
            cpu_millis,
            memory_bytes,
            periods: periods
                .iter()
                .map(|(s, e)| UsagePeriod {
                    start: Some(billing::timestamp(self.t0 + s)),
                    end: Some(billing::timestamp(self.t0 + e)),
                })
                .collect(),
            requests,
        };
        let name = billing::report_name(&spec.source_kind, &spec.source, NS, instance, self.t0 + window.0);
        let mut report = UsageReport { spec: Some(spec), ..Default::default() };
        report.meta_mut().name = name;
        let stored = self.cluster.client.create(report.clone()).await.unwrap();
        for _ in 1..deliveries {
            let again = self.cluster.client.create(report.clone()).await;
            assert!(matches!(again, Err(Error::AlreadyExists(_))), "a duplicate delivery: {again:?}");
        }
        stored
    }

    /// The known workload of the invoice tests, each report delivered `deliveries(i)` times.
    async fn workload(&self, deliveries: impl Fn(usize) -> usize) {
        // Request-based "web": 1 vCPU, 512 MiB; started in 0.5 s (agent), then 3 requests of
        // 2.05 s one after the other (gateway): 21 ticks each.
        let half_gib = GIB / 2;
        let requests = [(1_000, 3_050), (10_000, 12_050), (20_000, 22_050)];
        self.report(
            SOURCE_AGENT,
            MODE_REQUEST,
            "web",
            "web-a",
            (0, MINUTE),
            1000,
            half_gib,
            &[(0, 500)],
            0,
            deliveries(0),
        )
        .await;
        self.report(
            SOURCE_GATEWAY,
            MODE_REQUEST,
            "web",
            "web-a",
            (0, MINUTE),
            1000,
            half_gib,
            &requests,
            3,
            deliveries(1),
        )
        .await;
        // Instance-based "batch": 2 vCPU, 1 GiB, alive 40 s (agent); 5 requests (gateway), whose
        // busy time is not billed in this mode and whose fee is 0.
        self.report(
            SOURCE_AGENT,
            MODE_INSTANCE,
            "batch",
            "batch-a",
            (0, MINUTE),
            2000,
            GIB,
            &[(0, 40_000)],
            0,
            deliveries(2),
        )
        .await;
        self.report(
            SOURCE_GATEWAY,
            MODE_INSTANCE,
            "batch",
            "batch-a",
            (0, MINUTE),
            2000,
            GIB,
            &[(1_000, 2_000)],
            5,
            deliveries(3),
        )
        .await;
    }

    fn period_key(&self, offset: i64) -> String {
        Period::Every(MINUTE).holding(self.t0 + offset).0
    }

    async fn invoice(&self, offset: i64) -> Invoice {
        let name = format!("{TENANT}.{}", self.period_key(offset));
        self.cluster.client.get::<Invoice>("", &name).await.unwrap()
    }

    async fn entries(&self) -> BTreeMap<String, LedgerEntry> {
        let list = self.cluster.client.list_all::<LedgerEntry>(&ListParams::default()).await.unwrap().items;
        list.into_iter().map(|e| (e.meta().name.clone(), e)).collect()
    }

    async fn reports(&self) -> Vec<UsageReport> {
        self.cluster.client.list_all::<UsageReport>(&ListParams::default()).await.unwrap().items
    }

    /// The recount of the period at `offset` against its invoice: the differences.
    async fn recount_differences(&self, offset: i64) -> Vec<controller::Difference> {
        let namespaces = self.cluster.client.list_all::<Namespace>(&ListParams::default()).await.unwrap().items;
        let list = self.cluster.client.get::<PriceList>("", billing::DEFAULT_PRICE_LIST).await.unwrap();
        let recount = controller::recount(TENANT, self.t0 + offset, &self.reports().await, &namespaces, &list).unwrap();
        controller::compare(&recount, &self.invoice(offset).await)
    }
}

async fn pass(ctx: &Context, webhooks: &mut budgets::Webhooks) {
    controller::pass(ctx, webhooks).await.unwrap();
}

fn total(invoice: &Invoice) -> &str {
    &invoice.spec.as_ref().unwrap().total
}

// By hand, without the free tier:
//   web (request-based): 0.5 s + 3 × 2.1 s = 6.8 s; 6.8 vCPU-s × 0.01 = 0.068,
//     3.4 GiB-s × 0.001 = 0.0034, 3 requests × 0.001 = 0.003: 0.0744
//   batch (instance-based): 40 s × 2 vCPU = 80 vCPU-s × 0.008 = 0.64, 40 GiB-s × 0.0008 = 0.032;
//     its requests are free in this mode and its gateway time not billed: 0.672
//   subtotal 0.7464, total 0.75 (rounded once, half up).
// With the free tier: credits 5 vCPU-s × 0.01 + 1 GiB-s × 0.001 + 2 × 0.001 = 0.053
//   (request-based) and 50 vCPU-s × 0.008 = 0.4 (instance-based): 0.453;
//   0.7464 − 0.453 = 0.2934, total 0.29.
#[tokio::test]
async fn a_known_workload_is_invoiced_to_the_cent_in_both_modes() {
    for (free, subtotal, free_tier, want) in [(false, "0.7464", "0.00", "0.75"), (true, "0.7464", "0.453", "0.29")] {
        let b = Billing::start(prices(free)).await;
        b.workload(|_| 1).await;
        let (ctx, mut webhooks) = b.replica();
        pass(&ctx, &mut webhooks).await;
        let invoice = b.invoice(0).await;
        let spec = invoice.spec.clone().unwrap();
        assert_eq!((spec.subtotal.as_str(), spec.free_tier.as_str(), total(&invoice)), (subtotal, free_tier, want));
        assert_eq!(spec.currency, "USD");
        assert!(spec.price_list.starts_with("default@"), "{}", spec.price_list);
        let line = |service: &str, item: &str| {
            spec.lines
                .iter()
                .find(|l| l.service == service && l.item == item)
                .map(|l| (l.quantity.as_str(), l.amount.as_str()))
        };
        assert_eq!(line("web", "cpu"), Some(("6.8", "0.068")));
        assert_eq!(line("web", "memory"), Some(("3.4", "0.0034")));
        assert_eq!(line("web", "requests"), Some(("3", "0.003")));
        assert_eq!(line("batch", "cpu"), Some(("80", "0.64")));
        assert_eq!(line("batch", "requests"), Some(("5", "0.00")), "instance-based requests cost nothing");
        assert_eq!(invoice.status.as_ref().unwrap().phase, "Open");
        assert!(b.recount_differences(0).await.is_empty(), "the recount equals the invoice");
        assert_eq!(ctx.metrics.billing_reports_folded.get(), 4);
        assert_eq!(ctx.metrics.billing_invoices_written.get(), 1);

        // A pass with nothing new writes nothing.
        pass(&ctx, &mut webhooks).await;
        assert_eq!(ctx.metrics.billing_invoices_written.get(), 1);
        assert_eq!(b.invoice(0).await.meta().resource_version, invoice.meta().resource_version);
    }
}

#[tokio::test]
async fn duplicates_repeated_passes_and_a_crash_mid_way_count_each_report_once() {
    let b = Billing::start(prices(false)).await;
    // Each report delivered one to three times.
    b.workload(|i| 1 + i % 3).await;
    // A controller that died after assigning one report and before writing its entry, and an
    // entry left with wrong totals: the next replica recomputes from the assignments.
    let mut reports = b.reports().await;
    let web_agent = reports.iter_mut().find(|r| r.meta().name.starts_with("agent.n1.team.web-a.")).unwrap();
    let entry = format!("{TENANT}.{NS}.web.{MODE_REQUEST}.{}", b.t0);
    web_agent.status = Some(stratus_api::v1::UsageReportStatus { ledger_entry: entry.clone(), adjustment: false });
    b.cluster.client.update_status(web_agent.clone()).await.unwrap();
    let mut wrong = LedgerEntry {
        spec: Some(stratus_api::v1::LedgerEntrySpec {
            tenant: TENANT.into(),
            namespace: NS.into(),
            service: "web".into(),
            billing_mode: MODE_REQUEST.into(),
            cpu_millicore_millis: "999999999".into(),
            reports: 7,
            ..Default::default()
        }),
        ..Default::default()
    };
    wrong.meta_mut().name = entry.clone();
    b.cluster.client.create(wrong).await.unwrap();

    let (ctx, mut webhooks) = b.replica();
    pass(&ctx, &mut webhooks).await;
    assert_eq!(total(&b.invoice(0).await), "0.75");
    assert_eq!(ctx.metrics.billing_reports_folded.get(), 3, "one was assigned before the crash");
    let web = b.entries().await.remove(&entry).unwrap().spec.unwrap();
    assert_eq!((web.reports, web.cpu_millicore_millis.as_str(), web.requests), (2, "6800000", 3));

    // The same reports seen again, and a restarted replica: nothing changes.
    pass(&ctx, &mut webhooks).await;
    let (restarted, mut webhooks) = b.replica();
    pass(&restarted, &mut webhooks).await;
    assert_eq!(restarted.metrics.billing_reports_folded.get(), 0);
    assert_eq!(restarted.metrics.billing_invoices_written.get(), 0);
    assert_eq!(total(&b.invoice(0).await), "0.75");
    assert!(b.recount_differences(0).await.is_empty());
}

#[tokio::test]
async fn a_late_report_lands_in_its_bucket_within_the_grace_and_after_it_as_an_adjustment() {
    let b = Billing::start(prices(false)).await;
    let (ctx, mut webhooks) = b.replica();
    let (cpu, memory) = (1000, GIB);
    let own = format!("{TENANT}.{NS}.web.{MODE_INSTANCE}.{}", b.t0);
    let next = format!("{TENANT}.{NS}.web.{MODE_INSTANCE}.{}", b.t0 + MINUTE);
    b.report(SOURCE_AGENT, MODE_INSTANCE, "web", "a", (0, 10_000), cpu, memory, &[(0, 10_000)], 0, 1).await;
    pass(&ctx, &mut webhooks).await;

    // Past the bucket's end and its 1 s watermark, inside the 2 s grace: still its own bucket.
    b.set_clock(MINUTE + 2_900);
    let inside = b
        .report(SOURCE_AGENT, MODE_INSTANCE, "web", "b", (10_000, 20_000), cpu, memory, &[(10_000, 20_000)], 0, 1)
        .await;
    pass(&ctx, &mut webhooks).await;
    let inside: UsageReport = b.cluster.client.get("", inside.meta().name.as_str()).await.unwrap();
    let status = inside.status.unwrap();
    assert_eq!((status.ledger_entry.as_str(), status.adjustment), (own.as_str(), false));
    let entries = b.entries().await;
    assert_eq!(entries[&own].spec.as_ref().unwrap().cpu_millicore_millis, "20000000");
    assert!(!entries[&own].status.as_ref().is_some_and(|s| s.closed));

    // Past the grace: the bucket closes, and a report of it is folded into the open one.
    b.set_clock(MINUTE + 3_500);
    pass(&ctx, &mut webhooks).await;
    assert!(b.entries().await[&own].status.as_ref().unwrap().closed);
    let late = b
        .report(SOURCE_AGENT, MODE_INSTANCE, "web", "c", (20_000, 25_000), cpu, memory, &[(20_000, 25_000)], 0, 1)
        .await;
    pass(&ctx, &mut webhooks).await;
    let late: UsageReport = b.cluster.client.get("", late.meta().name.as_str()).await.unwrap();
    let status = late.status.unwrap();
    assert_eq!((status.ledger_entry.as_str(), status.adjustment), (next.as_str(), true));
    let entries = b.entries().await;
    let adjusted = entries[&next].spec.clone().unwrap();
    assert_eq!(
        (adjusted.cpu_millicore_millis.as_str(), adjusted.adjustment_cpu_millicore_millis.as_str(), adjusted.reports),
        ("5000000", "5000000", 1)
    );
    assert_eq!(entries[&own].spec.as_ref().unwrap().cpu_millicore_millis, "20000000", "the closed bucket is unchanged");
    assert_eq!(ctx.metrics.billing_adjustments.get(), 1);

    // The closed minute's invoice is final without the late report (20 vCPU-s × 0.008 + 20 GiB-s
    // × 0.0008 = 0.176); the next minute's holds it (5 × 0.008 + 5 × 0.0008 = 0.044).
    let closed = b.invoice(0).await;
    assert_eq!((total(&closed), closed.status.as_ref().unwrap().phase.as_str()), ("0.18", "Final"));
    let open = b.invoice(MINUTE).await;
    assert_eq!((total(&open), open.status.as_ref().unwrap().phase.as_str()), ("0.04", "Open"));
    assert!(b.recount_differences(0).await.is_empty());
    assert!(b.recount_differences(MINUTE).await.is_empty(), "the recount counts the adjustment where it was folded");
}

#[tokio::test]
async fn an_idle_instance_costs_nothing_request_based_and_its_minute_instance_based() {
    let b = Billing::start(prices(false)).await;
    // Both alive the whole minute without a request: the request-based one's agent reports no
    // start-up or shut-down inside it, its gateway no busy period.
    let quarter = GIB / 4;
    b.report(SOURCE_AGENT, MODE_REQUEST, "lazy", "lazy-a", (0, MINUTE), 1000, quarter, &[], 0, 1).await;
    b.report(SOURCE_GATEWAY, MODE_REQUEST, "lazy", "lazy-a", (0, MINUTE), 1000, quarter, &[], 0, 1).await;
    b.report(SOURCE_AGENT, MODE_INSTANCE, "always", "always-a", (0, MINUTE), 1000, quarter, &[(0, MINUTE)], 0, 1).await;
    let (ctx, mut webhooks) = b.replica();
    pass(&ctx, &mut webhooks).await;
    let entries = b.entries().await;
    let spec =
        |service: &str, mode: &str| entries[&format!("{TENANT}.{NS}.{service}.{mode}.{}", b.t0)].spec.clone().unwrap();
    let lazy = spec("lazy", MODE_REQUEST);
    assert_eq!((lazy.cpu_millicore_millis.as_str(), lazy.memory_kib_millis.as_str(), lazy.reports), ("0", "0", 2));
    let always = spec("always", MODE_INSTANCE);
    // 60 s of 1000 millicores and of 262144 KiB.
    assert_eq!(always.cpu_millicore_millis, (60_000u64 * 1000).to_string());
    assert_eq!(always.memory_kib_millis, (60_000u64 * 262_144).to_string());
    // 60 vCPU-s × 0.008 + 15 GiB-s × 0.0008 = 0.492.
    let invoice = b.invoice(0).await;
    assert_eq!((invoice.spec.as_ref().unwrap().subtotal.as_str(), total(&invoice)), ("0.492", "0.49"));
    assert!(invoice.spec.unwrap().lines.iter().all(|l| l.service == "always"));
}

/// The calls a webhook receiver got: each one's signature header and body.
type Calls = Arc<Mutex<Vec<(String, Vec<u8>)>>>;

/// A webhook receiver on a loopback port: its URL and the calls it gets.
async fn webhook_server() -> (String, Calls) {
    let calls: Calls = Arc::default();
    let seen = calls.clone();
    let app = Router::new().route(
        "/hook",
        post(move |headers: HeaderMap, body: Bytes| {
            let seen = seen.clone();
            async move {
                let signature = headers
                    .get(budgets::SIGNATURE_HEADER)
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or_default()
                    .to_string();
                seen.lock().unwrap().push((signature, body.to_vec()));
                "ok"
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    (url, calls)
}

async fn crossing_events(b: &Billing, budget: &str) -> Vec<(String, i32)> {
    let params = ListParams { namespace: "default".into(), ..Default::default() };
    let events = b.cluster.client.list_all::<Event>(&params).await.unwrap().items;
    events
        .into_iter()
        .filter_map(|e| e.spec)
        .filter(|s| s.reason == budgets::REASON && s.involved_object.as_ref().is_some_and(|o| o.name == budget))
        .map(|s| (s.message, s.count))
        .collect()
}

#[tokio::test]
async fn each_budget_threshold_emits_one_event_and_one_signed_webhook_call_across_restarts() {
    let b = Billing::start(prices(false)).await;
    let (url, calls) = webhook_server().await;
    let key = "s3cret-signing-key";
    let mut secret = Secret { data: [("key".to_string(), key.to_string())].into(), ..Default::default() };
    secret.meta_mut().name = "hook".into();
    secret.meta_mut().namespace = NS.into();
    b.cluster.client.create(secret).await.unwrap();
    let mut budget = Budget {
        spec: Some(BudgetSpec {
            tenant: TENANT.into(),
            amount: "1".into(),
            thresholds: vec![50, 90],
            webhook_url: url,
            webhook_secret_ref: Some(BudgetSecretRef { namespace: NS.into(), name: "hook".into(), key: "key".into() }),
        }),
        ..Default::default()
    };
    budget.meta_mut().name = "acme-monthly".into();
    b.cluster.client.create(budget).await.unwrap();

    // 60 vCPU-s instance-based: 0.48 of 1, under 50% (1 byte of memory: a few billionths).
    b.report(SOURCE_AGENT, MODE_INSTANCE, "web", "a", (0, MINUTE), 1000, 1, &[(0, MINUTE)], 0, 1).await;
    let (ctx, mut webhooks) = b.replica();
    pass(&ctx, &mut webhooks).await;
    assert!(crossing_events(&b, "acme-monthly").await.is_empty());
    let status = b.cluster.client.get::<Budget>("", "acme-monthly").await.unwrap().status.unwrap();
    assert_eq!((status.spent.as_str(), status.crossed.len()), ("0.48", 0));

    // +15 vCPU-s: 0.60, over 50%.
    b.report(SOURCE_AGENT, MODE_INSTANCE, "web", "b", (0, MINUTE), 1000, 1, &[(0, 15_000)], 0, 1).await;
    pass(&ctx, &mut webhooks).await;
    pass(&ctx, &mut webhooks).await;
    let events = crossing_events(&b, "acme-monthly").await;
    assert_eq!(events.len(), 1, "{events:?}");
    assert_eq!(events[0].1, 1);
    assert!(
        events[0].0.contains("50%") && events[0].0.contains("0.60") && events[0].0.contains("1 USD"),
        "{}",
        events[0].0
    );
    let status = b.cluster.client.get::<Budget>("", "acme-monthly").await.unwrap().status.unwrap();
    assert_eq!((status.crossed.as_slice(), status.webhook_pending.len()), ([50].as_slice(), 0));
    {
        let calls = calls.lock().unwrap();
        assert_eq!(calls.len(), 1);
        let (signature, body) = &calls[0];
        assert_eq!(signature, &budgets::signature(key.as_bytes(), body), "signed with the Secret's key");
        let json: serde_json::Value = serde_json::from_slice(body).unwrap();
        assert_eq!((json["threshold"].as_i64(), json["spent"].as_str()), (Some(50), Some("0.60")));
    }

    // A restarted controller: the crossing is in the Budget's status, so nothing is repeated.
    drop(ctx);
    let (restarted, mut webhooks) = b.replica();
    pass(&restarted, &mut webhooks).await;
    assert_eq!(crossing_events(&b, "acme-monthly").await.len(), 1);
    assert_eq!(calls.lock().unwrap().len(), 1);
    assert_eq!(restarted.metrics.billing_budget_crossings.get(), 0);

    // +37.5 vCPU-s: 0.90, exactly 90%.
    b.report(SOURCE_AGENT, MODE_INSTANCE, "web", "c", (0, MINUTE), 1000, 1, &[(0, 37_500)], 0, 1).await;
    pass(&restarted, &mut webhooks).await;
    pass(&restarted, &mut webhooks).await;
    let events = crossing_events(&b, "acme-monthly").await;
    assert_eq!(events.len(), 2, "{events:?}");
    assert!(events.iter().all(|(_, count)| *count == 1));
    assert_eq!(restarted.metrics.billing_budget_crossings.get(), 1);
    let calls = calls.lock().unwrap();
    assert_eq!(calls.len(), 2);
    assert_eq!(calls[1].0, budgets::signature(key.as_bytes(), &calls[1].1));
}

#[tokio::test]
async fn the_leader_elected_loop_folds_and_invoices_and_makes_a_missing_price_list() {
    let cluster = Cluster::start().await;
    let mut ns = Namespace { spec: Some(NamespaceSpec { tenant: TENANT.into() }), ..Default::default() };
    ns.meta_mut().name = NS.into();
    cluster.client.create(ns).await.unwrap();
    let t0 = t0();
    let b = Billing { cluster, clock: ManualClock::new(at(t0 + 30_000)), t0 };
    b.report(SOURCE_AGENT, MODE_INSTANCE, "web", "a", (0, MINUTE), 1000, GIB, &[(0, MINUTE)], 0, 1).await;
    let (ctx, _) = b.replica();
    tokio::spawn(controller::run(ctx, b.cluster.shutdown()));
    // The default prices (monthly): 60 vCPU-s × 0.000018 + 60 GiB-s × 0.000002 = 0.0012, under
    // the free tier: a zero total, in the month's invoice.
    let month = Period::Monthly.holding(b.t0).0;
    let invoice = eventually("the month's invoice", || async {
        b.cluster.client.get::<Invoice>("", &format!("{TENANT}.{month}")).await.map_err(|e| e.to_string())
    })
    .await;
    let spec = invoice.spec.unwrap();
    assert_eq!((spec.subtotal.as_str(), spec.free_tier.as_str(), spec.total.as_str()), ("0.0012", "0.0012", "0.00"));
    let list = b.cluster.client.get::<PriceList>("", billing::DEFAULT_PRICE_LIST).await.unwrap();
    assert_eq!(list.spec, Some(billing::default_prices()));
}

//! The console's billing and nodes pages in a real headless Chromium (see
//! `stratus_testkit::console`), against an API server on 127.0.0.1:0. The billing objects are
//! written through the API as the billing controller writes them (priced with
//! `stratus_api::billing::price`, named as the controller names them); the pages must show them
//! exactly as the API holds them, to the tenant they belong to only. Screenshots go to
//! `target/console-screenshots/` (`billing`, `billing-past-invoice`, `billing-second-tenant`,
//! `nodes`, `nodes-forbidden`).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::BTreeMap;

use common::*;
use serde_json::{Value, json};
use stratus_api::Resource;
use stratus_api::billing::{self, LineKey, Period, Prices, Usage};
use stratus_api::v1::{
    Budget, BudgetSpec, BudgetStatus, Condition, Container, ContainerPort, Instance, InstanceSpec, InstanceStatus,
    Invoice, InvoiceStatus, LedgerEntry, LedgerEntrySpec, Node, NodeStatus, PriceList, ResourceRequirements,
};
use stratus_api::validation::ErrorList;
use stratus_client::Client;
use stratus_testkit::console::Browser;

/// Tenants `a` and `b` (namespaces `a-ns`, `b-ns`): `alice` a developer in `a-ns`, `bob` one in
/// `b-ns`, and `ops` a cluster admin.
async fn cluster() -> (TestServer, Client) {
    let s = TestServer::start().await;
    present(&s.token);
    let admin = two_tenants(&s).await;
    for (user, tenant) in [("alice", "a"), ("bob", "b")] {
        create_user(&admin, user, tenant, "").await;
        bind(&admin, &format!("{tenant}-ns"), "developer", user).await;
    }
    create_user(&admin, "ops", "a", "cluster-admin").await;
    (s, admin)
}

async fn log_in(browser: &Browser, s: &TestServer, user: &str) {
    browser.goto(&format!("{}/ui/", s.endpoint)).await;
    browser.fill("#username", user).await;
    browser.fill("#password", &format!("{user}-password")).await;
    browser.click("#login").await;
    browser.wait_for_text("#who", user).await;
}

fn now_millis() -> i64 {
    stratus_api::time::now_seconds() * 1000
}

// ---------------------------------------------------------------- billing objects

/// The cluster's prices with a small free tier, so that usage costs something; stored as the
/// PriceList `default` (monthly periods), which the page reads the period from.
async fn prices(admin: &Client) -> Prices {
    let mut spec = billing::default_prices();
    for mode in [spec.request_based.as_mut().unwrap(), spec.instance_based.as_mut().unwrap()] {
        let free = mode.free.get_or_insert_default();
        free.cpu_seconds = 60;
        free.memory_gib_seconds = 30;
        free.requests = 1000;
    }
    let mut list: PriceList = admin.get("", billing::DEFAULT_PRICE_LIST).await.unwrap();
    list.spec = Some(spec.clone());
    admin.update(list).await.unwrap();
    let mut errs = ErrorList::default();
    Prices::parse(&spec, "spec", &mut errs).unwrap_or_else(|| panic!("{errs}"))
}

/// `(namespace, service, mode) → usage` of one period.
type Used = Vec<(&'static str, &'static str, &'static str, Usage)>;

fn usage(cpu_seconds: u128, gib_seconds: u128, requests: u128) -> Usage {
    Usage {
        cpu_millicore_millis: cpu_seconds * 1_000_000,
        memory_kib_millis: gib_seconds * 1024 * 1024 * 1000,
        requests,
    }
}

/// The invoice of `tenant` for the period holding `at`, priced from `used` as the billing
/// controller prices it (`stratus_api::billing::invoice_spec`), with its phase.
async fn invoice(admin: &Client, prices: &Prices, tenant: &str, at: i64, used: &Used, phase: &str) -> Invoice {
    let (key, start, end) = prices.period.holding(at);
    let by_line: BTreeMap<LineKey<'_>, Usage> =
        used.iter().map(|(namespace, service, mode, u)| (LineKey { namespace, service, mode }, *u)).collect();
    let priced = billing::price(&by_line, prices);
    let spec = billing::invoice_spec(tenant, (&key, start, end), prices, &priced, "default@1");
    let mut inv = Invoice { spec: Some(spec), ..Default::default() };
    inv.meta_mut().name = format!("{tenant}.{key}");
    let mut made = admin.create(inv).await.unwrap();
    made.status = Some(InvoiceStatus { phase: phase.into(), updated_at: Some(billing::timestamp(now_millis())) });
    admin.update_status(made).await.unwrap()
}

/// A LedgerEntry of one service and mode in the hour starting at `hour`.
async fn ledger_entry(admin: &Client, tenant: &str, ns: &str, service: &str, mode: &str, hour: i64, u: Usage) {
    let mut e = LedgerEntry {
        spec: Some(LedgerEntrySpec {
            tenant: tenant.into(),
            namespace: ns.into(),
            service: service.into(),
            billing_mode: mode.into(),
            start: Some(billing::timestamp(hour)),
            end: Some(billing::timestamp(hour + billing::HOUR_MILLIS)),
            cpu_millicore_millis: u.cpu_millicore_millis.to_string(),
            memory_kib_millis: u.memory_kib_millis.to_string(),
            requests: i64::try_from(u.requests).unwrap(),
            reports: 1,
            ..Default::default()
        }),
        ..Default::default()
    };
    e.meta_mut().name = format!("{tenant}.{ns}.{service}.{mode}.{hour}");
    admin.create(e).await.unwrap();
}

async fn budget(admin: &Client, tenant: &str, name: &str, amount: &str, period: &str, spent: &str, crossed: &[i32]) {
    let mut b = Budget {
        spec: Some(BudgetSpec {
            tenant: tenant.into(),
            amount: amount.into(),
            thresholds: vec![50, 90, 100],
            ..Default::default()
        }),
        ..Default::default()
    };
    b.meta_mut().name = name.into();
    let mut made = admin.create(b).await.unwrap();
    made.status = Some(BudgetStatus {
        period: period.into(),
        spent: spent.into(),
        crossed: crossed.to_vec(),
        ..Default::default()
    });
    admin.update_status(made).await.unwrap();
}

/// The rows of an invoice table on the page: `[data-line, cell texts…]` of its body, and
/// `[label, text]` of its foot.
async fn invoice_rows(browser: &Browser, table: &str) -> (Vec<Vec<String>>, Vec<Vec<String>>) {
    let script = "const t = document.querySelector(arguments[0]);\
                  const rows = (sel) => [...t.querySelectorAll(sel)].map(r => [r.dataset.line || r.dataset.total || '', ...[...r.cells].map(c => c.textContent)]);\
                  return [rows('tbody tr'), rows('tfoot tr')];";
    let v = browser.run(script, vec![json!(table)]).await;
    let rows: (Vec<Vec<String>>, Vec<Vec<String>>) = serde_json::from_value(v).unwrap();
    rows
}

/// What the page must show of `inv`: its lines as the API holds them (the service of a
/// free-tier credit is "Free tier"), and the subtotal, free-tier credit and total.
fn expected_rows(inv: &Invoice) -> (Vec<Vec<String>>, Vec<Vec<String>>) {
    let spec = inv.spec.as_ref().unwrap();
    let lines = spec
        .lines
        .iter()
        .map(|l| {
            let service = if l.item.starts_with("free-tier") {
                "Free tier".to_string()
            } else {
                format!("{}/{}", l.namespace, l.service)
            };
            vec![
                format!("{}|{}|{}|{}", l.namespace, l.service, l.billing_mode, l.item),
                service,
                l.billing_mode.clone(),
                l.item.clone(),
                l.quantity.clone(),
                l.unit.clone(),
                l.unit_price.clone(),
                l.amount.clone(),
            ]
        })
        .collect();
    let cur = &spec.currency;
    let foot = vec![
        vec!["Subtotal".into(), "Subtotal".into(), format!("{} {cur}", spec.subtotal)],
        vec!["Free tier credits".into(), "Free tier credits".into(), format!("-{} {cur}", spec.free_tier)],
        vec!["Total".into(), "Total".into(), format!("{} {cur}", spec.total)],
    ];
    (lines, foot)
}

#[tokio::test]
async fn the_billing_page_shows_the_tenants_invoices_usage_and_budgets_as_the_api_has_them() {
    let (s, admin) = cluster().await;
    let prices = prices(&admin).await;
    assert_eq!(prices.period, Period::Monthly);
    let now = now_millis();
    let (key, start, _) = prices.period.holding(now);
    let (past_key, ..) = prices.period.holding(start - 1);

    // Tenant a: this month's usage of two services in both modes, last month's of one.
    let current_used: Used = vec![
        ("a-ns", "web", billing::MODE_REQUEST, usage(3_725, 1_862, 250_000)),
        ("a-ns", "web", billing::MODE_INSTANCE, usage(900, 450, 1_200)),
        ("a-ns", "api", billing::MODE_REQUEST, usage(42, 21, 7_000)),
    ];
    let current = invoice(&admin, &prices, "a", now, &current_used, "Open").await;
    let past_used: Used = vec![("a-ns", "web", billing::MODE_REQUEST, usage(10_000, 5_000, 1_000_000))];
    let past = invoice(&admin, &prices, "a", start - 1, &past_used, "Final").await;
    let total = current.spec.as_ref().unwrap().total.clone();
    assert_ne!(total, "0.00", "the usage must cost something past the free tier");
    // Tenant b: a bill of its own, which tenant a's users must not see, and the reverse.
    let b_used: Used = vec![("b-ns", "beta", billing::MODE_REQUEST, usage(777, 333, 5_000))];
    let b_invoice = invoice(&admin, &prices, "b", now, &b_used, "Open").await;
    let b_total = b_invoice.spec.as_ref().unwrap().total.clone();
    assert_ne!(b_total, total);

    // The ledger: two hours of web and one of api, in the last day.
    let hour = now.div_euclid(billing::HOUR_MILLIS) * billing::HOUR_MILLIS;
    ledger_entry(
        &admin,
        "a",
        "a-ns",
        "web",
        billing::MODE_REQUEST,
        hour - 2 * billing::HOUR_MILLIS,
        usage(1200, 600, 90_000),
    )
    .await;
    ledger_entry(&admin, "a", "a-ns", "web", billing::MODE_REQUEST, hour, usage(2525, 1262, 160_000)).await;
    ledger_entry(&admin, "a", "a-ns", "web", billing::MODE_INSTANCE, hour, usage(900, 450, 1_200)).await;
    ledger_entry(&admin, "a", "a-ns", "api", billing::MODE_REQUEST, hour - billing::HOUR_MILLIS, usage(42, 21, 7_000))
        .await;
    ledger_entry(&admin, "b", "b-ns", "beta", billing::MODE_REQUEST, hour, usage(777, 333, 5_000)).await;

    // A budget of 100 whose 50% threshold the controller found crossed, and one of b's.
    budget(&admin, "a", "a-monthly", "100", &key, "55.25", &[50]).await;
    budget(&admin, "b", "b-monthly", "10", &key, &b_total, &[]).await;

    let browser = Browser::start().await;
    // Tall enough for the screenshots to hold the chart and the invoice.
    browser.resize(1280, 2000).await;
    log_in(&browser, &s, "alice").await;
    browser.click("#nav-billing").await;
    assert_eq!(browser.wait_for_text("#current-total", &total).await, format!("{total} USD"));
    browser.wait_for_text("#live-state", "Live").await;
    assert!(browser.client().current_url().await.unwrap().as_str().ends_with("#/billing"));

    // The current invoice, line by line, exactly as the API holds it.
    let stored: Invoice = admin.get("", &format!("a.{key}")).await.unwrap();
    assert_eq!(invoice_rows(&browser, "#current-lines").await, expected_rows(&stored));
    assert!(
        stored.spec.as_ref().unwrap().lines.iter().any(|l| l.item.starts_with("free-tier")),
        "a free-tier credit line"
    );

    // Usage per service: both services in the chart and the table, a-ns/web's sum of its
    // entries (3 725 vCPU-seconds over both modes and hours).
    let web = browser.wait_for_text("#usage-table tr[data-service='a-ns/web']", "a-ns/web").await;
    assert!(web.contains("4,625"), "1200 + 2525 + 900 vCPU-seconds: {web}");
    browser.wait_for_text("#usage-table tr[data-service='a-ns/api']", "42").await;
    let series = browser
        .run(
            "return [...document.querySelectorAll('#usage-chart svg g.series')].map(g => [g.dataset.service, g.querySelectorAll('rect').length])",
            vec![],
        )
        .await;
    assert_eq!(series, json!([["a-ns/api", 1], ["a-ns/web", 2]]));
    browser.find("#usage-metric").await.select_by_value("requests").await.unwrap();
    browser
        .eventually("the chart to show requests", || async {
            let title = browser.run("return document.getElementById('usage-chart-title').textContent", vec![]).await;
            title.as_str().is_some_and(|t| t.starts_with("Requests per hour")).then_some(())
        })
        .await
        .unwrap();
    let stacked = browser
        .run(
            "return document.querySelector(\"g[data-service='a-ns/web'] rect:last-of-type title\").textContent",
            vec![],
        )
        .await;
    assert!(stacked.as_str().unwrap().starts_with("a-ns/web: 161,200 Requests"), "{stacked}");

    // The budget: 55.25 of 100 spent, 50% crossed, 90% and 100% not.
    let b = browser.wait_for_text("li.budget[data-name='a-monthly']", "55.25").await;
    assert!(b.contains("Spent 55.25 of 100 USD") && b.contains("(55.2%)"), "{b}");
    let crossed = browser
        .run(
            "return [...document.querySelectorAll(\"li.budget[data-name='a-monthly'] li[data-threshold]\")].map(t => [t.dataset.threshold, t.dataset.crossed, t.textContent])",
            vec![],
        )
        .await;
    assert_eq!(
        crossed,
        json!([
            ["50", "true", "50% crossed"],
            ["90", "false", "90% not reached"],
            ["100", "false", "100% not reached"]
        ])
    );
    browser.screenshot("billing").await;

    // Live: the controller reprices the invoice and records a crossing; the page follows, no reload.
    browser.run("window.stratusTestMark = 'unchanged'", vec![]).await;
    let mut more = current_used.clone();
    more.push(("a-ns", "batch", billing::MODE_INSTANCE, usage(5_000, 2_000, 0)));
    let repriced = {
        let by_line: BTreeMap<LineKey<'_>, Usage> =
            more.iter().map(|(namespace, service, mode, u)| (LineKey { namespace, service, mode }, *u)).collect();
        billing::price(&by_line, &prices).total.to_decimal(2)
    };
    admin.delete::<Invoice>("", &format!("a.{key}")).await.unwrap();
    let current = invoice(&admin, &prices, "a", now, &more, "Open").await;
    assert_eq!(current.spec.as_ref().unwrap().total, repriced);
    browser.wait_for_text("#current-total", &repriced).await;
    assert_eq!(invoice_rows(&browser, "#current-lines").await, expected_rows(&current));
    let mut budget_now: Budget = admin.get("", "a-monthly").await.unwrap();
    budget_now.status.as_mut().unwrap().crossed = vec![50, 90];
    budget_now.status.as_mut().unwrap().spent = "95".into();
    admin.update_status(budget_now).await.unwrap();
    browser.wait_for_text("li.budget[data-name='a-monthly'] li[data-threshold='90']", "90% crossed").await;
    assert_eq!(browser.run("return window.stratusTestMark", vec![]).await, json!("unchanged"), "the page reloaded");

    // The past invoice: listed, and its lines open on demand.
    let past_name = format!("a.{past_key}");
    let summary = browser.wait_for_text(&format!("details[data-name='{past_name}'] summary"), &past_name).await;
    let past_total = past.spec.as_ref().unwrap().total.clone();
    assert!(summary.contains("Final") && summary.contains(&format!("{past_total} USD")), "{summary}");
    browser.click(&format!("details[data-name='{past_name}'] summary")).await;
    let table = format!("details[data-name='{past_name}'] table");
    browser.wait_for_text(&table, "Total").await;
    assert_eq!(invoice_rows(&browser, &table).await, expected_rows(&past));
    browser.run(&format!("document.querySelector(\"{table}\").scrollIntoView()"), vec![]).await;
    browser.screenshot("billing-past-invoice").await;

    // Nothing of tenant b on tenant a's page.
    let page = browser.find("main").await.text().await.unwrap();
    assert!(!page.contains("b-ns") && !page.contains("b-monthly") && !page.contains(&b_total), "{page}");
    browser.close().await;

    // Bob, of tenant b, sees b's bill only: not a's invoices, usage or budgets, even when he
    // asks for tenant a's page by its address.
    let browser = Browser::start().await;
    log_in(&browser, &s, "bob").await;
    browser.goto(&format!("{}/ui/#/billing/a", s.endpoint)).await;
    assert_eq!(browser.wait_for_text("#current-total", &b_total).await, format!("{b_total} USD"));
    browser.wait_for_text("#past-empty", "No earlier invoices").await;
    browser.wait_for_text("#usage-table tr[data-service='b-ns/beta']", "777").await;
    browser.wait_for_text("li.budget[data-name='b-monthly']", "b-monthly").await;
    let page = browser.find("main").await.text().await.unwrap();
    assert!(page.contains("Billing of tenant b"), "{page}");
    for of_a in ["a-ns", "a-monthly", &format!("a.{key}"), &past_name, &repriced] {
        assert!(!page.contains(of_a), "bob sees {of_a}: {page}");
    }
    // The API, asked from the page with bob's session, lists b's invoices only.
    let names = browser
        .run_async(
            "fetch('/apis/stratus.dev/v1/invoices', {headers: {'X-Stratus-Console': '1'}}).then(r => r.json())\
             .then(l => arguments[0](l.items.map(i => i.metadata.name)))",
            vec![],
        )
        .await;
    assert_eq!(names, json!([format!("b.{key}")]));
    browser.screenshot("billing-second-tenant").await;
    browser.close().await;
}

// ---------------------------------------------------------------- nodes

fn node_instance(name: &str, node: &str, requests: &[(&str, &str)], limits: &[(&str, &str)]) -> Instance {
    let map = |pairs: &[(&str, &str)]| pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
    let mut inst = Instance {
        spec: Some(InstanceSpec {
            service_name: "web".into(),
            revision_name: "web-00001".into(),
            node_name: node.into(),
            containers: vec![Container {
                name: "user-container".into(),
                image: "127.0.0.1:5000/hello:v1".into(),
                ports: vec![ContainerPort { container_port: 8080, ..Default::default() }],
                resources: Some(ResourceRequirements { requests: map(requests), limits: map(limits) }),
                ..Default::default()
            }],
            ..Default::default()
        }),
        ..Default::default()
    };
    inst.meta_mut().name = name.into();
    inst.meta_mut().namespace = "a-ns".into();
    inst
}

async fn set_phase(admin: &Client, inst: Instance, phase: &str, ready: bool) {
    let mut made = inst;
    made.status = Some(InstanceStatus {
        phase: phase.into(),
        ready,
        address: if ready { "127.0.0.1:40001".into() } else { String::new() },
        ..Default::default()
    });
    admin.update_status(made).await.unwrap();
}

/// The page finds the current invoice by the key of the period holding now, which it works out
/// itself (`periodKey` in billing.js): it must be the key the billing controller names invoices
/// by (`Period::holding`), for every kind of period and at the edges of months, leap days and
/// centuries.
#[tokio::test]
async fn the_billing_pages_period_keys_are_the_controllers() {
    let s = TestServer::start().await;
    let browser = Browser::start().await;
    browser.goto(&format!("{}/ui/", s.endpoint)).await;
    browser.find("#username").await;
    let periods = ["monthly", "1m", "10m", "15m", "30m", "1h", "3h", "24h", "168h", "720h"];
    let instants: Vec<i64> = vec![
        now_millis(),
        0,
        // 2000-02-29 (a leap day of a century year), its first and last milliseconds.
        951_782_400_000,
        951_868_799_999,
        // 2024-12-31T23:59:59.999Z and the next millisecond.
        1_735_689_599_999,
        1_735_689_600_000,
        // 2100-03-01 (2100 is no leap year), one millisecond before and at midnight.
        4_107_542_399_999,
        4_107_542_400_000,
    ];
    let answer = browser
        .run_async(
            "import('/ui/assets/billing.js').then(b => arguments[2](arguments[0].flatMap(p => arguments[1].map(t => b.periodKey(p, t)))))",
            vec![json!(periods), json!(instants)],
        )
        .await;
    let expected: Vec<String> = periods
        .iter()
        .flat_map(|p| {
            let period: Period = p.parse().unwrap();
            instants.iter().map(move |t| period.holding(*t).0)
        })
        .collect();
    assert_eq!(answer, json!(expected));
    browser.close().await;
}

#[tokio::test]
async fn the_nodes_page_shows_capacity_allocation_and_instances_to_admins_only() {
    let (s, admin) = cluster().await;
    let mut node = Node::default();
    node.meta_mut().name = "node-1".into();
    let mut node = admin.create(node).await.unwrap();
    let quantities = |cpu: &str, memory: &str| {
        [("cpu", cpu), ("memory", memory), ("instances", "20")].map(|(k, v)| (k.to_string(), v.to_string())).into()
    };
    node.status = Some(NodeStatus {
        capacity: quantities("4", "8Gi"),
        allocatable: quantities("3500m", "7Gi"),
        conditions: vec![
            Condition {
                r#type: "Ready".into(),
                status: "True".into(),
                reason: "AgentReady".into(),
                ..Default::default()
            },
            Condition { r#type: "DiskPressure".into(), status: "False".into(), ..Default::default() },
        ],
        ..Default::default()
    });
    admin.update_status(node).await.unwrap();
    // Two running instances: one with requests, one with limits only (its requests are its
    // limits); a finished one holds nothing.
    let one = admin
        .create(node_instance("web-1", "node-1", &[("cpu", "500m"), ("memory", "256Mi")], &[("cpu", "1")]))
        .await
        .unwrap();
    set_phase(&admin, one, "Running", true).await;
    let two = admin.create(node_instance("web-2", "node-1", &[], &[("cpu", "1"), ("memory", "512Mi")])).await.unwrap();
    set_phase(&admin, two, "Running", false).await;
    let done = admin.create(node_instance("web-0", "node-1", &[("cpu", "2"), ("memory", "1Gi")], &[])).await.unwrap();
    set_phase(&admin, done, "Succeeded", false).await;

    let browser = Browser::start().await;
    log_in(&browser, &s, "ops").await;
    browser.wait_for_text("#nav-nodes", "Nodes").await;
    browser.click("#nav-nodes").await;
    browser.wait_for_text("section[data-node='node-1'] h2", "node-1").await;
    browser.wait_for_text("#live-state", "Live").await;
    let resources = "return [...document.querySelectorAll(\"#resources-node-1 tbody tr\")].map(r => [...r.cells].map(c => c.textContent))";
    let expected = json!([
        ["cpu", "4", "3500m", "1500m (42%)"],
        ["memory", "8Gi", "7Gi", "768Mi (10%)"],
        ["instances", "20", "20", "2 (10%)"],
    ]);
    let last = std::cell::RefCell::new(Value::Null);
    browser
        .eventually("the two running instances to be counted", || async {
            let rows = browser.run(resources, vec![]).await;
            *last.borrow_mut() = rows.clone();
            (rows == expected).then_some(())
        })
        .await
        .unwrap_or_else(|e| panic!("{e}; last seen: {}", last.borrow()));
    let conditions = browser.wait_for_text("section[data-node='node-1'] .conditions", "Ready: True").await;
    assert!(conditions.contains("AgentReady") && conditions.contains("DiskPressure: False"), "{conditions}");
    let rows = browser
        .run(
            "return [...document.querySelectorAll('#instances-node-1 tbody tr')].map(r => [...r.cells].map(c => c.textContent))",
            vec![],
        )
        .await;
    assert_eq!(
        rows,
        json!([
            ["a-ns/web-0", "web", "web-00001", "Succeeded", "no", "2", "1Gi", "—"],
            ["a-ns/web-1", "web", "web-00001", "Running", "yes", "500m", "256Mi", "127.0.0.1:40001"],
            ["a-ns/web-2", "web", "web-00001", "Running", "no", "1", "512Mi", "—"],
        ])
    );

    // Live: a new instance bound to the node shows, and counts, without a reload.
    let three =
        admin.create(node_instance("web-3", "node-1", &[("cpu", "250m"), ("memory", "256Mi")], &[])).await.unwrap();
    set_phase(&admin, three, "Running", true).await;
    browser.wait_for_text("#instances-node-1 tr[data-instance='a-ns/web-3']", "250m").await;
    browser.wait_for_text("#resources-node-1 tr[data-resource='cpu']", "1750m (50%)").await;
    browser.screenshot("nodes").await;
    browser.close().await;

    // A tenant's developer has no Nodes link, and the page says no.
    let browser = Browser::start().await;
    log_in(&browser, &s, "alice").await;
    browser.wait_for_text("#live-state", "Live").await;
    browser.goto(&format!("{}/ui/#/nodes", s.endpoint)).await;
    browser.wait_for_text("#nodes-forbidden", "You may not list Nodes").await;
    assert!(browser.find("#nav-nodes").await.attr("hidden").await.unwrap().is_some(), "alice sees the Nodes link");
    let page = browser.find("main").await.text().await.unwrap();
    assert!(!page.contains("node-1"), "{page}");
    let status = browser
        .run_async(
            "fetch('/apis/stratus.dev/v1/nodes', {headers: {'X-Stratus-Console': '1'}}).then(r => arguments[0](r.status))",
            vec![],
        )
        .await;
    assert_eq!(status, json!(403));
    browser.screenshot("nodes-forbidden").await;
    browser.close().await;
}

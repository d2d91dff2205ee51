//! Billing on a real server: a tenant's users read their own tenant's invoices, ledger and
//! budgets and nobody else's; only a tenant admin sets budgets, only the platform writes bills;
//! the default PriceList exists from the start and every user may read it; usage reports are
//! stamped with their namespace's tenant, refused (and counted) when impossible, stored once
//! however often delivered, and never changed.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::*;
use serde_json::json;
use stratus_api::Resource;
use stratus_api::billing::{self, report_name};
use stratus_api::identity::roles;
use stratus_api::v1::{
    Budget, BudgetSecretRef, BudgetSpec, Invoice, InvoiceSpec, LedgerEntry, LedgerEntrySpec, Namespace, NamespaceSpec,
    PriceList, UsagePeriod, UsageReport, UsageReportSpec,
};
use stratus_client::{Client, Error, ListParams};

const API: &str = "/apis/stratus.dev/v1";

fn invoice(tenant: &str, period: &str) -> Invoice {
    let mut i = Invoice {
        spec: Some(InvoiceSpec {
            tenant: tenant.into(),
            period: period.into(),
            currency: "USD".into(),
            subtotal: "1.272945".into(),
            free_tier: "0".into(),
            total: "1.27".into(),
            ..Default::default()
        }),
        ..Default::default()
    };
    i.meta_mut().name = format!("{tenant}.{period}");
    i
}

fn budget(name: &str, tenant: &str) -> Budget {
    let mut b = Budget {
        spec: Some(BudgetSpec {
            tenant: tenant.into(),
            amount: "100".into(),
            thresholds: vec![50, 90, 100],
            ..Default::default()
        }),
        ..Default::default()
    };
    b.meta_mut().name = name.into();
    b
}

fn now_millis() -> i64 {
    let d = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap();
    i64::try_from(d.as_millis()).unwrap()
}

/// A gateway's report on an instance in `namespace`, for a 10 s window ending a minute ago.
fn report(namespace: &str) -> UsageReport {
    let start = (now_millis() - 70_000) / 1000 * 1000;
    let mut r = UsageReport {
        spec: Some(UsageReportSpec {
            source_kind: billing::SOURCE_GATEWAY.into(),
            source: "gw".into(),
            namespace: namespace.into(),
            service: "hello".into(),
            revision: "hello-00001".into(),
            instance: "hello-00001-abcde".into(),
            tenant: "someone-else".into(),
            billing_mode: billing::MODE_REQUEST.into(),
            window_start: Some(billing::timestamp(start)),
            window_end: Some(billing::timestamp(start + 10_000)),
            cpu_millis: 1000,
            memory_bytes: 512 << 20,
            periods: vec![UsagePeriod {
                start: Some(billing::timestamp(start + 100)),
                end: Some(billing::timestamp(start + 900)),
            }],
            requests: 3,
        }),
        ..Default::default()
    };
    r.meta_mut().name = report_name("gateway", "gw", namespace, "hello-00001-abcde", start);
    r
}

#[tokio::test]
async fn a_tenant_reads_its_own_bill_and_no_other() {
    let s = start().await;
    let admin = two_tenants(&s).await;
    create_user(&admin, "alice", "a", "").await;
    admin.create(invoice("a", "2026-12")).await.unwrap();
    admin.create(invoice("b", "2026-12")).await.unwrap();
    let mut entry = LedgerEntry {
        spec: Some(LedgerEntrySpec { tenant: "b".into(), namespace: "b-ns".into(), ..Default::default() }),
        ..Default::default()
    };
    entry.meta_mut().name = "b.secret-entry".into();
    admin.create(entry).await.unwrap();
    let (alice, _) = user_client(&s, "alice").await;

    let mine: Invoice = alice.get("", "a.2026-12").await.unwrap();
    assert_eq!(mine.spec.unwrap().total, "1.27");
    let theirs = alice.get::<Invoice>("", "b.2026-12").await;
    assert!(matches!(&theirs, Err(Error::NotFound(m)) if m.contains("not found")), "{theirs:?}");
    let listed = alice.list::<Invoice>(&ListParams::default()).await.unwrap();
    let names: Vec<_> = listed.items.iter().map(|i| i.meta().name.clone()).collect();
    assert_eq!(names, ["a.2026-12"]);
    assert!(alice.list::<LedgerEntry>(&ListParams::default()).await.unwrap().items.is_empty());
    assert!(matches!(alice.get::<LedgerEntry>("", "b.secret-entry").await, Err(Error::NotFound(_))));

    // Writing a bill is the platform's.
    let refused = alice.create(invoice("a", "2027-01")).await;
    assert!(matches!(&refused, Err(Error::Forbidden(_))), "{refused:?}");
    let refused = alice.delete::<Invoice>("", "a.2026-12").await;
    assert!(matches!(&refused, Err(Error::Forbidden(_))), "{refused:?}");
    // Usage reports are nobody's to read but the platform's.
    admin.create(report("a-ns")).await.unwrap();
    assert!(matches!(alice.list::<UsageReport>(&ListParams::default()).await, Err(Error::Forbidden(_))));
    let name = report("a-ns").meta().name.clone();
    assert!(matches!(alice.get::<UsageReport>("", &name).await, Err(Error::NotFound(_))));
}

#[tokio::test]
async fn a_tenant_admin_sets_its_own_budgets_only() {
    let s = start().await;
    let admin = two_tenants(&s).await;
    create_user(&admin, "carol", "a", roles::TENANT_ADMIN).await;
    create_user(&admin, "alice", "a", "").await;
    let (carol, _) = user_client(&s, "carol").await;
    let (alice, _) = user_client(&s, "alice").await;

    carol.create(budget("a-monthly", "a")).await.unwrap();
    // Left out, the tenant is the creator's.
    let made = carol.create(budget("a-defaulted", "")).await.unwrap();
    assert_eq!(made.spec.unwrap().tenant, "a");
    let refused = carol.create(budget("b-monthly", "b")).await;
    assert!(matches!(&refused, Err(Error::Forbidden(_))), "{refused:?}");
    admin.create(budget("b-monthly", "b")).await.unwrap();
    assert!(matches!(carol.get::<Budget>("", "b-monthly").await, Err(Error::NotFound(_))));
    assert!(matches!(carol.delete::<Budget>("", "b-monthly").await, Err(Error::NotFound(_))));
    // Nor may it move its budget to another tenant.
    let mut moved: Budget = carol.get("", "a-monthly").await.unwrap();
    moved.spec.as_mut().unwrap().tenant = "b".into();
    assert!(carol.update(moved).await.is_err());

    // A plain user of the tenant reads its budgets and changes none; the status is the controller's.
    let listed = alice.list::<Budget>(&ListParams::default()).await.unwrap();
    let mut names: Vec<_> = listed.items.iter().map(|b| b.meta().name.clone()).collect();
    names.sort();
    assert_eq!(names, ["a-defaulted", "a-monthly"]);
    assert!(matches!(alice.delete::<Budget>("", "a-monthly").await, Err(Error::Forbidden(_))));
    let mut status: Budget = carol.get("", "a-monthly").await.unwrap();
    status.status.get_or_insert_default().spent = "0".into();
    assert!(matches!(carol.update_status(status).await, Err(Error::Forbidden(_))));
    carol.delete::<Budget>("", "a-monthly").await.unwrap();

    // A webhook is signed with a key of the budget's own tenant: another tenant's namespace (or
    // one that does not exist) is refused alike, naming the field; its own is taken.
    let hooked = |namespace: &str| {
        let mut b = budget("a-hooked", "a");
        let spec = b.spec.as_mut().unwrap();
        spec.webhook_url = "https://hooks.example/budget".into();
        spec.webhook_secret_ref =
            Some(BudgetSecretRef { namespace: namespace.into(), name: "hook".into(), key: "key".into() });
        b
    };
    for foreign in ["b-ns", "nowhere"] {
        let refused = carol.create(hooked(foreign)).await;
        assert!(
            matches!(&refused, Err(Error::Invalid(m)) if m.contains("spec.webhookSecretRef.namespace") && m.contains("not tenant \"a\"'s")),
            "{foreign}: {refused:?}"
        );
    }
    let mut taken = carol.create(hooked("a-ns")).await.unwrap();
    // Nor can an update point it elsewhere later.
    taken.spec.as_mut().unwrap().webhook_secret_ref.as_mut().unwrap().namespace = "b-ns".into();
    assert!(matches!(carol.update(taken).await, Err(Error::Invalid(_))));
}

#[tokio::test]
async fn the_default_price_list_is_made_at_start_and_public() {
    let s = start().await;
    let admin = two_tenants(&s).await;
    create_user(&admin, "alice", "a", "").await;
    let (alice, _) = user_client(&s, "alice").await;
    let prices: PriceList = alice.get("", billing::DEFAULT_PRICE_LIST).await.unwrap();
    assert_eq!(prices.spec.unwrap(), billing::default_prices());
    let mut changed: PriceList = admin.get("", "default").await.unwrap();
    changed.spec.as_mut().unwrap().currency = "EUR".into();
    assert!(matches!(alice.update(changed.clone()).await, Err(Error::Forbidden(_))));
    admin.update(changed).await.unwrap();
    // A second server over the same store bootstraps again, as a restart does: an operator's
    // prices are kept.
    let again = TestServer::start_with(s.store.clone(), tempfile::tempdir().unwrap()).await;
    let kept: PriceList =
        Client::new(&again.endpoint).unwrap().with_token(&again.token).get("", "default").await.unwrap();
    assert_eq!(kept.spec.unwrap().currency, "EUR");
}

#[tokio::test]
async fn usage_reports_are_stamped_refused_counted_stored_once_and_immutable() {
    let s = start().await;
    let admin = two_tenants(&s).await;
    let sent = report("a-ns");
    let name = sent.meta().name.clone();
    let stored = admin.create(sent.clone()).await.unwrap();
    assert_eq!(stored.spec.as_ref().unwrap().tenant, "a", "the namespace's tenant, not the sender's");

    // Delivered again (even with other numbers): already there, and nothing new is stored.
    let mut again = sent.clone();
    again.spec.as_mut().unwrap().requests = 99;
    let dup = admin.create(again).await;
    assert!(matches!(&dup, Err(Error::AlreadyExists(_))), "{dup:?}");
    let all = admin.list::<UsageReport>(&ListParams::default()).await.unwrap();
    assert_eq!(all.items.len(), 1);
    assert_eq!(all.items[0].spec.as_ref().unwrap().requests, 3);
    assert_eq!(all.items[0].meta().resource_version, stored.meta().resource_version);

    // Its spec never changes; its status is the controller's to write.
    let mut edited = stored.clone();
    edited.spec.as_mut().unwrap().requests = 4;
    let refused = admin.update(edited).await;
    assert!(matches!(&refused, Err(Error::Invalid(m)) if m.contains("immutable")), "{refused:?}");
    let mut folded = stored.clone();
    folded.status.get_or_insert_default().ledger_entry = "a.entry".into();
    let folded = admin.update_status(folded).await.unwrap();
    assert_eq!(folded.status.unwrap().ledger_entry, "a.entry");
    // Written back with whatever tenant, the stamped one stays and nothing changes.
    let mut same: UsageReport = admin.get("", &name).await.unwrap();
    same.spec.as_mut().unwrap().tenant = "b".into();
    assert_eq!(admin.update(same).await.unwrap().spec.unwrap().tenant, "a");

    // Impossible reports: 422 naming the field, and counted by that field.
    let base = format!("{}{API}/usagereports", s.endpoint);
    let mut body = serde_json::to_value(report("no-such-ns")).unwrap();
    body["apiVersion"] = json!("stratus.dev/v1");
    body["kind"] = json!("UsageReport");
    let r = send_json("POST", &base, &body).await;
    assert_eq!(r.status, 422, "{}", r.text);
    assert_eq!(r.body["details"]["causes"][0]["field"], "spec.namespace", "{}", r.text);
    let mut late = report("a-ns");
    let start = billing::millis(late.spec.as_ref().unwrap().window_start.as_ref()).unwrap();
    late.spec.as_mut().unwrap().window_end = Some(billing::timestamp(start + 2 * billing::HOUR_MILLIS));
    let mut body = serde_json::to_value(late).unwrap();
    body["apiVersion"] = json!("stratus.dev/v1");
    body["kind"] = json!("UsageReport");
    let r = send_json("POST", &base, &body).await;
    assert_eq!(r.status, 422, "{}", r.text);
    assert!(r.text.contains("spec.windowEnd"), "{}", r.text);
    let metrics = get(&format!("{}/metrics", s.endpoint)).await.text;
    for want in [
        "stratus_usage_reports_refused_total{field=\"spec.windowEnd\"} 1",
        "stratus_usage_reports_refused_total{field=\"spec.namespace\"} 1",
    ] {
        assert!(metrics.contains(want), "{want} in\n{metrics}");
    }
    let count = admin.list::<UsageReport>(&ListParams::default()).await.unwrap().items.len();
    assert_eq!(count, 1, "nothing refused was stored");
}

#[tokio::test]
async fn a_gateway_creates_reports_and_reads_none() {
    let s = start().await;
    let admin: Client = two_tenants(&s).await;
    let gateway = admin.with_token(&s.identity.component_token("gateway", roles::SYSTEM_GATEWAY, "").await.unwrap()());
    let made = gateway.create(report("b-ns")).await.unwrap();
    assert_eq!(made.spec.unwrap().tenant, "b");
    assert!(matches!(gateway.list::<UsageReport>(&ListParams::default()).await, Err(Error::Forbidden(_))));
}

#[tokio::test]
async fn usage_reported_after_its_namespace_is_gone_is_still_its_tenants() {
    let s = start().await;
    let admin = two_tenants(&s).await;
    admin.delete::<Namespace>("", "b-ns").await.unwrap();
    tokio::time::timeout(std::time::Duration::from_secs(30), async {
        while admin.get::<Namespace>("", "b-ns").await.is_ok() {
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
    })
    .await
    .expect("the namespace is removed");
    // An agent's last window, sent after the namespace went: billed to the tenant it was of.
    let late = admin.create(report("b-ns")).await.unwrap();
    assert_eq!(late.spec.unwrap().tenant, "b");

    // The name taken again by another tenant: usage of a window that ended before the new
    // namespace was made is still the earlier tenant's.
    let mut ns = Namespace { spec: Some(NamespaceSpec { tenant: "a".into() }), ..Default::default() };
    ns.meta_mut().name = "b-ns".into();
    admin.create(ns).await.unwrap();
    let mut earlier = report("b-ns");
    let spec = earlier.spec.as_mut().unwrap();
    spec.source = "gw-2".into();
    let start = billing::millis(spec.window_start.as_ref()).unwrap();
    earlier.meta_mut().name = report_name("gateway", "gw-2", "b-ns", "hello-00001-abcde", start);
    assert_eq!(admin.create(earlier).await.unwrap().spec.unwrap().tenant, "b");
}

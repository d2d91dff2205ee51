//! `stratus billing` against a real API server: the current invoice as JSON and CSV with the
//! amounts exactly as stored, the list of invoices, the ledger newest first with its totals,
//! the message for a period without usage, a recount that matches and one that differs, and
//! clear refusals of bad flags.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{Stratus, TestServer, admin_client};
use serde_json::Value;
use stratus_api::Resource;
use stratus_api::billing::{self, Period};
use stratus_api::v1::{
    Invoice, InvoiceLine, InvoiceSpec, LedgerEntry, LedgerEntrySpec, UsagePeriod, UsageReport, UsageReportSpec,
};
use stratus_client::Client;

fn now_millis() -> i64 {
    stratus_api::time::now_seconds() * 1000
}

fn line(service: &str, item: &str, quantity: &str, unit: &str, price: &str, amount: &str) -> InvoiceLine {
    InvoiceLine {
        namespace: if service.is_empty() { String::new() } else { "default".into() },
        service: service.into(),
        billing_mode: billing::MODE_REQUEST.into(),
        item: item.into(),
        quantity: quantity.into(),
        unit: unit.into(),
        unit_price: price.into(),
        amount: amount.into(),
    }
}

async fn entry(admin: &Client, tenant: &str, service: &str, start: i64, cpu: &str, requests: i64) {
    let mut e = LedgerEntry {
        spec: Some(LedgerEntrySpec {
            tenant: tenant.into(),
            namespace: "default".into(),
            service: service.into(),
            billing_mode: billing::MODE_REQUEST.into(),
            start: Some(billing::timestamp(start)),
            end: Some(billing::timestamp(start + billing::HOUR_MILLIS)),
            cpu_millicore_millis: cpu.into(),
            memory_kib_millis: "1048576000".into(),
            requests,
            reports: 1,
            ..Default::default()
        }),
        ..Default::default()
    };
    e.meta_mut().name = format!("{tenant}.{service}.{start}");
    admin.create(e).await.unwrap();
}

#[tokio::test]
async fn invoices_and_usage_print_exactly_what_is_stored() {
    let server = TestServer::start().await;
    let admin = admin_client(&server);
    let cli = Stratus::admin(&server);
    let (key, start, end) = Period::Monthly.holding(now_millis());
    let mut invoice = Invoice {
        spec: Some(InvoiceSpec {
            tenant: "default".into(),
            period: key.clone(),
            period_start: Some(billing::timestamp(start)),
            period_end: Some(billing::timestamp(end)),
            currency: "USD".into(),
            lines: vec![
                line("api", "cpu", "180", "vCPU-second", "0.000024", "0.00432"),
                line("api", "requests", "3000000", "million requests", "0.4", "1.2"),
                line("", "free-tier-cpu", "180", "vCPU-second", "0.000024", "-0.00432"),
            ],
            subtotal: "1.20432".into(),
            free_tier: "0.00432".into(),
            total: "1.20".into(),
            price_list: "default".into(),
        }),
        ..Default::default()
    };
    invoice.meta_mut().name = format!("default.{key}");
    admin.create(invoice).await.unwrap();

    let json: Value = serde_json::from_str(
        cli.run(&["billing", "invoice", "--current", "--tenant", "default", "-o", "json"]).await.ok(),
    )
    .unwrap();
    assert_eq!(json["name"], format!("default.{key}"));
    assert_eq!(json["total"], "1.20", "the total as stored, not a float: {json}");
    assert_eq!(json["subtotal"], "1.20432");
    assert_eq!(json["lines"].as_array().unwrap().len(), 3);
    assert_eq!(json["lines"][0]["unitPrice"], "0.000024");
    assert_eq!(json["lines"][2]["amount"], "-0.00432");

    let csv = cli.run(&["billing", "invoice", "--current", "--tenant", "default", "-o", "csv"]).await.ok().to_string();
    let rows: Vec<&str> = csv.lines().collect();
    assert_eq!(rows[0], "namespace,service,mode,item,quantity,unit,unit_price,amount");
    assert_eq!(rows[1], "default,api,request,cpu,180,vCPU-second,0.000024,0.00432");
    assert_eq!(rows.last().copied(), Some(",,,total,,USD,,1.20"), "{csv}");

    let table = cli.run(&["billing", "invoice", &format!("default.{key}")]).await.ok().to_string();
    assert!(table.contains("Total:      1.20 USD") && table.contains("Free tier:  -0.00432 USD"), "{table}");

    let listed = cli.run(&["billing", "invoices", "--tenant", "default"]).await.ok().to_string();
    let row: Vec<&str> = listed.lines().nth(1).unwrap().split_whitespace().collect();
    assert_eq!(row, [format!("default.{key}").as_str(), &key, "Open", "1.20", "USD"], "{listed}");

    // Two hours of one service, and another tenant's hour that is not shown.
    let hour = now_millis() / billing::HOUR_MILLIS * billing::HOUR_MILLIS;
    entry(&admin, "default", "api", hour - 2 * billing::HOUR_MILLIS, "90000000", 1_000_000).await;
    entry(&admin, "default", "api", hour - billing::HOUR_MILLIS, "90000000", 2_000_000).await;
    entry(&admin, "other", "api", hour - billing::HOUR_MILLIS, "1", 7).await;
    let usage = cli.run(&["billing", "usage", "--tenant", "default"]).await.ok().to_string();
    let lines: Vec<Vec<&str>> = usage.lines().map(|l| l.split_whitespace().collect()).collect();
    assert_eq!(lines.len(), 4, "{usage}");
    assert_eq!(lines[1][0], stratus_api::time::rfc3339((hour - billing::HOUR_MILLIS) / 1000), "newest first: {usage}");
    assert_eq!(&lines[1][1..], ["default", "api", "request", "90", "1", "2000000"], "{usage}");
    assert_eq!(lines[3], ["TOTAL", "180", "2", "3000000"], "{usage}");
    let json: Value =
        serde_json::from_str(cli.run(&["billing", "usage", "--tenant", "default", "-o", "json"]).await.ok()).unwrap();
    assert_eq!(json["total"]["vcpuSeconds"], "180");
    // Back to a minute before the last hour's start: that hour is in, the one before is not.
    let since = format!("{}m", (now_millis() - (hour - billing::HOUR_MILLIS)) / 60_000 + 1);
    let recent = cli.run(&["billing", "usage", "--tenant", "default", "--since", &since]).await.ok().to_string();
    assert_eq!(recent.lines().count(), 3, "one hour and the totals: {recent}");

    // A tenant with nothing yet is told so.
    let out = cli.run(&["billing", "invoice", "--current", "--tenant", "quiet"]).await.ok().to_string();
    assert!(out.contains(&format!("No usage yet in period {key}")), "{out}");
}

#[tokio::test]
async fn bad_flags_are_refused_clearly() {
    let server = TestServer::start().await;
    let cli = Stratus::admin(&server);
    let out = cli.run(&["billing", "usage", "--tenant", "default", "--since", "last-tuesday"]).await;
    assert!(out.failed().contains("--since \"last-tuesday\" is neither a duration"), "{}", out.err);
    let out = cli.run(&["billing", "invoice", "--tenant", "default", "-o", "xml"]).await;
    assert_ne!(out.code, 0);
    assert!(out.err.contains("invalid value 'xml'"), "{}", out.err);
    let out = cli.run(&["billing", "invoice"]).await;
    assert_ne!(out.code, 0);
    assert!(out.err.contains("--current"), "{}", out.err);
    // The admin account belongs to no tenant: it must name one.
    let out = cli.run(&["billing", "budgets"]).await;
    assert!(out.failed().contains("belongs to no tenant: name one with --tenant"), "{}", out.err);
}

#[tokio::test]
async fn recount_compares_the_reports_with_the_invoice() {
    let server = TestServer::start().await;
    let admin = admin_client(&server);
    let cli = Stratus::admin(&server);
    // One report of 900 ms busy at 1 vCPU and 512 MiB, 3 requests, a minute ago.
    let window = (now_millis() - 70_000) / 1000 * 1000;
    let mut report = UsageReport {
        spec: Some(UsageReportSpec {
            source_kind: billing::SOURCE_GATEWAY.into(),
            source: "gw".into(),
            namespace: "default".into(),
            service: "api".into(),
            revision: "api-00001".into(),
            instance: "api-00001-abcde".into(),
            billing_mode: billing::MODE_REQUEST.into(),
            window_start: Some(billing::timestamp(window)),
            window_end: Some(billing::timestamp(window + 10_000)),
            cpu_millis: 1000,
            memory_bytes: 512 << 20,
            periods: vec![UsagePeriod {
                start: Some(billing::timestamp(window)),
                end: Some(billing::timestamp(window + 900)),
            }],
            requests: 3,
            ..Default::default()
        }),
        ..Default::default()
    };
    report.meta_mut().name = billing::report_name("gateway", "gw", "default", "api-00001-abcde", window);
    admin.create(report).await.unwrap();
    let (key, _, _) = Period::Monthly.holding(window);
    let mut invoice = Invoice {
        spec: Some(InvoiceSpec {
            tenant: "default".into(),
            period: key.clone(),
            currency: "USD".into(),
            lines: vec![
                line("api", "cpu", "0.9", "vCPU-second", "0.000024", "0.0000216"),
                line("api", "memory", "0.45", "GiB-second", "0.0000025", "0.000001125"),
                line("api", "requests", "3", "million requests", "0.4", "0.0000012"),
                line("", "free-tier-cpu", "0.9", "vCPU-second", "0.000024", "-0.0000216"),
                line("", "free-tier-memory", "0.45", "GiB-second", "0.0000025", "-0.000001125"),
                line("", "free-tier-requests", "3", "million requests", "0.4", "-0.0000012"),
            ],
            subtotal: "0.0000239250".into(),
            free_tier: "0.000023925".into(),
            total: "0.00".into(),
            ..Default::default()
        }),
        ..Default::default()
    };
    invoice.meta_mut().name = format!("default.{key}");
    let stored = admin.create(invoice).await.unwrap();
    let out = cli.run(&["billing", "recount", "--period", &key, "--tenant", "default"]).await;
    assert!(
        out.ok().contains(&format!(
            "tenant default, period {key}: invoice total 0.00, recount 0.00 USD from 1 reports: match"
        )),
        "{}",
        out.out
    );

    // An invoice that billed more requests than were reported differs, line by line.
    let mut wrong = stored;
    let spec = wrong.spec.as_mut().unwrap();
    spec.lines[2].quantity = "4".into();
    spec.total = "0.01".into();
    admin.update(wrong).await.unwrap();
    let out = cli.run(&["billing", "recount", "--period", &key, "--tenant", "default"]).await;
    assert_eq!(out.code, 1, "{}", out.out);
    assert!(out.out.contains("DIFFER"), "{}", out.out);
    assert!(
        out.out.contains("default/api request requests: invoice 4 = 0.0000012, recount 3 = 0.0000012"),
        "{}",
        out.out
    );
}

//! `stratus billing`: what a tenant used and owes, read from the objects the billing controller
//! writes (LedgerEntries, Invoices, Budgets), and `recount`, which recomputes a period's
//! invoices from the raw UsageReports to check them.
//!
//! Money is printed as the Invoice holds it (exact decimal strings) and every sum is made in
//! integers with `stratus_api::billing`, never in floating point: what is shown is what is billed.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::io::Write;

use serde_json::{Value, json};
use stratus_api::billing::{self, LineKey, Period, Prices, Usage};
use stratus_api::v1::{Budget, Invoice, LedgerEntry, PriceList, UsageReport};
use stratus_api::validation::ErrorList;
use stratus_client::ListParams;

use super::Ctx;
use crate::args::{
    BillingCommand, BillingFormat, BillingInvoiceArgs, BillingListArgs, BillingRecountArgs, BillingUsageArgs,
    InvoiceFormat,
};
use crate::error::{Error, Result};
use crate::format::rfc3339;
use crate::output::to_json_text;
use crate::{Io, table};

pub(crate) async fn run(ctx: &Ctx, cmd: BillingCommand, io: &mut Io) -> Result<()> {
    match cmd {
        BillingCommand::Usage(args) => usage(ctx, args, io).await,
        BillingCommand::Invoices(args) => invoices(ctx, args, io).await,
        BillingCommand::Invoice(args) => invoice(ctx, args, io).await,
        BillingCommand::Budgets(args) => budgets(ctx, args, io).await,
        BillingCommand::Recount(args) => recount(ctx, args, io).await,
    }
}

/// The tenant a command is about: `--tenant`, else the caller's own (as `stratus whoami` shows).
async fn tenant(ctx: &Ctx, given: Option<String>) -> Result<String> {
    if let Some(t) = given.filter(|t| !t.is_empty()) {
        return Ok(t);
    }
    let me = ctx.client.who_am_i().await?;
    if me.tenant.is_empty() {
        return Err(Error::Usage(format!("{} belongs to no tenant: name one with --tenant", me.username)));
    }
    Ok(me.tenant)
}

fn now_millis() -> i64 {
    stratus_api::time::now_seconds().saturating_mul(1000)
}

/// `--since`: a duration back from now (`24h`) or an RFC 3339 time; milliseconds since the epoch.
fn since_millis(given: &str, now: i64) -> Result<i64> {
    if let Ok(d) = crate::format::parse_duration(given) {
        let back = i64::try_from(d.as_millis()).unwrap_or(i64::MAX);
        return Ok(now.saturating_sub(back));
    }
    parse_rfc3339(given).ok_or_else(|| {
        Error::Usage(format!(
            "--since {given:?} is neither a duration (24h, 90m) nor an RFC 3339 time (2026-12-01T00:00:00Z)"
        ))
    })
}

/// `YYYY-MM-DDTHH:MM:SS[.fff](Z|±HH:MM)` in milliseconds since the epoch.
fn parse_rfc3339(s: &str) -> Option<i64> {
    let num = |t: &str| -> Option<i64> { t.bytes().all(|b| b.is_ascii_digit()).then(|| t.parse().ok())? };
    let (date, time) = s.split_once(['T', 't', ' '])?;
    let mut d = date.splitn(3, '-');
    let (y, m, day) = (num(d.next()?)?, num(d.next()?)?, num(d.next()?)?);
    let (clock, offset) = if let Some(c) = time.strip_suffix(['Z', 'z']) {
        (c, 0)
    } else {
        let at = time.rfind(['+', '-'])?;
        let (c, off) = time.split_at(at);
        let sign = if off.starts_with('-') { -1 } else { 1 };
        let (oh, om) = off.get(1..)?.split_once(':')?;
        (c, sign * (num(oh)? * 60 + num(om)?))
    };
    let (clock, frac) = clock.split_once('.').unwrap_or((clock, ""));
    let mut c = clock.splitn(3, ':');
    let (h, min, sec) = (num(c.next()?)?, num(c.next()?)?, num(c.next()?)?);
    let valid = (1..=12).contains(&m) && (1..=31).contains(&day) && h < 24 && min < 60 && sec < 61;
    if !valid || (!frac.is_empty() && num(frac).is_none()) {
        return None;
    }
    let millis = if frac.is_empty() { 0 } else { num(&format!("{frac:0<3}")[..3])? };
    let days = stratus_api::time::days_from_civil(y, u32::try_from(m).ok()?, u32::try_from(day).ok()?);
    let seconds = days * 86_400 + h * 3600 + min * 60 + sec - offset * 60;
    Some(seconds * 1000 + millis)
}

/// A whole number the ledger writes as a decimal string (empty is zero).
fn whole(field: &str, v: &str, of: &str) -> Result<u128> {
    if v.is_empty() {
        return Ok(0);
    }
    v.parse().map_err(|_| Error::Usage(format!("{of}: {field} {v:?} is not a whole number")))
}

fn print(io: &mut Io, text: &str) -> Result<()> {
    io.out.write_all(text.as_bytes())?;
    Ok(())
}

/// `stratus billing usage`.
async fn usage(ctx: &Ctx, args: BillingUsageArgs, io: &mut Io) -> Result<()> {
    let tenant = tenant(ctx, args.tenant).await?;
    let since = args.since.as_deref().map(|s| since_millis(s, now_millis())).transpose()?;
    let entries = ctx.client.list_all::<LedgerEntry>(&ListParams::default()).await?;
    let mut rows = Vec::new();
    for e in entries.items {
        let name = e.metadata.as_ref().map(|m| m.name.clone()).unwrap_or_default();
        let spec = e.spec.unwrap_or_default();
        let start = billing::millis(spec.start.as_ref()).unwrap_or(0);
        if spec.tenant != tenant || since.is_some_and(|s| start < s) {
            continue;
        }
        let of = format!("ledgerentry/{name}");
        let cpu = whole("spec.cpuMillicoreMillis", &spec.cpu_millicore_millis, &of)?;
        let memory = whole("spec.memoryKibMillis", &spec.memory_kib_millis, &of)?;
        let requests = u128::try_from(spec.requests).unwrap_or(0);
        rows.push((
            start,
            spec.namespace,
            spec.service,
            spec.billing_mode,
            Usage { cpu_millicore_millis: cpu, memory_kib_millis: memory, requests },
        ));
    }
    // Newest first; within an hour, by namespace, service and mode.
    rows.sort_by(|a, b| b.0.cmp(&a.0).then_with(|| (&a.1, &a.2, &a.3).cmp(&(&b.1, &b.2, &b.3))));
    let mut total = Usage::default();
    for r in &rows {
        total.add(r.4);
    }
    let cpu = |u: &Usage| billing::quantity_decimal("cpu", u.cpu_millicore_millis);
    let mem = |u: &Usage| billing::quantity_decimal("memory", u.memory_kib_millis);
    let hour = |ms: i64| rfc3339(&billing::timestamp(ms));
    match args.output {
        BillingFormat::Json => {
            let entries: Vec<Value> = rows
                .iter()
                .map(|(start, ns, svc, mode, u)| {
                    json!({"hour": hour(*start), "namespace": ns, "service": svc, "mode": mode,
                           "vcpuSeconds": cpu(u), "gibSeconds": mem(u), "requests": u.requests.to_string()})
                })
                .collect();
            let out = json!({"tenant": tenant, "entries": entries,
                             "total": {"vcpuSeconds": cpu(&total), "gibSeconds": mem(&total),
                                       "requests": total.requests.to_string()}});
            print(io, &to_json_text(&out)?)
        }
        BillingFormat::Table if rows.is_empty() => {
            writeln!(io.err, "No usage recorded for tenant {tenant}.")?;
            Ok(())
        }
        BillingFormat::Table => {
            let header: Vec<String> =
                ["HOUR", "NAMESPACE", "SERVICE", "MODE", "VCPU-SECONDS", "GIB-SECONDS", "REQUESTS"]
                    .map(String::from)
                    .into();
            let mut lines: Vec<Vec<String>> = rows
                .iter()
                .map(|(start, ns, svc, mode, u)| {
                    vec![hour(*start), ns.clone(), svc.clone(), mode.clone(), cpu(u), mem(u), u.requests.to_string()]
                })
                .collect();
            lines.push(vec![
                "TOTAL".into(),
                String::new(),
                String::new(),
                String::new(),
                cpu(&total),
                mem(&total),
                total.requests.to_string(),
            ]);
            print(io, &table::render(&header, &lines, false))
        }
    }
}

fn invoice_name(i: &Invoice) -> String {
    i.metadata.as_ref().map(|m| m.name.clone()).unwrap_or_default()
}

fn phase(i: &Invoice) -> String {
    i.status.as_ref().map(|s| s.phase.clone()).filter(|p| !p.is_empty()).unwrap_or_else(|| "Open".into())
}

/// `stratus billing invoices`.
async fn invoices(ctx: &Ctx, args: BillingListArgs, io: &mut Io) -> Result<()> {
    let tenant = tenant(ctx, args.tenant).await?;
    let mut items: Vec<Invoice> = ctx
        .client
        .list_all::<Invoice>(&ListParams::default())
        .await?
        .items
        .into_iter()
        .filter(|i| i.spec.as_ref().is_some_and(|s| s.tenant == tenant))
        .collect();
    let start = |i: &Invoice| billing::millis(i.spec.as_ref().and_then(|s| s.period_start.as_ref())).unwrap_or(0);
    items.sort_by(|a, b| start(b).cmp(&start(a)).then_with(|| invoice_name(a).cmp(&invoice_name(b))));
    match args.output {
        BillingFormat::Json => {
            let out: Vec<Value> = items
                .iter()
                .map(|i| {
                    let s = i.spec.clone().unwrap_or_default();
                    json!({"name": invoice_name(i), "tenant": s.tenant, "period": s.period, "phase": phase(i),
                           "total": s.total, "currency": s.currency})
                })
                .collect();
            print(io, &to_json_text(&Value::Array(out))?)
        }
        BillingFormat::Table if items.is_empty() => {
            writeln!(io.err, "No invoices for tenant {tenant}.")?;
            Ok(())
        }
        BillingFormat::Table => {
            let header: Vec<String> = ["NAME", "PERIOD", "PHASE", "TOTAL", "CURRENCY"].map(String::from).into();
            let rows: Vec<Vec<String>> = items
                .iter()
                .map(|i| {
                    let s = i.spec.clone().unwrap_or_default();
                    vec![invoice_name(i), s.period, phase(i), s.total, s.currency]
                })
                .collect();
            print(io, &table::render(&header, &rows, false))
        }
    }
}

/// The prices of the PriceList "default", as the billing controller reads them.
async fn prices(ctx: &Ctx) -> Result<Prices> {
    let list: PriceList = ctx
        .client
        .get("", billing::DEFAULT_PRICE_LIST)
        .await
        .map_err(|e| Error::object(format!("pricelist/{}", billing::DEFAULT_PRICE_LIST), e))?;
    let mut errs = ErrorList::default();
    Prices::parse(&list.spec.unwrap_or_default(), "spec", &mut errs)
        .ok_or_else(|| Error::Usage(format!("pricelist/{} is invalid: {errs}", billing::DEFAULT_PRICE_LIST)))
}

/// `stratus billing invoice`.
async fn invoice(ctx: &Ctx, args: BillingInvoiceArgs, io: &mut Io) -> Result<()> {
    let name = match (&args.name, args.current) {
        (Some(name), false) => name.clone(),
        (None, true) => {
            let tenant = tenant(ctx, args.tenant.clone()).await?;
            let period = prices(ctx).await.map(|p| p.period).unwrap_or(Period::Monthly);
            let (key, start, end) = period.holding(now_millis());
            let name = format!("{tenant}.{key}");
            match ctx.client.get::<Invoice>("", &name).await {
                Ok(found) => return print_invoice(&found, args.output, io),
                Err(stratus_client::Error::NotFound(_)) => {
                    let (from, to) = (rfc3339(&billing::timestamp(start)), rfc3339(&billing::timestamp(end)));
                    let msg = format!(
                        "No usage yet in period {key} ({from} to {to}) for tenant {tenant}: invoice {name} does not \
                         exist yet."
                    );
                    // Scripts reading JSON or CSV see nothing rather than prose.
                    match args.output {
                        InvoiceFormat::Table => writeln!(io.out, "{msg}")?,
                        _ => writeln!(io.err, "{msg}")?,
                    }
                    return Ok(());
                }
                Err(e) => return Err(Error::object(format!("invoice/{name}"), e)),
            }
        }
        _ => return Err(Error::Usage("give an invoice's NAME or --current, not both".into())),
    };
    let found: Invoice = ctx
        .client
        .get("", &name)
        .await
        .map_err(|e| ctx.object_error(&<Invoice as stratus_api::Resource>::INFO, &name, e))?;
    print_invoice(&found, args.output, io)
}

/// A CSV field, quoted when it must be (RFC 4180).
fn csv(field: &str) -> String {
    if field.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", field.replace('"', "\"\""))
    } else {
        field.to_string()
    }
}

fn print_invoice(i: &Invoice, format: InvoiceFormat, io: &mut Io) -> Result<()> {
    let s = i.spec.clone().unwrap_or_default();
    let service = |l: &stratus_api::v1::InvoiceLine| {
        if l.namespace.is_empty() { l.service.clone() } else { format!("{}/{}", l.namespace, l.service) }
    };
    match format {
        InvoiceFormat::Json => {
            let lines: Vec<Value> = s
                .lines
                .iter()
                .map(|l| {
                    json!({"namespace": l.namespace, "service": l.service, "mode": l.billing_mode, "item": l.item,
                           "quantity": l.quantity, "unit": l.unit, "unitPrice": l.unit_price, "amount": l.amount})
                })
                .collect();
            let out = json!({"name": invoice_name(i), "tenant": s.tenant, "period": s.period, "phase": phase(i),
                             "currency": s.currency, "lines": lines, "subtotal": s.subtotal,
                             "freeTier": s.free_tier, "total": s.total});
            print(io, &to_json_text(&out)?)
        }
        InvoiceFormat::Csv => {
            let mut out = String::from("namespace,service,mode,item,quantity,unit,unit_price,amount\n");
            for l in &s.lines {
                let cells = [
                    &l.namespace,
                    &l.service,
                    &l.billing_mode,
                    &l.item,
                    &l.quantity,
                    &l.unit,
                    &l.unit_price,
                    &l.amount,
                ];
                out.push_str(&cells.map(|c| csv(c)).join(","));
                out.push('\n');
            }
            for (label, v) in [("subtotal", &s.subtotal), ("free-tier", &s.free_tier), ("total", &s.total)] {
                out.push_str(&format!(",,,{label},,{},,{}\n", csv(&s.currency), csv(v)));
            }
            print(io, &out)
        }
        InvoiceFormat::Table => {
            let mut out =
                format!("Invoice {} (tenant {}, period {}, {})\n", invoice_name(i), s.tenant, s.period, phase(i));
            if s.lines.is_empty() {
                out.push_str("No lines.\n");
            } else {
                let header: Vec<String> =
                    ["SERVICE", "MODE", "ITEM", "QUANTITY", "UNIT", "UNIT PRICE", "AMOUNT"].map(String::from).into();
                let rows: Vec<Vec<String>> = s
                    .lines
                    .iter()
                    .map(|l| {
                        vec![
                            service(l),
                            l.billing_mode.clone(),
                            l.item.clone(),
                            l.quantity.clone(),
                            l.unit.clone(),
                            l.unit_price.clone(),
                            l.amount.clone(),
                        ]
                    })
                    .collect();
                out.push_str(&table::render(&header, &rows, false));
            }
            let free = if s.free_tier.is_empty() || s.free_tier.starts_with('-') {
                s.free_tier.clone()
            } else {
                format!("-{}", s.free_tier)
            };
            out.push_str(&format!("Subtotal:   {} {}\n", s.subtotal, s.currency));
            out.push_str(&format!("Free tier:  {free} {}\n", s.currency));
            out.push_str(&format!("Total:      {} {}\n", s.total, s.currency));
            print(io, &out)
        }
    }
}

/// A budget's spent amount as a percentage of its amount, to one decimal place, computed exactly.
fn percent_used(spent: &str, amount: &str) -> String {
    let (Ok(spent), Ok(amount)) = (spent.parse::<billing::Amount>(), amount.parse::<billing::Amount>()) else {
        return "?".into();
    };
    if amount.0 <= 0 {
        return "?".into();
    }
    match spent.0.checked_mul(1000) {
        Some(scaled) => {
            let tenths = scaled / amount.0;
            format!("{}.{}%", tenths / 10, (tenths % 10).abs())
        }
        None => "?".into(),
    }
}

/// `stratus billing budgets`.
async fn budgets(ctx: &Ctx, args: BillingListArgs, io: &mut Io) -> Result<()> {
    let tenant = tenant(ctx, args.tenant).await?;
    let mut items: Vec<Budget> = ctx
        .client
        .list_all::<Budget>(&ListParams::default())
        .await?
        .items
        .into_iter()
        .filter(|b| b.spec.as_ref().is_some_and(|s| s.tenant == tenant))
        .collect();
    let name = |b: &Budget| b.metadata.as_ref().map(|m| m.name.clone()).unwrap_or_default();
    items.sort_by_key(name);
    let list = |v: &[i32]| v.iter().map(|t| format!("{t}%")).collect::<Vec<_>>().join(",");
    let rows: Vec<(String, String, String, String, String, String, String)> = items
        .iter()
        .map(|b| {
            let spec = b.spec.clone().unwrap_or_default();
            let status = b.status.clone().unwrap_or_default();
            let spent = if status.spent.is_empty() { "0".to_string() } else { status.spent };
            let used = percent_used(&spent, &spec.amount);
            (name(b), spec.amount, spent, used, list(&spec.thresholds), list(&status.crossed), status.period)
        })
        .collect();
    match args.output {
        BillingFormat::Json => {
            let out: Vec<Value> = rows
                .iter()
                .map(|(n, amount, spent, used, thresholds, crossed, period)| {
                    json!({"name": n, "tenant": tenant, "amount": amount, "spent": spent, "used": used,
                           "thresholds": thresholds, "crossed": crossed, "period": period})
                })
                .collect();
            print(io, &to_json_text(&Value::Array(out))?)
        }
        BillingFormat::Table if rows.is_empty() => {
            writeln!(io.err, "No budgets for tenant {tenant}.")?;
            Ok(())
        }
        BillingFormat::Table => {
            let header: Vec<String> =
                ["NAME", "AMOUNT", "SPENT", "USED", "THRESHOLDS", "CROSSED", "PERIOD"].map(String::from).into();
            let table_rows: Vec<Vec<String>> = rows
                .into_iter()
                .map(|(n, a, s, u, t, c, p)| vec![n, a, s, u, t, if c.is_empty() { "<none>".into() } else { c }, p])
                .collect();
            print(io, &table::render(&header, &table_rows, false))
        }
    }
}

/// A decimal written without its trailing zeros (and point), so that `1.270` and `1.27` compare
/// equal as text: no floating point.
fn normalized(decimal: &str) -> String {
    let d = decimal.trim();
    let d = if d.contains('.') { d.trim_end_matches('0').trim_end_matches('.') } else { d };
    match d {
        "" | "-0" => "0".to_string(),
        other => other.to_string(),
    }
}

/// One line as the comparison sees it: (namespace, service, mode, item) → (quantity, amount).
type Lines = BTreeMap<(String, String, String, String), (String, String)>;

/// `stratus billing recount`: every UsageReport of the period summed per tenant, namespace,
/// service and mode with `billing::usage_of`, priced with the PriceList "default", and compared
/// with the tenant's invoice. A report belongs to the period of the LedgerEntry it was folded
/// into (`status.ledgerEntry`, which for a late report is a later hour: an adjustment), else to
/// the period holding its window's start.
async fn recount(ctx: &Ctx, args: BillingRecountArgs, io: &mut Io) -> Result<()> {
    let prices = prices(ctx).await?;
    let period = args.period.trim().to_string();
    let reports = ctx.client.list_all::<UsageReport>(&ListParams::default()).await?.items;
    let entries = ctx.client.list_all::<LedgerEntry>(&ListParams::default()).await?.items;
    let entry_start: HashMap<String, i64> = entries
        .iter()
        .filter_map(|e| {
            let name = e.metadata.as_ref()?.name.clone();
            Some((name, billing::millis(e.spec.as_ref()?.start.as_ref())?))
        })
        .collect();
    let mut specs = Vec::new();
    for r in &reports {
        let Some(spec) = r.spec.as_ref() else { continue };
        if args.tenant.as_ref().is_some_and(|t| *t != spec.tenant) {
            continue;
        }
        let folded = r.status.as_ref().map(|s| s.ledger_entry.as_str()).filter(|e| !e.is_empty());
        let at = match folded.and_then(|e| entry_start.get(e)) {
            Some(start) => *start,
            None => billing::millis(spec.window_start.as_ref()).unwrap_or(0),
        };
        if prices.period.holding(at).0 == period {
            specs.push(spec);
        }
    }
    let mut usage: BTreeMap<&str, BTreeMap<LineKey<'_>, Usage>> = BTreeMap::new();
    for spec in &specs {
        let key = LineKey { namespace: &spec.namespace, service: &spec.service, mode: &spec.billing_mode };
        usage.entry(spec.tenant.as_str()).or_default().entry(key).or_default().add(billing::usage_of(spec));
    }
    let invoices: Vec<Invoice> = ctx
        .client
        .list_all::<Invoice>(&ListParams::default())
        .await?
        .items
        .into_iter()
        .filter(|i| {
            i.spec.as_ref().is_some_and(|s| s.period == period && args.tenant.as_ref().is_none_or(|t| *t == s.tenant))
        })
        .collect();
    let mut tenants: BTreeSet<String> = usage.keys().map(|t| t.to_string()).collect();
    tenants.extend(invoices.iter().filter_map(|i| i.spec.as_ref().map(|s| s.tenant.clone())));
    if let Some(t) = &args.tenant {
        tenants.insert(t.clone());
    }
    let places = billing::minor_digits(&prices.currency) as usize;
    let mut differ = false;
    for tenant in &tenants {
        let empty = BTreeMap::new();
        let priced = billing::price(usage.get(tenant.as_str()).unwrap_or(&empty), &prices);
        let recounted: Lines = priced
            .lines
            .iter()
            .map(|l| {
                (
                    (l.namespace.clone(), l.service.clone(), l.mode.clone(), l.item.clone()),
                    (normalized(&l.quantity), normalized(&l.amount.to_decimal(0))),
                )
            })
            .collect();
        let total = priced.total.to_decimal(places);
        let invoice = invoices.iter().find(|i| i.spec.as_ref().is_some_and(|s| s.tenant == *tenant));
        let (billed, billed_total) = match invoice.and_then(|i| i.spec.as_ref()) {
            Some(s) => {
                let lines: Lines = s
                    .lines
                    .iter()
                    .map(|l| {
                        (
                            (l.namespace.clone(), l.service.clone(), l.billing_mode.clone(), l.item.clone()),
                            (normalized(&l.quantity), normalized(&l.amount)),
                        )
                    })
                    .collect();
                (lines, Some(s.total.clone()))
            }
            None => (Lines::new(), None),
        };
        let same_total = match &billed_total {
            Some(t) => normalized(t) == normalized(&total),
            None => priced.total.0 == 0 && recounted.is_empty(),
        };
        let keys: BTreeSet<_> = recounted.keys().chain(billed.keys()).cloned().collect();
        let mismatched: Vec<_> = keys.into_iter().filter(|k| recounted.get(k) != billed.get(k)).collect();
        let ok = same_total && mismatched.is_empty();
        differ |= !ok;
        let shown = billed_total.unwrap_or_else(|| "<no invoice>".into());
        writeln!(
            io.out,
            "tenant {tenant}, period {period}: invoice total {shown}, recount {total} {} from {} reports: {}",
            prices.currency,
            specs.iter().filter(|s| s.tenant == *tenant).count(),
            if ok { "match" } else { "DIFFER" }
        )?;
        let side = |v: Option<&(String, String)>| match v {
            Some((q, a)) => format!("{q} = {a}"),
            None => "-".to_string(),
        };
        for k in &mismatched {
            let (ns, svc, mode, item) = k;
            let what = if ns.is_empty() { format!("{mode} {item}") } else { format!("{ns}/{svc} {mode} {item}") };
            writeln!(io.out, "  {what}: invoice {}, recount {}", side(billed.get(k)), side(recounted.get(k)))?;
        }
    }
    if tenants.is_empty() {
        writeln!(io.out, "No usage reports and no invoices in period {period}.")?;
    }
    if differ { Err(Error::Silent) } else { Ok(()) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn since_reads_durations_and_rfc3339() {
        let now = 1_796_400_000_000;
        assert_eq!(since_millis("24h", now).ok(), Some(now - 86_400_000));
        assert_eq!(since_millis("2026-12-04T15:20:00Z", now).ok(), Some(1_796_397_600_000));
        assert_eq!(since_millis("2026-12-04T16:20:00.5+01:00", now).ok(), Some(1_796_397_600_500));
        for bad in ["yesterday", "2026-13-01T00:00:00Z", "2026-12-04", "2026-12-04T15:20:00"] {
            assert!(since_millis(bad, now).is_err(), "{bad}");
        }
    }

    #[test]
    fn percentages_and_decimals_are_exact() {
        assert_eq!(percent_used("45", "100"), "45.0%");
        assert_eq!(percent_used("1.27", "3"), "42.3%");
        assert_eq!(percent_used("0", "100"), "0.0%");
        assert_eq!(percent_used("x", "100"), "?");
        assert_eq!(normalized("1.2700"), "1.27");
        assert_eq!(normalized("3.000"), "3");
        assert_eq!(normalized("180"), "180");
        assert_eq!(csv("a,b"), "\"a,b\"");
        assert_eq!(csv("say \"hi\""), "\"say \"\"hi\"\"\"");
    }
}

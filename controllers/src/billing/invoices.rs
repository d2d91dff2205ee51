//! Invoices: a tenant's LedgerEntries of one billing period, priced (see the
//! [module documentation](super)).

use std::collections::BTreeMap;

use stratus_api::Resource;
use stratus_api::billing::{self, Amount, LineKey, Prices, Usage};
use stratus_api::v1::{Invoice, InvoiceStatus, LedgerEntry, PriceList};
use tracing::debug;

use super::ledger::{entry_usage, is_closed};
use super::{Error, Result, Windows};
use crate::context::Context;

/// An invoice still running ("Open") or done ("Final").
pub const OPEN: &str = "Open";
pub const FINAL: &str = "Final";

/// The name of a tenant's invoice for the period keyed `period`.
pub fn invoice_name(tenant: &str, period: &str) -> String {
    format!("{tenant}.{period}")
}

/// How an invoice names the PriceList it was priced with.
pub fn price_list_ref(list: &PriceList) -> String {
    format!("{}@{}", list.meta().name, list.meta().resource_version)
}

/// The usage of `entries`, by namespace, service and billing mode.
pub fn usage_by_line<'a>(entries: impl IntoIterator<Item = &'a LedgerEntry>) -> BTreeMap<LineKey<'a>, Usage> {
    let mut usage: BTreeMap<LineKey<'a>, Usage> = BTreeMap::new();
    for spec in entries.into_iter().filter_map(|e| e.spec.as_ref()) {
        let key = LineKey { namespace: &spec.namespace, service: &spec.service, mode: &spec.billing_mode };
        usage.entry(key).or_default().add(entry_usage(spec));
    }
    usage
}

/// Step 4 of a pass: writes every tenant's invoice of every period some entry is in (Final ones
/// stay as they are). Returns each tenant's total for the period holding `now`.
pub async fn write(
    ctx: &Context,
    prices: &Prices,
    price_list: &PriceList,
    windows: Windows,
    now: i64,
    entries: &BTreeMap<String, LedgerEntry>,
    invoices: Vec<Invoice>,
) -> Result<BTreeMap<String, Amount>> {
    let invoices: BTreeMap<String, Invoice> = invoices.into_iter().map(|i| (i.meta().name.clone(), i)).collect();
    let price_list = price_list_ref(price_list);
    let current_period = prices.period.holding(now).0;
    // (tenant, period) → (start, end, entries)
    let mut periods: BTreeMap<(&str, String), (i64, i64, Vec<&LedgerEntry>)> = BTreeMap::new();
    for entry in entries.values() {
        let Some(spec) = &entry.spec else { continue };
        let Some(start) = billing::millis(spec.start.as_ref()) else { continue };
        let (key, p_start, p_end) = prices.period.holding(start);
        periods.entry((spec.tenant.as_str(), key)).or_insert((p_start, p_end, Vec::new())).2.push(entry);
    }
    let mut current = BTreeMap::new();
    for ((tenant, key), (start, end, of_period)) in periods {
        let name = invoice_name(tenant, &key);
        let existing = invoices.get(&name);
        if existing.and_then(|i| i.status.as_ref()).is_some_and(|s| s.phase == FINAL) {
            continue;
        }
        let priced = billing::price(&usage_by_line(of_period.iter().copied()), prices);
        if key == current_period {
            current.insert(tenant.to_string(), priced.total);
        }
        let spec = billing::invoice_spec(tenant, (&key, start, end), prices, &priced, &price_list);
        let done = now >= windows.closes(end) && of_period.iter().all(|e| is_closed(e));
        let phase = if done { FINAL } else { OPEN };
        let write_error = |source| Error::WriteInvoice { invoice: name.clone(), source };
        let stored = match existing {
            Some(i) if i.spec.as_ref() == Some(&spec) && i.status.as_ref().is_some_and(|s| s.phase == phase) => {
                continue;
            }
            Some(i) if i.spec.as_ref() == Some(&spec) => i.clone(),
            Some(i) => {
                let mut next = i.clone();
                next.spec = Some(spec);
                ctx.client.update(next).await.map_err(write_error)?
            }
            None => {
                let mut invoice = Invoice { spec: Some(spec), ..Default::default() };
                invoice.meta_mut().name = name.clone();
                ctx.client.create(invoice).await.map_err(write_error)?
            }
        };
        let mut next = stored;
        next.status = Some(InvoiceStatus { phase: phase.into(), updated_at: Some(billing::timestamp(now)) });
        ctx.client.update_status(next).await.map_err(write_error)?;
        ctx.metrics.billing_invoices_written.inc();
        debug!(invoice = name, phase, "invoice written");
    }
    Ok(current)
}

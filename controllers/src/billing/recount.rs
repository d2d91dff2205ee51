//! The recount: a tenant's period recomputed from the UsageReports alone, skipping the ledger,
//! and compared with the Invoice the controller wrote (`stratus billing recount`).
//!
//! A report counts in the period that holds its `windowStart`, unless it was folded as an
//! adjustment: then in the period of the bucket it was folded into (read from its
//! `status.ledgerEntry`, whose name ends with the bucket's start). Its tenant is the one of
//! the entry it was folded into, else as the controller resolves it (`spec.tenant`, the
//! namespace's, "default"). A report not yet folded counts by its window, so while reports
//! wait to be folded the recount may be ahead of the invoice.

use std::collections::BTreeMap;

use stratus_api::billing::{self, LineKey, Priced, Usage};
use stratus_api::v1::{Invoice, InvoiceSpec, Namespace, PriceList, UsageReport};

use super::invoices::price_list_ref;
use super::ledger::{assigned_entry, parse_entry_name};
use super::{Result, Tenants, parse_prices};

/// A tenant's period, recounted.
#[derive(Debug, Clone, PartialEq)]
pub struct Recount {
    /// Usage by (namespace, service, billing mode).
    pub usage: BTreeMap<(String, String, String), Usage>,
    /// How many reports were counted, and of them adjustments.
    pub reports: usize,
    pub adjustments: usize,
    pub priced: Priced,
    /// The invoice these numbers make (its `priceList` names `price_list`).
    pub invoice: InvoiceSpec,
}

/// Recounts `tenant`'s billing period holding `at` (milliseconds since the epoch) from
/// `reports`, resolving tenants through `namespaces` and pricing with `price_list`; fails only
/// when the PriceList is invalid.
pub fn recount(
    tenant: &str,
    at: i64,
    reports: &[UsageReport],
    namespaces: &[Namespace],
    price_list: &PriceList,
) -> Result<Recount> {
    let prices = parse_prices(price_list)?;
    let tenants = Tenants::new(namespaces);
    let (key, start, end) = prices.period.holding(at);
    let mut usage: BTreeMap<(String, String, String), Usage> = BTreeMap::new();
    let (mut counted, mut adjustments) = (0, 0);
    for r in reports {
        let Some(spec) = &r.spec else { continue };
        let folded = parse_entry_name(assigned_entry(r));
        let adjustment = r.status.as_ref().is_some_and(|s| s.adjustment);
        let owner = folded.as_ref().map_or_else(|| tenants.of(spec), |(k, _)| k.tenant.clone());
        let when = match (&folded, adjustment) {
            (Some((_, bucket_start)), true) => Some(*bucket_start),
            _ => billing::millis(spec.window_start.as_ref()),
        };
        if owner != tenant || when.is_none_or(|t| t < start || t >= end) {
            continue;
        }
        usage
            .entry((spec.namespace.clone(), spec.service.clone(), spec.billing_mode.clone()))
            .or_default()
            .add(billing::usage_of(spec));
        counted += 1;
        adjustments += usize::from(adjustment);
    }
    let lines: BTreeMap<LineKey<'_>, Usage> =
        usage.iter().map(|((namespace, service, mode), u)| (LineKey { namespace, service, mode }, *u)).collect();
    let priced = billing::price(&lines, &prices);
    let invoice = billing::invoice_spec(tenant, (&key, start, end), &prices, &priced, &price_list_ref(price_list));
    Ok(Recount { usage, reports: counted, adjustments, priced, invoice })
}

/// One field on which an invoice and its recount disagree.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Difference {
    /// `total`, `subtotal`, `freeTier`, `currency`, `period` or a line:
    /// `lines[namespace/service/mode/item].amount` (or `.quantity`).
    pub field: String,
    pub invoice: String,
    pub recount: String,
}

/// Where `invoice` differs from `recount` (nothing when they agree). The PriceList's version is
/// not compared: an invoice priced before a price change differs in its amounts, which shows.
pub fn compare(recount: &Recount, invoice: &Invoice) -> Vec<Difference> {
    let stored = invoice.spec.clone().unwrap_or_default();
    let want = &recount.invoice;
    let mut out = Vec::new();
    let mut field = |name: String, invoice: &str, recount: &str| {
        if invoice != recount {
            out.push(Difference { field: name, invoice: invoice.into(), recount: recount.into() });
        }
    };
    field("period".into(), &stored.period, &want.period);
    field("currency".into(), &stored.currency, &want.currency);
    field("subtotal".into(), &stored.subtotal, &want.subtotal);
    field("freeTier".into(), &stored.free_tier, &want.free_tier);
    field("total".into(), &stored.total, &want.total);
    let by_key = |spec: &InvoiceSpec| -> BTreeMap<String, (String, String)> {
        spec.lines
            .iter()
            .map(|l| {
                let key = format!("{}/{}/{}/{}", l.namespace, l.service, l.billing_mode, l.item);
                (key, (l.quantity.clone(), l.amount.clone()))
            })
            .collect()
    };
    let (have, should) = (by_key(&stored), by_key(want));
    let none = (String::new(), String::new());
    for key in have.keys().chain(should.keys()).collect::<std::collections::BTreeSet<_>>() {
        let (hq, ha) = have.get(key).unwrap_or(&none);
        let (wq, wa) = should.get(key).unwrap_or(&none);
        field(format!("lines[{key}].quantity"), hq, wq);
        field(format!("lines[{key}].amount"), ha, wa);
    }
    out
}

//! The billing controller: usage reports into the ledger, the ledger into invoices, invoices
//! against budgets (see docs/billing.md). Every [`Config::billing_interval`] it makes one pass:
//!
//! 1. **Fold** ([`ledger`]). Each UsageReport whose `status.ledgerEntry` is empty is assigned a
//!    LedgerEntry: the one of its tenant, namespace, service, billing mode and bucket
//!    (`Period::bucket(windowStart)`) while that bucket is open (until `end + watermark +
//!    grace`, and not marked closed), else, as an adjustment (`status.adjustment`), the bucket
//!    of the same tenant/namespace/service/mode open now. The assignment is written to the
//!    report's status, conditional on the resourceVersion read, and never changed afterwards.
//! 2. **Recompute.** Every LedgerEntry some report points at is recomputed from all the reports
//!    that point at it (a fresh list from the API server, not a cache), and written when it
//!    differs. An entry's totals are never incremented: they are a function of the reports'
//!    assignments, so a crash between writing an assignment and writing the entry loses
//!    nothing (the next pass recomputes the entry, the report is already assigned) and counts
//!    nothing twice (a report is assigned to exactly one entry, once: a second writer's
//!    assignment fails on the resourceVersion). Reports delivered twice are stored once (their
//!    names are deterministic), so a duplicate delivery changes nothing either.
//! 3. **Close.** Entries past `end + watermark + grace` get `status.closed`; later reports for
//!    their bucket become adjustments.
//! 4. **Invoices** ([`invoices`]). Per tenant and billing period, the period's entries
//!    (adjustments count in the period of the entry they were folded into) are priced with the
//!    PriceList "default" (made from [`billing::default_prices`] when missing) and written as
//!    the Invoice `{tenant}.{period}`, only when it changed. It is "Open" while the period
//!    runs and "Final" once the period is past its watermark and grace and all its entries are
//!    closed; a Final invoice is not rewritten.
//! 5. **Budgets** ([`budgets`]). A Budget's threshold crossed by its tenant's current invoice is
//!    recorded in the Budget's status first, then announced by exactly one Event and, with a
//!    webhook, a signed call retried until it is answered 2xx.
//!
//! [`recount`] recomputes a tenant's period from the reports alone, to check an invoice.
//!
//! A tenant is the report's `spec.tenant` (the API server stamps it from the namespace); when
//! empty, the tenant of the report's Namespace; when the namespace is gone or names none, the
//! tenant "default": usage is never dropped for want of an owner.
//!
//! Each pass lists the reports, entries, invoices and budgets from the API server: a pass
//! decides on one consistent view and its own writes are read back by the next. Leader
//! election runs one billing controller at a time; a stale leader's write fails on the
//! resourceVersion.

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use futures::FutureExt;
use stratus_api::Resource;
use stratus_api::billing::{self, DEFAULT_PRICE_LIST, Prices};
use stratus_api::identity::DEFAULT_TENANT;
use stratus_api::v1::{Namespace, PriceList, UsageReport, UsageReportSpec};
use stratus_api::validation::ErrorList;
use stratus_client::{Error as ClientError, ListParams};
use tracing::warn;

use crate::config::Config;
use crate::context::Context;

pub mod budgets;
pub mod invoices;
pub mod ledger;
pub mod recount;

pub use recount::{Difference, Recount, compare, recount};

/// What failed, naming the step and the object.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("listing the {kind}s failed")]
    List {
        kind: &'static str,
        #[source]
        source: ClientError,
    },
    #[error("reading the PriceList \"default\" failed")]
    ReadPrices(#[source] ClientError),
    #[error("creating the PriceList \"default\" failed")]
    CreatePrices(#[source] ClientError),
    #[error("the PriceList \"default\" is invalid: {0}")]
    InvalidPrices(String),
    #[error("writing status.ledgerEntry {entry:?} of the UsageReport {report} failed")]
    Assign {
        report: String,
        entry: String,
        #[source]
        source: ClientError,
    },
    #[error("writing the LedgerEntry {entry} failed")]
    WriteEntry {
        entry: String,
        #[source]
        source: ClientError,
    },
    #[error("closing the LedgerEntry {entry} failed")]
    CloseEntry {
        entry: String,
        #[source]
        source: ClientError,
    },
    #[error("writing the Invoice {invoice} failed")]
    WriteInvoice {
        invoice: String,
        #[source]
        source: ClientError,
    },
    #[error("writing the status of the Budget {budget} failed")]
    WriteBudget {
        budget: String,
        #[source]
        source: ClientError,
    },
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// The controller's name in logs.
const CONTROLLER: &str = "billing";

/// Runs the billing controller until `shutdown`: one pass every [`Config::billing_interval`].
/// A failed pass is logged; the next one starts over from what is stored.
pub async fn run(ctx: Arc<Context>, shutdown: impl Future<Output = ()> + Send) {
    let mut shutdown = std::pin::pin!(shutdown.fuse());
    let mut webhooks = budgets::Webhooks::new();
    loop {
        if let Err(e) = pass(&ctx, &mut webhooks).await {
            warn!(controller = CONTROLLER, error = %chain(&e), "billing pass failed; retrying at the next one");
        }
        tokio::select! {
            _ = tokio::time::sleep(ctx.config.billing_interval) => {}
            () = &mut shutdown => return,
        }
    }
}

/// One pass: fold, recompute, close, invoice, budgets (see the module documentation).
pub async fn pass(ctx: &Context, webhooks: &mut budgets::Webhooks) -> Result<()> {
    let now = millis_of(ctx.clock.now());
    let price_list = default_price_list(ctx).await?;
    let prices = parse_prices(&price_list)?;
    let windows = Windows::of(&ctx.config);
    let all = ListParams::default();
    let list_error = |kind| move |source| Error::List { kind, source };
    let namespaces = ctx.client.list_all::<Namespace>(&all).await.map_err(list_error("Namespace"))?.items;
    let mut reports = ctx.client.list_all::<UsageReport>(&all).await.map_err(list_error("UsageReport"))?.items;
    let entries = ctx.client.list_all(&all).await.map_err(list_error("LedgerEntry"))?.items;
    let tenants = Tenants::new(&namespaces);
    let entries = ledger::fold(ctx, &tenants, &prices, windows, now, &mut reports, entries).await?;
    let invoices = ctx.client.list_all(&all).await.map_err(list_error("Invoice"))?.items;
    let current = invoices::write(ctx, &prices, &price_list, windows, now, &entries, invoices).await?;
    let budget_list = ctx.client.list_all(&all).await.map_err(list_error("Budget"))?.items;
    budgets::follow(ctx, webhooks, &prices, now, &current, budget_list).await
}

/// When buckets close: `end + watermark + grace`.
#[derive(Debug, Clone, Copy)]
pub struct Windows {
    pub watermark_millis: i64,
    pub grace_millis: i64,
}

impl Windows {
    pub fn of(config: &Config) -> Windows {
        let ms = |d: Duration| i64::try_from(d.as_millis()).unwrap_or(i64::MAX);
        Windows { watermark_millis: ms(config.billing_watermark), grace_millis: ms(config.billing_grace) }
    }

    /// The moment a bucket (or period) ending at `end` closes.
    pub fn closes(&self, end: i64) -> i64 {
        end.saturating_add(self.watermark_millis).saturating_add(self.grace_millis)
    }
}

/// Whose usage a report is: `spec.tenant`, else its namespace's tenant, else "default".
pub struct Tenants<'a> {
    namespaces: std::collections::BTreeMap<&'a str, &'a str>,
}

impl<'a> Tenants<'a> {
    pub fn new(namespaces: &'a [Namespace]) -> Tenants<'a> {
        let namespaces = namespaces
            .iter()
            .filter_map(|ns| Some((ns.meta().name.as_str(), ns.spec.as_ref()?.tenant.as_str())))
            .filter(|(_, t)| !t.is_empty())
            .collect();
        Tenants { namespaces }
    }

    pub fn of(&self, spec: &UsageReportSpec) -> String {
        if !spec.tenant.is_empty() {
            return spec.tenant.clone();
        }
        self.namespaces.get(spec.namespace.as_str()).copied().unwrap_or(DEFAULT_TENANT).to_string()
    }
}

/// The PriceList "default", created from [`billing::default_prices`] when missing.
async fn default_price_list(ctx: &Context) -> Result<PriceList> {
    match ctx.client.get::<PriceList>("", DEFAULT_PRICE_LIST).await {
        Ok(p) => return Ok(p),
        Err(ClientError::NotFound(_)) => {}
        Err(e) => return Err(Error::ReadPrices(e)),
    }
    let mut list = PriceList { spec: Some(billing::default_prices()), ..Default::default() };
    list.meta_mut().name = DEFAULT_PRICE_LIST.into();
    match ctx.client.create(list).await {
        Ok(p) => Ok(p),
        // Made meanwhile (by the API server's bootstrap or another replica): read it.
        Err(ClientError::AlreadyExists(_)) => {
            ctx.client.get::<PriceList>("", DEFAULT_PRICE_LIST).await.map_err(Error::ReadPrices)
        }
        Err(e) => Err(Error::CreatePrices(e)),
    }
}

/// The PriceList's prices; an invalid one stops billing (a pass prices nothing with a guess).
pub fn parse_prices(list: &PriceList) -> Result<Prices> {
    let mut errs = ErrorList::default();
    let spec = list.spec.clone().unwrap_or_default();
    Prices::parse(&spec, "spec", &mut errs).ok_or_else(|| Error::InvalidPrices(errs.to_string()))
}

/// Milliseconds since the epoch of a wall-clock time (0 before the epoch).
pub fn millis_of(t: SystemTime) -> i64 {
    t.duration_since(UNIX_EPOCH).map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX)).unwrap_or(0)
}

/// An error and its sources, for a log line.
fn chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        out.push_str(": ");
        out.push_str(&s.to_string());
        source = s.source();
    }
    out
}

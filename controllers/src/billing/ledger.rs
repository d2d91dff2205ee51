//! The ledger: UsageReports assigned to LedgerEntries, entries recomputed from the reports
//! assigned to them, and buckets closed (see the [module documentation](super)).
//!
//! An entry is named `{tenant}.{namespace}.{service}.{mode}.{bucket start in ms}`: five DNS
//! labels (at most 63 + 63 + 63 + 8 + 13 characters and four dots, well inside a DNS
//! subdomain's 253), so the name alone says which entry a report belongs to and the same usage
//! always lands in the same entry, whoever folds it.

use std::collections::BTreeMap;

use stratus_api::Resource;
use stratus_api::billing::{self, Period, Prices, Usage};
use stratus_api::v1::{LedgerEntry, LedgerEntrySpec, LedgerEntryStatus, UsageReport, UsageReportStatus};
use stratus_api::validation::dns_label;
use stratus_client::Error as ClientError;
use tracing::{debug, warn};

use super::{Error, Result, Tenants, Windows};
use crate::context::Context;

/// What one entry gathers: a tenant's service in one billing mode.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct EntryKey {
    pub tenant: String,
    pub namespace: String,
    pub service: String,
    pub mode: String,
}

impl EntryKey {
    /// The key of a report's usage, or why it cannot be named.
    pub fn of(tenant: String, namespace: &str, service: &str, mode: &str) -> Result<EntryKey, String> {
        for (field, v) in [("tenant", tenant.as_str()), ("namespace", namespace), ("service", service)] {
            dns_label(v).map_err(|e| format!("spec.{field} {v:?}: {e}"))?;
        }
        if mode != billing::MODE_REQUEST && mode != billing::MODE_INSTANCE {
            return Err(format!("spec.billingMode {mode:?} is not \"request\" or \"instance\""));
        }
        Ok(EntryKey { tenant, namespace: namespace.into(), service: service.into(), mode: mode.into() })
    }

    /// The name of this key's entry for the bucket starting at `bucket_start`.
    pub fn entry_name(&self, bucket_start: i64) -> String {
        format!("{}.{}.{}.{}.{bucket_start}", self.tenant, self.namespace, self.service, self.mode)
    }
}

/// The key and bucket start an entry's name holds.
pub fn parse_entry_name(name: &str) -> Option<(EntryKey, i64)> {
    let parts: Vec<&str> = name.split('.').collect();
    let [tenant, namespace, service, mode, start] = parts.as_slice() else { return None };
    let key = EntryKey::of((*tenant).to_string(), namespace, service, mode).ok()?;
    Some((key, start.parse().ok()?))
}

/// Where a report is folded: the entry's name, and whether it is an adjustment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Assignment {
    pub entry: String,
    pub adjustment: bool,
}

/// The entry a report of `key` whose window starts at `window_start` is folded into at `now`:
/// its own bucket's while that bucket is open (before `end + watermark + grace`, and its entry
/// not marked closed), else the bucket holding `now`, as an adjustment.
pub fn assign(
    key: &EntryKey,
    window_start: i64,
    now: i64,
    period: Period,
    windows: Windows,
    entries: &BTreeMap<String, LedgerEntry>,
) -> Assignment {
    let (start, end) = period.bucket(window_start);
    let entry = key.entry_name(start);
    let marked_closed = entries.get(&entry).is_some_and(is_closed);
    if now < windows.closes(end) && !marked_closed {
        return Assignment { entry, adjustment: false };
    }
    Assignment { entry: key.entry_name(period.bucket(now).0), adjustment: true }
}

/// Whether an entry is marked closed.
pub fn is_closed(entry: &LedgerEntry) -> bool {
    entry.status.as_ref().is_some_and(|s| s.closed)
}

/// The entry a report was folded into (empty when not yet).
pub fn assigned_entry(report: &UsageReport) -> &str {
    report.status.as_ref().map_or("", |s| s.ledger_entry.as_str())
}

/// What the reports assigned to one entry add up to.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Totals {
    pub usage: Usage,
    /// Of `usage`, the adjustments' share.
    pub adjustment: Usage,
    pub reports: i64,
}

/// The totals of `reports` (those assigned to one entry).
pub fn totals<'a>(reports: impl IntoIterator<Item = &'a UsageReport>) -> Totals {
    let mut t = Totals::default();
    for r in reports {
        let Some(spec) = &r.spec else { continue };
        let u = billing::usage_of(spec);
        t.usage.add(u);
        if r.status.as_ref().is_some_and(|s| s.adjustment) {
            t.adjustment.add(u);
        }
        t.reports += 1;
    }
    t
}

/// The spec of the entry `key` for the bucket `[start, end)` holding `totals`.
pub fn entry_spec(key: &EntryKey, start: i64, end: i64, t: &Totals) -> LedgerEntrySpec {
    LedgerEntrySpec {
        tenant: key.tenant.clone(),
        namespace: key.namespace.clone(),
        service: key.service.clone(),
        billing_mode: key.mode.clone(),
        start: Some(billing::timestamp(start)),
        end: Some(billing::timestamp(end)),
        cpu_millicore_millis: t.usage.cpu_millicore_millis.to_string(),
        memory_kib_millis: t.usage.memory_kib_millis.to_string(),
        requests: i64::try_from(t.usage.requests).unwrap_or(i64::MAX),
        adjustment_cpu_millicore_millis: t.adjustment.cpu_millicore_millis.to_string(),
        adjustment_memory_kib_millis: t.adjustment.memory_kib_millis.to_string(),
        adjustment_requests: i64::try_from(t.adjustment.requests).unwrap_or(i64::MAX),
        reports: t.reports,
    }
}

/// An entry's usage, read back from its spec (unparsable quantities count as zero).
pub fn entry_usage(spec: &LedgerEntrySpec) -> Usage {
    Usage {
        cpu_millicore_millis: spec.cpu_millicore_millis.parse().unwrap_or(0),
        memory_kib_millis: spec.memory_kib_millis.parse().unwrap_or(0),
        requests: u128::try_from(spec.requests).unwrap_or(0),
    }
}

/// Steps 1–3 of a pass: assigns the unfolded `reports` (updating them in place), recomputes
/// every entry a report points at, closes the entries past their bucket's close. Returns every
/// entry as written, by name.
pub async fn fold(
    ctx: &Context,
    tenants: &Tenants<'_>,
    prices: &Prices,
    windows: Windows,
    now: i64,
    reports: &mut [UsageReport],
    entries: Vec<LedgerEntry>,
) -> Result<BTreeMap<String, LedgerEntry>> {
    let mut entries: BTreeMap<String, LedgerEntry> = entries.into_iter().map(|e| (e.meta().name.clone(), e)).collect();

    // 1. Assign: the report's status first, conditional on the version read.
    for report in reports.iter_mut() {
        if !assigned_entry(report).is_empty() {
            continue;
        }
        let name = report.meta().name.clone();
        let Some(spec) = &report.spec else { continue };
        let Some(window_start) = billing::millis(spec.window_start.as_ref()) else {
            warn!(report = name, "a usage report without spec.windowStart cannot be folded");
            continue;
        };
        let key = match EntryKey::of(tenants.of(spec), &spec.namespace, &spec.service, &spec.billing_mode) {
            Ok(k) => k,
            Err(e) => {
                warn!(report = name, error = e, "a usage report that names no valid ledger entry cannot be folded");
                continue;
            }
        };
        let a = assign(&key, window_start, now, prices.period, windows, &entries);
        let mut next = report.clone();
        next.status = Some(UsageReportStatus { ledger_entry: a.entry.clone(), adjustment: a.adjustment });
        match ctx.client.update_status(next).await {
            Ok(written) => {
                debug!(report = name, entry = a.entry, adjustment = a.adjustment, "usage report folded");
                ctx.metrics.billing_reports_folded.inc();
                if a.adjustment {
                    ctx.metrics.billing_adjustments.inc();
                }
                *report = written;
            }
            // Changed since listed (another writer assigned it): what is stored now counts.
            Err(ClientError::Conflict(_)) => match ctx.client.get::<UsageReport>("", &name).await {
                Ok(stored) => *report = stored,
                Err(ClientError::NotFound(_)) => report.spec = None,
                Err(source) => return Err(Error::Assign { report: name, entry: a.entry, source }),
            },
            // Deleted meanwhile: it counts nowhere.
            Err(ClientError::NotFound(_)) => report.spec = None,
            Err(source) => return Err(Error::Assign { report: name, entry: a.entry, source }),
        }
    }

    // 2. Recompute every entry from the reports assigned to it.
    let mut groups: BTreeMap<&str, Vec<&UsageReport>> = BTreeMap::new();
    for r in reports.iter().filter(|r| r.spec.is_some()) {
        let entry = assigned_entry(r);
        if !entry.is_empty() {
            groups.entry(entry).or_default().push(r);
        }
    }
    for (name, group) in groups {
        let Some((key, start)) = parse_entry_name(name) else {
            warn!(entry = name, "usage reports point at a ledger entry name that is not one: ignored");
            continue;
        };
        let end = prices.period.bucket(start).1;
        let spec = entry_spec(&key, start, end, &totals(group));
        let write_error = |source| Error::WriteEntry { entry: name.to_string(), source };
        let written = match entries.get(name) {
            Some(existing) if existing.spec.as_ref() == Some(&spec) => continue,
            Some(existing) => {
                let mut next = existing.clone();
                next.spec = Some(spec);
                ctx.client.update(next).await.map_err(write_error)?
            }
            None => {
                let mut entry = LedgerEntry { spec: Some(spec), ..Default::default() };
                entry.meta_mut().name = name.to_string();
                ctx.client.create(entry).await.map_err(write_error)?
            }
        };
        entries.insert(name.to_string(), written);
    }

    // 3. Close the buckets past their watermark and grace.
    for (name, entry) in entries.iter_mut() {
        let end = entry.spec.as_ref().and_then(|s| billing::millis(s.end.as_ref()));
        if is_closed(entry) || end.is_none_or(|end| now < windows.closes(end)) {
            continue;
        }
        let mut next = entry.clone();
        next.status = Some(LedgerEntryStatus { closed: true, closed_at: Some(billing::timestamp(now)) });
        *entry =
            ctx.client.update_status(next).await.map_err(|source| Error::CloseEntry { entry: name.clone(), source })?;
    }
    Ok(entries)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> EntryKey {
        EntryKey::of("acme".into(), "web", "api", billing::MODE_REQUEST).unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn names_are_deterministic_and_read_back() {
        let name = key().entry_name(1_800_000_000_000);
        assert_eq!(name, "acme.web.api.request.1800000000000");
        assert_eq!(parse_entry_name(&name), Some((key(), 1_800_000_000_000)));
        assert_eq!(parse_entry_name("acme.web.api.request"), None);
        assert_eq!(parse_entry_name("acme.web.api.sometimes.1"), None);
        assert!(EntryKey::of("Acme".into(), "web", "api", billing::MODE_REQUEST).is_err());
        let long = "a".repeat(63);
        let longest = EntryKey::of(long.clone(), &long, &long, billing::MODE_INSTANCE).map(|k| k.entry_name(i64::MAX));
        assert!(longest.is_ok_and(|n| n.len() <= 253 && stratus_api::validation::dns_subdomain(&n).is_ok()));
    }

    #[test]
    fn a_bucket_takes_reports_until_its_grace_ends_then_the_open_bucket_does() {
        let period = Period::Every(60_000);
        let windows = Windows { watermark_millis: 1_000, grace_millis: 2_000 };
        let none = BTreeMap::new();
        let t0 = 1_800_000_000_000; // a minute's start
        let own = Assignment { entry: key().entry_name(t0), adjustment: false };
        assert_eq!(assign(&key(), t0 + 5_000, t0 + 30_000, period, windows, &none), own);
        assert_eq!(assign(&key(), t0 + 5_000, t0 + 62_999, period, windows, &none), own, "inside the grace");
        let late = assign(&key(), t0 + 5_000, t0 + 63_000, period, windows, &none);
        assert_eq!(late, Assignment { entry: key().entry_name(t0 + 60_000), adjustment: true });
        // A bucket marked closed takes nothing more, whatever the clock says.
        let mut closed = LedgerEntry::default();
        closed.status = Some(LedgerEntryStatus { closed: true, closed_at: None });
        let entries = BTreeMap::from([(key().entry_name(t0), closed)]);
        let late = assign(&key(), t0 + 5_000, t0 + 61_000, period, windows, &entries);
        assert_eq!(late, Assignment { entry: key().entry_name(t0 + 60_000), adjustment: true });
    }
}

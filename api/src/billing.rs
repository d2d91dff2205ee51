//! Billing's arithmetic and rules, shared by the reporters (gateway, agent), the API server's
//! validation, the billing controller and the CLI: 100 ms ticks, usage quantities, exact money,
//! billing periods and the names of usage reports.
//!
//! **Ticks.** Time is counted in ticks of [`TICK_MILLIS`] of the clock, from the Unix epoch. A
//! period `[start, end)` covers every tick it touches, and the periods of one report are merged
//! before counting, so a tick is counted once however many requests were in flight in it. That
//! is Cloud Run's "rounded up to the nearest 100 ms"; counting whole ticks of the clock rather
//! than rounding each period's length means that cutting a period at a report window's edge
//! (windows start and end on whole seconds) never adds a tick.
//!
//! **Quantities.** A report's ticks times its container's limits: CPU in millicore-milliseconds,
//! memory in KiB-milliseconds (the limit in bytes rounded up to whole KiB), and requests.
//!
//! **Money.** Prices are decimal strings with at most 9 decimal places, held as integer
//! billionths ([`Price`]). Amounts ([`Amount`]) are integers in units of 10^-15 × 2^-20 of the
//! currency: in those units the cost of any whole number of millicore-milliseconds,
//! KiB-milliseconds or requests at any [`Price`] is an integer, so no amount is ever rounded
//! until [`Amount::round_to_minor_unit`] rounds an invoice's total, once, half up.

use std::collections::BTreeMap;
use std::fmt;

use crate::time::{civil_from_days, days_from_civil};
use crate::v1::{BillingModePrices, FreeTier, InvoiceLine, InvoiceSpec, PriceListSpec, UsagePeriod, UsageReportSpec};
use crate::validation::{ErrorList, dns_label};

/// One tick of billed time.
pub const TICK_MILLIS: i64 = 100;

/// Billing modes (`UsageReportSpec.billing_mode`, Cloud Run's `cpu-throttling`).
pub const MODE_REQUEST: &str = "request";
pub const MODE_INSTANCE: &str = "instance";
/// Who sends usage reports (`UsageReportSpec.source_kind`).
pub const SOURCE_GATEWAY: &str = "gateway";
pub const SOURCE_AGENT: &str = "agent";

/// The PriceList the billing controller prices with; made at bootstrap.
pub const DEFAULT_PRICE_LIST: &str = "default";

/// The longest window one report may cover.
pub const MAX_WINDOW_MILLIS: i64 = 3_600_000;
/// Limits past which a report is impossible rather than large.
pub const MAX_CPU_MILLIS: i64 = 1_024_000;
pub const MAX_MEMORY_BYTES: i64 = 1 << 44;
pub const MAX_REQUESTS_PER_WINDOW: i64 = 1_000_000_000;
pub const MAX_PERIODS: usize = 100_000;
/// How far ahead of the API server's clock a report's window may end (clock skew).
pub const MAX_FUTURE_MILLIS: i64 = 300_000;
/// No usage is older than this (2020-01-01T00:00:00Z).
pub const EARLIEST_MILLIS: i64 = 1_577_836_800_000;

/// The billing mode of a revision: request-based unless CPU is always allocated.
pub fn billing_mode(cpu_throttling: bool) -> &'static str {
    if cpu_throttling { MODE_REQUEST } else { MODE_INSTANCE }
}

/// The name of the report of `source` about `instance` for the window starting at
/// `window_start_millis`: the same usage always has the same name, so a report delivered twice
/// is stored once (the second create answers AlreadyExists).
pub fn report_name(
    source_kind: &str,
    source: &str,
    namespace: &str,
    instance: &str,
    window_start_millis: i64,
) -> String {
    format!("{source_kind}.{source}.{namespace}.{instance}.{window_start_millis}")
}

/// Milliseconds since the epoch of a protobuf timestamp (None when unset).
pub fn millis(t: Option<&pbjson_types::Timestamp>) -> Option<i64> {
    t.map(|t| t.seconds.saturating_mul(1000).saturating_add(i64::from(t.nanos.div_euclid(1_000_000))))
}

/// The protobuf timestamp of `millis` since the epoch.
pub fn timestamp(millis: i64) -> pbjson_types::Timestamp {
    let nanos = i32::try_from(millis.rem_euclid(1000) * 1_000_000).unwrap_or(0);
    pbjson_types::Timestamp { seconds: millis.div_euclid(1000), nanos }
}

/// The ticks covered by the union of `periods` (`[start, end)` in milliseconds since the epoch;
/// empty or reversed periods cover nothing).
pub fn ticks(periods: impl IntoIterator<Item = (i64, i64)>) -> i64 {
    let mut ranges: Vec<(i64, i64)> = periods
        .into_iter()
        .filter(|(s, e)| e > s)
        .map(|(s, e)| {
            (s.div_euclid(TICK_MILLIS), e.div_euclid(TICK_MILLIS) + i64::from(e.rem_euclid(TICK_MILLIS) != 0))
        })
        .collect();
    ranges.sort_unstable();
    let mut total = 0i64;
    let mut covered_to = i64::MIN;
    for (s, e) in ranges {
        let from = s.max(covered_to);
        if e > from {
            total += e - from;
        }
        covered_to = covered_to.max(e);
    }
    total
}

/// What one report (or a sum of them) bills: ticks times limits, and requests.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Usage {
    pub cpu_millicore_millis: u128,
    pub memory_kib_millis: u128,
    pub requests: u128,
}

impl Usage {
    pub fn add(&mut self, other: Usage) {
        self.cpu_millicore_millis += other.cpu_millicore_millis;
        self.memory_kib_millis += other.memory_kib_millis;
        self.requests += other.requests;
    }

    pub fn is_zero(&self) -> bool {
        *self == Usage::default()
    }
}

/// The usage a report bills. Under instance-based billing the agent's periods (the container's
/// life) are billed and a gateway's periods are not (its requests are still counted); under
/// request-based billing every period is: the gateway's busy time and the agent's start-up and
/// shut-down.
pub fn usage_of(spec: &UsageReportSpec) -> Usage {
    let billed = !(spec.billing_mode == MODE_INSTANCE && spec.source_kind == SOURCE_GATEWAY);
    let ticks = if billed { ticks(periods(&spec.periods)) } else { 0 };
    let millis = u128::try_from(ticks.saturating_mul(TICK_MILLIS)).unwrap_or(0);
    let cpu = u128::try_from(spec.cpu_millis).unwrap_or(0);
    let kib = u128::try_from(spec.memory_bytes).unwrap_or(0).div_ceil(1024);
    Usage {
        cpu_millicore_millis: millis * cpu,
        memory_kib_millis: millis * kib,
        requests: u128::try_from(spec.requests).unwrap_or(0),
    }
}

fn periods(periods: &[UsagePeriod]) -> impl Iterator<Item = (i64, i64)> + '_ {
    periods.iter().filter_map(|p| Some((millis(p.start.as_ref())?, millis(p.end.as_ref())?)))
}

/// A unit price: an exact decimal of the currency with at most 9 decimal places, in billionths.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord)]
pub struct Price(pub u128);

impl std::str::FromStr for Price {
    type Err = String;

    fn from_str(s: &str) -> Result<Price, String> {
        let bad =
            || format!("{s:?} is not a price: write a decimal number such as \"0.000024\", at most 9 decimal places");
        let (int, frac) = s.split_once('.').unwrap_or((s, ""));
        let digits = |d: &str| !d.is_empty() && d.bytes().all(|b| b.is_ascii_digit());
        if !digits(int) || (s.contains('.') && !digits(frac)) || frac.len() > 9 || int.len() > 18 {
            return Err(bad());
        }
        let int: u128 = int.parse().map_err(|_| bad())?;
        let frac_value: u128 = if frac.is_empty() { 0 } else { frac.parse().map_err(|_| bad())? };
        let scale = 10u128.pow(9 - u32::try_from(frac.len()).map_err(|_| bad())?);
        Ok(Price(int * 1_000_000_000 + frac_value * scale))
    }
}

impl fmt::Display for Price {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&decimal(self.0, 0, 9))
    }
}

/// `2^20`: amounts are kept in units of 10^-15 × 2^-20 of the currency.
const TWO_20: u128 = 1 << 20;
/// One currency unit in [`Amount`] units.
const ONE: u128 = 1_000_000_000_000_000 * TWO_20;

/// An exact amount of money (negative for a credit).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord)]
pub struct Amount(pub i128);

impl Amount {
    /// `millicore_millis` of CPU at `price` per vCPU-second.
    pub fn cpu(millicore_millis: u128, price: Price) -> Amount {
        // vCPU-s = mc·ms / 10^6; × price / 10^9  →  mc·ms × price × 10^-15.
        Amount::from_units(millicore_millis.saturating_mul(price.0).saturating_mul(TWO_20))
    }

    /// `kib_millis` of memory at `price` per GiB-second.
    pub fn memory(kib_millis: u128, price: Price) -> Amount {
        // GiB-s = KiB·ms / (2^20 × 10^3); × price / 10^9  →  KiB·ms × price × 10^-12 × 2^-20.
        Amount::from_units(kib_millis.saturating_mul(price.0).saturating_mul(1000))
    }

    /// `requests` at `price` per million requests.
    pub fn requests(requests: u128, price: Price) -> Amount {
        // requests / 10^6 × price / 10^9  →  requests × price × 10^-15.
        Amount::from_units(requests.saturating_mul(price.0).saturating_mul(TWO_20))
    }

    fn from_units(units: u128) -> Amount {
        Amount(i128::try_from(units).unwrap_or(i128::MAX))
    }

    pub fn plus(self, other: Amount) -> Amount {
        Amount(self.0.saturating_add(other.0))
    }

    pub fn minus(self, other: Amount) -> Amount {
        Amount(self.0.saturating_sub(other.0))
    }

    /// Rounded half up (away from zero) to `minor_digits` decimal places: the one rounding of
    /// an invoice, applied to its total.
    pub fn round_to_minor_unit(self, minor_digits: u32) -> Amount {
        let step = ONE / 10u128.pow(minor_digits.min(15)); // 10^(15 - d) × 2^20: exact
        let magnitude = self.0.unsigned_abs();
        let rounded = (magnitude + step / 2) / step * step;
        let rounded = i128::try_from(rounded).unwrap_or(i128::MAX);
        Amount(if self.0 < 0 { -rounded } else { rounded })
    }

    /// The exact decimal, with at least `min_places` decimal places.
    pub fn to_decimal(self, min_places: usize) -> String {
        let magnitude = self.0.unsigned_abs();
        let int = magnitude / ONE;
        // The fraction r / (10^15 × 2^20) = r × 5^20 / 10^35: exact in 35 places.
        let frac = (magnitude % ONE) * 5u128.pow(20);
        let sign = if self.0 < 0 { "-" } else { "" };
        format!("{sign}{}", decimal_parts(int, frac, 35, min_places))
    }
}

impl fmt::Display for Amount {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_decimal(2))
    }
}

impl std::str::FromStr for Amount {
    type Err = String;

    /// A decimal amount with at most 9 places, as a Budget's `amount` is written.
    fn from_str(s: &str) -> Result<Amount, String> {
        let (negative, digits) = match s.strip_prefix('-') {
            Some(rest) => (true, rest),
            None => (false, s),
        };
        let price: Price = digits
            .parse()
            .map_err(|_| format!("{s:?} is not an amount: write a decimal number such as \"100\" or \"12.50\""))?;
        let units = i128::try_from(price.0.saturating_mul(1_000_000).saturating_mul(TWO_20)).unwrap_or(i128::MAX);
        Ok(Amount(if negative { -units } else { units }))
    }
}

/// `value / 10^scale` as a decimal with trailing zeros trimmed down to `min_places`.
fn decimal(value: u128, min_places: usize, scale: u32) -> String {
    let unit = 10u128.pow(scale);
    decimal_parts(value / unit, value % unit, scale, min_places)
}

/// `int` and the fraction `frac / 10^scale`, written apart so that no whole part can overflow
/// when shifted by the fraction's places; trailing zeros trimmed down to `min_places`.
fn decimal_parts(int: u128, frac: u128, scale: u32, min_places: usize) -> String {
    let mut frac = format!("{frac:0width$}", width = scale as usize);
    while frac.len() > min_places && frac.ends_with('0') {
        frac.pop();
    }
    if frac.is_empty() { int.to_string() } else { format!("{int}.{frac}") }
}

/// The decimal places of a currency's minor unit (ISO 4217): 0 for the yen and the won, 3 for
/// the Gulf dinars, 2 for the rest.
pub fn minor_digits(currency: &str) -> u32 {
    match currency {
        "JPY" | "KRW" | "VND" | "CLP" | "ISK" | "UGX" | "XAF" | "XOF" | "XPF" => 0,
        "BHD" | "IQD" | "JOD" | "KWD" | "LYD" | "OMR" | "TND" => 3,
        _ => 2,
    }
}

/// A billing period: calendar months in UTC, or fixed lengths from the epoch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Period {
    Monthly,
    Every(i64),
}

/// The shortest period a PriceList may set.
pub const MIN_PERIOD_MILLIS: i64 = 60_000;
/// The longest ledger bucket.
pub const HOUR_MILLIS: i64 = 3_600_000;

impl std::str::FromStr for Period {
    type Err = String;

    fn from_str(s: &str) -> Result<Period, String> {
        if s.is_empty() || s == "monthly" {
            return Ok(Period::Monthly);
        }
        let d = crate::duration::parse(s).map_err(|e| format!("{e}, or \"monthly\""))?;
        let ms = i64::try_from(d.as_millis()).map_err(|_| format!("{s:?} is too long"))?;
        if ms < MIN_PERIOD_MILLIS {
            return Err(format!("{s:?} is shorter than a minute"));
        }
        if !(HOUR_MILLIS % ms == 0 || ms % HOUR_MILLIS == 0) {
            return Err(format!("{s:?} must divide an hour evenly (1m, 5m, 10m, 15m, 30m, …) or be whole hours"));
        }
        Ok(Period::Every(ms))
    }
}

impl Period {
    /// The period holding `at` (milliseconds since the epoch): its key (a name part: `2026-12`
    /// for a month, `20261204t1910` for a fixed length), start and end.
    pub fn holding(self, at: i64) -> (String, i64, i64) {
        match self {
            Period::Monthly => {
                let (y, m, _) = civil_from_days(at.div_euclid(86_400_000));
                let start = days_from_civil(y, m, 1) * 86_400_000;
                let (ny, nm) = if m == 12 { (y + 1, 1) } else { (y, m + 1) };
                (format!("{y:04}-{m:02}"), start, days_from_civil(ny, nm, 1) * 86_400_000)
            }
            Period::Every(len) => {
                let start = at.div_euclid(len) * len;
                let secs = start.div_euclid(1000);
                let (y, m, d) = civil_from_days(secs.div_euclid(86_400));
                let day = secs.rem_euclid(86_400);
                (format!("{y:04}{m:02}{d:02}t{:02}{:02}", day / 3600, day % 3600 / 60), start, start + len)
            }
        }
    }

    /// The ledger bucket holding `at`: the hour, or the period when periods are shorter.
    pub fn bucket(self, at: i64) -> (i64, i64) {
        let len = match self {
            Period::Every(len) if len < HOUR_MILLIS => len,
            _ => HOUR_MILLIS,
        };
        let start = at.div_euclid(len) * len;
        (start, start + len)
    }
}

/// Cloud Run's tier-1 prices and free tier, the default PriceList's spec.
pub fn default_prices() -> PriceListSpec {
    PriceListSpec {
        currency: "USD".into(),
        request_based: Some(BillingModePrices {
            cpu_second: "0.000024".into(),
            memory_gib_second: "0.0000025".into(),
            million_requests: "0.40".into(),
            free: Some(FreeTier { cpu_seconds: 180_000, memory_gib_seconds: 360_000, requests: 2_000_000 }),
        }),
        instance_based: Some(BillingModePrices {
            cpu_second: "0.000018".into(),
            memory_gib_second: "0.000002".into(),
            million_requests: "0".into(),
            free: Some(FreeTier { cpu_seconds: 240_000, memory_gib_seconds: 450_000, requests: 0 }),
        }),
        period: "monthly".into(),
    }
}

/// A PriceList's prices, parsed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ModePrices {
    pub cpu_second: Price,
    pub memory_gib_second: Price,
    pub million_requests: Price,
    pub free: Usage,
}

/// A PriceList's spec, parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Prices {
    pub currency: String,
    pub request_based: ModePrices,
    pub instance_based: ModePrices,
    pub period: Period,
}

impl Prices {
    /// Parses (and so validates) a PriceList's spec; every error names its field under `path`.
    pub fn parse(spec: &PriceListSpec, path: &str, errs: &mut ErrorList) -> Option<Prices> {
        let before = errs.0.len();
        let currency = if spec.currency.is_empty() { "USD".to_string() } else { spec.currency.clone() };
        if currency.len() != 3 || !currency.bytes().all(|b| b.is_ascii_uppercase()) {
            errs.push(
                format!("{path}.currency"),
                format!("{currency:?} is not an ISO 4217 code (three capital letters, e.g. USD)"),
            );
        }
        let period = spec.period.parse::<Period>().map_err(|e| errs.push(format!("{path}.period"), e)).ok();
        let request_based = mode_prices(spec.request_based.as_ref(), &format!("{path}.requestBased"), errs);
        let instance_based = mode_prices(spec.instance_based.as_ref(), &format!("{path}.instanceBased"), errs);
        if errs.0.len() > before {
            return None;
        }
        Some(Prices { currency, request_based: request_based?, instance_based: instance_based?, period: period? })
    }

    pub fn of_mode(&self, mode: &str) -> &ModePrices {
        if mode == MODE_INSTANCE { &self.instance_based } else { &self.request_based }
    }
}

fn mode_prices(prices: Option<&BillingModePrices>, path: &str, errs: &mut ErrorList) -> Option<ModePrices> {
    let Some(p) = prices else {
        errs.push(path, "is required");
        return None;
    };
    let mut price = |field: &str, v: &str| match v.parse::<Price>() {
        Ok(p) => Some(p),
        Err(e) => {
            errs.push(format!("{path}.{field}"), e);
            None
        }
    };
    let (cpu, memory, requests) = (
        price("cpuSecond", &p.cpu_second),
        price("memoryGibSecond", &p.memory_gib_second),
        price("millionRequests", &p.million_requests),
    );
    let free = p.free.unwrap_or_default();
    for (field, v) in
        [("cpuSeconds", free.cpu_seconds), ("memoryGibSeconds", free.memory_gib_seconds), ("requests", free.requests)]
    {
        if v < 0 {
            errs.push(format!("{path}.free.{field}"), "must not be negative");
        }
    }
    let whole = |v: i64, unit: u128| u128::try_from(v).unwrap_or(0) * unit;
    Some(ModePrices {
        cpu_second: cpu?,
        memory_gib_second: memory?,
        million_requests: requests?,
        free: Usage {
            cpu_millicore_millis: whole(free.cpu_seconds, 1_000_000),
            memory_kib_millis: whole(free.memory_gib_seconds, TWO_20 * 1000),
            requests: whole(free.requests, 1),
        },
    })
}

/// The usage of one service in one billing mode over a period: what one invoice line group is
/// made of.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct LineKey<'a> {
    pub namespace: &'a str,
    pub service: &'a str,
    pub mode: &'a str,
}

/// One priced line: a quantity in its unit, the unit price and the exact amount.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Line {
    pub namespace: String,
    pub service: String,
    pub mode: String,
    /// "cpu", "memory", "requests" or "free-tier".
    pub item: String,
    pub quantity: String,
    pub unit: String,
    pub unit_price: String,
    pub amount: Amount,
}

/// An invoice's numbers: its lines, the exact subtotal and free-tier credit, and the total
/// rounded once.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Priced {
    pub lines: Vec<Line>,
    pub subtotal: Amount,
    pub free_tier: Amount,
    pub total: Amount,
}

/// Prices a tenant's usage over one period. Each service and mode gets a line per item it used;
/// then, per mode and item, the free tier is credited (at most what was used), once per tenant;
/// the total is the subtotal less the credits, rounded half up to the currency's minor unit.
pub fn price(usage: &BTreeMap<LineKey<'_>, Usage>, prices: &Prices) -> Priced {
    let mut lines = Vec::new();
    let mut subtotal = Amount::default();
    let mut per_mode: BTreeMap<&str, Usage> = BTreeMap::new();
    for (key, u) in usage {
        let p = prices.of_mode(key.mode);
        per_mode.entry(key.mode).or_default().add(*u);
        for (item, quantity, amount, unit, unit_price) in items(u, p) {
            if quantity == 0 {
                continue;
            }
            subtotal = subtotal.plus(amount);
            lines.push(Line {
                namespace: key.namespace.to_string(),
                service: key.service.to_string(),
                mode: key.mode.to_string(),
                item: item.to_string(),
                quantity: quantity_decimal(item, quantity),
                unit: unit.to_string(),
                unit_price: unit_price.to_string(),
                amount,
            });
        }
    }
    let mut free_tier = Amount::default();
    for (mode, used) in per_mode {
        let p = prices.of_mode(mode);
        let covered = Usage {
            cpu_millicore_millis: used.cpu_millicore_millis.min(p.free.cpu_millicore_millis),
            memory_kib_millis: used.memory_kib_millis.min(p.free.memory_kib_millis),
            requests: used.requests.min(p.free.requests),
        };
        for (item, quantity, amount, unit, unit_price) in items(&covered, p) {
            if quantity == 0 || amount.0 == 0 {
                continue;
            }
            free_tier = free_tier.plus(amount);
            lines.push(Line {
                namespace: String::new(),
                service: String::new(),
                mode: mode.to_string(),
                item: format!("free-tier-{item}"),
                quantity: quantity_decimal(item, quantity),
                unit: unit.to_string(),
                unit_price: unit_price.to_string(),
                amount: Amount(-amount.0),
            });
        }
    }
    let total = subtotal.minus(free_tier).round_to_minor_unit(minor_digits(&prices.currency));
    Priced { lines, subtotal, free_tier, total }
}

type Item = (&'static str, u128, Amount, &'static str, Price);

fn items(u: &Usage, p: &ModePrices) -> [Item; 3] {
    [
        ("cpu", u.cpu_millicore_millis, Amount::cpu(u.cpu_millicore_millis, p.cpu_second), "vCPU-second", p.cpu_second),
        (
            "memory",
            u.memory_kib_millis,
            Amount::memory(u.memory_kib_millis, p.memory_gib_second),
            "GiB-second",
            p.memory_gib_second,
        ),
        (
            "requests",
            u.requests,
            Amount::requests(u.requests, p.million_requests),
            "million requests",
            p.million_requests,
        ),
    ]
}

/// A quantity in its invoice unit, exact: vCPU-seconds (millicore-ms / 10^6), GiB-seconds
/// (KiB-ms / (2^20 × 10^3), exact in 23 places), requests.
pub fn quantity_decimal(item: &str, q: u128) -> String {
    match item {
        "cpu" => decimal(q, 0, 6),
        // q / 2^20 / 10^3 = q × 5^20 / 10^23.
        "memory" => {
            let (int, rest) = (q / (TWO_20 * 1000), q % (TWO_20 * 1000));
            decimal_parts(int, rest * 5u128.pow(20), 23, 0)
        }
        _ => q.to_string(),
    }
}

/// The rules of a UsageReport: names, a window no longer than an hour that has ended no later
/// than [`MAX_FUTURE_MILLIS`] from `now_millis`, periods inside it, and quantities that are
/// possible. `name` must be the report's [`report_name`].
pub fn validate_report(name: &str, spec: &UsageReportSpec, now_millis: i64, errs: &mut ErrorList) {
    match spec.source_kind.as_str() {
        SOURCE_GATEWAY | SOURCE_AGENT => {}
        other => errs.push("spec.sourceKind", format!("{other:?} is not \"gateway\" or \"agent\"")),
    }
    for (field, v) in [
        ("source", &spec.source),
        ("namespace", &spec.namespace),
        ("service", &spec.service),
        ("revision", &spec.revision),
        ("instance", &spec.instance),
    ] {
        if v.is_empty() {
            errs.push(format!("spec.{field}"), "is required");
        } else if let Err(e) = dns_label(v) {
            errs.push(format!("spec.{field}"), e);
        }
    }
    match spec.billing_mode.as_str() {
        MODE_REQUEST | MODE_INSTANCE => {}
        other => errs.push("spec.billingMode", format!("{other:?} is not \"request\" or \"instance\"")),
    }
    let (start, end) = (millis(spec.window_start.as_ref()), millis(spec.window_end.as_ref()));
    match (start, end) {
        (None, _) => errs.push("spec.windowStart", "is required"),
        (_, None) => errs.push("spec.windowEnd", "is required"),
        (Some(s), Some(e)) => {
            if e <= s {
                errs.push("spec.windowEnd", "must be after spec.windowStart");
            } else if e - s > MAX_WINDOW_MILLIS {
                errs.push("spec.windowEnd", "a window covers at most an hour");
            }
            if s < EARLIEST_MILLIS {
                errs.push("spec.windowStart", "is before 2020: the reporter's clock is wrong");
            }
            if e > now_millis + MAX_FUTURE_MILLIS {
                errs.push("spec.windowEnd", "is in the future: the reporter's clock is ahead of the API server's");
            }
            if name != report_name(&spec.source_kind, &spec.source, &spec.namespace, &spec.instance, s) {
                errs.push(
                    "metadata.name",
                    format!(
                        "must be {:?}: a report is named by its source, instance and window",
                        report_name(&spec.source_kind, &spec.source, &spec.namespace, &spec.instance, s)
                    ),
                );
            }
            if spec.periods.len() > MAX_PERIODS {
                errs.push("spec.periods", format!("has more than {MAX_PERIODS} periods"));
            }
            for (i, p) in spec.periods.iter().enumerate() {
                match (millis(p.start.as_ref()), millis(p.end.as_ref())) {
                    (Some(ps), Some(pe)) if ps <= pe && ps >= s && pe <= e => {}
                    (Some(_), Some(_)) => {
                        errs.push(format!("spec.periods[{i}]"), "must end after it starts and lie inside the window")
                    }
                    _ => errs.push(format!("spec.periods[{i}]"), "needs a start and an end"),
                }
            }
        }
    }
    if !(1..=MAX_CPU_MILLIS).contains(&spec.cpu_millis) {
        errs.push("spec.cpuMillis", format!("must be 1..{MAX_CPU_MILLIS}"));
    }
    if !(1..=MAX_MEMORY_BYTES).contains(&spec.memory_bytes) {
        errs.push("spec.memoryBytes", format!("must be 1..{MAX_MEMORY_BYTES}"));
    }
    if !(0..=MAX_REQUESTS_PER_WINDOW).contains(&spec.requests) {
        errs.push("spec.requests", format!("must be 0..{MAX_REQUESTS_PER_WINDOW}"));
    }
    if spec.source_kind == SOURCE_AGENT && spec.requests != 0 {
        errs.push("spec.requests", "only a gateway counts requests");
    }
}

/// The spec of `tenant`'s invoice for the period `(key, start, end)`, priced as `priced`.
pub fn invoice_spec(
    tenant: &str,
    (key, start, end): (&str, i64, i64),
    prices: &Prices,
    priced: &Priced,
    price_list: &str,
) -> InvoiceSpec {
    let minor = usize::try_from(minor_digits(&prices.currency)).unwrap_or(2);
    InvoiceSpec {
        tenant: tenant.into(),
        period: key.into(),
        period_start: Some(timestamp(start)),
        period_end: Some(timestamp(end)),
        currency: prices.currency.clone(),
        lines: priced
            .lines
            .iter()
            .map(|l| InvoiceLine {
                namespace: l.namespace.clone(),
                service: l.service.clone(),
                billing_mode: l.mode.clone(),
                item: l.item.clone(),
                quantity: l.quantity.clone(),
                unit: l.unit.clone(),
                unit_price: l.unit_price.clone(),
                amount: l.amount.to_decimal(minor),
            })
            .collect(),
        subtotal: priced.subtotal.to_decimal(minor),
        free_tier: priced.free_tier.to_decimal(minor),
        total: priced.total.to_decimal(minor),
        price_list: price_list.into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn period(s: i64, e: i64) -> (i64, i64) {
        (s, e)
    }

    #[test]
    fn ticks_count_every_touched_tick_once() {
        assert_eq!(ticks([period(0, 100)]), 1);
        assert_eq!(ticks([period(0, 101)]), 2);
        assert_eq!(ticks([period(50, 150)]), 2);
        assert_eq!(ticks([period(0, 1)]), 1);
        assert_eq!(ticks([period(5, 5)]), 0);
        // Overlapping and touching periods share their ticks.
        assert_eq!(ticks([period(0, 250), period(120, 180), period(250, 300)]), 3);
        // Cutting a period at a whole second adds nothing.
        let whole = ticks([period(1_950, 2_040)]);
        assert_eq!(whole, ticks([period(1_950, 2_000)]) + ticks([period(2_000, 2_040)]));
    }

    #[test]
    fn prices_parse_exactly() {
        assert_eq!("0.000024".parse::<Price>(), Ok(Price(24_000)));
        assert_eq!("0.40".parse::<Price>(), Ok(Price(400_000_000)));
        assert_eq!("3".parse::<Price>(), Ok(Price(3_000_000_000)));
        for bad in ["", ".5", "1.", "-1", "1e-3", "0.0000000001", "1,5", " 1"] {
            assert!(bad.parse::<Price>().is_err(), "{bad:?}");
        }
        assert_eq!(Price(2_500).to_string(), "0.0000025");
    }

    #[test]
    fn amounts_are_exact_and_rounded_once() {
        // 1 vCPU for one hour at $0.000024/s = $0.0864.
        let a = Amount::cpu(1000 * 3_600_000, "0.000024".parse().unwrap_or_default());
        assert_eq!(a.to_decimal(2), "0.0864");
        assert_eq!(a.round_to_minor_unit(2).to_decimal(2), "0.09");
        // 512 MiB for 100 ms at $0.0000025/GiB-s = $0.000000125.
        let m = Amount::memory(512 * 1024 * 100, "0.0000025".parse().unwrap_or_default());
        assert_eq!(m.to_decimal(0), "0.000000125");
        // 1 KiB for 1 ms: exact in 2^-20 steps.
        let tiny = Amount::memory(1, Price(1_000_000_000));
        assert_eq!(tiny.to_decimal(0), "0.00000000095367431640625");
        // Half up: 0.005 → 0.01, 0.00499… → 0.00.
        let half: Amount = "0.005".parse().unwrap_or_default();
        assert_eq!(half.round_to_minor_unit(2).to_decimal(2), "0.01");
        let below: Amount = "0.004999999".parse().unwrap_or_default();
        assert_eq!(below.round_to_minor_unit(2).to_decimal(2), "0.00");
        assert_eq!(Amount::requests(1_000_000, "0.40".parse().unwrap_or_default()).to_decimal(2), "0.40");
        // Large amounts and quantities are written whole, not wrapped (3,403 units and more
        // once overflowed when shifted by the 35 places of the fraction).
        let big: Amount = "123456789012345678.5".parse().unwrap_or_default();
        assert_eq!(big.to_decimal(2), "123456789012345678.50");
        assert_eq!(big.round_to_minor_unit(0).to_decimal(0), "123456789012345679");
        assert_eq!(Amount(-big.0).to_decimal(2), "-123456789012345678.50");
        assert_eq!(quantity_decimal("memory", 5 * (1 << 20) * 1000 * 1_000_000_000_000_000), "5000000000000000");
    }

    #[test]
    fn periods_are_months_or_fixed_lengths() {
        let dec_4 = 1_796_397_600_000; // 2026-12-04T15:20:00Z
        let (key, start, end) = Period::Monthly.holding(dec_4);
        assert_eq!((key.as_str(), start, end), ("2026-12", 1_796_083_200_000, 1_798_761_600_000));
        let ten = "10m".parse::<Period>().unwrap_or(Period::Monthly);
        assert_eq!(ten, Period::Every(600_000));
        assert_eq!(ten.holding(dec_4 + 61_000).0, "20261204t1520");
        assert_eq!(ten.bucket(dec_4 + 61_000), (dec_4, dec_4 + 600_000));
        assert_eq!(Period::Monthly.bucket(dec_4 + 61_000), (dec_4 - 1_200_000, dec_4 + 2_400_000));
        for bad in ["7m", "30s", "soon"] {
            assert!(bad.parse::<Period>().is_err(), "{bad}");
        }
        assert_eq!("2h".parse::<Period>(), Ok(Period::Every(7_200_000)));
    }

    #[test]
    fn a_hand_computed_invoice_both_modes() {
        let prices = Prices::parse(&default_prices(), "spec", &mut ErrorList::default());
        let Some(mut prices) = prices else { panic!("the default prices parse") };
        // Request-based: 2 vCPU, 1 GiB, busy 90 s; 3,000,000 requests.
        // Instance-based: 1 vCPU, 512 MiB, alive 1 hour.
        let mut usage = BTreeMap::new();
        let req =
            Usage { cpu_millicore_millis: 2000 * 90_000, memory_kib_millis: 1_048_576 * 90_000, requests: 3_000_000 };
        let inst =
            Usage { cpu_millicore_millis: 1000 * 3_600_000, memory_kib_millis: 524_288 * 3_600_000, requests: 0 };
        usage.insert(LineKey { namespace: "default", service: "api", mode: MODE_REQUEST }, req);
        usage.insert(LineKey { namespace: "default", service: "batch", mode: MODE_INSTANCE }, inst);
        // No free tier: 180 vCPU-s × 0.000024 = 0.00432; 90 GiB-s × 0.0000025 = 0.000225;
        // 3 M requests × 0.40 = 1.20; 3600 vCPU-s × 0.000018 = 0.0648; 1800 GiB-s × 0.000002
        // = 0.0036. Sum 1.272945 → 1.27.
        prices.request_based.free = Usage::default();
        prices.instance_based.free = Usage::default();
        let p = price(&usage, &prices);
        assert_eq!(p.subtotal.to_decimal(2), "1.272945");
        assert_eq!(p.total.to_decimal(2), "1.27");
        assert_eq!(p.lines.len(), 5);
        assert_eq!(p.lines[0].quantity, "180");
        assert_eq!(p.lines[1].quantity, "90");
        // With the free tier: all of it is free but 1 M requests: 0.40.
        let prices = Prices::parse(&default_prices(), "spec", &mut ErrorList::default());
        let Some(prices) = prices else { panic!("the default prices parse") };
        let p = price(&usage, &prices);
        assert_eq!(p.free_tier.to_decimal(2), "0.872945");
        assert_eq!(p.total.to_decimal(2), "0.40");
    }

    #[test]
    fn reports_are_checked() {
        let now = 1_796_400_000_000;
        let spec = UsageReportSpec {
            source_kind: SOURCE_GATEWAY.into(),
            source: "gw".into(),
            namespace: "default".into(),
            service: "hello".into(),
            revision: "hello-00001".into(),
            instance: "hello-00001-abcde".into(),
            billing_mode: MODE_REQUEST.into(),
            window_start: Some(timestamp(now - 10_000)),
            window_end: Some(timestamp(now)),
            cpu_millis: 1000,
            memory_bytes: 512 << 20,
            periods: vec![UsagePeriod { start: Some(timestamp(now - 9_950)), end: Some(timestamp(now - 9_000)) }],
            requests: 3,
            ..Default::default()
        };
        let name = report_name("gateway", "gw", "default", "hello-00001-abcde", now - 10_000);
        let mut errs = ErrorList::default();
        validate_report(&name, &spec, now, &mut errs);
        assert!(errs.is_empty(), "{errs}");
        assert_eq!(usage_of(&spec).cpu_millicore_millis, 1000 * 1000);
        let mut bad = spec.clone();
        bad.periods[0].end = Some(timestamp(now + 1));
        bad.window_end = Some(timestamp(now + 600_000));
        bad.cpu_millis = 0;
        let mut errs = ErrorList::default();
        validate_report("wrong", &bad, now, &mut errs);
        let text = errs.to_string();
        for want in ["metadata.name", "spec.windowEnd: is in the future", "spec.cpuMillis"] {
            assert!(text.contains(want), "{want} in {text}");
        }
        // An instance-based gateway report bills its requests only.
        let mut inst = spec;
        inst.billing_mode = MODE_INSTANCE.into();
        assert_eq!(usage_of(&inst), Usage { requests: 3, ..Default::default() });
    }
}

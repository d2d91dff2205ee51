//! Metering's shared half: what gateways and node agents use to measure usage and deliver it as
//! UsageReports (see `stratus_api::billing`).
//!
//! - [`Meter`] keeps one instance's billable periods (and, at a gateway, its request count) and
//!   cuts them at report windows' edges; a period still open at a window's end continues in the
//!   next window. Windows are aligned to whole multiples of their length on the clock
//!   ([`window_start`]), so every source's windows line up.
//! - [`Spool`] delivers reports at least once: each is written to its own file in a directory
//!   (atomically, 0600) before it is sent, and its file is removed only when the API stored it
//!   or answers that it already holds it (a report's name is deterministic, so AlreadyExists is
//!   the acknowledgement of an earlier delivery whose answer was lost). A report the API refuses
//!   as invalid can never be stored: it is logged with the reason, counted, and moved to
//!   `rejected/` to be looked at. Anything else (the API away, a 5xx) is retried with backoff.
//!   Files left by a process that crashed are sent by the next one.
//!
//! The spool is bounded ([`Spool::DEFAULT_MAX_FILES`]): when the API is away for so long that
//! the bound is reached, further reports are not written; each one is logged as an error and
//! counted (`stratus_usage_reports_unspooled_total`), so that lost usage is never silent, and the
//! disk of a node cut off from its API for days does not fill up.

use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use stratus_api::Resource;
use stratus_api::billing::{report_name, timestamp};
use stratus_api::v1::{Container, ObjectMeta, UsagePeriod, UsageReport, UsageReportSpec};
use tokio::sync::Notify;
use tracing::{debug, error, info, warn};

use crate::{Client, Error, ErrorChain};

/// `name` made a DNS label, as a report's source must be: lower case, anything but letters,
/// digits and `-` made `-`, at most 63 characters, starting and ending alphanumeric.
pub fn source_label(name: &str) -> String {
    let mapped: String =
        name.to_ascii_lowercase().chars().map(|c| if c.is_ascii_alphanumeric() { c } else { '-' }).take(63).collect();
    let trimmed = mapped.trim_matches('-');
    if trimmed.is_empty() { "unnamed".into() } else { trimmed.to_string() }
}

/// Milliseconds since the Unix epoch, now.
pub fn now_millis() -> i64 {
    let since = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default();
    i64::try_from(since.as_millis()).unwrap_or(i64::MAX)
}

/// The start of the window of `window_ms` that holds `at_ms`: the greatest multiple of
/// `window_ms` not after it.
pub fn window_start(at_ms: i64, window_ms: i64) -> i64 {
    let window_ms = window_ms.max(1);
    at_ms - at_ms.rem_euclid(window_ms)
}

/// How long until the clock reaches `at_ms` (zero when it has).
pub fn until_millis(at_ms: i64) -> Duration {
    Duration::from_millis(u64::try_from(at_ms.saturating_sub(now_millis())).unwrap_or(0))
}

/// One instance's billable periods and requests not yet reported. Times are milliseconds since
/// the Unix epoch.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Meter {
    /// When the period in progress started.
    open: Option<i64>,
    /// Periods that ended, oldest first.
    periods: Vec<(i64, i64)>,
    requests: u64,
}

/// What [`Meter::take`] hands over for one window.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Taken {
    pub periods: Vec<(i64, i64)>,
    pub requests: u64,
}

impl Taken {
    /// Adds `other`'s usage of the same instance and window: the requests summed, the periods
    /// joined where they overlap or touch (time busy for either is busy once).
    pub fn merge(&mut self, other: Taken) {
        self.requests += other.requests;
        self.periods.extend(other.periods);
        self.periods.sort_unstable();
        let mut joined: Vec<(i64, i64)> = Vec::with_capacity(self.periods.len());
        for (s, e) in self.periods.drain(..) {
            match joined.last_mut() {
                Some(last) if s <= last.1 => last.1 = last.1.max(e),
                _ => joined.push((s, e)),
            }
        }
        self.periods = joined;
    }
}

impl Meter {
    /// A period starts at `at` (nothing changes when one is in progress). A period that ended
    /// in the 100 ms tick holding `at`, or later, is resumed instead: the bill counts whole
    /// ticks, so joining them changes nothing, and a busy instance keeps at most one period a
    /// tick instead of one per gap between requests (which would make its report large).
    pub fn start(&mut self, at: i64) {
        if self.open.is_some() {
            return;
        }
        let tick = stratus_api::billing::TICK_MILLIS;
        match self.periods.last() {
            Some(&(s, e)) if e >= at || e.div_euclid(tick) == at.div_euclid(tick) => {
                self.periods.pop();
                self.open = Some(s);
            }
            _ => self.open = Some(at),
        }
    }

    /// The period in progress ends at `at` (nothing changes when none is). A period that
    /// lasted no time is no period.
    pub fn stop(&mut self, at: i64) {
        if let Some(s) = self.open.take()
            && at > s
        {
            self.periods.push((s, at));
        }
    }

    /// Counts one request.
    pub fn count(&mut self) {
        self.requests += 1;
    }

    /// Takes back the last [`Meter::count`] (a request that was never sent).
    pub fn uncount(&mut self) {
        self.requests = self.requests.saturating_sub(1);
    }

    /// Whether a period is in progress.
    pub fn is_open(&self) -> bool {
        self.open.is_some()
    }

    /// Whether there is nothing to report and nothing in progress.
    pub fn is_idle(&self) -> bool {
        self.open.is_none() && self.periods.is_empty() && self.requests == 0
    }

    /// Hands over the window `[start, end)`: the parts of the periods inside it (a period in
    /// progress is cut at `end` and continues from there; what lies after `end` stays for the
    /// next window) and the requests counted since the last take.
    pub fn take(&mut self, start: i64, end: i64) -> Taken {
        let mut taken = Vec::new();
        let mut kept = Vec::new();
        for (s, e) in self.periods.drain(..) {
            if s >= end {
                kept.push((s, e));
                continue;
            }
            if e > start || s >= start {
                taken.push((s.max(start), e.min(end)));
            }
            if e > end {
                kept.push((end, e));
            }
        }
        if let Some(s) = self.open
            && s < end
        {
            taken.push((s.max(start), end));
            self.open = Some(end);
        }
        self.periods = kept;
        Taken { periods: taken, requests: std::mem::take(&mut self.requests) }
    }
}

/// Who and what a report is of.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Subject {
    pub namespace: String,
    pub service: String,
    pub revision: String,
    pub instance: String,
    /// `billing::MODE_REQUEST` or `billing::MODE_INSTANCE`.
    pub billing_mode: &'static str,
    /// The serving container's limits.
    pub cpu_millis: i64,
    pub memory_bytes: i64,
}

/// The serving container's CPU (millicores) and memory (bytes) limits, which usage is billed
/// by. Fails, naming the field, when the container has none or one that does not parse.
pub fn billed_limits(containers: &[Container]) -> Result<(i64, i64), String> {
    let container = stratus_api::serving_container(containers).ok_or("the spec has no container")?;
    let limits = stratus_api::capacity::limits(container.resources.as_ref())
        .map_err(|e| format!("container {:?}: {e}", container.name))?;
    let cpu = i64::try_from(limits.cpu_millis).unwrap_or(i64::MAX);
    let memory = i64::try_from(limits.memory_bytes).unwrap_or(i64::MAX);
    if cpu <= 0 || memory <= 0 {
        return Err(format!("container {:?}: resources.limits needs cpu and memory to bill by", container.name));
    }
    Ok((cpu, memory))
}

/// The UsageReport of `subject` from `source_kind`/`source` for the window `[start, end)`,
/// named by `billing::report_name`.
pub fn report(
    source_kind: &str,
    source: &str,
    subject: &Subject,
    (start, end): (i64, i64),
    taken: &Taken,
) -> UsageReport {
    let spec = UsageReportSpec {
        source_kind: source_kind.to_string(),
        source: source.to_string(),
        namespace: subject.namespace.clone(),
        service: subject.service.clone(),
        revision: subject.revision.clone(),
        instance: subject.instance.clone(),
        billing_mode: subject.billing_mode.to_string(),
        window_start: Some(timestamp(start)),
        window_end: Some(timestamp(end)),
        cpu_millis: subject.cpu_millis,
        memory_bytes: subject.memory_bytes,
        periods: taken
            .periods
            .iter()
            .map(|&(s, e)| UsagePeriod { start: Some(timestamp(s)), end: Some(timestamp(e)) })
            .collect(),
        requests: i64::try_from(taken.requests).unwrap_or(i64::MAX),
        ..Default::default()
    };
    let name = report_name(source_kind, source, &subject.namespace, &subject.instance, start);
    UsageReport { metadata: Some(ObjectMeta { name, ..Default::default() }), spec: Some(spec), ..Default::default() }
}

/// The spool's counters, registered wherever the process keeps its metrics.
#[derive(Clone, Debug, Default)]
pub struct SpoolMetrics {
    /// Reports the API stored (or already held).
    pub sent: Counter,
    /// Reports the API refused as invalid (moved to `rejected/`).
    pub refused: Counter,
    /// Reports not written because the spool was full.
    pub unspooled: Counter,
    /// Rounds of sending that stopped at a failure that may pass (the API away, a 5xx).
    pub failures: Counter,
    /// Reports waiting to be sent.
    pub pending: Gauge,
}

impl SpoolMetrics {
    /// Registers the series as `stratus_usage_reports_*` (the registry's prefix, if any, comes
    /// first).
    pub fn register(&self, registry: &mut Registry) {
        let sub = registry.sub_registry_with_prefix("usage_reports");
        sub.register("sent", "Usage reports the API stored or already held", self.sent.clone());
        sub.register("refused", "Usage reports the API refused as invalid (kept in rejected/)", self.refused.clone());
        sub.register("unspooled", "Usage reports lost because the spool was full", self.unspooled.clone());
        sub.register(
            "send_failures",
            "Rounds of sending usage reports that failed and are retried",
            self.failures.clone(),
        );
        sub.register("pending", "Usage reports on disk waiting to be sent", self.pending.clone());
    }
}

/// Why a report was not spooled.
#[derive(Debug, thiserror::Error)]
pub enum SpoolError {
    #[error("the usage spool {dir} is full ({max} reports wait): the API has not taken reports for a long time")]
    Full { dir: String, max: usize },
    #[error("writing usage report {file}: {source}")]
    Write {
        file: String,
        #[source]
        source: std::io::Error,
    },
    #[error("encoding usage report {name}: {source}")]
    Encode {
        name: String,
        #[source]
        source: serde_json::Error,
    },
}

/// Reports on disk on their way to the API. See the module documentation.
#[derive(Debug)]
pub struct Spool {
    dir: PathBuf,
    max_files: usize,
    metrics: SpoolMetrics,
    /// Reports on disk (not counting `rejected/`).
    files: AtomicUsize,
    written: Notify,
}

/// The suffix of a spooled report's file.
const SUFFIX: &str = ".json";
/// Where refused reports go, under the spool's directory.
pub const REJECTED: &str = "rejected";

impl Spool {
    /// Reports the spool holds at most by default: a day of 10-second windows of about 30
    /// instances, and a few kilobytes each.
    pub const DEFAULT_MAX_FILES: usize = 250_000;

    /// Opens (making it, 0700, if missing) the spool in `dir`, counting the reports a previous
    /// process left there.
    pub fn open(dir: impl Into<PathBuf>, max_files: usize, metrics: SpoolMetrics) -> std::io::Result<Arc<Spool>> {
        let dir = dir.into();
        let mut builder = std::fs::DirBuilder::new();
        builder.recursive(true).mode(0o700);
        builder
            .create(dir.join(REJECTED))
            .map_err(|e| std::io::Error::new(e.kind(), format!("making the usage spool {}: {e}", dir.display())))?;
        let spool =
            Spool { dir, max_files: max_files.max(1), metrics, files: AtomicUsize::new(0), written: Notify::new() };
        let left = spool.pending()?.len();
        spool.files.store(left, Ordering::Relaxed);
        spool.metrics.pending.set(i64::try_from(left).unwrap_or(i64::MAX));
        if left > 0 {
            info!(dir = %spool.dir.display(), reports = left, "usage reports left from before will be sent");
        }
        Ok(Arc::new(spool))
    }

    /// Its counters, to register with the process's metrics.
    pub fn metrics(&self) -> &SpoolMetrics {
        &self.metrics
    }

    /// The spool's directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The files of the reports waiting, oldest name first.
    pub fn pending(&self) -> std::io::Result<Vec<PathBuf>> {
        let read = std::fs::read_dir(&self.dir).map_err(|e| {
            std::io::Error::new(e.kind(), format!("reading the usage spool {}: {e}", self.dir.display()))
        })?;
        let mut files = Vec::new();
        for entry in read {
            let path = entry?.path();
            let name = path.file_name().and_then(|n| n.to_str()).unwrap_or_default();
            if name.ends_with(SUFFIX) && !name.starts_with('.') {
                files.push(path);
            }
        }
        files.sort();
        Ok(files)
    }

    /// Writes `report` to its own file (a temporary file renamed into place, 0600), to be sent
    /// by [`Spool::run`]. A report of the same name already waiting is replaced. Refused, and
    /// logged, when the spool is full.
    pub fn write(&self, report: &UsageReport) -> Result<(), SpoolError> {
        let name = report.meta().name.clone();
        let path = self.dir.join(format!("{name}{SUFFIX}"));
        let existed = path.exists();
        if !existed && self.files.load(Ordering::Relaxed) >= self.max_files {
            self.metrics.unspooled.inc();
            let err = SpoolError::Full { dir: self.dir.display().to_string(), max: self.max_files };
            error!(report = %name, error = %err, "a usage report is lost");
            return Err(err);
        }
        let json = serde_json::to_vec(report).map_err(|source| SpoolError::Encode { name: name.clone(), source })?;
        let temp = self.dir.join(format!(".{name}{SUFFIX}.tmp"));
        let written = (|| {
            let mut file =
                std::fs::OpenOptions::new().write(true).create(true).truncate(true).mode(0o600).open(&temp)?;
            file.write_all(&json)?;
            file.sync_all()?;
            std::fs::rename(&temp, &path)?;
            // The rename is durable only once the directory is: a power loss must not take back
            // a report the caller goes on to record as spooled.
            std::fs::File::open(&self.dir)?.sync_all()
        })();
        if let Err(source) = written {
            let _ = std::fs::remove_file(&temp);
            return Err(SpoolError::Write { file: path.display().to_string(), source });
        }
        if !existed {
            let n = self.files.fetch_add(1, Ordering::Relaxed) + 1;
            self.metrics.pending.set(i64::try_from(n).unwrap_or(i64::MAX));
        }
        self.written.notify_one();
        Ok(())
    }

    /// Sends the spooled reports through `client` until `shutdown` completes: those on disk at
    /// once, then each as it is written; after a failure that may pass, again after a backoff
    /// (doubling from 500 ms to 30 s).
    pub async fn run(self: Arc<Self>, client: Client, shutdown: impl Future<Output = ()>) {
        tokio::pin!(shutdown);
        let mut backoff = Backoff::new();
        loop {
            let wait = match self.send_pending(&client).await {
                Ok(()) => {
                    backoff.reset();
                    None
                }
                Err(()) => Some(backoff.next()),
            };
            let notified = self.written.notified();
            tokio::select! {
                () = &mut shutdown => return,
                () = notified, if wait.is_none() => {}
                () = tokio::time::sleep(wait.unwrap_or_default()), if wait.is_some() => {}
            }
        }
    }

    /// Sends every report on disk once. `Err` when one failed in a way that may pass: when the
    /// API cannot be reached (or refuses the sender, or asks it to slow down) the rest wait for
    /// the next round; a report the API answered otherwise (forbidden, say) is kept for the next
    /// round and does not hold back the ones after it.
    async fn send_pending(&self, client: &Client) -> Result<(), ()> {
        let mut failed = false;
        let files = match self.pending() {
            Ok(files) => files,
            Err(e) => {
                self.metrics.failures.inc();
                error!(error = %e, "cannot read the usage spool");
                return Err(());
            }
        };
        for file in files {
            let report = match std::fs::read(&file).map_err(|e| e.to_string()).and_then(|bytes| {
                serde_json::from_slice::<UsageReport>(&bytes).map_err(|e| format!("it does not decode: {e}"))
            }) {
                Ok(report) => report,
                Err(reason) => {
                    self.reject(&file, &reason);
                    continue;
                }
            };
            let name = report.meta().name.clone();
            match client.create(report).await {
                Ok(_) => self.done(&file, &name, "stored"),
                Err(Error::AlreadyExists(_)) => self.done(&file, &name, "already stored"),
                Err(Error::Invalid(reason)) => self.reject(&file, &reason),
                Err(e) => {
                    self.metrics.failures.inc();
                    warn!(report = %name, error = %ErrorChain(&e), "sending a usage report failed; retrying");
                    // `TooLarge` is also how a rate limit answers (429): the next would fare alike.
                    let whole_api = matches!(
                        e,
                        Error::Unavailable { .. }
                            | Error::ServiceUnavailable(_)
                            | Error::Unauthenticated(_)
                            | Error::Tls(_)
                            | Error::BadEndpoint(_)
                            | Error::TooLarge(_)
                    );
                    if whole_api {
                        return Err(());
                    }
                    failed = true;
                }
            }
        }
        if failed { Err(()) } else { Ok(()) }
    }

    fn done(&self, file: &Path, name: &str, how: &str) {
        debug!(report = name, how, "usage report delivered");
        self.metrics.sent.inc();
        match std::fs::remove_file(file) {
            Ok(()) => self.forget_one(),
            Err(e) => error!(file = %file.display(), error = %e, "removing a delivered usage report failed"),
        }
    }

    fn reject(&self, file: &Path, reason: &str) {
        self.metrics.refused.inc();
        let to = self.dir.join(REJECTED).join(file.file_name().unwrap_or_default());
        error!(file = %file.display(), moved_to = %to.display(), reason, "a usage report was refused; it is kept aside, not sent again");
        match std::fs::rename(file, &to) {
            Ok(()) => self.forget_one(),
            Err(e) => error!(file = %file.display(), error = %e, "moving a refused usage report aside failed"),
        }
    }

    fn forget_one(&self) {
        let n = self.files.fetch_sub(1, Ordering::Relaxed).saturating_sub(1);
        self.metrics.pending.set(i64::try_from(n).unwrap_or(i64::MAX));
    }
}

/// Doubling delays between rounds that failed.
struct Backoff {
    delay: Duration,
}

impl Backoff {
    const FIRST: Duration = Duration::from_millis(500);
    const MAX: Duration = Duration::from_secs(30);

    fn new() -> Backoff {
        Backoff { delay: Backoff::FIRST }
    }

    fn next(&mut self) -> Duration {
        let delay = self.delay;
        self.delay = (self.delay * 2).min(Backoff::MAX);
        delay
    }

    fn reset(&mut self) {
        self.delay = Backoff::FIRST;
    }
}

#[cfg(test)]
mod tests;

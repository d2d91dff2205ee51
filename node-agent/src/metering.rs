//! Metering for billing on the node: what of an instance's life is billed that a gateway cannot
//! see. Per instance the agent keeps a [`Meter`] of
//!
//! - **instance-based** revisions (`cpuThrottling: false`): the container's whole life, from the
//!   moment the agent started it, or found it, running (the engine's `StartedAt`) until its exit
//!   was observed or its removal confirmed;
//! - **request-based** revisions (the default): the start-up, from the container's creation until
//!   the instance is Ready (or its container ends first), and the shut-down, from the stop
//!   signal until the container has exited, as Cloud Run bills them. The time requests are in
//!   flight is the gateways' to report.
//!
//! At the end of every window (aligned to whole multiples of its length on the clock, 60 s by
//! default) the agent writes one UsageReport per instance that had time in it (source
//! `agent`/the node's name) to the usage spool ([`stratus_client::usage::Spool`]), which
//! delivers it at least once; a period still open is cut at the window's end and continues.
//! An instance removed mid-window is reported at the next window's end, then forgotten.
//!
//! **Across restarts of the agent.** Containers outlive the agent, and the next agent adopts
//! them. After the reports of a window are spooled, its end is recorded in the spool's
//! directory ([`REPORTED_UNTIL`]). A new agent reports from that moment on (its first window
//! starts there) and meters an adopted container from max(its `StartedAt`, that moment): the
//! windows during which no agent ran are reported when it starts, and no window is reported
//! twice. Without the record (a new node, or the file lost) it meters adopted containers from
//! their `StartedAt`, at most an hour back: windows reported before by the same node are then
//! named the same (see `billing::report_name`) and answered AlreadyExists, so not counted
//! twice. Limits of this design:
//! - A record older than a day (or than 1,440 windows) is not caught up further back than that,
//!   so that a node that was down for long does not write a report per window of its whole
//!   absence; such a gap goes unbilled.
//! - Usage held in memory for the window in progress when the agent stops is lost for a
//!   container that ended in it (a crash, a liveness restart, a request-based start-up or
//!   shut-down) of an instance that still exists: the next agent reports that window anew from
//!   the running container. An instance removed in it is reported when the agent stops, with
//!   the window cut at that moment. A hard kill of the agent loses the window in progress of
//!   instances that ended in it.
//! - A container whose Instance was deleted while no agent ran is removed by garbage collection
//!   without being metered: nothing says how it was to be billed any more.
//! - Changing `--usage-window-seconds` across a restart is safe with the record (the first
//!   window then starts at the recorded moment); without it, windows of the two lengths are
//!   named differently and may overlap.
//!
//! An instance whose serving container has no CPU and memory limits is not metered (nothing to
//! bill by); that is logged once.

use std::collections::HashMap;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use stratus_api::Resource;
use stratus_api::billing::{MODE_INSTANCE, MODE_REQUEST};
use stratus_api::v1::Instance;
use stratus_client::usage::{Meter, Spool, Subject, Taken, billed_limits, now_millis, window_start};
use tracing::{error, warn};

use crate::runtime::ContainerStatus;

/// How the agent meters: reports of windows of `window` (aligned on the clock) through `spool`.
#[derive(Clone, Debug)]
pub struct Metering {
    pub spool: Arc<Spool>,
    /// Default [`Metering::DEFAULT_WINDOW`]; at most an hour.
    pub window: Duration,
}

impl Metering {
    pub const DEFAULT_WINDOW: Duration = Duration::from_secs(60);

    /// The window's length in milliseconds, between 1 ms and an hour.
    pub fn window_millis(&self) -> i64 {
        i64::try_from(self.window.as_millis()).unwrap_or(i64::MAX).clamp(1, stratus_api::billing::MAX_WINDOW_MILLIS)
    }
}

/// The file, in the spool's directory, holding the end of the last window whose reports were
/// all spooled (milliseconds since the Unix epoch, as text).
pub const REPORTED_UNTIL: &str = "reported-until";

/// How far back a recorded end is caught up at most: a day, and at most this many windows.
const MAX_CATCH_UP_MILLIS: i64 = 24 * 3_600_000;
const MAX_CATCH_UP_WINDOWS: i64 = 1_440;
/// How far back adopted containers are metered when nothing was recorded.
const UNRECORDED_LOOK_BACK_MILLIS: i64 = 3_600_000;

/// The end of the last window reported from `dir`, if recorded. A record that does not parse is
/// logged and treated as none.
pub fn reported_until(dir: &Path) -> Option<i64> {
    let path = dir.join(REPORTED_UNTIL);
    match std::fs::read_to_string(&path) {
        Ok(text) => match text.trim().parse::<i64>() {
            Ok(at) => Some(at),
            Err(e) => {
                warn!(file = %path.display(), error = %e, "the record of reported usage does not parse; ignoring it");
                None
            }
        },
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => {
            warn!(file = %path.display(), error = %e, "cannot read the record of reported usage; ignoring it");
            None
        }
    }
}

/// Records `at` as the end of the last window reported from `dir` (a temporary file renamed
/// into place).
pub fn record_reported_until(dir: &Path, at: i64) -> std::io::Result<()> {
    let path = dir.join(REPORTED_UNTIL);
    let temp = dir.join(format!(".{REPORTED_UNTIL}.tmp"));
    let written = (|| {
        let mut file = std::fs::OpenOptions::new().write(true).create(true).truncate(true).mode(0o600).open(&temp)?;
        file.write_all(at.to_string().as_bytes())?;
        file.sync_all()?;
        std::fs::rename(&temp, &path)
    })();
    written.map_err(|e| std::io::Error::new(e.kind(), format!("recording reported usage in {}: {e}", path.display())))
}

/// Where the agent's first window starts, `now` being the time it starts: the recorded end of
/// the last window reported (at most a day or 1,440 windows back), else an hour (or 1,440
/// windows) back from the current window. See the module documentation.
pub fn first_window_start(recorded: Option<i64>, window_ms: i64, now: i64) -> i64 {
    let current = window_start(now, window_ms);
    let windows = |n: i64| window_ms.saturating_mul(n);
    match recorded {
        Some(at) => at.max(current - MAX_CATCH_UP_MILLIS.min(windows(MAX_CATCH_UP_WINDOWS))),
        None => window_start(current - UNRECORDED_LOOK_BACK_MILLIS.min(windows(MAX_CATCH_UP_WINDOWS)), window_ms),
    }
}

/// Milliseconds since the Unix epoch of `t`.
pub fn millis_of(t: SystemTime) -> i64 {
    match t.duration_since(UNIX_EPOCH) {
        Ok(d) => i64::try_from(d.as_millis()).unwrap_or(i64::MAX),
        Err(_) => 0,
    }
}

/// One instance's meter.
#[derive(Debug)]
struct Entry {
    /// What its reports say of it; the reason it cannot be billed otherwise.
    subject: Result<Subject, String>,
    instance_based: bool,
    /// The container being metered ("" before the first).
    container: String,
    meter: Meter,
    /// The Instance is gone: reported once more, then forgotten.
    removed: bool,
}

/// Every instance's meter on this node. All methods do nothing when metering is off. Times are
/// milliseconds since the Unix epoch.
#[derive(Debug, Default)]
pub struct Meters {
    enabled: bool,
    /// No usage before this is metered: the start of the agent's first window.
    floor: i64,
    entries: Mutex<HashMap<String, Entry>>,
}

impl Meters {
    /// Meters that meter nothing.
    pub fn off() -> Meters {
        Meters::default()
    }

    /// Meters whose first window starts at `floor` (see [`first_window_start`]).
    pub fn new(floor: i64) -> Meters {
        Meters { enabled: true, floor, entries: Mutex::default() }
    }

    /// The start of the first window reported.
    pub fn floor(&self) -> i64 {
        self.floor
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<String, Entry>> {
        // A meter is never left half-updated by a panic; keep going.
        self.entries.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Runs `f` on the meter of `inst`, made on first use.
    fn with(&self, inst: &Instance, f: impl FnOnce(&mut Entry)) {
        if !self.enabled {
            return;
        }
        let mut entries = self.lock();
        let uid = inst.meta().uid.clone();
        let entry = entries.entry(uid).or_insert_with(|| {
            let subject = subject_of(inst);
            if let Err(reason) = &subject {
                warn!(namespace = %inst.meta().namespace, instance = %inst.meta().name, %reason, "the instance is not metered for billing");
            }
            let instance_based = inst.spec.as_ref().and_then(|s| s.cpu_throttling) == Some(false);
            Entry { subject, instance_based, container: String::new(), meter: Meter::default(), removed: false }
        });
        f(entry);
    }

    /// Runs `f` on the meter of `inst` if it has one.
    fn with_existing(&self, inst: &Instance, f: impl FnOnce(&mut Entry)) {
        if let Some(e) = self.lock().get_mut(&inst.meta().uid) {
            f(e);
        }
    }

    /// The agent created container `id` of `inst` at `created` and the engine says it started
    /// running at `started`.
    pub fn started(&self, inst: &Instance, id: &str, created: i64, started: i64) {
        self.with(inst, |e| {
            e.container = id.to_string();
            e.meter.start(if e.instance_based { started } else { created });
        });
    }

    /// Container `c` of `inst` runs; `was_ready` is what the Instance's status said before. The
    /// first time the agent sees a container it did not start (one adopted after a restart of
    /// the agent), its life (instance-based), or its start-up when it was not Ready yet
    /// (request-based), is metered from its `StartedAt`, but not before the first window.
    pub fn adopt(&self, inst: &Instance, c: &ContainerStatus, was_ready: bool) {
        let floor = self.floor;
        self.with(inst, |e| {
            if e.container == c.id {
                return;
            }
            e.container = c.id.clone();
            let from = c.started_at.map_or_else(now_millis, millis_of).max(floor);
            if e.instance_based || !was_ready {
                e.meter.start(from);
            }
        });
    }

    /// `inst` became Ready at `at`: a request-based start-up ends.
    pub fn ready(&self, inst: &Instance, at: i64) {
        self.with_existing(inst, |e| {
            if !e.instance_based {
                e.meter.stop(at);
            }
        });
    }

    /// The agent signals container `id` of `inst` to stop at `at`: a request-based shut-down
    /// starts.
    pub fn stopping(&self, inst: &Instance, id: &str, at: i64) {
        self.with_existing(inst, |e| {
            if !e.instance_based && e.container == id {
                e.meter.start(at);
            }
        });
    }

    /// Container `id` of `inst` was seen exited, or removed, at `at`: whatever was metered of it
    /// ends.
    pub fn ended(&self, inst: &Instance, id: &str, at: i64) {
        self.with_existing(inst, |e| {
            if e.container == id {
                e.meter.stop(at);
            }
        });
    }

    /// The Instance `uid` is gone: its meter is reported once more, then forgotten.
    pub fn removed(&self, uid: &str) {
        if let Some(e) = self.lock().get_mut(uid) {
            e.removed = true;
        }
    }

    /// Hands over the window `[start, end)` of every instance with time in it (see
    /// [`Meter::take`]) and forgets removed instances with nothing left.
    pub fn take(&self, start: i64, end: i64) -> Vec<(Subject, Taken)> {
        self.take_where(start, end, |_| true)
    }

    /// [`Meters::take`] of removed instances only: what the agent reports as it stops.
    pub fn take_removed(&self, start: i64, end: i64) -> Vec<(Subject, Taken)> {
        self.take_where(start, end, |e| e.removed)
    }

    fn take_where(&self, start: i64, end: i64, which: impl Fn(&Entry) -> bool) -> Vec<(Subject, Taken)> {
        let mut out = Vec::new();
        let mut entries = self.lock();
        for e in entries.values_mut().filter(|e| which(e)) {
            let taken = e.meter.take(start, end);
            if taken.periods.is_empty() {
                continue;
            }
            if let Ok(subject) = &e.subject {
                out.push((subject.clone(), taken));
            }
        }
        entries.retain(|_, e| !(e.removed && e.meter.is_idle()));
        out
    }
}

/// What the reports of `inst` say of it: its service, revision, billing mode and the serving
/// container's limits.
fn subject_of(inst: &Instance) -> Result<Subject, String> {
    let spec = inst.spec.as_ref().ok_or("the instance has no spec")?;
    let (cpu_millis, memory_bytes) = billed_limits(&spec.containers)?;
    let instance_based = spec.cpu_throttling == Some(false);
    Ok(Subject {
        namespace: inst.meta().namespace.clone(),
        service: spec.service_name.clone(),
        revision: spec.revision_name.clone(),
        instance: inst.meta().name.clone(),
        billing_mode: if instance_based { MODE_INSTANCE } else { MODE_REQUEST },
        cpu_millis,
        memory_bytes,
    })
}

/// Spools the reports of `taken`, of the window `[start, end)`, from `source` (the node's name
/// as a DNS label). A report that cannot be spooled is logged (and, when the spool is full,
/// counted by it).
pub fn spool_reports(spool: &Spool, source: &str, (start, end): (i64, i64), taken: Vec<(Subject, Taken)>) {
    for (subject, taken) in taken {
        let report =
            stratus_client::usage::report(stratus_api::billing::SOURCE_AGENT, source, &subject, (start, end), &taken);
        if let Err(e) = spool.write(&report) {
            error!(instance = %subject.instance, namespace = %subject.namespace, error = %e, "a usage report could not be spooled");
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn the_first_window_starts_at_the_record_or_an_hour_back() {
        let now = 1_800_000_000_000 + 12_345;
        let current = window_start(now, 60_000);
        assert_eq!(first_window_start(Some(current - 120_000), 60_000, now), current - 120_000);
        // A record from long ago is caught up a day at most.
        assert_eq!(first_window_start(Some(0), 60_000, now), current - 24 * 3_600_000);
        // …and at most 1,440 windows.
        assert_eq!(first_window_start(Some(0), 1_000, now), window_start(now, 1_000) - 1_440_000);
        assert_eq!(first_window_start(None, 60_000, now), current - 3_600_000);
    }

    #[test]
    fn the_record_survives_a_round_trip_and_a_bad_one_is_none() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(reported_until(dir.path()), None);
        record_reported_until(dir.path(), 1_800_000_060_000).unwrap();
        assert_eq!(reported_until(dir.path()), Some(1_800_000_060_000));
        std::fs::write(dir.path().join(REPORTED_UNTIL), "soon").unwrap();
        assert_eq!(reported_until(dir.path()), None);
    }

    fn instance(uid: &str, cpu_throttling: Option<bool>) -> Instance {
        let mut inst = Instance::default();
        inst.meta_mut().uid = uid.into();
        inst.meta_mut().name = format!("hello-00001-{uid}");
        inst.meta_mut().namespace = "default".into();
        let limits = [("cpu".to_string(), "500m".to_string()), ("memory".to_string(), "64Mi".to_string())];
        inst.spec = Some(stratus_api::v1::InstanceSpec {
            service_name: "hello".into(),
            revision_name: "hello-00001".into(),
            containers: vec![stratus_api::v1::Container {
                ports: vec![Default::default()],
                resources: Some(stratus_api::v1::ResourceRequirements { limits: limits.into(), ..Default::default() }),
                ..Default::default()
            }],
            cpu_throttling,
            ..Default::default()
        });
        inst
    }

    #[test]
    fn instance_based_meters_the_life_and_request_based_the_start_up_and_shut_down() {
        let meters = Meters::new(0);
        let life = instance("a", Some(false));
        let request = instance("b", None);
        meters.started(&life, "c1", 1_000, 1_200);
        meters.started(&request, "c2", 1_000, 1_200);
        meters.ready(&life, 1_500);
        meters.ready(&request, 1_500);
        meters.stopping(&life, "c1", 5_000);
        meters.stopping(&request, "c2", 5_000);
        meters.ended(&life, "c1", 5_400);
        meters.ended(&request, "c2", 5_400);
        meters.removed("a");
        meters.removed("b");
        let mut taken = meters.take(0, 10_000);
        taken.sort_by(|x, y| x.0.instance.cmp(&y.0.instance));
        assert_eq!(taken[0].0.billing_mode, MODE_INSTANCE);
        assert_eq!(taken[0].1.periods, vec![(1_200, 5_400)]);
        assert_eq!(taken[1].0.billing_mode, MODE_REQUEST);
        assert_eq!(taken[1].1.periods, vec![(1_000, 1_500), (5_000, 5_400)]);
        assert_eq!((taken[0].0.cpu_millis, taken[0].0.memory_bytes), (500, 64 << 20));
        // Removed and reported: forgotten.
        assert!(meters.take(10_000, 20_000).is_empty());
        assert!(meters.lock().is_empty());
    }

    #[test]
    fn an_adopted_container_is_metered_from_its_start_but_not_before_the_floor() {
        let meters = Meters::new(60_000);
        let life = instance("a", Some(false));
        let started = |ms: u64| ContainerStatus {
            id: "c1".into(),
            running: true,
            started_at: Some(UNIX_EPOCH + Duration::from_millis(ms)),
            ..Default::default()
        };
        meters.adopt(&life, &started(10_000), true);
        // Seen again: nothing changes.
        meters.adopt(&life, &started(70_000), true);
        assert_eq!(meters.take(60_000, 120_000)[0].1.periods, vec![(60_000, 120_000)]);
        // A request-based one that was Ready is not starting up; one that was not is.
        let ready = instance("b", Some(true));
        meters.adopt(&ready, &ContainerStatus { id: "c2".into(), ..started(100_000) }, true);
        let starting = instance("c", Some(true));
        meters.adopt(&starting, &ContainerStatus { id: "c3".into(), ..started(100_000) }, false);
        meters.ready(&starting, 130_000);
        let taken = meters.take(120_000, 180_000);
        let instances: Vec<_> = taken.iter().map(|(s, t)| (s.instance.as_str(), t.periods.clone())).collect();
        assert!(instances.contains(&("hello-00001-c", vec![(120_000, 130_000)])), "{instances:?}");
        assert!(!instances.iter().any(|(i, _)| *i == "hello-00001-b"), "{instances:?}");
    }

    #[test]
    fn off_meters_nothing_and_unbillable_instances_are_not_reported() {
        let meters = Meters::off();
        meters.started(&instance("a", Some(false)), "c1", 0, 0);
        assert!(meters.take(0, 10_000).is_empty());
        let meters = Meters::new(0);
        let mut no_limits = instance("b", Some(false));
        no_limits.spec.as_mut().unwrap().containers[0].resources = None;
        meters.started(&no_limits, "c1", 0, 0);
        assert!(meters.take(0, 10_000).is_empty());
    }
}

//! The scaler: one revision's autoscaling state, fed samples and asked, each evaluation, how
//! many instances the revision should have and why (the rules are in the
//! [module documentation](super)).

use std::fmt;
use std::time::Duration;

use tokio::time::Instant;

use super::policy::{Policy, ScalerConfig};
use super::window::{Sample, Samples};

/// What the world looks like to the scaler at an evaluation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Observed {
    /// Instances of the revision that are ready.
    pub ready: i32,
    /// Whether the revision has ever been ready.
    pub ever_ready: bool,
    /// Whether the revision receives traffic or is its service's latest revision.
    pub routable: bool,
}

/// Which rule decided; the start of every reason names it (see [`Kind::of_reason`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Stable,
    Panic,
    /// Idle, but within the grace: kept at one instance.
    Grace,
    ScaledToZero,
    InitialScale,
    MinInstances,
    MaxInstances,
}

impl Kind {
    const ALL: [Kind; 7] = [
        Kind::Stable,
        Kind::Panic,
        Kind::Grace,
        Kind::ScaledToZero,
        Kind::InitialScale,
        Kind::MinInstances,
        Kind::MaxInstances,
    ];

    /// How a reason of this kind starts.
    pub fn prefix(self) -> &'static str {
        match self {
            Kind::Stable => "stable:",
            Kind::Panic => "panic mode:",
            Kind::Grace => "kept at 1:",
            Kind::ScaledToZero => "scaled to zero",
            Kind::InitialScale => "initial scale",
            Kind::MinInstances => "minInstances",
            Kind::MaxInstances => "maxInstances",
        }
    }

    /// The kind of a reason this module wrote; `None` for any other text.
    pub fn of_reason(reason: &str) -> Option<Kind> {
        Kind::ALL.into_iter().find(|k| reason.starts_with(k.prefix()))
    }
}

/// The scaler's answer.
#[derive(Debug, Clone, PartialEq)]
pub struct Decision {
    /// The instances the revision should have (≥ 0).
    pub desired: i32,
    /// Which rule decided.
    pub kind: Kind,
    /// Why, for people: it starts with `kind`'s prefix and shows the numbers.
    pub reason: String,
    /// Whether the scaler is in panic mode.
    pub panicking: bool,
}

/// The autoscaler state of one revision.
#[derive(Debug)]
pub struct Scaler {
    config: ScalerConfig,
    samples: Samples,
    /// The last request or poke; `None` when idle since before the scaler existed.
    last_active: Option<Instant>,
    /// The last time the panic threshold was crossed, while panicking.
    panic_since: Option<Instant>,
    /// The most instances wanted during this panic.
    panic_peak: i32,
    last_evaluated: Option<Instant>,
}

impl Scaler {
    /// A scaler that starts at `now`. `idle` says the revision was already idle (scaled to zero)
    /// before: it then stays at zero until a request. Otherwise the revision counts as active
    /// at `now`, so that a restarted autoscaler waits a full grace before scaling it to zero.
    pub fn new(config: ScalerConfig, now: Instant, idle: bool) -> Scaler {
        Scaler {
            config,
            samples: Samples::default(),
            last_active: if idle { None } else { Some(now) },
            panic_since: None,
            panic_peak: 0,
            last_evaluated: None,
        }
    }

    /// Records the demand at `at` (the sum across gateways), covering the time since the
    /// previous sample, at most [`ScalerConfig::max_sample_span`] (the first sample covers
    /// [`FIRST_SAMPLE_SPAN`](super::FIRST_SAMPLE_SPAN), a gateway's report period). `active`
    /// says a request was seen (in flight, arrived or waiting). Samples older than the last are
    /// ignored.
    pub fn record(&mut self, at: Instant, sample: Sample, active: bool) {
        if active {
            self.mark_active(at);
        }
        self.samples.record(at, sample, self.config.max_sample_span);
    }

    /// A request was seen at `at` (a poke, say): the revision is wanted.
    pub fn mark_active(&mut self, at: Instant) {
        if self.last_active.is_none_or(|t| t < at) {
            self.last_active = Some(at);
        }
    }

    /// When the scaler last evaluated.
    pub fn last_evaluated(&self) -> Option<Instant> {
        self.last_evaluated
    }

    /// The last request or poke it knows of.
    pub fn last_active(&self) -> Option<Instant> {
        self.last_active
    }

    /// How many instances the revision should have at `now`, with `policy`, as seen in
    /// `observed`. Call it once per evaluation period: the rate limits and the panic state
    /// advance with each call.
    pub fn evaluate(&mut self, now: Instant, policy: &Policy, observed: Observed) -> Decision {
        self.last_evaluated = Some(now);
        let window = policy.stable_window.max(Duration::from_millis(1));
        let panic_window = window
            .mul_f64((self.config.panic_window_percentage / 100.0).clamp(0.001, 1.0))
            .max(Duration::from_millis(1));
        // Samples the stable window no longer needs go (the panic window is shorter).
        if let Some(cutoff) = now.checked_sub(window) {
            self.samples.forget_until(cutoff);
        }

        let per_instance = (policy.target * policy.utilization).max(f64::MIN_POSITIVE);
        let stable = self.samples.average(now, window, policy.metric);
        let panic = self.samples.average(now, panic_window, policy.metric);
        let ready = observed.ready.max(0);
        let stable_want = ceil_count(stable / per_instance);
        let panic_want = ceil_count(panic / per_instance);
        let up_limit = ceil_count(f64::from(ready.max(1)) * self.config.max_scale_up_rate.max(1.0));
        let down_limit = floor_count(f64::from(ready) / self.config.max_scale_down_rate.max(1.0));
        let rate_limit = |n: i32| n.min(up_limit).max(down_limit);

        let over_threshold =
            panic / per_instance / f64::from(ready.max(1)) >= self.config.panic_threshold / 100.0 && panic > 0.0;
        if over_threshold {
            if self.panic_since.is_none() {
                self.panic_peak = ready;
            }
            self.panic_since = Some(now);
        } else if self.panic_since.is_some_and(|t| now.saturating_duration_since(t) >= window) {
            self.panic_since = None;
            self.panic_peak = 0;
        }
        let panicking = self.panic_since.is_some();
        let unit = policy.metric.unit();
        let fmt_target = Number(policy.target);
        let percent = Number(policy.utilization * 100.0);

        let (mut desired, mut kind, mut reason) = if panicking {
            self.panic_peak = self.panic_peak.max(rate_limit(panic_want));
            let reason = format!("panic mode: {} {unit} over {}, {ready} ready", Number(panic), Secs(panic_window));
            (self.panic_peak, Kind::Panic, reason)
        } else {
            let limited = rate_limit(stable_want);
            let mut reason = format!("stable: {} {unit} / ({fmt_target} × {percent}%) = {stable_want}", Number(stable));
            if limited > stable_want {
                reason.push_str(&format!(" (scale-down rate limit: {limited})"));
            } else if limited < stable_want {
                reason.push_str(&format!(" (scale-up rate limit: {limited})"));
            }
            (limited, Kind::Stable, reason)
        };

        let min = if observed.routable { policy.min } else { 0 };
        let grace = self.config.scale_to_zero_grace;
        let idle_for = self.last_active.map(|t| now.saturating_duration_since(t));
        let idle = idle_for.is_none_or(|d| d >= grace);
        if !panicking && min == 0 {
            if idle {
                desired = 0;
                kind = Kind::ScaledToZero;
                reason = format!("scaled to zero after {} without requests", Secs(grace));
                if !observed.routable {
                    reason.push_str(" (receives no traffic)");
                }
            } else if desired == 0 {
                desired = 1;
                kind = Kind::Grace;
                let ago = Secs(idle_for.unwrap_or_default());
                reason =
                    format!("kept at 1: last request {ago} ago, scale to zero after {} without requests", Secs(grace));
            }
        }
        if observed.routable && !observed.ever_ready && policy.initial_scale > desired {
            desired = policy.initial_scale;
            kind = Kind::InitialScale;
            reason = format!("initial scale {desired}: the revision has not been ready yet");
        }
        if desired < min {
            reason = format!("minInstances {min} ({reason})");
            desired = min;
            kind = Kind::MinInstances;
        }
        if desired > policy.max {
            reason = format!("maxInstances {} ({reason})", policy.max);
            desired = policy.max;
            kind = Kind::MaxInstances;
        }
        Decision { desired: desired.max(0), kind, reason, panicking }
    }
}

/// `ceil(x)` as an instance count, saturating.
fn ceil_count(x: f64) -> i32 {
    // `as` saturates, and NaN becomes 0.
    #[allow(clippy::cast_possible_truncation)]
    let n = (x - 1e-9).ceil().max(0.0) as i32;
    n
}

/// `floor(x)` as an instance count, saturating.
fn floor_count(x: f64) -> i32 {
    #[allow(clippy::cast_possible_truncation)]
    let n = (x + 1e-9).floor().max(0.0) as i32;
    n
}

/// A number in a reason: whole numbers without decimals, others with one.
struct Number(f64);

impl fmt::Display for Number {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if (self.0 - self.0.round()).abs() < 1e-9 { write!(f, "{:.0}", self.0) } else { write!(f, "{:.1}", self.0) }
    }
}

/// A duration in a reason: `6s`, `1.5s`, `250ms`.
struct Secs(Duration);

impl fmt::Display for Secs {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0 < Duration::from_secs(1) && !self.0.is_zero() {
            write!(f, "{}ms", self.0.as_millis())
        } else {
            write!(f, "{}s", Number(self.0.as_secs_f64()))
        }
    }
}

#[cfg(test)]
mod tests {
    use tokio::time::advance;

    use super::*;
    use crate::kpa::policy::{DEFAULT_RPS_TARGET, Metric};

    /// Concurrency 10 per instance at 70%: 7 in flight per instance.
    fn policy() -> Policy {
        Policy {
            metric: Metric::Concurrency,
            target: 10.0,
            utilization: 0.7,
            min: 0,
            max: i32::MAX,
            initial_scale: 1,
            stable_window: Duration::from_secs(60),
        }
    }

    fn serving(ready: i32) -> Observed {
        Observed { ready, ever_ready: true, routable: true }
    }

    fn scaler() -> Scaler {
        Scaler::new(ScalerConfig::default(), Instant::now(), false)
    }

    /// `secs` seconds of `concurrency` in flight, one sample a second.
    async fn feed(s: &mut Scaler, secs: u32, concurrency: f64) {
        for _ in 0..secs {
            advance(Duration::from_secs(1)).await;
            s.record(Instant::now(), Sample { concurrency, ..Default::default() }, concurrency > 0.0);
        }
    }

    #[tokio::test(start_paused = true)]
    async fn the_stable_window_averages_over_the_time_observed() {
        let mut s = scaler();
        feed(&mut s, 10, 12.3).await;
        let d = s.evaluate(Instant::now(), &policy(), serving(2));
        assert_eq!((d.desired, d.kind), (2, Kind::Stable));
        assert_eq!(d.reason, "stable: 12.3 in flight / (10 × 70%) = 2");

        // 10 s of 28, then 20 s of nothing, in a 60 s window observed for 30 s: 9.3 on average.
        let mut s = scaler();
        feed(&mut s, 10, 28.0).await;
        assert_eq!(s.evaluate(Instant::now(), &policy(), serving(4)).desired, 4);
        feed(&mut s, 20, 0.0).await;
        let d = s.evaluate(Instant::now(), &policy(), serving(4));
        assert_eq!((d.desired, d.reason.as_str()), (2, "stable: 9.3 in flight / (10 × 70%) = 2"));
        // Half the window later the burst still weighs, but the grace (30 s since the last
        // request) ran out: zero.
        feed(&mut s, 10, 0.0).await;
        let d = s.evaluate(Instant::now(), &policy(), serving(2));
        assert_eq!((d.desired, d.kind), (0, Kind::ScaledToZero));
    }

    #[tokio::test(start_paused = true)]
    async fn a_shorter_window_forgets_sooner() {
        let mut s = scaler();
        let short = Policy { stable_window: Duration::from_secs(10), ..policy() };
        feed(&mut s, 10, 14.0).await;
        feed(&mut s, 10, 7.0).await;
        let d = s.evaluate(Instant::now(), &short, serving(2));
        assert_eq!(d.reason, "stable: 7 in flight / (10 × 70%) = 1");
    }

    #[tokio::test(start_paused = true)]
    async fn a_burst_panics_and_panic_never_scales_down_until_a_stable_window_passes() {
        let mut s = scaler();
        feed(&mut s, 60, 7.0).await;
        assert_eq!(s.evaluate(Instant::now(), &policy(), serving(1)).desired, 1);

        feed(&mut s, 2, 140.0).await;
        let d = s.evaluate(Instant::now(), &policy(), serving(1));
        // Panic window: 6 s, of which 2 s at 140 and 4 s at 7: 51.3 in flight, 8 instances.
        assert!(d.panicking);
        assert_eq!((d.desired, d.kind), (8, Kind::Panic));
        assert_eq!(d.reason, "panic mode: 51.3 in flight over 6s, 1 ready");

        feed(&mut s, 4, 140.0).await;
        let d = s.evaluate(Instant::now(), &policy(), serving(8));
        assert_eq!(d.reason, "panic mode: 140 in flight over 6s, 8 ready");
        assert_eq!(d.desired, 20);

        // The burst ends: still 20 for a stable window after the threshold was last crossed.
        feed(&mut s, 10, 7.0).await;
        let d = s.evaluate(Instant::now(), &policy(), serving(20));
        assert!(d.panicking && d.desired == 20, "{d:?}");
        feed(&mut s, 49, 7.0).await;
        assert!(s.evaluate(Instant::now(), &policy(), serving(20)).panicking);
        feed(&mut s, 1, 7.0).await;
        let d = s.evaluate(Instant::now(), &policy(), serving(20));
        assert!(!d.panicking);
        assert_eq!(d.kind, Kind::Stable);
        // Out of panic, the stable average (dominated by 7 in flight) halves at most per step.
        assert_eq!(d.desired, 10);
        assert!(d.reason.ends_with("(scale-down rate limit: 10)"), "{}", d.reason);
    }

    #[tokio::test(start_paused = true)]
    async fn scaling_is_rate_limited_per_evaluation() {
        let mut s = scaler();
        feed(&mut s, 1, 1e9).await;
        assert_eq!(s.evaluate(Instant::now(), &policy(), serving(1)).desired, 1000, "× 1000 from 1");
        assert_eq!(s.evaluate(Instant::now(), &policy(), serving(0)).desired, 1000, "from 0 as from 1");

        let mut s = scaler();
        feed(&mut s, 1, 0.0).await;
        let d = s.evaluate(Instant::now(), &policy(), serving(10));
        assert_eq!((d.desired, d.kind), (5, Kind::Stable), "at most halved: {d:?}");
        assert_eq!(s.evaluate(Instant::now(), &policy(), serving(5)).desired, 2);
        assert_eq!(s.evaluate(Instant::now(), &policy(), serving(2)).desired, 1);
        // Down to zero instances in demand, one kept within the grace.
        let d = s.evaluate(Instant::now(), &policy(), serving(1));
        assert_eq!((d.desired, d.kind), (1, Kind::Grace));
    }

    #[tokio::test(start_paused = true)]
    async fn min_and_max_bound_the_result() {
        let bounded = Policy { min: 2, max: 10, ..policy() };
        let mut s = scaler();
        feed(&mut s, 6, 100.0).await;
        let d = s.evaluate(Instant::now(), &bounded, serving(2));
        assert_eq!((d.desired, d.kind), (10, Kind::MaxInstances));
        assert_eq!(d.reason, "maxInstances 10 (panic mode: 100 in flight over 6s, 2 ready)");

        let mut s = Scaler::new(ScalerConfig::default(), Instant::now(), true);
        let d = s.evaluate(Instant::now(), &bounded, serving(0));
        assert_eq!((d.desired, d.kind), (2, Kind::MinInstances));
        assert_eq!(d.reason, "minInstances 2 (stable: 0 in flight / (10 × 70%) = 0)");
        // minInstances holds only while the revision is routable.
        let d = s.evaluate(Instant::now(), &bounded, Observed { routable: false, ..serving(2) });
        assert_eq!(
            (d.desired, d.reason.as_str()),
            (0, "scaled to zero after 30s without requests (receives no traffic)")
        );
    }

    #[tokio::test(start_paused = true)]
    async fn idle_revisions_scale_to_zero_after_the_grace_and_a_poke_brings_one_back() {
        let mut s = scaler();
        feed(&mut s, 1, 3.0).await;
        let last_request = Instant::now();
        feed(&mut s, 29, 0.0).await;
        // Still within the grace; the 60 s average rounds up to one instance anyway.
        assert_eq!(s.evaluate(Instant::now(), &policy(), serving(1)).desired, 1);
        let short = Policy { stable_window: Duration::from_secs(6), ..policy() };
        let d = s.evaluate(Instant::now(), &short, serving(1));
        assert_eq!((d.desired, d.kind), (1, Kind::Grace));
        assert_eq!(d.reason, "kept at 1: last request 29s ago, scale to zero after 30s without requests");
        feed(&mut s, 1, 0.0).await;
        assert_eq!(Instant::now() - last_request, Duration::from_secs(30));
        let d = s.evaluate(Instant::now(), &policy(), serving(1));
        assert_eq!((d.desired, d.kind), (0, Kind::ScaledToZero));
        assert_eq!(d.reason, "scaled to zero after 30s without requests");

        // A poke at zero: one instance at once, for the grace at least.
        s.mark_active(Instant::now());
        let d = s.evaluate(Instant::now(), &policy(), serving(0));
        assert_eq!((d.desired, d.kind), (1, Kind::Grace));
        advance(Duration::from_secs(30)).await;
        assert_eq!(s.evaluate(Instant::now(), &policy(), serving(1)).desired, 0);
    }

    #[tokio::test(start_paused = true)]
    async fn a_revision_idle_before_the_scaler_existed_stays_at_zero_and_others_get_a_grace() {
        let mut idle = Scaler::new(ScalerConfig::default(), Instant::now(), true);
        assert_eq!(idle.evaluate(Instant::now(), &policy(), serving(0)).desired, 0);
        let mut restarted = scaler();
        assert_eq!(restarted.evaluate(Instant::now(), &policy(), serving(1)).kind, Kind::Grace);
        advance(Duration::from_secs(30)).await;
        assert_eq!(restarted.evaluate(Instant::now(), &policy(), serving(1)).desired, 0);
    }

    #[tokio::test(start_paused = true)]
    async fn a_revision_never_ready_gets_its_initial_scale() {
        let three = Policy { initial_scale: 3, ..policy() };
        let new = Observed { ready: 0, ever_ready: false, routable: true };
        let mut s = Scaler::new(ScalerConfig::default(), Instant::now(), true);
        let d = s.evaluate(Instant::now(), &three, new);
        assert_eq!((d.desired, d.kind), (3, Kind::InitialScale));
        assert_eq!(d.reason, "initial scale 3: the revision has not been ready yet");
        // Demand beyond it still counts; once ready, demand alone decides.
        feed(&mut s, 1, 70.0).await;
        assert_eq!(s.evaluate(Instant::now(), &three, new).desired, 10);
        advance(Duration::from_secs(120)).await;
        assert_eq!(s.evaluate(Instant::now(), &three, new).desired, 3);
        assert_eq!(s.evaluate(Instant::now(), &three, Observed { ever_ready: true, ..new }).desired, 0);
        // Not routable: no initial scale.
        assert_eq!(s.evaluate(Instant::now(), &three, Observed { routable: false, ..new }).desired, 0);
    }

    #[tokio::test(start_paused = true)]
    async fn rps_and_cpu_use_their_own_targets() {
        let mut s = scaler();
        advance(Duration::from_secs(1)).await;
        s.record(Instant::now(), Sample { concurrency: 1.0, rps: 420.0, cpu_millis: 2100.0 }, true);
        let rps = Policy { metric: Metric::Rps, target: DEFAULT_RPS_TARGET, ..policy() };
        let d = s.evaluate(Instant::now(), &rps, serving(3));
        assert_eq!(d.reason, "stable: 420 requests/s / (200 × 70%) = 3");
        let cpu = Policy { metric: Metric::Cpu, target: 1000.0, ..policy() };
        let d = s.evaluate(Instant::now(), &cpu, serving(3));
        assert_eq!(d.reason, "stable: 2100 millicores / (1000 × 70%) = 3");
    }

    #[test]
    fn reasons_name_their_kind() {
        for kind in Kind::ALL {
            assert_eq!(Kind::of_reason(&format!("{} whatever", kind.prefix())), Some(kind));
        }
        assert_eq!(Kind::of_reason("receives traffic"), None);
    }
}

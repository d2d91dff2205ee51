//! Knative's Pod Autoscaler (KPA) arithmetic, without I/O: a [`Scaler`] per revision is fed
//! demand samples and answers how many instances the revision should have, and why.
//!
//! The rules (Knative's, with its defaults):
//! - **Averages.** Demand (requests in flight, requests per second, or CPU millicores) is
//!   averaged over a *stable window* (60 s) and a *panic window* (10% of it, 6 s). Each sample
//!   holds from the previous sample (at most [`ScalerConfig::max_sample_span`] back; the first
//!   one [`FIRST_SAMPLE_SPAN`]) to its own time; time without samples counts as no demand. Until a window has been observed for its
//!   whole length, the average is over the time observed, so that the first burst counts fully.
//! - **Desired** = `ceil(average / (target × utilization))`. The target per instance is, for
//!   `concurrency`, `scaling.target` or `containerConcurrency` (the smaller of the two; 0 means
//!   unlimited and gives 100); for `rps`, `scaling.target` or 200; for `cpu`, the CPU limit of
//!   an instance in millicores. Utilization is `targetUtilizationPercentage` (70%).
//! - **Panic.** When the panic-window demand needs at least `panic_threshold` (200%) of the
//!   ready instances (at least one counted), the scaler panics: it follows the panic window and
//!   never scales down. It leaves panic once a stable window has passed without the threshold
//!   being crossed.
//! - **Rate limits.** Per evaluation, desired stays within `[ready / 2, max(ready, 1) × 1000]`
//!   (rounded down, up). Scaling to zero is not limited: nothing is left to serve.
//! - **Scale to zero.** A revision whose last request (or poke) is older than the grace period
//!   (30 s) gets 0 instances unless `minInstances > 0`; within the grace it keeps at least one.
//! - **Routability.** `minInstances` holds only while the revision is routable (receives
//!   traffic or is its service's latest revision); an unroutable revision goes to zero after the
//!   grace like any other idle one.
//! - **Initial scale.** A routable revision that has never been ready gets at least
//!   `initialScale` (1) instances.
//! - **Bounds.** Finally, `[minInstances, maxInstances]` (`maxInstances` ≤ 0: unbounded).
//!
//! The pieces: `policy` reads how a revision scales, `window` keeps the samples and averages
//! windows over them, `scaler` applies the rules above at each evaluation.

mod policy;
mod scaler;
mod window;

pub use policy::{
    BadWindow, DEFAULT_CONCURRENCY_TARGET, DEFAULT_RPS_TARGET, MAX_WINDOW, MIN_WINDOW, Metric, Policy, ScalerConfig,
    WINDOW_ANNOTATION, cpu_limit_millis, parse_window,
};
pub use scaler::{Decision, Kind, Observed, Scaler};
pub use window::{FIRST_SAMPLE_SPAN, Sample};

//! Sends the load of a plan and samples it every second.
//!
//! Open loop: the `i`-th request of a stage at rate `r` is due at `start + i/r` and is sent then
//! whatever happened to the earlier ones; its latency runs from when it was due, not from when
//! it left, so a generator or a server that falls behind shows as latency instead of hiding it
//! (coordinated omission). At most `max_in_flight` requests are outstanding; one due beyond that
//! is counted as dropped. Closed loop: `c` workers each send a request, wait for its answer and
//! send the next, until the stage ends.
//!
//! Requests still outstanding when a stage ends finish in the background; the run ends once the
//! last stage is over and every request has finished (each is bounded by the timeout).

use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use futures::future::BoxFuture;
use tokio::sync::{Semaphore, TryAcquireError};
use tokio::time::{Instant, MissedTickBehavior};

use super::http::Sender;
use super::plan::{Load, Plan, Rate};
use super::stats::{Outcome, Recorder, Tally};
use super::timeline::{Instances, Sample};

/// How often the timeline is sampled and the instances of the service are asked for.
pub const SAMPLE_INTERVAL: Duration = Duration::from_secs(1);

/// A final window shorter than this, with nothing in it, adds nothing to the timeline.
const MIN_FINAL_WINDOW: Duration = Duration::from_millis(500);

/// Asks the API for the instances of the service under load; `None` when it cannot say.
pub type InstancesProbe = Box<dyn Fn() -> BoxFuture<'static, Option<Instances>> + Send + Sync>;

/// What a run came to.
#[derive(Debug)]
pub struct Report {
    pub total: Tally,
    pub elapsed: Duration,
    pub timeline: Vec<Sample>,
    /// Stopped (Ctrl-C) before the plan was over; requests outstanding then are not counted.
    pub interrupted: bool,
}

/// What the progress display is told each second, besides the sample.
#[derive(Debug, Clone, Copy)]
pub struct Progress {
    pub stage: usize,
    pub total_errors: u64,
}

struct Shared {
    sender: Sender,
    recorder: Mutex<Recorder>,
    /// One permit per request outstanding; closed when the run stops.
    permits: Arc<Semaphore>,
}

impl Shared {
    fn recorder(&self) -> MutexGuard<'_, Recorder> {
        // Nothing panics while holding the lock; if something did, the counts are still usable.
        self.recorder.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Runs `plan` against the target of `sender`, with at most `max_in_flight` requests outstanding.
/// `on_sample` is called with each second of the timeline as it ends; `stop` ends the run early.
pub async fn run(
    plan: &Plan,
    sender: Sender,
    max_in_flight: usize,
    probe: Option<InstancesProbe>,
    mut on_sample: impl FnMut(&Sample, Progress),
    stop: impl Future<Output = ()>,
) -> Report {
    let max_in_flight = max_in_flight.clamp(1, u32::MAX as usize).min(Semaphore::MAX_PERMITS);
    let shared = Arc::new(Shared {
        sender,
        recorder: Mutex::new(Recorder::default()),
        permits: Arc::new(Semaphore::new(max_in_flight)),
    });
    let start = Instant::now();
    let instances = Arc::new(Mutex::new(None::<Instances>));
    let prober = probe.map(|probe| tokio::spawn(poll_instances(probe, instances.clone())));

    let work = async {
        drive(plan, &shared, start).await;
        // Every permit back: every request has finished. The count fits: it was clamped above.
        let _all = shared.permits.acquire_many(max_in_flight as u32).await;
    };
    tokio::pin!(work, stop);
    let mut ticker = tokio::time::interval_at(start + SAMPLE_INTERVAL, SAMPLE_INTERVAL);
    ticker.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut timeline = Vec::new();
    let mut last = start;
    let sample = |now: Instant, last: &mut Instant, final_window: bool| {
        let (window, total_errors) = {
            let mut recorder = shared.recorder();
            (recorder.take_window(), recorder.total.total_errors())
        };
        let span = now.saturating_duration_since(*last);
        if final_window && span < MIN_FINAL_WINDOW && window.offered == 0 && window.completed == 0 {
            return None;
        }
        *last = now;
        let in_flight = max_in_flight.saturating_sub(shared.permits.available_permits());
        let instances = *instances.lock().unwrap_or_else(PoisonError::into_inner);
        let elapsed = now.saturating_duration_since(start);
        let sample = Sample::new(elapsed, span, &window, in_flight, instances);
        Some((sample, Progress { stage: plan.stage_at(elapsed), total_errors }))
    };
    let interrupted = loop {
        tokio::select! {
            biased;
            () = &mut stop => break true,
            () = &mut work => break false,
            _ = ticker.tick() => {
                if let Some((s, progress)) = sample(Instant::now(), &mut last, false) {
                    on_sample(&s, progress);
                    timeline.push(s);
                }
            }
        }
    };
    // Closed-loop workers and an interrupted schedule stop here.
    shared.permits.close();
    if let Some((s, progress)) = sample(Instant::now(), &mut last, true) {
        on_sample(&s, progress);
        timeline.push(s);
    }
    if let Some(prober) = prober {
        prober.abort();
    }
    let total = shared.recorder().total.clone();
    Report { total, elapsed: start.elapsed(), timeline, interrupted }
}

/// Keeps `latest` up to date with what `probe` says, once a second.
async fn poll_instances(probe: InstancesProbe, latest: Arc<Mutex<Option<Instances>>>) {
    let mut ticker = tokio::time::interval(SAMPLE_INTERVAL);
    ticker.set_missed_tick_behavior(MissedTickBehavior::Delay);
    loop {
        ticker.tick().await;
        // A slow API must not hold the value of an earlier second: give up on this answer.
        let answer = tokio::time::timeout(SAMPLE_INTERVAL, probe()).await.ok().flatten();
        *latest.lock().unwrap_or_else(PoisonError::into_inner) = answer;
    }
}

/// Runs the stages one after the other, each from its scheduled start.
async fn drive(plan: &Plan, shared: &Arc<Shared>, start: Instant) {
    for (at, stage) in plan.schedule() {
        let stage_start = start + at;
        let stage_end = stage_start + stage.duration;
        match stage.load {
            Load::Rate(rate) => {
                if !open_loop(shared, stage_start, stage.duration, rate).await {
                    return;
                }
            }
            Load::Concurrency(workers) => closed_loop(shared, stage_end, workers),
        }
        tokio::time::sleep_until(stage_end).await;
    }
}

/// Sends the requests of an open-loop stage at their due times. `false` once the run stopped.
async fn open_loop(shared: &Arc<Shared>, stage_start: Instant, duration: Duration, rate: Rate) -> bool {
    for i in 0..rate.sends_in(duration) {
        let due = stage_start + rate.send_offset(i);
        tokio::time::sleep_until(due).await;
        match shared.permits.clone().try_acquire_owned() {
            Ok(permit) => {
                shared.recorder().offer(false);
                let shared = shared.clone();
                tokio::spawn(async move {
                    let outcome = shared.sender.send().await;
                    shared.recorder().record(outcome, due.elapsed());
                    drop(permit);
                });
            }
            Err(TryAcquireError::NoPermits) => shared.recorder().offer(true),
            Err(TryAcquireError::Closed) => return false,
        }
    }
    true
}

/// Starts the workers of a closed-loop stage; each sends until the stage ends (or the run
/// stops), and its last request may finish after that.
fn closed_loop(shared: &Arc<Shared>, stage_end: Instant, workers: u32) {
    for _ in 0..workers {
        let shared = shared.clone();
        tokio::spawn(async move {
            while Instant::now() < stage_end {
                let Ok(permit) = shared.permits.clone().acquire_owned().await else { return };
                if Instant::now() >= stage_end {
                    return;
                }
                shared.recorder().offer(false);
                let sent = Instant::now();
                let outcome: Outcome = shared.sender.send().await;
                shared.recorder().record(outcome, sent.elapsed());
                drop(permit);
            }
        });
    }
}

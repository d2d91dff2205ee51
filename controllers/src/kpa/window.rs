//! Demand samples and the windows they are averaged over: each sample holds from the previous
//! one (at most a span back) to its own time, time without samples counts as no demand, and a
//! window not yet observed for its whole length is averaged over the time observed.

use std::collections::VecDeque;
use std::time::Duration;

use tokio::time::Instant;

use super::policy::Metric;

/// The time the first sample of a scaler covers: one gateway report period.
pub const FIRST_SAMPLE_SPAN: Duration = Duration::from_secs(1);

/// The demand of a revision at one moment, summed across gateways (and instances, for CPU).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Sample {
    /// Requests in flight.
    pub concurrency: f64,
    /// Requests per second.
    pub rps: f64,
    /// CPU in use by the ready instances, in millicores.
    pub cpu_millis: f64,
}

impl Sample {
    fn value(&self, metric: Metric) -> f64 {
        let v = match metric {
            Metric::Concurrency => self.concurrency,
            Metric::Rps => self.rps,
            Metric::Cpu => self.cpu_millis,
        };
        if v.is_finite() { v.max(0.0) } else { 0.0 }
    }
}

/// A revision's samples, and the averages of windows over them.
#[derive(Debug, Default)]
pub(super) struct Samples {
    spans: VecDeque<Span>,
    /// The start of the first sample: windows are averaged over at most the time since.
    observed_since: Option<Instant>,
}

/// A sample and the span of time it covers: `(start, end]`.
#[derive(Debug, Clone, Copy)]
struct Span {
    start: Instant,
    end: Instant,
    sample: Sample,
}

impl Samples {
    /// Records `sample`, taken at `at`, covering the time since the previous sample but at most
    /// `max_span` back (the first one covers [`FIRST_SAMPLE_SPAN`]). A sample not newer than the
    /// last is ignored.
    pub(super) fn record(&mut self, at: Instant, sample: Sample, max_span: Duration) {
        let start = match self.spans.back() {
            Some(last) if last.end >= at => return,
            Some(last) => last.end.max(at.checked_sub(max_span).unwrap_or(at)),
            None => at.checked_sub(FIRST_SAMPLE_SPAN).unwrap_or(at),
        };
        self.observed_since.get_or_insert(start);
        self.spans.push_back(Span { start, end: at, sample });
    }

    /// The average of `metric` over the `window` that ends at `now`.
    pub(super) fn average(&self, now: Instant, window: Duration, metric: Metric) -> f64 {
        let Some(since) = self.observed_since else { return 0.0 };
        let from = now.checked_sub(window).map_or(since, |t| t.max(since));
        let length = now.saturating_duration_since(from).as_secs_f64();
        if length <= 0.0 {
            return self.spans.back().map_or(0.0, |s| s.sample.value(metric));
        }
        let total: f64 = self
            .spans
            .iter()
            .map(|s| {
                let covered = s.end.min(now).saturating_duration_since(s.start.max(from));
                covered.as_secs_f64() * s.sample.value(metric)
            })
            .sum();
        total / length
    }

    /// Forgets the samples that ended at or before `cutoff`: no window reaches back to them.
    pub(super) fn forget_until(&mut self, cutoff: Instant) {
        while self.spans.front().is_some_and(|s| s.end <= cutoff) {
            self.spans.pop_front();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_window_is_averaged_over_the_time_observed_and_gaps_count_as_nothing() {
        let t0 = Instant::now();
        let at = |secs: u64| t0 + Duration::from_secs(secs);
        let in_flight = |concurrency: f64| Sample { concurrency, ..Default::default() };
        let mut samples = Samples::default();
        assert_eq!(samples.average(at(0), Duration::from_secs(60), Metric::Concurrency), 0.0);
        // 10 s of 28 in flight (the first sample covering the second before it), then 20 s of none.
        for s in 1..=10 {
            samples.record(at(s), in_flight(28.0), Duration::from_secs(4));
        }
        for s in 11..=30 {
            samples.record(at(s), in_flight(0.0), Duration::from_secs(4));
        }
        let average = samples.average(at(30), Duration::from_secs(60), Metric::Concurrency);
        assert!((average - 280.0 / 30.0).abs() < 1e-9, "{average}");
        // A sample 10 s after the last covers 4 s of it: the 6 s before count as no demand.
        samples.record(at(40), in_flight(60.0), Duration::from_secs(4));
        let average = samples.average(at(40), Duration::from_secs(10), Metric::Concurrency);
        assert!((average - 24.0).abs() < 1e-9, "{average}");
        // Old samples go; an older sample than the last is ignored.
        samples.forget_until(at(30));
        samples.record(at(35), in_flight(1e6), Duration::from_secs(4));
        assert_eq!(samples.spans.len(), 1);
    }
}

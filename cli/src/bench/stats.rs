//! What the requests of a run came to: outcomes by class, and latencies in HDR histograms (for
//! the whole run and for the current one-second window of the timeline).

use std::fmt;
use std::time::Duration;

use hdrhistogram::Histogram;

/// The longest latency told apart, in microseconds (an hour); longer ones count as an hour.
const MAX_LATENCY_MICROS: u64 = 3_600_000_000;

/// Why a request did not succeed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ErrorClass {
    /// No connection could be made (refused, unreachable, DNS).
    Connect,
    /// No complete answer within `--timeout`.
    Timeout,
    /// A 4xx answer other than 429.
    Client,
    /// 429 Too Many Requests: the service (or its gateway) sheds load.
    TooManyRequests,
    /// A 5xx answer.
    Server,
    /// The connection failed after it was made (reset, closed mid-answer, malformed answer).
    Other,
    /// Never sent: the generator already had as many requests outstanding as it allows.
    Dropped,
}

impl ErrorClass {
    pub const ALL: [ErrorClass; 7] = [
        ErrorClass::Connect,
        ErrorClass::Timeout,
        ErrorClass::Client,
        ErrorClass::TooManyRequests,
        ErrorClass::Server,
        ErrorClass::Other,
        ErrorClass::Dropped,
    ];

    pub fn label(self) -> &'static str {
        match self {
            ErrorClass::Connect => "connect",
            ErrorClass::Timeout => "timeout",
            ErrorClass::Client => "4xx",
            ErrorClass::TooManyRequests => "429",
            ErrorClass::Server => "5xx",
            ErrorClass::Other => "other",
            ErrorClass::Dropped => "dropped",
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

impl fmt::Display for ErrorClass {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.label())
    }
}

/// The error class of an HTTP status; `None` for success (1xx–3xx: redirects are not followed,
/// and a redirect is the server's answer, not a failure).
pub fn classify_status(status: u16) -> Option<ErrorClass> {
    match status {
        429 => Some(ErrorClass::TooManyRequests),
        400..=499 => Some(ErrorClass::Client),
        500..=599 => Some(ErrorClass::Server),
        _ => None,
    }
}

/// How one request ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// A whole answer arrived with this status.
    Answered(u16),
    /// No whole answer arrived.
    Failed(ErrorClass),
}

impl Outcome {
    pub fn error_class(self) -> Option<ErrorClass> {
        match self {
            Outcome::Answered(status) => classify_status(status),
            Outcome::Failed(class) => Some(class),
        }
    }
}

/// The latencies and outcomes of a set of requests.
#[derive(Debug, Clone)]
pub struct Tally {
    /// Requests due to be sent (including those dropped).
    pub offered: u64,
    /// Requests that ended, answered or not (excluding those dropped).
    pub completed: u64,
    /// Requests answered with 1xx–3xx.
    pub succeeded: u64,
    errors: [u64; ErrorClass::ALL.len()],
    /// Microseconds, of every answered request (failures have no meaningful latency: a
    /// timeout's is the timeout).
    latency: Histogram<u64>,
}

impl Default for Tally {
    fn default() -> Tally {
        Tally::new()
    }
}

impl Tally {
    pub fn new() -> Tally {
        // Constant bounds the histogram accepts (1 ≤ low, 2·low ≤ high, 0–5 figures).
        #[allow(clippy::expect_used)]
        let latency = Histogram::new_with_bounds(1, MAX_LATENCY_MICROS, 3).expect("valid histogram bounds");
        Tally { offered: 0, completed: 0, succeeded: 0, errors: [0; ErrorClass::ALL.len()], latency }
    }

    /// A request became due; `dropped` when it could not be sent.
    pub fn offer(&mut self, dropped: bool) {
        self.offered += 1;
        if dropped {
            self.errors[ErrorClass::Dropped.index()] += 1;
        }
    }

    /// A request ended after `latency`.
    pub fn record(&mut self, outcome: Outcome, latency: Duration) {
        self.completed += 1;
        match outcome.error_class() {
            Some(class) => self.errors[class.index()] += 1,
            None => self.succeeded += 1,
        }
        if let Outcome::Answered(_) = outcome {
            let micros = u64::try_from(latency.as_micros()).unwrap_or(u64::MAX).max(1);
            self.latency.saturating_record(micros);
        }
    }

    pub fn errors(&self, class: ErrorClass) -> u64 {
        self.errors[class.index()]
    }

    /// Every error, dropped requests included.
    pub fn total_errors(&self) -> u64 {
        self.errors.iter().sum()
    }

    /// The latency at `quantile` (0–1) of the answered requests, in milliseconds; `None` when
    /// none was answered.
    pub fn latency_ms(&self, quantile: f64) -> Option<f64> {
        (!self.latency.is_empty()).then(|| self.latency.value_at_quantile(quantile) as f64 / 1000.0)
    }

    pub fn max_latency_ms(&self) -> Option<f64> {
        (!self.latency.is_empty()).then(|| self.latency.max() as f64 / 1000.0)
    }

    pub fn answered(&self) -> u64 {
        self.latency.len()
    }
}

/// The run's tally and the current window's, updated together.
#[derive(Debug, Default)]
pub struct Recorder {
    pub total: Tally,
    window: Tally,
}

impl Recorder {
    pub fn offer(&mut self, dropped: bool) {
        self.total.offer(dropped);
        self.window.offer(dropped);
    }

    pub fn record(&mut self, outcome: Outcome, latency: Duration) {
        self.total.record(outcome, latency);
        self.window.record(outcome, latency);
    }

    /// What happened since the last call, and a new window.
    pub fn take_window(&mut self) -> Tally {
        std::mem::take(&mut self.window)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn statuses_are_classified() {
        for ok in [100, 200, 204, 301, 304, 399] {
            assert_eq!(classify_status(ok), None, "{ok}");
        }
        assert_eq!(classify_status(429), Some(ErrorClass::TooManyRequests));
        for client in [400, 404, 428, 430, 499] {
            assert_eq!(classify_status(client), Some(ErrorClass::Client), "{client}");
        }
        for server in [500, 502, 503, 599] {
            assert_eq!(classify_status(server), Some(ErrorClass::Server), "{server}");
        }
    }

    #[test]
    fn outcomes_are_counted_by_class_and_only_answers_have_latency() {
        let mut t = Tally::new();
        t.record(Outcome::Answered(200), Duration::from_millis(10));
        t.record(Outcome::Answered(503), Duration::from_millis(20));
        t.record(Outcome::Answered(429), Duration::from_millis(1));
        t.record(Outcome::Failed(ErrorClass::Connect), Duration::from_millis(1));
        t.record(Outcome::Failed(ErrorClass::Timeout), Duration::from_secs(30));
        t.offer(true);
        assert_eq!((t.offered, t.completed, t.succeeded, t.answered()), (1, 5, 1, 3));
        let counts: Vec<u64> = ErrorClass::ALL.iter().map(|&c| t.errors(c)).collect();
        assert_eq!(counts, [1, 1, 0, 1, 1, 0, 1]);
        assert_eq!(t.total_errors(), 5);
        // The timeout's 30 s is not a latency.
        assert!(t.max_latency_ms().unwrap() < 21.0);
    }

    #[test]
    fn percentiles_come_from_the_histogram() {
        let mut t = Tally::new();
        assert_eq!(t.latency_ms(0.99), None);
        for ms in 1..=1000 {
            t.record(Outcome::Answered(200), Duration::from_millis(ms));
        }
        let close = |got: Option<f64>, want: f64| {
            let got = got.unwrap();
            assert!((got - want).abs() <= want * 0.001 + 0.001, "{got} != {want}");
        };
        close(t.latency_ms(0.5), 500.0);
        close(t.latency_ms(0.9), 900.0);
        close(t.latency_ms(0.99), 990.0);
        close(t.latency_ms(0.999), 999.0);
        close(t.max_latency_ms(), 1000.0);
    }

    #[test]
    fn a_window_holds_what_happened_since_it_was_last_taken() {
        let mut r = Recorder::default();
        r.offer(false);
        r.record(Outcome::Answered(200), Duration::from_millis(5));
        let w = r.take_window();
        assert_eq!((w.offered, w.completed), (1, 1));
        r.offer(false);
        let w = r.take_window();
        assert_eq!((w.offered, w.completed, w.answered()), (1, 0, 0));
        assert_eq!((r.total.offered, r.total.completed), (2, 1));
    }
}

//! A token bucket: the per-service request rate limit (`spec.rateLimitRps`).

use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use tokio::time::Instant;

/// Admits `rate` requests per second on average, and bursts of up to one second's worth.
///
/// Thread-safe; the caller passes the time so that tests control it.
#[derive(Debug)]
pub(crate) struct TokenBucket {
    state: Mutex<State>,
}

#[derive(Debug)]
struct State {
    /// Tokens per second, at least 1.
    rate: f64,
    /// Tokens left, at most `rate`.
    tokens: f64,
    refilled: Instant,
}

impl TokenBucket {
    /// A full bucket admitting `rate` requests per second.
    pub(crate) fn new(rate: u32, now: Instant) -> TokenBucket {
        let rate = f64::from(rate.max(1));
        TokenBucket { state: Mutex::new(State { rate, tokens: rate, refilled: now }) }
    }

    /// Changes the rate, keeping the tokens earned so far (capped at the new burst).
    pub(crate) fn set_rate(&self, rate: u32, now: Instant) {
        let mut state = self.lock();
        state.refill(now);
        state.rate = f64::from(rate.max(1));
        state.tokens = state.tokens.min(state.rate);
    }

    /// The current rate, in requests per second.
    pub(crate) fn rate(&self) -> u32 {
        // `rate` came from a u32.
        self.lock().rate as u32
    }

    /// Takes a token, or tells how long until one is available.
    pub(crate) fn try_acquire(&self, now: Instant) -> Result<(), Duration> {
        let mut state = self.lock();
        state.refill(now);
        if state.tokens >= 1.0 {
            state.tokens -= 1.0;
            Ok(())
        } else {
            Err(Duration::from_secs_f64((1.0 - state.tokens) / state.rate))
        }
    }

    // The state is updated by plain arithmetic that cannot panic halfway.
    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl State {
    fn refill(&mut self, now: Instant) {
        let elapsed = now.saturating_duration_since(self.refilled).as_secs_f64();
        self.tokens = (self.tokens + elapsed * self.rate).min(self.rate);
        self.refilled = now;
    }
}

/// The `Retry-After` value for a wait: whole seconds, rounded up, at least 1.
pub(crate) fn retry_after_secs(wait: Duration) -> u64 {
    wait.as_secs_f64().ceil().max(1.0) as u64
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn admits_a_burst_then_the_rate() {
        let t0 = Instant::now();
        let bucket = TokenBucket::new(10, t0);
        for _ in 0..10 {
            assert!(bucket.try_acquire(t0).is_ok());
        }
        let wait = bucket.try_acquire(t0).unwrap_err();
        assert_eq!(wait, Duration::from_millis(100));
        // A token every 100 ms; never more than the burst, however long the pause.
        assert!(bucket.try_acquire(t0 + Duration::from_millis(99)).is_err());
        assert!(bucket.try_acquire(t0 + Duration::from_millis(100)).is_ok());
        let later = t0 + Duration::from_secs(60);
        let admitted = (0..100).filter(|_| bucket.try_acquire(later).is_ok()).count();
        assert_eq!(admitted, 10);
    }

    #[test]
    fn a_new_rate_keeps_earned_tokens_up_to_the_new_burst() {
        let t0 = Instant::now();
        let bucket = TokenBucket::new(100, t0);
        bucket.set_rate(2, t0);
        assert_eq!(bucket.rate(), 2);
        let admitted = (0..10).filter(|_| bucket.try_acquire(t0).is_ok()).count();
        assert_eq!(admitted, 2);
        assert_eq!(bucket.try_acquire(t0), Err(Duration::from_millis(500)));
    }

    #[test]
    fn retry_after_rounds_up_to_whole_seconds() {
        assert_eq!(retry_after_secs(Duration::ZERO), 1);
        assert_eq!(retry_after_secs(Duration::from_millis(100)), 1);
        assert_eq!(retry_after_secs(Duration::from_millis(1001)), 2);
    }
}

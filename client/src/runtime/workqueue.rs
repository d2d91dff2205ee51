//! A work queue with client-go's semantics (`util/workqueue`): de-duplicating, never handing one
//! key to two workers at once, with delayed and rate-limited (per-key backoff) adds.
//!
//! A key moves through three sets: *queued* (waiting for a worker, at most once), *processing*
//! (handed out by [`WorkQueue::get`], until [`WorkQueue::done`]) and *dirty* (added again while
//! processing: queued once `done` is called). Delayed keys wait in a timer list that the workers
//! waiting in `get` drive, so the queue needs no task of its own and runs on a paused clock.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::hash::Hash;
use std::pin::pin;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use tokio::sync::Notify;
use tokio::time::Instant;

use super::backoff_delay;
use super::metrics::Observer;

/// How [`WorkQueue::requeue_rate_limited`] spaces the retries of one key: `base · 2^failures`,
/// capped at `max`, minus up to `jitter` (a fraction) at random.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct RateLimit {
    pub base: Duration,
    pub max: Duration,
    pub jitter: f64,
}

/// client-go's per-item limiter: 5 ms doubling to 1000 s; a fifth of jitter.
impl Default for RateLimit {
    fn default() -> Self {
        RateLimit { base: Duration::from_millis(5), max: Duration::from_secs(1000), jitter: 0.2 }
    }
}

/// A queue of keys for a pool of workers. Cheap to clone; clones share the queue.
///
/// The contract, for any key `k`:
/// - `k` is queued at most once: adding a queued key does nothing;
/// - `k` is handed out by [`WorkQueue::get`] to one worker at a time: added while being
///   processed, it is queued again only when that worker calls [`WorkQueue::done`];
/// - after [`WorkQueue::shut_down`], adds are ignored, delayed keys are dropped, the keys still
///   queued are handed out, and then `get` returns `None`.
pub struct WorkQueue<T> {
    shared: Arc<Shared<T>>,
}

struct Shared<T> {
    state: Mutex<State<T>>,
    /// Woken on every change a waiter may care about: a key queued, a key done, a new earliest
    /// timer, shutdown.
    changed: Notify,
    rate_limit: RateLimit,
}

struct State<T> {
    queue: VecDeque<T>,
    /// Keys that need processing: the queued ones plus those added while processing.
    dirty: HashSet<T>,
    processing: HashSet<T>,
    /// Delayed keys by (due time, sequence), and each delayed key's entry there.
    timers: BTreeMap<(Instant, u64), T>,
    delayed: HashMap<T, (Instant, u64)>,
    next_seq: u64,
    failures: HashMap<T, u32>,
    shutting_down: bool,
    /// Told of every change of `queue`'s length, every new add and every retry (a
    /// controller's queue; a bare queue reports nothing).
    observer: Option<Observer>,
}

impl<T> Clone for WorkQueue<T> {
    fn clone(&self) -> Self {
        WorkQueue { shared: Arc::clone(&self.shared) }
    }
}

impl<T: Clone + Eq + Hash> Default for WorkQueue<T> {
    fn default() -> Self {
        WorkQueue::new(RateLimit::default())
    }
}

impl<T: Clone + Eq + Hash> WorkQueue<T> {
    /// An empty queue whose rate-limited requeues follow `rate_limit`.
    pub fn new(rate_limit: RateLimit) -> WorkQueue<T> {
        WorkQueue::with_observer(rate_limit, None)
    }

    /// [`WorkQueue::new`], reporting its depth, adds and retries to `observer`.
    pub(crate) fn with_observer(rate_limit: RateLimit, observer: Option<Observer>) -> WorkQueue<T> {
        let state = State {
            queue: VecDeque::new(),
            dirty: HashSet::new(),
            processing: HashSet::new(),
            timers: BTreeMap::new(),
            delayed: HashMap::new(),
            next_seq: 0,
            failures: HashMap::new(),
            shutting_down: false,
            observer,
        };
        WorkQueue { shared: Arc::new(Shared { state: Mutex::new(state), changed: Notify::new(), rate_limit }) }
    }

    /// Queues `key` now (see the type's contract).
    pub fn add(&self, key: T) {
        let mut state = self.lock();
        if state.add(key) {
            drop(state);
            self.shared.changed.notify_waiters();
        }
    }

    /// Queues `key` once `delay` has passed. A key already waiting keeps the earlier of its two
    /// due times. A zero delay is [`WorkQueue::add`].
    pub fn add_after(&self, key: T, delay: Duration) {
        if delay.is_zero() {
            return self.add(key);
        }
        let due = Instant::now() + delay;
        let mut state = self.lock();
        if state.shutting_down {
            return;
        }
        if let Some(&(old_due, seq)) = state.delayed.get(&key) {
            if old_due <= due {
                return;
            }
            state.timers.remove(&(old_due, seq));
        }
        let seq = state.next_seq;
        state.next_seq += 1;
        state.timers.insert((due, seq), key.clone());
        state.delayed.insert(key, (due, seq));
        drop(state);
        // A waiter may be sleeping until a later timer.
        self.shared.changed.notify_waiters();
    }

    /// Queues `key` after its backoff: the delay doubles with each call until
    /// [`WorkQueue::forget`] resets it.
    pub fn requeue_rate_limited(&self, key: T) {
        let delay = {
            let mut state = self.lock();
            let failures = state.failures.entry(key.clone()).or_insert(0);
            let RateLimit { base, max, jitter } = self.shared.rate_limit;
            let delay = backoff_delay(base, max, jitter, *failures);
            *failures = failures.saturating_add(1);
            if let Some(observer) = &state.observer {
                observer.retried();
            }
            delay
        };
        self.add_after(key, delay);
    }

    /// Resets the backoff of `key` (call it when processing succeeded).
    pub fn forget(&self, key: &T) {
        self.lock().failures.remove(key);
    }

    /// How many times `key` was requeued rate-limited since it was last forgotten.
    pub fn num_requeues(&self, key: &T) -> u32 {
        self.lock().failures.get(key).copied().unwrap_or(0)
    }

    /// Waits for a key and marks it processing; the caller must call [`WorkQueue::done`] with
    /// it. `None` once the queue is shut down and empty.
    ///
    /// Cancel-safe: a key is taken only in the poll that returns it.
    pub async fn get(&self) -> Option<T> {
        loop {
            // Registered before the state is read, so that no change between the read and the
            // wait goes unnoticed.
            let mut changed = pin!(self.shared.changed.notified());
            changed.as_mut().enable();
            let next_timer = {
                let mut state = self.lock();
                state.fire_timers(Instant::now());
                if let Some(key) = state.pop() {
                    state.dirty.remove(&key);
                    state.processing.insert(key.clone());
                    return Some(key);
                }
                if state.shutting_down {
                    return None;
                }
                state.timers.keys().next().map(|&(due, _)| due)
            };
            match next_timer {
                Some(due) => {
                    tokio::select! {
                        () = changed => {}
                        () = tokio::time::sleep_until(due) => {}
                    }
                }
                None => changed.await,
            }
        }
    }

    /// Ends the processing of `key`; if it was added meanwhile, it is queued again.
    pub fn done(&self, key: &T) {
        let mut state = self.lock();
        state.processing.remove(key);
        if state.dirty.contains(key) {
            state.push(key.clone());
        }
        drop(state);
        self.shared.changed.notify_waiters();
    }

    /// Stops accepting keys and drops the delayed ones; workers get the keys still queued, then
    /// `None`.
    pub fn shut_down(&self) {
        let mut state = self.lock();
        state.shutting_down = true;
        state.timers.clear();
        state.delayed.clear();
        drop(state);
        self.shared.changed.notify_waiters();
    }

    /// [`WorkQueue::shut_down`], then waits until every key handed out is done.
    pub async fn shut_down_with_drain(&self) {
        self.shut_down();
        loop {
            let mut changed = pin!(self.shared.changed.notified());
            changed.as_mut().enable();
            if self.lock().processing.is_empty() {
                return;
            }
            changed.await;
        }
    }

    /// How many keys are queued (not counting delayed or processing ones).
    pub fn len(&self) -> usize {
        self.lock().queue.len()
    }

    /// Whether no key is queued.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Whether [`WorkQueue::shut_down`] was called.
    pub fn is_shutting_down(&self) -> bool {
        self.lock().shutting_down
    }

    // Every critical section is a few collection operations that cannot panic half-way, so the
    // state behind a poisoned lock is consistent.
    fn lock(&self) -> MutexGuard<'_, State<T>> {
        self.shared.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// The keys still waiting when the last clone of a queue goes (a controller that stopped) leave
/// with it: the observer's depth returns to what it was before the queue existed.
impl<T> Drop for Shared<T> {
    fn drop(&mut self) {
        let state = self.state.get_mut().unwrap_or_else(PoisonError::into_inner);
        if let Some(observer) = &state.observer {
            observer.depth(-i64::try_from(state.queue.len()).unwrap_or(i64::MAX));
        }
    }
}

impl<T: Clone + Eq + Hash> State<T> {
    /// Queues `key` unless it is queued or processing already; true if it was queued now.
    fn add(&mut self, key: T) -> bool {
        if self.shutting_down || !self.dirty.insert(key.clone()) {
            return false;
        }
        if let Some(observer) = &self.observer {
            observer.added();
        }
        if self.processing.contains(&key) {
            return false;
        }
        self.push(key);
        true
    }

    /// Every key enters `queue` here, so that the observer sees each change of its length.
    fn push(&mut self, key: T) {
        self.queue.push_back(key);
        if let Some(observer) = &self.observer {
            observer.depth(1);
        }
    }

    /// Every key leaves `queue` here (but for a dropped queue, see `Shared`'s `Drop`).
    fn pop(&mut self) -> Option<T> {
        let key = self.queue.pop_front()?;
        if let Some(observer) = &self.observer {
            observer.depth(-1);
        }
        Some(key)
    }

    /// Queues every delayed key that is due at `now`.
    fn fire_timers(&mut self, now: Instant) {
        while let Some(entry) = self.timers.first_entry() {
            if entry.key().0 > now {
                break;
            }
            let key = entry.remove();
            self.delayed.remove(&key);
            self.add(key);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::future::Future;

    use super::*;

    fn queue() -> WorkQueue<&'static str> {
        WorkQueue::new(RateLimit { jitter: 0.0, ..RateLimit::default() })
    }

    /// The key `get` returns without waiting, if any.
    fn ready<F: Future>(fut: F) -> Option<F::Output> {
        futures::FutureExt::now_or_never(fut)
    }

    #[tokio::test(start_paused = true)]
    async fn adds_are_deduplicated_and_fifo() {
        let q = queue();
        q.add("a");
        q.add("b");
        q.add("a");
        assert_eq!(q.len(), 2);
        assert_eq!(q.get().await, Some("a"));
        assert_eq!(q.get().await, Some("b"));
        assert_eq!(ready(q.get()), None, "nothing left");
    }

    #[tokio::test(start_paused = true)]
    async fn a_key_added_while_processing_waits_for_done() {
        let q = queue();
        q.add("a");
        let key = q.get().await;
        assert_eq!(key, Some("a"));
        q.add("a");
        q.add("a");
        assert_eq!(ready(q.get()), None, "a is being processed");
        q.done(&"a");
        assert_eq!(q.get().await, Some("a"), "requeued once after done");
        q.done(&"a");
        assert_eq!(ready(q.get()), None);
    }

    #[tokio::test(start_paused = true)]
    async fn add_after_waits_and_keeps_the_earliest_due_time() {
        let q = queue();
        let start = Instant::now();
        q.add_after("a", Duration::from_secs(10));
        q.add_after("a", Duration::from_secs(3));
        q.add_after("a", Duration::from_secs(20));
        assert_eq!(q.get().await, Some("a"));
        assert_eq!(start.elapsed(), Duration::from_secs(3));
        q.done(&"a");
        assert_eq!(ready(q.get()), None, "the later timers were merged into the first");
    }

    #[tokio::test(start_paused = true)]
    async fn a_waiting_worker_sees_an_earlier_timer() {
        let q = queue();
        q.add_after("late", Duration::from_secs(100));
        let worker = tokio::spawn({
            let q = q.clone();
            async move { (q.get().await, Instant::now()) }
        });
        tokio::task::yield_now().await;
        let start = Instant::now();
        q.add_after("early", Duration::from_secs(1));
        let (key, at) = worker.await.expect("worker");
        assert_eq!(key, Some("early"));
        assert_eq!(at - start, Duration::from_secs(1));
    }

    #[tokio::test(start_paused = true)]
    async fn rate_limited_requeues_back_off_until_forgotten() {
        let q = queue();
        for expected_ms in [5, 10, 20, 40] {
            let start = Instant::now();
            q.requeue_rate_limited("a");
            assert_eq!(q.get().await, Some("a"));
            assert_eq!(start.elapsed(), Duration::from_millis(expected_ms));
            q.done(&"a");
        }
        assert_eq!(q.num_requeues(&"a"), 4);
        q.forget(&"a");
        let start = Instant::now();
        q.requeue_rate_limited("a");
        assert_eq!(q.get().await, Some("a"));
        assert_eq!(start.elapsed(), Duration::from_millis(5));
    }

    #[tokio::test(start_paused = true)]
    async fn backoff_is_capped_and_jittered_within_bounds() {
        let limit = RateLimit { base: Duration::from_millis(5), max: Duration::from_secs(1), jitter: 0.5 };
        let q = WorkQueue::new(limit);
        for attempt in 0..20u32 {
            let full = (Duration::from_millis(5) * 2u32.pow(attempt.min(10))).min(limit.max);
            let start = Instant::now();
            q.requeue_rate_limited("a");
            assert_eq!(q.get().await, Some("a"));
            let waited = start.elapsed();
            assert!(waited <= full && waited >= full / 2, "attempt {attempt}: waited {waited:?}, full {full:?}");
            q.done(&"a");
        }
    }

    /// Sums what a queue reports, as a depth gauge and two counters would.
    #[derive(Default)]
    struct Counts {
        depth: std::sync::atomic::AtomicI64,
        adds: std::sync::atomic::AtomicU64,
        retries: std::sync::atomic::AtomicU64,
    }

    impl crate::runtime::ControllerMetrics for Counts {
        fn queue_depth(&self, controller: &str, delta: i64) {
            assert_eq!(controller, "test");
            self.depth.fetch_add(delta, std::sync::atomic::Ordering::Relaxed);
        }
        fn queue_added(&self, _: &str) {
            self.adds.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
        fn queue_retried(&self, _: &str) {
            self.retries.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
    }

    impl Counts {
        fn read(&self) -> (i64, u64, u64) {
            use std::sync::atomic::Ordering::Relaxed;
            (self.depth.load(Relaxed), self.adds.load(Relaxed), self.retries.load(Relaxed))
        }
    }

    #[tokio::test(start_paused = true)]
    async fn the_observer_follows_depth_adds_and_retries_and_sees_dropped_keys_leave() {
        let counts = Arc::new(Counts::default());
        let observer = Observer::new("test", counts.clone());
        let q = WorkQueue::with_observer(RateLimit { jitter: 0.0, ..RateLimit::default() }, Some(observer));
        q.add("a");
        q.add("b");
        q.add("a");
        assert_eq!(counts.read(), (2, 2, 0), "a de-duplicated add is no add");
        assert_eq!(q.get().await, Some("a"));
        assert_eq!(counts.read(), (1, 2, 0));
        q.add("a");
        assert_eq!(counts.read(), (1, 3, 0), "added while processing: counted, not yet waiting");
        q.done(&"a");
        assert_eq!(counts.read(), (2, 3, 0), "waiting once done");
        assert_eq!(q.get().await, Some("b"));
        q.requeue_rate_limited("b");
        q.done(&"b");
        assert_eq!(counts.read(), (1, 3, 1), "a delayed key is not waiting yet");
        assert_eq!(q.get().await, Some("a"));
        assert_eq!(q.get().await, Some("b"), "due after its backoff");
        assert_eq!(counts.read(), (0, 4, 1), "the timer's add counts");
        q.add("c");
        q.add("d");
        assert_eq!(counts.read().0, 2);
        drop(q);
        assert_eq!(counts.read().0, 0, "the keys of a dropped queue leave the depth");
    }

    #[tokio::test(start_paused = true)]
    async fn shut_down_hands_out_what_is_queued_then_ends_and_drains() {
        let q = queue();
        q.add("a");
        q.add("b");
        q.add_after("c", Duration::from_secs(1));
        assert_eq!(q.get().await, Some("a"));
        q.shut_down();
        q.add("d");
        assert_eq!(q.get().await, Some("b"));
        assert_eq!(q.get().await, None, "delayed and late keys are dropped");

        let drained = tokio::spawn({
            let q = q.clone();
            async move { q.shut_down_with_drain().await }
        });
        tokio::task::yield_now().await;
        assert!(!drained.is_finished(), "a and b are still processing");
        q.done(&"a");
        q.done(&"b");
        drained.await.expect("drain");
    }
}

//! Failed logins, limited per user and per client address.

use std::collections::HashMap;
use std::hash::Hash;
use std::net::{IpAddr, Ipv6Addr};
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

/// Most users, and separately most addresses, tracked at once.
const MAX_ENTRIES: usize = 100_000;

/// How many times the per-user limit an address may fail: one address (a NAT, an office) serves
/// several users, but guessing across many names from one place must still stop.
const ADDRESS_FACTOR: u32 = 4;

/// Limits failed logins: at most `max_failures` per user, and `4 * max_failures` per client
/// address, within a window that starts at the first failure. A user or address over its limit is
/// refused until that window ends, successful login or not; a success clears the user's count.
///
/// IPv6 addresses count per /64, the block one subscriber usually holds, and IPv4-mapped IPv6
/// addresses as their IPv4 address.
///
/// Memory is bounded: each table holds at most 100,000 entries. Inserting into a full table first
/// drops the expired entries, then, if still full, the entry whose window started first.
#[derive(Debug)]
pub struct LoginLimiter {
    max_failures: u32,
    window: Duration,
    state: Mutex<State>,
}

impl LoginLimiter {
    /// At most `max_failures` failed logins per user and (separately) `max_failures * 4` per
    /// client address within `window`.
    pub fn new(max_failures: u32, window: Duration) -> LoginLimiter {
        LoginLimiter { max_failures, window, state: Mutex::new(State::default()) }
    }

    /// `Err(retry_after)` when this user or this address has used up its failures and its window
    /// has not ended at `now`; `retry_after` is the longer of the two waits, at most the window.
    pub fn check(&self, user: &str, addr: IpAddr, now: Instant) -> Result<(), Duration> {
        let state = self.lock();
        let user_wait = state.users.get(user).and_then(|w| w.blocked_for(self.max_failures, self.window, now));
        let addr_limit = self.max_failures.saturating_mul(ADDRESS_FACTOR);
        let addr_wait = state.addrs.get(&address_key(addr)).and_then(|w| w.blocked_for(addr_limit, self.window, now));
        match user_wait.max(addr_wait) {
            Some(wait) => Err(wait),
            None => Ok(()),
        }
    }

    /// Counts a failed login against the user and the address.
    pub fn record_failure(&self, user: &str, addr: IpAddr, now: Instant) {
        let mut state = self.lock();
        let state = &mut *state;
        record(&mut state.users, user, now, self.window, str::to_owned);
        record(&mut state.addrs, &address_key(addr), now, self.window, |addr| *addr);
    }

    /// Clears the user's failures. The address's stay: a success with one name must not reset
    /// the count of guesses at other names.
    pub fn record_success(&self, user: &str) {
        self.lock().users.remove(user);
    }

    /// The state is counters only, consistent after any panic: a poisoned lock is used as is.
    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

#[derive(Debug, Default)]
struct State {
    users: HashMap<String, Window>,
    addrs: HashMap<IpAddr, Window>,
}

/// Failures counted since `start`, the first failure of the current window.
#[derive(Debug, Clone, Copy)]
struct Window {
    start: Instant,
    failures: u32,
}

impl Window {
    fn ends(&self, window: Duration) -> Instant {
        self.start + window
    }

    /// How long until the window ends, if `limit` failures have been used up and it has not.
    fn blocked_for(&self, limit: u32, window: Duration, now: Instant) -> Option<Duration> {
        let wait = self.ends(window).checked_duration_since(now).filter(|wait| !wait.is_zero())?;
        (self.failures >= limit).then_some(wait)
    }
}

/// Counts one failure for `key` at `now`, starting a new window if the last one has ended.
fn record<K, Q>(table: &mut HashMap<K, Window>, key: &Q, now: Instant, window: Duration, to_owned: impl Fn(&Q) -> K)
where
    K: Eq + Hash + std::borrow::Borrow<Q>,
    Q: Eq + Hash + ?Sized,
{
    if let Some(entry) = table.get_mut(key) {
        if now >= entry.ends(window) {
            *entry = Window { start: now, failures: 1 };
        } else {
            entry.failures = entry.failures.saturating_add(1);
        }
        return;
    }
    if table.len() >= MAX_ENTRIES {
        table.retain(|_, entry| now < entry.ends(window));
    }
    if table.len() >= MAX_ENTRIES
        && let Some(oldest) = table.iter().min_by_key(|(_, entry)| entry.start).map(|(key, _)| to_owned(key.borrow()))
    {
        table.remove(oldest.borrow());
    }
    table.insert(to_owned(key), Window { start: now, failures: 1 });
}

/// The address a failure counts against: IPv4 as is (IPv4-mapped IPv6 included), IPv6 by /64.
fn address_key(addr: IpAddr) -> IpAddr {
    match addr.to_canonical() {
        IpAddr::V6(v6) => IpAddr::V6(Ipv6Addr::from_bits(v6.to_bits() & !u128::from(u64::MAX))),
        v4 => v4,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;

    const WINDOW: Duration = Duration::from_secs(300);

    fn ip(last: u8) -> IpAddr {
        IpAddr::V4(Ipv4Addr::new(192, 0, 2, last))
    }

    #[test]
    fn the_failure_after_the_limit_is_refused_until_the_window_ends() {
        let limiter = LoginLimiter::new(5, WINDOW);
        let t0 = Instant::now();
        for i in 0..5 {
            assert_eq!(limiter.check("alice", ip(1), t0 + Duration::from_secs(i)), Ok(()), "failure {i}");
            limiter.record_failure("alice", ip(1), t0 + Duration::from_secs(i));
        }
        let now = t0 + Duration::from_secs(10);
        let wait = limiter.check("alice", ip(1), now).unwrap_err();
        assert!(wait <= WINDOW && wait == WINDOW - Duration::from_secs(10), "{wait:?}");
        // The user is refused from any address.
        assert!(limiter.check("alice", ip(9), now).is_err());

        // Another user from another address is unaffected.
        assert_eq!(limiter.check("bob", ip(2), now), Ok(()));

        // The window passing clears it, and a failure then starts a new window.
        assert!(limiter.check("alice", ip(1), t0 + WINDOW - Duration::from_millis(1)).is_err());
        assert_eq!(limiter.check("alice", ip(1), t0 + WINDOW), Ok(()));
        limiter.record_failure("alice", ip(1), t0 + WINDOW);
        assert_eq!(limiter.check("alice", ip(1), t0 + WINDOW), Ok(()));
    }

    #[test]
    fn the_address_limit_trips_across_many_users() {
        let limiter = LoginLimiter::new(3, WINDOW);
        let now = Instant::now();
        for i in 0..12 {
            let user = format!("user{i}");
            assert_eq!(limiter.check(&user, ip(7), now), Ok(()), "failure {i}");
            limiter.record_failure(&user, ip(7), now);
            assert_eq!(limiter.check(&user, ip(8), now), Ok(()), "one failure per user is under its limit");
        }
        assert_eq!(limiter.check("someone-new", ip(7), now), Err(WINDOW));
        assert_eq!(limiter.check("someone-new", ip(8), now), Ok(()));
        // A success clears the user, not the address.
        limiter.record_success("user0");
        assert!(limiter.check("user0", ip(7), now).is_err());
        assert_eq!(limiter.check("someone-new", ip(7), now + WINDOW), Ok(()));
    }

    #[test]
    fn success_clears_the_users_failures() {
        let limiter = LoginLimiter::new(2, WINDOW);
        let now = Instant::now();
        limiter.record_failure("alice", ip(1), now);
        limiter.record_failure("alice", ip(1), now);
        assert!(limiter.check("alice", ip(2), now).is_err());
        limiter.record_success("alice");
        assert_eq!(limiter.check("alice", ip(2), now), Ok(()));
        // Counting starts over.
        limiter.record_failure("alice", ip(2), now);
        assert_eq!(limiter.check("alice", ip(2), now), Ok(()));
    }

    #[test]
    fn the_longer_of_the_user_and_address_waits_is_reported() {
        let limiter = LoginLimiter::new(1, WINDOW);
        let t0 = Instant::now();
        // The address's window starts at t0 with user0; alice's at t0 + 100.
        for i in 0..4 {
            limiter.record_failure(&format!("user{i}"), ip(1), t0);
        }
        limiter.record_failure("alice", ip(2), t0 + Duration::from_secs(100));
        let now = t0 + Duration::from_secs(150);
        assert_eq!(limiter.check("alice", ip(1), now), Err(Duration::from_secs(250)));
        assert_eq!(limiter.check("bob", ip(1), now), Err(Duration::from_secs(150)));
    }

    #[test]
    fn ipv6_counts_per_64_and_mapped_ipv4_as_ipv4() {
        let limiter = LoginLimiter::new(1, WINDOW);
        let now = Instant::now();
        let a: IpAddr = "2001:db8:1:2::1".parse().unwrap();
        for i in 0..4u16 {
            let addr = IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 1, 2, i, i, i, i + 7));
            limiter.record_failure(&format!("user{i}"), addr, now);
        }
        assert!(limiter.check("new", a, now).is_err(), "the /64 is over its limit");
        assert_eq!(limiter.check("new", "2001:db8:1:3::1".parse().unwrap(), now), Ok(()));

        for i in 0..4 {
            limiter.record_failure(&format!("v4user{i}"), "::ffff:198.51.100.4".parse().unwrap(), now);
        }
        assert!(limiter.check("new", "198.51.100.4".parse().unwrap(), now).is_err());
    }

    #[test]
    fn a_full_table_drops_expired_entries_then_the_oldest() {
        let limiter = LoginLimiter::new(1, WINDOW);
        let t0 = Instant::now();
        let addr = ip(1);
        limiter.record_failure("first", addr, t0);
        {
            let mut state = limiter.lock();
            for i in 1..MAX_ENTRIES {
                state.users.insert(format!("user{i}"), Window { start: t0 + Duration::from_secs(1), failures: 1 });
            }
        }
        // Full: the oldest entry ("first") makes room.
        let t1 = t0 + Duration::from_secs(2);
        limiter.record_failure("newcomer", addr, t1);
        assert_eq!(limiter.lock().users.len(), MAX_ENTRIES);
        assert_eq!(limiter.check("first", ip(9), t1), Ok(()));
        assert!(limiter.check("newcomer", ip(9), t1).is_err());

        // Once windows have ended, inserting into the full table clears them all.
        let later = t0 + WINDOW + Duration::from_secs(1);
        limiter.record_failure("late", ip(9), later);
        assert_eq!(limiter.lock().users.len(), 2, "newcomer's window is still open, and late");
    }

    #[test]
    fn the_limiter_is_send_and_sync() {
        fn assert_send_sync<T: Send + Sync>() {}
        assert_send_sync::<LoginLimiter>();
    }
}

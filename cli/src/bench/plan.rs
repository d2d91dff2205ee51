//! What load to offer, and when: stages of a constant arrival rate (open loop) or of a fixed
//! number of requests outstanding (closed loop), and the send times of an open-loop stage.

use std::fmt;
use std::time::Duration;

use crate::format::parse_duration;

/// The most requests per second a stage may ask for: far beyond what one process can send, so
/// only a typo reaches it.
const MAX_RATE_PER_SECOND: u64 = 1_000_000;

/// The most concurrent requests a closed-loop stage may ask for.
pub const MAX_CONCURRENCY: u32 = 100_000;

const NANOS_PER_SECOND: u128 = 1_000_000_000;

/// A rate in thousandths of a request per second, so that the send schedule is exact integer
/// arithmetic (`0.1rps` times 30 s is 3 requests, not 3.0000000000000004).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Rate {
    millis: u64,
}

impl Rate {
    pub const ZERO: Rate = Rate { millis: 0 };
    /// The rate of `stratus bench` without --rate, --concurrency or --stage.
    pub const DEFAULT: Rate = Rate { millis: 10_000 };

    /// `per_second` requests per second, to the thousandth.
    pub fn from_per_second(per_second: f64) -> Option<Rate> {
        if !per_second.is_finite() || per_second < 0.0 || per_second > MAX_RATE_PER_SECOND as f64 {
            return None;
        }
        // In range: the product fits a u64 with room to spare.
        let millis = (per_second * 1000.0).round() as u64;
        Some(Rate { millis })
    }

    pub fn per_second(self) -> f64 {
        self.millis as f64 / 1000.0
    }

    pub fn is_zero(self) -> bool {
        self.millis == 0
    }

    /// When the `i`-th request of a stage at this rate is due, from the stage's start:
    /// `i / rate`, rounded down to the nanosecond. Zero for a zero rate (which sends nothing).
    pub fn send_offset(self, i: u64) -> Duration {
        if self.millis == 0 {
            return Duration::ZERO;
        }
        let nanos = u128::from(i) * NANOS_PER_SECOND * 1000 / u128::from(self.millis);
        duration_from_nanos(nanos)
    }

    /// How many requests a stage at this rate sends in `duration`: one at every send offset
    /// strictly before the stage ends, so back-to-back stages never send one twice.
    pub fn sends_in(self, duration: Duration) -> u64 {
        // send_offset(i) < d  ⇔  i · 10¹² / millis < d (d whole nanoseconds)  ⇔  i < d · millis / 10¹²
        let scaled = duration.as_nanos() * u128::from(self.millis);
        let unit = NANOS_PER_SECOND * 1000;
        u64::try_from(scaled.div_ceil(unit)).unwrap_or(u64::MAX)
    }
}

impl fmt::Display for Rate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (whole, frac) = (self.millis / 1000, self.millis % 1000);
        if frac == 0 {
            write!(f, "{whole}rps")
        } else {
            let frac = format!("{frac:03}");
            write!(f, "{whole}.{}rps", frac.trim_end_matches('0'))
        }
    }
}

fn duration_from_nanos(nanos: u128) -> Duration {
    let secs = u64::try_from(nanos / NANOS_PER_SECOND).unwrap_or(u64::MAX);
    // The remainder of a division by 10⁹ fits a u32.
    Duration::new(secs, (nanos % NANOS_PER_SECOND) as u32)
}

/// The load of one stage.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Load {
    /// Requests sent on a fixed schedule, whatever the answers (open loop); zero is idle.
    Rate(Rate),
    /// This many requests outstanding at all times, each sent when the previous one of its
    /// worker is answered (closed loop); zero is idle.
    Concurrency(u32),
}

impl Load {
    pub fn is_idle(self) -> bool {
        match self {
            Load::Rate(r) => r.is_zero(),
            Load::Concurrency(c) => c == 0,
        }
    }
}

impl fmt::Display for Load {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            _ if self.is_idle() => f.write_str("idle"),
            Load::Rate(r) => r.fmt(f),
            Load::Concurrency(c) => write!(f, "{c} concurrent"),
        }
    }
}

/// `10rps`, `2.5rps`, `10` (requests per second), `20c` (20 concurrent requests), `0` (idle).
pub fn parse_load(s: &str) -> Result<Load, String> {
    let invalid = || format!("invalid load {s:?}: use a rate such as 50rps or a concurrency such as 20c");
    if let Some(n) = s.strip_suffix('c') {
        let n: u32 = n.parse().map_err(|_| invalid())?;
        if n > MAX_CONCURRENCY {
            return Err(format!("concurrency {n} is too high: at most {MAX_CONCURRENCY}"));
        }
        return Ok(Load::Concurrency(n));
    }
    let number = s.strip_suffix("rps").unwrap_or(s);
    // f64's parser takes "inf", "nan" and exponents; a rate is plain digits and one dot.
    if number.is_empty() || !number.chars().all(|c| c.is_ascii_digit() || c == '.') {
        return Err(invalid());
    }
    let per_second: f64 = number.parse().map_err(|_| invalid())?;
    let rate = Rate::from_per_second(per_second)
        .ok_or_else(|| format!("rate {s:?} is too high: at most {MAX_RATE_PER_SECOND}rps"))?;
    if rate.is_zero() && per_second > 0.0 {
        return Err(format!("rate {s:?} is too low: at least 0.001rps"));
    }
    Ok(Load::Rate(rate))
}

/// One stage of a run: a load held for a duration.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stage {
    pub duration: Duration,
    pub load: Load,
}

/// `DURATION:LOAD`, e.g. `30s:10rps`, `1m:20c`, `10s:0`.
pub fn parse_stage(s: &str) -> Result<Stage, String> {
    let Some((duration, load)) = s.split_once(':') else {
        return Err(format!("invalid stage {s:?}: use DURATION:LOAD, e.g. 30s:100rps or 1m:20c"));
    };
    let duration = parse_duration(duration)?;
    if duration.is_zero() {
        return Err(format!("invalid stage {s:?}: the duration must be more than zero"));
    }
    Ok(Stage { duration, load: parse_load(load)? })
}

/// The stages of a run, one after the other.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    stages: Vec<Stage>,
}

impl Plan {
    /// `None` when there are no stages.
    pub fn new(stages: Vec<Stage>) -> Option<Plan> {
        (!stages.is_empty()).then_some(Plan { stages })
    }

    pub fn stages(&self) -> &[Stage] {
        &self.stages
    }

    pub fn total_duration(&self) -> Duration {
        self.stages.iter().map(|s| s.duration).sum()
    }

    /// Each stage with the time it starts at, from the start of the run.
    pub fn schedule(&self) -> impl Iterator<Item = (Duration, &Stage)> {
        self.stages.iter().scan(Duration::ZERO, |start, stage| {
            let at = *start;
            *start += stage.duration;
            Some((at, stage))
        })
    }

    /// The index of the stage running `elapsed` into the run; the last one once all are over.
    pub fn stage_at(&self, elapsed: Duration) -> usize {
        self.schedule()
            .position(|(start, stage)| elapsed < start + stage.duration)
            .unwrap_or(self.stages.len().saturating_sub(1))
    }

    /// The most requests outstanding any closed-loop stage asks for.
    pub fn max_concurrency(&self) -> u32 {
        self.stages
            .iter()
            .filter_map(|s| match s.load {
                Load::Concurrency(c) => Some(c),
                Load::Rate(_) => None,
            })
            .max()
            .unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn rate(per_second: f64) -> Rate {
        Rate::from_per_second(per_second).unwrap()
    }

    #[test]
    fn loads_are_rates_or_concurrencies() {
        assert_eq!(parse_load("10rps").unwrap(), Load::Rate(rate(10.0)));
        assert_eq!(parse_load("10").unwrap(), Load::Rate(rate(10.0)));
        assert_eq!(parse_load("2.5rps").unwrap(), Load::Rate(rate(2.5)));
        assert_eq!(parse_load("20c").unwrap(), Load::Concurrency(20));
        assert!(parse_load("0").unwrap().is_idle());
        assert!(parse_load("0c").unwrap().is_idle());
        for bad in ["", "rps", "c", "-1", "ten", "1e3", "inf", "NaN", "1.2.3rps", "5x", "2.5c", "0.0001rps"] {
            assert!(parse_load(bad).is_err(), "{bad}");
        }
        assert!(parse_load("2000000rps").unwrap_err().contains("too high"));
        assert!(parse_load("200000c").unwrap_err().contains("too high"));
    }

    #[test]
    fn stages_are_a_duration_and_a_load() {
        let s = parse_stage("30s:10rps").unwrap();
        assert_eq!(s, Stage { duration: Duration::from_secs(30), load: Load::Rate(rate(10.0)) });
        let s = parse_stage("1m30s:20c").unwrap();
        assert_eq!(s, Stage { duration: Duration::from_secs(90), load: Load::Concurrency(20) });
        assert!(parse_stage("60s:0").unwrap().load.is_idle());
        for bad in ["30s", "30s:", ":10rps", "0s:10rps", "soon:10rps", "30s:fast"] {
            assert!(parse_stage(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn loads_print_as_they_are_written() {
        assert_eq!(parse_load("10rps").unwrap().to_string(), "10rps");
        assert_eq!(parse_load("0.25").unwrap().to_string(), "0.25rps");
        assert_eq!(parse_load("20c").unwrap().to_string(), "20 concurrent");
        assert_eq!(parse_load("0").unwrap().to_string(), "idle");
    }

    #[test]
    fn sends_are_evenly_spaced_from_the_start_of_the_stage() {
        let r = rate(4.0);
        let offsets: Vec<Duration> = (0..4).map(|i| r.send_offset(i)).collect();
        assert_eq!(offsets, [0, 250, 500, 750].map(Duration::from_millis));
        assert_eq!(rate(3.0).send_offset(1), Duration::from_nanos(333_333_333));
        assert_eq!(rate(0.5).send_offset(3), Duration::from_secs(6));
        assert_eq!(Rate::ZERO.send_offset(7), Duration::ZERO);
    }

    #[test]
    fn a_stage_sends_exactly_rate_times_duration_requests() {
        assert_eq!(rate(10.0).sends_in(Duration::from_secs(2)), 20);
        // Where floating point would say 3.0000000000000004 and send a fourth.
        assert_eq!(rate(0.1).sends_in(Duration::from_secs(30)), 3);
        assert_eq!(rate(3.0).sends_in(Duration::from_secs(1)), 3);
        // A partial interval still starts a request: at 0 and at 1/3 s.
        assert_eq!(rate(3.0).sends_in(Duration::from_millis(500)), 2);
        assert_eq!(rate(1000.0).sends_in(Duration::from_millis(1)), 1);
        assert_eq!(Rate::ZERO.sends_in(Duration::from_secs(60)), 0);
        // The last send is before the end of the stage.
        let r = rate(7.0);
        let d = Duration::from_secs(3);
        let n = r.sends_in(d);
        assert!(r.send_offset(n - 1) < d && r.send_offset(n) >= d);
    }

    #[test]
    fn a_plan_knows_which_stage_runs_when() {
        let stages = ["30s:10rps", "60s:500rps", "60s:0"].map(|s| parse_stage(s).unwrap());
        let plan = Plan::new(stages.to_vec()).unwrap();
        assert_eq!(plan.total_duration(), Duration::from_secs(150));
        let starts: Vec<u64> = plan.schedule().map(|(at, _)| at.as_secs()).collect();
        assert_eq!(starts, [0, 30, 90]);
        assert_eq!(plan.stage_at(Duration::ZERO), 0);
        assert_eq!(plan.stage_at(Duration::from_millis(29_999)), 0);
        assert_eq!(plan.stage_at(Duration::from_secs(30)), 1);
        assert_eq!(plan.stage_at(Duration::from_secs(149)), 2);
        assert_eq!(plan.stage_at(Duration::from_secs(500)), 2);
        assert_eq!(plan.max_concurrency(), 0);
        assert!(Plan::new(vec![]).is_none());
    }
}

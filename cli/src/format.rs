//! Times and durations as kubectl prints and parses them: ages (`5s`, `3m`, `2h`, `4d`),
//! timestamps, and `--timeout` values (`60s`, `2m`, `1h30m`).

use std::time::SystemTime;

use stratus_api::Timestamp;

/// How long ago `ts` was, in kubectl's short form; `<unknown>` when the object has no time.
pub fn age(ts: Option<&Timestamp>, now: SystemTime) -> String {
    match ts {
        Some(ts) if ts.seconds != 0 || ts.nanos != 0 => human_duration(unix_seconds(now) - ts.seconds),
        _ => "<unknown>".to_string(),
    }
}

/// A duration in seconds as kubectl's `duration.HumanDuration` writes it: precise when short,
/// coarse when long (`45s`, `2m30s`, `15m`, `3h10m`, `30h`, `4d5h`, `20d`, `2y30d`).
pub fn human_duration(seconds: i64) -> String {
    // Clocks of different machines disagree a little; a second in the future is "now".
    if seconds < -1 {
        return "<invalid>".to_string();
    }
    if seconds < 0 {
        return "0s".to_string();
    }
    if seconds < 120 {
        return format!("{seconds}s");
    }
    let minutes = seconds / 60;
    if minutes < 10 {
        return with_remainder(minutes, "m", seconds % 60, "s");
    }
    if minutes < 180 {
        return format!("{minutes}m");
    }
    let hours = minutes / 60;
    if hours < 8 {
        return with_remainder(hours, "h", minutes % 60, "m");
    }
    if hours < 48 {
        return format!("{hours}h");
    }
    let days = hours / 24;
    if hours < 24 * 8 {
        return with_remainder(days, "d", hours % 24, "h");
    }
    if hours < 24 * 365 * 2 {
        return format!("{days}d");
    }
    if hours < 24 * 365 * 8 {
        return with_remainder(days / 365, "y", days % 365, "d");
    }
    format!("{}y", days / 365)
}

fn with_remainder(major: i64, major_unit: &str, minor: i64, minor_unit: &str) -> String {
    if minor == 0 { format!("{major}{major_unit}") } else { format!("{major}{major_unit}{minor}{minor_unit}") }
}

pub use stratus_api::time::unix_seconds;

/// `2025-01-02T15:04:05Z`: RFC 3339 in UTC, to the second.
pub fn rfc3339(ts: &Timestamp) -> String {
    stratus_api::time::rfc3339(ts.seconds)
}

/// Go-style durations (`30s`, `2m`, `1h30m`), as kubectl reads them.
pub use stratus_api::duration::parse as parse_duration;

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use std::time::{Duration, UNIX_EPOCH};

    use super::*;

    #[test]
    fn ages_read_like_kubectl() {
        let cases = [
            (-5, "<invalid>"),
            (-1, "0s"),
            (0, "0s"),
            (5, "5s"),
            (119, "119s"),
            (120, "2m"),
            (150, "2m30s"),
            (599, "9m59s"),
            (600, "10m"),
            (3 * 3600 - 1, "179m"),
            (3 * 3600, "3h"),
            (3 * 3600 + 600, "3h10m"),
            (8 * 3600, "8h"),
            (30 * 3600, "30h"),
            (48 * 3600, "2d"),
            (4 * 86_400 + 5 * 3600, "4d5h"),
            (8 * 86_400, "8d"),
            (400 * 86_400, "400d"),
            (2 * 365 * 86_400 + 30 * 86_400, "2y30d"),
            (9 * 365 * 86_400, "9y"),
        ];
        for (secs, want) in cases {
            assert_eq!(human_duration(secs), want, "{secs}s");
        }
    }

    #[test]
    fn age_counts_from_the_timestamp_and_knows_when_there_is_none() {
        let now = UNIX_EPOCH + Duration::from_secs(1_000_000);
        let ts = Timestamp { seconds: 1_000_000 - 190, nanos: 0 };
        assert_eq!(age(Some(&ts), now), "3m10s");
        assert_eq!(age(None, now), "<unknown>");
        assert_eq!(age(Some(&Timestamp::default()), now), "<unknown>");
    }

    #[test]
    fn timestamps_print_as_rfc3339_utc() {
        assert_eq!(rfc3339(&Timestamp { seconds: 0, nanos: 0 }), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(&Timestamp { seconds: 951_782_400, nanos: 5 }), "2000-02-29T00:00:00Z");
        assert_eq!(rfc3339(&Timestamp { seconds: 1_735_830_245, nanos: 0 }), "2025-01-02T15:04:05Z");
        assert_eq!(rfc3339(&Timestamp { seconds: -1, nanos: 0 }), "1969-12-31T23:59:59Z");
    }
}

//! Wall-clock times as the API writes them: seconds since the Unix epoch, and RFC 3339 in UTC.
//! Shared by the CLI's columns, the API server's tokens and audit log, and the gateway.

use std::time::{SystemTime, UNIX_EPOCH};

/// Seconds since the Unix epoch (negative before it, which no clock here should say).
pub fn unix_seconds(t: SystemTime) -> i64 {
    match t.duration_since(UNIX_EPOCH) {
        Ok(d) => i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
        Err(e) => -i64::try_from(e.duration().as_secs()).unwrap_or(i64::MAX),
    }
}

/// Now, in seconds since the Unix epoch.
pub fn now_seconds() -> i64 {
    unix_seconds(SystemTime::now())
}

/// `2025-01-02T15:04:05Z`: RFC 3339 in UTC, to the second.
pub fn rfc3339(seconds: i64) -> String {
    let (date, secs) = date_of(seconds);
    format!("{date}T{:02}:{:02}:{:02}Z", secs / 3600, secs % 3600 / 60, secs % 60)
}

/// `2025-01-02T15:04:05.123Z`: RFC 3339 in UTC, to the millisecond.
pub fn rfc3339_millis(t: SystemTime) -> String {
    let millis = t.duration_since(UNIX_EPOCH).map(|d| d.subsec_millis()).unwrap_or(0);
    let (date, secs) = date_of(unix_seconds(t));
    format!("{date}T{:02}:{:02}:{:02}.{millis:03}Z", secs / 3600, secs % 3600 / 60, secs % 60)
}

/// `YYYY-MM-DD` of `seconds`, and the seconds into that day.
fn date_of(seconds: i64) -> (String, i64) {
    let (y, m, d) = civil_from_days(seconds.div_euclid(86_400));
    (format!("{y:04}-{m:02}-{d:02}"), seconds.rem_euclid(86_400))
}

/// The day number, counted from 1970-01-01, of a proleptic Gregorian date (Howard Hinnant's
/// `days_from_civil`, the inverse of [`civil_from_days`]). `m` is 1..=12.
pub fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let (m, d) = (i64::from(m), i64::from(d));
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// The proleptic Gregorian date of a day number counted from 1970-01-01 (Howard Hinnant's
/// `civil_from_days`, exact over the whole range of `i64` days that a timestamp can hold).
pub fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    // d is 1..=31 and m 1..=12 by construction.
    (y, u32::try_from(m).unwrap_or(1), u32::try_from(d).unwrap_or(1))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_are_civil() {
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(civil_from_days(20_791), (2026, 12, 4));
        assert_eq!(civil_from_days(11_016), (2000, 2, 29));
        for days in [-800_000, -1, 0, 59, 11_016, 20_791, 2_000_000] {
            let (y, m, d) = civil_from_days(days);
            assert_eq!(days_from_civil(y, m, d), days);
        }
        assert_eq!(rfc3339(86_399), "1970-01-01T23:59:59Z");
        let t = UNIX_EPOCH + std::time::Duration::from_millis(1_500);
        assert_eq!(rfc3339_millis(t), "1970-01-01T00:00:01.500Z");
    }
}

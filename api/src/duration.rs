//! Durations written as Go's `time.ParseDuration` reads them (and so kubectl's `--timeout` and
//! Knative's duration annotations such as `serving.knative.dev/progress-deadline`).

use std::time::Duration;

/// Parses a duration as Go's `time.ParseDuration` (and so kubectl's `--timeout`) does: a
/// sequence of decimal numbers, each with a unit (`ns`, `us`, `ms`, `s`, `m`, `h`), such as
/// `60s`, `2m`, `1h30m` or `1.5h`; `0` alone is allowed.
pub fn parse(s: &str) -> Result<Duration, String> {
    let invalid = || format!("invalid duration {s:?}: use a number and a unit, e.g. 30s, 2m or 1h30m");
    if s == "0" {
        return Ok(Duration::ZERO);
    }
    let mut rest = s;
    let mut total: u128 = 0;
    if rest.is_empty() {
        return Err(invalid());
    }
    while !rest.is_empty() {
        let number_len = rest.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(rest.len());
        let (number, after) = rest.split_at(number_len);
        let unit_len = after.find(|c: char| c.is_ascii_digit() || c == '.').unwrap_or(after.len());
        let (unit, after) = after.split_at(unit_len);
        let unit_nanos: u128 = match unit {
            "ns" => 1,
            "us" | "µs" => 1_000,
            "ms" => 1_000_000,
            "s" => 1_000_000_000,
            "m" => 60_000_000_000,
            "h" => 3_600_000_000_000,
            _ => return Err(invalid()),
        };
        let (int, frac) = number.split_once('.').unwrap_or((number, ""));
        if int.is_empty() && frac.is_empty() || frac.contains('.') {
            return Err(invalid());
        }
        let int: u128 = if int.is_empty() { 0 } else { int.parse().map_err(|_| invalid())? };
        let mut nanos = int.checked_mul(unit_nanos).ok_or_else(invalid)?;
        if !frac.is_empty() {
            let digits = u32::try_from(frac.len()).map_err(|_| invalid())?;
            let scale = 10u128.checked_pow(digits).ok_or_else(invalid)?;
            let frac: u128 = frac.parse().map_err(|_| invalid())?;
            nanos = nanos.checked_add(frac.checked_mul(unit_nanos).ok_or_else(invalid)? / scale).ok_or_else(invalid)?;
        }
        total = total.checked_add(nanos).ok_or_else(invalid)?;
        rest = after;
    }
    let secs = u64::try_from(total / 1_000_000_000).map_err(|_| invalid())?;
    // The remainder of a division by 1e9 fits in u32.
    let nanos = u32::try_from(total % 1_000_000_000).unwrap_or(0);
    Ok(Duration::new(secs, nanos))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse_as_go_does() {
        let ok = [
            ("0", Duration::ZERO),
            ("60s", Duration::from_secs(60)),
            ("2m", Duration::from_secs(120)),
            ("1h30m", Duration::from_secs(5400)),
            ("1.5h", Duration::from_secs(5400)),
            ("500ms", Duration::from_millis(500)),
            ("1m0.5s", Duration::from_millis(60_500)),
            (".5s", Duration::from_millis(500)),
            ("10us", Duration::from_micros(10)),
        ];
        for (s, want) in ok {
            assert_eq!(parse(s).unwrap(), want, "{s}");
        }
        for s in ["", "60", "s", "1x", "1h30", "-5s", "1..5s", "1.s5", "99999999999999999999999h"] {
            assert!(parse(s).is_err(), "{s} should not parse");
        }
        assert_eq!(
            parse("soon").unwrap_err(),
            r#"invalid duration "soon": use a number and a unit, e.g. 30s, 2m or 1h30m"#
        );
    }
}

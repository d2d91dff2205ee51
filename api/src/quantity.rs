//! Kubernetes resource quantities: `500m`, `2`, `1.5`, `512Mi`, `1G`, `1e3`.
//!
//! A quantity is kept exactly, as an integer count of nano-units, with the family of suffix it
//! was written in, and printed back in the canonical Kubernetes form of that family
//! (`500m` stays `500m`, `1536Mi` stays `1536Mi`, `1.5Gi` prints `1536Mi`, `0.5` prints `500m`).

use std::fmt;
use std::str::FromStr;

/// Why a string is not a quantity.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    #[error("{0:?} is not a quantity (expected a number with an optional suffix, e.g. 500m, 1.5, 512Mi, 2G)")]
    Syntax(String),
    #[error("{0:?} has an unknown suffix {1:?} (use n, u, m, k, M, G, T, P, E, Ki, Mi, Gi, Ti, Pi or Ei)")]
    Suffix(String, String),
    #[error("{0:?} is more precise than one nano-unit")]
    TooPrecise(String),
    #[error("{0:?} is too large")]
    TooLarge(String),
}

/// The family of suffix a quantity was written in; printing keeps it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// `Ki`, `Mi`, … (powers of 1024).
    BinarySi,
    /// `m`, `k`, `M`, … or none (powers of 1000), and exponents (`1e3`).
    DecimalSi,
}

/// An exact quantity.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Quantity {
    nanos: i128,
    format: Format,
}

const NANO: i128 = 1_000_000_000;

impl Quantity {
    /// The quantity in whole units, rounded up (as Kubernetes rounds resource values).
    pub fn ceil_units(&self) -> i128 {
        div_ceil(self.nanos, NANO)
    }

    /// The quantity in thousandths (e.g. millicores), rounded up.
    pub fn ceil_millis(&self) -> i128 {
        div_ceil(self.nanos, 1_000_000)
    }

    /// The quantity in nano-units, exactly.
    pub fn nanos(&self) -> i128 {
        self.nanos
    }

    pub fn format(&self) -> Format {
        self.format
    }

    pub fn is_zero(&self) -> bool {
        self.nanos == 0
    }

    pub fn is_negative(&self) -> bool {
        self.nanos < 0
    }

    /// A quantity of whole units.
    pub fn from_units(units: i128, format: Format) -> Quantity {
        Quantity { nanos: units.saturating_mul(NANO), format }
    }

    /// A quantity of thousandths (e.g. millicores).
    pub fn from_millis(millis: i128) -> Quantity {
        Quantity { nanos: millis.saturating_mul(1_000_000), format: Format::DecimalSi }
    }
}

fn div_ceil(a: i128, b: i128) -> i128 {
    let q = a / b;
    if a % b > 0 { q + 1 } else { q }
}

impl FromStr for Quantity {
    type Err = Error;

    fn from_str(s: &str) -> Result<Quantity, Error> {
        let syntax = || Error::Syntax(s.to_string());
        let (negative, rest) = match s.as_bytes().first() {
            Some(b'-') => (true, &s[1..]),
            Some(b'+') => (false, &s[1..]),
            _ => (false, s),
        };
        let number_len = rest.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(rest.len());
        let (number, suffix) = rest.split_at(number_len);
        let (whole, frac) = number.split_once('.').unwrap_or((number, ""));
        if (whole.is_empty() && frac.is_empty()) || frac.contains('.') {
            return Err(syntax());
        }
        // (multiplier numerator, power of ten to divide by) so that nanos = digits * mult / 10^frac_len.
        let (multiplier, format): (i128, Format) = match suffix {
            "" => (NANO, Format::DecimalSi),
            "n" => (1, Format::DecimalSi),
            "u" => (1_000, Format::DecimalSi),
            "m" => (1_000_000, Format::DecimalSi),
            "k" => (NANO * 1_000, Format::DecimalSi),
            "M" => (NANO * 1_000_000, Format::DecimalSi),
            "G" => (NANO * 1_000_000_000, Format::DecimalSi),
            "T" => (NANO * 1_000_000_000_000, Format::DecimalSi),
            "P" => (NANO * 1_000_000_000_000_000, Format::DecimalSi),
            "E" => (NANO * 1_000_000_000_000_000_000, Format::DecimalSi),
            "Ki" => (NANO << 10, Format::BinarySi),
            "Mi" => (NANO << 20, Format::BinarySi),
            "Gi" => (NANO << 30, Format::BinarySi),
            "Ti" => (NANO << 40, Format::BinarySi),
            "Pi" => (NANO << 50, Format::BinarySi),
            "Ei" => (NANO << 60, Format::BinarySi),
            other if other.starts_with(['e', 'E']) => {
                let exp: i32 = other[1..].parse().map_err(|_| syntax())?;
                if exp < -9 {
                    return Err(Error::TooPrecise(s.to_string()));
                }
                if exp > 18 {
                    return Err(Error::TooLarge(s.to_string()));
                }
                (10i128.pow((exp + 9) as u32), Format::DecimalSi)
            }
            other => return Err(Error::Suffix(s.to_string(), other.to_string())),
        };
        if whole.len() + frac.len() > 30 {
            return Err(Error::TooLarge(s.to_string()));
        }
        let digits: i128 = format!("{whole}{frac}").parse().map_err(|_| syntax())?;
        let scaled = digits.checked_mul(multiplier).ok_or_else(|| Error::TooLarge(s.to_string()))?;
        let divisor = 10i128.pow(frac.len() as u32);
        if scaled % divisor != 0 {
            return Err(Error::TooPrecise(s.to_string()));
        }
        let nanos = scaled / divisor;
        Ok(Quantity { nanos: if negative { -nanos } else { nanos }, format })
    }
}

impl fmt::Display for Quantity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let sign = if self.nanos < 0 { "-" } else { "" };
        let n = self.nanos.unsigned_abs();
        if n == 0 {
            return f.write_str("0");
        }
        if self.format == Format::BinarySi && n.is_multiple_of(NANO as u128) {
            let units = n / NANO as u128;
            let suffixes = ["", "Ki", "Mi", "Gi", "Ti", "Pi", "Ei"];
            let mut i = 0;
            let mut v = units;
            while i + 1 < suffixes.len() && v.is_multiple_of(1024) {
                v /= 1024;
                i += 1;
            }
            return write!(f, "{sign}{v}{}", suffixes[i]);
        }
        // Decimal: the largest suffix that keeps the number whole.
        let suffixes = ["n", "u", "m", "", "k", "M", "G", "T", "P", "E"];
        let mut i = 0;
        let mut v = n;
        while i + 1 < suffixes.len() && v.is_multiple_of(1000) {
            v /= 1000;
            i += 1;
        }
        write!(f, "{sign}{v}{}", suffixes[i])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn q(s: &str) -> Quantity {
        s.parse().unwrap_or_else(|e| panic!("{s}: {e}"))
    }

    #[test]
    fn canonical_forms_print_back_exactly() {
        for s in ["500m", "1", "2", "512Mi", "1Gi", "100k", "3M", "250u", "7n", "1536Mi", "0", "64Ki", "1500m"] {
            assert_eq!(q(s).to_string(), s);
        }
    }

    #[test]
    fn other_forms_print_canonically() {
        assert_eq!(q("0.5").to_string(), "500m");
        assert_eq!(q("1.5Gi").to_string(), "1536Mi");
        assert_eq!(q("1000").to_string(), "1k");
        assert_eq!(q("1e3").to_string(), "1k");
        assert_eq!(q("1000m").to_string(), "1");
        assert_eq!(q("+2").to_string(), "2");
        assert_eq!(q("-500m").to_string(), "-500m");
        assert_eq!(q("0.1Ki").to_string(), "102400m");
    }

    #[test]
    fn values() {
        assert_eq!(q("500m").ceil_millis(), 500);
        assert_eq!(q("1.5").ceil_millis(), 1500);
        assert_eq!(q("512Mi").ceil_units(), 512 * 1024 * 1024);
        assert_eq!(q("1G").ceil_units(), 1_000_000_000);
        assert_eq!(q("1m").ceil_units(), 1);
        assert_eq!(q("100u").ceil_millis(), 1);
    }

    #[test]
    fn rejects_garbage() {
        for s in ["", "abc", "12XB", "1.2.3", "m", ".", "1 Gi", "1e", "1e99", "--1", "0.0000000001", "1mi"] {
            assert!(s.parse::<Quantity>().is_err(), "{s:?} parsed");
        }
        assert!(matches!("12XB".parse::<Quantity>(), Err(Error::Suffix(_, _))));
        assert!(matches!("99999999999999999999999999999999E".parse::<Quantity>(), Err(Error::TooLarge(_))));
    }
}

//! The shapes of strings the API accepts, as regular expressions in the common subset of
//! ECMA-262 (what the OpenAPI document states) and Rust's `regex` (what the server checks): no
//! look-around, no back-references, `^…$` anchoring the whole value.
//!
//! Names, label keys and values are checked by the hand-written functions of
//! [`crate::validation`]; their patterns here say the same and a test holds the two together.
//! The selectors are checked with these very patterns (see [`crate::selector`]), so what the
//! document promises and what the server takes cannot drift apart.

use std::sync::LazyLock;

use regex::Regex;

/// An RFC 1123 DNS label (at most 63 characters): namespaces, services, tenants, nodes.
pub const DNS_LABEL: &str = "^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$";

/// An RFC 1123 DNS subdomain: dot-separated DNS labels (the document adds `maxLength: 253`).
pub const DNS_SUBDOMAIN: &str = "^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?)*$";

/// A label, annotation or finalizer key: an optional DNS-subdomain prefix and `/`, then a name
/// of at most 63 letters, digits, `-`, `_` and `.`, starting and ending with a letter or digit.
pub const QUALIFIED_NAME: &str = "^([a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?)*/)?[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?$";

/// A label value: empty, or at most 63 letters, digits, `-`, `_` and `.`, starting and ending
/// with a letter or digit.
pub const LABEL_VALUE: &str = "^([A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?)?$";

/// A resource version as the server issues them (a store revision).
pub const RESOURCE_VERSION: &str = "^[0-9]{1,18}$";

/// The alternatives of a quantity without its sign: a subset of the Kubernetes notation in
/// which no suffix overflows or needs rounding (up to 15 whole digits and nine decimals with no
/// suffix, as a number in a manifest is written; six whole digits and three decimals before
/// `k` … `Ei`).
macro_rules! quantity_alternatives {
    () => {
        concat!(
            "([0-9]{1,15}(\\.[0-9]{0,9})?|\\.[0-9]{1,9})",
            "|([0-9]{1,15}(\\.[0-9]{0,6})?|\\.[0-9]{1,6})m",
            "|([0-9]{1,15}(\\.[0-9]{0,3})?|\\.[0-9]{1,3})u",
            "|[0-9]{1,15}n",
            "|([0-9]{1,6}(\\.[0-9]{0,3})?|\\.[0-9]{1,3})(k|M|G|T|P|E|Ki|Mi|Gi|Ti|Pi|Ei)",
        )
    };
}

/// A quantity the server reads exactly (see `quantity_alternatives`).
pub const QUANTITY: &str = concat!("^[+-]?(", quantity_alternatives!(), ")$");

/// A quantity above zero (requests, limits, quotas): [`QUANTITY`] without a `-` and with a
/// digit other than 0. It looks ahead, which ECMA-262 allows; the server parses quantities
/// itself and never matches this pattern.
pub const POSITIVE_QUANTITY: &str = concat!("^\\+?(?=[^1-9]*[1-9])(", quantity_alternatives!(), ")$");

/// Whether `s` is a resource version of [`RESOURCE_VERSION`]'s shape (digits only: `+5` would
/// parse as a number).
pub fn is_resource_version(s: &str) -> bool {
    (1..=18).contains(&s.len()) && s.bytes().all(|b| b.is_ascii_digit())
}

/// A continue token of a paged list: the revision, `.`, and the key it goes on after
/// (see the API server's registry).
pub const CONTINUE_TOKEN: &str = "^[0-9]{1,18}\\.[-a-z0-9./]*$";

// The selector grammars, built from their parts (spaces are allowed around every token).
const SELECTOR_KEY: &str = "[-A-Za-z0-9_./]+";
const SELECTOR_VALUE: &str = "[-A-Za-z0-9_.]*";
const SET_VALUE: &str = "[-A-Za-z0-9_.]+";
const FIELD_PATH: &str = "[A-Za-z0-9]+(\\.[A-Za-z0-9]+)*";
const FIELD_VALUE: &str = "[-A-Za-z0-9_.:/]*";

/// A label selector as Kubernetes writes them: requirements joined by `,`, each `key`, `!key`,
/// `key=value`, `key==value`, `key!=value`, `key in (v1,v2)` or `key notin (v1,v2)`.
pub static LABEL_SELECTOR: LazyLock<String> = LazyLock::new(|| {
    let (k, v, s) = (SELECTOR_KEY, SELECTOR_VALUE, SET_VALUE);
    let set = format!("\\( *{s}( *, *{s})* *\\)");
    let req = format!("(!? *{k}|{k} *(=|==|!=) *{v}|{k} +(in|notin) +{set})");
    format!("^( *{req} *(, *{req} *)*)?$")
});

/// A field selector: `path=value`, `path==value` or `path!=value` joined by `,`, where a path is
/// dot-separated field names such as `spec.nodeName`.
pub static FIELD_SELECTOR: LazyLock<String> = LazyLock::new(|| {
    let term = format!("{FIELD_PATH} *(=|==|!=) *{FIELD_VALUE}");
    format!("^( *{term} *(, *{term} *)*)?$")
});

static LABEL_SELECTOR_RE: LazyLock<Option<Regex>> = LazyLock::new(|| Regex::new(&LABEL_SELECTOR).ok());
static FIELD_SELECTOR_RE: LazyLock<Option<Regex>> = LazyLock::new(|| Regex::new(&FIELD_SELECTOR).ok());

static CONTINUE_TOKEN_RE: LazyLock<Option<Regex>> = LazyLock::new(|| Regex::new(CONTINUE_TOKEN).ok());

/// Whether `s` has the shape of a continue token.
pub fn is_continue_token(s: &str) -> bool {
    CONTINUE_TOKEN_RE.as_ref().is_some_and(|re| re.is_match(s))
}

/// Whether `s` is a label selector of [`LABEL_SELECTOR`]'s grammar.
pub fn is_label_selector(s: &str) -> bool {
    LABEL_SELECTOR_RE.as_ref().is_some_and(|re| re.is_match(s))
}

/// Whether `s` is a field selector of [`FIELD_SELECTOR`]'s grammar.
pub fn is_field_selector(s: &str) -> bool {
    FIELD_SELECTOR_RE.as_ref().is_some_and(|re| re.is_match(s))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::validation::{dns_label, dns_subdomain, label_value, qualified_name};

    fn re(p: &str) -> Regex {
        Regex::new(p).unwrap_or_else(|e| panic!("{p}: {e}"))
    }

    /// Every string of up to `len` characters over `alphabet`.
    fn strings(alphabet: &str, len: usize) -> Vec<String> {
        let mut all = vec![String::new()];
        let mut last = vec![String::new()];
        for _ in 0..len {
            last = last.iter().flat_map(|s| alphabet.chars().map(move |c| format!("{s}{c}"))).collect();
            all.extend(last.iter().cloned());
        }
        all
    }

    #[test]
    fn the_name_patterns_say_what_the_validators_check() {
        type Validator = fn(&str) -> Result<(), String>;
        let cases: [(&str, Validator); 4] = [
            (DNS_LABEL, dns_label),
            (DNS_SUBDOMAIN, dns_subdomain),
            (QUALIFIED_NAME, qualified_name),
            (LABEL_VALUE, label_value),
        ];
        let mut inputs = strings("aZ0-._/ ", 4);
        inputs.extend([
            "a".repeat(63),
            "a".repeat(64),
            format!("x.{}", "b".repeat(63)),
            format!("{}/a", "b".repeat(64)),
        ]);
        for (pattern, validator) in cases {
            let re = re(pattern);
            for s in &inputs {
                assert_eq!(re.is_match(s), validator(s).is_ok(), "{pattern} vs the validator on {s:?}");
            }
        }
    }

    #[test]
    fn quantities_of_the_pattern_parse_exactly() {
        use crate::quantity::Quantity;
        let re = re(QUANTITY);
        let extremes = [
            "999999Ei",
            "999999.999E",
            "999999999999999.999999999",
            "999999999999999.999999m",
            "999999999999999.999u",
            "999999999999999n",
        ];
        for s in strings("1.0-mKin", 4).iter().chain(&extremes.map(String::from)).chain(&["1.5n".to_string()]) {
            if re.is_match(s) {
                assert!(s.parse::<Quantity>().is_ok(), "{s:?} matches {QUANTITY} but does not parse");
            }
        }
        assert!(re.is_match("100m") && re.is_match("1.5Gi") && re.is_match("-2") && !re.is_match("1e3"));
        for s in extremes {
            assert!(re.is_match(s), "{s}");
        }
    }

    #[test]
    fn selectors_of_the_grammar_parse_and_others_do_not() {
        for good in [
            "",
            "app",
            "!app",
            "app=web",
            "app==web",
            "app!=web,tier",
            " app = web , x in (a, b)",
            "k notin (a)",
            "example.com/k=v",
            "a=",
        ] {
            assert!(is_label_selector(good), "{good:?}");
            assert!(crate::selector::LabelSelector::parse(good).is_ok(), "{good:?}");
        }
        for bad in ["=", "app=web=x", "a in ()", "a in b", ",", "app,", "a b", "a=\u{85}", "(a)", "a in (b,)", "a=b\n"]
        {
            assert!(!is_label_selector(bad), "{bad:?}");
        }
        for good in ["", "spec.nodeName=node-1", "metadata.name!=x, status.phase==Running", "a="] {
            assert!(is_field_selector(good), "{good:?}");
        }
        for bad in ["spec.", "=x", "a=b,", "a", "a=b=c", "a=\u{7}"] {
            assert!(!is_field_selector(bad), "{bad:?}");
        }
    }
}

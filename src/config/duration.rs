//! The one duration syntax of the configuration, for every duration key and
//! its `REGATE_...` override: a whole number of seconds (`90`, as older
//! configurations wrote them), or a number with a unit, `"250ms"`, `"90s"`,
//! `"15m"`, `"12h"`, `"30d"`, units combinable (`"1h 30m"`), as the
//! `humantime` crate reads them.
//!
//! Owns [`RawDuration`] (the serde type of a duration key in the raw
//! structs), [`parse`] and [`read`] (value, default and lower bound into a
//! [`Duration`], or a [`Problem`] naming the key, the value and the accepted
//! forms).

use std::time::Duration;

use serde::Deserialize;

use super::problem::Problem;

/// The accepted forms, for error messages.
pub const FORMS: &str = "write whole seconds (90) or a number with a unit: \"250ms\", \"90s\", \"15m\", \"12h\", \"30d\" (units may be combined: \"1h 30m\")";

/// A duration key as written: an integer (seconds) or a string.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(untagged)]
pub enum RawDuration {
    Secs(i64),
    Text(String),
}

/// Parses a duration: bare digits are seconds, anything else goes to
/// `humantime` (`"90s"`, `"15m"`, `"12h"`, `"30d"`, `"1h 30m"`, `"250ms"`).
pub fn parse(text: &str) -> Result<Duration, String> {
    let t = text.trim();
    if !t.is_empty() && t.bytes().all(|b| b.is_ascii_digit()) {
        return t
            .parse::<u64>()
            .map(Duration::from_secs)
            .map_err(|_| format!("{text:?} is too large"));
    }
    humantime::parse_duration(t).map_err(|e| format!("{text:?} is not a duration ({e}); {FORMS}"))
}

fn from_raw(raw: &RawDuration) -> Result<Duration, String> {
    match raw {
        RawDuration::Secs(s) => u64::try_from(*s)
            .map(Duration::from_secs)
            .map_err(|_| format!("{s} is negative; {FORMS}")),
        RawDuration::Text(t) => parse(t),
    }
}

/// The value of duration key `key`: `default` when unset; at least `min`
/// (else a problem, and the default).
pub fn read(
    key: &str,
    value: Option<&RawDuration>,
    default: Duration,
    min: Duration,
    problems: &mut Vec<Problem>,
) -> Duration {
    let Some(raw) = value else {
        return default;
    };
    match from_raw(raw) {
        Ok(d) if d >= min => d,
        Ok(_) => {
            problems.push(Problem::new(
                key,
                format!(
                    "{} is too short; use at least {}",
                    show(raw),
                    humantime::format_duration(min)
                ),
            ));
            default
        }
        Err(m) => {
            problems.push(Problem::new(key, m));
            default
        }
    }
}

fn show(raw: &RawDuration) -> String {
    match raw {
        RawDuration::Secs(s) => s.to_string(),
        RawDuration::Text(t) => format!("{t:?}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn every_form_reads() {
        let cases = [
            ("90", 90),
            ("90s", 90),
            ("15m", 900),
            ("12h", 12 * 3600),
            ("30d", 30 * 86400),
            ("1h 30m", 5400),
            (" 45 ", 45),
        ];
        for (text, secs) in cases {
            assert_eq!(parse(text), Ok(Duration::from_secs(secs)), "{text}");
        }
        assert_eq!(parse("250ms"), Ok(Duration::from_millis(250)));
        for bad in ["", "5 parsecs", "-5", "1.5.2h", "h"] {
            let e = parse(bad).unwrap_err();
            assert!(
                e.contains(&format!("{bad:?}")) && e.contains("\"15m\""),
                "{e}"
            );
        }
    }

    #[test]
    fn read_names_the_key_the_value_and_the_forms() {
        let mut p = Vec::new();
        let d = Duration::from_secs(7);
        let one = Duration::from_secs(1);
        assert_eq!(read("a.b", None, d, one, &mut p), d);
        assert_eq!(
            read("a.b", Some(&RawDuration::Secs(30)), d, one, &mut p),
            Duration::from_secs(30)
        );
        assert_eq!(
            read("a.b", Some(&RawDuration::Text("2m".into())), d, one, &mut p),
            Duration::from_secs(120)
        );
        assert!(p.is_empty());
        read("a.neg", Some(&RawDuration::Secs(-1)), d, one, &mut p);
        read(
            "a.word",
            Some(&RawDuration::Text("soon".into())),
            d,
            one,
            &mut p,
        );
        read("a.zero", Some(&RawDuration::Secs(0)), d, one, &mut p);
        let keys: Vec<_> = p.iter().map(|p| p.key.as_str()).collect();
        assert_eq!(keys, ["a.neg", "a.word", "a.zero"]);
        assert!(p[1].message.contains("\"soon\"") && p[1].message.contains("\"30d\""));
        assert!(p[2].message.contains("at least 1s"), "{}", p[2].message);
    }

    proptest! {
        #[test]
        fn seconds_and_units_agree(n in 0u64..1_000_000) {
            let secs = Duration::from_secs(n);
            prop_assert_eq!(parse(&n.to_string()), Ok(secs));
            prop_assert_eq!(parse(&format!("{n}s")), Ok(secs));
            prop_assert_eq!(parse(&format!("{n}m")), Ok(secs * 60));
            prop_assert_eq!(parse(&format!("{n}d")), Ok(secs * 86400));
        }

        #[test]
        fn never_panics(s in "\\PC*") {
            let _ = parse(&s);
        }
    }
}

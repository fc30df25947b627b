//! Durations as flags and config keys spell them: one parser and one set of
//! bounds, so `--timeout 5m` and `timeout: 5m` mean the same, and no value a
//! user can type reaches `Duration` or `Instant` arithmetic that overflows.

use std::fmt;
use std::time::Duration;

use serde::de::{self, Deserializer, Visitor};

/// The longest duration any flag or key accepts. Every wait staticpin makes
/// is seconds to minutes; a day is far above any real need and far below
/// where `Instant + Duration` could overflow.
pub const MAX: Duration = Duration::from_secs(24 * 60 * 60);

/// How a duration is written, for messages and help.
pub const SYNTAX: &str = "seconds or a number with a unit, e.g. 30, 2.5, 500ms, 30s, 5m or 1h";

/// Whether zero is a meaningful value.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Floor {
    /// A timeout: zero would fail every attempt at once.
    Positive,
    /// A delay: zero means "do not wait".
    Zero,
}

/// A timeout: more than zero, at most [`MAX`]. Plain numbers are seconds and
/// may have a fraction; `ms`, `s`, `m` and `h` are units.
pub fn parse(text: &str) -> Result<Duration, String> {
    parse_with(text, Floor::Positive)
}

/// A delay: like [`parse`], but zero is allowed and means no wait.
pub fn parse_delay(text: &str) -> Result<Duration, String> {
    parse_with(text, Floor::Zero)
}

fn parse_with(text: &str, floor: Floor) -> Result<Duration, String> {
    let (number, unit) = [("ms", 0.001), ("s", 1.0), ("m", 60.0), ("h", 3600.0)]
        .into_iter()
        .find_map(|(suffix, unit)| text.strip_suffix(suffix).map(|n| (n, unit)))
        .unwrap_or((text, 1.0));
    // f64's grammar also takes "inf", "NaN" and "1e20"; the bounds below
    // turn those into messages instead of a panic in `Duration`.
    match number.parse::<f64>() {
        Ok(n) if !number.is_empty() => bounded(n * unit, text, floor),
        _ => Err(format!("expected {SYNTAX}, got {text:?}")),
    }
}

fn bounded(secs: f64, shown: &str, floor: Floor) -> Result<Duration, String> {
    if secs > MAX.as_secs_f64() {
        return Err(format!("must be at most 1 day (24h), got {shown}"));
    }
    match floor {
        _ if secs.is_nan() && floor == Floor::Zero => {
            return Err(format!("must not be negative, got {shown}"))
        }
        Floor::Positive if secs.is_nan() || secs <= 0.0 => {
            return Err(format!("must be positive, got {shown}"))
        }
        Floor::Zero if secs < 0.0 => return Err(format!("must not be negative, got {shown}")),
        _ => {}
    }
    match Duration::try_from_secs_f64(secs) {
        Ok(d) if floor == Floor::Zero || !d.is_zero() => Ok(d),
        _ => Err(format!("must be positive, got {shown}")),
    }
}

/// The same bounds for a timeout that was built in code rather than parsed.
pub(crate) fn check_timeout(d: Duration) -> Result<Duration, String> {
    if d.is_zero() {
        Err("must be positive, got 0".into())
    } else if d > MAX {
        Err(format!("must be at most 1 day (24h), got {d:?}"))
    } else {
        Ok(d)
    }
}

/// serde `deserialize_with` for an optional timeout key: a YAML number
/// (seconds) or a string in [`parse`]'s syntax. Errors are raised while the
/// value is read, so they carry its line and column.
pub(crate) fn deserialize_timeout<'de, D: Deserializer<'de>>(
    d: D,
) -> Result<Option<Duration>, D::Error> {
    d.deserialize_option(OptionalDuration(Floor::Positive))
}

struct OptionalDuration(Floor);

impl<'de> Visitor<'de> for OptionalDuration {
    type Value = Option<Duration>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(SYNTAX)
    }

    fn visit_none<E: de::Error>(self) -> Result<Self::Value, E> {
        Ok(None)
    }

    fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
        Ok(None)
    }

    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_any(DurationValue(self.0)).map(Some)
    }
}

struct DurationValue(Floor);

impl Visitor<'_> for DurationValue {
    type Value = Duration;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(SYNTAX)
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Duration, E> {
        // Exact for every value up to MAX; larger ones only need to stay large.
        bounded(v as f64, &v.to_string(), self.0).map_err(E::custom)
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Duration, E> {
        bounded(v as f64, &v.to_string(), self.0).map_err(E::custom)
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Duration, E> {
        bounded(v, &v.to_string(), self.0).map_err(E::custom)
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Duration, E> {
        parse_with(v, self.0).map_err(E::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepted() {
        for (text, want) in [
            ("30", Duration::from_secs(30)),
            ("2.5", Duration::from_millis(2500)),
            (".5", Duration::from_millis(500)),
            ("500ms", Duration::from_millis(500)),
            ("30s", Duration::from_secs(30)),
            ("5m", Duration::from_secs(300)),
            ("1.5m", Duration::from_secs(90)),
            ("1h", Duration::from_secs(3600)),
            ("24h", MAX),
            ("86400", MAX),
            ("1e3", Duration::from_secs(1000)),
        ] {
            assert_eq!(parse(text), Ok(want), "{text}");
            assert_eq!(parse_delay(text), Ok(want), "{text}");
        }
        assert_eq!(parse_delay("0"), Ok(Duration::ZERO));
        assert_eq!(parse_delay("0s"), Ok(Duration::ZERO));
    }

    #[test]
    fn refused_with_a_reason() {
        for (text, why) in [
            ("1e20", "at most 1 day"),
            ("86401", "at most 1 day"),
            ("24.01h", "at most 1 day"),
            ("1e400", "at most 1 day"),
            ("inf", "at most 1 day"),
            ("infs", "at most 1 day"),
            ("NaN", "must be positive"),
            ("0", "must be positive"),
            ("0ms", "must be positive"),
            ("1e-12", "must be positive"),
            ("-1", "must be positive"),
            ("-0", "must be positive"),
            ("", "expected seconds"),
            ("s", "expected seconds"),
            ("ms", "expected seconds"),
            ("30 s", "expected seconds"),
            (" 30", "expected seconds"),
            ("30sec", "expected seconds"),
            ("1d", "expected seconds"),
            ("5M", "expected seconds"),
            ("soon", "expected seconds"),
        ] {
            let err = parse(text).unwrap_err();
            assert!(err.contains(why), "{text:?}: {err}");
        }
        assert!(parse_delay("-1")
            .unwrap_err()
            .contains("must not be negative"));
        assert!(parse_delay("NaN")
            .unwrap_err()
            .contains("must not be negative"));
        assert!(parse_delay("1e20").unwrap_err().contains("at most 1 day"));
    }
}

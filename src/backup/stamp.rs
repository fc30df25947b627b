//! Run names: the UTC start time as `YYYYMMDDTHHMMSS.ffffffZ`.
//!
//! Fixed width, so name order is time order and pruning needs no date
//! library; a name parses only if formatting its instant gives it back.

use std::time::{SystemTime, UNIX_EPOCH};

pub(crate) fn micros_since_epoch(t: SystemTime) -> u64 {
    // A clock before 1970 is broken; clamping keeps names valid and sorted.
    t.duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX))
}

/// `YYYYMMDDTHHMMSS.ffffffZ` in UTC.
pub fn format_timestamp(t: SystemTime) -> String {
    format_micros(micros_since_epoch(t))
}

pub(crate) fn format_micros(micros: u64) -> String {
    let secs = micros / 1_000_000;
    let frac = micros % 1_000_000;
    let days = secs / 86_400;
    let rem = secs % 86_400;
    let (y, m, d) = civil_from_days(days as i64);
    format!(
        "{y:04}{m:02}{d:02}T{:02}{:02}{:02}.{frac:06}Z",
        rem / 3600,
        rem / 60 % 60,
        rem % 60
    )
}

/// Microseconds since the epoch for a run directory name, or `None` if the
/// name is not exactly what [`format_micros`] would produce.
pub(crate) fn parse_run_name(name: &str) -> Option<u64> {
    let b = name.as_bytes();
    if b.len() != 23 || b[8] != b'T' || b[15] != b'.' || b[22] != b'Z' {
        return None;
    }
    let num = |from: usize, to: usize| -> Option<u64> {
        let digits = &b[from..to];
        if !digits.iter().all(u8::is_ascii_digit) {
            return None;
        }
        std::str::from_utf8(digits).ok()?.parse().ok()
    };
    let (y, mo, d) = (num(0, 4)?, num(4, 6)?, num(6, 8)?);
    let (h, mi, s, us) = (num(9, 11)?, num(11, 13)?, num(13, 15)?, num(16, 22)?);
    if !(1..=12).contains(&mo) || !(1..=31).contains(&d) || h > 23 || mi > 59 || s > 59 {
        return None;
    }
    let days = u64::try_from(days_from_civil(y as i64, mo as u32, d as u32)).ok()?;
    let micros = ((days * 86_400 + h * 3600 + mi * 60 + s) * 1_000_000) + us;
    // Round-tripping rejects dates like Feb 30 that the ranges let through.
    (format_micros(micros) == name).then_some(micros)
}

/// Days since 1970-01-01 to (year, month, day) in the proleptic Gregorian
/// calendar. Howard Hinnant's `civil_from_days`: eras of 400 years, with
/// years starting in March so the leap day falls at the end.
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = (if mp < 10 { mp + 3 } else { mp - 9 }) as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

/// Inverse of [`civil_from_days`].
fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let mp = i64::from((m + 9) % 12);
    let doy = (153 * mp + 2) / 5 + i64::from(d) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn at(secs: u64, micros: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(secs) + Duration::from_micros(micros)
    }

    #[test]
    fn timestamps_for_known_instants() {
        let cases = [
            (0, 0, "19700101T000000.000000Z"),
            (951_782_400, 0, "20000229T000000.000000Z"),
            (951_868_800, 0, "20000301T000000.000000Z"),
            (1_709_251_199, 999_999, "20240229T235959.999999Z"),
            (1_795_807_800, 123_456, "20261127T193000.123456Z"),
            (4_107_542_400, 0, "21000301T000000.000000Z"),
            (253_402_300_799, 1, "99991231T235959.000001Z"),
        ];
        for (secs, micros, expected) in cases {
            assert_eq!(format_timestamp(at(secs, micros)), expected);
            assert_eq!(parse_run_name(expected), Some(secs * 1_000_000 + micros));
        }
        assert_eq!(
            format_timestamp(UNIX_EPOCH - Duration::from_secs(1)),
            "19700101T000000.000000Z"
        );
    }

    #[test]
    fn civil_conversion_round_trips_day_by_day() {
        let mut prev = civil_from_days(-1);
        assert_eq!(prev, (1969, 12, 31));
        for days in 0..=2_932_896 {
            let (y, m, d) = civil_from_days(days);
            assert_eq!(days_from_civil(y, m, d), days);
            let next_day = (y, m, d) > prev && (d == prev.2 + 1 || d == 1);
            assert!(next_day, "{prev:?} -> {:?}", (y, m, d));
            prev = (y, m, d);
        }
        assert_eq!(prev, (9999, 12, 31));
    }

    #[test]
    fn only_our_timestamps_parse_as_run_names() {
        for bad in [
            "latest",
            "20261127T193000.123456Z-2",
            "20261127T193000.123456",
            "20261327T193000.123456Z",
            "20260230T000000.000000Z",
            "20261127T246000.000000Z",
            "2026112 T193000.123456Z",
            "+0261127T193000.123456Z",
        ] {
            assert_eq!(parse_run_name(bad), None, "{bad}");
        }
    }
}

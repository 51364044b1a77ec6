//! Times as people read and type them: UTC, `2026-12-03T16:40:12Z`. The
//! CLI's tables and the console show times this way, and the console's
//! filters read them back.

use crate::queue::Millis;

/// `ms` since the epoch as `YYYY-MM-DDTHH:MM:SSZ`.
pub fn utc(ms: Millis) -> String {
    let secs = ms.div_euclid(1000);
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    let (y, m, d) = civil_from_days(days);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// `YYYY-MM-DD`, `YYYY-MM-DDTHH:MM` or `YYYY-MM-DDTHH:MM:SS`, read as UTC
/// (a trailing `Z` and a space instead of `T` are accepted; an HTML
/// `datetime-local` field sends the second form), as epoch milliseconds.
pub fn parse_utc(text: &str) -> Option<Millis> {
    let text = text.trim().trim_end_matches(['Z', 'z']);
    let (date, time) = match text.split_once(['T', 't', ' ']) {
        Some((d, t)) => (d, t),
        None => (text, "00:00"),
    };
    let num = |s: &str, len: usize| -> Option<i64> {
        (s.len() == len && s.bytes().all(|b| b.is_ascii_digit()))
            .then(|| s.parse().ok())
            .flatten()
    };
    let mut d = date.split('-');
    let (y, m, day) = (num(d.next()?, 4)?, num(d.next()?, 2)?, num(d.next()?, 2)?);
    if d.next().is_some() || !(1..=12).contains(&m) || !(1..=31).contains(&day) {
        return None;
    }
    let mut t = time.split(':');
    let (h, min) = (num(t.next()?, 2)?, num(t.next()?, 2)?);
    let s = match t.next() {
        Some(s) => num(s, 2)?,
        None => 0,
    };
    if t.next().is_some() || h > 23 || min > 59 || s > 59 {
        return None;
    }
    let days = days_from_civil(y, m as u32, day as u32);
    if civil_from_days(days) != (y, m as u32, day as u32) {
        return None; // 31 April and the like
    }
    Some(((days * 86_400) + h * 3600 + min * 60 + s) * 1000)
}

/// How long ago, roughly, as people say it: `45 s`, `12 min`, `3 h 5 min`, `2 d 4 h`.
pub fn age(ms: Millis) -> String {
    let s = ms.max(0) / 1000;
    match s {
        0..60 => format!("{s} s"),
        60..3600 => format!("{} min", s / 60),
        3600..86_400 => format!("{} h {} min", s / 3600, s % 3600 / 60),
        _ => format!("{} d {} h", s / 86_400, s % 86_400 / 3600),
    }
}

/// Days since 1970-01-01 → (year, month, day), proleptic Gregorian
/// (H. Hinnant's algorithm).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (yoe + era * 400 + i64::from(m <= 2), m, d)
}

/// (year, month, day) → days since 1970-01-01, the inverse of
/// [`civil_from_days`].
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

    #[test]
    fn times_read_back_as_they_were_written() {
        assert_eq!(utc(0), "1970-01-01T00:00:00Z");
        for ms in [0, 951_782_400_000, 1_764_779_412_000, 4_102_444_799_000] {
            assert_eq!(parse_utc(&utc(ms)), Some(ms), "{}", utc(ms));
        }
        assert_eq!(parse_utc("2026-12-03T16:40"), Some(1_796_316_000_000));
        assert_eq!(parse_utc("2026-12-03"), parse_utc("2026-12-03 00:00:00"));
    }

    #[test]
    fn what_is_not_a_time_is_refused() {
        for bad in [
            "",
            "2026",
            "2026-13-01",
            "2026-04-31",
            "2026-12-03T24:00",
            "26-12-03",
            "2026-12-03T10:00:00:00",
            "2026-12-03Tab:cd",
            "+026-12-03",
        ] {
            assert_eq!(parse_utc(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn ages_read_as_people_say_them() {
        assert_eq!(age(45_000), "45 s");
        assert_eq!(age(12 * 60_000 + 5), "12 min");
        assert_eq!(age(3 * 3_600_000 + 5 * 60_000), "3 h 5 min");
        assert_eq!(age(2 * 86_400_000 + 4 * 3_600_000), "2 d 4 h");
        assert_eq!(age(-5), "0 s");
    }
}

//! Wire timestamps (RFC 3339, as the server writes `last_active`, `updated_at` and `created_at`) read as chrono's
//! `DateTime<Utc>`, so that two states of a user can be ordered in time.
//!
//! Hand-written rather than chrono's `parse_from_rfc3339`: chrono's parser slices strings by index, and its panic
//! path links core's formatting and Unicode tables into a bundle that has none, 7,880 B of gzip (measured with
//! scripts/build-wasm.sh) for a rule this small. This reader only walks bytes; the tests check it against chrono.
//!
//! A [`Stamp`] is chrono's `DateTime<Utc>`, the timestamp type the design card names, built from the microseconds
//! this reader reads (`DateTime::from_timestamp_micros`): it links chrono's calendar and year tables, +640 B of
//! gzip; the ingest benchmark did not move, and `Option<Stamp>` is 12 bytes on wasm32 where `Option<i64>` is 16.

use chrono::{DateTime, Utc};

/// When a user object was current, to the microsecond.
pub type Stamp = DateTime<Utc>;

/// An RFC 3339 timestamp (`2026-06-24T11:44:48.171042Z`, `...+02:00`) as a [`Stamp`]; `None` for anything else.
/// Digits past the microsecond are dropped, as the server stores none.
pub fn parse_stamp(text: &str) -> Option<Stamp> {
    let mut at = Cursor(text.as_bytes());
    let year = at.digits(4)?;
    at.expect(b'-')?;
    let month = at.digits(2)?;
    at.expect(b'-')?;
    let day = at.digits(2)?;
    at.one_of(b"Tt ")?;
    let hour = at.digits(2)?;
    at.expect(b':')?;
    let minute = at.digits(2)?;
    at.expect(b':')?;
    let second = at.digits(2)?;
    if !(1..=12).contains(&month) || day < 1 || day > days_in_month(year, month) {
        return None;
    }
    if hour > 23 || minute > 59 || second > 60 {
        return None;
    }
    let mut micros = 0;
    if at.peek() == Some(b'.') {
        at.0 = &at.0[1..];
        let mut count = 0;
        while let Some(d) = at.peek().filter(u8::is_ascii_digit) {
            if count < 6 {
                micros = micros * 10 + i64::from(d - b'0');
            }
            count += 1;
            at.0 = &at.0[1..];
        }
        if count == 0 {
            return None;
        }
        for _ in count..6 {
            micros *= 10;
        }
    }
    let offset = match at.peek()? {
        b'Z' | b'z' => {
            at.0 = &at.0[1..];
            0
        }
        sign @ (b'+' | b'-') => {
            at.0 = &at.0[1..];
            let hours = at.digits(2)?;
            at.expect(b':')?;
            let minutes = at.digits(2)?;
            if hours > 23 || minutes > 59 {
                return None;
            }
            let offset = (hours * 60 + minutes) * 60;
            if sign == b'-' {
                -offset
            } else {
                offset
            }
        }
        _ => return None,
    };
    if !at.0.is_empty() {
        return None;
    }
    let seconds =
        days_from_civil(year, month, day) * 86_400 + hour * 3_600 + minute * 60 + second - offset;
    DateTime::from_timestamp_micros(seconds * 1_000_000 + micros)
}

/// The bytes not read yet.
struct Cursor<'a>(&'a [u8]);

impl Cursor<'_> {
    fn peek(&self) -> Option<u8> {
        self.0.first().copied()
    }

    fn one_of(&mut self, allowed: &[u8]) -> Option<()> {
        let (&first, rest) = self.0.split_first()?;
        allowed.contains(&first).then(|| self.0 = rest)
    }

    fn expect(&mut self, byte: u8) -> Option<()> {
        self.one_of(&[byte])
    }

    /// Exactly `n` ASCII digits as a number.
    fn digits(&mut self, n: usize) -> Option<i64> {
        let mut value = 0;
        for _ in 0..n {
            let (&d, rest) = self.0.split_first()?;
            if !d.is_ascii_digit() {
                return None;
            }
            value = value * 10 + i64::from(d - b'0');
            self.0 = rest;
        }
        Some(value)
    }
}

fn days_in_month(year: i64, month: i64) -> i64 {
    match month {
        2 if year % 4 == 0 && (year % 100 != 0 || year % 400 == 0) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// Days from 1970-01-01 to a date of the proleptic Gregorian calendar (H. Hinnant's `days_from_civil`).
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let year = if month <= 2 { year - 1 } else { year };
    let era = year.div_euclid(400);
    let year_of_era = year - era * 400;
    let day_of_year = (153 * ((month + 9) % 12) + 2) / 5 + day - 1;
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    era * 146_097 + day_of_era - 719_468
}

#[cfg(test)]
mod tests {
    use super::{parse_stamp, Stamp};

    /// chrono's reading of `text`, to the microsecond.
    fn chrono_stamp(text: &str) -> Option<Stamp> {
        chrono::DateTime::parse_from_rfc3339(text)
            .ok()
            .and_then(|at| chrono::DateTime::from_timestamp_micros(at.timestamp_micros()))
    }

    #[test]
    fn reads_what_chrono_reads() {
        let mut rng = fastrand::Rng::with_seed(7);
        for _ in 0..20_000 {
            let secs = rng.i64(-2_000_000_000..8_000_000_000);
            let nanos = rng.u32(0..1_000_000_000);
            let at = chrono::DateTime::from_timestamp(secs, nanos).unwrap();
            let offset = chrono::FixedOffset::east_opt(rng.i32(-86_399..86_400) / 60 * 60).unwrap();
            let local = at.with_timezone(&offset);
            for text in [
                at.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true),
                at.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
                at.to_rfc3339_opts(chrono::SecondsFormat::Nanos, false),
                local.to_rfc3339_opts(chrono::SecondsFormat::Micros, false),
                local.to_rfc3339_opts(chrono::SecondsFormat::Secs, false),
            ] {
                assert_eq!(parse_stamp(&text), chrono_stamp(&text), "{text}");
            }
        }
    }

    #[test]
    fn refuses_what_is_not_a_timestamp() {
        for text in [
            "",
            "yesterday",
            "2026-02-29T00:00:00Z",
            "2026-13-01T00:00:00Z",
            "2026-01-01T24:00:00Z",
            "2026-01-01T00:00:00",
            "2026-01-01T00:00:00.Z",
            "2026-01-01T00:00:00Zjunk",
            "2026-01-01T00:00:00+2:00",
            "2026-1-01T00:00:00Z",
            "２026-01-01T00:00:00Z",
        ] {
            assert_eq!(parse_stamp(text), None, "{text}");
            assert_eq!(chrono_stamp(text), None, "chrono reads {text}");
        }
        assert_eq!(
            parse_stamp("2024-02-29t10:00:00.5z"),
            chrono_stamp("2024-02-29T10:00:00.5Z")
        );
        assert_eq!(
            parse_stamp("2026-06-24T13:44:48+02:00"),
            parse_stamp("2026-06-24T11:44:48Z")
        );
    }
}

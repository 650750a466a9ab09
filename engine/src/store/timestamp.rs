//! History timestamps, written without `fmt`.
//!
//! A run writes five or more records, each with two timestamps; chrono's serde goes through
//! `collect_str` and the formatting machinery for each. [`serialize`] writes the very same text
//! (RFC 3339 in UTC with `Z`, and 0, 3, 6 or 9 fraction digits, as few as the value needs:
//! chrono's `SecondsFormat::AutoSi`) straight into a buffer. Reading stays chrono's.

use chrono::{DateTime, Datelike, SecondsFormat, Timelike, Utc};
use serde::Serializer;

/// Serializes a timestamp as chrono does (`#[serde(serialize_with = "timestamp::serialize")]`).
pub fn serialize<S: Serializer>(at: &DateTime<Utc>, s: S) -> Result<S::Ok, S::Error> {
    let mut buf = [0u8; 30];
    match write(at, &mut buf) {
        Some(text) => s.serialize_str(text),
        None => s.serialize_str(&at.to_rfc3339_opts(SecondsFormat::AutoSi, true)),
    }
}

/// [`serialize`] for an optional timestamp (`None` as `null`, as serde does).
pub fn option<S: Serializer>(at: &Option<DateTime<Utc>>, s: S) -> Result<S::Ok, S::Error> {
    match at {
        Some(at) => serialize(at, s),
        None => s.serialize_none(),
    }
}

/// The text of `at` in `buf`; `None` for what the fast path leaves to chrono (years outside
/// 0..=9999, leap seconds).
fn write<'a>(at: &DateTime<Utc>, buf: &'a mut [u8; 30]) -> Option<&'a str> {
    let (date, time) = (at.date_naive(), at.time());
    let year = date.year();
    let nanos = time.nanosecond();
    if !(0..=9999).contains(&year) || nanos >= 1_000_000_000 {
        return None;
    }
    let mut len = 0;
    let mut put = |value: u32, digits: usize, after: Option<u8>| {
        let mut v = value;
        for i in (0..digits).rev() {
            buf[len + i] = b'0' + (v % 10) as u8;
            v /= 10;
        }
        len += digits;
        if let Some(byte) = after {
            buf[len] = byte;
            len += 1;
        }
    };
    put(year as u32, 4, Some(b'-'));
    put(date.month(), 2, Some(b'-'));
    put(date.day(), 2, Some(b'T'));
    put(time.hour(), 2, Some(b':'));
    put(time.minute(), 2, Some(b':'));
    let (fraction, digits) = match nanos {
        0 => (0, 0),
        n if n % 1_000_000 == 0 => (n / 1_000_000, 3),
        n if n % 1_000 == 0 => (n / 1_000, 6),
        n => (n, 9),
    };
    if digits == 0 {
        put(time.second(), 2, Some(b'Z'));
    } else {
        put(time.second(), 2, Some(b'.'));
        put(fraction, digits, Some(b'Z'));
    }
    std::str::from_utf8(&buf[..len]).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    #[test]
    fn writes_what_chrono_writes() {
        let mut seed = 0x9e37_79b9_7f4a_7c15_u64;
        let mut next = move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        let mut instants = vec![
            Utc.with_ymd_and_hms(1970, 1, 1, 0, 0, 0).unwrap(),
            Utc.with_ymd_and_hms(9999, 12, 31, 23, 59, 59).unwrap(),
            Utc.with_ymd_and_hms(10000, 1, 1, 0, 0, 0).unwrap(),
            Utc::now(),
        ];
        for _ in 0..2_000 {
            let secs = (next() % 400_000_000_000) as i64 - 100_000_000_000;
            // Whole seconds, milliseconds, microseconds and nanoseconds, in turn.
            let nanos = match next() % 4 {
                0 => 0,
                1 => (next() % 1_000) as u32 * 1_000_000,
                2 => (next() % 1_000_000) as u32 * 1_000,
                _ => (next() % 1_000_000_000) as u32,
            };
            instants.push(DateTime::from_timestamp(secs, nanos).unwrap());
        }
        for at in instants {
            let ours = serde_json::to_string(&Wrap(at)).unwrap();
            let chrono = serde_json::to_string(&at).unwrap();
            assert_eq!(ours, chrono);
        }
        assert_eq!(
            serde_json::to_string(&Wrap(
                DateTime::from_timestamp(1_700_000_000, 120_000_000).unwrap()
            ))
            .unwrap(),
            "\"2023-11-14T22:13:20.120Z\""
        );
    }

    struct Wrap(DateTime<Utc>);

    impl serde::Serialize for Wrap {
        fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
            serialize(&self.0, s)
        }
    }
}

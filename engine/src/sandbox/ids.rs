//! Deterministic identifiers and timestamps in each vendor's own format.
//!
//! Every id comes from a seeded `fastrand::Rng`, so the same seed and the same sequence of
//! creates always give the same ids: Calendly's 16 uppercase alphanumerics, Webex's base64 of a
//! `ciscospark://us/<KIND>/<uuid>` URI, SCIM's lowercase UUIDs.

use chrono::{DateTime, Utc};

const CALENDLY_ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789";
const HEX: &[u8] = b"0123456789abcdef";
const B64: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

/// A Calendly uuid: 16 uppercase letters and digits.
pub(crate) fn calendly_uuid(rng: &mut fastrand::Rng) -> String {
    (0..16)
        .map(|_| CALENDLY_ALPHABET[rng.usize(..CALENDLY_ALPHABET.len())] as char)
        .collect()
}

/// A version-4-shaped UUID in lowercase hex.
pub(crate) fn uuid(rng: &mut fastrand::Rng) -> String {
    let mut out = String::with_capacity(36);
    for (i, len) in [8, 4, 4, 4, 12].into_iter().enumerate() {
        if i > 0 {
            out.push('-');
        }
        for _ in 0..len {
            out.push(HEX[rng.usize(..16)] as char);
        }
    }
    out
}

/// A Webex id: URL-safe base64 (no padding) of `ciscospark://us/<kind>/<uuid>`.
pub(crate) fn webex_id(rng: &mut fastrand::Rng, kind: &str) -> String {
    base64(format!("ciscospark://us/{kind}/{}", uuid(rng)).as_bytes())
}

/// URL-safe base64 without padding.
pub(crate) fn base64(input: &[u8]) -> String {
    let mut out = String::with_capacity(input.len().div_ceil(3) * 4);
    for chunk in input.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        let chars = chunk.len() + 1;
        for i in 0..chars {
            out.push(B64[((n >> (18 - 6 * i)) & 63) as usize] as char);
        }
    }
    out
}

/// Decodes [`base64`] output; `None` when it is not valid.
pub(crate) fn unbase64(input: &str) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(input.len() * 3 / 4);
    let mut acc = 0u32;
    let mut bits = 0;
    for c in input.bytes() {
        let v = B64.iter().position(|&b| b == c)? as u32;
        acc = (acc << 6) | v;
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
            acc &= (1 << bits) - 1;
        }
    }
    Some(out)
}

/// An opaque page cursor for position `seq`.
pub(crate) fn cursor(seq: u64) -> String {
    base64(format!("sandbox-cursor:{seq}").as_bytes())
}

/// Reads a cursor made by [`cursor`].
pub(crate) fn parse_cursor(token: &str) -> Option<u64> {
    let raw = String::from_utf8(unbase64(token)?).ok()?;
    raw.strip_prefix("sandbox-cursor:")?.parse().ok()
}

/// Calendly's timestamps: microseconds, `Z`.
pub(crate) fn calendly_time(t: &DateTime<Utc>) -> String {
    t.format("%Y-%m-%dT%H:%M:%S%.6fZ").to_string()
}

/// Webex's and SCIM's timestamps: milliseconds, `Z`.
pub(crate) fn millis_time(t: &DateTime<Utc>) -> String {
    t.format("%Y-%m-%dT%H:%M:%S%.3fZ").to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_have_each_vendors_shape_and_repeat_for_a_seed() {
        let mut a = fastrand::Rng::with_seed(9);
        let mut b = fastrand::Rng::with_seed(9);
        let id = calendly_uuid(&mut a);
        assert_eq!(id, calendly_uuid(&mut b));
        assert_eq!(id.len(), 16);
        assert!(id
            .bytes()
            .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit()));
        let u = uuid(&mut a);
        assert_eq!(u.len(), 36);
        assert_eq!(u.matches('-').count(), 4);
        let w = webex_id(&mut a, "PEOPLE");
        let decoded = String::from_utf8(unbase64(&w).unwrap()).unwrap();
        assert!(decoded.starts_with("ciscospark://us/PEOPLE/"), "{decoded}");
    }

    #[test]
    fn base64_round_trips() {
        for s in ["", "a", "ab", "abc", "abcd", "ciscospark://us/PEOPLE/x"] {
            assert_eq!(unbase64(&base64(s.as_bytes())).unwrap(), s.as_bytes());
        }
        assert_eq!(base64(b"Man"), "TWFu");
        assert_eq!(parse_cursor(&cursor(42)), Some(42));
        assert_eq!(parse_cursor("garbage!"), None);
    }
}

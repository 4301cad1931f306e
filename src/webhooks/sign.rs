//! Webhook signatures: `Voxwire-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256 of "<t>.<body>">`
//! made with the agent's secret, and their verification (constant-time compare, a tolerance on
//! `t`) as a receiver written in Rust would do it; `protocol.md` shows the same in other
//! languages.

use std::time::Duration;

use hmac::{Hmac, Mac};
use sha2::Sha256;

type HmacSha256 = Hmac<Sha256>;

pub const SIGNATURE_HEADER: &str = "Voxwire-Signature";
pub const DELIVERY_ID_HEADER: &str = "Voxwire-Delivery-Id";
/// The event's type (`call.ended`...), also in the body.
pub const EVENT_HEADER: &str = "Voxwire-Event";
/// The tolerance receivers are told to use on `t`.
pub const TOLERANCE: Duration = Duration::from_secs(300);

fn mac(secret: &[u8], t: i64, body: &[u8]) -> HmacSha256 {
    // HMAC takes keys of any length.
    let mut mac = HmacSha256::new_from_slice(secret)
        .unwrap_or_else(|e| unreachable!("HMAC takes any key length: {e}"));
    mac.update(t.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    mac
}

fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(DIGITS[usize::from(b >> 4)] as char);
        s.push(DIGITS[usize::from(b & 0x0f)] as char);
    }
    s
}

fn unhex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect()
}

/// The `Voxwire-Signature` value of `body` sent at `t` (Unix seconds).
pub fn signature_header(secret: &[u8], t: i64, body: &[u8]) -> String {
    let sig = mac(secret, t, body).finalize().into_bytes();
    format!("t={t},v1={}", hex(&sig))
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VerifyError {
    #[error("the signature header is malformed")]
    Malformed,
    #[error("the timestamp is outside the tolerance")]
    Stale,
    #[error("no signature matches")]
    Mismatch,
}

/// Checks a `Voxwire-Signature` value against `body` at `now` (Unix seconds): `t` within
/// `tolerance` of now, and some `v1` equal (in constant time) to the HMAC of `"<t>.<body>"`.
/// Returns `t`. Replays within the tolerance are the receiver's to refuse, by delivery id.
pub fn verify(
    secret: &[u8],
    header: &str,
    body: &[u8],
    now: i64,
    tolerance: Duration,
) -> Result<i64, VerifyError> {
    let mut t = None;
    let mut sigs = Vec::new();
    for part in header.split(',') {
        match part.trim().split_once('=') {
            Some(("t", v)) => t = Some(v.parse::<i64>().map_err(|_| VerifyError::Malformed)?),
            Some(("v1", v)) => sigs.push(unhex(v).ok_or(VerifyError::Malformed)?),
            _ => {}
        }
    }
    let t = t.ok_or(VerifyError::Malformed)?;
    if sigs.is_empty() {
        return Err(VerifyError::Malformed);
    }
    let tolerance = i64::try_from(tolerance.as_secs()).unwrap_or(i64::MAX);
    if now.abs_diff(t) > tolerance.unsigned_abs() {
        return Err(VerifyError::Stale);
    }
    let expected = mac(secret, t, body);
    if sigs
        .iter()
        .any(|s| expected.clone().verify_slice(s).is_ok())
    {
        Ok(t)
    } else {
        Err(VerifyError::Mismatch)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_known_signature() {
        // Checked with: printf '%s' '1700000000.{"a":1}' | openssl dgst -sha256 -hmac whsec-test-0123456789
        let h = signature_header(b"whsec-test-0123456789", 1_700_000_000, br#"{"a":1}"#);
        assert_eq!(
            h,
            "t=1700000000,v1=ba8ec7f38c4e076a99176a1bf98ae9f2f3f4e18412b46a5913ddcf5685932c6a"
        );
    }

    #[test]
    fn verification_refuses_tampering_and_old_timestamps() {
        let secret = b"whsec-test-0123456789";
        let body = br#"{"type":"call.ended"}"#;
        let now = 1_700_000_000;
        let h = signature_header(secret, now, body);
        assert_eq!(verify(secret, &h, body, now + 10, TOLERANCE), Ok(now));
        assert_eq!(
            verify(secret, &h, br#"{"type":"call.endeD"}"#, now, TOLERANCE),
            Err(VerifyError::Mismatch)
        );
        assert_eq!(
            verify(b"another-secret-0123", &h, body, now, TOLERANCE),
            Err(VerifyError::Mismatch)
        );
        assert_eq!(
            verify(secret, &h, body, now + 301, TOLERANCE),
            Err(VerifyError::Stale)
        );
        // A signature for a rotated secret next to the current one.
        let other = signature_header(b"old-secret-0123456789", now, body);
        let both = format!("{h},{}", other.split_once(',').unwrap().1);
        assert_eq!(
            verify(b"old-secret-0123456789", &both, body, now, TOLERANCE),
            Ok(now)
        );
        for bad in [
            "",
            "t=x,v1=00",
            "v1=00",
            "t=1700000000",
            "t=1700000000,v1=zz",
        ] {
            assert_eq!(
                verify(secret, bad, body, now, TOLERANCE),
                Err(VerifyError::Malformed),
                "{bad}"
            );
        }
    }
}

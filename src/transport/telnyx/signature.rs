//! Telnyx's webhook signature: `telnyx-signature-ed25519` is base64 of an Ed25519 signature,
//! by the account's key pair, of `"{telnyx-timestamp}|{raw body}"`; the timestamp is Unix
//! seconds. The public key is in the Telnyx portal (`TELNYX_PUBLIC_KEY`). A signature older
//! (or newer) than [`TOLERANCE`] is refused, so a captured webhook cannot be replayed later.

use std::time::Duration;

use base64::Engine as _;
use ed25519_dalek::{Signature, VerifyingKey};

/// How far a webhook's timestamp may be from the server's clock.
pub const TOLERANCE: Duration = Duration::from_secs(300);

/// Why a webhook's signature was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error("the timestamp is not Unix seconds")]
    BadTimestamp,
    #[error("the timestamp is more than five minutes from now")]
    Stale,
    #[error("the signature is not base64 of 64 bytes")]
    Malformed,
    #[error("the signature does not match the body")]
    Mismatch,
}

/// Checks `signature` (base64) of `timestamp|body` against `key`, `now` being Unix seconds.
pub fn verify(
    key: &VerifyingKey,
    timestamp: &str,
    body: &[u8],
    signature: &str,
    now: u64,
) -> Result<(), Refusal> {
    let at: u64 = timestamp
        .trim()
        .parse()
        .map_err(|_| Refusal::BadTimestamp)?;
    if at.abs_diff(now) > TOLERANCE.as_secs() {
        return Err(Refusal::Stale);
    }
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(signature.trim())
        .map_err(|_| Refusal::Malformed)?;
    let signature = Signature::from_slice(&bytes).map_err(|_| Refusal::Malformed)?;
    let mut signed = Vec::with_capacity(timestamp.len() + 1 + body.len());
    signed.extend_from_slice(timestamp.trim().as_bytes());
    signed.push(b'|');
    signed.extend_from_slice(body);
    key.verify_strict(&signed, &signature)
        .map_err(|_| Refusal::Mismatch)
}

#[cfg(test)]
mod tests {
    use ed25519_dalek::{Signer, SigningKey};

    use super::*;

    fn sign(key: &SigningKey, timestamp: &str, body: &[u8]) -> String {
        let mut signed = format!("{timestamp}|").into_bytes();
        signed.extend_from_slice(body);
        base64::engine::general_purpose::STANDARD.encode(key.sign(&signed).to_bytes())
    }

    #[test]
    fn signed_fresh_webhooks_only() {
        let key = SigningKey::from_bytes(&[3; 32]);
        let public = key.verifying_key();
        let body = br#"{"data":{"event_type":"call.initiated"}}"#;
        let now = 1_700_000_000;
        let sig = sign(&key, "1700000000", body);
        assert_eq!(verify(&public, "1700000000", body, &sig, now), Ok(()));
        assert_eq!(verify(&public, "1700000000", body, &sig, now + 299), Ok(()));
        // Another body, another timestamp, another key.
        assert_eq!(
            verify(&public, "1700000000", b"{}", &sig, now),
            Err(Refusal::Mismatch)
        );
        assert_eq!(
            verify(&public, "1700000001", body, &sig, now),
            Err(Refusal::Mismatch)
        );
        let other = SigningKey::from_bytes(&[4; 32]).verifying_key();
        assert_eq!(
            verify(&other, "1700000000", body, &sig, now),
            Err(Refusal::Mismatch)
        );
        // Old, or from the future, even if well signed.
        assert_eq!(
            verify(&public, "1700000000", body, &sig, now + 301),
            Err(Refusal::Stale)
        );
        let ahead = sign(&key, "1700001000", body);
        assert_eq!(
            verify(&public, "1700001000", body, &ahead, now),
            Err(Refusal::Stale)
        );
        assert_eq!(
            verify(&public, "soon", body, &sig, now),
            Err(Refusal::BadTimestamp)
        );
        assert_eq!(
            verify(&public, "1700000000", body, "AAAA", now),
            Err(Refusal::Malformed)
        );
    }
}

//! API keys of organisations: `vxk_<id>_<secret>`, where `id` names the key (16 hex digits,
//! shown by `voxwire keys list`) and `secret` is 32 random bytes (base64url). Only the SHA-256
//! of the secret is stored; a presented key is looked up by its id and its secret compared with
//! the stored hash in constant time. The full key text is shown once, when it is created, and
//! never logged.

pub mod cli;

use base64::Engine as _;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// What every key starts with, so a key is told from a JWT at a glance.
pub const PREFIX: &str = "vxk_";

/// Longest key text looked at; a real one is 64 bytes.
pub const MAX_KEY_BYTES: usize = 128;

/// A freshly made key: its id, the text to hand out once, and the hash to store.
pub struct NewKey {
    pub id: String,
    /// `vxk_<id>_<secret>`: printed once, never stored.
    pub text: String,
    /// Hex SHA-256 of the secret.
    pub secret_sha256: String,
}

/// Makes a key with a random id and a random 32-byte secret.
pub fn generate() -> NewKey {
    let id = format!("{:016x}", rand::random::<u64>());
    let secret =
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(rand::random::<[u8; 32]>());
    NewKey {
        text: format!("{PREFIX}{id}_{secret}"),
        secret_sha256: hash(&secret),
        id,
    }
}

/// A key as presented: its id and its secret (not yet checked).
#[derive(PartialEq, Eq)]
pub struct Presented<'a> {
    pub id: &'a str,
    pub secret: &'a str,
}

impl std::fmt::Debug for Presented<'_> {
    // The secret never reaches a log, even through a debug print.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Presented")
            .field("id", &self.id)
            .finish_non_exhaustive()
    }
}

/// Splits `vxk_<id>_<secret>`; `None` for anything else.
pub fn parse(text: &str) -> Option<Presented<'_>> {
    if text.len() > MAX_KEY_BYTES {
        return None;
    }
    let rest = text.strip_prefix(PREFIX)?;
    let (id, secret) = rest.split_once('_')?;
    let id_ok = id.len() == 16 && id.bytes().all(|b| b.is_ascii_hexdigit());
    (id_ok && !secret.is_empty()).then_some(Presented { id, secret })
}

/// Whether a text looks like an API key (rather than a JWT).
pub fn looks_like_key(text: &str) -> bool {
    text.starts_with(PREFIX)
}

/// Hex SHA-256 of a secret, as stored.
pub fn hash(secret: &str) -> String {
    let digest = Sha256::digest(secret.as_bytes());
    digest.iter().map(|b| format!("{b:02x}")).collect()
}

/// Whether `secret` hashes to `stored`, compared in constant time.
pub fn matches(secret: &str, stored: &str) -> bool {
    let presented = hash(secret);
    presented.len() == stored.len() && bool::from(presented.as_bytes().ct_eq(stored.as_bytes()))
}

/// An organisation's name: 1 to 64 letters, digits, `-`, `_` or `.`.
pub fn valid_org(name: &str) -> bool {
    (1..=64).contains(&name.len())
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
}

/// A key's name (what it is for): 1 to 64 characters, no control characters.
pub fn valid_key_name(name: &str) -> bool {
    !name.trim().is_empty() && name.chars().count() <= 64 && !name.chars().any(char::is_control)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_new_key_parses_and_matches_only_its_own_hash() {
        let k = generate();
        assert!(k.text.starts_with("vxk_") && k.text.len() < MAX_KEY_BYTES);
        let p = parse(&k.text).unwrap();
        assert_eq!(p.id, k.id);
        assert!(matches(p.secret, &k.secret_sha256));
        assert!(!k.secret_sha256.contains(p.secret));
        let other = generate();
        assert!(!matches(p.secret, &other.secret_sha256));
        assert!(!matches("", &k.secret_sha256));
        assert!(!format!("{p:?}").contains(p.secret));
    }

    #[test]
    fn malformed_keys_are_refused() {
        for bad in [
            "",
            "vxk_",
            "vxk_abc_secret",
            "vxk_0123456789abcdef",
            "vxk_0123456789abcdef_",
            "vxk_0123456789abcdeg_secret",
            "eyJhbGciOiJIUzI1NiJ9.x.y",
            &format!("vxk_0123456789abcdef_{}", "a".repeat(200)),
        ] {
            assert!(parse(bad).is_none(), "{bad}");
        }
        // A secret may hold `_` (base64url).
        let p = parse("vxk_0123456789abcdef_a_b-c").unwrap();
        assert_eq!(p.secret, "a_b-c");
    }

    #[test]
    fn names_are_checked() {
        assert!(valid_org("acme") && valid_org("acme-eu.1"));
        assert!(!valid_org("") && !valid_org("a b") && !valid_org(&"a".repeat(65)));
        assert!(valid_key_name("backend (prod)"));
        assert!(!valid_key_name(" ") && !valid_key_name("a\nb"));
    }
}

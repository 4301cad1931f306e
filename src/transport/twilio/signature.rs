//! Twilio's request signature (`X-Twilio-Signature`): base64 of the HMAC-SHA1, keyed with the
//! account's auth token, of the full URL Twilio requested followed by each form parameter's
//! name and value, sorted by name (a name sent more than once: its values sorted, each
//! distinct value once, as Twilio's own libraries do).

use base64::Engine as _;
use hmac::{Hmac, Mac};
use sha1::Sha1;
use subtle::ConstantTimeEq;

/// The signature Twilio sends for a request to `url` with form `params`.
pub fn sign(token: &[u8], url: &str, params: &[(String, String)]) -> String {
    let mut sorted: Vec<&(String, String)> = params.iter().collect();
    sorted.sort();
    sorted.dedup();
    // HMAC takes keys of any length: `new_from_slice` cannot fail.
    let Ok(mut mac) = Hmac::<Sha1>::new_from_slice(token) else {
        return String::new();
    };
    mac.update(url.as_bytes());
    for (k, v) in sorted {
        mac.update(k.as_bytes());
        mac.update(v.as_bytes());
    }
    base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes())
}

/// Whether `signature` is Twilio's for this request (compared in constant time).
pub fn verify(token: &[u8], url: &str, params: &[(String, String)], signature: &str) -> bool {
    let expected = sign(token, url, params);
    !signature.is_empty() && bool::from(expected.as_bytes().ct_eq(signature.trim().as_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(caller: &str) -> Vec<(String, String)> {
        [
            ("CallSid", "CA1234567890ABCDE"),
            ("Caller", caller),
            ("Digits", "1234"),
            ("From", caller),
            ("To", "+18005551212"),
        ]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
    }

    const URL: &str = "https://mycompany.com/myapp.php?foo=1&bar=2";

    /// The example of Twilio's webhook security documentation (auth token `12345`): its
    /// signature is for the caller +14158675310. Twilio's own libraries test the same request
    /// with the caller +14158675309.
    #[test]
    fn twilio_documented_examples() {
        let mut p = params("+14158675310");
        p.reverse();
        assert_eq!(sign(b"12345", URL, &p), "GvWf1cFY/Q7PnoempGyD5oXAezc=");
        assert_eq!(
            sign(b"12345", URL, &params("+14158675309")),
            "RSOYDt4T1cUTdK1PDd93/VVr8B8="
        );
        assert!(verify(b"12345", URL, &p, "GvWf1cFY/Q7PnoempGyD5oXAezc="));
        assert!(!verify(b"12346", URL, &p, "GvWf1cFY/Q7PnoempGyD5oXAezc="));
        assert!(!verify(b"12345", URL, &p, ""));
        assert!(!verify(
            b"12345",
            &URL.replace("https", "http"),
            &p,
            "GvWf1cFY/Q7PnoempGyD5oXAezc="
        ));
        let repeated: Vec<(String, String)> = [
            ("Sid", "CA123"),
            ("SidAccount", "AC123"),
            ("Digits", "5678"),
            ("Digits", "1234"),
            ("Digits", "1234"),
        ]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        assert_eq!(
            sign(b"12345", URL, &repeated),
            "IK+Dwps556ElfBT0I3Rgjkr1wJU="
        );
        p[0].1.push('9');
        assert!(!verify(b"12345", URL, &p, "GvWf1cFY/Q7PnoempGyD5oXAezc="));
    }
}

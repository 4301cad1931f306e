//! Phone calls through Twilio: the account's auth token that signs Twilio's webhooks
//! (`TWILIO_AUTH_TOKEN`, never logged) and which org and agent answer each called number
//! (`VOXWIRE_TWILIO_NUMBERS`). Through Telnyx: the public key that checks its webhooks'
//! signatures (`TELNYX_PUBLIC_KEY`), the API key that answers its calls (`TELNYX_API_KEY`,
//! never logged) and its numbers (`VOXWIRE_TELNYX_NUMBERS`). The public address both carriers
//! reach is `VOXWIRE_PUBLIC_URL`.

use std::collections::HashMap;

use base64::Engine as _;
use ed25519_dalek::VerifyingKey;

use super::{invalid, ConfigError, Env};

/// A carrier's secret (Twilio's auth token, Telnyx's API key). Its `Debug` never shows it.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

/// Twilio's auth token.
pub type TwilioToken = Secret;

impl Secret {
    pub fn new(token: impl Into<String>) -> Self {
        Self(token.into())
    }

    pub fn expose(&self) -> &[u8] {
        self.0.as_bytes()
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("<redacted>")
    }
}

/// Who answers a called number: an org (none: the default org) and an agent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NumberRoute {
    pub org: Option<String>,
    pub agent: String,
}

#[derive(Debug, Clone, Default)]
pub struct TelephonySettings {
    /// `TWILIO_AUTH_TOKEN`; without it the Twilio routes answer 503 `not_configured`.
    pub twilio_token: Option<TwilioToken>,
    /// By called number as Twilio writes it (E.164, `+15550001111`). A number not here is
    /// answered by the default org's default agent.
    pub numbers: HashMap<String, NumberRoute>,
    /// `TWILIO_ACCOUNT_SID`: the account outbound calls are placed from (with the auth token).
    pub twilio_account_sid: Option<String>,
    /// `VOXWIRE_TWILIO_API_URL`: Twilio's REST API root (`https://api.twilio.com`).
    pub twilio_api_url: String,
    /// `TELNYX_PUBLIC_KEY`: the Ed25519 key Telnyx signs its webhooks with; without it (or the
    /// API key) the Telnyx routes answer 503 `not_configured`.
    pub telnyx_public_key: Option<VerifyingKey>,
    /// `TELNYX_API_KEY`: answers (and hangs up, transfers) Telnyx calls through Call Control.
    pub telnyx_api_key: Option<Secret>,
    /// `VOXWIRE_TELNYX_NUMBERS`: like `numbers`, for the Telnyx numbers.
    pub telnyx_numbers: HashMap<String, NumberRoute>,
    /// `VOXWIRE_TELNYX_API_URL`: Telnyx's REST API root (`https://api.telnyx.com`).
    pub telnyx_api_url: String,
}

/// Twilio's REST API root.
pub const TWILIO_API_URL: &str = "https://api.twilio.com";
/// Telnyx's REST API root.
pub const TELNYX_API_URL: &str = "https://api.telnyx.com";

/// A phone number in E.164: `+` and 2 to 15 digits.
pub fn valid_number(n: &str) -> bool {
    n.strip_prefix('+')
        .is_some_and(|d| (2..=15).contains(&d.len()) && d.chars().all(|c| c.is_ascii_digit()))
}

/// A name of an org or agent: 1 to 64 letters, digits, `-` or `_`.
fn valid_name(n: &str) -> bool {
    (1..=64).contains(&n.len())
        && n.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_'))
}

fn parse_numbers(raw: &str) -> Result<HashMap<String, NumberRoute>, String> {
    let mut out = HashMap::new();
    for item in raw.split(',').map(str::trim).filter(|i| !i.is_empty()) {
        let (number, target) = item
            .split_once('=')
            .ok_or("expected +NUMBER=org/agent or +NUMBER=agent, comma-separated")?;
        let number = number.trim();
        if !valid_number(number) {
            return Err(format!(
                "`{number}` is not a phone number like +15550001111"
            ));
        }
        let (org, agent) = match target.trim().split_once('/') {
            Some((org, agent)) => (Some(org.trim().to_string()), agent.trim().to_string()),
            None => (None, target.trim().to_string()),
        };
        if org.as_deref().is_some_and(|o| !valid_name(o)) || !valid_name(&agent) {
            return Err(format!(
                "`{number}`: org and agent names are 1 to 64 letters, digits, - or _"
            ));
        }
        if out
            .insert(number.to_string(), NumberRoute { org, agent })
            .is_some()
        {
            return Err(format!("`{number}` is listed twice"));
        }
    }
    Ok(out)
}

/// The numbers in `var`, if set.
fn numbers(env: &dyn Env, var: &'static str) -> Result<HashMap<String, NumberRoute>, ConfigError> {
    match env.get(var) {
        Some(raw) => parse_numbers(&raw).map_err(|reason| invalid(var, &raw, reason)),
        None => Ok(HashMap::new()),
    }
}

/// A REST API root from `var`, else `default`.
fn api_url(env: &dyn Env, var: &'static str, default: &str) -> Result<String, ConfigError> {
    let Some(raw) = env.get(var) else {
        return Ok(default.to_string());
    };
    let url = raw.trim().trim_end_matches('/').to_string();
    let ok = reqwest::Url::parse(&url)
        .is_ok_and(|u| matches!(u.scheme(), "http" | "https") && u.host_str().is_some());
    if !ok {
        return Err(invalid(var, &raw, "must be an http:// or https:// URL"));
    }
    Ok(url)
}

/// `TELNYX_PUBLIC_KEY`: base64 of a 32-byte Ed25519 public key, as the portal shows it.
fn telnyx_public_key(env: &dyn Env) -> Result<Option<VerifyingKey>, ConfigError> {
    const VAR: &str = "TELNYX_PUBLIC_KEY";
    let Some(raw) = env.get(VAR) else {
        return Ok(None);
    };
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(raw.trim())
        .ok()
        .and_then(|b| <[u8; 32]>::try_from(b).ok());
    match bytes.and_then(|b| VerifyingKey::from_bytes(&b).ok()) {
        Some(key) => Ok(Some(key)),
        None => Err(invalid(
            VAR,
            &raw,
            "must be the base64 Ed25519 public key shown in the Telnyx portal",
        )),
    }
}

impl TelephonySettings {
    pub fn from_env(env: &dyn Env) -> Result<Self, ConfigError> {
        let numbers = self::numbers(env, "VOXWIRE_TWILIO_NUMBERS")?;
        let twilio_api_url = api_url(env, "VOXWIRE_TWILIO_API_URL", TWILIO_API_URL)?;
        const SID: &str = "TWILIO_ACCOUNT_SID";
        let twilio_account_sid = env.get(SID).map(|s| s.trim().to_string());
        if let Some(sid) = &twilio_account_sid {
            if !(sid.starts_with("AC")
                && sid.len() == 34
                && sid.chars().all(|c| c.is_ascii_alphanumeric()))
            {
                return Err(invalid(
                    SID,
                    sid,
                    "an account SID is AC and 32 letters or digits",
                ));
            }
        }
        Ok(Self {
            twilio_token: env
                .get("TWILIO_AUTH_TOKEN")
                .map(|t| TwilioToken::new(t.trim())),
            numbers,
            twilio_account_sid,
            twilio_api_url,
            telnyx_public_key: telnyx_public_key(env)?,
            telnyx_api_key: env.get("TELNYX_API_KEY").map(|k| Secret::new(k.trim())),
            telnyx_numbers: self::numbers(env, "VOXWIRE_TELNYX_NUMBERS")?,
            telnyx_api_url: api_url(env, "VOXWIRE_TELNYX_API_URL", TELNYX_API_URL)?,
        })
    }

    /// Who answers `called` on Twilio.
    pub fn route(&self, called: &str) -> Option<&NumberRoute> {
        self.numbers.get(called.trim())
    }

    /// Who answers `called` on Telnyx.
    pub fn telnyx_route(&self, called: &str) -> Option<&NumberRoute> {
        self.telnyx_numbers.get(called.trim())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn numbers_map_to_an_org_and_an_agent() {
        let t = TelephonySettings::from_env(&env(&[
            (
                "VOXWIRE_TWILIO_NUMBERS",
                "+15550001111=acme/receptionist, +15550002222=assistant",
            ),
            ("TWILIO_AUTH_TOKEN", "secret-token"),
        ]))
        .unwrap();
        let a = t.route("+15550001111").unwrap();
        assert_eq!(a.org.as_deref(), Some("acme"));
        assert_eq!(a.agent, "receptionist");
        let b = t.route("+15550002222").unwrap();
        assert_eq!((b.org.as_deref(), b.agent.as_str()), (None, "assistant"));
        assert!(t.route("+15550003333").is_none());
        assert_eq!(format!("{:?}", t.twilio_token), "Some(<redacted>)");
    }

    #[test]
    fn telnyx_settings_are_checked() {
        let key = base64::engine::general_purpose::STANDARD.encode(
            ed25519_dalek::SigningKey::from_bytes(&[7; 32])
                .verifying_key()
                .as_bytes(),
        );
        let t = TelephonySettings::from_env(&env(&[
            ("TELNYX_PUBLIC_KEY", &key),
            ("TELNYX_API_KEY", "KEY0123"),
            ("VOXWIRE_TELNYX_NUMBERS", "+15550003333=acme/desk"),
        ]))
        .unwrap();
        assert!(t.telnyx_public_key.is_some());
        assert_eq!(format!("{:?}", t.telnyx_api_key), "Some(<redacted>)");
        assert_eq!(t.telnyx_route("+15550003333").unwrap().agent, "desk");
        assert!(t.route("+15550003333").is_none());
        assert_eq!(t.telnyx_api_url, TELNYX_API_URL);
        for (var, bad) in [
            ("TELNYX_PUBLIC_KEY", "not base64!"),
            ("TELNYX_PUBLIC_KEY", "AAAA"),
            ("VOXWIRE_TELNYX_NUMBERS", "15550001111=a"),
            ("VOXWIRE_TELNYX_API_URL", "ftp://x"),
        ] {
            let e = TelephonySettings::from_env(&env(&[(var, bad)])).unwrap_err();
            assert!(e.to_string().starts_with(&format!("{var}:")), "{e}");
        }
    }

    #[test]
    fn bad_numbers_name_the_variable() {
        for bad in [
            "15550001111=a",
            "+1555=",
            "+15550001111",
            "+1=a/b/c",
            "+15550001111=a,+15550001111=b",
        ] {
            let e =
                TelephonySettings::from_env(&env(&[("VOXWIRE_TWILIO_NUMBERS", bad)])).unwrap_err();
            assert!(e.to_string().starts_with("VOXWIRE_TWILIO_NUMBERS:"), "{e}");
        }
    }
}

//! Phone calls through Twilio: the account's auth token that signs Twilio's webhooks
//! (`TWILIO_AUTH_TOKEN`, never logged) and which org and agent answer each called number
//! (`VOXWIRE_TWILIO_NUMBERS`). The public address Twilio reaches is `VOXWIRE_PUBLIC_URL`.

use std::collections::HashMap;

use super::{invalid, ConfigError, Env};

/// Twilio's auth token. Its `Debug` never shows it.
#[derive(Clone, PartialEq, Eq)]
pub struct TwilioToken(String);

impl TwilioToken {
    pub fn new(token: impl Into<String>) -> Self {
        Self(token.into())
    }

    pub fn expose(&self) -> &[u8] {
        self.0.as_bytes()
    }
}

impl std::fmt::Debug for TwilioToken {
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
}

/// Twilio's REST API root.
pub const TWILIO_API_URL: &str = "https://api.twilio.com";

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

impl TelephonySettings {
    pub fn from_env(env: &dyn Env) -> Result<Self, ConfigError> {
        const NUMBERS: &str = "VOXWIRE_TWILIO_NUMBERS";
        let numbers = match env.get(NUMBERS) {
            Some(raw) => parse_numbers(&raw).map_err(|reason| invalid(NUMBERS, &raw, reason))?,
            None => HashMap::new(),
        };
        const API: &str = "VOXWIRE_TWILIO_API_URL";
        let twilio_api_url = match env.get(API) {
            Some(raw) => {
                let url = raw.trim().trim_end_matches('/').to_string();
                let ok = reqwest::Url::parse(&url).is_ok_and(|u| {
                    matches!(u.scheme(), "http" | "https") && u.host_str().is_some()
                });
                if !ok {
                    return Err(invalid(API, &raw, "must be an http:// or https:// URL"));
                }
                url
            }
            None => TWILIO_API_URL.to_string(),
        };
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
        })
    }

    /// Who answers `called`.
    pub fn route(&self, called: &str) -> Option<&NumberRoute> {
        self.numbers.get(called.trim())
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

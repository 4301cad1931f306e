//! Usage limits: the defaults for an org that has not set its own (`VOXWIRE_LIMIT_*`; unset or
//! empty is unlimited) and what the agent says when a call's daily minutes run out
//! (`VOXWIRE_LIMIT_MESSAGE`).

use super::{invalid, parse_num, ConfigError, Env};
use crate::store::{OrgLimits, MAX_LIMIT};

/// What the agent says before a call ends because its daily minutes ran out.
pub const DEFAULT_LIMIT_MESSAGE: &str =
    "I'm sorry, the time available for calls today has run out. Goodbye.";

/// The longest limit message, in characters.
pub const MAX_LIMIT_MESSAGE_CHARS: usize = 500;

#[derive(Debug, Clone)]
pub struct UsageSettings {
    /// The limits of an org that has not set its own with `PUT /api/limits`.
    pub defaults: OrgLimits,
    /// Spoken when a call's daily minutes run out (`VOXWIRE_LIMIT_MESSAGE`).
    pub limit_message: String,
    /// `/api/...` requests per minute per client address (`VOXWIRE_RATE_LIMIT_PER_IP`; 0: off).
    pub rate_per_ip: u32,
    /// `/api/...` requests per minute per token subject (`VOXWIRE_RATE_LIMIT_PER_SUBJECT`; 0:
    /// off).
    pub rate_per_subject: u32,
}

/// Default requests per minute per client address, and per token subject.
pub const DEFAULT_RATE_PER_IP: u32 = 1200;
pub const DEFAULT_RATE_PER_SUBJECT: u32 = 600;

impl Default for UsageSettings {
    fn default() -> Self {
        Self {
            defaults: OrgLimits::default(),
            limit_message: DEFAULT_LIMIT_MESSAGE.to_string(),
            rate_per_ip: DEFAULT_RATE_PER_IP,
            rate_per_subject: DEFAULT_RATE_PER_SUBJECT,
        }
    }
}

fn limit(env: &dyn Env, var: &'static str) -> Result<Option<i64>, ConfigError> {
    let Some(raw) = env.get(var).filter(|v| !v.trim().is_empty()) else {
        return Ok(None);
    };
    let v: i64 = raw
        .trim()
        .parse()
        .map_err(|_| invalid(var, &raw, "not a whole number"))?;
    if !(0..=MAX_LIMIT).contains(&v) {
        return Err(invalid(
            var,
            &raw,
            format!("must be between 0 and {MAX_LIMIT} (unset: unlimited)"),
        ));
    }
    Ok(Some(v))
}

impl UsageSettings {
    pub fn from_env(env: &dyn Env) -> Result<Self, ConfigError> {
        let limit_message = match env.get("VOXWIRE_LIMIT_MESSAGE") {
            None => DEFAULT_LIMIT_MESSAGE.to_string(),
            Some(m) if m.trim().is_empty() => DEFAULT_LIMIT_MESSAGE.to_string(),
            Some(m) if m.trim().chars().count() > MAX_LIMIT_MESSAGE_CHARS => {
                return Err(invalid(
                    "VOXWIRE_LIMIT_MESSAGE",
                    &m,
                    format!("longer than {MAX_LIMIT_MESSAGE_CHARS} characters"),
                ))
            }
            Some(m) => m.trim().to_string(),
        };
        Ok(Self {
            defaults: OrgLimits {
                concurrent_calls: limit(env, "VOXWIRE_LIMIT_CONCURRENT_CALLS")?,
                daily_minutes: limit(env, "VOXWIRE_LIMIT_DAILY_MINUTES")?,
                subject_concurrent_calls: limit(env, "VOXWIRE_LIMIT_SUBJECT_CONCURRENT_CALLS")?,
                subject_daily_minutes: limit(env, "VOXWIRE_LIMIT_SUBJECT_DAILY_MINUTES")?,
            },
            limit_message,
            rate_per_ip: parse_num(
                env,
                "VOXWIRE_RATE_LIMIT_PER_IP",
                DEFAULT_RATE_PER_IP,
                0,
                1_000_000,
            )?,
            rate_per_subject: parse_num(
                env,
                "VOXWIRE_RATE_LIMIT_PER_SUBJECT",
                DEFAULT_RATE_PER_SUBJECT,
                0,
                1_000_000,
            )?,
        })
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    fn env(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn limits_default_to_unlimited_and_are_checked() {
        let s = UsageSettings::from_env(&env(&[])).unwrap();
        assert_eq!(s.defaults, OrgLimits::default());
        assert_eq!(s.limit_message, DEFAULT_LIMIT_MESSAGE);
        assert_eq!(s.rate_per_ip, DEFAULT_RATE_PER_IP);
        let s = UsageSettings::from_env(&env(&[("VOXWIRE_RATE_LIMIT_PER_SUBJECT", "0")])).unwrap();
        assert_eq!(s.rate_per_subject, 0);
        assert!(UsageSettings::from_env(&env(&[("VOXWIRE_RATE_LIMIT_PER_IP", "-1")])).is_err());
        let s = UsageSettings::from_env(&env(&[
            ("VOXWIRE_LIMIT_CONCURRENT_CALLS", "3"),
            ("VOXWIRE_LIMIT_SUBJECT_DAILY_MINUTES", " 0 "),
            ("VOXWIRE_LIMIT_DAILY_MINUTES", ""),
            ("VOXWIRE_LIMIT_MESSAGE", "  Time is up.  "),
        ]))
        .unwrap();
        assert_eq!(s.defaults.concurrent_calls, Some(3));
        assert_eq!(s.defaults.subject_daily_minutes, Some(0));
        assert_eq!(s.defaults.daily_minutes, None);
        assert_eq!(s.limit_message, "Time is up.");
        for bad in ["-1", "1.5", "lots", "99999999999"] {
            let e =
                UsageSettings::from_env(&env(&[("VOXWIRE_LIMIT_DAILY_MINUTES", bad)])).unwrap_err();
            assert!(e.to_string().contains("VOXWIRE_LIMIT_DAILY_MINUTES"), "{e}");
        }
        let long = "a".repeat(MAX_LIMIT_MESSAGE_CHARS + 1);
        assert!(UsageSettings::from_env(&env(&[("VOXWIRE_LIMIT_MESSAGE", &long)])).is_err());
    }
}

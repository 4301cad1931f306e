//! Signed webhooks: each agent's URL and secret (read at start-up from the variable its
//! `webhook_secret_env` names), how long a delivery is retried (`VOXWIRE_WEBHOOK_RETRY_FOR`),
//! the per-request timeout (`VOXWIRE_WEBHOOK_TIMEOUT_SECS`), the requests in flight at once
//! (`VOXWIRE_WEBHOOK_CONCURRENCY`) and the events that may wait to be stored
//! (`VOXWIRE_WEBHOOK_QUEUE`).

use std::collections::HashMap;
use std::time::Duration;

use super::{invalid, parse_num, ConfigError, Env};
use crate::agents::Agents;

/// The shortest secret accepted, in bytes.
pub const MIN_SECRET_BYTES: usize = 16;

/// A signing secret. Its `Debug` never shows it.
#[derive(Clone, PartialEq, Eq)]
pub struct WebhookSecret(String);

impl WebhookSecret {
    pub fn new(secret: impl Into<String>) -> Self {
        Self(secret.into())
    }

    pub fn expose(&self) -> &[u8] {
        self.0.as_bytes()
    }
}

impl std::fmt::Debug for WebhookSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("<redacted>")
    }
}

/// Where one agent's webhooks go and what signs them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WebhookTarget {
    pub url: String,
    pub secret: WebhookSecret,
}

#[derive(Debug, Clone)]
pub struct WebhookSettings {
    /// By agent name: the agents that have a webhook.
    pub targets: HashMap<String, WebhookTarget>,
    /// A delivery not delivered this long after it was made is given up
    /// (`VOXWIRE_WEBHOOK_RETRY_FOR`, default 24 h).
    pub retry_for: Duration,
    /// The delay before the first retry; each next one doubles, up to `retry_max`, with
    /// jitter. Not read from the environment (tests make them small).
    pub retry_min: Duration,
    pub retry_max: Duration,
    /// A request that has not answered in this long failed (and is retried).
    pub timeout: Duration,
    /// Requests in flight at once, over every agent.
    pub concurrency: usize,
    /// Call events waiting to be made into stored deliveries; past that they are dropped and
    /// counted (`voxwire_webhook_dropped_total`).
    pub queue: usize,
    /// How often the store is looked at for deliveries that are due.
    pub poll: Duration,
}

impl Default for WebhookSettings {
    fn default() -> Self {
        Self {
            targets: HashMap::new(),
            retry_for: Duration::from_secs(24 * 3600),
            retry_min: Duration::from_secs(10),
            retry_max: Duration::from_secs(3600),
            timeout: Duration::from_secs(10),
            concurrency: 8,
            queue: 1000,
            poll: Duration::from_secs(1),
        }
    }
}

impl WebhookSettings {
    pub fn from_env(env: &dyn Env, agents: &Agents) -> Result<Self, ConfigError> {
        const RETRY_FOR: &str = "VOXWIRE_WEBHOOK_RETRY_FOR";
        let retry_for = match env.get(RETRY_FOR) {
            None => Self::default().retry_for,
            Some(raw) => {
                let d = humantime::parse_duration(raw.trim()).map_err(|_| {
                    invalid(
                        RETRY_FOR,
                        &raw,
                        "expected a duration such as 30m, 24h or 3d",
                    )
                })?;
                if d < Duration::from_secs(1) || d > Duration::from_secs(30 * 24 * 3600) {
                    return Err(invalid(RETRY_FOR, &raw, "must be between 1s and 30d"));
                }
                d
            }
        };
        Ok(Self {
            targets: targets(env, agents)?,
            retry_for,
            timeout: Duration::from_secs(parse_num(
                env,
                "VOXWIRE_WEBHOOK_TIMEOUT_SECS",
                10,
                1,
                300,
            )?),
            concurrency: parse_num(env, "VOXWIRE_WEBHOOK_CONCURRENCY", 8, 1, 1024)?,
            queue: parse_num(env, "VOXWIRE_WEBHOOK_QUEUE", 1000, 10, 1_000_000)?,
            ..Self::default()
        })
    }
}

/// Each agent's webhook, with its secret read from the variable it names. A webhook whose
/// secret cannot be read is refused, naming the agent and the variable (never a value).
pub fn targets(
    env: &dyn Env,
    agents: &Agents,
) -> Result<HashMap<String, WebhookTarget>, ConfigError> {
    let mut out = HashMap::new();
    for agent in agents.iter() {
        let (Some(url), Some(var)) = (&agent.webhook_url, &agent.webhook_secret_env) else {
            continue;
        };
        let refuse = |reason: String| ConfigError::Chain {
            place: format!("agent `{}` (webhook_secret_env)", agent.name),
            reason,
        };
        let Some(secret) = env.get(var) else {
            return Err(refuse(format!(
                "{var} is not set or empty; it must hold the secret that signs this agent's webhooks"
            )));
        };
        if secret.len() < MIN_SECRET_BYTES {
            return Err(refuse(format!(
                "{var} holds a secret shorter than {MIN_SECRET_BYTES} bytes"
            )));
        }
        out.insert(
            agent.name.clone(),
            WebhookTarget {
                url: url.trim().to_string(),
                secret: WebhookSecret(secret),
            },
        );
    }
    Ok(out)
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

    const AGENTS: &str = "default = \"a\"\n\
        [[agent]]\nname = \"a\"\nsystem_prompt = \"p\"\n\
        webhook_url = \"https://hooks.example/voxwire\"\nwebhook_secret_env = \"A_HOOK_SECRET\"\n\
        [[agent]]\nname = \"b\"\nsystem_prompt = \"p\"\n";

    #[test]
    fn secrets_are_read_and_never_shown() {
        let agents = Agents::parse(AGENTS).unwrap();
        let secret = "whsec-0123456789abcdef";
        let s = WebhookSettings::from_env(&env(&[("A_HOOK_SECRET", secret)]), &agents).unwrap();
        assert_eq!(s.targets.len(), 1);
        assert_eq!(s.targets["a"].secret.expose(), secret.as_bytes());
        assert_eq!(s.targets["a"].url, "https://hooks.example/voxwire");
        assert!(!format!("{s:?}").contains(secret), "secret in Debug output");
        assert_eq!(s.retry_for, Duration::from_secs(24 * 3600));
    }

    #[test]
    fn a_webhook_without_its_secret_is_refused() {
        let agents = Agents::parse(AGENTS).unwrap();
        let e = WebhookSettings::from_env(&env(&[]), &agents).unwrap_err();
        let msg = e.to_string();
        assert!(msg.contains("agent `a`"), "{msg}");
        assert!(msg.contains("A_HOOK_SECRET is not set"), "{msg}");
        let e = WebhookSettings::from_env(&env(&[("A_HOOK_SECRET", "short-s3cret")]), &agents)
            .unwrap_err();
        assert!(!e.to_string().contains("short-s3cret"), "{e}");
        let e = WebhookSettings::from_env(
            &env(&[
                ("A_HOOK_SECRET", "whsec-0123456789abcdef"),
                ("VOXWIRE_WEBHOOK_RETRY_FOR", "forever"),
            ]),
            &agents,
        )
        .unwrap_err();
        assert!(
            e.to_string().starts_with("VOXWIRE_WEBHOOK_RETRY_FOR:"),
            "{e}"
        );
        let s = WebhookSettings::from_env(
            &env(&[
                ("A_HOOK_SECRET", "whsec-0123456789abcdef"),
                ("VOXWIRE_WEBHOOK_RETRY_FOR", "90m"),
            ]),
            &agents,
        )
        .unwrap();
        assert_eq!(s.retry_for, Duration::from_secs(90 * 60));
    }
}

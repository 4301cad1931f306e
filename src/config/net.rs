//! Network limits and timeouts: how long a client may take to send its request headers, how
//! many connections one address may hold, the WebSocket heartbeat and write deadline, and how
//! long a token may live, and how many monitor streams an org may hold.

use std::time::Duration;

use super::{invalid, parse_num, ConfigError, Env};

#[derive(Debug, Clone)]
pub struct NetSettings {
    /// A connection must send a whole request head within this (`VOXWIRE_HEADER_TIMEOUT_SECS`).
    pub header_read_timeout: Duration,
    /// Open connections (WebSockets included) per client address; 0 for no cap.
    pub max_connections_per_ip: usize,
    /// How often the server pings each WebSocket (`VOXWIRE_WS_PING_SECS`).
    pub ws_ping_interval: Duration,
    /// A WebSocket from which nothing (no frame, no pong) arrives for this long is closed
    /// (`VOXWIRE_WS_IDLE_TIMEOUT_SECS`).
    pub ws_idle_timeout: Duration,
    /// A frame the client does not take within this closes its socket and ends its call
    /// (`VOXWIRE_WS_WRITE_TIMEOUT_SECS`).
    pub ws_write_timeout: Duration,
    /// A push-to-talk body must arrive within this (`VOXWIRE_BODY_TIMEOUT_SECS`).
    pub body_timeout: Duration,
    /// Tokens that live longer than this are refused (`VOXWIRE_MAX_TOKEN_TTL`).
    pub max_token_ttl: Duration,
    /// Monitor streams (`GET /api/monitor/events`) open at once per org (`VOXWIRE_MAX_MONITORS`).
    pub max_monitors: usize,
    /// Events the server-wide monitor feed keeps for its slowest reader; past that a reader is
    /// told how many it lost (`VOXWIRE_MONITOR_BUFFER`).
    pub monitor_buffer: usize,
    /// The address clients and other services reach this server at, without a trailing `/`
    /// (`VOXWIRE_PUBLIC_URL`, e.g. `https://voice.example.com`): webhooks link to recordings
    /// with it. `None`: links are paths (`/api/calls/{id}/recording`).
    pub public_url: Option<String>,
}

impl NetSettings {
    pub fn from_env(env: &dyn Env) -> Result<Self, ConfigError> {
        let secs = |var, default, min, max| {
            parse_num::<u64>(env, var, default, min, max).map(Duration::from_secs)
        };
        let ws_ping_interval = secs("VOXWIRE_WS_PING_SECS", 20, 1, 3_600)?;
        let ws_idle_timeout = secs("VOXWIRE_WS_IDLE_TIMEOUT_SECS", 60, 2, 86_400)?;
        if ws_idle_timeout <= ws_ping_interval {
            return Err(invalid(
                "VOXWIRE_WS_IDLE_TIMEOUT_SECS",
                &ws_idle_timeout.as_secs().to_string(),
                format!(
                    "must be longer than VOXWIRE_WS_PING_SECS ({} s), or live clients are closed",
                    ws_ping_interval.as_secs()
                ),
            ));
        }
        Ok(Self {
            header_read_timeout: secs("VOXWIRE_HEADER_TIMEOUT_SECS", 10, 1, 600)?,
            max_connections_per_ip: parse_num(
                env,
                "VOXWIRE_MAX_CONNECTIONS_PER_IP",
                256,
                0,
                10_000_000,
            )?,
            ws_ping_interval,
            ws_idle_timeout,
            ws_write_timeout: secs("VOXWIRE_WS_WRITE_TIMEOUT_SECS", 10, 1, 600)?,
            body_timeout: secs("VOXWIRE_BODY_TIMEOUT_SECS", 30, 1, 3_600)?,
            max_token_ttl: parse_ttl(env)?,
            max_monitors: parse_num(env, "VOXWIRE_MAX_MONITORS", 32, 1, 100_000)?,
            monitor_buffer: parse_num(env, "VOXWIRE_MONITOR_BUFFER", 4096, 16, 1 << 20)?,
            public_url: parse_public_url(env)?,
        })
    }
}

impl NetSettings {
    /// `VOXWIRE_PUBLIC_URL` for WebSockets: `https://` made `wss://`, `http://` made `ws://`.
    pub fn public_socket_url(&self) -> Option<String> {
        let base = self.public_url.as_deref()?;
        Some(if let Some(rest) = base.strip_prefix("https://") {
            format!("wss://{rest}")
        } else if let Some(rest) = base.strip_prefix("http://") {
            format!("ws://{rest}")
        } else {
            base.to_string()
        })
    }
}

fn parse_public_url(env: &dyn Env) -> Result<Option<String>, ConfigError> {
    const VAR: &str = "VOXWIRE_PUBLIC_URL";
    let Some(raw) = env.get(VAR) else {
        return Ok(None);
    };
    let url = raw.trim().trim_end_matches('/');
    let ok = reqwest::Url::parse(url).ok().is_some_and(|u| {
        matches!(u.scheme(), "http" | "https")
            && u.host_str().is_some_and(|h| !h.is_empty())
            && u.query().is_none()
            && u.fragment().is_none()
    });
    if !ok {
        return Err(invalid(
            VAR,
            &raw,
            "expected an http:// or https:// address such as https://voice.example.com",
        ));
    }
    Ok(Some(url.to_string()))
}

fn parse_ttl(env: &dyn Env) -> Result<Duration, ConfigError> {
    const VAR: &str = "VOXWIRE_MAX_TOKEN_TTL";
    let Some(raw) = env.get(VAR) else {
        return Ok(crate::auth::DEFAULT_MAX_TOKEN_TTL);
    };
    let ttl = humantime::parse_duration(raw.trim())
        .map_err(|_| invalid(VAR, &raw, "expected a duration such as 1h, 7d or 30d"))?;
    let max = Duration::from_secs(10 * 365 * 24 * 3600);
    if ttl < Duration::from_secs(60) || ttl > max {
        return Err(invalid(VAR, &raw, "must be between 1m and 3650d"));
    }
    Ok(ttl)
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
    fn defaults_and_bad_values() {
        let n = NetSettings::from_env(&env(&[])).unwrap();
        assert_eq!(n.header_read_timeout, Duration::from_secs(10));
        assert_eq!(n.max_connections_per_ip, 256);
        assert_eq!(n.max_token_ttl, Duration::from_secs(7 * 24 * 3600));
        assert_eq!((n.max_monitors, n.monitor_buffer), (32, 4096));
        let e = NetSettings::from_env(&env(&[("VOXWIRE_MAX_MONITORS", "0")])).unwrap_err();
        assert!(e.to_string().starts_with("VOXWIRE_MAX_MONITORS:"), "{e}");
        let n = NetSettings::from_env(&env(&[("VOXWIRE_MAX_TOKEN_TTL", "30d")])).unwrap();
        assert_eq!(n.max_token_ttl, Duration::from_secs(30 * 24 * 3600));
        assert_eq!(n.public_url, None);
        let n = NetSettings::from_env(&env(&[(
            "VOXWIRE_PUBLIC_URL",
            " https://voice.example.com/base/ ",
        )]))
        .unwrap();
        assert_eq!(
            n.public_url.as_deref(),
            Some("https://voice.example.com/base")
        );
        assert_eq!(
            n.public_socket_url().as_deref(),
            Some("wss://voice.example.com/base")
        );
        for bad in [
            "voice.example.com",
            "ftp://x.example",
            "https://x.example/?a=1",
        ] {
            let e = NetSettings::from_env(&env(&[("VOXWIRE_PUBLIC_URL", bad)])).unwrap_err();
            assert!(e.to_string().starts_with("VOXWIRE_PUBLIC_URL:"), "{e}");
        }
        let e = NetSettings::from_env(&env(&[("VOXWIRE_MAX_TOKEN_TTL", "forever")])).unwrap_err();
        assert!(e.to_string().starts_with("VOXWIRE_MAX_TOKEN_TTL:"), "{e}");
        let e = NetSettings::from_env(&env(&[
            ("VOXWIRE_WS_PING_SECS", "30"),
            ("VOXWIRE_WS_IDLE_TIMEOUT_SECS", "30"),
        ]))
        .unwrap_err();
        assert!(e.to_string().contains("VOXWIRE_WS_PING_SECS"), "{e}");
        let e = NetSettings::from_env(&env(&[("VOXWIRE_HEADER_TIMEOUT_SECS", "0")])).unwrap_err();
        assert!(
            e.to_string().starts_with("VOXWIRE_HEADER_TIMEOUT_SECS:"),
            "{e}"
        );
    }
}

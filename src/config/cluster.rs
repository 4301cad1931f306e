//! Several nodes, one service: `VOXWIRE_REDIS_URL` (what is live and shared between nodes),
//! `VOXWIRE_NODE_ID` (this node's name in the cluster and in the `x-voxwire-node` header) and
//! `VOXWIRE_LEASE_MS` (how long a live call stays held by a node that stopped renewing it).

use std::time::Duration;

use super::{invalid, parse_num, ConfigError, Env};
use crate::store::redact_url;

#[derive(Clone)]
pub struct ClusterSettings {
    /// `redis://[:PASSWORD@]HOST:PORT[/DB]` (or `rediss://`); `None`: one node, everything live
    /// kept in its memory. May hold a password: never log it as it is.
    pub redis_url: Option<String>,
    /// This node's name: `VOXWIRE_NODE_ID`, else `node-` and random hex.
    pub node_id: String,
    /// A node that stops renewing its calls' leases (it died) loses them after this long.
    pub lease: Duration,
}

impl std::fmt::Debug for ClusterSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClusterSettings")
            .field("redis_url", &self.redis_url.as_deref().map(redact_url))
            .field("node_id", &self.node_id)
            .field("lease", &self.lease)
            .finish()
    }
}

/// Longest node id; it goes into Redis keys, channel names and a response header.
const MAX_NODE_ID: usize = 64;

impl ClusterSettings {
    pub fn from_env(env: &dyn Env) -> Result<Self, ConfigError> {
        let redis_url = match env.get("VOXWIRE_REDIS_URL") {
            Some(u) => {
                let u = u.trim().to_string();
                if !(u.starts_with("redis://") || u.starts_with("rediss://")) {
                    return Err(invalid(
                        "VOXWIRE_REDIS_URL",
                        &redact_url(&u),
                        "expected redis://[:PASSWORD@]HOST:PORT[/DB] or rediss://...",
                    ));
                }
                Some(u)
            }
            None => None,
        };
        let node_id = match env.get("VOXWIRE_NODE_ID") {
            Some(raw) => {
                let id = raw.trim().to_string();
                let ok = id.len() <= MAX_NODE_ID
                    && id
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c));
                if !ok {
                    return Err(invalid(
                        "VOXWIRE_NODE_ID",
                        &raw,
                        format!("use at most {MAX_NODE_ID} letters, digits, `-`, `_` or `.`"),
                    ));
                }
                id
            }
            None => format!("node-{:06x}", rand::random::<u32>() & 0xff_ffff),
        };
        let lease_ms: u64 = parse_num(env, "VOXWIRE_LEASE_MS", 5_000, 1_000, 600_000)?;
        Ok(Self {
            redis_url,
            node_id,
            lease: Duration::from_millis(lease_ms),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn env(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn defaults_to_one_node_and_checks_what_it_is_given() {
        let s = ClusterSettings::from_env(&env(&[])).unwrap();
        assert!(s.redis_url.is_none());
        assert!(s.node_id.starts_with("node-"));
        assert_eq!(s.lease, Duration::from_secs(5));
        let s = ClusterSettings::from_env(&env(&[
            ("VOXWIRE_REDIS_URL", "redis://:secret-pw@127.0.0.1:6390/0"),
            ("VOXWIRE_NODE_ID", "eu-1"),
            ("VOXWIRE_LEASE_MS", "3000"),
        ]))
        .unwrap();
        assert_eq!(s.node_id, "eu-1");
        assert_eq!(s.lease, Duration::from_secs(3));
        assert!(!format!("{s:?}").contains("secret-pw"));
        for bad in [
            ("VOXWIRE_REDIS_URL", "http://127.0.0.1:6379"),
            ("VOXWIRE_NODE_ID", "a b"),
            ("VOXWIRE_LEASE_MS", "10"),
        ] {
            assert!(ClusterSettings::from_env(&env(&[bad])).is_err(), "{bad:?}");
        }
    }
}

//! Where calls are kept (`VOXWIRE_DATABASE_URL`) and how many writes may wait for the database
//! (`VOXWIRE_STORE_QUEUE`).

use super::{invalid, parse_num, ConfigError, Env};
use std::path::PathBuf;

use crate::store::{default_url, redact_url, scheme_supported};

/// `recordings/` next to a SQLite database, else next to the default database file.
fn default_recordings_dir(database_url: &str) -> PathBuf {
    let sqlite_file = |url: &str| {
        url.strip_prefix("sqlite://")
            .map(|p| PathBuf::from(p.split('?').next().unwrap_or(p)))
    };
    let db = sqlite_file(database_url)
        .filter(|p| !p.as_os_str().is_empty() && !p.starts_with(":memory:"))
        .or_else(|| sqlite_file(&default_url()))
        .unwrap_or_else(|| PathBuf::from("voxwire.db"));
    db.parent()
        .map_or_else(|| PathBuf::from("recordings"), |d| d.join("recordings"))
}

#[derive(Clone)]
pub struct StoreSettings {
    /// `sqlite://PATH`, `postgres://...` or `memory`. May hold a password: never log it as it
    /// is (`Debug` and [`redact_url`] hide it).
    pub database_url: String,
    /// Writes that may wait for the database before new ones are dropped.
    pub queue: usize,
    /// Where call recordings are written (`VOXWIRE_RECORDINGS_DIR`): by default `recordings/`
    /// next to the SQLite file, else in the data folder.
    pub recordings_dir: PathBuf,
}

impl std::fmt::Debug for StoreSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StoreSettings")
            .field("database_url", &redact_url(&self.database_url))
            .field("queue", &self.queue)
            .field("recordings_dir", &self.recordings_dir)
            .finish()
    }
}

impl StoreSettings {
    pub fn from_env(env: &dyn Env) -> Result<Self, ConfigError> {
        const VAR: &str = "VOXWIRE_DATABASE_URL";
        let database_url = match env.get(VAR) {
            Some(url) => url.trim().to_string(),
            None => default_url(),
        };
        if !scheme_supported(&database_url) {
            return Err(invalid(
                VAR,
                &redact_url(&database_url),
                "expected sqlite://PATH, postgres://USER:PASSWORD@HOST:PORT/DB or memory",
            ));
        }
        let recordings_dir = match env.get("VOXWIRE_RECORDINGS_DIR") {
            Some(d) if !d.trim().is_empty() => PathBuf::from(d.trim()),
            _ => default_recordings_dir(&database_url),
        };
        Ok(Self {
            database_url,
            queue: parse_num(env, "VOXWIRE_STORE_QUEUE", 10_000, 100, 10_000_000)?,
            recordings_dir,
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
    fn defaults_and_bad_values() {
        let s = StoreSettings::from_env(&env(&[])).unwrap();
        assert!(s.database_url.starts_with("sqlite://"), "{s:?}");
        assert!(s.database_url.ends_with("voxwire.db"), "{s:?}");
        assert_eq!(s.queue, 10_000);
        let url = "postgres://app:hunter22@db:5432/voxwire";
        let s = StoreSettings::from_env(&env(&[("VOXWIRE_DATABASE_URL", url)])).unwrap();
        assert_eq!(s.database_url, url);
        assert!(!format!("{s:?}").contains("hunter22"), "{s:?}");
        let e =
            StoreSettings::from_env(&env(&[("VOXWIRE_DATABASE_URL", "mysql://u:hunter22@db/x")]))
                .unwrap_err();
        assert!(e.to_string().starts_with("VOXWIRE_DATABASE_URL:"), "{e}");
        assert!(!e.to_string().contains("hunter22"), "{e}");
        let e = StoreSettings::from_env(&env(&[("VOXWIRE_STORE_QUEUE", "10")])).unwrap_err();
        assert!(e.to_string().starts_with("VOXWIRE_STORE_QUEUE:"), "{e}");
    }
}

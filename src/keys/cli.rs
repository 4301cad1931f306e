//! `voxwire keys create|list|revoke`, against the configured store. The key is printed once,
//! by `create`; nothing else ever shows it.

use std::fmt::Write as _;
use std::time::{Duration, UNIX_EPOCH};

use crate::store::{KeyRow, Revoked, Store};

/// Why a command failed: a bad argument (exit 64) or anything else (exit 1).
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    #[error("{0}")]
    Usage(String),
    #[error("{0}")]
    Failed(String),
}

fn store_failed(e: crate::store::StoreError) -> CliError {
    CliError::Failed(format!("the store (VOXWIRE_DATABASE_URL): {e}"))
}

/// Keys kept in memory would be gone when the command exits: a database is needed.
pub fn durable(store: &Store) -> Result<(), CliError> {
    if store.describe() == "memory" {
        return Err(CliError::Usage(
            "VOXWIRE_DATABASE_URL is `memory`, which keeps nothing after this command; \
             keys need the server's database (sqlite:// or postgres://)"
                .into(),
        ));
    }
    Ok(())
}

/// Creates a key for `org` (made if new) named `name`; what to print, with the key.
pub async fn create(store: &Store, org: &str, name: &str) -> Result<String, CliError> {
    if !super::valid_org(org) {
        return Err(CliError::Usage(
            "--org: 1 to 64 letters, digits, -, _ or .".into(),
        ));
    }
    if !super::valid_key_name(name) {
        return Err(CliError::Usage(
            "--name: 1 to 64 characters, without control characters".into(),
        ));
    }
    let key = super::generate();
    let row = KeyRow {
        id: key.id.clone(),
        org: org.to_string(),
        name: name.trim().to_string(),
        secret_sha256: key.secret_sha256,
        created_at_ms: crate::call::record::now_ms(),
        last_used_at_ms: None,
        revoked_at_ms: None,
    };
    store.create_key(&row).await.map_err(store_failed)?;
    Ok(format!(
        "id:  {}\norg: {}\nkey: {}\nKeep the key now: it is not shown again (only its hash is stored).\n",
        row.id, row.org, key.text
    ))
}

fn time(ms: Option<i64>) -> String {
    match ms {
        Some(ms) if ms >= 0 => {
            let t = UNIX_EPOCH + Duration::from_millis(ms as u64);
            humantime::format_rfc3339_seconds(t).to_string()
        }
        _ => "-".to_string(),
    }
}

/// The keys of `org` (every org's for `None`) as a table; never a secret.
pub async fn list(store: &Store, org: Option<&str>) -> Result<String, CliError> {
    if org.is_some_and(|o| !super::valid_org(o)) {
        return Err(CliError::Usage(
            "--org: 1 to 64 letters, digits, -, _ or .".into(),
        ));
    }
    let rows = store.list_keys(org).await.map_err(store_failed)?;
    let mut out = format!(
        "{:<16}  {:<16}  {:<20}  {:<20}  {:<20}  {}\n",
        "ID", "ORG", "NAME", "CREATED", "LAST USED", "REVOKED"
    );
    for k in &rows {
        let _ = writeln!(
            out,
            "{:<16}  {:<16}  {:<20}  {:<20}  {:<20}  {}",
            k.id,
            k.org,
            k.name,
            time(Some(k.created_at_ms)),
            time(k.last_used_at_ms),
            time(k.revoked_at_ms)
        );
    }
    Ok(out)
}

/// Revokes the key `id`: it stops working at once.
pub async fn revoke(store: &Store, id: &str) -> Result<String, CliError> {
    // The whole key names its id too.
    let id = id.trim();
    let id = super::parse(id).map_or(id, |p| p.id);
    if id.is_empty() || id.len() > 64 {
        return Err(CliError::Usage(
            "ID: the key's id, from `voxwire keys list`".into(),
        ));
    }
    match store
        .revoke_key(id, crate::call::record::now_ms())
        .await
        .map_err(store_failed)?
    {
        Revoked::Now => Ok(format!("revoked key {id}\n")),
        Revoked::Already => Ok(format!("key {id} was already revoked\n")),
        Revoked::NotFound => Err(CliError::Failed(format!("no key {id}"))),
    }
}

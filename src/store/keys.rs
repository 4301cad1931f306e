//! Organisations, their API keys and the call sessions minted with them. The statements are
//! shared by SQLite and Postgres, like those of `sql.rs`. A key row holds the SHA-256 of the
//! key's secret, never the secret.

use std::collections::BTreeMap;

use serde::Serialize;
use sqlx::types::Json;
use sqlx::{Database, Encode, Executor, IntoArguments, Pool, Type};

use super::erase::Affected;

/// One API key of an org.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, sqlx::FromRow)]
pub struct KeyRow {
    /// 16 hex digits, the `<id>` of `vxk_<id>_<secret>`.
    pub id: String,
    pub org: String,
    /// What the key is for (`backend`).
    pub name: String,
    /// Hex SHA-256 of the secret; never shown.
    #[serde(skip)]
    pub secret_sha256: String,
    pub created_at_ms: i64,
    pub last_used_at_ms: Option<i64>,
    /// Set once the key is revoked; it works no more from then on.
    pub revoked_at_ms: Option<i64>,
}

/// What revoking a key did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Revoked {
    Now,
    Already,
    NotFound,
}

/// A call session: what a short-lived call token was minted for. Its first `start_call`
/// binds it to that call (`call_id`); from then on the token reaches only that call.
#[derive(Debug, Clone, PartialEq, Serialize, sqlx::FromRow)]
pub struct SessionRow {
    pub id: String,
    /// The org of the key that minted it (`None`: an admin of the default org).
    pub org: Option<String>,
    /// The key that minted it (`None`: an admin token).
    pub key_id: Option<String>,
    pub agent: String,
    pub sub: String,
    /// Bound variables: they win over `start_call.variables`.
    #[sqlx(json)]
    pub variables: BTreeMap<String, String>,
    /// The backend's own JSON object, kept with the session.
    #[sqlx(json)]
    pub metadata: serde_json::Value,
    pub created_at_ms: i64,
    pub expires_at_ms: i64,
    /// The call the session is bound to, once its first call started.
    pub call_id: Option<String>,
}

const KEY_COLUMNS: &str =
    "id, org, name, secret_sha256, created_at_ms, last_used_at_ms, revoked_at_ms";

const SESSION_COLUMNS: &str = "id, org, key_id, agent, sub, variables, metadata, \
    created_at_ms, expires_at_ms, call_id";

/// Most keys listed at once.
pub const MAX_LISTED_KEYS: i64 = 10_000;

/// Creates the key (and its org, if new), in one transaction.
pub(crate) async fn create_key<DB>(db: &Pool<DB>, k: &KeyRow) -> Result<(), sqlx::Error>
where
    DB: Database,
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
    for<'q> DB::Arguments<'q>: IntoArguments<'q, DB>,
    for<'q> &'q str: Encode<'q, DB> + Type<DB>,
    for<'q> i64: Encode<'q, DB> + Type<DB>,
    for<'q> Option<i64>: Encode<'q, DB> + Type<DB>,
{
    let mut tx = db.begin().await?;
    sqlx::query(
        "INSERT INTO orgs (name, created_at_ms) VALUES ($1, $2) ON CONFLICT (name) DO NOTHING",
    )
    .bind(k.org.as_str())
    .bind(k.created_at_ms)
    .execute(&mut *tx)
    .await?;
    sqlx::query(
        "INSERT INTO api_keys (id, org, name, secret_sha256, created_at_ms, last_used_at_ms, \
         revoked_at_ms) VALUES ($1, $2, $3, $4, $5, $6, $7)",
    )
    .bind(k.id.as_str())
    .bind(k.org.as_str())
    .bind(k.name.as_str())
    .bind(k.secret_sha256.as_str())
    .bind(k.created_at_ms)
    .bind(k.last_used_at_ms)
    .bind(k.revoked_at_ms)
    .execute(&mut *tx)
    .await?;
    tx.commit().await
}

pub(crate) async fn key<DB>(db: &Pool<DB>, id: &str) -> Result<Option<KeyRow>, sqlx::Error>
where
    DB: Database,
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
    for<'q> DB::Arguments<'q>: IntoArguments<'q, DB>,
    for<'q> &'q str: Encode<'q, DB> + Type<DB>,
    for<'r> KeyRow: sqlx::FromRow<'r, DB::Row>,
{
    let sql = format!("SELECT {KEY_COLUMNS} FROM api_keys WHERE id = $1");
    sqlx::query_as(&sql).bind(id).fetch_optional(db).await
}

/// The keys of `org` (every org's for `None`), by org and age.
pub(crate) async fn list_keys<DB>(
    db: &Pool<DB>,
    org: Option<&str>,
) -> Result<Vec<KeyRow>, sqlx::Error>
where
    DB: Database,
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
    for<'q> DB::Arguments<'q>: IntoArguments<'q, DB>,
    for<'q> &'q str: Encode<'q, DB> + Type<DB>,
    for<'q> i64: Encode<'q, DB> + Type<DB>,
    for<'r> KeyRow: sqlx::FromRow<'r, DB::Row>,
{
    const ORDER: &str = "ORDER BY org, created_at_ms, id";
    match org {
        Some(org) => {
            let sql = format!("SELECT {KEY_COLUMNS} FROM api_keys WHERE org = $1 {ORDER} LIMIT $2");
            sqlx::query_as(&sql)
                .bind(org)
                .bind(MAX_LISTED_KEYS)
                .fetch_all(db)
                .await
        }
        None => {
            let sql = format!("SELECT {KEY_COLUMNS} FROM api_keys {ORDER} LIMIT $1");
            sqlx::query_as(&sql)
                .bind(MAX_LISTED_KEYS)
                .fetch_all(db)
                .await
        }
    }
}

pub(crate) async fn revoke_key<DB>(
    db: &Pool<DB>,
    id: &str,
    at_ms: i64,
) -> Result<Revoked, sqlx::Error>
where
    DB: Database,
    DB::QueryResult: Affected,
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
    for<'q> DB::Arguments<'q>: IntoArguments<'q, DB>,
    for<'q> &'q str: Encode<'q, DB> + Type<DB>,
    for<'q> i64: Encode<'q, DB> + Type<DB>,
    for<'r> KeyRow: sqlx::FromRow<'r, DB::Row>,
{
    let changed = sqlx::query(
        "UPDATE api_keys SET revoked_at_ms = $2 WHERE id = $1 AND revoked_at_ms IS NULL",
    )
    .bind(id)
    .bind(at_ms)
    .execute(db)
    .await?
    .affected();
    if changed > 0 {
        return Ok(Revoked::Now);
    }
    Ok(match key(db, id).await? {
        Some(_) => Revoked::Already,
        None => Revoked::NotFound,
    })
}

pub(crate) async fn touch_key<DB>(db: &Pool<DB>, id: &str, at_ms: i64) -> Result<(), sqlx::Error>
where
    DB: Database,
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
    for<'q> DB::Arguments<'q>: IntoArguments<'q, DB>,
    for<'q> &'q str: Encode<'q, DB> + Type<DB>,
    for<'q> i64: Encode<'q, DB> + Type<DB>,
{
    sqlx::query("UPDATE api_keys SET last_used_at_ms = $2 WHERE id = $1")
        .bind(id)
        .bind(at_ms)
        .execute(db)
        .await?;
    Ok(())
}

/// Stores a new session, and deletes the sessions that expired before `now_ms` (their tokens
/// are dead, so nothing can use them again).
pub(crate) async fn insert_session<DB>(
    db: &Pool<DB>,
    s: &SessionRow,
    now_ms: i64,
) -> Result<(), sqlx::Error>
where
    DB: Database,
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
    for<'q> DB::Arguments<'q>: IntoArguments<'q, DB>,
    for<'q> &'q str: Encode<'q, DB> + Type<DB>,
    for<'q> Option<&'q str>: Encode<'q, DB> + Type<DB>,
    for<'q> i64: Encode<'q, DB> + Type<DB>,
    for<'q> Json<&'q BTreeMap<String, String>>: Encode<'q, DB> + Type<DB>,
    for<'q> Json<&'q serde_json::Value>: Encode<'q, DB> + Type<DB>,
{
    sqlx::query("DELETE FROM call_sessions WHERE expires_at_ms < $1")
        .bind(now_ms)
        .execute(db)
        .await?;
    let sql = format!(
        "INSERT INTO call_sessions ({SESSION_COLUMNS}) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)"
    );
    sqlx::query(&sql)
        .bind(s.id.as_str())
        .bind(s.org.as_deref())
        .bind(s.key_id.as_deref())
        .bind(s.agent.as_str())
        .bind(s.sub.as_str())
        .bind(Json(&s.variables))
        .bind(Json(&s.metadata))
        .bind(s.created_at_ms)
        .bind(s.expires_at_ms)
        .bind(s.call_id.as_deref())
        .execute(db)
        .await?;
    Ok(())
}

pub(crate) async fn session<DB>(db: &Pool<DB>, id: &str) -> Result<Option<SessionRow>, sqlx::Error>
where
    DB: Database,
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
    for<'q> DB::Arguments<'q>: IntoArguments<'q, DB>,
    for<'q> &'q str: Encode<'q, DB> + Type<DB>,
    for<'r> SessionRow: sqlx::FromRow<'r, DB::Row>,
{
    let sql = format!("SELECT {SESSION_COLUMNS} FROM call_sessions WHERE id = $1");
    sqlx::query_as(&sql).bind(id).fetch_optional(db).await
}

/// Binds the session to `call_id` unless it is bound to another call: one statement, so two
/// calls started at once with the same token cannot both have it. True when it is (now)
/// bound to `call_id`.
pub(crate) async fn bind_session<DB>(
    db: &Pool<DB>,
    id: &str,
    call_id: &str,
) -> Result<bool, sqlx::Error>
where
    DB: Database,
    DB::QueryResult: Affected,
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
    for<'q> DB::Arguments<'q>: IntoArguments<'q, DB>,
    for<'q> &'q str: Encode<'q, DB> + Type<DB>,
{
    let changed = sqlx::query(
        "UPDATE call_sessions SET call_id = $2 WHERE id = $1 AND (call_id IS NULL OR call_id = $2)",
    )
    .bind(id)
    .bind(call_id)
    .execute(db)
    .await?
    .affected();
    Ok(changed == 1)
}

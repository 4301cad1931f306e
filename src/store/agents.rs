//! Agents made over the API: their versions, appended, never changed. The statements are
//! shared by SQLite and Postgres, like those of `sql.rs`.

use serde::Serialize;
use sqlx::{Database, Encode, Executor, IntoArguments, Pool, Type};

use super::erase::Affected;

/// One version of an agent made over the API.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, sqlx::FromRow)]
pub struct AgentVersionRow {
    /// The org (`""`: the default org).
    pub org: String,
    pub name: String,
    /// 1, 2, 3... per agent.
    pub version: i64,
    /// The agent as JSON; `None` for the version that deleted it.
    pub definition: Option<String>,
    /// Who made this version (a token's `sub`, or an API key's name).
    pub actor: String,
    pub at_ms: i64,
}

const COLUMNS: &str = "org, name, version, definition, actor, at_ms";

/// The newest `limit` versions of the org's agent `name`, oldest first.
pub(crate) async fn history<DB>(
    db: &Pool<DB>,
    org: &str,
    name: &str,
    limit: i64,
) -> Result<Vec<AgentVersionRow>, sqlx::Error>
where
    DB: Database,
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
    for<'q> DB::Arguments<'q>: IntoArguments<'q, DB>,
    for<'q> &'q str: Encode<'q, DB> + Type<DB>,
    for<'q> i64: Encode<'q, DB> + Type<DB>,
    for<'r> AgentVersionRow: sqlx::FromRow<'r, DB::Row>,
{
    let sql = format!(
        "SELECT {COLUMNS} FROM agent_versions WHERE org = $1 AND name = $2 \
         ORDER BY version DESC LIMIT $3"
    );
    let mut rows: Vec<AgentVersionRow> = sqlx::query_as(&sql)
        .bind(org)
        .bind(name)
        .bind(limit)
        .fetch_all(db)
        .await?;
    rows.reverse();
    Ok(rows)
}

/// The newest version of every agent of every org (deleted ones included: their definition
/// is `None`).
pub(crate) async fn current<DB>(db: &Pool<DB>) -> Result<Vec<AgentVersionRow>, sqlx::Error>
where
    DB: Database,
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
    for<'q> DB::Arguments<'q>: IntoArguments<'q, DB>,
    for<'r> AgentVersionRow: sqlx::FromRow<'r, DB::Row>,
{
    let sql = format!(
        "SELECT {COLUMNS} FROM agent_versions v WHERE version = \
         (SELECT MAX(version) FROM agent_versions w WHERE w.org = v.org AND w.name = v.name) \
         ORDER BY org, name"
    );
    sqlx::query_as(&sql).fetch_all(db).await
}

/// Adds a version; false when that version exists already (someone else changed the agent
/// meanwhile).
pub(crate) async fn insert<DB>(db: &Pool<DB>, row: &AgentVersionRow) -> Result<bool, sqlx::Error>
where
    DB: Database,
    DB::QueryResult: Affected,
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
    for<'q> DB::Arguments<'q>: IntoArguments<'q, DB>,
    for<'q> &'q str: Encode<'q, DB> + Type<DB>,
    for<'q> Option<&'q str>: Encode<'q, DB> + Type<DB>,
    for<'q> i64: Encode<'q, DB> + Type<DB>,
{
    let done = sqlx::query(
        "INSERT INTO agent_versions (org, name, version, definition, actor, at_ms) \
         VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (org, name, version) DO NOTHING",
    )
    .bind(row.org.as_str())
    .bind(row.name.as_str())
    .bind(row.version)
    .bind(row.definition.as_deref())
    .bind(row.actor.as_str())
    .bind(row.at_ms)
    .execute(db)
    .await?;
    Ok(done.affected() == 1)
}

//! Deleting calls, for retention and for erasing a subject: finding the calls, deleting them
//! with their items, turn metrics, events, webhook deliveries and summaries in one transaction
//! (their usage rows stay, without the subject), and the audit entry of an erasure. The statements are shared by SQLite and Postgres, like those of `sql.rs`.

use serde::Serialize;
use sqlx::{Database, Encode, Executor, IntoArguments, Pool, Type};

/// The `sub` of usage rows whose calls were deleted: the org's usage is kept, whose it was
/// is not.
pub const ERASED_SUB: &str = "(erased)";

/// Ids bound per `IN (...)` list, well under SQLite's limit on parameters.
pub(crate) const CHUNK: usize = 500;

/// The rows a deletion removed (and, filled in by the caller, the recording files).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Deleted {
    pub calls: i64,
    pub items: i64,
    pub metrics: i64,
    pub events: i64,
    pub recordings: i64,
    /// Webhook deliveries of the calls (their bodies hold the transcript).
    pub webhooks: i64,
    /// The calls' summaries.
    pub summaries: i64,
}

impl std::ops::AddAssign for Deleted {
    fn add_assign(&mut self, o: Self) {
        self.calls += o.calls;
        self.items += o.items;
        self.metrics += o.metrics;
        self.events += o.events;
        self.recordings += o.recordings;
        self.webhooks += o.webhooks;
        self.summaries += o.summaries;
    }
}

/// Who erased, when and where; written with the counts in `audit_log`. Holds no personal
/// data of the subject (not its `sub`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditEntry {
    pub at_ms: i64,
    /// The admin's `sub`.
    pub actor: String,
    /// The admin's org (`None`: the default org).
    pub org: Option<String>,
    /// What was done: `erase_subject`.
    pub action: String,
    /// Recording files removed (the rows are counted by the deletion itself).
    pub recordings: i64,
}

/// One row of `audit_log`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, sqlx::FromRow)]
pub struct AuditRow {
    pub id: i64,
    pub at_ms: i64,
    pub actor: String,
    pub org: Option<String>,
    pub action: String,
    pub calls: i64,
    pub items: i64,
    pub metrics: i64,
    pub events: i64,
    pub recordings: i64,
    pub webhooks: i64,
    pub summaries: i64,
}

/// Which agents' calls a retention pass takes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AgentScope {
    /// This agent's calls only (it has its own retention).
    Only(String),
    /// Every agent's but these (they have their own).
    Except(Vec<String>),
}

/// How many rows a statement changed, whatever the database.
pub(crate) trait Affected {
    fn affected(&self) -> i64;
}

impl Affected for sqlx::sqlite::SqliteQueryResult {
    fn affected(&self) -> i64 {
        self.rows_affected() as i64
    }
}

impl Affected for sqlx::postgres::PgQueryResult {
    fn affected(&self) -> i64 {
        self.rows_affected() as i64
    }
}

fn params(from: usize, n: usize) -> String {
    (from..from + n)
        .map(|i| format!("${i}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The ids of every call of one subject of one org (`None`: the default org).
pub(crate) async fn subject_calls<DB>(
    db: &Pool<DB>,
    org: Option<&str>,
    sub: &str,
) -> Result<Vec<String>, sqlx::Error>
where
    DB: Database,
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
    for<'q> DB::Arguments<'q>: IntoArguments<'q, DB>,
    for<'q> &'q str: Encode<'q, DB> + Type<DB>,
    for<'r> (String,): sqlx::FromRow<'r, DB::Row>,
{
    let rows: Vec<(String,)> = match org {
        Some(org) => {
            sqlx::query_as("SELECT id FROM calls WHERE sub = $1 AND org = $2 ORDER BY id")
                .bind(sub)
                .bind(org)
                .fetch_all(db)
                .await?
        }
        None => {
            sqlx::query_as("SELECT id FROM calls WHERE sub = $1 AND org IS NULL ORDER BY id")
                .bind(sub)
                .fetch_all(db)
                .await?
        }
    };
    Ok(rows.into_iter().map(|(id,)| id).collect())
}

/// Up to `limit` ended calls of `scope` that started before `before_ms`, oldest first.
pub(crate) async fn expired_calls<DB>(
    db: &Pool<DB>,
    before_ms: i64,
    scope: &AgentScope,
    limit: i64,
) -> Result<Vec<String>, sqlx::Error>
where
    DB: Database,
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
    for<'q> DB::Arguments<'q>: IntoArguments<'q, DB>,
    for<'q> &'q str: Encode<'q, DB> + Type<DB>,
    for<'q> i64: Encode<'q, DB> + Type<DB>,
    for<'r> (String,): sqlx::FromRow<'r, DB::Row>,
{
    let base = "SELECT id FROM calls WHERE ended_at_ms IS NOT NULL AND started_at_ms < $1";
    let (agents, names): (String, Vec<&str>) = match scope {
        AgentScope::Only(a) => (" AND agent = $2".into(), vec![a.as_str()]),
        AgentScope::Except(v) if v.is_empty() => (String::new(), Vec::new()),
        AgentScope::Except(v) => (
            format!(" AND agent NOT IN ({})", params(2, v.len())),
            v.iter().map(String::as_str).collect(),
        ),
    };
    let sql = format!(
        "{base}{agents} ORDER BY started_at_ms, id LIMIT ${}",
        names.len() + 2
    );
    let mut query = sqlx::query_as(&sql).bind(before_ms);
    for n in names {
        query = query.bind(n);
    }
    let rows: Vec<(String,)> = query.bind(limit).fetch_all(db).await?;
    Ok(rows.into_iter().map(|(id,)| id).collect())
}

/// Deletes the calls `ids` with their items, turn metrics and events on `conn` (inside the
/// caller's transaction), then writes `audit` with the counts, if given.
pub(crate) async fn delete_calls<DB>(
    conn: &mut DB::Connection,
    ids: &[String],
    audit: Option<&AuditEntry>,
) -> Result<Deleted, sqlx::Error>
where
    DB: Database,
    DB::QueryResult: Affected,
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
    for<'q> DB::Arguments<'q>: IntoArguments<'q, DB>,
    for<'q> &'q str: Encode<'q, DB> + Type<DB>,
    for<'q> Option<&'q str>: Encode<'q, DB> + Type<DB>,
    for<'q> i64: Encode<'q, DB> + Type<DB>,
{
    let mut deleted = Deleted::default();
    // The call sessions bound to the calls hold their subject and variables: they go too.
    let mut sessions = 0;
    for chunk in ids.chunks(CHUNK) {
        let list = params(1, chunk.len());
        for (table, column, count) in [
            ("call_sessions", "call_id", &mut sessions),
            ("call_items", "call_id", &mut deleted.items),
            ("call_turn_metrics", "call_id", &mut deleted.metrics),
            ("call_events", "call_id", &mut deleted.events),
            ("webhook_deliveries", "call_id", &mut deleted.webhooks),
            ("call_summaries", "call_id", &mut deleted.summaries),
            ("calls", "id", &mut deleted.calls),
        ] {
            let sql = format!("DELETE FROM {table} WHERE {column} IN ({list})");
            let mut query = sqlx::query(&sql);
            for id in chunk {
                query = query.bind(id.as_str());
            }
            *count += query.execute(&mut *conn).await?.affected();
        }
        // The org's usage record stays, without whose it was.
        let sql = format!(
            "UPDATE call_usage SET sub = '{ERASED_SUB}' WHERE call_id IN ({list}) \
             AND sub <> '{ERASED_SUB}'"
        );
        let mut query = sqlx::query(&sql);
        for id in chunk {
            query = query.bind(id.as_str());
        }
        query.execute(&mut *conn).await?;
    }
    if let Some(a) = audit {
        deleted.recordings = a.recordings;
        sqlx::query(
            "INSERT INTO audit_log (at_ms, actor, org, action, calls, items, metrics, events, \
             recordings, webhooks, summaries) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)",
        )
        .bind(a.at_ms)
        .bind(a.actor.as_str())
        .bind(a.org.as_deref())
        .bind(a.action.as_str())
        .bind(deleted.calls)
        .bind(deleted.items)
        .bind(deleted.metrics)
        .bind(deleted.events)
        .bind(a.recordings)
        .bind(deleted.webhooks)
        .bind(deleted.summaries)
        .execute(&mut *conn)
        .await?;
    }
    Ok(deleted)
}

/// The newest `limit` audit entries of one org (`None`: the default org), newest first.
pub(crate) async fn audit_log<DB>(
    db: &Pool<DB>,
    org: Option<&str>,
    limit: i64,
) -> Result<Vec<AuditRow>, sqlx::Error>
where
    DB: Database,
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
    for<'q> DB::Arguments<'q>: IntoArguments<'q, DB>,
    for<'q> &'q str: Encode<'q, DB> + Type<DB>,
    for<'q> i64: Encode<'q, DB> + Type<DB>,
    for<'r> AuditRow: sqlx::FromRow<'r, DB::Row>,
{
    const COLUMNS: &str =
        "id, at_ms, actor, org, action, calls, items, metrics, events, recordings, webhooks, \
         summaries";
    match org {
        Some(org) => {
            let sql =
                format!("SELECT {COLUMNS} FROM audit_log WHERE org = $1 ORDER BY id DESC LIMIT $2");
            sqlx::query_as(&sql)
                .bind(org)
                .bind(limit)
                .fetch_all(db)
                .await
        }
        None => {
            let sql = format!(
                "SELECT {COLUMNS} FROM audit_log WHERE org IS NULL ORDER BY id DESC LIMIT $1"
            );
            sqlx::query_as(&sql).bind(limit).fetch_all(db).await
        }
    }
}

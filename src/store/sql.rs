//! The statements, shared by SQLite and Postgres: both take `$N` parameters, `ON CONFLICT ...
//! DO UPDATE` and `excluded.`, and `sqlx::types::Json` binds as TEXT in one and JSONB in the
//! other. Only connecting, migrating and starting a transaction differ (`sqlite.rs`,
//! `postgres.rs`).

use std::collections::BTreeMap;

use sqlx::types::Json;
use sqlx::{Database, Encode, Executor, IntoArguments, Pool, Type};

use super::rows::{
    CallRow, EventRow, ItemRow, ListQuery, StreamEventRow, StreamQuery, SummaryRow, TurnMetricsRow,
    Write,
};

const CALL_COLUMNS: &str = "id, org, sub, agent, variables, system_prompt, started_at_ms, \
    ended_at_ms, end_reason, turns, caller_audio_ms, agent_audio_ms";

/// A resumed call (same id) takes the new agent, variables and prompt and is live again; its
/// owner, start and totals stay.
const CALL_STARTED: &str = "INSERT INTO calls (id, org, sub, agent, variables, system_prompt, \
    started_at_ms, ended_at_ms, end_reason, turns, caller_audio_ms, agent_audio_ms) \
    VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12) \
    ON CONFLICT (id) DO UPDATE SET agent = excluded.agent, variables = excluded.variables, \
    system_prompt = excluded.system_prompt, ended_at_ms = NULL, end_reason = NULL";

const ITEM: &str = "INSERT INTO call_items (call_id, item_id, turn_id, role, text, heard, \
    source, created_at_ms) VALUES ($1, $2, $3, $4, $5, $6, $7, $8) \
    ON CONFLICT (call_id, item_id) DO UPDATE SET turn_id = excluded.turn_id, \
    role = excluded.role, text = excluded.text, \
    heard = COALESCE(excluded.heard, call_items.heard), source = excluded.source";

const ITEM_HEARD: &str = "UPDATE call_items SET heard = $3 WHERE call_id = $1 AND item_id = $2";

const TURN_METRICS: &str = "INSERT INTO call_turn_metrics (call_id, turn_id, metrics, at_ms) \
    VALUES ($1, $2, $3, $4) ON CONFLICT (call_id, turn_id) DO UPDATE SET \
    metrics = excluded.metrics, at_ms = excluded.at_ms";

const EVENT: &str = "INSERT INTO call_events (call_id, seq, at_ms, kind, data, stream_id) \
    VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (call_id, seq) DO NOTHING";

const CALL_ENDED: &str = "UPDATE calls SET ended_at_ms = $2, end_reason = $3, turns = $4, \
    caller_audio_ms = $5, agent_audio_ms = $6 WHERE id = $1";

/// Only for a call that is stored: a summary made after the call was erased is not kept.
const SUMMARY: &str = "INSERT INTO call_summaries (call_id, org, sub, agent, text, fields, \
    method, engine, at_ms) SELECT $1, $2, $3, $4, $5, $6, $7, $8, $9 \
    WHERE EXISTS (SELECT 1 FROM calls WHERE id = $1) \
    ON CONFLICT (call_id) DO UPDATE SET text = excluded.text, fields = excluded.fields, \
    method = excluded.method, engine = excluded.engine, at_ms = excluded.at_ms";

const SUMMARY_COLUMNS: &str = "call_id, org, sub, agent, text, fields, method, engine, at_ms";

/// Applies one write on `conn` (inside the caller's transaction).
pub(crate) async fn apply<DB>(conn: &mut DB::Connection, w: &Write) -> Result<(), sqlx::Error>
where
    DB: Database,
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
    for<'q> DB::Arguments<'q>: IntoArguments<'q, DB>,
    for<'q> &'q str: Encode<'q, DB> + Type<DB>,
    for<'q> Option<&'q str>: Encode<'q, DB> + Type<DB>,
    for<'q> i64: Encode<'q, DB> + Type<DB>,
    for<'q> Option<i64>: Encode<'q, DB> + Type<DB>,
    for<'q> Json<&'q BTreeMap<String, String>>: Encode<'q, DB> + Type<DB>,
    for<'q> Json<&'q serde_json::Value>: Encode<'q, DB> + Type<DB>,
{
    let query = match w {
        Write::Usage(r) => return super::usage::apply::<DB>(conn, r).await,
        Write::CallStarted(c) => sqlx::query(CALL_STARTED)
            .bind(c.id.as_str())
            .bind(c.org.as_deref())
            .bind(c.sub.as_str())
            .bind(c.agent.as_str())
            .bind(Json(&c.variables))
            .bind(c.system_prompt.as_deref())
            .bind(c.started_at_ms)
            .bind(c.ended_at_ms)
            .bind(c.end_reason.as_deref())
            .bind(c.turns)
            .bind(c.caller_audio_ms)
            .bind(c.agent_audio_ms),
        Write::Item(i) => sqlx::query(ITEM)
            .bind(i.call_id.as_str())
            .bind(i.item_id)
            .bind(i.turn_id)
            .bind(i.role.as_str())
            .bind(i.text.as_str())
            .bind(i.heard.as_deref())
            .bind(i.source.as_str())
            .bind(i.created_at_ms),
        Write::ItemHeard {
            call_id,
            item_id,
            heard,
        } => sqlx::query(ITEM_HEARD)
            .bind(call_id.as_str())
            .bind(*item_id)
            .bind(heard.as_str()),
        Write::TurnMetrics(m) => sqlx::query(TURN_METRICS)
            .bind(m.call_id.as_str())
            .bind(m.turn_id)
            .bind(Json(&m.metrics))
            .bind(m.at_ms),
        Write::Event(e) => sqlx::query(EVENT)
            .bind(e.call_id.as_str())
            .bind(e.seq)
            .bind(e.at_ms)
            .bind(e.kind.as_str())
            .bind(Json(&e.data))
            .bind(e.stream_id),
        Write::CallEnded {
            call_id,
            ended_at_ms,
            reason,
            turns,
            caller_audio_ms,
            agent_audio_ms,
        } => sqlx::query(CALL_ENDED)
            .bind(call_id.as_str())
            .bind(*ended_at_ms)
            .bind(reason.as_str())
            .bind(*turns)
            .bind(*caller_audio_ms)
            .bind(*agent_audio_ms),
        Write::Summary(r) => sqlx::query(SUMMARY)
            .bind(r.call_id.as_str())
            .bind(r.org.as_deref())
            .bind(r.sub.as_str())
            .bind(r.agent.as_str())
            .bind(r.text.as_str())
            .bind(Json(&r.fields))
            .bind(r.method.as_str())
            .bind(r.engine.as_str())
            .bind(r.at_ms),
    };
    query.execute(conn).await?;
    Ok(())
}

pub(crate) async fn call<DB>(db: &Pool<DB>, id: &str) -> Result<Option<CallRow>, sqlx::Error>
where
    DB: Database,
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
    for<'q> DB::Arguments<'q>: IntoArguments<'q, DB>,
    for<'q> &'q str: Encode<'q, DB> + Type<DB>,
    for<'r> CallRow: sqlx::FromRow<'r, DB::Row>,
{
    let sql = format!("SELECT {CALL_COLUMNS} FROM calls WHERE id = $1");
    sqlx::query_as(&sql).bind(id).fetch_optional(db).await
}

pub(crate) async fn summary<DB>(
    db: &Pool<DB>,
    call_id: &str,
) -> Result<Option<SummaryRow>, sqlx::Error>
where
    DB: Database,
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
    for<'q> DB::Arguments<'q>: IntoArguments<'q, DB>,
    for<'q> &'q str: Encode<'q, DB> + Type<DB>,
    for<'r> SummaryRow: sqlx::FromRow<'r, DB::Row>,
{
    let sql = format!("SELECT {SUMMARY_COLUMNS} FROM call_summaries WHERE call_id = $1");
    sqlx::query_as(&sql).bind(call_id).fetch_optional(db).await
}

pub(crate) async fn previous_summaries<DB>(
    db: &Pool<DB>,
    org: Option<&str>,
    sub: &str,
    except: &str,
    limit: i64,
) -> Result<Vec<SummaryRow>, sqlx::Error>
where
    DB: Database,
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
    for<'q> DB::Arguments<'q>: IntoArguments<'q, DB>,
    for<'q> &'q str: Encode<'q, DB> + Type<DB>,
    for<'q> i64: Encode<'q, DB> + Type<DB>,
    for<'r> SummaryRow: sqlx::FromRow<'r, DB::Row>,
{
    let base =
        format!("SELECT {SUMMARY_COLUMNS} FROM call_summaries WHERE sub = $1 AND call_id <> $2");
    match org {
        Some(org) => {
            let sql = format!("{base} AND org = $3 ORDER BY at_ms DESC, call_id LIMIT $4");
            sqlx::query_as(&sql)
                .bind(sub)
                .bind(except)
                .bind(org)
                .bind(limit)
                .fetch_all(db)
                .await
        }
        None => {
            let sql = format!("{base} AND org IS NULL ORDER BY at_ms DESC, call_id LIMIT $3");
            sqlx::query_as(&sql)
                .bind(sub)
                .bind(except)
                .bind(limit)
                .fetch_all(db)
                .await
        }
    }
}

pub(crate) async fn items<DB>(db: &Pool<DB>, call_id: &str) -> Result<Vec<ItemRow>, sqlx::Error>
where
    DB: Database,
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
    for<'q> DB::Arguments<'q>: IntoArguments<'q, DB>,
    for<'q> &'q str: Encode<'q, DB> + Type<DB>,
    for<'r> ItemRow: sqlx::FromRow<'r, DB::Row>,
{
    sqlx::query_as(
        "SELECT call_id, item_id, turn_id, role, text, heard, source, created_at_ms \
         FROM call_items WHERE call_id = $1 ORDER BY item_id",
    )
    .bind(call_id)
    .fetch_all(db)
    .await
}

pub(crate) async fn turn_metrics<DB>(
    db: &Pool<DB>,
    call_id: &str,
) -> Result<Vec<TurnMetricsRow>, sqlx::Error>
where
    DB: Database,
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
    for<'q> DB::Arguments<'q>: IntoArguments<'q, DB>,
    for<'q> &'q str: Encode<'q, DB> + Type<DB>,
    for<'r> TurnMetricsRow: sqlx::FromRow<'r, DB::Row>,
{
    sqlx::query_as(
        "SELECT call_id, turn_id, metrics, at_ms FROM call_turn_metrics \
         WHERE call_id = $1 ORDER BY turn_id",
    )
    .bind(call_id)
    .fetch_all(db)
    .await
}

pub(crate) async fn events<DB>(
    db: &Pool<DB>,
    call_id: &str,
    after_seq: i64,
    limit: u32,
) -> Result<Vec<EventRow>, sqlx::Error>
where
    DB: Database,
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
    for<'q> DB::Arguments<'q>: IntoArguments<'q, DB>,
    for<'q> &'q str: Encode<'q, DB> + Type<DB>,
    for<'q> i64: Encode<'q, DB> + Type<DB>,
    for<'r> EventRow: sqlx::FromRow<'r, DB::Row>,
{
    sqlx::query_as(
        "SELECT call_id, seq, at_ms, kind, data, stream_id FROM call_events \
         WHERE call_id = $1 AND seq > $2 ORDER BY seq LIMIT $3",
    )
    .bind(call_id)
    .bind(after_seq)
    .bind(i64::from(limit))
    .fetch_all(db)
    .await
}

/// Where SQLite and Postgres differ in a statement.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Dialect {
    Sqlite,
    Postgres,
}

impl Dialect {
    /// `LIKE` on `col` with ASCII letters matched without regard to case and nothing else
    /// folded, the same in both: SQLite's `LIKE` already works so; Postgres's `lower` and
    /// `ILIKE` follow the database's locale, so its ASCII capitals are lowered by `translate`
    /// (the pattern comes lowered).
    pub(crate) fn like(self, col: &str, param: usize) -> String {
        match self {
            Dialect::Sqlite => format!("{col} LIKE ${param} ESCAPE '\\'"),
            Dialect::Postgres => format!(
                "translate({col}, 'ABCDEFGHIJKLMNOPQRSTUVWXYZ', 'abcdefghijklmnopqrstuvwxyz') \
                 LIKE ${param} ESCAPE '\\'"
            ),
        }
    }

    /// A number inside a JSON column, as a double (NULL when absent or not a number).
    pub(crate) fn json_number(self, col: &str, key: &str) -> String {
        match self {
            Dialect::Sqlite => format!(
                "CASE WHEN json_type({col}, '$.{key}') IN ('integer', 'real') \
                 THEN CAST(json_extract({col}, '$.{key}') AS REAL) END"
            ),
            Dialect::Postgres => format!(
                "CASE WHEN jsonb_typeof({col}->'{key}') = 'number' \
                 THEN ({col}->>'{key}')::float8 END"
            ),
        }
    }
}

/// A value bound to a `$N` parameter.
pub(crate) enum Arg<'a> {
    Str(&'a str),
    Int(i64),
}

/// The `WHERE` conditions of a call listing and their arguments, numbered from `$1`. Each
/// condition is written out only when it applies, so the `(sub, org, started_at_ms)` index
/// serves an owner's list and the `(org, started_at_ms)` one an org's: the equality, the time
/// range and the order. The text search looks into each candidate call's items by their
/// primary key `(call_id, item_id)`.
pub(crate) fn call_conditions<'a>(
    dialect: Dialect,
    org: Option<&'a str>,
    sub: Option<&'a str>,
    q: &'a ListQuery,
    pattern: Option<&'a str>,
) -> (String, Vec<Arg<'a>>) {
    let mut sql = String::new();
    let mut args = Vec::new();
    let mut add = |cond: &dyn Fn(usize) -> String, arg: Arg<'a>| {
        args.push(arg);
        if !sql.is_empty() {
            sql += " AND ";
        }
        sql += &cond(args.len());
    };
    if let Some(org) = org {
        add(&|n| format!("calls.org = ${n}"), Arg::Str(org));
    }
    if let Some(sub) = sub {
        add(&|n| format!("calls.sub = ${n}"), Arg::Str(sub));
    }
    for (bound, op) in [(q.before_ms, "<"), (q.from_ms, ">="), (q.to_ms, "<")] {
        if let Some(ms) = bound {
            add(&|n| format!("calls.started_at_ms {op} ${n}"), Arg::Int(ms));
        }
    }
    if let Some(agent) = &q.agent {
        add(&|n| format!("calls.agent = ${n}"), Arg::Str(agent));
    }
    if let Some(pattern) = pattern {
        add(
            &|n| {
                format!(
                    "EXISTS (SELECT 1 FROM call_items i WHERE i.call_id = calls.id AND {})",
                    dialect.like("i.text", n)
                )
            },
            Arg::Str(pattern),
        );
    }
    if org.is_none() {
        sql = if sql.is_empty() {
            "calls.org IS NULL".into()
        } else {
            format!("calls.org IS NULL AND {sql}")
        };
    }
    (sql, args)
}

/// An org's calls (of one owner when `sub` is given) that match `q`, newest first, at most
/// `limit`.
pub(crate) async fn list_org_calls<DB>(
    db: &Pool<DB>,
    dialect: Dialect,
    org: Option<&str>,
    sub: Option<&str>,
    q: &ListQuery,
    limit: i64,
) -> Result<Vec<CallRow>, sqlx::Error>
where
    DB: Database,
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
    for<'q> DB::Arguments<'q>: IntoArguments<'q, DB>,
    for<'q> &'q str: Encode<'q, DB> + Type<DB>,
    for<'q> i64: Encode<'q, DB> + Type<DB>,
    for<'r> CallRow: sqlx::FromRow<'r, DB::Row>,
{
    let pattern = q.text_pattern();
    let (conditions, args) = call_conditions(dialect, org, sub, q, pattern.as_deref());
    let sql = format!(
        "SELECT {CALL_COLUMNS} FROM calls WHERE {conditions} \
         ORDER BY calls.started_at_ms DESC, calls.id DESC LIMIT ${}",
        args.len() + 1
    );
    let mut query = sqlx::query_as(&sql);
    for arg in args {
        query = match arg {
            Arg::Str(s) => query.bind(s),
            Arg::Int(i) => query.bind(i),
        };
    }
    query.bind(limit).fetch_all(db).await
}

/// An org's monitor-stream events after a stream id, in stream order, read by the
/// `call_events (stream_id)` index and joined with their calls for the org and filters.
pub(crate) async fn stream_events<DB>(
    db: &Pool<DB>,
    q: &StreamQuery,
) -> Result<Vec<StreamEventRow>, sqlx::Error>
where
    DB: Database,
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
    for<'q> DB::Arguments<'q>: IntoArguments<'q, DB>,
    for<'q> &'q str: Encode<'q, DB> + Type<DB>,
    for<'q> i64: Encode<'q, DB> + Type<DB>,
    for<'r> StreamEventRow: sqlx::FromRow<'r, DB::Row>,
{
    let mut sql = String::from(
        "SELECT e.call_id, e.seq, e.at_ms, e.kind, e.data, e.stream_id, c.org, c.sub, c.agent \
         FROM call_events e JOIN calls c ON c.id = e.call_id WHERE e.stream_id > $1",
    );
    let mut n = 1;
    let mut next = || {
        n += 1;
        n
    };
    match &q.org {
        Some(_) => sql += &format!(" AND c.org = ${}", next()),
        None => sql += " AND c.org IS NULL",
    }
    if q.call_id.is_some() {
        sql += &format!(" AND e.call_id = ${}", next());
    }
    if q.agent.is_some() {
        sql += &format!(" AND c.agent = ${}", next());
    }
    if q.sub.is_some() {
        sql += &format!(" AND c.sub = ${}", next());
    }
    sql += &format!(" ORDER BY e.stream_id LIMIT ${}", next());
    let mut query = sqlx::query_as(&sql).bind(q.after);
    for v in [&q.org, &q.call_id, &q.agent, &q.sub].into_iter().flatten() {
        query = query.bind(v.as_str());
    }
    query.bind(q.clamped_limit()).fetch_all(db).await
}

//! Webhook deliveries in the store: the rows, and the statements shared by SQLite and Postgres.
//! A delivery is inserted before its first attempt; a worker claims a due one with a single
//! conditional `UPDATE` (only one claimer can match it), attempts it, and settles it with
//! another that only its claim can match. A delivered one is never claimed again.

use serde::{Deserialize, Serialize};
use sqlx::{Database, Encode, Executor, IntoArguments, Pool, Type};

/// Where a delivery stands.
pub const PENDING: &str = "pending";
pub const DELIVERED: &str = "delivered";
pub const FAILED: &str = "failed";

/// A delivery as the admin listing shows it (without its body).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, sqlx::FromRow)]
pub struct DeliveryRow {
    /// Also the `Voxwire-Delivery-Id` header and the body's `id`.
    pub id: String,
    pub org: Option<String>,
    /// The caller of the call the event is about.
    pub sub: String,
    pub agent: String,
    pub call_id: String,
    /// `call.started`, `call.ended`, `takeover.started`, `takeover.ended` or `message.taken`.
    pub event: String,
    pub url: String,
    pub created_at_ms: i64,
    /// [`PENDING`], [`DELIVERED`] or [`FAILED`].
    pub state: String,
    pub attempts: i64,
    /// When the next attempt is due; `None` once delivered or failed.
    pub next_attempt_ms: Option<i64>,
    /// The HTTP status of the last attempt, if one was received.
    pub last_status: Option<i64>,
    pub last_error: Option<String>,
    pub delivered_at_ms: Option<i64>,
}

/// A delivery to store before its first attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewDelivery {
    pub id: String,
    pub org: Option<String>,
    pub sub: String,
    pub agent: String,
    pub call_id: String,
    pub event: String,
    pub url: String,
    /// The exact bytes signed and sent at every attempt.
    pub body: String,
    pub created_at_ms: i64,
}

/// A claimed delivery: what an attempt needs.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct ClaimedDelivery {
    pub id: String,
    pub agent: String,
    pub event: String,
    pub url: String,
    pub body: String,
    pub created_at_ms: i64,
    /// Attempts so far, this one included.
    pub attempts: i64,
}

/// How an attempt ended, as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settle {
    /// [`PENDING`] (to be tried again at `next_attempt_ms`), [`DELIVERED`] or [`FAILED`].
    pub state: &'static str,
    pub next_attempt_ms: Option<i64>,
    pub last_status: Option<i64>,
    pub last_error: Option<String>,
    pub delivered_at_ms: Option<i64>,
}

/// A page of an org's deliveries, newest first.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct DeliveryQuery {
    /// The org (`None`: the default org).
    pub org: Option<String>,
    /// Only deliveries strictly before this `(created_at_ms, id)`: the last of the previous
    /// page.
    pub before: Option<(i64, String)>,
    /// Deliveries per page, 1..=100 (values outside are clamped).
    pub limit: u32,
}

impl DeliveryQuery {
    pub const MAX_LIMIT: u32 = 100;

    pub(crate) fn clamped_limit(&self) -> i64 {
        i64::from(self.limit.clamp(1, Self::MAX_LIMIT))
    }
}

const COLUMNS: &str = "id, org, sub, agent, call_id, event, url, created_at_ms, state, attempts, \
    next_attempt_ms, last_status, last_error, delivered_at_ms";

/// Idempotent: the same delivery stored twice is one row.
pub(crate) async fn insert<DB>(db: &Pool<DB>, d: &NewDelivery) -> Result<(), sqlx::Error>
where
    DB: Database,
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
    for<'q> DB::Arguments<'q>: IntoArguments<'q, DB>,
    for<'q> &'q str: Encode<'q, DB> + Type<DB>,
    for<'q> Option<&'q str>: Encode<'q, DB> + Type<DB>,
    for<'q> i64: Encode<'q, DB> + Type<DB>,
{
    sqlx::query(
        "INSERT INTO webhook_deliveries (id, org, sub, agent, call_id, event, url, body, \
         created_at_ms, state, attempts, next_attempt_ms) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, 'pending', 0, $9) \
         ON CONFLICT (id) DO NOTHING",
    )
    .bind(d.id.as_str())
    .bind(d.org.as_deref())
    .bind(d.sub.as_str())
    .bind(d.agent.as_str())
    .bind(d.call_id.as_str())
    .bind(d.event.as_str())
    .bind(d.url.as_str())
    .bind(d.body.as_str())
    .bind(d.created_at_ms)
    .execute(db)
    .await?;
    Ok(())
}

/// Up to `limit` ids of pending deliveries of `agents` due at `now_ms` and not claimed (or
/// whose claim has lapsed), the longest due first.
pub(crate) async fn due<DB>(
    db: &Pool<DB>,
    agents: &[String],
    now_ms: i64,
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
    if agents.is_empty() {
        return Ok(Vec::new());
    }
    let list: Vec<String> = (0..agents.len()).map(|i| format!("${}", i + 3)).collect();
    let sql = format!(
        "SELECT id FROM webhook_deliveries WHERE state = 'pending' AND next_attempt_ms <= $1 \
         AND (claimed_until_ms IS NULL OR claimed_until_ms <= $1) AND agent IN ({}) \
         ORDER BY next_attempt_ms LIMIT $2",
        list.join(", ")
    );
    let mut query = sqlx::query_as::<DB, (String,)>(&sql)
        .bind(now_ms)
        .bind(limit);
    for a in agents {
        query = query.bind(a.as_str());
    }
    Ok(query
        .fetch_all(db)
        .await?
        .into_iter()
        .map(|(id,)| id)
        .collect())
}

/// Claims a due delivery for `claim` until `until_ms` and counts the attempt: `None` if it is
/// no longer pending and due, or another worker holds it.
pub(crate) async fn claim<DB>(
    db: &Pool<DB>,
    id: &str,
    claim: &str,
    now_ms: i64,
    until_ms: i64,
) -> Result<Option<ClaimedDelivery>, sqlx::Error>
where
    DB: Database,
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
    for<'q> DB::Arguments<'q>: IntoArguments<'q, DB>,
    for<'q> &'q str: Encode<'q, DB> + Type<DB>,
    for<'q> i64: Encode<'q, DB> + Type<DB>,
    for<'r> ClaimedDelivery: sqlx::FromRow<'r, DB::Row>,
{
    sqlx::query_as(
        "UPDATE webhook_deliveries SET claim = $2, claimed_until_ms = $4, \
         attempts = attempts + 1 \
         WHERE id = $1 AND state = 'pending' AND next_attempt_ms <= $3 \
         AND (claimed_until_ms IS NULL OR claimed_until_ms <= $3) \
         RETURNING id, agent, event, url, body, created_at_ms, attempts",
    )
    .bind(id)
    .bind(claim)
    .bind(now_ms)
    .bind(until_ms)
    .fetch_optional(db)
    .await
}

/// Records how the attempt under `claim` ended and lets the claim go; false if the claim was
/// no longer held (it lapsed and another worker took the delivery).
pub(crate) async fn settle<DB>(
    db: &Pool<DB>,
    id: &str,
    claim: &str,
    s: &Settle,
) -> Result<bool, sqlx::Error>
where
    DB: Database,
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
    for<'q> DB::Arguments<'q>: IntoArguments<'q, DB>,
    for<'q> &'q str: Encode<'q, DB> + Type<DB>,
    for<'q> Option<&'q str>: Encode<'q, DB> + Type<DB>,
    for<'q> Option<i64>: Encode<'q, DB> + Type<DB>,
    for<'r> (String,): sqlx::FromRow<'r, DB::Row>,
{
    let row: Option<(String,)> = sqlx::query_as(
        "UPDATE webhook_deliveries SET claim = NULL, claimed_until_ms = NULL, state = $3, \
         next_attempt_ms = $4, last_status = $5, last_error = $6, delivered_at_ms = $7 \
         WHERE id = $1 AND claim = $2 AND state = 'pending' RETURNING id",
    )
    .bind(id)
    .bind(claim)
    .bind(s.state)
    .bind(s.next_attempt_ms)
    .bind(s.last_status)
    .bind(s.last_error.as_deref())
    .bind(s.delivered_at_ms)
    .fetch_optional(db)
    .await?;
    Ok(row.is_some())
}

pub(crate) async fn delivery<DB>(
    db: &Pool<DB>,
    id: &str,
) -> Result<Option<DeliveryRow>, sqlx::Error>
where
    DB: Database,
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
    for<'q> DB::Arguments<'q>: IntoArguments<'q, DB>,
    for<'q> &'q str: Encode<'q, DB> + Type<DB>,
    for<'r> DeliveryRow: sqlx::FromRow<'r, DB::Row>,
{
    let sql = format!("SELECT {COLUMNS} FROM webhook_deliveries WHERE id = $1");
    sqlx::query_as(&sql).bind(id).fetch_optional(db).await
}

/// A page of an org's deliveries, newest first (by creation, then id).
pub(crate) async fn list<DB>(
    db: &Pool<DB>,
    q: &DeliveryQuery,
) -> Result<Vec<DeliveryRow>, sqlx::Error>
where
    DB: Database,
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
    for<'q> DB::Arguments<'q>: IntoArguments<'q, DB>,
    for<'q> &'q str: Encode<'q, DB> + Type<DB>,
    for<'q> i64: Encode<'q, DB> + Type<DB>,
    for<'r> DeliveryRow: sqlx::FromRow<'r, DB::Row>,
{
    let mut sql = format!("SELECT {COLUMNS} FROM webhook_deliveries WHERE ");
    let mut n = 0;
    let mut next = || {
        n += 1;
        n
    };
    match &q.org {
        Some(_) => sql += &format!("org = ${}", next()),
        None => sql += "org IS NULL",
    }
    if q.before.is_some() {
        let (ms, id) = (next(), next());
        sql += &format!(" AND (created_at_ms < ${ms} OR (created_at_ms = ${ms} AND id < ${id}))");
    }
    sql += &format!(" ORDER BY created_at_ms DESC, id DESC LIMIT ${}", next());
    let mut query = sqlx::query_as(&sql);
    if let Some(org) = &q.org {
        query = query.bind(org.as_str());
    }
    if let Some((ms, id)) = &q.before {
        query = query.bind(*ms).bind(id.as_str());
    }
    query.bind(q.clamped_limit()).fetch_all(db).await
}

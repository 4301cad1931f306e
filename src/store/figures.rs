//! The statements behind an org's figures over a time range (`GET /api/stats`): counts in
//! SQL, and the values medians are taken of, bounded, for the caller to sort. Every statement
//! starts from the calls that started in the range, by the `(org, started_at_ms)` index, and
//! reaches their items and turn metrics by their primary keys.

use sqlx::{Database, Encode, Executor, IntoArguments, Pool, Type};

use super::rows::{ListQuery, StatsRows};
use super::sql::{call_conditions, Arg, Dialect};

/// The figures' rows for the calls of `org` that started in `[from_ms, to_ms)`.
pub(crate) async fn stats<DB>(
    db: &Pool<DB>,
    dialect: Dialect,
    org: Option<&str>,
    from_ms: i64,
    to_ms: i64,
) -> Result<StatsRows, sqlx::Error>
where
    DB: Database,
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
    for<'q> DB::Arguments<'q>: IntoArguments<'q, DB>,
    for<'q> &'q str: Encode<'q, DB> + Type<DB>,
    for<'q> i64: Encode<'q, DB> + Type<DB>,
    for<'r> (i64,): sqlx::FromRow<'r, DB::Row>,
    for<'r> (f64,): sqlx::FromRow<'r, DB::Row>,
    for<'r> (i64, i64): sqlx::FromRow<'r, DB::Row>,
{
    let range = ListQuery {
        from_ms: Some(from_ms),
        to_ms: Some(to_ms),
        ..ListQuery::default()
    };
    let (cond, args) = call_conditions(dialect, org, None, &range, None);
    let cap = i64::from(StatsRows::MAX_VALUES);
    let limit = args.len() + 1;
    macro_rules! bound {
        ($sql:expr) => {{
            let mut q = sqlx::query_as($sql);
            for arg in &args {
                q = match arg {
                    Arg::Str(s) => q.bind(*s),
                    Arg::Int(i) => q.bind(*i),
                };
            }
            q
        }};
    }

    let sql = format!("SELECT COUNT(*) FROM calls WHERE {cond}");
    let (calls,): (i64,) = bound!(&sql).fetch_one(db).await?;

    let sql = format!(
        "SELECT calls.ended_at_ms - calls.started_at_ms FROM calls \
         WHERE {cond} AND calls.ended_at_ms IS NOT NULL \
         ORDER BY calls.started_at_ms DESC LIMIT ${limit}"
    );
    let durations: Vec<(i64,)> = bound!(&sql).bind(cap).fetch_all(db).await?;

    let sql = format!(
        "SELECT v FROM (SELECT calls.started_at_ms AS s, {} AS v \
         FROM call_turn_metrics m JOIN calls ON calls.id = m.call_id WHERE {cond}) t \
         WHERE v IS NOT NULL ORDER BY s DESC LIMIT ${limit}",
        dialect.json_number("m.metrics", "voice_to_voice_ms")
    );
    let v2v: Vec<(f64,)> = bound!(&sql).bind(cap).fetch_all(db).await?;

    let sql = format!(
        "SELECT COUNT(*), COALESCE(SUM(CASE WHEN i.heard IS NOT NULL THEN 1 ELSE 0 END), 0) \
         FROM call_items i JOIN calls ON calls.id = i.call_id \
         WHERE {cond} AND i.role = 'assistant' AND i.source <> 'operator'"
    );
    let (replies, replies_interrupted): (i64, i64) = bound!(&sql).fetch_one(db).await?;

    Ok(StatsRows {
        calls,
        durations_ms: durations.into_iter().map(|(d,)| d).collect(),
        voice_to_voice_ms: v2v.into_iter().map(|(v,)| v).collect(),
        replies,
        replies_interrupted,
    })
}

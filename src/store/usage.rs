//! Usage and limits: each org's limits (`org_limits`; an org without a row has the configured
//! defaults) and what its calls used (`call_usage`). A live call writes the running totals of
//! its current stretch, one row per UTC day, metric and engine, keyed by
//! `(call_id, part_ms, day, metric, engine)`: a write sets the row to the larger of its value
//! and the stored one, so a batch written twice, or an older total after a newer one, counts
//! nothing twice. Reads add the rows up. The default org (tokens without `org`) is stored as
//! the empty string.

use serde::{Deserialize, Serialize};
use sqlx::{Database, Encode, Executor, IntoArguments, Pool, Type};

/// The largest value of any limit.
pub const MAX_LIMIT: i64 = 10_000_000;

/// Rows a usage report holds at most (groups times metrics and engines).
pub const MAX_REPORT_ROWS: i64 = 50_000;

/// Wall-clock milliseconds of calls (what daily minutes count).
pub const CALL_MS: &str = "call_ms";
/// Milliseconds of the caller's audio the server took in.
pub const CALLER_AUDIO_MS: &str = "caller_audio_ms";
/// Milliseconds of reply audio sent to the caller, by speech engine.
pub const AGENT_AUDIO_MS: &str = "agent_audio_ms";
/// Milliseconds of audio given to speech-to-text, by engine.
pub const STT_AUDIO_MS: &str = "stt_audio_ms";
/// Language-model tokens as the engine counted them, by engine.
pub const LLM_PROMPT_TOKENS: &str = "llm_prompt_tokens";
pub const LLM_COMPLETION_TOKENS: &str = "llm_completion_tokens";
/// Characters of the replies the language model wrote, by engine (every engine).
pub const LLM_COMPLETION_CHARS: &str = "llm_completion_chars";
/// Characters given to text-to-speech, by engine.
pub const TTS_CHARS: &str = "tts_chars";

/// An org's limits; `None` is unlimited.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, sqlx::FromRow)]
pub struct OrgLimits {
    pub concurrent_calls: Option<i64>,
    pub daily_minutes: Option<i64>,
    pub subject_concurrent_calls: Option<i64>,
    pub subject_daily_minutes: Option<i64>,
}

/// The running total of one metric of one stretch of a call on one UTC day.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, sqlx::FromRow)]
pub struct UsageRow {
    pub call_id: String,
    /// When this live stretch of the call began (Unix ms): a resumed call starts a new part.
    pub part_ms: i64,
    /// The UTC day, `YYYY-MM-DD`.
    pub day: String,
    /// The org; `""` for the default org.
    pub org: String,
    pub sub: String,
    pub agent: String,
    pub metric: String,
    /// `local`, a provider's name, or `""` for what no engine did (call and caller time).
    pub engine: String,
    pub value: i64,
}

/// What a usage report is grouped by.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GroupBy {
    Day,
    Agent,
    Sub,
}

impl GroupBy {
    pub fn column(self) -> &'static str {
        match self {
            GroupBy::Day => "day",
            GroupBy::Agent => "agent",
            GroupBy::Sub => "sub",
        }
    }
}

/// A usage report's rows, before they are shaped for the client.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UsageReport {
    /// Per group: the calls with any usage in the range.
    pub calls: Vec<(String, i64)>,
    /// Per group, metric and engine: the total.
    pub sums: Vec<(String, String, String, i64)>,
    /// More rows matched than [`MAX_REPORT_ROWS`].
    pub truncated: bool,
}

/// The key an org is stored under.
pub fn org_key(org: Option<&str>) -> &str {
    org.unwrap_or("")
}

const DAY_MS: i64 = 86_400_000;

/// The UTC day of a Unix time in ms, `YYYY-MM-DD`.
pub fn day_of(ms: i64) -> String {
    // Howard Hinnant's `civil_from_days`.
    let z = ms.div_euclid(DAY_MS) + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!("{y:04}-{m:02}-{d:02}")
}

/// 00:00 UTC of the day `ms` falls in.
pub fn day_start_ms(ms: i64) -> i64 {
    ms.div_euclid(DAY_MS) * DAY_MS
}

const UPSERT: &str = "INSERT INTO call_usage (call_id, part_ms, day, org, sub, agent, metric, \
    engine, value) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) \
    ON CONFLICT (call_id, part_ms, day, metric, engine) DO UPDATE SET value = \
    CASE WHEN excluded.value > call_usage.value THEN excluded.value ELSE call_usage.value END";

/// Applies one usage write on `conn` (inside the caller's transaction).
pub(crate) async fn apply<DB>(conn: &mut DB::Connection, r: &UsageRow) -> Result<(), sqlx::Error>
where
    DB: Database,
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
    for<'q> DB::Arguments<'q>: IntoArguments<'q, DB>,
    for<'q> &'q str: Encode<'q, DB> + Type<DB>,
    for<'q> i64: Encode<'q, DB> + Type<DB>,
{
    sqlx::query(UPSERT)
        .bind(r.call_id.as_str())
        .bind(r.part_ms)
        .bind(r.day.as_str())
        .bind(r.org.as_str())
        .bind(r.sub.as_str())
        .bind(r.agent.as_str())
        .bind(r.metric.as_str())
        .bind(r.engine.as_str())
        .bind(r.value)
        .execute(conn)
        .await?;
    Ok(())
}

pub(crate) async fn limits<DB>(db: &Pool<DB>, org: &str) -> Result<Option<OrgLimits>, sqlx::Error>
where
    DB: Database,
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
    for<'q> DB::Arguments<'q>: IntoArguments<'q, DB>,
    for<'q> &'q str: Encode<'q, DB> + Type<DB>,
    for<'r> OrgLimits: sqlx::FromRow<'r, DB::Row>,
{
    sqlx::query_as(
        "SELECT concurrent_calls, daily_minutes, subject_concurrent_calls, \
         subject_daily_minutes FROM org_limits WHERE org = $1",
    )
    .bind(org)
    .fetch_optional(db)
    .await
}

pub(crate) async fn set_limits<DB>(
    db: &Pool<DB>,
    org: &str,
    l: &OrgLimits,
    at_ms: i64,
) -> Result<(), sqlx::Error>
where
    DB: Database,
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
    for<'q> DB::Arguments<'q>: IntoArguments<'q, DB>,
    for<'q> &'q str: Encode<'q, DB> + Type<DB>,
    for<'q> i64: Encode<'q, DB> + Type<DB>,
    for<'q> Option<i64>: Encode<'q, DB> + Type<DB>,
{
    sqlx::query(
        "INSERT INTO org_limits (org, concurrent_calls, daily_minutes, \
         subject_concurrent_calls, subject_daily_minutes, updated_at_ms) \
         VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (org) DO UPDATE SET \
         concurrent_calls = excluded.concurrent_calls, daily_minutes = excluded.daily_minutes, \
         subject_concurrent_calls = excluded.subject_concurrent_calls, \
         subject_daily_minutes = excluded.subject_daily_minutes, \
         updated_at_ms = excluded.updated_at_ms",
    )
    .bind(org)
    .bind(l.concurrent_calls)
    .bind(l.daily_minutes)
    .bind(l.subject_concurrent_calls)
    .bind(l.subject_daily_minutes)
    .bind(at_ms)
    .execute(db)
    .await?;
    Ok(())
}

/// Call milliseconds of `org` and of its subject `sub` on `day`, leaving out the part
/// `except` (a live call counts its own current stretch itself).
pub(crate) async fn used_ms<DB>(
    db: &Pool<DB>,
    org: &str,
    sub: &str,
    day: &str,
    except: (&str, i64),
) -> Result<(i64, i64), sqlx::Error>
where
    DB: Database,
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
    for<'q> DB::Arguments<'q>: IntoArguments<'q, DB>,
    for<'q> &'q str: Encode<'q, DB> + Type<DB>,
    for<'q> i64: Encode<'q, DB> + Type<DB>,
    for<'r> (i64, i64): sqlx::FromRow<'r, DB::Row>,
{
    sqlx::query_as(
        "SELECT CAST(COALESCE(SUM(value), 0) AS BIGINT), \
         CAST(COALESCE(SUM(CASE WHEN sub = $3 THEN value ELSE 0 END), 0) AS BIGINT) \
         FROM call_usage WHERE org = $1 AND day = $2 AND metric = $4 \
         AND NOT (call_id = $5 AND part_ms = $6)",
    )
    .bind(org)
    .bind(day)
    .bind(sub)
    .bind(CALL_MS)
    .bind(except.0)
    .bind(except.1)
    .fetch_one(db)
    .await
}

/// The call time of each stretch of `org`'s calls on `day`: (call id, stretch start, sub, ms).
pub(crate) async fn day_calls<DB>(
    db: &Pool<DB>,
    org: &str,
    day: &str,
) -> Result<Vec<(String, i64, String, i64)>, sqlx::Error>
where
    DB: Database,
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
    for<'q> DB::Arguments<'q>: IntoArguments<'q, DB>,
    for<'q> &'q str: Encode<'q, DB> + Type<DB>,
    for<'r> (String, i64, String, i64): sqlx::FromRow<'r, DB::Row>,
{
    sqlx::query_as(
        "SELECT call_id, part_ms, sub, value FROM call_usage \
         WHERE org = $1 AND day = $2 AND metric = $3",
    )
    .bind(org)
    .bind(day)
    .bind(CALL_MS)
    .fetch_all(db)
    .await
}

/// The usage of `org` on the days `from_day..=to_day`, by `group`.
pub(crate) async fn report<DB>(
    db: &Pool<DB>,
    org: &str,
    from_day: &str,
    to_day: &str,
    group: GroupBy,
) -> Result<UsageReport, sqlx::Error>
where
    DB: Database,
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
    for<'q> DB::Arguments<'q>: IntoArguments<'q, DB>,
    for<'q> &'q str: Encode<'q, DB> + Type<DB>,
    for<'q> i64: Encode<'q, DB> + Type<DB>,
    for<'r> (String, i64): sqlx::FromRow<'r, DB::Row>,
    for<'r> (String, String, String, i64): sqlx::FromRow<'r, DB::Row>,
{
    let col = group.column();
    let range = "org = $1 AND day >= $2 AND day <= $3";
    let sql = format!(
        "SELECT {col}, COUNT(DISTINCT call_id) FROM call_usage WHERE {range} AND metric = $4 \
         GROUP BY {col} ORDER BY {col} LIMIT $5"
    );
    let calls: Vec<(String, i64)> = sqlx::query_as(&sql)
        .bind(org)
        .bind(from_day)
        .bind(to_day)
        .bind(CALL_MS)
        .bind(MAX_REPORT_ROWS + 1)
        .fetch_all(db)
        .await?;
    let sql = format!(
        "SELECT {col}, metric, engine, CAST(SUM(value) AS BIGINT) FROM call_usage \
         WHERE {range} GROUP BY {col}, metric, engine ORDER BY {col}, metric, engine LIMIT $4"
    );
    let mut sums: Vec<(String, String, String, i64)> = sqlx::query_as(&sql)
        .bind(org)
        .bind(from_day)
        .bind(to_day)
        .bind(MAX_REPORT_ROWS + 1)
        .fetch_all(db)
        .await?;
    let truncated = calls.len() as i64 > MAX_REPORT_ROWS || sums.len() as i64 > MAX_REPORT_ROWS;
    sums.truncate(MAX_REPORT_ROWS as usize);
    let mut calls = calls;
    calls.truncate(MAX_REPORT_ROWS as usize);
    Ok(UsageReport {
        calls,
        sums,
        truncated,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn days_are_utc_dates() {
        assert_eq!(day_of(0), "1970-01-01");
        assert_eq!(day_of(86_399_999), "1970-01-01");
        assert_eq!(day_of(86_400_000), "1970-01-02");
        assert_eq!(day_of(951_782_400_000), "2000-02-29");
        assert_eq!(day_of(1_798_761_599_999), "2026-12-31");
        assert_eq!(day_of(1_798_761_600_000), "2027-01-01");
        assert_eq!(day_start_ms(1_798_761_599_999), 1_798_675_200_000);
    }
}

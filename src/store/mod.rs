//! The durable store: calls, their conversation items, per-turn metrics and event log, and the
//! webhook deliveries owed for them, kept in SQLite (the default, one file), Postgres (several
//! nodes) or memory (unit tests).
//!
//! Calls write through [`StoreWriter`], which batches writes off the call's path and never makes
//! a call wait; the API reads through [`Store`]. Every [`Write`] is idempotent, so a batch whose
//! fate is unknown is simply written again.

mod agents;
mod deliveries;
mod erase;
mod error;
mod figures;
mod keys;
mod memory;
mod memory_deliveries;
mod memory_keys;
mod postgres;
mod rows;
mod sql;
mod sqlite;
mod usage;
mod writer;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

pub use agents::AgentVersionRow;
pub use deliveries::{
    ClaimedDelivery, DeliveryQuery, DeliveryRow, NewDelivery, Settle, DELIVERED, FAILED, PENDING,
};
pub use erase::{AgentScope, AuditEntry, AuditRow, Deleted};
pub use error::{redact_url, StoreError};
pub use keys::{KeyRow, Revoked, SessionRow, MAX_LISTED_KEYS};
pub use rows::{
    CallRow, EventRow, ItemRow, ListQuery, StatsRows, StreamEventRow, StreamQuery, SummaryRow,
    TurnMetricsRow, Write,
};
pub use usage::{
    day_of, day_start_ms, org_key, GroupBy, OrgLimits, UsageReport, UsageRow, AGENT_AUDIO_MS,
    CALLER_AUDIO_MS, CALL_MS, LLM_COMPLETION_CHARS, LLM_COMPLETION_TOKENS, LLM_PROMPT_TOKENS,
    MAX_LIMIT, MAX_REPORT_ROWS, STT_AUDIO_MS, TTS_CHARS,
};
pub use writer::StoreWriter;

use memory::MemoryStore;
use postgres::PgStore;
use sqlite::SqliteStore;

/// How [`Store::connect_with`] sets up its connection pool.
#[derive(Debug, Clone)]
pub struct StoreOptions {
    /// How long an operation waits for a connection; while a database server is down, how long
    /// it keeps trying to connect before failing (with a retryable error).
    pub acquire_timeout: Duration,
    /// SQLite: how long a write waits for another writer's lock before failing (retryable).
    pub busy_timeout: Duration,
    /// Connections kept open at most.
    pub max_connections: u32,
}

impl Default for StoreOptions {
    fn default() -> Self {
        Self {
            acquire_timeout: Duration::from_secs(5),
            busy_timeout: Duration::from_secs(5),
            max_connections: 4,
        }
    }
}

/// A handle on the store; clones share one connection pool.
#[derive(Clone)]
pub struct Store {
    backend: Backend,
}

#[derive(Clone)]
enum Backend {
    Sqlite(SqliteStore),
    Postgres(PgStore),
    Memory(Arc<MemoryStore>),
}

/// Whether a URL's scheme names a supported store (`sqlite:`, `postgres://`,
/// `postgresql://`, or `memory`), without opening it.
pub fn scheme_supported(url: &str) -> bool {
    let url = url.trim();
    url == "memory"
        || url.starts_with("sqlite:")
        || url.starts_with("postgres://")
        || url.starts_with("postgresql://")
}

impl Store {
    /// Opens the store a URL names and brings its tables up to date: `sqlite://PATH` (the file
    /// and its folders are created; `sqlite:///abs/path` or `sqlite://relative/path`),
    /// `postgres://USER:PASSWORD@HOST:PORT/DB`, or `memory`.
    pub async fn connect(url: &str) -> Result<Store, StoreError> {
        Self::connect_with(url, &StoreOptions::default()).await
    }

    pub async fn connect_with(url: &str, opts: &StoreOptions) -> Result<Store, StoreError> {
        let url = url.trim();
        let backend = if url == "memory" {
            Backend::Memory(Arc::default())
        } else if url.starts_with("sqlite:") {
            Backend::Sqlite(SqliteStore::connect(url, opts).await?)
        } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            Backend::Postgres(PgStore::connect(url, opts).await?)
        } else {
            return Err(StoreError::BadUrl {
                url: redact_url(url),
            });
        };
        Ok(Store { backend })
    }

    /// An empty in-memory store.
    pub fn memory() -> Store {
        Store {
            backend: Backend::Memory(Arc::default()),
        }
    }

    /// Which database this is, for logs: `sqlite (/path/voxwire.db)`, `postgres (host:5432/db)`
    /// or `memory`. Never a password.
    pub fn describe(&self) -> String {
        match &self.backend {
            Backend::Sqlite(s) => s.describe(),
            Backend::Postgres(p) => p.describe(),
            Backend::Memory(_) => "memory".to_string(),
        }
    }

    /// Applies the writes in order, in one transaction: all or none. Idempotent.
    pub async fn write(&self, batch: &[Write]) -> Result<(), StoreError> {
        if batch.is_empty() {
            return Ok(());
        }
        match &self.backend {
            Backend::Sqlite(s) => s.write(batch).await,
            Backend::Postgres(p) => p.write(batch).await,
            Backend::Memory(m) => m.write(batch),
        }
    }

    pub async fn call(&self, id: &str) -> Result<Option<CallRow>, StoreError> {
        let op = StoreError::query("reading a call");
        match &self.backend {
            Backend::Sqlite(s) => sql::call(&s.pool, id).await.map_err(op),
            Backend::Postgres(p) => sql::call(&p.pool, id).await.map_err(op),
            Backend::Memory(m) => Ok(m.call(id)),
        }
    }

    /// The call's items, by `item_id`.
    pub async fn items(&self, call_id: &str) -> Result<Vec<ItemRow>, StoreError> {
        let op = StoreError::query("reading a call's items");
        match &self.backend {
            Backend::Sqlite(s) => sql::items(&s.pool, call_id).await.map_err(op),
            Backend::Postgres(p) => sql::items(&p.pool, call_id).await.map_err(op),
            Backend::Memory(m) => Ok(m.items(call_id)),
        }
    }

    /// The call's turn metrics, by `turn_id`.
    pub async fn turn_metrics(&self, call_id: &str) -> Result<Vec<TurnMetricsRow>, StoreError> {
        let op = StoreError::query("reading a call's turn metrics");
        match &self.backend {
            Backend::Sqlite(s) => sql::turn_metrics(&s.pool, call_id).await.map_err(op),
            Backend::Postgres(p) => sql::turn_metrics(&p.pool, call_id).await.map_err(op),
            Backend::Memory(m) => Ok(m.turn_metrics(call_id)),
        }
    }

    /// The call's summary, if one was made.
    pub async fn summary(&self, call_id: &str) -> Result<Option<SummaryRow>, StoreError> {
        let op = StoreError::query("reading a call's summary");
        match &self.backend {
            Backend::Sqlite(s) => sql::summary(&s.pool, call_id).await.map_err(op),
            Backend::Postgres(p) => sql::summary(&p.pool, call_id).await.map_err(op),
            Backend::Memory(m) => Ok(m.summary(call_id)),
        }
    }

    /// The newest `limit` summaries of `sub`'s calls in `org` (`None`: the default org) other
    /// than `except`, newest first: what a returning caller's agent is told.
    pub async fn previous_summaries(
        &self,
        org: Option<&str>,
        sub: &str,
        except: &str,
        limit: i64,
    ) -> Result<Vec<SummaryRow>, StoreError> {
        let op = StoreError::query("reading a caller's earlier summaries");
        match &self.backend {
            Backend::Sqlite(s) => sql::previous_summaries(&s.pool, org, sub, except, limit)
                .await
                .map_err(op),
            Backend::Postgres(p) => sql::previous_summaries(&p.pool, org, sub, except, limit)
                .await
                .map_err(op),
            Backend::Memory(m) => Ok(m.previous_summaries(org, sub, except, limit)),
        }
    }

    /// Up to `limit` of the call's events with `seq > after_seq`, by `seq`.
    pub async fn events(
        &self,
        call_id: &str,
        after_seq: i64,
        limit: u32,
    ) -> Result<Vec<EventRow>, StoreError> {
        let op = StoreError::query("reading a call's events");
        match &self.backend {
            Backend::Sqlite(s) => sql::events(&s.pool, call_id, after_seq, limit)
                .await
                .map_err(op),
            Backend::Postgres(p) => sql::events(&p.pool, call_id, after_seq, limit)
                .await
                .map_err(op),
            Backend::Memory(m) => Ok(m.events(call_id, after_seq, limit)),
        }
    }

    /// The calls of one owner that match `q`, newest first: same `sub` and same `org` (a
    /// `None` org matches only calls without one).
    pub async fn list_calls(
        &self,
        sub: &str,
        org: Option<&str>,
        q: &ListQuery,
    ) -> Result<Vec<CallRow>, StoreError> {
        self.list_org_calls(org, Some(sub), q).await
    }

    /// The calls of one org that match `q`, newest first, of every owner or of `sub` only (a
    /// `None` org is the default org: calls stored without one).
    pub async fn list_org_calls(
        &self,
        org: Option<&str>,
        sub: Option<&str>,
        q: &ListQuery,
    ) -> Result<Vec<CallRow>, StoreError> {
        self.select_calls(org, sub, q, q.clamped_limit()).await
    }

    /// Like [`Store::list_org_calls`] without paging (`q.limit` and `q.before_ms` aside): up
    /// to [`ListQuery::EXPORT_MAX`] calls, and whether more matched.
    pub async fn export_org_calls(
        &self,
        org: Option<&str>,
        sub: Option<&str>,
        q: &ListQuery,
    ) -> Result<(Vec<CallRow>, bool), StoreError> {
        let q = ListQuery {
            before_ms: None,
            ..q.clone()
        };
        let max = i64::from(ListQuery::EXPORT_MAX);
        let mut rows = self.select_calls(org, sub, &q, max + 1).await?;
        let truncated = rows.len() as i64 > max;
        rows.truncate(ListQuery::EXPORT_MAX as usize);
        Ok((rows, truncated))
    }

    async fn select_calls(
        &self,
        org: Option<&str>,
        sub: Option<&str>,
        q: &ListQuery,
        limit: i64,
    ) -> Result<Vec<CallRow>, StoreError> {
        let op = StoreError::query("listing calls");
        match &self.backend {
            Backend::Sqlite(s) => {
                sql::list_org_calls(&s.pool, sql::Dialect::Sqlite, org, sub, q, limit)
                    .await
                    .map_err(op)
            }
            Backend::Postgres(p) => {
                sql::list_org_calls(&p.pool, sql::Dialect::Postgres, org, sub, q, limit)
                    .await
                    .map_err(op)
            }
            Backend::Memory(m) => Ok(m.list_org_calls(org, sub, q, limit)),
        }
    }

    /// What the figures of `org` over `[from_ms, to_ms)` are computed from (see
    /// [`StatsRows`]).
    pub async fn stats(
        &self,
        org: Option<&str>,
        from_ms: i64,
        to_ms: i64,
    ) -> Result<StatsRows, StoreError> {
        let op = StoreError::query("reading an org's figures");
        match &self.backend {
            Backend::Sqlite(s) => {
                figures::stats(&s.pool, sql::Dialect::Sqlite, org, from_ms, to_ms)
                    .await
                    .map_err(op)
            }
            Backend::Postgres(p) => {
                figures::stats(&p.pool, sql::Dialect::Postgres, org, from_ms, to_ms)
                    .await
                    .map_err(op)
            }
            Backend::Memory(m) => Ok(m.stats(org, from_ms, to_ms)),
        }
    }

    /// A page of an org's monitor-stream events after `q.after`, in stream order: what a
    /// monitor that reconnects missed.
    pub async fn stream_events(&self, q: &StreamQuery) -> Result<Vec<StreamEventRow>, StoreError> {
        let op = StoreError::query("reading the monitor stream's events");
        match &self.backend {
            Backend::Sqlite(s) => sql::stream_events(&s.pool, q).await.map_err(op),
            Backend::Postgres(p) => sql::stream_events(&p.pool, q).await.map_err(op),
            Backend::Memory(m) => Ok(m.stream_events(q)),
        }
    }

    /// The ids of every call of `sub` in `org` (`None`: the default org).
    pub async fn subject_calls(
        &self,
        org: Option<&str>,
        sub: &str,
    ) -> Result<Vec<String>, StoreError> {
        let op = StoreError::query("finding a subject's calls");
        match &self.backend {
            Backend::Sqlite(s) => erase::subject_calls(&s.pool, org, sub).await.map_err(op),
            Backend::Postgres(p) => erase::subject_calls(&p.pool, org, sub).await.map_err(op),
            Backend::Memory(m) => Ok(m.subject_calls(org, sub)),
        }
    }

    /// Up to `limit` ended calls of `scope` that started before `before_ms`, oldest first.
    pub async fn expired_calls(
        &self,
        before_ms: i64,
        scope: &AgentScope,
        limit: i64,
    ) -> Result<Vec<String>, StoreError> {
        let op = StoreError::query("finding expired calls");
        match &self.backend {
            Backend::Sqlite(s) => erase::expired_calls(&s.pool, before_ms, scope, limit)
                .await
                .map_err(op),
            Backend::Postgres(p) => erase::expired_calls(&p.pool, before_ms, scope, limit)
                .await
                .map_err(op),
            Backend::Memory(m) => Ok(m.expired_calls(before_ms, scope, limit)),
        }
    }

    /// Deletes the calls `ids` with their items, turn metrics and events, and writes `audit`
    /// with the counts, in one transaction: all or nothing. Nothing of the deleted rows is
    /// left in SQLite's file or log; Postgres frees their space (see `delete` there).
    pub async fn delete_calls(
        &self,
        ids: &[String],
        audit: Option<&AuditEntry>,
    ) -> Result<Deleted, StoreError> {
        if ids.is_empty() && audit.is_none() {
            return Ok(Deleted::default());
        }
        match &self.backend {
            Backend::Sqlite(s) => s.delete(ids, audit).await,
            Backend::Postgres(p) => p.delete(ids, audit).await,
            Backend::Memory(m) => Ok(m.delete(ids, audit)),
        }
    }

    /// The newest `limit` versions of the org's agent `name` made over the API (`""`: the
    /// default org), oldest first.
    pub async fn agent_history(
        &self,
        org: &str,
        name: &str,
        limit: i64,
    ) -> Result<Vec<AgentVersionRow>, StoreError> {
        let op = StoreError::query("reading an agent's versions");
        match &self.backend {
            Backend::Sqlite(s) => agents::history(&s.pool, org, name, limit).await.map_err(op),
            Backend::Postgres(p) => agents::history(&p.pool, org, name, limit).await.map_err(op),
            Backend::Memory(m) => Ok(m.agent_history(org, name, limit)),
        }
    }

    /// The newest version of every agent made over the API, of every org.
    pub async fn current_agents(&self) -> Result<Vec<AgentVersionRow>, StoreError> {
        let op = StoreError::query("reading the agents");
        match &self.backend {
            Backend::Sqlite(s) => agents::current(&s.pool).await.map_err(op),
            Backend::Postgres(p) => agents::current(&p.pool).await.map_err(op),
            Backend::Memory(m) => Ok(m.current_agents()),
        }
    }

    /// Adds a version of an agent; false when that version exists already.
    pub async fn insert_agent_version(&self, row: &AgentVersionRow) -> Result<bool, StoreError> {
        let op = StoreError::query("writing an agent");
        match &self.backend {
            Backend::Sqlite(s) => agents::insert(&s.pool, row).await.map_err(op),
            Backend::Postgres(p) => agents::insert(&p.pool, row).await.map_err(op),
            Backend::Memory(m) => Ok(m.insert_agent_version(row)),
        }
    }

    /// The limits `org` set (`None`: it set none, the defaults apply).
    pub async fn limits(&self, org: Option<&str>) -> Result<Option<OrgLimits>, StoreError> {
        let op = StoreError::query("reading an org's limits");
        let org = org_key(org);
        match &self.backend {
            Backend::Sqlite(s) => usage::limits(&s.pool, org).await.map_err(op),
            Backend::Postgres(p) => usage::limits(&p.pool, org).await.map_err(op),
            Backend::Memory(m) => Ok(m.limits(org)),
        }
    }

    /// Sets the limits of `org`.
    pub async fn set_limits(&self, org: Option<&str>, l: &OrgLimits) -> Result<(), StoreError> {
        let op = StoreError::query("setting an org's limits");
        let org = org_key(org);
        let at = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as i64);
        match &self.backend {
            Backend::Sqlite(s) => usage::set_limits(&s.pool, org, l, at).await.map_err(op),
            Backend::Postgres(p) => usage::set_limits(&p.pool, org, l, at).await.map_err(op),
            Backend::Memory(m) => {
                m.set_limits(org, l);
                Ok(())
            }
        }
    }

    /// Call milliseconds of `org` and of its subject `sub` on `day` (`YYYY-MM-DD`), without
    /// the call stretch `except` (`(call_id, part_ms)`).
    pub async fn used_ms(
        &self,
        org: Option<&str>,
        sub: &str,
        day: &str,
        except: (&str, i64),
    ) -> Result<(i64, i64), StoreError> {
        let op = StoreError::query("reading an org's minutes");
        let org = org_key(org);
        match &self.backend {
            Backend::Sqlite(s) => usage::used_ms(&s.pool, org, sub, day, except)
                .await
                .map_err(op),
            Backend::Postgres(p) => usage::used_ms(&p.pool, org, sub, day, except)
                .await
                .map_err(op),
            Backend::Memory(m) => Ok(m.used_ms(org, sub, day, except)),
        }
    }

    /// The call time of each stretch of `org`'s calls on `day` (`YYYY-MM-DD`): (call id,
    /// stretch start, sub, ms).
    pub async fn day_calls(
        &self,
        org: Option<&str>,
        day: &str,
    ) -> Result<Vec<(String, i64, String, i64)>, StoreError> {
        let op = StoreError::query("reading an org's minutes");
        let org = org_key(org);
        match &self.backend {
            Backend::Sqlite(s) => usage::day_calls(&s.pool, org, day).await.map_err(op),
            Backend::Postgres(p) => usage::day_calls(&p.pool, org, day).await.map_err(op),
            Backend::Memory(m) => Ok(m.day_calls(org, day)),
        }
    }

    /// The usage of `org` on the UTC days `from_day..=to_day` (`YYYY-MM-DD`), by `group`.
    pub async fn usage_report(
        &self,
        org: Option<&str>,
        from_day: &str,
        to_day: &str,
        group: GroupBy,
    ) -> Result<UsageReport, StoreError> {
        let op = StoreError::query("reading an org's usage");
        let org = org_key(org);
        match &self.backend {
            Backend::Sqlite(s) => usage::report(&s.pool, org, from_day, to_day, group)
                .await
                .map_err(op),
            Backend::Postgres(p) => usage::report(&p.pool, org, from_day, to_day, group)
                .await
                .map_err(op),
            Backend::Memory(m) => Ok(m.usage_report(org, from_day, to_day, group)),
        }
    }

    /// The newest `limit` audit entries of `org` (`None`: the default org), newest first.
    pub async fn audit_log(
        &self,
        org: Option<&str>,
        limit: i64,
    ) -> Result<Vec<AuditRow>, StoreError> {
        let op = StoreError::query("reading the audit log");
        match &self.backend {
            Backend::Sqlite(s) => erase::audit_log(&s.pool, org, limit).await.map_err(op),
            Backend::Postgres(p) => erase::audit_log(&p.pool, org, limit).await.map_err(op),
            Backend::Memory(m) => Ok(m.audit_log(org, limit)),
        }
    }

    /// Stores a webhook delivery before its first attempt (due at once). Idempotent.
    pub async fn insert_delivery(&self, d: &NewDelivery) -> Result<(), StoreError> {
        let op = StoreError::query("storing a webhook delivery");
        match &self.backend {
            Backend::Sqlite(s) => deliveries::insert(&s.pool, d).await.map_err(op),
            Backend::Postgres(p) => deliveries::insert(&p.pool, d).await.map_err(op),
            Backend::Memory(m) => {
                m.deliveries.insert(d);
                Ok(())
            }
        }
    }

    /// Up to `limit` ids of pending deliveries of `agents`, due at `now_ms` and not claimed
    /// by anyone (or whose claim has lapsed), the longest due first.
    pub async fn due_deliveries(
        &self,
        agents: &[String],
        now_ms: i64,
        limit: i64,
    ) -> Result<Vec<String>, StoreError> {
        let op = StoreError::query("looking for due webhook deliveries");
        match &self.backend {
            Backend::Sqlite(s) => deliveries::due(&s.pool, agents, now_ms, limit)
                .await
                .map_err(op),
            Backend::Postgres(p) => deliveries::due(&p.pool, agents, now_ms, limit)
                .await
                .map_err(op),
            Backend::Memory(m) => Ok(m.deliveries.due(agents, now_ms, limit)),
        }
    }

    /// Claims a due delivery for `claim` until `until_ms`, counting the attempt; `None` when
    /// it is not pending and due any more, or someone else holds it. One statement: of two
    /// workers (of one node or several) racing for it, one gets it.
    pub async fn claim_delivery(
        &self,
        id: &str,
        claim: &str,
        now_ms: i64,
        until_ms: i64,
    ) -> Result<Option<ClaimedDelivery>, StoreError> {
        let op = StoreError::query("claiming a webhook delivery");
        match &self.backend {
            Backend::Sqlite(s) => deliveries::claim(&s.pool, id, claim, now_ms, until_ms)
                .await
                .map_err(op),
            Backend::Postgres(p) => deliveries::claim(&p.pool, id, claim, now_ms, until_ms)
                .await
                .map_err(op),
            Backend::Memory(m) => Ok(m.deliveries.claim(id, claim, now_ms, until_ms)),
        }
    }

    /// Records how the attempt under `claim` ended and lets the claim go. False when the
    /// claim was lost meanwhile (nothing is changed then).
    pub async fn settle_delivery(
        &self,
        id: &str,
        claim: &str,
        settle: &Settle,
    ) -> Result<bool, StoreError> {
        let op = StoreError::query("recording a webhook attempt");
        match &self.backend {
            Backend::Sqlite(s) => deliveries::settle(&s.pool, id, claim, settle)
                .await
                .map_err(op),
            Backend::Postgres(p) => deliveries::settle(&p.pool, id, claim, settle)
                .await
                .map_err(op),
            Backend::Memory(m) => Ok(m.deliveries.settle(id, claim, settle)),
        }
    }

    pub async fn delivery(&self, id: &str) -> Result<Option<DeliveryRow>, StoreError> {
        let op = StoreError::query("reading a webhook delivery");
        match &self.backend {
            Backend::Sqlite(s) => deliveries::delivery(&s.pool, id).await.map_err(op),
            Backend::Postgres(p) => deliveries::delivery(&p.pool, id).await.map_err(op),
            Backend::Memory(m) => Ok(m.deliveries.delivery(id)),
        }
    }

    /// A page of an org's webhook deliveries, newest first.
    pub async fn list_deliveries(&self, q: &DeliveryQuery) -> Result<Vec<DeliveryRow>, StoreError> {
        let op = StoreError::query("listing webhook deliveries");
        match &self.backend {
            Backend::Sqlite(s) => deliveries::list(&s.pool, q).await.map_err(op),
            Backend::Postgres(p) => deliveries::list(&p.pool, q).await.map_err(op),
            Backend::Memory(m) => Ok(m.deliveries.list(q)),
        }
    }

    /// Creates an API key, and its org if the org is new.
    pub async fn create_key(&self, k: &KeyRow) -> Result<(), StoreError> {
        let op = StoreError::query("creating an API key");
        match &self.backend {
            Backend::Sqlite(s) => keys::create_key(&s.pool, k).await.map_err(op),
            Backend::Postgres(p) => keys::create_key(&p.pool, k).await.map_err(op),
            Backend::Memory(m) => {
                m.keys.create_key(k);
                Ok(())
            }
        }
    }

    /// One API key by its id (with the hash of its secret, to check a presented key).
    pub async fn key(&self, id: &str) -> Result<Option<KeyRow>, StoreError> {
        let op = StoreError::query("reading an API key");
        match &self.backend {
            Backend::Sqlite(s) => keys::key(&s.pool, id).await.map_err(op),
            Backend::Postgres(p) => keys::key(&p.pool, id).await.map_err(op),
            Backend::Memory(m) => Ok(m.keys.key(id)),
        }
    }

    /// The API keys of `org` (`None`: of every org), by org and age; at most
    /// [`MAX_LISTED_KEYS`].
    pub async fn list_keys(&self, org: Option<&str>) -> Result<Vec<KeyRow>, StoreError> {
        let op = StoreError::query("listing API keys");
        match &self.backend {
            Backend::Sqlite(s) => keys::list_keys(&s.pool, org).await.map_err(op),
            Backend::Postgres(p) => keys::list_keys(&p.pool, org).await.map_err(op),
            Backend::Memory(m) => Ok(m.keys.list_keys(org)),
        }
    }

    /// Revokes an API key at `at_ms`; it works no more from then on.
    pub async fn revoke_key(&self, id: &str, at_ms: i64) -> Result<Revoked, StoreError> {
        let op = StoreError::query("revoking an API key");
        match &self.backend {
            Backend::Sqlite(s) => keys::revoke_key(&s.pool, id, at_ms).await.map_err(op),
            Backend::Postgres(p) => keys::revoke_key(&p.pool, id, at_ms).await.map_err(op),
            Backend::Memory(m) => Ok(m.keys.revoke_key(id, at_ms)),
        }
    }

    /// Notes that an API key was used at `at_ms`.
    pub async fn touch_key(&self, id: &str, at_ms: i64) -> Result<(), StoreError> {
        let op = StoreError::query("noting an API key's use");
        match &self.backend {
            Backend::Sqlite(s) => keys::touch_key(&s.pool, id, at_ms).await.map_err(op),
            Backend::Postgres(p) => keys::touch_key(&p.pool, id, at_ms).await.map_err(op),
            Backend::Memory(m) => {
                m.keys.touch_key(id, at_ms);
                Ok(())
            }
        }
    }

    /// Stores a new call session, deleting those that expired before `now_ms`.
    pub async fn insert_session(&self, s: &SessionRow, now_ms: i64) -> Result<(), StoreError> {
        let op = StoreError::query("storing a call session");
        match &self.backend {
            Backend::Sqlite(db) => keys::insert_session(&db.pool, s, now_ms).await.map_err(op),
            Backend::Postgres(p) => keys::insert_session(&p.pool, s, now_ms).await.map_err(op),
            Backend::Memory(m) => {
                m.keys.insert_session(s, now_ms);
                Ok(())
            }
        }
    }

    pub async fn session(&self, id: &str) -> Result<Option<SessionRow>, StoreError> {
        let op = StoreError::query("reading a call session");
        match &self.backend {
            Backend::Sqlite(s) => keys::session(&s.pool, id).await.map_err(op),
            Backend::Postgres(p) => keys::session(&p.pool, id).await.map_err(op),
            Backend::Memory(m) => Ok(m.keys.session(id)),
        }
    }

    /// Binds a call session to `call_id`, atomically, unless it is bound to another call.
    /// True when the session is bound to `call_id`.
    pub async fn bind_session(&self, id: &str, call_id: &str) -> Result<bool, StoreError> {
        let op = StoreError::query("binding a call session to its call");
        match &self.backend {
            Backend::Sqlite(s) => keys::bind_session(&s.pool, id, call_id).await.map_err(op),
            Backend::Postgres(p) => keys::bind_session(&p.pool, id, call_id).await.map_err(op),
            Backend::Memory(m) => Ok(m.keys.bind_session(id, call_id)),
        }
    }

    /// Closes the connections (waiting for those in use).
    pub async fn close(&self) {
        match &self.backend {
            Backend::Sqlite(s) => s.pool.close().await,
            Backend::Postgres(p) => p.pool.close().await,
            Backend::Memory(_) => {}
        }
    }

    #[cfg(test)]
    pub(crate) fn memory_backend(&self) -> Option<&MemoryStore> {
        match &self.backend {
            Backend::Memory(m) => Some(m),
            _ => None,
        }
    }
}

/// `sqlite://` and the default database file: `$XDG_DATA_HOME/voxwire/voxwire.db`, else
/// `$HOME/.local/share/voxwire/voxwire.db`, else `./voxwire.db`.
pub fn default_url() -> String {
    sqlite_url(&default_path(
        std::env::var_os("XDG_DATA_HOME"),
        std::env::var_os("HOME"),
    ))
}

fn default_path(
    xdg_data_home: Option<std::ffi::OsString>,
    home: Option<std::ffi::OsString>,
) -> PathBuf {
    // The XDG spec says a relative XDG_DATA_HOME is to be ignored.
    let data = xdg_data_home
        .map(PathBuf::from)
        .filter(|d| d.is_absolute())
        .or_else(|| {
            home.filter(|h| !h.is_empty())
                .map(|h| PathBuf::from(h).join(".local/share"))
        });
    match data {
        Some(d) => d.join("voxwire").join("voxwire.db"),
        None => PathBuf::from("voxwire.db"),
    }
}

/// The `sqlite://` URL of a path; `%`, `?` and `#` are escaped, as the URL is read
/// percent-decoded up to its first `?`.
fn sqlite_url(path: &std::path::Path) -> String {
    let mut url = String::from("sqlite://");
    for c in path.to_string_lossy().chars() {
        match c {
            '%' => url.push_str("%25"),
            '?' => url.push_str("%3F"),
            '#' => url.push_str("%23"),
            c => url.push(c),
        }
    }
    url
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_path_follows_xdg() {
        let os = |s: &str| Some(std::ffi::OsString::from(s));
        assert_eq!(
            default_path(os("/data"), os("/home/u")),
            PathBuf::from("/data/voxwire/voxwire.db")
        );
        assert_eq!(
            default_path(os("relative"), os("/home/u")),
            PathBuf::from("/home/u/.local/share/voxwire/voxwire.db")
        );
        assert_eq!(default_path(None, None), PathBuf::from("voxwire.db"));
        assert_eq!(
            sqlite_url(std::path::Path::new("/a b/50%?#.db")),
            "sqlite:///a b/50%25%3F%23.db"
        );
        assert!(default_url().starts_with("sqlite://"));
    }

    #[tokio::test]
    async fn odd_file_names_survive_the_url() {
        let dir = std::env::temp_dir().join(format!("voxwire-store-{}", std::process::id()));
        let file = dir.join("a dir?/50% #1.db");
        let store = Store::connect(&sqlite_url(&file)).await.unwrap();
        assert!(file.is_file(), "{} missing", file.display());
        assert_eq!(store.describe(), format!("sqlite ({})", file.display()));
        store.close().await;
        let _ = std::fs::remove_dir_all(dir);
    }

    #[tokio::test]
    async fn bad_urls_are_refused_without_their_password() {
        let e = Store::connect("mysql://root:hunter22@db/x")
            .await
            .err()
            .unwrap();
        assert!(!e.retryable());
        assert!(!e.to_string().contains("hunter22"), "{e}");
        assert!(e.to_string().contains("sqlite://"), "{e}");
        let opts = StoreOptions {
            acquire_timeout: Duration::from_millis(300),
            ..StoreOptions::default()
        };
        // Nothing listens on port 1: refused, retryable, and the password is nowhere.
        let e = Store::connect_with("postgres://app:hunter22@127.0.0.1:1/x", &opts)
            .await
            .err()
            .unwrap();
        assert!(e.retryable(), "{e}");
        let mut chain = e.to_string();
        let mut source = std::error::Error::source(&e);
        while let Some(s) = source {
            chain.push_str(&s.to_string());
            source = s.source();
        }
        assert!(!chain.contains("hunter22"), "{chain}");
        assert!(chain.contains("127.0.0.1:1/x"), "{chain}");
    }
}

//! A call's usage and the org's limits on it. [`Meter`] keeps the running totals of the
//! call's current stretch (per UTC day, metric and engine) and writes them through the store
//! writer, off the call's path: every [`WRITE_EVERY`] and when the call ends. [`limits_at_start`]
//! refuses a call over its org's daily minutes; [`LimitWatch`] tells a live call when the org's
//! or the subject's minutes of the day run out. It reads the org's limits again each time it
//! looks, so a limit set or changed during a call reaches it within [`WRITE_EVERY`].
//!
//! Minutes are wall-clock minutes of calls within the UTC day (a call across midnight counts
//! on both days). The store is read for the other calls' minutes, which they write every
//! [`WRITE_EVERY`]: calls of one org that run at once may together overrun a daily allowance
//! by about that much each. On several nodes the org's counter of the day in Redis is read
//! instead (each write raises it too; it is made from the store when Redis has none), and the
//! store again when Redis cannot answer.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::oneshot;
use tokio_util::sync::CancellationToken;
use tracing::warn;

use super::record::now_ms;
use super::services::CallServices;
use super::start::StartError;
use super::store::{LiveCaps, Owner};
use crate::live::{Cluster, UsedError};
use crate::protocol::{ErrorCode, LimitKind};
use crate::store::{
    day_of, day_start_ms, org_key, OrgLimits, Store, StoreWriter, UsageRow, Write, CALL_MS,
};

/// How often a live call writes its running usage, and re-reads the org's minutes when a
/// daily limit applies.
pub const WRITE_EVERY: Duration = Duration::from_secs(10);

const DAY_MS: i64 = 86_400_000;
const MINUTE_MS: i64 = 60_000;

/// The running usage of one live stretch of a call.
pub struct Meter {
    writer: Option<StoreWriter>,
    call_id: String,
    /// When the stretch began (Unix ms).
    part_ms: i64,
    org: String,
    sub: String,
    agent: String,
    /// By (UTC day, metric, engine).
    totals: BTreeMap<(String, &'static str, String), i64>,
    /// Stretch totals already counted by [`Meter::observe`], by (metric, engine).
    seen: BTreeMap<(&'static str, String), i64>,
    /// Who speaks the stretch's replies, for its agent audio: fixed for the stretch, since
    /// that audio is observed as a running total.
    pub audio_engine: String,
    /// Several nodes: the org's counters of the day in Redis, raised with each write.
    cluster: Option<Arc<Cluster>>,
}

impl Meter {
    pub fn new(
        writer: Option<StoreWriter>,
        call_id: &str,
        part_ms: i64,
        owner: &Owner,
        agent: &str,
    ) -> Self {
        Self {
            writer,
            call_id: call_id.to_string(),
            part_ms,
            org: org_key(owner.org.as_deref()).to_string(),
            sub: owner.sub.clone(),
            agent: agent.to_string(),
            totals: BTreeMap::new(),
            seen: BTreeMap::new(),
            audio_engine: String::new(),
            cluster: None,
        }
    }

    /// Keeps the org's counters of the day in `cluster`'s Redis too.
    pub fn with_cluster(mut self, cluster: Option<Arc<Cluster>>) -> Self {
        self.cluster = cluster;
        self
    }

    /// Counts what `total` (the stretch's total of `metric` by `engine` so far) adds to
    /// what was observed before, on today's row.
    pub fn observe(&mut self, metric: &'static str, engine: &str, total: i64) {
        let seen = self.seen.entry((metric, engine.to_string())).or_default();
        let delta = total - *seen;
        *seen = total.max(*seen);
        self.add(metric, engine, delta);
    }

    /// Adds `amount` of `metric` done by `engine` (`""`: no engine) to today's total.
    pub fn add(&mut self, metric: &'static str, engine: &str, amount: i64) {
        if amount <= 0 {
            return;
        }
        let key = (day_of(now_ms()), metric, engine.to_string());
        let total = self.totals.entry(key).or_default();
        *total = total.saturating_add(amount);
    }

    /// The total of `metric` by `engine` over every day of the stretch.
    pub fn total(&self, metric: &str, engine: &str) -> i64 {
        self.totals
            .iter()
            .filter(|((_, m, e), _)| *m == metric && e == engine)
            .map(|(_, v)| *v)
            .sum()
    }

    /// Sets the call's time per UTC day from the start of the stretch to `now`.
    fn clock(&mut self, now: i64) {
        let mut day = day_start_ms(self.part_ms);
        // A stretch lasts at most a day or so (`VOXWIRE_MAX_CALL_SECS`); the bound is a guard.
        for _ in 0..400 {
            if day > now {
                break;
            }
            let ms = now.min(day + DAY_MS) - self.part_ms.max(day);
            self.totals
                .insert((day_of(day), CALL_MS, String::new()), ms.max(0));
            day += DAY_MS;
        }
    }

    /// Writes the running totals (each write raises the stored ones; none counts twice).
    pub fn write(&mut self) {
        self.clock(now_ms());
        if let Some(cluster) = &self.cluster {
            let days: Vec<(String, i64)> = self
                .totals
                .iter()
                .filter(|((_, m, _), _)| *m == CALL_MS)
                .map(|((day, _, _), v)| (day.clone(), *v))
                .collect();
            let (cluster, org, sub) = (cluster.clone(), self.org.clone(), self.sub.clone());
            let (call_id, part_ms) = (self.call_id.clone(), self.part_ms);
            // Off the call's path; the next write sets the same totals again if this one fails.
            tokio::spawn(async move {
                for (day, ms) in days {
                    let stretch = (call_id.as_str(), part_ms);
                    if let Err(e) = cluster.add_used(&org, &sub, &day, stretch, ms).await {
                        warn!(error = %e, "cannot count the call's minutes in Redis");
                        return;
                    }
                }
            });
        }
        let Some(writer) = &self.writer else {
            return;
        };
        for ((day, metric, engine), value) in &self.totals {
            writer.send(Write::Usage(UsageRow {
                call_id: self.call_id.clone(),
                part_ms: self.part_ms,
                day: day.clone(),
                org: self.org.clone(),
                sub: self.sub.clone(),
                agent: self.agent.clone(),
                metric: metric.to_string(),
                engine: engine.clone(),
                value: *value,
            }));
        }
    }
}

/// The limits in force for `org`: its own, else the configured defaults.
pub async fn org_limits(svc: &CallServices, org: Option<&str>) -> Result<OrgLimits, StartError> {
    match svc.store.limits(org).await {
        Ok(own) => Ok(own.unwrap_or(svc.usage.defaults)),
        Err(e) => {
            warn!(error = %e, "cannot read the org's limits");
            Err(StartError::new(
                ErrorCode::StoreUnavailable,
                "the call store is unavailable; try again",
            ))
        }
    }
}

fn reached(kind: LimitKind, limit: i64, what: &str) -> StartError {
    StartError::new(
        ErrorCode::LimitReached,
        format!(
            "the {what} limit of {limit} is reached (`{}`)",
            kind.as_str()
        ),
    )
    .with_limit(kind)
}

/// Checks the daily minutes of the org and of the subject before a call starts; returns the
/// caps on live calls to check as it starts.
pub async fn limits_at_start(svc: &CallServices, owner: &Owner) -> Result<LiveCaps, StartError> {
    let limits = org_limits(svc, owner.org.as_deref()).await?;
    let caps = LiveCaps {
        org: limits.concurrent_calls,
        subject: limits.subject_concurrent_calls,
    };
    let allowance = Allowance::of(&limits);
    if allowance.is_none() {
        return Ok(caps);
    }
    let day = day_of(now_ms());
    let (org_used, sub_used) = used_ms(
        &svc.store,
        svc.cluster.as_ref(),
        owner.org.as_deref(),
        &owner.sub,
        &day,
        ("", -1),
    )
    .await
    .map_err(|e| {
        warn!(error = %e, "cannot read the org's minutes");
        StartError::new(
            ErrorCode::StoreUnavailable,
            "the call store is unavailable; try again",
        )
    })?;
    if let (Some(max), Some(m)) = (allowance.org_ms, limits.daily_minutes) {
        if org_used >= max {
            return Err(reached(LimitKind::DailyMinutes, m, "org's daily minutes"));
        }
    }
    if let (Some(max), Some(m)) = (allowance.sub_ms, limits.subject_daily_minutes) {
        if sub_used >= max {
            return Err(reached(
                LimitKind::SubjectDailyMinutes,
                m,
                "subject's daily minutes",
            ));
        }
    }
    Ok(caps)
}

/// The ms of calls of `org` and of `sub` in it on `day`, without stretch `except`: from the
/// org's counters in Redis on several nodes (from the store when Redis cannot answer), else
/// from the store.
async fn used_ms(
    store: &Store,
    cluster: Option<&Arc<Cluster>>,
    org: Option<&str>,
    sub: &str,
    day: &str,
    except: (&str, i64),
) -> Result<(i64, i64), crate::store::StoreError> {
    if let Some(c) = cluster {
        match c.used_ms(store, org, sub, day, except).await {
            Ok(used) => return Ok(used),
            Err(UsedError::Store(e)) => return Err(e),
            Err(UsedError::Redis(e)) => {
                warn!(error = %e, "cannot read the day's minutes from Redis; reading the store")
            }
        }
    }
    store.used_ms(org, sub, day, except).await
}

/// A live call's daily allowances, in ms (`None`: unlimited).
#[derive(Debug, Clone, Copy)]
pub struct Allowance {
    pub org_ms: Option<i64>,
    pub sub_ms: Option<i64>,
}

impl Allowance {
    fn of(limits: &OrgLimits) -> Self {
        Self {
            org_ms: limits.daily_minutes.map(|m| m.saturating_mul(MINUTE_MS)),
            sub_ms: limits
                .subject_daily_minutes
                .map(|m| m.saturating_mul(MINUTE_MS)),
        }
    }

    fn is_none(&self) -> bool {
        self.org_ms.is_none() && self.sub_ms.is_none()
    }
}

/// Watches one live stretch of a call against its org's and subject's daily minutes.
pub struct LimitWatch {
    pub store: Store,
    pub owner: Owner,
    pub call_id: String,
    pub part_ms: i64,
    /// The limits of an org that has none of its own.
    pub defaults: OrgLimits,
    /// Several nodes: where the org's minutes of the day are counted.
    pub cluster: Option<Arc<Cluster>>,
}

impl LimitWatch {
    /// Sends the limit that ran out, once; ends with `cancel`.
    pub async fn run(self, cancel: CancellationToken, out: oneshot::Sender<LimitKind>) {
        loop {
            let now = now_ms();
            let wait = match self.left(now).await {
                Ok(Some((left, kind))) if left <= 0 => {
                    let _ = out.send(kind);
                    return;
                }
                Ok(Some((left, _))) => left,
                // No daily limit now: one may be set during the call.
                Ok(None) => WRITE_EVERY.as_millis() as i64,
                Err(e) => {
                    warn!(error = %e, call_id = %self.call_id, "cannot read the org's limits or minutes");
                    WRITE_EVERY.as_millis() as i64
                }
            };
            // Look again when the allowance would run out, at the next write of the other
            // calls, or at midnight (UTC) when a new day's allowance begins.
            let to_midnight = day_start_ms(now) + DAY_MS - now;
            let wait = wait
                .min(WRITE_EVERY.as_millis() as i64)
                .min(to_midnight)
                .max(1);
            tokio::select! {
                _ = cancel.cancelled() => return,
                _ = tokio::time::sleep(Duration::from_millis(wait as u64)) => {}
            }
        }
    }

    /// The ms left of the allowance that runs out first, and which it is (`None`: no daily
    /// limit applies).
    async fn left(&self, now: i64) -> Result<Option<(i64, LimitKind)>, crate::store::StoreError> {
        let org = self.owner.org.as_deref();
        let limits = self.store.limits(org).await?.unwrap_or(self.defaults);
        let allowance = Allowance::of(&limits);
        if allowance.is_none() {
            return Ok(None);
        }
        let day = day_of(now);
        let mine = now - self.part_ms.max(day_start_ms(now));
        let (org_used, sub_used) = used_ms(
            &self.store,
            self.cluster.as_ref(),
            org,
            &self.owner.sub,
            &day,
            (&self.call_id, self.part_ms),
        )
        .await?;
        Ok([
            (allowance.org_ms, org_used, LimitKind::DailyMinutes),
            (allowance.sub_ms, sub_used, LimitKind::SubjectDailyMinutes),
        ]
        .into_iter()
        .filter_map(|(max, used, kind)| max.map(|m| (m - used - mine, kind)))
        .min_by_key(|(left, _)| *left))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_clock_splits_a_stretch_at_midnight() {
        let owner = Owner {
            sub: "s".into(),
            org: None,
        };
        let midnight = 1_798_675_200_000;
        let mut m = Meter::new(None, "c", midnight - 5_000, &owner, "a");
        m.clock(midnight + 7_000);
        assert_eq!(
            m.totals[&("2026-12-30".into(), CALL_MS, String::new())],
            5_000
        );
        assert_eq!(
            m.totals[&("2026-12-31".into(), CALL_MS, String::new())],
            7_000
        );
        assert_eq!(m.total(CALL_MS, ""), 12_000);
        m.add("tts_chars", "fake", 12);
        m.add("tts_chars", "fake", 0);
        m.add("tts_chars", "fake", 3);
        assert_eq!(m.total("tts_chars", "fake"), 15);
    }
}

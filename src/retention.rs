//! Retention and erasure: deleting calls with everything of them (items, turn metrics,
//! events, recording files, and the ended calls held in memory for resumption).
//!
//! Retention deletes ended calls that started more than `VOXWIRE_RETENTION_DAYS` ago (an
//! agent's `retention_days` wins for its calls; 0 keeps them forever), in transactions of at
//! most [`BATCH`] calls; the server runs it at start and then hourly, `voxwire retention run`
//! on demand. Erasure deletes every call of one subject of one org in one transaction, with an
//! audit entry, unless the subject has a live call.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::agents::Agents;
use crate::call::recording::recording_path;
use crate::call::{CallServices, Owner};
use crate::store::{AgentScope, AuditEntry, Deleted, Store, StoreError};

/// Calls deleted per transaction by retention.
pub const BATCH: i64 = 500;
/// How often the server runs retention.
pub const PERIOD: Duration = Duration::from_secs(3600);
const DAY_MS: i64 = 86_400_000;

/// How long calls are kept: a default and the agents that set their own.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Policy {
    /// Days; 0 keeps forever.
    pub default_days: u32,
    /// Agents with their own `retention_days` (0: forever), by name.
    pub agents: Vec<(String, u32)>,
}

impl Policy {
    pub fn new(default_days: u32, agents: &Agents) -> Self {
        let mut own: Vec<(String, u32)> = agents
            .iter()
            .filter_map(|a| Some((a.name.clone(), a.retention_days?)))
            .collect();
        own.sort();
        Self {
            default_days,
            agents: own,
        }
    }

    /// Whether nothing is ever deleted.
    pub fn keeps_forever(&self) -> bool {
        self.default_days == 0 && self.agents.iter().all(|(_, d)| *d == 0)
    }

    /// Which calls expire at `now_ms`: each scope with the start before which its calls go.
    fn passes(&self, now_ms: i64) -> Vec<(AgentScope, i64)> {
        let cutoff = |days: u32| now_ms.saturating_sub(i64::from(days) * DAY_MS);
        let mut passes: Vec<(AgentScope, i64)> = self
            .agents
            .iter()
            .filter(|(_, d)| *d > 0)
            .map(|(a, d)| (AgentScope::Only(a.clone()), cutoff(*d)))
            .collect();
        if self.default_days > 0 {
            let own = self.agents.iter().map(|(a, _)| a.clone()).collect();
            passes.push((AgentScope::Except(own), cutoff(self.default_days)));
        }
        passes
    }
}

/// Removes the recording files of `ids`; returns how many there were. A file that cannot be
/// removed is logged and not counted.
pub async fn remove_recordings(dir: &Path, ids: &[String]) -> i64 {
    let mut removed = 0;
    for id in ids {
        match tokio::fs::remove_file(recording_path(dir, id)).await {
            Ok(()) => removed += 1,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => tracing::warn!(call_id = %id, error = %e, "cannot remove a recording"),
        }
    }
    removed
}

/// One retention pass at `now_ms`: deletes the expired calls of `policy` from `store` and their
/// recordings from `recordings`, calling `forget` with each batch of deleted ids.
pub async fn run(
    store: &Store,
    recordings: &Path,
    policy: &Policy,
    now_ms: i64,
    forget: &(dyn Fn(&[String]) + Send + Sync),
) -> Result<Deleted, StoreError> {
    let mut total = Deleted::default();
    for (scope, before_ms) in policy.passes(now_ms) {
        loop {
            let ids = store.expired_calls(before_ms, &scope, BATCH).await?;
            if ids.is_empty() {
                break;
            }
            let recordings = remove_recordings(recordings, &ids).await;
            let mut deleted = store.delete_calls(&ids, None).await?;
            deleted.recordings = recordings;
            forget(&ids);
            total += deleted;
            if (ids.len() as i64) < BATCH {
                break;
            }
        }
    }
    Ok(total)
}

/// Runs retention for the server now and then every [`PERIOD`] until `stop`.
pub async fn every_hour(svc: Arc<CallServices>, policy: Policy, stop: CancellationToken) {
    let mut tick = tokio::time::interval(PERIOD);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tick.tick() => {}
        }
        let calls = svc.calls.clone();
        let forget = move |ids: &[String]| {
            calls.remove_ended(ids);
        };
        let now = crate::call::record::now_ms();
        let pass = run(&svc.store, &svc.recordings, &policy, now, &forget);
        let result = tokio::select! {
            _ = stop.cancelled() => return,
            r = pass => r,
        };
        match result {
            Ok(d) if d == Deleted::default() => tracing::debug!("retention: nothing expired"),
            Ok(d) => tracing::info!(
                calls = d.calls,
                items = d.items,
                events = d.events,
                metrics = d.metrics,
                recordings = d.recordings,
                "retention: expired calls deleted"
            ),
            Err(e) => {
                tracing::warn!(error = %e, "retention: cannot delete expired calls; next hour")
            }
        }
    }
}

/// The counts of a deletion on one line, as `voxwire retention run` prints them.
pub fn report(d: &Deleted) -> String {
    format!(
        "deleted {} calls, {} items, {} events, {} metrics, {} recordings, {} webhook deliveries, \
         {} summaries",
        d.calls, d.items, d.events, d.metrics, d.recordings, d.webhooks, d.summaries
    )
}

/// Why a subject was not erased.
#[derive(Debug, thiserror::Error)]
pub enum EraseError {
    #[error("the subject has a live call")]
    Live,
    #[error("earlier writes of the subject's calls have not reached the store")]
    Unflushed,
    #[error("cannot tell whether the subject has a live call on another node: {0}")]
    Cluster(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Erases every call of `sub` in `org` with its rows and recording, and writes an audit entry
/// naming `actor` (never `sub`); refused while the subject has a live call on any node.
pub async fn erase_subject(
    svc: &CallServices,
    org: Option<&str>,
    sub: &str,
    actor: &str,
) -> Result<Deleted, EraseError> {
    let owner = Owner {
        sub: sub.to_string(),
        org: org.map(str::to_string),
    };
    if svc.calls.has_live(&owner) {
        return Err(EraseError::Live);
    }
    if let Some(cluster) = &svc.cluster {
        match cluster.subject_live(org, sub).await {
            Ok(true) => return Err(EraseError::Live),
            Ok(false) => {}
            Err(e) => return Err(EraseError::Cluster(e.to_string())),
        }
    }
    // Writes still queued would bring rows back after the deletion.
    if !svc.writer.flush(Duration::from_secs(10)).await {
        return Err(EraseError::Unflushed);
    }
    let ids = svc.store.subject_calls(org, sub).await?;
    let recordings = remove_recordings(&svc.recordings, &ids).await;
    let audit = AuditEntry {
        at_ms: crate::call::record::now_ms(),
        actor: actor.to_string(),
        org: org.map(str::to_string),
        action: "erase_subject".into(),
        recordings,
    };
    let deleted = svc.store.delete_calls(&ids, Some(&audit)).await?;
    svc.calls.remove_ended(&ids);
    Ok(deleted)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_agent_keeps_its_own_days() {
        let agents = Agents::parse(
            "default = \"a\"\n[[agent]]\nname = \"a\"\nsystem_prompt = \"p\"\n\
             [[agent]]\nname = \"b\"\nsystem_prompt = \"p\"\nretention_days = 2\n\
             [[agent]]\nname = \"c\"\nsystem_prompt = \"p\"\nretention_days = 0",
        )
        .unwrap();
        let now = 100 * DAY_MS;
        assert!(Policy::new(0, &agents).passes(now).len() == 1);
        let p = Policy::new(30, &agents);
        assert!(!p.keeps_forever());
        assert_eq!(
            p.passes(now),
            vec![
                (AgentScope::Only("b".into()), 98 * DAY_MS),
                (
                    AgentScope::Except(vec!["b".into(), "c".into()]),
                    70 * DAY_MS
                ),
            ]
        );
        let none = Agents::parse("[[agent]]\nname = \"a\"\nsystem_prompt = \"p\"").unwrap();
        assert!(Policy::new(0, &none).keeps_forever());
        assert!(Policy::new(0, &none).passes(now).is_empty());
    }
}

//! Webhook deliveries in memory, for the in-memory store: the same claims and settling as the
//! statements of `deliveries.rs`, under one mutex.

use std::collections::HashMap;
use std::sync::Mutex;

use super::deliveries::{
    ClaimedDelivery, DeliveryQuery, DeliveryRow, NewDelivery, Settle, PENDING,
};

#[derive(Default)]
pub(crate) struct MemoryDeliveries {
    rows: Mutex<HashMap<String, Stored>>,
}

struct Stored {
    row: DeliveryRow,
    body: String,
    claim: Option<String>,
    claimed_until_ms: Option<i64>,
}

impl Stored {
    fn due(&self, now_ms: i64) -> bool {
        self.row.state == PENDING
            && self.row.next_attempt_ms.is_some_and(|t| t <= now_ms)
            && self.claimed_until_ms.is_none_or(|t| t <= now_ms)
    }
}

impl MemoryDeliveries {
    fn rows(&self) -> std::sync::MutexGuard<'_, HashMap<String, Stored>> {
        self.rows.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub(crate) fn insert(&self, d: &NewDelivery) {
        self.rows().entry(d.id.clone()).or_insert_with(|| Stored {
            row: DeliveryRow {
                id: d.id.clone(),
                org: d.org.clone(),
                sub: d.sub.clone(),
                agent: d.agent.clone(),
                call_id: d.call_id.clone(),
                event: d.event.clone(),
                url: d.url.clone(),
                created_at_ms: d.created_at_ms,
                state: PENDING.into(),
                attempts: 0,
                next_attempt_ms: Some(d.created_at_ms),
                last_status: None,
                last_error: None,
                delivered_at_ms: None,
            },
            body: d.body.clone(),
            claim: None,
            claimed_until_ms: None,
        });
    }

    pub(crate) fn due(&self, agents: &[String], now_ms: i64, limit: i64) -> Vec<String> {
        let rows = self.rows();
        let mut due: Vec<(i64, &String)> = rows
            .values()
            .filter(|s| s.due(now_ms) && agents.contains(&s.row.agent))
            .map(|s| (s.row.next_attempt_ms.unwrap_or_default(), &s.row.id))
            .collect();
        due.sort();
        due.into_iter()
            .take(usize::try_from(limit).unwrap_or(0))
            .map(|(_, id)| id.clone())
            .collect()
    }

    pub(crate) fn claim(
        &self,
        id: &str,
        claim: &str,
        now_ms: i64,
        until_ms: i64,
    ) -> Option<ClaimedDelivery> {
        let mut rows = self.rows();
        let s = rows.get_mut(id).filter(|s| s.due(now_ms))?;
        s.claim = Some(claim.to_string());
        s.claimed_until_ms = Some(until_ms);
        s.row.attempts += 1;
        Some(ClaimedDelivery {
            id: s.row.id.clone(),
            agent: s.row.agent.clone(),
            event: s.row.event.clone(),
            url: s.row.url.clone(),
            body: s.body.clone(),
            created_at_ms: s.row.created_at_ms,
            attempts: s.row.attempts,
        })
    }

    pub(crate) fn settle(&self, id: &str, claim: &str, settle: &Settle) -> bool {
        let mut rows = self.rows();
        let Some(s) = rows
            .get_mut(id)
            .filter(|s| s.claim.as_deref() == Some(claim) && s.row.state == PENDING)
        else {
            return false;
        };
        s.claim = None;
        s.claimed_until_ms = None;
        s.row.state = settle.state.to_string();
        s.row.next_attempt_ms = settle.next_attempt_ms;
        s.row.last_status = settle.last_status;
        s.row.last_error = settle.last_error.clone();
        s.row.delivered_at_ms = settle.delivered_at_ms;
        true
    }

    pub(crate) fn delivery(&self, id: &str) -> Option<DeliveryRow> {
        self.rows().get(id).map(|s| s.row.clone())
    }

    /// Deletes the deliveries of the calls `ids`; how many went.
    pub(crate) fn delete_calls(&self, ids: &[String]) -> i64 {
        let mut rows = self.rows();
        let before = rows.len();
        rows.retain(|_, s| !ids.contains(&s.row.call_id));
        (before - rows.len()) as i64
    }

    pub(crate) fn list(&self, q: &DeliveryQuery) -> Vec<DeliveryRow> {
        let rows = self.rows();
        let mut page: Vec<DeliveryRow> = rows
            .values()
            .map(|s| &s.row)
            .filter(|r| r.org == q.org)
            .filter(|r| {
                q.before.as_ref().is_none_or(|(ms, id)| {
                    r.created_at_ms < *ms || (r.created_at_ms == *ms && &r.id < id)
                })
            })
            .cloned()
            .collect();
        page.sort_by(|a, b| (b.created_at_ms, &b.id).cmp(&(a.created_at_ms, &a.id)));
        page.truncate(q.clamped_limit() as usize);
        page
    }
}

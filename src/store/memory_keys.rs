//! Orgs, API keys and call sessions in memory, for the in-memory store: the same semantics as
//! the statements of `keys.rs`, under one mutex.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Mutex;

use super::keys::{KeyRow, Revoked, SessionRow, MAX_LISTED_KEYS};

#[derive(Default)]
pub(crate) struct MemoryKeys {
    tables: Mutex<Tables>,
}

#[derive(Default)]
struct Tables {
    orgs: BTreeSet<String>,
    keys: BTreeMap<String, KeyRow>,
    sessions: HashMap<String, SessionRow>,
}

impl MemoryKeys {
    fn tables(&self) -> std::sync::MutexGuard<'_, Tables> {
        self.tables.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub(crate) fn create_key(&self, k: &KeyRow) {
        let mut t = self.tables();
        t.orgs.insert(k.org.clone());
        t.keys.insert(k.id.clone(), k.clone());
    }

    pub(crate) fn key(&self, id: &str) -> Option<KeyRow> {
        self.tables().keys.get(id).cloned()
    }

    pub(crate) fn list_keys(&self, org: Option<&str>) -> Vec<KeyRow> {
        let mut rows: Vec<KeyRow> = self
            .tables()
            .keys
            .values()
            .filter(|k| org.is_none_or(|o| k.org == o))
            .cloned()
            .collect();
        rows.sort_by(|a, b| {
            (&a.org, a.created_at_ms, &a.id).cmp(&(&b.org, b.created_at_ms, &b.id))
        });
        rows.truncate(MAX_LISTED_KEYS as usize);
        rows
    }

    pub(crate) fn revoke_key(&self, id: &str, at_ms: i64) -> Revoked {
        match self.tables().keys.get_mut(id) {
            None => Revoked::NotFound,
            Some(k) if k.revoked_at_ms.is_some() => Revoked::Already,
            Some(k) => {
                k.revoked_at_ms = Some(at_ms);
                Revoked::Now
            }
        }
    }

    pub(crate) fn touch_key(&self, id: &str, at_ms: i64) {
        if let Some(k) = self.tables().keys.get_mut(id) {
            k.last_used_at_ms = Some(at_ms);
        }
    }

    pub(crate) fn insert_session(&self, s: &SessionRow, now_ms: i64) {
        let mut t = self.tables();
        t.sessions.retain(|_, s| s.expires_at_ms >= now_ms);
        t.sessions.insert(s.id.clone(), s.clone());
    }

    pub(crate) fn session(&self, id: &str) -> Option<SessionRow> {
        self.tables().sessions.get(id).cloned()
    }

    pub(crate) fn bind_session(&self, id: &str, call_id: &str) -> bool {
        match self.tables().sessions.get_mut(id) {
            Some(s) if s.call_id.is_none() => {
                s.call_id = Some(call_id.to_string());
                true
            }
            Some(s) => s.call_id.as_deref() == Some(call_id),
            None => false,
        }
    }

    /// Deletes the sessions bound to the calls `ids` (they hold the calls' subject and
    /// variables).
    pub(crate) fn delete_calls(&self, ids: &[String]) {
        self.tables()
            .sessions
            .retain(|_, s| s.call_id.as_ref().is_none_or(|c| !ids.contains(c)));
    }
}

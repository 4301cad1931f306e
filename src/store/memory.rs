//! The in-memory store, for unit tests: the same semantics as the databases, kept in maps behind
//! one mutex. Nothing survives the process.

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;

use super::agents::AgentVersionRow;
use super::erase::{AgentScope, AuditEntry, AuditRow, Deleted};
use super::memory_deliveries::MemoryDeliveries;
use super::rows::{
    CallRow, EventRow, ItemRow, ListQuery, StatsRows, StreamEventRow, StreamQuery, SummaryRow,
    TurnMetricsRow, Write,
};
use super::usage::{GroupBy, OrgLimits, UsageReport, UsageRow, CALL_MS, MAX_REPORT_ROWS};
use super::StoreError;

#[derive(Default)]
pub(crate) struct MemoryStore {
    tables: Mutex<Tables>,
    /// Webhook deliveries, apart from the call tables.
    pub(crate) deliveries: MemoryDeliveries,
    /// Orgs, API keys and call sessions, apart from the call tables.
    pub(crate) keys: super::memory_keys::MemoryKeys,
    /// Makes every write fail while set (tests of the writer).
    #[cfg(test)]
    fault: Mutex<Option<bool>>,
}

#[derive(Default)]
struct Tables {
    calls: HashMap<String, CallRow>,
    items: BTreeMap<(String, i64), ItemRow>,
    turn_metrics: BTreeMap<(String, i64), TurnMetricsRow>,
    events: BTreeMap<(String, i64), EventRow>,
    summaries: HashMap<String, SummaryRow>,
    audit: Vec<AuditRow>,
    agent_versions: BTreeMap<(String, String, i64), AgentVersionRow>,
    limits: HashMap<String, OrgLimits>,
    usage: BTreeMap<(String, i64, String, String, String), UsageRow>,
}

impl MemoryStore {
    fn tables(&self) -> std::sync::MutexGuard<'_, Tables> {
        // A panic while holding the lock leaves whole rows (each write is one insert), so the
        // maps are still consistent.
        self.tables.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// While `Some(retryable)`, writes fail with an injected error.
    #[cfg(test)]
    pub(crate) fn set_fault(&self, fault: Option<bool>) {
        *self.fault.lock().unwrap_or_else(|e| e.into_inner()) = fault;
    }

    pub(crate) fn limits(&self, org: &str) -> Option<OrgLimits> {
        self.tables().limits.get(org).copied()
    }

    pub(crate) fn set_limits(&self, org: &str, l: &OrgLimits) {
        self.tables().limits.insert(org.to_string(), *l);
    }

    pub(crate) fn used_ms(
        &self,
        org: &str,
        sub: &str,
        day: &str,
        except: (&str, i64),
    ) -> (i64, i64) {
        let t = self.tables();
        let rows = t.usage.values().filter(|r| {
            r.org == org
                && r.day == day
                && r.metric == CALL_MS
                && !(r.call_id == except.0 && r.part_ms == except.1)
        });
        rows.fold((0, 0), |(o, s), r| {
            (o + r.value, s + if r.sub == sub { r.value } else { 0 })
        })
    }

    pub(crate) fn day_calls(&self, org: &str, day: &str) -> Vec<(String, i64, String, i64)> {
        let t = self.tables();
        t.usage
            .values()
            .filter(|r| r.org == org && r.day == day && r.metric == CALL_MS)
            .map(|r| (r.call_id.clone(), r.part_ms, r.sub.clone(), r.value))
            .collect()
    }

    pub(crate) fn usage_report(
        &self,
        org: &str,
        from_day: &str,
        to_day: &str,
        group: GroupBy,
    ) -> UsageReport {
        let t = self.tables();
        let mut calls: BTreeMap<String, std::collections::BTreeSet<String>> = BTreeMap::new();
        let mut sums: BTreeMap<(String, String, String), i64> = BTreeMap::new();
        for r in t.usage.values() {
            if r.org != org || r.day.as_str() < from_day || r.day.as_str() > to_day {
                continue;
            }
            let key = match group {
                GroupBy::Day => r.day.clone(),
                GroupBy::Agent => r.agent.clone(),
                GroupBy::Sub => r.sub.clone(),
            };
            if r.metric == CALL_MS {
                calls
                    .entry(key.clone())
                    .or_default()
                    .insert(r.call_id.clone());
            }
            *sums
                .entry((key, r.metric.clone(), r.engine.clone()))
                .or_default() += r.value;
        }
        let max = MAX_REPORT_ROWS as usize;
        let truncated = calls.len() > max || sums.len() > max;
        UsageReport {
            calls: calls
                .into_iter()
                .take(max)
                .map(|(k, ids)| (k, ids.len() as i64))
                .collect(),
            sums: sums
                .into_iter()
                .take(max)
                .map(|((k, m, e), v)| (k, m, e, v))
                .collect(),
            truncated,
        }
    }

    pub(crate) fn write(&self, batch: &[Write]) -> Result<(), StoreError> {
        #[cfg(test)]
        if let Some(retryable) = *self.fault.lock().unwrap_or_else(|e| e.into_inner()) {
            return Err(StoreError::Injected { retryable });
        }
        // Applying a write cannot fail, so holding the lock makes the batch all or nothing.
        let mut t = self.tables();
        for w in batch {
            apply(&mut t, w);
        }
        Ok(())
    }

    pub(crate) fn call(&self, id: &str) -> Option<CallRow> {
        self.tables().calls.get(id).cloned()
    }

    pub(crate) fn items(&self, call_id: &str) -> Vec<ItemRow> {
        let t = self.tables();
        of_call(&t.items, call_id).cloned().collect()
    }

    pub(crate) fn turn_metrics(&self, call_id: &str) -> Vec<TurnMetricsRow> {
        let t = self.tables();
        of_call(&t.turn_metrics, call_id).cloned().collect()
    }

    pub(crate) fn events(&self, call_id: &str, after_seq: i64, limit: u32) -> Vec<EventRow> {
        let t = self.tables();
        of_call(&t.events, call_id)
            .filter(|e| e.seq > after_seq)
            .take(limit as usize)
            .cloned()
            .collect()
    }

    pub(crate) fn list_org_calls(
        &self,
        org: Option<&str>,
        sub: Option<&str>,
        q: &ListQuery,
        limit: i64,
    ) -> Vec<CallRow> {
        let t = self.tables();
        let mut calls: Vec<CallRow> = t
            .calls
            .values()
            .filter(|c| c.org.as_deref() == org && sub.is_none_or(|s| c.sub == s))
            .filter(|c| q.in_range(c.started_at_ms))
            .filter(|c| q.agent.as_ref().is_none_or(|a| &c.agent == a))
            .filter(|c| {
                q.text.is_none() || of_call(&t.items, &c.id).any(|i| q.text_matches(&i.text))
            })
            .cloned()
            .collect();
        calls.sort_by(|a, b| (b.started_at_ms, &b.id).cmp(&(a.started_at_ms, &a.id)));
        calls.truncate(usize::try_from(limit).unwrap_or(0));
        calls
    }

    pub(crate) fn stats(&self, org: Option<&str>, from_ms: i64, to_ms: i64) -> StatsRows {
        let t = self.tables();
        let mut calls: Vec<&CallRow> = t
            .calls
            .values()
            .filter(|c| c.org.as_deref() == org && c.started_at_ms >= from_ms)
            .filter(|c| c.started_at_ms < to_ms)
            .collect();
        calls.sort_by(|a, b| (b.started_at_ms, &b.id).cmp(&(a.started_at_ms, &a.id)));
        let cap = StatsRows::MAX_VALUES as usize;
        let mut rows = StatsRows {
            calls: calls.len() as i64,
            ..StatsRows::default()
        };
        rows.durations_ms = calls
            .iter()
            .filter_map(|c| Some(c.ended_at_ms? - c.started_at_ms))
            .take(cap)
            .collect();
        rows.voice_to_voice_ms = calls
            .iter()
            .flat_map(|c| of_call(&t.turn_metrics, &c.id))
            .filter_map(|m| m.metrics.get("voice_to_voice_ms")?.as_f64())
            .take(cap)
            .collect();
        for i in calls.iter().flat_map(|c| of_call(&t.items, &c.id)) {
            if i.role == "assistant" && i.source != "operator" {
                rows.replies += 1;
                rows.replies_interrupted += i64::from(i.heard.is_some());
            }
        }
        rows
    }
}

impl MemoryStore {
    pub(crate) fn subject_calls(&self, org: Option<&str>, sub: &str) -> Vec<String> {
        let t = self.tables();
        let mut ids: Vec<String> = t
            .calls
            .values()
            .filter(|c| c.org.as_deref() == org && c.sub == sub)
            .map(|c| c.id.clone())
            .collect();
        ids.sort();
        ids
    }

    pub(crate) fn expired_calls(
        &self,
        before_ms: i64,
        scope: &AgentScope,
        limit: i64,
    ) -> Vec<String> {
        let t = self.tables();
        let mut calls: Vec<&CallRow> = t
            .calls
            .values()
            .filter(|c| c.ended_at_ms.is_some() && c.started_at_ms < before_ms)
            .filter(|c| match scope {
                AgentScope::Only(a) => &c.agent == a,
                AgentScope::Except(v) => !v.contains(&c.agent),
            })
            .collect();
        calls.sort_by(|a, b| (a.started_at_ms, &a.id).cmp(&(b.started_at_ms, &b.id)));
        calls
            .into_iter()
            .take(usize::try_from(limit).unwrap_or(0))
            .map(|c| c.id.clone())
            .collect()
    }

    pub(crate) fn delete(&self, ids: &[String], audit: Option<&AuditEntry>) -> Deleted {
        let mut t = self.tables();
        let mut d = Deleted::default();
        for id in ids {
            let key = |k: &(String, i64)| &k.0 != id;
            let before = (t.items.len(), t.turn_metrics.len(), t.events.len());
            t.items.retain(|k, _| key(k));
            t.turn_metrics.retain(|k, _| key(k));
            t.events.retain(|k, _| key(k));
            d.items += (before.0 - t.items.len()) as i64;
            d.metrics += (before.1 - t.turn_metrics.len()) as i64;
            d.events += (before.2 - t.events.len()) as i64;
            d.summaries += i64::from(t.summaries.remove(id).is_some());
            for row in t.usage.values_mut().filter(|r| &r.call_id == id) {
                row.sub = super::erase::ERASED_SUB.to_string();
            }
            d.calls += i64::from(t.calls.remove(id).is_some());
        }
        d.webhooks = self.deliveries.delete_calls(ids);
        self.keys.delete_calls(ids);
        if let Some(a) = audit {
            d.recordings = a.recordings;
            let id = t.audit.len() as i64 + 1;
            t.audit.push(AuditRow {
                id,
                at_ms: a.at_ms,
                actor: a.actor.clone(),
                org: a.org.clone(),
                action: a.action.clone(),
                calls: d.calls,
                items: d.items,
                metrics: d.metrics,
                events: d.events,
                recordings: a.recordings,
                webhooks: d.webhooks,
                summaries: d.summaries,
            });
        }
        d
    }

    pub(crate) fn agent_history(&self, org: &str, name: &str, limit: i64) -> Vec<AgentVersionRow> {
        let mut rows: Vec<AgentVersionRow> = self
            .tables()
            .agent_versions
            .values()
            .filter(|r| r.org == org && r.name == name)
            .cloned()
            .collect();
        rows.sort_by_key(|r| r.version);
        let skip = rows
            .len()
            .saturating_sub(usize::try_from(limit).unwrap_or(0));
        rows.split_off(skip)
    }

    pub(crate) fn current_agents(&self) -> Vec<AgentVersionRow> {
        let t = self.tables();
        let mut newest: BTreeMap<(String, String), AgentVersionRow> = BTreeMap::new();
        for r in t.agent_versions.values() {
            newest.insert((r.org.clone(), r.name.clone()), r.clone());
        }
        newest.into_values().collect()
    }

    pub(crate) fn insert_agent_version(&self, row: &AgentVersionRow) -> bool {
        let mut t = self.tables();
        let key = (row.org.clone(), row.name.clone(), row.version);
        if t.agent_versions.contains_key(&key) {
            return false;
        }
        t.agent_versions.insert(key, row.clone());
        true
    }

    pub(crate) fn summary(&self, call_id: &str) -> Option<SummaryRow> {
        self.tables().summaries.get(call_id).cloned()
    }

    pub(crate) fn previous_summaries(
        &self,
        org: Option<&str>,
        sub: &str,
        except: &str,
        limit: i64,
    ) -> Vec<SummaryRow> {
        let t = self.tables();
        let mut rows: Vec<SummaryRow> = t
            .summaries
            .values()
            .filter(|r| r.sub == sub && r.org.as_deref() == org && r.call_id != except)
            .cloned()
            .collect();
        rows.sort_by(|a, b| {
            b.at_ms
                .cmp(&a.at_ms)
                .then_with(|| a.call_id.cmp(&b.call_id))
        });
        rows.truncate(usize::try_from(limit).unwrap_or(0));
        rows
    }

    pub(crate) fn audit_log(&self, org: Option<&str>, limit: i64) -> Vec<AuditRow> {
        let t = self.tables();
        t.audit
            .iter()
            .rev()
            .filter(|a| a.org.as_deref() == org)
            .take(usize::try_from(limit).unwrap_or(0))
            .cloned()
            .collect()
    }

    pub(crate) fn stream_events(&self, q: &StreamQuery) -> Vec<StreamEventRow> {
        let t = self.tables();
        let same = |want: &Option<String>, have: &str| want.as_deref().is_none_or(|w| w == have);
        let mut rows: Vec<StreamEventRow> = t
            .events
            .values()
            .filter_map(|e| Some((e, e.stream_id.filter(|id| *id > q.after)?)))
            .filter_map(|(e, id)| {
                let c = t.calls.get(&e.call_id)?;
                let wanted = c.org == q.org
                    && same(&q.call_id, &e.call_id)
                    && same(&q.agent, &c.agent)
                    && same(&q.sub, &c.sub);
                wanted.then(|| StreamEventRow {
                    call_id: e.call_id.clone(),
                    seq: e.seq,
                    at_ms: e.at_ms,
                    kind: e.kind.clone(),
                    data: e.data.clone(),
                    stream_id: id,
                    org: c.org.clone(),
                    sub: c.sub.clone(),
                    agent: c.agent.clone(),
                })
            })
            .collect();
        rows.sort_by_key(|r| r.stream_id);
        rows.truncate(q.clamped_limit() as usize);
        rows
    }
}

fn of_call<'a, T>(
    map: &'a BTreeMap<(String, i64), T>,
    call_id: &str,
) -> impl Iterator<Item = &'a T> + 'a {
    map.range((call_id.to_string(), i64::MIN)..=(call_id.to_string(), i64::MAX))
        .map(|(_, v)| v)
}

fn apply(t: &mut Tables, w: &Write) {
    match w {
        Write::Usage(r) => {
            let key = (
                r.call_id.clone(),
                r.part_ms,
                r.day.clone(),
                r.metric.clone(),
                r.engine.clone(),
            );
            match t.usage.get_mut(&key) {
                Some(old) => old.value = old.value.max(r.value),
                None => {
                    t.usage.insert(key, r.clone());
                }
            }
        }
        Write::CallStarted(c) => match t.calls.get_mut(&c.id) {
            Some(old) => {
                old.agent = c.agent.clone();
                old.variables = c.variables.clone();
                old.system_prompt = c.system_prompt.clone();
                old.ended_at_ms = None;
                old.end_reason = None;
            }
            None => {
                t.calls.insert(c.id.clone(), c.clone());
            }
        },
        Write::Item(i) => {
            let key = (i.call_id.clone(), i.item_id);
            let mut new = i.clone();
            if let Some(old) = t.items.get(&key) {
                new.created_at_ms = old.created_at_ms;
                if new.heard.is_none() {
                    new.heard = old.heard.clone();
                }
            }
            t.items.insert(key, new);
        }
        Write::ItemHeard {
            call_id,
            item_id,
            heard,
        } => {
            if let Some(item) = t.items.get_mut(&(call_id.clone(), *item_id)) {
                item.heard = Some(heard.clone());
            }
        }
        Write::TurnMetrics(m) => {
            t.turn_metrics
                .insert((m.call_id.clone(), m.turn_id), m.clone());
        }
        Write::Event(e) => {
            t.events
                .entry((e.call_id.clone(), e.seq))
                .or_insert_with(|| e.clone());
        }
        Write::Summary(r) => {
            if t.calls.contains_key(&r.call_id) {
                t.summaries.insert(r.call_id.clone(), r.clone());
            }
        }
        Write::CallEnded {
            call_id,
            ended_at_ms,
            reason,
            turns,
            caller_audio_ms,
            agent_audio_ms,
        } => {
            if let Some(c) = t.calls.get_mut(call_id) {
                c.ended_at_ms = Some(*ended_at_ms);
                c.end_reason = Some(reason.clone());
                c.turns = *turns;
                c.caller_audio_ms = *caller_audio_ms;
                c.agent_audio_ms = *agent_audio_ms;
            }
        }
    }
}

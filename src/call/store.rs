//! The registry of live calls: who owns each, its history, how many calls each user has open,
//! and the handle of every live call (send it input, subscribe to its events).
//! A call that ends stays here only until the store has its last writes ([`CallStore::forget`]);
//! from then on it is read back from the durable store when it is resumed or looked at. While
//! the database is away, ended calls wait here, at most `max_calls` of them (the oldest first
//! forgotten).

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, AtomicU8, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use serde::{Deserialize, Serialize};

use super::handle::CallHandle;
use super::history::History;
use super::record::Totals;
use crate::engines::llm::Role;
use crate::protocol::LimitKind;

/// Who a call belongs to: the token's `sub` and `org`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
pub struct Owner {
    pub sub: String,
    pub org: Option<String>,
}

pub struct CallRecord {
    pub id: String,
    pub owner: Owner,
    pub agent: String,
    pub history: Mutex<History>,
    pub turns: AtomicU64,
    /// The agent's system prompt as filled in by the call's `start_call` variables.
    pub system: Mutex<Option<String>>,
    /// Next turn and conversation item ids; they go on across resumptions.
    next_turn: AtomicU64,
    next_item: AtomicU64,
    live: AtomicBool,
    /// Counts the call's live stretches (start, then each resumption).
    stretch: AtomicU64,
    /// Carried from one stretch of the call to the next (event numbers, audio totals).
    pub totals: Mutex<Totals>,
    /// When the current live stretch started, Unix ms.
    started_at_ms: AtomicI64,
    /// What the call is doing ([`CallState`] as a number).
    state: AtomicU8,
    /// The operator (`sub`) who holds the call taken over, if any; set by the call actor.
    taken_over_by: Mutex<Option<String>>,
    /// In the operators' queue (see [`CallState::Waiting`]).
    waiting: AtomicBool,
}

/// What a live call is doing, as far as the monitor is concerned.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CallState {
    /// Waiting for the caller, or hearing them.
    Listening,
    /// The caller's turn is over; the reply is being prepared.
    Thinking,
    /// The agent's reply is playing.
    Speaking,
    /// Its flow put the call in the operators' queue: the agent no longer answers, and the
    /// caller waits for an operator to take the call over.
    Waiting,
}

/// A live call as the monitor's snapshot shows it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LiveInfo {
    pub call_id: String,
    pub agent: String,
    pub sub: String,
    pub started_at: i64,
    pub state: CallState,
    /// The operator holding the call taken over.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub taken_over_by: Option<String>,
}

impl LiveInfo {
    fn of(r: &CallRecord) -> Self {
        LiveInfo {
            call_id: r.id.clone(),
            agent: r.agent.clone(),
            sub: r.owner.sub.clone(),
            started_at: r.started_at_ms.load(Ordering::SeqCst),
            state: r.state(),
            taken_over_by: r.taken_over_by(),
        }
    }
}

/// A finished call read back from the durable store.
pub struct Restored {
    pub id: String,
    pub owner: Owner,
    pub agent: String,
    pub system: Option<String>,
    /// History in order: the item, its role and what it keeps (for a cut reply, what was heard).
    pub messages: Vec<(u64, Role, String)>,
    pub next_turn: u64,
    pub next_item: u64,
    pub turns: u64,
    pub totals: Totals,
}

impl CallRecord {
    /// Locks the history; a poisoned lock (a panic elsewhere) still yields the data.
    pub fn history(&self) -> MutexGuard<'_, History> {
        self.history.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The conversation so far as the agent's model sees it, masked as the call's agent
    /// redacts (for operators and the history route).
    pub fn masked_messages(&self, agents: &crate::agents::Agents) -> Vec<serde_json::Value> {
        let redactor = agents
            .get_in(self.owner.org.as_deref(), Some(&self.agent))
            .map(|a| a.redactor())
            .unwrap_or_default();
        self.history()
            .messages()
            .into_iter()
            .map(|mut m| {
                m.content = redactor.redact(&m.content).into_owned();
                for call in &mut m.tool_calls {
                    call.arguments = redactor.redact(&call.arguments).into_owned();
                }
                serde_json::json!(m)
            })
            .collect()
    }

    /// The call's system prompt, if a `start_call` set one.
    pub fn system_prompt(&self) -> Option<String> {
        self.system
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    pub fn set_system_prompt(&self, prompt: &str) {
        *self.system.lock().unwrap_or_else(|p| p.into_inner()) = Some(prompt.to_string());
    }

    /// Takes the next turn id (1, 2, 3...).
    pub fn new_turn_id(&self) -> u64 {
        self.next_turn.fetch_add(1, Ordering::SeqCst)
    }

    /// The id the next turn will get.
    pub fn peek_turn_id(&self) -> u64 {
        self.next_turn.load(Ordering::SeqCst)
    }

    /// Takes the next conversation item id (1, 2, 3...).
    pub fn new_item_id(&self) -> u64 {
        self.next_item.fetch_add(1, Ordering::SeqCst)
    }

    pub fn totals(&self) -> Totals {
        *self.totals.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn set_totals(&self, t: Totals) {
        *self.totals.lock().unwrap_or_else(|p| p.into_inner()) = t;
    }

    pub fn is_live(&self) -> bool {
        self.live.load(Ordering::SeqCst)
    }

    /// Which live stretch of the call this is (1 for the first).
    pub fn stretch(&self) -> u64 {
        self.stretch.load(Ordering::SeqCst)
    }

    /// When the current live stretch started, Unix ms.
    pub fn stretch_started_ms(&self) -> i64 {
        self.started_at_ms.load(Ordering::SeqCst)
    }

    pub fn state(&self) -> CallState {
        if self.waiting.load(Ordering::Relaxed) {
            return CallState::Waiting;
        }
        match self.state.load(Ordering::Relaxed) {
            1 => CallState::Thinking,
            2 => CallState::Speaking,
            _ => CallState::Listening,
        }
    }

    /// The operator holding the call taken over, if any.
    pub fn taken_over_by(&self) -> Option<String> {
        self.taken_over_by
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    pub fn set_taken_over_by(&self, sub: Option<String>) {
        *self.taken_over_by.lock().unwrap_or_else(|p| p.into_inner()) = sub;
    }

    pub fn set_state(&self, state: CallState) {
        let n = match state {
            CallState::Listening => 0,
            CallState::Thinking => 1,
            CallState::Speaking => 2,
            CallState::Waiting => return self.set_waiting(true),
        };
        self.state.store(n, Ordering::Relaxed);
    }

    /// Puts the call in the operators' queue, or takes it out.
    pub fn set_waiting(&self, on: bool) {
        self.waiting.store(on, Ordering::Relaxed);
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum StoreError {
    #[error("no call `{0}` for this user")]
    NotFound(String),
    #[error("call `{0}` is already live on another connection")]
    Live(String),
    #[error("too many calls for this user (limit {0})")]
    TooMany(usize),
    #[error("the org's `{kind}` limit of {1} live calls is reached", kind = .0.as_str())]
    Limit(LimitKind, i64),
}

/// The org's caps on live calls, checked when a call starts (`None`: no cap).
#[derive(Debug, Clone, Copy, Default)]
pub struct LiveCaps {
    /// Live calls of the org on this node.
    pub org: Option<i64>,
    /// Live calls of the subject (in the org) on this node.
    pub subject: Option<i64>,
}

struct Inner {
    calls: HashMap<String, Arc<CallRecord>>,
    order: VecDeque<String>,
    live_per_user: HashMap<Owner, usize>,
    /// Live calls per org (`None`: the default org).
    live_per_org: HashMap<Option<String>, usize>,
    /// Live calls only.
    handles: HashMap<String, CallHandle>,
}

pub struct CallStore {
    inner: Mutex<Inner>,
    max_calls: usize,
    history_limit: usize,
    max_live_per_user: usize,
}

/// Keeps a call live; dropping it ends the call's live state and frees the user's slot.
pub struct LiveCall {
    pub record: Arc<CallRecord>,
    store: Arc<CallStore>,
    /// Dropped with the call's live state (the call's lease on a cluster).
    guard: Option<Box<dyn Send + Sync>>,
}

impl LiveCall {
    /// Keeps `guard` until the call's live state ends.
    pub fn hold(&mut self, guard: impl Send + Sync + 'static) {
        self.guard = Some(Box::new(guard));
    }
}

impl Drop for LiveCall {
    fn drop(&mut self) {
        self.record.live.store(false, Ordering::SeqCst);
        let mut inner = self.store.lock();
        if let Some(n) = inner.live_per_user.get_mut(&self.record.owner) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                inner.live_per_user.remove(&self.record.owner);
            }
        }
        if let Some(n) = inner.live_per_org.get_mut(&self.record.owner.org) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                inner.live_per_org.remove(&self.record.owner.org);
            }
        }
    }
}

fn new_call_id() -> String {
    format!("call_{:016x}", rand::random::<u64>())
}

impl CallStore {
    pub fn new(max_calls: usize, history_limit: usize, max_live_per_user: usize) -> Arc<Self> {
        Arc::new(Self {
            inner: Mutex::new(Inner {
                calls: HashMap::new(),
                order: VecDeque::new(),
                live_per_user: HashMap::new(),
                live_per_org: HashMap::new(),
                handles: HashMap::new(),
            }),
            max_calls: max_calls.max(1),
            history_limit,
            max_live_per_user,
        })
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Starts a new call, or resumes `resume` if this owner has it and it is not live.
    pub fn start(
        self: &Arc<Self>,
        owner: &Owner,
        agent: &str,
        resume: Option<&str>,
    ) -> Result<LiveCall, StoreError> {
        self.start_capped(owner, agent, resume, LiveCaps::default())
    }

    /// Like [`CallStore::start`], refusing a call that would go over the org's `caps`
    /// (checked and counted under one lock, so that racing starts cannot both pass).
    pub fn start_capped(
        self: &Arc<Self>,
        owner: &Owner,
        agent: &str,
        resume: Option<&str>,
        caps: LiveCaps,
    ) -> Result<LiveCall, StoreError> {
        let mut inner = self.lock();
        let live = inner.live_per_user.get(owner).copied().unwrap_or(0);
        if live >= self.max_live_per_user {
            return Err(StoreError::TooMany(self.max_live_per_user));
        }
        let in_org = inner.live_per_org.get(&owner.org).copied().unwrap_or(0);
        if let Some(cap) = caps.org.filter(|cap| in_org as i64 >= *cap) {
            return Err(StoreError::Limit(LimitKind::ConcurrentCalls, cap));
        }
        if let Some(cap) = caps.subject.filter(|cap| live as i64 >= *cap) {
            return Err(StoreError::Limit(LimitKind::SubjectConcurrentCalls, cap));
        }
        let record = match resume {
            Some(id) => {
                let rec = inner
                    .calls
                    .get(id)
                    .filter(|r| &r.owner == owner)
                    .cloned()
                    .ok_or_else(|| StoreError::NotFound(id.chars().take(64).collect()))?;
                if rec.live.swap(true, Ordering::SeqCst) {
                    return Err(StoreError::Live(rec.id.clone()));
                }
                rec.stretch.fetch_add(1, Ordering::SeqCst);
                rec.started_at_ms
                    .store(super::record::now_ms(), Ordering::SeqCst);
                rec.set_state(CallState::Listening);
                // A resumed call starts with the agent answering.
                rec.set_taken_over_by(None);
                rec.set_waiting(false);
                rec
            }
            None => {
                let rec = Arc::new(CallRecord {
                    id: new_call_id(),
                    owner: owner.clone(),
                    agent: agent.to_string(),
                    history: Mutex::new(History::new(self.history_limit)),
                    turns: AtomicU64::new(0),
                    system: Mutex::new(None),
                    next_turn: AtomicU64::new(1),
                    next_item: AtomicU64::new(1),
                    live: AtomicBool::new(true),
                    stretch: AtomicU64::new(1),
                    totals: Mutex::new(Totals::default()),
                    started_at_ms: AtomicI64::new(super::record::now_ms()),
                    state: AtomicU8::new(0),
                    taken_over_by: Mutex::new(None),
                    waiting: AtomicBool::new(false),
                });
                inner.calls.insert(rec.id.clone(), rec.clone());
                inner.order.push_back(rec.id.clone());
                Self::evict(&mut inner, self.max_calls);
                rec
            }
        };
        *inner.live_per_user.entry(owner.clone()).or_insert(0) += 1;
        *inner.live_per_org.entry(owner.org.clone()).or_insert(0) += 1;
        Ok(LiveCall {
            record,
            store: self.clone(),
            guard: None,
        })
    }

    fn evict(inner: &mut Inner, max: usize) {
        let mut scanned = 0;
        while inner.calls.len() > max && scanned < inner.order.len() {
            let Some(id) = inner.order.pop_front() else {
                break;
            };
            match inner.calls.get(&id) {
                Some(r) if r.is_live() => {
                    inner.order.push_back(id);
                    scanned += 1;
                }
                _ => {
                    inner.calls.remove(&id);
                }
            }
        }
    }

    /// A call owned by `owner`; anyone else gets `NotFound`.
    pub fn get_owned(&self, id: &str, owner: &Owner) -> Result<Arc<CallRecord>, StoreError> {
        self.lock()
            .calls
            .get(id)
            .filter(|r| &r.owner == owner)
            .cloned()
            .ok_or_else(|| StoreError::NotFound(id.chars().take(64).collect()))
    }

    /// A call held here whose owner `allowed` accepts (an operator's org, say); else `None`.
    pub fn get_if(&self, id: &str, allowed: impl Fn(&Owner) -> bool) -> Option<Arc<CallRecord>> {
        self.lock()
            .calls
            .get(id)
            .filter(|r| allowed(&r.owner))
            .cloned()
    }

    /// The live calls of one org (`None`: the default org), oldest first.
    pub fn live_in_org(&self, org: Option<&str>) -> Vec<LiveInfo> {
        let inner = self.lock();
        let mut live: Vec<LiveInfo> = inner
            .handles
            .keys()
            .filter_map(|id| inner.calls.get(id))
            .filter(|r| r.is_live() && r.owner.org.as_deref() == org)
            .map(|r| LiveInfo::of(r))
            .collect();
        live.sort_by(|a, b| (a.started_at, &a.call_id).cmp(&(b.started_at, &b.call_id)));
        live
    }

    /// A live call of this node as the monitor shows it, with its owner.
    pub fn live_info(&self, id: &str) -> Option<(LiveInfo, Owner)> {
        let inner = self.lock();
        inner
            .calls
            .get(id)
            .filter(|r| r.is_live() && inner.handles.contains_key(id))
            .map(|r| (LiveInfo::of(r), r.owner.clone()))
    }

    /// Brings back a finished call from the durable store (after a restart), unless it is
    /// known already.
    pub fn restore(&self, r: Restored) {
        let mut inner = self.lock();
        if inner.calls.contains_key(&r.id) {
            return;
        }
        let mut history = History::new(self.history_limit);
        for (item, role, text) in r.messages {
            history.push_item(role, text, Some(item));
        }
        let rec = Arc::new(CallRecord {
            id: r.id.clone(),
            owner: r.owner,
            agent: r.agent,
            history: Mutex::new(history),
            turns: AtomicU64::new(r.turns),
            system: Mutex::new(r.system),
            next_turn: AtomicU64::new(r.next_turn.max(1)),
            next_item: AtomicU64::new(r.next_item.max(1)),
            live: AtomicBool::new(false),
            stretch: AtomicU64::new(0),
            totals: Mutex::new(r.totals),
            started_at_ms: AtomicI64::new(0),
            state: AtomicU8::new(0),
            taken_over_by: Mutex::new(None),
            waiting: AtomicBool::new(false),
        });
        inner.calls.insert(r.id.clone(), rec);
        inner.order.push_back(r.id);
        Self::evict(&mut inner, self.max_calls);
    }

    /// Forgets an ended call whose writes are all in the durable store, unless it was resumed
    /// since (`stretch` is the stretch that ended).
    pub fn forget(&self, id: &str, stretch: u64) {
        let mut inner = self.lock();
        let ended = inner
            .calls
            .get(id)
            .is_some_and(|r| !r.is_live() && r.stretch() == stretch);
        if ended {
            inner.calls.remove(id);
            if let Some(i) = inner.order.iter().position(|o| o == id) {
                inner.order.remove(i);
            }
        }
    }

    /// Forgets the ended calls among `ids` whatever their writes (their rows were deleted), so
    /// they can no longer be resumed; live ones stay. Returns how many were forgotten.
    pub fn remove_ended(&self, ids: &[String]) -> usize {
        let mut inner = self.lock();
        let mut removed = 0;
        for id in ids {
            if inner.calls.get(id).is_some_and(|r| !r.is_live()) {
                inner.calls.remove(id);
                removed += 1;
            }
        }
        if removed > 0 {
            let Inner { calls, order, .. } = &mut *inner;
            order.retain(|o| calls.contains_key(o));
        }
        removed
    }

    /// Whether `owner` has a live call on this node.
    pub fn has_live(&self, owner: &Owner) -> bool {
        self.lock().live_per_user.get(owner).is_some_and(|n| *n > 0)
    }

    /// Calls held in memory: the live ones and ended ones still being written.
    pub fn held(&self) -> usize {
        self.lock().calls.len()
    }

    /// Makes a live call reachable by its id.
    pub fn attach(&self, id: &str, handle: CallHandle) {
        self.lock().handles.insert(id.to_string(), handle);
    }

    /// The call is ending: no longer reachable.
    pub fn detach(&self, id: &str) {
        self.lock().handles.remove(id);
    }

    /// The handle of a live call.
    pub fn handle(&self, id: &str) -> Option<CallHandle> {
        self.lock().handles.get(id).cloned()
    }

    /// Ids of the live calls.
    pub fn live_ids(&self) -> Vec<String> {
        self.lock().handles.keys().cloned().collect()
    }

    pub fn live_calls(&self) -> usize {
        self.lock().live_per_user.values().sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn owner(s: &str) -> Owner {
        Owner {
            sub: s.into(),
            org: None,
        }
    }

    #[test]
    fn limits_live_calls_per_user_and_frees_slots() {
        let store = CallStore::new(100, 10, 2);
        let a = store.start(&owner("a"), "x", None).unwrap();
        let _b = store.start(&owner("a"), "x", None).unwrap();
        assert_eq!(
            store.start(&owner("a"), "x", None).err(),
            Some(StoreError::TooMany(2))
        );
        assert!(store.start(&owner("z"), "x", None).is_ok());
        drop(a);
        assert!(store.start(&owner("a"), "x", None).is_ok());
    }

    #[test]
    fn resume_only_by_owner_and_not_twice() {
        let store = CallStore::new(100, 10, 5);
        let live = store.start(&owner("a"), "x", None).unwrap();
        let id = live.record.id.clone();
        assert!(matches!(
            store.start(&owner("a"), "x", Some(&id)),
            Err(StoreError::Live(_))
        ));
        drop(live);
        assert!(matches!(
            store.start(&owner("b"), "x", Some(&id)),
            Err(StoreError::NotFound(_))
        ));
        assert!(store.get_owned(&id, &owner("b")).is_err());
        assert!(store.start(&owner("a"), "x", Some(&id)).is_ok());
    }

    #[test]
    fn forgets_oldest_ended_calls_past_the_bound() {
        let store = CallStore::new(3, 10, 100);
        let first = store
            .start(&owner("a"), "x", None)
            .unwrap()
            .record
            .id
            .clone();
        let keep = store.start(&owner("a"), "x", None).unwrap();
        for _ in 0..3 {
            drop(store.start(&owner("a"), "x", None).unwrap());
        }
        assert!(store.get_owned(&first, &owner("a")).is_err());
        assert!(store.get_owned(&keep.record.id, &owner("a")).is_ok());
        assert!(store.lock().calls.len() <= 3);
    }

    #[test]
    fn forgets_an_ended_call_unless_it_was_resumed_since() {
        let store = CallStore::new(100, 10, 5);
        let live = store.start(&owner("a"), "x", None).unwrap();
        let id = live.record.id.clone();
        let first = live.record.stretch();
        // A live call is never forgotten.
        store.forget(&id, first);
        assert_eq!(store.held(), 1);
        drop(live);
        // Resumed before the first stretch's writes were done: still held.
        let again = store.start(&owner("a"), "x", Some(&id)).unwrap();
        drop(again);
        store.forget(&id, first);
        assert_eq!(store.held(), 1);
        store.forget(&id, first + 1);
        assert_eq!(store.held(), 0);
        assert!(store.lock().order.is_empty());
    }

    #[test]
    fn removes_ended_calls_but_never_live_ones() {
        let store = CallStore::new(100, 10, 5);
        let live = store.start(&owner("a"), "x", None).unwrap();
        let ended = store.start(&owner("a"), "x", None).unwrap();
        let ids = vec![live.record.id.clone(), ended.record.id.clone()];
        assert!(store.has_live(&owner("a")));
        drop(ended);
        assert_eq!(store.remove_ended(&ids), 1);
        assert_eq!(store.held(), 1);
        assert!(store.get_owned(&ids[0], &owner("a")).is_ok());
        assert!(store.start(&owner("a"), "x", Some(&ids[1])).is_err());
        drop(live);
        assert!(!store.has_live(&owner("a")));
        assert_eq!(store.remove_ended(&ids), 1);
        assert!(store.lock().order.is_empty());
    }
}

//! The monitor feed: one bounded broadcast that every call of the server publishes its
//! monitored events to (never audio), for the monitor streams to subscribe to. Publishing never
//! waits: a reader that falls more than the buffer behind is told how many it lost.
//!
//! Each published event gets a stream id, increasing across all calls of the node: the larger of
//! the last id plus one and the event's Unix time in milliseconds times 1000, so ids keep
//! increasing across restarts without any stored counter. The same id goes into the call's
//! event log, where a reconnecting monitor finds what it missed (`Last-Event-ID`).

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

use serde_json::{Map, Value};
use tokio::sync::{broadcast, mpsc};

/// The event kinds a monitor sees (and that get stream ids); anything else stays in the log.
pub const MONITORED: &[&str] = &[
    "call_started",
    "call_ended",
    "speech_started",
    "speech_stopped",
    "transcript",
    "response",
    "interrupted",
    "dtmf",
    "metrics",
    "takeover_started",
    "takeover_ended",
    "operator_say",
    "operator_context",
    "operator_end",
    "tool_call",
    "tool_result",
    "message_taken",
    "transferred",
    "flow",
    "queued",
];

/// Reply text as it is written: sent only to monitors that ask for it, never stored.
pub const RESPONSE_DELTA: &str = "response_delta";

/// Whose call an event belongs to; shared by all of the call's events.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CallMeta {
    pub call_id: String,
    pub org: Option<String>,
    pub sub: String,
    pub agent: String,
}

/// One event on the monitor feed.
#[derive(Debug, Clone)]
pub struct FeedEvent {
    /// Stream id (see the module header).
    pub id: i64,
    pub meta: Arc<CallMeta>,
    /// Per-call event number, as in the log; 0 for response deltas (not logged).
    pub seq: i64,
    pub kind: String,
    /// Unix time in milliseconds.
    pub at_ms: i64,
    /// The event's own fields (an object).
    pub data: Value,
}

impl FeedEvent {
    /// The event as the monitor stream sends it: `type`, `call_id`, `agent`, `sub`, `at`,
    /// `seq` and its own fields.
    pub fn to_json(&self) -> Value {
        let mut o = Map::new();
        o.insert("type".into(), Value::from(self.kind.as_str()));
        o.insert("call_id".into(), Value::from(self.meta.call_id.as_str()));
        o.insert("agent".into(), Value::from(self.meta.agent.as_str()));
        o.insert("sub".into(), Value::from(self.meta.sub.as_str()));
        o.insert("at".into(), Value::from(self.at_ms));
        if self.seq > 0 {
            o.insert("seq".into(), Value::from(self.seq));
        }
        if let Value::Object(fields) = &self.data {
            for (k, v) in fields {
                o.entry(k.clone()).or_insert_with(|| v.clone());
            }
        }
        Value::Object(o)
    }
}

pub struct Feed {
    tx: broadcast::Sender<Arc<FeedEvent>>,
    /// The last stream id given out. Held while an event is stored and sent, so that ids reach
    /// the store writer and the subscribers in increasing order.
    last: Mutex<i64>,
    /// Subscribers that want response deltas; none, and deltas are not published at all.
    deltas: AtomicUsize,
    /// Several nodes: this node's events also go here, to the other nodes (see `live`).
    forward: OnceLock<mpsc::Sender<Arc<FeedEvent>>>,
    /// Several nodes: a monitor on another node wants response deltas.
    remote_deltas: AtomicBool,
}

impl Feed {
    pub fn new(capacity: usize) -> Arc<Self> {
        Arc::new(Self {
            tx: broadcast::channel(capacity.max(1)).0,
            last: Mutex::new(0),
            deltas: AtomicUsize::new(0),
            forward: OnceLock::new(),
            remote_deltas: AtomicBool::new(false),
        })
    }

    /// Sends every event published from now on to `to` as well (the other nodes), without
    /// waiting: when `to` is full, an event is not forwarded.
    pub fn forward_to(&self, to: mpsc::Sender<Arc<FeedEvent>>) {
        let _ = self.forward.set(to);
    }

    /// An event of another node's call, for this node's subscribers (it was stored there).
    pub fn inject(&self, event: FeedEvent) {
        if self.tx.receiver_count() > 0 {
            let _ = self.tx.send(Arc::new(event));
        }
    }

    /// Whether a subscriber of this node wants response deltas.
    pub fn local_wants_deltas(&self) -> bool {
        self.deltas.load(Ordering::Acquire) > 0
    }

    /// Whether a monitor on another node wants response deltas.
    pub fn set_remote_deltas(&self, on: bool) {
        self.remote_deltas.store(on, Ordering::Relaxed);
    }

    /// Events from now on.
    pub fn subscribe(self: &Arc<Self>, deltas: bool) -> FeedReceiver {
        if deltas {
            self.deltas.fetch_add(1, Ordering::AcqRel);
        }
        FeedReceiver {
            rx: self.tx.subscribe(),
            feed: self.clone(),
            deltas,
        }
    }

    /// Whether any subscriber wants response deltas.
    pub fn wants_deltas(&self) -> bool {
        self.local_wants_deltas() || self.remote_deltas.load(Ordering::Relaxed)
    }

    /// Gives `kind` a stream id if the monitor shows it, calls `store` with it (`None` for kinds
    /// it does not show), then publishes. `store` runs before the event is visible to any
    /// subscriber: a monitor that subscribes and then waits for the store writer finds every
    /// event published before it subscribed in the store.
    pub fn publish(
        &self,
        meta: &Arc<CallMeta>,
        seq: i64,
        kind: &str,
        at_ms: i64,
        data: &Value,
        store: impl FnOnce(Option<i64>),
    ) {
        let monitored = MONITORED.contains(&kind) || kind == RESPONSE_DELTA;
        if !monitored {
            return store(None);
        }
        let mut last = self.last.lock().unwrap_or_else(|p| p.into_inner());
        let id = (*last + 1).max(at_ms.saturating_mul(1000));
        *last = id;
        store((kind != RESPONSE_DELTA).then_some(id));
        let forward = self.forward.get();
        if self.tx.receiver_count() > 0 || forward.is_some() {
            let event = Arc::new(FeedEvent {
                id,
                meta: meta.clone(),
                seq,
                kind: kind.to_string(),
                at_ms,
                data: data.clone(),
            });
            if let Some(to) = forward {
                let _ = to.try_send(event.clone());
            }
            let _ = self.tx.send(event);
        }
    }
}

/// What a feed subscriber gets next.
#[derive(Debug)]
pub enum FeedItem {
    Event(Arc<FeedEvent>),
    /// This many events were lost because the subscriber was slow.
    Missed(u64),
}

pub struct FeedReceiver {
    rx: broadcast::Receiver<Arc<FeedEvent>>,
    feed: Arc<Feed>,
    deltas: bool,
}

impl FeedReceiver {
    /// The next event; `None` only if the feed is gone.
    pub async fn recv(&mut self) -> Option<FeedItem> {
        match self.rx.recv().await {
            Ok(e) => Some(FeedItem::Event(e)),
            Err(broadcast::error::RecvError::Lagged(n)) => Some(FeedItem::Missed(n)),
            Err(broadcast::error::RecvError::Closed) => None,
        }
    }
}

impl Drop for FeedReceiver {
    fn drop(&mut self) {
        if self.deltas {
            self.feed.deltas.fetch_sub(1, Ordering::AcqRel);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn meta() -> Arc<CallMeta> {
        Arc::new(CallMeta {
            call_id: "c".into(),
            org: None,
            sub: "u".into(),
            agent: "a".into(),
        })
    }

    #[tokio::test]
    async fn ids_increase_are_stored_first_and_slow_readers_are_told_what_they_lost() {
        let feed = Feed::new(4);
        let mut rx = feed.subscribe(false);
        let mut stored = Vec::new();
        for i in 1..=3 {
            feed.publish(&meta(), i, "transcript", 5, &json!({"text": "hi"}), |id| {
                stored.push(id)
            });
        }
        feed.publish(&meta(), 4, "response_done", 5, &json!({}), |id| {
            stored.push(id)
        });
        assert_eq!(stored, [Some(5000), Some(5001), Some(5002), None]);
        let Some(FeedItem::Event(e)) = rx.recv().await else {
            panic!("no event");
        };
        let v = e.to_json();
        assert_eq!(
            (v["type"].clone(), v["at"].clone(), v["text"].clone()),
            (json!("transcript"), json!(5), json!("hi"))
        );
        for i in 0..10 {
            feed.publish(&meta(), i, "metrics", 9, &json!({}), |_| {});
        }
        assert!(matches!(rx.recv().await, Some(FeedItem::Missed(_))));
        assert!(!feed.wants_deltas());
        let d = feed.subscribe(true);
        assert!(feed.wants_deltas());
        drop(d);
        assert!(!feed.wants_deltas());
    }
}

//! The monitor stream, `GET /api/monitor/events`: server-sent events of every call of the
//! operator's org, from the server-wide monitor feed. It opens with a `live_calls` snapshot,
//! replays what a reconnecting reader missed (`Last-Event-ID`, from the store's event log), then
//! follows the feed live. A reader that falls behind the feed's buffer gets `lagged` with the
//! number of events it lost and goes on; no call ever waits for it. Each org may hold
//! `VOXWIRE_MAX_MONITORS` streams at once. A stream ends at shutdown and when its token expires.

use std::collections::{HashMap, VecDeque};
use std::convert::Infallible;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use futures::Stream;
use serde::Deserialize;
use serde_json::{json, Value};
use tokio_util::sync::CancellationToken;

use crate::call::feed::RESPONSE_DELTA;
use crate::call::record::now_ms;
use crate::call::{CallMeta, FeedEvent, FeedItem, FeedReceiver, LiveInfo};
use crate::http::access;
use crate::http::api::TokenQuery;
use crate::http::error::AppError;
use crate::protocol::ErrorCode;
use crate::server::AppState;
use crate::store::{Store, StreamEventRow, StreamQuery};

/// A comment line this often keeps proxies and clients from closing an idle stream.
pub const HEARTBEAT: Duration = Duration::from_secs(15);
/// Events replayed on reconnection at most; past that the reader gets `lagged`.
pub const MAX_REPLAY: usize = 10_000;
/// Events read from the store per replay page.
const REPLAY_PAGE: u32 = 500;
/// How long a reconnection waits for the store writer to store what is queued before replaying.
const REPLAY_FLUSH: Duration = Duration::from_secs(2);

/// Open monitor streams per org, capped.
pub struct MonitorSlots {
    max: usize,
    open: Mutex<HashMap<Option<String>, usize>>,
}

impl MonitorSlots {
    pub fn new(max: usize) -> Arc<Self> {
        Arc::new(Self {
            max: max.max(1),
            open: Mutex::new(HashMap::new()),
        })
    }

    /// A slot for one more stream of `org`, or `None` when the org holds its share.
    pub fn acquire(self: &Arc<Self>, org: Option<String>) -> Option<MonitorSlot> {
        let mut open = self.open.lock().unwrap_or_else(|e| e.into_inner());
        let n = open.entry(org.clone()).or_insert(0);
        if *n >= self.max {
            return None;
        }
        *n += 1;
        Some(MonitorSlot {
            slots: self.clone(),
            org,
        })
    }

    /// Streams open for `org`.
    pub fn open(&self, org: Option<&str>) -> usize {
        let open = self.open.lock().unwrap_or_else(|e| e.into_inner());
        open.get(&org.map(str::to_string)).copied().unwrap_or(0)
    }
}

/// One open stream; dropping it gives the slot back.
pub struct MonitorSlot {
    slots: Arc<MonitorSlots>,
    org: Option<String>,
}

impl Drop for MonitorSlot {
    fn drop(&mut self) {
        let mut open = self.slots.open.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(n) = open.get_mut(&self.org) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                open.remove(&self.org);
            }
        }
    }
}

/// A slot for one more monitor stream or operator socket of `org`: 429 `too_many_monitors`
/// when the org holds `VOXWIRE_MAX_MONITORS` already.
pub fn watch_slot(state: &AppState, org: Option<String>) -> Result<MonitorSlot, AppError> {
    state.monitors.acquire(org).ok_or_else(|| {
        state.metrics.error(ErrorCode::TooManyMonitors);
        AppError::new(
            StatusCode::TOO_MANY_REQUESTS,
            ErrorCode::TooManyMonitors,
            format!(
                "this org already has {} monitor streams and operator sockets open \
                 (VOXWIRE_MAX_MONITORS)",
                state.config.net.max_monitors
            ),
        )
    })
}

#[derive(Deserialize, Default)]
pub struct MonitorParams {
    pub token: Option<String>,
    pub call_id: Option<String>,
    pub agent: Option<String>,
    pub sub: Option<String>,
    /// `true`: also the reply text as it is written (`response_delta`).
    pub deltas: Option<String>,
}

/// Which events a stream wants: its org's, narrowed by the filters.
#[derive(Debug, Clone)]
struct Filter {
    org: Option<String>,
    call_id: Option<String>,
    agent: Option<String>,
    sub: Option<String>,
}

impl Filter {
    fn wants(&self, m: &CallMeta) -> bool {
        let same = |want: &Option<String>, have: &str| want.as_deref().is_none_or(|w| w == have);
        m.org == self.org
            && same(&self.call_id, &m.call_id)
            && same(&self.agent, &m.agent)
            && same(&self.sub, &m.sub)
    }

    fn wants_live(&self, c: &LiveInfo) -> bool {
        let same = |want: &Option<String>, have: &str| want.as_deref().is_none_or(|w| w == have);
        same(&self.call_id, &c.call_id) && same(&self.agent, &c.agent) && same(&self.sub, &c.sub)
    }

    fn query(&self, after: i64) -> StreamQuery {
        StreamQuery {
            after,
            org: self.org.clone(),
            call_id: self.call_id.clone(),
            agent: self.agent.clone(),
            sub: self.sub.clone(),
            limit: REPLAY_PAGE,
        }
    }
}

fn bad_parameter(message: impl Into<String>) -> AppError {
    AppError::new(
        StatusCode::BAD_REQUEST,
        ErrorCode::InvalidParameter,
        message,
    )
}

fn store_unavailable(e: crate::store::StoreError) -> AppError {
    tracing::warn!(error = %e, "cannot replay the monitor stream from the store");
    AppError::new(
        StatusCode::SERVICE_UNAVAILABLE,
        ErrorCode::StoreUnavailable,
        "the call store is unavailable; reconnect without Last-Event-ID or try again",
    )
}

/// `GET /api/monitor/events`.
pub async fn events(
    State(state): State<Arc<AppState>>,
    Query(p): Query<MonitorParams>,
    headers: HeaderMap,
) -> Result<Response, AppError> {
    let claims = access::operator(&state, &headers, &TokenQuery { token: p.token })?;
    let deltas = match p.deltas.as_deref() {
        None | Some("false") | Some("0") => false,
        Some("true") | Some("1") => true,
        Some(_) => return Err(bad_parameter("`deltas` must be `true` or `false`")),
    };
    let last_id = match headers.get("last-event-id") {
        None => None,
        Some(v) => Some(
            v.to_str()
                .ok()
                .and_then(|s| s.trim().parse::<i64>().ok())
                .filter(|id| *id >= 0)
                .ok_or_else(|| {
                    AppError::new(
                        StatusCode::BAD_REQUEST,
                        ErrorCode::InvalidLastEventId,
                        "Last-Event-ID must be an event id this stream sent",
                    )
                })?,
        ),
    };
    let filter = Filter {
        org: claims.org.clone(),
        call_id: p.call_id.filter(|s| !s.is_empty()),
        agent: p.agent.filter(|s| !s.is_empty()),
        sub: p.sub.filter(|s| !s.is_empty()),
    };
    let slot = watch_slot(&state, filter.org.clone())?;
    let svc = &state.call_services;
    // Subscribe first: whatever is published from here on arrives live; whatever came before
    // is in the store once the writer has caught up.
    let rx = svc.feed.subscribe(deltas);
    let mut pending = VecDeque::new();
    let live: Vec<Value> = state
        .live_in_org(filter.org.as_deref())
        .await
        .into_iter()
        .filter(|c| filter.wants_live(c))
        .map(|c| json!(c))
        .collect();
    pending.push_back(
        Event::default()
            .data(json!({"type": "live_calls", "at": now_ms(), "calls": live}).to_string()),
    );
    let mut replay = None;
    let mut last_sent = 0;
    if let Some(after) = last_id {
        svc.writer.flush(REPLAY_FLUSH).await;
        if svc.cluster.is_some() {
            // The other nodes' writers store what they published within a batch or so; what
            // comes after this arrives live and is skipped if the replay had it.
            tokio::time::sleep(CLUSTER_SETTLE).await;
        }
        let mut r = Replay {
            after,
            sent: 0,
            store: svc.store.clone(),
        };
        let page = r.page(&filter).await.map_err(store_unavailable)?;
        last_sent = after;
        replay = Some((r, Some(page)));
    }
    let monitor = Monitor {
        pending,
        replay,
        rx,
        filter,
        last_sent,
        deltas,
        shutdown: state.shutdown.clone(),
        expires: tokio::time::Instant::now() + claims.remaining(),
        _slot: slot,
    };
    let sse = Sse::new(monitor.into_stream())
        .keep_alive(KeepAlive::new().interval(HEARTBEAT).text("heartbeat"));
    Ok(([("x-accel-buffering", "no")], sse).into_response())
}

/// How long a replay on a cluster waits for the other nodes' store writes to land.
const CLUSTER_SETTLE: std::time::Duration = std::time::Duration::from_millis(300);

/// Reading a reconnecting reader's missed events from the store, a page at a time.
struct Replay {
    after: i64,
    sent: usize,
    store: Store,
}

impl Replay {
    async fn page(
        &mut self,
        filter: &Filter,
    ) -> Result<Vec<StreamEventRow>, crate::store::StoreError> {
        self.store.stream_events(&filter.query(self.after)).await
    }
}

struct Monitor {
    /// Events to send before anything else (the snapshot, a replay page).
    pending: VecDeque<Event>,
    /// The replay under way, with its next page if already read.
    replay: Option<(Replay, Option<Vec<StreamEventRow>>)>,
    rx: FeedReceiver,
    filter: Filter,
    /// The largest stream id sent: live events up to it were replayed already.
    last_sent: i64,
    /// Whether this reader asked for response deltas.
    deltas: bool,
    shutdown: CancellationToken,
    /// When the token expires: the stream ends.
    expires: tokio::time::Instant,
    _slot: MonitorSlot,
}

fn numbered(e: &FeedEvent) -> Event {
    Event::default()
        .id(e.id.to_string())
        .data(e.to_json().to_string())
}

fn lagged(missed: Option<u64>, reason: &str) -> Event {
    Event::default().data(
        json!({"type": "lagged", "at": now_ms(), "missed": missed, "reason": reason}).to_string(),
    )
}

fn from_row(r: StreamEventRow) -> FeedEvent {
    FeedEvent {
        id: r.stream_id,
        meta: Arc::new(CallMeta {
            call_id: r.call_id,
            org: r.org,
            sub: r.sub,
            agent: r.agent,
        }),
        seq: r.seq,
        kind: r.kind,
        at_ms: r.at_ms,
        data: r.data,
    }
}

impl Monitor {
    fn into_stream(self) -> impl Stream<Item = Result<Event, Infallible>> + Send {
        futures::stream::unfold(self, |mut m| async move {
            let e = m.next().await?;
            Some((Ok(e), m))
        })
    }

    async fn next(&mut self) -> Option<Event> {
        loop {
            if let Some(e) = self.pending.pop_front() {
                return Some(e);
            }
            if let Some((mut replay, page)) = self.replay.take() {
                let page = match page {
                    Some(p) => Ok(p),
                    None => replay.page(&self.filter).await,
                };
                match page {
                    Ok(rows) if rows.is_empty() => {}
                    Ok(rows) => {
                        for r in rows {
                            replay.after = r.stream_id;
                            self.last_sent = self.last_sent.max(r.stream_id);
                            self.pending.push_back(numbered(&from_row(r)));
                            replay.sent += 1;
                        }
                        if replay.sent >= MAX_REPLAY {
                            self.pending.push_back(lagged(None, "replay_limit"));
                        } else {
                            self.replay = Some((replay, None));
                        }
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "monitor replay stopped: the store is unavailable");
                        self.pending.push_back(lagged(None, "store_unavailable"));
                    }
                }
                continue;
            }
            let item = tokio::select! {
                _ = self.shutdown.cancelled() => return None,
                _ = tokio::time::sleep_until(self.expires) => return None,
                item = self.rx.recv() => item?,
            };
            match item {
                FeedItem::Missed(n) => return Some(lagged(Some(n), "slow_reader")),
                FeedItem::Event(e)
                    if e.id > self.last_sent
                        && self.filter.wants(&e.meta)
                        && (self.deltas || e.kind != RESPONSE_DELTA) =>
                {
                    self.last_sent = e.id;
                    return Some(numbered(&e));
                }
                FeedItem::Event(_) => {}
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_are_capped_per_org_and_given_back() {
        let slots = MonitorSlots::new(2);
        let a = slots.acquire(Some("acme".into())).unwrap();
        let _b = slots.acquire(Some("acme".into())).unwrap();
        assert!(slots.acquire(Some("acme".into())).is_none());
        assert!(slots.acquire(None).is_some());
        drop(a);
        assert_eq!(slots.open(Some("acme")), 1);
        assert!(slots.acquire(Some("acme".into())).is_some());
    }
}

//! What is live and shared between nodes. One node keeps it all in its own memory (the call
//! registry); with `VOXWIRE_REDIS_URL` set, several nodes behind a load balancer share it
//! through Redis and act as one service:
//! - each live call is held by one node under a lease that the node renews (every third of
//!   [`ClusterSettings::lease`]); a node that dies loses its calls' leases when they run out, and
//!   their callers resume them on another node from the shared store;
//! - the org's and each subject's live calls are counted in Redis, checked and counted in one
//!   atomic step when a call starts, so limits hold across nodes;
//! - each node publishes its calls' monitored events, and every node hears every other node's
//!   (`bus`), so a monitor on any node sees the whole org;
//! - operator commands, an operator's voice and listen-in audio travel to and from the node that
//!   holds the call over each node's own channel (`bus`, `remote`).
//!
//! The scripts that keep the shared state consistent are in `scripts`.

pub mod bus;
pub mod remote;
mod scripts;

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use redis::aio::ConnectionManager;
use redis::Script;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{info, warn};

use crate::call::store::LiveCaps;
use crate::call::{CallInput, CallStore, Feed, LiveInfo, Owner};
use crate::config::ClusterSettings;
use crate::protocol::{EndReason, LimitKind};
use crate::store::{org_key, redact_url, StoreWriter};

/// How long a command to Redis may take before it counts as failed.
const REDIS_TIMEOUT: Duration = Duration::from_secs(2);
/// How long a call that ended waits for the store to have its last writes before its lease is
/// let go (so that a node resuming it reads them).
const FLUSH_BEFORE_RELEASE: Duration = Duration::from_secs(5);

/// Redis could not be reached or refused a command.
#[derive(Debug, thiserror::Error)]
#[error("redis: {0}")]
pub struct LiveError(#[from] redis::RedisError);

/// Why a day's minutes could not be read from Redis.
#[derive(Debug, thiserror::Error)]
pub enum UsedError {
    #[error(transparent)]
    Redis(#[from] LiveError),
    #[error(transparent)]
    Store(crate::store::StoreError),
}

/// Why a call could not be claimed.
#[derive(Debug, PartialEq, Eq)]
pub enum Refusal {
    /// Another node holds it live.
    Live(String),
    /// The subject's live calls are at the server's per-user bound.
    TooMany(i64),
    /// An org or subject cap on live calls.
    Limit(LimitKind, i64),
}

/// A call this node holds, for renewing its lease.
struct Held {
    org: String,
    sub: String,
    /// The call ended: it no longer counts against the caps, and its lease is not renewed.
    freed: bool,
}

pub struct Cluster {
    pub node: String,
    conn: ConnectionManager,
    client: redis::Client,
    lease: Duration,
    held: Mutex<HashMap<String, Held>>,
    claim: Script,
    renew: Script,
    release: Script,
    live: Script,
    used_add: Script,
    used_read: Script,
    used_seed: Script,
    pub(crate) bus: bus::Bus,
    /// Ends the bus and the renewals (after the node's calls are done, at shutdown).
    stop: CancellationToken,
}

fn lease_key(call: &str) -> String {
    format!("voxwire:lease:{call}")
}
fn org_set(org: &str) -> String {
    format!("voxwire:live:org:{org}")
}
/// An org's call time on a UTC day (see [`scripts::USED_ADD`]).
fn used_hash(org: &str, day: &str) -> String {
    format!("voxwire:used:{day}:{org}")
}
/// One call stretch's field in it.
fn stretch_field(call_id: &str, part_ms: i64) -> String {
    format!("c:{call_id}:{part_ms}")
}
/// How long a day's hash is kept: the day and the next (a call across midnight counts on both).
const USED_KEEP_SECS: u64 = 2 * 86_400;

fn sub_set(org: &str, sub: &str) -> String {
    format!("voxwire:live:sub:{org}:{sub}")
}
fn info_key(call: &str) -> String {
    format!("voxwire:info:{call}")
}

impl Cluster {
    /// Connects to Redis (`settings.redis_url` must be set). The connection reconnects by
    /// itself when Redis goes away.
    pub async fn connect(settings: &ClusterSettings) -> Result<Arc<Self>, LiveError> {
        let url = settings.redis_url.as_deref().unwrap_or_default();
        let client = redis::Client::open(url)?;
        let config = redis::aio::ConnectionManagerConfig::new()
            .set_connection_timeout(REDIS_TIMEOUT)
            .set_response_timeout(REDIS_TIMEOUT)
            .set_number_of_retries(3);
        let conn = client.get_connection_manager_with_config(config).await?;
        info!(node = %settings.node_id, redis = %redact_url(url), "joined the cluster");
        Ok(Arc::new(Self {
            node: settings.node_id.clone(),
            conn,
            client,
            lease: settings.lease,
            held: Mutex::new(HashMap::new()),
            claim: Script::new(scripts::CLAIM),
            renew: Script::new(scripts::RENEW),
            release: Script::new(scripts::RELEASE),
            live: Script::new(scripts::LIVE),
            used_add: Script::new(scripts::USED_ADD),
            used_read: Script::new(scripts::USED_READ),
            used_seed: Script::new(scripts::USED_SEED),
            bus: bus::Bus::new(&settings.node_id),
            stop: CancellationToken::new(),
        }))
    }

    /// Stops the bus and the renewal of leases.
    pub fn stop(&self) {
        self.stop.cancel();
    }

    fn held(&self) -> MutexGuard<'_, HashMap<String, Held>> {
        self.held.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn conn(&self) -> ConnectionManager {
        self.conn.clone()
    }

    /// Holds call `call_id` of `owner` for this node, unless another node holds it or the org's
    /// caps (or the per-user bound, `-1` for none) are reached.
    pub async fn claim(
        &self,
        call_id: &str,
        owner: &Owner,
        caps: LiveCaps,
        per_user: i64,
        info: &LiveInfo,
    ) -> Result<Result<(), Refusal>, LiveError> {
        let org = org_key(owner.org.as_deref());
        let (status, detail): (String, String) = self
            .claim
            .key(lease_key(call_id))
            .key(org_set(org))
            .key(sub_set(org, &owner.sub))
            .key(info_key(call_id))
            .arg(&self.node)
            .arg(call_id)
            .arg(self.lease.as_millis() as u64)
            .arg(caps.org.unwrap_or(-1))
            .arg(caps.subject.unwrap_or(-1))
            .arg(per_user)
            .arg(serde_json::to_string(info).unwrap_or_default())
            .invoke_async(&mut self.conn())
            .await?;
        let cap = || detail.parse().unwrap_or(0);
        Ok(match status.as_str() {
            "ok" => {
                self.held().insert(
                    call_id.to_string(),
                    Held {
                        org: org.to_string(),
                        sub: owner.sub.clone(),
                        freed: false,
                    },
                );
                Ok(())
            }
            "live" => Err(Refusal::Live(detail)),
            "too_many" => Err(Refusal::TooMany(cap())),
            "org" => Err(Refusal::Limit(LimitKind::ConcurrentCalls, cap())),
            _ => Err(Refusal::Limit(LimitKind::SubjectConcurrentCalls, cap())),
        })
    }

    /// The call ended: it stops counting against the org's caps at once (its lease is let go
    /// later, by [`Cluster::release_after`]).
    pub async fn free_slots(&self, call_id: &str) {
        let sets = match self.held().get_mut(call_id) {
            Some(h) if !h.freed => {
                h.freed = true;
                (org_set(&h.org), sub_set(&h.org, &h.sub))
            }
            _ => return,
        };
        let done = redis::pipe()
            .cmd("ZREM")
            .arg(&sets.0)
            .arg(call_id)
            .ignore()
            .cmd("ZREM")
            .arg(&sets.1)
            .arg(call_id)
            .ignore()
            .query_async::<()>(&mut self.conn())
            .await;
        if let Err(e) = done {
            warn!(call_id, error = %e, "cannot free the call's place in the org's live calls");
        }
    }

    /// Lets call `call_id` go once the store has what was written of it so far.
    pub fn release_after(
        self: &Arc<Self>,
        call_id: &str,
        writer: &StoreWriter,
        tasks: &TaskTracker,
    ) {
        let Some(held) = self.held().remove(call_id) else {
            return;
        };
        let (me, writer, id) = (self.clone(), writer.clone(), call_id.to_string());
        tasks.spawn(async move {
            if !writer.flush(FLUSH_BEFORE_RELEASE).await {
                warn!(call_id = %id, "the store is behind; the call's lease is let go anyway");
            }
            let done: Result<i64, _> = me
                .release
                .key(lease_key(&id))
                .key(org_set(&held.org))
                .key(sub_set(&held.org, &held.sub))
                .key(info_key(&id))
                .arg(&me.node)
                .arg(&id)
                .invoke_async(&mut me.conn())
                .await;
            if let Err(e) = done {
                warn!(call_id = %id, error = %e, "cannot let the call's lease go; it runs out by itself");
            }
        });
    }

    /// The node holding live call `call_id`, if any.
    pub async fn holder(&self, call_id: &str) -> Result<Option<String>, LiveError> {
        Ok(redis::cmd("GET")
            .arg(lease_key(call_id))
            .query_async(&mut self.conn())
            .await?)
    }

    /// The node holding call `call_id` live, if it is a live call of `org`.
    pub async fn live_node(
        &self,
        call_id: &str,
        org: Option<&str>,
    ) -> Result<Option<String>, LiveError> {
        let (score, holder): (Option<f64>, Option<String>) = redis::pipe()
            .cmd("ZSCORE")
            .arg(org_set(org_key(org)))
            .arg(call_id)
            .cmd("GET")
            .arg(lease_key(call_id))
            .query_async(&mut self.conn())
            .await?;
        Ok(score.and(holder))
    }

    /// The live calls of an org on every node, oldest first.
    pub async fn live_in_org(&self, org: Option<&str>) -> Result<Vec<LiveInfo>, LiveError> {
        let rows: Vec<String> = self
            .live
            .key(org_set(org_key(org)))
            .invoke_async(&mut self.conn())
            .await?;
        let mut live: Vec<LiveInfo> = rows
            .iter()
            .filter_map(|r| serde_json::from_str(r).ok())
            .collect();
        live.sort_by(|a, b| (a.started_at, &a.call_id).cmp(&(b.started_at, &b.call_id)));
        Ok(live)
    }

    /// Sets how much of `day` call stretch (`call_id`, `part_ms`) of `sub` of `org` has
    /// lasted so far, in the org's counter of the day.
    pub async fn add_used(
        &self,
        org: &str,
        sub: &str,
        day: &str,
        stretch: (&str, i64),
        ms: i64,
    ) -> Result<(), LiveError> {
        self.used_add
            .key(used_hash(org, day))
            .arg(stretch_field(stretch.0, stretch.1))
            .arg(sub)
            .arg(ms)
            .arg(USED_KEEP_SECS)
            .invoke_async::<i64>(&mut self.conn())
            .await?;
        Ok(())
    }

    /// The ms of calls of `org` and of `sub` in it on `day`, on every node, without stretch
    /// `except` (`("", -1)`: none), from the org's counter of the day; the counter is made from
    /// the store when Redis has none (the first read of the day, or after Redis lost it).
    pub async fn used_ms(
        &self,
        store: &crate::store::Store,
        org: Option<&str>,
        sub: &str,
        day: &str,
        except: (&str, i64),
    ) -> Result<(i64, i64), UsedError> {
        let key = used_hash(org_key(org), day);
        let field = stretch_field(except.0, except.1);
        for _ in 0..2 {
            let (o, s): (i64, i64) = self
                .used_read
                .key(&key)
                .arg(&field)
                .arg(sub)
                .invoke_async(&mut self.conn())
                .await
                .map_err(|e| UsedError::Redis(e.into()))?;
            if o >= 0 {
                return Ok((o, s));
            }
            let rows = store.day_calls(org, day).await.map_err(UsedError::Store)?;
            let mut seed = self.used_seed.key(&key);
            seed.arg(USED_KEEP_SECS);
            for (call_id, part_ms, sub, ms) in &rows {
                seed.arg(stretch_field(call_id, *part_ms)).arg(sub).arg(ms);
            }
            seed.invoke_async::<i64>(&mut self.conn())
                .await
                .map_err(|e| UsedError::Redis(e.into()))?;
        }
        Err(UsedError::Redis(LiveError(redis::RedisError::from((
            redis::ErrorKind::ResponseError,
            "the day's counter vanished as it was made",
        )))))
    }

    /// Whether `sub` of `org` has a live call on any node.
    pub async fn subject_live(&self, org: Option<&str>, sub: &str) -> Result<bool, LiveError> {
        let rows: Vec<String> = self
            .live
            .key(sub_set(org_key(org), sub))
            .invoke_async(&mut self.conn())
            .await?;
        Ok(!rows.is_empty())
    }

    /// Renews this node's leases and snapshot rows every third of the lease, and learns whether
    /// a monitor anywhere wants response deltas; until `stop`.
    pub async fn renew_leases(
        self: Arc<Self>,
        calls: Arc<CallStore>,
        feed: Arc<Feed>,
        stop: CancellationToken,
    ) {
        let mut tick = tokio::time::interval(self.lease / 3);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tick.tick() => {}
            }
            let held: Vec<(String, String, String)> = self
                .held()
                .iter()
                .filter(|(_, h)| !h.freed)
                .map(|(id, h)| (id.clone(), h.org.clone(), h.sub.clone()))
                .collect();
            let mut call = self.renew.prepare_invoke();
            call.arg(&self.node)
                .arg(self.lease.as_millis() as u64)
                .arg(if feed.local_wants_deltas() { "1" } else { "0" });
            for (id, org, sub) in &held {
                let Some((info, _)) = calls.live_info(id) else {
                    continue;
                };
                call.key(lease_key(id))
                    .key(org_set(org))
                    .key(sub_set(org, sub))
                    .key(info_key(id))
                    .arg(id)
                    .arg(serde_json::to_string(&info).unwrap_or_default());
            }
            match call.invoke_async::<Vec<String>>(&mut self.conn()).await {
                Ok(out) => {
                    feed.set_remote_deltas(out.first().is_some_and(|d| d == "1"));
                    for lost in out.iter().skip(1) {
                        // Two nodes must not run one call: this one lets it go, and its
                        // caller resumes where the call lives now.
                        warn!(call_id = %lost, "another node holds this live call now; ending it here");
                        if let Some(h) = self.held().get_mut(lost) {
                            h.freed = true;
                        }
                        if let Some(handle) = calls.handle(lost) {
                            tokio::spawn(async move {
                                let _ = handle.send(CallInput::End(EndReason::Moved)).await;
                            });
                        }
                    }
                }
                Err(e) => warn!(error = %e, "cannot renew the live calls' leases"),
            }
        }
    }
}

/// Lets a claimed call go when dropped (with the call's live state), once the store has its
/// writes.
pub struct LeaseGuard {
    cluster: Arc<Cluster>,
    call_id: String,
    writer: StoreWriter,
    tasks: TaskTracker,
}

impl LeaseGuard {
    pub fn new(
        cluster: Arc<Cluster>,
        call_id: &str,
        writer: StoreWriter,
        tasks: TaskTracker,
    ) -> Self {
        Self {
            cluster,
            call_id: call_id.to_string(),
            writer,
            tasks,
        }
    }
}

impl Drop for LeaseGuard {
    fn drop(&mut self) {
        self.cluster
            .release_after(&self.call_id, &self.writer, &self.tasks);
    }
}

//! Messages between nodes, over Redis pub/sub. Two channels matter to a node: `voxwire:feed`,
//! where every node publishes its calls' monitored events (each node passes the other nodes'
//! events to its own monitors), and its own `voxwire:node:{id}`, where operator commands, an
//! operator's voice and listen-in requests reach the node that holds the call, and where their
//! answers and the call's audio come back.
//!
//! Publishing never makes a call wait: messages go through a bounded queue to one task that
//! sends them in pipelines; when the queue is full a message is dropped and counted. Pub/sub
//! delivers at most once, in order per publisher: a monitor that lost events to a Redis outage
//! replays them from the store with `Last-Event-ID` like any reconnecting monitor.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::time::Duration;

use base64::Engine as _;
use futures::StreamExt as _;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use tokio::sync::{broadcast, mpsc, oneshot};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

use super::Cluster;
use crate::audio::decode::pcm16_to_f32;
use crate::audio::encode::pcm16_bytes;
use crate::call::handle::{AudioStream, LISTEN_BUFFER};
use crate::call::{
    CallInput, CallMeta, CallServices, FeedEvent, ListenAudio, Operator, OperatorAction,
    OperatorCommand, OperatorRefusal, OperatorView,
};

/// Every node's monitored events.
pub const FEED: &str = "voxwire:feed";
/// Messages waiting to be published; past that, new ones are dropped.
const OUTBOX: usize = 8192;
/// Messages per pipeline at most.
const BATCH: usize = 256;
/// How long the node holding a call waits for it to take an operator command and answer.
const COMMAND_WAIT: Duration = Duration::from_secs(4);
/// A listen-in request is repeated this often while the operator listens...
pub const LISTEN_KEEPALIVE: Duration = Duration::from_secs(1);
/// ...and the call's node stops sending audio after this long without one.
const LISTEN_EXPIRES: Duration = Duration::from_secs(4);
/// Waits between attempts to subscribe again after Redis went away.
const RESUBSCRIBE: Duration = Duration::from_secs(1);

pub fn node_channel(node: &str) -> String {
    format!("voxwire:node:{node}")
}

/// A feed event as it travels between nodes.
#[derive(Serialize, Deserialize)]
struct WireEvent {
    node: String,
    id: i64,
    call_id: String,
    org: Option<String>,
    sub: String,
    agent: String,
    seq: i64,
    kind: String,
    at: i64,
    data: Value,
}

/// What a node's channel carries.
#[derive(Serialize, Deserialize)]
#[serde(tag = "t", rename_all = "snake_case")]
pub enum NodeMsg {
    /// To the call's node: an operator command; answered with `Answer` on `from`'s channel.
    Command {
        req: u64,
        from: String,
        call_id: String,
        operator: String,
        admin: bool,
        action: OperatorAction,
    },
    Answer {
        req: u64,
        answer: Answer,
    },
    /// To the call's node: a chunk of the operator's voice (pcm16, base64).
    Voice {
        call_id: String,
        operator: String,
        pcm: String,
    },
    VoiceEnd {
        call_id: String,
        operator: String,
    },
    /// To the call's node: send the call's audio to `from` (repeated while listening). The
    /// first request carries `req`, answered with `Answer::Listening` once the audio is
    /// forwarded (or `Gone`).
    Listen {
        call_id: String,
        from: String,
        listen: u64,
        #[serde(default)]
        req: Option<u64>,
    },
    /// To the listening node: a chunk of the call's audio (pcm16, base64).
    Audio {
        listen: u64,
        stream: u8,
        rate: u32,
        pcm: String,
    },
    /// To the listening node: the call ended, no more audio.
    ListenEnd {
        listen: u64,
    },
    /// To the call's node: the conversation so far, as an operator joining sees it;
    /// answered with `Answer::History` (or `Gone`) on `from`'s channel.
    History {
        req: u64,
        from: String,
        call_id: String,
    },
}

/// How the call's node answered an operator command.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Answer {
    Done(OperatorView),
    Refused(OperatorRefusal),
    /// The call is not live there (it ended).
    Gone,
    /// The call did not take the command in time.
    Busy,
    /// The call's conversation so far (masked as the agent redacts), for `History`.
    History(Vec<Value>),
    /// The call's audio is forwarded from now on, for `Listen`.
    Listening,
}

pub struct Bus {
    node: String,
    out: OnceLock<mpsc::Sender<(String, Vec<u8>)>>,
    /// Commands sent, waiting for their answers.
    pending: Mutex<HashMap<u64, oneshot::Sender<Answer>>>,
    next: AtomicU64,
    /// This node's operators listening to calls on other nodes, by listen id.
    listens: Mutex<HashMap<u64, broadcast::Sender<ListenAudio>>>,
    /// The other nodes' listeners of this node's calls: (node, listen id) -> last request.
    forwarding: Mutex<HashMap<(String, u64), Instant>>,
    /// Messages dropped because the outbox was full.
    pub dropped: AtomicU64,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

pub fn encode_pcm(samples: &[f32]) -> String {
    base64::engine::general_purpose::STANDARD.encode(pcm16_bytes(samples))
}

fn unb64(pcm: &str) -> Vec<f32> {
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(pcm)
        .unwrap_or_default();
    pcm16_to_f32(&bytes, &mut None)
}

impl Bus {
    pub fn new(node: &str) -> Self {
        Self {
            node: node.to_string(),
            out: OnceLock::new(),
            pending: Mutex::new(HashMap::new()),
            next: AtomicU64::new(1),
            listens: Mutex::new(HashMap::new()),
            forwarding: Mutex::new(HashMap::new()),
            dropped: AtomicU64::new(0),
        }
    }

    /// Queues `msg` for `channel`, never waiting.
    fn publish(&self, channel: String, payload: Vec<u8>) {
        let sent = self
            .out
            .get()
            .is_some_and(|out| out.try_send((channel, payload)).is_ok());
        if !sent {
            self.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }

    pub fn send(&self, node: &str, msg: &NodeMsg) {
        if let Ok(bytes) = serde_json::to_vec(msg) {
            self.publish(node_channel(node), bytes);
        }
    }

    /// Sends an operator command to the node holding the call and waits for its answer
    /// (`Busy` when none comes within `wait`).
    pub async fn command(
        &self,
        node: &str,
        call_id: &str,
        by: &Operator,
        action: OperatorAction,
        wait: Duration,
    ) -> Answer {
        let req = self.next.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = oneshot::channel();
        lock(&self.pending).insert(req, tx);
        self.send(
            node,
            &NodeMsg::Command {
                req,
                from: self.node.clone(),
                call_id: call_id.to_string(),
                operator: by.sub.clone(),
                admin: by.admin,
                action,
            },
        );
        let answer = tokio::time::timeout(wait, rx).await;
        lock(&self.pending).remove(&req);
        match answer {
            Ok(Ok(a)) => a,
            _ => Answer::Busy,
        }
    }

    /// The conversation of call `call_id` as its node holds it now (its latest turns may not
    /// be in the store yet); `None` when the node does not answer within `wait` or no longer
    /// holds the call.
    pub async fn history(&self, node: &str, call_id: &str, wait: Duration) -> Option<Vec<Value>> {
        let req = self.next.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = oneshot::channel();
        lock(&self.pending).insert(req, tx);
        self.send(
            node,
            &NodeMsg::History {
                req,
                from: self.node.clone(),
                call_id: call_id.to_string(),
            },
        );
        let answer = tokio::time::timeout(wait, rx).await;
        lock(&self.pending).remove(&req);
        match answer {
            Ok(Ok(Answer::History(messages))) => Some(messages),
            _ => None,
        }
    }

    /// Starts receiving call `call_id`'s audio from `node`, once that node says it forwards
    /// it (so no audio after this returns is missed) or after `wait` (the request is repeated
    /// by [`Bus::keep_listening`] while the receiver lives); `None` when the node no longer
    /// holds the call.
    pub async fn listen(
        &self,
        node: &str,
        call_id: &str,
        wait: Duration,
    ) -> Option<(u64, broadcast::Receiver<ListenAudio>)> {
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = broadcast::channel(LISTEN_BUFFER);
        lock(&self.listens).insert(id, tx);
        let req = self.next.fetch_add(1, Ordering::Relaxed);
        let (ack, acked) = oneshot::channel();
        lock(&self.pending).insert(req, ack);
        self.listen_request(node, call_id, id, Some(req));
        let answer = tokio::time::timeout(wait, acked).await;
        lock(&self.pending).remove(&req);
        if let Ok(Ok(Answer::Gone)) = answer {
            lock(&self.listens).remove(&id);
            return None;
        }
        Some((id, rx))
    }

    fn listen_request(&self, node: &str, call_id: &str, listen: u64, req: Option<u64>) {
        self.send(
            node,
            &NodeMsg::Listen {
                call_id: call_id.to_string(),
                from: self.node.clone(),
                listen,
                req,
            },
        );
    }

    /// Repeats listen request `id` while someone receives it; then forgets it.
    pub async fn keep_listening(self: &Bus, node: &str, call_id: &str, id: u64) {
        loop {
            tokio::time::sleep(LISTEN_KEEPALIVE).await;
            let alive = lock(&self.listens)
                .get(&id)
                .is_some_and(|tx| tx.receiver_count() > 0);
            if !alive {
                lock(&self.listens).remove(&id);
                return;
            }
            self.listen_request(node, call_id, id, None);
        }
    }
}

impl Cluster {
    /// Starts the node's bus: the publisher, the subscriber of the feed and of this node's
    /// channel, and the renewal of the leases; all end with `stop`.
    pub fn start(self: &Arc<Self>, svc: &Arc<CallServices>) {
        let stop = self.stop.clone();
        let (out_tx, out_rx) = mpsc::channel(OUTBOX);
        let _ = self.bus.out.set(out_tx);
        let (feed_tx, feed_rx) = mpsc::channel(OUTBOX);
        svc.feed.forward_to(feed_tx);
        tokio::spawn(self.clone().publisher(out_rx, feed_rx, stop.clone()));
        tokio::spawn(self.clone().subscriber(svc.clone(), stop.clone()));
        tokio::spawn(
            self.clone()
                .renew_leases(svc.calls.clone(), svc.feed.clone(), stop),
        );
    }

    async fn publisher(
        self: Arc<Self>,
        mut out: mpsc::Receiver<(String, Vec<u8>)>,
        mut feed: mpsc::Receiver<Arc<FeedEvent>>,
        stop: CancellationToken,
    ) {
        let mut batch = Vec::with_capacity(BATCH);
        let mut events = Vec::with_capacity(BATCH);
        loop {
            tokio::select! {
                _ = stop.cancelled() => return,
                n = out.recv_many(&mut batch, BATCH) => if n == 0 { return },
                n = feed.recv_many(&mut events, BATCH) => if n == 0 { return },
            }
            for e in events.drain(..) {
                let wire = WireEvent {
                    node: self.node.clone(),
                    id: e.id,
                    call_id: e.meta.call_id.clone(),
                    org: e.meta.org.clone(),
                    sub: e.meta.sub.clone(),
                    agent: e.meta.agent.clone(),
                    seq: e.seq,
                    kind: e.kind.clone(),
                    at: e.at_ms,
                    data: e.data.clone(),
                };
                if let Ok(bytes) = serde_json::to_vec(&wire) {
                    batch.push((FEED.to_string(), bytes));
                }
            }
            let mut pipe = redis::pipe();
            for (channel, payload) in batch.drain(..) {
                pipe.cmd("PUBLISH").arg(channel).arg(payload).ignore();
            }
            if let Err(e) = pipe.query_async::<()>(&mut self.conn()).await {
                warn!(error = %e, "cannot publish to the other nodes");
            }
        }
    }

    async fn subscriber(self: Arc<Self>, svc: Arc<CallServices>, stop: CancellationToken) {
        let mine = node_channel(&self.node);
        loop {
            let subscribed = async {
                let mut ps = self.client.get_async_pubsub().await?;
                ps.subscribe(FEED).await?;
                ps.subscribe(&mine).await?;
                Ok::<_, redis::RedisError>(ps)
            };
            let mut ps = match tokio::select! {
                _ = stop.cancelled() => return,
                s = subscribed => s,
            } {
                Ok(ps) => ps,
                Err(e) => {
                    warn!(error = %e, "cannot subscribe to the other nodes; trying again");
                    tokio::select! {
                        _ = stop.cancelled() => return,
                        _ = tokio::time::sleep(RESUBSCRIBE) => continue,
                    }
                }
            };
            let mut messages = ps.on_message();
            loop {
                let msg = tokio::select! {
                    _ = stop.cancelled() => return,
                    m = messages.next() => m,
                };
                let Some(msg) = msg else {
                    warn!("lost the subscription to the other nodes; subscribing again");
                    break;
                };
                if msg.get_channel_name() == FEED {
                    self.feed_event(&svc, msg.get_payload_bytes());
                } else {
                    match serde_json::from_slice::<NodeMsg>(msg.get_payload_bytes()) {
                        Ok(m) => self.node_message(&svc, m),
                        Err(e) => debug!(error = %e, "a message this node cannot read"),
                    }
                }
            }
        }
    }

    fn feed_event(&self, svc: &CallServices, payload: &[u8]) {
        let Ok(w) = serde_json::from_slice::<WireEvent>(payload) else {
            return;
        };
        if w.node == self.node {
            return;
        }
        svc.feed.inject(FeedEvent {
            id: w.id,
            meta: Arc::new(CallMeta {
                call_id: w.call_id,
                org: w.org,
                sub: w.sub,
                agent: w.agent,
            }),
            seq: w.seq,
            kind: w.kind,
            at_ms: w.at,
            data: w.data,
        });
    }

    fn node_message(self: &Arc<Self>, svc: &Arc<CallServices>, msg: NodeMsg) {
        match msg {
            NodeMsg::Command {
                req,
                from,
                call_id,
                operator,
                admin,
                action,
            } => {
                let (me, svc) = (self.clone(), svc.clone());
                tokio::spawn(async move {
                    let by = Operator {
                        sub: operator,
                        admin,
                    };
                    let answer = me.run_command(&svc, &call_id, by, action).await;
                    me.bus.send(&from, &NodeMsg::Answer { req, answer });
                });
            }
            NodeMsg::History { req, from, call_id } => {
                let answer = match svc.calls.get_if(&call_id, |_| true) {
                    Some(r) => Answer::History(r.masked_messages(&svc.agents)),
                    None => Answer::Gone,
                };
                self.bus.send(&from, &NodeMsg::Answer { req, answer });
            }
            NodeMsg::Answer { req, answer } => {
                if let Some(tx) = lock(&self.bus.pending).remove(&req) {
                    let _ = tx.send(answer);
                }
            }
            NodeMsg::Voice {
                call_id,
                operator,
                pcm,
            } => {
                if let Some(h) = svc.calls.handle(&call_id) {
                    let samples = unb64(&pcm);
                    let _ = h.try_send(CallInput::OperatorVoice { operator, samples });
                }
            }
            NodeMsg::VoiceEnd { call_id, operator } => {
                if let Some(h) = svc.calls.handle(&call_id) {
                    let _ = h.try_send(CallInput::OperatorVoiceEnd { operator });
                }
            }
            NodeMsg::Listen {
                call_id,
                from,
                listen,
                req,
            } => {
                let forwarded = self.forward_audio(svc, call_id, from.clone(), listen);
                if let Some(req) = req {
                    let answer = if forwarded {
                        Answer::Listening
                    } else {
                        Answer::Gone
                    };
                    self.bus.send(&from, &NodeMsg::Answer { req, answer });
                }
            }
            NodeMsg::Audio {
                listen,
                stream,
                rate,
                pcm,
            } => {
                if let Some(tx) = lock(&self.bus.listens).get(&listen) {
                    let stream = if stream == AudioStream::Caller as u8 {
                        AudioStream::Caller
                    } else {
                        AudioStream::Agent
                    };
                    let _ = tx.send(ListenAudio {
                        stream,
                        samples: unb64(&pcm).into(),
                        sample_rate: rate,
                    });
                }
            }
            NodeMsg::ListenEnd { listen } => {
                lock(&self.bus.listens).remove(&listen);
            }
        }
    }

    /// Carries out an operator command from another node on a call of this node.
    async fn run_command(
        &self,
        svc: &CallServices,
        call_id: &str,
        by: Operator,
        action: OperatorAction,
    ) -> Answer {
        let Some(handle) = svc.calls.handle(call_id).filter(|h| !h.is_ended()) else {
            return Answer::Gone;
        };
        let (cmd, answer) = OperatorCommand::new(by, action);
        let deadline = Instant::now() + COMMAND_WAIT;
        match tokio::time::timeout_at(deadline, handle.send(CallInput::Operator(cmd))).await {
            Err(_) => return Answer::Busy,
            Ok(Err(_)) => return Answer::Gone,
            Ok(Ok(())) => {}
        }
        match tokio::time::timeout_at(deadline, answer).await {
            Err(_) => Answer::Busy,
            Ok(Err(_)) => Answer::Gone,
            Ok(Ok(Ok(view))) => Answer::Done(view),
            Ok(Ok(Err(refusal))) => Answer::Refused(refusal),
        }
    }

    /// Sends call `call_id`'s audio to node `to` while its listen requests keep coming.
    /// Forwards the call's audio to listener `id` of node `to` (already forwarded: keeps it
    /// going); whether the call is live here to forward it.
    fn forward_audio(
        self: &Arc<Self>,
        svc: &CallServices,
        call_id: String,
        to: String,
        id: u64,
    ) -> bool {
        let key = (to.clone(), id);
        let fresh = lock(&self.bus.forwarding)
            .insert(key.clone(), Instant::now())
            .is_none();
        if !fresh {
            return true;
        }
        let Some(mut audio) = svc.calls.handle(&call_id).and_then(|h| h.listen()) else {
            lock(&self.bus.forwarding).remove(&key);
            self.bus.send(&to, &NodeMsg::ListenEnd { listen: id });
            return false;
        };
        let me = self.clone();
        tokio::spawn(async move {
            let mut check = tokio::time::interval(LISTEN_KEEPALIVE);
            loop {
                tokio::select! {
                    a = audio.recv() => match a {
                        Ok(a) => me.bus.send(&to, &NodeMsg::Audio {
                            listen: id,
                            stream: a.stream as u8,
                            rate: a.sample_rate,
                            pcm: encode_pcm(&a.samples),
                        }),
                        Err(broadcast::error::RecvError::Lagged(_)) => {}
                        Err(broadcast::error::RecvError::Closed) => {
                            me.bus.send(&to, &NodeMsg::ListenEnd { listen: id });
                            break;
                        }
                    },
                    _ = check.tick() => {
                        let last = lock(&me.bus.forwarding).get(&key).copied();
                        if last.is_none_or(|t| t.elapsed() > LISTEN_EXPIRES) {
                            break;
                        }
                    }
                }
            }
            lock(&me.bus.forwarding).remove(&key);
        });
        true
    }
}

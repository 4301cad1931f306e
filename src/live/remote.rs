//! A live call as an operator's session reaches it: on this node through its handle, or on
//! another node of the cluster through the bus, with the same operations.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::broadcast;
use tokio_util::sync::{CancellationToken, DropGuard};

use super::bus::{Answer, NodeMsg};
use super::Cluster;
use crate::call::{CallHandle, CallInput, ListenAudio, Operator, OperatorAction};

/// How often a remote call's lease is looked at, to learn that the call ended.
const WATCH: Duration = Duration::from_secs(1);

/// A live call held by another node.
pub struct RemoteCall {
    pub call_id: String,
    pub node: String,
    cluster: Arc<Cluster>,
    ended: Arc<AtomicBool>,
    _watch: DropGuard,
}

impl RemoteCall {
    /// Sends an operator command to the call's node and waits for the answer.
    pub async fn command(&self, by: &Operator, action: OperatorAction, wait: Duration) -> Answer {
        self.cluster
            .bus
            .command(&self.node, &self.call_id, by, action, wait)
            .await
    }

    /// The call's conversation as its node holds it (see [`super::bus::Bus::history`]).
    pub async fn history(&self, wait: Duration) -> Option<Vec<serde_json::Value>> {
        self.cluster
            .bus
            .history(&self.node, &self.call_id, wait)
            .await
    }

    /// Starts watching the call's lease: once `node` no longer holds it, the call has ended
    /// (or moved) as far as this session is concerned.
    pub fn new(cluster: Arc<Cluster>, call_id: &str, node: &str) -> Self {
        let ended = Arc::new(AtomicBool::new(false));
        let stop = CancellationToken::new();
        let (c, id, n, flag, token) = (
            cluster.clone(),
            call_id.to_string(),
            node.to_string(),
            ended.clone(),
            stop.clone(),
        );
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    _ = token.cancelled() => return,
                    _ = tokio::time::sleep(WATCH) => {}
                }
                if let Ok(holder) = c.holder(&id).await {
                    if holder.as_deref() != Some(n.as_str()) {
                        flag.store(true, Ordering::Relaxed);
                        return;
                    }
                }
            }
        });
        Self {
            call_id: call_id.to_string(),
            node: node.to_string(),
            cluster,
            ended,
            _watch: stop.drop_guard(),
        }
    }
}

/// Where a live call is, for an operator.
pub enum Reach {
    Local(CallHandle),
    Remote(RemoteCall),
}

impl Reach {
    pub fn call_id(&self) -> &str {
        match self {
            Self::Local(h) => &h.call_id,
            Self::Remote(r) => &r.call_id,
        }
    }

    pub fn is_ended(&self) -> bool {
        match self {
            Self::Local(h) => h.is_ended(),
            Self::Remote(r) => r.ended.load(Ordering::Relaxed),
        }
    }

    /// The call's audio from now on, both sides, while it is live (on another node, once
    /// that node forwards it, waiting at most `wait`).
    pub async fn listen(&self, wait: Duration) -> Option<broadcast::Receiver<ListenAudio>> {
        match self {
            Self::Local(h) => h.listen(),
            Self::Remote(r) => {
                let bus_owner = r.cluster.clone();
                let (id, rx) = bus_owner.bus.listen(&r.node, &r.call_id, wait).await?;
                let (node, call) = (r.node.clone(), r.call_id.clone());
                tokio::spawn(async move { bus_owner.bus.keep_listening(&node, &call, id).await });
                Some(rx)
            }
        }
    }

    /// The operator's voice or its end; dropped when the call has no room for it within
    /// `wait` (or, on another node, when the bus is full).
    pub async fn send_voice(&self, input: CallInput, wait: Duration) {
        match self {
            Self::Local(h) => {
                let _ = tokio::time::timeout(wait, h.send(input)).await;
            }
            Self::Remote(r) => {
                let msg = match input {
                    CallInput::OperatorVoice { operator, samples } => NodeMsg::Voice {
                        call_id: r.call_id.clone(),
                        operator,
                        pcm: super::bus::encode_pcm(&samples),
                    },
                    CallInput::OperatorVoiceEnd { operator } => NodeMsg::VoiceEnd {
                        call_id: r.call_id.clone(),
                        operator,
                    },
                    _ => return,
                };
                r.cluster.bus.send(&r.node, &msg);
            }
        }
    }
}

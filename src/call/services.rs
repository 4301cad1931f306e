//! What a call needs from the server, and nothing more: engines, agents, turn-taking settings
//! and limits, metrics, the registry of calls, the shutdown token, the task tracker, the store,
//! the monitor feed and the webhooks.

use std::sync::Arc;

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::feed::Feed;
use super::store::CallStore;
use crate::agents::Agents;
use crate::config::TurnSettings;
use crate::engines::Engines;
use crate::metrics::Metrics;
use crate::protocol::Limits;
use crate::store::{Store, StoreWriter};
use crate::webhooks::Webhooks;

pub struct CallServices {
    pub engines: Engines,
    pub agents: Agents,
    pub turn: TurnSettings,
    pub limits: Limits,
    pub metrics: Arc<Metrics>,
    pub calls: Arc<CallStore>,
    /// Parent of every call's token: cancelled at shutdown.
    pub shutdown: CancellationToken,
    /// Every call actor; shutdown waits for them.
    pub tasks: TaskTracker,
    /// The durable store: finished calls are read from it.
    pub store: Store,
    /// Calls write their records through it.
    pub writer: StoreWriter,
    /// Every call publishes its monitored events here.
    pub feed: Arc<Feed>,
    /// Calls whose agent has a webhook tell it of their start, end and takeovers.
    pub webhooks: Webhooks,
    /// Ended calls are summarised here before their `call.ended` webhook.
    pub summaries: crate::summary::Summaries,
    /// Where recordings are written (`VOXWIRE_RECORDINGS_DIR`).
    pub recordings: std::path::PathBuf,
    /// Default limits of an org, and what is said when a call's minutes run out.
    pub usage: crate::config::UsageSettings,
    /// Several nodes: what is live is shared through Redis (`VOXWIRE_REDIS_URL`).
    pub cluster: Option<Arc<crate::live::Cluster>>,
}

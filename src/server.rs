//! The server: shared state, the listener loop and graceful shutdown (stop accepting, tell live
//! calls, close their sockets, wait a grace period).

use std::future::Future;
use std::sync::Arc;

use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::agents::Agents;
use crate::auth::Authenticator;
use crate::call::CallStore;
use crate::config::Config;
use crate::engines::Engines;
use crate::metrics::Metrics;

pub struct AppState {
    pub config: Config,
    pub auth: Authenticator,
    /// No `JWT_SECRET` was configured: a random secret signs demo tokens.
    pub demo_mode: bool,
    pub engines: Engines,
    pub agents: Agents,
    pub calls: Arc<CallStore>,
    pub metrics: Metrics,
    /// Root of the cancellation tree: server -> call -> turn.
    pub shutdown: CancellationToken,
}

impl AppState {
    pub fn new(config: Config, engines: Engines) -> Arc<Self> {
        let (secret, demo_mode) = match &config.jwt_secret {
            Some(s) => (s.as_bytes().to_vec(), false),
            None => (rand::random::<[u8; 32]>().to_vec(), true),
        };
        let calls = CallStore::new(
            config.max_stored_calls,
            config.history_limit,
            config.limits.max_calls_per_user,
        );
        Arc::new(Self {
            auth: Authenticator::new(&secret),
            demo_mode,
            engines,
            agents: config.agents.clone(),
            calls,
            metrics: Metrics::default(),
            shutdown: CancellationToken::new(),
            config,
        })
    }
}

/// Serves on `listener` until `shutdown` completes, then drains live calls.
pub async fn run(
    listener: TcpListener,
    state: Arc<AppState>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let addr = listener.local_addr()?;
    if state.demo_mode {
        if addr.ip().is_loopback() {
            info!("no JWT_SECRET set: local demo mode with a random secret; tokens at GET /api/demo/token");
        } else {
            warn!("no JWT_SECRET set and not bound to loopback: demo tokens are disabled, so nobody can authenticate");
        }
    }
    let names = state.engines.names();
    info!(stt = %names.stt, llm = %names.llm, tts = %names.tts, "engines in force");
    for (agent, engines) in state.engines.agent_overrides() {
        let n = engines.names();
        info!(%agent, stt = %n.stt, llm = %n.llm, tts = %n.tts, "agent's own engines");
    }
    info!("listening on http://{addr}");
    let app = crate::http::router(state.clone());
    let root = state.shutdown.clone();
    let grace = state.config.shutdown_grace;
    let signal = async move {
        shutdown.await;
        info!("shutting down: closing live calls");
        root.cancel();
    };
    let serve = axum::serve(listener, app).with_graceful_shutdown(signal);
    let done = state.shutdown.clone();
    tokio::select! {
        r = serve => r,
        _ = async { done.cancelled().await; tokio::time::sleep(grace).await } => {
            warn!("grace period over; dropping remaining connections");
            Ok(())
        }
    }
}

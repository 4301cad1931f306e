//! The server: shared state, the accept loop (header-read timeout, connections per address) and
//! graceful shutdown (stop accepting, tell live calls, close their sockets, wait for every
//! connection and call to finish within a grace period).

mod conns;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tower::ServiceExt as _;
use tracing::{debug, info, warn};

use conns::Counted;
pub use conns::PerIp;

use crate::agents::Agents;
use crate::auth::Authenticator;
use crate::call::{CallServices, CallStore, Feed};
use crate::config::Config;
use crate::engines::Engines;
use crate::metrics::Metrics;
use crate::protocol::ErrorCode;
use crate::store::{Store, StoreWriter};
use crate::transport::monitor::MonitorSlots;
use crate::webhooks::Webhooks;

pub struct AppState {
    pub config: Config,
    pub auth: Authenticator,
    /// No `JWT_SECRET` was configured: a random secret signs demo tokens.
    pub demo_mode: bool,
    pub engines: Engines,
    pub agents: Agents,
    pub calls: Arc<CallStore>,
    pub metrics: Arc<Metrics>,
    /// Root of the cancellation tree: server -> call -> turn.
    pub shutdown: CancellationToken,
    /// Every WebSocket session; shutdown waits for them (with the grace period) so each live
    /// call gets its `call_ended` and close frame before the process exits.
    pub sessions: TaskTracker,
    /// Open connections per client address.
    pub per_ip: Arc<PerIp>,
    /// Requests per minute on the HTTP API, per address and per token subject.
    pub rate: Arc<crate::http::rate::RateLimits>,
    /// What the call core needs, shared by every transport.
    pub call_services: Arc<CallServices>,
    /// Open monitor streams per org.
    pub monitors: Arc<MonitorSlots>,
}

impl AppState {
    /// A server whose calls are kept in memory only (tests, and `VOXWIRE_DATABASE_URL=memory`).
    pub fn new(config: Config, engines: Engines) -> Arc<Self> {
        Self::with_store(config, engines, Store::memory())
    }

    /// A server whose calls are kept in `store`. Needs a running tokio runtime (the store's
    /// writer is a task).
    pub fn with_store(config: Config, engines: Engines, store: Store) -> Arc<Self> {
        Self::with_cluster(config, engines, store, None)
    }

    /// A server that is one node of a cluster (`cluster`), or alone (`None`). The cluster's
    /// bus and lease renewal start here and stop at shutdown.
    pub fn with_cluster(
        config: Config,
        engines: Engines,
        store: Store,
        cluster: Option<Arc<crate::live::Cluster>>,
    ) -> Arc<Self> {
        let (secret, demo_mode) = match &config.jwt_secret {
            Some(s) => (s.as_bytes().to_vec(), false),
            None => (rand::random::<[u8; 32]>().to_vec(), true),
        };
        let calls = CallStore::new(
            config.max_stored_calls,
            config.history_limit,
            config.limits.max_calls_per_user,
        );
        let metrics = Arc::new(Metrics::default());
        let shutdown = CancellationToken::new();
        let writers = TaskTracker::new();
        let writer = StoreWriter::spawn(
            store.clone(),
            config.store.queue,
            metrics.store.clone(),
            &writers,
        );
        let webhooks = Webhooks::spawn(
            store.clone(),
            writer.clone(),
            &config.webhooks,
            &config.agents,
            metrics.webhooks.clone(),
            crate::webhooks::Links {
                public_url: config.net.public_url.clone(),
                recordings: config.store.recordings_dir.clone(),
            },
        );
        let summaries = crate::summary::Summaries::spawn(writer.clone(), metrics.summaries.clone());
        let call_services = Arc::new(CallServices {
            engines: engines.clone(),
            agents: config.agents.clone(),
            turn: config.turn,
            limits: config.limits.clone(),
            metrics: metrics.clone(),
            calls: calls.clone(),
            shutdown: shutdown.clone(),
            tasks: TaskTracker::new(),
            store,
            writer,
            feed: Feed::new(config.net.monitor_buffer),
            webhooks,
            summaries,
            recordings: config.store.recordings_dir.clone(),
            usage: config.usage.clone(),
            cluster: cluster.clone(),
        });
        if let Some(c) = &cluster {
            c.start(&call_services);
        }
        Arc::new(Self {
            auth: Authenticator::new(&secret).with_max_ttl(config.net.max_token_ttl),
            sessions: TaskTracker::new(),
            per_ip: PerIp::new(config.net.max_connections_per_ip),
            rate: crate::http::rate::RateLimits::new(
                config.usage.rate_per_ip,
                config.usage.rate_per_subject,
            ),
            monitors: MonitorSlots::new(config.net.max_monitors),
            demo_mode,
            engines,
            agents: config.agents.clone(),
            calls,
            metrics,
            shutdown,
            call_services,
            config,
        })
    }
}

impl AppState {
    /// The live calls of an org (`None`: the default org) on every node, oldest first. Without
    /// a cluster, or when Redis cannot answer, this node's.
    pub async fn live_in_org(&self, org: Option<&str>) -> Vec<crate::call::LiveInfo> {
        let mut live = self.calls.live_in_org(org);
        let Some(cluster) = &self.call_services.cluster else {
            return live;
        };
        match cluster.live_in_org(org).await {
            Ok(all) => {
                for info in all {
                    if !live.iter().any(|l| l.call_id == info.call_id) {
                        live.push(info);
                    }
                }
                live.sort_by(|a, b| (a.started_at, &a.call_id).cmp(&(b.started_at, &b.call_id)));
            }
            Err(e) => warn!(error = %e, "cannot list the other nodes' live calls"),
        }
        live
    }

    /// This node's name (`VOXWIRE_NODE_ID`).
    pub fn node_id(&self) -> &str {
        &self.config.cluster.node_id
    }
}

/// Serves on `listener` until `shutdown` completes, then drains live calls.
pub async fn run(
    listener: TcpListener,
    state: Arc<AppState>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let addr = listener.local_addr()?;
    // The agents made over the API, as the store has them, before any call can ask for one.
    match crate::http::agents::load(&state).await {
        Ok(0) => {}
        Ok(n) => info!(agents = n, "agents made over the API loaded"),
        Err(e) => return Err(std::io::Error::other(e)),
    }
    // A number whose agent is missing is refused when it rings; say so now. (Its agent may be
    // made over the API later, so the server still starts.)
    let telephony = &state.config.telephony;
    let numbers = [
        ("VOXWIRE_TWILIO_NUMBERS", &telephony.numbers),
        ("VOXWIRE_TELNYX_NUMBERS", &telephony.telnyx_numbers),
    ];
    for (var, number, route) in numbers
        .iter()
        .flat_map(|(var, map)| map.iter().map(move |(n, r)| (*var, n, r)))
    {
        if state
            .agents
            .get_in(route.org.as_deref(), Some(&route.agent))
            .is_none()
        {
            warn!(
                %number,
                var,
                org = route.org.as_deref().unwrap_or("(default)"),
                agent = %route.agent,
                "a phone number names an agent its org does not have: calls to this number are refused until it exists"
            );
        }
    }
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
    // Background jobs: retention, at start and then hourly, when calls are not kept forever.
    let background = TaskTracker::new();
    let policy = crate::retention::Policy::new(state.config.store.retention_days, &state.agents);
    if policy.keeps_forever() {
        debug!("retention off: calls are kept forever");
    } else {
        info!(days = policy.default_days, agents = ?policy.agents, "retention on");
        background.spawn(crate::retention::every_hour(
            state.call_services.clone(),
            policy,
            root.clone(),
        ));
    }
    let connections = TaskTracker::new();
    let header_timeout = state.config.net.header_read_timeout;
    tokio::pin!(shutdown);
    loop {
        let (stream, peer) = tokio::select! {
            _ = &mut shutdown => break,
            _ = root.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    // Out of file descriptors, most likely: wait for some to close.
                    warn!(error = %e, "cannot accept a connection");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        let Some(permit) = state.per_ip.acquire(peer.ip()) else {
            debug!(%peer, "connection refused: too many from this address");
            state.metrics.error(ErrorCode::TooManyConnections);
            refuse(stream);
            continue;
        };
        let _ = stream.set_nodelay(true);
        connections.spawn(serve_connection(
            Counted::new(stream, permit),
            peer,
            app.clone(),
            header_timeout,
            root.clone(),
        ));
    }
    info!("shutting down: closing live calls");
    drop(listener);
    root.cancel();
    connections.close();
    state.sessions.close();
    background.close();
    let calls = &state.call_services.tasks;
    calls.close();
    let grace = state.config.shutdown_grace;
    let drained = async {
        connections.wait().await;
        state.sessions.wait().await;
        calls.wait().await;
        background.wait().await;
    };
    let started = tokio::time::Instant::now();
    if tokio::time::timeout(grace, drained).await.is_err() {
        warn!(
            connections = connections.len(),
            sessions = state.sessions.len(),
            calls = calls.len(),
            "grace period over; dropping remaining connections"
        );
    }
    // The calls' last webhook events are stored as deliveries and the attempts in flight
    // finish, then what the calls wrote on their way out reaches the store, each within what
    // is left of the grace period (at least a second).
    let left = |min: u64| {
        grace
            .saturating_sub(started.elapsed())
            .max(Duration::from_secs(min))
    };
    // Summaries first: each hands its call's `call.ended` to the webhooks when done.
    if !state.call_services.summaries.close(left(2)).await {
        warn!("the grace period ended with a call summary unfinished; that call keeps none");
    }
    if !state.call_services.webhooks.close(left(2)).await {
        warn!(
            "the grace period ended with webhook work left: requests in flight are made again \
             at the next start, events not yet stored are lost (voxwire_webhook_dropped_total)"
        );
    }
    let left = left(1);
    let writer = &state.call_services.writer;
    if !writer.close(left).await {
        warn!(
            queued = writer.queued(),
            "store writes still queued at exit were not written"
        );
    }
    if let Some(cluster) = &state.call_services.cluster {
        cluster.stop();
    }
    Ok(())
}

/// The answer to a connection over its address's cap, written without waiting (the socket is
/// new, its send buffer empty) before it is closed.
const REFUSED: &[u8] = b"HTTP/1.1 429 Too Many Requests\r\ncontent-type: application/json\r\n\
content-length: 92\r\nconnection: close\r\n\r\n\
{\"error\":{\"code\":\"too_many_connections\",\"message\":\"too many connections from this address\"}}";

fn refuse(stream: TcpStream) {
    let _ = stream.try_write(REFUSED);
}

/// Serves HTTP/1.1 (and WebSocket upgrades) on one connection. Request headers must arrive
/// within `header_timeout`; on shutdown, idle keep-alive connections close and requests in
/// progress finish.
async fn serve_connection<I>(
    io: I,
    peer: std::net::SocketAddr,
    app: Router,
    header_timeout: Duration,
    shutdown: CancellationToken,
) where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(header_timeout);
    let conn = builder
        .serve_connection(
            TokioIo::new(io),
            // The client's address, for the per-address rate limit.
            TowerToHyperService::new(app.map_request(
                move |mut req: axum::http::Request<hyper::body::Incoming>| {
                    req.extensions_mut()
                        .insert(axum::extract::ConnectInfo(peer));
                    req
                },
            )),
        )
        .with_upgrades();
    tokio::pin!(conn);
    let result = tokio::select! {
        r = conn.as_mut() => r,
        _ = shutdown.cancelled() => {
            conn.as_mut().graceful_shutdown();
            conn.await
        }
    };
    if let Err(e) = result {
        debug!(error = %e, "connection ended with an error");
    }
}

/// Raises the process's soft limit on open files to its hard limit, so thousands of calls do not
/// run out of descriptors at the usual soft limit of 1024. Returns the new limit.
pub fn raise_fd_limit() -> std::io::Result<u64> {
    rlimit::increase_nofile_limit(u64::MAX)
}

//! `voxwire loadgen`: simulated callers against a running server. Each caller streams a WAV in
//! real time like a live microphone (then silence until the reply is done), and the run reports
//! turn outcomes, errors, client-side voice-to-voice and server turnaround percentiles, the
//! server's own stage medians, and the server's CPU and memory from its `/metrics`. `--idle`
//! opens calls that send nothing, to measure what an idle call costs the server; `--monitors N`
//! watches the run through N monitor streams and reports how late their events arrive.

pub mod call;
pub mod clip;
pub mod frame;
pub mod report;
pub mod scrape;
pub mod watch;

use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use tokio::task::JoinSet;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use self::call::{CallResult, CallSpec, Progress};
use self::clip::Clip;
use self::report::{Generator, Setup};
pub use self::report::{Report, Summary};
use self::scrape::Monitor;
use crate::auth::{Authenticator, Role};
use crate::metrics::process;

/// Lifetime of minted tokens: longer than any run.
const TOKEN_TTL: Duration = Duration::from_secs(24 * 3600);
/// Pause before measuring, so the server has handled the last opens or closes.
const SETTLE: Duration = Duration::from_secs(1);

/// Options of `voxwire loadgen`.
#[derive(Debug, Clone, clap::Parser)]
#[command(name = "loadgen")]
pub struct Options {
    /// WebSocket URL of the server; /metrics and /api/demo/token are read from the same host.
    #[arg(long, default_value = "ws://127.0.0.1:3001/ws")]
    pub url: String,
    /// Simulated callers, all at once (their starts spread over --ramp-ms).
    #[arg(long, default_value_t = 1)]
    pub calls: usize,
    /// Turns per call.
    #[arg(long, default_value_t = 3)]
    pub turns: usize,
    /// What each caller says every turn: any WAV (converted to 16 kHz mono PCM16).
    #[arg(long, required_unless_present = "idle")]
    pub wav: Option<PathBuf>,
    /// Length of each `audio` chunk, in ms.
    #[arg(long, default_value_t = 500, value_parser = clap::value_parser!(u64).range(10..=10_000))]
    pub chunk_ms: u64,
    /// Spread call starts uniformly over this many ms [default: the WAV's duration; 0 with --idle].
    #[arg(long)]
    pub ramp_ms: Option<u64>,
    /// Agent for `start_call` (default: the server's).
    #[arg(long)]
    pub agent: Option<String>,
    /// The server's end-of-turn silence in ms, unless `call_started` states it.
    #[arg(long, default_value_t = 600)]
    pub silence_ms: u64,
    /// Seconds to wait for a turn's `response_done` after its WAV has been sent.
    #[arg(long, default_value_t = 60)]
    pub timeout_secs: u64,
    /// Print the report as JSON instead of a markdown table.
    #[arg(long)]
    pub json: bool,
    /// Open the calls, send nothing, measure the server's memory, hang up.
    #[arg(long)]
    pub idle: bool,
    /// With --idle: how long to keep the calls open.
    #[arg(long, default_value_t = 10)]
    pub hold_secs: u64,
    /// Watch the run through this many monitor streams (an operator token: minted with
    /// --secret, else the demo one) and report their event delay.
    #[arg(long, default_value_t = 0)]
    pub monitors: usize,
    /// Sign tokens with this HS256 secret, one user per call; without it, one demo token is
    /// fetched from the server and every call is the same user.
    #[arg(long, env = "JWT_SECRET", hide_env_values = true)]
    pub secret: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum LoadgenError {
    #[error("{0}")]
    Options(String),
    #[error("{path}: {reason}")]
    Wav { path: PathBuf, reason: String },
    #[error("no token: {0}")]
    Token(String),
}

/// Runs the load and returns its report.
pub async fn run(opts: Options) -> Result<Report, LoadgenError> {
    if opts.calls == 0 || (!opts.idle && opts.turns == 0) {
        return Err(LoadgenError::Options(
            "--calls and --turns must be at least 1".into(),
        ));
    }
    let http = scrape::http_base(&opts.url).map_err(LoadgenError::Options)?;
    let clip = if opts.idle {
        None
    } else {
        Some(Arc::new(load_clip(&opts)?))
    };
    let client = reqwest::Client::builder()
        // The WebSocket connections go direct; so do the scrapes of the same server.
        .no_proxy()
        .timeout(Duration::from_secs(10))
        .build()
        .map_err(|e| LoadgenError::Options(format!("HTTP client: {e}")))?;
    let tokens = Tokens::new(&opts, &client, &http).await?;
    let ramp_ms = opts
        .ramp_ms
        .unwrap_or_else(|| clip.as_ref().map_or(0, |c| c.duration_ms));
    let mut setup = Setup {
        mode: if opts.idle { "idle" } else { "turns" },
        url: opts.url.clone(),
        calls: opts.calls,
        turns_per_call: opts.turns,
        chunk_ms: opts.chunk_ms,
        ramp_ms,
        silence_ms: opts.silence_ms,
        speech_end_ms: clip.as_ref().map(|c| c.speech_end_ms),
        wav_ms: clip.as_ref().map(|c| c.duration_ms),
        demo_token: matches!(tokens, Tokens::Demo(_)),
    };
    let watchers = match opts.monitors {
        0 => None,
        n => {
            let token = tokens.operator(&client, &http).await?;
            Some(watch::Watchers::open(&http, &token, n).await?)
        }
    };
    let progress = Arc::new(Progress::default());
    let monitor = Monitor::start(client, &http, progress.clone()).await;
    let started = Instant::now();
    let own_cpu = process::cpu_seconds();
    let specs = (0..opts.calls).map(|i| CallSpec {
        url: opts.url.clone(),
        token: tokens.for_call(i),
        agent: opts.agent.clone(),
        start_at: started + Duration::from_millis(ramp_ms * i as u64 / opts.calls as u64),
        turns: opts.turns,
        silence_ms: opts.silence_ms,
        timeout: Duration::from_secs(opts.timeout_secs),
    });
    info!(
        calls = opts.calls,
        ramp_ms,
        mode = setup.mode,
        "loadgen starting"
    );
    let (results, per_idle_call) = match clip {
        Some(clip) => {
            let mut set = JoinSet::new();
            for spec in specs {
                set.spawn(call::talk(spec, clip.clone(), progress.clone()));
            }
            (join_all(set).await, None)
        }
        None => {
            let hang_up = CancellationToken::new();
            let mut set = JoinSet::new();
            for spec in specs {
                set.spawn(call::idle(spec, progress.clone(), hang_up.clone()));
            }
            let limit = Duration::from_millis(ramp_ms) + Duration::from_secs(opts.timeout_secs);
            wait_settled(&progress, opts.calls, limit).await;
            tokio::time::sleep(SETTLE).await;
            tokio::time::sleep(Duration::from_secs(opts.hold_secs)).await;
            let held = monitor.sample().await;
            hang_up.cancel();
            let results = join_all(set).await;
            let open = results.iter().filter(|r| r.started).count();
            let per_call = match (monitor.first().and_then(|s| s.rss_bytes), held) {
                (Some(before), Some(held)) if open > 0 => held
                    .rss_bytes
                    .map(|now| (now - before) / open as f64 / 1024.0),
                _ => None,
            };
            (results, per_call)
        }
    };
    let wall_secs = started.elapsed().as_secs_f64();
    if let Some(stated) = results.iter().find_map(|r| r.silence_ms) {
        setup.silence_ms = stated;
    }
    let generator = Generator {
        cpu_percent: own_cpu
            .zip(process::cpu_seconds())
            .map(|(a, b)| (b - a) / wall_secs.max(1e-3) * 100.0),
        peak_rss_bytes: process::peak_resident_bytes().map(|b| b as u64),
    };
    tokio::time::sleep(SETTLE).await;
    let usage = monitor.finish().await;
    let mut report = Report::build(setup, &results, wall_secs, usage, per_idle_call, generator);
    if let Some(w) = watchers {
        report.monitors = Some(w.finish().await);
    }
    Ok(report)
}

fn load_clip(opts: &Options) -> Result<Clip, LoadgenError> {
    let path = opts
        .wav
        .clone()
        .ok_or_else(|| LoadgenError::Options("--wav is required unless --idle".into()))?;
    let wav_error = |reason: String| LoadgenError::Wav {
        path: path.clone(),
        reason,
    };
    let bytes = std::fs::read(&path).map_err(|e| wav_error(e.to_string()))?;
    Clip::from_wav(&bytes, opts.chunk_ms).map_err(wav_error)
}

async fn join_all(mut set: JoinSet<CallResult>) -> Vec<CallResult> {
    let mut results = Vec::with_capacity(set.len());
    while let Some(r) = set.join_next().await {
        match r {
            Ok(r) => results.push(r),
            Err(e) => warn!("a caller task failed: {e}"),
        }
    }
    results
}

/// Until every idle call has started or failed, or `limit` has passed.
async fn wait_settled(progress: &Progress, calls: usize, limit: Duration) {
    let deadline = Instant::now() + limit;
    while progress.settled.load(Ordering::Relaxed) < calls && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Where each call's token comes from.
enum Tokens {
    /// Signed here, one user (`loadgen-<i>`) per call.
    Minted(Box<Authenticator>),
    /// The server's demo token, shared by every call.
    Demo(String),
}

impl Tokens {
    async fn new(
        opts: &Options,
        client: &reqwest::Client,
        http: &reqwest::Url,
    ) -> Result<Self, LoadgenError> {
        if let Some(secret) = opts.secret.as_deref().filter(|s| !s.is_empty()) {
            return Ok(Self::Minted(Box::new(Authenticator::new(
                secret.as_bytes(),
            ))));
        }
        let url = http
            .join("api/demo/token")
            .map_err(|e| LoadgenError::Token(e.to_string()))?;
        let fetch = async {
            let body = client
                .get(url.clone())
                .send()
                .await
                .and_then(|r| r.error_for_status())
                .map_err(|e| e.to_string())?
                .bytes()
                .await
                .map_err(|e| e.to_string())?;
            let v: serde_json::Value = serde_json::from_slice(&body).map_err(|e| e.to_string())?;
            v["token"]
                .as_str()
                .map(str::to_string)
                .ok_or_else(|| "the answer has no `token`".to_string())
        };
        let token = fetch.await.map_err(|e| {
            LoadgenError::Token(format!(
                "without --secret or JWT_SECRET the token comes from {url}, which failed: {e}"
            ))
        })?;
        if opts.calls > 1 {
            warn!(
                "demo token: every call is the same user, so the server's max_calls_per_user \
                 (default 4) applies; pass --secret (the server's JWT_SECRET) for one user per call"
            );
        }
        Ok(Self::Demo(token))
    }

    /// An operator's token for the monitor streams: minted, or the demo one.
    async fn operator(
        &self,
        client: &reqwest::Client,
        http: &reqwest::Url,
    ) -> Result<String, LoadgenError> {
        if let Self::Minted(auth) = self {
            return auth
                .issue_with_role("loadgen-monitor", None, None, Role::Operator, TOKEN_TTL)
                .map_err(|e| LoadgenError::Token(e.to_string()));
        }
        let url = http
            .join("api/demo/token?role=operator")
            .map_err(|e| LoadgenError::Token(e.to_string()))?;
        let fetch = async {
            let v: serde_json::Value = client
                .get(url.clone())
                .send()
                .await
                .and_then(|r| r.error_for_status())
                .map_err(|e| e.to_string())?
                .json()
                .await
                .map_err(|e| e.to_string())?;
            v["token"]
                .as_str()
                .map(str::to_string)
                .ok_or_else(|| "the answer has no `token`".to_string())
        };
        fetch
            .await
            .map_err(|e| LoadgenError::Token(format!("operator token from {url} failed: {e}")))
    }

    fn for_call(&self, i: usize) -> String {
        match self {
            Self::Minted(auth) => auth
                .issue(&format!("loadgen-{i}"), None, None, TOKEN_TTL)
                .unwrap_or_default(),
            Self::Demo(token) => token.clone(),
        }
    }
}

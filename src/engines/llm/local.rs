//! The default language model: SmolLM2 on candle, run on the blocking pool. Each call keeps its
//! own session (KV cache) between turns so a new turn only processes its new tokens; the number
//! of kept sessions is bounded (least recently used dropped, falling back to a fresh prompt).
//! SmolLM2 does not call functions: it ignores a request's tools, and past tool calls and
//! results are left out of what it reads (the replies that used them are kept).

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard};

use futures::future::BoxFuture;
use futures::stream::BoxStream;
use futures::StreamExt;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::smollm::{
    self, ChatSession, GenerateParams, LoadOptions, SmolLm, StopReason, WeightFormat,
};
use super::{ChatRequest, LanguageModel, TokenCount};
use crate::engines::cpu::{self, Seats};
use crate::engines::pool::BlockingPool;
use crate::engines::{EngineError, EngineInitError};

pub struct SmolLmEngine {
    model: Arc<SmolLm>,
    sessions: Mutex<Sessions>,
    /// Admits replies and warm-ups (more than compute at once: a tail waits parked here).
    pool: Arc<BlockingPool>,
    /// Who computes: `concurrency` seats, first words before tails (see `engines::cpu`).
    seats: Arc<Seats>,
}

/// Replies and warm-ups admitted beyond the compute seats, parked while others compute.
const PARKED: usize = 3;

struct Sessions {
    map: HashMap<String, (Arc<Mutex<ChatSession>>, u64)>,
    tick: u64,
    max: usize,
}

impl Sessions {
    /// The session of a call, created if needed; the least recently used one goes past `max`.
    fn get(&mut self, model: &Arc<SmolLm>, id: &str) -> Arc<Mutex<ChatSession>> {
        self.tick += 1;
        let tick = self.tick;
        if let Some((s, used)) = self.map.get_mut(id) {
            *used = tick;
            return s.clone();
        }
        if self.map.len() >= self.max {
            if let Some(oldest) = self
                .map
                .iter()
                .min_by_key(|(_, (_, used))| *used)
                .map(|(k, _)| k.clone())
            {
                self.map.remove(&oldest);
            }
        }
        let s = Arc::new(Mutex::new(model.new_session()));
        self.map.insert(id.to_string(), (s.clone(), tick));
        s
    }
}

/// How to load the engine.
pub struct SmolLmSettings<'a> {
    pub model: &'a Path,
    pub max_sessions: usize,
    pub concurrency: usize,
    pub max_waiting: usize,
    /// How the weights are held (packed: the fast default).
    pub weights: WeightFormat,
    /// Threads of each packed generation (0: one per core).
    pub threads: usize,
}

fn to_engine_err(e: smollm::LlmError) -> EngineError {
    EngineError::failed("smollm2", e.to_string())
}

/// The system prompt followed by the conversation, without tool calls and results.
fn to_model_messages(request: ChatRequest) -> Vec<smollm::ChatMessage> {
    let mut messages = vec![smollm::ChatMessage::system(request.system)];
    messages.extend(request.messages.into_iter().filter(|m| !m.is_tool_step()));
    messages
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl SmolLmEngine {
    pub fn load(settings: &SmolLmSettings) -> Result<Self, EngineInitError> {
        let options = LoadOptions {
            weight_format: settings.weights,
            threads: settings.threads,
            ..LoadOptions::default()
        };
        let model = SmolLm::load_with(settings.model, &options).map_err(|e| EngineInitError {
            kind: "language model",
            name: "smollm2".into(),
            reason: e.to_string(),
        })?;
        tracing::info!(
            weights = ?model.weight_format(),
            kernels = model.kernels().as_deref().unwrap_or("candle"),
            load_ms = model.load_ms(),
            "local language model loaded"
        );
        Ok(Self {
            model: Arc::new(model),
            sessions: Mutex::new(Sessions {
                map: HashMap::new(),
                tick: 0,
                max: settings.max_sessions.max(1),
            }),
            pool: Arc::new(BlockingPool::new(
                "language model",
                settings.concurrency.max(1) + PARKED,
                settings.max_waiting,
            )),
            seats: Arc::new(Seats::new(settings.concurrency)),
        })
    }

    /// Calls whose KV cache is kept now.
    pub fn kept_sessions(&self) -> usize {
        lock(&self.sessions).map.len()
    }
}

impl LanguageModel for SmolLmEngine {
    fn name(&self) -> String {
        "smollm2-135m-instruct (local)".into()
    }

    fn warm_up(&self, request: ChatRequest, cancel: CancellationToken) -> BoxFuture<'static, ()> {
        let session = lock(&self.sessions).get(&self.model, &request.session_id);
        let messages = to_model_messages(request);
        let (pool, seats) = (self.pool.clone(), self.seats.clone());
        Box::pin(async move {
            let result = pool
                .run(&cancel, move |cancelled| {
                    // Nobody waits for a warm-up: it steps aside like a reply's tail.
                    let turn = std::cell::RefCell::new(cpu::Turn::new(cpu::gate(), &seats, None));
                    let step = || !turn.borrow_mut().step(cancelled);
                    lock(&session)
                        .prefill(&messages, &step)
                        .map_err(to_engine_err)
                })
                .await;
            match result {
                Ok(tokens) => tracing::debug!(tokens, "language model warmed up"),
                Err(e) => tracing::debug!(error = %e, "warm-up skipped"),
            }
        })
    }

    fn stream(
        &self,
        request: ChatRequest,
        cancel: CancellationToken,
    ) -> BoxStream<'static, Result<String, EngineError>> {
        let session = lock(&self.sessions).get(&self.model, &request.session_id);
        let (max_tokens, temperature) = (request.max_tokens, request.temperature);
        let (tap, engine) = (request.tokens.clone(), self.usage_label());
        let first_words = request.first_words.clone().unwrap_or_default();
        let messages = to_model_messages(request);
        let params = GenerateParams {
            max_tokens: max_tokens.max(1),
            temperature: f64::from(temperature),
            ..GenerateParams::default()
        };
        let (tx, mut rx) = mpsc::channel::<Result<String, EngineError>>(64);
        let (pool, seats) = (self.pool.clone(), self.seats.clone());
        tokio::spawn(async move {
            let deltas = tx.clone();
            let result = pool
                .run(&cancel, move |cancelled| {
                    let mut session = lock(&session);
                    // Each model step first takes a compute seat; once the turn has its first
                    // words, the tail steps aside for other turns' first words.
                    let turn = std::cell::RefCell::new(cpu::Turn::new(
                        cpu::gate(),
                        &seats,
                        Some(first_words),
                    ));
                    let step = || !turn.borrow_mut().step(cancelled);
                    session
                        .generate(&messages, &params, &step, &mut |d| {
                            deltas.blocking_send(Ok(d.to_string())).is_ok()
                        })
                        .map_err(to_engine_err)
                })
                .await;
            match result {
                Ok(stats) if stats.stop_reason == StopReason::Cancelled => {
                    let _ = tx.send(Err(EngineError::Cancelled)).await;
                }
                Ok(stats) => {
                    if let Some(tap) = &tap {
                        tap.set(TokenCount {
                            engine,
                            prompt: stats.prompt_tokens as u64,
                            completion: stats.generated_tokens as u64,
                        });
                    }
                    tracing::debug!(
                        prompt_tokens = stats.prompt_tokens,
                        cached_tokens = stats.cached_tokens,
                        generated = stats.generated_tokens,
                        first_token_ms = stats.first_token_ms,
                        "reply generated"
                    );
                }
                Err(e) => {
                    let _ = tx.send(Err(e)).await;
                }
            }
        });
        futures::stream::poll_fn(move |cx| rx.poll_recv(cx)).boxed()
    }

    fn release(&self, session_id: &str) {
        lock(&self.sessions).map.remove(session_id);
    }
}

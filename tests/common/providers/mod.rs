//! Local stand-ins for the hosted speech and LLM APIs, for integration tests without the
//! internet. One server on 127.0.0.1:0 serves the documented request and response shapes of:
//!
//! - OpenAI-compatible `POST /v1/audio/transcriptions`, `POST /v1/chat/completions` (SSE
//!   streaming or one JSON answer) and `POST /v1/audio/speech` (pcm or wav, streamed);
//! - Deepgram streaming speech-to-text, the WebSocket `GET /v1/listen`;
//! - ElevenLabs `POST /v1/text-to-speech/{voice_id}/stream` (and the same without `/stream`).
//!
//! Tests set what the engines "say" ([`FakeProvider::set_transcript`],
//! [`FakeProvider::set_reply`]), queue faults per route ([`FakeProvider::push_fault`]), and
//! inspect what the client sent ([`FakeProvider::requests`]) and whether it abandoned a
//! streamed answer ([`FakeProvider::wait_aborted`]).
//!
//! Every request goes through the same steps, in order:
//! 1. it is recorded (so faulted and rejected requests are counted too);
//! 2. with [`FakeProvider::require_key`] set, a missing or wrong key is answered 401 (no fault
//!    is consumed);
//! 3. the next queued fault for the route, if any, is popped and applied;
//! 4. the request is validated (400/404/422 as the provider would) and answered.
//!
//! Synthesized speech is a 220 Hz sine at amplitude 0.3, 60 ms per character of the input
//! text, signed 16-bit little-endian mono, streamed in chunks of 4800 bytes.

mod deepgram;
mod elevenlabs;
mod faults;
mod openai;

pub use faults::Fault;
#[allow(unused_imports)] // for the test binaries that check chat deltas
pub use openai::word_pieces;

use std::collections::{HashMap, HashSet, VecDeque};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::DefaultBodyLimit;
use axum::http::{HeaderMap, Uri};
use axum::response::Response;
use axum::routing::{get, post};
use axum::Router;

use faults::Dialect;

/// Default transcript of the transcription and Deepgram routes.
pub const DEFAULT_TRANSCRIPT: &str = "hello from the fake provider";
/// Default reply of chat completions.
pub const DEFAULT_REPLY: &str = "Hello there. How can I help you today?";
/// Audio synthesized per character of input text, in milliseconds.
pub const MS_PER_CHAR: u32 = 60;
/// Bytes per streamed audio chunk of the speech routes.
pub const AUDIO_CHUNK_BYTES: usize = 4800;
/// Sample rate of OpenAI speech output (pcm and wav).
pub const SPEECH_RATE: u32 = 24_000;
/// Deepgram closes a socket that received nothing for this long (NET-0001), unless changed
/// with [`FakeProvider::set_deepgram_idle_timeout`].
pub const DEEPGRAM_IDLE_TIMEOUT: Duration = Duration::from_secs(10);

/// The routes a fault can be queued on and requests are recorded for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Route {
    /// `POST /v1/audio/transcriptions`
    Transcriptions,
    /// `POST /v1/chat/completions`
    ChatCompletions,
    /// `POST /v1/audio/speech`
    Speech,
    /// `GET /v1/listen` (WebSocket)
    DeepgramListen,
    /// `POST /v1/text-to-speech/{voice_id}/stream`
    ElevenLabs,
}

impl Route {
    fn dialect(self) -> Dialect {
        match self {
            Route::Transcriptions | Route::ChatCompletions | Route::Speech => Dialect::OpenAi,
            Route::DeepgramListen => Dialect::Deepgram,
            Route::ElevenLabs => Dialect::ElevenLabs,
        }
    }
}

/// One request as the fake received it.
#[derive(Clone, Debug, Default)]
pub struct Recorded {
    pub path_and_query: String,
    /// Header names are lowercase; a repeated header keeps its last value.
    pub headers: HashMap<String, String>,
    pub body: Vec<u8>,
    /// The body parsed as JSON, when it is JSON.
    pub json: Option<serde_json::Value>,
    /// Multipart text fields.
    pub form: HashMap<String, String>,
    /// Size of the multipart `file` field.
    pub file_bytes: Option<usize>,
    /// Deepgram: binary (audio) bytes received so far.
    pub audio_bytes: usize,
    /// Deepgram: text frames received so far, in order.
    pub text_messages: Vec<String>,
}

impl Recorded {
    fn new(uri: &Uri, headers: &HeaderMap, body: &[u8]) -> Recorded {
        Recorded {
            path_and_query: uri
                .path_and_query()
                .map(|p| p.as_str().to_string())
                .unwrap_or_else(|| uri.path().to_string()),
            headers: headers
                .iter()
                .map(|(k, v)| {
                    let value = String::from_utf8_lossy(v.as_bytes()).into_owned();
                    (k.as_str().to_ascii_lowercase(), value)
                })
                .collect(),
            body: body.to_vec(),
            json: serde_json::from_slice(body).ok(),
            ..Recorded::default()
        }
    }
}

struct Settings {
    key: Option<String>,
    transcript: String,
    reply: String,
    deepgram_idle: Duration,
    /// `None` accepts every voice id.
    voices: Option<HashSet<String>>,
    /// Answers of the next chat completions that call tools instead of saying the reply.
    tool_calls: VecDeque<Vec<ToolCallScript>>,
}

/// A tool call a scripted chat completion makes: id, function name, arguments (JSON text).
pub type ToolCallScript = (String, String, String);

struct Inner {
    settings: Mutex<Settings>,
    faults: Mutex<HashMap<Route, VecDeque<Fault>>>,
    log: Mutex<HashMap<Route, Vec<Recorded>>>,
    open: AtomicUsize,
    aborted: AtomicUsize,
    aborted_by_route: Mutex<HashMap<Route, usize>>,
    /// Woken on every recorded request, Deepgram frame and stream open/close.
    changed: tokio::sync::Notify,
    ids: AtomicU64,
}

type Shared = Arc<Inner>;

impl Inner {
    fn transcript(&self) -> String {
        self.settings.lock().unwrap().transcript.clone()
    }

    fn reply(&self) -> String {
        self.settings.lock().unwrap().reply.clone()
    }

    fn next_tool_calls(&self) -> Option<Vec<ToolCallScript>> {
        self.settings.lock().unwrap().tool_calls.pop_front()
    }

    fn next_id(&self) -> u64 {
        self.ids.fetch_add(1, Ordering::Relaxed) + 1
    }

    /// Stores a request; returns its index in the route's log.
    fn record(&self, route: Route, recorded: Recorded) -> usize {
        let index = {
            let mut log = self.log.lock().unwrap();
            let list = log.entry(route).or_default();
            list.push(recorded);
            list.len() - 1
        };
        self.changed.notify_waiters();
        index
    }

    /// Changes a recorded request in place (Deepgram frames arrive after the upgrade).
    fn update(&self, route: Route, index: usize, change: impl FnOnce(&mut Recorded)) {
        if let Some(r) = self
            .log
            .lock()
            .unwrap()
            .get_mut(&route)
            .and_then(|l| l.get_mut(index))
        {
            change(r);
        }
        self.changed.notify_waiters();
    }

    fn pop_fault(&self, route: Route) -> Option<Fault> {
        self.faults
            .lock()
            .unwrap()
            .get_mut(&route)
            .and_then(|q| q.pop_front())
    }

    /// `Err` is the 401 answer when a key is required and the request does not carry it.
    /// The error message echoes whatever key was presented, as OpenAI's does.
    fn check_auth(&self, route: Route, headers: &HeaderMap) -> Result<(), Box<Response>> {
        let Some(key) = self.settings.lock().unwrap().key.clone() else {
            return Ok(());
        };
        let value = |name: &str| {
            headers
                .get(name)
                .map(|v| String::from_utf8_lossy(v.as_bytes()).trim().to_string())
        };
        let dialect = route.dialect();
        let presented = match dialect {
            Dialect::OpenAi | Dialect::Deepgram => {
                let scheme = if dialect == Dialect::OpenAi {
                    "Bearer"
                } else {
                    "Token"
                };
                value("authorization").map(|v| match v.split_once(' ') {
                    Some((s, rest)) if s.eq_ignore_ascii_case(scheme) => {
                        (true, rest.trim().to_string())
                    }
                    // Wrong scheme: echo the whole value, never accept it.
                    _ => (false, v),
                })
            }
            Dialect::ElevenLabs => value("xi-api-key").map(|v| (true, v)),
        };
        match presented {
            Some((true, k)) if k == key => Ok(()),
            Some((_, k)) => Err(Box::new(faults::unauthorized(dialect, Some(&k)))),
            None => Err(Box::new(faults::unauthorized(dialect, None))),
        }
    }

    /// Steps 2 and 3 of every request: authentication, then the queued fault.
    fn admit(&self, route: Route, headers: &HeaderMap) -> Result<Option<Fault>, Box<Response>> {
        self.check_auth(route, headers)?;
        Ok(self.pop_fault(route))
    }
}

/// Counts a streamed response (HTTP body or Deepgram socket) as open while it lives; dropped
/// before [`StreamGuard::finish`], it counts as aborted by the client.
struct StreamGuard {
    inner: Shared,
    route: Route,
    finished: bool,
}

impl StreamGuard {
    fn open(inner: &Shared, route: Route) -> StreamGuard {
        inner.open.fetch_add(1, Ordering::SeqCst);
        inner.changed.notify_waiters();
        StreamGuard {
            inner: inner.clone(),
            route,
            finished: false,
        }
    }

    /// The server completed the stream, or ended it on purpose (a fault, a timeout).
    fn finish(&mut self) {
        self.finished = true;
    }
}

impl Drop for StreamGuard {
    fn drop(&mut self) {
        if !self.finished {
            self.inner.aborted.fetch_add(1, Ordering::SeqCst);
            *self
                .inner
                .aborted_by_route
                .lock()
                .unwrap()
                .entry(self.route)
                .or_default() += 1;
        }
        self.inner.open.fetch_sub(1, Ordering::SeqCst);
        self.inner.changed.notify_waiters();
    }
}

struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// The fake server. Clones share its state; it stops when the last clone is dropped.
#[derive(Clone)]
pub struct FakeProvider {
    inner: Shared,
    addr: SocketAddr,
    _server: Arc<AbortOnDrop>,
}

impl FakeProvider {
    /// Binds 127.0.0.1:0 and serves every route.
    pub async fn start() -> FakeProvider {
        let inner = Arc::new(Inner {
            settings: Mutex::new(Settings {
                key: None,
                transcript: DEFAULT_TRANSCRIPT.to_string(),
                reply: DEFAULT_REPLY.to_string(),
                deepgram_idle: DEEPGRAM_IDLE_TIMEOUT,
                voices: None,
                tool_calls: VecDeque::new(),
            }),
            faults: Mutex::default(),
            log: Mutex::default(),
            open: AtomicUsize::new(0),
            aborted: AtomicUsize::new(0),
            aborted_by_route: Mutex::default(),
            changed: tokio::sync::Notify::new(),
            ids: AtomicU64::new(0),
        });
        let app = Router::new()
            .route("/v1/audio/transcriptions", post(openai::transcriptions))
            .route("/v1/chat/completions", post(openai::chat_completions))
            .route("/v1/audio/speech", post(openai::speech))
            .route("/v1/listen", get(deepgram::listen))
            .route("/v1/text-to-speech/{voice_id}", post(elevenlabs::tts))
            .route(
                "/v1/text-to-speech/{voice_id}/stream",
                post(elevenlabs::tts),
            )
            .layer(DefaultBodyLimit::disable())
            .with_state(inner.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        FakeProvider {
            inner,
            addr,
            _server: Arc::new(AbortOnDrop(task)),
        }
    }

    /// `http://127.0.0.1:PORT`
    pub fn base(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// `ws://127.0.0.1:PORT`
    pub fn ws_base(&self) -> String {
        format!("ws://{}", self.addr)
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// From now on every route requires its key: OpenAI routes `Authorization: Bearer KEY`,
    /// Deepgram `Authorization: Token KEY`, ElevenLabs `xi-api-key: KEY`. A missing or wrong
    /// key gets 401 with the provider's JSON error body, which echoes the presented key.
    pub fn require_key(&self, key: &str) {
        self.inner.settings.lock().unwrap().key = Some(key.to_string());
    }

    /// What the transcription routes return. Deepgram reads it when an utterance starts.
    pub fn set_transcript(&self, text: &str) {
        self.inner.settings.lock().unwrap().transcript = text.to_string();
    }

    /// What chat completions answer, streamed one word (with its following whitespace) per
    /// delta.
    pub fn set_reply(&self, text: &str) {
        self.inner.settings.lock().unwrap().reply = text.to_string();
    }

    /// The next streamed chat completion calls these tools (id, name, arguments) instead of
    /// saying the reply: each call's arguments arrive in three pieces, the calls' pieces
    /// interleaved, and the answer ends with `finish_reason: "tool_calls"`.
    pub fn push_tool_calls(&self, calls: &[(&str, &str, &str)]) {
        let calls = calls
            .iter()
            .map(|(id, name, args)| (id.to_string(), name.to_string(), args.to_string()))
            .collect();
        self.inner
            .settings
            .lock()
            .unwrap()
            .tool_calls
            .push_back(calls);
    }

    /// How long a Deepgram socket may receive nothing (no audio, no text frame) before the
    /// server closes it with 1011 (default 10 s, as Deepgram's NET-0001).
    pub fn set_deepgram_idle_timeout(&self, timeout: Duration) {
        self.inner.settings.lock().unwrap().deepgram_idle = timeout;
    }

    /// The ElevenLabs voice ids that exist; any other gets 404 `voice_not_found`. By default
    /// every voice id exists.
    pub fn set_elevenlabs_voices(&self, voices: &[&str]) {
        self.inner.settings.lock().unwrap().voices =
            Some(voices.iter().map(|v| v.to_string()).collect());
    }

    /// Queues a fault for the next request on `route`; requests pop faults in order, and with
    /// none queued the route behaves normally.
    pub fn push_fault(&self, route: Route, fault: Fault) {
        self.inner
            .faults
            .lock()
            .unwrap()
            .entry(route)
            .or_default()
            .push_back(fault);
    }

    /// Faults still queued on `route`.
    pub fn pending_faults(&self, route: Route) -> usize {
        self.inner
            .faults
            .lock()
            .unwrap()
            .get(&route)
            .map_or(0, |q| q.len())
    }

    /// Requests received on `route`, in order, including those answered with a fault or an
    /// error.
    pub fn requests(&self, route: Route) -> Vec<Recorded> {
        self.inner
            .log
            .lock()
            .unwrap()
            .get(&route)
            .cloned()
            .unwrap_or_default()
    }

    pub fn count(&self, route: Route) -> usize {
        self.inner
            .log
            .lock()
            .unwrap()
            .get(&route)
            .map_or(0, |l| l.len())
    }

    /// The most recent request on `route`.
    pub fn last(&self, route: Route) -> Option<Recorded> {
        self.inner
            .log
            .lock()
            .unwrap()
            .get(&route)
            .and_then(|l| l.last().cloned())
    }

    /// Streamed responses (HTTP bodies of chat streams and speech, Deepgram sockets) open now.
    pub fn open_streams(&self) -> usize {
        self.inner.open.load(Ordering::SeqCst)
    }

    /// Streamed responses the client closed before the server finished them.
    pub fn aborted_streams(&self) -> usize {
        self.inner.aborted.load(Ordering::SeqCst)
    }

    /// Like [`FakeProvider::aborted_streams`], for one route.
    pub fn aborted_on(&self, route: Route) -> usize {
        self.inner
            .aborted_by_route
            .lock()
            .unwrap()
            .get(&route)
            .copied()
            .unwrap_or(0)
    }

    /// Waits until a streamed response on `route` has been dropped by the client before
    /// completion (true, also when that happened before the call) or `timeout` passes (false).
    /// A short stream sent at full speed usually lands whole in socket buffers before a client
    /// can drop it: queue a `Fault::SlowStream` to make a client's abort observable.
    pub async fn wait_aborted(&self, route: Route, timeout: Duration) -> bool {
        self.wait_for(timeout, |f| f.aborted_on(route) > 0).await
    }

    /// Waits until `cond` holds (true) or `timeout` passes (false). `cond` is checked again
    /// after every request, Deepgram frame and stream open or close.
    pub async fn wait_for(&self, timeout: Duration, cond: impl Fn(&FakeProvider) -> bool) -> bool {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let notified = self.inner.changed.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if cond(self) {
                return true;
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                return cond(self);
            }
        }
    }
}

/// `chars` characters of speech: a 220 Hz sine at amplitude 0.3, 60 ms per character, as
/// signed 16-bit little-endian mono samples at `rate`.
pub fn speech_samples(chars: usize, rate: u32) -> Vec<i16> {
    let n = chars * (rate as usize) * (MS_PER_CHAR as usize) / 1000;
    (0..n)
        .map(|i| {
            let t = i as f64 / rate as f64;
            ((2.0 * std::f64::consts::PI * 220.0 * t).sin() * 0.3 * 32767.0).round() as i16
        })
        .collect()
}

/// The byte length of the pcm answer to `text` at `rate`.
pub fn speech_pcm_len(text: &str, rate: u32) -> usize {
    text.chars().count() * (rate as usize) * (MS_PER_CHAR as usize) / 1000 * 2
}

fn pcm_bytes(samples: &[i16]) -> Vec<u8> {
    samples.iter().flat_map(|s| s.to_le_bytes()).collect()
}

/// Splits bytes into the streamed chunks of the speech routes, one unit each.
fn audio_units(bytes: &[u8]) -> Vec<Vec<axum::body::Bytes>> {
    bytes
        .chunks(AUDIO_CHUNK_BYTES)
        .map(|c| vec![axum::body::Bytes::copy_from_slice(c)])
        .collect()
}

//! One simulated caller. It connects, starts a call, and per turn streams the clip in real time
//! followed by silence (a live microphone never stops) until the turn's `response_done` and the
//! end of its reply's audio, timing the first `audio_response` against the moment the speech
//! ended. An idle caller starts a call, sends nothing and hangs up when told.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use futures::{SinkExt, StreamExt};
use tokio::net::TcpStream;
use tokio::time::{sleep_until, timeout, Instant};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::{header::AUTHORIZATION, HeaderValue};
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::{Message, Utf8Bytes};
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};
use tokio_util::sync::CancellationToken;

use super::clip::Clip;
use super::frame::{Frame, ServerTimings};

type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// A greeting's first frame comes this soon after `call_started`, or there is no greeting.
const GREETING_WAIT: Duration = Duration::from_millis(500);
/// How long to wait for `call_ended` and the close handshake when hanging up.
const HANG_UP_GRACE: Duration = Duration::from_secs(5);

/// What one caller does.
#[derive(Debug, Clone)]
pub struct CallSpec {
    pub url: String,
    pub token: String,
    pub agent: Option<String>,
    pub start_at: Instant,
    pub turns: usize,
    /// The server's end-of-turn silence, unless `call_started` states its own.
    pub silence_ms: u64,
    /// Per turn, counted from the end of the clip; also bounds connecting and `start_call`.
    pub timeout: Duration,
}

/// Counters shared by all callers, for progress lines and the idle barrier.
#[derive(Debug, Default)]
pub struct Progress {
    pub connected: AtomicUsize,
    /// Calls that got `call_started`, or failed before it.
    pub settled: AtomicUsize,
    pub turns_done: AtomicUsize,
}

/// How a turn ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// `response_done` with this reason (`completed`, `no_speech`, `interrupted`, `error`...).
    Done(String),
    /// No `response_done` within the timeout.
    Timeout,
    ConnectionLost,
    /// The server ended the call (`call_ended`) during the turn.
    CallEnded,
}

impl Outcome {
    pub fn label(&self) -> &str {
        match self {
            Self::Done(reason) => reason,
            Self::Timeout => "timeout",
            Self::ConnectionLost => "connection_lost",
            Self::CallEnded => "call_ended",
        }
    }

    fn call_goes_on(&self) -> bool {
        matches!(self, Self::Done(_))
    }
}

#[derive(Debug, Clone)]
pub struct TurnResult {
    pub outcome: Outcome,
    /// First `audio_response` minus the real-time moment the clip's speech ended.
    pub voice_to_voice_ms: Option<f64>,
    /// First `audio_response` minus the send time of the chunk that completed the server's
    /// end-of-turn silence: the server's own share.
    pub turnaround_ms: Option<f64>,
    /// From the turn's `metrics` frame.
    pub server: ServerTimings,
}

#[derive(Debug, Default)]
pub struct CallResult {
    pub connected: bool,
    pub started: bool,
    /// The end-of-turn silence in force: the server's (`call_started`), else `--silence-ms`.
    pub silence_ms: Option<u64>,
    /// Why the call never got going (connect, upgrade or `start_call` failed).
    pub failure: Option<String>,
    pub turns: Vec<TurnResult>,
    /// `error` frames by code.
    pub errors: BTreeMap<String, u64>,
    /// How late each chunk went out against its real-time schedule.
    pub send_lag_ms: Vec<f64>,
    /// Server turns whose first reply frame came before the clip's speech had ended: the server
    /// cut the utterance (or a leftover of the previous one). Not taken as the caller's turn.
    pub early_turns: u64,
    /// `interrupted` frames: replies the server stopped because it took the caller's audio for
    /// a barge-in.
    pub interruptions: u64,
}

/// Runs a talking caller.
pub async fn talk(spec: CallSpec, clip: Arc<Clip>, progress: Arc<Progress>) -> CallResult {
    let mut caller = match Caller::start(&spec, &progress).await {
        Ok(c) => c,
        Err(failure) => return CallResult::failed(failure, &progress),
    };
    let started = caller.start_call(&spec).await;
    progress.settled.fetch_add(1, Ordering::Relaxed);
    if let Some(silence_ms) = started {
        if caller.hear_greeting(&clip, spec.timeout).await {
            for _ in 0..spec.turns {
                let goes_on = caller.turn(&clip, silence_ms, spec.timeout).await;
                progress.turns_done.fetch_add(1, Ordering::Relaxed);
                if !goes_on {
                    break;
                }
            }
        }
    }
    caller.hang_up().await;
    caller.result
}

/// Runs an idle caller: starts a call, sends nothing, hangs up once `hang_up` is cancelled.
pub async fn idle(
    spec: CallSpec,
    progress: Arc<Progress>,
    hang_up: CancellationToken,
) -> CallResult {
    let mut caller = match Caller::start(&spec, &progress).await {
        Ok(c) => c,
        Err(failure) => return CallResult::failed(failure, &progress),
    };
    let started = caller.start_call(&spec).await.is_some();
    progress.settled.fetch_add(1, Ordering::Relaxed);
    while started && !caller.closed && !caller.ended {
        tokio::select! {
            _ = hang_up.cancelled() => break,
            event = next_event(&mut caller.ws) => caller.on_background(event),
        }
    }
    caller.hang_up().await;
    caller.result
}

impl CallResult {
    fn failed(failure: String, progress: &Progress) -> Self {
        progress.settled.fetch_add(1, Ordering::Relaxed);
        Self {
            failure: Some(failure),
            ..Self::default()
        }
    }
}

/// A server frame and its arrival time; `None` once the socket is closed.
type Event = Option<(Frame, Instant)>;

/// The next parsable text frame, stamped with its arrival time. Cancel-safe.
async fn next_event(ws: &mut Ws) -> Event {
    loop {
        match ws.next().await {
            Some(Ok(Message::Text(text))) => {
                let at = Instant::now();
                if let Some(frame) = Frame::parse(text.as_str()) {
                    // RUST_LOG=voxwire::loadgen=trace shows every frame (audio cut short).
                    let shown = text
                        .as_str()
                        .char_indices()
                        .nth(160)
                        .map_or(text.len(), |(i, _)| i);
                    tracing::trace!(frame = &text.as_str()[..shown], "received");
                    return Some((frame, at));
                }
            }
            Some(Ok(Message::Close(_))) | Some(Err(_)) | None => return None,
            Some(Ok(_)) => {}
        }
    }
}

fn ms_since(from: Instant, to: Instant) -> f64 {
    if to >= from {
        (to - from).as_secs_f64() * 1000.0
    } else {
        -((from - to).as_secs_f64() * 1000.0)
    }
}

/// The caller's live microphone from `start`: chunk `k` covers `[k, k + 1) * chunk` and goes
/// out at `start + (k + 1) * chunk`, when a real microphone would have recorded it. It hears the
/// clip (then silence) when the caller talks, silence when they only listen.
struct Mic {
    start: Instant,
    chunk: Duration,
    next: u32,
    talking: bool,
}

impl Mic {
    fn new(chunk_ms: u64, talking: bool) -> Self {
        Self {
            start: Instant::now(),
            chunk: Duration::from_millis(chunk_ms),
            next: 0,
            talking,
        }
    }

    /// The `audio` frame of the next chunk.
    fn frame(&self, clip: &Clip) -> Utf8Bytes {
        if self.talking {
            clip.chunk(self.next as usize)
        } else {
            clip.silence.clone()
        }
    }

    fn due_of(&self, k: u32) -> Instant {
        self.start + self.chunk * (k + 1)
    }

    fn due(&self) -> Instant {
        self.due_of(self.next)
    }
}

struct Caller {
    ws: Ws,
    result: CallResult,
    /// Largest caller turn id so far. A new caller turn has a larger one; a greeting is turn 0.
    last_turn_id: u64,
    /// Server turn id to index in `result.turns`, for `metrics` after `response_done`.
    by_turn_id: HashMap<u64, usize>,
    closed: bool,
    /// The server sent `call_ended`.
    ended: bool,
}

impl Caller {
    /// Waits for the start time and connects.
    async fn start(spec: &CallSpec, progress: &Progress) -> Result<Self, String> {
        sleep_until(spec.start_at).await;
        match timeout(spec.timeout, connect(&spec.url, &spec.token)).await {
            Ok(Ok(ws)) => {
                progress.connected.fetch_add(1, Ordering::Relaxed);
                Ok(Self {
                    ws,
                    result: CallResult {
                        connected: true,
                        ..CallResult::default()
                    },
                    last_turn_id: 0,
                    by_turn_id: HashMap::new(),
                    closed: false,
                    ended: false,
                })
            }
            Ok(Err(e)) => Err(format!("connect: {e}")),
            Err(_) => Err("connect: timed out".into()),
        }
    }

    /// Sends `start_call` and waits for `call_started`. Returns the end-of-turn silence in force.
    async fn start_call(&mut self, spec: &CallSpec) -> Option<u64> {
        let mut start = serde_json::json!({
            "type": "start_call",
            "audio_format": {"encoding": "pcm16", "sample_rate": 16000},
        });
        if let Some(agent) = &spec.agent {
            start["agent"] = agent.clone().into();
        }
        if !self.send(start.to_string()).await {
            self.result.failure = Some("connection lost before call_started".into());
            return None;
        }
        let deadline = Instant::now() + spec.timeout;
        loop {
            let event = tokio::select! {
                event = next_event(&mut self.ws) => event,
                _ = sleep_until(deadline) => {
                    self.result.failure = Some("no call_started before the timeout".into());
                    return None;
                }
            };
            let Some((frame, _)) = event else {
                self.closed = true;
                self.result.failure = Some("connection lost before call_started".into());
                return None;
            };
            self.observe(&frame);
            match frame.kind.as_str() {
                "call_started" => {
                    let silence_ms = frame.silence_ms().unwrap_or(spec.silence_ms);
                    self.result.started = true;
                    self.result.silence_ms = Some(silence_ms);
                    return Some(silence_ms);
                }
                // Counted by code; the call did not start.
                "error" => return None,
                _ => {}
            }
        }
    }

    /// One turn. False when the call cannot go on (timeout, lost socket, call ended).
    async fn turn(&mut self, clip: &Clip, silence_ms: u64, limit: Duration) -> bool {
        let index = self.result.turns.len();
        self.result.turns.push(TurnResult {
            outcome: Outcome::Timeout,
            voice_to_voice_ms: None,
            turnaround_ms: None,
            server: ServerTimings::default(),
        });
        let mut mic = Mic::new(clip.chunk_ms, true);
        let end_chunk = clip.end_of_turn_chunk(silence_ms);
        let speech_end = mic.start + Duration::from_millis(clip.speech_end_ms);
        let deadline = mic.start + Duration::from_millis(clip.duration_ms) + limit;
        let mut end_sent = None;
        let mut turn_id = None;
        let mut first_audio = None;
        let mut reply_ms = 0.0;
        let outcome = loop {
            tokio::select! {
                biased;
                _ = sleep_until(mic.due()) => {
                    let k = mic.next;
                    let Some(sent) = self.speak(clip, &mut mic).await else {
                        break Outcome::ConnectionLost;
                    };
                    if k as usize == end_chunk {
                        end_sent = Some(sent);
                    }
                }
                event = next_event(&mut self.ws) => {
                    let Some((frame, at)) = event else {
                        self.closed = true;
                        break Outcome::ConnectionLost;
                    };
                    self.observe(&frame);
                    if self.ended {
                        break Outcome::CallEnded;
                    }
                    let Some(id) = frame.turn_id().filter(|_| frame.is_turn_output()) else {
                        continue;
                    };
                    if turn_id.is_none() && id > self.last_turn_id {
                        turn_id = Some(id);
                        self.last_turn_id = id;
                        self.by_turn_id.insert(id, index);
                    }
                    if turn_id != Some(id) {
                        continue;
                    }
                    if at < speech_end && frame.ends_speech() {
                        // The server ended this turn before the clip's speech was over: it cut
                        // the utterance. The caller's turn is the one that follows.
                        self.result.early_turns += 1;
                        self.by_turn_id.remove(&id);
                        turn_id = None;
                        continue;
                    }
                    match frame.kind.as_str() {
                        "audio_response" => {
                            first_audio.get_or_insert(at);
                            reply_ms += frame.audio_ms().unwrap_or(0.0);
                        }
                        "response_done" => {
                            break Outcome::Done(frame.reason().unwrap_or("unknown").to_string());
                        }
                        _ => {}
                    }
                }
                _ = sleep_until(deadline) => break Outcome::Timeout,
            }
        };
        let turn = &mut self.result.turns[index];
        if let Some(heard) = first_audio {
            // Not sent yet: the server answered before its stated silence had passed.
            let end_of_turn = end_sent.unwrap_or(mic.due_of(end_chunk as u32));
            turn.voice_to_voice_ms = Some(ms_since(speech_end, heard));
            turn.turnaround_ms = Some(ms_since(end_of_turn, heard));
        }
        let goes_on = outcome.call_goes_on();
        turn.outcome = outcome;
        if goes_on {
            if let Some(heard) = first_audio {
                let played = heard + Duration::from_secs_f64(reply_ms / 1000.0);
                return self.listen(clip, &mut mic, played).await;
            }
        }
        goes_on
    }

    /// The caller hears the reply out before speaking again (the server takes speech over a
    /// reply that is still playing for a barge-in); the microphone keeps sending silence.
    async fn listen(&mut self, clip: &Clip, mic: &mut Mic, until: Instant) -> bool {
        loop {
            tokio::select! {
                biased;
                _ = sleep_until(until) => return true,
                _ = sleep_until(mic.due()) => {
                    if self.speak(clip, mic).await.is_none() {
                        return false;
                    }
                }
                event = next_event(&mut self.ws) => {
                    self.on_background(event);
                    if self.closed || self.ended {
                        return false;
                    }
                }
            }
        }
    }

    /// Sends the microphone's next chunk, now that it is due; returns when it went out.
    async fn speak(&mut self, clip: &Clip, mic: &mut Mic) -> Option<Instant> {
        let now = Instant::now();
        self.result.send_lag_ms.push(ms_since(mic.due(), now));
        let sent = self.send(mic.frame(clip)).await;
        mic.next += 1;
        sent.then_some(now)
    }

    /// A greeted caller listens to the greeting (turn 0) before speaking, microphone on. The
    /// greeting's text follows `call_started` at once; nothing within `GREETING_WAIT` means the
    /// agent has none. False when the call cannot go on.
    async fn hear_greeting(&mut self, clip: &Clip, limit: Duration) -> bool {
        let mut mic = Mic::new(clip.chunk_ms, false);
        let probe_end = mic.start + GREETING_WAIT;
        let deadline = mic.start + limit;
        let mut greeted = false;
        let mut first_audio = None;
        let mut greeting_ms = 0.0;
        loop {
            tokio::select! {
                biased;
                // No greeting, or one that never finished: speak anyway.
                _ = sleep_until(if greeted { deadline } else { probe_end }) => return true,
                _ = sleep_until(mic.due()) => {
                    if self.speak(clip, &mut mic).await.is_none() {
                        return false;
                    }
                }
                event = next_event(&mut self.ws) => {
                    let Some((frame, at)) = event else {
                        self.closed = true;
                        return false;
                    };
                    self.observe(&frame);
                    if self.ended {
                        return false;
                    }
                    if frame.turn_id() != Some(0) || !frame.is_turn_output() {
                        continue;
                    }
                    greeted = true;
                    match frame.kind.as_str() {
                        "audio_response" => {
                            first_audio.get_or_insert(at);
                            greeting_ms += frame.audio_ms().unwrap_or(0.0);
                        }
                        "response_done" => break,
                        _ => {}
                    }
                }
            }
        }
        match first_audio {
            Some(heard) => {
                let played = heard + Duration::from_secs_f64(greeting_ms / 1000.0);
                self.listen(clip, &mut mic, played).await
            }
            None => true,
        }
    }

    /// A frame outside a turn (idle calls): counted, and the end of the call noticed.
    fn on_background(&mut self, event: Event) {
        match event {
            Some((frame, _)) => self.observe(&frame),
            None => self.closed = true,
        }
    }

    /// Bookkeeping every frame gets: errors by code, late `metrics`, the end of the call.
    fn observe(&mut self, frame: &Frame) {
        match frame.kind.as_str() {
            "error" => {
                *self
                    .result
                    .errors
                    .entry(frame.code().to_string())
                    .or_default() += 1;
            }
            "metrics" => {
                if let Some(&i) = frame.turn_id().and_then(|id| self.by_turn_id.get(&id)) {
                    self.result.turns[i].server = frame.timings();
                }
            }
            "call_ended" => self.ended = true,
            "interrupted" => self.result.interruptions += 1,
            _ => {}
        }
    }

    async fn send(&mut self, text: impl Into<Utf8Bytes>) -> bool {
        if self.closed {
            return false;
        }
        if self.ws.send(Message::Text(text.into())).await.is_err() {
            self.closed = true;
        }
        !self.closed
    }

    /// `end_call`, waits for `call_ended` (and the last turn's `metrics`), then closes.
    async fn hang_up(&mut self) {
        let deadline = Instant::now() + HANG_UP_GRACE;
        if self.result.started && !self.ended && self.send(r#"{"type":"end_call"}"#).await {
            while !self.closed && !self.ended {
                tokio::select! {
                    event = next_event(&mut self.ws) => self.on_background(event),
                    _ = sleep_until(deadline) => break,
                }
            }
        }
        if !self.closed {
            let _ = self.ws.close(None).await;
            let _ = timeout(deadline.saturating_duration_since(Instant::now()), async {
                while let Some(Ok(_)) = self.ws.next().await {}
            })
            .await;
        }
    }
}

async fn connect(url: &str, token: &str) -> Result<Ws, String> {
    let mut request = url.into_client_request().map_err(|e| e.to_string())?;
    let bearer = HeaderValue::from_str(&format!("Bearer {token}")).map_err(|e| e.to_string())?;
    request.headers_mut().insert(AUTHORIZATION, bearer);
    // Small buffers: a thousand callers must cost the generator little. Writes go out at once.
    let config = WebSocketConfig::default()
        .read_buffer_size(16 * 1024)
        .write_buffer_size(0);
    let (ws, _) = tokio_tungstenite::connect_async_with_config(request, Some(config), true)
        .await
        .map_err(|e| e.to_string())?;
    Ok(ws)
}

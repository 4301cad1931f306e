//! One turn of a conversation: transcribe the caller (unless typed), stream the reply from the
//! language model, and speak it sentence by sentence while it is still being written. Everything
//! stops when the turn's cancellation token fires. Events go to whoever runs the turn (the call
//! actor or the push-to-talk route), tagged with the turn id.
//!
//! Tools: when the agent has tools, the model is offered them; a reply that ends with tool
//! calls has them run here, one after the other (the call and its result go out as events and
//! into the conversation), and the model is asked again, at most [`MAX_TOOL_ROUNDS`] times a
//! turn (the last time without tools, so it answers in words). Whatever text each round
//! writes is spoken as it comes. A reply prepared ahead (speculation) runs no tool until the
//! caller's turn is known to be over. Cancelling the turn drops a tool call in flight.

use std::sync::Arc;
use tokio::time::Instant;

use futures::future::BoxFuture;
use futures::StreamExt;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::warn;

use crate::agents::Agent;
use crate::audio::resample::StreamResampler;
use crate::audio::ENGINE_RATE;
use crate::engines::cpu::{self, FirstWords, Urgent};
use crate::engines::llm::{
    ChatMessage, ChatRequest, Role, TokenCount, TokenTap, ToolCall, ToolDef, ToolOffer,
};
use crate::engines::stt::Transcription;
use crate::engines::tts::piece::{speak_piece, Piece};
use crate::engines::tts::text::SentenceSplitter;
use crate::engines::{EngineError, Engines};
use crate::flow::{FlowInput, FlowState, Step, Then};
use crate::protocol::TurnTimings;

/// A call's place in its agent's flow, shared by its turns (one at a time moves it).
pub type SharedFlow = Arc<std::sync::Mutex<FlowState>>;

/// What the caller said.
pub enum TurnInput {
    /// 16 kHz mono samples of one utterance.
    Audio(Arc<[f32]>),
    /// An utterance a streaming engine transcribed as it was spoken: its final text, and the
    /// audio to transcribe again if that fails.
    Live {
        audio: Arc<[f32]>,
        transcript: BoxFuture<'static, Result<Transcription, EngineError>>,
    },
    /// A typed message.
    Text(String),
    /// Words the agent says without asking the model (the greeting, an operator's line).
    Say(String),
    /// The live voice of the operator holding the call, 16 kHz chunks as they are spoken: sent
    /// on as reply audio, then transcribed for history when the sender is dropped.
    Voice(mpsc::Receiver<Vec<f32>>),
    /// A complete keypad entry (`12#`): the model reads it as `Pressed keys: 1 2 #`.
    Keys(String),
    /// The agent's flow starts (the call's first words), after `notice` if there is one.
    FlowStart { notice: Option<String> },
    /// The caller said nothing for as long as the flow's node waits.
    FlowSilence,
}

/// Longest stretch of an operator's live voice kept as one line (60 s at 16 kHz); past that
/// the line ends and the next audio starts another.
pub const MAX_VOICE_SAMPLES: usize = 60 * crate::audio::ENGINE_RATE as usize;

#[derive(Debug)]
pub enum TurnEvent {
    /// The caller's words (final).
    Transcript(String),
    /// The audio held no words; the turn ends here.
    NoSpeech,
    /// Next piece of the reply text.
    Delta(String),
    /// Reply audio at the TTS engine's rate; `sentence` is set on the first chunk of each sentence.
    Audio {
        samples: Vec<f32>,
        sentence: Option<String>,
    },
    /// The reply is complete.
    Done {
        reply: String,
        timings: TurnTimings,
        /// The language model's token counts, when it reports them.
        tokens: Option<TokenCount>,
    },
    /// An engine failed; the turn ends here.
    Failed { error: EngineError },
    /// The model called a tool; it runs now.
    ToolCall(ToolCall),
    /// The tool answered (`ms`: how long it took).
    ToolResult {
        call: ToolCall,
        outcome: crate::tools::ToolOutcome,
        ms: f64,
    },
    /// The flow moved on; sent before anything the step says.
    Flow(FlowStep),
}

/// A step of the agent's flow, as the call acts on it and the event log keeps it.
#[derive(Debug, Clone)]
pub struct FlowStep {
    /// The nodes entered, in order.
    pub path: Vec<String>,
    /// The node now waiting for the caller, if any.
    pub node: Option<String>,
    /// A variable captured, and its value.
    pub captured: Option<(String, String)>,
    pub then: Then,
}

/// The most times one turn runs the tools the model called before asking it again.
pub const MAX_TOOL_ROUNDS: usize = 3;

/// Everything a turn needs, captured when it starts.
pub struct TurnRequest {
    pub engines: Engines,
    pub agent: Arc<Agent>,
    pub system: String,
    pub session_id: String,
    /// The conversation before this turn.
    pub history: Vec<ChatMessage>,
    pub input: TurnInput,
    /// End of the caller's turn: latencies are measured from here.
    pub anchor: Instant,
    /// False: only transcribe the caller and end with an empty `Done` (the call is taken over).
    pub answer: bool,
    /// True once the reply may act: tools run only then (a reply prepared ahead waits until
    /// the caller's turn is over; if that never comes, the turn is cancelled).
    pub live: tokio::sync::watch::Receiver<bool>,
    /// The agent's flow, when it has one: it decides each reply, and the model answers only
    /// at its `llm` nodes.
    pub flow: Option<SharedFlow>,
}

/// Sends events for one turn; `false` once nobody listens any more.
#[derive(Clone)]
pub struct TurnSink {
    pub turn_id: u64,
    pub tx: mpsc::Sender<(u64, TurnEvent)>,
}

impl TurnSink {
    async fn send(&self, event: TurnEvent) -> bool {
        self.tx.send((self.turn_id, event)).await.is_ok()
    }
}

/// Milliseconds since `t`, to 0.1 ms.
pub fn ms_since(t: Instant) -> f64 {
    (t.elapsed().as_secs_f64() * 1000.0 * 10.0).round() / 10.0
}

/// Runs a turn to completion, failure or cancellation. Cancellation sends nothing further.
pub async fn run_turn(req: TurnRequest, cancel: CancellationToken, sink: TurnSink) {
    tokio::select! {
        _ = cancel.cancelled() => {}
        _ = run(req, cancel.clone(), sink) => {}
    }
}

async fn run(mut req: TurnRequest, cancel: CancellationToken, sink: TurnSink) {
    let mut timings = TurnTimings::default();
    // Until its first audio the turn is what a caller waits for: work that can wait steps
    // aside (dropped on any way out before that).
    let urgent = cpu::gate().begin();
    let input = std::mem::replace(&mut req.input, TurnInput::FlowSilence);
    let (user_text, said) = match input {
        TurnInput::Say(text) => {
            let with = (req.engines.clone(), req.agent.voice.clone(), req.anchor);
            return say(with, &cancel, &sink, text, urgent).await;
        }
        TurnInput::Voice(rx) => return voice(&req.engines, &cancel, &sink, rx).await,
        TurnInput::FlowStart { notice } => {
            let Some(step) = flow_step(&req.flow, None) else {
                return;
            };
            let mut step = step;
            if let Some(n) = notice.filter(|n| !n.is_empty()) {
                step.say = format!("{n} {}", step.say).trim().to_string();
            }
            let (with, report, text) = step_of(&req, step);
            return speak_step(with, report, text, &cancel, &sink, urgent).await;
        }
        TurnInput::FlowSilence => {
            let Some(step) = flow_step(&req.flow, Some(FlowInput::Silence)) else {
                return;
            };
            let (with, report, text) = step_of(&req, step);
            return speak_step(with, report, text, &cancel, &sink, urgent).await;
        }
        TurnInput::Keys(entry) => (crate::call::keys::turn_text(&entry), FlowInput::Keys(entry)),
        TurnInput::Text(t) => (t.clone(), FlowInput::Said(t)),
        input @ (TurnInput::Audio(_) | TurnInput::Live { .. }) => {
            let started = Instant::now();
            let result = transcribe(&req.engines, input, &cancel).await;
            timings.stt_ms = Some(ms_since(started));
            match result {
                Ok(t) if t.text.trim().is_empty() => {
                    sink.send(TurnEvent::NoSpeech).await;
                    return;
                }
                Ok(t) => {
                    let text = t.text.trim().to_string();
                    (text.clone(), FlowInput::Said(text))
                }
                Err(error) => {
                    sink.send(TurnEvent::Failed { error }).await;
                    return;
                }
            }
        }
    };
    if !sink.send(TurnEvent::Transcript(user_text.clone())).await {
        return;
    }
    if !req.answer {
        timings.total_ms = ms_since(req.anchor);
        sink.send(TurnEvent::Done {
            reply: String::new(),
            timings,
            tokens: None,
        })
        .await;
        return;
    }
    let mut system = req.system.clone();
    if let Some(step) = flow_step(&req.flow, Some(said)) {
        let Then::Answer { prompt } = &step.then else {
            let (with, report, text) = step_of(&req, step);
            return speak_step(with, report, text, &cancel, &sink, urgent).await;
        };
        if !prompt.is_empty() {
            system = format!("{system}\n\n{prompt}");
        }
        let report = flow_report(&req.flow, &step);
        if !step.path.is_empty() && !sink.send(TurnEvent::Flow(report)).await {
            return;
        }
    }
    let mut messages = req.history;
    messages.push(ChatMessage::new(Role::User, user_text));
    let tap = TokenTap::default();
    let first_words = FirstWords::default();
    let request = ChatRequest {
        session_id: req.session_id.clone(),
        system,
        messages,
        max_tokens: req.agent.max_tokens,
        temperature: req.agent.temperature,
        json: false,
        tokens: Some(tap.clone()),
        tools: None,
        first_words: Some(first_words.clone()),
    };
    let (sentence_tx, sentence_rx) = mpsc::channel::<Piece>(32);
    let anchor = req.anchor;
    let writer = Writer {
        engines: &req.engines,
        agent: &req.agent,
        cancel: &cancel,
        sink: &sink,
        anchor,
        first_words: first_words.clone(),
    };
    let llm = writer.write(request, sentence_tx, req.live, &tap);
    let tts = speak_reply(
        (&req.engines, req.agent.voice.clone(), anchor),
        &cancel,
        &sink,
        sentence_rx,
        Some(urgent),
    );
    let (llm, tts) = tokio::join!(llm, tts);
    let outcome =
        llm.and_then(|(reply, first, total)| tts.map(|audio| (reply, first, total, audio)));
    match outcome {
        Ok((reply, first_token, llm_ms, first_audio)) => {
            timings.llm_first_token_ms = first_token;
            timings.llm_ms = Some(llm_ms);
            timings.tts_first_audio_ms = first_audio;
            timings.voice_to_voice_ms = first_audio;
            timings.total_ms = ms_since(anchor);
            sink.send(TurnEvent::Done {
                reply,
                timings,
                tokens: tap.take(),
            })
            .await;
        }
        Err(error) => {
            sink.send(TurnEvent::Failed { error }).await;
        }
    }
}

/// Moves the call's flow: `None` starts it. Nothing when the agent has no flow.
fn flow_step(flow: &Option<SharedFlow>, input: Option<FlowInput>) -> Option<Step> {
    let mut state = flow.as_ref()?.lock().unwrap_or_else(|e| e.into_inner());
    let now = jiff::Timestamp::now();
    Some(match input {
        None => state.begin(now),
        Some(input) => state.input(input, now),
    })
}

fn flow_report(flow: &Option<SharedFlow>, step: &Step) -> FlowStep {
    let node = flow.as_ref().and_then(|f| {
        let state = f.lock().unwrap_or_else(|e| e.into_inner());
        state.node().map(str::to_string)
    });
    FlowStep {
        path: step.path.clone(),
        node,
        captured: step.captured.clone(),
        then: step.then.clone(),
    }
}

/// Says what a flow's step says; the call acts on its `then` (see the actor).
async fn speak_step(
    (engines, voice, anchor): (Engines, Option<String>, Instant),
    report: FlowStep,
    text: String,
    cancel: &CancellationToken,
    sink: &TurnSink,
    urgent: Urgent,
) {
    if !sink.send(TurnEvent::Flow(report)).await {
        return;
    }
    say((engines, voice, anchor), cancel, sink, text, urgent).await
}

/// What [`speak_step`] needs of the request, taken before it is awaited.
fn step_of(
    req: &TurnRequest,
    step: Step,
) -> ((Engines, Option<String>, Instant), FlowStep, String) {
    let report = flow_report(&req.flow, &step);
    (
        (req.engines.clone(), req.agent.voice.clone(), req.anchor),
        report,
        step.say,
    )
}

/// The caller's words: the live transcription's final text, or the whole utterance
/// transcribed now (also when the live one failed, so nothing is lost).
async fn transcribe(
    engines: &Engines,
    input: TurnInput,
    cancel: &CancellationToken,
) -> Result<Transcription, EngineError> {
    let audio = match input {
        TurnInput::Live { audio, transcript } => match transcript.await {
            Err(EngineError::Cancelled) => return Err(EngineError::Cancelled),
            Err(error) => {
                warn!(%error, "live transcription failed; transcribing the utterance again");
                audio
            }
            ok => return ok,
        },
        TurnInput::Audio(audio) => audio,
        TurnInput::Text(_)
        | TurnInput::Say(_)
        | TurnInput::Voice(_)
        | TurnInput::Keys(_)
        | TurnInput::FlowStart { .. }
        | TurnInput::FlowSilence => return Ok(Transcription::default()),
    };
    engines.stt.transcribe(audio, cancel.clone()).await
}

/// Speaks fixed text as a reply.
async fn say(
    (engines, voice, anchor): (Engines, Option<String>, Instant),
    cancel: &CancellationToken,
    sink: &TurnSink,
    text: String,
    urgent: Urgent,
) {
    if !sink.send(TurnEvent::Delta(text.clone())).await {
        return;
    }
    let (tx, rx) = mpsc::channel(32);
    let sentences = crate::engines::tts::text::split_sentences(&text);
    let count = sentences.len();
    for (i, sentence) in sentences.into_iter().enumerate() {
        let _ = tx.send(Piece::new(sentence, i + 1 < count)).await;
    }
    drop(tx);
    match speak_reply((&engines, voice, anchor), cancel, sink, rx, Some(urgent)).await {
        Ok(first_audio) => {
            let timings = TurnTimings {
                tts_first_audio_ms: first_audio,
                total_ms: ms_since(anchor),
                ..TurnTimings::default()
            };
            sink.send(TurnEvent::Done {
                reply: text,
                timings,
                tokens: None,
            })
            .await;
        }
        Err(error) => {
            sink.send(TurnEvent::Failed { error }).await;
        }
    }
}

/// Speaks an operator's live voice as it arrives (at the text-to-speech rate, like any reply),
/// then transcribes it: the text is what history keeps of the line.
async fn voice(
    engines: &Engines,
    cancel: &CancellationToken,
    sink: &TurnSink,
    mut rx: mpsc::Receiver<Vec<f32>>,
) {
    let started = Instant::now();
    let rate = engines.tts.sample_rate();
    let mut resampler = match StreamResampler::new(ENGINE_RATE, rate) {
        Ok(r) => r,
        Err(e) => {
            let error = EngineError::failed("voice", format!("cannot play it: {e}"));
            sink.send(TurnEvent::Failed { error }).await;
            return;
        }
    };
    let mut kept: Vec<f32> = Vec::new();
    let mut first_audio = None;
    let mut forward = |chunk: Vec<f32>, kept: &mut Vec<f32>| {
        let room = MAX_VOICE_SAMPLES.saturating_sub(kept.len());
        kept.extend_from_slice(&chunk[..chunk.len().min(room)]);
        resampler.push(&chunk)
    };
    while let Some(chunk) = rx.recv().await {
        let samples = forward(chunk, &mut kept);
        if !samples.is_empty() {
            first_audio.get_or_insert_with(|| ms_since(started));
            let audio = TurnEvent::Audio {
                samples,
                sentence: None,
            };
            if !sink.send(audio).await {
                return;
            }
        }
        if kept.len() >= MAX_VOICE_SAMPLES {
            // The line is long enough: what is queued goes with it, the next audio starts a
            // new one.
            rx.close();
        }
    }
    let tail = resampler.finish();
    if !tail.is_empty()
        && !sink
            .send(TurnEvent::Audio {
                samples: tail,
                sentence: None,
            })
            .await
    {
        return;
    }
    let text = match engines.stt.transcribe(kept.into(), cancel.clone()).await {
        Ok(t) => t.text.trim().to_string(),
        Err(EngineError::Cancelled) => return,
        Err(error) => {
            warn!(%error, "cannot transcribe the operator's voice");
            String::new()
        }
    };
    let text = if text.is_empty() {
        INAUDIBLE.to_string()
    } else {
        text
    };
    if !sink.send(TurnEvent::Delta(text.clone())).await {
        return;
    }
    let timings = TurnTimings {
        stt_ms: None,
        tts_first_audio_ms: first_audio,
        total_ms: ms_since(started),
        ..TurnTimings::default()
    };
    sink.send(TurnEvent::Done {
        reply: text,
        timings,
        tokens: None,
    })
    .await;
}

/// What history keeps of an operator's live voice in which no words were recognised.
pub const INAUDIBLE: &str = "[inaudible]";

/// A reply's text so far, when its first token came, and its token counts.
#[derive(Default)]
struct Written {
    reply: String,
    first_token: Option<f64>,
    tokens: Option<TokenCount>,
}

/// What writing a reply needs.
struct Writer<'a> {
    engines: &'a Engines,
    agent: &'a Agent,
    cancel: &'a CancellationToken,
    sink: &'a TurnSink,
    anchor: Instant,
    /// Marked written once the reply's first piece goes to the voice.
    first_words: FirstWords,
}

impl Writer<'_> {
    /// Writes the reply, running the tools it calls between rounds (see the module header).
    /// Returns its whole text, when the first token came and how long it all took. The token
    /// counts left in `tap` are those of every round, added up.
    async fn write(
        &self,
        mut request: ChatRequest,
        sentences: mpsc::Sender<Piece>,
        mut live: tokio::sync::watch::Receiver<bool>,
        tap: &TokenTap,
    ) -> Result<(String, Option<f64>, f64), EngineError> {
        let started = Instant::now();
        let mut out = Written::default();
        let result = self
            .rounds(&mut request, &sentences, &mut live, tap, &mut out)
            .await;
        if let Some(t) = out.tokens.take() {
            tap.set(t);
        }
        result.map(|()| (out.reply, out.first_token, ms_since(started)))
    }

    /// The rounds of [`Self::write`]; what was written so far is in `out`, also on failure.
    async fn rounds(
        &self,
        request: &mut ChatRequest,
        sentences: &mpsc::Sender<Piece>,
        live: &mut tokio::sync::watch::Receiver<bool>,
        tap: &TokenTap,
        out: &mut Written,
    ) -> Result<(), EngineError> {
        let defs: Option<std::sync::Arc<[ToolDef]>> = crate::tools::offered(&self.agent.tools);
        for round in 0..=MAX_TOOL_ROUNDS {
            let offer = defs
                .clone()
                .filter(|_| round < MAX_TOOL_ROUNDS)
                .map(ToolOffer::new);
            request.tools = offer.clone();
            let lead = if out.reply.is_empty() { "" } else { " " };
            let (text, first) = self.write_round(request.clone(), sentences, lead).await?;
            out.first_token = out.first_token.or(first);
            if !text.is_empty() {
                out.reply.push_str(lead);
                out.reply.push_str(&text);
            }
            if let Some(t) = tap.take() {
                let sum = out.tokens.get_or_insert_with(|| TokenCount {
                    engine: t.engine.clone(),
                    ..TokenCount::default()
                });
                sum.prompt += t.prompt;
                sum.completion += t.completion;
            }
            let calls = offer.map(|o| o.take_calls()).unwrap_or_default();
            if calls.is_empty() {
                break;
            }
            if live.wait_for(|live| *live).await.is_err() {
                return Err(EngineError::Cancelled);
            }
            request
                .messages
                .push(ChatMessage::tool_calls(text, calls.clone()));
            for call in calls {
                if !self.sink.send(TurnEvent::ToolCall(call.clone())).await {
                    return Err(EngineError::Cancelled);
                }
                let at = Instant::now();
                let outcome =
                    crate::tools::run(&self.agent.tools, &call, &request.session_id).await;
                if let Some(error) = outcome.error {
                    warn!(tool = %call.name, error, "a tool call failed; the model is told");
                }
                request.messages.push(ChatMessage::tool_result(
                    call.id.clone(),
                    outcome.content.clone(),
                ));
                let result = TurnEvent::ToolResult {
                    call,
                    outcome,
                    ms: ms_since(at),
                };
                if !self.sink.send(result).await {
                    return Err(EngineError::Cancelled);
                }
            }
        }
        Ok(())
    }

    /// Streams one round of reply text, handing complete sentences to the speaker as they
    /// form; `lead` goes before its first piece of text (a space between rounds).
    async fn write_round(
        &self,
        request: ChatRequest,
        sentences: &mpsc::Sender<Piece>,
        lead: &str,
    ) -> Result<(String, Option<f64>), EngineError> {
        let mut stream = self.engines.llm.stream(request, self.cancel.clone());
        let mut splitter = SentenceSplitter::new();
        let mut reply = String::new();
        let mut first_token = None;
        while let Some(delta) = stream.next().await {
            let delta = delta?;
            if delta.is_empty() {
                continue;
            }
            let anchor = self.anchor;
            first_token.get_or_insert_with(|| ms_since(anchor));
            let delta = if reply.is_empty() {
                format!("{lead}{delta}")
            } else {
                delta
            };
            reply.push_str(&delta);
            if !self.sink.send(TurnEvent::Delta(delta.clone())).await {
                return Err(EngineError::Cancelled);
            }
            for sentence in splitter.push(&delta) {
                if sentences.send(Piece::new(sentence, true)).await.is_err() {
                    return Err(EngineError::Cancelled);
                }
                self.first_words.written();
            }
        }
        if let Some(rest) = splitter.finish() {
            let _ = sentences.send(Piece::new(rest, false)).await;
            self.first_words.written();
        }
        Ok((reply.trim().to_string(), first_token))
    }
}

/// Audio a later piece keeps in hand: it waits for other turns' first words only while the
/// caller has more than this still to hear of the pieces before it.
const LATER_PIECE_MARGIN: std::time::Duration = std::time::Duration::from_millis(800);

/// Speaks the pieces in order as they arrive; returns when the first audio was ready. `urgent`
/// is dropped at the first audio; with a local voice, later pieces let other turns' first
/// words go first while the caller has enough audio in hand (see `engines::cpu`).
async fn speak_reply(
    (engines, voice, anchor): (&Engines, Option<String>, Instant),
    cancel: &CancellationToken,
    sink: &TurnSink,
    mut sentences: mpsc::Receiver<Piece>,
    mut urgent: Option<Urgent>,
) -> Result<Option<f64>, EngineError> {
    let mut first_audio = None;
    let mut after_open = false;
    // When the first audio went out, and how much audio has gone out since.
    let mut playing: Option<(Instant, usize)> = None;
    let rate = engines.tts.sample_rate().max(1) as f64;
    // Only a voice made on this machine's cores competes with other turns' first words.
    let local = engines.tts.usage_label() == "local";
    while let Some(piece) = sentences.recv().await {
        if let Some((since, samples)) = playing.filter(|_| local) {
            let ahead = std::time::Duration::from_secs_f64(samples as f64 / rate)
                .saturating_sub(since.elapsed());
            let spare = ahead.saturating_sub(LATER_PIECE_MARGIN);
            if !spare.is_zero() {
                cpu::gate().quiet(spare.min(cpu::TAIL_PAUSE)).await;
            }
        }
        let tts = &*engines.tts;
        let mut audio = speak_piece(tts, &piece, after_open, voice.clone(), cancel.clone());
        after_open = piece.open;
        let mut label = Some(piece.text);
        while let Some(chunk) = audio.next().await {
            let samples = chunk?;
            if samples.is_empty() {
                continue;
            }
            first_audio.get_or_insert_with(|| ms_since(anchor));
            drop(urgent.take());
            playing.get_or_insert_with(|| (Instant::now(), 0)).1 += samples.len();
            if !sink
                .send(TurnEvent::Audio {
                    samples,
                    sentence: label.take(),
                })
                .await
            {
                return Err(EngineError::Cancelled);
            }
        }
    }
    Ok(first_audio)
}

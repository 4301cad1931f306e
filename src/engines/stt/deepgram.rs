//! Deepgram's streaming speech-to-text: one live WebSocket per utterance. Audio goes up as
//! 16-bit PCM frames while the caller speaks; interim results come back as the whole utterance
//! so far; at the end `Finalize` and `CloseStream` flush the last words. A whole utterance
//! (push-to-talk, or the fallback after a live error) uses the same socket, sent at once.
//!
//! Connecting is retried like an HTTP request (connection errors, timeouts, 408, 429, 5xx, with
//! backoff or the provider's `Retry-After`): no audio was used yet. A socket that breaks after
//! that, or stays silent past the timeouts once the utterance ended, is an error, never a
//! shorter transcript; the caller transcribes the whole utterance again. Cancelling, or
//! dropping the live transcription, closes the socket at once. `wire` holds the messages.

use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use futures::stream::SplitSink;
use futures::{FutureExt, SinkExt, StreamExt};
use reqwest::Url;
use tokio::net::TcpStream;
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::handshake::client::Request;
use tokio_tungstenite::tungstenite::http::{header, HeaderValue};
use tokio_tungstenite::tungstenite::{Error as WsError, Message};
use tokio_tungstenite::{connect_async, MaybeTlsStream, WebSocketStream};
use tokio_util::sync::{CancellationToken, DropGuard};
use tracing::{debug, warn};

mod wire;

use self::wire::{control, parse_reply, rejected, to_pcm16, Reply, Utterance};
use super::{LiveTranscription, SpeechToText, Transcription};
use crate::audio::ENGINE_RATE;
use crate::engines::http::{ApiKey, Policy};
use crate::engines::providers::{ProviderKind, ProviderSpec};
use crate::engines::{EngineError, EngineInitError};

/// Samples per frame when a whole utterance is sent: 100 ms.
const FRAME: usize = ENGINE_RATE as usize / 10;
/// A `KeepAlive` goes up after this long without sending: Deepgram closes a socket that gets
/// nothing for 10 s.
const KEEPALIVE: Duration = Duration::from_secs(4);
/// How long a cancelled socket gets to send its close frame before it is dropped.
const CLOSE_GRACE: Duration = Duration::from_millis(200);

type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

pub struct DeepgramStt {
    inner: Arc<Inner>,
}

struct Inner {
    /// e.g. `deepgram (nova-3)`.
    label: String,
    /// The provider's name in `providers.toml`, for usage.
    provider: String,
    /// Names the engine in errors, e.g. `deepgram speech-to-text`.
    engine: String,
    url: String,
    key: Option<ApiKey>,
    policy: Policy,
}

impl DeepgramStt {
    /// The engine for provider `name` of `providers.toml`.
    pub fn new(name: &str, spec: &ProviderSpec) -> Result<Self, EngineInitError> {
        let err = |reason: String| EngineInitError {
            kind: "speech-to-text",
            name: name.to_string(),
            reason,
        };
        if spec.kind != ProviderKind::Deepgram {
            return Err(err(format!(
                "it is a {:?} provider, not deepgram",
                spec.kind
            )));
        }
        let model = spec
            .stt_model
            .as_deref()
            .ok_or_else(|| err("it sets no stt_model".into()))?;
        if let (None, Some(var)) = (&spec.api_key, &spec.api_key_env) {
            return Err(err(format!("no API key: {var} is not set")));
        }
        let mut url = Url::parse(&format!("{}/listen", spec.base()))
            .map_err(|e| err(format!("bad base_url: {e}")))?;
        {
            let mut query = url.query_pairs_mut();
            query.append_pair("model", model);
            if let Some(language) = &spec.language {
                query.append_pair("language", language);
            }
            let rate = ENGINE_RATE.to_string();
            query.extend_pairs([
                ("encoding", "linear16"),
                ("sample_rate", rate.as_str()),
                ("channels", "1"),
                ("interim_results", "true"),
                ("punctuate", "true"),
                ("smart_format", "true"),
            ]);
        }
        let inner = Inner {
            label: format!("{name} ({model})"),
            provider: name.to_string(),
            engine: format!("{name} speech-to-text"),
            url: url.into(),
            key: spec.api_key.clone(),
            policy: spec.policy(),
        };
        inner.request().map_err(|e| err(e.to_string()))?;
        Ok(Self {
            inner: Arc::new(inner),
        })
    }
}

/// Starts one utterance's socket; interims go to `interims` when given.
fn start(
    inner: Arc<Inner>,
    interims: Option<mpsc::Sender<String>>,
    cancel: &CancellationToken,
) -> Live {
    let stop = cancel.child_token();
    let (audio, commands) = mpsc::unbounded_channel();
    let (done, result) = oneshot::channel();
    let engine = inner.engine.clone();
    let task_stop = stop.clone();
    tokio::spawn(async move {
        let outcome = run(&inner, commands, interims, &task_stop).await;
        if let Err(e) = &outcome {
            debug!(engine = %inner.engine, error = %e, "live transcription ended");
        }
        let _ = done.send(outcome);
    });
    Live {
        engine,
        audio,
        result,
        guard: stop.drop_guard(),
    }
}

impl SpeechToText for DeepgramStt {
    fn name(&self) -> String {
        self.inner.label.clone()
    }

    fn usage_label(&self) -> String {
        self.inner.provider.clone()
    }

    fn transcribe(
        &self,
        audio: Arc<[f32]>,
        cancel: CancellationToken,
    ) -> BoxFuture<'static, Result<Transcription, EngineError>> {
        if audio.is_empty() {
            return futures::future::ready(Ok(Transcription::default())).boxed();
        }
        let inner = self.inner.clone();
        async move {
            let mut live = Box::new(start(inner, None, &cancel));
            for frame in audio.chunks(FRAME) {
                live.push(frame);
            }
            live.finish().await
        }
        .boxed()
    }

    fn listen(
        &self,
        interims: mpsc::Sender<String>,
        cancel: CancellationToken,
    ) -> Option<Box<dyn LiveTranscription>> {
        Some(Box::new(start(self.inner.clone(), Some(interims), &cancel)))
    }
}

enum Command {
    Audio(Vec<u8>),
    Finish,
}

/// The caller's end of one utterance's socket. Dropping it closes the socket.
struct Live {
    engine: String,
    audio: mpsc::UnboundedSender<Command>,
    result: oneshot::Receiver<Result<Transcription, EngineError>>,
    guard: DropGuard,
}

impl LiveTranscription for Live {
    fn push(&mut self, audio: &[f32]) {
        if !audio.is_empty() {
            // A send fails only when the socket already failed; `finish` reports why.
            let _ = self.audio.send(Command::Audio(to_pcm16(audio)));
        }
    }

    fn finish(self: Box<Self>) -> BoxFuture<'static, Result<Transcription, EngineError>> {
        let Live {
            engine,
            audio,
            result,
            guard,
        } = *self;
        let _ = audio.send(Command::Finish);
        async move {
            // Dropping this future before it ends closes the socket too.
            let _guard = guard;
            result.await.unwrap_or_else(|_| {
                Err(EngineError::failed(engine, "the transcription task ended"))
            })
        }
        .boxed()
    }
}

/// One utterance: connect, send audio while reading results, flush at the end.
async fn run(
    inner: &Inner,
    mut commands: mpsc::UnboundedReceiver<Command>,
    interims: Option<mpsc::Sender<String>>,
    stop: &CancellationToken,
) -> Result<Transcription, EngineError> {
    let ws = inner.connect(stop).await?;
    let (mut sink, mut replies) = ws.split();
    let mut utterance = Utterance::default();
    let mut finishing = false;
    // The final result is in once the provider answered `Finalize` or sent its metadata.
    let (mut flushed, mut heard) = (false, false);
    let mut last_sent = Instant::now();
    let mut keepalive = tokio::time::interval(KEEPALIVE);
    let (first, stall) = (inner.policy.timeout, inner.policy.stream_timeout);
    loop {
        // Once the utterance ended, each reply must come in time: the first within the
        // response timeout, the others within the stream timeout.
        let wait = if heard { stall } else { first };
        let reply = async {
            if finishing {
                tokio::time::timeout(wait, replies.next()).await.ok()
            } else {
                Some(replies.next().await)
            }
        };
        tokio::select! {
            biased;
            _ = stop.cancelled() => {
                close(&mut sink).await;
                return Err(EngineError::Cancelled);
            }
            command = commands.recv(), if !finishing => {
                let message = match command {
                    Some(Command::Audio(pcm)) => Message::binary(pcm),
                    Some(Command::Finish) => {
                        finishing = true;
                        inner.send(&mut sink, control("Finalize"), stop).await?;
                        control("CloseStream")
                    }
                    None => {
                        close(&mut sink).await;
                        return Err(EngineError::Cancelled);
                    }
                };
                inner.send(&mut sink, message, stop).await?;
                last_sent = Instant::now();
            }
            _ = keepalive.tick(), if !finishing => {
                if last_sent.elapsed() >= KEEPALIVE {
                    inner.send(&mut sink, control("KeepAlive"), stop).await?;
                    last_sent = Instant::now();
                }
            }
            reply = reply => {
                let text = match reply {
                    None if heard => {
                        let ms = stall.as_millis();
                        return Err(inner.fail(format!("the stream stalled: nothing for {ms} ms"), true));
                    }
                    None => {
                        let ms = first.as_millis();
                        return Err(inner.fail(format!("no reply within {ms} ms"), true));
                    }
                    Some(Some(Ok(Message::Text(text)))) => {
                        heard = true;
                        text
                    }
                    Some(Some(Ok(Message::Close(_)))) | Some(None) => {
                        if finishing && flushed {
                            break;
                        }
                        return Err(inner.fail("the provider closed the stream before the final result", true));
                    }
                    Some(Some(Ok(_))) => continue,
                    Some(Some(Err(e))) => return Err(inner.broke(e)),
                };
                match parse_reply(&text).map_err(|e| inner.fail(e, true))? {
                    Reply::Results { transcript, is_final, from_finalize } => {
                        utterance.apply(&transcript, is_final);
                        flushed |= finishing && from_finalize;
                        if let (Some(tx), false) = (&interims, finishing) {
                            let so_far = utterance.so_far();
                            if !so_far.is_empty() {
                                let _ = tx.try_send(so_far);
                            }
                        }
                    }
                    Reply::Metadata if finishing => break,
                    Reply::Error(message) => return Err(inner.fail(message, false)),
                    Reply::Metadata | Reply::Other => {}
                }
            }
        }
    }
    Ok(Transcription {
        text: utterance.text(),
    })
}

/// Closes the socket at once, giving up on a polite close after a moment. Not `CloseStream`:
/// that asks the provider to finish the utterance, and a cancelled one is not wanted.
async fn close(sink: &mut SplitSink<Ws, Message>) {
    let _ = tokio::time::timeout(CLOSE_GRACE, sink.close()).await;
}

impl Inner {
    fn scrub(&self, text: &str) -> String {
        self.key
            .as_ref()
            .map_or_else(|| text.to_string(), |k| k.scrub(text))
    }

    fn fail(&self, message: impl AsRef<str>, retryable: bool) -> EngineError {
        let (engine, message) = (self.engine.clone(), self.scrub(message.as_ref()));
        EngineError::Failed {
            engine,
            message,
            retryable,
        }
    }

    fn broke(&self, e: WsError) -> EngineError {
        self.fail(format!("the stream broke off: {e}"), true)
    }

    /// Sends one message; gives up when `stop` fires or the provider takes nothing in for the
    /// stream timeout.
    async fn send(
        &self,
        sink: &mut SplitSink<Ws, Message>,
        message: Message,
        stop: &CancellationToken,
    ) -> Result<(), EngineError> {
        let stall = self.policy.stream_timeout;
        tokio::select! {
            biased;
            _ = stop.cancelled() => Err(EngineError::Cancelled),
            sent = tokio::time::timeout(stall, sink.send(message)) => match sent {
                Ok(Ok(())) => Ok(()),
                Ok(Err(e)) => Err(self.broke(e)),
                Err(_) => {
                    let ms = stall.as_millis();
                    Err(self.fail(format!("the provider took in nothing for {ms} ms"), true))
                }
            },
        }
    }

    fn request(&self) -> Result<Request, EngineError> {
        let mut request = self
            .url
            .as_str()
            .into_client_request()
            .map_err(|e| self.fail(format!("bad base_url: {e}"), false))?;
        if let Some(key) = &self.key {
            let mut value = HeaderValue::from_str(&format!("Token {}", key.expose()))
                .map_err(|_| self.fail("the API key holds characters a header cannot", false))?;
            value.set_sensitive(true);
            request.headers_mut().insert(header::AUTHORIZATION, value);
        }
        Ok(request)
    }

    /// Opens the socket, retrying as the module says.
    async fn connect(&self, stop: &CancellationToken) -> Result<Ws, EngineError> {
        let policy = &self.policy;
        let mut attempt = 0;
        loop {
            let outcome = tokio::select! {
                _ = stop.cancelled() => return Err(EngineError::Cancelled),
                r = tokio::time::timeout(policy.timeout, connect_async(self.request()?)) => r,
            };
            let (message, retryable, wait) = match outcome {
                Ok(Ok((ws, _))) => return Ok(ws),
                Ok(Err(WsError::Http(response))) => rejected(&response),
                Ok(Err(e)) => (format!("cannot connect: {e}"), true, None),
                Err(_) => {
                    let ms = policy.timeout.as_millis();
                    (format!("no reply within {ms} ms"), true, None)
                }
            };
            if !retryable || attempt >= policy.retries {
                return Err(self.fail(message, retryable));
            }
            let wait = wait.unwrap_or_else(|| policy.backoff_for(attempt));
            if wait > policy.max_retry_wait {
                let (asked, allowed) = (wait.as_millis(), policy.max_retry_wait.as_millis());
                return Err(self.fail(
                    format!("{message}; the provider asks to wait {asked} ms, longer than the {allowed} ms allowed"),
                    true,
                ));
            }
            attempt += 1;
            let error = self.scrub(&message);
            let wait_ms = wait.as_millis() as u64;
            warn!(engine = %self.engine, attempt, wait_ms, %error, "provider connection failed; retrying");
            tokio::select! {
                _ = stop.cancelled() => return Err(EngineError::Cancelled),
                _ = tokio::time::sleep(wait) => {}
            }
        }
    }
}

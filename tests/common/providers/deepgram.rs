//! Deepgram streaming speech-to-text: the WebSocket `GET /v1/listen`.
//!
//! Query: `encoding=linear16` and `sample_rate` are required (400 otherwise); `channels`
//! (default 1), `interim_results`, `model`, `punctuate`, `smart_format`, `endpointing` are
//! read or recorded. The client sends binary frames of audio and text frames
//! `{"type":"KeepAlive"}`, `{"type":"Finalize"}`, `{"type":"CloseStream"}`.
//!
//! The deterministic rule for results: an utterance is the audio since the last final. Its
//! words (the transcript read when its first audio arrives) are spread over its first second,
//! so `floor(words * seconds)` of them (at most all) are "heard" at any point.
//! - Every time the total audio received crosses a multiple of 0.5 s, with
//!   `interim_results=true`, an interim result (`is_final: false`) carries the words heard
//!   so far in the current utterance.
//! - `Finalize` answers a final result (`is_final`, `speech_final`, `from_finalize` all true)
//!   with the words heard so far, empty when the utterance has no audio, and starts a new
//!   utterance: ≥ 1 s of audio then `Finalize` gives the whole transcript; 0.5 s gives half.
//! - `CloseStream` answers a final for audio not yet finalized (`from_finalize: false`), then
//!   `{"type":"Metadata",...}`, then a close frame (1000).
//! - With no frame at all for the idle timeout (10 s, or
//!   `FakeProvider::set_deepgram_idle_timeout`) the server closes with 1011, like NET-0001;
//!   `KeepAlive` and audio both reset the timer.
//! - A client closing before the server's close frame counts as an aborted stream.

use std::collections::HashMap;
use std::time::Duration;

use axum::extract::ws::rejection::WebSocketUpgradeRejection;
use axum::extract::ws::{CloseFrame, Message, WebSocket, WebSocketUpgrade};
use axum::extract::{Query, State};
use axum::http::{HeaderMap, Uri};
use axum::response::{IntoResponse, Response};
use serde_json::{json, Value};
use tokio::time::Instant;

use super::faults::{self, Dialect, Fault};
use super::{Recorded, Route, Shared, StreamGuard};

const ROUTE: Route = Route::DeepgramListen;

fn bad(message: &str) -> Response {
    faults::error(Dialect::Deepgram, 400, "Bad Request", message)
}

pub(super) async fn listen(
    State(inner): State<Shared>,
    Query(query): Query<HashMap<String, String>>,
    uri: Uri,
    headers: HeaderMap,
    upgrade: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Response {
    let index = inner.record(ROUTE, Recorded::new(&uri, &headers, &[]));
    let fault = match inner.admit(ROUTE, &headers) {
        Ok(f) => f,
        Err(r) => return *r,
    };
    // Hang upgrades and then stays silent; the session handles it.
    if fault != Some(Fault::Hang) {
        if let Some(r) = faults::before(fault.as_ref(), Dialect::Deepgram).await {
            return r;
        }
    }

    match query.get("encoding").map(String::as_str) {
        None => return bad("Missing encoding: this fake serves raw audio, encoding=linear16."),
        Some("linear16") => {}
        Some(other) => return bad(&format!("encoding {other}: this fake serves linear16 only")),
    }
    let Some(rate) = query
        .get("sample_rate")
        .and_then(|r| r.parse::<usize>().ok())
        .filter(|r| *r > 0)
    else {
        return bad("Missing or invalid sample_rate, required with encoding=linear16.");
    };
    let Some(channels) = query
        .get("channels")
        .map_or(Some(1), |c| c.parse::<usize>().ok())
        .filter(|c| *c > 0)
    else {
        return bad("Invalid channels.");
    };
    let upgrade = match upgrade {
        Ok(u) => u,
        Err(rejection) => return rejection.into_response(),
    };

    let request_id = format!("00000000-0000-4000-8000-{:012x}", inner.next_id());
    let session = Session {
        inner,
        index,
        malformed_pending: fault == Some(Fault::MalformedJson),
        fault,
        request_id: request_id.clone(),
        model: query
            .get("model")
            .cloned()
            .unwrap_or_else(|| "general".into()),
        interim: query.get("interim_results").is_some_and(|v| v == "true"),
        channels,
        bytes_per_second: rate * 2 * channels,
        total: 0,
        utterance_start: 0,
        words: Vec::new(),
        results_sent: 0,
    };
    let mut response = upgrade.on_upgrade(move |socket| session.run(socket));
    if let Ok(v) = request_id.parse() {
        response.headers_mut().insert("dg-request-id", v);
    }
    response
}

struct Session {
    inner: Shared,
    /// Index of this socket's request in the route log.
    index: usize,
    fault: Option<Fault>,
    malformed_pending: bool,
    request_id: String,
    model: String,
    interim: bool,
    channels: usize,
    bytes_per_second: usize,
    /// Audio bytes received in all.
    total: usize,
    /// `total` when the current utterance began (the last final).
    utterance_start: usize,
    words: Vec<String>,
    results_sent: usize,
}

enum Sent {
    Ok,
    /// A `Truncate` fault: drop the socket without a close frame.
    Cut,
    /// The client is gone.
    Gone,
}

impl Session {
    async fn run(mut self, mut socket: WebSocket) {
        let mut guard = StreamGuard::open(&self.inner, ROUTE);
        let hang = self.fault == Some(Fault::Hang);
        let idle = self.inner.settings.lock().unwrap().deepgram_idle;
        let mut deadline = Instant::now() + idle;
        loop {
            let received = tokio::select! {
                m = socket.recv() => m,
                _ = tokio::time::sleep_until(deadline), if !hang => {
                    let reason = "NET-0001: no audio or text message within the timeout window";
                    let close = CloseFrame { code: 1011, reason: reason.into() };
                    let _ = socket.send(Message::Close(Some(close))).await;
                    guard.finish();
                    drop(guard);
                    drain(socket).await;
                    return;
                }
            };
            let message = match received {
                Some(Ok(Message::Close(_))) | Some(Err(_)) | None => {
                    // The client ended first: the guard counts an abort.
                    drop(guard);
                    drain(socket).await;
                    return;
                }
                Some(Ok(m)) => m,
            };
            deadline = Instant::now() + idle;
            let mut closing = false;
            let out = match message {
                Message::Binary(audio) => {
                    let n = audio.len();
                    self.inner.update(ROUTE, self.index, |r| r.audio_bytes += n);
                    self.on_audio(n)
                }
                Message::Text(text) => {
                    let text = text.to_string();
                    let kind = serde_json::from_str::<Value>(&text)
                        .ok()
                        .and_then(|v| v["type"].as_str().map(str::to_string));
                    self.inner
                        .update(ROUTE, self.index, |r| r.text_messages.push(text));
                    match kind.as_deref() {
                        Some("Finalize") => vec![self.result(true, true)],
                        Some("CloseStream") => {
                            closing = true;
                            let mut out = Vec::new();
                            if self.total > self.utterance_start {
                                out.push(self.result(true, false));
                            }
                            out.push(self.metadata());
                            out
                        }
                        _ => Vec::new(),
                    }
                }
                _ => Vec::new(),
            };
            if hang {
                continue;
            }
            for v in out {
                match self.send(&mut socket, v).await {
                    Sent::Ok => {}
                    Sent::Cut => {
                        guard.finish();
                        return;
                    }
                    Sent::Gone => return,
                }
            }
            if closing {
                let close = CloseFrame {
                    code: 1000,
                    reason: "".into(),
                };
                let _ = socket.send(Message::Close(Some(close))).await;
                guard.finish();
                drop(guard);
                drain(socket).await;
                return;
            }
        }
    }

    fn on_audio(&mut self, n: usize) -> Vec<Value> {
        if n == 0 {
            return Vec::new();
        }
        if self.total == self.utterance_start {
            let transcript = self.inner.transcript();
            self.words = transcript.split_whitespace().map(str::to_string).collect();
        }
        let before = self.total;
        self.total += n;
        let half = (self.bytes_per_second / 2).max(1);
        if self.interim && before / half != self.total / half {
            vec![self.result(false, false)]
        } else {
            Vec::new()
        }
    }

    /// A `Results` message for the current utterance; a final one ends the utterance.
    fn result(&mut self, is_final: bool, from_finalize: bool) -> Value {
        let since = self.total - self.utterance_start;
        let heard = (self.words.len() * since / self.bytes_per_second).min(self.words.len());
        let transcript = self.words[..heard].join(" ");
        let bps = self.bytes_per_second as f64;
        let v = json!({
            "type": "Results",
            "channel_index": [0, self.channels],
            "duration": since as f64 / bps,
            "start": self.utterance_start as f64 / bps,
            "is_final": is_final,
            "speech_final": is_final,
            "from_finalize": from_finalize,
            "channel": {"alternatives": [{
                "transcript": transcript,
                "confidence": if heard == 0 { 0.0 } else { 0.98 },
                "words": [],
            }]},
            "metadata": {
                "request_id": self.request_id,
                "model_info": {"name": self.model, "version": "fake", "arch": "fake"},
                "model_uuid": "00000000-0000-4000-8000-000000000000",
            },
        });
        if is_final {
            self.utterance_start = self.total;
        }
        v
    }

    fn metadata(&self) -> Value {
        json!({
            "type": "Metadata",
            "transaction_key": "deprecated",
            "request_id": self.request_id,
            "duration": self.total as f64 / self.bytes_per_second as f64,
            "channels": self.channels,
            "models": ["00000000-0000-4000-8000-000000000000"],
            "model_info": {},
        })
    }

    async fn send(&mut self, socket: &mut WebSocket, v: Value) -> Sent {
        if v["type"] == "Results" {
            match self.fault {
                Some(Fault::Truncate { after }) if self.results_sent == after => return Sent::Cut,
                Some(Fault::SlowStream(gap)) => tokio::time::sleep(gap).await,
                _ => {}
            }
            if std::mem::take(&mut self.malformed_pending) {
                let broken = r#"{"type":"Results","channel":{"alternatives":[{"transcript":"#;
                if socket.send(Message::Text(broken.into())).await.is_err() {
                    return Sent::Gone;
                }
            }
            self.results_sent += 1;
        }
        match socket.send(Message::Text(v.to_string().into())).await {
            Ok(()) => Sent::Ok,
            Err(_) => Sent::Gone,
        }
    }
}

/// Reads until the client's close frame (or its vanishing), at most a second, so the closing
/// handshake completes.
async fn drain(mut socket: WebSocket) {
    let _ = tokio::time::timeout(Duration::from_secs(1), async {
        while let Some(Ok(m)) = socket.recv().await {
            if matches!(m, Message::Close(_)) {
                break;
            }
        }
    })
    .await;
}

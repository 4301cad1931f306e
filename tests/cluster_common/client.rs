//! Clients of the cluster: a caller's WebSocket (with the node that answered the upgrade, from
//! `x-voxwire-node`), HTTP requests that keep the answering node too, and an operator's monitor
//! stream read event by event.

use std::collections::BTreeMap;
use std::pin::Pin;
use std::time::Duration;

use base64::Engine as _;
use eventsource_stream::Eventsource;
use futures::{SinkExt, Stream, StreamExt};
use serde_json::{json, Value};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

pub type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// The response header naming the node that served a request.
pub const NODE_HEADER: &str = "x-voxwire-node";
/// How long a frame or an event may take before a test gives up on it.
pub const FRAME_WAIT: Duration = Duration::from_secs(20);

/// A caller's socket.
pub struct Caller {
    pub ws: Ws,
    /// `x-voxwire-node` of the upgrade response (101), if the node sent one.
    pub node: Option<String>,
    /// The `connected` frame.
    pub hello: Value,
}

/// How a socket ended, or that it is still open.
#[derive(Debug, PartialEq, Eq)]
pub enum Closed {
    /// A Close frame with this code (`None`: a Close frame without one).
    Code(Option<u16>),
    /// The connection broke or ended without a Close frame.
    Dropped,
}

/// What the upgrade answered when it did not switch protocols.
#[derive(Debug)]
pub struct Refused(pub String);

impl Caller {
    /// Opens `ws_url` with `token` as a Bearer header and reads `connected`.
    pub async fn connect(ws_url: &str, token: &str) -> Result<Caller, Refused> {
        let mut req = ws_url.into_client_request().expect("a WebSocket URL");
        req.headers_mut().insert(
            "authorization",
            format!("Bearer {token}").parse().expect("a token"),
        );
        let (ws, resp) = tokio_tungstenite::connect_async(req)
            .await
            .map_err(|e| Refused(e.to_string()))?;
        assert_eq!(resp.status().as_u16(), 101);
        let node = resp
            .headers()
            .get(NODE_HEADER)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        let mut caller = Caller {
            ws,
            node,
            hello: Value::Null,
        };
        caller.hello = caller.recv().await;
        assert_eq!(caller.hello["type"], "connected", "{}", caller.hello);
        Ok(caller)
    }

    /// Like [`Caller::connect`], trying again every 200 ms for `within` while the upgrade is
    /// refused (through a proxy that has not yet noticed a node went away: 502, 503).
    pub async fn connect_within(ws_url: &str, token: &str, within: Duration) -> Caller {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            match Self::connect(ws_url, token).await {
                Ok(c) => return c,
                Err(e) => assert!(
                    tokio::time::Instant::now() < deadline,
                    "cannot connect to {ws_url}: {}",
                    e.0
                ),
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    pub async fn send(&mut self, v: Value) {
        self.ws
            .send(Message::Text(v.to_string().into()))
            .await
            .expect("send a frame");
    }

    /// The next JSON text frame; panics on a timeout or a close.
    pub async fn recv(&mut self) -> Value {
        loop {
            let msg = tokio::time::timeout(FRAME_WAIT, self.ws.next())
                .await
                .expect("timed out waiting for a frame")
                .expect("the socket closed")
                .expect("socket error");
            match msg {
                Message::Text(t) => return serde_json::from_str(&t).expect("a JSON frame"),
                Message::Close(c) => panic!("the socket closed: {c:?}"),
                _ => continue,
            }
        }
    }

    /// Frames up to and including the first of type `until`.
    pub async fn recv_until(&mut self, until: &str) -> Vec<Value> {
        let mut out = Vec::new();
        loop {
            let v = self.recv().await;
            let done = v["type"] == until;
            out.push(v);
            if done {
                return out;
            }
        }
    }

    /// Sends `start_call` with `extra` fields and returns the answer: `call_started`, or the
    /// `error` refusing it.
    pub async fn start_call(&mut self, extra: Value) -> Value {
        let mut msg = json!({"type": "start_call"});
        if let (Some(m), Some(e)) = (msg.as_object_mut(), extra.as_object()) {
            m.extend(e.clone());
        }
        self.send(msg).await;
        loop {
            let v = self.recv().await;
            if v["type"] == "call_started" || v["type"] == "error" {
                return v;
            }
        }
    }

    /// Starts a call and returns its id; panics if it is refused.
    pub async fn start(&mut self, extra: Value) -> String {
        let started = self.start_call(extra).await;
        assert_eq!(started["type"], "call_started", "{started}");
        started["call_id"].as_str().expect("call_id").to_string()
    }

    /// A typed turn: its frames up to `metrics`, the reply played to the end (reported).
    pub async fn say(&mut self, text: &str) -> Vec<Value> {
        self.send(json!({"type": "text", "text": text})).await;
        let frames = self.recv_until("metrics").await;
        self.played(&frames).await;
        frames
    }

    /// Reports every reply in `frames` as played to its end (`playback`), as a client that
    /// plays them does: the caller heard all of it, and what it says next cuts nothing.
    pub async fn played(&mut self, frames: &[Value]) {
        let mut ms: BTreeMap<i64, u64> = BTreeMap::new();
        for f in frames.iter().filter(|f| f["type"] == "audio_response") {
            let bytes = base64::engine::general_purpose::STANDARD
                .decode(f["audio"].as_str().unwrap_or_default())
                .expect("base64 audio");
            let rate = f["sample_rate"].as_u64().expect("sample_rate").max(1);
            let samples = match f["encoding"].as_str() {
                Some("pcm16") => bytes.len() as u64 / 2,
                _ => bytes.len() as u64,
            };
            *ms.entry(f["item_id"].as_i64().expect("item_id"))
                .or_default() += samples * 1000 / rate + 1;
        }
        for (item_id, played_ms) in ms {
            self.send(json!({"type": "playback", "item_id": item_id, "played_ms": played_ms}))
                .await;
        }
    }

    /// A spoken turn the energy detector ends on silence: 300 ms of silence, `speech_ms` of a
    /// tone, 1.5 s of silence, sent at once in 500 ms chunks. Its frames up to `metrics`, the
    /// reply played to the end (reported).
    pub async fn speak(&mut self, speech_ms: u32) -> Vec<Value> {
        let mut pcm = tone_pcm16(300, 16_000, 0.0);
        pcm.extend(tone_pcm16(speech_ms, 16_000, 0.3));
        pcm.extend(tone_pcm16(1_500, 16_000, 0.0));
        for (i, c) in pcm.chunks(16_000).enumerate() {
            self.send(json!({"type": "audio", "audio": b64(c), "seq": i}))
                .await;
        }
        let frames = self.recv_until("metrics").await;
        self.played(&frames).await;
        frames
    }

    /// Ends the call and reads `call_ended`.
    pub async fn hang_up(&mut self) -> Value {
        self.send(json!({"type": "end_call"})).await;
        self.recv_until("call_ended")
            .await
            .pop()
            .expect("call_ended")
    }

    /// Reads until the socket ends, for at most `within`; `None` if it is still open then.
    /// The frames read on the way are returned too.
    pub async fn closed_within(&mut self, within: Duration) -> (Option<Closed>, Vec<Value>) {
        let deadline = tokio::time::Instant::now() + within;
        let mut frames = Vec::new();
        loop {
            match tokio::time::timeout_at(deadline, self.ws.next()).await {
                Err(_) => return (None, frames),
                Ok(Some(Ok(Message::Text(t)))) => {
                    frames.push(serde_json::from_str(&t).expect("a JSON frame"))
                }
                Ok(Some(Ok(Message::Close(f)))) => {
                    return (Some(Closed::Code(f.map(|f| u16::from(f.code)))), frames)
                }
                Ok(Some(Ok(_))) => continue,
                Ok(Some(Err(_))) | Ok(None) => return (Some(Closed::Dropped), frames),
            }
        }
    }

    /// Whether the call answers a `ping` within `within` (frames on the way are skipped).
    pub async fn answers_ping(&mut self, within: Duration) -> bool {
        if self
            .ws
            .send(Message::Text(
                json!({"type": "ping", "id": 7}).to_string().into(),
            ))
            .await
            .is_err()
        {
            return false;
        }
        let deadline = tokio::time::Instant::now() + within;
        loop {
            match tokio::time::timeout_at(deadline, self.ws.next()).await {
                Ok(Some(Ok(Message::Text(t)))) => {
                    let v: Value = serde_json::from_str(&t).expect("a JSON frame");
                    if v["type"] == "pong" && v["id"] == 7 {
                        return true;
                    }
                }
                Ok(Some(Ok(Message::Close(_)))) | Ok(Some(Err(_))) | Ok(None) | Err(_) => {
                    return false
                }
                Ok(Some(Ok(_))) => continue,
            }
        }
    }
}

/// The conversation items a caller received, as (item_id, role, text) in item order: final
/// transcripts (the caller's) and final replies (the agent's or an operator's), a reply the
/// caller cut short as `interrupted` says history keeps it.
pub fn items_of(frames: &[Value]) -> Vec<(i64, String, String)> {
    let mut items: BTreeMap<i64, (String, String)> = BTreeMap::new();
    for f in frames {
        let id = f["item_id"].as_i64();
        let text = f["text"].as_str().map(str::to_string);
        match (f["type"].as_str(), f["is_final"] == true, id, text) {
            (Some("transcript"), true, Some(id), Some(text)) => {
                items.insert(id, ("user".into(), text));
            }
            (Some("response"), true, Some(id), Some(text))
            | (Some("interrupted"), _, Some(id), Some(text)) => {
                items.insert(id, ("assistant".into(), text));
            }
            _ => {}
        }
    }
    items
        .into_iter()
        .map(|(id, (role, text))| (id, role, text))
        .collect()
}

/// The final reply of a turn's frames.
pub fn reply_of(frames: &[Value]) -> Option<String> {
    frames
        .iter()
        .find(|f| f["type"] == "response" && f["is_final"] == true)
        .and_then(|f| f["text"].as_str())
        .map(str::to_string)
}

/// An HTTP answer: status, the node that served it (`x-voxwire-node`) and the JSON body (or
/// null).
#[derive(Debug)]
pub struct Answer {
    pub status: u16,
    pub node: Option<String>,
    pub body: Value,
}

async fn answer(r: reqwest::Response) -> Answer {
    let status = r.status().as_u16();
    let node = r
        .headers()
        .get(NODE_HEADER)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    Answer {
        status,
        node,
        body: r.json().await.unwrap_or(Value::Null),
    }
}

pub async fn get(url: &str, token: &str) -> Answer {
    answer(
        reqwest::Client::new()
            .get(url)
            .bearer_auth(token)
            .send()
            .await
            .unwrap_or_else(|e| panic!("GET {url}: {e}")),
    )
    .await
}

pub async fn post(url: &str, token: &str, body: Option<Value>) -> Answer {
    let mut req = reqwest::Client::new().post(url).bearer_auth(token);
    if let Some(b) = body {
        req = req.json(&b);
    }
    answer(
        req.send()
            .await
            .unwrap_or_else(|e| panic!("POST {url}: {e}")),
    )
    .await
}

pub async fn put(url: &str, token: &str, body: Value) -> Answer {
    answer(
        reqwest::Client::new()
            .put(url)
            .bearer_auth(token)
            .json(&body)
            .send()
            .await
            .unwrap_or_else(|e| panic!("PUT {url}: {e}")),
    )
    .await
}

type Events = Pin<Box<dyn Stream<Item = Result<eventsource_stream::Event, String>> + Send>>;

/// An operator's monitor stream (`GET /api/monitor/events`).
pub struct Monitor {
    events: Events,
}

impl Monitor {
    /// Opens it at `base` (a node's or the proxy's `http://host:port`), after `last_id` if
    /// given; panics unless it answers 200 with an event stream.
    pub async fn open(base: &str, token: &str, last_id: Option<i64>) -> Monitor {
        let mut req = reqwest::Client::new()
            .get(format!("{base}/api/monitor/events"))
            .bearer_auth(token);
        if let Some(id) = last_id {
            req = req.header("last-event-id", id.to_string());
        }
        let resp = req.send().await.expect("open the monitor stream");
        let status = resp.status().as_u16();
        if status != 200 {
            panic!(
                "the monitor answered {status}: {}",
                resp.text().await.unwrap_or_default()
            );
        }
        let events = resp
            .bytes_stream()
            .eventsource()
            .map(|r| r.map_err(|e| e.to_string()))
            .boxed();
        Monitor { events }
    }

    /// The next event: its id (none on the snapshot) and its JSON.
    pub async fn next(&mut self) -> (Option<i64>, Value) {
        self.next_within(FRAME_WAIT)
            .await
            .expect("timed out waiting for a monitor event")
    }

    /// The next event, or `None` if none comes within `within`.
    pub async fn next_within(&mut self, within: Duration) -> Option<(Option<i64>, Value)> {
        let e = tokio::time::timeout(within, self.events.next())
            .await
            .ok()?
            .expect("the monitor stream ended")
            .expect("a bad monitor stream");
        let id = (!e.id.is_empty()).then(|| e.id.parse().expect("a numeric event id"));
        Some((id, serde_json::from_str(&e.data).expect("JSON event data")))
    }

    /// Events up to and including the first that `done` accepts; panics naming `what` if
    /// none comes in time.
    pub async fn until(
        &mut self,
        what: &str,
        done: impl Fn(&Value) -> bool,
    ) -> Vec<(Option<i64>, Value)> {
        let mut out = Vec::new();
        loop {
            let Some((id, v)) = self.next_within(FRAME_WAIT).await else {
                panic!("the monitor never showed {what}; it showed {out:?}");
            };
            let stop = done(&v);
            out.push((id, v));
            if stop {
                return out;
            }
        }
    }
}

/// An operator's socket on one call (`GET /api/calls/{id}/operator`).
pub struct OperatorSocket {
    ws: Ws,
}

/// What an operator socket sent: JSON frames, and audio frames as (stream, rate, samples)
/// (stream 1: the caller, 2: the agent).
#[derive(Default, Debug)]
pub struct Heard {
    pub frames: Vec<Value>,
    pub audio: Vec<(u8, u16, usize)>,
}

impl Heard {
    /// Samples heard on `stream`, each frame's rate checked against `rate`.
    pub fn samples(&self, stream: u8, rate: u16) -> usize {
        self.audio
            .iter()
            .filter(|a| a.0 == stream)
            .map(|a| {
                assert_eq!(a.1, rate, "stream {stream}'s rate");
                a.2
            })
            .sum()
    }
}

impl OperatorSocket {
    /// Opens it at `base` (`http://host:port`); panics unless the upgrade succeeds.
    pub async fn open(base: &str, call_id: &str, token: &str) -> OperatorSocket {
        let url = format!(
            "{}/api/calls/{call_id}/operator?token={token}",
            base.replacen("http://", "ws://", 1)
        );
        let (ws, _) = tokio_tungstenite::connect_async(url)
            .await
            .unwrap_or_else(|e| panic!("cannot open the operator socket: {e}"));
        OperatorSocket { ws }
    }

    pub async fn send(&mut self, v: Value) {
        self.ws
            .send(Message::Text(v.to_string().into()))
            .await
            .expect("send a command");
    }

    /// The operator's voice: PCM16 LE at 16 kHz.
    pub async fn voice(&mut self, pcm: Vec<u8>) {
        self.ws
            .send(Message::Binary(pcm.into()))
            .await
            .expect("send voice");
    }

    /// Everything the socket sends until a JSON frame of type `until` (included).
    pub async fn heard_until(&mut self, until: &str) -> Heard {
        self.heard_until_any(&[until]).await
    }

    /// Everything the socket sends until a JSON frame of one of the types `until` (included).
    pub async fn heard_until_any(&mut self, until: &[&str]) -> Heard {
        let mut heard = Heard::default();
        loop {
            let msg = tokio::time::timeout(FRAME_WAIT, self.ws.next())
                .await
                .unwrap_or_else(|_| panic!("timed out waiting for {until:?}: {heard:?}"))
                .expect("the operator socket closed")
                .expect("operator socket error");
            match msg {
                Message::Text(t) => {
                    let v: Value = serde_json::from_str(&t).expect("a JSON frame");
                    let done = until.iter().any(|u| v["type"] == *u);
                    heard.frames.push(v);
                    if done {
                        return heard;
                    }
                }
                Message::Binary(b) => {
                    assert!(b.len() >= 4 && (b.len() - 4) % 2 == 0, "{} bytes", b.len());
                    let rate = u16::from_le_bytes([b[2], b[3]]);
                    heard.audio.push((b[0], rate, (b.len() - 4) / 2));
                }
                Message::Close(c) => panic!("the operator socket closed: {c:?}"),
                _ => {}
            }
        }
    }

    /// Reads on until `stream` has brought `samples` samples in all into `heard` (audio and
    /// events travel between nodes separately, so audio may come after a later event), or
    /// for at most `within`.
    pub async fn more_audio(
        &mut self,
        heard: &mut Heard,
        stream: u8,
        samples: usize,
        within: Duration,
    ) {
        let deadline = tokio::time::Instant::now() + within;
        while heard
            .audio
            .iter()
            .filter(|a| a.0 == stream)
            .map(|a| a.2)
            .sum::<usize>()
            < samples
        {
            match tokio::time::timeout_at(deadline, self.ws.next()).await {
                Ok(Some(Ok(Message::Binary(b)))) => {
                    let rate = u16::from_le_bytes([b[2], b[3]]);
                    heard.audio.push((b[0], rate, (b.len() - 4) / 2));
                }
                Ok(Some(Ok(Message::Text(t)))) => heard
                    .frames
                    .push(serde_json::from_str(&t).expect("a JSON frame")),
                Ok(Some(Ok(_))) => {}
                _ => return,
            }
        }
    }

    /// Sends a command and returns its `result` frame (or the `error` refusing it).
    pub async fn command(&mut self, cmd: Value) -> Value {
        self.send(cmd).await;
        let heard = self.heard_until_any(&["result", "error"]).await;
        heard.frames.last().expect("a result").clone()
    }
}

pub fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// PCM16 LE of a 440 Hz tone (`amp` 0: silence).
pub fn tone_pcm16(ms: u32, rate: u32, amp: f32) -> Vec<u8> {
    let n = (rate * ms / 1000) as usize;
    (0..n)
        .flat_map(|i| {
            let s = (i as f32 * 440.0 * std::f32::consts::TAU / rate as f32).sin() * amp;
            ((s * 32767.0) as i16).to_le_bytes()
        })
        .collect()
}

//! Test harness: starts the real server on 127.0.0.1:0 with deterministic fake engines and
//! drives it over real WebSocket and HTTP connections.
#![allow(dead_code)]

pub mod history;
pub mod hosted;
pub mod phone;
pub mod providers;

use std::net::SocketAddr;
use std::time::Duration;

use base64::Engine as _;
use futures::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};
use voxwire::engines::Engines;
use voxwire::{AppState, Config};

pub type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

pub struct TestServer {
    pub addr: SocketAddr,
    pub state: std::sync::Arc<AppState>,
    pub stop: Option<tokio::sync::oneshot::Sender<()>>,
    pub task: tokio::task::JoinHandle<std::io::Result<()>>,
}

pub async fn start() -> TestServer {
    start_with(Config::for_tests(), Engines::fake()).await
}

pub async fn start_with(config: Config, engines: Engines) -> TestServer {
    start_with_store(config, engines, voxwire::store::Store::memory()).await
}

/// A server whose calls are kept in `store`.
pub async fn start_with_store(
    mut config: Config,
    engines: Engines,
    store: voxwire::store::Store,
) -> TestServer {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    config.bind = addr;
    let state = AppState::with_store(config, engines, store);
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(voxwire::run(listener, state.clone(), async move {
        let _ = stopped.await;
    }));
    TestServer {
        addr,
        state,
        stop: Some(stop),
        task,
    }
}

impl TestServer {
    pub fn token(&self, sub: &str) -> String {
        self.state
            .auth
            .issue(sub, None, None, Duration::from_secs(600))
            .unwrap()
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    pub fn ws_url(&self) -> String {
        format!("ws://{}/ws", self.addr)
    }

    /// Connects with a Bearer header and reads `connected`.
    pub async fn connect(&self, sub: &str) -> (Ws, Value) {
        let mut req = self.ws_url().into_client_request().unwrap();
        req.headers_mut().insert(
            "authorization",
            format!("Bearer {}", self.token(sub)).parse().unwrap(),
        );
        let (mut ws, _) = tokio_tungstenite::connect_async(req).await.unwrap();
        let hello = recv(&mut ws).await;
        assert_eq!(hello["type"], "connected", "{hello}");
        (ws, hello)
    }

    /// Connects and starts a call with the given extra `start_call` fields.
    pub async fn call(&self, sub: &str, start: Value) -> (Ws, String) {
        let (mut ws, _) = self.connect(sub).await;
        let mut msg = json!({"type": "start_call"});
        if let (Some(m), Some(extra)) = (msg.as_object_mut(), start.as_object()) {
            m.extend(extra.clone());
        }
        send(&mut ws, msg).await;
        let started = recv(&mut ws).await;
        assert_eq!(started["type"], "call_started", "{started}");
        let id = started["call_id"].as_str().unwrap().to_string();
        (ws, id)
    }
}

pub async fn send(ws: &mut Ws, v: Value) {
    ws.send(Message::Text(v.to_string().into())).await.unwrap();
}

pub async fn send_raw(ws: &mut Ws, text: &str) {
    ws.send(Message::Text(text.to_string().into()))
        .await
        .unwrap();
}

/// Next JSON text frame (panics on timeout or close).
pub async fn recv(ws: &mut Ws) -> Value {
    loop {
        let msg = tokio::time::timeout(Duration::from_secs(20), ws.next())
            .await
            .expect("timed out waiting for a frame")
            .expect("socket closed")
            .expect("socket error");
        match msg {
            Message::Text(t) => return serde_json::from_str(&t).unwrap(),
            Message::Close(c) => panic!("socket closed: {c:?}"),
            _ => continue,
        }
    }
}

/// Frames until (and including) the first of type `until`.
pub async fn recv_until(ws: &mut Ws, until: &str) -> Vec<Value> {
    let mut out = Vec::new();
    loop {
        let v = recv(ws).await;
        let done = v["type"] == until;
        out.push(v);
        if done {
            return out;
        }
    }
}

/// Reads until the socket closes; returns the close code.
pub async fn recv_close(ws: &mut Ws) -> Option<u16> {
    loop {
        match tokio::time::timeout(Duration::from_secs(20), ws.next())
            .await
            .expect("timed out waiting for close")
        {
            Some(Ok(Message::Close(frame))) => return frame.map(|f| u16::from(f.code)),
            Some(Ok(_)) => continue,
            _ => return None,
        }
    }
}

/// Sends `ping` and expects the matching `pong` (skipping other frames).
pub async fn assert_alive(ws: &mut Ws) {
    send(ws, json!({"type": "ping", "id": 77})).await;
    let frames = recv_until(ws, "pong").await;
    assert_eq!(frames.last().unwrap()["id"], 77);
}

pub fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// PCM16 LE of a tone (`amp` 0 gives silence).
pub fn tone_pcm16(ms: u32, rate: u32, amp: f32) -> Vec<u8> {
    let n = (rate * ms / 1000) as usize;
    (0..n)
        .flat_map(|i| {
            let s = (i as f32 * 440.0 * std::f32::consts::TAU / rate as f32).sin() * amp;
            ((s * 32767.0) as i16).to_le_bytes()
        })
        .collect()
}

pub fn wav_file(samples: &[f32], rate: u32) -> Vec<u8> {
    voxwire::audio::encode::wav_bytes(samples, rate)
}

pub fn tone(ms: u32, rate: u32, amp: f32) -> Vec<f32> {
    let n = (rate * ms / 1000) as usize;
    (0..n)
        .map(|i| (i as f32 * 440.0 * std::f32::consts::TAU / rate as f32).sin() * amp)
        .collect()
}

/// Streams PCM16 in 500 ms `audio` messages.
pub async fn stream_pcm16(ws: &mut Ws, pcm: &[u8], rate: u32) {
    let chunk = (rate as usize) * 2 / 2;
    for (i, c) in pcm.chunks(chunk).enumerate() {
        send(ws, json!({"type": "audio", "audio": b64(c), "seq": i})).await;
    }
}

/// Every local engine and the Silero detector, loaded once per test binary (it takes seconds).
pub fn local_engines() -> Engines {
    static ENGINES: std::sync::OnceLock<Engines> = std::sync::OnceLock::new();
    ENGINES
        .get_or_init(|| {
            let mut config = Config::for_tests();
            config.stt = vec!["local".into()];
            config.llm = vec!["local".into()];
            config.tts = vec!["local".into()];
            config.vad = voxwire::config::VadChoice::Silero;
            config.offline = true;
            match Engines::from_config(&config) {
                Ok(e) => e,
                Err(e) => panic!("local engines do not load (run `voxwire models fetch`): {e}"),
            }
        })
        .clone()
}

/// A server with fake engines whose language model writes one word every `word_ms`.
pub async fn slow_server(word_ms: u64) -> TestServer {
    let mut engines = Engines::fake();
    engines.llm = std::sync::Arc::new(voxwire::engines::llm::fake::FakeLlm {
        word_delay: Duration::from_millis(word_ms),
    });
    start_with(Config::for_tests(), engines).await
}

/// A call's history as (role, text) pairs, read from the server's store.
pub fn history(server: &TestServer, call_id: &str, sub: &str) -> Vec<(String, String)> {
    let owner = voxwire::call::Owner {
        sub: sub.into(),
        org: None,
    };
    server
        .state
        .calls
        .get_owned(call_id, &owner)
        .expect("the call is in the store")
        .history()
        .messages()
        .into_iter()
        .map(|m| (format!("{:?}", m.role), m.content))
        .collect()
}

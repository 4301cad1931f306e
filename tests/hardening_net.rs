//! Hostile and slow clients at the connection level: half-sent requests, too many connections
//! from one address, sockets that go silent, clients that stop reading, invalid UTF-8, and the
//! goodbye every live call gets when the server shuts down.

mod common;

use std::time::Duration;

use common::*;
use futures::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::protocol::frame::coding::{Data, OpCode};
use tokio_tungstenite::tungstenite::protocol::frame::Frame;
use tokio_tungstenite::tungstenite::Message;
use voxwire::engines::Engines;
use voxwire::Config;

/// Reads until the peer closes; returns what arrived, or `None` if it stayed open for `limit`.
async fn read_to_close(stream: &mut TcpStream, limit: Duration) -> Option<Vec<u8>> {
    let mut got = Vec::new();
    let read = tokio::time::timeout(limit, async {
        let mut buf = [0u8; 4096];
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => got.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await;
    read.ok().map(|_| got)
}

#[tokio::test]
async fn a_half_sent_request_is_dropped_after_the_header_timeout() {
    let mut config = Config::for_tests();
    config.net.header_read_timeout = Duration::from_secs(1);
    let server = start_with(config, Engines::fake()).await;
    let mut stream = TcpStream::connect(server.addr).await.unwrap();
    stream
        .write_all(b"GET /health HTTP/1.1\r\nHost: x\r\n")
        .await
        .unwrap();
    // Before the fix such a connection stayed open for good; the bound is generous.
    let closed = read_to_close(&mut stream, Duration::from_secs(15)).await;
    assert!(closed.is_some(), "a half-sent request was kept open");
    // A connection that says nothing at all goes the same way.
    let mut silent = TcpStream::connect(server.addr).await.unwrap();
    assert!(read_to_close(&mut silent, Duration::from_secs(15))
        .await
        .is_some());
    // Whole requests are still served.
    let health = reqwest::get(server.url("/health")).await.unwrap();
    assert_eq!(health.status(), 200);
}

#[tokio::test]
async fn connections_per_address_are_capped_and_given_back() {
    let mut config = Config::for_tests();
    config.net.max_connections_per_ip = 3;
    let server = start_with(config, Engines::fake()).await;
    // Two idle connections and a live call hold the address's three slots.
    let idle_a = TcpStream::connect(server.addr).await.unwrap();
    let _idle_b = TcpStream::connect(server.addr).await.unwrap();
    let (mut ws, _) = server.call("alice", json!({})).await;
    let mut refused = TcpStream::connect(server.addr).await.unwrap();
    let answer = read_to_close(&mut refused, Duration::from_secs(15))
        .await
        .expect("the refused connection is closed");
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 429"), "{answer}");
    let body: Value = serde_json::from_str(answer.split("\r\n\r\n").nth(1).unwrap()).unwrap();
    assert_eq!(body["error"]["code"], "too_many_connections");
    // The call is unaffected.
    assert_alive(&mut ws).await;
    // A slot given back can be used again.
    drop(idle_a);
    let mut ok = None;
    for _ in 0..50 {
        if let Ok(r) = reqwest::get(server.url("/health")).await {
            if r.status() == 200 {
                ok = Some(r);
                break;
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(ok.is_some(), "the freed slot was not given back");
    let metrics = server.state.metrics.render();
    assert!(
        metrics.contains("voxwire_errors_total{code=\"too_many_connections\"}"),
        "{metrics}"
    );
}

#[test]
fn the_open_file_limit_is_raised_to_the_hard_limit() {
    let limit = voxwire::server::raise_fd_limit().unwrap();
    let (soft, hard) = rlimit::getrlimit(rlimit::Resource::NOFILE).unwrap();
    assert_eq!(soft, limit);
    assert_eq!(soft, hard);
}

fn heartbeat_config() -> Config {
    let mut config = Config::for_tests();
    config.net.ws_ping_interval = Duration::from_millis(300);
    config.net.ws_idle_timeout = Duration::from_secs(2);
    config
}

#[tokio::test]
async fn the_server_pings_and_a_reading_client_stays() {
    let server = start_with(heartbeat_config(), Engines::fake()).await;
    let (mut ws, _) = server.call("alice", json!({})).await;
    // The client library answers pings while it reads; nothing else is sent for 4 s, twice
    // the idle timeout.
    let mut pings = 0;
    let until = tokio::time::Instant::now() + Duration::from_secs(4);
    while let Ok(Some(Ok(msg))) = tokio::time::timeout_at(until, ws.next()).await {
        match msg {
            Message::Ping(_) => pings += 1,
            Message::Close(c) => panic!("closed: {c:?}"),
            _ => {}
        }
    }
    assert!(pings >= 3, "{pings} pings in 4 s");
    assert_alive(&mut ws).await;
}

/// A WebSocket client by hand, which (unlike a library) never answers pings by itself.
async fn raw_ws(server: &TestServer, sub: &str) -> TcpStream {
    let mut stream = TcpStream::connect(server.addr).await.unwrap();
    let request = format!(
        "GET /ws?token={} HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
        server.token(sub)
    );
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        let mut b = [0u8; 1];
        stream.read_exact(&mut b).await.unwrap();
        head.push(b[0]);
    }
    assert!(
        head.starts_with(b"HTTP/1.1 101"),
        "{}",
        String::from_utf8_lossy(&head)
    );
    stream
}

/// A masked text frame, as a client must send it.
fn text_frame(text: &str) -> Vec<u8> {
    let payload = text.as_bytes();
    assert!(payload.len() < 126);
    let mask = [1u8, 2, 3, 4];
    let mut frame = vec![0x81, 0x80 | payload.len() as u8];
    frame.extend_from_slice(&mask);
    frame.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
    frame
}

#[tokio::test]
async fn a_silent_socket_is_closed_and_its_call_ended() {
    let server = start_with(heartbeat_config(), Engines::fake()).await;
    let mut stream = raw_ws(&server, "alice").await;
    stream
        .write_all(&text_frame(r#"{"type":"start_call"}"#))
        .await
        .unwrap();
    // From here the client sends nothing, pongs included: the server must not wait for ever.
    let got = read_to_close(&mut stream, Duration::from_secs(20))
        .await
        .expect("the silent socket was not closed");
    let text = String::from_utf8_lossy(&got);
    assert!(text.contains(r#""type":"call_started""#), "{text}");
    assert!(text.contains(r#""type":"call_ended""#), "{text}");
    assert!(text.contains(r#""reason":"ping_timeout""#), "{text}");
    // Pings (opcode 9) came first, then a close frame (opcode 8) with 1001 and the reason.
    assert!(got.windows(2).any(|w| w == [0x89, 0x00]), "no ping");
    let close = [&[0x88, 2 + 12, 0x03, 0xE9][..], b"ping timeout"].concat();
    assert!(
        got.windows(close.len()).any(|w| w == close),
        "no close 1001"
    );
    assert_eq!(server.state.calls.live_calls(), 0, "the call is still live");
}

#[tokio::test]
async fn a_client_that_stops_reading_is_dropped_and_its_call_ended() {
    let mut config = Config::for_tests();
    config.net.ws_write_timeout = Duration::from_secs(1);
    config.limits.max_calls_per_user = 1;
    config.limits.max_text_chars = 10_000;
    let server = start_with(config, Engines::fake()).await;
    // Replies as 96 kHz PCM: each word is 60 ms of audio, about 15 KB of JSON.
    let (mut ws, call_id) = server
        .call(
            "alice",
            json!({"output_format": {"encoding": "pcm16", "sample_rate": 96000}}),
        )
        .await;
    let long = "word ".repeat(1_500);
    for _ in 0..6 {
        send(&mut ws, json!({"type": "text", "text": long})).await;
    }
    // The client reads nothing from here on: megabytes of audio back up in the kernel.
    let owner = voxwire::call::Owner {
        sub: "alice".into(),
        org: None,
    };
    let mut live = true;
    for _ in 0..300 {
        live = server
            .state
            .calls
            .get_owned(&call_id, &owner)
            .is_ok_and(|r| r.is_live());
        if !live {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        !live,
        "the call of a client that stopped reading is still live after 30 s"
    );
    // Its user's call slot is free again.
    let (mut other, _) = server.call("alice", json!({})).await;
    assert_alive(&mut other).await;
    drop(ws);
}

#[tokio::test]
async fn invalid_utf8_in_a_text_frame_closes_with_1007() {
    let server = start().await;
    let (mut ws, _) = server.call("alice", json!({})).await;
    let frame = Frame::message(vec![b'{', 0xff, 0xfe, b'}'], OpCode::Data(Data::Text), true);
    ws.send(Message::Frame(frame)).await.unwrap();
    let mut error = None;
    let close = loop {
        match tokio::time::timeout(Duration::from_secs(20), ws.next())
            .await
            .expect("no answer to invalid UTF-8")
        {
            Some(Ok(Message::Text(t))) => {
                let v: Value = serde_json::from_str(&t).unwrap();
                if v["type"] == "error" {
                    error = Some(v);
                }
            }
            Some(Ok(Message::Close(frame))) => break frame.map(|f| u16::from(f.code)),
            Some(Ok(_)) => {}
            other => panic!("socket ended without a close frame: {other:?}"),
        }
    };
    let error = error.expect("an error frame before the close");
    assert_eq!(error["code"], "invalid_message");
    assert_eq!(error["fatal"], true);
    assert_eq!(close, Some(1007));
}

/// Runs a server on its own runtime, dropped when `run` returns, as the process's is when
/// `main` returns: whatever `run` did not wait for dies with it.
struct OwnRuntimeServer {
    addr: std::net::SocketAddr,
    state: std::sync::Arc<voxwire::AppState>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

fn start_own_runtime(config: Config, engines: Engines) -> OwnRuntimeServer {
    let (tx, rx) = std::sync::mpsc::channel();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let thread = std::thread::spawn(move || {
        let rt = tokio::runtime::Runtime::new().unwrap();
        rt.block_on(async move {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            let mut config = config;
            config.bind = listener.local_addr().unwrap();
            let state = voxwire::AppState::new(config, engines);
            tx.send((state.config.bind, state.clone())).unwrap();
            voxwire::run(listener, state, async move {
                let _ = stopped.await;
            })
            .await
            .unwrap();
        });
        drop(rt);
    });
    let (addr, state) = rx.recv().unwrap();
    OwnRuntimeServer {
        addr,
        state,
        stop: Some(stop),
        thread: Some(thread),
    }
}

#[tokio::test]
async fn shutdown_waits_for_every_call_to_say_goodbye() {
    let mut engines = Engines::fake();
    // Replies in progress when the signal comes, so the calls have work to stop.
    engines.llm = std::sync::Arc::new(voxwire::engines::llm::fake::FakeLlm {
        word_delay: Duration::from_millis(200),
    });
    let mut server = start_own_runtime(Config::for_tests(), engines);
    let mut sockets = Vec::new();
    for i in 0..12 {
        let token = server
            .state
            .auth
            .issue(&format!("user{i}"), None, None, Duration::from_secs(600))
            .unwrap();
        let url = format!("ws://{}/ws?token={token}", server.addr);
        let (mut ws, _) = tokio_tungstenite::connect_async(url).await.unwrap();
        recv_until(&mut ws, "connected").await;
        send(&mut ws, json!({"type": "start_call"})).await;
        recv_until(&mut ws, "call_started").await;
        send(
            &mut ws,
            json!({"type": "text", "text": "tell me a long story please"}),
        )
        .await;
        recv_until(&mut ws, "response").await;
        sockets.push(ws);
    }
    server.stop.take().unwrap().send(()).unwrap();
    for (i, ws) in sockets.iter_mut().enumerate() {
        let mut reason = None;
        let close = loop {
            match tokio::time::timeout(Duration::from_secs(20), ws.next())
                .await
                .expect("no goodbye")
            {
                Some(Ok(Message::Text(t))) => {
                    let v: Value = serde_json::from_str(&t).unwrap();
                    if v["type"] == "call_ended" {
                        reason = v["reason"].as_str().map(str::to_string);
                    }
                }
                Some(Ok(Message::Close(frame))) => break frame.map(|f| u16::from(f.code)),
                Some(Ok(_)) => {}
                other => panic!("call {i}: the socket ended without a close frame: {other:?}"),
            }
        };
        assert_eq!(reason.as_deref(), Some("server_shutdown"), "call {i}");
        assert_eq!(close, Some(1001), "call {i}");
    }
    let thread = server.thread.take().unwrap();
    tokio::task::spawn_blocking(move || thread.join().unwrap())
        .await
        .unwrap();
}

//! Calls survive the process: the real binary on an SQLite file, stopped with SIGTERM in the
//! middle of a call and started again on the same database; the history is read back and the
//! call resumed with it in the model's context.

mod common;

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::*;
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

const SECRET: &str = "restart-secret-0123456789abcdef";

struct Server {
    child: Child,
    port: u16,
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

async fn spawn(db: &str) -> Server {
    let port = free_port();
    let child = Command::new(env!("CARGO_BIN_EXE_voxwire"))
        .args(["serve", "--offline", "--bind", &format!("127.0.0.1:{port}")])
        .env("JWT_SECRET", SECRET)
        .env("VOXWIRE_STT", "fake")
        .env("VOXWIRE_LLM", "fake")
        .env("VOXWIRE_TTS", "fake")
        .env("VOXWIRE_VAD", "energy")
        .env("VOXWIRE_DATABASE_URL", db)
        .env(
            "VOXWIRE_AGENTS",
            concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/agents.toml"),
        )
        .env("RUST_LOG", "voxwire=warn")
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let server = Server { child, port };
    for _ in 0..200 {
        if let Ok(r) = reqwest::get(format!("http://127.0.0.1:{port}/health")).await {
            if r.status() == 200 {
                return server;
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("the server did not start");
}

impl Server {
    fn token(&self) -> String {
        voxwire::auth::Authenticator::new(SECRET.as_bytes())
            .issue("ada", None, None, Duration::from_secs(600))
            .unwrap()
    }

    async fn connect(&self) -> Ws {
        let mut req = format!("ws://127.0.0.1:{}/ws", self.port)
            .into_client_request()
            .unwrap();
        req.headers_mut().insert(
            "authorization",
            format!("Bearer {}", self.token()).parse().unwrap(),
        );
        let (mut ws, _) = tokio_tungstenite::connect_async(req).await.unwrap();
        recv_until(&mut ws, "connected").await;
        ws
    }

    async fn get(&self, path: &str) -> (u16, Value) {
        let r = reqwest::Client::new()
            .get(format!("http://127.0.0.1:{}{path}", self.port))
            .bearer_auth(self.token())
            .send()
            .await
            .unwrap();
        (r.status().as_u16(), r.json().await.unwrap_or(Value::Null))
    }

    /// SIGTERM, then wait for the process to exit.
    async fn terminate(mut self) -> std::process::ExitStatus {
        let pid = self.child.id().to_string();
        assert!(Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap()
            .success());
        tokio::task::spawn_blocking(move || self.child.wait().unwrap())
            .await
            .unwrap()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test]
async fn a_call_survives_a_restart_and_resumes_with_its_history() {
    let dir = std::env::temp_dir().join(format!("voxwire-restart-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let db = format!("sqlite://{}/calls/voxwire.db", dir.display());

    let first = spawn(&db).await;
    let mut ws = first.connect().await;
    send(
        &mut ws,
        json!({"type": "start_call", "turn_detection": {"mode": "manual"},
               "variables": {"name": "Ada"}}),
    )
    .await;
    let started = recv_until(&mut ws, "call_started").await.pop().unwrap();
    let call_id = started["call_id"].as_str().unwrap().to_string();
    send(&mut ws, json!({"type": "text", "text": "my name is Ada"})).await;
    recv_until(&mut ws, "metrics").await;
    // A spoken turn (the fake speech-to-text says how long it was).
    send(
        &mut ws,
        json!({"type": "audio", "audio": b64(&tone_pcm16(700, 16_000, 0.3))}),
    )
    .await;
    send(&mut ws, json!({"type": "commit"})).await;
    recv_until(&mut ws, "metrics").await;
    // SIGTERM in the middle of the call: it is told, and the process exits cleanly.
    let status = first.terminate().await;
    let ended = recv_until(&mut ws, "call_ended").await.pop().unwrap();
    assert_eq!(ended["reason"], "server_shutdown");
    assert_eq!(recv_close(&mut ws).await, Some(1001));
    assert!(status.success(), "{status}");

    // A new process on the same database.
    let second = spawn(&db).await;
    let (status, call) = second.get(&format!("/api/calls/{call_id}")).await;
    assert_eq!(status, 200, "{call}");
    assert_eq!(call["live"], false);
    assert_eq!(call["end_reason"], "server_shutdown");
    assert_eq!(call["turns"], 2);
    assert!(call["caller_audio_ms"].as_i64().unwrap() >= 600, "{call}");
    assert!(call["agent_audio_ms"].as_i64().unwrap() > 0, "{call}");
    let messages: Vec<(String, String)> = call["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            (
                m["role"].as_str().unwrap().to_string(),
                m["content"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    let expected = [
        ("user", "my name is Ada"),
        ("assistant", "You said: my name is Ada. That is turn 1."),
        ("user", "audio of 0.7 seconds"),
        (
            "assistant",
            "You said: audio of 0.7 seconds. That is turn 2.",
        ),
    ];
    assert_eq!(
        messages,
        expected
            .iter()
            .map(|(r, t)| (r.to_string(), t.to_string()))
            .collect::<Vec<_>>()
    );
    let items = call["items"].as_array().unwrap();
    assert_eq!(items.len(), 4);
    assert_eq!(items[0]["source"], "text");
    assert_eq!(items[2]["source"], "voice");
    assert_eq!(call["metrics"].as_array().unwrap().len(), 2);
    // Listed among the user's calls.
    let (status, list) = second.get("/api/calls?limit=5").await;
    assert_eq!(status, 200);
    assert_eq!(list["calls"][0]["call_id"], call_id.as_str());

    // Resumed: the model hears the whole history (the fake counts the user's turns).
    let mut ws = second.connect().await;
    send(&mut ws, json!({"type": "start_call", "call_id": call_id})).await;
    let started = recv_until(&mut ws, "call_started").await.pop().unwrap();
    assert_eq!(started["resumed"], true);
    assert_eq!(started["history_len"], 4);
    send(&mut ws, json!({"type": "text", "text": "what is my name"})).await;
    let frames = recv_until(&mut ws, "metrics").await;
    let reply = frames
        .iter()
        .find(|f| f["type"] == "response" && f["is_final"] == true)
        .unwrap();
    assert_eq!(reply["text"], "You said: what is my name. That is turn 3.");
    // Turn and item ids go on from where they were.
    assert_eq!(reply["turn_id"], 3);
    assert_eq!(reply["item_id"], 6);
    send(&mut ws, json!({"type": "end_call"})).await;
    recv_until(&mut ws, "call_ended").await;
    // Another user sees nothing of it.
    let other = voxwire::auth::Authenticator::new(SECRET.as_bytes())
        .issue("eve", None, None, Duration::from_secs(60))
        .unwrap();
    let r = reqwest::Client::new()
        .get(format!(
            "http://127.0.0.1:{}/api/calls/{call_id}",
            second.port
        ))
        .bearer_auth(other)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    assert!(second.terminate().await.success());
    let _ = std::fs::remove_dir_all(&dir);
}

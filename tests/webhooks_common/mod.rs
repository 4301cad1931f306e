//! The signed-webhook tests, one body run against SQLite (`webhooks_sqlite.rs`) and Postgres
//! (`webhooks_postgres.rs`): the real server with fake engines, calls over a real WebSocket,
//! and a receiver (an axum server on a free loopback port) that verifies each request as
//! `protocol.md` tells receivers to.
#![allow(dead_code)]

pub mod claims;
pub mod receiver;

use std::collections::HashMap;
use std::time::Duration;

use serde_json::{json, Value};
use voxwire::agents::Agents;
use voxwire::auth::Role;
use voxwire::config::WebhookSettings;
use voxwire::engines::Engines;
use voxwire::store::{DeliveryQuery, PENDING};
use voxwire::Config;

use crate::common::{self, recv_until, send, TestServer};
use crate::store_common::Db;
pub use claims::claims_are_exclusive_and_delivered_is_final;
use receiver::Receiver;

pub const SECRET: &str = "whsec-test-secret-0123456789abcdef";
const SECRET_VAR: &str = "VOXWIRE_TEST_HOOK_SECRET";
/// Bounds on things that must happen, not measures of speed.
pub const LONG: Duration = Duration::from_secs(60);

/// What the caller says: a card number the agent redacts.
pub const SAID: &str = "my card is 4111 1111 1111 1111";

/// A server whose default agent `hooked` (which masks cards) sends its webhooks to `url`,
/// retrying within milliseconds.
pub fn config(url: &str) -> Config {
    let mut c = Config::for_tests();
    let agents = format!(
        "default = \"hooked\"\n\
         [[agent]]\nname = \"hooked\"\nsystem_prompt = \"You take payments.\"\n\
         redact = [\"card\"]\nwebhook_url = \"{url}\"\nwebhook_secret_env = \"{SECRET_VAR}\"\n\
         [[agent]]\nname = \"quiet\"\nsystem_prompt = \"You say little.\"\n"
    );
    c.agents = Agents::parse(&agents).unwrap();
    let env = HashMap::from([(SECRET_VAR.to_string(), SECRET.to_string())]);
    c.webhooks = WebhookSettings {
        retry_min: Duration::from_millis(50),
        retry_max: Duration::from_millis(200),
        poll: Duration::from_millis(20),
        timeout: Duration::from_secs(5),
        ..WebhookSettings::from_env(&env, &c.agents).unwrap()
    };
    c
}

pub async fn server(db: &Db, url: &str) -> TestServer {
    common::start_with_store(config(url), Engines::fake(), db.store().await).await
}

pub fn token(server: &TestServer, sub: &str, role: Role) -> String {
    server
        .state
        .auth
        .issue_with_role(sub, None, None, role, Duration::from_secs(600))
        .unwrap()
}

/// Stops the server and waits for it to finish (its webhooks included).
pub async fn stop(mut server: TestServer) {
    let _ = server.stop.take().unwrap().send(());
    tokio::time::timeout(LONG, &mut server.task)
        .await
        .expect("the server stops")
        .unwrap()
        .unwrap();
}

/// A call of `ada` with one typed turn, ended by the caller. Returns its id.
pub async fn a_call(server: &TestServer) -> String {
    let (mut ws, id) = server.call("ada", json!({})).await;
    send(&mut ws, json!({"type": "text", "text": SAID})).await;
    recv_until(&mut ws, "metrics").await;
    send(&mut ws, json!({"type": "end_call"})).await;
    recv_until(&mut ws, "call_ended").await;
    id
}

pub async fn get(server: &TestServer, path: &str, token: &str) -> (u16, Value) {
    let r = reqwest::Client::new()
        .get(server.url(path))
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    (r.status().as_u16(), r.json().await.unwrap_or(Value::Null))
}

async fn post(server: &TestServer, path: &str, token: &str) -> u16 {
    reqwest::Client::new()
        .post(server.url(path))
        .bearer_auth(token)
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

/// The org's deliveries as an admin lists them, newest first (one page of 100).
pub async fn deliveries(server: &TestServer) -> Vec<Value> {
    let admin = token(server, "root", Role::Admin);
    let (status, body) = get(server, "/api/webhooks/deliveries?limit=100", &admin).await;
    assert_eq!(status, 200, "{body}");
    body["deliveries"].as_array().unwrap().clone()
}

/// Waits (at most `LONG`) until the listed deliveries satisfy `cond`.
pub async fn deliveries_until(
    server: &TestServer,
    what: &str,
    cond: impl Fn(&[Value]) -> bool,
) -> Vec<Value> {
    deliveries_within(server, LONG, what, cond).await
}

pub async fn deliveries_within(
    server: &TestServer,
    within: Duration,
    what: &str,
    cond: impl Fn(&[Value]) -> bool,
) -> Vec<Value> {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        let list = deliveries(server).await;
        if cond(&list) {
            return list;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "never happened: {what}: {list:#?}"
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

fn all_in(list: &[Value], n: usize, state: &str) -> bool {
    list.len() == n && list.iter().all(|d| d["state"] == state)
}

/// Every event of a call with a takeover reaches the receiver once, signed; the transcript
/// is masked; a tampered body and an old timestamp fail the documented verification; admins
/// list the deliveries, operators and callers may not.
pub async fn signed_events_reach_a_verifying_receiver(db: &Db) {
    let receiver = Receiver::start(SECRET).await;
    let server = server(db, &receiver.url()).await;
    let (mut ws, call_id) = server.call("ada", json!({})).await;
    send(&mut ws, json!({"type": "text", "text": SAID})).await;
    recv_until(&mut ws, "metrics").await;
    let op = token(&server, "olive", Role::Operator);
    let path = |what: &str| format!("/api/calls/{call_id}/{what}");
    assert_eq!(post(&server, &path("takeover"), &op).await, 200);
    recv_until(&mut ws, "takeover_started").await;
    assert_eq!(post(&server, &path("release"), &op).await, 200);
    recv_until(&mut ws, "takeover_ended").await;
    send(&mut ws, json!({"type": "end_call"})).await;
    recv_until(&mut ws, "call_ended").await;

    let got = receiver.until(4, LONG).await;
    // Deliveries go out side by side: in no promised order.
    let mut events: Vec<&str> = got.iter().map(|g| g.event.as_str()).collect();
    events.sort();
    assert_eq!(
        events,
        [
            "call.ended",
            "call.started",
            "takeover.ended",
            "takeover.started"
        ]
    );
    let of = |event: &str| got.iter().find(|g| g.event == event).unwrap();
    for g in &got {
        assert_eq!(g.verified, Ok(()), "{}", g.text());
        assert!(!g.duplicate);
        assert_eq!(g.content_type, "application/json");
        let body = g.json();
        assert_eq!(body["id"], g.id.as_str());
        assert_eq!(body["type"], g.event.as_str());
        assert_eq!(body["data"]["call_id"], call_id.as_str());
        assert_eq!(body["data"]["agent"], "hooked");
        assert_eq!(body["data"]["sub"], "ada");
        assert!(!g.text().contains("4111"), "unmasked: {}", g.text());
    }
    let ids: std::collections::HashSet<&str> = got.iter().map(|g| g.id.as_str()).collect();
    assert_eq!(ids.len(), 4, "delivery ids are unique");
    assert_eq!(of("takeover.started").json()["data"]["operator"], "olive");
    assert_eq!(of("takeover.ended").json()["data"]["operator"], "olive");
    assert_eq!(of("call.started").json()["data"]["resumed"], false);
    let ended = of("call.ended").json();
    let data = &ended["data"];
    assert_eq!(data["end_reason"], "client_ended");
    assert_eq!(data["turns"], 1);
    assert!(data["duration_ms"].as_i64().unwrap() >= 0, "{data}");
    let transcript: Vec<(&str, &str)> = data["transcript"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| (i["role"].as_str().unwrap(), i["text"].as_str().unwrap()))
        .collect();
    assert_eq!(
        transcript,
        [
            ("user", "my card is [card]"),
            ("assistant", "You said: my card is [card]. That is turn 1.")
        ]
    );
    assert_eq!(data["metrics"]["turns"].as_array().unwrap().len(), 1);
    assert!(data["metrics"]["turns"][0]["timings"].is_object(), "{data}");
    // The call's summary (the fake model's, drawn from the call) comes masked like the
    // transcript; the agent asks for no fields and does not record.
    let summary = data["summary"].as_str().unwrap_or_default();
    assert!(
        summary.contains("[card]") && !summary.contains("4111"),
        "{data}"
    );
    assert_eq!(data["fields"], json!({}), "{data}");
    assert!(data["recording_url"].is_null(), "{data}");

    // What the documented verification refuses: a changed body, a signature too old, a
    // delivery seen before.
    let g = of("call.ended");
    let now = receiver::now();
    let tampered = g.text().replace("client_ended", "max_duration");
    assert_eq!(
        receiver::verify(SECRET.as_bytes(), &g.signature, tampered.as_bytes(), now),
        Err("no signature matches")
    );
    assert_eq!(
        receiver::verify(
            SECRET.as_bytes(),
            &g.signature,
            g.body.as_slice(),
            now + 301
        ),
        Err("timestamp outside the tolerance")
    );
    assert_eq!(
        receiver::verify(b"another-secret-0123456789", &g.signature, &g.body, now),
        Err("no signature matches")
    );
    assert_eq!(receiver.replay(g, Some(tampered.as_bytes())).await, 400);
    assert_eq!(receiver.replay(g, None).await, 200);
    assert!(
        receiver.got().last().unwrap().duplicate,
        "replay not noticed"
    );

    // Admins list the deliveries, newest first, a page at a time.
    let list = deliveries_until(&server, "all delivered", |l| all_in(l, 4, "delivered")).await;
    for d in &list {
        assert_eq!(d["attempts"], 1, "{d}");
        assert_eq!(d["last_status"], 200, "{d}");
        assert!(
            d["last_error"].is_null() && d["next_attempt_ms"].is_null(),
            "{d}"
        );
        assert!(d["delivered_at_ms"].as_i64().is_some(), "{d}");
        assert_eq!(d["url"], receiver.url());
        assert!(d.get("body").is_none(), "bodies are not listed");
    }
    let admin = token(&server, "root", Role::Admin);
    let (status, page) = get(&server, "/api/webhooks/deliveries?limit=3", &admin).await;
    assert_eq!(status, 200);
    assert_eq!(page["deliveries"].as_array().unwrap().len(), 3);
    let before = page["next_before"].as_str().unwrap().to_string();
    let (status, rest) = get(
        &server,
        &format!("/api/webhooks/deliveries?limit=3&before={before}"),
        &admin,
    )
    .await;
    assert_eq!(status, 200, "{rest}");
    assert_eq!(rest["deliveries"].as_array().unwrap().len(), 1);
    assert_eq!(rest["deliveries"][0]["id"], list[3]["id"]);
    assert!(rest["next_before"].is_null());
    // Another org's admin sees none of them.
    let other = server
        .state
        .auth
        .issue_with_role("root", Some("other"), None, Role::Admin, LONG)
        .unwrap();
    let (_, theirs) = get(&server, "/api/webhooks/deliveries", &other).await;
    assert_eq!(theirs["deliveries"], json!([]));
    for role in [Role::Operator, Role::Caller] {
        let (status, body) = get(
            &server,
            "/api/webhooks/deliveries",
            &token(&server, "x", role),
        )
        .await;
        assert_eq!(status, 403, "{role:?}: {body}");
        assert_eq!(body["error"]["code"], "forbidden");
    }
    let (status, _) = get(&server, "/api/webhooks/deliveries?before=x", &admin).await;
    assert_eq!(status, 400);

    // A call of an agent without a webhook sends nothing.
    let (mut ws, _) = server.call("ada", json!({"agent": "quiet"})).await;
    send(&mut ws, json!({"type": "end_call"})).await;
    recv_until(&mut ws, "call_ended").await;
    assert_eq!(deliveries(&server).await.len(), 4);

    // A call that ends while taken over ends its takeover first.
    let (mut ws, call_id) = server.call("ada", json!({})).await;
    let path = |what: &str| format!("/api/calls/{call_id}/{what}");
    assert_eq!(post(&server, &path("takeover"), &op).await, 200);
    recv_until(&mut ws, "takeover_started").await;
    send(&mut ws, json!({"type": "end_call"})).await;
    recv_until(&mut ws, "call_ended").await;
    let got = receiver.until(10, LONG).await;
    let mut events: Vec<&str> = got[6..].iter().map(|g| g.event.as_str()).collect();
    events.sort();
    assert_eq!(
        events,
        [
            "call.ended",
            "call.started",
            "takeover.ended",
            "takeover.started"
        ]
    );
    assert!(got[6..].iter().all(|g| g.verified.is_ok()));
    let ended = got[6..]
        .iter()
        .find(|g| g.event == "takeover.ended")
        .unwrap();
    assert_eq!(ended.json()["data"]["operator"], "olive");
    assert_eq!(ended.json()["data"]["call_id"], call_id.as_str());
    stop(server).await;
    assert_eq!(receiver.got().len(), 10, "nothing more was sent");
}

/// The receiver is down, then up: each event is delivered once, after retries.
pub async fn receiver_down_then_up_is_delivered_once(db: &Db) {
    let port = receiver::free_port();
    let server = server(db, &receiver::url_on(port)).await;
    a_call(&server).await;
    let list = deliveries_until(&server, "retried while down", |l| {
        l.len() == 2
            && l.iter()
                .all(|d| d["state"] == "pending" && d["attempts"].as_i64() >= Some(2))
    })
    .await;
    for d in &list {
        assert!(
            d["last_error"]
                .as_str()
                .unwrap()
                .contains("cannot connect to the receiver"),
            "{d}"
        );
        assert!(d["last_status"].is_null(), "{d}");
        assert!(d["next_attempt_ms"].as_i64().is_some(), "{d}");
    }
    let receiver = Receiver::start_on(port, SECRET).await;
    let list = deliveries_until(&server, "delivered", |l| all_in(l, 2, "delivered")).await;
    // A few more rounds of the worker: nothing is sent again.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let got = receiver.got();
    assert_eq!(got.len(), 2, "{got:#?}");
    for g in &got {
        assert_eq!(g.verified, Ok(()));
        assert!(!g.duplicate);
        assert!(list.iter().any(|d| d["id"] == g.id.as_str()));
    }
    stop(server).await;
}

/// The server stops while deliveries wait for a retry; a new one on the same database
/// delivers them, once each.
pub async fn a_restart_mid_retry_delivers_once(db: &Db) {
    let port = receiver::free_port();
    let first = server(db, &receiver::url_on(port)).await;
    let call_id = a_call(&first).await;
    deliveries_until(&first, "tried while down", |l| {
        l.len() == 2 && l.iter().all(|d| d["attempts"].as_i64() >= Some(1))
    })
    .await;
    stop(first).await;

    let receiver = Receiver::start_on(port, SECRET).await;
    let second = server(db, &receiver::url_on(port)).await;
    let list = deliveries_until(&second, "delivered", |l| all_in(l, 2, "delivered")).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let got = receiver.got();
    assert_eq!(got.len(), 2, "{got:#?}");
    let events: Vec<&str> = got.iter().map(|g| g.event.as_str()).collect();
    assert!(events.contains(&"call.started") && events.contains(&"call.ended"));
    for g in &got {
        assert_eq!(g.verified, Ok(()));
        assert!(!g.duplicate);
        assert_eq!(g.json()["data"]["call_id"], call_id.as_str());
    }
    assert!(list.iter().all(|d| d["attempts"].as_i64() >= Some(2)));
    stop(second).await;
}

/// A 4xx (other than 408 and 429) is not retried: the delivery is failed with the status.
pub async fn a_4xx_is_a_permanent_failure(db: &Db) {
    let receiver = Receiver::start(SECRET).await;
    receiver.answer(410);
    let server = server(db, &receiver.url()).await;
    a_call(&server).await;
    let list = deliveries_until(&server, "failed", |l| all_in(l, 2, "failed")).await;
    for d in &list {
        assert_eq!(d["attempts"], 1, "{d}");
        assert_eq!(d["last_status"], 410, "{d}");
        assert!(d["last_error"].as_str().unwrap().contains("410"), "{d}");
        assert!(d["next_attempt_ms"].is_null() && d["delivered_at_ms"].is_null());
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(receiver.got().len(), 2, "a refused delivery was sent again");
    // A 503 is retried.
    receiver.answer(503);
    a_call(&server).await;
    deliveries_until(&server, "a 503 retried", |l| {
        l.len() == 4
            && l[..2].iter().all(|d| {
                d["state"] == "pending"
                    && d["attempts"].as_i64() >= Some(2)
                    && d["last_status"] == 503
            })
    })
    .await;
    receiver.answer(0);
    deliveries_until(&server, "delivered after the 503s", |l| {
        l[..2].iter().all(|d| d["state"] == "delivered")
    })
    .await;
    stop(server).await;
}

/// The server stops in the middle of requests: the attempts are abandoned and their claims let
/// go, so the next server sends them again at once (not after the claims lapse), with the same
/// delivery ids, which the receiver recognises as seen.
pub async fn a_stop_mid_request_sends_again_with_the_same_id(db: &Db) {
    let receiver = Receiver::start(SECRET).await;
    receiver.delay(Duration::from_secs(30));
    let mut hanging = config(&receiver.url());
    hanging.shutdown_grace = Duration::ZERO;
    // A claim lasts the timeout and 30 s more: 90 s.
    hanging.webhooks.timeout = Duration::from_secs(60);
    let first = common::start_with_store(hanging, Engines::fake(), db.store().await).await;
    a_call(&first).await;
    receiver.until(2, LONG).await;
    stop(first).await;

    let store = db.store().await;
    let q = DeliveryQuery {
        limit: 10,
        ..DeliveryQuery::default()
    };
    let rows = store.list_deliveries(&q).await.unwrap();
    assert_eq!(rows.len(), 2);
    for r in &rows {
        assert_eq!((r.state.as_str(), r.attempts), (PENDING, 1), "{r:?}");
        assert!(
            r.last_error
                .as_deref()
                .unwrap_or_default()
                .contains("interrupted"),
            "{r:?}"
        );
    }
    store.close().await;

    receiver.delay(Duration::ZERO);
    let second = server(db, &receiver.url()).await;
    deliveries_within(&second, Duration::from_secs(20), "sent again", |l| {
        all_in(l, 2, "delivered")
    })
    .await;
    let got = receiver.got();
    assert_eq!(got.len(), 4, "{got:#?}");
    assert!(got.iter().all(|g| g.verified.is_ok()));
    let (again, first_time): (Vec<&receiver::Got>, Vec<&receiver::Got>) =
        got.iter().partition(|g| g.duplicate);
    assert_eq!(again.len(), 2);
    for g in again {
        assert!(first_time.iter().any(|f| f.id == g.id && f.body == g.body));
    }
    stop(second).await;
}

/// A webhook whose secret variable is unset, or too short, stops the server at start with
/// exit code 64 and a message naming the agent and the variable, never the value.
pub fn a_webhook_without_its_secret_stops_the_start() {
    let dir = std::env::temp_dir().join(format!("voxwire-hook-config-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let agents = dir.join("agents.toml");
    std::fs::write(
        &agents,
        format!(
            "[[agent]]\nname = \"desk\"\nsystem_prompt = \"p\"\n\
             webhook_url = \"https://hooks.example/voxwire\"\nwebhook_secret_env = \"{SECRET_VAR}\"\n"
        ),
    )
    .unwrap();
    for secret in [None, Some("tiny-s3cret")] {
        let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_voxwire"));
        cmd.args(["serve", "--offline", "--bind", "127.0.0.1:0"])
            .env("VOXWIRE_AGENTS", &agents)
            .env("VOXWIRE_DATABASE_URL", "memory")
            .env_remove(SECRET_VAR);
        if let Some(s) = secret {
            cmd.env(SECRET_VAR, s);
        }
        let out = cmd.output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(64), "{stderr}");
        assert!(
            stderr.contains("agent `desk`") && stderr.contains(SECRET_VAR),
            "{stderr}"
        );
        assert!(
            !stderr.contains("tiny-s3cret"),
            "the secret was shown: {stderr}"
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
}

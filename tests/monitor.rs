//! The monitor stream over real sockets: an operator sees every event of its org's calls in
//! order and nothing of another org's, filters, roles, `Last-Event-ID` replay, a lagging reader,
//! and the cap on streams per org.

mod common;

use std::pin::Pin;
use std::time::Duration;

use common::*;
use eventsource_stream::Eventsource;
use futures::{Stream, StreamExt};
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use voxwire::auth::Role;
use voxwire::Config;

type Events = Pin<Box<dyn Stream<Item = Result<eventsource_stream::Event, String>> + Send>>;

/// One monitor stream, read event by event.
struct Monitor {
    events: Events,
}

impl Monitor {
    /// The next event: its SSE id, if any, and its JSON.
    async fn next(&mut self) -> (Option<i64>, Value) {
        let e = tokio::time::timeout(Duration::from_secs(20), self.events.next())
            .await
            .expect("timed out waiting for a monitor event")
            .expect("the monitor stream ended")
            .expect("bad monitor stream");
        let id = (!e.id.is_empty()).then(|| e.id.parse().expect("numeric id"));
        (id, serde_json::from_str(&e.data).expect("JSON data"))
    }

    /// Events up to and including `call_ended` of `call_id`.
    async fn until_ended(&mut self, call_id: &str) -> Vec<(Option<i64>, Value)> {
        let mut out = Vec::new();
        loop {
            let (id, v) = self.next().await;
            let done = v["type"] == "call_ended" && v["call_id"] == call_id;
            out.push((id, v));
            if done {
                return out;
            }
        }
    }
}

fn operator(server: &TestServer, sub: &str, org: Option<&str>) -> String {
    server
        .state
        .auth
        .issue_with_role(sub, org, None, Role::Operator, Duration::from_secs(600))
        .unwrap()
}

async fn get(server: &TestServer, path: &str, token: &str) -> reqwest::Response {
    reqwest::Client::new()
        .get(server.url(path))
        .bearer_auth(token)
        .send()
        .await
        .unwrap()
}

async fn open(server: &TestServer, query: &str, token: &str, last_id: Option<i64>) -> Monitor {
    let mut req = reqwest::Client::new()
        .get(server.url(&format!("/api/monitor/events{query}")))
        .bearer_auth(token);
    if let Some(id) = last_id {
        req = req.header("last-event-id", id.to_string());
    }
    let resp = req.send().await.unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["content-type"], "text/event-stream");
    let events = resp
        .bytes_stream()
        .eventsource()
        .map(|r| r.map_err(|e| e.to_string()))
        .boxed();
    Monitor { events }
}

/// A caller's call under its own token (its `sub` and `org`).
async fn call_as(server: &TestServer, sub: &str, org: Option<&str>) -> (Ws, String) {
    let token = server
        .state
        .auth
        .issue(sub, org, None, Duration::from_secs(600))
        .unwrap();
    let mut req = server.ws_url().into_client_request().unwrap();
    req.headers_mut()
        .insert("authorization", format!("Bearer {token}").parse().unwrap());
    let (mut ws, _) = tokio_tungstenite::connect_async(req).await.unwrap();
    assert_eq!(recv(&mut ws).await["type"], "connected");
    send(&mut ws, json!({"type": "start_call"})).await;
    let started = recv(&mut ws).await;
    assert_eq!(started["type"], "call_started", "{started}");
    (ws, started["call_id"].as_str().unwrap().to_string())
}

async fn turn(ws: &mut Ws, text: &str) {
    send(ws, json!({"type": "text", "text": text})).await;
    recv_until(ws, "response_done").await;
}

async fn hang_up(ws: &mut Ws) {
    send(ws, json!({"type": "end_call"})).await;
    recv_until(ws, "call_ended").await;
}

fn types(events: &[(Option<i64>, Value)]) -> Vec<String> {
    events
        .iter()
        .map(|(_, v)| v["type"].as_str().unwrap_or_default().to_string())
        .collect()
}

/// The monitored events of a call in its stored log, as (stream id, seq, kind).
async fn logged(server: &TestServer, call_id: &str) -> Vec<(i64, i64, String)> {
    let svc = &server.state.call_services;
    assert!(svc.writer.flush(Duration::from_secs(10)).await);
    svc.store
        .events(call_id, 0, 1000)
        .await
        .unwrap()
        .into_iter()
        .filter_map(|e| Some((e.stream_id?, e.seq, e.kind)))
        .collect()
}

#[tokio::test]
async fn an_operator_sees_every_event_of_its_orgs_calls_in_order_and_nothing_else() {
    let server = start().await;
    let op = operator(&server, "sup", Some("acme"));
    let mut monitor = open(&server, "", &op, None).await;
    let (id, snapshot) = monitor.next().await;
    assert_eq!((id, snapshot["type"].as_str()), (None, Some("live_calls")));
    assert_eq!(snapshot["calls"], json!([]));

    let (mut other, other_id) = call_as(&server, "mallory", Some("globex")).await;
    let (mut ws, call_id) = call_as(&server, "alice", Some("acme")).await;
    turn(&mut other, "secret plans").await;
    turn(&mut ws, "when do you open").await;
    turn(&mut ws, "and on sunday").await;
    hang_up(&mut ws).await;
    hang_up(&mut other).await;

    let events = monitor.until_ended(&call_id).await;
    for (_, v) in &events {
        assert_eq!(v["call_id"], call_id.as_str(), "{v}");
        assert_ne!(v["call_id"], other_id.as_str());
        assert_eq!(
            (v["sub"].as_str(), v["agent"].is_string()),
            (Some("alice"), true)
        );
        assert!(v["at"].as_i64().unwrap() > 1_600_000_000_000, "{v}");
        assert!(v.get("audio").is_none() && v.get("samples").is_none());
    }
    let kinds = types(&events);
    assert_eq!(kinds.first().map(String::as_str), Some("call_started"));
    assert_eq!(kinds.last().map(String::as_str), Some("call_ended"));
    for k in ["transcript", "response", "metrics"] {
        assert_eq!(
            kinds.iter().filter(|t| *t == k).count(),
            2,
            "{k}: {kinds:?}"
        );
    }
    let response = events
        .iter()
        .find(|(_, v)| v["type"] == "response")
        .unwrap();
    assert_eq!(
        response.1["text"],
        "You said: when do you open. That is turn 1."
    );
    // Every monitored event of the log, in the log's order, with the log's ids: no more, no less.
    let ids: Vec<i64> = events.iter().map(|(id, _)| id.unwrap()).collect();
    assert!(ids.windows(2).all(|w| w[0] < w[1]), "{ids:?}");
    let seqs: Vec<i64> = events
        .iter()
        .map(|(_, v)| v["seq"].as_i64().unwrap())
        .collect();
    let log = logged(&server, &call_id).await;
    assert_eq!(
        log.iter()
            .map(|(id, seq, _)| (*id, *seq))
            .collect::<Vec<_>>(),
        ids.iter().copied().zip(seqs).collect::<Vec<_>>()
    );
    assert_eq!(
        log.iter().map(|(_, _, k)| k.clone()).collect::<Vec<_>>(),
        kinds
    );
}

#[tokio::test]
async fn filters_and_the_snapshot_narrow_the_stream() {
    let server = start().await;
    let op = operator(&server, "sup", None);
    let mut by_sub = open(&server, "?sub=alice", &op, None).await;
    by_sub.next().await;
    let (mut alice, alice_call) = call_as(&server, "alice", None).await;
    let (mut bob, bob_call) = call_as(&server, "bob", None).await;
    let mut by_call = open(&server, &format!("?call_id={bob_call}"), &op, None).await;
    let (_, snapshot) = by_call.next().await;
    let calls = snapshot["calls"].as_array().unwrap();
    assert_eq!(calls.len(), 1, "{snapshot}");
    assert_eq!(
        (calls[0]["call_id"].as_str(), calls[0]["sub"].as_str()),
        (Some(bob_call.as_str()), Some("bob"))
    );
    assert_eq!(calls[0]["state"], "listening");
    assert!(calls[0]["started_at"].as_i64().unwrap() > 0);
    let mut with_deltas = open(&server, "?sub=bob&deltas=true", &op, None).await;
    with_deltas.next().await;

    turn(&mut alice, "hello").await;
    turn(&mut bob, "good day").await;
    hang_up(&mut alice).await;
    hang_up(&mut bob).await;

    let a = by_sub.until_ended(&alice_call).await;
    assert!(a.iter().all(|(_, v)| v["sub"] == "alice"), "{a:?}");
    let b = by_call.until_ended(&bob_call).await;
    assert!(b.iter().all(|(_, v)| v["call_id"] == bob_call.as_str()));
    assert!(!types(&b).contains(&"response_delta".to_string()));
    let d = with_deltas.until_ended(&bob_call).await;
    let text: String = d
        .iter()
        .filter(|(_, v)| v["type"] == "response_delta")
        .map(|(_, v)| v["delta"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(text.trim(), "You said: good day. That is turn 1.");
    // A bad filter value is refused plainly.
    let r = get(&server, "/api/monitor/events?deltas=maybe", &op).await;
    assert_eq!(r.status(), 400);
}

#[tokio::test]
async fn roles_decide_who_watches_and_who_reads_calls() {
    let server = start().await;
    let caller = server.token("alice");
    let r = get(&server, "/api/monitor/events", &caller).await;
    assert_eq!(r.status(), 403);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["error"]["code"], "forbidden");
    let r = get(&server, "/api/monitor/events", "nope").await;
    assert_eq!(r.status(), 401);
    // A token with a role this server does not know: 401 naming the role.
    let exp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
        + 60;
    let claims = json!({"sub": "x", "exp": exp, "role": "root"});
    let forged = jsonwebtoken::encode(
        &jsonwebtoken::Header::default(),
        &claims,
        &jsonwebtoken::EncodingKey::from_secret(b"test-secret-0123456789abcdef"),
    )
    .unwrap();
    let r = get(&server, "/api/calls", &forged).await;
    assert_eq!(r.status(), 401);
    let body: Value = r.json().await.unwrap();
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("unknown role `root`"),
        "{body}"
    );

    // Operators read and list every call of their own org, callers only their own.
    let (mut ws, call_id) = call_as(&server, "alice", Some("acme")).await;
    turn(&mut ws, "hi").await;
    hang_up(&mut ws).await;
    assert!(
        server
            .state
            .call_services
            .writer
            .flush(Duration::from_secs(10))
            .await
    );
    let acme = operator(&server, "sup", Some("acme"));
    let globex = operator(&server, "spy", Some("globex"));
    let path = format!("/api/calls/{call_id}");
    assert_eq!(get(&server, &path, &acme).await.status(), 200);
    assert_eq!(get(&server, &path, &globex).await.status(), 404);
    assert_eq!(
        get(&server, &path, &server.token("bob")).await.status(),
        404
    );
    let list: Value = get(&server, "/api/calls", &acme)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(list["calls"][0]["call_id"], call_id.as_str());
    assert_eq!(list["calls"][0]["sub"], "alice");
    let list: Value = get(&server, "/api/calls?sub=bob", &acme)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(list["calls"], json!([]));
    let list: Value = get(&server, "/api/calls", &globex)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(list["calls"], json!([]));
}

#[tokio::test]
async fn demo_mode_hands_out_operator_tokens_on_loopback() {
    let mut config = Config::for_tests();
    config.jwt_secret = None;
    let demo = start_with(config, voxwire::engines::Engines::fake()).await;
    let body: Value = reqwest::get(demo.url("/api/demo/token?role=operator"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(body["role"], "operator");
    let mut m = open(&demo, "", body["token"].as_str().unwrap(), None).await;
    assert_eq!(m.next().await.1["type"], "live_calls");
    let r = reqwest::get(demo.url("/api/demo/token?role=admin"))
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    let caller: Value = reqwest::get(demo.url("/api/demo/token"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let r = get(
        &demo,
        "/api/monitor/events",
        caller["token"].as_str().unwrap(),
    )
    .await;
    assert_eq!(r.status(), 403);
    // With a secret there is no demo mode: no tokens of any role.
    let server = start().await;
    let r = reqwest::get(server.url("/api/demo/token?role=operator"))
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
}

#[tokio::test]
async fn last_event_id_replays_exactly_the_missed_events() {
    let dir = std::env::temp_dir().join(format!("voxwire-monitor-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let store = voxwire::store::Store::connect(&format!("sqlite://{}/calls.db", dir.display()))
        .await
        .unwrap();
    let server = start_with_store(
        Config::for_tests(),
        voxwire::engines::Engines::fake(),
        store,
    )
    .await;
    let op = operator(&server, "sup", Some("acme"));
    let mut whole = open(&server, "", &op, None).await;
    whole.next().await;
    let mut first = open(&server, "", &op, None).await;
    first.next().await;

    let (mut ws, call_id) = call_as(&server, "alice", Some("acme")).await;
    turn(&mut ws, "first question").await;
    // The first reader takes events up to the first reply, then its connection drops.
    let mut seen = Vec::new();
    loop {
        let (id, v) = first.next().await;
        seen.push(id.unwrap());
        if v["type"] == "response" {
            break;
        }
    }
    drop(first);
    turn(&mut ws, "second question").await;
    turn(&mut ws, "third question").await;
    let last = *seen.last().unwrap();
    let mut again = open(&server, "", &op, Some(last)).await;
    assert_eq!(again.next().await.1["type"], "live_calls");
    hang_up(&mut ws).await;
    let rest = again.until_ended(&call_id).await;
    let all = whole.until_ended(&call_id).await;
    let resumed: Vec<i64> = seen
        .iter()
        .copied()
        .chain(rest.iter().map(|(id, _)| id.unwrap()))
        .collect();
    let expected: Vec<i64> = all.iter().map(|(id, _)| id.unwrap()).collect();
    assert!(rest.len() > 5, "{rest:?}");
    assert_eq!(resumed, expected, "no gap, no duplicate");
    assert_eq!(
        rest.iter().map(|(_, v)| v.clone()).collect::<Vec<_>>(),
        all[seen.len()..]
            .iter()
            .map(|(_, v)| v.clone())
            .collect::<Vec<_>>(),
        "replayed events read as they were sent live"
    );
    // An id that is not one of ours is refused plainly.
    let r = reqwest::Client::new()
        .get(server.url("/api/monitor/events"))
        .bearer_auth(&op)
        .header("last-event-id", "yesterday")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["error"]["code"], "invalid_last_event_id");
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn a_lagging_reader_is_told_what_it_lost_and_calls_go_on() {
    let mut config = Config::for_tests();
    config.net.monitor_buffer = 16;
    let server = start_with(config, voxwire::engines::Engines::fake()).await;
    let op = operator(&server, "sup", None);
    // A reader with a tiny receive window that reads nothing while the calls talk.
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(2048).unwrap();
    let mut slow = socket.connect(server.addr).await.unwrap();
    let request = format!(
        "GET /api/monitor/events?deltas=true HTTP/1.1\r\nhost: x\r\nauthorization: Bearer {op}\r\n\r\n"
    );
    slow.write_all(request.as_bytes()).await.unwrap();

    let words = vec!["word"; 150].join(" ");
    let mut callers = Vec::new();
    for i in 0..4 {
        let words = words.clone();
        let (mut ws, id) = call_as(&server, &format!("caller-{i}"), None).await;
        callers.push(tokio::spawn(async move {
            for _ in 0..10 {
                turn(&mut ws, &words).await;
            }
            hang_up(&mut ws).await;
            id
        }));
    }
    let mut ids = Vec::new();
    for c in callers {
        let id = tokio::time::timeout(Duration::from_secs(60), c)
            .await
            .expect("the calls' turns went on")
            .unwrap();
        ids.push(id);
    }
    // Every turn of every call was answered and stored, whatever the slow reader did.
    for id in &ids {
        let log = logged(&server, id).await;
        assert_eq!(log.iter().filter(|(_, _, k)| k == "response").count(), 10);
    }
    // The slow reader, reading at last, is told how many events it lost, and goes on.
    let mut seen = Vec::new();
    let mut buf = vec![0u8; 64 * 1024];
    let found = tokio::time::timeout(Duration::from_secs(30), async {
        loop {
            let n = slow.read(&mut buf).await.unwrap();
            assert!(n > 0, "the stream closed");
            seen.extend_from_slice(&buf[..n]);
            let text = String::from_utf8_lossy(&seen);
            if let Some(at) = text.find("\"type\":\"lagged\"") {
                let tail = &text[at..];
                if tail.contains("call_ended") {
                    return tail.to_string();
                }
            }
        }
    })
    .await
    .expect("no `lagged` event");
    assert!(found.contains("\"missed\":"), "{found}");
    assert!(found.contains("\"reason\":\"slow_reader\""), "{found}");
}

#[tokio::test]
async fn the_monitor_cap_gives_429_and_slots_come_back() {
    let mut config = Config::for_tests();
    config.net.max_monitors = 2;
    let server = start_with(config, voxwire::engines::Engines::fake()).await;
    let op = operator(&server, "sup", Some("acme"));
    let a = open(&server, "", &op, None).await;
    let _b = open(&server, "", &op, None).await;
    let r = get(&server, "/api/monitor/events", &op).await;
    assert_eq!(r.status(), 429);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["error"]["code"], "too_many_monitors");
    // Another org has its own share.
    let _c = open(&server, "", &operator(&server, "x", Some("globex")), None).await;
    drop(a);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let r = get(&server, "/api/monitor/events", &op).await;
        if r.status() == 200 {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the slot never came back"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

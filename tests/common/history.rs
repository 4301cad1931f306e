//! Helpers for the call history tests (`history.rs`, `stats.rs`): tokens, requests, and
//! calls made by fake-engine callers.

use std::time::Duration;

use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use voxwire::auth::Role;

use super::{recv, recv_until, send, TestServer, Ws};

pub fn operator(server: &TestServer, org: Option<&str>) -> String {
    server
        .state
        .auth
        .issue_with_role("sup", org, None, Role::Operator, Duration::from_secs(600))
        .unwrap()
}

pub fn caller(server: &TestServer, sub: &str, org: Option<&str>) -> String {
    server
        .state
        .auth
        .issue(sub, org, None, Duration::from_secs(600))
        .unwrap()
}

pub async fn get(server: &TestServer, path: &str, token: &str) -> reqwest::Response {
    reqwest::Client::new()
        .get(server.url(path))
        .bearer_auth(token)
        .send()
        .await
        .unwrap()
}

pub async fn json_of(server: &TestServer, path: &str, token: &str) -> Value {
    let r = get(server, path, token).await;
    assert_eq!(r.status(), 200, "{path}");
    r.json().await.unwrap()
}

/// The status and error code of a refused request.
pub async fn refused(server: &TestServer, path: &str, token: &str) -> (u16, String) {
    let r = get(server, path, token).await;
    let status = r.status().as_u16();
    let body: Value = r.json().await.unwrap();
    let code = body["error"]["code"].as_str();
    (
        status,
        code.unwrap_or_else(|| panic!("{path}: {body}")).to_string(),
    )
}

/// A caller's call, started under its own token.
pub async fn call_as(server: &TestServer, sub: &str, org: Option<&str>) -> (Ws, String) {
    let mut req = server.ws_url().into_client_request().unwrap();
    let bearer = format!("Bearer {}", caller(server, sub, org));
    req.headers_mut()
        .insert("authorization", bearer.parse().unwrap());
    let (mut ws, _) = tokio_tungstenite::connect_async(req).await.unwrap();
    assert_eq!(recv(&mut ws).await["type"], "connected");
    send(&mut ws, json!({"type": "start_call"})).await;
    let started = recv(&mut ws).await;
    assert_eq!(started["type"], "call_started", "{started}");
    // Calls a few milliseconds apart start at distinct times.
    tokio::time::sleep(Duration::from_millis(5)).await;
    (ws, started["call_id"].as_str().unwrap().to_string())
}

pub async fn turn(ws: &mut Ws, text: &str) {
    send(ws, json!({"type": "text", "text": text})).await;
    recv_until(ws, "response_done").await;
}

pub async fn hang_up(ws: &mut Ws) {
    send(ws, json!({"type": "end_call"})).await;
    recv_until(ws, "call_ended").await;
}

/// A finished call of `turns` typed lines.
pub async fn finished_call(
    server: &TestServer,
    sub: &str,
    org: Option<&str>,
    turns: &[&str],
) -> String {
    let (mut ws, id) = call_as(server, sub, org).await;
    for t in turns {
        turn(&mut ws, t).await;
    }
    hang_up(&mut ws).await;
    id
}

pub async fn flush(server: &TestServer) {
    assert!(
        server
            .state
            .call_services
            .writer
            .flush(Duration::from_secs(10))
            .await
    );
}

pub fn ids(list: &Value) -> Vec<String> {
    list["calls"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["call_id"].as_str().unwrap().to_string())
        .collect()
}

/// `%` and other characters a query string needs escaped.
pub fn enc(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'-' | b'.' | b'~' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

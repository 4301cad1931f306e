//! Authentication of the socket and the HTTP routes: every way a token can be wrong, every way
//! it can be sent, origins, expiry during a call, and local demo mode.

mod common;

use std::time::Duration;

use common::*;
use jsonwebtoken::{encode, Algorithm, EncodingKey, Header};
use serde_json::json;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Error as WsError;

const SECRET: &[u8] = b"test-secret-0123456789abcdef";

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

async fn status_of(
    req: tokio_tungstenite::tungstenite::handshake::client::Request,
) -> (u16, serde_json::Value) {
    match tokio_tungstenite::connect_async(req).await {
        Ok(_) => (101, json!(null)),
        Err(WsError::Http(resp)) => {
            let body = resp.body().clone().unwrap_or_default();
            (
                resp.status().as_u16(),
                serde_json::from_slice(&body).unwrap_or(json!(null)),
            )
        }
        Err(e) => panic!("unexpected error {e}"),
    }
}

fn with_bearer(
    server: &TestServer,
    token: &str,
) -> tokio_tungstenite::tungstenite::handshake::client::Request {
    let mut req = server.ws_url().into_client_request().unwrap();
    req.headers_mut()
        .insert("authorization", format!("Bearer {token}").parse().unwrap());
    req
}

#[tokio::test]
async fn bad_tokens_get_401_with_a_json_body_and_no_upgrade() {
    let server = start().await;
    let (status, body) = status_of(server.ws_url().into_client_request().unwrap()).await;
    assert_eq!(status, 401);
    assert_eq!(body["error"]["code"], "unauthorized");

    let claims = json!({"sub": "eve", "exp": now() + 60});
    let cases = [
        "garbage".to_string(),
        encode(
            &Header::new(Algorithm::HS256),
            &claims,
            &EncodingKey::from_secret(b"wrong-secret-xxxxxxxxxx"),
        )
        .unwrap(),
        encode(
            &Header::new(Algorithm::HS384),
            &claims,
            &EncodingKey::from_secret(SECRET),
        )
        .unwrap(),
        encode(
            &Header::new(Algorithm::HS256),
            &json!({"sub": "eve", "exp": now() - 5}),
            &EncodingKey::from_secret(SECRET),
        )
        .unwrap(),
        encode(
            &Header::new(Algorithm::HS256),
            &json!({"exp": now() + 60}),
            &EncodingKey::from_secret(SECRET),
        )
        .unwrap(),
        encode(
            &Header::new(Algorithm::HS256),
            &json!({"sub": "eve"}),
            &EncodingKey::from_secret(SECRET),
        )
        .unwrap(),
    ];
    for token in cases {
        let (status, body) = status_of(with_bearer(&server, &token)).await;
        assert_eq!(status, 401, "token {token}");
        assert_eq!(body["error"]["code"], "unauthorized");
    }
    // A hand-made token with "alg": "none".
    let none = format!(
        "{}.{}.",
        b64url(br#"{"alg":"none","typ":"JWT"}"#),
        b64url(claims.to_string().as_bytes())
    );
    assert_eq!(status_of(with_bearer(&server, &none)).await.0, 401);
}

fn b64url(b: &[u8]) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b)
}

#[tokio::test]
async fn token_by_header_query_or_subprotocol() {
    let server = start().await;
    let token = server.token("alice");
    let (s, _) = status_of(with_bearer(&server, &token)).await;
    assert_eq!(s, 101);
    let (s, _) = status_of(
        format!("{}?token={token}", server.ws_url())
            .into_client_request()
            .unwrap(),
    )
    .await;
    assert_eq!(s, 101);
    let mut req = server.ws_url().into_client_request().unwrap();
    req.headers_mut().insert(
        "sec-websocket-protocol",
        format!("voxwire.v1, bearer.{token}").parse().unwrap(),
    );
    let (ws, resp) = tokio_tungstenite::connect_async(req).await.unwrap();
    assert_eq!(
        resp.headers().get("sec-websocket-protocol").unwrap(),
        "voxwire.v1"
    );
    drop(ws);
}

#[tokio::test]
async fn origins_outside_the_allow_list_get_403() {
    let mut config = voxwire::Config::for_tests();
    config.allowed_origins = vec!["https://app.example".into()];
    let server = start_with(config, voxwire::engines::Engines::fake()).await;
    let mut req = with_bearer(&server, &server.token("a"));
    req.headers_mut()
        .insert("origin", "https://evil.example".parse().unwrap());
    let (status, body) = status_of(req).await;
    assert_eq!(status, 403);
    assert_eq!(body["error"]["code"], "forbidden");
    let mut req = with_bearer(&server, &server.token("a"));
    req.headers_mut()
        .insert("origin", "https://app.example".parse().unwrap());
    assert_eq!(status_of(req).await.0, 101);
}

#[tokio::test]
async fn a_token_that_expires_during_a_call_closes_with_1008() {
    let server = start().await;
    let token = server
        .state
        .auth
        .issue("alice", None, None, Duration::from_secs(2))
        .unwrap();
    let (mut ws, _) = tokio_tungstenite::connect_async(with_bearer(&server, &token))
        .await
        .unwrap();
    assert_eq!(recv(&mut ws).await["type"], "connected");
    send(&mut ws, json!({"type": "start_call"})).await;
    assert_eq!(recv(&mut ws).await["type"], "call_started");
    let frames = recv_until(&mut ws, "error").await;
    assert_eq!(frames.last().unwrap()["fatal"], true);
    assert_eq!(recv_close(&mut ws).await, Some(1008));
}

#[tokio::test]
async fn demo_mode_serves_tokens_on_loopback_only_without_a_secret() {
    // With a secret: no demo tokens.
    let server = start().await;
    let r = reqwest::get(server.url("/api/demo/token")).await.unwrap();
    assert_eq!(r.status(), 404);

    let mut config = voxwire::Config::for_tests();
    config.jwt_secret = None;
    let demo = start_with(config, voxwire::engines::Engines::fake()).await;
    let r = reqwest::get(demo.url("/api/demo/token")).await.unwrap();
    assert_eq!(r.status(), 200);
    let body: serde_json::Value = r.json().await.unwrap();
    let token = body["token"].as_str().unwrap();
    assert!(body["expires_in"].as_u64().unwrap() <= 3600);
    let (s, _) = status_of(with_bearer(&demo, token)).await;
    assert_eq!(s, 101);
    // The fixed test secret does not open the demo server.
    assert_eq!(
        status_of(with_bearer(&demo, &server.token("x"))).await.0,
        401
    );
}

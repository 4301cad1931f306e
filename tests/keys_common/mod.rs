//! API keys and call sessions, one body run on SQLite (`keys_sqlite.rs`) and on Postgres
//! (`keys_postgres.rs`): keys through the store and through the `voxwire keys` command; a
//! backend mints a session token with its key; the token's bound variables reach the call's
//! prompt and the client cannot override them (unless the agent lets it); the token starts one
//! call and resumes only that one, on the socket and push-to-talk; expired tokens, revoked and
//! bad keys, other orgs' keys and callers' tokens are refused with their codes; no key is ever
//! in the logs.
#![allow(dead_code)]

use std::process::Command;
use std::time::Duration;

use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Error as WsError;
use voxwire::auth::Role;
use voxwire::engines::Engines;
use voxwire::store::{KeyRow, Revoked, Store};
use voxwire::Config;

use crate::common::*;
use crate::store_common::{logs, Db};

const AGENTS: &str = r#"
default = "desk"

[[agent]]
name = "desk"
system_prompt = "You help {{customer}} on the {{plan}} plan, in {{language}}."
client_variables = ["language"]

[agent.variables]
customer = "a caller"
plan = "free"
language = "English"

[[agent]]
name = "other"
system_prompt = "You are another agent."
"#;

async fn server_on(db: &Db) -> TestServer {
    let mut config = Config::for_tests();
    config.agents = voxwire::agents::Agents::parse(AGENTS).unwrap();
    start_with_store(config, Engines::fake(), db.store().await).await
}

/// A new key of `org` in the store; its text.
async fn new_key(store: &Store, org: &str) -> (String, String) {
    let k = voxwire::keys::generate();
    store
        .create_key(&KeyRow {
            id: k.id.clone(),
            org: org.into(),
            name: "backend".into(),
            secret_sha256: k.secret_sha256,
            created_at_ms: voxwire::call::record::now_ms(),
            last_used_at_ms: None,
            revoked_at_ms: None,
        })
        .await
        .unwrap();
    (k.id, k.text)
}

/// `POST /api/sessions` with `bearer` (if any) and a JSON body.
async fn mint(server: &TestServer, bearer: Option<&str>, body: Value) -> (u16, Value) {
    let mut r = reqwest::Client::new().post(server.url("/api/sessions"));
    if let Some(b) = bearer {
        r = r.bearer_auth(b);
    }
    let r = r.json(&body).send().await.unwrap();
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Value::Null))
}

async fn mint_ok(server: &TestServer, key: &str, body: Value) -> Value {
    let (status, body) = mint(server, Some(key), body).await;
    assert_eq!(status, 200, "{body}");
    body
}

/// Opens the socket with `token`; the HTTP status and body when refused.
async fn open(server: &TestServer, token: &str) -> Result<Ws, (u16, Value)> {
    let mut req = server.ws_url().into_client_request().unwrap();
    req.headers_mut()
        .insert("authorization", format!("Bearer {token}").parse().unwrap());
    match tokio_tungstenite::connect_async(req).await {
        Ok((mut ws, _)) => {
            assert_eq!(recv(&mut ws).await["type"], "connected");
            Ok(ws)
        }
        Err(WsError::Http(resp)) => {
            let body = resp.body().clone().unwrap_or_default();
            Err((
                resp.status().as_u16(),
                serde_json::from_slice(&body).unwrap_or(Value::Null),
            ))
        }
        Err(e) => panic!("cannot connect: {e}"),
    }
}

/// Sends `start_call` with `fields`; the `call_started` or `error` frame.
async fn start_call(ws: &mut Ws, fields: Value) -> Value {
    let mut msg = json!({"type": "start_call"});
    if let (Some(m), Some(extra)) = (msg.as_object_mut(), fields.as_object()) {
        m.extend(extra.clone());
    }
    send(ws, msg).await;
    loop {
        let v = recv(ws).await;
        if v["type"] == "call_started" || v["type"] == "error" {
            return v;
        }
    }
}

async fn end_call(ws: &mut Ws) {
    send(ws, json!({"type": "end_call"})).await;
    recv_until(ws, "call_ended").await;
}

fn owner(sub: &str, org: &str) -> voxwire::call::Owner {
    voxwire::call::Owner {
        sub: sub.into(),
        org: Some(org.into()),
    }
}

/// The call's system prompt as the call holds it, then as the store keeps it.
async fn prompt(server: &TestServer, store: &Store, call_id: &str, sub: &str, org: &str) -> String {
    let live = server
        .state
        .calls
        .get_owned(call_id, &owner(sub, org))
        .expect("the call is the session's subject's")
        .system_prompt()
        .unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let row = store.call(call_id).await.unwrap();
        // The writer stores a resumed call's new prompt a moment later.
        if let Some(row) = row.filter(|r| r.system_prompt.as_deref() == Some(live.as_str())) {
            assert_eq!((row.sub.as_str(), row.org.as_deref()), (sub, Some(org)));
            return live;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the store never held the call's prompt"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Keys through the store: created with their org, read with the hash (never the secret),
/// listed per org, revoked once.
pub async fn keys_through_the_store(db: &Db) {
    let store = db.store().await;
    let (acme, acme_text) = new_key(&store, "acme").await;
    let (acme2, _) = new_key(&store, "acme").await;
    let (globex, _) = new_key(&store, "globex").await;
    let row = store.key(&acme).await.unwrap().unwrap();
    let secret = voxwire::keys::parse(&acme_text).unwrap().secret.to_string();
    assert_eq!((row.org.as_str(), row.name.as_str()), ("acme", "backend"));
    assert!(voxwire::keys::matches(&secret, &row.secret_sha256));
    assert!(!row.secret_sha256.contains(&secret));
    let ids = |rows: Vec<KeyRow>| rows.into_iter().map(|k| k.id).collect::<Vec<_>>();
    let mut acme_ids = ids(store.list_keys(Some("acme")).await.unwrap());
    acme_ids.sort();
    let mut want = vec![acme.clone(), acme2.clone()];
    want.sort();
    assert_eq!(acme_ids, want);
    assert_eq!(store.list_keys(None).await.unwrap().len(), 3);
    assert_eq!(
        ids(store.list_keys(Some("globex")).await.unwrap()),
        [globex]
    );
    assert!(store.list_keys(Some("initech")).await.unwrap().is_empty());
    store.touch_key(&acme, 1_700_000_000_000).await.unwrap();
    assert_eq!(
        store.revoke_key(&acme, 1_700_000_001_000).await.unwrap(),
        Revoked::Now
    );
    assert_eq!(
        store.revoke_key(&acme, 1_700_000_002_000).await.unwrap(),
        Revoked::Already
    );
    assert_eq!(
        store.revoke_key("0000000000000000", 1).await.unwrap(),
        Revoked::NotFound
    );
    let row = store.key(&acme).await.unwrap().unwrap();
    assert_eq!(
        (row.last_used_at_ms, row.revoked_at_ms),
        (Some(1_700_000_000_000), Some(1_700_000_001_000))
    );
    assert!(store
        .key(&acme2)
        .await
        .unwrap()
        .unwrap()
        .revoked_at_ms
        .is_none());
    store.close().await;
}

fn cli(url: &str, args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_voxwire"))
        .args(["keys"])
        .args(args)
        .env("VOXWIRE_DATABASE_URL", url)
        .env("VOXWIRE_STT", "fake")
        .env("VOXWIRE_LLM", "fake")
        .env("VOXWIRE_TTS", "fake")
        .env("JWT_SECRET", "test-secret-0123456789abcdef")
        .env(
            "VOXWIRE_AGENTS",
            concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/agents.toml"),
        )
        .output()
        .unwrap()
}

fn stdout(o: &std::process::Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// The key's life through `voxwire keys`: created and printed once, listed without its secret,
/// working against a server on the same store, revoked, refused at once.
pub async fn keys_through_the_cli(db: &Db) {
    logs::capture();
    let url = db.url.clone();
    let created = {
        let url = url.clone();
        tokio::task::spawn_blocking(move || {
            cli(&url, &["create", "--org", "acme", "--name", "backend"])
        })
        .await
        .unwrap()
    };
    assert!(
        created.status.success(),
        "{}",
        String::from_utf8_lossy(&created.stderr)
    );
    let text = stdout(&created);
    let field = |name: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(name))
            .map(|v| v.trim().to_string())
            .unwrap_or_else(|| panic!("no `{name}` in {text}"))
    };
    let (id, key) = (field("id:"), field("key:"));
    assert_eq!(voxwire::keys::parse(&key).unwrap().id, id);
    assert!(text.contains("not shown again"), "{text}");

    let server = server_on(db).await;
    let minted = mint_ok(&server, &key, json!({"sub": "alice"})).await;
    assert_eq!(minted["agent"], "desk");

    let listed = {
        let url = url.clone();
        tokio::task::spawn_blocking(move || {
            (
                cli(&url, &["list"]),
                cli(&url, &["list", "--org", "acme"]),
                cli(&url, &["list", "--org", "globex"]),
            )
        })
        .await
        .unwrap()
    };
    let secret = voxwire::keys::parse(&key).unwrap().secret.to_string();
    for o in [&listed.0, &listed.1] {
        assert!(o.status.success());
        let out = stdout(o);
        let line = out
            .lines()
            .find(|l| l.starts_with(&id))
            .unwrap_or_else(|| panic!("{out}"));
        assert!(line.contains("acme") && line.contains("backend"), "{line}");
        // Used (by the mint above), not revoked.
        let columns: Vec<&str> = line.split_whitespace().collect();
        assert_eq!(columns.len(), 6, "{line}");
        assert!(columns[4].ends_with('Z') && columns[5] == "-", "{line}");
        assert!(!out.contains(&secret) && !out.contains(&key), "{out}");
    }
    assert!(!stdout(&listed.2).contains(&id));

    let (revoked, again, unknown, bad_org) = {
        let (url, id) = (url.clone(), id.clone());
        tokio::task::spawn_blocking(move || {
            (
                cli(&url, &["revoke", id.as_str()]),
                cli(&url, &["revoke", id.as_str()]),
                cli(&url, &["revoke", "0000000000000000"]),
                cli(&url, &["create", "--org", "not an org", "--name", "x"]),
            )
        })
        .await
        .unwrap()
    };
    assert!(revoked.status.success());
    assert_eq!(stdout(&revoked).trim(), format!("revoked key {id}"));
    assert!(again.status.success() && stdout(&again).contains("already revoked"));
    assert_eq!(unknown.status.code(), Some(1));
    assert_eq!(bad_org.status.code(), Some(64));
    let memory = tokio::task::spawn_blocking(|| cli("memory", &["list"]))
        .await
        .unwrap();
    assert_eq!(memory.status.code(), Some(64));
    assert!(String::from_utf8_lossy(&memory.stderr).contains("keeps nothing"));
    // Revoked through the command while the server runs: refused at once.
    let (status, body) = mint(&server, Some(&key), json!({"sub": "alice"})).await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (401, Some("invalid_api_key"))
    );
    let listed = tokio::task::spawn_blocking(move || cli(&url, &["list", "--org", "acme"]))
        .await
        .unwrap();
    let out = stdout(&listed);
    let line = out.lines().find(|l| l.starts_with(&id)).unwrap();
    assert!(
        line.split_whitespace().nth(5).unwrap().ends_with('Z'),
        "{line}"
    );
    assert!(
        !logs::all().contains(&secret),
        "a key's secret is in the logs"
    );
}

/// A session token: its bound variables reach the prompt over the client's, except the one
/// the agent lets the client set; it starts one call, resumes only that one, and takes only
/// its own agent.
pub async fn a_session_binds_variables_and_one_call(db: &Db) {
    logs::capture();
    let server = server_on(db).await;
    let store = &server.state.call_services.store;
    let (_, key) = new_key(store, "acme").await;
    let minted = mint_ok(
        &server,
        &key,
        json!({
            "agent": "desk",
            "sub": "alice",
            "variables": {"customer": "Ada", "plan": "gold", "language": "German"},
            "ttl_s": 600,
            "metadata": {"ticket": 42},
        }),
    )
    .await;
    assert_eq!(minted["ws_url"], server.ws_url());
    assert_eq!(
        (minted["expires_in"].as_u64(), minted["agent"].as_str()),
        (Some(600), Some("desk"))
    );
    let token = minted["token"].as_str().unwrap();
    let claims = server.state.auth.verify(token).unwrap();
    assert_eq!(
        (claims.sub.as_str(), claims.org.as_deref(), claims.role()),
        ("alice", Some("acme"), Role::Caller)
    );
    assert!(claims.remaining() <= Duration::from_secs(600));
    let sid = minted["session_id"].as_str().unwrap();
    assert_eq!(claims.sid.as_deref(), Some(sid));

    let mut ws = open(&server, token).await.unwrap();
    // Another agent than the session's: refused.
    let refused = start_call(&mut ws, json!({"agent": "other"})).await;
    assert_eq!(refused["code"], "forbidden", "{refused}");
    let started = start_call(
        &mut ws,
        json!({"variables": {"customer": "Mallory", "plan": "free", "language": "French"}}),
    )
    .await;
    assert_eq!(started["type"], "call_started", "{started}");
    assert_eq!(started["agent"], "desk");
    let call_id = started["call_id"].as_str().unwrap().to_string();
    assert_eq!(
        prompt(&server, store, &call_id, "alice", "acme").await,
        "You help Ada on the gold plan, in French."
    );
    let session = store.session(sid).await.unwrap().unwrap();
    assert_eq!(session.call_id.as_deref(), Some(call_id.as_str()));
    assert_eq!(session.metadata, json!({"ticket": 42}));
    assert_eq!(session.org.as_deref(), Some("acme"));
    // The fake language model echoes what it was told: the call works.
    send(&mut ws, json!({"type": "text", "text": "hello"})).await;
    let frames = recv_until(&mut ws, "metrics").await;
    assert!(
        frames.iter().any(|f| f["type"] == "response"
            && f["is_final"] == true
            && f["text"].as_str().is_some_and(|t| t.contains("hello"))),
        "{frames:?}"
    );
    end_call(&mut ws).await;

    // A new call with the same token: refused, on this socket and on another.
    let used = start_call(&mut ws, json!({})).await;
    assert_eq!(
        (used["code"].as_str(), used["fatal"].as_bool()),
        (Some("session_used"), Some(false)),
        "{used}"
    );
    let mut other = open(&server, token).await.unwrap();
    let used = start_call(&mut other, json!({"variables": {"customer": "Eve"}})).await;
    assert_eq!(used["code"], "session_used", "{used}");
    // Resuming its own call: allowed, with the bound variables still winning.
    let resumed = start_call(
        &mut other,
        json!({"call_id": call_id, "variables": {"customer": "Eve", "language": "Dutch"}}),
    )
    .await;
    assert_eq!(
        (resumed["type"].as_str(), resumed["resumed"].as_bool()),
        (Some("call_started"), Some(true)),
        "{resumed}"
    );
    assert_eq!(
        prompt(&server, store, &call_id, "alice", "acme").await,
        "You help Ada on the gold plan, in Dutch."
    );
    end_call(&mut other).await;

    // A variable the session does not bind stays the client's to set.
    let minted = mint_ok(
        &server,
        &key,
        json!({"sub": "bob", "variables": {"customer": "Bob"}}),
    )
    .await;
    let mut ws = open(&server, minted["token"].as_str().unwrap())
        .await
        .unwrap();
    let started = start_call(
        &mut ws,
        json!({"variables": {"customer": "Mallory", "plan": "pro"}}),
    )
    .await;
    let call_id = started["call_id"].as_str().unwrap().to_string();
    assert_eq!(
        prompt(&server, store, &call_id, "bob", "acme").await,
        "You help Bob on the pro plan, in English."
    );
    end_call(&mut ws).await;

    // Erasing alice takes her call's session (her subject and variables) with the call.
    let admin = server
        .state
        .auth
        .issue_with_role(
            "root",
            Some("acme"),
            None,
            Role::Admin,
            Duration::from_secs(60),
        )
        .unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let r = reqwest::Client::new()
            .delete(server.url("/api/subjects/alice"))
            .bearer_auth(&admin)
            .send()
            .await
            .unwrap();
        // 409 while the ended call is still being let go.
        if r.status().as_u16() != 409 || tokio::time::Instant::now() > deadline {
            assert_eq!(r.status().as_u16(), 200);
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(store.session(sid).await.unwrap().is_none());
    assert!(!logs::all().contains(voxwire::keys::parse(&key).unwrap().secret));
}

/// Two sockets start a call with one token at the same moment: one call starts, the other is
/// refused with `session_used`.
pub async fn two_calls_at_once_one_wins(db: &Db) {
    let server = server_on(db).await;
    let (_, key) = new_key(&server.state.call_services.store, "acme").await;
    for round in 0..5 {
        let minted = mint_ok(&server, &key, json!({"sub": format!("race-{round}")})).await;
        let token = minted["token"].as_str().unwrap();
        let mut a = open(&server, token).await.unwrap();
        let mut b = open(&server, token).await.unwrap();
        let (ra, rb) = tokio::join!(start_call(&mut a, json!({})), start_call(&mut b, json!({})));
        let mut kinds = [
            ra["type"].as_str().unwrap().to_string(),
            rb["type"].as_str().unwrap().to_string(),
        ];
        kinds.sort();
        assert_eq!(kinds, ["call_started", "error"], "{ra} {rb}");
        let refused = if ra["type"] == "error" { &ra } else { &rb };
        assert_eq!(refused["code"], "session_used", "{refused}");
        let session = server
            .state
            .call_services
            .store
            .session(minted["session_id"].as_str().unwrap())
            .await
            .unwrap()
            .unwrap();
        let started = if ra["type"] == "call_started" {
            &ra
        } else {
            &rb
        };
        assert_eq!(session.call_id.as_deref(), started["call_id"].as_str());
    }
}

/// Push-to-talk with a session token: the first turn binds it; a later turn resumes that call;
/// a turn of another call is refused.
pub async fn push_to_talk_takes_one_call(db: &Db) {
    let server = server_on(db).await;
    let (_, key) = new_key(&server.state.call_services.store, "acme").await;
    let minted = mint_ok(
        &server,
        &key,
        json!({"sub": "carol", "variables": {"customer": "Carol"}}),
    )
    .await;
    let token = minted["token"].as_str().unwrap().to_string();
    let turn = |query: String| {
        let (server_url, token) = (
            server.url(&format!("/api/voice/turn{query}")),
            token.clone(),
        );
        async move {
            let r = reqwest::Client::new()
                .post(server_url)
                .bearer_auth(token)
                .header("content-type", "audio/wav")
                .body(wav_file(&tone(1_000, 16_000, 0.3), 16_000))
                .send()
                .await
                .unwrap();
            let status = r.status().as_u16();
            (status, r.json::<Value>().await.unwrap_or(Value::Null))
        }
    };
    let (status, first) = turn(String::new()).await;
    assert_eq!(status, 200, "{first}");
    let call_id = first["call_id"].as_str().unwrap().to_string();
    let (status, again) = turn(format!("?call_id={call_id}")).await;
    assert_eq!(
        (status, again["call_id"].as_str()),
        (200, Some(call_id.as_str())),
        "{again}"
    );
    let (status, other) = turn(String::new()).await;
    assert_eq!(
        (status, other["error"]["code"].as_str()),
        (409, Some("session_used")),
        "{other}"
    );
    let store = &server.state.call_services.store;
    eventually_async(|| async { store.call(&call_id).await.unwrap().is_some() }).await;
    let row = store.call(&call_id).await.unwrap().unwrap();
    assert_eq!(
        row.variables.get("customer").map(String::as_str),
        Some("Carol")
    );
}

async fn eventually_async<F, Fut>(mut cond: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while !cond().await {
        assert!(tokio::time::Instant::now() < deadline, "never happened");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Everything that must not mint a token, with its code; a key of one org reaches nothing of
/// another; an admin token of the org mints for its org.
pub async fn refusals(db: &Db) {
    logs::capture();
    let server = server_on(db).await;
    let store = &server.state.call_services.store;
    let (acme_id, acme) = new_key(store, "acme").await;
    let (_, globex) = new_key(store, "globex").await;
    let code = |r: &(u16, Value)| (r.0, r.1["error"]["code"].as_str().map(str::to_string));
    let err = |status: u16, c: &str| (status, Some(c.to_string()));
    let body = json!({"sub": "alice"});

    assert_eq!(
        code(&mint(&server, None, body.clone()).await),
        err(401, "unauthorized")
    );
    let parsed = voxwire::keys::parse(&acme).unwrap();
    let wrong_secret = format!("vxk_{}_{}", parsed.id, "A".repeat(43));
    let unknown_id = format!("vxk_0123456789abcdef_{}", parsed.secret);
    for bad in ["vxk_nonsense", wrong_secret.as_str(), unknown_id.as_str()] {
        assert_eq!(
            code(&mint(&server, Some(bad), body.clone()).await),
            err(401, "invalid_api_key"),
            "{bad}"
        );
    }
    let caller = server.token("alice");
    assert_eq!(
        code(&mint(&server, Some(&caller), body.clone()).await),
        err(403, "forbidden")
    );
    let operator = server
        .state
        .auth
        .issue_with_role(
            "op",
            Some("acme"),
            None,
            Role::Operator,
            Duration::from_secs(60),
        )
        .unwrap();
    assert_eq!(
        code(&mint(&server, Some(&operator), body.clone()).await),
        err(403, "forbidden")
    );
    assert_eq!(
        code(&mint(&server, Some("not.a.jwt"), body.clone()).await),
        err(401, "unauthorized")
    );
    for (bad, want) in [
        (
            json!({"sub": "alice", "agent": "nobody"}),
            err(404, "unknown_agent"),
        ),
        (json!({"sub": ""}), err(400, "invalid_parameter")),
        (
            json!({"sub": "alice", "ttl_s": 5}),
            err(400, "invalid_parameter"),
        ),
        (
            json!({"sub": "alice", "ttl_s": 4000}),
            err(400, "invalid_parameter"),
        ),
        (
            json!({"sub": "alice", "metadata": "text"}),
            err(400, "invalid_parameter"),
        ),
        (
            json!({"sub": "alice", "org": "globex"}),
            err(400, "invalid_json"),
        ),
        (json!({"agent": "desk"}), err(400, "invalid_json")),
    ] {
        assert_eq!(
            code(&mint(&server, Some(&acme), bad.clone()).await),
            want,
            "{bad}"
        );
    }
    let r = reqwest::Client::new()
        .post(server.url("/api/sessions"))
        .bearer_auth(&acme)
        .body(vec![b'{'; 70_000])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 413);

    // An admin token of the org mints for its org.
    let admin = server
        .state
        .auth
        .issue_with_role(
            "root",
            Some("acme"),
            None,
            Role::Admin,
            Duration::from_secs(60),
        )
        .unwrap();
    let minted = mint_ok(&server, &admin, json!({"sub": "alice"})).await;
    let claims = server
        .state
        .auth
        .verify(minted["token"].as_str().unwrap())
        .unwrap();
    assert_eq!(claims.org.as_deref(), Some("acme"));

    // acme's call, then a token of globex's key for the same subject: it reaches nothing of
    // acme's.
    let minted = mint_ok(&server, &acme, json!({"sub": "alice"})).await;
    let mut ws = open(&server, minted["token"].as_str().unwrap())
        .await
        .unwrap();
    let started = start_call(&mut ws, json!({})).await;
    let call_id = started["call_id"].as_str().unwrap().to_string();
    end_call(&mut ws).await;
    let minted = mint_ok(&server, &globex, json!({"sub": "alice"})).await;
    let globex_token = minted["token"].as_str().unwrap().to_string();
    assert_eq!(
        server
            .state
            .auth
            .verify(&globex_token)
            .unwrap()
            .org
            .as_deref(),
        Some("globex")
    );
    let mut ws = open(&server, &globex_token).await.unwrap();
    let refused = start_call(&mut ws, json!({"call_id": call_id})).await;
    assert_eq!(refused["code"], "call_not_found", "{refused}");
    let r = reqwest::Client::new()
        .get(server.url(&format!("/api/calls/{call_id}")))
        .bearer_auth(&globex_token)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 404);
    // The refused resume did not use up globex's token.
    let started = start_call(&mut ws, json!({})).await;
    assert_eq!(started["type"], "call_started", "{started}");
    end_call(&mut ws).await;

    // Revoked: refused at once.
    let minted_before = mint_ok(&server, &acme, json!({"sub": "dave"})).await;
    assert_eq!(
        store
            .revoke_key(&acme_id, voxwire::call::record::now_ms())
            .await
            .unwrap(),
        Revoked::Now
    );
    assert_eq!(
        code(&mint(&server, Some(&acme), body.clone()).await),
        err(401, "invalid_api_key")
    );
    // Tokens minted before stay good until they expire (they are short-lived).
    assert!(open(&server, minted_before["token"].as_str().unwrap())
        .await
        .is_ok());

    let logged = logs::all();
    for key in [&acme, &globex] {
        let secret = voxwire::keys::parse(key).unwrap().secret;
        assert!(!logged.contains(secret), "a key's secret is in the logs");
    }
    assert!(
        !logged.contains(&wrong_secret[21..]),
        "a presented secret is in the logs"
    );
}

/// A session token past its `ttl_s`: the call it started goes on, but it starts or resumes
/// nothing more, and the socket refuses it like any expired token.
pub async fn an_expired_token_is_refused(db: &Db) {
    let server = server_on(db).await;
    let (_, key) = new_key(&server.state.call_services.store, "acme").await;
    let minted = mint_ok(&server, &key, json!({"sub": "erin", "ttl_s": 10})).await;
    let token = minted["token"].as_str().unwrap().to_string();
    let mut ws = open(&server, &token).await.unwrap();
    let started = start_call(&mut ws, json!({})).await;
    let call_id = started["call_id"].as_str().unwrap().to_string();
    tokio::time::sleep(Duration::from_millis(11_100)).await;
    send(&mut ws, json!({"type": "text", "text": "still there?"})).await;
    recv_until(&mut ws, "metrics").await;
    end_call(&mut ws).await;
    let late = start_call(&mut ws, json!({"call_id": call_id})).await;
    assert_eq!(late["code"], "unauthorized", "{late}");
    let (status, body) = open(&server, &token).await.err().unwrap();
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (401, Some("unauthorized")),
        "{body}"
    );
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("expired"),
        "{body}"
    );
}

/// `ws_url` follows `VOXWIRE_PUBLIC_URL` when it is set.
pub async fn ws_url_follows_the_public_url(db: &Db) {
    let mut config = Config::for_tests();
    config.agents = voxwire::agents::Agents::parse(AGENTS).unwrap();
    config.net.public_url = Some("https://voice.example.com/base".into());
    let server = start_with_store(config, Engines::fake(), db.store().await).await;
    let (_, key) = new_key(&server.state.call_services.store, "acme").await;
    let minted = mint_ok(&server, &key, json!({"sub": "frank"})).await;
    assert_eq!(minted["ws_url"], "wss://voice.example.com/base/ws");
}

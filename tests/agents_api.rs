//! The agents API over real HTTP and WebSockets, on real SQLite and Postgres with fake engines:
//! an org's admin creates, reads, replaces and deletes its agents, validated like agents.toml;
//! a live call keeps the version it started with while new calls get the new one; another org
//! sees nothing of them; callers may not change them; a restart finds them in the store.

mod common;
mod store_common;

use std::time::Duration;

use common::history::{flush, hang_up};
use common::{recv, recv_until, send, TestServer, Ws};
use serde_json::{json, Value};
use store_common::Db;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use voxwire::auth::Role;
use voxwire::engines::Engines;
use voxwire::store::{KeyRow, Store};
use voxwire::Config;

fn token(server: &TestServer, sub: &str, org: &str, role: Role) -> String {
    server
        .state
        .auth
        .issue_with_role(sub, Some(org), None, role, Duration::from_secs(600))
        .unwrap()
}

/// A new API key of `org` in the store; its text.
async fn new_key(store: &Store, org: &str) -> String {
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
    k.text
}

/// A request's status and JSON body.
async fn send_json(
    server: &TestServer,
    method: reqwest::Method,
    path: &str,
    token: Option<&str>,
    body: Option<&str>,
) -> (u16, Value) {
    let mut req = reqwest::Client::new().request(method, server.url(path));
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    if let Some(b) = body {
        req = req
            .header("content-type", "application/json")
            .body(b.to_string());
    }
    let resp = req.send().await.unwrap();
    let status = resp.status().as_u16();
    (status, resp.json().await.unwrap_or(Value::Null))
}

async fn post(server: &TestServer, token: &str, body: &Value) -> (u16, Value) {
    let body = body.to_string();
    send_json(
        server,
        reqwest::Method::POST,
        "/api/agents",
        Some(token),
        Some(&body),
    )
    .await
}

async fn put(server: &TestServer, token: &str, name: &str, body: &Value) -> (u16, Value) {
    let body = body.to_string();
    let path = format!("/api/agents/{name}");
    send_json(
        server,
        reqwest::Method::PUT,
        &path,
        Some(token),
        Some(&body),
    )
    .await
}

fn code(body: &Value) -> &str {
    body["error"]["code"].as_str().unwrap_or_default()
}

/// A call of `sub` in `org` with `agent`: the socket, the call id and what was spoken first.
async fn call_with(
    server: &TestServer,
    sub: &str,
    org: &str,
    agent: &str,
) -> Result<(Ws, String, Option<String>), Value> {
    let mut req = server.ws_url().into_client_request().unwrap();
    let bearer = format!("Bearer {}", token(server, sub, org, Role::Caller));
    req.headers_mut()
        .insert("authorization", bearer.parse().unwrap());
    let (mut ws, _) = tokio_tungstenite::connect_async(req).await.unwrap();
    assert_eq!(recv(&mut ws).await["type"], "connected");
    send(&mut ws, json!({"type": "start_call", "agent": agent})).await;
    let started = recv(&mut ws).await;
    if started["type"] != "call_started" {
        return Err(started);
    }
    let id = started["call_id"].as_str().unwrap().to_string();
    let greeting = if started["history_len"].as_u64() == Some(0) {
        // A greeting, if the agent has one, is the first reply.
        let frames = recv_until_done_or_quiet(&mut ws).await;
        frames
            .iter()
            .find(|f| f["type"] == "response" && f["is_final"] == true)
            .and_then(|f| f["text"].as_str().map(str::to_string))
    } else {
        None
    };
    Ok((ws, id, greeting))
}

/// The frames up to `response_done`, or none if nothing comes within a second (no greeting).
async fn recv_until_done_or_quiet(ws: &mut Ws) -> Vec<Value> {
    match tokio::time::timeout(Duration::from_secs(1), recv(ws)).await {
        Ok(first) if first["type"] == "response_done" => vec![first],
        Ok(first) => {
            let mut frames = vec![first];
            frames.extend(recv_until(ws, "response_done").await);
            frames
        }
        Err(_) => Vec::new(),
    }
}

async fn typed(ws: &mut Ws, text: &str) {
    send(ws, json!({"type": "text", "text": text})).await;
    recv_until(ws, "response_done").await;
}

/// What the store keeps of a call's first caller line, and its system prompt.
async fn stored(server: &TestServer, id: &str) -> (Vec<String>, String) {
    flush(server).await;
    let store = &server.state.call_services.store;
    let items = store.items(id).await.unwrap();
    let said = items
        .iter()
        .filter(|i| i.role == "user")
        .map(|i| i.text.clone())
        .collect();
    let prompt = store
        .call(id)
        .await
        .unwrap()
        .unwrap()
        .system_prompt
        .unwrap();
    (said, prompt)
}

/// The server stopped once its writes are stored, and a new one on the same store.
async fn restart(mut server: TestServer, db: &Db) -> TestServer {
    let _ = server
        .state
        .call_services
        .writer
        .flush(Duration::from_secs(10))
        .await;
    let _ = server.stop.take().unwrap().send(());
    let _ = tokio::time::timeout(Duration::from_secs(60), &mut server.task).await;
    common::start_with_store(Config::for_tests(), Engines::fake(), db.store().await).await
}

async fn agents_over_the_api(db: Db) {
    let server =
        common::start_with_store(Config::for_tests(), Engines::fake(), db.store().await).await;
    let admin = token(&server, "root", "acme", Role::Admin);
    let v1 =
        json!({"name": "sales", "system_prompt": "You sell apples.", "greeting": "Apples here."});

    // Only an org's admin may change agents.
    for role in [Role::Caller, Role::Operator] {
        let (status, body) = post(&server, &token(&server, "x", "acme", role), &v1).await;
        assert_eq!((status, code(&body)), (403, "forbidden"), "{role:?}");
    }
    let (status, body) = post(&server, &admin, &v1).await;
    assert_eq!(status, 201, "{body}");
    assert_eq!(
        (body["version"].as_i64(), body["source"].as_str()),
        (Some(1), Some("api"))
    );
    assert_eq!(body["definition"]["system_prompt"], "You sell apples.");

    // Validated like agents.toml, with the reason.
    for (bad, want_code, why) in [
        (
            json!({"name": "hot", "system_prompt": "x", "temperature": 5}),
            "invalid_agent",
            "temperature",
        ),
        (
            json!({"name": "eng", "system_prompt": "x", "llm": ["local"]}),
            "invalid_agent",
            "agents.toml only",
        ),
        (
            json!({"name": "odd", "system_prompt": "x", "colour": "red"}),
            "invalid_agent",
            "colour",
        ),
        (
            json!({"name": "bad name", "system_prompt": "x"}),
            "invalid_agent",
            "letters",
        ),
        (
            json!({"name": "empty", "system_prompt": " "}),
            "invalid_agent",
            "system_prompt",
        ),
        (
            json!(["not", "an", "object"]),
            "invalid_agent",
            "JSON object",
        ),
        (
            json!({"name": "schema", "system_prompt": "x", "summary_fields": {"properties": {"a": {"type": "date"}}}}),
            "invalid_agent",
            "summary_fields.a",
        ),
        (v1.clone(), "agent_exists", "exists"),
        // A file agent is the org's too: it is replaced, not made again.
        (
            json!({"name": "greeter", "system_prompt": "x"}),
            "agent_exists",
            "PUT /api/agents/greeter",
        ),
    ] {
        let (status, body) = post(&server, &admin, &bad).await;
        let message = body["error"]["message"].as_str().unwrap_or_default();
        assert_eq!(code(&body), want_code, "{bad}: {body}");
        assert!(matches!(status, 400 | 409), "{bad}: {status}");
        assert!(message.contains(why), "{bad}: {message}");
    }
    let (status, body) = send_json(
        &server,
        reqwest::Method::POST,
        "/api/agents",
        Some(&admin),
        Some("{nope"),
    )
    .await;
    assert_eq!((status, code(&body)), (400, "invalid_json"));
    let big = json!({"name": "big", "system_prompt": "x".repeat(70_000)});
    let (status, body) = post(&server, &admin, &big).await;
    assert_eq!((status, code(&body)), (413, "payload_too_large"));

    // A caller of the org gets it; its greeting opens the call.
    let (mut live, live_id, greeting) = call_with(&server, "ada", "acme", "sales").await.unwrap();
    assert_eq!(greeting.as_deref(), Some("Apples here."));
    typed(&mut live, "call me on 415 555 0100").await;

    // Replaced while that call is live: version 2 masks phone numbers and sells pears.
    let v2 =
        json!({"system_prompt": "You sell pears.", "greeting": "Pears here.", "redact": ["phone"]});
    let (status, body) = put(&server, &admin, "sales", &v2).await;
    assert_eq!((status, body["version"].as_i64()), (200, Some(2)), "{body}");
    let (status, body) = put(
        &server,
        &admin,
        "sales",
        &json!({"name": "other", "system_prompt": "x"}),
    )
    .await;
    assert_eq!((status, code(&body)), (400, "invalid_agent"));

    // The live call keeps version 1: the number it hears now is stored as said.
    typed(&mut live, "or on 415 555 0199").await;
    hang_up(&mut live).await;
    let (said, prompt) = stored(&server, &live_id).await;
    assert_eq!(prompt, "You sell apples.");
    assert_eq!(said, ["call me on 415 555 0100", "or on 415 555 0199"]);

    // A new call gets version 2.
    let (mut ws, id, greeting) = call_with(&server, "bea", "acme", "sales").await.unwrap();
    assert_eq!(greeting.as_deref(), Some("Pears here."));
    typed(&mut ws, "call me on 415 555 0100").await;
    hang_up(&mut ws).await;
    let (said, prompt) = stored(&server, &id).await;
    assert_eq!(prompt, "You sell pears.");
    assert_eq!(said, ["call me on [phone]"]);

    // Its current version and every change.
    let (status, body) = send_json(
        &server,
        reqwest::Method::GET,
        "/api/agents/sales",
        Some(&admin),
        None,
    )
    .await;
    assert_eq!((status, body["version"].as_i64()), (200, Some(2)), "{body}");
    assert_eq!(body["definition"]["redact"], json!(["phone"]));
    let history = body["history"].as_array().unwrap();
    assert_eq!(history.len(), 2, "{body}");
    assert_eq!(
        (
            history[0]["actor"].as_str(),
            history[0]["deleted"].as_bool()
        ),
        (Some("admin:root"), Some(false))
    );
    assert_eq!(
        history[1]["changed"],
        json!(["greeting", "redact", "system_prompt"])
    );
    // The org's backend reads it with its API key; another org's key does not find it.
    let store = server.state.call_services.store.clone();
    let acme_key = new_key(&store, "acme").await;
    let (status, body) = send_json(
        &server,
        reqwest::Method::GET,
        "/api/agents/sales",
        Some(&acme_key),
        None,
    )
    .await;
    assert_eq!((status, body["version"].as_i64()), (200, Some(2)), "{body}");
    let globex_key = new_key(&store, "globex").await;
    let (status, body) = send_json(
        &server,
        reqwest::Method::GET,
        "/api/agents/sales",
        Some(&globex_key),
        None,
    )
    .await;
    assert_eq!(status, 404, "{body}");
    let (status, body) = put(&server, "vxk_nope_nope", "sales", &v2).await;
    assert_eq!((status, code(&body)), (401, "invalid_api_key"), "{body}");
    // The list: the org's callers see it, others and the anonymous list do not.
    let listed = |body: &Value| {
        body["agents"]
            .as_array()
            .unwrap()
            .iter()
            .any(|a| a == "sales")
    };
    let ada = token(&server, "ada", "acme", Role::Caller);
    let (_, mine) = send_json(
        &server,
        reqwest::Method::GET,
        "/api/agents",
        Some(&ada),
        None,
    )
    .await;
    assert!(listed(&mine), "{mine}");
    let item = mine["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["name"] == "sales")
        .unwrap();
    assert_eq!(
        (item["source"].as_str(), item["version"].as_i64()),
        (Some("api"), Some(2))
    );
    let (_, anonymous) = send_json(&server, reqwest::Method::GET, "/api/agents", None, None).await;
    assert!(
        !listed(&anonymous) && anonymous["default"].is_string(),
        "{anonymous}"
    );

    // Another org: nothing of acme's agent.
    let globex = token(&server, "boss", "globex", Role::Admin);
    let (_, theirs) = send_json(
        &server,
        reqwest::Method::GET,
        "/api/agents",
        Some(&globex),
        None,
    )
    .await;
    assert!(!listed(&theirs), "{theirs}");
    let (status, _) = send_json(
        &server,
        reqwest::Method::GET,
        "/api/agents/sales",
        Some(&globex),
        None,
    )
    .await;
    assert_eq!(status, 404);
    let (status, _) = put(&server, &globex, "sales", &v2).await;
    assert_eq!(status, 404);
    let refused = call_with(&server, "eve", "globex", "sales")
        .await
        .err()
        .unwrap();
    assert_eq!(refused["code"], "unknown_agent", "{refused}");

    // Deleted: no new call gets it; created again, it goes on from the next version.
    let (status, body) = send_json(
        &server,
        reqwest::Method::DELETE,
        "/api/agents/sales",
        Some(&admin),
        None,
    )
    .await;
    assert_eq!((status, body["version"].as_i64()), (200, Some(3)), "{body}");
    let refused = call_with(&server, "ada", "acme", "sales")
        .await
        .err()
        .unwrap();
    assert_eq!(refused["code"], "unknown_agent", "{refused}");
    let (status, _) = send_json(
        &server,
        reqwest::Method::GET,
        "/api/agents/sales",
        Some(&admin),
        None,
    )
    .await;
    assert_eq!(status, 404);
    let (status, _) = send_json(
        &server,
        reqwest::Method::DELETE,
        "/api/agents/sales",
        Some(&admin),
        None,
    )
    .await;
    assert_eq!(status, 404);
    let v4 = json!({"name": "sales", "system_prompt": "You sell plums."});
    let (status, body) = post(&server, &admin, &v4).await;
    assert_eq!((status, body["version"].as_i64()), (201, Some(4)), "{body}");

    // A restart finds the agents in the store.
    let again = restart(server, &db).await;
    let (status, body) = send_json(
        &again,
        reqwest::Method::GET,
        "/api/agents/sales",
        Some(&admin),
        None,
    )
    .await;
    assert_eq!((status, body["version"].as_i64()), (200, Some(4)), "{body}");
    assert_eq!(body["history"].as_array().unwrap().len(), 4);
    let (mut ws, id, _) = call_with(&again, "ada", "acme", "sales").await.unwrap();
    typed(&mut ws, "hello").await;
    hang_up(&mut ws).await;
    assert_eq!(stored(&again, &id).await.1, "You sell plums.");
}

fn admin_of_default_org(server: &TestServer) -> String {
    server
        .state
        .auth
        .issue_with_role("root", None, None, Role::Admin, Duration::from_secs(600))
        .unwrap()
}

async fn get(server: &TestServer, token: &str, path: &str) -> (u16, Value) {
    send_json(server, reqwest::Method::GET, path, Some(token), None).await
}

async fn delete(server: &TestServer, token: &str, path: &str) -> (u16, Value) {
    send_json(server, reqwest::Method::DELETE, path, Some(token), None).await
}

/// The agents of agents.toml seed every org: the default org (and any other) replaces one for
/// itself, keeping the file's engines, webhooks and retention, or deletes it; the other orgs
/// keep the file's; a restart keeps both.
async fn file_agents_seed_every_org(db: Db) {
    let server =
        common::start_with_store(Config::for_tests(), Engines::fake(), db.store().await).await;
    let root = admin_of_default_org(&server);
    let acme = token(&server, "boss", "acme", Role::Admin);

    // As the file has it: version 0, without the fields only the file sets.
    let (status, body) = get(&server, &root, "/api/agents/greeter").await;
    assert_eq!(
        (status, body["source"].as_str(), body["version"].as_i64()),
        (200, Some("file"), Some(0)),
        "{body}"
    );
    assert_eq!(
        body["definition"]["greeting"],
        "Welcome to {{business}}, {{name}}."
    );
    assert!(body["definition"].get("llm").is_none(), "{body}");

    // The default org replaces it, and the default agent too; version 1 each.
    let (status, body) = put(
        &server,
        &root,
        "greeter",
        &json!({"system_prompt": "You greet people.", "greeting": "Hi from the default org."}),
    )
    .await;
    assert_eq!((status, body["version"].as_i64()), (200, Some(1)), "{body}");
    let (status, body) = put(
        &server,
        &root,
        "receptionist",
        &json!({"system_prompt": "You are the new front desk."}),
    )
    .await;
    assert_eq!((status, body["version"].as_i64()), (200, Some(1)), "{body}");

    // The default org's calls get the replacements (the default one with no agent named);
    // acme's get the file's.
    let greeting = |s: &TestServer, org: Option<&str>| {
        let token = s
            .state
            .auth
            .issue_with_role("ada", org, None, Role::Caller, Duration::from_secs(600))
            .unwrap();
        let s = s.ws_url();
        async move {
            let mut req = s.into_client_request().unwrap();
            req.headers_mut()
                .insert("authorization", format!("Bearer {token}").parse().unwrap());
            let (mut ws, _) = tokio_tungstenite::connect_async(req).await.unwrap();
            recv(&mut ws).await;
            send(&mut ws, json!({"type": "start_call", "agent": "greeter"})).await;
            let started = recv(&mut ws).await;
            assert_eq!(started["type"], "call_started", "{started}");
            let frames = recv_until(&mut ws, "response_done").await;
            hang_up(&mut ws).await;
            frames
                .iter()
                .find(|f| f["type"] == "response" && f["is_final"] == true)
                .and_then(|f| f["text"].as_str().map(str::to_string))
        }
    };
    assert_eq!(
        greeting(&server, None).await.as_deref(),
        Some("Hi from the default org.")
    );
    assert_eq!(
        greeting(&server, Some("acme")).await.as_deref(),
        Some("Welcome to Test Co, friend.")
    );
    let desk = |org: Option<&str>| server.state.agents.get_in(org, None).unwrap();
    assert_eq!(desk(None).system_prompt, "You are the new front desk.");
    assert!(desk(Some("acme"))
        .system_prompt
        .starts_with("You are a receptionist"));

    // Its history starts at the replacement; the list shows where each comes from.
    let (_, body) = get(&server, &root, "/api/agents/greeter").await;
    assert_eq!(
        (body["source"].as_str(), body["version"].as_i64()),
        (Some("api"), Some(1)),
        "{body}"
    );
    assert_eq!(body["history"].as_array().unwrap().len(), 1, "{body}");
    let (_, list) = get(&server, &root, "/api/agents").await;
    let source = |list: &Value, name: &str| {
        list["items"]
            .as_array()
            .unwrap()
            .iter()
            .find(|i| i["name"] == name)
            .map(|i| (i["source"].clone(), i["version"].clone()))
    };
    assert_eq!(source(&list, "greeter"), Some((json!("api"), json!(1))));
    let (_, theirs) = get(&server, &acme, "/api/agents").await;
    assert_eq!(source(&theirs, "greeter"), Some((json!("file"), json!(0))));

    // acme deletes the file's greeter for itself: its calls no longer get it, others do.
    let (status, body) = delete(&server, &acme, "/api/agents/greeter").await;
    assert_eq!((status, body["version"].as_i64()), (200, Some(1)), "{body}");
    let (status, _) = get(&server, &acme, "/api/agents/greeter").await;
    assert_eq!(status, 404);
    let (_, theirs) = get(&server, &acme, "/api/agents").await;
    assert_eq!(source(&theirs, "greeter"), None, "{theirs}");
    assert!(server
        .state
        .agents
        .get_in(Some("acme"), Some("greeter"))
        .is_none());
    assert_eq!(
        greeting(&server, None).await.as_deref(),
        Some("Hi from the default org.")
    );
    // The default agent cannot be deleted: calls naming no agent get it.
    let (status, body) = delete(&server, &root, "/api/agents/receptionist").await;
    assert_eq!((status, code(&body)), (409, "agent_from_file"), "{body}");

    // A restart keeps the replacements and the deletion.
    let again = restart(server, &db).await;
    assert_eq!(
        greeting(&again, None).await.as_deref(),
        Some("Hi from the default org.")
    );
    assert!(again
        .state
        .agents
        .get_in(Some("acme"), Some("greeter"))
        .is_none());
    assert!(again
        .state
        .agents
        .get_in(Some("beta"), Some("greeter"))
        .is_some());
    // Made again by acme, it goes on from the next version.
    let (status, body) = post(
        &again,
        &token(&again, "boss", "acme", Role::Admin),
        &json!({"name": "greeter", "system_prompt": "You greet acme's callers."}),
    )
    .await;
    assert_eq!((status, body["version"].as_i64()), (201, Some(2)), "{body}");

    // The history shows the newest 50 changes, each against the version before it.
    let boss = token(&again, "boss", "acme", Role::Admin);
    for i in 0..55 {
        let body = json!({"system_prompt": format!("You greet caller number {i}.")});
        let (status, _) = put(&again, &boss, "greeter", &body).await;
        assert_eq!(status, 200);
    }
    let (_, body) = get(&again, &boss, "/api/agents/greeter").await;
    let history = body["history"].as_array().unwrap();
    assert_eq!(
        (history.len(), body["history_truncated"].as_bool()),
        (50, Some(true))
    );
    assert_eq!(
        (&history[0]["version"], &history[49]["version"]),
        (&json!(8), &json!(57))
    );
    assert_eq!(history[0]["changed"], json!(["system_prompt"]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_file_agents_seed_every_org() {
    file_agents_seed_every_org(Db::sqlite()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_file_agents_seed_every_org() {
    file_agents_seed_every_org(Db::postgres().await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_agents_over_the_api() {
    agents_over_the_api(Db::sqlite()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_agents_over_the_api() {
    agents_over_the_api(Db::postgres().await).await;
}

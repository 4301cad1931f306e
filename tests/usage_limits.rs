//! Usage limits and metering over real sockets, against a real server on real SQLite and
//! Postgres with fake engines: an org's admin reads and sets its limits (validated; others may
//! not); `start_call` is refused with `limit_reached` naming the limit for the org's and a
//! subject's live calls and daily minutes; a call whose minutes run out hears the limit message
//! and ends with `limit_reached`, no sooner than its allowance; the usage report matches what
//! the calls did (calls, audio streamed, speech-to-text audio, reply and speech characters), a
//! resent usage write counts once, and another org sees none of it; a hosted model's token
//! counts are metered; the HTTP API's rate limits answer 429 with `Retry-After`.

mod common;
mod store_common;

use std::time::{Duration, Instant};

use base64::Engine as _;
use common::history::*;
use common::*;
use serde_json::{json, Value};
use store_common::Db;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use voxwire::auth::Role;
use voxwire::engines::Engines;
use voxwire::store::{day_of, UsageRow, Write};
use voxwire::Config;

async fn server_on(db: &Db) -> TestServer {
    start_with_store(Config::for_tests(), Engines::fake(), db.store().await).await
}

fn admin(server: &TestServer, org: Option<&str>) -> String {
    server
        .state
        .auth
        .issue_with_role("boss", org, None, Role::Admin, Duration::from_secs(600))
        .unwrap()
}

async fn put_limits(server: &TestServer, token: &str, body: &str) -> (u16, Value) {
    let r = reqwest::Client::new()
        .put(server.url("/api/limits"))
        .bearer_auth(token)
        .header("content-type", "application/json")
        .body(body.to_string())
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    (status, r.json().await.unwrap())
}

fn limits(cc: Value, dm: Value, scc: Value, sdm: Value) -> String {
    json!({"concurrent_calls": cc, "daily_minutes": dm,
           "subject_concurrent_calls": scc, "subject_daily_minutes": sdm})
    .to_string()
}

/// Connects as `sub` of `org` and sends `start_call` with `extra`; the first answer.
async fn try_call(server: &TestServer, sub: &str, org: Option<&str>, extra: Value) -> (Ws, Value) {
    let mut req = server.ws_url().into_client_request().unwrap();
    let bearer = format!("Bearer {}", caller(server, sub, org));
    req.headers_mut()
        .insert("authorization", bearer.parse().unwrap());
    let (mut ws, _) = tokio_tungstenite::connect_async(req).await.unwrap();
    assert_eq!(recv(&mut ws).await["type"], "connected");
    let mut start = json!({"type": "start_call"});
    if let (Some(m), Some(e)) = (start.as_object_mut(), extra.as_object()) {
        m.extend(e.clone());
    }
    send(&mut ws, start).await;
    let answer = recv(&mut ws).await;
    (ws, answer)
}

/// The frames' types, for messages.
fn types(frames: &[Value]) -> Vec<String> {
    frames
        .iter()
        .map(|f| f["type"].as_str().unwrap_or("?").to_string())
        .collect()
}

/// The final `response` frame (the whole reply).
fn reply(frames: &[Value]) -> &Value {
    frames
        .iter()
        .find(|f| f["type"] == "response" && f["is_final"] == true)
        .unwrap_or_else(|| panic!("no response: {:?}", types(frames)))
}

fn assert_refused(answer: &Value, limit: &str) {
    assert_eq!(answer["type"], "error", "{answer}");
    assert_eq!(answer["code"], "limit_reached", "{answer}");
    assert_eq!(answer["limit"], limit, "{answer}");
    assert_eq!(answer["fatal"], false, "{answer}");
}

async fn limits_are_set_and_checked(db: Db) {
    let server = server_on(&db).await;
    let boss = admin(&server, Some("acme"));
    // Nothing set: the configured defaults (unlimited in tests).
    let got = json_of(&server, "/api/limits", &boss).await;
    assert_eq!(got["defaults"], true, "{got}");
    assert!(got["concurrent_calls"].is_null(), "{got}");
    // Operators and callers may not read or set them; bad bodies are refused by field.
    let op = operator(&server, Some("acme"));
    assert_eq!(
        refused(&server, "/api/limits", &op).await,
        (403, "forbidden".into())
    );
    let body = limits(json!(2), json!(null), json!(1), json!(null));
    let (status, _) = put_limits(&server, &op, &body).await;
    assert_eq!(status, 403);
    let (status, err) = put_limits(&server, &boss, r#"{"concurrent_calls": -1}"#).await;
    assert_eq!(status, 400, "{err}");
    assert_eq!(err["error"]["code"], "invalid_message", "{err}");
    let (status, err) = put_limits(
        &server,
        &boss,
        &limits(json!(1.5), json!(1), json!(1), json!(1)),
    )
    .await;
    assert_eq!(status, 400, "{err}");
    assert!(err["error"]["message"]
        .as_str()
        .unwrap()
        .contains("concurrent_calls"));

    let (status, set) = put_limits(&server, &boss, &body).await;
    assert_eq!(status, 200, "{set}");
    let got = json_of(&server, "/api/limits", &boss).await;
    assert_eq!(got["defaults"], false, "{got}");
    assert_eq!(got["concurrent_calls"], 2, "{got}");
    assert_eq!(got["subject_concurrent_calls"], 1, "{got}");
    assert!(got["daily_minutes"].is_null(), "{got}");
    // Another org's admin sees its own (the defaults).
    let other = json_of(&server, "/api/limits", &admin(&server, Some("globex"))).await;
    assert_eq!(other["defaults"], true, "{other}");

    // One live call per subject, two per org.
    let (mut alice, _) = call_as(&server, "alice", Some("acme")).await;
    let (_ws, answer) = try_call(&server, "alice", Some("acme"), json!({})).await;
    assert_refused(&answer, "subject_concurrent_calls");
    let (mut bob, _) = call_as(&server, "bob", Some("acme")).await;
    let (_ws, answer) = try_call(&server, "carol", Some("acme"), json!({})).await;
    assert_refused(&answer, "concurrent_calls");
    // Another org is not affected.
    let (mut mallory, _) = call_as(&server, "mallory", Some("globex")).await;
    // A call that ends frees its place at once.
    hang_up(&mut alice).await;
    let (mut carol, _) = call_as(&server, "carol", Some("acme")).await;
    for ws in [&mut bob, &mut carol, &mut mallory] {
        hang_up(ws).await;
    }
}

#[tokio::test]
async fn sqlite_limits_are_set_and_checked() {
    limits_are_set_and_checked(Db::sqlite()).await;
}

#[tokio::test]
async fn postgres_limits_are_set_and_checked() {
    limits_are_set_and_checked(Db::postgres().await).await;
}

/// Call time of an earlier call of `sub` today.
fn used_today(org: &str, sub: &str, ms: i64) -> Write {
    Write::Usage(UsageRow {
        call_id: format!("call_earlier_{sub}"),
        part_ms: 1,
        day: day_of(voxwire::call::record::now_ms()),
        org: org.into(),
        sub: sub.into(),
        agent: "receptionist".into(),
        metric: "call_ms".into(),
        engine: String::new(),
        value: ms,
    })
}

async fn minutes_run_out(db: Db) {
    let server = server_on(&db).await;
    let boss = admin(&server, Some("acme"));
    let store = server.state.call_services.store.clone();
    // 56 of the org's 60 seconds today are used: alice's call has 4 left.
    let (status, _) = put_limits(
        &server,
        &boss,
        &limits(json!(null), json!(1), json!(null), json!(null)),
    )
    .await;
    assert_eq!(status, 200);
    store
        .write(&[used_today("acme", "dave", 56_000)])
        .await
        .unwrap();
    let started = Instant::now();
    let (mut ws, answer) = try_call(&server, "alice", Some("acme"), json!({})).await;
    assert_eq!(answer["type"], "call_started", "{answer}");
    let frames = recv_until(&mut ws, "call_ended").await;
    let lasted = started.elapsed();
    let ended = frames.last().unwrap();
    assert_eq!(ended["reason"], "limit_reached", "{:?}", types(&frames));
    // Not before the allowance was used up (the bound is the allowance less what the test
    // itself took to start the call).
    assert!(lasted >= Duration::from_millis(3_500), "{lasted:?}");
    // The agent said the limit message, with the fake speech engine's audio.
    let said = reply(&frames);
    assert_eq!(said["text"], voxwire::config::DEFAULT_LIMIT_MESSAGE);
    let audio_of_it = frames
        .iter()
        .filter(|f| f["type"] == "audio_response" && f["item_id"] == said["item_id"])
        .count();
    assert!(audio_of_it > 0, "{:?}", types(&frames));
    flush(&server).await;

    // The org's minutes are gone for today: a new call is refused, naming the limit.
    let (_ws, answer) = try_call(&server, "bob", Some("acme"), json!({})).await;
    assert_refused(&answer, "daily_minutes");
    // Another org is not affected.
    let (mut m, _) = call_as(&server, "mallory", Some("globex")).await;
    hang_up(&mut m).await;

    // Per subject: dave's minute is used up, bob's is not.
    let (status, _) = put_limits(
        &server,
        &boss,
        &limits(json!(null), json!(null), json!(null), json!(1)),
    )
    .await;
    assert_eq!(status, 200);
    store
        .write(&[used_today("acme", "dave", 60_000)])
        .await
        .unwrap();
    let (_ws, answer) = try_call(&server, "dave", Some("acme"), json!({})).await;
    assert_refused(&answer, "subject_daily_minutes");
    let (mut b, _) = call_as(&server, "bob", Some("acme")).await;
    hang_up(&mut b).await;

    // The call's own minutes are in the usage report.
    let report = json_of(
        &server,
        "/api/usage?group_by=sub",
        &operator(&server, Some("acme")),
    )
    .await;
    let rows = report["rows"].as_array().unwrap();
    let alice = rows.iter().find(|r| r["sub"] == "alice").unwrap();
    let secs = alice["call_seconds"].as_f64().unwrap();
    assert!((3.5..30.0).contains(&secs), "{report}");
    assert_eq!(alice["calls"], 1, "{report}");

    // A limit set while a call is live reaches it: globex has none when mallory calls, then
    // its minute of the day is set and already used.
    let (mut m, answer) = try_call(&server, "mallory", Some("globex"), json!({})).await;
    assert_eq!(answer["type"], "call_started", "{answer}");
    store
        .write(&[used_today("globex", "zed", 60_000)])
        .await
        .unwrap();
    let (status, _) = put_limits(
        &server,
        &admin(&server, Some("globex")),
        &limits(json!(null), json!(1), json!(null), json!(null)),
    )
    .await;
    assert_eq!(status, 200);
    let frames = recv_until(&mut m, "call_ended").await;
    assert_eq!(
        frames.last().unwrap()["reason"],
        "limit_reached",
        "{:?}",
        types(&frames)
    );
    assert_eq!(
        reply(&frames)["text"],
        voxwire::config::DEFAULT_LIMIT_MESSAGE
    );
}

#[tokio::test]
async fn sqlite_minutes_run_out() {
    minutes_run_out(Db::sqlite()).await;
}

#[tokio::test]
async fn postgres_minutes_run_out() {
    minutes_run_out(Db::postgres().await).await;
}

fn audio_ms(frames: &[Value]) -> f64 {
    frames
        .iter()
        .filter(|f| f["type"] == "audio_response")
        .map(|f| {
            let bytes = base64::engine::general_purpose::STANDARD
                .decode(f["audio"].as_str().unwrap())
                .unwrap();
            bytes.len() as f64 / 2.0 / 16.0
        })
        .sum()
}

async fn usage_matches_the_calls(db: Db) {
    let server = server_on(&db).await;
    let mut replies: Vec<String> = Vec::new();
    let mut heard_ms = 0.0;
    let mut transcribed = 0.0;
    // Two calls of carol: one typed turn each, and one spoken turn of 1.5 s in the first.
    for (i, line) in ["hello there", "and again"].into_iter().enumerate() {
        let (mut ws, answer) = try_call(
            &server,
            "carol",
            Some("acme"),
            json!({"turn_detection": {"mode": "manual"}}),
        )
        .await;
        assert_eq!(answer["type"], "call_started", "{answer}");
        if i == 0 {
            stream_pcm16(&mut ws, &tone_pcm16(1_500, 16_000, 0.3), 16_000).await;
            send(&mut ws, json!({"type": "commit"})).await;
            let frames = recv_until(&mut ws, "response_done").await;
            let t = frames.iter().find(|f| f["type"] == "transcript").unwrap();
            let said = t["text"].as_str().unwrap();
            transcribed += said
                .trim_start_matches("audio of ")
                .trim_end_matches(" seconds")
                .parse::<f64>()
                .unwrap();
            let r = reply(&frames);
            replies.push(r["text"].as_str().unwrap().to_string());
            heard_ms += audio_ms(&frames);
        }
        send(&mut ws, json!({"type": "text", "text": line})).await;
        let frames = recv_until(&mut ws, "response_done").await;
        let r = reply(&frames);
        replies.push(r["text"].as_str().unwrap().to_string());
        heard_ms += audio_ms(&frames);
        hang_up(&mut ws).await;
    }
    let (mut other, _) = call_as(&server, "mallory", Some("globex")).await;
    turn(&mut other, "not yours").await;
    hang_up(&mut other).await;
    flush(&server).await;

    let op = operator(&server, Some("acme"));
    let report = json_of(&server, "/api/usage?group_by=sub", &op).await;
    let rows = report["rows"].as_array().unwrap();
    assert_eq!(rows.len(), 1, "only acme's subject: {report}");
    let carol = &rows[0];
    assert_eq!(carol["sub"], "carol", "{report}");
    assert_eq!(carol["calls"], 2, "{report}");
    let f = |k: &str| carol[k].as_f64().unwrap_or_else(|| panic!("{k}: {report}"));
    assert!((f("caller_audio_seconds") - 1.5).abs() < 0.001, "{report}");
    assert!((f("stt_seconds") - transcribed).abs() <= 0.1, "{report}");
    assert!(
        (f("agent_audio_seconds") * 1000.0 - heard_ms).abs() < 1.0,
        "{report}"
    );
    let written: usize = replies.iter().map(|r| r.chars().count()).sum();
    assert_eq!(f("llm_completion_chars") as usize, written, "{report}");
    // Speech gets the replies sentence by sentence: the spaces between sentences aside,
    // every character.
    let spoken = f("tts_chars") as usize;
    assert!(
        spoken <= written && spoken + 2 * replies.len() >= written,
        "{spoken} of {written}: {report}"
    );
    assert!(f("call_seconds") > 0.0, "{report}");
    // By engine: the fake engines, under their plain label, with every engine figure.
    let engines = carol["by_engine"].as_object().unwrap();
    assert_eq!(engines.keys().collect::<Vec<_>>(), ["fake"], "{report}");
    for metric in [
        "tts_chars",
        "stt_seconds",
        "llm_completion_chars",
        "agent_audio_seconds",
    ] {
        assert_eq!(engines["fake"][metric], carol[metric], "{metric}: {report}");
    }

    // By day: today; by agent: the default agent.
    let by_day = json_of(&server, "/api/usage?group_by=day", &op).await;
    assert_eq!(
        by_day["rows"][0]["day"],
        day_of(voxwire::call::record::now_ms()),
        "{by_day}"
    );
    assert_eq!(by_day["rows"][0]["calls"], 2, "{by_day}");
    let by_agent = json_of(&server, "/api/usage?group_by=agent", &op).await;
    assert_eq!(by_agent["rows"][0]["agent"], "receptionist", "{by_agent}");
    // A range of days before today has none.
    let past = json_of(&server, "/api/usage?from=0&to=86400000", &op).await;
    assert_eq!(past["rows"].as_array().unwrap().len(), 0, "{past}");
    // Bad parameters, and callers.
    let (status, code) = refused(&server, "/api/usage?group_by=month", &op).await;
    assert_eq!((status, code.as_str()), (400, "invalid_parameter"));
    let (status, code) = refused(&server, "/api/usage?from=0&to=999999999999", &op).await;
    assert_eq!((status, code.as_str()), (400, "invalid_parameter"));
    let (status, _) = refused(
        &server,
        "/api/usage",
        &caller(&server, "carol", Some("acme")),
    )
    .await;
    assert_eq!(status, 403);

    // A usage write sent again, or an older total after a newer one, counts once.
    let store = server.state.call_services.store.clone();
    let row = |value| used_today("acme", "erin", value);
    store.write(&[row(5_000), row(5_000)]).await.unwrap();
    store.write(&[row(7_000)]).await.unwrap();
    store.write(&[row(5_000)]).await.unwrap();
    let report = json_of(&server, "/api/usage?group_by=sub", &op).await;
    let erin = report["rows"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["sub"] == "erin")
        .cloned()
        .unwrap();
    assert_eq!(erin["call_seconds"], 7.0, "{report}");
    assert_eq!(erin["calls"], 1, "{report}");
}

#[tokio::test]
async fn sqlite_usage_matches_the_calls() {
    usage_matches_the_calls(Db::sqlite()).await;
}

#[tokio::test]
async fn postgres_usage_matches_the_calls() {
    usage_matches_the_calls(Db::postgres().await).await;
}

/// A hosted language model reports its token counts (the OpenAI-compatible stream's last
/// event); they are metered under its name, with the reply's characters, and the summary's
/// tokens count in the same call.
async fn hosted_tokens_are_metered(db: Db) {
    let fake = common::providers::FakeProvider::start().await;
    let mut config = Config::for_tests();
    config.providers = common::hosted::providers(&fake);
    config.llm = vec!["openai".into()];
    let engines = Engines::from_config(&config).unwrap();
    let server = start_with_store(config, engines, db.store().await).await;
    let (mut ws, call_id) = call_as(&server, "carol", Some("acme")).await;
    send(&mut ws, json!({"type": "text", "text": "one two three"})).await;
    let frames = recv_until(&mut ws, "response_done").await;
    let text = reply(&frames)["text"].as_str().unwrap().to_string();
    assert_eq!(text, common::providers::DEFAULT_REPLY);
    hang_up(&mut ws).await;
    // The summary made when the call ends asks the same model: once it is stored, its tokens
    // are the call's too.
    let store = server.state.call_services.store.clone();
    let deadline = Instant::now() + Duration::from_secs(30);
    while store.summary(&call_id).await.unwrap().is_none() {
        assert!(Instant::now() < deadline, "no summary of {call_id}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(fake.count(common::providers::Route::ChatCompletions), 2);
    flush(&server).await;
    let report = json_of(&server, "/api/usage", &operator(&server, Some("acme"))).await;
    let row = &report["rows"][0];
    // Under the provider's name in providers.toml; the fake speech engines under `fake`.
    let llm = &row["by_engine"]["openai"];
    assert!(
        row["by_engine"]["fake"]["tts_chars"].as_u64() > Some(0),
        "{report}"
    );
    // The fake provider answers both the turn and the summary with its default reply, one
    // token a word.
    let words = common::providers::DEFAULT_REPLY.split_whitespace().count();
    assert_eq!(llm["llm_completion_tokens"], 2 * words, "{report}");
    // The system prompt and the caller's three words, then the summary's request, which holds
    // the whole conversation: more than twice the turn's three words.
    let prompt = llm["llm_prompt_tokens"].as_u64().unwrap();
    assert!(prompt > 2 * (3 + words as u64), "{report}");
    assert_eq!(row["llm_prompt_tokens"], prompt, "{report}");
    assert_eq!(
        llm["llm_completion_chars"],
        text.chars().count(),
        "{report}"
    );
}

#[tokio::test]
async fn sqlite_hosted_tokens_are_metered() {
    hosted_tokens_are_metered(Db::sqlite()).await;
}

#[tokio::test]
async fn postgres_hosted_tokens_are_metered() {
    hosted_tokens_are_metered(Db::postgres().await).await;
}

/// The HTTP API answers 429 `rate_limited` with `Retry-After` past a client address's, a
/// token subject's or an API key's requests per minute; other subjects, `/health` and calls
/// go on.
async fn rate_limits_answer_429(db: Db) {
    let mut config = Config::for_tests();
    config.usage.rate_per_ip = 0;
    config.usage.rate_per_subject = 3;
    let server = start_with_store(config, Engines::fake(), db.store().await).await;
    let op = operator(&server, Some("acme"));
    for _ in 0..3 {
        assert_eq!(get(&server, "/api/stats", &op).await.status(), 200);
    }
    let r = get(&server, "/api/stats", &op).await;
    assert_eq!(r.status(), 429);
    let wait: u64 = r.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=20).contains(&wait), "{wait}");
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["error"]["code"], "rate_limited", "{body}");
    // Another subject from the same address is not limited, nor is a call over the socket.
    let other = operator(&server, Some("globex"));
    assert_eq!(get(&server, "/api/stats", &other).await.status(), 200);
    let (mut ws, _) = call_as(&server, "carol", Some("acme")).await;
    turn(&mut ws, "still talking").await;
    hang_up(&mut ws).await;
    let health = reqwest::get(server.url("/health")).await.unwrap();
    assert_eq!(health.status(), 200);
    // An API key is counted on its own, by its id.
    let k = voxwire::keys::generate();
    let store = server.state.call_services.store.clone();
    store
        .create_key(&voxwire::store::KeyRow {
            id: k.id.clone(),
            org: "acme".into(),
            name: "backend".into(),
            secret_sha256: k.secret_sha256,
            created_at_ms: voxwire::call::record::now_ms(),
            last_used_at_ms: None,
            revoked_at_ms: None,
        })
        .await
        .unwrap();
    for _ in 0..3 {
        assert_eq!(get(&server, "/api/usage", &k.text).await.status(), 200);
    }
    let r = get(&server, "/api/usage", &k.text).await;
    assert_eq!(r.status(), 429);
    assert!(r.headers().contains_key("retry-after"));

    // Per address: every request of the address counts, whoever sends it.
    let mut config = Config::for_tests();
    config.usage.rate_per_ip = 2;
    config.usage.rate_per_subject = 0;
    let server = start_with_store(config, Engines::fake(), db.store().await).await;
    let (a, b) = (
        operator(&server, Some("acme")),
        operator(&server, Some("globex")),
    );
    assert_eq!(get(&server, "/api/stats", &a).await.status(), 200);
    assert_eq!(get(&server, "/api/stats", &b).await.status(), 200);
    let r = get(&server, "/api/stats", &b).await;
    assert_eq!(r.status(), 429);
    assert!(r.headers().contains_key("retry-after"));
    for _ in 0..5 {
        let health = reqwest::get(server.url("/health")).await.unwrap();
        assert_eq!(health.status(), 200);
    }
}

#[tokio::test]
async fn sqlite_rate_limits_answer_429() {
    rate_limits_answer_429(Db::sqlite()).await;
}

#[tokio::test]
async fn postgres_rate_limits_answer_429() {
    rate_limits_answer_429(Db::postgres().await).await;
}

//! Call summaries over real sockets, on a real SQLite store: a hosted model (the fake
//! OpenAI-compatible provider) asked for JSON writes the summary and the agent's fields, masked
//! as the agent redacts, carried by the signed `call.ended` webhook and read back into the next
//! call's prompt of the same caller; the real local model's summary keeps to the call's words;
//! an agent with `summary = false` keeps none and its webhook still goes out.

mod common;
#[path = "webhooks_common/receiver.rs"]
#[allow(dead_code)]
mod receiver;
mod store_common;

use std::collections::HashMap;
use std::time::Duration;

use common::history::{call_as, hang_up, json_of, operator, turn};
use common::hosted::providers;
use common::providers::{FakeProvider, Route};
use common::TestServer;
use receiver::Receiver;
use serde_json::{json, Value};
use store_common::Db;
use voxwire::agents::Agents;
use voxwire::config::WebhookSettings;
use voxwire::engines::Engines;
use voxwire::Config;

const SECRET: &str = "whsec-summary-test-0123456789abcdef";
const SECRET_VAR: &str = "VOXWIRE_TEST_SUMMARY_HOOK_SECRET";
/// Bounds on things that must happen, not measures of speed.
const LONG: Duration = Duration::from_secs(120);

/// The agent `desk`: masks phone numbers, asks for four fields, reminds itself of earlier
/// calls, and sends webhooks to `hook`; `quiet` makes no summaries.
fn agents(hook: &str) -> Agents {
    Agents::parse(&format!(
        r#"
default = "desk"

[[agent]]
name = "desk"
system_prompt = "You book tables. Earlier calls: {{{{conversation_context}}}} Last time: {{{{previous_summary}}}}"
redact = ["phone"]
webhook_url = "{hook}"
webhook_secret_env = "{SECRET_VAR}"

[agent.summary_fields]
type = "object"
[agent.summary_fields.properties.name]
type = "string"
description = "The caller's name"
[agent.summary_fields.properties.party_size]
type = "integer"
description = "How many people the table is for"
[agent.summary_fields.properties.callback]
type = "string"
description = "The number to call back"
[agent.summary_fields.properties.vip]
type = "boolean"

[[agent]]
name = "quiet"
system_prompt = "You say little."
summary = false
webhook_url = "{hook}"
webhook_secret_env = "{SECRET_VAR}"
"#
    ))
    .unwrap()
}

fn config(hook: &str) -> Config {
    let mut c = Config::for_tests();
    c.agents = agents(hook);
    let env = HashMap::from([(SECRET_VAR.to_string(), SECRET.to_string())]);
    c.webhooks = WebhookSettings {
        retry_min: Duration::from_millis(50),
        retry_max: Duration::from_millis(200),
        poll: Duration::from_millis(20),
        ..WebhookSettings::from_env(&env, &c.agents).unwrap()
    };
    c
}

/// The `call.ended` body the receiver got for `call_id`, waiting for it.
async fn ended_hook(hook: &Receiver, call_id: &str) -> Value {
    let deadline = tokio::time::Instant::now() + LONG;
    loop {
        let found = hook
            .got()
            .into_iter()
            .find(|g| g.event == "call.ended" && g.json()["data"]["call_id"] == call_id);
        if let Some(g) = found {
            assert_eq!(g.verified, Ok(()), "the signature verifies");
            return g.json();
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no call.ended for {call_id}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The call as `GET /api/calls/{id}` answers once its summary is there.
async fn summarised(server: &TestServer, call_id: &str) -> Value {
    let token = operator(server, None);
    let deadline = tokio::time::Instant::now() + LONG;
    loop {
        let call = json_of(server, &format!("/api/calls/{call_id}"), &token).await;
        if !call["summary"].is_null() {
            return call;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no summary of {call_id}: {call}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The system message of the language model's last request.
fn last_system_prompt(fake: &FakeProvider) -> String {
    let req = fake.last(Route::ChatCompletions).unwrap().json.unwrap();
    req["messages"][0]["content"].as_str().unwrap().to_string()
}

const JSON_SUMMARY: &str = r#"{"summary": "Ada Lovelace booked a table for four on Friday; call back on 415 555 0100.",
 "fields": {"name": "Ada Lovelace", "party_size": "4", "callback": "415 555 0100", "vip": "maybe", "extra": 1}}"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hosted_model_summarises_in_json_and_a_returning_caller_is_reminded() {
    let fake = FakeProvider::start().await;
    let hook = Receiver::start(SECRET).await;
    let db = Db::sqlite();
    let mut config = config(&hook.url());
    config.providers = providers(&fake);
    config.stt = vec!["fake".into()];
    config.llm = vec!["openai".into()];
    config.tts = vec!["fake".into()];
    let engines = Engines::from_config(&config).unwrap();
    let server = common::start_with_store(config, engines, db.store().await).await;

    // A first call: the model answers the turn, then is asked for the summary.
    let (mut ws, first) = call_as(&server, "ada", None).await;
    fake.set_reply("Of course, a table for four.");
    turn(
        &mut ws,
        "Hi, I'm Ada Lovelace. A table for four on Friday please, call me back on 415 555 0100.",
    )
    .await;
    let system = last_system_prompt(&fake);
    assert!(
        system.ends_with("Earlier calls:  Last time: "),
        "a first call has no earlier summaries: {system:?}"
    );
    fake.set_reply(JSON_SUMMARY);
    hang_up(&mut ws).await;

    let ended = ended_hook(&hook, &first).await;
    let data = &ended["data"];
    let want_fields =
        json!({"name": "Ada Lovelace", "party_size": 4, "callback": "[phone]", "vip": null});
    assert_eq!(
        data["summary"], "Ada Lovelace booked a table for four on Friday; call back on [phone].",
        "{data}"
    );
    assert_eq!(data["fields"], want_fields, "{data}");
    // The summary was asked for as JSON, from the whole conversation (the model hears the
    // number; only what is kept is masked).
    let asked = fake.last(Route::ChatCompletions).unwrap().json.unwrap();
    assert_eq!(asked["response_format"], json!({"type": "json_object"}));
    let question = asked["messages"][1]["content"].as_str().unwrap();
    assert!(
        question.contains("Caller: Hi, I'm Ada Lovelace.")
            && question.contains("415 555 0100")
            && question.contains("Agent: Of course, a table for four.")
            && question.contains("- party_size (integer): How many people the table is for"),
        "{question}"
    );

    let call = summarised(&server, &first).await;
    let s = &call["summary"];
    assert_eq!(
        (s["method"].as_str(), s["fields"].clone()),
        (Some("json"), want_fields.clone())
    );
    assert!(s["engine"].as_str().unwrap().contains("gpt-test"), "{s}");
    assert!(s["at_ms"].as_i64().unwrap() > 0);
    // Stored masked: the number is in no summary row.
    let store = &server.state.call_services.store;
    let row = store.summary(&first).await.unwrap().unwrap();
    assert!(!row.text.contains("0100") && !row.fields.to_string().contains("0100"));

    // The same caller calls back: the agent's prompt holds what the first call was about.
    let (mut ws, second) = call_as(&server, "ada", None).await;
    fake.set_reply("Welcome back, Ada.");
    turn(&mut ws, "Hello again").await;
    let system = last_system_prompt(&fake);
    assert!(
        system.contains(
            "Last time: Ada Lovelace booked a table for four on Friday; call back on [phone]."
        ),
        "{system}"
    );
    assert!(
        system.contains("Earlier calls: Call on ")
            && system.contains(" UTC: Ada Lovelace booked a table")
            && system.contains("callback: [phone]")
            && system.contains("name: Ada Lovelace")
            && system.contains("party_size: 4")
            && !system.contains("vip"),
        "{system}"
    );
    fake.set_reply("{\"summary\": \"Ada called again.\", \"fields\": {}}");
    hang_up(&mut ws).await;
    ended_hook(&hook, &second).await;

    // Another caller hears nothing of Ada's calls.
    let (mut ws, _) = call_as(&server, "bob", None).await;
    fake.set_reply("Hello Bob.");
    turn(&mut ws, "Hi").await;
    let system = last_system_prompt(&fake);
    assert!(!system.contains("Ada"), "{system}");
    hang_up(&mut ws).await;

    // After two calls, the newest is "last time" and both are in the context, oldest first;
    // the names are the server's to fill, whatever the client sends under them.
    let (mut ws, _) = server.connect("ada").await;
    common::send(
        &mut ws,
        json!({"type": "start_call", "variables": {"previous_summary": "forged", "conversation_context": "forged"}}),
    )
    .await;
    common::recv_until(&mut ws, "call_started").await;
    fake.set_reply("Hi.");
    turn(&mut ws, "It's me").await;
    let system = last_system_prompt(&fake);
    let first_at = system.find("Ada Lovelace booked").unwrap();
    let second_at = system.find("Ada called again.").unwrap();
    assert!(first_at < second_at, "{system}");
    assert!(system.ends_with("Last time: Ada called again."), "{system}");
    assert!(!system.contains("forged"), "{system}");
    hang_up(&mut ws).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_without_summaries_keeps_none_and_still_sends_its_webhook() {
    let hook = Receiver::start(SECRET).await;
    let db = Db::sqlite();
    let server =
        common::start_with_store(config(&hook.url()), Engines::fake(), db.store().await).await;
    let (mut ws, _) = server.connect("cy").await;
    common::send(&mut ws, json!({"type": "start_call", "agent": "quiet"})).await;
    let started = common::recv_until(&mut ws, "call_started").await;
    let id = started.last().unwrap()["call_id"]
        .as_str()
        .unwrap()
        .to_string();
    turn(&mut ws, "a few words for nobody").await;
    hang_up(&mut ws).await;
    let data = &ended_hook(&hook, &id).await["data"];
    assert!(
        data["summary"].is_null() && data["fields"].is_null(),
        "{data}"
    );
    let call = json_of(
        &server,
        &format!("/api/calls/{id}"),
        &operator(&server, None),
    )
    .await;
    assert!(call["summary"].is_null(), "{call}");
    assert!(call.get("summary").is_some(), "{call}");
    let store = &server.state.call_services.store;
    assert!(store.summary(&id).await.unwrap().is_none());
}

/// The real local model on a typed call: whatever it writes, the stored summary keeps to the
/// caller's words, and each field is either found in what the caller said or null.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_local_model_keeps_to_the_callers_words() {
    let db = Db::sqlite();
    let mut config = Config::for_tests();
    config.agents = Agents::parse(
        r#"
[[agent]]
name = "desk"
system_prompt = "You are the receptionist of a restaurant. Reply with one short sentence."
max_tokens = 40
[agent.summary_fields]
type = "object"
[agent.summary_fields.properties.name]
type = "string"
description = "The caller's name"
[agent.summary_fields.properties.party_size]
type = "integer"
description = "How many people"
"#,
    )
    .unwrap();
    let server = common::start_with_store(config, common::local_engines(), db.store().await).await;
    let said = "Hello, my name is Ada Lovelace. I would like to book a table for 4 people on \
                Friday evening.";
    let (mut ws, id) = call_as(&server, "ada", None).await;
    turn(&mut ws, said).await;
    hang_up(&mut ws).await;
    let call = summarised(&server, &id).await;
    let s = &call["summary"];
    println!("local summary: {s}");
    let text = s["text"].as_str().unwrap();
    let heard = said.to_lowercase();
    match s["method"].as_str().unwrap() {
        "model" => {
            assert!(s["engine"].as_str().unwrap() != "none", "{s}");
            // Words that say what kind of sentence it is may be the model's own.
            let framing = [
                "caller",
                "called",
                "calling",
                "wanted",
                "wants",
                "asked",
                "requested",
                "with",
                "about",
                "their",
                "would",
                "like",
            ];
            let words: Vec<String> = text
                .split(|c: char| !c.is_alphanumeric())
                .filter(|w| w.len() > 3)
                .map(str::to_lowercase)
                .filter(|w| !framing.contains(&w.as_str()))
                .collect();
            let found = words.iter().filter(|w| heard.contains(w.as_str())).count();
            assert!(
                !words.is_empty() && found * 2 >= words.len(),
                "the model's summary is not drawn from the call: {text:?} / {heard:?}"
            );
        }
        "extract" => assert_eq!(text, format!("The caller said: \"{said}\"")),
        other => panic!("a local model's summary made by {other}: {s}"),
    }
    let fields = s["fields"].as_object().unwrap();
    assert_eq!(fields.len(), 2, "{s}");
    match &fields["name"] {
        Value::Null => {}
        Value::String(name) => assert!(said.contains(name.as_str()), "{name:?} is not in the call"),
        other => panic!("name is {other}"),
    }
    assert!(
        fields["party_size"].is_null() || fields["party_size"] == 4,
        "{s}"
    );
    // Greedy decoding finds both here ("Ada Lovelace", 4); a model that found neither would
    // not be extracting at all.
    assert!(
        fields.values().any(|v| !v.is_null()),
        "no field was found: {s}"
    );
}

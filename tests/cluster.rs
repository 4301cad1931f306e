//! Several nodes behind a load balancer act as one: three voxwire processes on one Postgres and
//! one Redis, HAProxy in front with plain round robin. Calls spread over the nodes; an operator
//! on one node acts on a call live on another, watches it, listens in and speaks into it; a
//! node killed or drained mid-call loses no call (its callers resume elsewhere with their
//! history); org limits count the whole cluster's calls once; each webhook event is delivered
//! once. Needs Debian's `postgresql`, `redis-server` and `haproxy` (`scripts/setup` installs
//! them).

mod cluster_common;
#[allow(dead_code)]
#[path = "webhooks_common/receiver.rs"]
mod receiver;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::Duration;

use cluster_common::*;
use serde_json::{json, Value};
use voxwire::auth::Role;

/// How long a resume may be refused with `call_already_active` while a dead node's lease on
/// the call runs out (the lease is 5 s), and how often it is tried.
const RESUME_WITHIN: Duration = Duration::from_secs(15);
const RESUME_EVERY: Duration = Duration::from_millis(500);

/// Resumes `call_id` on `caller`, trying again while the call is still held elsewhere.
async fn resume(caller: &mut Caller, call_id: &str) -> Value {
    let deadline = tokio::time::Instant::now() + RESUME_WITHIN;
    loop {
        let answer = caller.start_call(json!({"call_id": call_id})).await;
        if answer["type"] == "call_started" {
            return answer;
        }
        assert_eq!(answer["code"], "call_already_active", "{answer}");
        assert!(
            tokio::time::Instant::now() < deadline,
            "{call_id} was still held elsewhere after {RESUME_WITHIN:?}: {answer}"
        );
        tokio::time::sleep(RESUME_EVERY).await;
    }
}

/// The call's items as (item_id, role, text), read by its owner through node `n` (which
/// reads the store for a call not live on it); `None` while it has none of the call.
async fn stored_items(
    c: &Cluster,
    n: usize,
    token: &str,
    call_id: &str,
) -> Option<Vec<(i64, String, String)>> {
    let a = get(&format!("{}/api/calls/{call_id}", c.direct(n)), token).await;
    if a.status == 404 {
        return None;
    }
    assert_eq!(a.status, 200, "{:?}", a.body);
    let items = a.body["items"]
        .as_array()
        .expect("items")
        .iter()
        .map(|i| {
            (
                i["item_id"].as_i64().expect("item_id"),
                i["role"].as_str().expect("role").to_string(),
                i["heard"]
                    .as_str()
                    .or(i["text"].as_str())
                    .expect("text")
                    .to_string(),
            )
        })
        .collect();
    Some(items)
}

/// Waits until the store holds `items` of the call. Calls never wait for the database (its
/// writes are batched within milliseconds), so this separates what was said from when it
/// reached the store.
async fn until_stored(
    c: &Cluster,
    n: usize,
    token: &str,
    call_id: &str,
    items: &[(i64, String, String)],
) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let stored = stored_items(c, n, token, call_id).await;
        if stored.as_deref() == Some(items) {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the store never held the call's items:\nstored {stored:?}\nsaid {items:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// a. Thirty calls at once through the proxy: each is answered, and they land on every node.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_through_the_proxy_spread_over_every_node_and_all_are_answered() {
    let c = Cluster::start(Options::default()).await;
    let calls = (0..30).map(|i| {
        let token = c.caller_token(&format!("caller{i}"), Some("spread"));
        let url = c.lb_ws_url();
        async move {
            let mut caller = Caller::connect_within(&url, &token, Duration::from_secs(10)).await;
            caller.start(json!({})).await;
            let frames = caller.speak(1_000).await;
            let ended = caller.hang_up().await;
            (caller.node, reply_of(&frames), ended)
        }
    });
    let results = futures::future::join_all(calls).await;
    let mut per_node: BTreeMap<String, usize> = BTreeMap::new();
    for (node, reply, ended) in &results {
        let reply = reply.as_deref().unwrap_or_default();
        assert!(
            reply.starts_with("You said: audio of ") && reply.ends_with("That is turn 1."),
            "{reply}"
        );
        assert_eq!(ended["reason"], "client_ended", "{ended}");
        *per_node
            .entry(node.clone().unwrap_or_else(|| "(no x-voxwire-node)".into()))
            .or_default() += 1;
    }
    for n in 1..=NODES {
        let name = format!("node{n}");
        let count = per_node.get(&name).copied().unwrap_or(0);
        assert!(count >= 5, "{name} had {count} calls: {per_node:?}");
    }
}

/// b. An operator on node1 takes over, speaks into and watches a call live on node3; a monitor
/// on node2 lists it and, reconnecting with `Last-Event-ID`, gets what it missed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_operator_on_one_node_acts_on_and_watches_a_call_on_another() {
    let c = Cluster::start(Options::default()).await;
    let op = c.token("sup", Some("acme"), Role::Operator);
    let mut on1 = Monitor::open(&c.direct(1), &op, None).await;
    assert_eq!(on1.next().await.1["type"], "live_calls");

    let mut caller = c
        .connect_node(3, &c.caller_token("alice", Some("acme")))
        .await;
    let call_id = caller.start(json!({})).await;
    let said = caller.say("when do you open").await;
    assert_eq!(
        reply_of(&said).as_deref(),
        Some("You said: when do you open. That is turn 1.")
    );
    // node1's monitor follows node3's call.
    let ours = |v: &Value| v["call_id"] == call_id.as_str();
    let seen = on1
        .until("node3's call's reply on node1", |v| {
            ours(v) && v["type"] == "response" && v["text"].is_string()
        })
        .await;
    let kinds: Vec<&str> = seen
        .iter()
        .filter(|(_, v)| ours(v))
        .filter_map(|(_, v)| v["type"].as_str())
        .collect();
    assert_eq!(kinds.first(), Some(&"call_started"), "{kinds:?}");
    assert!(kinds.contains(&"transcript"), "{kinds:?}");

    // node2's snapshot lists the call.
    let mut on2 = Monitor::open(&c.direct(2), &op, None).await;
    let (_, snapshot) = on2.next().await;
    assert_eq!(snapshot["type"], "live_calls", "{snapshot}");
    let listed: Vec<&str> = snapshot["calls"]
        .as_array()
        .expect("calls")
        .iter()
        .filter_map(|c| c["call_id"].as_str())
        .collect();
    assert_eq!(listed, vec![call_id.as_str()], "{snapshot}");

    // Taken over through node1: the caller on node3 is told.
    let path = |action: &str| format!("{}/api/calls/{call_id}/{action}", c.direct(1));
    let a = post(&path("takeover"), &op, None).await;
    assert_eq!(a.status, 200, "{:?}", a.body);
    assert_eq!(a.body["state"], "taken_over", "{:?}", a.body);
    assert_eq!(a.body["taken_over_by"], "sup", "{:?}", a.body);
    caller.recv_until("takeover_started").await;

    // A line said through node1 reaches the caller as the operator's.
    let line = "Hi, this is Sam from support.";
    let a = post(&path("say"), &op, Some(json!({"text": line}))).await;
    assert_eq!(a.status, 200, "{:?}", a.body);
    let heard = caller.recv_until("response_done").await;
    let reply = heard
        .iter()
        .find(|f| f["type"] == "response" && f["is_final"] == true)
        .expect("the operator's line");
    assert_eq!(
        (reply["text"].as_str(), reply["from"].as_str()),
        (Some(line), Some("operator"))
    );

    // node2's monitor takes events up to the takeover, then its connection drops.
    let before = on2
        .until("the takeover on node2", |v| {
            ours(v) && v["type"] == "takeover_started"
        })
        .await;
    let last = before
        .iter()
        .rev()
        .find_map(|(id, _)| *id)
        .expect("an event with an id");
    drop(on2);
    // Missed meanwhile: a second line. node1's monitor sees everything live.
    let second = "Let me check that for you.";
    let a = post(&path("say"), &op, Some(json!({"text": second}))).await;
    assert_eq!(a.status, 200, "{:?}", a.body);
    caller.recv_until("response_done").await;
    let live = on1
        .until("the second line on node1", |v| {
            ours(v) && v["type"] == "operator_say" && v["text"] == second
        })
        .await;
    let mut again = Monitor::open(&c.direct(2), &op, Some(last)).await;
    assert_eq!(again.next().await.1["type"], "live_calls");
    let replayed = again
        .until("the missed line replayed on node2", |v| {
            ours(v) && v["type"] == "operator_say" && v["text"] == second
        })
        .await;
    // The replay is exactly what node1's live stream showed after `last`, ids and all.
    let after_last = |events: &[(Option<i64>, Value)]| -> Vec<(Option<i64>, Value)> {
        events
            .iter()
            .filter(|(id, v)| ours(v) && id.is_some_and(|id| id > last))
            .cloned()
            .collect()
    };
    let all_live: Vec<(Option<i64>, Value)> = seen.into_iter().chain(live).collect();
    let expected = after_last(&all_live);
    assert!(
        expected.iter().any(|(_, v)| v["type"] == "operator_say"),
        "{expected:?}"
    );
    assert_eq!(after_last(&replayed), expected);
    caller.hang_up().await;
}

/// c. node2 is killed mid-call: its callers reconnect through the proxy and resume on another
/// node with everything they had heard; the other calls go on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_node_s_callers_resume_elsewhere_with_their_history() {
    let c = Cluster::start(Options::default()).await;
    let mut callers = Vec::new();
    for i in 0..6 {
        let token = c.caller_token(&format!("crash{i}"), Some("crash"));
        let mut caller = c.connect_lb(&token).await;
        let call_id = caller.start(json!({})).await;
        let mut frames = caller.say(&format!("my name is caller {i}")).await;
        frames.extend(caller.speak(700).await);
        let items = items_of(&frames);
        assert_eq!(items.len(), 4, "{frames:?}");
        until_stored(&c, 1, &token, &call_id, &items).await;
        callers.push((caller, token, call_id, items));
    }
    c.node(2).kill().await;
    let closes = futures::future::join_all(
        callers
            .iter_mut()
            .map(|(caller, ..)| caller.closed_within(Duration::from_secs(3))),
    )
    .await;

    let mut resumed = 0;
    for ((caller, token, call_id, items), (closed, _)) in callers.iter_mut().zip(closes) {
        if closed.is_none() {
            assert!(
                caller.answers_ping(Duration::from_secs(5)).await,
                "a call on a live node ({:?}) stopped answering",
                caller.node
            );
            continue;
        }
        // The caller was on node2: reconnect through the proxy and resume.
        let mut again = c.connect_lb(token).await;
        assert_ne!(again.node.as_deref(), Some("node2"));
        let started = resume(&mut again, call_id).await;
        assert_eq!(started["resumed"], true, "{started}");
        assert_eq!(started["history_len"], items.len(), "{started}");
        assert_eq!(
            stored_items(&c, 1, token, call_id).await,
            Some(items.clone())
        );
        // The model hears the whole history: the fake counts the caller's turns.
        let next = again.say("are you still there").await;
        assert_eq!(
            reply_of(&next).as_deref(),
            Some("You said: are you still there. That is turn 3.")
        );
        again.hang_up().await;
        resumed += 1;
    }
    assert!(resumed >= 1, "no call was on node2");
    // Started again on its port, node2 is back in the proxy's rotation and takes calls.
    c.node(2).restart().await;
    c.proxy
        .wait_for("node2", true, Duration::from_secs(10))
        .await;
    let mut back = c
        .connect_node(2, &c.caller_token("crash-after", Some("crash")))
        .await;
    back.start(json!({})).await;
    assert_eq!(
        reply_of(&back.say("hello again").await).as_deref(),
        Some("You said: hello again. That is turn 1.")
    );
    back.hang_up().await;
}

/// d. An org's cap on live calls counts its calls on every node once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_org_s_concurrent_calls_limit_counts_every_node() {
    let c = Cluster::start(Options::default()).await;
    let admin = c.token("boss", Some("capped"), Role::Admin);
    let a = put(
        &format!("{}/api/limits", c.direct(1)),
        &admin,
        json!({"concurrent_calls": 2, "daily_minutes": null,
               "subject_concurrent_calls": null, "subject_daily_minutes": null}),
    )
    .await;
    assert_eq!(a.status, 200, "{:?}", a.body);
    assert_eq!(a.body["concurrent_calls"], 2, "{:?}", a.body);

    let mut first = c
        .connect_node(1, &c.caller_token("ann", Some("capped")))
        .await;
    first.start(json!({})).await;
    let mut second = c
        .connect_node(3, &c.caller_token("ben", Some("capped")))
        .await;
    second.start(json!({})).await;
    let mut third = c
        .connect_node(2, &c.caller_token("cat", Some("capped")))
        .await;
    let refused = third.start_call(json!({})).await;
    assert_eq!(
        (
            refused["type"].as_str(),
            refused["code"].as_str(),
            refused["limit"].as_str()
        ),
        (
            Some("error"),
            Some("limit_reached"),
            Some("concurrent_calls")
        ),
        "{refused}"
    );
    // Another org is not held back.
    let mut other = c
        .connect_node(2, &c.caller_token("dan", Some("free")))
        .await;
    other.start(json!({})).await;

    first.hang_up().await;
    let started = third.start_call(json!({})).await;
    assert_eq!(started["type"], "call_started", "{started}");
    second.hang_up().await;
    third.hang_up().await;
    other.hang_up().await;
}

const HOOK_SECRET: &str = "whsec-cluster-0123456789abcdef";

/// e. Calls on all three nodes, one webhook receiver: each event arrives exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_webhook_event_is_delivered_once_by_the_cluster() {
    let hooks = receiver::Receiver::start(HOOK_SECRET).await;
    let agents = format!(
        "default = \"hooked\"\n\
         [[agent]]\nname = \"hooked\"\nsystem_prompt = \"You take calls.\"\n\
         webhook_url = \"{}\"\nwebhook_secret_env = \"CLUSTER_HOOK_SECRET\"\n",
        hooks.url()
    );
    let c = Cluster::start(Options {
        agents: Some(agents),
        env: vec![("CLUSTER_HOOK_SECRET".into(), HOOK_SECRET.into())],
    })
    .await;
    let mut expected = BTreeSet::new();
    for n in 1..=NODES {
        for i in 0..2 {
            let mut caller = c
                .connect_node(n, &c.caller_token(&format!("hook{n}{i}"), Some("hooks")))
                .await;
            let call_id = caller.start(json!({})).await;
            caller.say("hello").await;
            caller.hang_up().await;
            expected.insert(("call.started".to_string(), call_id.clone()));
            expected.insert(("call.ended".to_string(), call_id));
        }
    }
    hooks.until(expected.len(), Duration::from_secs(60)).await;
    // Every node polls for due deliveries every second: a duplicate would come within two.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let got = hooks.got();
    for g in &got {
        assert_eq!(g.verified, Ok(()), "{}", g.text());
    }
    let mut per_id: HashMap<&str, usize> = HashMap::new();
    for g in &got {
        *per_id.entry(g.id.as_str()).or_default() += 1;
    }
    let twice: Vec<_> = per_id.iter().filter(|(_, n)| **n > 1).collect();
    assert!(twice.is_empty(), "delivered more than once: {twice:?}");
    let events: BTreeSet<(String, String)> = got
        .iter()
        .map(|g| {
            let body = g.json();
            assert_eq!(body["id"], g.id.as_str());
            (
                body["type"].as_str().unwrap_or_default().to_string(),
                body["data"]["call_id"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string(),
            )
        })
        .collect();
    assert_eq!(got.len(), expected.len(), "{events:?}");
    assert_eq!(events, expected);
}

/// f. SIGTERM drains node1: its caller is told (1001), reconnects through the proxy and
/// resumes on another node with its history.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_drained_node_s_callers_resume_elsewhere_with_their_history() {
    let c = Cluster::start(Options::default()).await;
    let mut callers = Vec::new();
    for i in 0..6 {
        let token = c.caller_token(&format!("drain{i}"), Some("drain"));
        let mut caller = c.connect_lb(&token).await;
        let call_id = caller.start(json!({})).await;
        let items = items_of(&caller.say(&format!("my name is caller {i}")).await);
        assert_eq!(items.len(), 2);
        callers.push((caller, token, call_id, items));
    }
    let node1 = c.node(1);
    let drain = async {
        let status = node1.terminate().await;
        assert!(status.success(), "node1 exited with {status}");
    };
    let watch = futures::future::join_all(
        callers
            .iter_mut()
            .map(|(caller, ..)| caller.closed_within(Duration::from_secs(8))),
    );
    let ((), closes) = tokio::join!(drain, watch);
    c.proxy
        .wait_for("node1", false, Duration::from_secs(10))
        .await;

    let mut drained = 0;
    for ((caller, token, call_id, items), (closed, frames)) in callers.iter_mut().zip(closes) {
        if closed.is_none() {
            assert!(
                caller.answers_ping(Duration::from_secs(5)).await,
                "a call on a live node ({:?}) stopped answering",
                caller.node
            );
            continue;
        }
        assert_eq!(closed, Some(Closed::Code(Some(1001))), "{frames:?}");
        let ended = frames
            .iter()
            .find(|f| f["type"] == "call_ended")
            .expect("call_ended before the close");
        assert_eq!(ended["reason"], "server_shutdown");
        let mut again = c.connect_lb(token).await;
        assert_ne!(again.node.as_deref(), Some("node1"));
        let started = resume(&mut again, call_id).await;
        assert_eq!(started["resumed"], true, "{started}");
        assert_eq!(started["history_len"], items.len(), "{started}");
        assert_eq!(
            stored_items(&c, 2, token, call_id).await,
            Some(items.clone())
        );
        let next = again.say("are you still there").await;
        assert_eq!(
            reply_of(&next).as_deref(),
            Some("You said: are you still there. That is turn 2.")
        );
        again.hang_up().await;
        drained += 1;
    }
    assert!(drained >= 1, "no call was on node1");
}

/// g. An operator's socket on node1 for a call live on node3: the call's history and events,
/// listen-in (every caller sample once, and the agent's reply), the operator's live voice
/// reaching the caller on node3 as theirs, then the end.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_operator_socket_listens_to_and_speaks_into_a_call_on_another_node() {
    let c = Cluster::start(Options::default()).await;
    let op = c.token("sup", Some("acme"), Role::Operator);
    let mut caller = c
        .connect_node(3, &c.caller_token("alice", Some("acme")))
        .await;
    let call_id = caller.start(json!({})).await;
    caller.say("are you open today").await;

    let mut sock = OperatorSocket::open(&c.direct(1), &call_id, &op).await;
    let ready = sock.heard_until("operator_ready").await.frames;
    let ready = ready.last().unwrap();
    assert_eq!(ready["call"]["call_id"], call_id.as_str(), "{ready}");
    assert_eq!(ready["call"]["sub"], "alice", "{ready}");
    let said: Vec<&str> = ready["messages"]
        .as_array()
        .expect("messages")
        .iter()
        .filter_map(|m| m["content"].as_str())
        .collect();
    assert_eq!(
        said,
        [
            "are you open today",
            "You said: are you open today. That is turn 1."
        ],
        "{ready}"
    );

    // Listen-in across nodes: the caller's audio on node3 reaches node1 whole, the reply too.
    let on = sock
        .command(json!({"type": "listen", "enabled": true, "id": 1}))
        .await;
    assert_eq!(
        (on["type"].as_str(), on["listening"].as_bool()),
        (Some("result"), Some(true)),
        "{on}"
    );
    let frames = caller.speak(1_200).await;
    assert!(
        frames.iter().any(|f| f["type"] == "transcript"),
        "{frames:?}"
    );
    let mut heard = sock.heard_until("metrics").await;
    let kinds: Vec<&str> = heard
        .frames
        .iter()
        .filter_map(|f| f["type"].as_str())
        .filter(|k| *k != "response_delta")
        .collect();
    assert_eq!(
        kinds,
        [
            "speech_started",
            "speech_stopped",
            "transcript",
            "response",
            "metrics"
        ],
        "{:?}",
        heard.frames
    );
    // 300 ms of silence, 1.2 s of tone, 1.5 s of silence at 16 kHz.
    sock.more_audio(&mut heard, 1, 48_000, Duration::from_secs(5))
        .await;
    assert_eq!(
        heard.samples(1, 16_000),
        48_000,
        "every caller sample, once"
    );
    // The reply's audio, as much as the caller got.
    let replied: usize = frames
        .iter()
        .filter(|f| f["type"] == "audio_response")
        .map(|f| {
            assert_eq!(f["encoding"], "pcm16", "{f}");
            let b64 = f["audio"].as_str().unwrap_or_default();
            base64::Engine::decode(&base64::engine::general_purpose::STANDARD, b64)
                .expect("base64 audio")
                .len()
                / 2
        })
        .sum();
    assert!(replied > 0, "{frames:?}");
    sock.more_audio(&mut heard, 2, replied, Duration::from_secs(5))
        .await;
    let agent: Vec<_> = heard.audio.iter().filter(|a| a.0 == 2).collect();
    assert_eq!(
        agent.iter().map(|a| a.2).sum::<usize>(),
        replied,
        "the agent's reply, every sample once"
    );
    let rate = agent[0].1;
    assert!(
        rate >= 8_000 && agent.iter().all(|a| a.1 == rate),
        "{agent:?}"
    );

    // Taken over from node1; the operator's voice reaches the caller on node3 as theirs.
    let taken = sock.command(json!({"type": "takeover", "id": "t"})).await;
    assert_eq!(taken["call"]["state"], "taken_over", "{taken}");
    caller.recv_until("takeover_started").await;
    for _ in 0..12 {
        sock.voice(tone_pcm16(100, 16_000, 0.3)).await;
    }
    let ended = sock.command(json!({"type": "voice_end"})).await;
    assert_eq!(ended["command"], "voice_end", "{ended}");
    let line = caller.recv_until("response_done").await;
    let audio: usize = line
        .iter()
        .filter(|f| f["type"] == "audio_response")
        .map(|f| {
            assert_eq!(f["from"], "operator", "{f}");
            f["audio"].as_str().unwrap_or_default().len()
        })
        .sum();
    assert!(audio > 0, "{line:?}");
    let text = line
        .iter()
        .find(|f| f["type"] == "response" && f["is_final"] == true)
        .expect("the operator's line");
    assert_eq!(
        (text["text"].as_str(), text["from"].as_str()),
        (Some("audio of 1.2 seconds"), Some("operator"))
    );

    // Erasing alice through node2 is refused while her call is live on node3.
    let admin = c.token("boss", Some("acme"), Role::Admin);
    let erase = reqwest::Client::new()
        .delete(format!("{}/api/subjects/alice", c.direct(2)))
        .bearer_auth(&admin)
        .send()
        .await
        .expect("DELETE /api/subjects/alice");
    assert_eq!(erase.status().as_u16(), 409);
    let body: Value = erase.json().await.expect("a JSON error");
    assert_eq!(body["error"]["code"], "subject_live", "{body}");

    // Ended from node1: the caller on node3 is told, and so is the operator.
    let end = sock.command(json!({"type": "end"})).await;
    assert_eq!(end["call"]["end_reason"], "ended_by_operator", "{end}");
    let last = caller.recv_until("call_ended").await;
    assert_eq!(last.last().unwrap()["reason"], "ended_by_operator");
    // Node2 reads the operator's line from the store.
    let owner = c.caller_token("alice", Some("acme"));
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let items = stored_items(&c, 2, &owner, &call_id)
            .await
            .unwrap_or_default();
        if items
            .iter()
            .any(|(_, role, text)| role == "assistant" && text == "audio of 1.2 seconds")
        {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the store never held the operator's line: {items:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// h. A node that finds its call's lease held by another node (as after being cut off from
/// Redis for longer than the lease) lets the call go: its caller is told `moved` and the socket
/// closes with 1001, nothing records the call as ended, and the caller resumes it with its
/// history once the other node lets it go.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_that_lost_a_call_s_lease_lets_the_call_go_and_its_caller_resumes() {
    let c = Cluster::start(Options::default()).await;
    let owner = c.caller_token("dana", Some("acme"));
    let mut caller = c.connect_node(1, &owner).await;
    let call_id = caller.start(json!({})).await;
    let said = caller.say("first question").await;
    assert_eq!(
        reply_of(&said).as_deref(),
        Some("You said: first question. That is turn 1.")
    );

    // Another node holds the call's lease now, for 3 s.
    let client = ::redis::Client::open(c.redis.url()).expect("redis url");
    let mut con = client
        .get_multiplexed_async_connection()
        .await
        .expect("connect to redis");
    let _: () = ::redis::cmd("SET")
        .arg(format!("voxwire:lease:{call_id}"))
        .arg("node2")
        .arg("PX")
        .arg(3000)
        .query_async(&mut con)
        .await
        .expect("SET the lease");
    let (closed, frames) = caller.closed_within(Duration::from_secs(10)).await;
    assert_eq!(closed, Some(Closed::Code(Some(1001))), "{frames:?}");
    let ended = frames
        .iter()
        .find(|f| f["type"] == "call_ended")
        .expect("call_ended");
    assert_eq!(ended["reason"], "moved", "{ended}");

    // Nothing stored says the call ended.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let row = get(&format!("{}/api/calls/{call_id}", c.direct(2)), &owner).await;
    assert_eq!(row.status, 200, "{:?}", row.body);
    assert!(row.body.get("end_reason").is_some(), "{:?}", row.body);
    assert_eq!(row.body["end_reason"], Value::Null, "{:?}", row.body);
    assert_eq!(row.body["ended_at_ms"], Value::Null, "{:?}", row.body);

    // Resumed through the proxy once the other lease ran out, with its history.
    let mut again = c.connect_lb(&owner).await;
    let started = resume(&mut again, &call_id).await;
    assert_eq!(started["call_id"], call_id.as_str(), "{started}");
    let said = again.say("second question").await;
    assert_eq!(
        reply_of(&said).as_deref(),
        Some("You said: second question. That is turn 2.")
    );
    again.hang_up().await;
}

/// i. An org's minutes of the day are counted in Redis by every node: the counter holds each
/// node's calls, and a call on a third node is refused once the counter says the minutes ran
/// out, whatever the store holds so far.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_org_s_daily_minutes_are_counted_once_for_every_node_in_redis() {
    let c = Cluster::start(Options::default()).await;
    let admin = c.token("boss", Some("metered"), Role::Admin);
    let a = put(
        &format!("{}/api/limits", c.direct(1)),
        &admin,
        json!({"concurrent_calls": null, "daily_minutes": 1,
               "subject_concurrent_calls": null, "subject_daily_minutes": null}),
    )
    .await;
    assert_eq!(a.status, 200, "{:?}", a.body);
    let day = voxwire::store::day_of(voxwire::call::record::now_ms());
    for (n, sub) in [(1, "ann"), (2, "ben")] {
        let mut caller = c
            .connect_node(n, &c.caller_token(sub, Some("metered")))
            .await;
        caller.start(json!({})).await;
        caller.say("how long is this").await;
        caller.hang_up().await;
    }

    // Both calls' time, each once, in the org's counter of the day.
    let client = ::redis::Client::open(c.redis.url()).expect("redis url");
    let mut con = client
        .get_multiplexed_async_connection()
        .await
        .expect("connect to redis");
    let key = format!("voxwire:used:{day}:metered");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let counter = loop {
        let h: HashMap<String, i64> = ::redis::cmd("HGETALL")
            .arg(&key)
            .query_async(&mut con)
            .await
            .expect("HGETALL");
        let stretches = h.keys().filter(|k| k.starts_with("c:")).count();
        let subs_counted = ["s:ann", "s:ben"]
            .iter()
            .all(|s| h.get(*s).is_some_and(|v| *v > 0));
        if stretches == 2 && subs_counted {
            break h;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the counter never held both calls: {h:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let stretches: i64 = counter
        .iter()
        .filter(|(k, _)| k.starts_with("c:"))
        .map(|(_, v)| *v)
        .sum();
    assert_eq!(counter["_total"], stretches, "{counter:?}");
    assert_eq!(
        counter["_total"],
        counter["s:ann"] + counter["s:ben"],
        "{counter:?}"
    );
    assert!(
        counter["_total"] > 0 && counter["_total"] < 60_000,
        "{counter:?}"
    );

    // Calls elsewhere used the rest of the minute: node3 refuses the next call.
    let _: i64 = ::redis::cmd("HINCRBY")
        .arg(&key)
        .arg("_total")
        .arg(60_000)
        .query_async(&mut con)
        .await
        .expect("HINCRBY");
    let mut third = c
        .connect_node(3, &c.caller_token("cat", Some("metered")))
        .await;
    let refused = third.start_call(json!({})).await;
    assert_eq!(
        (refused["code"].as_str(), refused["limit"].as_str()),
        (Some("limit_reached"), Some("daily_minutes")),
        "{refused}"
    );
}

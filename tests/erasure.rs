//! Erasure and retention over real sockets, against a real server on real SQLite and Postgres
//! with fake engines: an admin erases a subject (counts as the database held them, nothing of
//! the subject's unique phrase left in any row, in search, on disk or in SQLite's files, an
//! audit entry without the subject); callers and operators may not, a live call blocks it.
//! Retention deletes expired ended calls with their recordings and keeps the rest, per agent;
//! the server runs it at start; `voxwire retention run` prints the counts.

mod common;
mod store_common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use common::history::*;
use common::*;
use serde_json::{json, Value};
use sqlx::{Connection, Row};
use store_common::{eventually, Db};
use voxwire::auth::Role;
use voxwire::call::recording::recording_path;
use voxwire::engines::Engines;
use voxwire::retention::Policy;
use voxwire::store::{Store, SummaryRow, Write};
use voxwire::Config;

const PHRASE: &str = "purple elephant 7731";

const AGENTS: &str = r#"
default = "desk"

[[agent]]
name = "desk"
system_prompt = "You answer briefly."
record = true
# Nobody listens there: the deliveries wait in the store, holding the transcript.
webhook_url = "http://127.0.0.1:9/hook"
webhook_secret_env = "VOXWIRE_TEST_ERASURE_SECRET"
"#;

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "voxwire-{name}-{}-{}",
        std::process::id(),
        rand::random::<u32>()
    ));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

async fn server_on(db: &Db, recordings: &Path) -> TestServer {
    let mut config = Config::for_tests();
    config.agents = voxwire::agents::Agents::parse(AGENTS).unwrap();
    config.store.recordings_dir = recordings.to_path_buf();
    let env = std::collections::HashMap::from([(
        "VOXWIRE_TEST_ERASURE_SECRET".to_string(),
        "erasure-test-secret-0123456789".to_string(),
    )]);
    config.webhooks = voxwire::config::WebhookSettings::from_env(&env, &config.agents).unwrap();
    start_with_store(config, Engines::fake(), db.store().await).await
}

fn token(server: &TestServer, sub: &str, role: Role) -> String {
    server
        .state
        .auth
        .issue_with_role(sub, None, None, role, Duration::from_secs(600))
        .unwrap()
}

async fn erase(server: &TestServer, sub: &str, token: &str) -> (u16, Value) {
    let r = reqwest::Client::new()
        .delete(server.url(&format!("/api/subjects/{sub}")))
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    (r.status().as_u16(), r.json().await.unwrap())
}

/// One number from a statement on a connection of the test's own.
async fn scalar(db: &Db, sql: &str) -> i64 {
    if db.sqlite_dir().is_some() {
        let mut c = sqlx::SqliteConnection::connect(&db.url).await.unwrap();
        let v: i64 = sqlx::query_scalar(sql).fetch_one(&mut c).await.unwrap();
        c.close().await.unwrap();
        v
    } else {
        let mut c = sqlx::PgConnection::connect(&db.url).await.unwrap();
        let v: i64 = sqlx::query_scalar(sql).fetch_one(&mut c).await.unwrap();
        c.close().await.unwrap();
        v
    }
}

/// Every column of every table, as `(table, column)`.
async fn columns(db: &Db) -> Vec<(String, String)> {
    if db.sqlite_dir().is_some() {
        let mut c = sqlx::SqliteConnection::connect(&db.url).await.unwrap();
        let rows = sqlx::query(
            "SELECT m.name, p.name FROM sqlite_master m, pragma_table_info(m.name) p \
             WHERE m.type = 'table'",
        )
        .fetch_all(&mut c)
        .await
        .unwrap();
        c.close().await.unwrap();
        rows.iter().map(|r| (r.get(0), r.get(1))).collect()
    } else {
        let mut c = sqlx::PgConnection::connect(&db.url).await.unwrap();
        let rows = sqlx::query(
            "SELECT table_name::text, column_name::text FROM information_schema.columns \
             WHERE table_schema = 'public'",
        )
        .fetch_all(&mut c)
        .await
        .unwrap();
        c.close().await.unwrap();
        rows.iter().map(|r| (r.get(0), r.get(1))).collect()
    }
}

/// The `table.column`s of `tables` (all when empty) where some row holds `needle`, any case.
async fn holding(db: &Db, needle: &str, tables: &[&str]) -> Vec<String> {
    let mut found = Vec::new();
    for (t, c) in columns(db).await {
        if !tables.is_empty() && !tables.contains(&t.as_str()) {
            continue;
        }
        let sql = format!(
            "SELECT COUNT(*) FROM \"{t}\" WHERE lower(CAST(\"{c}\" AS TEXT)) LIKE '%{}%'",
            needle.to_lowercase()
        );
        if scalar(db, &sql).await > 0 {
            found.push(format!("{t}.{c}"));
        }
    }
    found
}

/// SQLite's files (the database, its log and shared memory) that hold `needle`.
fn files_holding(db: &Db, needle: &str) -> Vec<String> {
    let Some(dir) = db.sqlite_dir() else {
        return Vec::new();
    };
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| {
            let bytes = std::fs::read(p).unwrap_or_default();
            bytes.windows(needle.len()).any(|w| w == needle.as_bytes())
        })
        .map(|p| p.display().to_string())
        .collect()
}

/// What the database holds of `sub`'s calls in the default org.
async fn held(db: &Db, sub: &str) -> [i64; 4] {
    let of = format!("(SELECT id FROM calls WHERE sub = '{sub}' AND org IS NULL)");
    [
        scalar(db, &format!("SELECT COUNT(*) FROM calls WHERE id IN {of}")).await,
        scalar(
            db,
            &format!("SELECT COUNT(*) FROM call_items WHERE call_id IN {of}"),
        )
        .await,
        scalar(
            db,
            &format!("SELECT COUNT(*) FROM call_turn_metrics WHERE call_id IN {of}"),
        )
        .await,
        scalar(
            db,
            &format!("SELECT COUNT(*) FROM call_events WHERE call_id IN {of}"),
        )
        .await,
    ]
}

async fn erasing_a_subject(db: Db) {
    let recordings = scratch("erase-rec");
    let server = server_on(&db, &recordings).await;
    let admin = token(&server, "root", Role::Admin);
    let a1 = finished_call(&server, "alice", None, &[&format!("my code is {PHRASE}")]).await;
    let a2 = finished_call(&server, "alice", None, &["hello again", "bye"]).await;
    let b1 = finished_call(&server, "bob", None, &["bob here"]).await;
    let elsewhere = finished_call(&server, "alice", Some("globex"), &["another org"]).await;
    flush(&server).await;
    for id in [&a1, &a2, &b1, &elsewhere] {
        let path = recording_path(&recordings, id);
        eventually("a recording file", || path.is_file()).await;
    }
    // The scans find the phrase before: they are able to.
    assert!(!holding(&db, PHRASE, &[]).await.is_empty());
    let found = json_of(&server, "/api/calls?q=purple", &admin).await;
    assert_eq!(ids(&found), [a1.as_str()]);

    // Callers and operators may not erase; a live call blocks it and nothing goes.
    for t in [
        token(&server, "alice", Role::Caller),
        token(&server, "sup", Role::Operator),
    ] {
        let (status, body) = erase(&server, "alice", &t).await;
        assert_eq!(
            (status, body["error"]["code"].as_str()),
            (403, Some("forbidden"))
        );
    }
    let (mut live_ws, live) = call_as(&server, "alice", None).await;
    turn(&mut live_ws, "still talking").await;
    flush(&server).await;
    let before_live = held(&db, "alice").await;
    let (status, body) = erase(&server, "alice", &admin).await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (409, Some("subject_live"))
    );
    assert_eq!(held(&db, "alice").await, before_live);
    assert!(recording_path(&recordings, &a1).is_file());
    hang_up(&mut live_ws).await;
    flush(&server).await;
    let path = recording_path(&recordings, &live);
    eventually("the live call's recording", || path.is_file()).await;

    let [calls, items, metrics, events] = held(&db, "alice").await;
    assert_eq!(calls, 3);
    // Each of alice's calls owes call.started and call.ended to the webhook: stored, pending.
    let owed = "SELECT COUNT(*) FROM webhook_deliveries WHERE sub = 'alice' AND org IS NULL";
    let mut webhooks = 0;
    for _ in 0..100 {
        webhooks = scalar(&db, owed).await;
        if webhooks >= 6 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(webhooks, 6);
    // call.ended is stored once the call's summary is: each of alice's calls has one.
    let summarised = "SELECT COUNT(*) FROM call_summaries WHERE sub = 'alice' AND org IS NULL";
    assert_eq!(scalar(&db, summarised).await, 3);
    let bob_before = held(&db, "bob").await;
    let (status, counts) = erase(&server, "alice", &admin).await;
    assert_eq!(status, 200, "{counts}");
    assert_eq!(counts["calls"], calls, "{counts}");
    assert_eq!(counts["items"], items, "{counts}");
    assert_eq!(counts["metrics"], metrics, "{counts}");
    assert_eq!(counts["events"], events, "{counts}");
    assert_eq!(counts["recordings"], 3, "{counts}");
    assert_eq!(counts["webhooks"], webhooks, "{counts}");
    assert_eq!(counts["summaries"], 3, "{counts}");
    assert_eq!(scalar(&db, owed).await, 0);
    assert_eq!(scalar(&db, summarised).await, 0);
    // The org's usage record stays, without alice's name (the default org is stored as '');
    // her usage in another org stays hers.
    let used_by = |sub: &str, org: &str| {
        format!("SELECT COUNT(*) FROM call_usage WHERE sub = '{sub}' AND org = '{org}'")
    };
    assert_eq!(scalar(&db, &used_by("alice", "")).await, 0);
    assert!(scalar(&db, &used_by("(erased)", "")).await > 0);
    assert!(scalar(&db, &used_by("alice", "globex")).await > 0);
    assert!(items > 0 && events > 0 && metrics > 0, "{counts}");

    // Nothing of alice's phrase anywhere: rows, search, recordings, SQLite's files.
    assert_eq!(holding(&db, PHRASE, &[]).await, Vec::<String>::new());
    assert_eq!(holding(&db, "purple", &[]).await, Vec::<String>::new());
    assert!(ids(&json_of(&server, "/api/calls?q=purple", &admin).await).is_empty());
    assert_eq!(held(&db, "alice").await, [0; 4]);
    for id in [&a1, &a2, &live] {
        assert!(!recording_path(&recordings, id).exists(), "{id}");
        let (status, _) = {
            let r = get(&server, &format!("/api/calls/{id}"), &admin).await;
            (r.status().as_u16(), ())
        };
        assert_eq!(status, 404, "{id}");
    }
    assert_eq!(files_holding(&db, PHRASE), Vec::<String>::new());
    // Bob's calls, and alice's in another org, stay.
    assert_eq!(held(&db, "bob").await, bob_before);
    assert_eq!(
        ids(&json_of(&server, "/api/calls", &admin).await),
        [b1.as_str()]
    );
    assert!(recording_path(&recordings, &b1).is_file());
    assert!(recording_path(&recordings, &elsewhere).is_file());
    let globex = scalar(
        &db,
        &format!("SELECT COUNT(*) FROM calls WHERE id = '{elsewhere}'"),
    )
    .await;
    assert_eq!(globex, 1);
    // Alice cannot resume an erased call.
    let (mut ws, _) = server.connect("alice").await;
    send(&mut ws, json!({"type": "start_call", "call_id": a1})).await;
    let refused = recv(&mut ws).await;
    assert_eq!(
        (refused["type"].as_str(), refused["code"].as_str()),
        (Some("error"), Some("call_not_found")),
        "{refused}"
    );
    let store = &server.state.call_services.store;
    let audit = store.audit_log(None, 10).await.unwrap();
    assert_eq!(audit.len(), 1, "{audit:?}");
    let entry = &audit[0];
    assert_eq!(
        (
            entry.actor.as_str(),
            entry.action.as_str(),
            entry.calls,
            entry.items
        ),
        ("root", "erase_subject", calls, items)
    );
    assert_eq!(
        (
            entry.metrics,
            entry.events,
            entry.recordings,
            entry.webhooks,
            entry.summaries
        ),
        (metrics, events, 3, webhooks, 3)
    );
    assert!(entry.at_ms > 0);
    assert_eq!(
        holding(&db, "alice", &["audit_log"]).await,
        Vec::<String>::new()
    );
    // Erasing again finds nothing and says so.
    let (status, again) = erase(&server, "alice", &admin).await;
    assert_eq!((status, again["calls"].as_i64()), (200, Some(0)));
    let _ = std::fs::remove_dir_all(&recordings);
}

#[tokio::test]
async fn sqlite_erasing_a_subject() {
    erasing_a_subject(Db::sqlite()).await;
}

#[tokio::test]
async fn postgres_erasing_a_subject() {
    erasing_a_subject(Db::postgres().await).await;
}

const DAY: i64 = 86_400_000;

/// An ended call (unless `ended` is false) with an item, a turn's metrics and an event.
fn old_call(id: &str, agent: &str, started_at_ms: i64, ended: bool) -> Vec<Write> {
    let mut row = store_common::call(id, "carol", None, started_at_ms);
    row.agent = agent.into();
    let mut w = vec![
        Write::CallStarted(row),
        Write::Item(store_common::item(id, 1, "user", "old words")),
        Write::TurnMetrics(store_common::metrics(id, 1)),
        Write::Event(store_common::event(id, 1)),
        Write::Summary(SummaryRow {
            call_id: id.into(),
            org: None,
            sub: "carol".into(),
            agent: agent.into(),
            text: "The caller said: \"old words\"".into(),
            fields: json!({}),
            method: "extract".into(),
            engine: "none".into(),
            at_ms: started_at_ms + 60_000,
        }),
    ];
    if ended {
        w.push(Write::CallEnded {
            call_id: id.into(),
            ended_at_ms: started_at_ms + 60_000,
            reason: "client_ended".into(),
            turns: 1,
            caller_audio_ms: 0,
            agent_audio_ms: 0,
        });
    }
    w
}

async fn exists(store: &Store, id: &str) -> bool {
    store.call(id).await.unwrap().is_some()
}

async fn retention(db: Db) {
    let recordings = scratch("retention-rec");
    let server = server_on(&db, &recordings).await;
    let store = server.state.call_services.store.clone();
    let now = voxwire::call::record::now_ms();
    let mut writes = Vec::new();
    for (id, agent, age, ended) in [
        ("old", "desk", 40 * DAY, true),
        ("old_live", "desk", 40 * DAY, false),
        ("recent", "desk", DAY, true),
        ("short_old", "short", 10 * DAY, true),
        ("short_new", "short", 2 * DAY, true),
        ("forever", "keep", 400 * DAY, true),
    ] {
        writes.extend(old_call(id, agent, now - age, ended));
    }
    store.write(&writes).await.unwrap();
    std::fs::create_dir_all(&recordings).unwrap();
    for id in ["old", "recent", "forever"] {
        std::fs::write(recording_path(&recordings, id), b"RIFF").unwrap();
    }
    let made = finished_call(&server, "dave", None, &["a call made now"]).await;
    flush(&server).await;
    let made_file = recording_path(&recordings, &made);
    eventually("a recording file", || made_file.is_file()).await;
    let policy = Policy {
        default_days: 30,
        agents: vec![("keep".into(), 0), ("short".into(), 5)],
    };
    let calls = server.state.calls.clone();
    let forget = move |ids: &[String]| {
        calls.remove_ended(ids);
    };

    let d = voxwire::retention::run(&store, &recordings, &policy, now, &forget)
        .await
        .unwrap();
    assert_eq!(
        (
            d.calls,
            d.items,
            d.metrics,
            d.events,
            d.recordings,
            d.summaries
        ),
        (2, 2, 2, 2, 1, 2),
        "{d:?}"
    );
    assert!(!exists(&store, "old").await && !exists(&store, "short_old").await);
    assert!(!recording_path(&recordings, "old").exists());
    for id in ["old_live", "recent", "short_new", "forever", made.as_str()] {
        assert!(exists(&store, id).await, "{id}");
    }
    assert!(store.items("old").await.unwrap().is_empty());
    assert!(store.events("old", 0, 10).await.unwrap().is_empty());

    // A month on: the calls made since go too, with their recordings and from memory.
    let made_items = store.items(&made).await.unwrap().len() as i64;
    for _ in 0..100 {
        if store.summary(&made).await.unwrap().is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        store.summary(&made).await.unwrap().is_some(),
        "no summary of {made}"
    );
    let later = now + 31 * DAY;
    let d = voxwire::retention::run(&store, &recordings, &policy, later, &forget)
        .await
        .unwrap();
    assert_eq!((d.calls, d.recordings, d.summaries), (3, 2, 3), "{d:?}");
    assert_eq!(d.items, 2 + made_items, "{d:?}");
    assert!(!made_file.exists() && !recording_path(&recordings, "recent").exists());
    assert!(server.state.calls.get_if(&made, |_| true).is_none());
    for id in ["old_live", "forever"] {
        assert!(exists(&store, id).await, "{id}");
    }
    assert!(recording_path(&recordings, "forever").is_file());
    let _ = std::fs::remove_dir_all(&recordings);
}

#[tokio::test]
async fn sqlite_retention() {
    retention(Db::sqlite()).await;
}

#[tokio::test]
async fn postgres_retention() {
    retention(Db::postgres().await).await;
}

/// The server deletes what expired when it starts, and its job ends with it.
#[tokio::test]
async fn the_server_runs_retention_at_start() {
    let db = Db::sqlite();
    let store = db.store().await;
    let now = voxwire::call::record::now_ms();
    let mut writes = old_call("stale", "desk", now - 40 * DAY, true);
    writes.extend(old_call("fresh", "desk", now - DAY, true));
    store.write(&writes).await.unwrap();
    let mut config = Config::for_tests();
    config.store.retention_days = 30;
    config.store.recordings_dir = scratch("retention-start");
    let mut server = start_with_store(config, Engines::fake(), store.clone()).await;
    let deadline = tokio::time::Instant::now() + store_common::LONG;
    while exists(&store, "stale").await {
        assert!(tokio::time::Instant::now() < deadline, "never deleted");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(exists(&store, "fresh").await);
    let _ = server.stop.take().unwrap().send(());
    tokio::time::timeout(store_common::LONG, &mut server.task)
        .await
        .expect("the server stops with its background job")
        .unwrap()
        .unwrap();
}

/// `voxwire retention run` against the configured store prints the counts.
#[tokio::test]
async fn the_cli_prints_counts() {
    let db = Db::sqlite();
    let store = db.store().await;
    let now = voxwire::call::record::now_ms();
    let mut writes = old_call("stale", "desk", now - 40 * DAY, true);
    writes.extend(old_call("fresh", "desk", now - DAY, true));
    store.write(&writes).await.unwrap();
    let recordings = scratch("retention-cli");
    std::fs::create_dir_all(&recordings).unwrap();
    std::fs::write(recording_path(&recordings, "stale"), b"RIFF").unwrap();
    let (url, dir) = (db.url.clone(), recordings.clone());
    let run = move |days: &str| {
        Command::new(env!("CARGO_BIN_EXE_voxwire"))
            .args(["retention", "run"])
            .env("VOXWIRE_DATABASE_URL", &url)
            .env("VOXWIRE_RETENTION_DAYS", days)
            .env("VOXWIRE_RECORDINGS_DIR", &dir)
            .env("VOXWIRE_STT", "fake")
            .env("VOXWIRE_LLM", "fake")
            .env("VOXWIRE_TTS", "fake")
            .env(
                "VOXWIRE_AGENTS",
                concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/agents.toml"),
            )
            .output()
            .unwrap()
    };
    let out = tokio::task::spawn_blocking(move || (run("0"), run("30")))
        .await
        .unwrap();
    let text = |o: &std::process::Output| String::from_utf8_lossy(&o.stdout).to_string();
    assert!(out.0.status.success() && text(&out.0).contains("retention is off"));
    assert!(
        out.1.status.success(),
        "{}",
        String::from_utf8_lossy(&out.1.stderr)
    );
    assert_eq!(
        text(&out.1).trim(),
        "deleted 1 calls, 1 items, 1 events, 1 metrics, 1 recordings, 0 webhook deliveries, \
         1 summaries"
    );
    assert!(!exists(&store, "stale").await && exists(&store, "fresh").await);
    let _ = std::fs::remove_dir_all(&recordings);
}

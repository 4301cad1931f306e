//! An org's figures (`GET /api/stats`) over real sockets, against a real server on real
//! SQLite and Postgres: they match the calls fake-engine callers made (durations, voice to
//! voice, a reply cut by the caller, a call still live); another org sees none of it; callers
//! may not read them.

mod common;
mod store_common;

use std::time::Duration;

use common::history::*;
use common::*;
use serde_json::json;
use store_common::Db;
use voxwire::engines::Engines;
use voxwire::Config;

async fn server_on(db: &Db, engines: Engines) -> TestServer {
    start_with_store(Config::for_tests(), engines, db.store().await).await
}

/// A reply cut by the caller: the reply starts, the caller interrupts.
async fn interrupted_call(server: &TestServer, sub: &str) -> String {
    let (mut ws, id) = call_as(server, sub, Some("acme")).await;
    send(
        &mut ws,
        json!({"type": "text", "text": "tell me a very long story please"}),
    )
    .await;
    recv_until(&mut ws, "response").await;
    send(&mut ws, json!({"type": "interrupt"})).await;
    let frames = recv_until(&mut ws, "response_done").await;
    assert_eq!(
        frames.last().unwrap()["reason"],
        "interrupted",
        "{frames:?}"
    );
    hang_up(&mut ws).await;
    id
}

fn median(mut v: Vec<f64>) -> Option<f64> {
    v.sort_by(f64::total_cmp);
    let n = v.len();
    (n > 0).then(|| {
        if n % 2 == 1 {
            v[n / 2]
        } else {
            (v[n / 2 - 1] + v[n / 2]) / 2.0
        }
    })
}

async fn figures(db: Db) {
    let mut engines = Engines::fake();
    engines.llm = std::sync::Arc::new(voxwire::engines::llm::fake::FakeLlm {
        word_delay: Duration::from_millis(20),
    });
    let server = server_on(&db, engines).await;
    let acme = operator(&server, Some("acme"));
    let before = json_of(&server, "/api/stats", &acme).await;
    let t0 = before["to"].as_i64().unwrap();
    assert_eq!(before["from"].as_i64().unwrap() % 86_400_000, 0, "{before}");
    assert!(t0 - before["from"].as_i64().unwrap() <= 86_400_000);

    let a = finished_call(&server, "alice", Some("acme"), &["hello", "how are you"]).await;
    let b = interrupted_call(&server, "bob").await;
    let (mut live_ws, c) = call_as(&server, "carol", Some("acme")).await;
    turn(&mut live_ws, "still here").await;
    let _g = finished_call(&server, "mallory", Some("globex"), &["hi"]).await;
    flush(&server).await;

    // What the figures must be, from the calls' own histories.
    let mut durations = Vec::new();
    let mut v2v = Vec::new();
    for id in [a.as_str(), b.as_str(), c.as_str()] {
        let h = json_of(&server, &format!("/api/calls/{id}"), &acme).await;
        if let Some(d) = h["duration_ms"].as_i64() {
            durations.push(d as f64);
        }
        for m in h["metrics"].as_array().unwrap() {
            v2v.extend(m["timings"]["voice_to_voice_ms"].as_f64());
        }
    }
    assert_eq!(durations.len(), 2);
    assert!(v2v.len() >= 3, "{v2v:?}");
    let range = format!("/api/stats?from={t0}&to=99999999999999");
    let s = json_of(&server, &range, &acme).await;
    assert_eq!(s["from"].as_i64(), Some(t0));
    assert_eq!(s["calls"], 3, "{s}");
    assert_eq!(s["live_now"], 1);
    assert_eq!(s["median_duration_ms"].as_f64(), median(durations));
    let got = s["median_voice_to_voice_ms"].as_f64().unwrap();
    assert!((got - median(v2v).unwrap()).abs() < 1e-6, "{s}");
    assert_eq!(
        (s["replies"].clone(), s["replies_interrupted"].clone()),
        (json!(4), json!(1))
    );
    assert_eq!(s["interrupted_share"], 0.25);
    // The default range (today) holds them too, unless the day turned during the test.
    let today = json_of(&server, "/api/stats", &acme).await;
    if today["from"] == before["from"] {
        assert_eq!(today["calls"], 3);
    }

    // Another org sees only its own; an empty range has no medians.
    let g = json_of(&server, &range, &operator(&server, Some("globex"))).await;
    assert_eq!(
        (g["calls"].clone(), g["live_now"].clone()),
        (json!(1), json!(0))
    );
    assert_eq!(g["replies"], 1);
    let empty = json_of(&server, "/api/stats?from=0&to=0", &acme).await;
    assert_eq!(empty["calls"], 0);
    for k in [
        "median_duration_ms",
        "median_voice_to_voice_ms",
        "interrupted_share",
    ] {
        assert!(empty[k].is_null(), "{k}: {empty}");
    }
    assert_eq!(empty["live_now"], 1);
    let default_org = json_of(&server, "/api/stats?from=0", &operator(&server, None)).await;
    assert_eq!(default_org["calls"], 0);

    let carol = caller(&server, "carol", Some("acme"));
    assert_eq!(
        refused(&server, "/api/stats", &carol).await,
        (403, "forbidden".into())
    );
    for bad in [
        "from=5&to=4",
        "from=-1",
        "to=tomorrow",
        "from=99999999999999999999",
    ] {
        assert_eq!(
            refused(&server, &format!("/api/stats?{bad}"), &acme).await,
            (400, "invalid_parameter".into()),
            "{bad}"
        );
    }
    hang_up(&mut live_ws).await;
}

#[tokio::test]
async fn sqlite_figures() {
    figures(Db::sqlite()).await;
}

#[tokio::test]
async fn postgres_figures() {
    figures(Db::postgres().await).await;
}

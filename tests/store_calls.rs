//! Live calls against a database that fails: SQLite locked by another connection, and a real
//! Postgres server stopped and started, in the middle of a call. The call goes on at full speed,
//! the outage is counted, and everything is written once the database is back.

mod common;
mod store_common;

use std::time::Duration;

use common::*;
use serde_json::json;
use store_common::{Db, LONG};
use voxwire::engines::Engines;
use voxwire::Config;

async fn a_call_rides_out_an_outage(db: Db) {
    let server = start_with_store(Config::for_tests(), Engines::fake(), db.store().await).await;
    let (mut ws, call_id) = server.call("alice", json!({})).await;
    send(&mut ws, json!({"type": "text", "text": "before"})).await;
    recv_until(&mut ws, "metrics").await;
    assert!(server.state.call_services.writer.flush(LONG).await);

    db.go_down().await;
    // The call does not notice: two more turns, answered as usual.
    for (turn, text) in [(2, "during one"), (3, "during two")] {
        send(&mut ws, json!({"type": "text", "text": text})).await;
        let frames = recv_until(&mut ws, "metrics").await;
        let reply = format!("You said: {text}. That is turn {turn}.");
        assert!(frames
            .iter()
            .any(|f| f["type"] == "response" && f["text"] == reply));
    }
    send(&mut ws, json!({"type": "end_call"})).await;
    recv_until(&mut ws, "call_ended").await;
    // The writer is retrying meanwhile; the failures show on /metrics.
    let mut errors = false;
    for _ in 0..100 {
        let m = server.state.metrics.render();
        if m.lines()
            .any(|l| l.starts_with("voxwire_store_errors_total ") && !l.ends_with(" 0"))
        {
            errors = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(errors, "{}", server.state.metrics.render());

    db.come_back().await;
    assert!(server.state.call_services.writer.flush(LONG).await);
    let store = &server.state.call_services.store;
    let call = store.call(&call_id).await.unwrap().expect("the call row");
    assert_eq!(call.turns, 3);
    assert_eq!(call.end_reason.as_deref(), Some("client_ended"));
    let items = store.items(&call_id).await.unwrap();
    let texts: Vec<&str> = items.iter().map(|i| i.text.as_str()).collect();
    assert_eq!(
        texts,
        vec![
            "before",
            "You said: before. That is turn 1.",
            "during one",
            "You said: during one. That is turn 2.",
            "during two",
            "You said: during two. That is turn 3.",
        ]
    );
    assert_eq!(store.turn_metrics(&call_id).await.unwrap().len(), 3);
    let m = server.state.metrics.render();
    assert!(m.contains("voxwire_store_dropped_total 0"), "{m}");
}

#[tokio::test]
async fn sqlite_locked_mid_call() {
    a_call_rides_out_an_outage(Db::sqlite()).await;
}

#[tokio::test]
async fn postgres_stopped_mid_call() {
    a_call_rides_out_an_outage(Db::postgres_own().await).await;
}

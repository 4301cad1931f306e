//! The background writer against a real database: load, an outage, a full queue, a refused
//! write, and what the logs say.

use voxwire::store::Write;

use super::{call, event, eventually, item, logs, metrics, writer, Db, LONG};

/// 10000 writes, sent as fast as a loop can: all arrive and `flush` says so.
pub async fn writer_stores_ten_thousand_writes(db: &Db) {
    let store = db.store().await;
    let (w, m, _t) = writer(&store, 10_000);
    w.send(Write::CallStarted(call("c1", "u", None, 1)));
    for seq in 1..=9_999 {
        w.send(Write::Event(event("c1", seq)));
    }
    assert!(w.flush(LONG).await, "flush timed out");
    assert_eq!(store.events("c1", 0, 20_000).await.unwrap().len(), 9_999);
    assert_eq!(m.writes(), 10_000);
    assert_eq!((m.dropped(), m.errors(), m.queue()), (0, 0, 0));
    store.close().await;
}

/// The database goes away mid-call: writes queue, the outage is logged once, and when it is
/// back everything queued is written, nothing dropped.
pub async fn writer_rides_out_an_outage(db: &Db) {
    logs::capture();
    let store = db.store().await;
    let place = store.describe();
    let (w, m, _t) = writer(&store, 10_000);
    w.send(Write::CallStarted(call("c1", "u", None, 1)));
    for seq in 1..=100 {
        w.send(Write::Event(event("c1", seq)));
    }
    assert!(w.flush(LONG).await);

    db.go_down().await;
    for seq in 101..=600 {
        w.send(Write::Event(event("c1", seq)));
    }
    w.send(Write::Item(item("c1", 1, "user", "still there?")));
    eventually("a failed write", || m.errors() >= 2).await;
    assert!(
        !w.flush(std::time::Duration::from_millis(200)).await,
        "flush cannot finish while the database is away"
    );
    assert_eq!(m.queue(), 501, "everything sent meanwhile is queued");
    let down = logs::lines_with(&[&place, "the store is unavailable"]);
    assert_eq!(down.len(), 1, "logged once per outage: {}", logs::all());

    db.come_back().await;
    assert!(w.flush(LONG).await, "flush after the outage");
    assert_eq!(store.events("c1", 0, 1_000).await.unwrap().len(), 600);
    assert_eq!(store.items("c1").await.unwrap().len(), 1);
    assert_eq!((m.writes(), m.dropped(), m.queue()), (602, 0, 0));
    let up = logs::lines_with(&[&place, "the store is available again"]);
    assert_eq!(up.len(), 1, "{}", logs::all());
    eprintln!("{}\n{}", down[0], up[0]); // what an operator reads (--nocapture)
    store.close().await;
}

/// With the database away, a queue of 10 keeps 10 writes and drops (and counts) the rest;
/// the 10 are written when it is back.
pub async fn a_full_queue_drops_and_counts_past_its_size(db: &Db) {
    logs::capture();
    let store = db.store().await;
    let (w, m, _t) = writer(&store, 10);
    db.go_down().await;
    for seq in 1..=25 {
        w.send(Write::Event(event("c1", seq)));
    }
    assert_eq!(m.dropped(), 15);
    assert_eq!(w.queued(), 10);
    assert!(
        !logs::lines_with(&["the store queue is full"]).is_empty(),
        "{}",
        logs::all()
    );
    db.come_back().await;
    assert!(w.flush(LONG).await);
    let stored: Vec<i64> = store
        .events("c1", 0, 100)
        .await
        .unwrap()
        .into_iter()
        .map(|e| e.seq)
        .collect();
    assert_eq!(
        stored,
        (1..=10).collect::<Vec<_>>(),
        "the first ten, kept in order"
    );
    assert_eq!((m.writes(), m.dropped(), m.queue()), (10, 15, 0));
    store.close().await;
}

/// A write the database refuses (its table is gone) is dropped and counted; the other writes
/// of its batch are still stored, and the writer goes on.
pub async fn a_refused_write_costs_only_itself(db: &Db) {
    logs::capture();
    let store = db.store().await;
    let (w, m, _t) = writer(&store, 10_000);
    db.exec("DROP TABLE call_turn_metrics").await;
    w.send(Write::CallStarted(call("c1", "u", None, 1)));
    w.send(Write::Item(item("c1", 1, "user", "hello")));
    w.send(Write::TurnMetrics(metrics("c1", 1)));
    w.send(Write::Item(item("c1", 2, "assistant", "hi there")));
    assert!(w.flush(LONG).await);
    assert_eq!(store.items("c1").await.unwrap().len(), 2);
    assert!(store.call("c1").await.unwrap().is_some());
    assert_eq!((m.writes(), m.dropped()), (3, 1));
    assert!(m.errors() >= 1);
    assert!(
        !logs::lines_with(&["the store refused a write", "turn_metrics"]).is_empty(),
        "{}",
        logs::all()
    );
    w.send(Write::Event(event("c1", 1)));
    assert!(w.flush(LONG).await);
    assert_eq!(m.writes(), 4);
    store.close().await;
}

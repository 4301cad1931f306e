use std::time::Duration;

use tokio_util::task::TaskTracker;

use super::*;
use crate::store::{EventRow, Store};

fn event(call: &str, seq: i64) -> Write {
    Write::Event(EventRow {
        call_id: call.into(),
        seq,
        at_ms: 1_000 + seq,
        kind: "transcript".into(),
        data: serde_json::json!({ "n": seq }),
        stream_id: None,
    })
}

fn writer(store: &Store, queue: usize) -> (StoreWriter, StoreMetrics, TaskTracker) {
    let metrics = StoreMetrics::default();
    let tracker = TaskTracker::new();
    let w = StoreWriter::spawn(store.clone(), queue, metrics.clone(), &tracker);
    (w, metrics, tracker)
}

const LONG: Duration = Duration::from_secs(30);

#[tokio::test]
async fn everything_sent_is_written_and_flush_waits_for_it() {
    let store = Store::memory();
    let (w, metrics, _t) = writer(&store, 10_000);
    for seq in 1..=1000 {
        w.send(event("c1", seq));
    }
    assert!(w.flush(LONG).await);
    assert_eq!(store.events("c1", 0, 2000).await.unwrap().len(), 1000);
    assert_eq!(metrics.writes(), 1000);
    assert_eq!(
        (metrics.dropped(), metrics.errors(), metrics.queue()),
        (0, 0, 0)
    );
}

#[tokio::test]
async fn a_full_queue_drops_and_counts_while_the_store_is_away() {
    let store = Store::memory();
    let mem = store.memory_backend().unwrap();
    mem.set_fault(Some(true));
    let (w, metrics, _t) = writer(&store, 10);
    for seq in 1..=25 {
        w.send(event("c1", seq));
    }
    assert_eq!(metrics.dropped(), 15);
    assert_eq!(metrics.queue(), 10);
    assert_eq!(w.queued(), 10);
    assert!(!w.flush(Duration::from_millis(300)).await);
    assert!(metrics.errors() >= 1, "failed attempts are counted");
    mem.set_fault(None);
    assert!(w.flush(LONG).await);
    let seqs: Vec<i64> = store
        .events("c1", 0, 100)
        .await
        .unwrap()
        .iter()
        .map(|e| e.seq)
        .collect();
    assert_eq!(
        seqs,
        (1..=10).collect::<Vec<_>>(),
        "the first ten, in order"
    );
    assert_eq!(
        (metrics.writes(), metrics.dropped(), metrics.queue()),
        (10, 15, 0)
    );
}

#[tokio::test]
async fn refused_writes_are_dropped_and_counted() {
    let store = Store::memory();
    let mem = store.memory_backend().unwrap();
    mem.set_fault(Some(false));
    let (w, metrics, _t) = writer(&store, 100);
    for seq in 1..=3 {
        w.send(event("c1", seq));
    }
    assert!(w.flush(LONG).await, "refused writes do not hold the queue");
    assert_eq!(metrics.dropped(), 3);
    assert!(metrics.errors() >= 3);
    mem.set_fault(None);
    w.send(event("c1", 4));
    assert!(w.flush(LONG).await);
    assert_eq!(store.events("c1", 0, 100).await.unwrap().len(), 1);
    assert_eq!(metrics.writes(), 1);
}

#[tokio::test]
async fn close_gives_up_on_a_store_that_stays_away() {
    let store = Store::memory();
    store.memory_backend().unwrap().set_fault(Some(true));
    let (w, metrics, tracker) = writer(&store, 100);
    for seq in 1..=5 {
        w.send(event("c1", seq));
    }
    assert!(!w.close(Duration::from_millis(200)).await);
    tracker.close();
    assert!(
        tokio::time::timeout(LONG, tracker.wait()).await.is_ok(),
        "task ends"
    );
    assert_eq!(metrics.dropped(), 5);
    w.send(event("c1", 6));
    assert_eq!(metrics.dropped(), 6, "writes after close are dropped");
    assert_eq!(metrics.queue(), 0);
}

#[tokio::test]
async fn the_task_writes_what_is_queued_and_ends_when_every_handle_is_gone() {
    let store = Store::memory();
    let (w, metrics, tracker) = writer(&store, 100);
    let w2 = w.clone();
    w.send(event("c1", 1));
    w2.send(event("c1", 2));
    drop((w, w2));
    tracker.close();
    assert!(tokio::time::timeout(LONG, tracker.wait()).await.is_ok());
    assert_eq!(metrics.writes(), 2);
    assert_eq!(store.events("c1", 0, 10).await.unwrap().len(), 2);
}

#[test]
fn throttle_lets_one_through_and_counts_the_rest() {
    let t = Throttle::new();
    assert_eq!(t.check(), Some(0));
    assert_eq!(t.check(), None);
    assert_eq!(t.check(), None);
    t.next_ms.store(0, Ordering::Release);
    assert_eq!(t.check(), Some(2));
}

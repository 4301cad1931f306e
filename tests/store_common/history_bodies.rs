//! Call history queries of [`Store`]: the list's time range and text search (with `%`, `_`
//! and `\` taken literally), the export's cap, and the rows behind an org's figures. The
//! same rows give the same answers on every backend, the in-memory one included.

use serde_json::json;
use voxwire::store::{CallRow, ListQuery, Store, TurnMetricsRow, Write};

use super::{call, item, Db};

fn ended(mut c: CallRow, after_ms: i64, reason: &str) -> CallRow {
    c.ended_at_ms = Some(c.started_at_ms + after_ms);
    c.end_reason = Some(reason.into());
    c
}

fn v2v(call_id: &str, turn_id: i64, metrics: serde_json::Value) -> Write {
    Write::TurnMetrics(TurnMetricsRow {
        call_id: call_id.into(),
        turn_id,
        metrics,
        at_ms: 1,
    })
}

/// Five acme calls and one of globex, with items to search.
async fn history(store: &Store) {
    let mut writes = vec![
        Write::CallStarted(ended(
            call("c1", "alice", Some("acme"), 1_000),
            60_000,
            "client_ended",
        )),
        Write::CallStarted(ended(
            call("c2", "bob", Some("acme"), 2_000),
            30_000,
            "max_duration",
        )),
        Write::CallStarted(call("c3", "alice", Some("acme"), 3_000)),
        Write::CallStarted(ended(
            call("c4", "eve", Some("globex"), 2_500),
            1_000,
            "client_ended",
        )),
        Write::CallStarted(ended(
            call("c5", "carol", Some("acme"), 2_200),
            10_000,
            "client_ended",
        )),
    ];
    let mut cut = item("c2", 2, "assistant", "Yes, 50% off until Friday.");
    cut.heard = Some("Yes, 50".into());
    let mut op = item(
        "c5",
        2,
        "assistant",
        "An operator speaking: open late today.",
    );
    op.source = "operator".into();
    for i in [
        item("c1", 1, "user", "When do you OPEN on Sunday?"),
        item("c1", 2, "assistant", "We open at 9."),
        item("c2", 1, "user", "Is the 50% off real?"),
        cut,
        item("c3", 1, "user", "I am 100 percent_sure, see C:\\temp"),
        item("c4", 1, "user", "are you open"),
        item("c5", 1, "user", "Émile called"),
        op,
    ] {
        writes.push(Write::Item(i));
    }
    writes.extend([
        v2v(
            "c1",
            1,
            json!({"voice_to_voice_ms": 400.5, "total_ms": 900.0}),
        ),
        v2v(
            "c2",
            1,
            json!({"voice_to_voice_ms": 300, "total_ms": 700.0}),
        ),
        v2v("c2", 2, json!({"total_ms": 10.0})),
        v2v("c3", 1, json!({"voice_to_voice_ms": null, "total_ms": 5.0})),
        v2v(
            "c4",
            1,
            json!({"voice_to_voice_ms": 9999.0, "total_ms": 5.0}),
        ),
        v2v(
            "c5",
            1,
            json!({"voice_to_voice_ms": 100.0, "total_ms": 5.0}),
        ),
    ]);
    store.write(&writes).await.unwrap();
}

async fn acme(store: &Store, q: ListQuery) -> Vec<String> {
    let rows = store.list_org_calls(Some("acme"), None, &q).await.unwrap();
    rows.into_iter().map(|c| c.id).collect()
}

fn text(t: &str) -> ListQuery {
    ListQuery {
        text: Some(t.into()),
        ..ListQuery::default()
    }
}

pub async fn list_filters_by_range_and_literal_text(db: &Db) {
    let store = db.store().await;
    history(&store).await;
    check_list_filters(&store).await;
    store.close().await;
    // The in-memory store answers the same.
    let memory = Store::memory();
    history(&memory).await;
    check_list_filters(&memory).await;
}

async fn check_list_filters(store: &Store) {
    let range = |from, to| ListQuery {
        from_ms: from,
        to_ms: to,
        ..ListQuery::default()
    };
    assert_eq!(
        acme(store, range(Some(2_000), None)).await,
        ["c3", "c5", "c2"]
    );
    assert_eq!(acme(store, range(None, Some(2_000))).await, ["c1"]);
    assert_eq!(
        acme(store, range(Some(2_000), Some(3_000))).await,
        ["c5", "c2"]
    );
    assert!(acme(store, range(Some(2_000), Some(2_000)))
        .await
        .is_empty());
    // Any case of ASCII letters, a word of the caller's or the agent's, in this org only.
    assert_eq!(acme(store, text("open")).await, ["c5", "c1"]);
    assert_eq!(acme(store, text("SUNDAY")).await, ["c1"]);
    assert_eq!(acme(store, text("at 9")).await, ["c1"]);
    assert!(acme(store, text("tuesday")).await.is_empty());
    // `%`, `_` and `\` are themselves: as wildcards these would match c3 ("100 p") and c1
    // ("at 9"); an escape gone wrong would make `\t` a plain `t`.
    assert_eq!(acme(store, text("0%")).await, ["c2"]);
    assert_eq!(acme(store, text("t_")).await, ["c3"]);
    assert_eq!(acme(store, text("C:\\T")).await, ["c3"]);
    assert!(acme(store, text("%")).await.len() == 1);
    // Letters beyond ASCII match exactly, on every backend alike.
    assert_eq!(acme(store, text("ÉMILE")).await, ["c5"]);
    assert!(acme(store, text("émile")).await.is_empty());
    // Filters combine, with the page's end too.
    let q = ListQuery {
        before_ms: Some(2_200),
        ..text("open")
    };
    assert_eq!(acme(store, q).await, ["c1"]);
    let q = ListQuery {
        agent: Some("sales".into()),
        ..text("open")
    };
    assert!(acme(store, q).await.is_empty());
    let own = store
        .list_calls("alice", Some("acme"), &text("percent"))
        .await
        .unwrap();
    assert_eq!(own.len(), 1);
    // The export takes no page end and says whether more matched.
    let q = ListQuery {
        before_ms: Some(0),
        limit: 1,
        ..ListQuery::default()
    };
    let (rows, truncated) = store
        .export_org_calls(Some("acme"), None, &q)
        .await
        .unwrap();
    assert_eq!((rows.len(), truncated), (4, false));
}

pub async fn stats_rows_over_a_range(db: &Db) {
    let store = db.store().await;
    history(&store).await;
    check_stats(&store).await;
    store.close().await;
    let memory = Store::memory();
    history(&memory).await;
    check_stats(&memory).await;
}

async fn check_stats(store: &Store) {
    let mut all = store.stats(Some("acme"), 0, 10_000).await.unwrap();
    assert_eq!(all.calls, 4);
    all.durations_ms.sort();
    assert_eq!(all.durations_ms, [10_000, 30_000, 60_000]);
    all.voice_to_voice_ms.sort_by(f64::total_cmp);
    assert_eq!(all.voice_to_voice_ms, [100.0, 300.0, 400.5]);
    // Agent replies (not the operator's line); the one cut keeps what was heard.
    assert_eq!((all.replies, all.replies_interrupted), (2, 1));
    let some = store.stats(Some("acme"), 2_000, 2_200).await.unwrap();
    assert_eq!(some.calls, 1);
    assert_eq!(some.durations_ms, [30_000]);
    assert_eq!(some.voice_to_voice_ms, [300.0]);
    assert_eq!((some.replies, some.replies_interrupted), (1, 1));
    let none = store.stats(None, 0, i64::MAX).await.unwrap();
    assert_eq!(none, Default::default());
    let globex = store.stats(Some("globex"), 0, i64::MAX).await.unwrap();
    assert_eq!((globex.calls, globex.voice_to_voice_ms.len()), (1, 1));
}

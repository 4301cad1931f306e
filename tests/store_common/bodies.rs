//! Reads and writes of [`Store`] itself.

use voxwire::store::{ListQuery, Store, StreamEventRow, StreamQuery, Write};

use super::{call, event, item, metrics, Db};

/// A call with items (one interrupted, with what was heard), turn metrics and events, then its
/// end: everything reads back exactly as written.
pub async fn call_items_metrics_and_events_read_back_exactly(db: &Db) {
    let store = db.store().await;
    let c = call("c1", "user-1", Some("acme"), 1_700_000_000_000);
    let mut user = item("c1", 1, "user", "What's the weather — in Zürich? 🌦");
    user.turn_id = Some(1);
    let mut reply = item(
        "c1",
        2,
        "assistant",
        "It is sunny and warm, with a light breeze.",
    );
    reply.source = "text".into();
    let mut greeting = item("c1", 0, "assistant", "Hello!");
    greeting.turn_id = None;
    greeting.source = "greeting".into();
    store
        .write(&[
            Write::CallStarted(c.clone()),
            Write::Item(greeting.clone()),
            Write::Item(user.clone()),
            Write::Item(reply.clone()),
            Write::ItemHeard {
                call_id: "c1".into(),
                item_id: 2,
                heard: "It is sunny".into(),
            },
            Write::TurnMetrics(metrics("c1", 1)),
            Write::Event(event("c1", 1)),
            Write::Event(event("c1", 2)),
            Write::CallEnded {
                call_id: "c1".into(),
                ended_at_ms: 1_700_000_060_000,
                reason: "client_hangup".into(),
                turns: 1,
                caller_audio_ms: 4_200,
                agent_audio_ms: 1_300,
            },
        ])
        .await
        .unwrap();

    let mut ended = c.clone();
    ended.ended_at_ms = Some(1_700_000_060_000);
    ended.end_reason = Some("client_hangup".into());
    ended.turns = 1;
    ended.caller_audio_ms = 4_200;
    ended.agent_audio_ms = 1_300;
    assert_eq!(store.call("c1").await.unwrap(), Some(ended));
    let mut heard = reply.clone();
    heard.heard = Some("It is sunny".into());
    assert_eq!(
        store.items("c1").await.unwrap(),
        vec![greeting, user, heard.clone()],
        "by item_id"
    );
    assert_eq!(
        store.turn_metrics("c1").await.unwrap(),
        vec![metrics("c1", 1)]
    );
    assert_eq!(
        store.events("c1", 0, 100).await.unwrap(),
        vec![event("c1", 1), event("c1", 2)]
    );
    assert_eq!(store.call("nope").await.unwrap(), None);
    assert!(store.items("nope").await.unwrap().is_empty());

    // The item sent again without `heard` (its text final) keeps what was heard and its time.
    let mut again = reply.clone();
    again.text = "It is sunny and warm.".into();
    again.created_at_ms += 999;
    store.write(&[Write::Item(again.clone())]).await.unwrap();
    let items = store.items("c1").await.unwrap();
    assert_eq!(items[2].text, "It is sunny and warm.");
    assert_eq!(items[2].heard.as_deref(), Some("It is sunny"));
    assert_eq!(items[2].created_at_ms, reply.created_at_ms);
    store.close().await;
}

/// A resumed call (same id) takes the new agent, variables and prompt and is live again; its
/// owner, start and totals stay.
pub async fn resumption_upserts_the_call(db: &Db) {
    let store = db.store().await;
    let first = call("c1", "user-1", None, 1_000);
    store
        .write(&[
            Write::CallStarted(first.clone()),
            Write::CallEnded {
                call_id: "c1".into(),
                ended_at_ms: 2_000,
                reason: "connection_lost".into(),
                turns: 3,
                caller_audio_ms: 900,
                agent_audio_ms: 800,
            },
        ])
        .await
        .unwrap();
    let mut resumed = call("c1", "someone-else", Some("other"), 5_000);
    resumed.agent = "sales".into();
    resumed.variables = [("plan".to_string(), "free".to_string())].into();
    resumed.system_prompt = None;
    store.write(&[Write::CallStarted(resumed)]).await.unwrap();
    let got = store.call("c1").await.unwrap().unwrap();
    assert_eq!(got.agent, "sales");
    assert_eq!(
        got.variables,
        [("plan".to_string(), "free".to_string())].into()
    );
    assert_eq!(got.system_prompt, None);
    assert_eq!((got.ended_at_ms, got.end_reason), (None, None));
    assert_eq!((got.sub.as_str(), got.org), ("user-1", None), "owner kept");
    assert_eq!(got.started_at_ms, 1_000);
    assert_eq!(
        (got.turns, got.caller_audio_ms, got.agent_audio_ms),
        (3, 900, 800)
    );
    store.close().await;
}

/// A batch written twice (its first commit's answer lost) leaves the rows of one write.
pub async fn a_retried_batch_duplicates_nothing(db: &Db) {
    let store = db.store().await;
    let batch = vec![
        Write::CallStarted(call("c1", "u", None, 1_000)),
        Write::Item(item("c1", 1, "user", "hi")),
        Write::Item(item("c1", 2, "assistant", "hello")),
        Write::ItemHeard {
            call_id: "c1".into(),
            item_id: 2,
            heard: "hel".into(),
        },
        Write::TurnMetrics(metrics("c1", 1)),
        Write::Event(event("c1", 1)),
        Write::Event(event("c1", 2)),
    ];
    store.write(&batch).await.unwrap();
    let before = (
        store.call("c1").await.unwrap(),
        store.items("c1").await.unwrap(),
        store.turn_metrics("c1").await.unwrap(),
        store.events("c1", 0, 100).await.unwrap(),
    );
    store.write(&batch).await.unwrap();
    store.write(&batch).await.unwrap();
    let after = (
        store.call("c1").await.unwrap(),
        store.items("c1").await.unwrap(),
        store.turn_metrics("c1").await.unwrap(),
        store.events("c1", 0, 100).await.unwrap(),
    );
    assert_eq!(before, after);
    assert_eq!(after.1.len(), 2);
    assert_eq!(after.3.len(), 2);
    // An event already stored is kept as it was.
    let mut changed = event("c1", 1);
    changed.kind = "rewritten".into();
    store.write(&[Write::Event(changed)]).await.unwrap();
    assert_eq!(
        store.events("c1", 0, 1).await.unwrap(),
        vec![event("c1", 1)]
    );
    store.close().await;
}

/// Newest first, paged with `before`; the agent filter; other subjects and organisations
/// (and a `None` org against a named one) see nothing.
pub async fn list_calls_pages_newest_first_for_the_owner_only(db: &Db) {
    let store = db.store().await;
    let mut writes = Vec::new();
    for i in 0..25_i64 {
        let mut c = call(&format!("c{i:02}"), "alice", Some("acme"), 10_000 + i * 10);
        if i % 5 == 0 {
            c.agent = "sales".into();
        }
        writes.push(Write::CallStarted(c));
    }
    writes.push(Write::CallStarted(call(
        "bob-1",
        "bob",
        Some("acme"),
        50_000,
    )));
    writes.push(Write::CallStarted(call(
        "alice-other",
        "alice",
        Some("globex"),
        50_000,
    )));
    writes.push(Write::CallStarted(call(
        "alice-none",
        "alice",
        None,
        50_000,
    )));
    store.write(&writes).await.unwrap();

    let page = |before_ms, agent: Option<&str>, limit| ListQuery {
        limit,
        before_ms,
        agent: agent.map(Into::into),
        ..ListQuery::default()
    };
    let ids = |rows: Vec<voxwire::store::CallRow>| -> Vec<String> {
        rows.into_iter().map(|c| c.id).collect()
    };
    let mut seen = Vec::new();
    let mut before = None;
    loop {
        let rows = store
            .list_calls("alice", Some("acme"), &page(before, None, 10))
            .await
            .unwrap();
        if rows.is_empty() {
            break;
        }
        assert!(rows.len() <= 10);
        before = rows.last().map(|c| c.started_at_ms);
        seen.extend(ids(rows));
    }
    let expected: Vec<String> = (0..25).rev().map(|i| format!("c{i:02}")).collect();
    assert_eq!(seen, expected, "every call once, newest first");

    let sales = ids(store
        .list_calls("alice", Some("acme"), &page(None, Some("sales"), 100))
        .await
        .unwrap());
    assert_eq!(sales, ["c20", "c15", "c10", "c05", "c00"]);
    let older = ids(store
        .list_calls("alice", Some("acme"), &page(Some(10_150), Some("sales"), 2))
        .await
        .unwrap());
    assert_eq!(older, ["c10", "c05"]);

    let none = store
        .list_calls("alice", None, &page(None, None, 100))
        .await
        .unwrap();
    assert_eq!(
        ids(none),
        ["alice-none"],
        "a None org sees only calls without one"
    );
    let other = store
        .list_calls("alice", Some("globex"), &page(None, None, 100))
        .await
        .unwrap();
    assert_eq!(ids(other), ["alice-other"]);
    assert!(store
        .list_calls("mallory", Some("acme"), &page(None, None, 100))
        .await
        .unwrap()
        .is_empty());
    // Limits are kept within 1..=100.
    let one = store
        .list_calls("alice", Some("acme"), &page(None, None, 0))
        .await
        .unwrap();
    assert_eq!(one.len(), 1);
    store.close().await;
}

/// Events after a given seq, in order, a page at a time.
pub async fn events_after_a_seq(db: &Db) {
    let store = db.store().await;
    let mut writes: Vec<Write> = (1..=50).map(|s| Write::Event(event("c1", s))).collect();
    writes.push(Write::Event(event("c2", 1)));
    store.write(&writes).await.unwrap();
    let seqs = |rows: Vec<voxwire::store::EventRow>| -> Vec<i64> {
        rows.into_iter().map(|e| e.seq).collect()
    };
    assert_eq!(seqs(store.events("c1", 0, 3).await.unwrap()), [1, 2, 3]);
    assert_eq!(
        seqs(store.events("c1", 47, 10).await.unwrap()),
        [48, 49, 50]
    );
    assert!(store.events("c1", 50, 10).await.unwrap().is_empty());
    let mut after = 0;
    let mut all = Vec::new();
    loop {
        let page = store.events("c1", after, 7).await.unwrap();
        let Some(last) = page.last() else { break };
        after = last.seq;
        all.extend(seqs(page));
    }
    assert_eq!(all, (1..=50).collect::<Vec<_>>());
    assert_eq!(seqs(store.events("c2", 0, 10).await.unwrap()), [1]);
    store.close().await;
}

/// The monitor stream's replay: an org's events after a stream id, in stream order across
/// calls, with filters, paged; events of other orgs, and events without a stream id, never.
pub async fn stream_events_after_an_id(db: &Db) {
    let store = db.store().await;
    let mut ada = call("c1", "ada", Some("acme"), 1_000);
    ada.agent = "sales".into();
    let mut writes = vec![
        Write::CallStarted(ada),
        Write::CallStarted(call("c2", "bob", Some("acme"), 2_000)),
        Write::CallStarted(call("c3", "eve", Some("globex"), 3_000)),
        Write::CallStarted(call("c4", "dan", None, 4_000)),
    ];
    // Stream ids interleave the calls: c1 gets 10, 13, 16..., c2 11, 14..., c3 12, 15...
    for n in 0..30i64 {
        let call_id = ["c1", "c2", "c3"][(n % 3) as usize];
        let mut e = event(call_id, n / 3 + 1);
        e.stream_id = Some(10 + n);
        writes.push(Write::Event(e));
    }
    let mut unnumbered = event("c1", 99);
    unnumbered.kind = "response_done".into();
    writes.push(Write::Event(unnumbered));
    let mut default_org = event("c4", 1);
    default_org.stream_id = Some(100);
    writes.push(Write::Event(default_org));
    store.write(&writes).await.unwrap();
    let query = |after: i64| StreamQuery {
        after,
        org: Some("acme".into()),
        limit: 100,
        ..StreamQuery::default()
    };
    let ids =
        |rows: Vec<StreamEventRow>| -> Vec<i64> { rows.iter().map(|r| r.stream_id).collect() };
    let acme: Vec<i64> = (10..40).filter(|n| (n - 10) % 3 != 2).collect();
    assert_eq!(ids(store.stream_events(&query(0)).await.unwrap()), acme);
    assert_eq!(
        ids(store.stream_events(&query(30)).await.unwrap()),
        [31, 32, 34, 35, 37, 38]
    );
    let rows = store.stream_events(&query(36)).await.unwrap();
    assert_eq!(
        rows.iter()
            .map(|r| (r.call_id.as_str(), r.sub.as_str(), r.agent.as_str(), r.seq))
            .collect::<Vec<_>>(),
        [("c1", "ada", "sales", 10), ("c2", "bob", "support", 10)]
    );
    assert_eq!(rows[0].data["text"], "event 10");
    assert_eq!(rows[0].org.as_deref(), Some("acme"));
    // Filters, and paging.
    let only = |f: fn(&mut StreamQuery)| {
        let mut q = query(0);
        f(&mut q);
        q
    };
    let c1: Vec<i64> = (10..40).step_by(3).collect();
    assert_eq!(
        ids(store
            .stream_events(&only(|q| q.call_id = Some("c1".into())))
            .await
            .unwrap()),
        c1
    );
    assert_eq!(
        ids(store
            .stream_events(&only(|q| q.agent = Some("sales".into())))
            .await
            .unwrap()),
        c1
    );
    assert_eq!(
        ids(store
            .stream_events(&only(|q| q.sub = Some("bob".into())))
            .await
            .unwrap()),
        (11..40).step_by(3).collect::<Vec<_>>()
    );
    assert!(store
        .stream_events(&only(|q| q.sub = Some("eve".into())))
        .await
        .unwrap()
        .is_empty());
    let mut paged = Vec::new();
    let mut after = 0;
    loop {
        let mut q = query(after);
        q.limit = 4;
        let page = store.stream_events(&q).await.unwrap();
        let Some(last) = page.last() else { break };
        after = last.stream_id;
        paged.extend(ids(page));
    }
    assert_eq!(paged, acme);
    let mut none = query(0);
    none.org = None;
    assert_eq!(ids(store.stream_events(&none).await.unwrap()), [100]);
    // An org's calls, of every owner or of one.
    let all = store
        .list_org_calls(Some("acme"), None, &ListQuery::default())
        .await
        .unwrap();
    assert_eq!(
        all.iter().map(|c| c.id.as_str()).collect::<Vec<_>>(),
        ["c2", "c1"]
    );
    let bob = store
        .list_org_calls(Some("acme"), Some("bob"), &ListQuery::default())
        .await
        .unwrap();
    assert_eq!(bob.len(), 1);
    store.close().await;
}

/// Opening a store again leaves its tables and rows as they were.
pub async fn reopening_keeps_the_rows(db: &Db) {
    let store = db.store().await;
    store
        .write(&[Write::CallStarted(call("c1", "u", None, 1))])
        .await
        .unwrap();
    store.close().await;
    let again: Store = db.store().await;
    assert_eq!(again.call("c1").await.unwrap().unwrap().id, "c1");
    again.close().await;
}

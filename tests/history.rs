//! Call history over real sockets, against a real server on real SQLite and Postgres: the
//! list's filters and text search, paging through them, and the export (CSV and JSON, its cap)
//! of the calls fake-engine callers make. Another org sees none of it; callers may not export.

mod common;
mod store_common;

use common::history::*;
use common::*;
use serde_json::{json, Value};
use store_common::Db;
use voxwire::engines::Engines;
use voxwire::store::{ListQuery, Write};
use voxwire::Config;

async fn server_on(db: &Db, engines: Engines) -> TestServer {
    start_with_store(Config::for_tests(), engines, db.store().await).await
}

async fn filters_search_and_paging(db: Db) {
    let server = server_on(&db, Engines::fake()).await;
    let sunday = finished_call(
        &server,
        "alice",
        Some("acme"),
        &["When do you OPEN on Sunday"],
    )
    .await;
    let sale = finished_call(&server, "bob", Some("acme"), &["is the 50% off real"]).await;
    let (mut live_ws, live) = call_as(&server, "alice", Some("acme")).await;
    turn(&mut live_ws, "what about 100 percent").await;
    let _other = finished_call(&server, "mallory", Some("globex"), &["open sunday plans"]).await;
    flush(&server).await;
    let op = operator(&server, Some("acme"));
    let list = |query: &str| {
        let (path, server, op) = (format!("/api/calls?{query}"), &server, &op);
        async move { json_of(server, &path, op).await }
    };

    let all = list("").await;
    assert_eq!(ids(&all), [live.as_str(), sale.as_str(), sunday.as_str()]);
    // Each summary says how long the call lasted; a live one has no duration yet.
    for c in all["calls"].as_array().unwrap() {
        match c["live"].as_bool().unwrap() {
            true => assert!(c["duration_ms"].is_null(), "{c}"),
            false => assert_eq!(
                c["duration_ms"].as_i64().unwrap(),
                c["ended_at_ms"].as_i64().unwrap() - c["started_at_ms"].as_i64().unwrap()
            ),
        }
    }
    // Text: a caller's word in any case, an agent's word, a word nobody said; `%` is literal
    // (as a wildcard `0%` would match "100 percent" too).
    assert_eq!(ids(&list("q=sunday").await), [sunday.as_str()]);
    assert_eq!(
        ids(&list("q=You%20SAID").await),
        [live.as_str(), sale.as_str(), sunday.as_str()]
    );
    assert!(ids(&list("q=tuesday").await).is_empty());
    assert_eq!(
        ids(&list(&format!("q={}", enc("0%"))).await),
        [sale.as_str()]
    );
    assert_eq!(
        ids(&list(&format!("q={}", enc("50% off"))).await),
        [sale.as_str()]
    );
    // The time range: `from` inclusive, `to` exclusive.
    let start = |i: usize| all["calls"][i]["started_at_ms"].as_i64().unwrap();
    assert_eq!(
        ids(&list(&format!("from={}", start(1))).await),
        [live.as_str(), sale.as_str()]
    );
    assert_eq!(
        ids(&list(&format!("to={}", start(1))).await),
        [sunday.as_str()]
    );
    let narrow = format!("from={}&to={}", start(1), start(0));
    assert_eq!(ids(&list(&narrow).await), [sale.as_str()]);
    assert_eq!(ids(&list("sub=alice&q=percent").await), [live.as_str()]);
    assert!(ids(&list("agent=nobody&q=sunday").await).is_empty());
    // Paging with `before` keeps the filters.
    let mut pages = Vec::new();
    let mut query = "q=said&limit=1".to_string();
    loop {
        let page = list(&query).await;
        pages.extend(ids(&page));
        match page["next_before"].as_i64() {
            Some(b) => query = format!("q=said&limit=1&to={}&before={b}", start(0) + 1),
            None => break,
        }
    }
    assert_eq!(pages, [live.as_str(), sale.as_str(), sunday.as_str()]);
    // A caller finds only its own calls; another org's operator nothing of acme's.
    let alice = caller(&server, "alice", Some("acme"));
    let mine = json_of(&server, "/api/calls?q=said", &alice).await;
    assert_eq!(ids(&mine), [live.as_str(), sunday.as_str()]);
    assert!(ids(&json_of(&server, "/api/calls?q=50", &alice).await).is_empty());
    let globex = operator(&server, Some("globex"));
    let theirs = json_of(&server, "/api/calls?q=sunday", &globex).await;
    assert_eq!(ids(&theirs).len(), 1);
    assert_ne!(ids(&theirs)[0], sunday);

    // Bad values: 400 `invalid_parameter`, never a panic.
    let long = "x".repeat(201);
    for bad in [
        format!("q={long}"),
        "from=-5".into(),
        "from=10&to=9".into(),
        "to=99999999999999999999999".into(),
        "from=noon".into(),
        "limit=many".into(),
        "q=a%00b".into(),
        "agent=a%00".into(),
        "q=a&q=b".into(),
    ] {
        assert_eq!(
            refused(&server, &format!("/api/calls?{bad}"), &op).await,
            (400, "invalid_parameter".into()),
            "{bad}"
        );
    }
    // Bytes that are not UTF-8 are read as replacement characters, not refused.
    assert!(ids(&list("q=%FF%FE&agent=%C3").await).is_empty());
    let far = list(&format!("from={}&limit=100000000000", i64::MAX)).await;
    assert!(ids(&far).is_empty());
    assert_eq!(ids(&list(&format!("q={}", "y".repeat(200))).await).len(), 0);
    hang_up(&mut live_ws).await;
}

/// A minimal RFC 4180 reader: rows of fields, quotes doubled inside quoted fields, CRLF
/// line ends.
fn parse_csv(text: &str) -> Vec<Vec<String>> {
    use std::mem::take;
    let mut rows = Vec::new();
    let (mut row, mut field) = (Vec::new(), String::new());
    let mut chars = text.chars().peekable();
    let mut quoted = false;
    while let Some(c) = chars.next() {
        match (quoted, c) {
            (true, '"') if chars.peek() == Some(&'"') => {
                chars.next();
                field.push('"');
            }
            (true, '"') => quoted = false,
            (true, c) => field.push(c),
            (false, '"') => quoted = true,
            (false, ',') => row.push(take(&mut field)),
            (false, '\r') => {
                assert_eq!(chars.next(), Some('\n'), "CRLF line ends");
                row.push(take(&mut field));
                rows.push(take(&mut row));
            }
            (false, '\n') => panic!("a bare LF ends a line"),
            (false, c) => field.push(c),
        }
    }
    assert!(
        field.is_empty() && row.is_empty() && !quoted,
        "the last line ends with CRLF"
    );
    rows
}

fn ms_of(rfc3339: &str) -> i64 {
    let t = humantime::parse_rfc3339(rfc3339).unwrap();
    t.duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as i64
}

async fn export_csv_and_json(db: Db) {
    let server = server_on(&db, Engines::fake()).await;
    let odd = "Doe, \"Jo\"";
    let first = finished_call(&server, odd, Some("acme"), &["hello there", "bye"]).await;
    let second = finished_call(&server, "bob", Some("acme"), &["is it open"]).await;
    let _other = finished_call(&server, "mallory", Some("globex"), &["hello"]).await;
    flush(&server).await;
    let op = operator(&server, Some("acme"));
    let list = json_of(&server, "/api/calls", &op).await;

    let r = get(&server, "/api/calls/export?format=csv", &op).await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["content-type"], "text/csv; charset=utf-8");
    assert_eq!(
        r.headers()["content-disposition"],
        "attachment; filename=\"calls.csv\""
    );
    assert!(r.headers().get("x-voxwire-truncated").is_none());
    let rows = parse_csv(&r.text().await.unwrap());
    assert_eq!(
        rows[0],
        [
            "call_id",
            "agent",
            "sub",
            "started_at",
            "ended_at",
            "duration_ms",
            "end_reason",
            "turns",
            "caller_audio_ms",
            "agent_audio_ms"
        ]
    );
    assert_eq!(rows.len(), 3, "{rows:?}");
    for (row, summary) in rows[1..].iter().zip(list["calls"].as_array().unwrap()) {
        let field = |k: &str| summary[k].to_string().trim_matches('"').to_string();
        assert_eq!(row[0], field("call_id"));
        assert_eq!(row[1], field("agent"));
        assert_eq!(row[2], summary["sub"].as_str().unwrap());
        assert!(row[3].ends_with('Z') && row[4].ends_with('Z'), "{row:?}");
        assert_eq!(ms_of(&row[3]), summary["started_at_ms"].as_i64().unwrap());
        assert_eq!(ms_of(&row[4]), summary["ended_at_ms"].as_i64().unwrap());
        for (i, k) in [(5, "duration_ms"), (6, "end_reason"), (7, "turns")] {
            assert_eq!(row[i], field(k), "{k}");
        }
        assert_eq!(row[8], field("caller_audio_ms"));
        assert_eq!(row[9], field("agent_audio_ms"));
    }
    assert_eq!(
        (rows[1][0].as_str(), rows[1][2].as_str()),
        (second.as_str(), "bob")
    );
    assert_eq!(
        (rows[2][0].as_str(), rows[2][2].as_str()),
        (first.as_str(), odd)
    );
    assert_eq!(rows[2][7], "2");

    // JSON: the list's summaries, every one, and the same filters.
    let r = get(&server, "/api/calls/export?format=json&q=HELLO", &op).await;
    assert_eq!(
        r.headers()["content-disposition"],
        "attachment; filename=\"calls.json\""
    );
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["truncated"], false);
    assert_eq!(ids(&body), [first.as_str()]);
    assert_eq!(body["calls"][0], list["calls"][1]);
    let body = json_of(&server, "/api/calls/export?format=json&sub=bob", &op).await;
    assert_eq!(ids(&body), [second.as_str()]);

    // Another org's export holds only its own; callers, bad formats and bad filters are refused.
    let globex = json_of(
        &server,
        "/api/calls/export?format=json",
        &operator(&server, Some("globex")),
    )
    .await;
    assert_eq!(ids(&globex).len(), 1);
    assert!(!ids(&globex).contains(&first));
    let bob = caller(&server, "bob", Some("acme"));
    assert_eq!(
        refused(&server, "/api/calls/export?format=csv", &bob).await,
        (403, "forbidden".into())
    );
    for bad in [
        "",
        "?format=xml",
        "?format=csv&from=5&to=1",
        "?format=csv&format=json",
    ] {
        assert_eq!(
            refused(&server, &format!("/api/calls/export{bad}"), &op).await,
            (400, "invalid_parameter".into()),
            "{bad}"
        );
    }
    assert_eq!(
        refused(&server, "/api/calls/export?format=csv", "nope")
            .await
            .0,
        401
    );
}

/// More calls than an export holds: the newest 10 000, and the header says so.
async fn export_is_capped(db: Db) {
    let server = server_on(&db, Engines::fake()).await;
    let max = ListQuery::EXPORT_MAX as i64;
    let mut writes: Vec<Write> = (0..=max)
        .map(|i| {
            let mut c = store_common::call(&format!("c{i:05}"), "u", Some("acme"), 1_000_000 + i);
            c.ended_at_ms = Some(1_000_000 + i + 500);
            Write::CallStarted(c)
        })
        .collect();
    writes.push(Write::CallStarted(store_common::call(
        "g",
        "u",
        Some("globex"),
        5,
    )));
    server
        .state
        .call_services
        .store
        .write(&writes)
        .await
        .unwrap();
    let op = operator(&server, Some("acme"));

    let r = get(&server, "/api/calls/export?format=csv", &op).await;
    assert_eq!(r.headers()["x-voxwire-truncated"], "true");
    let rows = parse_csv(&r.text().await.unwrap());
    assert_eq!(rows.len() as i64, max + 1);
    assert_eq!(rows[1][0], format!("c{max:05}"));
    assert_eq!(rows[rows.len() - 1][0], "c00001");
    assert_eq!(rows[1][5], "500");
    let r = get(&server, "/api/calls/export?format=json", &op).await;
    assert_eq!(r.headers()["x-voxwire-truncated"], "true");
    let body: Value = r.json().await.unwrap();
    assert_eq!(
        (body["truncated"].clone(), ids(&body).len() as i64),
        (json!(true), max)
    );
    // Narrowed below the cap: whole, and no header.
    let r = get(&server, "/api/calls/export?format=csv&from=1005000", &op).await;
    assert!(r.headers().get("x-voxwire-truncated").is_none());
    assert_eq!(
        parse_csv(&r.text().await.unwrap()).len() as i64,
        max - 5000 + 2
    );
}

#[tokio::test]
async fn sqlite_filters_search_and_paging() {
    filters_search_and_paging(Db::sqlite()).await;
}

#[tokio::test]
async fn postgres_filters_search_and_paging() {
    filters_search_and_paging(Db::postgres().await).await;
}

#[tokio::test]
async fn sqlite_export_csv_and_json() {
    export_csv_and_json(Db::sqlite()).await;
}

#[tokio::test]
async fn postgres_export_csv_and_json() {
    export_csv_and_json(Db::postgres().await).await;
}

#[tokio::test]
async fn sqlite_export_is_capped() {
    export_is_capped(Db::sqlite()).await;
}

#[tokio::test]
async fn postgres_export_is_capped() {
    export_is_capped(Db::postgres().await).await;
}

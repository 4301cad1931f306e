//! The store on Postgres: a throw-away cluster for this test binary (each test its own
//! database in it), and a cluster of its own for each test that stops the server. Needs
//! Debian's `postgresql` (`scripts/setup` installs it).

mod store_common;

use store_common::pg::PASSWORD;
use store_common::Db;

#[tokio::test]
async fn call_items_metrics_and_events_read_back_exactly() {
    store_common::call_items_metrics_and_events_read_back_exactly(&Db::postgres().await).await;
}

#[tokio::test]
async fn resumption_upserts_the_call() {
    store_common::resumption_upserts_the_call(&Db::postgres().await).await;
}

#[tokio::test]
async fn a_retried_batch_duplicates_nothing() {
    store_common::a_retried_batch_duplicates_nothing(&Db::postgres().await).await;
}

#[tokio::test]
async fn list_calls_pages_newest_first_for_the_owner_only() {
    store_common::list_calls_pages_newest_first_for_the_owner_only(&Db::postgres().await).await;
}

#[tokio::test]
async fn list_filters_by_range_and_literal_text() {
    store_common::list_filters_by_range_and_literal_text(&Db::postgres().await).await;
}

#[tokio::test]
async fn stats_rows_over_a_range() {
    store_common::stats_rows_over_a_range(&Db::postgres().await).await;
}

#[tokio::test]
async fn stream_events_after_an_id() {
    store_common::stream_events_after_an_id(&Db::postgres().await).await;
}

#[tokio::test]
async fn events_after_a_seq() {
    store_common::events_after_a_seq(&Db::postgres().await).await;
}

#[tokio::test]
async fn reopening_keeps_the_rows() {
    store_common::reopening_keeps_the_rows(&Db::postgres().await).await;
}

#[tokio::test]
async fn writer_stores_ten_thousand_writes() {
    store_common::writer_stores_ten_thousand_writes(&Db::postgres().await).await;
}

#[tokio::test]
async fn writer_rides_out_a_stopped_server() {
    store_common::writer_rides_out_an_outage(&Db::postgres_own().await).await;
}

#[tokio::test]
async fn a_full_queue_drops_and_counts_past_its_size() {
    store_common::a_full_queue_drops_and_counts_past_its_size(&Db::postgres_own().await).await;
}

#[tokio::test]
async fn a_refused_write_costs_only_itself() {
    store_common::a_refused_write_costs_only_itself(&Db::postgres().await).await;
}

/// `describe` names host, port and database; neither it nor any error shows the password.
#[tokio::test]
async fn the_password_is_never_shown() {
    let db = Db::postgres().await;
    let store = db.store().await;
    let name = db.url.rsplit('/').next().unwrap().to_string();
    let description = store.describe();
    assert!(
        description.starts_with("postgres (127.0.0.1:"),
        "{description}"
    );
    assert!(description.ends_with(&format!("/{name})")), "{description}");
    assert!(!description.contains(PASSWORD));
    let missing = db.url.replace(&format!("/{name}"), "/no_such_database");
    let e = voxwire::store::Store::connect(&missing)
        .await
        .err()
        .unwrap();
    let mut text = format!("{e} {e:?}");
    let mut source = std::error::Error::source(&e);
    while let Some(s) = source {
        text.push_str(&s.to_string());
        source = s.source();
    }
    assert!(text.contains("no_such_database"), "{text}");
    assert!(!text.contains(PASSWORD), "{text}");
    assert!(
        !e.retryable(),
        "a missing database is not worth retrying: {e}"
    );
    store.close().await;
}

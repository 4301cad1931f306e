//! The store on SQLite: each test has a file of its own in a folder the store creates. The
//! outage is another connection holding the write lock (the database is busy), which fails
//! writes even as root, where permission changes would not.

mod store_common;

use store_common::Db;

#[tokio::test]
async fn call_items_metrics_and_events_read_back_exactly() {
    store_common::call_items_metrics_and_events_read_back_exactly(&Db::sqlite()).await;
}

#[tokio::test]
async fn resumption_upserts_the_call() {
    store_common::resumption_upserts_the_call(&Db::sqlite()).await;
}

#[tokio::test]
async fn a_retried_batch_duplicates_nothing() {
    store_common::a_retried_batch_duplicates_nothing(&Db::sqlite()).await;
}

#[tokio::test]
async fn list_calls_pages_newest_first_for_the_owner_only() {
    store_common::list_calls_pages_newest_first_for_the_owner_only(&Db::sqlite()).await;
}

#[tokio::test]
async fn list_filters_by_range_and_literal_text() {
    store_common::list_filters_by_range_and_literal_text(&Db::sqlite()).await;
}

#[tokio::test]
async fn stats_rows_over_a_range() {
    store_common::stats_rows_over_a_range(&Db::sqlite()).await;
}

#[tokio::test]
async fn stream_events_after_an_id() {
    store_common::stream_events_after_an_id(&Db::sqlite()).await;
}

#[tokio::test]
async fn events_after_a_seq() {
    store_common::events_after_a_seq(&Db::sqlite()).await;
}

#[tokio::test]
async fn reopening_keeps_the_rows() {
    store_common::reopening_keeps_the_rows(&Db::sqlite()).await;
}

#[tokio::test]
async fn writer_stores_ten_thousand_writes() {
    store_common::writer_stores_ten_thousand_writes(&Db::sqlite()).await;
}

#[tokio::test]
async fn writer_rides_out_a_locked_database() {
    store_common::writer_rides_out_an_outage(&Db::sqlite()).await;
}

#[tokio::test]
async fn a_full_queue_drops_and_counts_past_its_size() {
    store_common::a_full_queue_drops_and_counts_past_its_size(&Db::sqlite()).await;
}

#[tokio::test]
async fn a_refused_write_costs_only_itself() {
    store_common::a_refused_write_costs_only_itself(&Db::sqlite()).await;
}

/// The file is in WAL mode and `describe` names it.
#[tokio::test]
async fn the_file_is_created_in_wal_mode() {
    use sqlx::Connection;
    let db = Db::sqlite();
    let store = db.store().await;
    let path = db.url.trim_start_matches("sqlite://");
    assert!(std::path::Path::new(path).is_file());
    assert_eq!(store.describe(), format!("sqlite ({path})"));
    let mut c = sqlx::SqliteConnection::connect(&db.url).await.unwrap();
    let (mode,): (String,) = sqlx::query_as("PRAGMA journal_mode")
        .fetch_one(&mut c)
        .await
        .unwrap();
    assert_eq!(mode, "wal");
    store.close().await;
}

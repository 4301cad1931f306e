//! Signed webhooks on SQLite: each test a database file of its own, a receiver on a loopback
//! port, the server with fake engines.

mod common;
mod store_common;
mod webhooks_common;

use store_common::Db;

#[tokio::test]
async fn signed_events_reach_a_verifying_receiver() {
    webhooks_common::signed_events_reach_a_verifying_receiver(&Db::sqlite()).await;
}

#[tokio::test]
async fn receiver_down_then_up_is_delivered_once() {
    webhooks_common::receiver_down_then_up_is_delivered_once(&Db::sqlite()).await;
}

#[tokio::test]
async fn a_restart_mid_retry_delivers_once() {
    webhooks_common::a_restart_mid_retry_delivers_once(&Db::sqlite()).await;
}

#[tokio::test]
async fn a_4xx_is_a_permanent_failure() {
    webhooks_common::a_4xx_is_a_permanent_failure(&Db::sqlite()).await;
}

#[tokio::test]
async fn a_stop_mid_request_sends_again_with_the_same_id() {
    webhooks_common::a_stop_mid_request_sends_again_with_the_same_id(&Db::sqlite()).await;
}

#[tokio::test]
async fn claims_are_exclusive_and_delivered_is_final() {
    webhooks_common::claims_are_exclusive_and_delivered_is_final(&Db::sqlite()).await;
}

#[test]
fn a_webhook_without_its_secret_stops_the_start() {
    webhooks_common::a_webhook_without_its_secret_stops_the_start();
}

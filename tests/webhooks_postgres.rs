//! Signed webhooks on Postgres: a throw-away cluster for this test binary (each test a
//! database of its own in it), a receiver on a loopback port, the server with fake engines.
//! Needs Debian's `postgresql` (`scripts/setup` installs it).

mod common;
mod store_common;
mod webhooks_common;

use store_common::Db;

#[tokio::test]
async fn signed_events_reach_a_verifying_receiver() {
    webhooks_common::signed_events_reach_a_verifying_receiver(&Db::postgres().await).await;
}

#[tokio::test]
async fn receiver_down_then_up_is_delivered_once() {
    webhooks_common::receiver_down_then_up_is_delivered_once(&Db::postgres().await).await;
}

#[tokio::test]
async fn a_restart_mid_retry_delivers_once() {
    webhooks_common::a_restart_mid_retry_delivers_once(&Db::postgres().await).await;
}

#[tokio::test]
async fn a_4xx_is_a_permanent_failure() {
    webhooks_common::a_4xx_is_a_permanent_failure(&Db::postgres().await).await;
}

#[tokio::test]
async fn a_stop_mid_request_sends_again_with_the_same_id() {
    webhooks_common::a_stop_mid_request_sends_again_with_the_same_id(&Db::postgres().await).await;
}

#[tokio::test]
async fn claims_are_exclusive_and_delivered_is_final() {
    webhooks_common::claims_are_exclusive_and_delivered_is_final(&Db::postgres().await).await;
}

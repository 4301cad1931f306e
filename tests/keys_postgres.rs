//! API keys and call sessions on Postgres: a throw-away cluster for this test binary (each test a
//! database of its own in it); the real server with fake engines over real sockets, and the
//! `voxwire keys` command. Needs Debian's `postgresql` (`scripts/setup` installs it).

mod common;
mod keys_common;
mod store_common;

use store_common::Db;

#[tokio::test]
async fn keys_through_the_store() {
    keys_common::keys_through_the_store(&Db::postgres().await).await;
}

#[tokio::test]
async fn keys_through_the_cli() {
    keys_common::keys_through_the_cli(&Db::postgres().await).await;
}

#[tokio::test]
async fn a_session_binds_variables_and_one_call() {
    keys_common::a_session_binds_variables_and_one_call(&Db::postgres().await).await;
}

#[tokio::test]
async fn two_calls_at_once_one_wins() {
    keys_common::two_calls_at_once_one_wins(&Db::postgres().await).await;
}

#[tokio::test]
async fn push_to_talk_takes_one_call() {
    keys_common::push_to_talk_takes_one_call(&Db::postgres().await).await;
}

#[tokio::test]
async fn refusals() {
    keys_common::refusals(&Db::postgres().await).await;
}

#[tokio::test]
async fn an_expired_token_is_refused() {
    keys_common::an_expired_token_is_refused(&Db::postgres().await).await;
}

#[tokio::test]
async fn ws_url_follows_the_public_url() {
    keys_common::ws_url_follows_the_public_url(&Db::postgres().await).await;
}

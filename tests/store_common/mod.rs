//! The store tests, one body run against SQLite (`store_sqlite.rs`) and Postgres
//! (`store_postgres.rs`): what is written is read back exactly, resumed calls, retried batches,
//! listing, event paging, and the writer through load, outages, a full queue and refused
//! writes.
#![allow(dead_code)]

pub mod logs;
pub mod pg;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use sqlx::Connection;
use tokio::sync::Mutex;
use tokio_util::task::TaskTracker;
use voxwire::metrics::StoreMetrics;
use voxwire::store::{
    CallRow, EventRow, ItemRow, Store, StoreOptions, StoreWriter, TurnMetricsRow,
};

use pg::PgServer;

/// Bounds on things that must finish, not measures of speed.
pub const LONG: Duration = Duration::from_secs(120);

/// One test's database: a fresh SQLite file, a fresh database in this process's shared
/// Postgres cluster, or (for tests that stop the server) a cluster of its own.
pub struct Db {
    pub url: String,
    sqlite_dir: Option<PathBuf>,
    pg: Option<Arc<PgServer>>,
    own_cluster: bool,
    /// SQLite outages: another connection holding the write lock.
    blocker: Mutex<Option<sqlx::SqliteConnection>>,
}

static SEQ: AtomicUsize = AtomicUsize::new(0);

fn shared_cluster() -> Arc<PgServer> {
    static CLUSTER: OnceLock<Arc<PgServer>> = OnceLock::new();
    CLUSTER.get_or_init(|| Arc::new(PgServer::start())).clone()
}

impl Db {
    pub fn sqlite() -> Db {
        let dir = std::env::temp_dir().join(format!(
            "voxwire-store-{}-{}",
            std::process::id(),
            SEQ.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&dir);
        Db {
            // The folder does not exist yet: the store creates it.
            url: format!("sqlite://{}/calls.db", dir.display()),
            sqlite_dir: Some(dir),
            pg: None,
            own_cluster: false,
            blocker: Mutex::new(None),
        }
    }

    /// The folder of a SQLite database (its file and write-ahead log).
    pub fn sqlite_dir(&self) -> Option<&std::path::Path> {
        self.sqlite_dir.as_deref()
    }

    /// A new database in the cluster shared by this process's tests.
    pub async fn postgres() -> Db {
        let cluster = tokio::task::spawn_blocking(shared_cluster).await.unwrap();
        let name = format!("t{}", SEQ.fetch_add(1, Ordering::Relaxed));
        let mut admin = sqlx::PgConnection::connect(&cluster.url("voxwire"))
            .await
            .unwrap();
        sqlx::query(&format!("CREATE DATABASE {name}"))
            .execute(&mut admin)
            .await
            .unwrap();
        admin.close().await.unwrap();
        Db {
            url: cluster.url(&name),
            sqlite_dir: None,
            pg: Some(cluster),
            own_cluster: false,
            blocker: Mutex::new(None),
        }
    }

    /// A cluster of its own, which this test may stop and start.
    pub async fn postgres_own() -> Db {
        let cluster = Arc::new(tokio::task::spawn_blocking(PgServer::start).await.unwrap());
        Db {
            url: cluster.url("voxwire"),
            sqlite_dir: None,
            pg: Some(cluster),
            own_cluster: true,
            blocker: Mutex::new(None),
        }
    }

    /// Short timeouts, so an outage shows within a second.
    pub fn options() -> StoreOptions {
        StoreOptions {
            acquire_timeout: Duration::from_secs(1),
            busy_timeout: Duration::from_millis(100),
            ..StoreOptions::default()
        }
    }

    pub async fn store(&self) -> Store {
        Store::connect_with(&self.url, &Self::options())
            .await
            .unwrap_or_else(|e| panic!("connect {}: {e}", voxwire::store::redact_url(&self.url)))
    }

    /// Runs a statement on a connection of its own.
    pub async fn exec(&self, sql: &str) {
        if self.pg.is_some() {
            let mut c = sqlx::PgConnection::connect(&self.url).await.unwrap();
            sqlx::query(sql).execute(&mut c).await.unwrap();
            c.close().await.unwrap();
        } else {
            let mut c = sqlx::SqliteConnection::connect(&self.url).await.unwrap();
            sqlx::query(sql).execute(&mut c).await.unwrap();
            c.close().await.unwrap();
        }
    }

    /// Makes writes fail with a retryable error: Postgres is stopped; SQLite's write lock is
    /// taken by another connection (the database is busy).
    pub async fn go_down(&self) {
        match &self.pg {
            Some(pg) => {
                assert!(self.own_cluster, "stopping the shared cluster");
                let pg = pg.clone();
                tokio::task::spawn_blocking(move || pg.stop())
                    .await
                    .unwrap();
            }
            None => {
                let mut c = sqlx::SqliteConnection::connect(&self.url).await.unwrap();
                sqlx::query("BEGIN IMMEDIATE")
                    .execute(&mut c)
                    .await
                    .unwrap();
                *self.blocker.lock().await = Some(c);
            }
        }
    }

    pub async fn come_back(&self) {
        match &self.pg {
            Some(pg) => {
                let pg = pg.clone();
                tokio::task::spawn_blocking(move || pg.start_again())
                    .await
                    .unwrap();
            }
            None => {
                let mut c = self.blocker.lock().await.take().expect("went down first");
                sqlx::query("ROLLBACK").execute(&mut c).await.unwrap();
                c.close().await.unwrap();
            }
        }
    }
}

impl Drop for Db {
    fn drop(&mut self) {
        if let Some(dir) = &self.sqlite_dir {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}

pub fn call(id: &str, sub: &str, org: Option<&str>, started_at_ms: i64) -> CallRow {
    CallRow {
        id: id.into(),
        org: org.map(Into::into),
        sub: sub.into(),
        agent: "support".into(),
        variables: BTreeMap::from([
            ("customer".to_string(), "Ada Lovelace".to_string()),
            ("plan".to_string(), "pro ✓ \"quoted\"".to_string()),
        ]),
        system_prompt: Some("You are brief.\nAnswer in one line.".into()),
        started_at_ms,
        ended_at_ms: None,
        end_reason: None,
        turns: 0,
        caller_audio_ms: 0,
        agent_audio_ms: 0,
    }
}

pub fn item(call_id: &str, item_id: i64, role: &str, text: &str) -> ItemRow {
    ItemRow {
        call_id: call_id.into(),
        item_id,
        turn_id: Some(item_id / 2 + 1),
        role: role.into(),
        text: text.into(),
        heard: None,
        source: "voice".into(),
        created_at_ms: 1_700_000_000_000 + item_id,
    }
}

pub fn event(call_id: &str, seq: i64) -> EventRow {
    EventRow {
        call_id: call_id.into(),
        seq,
        at_ms: 1_700_000_000_000 + seq,
        kind: "transcript".into(),
        data: serde_json::json!({ "seq": seq, "text": format!("event {seq}") }),
        stream_id: None,
    }
}

pub fn metrics(call_id: &str, turn_id: i64) -> TurnMetricsRow {
    TurnMetricsRow {
        call_id: call_id.into(),
        turn_id,
        metrics: serde_json::json!({
            "stt_ms": 101.5,
            "llm_first_token_ms": 240,
            "tts_first_audio_ms": null,
            "nested": { "list": [1, 2.25, "three"], "big": 9_007_199_254_740_993_u64 },
        }),
        at_ms: 1_700_000_000_500 + turn_id,
    }
}

pub fn writer(store: &Store, queue: usize) -> (StoreWriter, StoreMetrics, TaskTracker) {
    let metrics = StoreMetrics::default();
    let tracker = TaskTracker::new();
    let w = StoreWriter::spawn(store.clone(), queue, metrics.clone(), &tracker);
    (w, metrics, tracker)
}

/// Waits (at most `LONG`) for `cond`.
pub async fn eventually(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + LONG;
    while !cond() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "never happened: {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

// Not every test binary that shares this module runs every body.
mod bodies;
#[allow(unused_imports)]
pub use bodies::*;

mod history_bodies;
#[allow(unused_imports)]
pub use history_bodies::*;

mod writer_bodies;
#[allow(unused_imports)]
pub use writer_bodies::*;

//! SQLite, the default: one file (created with its folders), write-ahead logging so reads never
//! wait for the writer, and a busy timeout so a writer waits for another's lock instead of
//! failing at once. `secure_delete` is on, so deleted rows are overwritten with zeros rather
//! than left in free pages; after a deletion the log is checkpointed and truncated, so no old
//! copy of a deleted row stays in it either.

use std::path::PathBuf;
use std::str::FromStr;

use sqlx::migrate::Migrator;
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};

use super::erase::{self, AuditEntry, Deleted};
use super::error::redact_url;
use super::{sql, StoreError, StoreOptions, Write};

static MIGRATOR: Migrator = sqlx::migrate!("src/store/migrations/sqlite");

#[derive(Clone)]
pub(crate) struct SqliteStore {
    pub(crate) pool: SqlitePool,
    path: PathBuf,
}

impl SqliteStore {
    pub(crate) async fn connect(url: &str, opts: &StoreOptions) -> Result<Self, StoreError> {
        let options = SqliteConnectOptions::from_str(url)
            .map_err(|source| StoreError::InvalidUrl {
                url: redact_url(url),
                source,
            })?
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            // With WAL, NORMAL never corrupts the file; a power cut may lose the last commits.
            .synchronous(SqliteSynchronous::Normal)
            .busy_timeout(opts.busy_timeout)
            .pragma("secure_delete", "ON");
        let file = options.get_filename().to_path_buf();
        if let Some(dir) = file.parent().filter(|d| !d.as_os_str().is_empty()) {
            tokio::fs::create_dir_all(dir)
                .await
                .map_err(|source| StoreError::CreateDir {
                    path: file.clone(),
                    source,
                })?;
        }
        let path = std::path::absolute(&file).unwrap_or(file);
        let me = Self {
            pool: SqlitePoolOptions::new()
                .max_connections(opts.max_connections)
                .acquire_timeout(opts.acquire_timeout)
                .connect_lazy_with(options),
            path,
        };
        me.pool
            .acquire()
            .await
            .map_err(|source| StoreError::Connect {
                place: me.describe(),
                source,
            })?;
        MIGRATOR
            .run(&me.pool)
            .await
            .map_err(|source| StoreError::Migrate {
                place: me.describe(),
                source,
            })?;
        Ok(me)
    }

    pub(crate) fn describe(&self) -> String {
        format!("sqlite ({})", self.path.display())
    }

    /// One transaction that takes the write lock at its start (`BEGIN IMMEDIATE`), so it waits
    /// out another writer with the busy timeout rather than failing halfway.
    pub(crate) async fn write(&self, batch: &[Write]) -> Result<(), StoreError> {
        let mut tx = self
            .pool
            .begin_with("BEGIN IMMEDIATE")
            .await
            .map_err(StoreError::query("starting a write"))?;
        for w in batch {
            sql::apply::<sqlx::Sqlite>(&mut tx, w)
                .await
                .map_err(StoreError::query("writing"))?;
        }
        tx.commit()
            .await
            .map_err(StoreError::query("committing a write"))
    }

    /// Deletes the calls `ids` (and their rows) and writes `audit` in one transaction, then
    /// moves the zeroed pages from the write-ahead log into the file and empties the log.
    pub(crate) async fn delete(
        &self,
        ids: &[String],
        audit: Option<&AuditEntry>,
    ) -> Result<Deleted, StoreError> {
        let mut tx = self
            .pool
            .begin_with("BEGIN IMMEDIATE")
            .await
            .map_err(StoreError::query("starting a deletion"))?;
        let deleted = erase::delete_calls::<sqlx::Sqlite>(&mut tx, ids, audit)
            .await
            .map_err(StoreError::query("deleting calls"))?;
        tx.commit()
            .await
            .map_err(StoreError::query("committing a deletion"))?;
        // The rows are gone; a log that cannot be emptied now is by a later checkpoint.
        match sqlx::query_as::<_, (i64,)>("PRAGMA wal_checkpoint(TRUNCATE)")
            .fetch_one(&self.pool)
            .await
        {
            Ok((0,)) => {}
            Ok(_) => tracing::warn!("the log was busy and not emptied after a deletion"),
            Err(e) => tracing::warn!(error = %e, "cannot empty the log after a deletion"),
        }
        Ok(deleted)
    }
}

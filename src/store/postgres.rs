//! Postgres, for several nodes sharing one store. TLS (when the URL asks for it with `sslmode`)
//! is rustls with the webpki roots.

use std::str::FromStr;

use sqlx::migrate::Migrator;
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};

use super::erase::{self, AuditEntry, Deleted};
use super::error::redact_url;
use super::{sql, StoreError, StoreOptions, Write};

static MIGRATOR: Migrator = sqlx::migrate!("src/store/migrations/postgres");

#[derive(Clone)]
pub(crate) struct PgStore {
    pub(crate) pool: PgPool,
    /// `host:port/db`, or `socket-dir/db`: never the password.
    place: String,
}

impl PgStore {
    pub(crate) async fn connect(url: &str, opts: &StoreOptions) -> Result<Self, StoreError> {
        let mut options =
            PgConnectOptions::from_str(url).map_err(|source| StoreError::InvalidUrl {
                url: redact_url(url),
                source,
            })?;
        if options.get_application_name().is_none() {
            options = options.application_name("voxwire");
        }
        let db = options
            .get_database()
            .unwrap_or(options.get_username())
            .to_string();
        let place = match options.get_socket() {
            Some(dir) => format!("{}/{db}", dir.display()),
            None => format!("{}:{}/{db}", options.get_host(), options.get_port()),
        };
        let me = Self {
            pool: PgPoolOptions::new()
                .max_connections(opts.max_connections)
                .acquire_timeout(opts.acquire_timeout)
                .connect_lazy_with(options),
            place,
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
        format!("postgres ({})", self.place)
    }

    pub(crate) async fn write(&self, batch: &[Write]) -> Result<(), StoreError> {
        let mut tx = self
            .pool
            .begin()
            .await
            .map_err(StoreError::query("starting a write"))?;
        for w in batch {
            sql::apply::<sqlx::Postgres>(&mut tx, w)
                .await
                .map_err(StoreError::query("writing"))?;
        }
        tx.commit()
            .await
            .map_err(StoreError::query("committing a write"))
    }

    /// Deletes the calls `ids` (and their rows) and writes `audit` in one transaction, then
    /// vacuums the tables so the space of the deleted rows is freed (Postgres does not zero it
    /// until the pages are reused; `VACUUM FULL` rewrites the tables).
    pub(crate) async fn delete(
        &self,
        ids: &[String],
        audit: Option<&AuditEntry>,
    ) -> Result<Deleted, StoreError> {
        let mut tx = self
            .pool
            .begin()
            .await
            .map_err(StoreError::query("starting a deletion"))?;
        let deleted = erase::delete_calls::<sqlx::Postgres>(&mut tx, ids, audit)
            .await
            .map_err(StoreError::query("deleting calls"))?;
        tx.commit()
            .await
            .map_err(StoreError::query("committing a deletion"))?;
        if deleted.calls + deleted.items + deleted.metrics + deleted.events > 0 {
            // The rows are gone; a vacuum that fails is left to autovacuum.
            if let Err(e) = sqlx::query("VACUUM calls, call_items, call_turn_metrics, call_events")
                .execute(&self.pool)
                .await
            {
                tracing::warn!(error = %e, "cannot vacuum after a deletion");
            }
        }
        Ok(deleted)
    }
}

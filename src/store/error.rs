//! `StoreError`, and which failures are worth retrying: the database being away or busy is;
//! a statement it refuses is not.

use std::path::PathBuf;

/// A store failure. Messages name the database by [`super::Store::describe`] or a redacted URL,
/// never with its password.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The URL names no supported database. `url` is redacted.
    #[error(
        "unsupported database URL {url:?}: expected sqlite://PATH, postgres://USER@HOST/DB or memory"
    )]
    BadUrl { url: String },
    /// The URL has the right scheme but cannot be read. `url` is redacted.
    #[error("invalid database URL {url:?}: {source}")]
    InvalidUrl {
        url: String,
        #[source]
        source: sqlx::Error,
    },
    #[error("cannot create the directory of {path}: {source}")]
    CreateDir {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot open {place}: {source}")]
    Connect {
        place: String,
        #[source]
        source: sqlx::Error,
    },
    #[error("cannot bring the tables of {place} up to date: {source}")]
    Migrate {
        place: String,
        #[source]
        source: sqlx::migrate::MigrateError,
    },
    /// A statement failed; `op` says what it was doing (e.g. `writing a batch`).
    #[error("{op}: {source}")]
    Query {
        op: &'static str,
        #[source]
        source: sqlx::Error,
    },
    /// A failure made up by the in-memory store's tests.
    #[cfg(test)]
    #[error("injected fault (retryable: {retryable})")]
    Injected { retryable: bool },
}

impl StoreError {
    pub(crate) fn query(op: &'static str) -> impl FnOnce(sqlx::Error) -> StoreError {
        move |source| StoreError::Query { op, source }
    }

    /// Whether the same operation may succeed later unchanged: the database was unreachable,
    /// closed the connection, was busy or locked, or ran out of something an operator can free.
    /// A refused statement, a constraint or a bad URL is not retryable.
    pub fn retryable(&self) -> bool {
        match self {
            StoreError::Connect { source, .. } | StoreError::Query { source, .. } => {
                sqlx_retryable(source)
            }
            StoreError::Migrate { source, .. } => match source {
                sqlx::migrate::MigrateError::Execute(e) => sqlx_retryable(e),
                _ => false,
            },
            StoreError::BadUrl { .. }
            | StoreError::InvalidUrl { .. }
            | StoreError::CreateDir { .. } => false,
            #[cfg(test)]
            StoreError::Injected { retryable } => *retryable,
        }
    }
}

fn sqlx_retryable(e: &sqlx::Error) -> bool {
    use sqlx::Error as E;
    match e {
        E::Io(_) | E::Tls(_) | E::PoolTimedOut | E::WorkerCrashed | E::Protocol(_) => true,
        E::Database(db) if !matches!(db.kind(), sqlx::error::ErrorKind::Other) => false,
        E::Database(db) => {
            if let Some(pg) = db.try_downcast_ref::<sqlx::postgres::PgDatabaseError>() {
                sqlstate_retryable(pg.code())
            } else if db.try_downcast_ref::<sqlx::sqlite::SqliteError>().is_some() {
                db.code()
                    .and_then(|c| c.parse().ok())
                    .is_some_and(sqlite_code_retryable)
            } else {
                false
            }
        }
        _ => false,
    }
}

/// SQLite's extended result code; the primary code is its low byte. BUSY, LOCKED, READONLY
/// (permissions changed under us), IOERR, FULL and CANTOPEN can pass.
fn sqlite_code_retryable(code: i32) -> bool {
    matches!(code & 0xff, 5 | 6 | 8 | 10 | 13 | 14)
}

/// Postgres SQLSTATE classes 08 (connection exception), 53 (insufficient resources), 57P0x
/// (shutting down or starting up); serialization failure, deadlock, lock not available.
fn sqlstate_retryable(code: &str) -> bool {
    code.starts_with("08")
        || code.starts_with("53")
        || code.starts_with("57P0")
        || matches!(code, "40001" | "40P01" | "55P03")
}

/// The URL with its password (if any) replaced, fit for messages and logs.
pub fn redact_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_string();
    };
    // The authority ends at the first `/`, `?` or `#`; its user information at the last `@`.
    let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (authority, path) = rest.split_at(end);
    match authority.rsplit_once('@') {
        Some((userinfo, host)) => {
            let user = userinfo.split(':').next().unwrap_or_default();
            let masked = if userinfo.contains(':') {
                format!("{user}:<redacted>")
            } else {
                user.to_string()
            };
            format!("{scheme}://{masked}@{host}{path}")
        }
        None => url.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_are_redacted() {
        assert_eq!(
            redact_url("postgres://app:s3cret@db.local:5433/voxwire?sslmode=require"),
            "postgres://app:<redacted>@db.local:5433/voxwire?sslmode=require"
        );
        // An unencoded `@` in the password still leaves nothing of it.
        assert_eq!(
            redact_url("postgres://app:p@ss@db/x"),
            "postgres://app:<redacted>@db/x"
        );
        assert_eq!(redact_url("postgres://app@db/x"), "postgres://app@db/x");
        assert_eq!(redact_url("sqlite:///var/x.db"), "sqlite:///var/x.db");
        assert_eq!(redact_url("memory"), "memory");
    }

    #[test]
    fn retryable_codes() {
        assert!(sqlite_code_retryable(5)); // SQLITE_BUSY
        assert!(sqlite_code_retryable(517)); // SQLITE_BUSY_SNAPSHOT
        assert!(sqlite_code_retryable(262)); // SQLITE_LOCKED_SHAREDCACHE
        assert!(!sqlite_code_retryable(1)); // SQLITE_ERROR: no such table
        assert!(!sqlite_code_retryable(2067)); // SQLITE_CONSTRAINT_UNIQUE
        assert!(sqlstate_retryable("57P01")); // admin shutdown
        assert!(sqlstate_retryable("08006")); // connection failure
        assert!(sqlstate_retryable("53300")); // too many connections
        assert!(!sqlstate_retryable("42P01")); // undefined table
        assert!(!sqlstate_retryable("23505")); // unique violation
        let refused = std::io::Error::from(std::io::ErrorKind::ConnectionRefused);
        assert!(sqlx_retryable(&sqlx::Error::Io(refused)));
        assert!(sqlx_retryable(&sqlx::Error::PoolTimedOut));
        assert!(!sqlx_retryable(&sqlx::Error::RowNotFound));
    }
}

//! Connecting to the database (SQLite or Postgres) and migrating it.

use std::time::Duration;

use sea_orm::sqlx::sqlite::{SqliteJournalMode, SqliteSynchronous};
use sea_orm::{ConnectOptions, Database, DatabaseConnection};
use sea_orm_migration::MigratorTrait;
use troupe_migration::Migrator;

/// The URL without its password, for messages and logs.
pub fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            let creds = &url[scheme + 3..at];
            match creds.split_once(':') {
                Some((user, _)) => format!("{}{}:***{}", &url[..scheme + 3], user, &url[at..]),
                None => url.to_string(),
            }
        }
        _ => url.to_string(),
    }
}

/// How hard SQLite works to keep a commit (`database.sqlite_synchronous`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SqliteDurability {
    /// fsync at every commit: an ack survives power loss.
    #[default]
    Full,
    /// fsync at WAL checkpoints: an ack survives a crash of the process, not of the machine.
    Normal,
}

#[derive(Debug, thiserror::Error)]
pub enum DbError {
    #[error("database {url} unreachable: {source}")]
    Connect { url: String, source: sea_orm::DbErr },
    #[error("migrating database {url} failed: {source}")]
    Migrate { url: String, source: sea_orm::DbErr },
    /// The data needs the operator first (e.g. usernames differing only in case).
    #[error("database {url} cannot be upgraded: {message}")]
    Refused { url: String, message: String },
}

/// Connects; for SQLite: WAL, and `synchronous` as configured: `full` (the
/// default) makes an acked message survive power loss as well as a killed
/// process; `normal` survives a killed process and skips the fsync per commit.
pub async fn connect(url: &str, durable: SqliteDurability) -> Result<DatabaseConnection, DbError> {
    let mut options = ConnectOptions::new(url.to_string());
    options
        .sqlx_logging(false)
        .connect_timeout(Duration::from_secs(5))
        .acquire_timeout(Duration::from_secs(10))
        .map_sqlx_sqlite_opts(move |o| {
            o.journal_mode(SqliteJournalMode::Wal)
                .synchronous(match durable {
                    SqliteDurability::Full => SqliteSynchronous::Full,
                    SqliteDurability::Normal => SqliteSynchronous::Normal,
                })
                .busy_timeout(Duration::from_secs(10))
                // No checkpoint inside a commit (it stalls that commit for tens
                // of ms); the node checkpoints in the background instead.
                .pragma("wal_autocheckpoint", "0")
        });
    if url.starts_with("sqlite:") {
        // One writer at a time in SQLite anyway; a few readers beside it.
        options.max_connections(4);
    }
    Database::connect(options)
        .await
        .map_err(|source| DbError::Connect {
            url: redact(url),
            source,
        })
}

/// Runs the migrations. On Postgres, nodes (and `troupe migrate`) starting
/// together take turns under an advisory lock, so a migration never races
/// another and no error is retried as if it had: each is reported once.
pub async fn migrate(db: &DatabaseConnection, url: &str) -> Result<(), DbError> {
    let failed = |source| DbError::Migrate {
        url: redact(url),
        source,
    };
    // Held by one pooled connection of its own while the others migrate.
    let lock = match db.get_database_backend() {
        sea_orm::DatabaseBackend::Postgres => {
            let mut conn = db
                .get_postgres_connection_pool()
                .acquire()
                .await
                .map_err(|e| failed(sea_orm::DbErr::Custom(e.to_string())))?;
            sea_orm::sqlx::query("SELECT pg_advisory_lock($1)")
                .bind(MIGRATION_LOCK)
                .execute(&mut *conn)
                .await
                .map_err(|e| failed(sea_orm::DbErr::Custom(e.to_string())))?;
            Some(conn)
        }
        _ => None,
    };
    let result = Migrator::up(db, None).await;
    if let Some(mut conn) = lock {
        // Closing the connection would release it too; unlock so the pool keeps it.
        let _ = sea_orm::sqlx::query("SELECT pg_advisory_unlock($1)")
            .bind(MIGRATION_LOCK)
            .execute(&mut *conn)
            .await;
    }
    match result {
        Ok(()) => Ok(()),
        // Nothing changed, and a retry would find the same rows.
        Err(sea_orm::DbErr::Migration(message))
            if troupe_migration::is_refusal_message(&message) =>
        {
            Err(DbError::Refused {
                url: redact(url),
                message,
            })
        }
        Err(source) => Err(failed(source)),
    }
}

/// The advisory lock key of the migrations ("troupe" in ASCII).
const MIGRATION_LOCK: i64 = 0x74726f757065;

#[cfg(test)]
mod tests {
    #[test]
    fn redacts_passwords() {
        assert_eq!(
            super::redact("postgres://troupe:s3cret@db:5432/troupe"),
            "postgres://troupe:***@db:5432/troupe"
        );
        assert_eq!(
            super::redact("sqlite://x.db?mode=rwc"),
            "sqlite://x.db?mode=rwc"
        );
    }
}

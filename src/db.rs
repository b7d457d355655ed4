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

pub async fn migrate(db: &DatabaseConnection, url: &str) -> Result<(), DbError> {
    // Nodes of a cluster starting together migrate the same fresh database at
    // once; the losers of that race find the schema there on a retry.
    let mut attempt = 0;
    loop {
        match Migrator::up(db, None).await {
            Ok(()) => return Ok(()),
            // Nothing changed, and a retry would find the same rows.
            Err(sea_orm::DbErr::Migration(message))
                if troupe_migration::is_refusal_message(&message) =>
            {
                return Err(DbError::Refused {
                    url: redact(url),
                    message,
                })
            }
            Err(source) if attempt < 5 => {
                attempt += 1;
                tracing::warn!(error = %source, attempt, "migration raced another node; retrying");
                let jitter = rand::random::<u64>() % 300;
                tokio::time::sleep(std::time::Duration::from_millis(200 * attempt + jitter)).await;
            }
            Err(source) => {
                return Err(DbError::Migrate {
                    url: redact(url),
                    source,
                })
            }
        }
    }
}

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

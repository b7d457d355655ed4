//! Messages that live: the state of each message behind the log (kind of
//! record, event, version, edit time, deleted, reply link and count, pinned,
//! attachments), its earlier bodies (`message_versions`) and its reactions
//! (`message_reactions`); and the new fields of log records (the embedded
//! default's log), so a record with a reply, attachments or an event
//! survives the log like a message. Old rows read as plain messages.

use sea_orm_migration::prelude::*;
use sea_orm_migration::sea_orm::{ConnectionTrait, DbBackend};

#[derive(DeriveMigrationName)]
pub struct Migration;

/// The same on both databases (one column per ALTER: SQLite's rule).
const UP: &[&str] = &[
    "ALTER TABLE messages ADD COLUMN kind TEXT NOT NULL DEFAULT 'message'",
    "ALTER TABLE messages ADD COLUMN event TEXT NULL",
    "ALTER TABLE messages ADD COLUMN version INTEGER NOT NULL DEFAULT 1",
    "ALTER TABLE messages ADD COLUMN edited_at BIGINT NULL",
    "ALTER TABLE messages ADD COLUMN deleted BOOLEAN NOT NULL DEFAULT FALSE",
    "ALTER TABLE messages ADD COLUMN reply_to BIGINT NULL",
    "ALTER TABLE messages ADD COLUMN reply_count BIGINT NOT NULL DEFAULT 0",
    "ALTER TABLE messages ADD COLUMN pinned BOOLEAN NOT NULL DEFAULT FALSE",
    "ALTER TABLE messages ADD COLUMN attachments TEXT NOT NULL DEFAULT '[]'",
    "CREATE INDEX IF NOT EXISTS idx_messages_reply_to ON messages (room, reply_to)",
    "CREATE INDEX IF NOT EXISTS idx_messages_pinned ON messages (room, pinned)",
    "ALTER TABLE log_records ADD COLUMN reply_to BIGINT NULL",
    "ALTER TABLE log_records ADD COLUMN attachments TEXT NOT NULL DEFAULT '[]'",
    "ALTER TABLE log_records ADD COLUMN event TEXT NULL",
    "CREATE TABLE IF NOT EXISTS message_versions (
        room TEXT NOT NULL,
        seq BIGINT NOT NULL,
        version INTEGER NOT NULL,
        body TEXT NOT NULL,
        ts BIGINT NOT NULL,
        PRIMARY KEY (room, seq, version)
    )",
    "CREATE TABLE IF NOT EXISTS message_reactions (
        room TEXT NOT NULL,
        seq BIGINT NOT NULL,
        emoji TEXT NOT NULL,
        username TEXT NOT NULL,
        PRIMARY KEY (room, seq, emoji, username)
    )",
];

const DOWN: &[&str] = &[
    "DROP TABLE IF EXISTS message_reactions",
    "DROP TABLE IF EXISTS message_versions",
    "DROP INDEX IF EXISTS idx_messages_pinned",
    "DROP INDEX IF EXISTS idx_messages_reply_to",
    "ALTER TABLE log_records DROP COLUMN event",
    "ALTER TABLE log_records DROP COLUMN attachments",
    "ALTER TABLE log_records DROP COLUMN reply_to",
    "ALTER TABLE messages DROP COLUMN attachments",
    "ALTER TABLE messages DROP COLUMN pinned",
    "ALTER TABLE messages DROP COLUMN reply_count",
    "ALTER TABLE messages DROP COLUMN reply_to",
    "ALTER TABLE messages DROP COLUMN deleted",
    "ALTER TABLE messages DROP COLUMN edited_at",
    "ALTER TABLE messages DROP COLUMN version",
    "ALTER TABLE messages DROP COLUMN event",
    "ALTER TABLE messages DROP COLUMN kind",
];

async fn run(manager: &SchemaManager<'_>, statements: &[&str]) -> Result<(), DbErr> {
    let db = manager.get_connection();
    for sql in statements {
        db.execute_unprepared(sql).await?;
    }
    Ok(())
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        match manager.get_database_backend() {
            DbBackend::Postgres | DbBackend::Sqlite => run(manager, UP).await,
            other => Err(DbErr::Migration(format!(
                "message life: unsupported database {other:?}"
            ))),
        }
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        run(manager, DOWN).await
    }
}

//! The full-text search index of message bodies: table `search_docs`
//! (room, seq, sender, body, ts), one row per message, filled from
//! `messages` here and kept with history from then on.
//!
//! - Postgres: a stored `tsvector` column (`to_tsvector('simple', body)`:
//!   lowercased words, no stemming or stop words, so every language
//!   searches alike) under a GIN index, and an index on `ts` for newest
//!   first over common words.
//! - SQLite: an FTS5 table `search_fts` over `search_docs.body` (external
//!   content: the text is stored once), kept in step by triggers; the
//!   `unicode61` tokenizer with combining marks as part of words and
//!   diacritics kept, which is what Postgres' `simple` does too.

use sea_orm_migration::prelude::*;
use sea_orm_migration::sea_orm::{ConnectionTrait, DbBackend};

#[derive(DeriveMigrationName)]
pub struct Migration;

const POSTGRES_UP: &[&str] = &[
    "CREATE TABLE IF NOT EXISTS search_docs (
        room TEXT NOT NULL,
        seq BIGINT NOT NULL,
        sender TEXT NOT NULL,
        body TEXT NOT NULL,
        ts BIGINT NOT NULL,
        doc tsvector GENERATED ALWAYS AS (to_tsvector('simple'::regconfig, body)) STORED,
        PRIMARY KEY (room, seq)
    )",
    // Without the pending list (fastupdate), whose linear scan every query
    // pays until a vacuum merges it: a write costs a little more instead.
    "CREATE INDEX IF NOT EXISTS idx_search_docs_doc ON search_docs USING GIN (doc) \
     WITH (fastupdate = off)",
    // Newest first over a common word: walk back in time and stop at a page,
    // rather than sort every match (the planner picks one or the other).
    "CREATE INDEX IF NOT EXISTS idx_search_docs_ts ON search_docs (ts)",
    "INSERT INTO search_docs (room, seq, sender, body, ts)
        SELECT room, seq, sender, body, ts FROM messages
        ON CONFLICT (room, seq) DO NOTHING",
];

const POSTGRES_DOWN: &[&str] = &["DROP TABLE IF EXISTS search_docs"];

const SQLITE_UP: &[&str] = &[
    "CREATE TABLE IF NOT EXISTS search_docs (
        id INTEGER PRIMARY KEY,
        room TEXT NOT NULL,
        seq INTEGER NOT NULL,
        sender TEXT NOT NULL,
        body TEXT NOT NULL,
        ts INTEGER NOT NULL,
        UNIQUE (room, seq)
    )",
    "CREATE VIRTUAL TABLE IF NOT EXISTS search_fts USING fts5(
        body,
        content = 'search_docs',
        content_rowid = 'id',
        tokenize = \"unicode61 remove_diacritics 0 categories 'L* N* Co M*'\"
    )",
    "INSERT INTO search_docs (room, seq, sender, body, ts)
        SELECT room, seq, sender, body, ts FROM messages WHERE true
        ON CONFLICT (room, seq) DO NOTHING",
    // The backfill in one pass, before the triggers exist.
    "INSERT INTO search_fts (search_fts) VALUES ('rebuild')",
    "CREATE TRIGGER IF NOT EXISTS search_docs_ai AFTER INSERT ON search_docs BEGIN
        INSERT INTO search_fts (rowid, body) VALUES (new.id, new.body);
    END",
    "CREATE TRIGGER IF NOT EXISTS search_docs_ad AFTER DELETE ON search_docs BEGIN
        INSERT INTO search_fts (search_fts, rowid, body) VALUES ('delete', old.id, old.body);
    END",
    "CREATE TRIGGER IF NOT EXISTS search_docs_au AFTER UPDATE OF body ON search_docs BEGIN
        INSERT INTO search_fts (search_fts, rowid, body) VALUES ('delete', old.id, old.body);
        INSERT INTO search_fts (rowid, body) VALUES (new.id, new.body);
    END",
];

const SQLITE_DOWN: &[&str] = &[
    "DROP TRIGGER IF EXISTS search_docs_au",
    "DROP TRIGGER IF EXISTS search_docs_ad",
    "DROP TRIGGER IF EXISTS search_docs_ai",
    "DROP TABLE IF EXISTS search_fts",
    "DROP TABLE IF EXISTS search_docs",
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
            DbBackend::Postgres => run(manager, POSTGRES_UP).await,
            DbBackend::Sqlite => run(manager, SQLITE_UP).await,
            other => Err(DbErr::Migration(format!(
                "search index: unsupported database {other:?}"
            ))),
        }
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        match manager.get_database_backend() {
            DbBackend::Postgres => run(manager, POSTGRES_DOWN).await,
            _ => run(manager, SQLITE_DOWN).await,
        }
    }
}

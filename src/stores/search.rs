//! The search index on SQL (`search_docs`, see the migration
//! `m20261204_000002_search`): Postgres full-text search over a GIN-indexed
//! `tsvector`, SQLite FTS5. History writes index their messages in their own
//! transaction ([`index_rows`], called from `insert_history`); edits and
//! deletes call [`update_doc`] / [`remove_doc`] (or the [`SearchIndex`]
//! methods) with whatever connection or transaction they write with.

use std::collections::HashSet;

use async_trait::async_trait;
use sea_orm::{ActiveValue, ConnectionTrait, DbBackend, DbErr, Statement, Value};
use troupe_actors::frames::ChatMessage;
use troupe_actors::store::search::{fts5_query, Cursor, SearchHit, SearchIndex, SearchQuery};
use troupe_actors::store::StoreResult;
use troupe_entity::message;

use super::sql::{unavailable, SqlStore};

/// Rows per INSERT: 5 values each, well under SQLite's 32,766 parameters.
const DOCS_PER_STATEMENT: usize = 2_000;

/// One SQL statement with its values, numbered for the backend (`$1`... on
/// Postgres, `?` on SQLite).
struct Sql {
    backend: DbBackend,
    text: String,
    values: Vec<Value>,
}

impl Sql {
    fn new(backend: DbBackend, text: &str) -> Self {
        Sql {
            backend,
            text: text.to_string(),
            values: Vec::new(),
        }
    }

    /// Appends `text`.
    fn push(&mut self, text: &str) -> &mut Self {
        self.text.push_str(text);
        self
    }

    /// Appends a placeholder bound to `value`.
    fn bind(&mut self, value: impl Into<Value>) -> &mut Self {
        self.values.push(value.into());
        match self.backend {
            DbBackend::Postgres => {
                let n = self.values.len();
                self.text.push_str(&format!("${n}"));
            }
            _ => self.text.push('?'),
        }
        self
    }

    fn statement(self) -> Statement {
        Statement::from_sql_and_values(self.backend, self.text, self.values)
    }
}

fn value<T>(v: &ActiveValue<T>) -> Option<&T>
where
    T: Into<Value>,
{
    match v {
        ActiveValue::Set(v) | ActiveValue::Unchanged(v) => Some(v),
        ActiveValue::NotSet => None,
    }
}

/// Indexes history rows, inside the caller's transaction: a (room, seq)
/// already indexed keeps its body (an edit or a delete got there first).
pub(super) async fn index_rows<C: ConnectionTrait>(
    db: &C,
    rows: &[message::ActiveModel],
) -> Result<(), DbErr> {
    let mut seen = HashSet::new();
    let docs: Vec<(&String, i64, &String, &String, i64)> = rows
        .iter()
        .filter_map(|m| {
            Some((
                value(&m.room)?,
                *value(&m.seq)?,
                value(&m.sender)?,
                value(&m.body)?,
                *value(&m.ts)?,
            ))
        })
        // Postgres refuses to upsert one key twice in a statement.
        .filter(|(room, seq, ..)| seen.insert((*room, *seq)))
        .collect();
    for chunk in docs.chunks(DOCS_PER_STATEMENT) {
        let mut sql = Sql::new(
            db.get_database_backend(),
            "INSERT INTO search_docs (room, seq, sender, body, ts) VALUES ",
        );
        for (i, (room, seq, sender, body, ts)) in chunk.iter().enumerate() {
            if i > 0 {
                sql.push(", ");
            }
            sql.push("(")
                .bind((*room).clone())
                .push(", ")
                .bind(*seq)
                .push(", ")
                .bind((*sender).clone())
                .push(", ")
                .bind((*body).clone())
                .push(", ")
                .bind(*ts)
                .push(")");
        }
        sql.push(
            " ON CONFLICT (room, seq) DO UPDATE \
             SET sender = excluded.sender, ts = excluded.ts",
        );
        db.execute_raw(sql.statement()).await?;
    }
    Ok(())
}

/// Sets the indexed body of (room, seq). Order-free: before the message
/// itself is indexed, this leaves a row its indexing then completes.
async fn set_body<C: ConnectionTrait>(
    db: &C,
    room: &str,
    seq: u64,
    body: &str,
) -> Result<(), DbErr> {
    let mut sql = Sql::new(
        db.get_database_backend(),
        "INSERT INTO search_docs (room, seq, sender, body, ts) VALUES (",
    );
    sql.bind(room)
        .push(", ")
        .bind(seq as i64)
        .push(", '', ")
        .bind(body)
        .push(", 0) ON CONFLICT (room, seq) DO UPDATE SET body = excluded.body");
    db.execute_raw(sql.statement()).await?;
    Ok(())
}

/// An edit: the message is found by `body`'s words from now on, not by the old ones.
pub async fn update_doc<C: ConnectionTrait>(
    db: &C,
    room: &str,
    seq: u64,
    body: &str,
) -> Result<(), DbErr> {
    set_body(db, room, seq, body).await
}

/// A delete: the message is never found again (its row stays, empty, so a
/// late re-index of the original cannot bring the body back).
pub async fn remove_doc<C: ConnectionTrait>(db: &C, room: &str, seq: u64) -> Result<(), DbErr> {
    set_body(db, room, seq, "").await
}

/// A page of matches.
pub async fn search<C: ConnectionTrait>(
    db: &C,
    query: &SearchQuery,
) -> Result<Vec<SearchHit>, DbErr> {
    if query.rooms.is_empty() {
        return Ok(Vec::new());
    }
    let backend = db.get_database_backend();
    let mut sql = match backend {
        DbBackend::Postgres => {
            let mut sql = Sql::new(
                backend,
                "SELECT d.room, d.seq, d.sender, d.body, d.ts FROM search_docs d \
                 WHERE d.doc @@ plainto_tsquery('simple', ",
            );
            sql.bind(query.text.as_str()).push(")");
            sql
        }
        _ => {
            let fts = fts5_query(&query.text);
            if fts.is_empty() {
                return Ok(Vec::new());
            }
            let mut sql = Sql::new(
                backend,
                "SELECT d.room, d.seq, d.sender, d.body, d.ts \
                 FROM search_fts JOIN search_docs d ON d.id = search_fts.rowid \
                 WHERE search_fts MATCH ",
            );
            sql.bind(fts);
            sql
        }
    };
    sql.push(" AND d.room IN (");
    for (i, room) in query.rooms.iter().enumerate() {
        if i > 0 {
            sql.push(", ");
        }
        sql.bind(room.as_str());
    }
    sql.push(")");
    match &query.before {
        None => {}
        Some(Cursor::Seq(before)) => {
            sql.push(" AND d.seq < ")
                .bind((*before).min(i64::MAX as u64) as i64);
        }
        Some(Cursor::At { ts, room, seq }) => {
            sql.push(" AND (d.ts, d.room, d.seq) < (")
                .bind(*ts)
                .push(", ")
                .bind(room.as_str())
                .push(", ")
                .bind((*seq).min(i64::MAX as u64) as i64)
                .push(")");
        }
    }
    if query.by_seq {
        sql.push(" ORDER BY d.seq DESC");
    } else {
        sql.push(" ORDER BY d.ts DESC, d.room DESC, d.seq DESC");
    }
    sql.push(" LIMIT ").bind(query.limit as i64);
    let rows = db.query_all_raw(sql.statement()).await?;
    rows.into_iter()
        .map(|row| {
            Ok(SearchHit {
                room: row.try_get("", "room")?,
                seq: row.try_get::<i64>("", "seq")? as u64,
                from: row.try_get("", "sender")?,
                body: row.try_get("", "body")?,
                ts: row.try_get("", "ts")?,
            })
        })
        .collect()
}

#[async_trait]
impl SearchIndex for SqlStore {
    async fn index(&self, messages: &[ChatMessage]) -> StoreResult<()> {
        let rows: Vec<message::ActiveModel> = messages
            .iter()
            .map(|m| message::ActiveModel {
                room: ActiveValue::Set(m.room.clone()),
                seq: ActiveValue::Set(m.seq as i64),
                sender: ActiveValue::Set(m.from.clone()),
                body: ActiveValue::Set(m.body.clone()),
                ts: ActiveValue::Set(m.ts),
                ..Default::default()
            })
            .collect();
        let _turn = self.write_turn().await;
        index_rows(self.connection(), &rows)
            .await
            .map_err(unavailable)
    }

    async fn update(&self, room: &str, seq: u64, body: &str) -> StoreResult<()> {
        let _turn = self.write_turn().await;
        update_doc(self.connection(), room, seq, body)
            .await
            .map_err(unavailable)
    }

    async fn remove(&self, room: &str, seq: u64) -> StoreResult<()> {
        let _turn = self.write_turn().await;
        remove_doc(self.connection(), room, seq)
            .await
            .map_err(unavailable)
    }

    async fn search(&self, query: &SearchQuery) -> StoreResult<Vec<SearchHit>> {
        search(self.connection(), query).await.map_err(unavailable)
    }
}

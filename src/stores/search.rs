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
        index_rows(self.db(), &rows).await.map_err(unavailable)
    }

    async fn update(&self, room: &str, seq: u64, body: &str) -> StoreResult<()> {
        let _turn = self.write_turn().await;
        update_doc(self.db(), room, seq, body)
            .await
            .map_err(unavailable)
    }

    async fn remove(&self, room: &str, seq: u64) -> StoreResult<()> {
        let _turn = self.write_turn().await;
        remove_doc(self.db(), room, seq).await.map_err(unavailable)
    }

    async fn remove_room(&self, room: &str) -> StoreResult<()> {
        let _turn = self.write_turn().await;
        let mut sql = Sql::new(
            self.db().get_database_backend(),
            "DELETE FROM search_docs WHERE room = ",
        );
        sql.bind(room);
        self.db()
            .execute_raw(sql.statement())
            .await
            .map_err(unavailable)?;
        Ok(())
    }

    async fn search(&self, query: &SearchQuery) -> StoreResult<Vec<SearchHit>> {
        search(self.db(), query).await.map_err(unavailable)
    }
}

#[cfg(test)]
mod tests {
    //! The index on a real SQLite file, and on Postgres too when the suite
    //! runs on real stores (`TEST_STORES=real`, `TEST_POSTGRES`).

    use sea_orm::DatabaseConnection;
    use sea_orm_migration::MigratorTrait;
    use troupe_actors::store::History;
    use troupe_migration::Migrator;

    use super::*;

    /// Connected and migrated up to, not including, the search migration.
    async fn databases() -> Vec<(String, DatabaseConnection, Option<tempfile::TempDir>)> {
        let mut out = Vec::new();
        let dir = tempfile::tempdir().expect("a temp dir");
        let url = format!("sqlite://{}?mode=rwc", dir.path().join("t.db").display());
        out.push((url, Some(dir)));
        if std::env::var("TEST_STORES").as_deref() == Ok("real") {
            let pg = std::env::var("TEST_POSTGRES")
                .unwrap_or_else(|_| "postgres://root@127.0.0.1:5432".into());
            // `troupe_t...`: scripts/test.sh drops these at the end.
            static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
            let name = format!(
                "troupe_tsearch_{}_{}",
                std::process::id(),
                NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
            );
            let done = std::process::Command::new("psql")
                .arg(format!("{pg}/postgres"))
                .args(["-qc", &format!("CREATE DATABASE {name}")])
                .status()
                .expect("psql runs");
            assert!(done.success(), "creating {name} on {pg}");
            out.push((format!("{pg}/{name}"), None));
        }
        let mut dbs = Vec::new();
        for (url, dir) in out {
            let db = crate::db::connect(&url, crate::db::SqliteDurability::Full)
                .await
                .expect("connects");
            // Every migration before the search index's (later ones may follow it).
            let before_search = Migrator::migrations()
                .iter()
                .position(|m| m.name().contains("_search"))
                .expect("the search migration") as u32;
            Migrator::up(&db, Some(before_search))
                .await
                .expect("migrates");
            dbs.push((url, db, dir));
        }
        dbs
    }

    fn msg(room: &str, seq: u64, body: &str, ts: i64) -> ChatMessage {
        ChatMessage {
            room: room.into(),
            seq,
            from: format!("u{seq}"),
            body: body.into(),
            ts,
            client_id: format!("c{seq}"),
            ..Default::default()
        }
    }

    fn query(text: &str, rooms: &[&str], before: Option<&str>, limit: u64) -> SearchQuery {
        let rooms = rooms.iter().map(|r| r.to_string()).collect();
        SearchQuery::new(text, rooms, false, before, Some(limit)).expect("a valid query")
    }

    async fn find(store: &SqlStore, text: &str, rooms: &[&str]) -> Vec<(String, u64, String)> {
        store
            .search(&query(text, rooms, None, 100))
            .await
            .expect("searches")
            .into_iter()
            .map(|h| (h.room, h.seq, h.body))
            .collect()
    }

    #[tokio::test]
    async fn backfills_indexes_edits_and_deletes_on_each_database() {
        for (url, db, _dir) in databases().await {
            // A message from before the index existed...
            db.execute_unprepared(
                "INSERT INTO messages (room, seq, sender, client_id, body, ts) \
                 VALUES ('old', 1, 'ann', 'c', 'written before search existed', 5)",
            )
            .await
            .expect("an old message");
            Migrator::up(&db, None).await.expect("migrates");
            let store = SqlStore::new(db);
            // ...is found once the migration has run.
            assert_eq!(
                find(&store, "before SEARCH", &["old"]).await,
                [("old".into(), 1, "written before search existed".into())],
                "{url}"
            );

            store
                .write(&[
                    msg("a", 1, "the quick brown fox", 10),
                    msg("a", 2, "Größe नमस्ते दुनिया", 20),
                    msg("b", 1, "quick thinking", 30),
                ])
                .await
                .expect("history");
            let found = find(&store, "quick", &["a", "b"]).await;
            assert_eq!(found.len(), 2, "{url}: {found:?}");
            assert_eq!((found[0].0.as_str(), found[0].1), ("b", 1), "{url}");
            assert_eq!(find(&store, "größe", &["a"]).await.len(), 1, "{url}");
            assert_eq!(find(&store, "दुनिया", &["a"]).await.len(), 1, "{url}");
            assert!(find(&store, "quick", &["c"]).await.is_empty(), "{url}");
            // Query syntax of either backend is just text.
            for q in [
                "\"quick",
                "quick OR fox*",
                "NEAR(quick fox)",
                "body:quick",
                "-fox",
                "quick & !fox | (x",
            ] {
                store
                    .search(&query(q, &["a"], None, 5))
                    .await
                    .unwrap_or_else(|e| panic!("{url}: {q}: {e}"));
            }

            // An edit: found by its new words, not by its old ones.
            store
                .update("a", 1, "a slow green turtle")
                .await
                .expect("update");
            assert!(find(&store, "fox", &["a"]).await.is_empty(), "{url}");
            let hits = store
                .search(&query("turtle", &["a"], None, 5))
                .await
                .unwrap();
            assert_eq!(hits.len(), 1, "{url}");
            assert_eq!((hits[0].from.as_str(), hits[0].ts), ("u1", 10), "{url}");
            // History written again (a retry, a restored room) keeps the edit.
            store
                .write(&[msg("a", 1, "the quick brown fox", 10)])
                .await
                .unwrap();
            assert!(find(&store, "fox", &["a"]).await.is_empty(), "{url}");
            assert_eq!(find(&store, "turtle", &["a"]).await.len(), 1, "{url}");

            // A delete: never found again, not even after a re-write.
            store.remove("a", 1).await.expect("remove");
            store
                .write(&[msg("a", 1, "the quick brown fox", 10)])
                .await
                .unwrap();
            assert!(find(&store, "turtle", &["a"]).await.is_empty(), "{url}");
            assert!(find(&store, "fox", &["a"]).await.is_empty(), "{url}");

            // An edit that reaches the index before its message does.
            store.update("a", 9, "edited early").await.unwrap();
            store
                .write(&[msg("a", 9, "original text", 90)])
                .await
                .unwrap();
            let hits = store
                .search(&query("early", &["a"], None, 5))
                .await
                .unwrap();
            assert_eq!(hits.len(), 1, "{url}");
            assert_eq!((hits[0].from.as_str(), hits[0].ts), ("u9", 90), "{url}");
            assert!(find(&store, "original", &["a"]).await.is_empty(), "{url}");
        }
    }

    #[tokio::test]
    async fn pages_cover_every_match_once_even_with_equal_times() {
        for (url, db, _dir) in databases().await {
            Migrator::up(&db, None).await.expect("migrates");
            let store = SqlStore::new(db);
            let rooms = ["Zed", "alpha", "beta", "dm:ann:bob", "!broadcast"];
            let mut all = Vec::new();
            for (i, room) in rooms.iter().enumerate() {
                // Equal times across rooms, and within one.
                all.extend((1..=4).map(|seq| msg(room, seq, &format!("same words {i}"), 100)));
            }
            store.write(&all).await.expect("history");
            let mut seen = Vec::new();
            let mut before: Option<String> = None;
            loop {
                let q = query("same words", &rooms, before.as_deref(), 3);
                let page = store.search(&q).await.expect("a page");
                seen.extend(page.iter().map(|h| (h.room.clone(), h.seq)));
                match q.next_before(&page) {
                    Some(next) => before = Some(next),
                    None => break,
                }
            }
            let mut want: Vec<(String, u64)> =
                all.iter().map(|m| (m.room.clone(), m.seq)).collect();
            let mut got = seen.clone();
            got.sort();
            want.sort();
            assert_eq!(got, want, "{url}: every match once: {seen:?}");
        }
    }
}

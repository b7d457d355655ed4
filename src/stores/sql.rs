//! Directory, history, checkpoints, and the embedded default's message log,
//! on SQLite or Postgres through sea-orm.

use async_trait::async_trait;
use sea_orm::sea_query::{Alias, Expr, Func, OnConflict};
use sea_orm::{
    ActiveValue::{NotSet, Set},
    ColumnTrait, ConnectionTrait, DatabaseConnection, DbBackend, DbErr, EntityTrait, QueryFilter,
    QueryOrder, QuerySelect, SqlErr, Statement, TransactionTrait,
};
use troupe_actors::frames::{ChatMessage, HistoryQuery};
use troupe_actors::life::MessageView;
use troupe_actors::limits::now_ms;
use troupe_actors::metrics;
use troupe_actors::roles::Role;
use troupe_actors::store::{
    first_role, Checkpoint, CheckpointStore, Directory, History, LeaseStore, LogPosition,
    LogRecord, MemberRecord, MessageLog, RoomRecord, StoreError, StoreResult, UserRecord,
};
use troupe_entity::{checkpoint, log_record, membership, message, room, user};

use super::sqlite_writer::{is_sqlite, SqliteWriter};

/// The sea-orm stores; cheap to clone (the connection is a pool).
#[derive(Clone)]
pub struct SqlStore {
    db: DatabaseConnection,
    /// On SQLite: the one way writes go (see `sqlite_writer`).
    sqlite: Option<SqliteWriter>,
}

impl SqlStore {
    pub fn new(db: DatabaseConnection) -> Self {
        let sqlite = is_sqlite(&db).then(|| SqliteWriter::start(db.clone()));
        Self { db, sqlite }
    }

    /// Taken around every write on SQLite; nothing on Postgres.
    pub(crate) async fn write_turn(&self) -> Option<tokio::sync::MutexGuard<'_, ()>> {
        match &self.sqlite {
            Some(writer) => Some(writer.lock().await),
            None => None,
        }
    }

    /// The node holding `room`'s lease (None: nobody, or it was released).
    async fn lease_owner(&self, room: &str) -> StoreResult<Option<String>> {
        let sql = "SELECT owner FROM room_leases WHERE room = $1";
        let row = self
            .db
            .query_one_raw(statement(&self.db, sql, vec![room.into()]))
            .await
            .map_err(unavailable)?;
        match row {
            Some(row) => row.try_get("", "owner").map_err(unavailable),
            None => Ok(None),
        }
    }

    /// The connection, for tables outside the store traits (attachments, search).
    pub(crate) fn db(&self) -> &DatabaseConnection {
        &self.db
    }

    /// A trivial query: does the database answer?
    pub async fn ping(&self) -> StoreResult<()> {
        self.db.ping().await.map_err(unavailable)
    }
}

pub(super) fn unavailable(e: DbErr) -> StoreError {
    metrics::STORE_ERRORS_SQL.inc();
    StoreError::Unavailable {
        store: "database",
        message: e.to_string(),
    }
}

/// An error of the message log (the `log_records` table).
fn log_unavailable(e: DbErr) -> StoreError {
    metrics::STORE_ERRORS_LOG.inc();
    StoreError::Unavailable {
        store: "database",
        message: e.to_string(),
    }
}

fn is_unique_violation(e: &DbErr) -> bool {
    matches!(e.sql_err(), Some(SqlErr::UniqueConstraintViolation(_)))
}

use super::message_life::{self, to_message};

fn membership_row(room: &str, user: &str, role: Role) -> membership::ActiveModel {
    membership::ActiveModel {
        room: Set(room.to_string()),
        username: Set(user.to_string()),
        read_seq: Set(0),
        joined_at: Set(now_ms()),
        role: Set(role.as_str().to_string()),
    }
}

#[async_trait]
impl Directory for SqlStore {
    async fn create_user(&self, username: &str, password_hash: &str) -> StoreResult<UserRecord> {
        let _turn = self.write_turn().await;
        let row = user::ActiveModel {
            id: NotSet,
            username: Set(username.to_string()),
            password_hash: Set(password_hash.to_string()),
            created_at: Set(now_ms()),
        };
        let inserted = user::Entity::insert(row)
            .exec_with_returning(&self.db)
            .await
            .map_err(|e| {
                if is_unique_violation(&e) {
                    StoreError::Conflict(username.to_string())
                } else {
                    unavailable(e)
                }
            })?;
        Ok(UserRecord {
            id: inserted.id,
            username: inserted.username,
            password_hash: inserted.password_hash,
            created_at: inserted.created_at,
        })
    }

    async fn find_user(&self, username: &str) -> StoreResult<Option<UserRecord>> {
        // Case-insensitive, the way the unique index on lower(username)
        // compares (and uses it): usernames are ASCII.
        let lowered = Func::lower(Expr::col((user::Entity, user::Column::Username)));
        let found = user::Entity::find()
            .filter(sea_orm::sea_query::ExprTrait::eq(
                lowered,
                username.to_ascii_lowercase(),
            ))
            .one(&self.db)
            .await
            .map_err(unavailable)?;
        Ok(found.map(|u| UserRecord {
            id: u.id,
            username: u.username,
            password_hash: u.password_hash,
            created_at: u.created_at,
        }))
    }

    async fn create_room(&self, record: &RoomRecord, members: &[String]) -> StoreResult<()> {
        let _turn = self.write_turn().await;
        let txn = self.db.begin().await.map_err(unavailable)?;
        let row = room::ActiveModel {
            name: Set(record.name.clone()),
            private: Set(record.private),
            created_by: Set(record.created_by.clone()),
            created_at: Set(record.created_at),
            topic: Set(record.topic.clone()),
        };
        room::Entity::insert(row)
            .exec_without_returning(&txn)
            .await
            .map_err(|e| {
                if is_unique_violation(&e) {
                    StoreError::Conflict(record.name.clone())
                } else {
                    unavailable(e)
                }
            })?;
        if !members.is_empty() {
            membership::Entity::insert_many(
                members
                    .iter()
                    .map(|u| membership_row(&record.name, u, first_role(record, u))),
            )
            .exec_without_returning(&txn)
            .await
            .map_err(unavailable)?;
        }
        txn.commit().await.map_err(unavailable)
    }

    async fn find_room(&self, name: &str) -> StoreResult<Option<RoomRecord>> {
        let found = room::Entity::find_by_id(name.to_string())
            .one(&self.db)
            .await
            .map_err(unavailable)?;
        Ok(found.map(|r| RoomRecord {
            name: r.name,
            private: r.private,
            created_by: r.created_by,
            created_at: r.created_at,
            topic: r.topic,
        }))
    }

    async fn members(&self, room: &str) -> StoreResult<Vec<MemberRecord>> {
        let rows = membership::Entity::find()
            .filter(membership::Column::Room.eq(room))
            .all(&self.db)
            .await
            .map_err(unavailable)?;
        Ok(rows
            .into_iter()
            .map(|m| MemberRecord {
                user: m.username,
                read_seq: m.read_seq as u64,
                role: Role::from_stored(&m.role),
            })
            .collect())
    }

    async fn add_member(&self, room: &str, user: &str) -> StoreResult<()> {
        let _turn = self.write_turn().await;
        let result = membership::Entity::insert(membership_row(room, user, Role::Member))
            .on_conflict(
                OnConflict::columns([membership::Column::Room, membership::Column::Username])
                    .do_nothing()
                    .to_owned(),
            )
            .exec_without_returning(&self.db)
            .await;
        match result {
            Ok(_) | Err(DbErr::RecordNotInserted) => Ok(()),
            Err(e) => Err(unavailable(e)),
        }
    }

    async fn remove_member(&self, room: &str, user: &str) -> StoreResult<()> {
        let _turn = self.write_turn().await;
        membership::Entity::delete_many()
            .filter(membership::Column::Room.eq(room))
            .filter(membership::Column::Username.eq(user))
            .exec(&self.db)
            .await
            .map_err(unavailable)?;
        Ok(())
    }

    async fn set_role(&self, room: &str, user: &str, role: Role) -> StoreResult<()> {
        let _turn = self.write_turn().await;
        membership::Entity::update_many()
            .col_expr(membership::Column::Role, Expr::value(role.as_str()))
            .filter(membership::Column::Room.eq(room))
            .filter(membership::Column::Username.eq(user))
            .exec(&self.db)
            .await
            .map_err(unavailable)?;
        Ok(())
    }

    async fn set_topic(&self, room: &str, topic: Option<&str>) -> StoreResult<()> {
        let _turn = self.write_turn().await;
        room::Entity::update_many()
            .col_expr(room::Column::Topic, Expr::value(topic.map(str::to_string)))
            .filter(room::Column::Name.eq(room))
            .exec(&self.db)
            .await
            .map_err(unavailable)?;
        Ok(())
    }

    async fn delete_room(&self, name: &str) -> StoreResult<()> {
        let _turn = self.write_turn().await;
        let txn = self.db.begin().await.map_err(unavailable)?;
        message::Entity::delete_many()
            .filter(message::Column::Room.eq(name))
            .exec(&txn)
            .await
            .map_err(unavailable)?;
        membership::Entity::delete_many()
            .filter(membership::Column::Room.eq(name))
            .exec(&txn)
            .await
            .map_err(unavailable)?;
        room::Entity::delete_many()
            .filter(room::Column::Name.eq(name))
            .exec(&txn)
            .await
            .map_err(unavailable)?;
        txn.commit().await.map_err(unavailable)
    }

    async fn set_read(&self, room: &str, user: &str, seq: u64) -> StoreResult<()> {
        let _turn = self.write_turn().await;
        membership::Entity::update_many()
            .col_expr(membership::Column::ReadSeq, Expr::value(seq as i64))
            .filter(membership::Column::Room.eq(room))
            .filter(membership::Column::Username.eq(user))
            .filter(membership::Column::ReadSeq.lt(seq as i64))
            .exec(&self.db)
            .await
            .map_err(unavailable)?;
        Ok(())
    }

    async fn rooms_of(&self, user: &str) -> StoreResult<Vec<String>> {
        let rows = membership::Entity::find()
            .filter(membership::Column::Username.eq(user))
            .all(&self.db)
            .await
            .map_err(unavailable)?;
        Ok(rows.into_iter().map(|m| m.room).collect())
    }

    async fn public_rooms(
        &self,
        query: &str,
        after: &str,
        limit: u64,
    ) -> StoreResult<Vec<(RoomRecord, u64)>> {
        // `query` is matched literally: LIKE's wildcards in it are escaped.
        let pattern = format!(
            "%{}%",
            query
                .to_lowercase()
                .replace('\\', "\\\\")
                .replace('%', "\\%")
                .replace('_', "\\_")
        );
        // Byte order on both backends (Postgres would otherwise sort by its
        // locale), so pages and their cursor agree.
        let name = match self.db.get_database_backend() {
            DbBackend::Postgres => "r.name COLLATE \"C\"",
            _ => "r.name",
        };
        let sql = format!(
            "SELECT r.name, r.private, r.created_by, r.created_at, r.topic, \
             (SELECT COUNT(*) FROM memberships m WHERE m.room = r.name) AS members \
             FROM rooms r \
             WHERE NOT r.private AND r.name NOT LIKE '!%' AND {name} > $1 \
             AND lower(r.name) LIKE $2 ESCAPE '\\' \
             ORDER BY {name} LIMIT $3"
        );
        let rows = self
            .db
            .query_all_raw(statement(
                &self.db,
                &sql,
                vec![after.into(), pattern.into(), (limit as i64).into()],
            ))
            .await
            .map_err(unavailable)?;
        rows.into_iter()
            .map(|row| {
                let record = RoomRecord {
                    name: row.try_get("", "name").map_err(unavailable)?,
                    private: row.try_get("", "private").map_err(unavailable)?,
                    created_by: row.try_get("", "created_by").map_err(unavailable)?,
                    created_at: row.try_get("", "created_at").map_err(unavailable)?,
                    topic: row.try_get("", "topic").map_err(unavailable)?,
                };
                let members: i64 = row.try_get("", "members").map_err(unavailable)?;
                Ok((record, members as u64))
            })
            .collect()
    }
}

#[async_trait]
impl History for SqlStore {
    async fn write(&self, messages: &[ChatMessage]) -> StoreResult<()> {
        if messages.is_empty() {
            return Ok(());
        }
        let rows: Vec<message::ActiveModel> = messages.iter().map(message_life::row_of).collect();
        match &self.sqlite {
            Some(writer) => writer.history(rows).await,
            // One transaction: history and its search index (below) agree.
            None => {
                async {
                    let txn = self.db.begin().await?;
                    insert_history(&txn, rows).await?;
                    txn.commit().await
                }
                .await
            }
        }
        .map_err(unavailable)
    }

    async fn page(
        &self,
        room: &str,
        query: HistoryQuery,
        limit: usize,
    ) -> StoreResult<Vec<ChatMessage>> {
        let mut select = message::Entity::find().filter(message::Column::Room.eq(room));
        if let Some(before) = query.before {
            select = select.filter(message::Column::Seq.lt(before.min(i64::MAX as u64) as i64));
        }
        let rows = if let Some(after) = query.after {
            select
                .filter(message::Column::Seq.gt(after.min(i64::MAX as u64) as i64))
                .order_by_asc(message::Column::Seq)
                .limit(limit as u64)
                .all(&self.db)
                .await
        } else {
            select
                .order_by_desc(message::Column::Seq)
                .limit(limit as u64)
                .all(&self.db)
                .await
                .map(|mut rows| {
                    rows.reverse();
                    rows
                })
        }
        .map_err(unavailable)?;
        Ok(rows.into_iter().map(to_message).collect())
    }

    async fn views(&self, room: &str, seqs: &[u64]) -> StoreResult<Vec<MessageView>> {
        message_life::load_views(&self.db, room, seqs)
            .await
            .map_err(unavailable)
    }

    async fn pinned(&self, room: &str) -> StoreResult<Vec<u64>> {
        message_life::pinned(&self.db, room)
            .await
            .map_err(unavailable)
    }

    async fn replies(
        &self,
        room: &str,
        seq: u64,
        after: u64,
        limit: usize,
    ) -> StoreResult<Vec<u64>> {
        message_life::replies(&self.db, room, seq, after, limit)
            .await
            .map_err(unavailable)
    }

    async fn unread(&self, room: &str, user: &str, after: u64) -> StoreResult<u64> {
        message_life::unread(&self.db, room, user, after)
            .await
            .map_err(unavailable)
    }
}

#[async_trait]
impl CheckpointStore for SqlStore {
    async fn load(&self, room: &str) -> StoreResult<Option<Checkpoint>> {
        let found = checkpoint::Entity::find_by_id(room.to_string())
            .one(&self.db)
            .await
            .map_err(unavailable)?;
        Ok(found.map(|c| Checkpoint {
            room: c.room,
            epoch: c.epoch as u64,
            last_seq: c.last_seq as u64,
            log_position: c.log_position as u64,
            history_seq: c.history_seq as u64,
        }))
    }

    async fn save(&self, c: &Checkpoint) -> StoreResult<()> {
        let row = checkpoint::ActiveModel {
            room: Set(c.room.clone()),
            epoch: Set(c.epoch as i64),
            last_seq: Set(c.last_seq as i64),
            log_position: Set(c.log_position as i64),
            history_seq: Set(c.history_seq as i64),
            updated_at: Set(now_ms()),
        };
        match &self.sqlite {
            Some(writer) => writer.checkpoint(row).await,
            None => upsert_checkpoint(&self.db, row).await,
        }
        .map_err(unavailable)
    }
}

#[async_trait]
impl MessageLog for SqlStore {
    async fn append(&self, _room: &str, records: &[LogRecord]) -> StoreResult<Vec<LogPosition>> {
        if records.is_empty() {
            return Ok(Vec::new());
        }
        let rows = records.iter().map(|r| log_record::ActiveModel {
            position: NotSet,
            room: Set(r.room.clone()),
            seq: Set(r.seq as i64),
            epoch: Set(r.epoch as i64),
            sender: Set(r.sender.clone()),
            client_id: Set(r.client_id.clone()),
            body: Set(r.body.clone()),
            ts: Set(r.ts),
            reply_to: Set(r.reply_to.map(|s| s as i64)),
            attachments: Set(message_life::ids_json(&r.attachments)),
            event: Set(r
                .event
                .as_ref()
                .map(|e| serde_json::to_string(e).unwrap_or_default())),
        });
        let rows: Vec<log_record::ActiveModel> = rows.collect();
        let positions = match &self.sqlite {
            // Batched with other rooms' appends into one transaction.
            Some(writer) => writer.append(rows).await,
            None => insert_log(&self.db, rows).await,
        }
        .map_err(log_unavailable)?;
        Ok(positions.into_iter().map(|p| p as u64).collect())
    }

    async fn read_from(
        &self,
        room: &str,
        from: LogPosition,
        max: usize,
    ) -> StoreResult<Vec<(LogPosition, LogRecord)>> {
        let rows = log_record::Entity::find()
            .filter(log_record::Column::Room.eq(room))
            .filter(log_record::Column::Position.gte(from as i64))
            .order_by_asc(log_record::Column::Position)
            .limit(max as u64)
            .all(&self.db)
            .await
            .map_err(log_unavailable)?;
        Ok(rows
            .into_iter()
            .map(|r| {
                (
                    r.position as u64,
                    LogRecord {
                        room: r.room,
                        seq: r.seq as u64,
                        epoch: r.epoch as u64,
                        sender: r.sender,
                        client_id: r.client_id,
                        body: r.body,
                        ts: r.ts,
                        reply_to: r.reply_to.map(|s| s as u64),
                        attachments: message_life::ids_of(&r.attachments),
                        event: message_life::event_of(r.event.as_deref()),
                    },
                )
            })
            .collect())
    }
}

/// Most rows in one INSERT (SQLite allows 32,766 bound variables).
const ROWS_PER_STATEMENT: usize = 2_000;

/// Inserts log rows; their positions in row order.
pub(super) async fn insert_log<C: ConnectionTrait>(
    db: &C,
    rows: Vec<log_record::ActiveModel>,
) -> Result<Vec<i64>, DbErr> {
    let mut positions = Vec::with_capacity(rows.len());
    let mut rows = rows.into_iter().peekable();
    while rows.peek().is_some() {
        let chunk: Vec<_> = rows.by_ref().take(ROWS_PER_STATEMENT).collect();
        positions.extend(
            log_record::Entity::insert_many(chunk)
                .exec_with_returning_keys(db)
                .await?,
        );
    }
    positions.sort_unstable();
    Ok(positions)
}

/// Inserts history rows; a (room, seq) already there stays as it is. The
/// new ones go into the search index, and room events among them change
/// their targets (see `message_life`), all in the caller's transaction.
pub(super) async fn insert_history<C: ConnectionTrait>(
    db: &C,
    rows: Vec<message::ActiveModel>,
) -> Result<(), DbErr> {
    let mut by_room: std::collections::BTreeMap<String, Vec<message::ActiveModel>> =
        Default::default();
    for row in rows {
        if let Set(room) = &row.room {
            by_room.entry(room.clone()).or_default().push(row);
        }
    }
    for (room, rows) in by_room {
        let mut rows = rows.into_iter().peekable();
        while rows.peek().is_some() {
            let chunk: Vec<_> = rows.by_ref().take(ROWS_PER_STATEMENT).collect();
            message_life::insert_room_rows(db, &room, chunk).await?;
        }
    }
    Ok(())
}

/// Inserts or replaces a room's checkpoint.
pub(super) async fn upsert_checkpoint<C: ConnectionTrait>(
    db: &C,
    row: checkpoint::ActiveModel,
) -> Result<(), DbErr> {
    use sea_orm::sea_query::ExprTrait;
    checkpoint::Entity::insert(row)
        .on_conflict(
            OnConflict::column(checkpoint::Column::Room)
                .update_columns([
                    checkpoint::Column::Epoch,
                    checkpoint::Column::LastSeq,
                    checkpoint::Column::LogPosition,
                    checkpoint::Column::HistorySeq,
                    checkpoint::Column::UpdatedAt,
                ])
                // A fenced owner's late checkpoint never replaces a newer owner's.
                .action_and_where(
                    Expr::col((checkpoint::Entity, checkpoint::Column::Epoch)).lte(Expr::col((
                        Alias::new("excluded"),
                        checkpoint::Column::Epoch,
                    ))),
                )
                .to_owned(),
        )
        .exec_without_returning(db)
        .await?;
    Ok(())
}

/// `$1, $2, ...` placeholders for Postgres; `?` for SQLite (each parameter
/// appears once, in order).
fn statement(db: &DatabaseConnection, sql: &str, values: Vec<sea_orm::Value>) -> Statement {
    let backend = db.get_database_backend();
    let sql = match backend {
        DbBackend::Sqlite => {
            let mut out = String::with_capacity(sql.len());
            let mut chars = sql.chars().peekable();
            while let Some(c) = chars.next() {
                if c == '$' && chars.peek().is_some_and(|d| d.is_ascii_digit()) {
                    while chars.peek().is_some_and(|d| d.is_ascii_digit()) {
                        chars.next();
                    }
                    out.push('?');
                } else {
                    out.push(c);
                }
            }
            out
        }
        _ => sql.to_string(),
    };
    Statement::from_sql_and_values(backend, sql, values)
}

#[async_trait]
impl LeaseStore for SqlStore {
    async fn acquire(&self, room: &str, node: &str, min_epoch: u64) -> StoreResult<u64> {
        let sql =
            "INSERT INTO room_leases (room, owner, epoch, updated_at) VALUES ($1, $2, $3, $4) \
             ON CONFLICT (room) DO UPDATE SET owner = excluded.owner, \
             epoch = CASE WHEN room_leases.epoch + 1 > excluded.epoch \
                     THEN room_leases.epoch + 1 ELSE excluded.epoch END, \
             updated_at = excluded.updated_at \
             RETURNING epoch";
        let values = vec![
            room.into(),
            node.into(),
            (min_epoch.max(1) as i64).into(),
            now_ms().into(),
        ];
        let _turn = self.write_turn().await;
        // Only for troupe_room_failovers_total: did another node still hold it?
        let previous = self.lease_owner(room).await?;
        let row = self
            .db
            .query_one_raw(statement(&self.db, sql, values))
            .await
            .map_err(unavailable)?
            .ok_or_else(|| {
                metrics::STORE_ERRORS_SQL.inc();
                StoreError::Unavailable {
                    store: "database",
                    message: "lease upsert returned nothing".into(),
                }
            })?;
        let epoch: i64 = row.try_get("", "epoch").map_err(unavailable)?;
        metrics::LEASE_ACQUISITIONS.inc();
        if previous.is_some_and(|owner| owner != node) {
            metrics::ROOM_FAILOVERS.inc();
        }
        Ok(epoch as u64)
    }

    async fn holds(&self, room: &str, node: &str, epoch: u64) -> StoreResult<bool> {
        let sql = "SELECT owner, epoch FROM room_leases WHERE room = $1";
        let row = self
            .db
            .query_one_raw(statement(&self.db, sql, vec![room.into()]))
            .await
            .map_err(unavailable)?;
        let Some(row) = row else { return Ok(false) };
        let owner: Option<String> = row.try_get("", "owner").map_err(unavailable)?;
        let held: i64 = row.try_get("", "epoch").map_err(unavailable)?;
        Ok(owner.as_deref() == Some(node) && held as u64 == epoch)
    }

    async fn raise(&self, room: &str, node: &str, epoch: u64, new_epoch: u64) -> StoreResult<bool> {
        let sql = "UPDATE room_leases SET epoch = $1, updated_at = $2 \
                   WHERE room = $3 AND owner = $4 AND epoch = $5";
        let values = vec![
            (new_epoch as i64).into(),
            now_ms().into(),
            room.into(),
            node.into(),
            (epoch as i64).into(),
        ];
        let _turn = self.write_turn().await;
        let done = self
            .db
            .execute_raw(statement(&self.db, sql, values))
            .await
            .map_err(unavailable)?;
        Ok(done.rows_affected() == 1)
    }

    async fn release(&self, room: &str, node: &str, epoch: u64) -> StoreResult<()> {
        let sql = "UPDATE room_leases SET owner = NULL, updated_at = $1 \
                   WHERE room = $2 AND owner = $3 AND epoch = $4";
        let values = vec![
            now_ms().into(),
            room.into(),
            node.into(),
            (epoch as i64).into(),
        ];
        let _turn = self.write_turn().await;
        self.db
            .execute_raw(statement(&self.db, sql, values))
            .await
            .map_err(unavailable)?;
        Ok(())
    }

    async fn owners(&self) -> StoreResult<Vec<(String, String, u64)>> {
        let sql =
            "SELECT room, owner, epoch FROM room_leases WHERE owner IS NOT NULL ORDER BY room";
        let rows = self
            .db
            .query_all_raw(statement(&self.db, sql, vec![]))
            .await
            .map_err(unavailable)?;
        rows.into_iter()
            .map(|row| {
                let room: String = row.try_get("", "room").map_err(unavailable)?;
                let owner: String = row.try_get("", "owner").map_err(unavailable)?;
                let epoch: i64 = row.try_get("", "epoch").map_err(unavailable)?;
                Ok((room, owner, epoch as u64))
            })
            .collect()
    }
}

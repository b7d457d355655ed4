//! Directory, history, checkpoints, and the embedded default's message log,
//! on SQLite or Postgres through sea-orm.

use async_trait::async_trait;
use sea_orm::sea_query::{Expr, OnConflict};
use sea_orm::{
    ActiveValue::{NotSet, Set},
    ColumnTrait, ConnectionTrait, DatabaseConnection, DbErr, EntityTrait, QueryFilter, QueryOrder,
    QuerySelect, SqlErr, TransactionTrait,
};
use troupe_actors::frames::{ChatMessage, HistoryQuery};
use troupe_actors::limits::now_ms;
use troupe_actors::store::{
    Checkpoint, CheckpointStore, Directory, History, LogPosition, LogRecord, MemberRecord,
    MessageLog, RoomRecord, StoreError, StoreResult, UserRecord,
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
    async fn write_turn(&self) -> Option<tokio::sync::MutexGuard<'_, ()>> {
        match &self.sqlite {
            Some(writer) => Some(writer.lock().await),
            None => None,
        }
    }

    /// A trivial query: does the database answer?
    pub async fn ping(&self) -> StoreResult<()> {
        self.db.ping().await.map_err(unavailable)
    }
}

fn unavailable(e: DbErr) -> StoreError {
    StoreError::Unavailable {
        store: "database",
        message: e.to_string(),
    }
}

fn is_unique_violation(e: &DbErr) -> bool {
    matches!(e.sql_err(), Some(SqlErr::UniqueConstraintViolation(_)))
}

fn to_message(m: message::Model) -> ChatMessage {
    ChatMessage {
        room: m.room,
        seq: m.seq as u64,
        from: m.sender,
        body: m.body,
        ts: m.ts,
        client_id: m.client_id,
    }
}

fn membership_row(room: &str, user: &str) -> membership::ActiveModel {
    membership::ActiveModel {
        room: Set(room.to_string()),
        username: Set(user.to_string()),
        read_seq: Set(0),
        joined_at: Set(now_ms()),
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
        let found = user::Entity::find()
            .filter(user::Column::Username.eq(username))
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
                members.iter().map(|u| membership_row(&record.name, u)),
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
            })
            .collect())
    }

    async fn add_member(&self, room: &str, user: &str) -> StoreResult<()> {
        let _turn = self.write_turn().await;
        let result = membership::Entity::insert(membership_row(room, user))
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
}

#[async_trait]
impl History for SqlStore {
    async fn write(&self, messages: &[ChatMessage]) -> StoreResult<()> {
        if messages.is_empty() {
            return Ok(());
        }
        let rows: Vec<message::ActiveModel> = messages
            .iter()
            .map(|m| message::ActiveModel {
                room: Set(m.room.clone()),
                seq: Set(m.seq as i64),
                sender: Set(m.from.clone()),
                client_id: Set(m.client_id.clone()),
                body: Set(m.body.clone()),
                ts: Set(m.ts),
            })
            .collect();
        match &self.sqlite {
            Some(writer) => writer.history(rows).await,
            None => insert_history(&self.db, rows).await,
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
        });
        let rows: Vec<log_record::ActiveModel> = rows.collect();
        let positions = match &self.sqlite {
            // Batched with other rooms' appends into one transaction.
            Some(writer) => writer.append(rows).await,
            None => insert_log(&self.db, rows).await,
        }
        .map_err(unavailable)?;
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
            .map_err(unavailable)?;
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

/// Inserts history rows; a (room, seq) already there stays as it is.
pub(super) async fn insert_history<C: ConnectionTrait>(
    db: &C,
    rows: Vec<message::ActiveModel>,
) -> Result<(), DbErr> {
    let mut rows = rows.into_iter().peekable();
    while rows.peek().is_some() {
        let chunk: Vec<_> = rows.by_ref().take(ROWS_PER_STATEMENT).collect();
        let result = message::Entity::insert_many(chunk)
            .on_conflict(
                OnConflict::columns([message::Column::Room, message::Column::Seq])
                    .do_nothing()
                    .to_owned(),
            )
            .exec_without_returning(db)
            .await;
        match result {
            Ok(_) | Err(DbErr::RecordNotInserted) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Inserts or replaces a room's checkpoint.
pub(super) async fn upsert_checkpoint<C: ConnectionTrait>(
    db: &C,
    row: checkpoint::ActiveModel,
) -> Result<(), DbErr> {
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
                .to_owned(),
        )
        .exec_without_returning(db)
        .await?;
    Ok(())
}

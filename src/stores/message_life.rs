//! Messages that live, on SQL: history rows carry room events as well as
//! messages, and writing an event applies it to its target's state in the
//! same transaction, with the rules of `troupe_actors::life` (the rules the
//! room checks against). Applying happens only for rows this write inserted,
//! so writing the same records again (a retried history write, a restart
//! replaying the log tail) changes nothing. The search index follows edits
//! and deletes in the same transaction.

use std::collections::{BTreeMap, HashSet};

use sea_orm::sea_query::OnConflict;
use sea_orm::ActiveValue::Set;
use sea_orm::{
    ColumnTrait, ConnectionTrait, DbBackend, DbErr, EntityTrait, QueryFilter, QueryOrder,
    QuerySelect, Statement, Value,
};
use troupe_actors::frames::{ChatMessage, MessageEvent};
use troupe_actors::life::{Change, MessageView, Version};
use troupe_entity::message;

/// The `kind` of a message row.
pub const MESSAGE: &str = "message";

/// A history row of a record.
pub(super) fn row_of(m: &ChatMessage) -> message::ActiveModel {
    message::ActiveModel {
        room: Set(m.room.clone()),
        seq: Set(m.seq as i64),
        sender: Set(m.from.clone()),
        client_id: Set(m.client_id.clone()),
        body: Set(m.body.clone()),
        ts: Set(m.ts),
        kind: Set(m
            .event
            .as_ref()
            .map(|e| e.kind())
            .unwrap_or(MESSAGE)
            .to_string()),
        event: Set(m
            .event
            .as_ref()
            .map(|e| serde_json::to_string(e).unwrap_or_default())),
        version: Set(1),
        edited_at: Set(None),
        deleted: Set(false),
        reply_to: Set(m.reply_to.map(|s| s as i64)),
        reply_count: Set(0),
        pinned: Set(false),
        attachments: Set(ids_json(&m.attachments)),
    }
}

pub(super) fn ids_json(ids: &[String]) -> String {
    serde_json::to_string(ids).unwrap_or_else(|_| "[]".into())
}

pub(super) fn ids_of(json: &str) -> Vec<String> {
    serde_json::from_str(json).unwrap_or_default()
}

pub(super) fn event_of(json: Option<&str>) -> Option<MessageEvent> {
    json.and_then(|j| serde_json::from_str(j).ok())
}

/// A history row as history shows it: its current body and state.
pub(super) fn to_message(m: message::Model) -> ChatMessage {
    ChatMessage {
        room: m.room,
        seq: m.seq as u64,
        from: m.sender,
        body: m.body,
        ts: m.ts,
        client_id: m.client_id,
        reply_to: m.reply_to.map(|s| s as u64),
        attachments: ids_of(&m.attachments),
        event: event_of(m.event.as_deref()),
        edited_at: m.edited_at,
        deleted: m.deleted,
    }
}

fn stmt(backend: DbBackend, sql: &str, values: Vec<Value>) -> Statement {
    // `$n` placeholders, in order, each used once: `?` on SQLite.
    let sql = match backend {
        DbBackend::Postgres => sql.to_string(),
        _ => {
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
    };
    Statement::from_sql_and_values(backend, sql, values)
}

async fn exec<C: ConnectionTrait>(db: &C, sql: &str, values: Vec<Value>) -> Result<u64, DbErr> {
    let done = db
        .execute_raw(stmt(db.get_database_backend(), sql, values))
        .await?;
    Ok(done.rows_affected())
}

/// Inserts one room's history rows (ascending seqs) and applies the new
/// ones: events to their targets, replies to their parents' counts.
pub(super) async fn insert_room_rows<C: ConnectionTrait>(
    db: &C,
    room: &str,
    rows: Vec<message::ActiveModel>,
) -> Result<(), DbErr> {
    let seqs: Vec<i64> = rows
        .iter()
        .filter_map(|r| match &r.seq {
            Set(s) => Some(*s),
            _ => None,
        })
        .collect();
    let (Some(lo), Some(hi)) = (seqs.iter().min(), seqs.iter().max()) else {
        return Ok(());
    };
    let existing: HashSet<i64> = message::Entity::find()
        .select_only()
        .column(message::Column::Seq)
        .filter(message::Column::Room.eq(room))
        .filter(message::Column::Seq.between(*lo, *hi))
        .into_tuple::<i64>()
        .all(db)
        .await?
        .into_iter()
        .collect();
    let mut fresh: BTreeMap<i64, message::ActiveModel> = BTreeMap::new();
    for row in rows {
        if let Set(seq) = row.seq {
            if !existing.contains(&seq) {
                fresh.insert(seq, row);
            }
        }
    }
    if fresh.is_empty() {
        return Ok(());
    }
    let messages: Vec<message::ActiveModel> = fresh
        .values()
        .filter(|r| matches!(&r.kind, Set(k) if k == MESSAGE))
        .cloned()
        .collect();
    super::search::index_rows(db, &messages).await?;
    let applied: Vec<ChatMessage> = fresh
        .values()
        .filter_map(|r| {
            let (Set(seq), Set(sender), Set(ts), Set(reply_to), Set(event)) =
                (&r.seq, &r.sender, &r.ts, &r.reply_to, &r.event)
            else {
                return None;
            };
            Some(ChatMessage {
                room: room.to_string(),
                seq: *seq as u64,
                from: sender.clone(),
                ts: *ts,
                reply_to: reply_to.map(|s| s as u64),
                event: event_of(event.as_deref()),
                ..Default::default()
            })
        })
        .collect();
    let result = message::Entity::insert_many(fresh.into_values())
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
    for record in &applied {
        apply(db, record).await?;
    }
    Ok(())
}

/// Applies one new record to the message it concerns.
async fn apply<C: ConnectionTrait>(db: &C, record: &ChatMessage) -> Result<(), DbErr> {
    let room = record.room.as_str();
    let target = match (&record.event, record.reply_to) {
        (Some(event), _) => event.target(),
        (None, Some(parent)) => {
            let sql = "UPDATE messages SET reply_count = reply_count + 1 \
                       WHERE room = $1 AND seq = $2 AND kind = 'message'";
            exec(db, sql, vec![room.into(), (parent as i64).into()]).await?;
            return Ok(());
        }
        (None, None) => return Ok(()),
    };
    let Some(mut view) = load_views(db, room, &[target]).await?.pop() else {
        return Ok(()); // not a message: the room refused it; nothing to apply
    };
    let seq = target as i64;
    match view.apply(record) {
        Change::None | Change::Replied => {}
        Change::Edited(old) => {
            let body = view.body.clone().unwrap_or_default();
            let sql = "UPDATE messages SET body = $1, version = $2, edited_at = $3 \
                       WHERE room = $4 AND seq = $5";
            let values = vec![
                body.clone().into(),
                (view.version as i32).into(),
                view.edited_at.into(),
                room.into(),
                seq.into(),
            ];
            exec(db, sql, values).await?;
            let sql = "INSERT INTO message_versions (room, seq, version, body, ts) \
                       VALUES ($1, $2, $3, $4, $5) ON CONFLICT DO NOTHING";
            let values = vec![
                room.into(),
                seq.into(),
                (old.version as i32).into(),
                old.body.into(),
                old.ts.into(),
            ];
            exec(db, sql, values).await?;
            super::search::update_doc(db, room, target, &body).await?;
        }
        Change::Deleted(_) => {
            let sql = "UPDATE messages SET deleted = $1, body = '', pinned = $2, \
                       attachments = '[]' WHERE room = $3 AND seq = $4";
            let values = vec![true.into(), false.into(), room.into(), seq.into()];
            exec(db, sql, values).await?;
            for table in ["message_versions", "message_reactions"] {
                let sql = format!("DELETE FROM {table} WHERE room = $1 AND seq = $2");
                exec(db, &sql, vec![room.into(), seq.into()]).await?;
            }
            super::search::remove_doc(db, room, target).await?;
        }
        Change::Reacted | Change::Unreacted => {
            let Some(MessageEvent::React { emoji, .. } | MessageEvent::Unreact { emoji, .. }) =
                &record.event
            else {
                return Ok(());
            };
            let values = vec![
                room.into(),
                seq.into(),
                emoji.clone().into(),
                record.from.clone().into(),
            ];
            let sql = if matches!(record.event, Some(MessageEvent::React { .. })) {
                "INSERT INTO message_reactions (room, seq, emoji, username) \
                 VALUES ($1, $2, $3, $4) ON CONFLICT DO NOTHING"
            } else {
                "DELETE FROM message_reactions \
                 WHERE room = $1 AND seq = $2 AND emoji = $3 AND username = $4"
            };
            exec(db, sql, values).await?;
        }
        Change::Pinned => {
            let sql = "UPDATE messages SET pinned = $1 WHERE room = $2 AND seq = $3";
            exec(db, sql, vec![view.pinned.into(), room.into(), seq.into()]).await?;
        }
    }
    Ok(())
}

/// The views of these seqs that are messages, with versions and reactions.
pub(super) async fn load_views<C: ConnectionTrait>(
    db: &C,
    room: &str,
    seqs: &[u64],
) -> Result<Vec<MessageView>, DbErr> {
    if seqs.is_empty() {
        return Ok(Vec::new());
    }
    let wanted: Vec<i64> = seqs.iter().map(|s| *s as i64).collect();
    let rows = message::Entity::find()
        .filter(message::Column::Room.eq(room))
        .filter(message::Column::Seq.is_in(wanted.clone()))
        .filter(message::Column::Kind.eq(MESSAGE))
        .order_by_asc(message::Column::Seq)
        .all(db)
        .await?;
    if rows.is_empty() {
        return Ok(Vec::new());
    }
    let backend = db.get_database_backend();
    let list = |first: usize| {
        (0..wanted.len())
            .map(|i| format!("${}", first + i))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let mut values: Vec<Value> = vec![room.into()];
    values.extend(wanted.iter().map(|s| Value::from(*s)));
    let sql = format!(
        "SELECT seq, version, body, ts FROM message_versions \
         WHERE room = $1 AND seq IN ({}) ORDER BY seq, version",
        list(2)
    );
    let versions = db
        .query_all_raw(stmt(backend, &sql, values.clone()))
        .await?;
    let sql = format!(
        "SELECT seq, emoji, username FROM message_reactions \
         WHERE room = $1 AND seq IN ({}) ORDER BY seq, emoji, username",
        list(2)
    );
    let reactions = db.query_all_raw(stmt(backend, &sql, values)).await?;
    let mut views: BTreeMap<i64, MessageView> = rows
        .into_iter()
        .map(|m| {
            let seq = m.seq;
            let view = MessageView {
                room: m.room,
                seq: m.seq as u64,
                from: m.sender,
                body: (!m.deleted).then_some(m.body),
                ts: m.ts,
                version: m.version.max(1) as u32,
                edited_at: m.edited_at,
                deleted: m.deleted,
                reactions: BTreeMap::new(),
                pinned: m.pinned,
                reply_to: m.reply_to.map(|s| s as u64),
                reply_count: m.reply_count.max(0) as u64,
                attachments: ids_of(&m.attachments),
                versions: Vec::new(),
            };
            (seq, view)
        })
        .collect();
    for row in versions {
        let seq: i64 = row.try_get("", "seq")?;
        if let Some(view) = views.get_mut(&seq) {
            view.versions.push(Version {
                version: row.try_get::<i32>("", "version")?.max(0) as u32,
                body: row.try_get("", "body")?,
                ts: row.try_get("", "ts")?,
            });
        }
    }
    for row in reactions {
        let seq: i64 = row.try_get("", "seq")?;
        if let Some(view) = views.get_mut(&seq) {
            let emoji: String = row.try_get("", "emoji")?;
            let user: String = row.try_get("", "username")?;
            view.reactions.entry(emoji).or_default().push(user);
        }
    }
    Ok(views.into_values().collect())
}

pub(super) async fn pinned<C: ConnectionTrait>(db: &C, room: &str) -> Result<Vec<u64>, DbErr> {
    let seqs = message::Entity::find()
        .select_only()
        .column(message::Column::Seq)
        .filter(message::Column::Room.eq(room))
        .filter(message::Column::Pinned.eq(true))
        .order_by_asc(message::Column::Seq)
        .into_tuple::<i64>()
        .all(db)
        .await?;
    Ok(seqs.into_iter().map(|s| s as u64).collect())
}

pub(super) async fn replies<C: ConnectionTrait>(
    db: &C,
    room: &str,
    seq: u64,
    after: u64,
    limit: usize,
) -> Result<Vec<u64>, DbErr> {
    let seqs = message::Entity::find()
        .select_only()
        .column(message::Column::Seq)
        .filter(message::Column::Room.eq(room))
        .filter(message::Column::ReplyTo.eq(seq as i64))
        .filter(message::Column::Kind.eq(MESSAGE))
        .filter(message::Column::Seq.gt(after.min(i64::MAX as u64) as i64))
        .order_by_asc(message::Column::Seq)
        .limit(limit as u64)
        .into_tuple::<i64>()
        .all(db)
        .await?;
    Ok(seqs.into_iter().map(|s| s as u64).collect())
}

pub(super) async fn unread<C: ConnectionTrait>(
    db: &C,
    room: &str,
    user: &str,
    after: u64,
) -> Result<u64, DbErr> {
    let sql = "SELECT COUNT(*) AS n FROM messages WHERE room = $1 AND seq > $2 \
               AND kind = 'message' AND deleted = $3 AND sender <> $4";
    let values = vec![
        room.into(),
        (after.min(i64::MAX as u64) as i64).into(),
        false.into(),
        user.into(),
    ];
    let row = db
        .query_one_raw(stmt(db.get_database_backend(), sql, values))
        .await?;
    let n: i64 = match row {
        Some(row) => row.try_get("", "n")?,
        None => 0,
    };
    Ok(n.max(0) as u64)
}

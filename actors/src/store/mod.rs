//! The store traits the actors use. Drivers live in the binary (`src/stores`);
//! in-memory versions live in [`memory`] for unit tests and the embedded
//! default's presence, tokens and rate limits.

pub mod attachments;
pub mod events;
pub mod friends;
pub mod memory;
pub mod search;
pub mod throttle;
pub mod timed;

use std::collections::HashMap;
use std::sync::Arc;

use async_trait::async_trait;

use crate::frames::{ChatMessage, HistoryQuery, MessageEvent};
use crate::life::MessageView;

/// A store could not do what was asked.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StoreError {
    /// The store did not answer or failed; nothing is known to be written.
    #[error("{store} store unavailable: {message}")]
    Unavailable {
        store: &'static str,
        message: String,
    },
    /// A unique key already exists.
    #[error("already exists: {0}")]
    Conflict(String),
    /// Another node took the room's lease: this one must stop writing it.
    #[error("room {0} is now owned by another node")]
    Fenced(String),
}

pub type StoreResult<T> = Result<T, StoreError>;

/// A position in the log, ordered within one room (for Kafka: the offset in
/// the room's partition). `0` is "from the beginning".
pub type LogPosition = u64;

/// One record of the replicated message log.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct LogRecord {
    pub room: String,
    pub seq: u64,
    /// The owner epoch under which it was appended.
    pub epoch: u64,
    pub sender: String,
    pub client_id: String,
    pub body: String,
    pub ts: i64,
    /// The message this one answers (absent in records of before threads).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reply_to: Option<u64>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub attachments: Vec<String>,
    /// Set on a room event: the change it makes to an earlier message.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub event: Option<MessageEvent>,
}

impl LogRecord {
    pub fn to_message(&self) -> ChatMessage {
        ChatMessage {
            room: self.room.clone(),
            seq: self.seq,
            from: self.sender.clone(),
            body: self.body.clone(),
            ts: self.ts,
            client_id: self.client_id.clone(),
            reply_to: self.reply_to,
            attachments: self.attachments.clone(),
            event: self.event.clone(),
            ..Default::default()
        }
    }
}

/// The replicated message log: append-only, read back from a position.
#[async_trait]
pub trait MessageLog: Send + Sync + 'static {
    /// Appends a batch of one room's records; returns each record's position.
    /// Ok means durable: the records survive the loss of this process.
    async fn append(&self, room: &str, records: &[LogRecord]) -> StoreResult<Vec<LogPosition>>;

    /// Up to `max` records of `room` at positions >= `from`, in log order.
    async fn read_from(
        &self,
        room: &str,
        from: LogPosition,
        max: usize,
    ) -> StoreResult<Vec<(LogPosition, LogRecord)>>;
}

/// What a room needs to restart: everything up to `history_seq` is in the
/// history store, and the log from `log_position` on holds the rest.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Checkpoint {
    pub room: String,
    pub epoch: u64,
    pub last_seq: u64,
    /// Where replay starts: the position after the record of `history_seq`.
    pub log_position: LogPosition,
    pub history_seq: u64,
}

#[async_trait]
pub trait CheckpointStore: Send + Sync + 'static {
    async fn load(&self, room: &str) -> StoreResult<Option<Checkpoint>>;
    async fn save(&self, checkpoint: &Checkpoint) -> StoreResult<()>;
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserRecord {
    pub id: i64,
    pub username: String,
    pub password_hash: String,
    pub created_at: i64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoomRecord {
    pub name: String,
    pub private: bool,
    pub created_by: String,
    pub created_at: i64,
    /// What the room is about; its owner and admins set it.
    pub topic: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemberRecord {
    pub user: String,
    pub read_seq: u64,
    pub role: crate::roles::Role,
}

/// The role a room's first member gets: its creator owns a group room.
pub fn first_role(room: &RoomRecord, user: &str) -> crate::roles::Role {
    if user == room.created_by && crate::room::dm_members(&room.name).is_none() {
        crate::roles::Role::Owner
    } else {
        crate::roles::Role::Member
    }
}

/// Users, rooms and memberships.
#[async_trait]
pub trait Directory: Send + Sync + 'static {
    /// Conflict when the username is taken, in any case (`alice` and
    /// `ALICE` cannot both exist).
    async fn create_user(&self, username: &str, password_hash: &str) -> StoreResult<UserRecord>;
    /// The user whose name equals `username` ignoring ASCII case; the record
    /// holds the name as registered, which is the one to use from then on.
    async fn find_user(&self, username: &str) -> StoreResult<Option<UserRecord>>;
    /// Creates the room with its first members; Conflict when it exists.
    async fn create_room(&self, room: &RoomRecord, members: &[String]) -> StoreResult<()>;
    async fn find_room(&self, name: &str) -> StoreResult<Option<RoomRecord>>;
    async fn members(&self, room: &str) -> StoreResult<Vec<MemberRecord>>;
    async fn add_member(&self, room: &str, user: &str) -> StoreResult<()>;
    async fn remove_member(&self, room: &str, user: &str) -> StoreResult<()>;
    /// Sets a member's role (nothing when they are not a member).
    async fn set_role(&self, room: &str, user: &str, role: crate::roles::Role) -> StoreResult<()>;
    async fn set_topic(&self, room: &str, topic: Option<&str>) -> StoreResult<()>;
    /// Removes the room, its memberships and its history, in one transaction.
    async fn delete_room(&self, room: &str) -> StoreResult<()>;
    async fn set_read(&self, room: &str, user: &str, seq: u64) -> StoreResult<()>;
    /// Names of the rooms the user belongs to.
    async fn rooms_of(&self, user: &str) -> StoreResult<Vec<String>>;
    /// Public group rooms (not private, not DMs, not `!broadcast`) whose name
    /// contains `query` (any case), after `after` by name, at most `limit`:
    /// each with its member count.
    async fn public_rooms(
        &self,
        query: &str,
        after: &str,
        limit: u64,
    ) -> StoreResult<Vec<(RoomRecord, u64)>>;
}

/// Message history, written behind the log; idempotent on (room, seq).
///
/// It holds every record, room events included, and the current state of
/// each message: writing an event (`ChatMessage::event`) applies it to its
/// target in the same transaction (see [`crate::life`]), once, however often
/// the same record is written.
#[async_trait]
pub trait History: Send + Sync + 'static {
    async fn write(&self, messages: &[ChatMessage]) -> StoreResult<()>;
    /// The current views (with their versions) of these seqs that are
    /// messages (events and unknown seqs are left out).
    async fn views(&self, room: &str, seqs: &[u64]) -> StoreResult<Vec<MessageView>>;
    /// Seqs of the room's pinned messages, ascending.
    async fn pinned(&self, room: &str) -> StoreResult<Vec<u64>>;
    /// Seqs of the messages that answer `seq`, ascending, after `after`, at most `limit`.
    async fn replies(
        &self,
        room: &str,
        seq: u64,
        after: u64,
        limit: usize,
    ) -> StoreResult<Vec<u64>>;
    /// How many messages (not events, not deleted) after `after` are not `user`'s.
    async fn unread(&self, room: &str, user: &str, after: u64) -> StoreResult<u64>;
    /// A page as [`select_page`] defines it.
    async fn page(
        &self,
        room: &str,
        query: HistoryQuery,
        limit: usize,
    ) -> StoreResult<Vec<ChatMessage>>;
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenInfo {
    pub user_id: i64,
    pub username: String,
    /// Milliseconds since the epoch.
    pub expires_at: i64,
    /// For a resume token: the login token it was issued under; it dies with it.
    pub parent: Option<String>,
}

/// Tokens, rate limits and last-seen times: short-lived, shared by the nodes.
#[async_trait]
pub trait EphemeralStore: Send + Sync + 'static {
    async fn put_token(&self, token: &str, info: &TokenInfo) -> StoreResult<()>;
    /// The token's owner, unless it is unknown, expired or revoked.
    async fn token(&self, token: &str) -> StoreResult<Option<TokenInfo>>;
    async fn revoke_token(&self, token: &str) -> StoreResult<()>;
    /// Takes `cost` units from the token bucket `key` (`burst` units, refilled
    /// at `per_second`; 0 only looks). None when it held enough (at least
    /// one unit), else how long until it does; then nothing is taken.
    async fn rate_limit(
        &self,
        key: &str,
        burst: u32,
        per_second: f64,
        cost: u32,
    ) -> StoreResult<Option<std::time::Duration>>;
    async fn set_last_seen(&self, user: &str, ts: i64) -> StoreResult<()>;
    async fn last_seen(&self, users: &[String]) -> StoreResult<HashMap<String, i64>>;
    /// `node` has these users online until `ttl` from now (a heartbeat: a
    /// node that stops beating loses its users by itself).
    async fn heartbeat(
        &self,
        node: &str,
        users: &[String],
        ttl: std::time::Duration,
    ) -> StoreResult<()>;
    /// `user` has no connection left on `node`.
    async fn offline(&self, node: &str, user: &str) -> StoreResult<()>;
    /// Users online on any node, sorted.
    async fn online(&self) -> StoreResult<Vec<String>>;
}

/// Every store a node uses.
#[derive(Clone)]
pub struct Stores {
    pub log: Arc<dyn MessageLog>,
    pub checkpoints: Arc<dyn CheckpointStore>,
    pub directory: Arc<dyn Directory>,
    pub history: Arc<dyn History>,
    pub ephemeral: Arc<dyn EphemeralStore>,
    /// Room ownership leases; only a clustered node has them (alone, a node
    /// owns every room and nobody can fence it).
    pub leases: Option<Arc<dyn LeaseStore>>,
    /// Full-text search over message bodies.
    pub search: Arc<dyn search::SearchIndex>,
    /// The files messages reference (`attachments: [id]`): checked on send,
    /// deleted with their message.
    pub attachments: Arc<dyn attachments::AttachmentIndex>,
    /// Friends and blocks.
    pub friends: Arc<dyn friends::FriendStore>,
    /// Domain events for other services (docs/events.md).
    pub events: Arc<dyn events::Events>,
}

/// A room's ownership lease with its fencing epoch. A node appends to a
/// room's log and acks only while it holds the lease under the epoch it
/// writes with; taking the lease raises the epoch, which fences the holder.
#[async_trait]
pub trait LeaseStore: Send + Sync {
    /// Takes the lease for `node`, with an epoch above every earlier one and
    /// at least `min_epoch`; returns that epoch.
    async fn acquire(&self, room: &str, node: &str, min_epoch: u64) -> StoreResult<u64>;
    /// Does `node` still hold the room under `epoch`?
    async fn holds(&self, room: &str, node: &str, epoch: u64) -> StoreResult<bool>;
    /// Moves the lease from `epoch` to `new_epoch` if `node` still holds it.
    async fn raise(&self, room: &str, node: &str, epoch: u64, new_epoch: u64) -> StoreResult<bool>;
    /// Gives the lease up after a handoff (no-op if another node took it).
    async fn release(&self, room: &str, node: &str, epoch: u64) -> StoreResult<()>;
    /// Every held lease: (room, owner, epoch).
    async fn owners(&self) -> StoreResult<Vec<(String, String, u64)>>;
}

impl Stores {
    /// All in memory: for unit tests.
    pub fn in_memory() -> Self {
        let log = Arc::new(memory::MemoryLog::default());
        let db = Arc::new(memory::MemoryDatabase::default());
        Stores {
            log,
            checkpoints: db.clone(),
            directory: db.clone(),
            history: db,
            ephemeral: Arc::new(memory::MemoryEphemeral::default()),
            leases: None,
            search: Arc::new(search::MemorySearch::default()),
            attachments: Arc::new(attachments::NoAttachments),
            friends: Arc::new(friends::MemoryFriends::default()),
            events: Arc::new(events::MemoryEvents::default()),
        }
    }
}

/// The page of `messages` (ascending by seq) that `query` asks for:
/// seq > after (the oldest `limit`), and/or seq < before (the newest `limit`
/// when no `after`), or the newest `limit`. Always ascending.
pub fn select_page<T, F>(messages: &[T], seq_of: F, query: HistoryQuery, limit: usize) -> &[T]
where
    F: Fn(&T) -> u64,
{
    let lo = match query.after {
        Some(after) => messages.partition_point(|m| seq_of(m) <= after),
        None => 0,
    };
    let hi = match query.before {
        Some(before) => messages.partition_point(|m| seq_of(m) < before),
        None => messages.len(),
    };
    if lo >= hi {
        return &messages[0..0];
    }
    if query.after.is_some() {
        &messages[lo..hi.min(lo + limit)]
    } else {
        &messages[hi.saturating_sub(limit).max(lo)..hi]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn q(before: Option<u64>, after: Option<u64>) -> HistoryQuery {
        HistoryQuery {
            before,
            after,
            limit: None,
        }
    }

    #[test]
    fn pages() {
        let seqs: Vec<u64> = (1..=10).collect();
        let id = |s: &u64| *s;
        assert_eq!(select_page(&seqs, id, q(None, None), 3), &[8, 9, 10]);
        assert_eq!(select_page(&seqs, id, q(Some(5), None), 3), &[2, 3, 4]);
        assert_eq!(select_page(&seqs, id, q(None, Some(5)), 3), &[6, 7, 8]);
        assert_eq!(select_page(&seqs, id, q(Some(8), Some(5)), 5), &[6, 7]);
        assert!(select_page(&seqs, id, q(Some(1), None), 3).is_empty());
        assert!(select_page(&seqs, id, q(None, Some(10)), 3).is_empty());
    }
}

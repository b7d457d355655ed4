//! Latency of every store call, by store and operation
//! (`troupe_store_seconds{store,op}`): a decorator around each store trait,
//! so that the drivers stay free of instrumentation and every driver (SQL,
//! Kafka, Redis, in memory) is measured the same way, errors included.

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, LazyLock};
use std::time::Duration;

use async_trait::async_trait;

use crate::metrics::Histogram;

use super::{
    Checkpoint, CheckpointStore, Directory, EphemeralStore, LeaseStore, LogPosition, LogRecord,
    MemberRecord, MessageLog, RoomRecord, StoreResult, Stores, TokenInfo, UserRecord,
};

/// The measured operations: (store, op) as labelled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    LogAppend,
    LogRead,
    CheckpointLoad,
    CheckpointSave,
    DirectoryRead,
    DirectoryWrite,
    LeaseAcquire,
    LeaseCheck,
    LeaseRelease,
    EphemeralToken,
    EphemeralRateLimit,
    EphemeralPresence,
}

impl Op {
    pub const ALL: [Op; 12] = [
        Op::LogAppend,
        Op::LogRead,
        Op::CheckpointLoad,
        Op::CheckpointSave,
        Op::DirectoryRead,
        Op::DirectoryWrite,
        Op::LeaseAcquire,
        Op::LeaseCheck,
        Op::LeaseRelease,
        Op::EphemeralToken,
        Op::EphemeralRateLimit,
        Op::EphemeralPresence,
    ];

    /// (store, op) labels.
    pub fn labels(self) -> (&'static str, &'static str) {
        match self {
            Op::LogAppend => ("log", "append"),
            Op::LogRead => ("log", "read"),
            Op::CheckpointLoad => ("checkpoint", "load"),
            Op::CheckpointSave => ("checkpoint", "save"),
            Op::DirectoryRead => ("directory", "read"),
            Op::DirectoryWrite => ("directory", "write"),
            Op::LeaseAcquire => ("lease", "acquire"),
            Op::LeaseCheck => ("lease", "check"),
            Op::LeaseRelease => ("lease", "release"),
            Op::EphemeralToken => ("ephemeral", "token"),
            Op::EphemeralRateLimit => ("ephemeral", "rate_limit"),
            Op::EphemeralPresence => ("ephemeral", "presence"),
        }
    }
}

/// Handles into `troupe_store_seconds`, one per [`Op`] in [`Op::ALL`]'s
/// order, so that a call never looks its labels up.
static HISTOGRAMS: LazyLock<Vec<Histogram>> = LazyLock::new(|| {
    Op::ALL
        .iter()
        .map(|op| {
            let (store, name) = op.labels();
            crate::metrics::STORE_SECONDS.get_or_create_owned(&[("store", store), ("op", name)])
        })
        .collect()
});

async fn timed<T>(op: Op, work: impl Future<Output = T>) -> T {
    crate::metrics::time(&HISTOGRAMS[op as usize], work).await
}

/// The same stores, each call measured.
pub fn timed_stores(stores: Stores) -> Stores {
    Stores {
        log: Arc::new(Timed(stores.log)),
        checkpoints: Arc::new(Timed(stores.checkpoints)),
        directory: Arc::new(Timed(stores.directory)),
        ephemeral: Arc::new(Timed(stores.ephemeral)),
        leases: stores
            .leases
            .map(|l| Arc::new(Timed(l)) as Arc<dyn LeaseStore>),
        ..stores
    }
}

/// A store whose calls are measured.
struct Timed<S: ?Sized>(Arc<S>);

#[async_trait]
impl MessageLog for Timed<dyn MessageLog> {
    async fn append(&self, room: &str, records: &[LogRecord]) -> StoreResult<Vec<LogPosition>> {
        timed(Op::LogAppend, self.0.append(room, records)).await
    }

    async fn read_from(
        &self,
        room: &str,
        from: LogPosition,
        max: usize,
    ) -> StoreResult<Vec<(LogPosition, LogRecord)>> {
        timed(Op::LogRead, self.0.read_from(room, from, max)).await
    }
}

#[async_trait]
impl CheckpointStore for Timed<dyn CheckpointStore> {
    async fn load(&self, room: &str) -> StoreResult<Option<Checkpoint>> {
        timed(Op::CheckpointLoad, self.0.load(room)).await
    }

    async fn save(&self, checkpoint: &Checkpoint) -> StoreResult<()> {
        timed(Op::CheckpointSave, self.0.save(checkpoint)).await
    }
}

#[async_trait]
impl Directory for Timed<dyn Directory> {
    async fn create_user(&self, username: &str, password_hash: &str) -> StoreResult<UserRecord> {
        timed(
            Op::DirectoryWrite,
            self.0.create_user(username, password_hash),
        )
        .await
    }
    async fn find_user(&self, username: &str) -> StoreResult<Option<UserRecord>> {
        timed(Op::DirectoryRead, self.0.find_user(username)).await
    }
    async fn create_room(&self, room: &RoomRecord, members: &[String]) -> StoreResult<()> {
        timed(Op::DirectoryWrite, self.0.create_room(room, members)).await
    }
    async fn find_room(&self, name: &str) -> StoreResult<Option<RoomRecord>> {
        timed(Op::DirectoryRead, self.0.find_room(name)).await
    }
    async fn members(&self, room: &str) -> StoreResult<Vec<MemberRecord>> {
        timed(Op::DirectoryRead, self.0.members(room)).await
    }
    async fn add_member(&self, room: &str, user: &str) -> StoreResult<()> {
        timed(Op::DirectoryWrite, self.0.add_member(room, user)).await
    }
    async fn remove_member(&self, room: &str, user: &str) -> StoreResult<()> {
        timed(Op::DirectoryWrite, self.0.remove_member(room, user)).await
    }
    async fn set_read(&self, room: &str, user: &str, seq: u64) -> StoreResult<()> {
        timed(Op::DirectoryWrite, self.0.set_read(room, user, seq)).await
    }
    async fn set_role(&self, room: &str, user: &str, role: crate::roles::Role) -> StoreResult<()> {
        timed(Op::DirectoryWrite, self.0.set_role(room, user, role)).await
    }
    async fn set_topic(&self, room: &str, topic: Option<&str>) -> StoreResult<()> {
        timed(Op::DirectoryWrite, self.0.set_topic(room, topic)).await
    }
    async fn delete_room(&self, room: &str) -> StoreResult<()> {
        timed(Op::DirectoryWrite, self.0.delete_room(room)).await
    }
    async fn rooms_of(&self, user: &str) -> StoreResult<Vec<String>> {
        timed(Op::DirectoryRead, self.0.rooms_of(user)).await
    }
    async fn public_rooms(
        &self,
        query: &str,
        after: &str,
        limit: u64,
    ) -> StoreResult<Vec<(RoomRecord, u64)>> {
        timed(Op::DirectoryRead, self.0.public_rooms(query, after, limit)).await
    }
}

#[async_trait]
impl EphemeralStore for Timed<dyn EphemeralStore> {
    async fn put_token(&self, token: &str, info: &TokenInfo) -> StoreResult<()> {
        timed(Op::EphemeralToken, self.0.put_token(token, info)).await
    }
    async fn token(&self, token: &str) -> StoreResult<Option<TokenInfo>> {
        timed(Op::EphemeralToken, self.0.token(token)).await
    }
    async fn revoke_token(&self, token: &str) -> StoreResult<()> {
        timed(Op::EphemeralToken, self.0.revoke_token(token)).await
    }
    async fn rate_limit(
        &self,
        key: &str,
        burst: u32,
        per_second: f64,
        cost: u32,
    ) -> StoreResult<Option<Duration>> {
        timed(
            Op::EphemeralRateLimit,
            self.0.rate_limit(key, burst, per_second, cost),
        )
        .await
    }
    async fn set_last_seen(&self, user: &str, ts: i64) -> StoreResult<()> {
        timed(Op::EphemeralPresence, self.0.set_last_seen(user, ts)).await
    }
    async fn last_seen(&self, users: &[String]) -> StoreResult<HashMap<String, i64>> {
        timed(Op::EphemeralPresence, self.0.last_seen(users)).await
    }
    async fn heartbeat(&self, node: &str, users: &[String], ttl: Duration) -> StoreResult<()> {
        timed(Op::EphemeralPresence, self.0.heartbeat(node, users, ttl)).await
    }
    async fn offline(&self, node: &str, user: &str) -> StoreResult<()> {
        timed(Op::EphemeralPresence, self.0.offline(node, user)).await
    }
    async fn online(&self) -> StoreResult<Vec<String>> {
        timed(Op::EphemeralPresence, self.0.online()).await
    }
}

#[async_trait]
impl LeaseStore for Timed<dyn LeaseStore> {
    async fn acquire(&self, room: &str, node: &str, min_epoch: u64) -> StoreResult<u64> {
        timed(Op::LeaseAcquire, self.0.acquire(room, node, min_epoch)).await
    }
    async fn holds(&self, room: &str, node: &str, epoch: u64) -> StoreResult<bool> {
        timed(Op::LeaseCheck, self.0.holds(room, node, epoch)).await
    }
    async fn raise(&self, room: &str, node: &str, epoch: u64, new_epoch: u64) -> StoreResult<bool> {
        timed(Op::LeaseAcquire, self.0.raise(room, node, epoch, new_epoch)).await
    }
    async fn release(&self, room: &str, node: &str, epoch: u64) -> StoreResult<()> {
        timed(Op::LeaseRelease, self.0.release(room, node, epoch)).await
    }
    async fn owners(&self) -> StoreResult<Vec<(String, String, u64)>> {
        timed(Op::LeaseCheck, self.0.owners()).await
    }
}

//! In-memory stores. [`MemoryEphemeral`] is the embedded default's presence,
//! token and rate-limit store; the others serve unit tests.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use async_trait::async_trait;

use super::*;
use crate::limits::now_ms;

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // A panic while holding one of these locks leaves plain data behind; keep serving.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// A log per room, positions counted per room.
#[derive(Default)]
pub struct MemoryLog {
    rooms: Mutex<HashMap<String, Vec<LogRecord>>>,
}

#[async_trait]
impl MessageLog for MemoryLog {
    async fn append(&self, room: &str, records: &[LogRecord]) -> StoreResult<Vec<LogPosition>> {
        let mut rooms = lock(&self.rooms);
        let log = rooms.entry(room.to_string()).or_default();
        let first = log.len() as u64;
        log.extend(records.iter().cloned());
        Ok((first..first + records.len() as u64).collect())
    }

    async fn read_from(
        &self,
        room: &str,
        from: LogPosition,
        max: usize,
    ) -> StoreResult<Vec<(LogPosition, LogRecord)>> {
        let rooms = lock(&self.rooms);
        Ok(rooms
            .get(room)
            .map(|log| {
                log.iter()
                    .enumerate()
                    .skip(from as usize)
                    .take(max)
                    .map(|(i, r)| (i as u64, r.clone()))
                    .collect()
            })
            .unwrap_or_default())
    }
}

#[derive(Default)]
struct Tables {
    /// By lowercased name: usernames are unique regardless of case.
    users: BTreeMap<String, UserRecord>,
    rooms: BTreeMap<String, RoomRecord>,
    members: BTreeMap<(String, String), u64>,
    /// Roles other than `member`.
    roles: BTreeMap<(String, String), crate::roles::Role>,
    messages: BTreeMap<(String, u64), ChatMessage>,
    /// The current state of every message (not of events).
    views: BTreeMap<(String, u64), crate::life::MessageView>,
    checkpoints: HashMap<String, Checkpoint>,
}

/// Directory, history and checkpoints in memory.
#[derive(Default)]
pub struct MemoryDatabase {
    tables: Mutex<Tables>,
}

#[async_trait]
impl Directory for MemoryDatabase {
    async fn create_user(&self, username: &str, password_hash: &str) -> StoreResult<UserRecord> {
        let mut t = lock(&self.tables);
        let key = username.to_ascii_lowercase();
        if t.users.contains_key(&key) {
            return Err(StoreError::Conflict(username.to_string()));
        }
        let user = UserRecord {
            id: t.users.len() as i64 + 1,
            username: username.to_string(),
            password_hash: password_hash.to_string(),
            created_at: now_ms(),
        };
        t.users.insert(key, user.clone());
        Ok(user)
    }

    async fn find_user(&self, username: &str) -> StoreResult<Option<UserRecord>> {
        let key = username.to_ascii_lowercase();
        Ok(lock(&self.tables).users.get(&key).cloned())
    }

    async fn create_room(&self, room: &RoomRecord, members: &[String]) -> StoreResult<()> {
        let mut t = lock(&self.tables);
        if t.rooms.contains_key(&room.name) {
            return Err(StoreError::Conflict(room.name.clone()));
        }
        t.rooms.insert(room.name.clone(), room.clone());
        for user in members {
            t.members.insert((room.name.clone(), user.clone()), 0);
            let role = super::first_role(room, user);
            if role != crate::roles::Role::Member {
                t.roles.insert((room.name.clone(), user.clone()), role);
            }
        }
        Ok(())
    }

    async fn find_room(&self, name: &str) -> StoreResult<Option<RoomRecord>> {
        Ok(lock(&self.tables).rooms.get(name).cloned())
    }

    async fn members(&self, room: &str) -> StoreResult<Vec<MemberRecord>> {
        let t = lock(&self.tables);
        Ok(t.members
            .iter()
            .filter(|((r, _), _)| r == room)
            .map(|(key, read_seq)| MemberRecord {
                user: key.1.clone(),
                read_seq: *read_seq,
                role: t
                    .roles
                    .get(key)
                    .copied()
                    .unwrap_or(crate::roles::Role::Member),
            })
            .collect())
    }

    async fn add_member(&self, room: &str, user: &str) -> StoreResult<()> {
        lock(&self.tables)
            .members
            .entry((room.to_string(), user.to_string()))
            .or_insert(0);
        Ok(())
    }

    async fn remove_member(&self, room: &str, user: &str) -> StoreResult<()> {
        let mut t = lock(&self.tables);
        let key = (room.to_string(), user.to_string());
        t.members.remove(&key);
        t.roles.remove(&key);
        Ok(())
    }

    async fn set_role(&self, room: &str, user: &str, role: crate::roles::Role) -> StoreResult<()> {
        let mut t = lock(&self.tables);
        let key = (room.to_string(), user.to_string());
        if t.members.contains_key(&key) {
            t.roles.insert(key, role);
        }
        Ok(())
    }

    async fn set_topic(&self, room: &str, topic: Option<&str>) -> StoreResult<()> {
        if let Some(record) = lock(&self.tables).rooms.get_mut(room) {
            record.topic = topic.map(str::to_string);
        }
        Ok(())
    }

    async fn delete_room(&self, room: &str) -> StoreResult<()> {
        let mut t = lock(&self.tables);
        t.rooms.remove(room);
        t.members.retain(|(r, _), _| r != room);
        t.roles.retain(|(r, _), _| r != room);
        t.messages.retain(|(r, _), _| r != room);
        t.views.retain(|(r, _), _| r != room);
        Ok(())
    }

    async fn set_read(&self, room: &str, user: &str, seq: u64) -> StoreResult<()> {
        if let Some(read) = lock(&self.tables)
            .members
            .get_mut(&(room.to_string(), user.to_string()))
        {
            *read = (*read).max(seq);
        }
        Ok(())
    }

    async fn rooms_of(&self, user: &str) -> StoreResult<Vec<String>> {
        let t = lock(&self.tables);
        Ok(t.members
            .keys()
            .filter(|(_, u)| u == user)
            .map(|(room, _)| room.clone())
            .collect())
    }

    async fn public_rooms(
        &self,
        query: &str,
        after: &str,
        limit: u64,
    ) -> StoreResult<Vec<(RoomRecord, u64)>> {
        let t = lock(&self.tables);
        let query = query.to_lowercase();
        Ok(t.rooms
            .values()
            .filter(|r| !r.private && !r.name.starts_with('!') && r.name.as_str() > after)
            .filter(|r| r.name.to_lowercase().contains(&query))
            .take(limit as usize)
            .map(|r| {
                let members = t.members.keys().filter(|(room, _)| *room == r.name).count();
                (r.clone(), members as u64)
            })
            .collect())
    }
}

#[async_trait]
impl History for MemoryDatabase {
    async fn write(&self, messages: &[ChatMessage]) -> StoreResult<()> {
        let mut t = lock(&self.tables);
        for m in messages {
            let key = (m.room.clone(), m.seq);
            if t.messages.contains_key(&key) {
                continue; // written before: applied before
            }
            t.messages.insert(key.clone(), m.clone());
            let target = match (&m.event, m.reply_to) {
                (Some(event), _) => Some(event.target()),
                (None, reply_to) => {
                    t.views.insert(key, crate::life::MessageView::of(m));
                    reply_to
                }
            };
            if let Some(view) = target.and_then(|seq| t.views.get_mut(&(m.room.clone(), seq))) {
                view.apply(m);
            }
        }
        Ok(())
    }

    async fn page(
        &self,
        room: &str,
        query: HistoryQuery,
        limit: usize,
    ) -> StoreResult<Vec<ChatMessage>> {
        let t = lock(&self.tables);
        let all: Vec<ChatMessage> = t
            .messages
            .range((room.to_string(), 0)..=(room.to_string(), u64::MAX))
            .map(|(key, m)| {
                let mut m = m.clone();
                if let Some(view) = t.views.get(key) {
                    m.body = view.body.clone().unwrap_or_default();
                    m.edited_at = view.edited_at;
                    m.deleted = view.deleted;
                    m.attachments = view.attachments.clone();
                }
                m
            })
            .collect();
        Ok(select_page(&all, |m| m.seq, query, limit).to_vec())
    }

    async fn views(&self, room: &str, seqs: &[u64]) -> StoreResult<Vec<MessageView>> {
        let t = lock(&self.tables);
        Ok(seqs
            .iter()
            .filter_map(|seq| t.views.get(&(room.to_string(), *seq)).cloned())
            .collect())
    }

    async fn pinned(&self, room: &str) -> StoreResult<Vec<u64>> {
        let t = lock(&self.tables);
        Ok(t.views
            .range((room.to_string(), 0)..=(room.to_string(), u64::MAX))
            .filter(|(_, v)| v.pinned)
            .map(|((_, seq), _)| *seq)
            .collect())
    }

    async fn replies(
        &self,
        room: &str,
        seq: u64,
        after: u64,
        limit: usize,
    ) -> StoreResult<Vec<u64>> {
        let t = lock(&self.tables);
        Ok(t.views
            .range((room.to_string(), after + 1)..=(room.to_string(), u64::MAX))
            .filter(|(_, v)| v.reply_to == Some(seq))
            .map(|((_, s), _)| *s)
            .take(limit)
            .collect())
    }

    async fn unread(&self, room: &str, user: &str, after: u64) -> StoreResult<u64> {
        let t = lock(&self.tables);
        Ok(t.views
            .range((room.to_string(), after + 1)..=(room.to_string(), u64::MAX))
            .filter(|(_, v)| !v.deleted && v.from != user)
            .count() as u64)
    }
}

#[async_trait]
impl CheckpointStore for MemoryDatabase {
    async fn load(&self, room: &str) -> StoreResult<Option<Checkpoint>> {
        Ok(lock(&self.tables).checkpoints.get(room).cloned())
    }

    async fn save(&self, checkpoint: &Checkpoint) -> StoreResult<()> {
        lock(&self.tables)
            .checkpoints
            .insert(checkpoint.room.clone(), checkpoint.clone());
        Ok(())
    }
}

/// Tokens, token buckets and last-seen times of one node.
#[derive(Default)]
pub struct MemoryEphemeral {
    tokens: Mutex<HashMap<String, TokenInfo>>,
    /// The next sweep of expired tokens comes when `tokens` is this long.
    tokens_sweep_at: AtomicUsize,
    /// Rate limits on governor (see [`super::throttle`]).
    throttles: super::throttle::Throttles,
    last_seen: Mutex<HashMap<String, i64>>,
    /// (user, node) -> heartbeat deadline in ms
    online: Mutex<HashMap<(String, String), i64>>,
}

#[async_trait]
impl EphemeralStore for MemoryEphemeral {
    async fn put_token(&self, token: &str, info: &TokenInfo) -> StoreResult<()> {
        let mut tokens = lock(&self.tokens);
        // Expired tokens are dropped as new ones arrive, so the map stays
        // bounded (at most twice the live tokens, or 1,024), but only once it
        // has doubled since the last sweep: a sweep on every put made each
        // login and session start O(tokens), 16 % of the server's CPU while
        // it accepted 10,000 connections (perf). `token` ignores expired ones.
        if tokens.len() >= self.tokens_sweep_at.load(Ordering::Relaxed) {
            let now = now_ms();
            tokens.retain(|_, t| t.expires_at > now);
            let next = (tokens.len() * 2).max(1024);
            self.tokens_sweep_at.store(next, Ordering::Relaxed);
        }
        tokens.insert(token.to_string(), info.clone());
        Ok(())
    }

    async fn token(&self, token: &str) -> StoreResult<Option<TokenInfo>> {
        let tokens = lock(&self.tokens);
        Ok(tokens
            .get(token)
            .filter(|t| t.expires_at > now_ms())
            .cloned())
    }

    async fn revoke_token(&self, token: &str) -> StoreResult<()> {
        lock(&self.tokens).remove(token);
        Ok(())
    }

    async fn rate_limit(
        &self,
        key: &str,
        burst: u32,
        per_second: f64,
        cost: u32,
    ) -> StoreResult<Option<Duration>> {
        Ok(self.throttles.take(key, burst, per_second, cost))
    }

    async fn set_last_seen(&self, user: &str, ts: i64) -> StoreResult<()> {
        lock(&self.last_seen).insert(user.to_string(), ts);
        Ok(())
    }

    async fn last_seen(&self, users: &[String]) -> StoreResult<HashMap<String, i64>> {
        let seen = lock(&self.last_seen);
        Ok(users
            .iter()
            .filter_map(|u| seen.get(u).map(|ts| (u.clone(), *ts)))
            .collect())
    }

    async fn heartbeat(
        &self,
        node: &str,
        users: &[String],
        ttl: std::time::Duration,
    ) -> StoreResult<()> {
        let deadline = now_ms() + ttl.as_millis() as i64;
        let mut online = lock(&self.online);
        for user in users {
            online.insert((user.clone(), node.to_string()), deadline);
        }
        Ok(())
    }

    async fn offline(&self, node: &str, user: &str) -> StoreResult<()> {
        lock(&self.online).remove(&(user.to_string(), node.to_string()));
        Ok(())
    }

    async fn online(&self) -> StoreResult<Vec<String>> {
        let now = now_ms();
        let mut online = lock(&self.online);
        online.retain(|_, deadline| *deadline > now);
        let mut users: Vec<String> = online.keys().map(|(u, _)| u.clone()).collect();
        users.sort();
        users.dedup();
        Ok(users)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn rate_limits_take_and_look() {
        // The buckets themselves are tested in `throttle`; this is the store's contract.
        let e = MemoryEphemeral::default();
        for _ in 0..3 {
            assert_eq!(e.rate_limit("k", 3, 0.5, 1).await.unwrap(), None);
        }
        assert!(e.rate_limit("k", 3, 0.5, 0).await.unwrap().is_some());
        let wait = e.rate_limit("k", 3, 0.5, 1).await.unwrap();
        let wait = wait.expect("empty: a wait");
        assert!(wait > Duration::from_millis(1900) && wait <= Duration::from_secs(2));
    }

    #[tokio::test]
    async fn expired_and_revoked_tokens_are_refused() {
        let e = MemoryEphemeral::default();
        let info = |expires_at| TokenInfo {
            user_id: 1,
            username: "ann".into(),
            expires_at,
            parent: None,
        };
        e.put_token("live", &info(now_ms() + 60_000)).await.unwrap();
        e.put_token("old", &info(now_ms() - 1)).await.unwrap();
        assert!(e.token("live").await.unwrap().is_some());
        assert!(e.token("old").await.unwrap().is_none());
        e.revoke_token("live").await.unwrap();
        assert!(e.token("live").await.unwrap().is_none());
    }

    #[tokio::test]
    async fn usernames_are_unique_regardless_of_case() {
        let db = MemoryDatabase::default();
        db.create_user("alice", "h").await.unwrap();
        assert!(matches!(
            db.create_user("ALICE", "h").await,
            Err(StoreError::Conflict(_))
        ));
        // Found in any case, with the name as registered.
        let found = db.find_user("AlIcE").await.unwrap().expect("alice");
        assert_eq!(found.username, "alice");
        db.create_user("Bob", "h").await.unwrap();
        assert_eq!(db.find_user("bob").await.unwrap().unwrap().username, "Bob");
        assert!(db.find_user("carol").await.unwrap().is_none());
    }
}

/// Room leases in memory: for unit tests of fencing.
#[derive(Default)]
pub struct MemoryLeases {
    /// room -> (owner, epoch)
    leases: Mutex<HashMap<String, (Option<String>, u64)>>,
}

#[async_trait]
impl LeaseStore for MemoryLeases {
    async fn acquire(&self, room: &str, node: &str, min_epoch: u64) -> StoreResult<u64> {
        let mut leases = self.leases.lock().expect("lease lock");
        let entry = leases.entry(room.to_string()).or_insert((None, 0));
        entry.0 = Some(node.to_string());
        entry.1 = (entry.1 + 1).max(min_epoch);
        Ok(entry.1)
    }

    async fn holds(&self, room: &str, node: &str, epoch: u64) -> StoreResult<bool> {
        let leases = self.leases.lock().expect("lease lock");
        Ok(leases
            .get(room)
            .is_some_and(|(owner, e)| owner.as_deref() == Some(node) && *e == epoch))
    }

    async fn raise(&self, room: &str, node: &str, epoch: u64, new_epoch: u64) -> StoreResult<bool> {
        let mut leases = self.leases.lock().expect("lease lock");
        match leases.get_mut(room) {
            Some((Some(owner), e)) if owner == node && *e == epoch => {
                *e = new_epoch;
                Ok(true)
            }
            _ => Ok(false),
        }
    }

    async fn release(&self, room: &str, node: &str, epoch: u64) -> StoreResult<()> {
        let mut leases = self.leases.lock().expect("lease lock");
        if let Some((owner, e)) = leases.get_mut(room) {
            if owner.as_deref() == Some(node) && *e == epoch {
                *owner = None;
            }
        }
        Ok(())
    }

    async fn owners(&self) -> StoreResult<Vec<(String, String, u64)>> {
        let leases = self.leases.lock().expect("lease lock");
        let mut out: Vec<_> = leases
            .iter()
            .filter_map(|(room, (owner, e))| Some((room.clone(), owner.clone()?, *e)))
            .collect();
        out.sort();
        Ok(out)
    }
}

//! Who is notified of a message: the history store, wrapped.
//!
//! Every message reaches history through `History::write`, on its first
//! write and again when a room replays its log after a restore or a
//! failover. Watching that one call (instead of the room's send path)
//! means a message acknowledged and then lost with its node (`kill -9`
//! before anyone was notified) is still notified when the room comes back,
//! and the room itself needs no hook at all. The outbox write happens
//! before the history write reports success: if it fails, the room retries
//! the whole batch (history is idempotent on (room, seq), and so is the
//! outbox on (user, room, seq)).

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;

use async_trait::async_trait;
use troupe_actors::frames::{ChatMessage, HistoryQuery};
use troupe_actors::life::MessageView;
use troupe_actors::room::{dm_members, BROADCAST_ROOM};
use troupe_actors::store::{Directory, EphemeralStore, History, StoreResult};

use super::Notification;
use crate::stores::notifications::NewNotification;
use crate::stores::sql::SqlStore;

/// Characters of the body a notification carries at most.
pub const PREVIEW_CHARS: usize = 140;

/// `History` that also puts offline recipients' notifications in the outbox.
pub struct NotifyingHistory {
    pub inner: Arc<dyn History>,
    pub directory: Arc<dyn Directory>,
    pub ephemeral: Arc<dyn EphemeralStore>,
    pub outbox: SqlStore,
    /// Wakes the delivery worker when something was added.
    pub wake: Arc<tokio::sync::Notify>,
}

/// The users named as `@name` in `body`, as written (any case), each once.
pub fn mentions(body: &str) -> Vec<String> {
    let valid = |c: char| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-');
    let mut found = Vec::new();
    let mut rest = body;
    while let Some(at) = rest.find('@') {
        // `a@b` (an e-mail address) names nobody.
        let before = rest[..at].chars().next_back();
        rest = &rest[at + 1..];
        if before.is_some_and(valid) {
            continue;
        }
        let end = rest.find(|c: char| !valid(c)).unwrap_or(rest.len());
        // A sentence may end right after the name: "thanks @bob."
        let name = rest[..end].trim_end_matches(['.', '-']);
        if name.len() >= 3 && !found.iter().any(|f: &String| f.eq_ignore_ascii_case(name)) {
            found.push(name.to_string());
        }
        rest = &rest[end..];
    }
    found
}

/// Who a message is for, by name as the room knows them: the other user of
/// a DM, the members a group message mentions. Never the sender.
pub fn recipients(msg: &ChatMessage, members: &[String]) -> Vec<String> {
    if msg.event.is_some() || msg.deleted || msg.room == BROADCAST_ROOM {
        return Vec::new();
    }
    let wanted: Vec<String> = match dm_members(&msg.room) {
        Some((a, b)) => vec![if msg.from == a { b } else { a }.to_string()],
        None => mentions(&msg.body),
    };
    members
        .iter()
        .filter(|m| !m.eq_ignore_ascii_case(&msg.from))
        .filter(|m| wanted.iter().any(|w| w.eq_ignore_ascii_case(m)))
        .cloned()
        .collect()
}

/// Might the message notify anyone? (Cheap: most messages are not.)
fn may_notify(msg: &ChatMessage) -> bool {
    msg.event.is_none()
        && msg.room != BROADCAST_ROOM
        && (dm_members(&msg.room).is_some() || msg.body.contains('@'))
}

impl NotifyingHistory {
    async fn outbox_rows(&self, messages: &[ChatMessage]) -> StoreResult<Vec<NewNotification>> {
        let mut by_room: BTreeMap<&str, Vec<&ChatMessage>> = BTreeMap::new();
        for msg in messages.iter().filter(|m| may_notify(m)) {
            by_room.entry(msg.room.as_str()).or_default().push(msg);
        }
        if by_room.is_empty() {
            return Ok(Vec::new());
        }
        let online: HashSet<String> = self.ephemeral.online().await?.into_iter().collect();
        let mut rows = Vec::new();
        for (room, msgs) in by_room {
            let members = self.directory.members(room).await?;
            let names: Vec<String> = members.iter().map(|m| m.user.clone()).collect();
            for msg in msgs {
                for user in recipients(msg, &names) {
                    if online.contains(&user) {
                        continue;
                    }
                    let read = members
                        .iter()
                        .find(|m| m.user == user)
                        .map_or(0, |m| m.read_seq);
                    let unread = self.inner.unread(room, &user, read).await?;
                    let n = Notification::of(&user, msg, unread);
                    rows.push(NewNotification {
                        user,
                        room: room.to_string(),
                        seq: msg.seq,
                        body: serde_json::to_string(&n).unwrap_or_default(),
                    });
                }
            }
        }
        Ok(rows)
    }
}

#[async_trait]
impl History for NotifyingHistory {
    async fn write(&self, messages: &[ChatMessage]) -> StoreResult<()> {
        self.inner.write(messages).await?;
        let rows = self.outbox_rows(messages).await?;
        if !rows.is_empty() {
            self.outbox
                .add_notifications(&rows, troupe_actors::limits::now_ms())
                .await?;
            self.wake.notify_one();
        }
        Ok(())
    }

    async fn views(&self, room: &str, seqs: &[u64]) -> StoreResult<Vec<MessageView>> {
        self.inner.views(room, seqs).await
    }

    async fn pinned(&self, room: &str) -> StoreResult<Vec<u64>> {
        self.inner.pinned(room).await
    }

    async fn replies(
        &self,
        room: &str,
        seq: u64,
        after: u64,
        limit: usize,
    ) -> StoreResult<Vec<u64>> {
        self.inner.replies(room, seq, after, limit).await
    }

    async fn unread(&self, room: &str, user: &str, after: u64) -> StoreResult<u64> {
        self.inner.unread(room, user, after).await
    }

    async fn page(
        &self,
        room: &str,
        query: HistoryQuery,
        limit: usize,
    ) -> StoreResult<Vec<ChatMessage>> {
        self.inner.page(room, query, limit).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg(room: &str, from: &str, body: &str) -> ChatMessage {
        ChatMessage {
            room: room.into(),
            seq: 1,
            from: from.into(),
            body: body.into(),
            ..Default::default()
        }
    }

    #[test]
    fn mentions_are_names_after_an_at_sign() {
        assert_eq!(mentions("hi @bob and @Carol."), ["bob", "Carol"]);
        assert_eq!(mentions("@bob @BOB @bob"), ["bob"]);
        assert!(mentions("mail ann@example.com, or @x").is_empty());
        assert_eq!(mentions("(@dan_1-2)"), ["dan_1-2"]);
    }

    #[test]
    fn recipients_are_the_dm_peer_or_the_mentioned_members_never_the_sender() {
        let members: Vec<String> = ["ann", "bob", "cat"].map(String::from).to_vec();
        assert_eq!(
            recipients(&msg("dm:ann:bob", "ann", "hi"), &members),
            ["bob"]
        );
        assert_eq!(
            recipients(&msg("dm:ann:bob", "bob", "hi"), &members),
            ["ann"]
        );
        assert_eq!(
            recipients(&msg("lobby", "ann", "@BOB @ann @zed @cat"), &members),
            ["bob", "cat"]
        );
        assert!(recipients(&msg("lobby", "ann", "no one"), &members).is_empty());
        assert!(recipients(&msg(BROADCAST_ROOM, "ann", "@bob"), &members).is_empty());
    }
}

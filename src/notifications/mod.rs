//! Offline notifications by webhook (docs/notifications.md).
//!
//! When a user who is online on no node gets a DM or is `@mentioned` in a
//! room they belong to, a JSON [`Notification`] is POSTed to
//! `notifications.webhook_url`, signed with `notifications.secret`.
//!
//! Two halves, joined by a durable outbox table (`notifications`, one row
//! per (user, room, seq)):
//! - [`watch`] decides who is notified as messages are written to history,
//!   and adds their rows to the outbox (an existing row is left alone, so a
//!   message written twice is notified once);
//! - [`deliver`] runs on every node: it claims due rows with a conditional
//!   update, POSTs them, marks them delivered, or schedules a retry with
//!   backoff. A claim runs out, so a node that dies mid-delivery leaves its
//!   rows to the others (or to itself after a restart).
//!
//! Guarantee: each (user, room, seq) is delivered at least once while the
//! attempts last; it is POSTed more than once only when a node dies (or
//! loses the database) between the webhook's answer and the mark, or the
//! answer takes longer than the claim. Every POST of the same notification
//! carries the same `id` (`user:room:seq`, also the `X-Troupe-Notification`
//! header), so a receiver that drops ids it has seen gets each exactly once.

pub mod deliver;
pub mod watch;

use std::sync::Arc;
use std::time::Duration;

use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::Sha256;
use troupe_actors::frames::ChatMessage;
use troupe_actors::store::Stores;

use crate::config::NotificationsSection;
use crate::stores::sql::SqlStore;

/// The header with the body's signature: `sha256=<hex of HMAC-SHA256>`.
pub const SIGNATURE_HEADER: &str = "X-Troupe-Signature";
/// The header with the notification's id.
pub const ID_HEADER: &str = "X-Troupe-Notification";
/// The header naming the node that sent the POST (for the receiver's logs).
pub const NODE_HEADER: &str = "X-Troupe-Node";

/// What the webhook receives, as JSON.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Notification {
    /// `user:room:seq`: the same on every attempt; deduplicate on it.
    pub id: String,
    /// Who is notified.
    pub user: String,
    pub room: String,
    pub seq: u64,
    /// Who wrote the message.
    pub from: String,
    /// The message's first characters (at most 140).
    pub preview: String,
    /// Messages of others in the room `user` has not read, this one included.
    pub unread: u64,
    /// When the message was sent, in ms since the epoch.
    pub ts: i64,
}

impl Notification {
    pub fn of(user: &str, msg: &ChatMessage, unread: u64) -> Self {
        Notification {
            id: format!("{user}:{}:{}", msg.room, msg.seq),
            user: user.to_string(),
            room: msg.room.clone(),
            seq: msg.seq,
            from: msg.from.clone(),
            preview: msg.body.chars().take(watch::PREVIEW_CHARS).collect(),
            unread,
            ts: msg.ts,
        }
    }
}

/// `sha256=<hex>` of the HMAC-SHA256 of `body` under `secret`.
pub fn signature(secret: &str, body: &[u8]) -> String {
    let mut mac =
        Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("HMAC takes a key of any size");
    mac.update(body);
    let hex: String = mac
        .finalize()
        .into_bytes()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    format!("sha256={hex}")
}

/// With a webhook configured: wraps `stores.history` so that messages put
/// notifications in the outbox, and starts this node's delivery worker.
/// Without one, `stores` is returned as it was.
pub fn start(
    config: &NotificationsSection,
    node: &str,
    sql: SqlStore,
    mut stores: Stores,
) -> Stores {
    let (Some(url), Some(secret)) = (config.webhook_url.clone(), config.secret.clone()) else {
        return stores;
    };
    let wake = Arc::new(tokio::sync::Notify::new());
    stores.history = Arc::new(watch::NotifyingHistory {
        inner: stores.history.clone(),
        directory: stores.directory.clone(),
        ephemeral: stores.ephemeral.clone(),
        outbox: sql.clone(),
        wake: wake.clone(),
    });
    let worker = deliver::Worker {
        node: node.to_string(),
        url,
        secret,
        outbox: sql,
        timeout: Duration::from_millis(config.timeout_ms),
        max_attempts: config.max_attempts,
        backoff: Duration::from_millis(config.backoff_ms),
        max_backoff: Duration::from_millis(config.max_backoff_ms),
        poll: Duration::from_millis(config.poll_ms),
        wake,
    };
    tracing::info!(webhook = %worker.url_for_log(), "offline notifications on");
    tokio::spawn(worker.run());
    stores
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signature_is_the_rfc_4231_hmac_sha256() {
        // RFC 4231, test case 2.
        assert_eq!(
            signature("Jefe", b"what do ya want for nothing?"),
            "sha256=5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }

    #[test]
    fn preview_is_cut_at_140_characters_and_id_names_user_room_seq() {
        let msg = ChatMessage {
            room: "lobby".into(),
            seq: 7,
            from: "ann".into(),
            body: "é".repeat(200),
            ..Default::default()
        };
        let n = Notification::of("bob", &msg, 3);
        assert_eq!(n.preview.chars().count(), 140);
        assert_eq!(n.id, "bob:lobby:7");
        assert_eq!(n.unread, 3);
    }
}

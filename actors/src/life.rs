//! Messages that live: the current state of a message (its view) and how the
//! room events of the log change it. One pure set of rules, shared by the
//! Room (which checks an event against the view before appending it, and
//! keeps the views of recent messages current) and by the history stores
//! (which apply the same events to the rows behind the log), so that a view
//! rebuilt from the database after a restart is the one the room had.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use unicode_segmentation::UnicodeSegmentation;

use crate::frames::{ChatError, ChatMessage, ErrorCode, MessageEvent};

/// Most distinct emoji on one message.
pub const MAX_REACTIONS: usize = 20;
/// Longest `:short_name:` reaction, colons included.
pub const MAX_SHORT_NAME: usize = 32;

/// One earlier body of an edited message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Version {
    pub version: u32,
    pub body: String,
    /// When this body was written (the send, or the edit that made it).
    pub ts: i64,
}

/// A message's current state, as `GET /api/v1/rooms/{room}/messages/{seq}`
/// answers it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct MessageView {
    pub room: String,
    pub seq: u64,
    pub from: String,
    /// None once deleted.
    pub body: Option<String>,
    pub ts: i64,
    /// 1 as sent, +1 per edit.
    pub version: u32,
    pub edited_at: Option<i64>,
    pub deleted: bool,
    /// Emoji -> the users who reacted with it, sorted.
    pub reactions: BTreeMap<String, Vec<String>>,
    pub pinned: bool,
    pub reply_to: Option<u64>,
    pub reply_count: u64,
    #[serde(default)]
    pub attachments: Vec<String>,
    /// Earlier bodies, oldest first (not part of the view's JSON: served by
    /// `.../versions`).
    #[serde(skip)]
    pub versions: Vec<Version>,
}

impl MessageView {
    /// The view of a message as sent.
    pub fn of(message: &ChatMessage) -> Self {
        MessageView {
            room: message.room.clone(),
            seq: message.seq,
            from: message.from.clone(),
            body: Some(message.body.clone()),
            ts: message.ts,
            version: 1,
            edited_at: None,
            deleted: false,
            reactions: BTreeMap::new(),
            pinned: false,
            reply_to: message.reply_to,
            reply_count: 0,
            attachments: message.attachments.clone(),
            versions: Vec::new(),
        }
    }

    /// Applies one record of the room that concerns this message: an event
    /// targeting it, or a reply to it. Returns what changed for the stores.
    pub fn apply(&mut self, record: &ChatMessage) -> Change {
        match &record.event {
            None => {
                if record.reply_to == Some(self.seq) {
                    self.reply_count += 1;
                    return Change::Replied;
                }
                Change::None
            }
            Some(event) if event.target() != self.seq => Change::None,
            // A deleted message stays deleted: later events (which the room
            // refuses anyway) change nothing.
            Some(_) if self.deleted => Change::None,
            Some(MessageEvent::Edit { body, .. }) => {
                let old = self.body.replace(body.clone()).unwrap_or_default();
                let version = Version {
                    version: self.version,
                    body: old,
                    ts: self.edited_at.unwrap_or(self.ts),
                };
                self.versions.push(version.clone());
                self.version += 1;
                self.edited_at = Some(record.ts);
                Change::Edited(version)
            }
            Some(MessageEvent::Delete { .. }) => {
                self.deleted = true;
                self.body = None;
                self.versions.clear();
                self.reactions.clear();
                self.pinned = false;
                Change::Deleted(std::mem::take(&mut self.attachments))
            }
            Some(MessageEvent::React { emoji, .. }) => {
                let users = self.reactions.entry(emoji.clone()).or_default();
                match users.binary_search(&record.from) {
                    Ok(_) => Change::None,
                    Err(at) => {
                        users.insert(at, record.from.clone());
                        Change::Reacted
                    }
                }
            }
            Some(MessageEvent::Unreact { emoji, .. }) => {
                let Some(users) = self.reactions.get_mut(emoji) else {
                    return Change::None;
                };
                let Ok(at) = users.binary_search(&record.from) else {
                    return Change::None;
                };
                users.remove(at);
                if users.is_empty() {
                    self.reactions.remove(emoji);
                }
                Change::Unreacted
            }
            Some(MessageEvent::Pin { .. }) => {
                self.pinned = true;
                Change::Pinned
            }
            Some(MessageEvent::Unpin { .. }) => {
                self.pinned = false;
                Change::Pinned
            }
        }
    }

    /// May `user` apply `event` now? `owner`: the room's creator, or an
    /// admin. A refusal is a clear error; nothing is appended.
    pub fn check(&self, event: &MessageEvent, user: &str, owner: bool) -> Result<(), ChatError> {
        if self.deleted {
            return Err(ChatError::not_found(format!(
                "message {} was deleted",
                self.seq
            )));
        }
        let author = self.from == user;
        match event {
            MessageEvent::Edit { .. } if !author => {
                Err(ChatError::forbidden("only the author may edit a message"))
            }
            MessageEvent::Delete { .. } | MessageEvent::Pin { .. } | MessageEvent::Unpin { .. }
                if !(author || owner) =>
            {
                Err(ChatError::forbidden(format!(
                    "only the author or the room's owner may {} a message",
                    event.kind()
                )))
            }
            MessageEvent::React { emoji, .. } => {
                check_emoji(emoji)?;
                if !self.reactions.contains_key(emoji) && self.reactions.len() >= MAX_REACTIONS {
                    return Err(ChatError::new(
                        ErrorCode::Conflict,
                        format!("a message has at most {MAX_REACTIONS} distinct reactions"),
                    ));
                }
                Ok(())
            }
            MessageEvent::Unreact { emoji, .. } => check_emoji(emoji),
            _ => Ok(()),
        }
    }
}

/// What applying a record changed (the stores mirror it in their tables).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    None,
    Replied,
    /// The body that was replaced, now a version.
    Edited(Version),
    /// The attachments the deleted message referenced.
    Deleted(Vec<String>),
    Reacted,
    Unreacted,
    Pinned,
}

/// An emoji is one grapheme (no spaces or control characters) or a
/// `:short_name:` of at most 32 characters (letters, digits, `_`, `+`, `-`).
pub fn check_emoji(emoji: &str) -> Result<(), ChatError> {
    let bad = |why: &str| {
        Err(ChatError::bad_request(format!(
            "bad emoji {emoji:?}: {why}"
        )))
    };
    if let Some(name) = emoji
        .strip_prefix(':')
        .and_then(|rest| rest.strip_suffix(':'))
    {
        if emoji.chars().count() > MAX_SHORT_NAME {
            return bad("a :short_name: has at most 32 characters");
        }
        let ok = !name.is_empty()
            && name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '+' | '-'));
        return if ok {
            Ok(())
        } else {
            bad("a :short_name: holds letters, digits, _, + or -")
        };
    }
    if emoji.graphemes(true).count() != 1 {
        return bad("one emoji (one grapheme) or a :short_name:");
    }
    if emoji.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return bad("not a visible character");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg(seq: u64, from: &str, event: Option<MessageEvent>) -> ChatMessage {
        ChatMessage {
            room: "r".into(),
            seq,
            from: from.into(),
            body: if event.is_none() {
                "hello".into()
            } else {
                String::new()
            },
            ts: seq as i64 * 10,
            client_id: format!("c{seq}"),
            event,
            ..Default::default()
        }
    }

    #[test]
    fn emoji_rules() {
        for ok in ["👍", "👩‍👩‍👧", "🇫🇷", ":tada:", ":+1:", "a", "é"] {
            assert!(check_emoji(ok).is_ok(), "{ok}");
        }
        for bad in [
            "",
            "ab",
            "👍👍",
            " ",
            "::",
            ":a b:",
            &format!(":{}:", "x".repeat(31)),
        ] {
            assert!(check_emoji(bad).is_err(), "{bad}");
        }
        // The longest :short_name: counts its colons: 32 characters in all.
        let longest = format!(":{}:", "x".repeat(30));
        assert_eq!(longest.chars().count(), MAX_SHORT_NAME);
        assert!(check_emoji(&longest).is_ok());
    }

    #[test]
    fn events_change_the_view() {
        let mut v = MessageView::of(&msg(1, "ann", None));
        let edit = msg(
            2,
            "ann",
            Some(MessageEvent::Edit {
                target: 1,
                body: "new".into(),
            }),
        );
        assert!(v.check(edit.event.as_ref().unwrap(), "bob", false).is_err());
        assert!(v.check(edit.event.as_ref().unwrap(), "ann", false).is_ok());
        assert!(matches!(v.apply(&edit), Change::Edited(_)));
        assert_eq!(v.body.as_deref(), Some("new"));
        assert_eq!(v.version, 2);
        assert_eq!(v.versions[0].body, "hello");
        let react = msg(
            3,
            "bob",
            Some(MessageEvent::React {
                target: 1,
                emoji: "👍".into(),
            }),
        );
        v.apply(&react);
        assert_eq!(v.apply(&react), Change::None, "idempotent");
        assert_eq!(v.reactions["👍"], vec!["bob".to_string()]);
        let mut reply = msg(4, "bob", None);
        reply.reply_to = Some(1);
        v.apply(&reply);
        assert_eq!(v.reply_count, 1);
        let delete = msg(5, "ann", Some(MessageEvent::Delete { target: 1 }));
        v.apply(&delete);
        assert!(v.deleted && v.body.is_none() && v.versions.is_empty() && v.reactions.is_empty());
        assert!(v.check(edit.event.as_ref().unwrap(), "ann", false).is_err());
    }

    #[test]
    fn at_most_twenty_distinct_reactions() {
        let mut v = MessageView::of(&msg(1, "ann", None));
        for i in 0..MAX_REACTIONS {
            let emoji = format!(":e{i}:");
            v.apply(&msg(
                2 + i as u64,
                "bob",
                Some(MessageEvent::React { target: 1, emoji }),
            ));
        }
        let more = MessageEvent::React {
            target: 1,
            emoji: ":more:".into(),
        };
        assert_eq!(
            v.check(&more, "bob", false).unwrap_err().code,
            ErrorCode::Conflict
        );
        let again = MessageEvent::React {
            target: 1,
            emoji: ":e0:".into(),
        };
        assert!(v.check(&again, "ann", false).is_ok());
    }
}

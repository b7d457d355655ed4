//! Rooms that people run: the room's side of roles, kicks, topics and
//! deletion. Every change is checked here against the caller's role
//! ([`crate::roles`]), written to the directory, then pushed as a frame to
//! every subscribed connection, wherever its node (the room's subscribers
//! include remote sessions), and published as a domain event.

use ractor::ActorRef;
use serde::{Deserialize, Serialize};
use tokio_tungstenite::tungstenite::Utf8Bytes;

use super::state::{RoomKind, RoomState};
use super::RoomMsg;
use crate::frames::{ChatError, ServerFrame};
use crate::roles::Role;
use crate::session::SessionMsg;
use crate::store::events::DomainEvent;

/// The longest topic, in characters.
pub const MAX_TOPIC: usize = 512;

/// What a member of a room asks of it (REST and line commands).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum ManageAction {
    /// Members with their roles and read positions (any member).
    Members,
    /// Removes `user` (owner/admin; nobody removes the owner; an admin
    /// does not remove another admin).
    Kick { user: String },
    /// Owner only; naming another member `owner` hands the room over (the
    /// old owner becomes an admin).
    SetRole { user: String, role: Role },
    /// Owner/admin; `None` clears it.
    SetTopic { topic: Option<String> },
    /// Owner only: the room, its memberships, history, attachments and search
    /// documents go; every connection is told and leaves it.
    Delete,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemberEntry {
    pub user: String,
    pub role: Role,
    pub last_read_seq: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum ManageAnswer {
    Members(Vec<MemberEntry>),
    Done,
}

impl RoomState {
    pub(crate) fn role_of(&self, user: &str) -> Option<Role> {
        self.members
            .contains_key(user)
            .then(|| self.roles.get(user).copied().unwrap_or(Role::Member))
    }

    fn require_group(&self) -> Result<(), ChatError> {
        match self.kind {
            RoomKind::Group => Ok(()),
            _ => Err(ChatError::bad_request(format!(
                "room {} has no roles: only group rooms do",
                self.name
            ))),
        }
    }

    /// The caller's role, which must be at least `least`.
    fn require(&self, user: &str, least: Role) -> Result<Role, ChatError> {
        self.check_reader(user)?;
        self.require_group()?;
        let role = self.role_of(user).unwrap_or(Role::Member);
        if role < least {
            return Err(ChatError::forbidden(format!(
                "only the room's {} may do that",
                if least == Role::Owner {
                    "owner"
                } else {
                    "owner or admins"
                }
            )));
        }
        Ok(role)
    }

    fn unavailable(e: crate::store::StoreError) -> ChatError {
        ChatError::unavailable(e.to_string())
    }

    pub(crate) async fn manage(
        &mut self,
        myself: &ActorRef<RoomMsg>,
        user: &str,
        action: ManageAction,
    ) -> Result<ManageAnswer, ChatError> {
        match action {
            ManageAction::Members => {
                self.check_reader(user)?;
                let mut members: Vec<MemberEntry> = self
                    .members
                    .iter()
                    .map(|(u, read)| MemberEntry {
                        user: u.clone(),
                        role: self.role_of(u).unwrap_or(Role::Member),
                        last_read_seq: *read,
                    })
                    .collect();
                members.sort_by(|a, b| a.user.cmp(&b.user));
                Ok(ManageAnswer::Members(members))
            }
            ManageAction::Kick { user: target } => {
                self.kick(user, &target).await?;
                Ok(ManageAnswer::Done)
            }
            ManageAction::SetRole { user: target, role } => {
                self.set_role(user, &target, role).await?;
                Ok(ManageAnswer::Done)
            }
            ManageAction::SetTopic { topic } => {
                self.set_topic(user, topic).await?;
                Ok(ManageAnswer::Done)
            }
            ManageAction::Delete => {
                self.delete(myself, user).await?;
                Ok(ManageAnswer::Done)
            }
        }
    }

    async fn kick(&mut self, by: &str, target: &str) -> Result<(), ChatError> {
        let role = self.require(by, Role::Admin)?;
        let Some(target_role) = self.role_of(target) else {
            return Err(ChatError::not_found(format!(
                "{target} is not a member of room {}",
                self.name
            )));
        };
        if target_role == Role::Owner {
            return Err(ChatError::forbidden("nobody removes the room's owner"));
        }
        if target_role >= role {
            return Err(ChatError::forbidden("only the owner removes an admin"));
        }
        self.ctx
            .stores
            .directory
            .remove_member(&self.name, target)
            .await
            .map_err(Self::unavailable)?;
        self.members.remove(target);
        self.roles.remove(target);
        let members = self.members.len();
        self.ctx.stores.events.publish(DomainEvent::new(
            "room.kicked",
            &self.name,
            serde_json::json!({ "room": self.name, "user": target, "by": by, "members": members }),
        ));
        let frame = ServerFrame::Kicked {
            room: self.name.clone(),
            user: target.to_string(),
            by: by.to_string(),
            members,
        }
        .encode();
        self.detach_user(target, &frame);
        self.fan_out(&frame, None);
        Ok(())
    }

    /// Sends `frame` to every connection of `user` (live or not), then drops
    /// their subscriptions: they are no longer in the room.
    pub(crate) fn detach_user(&mut self, user: &str, frame: &Utf8Bytes) {
        let leaving: Vec<u64> = self
            .subscribers
            .iter()
            .filter(|(_, s)| s.session.user == user)
            .map(|(id, _)| *id)
            .collect();
        for id in leaving {
            if let Some(sub) = self.subscribers.remove(&id) {
                sub.session.outbox.push(frame.clone());
                let _ = sub.session.actor.cast(SessionMsg::Detached {
                    room: self.name.clone(),
                });
            }
        }
    }

    async fn set_role(&mut self, by: &str, target: &str, role: Role) -> Result<(), ChatError> {
        self.require(by, Role::Owner)?;
        let Some(current) = self.role_of(target) else {
            return Err(ChatError::not_found(format!(
                "{target} is not a member of room {}",
                self.name
            )));
        };
        if target == by {
            return Err(ChatError::bad_request(
                "the owner keeps the room: name another owner to hand it over",
            ));
        }
        if current == role {
            return Ok(());
        }
        let directory = self.ctx.stores.directory.clone();
        directory
            .set_role(&self.name, target, role)
            .await
            .map_err(Self::unavailable)?;
        self.roles.insert(target.to_string(), role);
        self.role_changed(target, role, by);
        if role == Role::Owner {
            // One owner: the previous one steps down to admin.
            directory
                .set_role(&self.name, by, Role::Admin)
                .await
                .map_err(Self::unavailable)?;
            self.roles.insert(by.to_string(), Role::Admin);
            self.role_changed(by, Role::Admin, by);
        }
        Ok(())
    }

    /// The owner left: the room passes to an admin, else to a member (the
    /// first by name), so a room with members always has an owner.
    pub(crate) async fn pass_ownership(&mut self, from: &str) {
        let mut heirs: Vec<(Role, &String)> = self
            .members
            .keys()
            .map(|u| (self.roles.get(u).copied().unwrap_or(Role::Member), u))
            .collect();
        heirs.sort_by(|a, b| b.0.cmp(&a.0).then_with(|| a.1.cmp(b.1)));
        let Some(heir) = heirs.first().map(|(_, u)| (*u).clone()) else {
            return;
        };
        match self
            .ctx
            .stores
            .directory
            .set_role(&self.name, &heir, Role::Owner)
            .await
        {
            Ok(()) => {
                self.roles.insert(heir.clone(), Role::Owner);
                self.role_changed(&heir, Role::Owner, from);
            }
            Err(e) => {
                tracing::warn!(room = %self.name, error = %e, "the room's new owner was not stored")
            }
        }
    }

    fn role_changed(&mut self, user: &str, role: Role, by: &str) {
        self.ctx.stores.events.publish(DomainEvent::new(
            "room.role_changed",
            &self.name,
            serde_json::json!({ "room": self.name, "user": user, "role": role, "by": by }),
        ));
        let frame = ServerFrame::RoleChanged {
            room: self.name.clone(),
            user: user.to_string(),
            role,
            by: by.to_string(),
        }
        .encode();
        self.fan_out(&frame, None);
    }

    async fn set_topic(&mut self, by: &str, topic: Option<String>) -> Result<(), ChatError> {
        self.require(by, Role::Admin)?;
        let topic = topic
            .map(|t| t.trim().to_string())
            .filter(|t| !t.is_empty());
        if let Some(t) = &topic {
            if t.chars().count() > MAX_TOPIC {
                return Err(ChatError::bad_request(format!(
                    "a topic holds at most {MAX_TOPIC} characters"
                )));
            }
            if t.chars().any(char::is_control) {
                return Err(ChatError::bad_request(
                    "a topic holds no control characters",
                ));
            }
        }
        self.ctx
            .stores
            .directory
            .set_topic(&self.name, topic.as_deref())
            .await
            .map_err(Self::unavailable)?;
        self.topic = topic.clone();
        self.ctx.stores.events.publish(DomainEvent::new(
            "room.topic_changed",
            &self.name,
            serde_json::json!({ "room": self.name, "topic": topic, "by": by }),
        ));
        let frame = ServerFrame::TopicChanged {
            room: self.name.clone(),
            topic,
            by: by.to_string(),
        }
        .encode();
        self.fan_out(&frame, None);
        Ok(())
    }

    async fn delete(&mut self, myself: &ActorRef<RoomMsg>, by: &str) -> Result<(), ChatError> {
        self.require(by, Role::Owner)?;
        if self.appending || !self.pending.is_empty() || self.reconciling || self.history_writing {
            return Err(ChatError::unavailable(
                "messages are being written to the room; retry",
            ));
        }
        // History and the checkpoint first: the checkpoint stays, so a room
        // made later under the same name does not replay this one's log.
        self.flush_for_stop().await;
        let stores = self.ctx.stores.clone();
        stores
            .directory
            .delete_room(&self.name)
            .await
            .map_err(Self::unavailable)?;
        // The room is gone from here on; what follows only cleans up.
        if let Err(e) = stores.attachments.delete_room(&self.name).await {
            tracing::warn!(room = %self.name, error = %e, "attachments of a deleted room left");
        }
        if let Err(e) = stores.search.remove_room(&self.name).await {
            tracing::warn!(room = %self.name, error = %e, "search documents of a deleted room left");
        }
        stores.events.publish(DomainEvent::new(
            "room.deleted",
            &self.name,
            serde_json::json!({ "room": self.name, "by": by }),
        ));
        let frame = ServerFrame::RoomDeleted {
            room: self.name.clone(),
            by: by.to_string(),
        }
        .encode();
        let users: Vec<String> = self
            .subscribers
            .values()
            .map(|s| s.session.user.clone())
            .collect();
        for user in users {
            self.detach_user(&user, &frame);
        }
        self.members.clear();
        self.roles.clear();
        // Its checkpoint was just saved: stopping need not save it again.
        self.checkpoint_seq = self.history_seq;
        if let Some(supervisor) = myself.try_get_supervisor() {
            let _ = supervisor.send_message(super::supervisor::RoomSupervisorMsg::Forget {
                name: self.name.clone(),
                id: myself.get_id(),
            });
        }
        tracing::info!(room = %self.name, by, "room deleted");
        myself.stop(Some("deleted".into()));
        Ok(())
    }
}

/// The domain event of a committed room event (an edit, a delete, a
/// reaction), if it has one. Its `id` derives from the room and the seq of
/// the record (one event per record). Published from `commit` only: a room
/// restored after a failover does not publish the records it replays.
pub(crate) fn message_event(message: &crate::frames::ChatMessage) -> Option<DomainEvent> {
    use crate::frames::MessageEvent;
    let event = message.event.as_ref()?;
    let (kind, fields) = match event {
        MessageEvent::Edit { target, body } => (
            "message.edited",
            serde_json::json!({ "seq": target, "body": body }),
        ),
        MessageEvent::Delete { target } => {
            ("message.deleted", serde_json::json!({ "seq": target }))
        }
        MessageEvent::React { target, emoji } => (
            "message.reacted",
            serde_json::json!({ "seq": target, "emoji": emoji, "added": true }),
        ),
        MessageEvent::Unreact { target, emoji } => (
            "message.reacted",
            serde_json::json!({ "seq": target, "emoji": emoji, "added": false }),
        ),
        MessageEvent::Pin { .. } | MessageEvent::Unpin { .. } => return None,
    };
    let mut fields = fields;
    fields["room"] = serde_json::json!(message.room);
    fields["by"] = serde_json::json!(message.from);
    fields["event_seq"] = serde_json::json!(message.seq);
    let mut domain = DomainEvent::new(kind, &message.room, fields);
    domain.id = stable_id(&message.room, message.seq);
    Some(domain)
}

/// 32 hex characters from (room, seq): FNV-1a of the room, then the seq.
fn stable_id(room: &str, seq: u64) -> String {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in room.bytes() {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    format!("{hash:016x}{seq:016x}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::frames::{ChatMessage, MessageEvent};

    #[test]
    fn room_events_become_domain_events_with_stable_ids() {
        let message = ChatMessage {
            room: "club".into(),
            seq: 7,
            from: "ann".into(),
            event: Some(MessageEvent::Edit {
                target: 3,
                body: "fixed".into(),
            }),
            ..Default::default()
        };
        let a = message_event(&message).expect("an event");
        let b = message_event(&message).expect("an event");
        assert_eq!((a.kind.as_str(), &a.id), ("message.edited", &b.id));
        assert_eq!(a.data["seq"], 3);
        assert_eq!(a.data["by"], "ann");
        let plain = ChatMessage {
            event: None,
            ..message.clone()
        };
        assert!(message_event(&plain).is_none());
        let other_room = ChatMessage {
            room: "club2".into(),
            ..message
        };
        assert_ne!(message_event(&other_room).expect("an event").id, a.id);
    }
}

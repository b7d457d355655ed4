//! Who is in the room and what each may do: members and roles, joins,
//! invitations, leaves, typing and read state, and the room's summary.

use super::*;

impl RoomState {
    pub(super) fn info(&self) -> RoomInfo {
        RoomInfo {
            name: self.name.clone(),
            private: self.private,
            members: self.members.len(),
            last_seq: self.last_seq,
            topic: self.topic.clone(),
            role: None,
            unread: None,
            last_read_seq: None,
        }
    }

    pub(super) fn is_admin(&self, user: &str) -> bool {
        self.ctx.admins.iter().any(|a| a == user)
    }

    /// May `user` read this room?
    pub(super) fn check_reader(&self, user: &str) -> Result<(), ChatError> {
        match self.kind {
            RoomKind::Broadcast => Ok(()),
            _ if self.members.contains_key(user) => Ok(()),
            _ => Err(ChatError::forbidden(format!(
                "not a member of room {}",
                self.name
            ))),
        }
    }

    /// May `user` post here?
    pub(super) fn check_writer(&self, user: &str) -> Result<(), ChatError> {
        if self.kind == RoomKind::Broadcast
            && self.ctx.limits.broadcast_admin_only
            && !self.is_admin(user)
        {
            return Err(ChatError::forbidden("only admins may broadcast"));
        }
        self.check_reader(user)
    }

    /// Subscribes every local session of `user` and tells each it joined.
    /// `live`: the session that asked, subscribed live (it sent a frame, so it
    /// is live itself: pending, it would miss typing and presence frames until
    /// its `Attached` comes back as an activation).
    pub(super) async fn attach_user(
        &mut self,
        myself: &ActorRef<RoomMsg>,
        user: &str,
        live: Option<u64>,
    ) {
        let sessions = crate::ask(&self.ctx.presence, |reply| PresenceMsg::SessionsOf {
            users: vec![user.to_string()],
            reply,
        })
        .await
        .unwrap_or_default();
        let joined = ServerFrame::Joined {
            room: self.name.clone(),
            members: self.members.len(),
            last_seq: self.last_seq,
        }
        .encode();
        for session in sessions {
            session
                .outbox
                .push_marked(joined.clone(), Marks::seq(self.last_seq));
            let _ = session.actor.cast(SessionMsg::Attached {
                room: self.name.clone(),
                actor: myself.clone(),
                restarted: false,
            });
            // The others pending: each goes live here when it is live itself
            // (on `Attached`), like the user's sessions on other nodes.
            let pending = live != Some(session.id);
            self.subscribe(session, pending);
        }
        // The user's connections on other nodes subscribe through their own.
        if let Some(router) = &self.ctx.router {
            let _ = router.cast(RouterMsg::AttachUser {
                room: self.name.clone(),
                user: user.to_string(),
                joined: joined.as_str().to_string(),
                last_seq: self.last_seq,
            });
        }
    }

    pub(super) async fn join(
        &mut self,
        myself: &ActorRef<RoomMsg>,
        user: &str,
        session: Option<u64>,
    ) -> Result<(), ChatError> {
        match self.kind {
            RoomKind::Broadcast => return Ok(()),
            _ if self.members.contains_key(user) => {
                // Already in: answer `joined` again to the user's connections.
                self.attach_user(myself, user, session).await;
                return Ok(());
            }
            RoomKind::Direct => {
                return Err(ChatError::forbidden("a DM room has exactly two members"))
            }
            RoomKind::Group if self.private => {
                return Err(ChatError::forbidden(format!(
                    "room {} is private: a member must invite you",
                    self.name
                )))
            }
            RoomKind::Group => {}
        }
        self.add_member(myself, user, session).await
    }

    pub(super) async fn add_member(
        &mut self,
        myself: &ActorRef<RoomMsg>,
        user: &str,
        session: Option<u64>,
    ) -> Result<(), ChatError> {
        self.ctx
            .stores
            .directory
            .add_member(&self.name, user)
            .await
            .map_err(|e| ChatError::unavailable(e.to_string()))?;
        self.members.insert(user.to_string(), 0);
        self.roles
            .insert(user.to_string(), crate::roles::Role::Member);
        self.ctx.stores.events.publish(DomainEvent::new(
            "room.joined",
            &self.name,
            serde_json::json!({ "room": self.name, "user": user, "members": self.members.len() }),
        ));
        let frame = ServerFrame::UserJoined {
            room: self.name.clone(),
            user: user.to_string(),
            members: self.members.len(),
        }
        .encode();
        self.fan_out(&frame, Some(user));
        self.attach_user(myself, user, session).await;
        Ok(())
    }

    pub(super) async fn invite(
        &mut self,
        myself: &ActorRef<RoomMsg>,
        by: &str,
        user: &str,
    ) -> Result<(), ChatError> {
        if self.kind != RoomKind::Group {
            return Err(ChatError::bad_request("only group rooms take invitations"));
        }
        self.check_reader(by)?;
        if self.members.contains_key(user) {
            return Ok(());
        }
        let found = self
            .ctx
            .stores
            .directory
            .find_user(user)
            .await
            .map_err(|e| ChatError::unavailable(e.to_string()))?;
        let Some(found) = found else {
            return Err(ChatError::not_found(format!("no user {user}")));
        };
        // Names are matched regardless of case; members are keyed by the
        // registered spelling, the one their sessions carry.
        if self.members.contains_key(&found.username) {
            return Ok(());
        }
        self.add_member(myself, &found.username, None).await
    }

    pub(super) async fn leave(&mut self, user: &str) -> Result<(), ChatError> {
        match self.kind {
            RoomKind::Broadcast => {
                return Err(ChatError::bad_request("nobody leaves the broadcast room"))
            }
            // Its two members are fixed: leaving would silence one side for good.
            RoomKind::Direct => return Err(ChatError::bad_request("a DM room cannot be left")),
            RoomKind::Group => {}
        }
        if !self.members.contains_key(user) {
            return Err(ChatError::not_found(format!(
                "not a member of room {}",
                self.name
            )));
        }
        let was_owner = self.role_of(user) == Some(crate::roles::Role::Owner);
        self.ctx
            .stores
            .directory
            .remove_member(&self.name, user)
            .await
            .map_err(|e| ChatError::unavailable(e.to_string()))?;
        self.members.remove(user);
        self.roles.remove(user);
        if was_owner {
            self.pass_ownership(user).await;
        }
        self.ctx.stores.events.publish(DomainEvent::new(
            "room.left",
            &self.name,
            serde_json::json!({ "room": self.name, "user": user, "members": self.members.len() }),
        ));
        let left = ServerFrame::Left {
            room: self.name.clone(),
            members: self.members.len(),
            last_seq: self.last_seq,
        }
        .encode();
        self.detach_user(user, &left);
        let frame = ServerFrame::UserLeft {
            room: self.name.clone(),
            user: user.to_string(),
            members: self.members.len(),
        }
        .encode();
        self.fan_out(&frame, None);
        Ok(())
    }

    /// Typing and read receipts belong to conversations, not to the broadcast room.
    pub(super) fn check_conversation(&self) -> Result<(), ChatError> {
        if self.kind == RoomKind::Broadcast {
            Err(ChatError::bad_request("not in the broadcast room"))
        } else {
            Ok(())
        }
    }

    pub(super) fn typing(&mut self, user: &str, active: bool, outbox: &Outbox) {
        if let Err(e) = self
            .check_conversation()
            .and_then(|()| self.check_writer(user))
        {
            outbox.push_frame(&ServerFrame::error(&e, Some("typing".into())));
            return;
        }
        let frame = ServerFrame::Typing {
            room: self.name.clone(),
            user: user.to_string(),
            active,
        }
        .encode();
        self.fan_out(&frame, Some(user));
    }

    pub(super) fn read(&mut self, user: &str, seq: u64, outbox: &Outbox) {
        let result = self
            .check_conversation()
            .and_then(|()| self.check_reader(user))
            .and_then(|()| {
                if seq > self.last_seq {
                    Err(ChatError::bad_request(format!(
                        "seq {seq} is past the room's last seq {}",
                        self.last_seq
                    )))
                } else {
                    Ok(())
                }
            });
        if let Err(e) = result {
            outbox.push_frame(&ServerFrame::error(&e, Some("read".into())));
            return;
        }
        if let Some(read) = self.members.get_mut(user) {
            if seq <= *read {
                return;
            }
            *read = seq;
            let directory = self.ctx.stores.directory.clone();
            let (room, who) = (self.name.clone(), user.to_string());
            tokio::spawn(async move {
                if let Err(e) = directory.set_read(&room, &who, seq).await {
                    tracing::warn!(%room, error = %e, "read receipt not stored");
                }
            });
        }
        let frame = ServerFrame::Read {
            room: self.name.clone(),
            user: user.to_string(),
            seq,
        }
        .encode();
        self.fan_out(&frame, None);
    }
}

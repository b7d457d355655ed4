//! What the gateway's handlers share: config, stores, accounts, the node's
//! actors, and the operations that REST and line commands both offer.

use std::sync::Arc;

use ractor::ActorRef;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use troupe_actors::ask;
use troupe_actors::frames::{ChatError, ChatMessage, ErrorCode, HistoryQuery};
use troupe_actors::limits::check_room_name;
use troupe_actors::node::NodeRefs;
use troupe_actors::rate_limits::Kind;
use troupe_actors::room::supervisor::RoomSupervisorMsg;
use troupe_actors::room::{
    CreateSpec, ManageAction, ManageAnswer, MessageQuery, PostRequest, Posted, QueryAnswer,
    RoomInfo, RoomMsg,
};
use troupe_actors::store::Stores;

use crate::auth::Accounts;
use crate::config::Config;
use crate::stores::Probes;

/// Cheap to clone (one reference count): every request and every WebSocket
/// connection holds one, for its whole life.
#[derive(Clone)]
pub struct App(Arc<AppParts>);

impl App {
    pub fn new(parts: AppParts) -> App {
        App(Arc::new(parts))
    }
}

impl std::ops::Deref for App {
    type Target = AppParts;

    fn deref(&self) -> &AppParts {
        &self.0
    }
}

pub struct AppParts {
    pub config: Arc<Config>,
    pub stores: Stores,
    pub probes: Probes,
    pub accounts: Accounts,
    pub refs: NodeRefs,
    /// Fires when the node starts shutting down.
    pub shutdown: CancellationToken,
    /// The WebSocket connection tasks, awaited at shutdown.
    pub connections: TaskTracker,
    /// Uploaded files: their store and metadata.
    pub attachments: crate::attachments::Attachments,
    /// The database, for what only it holds (the events table).
    pub sql: crate::stores::sql::SqlStore,
}

impl App {
    pub fn node_name(&self) -> &str {
        &self.config.node.name
    }

    /// Takes one `kind` action of `subject` (`user:NAME` or `addr:IP`).
    pub async fn allow(&self, kind: Kind, subject: &str) -> Result<(), ChatError> {
        let ephemeral = &*self.stores.ephemeral;
        self.config
            .rate_limits
            .check(ephemeral, kind, subject)
            .await
    }

    pub(crate) async fn room(
        &self,
        name: &str,
        create: Option<CreateSpec>,
    ) -> Result<ActorRef<RoomMsg>, ChatError> {
        let name = name.to_string();
        ask(&self.refs.rooms, |reply| RoomSupervisorMsg::Get {
            name,
            create,
            reply,
        })
        .await?
    }

    /// Creates a group room with `user` as its first member; conflict when it exists.
    pub async fn create_room(
        &self,
        user: &str,
        name: &str,
        private: bool,
    ) -> Result<RoomInfo, ChatError> {
        check_room_name(name)?;
        let exists = self
            .stores
            .directory
            .find_room(name)
            .await
            .map_err(|e| ChatError::unavailable(e.to_string()))?;
        if exists.is_some() {
            return Err(ChatError::new(
                ErrorCode::Conflict,
                format!("room {name} exists"),
            ));
        }
        let spec = CreateSpec {
            private,
            creator: user.to_string(),
            members: vec![user.to_string()],
        };
        let room = self.room(name, Some(spec)).await?;
        // Tells the creator's connections they joined.
        let who = user.to_string();
        // No session asked: each of them goes live on its `Attached`.
        ask(&room, |reply| RoomMsg::Join {
            user: who,
            session: None,
            reply,
        })
        .await??;
        let who = user.to_string();
        ask(&room, |reply| RoomMsg::Info { user: who, reply }).await?
    }

    /// The rooms `user` belongs to, with member counts and last seq.
    /// A page of them: names after `after` (byte order), at most `limit`.
    pub async fn rooms_of(
        &self,
        user: &str,
        after: &str,
        limit: usize,
    ) -> Result<Vec<RoomInfo>, ChatError> {
        let mut names = self
            .stores
            .directory
            .rooms_of(user)
            .await
            .map_err(|e| ChatError::unavailable(e.to_string()))?;
        names.sort();
        let names: Vec<String> = names
            .into_iter()
            .filter(|n| n.as_str() > after)
            .take(limit)
            .collect();
        let mut rooms = Vec::with_capacity(names.len());
        for name in names {
            let room = self.room(&name, None).await?;
            let who = user.to_string();
            let mut info = ask(&room, |reply| RoomMsg::Info { user: who, reply }).await??;
            let who = user.to_string();
            let unread = ask(&room, |reply| RoomMsg::Query {
                user: who,
                query: MessageQuery::Unread,
                reply,
            })
            .await
            .and_then(|answer| answer);
            // Without its count (history down, or a room on a node of wire
            // version 2 in a rolling upgrade) the room is still listed.
            match unread {
                Ok(QueryAnswer::Unread {
                    unread,
                    last_read_seq,
                }) => {
                    info.unread = Some(unread);
                    info.last_read_seq = Some(last_read_seq);
                }
                Ok(_) => {}
                Err(e) => tracing::warn!(room = %info.name, error = %e, "no unread count"),
            }
            rooms.push(info);
        }
        rooms.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(rooms)
    }

    pub async fn history(
        &self,
        user: &str,
        room: &str,
        query: HistoryQuery,
    ) -> Result<Vec<ChatMessage>, ChatError> {
        troupe_actors::limits::check_room_ref(room)?;
        let limit = query.checked_limit()?;
        let actor = self.room(room, None).await?;
        let user = user.to_string();
        ask(&actor, |reply| RoomMsg::History {
            user,
            query,
            limit,
            reply,
        })
        .await?
    }

    /// Posts a message or an event to `room` as its frame would (REST): the
    /// room's owner, wherever it runs, answers with the ack.
    pub async fn post(&self, room: &str, request: PostRequest) -> Result<Posted, ChatError> {
        troupe_actors::limits::check_room_ref(room)?;
        let actor = self.room(room, None).await?;
        ask(&actor, |reply| RoomMsg::Post { request, reply }).await?
    }

    /// Asks `room` about its messages, as `user`.
    pub async fn query(
        &self,
        user: &str,
        room: &str,
        query: MessageQuery,
    ) -> Result<QueryAnswer, ChatError> {
        troupe_actors::limits::check_room_ref(room)?;
        let actor = self.room(room, None).await?;
        let user = user.to_string();
        ask(&actor, |reply| RoomMsg::Query { user, query, reply }).await?
    }

    /// The room as `user` sees it (a member).
    pub async fn info(&self, user: &str, room: &str) -> Result<RoomInfo, ChatError> {
        troupe_actors::limits::check_room_ref(room)?;
        let actor = self.room(room, None).await?;
        let user = user.to_string();
        ask(&actor, |reply| RoomMsg::Info { user, reply }).await?
    }

    pub async fn leave(&self, user: &str, room: &str) -> Result<(), ChatError> {
        troupe_actors::limits::check_room_ref(room)?;
        let actor = self.room(room, None).await?;
        let user = user.to_string();
        ask(&actor, |reply| RoomMsg::Leave { user, reply }).await?
    }

    /// Asks `room` to manage itself (members, kick, role, topic, delete) as
    /// `user`. A deletion refused while the room writes is retried a few
    /// times: those writes end on their own.
    pub async fn manage(
        &self,
        user: &str,
        room: &str,
        action: ManageAction,
    ) -> Result<ManageAnswer, ChatError> {
        troupe_actors::limits::check_room_ref(room)?;
        let mut attempt = 0u32;
        loop {
            let actor = self.room(room, None).await?;
            let (who, what) = (user.to_string(), action.clone());
            let answer = ask(&actor, |reply| RoomMsg::Manage {
                user: who,
                action: what,
                reply,
            })
            .await?;
            match answer {
                Err(e)
                    if e.code == ErrorCode::Unavailable
                        && matches!(action, ManageAction::Delete)
                        && attempt < 50 =>
                {
                    attempt += 1;
                    tokio::time::sleep(std::time::Duration::from_millis(
                        20 * u64::from(attempt.min(10)),
                    ))
                    .await;
                }
                other => return other,
            }
        }
    }

    pub async fn invite(&self, by: &str, room: &str, user: &str) -> Result<(), ChatError> {
        check_room_name(room)?;
        troupe_actors::limits::check_username(user)?;
        let actor = self.room(room, None).await?;
        let (by, user) = (by.to_string(), user.to_string());
        ask(&actor, |reply| RoomMsg::Invite { by, user, reply }).await?
    }
}

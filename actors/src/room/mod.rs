//! The Room actor: one per active room. It checks membership, de-duplicates
//! `client_id`s, assigns `seq`, appends to the log (one batch in flight at a
//! time, the rest queue behind it: group commit), and only then acks the
//! sender and fans out to its subscribed sessions. History is written behind.

mod admin;
mod life;
mod state;
pub mod supervisor;

use crate::store::events::DomainEvent;
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};
use tokio_tungstenite::tungstenite::Utf8Bytes;

use crate::cluster::router::RouterMsg;
use crate::frames::{ChatError, ChatMessage, HistoryQuery, MessageEvent, ServerFrame};
use crate::limits::{now_ms, Limits};
use crate::outbox::{Marks, Outbox};
use crate::presence::PresenceMsg;
use crate::session::{SessionHandle, SessionMsg};
use crate::store::{select_page, Checkpoint, LogPosition, LogRecord, StoreError, Stores};

pub use admin::{ManageAction, ManageAnswer, MemberEntry, MAX_TOPIC};
pub use life::{MessageQuery, PostRequest, Posted, QueryAnswer};
pub use state::RoomKind;
use state::{Cached, Leaving, PendingSend, RoomState, SubState, Subscriber};

/// The room every user is in: `broadcast` frames go there.
pub const BROADCAST_ROOM: &str = "!broadcast";

/// The DM room of two users: `dm:<a>:<b>`, usernames sorted.
pub fn dm_room(a: &str, b: &str) -> String {
    if a <= b {
        format!("dm:{a}:{b}")
    } else {
        format!("dm:{b}:{a}")
    }
}

/// The two members of a canonical DM room name.
pub fn dm_members(name: &str) -> Option<(&str, &str)> {
    let rest = name.strip_prefix("dm:")?;
    let (a, b) = rest.split_once(':')?;
    let ok = crate::limits::check_username(a).is_ok()
        && crate::limits::check_username(b).is_ok()
        && a < b;
    ok.then_some((a, b))
}

/// Tuning of rooms: how often they checkpoint, how much they cache.
#[derive(Debug, Clone)]
pub struct RoomTuning {
    pub checkpoint_every: u64,
    pub checkpoint_interval: Duration,
    /// Messages kept in memory for history and resume.
    pub recent: usize,
    /// Largest batch appended to the log at once.
    pub max_batch: usize,
    /// A room with no subscribers stops after this long.
    pub idle_stop: Duration,
    /// Room starts (restores) that run at once on a node.
    pub restore_concurrency: usize,
}

impl Default for RoomTuning {
    fn default() -> Self {
        Self {
            checkpoint_every: 100,
            checkpoint_interval: Duration::from_secs(1),
            recent: 256,
            max_batch: 512,
            idle_stop: Duration::from_secs(300),
            restore_concurrency: 16,
        }
    }
}

/// What every room of a node shares.
#[derive(Clone)]
pub struct RoomContext {
    pub node: String,
    pub stores: Stores,
    pub limits: Limits,
    pub tuning: RoomTuning,
    pub admins: Arc<Vec<String>>,
    pub presence: ActorRef<PresenceMsg>,
    /// The node's router: tells other nodes when a user joins a room here.
    pub router: Option<ActorRef<RouterMsg>>,
}

/// How to create a room that does not exist yet.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct CreateSpec {
    pub private: bool,
    pub creator: String,
    pub members: Vec<String>,
}

pub struct RoomArgs {
    pub name: String,
    pub ctx: RoomContext,
    pub create: Option<CreateSpec>,
    /// Restarted after a crash: attached sessions are told to resend what
    /// was not acked.
    pub restarted: bool,
}

/// A summary for REST listings.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize, utoipa::ToSchema)]
pub struct RoomInfo {
    pub name: String,
    pub private: bool,
    pub members: usize,
    pub last_seq: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub topic: Option<String>,
    /// The caller's role in the room (absent in DMs and the broadcast room).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub role: Option<crate::roles::Role>,
    /// For a listing of the user's rooms: messages after `last_read_seq`
    /// that are not theirs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unread: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_read_seq: Option<u64>,
}

/// A message (or, with `event`, a change to one) to post.
pub struct SendRequest {
    pub user: String,
    pub client_id: String,
    pub body: String,
    pub reply_to: Option<u64>,
    pub attachments: Vec<String>,
    pub event: Option<MessageEvent>,
    /// The sending session (its node's router finds it by this id).
    pub session_id: u64,
    /// Where the ack or the error goes.
    pub outbox: Outbox,
}

pub enum RoomMsg {
    /// A session of a member attaches; a pending one receives nothing until `Activate`.
    Subscribe {
        session: SessionHandle,
        pending: bool,
    },
    /// Replays what the session missed after `after` (default: since it
    /// subscribed, or since its last replay), in order, then delivers live.
    /// With `hold`, a pending subscription stays pending after the replay (a
    /// resume: live traffic only after `resumed`; the next `Activate`
    /// delivers what came meanwhile). Replies with the last seq sent.
    Activate {
        session_id: u64,
        after: Option<u64>,
        hold: bool,
        reply: RpcReplyPort<u64>,
    },
    Unsubscribe {
        session_id: u64,
    },
    Join {
        user: String,
        /// The local session that asked (it is live: it sent a frame), which
        /// is subscribed live at once; the user's other sessions pending.
        session: Option<u64>,
        reply: RpcReplyPort<Result<(), ChatError>>,
    },
    Leave {
        user: String,
        reply: RpcReplyPort<Result<(), ChatError>>,
    },
    Invite {
        by: String,
        user: String,
        reply: RpcReplyPort<Result<(), ChatError>>,
    },
    Send(SendRequest),
    /// A send or an event from REST: answered with its ack.
    Post {
        request: PostRequest,
        reply: RpcReplyPort<Result<Posted, ChatError>>,
    },
    /// A question about messages (views, versions, pins, threads, unread).
    Query {
        user: String,
        query: MessageQuery,
        reply: RpcReplyPort<Result<QueryAnswer, ChatError>>,
    },
    Typing {
        user: String,
        active: bool,
        session_id: u64,
        outbox: Outbox,
    },
    Read {
        user: String,
        seq: u64,
        session_id: u64,
        outbox: Outbox,
    },
    History {
        user: String,
        query: HistoryQuery,
        limit: usize,
        reply: RpcReplyPort<Result<Vec<ChatMessage>, ChatError>>,
    },
    /// Members and how far each has read.
    Members {
        user: String,
        reply: RpcReplyPort<Result<Vec<(String, u64)>, ChatError>>,
    },
    Info {
        user: String,
        reply: RpcReplyPort<Result<RoomInfo, ChatError>>,
    },
    /// Roles, kicks, topic and deletion (see [`ManageAction`]).
    Manage {
        user: String,
        action: ManageAction,
        reply: RpcReplyPort<Result<ManageAnswer, ChatError>>,
    },
    PresenceChanged {
        user: String,
        online: bool,
        last_seen: Option<i64>,
    },
    /// A summary of the room for the admin endpoints (with member and
    /// subscriber lists when `detail`).
    Inspect {
        detail: bool,
        reply: crate::inspect::InspectReply,
    },
    /// Writes history and the checkpoint, then stops.
    Shutdown,
    /// The room now belongs to another node: finish the append in flight,
    /// checkpoint, release the lease, tell the subscribers where to go, stop.
    Handoff,
    // ---- internal ----
    Appended {
        batch: Vec<PendingSend>,
        result: Result<Vec<LogPosition>, StoreError>,
    },
    /// The log read after a failed append.
    Reconciled(Result<Vec<(LogPosition, LogRecord)>, StoreError>),
    HistoryWritten {
        up_to: u64,
        result: Result<(), StoreError>,
    },
    ReplayLoaded {
        session_id: u64,
        after: u64,
        hold: bool,
        messages: Result<Vec<ChatMessage>, StoreError>,
        reply: RpcReplyPort<u64>,
    },
    /// A read of history is back.
    DbRead(life::DbDone),
    Tick,
    #[cfg(feature = "test-hooks")]
    Panic,
}

pub struct Room;

/// A subscription's state once it was sent everything through `last_seq`:
/// live, or still pending when the replay was asked to `hold` (the next
/// activation then starts after `last_seq`).
fn after_replay(live: bool, hold: bool, last_seq: u64) -> SubState {
    if hold && !live {
        SubState::Pending { from_seq: last_seq }
    } else {
        SubState::Live { from_seq: last_seq }
    }
}

/// The answer to a send the room can no longer take.
fn moving() -> ChatError {
    ChatError::unavailable("the room is moving to another node; resend (same client_id)")
}

/// Answers a message that will never reach its room (it stopped, or this
/// node does not own it): callers waiting on a reply see it dropped, a
/// sender gets an `unavailable` error for its `client_id`.
pub fn refuse(msg: RoomMsg, error: &ChatError) {
    match msg {
        RoomMsg::Send(request) => {
            request
                .outbox
                .push_frame(&ServerFrame::error(error, Some(request.client_id)));
        }
        RoomMsg::Join { reply, .. }
        | RoomMsg::Leave { reply, .. }
        | RoomMsg::Invite { reply, .. } => {
            let _ = reply.send(Err(error.clone()));
        }
        RoomMsg::History { reply, .. } => {
            let _ = reply.send(Err(error.clone()));
        }
        RoomMsg::Manage { reply, .. } => {
            let _ = reply.send(Err(error.clone()));
        }
        RoomMsg::Members { reply, .. } => {
            let _ = reply.send(Err(error.clone()));
        }
        RoomMsg::Info { reply, .. } => {
            let _ = reply.send(Err(error.clone()));
        }
        RoomMsg::Post { reply, .. } => {
            let _ = reply.send(Err(error.clone()));
        }
        RoomMsg::Query { reply, .. } => {
            let _ = reply.send(Err(error.clone()));
        }
        // Dropping the reply port tells the caller the room is gone.
        _ => {}
    }
}

impl Actor for Room {
    type Msg = RoomMsg;
    type State = RoomState;
    type Arguments = RoomArgs;

    async fn pre_start(
        &self,
        myself: ActorRef<RoomMsg>,
        args: RoomArgs,
    ) -> Result<RoomState, ActorProcessingErr> {
        let restarted = args.restarted;
        let mut state = state::restore(args).await?;
        // A room that moved here (handoff, failover) is not re-attached: its
        // sessions follow it themselves and replay from where they were, and
        // attaching them live first would deliver newer messages before that
        // replay.
        if restarted || state.created {
            state.attach_member_sessions(&myself, restarted).await;
        }
        if restarted {
            if let Some(router) = &state.ctx.router {
                let _ = router.cast(RouterMsg::RoomRestarted {
                    room: state.name.clone(),
                });
            }
        }
        myself.send_interval(state.ctx.tuning.checkpoint_interval, || RoomMsg::Tick);
        Ok(state)
    }

    async fn post_start(
        &self,
        myself: ActorRef<RoomMsg>,
        state: &mut RoomState,
    ) -> Result<(), ActorProcessingErr> {
        // Records replayed from the log may be missing from history.
        state.write_history(&myself);
        Ok(())
    }

    async fn post_stop(
        &self,
        _myself: ActorRef<RoomMsg>,
        state: &mut RoomState,
    ) -> Result<(), ActorProcessingErr> {
        state.flush_for_stop().await;
        if let Some(leaving) = state.leaving {
            state.moved_away(leaving).await;
        }
        Ok(())
    }

    async fn handle(
        &self,
        myself: ActorRef<RoomMsg>,
        msg: RoomMsg,
        state: &mut RoomState,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            RoomMsg::Subscribe { session, pending } => state.subscribe(session, pending),
            RoomMsg::Activate {
                session_id,
                after,
                hold,
                reply,
            } => state.activate(&myself, session_id, after, hold, reply),
            RoomMsg::Unsubscribe { session_id } => {
                state.subscribers.remove(&session_id);
                state.idle_since = state.subscribers.is_empty().then(Instant::now);
            }
            RoomMsg::Join {
                user,
                session,
                reply,
            } => {
                let _ = reply.send(state.join(&myself, &user, session).await);
            }
            RoomMsg::Leave { user, reply } => {
                let _ = reply.send(state.leave(&user).await);
            }
            RoomMsg::Invite { by, user, reply } => {
                let _ = reply.send(state.invite(&myself, &by, &user).await);
            }
            RoomMsg::Send(request) => state.accept_send(&myself, request),
            RoomMsg::Post { request, reply } => state.post(&myself, request, reply),
            RoomMsg::Query { user, query, reply } => state.query(&myself, user, query, reply),
            RoomMsg::DbRead(done) => state.db_read(&myself, done),
            RoomMsg::Appended { batch, result } => state.appended(&myself, batch, result),
            RoomMsg::Reconciled(result) => state.reconciled(&myself, result),
            RoomMsg::HistoryWritten { up_to, result } => {
                state.history_written(&myself, up_to, result)
            }
            RoomMsg::Typing {
                user,
                active,
                outbox,
                ..
            } => state.typing(&user, active, &outbox),
            RoomMsg::Read {
                user, seq, outbox, ..
            } => state.read(&user, seq, &outbox),
            RoomMsg::Handoff => state.leave_node(&myself, Leaving::Handoff),
            RoomMsg::History {
                user,
                query,
                limit,
                reply,
            } => state.history(&user, query, limit, reply),
            RoomMsg::Members { user, reply } => {
                let answer = state.check_reader(&user).map(|()| {
                    state
                        .members
                        .iter()
                        .map(|(u, read)| (u.clone(), *read))
                        .collect()
                });
                let _ = reply.send(answer);
            }
            RoomMsg::Info { user, reply } => {
                let answer = state.check_reader(&user).map(|()| {
                    let mut info = state.info();
                    info.last_read_seq = state.members.get(&user).copied();
                    if state.kind == RoomKind::Group {
                        info.role = state.role_of(&user);
                    }
                    info
                });
                let _ = reply.send(answer);
            }
            RoomMsg::Manage {
                user,
                action,
                reply,
            } => {
                let _ = reply.send(state.manage(&myself, &user, action).await);
            }
            RoomMsg::PresenceChanged {
                user,
                online,
                last_seen,
            } => {
                for sub in state.subscribers.values() {
                    if sub.session.user != user {
                        let _ = sub.session.actor.cast(SessionMsg::Presence {
                            user: user.clone(),
                            online,
                            last_seen,
                        });
                    }
                }
            }
            RoomMsg::ReplayLoaded {
                session_id,
                after,
                hold,
                messages,
                reply,
            } => state.replay_loaded(&myself, session_id, after, hold, messages, reply),
            RoomMsg::Tick => {
                // Retries a failed history write; the log still holds those messages.
                state.write_history(&myself);
                state.maybe_checkpoint();
                let idle = state
                    .idle_since
                    .is_some_and(|since| since.elapsed() >= state.ctx.tuning.idle_stop);
                if state.needs_reconcile && !state.reconciling {
                    state.reconcile(&myself);
                }
                let busy = state.appending
                    || state.reconciling
                    || !state.pending.is_empty()
                    || state.db_reading
                    || !state.db_jobs.is_empty();
                if idle && !busy {
                    myself.stop(Some("idle".into()));
                }
            }
            RoomMsg::Inspect { detail, reply } => {
                let _ = reply.send(state.inspect(detail));
            }
            RoomMsg::Shutdown => myself.stop(Some("shutdown".into())),
            #[cfg(feature = "test-hooks")]
            RoomMsg::Panic => panic!("test hook: room {} panics", state.name),
        }
        Ok(())
    }
}

impl RoomState {
    /// What an operator sees of this room (`/admin/actors`).
    fn inspect(&self, detail: bool) -> serde_json::Value {
        let mut state = serde_json::json!({
            "room": self.name,
            "owner": self.ctx.node,
            "private": self.private,
            "members": self.members.len(),
            "subscribers": self.subscribers.len(),
            "last_seq": self.last_seq,
            "epoch": self.epoch,
            "history_seq": self.history_seq,
            "checkpoint_seq": self.checkpoint_seq,
            "checkpoint_age_s": self.checkpoint_at.elapsed().as_secs_f64(),
            "queued_sends": self.pending.len() + self.failed_batch.len(),
            "appending": self.appending,
            "leaving": self.leaving.map(|l| format!("{l:?}").to_lowercase()),
        });
        if detail {
            let mut members: Vec<_> = self.members.iter().collect();
            members.sort();
            state["member_list"] = members
                .into_iter()
                .map(|(user, read)| serde_json::json!({ "user": user, "read_seq": read }))
                .collect();
            let mut subscribers: Vec<_> = self.subscribers.values().collect();
            subscribers.sort_by_key(|s| s.session.id);
            state["subscriber_list"] = subscribers
                .into_iter()
                .map(|s| {
                    let (live, from_seq) = match s.state {
                        SubState::Pending { from_seq } => (false, from_seq),
                        SubState::Live { from_seq } => (true, from_seq),
                    };
                    let node = match s.session.outbox.remote_session() {
                        Some(remote) => remote.link.peer.to_string(),
                        None => self.ctx.node.clone(),
                    };
                    serde_json::json!({
                        "session": s.session.id.to_string(),
                        "user": s.session.user,
                        "node": node,
                        "live": live,
                        "from_seq": from_seq,
                    })
                })
                .collect();
        }
        state
    }

    fn info(&self) -> RoomInfo {
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

    fn is_admin(&self, user: &str) -> bool {
        self.ctx.admins.iter().any(|a| a == user)
    }

    /// May `user` read this room?
    fn check_reader(&self, user: &str) -> Result<(), ChatError> {
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
    fn check_writer(&self, user: &str) -> Result<(), ChatError> {
        if self.kind == RoomKind::Broadcast
            && self.ctx.limits.broadcast_admin_only
            && !self.is_admin(user)
        {
            return Err(ChatError::forbidden("only admins may broadcast"));
        }
        self.check_reader(user)
    }

    /// A message of the cache as history shows it now: its current body.
    fn as_now(&self, mut message: ChatMessage) -> ChatMessage {
        if let Some(view) = self.views.get(&message.seq) {
            message.body = view.body.clone().unwrap_or_default();
            message.edited_at = view.edited_at;
            message.deleted = view.deleted;
            if view.deleted {
                message.attachments.clear();
            }
        }
        message
    }

    /// Pushes a frame to every live subscriber; drops the ones that are gone.
    fn fan_out(&mut self, frame: &Utf8Bytes, except_user: Option<&str>) {
        self.fan_out_with(except_user, |outbox| outbox.push(frame.clone()));
    }

    /// Pushes a batch of message frames, the last of seq `last_seq`, to every
    /// live subscriber at once: one queue operation per subscriber per batch,
    /// not per message.
    fn fan_out_messages(&mut self, frames: Vec<Utf8Bytes>, last_seq: u64) {
        let marks = Marks::seq(last_seq);
        match frames.len() {
            0 => {}
            1 => self.fan_out_with(None, |o| {
                crate::metrics::delivered(1, o.push_marked(frames[0].clone(), marks.clone()))
            }),
            n => {
                let batch: Arc<[Utf8Bytes]> = frames.into();
                self.fan_out_with(None, |o| {
                    crate::metrics::delivered(n, o.push_batch(batch.clone(), marks.clone()))
                });
            }
        }
    }

    fn fan_out_with(&mut self, except_user: Option<&str>, push: impl Fn(&Outbox) -> bool) {
        let mut gone = Vec::new();
        for (id, sub) in &self.subscribers {
            if !matches!(sub.state, SubState::Live { .. })
                || Some(sub.session.user.as_str()) == except_user
            {
                continue;
            }
            if !push(&sub.session.outbox) {
                gone.push(*id);
            }
        }
        for id in gone {
            self.subscribers.remove(&id);
        }
    }

    fn subscribe(&mut self, session: SessionHandle, pending: bool) {
        // Already subscribed on the same path: it keeps its state. Live (the
        // room re-attached it after a restart), it keeps what it was sent;
        // its activation replays only what came before it went live.
        // Pending (a session waiting for its first frame, whose user joined
        // again on another connection), it stays pending from where it was:
        // turned live here, it would receive live traffic before the replay
        // of its `resume`, and miss what came since it subscribed.
        if let Some(existing) = self.subscribers.get(&session.id) {
            if existing.session.same_path(&session) {
                return;
            }
        }
        let state = if pending {
            SubState::Pending {
                from_seq: self.last_seq,
            }
        } else {
            SubState::Live {
                from_seq: self.last_seq,
            }
        };
        self.subscribers
            .insert(session.id, Subscriber { session, state });
        self.idle_since = None;
    }

    fn activate(
        &mut self,
        myself: &ActorRef<RoomMsg>,
        session_id: u64,
        after: Option<u64>,
        hold: bool,
        reply: RpcReplyPort<u64>,
    ) {
        let Some(sub) = self.subscribers.get(&session_id) else {
            // Its subscribe never arrived (refused while the room started or
            // moved): answering would promise deliveries that will not come.
            // Dropping the reply fails the activation; the session subscribes again.
            drop(reply);
            return;
        };
        let from_seq = match sub.state {
            SubState::Pending { from_seq } | SubState::Live { from_seq } => from_seq,
        };
        let live = matches!(sub.state, SubState::Live { .. });
        // A live subscriber already has everything after `from_seq`.
        let upper = if live { from_seq } else { self.last_seq };
        let after = after.unwrap_or(from_seq).min(upper);
        let first_cached = self.recent.front().map(|c| c.message.seq);
        let cached = after >= upper || first_cached.is_some_and(|first| first <= after + 1);
        if cached {
            let outbox = sub.session.outbox.clone();
            for c in self
                .recent
                .iter()
                .filter(|c| c.message.seq > after && c.message.seq <= upper)
            {
                crate::metrics::delivered(1, outbox.push_marked(c.frame.clone(), c.marks()));
            }
            if let Some(sub) = self.subscribers.get_mut(&session_id) {
                sub.state = after_replay(live, hold, self.last_seq);
            }
            let _ = reply.send(self.last_seq);
            return;
        }
        // Older than the cache: read history, stay pending meanwhile.
        let history = self.ctx.stores.history.clone();
        let unflushed: Vec<ChatMessage> = self.unflushed.iter().map(|(m, _)| m.clone()).collect();
        let room = self.name.clone();
        let myself = myself.clone();
        tokio::spawn(async move {
            let messages = read_range(&*history, &room, after, upper, unflushed).await;
            let _ = myself.cast(RoomMsg::ReplayLoaded {
                session_id,
                after,
                hold,
                messages,
                reply,
            });
        });
    }

    fn replay_loaded(
        &mut self,
        myself: &ActorRef<RoomMsg>,
        session_id: u64,
        after: u64,
        hold: bool,
        messages: Result<Vec<ChatMessage>, StoreError>,
        reply: RpcReplyPort<u64>,
    ) {
        let messages = match messages {
            Ok(messages) => messages,
            Err(e) => {
                tracing::warn!(room = %self.name, error = %e, "resume replay failed; retrying");
                // Try again shortly: the session stays pending and loses nothing.
                let myself2 = myself.clone();
                tokio::spawn(async move {
                    tokio::time::sleep(Duration::from_millis(500)).await;
                    let _ = myself2.cast(RoomMsg::Activate {
                        session_id,
                        after: Some(after),
                        hold,
                        reply,
                    });
                });
                return;
            }
        };
        let Some(sub) = self.subscribers.get(&session_id) else {
            let _ = reply.send(self.last_seq);
            return;
        };
        let live_from = match sub.state {
            SubState::Live { from_seq } => Some(from_seq),
            SubState::Pending { .. } => None,
        };
        let outbox = sub.session.outbox.clone();
        let mut sent = after;
        for m in &messages {
            if m.seq == sent + 1 {
                crate::metrics::delivered(1, outbox.push_frame(&ServerFrame::Message(m.clone())));
                sent = m.seq;
            }
        }
        if live_from.is_none() {
            let first_cached = self.recent.front().map(|c| c.message.seq);
            if sent < self.last_seq && first_cached.is_none_or(|f| f > sent + 1) {
                // More arrived than the cache holds while we read: read again from `sent`.
                self.activate(myself, session_id, Some(sent), hold, reply);
                return;
            }
            for c in self.recent.iter().filter(|c| c.message.seq > sent) {
                crate::metrics::delivered(1, outbox.push_marked(c.frame.clone(), c.marks()));
            }
            if let Some(sub) = self.subscribers.get_mut(&session_id) {
                sub.state = after_replay(false, hold, self.last_seq);
            }
        }
        let _ = reply.send(self.last_seq);
    }

    /// Subscribes every local session of `user` and tells each it joined.
    /// `live`: the session that asked, subscribed live (it sent a frame, so it
    /// is live itself: pending, it would miss typing and presence frames until
    /// its `Attached` comes back as an activation).
    async fn attach_user(&mut self, myself: &ActorRef<RoomMsg>, user: &str, live: Option<u64>) {
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

    async fn join(
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

    async fn add_member(
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

    async fn invite(
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

    async fn leave(&mut self, user: &str) -> Result<(), ChatError> {
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

    fn accept_send(&mut self, myself: &ActorRef<RoomMsg>, request: SendRequest) {
        crate::metrics::MESSAGES_RECEIVED.inc();
        let check = match self.leaving {
            Some(_) => Err(moving()),
            None => self.check_writer(&request.user),
        };
        if let Err(e) = check {
            request
                .outbox
                .push_frame(&ServerFrame::error(&e, Some(request.client_id)));
            return;
        }
        let key = (request.user.clone(), request.client_id.clone());
        if let Some(&(seq, ts)) = self.dedupe.get(&key) {
            // A retry of a message already in the log: the first message's ack.
            crate::metrics::MESSAGES_ACKED.inc();
            request.outbox.push_frame(&ServerFrame::Ack {
                client_id: request.client_id,
                room: self.name.clone(),
                seq,
                ts,
            });
            return;
        }
        if let Some(waiters) = self.in_flight.get_mut(&key) {
            waiters.push(request.outbox);
            return;
        }
        self.in_flight
            .insert(key.clone(), vec![request.outbox.clone()]);
        match self.precheck(&request) {
            Some(Err(e)) => self.fail(key, &e),
            Some(Ok(())) | None if request.event.is_none() && request.reply_to.is_none() => {
                self.queue_send(myself, request)
            }
            Some(Ok(())) => self.queue_send(myself, request),
            None => {
                // The target is older than the views in memory: load it first.
                let target = match &request.event {
                    Some(event) => event.target(),
                    None => request.reply_to.unwrap_or(0),
                };
                self.with_views(
                    myself,
                    vec![target],
                    Box::new(move |state, myself, loaded| {
                        let checked = loaded.and_then(|()| match state.precheck(&request) {
                            Some(result) => result,
                            None => Err(ChatError::not_found(format!("no message {target}"))),
                        });
                        match checked {
                            Ok(()) => state.queue_send(myself, request),
                            Err(e) => state.fail(key, &e),
                        }
                    }),
                );
            }
        }
    }

    fn queue_send(&mut self, myself: &ActorRef<RoomMsg>, request: SendRequest) {
        if self.leaving.is_some() {
            self.fail((request.user, request.client_id), &moving());
            return;
        }
        self.pending.push_back(PendingSend {
            user: request.user,
            client_id: request.client_id,
            body: request.body,
            reply_to: request.reply_to,
            attachments: request.attachments,
            event: request.event,
            ts: now_ms(),
        });
        self.append_next(myself);
    }

    /// The binding check of a batch's events and replies, in order (each
    /// sees the ones before it): the refused are answered and left out.
    fn check_batch(&mut self, batch: Vec<PendingSend>) -> Vec<PendingSend> {
        let mut scratch: HashMap<u64, crate::life::MessageView> = HashMap::new();
        let mut kept = Vec::with_capacity(batch.len());
        for p in batch {
            let target = match (&p.event, p.reply_to) {
                (Some(event), _) => event.target(),
                (None, Some(seq)) => seq,
                (None, None) => {
                    kept.push(p);
                    continue;
                }
            };
            let view = match scratch.get(&target).or_else(|| self.views.get(&target)) {
                Some(view) => view.clone(),
                None => {
                    let e = ChatError::unavailable("the message was not at hand; retry");
                    self.fail((p.user, p.client_id), &e);
                    continue;
                }
            };
            if let Err(e) = self.check_on(&view, p.event.as_ref(), &p.user) {
                self.fail((p.user, p.client_id), &e);
                continue;
            }
            let mut view = view;
            view.apply(&ChatMessage {
                from: p.user.clone(),
                reply_to: p.reply_to,
                event: p.event.clone(),
                ts: p.ts,
                ..Default::default()
            });
            scratch.insert(target, view);
            kept.push(p);
        }
        kept
    }

    /// Starts appending the next batch unless one is in flight.
    fn append_next(&mut self, myself: &ActorRef<RoomMsg>) {
        if self.pending.is_empty() || self.appending || self.reconciling {
            return;
        }
        if self.needs_reconcile {
            self.reconcile(myself);
            return;
        }
        let n = self.pending.len().min(self.ctx.tuning.max_batch);
        let batch: Vec<PendingSend> = self.pending.drain(..n).collect();
        let batch = self.check_batch(batch);
        if batch.is_empty() {
            return;
        }
        let records: Vec<LogRecord> = batch
            .iter()
            .enumerate()
            .map(|(i, p)| LogRecord {
                room: self.name.clone(),
                seq: self.last_seq + 1 + i as u64,
                epoch: self.epoch,
                sender: p.user.clone(),
                client_id: p.client_id.clone(),
                body: p.body.clone(),
                ts: p.ts,
                reply_to: p.reply_to,
                attachments: p.attachments.clone(),
                event: p.event.clone(),
            })
            .collect();
        self.appending = true;
        let log = self.ctx.stores.log.clone();
        let leases = self.ctx.stores.leases.clone();
        let (room, node, epoch) = (self.name.clone(), self.ctx.node.clone(), self.epoch);
        let myself = myself.clone();
        tokio::spawn(async move {
            let mut result = crate::metrics::time(
                &crate::metrics::LOG_APPEND_SECONDS,
                log.append(&room, &records),
            )
            .await;
            if let (Ok(_), Some(leases)) = (&result, leases) {
                // Durable is not enough to ack: another node may have taken
                // the room meanwhile, and its restore may not have seen this.
                result = match leases.holds(&room, &node, epoch).await {
                    Ok(true) => result,
                    Ok(false) => Err(StoreError::Fenced(room.clone())),
                    Err(e) => Err(e),
                };
            }
            let _ = myself.cast(RoomMsg::Appended { batch, result });
        });
    }

    fn appended(
        &mut self,
        myself: &ActorRef<RoomMsg>,
        batch: Vec<PendingSend>,
        result: Result<Vec<LogPosition>, StoreError>,
    ) {
        self.appending = false;
        match result {
            Ok(positions) => {
                let mut frames = Vec::with_capacity(batch.len());
                for (p, position) in batch.into_iter().zip(positions) {
                    let message = ChatMessage {
                        room: self.name.clone(),
                        seq: self.last_seq + 1,
                        from: p.user,
                        body: p.body,
                        ts: p.ts,
                        client_id: p.client_id,
                        reply_to: p.reply_to,
                        attachments: p.attachments,
                        event: p.event,
                        ..Default::default()
                    };
                    frames.push(self.commit(message, position));
                }
                // Every ack of the batch is queued before the messages go out.
                self.fan_out_messages(frames, self.last_seq);
                self.write_history(myself);
                self.append_next(myself);
                self.stop_if_leaving(myself);
            }
            Err(StoreError::Fenced(_)) => {
                tracing::warn!(room = %self.name, node = %self.ctx.node, epoch = self.epoch, "fenced: another node took this room");
                for p in batch {
                    self.fail((p.user, p.client_id), &moving());
                }
                self.leave_node(myself, Leaving::Fenced);
            }
            Err(e) => {
                // The append may still have landed (a timeout after the broker
                // took it): read the log before answering, so a seq is never
                // given to two messages and nothing durable is reported lost.
                tracing::warn!(room = %self.name, error = %e, "log append failed; reconciling with the log");
                self.failed_batch = batch;
                self.needs_reconcile = true;
                // Whatever we append from now on outranks a late copy of this
                // batch with the same seqs (replay keeps the newest epoch).
                self.raise_from.get_or_insert(self.epoch);
                self.epoch += 1;
                self.reconcile(myself);
            }
        }
    }

    /// Applies one durable message: ack its waiters, cache it, queue it for
    /// history; its `message` frame, for the caller to fan out.
    fn commit(&mut self, message: ChatMessage, position: LogPosition) -> Utf8Bytes {
        self.last_seq = message.seq;
        self.log_position = position + 1;
        let key = (message.from.clone(), message.client_id.clone());
        let ack = ServerFrame::Ack {
            client_id: message.client_id.clone(),
            room: self.name.clone(),
            seq: message.seq,
            ts: message.ts,
        }
        .encode();
        for outbox in self.in_flight.remove(&key).unwrap_or_default() {
            crate::metrics::MESSAGES_ACKED.inc();
            outbox.push_marked(ack.clone(), Marks::answer(&key.1));
        }
        self.remember(key, message.seq, message.ts);
        self.track_views(&message);
        if let Some(event) = admin::message_event(&message) {
            self.ctx.stores.events.publish(event);
        }
        let frame = ServerFrame::Message(message.clone()).encode();
        self.unflushed.push_back((message.clone(), position));
        self.recent.push_back(Cached {
            message,
            frame: frame.clone(),
        });
        if self.recent.len() > self.ctx.tuning.recent {
            self.recent.pop_front();
        }
        frame
    }

    /// Reads the log after our position to learn what a failed append wrote.
    fn reconcile(&mut self, myself: &ActorRef<RoomMsg>) {
        if self.reconciling {
            return;
        }
        self.reconciling = true;
        let log = self.ctx.stores.log.clone();
        let leases = self.ctx.stores.leases.clone();
        let (room, from) = (self.name.clone(), self.log_position);
        let (node, epoch, raise_from) = (self.ctx.node.clone(), self.epoch, self.raise_from);
        let myself = myself.clone();
        tokio::spawn(async move {
            if let Some(leases) = leases {
                // The bumped epoch must be the lease's before anything is acked under it.
                let held = match raise_from {
                    Some(old) => leases.raise(&room, &node, old, epoch).await,
                    None => leases.holds(&room, &node, epoch).await,
                };
                let fenced = match held {
                    Ok(true) => None,
                    Ok(false) => Some(StoreError::Fenced(room.clone())),
                    Err(e) => Some(e),
                };
                if let Some(e) = fenced {
                    let _ = myself.cast(RoomMsg::Reconciled(Err(e)));
                    return;
                }
            }
            let result = log.read_from(&room, from, 100_000).await;
            let _ = myself.cast(RoomMsg::Reconciled(result));
        });
    }

    fn reconciled(
        &mut self,
        myself: &ActorRef<RoomMsg>,
        result: Result<Vec<(LogPosition, LogRecord)>, StoreError>,
    ) {
        self.reconciling = false;
        let unavailable =
            ChatError::unavailable("the message log is unavailable; nothing was written, retry");
        match result {
            Ok(records) => {
                self.needs_reconcile = false;
                self.raise_from = None;
                let mut frames = Vec::new();
                for (position, record) in records {
                    if record.seq > self.last_seq + 1 {
                        tracing::warn!(room = %self.name, expected = self.last_seq + 1, got = record.seq, "gap in the log");
                    }
                    if record.seq > self.last_seq {
                        frames.push(self.commit(record.to_message(), position));
                    }
                }
                self.fan_out_messages(frames, self.last_seq);
                // What the failed append did not write was not written at all.
                for p in std::mem::take(&mut self.failed_batch) {
                    self.fail((p.user, p.client_id), &unavailable);
                }
                self.write_history(myself);
                self.append_next(myself);
                self.stop_if_leaving(myself);
            }
            Err(StoreError::Fenced(_)) => {
                tracing::warn!(room = %self.name, node = %self.ctx.node, epoch = self.epoch, "fenced while reconciling: another node took this room");
                for p in std::mem::take(&mut self.failed_batch) {
                    self.fail((p.user, p.client_id), &moving());
                }
                self.leave_node(myself, Leaving::Fenced);
            }
            Err(e) => {
                tracing::warn!(room = %self.name, error = %e, "the log is still unavailable");
                // Everyone waiting is told to retry; the next send or tick reconciles again.
                for p in std::mem::take(&mut self.failed_batch) {
                    self.fail((p.user, p.client_id), &unavailable);
                }
                for p in std::mem::take(&mut self.pending) {
                    self.fail((p.user, p.client_id), &unavailable);
                }
            }
        }
    }

    fn fail(&mut self, key: (String, String), error: &ChatError) {
        let frame = ServerFrame::error(error, Some(key.1.clone())).encode();
        for outbox in self.in_flight.remove(&key).unwrap_or_default() {
            outbox.push_marked(frame.clone(), Marks::answer(&key.1));
        }
    }

    fn remember(&mut self, key: (String, String), seq: u64, ts: i64) {
        self.dedupe_order.push_back(key.clone());
        self.dedupe.insert(key, (seq, ts));
        while self.dedupe_order.len() > self.ctx.limits.dedupe_window {
            if let Some(old) = self.dedupe_order.pop_front() {
                self.dedupe.remove(&old);
            }
        }
    }

    /// Writes unflushed messages to history, one batch at a time.
    fn write_history(&mut self, myself: &ActorRef<RoomMsg>) {
        if self.history_writing || self.db_reading {
            return;
        }
        if self.unflushed.is_empty() {
            self.next_db_job(myself);
            return;
        }
        let batch: Vec<ChatMessage> = self
            .unflushed
            .iter()
            .take(1000)
            .map(|(m, _)| m.clone())
            .collect();
        let up_to = batch.last().map(|m| m.seq).unwrap_or(self.history_seq);
        self.history_writing = true;
        let history = self.ctx.stores.history.clone();
        let myself = myself.clone();
        tokio::spawn(async move {
            let result = history.write(&batch).await;
            let _ = myself.cast(RoomMsg::HistoryWritten { up_to, result });
        });
    }

    fn history_written(
        &mut self,
        myself: &ActorRef<RoomMsg>,
        up_to: u64,
        result: Result<(), StoreError>,
    ) {
        self.history_writing = false;
        match result {
            Ok(()) => {
                while let Some((m, position)) = self.unflushed.front() {
                    if m.seq > up_to {
                        break;
                    }
                    self.history_seq = m.seq;
                    self.history_position = position + 1;
                    self.unflushed.pop_front();
                }
                let due =
                    self.history_seq >= self.checkpoint_seq + self.ctx.tuning.checkpoint_every;
                if due {
                    self.maybe_checkpoint_now();
                }
                // Reads of history and writes take turns.
                if self.db_jobs.is_empty() {
                    self.write_history(myself);
                } else {
                    self.next_db_job(myself);
                }
            }
            Err(e) => {
                // Retried on the next append or tick; the log still holds these.
                tracing::warn!(room = %self.name, error = %e, "history write failed");
                self.next_db_job(myself);
            }
        }
    }

    fn checkpoint(&self) -> Checkpoint {
        Checkpoint {
            room: self.name.clone(),
            epoch: self.epoch,
            last_seq: self.history_seq,
            log_position: self.history_position,
            history_seq: self.history_seq,
        }
    }

    fn maybe_checkpoint(&mut self) {
        let stale = self.checkpoint_seq < self.history_seq
            && self.checkpoint_at.elapsed() >= self.ctx.tuning.checkpoint_interval;
        if stale {
            self.maybe_checkpoint_now();
        }
    }

    fn maybe_checkpoint_now(&mut self) {
        let checkpoint = self.checkpoint();
        self.checkpoint_seq = checkpoint.history_seq;
        self.checkpoint_at = Instant::now();
        let store = self.ctx.stores.checkpoints.clone();
        tokio::spawn(async move {
            if let Err(e) = store.save(&checkpoint).await {
                tracing::warn!(room = %checkpoint.room, error = %e, "checkpoint failed");
            }
        });
    }

    /// Stops taking sends and stops once the append in flight is answered.
    fn leave_node(&mut self, myself: &ActorRef<RoomMsg>, why: Leaving) {
        if self.leaving != Some(Leaving::Fenced) {
            self.leaving = Some(why);
        }
        tracing::info!(room = %self.name, node = %self.ctx.node, epoch = self.epoch, reason = ?why, "room leaving this node");
        // Queued sends never reached the log: their senders resend to the new owner.
        for p in std::mem::take(&mut self.pending) {
            self.fail((p.user, p.client_id), &moving());
        }
        if !self.reconciling {
            for p in std::mem::take(&mut self.failed_batch) {
                self.fail((p.user, p.client_id), &moving());
            }
        }
        self.stop_if_leaving(myself);
    }

    fn stop_if_leaving(&mut self, myself: &ActorRef<RoomMsg>) {
        if self.leaving.is_some() && !self.appending && !self.reconciling && !self.draining {
            // Whatever is already queued is answered (sends with `unavailable`);
            // later messages are refused, so their senders look again.
            self.draining = true;
            let _ = myself.drain();
        }
    }

    /// After the final checkpoint: gives the lease up and sends every
    /// subscriber to the new owner, from the last seq it was sent.
    async fn moved_away(&mut self, why: Leaving) {
        if why == Leaving::Handoff {
            crate::metrics::ROOM_HANDOFFS.inc();
            if let Some(leases) = &self.ctx.stores.leases {
                match leases.release(&self.name, &self.ctx.node, self.epoch).await {
                    Ok(()) => {
                        tracing::info!(room = %self.name, node = %self.ctx.node, epoch = self.epoch, "room lease released")
                    }
                    Err(e) => {
                        tracing::warn!(room = %self.name, node = %self.ctx.node, epoch = self.epoch, error = %e, "lease release failed; the next owner takes it anyway")
                    }
                }
            }
        }
        // Sessions on other nodes follow from their own router, which knows
        // what it delivered: it acts on the membership change, or on this
        // notice when its view did not change (a fenced room).
        if let Some(router) = &self.ctx.router {
            let _ = router.cast(RouterMsg::RoomRestarted {
                room: self.name.clone(),
            });
        }
        for sub in self
            .subscribers
            .values()
            .filter(|s| s.session.outbox.remote_session().is_none())
        {
            let after = match sub.state {
                SubState::Live { .. } => Some(self.last_seq),
                SubState::Pending { .. } => None,
            };
            let _ = sub.session.actor.cast(SessionMsg::Moved {
                room: self.name.clone(),
                after,
            });
        }
        tracing::info!(
            room = %self.name,
            node = %self.ctx.node,
            epoch = self.epoch,
            last_seq = self.last_seq,
            subscribers = self.subscribers.len(),
            reason = ?why,
            "room handed off"
        );
    }

    async fn flush_for_stop(&mut self) {
        let batch: Vec<ChatMessage> = self.unflushed.iter().map(|(m, _)| m.clone()).collect();
        if !batch.is_empty() {
            match self.ctx.stores.history.write(&batch).await {
                Ok(()) => {
                    if let Some((m, position)) = self.unflushed.back() {
                        self.history_seq = m.seq;
                        self.history_position = position + 1;
                    }
                    self.unflushed.clear();
                }
                Err(e) => {
                    tracing::warn!(room = %self.name, error = %e, "history write at stop failed")
                }
            }
        }
        if self.history_seq > self.checkpoint_seq || self.checkpoint_seq == 0 {
            if let Err(e) = self.ctx.stores.checkpoints.save(&self.checkpoint()).await {
                tracing::warn!(room = %self.name, error = %e, "checkpoint at stop failed");
            }
        }
    }

    /// Typing and read receipts belong to conversations, not to the broadcast room.
    fn check_conversation(&self) -> Result<(), ChatError> {
        if self.kind == RoomKind::Broadcast {
            Err(ChatError::bad_request("not in the broadcast room"))
        } else {
            Ok(())
        }
    }

    fn typing(&mut self, user: &str, active: bool, outbox: &Outbox) {
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

    fn read(&mut self, user: &str, seq: u64, outbox: &Outbox) {
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

    fn history(
        &self,
        user: &str,
        query: HistoryQuery,
        limit: usize,
        reply: RpcReplyPort<Result<Vec<ChatMessage>, ChatError>>,
    ) {
        if let Err(e) = self.check_reader(user) {
            let _ = reply.send(Err(e));
            return;
        }
        // Which seqs the page may need, to tell whether the cache has them all.
        let lowest = match (query.after, query.before) {
            (Some(after), _) => after + 1,
            (None, Some(before)) => before.saturating_sub(limit as u64).max(1),
            (None, None) => self.last_seq.saturating_sub(limit as u64).max(1),
        };
        let first_cached = self
            .recent
            .front()
            .map(|c| c.message.seq)
            .unwrap_or(self.last_seq + 1);
        if lowest >= first_cached || self.last_seq == 0 {
            let cached: Vec<&Cached> = self.recent.iter().collect();
            let page = select_page(&cached, |c| c.message.seq, query, limit);
            let _ = reply.send(Ok(page
                .iter()
                .map(|c| self.as_now(c.message.clone()))
                .collect()));
            return;
        }
        let history = self.ctx.stores.history.clone();
        let unflushed: Vec<ChatMessage> = self
            .unflushed
            .iter()
            .map(|(m, _)| self.as_now(m.clone()))
            .collect();
        let room = self.name.clone();
        tokio::spawn(async move {
            let answer = match history.page(&room, query, limit).await {
                Ok(mut stored) => {
                    stored.extend(unflushed);
                    stored.sort_by_key(|m| m.seq);
                    stored.dedup_by_key(|m| m.seq);
                    Ok(select_page(&stored, |m| m.seq, query, limit).to_vec())
                }
                Err(e) => Err(ChatError::unavailable(e.to_string())),
            };
            let _ = reply.send(answer);
        });
    }
}

/// Every message of `room` with after < seq <= upper, from history and the
/// not yet written tail.
async fn read_range(
    history: &dyn crate::store::History,
    room: &str,
    after: u64,
    upper: u64,
    unflushed: Vec<ChatMessage>,
) -> Result<Vec<ChatMessage>, StoreError> {
    let mut out: BTreeMap<u64, ChatMessage> = BTreeMap::new();
    let mut cursor = after;
    let first_unflushed = unflushed.first().map(|m| m.seq).unwrap_or(u64::MAX);
    while cursor < upper && cursor + 1 < first_unflushed {
        let query = HistoryQuery {
            after: Some(cursor),
            before: None,
            limit: None,
        };
        let page = history.page(room, query, 500).await?;
        let Some(last) = page.last().map(|m| m.seq) else {
            break;
        };
        for m in page {
            out.insert(m.seq, m);
        }
        cursor = last;
    }
    for m in unflushed {
        out.insert(m.seq, m);
    }
    Ok(out
        .into_values()
        .filter(|m| m.seq > after && m.seq <= upper)
        .collect())
}

#[cfg(test)]
mod tests;

// Local-only: never sent to another node.
impl ractor::Message for RoomMsg {}

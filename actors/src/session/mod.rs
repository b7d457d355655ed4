//! The Session actor: one per authenticated connection. The gateway task owns
//! the socket and hands decoded frames to its Session; the Session talks to
//! rooms and presence and writes answers into the connection's outbox.

pub mod supervisor;

use crate::store::events::DomainEvent;
use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use ractor::{Actor, ActorProcessingErr, ActorRef, MessagingErr, RpcReplyPort};
use rand::RngCore;

use crate::cluster::link::RemoteSession;
use crate::cluster::router::RouterMsg;
use crate::cluster::wire::SessionEvent;
use crate::frames::{ChatError, ClientFrame, ErrorCode, MemberStatus, MessageEvent, ServerFrame};
use crate::limits::{check_room_name, check_room_ref, check_username, now_ms, Limits};
use crate::outbox::Outbox;
use crate::presence::PresenceMsg;
use crate::rate_limits::{self, Kind, RateLimits};
use crate::room::supervisor::RoomSupervisorMsg;
use crate::room::{dm_room, CreateSpec, RoomMsg, SendRequest, BROADCAST_ROOM};
use crate::store::{Stores, TokenInfo};

/// A random URL-safe token of `bytes` random bytes.
pub fn new_token(bytes: usize) -> String {
    let mut buf = vec![0u8; bytes];
    rand::rng().fill_bytes(&mut buf);
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(buf)
}

/// Resume tokens live in the token store under this prefix.
pub const RESUME_PREFIX: &str = "resume:";

/// How rooms and presence reach a session.
#[derive(Debug, Clone)]
pub struct SessionHandle {
    /// Unique in the cluster (random high bits per node start).
    pub id: u64,
    pub user: String,
    pub actor: SessionActor,
    pub outbox: Outbox,
}

impl SessionHandle {
    /// Both reach the session the same way (locally, or through the same
    /// remote subscription).
    pub fn same_path(&self, other: &SessionHandle) -> bool {
        match (self.outbox.remote_session(), other.outbox.remote_session()) {
            (None, None) => self.id == other.id,
            (Some(a), Some(b)) => a.session == b.session && a.gen == b.gen,
            _ => false,
        }
    }
}

/// A session's actor as a room sees it: here, or on another node (reached
/// through the link to that node's router).
#[derive(Debug, Clone)]
pub enum SessionActor {
    Local(ActorRef<SessionMsg>),
    /// Shared (with the handle's outbox): a handle is cloned into the
    /// session, presence, the router and every room it is subscribed to.
    Remote(Arc<RemoteSession>),
}

impl SessionActor {
    pub fn cast(&self, msg: SessionMsg) -> Result<(), ChatError> {
        let gone = || ChatError::unavailable("the session is gone");
        match self {
            SessionActor::Local(actor) => actor.cast(msg).map_err(|_| gone()),
            SessionActor::Remote(remote) => {
                let event = match msg {
                    SessionMsg::Moved { after, .. } => SessionEvent::Moved { after },
                    SessionMsg::Detached { .. } => SessionEvent::Detached,
                    SessionMsg::Presence {
                        user,
                        online,
                        last_seen,
                    } => SessionEvent::Presence {
                        user,
                        online,
                        last_seen,
                    },
                    // Attaching a remote session goes through its own node.
                    _ => return Ok(()),
                };
                remote.event(event).then_some(()).ok_or_else(gone)
            }
        }
    }

    /// The local actor's id (None for a remote session).
    pub fn local_id(&self) -> Option<ractor::ActorId> {
        match self {
            SessionActor::Local(actor) => Some(actor.get_id()),
            SessionActor::Remote(_) => None,
        }
    }
}

/// What every session of a node shares: one allocation per node, one
/// pointer in each session (inline, the stores, limits and rate limits were
/// ~600 bytes per session).
#[derive(Clone)]
pub struct SessionContext(Arc<SessionShared>);

impl SessionContext {
    pub fn new(shared: SessionShared) -> SessionContext {
        SessionContext(Arc::new(shared))
    }
}

impl std::ops::Deref for SessionContext {
    type Target = SessionShared;

    fn deref(&self) -> &SessionShared {
        &self.0
    }
}

pub struct SessionShared {
    pub node: String,
    pub stores: Stores,
    pub limits: Limits,
    pub rate_limits: RateLimits,
    pub rooms: ActorRef<RoomSupervisorMsg>,
    pub presence: ActorRef<PresenceMsg>,
    /// Delivers what rooms of other nodes send to this node's sessions.
    pub router: Option<ActorRef<RouterMsg>>,
    pub resume_ttl: Duration,
}

/// A connection that started with `resume`: its token and room positions.
#[derive(Debug, Clone)]
pub struct ResumeRequest {
    pub token: String,
    pub rooms: BTreeMap<String, u64>,
}

pub struct SessionArgs {
    pub user: String,
    pub user_id: i64,
    /// The login token of the connection; its resume token dies with it.
    pub login_token: Option<String>,
    pub outbox: Outbox,
    /// Set when the connection started with `resume`: room -> last seq seen.
    pub resume: Option<ResumeRequest>,
    /// Go live at once (`?live=1`, or an interactive `/login`). Otherwise a
    /// session that did not start with `resume` stays pending until the
    /// connection's first frame, however long that takes: a `resume` then
    /// replays before anything live, any other frame goes live first.
    pub live: bool,
    pub ctx: SessionContext,
}

pub enum SessionMsg {
    /// A decoded frame from the client (boxed: the largest variant by far,
    /// and every message's size is paid in the session's message loop).
    Frame(Box<ClientFrame>),
    /// A room subscribed this session (a join, an invite, a DM, a room restart).
    Attached {
        room: String,
        actor: ActorRef<RoomMsg>,
        /// The room restarted after a crash (unacked sends must be resent).
        restarted: bool,
    },
    /// The user left the room.
    Detached { room: String },
    /// The room moved to another node (or its node died): subscribe again
    /// wherever it is now and replay from `after`.
    Moved { room: String, after: Option<u64> },
    /// The user joined `room` on another connection: subscribe to it.
    Attach { room: String, after: u64 },
    /// Another attempt at following `room` (superseded by a newer `Moved`).
    Follow { room: String, attempt: u64 },
    Presence {
        user: String,
        online: bool,
        last_seen: Option<i64>,
    },
    /// (user, rooms)
    Describe {
        reply: RpcReplyPort<(String, Vec<String>)>,
    },
    /// A summary for the admin endpoints.
    Inspect {
        detail: bool,
        reply: crate::inspect::InspectReply,
    },
}

/// Session ids are unique across the cluster: random high bits per process.
static NEXT_ID: std::sync::LazyLock<AtomicU64> =
    std::sync::LazyLock::new(|| AtomicU64::new((rand::random::<u32>() as u64) << 32 | 1));

pub struct Session;

pub struct SessionState {
    handle: SessionHandle,
    ctx: SessionContext,
    rooms: HashMap<String, ActorRef<RoomMsg>>,
    active: bool,
    /// Presence last forwarded per user: the same news from several rooms goes out once.
    seen_presence: HashMap<String, bool>,
    /// Rooms being followed after a move: room -> the attempt that counts.
    following: HashMap<String, (u64, Option<u64>)>,
    follow_attempts: u64,
    /// When the session started (ms since the epoch).
    connected_since: i64,
    /// The session took over an earlier connection's resume token.
    resumed: bool,
}

impl Actor for Session {
    type Msg = SessionMsg;
    type State = SessionState;
    type Arguments = SessionArgs;

    async fn pre_start(
        &self,
        myself: ActorRef<SessionMsg>,
        args: SessionArgs,
    ) -> Result<SessionState, ActorProcessingErr> {
        let handle = SessionHandle {
            id: NEXT_ID.fetch_add(1, Ordering::Relaxed),
            user: args.user.clone(),
            actor: SessionActor::Local(myself.clone()),
            outbox: args.outbox.clone(),
        };
        let ctx = args.ctx;
        let resume_token = new_token(24);
        let info = TokenInfo {
            user_id: args.user_id,
            username: args.user.clone(),
            expires_at: now_ms() + ctx.resume_ttl.as_millis() as i64,
            parent: args.login_token.clone(),
        };
        ctx.stores
            .ephemeral
            .put_token(&format!("{RESUME_PREFIX}{resume_token}"), &info)
            .await
            .map_err(|e| Box::new(ChatError::unavailable(e.to_string())) as ActorProcessingErr)?;
        if let Some(router) = &ctx.router {
            let _ = router.cast(RouterMsg::Register {
                handle: handle.clone(),
                resume_token: resume_token.clone(),
            });
        }
        let first = crate::ask(&ctx.presence, |reply| PresenceMsg::Register {
            session: handle.clone(),
            reply,
        })
        .await?;
        let mut state = SessionState {
            handle,
            ctx,
            rooms: HashMap::new(),
            active: false,
            seen_presence: HashMap::new(),
            following: HashMap::new(),
            follow_attempts: 0,
            connected_since: now_ms(),
            resumed: false,
        };
        state.subscribe_all(&myself).await;
        state.push(&ServerFrame::Session {
            session_id: new_token(9),
            resume_token,
            user: args.user.clone(),
            node: state.ctx.node.clone(),
        });
        if first {
            state.announce(true, None);
        }
        match args.resume {
            Some(resume) => {
                state.resumed = true;
                // The older connection with this token, on any node, is closed.
                if let Some(router) = &state.ctx.router {
                    let _ = router.cast(RouterMsg::TakeOver {
                        resume_token: resume.token,
                        keep: state.handle.id,
                    });
                }
                state.activate(Some(resume.rooms)).await
            }
            // No deadline here: a timer that turned the session live would
            // let live traffic overtake the replay of a late `resume`.
            None if args.live => state.activate(None).await,
            None => {}
        }
        Ok(state)
    }

    async fn post_stop(
        &self,
        _myself: ActorRef<SessionMsg>,
        state: &mut SessionState,
    ) -> Result<(), ActorProcessingErr> {
        for room in state.rooms.values() {
            let _ = room.cast(RoomMsg::Unsubscribe {
                session_id: state.handle.id,
            });
        }
        if let Some(router) = &state.ctx.router {
            let _ = router.cast(RouterMsg::Unregister {
                session: state.handle.id,
            });
        }
        let last = crate::ask(&state.ctx.presence, |reply| PresenceMsg::Unregister {
            session_id: state.handle.id,
            user: state.handle.user.clone(),
            reply,
        })
        .await
        .ok()
        .flatten();
        if let Some(ts) = last {
            state.announce(false, Some(ts));
        }
        Ok(())
    }

    async fn handle(
        &self,
        myself: ActorRef<SessionMsg>,
        msg: SessionMsg,
        state: &mut SessionState,
    ) -> Result<(), ActorProcessingErr> {
        // Boxed: ractor keeps one session's whole message loop, this future
        // included, in one allocation for the session's life, sized by its
        // largest await (5.2 KB with `on_message` inline, measured with
        // heaptrack). So an idle session holds only the loop, and each
        // message pays one short-lived allocation.
        Box::pin(state.on_message(myself, msg)).await;
        Ok(())
    }
}

impl SessionState {
    /// One message of the session's mailbox.
    async fn on_message(&mut self, myself: ActorRef<SessionMsg>, msg: SessionMsg) {
        let state = self;
        match msg {
            SessionMsg::Frame(frame) => match *frame {
                ClientFrame::Resume {
                    resume_token,
                    rooms,
                } => state.resume(resume_token, rooms).await,
                frame => {
                    if !state.active {
                        state.activate(None).await;
                    }
                    state.handle_frame(frame).await;
                }
            },
            SessionMsg::Attached {
                room,
                actor,
                restarted,
            } => {
                let replaced = state
                    .rooms
                    .insert(room.clone(), actor.clone())
                    .is_some_and(|old| old.get_id() != actor.get_id());
                if restarted && replaced {
                    // Sends queued in the crashed actor's mailbox were never acked.
                    let e = ChatError::unavailable(format!(
                        "room {room} restarted; resend what was not acked (same client_id)"
                    ));
                    state.push_error(&e, "send");
                }
                // Rooms subscribe sessions pending (a join, a new room, a
                // restart): a live session goes live there now, delivering
                // what came since; a pending one at its first frame.
                if state.active {
                    let id = state.handle.id;
                    let live = state
                        .call_room(&room, None, move |reply| RoomMsg::Activate {
                            session_id: id,
                            after: None,
                            hold: false,
                            reply,
                        })
                        .await;
                    if let Err(e) = live {
                        tracing::debug!(room = %room, error = %e, "activating a restarted room failed; following it");
                        state.start_following(&myself, room, None).await;
                    }
                }
            }
            SessionMsg::Detached { room } => {
                state.rooms.remove(&room);
            }
            SessionMsg::Moved { room, after } => {
                // A move that knows no position (its router saw nothing
                // delivered on a subscription still activating) keeps the
                // one of the follow in progress: else the replay would start
                // at the new room's last seq and skip what came in between.
                let after =
                    after.or_else(|| state.following.get(&room).and_then(|(_, known)| *known));
                state.start_following(&myself, room, after).await
            }
            SessionMsg::Attach { room, after } => {
                if !state.rooms.contains_key(&room) && !state.following.contains_key(&room) {
                    state.start_following(&myself, room, Some(after)).await;
                }
            }
            SessionMsg::Follow { room, attempt } => {
                if let Some(&(current, after)) = state.following.get(&room) {
                    if current == attempt {
                        state.follow(&myself, room, after, attempt).await;
                    }
                }
            }
            SessionMsg::Presence {
                user,
                online,
                last_seen,
            } => {
                if state.seen_presence.insert(user.clone(), online) != Some(online) {
                    state.push(&ServerFrame::Presence {
                        user,
                        online,
                        last_seen,
                    });
                }
            }
            SessionMsg::Describe { reply } => {
                let mut rooms: Vec<String> = state.rooms.keys().cloned().collect();
                rooms.sort();
                let _ = reply.send((state.handle.user.clone(), rooms));
            }
            SessionMsg::Inspect { detail, reply } => {
                let _ = reply.send(state.inspect(detail));
            }
        }
    }
}

impl SessionState {
    /// What an operator sees of this session (`/admin/actors`).
    fn inspect(&self, detail: bool) -> serde_json::Value {
        let mut rooms: Vec<&String> = self.rooms.keys().collect();
        rooms.sort();
        let mut state = serde_json::json!({
            // A string: ids use all 64 bits, more than a JSON number keeps in a browser.
            "id": self.handle.id.to_string(),
            "user": self.handle.user,
            "rooms": rooms,
            "queued_frames": self.handle.outbox.queued(),
            "connected_since": self.connected_since,
            "live": self.active,
            "resumed": self.resumed,
        });
        if detail {
            let mut following: Vec<&String> = self.following.keys().collect();
            following.sort();
            state["following"] = serde_json::json!(following);
        }
        state
    }

    fn push(&self, frame: &ServerFrame) {
        self.handle.outbox.push_frame(frame);
    }

    /// Nothing to say on success (the room tells the user's connections); the error otherwise.
    fn answer(&self, result: Result<(), ChatError>, reference: &str) {
        if let Err(e) = result {
            self.push_error(&e, reference);
        }
    }

    fn push_error(&self, error: &ChatError, reference: &str) {
        self.push(&ServerFrame::error(error, Some(reference.to_string())));
    }

    fn myself(&self) -> Option<ActorRef<SessionMsg>> {
        match &self.handle.actor {
            SessionActor::Local(me) => Some(me.clone()),
            SessionActor::Remote(_) => None,
        }
    }

    fn user(&self) -> &str {
        &self.handle.user
    }

    /// Subscribes (pending) to every room of the user and to the broadcast room.
    async fn subscribe_all(&mut self, myself: &ActorRef<SessionMsg>) {
        let mut names = match self.ctx.stores.directory.rooms_of(self.user()).await {
            Ok(names) => names,
            Err(e) => {
                tracing::warn!(user = %self.user(), error = %e, "rooms of user unavailable");
                self.push_error(
                    &ChatError::unavailable("your rooms could not be loaded; reconnect"),
                    "session",
                );
                Vec::new()
            }
        };
        names.push(BROADCAST_ROOM.to_string());
        for name in names {
            match self.room(&name, None).await {
                Ok(room) => {
                    self.rooms.insert(name.clone(), room.clone());
                    let _ = room.cast(RoomMsg::Subscribe {
                        session: self.handle.clone(),
                        pending: true,
                    });
                }
                Err(e) => {
                    // Its node is moving or unreachable right now: keep trying.
                    tracing::debug!(room = %name, error = %e, "room not reachable yet; following it");
                    self.start_following(myself, name, None).await;
                }
            }
        }
    }

    /// Tells the user's rooms and friends that they came online or went
    /// offline.
    fn announce(&self, online: bool, last_seen: Option<i64>) {
        for (name, room) in &self.rooms {
            if name != BROADCAST_ROOM {
                let _ = room.cast(RoomMsg::PresenceChanged {
                    user: self.user().to_string(),
                    online,
                    last_seen: last_seen.or(Some(now_ms())),
                });
            }
        }
        self.ctx.stores.events.publish(DomainEvent::new(
            if online {
                "presence.online"
            } else {
                "presence.offline"
            },
            self.user(),
            serde_json::json!({
                "user": self.user(),
                "node": self.ctx.node,
                "last_seen": last_seen.unwrap_or_else(now_ms),
            }),
        ));
        // Friends hear it on whatever node they are, shared room or not.
        if let Some(router) = self.ctx.router.clone() {
            let friends = self.ctx.stores.friends.clone();
            let user = self.user().to_string();
            let frame = ServerFrame::Presence {
                user: user.clone(),
                online,
                last_seen: last_seen.or(Some(now_ms())),
            };
            tokio::spawn(async move {
                match friends.friends_of(&user).await {
                    Ok(users) if !users.is_empty() => {
                        let frame = frame.encode().to_string();
                        let _ = router.cast(RouterMsg::ToUsers { users, frame });
                    }
                    Ok(_) => {}
                    Err(e) => {
                        tracing::warn!(%user, error = %e, "friends unavailable; presence not pushed to them")
                    }
                }
            });
        }
    }

    /// Turns pending subscriptions live, replaying from the resume positions.
    async fn activate(&mut self, resume: Option<BTreeMap<String, u64>>) {
        self.active = true;
        // A room still being followed replays from the client's position too.
        if let Some(positions) = &resume {
            for (room, (_, after)) in self.following.iter_mut() {
                if let Some(&p) = positions.get(room) {
                    *after = Some(p);
                }
            }
        }
        // Rooms still being followed (unreachable when this session started)
        // are resumed too: `resumed` lists every room of the user.
        let mut names: Vec<String> = self.rooms.keys().cloned().collect();
        for room in self.following.keys() {
            if !self.rooms.contains_key(room) {
                names.push(room.clone());
            }
        }
        // A resume replays every room first, holding live traffic back, so
        // that `resumed` comes after every replay and before anything live.
        let hold = resume.is_some();
        let mut positions = BTreeMap::new();
        for name in names {
            let after = resume.as_ref().and_then(|r| r.get(&name).copied());
            let id = self.handle.id;
            let activated = if self.rooms.contains_key(&name) {
                self.call_room(&name, None, move |reply| RoomMsg::Activate {
                    session_id: id,
                    after,
                    hold,
                    reply,
                })
                .await
            } else {
                Err(ChatError::unavailable("the room is not reachable yet"))
            };
            match activated {
                Ok(last) => {
                    positions.insert(name, last);
                }
                Err(e) => {
                    // The room is moving (or its node just died): subscribe
                    // again where it lands, for a few seconds, before `resumed`.
                    tracing::debug!(room = %name, error = %e, "activation failed; the room may be moving");
                    let mut last = None;
                    for _ in 0..10 {
                        tokio::time::sleep(Duration::from_millis(300)).await;
                        if let Ok(Some(seq)) = self.subscribe_again(&name, after, hold).await {
                            last = Some(seq);
                            break;
                        }
                    }
                    match (last, self.myself()) {
                        (Some(seq), _) => {
                            self.following.remove(&name);
                            positions.insert(name, seq);
                        }
                        // Still unreachable: it is replayed when it is back.
                        (None, Some(me)) => self.start_following(&me, name, after).await,
                        (None, None) => {}
                    }
                }
            }
        }
        if resume.is_some() {
            self.push(&ServerFrame::Resumed {
                rooms: positions.clone(),
            });
            // Now live: each room first sends what arrived since its replay.
            for (name, seq) in positions {
                let id = self.handle.id;
                let live = self
                    .call_room(&name, None, move |reply| RoomMsg::Activate {
                        session_id: id,
                        after: None,
                        hold: false,
                        reply,
                    })
                    .await;
                if let (Err(e), Some(me)) = (live, self.myself()) {
                    // It moved since its replay: follow it from there.
                    tracing::debug!(room = %name, error = %e, "going live failed; following the room");
                    self.start_following(&me, name, Some(seq)).await;
                }
            }
        }
    }

    async fn resume(&mut self, token: String, rooms: BTreeMap<String, u64>) {
        let owner = self
            .ctx
            .stores
            .ephemeral
            .token(&format!("{RESUME_PREFIX}{token}"))
            .await;
        match owner {
            Ok(Some(info)) if info.username != self.handle.user => self.push_error(
                &ChatError::new(
                    ErrorCode::Unauthorized,
                    "that resume token belongs to another user",
                ),
                "resume",
            ),
            // This connection is already authenticated as the user, so replaying
            // their rooms needs no proof: an expired token, or one lost when an
            // embedded node restarted, still resumes.
            Ok(found) => {
                self.resumed = true;
                if found.is_some() {
                    // The older connection with this token, on any node, is closed.
                    if let Some(router) = &self.ctx.router {
                        let _ = router.cast(RouterMsg::TakeOver {
                            resume_token: token,
                            keep: self.handle.id,
                        });
                    }
                }
                self.activate(Some(rooms)).await
            }
            Err(e) => {
                tracing::warn!(error = %e, "resume token store unavailable; resuming as the authenticated user");
                self.activate(Some(rooms)).await
            }
        }
    }

    async fn start_following(
        &mut self,
        myself: &ActorRef<SessionMsg>,
        room: String,
        after: Option<u64>,
    ) {
        self.follow_attempts += 1;
        let attempt = self.follow_attempts;
        self.following.insert(room.clone(), (attempt, after));
        self.follow(myself, room, after, attempt).await;
    }

    /// Subscribes again to a room that moved (or that the user joined
    /// elsewhere) and replays from `after`; retried until it works or a
    /// newer move of the same room supersedes it.
    async fn follow(
        &mut self,
        myself: &ActorRef<SessionMsg>,
        room: String,
        after: Option<u64>,
        attempt: u64,
    ) {
        let attached = self.subscribe_again(&room, after, false).await;
        match attached {
            Ok(_) => {
                self.following.remove(&room);
            }
            Err(e) => {
                tracing::debug!(room = %room, error = %e, "room not reachable yet; following again shortly");
                myself.send_after(Duration::from_millis(250), move || SessionMsg::Follow {
                    room,
                    attempt,
                });
            }
        }
    }

    /// Subscribes to `room` wherever it is now (pending) and, if this
    /// session is live, activates from `after` (holding live traffic back
    /// with `hold`, see `RoomMsg::Activate`): the room's last seq.
    async fn subscribe_again(
        &mut self,
        room: &str,
        after: Option<u64>,
        hold: bool,
    ) -> Result<Option<u64>, ChatError> {
        self.rooms.remove(room);
        let actor = self.room(room, None).await?;
        self.rooms.insert(room.to_string(), actor.clone());
        let _ = actor.cast(RoomMsg::Subscribe {
            session: self.handle.clone(),
            pending: true,
        });
        if !self.active {
            return Ok(None);
        }
        let id = self.handle.id;
        self.call_room(room, None, move |reply| RoomMsg::Activate {
            session_id: id,
            after,
            hold,
            reply,
        })
        .await
        .map(Some)
    }

    /// The room's actor: the one we know, or a (re)started one.
    async fn room(
        &mut self,
        name: &str,
        create: Option<CreateSpec>,
    ) -> Result<ActorRef<RoomMsg>, ChatError> {
        if let Some(room) = self.rooms.get(name) {
            if room.get_status() != ractor::ActorStatus::Stopped {
                return Ok(room.clone());
            }
        }
        let name_owned = name.to_string();
        let room = crate::ask(&self.ctx.rooms, |reply| RoomSupervisorMsg::Get {
            name: name_owned,
            create,
            reply,
        })
        .await??;
        // Only rooms this session is subscribed to are kept (they hear of its
        // presence); a room it merely asked about is not.
        if let Some(known) = self.rooms.get_mut(name) {
            *known = room.clone();
        }
        Ok(room)
    }

    /// Casts to a room, once more to its restarted actor if it just died.
    async fn cast_room(
        &mut self,
        name: &str,
        create: Option<CreateSpec>,
        msg: RoomMsg,
    ) -> Result<(), ChatError> {
        let room = self.room(name, create.clone()).await?;
        match room.cast(msg) {
            Ok(()) => Ok(()),
            Err(MessagingErr::SendErr(msg)) => {
                self.rooms.remove(name);
                let room = self.room(name, create).await?;
                room.cast(msg)
                    .map_err(|_| ChatError::unavailable("the room is restarting, retry"))
            }
            Err(_) => Err(ChatError::unavailable("the room is restarting, retry")),
        }
    }

    /// Calls a room, once more to its restarted actor if it just died.
    async fn call_room<T: Send + 'static>(
        &mut self,
        name: &str,
        create: Option<CreateSpec>,
        build: impl Fn(RpcReplyPort<T>) -> RoomMsg,
    ) -> Result<T, ChatError> {
        let room = self.room(name, create.clone()).await?;
        match crate::ask(&room, &build).await {
            Ok(value) => Ok(value),
            Err(_) if room.get_status() == ractor::ActorStatus::Stopped => {
                self.rooms.remove(name);
                let room = self.room(name, create).await?;
                crate::ask(&room, &build).await
            }
            Err(e) => Err(e),
        }
    }

    /// Takes one `kind` action of this session's user.
    async fn allow(&self, kind: Kind) -> Result<(), ChatError> {
        let subject = format!("user:{}", self.user());
        let ctx = &self.ctx;
        ctx.rate_limits
            .check(&*ctx.stores.ephemeral, kind, &subject)
            .await
    }

    async fn handle_frame(&mut self, frame: ClientFrame) {
        let user = self.user().to_string();
        let limited = match &frame {
            ClientFrame::Join { .. } => Some(Kind::Join),
            ClientFrame::Leave { .. } => Some(Kind::Leave),
            ClientFrame::Invite { .. } => Some(Kind::Invite),
            ClientFrame::Typing { .. } => Some(Kind::Typing),
            ClientFrame::Read { .. } => Some(Kind::Read),
            ClientFrame::History { .. } => Some(Kind::History),
            ClientFrame::Members { .. } => Some(Kind::Members),
            ClientFrame::Who => Some(Kind::Who),
            _ => None,
        };
        if let Some(kind) = limited {
            if let Err(e) = self.allow(kind).await {
                self.push_error(&e, &frame.reference());
                return;
            }
        }
        match frame {
            ClientFrame::Auth { .. } => {
                self.push_error(&ChatError::bad_request("already authenticated"), "auth")
            }
            ClientFrame::Resume { .. } => {}
            ClientFrame::Join { room } => {
                let result = async {
                    check_room_name(&room)?;
                    let create = CreateSpec {
                        private: false,
                        creator: user.clone(),
                        members: vec![user.clone()],
                    };
                    let session = Some(self.handle.id);
                    self.call_room(&room, Some(create), |reply| RoomMsg::Join {
                        user: user.clone(),
                        session,
                        reply,
                    })
                    .await?
                }
                .await;
                self.answer(result, "join");
            }
            ClientFrame::Leave { room } => {
                let result = async {
                    check_room_ref(&room)?;
                    self.call_room(&room, None, |reply| RoomMsg::Leave {
                        user: user.clone(),
                        reply,
                    })
                    .await?
                }
                .await;
                self.answer(result, "leave");
            }
            ClientFrame::Invite {
                room,
                user: invitee,
            } => {
                let result = async {
                    check_room_name(&room)?;
                    check_username(&invitee)?;
                    self.call_room(&room, None, |reply| RoomMsg::Invite {
                        by: user.clone(),
                        user: invitee.clone(),
                        reply,
                    })
                    .await?
                }
                .await;
                self.answer(result, "invite");
            }
            ClientFrame::Send {
                room,
                body,
                client_id,
                reply_to,
                attachments,
            } => {
                let checked = check_room_ref(&room);
                let out = Outgoing {
                    body,
                    reply_to,
                    attachments,
                    event: None,
                };
                self.send(room, None, out, client_id, checked).await
            }
            ClientFrame::Edit {
                room,
                seq,
                body,
                client_id,
            } => {
                let event = MessageEvent::Edit { target: seq, body };
                self.send_event(room, event, client_id).await
            }
            ClientFrame::Delete {
                room,
                seq,
                client_id,
            } => {
                let event = MessageEvent::Delete { target: seq };
                self.send_event(room, event, client_id).await
            }
            ClientFrame::React {
                room,
                seq,
                emoji,
                client_id,
            } => {
                let event = MessageEvent::React { target: seq, emoji };
                self.send_event(room, event, client_id).await
            }
            ClientFrame::Unreact {
                room,
                seq,
                emoji,
                client_id,
            } => {
                let event = MessageEvent::Unreact { target: seq, emoji };
                self.send_event(room, event, client_id).await
            }
            ClientFrame::Pin {
                room,
                seq,
                client_id,
            } => {
                let event = MessageEvent::Pin { target: seq };
                self.send_event(room, event, client_id).await
            }
            ClientFrame::Unpin {
                room,
                seq,
                client_id,
            } => {
                let event = MessageEvent::Unpin { target: seq };
                self.send_event(room, event, client_id).await
            }
            ClientFrame::Dm {
                to,
                body,
                client_id,
            } => {
                let checked = check_username(&to).and_then(|()| {
                    if to == user {
                        Err(ChatError::bad_request("a DM needs another user"))
                    } else {
                        Ok(())
                    }
                });
                let room = dm_room(&user, &to);
                let create = CreateSpec {
                    private: true,
                    creator: user.clone(),
                    members: vec![user.clone(), to],
                };
                self.send(room, Some(create), Outgoing::text(body), client_id, checked)
                    .await
            }
            ClientFrame::Broadcast { body, client_id } => {
                let out = Outgoing::text(body);
                self.send(BROADCAST_ROOM.to_string(), None, out, client_id, Ok(()))
                    .await
            }
            ClientFrame::Typing { room, active } => {
                let outbox = self.handle.outbox.clone();
                let result = match check_room_ref(&room) {
                    Ok(()) => {
                        self.cast_room(
                            &room,
                            None,
                            RoomMsg::Typing {
                                user,
                                active,
                                session_id: self.handle.id,
                                outbox,
                            },
                        )
                        .await
                    }
                    Err(e) => Err(e),
                };
                if let Err(e) = result {
                    self.push_error(&e, "typing");
                }
            }
            ClientFrame::Read { room, seq } => {
                let outbox = self.handle.outbox.clone();
                let result = match check_room_ref(&room) {
                    Ok(()) => {
                        let session_id = self.handle.id;
                        self.cast_room(
                            &room,
                            None,
                            RoomMsg::Read {
                                user,
                                seq,
                                session_id,
                                outbox,
                            },
                        )
                        .await
                    }
                    Err(e) => Err(e),
                };
                if let Err(e) = result {
                    self.push_error(&e, "read");
                }
            }
            ClientFrame::History { room, query } => {
                let result = match check_room_ref(&room).and_then(|()| query.checked_limit()) {
                    Ok(limit) => self
                        .call_room(&room, None, move |reply| RoomMsg::History {
                            user: user.clone(),
                            query,
                            limit,
                            reply,
                        })
                        .await
                        .and_then(|r| r),
                    Err(e) => Err(e),
                };
                match result {
                    Ok(messages) => self.push(&ServerFrame::History { room, messages }),
                    Err(e) => self.push_error(&e, "history"),
                }
            }
            ClientFrame::Members { room } => match self.members(&room).await {
                Ok(members) => self.push(&ServerFrame::Members { room, members }),
                Err(e) => self.push_error(&e, "members"),
            },
            ClientFrame::Who => {
                match crate::ask(&self.ctx.presence, |reply| PresenceMsg::Online { reply }).await {
                    Ok(users) => self.push(&ServerFrame::Users { users }),
                    Err(e) => self.push_error(&e, "who"),
                }
            }
            ClientFrame::Ping { nonce } => self.push(&ServerFrame::Pong { nonce }),
            #[cfg(feature = "test-hooks")]
            ClientFrame::DebugPanicRoom { room } => {
                let _ = self.cast_room(&room, None, RoomMsg::Panic).await;
            }
        }
    }

    async fn send_event(&mut self, room: String, event: MessageEvent, client_id: String) {
        let checked = check_room_ref(&room);
        let out = Outgoing {
            body: String::new(),
            reply_to: None,
            attachments: Vec::new(),
            event: Some(event),
        };
        self.send(room, None, out, client_id, checked).await
    }

    async fn send(
        &mut self,
        room: String,
        create: Option<CreateSpec>,
        out: Outgoing,
        client_id: String,
        checked: Result<(), ChatError>,
    ) {
        let limits = &self.ctx.limits;
        let checked = checked
            .and_then(|()| limits.check_client_id(&client_id))
            .and_then(|()| out.check(limits));
        if let Err(e) = checked {
            self.push_error(&e, &client_id);
            return;
        }
        if !out.attachments.is_empty() {
            let attachments = self.ctx.stores.attachments.clone();
            if let Err(e) = attachments
                .check(&out.attachments, &room, self.user())
                .await
            {
                self.push_error(&e, &client_id);
                return;
            }
        }
        // The key and rate of before `[rate_limits]`; chat keeps working
        // when the rate-limit store is down.
        let rate = rate_limits::Rate::new(limits.messages_per_second, limits.message_burst);
        let key = format!("msg:{}", self.user());
        let ephemeral = &*self.ctx.stores.ephemeral;
        if let Err(e) = rate_limits::take(ephemeral, Kind::Message, &key, rate, 1).await {
            self.push_error(&e, &client_id);
            return;
        }
        if let Err(e) = self.check_not_blocked(&room).await {
            self.push_error(&e, &client_id);
            return;
        }
        let request = SendRequest {
            user: self.user().to_string(),
            client_id: client_id.clone(),
            body: out.body,
            reply_to: out.reply_to,
            attachments: out.attachments,
            event: out.event,
            session_id: self.handle.id,
            outbox: self.handle.outbox.clone(),
        };
        if let Err(e) = self.cast_room(&room, create, RoomMsg::Send(request)).await {
            self.push_error(&e, &client_id);
        }
    }

    /// A DM room between two users of whom one blocked the other takes no
    /// messages, whichever of them writes.
    async fn check_not_blocked(&self, room: &str) -> Result<(), ChatError> {
        let Some((a, b)) = crate::room::dm_members(room) else {
            return Ok(());
        };
        let other = if a == self.user() { b } else { a };
        match self
            .ctx
            .stores
            .friends
            .blocked_between(self.user(), other)
            .await
        {
            Ok(false) => Ok(()),
            Ok(true) => Err(ChatError::forbidden(format!(
                "you cannot message {other}: one of you blocked the other"
            ))),
            Err(e) => Err(ChatError::unavailable(e.to_string())),
        }
    }

    async fn members(&mut self, room: &str) -> Result<Vec<MemberStatus>, ChatError> {
        check_room_ref(room)?;
        let user = self.user().to_string();
        let members = self
            .call_room(room, None, move |reply| RoomMsg::Members {
                user: user.clone(),
                reply,
            })
            .await??;
        let users: Vec<String> = members.iter().map(|(u, _)| u.clone()).collect();
        let statuses = crate::ask(&self.ctx.presence, |reply| PresenceMsg::Status {
            users,
            reply,
        })
        .await?;
        let mut out: Vec<MemberStatus> = statuses
            .into_iter()
            .zip(members)
            .map(|(s, (_, read_seq))| MemberStatus {
                user: s.user,
                online: s.online,
                last_seen: s.last_seen,
                read_seq,
            })
            .collect();
        out.sort_by(|a, b| a.user.cmp(&b.user));
        Ok(out)
    }
}

// Local-only: never sent to another node.
impl ractor::Message for SessionMsg {}

/// What a connection posts to a room: a message, or a change to one.
pub struct Outgoing {
    pub body: String,
    pub reply_to: Option<u64>,
    pub attachments: Vec<String>,
    pub event: Option<MessageEvent>,
}

impl Outgoing {
    pub fn text(body: String) -> Self {
        Outgoing {
            body,
            reply_to: None,
            attachments: Vec::new(),
            event: None,
        }
    }

    /// The checks that need no room: body size, emoji, reference counts.
    pub fn check(&self, limits: &crate::limits::Limits) -> Result<(), ChatError> {
        if self.attachments.len() > crate::store::attachments::MAX_PER_MESSAGE {
            return Err(ChatError::bad_request(format!(
                "at most {} attachments per message",
                crate::store::attachments::MAX_PER_MESSAGE
            )));
        }
        match &self.event {
            None => limits.check_body(&self.body),
            Some(MessageEvent::Edit { body, .. }) => limits.check_body(body),
            Some(MessageEvent::React { emoji, .. } | MessageEvent::Unreact { emoji, .. }) => {
                crate::life::check_emoji(emoji)
            }
            Some(_) => Ok(()),
        }
    }
}

//! The Router: the one actor of a node that other nodes talk to. It takes
//! requests for rooms owned here (starting the room when needed, queueing
//! what arrives meanwhile so a session's requests keep their order), and
//! delivers what remote rooms push to the sessions of this node.
//!
//! It also keeps, per (room owned elsewhere, local session), the last seq
//! delivered: when that room's owner leaves the view, the session is told to
//! re-subscribe with the new owner from exactly there. The seq and the sends
//! a delivery answers come with it as fields ([`Deliver`]): the router never
//! reads a frame.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use ractor::message::{BoxedDowncastErr, SerializedMessage};
use ractor::{Actor, ActorProcessingErr, ActorRef, MessagingErr, RpcReplyPort};
use tokio_tungstenite::tungstenite::Utf8Bytes;

use super::link::{Link, LinkItem, RemoteSession};
use super::mesh::MeshMsg;
use super::wire::{
    self, Deliver, Incoming, RoomCall, RoomCast, SessionEvent, WireCall, WireCast, WireReply,
};
use super::{router_group, Membership};
use crate::frames::{ChatError, ServerFrame};
use crate::inspect::Inspector;
use crate::outbox::{Marks, Outbox};
use crate::room::supervisor::RoomSupervisorMsg;
use crate::room::{refuse, RoomMsg, SendRequest};
use crate::session::{SessionActor, SessionHandle, SessionMsg};

/// How long a node waits for a peer's answer.
pub const REMOTE_TIMEOUT: Duration = Duration::from_secs(5);

pub enum RouterMsg {
    // ---- from other nodes (the only variants that cross the wire) ----
    Cast(Vec<u8>),
    Call(Vec<u8>, RpcReplyPort<Vec<u8>>),
    // ---- local ----
    Register {
        handle: SessionHandle,
        resume_token: String,
    },
    Unregister {
        session: u64,
    },
    /// A local session subscribed (generation `gen`) to a room owned by `owner`.
    Track {
        room: String,
        session: u64,
        gen: u64,
        owner: String,
    },
    Untrack {
        room: String,
        session: u64,
        gen: u64,
    },
    /// The last seq of `room` delivered to `session` (its activation must
    /// not replay what the connection already has).
    Delivered {
        room: String,
        session: u64,
        reply: RpcReplyPort<Option<u64>>,
    },
    /// The session's activation at the owner returned `seq`.
    Position {
        room: String,
        session: u64,
        gen: u64,
        seq: u64,
    },
    Membership(Membership),
    /// The room supervisor (started after the router).
    Rooms(ActorRef<RoomSupervisorMsg>),
    /// Where the mesh is, and what to answer to pings.
    Book {
        mesh: ActorRef<MeshMsg>,
        ready: bool,
        addr: String,
        peers: Vec<(String, String)>,
        /// The wire version of each peer that answered a ping.
        wires: Vec<(String, u32)>,
    },
    RoomStarted {
        room: String,
        result: Result<ActorRef<RoomMsg>, ChatError>,
    },
    /// `user` joined `room` (owned here): attach their sessions on other nodes.
    AttachUser {
        room: String,
        user: String,
        joined: String,
        last_seq: u64,
    },
    /// A connection resumed with `resume_token`: close older ones everywhere.
    TakeOver {
        resume_token: String,
        keep: u64,
    },
    /// Tells every peer this node is leaving.
    Leaving,
    /// A room owned here restarted after a crash: followers elsewhere re-subscribe.
    RoomRestarted {
        room: String,
    },
    /// Pushes `frame` (encoded) to every session of these users, on every
    /// node: what reaches a user outside any room (a friend's presence, a
    /// friend request).
    ToUsers {
        users: Vec<String>,
        frame: String,
    },
    /// A local session sent `client_id` to `room`, owned by `owner`: if the
    /// owner changes before the ack comes back, the sender is told to resend.
    InFlight {
        room: String,
        session: u64,
        client_id: String,
        owner: String,
    },
    /// Answers once the barrier `id` came down a link (a remote activation's
    /// replay has been delivered).
    /// `true` only if the subscription `gen` of (room, session) is still
    /// current then: otherwise the replay's frames were dropped.
    AwaitBarrier {
        id: u64,
        room: String,
        session: u64,
        gen: u64,
        reply: RpcReplyPort<bool>,
    },
    /// How this node's actors are found for an inspection from another node.
    Inspector(Box<Inspector>),
    /// A summary of the router itself (the admin endpoints).
    Inspect {
        reply: crate::inspect::InspectReply,
    },
}

// Only `Cast` and `Call` are serializable: the others never leave the node.
impl ractor::Message for RouterMsg {
    fn serializable() -> bool {
        true
    }

    fn serialize(self) -> Result<SerializedMessage, BoxedDowncastErr> {
        match self {
            RouterMsg::Cast(args) => Ok(SerializedMessage::Cast {
                variant: "cast".into(),
                args,
                metadata: None,
            }),
            RouterMsg::Call(args, reply) => Ok(SerializedMessage::Call {
                variant: "call".into(),
                args,
                reply,
                metadata: None,
            }),
            _ => Err(BoxedDowncastErr),
        }
    }

    fn deserialize(bytes: SerializedMessage) -> Result<Self, BoxedDowncastErr> {
        match bytes {
            SerializedMessage::Cast { args, .. } => Ok(RouterMsg::Cast(args)),
            SerializedMessage::Call { args, reply, .. } => Ok(RouterMsg::Call(args, reply)),
            SerializedMessage::CallReply(..) => Err(BoxedDowncastErr),
        }
    }
}

/// The router of `node`, if this node sees it.
pub fn peer_router(node: &str) -> Option<ActorRef<RouterMsg>> {
    ractor::pg::get_members(&router_group(node))
        .into_iter()
        .find(|cell| !cell.get_id().is_local())
        .map(ActorRef::from)
}

/// Sends a request to a peer's router and decodes its answer.
pub async fn call_peer(
    router: &ActorRef<RouterMsg>,
    call: &WireCall,
) -> Result<WireReply, ChatError> {
    let bytes = wire::encode_json(call);
    match router
        .call(|reply| RouterMsg::Call(bytes, reply), Some(REMOTE_TIMEOUT))
        .await
    {
        Ok(ractor::rpc::CallResult::Success(answer)) => wire::decode_json(&answer),
        Ok(ractor::rpc::CallResult::Timeout) => Err(ChatError::unavailable(
            "another node did not answer in time, retry",
        )),
        _ => Err(ChatError::unavailable("another node is unreachable, retry")),
    }
}

pub struct RouterArgs {
    pub me: String,
}

pub struct Router;

enum Slot {
    Ready(ActorRef<RoomMsg>),
    Starting(Vec<RoomMsg>),
}

/// A local session following a room owned by another node.
struct Track {
    /// The current subscription (None between a move and the re-subscribe).
    gen: Option<u64>,
    owner: Option<String>,
    /// The last seq delivered to the session: where it resumes after a move.
    delivered: Option<u64>,
}

pub struct RouterState {
    me: String,
    rooms: Option<ActorRef<RoomSupervisorMsg>>,
    sessions: HashMap<u64, (SessionHandle, String)>,
    slots: HashMap<String, Slot>,
    /// The link to each peer, and the wire version it was told the peer speaks.
    links: HashMap<String, (Link, u32)>,
    /// The wire version of each peer, as the mesh last heard it.
    wires: HashMap<String, u32>,
    tracks: HashMap<String, HashMap<u64, Track>>,
    membership: Membership,
    mesh: Option<ActorRef<MeshMsg>>,
    /// This node has joined its cluster (told to peers in pongs).
    ready: bool,
    addr: String,
    peers: Vec<(String, String)>,
    barriers: HashSet<u64>,
    barrier_order: VecDeque<u64>,
    barrier_waiters: HashMap<u64, (String, u64, u64, RpcReplyPort<bool>)>,
    /// Sends forwarded to another node, not yet answered:
    /// room -> (session, client_id) -> owner it went to.
    in_flight: HashMap<String, HashMap<(u64, String), String>>,
    inspector: Option<Inspector>,
}

impl Actor for Router {
    type Msg = RouterMsg;
    type State = RouterState;
    type Arguments = RouterArgs;

    async fn pre_start(
        &self,
        myself: ActorRef<RouterMsg>,
        args: RouterArgs,
    ) -> Result<RouterState, ActorProcessingErr> {
        ractor::pg::join(router_group(&args.me), vec![myself.get_cell()]);
        Ok(RouterState {
            membership: Membership::alone(&args.me),
            me: args.me,
            rooms: None,
            sessions: HashMap::new(),
            slots: HashMap::new(),
            links: HashMap::new(),
            wires: HashMap::new(),
            tracks: HashMap::new(),
            mesh: None,
            ready: false,
            addr: String::new(),
            peers: Vec::new(),
            barriers: HashSet::new(),
            barrier_order: VecDeque::new(),
            barrier_waiters: HashMap::new(),
            in_flight: HashMap::new(),
            inspector: None,
        })
    }

    async fn handle(
        &self,
        myself: ActorRef<RouterMsg>,
        msg: RouterMsg,
        state: &mut RouterState,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            RouterMsg::Cast(bytes) => match wire::decode_cast(bytes) {
                Ok(Incoming::Deliver(d)) => state.deliver(d),
                Ok(Incoming::Cast(cast)) => state.incoming(&myself, cast),
                Err(e) => tracing::warn!(error = %e, "unreadable message from a peer dropped"),
            },
            RouterMsg::Call(bytes, reply) => match wire::decode_json::<WireCall>(&bytes) {
                Ok(call) => state.call(&myself, call, reply),
                Err(e) => {
                    let _ = reply.send(wire::encode_json(&WireReply::Failed(e)));
                }
            },
            RouterMsg::Register {
                handle,
                resume_token,
            } => {
                state.sessions.insert(handle.id, (handle, resume_token));
            }
            RouterMsg::Unregister { session } => {
                state.sessions.remove(&session);
                for sends in state.in_flight.values_mut() {
                    sends.retain(|(s, _), _| *s != session);
                }
                state.in_flight.retain(|_, s| !s.is_empty());
                for tracks in state.tracks.values_mut() {
                    tracks.remove(&session);
                }
                state.tracks.retain(|_, t| !t.is_empty());
            }
            RouterMsg::Track {
                room,
                session,
                gen,
                owner,
            } => {
                let t = state
                    .tracks
                    .entry(room)
                    .or_default()
                    .entry(session)
                    .or_insert(Track {
                        gen: None,
                        owner: None,
                        delivered: None,
                    });
                t.gen = Some(gen);
                t.owner = Some(owner);
            }
            RouterMsg::Untrack { room, session, gen } => {
                if let Some(tracks) = state.tracks.get_mut(&room) {
                    if tracks.get(&session).is_some_and(|t| t.gen == Some(gen)) {
                        tracks.remove(&session);
                    }
                }
            }
            RouterMsg::Delivered {
                room,
                session,
                reply,
            } => {
                let delivered = state
                    .tracks
                    .get(&room)
                    .and_then(|tracks| tracks.get(&session))
                    .and_then(|t| t.delivered);
                let _ = reply.send(delivered);
            }
            RouterMsg::Position {
                room,
                session,
                gen,
                seq,
            } => {
                if let Some(t) = state
                    .tracks
                    .get_mut(&room)
                    .and_then(|tracks| tracks.get_mut(&session))
                {
                    if t.gen == Some(gen) {
                        t.delivered = Some(t.delivered.map_or(seq, |d| d.max(seq)));
                    }
                }
            }
            RouterMsg::Membership(m) => state.membership_changed(m),
            RouterMsg::Rooms(rooms) => state.rooms = Some(rooms),
            RouterMsg::Inspector(inspector) => state.inspector = Some(*inspector),
            RouterMsg::Inspect { reply } => {
                let mut links: Vec<&String> = state.links.keys().collect();
                links.sort();
                let _ = reply.send(serde_json::json!({
                    "sessions": state.sessions.len(),
                    "links": links,
                    "followed_rooms": state.tracks.len(),
                    "followers": state.tracks.values().map(HashMap::len).sum::<usize>(),
                    "sends_in_flight": state.in_flight.values().map(HashMap::len).sum::<usize>(),
                    "starting_rooms": state.slots.values().filter(|s| matches!(s, Slot::Starting(_))).count(),
                }));
            }
            RouterMsg::Book {
                mesh,
                ready,
                addr,
                peers,
                wires,
            } => {
                state.mesh = Some(mesh);
                state.ready = ready;
                state.addr = addr;
                state.peers = peers;
                state.wires = wires.into_iter().collect();
                // A link opened before its peer's version was known, or to a
                // peer since upgraded, switches to the form it reads.
                for (node, (link, told)) in &mut state.links {
                    if let Some(&v) = state.wires.get(node) {
                        if v != *told {
                            link.speak(v);
                            *told = v;
                        }
                    }
                }
            }
            RouterMsg::RoomStarted { room, result } => {
                let queued = match state.slots.remove(&room) {
                    Some(Slot::Starting(queued)) => queued,
                    Some(ready) => {
                        state.slots.insert(room, ready);
                        return Ok(());
                    }
                    None => Vec::new(),
                };
                match result {
                    Ok(actor) => {
                        for msg in queued {
                            if let Err(MessagingErr::SendErr(msg)) = actor.cast(msg) {
                                refuse(msg, &ChatError::unavailable("the room stopped, retry"));
                            }
                        }
                        state.slots.insert(room, Slot::Ready(actor));
                    }
                    Err(e) => {
                        for msg in queued {
                            refuse(msg, &e);
                        }
                    }
                }
            }
            RouterMsg::AttachUser {
                room,
                user,
                joined,
                last_seq,
            } => state.broadcast(&WireCast::AttachUser {
                room,
                user,
                joined,
                last_seq,
            }),
            RouterMsg::TakeOver { resume_token, keep } => {
                state.take_over(&resume_token, keep);
                state.broadcast(&WireCast::TakeOver { resume_token, keep });
            }
            RouterMsg::Leaving => {
                let node = state.me.clone();
                state.broadcast(&WireCast::Leaving {
                    node,
                    incarnation: super::incarnation(),
                });
            }
            RouterMsg::InFlight {
                room,
                session,
                client_id,
                owner,
            } => {
                state
                    .in_flight
                    .entry(room)
                    .or_default()
                    .insert((session, client_id), owner);
            }
            RouterMsg::AwaitBarrier {
                id,
                room,
                session,
                gen,
                reply,
            } => {
                if state.barriers.remove(&id) {
                    let _ = reply.send(state.current(&room, session, gen));
                } else {
                    state
                        .barrier_waiters
                        .insert(id, (room, session, gen, reply));
                }
            }
            RouterMsg::RoomRestarted { room } => {
                let from = state.me.clone();
                state.broadcast(&WireCast::RoomRestarted { room, from });
            }
            RouterMsg::ToUsers { users, frame } => {
                state.push_to_users(&users, &frame);
                state.broadcast(&WireCast::ToUsers { users, frame });
            }
        }
        Ok(())
    }
}

impl RouterState {
    fn follow(&self, moved: Vec<(String, u64, Option<u64>)>) {
        for (room, session, after) in moved {
            if let Some((handle, _)) = self.sessions.get(&session) {
                let _ = handle.actor.cast(SessionMsg::Moved { room, after });
            }
        }
    }

    /// The room restarted on its owner: its old subscriptions are gone, and
    /// so are the sends that sat in the crashed actor's mailbox.
    fn room_restarted(&mut self, room: &str, from: &str) {
        let mut unanswered = Vec::new();
        if let Some(sends) = self.in_flight.get_mut(room) {
            sends.retain(|key, owner| {
                if owner == from {
                    unanswered.push(key.clone());
                    return false;
                }
                true
            });
        }
        for (session, client_id) in unanswered {
            if let Some((handle, _)) = self.sessions.get(&session) {
                let e = ChatError::unavailable(format!(
                    "room {room} restarted before this was answered; resend (same client_id)"
                ));
                handle
                    .outbox
                    .push_frame(&ServerFrame::error(&e, Some(client_id)));
            }
        }
        let mut moved = Vec::new();
        if let Some(tracks) = self.tracks.get_mut(room) {
            for (session, t) in tracks.iter_mut() {
                if t.gen.is_some() && t.owner.as_deref() == Some(from) {
                    t.gen = None;
                    t.owner = None;
                    moved.push((room.to_string(), *session, t.delivered));
                }
            }
        }
        self.follow(moved);
    }

    /// The link to `node`, opened if needed.
    fn link(&mut self, node: &str) -> Option<Link> {
        if let Some((link, _)) = self.links.get(node) {
            if !link.is_closed() {
                return Some(link.clone());
            }
        }
        let router = peer_router(node)?;
        // Not known yet (no pong so far): the previous version's form, which
        // both read; the next book tells the link better.
        let wire = self
            .wires
            .get(node)
            .copied()
            .unwrap_or_else(|| wire::wire_version().saturating_sub(1));
        let link = Link::open(self.me.clone(), node.to_string(), router, wire);
        self.links.insert(node.to_string(), (link.clone(), wire));
        Some(link)
    }

    /// Casts to every live peer.
    /// Pushes an encoded frame to this node's sessions of `users`.
    fn push_to_users(&self, users: &[String], frame: &str) {
        let frame = Utf8Bytes::from(frame);
        for (handle, _) in self.sessions.values() {
            if users.contains(&handle.user) {
                handle.outbox.push(frame.clone());
            }
        }
    }

    fn broadcast(&self, cast: &WireCast) {
        let bytes = wire::encode_cast(cast);
        for node in &self.membership.live {
            if *node != self.me {
                if let Some(router) = peer_router(node) {
                    let _ = router.cast(RouterMsg::Cast(bytes.clone()));
                }
            }
        }
    }

    fn incoming(&mut self, myself: &ActorRef<RouterMsg>, cast: WireCast) {
        match cast {
            WireCast::Room { room, from, req } => self.room_cast(myself, room, &from, req),
            WireCast::Event {
                room,
                session,
                gen,
                event,
                ..
            } => self.event(room, session, gen, event),
            WireCast::Events {
                room,
                targets,
                event,
                ..
            } => {
                for (session, gen) in targets {
                    self.event(room.clone(), session, gen, event.clone());
                }
            }
            WireCast::AttachUser {
                room,
                user,
                joined,
                last_seq,
            } => {
                let joined = Utf8Bytes::from(joined);
                for (handle, _) in self.sessions.values() {
                    if handle.user == user {
                        if !joined.is_empty() {
                            handle.outbox.push(joined.clone());
                        }
                        let _ = handle.actor.cast(SessionMsg::Attach {
                            room: room.clone(),
                            after: last_seq,
                        });
                    }
                }
            }
            WireCast::TakeOver { resume_token, keep } => self.take_over(&resume_token, keep),
            WireCast::RoomRestarted { room, from } => self.room_restarted(&room, &from),
            WireCast::ToUsers { users, frame } => self.push_to_users(&users, &frame),
            WireCast::Leaving { node, incarnation } => {
                tracing::info!(peer = %node, "peer is leaving the cluster");
                if let Some(mesh) = &self.mesh {
                    let _ = mesh.cast(MeshMsg::PeerLeaving { node, incarnation });
                }
            }
        }
    }

    fn take_over(&self, resume_token: &str, keep: u64) {
        for (handle, token) in self.sessions.values() {
            if token == resume_token && handle.id != keep {
                tracing::info!(user = %handle.user, "session resumed elsewhere; closing this connection");
                handle
                    .outbox
                    .close(4009, "session resumed on another connection");
            }
        }
    }

    fn room_cast(&mut self, myself: &ActorRef<RouterMsg>, room: String, from: &str, req: RoomCast) {
        let Some(link) = self.link(from) else {
            tracing::warn!(peer = %from, room = %room, "request from a node this one cannot reach; dropped");
            return;
        };
        let room_name: Arc<str> = room.as_str().into();
        let target = |session: u64, gen: u64| RemoteSession {
            link: link.clone(),
            room: room_name.clone(),
            session,
            gen,
        };
        let msg = match req {
            RoomCast::Subscribe {
                session,
                user,
                gen,
                pending,
            } => {
                // One allocation shared by the handle's outbox and actor.
                let remote = Arc::new(target(session, gen));
                RoomMsg::Subscribe {
                    session: SessionHandle {
                        id: session,
                        user,
                        outbox: Outbox::remote(remote.clone()),
                        actor: SessionActor::Remote(remote),
                    },
                    pending,
                }
            }
            RoomCast::Unsubscribe { session } => RoomMsg::Unsubscribe {
                session_id: session,
            },
            RoomCast::Send {
                session,
                gen,
                user,
                client_id,
                body,
            } => RoomMsg::Send(SendRequest {
                user,
                client_id,
                body,
                reply_to: None,
                attachments: Vec::new(),
                event: None,
                session_id: session,
                outbox: Outbox::remote(target(session, gen)),
            }),
            RoomCast::Post {
                session,
                gen,
                user,
                client_id,
                body,
                reply_to,
                attachments,
                event,
            } => RoomMsg::Send(SendRequest {
                user,
                client_id,
                body,
                reply_to,
                attachments,
                event,
                session_id: session,
                outbox: Outbox::remote(target(session, gen)),
            }),
            RoomCast::Typing {
                session,
                gen,
                user,
                active,
            } => RoomMsg::Typing {
                user,
                active,
                session_id: session,
                outbox: Outbox::remote(target(session, gen)),
            },
            RoomCast::Read {
                session,
                gen,
                user,
                seq,
            } => RoomMsg::Read {
                user,
                seq,
                session_id: session,
                outbox: Outbox::remote(target(session, gen)),
            },
            RoomCast::PresenceChanged {
                user,
                online,
                last_seen,
            } => RoomMsg::PresenceChanged {
                user,
                online,
                last_seen,
            },
        };
        self.send_to_room(myself, room, msg);
    }

    /// Hands `msg` to the local room, starting it if needed; messages that
    /// arrive while it starts wait in order.
    fn send_to_room(&mut self, myself: &ActorRef<RouterMsg>, room: String, msg: RoomMsg) {
        let msg = match self.slots.get_mut(&room) {
            Some(Slot::Starting(queued)) => {
                queued.push(msg);
                return;
            }
            Some(Slot::Ready(actor)) => match actor.cast(msg) {
                Ok(()) => return,
                Err(MessagingErr::SendErr(msg)) => msg,
                Err(_) => return,
            },
            None => msg,
        };
        let Some(rooms) = self.rooms.clone() else {
            refuse(msg, &ChatError::unavailable("the node is starting, retry"));
            return;
        };
        self.slots.insert(room.clone(), Slot::Starting(vec![msg]));
        let myself = myself.clone();
        tokio::spawn(async move {
            let name = room.clone();
            let result = crate::ask(&rooms, |reply| RoomSupervisorMsg::GetOwned {
                name,
                create: None,
                reply,
            })
            .await
            .and_then(|r| r);
            let _ = myself.cast(RouterMsg::RoomStarted { room, result });
        });
    }

    fn call(&mut self, myself: &ActorRef<RouterMsg>, call: WireCall, reply: RpcReplyPort<Vec<u8>>) {
        let (room, req) = match call {
            WireCall::Inspect { query } => {
                let Some(inspector) = self.inspector.clone() else {
                    let e = ChatError::unavailable("the node is starting, retry");
                    let _ = reply.send(wire::encode_json(&WireReply::Failed(e)));
                    return;
                };
                // Off the router: the snapshot waits on every actor of the node.
                tokio::spawn(async move {
                    let snapshot = inspector.snapshot(&query).await;
                    let _ =
                        reply.send(wire::encode_json(&WireReply::Inspected(Box::new(snapshot))));
                });
                return;
            }
            WireCall::Ping { .. } => {
                let pong = WireReply::Pong {
                    node: self.me.clone(),
                    incarnation: super::incarnation(),
                    ready: self.ready,
                    addr: self.addr.clone(),
                    peers: self.peers.clone(),
                    wire: wire::wire_version(),
                };
                let _ = reply.send(wire::encode_json(&pong));
                return;
            }
            WireCall::Room { room, req, from } => {
                if let RoomCall::Activate {
                    session,
                    after,
                    barrier,
                    hold,
                } = req
                {
                    self.activate(myself, room, &from, session, after, barrier, hold, reply);
                    return;
                }
                (room, req)
            }
        };
        match req {
            RoomCall::Open { create } => {
                let Some(rooms) = self.rooms.clone() else {
                    let e = ChatError::unavailable("the node is starting, retry");
                    let _ = reply.send(wire::encode_json(&WireReply::Failed(e)));
                    return;
                };
                tokio::spawn(async move {
                    let result = crate::ask(&rooms, |r| RoomSupervisorMsg::GetOwned {
                        name: room,
                        create,
                        reply: r,
                    })
                    .await
                    .and_then(|r| r)
                    .map(|_| ());
                    let _ = reply.send(wire::encode_json(&WireReply::Done(result)));
                });
            }
            RoomCall::Activate { .. } => {}
            RoomCall::Join { user } => self.ask_room(
                myself,
                room,
                |r| RoomMsg::Join {
                    user,
                    session: None,
                    reply: r,
                },
                WireReply::Done,
                reply,
            ),
            RoomCall::Leave { user } => self.ask_room(
                myself,
                room,
                |r| RoomMsg::Leave { user, reply: r },
                WireReply::Done,
                reply,
            ),
            RoomCall::Invite { by, user } => self.ask_room(
                myself,
                room,
                |r| RoomMsg::Invite { by, user, reply: r },
                WireReply::Done,
                reply,
            ),
            RoomCall::History { user, query, limit } => self.ask_room(
                myself,
                room,
                |r| RoomMsg::History {
                    user,
                    query,
                    limit,
                    reply: r,
                },
                WireReply::History,
                reply,
            ),
            RoomCall::Members { user } => self.ask_room(
                myself,
                room,
                |r| RoomMsg::Members { user, reply: r },
                WireReply::Members,
                reply,
            ),
            RoomCall::Info { user } => self.ask_room(
                myself,
                room,
                |r| RoomMsg::Info { user, reply: r },
                WireReply::Info,
                reply,
            ),
            RoomCall::Post { request } => self.ask_room(
                myself,
                room,
                |r| RoomMsg::Post { request, reply: r },
                WireReply::Posted,
                reply,
            ),
            RoomCall::Query { user, query } => self.ask_room(
                myself,
                room,
                |r| RoomMsg::Query {
                    user,
                    query,
                    reply: r,
                },
                WireReply::Queried,
                reply,
            ),
            RoomCall::Manage { user, action } => self.ask_room(
                myself,
                room,
                |r| RoomMsg::Manage {
                    user,
                    action,
                    reply: r,
                },
                WireReply::Managed,
                reply,
            ),
        }
    }

    /// Activates a remote session's subscription; once the room answered,
    /// a barrier goes down the same link as the replayed frames.
    #[allow(clippy::too_many_arguments)]
    fn activate(
        &mut self,
        myself: &ActorRef<RouterMsg>,
        room: String,
        from: &str,
        session: u64,
        after: Option<u64>,
        barrier: u64,
        hold: bool,
        reply: RpcReplyPort<Vec<u8>>,
    ) {
        let link = self.link(from);
        let room_name: Arc<str> = room.as_str().into();
        let (tx, rx) = ractor::concurrency::oneshot();
        self.send_to_room(
            myself,
            room,
            RoomMsg::Activate {
                session_id: session,
                after,
                hold,
                reply: tx.into(),
            },
        );
        tokio::spawn(async move {
            let answer = match tokio::time::timeout(REMOTE_TIMEOUT, rx).await {
                Ok(Ok(seq)) => {
                    if let Some(link) = link {
                        link.send(LinkItem::Event {
                            room: room_name,
                            session,
                            gen: 0,
                            event: SessionEvent::Barrier { id: barrier },
                        });
                    }
                    WireReply::Activated(seq)
                }
                Ok(Err(_)) => WireReply::Failed(ChatError::unavailable(
                    "the room is moving or restarting, retry",
                )),
                Err(_) => WireReply::Failed(ChatError::unavailable("the room is busy, retry")),
            };
            let _ = reply.send(wire::encode_json(&answer));
        });
    }

    /// Is `gen` the current subscription of `session` to `room`?
    fn current(&self, room: &str, session: u64, gen: u64) -> bool {
        self.tracks
            .get(room)
            .and_then(|t| t.get(&session))
            .is_some_and(|t| t.gen == Some(gen))
    }

    fn barrier_seen(&mut self, id: u64) {
        match self.barrier_waiters.remove(&id) {
            Some((room, session, gen, waiter)) => {
                let _ = waiter.send(self.current(&room, session, gen));
            }
            None => {
                self.barriers.insert(id);
                self.barrier_order.push_back(id);
                // A waiter that gave up leaves its barrier behind: keep a bounded few.
                while self.barrier_order.len() > 10_000 {
                    if let Some(old) = self.barrier_order.pop_front() {
                        self.barriers.remove(&old);
                    }
                }
            }
        }
    }

    /// Puts a request with a local reply port in the room's queue and
    /// answers the peer when the room answers (or fails to).
    fn ask_room<T: Send + 'static>(
        &mut self,
        myself: &ActorRef<RouterMsg>,
        room: String,
        build: impl FnOnce(RpcReplyPort<T>) -> RoomMsg,
        map: fn(T) -> WireReply,
        reply: RpcReplyPort<Vec<u8>>,
    ) {
        let (tx, rx) = ractor::concurrency::oneshot();
        self.send_to_room(myself, room, build(tx.into()));
        tokio::spawn(async move {
            let answer = match tokio::time::timeout(REMOTE_TIMEOUT, rx).await {
                Ok(Ok(value)) => map(value),
                Ok(Err(_)) => WireReply::Failed(ChatError::unavailable(
                    "the room is moving or restarting, retry",
                )),
                Err(_) => WireReply::Failed(ChatError::unavailable("the room is busy, retry")),
            };
            let _ = reply.send(wire::encode_json(&answer));
        });
    }

    fn deliver(&mut self, d: Deliver) {
        let position = d.last_seq;
        if !d.answered.is_empty() {
            if let Some(sends) = self.in_flight.get_mut(&d.room) {
                for (session, _) in &d.targets {
                    for id in &d.answered {
                        sends.remove(&(*session, id.clone()));
                    }
                }
            }
        }
        let frames: Arc<[Utf8Bytes]> = d.frames.into();
        let mut tracks = self.tracks.get_mut(&d.room);
        for (session, gen) in d.targets {
            if gen != 0 {
                // A frame of an older subscription: the session re-subscribed
                // and gets it again, in order, from the new one.
                let Some(t) = tracks.as_mut().and_then(|t| t.get_mut(&session)) else {
                    continue;
                };
                if t.gen != Some(gen) {
                    continue;
                }
                if let Some(p) = position {
                    t.delivered = Some(t.delivered.map_or(p, |d| d.max(p)));
                }
            }
            let Some((handle, _)) = self.sessions.get(&session) else {
                continue;
            };
            match &*frames {
                [] => false,
                [frame] => handle.outbox.push(frame.clone()),
                _ => handle.outbox.push_batch(frames.clone(), Marks::default()),
            };
        }
    }

    fn event(&mut self, room: String, session: u64, gen: u64, event: SessionEvent) {
        if let SessionEvent::Barrier { id } = event {
            self.barrier_seen(id);
            return;
        }
        if gen != 0 {
            let current = self
                .tracks
                .get(&room)
                .and_then(|t| t.get(&session))
                .is_some_and(|t| t.gen == Some(gen));
            if !current {
                return;
            }
        }
        let Some((handle, _)) = self.sessions.get(&session) else {
            return;
        };
        let msg = match event {
            // Moves of rooms owned elsewhere are this router's to announce
            // (from membership, with the seq it delivered); nothing to do.
            SessionEvent::Moved { .. } | SessionEvent::Barrier { .. } => return,
            SessionEvent::Detached => {
                if let Some(t) = self.tracks.get_mut(&room) {
                    t.remove(&session);
                }
                SessionMsg::Detached { room }
            }
            SessionEvent::Presence {
                user,
                online,
                last_seen,
            } => SessionMsg::Presence {
                user,
                online,
                last_seen,
            },
        };
        let _ = handle.actor.cast(msg);
    }

    /// Sessions following a room whose owner changed (a node joined, left
    /// or died) re-subscribe with the new owner from the last seq delivered.
    /// Frames the old owner still sends for the old subscription are dropped
    /// here: the new owner replays them, in order.
    fn membership_changed(&mut self, m: Membership) {
        let mut moved = Vec::new();
        for (room, tracks) in &mut self.tracks {
            let owner = m.owner(room);
            for (session, t) in tracks.iter_mut() {
                if t.gen.is_some() && t.owner.as_deref() != owner {
                    t.gen = None;
                    t.owner = None;
                    moved.push((room.clone(), *session, t.delivered));
                }
            }
        }
        self.follow(moved);
        // Sends whose room changed owner before they were answered: their
        // answer (if any) is lost with the old subscription; resend.
        for (room, sends) in &mut self.in_flight {
            let owner = m.owner(room);
            sends.retain(|(session, client_id), sent_to| {
                if owner == Some(sent_to.as_str()) {
                    return true;
                }
                if let Some((handle, _)) = self.sessions.get(session) {
                    let e = ChatError::unavailable(format!(
                        "room {room} moved to another node before this was answered; resend (same client_id)"
                    ));
                    handle
                        .outbox
                        .push_frame(&ServerFrame::error(&e, Some(client_id.clone())));
                }
                false
            });
        }
        self.in_flight.retain(|_, s| !s.is_empty());
        self.links.retain(|node, _| m.live.contains(node));
        // Rooms that moved away must be looked up again; what waited for one
        // of them to start is refused (the senders look again).
        let gone: Vec<String> = self
            .slots
            .keys()
            .filter(|room| m.owner(room) != Some(&*m.me))
            .cloned()
            .collect();
        for room in gone {
            if let Some(Slot::Starting(queued)) = self.slots.remove(&room) {
                let e = ChatError::unavailable(format!("room {room} moved to another node; retry"));
                for msg in queued {
                    refuse(msg, &e);
                }
            }
        }
        self.membership = m;
    }
}

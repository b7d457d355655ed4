//! The RoomSupervisor starts rooms on first use, finds them by name, and
//! restarts a room that crashed (it restores from its checkpoint and the log).
//! In a cluster it asks placement first: a room owned here is a local Room;
//! a room owned by another node is a RoomProxy to that node. When the
//! membership changes, rooms that now belong elsewhere are handed off and
//! proxies to a former owner are stopped.

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

use ractor::{
    Actor, ActorId, ActorProcessingErr, ActorRef, RpcReplyPort, SpawnErr, SupervisionEvent,
};

use super::{CreateSpec, Room, RoomArgs, RoomContext, RoomMsg};
use crate::cluster::proxy::{self, ProxyArgs, RoomProxy};
use crate::cluster::router::peer_router;
use crate::cluster::Membership;
use crate::frames::ChatError;

/// More restarts than this within [`RESTART_WINDOW`] and the room is left
/// stopped until its next use.
const MAX_RESTARTS: usize = 5;
const RESTART_WINDOW: Duration = Duration::from_secs(10);

pub enum RoomSupervisorMsg {
    /// The room's actor, started (and created, with `create`) if needed.
    Get {
        name: String,
        create: Option<CreateSpec>,
        reply: RpcReplyPort<Result<ActorRef<RoomMsg>, ChatError>>,
    },
    /// The room's actor only if this node owns it (requests from other nodes).
    GetOwned {
        name: String,
        create: Option<CreateSpec>,
        reply: RpcReplyPort<Result<ActorRef<RoomMsg>, ChatError>>,
    },
    /// The cluster's live members changed.
    Membership(Membership),
    /// Stops every room (each writes history and its checkpoint).
    Shutdown { reply: RpcReplyPort<()> },
    /// The room `id` was deleted and is stopping: later requests for its
    /// name must not reach it (sent by the room before it answers).
    Forget { name: String, id: ActorId },
    /// How many rooms run.
    Count { reply: RpcReplyPort<usize> },
    /// The rooms and proxies it supervises (the admin endpoints).
    Children {
        reply: RpcReplyPort<crate::inspect::RoomChildren>,
    },
}

pub struct RoomSupervisor;

pub struct RoomSupervisorState {
    ctx: RoomContext,
    rooms: HashMap<String, ActorRef<RoomMsg>>,
    names: HashMap<ActorId, String>,
    restarts: HashMap<String, VecDeque<Instant>>,
    /// Restarts per room since this node started.
    restarted: HashMap<String, u64>,
    /// Rooms that crashed too often and were left stopped.
    given_up: Vec<String>,
    stopping: bool,
    membership: Membership,
    /// Rooms owned elsewhere: (owner, proxy).
    proxies: HashMap<String, (String, ActorRef<RoomMsg>)>,
    proxy_names: HashMap<ActorId, String>,
}

impl RoomSupervisorState {
    /// Drops the entry of `name` if it is still that actor (a handed-off
    /// room's name may already belong to a newer actor).
    fn forget(&mut self, name: &str, id: &ActorId) {
        if self.rooms.get(name).is_some_and(|r| r.get_id() == *id) {
            self.rooms.remove(name);
        }
        // Called whenever a room actor is gone from `names`.
        crate::metrics::ROOMS_OWNED.set(self.names.len() as i64);
    }

    /// A local room, if this node owns `name` and may serve it.
    async fn owned(
        &mut self,
        myself: &ActorRef<RoomSupervisorMsg>,
        name: &str,
        create: Option<CreateSpec>,
    ) -> Result<ActorRef<RoomMsg>, ChatError> {
        if !self.membership.owns(name) {
            let owner = self.membership.owner(name).unwrap_or("no node");
            return Err(ChatError::unavailable(format!(
                "room {name} is served by {owner} now; retry"
            )));
        }
        if let Some(room) = self.rooms.get(name) {
            return Ok(room.clone());
        }
        if self.membership.clustered && !self.membership.quorum {
            // A node cut off from most of the cluster takes no room over:
            // the majority side may be serving it.
            let why = if self.membership.majority {
                "the cluster's membership is changing; retry in a moment"
            } else {
                "this node cannot reach a majority of the cluster; retry on another node"
            };
            return Err(ChatError::unavailable(why));
        }
        self.start(myself, name, create, false).await
    }

    /// The proxy to the owner of `name` (another node).
    async fn proxy(
        &mut self,
        myself: &ActorRef<RoomSupervisorMsg>,
        name: &str,
        owner: &str,
    ) -> Result<ActorRef<RoomMsg>, ChatError> {
        if let Some((known, proxy)) = self.proxies.get(name) {
            if known == owner && proxy.get_status() != ractor::ActorStatus::Stopped {
                return Ok(proxy.clone());
            }
        }
        let (Some(owner_router), Some(local_router)) =
            (peer_router(owner), self.ctx.router.clone())
        else {
            return Err(ChatError::unavailable(format!(
                "node {owner} (serving room {name}) is unreachable; retry"
            )));
        };
        let args = ProxyArgs {
            room: name.to_string(),
            me: self.ctx.node.clone(),
            owner: owner.to_string(),
            owner_router,
            local_router,
        };
        // Spawning a proxy does no I/O: its pre_start only builds state.
        let (proxy, _) = Actor::spawn_linked(None, RoomProxy, args, myself.get_cell())
            .await
            .map_err(|e| ChatError::unavailable(format!("proxy for {name} failed: {e}")))?;
        self.proxy_names.insert(proxy.get_id(), name.to_string());
        self.proxies
            .insert(name.to_string(), (owner.to_string(), proxy.clone()));
        Ok(proxy)
    }

    async fn start(
        &mut self,
        myself: &ActorRef<RoomSupervisorMsg>,
        name: &str,
        create: Option<CreateSpec>,
        restarted: bool,
    ) -> Result<ActorRef<RoomMsg>, ChatError> {
        let args = RoomArgs {
            name: name.to_string(),
            ctx: self.ctx.clone(),
            create,
            restarted,
        };
        match Actor::spawn_linked(None, Room, args, myself.get_cell()).await {
            Ok((room, _)) => {
                self.names.insert(room.get_id(), name.to_string());
                crate::metrics::ROOMS_OWNED.set(self.names.len() as i64);
                self.rooms.insert(name.to_string(), room.clone());
                Ok(room)
            }
            Err(SpawnErr::StartupFailed(e)) => match e.downcast_ref::<ChatError>() {
                Some(chat) => Err(chat.clone()),
                None => Err(ChatError::unavailable(format!(
                    "room {name} failed to start: {e}"
                ))),
            },
            Err(e) => Err(ChatError::unavailable(format!(
                "room {name} failed to start: {e}"
            ))),
        }
    }
}

impl Actor for RoomSupervisor {
    type Msg = RoomSupervisorMsg;
    type State = RoomSupervisorState;
    type Arguments = RoomContext;

    async fn pre_start(
        &self,
        _myself: ActorRef<RoomSupervisorMsg>,
        ctx: RoomContext,
    ) -> Result<RoomSupervisorState, ActorProcessingErr> {
        Ok(RoomSupervisorState {
            membership: Membership::alone(&ctx.node),
            proxies: HashMap::new(),
            proxy_names: HashMap::new(),
            ctx,
            rooms: HashMap::new(),
            names: HashMap::new(),
            restarts: HashMap::new(),
            restarted: HashMap::new(),
            given_up: Vec::new(),
            stopping: false,
        })
    }

    async fn handle(
        &self,
        myself: ActorRef<RoomSupervisorMsg>,
        msg: RoomSupervisorMsg,
        state: &mut RoomSupervisorState,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            RoomSupervisorMsg::Get {
                name,
                create,
                reply,
            } => {
                if state.stopping {
                    let _ = reply.send(Err(ChatError::unavailable("the node is shutting down")));
                    return Ok(());
                }
                let owner = state.membership.owner(&name).map(str::to_string);
                match owner {
                    None => {
                        let _ = reply.send(Err(ChatError::unavailable(
                            "this node is leaving the cluster; reconnect to another",
                        )));
                    }
                    Some(owner) if *owner == *state.membership.me => {
                        let _ = reply.send(state.owned(&myself, &name, create).await);
                    }
                    Some(owner) => match state.proxy(&myself, &name, &owner).await {
                        Ok(proxy) => match create {
                            // Creating is the owner's job; wait for it off this actor.
                            Some(create) => {
                                let me = state.ctx.node.clone();
                                let router = peer_router(&owner);
                                tokio::spawn(async move {
                                    let answer = match router {
                                        Some(router) => {
                                            proxy::open(&router, &me, &name, Some(create))
                                                .await
                                                .map(|()| proxy)
                                        }
                                        None => Err(ChatError::unavailable(
                                            "the room's node is unreachable, retry",
                                        )),
                                    };
                                    let _ = reply.send(answer);
                                });
                            }
                            None => {
                                let _ = reply.send(Ok(proxy));
                            }
                        },
                        Err(e) => {
                            let _ = reply.send(Err(e));
                        }
                    },
                }
            }
            RoomSupervisorMsg::GetOwned {
                name,
                create,
                reply,
            } => {
                let answer = if state.stopping {
                    Err(ChatError::unavailable("the node is shutting down"))
                } else {
                    state.owned(&myself, &name, create).await
                };
                let _ = reply.send(answer);
            }
            RoomSupervisorMsg::Membership(m) => {
                let moving: Vec<String> = state
                    .rooms
                    .keys()
                    .filter(|name| !m.owns(name))
                    .cloned()
                    .collect();
                for name in moving {
                    if let Some(room) = state.rooms.remove(&name) {
                        tracing::info!(room = %name, node = %state.ctx.node, to = ?m.owner(&name), "handing the room off");
                        let _ = room.cast(RoomMsg::Handoff);
                    }
                }
                state.proxies.retain(|name, (owner, proxy)| {
                    let keep = m.owner(name) == Some(owner.as_str());
                    if !keep {
                        // Queued requests still go out (or are refused); later
                        // ones fail to send, and the session looks again.
                        let _ = proxy.drain();
                    }
                    keep
                });
                state.membership = m;
            }
            RoomSupervisorMsg::Shutdown { reply } => {
                state.stopping = true;
                for (_, (_, proxy)) in state.proxies.drain() {
                    proxy.stop(None);
                }
                let rooms: Vec<ActorRef<RoomMsg>> = state.rooms.drain().map(|(_, r)| r).collect();
                for room in &rooms {
                    let _ = room.cast(RoomMsg::Shutdown);
                }
                for room in rooms {
                    // post_stop writes history and the checkpoint.
                    while room.get_status() != ractor::ActorStatus::Stopped {
                        tokio::time::sleep(Duration::from_millis(5)).await;
                    }
                }
                let _ = reply.send(());
            }
            RoomSupervisorMsg::Forget { name, id } => {
                if state.names.remove(&id).is_some() {
                    state.forget(&name, &id);
                }
            }
            RoomSupervisorMsg::Count { reply } => {
                let _ = reply.send(state.names.len());
            }
            RoomSupervisorMsg::Children { reply } => {
                let rooms = state
                    .rooms
                    .iter()
                    .map(|(name, room)| {
                        let restarts = state.restarted.get(name).copied().unwrap_or(0);
                        (name.clone(), room.clone(), restarts)
                    })
                    .collect();
                let proxies = state
                    .proxies
                    .iter()
                    .map(|(name, (owner, proxy))| (name.clone(), owner.clone(), proxy.clone()))
                    .collect();
                let _ = reply.send(crate::inspect::RoomChildren {
                    rooms,
                    proxies,
                    state: serde_json::json!({
                        "stopping": state.names.len().saturating_sub(state.rooms.len()),
                        "restarts": state.restarted.values().sum::<u64>(),
                        "given_up": state.given_up,
                        "live": state.membership.live,
                    }),
                });
            }
        }
        Ok(())
    }

    async fn handle_supervisor_evt(
        &self,
        myself: ActorRef<RoomSupervisorMsg>,
        event: SupervisionEvent,
        state: &mut RoomSupervisorState,
    ) -> Result<(), ActorProcessingErr> {
        match event {
            SupervisionEvent::ActorTerminated(cell, _, reason) => {
                if let Some(name) = state.names.remove(&cell.get_id()) {
                    tracing::debug!(room = %name, ?reason, "room stopped");
                    state.forget(&name, &cell.get_id());
                }
                if let Some(name) = state.proxy_names.remove(&cell.get_id()) {
                    if state
                        .proxies
                        .get(&name)
                        .is_some_and(|(_, p)| p.get_id() == cell.get_id())
                    {
                        state.proxies.remove(&name);
                    }
                }
            }
            SupervisionEvent::ActorFailed(cell, error) => {
                if let Some(name) = state.proxy_names.remove(&cell.get_id()) {
                    tracing::warn!(room = %name, %error, "room proxy failed");
                    state.proxies.remove(&name);
                    return Ok(());
                }
                let Some(name) = state.names.remove(&cell.get_id()) else {
                    return Ok(());
                };
                state.forget(&name, &cell.get_id());
                tracing::error!(room = %name, node = %state.ctx.node, %error, "room crashed");
                if state.stopping || !state.membership.owns(&name) {
                    return Ok(());
                }
                let history = state.restarts.entry(name.clone()).or_default();
                history.retain(|at| at.elapsed() < RESTART_WINDOW);
                if history.len() >= MAX_RESTARTS {
                    tracing::error!(room = %name, node = %state.ctx.node, "room keeps crashing; left stopped until its next use");
                    if !state.given_up.contains(&name) {
                        state.given_up.push(name.clone());
                    }
                    return Ok(());
                }
                history.push_back(Instant::now());
                crate::metrics::ROOM_RESTARTS.inc();
                *state.restarted.entry(name.clone()).or_default() += 1;
                state.given_up.retain(|n| n != &name);
                match state.start(&myself, &name, None, true).await {
                    Ok(_) => {
                        tracing::info!(room = %name, node = %state.ctx.node, restarts = state.restarted.get(&name).copied().unwrap_or(0), "room restarted from its checkpoint and log (its lease epoch is in \"room lease taken\")")
                    }
                    Err(e) => {
                        tracing::error!(room = %name, node = %state.ctx.node, error = %e, "room restart failed")
                    }
                }
            }
            _ => {}
        }
        Ok(())
    }
}

// Local-only: never sent to another node.
impl ractor::Message for RoomSupervisorMsg {}

//! The RoomSupervisor starts rooms on first use, finds them by name, and
//! restarts a room that crashed (it restores from its checkpoint and the log).
//! In a cluster it asks placement first: a room owned here is a local Room;
//! a room owned by another node is a RoomProxy to that node. When the
//! membership changes, rooms that now belong elsewhere are handed off and
//! proxies to a former owner are stopped.
//!
//! The supervisor never waits for a room to restore. A room's `pre_start`
//! reads the stores (lease, checkpoint, history, the log tail: 10-100 ms, far
//! more after a failover under load), so each start runs as a task that
//! reports back with [`RoomSupervisorMsg::Started`]; callers asking for that
//! room meanwhile wait in [`Starting`] (bounded), and every other room on the
//! node stays reachable. At most `rooms.restore_concurrency` restores run at
//! once, so a node taking over 1,000 rooms restores them in parallel without
//! opening 1,000 database reads at the same moment.

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

use std::sync::Arc;

use ractor::{
    Actor, ActorId, ActorProcessingErr, ActorRef, RpcReplyPort, SpawnErr, SupervisionEvent,
};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

use super::{CreateSpec, Room, RoomArgs, RoomContext, RoomMsg};
use crate::cluster::proxy::{self, ProxyArgs, RoomProxy};
use crate::cluster::router::peer_router;
use crate::cluster::Membership;
use crate::frames::ChatError;

/// More restarts than this within [`RESTART_WINDOW`] and the room is left
/// stopped until its next use.
const MAX_RESTARTS: usize = 5;
const RESTART_WINDOW: Duration = Duration::from_secs(10);
/// Callers waiting for one room to restore; beyond this they are answered
/// `unavailable` at once instead of queueing without bound.
const MAX_WAITING: usize = 4096;

type RoomReply = RpcReplyPort<Result<ActorRef<RoomMsg>, ChatError>>;

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
    /// A room's start (its restore) finished, in the task that ran it.
    Started {
        name: String,
        restarted: bool,
        result: Result<ActorRef<RoomMsg>, ChatError>,
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
    /// Rooms restoring now, and who waits for each.
    starting: HashMap<String, Starting>,
    /// Permits for restores running at once (`rooms.restore_concurrency`).
    restores: Arc<Semaphore>,
    /// Cancelled at shutdown: a room that finishes restoring then stops again.
    shutdown: CancellationToken,
}

/// A room being restored.
#[derive(Default)]
struct Starting {
    waiting: Vec<RoomReply>,
    /// A caller that asked to create the room came after the start began
    /// without `create`: if the room turns out not to exist, start again
    /// with this, for the callers that wanted it created.
    create_next: Option<(CreateSpec, Vec<RoomReply>)>,
}

impl Starting {
    /// Everyone waiting, those who asked to create the room included.
    fn callers(self) -> impl Iterator<Item = RoomReply> {
        self.waiting
            .into_iter()
            .chain(self.create_next.into_iter().flat_map(|(_, w)| w))
    }
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

    /// Answers `reply` with the local room, if this node owns `name` and may
    /// serve it: at once when it runs, when its restore finishes otherwise.
    fn owned(
        &mut self,
        myself: &ActorRef<RoomSupervisorMsg>,
        name: &str,
        create: Option<CreateSpec>,
        reply: RoomReply,
    ) {
        if !self.membership.owns(name) {
            let owner = self.membership.owner(name).unwrap_or("no node");
            let _ = reply.send(Err(ChatError::unavailable(format!(
                "room {name} is served by {owner} now; retry"
            ))));
            return;
        }
        if let Some(room) = self.rooms.get(name) {
            if room.get_status() != ractor::ActorStatus::Stopped {
                let _ = reply.send(Ok(room.clone()));
                return;
            }
            // Stopped before its supervision event arrived: start it anew.
            self.rooms.remove(name);
        }
        if let Some(starting) = self.starting.get_mut(name) {
            let waiting =
                starting.waiting.len() + starting.create_next.as_ref().map_or(0, |(_, w)| w.len());
            if waiting >= MAX_WAITING {
                let _ = reply.send(Err(ChatError::unavailable(format!(
                    "room {name} is restoring; retry"
                ))));
                return;
            }
            match create {
                Some(spec) => {
                    let (_, later) = starting
                        .create_next
                        .get_or_insert_with(|| (spec, Vec::new()));
                    later.push(reply);
                }
                None => starting.waiting.push(reply),
            }
            return;
        }
        if self.membership.clustered && !self.membership.quorum {
            // A node cut off from most of the cluster takes no room over:
            // the majority side may be serving it.
            let why = if self.membership.majority {
                "the cluster's membership is changing; retry in a moment"
            } else {
                "this node cannot reach a majority of the cluster; retry on another node"
            };
            let _ = reply.send(Err(ChatError::unavailable(why)));
            return;
        }
        self.start(myself, name, create, false, vec![reply]);
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

    /// Starts (restores) the room in a task of its own; the task reports
    /// back with `Started`, and `waiting` are answered then.
    fn start(
        &mut self,
        myself: &ActorRef<RoomSupervisorMsg>,
        name: &str,
        create: Option<CreateSpec>,
        restarted: bool,
        waiting: Vec<RoomReply>,
    ) {
        self.starting.insert(
            name.to_string(),
            Starting {
                waiting,
                create_next: None,
            },
        );
        crate::metrics::ROOMS_RESTORING.set(self.starting.len() as i64);
        let args = RoomArgs {
            name: name.to_string(),
            ctx: self.ctx.clone(),
            create,
            restarted,
        };
        let supervisor = myself.clone();
        let restores = self.restores.clone();
        let shutdown = self.shutdown.clone();
        let name = name.to_string();
        tokio::spawn(async move {
            let result = match restores.acquire_owned().await {
                Ok(_permit) => spawn_room(&supervisor, &name, args, &shutdown).await,
                Err(_) => Err(ChatError::unavailable("the node is shutting down")),
            };
            let _ = supervisor.cast(RoomSupervisorMsg::Started {
                name,
                restarted,
                result,
            });
        });
    }

    /// A start finished: register the room and answer who waited.
    fn started(
        &mut self,
        myself: &ActorRef<RoomSupervisorMsg>,
        name: String,
        restarted: bool,
        result: Result<ActorRef<RoomMsg>, ChatError>,
    ) {
        let starting = self.starting.remove(&name).unwrap_or_default();
        crate::metrics::ROOMS_RESTORING.set(self.starting.len() as i64);
        match result {
            Ok(room) => {
                // Tracked even when it must go again: its end is reported.
                self.names.insert(room.get_id(), name.clone());
                crate::metrics::ROOMS_OWNED.set(self.names.len() as i64);
                let answer = if self.stopping {
                    let _ = room.cast(RoomMsg::Shutdown);
                    Err(ChatError::unavailable("the node is shutting down"))
                } else if !self.membership.owns(&name) {
                    // The membership moved the room while it restored.
                    tracing::info!(room = %name, node = %self.ctx.node, to = ?self.membership.owner(&name), "handing the room off");
                    let _ = room.cast(RoomMsg::Handoff);
                    Err(ChatError::unavailable(format!(
                        "room {name} is served by {} now; retry",
                        self.membership.owner(&name).unwrap_or("no node")
                    )))
                } else {
                    self.rooms.insert(name.clone(), room.clone());
                    if restarted {
                        tracing::info!(room = %name, node = %self.ctx.node, restarts = self.restarted.get(&name).copied().unwrap_or(0), "room restarted from its checkpoint and log (its lease epoch is in \"room lease taken\")");
                    }
                    Ok(room)
                };
                for reply in starting.callers() {
                    let _ = reply.send(answer.clone());
                }
            }
            Err(e) => {
                let Starting {
                    waiting,
                    create_next,
                } = starting;
                if restarted {
                    tracing::error!(room = %name, node = %self.ctx.node, error = %e, "room restart failed");
                }
                for reply in waiting {
                    let _ = reply.send(Err(e.clone()));
                }
                match create_next {
                    // It did not exist; these callers asked to create it.
                    Some((spec, later)) if e.code == crate::frames::ErrorCode::NotFound => {
                        self.start(myself, &name, Some(spec), false, later);
                    }
                    Some((_, later)) => {
                        for reply in later {
                            let _ = reply.send(Err(e.clone()));
                        }
                    }
                    None => {}
                }
            }
        }
    }
}

/// Spawns the room (its `pre_start` restores it) linked to the supervisor.
async fn spawn_room(
    supervisor: &ActorRef<RoomSupervisorMsg>,
    name: &str,
    args: RoomArgs,
    shutdown: &CancellationToken,
) -> Result<ActorRef<RoomMsg>, ChatError> {
    if shutdown.is_cancelled() {
        return Err(ChatError::unavailable("the node is shutting down"));
    }
    match Actor::spawn_linked(None, Room, args, supervisor.get_cell()).await {
        Ok((room, _)) if shutdown.is_cancelled() => {
            // The node began shutting down during the restore: stop the room
            // here (it writes its checkpoint) so that shutdown waits for it.
            let _ = room.cast(RoomMsg::Shutdown);
            while room.get_status() != ractor::ActorStatus::Stopped {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            Err(ChatError::unavailable("the node is shutting down"))
        }
        Ok((room, _)) => Ok(room),
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
            starting: HashMap::new(),
            restores: Arc::new(Semaphore::new(ctx.tuning.restore_concurrency.max(1))),
            shutdown: CancellationToken::new(),
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
                        state.owned(&myself, &name, create, reply);
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
                if state.stopping {
                    let _ = reply.send(Err(ChatError::unavailable("the node is shutting down")));
                } else {
                    state.owned(&myself, &name, create, reply);
                }
            }
            RoomSupervisorMsg::Started {
                name,
                restarted,
                result,
            } => state.started(&myself, name, restarted, result),
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
                // Restores still running give up before spawning, or stop
                // their room when `Started` arrives; wait for them to end so
                // that no room is mid-restore when the node exits.
                state.shutdown.cancel();
                let all = state.ctx.tuning.restore_concurrency.max(1) as u32;
                let _ = tokio::time::timeout(
                    crate::CALL_TIMEOUT,
                    state.restores.clone().acquire_many_owned(all),
                )
                .await;
                for (_, starting) in state.starting.drain() {
                    for reply in starting.callers() {
                        let _ =
                            reply.send(Err(ChatError::unavailable("the node is shutting down")));
                    }
                }
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
                        "restoring": state.starting.len(),
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
                if !state.starting.contains_key(&name) {
                    state.start(&myself, &name, None, true, Vec::new());
                }
            }
            _ => {}
        }
        Ok(())
    }
}

// Local-only: never sent to another node.
impl ractor::Message for RoomSupervisorMsg {}

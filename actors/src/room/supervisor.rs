//! The RoomSupervisor starts rooms on first use, finds them by name, and
//! restarts a room that crashed (it restores from its checkpoint and the log).

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

use ractor::{
    Actor, ActorId, ActorProcessingErr, ActorRef, RpcReplyPort, SpawnErr, SupervisionEvent,
};

use super::{CreateSpec, Room, RoomArgs, RoomContext, RoomMsg};
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
    /// Stops every room (each writes history and its checkpoint).
    Shutdown { reply: RpcReplyPort<()> },
    /// How many rooms run.
    Count { reply: RpcReplyPort<usize> },
}

pub struct RoomSupervisor;

pub struct RoomSupervisorState {
    ctx: RoomContext,
    rooms: HashMap<String, ActorRef<RoomMsg>>,
    names: HashMap<ActorId, String>,
    restarts: HashMap<String, VecDeque<Instant>>,
    stopping: bool,
}

impl RoomSupervisorState {
    async fn start(
        &mut self,
        myself: &ActorRef<RoomSupervisorMsg>,
        name: &str,
        create: Option<CreateSpec>,
    ) -> Result<ActorRef<RoomMsg>, ChatError> {
        let args = RoomArgs {
            name: name.to_string(),
            ctx: self.ctx.clone(),
            create,
        };
        match Actor::spawn_linked(None, Room, args, myself.get_cell()).await {
            Ok((room, _)) => {
                self.names.insert(room.get_id(), name.to_string());
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
            ctx,
            rooms: HashMap::new(),
            names: HashMap::new(),
            restarts: HashMap::new(),
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
                let answer = match state.rooms.get(&name) {
                    Some(room) => Ok(room.clone()),
                    None => state.start(&myself, &name, create).await,
                };
                let _ = reply.send(answer);
            }
            RoomSupervisorMsg::Shutdown { reply } => {
                state.stopping = true;
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
            RoomSupervisorMsg::Count { reply } => {
                let _ = reply.send(state.rooms.len());
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
                    state.rooms.remove(&name);
                }
            }
            SupervisionEvent::ActorFailed(cell, error) => {
                let Some(name) = state.names.remove(&cell.get_id()) else {
                    return Ok(());
                };
                state.rooms.remove(&name);
                tracing::error!(room = %name, %error, "room crashed");
                if state.stopping {
                    return Ok(());
                }
                let history = state.restarts.entry(name.clone()).or_default();
                history.retain(|at| at.elapsed() < RESTART_WINDOW);
                if history.len() >= MAX_RESTARTS {
                    tracing::error!(room = %name, "room keeps crashing; left stopped until its next use");
                    return Ok(());
                }
                history.push_back(Instant::now());
                match state.start(&myself, &name, None).await {
                    Ok(_) => {
                        tracing::info!(room = %name, "room restarted from its checkpoint and log")
                    }
                    Err(e) => tracing::error!(room = %name, error = %e, "room restart failed"),
                }
            }
            _ => {}
        }
        Ok(())
    }
}

//! The NodeSupervisor: the root of a node's actor tree. It starts presence,
//! the room supervisor and the session supervisor, and shuts them down in
//! order (sessions closed with 1012 first, then rooms flushed).

use std::sync::Arc;
use std::time::Duration;

use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort, SupervisionEvent};

use crate::cluster::mesh::{Mesh, MeshArgs, MeshConfig, MeshMsg};
use crate::cluster::router::{Router, RouterArgs, RouterMsg};
use crate::inspect::Inspector;
use crate::limits::Limits;
use crate::presence::{Presence, PresenceArgs, PresenceMsg};

/// A node's users stay online this long after its last heartbeat.
pub const PRESENCE_TTL: Duration = Duration::from_secs(15);
use crate::rate_limits::RateLimits;
use crate::room::supervisor::{RoomSupervisor, RoomSupervisorMsg};
use crate::room::{RoomContext, RoomTuning};
use crate::session::supervisor::{SessionSupervisor, SessionSupervisorMsg};
use crate::session::{SessionContext, SessionShared};
use crate::store::Stores;

/// Everything a node needs to start its actors.
#[derive(Clone)]
pub struct NodeConfig {
    pub node: String,
    /// Where the node's HTTP/WebSocket gateway listens (shown by the admin endpoints).
    pub http_addr: String,
    pub stores: Stores,
    pub limits: Limits,
    pub rate_limits: RateLimits,
    pub tuning: RoomTuning,
    pub admins: Vec<String>,
    pub resume_ttl: Duration,
    /// Set for a clustered node.
    pub mesh: Option<MeshConfig>,
}

/// The refs the gateway uses.
#[derive(Clone)]
pub struct NodeRefs {
    pub presence: ActorRef<PresenceMsg>,
    pub rooms: ActorRef<RoomSupervisorMsg>,
    pub sessions: ActorRef<SessionSupervisorMsg>,
    pub router: ActorRef<RouterMsg>,
    pub mesh: Option<ActorRef<MeshMsg>>,
    pub inspector: Inspector,
}

pub enum NodeMsg {
    Refs {
        reply: RpcReplyPort<NodeRefs>,
    },
    /// Leaves the cluster: every room is handed to its new owner.
    Leave {
        reply: RpcReplyPort<()>,
    },
    /// Closes every connection (1012), stops the rooms, then the node.
    Shutdown {
        reply: RpcReplyPort<()>,
    },
}

pub struct NodeSupervisor;

impl Actor for NodeSupervisor {
    type Msg = NodeMsg;
    type State = NodeRefs;
    type Arguments = NodeConfig;

    async fn pre_start(
        &self,
        myself: ActorRef<NodeMsg>,
        config: NodeConfig,
    ) -> Result<NodeRefs, ActorProcessingErr> {
        let cell = myself.get_cell();
        let presence_args = PresenceArgs {
            node: config.node.clone(),
            stores: config.stores.clone(),
            ttl: PRESENCE_TTL,
        };
        let (presence, _) = Actor::spawn_linked(
            Some("presence".into()),
            Presence,
            presence_args,
            cell.clone(),
        )
        .await?;
        let (router, _) = Actor::spawn_linked(
            Some("router".into()),
            Router,
            RouterArgs {
                me: config.node.clone(),
            },
            cell.clone(),
        )
        .await?;
        let room_ctx = RoomContext {
            node: config.node.clone(),
            stores: config.stores.clone(),
            limits: config.limits.clone(),
            tuning: config.tuning.clone(),
            admins: Arc::new(config.admins.clone()),
            presence: presence.clone(),
            router: Some(router.clone()),
        };
        let (rooms, _) =
            Actor::spawn_linked(Some("rooms".into()), RoomSupervisor, room_ctx, cell.clone())
                .await?;
        router.cast(RouterMsg::Rooms(rooms.clone()))?;
        let session_ctx = SessionContext::new(SessionShared {
            node: config.node.clone(),
            stores: config.stores.clone(),
            limits: config.limits.clone(),
            rate_limits: config.rate_limits.clone(),
            rooms: rooms.clone(),
            presence: presence.clone(),
            resume_ttl: config.resume_ttl,
            router: Some(router.clone()),
        });
        let (sessions, _) = Actor::spawn_linked(
            Some("sessions".into()),
            SessionSupervisor,
            session_ctx,
            cell.clone(),
        )
        .await?;
        let cluster_addr = config.mesh.as_ref().map(|m| m.listen.to_string());
        let mesh = match config.mesh {
            Some(mesh_config) => {
                let args = MeshArgs {
                    config: mesh_config,
                    rooms: rooms.clone(),
                    router: router.clone(),
                };
                let (mesh, _) = Actor::spawn_linked(Some("mesh".into()), Mesh, args, cell).await?;
                Some(mesh)
            }
            None => None,
        };
        let inspector = Inspector {
            node: config.node.clone(),
            http_addr: config.http_addr.clone(),
            cluster_addr,
            started: std::time::Instant::now(),
            presence: presence.clone(),
            rooms: rooms.clone(),
            sessions: sessions.clone(),
            router: router.clone(),
            mesh: mesh.clone(),
        };
        router.cast(RouterMsg::Inspector(Box::new(inspector.clone())))?;
        Ok(NodeRefs {
            presence,
            rooms,
            sessions,
            router,
            mesh,
            inspector,
        })
    }

    async fn handle(
        &self,
        myself: ActorRef<NodeMsg>,
        msg: NodeMsg,
        state: &mut NodeRefs,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            NodeMsg::Refs { reply } => {
                let _ = reply.send(state.clone());
            }
            NodeMsg::Leave { reply } => {
                if let Some(mesh) = &state.mesh {
                    hand_off_rooms(mesh, &state.rooms).await;
                }
                let _ = reply.send(());
            }
            NodeMsg::Shutdown { reply } => {
                let _ = crate::ask(&state.sessions, |reply| SessionSupervisorMsg::Shutdown {
                    reply,
                })
                .await;
                let _ =
                    crate::ask(&state.rooms, |reply| RoomSupervisorMsg::Shutdown { reply }).await;
                let _ = reply.send(());
                myself.stop(Some("shutdown".into()));
            }
        }
        Ok(())
    }

    async fn handle_supervisor_evt(
        &self,
        _myself: ActorRef<NodeMsg>,
        event: SupervisionEvent,
        _state: &mut NodeRefs,
    ) -> Result<(), ActorProcessingErr> {
        if let SupervisionEvent::ActorFailed(cell, error) = event {
            // These hold no client state of their own beyond registries; a
            // crash here is a bug worth stopping for rather than hiding.
            tracing::error!(actor = ?cell.get_name(), %error, "node actor crashed");
            return Err(format!("{:?} crashed: {error}", cell.get_name()).into());
        }
        Ok(())
    }
}

/// Leaves the cluster: peers are told, every room here is handed to its new
/// owner (checkpointed, lease released, subscribers sent on), and only then
/// are the connections closed.
async fn hand_off_rooms(mesh: &ActorRef<MeshMsg>, rooms: &ActorRef<RoomSupervisorMsg>) {
    let started = std::time::Instant::now();
    let _ = crate::ask(mesh, |reply| MeshMsg::Leave { reply }).await;
    let deadline = started + Duration::from_secs(10);
    loop {
        let running = crate::ask(rooms, |reply| RoomSupervisorMsg::Count { reply })
            .await
            .unwrap_or(0);
        if running == 0 || std::time::Instant::now() >= deadline {
            tracing::info!(
                rooms_left = running,
                took_ms = started.elapsed().as_millis() as u64,
                "rooms handed off"
            );
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Let the links carry the last frames and `moved` notices out.
    tokio::time::sleep(Duration::from_millis(200)).await;
}

/// A running node's actor tree.
pub struct RunningNode {
    pub node: ActorRef<NodeMsg>,
    pub refs: NodeRefs,
    /// Completes when the node supervisor stops (at shutdown, or because a
    /// core actor crashed).
    pub stopped: tokio::task::JoinHandle<()>,
}

/// Starts a node's actor tree.
pub async fn start(config: NodeConfig) -> Result<RunningNode, ActorProcessingErr> {
    let name = format!("node:{}", config.node);
    let (node, stopped) = Actor::spawn(Some(name), NodeSupervisor, config).await?;
    let refs = crate::ask(&node, |reply| NodeMsg::Refs { reply }).await?;
    Ok(RunningNode {
        node,
        refs,
        stopped,
    })
}

// Local-only: never sent to another node.
impl ractor::Message for NodeMsg {}

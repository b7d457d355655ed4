//! The Mesh: this node's place in the cluster. It runs the ractor_cluster
//! NodeServer on `cluster.listen`, connects to the seeds and to every peer it
//! learns of (ractor_cluster does not reconnect: a dropped link is retried
//! here with backoff), pings each peer's router with a deadline (a frozen or
//! partitioned peer keeps its TCP connection open), and tells the room
//! supervisor and the router whenever the live membership changes.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use ractor::{Actor, ActorId, ActorProcessingErr, ActorRef, RpcReplyPort};
use ractor_cluster::node::NodeConnectionMode;
use ractor_cluster::{NodeEventSubscription, NodeServer, NodeServerMessage};

use super::router::{call_peer, peer_router, RouterMsg};
use super::wire::{self, WireCall, WireReply};
use super::Membership;
use crate::room::supervisor::RoomSupervisorMsg;

#[derive(Debug, Clone)]
pub struct MeshConfig {
    pub node: String,
    pub listen: SocketAddr,
    pub seeds: Vec<String>,
    pub cookie: String,
    /// How often each peer is pinged.
    pub heartbeat: Duration,
    /// A peer that has not answered for this long is out of the view.
    pub deadline: Duration,
    /// A peer unseen for this long no longer counts towards the quorum.
    pub forget_after: Duration,
    /// With no seed reachable for this long, the node serves on its own.
    pub join_timeout: Duration,
}

/// What `/ready` and the admin pages read.
#[derive(Debug, Clone)]
pub struct MeshStatus {
    pub ready: bool,
    pub membership: Membership,
    /// (node, cluster address) of live peers.
    pub peers: Vec<(String, String)>,
    /// Peers out of the view but not forgotten (not left): (node, cluster
    /// address, seconds since they last answered, if ever).
    pub absent: Vec<(String, String, Option<f64>)>,
}

pub enum MeshMsg {
    Tick,
    Pong {
        node: String,
        incarnation: u64,
        ready: bool,
        addr: String,
        peers: Vec<(String, String)>,
        /// Its wire version.
        wire: u32,
    },
    PingDone {
        node: String,
    },
    Session(SessionNews),
    PeerLeaving {
        node: String,
        incarnation: u64,
    },
    /// This node leaves: peers are told, and its rooms go to their new owners.
    Leave {
        reply: RpcReplyPort<()>,
    },
    Status {
        reply: RpcReplyPort<MeshStatus>,
    },
}

impl ractor::Message for MeshMsg {}

pub enum SessionNews {
    Opened {
        actor: ActorId,
        addr: String,
    },
    Authenticated {
        actor: ActorId,
    },
    Closed {
        actor: ActorId,
        name: Option<String>,
    },
}

struct Events(ActorRef<MeshMsg>);

impl NodeEventSubscription for Events {
    fn node_session_opened(&self, ses: ractor_cluster::node::NodeServerSessionInformation) {
        let _ = self.0.cast(MeshMsg::Session(SessionNews::Opened {
            actor: ses.actor.get_id(),
            addr: ses.peer_addr,
        }));
    }
    fn node_session_disconnected(&self, ses: ractor_cluster::node::NodeServerSessionInformation) {
        let _ = self.0.cast(MeshMsg::Session(SessionNews::Closed {
            actor: ses.actor.get_id(),
            name: ses.peer_name.map(|n| n.name),
        }));
    }
    fn node_session_authenticated(&self, ses: ractor_cluster::node::NodeServerSessionInformation) {
        let _ = self.0.cast(MeshMsg::Session(SessionNews::Authenticated {
            actor: ses.actor.get_id(),
        }));
    }
}

pub struct MeshArgs {
    pub config: MeshConfig,
    pub rooms: ActorRef<RoomSupervisorMsg>,
    pub router: ActorRef<RouterMsg>,
}

pub struct Mesh;

struct Peer {
    addr: String,
    /// Last answer from it as a joined member.
    last_ok: Option<Instant>,
    /// Last answer at all (joined or joining).
    last_seen: Option<Instant>,
    leaving: bool,
    /// The incarnation that said it was leaving: its pongs no longer count.
    left: Option<u64>,
    /// Its wire version, from its last pong.
    wire: Option<u32>,
}

struct Retry {
    next: Instant,
    backoff: Duration,
}

pub struct MeshState {
    config: MeshConfig,
    addr: String,
    server: ActorRef<NodeServerMessage>,
    rooms: ActorRef<RoomSupervisorMsg>,
    router: ActorRef<RouterMsg>,
    peers: HashMap<String, Peer>,
    retries: HashMap<String, Retry>,
    pinging: HashSet<String>,
    /// Node sessions not yet authenticated: actor -> peer address.
    handshaking: HashMap<ActorId, String>,
    membership: Membership,
    ready: bool,
    leaving: bool,
    started: Instant,
    /// When a member last left the live view.
    last_loss: Option<Instant>,
    warned: bool,
    /// Peers refused for their wire version, each logged once.
    refused_versions: HashSet<(String, u32)>,
}

/// `name@host` (ractor_cluster's peer name) -> `name`.
fn node_of(full: &str) -> &str {
    full.split_once('@').map_or(full, |(n, _)| n)
}

impl Actor for Mesh {
    type Msg = MeshMsg;
    type State = MeshState;
    type Arguments = MeshArgs;

    async fn pre_start(
        &self,
        myself: ActorRef<MeshMsg>,
        args: MeshArgs,
    ) -> Result<MeshState, ActorProcessingErr> {
        let config = args.config;
        let server = NodeServer::new(
            config.listen.port(),
            config.cookie.clone(),
            config.node.clone(),
            config.listen.ip().to_string(),
            None,
            Some(NodeConnectionMode::Transitive),
        )
        .with_listen_addr(config.listen.ip());
        let (server, _) = Actor::spawn_linked(None, server, (), myself.get_cell()).await?;
        server.cast(NodeServerMessage::SubscribeToEvents {
            id: "troupe-mesh".into(),
            subscription: Box::new(Events(myself.clone())),
        })?;
        tracing::info!(node = %config.node, listen = %config.listen, seeds = ?config.seeds, "cluster listener started");
        myself.send_interval(config.heartbeat / 2, || MeshMsg::Tick);
        Ok(MeshState {
            addr: config.listen.to_string(),
            membership: Membership {
                clustered: true,
                ..Membership::alone(&config.node)
            },
            config,
            server,
            rooms: args.rooms,
            router: args.router,
            peers: HashMap::new(),
            retries: HashMap::new(),
            pinging: HashSet::new(),
            handshaking: HashMap::new(),
            ready: false,
            leaving: false,
            started: Instant::now(),
            last_loss: None,
            warned: false,
            refused_versions: HashSet::new(),
        })
    }

    async fn post_start(
        &self,
        myself: ActorRef<MeshMsg>,
        state: &mut MeshState,
    ) -> Result<(), ActorProcessingErr> {
        state.publish(&myself);
        Ok(())
    }

    async fn handle(
        &self,
        myself: ActorRef<MeshMsg>,
        msg: MeshMsg,
        state: &mut MeshState,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            MeshMsg::Tick => state.tick(&myself).await,
            MeshMsg::Pong {
                node,
                incarnation,
                ready,
                addr,
                peers,
                wire,
            } => {
                if !wire::compatible(wire) {
                    // Never a member: it would misread what this node says.
                    if state.refused_versions.insert((node.clone(), wire)) {
                        tracing::error!(
                            peer = %node,
                            peer_addr = %addr,
                            peer_wire_version = wire,
                            wire_version = wire::wire_version(),
                            "cluster peer refused: its wire version is not this node's or adjacent \
                             (upgrade one version at a time)"
                        );
                    }
                    return Ok(());
                }
                let was_live = state.membership.live.contains(&node);
                let peer = state.peers.entry(node.clone()).or_insert(Peer {
                    addr: addr.clone(),
                    last_ok: None,
                    last_seen: None,
                    leaving: false,
                    left: None,
                    wire: None,
                });
                peer.addr = addr;
                peer.wire = Some(wire);
                if peer.left == Some(incarnation) {
                    // A leaving node answers until it exits; it stays out.
                    return Ok(());
                }
                // A joining node counts towards the majority at once, but is
                // live (given rooms) only once it has joined: before, it
                // refuses to serve them.
                peer.last_seen = Some(Instant::now());
                if !ready {
                    return Ok(());
                }
                peer.last_ok = Some(Instant::now());
                peer.leaving = false;
                for (name, addr) in peers {
                    if name != state.config.node {
                        state.peers.entry(name).or_insert(Peer {
                            addr,
                            last_ok: None,
                            last_seen: None,
                            leaving: false,
                            left: None,
                            wire: None,
                        });
                    }
                }
                if !was_live {
                    state.publish(&myself);
                }
            }
            MeshMsg::PingDone { node } => {
                state.pinging.remove(&node);
            }
            MeshMsg::Session(news) => match news {
                SessionNews::Opened { actor, addr } => {
                    state.handshaking.insert(actor, addr);
                }
                SessionNews::Authenticated { actor } => {
                    if let Some(addr) = state.handshaking.remove(&actor) {
                        tracing::info!(peer = %addr, "cluster peer authenticated");
                    }
                }
                SessionNews::Closed { actor, name } => {
                    if let Some(addr) = state.handshaking.remove(&actor) {
                        tracing::warn!(peer = %addr, "cluster peer refused: the handshake failed (a wrong cookie?)");
                    } else if let Some(name) = name {
                        let node = node_of(&name).to_string();
                        tracing::warn!(peer = %node, "cluster link closed");
                        if let Some(p) = state.peers.get_mut(&node) {
                            // A closed link is a dead peer until it answers again.
                            if let Some(dead) = Instant::now().checked_sub(state.config.deadline) {
                                p.last_ok = p.last_ok.map(|t| t.min(dead));
                            }
                        }
                        state.publish(&myself);
                    }
                }
            },
            MeshMsg::PeerLeaving { node, incarnation } => {
                if let Some(p) = state.peers.get_mut(&node) {
                    p.leaving = true;
                    p.left = Some(incarnation);
                }
                state.publish(&myself);
            }
            MeshMsg::Leave { reply } => {
                state.leaving = true;
                let _ = state.router.cast(RouterMsg::Leaving);
                state.publish(&myself);
                let _ = reply.send(());
            }
            MeshMsg::Status { reply } => {
                let _ = reply.send(MeshStatus {
                    ready: state.ready,
                    membership: state.membership.clone(),
                    peers: state.live_peers(),
                    absent: state.absent_peers(),
                });
            }
        }
        Ok(())
    }
}

impl MeshState {
    async fn tick(&mut self, myself: &ActorRef<MeshMsg>) {
        let sessions =
            ractor::call_t!(self.server, NodeServerMessage::GetSessions, 1000).unwrap_or_default();
        let mut connected_addrs = HashSet::new();
        let mut connected_nodes = HashSet::new();
        for info in sessions.values() {
            if let Some(name) = &info.peer_name {
                connected_addrs.insert(name.connection_string.clone());
                connected_nodes.insert(node_of(&name.name).to_string());
            }
        }
        // (Re)connect to seeds and known peers with backoff.
        let mut targets: BTreeSet<String> = self.config.seeds.iter().cloned().collect();
        for (node, p) in &self.peers {
            if !p.leaving && !connected_nodes.contains(node) {
                targets.insert(p.addr.clone());
            }
        }
        targets.remove(&self.addr);
        let now = Instant::now();
        for addr in targets {
            if connected_addrs.contains(&addr) {
                self.retries.remove(&addr);
                continue;
            }
            let retry = self.retries.entry(addr.clone()).or_insert(Retry {
                next: now,
                backoff: Duration::from_millis(200),
            });
            if now < retry.next || self.leaving {
                continue;
            }
            retry.next = now + retry.backoff;
            retry.backoff = (retry.backoff * 2).min(Duration::from_secs(5));
            let server = self.server.clone();
            tokio::spawn(async move {
                if let Err(e) = ractor_cluster::client_connect(&server, addr.as_str()).await {
                    tracing::debug!(peer = %addr, error = %e, "cluster connect failed; will retry");
                }
            });
        }
        // Heartbeats, one in flight per peer.
        for node in &connected_nodes {
            if self.pinging.contains(node) {
                continue;
            }
            let Some(router) = peer_router(node) else {
                continue;
            };
            self.pinging.insert(node.clone());
            let call = WireCall::Ping {
                from: self.config.node.clone(),
                addr: self.addr.clone(),
                wire: wire::wire_version(),
            };
            let myself = myself.clone();
            let node = node.clone();
            let deadline = self.config.deadline;
            tokio::spawn(async move {
                let answer = tokio::time::timeout(deadline, call_peer(&router, &call)).await;
                if let Ok(Ok(WireReply::Pong {
                    node,
                    incarnation,
                    ready,
                    addr,
                    peers,
                    wire,
                })) = answer
                {
                    let _ = myself.cast(MeshMsg::Pong {
                        node,
                        incarnation,
                        ready,
                        addr,
                        peers,
                        wire,
                    });
                }
                let _ = myself.cast(MeshMsg::PingDone { node });
            });
        }
        if !self.ready {
            let alone = self.config.seeds.iter().all(|s| *s == self.addr);
            let joined = self.peers.values().any(|p| p.last_seen.is_some());
            if alone || joined {
                self.ready = true;
            } else if !self.warned && self.started.elapsed() >= self.config.join_timeout {
                // Not serving alone: it could be the minority side of a
                // partition, or a node with the wrong cookie.
                tracing::warn!(seeds = ?self.config.seeds, "no seed answered yet; not serving rooms until one does");
                self.warned = true;
            }
        }
        self.publish(myself);
    }

    fn live_peers(&self) -> Vec<(String, String)> {
        self.peers
            .iter()
            .filter(|(n, _)| self.membership.live.contains(*n))
            .map(|(n, p)| (n.clone(), p.addr.clone()))
            .collect()
    }

    fn absent_peers(&self) -> Vec<(String, String, Option<f64>)> {
        let now = Instant::now();
        self.peers
            .iter()
            .filter(|(n, p)| !self.membership.live.contains(*n) && !p.leaving)
            .filter(|(_, p)| {
                p.last_seen
                    .is_none_or(|seen| now.duration_since(seen) < self.config.forget_after)
            })
            .map(|(n, p)| {
                let ago = p
                    .last_seen
                    .map(|seen| now.duration_since(seen).as_secs_f64());
                (n.clone(), p.addr.clone(), ago)
            })
            .collect()
    }

    /// Recomputes the view and tells the rooms and the router when it changed.
    fn publish(&mut self, myself: &ActorRef<MeshMsg>) {
        let now = Instant::now();
        let mut live = BTreeSet::new();
        let mut known = 1;
        if !self.leaving {
            live.insert(self.config.node.clone());
        }
        for (node, p) in &self.peers {
            if p.leaving {
                continue;
            }
            if p.last_seen
                .is_some_and(|seen| now.duration_since(seen) < self.config.forget_after)
            {
                known += 1;
            }
            if p.last_ok
                .is_some_and(|ok| now.duration_since(ok) < self.config.deadline)
            {
                live.insert(node.clone());
            }
        }
        // Peers of a cut-off node go silent one after the other: right after
        // losing one, it may still count a majority. Takeovers wait until the
        // view has not lost anyone for two heartbeats.
        if self.membership.live.iter().any(|n| !live.contains(n)) {
            self.last_loss = Some(now);
        }
        let settled = self
            .last_loss
            .is_none_or(|at| now.duration_since(at) >= self.config.heartbeat * 2);
        // Before it has joined, a node takes no room over: the cluster it is
        // about to join may be serving them.
        let majority = self.ready && !self.leaving && live.len() * 2 > known;
        let quorum = majority && settled;
        let next = Membership {
            me: self.config.node.as_str().into(),
            live,
            quorum,
            majority,
            clustered: true,
        };
        let _ = self.router.cast(RouterMsg::Book {
            mesh: myself.clone(),
            ready: self.ready && !self.leaving,
            addr: self.addr.clone(),
            peers: self.live_peers(),
            wires: self
                .peers
                .iter()
                .filter_map(|(node, p)| Some((node.clone(), p.wire?)))
                .collect(),
        });
        if next == self.membership {
            return;
        }
        tracing::info!(
            node = %self.config.node,
            live = ?next.live,
            quorum = next.quorum,
            "cluster membership changed"
        );
        crate::metrics::CLUSTER_MEMBERS.set(next.live.len() as i64);
        self.membership = next.clone();
        let _ = self.rooms.cast(RoomSupervisorMsg::Membership(next.clone()));
        let _ = self.router.cast(RouterMsg::Membership(next));
    }
}

//! Actor inspection: what `/admin/actors`, the admin page and `troupe inspect`
//! show. Each actor answers an `Inspect` message with a summary of its own
//! state; the [`Inspector`] walks one node's tree (node -> supervisors ->
//! rooms, proxies, sessions) and asks the children in parallel, each within a
//! deadline, so one busy actor shows up as an error entry rather than stalling
//! the answer. The gateway asks every node's router for its snapshot.
//!
//! ractor does not expose mailbox lengths, so `mailbox` stays empty; what an
//! actor queues itself (a room's pending sends, a session's outbound frames)
//! is in its state, and `reply_ms` (how long it took to answer) shows an actor
//! that is behind on its mailbox.

use std::time::{Duration, Instant};

use futures_util::future::join_all;
use ractor::rpc::CallResult;
use ractor::{ActorRef, Message, RpcReplyPort};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use crate::cluster::mesh::MeshMsg;
use crate::cluster::router::{peer_router, RouterMsg};
use crate::cluster::wire::{self, WireCall, WireReply};
use crate::presence::PresenceMsg;
use crate::room::supervisor::RoomSupervisorMsg;
use crate::room::RoomMsg;
use crate::session::supervisor::SessionSupervisorMsg;
use crate::session::SessionMsg;

/// How long each actor of a node has to answer an inspection.
pub const ACTOR_DEADLINE: Duration = Duration::from_millis(1000);

/// Filters of `/admin/actors` (`?kind=`, `?name=`); `?node=` is the gateway's.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct InspectQuery {
    pub kind: Option<String>,
    pub name: Option<String>,
    /// Only the node's own actors and its rooms: sessions and proxies are
    /// counted, not asked (`/admin/nodes`).
    #[serde(default)]
    pub summary: bool,
}

/// The kinds an actor can have.
pub const KINDS: &[&str] = &[
    "node",
    "supervisor",
    "presence",
    "router",
    "mesh",
    "room",
    "proxy",
    "session",
];

impl InspectQuery {
    fn wants_kind(&self, kind: &str) -> bool {
        self.kind.as_deref().is_none_or(|k| k == kind)
    }

    /// An actor named by `?name=`: its full name (`room:lobby`), the name
    /// after its kind (`lobby`), or, for a session, its user.
    fn names(&self, info: &ActorInfo) -> bool {
        let Some(wanted) = self.name.as_deref() else {
            return true;
        };
        info.name == wanted
            || info.name.split_once(':').is_some_and(|(_, n)| n == wanted)
            || (info.kind == "session"
                && info.state.get("user").and_then(Value::as_str) == Some(wanted))
    }

    fn keeps(&self, info: &ActorInfo) -> bool {
        self.wants_kind(&info.kind) && self.names(info)
    }

    /// A lookup by name answers with each actor's detail.
    fn detail(&self) -> bool {
        self.name.is_some()
    }
}

/// One actor as an operator sees it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ActorInfo {
    pub name: String,
    pub kind: String,
    pub supervisor: Option<String>,
    pub node: String,
    /// What the actor tells about itself (its kind decides the keys).
    #[schema(value_type = Object)]
    pub state: Value,
    /// Messages waiting in its mailbox, where the runtime can tell (ractor cannot).
    pub mailbox: Option<u64>,
    /// Times its supervisor restarted it.
    pub restarts: u64,
    /// How long it took to answer the inspection, ms.
    pub reply_ms: Option<f64>,
}

/// One node's answer, or the reason it gave none.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct NodeSnapshot {
    pub node: String,
    pub addr: Option<String>,
    pub cluster_addr: Option<String>,
    pub uptime_s: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    pub actors: Vec<ActorInfo>,
}

impl NodeSnapshot {
    /// The entry of a node that did not answer.
    pub fn failed(node: &str, error: impl Into<String>) -> Self {
        NodeSnapshot {
            node: node.to_string(),
            addr: None,
            cluster_addr: None,
            uptime_s: None,
            error: Some(error.into()),
            actors: Vec::new(),
        }
    }
}

/// What a node's actors answer to `Inspect`.
pub type InspectReply = RpcReplyPort<Value>;

/// The children a room supervisor reports.
pub struct RoomChildren {
    /// (room, actor, restarts)
    pub rooms: Vec<(String, ActorRef<RoomMsg>, u64)>,
    /// (room, owner node, proxy)
    pub proxies: Vec<(String, String, ActorRef<RoomMsg>)>,
    /// Rooms left stopped after crashing too often, and restarts in all.
    pub state: Value,
}

/// The children a session supervisor reports.
pub struct SessionChildren {
    /// (user, actor)
    pub sessions: Vec<(String, ActorRef<SessionMsg>)>,
    pub state: Value,
}

/// Everything needed to inspect one node: its core actors and where it listens.
#[derive(Clone)]
pub struct Inspector {
    pub node: String,
    pub http_addr: String,
    pub cluster_addr: Option<String>,
    pub started: Instant,
    pub presence: ActorRef<PresenceMsg>,
    pub rooms: ActorRef<RoomSupervisorMsg>,
    pub sessions: ActorRef<SessionSupervisorMsg>,
    pub router: ActorRef<RouterMsg>,
    pub mesh: Option<ActorRef<MeshMsg>>,
}

/// Calls `actor` within `deadline`: the answer and how long it took, or why none came.
async fn timed<M: Message, T: Send + 'static>(
    actor: &ActorRef<M>,
    deadline: Duration,
    build: impl FnOnce(RpcReplyPort<T>) -> M,
) -> (Result<T, String>, f64) {
    let started = Instant::now();
    let answer = match actor.call(build, Some(deadline)).await {
        Ok(CallResult::Success(v)) => Ok(v),
        Ok(CallResult::Timeout) => Err(format!("no answer within {} ms", deadline.as_millis())),
        Ok(CallResult::SenderError) | Err(_) => Err("stopped".to_string()),
    };
    (answer, started.elapsed().as_secs_f64() * 1000.0)
}

fn entry(
    name: impl Into<String>,
    kind: &str,
    supervisor: Option<&str>,
    node: &str,
    answer: (Result<Value, String>, f64),
    restarts: u64,
) -> ActorInfo {
    let (state, reply_ms) = match answer {
        (Ok(state), ms) => (state, Some(ms)),
        (Err(e), _) => (json!({ "error": e }), None),
    };
    ActorInfo {
        name: name.into(),
        kind: kind.to_string(),
        supervisor: supervisor.map(str::to_string),
        node: node.to_string(),
        state,
        mailbox: None,
        restarts,
        reply_ms,
    }
}

impl Inspector {
    /// This node's actor tree, filtered by `query`.
    pub async fn snapshot(&self, query: &InspectQuery) -> NodeSnapshot {
        let detail = query.detail();
        let node = self.node.as_str();
        let deadline = ACTOR_DEADLINE;
        let mut actors = Vec::new();

        let rooms = timed(&self.rooms, deadline, |reply| RoomSupervisorMsg::Children {
            reply,
        });
        let sessions = timed(&self.sessions, deadline, |reply| {
            SessionSupervisorMsg::Children { reply }
        });
        let presence = timed(&self.presence, deadline, |reply| PresenceMsg::Counts {
            reply,
        });
        let router = timed(&self.router, deadline, |reply| RouterMsg::Inspect { reply });
        let ((rooms, rooms_ms), (sessions, sessions_ms), presence, router) =
            tokio::join!(rooms, sessions, presence, router);

        let mut children = vec!["presence", "router", "rooms", "sessions"];
        if self.mesh.is_some() {
            children.push("mesh");
        }
        actors.push(entry(
            "node",
            "node",
            None,
            node,
            (
                Ok(json!({
                    "node": node,
                    "addr": self.http_addr,
                    "cluster_addr": self.cluster_addr,
                    "children": children,
                })),
                0.0,
            ),
            0,
        ));
        let presence = match presence {
            (Ok((users, sessions)), ms) => {
                (Ok(json!({ "online": users, "sessions": sessions })), ms)
            }
            (Err(e), ms) => (Err(e), ms),
        };
        actors.push(entry(
            "presence",
            "presence",
            Some("node"),
            node,
            presence,
            0,
        ));
        actors.push(entry("router", "router", Some("node"), node, router, 0));
        if let Some(mesh) = &self.mesh {
            let status = timed(mesh, deadline, |reply| MeshMsg::Status { reply }).await;
            let status = match status {
                (Ok(s), ms) => (
                    Ok(json!({
                        "ready": s.ready,
                        "live": s.membership.live,
                        "quorum": s.membership.quorum,
                        "majority": s.membership.majority,
                        "peers": s.peers.iter().map(|(n, a)| json!({"node": n, "addr": a})).collect::<Vec<_>>(),
                    })),
                    ms,
                ),
                (Err(e), ms) => (Err(e), ms),
            };
            actors.push(entry("mesh", "mesh", Some("node"), node, status, 0));
        }

        // Rooms and proxies, asked in parallel.
        match rooms {
            Ok(children) => {
                let count = children.rooms.len() + children.proxies.len();
                let mut state = children.state;
                state["children"] = json!(count);
                state["rooms"] = json!(children.rooms.len());
                state["proxies"] = json!(children.proxies.len());
                actors.push(entry(
                    "rooms",
                    "supervisor",
                    Some("node"),
                    node,
                    (Ok(state), rooms_ms),
                    0,
                ));
                if query.wants_kind("room") {
                    let asks = children
                        .rooms
                        .iter()
                        .map(|(name, room, restarts)| async move {
                            let answer =
                                timed(room, deadline, |reply| RoomMsg::Inspect { detail, reply })
                                    .await;
                            entry(
                                format!("room:{name}"),
                                "room",
                                Some("rooms"),
                                node,
                                answer,
                                *restarts,
                            )
                        });
                    actors.extend(join_all(asks).await);
                }
                if query.wants_kind("proxy") && !query.summary {
                    let asks = children
                        .proxies
                        .iter()
                        .map(|(name, owner, proxy)| async move {
                            let answer =
                                timed(proxy, deadline, |reply| RoomMsg::Inspect { detail, reply })
                                    .await;
                            let answer = match answer {
                                (Err(e), ms) => {
                                    (Ok(json!({"room": name, "owner": owner, "error": e})), ms)
                                }
                                ok => ok,
                            };
                            entry(
                                format!("proxy:{name}"),
                                "proxy",
                                Some("rooms"),
                                node,
                                answer,
                                0,
                            )
                        });
                    actors.extend(join_all(asks).await);
                }
            }
            Err(e) => actors.push(entry(
                "rooms",
                "supervisor",
                Some("node"),
                node,
                (Err(e), rooms_ms),
                0,
            )),
        }

        match sessions {
            Ok(children) => {
                let mut state = children.state;
                state["children"] = json!(children.sessions.len());
                actors.push(entry(
                    "sessions",
                    "supervisor",
                    Some("node"),
                    node,
                    (Ok(state), sessions_ms),
                    0,
                ));
                if query.wants_kind("session") && !query.summary {
                    let asks = children.sessions.iter().map(|(user, session)| async move {
                        let answer = timed(session, deadline, |reply| SessionMsg::Inspect {
                            detail,
                            reply,
                        })
                        .await;
                        let name = match &answer.0 {
                            Ok(state) => match state.get("id").and_then(Value::as_str) {
                                Some(id) => format!("session:{id}"),
                                None => format!("session:{}", session.get_id()),
                            },
                            Err(_) => format!("session:{}", session.get_id()),
                        };
                        let answer = match answer {
                            (Err(e), ms) => (Ok(json!({"user": user, "error": e})), ms),
                            ok => ok,
                        };
                        entry(name, "session", Some("sessions"), node, answer, 0)
                    });
                    actors.extend(join_all(asks).await);
                }
            }
            Err(e) => actors.push(entry(
                "sessions",
                "supervisor",
                Some("node"),
                node,
                (Err(e), sessions_ms),
                0,
            )),
        }

        actors.retain(|a| query.keeps(a));
        actors.sort_by(|a, b| rank(a).cmp(&rank(b)).then_with(|| a.name.cmp(&b.name)));
        NodeSnapshot {
            node: self.node.clone(),
            addr: Some(self.http_addr.clone()),
            cluster_addr: self.cluster_addr.clone(),
            uptime_s: Some(self.started.elapsed().as_secs_f64()),
            error: None,
            actors,
        }
    }
}

/// Asks `node`'s router for its snapshot within `deadline`; a node that does
/// not answer (unreachable, dead, too slow) gets an entry with its `error`.
pub async fn inspect_peer(node: &str, query: &InspectQuery, deadline: Duration) -> NodeSnapshot {
    let Some(router) = peer_router(node) else {
        return NodeSnapshot::failed(node, "unreachable: no connection to this node");
    };
    let call = wire::encode_json(&WireCall::Inspect {
        query: query.clone(),
    });
    match router
        .call(|reply| RouterMsg::Call(call, reply), Some(deadline))
        .await
    {
        Ok(CallResult::Success(bytes)) => match wire::decode_json::<WireReply>(&bytes) {
            Ok(WireReply::Inspected(snapshot)) => *snapshot,
            Ok(WireReply::Failed(e)) => NodeSnapshot::failed(node, e.message),
            Ok(_) => NodeSnapshot::failed(node, "an unexpected answer"),
            Err(e) => NodeSnapshot::failed(node, format!("an unreadable answer: {}", e.message)),
        },
        Ok(CallResult::Timeout) => NodeSnapshot::failed(
            node,
            format!("no answer within {} ms", deadline.as_millis()),
        ),
        Ok(CallResult::SenderError) | Err(_) => {
            NodeSnapshot::failed(node, "unreachable: the connection to it closed")
        }
    }
}

/// Tree order: the node, its direct children, then rooms, proxies, sessions.
fn rank(a: &ActorInfo) -> u8 {
    match a.kind.as_str() {
        "node" => 0,
        "presence" | "router" | "mesh" | "supervisor" => 1,
        "room" => 2,
        "proxy" => 3,
        "session" => 4,
        _ => 5,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info(name: &str, kind: &str, state: Value) -> ActorInfo {
        entry(name, kind, Some("rooms"), "n1", (Ok(state), 0.1), 0)
    }

    #[test]
    fn a_name_finds_an_actor_by_full_name_short_name_or_user() {
        let room = info("room:lobby", "room", json!({}));
        let session = info("session:7", "session", json!({"user": "ann"}));
        let q = |name: &str| InspectQuery {
            name: Some(name.into()),
            ..InspectQuery::default()
        };
        assert!(q("room:lobby").keeps(&room));
        assert!(q("lobby").keeps(&room));
        assert!(!q("lob").keeps(&room));
        assert!(q("ann").keeps(&session));
        assert!(q("session:7").keeps(&session));
        assert!(!q("ann").keeps(&room));
        let rooms_only = InspectQuery {
            kind: Some("room".into()),
            ..InspectQuery::default()
        };
        assert!(rooms_only.keeps(&room) && !rooms_only.keeps(&session));
    }

    #[test]
    fn a_snapshot_round_trips_through_json() {
        let snap = NodeSnapshot {
            node: "n1".into(),
            addr: Some("127.0.0.1:8080".into()),
            cluster_addr: None,
            uptime_s: Some(1.5),
            error: None,
            actors: vec![info("room:lobby", "room", json!({"last_seq": 3}))],
        };
        let text = serde_json::to_string(&snap).unwrap();
        assert!(
            !text.contains("\"error\""),
            "no error key when it answered: {text}"
        );
        let back: NodeSnapshot = serde_json::from_str(&text).unwrap();
        assert_eq!(back, snap);
        let failed = serde_json::to_value(NodeSnapshot::failed("n2", "no answer")).unwrap();
        assert_eq!(failed["error"], "no answer");
        assert_eq!(failed["actors"], json!([]));
    }
}

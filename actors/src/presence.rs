//! The Presence actor: this node's online users and their sessions. The
//! cluster's view lives in the ephemeral store: each node heartbeats its
//! users there, so a dead node's users go offline by themselves; last-seen
//! times are kept there too. Store calls run off the actor: a slow store
//! degrades presence to this node's view, it never stalls connections.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use ractor::{Actor, ActorId, ActorProcessingErr, ActorRef, RpcReplyPort};

use crate::frames::UserStatus;
use crate::limits::now_ms;
use crate::session::SessionHandle;
use crate::store::Stores;

pub enum PresenceMsg {
    /// A session came up; replies true when it is the user's first.
    Register {
        session: SessionHandle,
        reply: RpcReplyPort<bool>,
    },
    /// A session ended; replies the user's last-seen time when it was the last.
    Unregister {
        session_id: u64,
        user: String,
        reply: RpcReplyPort<Option<i64>>,
    },
    /// A session that crashed: drop it without announcing anything.
    Forget { user: String, actor: ActorId },
    SessionsOf {
        users: Vec<String>,
        reply: RpcReplyPort<Vec<SessionHandle>>,
    },
    AllSessions {
        reply: RpcReplyPort<Vec<SessionHandle>>,
    },
    /// Every online user.
    Online {
        reply: RpcReplyPort<Vec<UserStatus>>,
    },
    /// Status of the given users, online or not.
    Status {
        users: Vec<String>,
        reply: RpcReplyPort<Vec<UserStatus>>,
    },
    /// (online users, sessions)
    Counts { reply: RpcReplyPort<(usize, usize)> },
    /// Renews this node's users in the store.
    Heartbeat,
}

pub struct Presence;

pub struct PresenceArgs {
    pub node: String,
    pub stores: Stores,
    /// How long a heartbeat keeps a user online.
    pub ttl: Duration,
}

pub struct PresenceState {
    node: String,
    ttl: Duration,
    stores: Stores,
    /// user -> their sessions on this node, and when they came online
    users: HashMap<String, (Vec<SessionHandle>, i64)>,
}

impl Actor for Presence {
    type Msg = PresenceMsg;
    type State = PresenceState;
    type Arguments = PresenceArgs;

    async fn pre_start(
        &self,
        myself: ActorRef<PresenceMsg>,
        args: PresenceArgs,
    ) -> Result<PresenceState, ActorProcessingErr> {
        myself.send_interval(args.ttl / 3, || PresenceMsg::Heartbeat);
        Ok(PresenceState {
            node: args.node,
            ttl: args.ttl,
            stores: args.stores,
            users: HashMap::new(),
        })
    }

    async fn handle(
        &self,
        _myself: ActorRef<PresenceMsg>,
        msg: PresenceMsg,
        state: &mut PresenceState,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            PresenceMsg::Register { session, reply } => {
                let entry = state
                    .users
                    .entry(session.user.clone())
                    // Room for one: most users have one connection, and a
                    // first push would reserve four handles (~575 bytes).
                    .or_insert_with(|| (Vec::with_capacity(1), now_ms()));
                entry.0.push(session);
                let first = entry.0.len() == 1;
                if first {
                    let users = vec![entry_user(&entry.0)];
                    state.spawn_heartbeat(users);
                }
                let _ = reply.send(first);
            }
            PresenceMsg::Unregister {
                session_id,
                user,
                reply,
            } => {
                if let Some((sessions, _)) = state.users.get_mut(&user) {
                    sessions.retain(|s| s.id != session_id);
                    if sessions.is_empty() {
                        state.users.remove(&user);
                        // Answered once the store says so: whoever hears the
                        // news and asks finds the user offline, with a last seen.
                        state.spawn_offline(user.clone(), now_ms(), Some(reply));
                        return Ok(());
                    }
                }
                let _ = reply.send(None);
            }
            PresenceMsg::Forget { user, actor } => {
                if let Some((sessions, _)) = state.users.get_mut(&user) {
                    sessions.retain(|s| s.actor.local_id() != Some(actor));
                    if sessions.is_empty() {
                        state.users.remove(&user);
                        state.spawn_offline(user.clone(), now_ms(), None);
                    }
                }
            }
            PresenceMsg::SessionsOf { users, reply } => {
                let sessions = users
                    .iter()
                    .filter_map(|u| state.users.get(u))
                    .flat_map(|(s, _)| s.iter().cloned())
                    .collect();
                let _ = reply.send(sessions);
            }
            PresenceMsg::AllSessions { reply } => {
                let sessions = state
                    .users
                    .values()
                    .flat_map(|(s, _)| s.iter().cloned())
                    .collect();
                let _ = reply.send(sessions);
            }
            PresenceMsg::Online { reply } => {
                let local: Vec<String> = state.users.keys().cloned().collect();
                let stores = state.stores.clone();
                tokio::spawn(async move {
                    let mut users = cluster_online(&stores, local).await;
                    users.sort();
                    let now = now_ms();
                    let statuses = users
                        .into_iter()
                        .map(|user| UserStatus {
                            user,
                            online: true,
                            last_seen: Some(now),
                        })
                        .collect();
                    let _ = reply.send(statuses);
                });
            }
            PresenceMsg::Status { users, reply } => {
                let local: Vec<String> = state.users.keys().cloned().collect();
                let stores = state.stores.clone();
                tokio::spawn(async move {
                    let online: HashSet<String> =
                        cluster_online(&stores, local).await.into_iter().collect();
                    let offline: Vec<String> = users
                        .iter()
                        .filter(|u| !online.contains(*u))
                        .cloned()
                        .collect();
                    let seen = match stores.ephemeral.last_seen(&offline).await {
                        Ok(seen) => seen,
                        Err(e) => {
                            tracing::warn!(error = %e, "last seen unavailable");
                            HashMap::new()
                        }
                    };
                    let now = now_ms();
                    let statuses = users
                        .into_iter()
                        .map(|u| {
                            let is_online = online.contains(&u);
                            let last_seen = if is_online {
                                Some(now)
                            } else {
                                seen.get(&u).copied()
                            };
                            UserStatus {
                                user: u,
                                online: is_online,
                                last_seen,
                            }
                        })
                        .collect();
                    let _ = reply.send(statuses);
                });
            }
            PresenceMsg::Heartbeat => {
                let users: Vec<String> = state.users.keys().cloned().collect();
                if !users.is_empty() {
                    state.spawn_heartbeat(users);
                }
            }
            PresenceMsg::Counts { reply } => {
                let sessions = state.users.values().map(|(s, _)| s.len()).sum();
                let _ = reply.send((state.users.len(), sessions));
            }
        }
        Ok(())
    }
}

fn entry_user(sessions: &[SessionHandle]) -> String {
    sessions.first().map(|s| s.user.clone()).unwrap_or_default()
}

/// Online users of the whole cluster; this node's view when the store is down.
async fn cluster_online(stores: &Stores, local: Vec<String>) -> Vec<String> {
    let mut users = match stores.ephemeral.online().await {
        Ok(users) => users,
        Err(e) => {
            tracing::warn!(error = %e, "cluster presence unavailable; answering with this node's users");
            Vec::new()
        }
    };
    users.extend(local);
    users.sort();
    users.dedup();
    users
}

impl PresenceState {
    fn spawn_heartbeat(&self, users: Vec<String>) {
        let (stores, node, ttl) = (self.stores.clone(), self.node.clone(), self.ttl);
        tokio::spawn(async move {
            if let Err(e) = stores.ephemeral.heartbeat(&node, &users, ttl).await {
                tracing::warn!(error = %e, "presence heartbeat failed");
            }
        });
    }

    /// Stores that `user` went offline at `ts` (off the actor), then answers
    /// `reply` with `ts`: whoever hears the news and asks finds the user
    /// offline, with a last seen (written first for that reason). A slow
    /// store delays the answer by [`OFFLINE_WAIT`] at most; the writes go on.
    fn spawn_offline(&self, user: String, ts: i64, reply: Option<RpcReplyPort<Option<i64>>>) {
        let (stores, node) = (self.stores.clone(), self.node.clone());
        let writes = tokio::spawn(async move {
            if let Err(e) = stores.ephemeral.set_last_seen(&user, ts).await {
                tracing::warn!(%user, error = %e, "last seen not stored");
            }
            if let Err(e) = stores.ephemeral.offline(&node, &user).await {
                tracing::warn!(%user, error = %e, "presence update failed");
            }
        });
        if let Some(reply) = reply {
            tokio::spawn(async move {
                let _ = tokio::time::timeout(OFFLINE_WAIT, writes).await;
                let _ = reply.send(Some(ts));
            });
        }
    }
}

/// How long a user's departure waits for the store before it is announced.
const OFFLINE_WAIT: Duration = Duration::from_secs(2);

// Local-only: never sent to another node.
impl ractor::Message for PresenceMsg {}

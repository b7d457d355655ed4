//! The Presence actor: this node's online users and their sessions, and
//! last-seen times (kept in the ephemeral store, shared by the nodes).

use std::collections::HashMap;

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
}

pub struct Presence;

pub struct PresenceState {
    stores: Stores,
    /// user -> their sessions on this node, and when they came online
    users: HashMap<String, (Vec<SessionHandle>, i64)>,
}

impl Actor for Presence {
    type Msg = PresenceMsg;
    type State = PresenceState;
    type Arguments = Stores;

    async fn pre_start(
        &self,
        _myself: ActorRef<PresenceMsg>,
        stores: Stores,
    ) -> Result<PresenceState, ActorProcessingErr> {
        Ok(PresenceState {
            stores,
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
                    .or_insert_with(|| (Vec::new(), now_ms()));
                entry.0.push(session);
                let _ = reply.send(entry.0.len() == 1);
            }
            PresenceMsg::Unregister {
                session_id,
                user,
                reply,
            } => {
                let mut last = None;
                if let Some((sessions, _)) = state.users.get_mut(&user) {
                    sessions.retain(|s| s.id != session_id);
                    if sessions.is_empty() {
                        state.users.remove(&user);
                        let ts = now_ms();
                        if let Err(e) = state.stores.ephemeral.set_last_seen(&user, ts).await {
                            tracing::warn!(%user, error = %e, "last seen not stored");
                        }
                        last = Some(ts);
                    }
                }
                let _ = reply.send(last);
            }
            PresenceMsg::Forget { user, actor } => {
                if let Some((sessions, _)) = state.users.get_mut(&user) {
                    sessions.retain(|s| s.actor.get_id() != actor);
                    if sessions.is_empty() {
                        state.users.remove(&user);
                        let _ = state.stores.ephemeral.set_last_seen(&user, now_ms()).await;
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
                let now = now_ms();
                let mut users: Vec<UserStatus> = state
                    .users
                    .keys()
                    .map(|u| UserStatus {
                        user: u.clone(),
                        online: true,
                        last_seen: Some(now),
                    })
                    .collect();
                users.sort_by(|a, b| a.user.cmp(&b.user));
                let _ = reply.send(users);
            }
            PresenceMsg::Status { users, reply } => {
                let offline: Vec<String> = users
                    .iter()
                    .filter(|u| !state.users.contains_key(*u))
                    .cloned()
                    .collect();
                let seen = match state.stores.ephemeral.last_seen(&offline).await {
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
                        let online = state.users.contains_key(&u);
                        let last_seen = if online {
                            Some(now)
                        } else {
                            seen.get(&u).copied()
                        };
                        UserStatus {
                            user: u,
                            online,
                            last_seen,
                        }
                    })
                    .collect();
                let _ = reply.send(statuses);
            }
            PresenceMsg::Counts { reply } => {
                let sessions = state.users.values().map(|(s, _)| s.len()).sum();
                let _ = reply.send((state.users.len(), sessions));
            }
        }
        Ok(())
    }
}

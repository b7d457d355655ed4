//! The Room actor: one per active room. It checks membership, de-duplicates
//! `client_id`s, assigns `seq`, appends to the log (one batch in flight at a
//! time, the rest queue behind it: group commit), and only then acks the
//! sender and fans out to its subscribed sessions. History is written behind.

mod admin;
mod commit;
mod handoff;
mod life;
mod membership;
mod persistence;
mod state;
mod subscriptions;
pub mod supervisor;

use crate::store::events::DomainEvent;
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};
use tokio_tungstenite::tungstenite::Utf8Bytes;

use crate::cluster::router::RouterMsg;
use crate::frames::{ChatError, ChatMessage, HistoryQuery, MessageEvent, ServerFrame};
use crate::limits::{now_ms, Limits};
use crate::outbox::{Marks, Outbox};
use crate::presence::PresenceMsg;
use crate::session::{SessionHandle, SessionMsg};
use crate::store::{select_page, Checkpoint, LogPosition, LogRecord, StoreError, Stores};

pub use admin::{ManageAction, ManageAnswer, MemberEntry, MAX_TOPIC};
pub use life::{MessageQuery, PostRequest, Posted, QueryAnswer};
pub use state::RoomKind;
use state::{Cached, Leaving, PendingSend, RoomState, SubState, Subscriber};

/// The room every user is in: `broadcast` frames go there.
pub const BROADCAST_ROOM: &str = "!broadcast";

/// The DM room of two users: `dm:<a>:<b>`, usernames sorted.
pub fn dm_room(a: &str, b: &str) -> String {
    if a <= b {
        format!("dm:{a}:{b}")
    } else {
        format!("dm:{b}:{a}")
    }
}

/// The two members of a canonical DM room name.
pub fn dm_members(name: &str) -> Option<(&str, &str)> {
    let rest = name.strip_prefix("dm:")?;
    let (a, b) = rest.split_once(':')?;
    let ok = crate::limits::check_username(a).is_ok()
        && crate::limits::check_username(b).is_ok()
        && a < b;
    ok.then_some((a, b))
}

/// Tuning of rooms: how often they checkpoint, how much they cache.
#[derive(Debug, Clone)]
pub struct RoomTuning {
    pub checkpoint_every: u64,
    pub checkpoint_interval: Duration,
    /// Messages kept in memory for history and resume.
    pub recent: usize,
    /// Largest batch appended to the log at once.
    pub max_batch: usize,
    /// A room with no subscribers stops after this long.
    pub idle_stop: Duration,
    /// Room starts (restores) that run at once on a node.
    pub restore_concurrency: usize,
}

impl Default for RoomTuning {
    fn default() -> Self {
        Self {
            checkpoint_every: 100,
            checkpoint_interval: Duration::from_secs(1),
            recent: 256,
            max_batch: 512,
            idle_stop: Duration::from_secs(300),
            restore_concurrency: 16,
        }
    }
}

/// What every room of a node shares.
#[derive(Clone)]
pub struct RoomContext {
    pub node: String,
    pub stores: Stores,
    pub limits: Limits,
    pub tuning: RoomTuning,
    pub admins: Arc<Vec<String>>,
    pub presence: ActorRef<PresenceMsg>,
    /// The node's router: tells other nodes when a user joins a room here.
    pub router: Option<ActorRef<RouterMsg>>,
}

/// How to create a room that does not exist yet.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct CreateSpec {
    pub private: bool,
    pub creator: String,
    pub members: Vec<String>,
}

pub struct RoomArgs {
    pub name: String,
    pub ctx: RoomContext,
    pub create: Option<CreateSpec>,
    /// Restarted after a crash: attached sessions are told to resend what
    /// was not acked.
    pub restarted: bool,
}

/// A summary for REST listings.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize, utoipa::ToSchema)]
pub struct RoomInfo {
    pub name: String,
    pub private: bool,
    pub members: usize,
    pub last_seq: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub topic: Option<String>,
    /// The caller's role in the room (absent in DMs and the broadcast room).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub role: Option<crate::roles::Role>,
    /// For a listing of the user's rooms: messages after `last_read_seq`
    /// that are not theirs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unread: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_read_seq: Option<u64>,
}

/// A message (or, with `event`, a change to one) to post.
pub struct SendRequest {
    pub user: String,
    pub client_id: String,
    pub body: String,
    pub reply_to: Option<u64>,
    pub attachments: Vec<String>,
    pub event: Option<MessageEvent>,
    /// The sending session (its node's router finds it by this id).
    pub session_id: u64,
    /// Where the ack or the error goes.
    pub outbox: Outbox,
}

pub enum RoomMsg {
    /// A session of a member attaches; a pending one receives nothing until `Activate`.
    Subscribe {
        session: SessionHandle,
        pending: bool,
    },
    /// Replays what the session missed after `after` (default: since it
    /// subscribed, or since its last replay), in order, then delivers live.
    /// With `hold`, a pending subscription stays pending after the replay (a
    /// resume: live traffic only after `resumed`; the next `Activate`
    /// delivers what came meanwhile). Replies with the last seq sent.
    Activate {
        session_id: u64,
        after: Option<u64>,
        hold: bool,
        reply: RpcReplyPort<u64>,
    },
    Unsubscribe {
        session_id: u64,
    },
    Join {
        user: String,
        /// The local session that asked (it is live: it sent a frame), which
        /// is subscribed live at once; the user's other sessions pending.
        session: Option<u64>,
        reply: RpcReplyPort<Result<(), ChatError>>,
    },
    Leave {
        user: String,
        reply: RpcReplyPort<Result<(), ChatError>>,
    },
    Invite {
        by: String,
        user: String,
        reply: RpcReplyPort<Result<(), ChatError>>,
    },
    Send(SendRequest),
    /// A send or an event from REST: answered with its ack.
    Post {
        request: PostRequest,
        reply: RpcReplyPort<Result<Posted, ChatError>>,
    },
    /// A question about messages (views, versions, pins, threads, unread).
    Query {
        user: String,
        query: MessageQuery,
        reply: RpcReplyPort<Result<QueryAnswer, ChatError>>,
    },
    Typing {
        user: String,
        active: bool,
        session_id: u64,
        outbox: Outbox,
    },
    Read {
        user: String,
        seq: u64,
        session_id: u64,
        outbox: Outbox,
    },
    History {
        user: String,
        query: HistoryQuery,
        limit: usize,
        reply: RpcReplyPort<Result<Vec<ChatMessage>, ChatError>>,
    },
    /// Members and how far each has read.
    Members {
        user: String,
        reply: RpcReplyPort<Result<Vec<(String, u64)>, ChatError>>,
    },
    Info {
        user: String,
        reply: RpcReplyPort<Result<RoomInfo, ChatError>>,
    },
    /// Roles, kicks, topic and deletion (see [`ManageAction`]).
    Manage {
        user: String,
        action: ManageAction,
        reply: RpcReplyPort<Result<ManageAnswer, ChatError>>,
    },
    PresenceChanged {
        user: String,
        online: bool,
        last_seen: Option<i64>,
    },
    /// A summary of the room for the admin endpoints (with member and
    /// subscriber lists when `detail`).
    Inspect {
        detail: bool,
        reply: crate::inspect::InspectReply,
    },
    /// Writes history and the checkpoint, then stops.
    Shutdown,
    /// The room now belongs to another node: finish the append in flight,
    /// checkpoint, release the lease, tell the subscribers where to go, stop.
    Handoff,
    // ---- internal ----
    Appended {
        batch: Vec<PendingSend>,
        result: Result<Vec<LogPosition>, StoreError>,
    },
    /// The log read after a failed append.
    Reconciled(Result<Vec<(LogPosition, LogRecord)>, StoreError>),
    HistoryWritten {
        up_to: u64,
        result: Result<(), StoreError>,
    },
    ReplayLoaded {
        session_id: u64,
        after: u64,
        hold: bool,
        messages: Result<Vec<ChatMessage>, StoreError>,
        reply: RpcReplyPort<u64>,
    },
    /// A read of history is back.
    DbRead(life::DbDone),
    Tick,
    #[cfg(feature = "test-hooks")]
    Panic,
}

pub struct Room;

/// A subscription's state once it was sent everything through `last_seq`:
/// live, or still pending when the replay was asked to `hold` (the next
/// activation then starts after `last_seq`).
fn after_replay(live: bool, hold: bool, last_seq: u64) -> SubState {
    if hold && !live {
        SubState::Pending { from_seq: last_seq }
    } else {
        SubState::Live { from_seq: last_seq }
    }
}

/// The answer to a send the room can no longer take.
fn moving() -> ChatError {
    ChatError::unavailable("the room is moving to another node; resend (same client_id)")
}

/// Answers a message that will never reach its room (it stopped, or this
/// node does not own it): callers waiting on a reply see it dropped, a
/// sender gets an `unavailable` error for its `client_id`.
pub fn refuse(msg: RoomMsg, error: &ChatError) {
    match msg {
        RoomMsg::Send(request) => {
            request
                .outbox
                .push_frame(&ServerFrame::error(error, Some(request.client_id)));
        }
        RoomMsg::Join { reply, .. }
        | RoomMsg::Leave { reply, .. }
        | RoomMsg::Invite { reply, .. } => {
            let _ = reply.send(Err(error.clone()));
        }
        RoomMsg::History { reply, .. } => {
            let _ = reply.send(Err(error.clone()));
        }
        RoomMsg::Manage { reply, .. } => {
            let _ = reply.send(Err(error.clone()));
        }
        RoomMsg::Members { reply, .. } => {
            let _ = reply.send(Err(error.clone()));
        }
        RoomMsg::Info { reply, .. } => {
            let _ = reply.send(Err(error.clone()));
        }
        RoomMsg::Post { reply, .. } => {
            let _ = reply.send(Err(error.clone()));
        }
        RoomMsg::Query { reply, .. } => {
            let _ = reply.send(Err(error.clone()));
        }
        // Dropping the reply port tells the caller the room is gone.
        _ => {}
    }
}

impl Actor for Room {
    type Msg = RoomMsg;
    type State = RoomState;
    type Arguments = RoomArgs;

    async fn pre_start(
        &self,
        myself: ActorRef<RoomMsg>,
        args: RoomArgs,
    ) -> Result<RoomState, ActorProcessingErr> {
        let restarted = args.restarted;
        let mut state = state::restore(args).await?;
        // A room that moved here (handoff, failover) is not re-attached: its
        // sessions follow it themselves and replay from where they were, and
        // attaching them live first would deliver newer messages before that
        // replay.
        if restarted || state.created {
            state.attach_member_sessions(&myself, restarted).await;
        }
        if restarted {
            if let Some(router) = &state.ctx.router {
                let _ = router.cast(RouterMsg::RoomRestarted {
                    room: state.name.clone(),
                });
            }
        }
        myself.send_interval(state.ctx.tuning.checkpoint_interval, || RoomMsg::Tick);
        Ok(state)
    }

    async fn post_start(
        &self,
        myself: ActorRef<RoomMsg>,
        state: &mut RoomState,
    ) -> Result<(), ActorProcessingErr> {
        // Records replayed from the log may be missing from history.
        state.write_history(&myself);
        Ok(())
    }

    async fn post_stop(
        &self,
        _myself: ActorRef<RoomMsg>,
        state: &mut RoomState,
    ) -> Result<(), ActorProcessingErr> {
        state.flush_for_stop().await;
        if let Some(leaving) = state.leaving {
            state.moved_away(leaving).await;
        }
        Ok(())
    }

    async fn handle(
        &self,
        myself: ActorRef<RoomMsg>,
        msg: RoomMsg,
        state: &mut RoomState,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            RoomMsg::Subscribe { session, pending } => state.subscribe(session, pending),
            RoomMsg::Activate {
                session_id,
                after,
                hold,
                reply,
            } => state.activate(&myself, session_id, after, hold, reply),
            RoomMsg::Unsubscribe { session_id } => {
                state.subscribers.remove(&session_id);
                state.idle_since = state.subscribers.is_empty().then(Instant::now);
            }
            RoomMsg::Join {
                user,
                session,
                reply,
            } => {
                let _ = reply.send(state.join(&myself, &user, session).await);
            }
            RoomMsg::Leave { user, reply } => {
                let _ = reply.send(state.leave(&user).await);
            }
            RoomMsg::Invite { by, user, reply } => {
                let _ = reply.send(state.invite(&myself, &by, &user).await);
            }
            RoomMsg::Send(request) => state.accept_send(&myself, request),
            RoomMsg::Post { request, reply } => state.post(&myself, request, reply),
            RoomMsg::Query { user, query, reply } => state.query(&myself, user, query, reply),
            RoomMsg::DbRead(done) => state.db_read(&myself, done),
            RoomMsg::Appended { batch, result } => state.appended(&myself, batch, result),
            RoomMsg::Reconciled(result) => state.reconciled(&myself, result),
            RoomMsg::HistoryWritten { up_to, result } => {
                state.history_written(&myself, up_to, result)
            }
            RoomMsg::Typing {
                user,
                active,
                outbox,
                ..
            } => state.typing(&user, active, &outbox),
            RoomMsg::Read {
                user, seq, outbox, ..
            } => state.read(&user, seq, &outbox),
            RoomMsg::Handoff => state.leave_node(&myself, Leaving::Handoff),
            RoomMsg::History {
                user,
                query,
                limit,
                reply,
            } => state.history(&user, query, limit, reply),
            RoomMsg::Members { user, reply } => {
                let answer = state.check_reader(&user).map(|()| {
                    state
                        .members
                        .iter()
                        .map(|(u, read)| (u.clone(), *read))
                        .collect()
                });
                let _ = reply.send(answer);
            }
            RoomMsg::Info { user, reply } => {
                let answer = state.check_reader(&user).map(|()| {
                    let mut info = state.info();
                    info.last_read_seq = state.members.get(&user).copied();
                    if state.kind == RoomKind::Group {
                        info.role = state.role_of(&user);
                    }
                    info
                });
                let _ = reply.send(answer);
            }
            RoomMsg::Manage {
                user,
                action,
                reply,
            } => {
                let _ = reply.send(state.manage(&myself, &user, action).await);
            }
            RoomMsg::PresenceChanged {
                user,
                online,
                last_seen,
            } => {
                for sub in state.subscribers.values() {
                    if sub.session.user != user {
                        let _ = sub.session.actor.cast(SessionMsg::Presence {
                            user: user.clone(),
                            online,
                            last_seen,
                        });
                    }
                }
            }
            RoomMsg::ReplayLoaded {
                session_id,
                after,
                hold,
                messages,
                reply,
            } => state.replay_loaded(&myself, session_id, after, hold, messages, reply),
            RoomMsg::Tick => {
                // Retries a failed history write; the log still holds those messages.
                state.write_history(&myself);
                state.maybe_checkpoint();
                let idle = state
                    .idle_since
                    .is_some_and(|since| since.elapsed() >= state.ctx.tuning.idle_stop);
                if state.needs_reconcile && !state.reconciling {
                    state.reconcile(&myself);
                }
                let busy = state.appending
                    || state.reconciling
                    || !state.pending.is_empty()
                    || state.db_reading
                    || !state.db_jobs.is_empty();
                if idle && !busy {
                    myself.stop(Some("idle".into()));
                }
            }
            RoomMsg::Inspect { detail, reply } => {
                let _ = reply.send(state.inspect(detail));
            }
            RoomMsg::Shutdown => myself.stop(Some("shutdown".into())),
            #[cfg(feature = "test-hooks")]
            RoomMsg::Panic => panic!("test hook: room {} panics", state.name),
        }
        Ok(())
    }
}

impl RoomState {
    /// What an operator sees of this room (`/admin/actors`).
    fn inspect(&self, detail: bool) -> serde_json::Value {
        let mut state = serde_json::json!({
            "room": self.name,
            "owner": self.ctx.node,
            "private": self.private,
            "members": self.members.len(),
            "subscribers": self.subscribers.len(),
            "last_seq": self.last_seq,
            "epoch": self.epoch,
            "history_seq": self.history_seq,
            "checkpoint_seq": self.checkpoint_seq,
            "checkpoint_age_s": self.checkpoint_at.elapsed().as_secs_f64(),
            "queued_sends": self.pending.len() + self.failed_batch.len(),
            "appending": self.appending,
            "leaving": self.leaving.map(|l| format!("{l:?}").to_lowercase()),
        });
        if detail {
            let mut members: Vec<_> = self.members.iter().collect();
            members.sort();
            state["member_list"] = members
                .into_iter()
                .map(|(user, read)| serde_json::json!({ "user": user, "read_seq": read }))
                .collect();
            let mut subscribers: Vec<_> = self.subscribers.values().collect();
            subscribers.sort_by_key(|s| s.session.id);
            state["subscriber_list"] = subscribers
                .into_iter()
                .map(|s| {
                    let (live, from_seq) = match s.state {
                        SubState::Pending { from_seq } => (false, from_seq),
                        SubState::Live { from_seq } => (true, from_seq),
                    };
                    let node = match s.session.outbox.remote_session() {
                        Some(remote) => remote.link.peer.to_string(),
                        None => self.ctx.node.clone(),
                    };
                    serde_json::json!({
                        "session": s.session.id.to_string(),
                        "user": s.session.user,
                        "node": node,
                        "live": live,
                        "from_seq": from_seq,
                    })
                })
                .collect();
        }
        state
    }
}

#[cfg(test)]
mod tests;

// Local-only: never sent to another node.
impl ractor::Message for RoomMsg {}

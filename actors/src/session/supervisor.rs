//! The SessionSupervisor starts a Session per authenticated connection. A
//! Session that crashes has its connection closed with 1011 so the client
//! resumes (on this node or any other) without losing anything.
//!
//! A Session's `pre_start` registers its resume token, joins presence and
//! subscribes to every room of its user (which may wait for rooms to
//! restore). The supervisor never waits for that: each start runs in a task
//! that answers the connection itself and then reports back with
//! [`SessionSupervisorMsg::Started`], so a crowd reconnecting after a crash
//! starts its sessions side by side instead of one after the other.

use std::collections::HashMap;

use ractor::{Actor, ActorId, ActorProcessingErr, ActorRef, RpcReplyPort, SupervisionEvent};

use super::{Session, SessionArgs, SessionContext, SessionMsg};
use crate::frames::{ChatError, ErrorCode};
use crate::outbox::Outbox;
use crate::presence::PresenceMsg;

pub enum SessionSupervisorMsg {
    Start {
        user: String,
        user_id: i64,
        login_token: Option<String>,
        outbox: Outbox,
        resume: Option<super::ResumeRequest>,
        /// Go live at once (see `SessionArgs::live`).
        live: bool,
        /// Sessions `user` may have on this node (0 = no cap); over it the
        /// start is refused with `rate_limited`.
        max_per_user: usize,
        reply: RpcReplyPort<Result<ActorRef<SessionMsg>, ChatError>>,
    },
    /// A start finished in its task (the connection already has its answer).
    Started {
        user: String,
        outbox: Outbox,
        session: Option<ActorRef<SessionMsg>>,
    },
    /// Closes every connection with 1012 (service restart) and stops the sessions.
    Shutdown { reply: RpcReplyPort<()> },
    /// The sessions it supervises (the admin endpoints).
    Children {
        reply: RpcReplyPort<crate::inspect::SessionChildren>,
    },
}

pub struct SessionSupervisor;

pub struct SessionSupervisorState {
    ctx: SessionContext,
    sessions: HashMap<ActorId, (String, Outbox, ActorRef<SessionMsg>)>,
    /// How many of `sessions` each user has (the per-user cap).
    per_user: HashMap<String, usize>,
    stopping: bool,
    /// Sessions that crashed since this node started (their clients resumed).
    crashed: u64,
}

impl Actor for SessionSupervisor {
    type Msg = SessionSupervisorMsg;
    type State = SessionSupervisorState;
    type Arguments = SessionContext;

    async fn pre_start(
        &self,
        _myself: ActorRef<SessionSupervisorMsg>,
        ctx: SessionContext,
    ) -> Result<SessionSupervisorState, ActorProcessingErr> {
        Ok(SessionSupervisorState {
            ctx,
            sessions: HashMap::new(),
            per_user: HashMap::new(),
            stopping: false,
            crashed: 0,
        })
    }

    async fn handle(
        &self,
        myself: ActorRef<SessionSupervisorMsg>,
        msg: SessionSupervisorMsg,
        state: &mut SessionSupervisorState,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            SessionSupervisorMsg::Start {
                user,
                user_id,
                login_token,
                outbox,
                resume,
                live,
                max_per_user,
                reply,
            } => {
                if state.stopping {
                    let _ = reply.send(Err(ChatError::unavailable("the node is shutting down")));
                    return Ok(());
                }
                let open = state.per_user.get(&user).copied().unwrap_or(0);
                if max_per_user > 0 && open >= max_per_user {
                    crate::metrics::refused(crate::metrics::Refusal::UserSessions);
                    tracing::info!(%user, open, "session refused: too many sessions of this user");
                    let _ = reply.send(Err(ChatError::new(
                        ErrorCode::RateLimited,
                        format!("{user} has {open} sessions on this node, the most allowed; close one first"),
                    )));
                    return Ok(());
                }
                // Counted now: a user's starts running side by side stay under the cap.
                *state.per_user.entry(user.clone()).or_default() += 1;
                let args = SessionArgs {
                    user: user.clone(),
                    user_id,
                    login_token,
                    outbox: outbox.clone(),
                    resume,
                    live,
                    ctx: state.ctx.clone(),
                };
                tokio::spawn(async move {
                    let started = Actor::spawn_linked(None, Session, args, myself.get_cell())
                        .await
                        .map(|(session, _)| session);
                    let (answer, session) = match started {
                        Ok(session) => (Ok(session.clone()), Some(session)),
                        Err(e) => (
                            Err(ChatError::unavailable(format!(
                                "session failed to start: {e}"
                            ))),
                            None,
                        ),
                    };
                    // The connection gave up waiting (its call timed out, or
                    // it closed): nobody will ever drive this session, so it
                    // must not live on and write into that connection.
                    if reply.send(answer).is_err() {
                        if let Some(orphan) = &session {
                            tracing::debug!(%user, "session started after its connection gave up; stopped");
                            orphan.stop(Some("its connection gave up waiting".into()));
                        }
                    }
                    let _ = myself.cast(SessionSupervisorMsg::Started {
                        user,
                        outbox,
                        session,
                    });
                });
            }
            SessionSupervisorMsg::Started {
                user,
                outbox,
                session,
            } => match session {
                Some(session) if session.get_status() != ractor::ActorStatus::Stopped => {
                    if state.stopping {
                        // Shutdown began while it started: stop it like the others.
                        state.release(&user);
                        outbox.close(1012, "service restart");
                        session.stop(None);
                    } else {
                        state
                            .sessions
                            .insert(session.get_id(), (user, outbox, session));
                    }
                }
                // Failed to start, or already gone (its end came first).
                _ => state.release(&user),
            },
            SessionSupervisorMsg::Shutdown { reply } => {
                state.stopping = true;
                state.per_user.clear();
                for (_, (_, outbox, session)) in state.sessions.drain() {
                    outbox.close(1012, "service restart");
                    let _ = session.stop_and_wait(None, Some(crate::CALL_TIMEOUT)).await;
                }
                let _ = reply.send(());
            }
            SessionSupervisorMsg::Children { reply } => {
                let sessions = state
                    .sessions
                    .values()
                    .map(|(user, _, session)| (user.clone(), session.clone()))
                    .collect();
                let _ = reply.send(crate::inspect::SessionChildren {
                    sessions,
                    state: serde_json::json!({ "crashed": state.crashed }),
                });
            }
        }
        crate::metrics::SESSIONS.set(state.sessions.len() as i64);
        Ok(())
    }

    async fn handle_supervisor_evt(
        &self,
        _myself: ActorRef<SessionSupervisorMsg>,
        event: SupervisionEvent,
        state: &mut SessionSupervisorState,
    ) -> Result<(), ActorProcessingErr> {
        match event {
            SupervisionEvent::ActorTerminated(cell, _, _) => {
                state.remove(cell.get_id());
            }
            SupervisionEvent::ActorFailed(cell, error) => {
                if let Some((user, outbox, session)) = state.remove(cell.get_id()) {
                    state.crashed += 1;
                    crate::metrics::SESSION_RESTARTS.inc();
                    tracing::error!(%user, %error, "session crashed; asking the client to resume");
                    outbox.close(1011, "session failed; resume");
                    // Its post_stop did not run: take it out of presence here.
                    let _ = state.ctx.presence.cast(PresenceMsg::Forget {
                        user,
                        actor: session.get_id(),
                    });
                }
            }
            _ => {}
        }
        crate::metrics::SESSIONS.set(state.sessions.len() as i64);
        Ok(())
    }
}

impl SessionSupervisorState {
    fn remove(&mut self, id: ActorId) -> Option<(String, Outbox, ActorRef<SessionMsg>)> {
        let entry = self.sessions.remove(&id)?;
        self.release(&entry.0);
        Some(entry)
    }

    /// One session of `user` fewer against the per-user cap.
    fn release(&mut self, user: &str) {
        if let Some(n) = self.per_user.get_mut(user) {
            *n -= 1;
            if *n == 0 {
                self.per_user.remove(user);
            }
        }
    }
}

// Local-only: never sent to another node.
impl ractor::Message for SessionSupervisorMsg {}

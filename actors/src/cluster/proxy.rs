//! The RoomProxy: stands in for a room owned by another node. Sessions here
//! talk to it exactly as to a local room; it forwards every request to the
//! owner's router (casts stay casts, calls wait with a timeout off the actor)
//! and tells the local router which subscriptions to expect frames for.
//! It serves one owner: when the owner changes, the room supervisor stops it.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};

use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};

use super::router::{call_peer, RouterMsg};
use super::wire::{self, RoomCall, RoomCast, WireCall, WireCast, WireReply};
use crate::frames::{ChatError, ServerFrame};
use crate::room::{CreateSpec, RoomMsg};

static NEXT_GEN: AtomicU64 = AtomicU64::new(1);

pub struct RoomProxy;

pub struct ProxyArgs {
    pub room: String,
    pub me: String,
    pub owner: String,
    pub owner_router: ActorRef<RouterMsg>,
    pub local_router: ActorRef<RouterMsg>,
}

pub struct ProxyState {
    args: ProxyArgs,
    /// Subscription generation per local session.
    gens: HashMap<u64, u64>,
}

/// Asks the owner to start (and create) `room`.
pub async fn open(
    owner_router: &ActorRef<RouterMsg>,
    me: &str,
    room: &str,
    create: Option<CreateSpec>,
) -> Result<(), ChatError> {
    let call = WireCall::Room {
        room: room.to_string(),
        from: me.to_string(),
        req: RoomCall::Open { create },
    };
    match call_peer(owner_router, &call).await? {
        WireReply::Done(result) => result,
        WireReply::Failed(e) => Err(e),
        _ => Err(ChatError::unavailable(
            "unexpected answer from another node",
        )),
    }
}

impl ProxyState {
    fn cast(&self, req: RoomCast) -> bool {
        let cast = WireCast::Room {
            room: self.args.room.clone(),
            from: self.args.me.clone(),
            req,
        };
        self.args
            .owner_router
            .cast(RouterMsg::Cast(wire::encode_cast(&cast)))
            .is_ok()
    }

    /// Calls the owner off the actor and answers `reply` with `map`'s result.
    fn call<T: Send + 'static>(
        &self,
        req: RoomCall,
        reply: RpcReplyPort<T>,
        map: impl FnOnce(WireReply) -> Option<T> + Send + 'static,
        after: impl FnOnce(&T) + Send + 'static,
    ) {
        let call = WireCall::Room {
            room: self.args.room.clone(),
            from: self.args.me.clone(),
            req,
        };
        let router = self.args.owner_router.clone();
        tokio::spawn(async move {
            // A failed call drops `reply`: the caller sees `unavailable`.
            if let Ok(answer) = call_peer(&router, &call).await {
                if let Some(value) = map(answer) {
                    after(&value);
                    let _ = reply.send(value);
                }
            }
        });
    }
}

impl Actor for RoomProxy {
    type Msg = RoomMsg;
    type State = ProxyState;
    type Arguments = ProxyArgs;

    async fn pre_start(
        &self,
        _myself: ActorRef<RoomMsg>,
        args: ProxyArgs,
    ) -> Result<ProxyState, ActorProcessingErr> {
        Ok(ProxyState {
            args,
            gens: HashMap::new(),
        })
    }

    async fn handle(
        &self,
        myself: ActorRef<RoomMsg>,
        msg: RoomMsg,
        state: &mut ProxyState,
    ) -> Result<(), ActorProcessingErr> {
        let unreachable = || ChatError::unavailable("the room's node is unreachable, retry");
        match msg {
            RoomMsg::Subscribe { session, pending } => {
                let gen = NEXT_GEN.fetch_add(1, Ordering::Relaxed);
                state.gens.insert(session.id, gen);
                // The router learns the generation before any frame of it can arrive.
                let _ = state.args.local_router.cast(RouterMsg::Track {
                    room: state.args.room.clone(),
                    session: session.id,
                    gen,
                    owner: state.args.owner.clone(),
                });
                state.cast(RoomCast::Subscribe {
                    session: session.id,
                    user: session.user.clone(),
                    gen,
                    pending,
                });
            }
            RoomMsg::Unsubscribe { session_id } => {
                if let Some(gen) = state.gens.remove(&session_id) {
                    let _ = state.args.local_router.cast(RouterMsg::Untrack {
                        room: state.args.room.clone(),
                        session: session_id,
                        gen,
                    });
                }
                state.cast(RoomCast::Unsubscribe {
                    session: session_id,
                });
            }
            RoomMsg::Activate {
                session_id,
                after,
                hold,
                reply,
            } => {
                let gen = state.gens.get(&session_id).copied().unwrap_or(0);
                let local = state.args.local_router.clone();
                let owner = state.args.owner_router.clone();
                let room = state.args.room.clone();
                let barrier = NEXT_GEN.fetch_add(1, Ordering::Relaxed);
                let me = state.args.me.clone();
                tokio::spawn(async move {
                    // An activation may repeat (its answer was lost, or a move
                    // came after a retry had already re-subscribed): what an
                    // earlier subscription delivered is not replayed twice.
                    // The router had this subscription's `Track` before this
                    // question (same sender, in order), so it drops frames of
                    // older ones from now on and its answer is final.
                    let delivered = local
                        .call(
                            |r| RouterMsg::Delivered {
                                room: room.clone(),
                                session: session_id,
                                reply: r,
                            },
                            Some(super::router::REMOTE_TIMEOUT),
                        )
                        .await;
                    let delivered = match delivered {
                        Ok(ractor::rpc::CallResult::Success(d)) => d,
                        _ => return, // the session sees `unavailable` and retries
                    };
                    // `None` (no position: where the subscription began) yields to a known seq.
                    let after = after.max(delivered);
                    let call = WireCall::Room {
                        room: room.clone(),
                        from: me,
                        req: RoomCall::Activate {
                            session: session_id,
                            after,
                            barrier,
                            hold,
                        },
                    };
                    let Ok(WireReply::Activated(seq)) = call_peer(&owner, &call).await else {
                        return; // `reply` dropped: the session sees `unavailable`
                    };
                    // The replay travels down the link, the answer does not:
                    // wait for the barrier behind the replay before answering,
                    // so `resumed` follows the replayed messages.
                    let arrived = local
                        .call(
                            |r| RouterMsg::AwaitBarrier {
                                id: barrier,
                                room: room.clone(),
                                session: session_id,
                                gen,
                                reply: r,
                            },
                            Some(super::router::REMOTE_TIMEOUT),
                        )
                        .await;
                    if !matches!(arrived, Ok(ractor::rpc::CallResult::Success(true))) {
                        // The replay did not all arrive (the subscription moved
                        // meanwhile): the activation failed; the session retries.
                        return;
                    }
                    let _ = local.cast(RouterMsg::Position {
                        room,
                        session: session_id,
                        gen,
                        seq,
                    });
                    let _ = reply.send(seq);
                });
            }
            RoomMsg::Send(request) => {
                let gen = state.gens.get(&request.session_id).copied().unwrap_or(0);
                let outbox = request.outbox.clone();
                let client_id = request.client_id.clone();
                let _ = state.args.local_router.cast(RouterMsg::InFlight {
                    room: state.args.room.clone(),
                    session: request.session_id,
                    client_id: client_id.clone(),
                    owner: state.args.owner.clone(),
                });
                let plain = request.reply_to.is_none()
                    && request.attachments.is_empty()
                    && request.event.is_none();
                // Plain sends keep the form every version reads.
                let sent = if plain {
                    state.cast(RoomCast::Send {
                        session: request.session_id,
                        gen,
                        user: request.user,
                        client_id: request.client_id,
                        body: request.body,
                    })
                } else {
                    state.cast(RoomCast::Post {
                        session: request.session_id,
                        gen,
                        user: request.user,
                        client_id: request.client_id,
                        body: request.body,
                        reply_to: request.reply_to,
                        attachments: request.attachments,
                        event: request.event,
                    })
                };
                if !sent {
                    outbox.push_frame(&ServerFrame::error(&unreachable(), Some(client_id)));
                }
            }
            RoomMsg::Typing {
                user,
                active,
                session_id,
                ..
            } => {
                state.cast(RoomCast::Typing {
                    session: session_id,
                    gen: 0,
                    user,
                    active,
                });
            }
            RoomMsg::Read {
                user,
                seq,
                session_id,
                ..
            } => {
                state.cast(RoomCast::Read {
                    session: session_id,
                    gen: 0,
                    user,
                    seq,
                });
            }
            RoomMsg::PresenceChanged {
                user,
                online,
                last_seen,
            } => {
                state.cast(RoomCast::PresenceChanged {
                    user,
                    online,
                    last_seen,
                });
            }
            // The owner subscribes this node's sessions through its Router.
            RoomMsg::Join { user, reply, .. } => {
                state.call(RoomCall::Join { user }, reply, done, |_| {})
            }
            RoomMsg::Leave { user, reply } => {
                state.call(RoomCall::Leave { user }, reply, done, |_| {})
            }
            RoomMsg::Invite { by, user, reply } => {
                state.call(RoomCall::Invite { by, user }, reply, done, |_| {})
            }
            RoomMsg::History {
                user,
                query,
                limit,
                reply,
            } => state.call(
                RoomCall::History { user, query, limit },
                reply,
                |a| match a {
                    WireReply::History(r) => Some(r),
                    WireReply::Failed(e) => Some(Err(e)),
                    _ => None,
                },
                |_| {},
            ),
            RoomMsg::Members { user, reply } => state.call(
                RoomCall::Members { user },
                reply,
                |a| match a {
                    WireReply::Members(r) => Some(r),
                    WireReply::Failed(e) => Some(Err(e)),
                    _ => None,
                },
                |_| {},
            ),
            RoomMsg::Info { user, reply } => state.call(
                RoomCall::Info { user },
                reply,
                |a| match a {
                    WireReply::Info(r) => Some(r),
                    WireReply::Failed(e) => Some(Err(e)),
                    _ => None,
                },
                |_| {},
            ),
            RoomMsg::Post { request, reply } => state.call(
                RoomCall::Post { request },
                reply,
                |a| match a {
                    WireReply::Posted(r) => Some(r),
                    WireReply::Failed(e) => Some(Err(e)),
                    _ => None,
                },
                |_| {},
            ),
            RoomMsg::Query { user, query, reply } => state.call(
                RoomCall::Query { user, query },
                reply,
                |a| match a {
                    WireReply::Queried(r) => Some(r),
                    WireReply::Failed(e) => Some(Err(e)),
                    _ => None,
                },
                |_| {},
            ),
            RoomMsg::Manage {
                user,
                action,
                reply,
            } => state.call(
                RoomCall::Manage { user, action },
                reply,
                |a| match a {
                    WireReply::Managed(r) => Some(r),
                    WireReply::Failed(e) => Some(Err(e)),
                    _ => None,
                },
                |_| {},
            ),
            RoomMsg::Inspect { reply, .. } => {
                let _ = reply.send(serde_json::json!({
                    "room": state.args.room,
                    "owner": state.args.owner,
                    "local_sessions": state.gens.len(),
                }));
            }
            RoomMsg::Shutdown | RoomMsg::Handoff => myself.stop(None),
            // The rest is a local room's own bookkeeping.
            _ => {}
        }
        Ok(())
    }
}

fn done(answer: WireReply) -> Option<Result<(), ChatError>> {
    match answer {
        WireReply::Done(r) => Some(r),
        WireReply::Failed(e) => Some(Err(e)),
        _ => None,
    }
}

//! The room's side of messages that live: the views of its messages, their
//! checks before an event is appended, and the queries over them.
//!
//! The room keeps the views of its recent messages in memory (every message
//! not yet in history among them) and reads older ones from history. A read
//! of history runs while the room's history writes wait (one at a time,
//! [`RoomState::db_job`]): the database then holds exactly the records up to
//! `history_seq`, and the room completes what it read with the records not
//! yet written (`unflushed`), so a loaded view is the current one.

use std::collections::BTreeSet;
use std::sync::Arc;

use futures_util::future::BoxFuture;
use ractor::{ActorRef, RpcReplyPort};
use serde::{Deserialize, Serialize};

use super::state::RoomState;
use super::RoomMsg;
use crate::frames::{ChatError, ChatMessage, ErrorCode, MessageEvent};
use crate::life::{Change, MessageView, Version};
use crate::outbox::{Outbound, Outbox};
use crate::store::History;

/// What the room does once a read of history is back (on the room's actor).
pub type DbDone = Box<dyn FnOnce(&mut RoomState, &ActorRef<RoomMsg>) + Send>;
/// A read of history: given the store and the room's name.
pub type DbJob = Box<dyn FnOnce(Arc<dyn History>, String) -> BoxFuture<'static, DbDone> + Send>;
/// What waits for views to be loaded.
type Then = Box<dyn FnOnce(&mut RoomState, &ActorRef<RoomMsg>, Result<(), ChatError>) + Send>;

/// A question about the room's messages (REST, and the `unread` of listings).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum MessageQuery {
    View {
        seq: u64,
    },
    Versions {
        seq: u64,
    },
    Pins,
    Thread {
        seq: u64,
        after: u64,
        limit: usize,
    },
    /// How many messages after the user's read seq are not theirs.
    Unread,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum QueryAnswer {
    View(MessageView),
    Versions(Vec<Version>),
    Views(Vec<MessageView>),
    Unread { unread: u64, last_read_seq: u64 },
}

/// What a REST call posts: a message or an event, like the frames.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PostRequest {
    pub user: String,
    pub client_id: String,
    pub body: String,
    pub reply_to: Option<u64>,
    pub attachments: Vec<String>,
    pub event: Option<MessageEvent>,
}

/// The ack of a post.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Posted {
    pub seq: u64,
    pub ts: i64,
}

fn no_message(seq: u64) -> ChatError {
    ChatError::not_found(format!("no message {seq}"))
}

/// The first answer a post's outbox receives: its ack or its error.
async fn first_answer(mut rx: crate::outbox::OutboxReceiver) -> Result<Posted, ChatError> {
    let gone = || ChatError::unavailable("the room stopped before answering; retry");
    let text = match rx.recv().await {
        Some(Outbound::Text(text)) => text,
        Some(Outbound::Batch(batch)) => batch.first().cloned().ok_or_else(gone)?,
        _ => return Err(gone()),
    };
    let value: serde_json::Value = serde_json::from_str(text.as_str()).map_err(|_| gone())?;
    match value["type"].as_str() {
        Some("ack") => Ok(Posted {
            seq: value["seq"].as_u64().unwrap_or(0),
            ts: value["ts"].as_i64().unwrap_or(0),
        }),
        Some("error") => {
            let code: ErrorCode =
                serde_json::from_value(value["code"].clone()).unwrap_or(ErrorCode::Unavailable);
            let message = value["message"].as_str().unwrap_or_default();
            Err(ChatError::new(code, message))
        }
        _ => Err(gone()),
    }
}

impl RoomState {
    /// May `user` change other members' messages (delete, pin)? The
    /// room's owner and admins, and the node's admins.
    pub(crate) fn is_owner(&self, user: &str) -> bool {
        self.role_of(user).is_some_and(|r| r.moderates()) || self.is_admin(user)
    }

    /// A post from REST: sent like a connection's, answered with its ack.
    pub(crate) fn post(
        &mut self,
        myself: &ActorRef<RoomMsg>,
        request: PostRequest,
        reply: RpcReplyPort<Result<Posted, ChatError>>,
    ) {
        let (outbox, rx) = Outbox::channel(4, 1 << 20);
        tokio::spawn(async move {
            let _ = reply.send(first_answer(rx).await);
        });
        self.accept_send(
            myself,
            super::SendRequest {
                user: request.user,
                client_id: request.client_id,
                body: request.body,
                reply_to: request.reply_to,
                attachments: request.attachments,
                event: request.event,
                session_id: 0,
                outbox,
            },
        );
    }

    /// Keeps the view of a committed record current (and creates it for a
    /// message); a deleted message's attachments go with it. The views are
    /// trimmed after the record is applied: the target's view may be an old
    /// one just read back from history for this very record's checks, and
    /// the oldest view is the first one trimmed.
    pub(crate) fn track_views(&mut self, message: &ChatMessage) {
        self.apply_to_views(message);
        self.trim_views();
    }

    fn apply_to_views(&mut self, message: &ChatMessage) {
        let target = match &message.event {
            Some(event) => Some(event.target()),
            None => {
                self.views.insert(message.seq, MessageView::of(message));
                message.reply_to
            }
        };
        let Some(view) = target.and_then(|seq| self.views.get_mut(&seq)) else {
            return;
        };
        if let Change::Deleted(ids) = view.apply(message) {
            if !ids.is_empty() {
                let attachments = self.ctx.stores.attachments.clone();
                let room = self.name.clone();
                tokio::spawn(async move {
                    if let Err(e) = attachments.delete(&ids, &room).await {
                        tracing::warn!(%room, error = %e, "attachments of a deleted message not deleted");
                    }
                });
            }
        }
    }

    /// Forgets the oldest views once there are many, only those history
    /// holds, and never one a queued change or reply still needs: the batch
    /// that takes it checks it against that view (`check_batch`), and a view
    /// loaded for an old message would otherwise be the first to go while
    /// the change waits for the append in flight.
    fn trim_views(&mut self) {
        let keep = (self.ctx.tuning.recent * 4).max(16);
        let Some(excess) = self.views.len().checked_sub(keep).filter(|n| *n > 0) else {
            return;
        };
        let needed: BTreeSet<u64> = self.pending.iter().filter_map(|p| p.target()).collect();
        let history_seq = self.history_seq;
        let doomed: Vec<u64> = self
            .views
            .keys()
            .copied()
            .take_while(|seq| *seq <= history_seq)
            .filter(|seq| !needed.contains(seq))
            .take(excess)
            .collect();
        for seq in doomed {
            self.views.remove(&seq);
        }
    }

    /// Runs `then` once the views of `seqs` (those that exist) are in memory.
    pub(crate) fn with_views(&mut self, myself: &ActorRef<RoomMsg>, seqs: Vec<u64>, then: Then) {
        let missing: Vec<u64> = seqs
            .into_iter()
            .filter(|s| *s >= 1 && *s <= self.last_seq && !self.views.contains_key(s))
            .collect::<BTreeSet<u64>>()
            .into_iter()
            .collect();
        if missing.is_empty() {
            then(self, myself, Ok(()));
            return;
        }
        self.db_job(
            myself,
            Box::new(move |history, room| {
                Box::pin(async move {
                    let loaded = history.views(&room, &missing).await;
                    Box::new(move |state: &mut RoomState, myself: &ActorRef<RoomMsg>| {
                        match loaded {
                            Ok(views) => {
                                for mut view in views {
                                    if state.views.contains_key(&view.seq) {
                                        continue;
                                    }
                                    // History holds the records up to history_seq;
                                    // the rest is applied here.
                                    for (m, _) in &state.unflushed {
                                        view.apply(m);
                                    }
                                    state.views.insert(view.seq, view);
                                }
                                then(state, myself, Ok(()));
                            }
                            Err(e) => {
                                then(state, myself, Err(ChatError::unavailable(e.to_string())))
                            }
                        }
                    }) as DbDone
                })
            }),
        );
    }

    /// Queues a read of history; it runs while no history write does.
    pub(crate) fn db_job(&mut self, myself: &ActorRef<RoomMsg>, job: DbJob) {
        self.db_jobs.push_back(job);
        self.next_db_job(myself);
    }

    pub(crate) fn next_db_job(&mut self, myself: &ActorRef<RoomMsg>) {
        if self.db_reading || self.history_writing {
            return;
        }
        let Some(job) = self.db_jobs.pop_front() else {
            return;
        };
        self.db_reading = true;
        let future = job(self.ctx.stores.history.clone(), self.name.clone());
        let myself = myself.clone();
        tokio::spawn(async move {
            let done = future.await;
            let _ = myself.cast(RoomMsg::DbRead(done));
        });
    }

    pub(crate) fn db_read(&mut self, myself: &ActorRef<RoomMsg>, done: DbDone) {
        self.db_reading = false;
        done(self, myself);
        // Writes and reads take turns.
        if self.unflushed.is_empty() {
            self.next_db_job(myself);
        } else {
            self.write_history(myself);
        }
    }

    /// Checks an event or a reply before it is queued for the log: its
    /// target exists and the user may act on it (checked again, binding,
    /// when the batch is formed).
    pub(crate) fn precheck(&self, request: &super::SendRequest) -> Option<Result<(), ChatError>> {
        let target = match (&request.event, request.reply_to) {
            (Some(event), _) => event.target(),
            (None, Some(seq)) => seq,
            (None, None) => return None,
        };
        if target == 0 || target > self.last_seq {
            return Some(Err(no_message(target)));
        }
        let view = self.views.get(&target)?;
        Some(self.check_on(view, request.event.as_ref(), &request.user))
    }

    /// Whether `user` may post `event` (or a reply, with None) on `view`.
    pub(crate) fn check_on(
        &self,
        view: &MessageView,
        event: Option<&MessageEvent>,
        user: &str,
    ) -> Result<(), ChatError> {
        match event {
            Some(event) => view.check(event, user, self.is_owner(user)),
            None if view.deleted => Err(ChatError::not_found(format!(
                "message {} was deleted",
                view.seq
            ))),
            None => Ok(()),
        }
    }

    /// Answers a question about the room's messages.
    pub(crate) fn query(
        &mut self,
        myself: &ActorRef<RoomMsg>,
        user: String,
        query: MessageQuery,
        reply: RpcReplyPort<Result<QueryAnswer, ChatError>>,
    ) {
        if let Err(e) = self.check_reader(&user) {
            let _ = reply.send(Err(e));
            return;
        }
        match query {
            MessageQuery::View { seq } | MessageQuery::Versions { seq } => {
                let versions = matches!(query, MessageQuery::Versions { .. });
                self.with_views(
                    myself,
                    vec![seq],
                    Box::new(move |state, _, loaded| {
                        let answer = loaded.and_then(|()| {
                            let view = state.views.get(&seq).ok_or_else(|| no_message(seq))?;
                            Ok(if versions {
                                QueryAnswer::Versions(view.versions.clone())
                            } else {
                                QueryAnswer::View(view.clone())
                            })
                        });
                        let _ = reply.send(answer);
                    }),
                );
            }
            MessageQuery::Pins => self.db_job(
                myself,
                Box::new(move |history, room| {
                    Box::pin(async move {
                        let pinned = history.pinned(&room).await;
                        Box::new(move |state: &mut RoomState, myself: &ActorRef<RoomMsg>| {
                            let mut seqs: BTreeSet<u64> = match pinned {
                                Ok(seqs) => seqs.into_iter().collect(),
                                Err(e) => {
                                    let _ = reply.send(Err(ChatError::unavailable(e.to_string())));
                                    return;
                                }
                            };
                            for (m, _) in &state.unflushed {
                                if let Some(MessageEvent::Pin { target }) = &m.event {
                                    seqs.insert(*target);
                                }
                            }
                            state.with_views(
                                myself,
                                seqs.into_iter().collect(),
                                Box::new(move |state, _, loaded| {
                                    let answer = loaded.map(|()| {
                                        let pins =
                                            state.views.values().filter(|v| v.pinned).cloned();
                                        QueryAnswer::Views(pins.collect())
                                    });
                                    let _ = reply.send(answer);
                                }),
                            );
                        }) as DbDone
                    })
                }),
            ),
            MessageQuery::Thread { seq, after, limit } => {
                if seq == 0 || seq > self.last_seq {
                    let _ = reply.send(Err(no_message(seq)));
                    return;
                }
                self.db_job(
                    myself,
                    Box::new(move |history, room| {
                        Box::pin(async move {
                            let stored = history.replies(&room, seq, after, limit).await;
                            Box::new(move |state: &mut RoomState, myself: &ActorRef<RoomMsg>| {
                                let mut seqs: BTreeSet<u64> = match stored {
                                    Ok(seqs) => seqs.into_iter().collect(),
                                    Err(e) => {
                                        let _ =
                                            reply.send(Err(ChatError::unavailable(e.to_string())));
                                        return;
                                    }
                                };
                                for (m, _) in &state.unflushed {
                                    if m.event.is_none() && m.reply_to == Some(seq) && m.seq > after
                                    {
                                        seqs.insert(m.seq);
                                    }
                                }
                                let mut wanted: Vec<u64> = seqs.into_iter().take(limit).collect();
                                wanted.push(seq);
                                state.with_views(
                                    myself,
                                    wanted.clone(),
                                    Box::new(move |state, _, loaded| {
                                        let answer = loaded.and_then(|()| {
                                            if !state.views.contains_key(&seq) {
                                                return Err(no_message(seq));
                                            }
                                            let replies = wanted
                                                .iter()
                                                .filter(|s| **s != seq)
                                                .filter_map(|s| state.views.get(s).cloned());
                                            Ok(QueryAnswer::Views(replies.collect()))
                                        });
                                        let _ = reply.send(answer);
                                    }),
                                );
                            }) as DbDone
                        })
                    }),
                );
            }
            MessageQuery::Unread => {
                let read = self.members.get(&user).copied().unwrap_or(0);
                let me = user.clone();
                self.db_job(
                    myself,
                    Box::new(move |history, room| {
                        Box::pin(async move {
                            let stored = history.unread(&room, &me, read).await;
                            Box::new(move |state: &mut RoomState, _: &ActorRef<RoomMsg>| {
                                let answer = match stored {
                                    Ok(n) => {
                                        let later = state
                                            .unflushed
                                            .iter()
                                            .filter(|(m, _)| {
                                                m.event.is_none()
                                                    && m.seq > read
                                                    && m.from != user
                                                    && !state
                                                        .views
                                                        .get(&m.seq)
                                                        .is_some_and(|v| v.deleted)
                                            })
                                            .count()
                                            as u64;
                                        Ok(QueryAnswer::Unread {
                                            unread: n + later,
                                            last_read_seq: read,
                                        })
                                    }
                                    Err(e) => Err(ChatError::unavailable(e.to_string())),
                                };
                                let _ = reply.send(answer);
                            }) as DbDone
                        })
                    }),
                );
            }
        }
    }
}

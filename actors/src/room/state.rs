//! A room's state and how it is restored from the stores.

use crate::store::events::DomainEvent;
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::time::Instant;

use ractor::{ActorProcessingErr, ActorRef};
use tokio_tungstenite::tungstenite::Utf8Bytes;

use super::{dm_members, RoomArgs, RoomContext, RoomMsg, BROADCAST_ROOM};
use crate::frames::{ChatError, ChatMessage, HistoryQuery, ServerFrame};
use crate::limits::now_ms;
use crate::outbox::Outbox;
use crate::presence::PresenceMsg;
use crate::session::{SessionHandle, SessionMsg};
use crate::store::{LogPosition, LogRecord, RoomRecord, StoreError};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RoomKind {
    Group,
    Direct,
    Broadcast,
}

impl RoomKind {
    pub fn of(name: &str) -> Self {
        if name == BROADCAST_ROOM {
            RoomKind::Broadcast
        } else if dm_members(name).is_some() {
            RoomKind::Direct
        } else {
            RoomKind::Group
        }
    }
}

/// A message with its `message` frame, encoded once.
pub(crate) struct Cached {
    pub message: ChatMessage,
    pub frame: Utf8Bytes,
}

impl Cached {
    /// What pushing its frame means for a connection: it is at this seq.
    pub fn marks(&self) -> crate::outbox::Marks {
        crate::outbox::Marks::seq(self.message.seq)
    }
}

/// A send waiting for the log.
pub struct PendingSend {
    pub(crate) user: String,
    pub(crate) client_id: String,
    pub(crate) body: String,
    pub(crate) reply_to: Option<u64>,
    pub(crate) attachments: Vec<String>,
    pub(crate) event: Option<crate::frames::MessageEvent>,
    pub(crate) ts: i64,
}

impl PendingSend {
    /// The message this send changes or answers, if any.
    pub(crate) fn target(&self) -> Option<u64> {
        match &self.event {
            Some(event) => Some(event.target()),
            None => self.reply_to,
        }
    }
}

pub(crate) enum SubState {
    /// Subscribed; receives nothing until activated. `from_seq` = last seq then.
    Pending { from_seq: u64 },
    /// Receives every message after `from_seq`.
    Live { from_seq: u64 },
}

pub(crate) struct Subscriber {
    pub session: SessionHandle,
    pub state: SubState,
}

pub struct RoomState {
    pub(crate) name: String,
    pub(crate) kind: RoomKind,
    pub(crate) private: bool,
    pub(crate) ctx: RoomContext,
    /// Members and the seq each has read up to.
    pub(crate) members: HashMap<String, u64>,
    pub(crate) subscribers: HashMap<u64, Subscriber>,
    pub(crate) last_seq: u64,
    /// The position after the last applied record.
    pub(crate) log_position: LogPosition,
    pub(crate) epoch: u64,
    pub(crate) recent: VecDeque<Cached>,
    /// Acked messages not yet in history, with their log positions.
    pub(crate) unflushed: VecDeque<(ChatMessage, LogPosition)>,
    pub(crate) history_seq: u64,
    /// The log position after the record of `history_seq`.
    pub(crate) history_position: LogPosition,
    pub(crate) history_writing: bool,
    pub(crate) checkpoint_seq: u64,
    pub(crate) checkpoint_at: Instant,
    pub(crate) dedupe: HashMap<(String, String), (u64, i64)>,
    pub(crate) dedupe_order: VecDeque<(String, String)>,
    /// Sends in the log batch in flight or queued, by (user, client_id): who waits for the ack.
    pub(crate) in_flight: HashMap<(String, String), Vec<Outbox>>,
    pub(crate) pending: VecDeque<PendingSend>,
    pub(crate) appending: bool,
    /// An append failed: read the log before appending again.
    pub(crate) needs_reconcile: bool,
    pub(crate) reconciling: bool,
    /// The batch whose append failed, waiting for the reconciliation.
    pub(crate) failed_batch: Vec<PendingSend>,
    pub(crate) idle_since: Option<Instant>,
    /// The epoch was bumped after a failed append: the lease must follow.
    pub(crate) raise_from: Option<u64>,
    /// Why the room is stopping, once it is: moved away or fenced.
    pub(crate) leaving: Option<Leaving>,
    pub(crate) draining: bool,
    /// The room was created by this start (its members' other nodes are told).
    pub(crate) created: bool,
    /// Each member's role (see [`crate::roles`]).
    pub(crate) roles: HashMap<String, crate::roles::Role>,
    pub(crate) topic: Option<String>,
    /// The current state of recent messages (every one not yet in history).
    pub(crate) views: BTreeMap<u64, crate::life::MessageView>,
    /// Users one of whose changes or replies waits for a message's state
    /// to be read from history, with their requests that came after it:
    /// they wait behind it, so that one user's requests keep their order
    /// (see `RoomState::admit`).
    pub(crate) held: HashMap<String, VecDeque<super::SendRequest>>,
    /// Reads of history waiting for their turn, and whether one runs.
    pub(crate) db_jobs: VecDeque<super::life::DbJob>,
    pub(crate) db_reading: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Leaving {
    /// Membership moved the room to another node (or this node leaves).
    Handoff,
    /// Another node took the lease.
    Fenced,
}

fn unavailable(e: StoreError) -> ActorProcessingErr {
    Box::new(ChatError::unavailable(e.to_string()))
}

/// What a room's record says.
struct Record {
    private: bool,
    members: HashMap<String, u64>,
    roles: HashMap<String, crate::roles::Role>,
    created: bool,
    topic: Option<String>,
}

/// Loads the room record, creating it when asked.
async fn load_record(args: &RoomArgs, kind: RoomKind) -> Result<Record, ActorProcessingErr> {
    let directory = &args.ctx.stores.directory;
    let name = &args.name;
    if kind == RoomKind::Broadcast {
        return Ok(Record {
            private: false,
            members: HashMap::new(),
            roles: HashMap::new(),
            created: false,
            topic: None,
        });
    }
    let mut created = false;
    let record = match directory.find_room(name).await.map_err(unavailable)? {
        Some(record) => record,
        None => {
            let Some(spec) = &args.create else {
                return Err(Box::new(ChatError::not_found(format!("no room {name}"))));
            };
            for member in &spec.members {
                let found = directory.find_user(member).await.map_err(unavailable)?;
                match found {
                    None => {
                        return Err(Box::new(ChatError::not_found(format!("no user {member}"))))
                    }
                    // A DM room's name holds its members' names: only the
                    // registered spelling names the one room of the pair.
                    Some(user) if user.username != *member => {
                        return Err(Box::new(ChatError::not_found(format!(
                            "no user {member}; the name is spelled {}",
                            user.username
                        ))))
                    }
                    Some(_) => {}
                }
            }
            let record = RoomRecord {
                name: name.clone(),
                private: spec.private || kind == RoomKind::Direct,
                created_by: spec.creator.clone(),
                created_at: now_ms(),
                topic: None,
            };
            match directory.create_room(&record, &spec.members).await {
                Ok(()) => {
                    created = true;
                    args.ctx.stores.events.publish(DomainEvent::new(
                        "room.created",
                        name,
                        serde_json::json!({
                            "room": name,
                            "by": spec.creator,
                            "private": record.private,
                            "members": spec.members,
                        }),
                    ));
                }
                Err(StoreError::Conflict(_)) => {}
                Err(e) => return Err(unavailable(e)),
            }
            record
        }
    };
    let records = directory.members(name).await.map_err(unavailable)?;
    let roles = records.iter().map(|m| (m.user.clone(), m.role)).collect();
    let members = records.into_iter().map(|m| (m.user, m.read_seq)).collect();
    Ok(Record {
        private: record.private,
        members,
        roles,
        created,
        topic: record.topic,
    })
}

/// Restores a room: record and members, checkpoint, the history tail (for
/// de-duplication and the cache), then the log from the checkpoint on.
pub(crate) async fn restore(args: RoomArgs) -> Result<RoomState, ActorProcessingErr> {
    let kind = RoomKind::of(&args.name);
    let Record {
        private,
        members,
        roles,
        created,
        topic,
    } = load_record(&args, kind).await?;
    let stores = args.ctx.stores.clone();
    let name = args.name.clone();
    // Take the lease before reading anything: from here on the previous
    // owner can no longer ack, so the log read below is complete.
    let lease_epoch = match &stores.leases {
        Some(leases) => Some(
            leases
                .acquire(&name, &args.ctx.node, 1)
                .await
                .map_err(unavailable)?,
        ),
        None => None,
    };
    let checkpoint = stores
        .checkpoints
        .load(&name)
        .await
        .map_err(unavailable)?
        .unwrap_or_default();
    let window = args.ctx.limits.dedupe_window.max(args.ctx.tuning.recent);
    let tail = stores
        .history
        .page(&name, HistoryQuery::default(), window)
        .await
        .map_err(unavailable)?;
    let history_seq = tail
        .last()
        .map(|m| m.seq)
        .unwrap_or(0)
        .max(checkpoint.history_seq);

    let mut state = RoomState {
        name: name.clone(),
        kind,
        private,
        ctx: args.ctx,
        members,
        subscribers: HashMap::new(),
        last_seq: history_seq,
        log_position: checkpoint.log_position,
        epoch: checkpoint.epoch + 1,
        recent: VecDeque::new(),
        unflushed: VecDeque::new(),
        history_seq,
        history_position: checkpoint.log_position,
        history_writing: false,
        checkpoint_seq: checkpoint.history_seq,
        checkpoint_at: Instant::now(),
        dedupe: HashMap::new(),
        dedupe_order: VecDeque::new(),
        in_flight: HashMap::new(),
        pending: VecDeque::new(),
        appending: false,
        needs_reconcile: false,
        reconciling: false,
        failed_batch: Vec::new(),
        idle_since: Some(Instant::now()),
        raise_from: None,
        leaving: None,
        draining: false,
        created,
        roles,
        topic,
        views: BTreeMap::new(),
        held: HashMap::new(),
        db_jobs: VecDeque::new(),
        db_reading: false,
    };
    for m in &tail {
        state.remember((m.from.clone(), m.client_id.clone()), m.seq, m.ts);
    }
    // The log after the checkpoint. A seq may appear more than once: a produce
    // retried by the client library (same epoch: the first copy counts), or
    // an append that timed out and landed late while the room had moved on
    // under a newer epoch (the newest epoch counts: that is the one acked).
    let mut position = checkpoint.log_position;
    let mut max_epoch = checkpoint.epoch;
    let mut winners: BTreeMap<u64, (LogPosition, LogRecord)> = BTreeMap::new();
    loop {
        let records = stores
            .log
            .read_from(&name, position, 1000)
            .await
            .map_err(unavailable)?;
        if records.is_empty() {
            break;
        }
        for (pos, record) in records {
            position = pos + 1;
            max_epoch = max_epoch.max(record.epoch);
            if record.seq <= history_seq {
                state.history_position = state.history_position.max(pos + 1);
                continue;
            }
            match winners.get(&record.seq) {
                Some((_, seen)) if seen.epoch >= record.epoch => {}
                _ => {
                    winners.insert(record.seq, (pos, record));
                }
            }
        }
    }
    state.epoch = max_epoch + 1;
    if let (Some(leases), Some(lease_epoch)) = (&stores.leases, lease_epoch) {
        if state.epoch > lease_epoch {
            // Records of a newer epoch than the lease knew (a store from
            // before the cluster): the lease follows the log.
            if !leases
                .raise(&name, &state.ctx.node, lease_epoch, state.epoch)
                .await
                .map_err(unavailable)?
            {
                return Err(unavailable(StoreError::Fenced(name)));
            }
        } else {
            state.epoch = lease_epoch;
        }
        tracing::info!(room = %name, node = %state.ctx.node, epoch = state.epoch, "room lease taken");
    }
    state.log_position = state.log_position.max(position);
    let mut replayed = Vec::new();
    for (seq, (pos, record)) in winners {
        if seq != state.last_seq + 1 {
            tracing::warn!(room = %name, expected = state.last_seq + 1, got = seq, "gap in the log");
        }
        let message = record.to_message();
        state.last_seq = message.seq;
        state.remember(
            (message.from.clone(), message.client_id.clone()),
            message.seq,
            message.ts,
        );
        state.track_views(&message);
        state.unflushed.push_back((message.clone(), pos));
        replayed.push(message);
    }
    if !replayed.is_empty() {
        tracing::info!(room = %name, replayed = replayed.len(), last_seq = state.last_seq, "restored the log tail");
    }
    let keep = state.ctx.tuning.recent;
    let skip = (tail.len() + replayed.len()).saturating_sub(keep);
    state.recent = tail
        .into_iter()
        .chain(replayed)
        .skip(skip)
        .map(|message| Cached {
            frame: ServerFrame::Message(message.clone()).encode(),
            message,
        })
        .collect();
    Ok(state)
}

impl RoomState {
    /// After a (re)start, subscribes the local sessions of every member, so a
    /// restarted room keeps delivering to connections that were attached.
    /// Pending: each session activates the subscription when it hears of it
    /// (`SessionMsg::Attached`) if it is live, else with the rest of its
    /// rooms at its first frame, so that a session waiting for `resume`
    /// receives nothing live before its replay.
    pub(crate) async fn attach_member_sessions(
        &mut self,
        myself: &ActorRef<RoomMsg>,
        restarted: bool,
    ) {
        let request = match self.kind {
            RoomKind::Broadcast => {
                crate::ask(&self.ctx.presence, |reply| PresenceMsg::AllSessions {
                    reply,
                })
                .await
            }
            _ => {
                let users: Vec<String> = self.members.keys().cloned().collect();
                crate::ask(&self.ctx.presence, |reply| PresenceMsg::SessionsOf {
                    users,
                    reply,
                })
                .await
            }
        };
        for session in request.unwrap_or_default() {
            let _ = session.actor.cast(SessionMsg::Attached {
                room: self.name.clone(),
                actor: myself.clone(),
                restarted,
            });
            self.subscribe_pending(session);
        }
        // A new room (a DM, a private room with invitees): the members'
        // connections on other nodes subscribe through their own node.
        if let (true, Some(router)) = (self.created, &self.ctx.router) {
            for user in self.members.keys() {
                let _ = router.cast(crate::cluster::router::RouterMsg::AttachUser {
                    room: self.name.clone(),
                    user: user.clone(),
                    joined: String::new(),
                    last_seq: self.last_seq,
                });
            }
        }
    }

    fn subscribe_pending(&mut self, session: SessionHandle) {
        self.subscribers.insert(
            session.id,
            super::state::Subscriber {
                session,
                state: SubState::Pending {
                    from_seq: self.last_seq,
                },
            },
        );
        self.idle_since = None;
    }
}

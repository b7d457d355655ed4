//! The sessions subscribed to the room: pending and live subscriptions,
//! activation with its replay (from the cache, or history plus the unwritten
//! tail), and the fan-out of committed frames into their outboxes.

use super::persistence::read_range;
use super::*;

impl RoomState {
    /// Pushes a frame to every live subscriber; drops the ones that are gone.
    pub(super) fn fan_out(&mut self, frame: &Utf8Bytes, except_user: Option<&str>) {
        self.fan_out_with(except_user, |outbox| outbox.push(frame.clone()));
    }

    /// Pushes a batch of message frames, the last of seq `last_seq`, to every
    /// live subscriber at once: one queue operation per subscriber per batch,
    /// not per message.
    pub(super) fn fan_out_messages(&mut self, frames: Vec<Utf8Bytes>, last_seq: u64) {
        let marks = Marks::seq(last_seq);
        match frames.len() {
            0 => {}
            1 => self.fan_out_with(None, |o| {
                crate::metrics::delivered(1, o.push_marked(frames[0].clone(), marks.clone()))
            }),
            n => {
                let batch: Arc<[Utf8Bytes]> = frames.into();
                self.fan_out_with(None, |o| {
                    crate::metrics::delivered(n, o.push_batch(batch.clone(), marks.clone()))
                });
            }
        }
    }

    pub(super) fn fan_out_with(
        &mut self,
        except_user: Option<&str>,
        push: impl Fn(&Outbox) -> bool,
    ) {
        let mut gone = Vec::new();
        for (id, sub) in &self.subscribers {
            if !matches!(sub.state, SubState::Live { .. })
                || Some(sub.session.user.as_str()) == except_user
            {
                continue;
            }
            if !push(&sub.session.outbox) {
                gone.push(*id);
            }
        }
        for id in gone {
            self.subscribers.remove(&id);
        }
    }

    pub(super) fn subscribe(&mut self, session: SessionHandle, pending: bool) {
        // Already subscribed on the same path: it keeps its state. Live (the
        // room re-attached it after a restart), it keeps what it was sent;
        // its activation replays only what came before it went live.
        // Pending (a session waiting for its first frame, whose user joined
        // again on another connection), it stays pending from where it was:
        // turned live here, it would receive live traffic before the replay
        // of its `resume`, and miss what came since it subscribed.
        if let Some(existing) = self.subscribers.get(&session.id) {
            if existing.session.same_path(&session) {
                return;
            }
        }
        let state = if pending {
            SubState::Pending {
                from_seq: self.last_seq,
            }
        } else {
            SubState::Live {
                from_seq: self.last_seq,
            }
        };
        self.subscribers
            .insert(session.id, Subscriber { session, state });
        self.idle_since = None;
    }

    pub(super) fn activate(
        &mut self,
        myself: &ActorRef<RoomMsg>,
        session_id: u64,
        after: Option<u64>,
        hold: bool,
        reply: RpcReplyPort<u64>,
    ) {
        let Some(sub) = self.subscribers.get(&session_id) else {
            // Its subscribe never arrived (refused while the room started or
            // moved): answering would promise deliveries that will not come.
            // Dropping the reply fails the activation; the session subscribes again.
            drop(reply);
            return;
        };
        let from_seq = match sub.state {
            SubState::Pending { from_seq } | SubState::Live { from_seq } => from_seq,
        };
        let live = matches!(sub.state, SubState::Live { .. });
        // A live subscriber already has everything after `from_seq`.
        let upper = if live { from_seq } else { self.last_seq };
        let after = after.unwrap_or(from_seq).min(upper);
        let first_cached = self.recent.front().map(|c| c.message.seq);
        let cached = after >= upper || first_cached.is_some_and(|first| first <= after + 1);
        if cached {
            let outbox = sub.session.outbox.clone();
            for c in self
                .recent
                .iter()
                .filter(|c| c.message.seq > after && c.message.seq <= upper)
            {
                crate::metrics::delivered(1, outbox.push_marked(c.frame.clone(), c.marks()));
            }
            if let Some(sub) = self.subscribers.get_mut(&session_id) {
                sub.state = after_replay(live, hold, self.last_seq);
            }
            let _ = reply.send(self.last_seq);
            return;
        }
        // Older than the cache: read history, stay pending meanwhile.
        let history = self.ctx.stores.history.clone();
        let unflushed: Vec<ChatMessage> = self.unflushed.iter().map(|(m, _)| m.clone()).collect();
        let room = self.name.clone();
        let myself = myself.clone();
        tokio::spawn(async move {
            let messages = read_range(&*history, &room, after, upper, unflushed).await;
            let _ = myself.cast(RoomMsg::ReplayLoaded {
                session_id,
                after,
                hold,
                messages,
                reply,
            });
        });
    }

    pub(super) fn replay_loaded(
        &mut self,
        myself: &ActorRef<RoomMsg>,
        session_id: u64,
        after: u64,
        hold: bool,
        messages: Result<Vec<ChatMessage>, StoreError>,
        reply: RpcReplyPort<u64>,
    ) {
        let messages = match messages {
            Ok(messages) => messages,
            Err(e) => {
                tracing::warn!(room = %self.name, error = %e, "resume replay failed; retrying");
                // Try again shortly: the session stays pending and loses nothing.
                let myself2 = myself.clone();
                tokio::spawn(async move {
                    tokio::time::sleep(Duration::from_millis(500)).await;
                    let _ = myself2.cast(RoomMsg::Activate {
                        session_id,
                        after: Some(after),
                        hold,
                        reply,
                    });
                });
                return;
            }
        };
        let Some(sub) = self.subscribers.get(&session_id) else {
            let _ = reply.send(self.last_seq);
            return;
        };
        let live_from = match sub.state {
            SubState::Live { from_seq } => Some(from_seq),
            SubState::Pending { .. } => None,
        };
        let outbox = sub.session.outbox.clone();
        let mut sent = after;
        for m in &messages {
            if m.seq == sent + 1 {
                crate::metrics::delivered(1, outbox.push_frame(&ServerFrame::Message(m.clone())));
                sent = m.seq;
            }
        }
        if live_from.is_none() {
            let first_cached = self.recent.front().map(|c| c.message.seq);
            if sent < self.last_seq && first_cached.is_none_or(|f| f > sent + 1) {
                // More arrived than the cache holds while we read: read again from `sent`.
                self.activate(myself, session_id, Some(sent), hold, reply);
                return;
            }
            for c in self.recent.iter().filter(|c| c.message.seq > sent) {
                crate::metrics::delivered(1, outbox.push_marked(c.frame.clone(), c.marks()));
            }
            if let Some(sub) = self.subscribers.get_mut(&session_id) {
                sub.state = after_replay(false, hold, self.last_seq);
            }
        }
        let _ = reply.send(self.last_seq);
    }
}

//! Group commit: sends are checked and queued, appended to the log one batch
//! at a time, acked and fanned out only once the append returned; a failed
//! append is reconciled with the log before the next one.

use super::*;

impl RoomState {
    /// A message of the cache as history shows it now: its current body.
    pub(super) fn as_now(&self, mut message: ChatMessage) -> ChatMessage {
        if let Some(view) = self.views.get(&message.seq) {
            message.body = view.body.clone().unwrap_or_default();
            message.edited_at = view.edited_at;
            message.deleted = view.deleted;
            if view.deleted {
                message.attachments.clear();
            }
        }
        message
    }

    pub(super) fn accept_send(&mut self, myself: &ActorRef<RoomMsg>, request: SendRequest) {
        crate::metrics::MESSAGES_RECEIVED.inc();
        let check = match self.leaving {
            Some(_) => Err(moving()),
            None => self.check_writer(&request.user),
        };
        if let Err(e) = check {
            request
                .outbox
                .push_frame(&ServerFrame::error(&e, Some(request.client_id)));
            return;
        }
        let key = (request.user.clone(), request.client_id.clone());
        if let Some(&(seq, ts)) = self.dedupe.get(&key) {
            // A retry of a message already in the log: the first message's ack.
            crate::metrics::MESSAGES_ACKED.inc();
            request.outbox.push_frame(&ServerFrame::Ack {
                client_id: request.client_id,
                room: self.name.clone(),
                seq,
                ts,
            });
            return;
        }
        if let Some(waiters) = self.in_flight.get_mut(&key) {
            waiters.push(request.outbox);
            return;
        }
        self.in_flight.insert(key, vec![request.outbox.clone()]);
        if let Some(held) = self.held.get_mut(&request.user) {
            // An earlier request of this user waits for a message's state:
            // this one waits behind it.
            held.push_back(request);
            return;
        }
        self.admit(myself, request);
    }

    /// Queues a request for the log once the view its check needs is at
    /// hand. A target older than the views in memory is read from history
    /// first; meanwhile the user's later requests are held (`held`) and
    /// admitted in order once it is queued, so that a user's requests keep
    /// their order: an edit cannot overtake the edit before it, nor a plain
    /// message the reply sent before it.
    fn admit(&mut self, myself: &ActorRef<RoomMsg>, request: SendRequest) {
        let key = (request.user.clone(), request.client_id.clone());
        match self.precheck(&request) {
            Some(Err(e)) => self.fail(key, &e),
            Some(Ok(())) => self.queue_send(myself, request),
            None if request.event.is_none() && request.reply_to.is_none() => {
                self.queue_send(myself, request)
            }
            None => {
                // The target is older than the views in memory: load it first.
                let target = match &request.event {
                    Some(event) => event.target(),
                    None => request.reply_to.unwrap_or(0),
                };
                let user = request.user.clone();
                self.held
                    .insert(user.clone(), std::collections::VecDeque::new());
                self.with_views(
                    myself,
                    vec![target],
                    Box::new(move |state, myself, loaded| {
                        let checked = loaded.and_then(|()| match state.precheck(&request) {
                            Some(result) => result,
                            None => Err(ChatError::not_found(format!("no message {target}"))),
                        });
                        match checked {
                            Ok(()) => state.queue_send(myself, request),
                            Err(e) => state.fail(key, &e),
                        }
                        state.release(myself, &user);
                    }),
                );
            }
        }
    }

    /// Admits the requests `user` sent while one of theirs waited, in
    /// order, until one of them waits in turn (the rest stay behind it).
    fn release(&mut self, myself: &ActorRef<RoomMsg>, user: &str) {
        let Some(mut queue) = self.held.remove(user) else {
            return;
        };
        while let Some(next) = queue.pop_front() {
            self.admit(myself, next);
            if let Some(waiting) = self.held.get_mut(user) {
                waiting.extend(queue);
                return;
            }
        }
    }

    /// Answers every held request with `error` (the room is leaving).
    pub(super) fn fail_held(&mut self, error: &ChatError) {
        let held: Vec<SendRequest> = self.held.values_mut().flat_map(std::mem::take).collect();
        for request in held {
            self.fail((request.user, request.client_id), error);
        }
    }

    pub(super) fn queue_send(&mut self, myself: &ActorRef<RoomMsg>, request: SendRequest) {
        if self.leaving.is_some() {
            self.fail((request.user, request.client_id), &moving());
            return;
        }
        self.pending.push_back(PendingSend {
            user: request.user,
            client_id: request.client_id,
            body: request.body,
            reply_to: request.reply_to,
            attachments: request.attachments,
            event: request.event,
            ts: now_ms(),
        });
        self.append_next(myself);
    }

    /// The binding check of a batch's events and replies, in order (each
    /// sees the ones before it): the refused are answered and left out.
    pub(super) fn check_batch(&mut self, batch: Vec<PendingSend>) -> Vec<PendingSend> {
        let mut scratch: HashMap<u64, crate::life::MessageView> = HashMap::new();
        let mut kept = Vec::with_capacity(batch.len());
        for p in batch {
            let target = match (&p.event, p.reply_to) {
                (Some(event), _) => event.target(),
                (None, Some(seq)) => seq,
                (None, None) => {
                    kept.push(p);
                    continue;
                }
            };
            let view = match scratch.get(&target).or_else(|| self.views.get(&target)) {
                Some(view) => view.clone(),
                None => {
                    let e = ChatError::unavailable("the message was not at hand; retry");
                    self.fail((p.user, p.client_id), &e);
                    continue;
                }
            };
            if let Err(e) = self.check_on(&view, p.event.as_ref(), &p.user) {
                self.fail((p.user, p.client_id), &e);
                continue;
            }
            let mut view = view;
            view.apply(&ChatMessage {
                from: p.user.clone(),
                reply_to: p.reply_to,
                event: p.event.clone(),
                ts: p.ts,
                ..Default::default()
            });
            scratch.insert(target, view);
            kept.push(p);
        }
        kept
    }

    /// Starts appending the next batch unless one is in flight.
    pub(super) fn append_next(&mut self, myself: &ActorRef<RoomMsg>) {
        if self.pending.is_empty() || self.appending || self.reconciling {
            return;
        }
        if self.needs_reconcile {
            self.reconcile(myself);
            return;
        }
        let n = self.pending.len().min(self.ctx.tuning.max_batch);
        let batch: Vec<PendingSend> = self.pending.drain(..n).collect();
        let batch = self.check_batch(batch);
        if batch.is_empty() {
            return;
        }
        let records: Vec<LogRecord> = batch
            .iter()
            .enumerate()
            .map(|(i, p)| LogRecord {
                room: self.name.clone(),
                seq: self.last_seq + 1 + i as u64,
                epoch: self.epoch,
                sender: p.user.clone(),
                client_id: p.client_id.clone(),
                body: p.body.clone(),
                ts: p.ts,
                reply_to: p.reply_to,
                attachments: p.attachments.clone(),
                event: p.event.clone(),
            })
            .collect();
        self.appending = true;
        let log = self.ctx.stores.log.clone();
        let leases = self.ctx.stores.leases.clone();
        let (room, node, epoch) = (self.name.clone(), self.ctx.node.clone(), self.epoch);
        let myself = myself.clone();
        tokio::spawn(async move {
            let mut result = crate::metrics::time(
                &crate::metrics::LOG_APPEND_SECONDS,
                log.append(&room, &records),
            )
            .await;
            if let (Ok(_), Some(leases)) = (&result, leases) {
                // Durable is not enough to ack: another node may have taken
                // the room meanwhile, and its restore may not have seen this.
                result = match leases.holds(&room, &node, epoch).await {
                    Ok(true) => result,
                    Ok(false) => Err(StoreError::Fenced(room.clone())),
                    Err(e) => Err(e),
                };
            }
            let _ = myself.cast(RoomMsg::Appended { batch, result });
        });
    }

    pub(super) fn appended(
        &mut self,
        myself: &ActorRef<RoomMsg>,
        batch: Vec<PendingSend>,
        result: Result<Vec<LogPosition>, StoreError>,
    ) {
        self.appending = false;
        match result {
            Ok(positions) => {
                let mut frames = Vec::with_capacity(batch.len());
                for (p, position) in batch.into_iter().zip(positions) {
                    let message = ChatMessage {
                        room: self.name.clone(),
                        seq: self.last_seq + 1,
                        from: p.user,
                        body: p.body,
                        ts: p.ts,
                        client_id: p.client_id,
                        reply_to: p.reply_to,
                        attachments: p.attachments,
                        event: p.event,
                        ..Default::default()
                    };
                    frames.push(self.commit(message, position));
                }
                // Every ack of the batch is queued before the messages go out.
                self.fan_out_messages(frames, self.last_seq);
                self.write_history(myself);
                self.append_next(myself);
                self.stop_if_leaving(myself);
            }
            Err(StoreError::Fenced(_)) => {
                tracing::warn!(room = %self.name, node = %self.ctx.node, epoch = self.epoch, "fenced: another node took this room");
                for p in batch {
                    self.fail((p.user, p.client_id), &moving());
                }
                self.leave_node(myself, Leaving::Fenced);
            }
            Err(e) => {
                // The append may still have landed (a timeout after the broker
                // took it): read the log before answering, so a seq is never
                // given to two messages and nothing durable is reported lost.
                tracing::warn!(room = %self.name, error = %e, "log append failed; reconciling with the log");
                self.failed_batch = batch;
                self.needs_reconcile = true;
                // Whatever we append from now on outranks a late copy of this
                // batch with the same seqs (replay keeps the newest epoch).
                self.raise_from.get_or_insert(self.epoch);
                self.epoch += 1;
                self.reconcile(myself);
            }
        }
    }

    /// Applies one durable message: ack its waiters, cache it, queue it for
    /// history; its `message` frame, for the caller to fan out.
    pub(super) fn commit(&mut self, message: ChatMessage, position: LogPosition) -> Utf8Bytes {
        self.last_seq = message.seq;
        self.log_position = position + 1;
        let key = (message.from.clone(), message.client_id.clone());
        let ack = ServerFrame::Ack {
            client_id: message.client_id.clone(),
            room: self.name.clone(),
            seq: message.seq,
            ts: message.ts,
        }
        .encode();
        for outbox in self.in_flight.remove(&key).unwrap_or_default() {
            crate::metrics::MESSAGES_ACKED.inc();
            outbox.push_marked(ack.clone(), Marks::answer(&key.1));
        }
        self.remember(key, message.seq, message.ts);
        self.track_views(&message);
        if let Some(event) = admin::message_event(&message) {
            self.ctx.stores.events.publish(event);
        }
        let frame = ServerFrame::Message(message.clone()).encode();
        self.unflushed.push_back((message.clone(), position));
        self.recent.push_back(Cached {
            message,
            frame: frame.clone(),
        });
        if self.recent.len() > self.ctx.tuning.recent {
            self.recent.pop_front();
        }
        frame
    }

    /// Reads the log after our position to learn what a failed append wrote.
    pub(super) fn reconcile(&mut self, myself: &ActorRef<RoomMsg>) {
        if self.reconciling {
            return;
        }
        self.reconciling = true;
        let log = self.ctx.stores.log.clone();
        let leases = self.ctx.stores.leases.clone();
        let (room, from) = (self.name.clone(), self.log_position);
        let (node, epoch, raise_from) = (self.ctx.node.clone(), self.epoch, self.raise_from);
        let myself = myself.clone();
        tokio::spawn(async move {
            if let Some(leases) = leases {
                // The bumped epoch must be the lease's before anything is acked under it.
                let held = match raise_from {
                    Some(old) => leases.raise(&room, &node, old, epoch).await,
                    None => leases.holds(&room, &node, epoch).await,
                };
                let fenced = match held {
                    Ok(true) => None,
                    Ok(false) => Some(StoreError::Fenced(room.clone())),
                    Err(e) => Some(e),
                };
                if let Some(e) = fenced {
                    let _ = myself.cast(RoomMsg::Reconciled(Err(e)));
                    return;
                }
            }
            let result = log.read_from(&room, from, 100_000).await;
            let _ = myself.cast(RoomMsg::Reconciled(result));
        });
    }

    pub(super) fn reconciled(
        &mut self,
        myself: &ActorRef<RoomMsg>,
        result: Result<Vec<(LogPosition, LogRecord)>, StoreError>,
    ) {
        self.reconciling = false;
        let unavailable =
            ChatError::unavailable("the message log is unavailable; nothing was written, retry");
        match result {
            Ok(records) => {
                self.needs_reconcile = false;
                self.raise_from = None;
                let mut frames = Vec::new();
                for (position, record) in records {
                    if record.seq > self.last_seq + 1 {
                        tracing::warn!(room = %self.name, expected = self.last_seq + 1, got = record.seq, "gap in the log");
                    }
                    if record.seq > self.last_seq {
                        frames.push(self.commit(record.to_message(), position));
                    }
                }
                self.fan_out_messages(frames, self.last_seq);
                // What the failed append did not write was not written at all.
                for p in std::mem::take(&mut self.failed_batch) {
                    self.fail((p.user, p.client_id), &unavailable);
                }
                self.write_history(myself);
                self.append_next(myself);
                self.stop_if_leaving(myself);
            }
            Err(StoreError::Fenced(_)) => {
                tracing::warn!(room = %self.name, node = %self.ctx.node, epoch = self.epoch, "fenced while reconciling: another node took this room");
                for p in std::mem::take(&mut self.failed_batch) {
                    self.fail((p.user, p.client_id), &moving());
                }
                self.leave_node(myself, Leaving::Fenced);
            }
            Err(e) => {
                tracing::warn!(room = %self.name, error = %e, "the log is still unavailable");
                // Everyone waiting is told to retry; the next send or tick reconciles again.
                for p in std::mem::take(&mut self.failed_batch) {
                    self.fail((p.user, p.client_id), &unavailable);
                }
                for p in std::mem::take(&mut self.pending) {
                    self.fail((p.user, p.client_id), &unavailable);
                }
            }
        }
    }

    pub(super) fn fail(&mut self, key: (String, String), error: &ChatError) {
        let frame = ServerFrame::error(error, Some(key.1.clone())).encode();
        for outbox in self.in_flight.remove(&key).unwrap_or_default() {
            outbox.push_marked(frame.clone(), Marks::answer(&key.1));
        }
    }

    pub(super) fn remember(&mut self, key: (String, String), seq: u64, ts: i64) {
        self.dedupe_order.push_back(key.clone());
        self.dedupe.insert(key, (seq, ts));
        while self.dedupe_order.len() > self.ctx.limits.dedupe_window {
            if let Some(old) = self.dedupe_order.pop_front() {
                self.dedupe.remove(&old);
            }
        }
    }
}

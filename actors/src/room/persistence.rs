//! Behind the log: history writes, checkpoints, and reads of history
//! (pages, and the ranges a replay needs).

use super::*;

impl RoomState {
    /// Writes unflushed messages to history, one batch at a time.
    pub(super) fn write_history(&mut self, myself: &ActorRef<RoomMsg>) {
        if self.history_writing || self.db_reading {
            return;
        }
        if self.unflushed.is_empty() {
            self.next_db_job(myself);
            return;
        }
        let batch: Vec<ChatMessage> = self
            .unflushed
            .iter()
            .take(1000)
            .map(|(m, _)| m.clone())
            .collect();
        let up_to = batch.last().map(|m| m.seq).unwrap_or(self.history_seq);
        self.history_writing = true;
        let history = self.ctx.stores.history.clone();
        let myself = myself.clone();
        tokio::spawn(async move {
            let result = history.write(&batch).await;
            let _ = myself.cast(RoomMsg::HistoryWritten { up_to, result });
        });
    }

    pub(super) fn history_written(
        &mut self,
        myself: &ActorRef<RoomMsg>,
        up_to: u64,
        result: Result<(), StoreError>,
    ) {
        self.history_writing = false;
        match result {
            Ok(()) => {
                while let Some((m, position)) = self.unflushed.front() {
                    if m.seq > up_to {
                        break;
                    }
                    self.history_seq = m.seq;
                    self.history_position = position + 1;
                    self.unflushed.pop_front();
                }
                let due =
                    self.history_seq >= self.checkpoint_seq + self.ctx.tuning.checkpoint_every;
                if due {
                    self.maybe_checkpoint_now();
                }
                // Reads of history and writes take turns.
                if self.db_jobs.is_empty() {
                    self.write_history(myself);
                } else {
                    self.next_db_job(myself);
                }
            }
            Err(e) => {
                // Retried on the next append or tick; the log still holds these.
                tracing::warn!(room = %self.name, error = %e, "history write failed");
                self.next_db_job(myself);
            }
        }
    }

    pub(super) fn checkpoint(&self) -> Checkpoint {
        Checkpoint {
            room: self.name.clone(),
            epoch: self.epoch,
            last_seq: self.history_seq,
            log_position: self.history_position,
            history_seq: self.history_seq,
        }
    }

    pub(super) fn maybe_checkpoint(&mut self) {
        let stale = self.checkpoint_seq < self.history_seq
            && self.checkpoint_at.elapsed() >= self.ctx.tuning.checkpoint_interval;
        if stale {
            self.maybe_checkpoint_now();
        }
    }

    pub(super) fn maybe_checkpoint_now(&mut self) {
        let checkpoint = self.checkpoint();
        self.checkpoint_seq = checkpoint.history_seq;
        self.checkpoint_at = Instant::now();
        let store = self.ctx.stores.checkpoints.clone();
        tokio::spawn(async move {
            if let Err(e) = store.save(&checkpoint).await {
                tracing::warn!(room = %checkpoint.room, error = %e, "checkpoint failed");
            }
        });
    }

    pub(super) fn history(
        &self,
        user: &str,
        query: HistoryQuery,
        limit: usize,
        reply: RpcReplyPort<Result<Vec<ChatMessage>, ChatError>>,
    ) {
        if let Err(e) = self.check_reader(user) {
            let _ = reply.send(Err(e));
            return;
        }
        // Which seqs the page may need, to tell whether the cache has them all.
        let lowest = match (query.after, query.before) {
            (Some(after), _) => after + 1,
            (None, Some(before)) => before.saturating_sub(limit as u64).max(1),
            (None, None) => self.last_seq.saturating_sub(limit as u64).max(1),
        };
        let first_cached = self
            .recent
            .front()
            .map(|c| c.message.seq)
            .unwrap_or(self.last_seq + 1);
        if lowest >= first_cached || self.last_seq == 0 {
            let cached: Vec<&Cached> = self.recent.iter().collect();
            let page = select_page(&cached, |c| c.message.seq, query, limit);
            let _ = reply.send(Ok(page
                .iter()
                .map(|c| self.as_now(c.message.clone()))
                .collect()));
            return;
        }
        let history = self.ctx.stores.history.clone();
        let unflushed: Vec<ChatMessage> = self
            .unflushed
            .iter()
            .map(|(m, _)| self.as_now(m.clone()))
            .collect();
        let room = self.name.clone();
        tokio::spawn(async move {
            let answer = match history.page(&room, query, limit).await {
                Ok(mut stored) => {
                    stored.extend(unflushed);
                    stored.sort_by_key(|m| m.seq);
                    stored.dedup_by_key(|m| m.seq);
                    Ok(select_page(&stored, |m| m.seq, query, limit).to_vec())
                }
                Err(e) => Err(ChatError::unavailable(e.to_string())),
            };
            let _ = reply.send(answer);
        });
    }
}

/// Every message of `room` with after < seq <= upper, from history and the
/// not yet written tail.
pub(super) async fn read_range(
    history: &dyn crate::store::History,
    room: &str,
    after: u64,
    upper: u64,
    unflushed: Vec<ChatMessage>,
) -> Result<Vec<ChatMessage>, StoreError> {
    let mut out: BTreeMap<u64, ChatMessage> = BTreeMap::new();
    let mut cursor = after;
    let first_unflushed = unflushed.first().map(|m| m.seq).unwrap_or(u64::MAX);
    while cursor < upper && cursor + 1 < first_unflushed {
        let query = HistoryQuery {
            after: Some(cursor),
            before: None,
            limit: None,
        };
        let page = history.page(room, query, 500).await?;
        let Some(last) = page.last().map(|m| m.seq) else {
            break;
        };
        for m in page {
            out.insert(m.seq, m);
        }
        cursor = last;
    }
    for m in unflushed {
        out.insert(m.seq, m);
    }
    Ok(out
        .into_values()
        .filter(|m| m.seq > after && m.seq <= upper)
        .collect())
}

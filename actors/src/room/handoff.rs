//! Leaving this node: handoff to the new owner, fencing by another node's
//! lease, and the flush of history and checkpoint on the way out.

use super::*;

impl RoomState {
    /// Stops taking sends and stops once the append in flight is answered.
    pub(super) fn leave_node(&mut self, myself: &ActorRef<RoomMsg>, why: Leaving) {
        if self.leaving != Some(Leaving::Fenced) {
            self.leaving = Some(why);
        }
        tracing::info!(room = %self.name, node = %self.ctx.node, epoch = self.epoch, reason = ?why, "room leaving this node");
        // Queued sends never reached the log: their senders resend to the new owner.
        for p in std::mem::take(&mut self.pending) {
            self.fail((p.user, p.client_id), &moving());
        }
        self.fail_held(&moving());
        if !self.reconciling {
            for p in std::mem::take(&mut self.failed_batch) {
                self.fail((p.user, p.client_id), &moving());
            }
        }
        self.stop_if_leaving(myself);
    }

    pub(super) fn stop_if_leaving(&mut self, myself: &ActorRef<RoomMsg>) {
        if self.leaving.is_some() && !self.appending && !self.reconciling && !self.draining {
            // Whatever is already queued is answered (sends with `unavailable`);
            // later messages are refused, so their senders look again.
            self.draining = true;
            let _ = myself.drain();
        }
    }

    /// After the final checkpoint: gives the lease up and sends every
    /// subscriber to the new owner, from the last seq it was sent.
    pub(super) async fn moved_away(&mut self, why: Leaving) {
        if why == Leaving::Handoff {
            crate::metrics::ROOM_HANDOFFS.inc();
            if let Some(leases) = &self.ctx.stores.leases {
                match leases.release(&self.name, &self.ctx.node, self.epoch).await {
                    Ok(()) => {
                        tracing::info!(room = %self.name, node = %self.ctx.node, epoch = self.epoch, "room lease released")
                    }
                    Err(e) => {
                        tracing::warn!(room = %self.name, node = %self.ctx.node, epoch = self.epoch, error = %e, "lease release failed; the next owner takes it anyway")
                    }
                }
            }
        }
        // Sessions on other nodes follow from their own router, which knows
        // what it delivered: it acts on the membership change, or on this
        // notice when its view did not change (a fenced room).
        if let Some(router) = &self.ctx.router {
            let _ = router.cast(RouterMsg::RoomRestarted {
                room: self.name.clone(),
            });
        }
        for sub in self
            .subscribers
            .values()
            .filter(|s| s.session.outbox.remote_session().is_none())
        {
            let after = match sub.state {
                SubState::Live { .. } => Some(self.last_seq),
                SubState::Pending { .. } => None,
            };
            let _ = sub.session.actor.cast(SessionMsg::Moved {
                room: self.name.clone(),
                after,
            });
        }
        tracing::info!(
            room = %self.name,
            node = %self.ctx.node,
            epoch = self.epoch,
            last_seq = self.last_seq,
            subscribers = self.subscribers.len(),
            reason = ?why,
            "room handed off"
        );
    }

    pub(super) async fn flush_for_stop(&mut self) {
        let batch: Vec<ChatMessage> = self.unflushed.iter().map(|(m, _)| m.clone()).collect();
        if !batch.is_empty() {
            match self.ctx.stores.history.write(&batch).await {
                Ok(()) => {
                    if let Some((m, position)) = self.unflushed.back() {
                        self.history_seq = m.seq;
                        self.history_position = position + 1;
                    }
                    self.unflushed.clear();
                }
                Err(e) => {
                    tracing::warn!(room = %self.name, error = %e, "history write at stop failed")
                }
            }
        }
        if self.history_seq > self.checkpoint_seq || self.checkpoint_seq == 0 {
            if let Err(e) = self.ctx.stores.checkpoints.save(&self.checkpoint()).await {
                tracing::warn!(room = %self.name, error = %e, "checkpoint at stop failed");
            }
        }
    }
}

//! The bounded outbound queue of one connection.
//!
//! Rooms push pre-encoded frames straight into it (one encode per message, not
//! per member). When it is full the connection is a slow consumer: the push
//! fails, the overflow token fires and the socket writer closes with 4008, so
//! a slow client never slows its rooms.

use std::sync::Arc;

use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::Utf8Bytes;
use tokio_util::sync::CancellationToken;

use crate::frames::ServerFrame;

/// What the socket writer sends.
#[derive(Debug, Clone)]
pub enum Outbound {
    Text(Utf8Bytes),
    /// Several frames in order (a room's commit batch), queued at once.
    Batch(Arc<[Utf8Bytes]>),
    /// Close the socket with this code and reason.
    Close(u16, &'static str),
}

/// The sending side, held by the connection's Session and by its rooms.
#[derive(Debug, Clone)]
pub struct Outbox {
    tx: mpsc::Sender<Outbound>,
    overflow: CancellationToken,
}

/// The receiving side, owned by the socket writer.
#[derive(Debug)]
pub struct OutboxReceiver {
    pub frames: mpsc::Receiver<Outbound>,
    /// Fires when a push found the queue full.
    pub overflow: CancellationToken,
}

impl Outbox {
    pub fn channel(capacity: usize) -> (Outbox, OutboxReceiver) {
        let (tx, frames) = mpsc::channel(capacity.max(1));
        let overflow = CancellationToken::new();
        (
            Outbox {
                tx,
                overflow: overflow.clone(),
            },
            OutboxReceiver { frames, overflow },
        )
    }

    /// Queues an encoded frame; false when the connection is gone or too slow.
    pub fn push(&self, frame: Utf8Bytes) -> bool {
        self.push_outbound(Outbound::Text(frame))
    }

    pub fn push_batch(&self, frames: Arc<[Utf8Bytes]>) -> bool {
        self.push_outbound(Outbound::Batch(frames))
    }

    pub fn push_frame(&self, frame: &ServerFrame) -> bool {
        self.push(frame.encode())
    }

    /// Asks the writer to close the socket (queued after what is already there).
    pub fn close(&self, code: u16, reason: &'static str) {
        // A full queue means the writer closes with 4008 anyway.
        let _ = self.tx.try_send(Outbound::Close(code, reason));
    }

    fn push_outbound(&self, out: Outbound) -> bool {
        if self.overflow.is_cancelled() {
            return false;
        }
        match self.tx.try_send(out) {
            Ok(()) => true,
            Err(mpsc::error::TrySendError::Full(_)) => {
                self.overflow.cancel();
                false
            }
            Err(mpsc::error::TrySendError::Closed(_)) => false,
        }
    }

    /// Completes when a push found the queue full.
    pub async fn overflowed(&self) {
        self.overflow.cancelled().await
    }

    /// The connection is gone, or was declared a slow consumer.
    pub fn is_closed(&self) -> bool {
        self.tx.is_closed() || self.overflow.is_cancelled()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_full_queue_marks_the_consumer_slow() {
        let (outbox, mut rx) = Outbox::channel(2);
        assert!(outbox.push("a".into()));
        assert!(outbox.push("b".into()));
        assert!(!outbox.push("c".into()));
        assert!(rx.overflow.is_cancelled());
        assert!(outbox.is_closed());
        assert!(matches!(rx.frames.try_recv(), Ok(Outbound::Text(t)) if t.as_str() == "a"));
    }
}

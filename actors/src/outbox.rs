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

use crate::cluster::link::{Frames, RemoteSession};
use crate::frames::ServerFrame;
use crate::metrics;

/// What the socket writer sends.
#[derive(Debug, Clone)]
pub enum Outbound {
    Text(Utf8Bytes),
    /// Several frames in order (a room's commit batch), queued at once.
    Batch(Arc<[Utf8Bytes]>),
    /// Close the socket with this code and reason.
    Close(u16, &'static str),
}

/// The sending side, held by the connection's Session and by its rooms. A
/// room owned by another node than the connection's holds a remote outbox:
/// what it pushes travels over the link to that node, whose router pushes it
/// into the connection's real outbox.
#[derive(Debug, Clone)]
pub struct Outbox {
    target: Target,
}

#[derive(Debug, Clone)]
enum Target {
    Local {
        tx: mpsc::Sender<Outbound>,
        overflow: CancellationToken,
    },
    Remote(RemoteSession),
}

/// The receiving side, owned by the socket writer.
#[derive(Debug)]
pub struct OutboxReceiver {
    pub frames: mpsc::Receiver<Outbound>,
    /// Fires when a push found the queue full.
    pub overflow: CancellationToken,
}

impl Outbound {
    /// How many frames this is (for `troupe_outbox_queued_frames`).
    fn frames(&self) -> i64 {
        match self {
            Outbound::Text(_) => 1,
            Outbound::Batch(batch) => batch.len() as i64,
            Outbound::Close(..) => 0,
        }
    }
}

impl OutboxReceiver {
    /// The next queued item (None once every sender is gone).
    pub async fn recv(&mut self) -> Option<Outbound> {
        let out = self.frames.recv().await;
        out.inspect(|o| metrics::OUTBOX_QUEUED_FRAMES.sub(o.frames()))
    }

    /// A queued item, if one is there now.
    pub fn try_recv(&mut self) -> Option<Outbound> {
        let out = self.frames.try_recv().ok();
        out.inspect(|o| metrics::OUTBOX_QUEUED_FRAMES.sub(o.frames()))
    }
}

impl Drop for OutboxReceiver {
    /// What the writer never took leaves the queue-depth gauge too.
    fn drop(&mut self) {
        self.frames.close();
        while self.try_recv().is_some() {}
    }
}

impl Outbox {
    pub fn channel(capacity: usize) -> (Outbox, OutboxReceiver) {
        let (tx, frames) = mpsc::channel(capacity.max(1));
        let overflow = CancellationToken::new();
        (
            Outbox {
                target: Target::Local {
                    tx,
                    overflow: overflow.clone(),
                },
            },
            OutboxReceiver { frames, overflow },
        )
    }

    /// The outbox of a session on another node, reached through `link`.
    pub fn remote(session: RemoteSession) -> Outbox {
        Outbox {
            target: Target::Remote(session),
        }
    }

    /// The remote session behind this outbox, if it is one.
    pub fn remote_session(&self) -> Option<&RemoteSession> {
        match &self.target {
            Target::Remote(r) => Some(r),
            Target::Local { .. } => None,
        }
    }

    /// Queues an encoded frame; false when the connection is gone or too slow.
    pub fn push(&self, frame: Utf8Bytes) -> bool {
        match &self.target {
            Target::Remote(r) => r.send(Frames::One(frame)),
            Target::Local { .. } => self.push_outbound(Outbound::Text(frame)),
        }
    }

    pub fn push_batch(&self, frames: Arc<[Utf8Bytes]>) -> bool {
        match &self.target {
            Target::Remote(r) => r.send(Frames::Many(frames)),
            Target::Local { .. } => self.push_outbound(Outbound::Batch(frames)),
        }
    }

    pub fn push_frame(&self, frame: &ServerFrame) -> bool {
        self.push(frame.encode())
    }

    /// Asks the writer to close the socket (queued after what is already there).
    pub fn close(&self, code: u16, reason: &'static str) {
        // A full queue means the writer closes with 4008 anyway.
        if let Target::Local { tx, .. } = &self.target {
            let _ = tx.try_send(Outbound::Close(code, reason));
        }
    }

    fn push_outbound(&self, out: Outbound) -> bool {
        let Target::Local { tx, overflow } = &self.target else {
            return false;
        };
        if overflow.is_cancelled() {
            return false;
        }
        // Counted before the send, so the writer never takes a frame not yet counted.
        let frames = out.frames();
        metrics::OUTBOX_QUEUED_FRAMES.add(frames);
        match tx.try_send(out) {
            Ok(()) => true,
            Err(mpsc::error::TrySendError::Full(_)) => {
                metrics::OUTBOX_QUEUED_FRAMES.sub(frames);
                overflow.cancel();
                false
            }
            Err(mpsc::error::TrySendError::Closed(_)) => {
                metrics::OUTBOX_QUEUED_FRAMES.sub(frames);
                false
            }
        }
    }

    /// Completes when a push found the queue full.
    pub async fn overflowed(&self) {
        match &self.target {
            Target::Local { overflow, .. } => overflow.cancelled().await,
            Target::Remote(_) => std::future::pending().await,
        }
    }

    /// Frames queued for the socket writer and not yet taken (0 for a remote outbox).
    pub fn queued(&self) -> usize {
        match &self.target {
            Target::Local { tx, .. } => tx.max_capacity() - tx.capacity(),
            Target::Remote(_) => 0,
        }
    }

    /// The connection is gone, or was declared a slow consumer.
    pub fn is_closed(&self) -> bool {
        match &self.target {
            Target::Local { tx, overflow } => tx.is_closed() || overflow.is_cancelled(),
            Target::Remote(r) => r.link.is_closed(),
        }
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

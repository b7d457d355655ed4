//! The bounded outbound queue of one connection.
//!
//! Rooms push pre-encoded frames straight into it (one encode per message, not
//! per member). It is bounded twice: in items (`limits.outbound_queue`) and in
//! bytes (`limits.outbound_queue_bytes`), because one item can be a whole
//! commit batch or a multi-megabyte history page. The bytes of a frame count
//! from its push until the socket writer has written it to the socket, so
//! what the writer holds in its hand counts too. A push past either bound
//! makes the connection a slow consumer: the push fails, the overflow token
//! fires and the socket writer closes with 4008, so a slow client never slows
//! its rooms and never holds more than the budget of the node's memory.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::Utf8Bytes;
use tokio_util::sync::CancellationToken;

use crate::cluster::link::{Frames, RemoteSession};
use crate::frames::ServerFrame;
use crate::metrics;

/// What pushed frames mean for where a connection is in its room, as the
/// room that pushes them knows: a remote outbox sends them beside the frames,
/// so the node of the connection tracks each session's position and
/// answered sends without reading a frame (see `cluster/router.rs`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Marks {
    /// The seq the frames bring the connection to: a `message`'s seq (the
    /// last of a batch), a `joined`'s `last_seq`.
    pub last_seq: Option<u64>,
    /// The send they answer: an `ack`'s `client_id`, an `error`'s `ref`.
    pub answers: Option<String>,
}

impl Marks {
    pub fn seq(seq: u64) -> Marks {
        Marks {
            last_seq: Some(seq),
            answers: None,
        }
    }

    pub fn answer(client_id: &str) -> Marks {
        Marks {
            last_seq: None,
            answers: Some(client_id.to_string()),
        }
    }

    /// The marks of one frame, from its variant (no encoding read).
    pub fn of(frame: &ServerFrame) -> Marks {
        match frame {
            ServerFrame::Message(m) => Marks::seq(m.seq),
            ServerFrame::Joined { last_seq, .. } => Marks::seq(*last_seq),
            ServerFrame::Ack { client_id, .. } => Marks::answer(client_id),
            ServerFrame::Error {
                reference: Some(r), ..
            } => Marks::answer(r),
            _ => Marks::default(),
        }
    }
}

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
        bytes: Arc<ByteBudget>,
    },
    Remote(RemoteSession),
}

/// The bytes one connection's queue holds, from push to socket write. One
/// connection's own counter (its outbox's senders and its writer share it),
/// not state shared between actors.
#[derive(Debug)]
struct ByteBudget {
    queued: AtomicUsize,
    limit: usize,
}

impl ByteBudget {
    /// Counts `n` more bytes; false (and nothing counted) when that would go
    /// past the limit. A queue holding nothing takes any one item, so an
    /// answer larger than the budget still reaches a client that reads.
    fn charge(&self, n: usize) -> bool {
        let charged = self
            .queued
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |queued| {
                let total = queued.saturating_add(n);
                (queued == 0 || total <= self.limit).then_some(total)
            })
            .is_ok();
        if charged {
            metrics::OUTBOX_QUEUED_BYTES.inc_by(n as i64);
        }
        charged
    }

    fn release(&self, n: usize) {
        if n > 0 {
            self.queued.fetch_sub(n, Ordering::AcqRel);
            metrics::OUTBOX_QUEUED_BYTES.dec_by(n as i64);
        }
    }
}

/// The receiving side, owned by the socket writer.
#[derive(Debug)]
pub struct OutboxReceiver {
    pub frames: mpsc::Receiver<Outbound>,
    /// Fires when a push found the queue full.
    pub overflow: CancellationToken,
    bytes: Arc<ByteBudget>,
    /// Bytes of the items taken by the writer and not yet [`Self::written`].
    in_hand: usize,
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

    /// The bytes this item puts on the socket (its frames' text).
    pub fn bytes(&self) -> usize {
        match self {
            Outbound::Text(text) => text.len(),
            Outbound::Batch(batch) => batch.iter().map(|t| t.len()).sum(),
            Outbound::Close(..) => 0,
        }
    }
}

impl OutboxReceiver {
    /// The next queued item (None once every sender is gone). Its bytes
    /// still count against the budget until [`Self::written`].
    pub async fn recv(&mut self) -> Option<Outbound> {
        let out = self.frames.recv().await;
        out.inspect(|o| self.take(o))
    }

    /// A queued item, if one is there now (counted like [`Self::recv`]).
    pub fn try_recv(&mut self) -> Option<Outbound> {
        let out = self.frames.try_recv().ok();
        out.inspect(|o| self.take(o))
    }

    fn take(&mut self, out: &Outbound) {
        metrics::OUTBOX_QUEUED_FRAMES.dec_by(out.frames());
        self.in_hand += out.bytes();
    }

    /// Everything taken so far is on the socket: its bytes leave the budget.
    pub fn written(&mut self) {
        self.bytes.release(std::mem::take(&mut self.in_hand));
    }

    /// Bytes queued or in the writer's hand, not yet written to the socket.
    pub fn queued_bytes(&self) -> usize {
        self.bytes.queued.load(Ordering::Acquire)
    }
}

impl Drop for OutboxReceiver {
    /// What the writer never took, or never wrote, leaves the gauges too.
    fn drop(&mut self) {
        self.frames.close();
        while self.try_recv().is_some() {}
        self.written();
    }
}

impl Outbox {
    /// A connection's queue: at most `capacity` items and `max_bytes` bytes.
    pub fn channel(capacity: usize, max_bytes: usize) -> (Outbox, OutboxReceiver) {
        let (tx, frames) = mpsc::channel(capacity.max(1));
        let overflow = CancellationToken::new();
        let bytes = Arc::new(ByteBudget {
            queued: AtomicUsize::new(0),
            limit: max_bytes,
        });
        (
            Outbox {
                target: Target::Local {
                    tx,
                    overflow: overflow.clone(),
                    bytes: bytes.clone(),
                },
            },
            OutboxReceiver {
                frames,
                overflow,
                bytes,
                in_hand: 0,
            },
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

    /// Queues an encoded frame that moves no seq and answers no send (see
    /// [`Marks`]); false when the connection is gone or too slow.
    pub fn push(&self, frame: Utf8Bytes) -> bool {
        self.push_marked(frame, Marks::default())
    }

    /// Queues an encoded frame with what it means for the connection's position.
    pub fn push_marked(&self, frame: Utf8Bytes, marks: Marks) -> bool {
        match &self.target {
            Target::Remote(r) => r.send(Frames::One(frame), marks),
            Target::Local { .. } => self.push_outbound(Outbound::Text(frame)),
        }
    }

    /// Queues frames at once; `marks` covers them all (a batch of messages:
    /// the last one's seq).
    pub fn push_batch(&self, frames: Arc<[Utf8Bytes]>, marks: Marks) -> bool {
        match &self.target {
            Target::Remote(r) => r.send(Frames::Many(frames), marks),
            Target::Local { .. } => self.push_outbound(Outbound::Batch(frames)),
        }
    }

    pub fn push_frame(&self, frame: &ServerFrame) -> bool {
        self.push_marked(frame.encode(), Marks::of(frame))
    }

    /// Asks the writer to close the socket (queued after what is already there).
    pub fn close(&self, code: u16, reason: &'static str) {
        // A full queue means the writer closes with 4008 anyway.
        if let Target::Local { tx, .. } = &self.target {
            let _ = tx.try_send(Outbound::Close(code, reason));
        }
    }

    fn push_outbound(&self, out: Outbound) -> bool {
        let Target::Local {
            tx,
            overflow,
            bytes,
        } = &self.target
        else {
            return false;
        };
        if overflow.is_cancelled() {
            return false;
        }
        // Counted before the send, so the writer never takes a frame not yet counted.
        let size = out.bytes();
        if !bytes.charge(size) {
            overflow.cancel();
            return false;
        }
        let frames = out.frames();
        metrics::OUTBOX_QUEUED_FRAMES.inc_by(frames);
        match tx.try_send(out) {
            Ok(()) => true,
            Err(mpsc::error::TrySendError::Full(_)) => {
                metrics::OUTBOX_QUEUED_FRAMES.dec_by(frames);
                bytes.release(size);
                overflow.cancel();
                false
            }
            Err(mpsc::error::TrySendError::Closed(_)) => {
                metrics::OUTBOX_QUEUED_FRAMES.dec_by(frames);
                bytes.release(size);
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

    /// Bytes queued or in the writer's hand, not yet on the socket (0 for a remote outbox).
    pub fn queued_bytes(&self) -> usize {
        match &self.target {
            Target::Local { bytes, .. } => bytes.queued.load(Ordering::Acquire),
            Target::Remote(_) => 0,
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
            Target::Local { tx, overflow, .. } => tx.is_closed() || overflow.is_cancelled(),
            Target::Remote(r) => r.link.is_closed(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_full_queue_marks_the_consumer_slow() {
        let (outbox, mut rx) = Outbox::channel(2, 1 << 20);
        assert!(outbox.push("a".into()));
        assert!(outbox.push("b".into()));
        assert!(!outbox.push("c".into()));
        assert!(rx.overflow.is_cancelled());
        assert!(outbox.is_closed());
        assert!(matches!(rx.frames.try_recv(), Ok(Outbound::Text(t)) if t.as_str() == "a"));
    }

    #[test]
    fn a_push_past_the_byte_budget_marks_the_consumer_slow() {
        let (outbox, rx) = Outbox::channel(1024, 10);
        assert!(outbox.push("1234".into()));
        assert!(outbox.push_batch(Arc::from(vec!["12".into(), "34".into()]), Marks::default()));
        assert_eq!(outbox.queued_bytes(), 8);
        // 8 + 3 > 10: refused, and nothing more is counted.
        assert!(!outbox.push("123".into()));
        assert!(rx.overflow.is_cancelled());
        assert_eq!(outbox.queued_bytes(), 8);
        assert!(
            !outbox.push("1".into()),
            "a slow consumer takes nothing more"
        );
    }

    #[test]
    fn bytes_count_until_the_writer_has_written_them() {
        let (outbox, mut rx) = Outbox::channel(1024, 10);
        assert!(outbox.push("12345".into()));
        assert!(outbox.push("12345".into()));
        // Taken by the writer but not yet on the socket: still counted.
        assert!(rx.try_recv().is_some());
        assert!(rx.try_recv().is_some());
        assert_eq!(rx.queued_bytes(), 10);
        assert!(
            !outbox.push("1".into()),
            "frames in the writer's hand count"
        );
        let (outbox, mut rx) = Outbox::channel(1024, 10);
        assert!(outbox.push("12345".into()));
        assert!(outbox.push("12345".into()));
        assert!(rx.try_recv().is_some());
        rx.written();
        assert_eq!(rx.queued_bytes(), 5, "the written frame left the budget");
        assert!(outbox.push("12345".into()));
        assert!(!rx.overflow.is_cancelled());
    }

    #[test]
    fn an_empty_queue_takes_one_item_larger_than_the_budget() {
        let (outbox, _rx) = Outbox::channel(1024, 4);
        assert!(outbox.push("123456".into()), "alone, it still goes out");
        assert!(!outbox.push("1".into()), "but nothing after it");
        let (outbox, mut rx2) = Outbox::channel(1024, 4);
        assert!(outbox.push("123456".into()));
        assert!(rx2.try_recv().is_some());
        rx2.written();
        assert!(
            outbox.push("123456".into()),
            "once written, the next one goes too"
        );
    }

    #[test]
    fn a_closed_connection_gives_its_bytes_back() {
        let (outbox, mut rx) = Outbox::channel(1024, 100);
        assert!(outbox.push("12345".into()));
        assert!(outbox.push("12345".into()));
        assert!(rx.try_recv().is_some());
        drop(rx);
        assert_eq!(
            outbox.queued_bytes(),
            0,
            "queued and in-hand bytes released"
        );
        assert!(!outbox.push("1".into()));
        assert_eq!(
            outbox.queued_bytes(),
            0,
            "a push to a closed queue counts nothing"
        );
    }
}

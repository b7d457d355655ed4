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
//!
//! The queue is a `VecDeque` under a mutex rather than a channel: a tokio
//! channel allocates its first block of 32 slots (1.3 KB) and 512 bytes of
//! state when it is made, for every connection, idle or not. This one
//! allocates on the first push, and the writer takes everything queued at once
//! (its buffer with it), so an idle connection holds no buffer at all.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use tokio::sync::Notify;
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
    Local(Sender),
    /// Shared: an outbox is 16 bytes, not 56, in every session, room
    /// subscription and request that holds one.
    Remote(Arc<RemoteSession>),
}

/// One sending handle of a local queue. The queue counts them, so that its
/// writer learns when the last one is gone.
#[derive(Debug)]
struct Sender(Arc<Queue>);

impl Clone for Sender {
    fn clone(&self) -> Self {
        self.0.senders.fetch_add(1, Ordering::Relaxed);
        Sender(self.0.clone())
    }
}

impl Drop for Sender {
    fn drop(&mut self) {
        if self.0.senders.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.0.ready.notify_one();
        }
    }
}

/// One connection's queue, shared by its senders and its writer (one
/// connection's own state, not state shared between actors).
#[derive(Debug)]
struct Queue {
    /// Unallocated while empty (see the module's comment).
    items: Mutex<VecDeque<Outbound>>,
    /// The most items it holds.
    capacity: usize,
    bytes: ByteBudget,
    /// Wakes the writer: an item was queued, or the last sender is gone.
    /// (A wake-up with no waiter is kept for the next wait.)
    ready: Notify,
    /// Fires when a push found the queue full.
    overflow: CancellationToken,
    senders: AtomicUsize,
    /// The writer is gone: nothing more is queued.
    closed: AtomicBool,
}

impl Queue {
    fn items(&self) -> MutexGuard<'_, VecDeque<Outbound>> {
        // A panic while holding the lock leaves a valid deque.
        self.items.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// The bytes one connection's queue holds, from push to socket write.
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
    queue: Arc<Queue>,
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
    /// The next queued item (None once every sender is gone and nothing is
    /// queued). Its bytes still count against the budget until
    /// [`Self::written`]. Cancel-safe: an item is taken only when returned.
    pub async fn recv(&mut self) -> Option<Outbound> {
        self.recv_many(1)
            .await
            .and_then(|mut items| items.pop_front())
    }

    /// A queued item, if one is there now (counted like [`Self::recv`]).
    pub fn try_recv(&mut self) -> Option<Outbound> {
        self.try_recv_many(1)
            .and_then(|mut items| items.pop_front())
    }

    /// What is queued, in order, at most `max` items, waiting for one if
    /// none is (None once every sender is gone and nothing is queued).
    /// Counted like [`Self::recv`]; cancel-safe like it.
    pub async fn recv_many(&mut self, max: usize) -> Option<VecDeque<Outbound>> {
        loop {
            if let Some(items) = self.try_recv_many(max) {
                return Some(items);
            }
            if self.queue.senders.load(Ordering::Acquire) == 0 {
                // The last push may have come just before the last sender left.
                return self.try_recv_many(max);
            }
            self.queue.ready.notified().await;
        }
    }

    /// What is queued now, at most `max` items (None when nothing is).
    /// Taking everything takes the queue's buffer too: the queue is left
    /// unallocated, and the buffer is freed once the caller drops it.
    pub fn try_recv_many(&mut self, max: usize) -> Option<VecDeque<Outbound>> {
        let items = {
            let mut queued = self.queue.items();
            if queued.is_empty() {
                return None;
            }
            if queued.len() <= max {
                std::mem::take(&mut *queued)
            } else {
                queued.drain(..max.max(1)).collect()
            }
        };
        for out in &items {
            metrics::OUTBOX_QUEUED_FRAMES.dec_by(out.frames());
            self.in_hand += out.bytes();
        }
        Some(items)
    }

    /// Everything taken so far is on the socket: its bytes leave the budget.
    pub fn written(&mut self) {
        self.queue.bytes.release(std::mem::take(&mut self.in_hand));
    }

    /// Bytes queued or in the writer's hand, not yet written to the socket.
    pub fn queued_bytes(&self) -> usize {
        self.queue.bytes.queued.load(Ordering::Acquire)
    }

    /// Completes when a push found the queue full (the client is too slow).
    pub async fn overflowed(&self) {
        self.queue.overflow.cancelled().await
    }

    /// The token that fires when a push found the queue full, to wait on
    /// while the receiver is borrowed otherwise.
    pub fn overflow(&self) -> CancellationToken {
        self.queue.overflow.clone()
    }

    /// A push found the queue full.
    pub fn is_overflowed(&self) -> bool {
        self.queue.overflow.is_cancelled()
    }
}

impl Drop for OutboxReceiver {
    /// What the writer never took, or never wrote, leaves the gauges too;
    /// later pushes fail.
    fn drop(&mut self) {
        let left = {
            let mut queued = self.queue.items();
            self.queue.closed.store(true, Ordering::Release);
            std::mem::take(&mut *queued)
        };
        for out in &left {
            metrics::OUTBOX_QUEUED_FRAMES.dec_by(out.frames());
            self.in_hand += out.bytes();
        }
        self.written();
    }
}

impl Outbox {
    /// A connection's queue: at most `capacity` items and `max_bytes` bytes.
    pub fn channel(capacity: usize, max_bytes: usize) -> (Outbox, OutboxReceiver) {
        let queue = Arc::new(Queue {
            items: Mutex::new(VecDeque::new()),
            capacity: capacity.max(1),
            bytes: ByteBudget {
                queued: AtomicUsize::new(0),
                limit: max_bytes,
            },
            ready: Notify::new(),
            overflow: CancellationToken::new(),
            senders: AtomicUsize::new(1),
            closed: AtomicBool::new(false),
        });
        (
            Outbox {
                target: Target::Local(Sender(queue.clone())),
            },
            OutboxReceiver { queue, in_hand: 0 },
        )
    }

    /// The outbox of a session on another node, reached through `link`.
    pub fn remote(session: impl Into<Arc<RemoteSession>>) -> Outbox {
        Outbox {
            target: Target::Remote(session.into()),
        }
    }

    /// The remote session behind this outbox, if it is one.
    pub fn remote_session(&self) -> Option<&RemoteSession> {
        match &self.target {
            Target::Remote(r) => Some(r),
            Target::Local(_) => None,
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
            Target::Local(_) => self.push_outbound(Outbound::Text(frame)),
        }
    }

    /// Queues frames at once; `marks` covers them all (a batch of messages:
    /// the last one's seq).
    pub fn push_batch(&self, frames: Arc<[Utf8Bytes]>, marks: Marks) -> bool {
        match &self.target {
            Target::Remote(r) => r.send(Frames::Many(frames), marks),
            Target::Local(_) => self.push_outbound(Outbound::Batch(frames)),
        }
    }

    pub fn push_frame(&self, frame: &ServerFrame) -> bool {
        self.push_marked(frame.encode(), Marks::of(frame))
    }

    /// Asks the writer to close the socket (queued after what is already there).
    pub fn close(&self, code: u16, reason: &'static str) {
        // A full queue means the writer closes with 4008 anyway.
        if let Target::Local(Sender(queue)) = &self.target {
            {
                let mut queued = queue.items();
                if queue.closed.load(Ordering::Acquire) || queued.len() >= queue.capacity {
                    return;
                }
                queued.push_back(Outbound::Close(code, reason));
            }
            queue.ready.notify_one();
        }
    }

    fn push_outbound(&self, out: Outbound) -> bool {
        let Target::Local(Sender(queue)) = &self.target else {
            return false;
        };
        if queue.overflow.is_cancelled() || queue.closed.load(Ordering::Acquire) {
            return false;
        }
        // Counted before the push, so the writer never takes a frame not yet counted.
        let size = out.bytes();
        if !queue.bytes.charge(size) {
            queue.overflow.cancel();
            return false;
        }
        let frames = out.frames();
        metrics::OUTBOX_QUEUED_FRAMES.inc_by(frames);
        let refused = {
            let mut queued = queue.items();
            if queue.closed.load(Ordering::Acquire) {
                Some(false)
            } else if queued.len() >= queue.capacity {
                Some(true)
            } else {
                queued.push_back(out);
                None
            }
        };
        match refused {
            None => {
                queue.ready.notify_one();
                true
            }
            Some(full) => {
                metrics::OUTBOX_QUEUED_FRAMES.dec_by(frames);
                queue.bytes.release(size);
                if full {
                    queue.overflow.cancel();
                }
                false
            }
        }
    }

    /// Completes when a push found the queue full.
    pub async fn overflowed(&self) {
        match &self.target {
            Target::Local(Sender(queue)) => queue.overflow.cancelled().await,
            Target::Remote(_) => std::future::pending().await,
        }
    }

    /// Bytes queued or in the writer's hand, not yet on the socket (0 for a remote outbox).
    pub fn queued_bytes(&self) -> usize {
        match &self.target {
            Target::Local(Sender(queue)) => queue.bytes.queued.load(Ordering::Acquire),
            Target::Remote(_) => 0,
        }
    }

    /// Frames queued for the socket writer and not yet taken (0 for a remote outbox).
    pub fn queued(&self) -> usize {
        match &self.target {
            Target::Local(Sender(queue)) => queue.items().len(),
            Target::Remote(_) => 0,
        }
    }

    /// The connection is gone, or was declared a slow consumer.
    pub fn is_closed(&self) -> bool {
        match &self.target {
            Target::Local(Sender(queue)) => {
                queue.closed.load(Ordering::Acquire) || queue.overflow.is_cancelled()
            }
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
        assert!(rx.is_overflowed());
        assert!(outbox.is_closed());
        assert!(matches!(rx.try_recv(), Some(Outbound::Text(t)) if t.as_str() == "a"));
    }

    #[test]
    fn a_push_past_the_byte_budget_marks_the_consumer_slow() {
        let (outbox, rx) = Outbox::channel(1024, 10);
        assert!(outbox.push("1234".into()));
        assert!(outbox.push_batch(Arc::from(vec!["12".into(), "34".into()]), Marks::default()));
        assert_eq!(outbox.queued_bytes(), 8);
        // 8 + 3 > 10: refused, and nothing more is counted.
        assert!(!outbox.push("123".into()));
        assert!(rx.is_overflowed());
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
        assert!(!rx.is_overflowed());
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

    #[test]
    fn taking_everything_leaves_the_queue_unallocated() {
        let (outbox, mut rx) = Outbox::channel(1024, 1 << 20);
        let Target::Local(Sender(queue)) = &outbox.target else {
            unreachable!()
        };
        assert_eq!(
            queue.items().capacity(),
            0,
            "nothing allocated before a push"
        );
        for _ in 0..3 {
            assert!(outbox.push("12345".into()));
        }
        let taken = rx.try_recv_many(256).expect("three items");
        assert_eq!(taken.len(), 3);
        assert_eq!(queue.items().capacity(), 0, "the buffer went with them");
        assert_eq!(rx.queued_bytes(), 15, "in hand until written");
        rx.written();
        assert_eq!(rx.queued_bytes(), 0);
    }

    #[test]
    fn a_batch_takes_at_most_max_items_in_order() {
        let (outbox, mut rx) = Outbox::channel(1024, 1 << 20);
        for i in 0..5 {
            assert!(outbox.push(i.to_string().into()));
        }
        let texts = |items: VecDeque<Outbound>| -> Vec<String> {
            items
                .into_iter()
                .map(|o| match o {
                    Outbound::Text(t) => t.to_string(),
                    other => panic!("{other:?}"),
                })
                .collect()
        };
        assert_eq!(texts(rx.try_recv_many(2).unwrap()), ["0", "1"]);
        assert_eq!(texts(rx.try_recv_many(256).unwrap()), ["2", "3", "4"]);
        assert!(rx.try_recv_many(256).is_none());
    }

    #[tokio::test]
    async fn the_writer_wakes_for_a_push_and_ends_with_the_last_sender() {
        let (outbox, mut rx) = Outbox::channel(16, 1 << 20);
        let second = outbox.clone();
        let pushing = tokio::spawn(async move {
            tokio::task::yield_now().await;
            assert!(second.push("late".into()));
        });
        assert!(matches!(rx.recv().await, Some(Outbound::Text(t)) if t.as_str() == "late"));
        pushing.await.unwrap();
        outbox.close(1000, "bye");
        drop(outbox);
        assert!(matches!(
            rx.recv().await,
            Some(Outbound::Close(1000, "bye"))
        ));
        assert!(rx.recv().await.is_none(), "every sender is gone");
    }

    #[test]
    fn a_push_after_the_writer_left_fails() {
        let (outbox, rx) = Outbox::channel(16, 1 << 20);
        drop(rx);
        assert!(outbox.is_closed());
        assert!(!outbox.push("1".into()));
        assert_eq!(outbox.queued(), 0);
    }
}

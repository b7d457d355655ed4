//! The link from this node to one peer: everything a room here pushes to the
//! peer's sessions goes down one ordered channel, drained by one task that
//! sends it to the peer's router. Consecutive pushes of the same frames (a
//! room's fan-out of one batch to several sessions of that peer) travel as
//! one message naming every target: cross-node traffic grows with nodes, not
//! with members. Each push carries its [`Marks`] (the seq it brings the
//! session to, the send it answers), which travel beside the frames.

use std::sync::Arc;

use ractor::ActorRef;
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::Utf8Bytes;

use super::router::RouterMsg;
use super::wire::{self, Deliver, SessionEvent, WireCast};
use crate::outbox::Marks;

/// Encoded frames pushed at once.
#[derive(Debug, Clone)]
pub enum Frames {
    One(Utf8Bytes),
    Many(Arc<[Utf8Bytes]>),
}

impl Frames {
    fn same(&self, other: &Frames) -> bool {
        match (self, other) {
            (Frames::One(a), Frames::One(b)) => {
                a.as_str().as_ptr() == b.as_str().as_ptr() && a.len() == b.len()
            }
            (Frames::Many(a), Frames::Many(b)) => Arc::ptr_eq(a, b),
            _ => false,
        }
    }

    fn to_vec(&self) -> Vec<Utf8Bytes> {
        match self {
            Frames::One(f) => vec![f.clone()],
            Frames::Many(fs) => fs.to_vec(),
        }
    }
}

/// One thing for a session of the peer.
#[derive(Debug)]
pub enum LinkItem {
    Frames {
        room: Arc<str>,
        session: u64,
        gen: u64,
        frames: Frames,
        marks: Marks,
    },
    Event {
        room: Arc<str>,
        session: u64,
        gen: u64,
        event: SessionEvent,
    },
    /// The peer speaks this wire version: what follows is encoded for it.
    Wire(u32),
}

/// The sending side of a link; cloned into every remote outbox.
#[derive(Debug, Clone)]
pub struct Link {
    pub peer: Arc<str>,
    tx: mpsc::UnboundedSender<LinkItem>,
}

impl Link {
    /// Starts the task that carries items to `router`, the peer's router,
    /// which speaks wire version `wire` (until told otherwise by [`Link::speak`]).
    pub fn open(me: String, peer: String, router: ActorRef<RouterMsg>, wire: u32) -> Link {
        let (tx, rx) = mpsc::unbounded_channel();
        tokio::spawn(carry(me, router, wire, rx));
        Link {
            peer: peer.into(),
            tx,
        }
    }

    pub fn send(&self, item: LinkItem) -> bool {
        self.tx.send(item).is_ok()
    }

    /// The peer speaks wire version `wire` now (it was upgraded, or its
    /// version was not known when the link opened).
    pub fn speak(&self, wire: u32) {
        let _ = self.tx.send(LinkItem::Wire(wire));
    }

    pub fn is_closed(&self) -> bool {
        self.tx.is_closed()
    }
}

/// A session on another node, as a room here sees it.
#[derive(Debug, Clone)]
pub struct RemoteSession {
    pub link: Link,
    pub room: Arc<str>,
    pub session: u64,
    /// The subscription generation: the peer drops frames of an older one.
    pub gen: u64,
}

impl RemoteSession {
    pub fn send(&self, frames: Frames, marks: Marks) -> bool {
        self.link.send(LinkItem::Frames {
            room: self.room.clone(),
            session: self.session,
            gen: self.gen,
            frames,
            marks,
        })
    }

    pub fn event(&self, event: SessionEvent) -> bool {
        self.link.send(LinkItem::Event {
            room: self.room.clone(),
            session: self.session,
            gen: self.gen,
            event,
        })
    }
}

/// Most items taken from the channel per wake-up.
const DRAIN: usize = 4096;

async fn carry(
    me: String,
    router: ActorRef<RouterMsg>,
    mut wire: u32,
    mut rx: mpsc::UnboundedReceiver<LinkItem>,
) {
    let mut items = Vec::with_capacity(64);
    while rx.recv_many(&mut items, DRAIN).await > 0 {
        let mut pending = Pending::None;
        for item in items.drain(..) {
            match item {
                LinkItem::Frames {
                    room,
                    session,
                    gen,
                    frames,
                    marks,
                } => {
                    // The same frames pushed with the same marks: one batch
                    // fanned out to several sessions of the peer.
                    if let Pending::Frames(d, f) = &mut pending {
                        if *d.room == *room
                            && f.same(&frames)
                            && d.last_seq == marks.last_seq
                            && d.answered.first() == marks.answers.as_ref()
                        {
                            d.targets.push((session, gen));
                            continue;
                        }
                    }
                    if !pending.flush(&router, wire) {
                        return;
                    }
                    let d = Deliver {
                        room: room.to_string(),
                        from: me.clone(),
                        targets: vec![(session, gen)],
                        frames: frames.to_vec(),
                        last_seq: marks.last_seq,
                        answered: marks.answers.into_iter().collect(),
                    };
                    pending = Pending::Frames(d, frames);
                }
                LinkItem::Event {
                    room,
                    session,
                    gen,
                    event,
                } => {
                    // Barriers and moves stay one per cast (they order a
                    // session's own stream); the same presence news for
                    // several sessions of a room travels once.
                    if let Pending::Events {
                        room: r,
                        targets,
                        event: e,
                        ..
                    } = &mut pending
                    {
                        if **r == *room
                            && *e == event
                            && matches!(event, SessionEvent::Presence { .. })
                        {
                            targets.push((session, gen));
                            continue;
                        }
                    }
                    if !pending.flush(&router, wire) {
                        return;
                    }
                    pending = Pending::Events {
                        room,
                        from: me.clone(),
                        targets: vec![(session, gen)],
                        event,
                    };
                }
                LinkItem::Wire(v) => {
                    // What was gathered goes in the form it was gathered for.
                    if !pending.flush(&router, wire) {
                        return;
                    }
                    wire = v;
                }
            }
        }
        if !pending.flush(&router, wire) {
            return;
        }
    }
}

/// What the carrier is gathering: one delivery of the same frames to several
/// sessions, or one event for several sessions.
enum Pending {
    None,
    Frames(Deliver, Frames),
    Events {
        room: Arc<str>,
        from: String,
        targets: Vec<(u64, u64)>,
        event: SessionEvent,
    },
}

impl Pending {
    /// Sends what was gathered, for a peer of wire version `wire`; false
    /// when the peer is gone.
    fn flush(&mut self, router: &ActorRef<RouterMsg>, wire: u32) -> bool {
        match std::mem::replace(self, Pending::None) {
            Pending::None => true,
            Pending::Frames(d, _) => send(router, wire::encode_deliver(&d, wire)),
            Pending::Events {
                room,
                from,
                mut targets,
                event,
            } => {
                let cast = if targets.len() == 1 {
                    let (session, gen) = targets.remove(0);
                    WireCast::Event {
                        room: room.to_string(),
                        from,
                        session,
                        gen,
                        event,
                    }
                } else {
                    WireCast::Events {
                        room: room.to_string(),
                        from,
                        targets,
                        event,
                    }
                };
                send(router, wire::encode_cast(&cast))
            }
        }
    }
}

fn send(router: &ActorRef<RouterMsg>, bytes: Vec<u8>) -> bool {
    // A failed cast means the peer's node session is gone: end the link; its
    // sessions re-subscribe when they hear the owner left their view.
    router.cast(RouterMsg::Cast(bytes)).is_ok()
}

#[cfg(test)]
mod tests {
    use ractor::{Actor, ActorProcessingErr, ActorRef};
    use tokio::sync::mpsc::UnboundedSender;

    use super::*;
    use crate::cluster::wire::{decode_cast, Incoming};

    /// Stands in for a peer's router: hands over every cast it gets.
    struct Sink;

    impl Actor for Sink {
        type Msg = RouterMsg;
        type State = UnboundedSender<Vec<u8>>;
        type Arguments = UnboundedSender<Vec<u8>>;

        async fn pre_start(
            &self,
            _: ActorRef<RouterMsg>,
            tx: UnboundedSender<Vec<u8>>,
        ) -> Result<Self::State, ActorProcessingErr> {
            Ok(tx)
        }

        async fn handle(
            &self,
            _: ActorRef<RouterMsg>,
            msg: RouterMsg,
            tx: &mut Self::State,
        ) -> Result<(), ActorProcessingErr> {
            if let RouterMsg::Cast(bytes) = msg {
                let _ = tx.send(bytes);
            }
            Ok(())
        }
    }

    fn presence(user: &str) -> SessionEvent {
        SessionEvent::Presence {
            user: user.into(),
            online: false,
            last_seen: Some(7),
        }
    }

    #[tokio::test]
    async fn a_presence_change_for_many_sessions_crosses_once() {
        let (tx, mut rx) = mpsc::unbounded_channel();
        let (sink, _) = Actor::spawn(None, Sink, tx).await.unwrap();
        let (link_tx, link_rx) = mpsc::unbounded_channel();
        let room: Arc<str> = "lobby".into();
        let event = |session, event| LinkItem::Event {
            room: room.clone(),
            session,
            gen: 1,
            event,
        };
        // Queued before the carrier runs, so it drains them together.
        for session in 1..=3 {
            link_tx.send(event(session, presence("ann"))).unwrap();
        }
        link_tx.send(event(4, presence("bob"))).unwrap();
        link_tx
            .send(event(5, SessionEvent::Barrier { id: 9 }))
            .unwrap();
        link_tx
            .send(event(6, SessionEvent::Barrier { id: 9 }))
            .unwrap();
        tokio::spawn(carry(
            "n1".into(),
            sink.clone(),
            wire::WIRE_VERSION,
            link_rx,
        ));

        let mut casts = Vec::new();
        for _ in 0..4 {
            let bytes = tokio::time::timeout(std::time::Duration::from_secs(5), rx.recv())
                .await
                .expect("a cast")
                .expect("the sink is up");
            match decode_cast(bytes).expect("a cast decodes") {
                Incoming::Cast(cast) => casts.push(cast),
                Incoming::Deliver(d) => panic!("not an event: {d:?}"),
            }
        }
        match &casts[0] {
            WireCast::Events { targets, event, .. } => {
                assert_eq!(targets, &[(1, 1), (2, 1), (3, 1)]);
                assert_eq!(*event, presence("ann"));
            }
            other => panic!("ann's news should cross once: {other:?}"),
        }
        assert!(
            matches!(&casts[1], WireCast::Event { session: 4, event, .. } if event == &presence("bob"))
        );
        // Barriers order one session's stream: never merged.
        assert!(matches!(&casts[2], WireCast::Event { session: 5, .. }));
        assert!(matches!(&casts[3], WireCast::Event { session: 6, .. }));
        sink.stop(None);
    }

    #[tokio::test]
    async fn a_batch_for_many_sessions_crosses_once_with_its_marks() {
        let (tx, mut rx) = mpsc::unbounded_channel();
        let (sink, _) = Actor::spawn(None, Sink, tx).await.unwrap();
        let (link_tx, link_rx) = mpsc::unbounded_channel();
        let room: Arc<str> = "lobby".into();
        let batch = Frames::Many(Arc::from(vec![Utf8Bytes::from("m1"), "m2".into()]));
        let ack = Frames::One("ack".into());
        let push = |session, frames: &Frames, marks: Marks| LinkItem::Frames {
            room: room.clone(),
            session,
            gen: 1,
            frames: frames.clone(),
            marks,
        };
        link_tx.send(push(1, &ack, Marks::answer("c1"))).unwrap();
        for session in 1..=3 {
            link_tx.send(push(session, &batch, Marks::seq(2))).unwrap();
        }
        tokio::spawn(carry(
            "n1".into(),
            sink.clone(),
            wire::WIRE_VERSION,
            link_rx,
        ));
        let mut deliveries = Vec::new();
        for _ in 0..2 {
            let bytes = tokio::time::timeout(std::time::Duration::from_secs(5), rx.recv())
                .await
                .expect("a cast")
                .expect("the sink is up");
            match decode_cast(bytes).expect("a cast decodes") {
                Incoming::Deliver(d) => deliveries.push(d),
                Incoming::Cast(c) => panic!("not a delivery: {c:?}"),
            }
        }
        assert_eq!(deliveries[0].targets, [(1, 1)]);
        assert_eq!(deliveries[0].answered, ["c1"]);
        assert_eq!(deliveries[0].last_seq, None);
        assert_eq!(deliveries[1].targets, [(1, 1), (2, 1), (3, 1)]);
        assert_eq!(deliveries[1].frames, ["m1", "m2"]);
        assert_eq!(deliveries[1].last_seq, Some(2));
        assert!(deliveries[1].answered.is_empty());
        sink.stop(None);
    }
}

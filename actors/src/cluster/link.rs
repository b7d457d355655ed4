//! The link from this node to one peer: everything a room here pushes to the
//! peer's sessions goes down one ordered channel, drained by one task that
//! sends it to the peer's router. Consecutive pushes of the same frames (a
//! room's fan-out of one batch to several sessions of that peer) travel as
//! one message naming every target: cross-node traffic grows with nodes, not
//! with members.

use std::sync::Arc;

use ractor::ActorRef;
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::Utf8Bytes;

use super::router::RouterMsg;
use super::wire::{self, Deliver, SessionEvent, WireCast};

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

    fn to_strings(&self) -> Vec<String> {
        match self {
            Frames::One(f) => vec![f.as_str().to_string()],
            Frames::Many(fs) => fs.iter().map(|f| f.as_str().to_string()).collect(),
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
    },
    Event {
        room: Arc<str>,
        session: u64,
        gen: u64,
        event: SessionEvent,
    },
}

/// The sending side of a link; cloned into every remote outbox.
#[derive(Debug, Clone)]
pub struct Link {
    pub peer: Arc<str>,
    tx: mpsc::UnboundedSender<LinkItem>,
}

impl Link {
    /// Starts the task that carries items to `router`, the peer's router.
    pub fn open(me: String, peer: String, router: ActorRef<RouterMsg>) -> Link {
        let (tx, rx) = mpsc::unbounded_channel();
        tokio::spawn(carry(me, router, rx));
        Link {
            peer: peer.into(),
            tx,
        }
    }

    pub fn send(&self, item: LinkItem) -> bool {
        self.tx.send(item).is_ok()
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
    pub fn send(&self, frames: Frames) -> bool {
        self.link.send(LinkItem::Frames {
            room: self.room.clone(),
            session: self.session,
            gen: self.gen,
            frames,
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

async fn carry(me: String, router: ActorRef<RouterMsg>, mut rx: mpsc::UnboundedReceiver<LinkItem>) {
    let mut items = Vec::with_capacity(64);
    while rx.recv_many(&mut items, DRAIN).await > 0 {
        let mut pending: Option<Deliver> = None;
        let mut pending_frames: Option<Frames> = None;
        for item in items.drain(..) {
            match item {
                LinkItem::Frames {
                    room,
                    session,
                    gen,
                    frames,
                } => {
                    let joins = matches!(
                        (&pending, &pending_frames),
                        (Some(d), Some(f)) if *d.room == *room && f.same(&frames)
                    );
                    if joins {
                        if let Some(d) = pending.as_mut() {
                            d.targets.push((session, gen));
                        }
                        continue;
                    }
                    if let Some(d) = pending.take() {
                        if !send(&router, wire::encode_deliver(&d)) {
                            return;
                        }
                    }
                    pending = Some(Deliver {
                        room: room.to_string(),
                        from: me.clone(),
                        targets: vec![(session, gen)],
                        frames: frames.to_strings(),
                    });
                    pending_frames = Some(frames);
                }
                LinkItem::Event {
                    room,
                    session,
                    gen,
                    event,
                } => {
                    if let Some(d) = pending.take() {
                        if !send(&router, wire::encode_deliver(&d)) {
                            return;
                        }
                    }
                    pending_frames = None;
                    let cast = WireCast::Event {
                        room: room.to_string(),
                        from: me.clone(),
                        session,
                        gen,
                        event,
                    };
                    if !send(&router, wire::encode_cast(&cast)) {
                        return;
                    }
                }
            }
        }
        if let Some(d) = pending.take() {
            if !send(&router, wire::encode_deliver(&d)) {
                return;
            }
        }
    }
}

fn send(router: &ActorRef<RouterMsg>, bytes: Vec<u8>) -> bool {
    // A failed cast means the peer's node session is gone: end the link; its
    // sessions re-subscribe when they hear the owner left their view.
    router.cast(RouterMsg::Cast(bytes)).is_ok()
}

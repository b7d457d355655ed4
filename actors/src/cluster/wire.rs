//! What nodes say to each other. Every remote message is bytes in one of two
//! ractor variants (`RouterMsg::Cast`, `RouterMsg::Call`): JSON for requests
//! and events, a compact binary form for deliveries (the hot path). Requests
//! carry the sender's node name; the handlers are idempotent (a subscribe
//! replaces, a send is de-duplicated by `client_id`).

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use tokio_tungstenite::tungstenite::Utf8Bytes;

use crate::frames::{ChatError, ChatMessage, HistoryQuery, MessageEvent};
use crate::inspect::{InspectQuery, NodeSnapshot};
use crate::room::{
    CreateSpec, ManageAction, ManageAnswer, MessageQuery, PostRequest, Posted, QueryAnswer,
    RoomInfo,
};

/// The version of what nodes say to each other. Raise it with any change a
/// node of the previous version would misread (a new variant, a changed
/// field), and keep reading the previous version's forms: a node links with
/// peers whose version is its own or adjacent (a rolling upgrade runs two
/// adjacent versions side by side) and refuses the others with a log line.
/// Version 1 is the wire before versions were exchanged (its pings carry none).
/// Version 3 adds messages that live: `RoomCast::Post`, `RoomCall::{Post,
/// Query}` and their replies (a version-2 owner refuses them unread; plain
/// sends still travel as `RoomCast::Send`, which both read).
/// Version 4 adds rooms that people run: `RoomCall::Manage` and its reply.
/// Version 5 adds marked deliveries ([`TAG_DELIVER_MARKED`]): a delivery
/// carries the seq its frames bring a session to and the sends they answer,
/// which the sending room knows, so the receiving router reads no frame. A
/// version-4 peer is sent the unmarked form, and an unmarked delivery from
/// one is marked here as it is read ([`legacy_marks`]).
pub const WIRE_VERSION: u32 = 5;

/// The first version that reads marked deliveries.
const MARKED_SINCE: u32 = 5;

/// The version this node speaks: [`WIRE_VERSION`], or with the `test-hooks`
/// feature `TROUPE_TEST_WIRE_VERSION` (a test runs nodes of two versions).
pub fn wire_version() -> u32 {
    #[cfg(feature = "test-hooks")]
    if let Some(v) = std::env::var("TROUPE_TEST_WIRE_VERSION")
        .ok()
        .and_then(|v| v.parse().ok())
    {
        return v;
    }
    WIRE_VERSION
}

/// Can this node link with a peer of version `theirs`?
pub fn compatible(theirs: u32) -> bool {
    theirs.abs_diff(wire_version()) <= 1
}

fn wire_v1() -> u32 {
    1
}

/// A request to a room from a session on node `from` (fire and forget).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum RoomCast {
    Subscribe {
        session: u64,
        user: String,
        gen: u64,
        pending: bool,
    },
    Unsubscribe {
        session: u64,
    },
    Send {
        session: u64,
        gen: u64,
        user: String,
        client_id: String,
        body: String,
    },
    /// A send with a reply, attachments or an event (version 3).
    Post {
        session: u64,
        gen: u64,
        user: String,
        client_id: String,
        body: String,
        #[serde(default)]
        reply_to: Option<u64>,
        #[serde(default)]
        attachments: Vec<String>,
        #[serde(default)]
        event: Option<MessageEvent>,
    },
    Typing {
        session: u64,
        gen: u64,
        user: String,
        active: bool,
    },
    Read {
        session: u64,
        gen: u64,
        user: String,
        seq: u64,
    },
    PresenceChanged {
        user: String,
        online: bool,
        last_seen: Option<i64>,
    },
}

/// A request to a room that waits for its answer.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum RoomCall {
    /// Start (and create, with `create`) the room.
    Open {
        create: Option<CreateSpec>,
    },
    /// `barrier`: sent back down the link after the replay, so the caller
    /// answers only once every replayed frame has arrived.
    Activate {
        session: u64,
        after: Option<u64>,
        barrier: u64,
        /// Stay pending after the replay (see `RoomMsg::Activate`).
        #[serde(default)]
        hold: bool,
    },
    Join {
        user: String,
    },
    Leave {
        user: String,
    },
    Invite {
        by: String,
        user: String,
    },
    History {
        user: String,
        query: HistoryQuery,
        limit: usize,
    },
    Members {
        user: String,
    },
    Info {
        user: String,
    },
    /// A post from REST, answered with its ack (version 3).
    Post {
        request: PostRequest,
    },
    /// A question about messages (version 3).
    Query {
        user: String,
        query: MessageQuery,
    },
    /// Roles, kicks, topic, deletion (version 4).
    Manage {
        user: String,
        action: ManageAction,
    },
}

/// What a room tells a session beside frames.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum SessionEvent {
    /// The room moved (handoff): re-subscribe with its new owner from `after`.
    Moved { after: Option<u64> },
    /// The user left the room.
    Detached,
    /// Everything the owner sent before this has been delivered.
    Barrier { id: u64 },
    Presence {
        user: String,
        online: bool,
        last_seen: Option<i64>,
    },
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum WireCast {
    Room {
        room: String,
        from: String,
        req: RoomCast,
    },
    Event {
        room: String,
        from: String,
        session: u64,
        gen: u64,
        event: SessionEvent,
    },
    /// The same event for several sessions (session, subscription gen): a
    /// user's presence change reaches a node's members of a room in one cast.
    Events {
        room: String,
        from: String,
        targets: Vec<(u64, u64)>,
        event: SessionEvent,
    },
    /// `user` joined `room`: attach that user's sessions on this node.
    AttachUser {
        room: String,
        user: String,
        joined: String,
        last_seq: u64,
    },
    /// A connection resumed with `resume_token` elsewhere: close the older one.
    TakeOver { resume_token: String, keep: u64 },
    /// The sender leaves the cluster (graceful shutdown).
    Leaving { node: String, incarnation: u64 },
    /// A room of the sender stopped serving its subscribers (it crashed and
    /// restarted, moved away, or was fenced): whoever followed it there
    /// subscribes again, wherever it is now.
    RoomRestarted { room: String, from: String },
    /// An encoded frame for every session of these users on the receiving
    /// node (a friend's presence or request). New in wire version 3:
    /// a peer without it logs the cast as unreadable and drops it, which
    /// costs only the push.
    ToUsers { users: Vec<String>, frame: String },
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum WireCall {
    Room {
        room: String,
        from: String,
        req: RoomCall,
    },
    /// A heartbeat; the answer names the peer and the members it sees.
    Ping {
        from: String,
        addr: String,
        #[serde(default = "wire_v1")]
        wire: u32,
    },
    /// The node's actor tree (the admin endpoints).
    Inspect { query: InspectQuery },
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum WireReply {
    Done(Result<(), ChatError>),
    Activated(u64),
    History(Result<Vec<ChatMessage>, ChatError>),
    Members(Result<Vec<(String, u64)>, ChatError>),
    Info(Result<RoomInfo, ChatError>),
    Posted(Result<Posted, ChatError>),
    Queried(Result<QueryAnswer, ChatError>),
    Managed(Result<ManageAnswer, ChatError>),
    Pong {
        node: String,
        incarnation: u64,
        /// It has joined (a joining node is not given rooms yet).
        ready: bool,
        addr: String,
        /// (name, cluster address) of the nodes it sees.
        peers: Vec<(String, String)>,
        #[serde(default = "wire_v1")]
        wire: u32,
    },
    Inspected(Box<NodeSnapshot>),
    Failed(ChatError),
}

/// Frames from the owner of `room` for sessions (id, subscription gen) of this node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Deliver<F = Utf8Bytes> {
    pub room: String,
    pub from: String,
    pub targets: Vec<(u64, u64)>,
    pub frames: Vec<F>,
    /// The seq these frames bring each target to (the last `message`'s seq,
    /// a `joined`'s `last_seq`), if they move it.
    pub last_seq: Option<u64>,
    /// The `client_id`s of the sends they answer (`ack`, `error` with a `ref`).
    pub answered: Vec<String>,
}

const TAG_JSON: u8 = 1;
/// A delivery of wire versions up to 4: no marks.
const TAG_DELIVER: u8 = 2;
/// A delivery with its marks (version 5).
const TAG_DELIVER_MARKED: u8 = 3;

pub fn encode_cast(cast: &WireCast) -> Vec<u8> {
    let mut out = vec![TAG_JSON];
    serde_json::to_writer(&mut out, cast).expect("wire types serialize");
    out
}

pub fn encode_json<T: Serialize>(value: &T) -> Vec<u8> {
    serde_json::to_vec(value).expect("wire types serialize")
}

pub fn decode_json<T: for<'de> Deserialize<'de>>(bytes: &[u8]) -> Result<T, ChatError> {
    serde_json::from_slice(bytes)
        .map_err(|e| ChatError::unavailable(format!("a peer sent an unreadable message: {e}")))
}

/// The form of a delivery for a peer of wire version `peer`: marked when
/// both ends read it, else the form of version 4 (without the marks).
pub fn encode_deliver<F: AsRef<str>>(d: &Deliver<F>, peer: u32) -> Vec<u8> {
    let marked = peer.min(wire_version()) >= MARKED_SINCE;
    let size = 32
        + d.room.len()
        + d.from.len()
        + d.targets.len() * 16
        + d.frames.iter().map(|f| f.as_ref().len() + 4).sum::<usize>()
        + d.answered.iter().map(|a| a.len() + 4).sum::<usize>();
    let mut out = Vec::with_capacity(size);
    out.push(if marked {
        TAG_DELIVER_MARKED
    } else {
        TAG_DELIVER
    });
    put_str(&mut out, &d.room);
    put_str(&mut out, &d.from);
    out.extend_from_slice(&(d.targets.len() as u32).to_le_bytes());
    for (session, gen) in &d.targets {
        out.extend_from_slice(&session.to_le_bytes());
        out.extend_from_slice(&gen.to_le_bytes());
    }
    out.extend_from_slice(&(d.frames.len() as u32).to_le_bytes());
    for f in &d.frames {
        put_str(&mut out, f.as_ref());
    }
    if marked {
        match d.last_seq {
            Some(seq) => {
                out.push(1);
                out.extend_from_slice(&seq.to_le_bytes());
            }
            None => out.push(0),
        }
        out.extend_from_slice(&(d.answered.len() as u32).to_le_bytes());
        for id in &d.answered {
            put_str(&mut out, id);
        }
    }
    out
}

/// A cast from a peer: either a delivery or a JSON message.
pub enum Incoming {
    Deliver(Deliver),
    Cast(WireCast),
}

pub fn decode_cast(bytes: Vec<u8>) -> Result<Incoming, String> {
    match bytes.first() {
        Some(&TAG_JSON) => serde_json::from_slice(&bytes[1..])
            .map(Incoming::Cast)
            .map_err(|e| e.to_string()),
        Some(&TAG_DELIVER) => {
            let mut d = decode_deliver(Bytes::from(bytes).slice(1..), false)?;
            (d.last_seq, d.answered) = legacy_marks(&d.frames);
            Ok(Incoming::Deliver(d))
        }
        Some(&TAG_DELIVER_MARKED) => {
            decode_deliver(Bytes::from(bytes).slice(1..), true).map(Incoming::Deliver)
        }
        _ => Err("unknown message tag".into()),
    }
}

/// Reads a delivery; its frames are slices of the received buffer, not copies.
fn decode_deliver(bytes: Bytes, marked: bool) -> Result<Deliver, String> {
    let mut b = &bytes[..];
    let room = String::from_utf8(get_bytes(&mut b)?.to_vec()).map_err(|e| e.to_string())?;
    let from = String::from_utf8(get_bytes(&mut b)?.to_vec()).map_err(|e| e.to_string())?;
    let n = get_u32(&mut b)? as usize;
    let mut targets = Vec::with_capacity(n.min(65536));
    for _ in 0..n {
        targets.push((get_u64(&mut b)?, get_u64(&mut b)?));
    }
    let n = get_u32(&mut b)? as usize;
    let mut frames = Vec::with_capacity(n.min(65536));
    for _ in 0..n {
        let frame = get_bytes(&mut b)?;
        let start = frame.as_ptr() as usize - bytes.as_ptr() as usize;
        let frame = bytes.slice(start..start + frame.len());
        frames.push(Utf8Bytes::try_from(frame).map_err(|e| e.to_string())?);
    }
    let (mut last_seq, mut answered) = (None, Vec::new());
    if marked {
        last_seq = match take(&mut b, 1)?[0] {
            0 => None,
            1 => Some(get_u64(&mut b)?),
            _ => return Err("bad seq mark".into()),
        };
        let n = get_u32(&mut b)? as usize;
        answered.reserve(n.min(65536));
        for _ in 0..n {
            answered
                .push(String::from_utf8(get_bytes(&mut b)?.to_vec()).map_err(|e| e.to_string())?);
        }
    }
    if !b.is_empty() {
        return Err("trailing bytes".into());
    }
    Ok(Deliver {
        room,
        from,
        targets,
        frames,
        last_seq,
        answered,
    })
}

/// The marks of an unmarked delivery from a version-4 peer, read from its
/// frames: the last seq among `message` frames (or a `joined`'s
/// `last_seq`), and the client_ids answered by `ack` and `error` frames.
/// Only a rolling upgrade from version 4 takes this path; remove it with
/// version 6.
fn legacy_marks<F: AsRef<str>>(frames: &[F]) -> (Option<u64>, Vec<String>) {
    #[derive(Deserialize)]
    struct Probe {
        #[serde(rename = "type")]
        kind: String,
        seq: Option<u64>,
        last_seq: Option<u64>,
        client_id: Option<String>,
        #[serde(rename = "ref")]
        reference: Option<String>,
    }
    let mut position = None;
    let mut answered = Vec::new();
    for p in frames
        .iter()
        .filter_map(|f| serde_json::from_str::<Probe>(f.as_ref()).ok())
    {
        let seq = match p.kind.as_str() {
            "message" => p.seq,
            "joined" => p.last_seq,
            "ack" => {
                answered.extend(p.client_id);
                None
            }
            "error" => {
                answered.extend(p.reference);
                None
            }
            _ => None,
        };
        position = position.max(seq);
    }
    (position, answered)
}

fn put_str(out: &mut Vec<u8>, s: &str) {
    out.extend_from_slice(&(s.len() as u32).to_le_bytes());
    out.extend_from_slice(s.as_bytes());
}

fn take<'a>(b: &mut &'a [u8], n: usize) -> Result<&'a [u8], String> {
    if b.len() < n {
        return Err("truncated".into());
    }
    let (head, rest) = b.split_at(n);
    *b = rest;
    Ok(head)
}

fn get_u32(b: &mut &[u8]) -> Result<u32, String> {
    Ok(u32::from_le_bytes(take(b, 4)?.try_into().expect("4 bytes")))
}

fn get_u64(b: &mut &[u8]) -> Result<u64, String> {
    Ok(u64::from_le_bytes(take(b, 8)?.try_into().expect("8 bytes")))
}

fn get_bytes<'a>(b: &mut &'a [u8]) -> Result<&'a [u8], String> {
    let n = get_u32(b)? as usize;
    take(b, n)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_ping_of_the_first_wire_reads_as_version_1_and_links() {
        // What a node of before versions sends: no `wire` field.
        let old = r#"{"Ping":{"from":"n1","addr":"127.0.0.1:4700"}}"#;
        let WireCall::Ping { wire, .. } = decode_json::<WireCall>(old.as_bytes()).unwrap() else {
            panic!("a ping");
        };
        assert_eq!(wire, 1);
        assert!(compatible(WIRE_VERSION - 1) && compatible(WIRE_VERSION + 1));
        assert!(!compatible(WIRE_VERSION + 2));
        assert!(!compatible(WIRE_VERSION - 2));
    }

    fn delivery() -> Deliver {
        Deliver {
            room: "lobby".into(),
            from: "n1".into(),
            targets: vec![(1, 2), (u64::MAX, 7)],
            frames: vec!["{\"type\":\"message\"}".into(), "é".into()],
            last_seq: Some(41),
            answered: vec!["c1".into()],
        }
    }

    #[test]
    fn a_delivery_survives_the_wire() {
        let d = delivery();
        match decode_cast(encode_deliver(&d, WIRE_VERSION)) {
            Ok(Incoming::Deliver(back)) => assert_eq!(back, d),
            _ => panic!("not a delivery"),
        }
        let unmarked = Deliver {
            last_seq: None,
            answered: Vec::new(),
            ..d.clone()
        };
        match decode_cast(encode_deliver(&unmarked, WIRE_VERSION)) {
            Ok(Incoming::Deliver(back)) => assert_eq!(back, unmarked),
            _ => panic!("not a delivery"),
        }
    }

    #[test]
    fn a_version_4_peer_gets_the_unmarked_form_and_is_read_by_its_frames() {
        let frames: Vec<Utf8Bytes> = vec![
            r#"{"type":"ack","client_id":"c7","room":"lobby","seq":3,"ts":1}"#.into(),
            r#"{"type":"message","room":"lobby","seq":3,"from":"ann","body":"hi","ts":1,"client_id":"c7"}"#.into(),
            r#"{"type":"error","code":"unavailable","message":"retry","ref":"c8"}"#.into(),
        ];
        let d = Deliver {
            frames,
            ..delivery()
        };
        let bytes = encode_deliver(&d, WIRE_VERSION - 1);
        assert_eq!(bytes[0], TAG_DELIVER, "what a version-4 node reads");
        match decode_cast(bytes) {
            Ok(Incoming::Deliver(back)) => {
                assert_eq!(back.frames, d.frames);
                assert_eq!(back.last_seq, Some(3));
                assert_eq!(back.answered, vec!["c7".to_string(), "c8".to_string()]);
            }
            _ => panic!("not a delivery"),
        }
    }

    #[test]
    fn truncated_bytes_are_an_error_not_a_panic() {
        for peer in [WIRE_VERSION - 1, WIRE_VERSION] {
            let bytes = encode_deliver(&delivery(), peer);
            for cut in 0..bytes.len() {
                assert!(decode_cast(bytes[..cut].to_vec()).is_err());
            }
        }
    }
}

//! What one chatting user sent, had acked and received: the record that
//! the invariant checker (`invariants.rs`) reads.
//!
//! Both chatting clients of the kit keep one: the [`Chatter`] of the
//! single-node fault tests and each simulated user of the cluster load
//! driver. They differ in when they send and resend (their policy); what a
//! frame means is the same for both and lives here, in [`Ledger::on_frame`]:
//!
//! - `ack`: the send is settled; an ack for a client_id never sent, in
//!   another room than the send's, or a second ack naming another seq is a
//!   broken promise ([`Ledger::problems`]);
//! - `error` answering a send: the send is due again (same client_id) after
//!   what the [`RetryPolicy`] says; `unavailable` is expected under faults,
//!   other codes are broken promises; an `unavailable` with `ref` "send" (a
//!   room restarted with sends waiting in it) makes every open send due now;
//! - `message`: a delivery, in arrival order;
//! - `session`: its resume token.
//!
//! [`Chatter`]: super::chatter::Chatter

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

/// One send, by client_id.
#[derive(Debug, Clone)]
pub struct Sent {
    pub room: String,
    pub body: String,
    pub first_sent: Instant,
    pub last_sent: Instant,
    /// Transmissions, the first included.
    pub tries: u32,
    /// Answered with an error: due again at this instant. `None`: sent and
    /// not answered yet (or acked).
    pub retry_at: Option<Instant>,
    /// `unavailable` answers in a row on this connection.
    pub unavailable_streak: u32,
}

#[derive(Debug, Clone)]
pub struct Ack {
    pub room: String,
    pub seq: u64,
    pub at: Instant,
    /// The node of the connection it arrived on.
    pub node: usize,
    /// When the send it answers last went out.
    pub sent_at: Instant,
}

/// A `message` frame, as received.
#[derive(Debug, Clone)]
pub struct Delivery {
    pub room: String,
    pub seq: u64,
    pub client_id: String,
    pub from: String,
    pub body: String,
    pub at: Instant,
    /// The node of the connection it arrived on.
    pub node: usize,
}

#[derive(Debug, Clone)]
pub struct Disconnect {
    pub at: Instant,
    pub node: usize,
    pub reason: String,
    /// The client closed it (roaming, moving on), not the node.
    pub voluntary: bool,
}

#[derive(Debug, Clone)]
pub struct ResumeRec {
    pub at: Instant,
    pub node: usize,
    /// From the disconnect to `resumed`.
    pub took: Duration,
    /// Connection attempts it took.
    pub attempts: u32,
    /// The room's seq the `resume` gave (the last one received).
    pub from: u64,
    /// The room's seq `resumed` said the connection is caught up through.
    pub claimed: Option<u64>,
    /// The room's last seq received when `resumed` arrived.
    pub seen_then: u64,
}

/// How long after an error answer a send is due again.
#[derive(Debug, Clone, Copy)]
pub struct RetryPolicy {
    pub unavailable: Duration,
    /// `None`: a `rate_limited` answer is a broken promise (the test's node
    /// has no limit that could apply).
    pub rate_limited: Option<Duration>,
    /// Any other error (a broken promise, retried anyway).
    pub other: Duration,
}

/// What a frame was, for the client's own policy.
#[derive(Debug)]
pub enum Heard {
    /// Recorded (an ack, a message, the session, an error answering a send).
    Tracked,
    /// An `unavailable` answer to the open send `id`.
    Unavailable {
        id: String,
        streak: u32,
        message: String,
    },
    /// A frame the ledger does not track (answers to `who`, `joined`, ...).
    Other,
}

/// Everything one user sent, had acked and received.
#[derive(Debug)]
pub struct Ledger {
    pub user: String,
    /// Its rooms, each with the room's last seq when it joined: it must
    /// receive every later one.
    pub rooms: BTreeMap<String, u64>,
    /// The node of the current (or last) connection.
    pub node: usize,
    pub resume_token: String,
    retry: RetryPolicy,
    next_id: u64,
    /// Every send, by client_id.
    pub sends: BTreeMap<String, Sent>,
    /// Sends not acked yet.
    pub open: BTreeSet<String>,
    /// client_id -> its (first) ack.
    pub acks: BTreeMap<String, Ack>,
    /// `message` frames in arrival order.
    pub deliveries: Vec<Delivery>,
    /// Highest seq received (or the join's) per room.
    pub seen: BTreeMap<String, u64>,
    /// (client_id, when) of every `unavailable` answer to one of its sends.
    pub unavailable: Vec<(String, Instant)>,
    /// Resends because a send had no answer at all for long.
    pub silent_resends: u64,
    pub disconnects: Vec<Disconnect>,
    pub resumes: Vec<ResumeRec>,
    /// Broken promises seen on the wire, and failed resumes.
    pub problems: Vec<String>,
}

impl Ledger {
    pub fn new(user: &str, retry: RetryPolicy) -> Ledger {
        Ledger {
            user: user.to_string(),
            rooms: BTreeMap::new(),
            node: 0,
            resume_token: String::new(),
            retry,
            next_id: 0,
            sends: BTreeMap::new(),
            open: BTreeSet::new(),
            acks: BTreeMap::new(),
            deliveries: Vec::new(),
            seen: BTreeMap::new(),
            unavailable: Vec::new(),
            silent_resends: 0,
            disconnects: Vec::new(),
            resumes: Vec::new(),
            problems: Vec::new(),
        }
    }

    /// It joined `room`, whose last seq was then `last_seq`.
    pub fn joined(&mut self, room: &str, last_seq: u64) {
        self.rooms.insert(room.to_string(), last_seq);
        let seen = self.seen.entry(room.to_string()).or_insert(0);
        *seen = (*seen).max(last_seq);
    }

    /// The last seq of `room` it received (or the join's): where a resume
    /// starts.
    pub fn position(&self, room: &str) -> u64 {
        self.seen.get(room).copied().unwrap_or(0)
    }

    /// A new message to `room` with a new client_id; the client_id and the
    /// frame to send.
    pub fn new_send(&mut self, room: &str, now: Instant) -> (String, String) {
        self.next_id += 1;
        let id = format!("{}-{}", self.user, self.next_id);
        let body = format!("{} says {}", self.user, self.next_id);
        self.sends.insert(
            id.clone(),
            Sent {
                room: room.to_string(),
                body,
                first_sent: now,
                last_sent: now,
                tries: 0,
                retry_at: None,
                unavailable_streak: 0,
            },
        );
        self.open.insert(id.clone());
        let frame = self.transmit(&id, now);
        (id, frame)
    }

    /// The frame that sends `id` (again: same client_id, room and body).
    pub fn transmit(&mut self, id: &str, now: Instant) -> String {
        let sent = self.sends.get_mut(id).expect("a known send");
        sent.last_sent = now;
        sent.tries += 1;
        sent.retry_at = None;
        json!({"type": "send", "room": sent.room, "body": sent.body, "client_id": id}).to_string()
    }

    /// Open sends due again: answered with an error and past their retry
    /// time, or without any answer for `silent_after`.
    pub fn due(&mut self, now: Instant, silent_after: Duration) -> Vec<String> {
        let mut due = Vec::new();
        for id in &self.open {
            let sent = &self.sends[id];
            match sent.retry_at {
                Some(at) if at <= now => due.push(id.clone()),
                Some(_) => {}
                None if now.duration_since(sent.last_sent) >= silent_after => {
                    self.silent_resends += 1;
                    due.push(id.clone());
                }
                None => {}
            }
        }
        due
    }

    /// Open sends sent and not answered yet.
    pub fn in_flight(&self) -> usize {
        self.open
            .iter()
            .filter(|id| self.sends[*id].retry_at.is_none())
            .count()
    }

    /// Every open send is due again now.
    pub fn retry_all(&mut self, now: Instant) {
        for id in &self.open {
            self.sends.get_mut(id).expect("a known send").retry_at = Some(now);
        }
    }

    /// A new connection (after a resume) on `node`: every open send is due
    /// again now, and its `unavailable` streak starts over.
    pub fn reconnected(&mut self, node: usize, now: Instant) {
        self.node = node;
        self.retry_all(now);
        for id in &self.open {
            self.sends
                .get_mut(id)
                .expect("a known send")
                .unavailable_streak = 0;
        }
    }

    /// Transmissions beyond the first, over every send.
    pub fn resends(&self) -> u32 {
        self.sends.values().map(|s| s.tries.saturating_sub(1)).sum()
    }

    /// Records a frame that arrived at `now` (see the module docs).
    pub fn on_frame(&mut self, f: &Value, now: Instant) -> Heard {
        let s = |k: &str| f[k].as_str().unwrap_or_default().to_string();
        match f["type"].as_str().unwrap_or_default() {
            "message" => {
                let (room, seq) = (s("room"), f["seq"].as_u64().unwrap_or(0));
                let seen = self.seen.entry(room.clone()).or_insert(0);
                *seen = (*seen).max(seq);
                self.deliveries.push(Delivery {
                    room,
                    seq,
                    client_id: s("client_id"),
                    from: s("from"),
                    body: s("body"),
                    at: now,
                    node: self.node,
                });
                Heard::Tracked
            }
            "ack" => {
                self.on_ack(f, now);
                Heard::Tracked
            }
            "error" => self.on_error(f, now),
            "session" => {
                if let Some(t) = f["resume_token"].as_str() {
                    self.resume_token = t.to_string();
                }
                Heard::Tracked
            }
            _ => Heard::Other,
        }
    }

    fn on_ack(&mut self, f: &Value, now: Instant) {
        let id = f["client_id"].as_str().unwrap_or_default().to_string();
        let room = f["room"].as_str().unwrap_or_default().to_string();
        let seq = f["seq"].as_u64().unwrap_or(0);
        let Some(sent) = self.sends.get(&id) else {
            self.problems.push(format!(
                "{}: an ack for a client_id never sent: {f}",
                self.user
            ));
            return;
        };
        if sent.room != room {
            self.problems.push(format!(
                "{}: {id} was sent to {} but acked in {room}",
                self.user, sent.room
            ));
        }
        let sent_at = sent.last_sent;
        self.open.remove(&id);
        match self.acks.get(&id) {
            Some(a) if a.room != room || a.seq != seq => self.problems.push(format!(
                "{}: {id} acked as {} #{} and again as {room} #{seq}",
                self.user, a.room, a.seq
            )),
            Some(_) => {}
            None => {
                let node = self.node;
                self.acks.insert(
                    id,
                    Ack {
                        room,
                        seq,
                        at: now,
                        node,
                        sent_at,
                    },
                );
            }
        }
    }

    fn on_error(&mut self, f: &Value, now: Instant) -> Heard {
        let code = f["code"].as_str().unwrap_or_default();
        let reference = f["ref"].as_str().unwrap_or_default().to_string();
        if self.sends.contains_key(&reference) {
            if code == "unavailable" {
                self.unavailable.push((reference.clone(), now));
            }
            if !self.open.contains(&reference) {
                // An answer to a resend of an acked message: nothing to do.
                return Heard::Tracked;
            }
            let wait = match code {
                "unavailable" => self.retry.unavailable,
                "rate_limited" if self.retry.rate_limited.is_some() => {
                    self.retry.rate_limited.unwrap_or_default()
                }
                _ => {
                    self.problems.push(format!(
                        "{}: unexpected error for {reference}: {f}",
                        self.user
                    ));
                    self.retry.other
                }
            };
            let sent = self.sends.get_mut(&reference).expect("a known send");
            sent.retry_at = Some(now + wait);
            if code == "unavailable" {
                sent.unavailable_streak += 1;
                return Heard::Unavailable {
                    id: reference,
                    streak: sent.unavailable_streak,
                    message: f["message"].as_str().unwrap_or_default().to_string(),
                };
            }
            return Heard::Tracked;
        }
        if reference == "send" && code == "unavailable" {
            // A room restarted: what waited in it is never answered.
            self.retry_all(now);
            return Heard::Tracked;
        }
        Heard::Other
    }
}

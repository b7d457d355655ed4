//! A chatting client on one node, driven by the test in phases: the fault
//! tests (tests/faults.rs) chat while a server fails ([`Chatter::chat_until`]),
//! then let every send settle ([`Chatter::settle`]: resends with the same
//! client_id until acked), then check the invariants ([`check_invariants`]).
//!
//! A reader task collects the connection's frames; whoever drives the
//! chatter handles them ([`Chatter::pump_for`]) into its [`Ledger`] (what it
//! sent, had acked, received), which the chatter dereferences to. It never
//! reconnects: a closed connection is a broken promise. Sends answered
//! `unavailable` wait for [`Chatter::settle`]; they are not resent while it
//! chats. The cluster tests' load driver (`load.rs`) is the chatter's
//! counterpart for many users that reconnect by themselves.

use std::collections::{BTreeMap, VecDeque};
use std::ops::{Deref, DerefMut};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::stream::SplitSink;
use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::Message;

use super::client::{account, http, Ws};
use super::invariants::{check, read_history, History};
use super::ledger::{Heard, Ledger, RetryPolicy};
use super::node::Node;

/// Sends a chatter keeps unanswered at once.
const WINDOW: usize = 64;
/// At most one new send per chatter per this interval.
const PACE: Duration = Duration::from_millis(30);
/// An unanswered send is resent (same client_id) by `settle` after this long.
const SILENT: Duration = Duration::from_secs(15);

/// A WebSocket client that chats in its rooms and records everything.
pub struct Chatter {
    pub ledger: Ledger,
    pub token: String,
    sink: SplitSink<Ws, Message>,
    frames: mpsc::UnboundedReceiver<Value>,
    /// Its rooms in join order (it sends to each in turn).
    rooms: Vec<String>,
    /// Frames the ledger does not track (answers to `who`, `joined`, ...).
    other: VecDeque<Value>,
}

impl Deref for Chatter {
    type Target = Ledger;

    fn deref(&self) -> &Ledger {
        &self.ledger
    }
}

impl DerefMut for Chatter {
    fn deref_mut(&mut self) -> &mut Ledger {
        &mut self.ledger
    }
}

impl Chatter {
    /// Registers `user`, logs in, connects and joins `rooms`.
    pub async fn new(node: &Node, user: &str, rooms: &[&str]) -> Chatter {
        let token = account(node, user).await;
        Chatter::connect(node, user, &token, rooms).await
    }

    /// Connects with `?token=`, waits for `session`, joins `rooms`.
    pub async fn connect(node: &Node, user: &str, token: &str, rooms: &[&str]) -> Chatter {
        let url = format!("{}?token={token}", node.ws_url());
        let (ws, _) = tokio_tungstenite::connect_async(url)
            .await
            .unwrap_or_else(|e| panic!("{user}: the WebSocket does not connect: {e}"));
        let (sink, mut stream) = ws.split();
        let (tx, frames) = mpsc::unbounded_channel();
        tokio::spawn(async move {
            while let Some(msg) = stream.next().await {
                let frame = match msg {
                    Ok(Message::Text(t)) => {
                        serde_json::from_str(&t).unwrap_or(Value::String(t.to_string()))
                    }
                    Ok(Message::Close(f)) => {
                        json!({"type": "__closed", "code": f.map(|f| u16::from(f.code))})
                    }
                    Ok(_) => continue,
                    Err(e) => json!({"type": "__closed", "error": e.to_string()}),
                };
                let closed = frame["type"] == "__closed";
                if tx.send(frame).is_err() || closed {
                    return;
                }
            }
            let _ = tx.send(json!({"type": "__closed"}));
        });
        let retry = RetryPolicy {
            // Resent by `settle`, not while chatting.
            unavailable: Duration::ZERO,
            rate_limited: None,
            other: Duration::ZERO,
        };
        let mut chatter = Chatter {
            ledger: Ledger::new(user, retry),
            token: token.to_string(),
            sink,
            frames,
            rooms: rooms.iter().map(|r| r.to_string()).collect(),
            other: VecDeque::new(),
        };
        chatter
            .wait_for("session", Duration::from_secs(15), |f| {
                f["type"] == "session"
            })
            .await;
        for room in rooms {
            chatter.frame(json!({"type": "join", "room": room})).await;
            let joined = chatter
                .wait_for(&format!("joined {room}"), Duration::from_secs(15), |f| {
                    f["type"] == "joined" && f["room"] == *room
                })
                .await;
            let last = joined["last_seq"].as_u64().unwrap_or(0);
            chatter.ledger.joined(room, last);
        }
        chatter
    }

    pub async fn frame(&mut self, frame: Value) {
        self.send_text(frame.to_string()).await;
    }

    async fn send_text(&mut self, text: String) {
        if let Err(e) = self.sink.send(Message::Text(text.into())).await {
            panic!("{}: the connection broke: {e}", self.ledger.user);
        }
    }

    /// A new message with a new client_id, to the next room in turn.
    pub async fn send_new(&mut self) -> String {
        let room = self.rooms[(self.ledger.sends.len() + 1) % self.rooms.len()].clone();
        let (id, frame) = self.ledger.new_send(&room, Instant::now());
        self.send_text(frame).await;
        id
    }

    /// Sends `id` again (same client_id, room and body).
    pub async fn transmit(&mut self, id: &str) {
        let frame = self.ledger.transmit(id, Instant::now());
        self.send_text(frame).await;
    }

    fn on_frame(&mut self, f: Value) {
        match self.ledger.on_frame(&f, Instant::now()) {
            Heard::Other => {
                if f["type"] == "__closed" {
                    let problem = format!("{}: the connection closed: {f}", self.ledger.user);
                    self.ledger.problems.push(problem);
                }
                self.other.push_back(f);
            }
            // Recorded, and awaited by `connect`.
            _ if f["type"] == "session" => self.other.push_back(f),
            _ => {}
        }
    }

    /// Handles the frames that arrive within `d`.
    pub async fn pump_for(&mut self, d: Duration) {
        let deadline = tokio::time::Instant::now() + d;
        loop {
            match tokio::time::timeout_at(deadline, self.frames.recv()).await {
                Ok(Some(f)) => self.on_frame(f),
                // The reader ended (the socket closed): nothing more comes.
                Ok(None) => {
                    tokio::time::sleep_until(deadline).await;
                    return;
                }
                Err(_) => return,
            }
        }
    }

    /// The first untracked frame matching `pred`, within `within`.
    pub async fn wait_for(
        &mut self,
        what: &str,
        within: Duration,
        pred: impl Fn(&Value) -> bool,
    ) -> Value {
        let deadline = Instant::now() + within;
        loop {
            if let Some(i) = self.other.iter().position(&pred) {
                return self.other.remove(i).expect("present");
            }
            assert!(
                Instant::now() < deadline,
                "{}: no {what} within {within:?}; other frames: {:?}; problems: {:?}",
                self.ledger.user,
                self.other,
                self.ledger.problems
            );
            self.pump_for(Duration::from_millis(50)).await;
        }
    }

    /// Sends new messages (at most `WINDOW` unanswered) until `stop`.
    /// Sends answered `unavailable` are kept for later, not retried here.
    pub async fn chat_until(mut self, stop: Arc<AtomicBool>) -> Chatter {
        let limit = Instant::now() + Duration::from_secs(120);
        while !stop.load(Ordering::Relaxed) && Instant::now() < limit {
            if self.ledger.in_flight() < WINDOW {
                self.send_new().await;
            }
            self.pump_for(PACE).await;
        }
        self
    }

    /// Every 0.5 s, resends (same client_id) what was answered with an
    /// error or not answered for long, until all is acked (or `within`
    /// ends; the invariants then report what is missing).
    pub async fn settle(&mut self, within: Duration) {
        let deadline = Instant::now() + within;
        let mut last_round: Option<Instant> = None;
        while !self.ledger.open.is_empty() && Instant::now() < deadline {
            if last_round.is_none_or(|at| at.elapsed() >= Duration::from_millis(500)) {
                let now = Instant::now();
                last_round = Some(now);
                for id in self.ledger.due(now, SILENT) {
                    self.transmit(&id).await;
                }
            }
            self.pump_for(Duration::from_millis(100)).await;
        }
    }

    /// One new message to each of its rooms, and their acks; the client_ids.
    pub async fn round(&mut self, within: Duration) -> Vec<String> {
        let mut ids = Vec::new();
        for _ in 0..self.rooms.len() {
            ids.push(self.send_new().await);
        }
        self.settle(within).await;
        ids
    }

    /// Reads until the last message of each room (as history says) arrived.
    pub async fn catch_up(&mut self, last: &BTreeMap<String, u64>, within: Duration) {
        let deadline = Instant::now() + within;
        let behind = |c: &Chatter| {
            c.rooms
                .iter()
                .any(|r| c.ledger.position(r) < last.get(r).copied().unwrap_or(0))
        };
        while behind(self) && Instant::now() < deadline {
            self.pump_for(Duration::from_millis(100)).await;
        }
    }
}

/// Registers and connects `n` users (`user1`..), each a member of `rooms`.
pub async fn chatters(node: &Node, n: usize, rooms: &[&str]) -> Vec<Chatter> {
    let mut out = Vec::new();
    for i in 1..=n {
        out.push(Chatter::new(node, &format!("user{i}"), rooms).await);
    }
    out
}

/// Every chatter chats on its own task until `stop` is set.
pub fn spawn_chat(
    chatters: Vec<Chatter>,
    stop: &Arc<AtomicBool>,
) -> Vec<tokio::task::JoinHandle<Chatter>> {
    chatters
        .into_iter()
        .map(|c| tokio::spawn(c.chat_until(stop.clone())))
        .collect()
}

pub async fn join_chat(tasks: Vec<tokio::task::JoinHandle<Chatter>>) -> Vec<Chatter> {
    let mut out = Vec::new();
    for task in tasks {
        out.push(task.await.expect("a chatting client panicked"));
    }
    out
}

/// Settles every chatter at once.
pub async fn settle_all(chatters: Vec<Chatter>, within: Duration) -> Vec<Chatter> {
    let tasks: Vec<_> = chatters
        .into_iter()
        .map(|mut c| {
            tokio::spawn(async move {
                c.settle(within).await;
                c
            })
        })
        .collect();
    join_chat(tasks).await
}

/// Every chatter sends one new message per room; all must be acked.
pub async fn round_all(chatters: Vec<Chatter>, within: Duration) -> (Vec<Chatter>, Vec<String>) {
    let tasks: Vec<_> = chatters
        .into_iter()
        .map(|mut c| {
            tokio::spawn(async move {
                let ids = c.round(within).await;
                (c, ids)
            })
        })
        .collect();
    let mut out = Vec::new();
    let mut ids = Vec::new();
    for task in tasks {
        let (c, i) = task.await.expect("a client panicked");
        out.push(c);
        ids.extend(i);
    }
    (out, ids)
}

/// Every room's whole history over REST (through `node`); fails the test
/// when it cannot be read.
pub async fn histories(node: &Node, token: &str, rooms: &[&str]) -> History {
    let mut out = History::new();
    for room in rooms {
        let h = read_history(&http(), &node.url(""), token, room)
            .await
            .unwrap_or_else(|e| panic!("history of {room}: {e}"));
        out.insert(room.to_string(), h);
    }
    out
}

/// Reads the history of the chatters' rooms, lets every chatter catch up,
/// and checks the invariants (`invariants.rs`); panics listing every
/// violation with the node's log tail. The history.
pub async fn check_invariants(node: &Node, token: &str, chatters: &mut [Chatter]) -> History {
    let mut rooms: Vec<&str> = Vec::new();
    for c in chatters.iter() {
        for r in &c.rooms {
            if !rooms.contains(&r.as_str()) {
                rooms.push(r);
            }
        }
    }
    let rooms: Vec<String> = rooms.into_iter().map(String::from).collect();
    let names: Vec<&str> = rooms.iter().map(String::as_str).collect();
    let history = histories(node, token, &names).await;
    let last: BTreeMap<String, u64> = history
        .iter()
        .map(|(r, ms)| (r.clone(), ms.iter().map(|m| m.seq).max().unwrap_or(0)))
        .collect();
    for c in chatters.iter_mut() {
        c.catch_up(&last, Duration::from_secs(10)).await;
    }
    let started = chatters
        .iter()
        .flat_map(|c| c.ledger.sends.values().map(|s| s.first_sent))
        .min()
        .unwrap_or_else(Instant::now);
    let ledgers: Vec<&Ledger> = chatters.iter().map(|c| &c.ledger).collect();
    let report = check(&ledgers, &history, started);
    println!("{}; history: {last:?}", report.counts());
    report.assert_clean(&format!("node log:\n{}", node.warnings()));
    history
}

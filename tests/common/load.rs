//! The load driver of the cluster tests: simulated users, one tokio task
//! and one real WebSocket each, that chat continuously in their room, resend
//! what was not acked (same client_id), reconnect round-robin to the next
//! live node of the [`Cluster`]'s [`NodeBook`] and `resume` there, and record
//! everything they see in their [`Ledger`]. [`Load::finish`] drains the
//! traffic, reads history through REST and runs the invariant checker
//! (`invariants.rs`); a scenario adds checks of its own with
//! [`Load::finish_with`].
//!
//! A user's policy: a new message every `pace_ms` (at most [`WINDOW`]
//! unanswered), a send unanswered for [`RESEND_AFTER`] or answered
//! `unavailable` is sent again; after [`SWITCH_AFTER_UNAVAILABLE`]
//! `unavailable` answers in a row (or one saying the node cannot reach a
//! majority) it moves to the next node; a lost connection makes it resume
//! on the next live node, giving up (a violation) after
//! [`RECONNECT_GIVE_UP`].

use std::collections::{BTreeMap, BTreeSet};
use std::ops::{Deref, DerefMut};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_tungstenite::tungstenite::Message;

use super::client::Ws;
use super::cluster::{Cluster, NodeBook};
use super::invariants::{check, last_few, HistMsg};
use super::ledger::{Disconnect, Heard, Ledger, ResumeRec, RetryPolicy};

/// Unanswered sends a user keeps at once; past it, it skips new sends.
pub const WINDOW: usize = 16;
/// A send with no answer for this long is sent again (same client_id).
pub const RESEND_AFTER: Duration = Duration::from_secs(4);
/// After an error answer, the send is retried after this long.
const RETRY: RetryPolicy = RetryPolicy {
    unavailable: Duration::from_millis(150),
    rate_limited: Some(Duration::from_millis(500)),
    other: Duration::from_secs(1),
};
/// After this many `unavailable` answers in a row to the same send (or one
/// saying the node cannot reach a majority), the user moves to the next node.
pub const SWITCH_AFTER_UNAVAILABLE: u32 = 3;
/// A `resume` must be answered with `resumed` within this long.
pub const RESUME_WITHIN: Duration = Duration::from_secs(20);
/// A user that cannot resume anywhere for this long gives up (and the
/// invariants report it).
pub const RECONNECT_GIVE_UP: Duration = Duration::from_secs(90);

fn ms(d: Duration) -> u128 {
    d.as_millis()
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// Send new messages.
    Run,
    /// No new messages; keep resending what is not acked.
    Drain,
    /// Close and end.
    Stop,
}

/// Reconnect to the next node every `every`, `times` times.
#[derive(Debug, Clone, Copy)]
pub struct Roam {
    pub every: Duration,
    pub times: u32,
}

#[derive(Debug, Clone)]
pub struct UserSpec {
    pub name: String,
    pub room: String,
    /// The node it registers and first connects on.
    pub node: usize,
    /// A new message every `pace_ms.0..=pace_ms.1` ms; `None`: it only listens.
    pub pace_ms: Option<(u64, u64)>,
    pub roam: Option<Roam>,
}

/// `users` users in `rooms` rooms (`room-00`..), user k in room k % rooms,
/// first on node k % nodes, each sending every 100-200 ms.
pub fn standard_users(prefix: &str, users: usize, rooms: usize, nodes: usize) -> Vec<UserSpec> {
    (0..users)
        .map(|k| UserSpec {
            name: format!("{prefix}{k:03}"),
            room: format!("room-{:02}", k % rooms),
            node: k % nodes,
            pace_ms: Some((100, 200)),
            roam: None,
        })
        .collect()
}
/// One user of the load: its ledger (what it sent, had acked and received,
/// its disconnects and resumes) and the state of its connection.
#[derive(Debug)]
pub struct UserState {
    pub ledger: Ledger,
    pub token: String,
    pub room: String,
    pub connected: bool,
    /// `unavailable` answers saying the node cannot reach a majority.
    pub majority: u64,
    /// Set when the node keeps answering `unavailable`: the user moves on.
    pub switch: Option<String>,
    /// Moves to another node because of `unavailable` answers.
    pub switches: u64,
    /// Connection attempts that failed (node down, refused, closed mid-resume).
    pub failed_attempts: Vec<String>,
}

impl Deref for UserState {
    type Target = Ledger;

    fn deref(&self) -> &Ledger {
        &self.ledger
    }
}

impl DerefMut for UserState {
    fn deref_mut(&mut self) -> &mut Ledger {
        &mut self.ledger
    }
}

impl UserState {
    /// Records the frame; decides whether to move to another node.
    fn on_frame(&mut self, f: &Value, now: Instant) {
        match self.ledger.on_frame(f, now) {
            Heard::Tracked => {}
            Heard::Unavailable {
                id,
                streak,
                message,
            } => {
                let majority = message.contains("majority");
                self.majority += u64::from(majority);
                if (majority || streak >= SWITCH_AFTER_UNAVAILABLE) && self.switch.is_none() {
                    self.switch = Some(format!(
                        "node{} answered {id} `unavailable` {streak} time(s) in a row: {message}",
                        self.ledger.node + 1
                    ));
                }
            }
            Heard::Other if f["type"] == "error" => {
                let problem = format!("{}: unexpected error frame {f}", self.ledger.user);
                self.ledger.problems.push(problem);
            }
            Heard::Other => {}
        }
    }
}

fn lock(st: &Mutex<UserState>) -> std::sync::MutexGuard<'_, UserState> {
    st.lock().unwrap_or_else(|e| e.into_inner())
}

fn parse(text: &str) -> Value {
    serde_json::from_str(text).unwrap_or(Value::String(text.to_string()))
}

/// A tiny xorshift for send intervals (deterministic per user).
struct Rng(u64);

impl Rng {
    fn new(seed: &str) -> Rng {
        let mut h: u64 = 0xcbf2_9ce4_8422_2325;
        for b in seed.bytes() {
            h = (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3);
        }
        Rng(h | 1)
    }

    fn between(&mut self, lo: u64, hi: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        lo + self.0 % (hi - lo + 1)
    }
}

async fn ws_send(ws: &mut Ws, frame: String) -> Result<(), String> {
    match tokio::time::timeout(Duration::from_secs(5), ws.send(Message::Text(frame.into()))).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) => Err(format!("send failed: {e}")),
        Err(_) => Err("send blocked for 5 s".into()),
    }
}

enum ResumeError {
    /// The node is down, refused, or closed while resuming: try the next one.
    Transient(String),
    /// The node answered the resume wrongly: a broken promise.
    Broken(String),
}

/// Connects to node `target` and resumes there; the socket once `resumed` arrived.
/// What `resumed` said, against what the replay had delivered.
struct Resumed {
    from: u64,
    claimed: Option<u64>,
    seen_then: u64,
}

async fn try_resume(
    st: &Mutex<UserState>,
    book: &NodeBook,
    target: usize,
) -> Result<(Ws, Resumed), ResumeError> {
    let url = format!("ws://{}/ws", book.addr(target));
    let mut ws = match tokio::time::timeout(
        Duration::from_secs(5),
        tokio_tungstenite::connect_async(url.as_str()),
    )
    .await
    {
        Ok(Ok((ws, _))) => ws,
        Ok(Err(e)) => return Err(ResumeError::Transient(format!("connect {url}: {e}"))),
        Err(_) => return Err(ResumeError::Transient(format!("connect {url}: timed out"))),
    };
    let (user, frame, before) = {
        let mut s = lock(st);
        s.node = target;
        let last = s.position(&s.room);
        let mut rooms = serde_json::Map::new();
        rooms.insert(s.room.clone(), json!(last));
        let frame = json!({"type": "resume", "resume_token": s.resume_token, "rooms": rooms});
        (s.user.clone(), frame.to_string(), last)
    };
    ws_send(&mut ws, frame)
        .await
        .map_err(|e| ResumeError::Transient(format!("{url}: {e}")))?;
    let deadline = tokio::time::Instant::now() + RESUME_WITHIN;
    loop {
        match tokio::time::timeout_at(deadline, ws.next()).await {
            Err(_) => {
                return Err(ResumeError::Broken(format!(
                    "{user}: no `resumed` within {RESUME_WITHIN:?} from node{} ({url})",
                    target + 1
                )))
            }
            Ok(Some(Ok(Message::Text(t)))) => {
                let f = parse(&t);
                let ty = f["type"].as_str().unwrap_or_default();
                if ty == "resumed" {
                    let mut s = lock(st);
                    let seen_then = s.position(&s.room);
                    let claimed = f["rooms"][&s.room].as_u64();
                    if claimed.is_none() {
                        let msg = format!("{user}: `resumed` without its room {}: {f}", s.room);
                        s.problems.push(msg);
                    }
                    let resumed = Resumed {
                        from: before,
                        claimed,
                        seen_then,
                    };
                    return Ok((ws, resumed));
                }
                if ty == "error" && f["ref"] == "resume" {
                    return Err(ResumeError::Broken(format!(
                        "{user}: resume refused by node{}: {f}",
                        target + 1
                    )));
                }
                lock(st).on_frame(&f, Instant::now());
            }
            Ok(Some(Ok(Message::Close(c)))) => {
                return Err(ResumeError::Transient(format!(
                    "{url}: closed while resuming: {:?}",
                    c.map(|c| u16::from(c.code))
                )))
            }
            Ok(Some(Ok(_))) => {}
            Ok(Some(Err(e))) => {
                return Err(ResumeError::Transient(format!(
                    "{url}: error while resuming: {e}"
                )))
            }
            Ok(None) => {
                return Err(ResumeError::Transient(format!(
                    "{url}: ended while resuming"
                )))
            }
        }
    }
}

/// After a lost (or dropped) connection: the next live node, round-robin,
/// and `resume` there. `None` when told to stop or when it gave up.
async fn reconnect(
    st: &Mutex<UserState>,
    book: &NodeBook,
    phase: &watch::Receiver<Phase>,
    reason: String,
    voluntary: bool,
) -> Option<Ws> {
    let started = Instant::now();
    let mut target = {
        let mut s = lock(st);
        s.connected = false;
        let node = s.node;
        s.disconnects.push(Disconnect {
            at: started,
            node,
            reason,
            voluntary,
        });
        node
    };
    let mut attempts = 0;
    loop {
        if *phase.borrow() == Phase::Stop {
            return None;
        }
        if started.elapsed() > RECONNECT_GIVE_UP {
            let mut s = lock(st);
            let msg = format!(
                "{}: could not resume on any node within {RECONNECT_GIVE_UP:?} ({attempts} attempts; last failures {:?})",
                s.user,
                last_few(&s.failed_attempts, 3)
            );
            s.problems.push(msg);
            return None;
        }
        let Some(next) = book.next_up(target) else {
            tokio::time::sleep(Duration::from_millis(200)).await;
            continue;
        };
        target = next;
        attempts += 1;
        match try_resume(st, book, target).await {
            Ok((ws, resumed)) => {
                let now = Instant::now();
                let mut s = lock(st);
                s.connected = true;
                s.resumes.push(ResumeRec {
                    at: now,
                    node: target,
                    took: now.duration_since(started),
                    attempts,
                    from: resumed.from,
                    claimed: resumed.claimed,
                    seen_then: resumed.seen_then,
                });
                // Unanswered sends of the old connection: resend them now.
                s.ledger.reconnected(target, now);
                // A new node: its answers decide whether to move on again.
                s.switch = None;
                return Some(ws);
            }
            Err(ResumeError::Transient(e)) => {
                lock(st).failed_attempts.push(e);
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Err(ResumeError::Broken(e)) => {
                lock(st).problems.push(e);
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        }
    }
}

async fn user_task(
    st: Arc<Mutex<UserState>>,
    mut ws: Ws,
    book: Arc<NodeBook>,
    phase: watch::Receiver<Phase>,
    pace: Option<(u64, u64)>,
    roam: Option<Roam>,
) {
    let mut rng = Rng::new(&lock(&st).user);
    let mut next_send =
        pace.map(|(_, hi)| Instant::now() + Duration::from_millis(rng.between(0, hi)));
    let mut tick = tokio::time::interval(Duration::from_millis(20));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let mut connected_at = Instant::now();
    let mut roams = 0u32;
    loop {
        let mut broken: Option<(String, bool)> = None;
        tokio::select! {
            m = ws.next() => {
                match m {
                    Some(Ok(Message::Text(t))) => {
                        let f = parse(&t);
                        lock(&st).on_frame(&f, Instant::now());
                    }
                    Some(Ok(Message::Close(c))) => {
                        broken = Some((format!("closed {:?}", c.map(|c| u16::from(c.code))), false));
                    }
                    Some(Ok(_)) => {}
                    Some(Err(e)) => broken = Some((format!("error: {e}"), false)),
                    None => broken = Some(("ended".into(), false)),
                }
            }
            _ = tick.tick() => {
                let ph = *phase.borrow();
                if ph == Phase::Stop {
                    let _ = tokio::time::timeout(Duration::from_secs(1), ws.close(None)).await;
                    lock(&st).connected = false;
                    return;
                }
                let now = Instant::now();
                let frames = {
                    let mut s = lock(&st);
                    let mut frames = Vec::new();
                    if let (Phase::Run, Some(at), Some((lo, hi))) = (ph, next_send, pace) {
                        if now >= at {
                            next_send = Some(now + Duration::from_millis(rng.between(lo, hi)));
                            if s.open.len() < WINDOW {
                                let room = s.room.clone();
                                frames.push(s.ledger.new_send(&room, now).1);
                            }
                        }
                    }
                    for id in s.ledger.due(now, RESEND_AFTER) {
                        frames.push(s.ledger.transmit(&id, now));
                    }
                    frames
                };
                for frame in frames {
                    if let Err(e) = ws_send(&mut ws, frame).await {
                        broken = Some((e, false));
                        break;
                    }
                }
                if broken.is_none() {
                    let switch = lock(&st).switch.take();
                    if let Some(why) = switch {
                        lock(&st).switches += 1;
                        let _ = tokio::time::timeout(Duration::from_secs(1), ws.close(None)).await;
                        broken = Some((format!("moving on: {why}"), true));
                    }
                }
                if broken.is_none() {
                    if let Some(r) = roam {
                        if roams < r.times && connected_at.elapsed() >= r.every {
                            roams += 1;
                            let _ = tokio::time::timeout(Duration::from_secs(1), ws.close(None)).await;
                            broken = Some((format!("roaming ({roams})"), true));
                        }
                    }
                }
            }
        }
        if let Some((reason, voluntary)) = broken {
            match reconnect(&st, &book, &phase, reason, voluntary).await {
                Some(new) => {
                    ws = new;
                    connected_at = Instant::now();
                }
                None => return,
            }
        }
    }
}

/// Simulated users chatting on a cluster.
pub struct Load {
    pub users: Vec<Arc<Mutex<UserState>>>,
    pub specs: Vec<UserSpec>,
    tasks: Vec<JoinHandle<()>>,
    phase: watch::Sender<Phase>,
    pub started: Instant,
}

/// Connects with a login token, waits for `session`, joins `room`.
async fn connect_and_join(cluster: &Cluster, spec: &UserSpec, token: &str) -> (Ws, String, u64) {
    let node = &cluster.nodes[spec.node];
    let url = format!("ws://{}/ws?token={token}", node.http);
    let (mut ws, _) = tokio_tungstenite::connect_async(url.as_str())
        .await
        .unwrap_or_else(|e| panic!("{}: no WebSocket to {}: {e}", spec.name, node.name));
    let mut session = None;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    let mut seen = Vec::new();
    loop {
        let f = match tokio::time::timeout_at(deadline, ws.next()).await {
            Ok(Some(Ok(Message::Text(t)))) => parse(&t),
            Ok(Some(Ok(_))) => continue,
            other => panic!(
                "{} on {}: the connection failed while starting ({other:?}); frames so far {seen:?}",
                spec.name, node.name
            ),
        };
        if f["type"] == "session" && session.is_none() {
            session = f["resume_token"].as_str().map(String::from);
            ws.send(Message::Text(
                json!({"type": "join", "room": spec.room})
                    .to_string()
                    .into(),
            ))
            .await
            .expect("send join");
        } else if f["type"] == "joined" && f["room"] == spec.room.as_str() {
            let last = f["last_seq"].as_u64().unwrap_or(0);
            return (ws, session.expect("session before joined"), last);
        } else if f["type"] == "error" {
            panic!(
                "{} on {}: error while joining {}: {f}",
                spec.name, node.name, spec.room
            );
        } else {
            seen.push(f);
        }
    }
}

impl Load {
    /// Registers every user, connects them, joins their rooms (the first
    /// member of each room first), then lets them chat.
    pub async fn start(cluster: &Cluster, specs: Vec<UserSpec>) -> Load {
        let t0 = Instant::now();
        let mut tokens: Vec<String> = Vec::new();
        for chunk in specs.chunks(10) {
            let got = futures_util::future::join_all(
                chunk.iter().map(|s| cluster.account(s.node, &s.name)),
            )
            .await;
            tokens.extend(got);
        }
        let mut first_of_room: BTreeMap<&str, usize> = BTreeMap::new();
        for (k, s) in specs.iter().enumerate() {
            first_of_room.entry(s.room.as_str()).or_insert(k);
        }
        let mut conns: Vec<Option<(Ws, String, u64)>> = (0..specs.len()).map(|_| None).collect();
        // The first members (each of another room: ten rooms start at once),
        // then the others.
        let first: Vec<usize> = first_of_room.values().copied().collect();
        let rest: Vec<usize> = (0..specs.len()).filter(|k| !first.contains(k)).collect();
        for chunk in first.chunks(10).chain(rest.chunks(10)) {
            let got = futures_util::future::join_all(
                chunk
                    .iter()
                    .map(|&k| connect_and_join(cluster, &specs[k], &tokens[k])),
            )
            .await;
            for (&k, c) in chunk.iter().zip(got) {
                conns[k] = Some(c);
            }
        }
        let (phase, rx) = watch::channel(Phase::Run);
        let mut users = Vec::new();
        let mut tasks = Vec::new();
        for (k, spec) in specs.iter().enumerate() {
            let (ws, resume_token, join_seq) = conns[k].take().expect("connected");
            let mut ledger = Ledger::new(&spec.name, RETRY);
            ledger.joined(&spec.room, join_seq);
            ledger.resume_token = resume_token;
            ledger.node = spec.node;
            let st = Arc::new(Mutex::new(UserState {
                ledger,
                token: tokens[k].clone(),
                room: spec.room.clone(),
                connected: true,
                majority: 0,
                switch: None,
                switches: 0,
                failed_attempts: Vec::new(),
            }));
            users.push(st.clone());
            tasks.push(tokio::spawn(user_task(
                st,
                ws,
                cluster.book.clone(),
                rx.clone(),
                spec.pace_ms,
                spec.roam,
            )));
        }
        let rooms: BTreeSet<&str> = specs.iter().map(|s| s.room.as_str()).collect();
        println!(
            "[{}] {} users in {} rooms connected and joined in {} ms",
            cluster.scenario,
            specs.len(),
            rooms.len(),
            ms(t0.elapsed())
        );
        Load {
            users,
            specs,
            tasks,
            phase,
            started: Instant::now(),
        }
    }

    pub fn user(&self, k: usize) -> std::sync::MutexGuard<'_, UserState> {
        lock(&self.users[k])
    }

    pub fn rooms(&self) -> BTreeSet<String> {
        self.specs.iter().map(|s| s.room.clone()).collect()
    }

    /// Users whose connection is on node `i` right now.
    pub fn connected_to(&self, i: usize) -> Vec<usize> {
        (0..self.users.len())
            .filter(|&k| {
                let s = self.user(k);
                s.connected && s.node == i
            })
            .collect()
    }

    pub fn total_acks(&self) -> usize {
        (0..self.users.len()).map(|k| self.user(k).acks.len()).sum()
    }

    /// The first ack (at or after `t`) of a message in one of `rooms`.
    pub fn first_ack_after(&self, rooms: &BTreeSet<String>, t: Instant) -> Option<Instant> {
        (0..self.users.len())
            .flat_map(|k| {
                self.user(k)
                    .acks
                    .values()
                    .filter(|a| a.at >= t && rooms.contains(&a.room))
                    .map(|a| a.at)
                    .collect::<Vec<_>>()
            })
            .min()
    }

    /// The first ack of a message in one of `rooms`, (re)sent at or after
    /// `t`, that arrived on a connection to one of `nodes`.
    pub fn first_ack_sent_after_via(
        &self,
        rooms: &BTreeSet<String>,
        t: Instant,
        nodes: &BTreeSet<usize>,
    ) -> Option<Instant> {
        (0..self.users.len())
            .flat_map(|k| {
                self.user(k)
                    .acks
                    .values()
                    .filter(|a| {
                        a.sent_at >= t && rooms.contains(&a.room) && nodes.contains(&a.node)
                    })
                    .map(|a| a.at)
                    .collect::<Vec<_>>()
            })
            .min()
    }

    /// Per room: the first ack of a send (re)sent at or after `t`, that
    /// is, when the room served again after `t`.
    pub fn served_after(&self, t: Instant) -> BTreeMap<String, Instant> {
        let mut first: BTreeMap<String, Instant> = BTreeMap::new();
        for k in 0..self.users.len() {
            for a in self.user(k).acks.values().filter(|a| a.sent_at >= t) {
                let at = first.entry(a.room.clone()).or_insert(a.at);
                *at = (*at).min(a.at);
            }
        }
        first
    }

    /// When user `k` first resumed at or after `t`.
    pub fn resumed_after(&self, k: usize, t: Instant) -> Option<Instant> {
        self.user(k)
            .resumes
            .iter()
            .map(|r| r.at)
            .filter(|&at| at >= t)
            .min()
    }

    /// How the first resume at or after `t` of each of `users` went: the
    /// spread of the time from the disconnect to `resumed`, and the attempts.
    pub fn resume_report(&self, users: &[usize], t: Instant) -> String {
        let mut took: Vec<u128> = Vec::new();
        let mut retried = Vec::new();
        let mut missing = Vec::new();
        for &k in users {
            let s = self.user(k);
            match s.resumes.iter().find(|r| r.at >= t) {
                Some(r) => {
                    took.push(r.took.as_millis());
                    if r.attempts > 1 {
                        retried.push(format!("{} ({} attempts)", s.user, r.attempts));
                    }
                }
                None => missing.push(s.user.clone()),
            }
        }
        took.sort_unstable();
        let at = |p: usize| took.get(p).copied().unwrap_or(0);
        format!(
            "{} resumed: disconnect -> `resumed` min {} ms, median {} ms, max {} ms; needed more than one attempt: {retried:?}; not resumed: {missing:?}",
            took.len(),
            at(0),
            at(took.len() / 2),
            took.last().copied().unwrap_or(0)
        )
    }

    /// Polls `done` every 100 ms for at most `within`; whether it held.
    pub async fn wait_until(&self, within: Duration, done: impl Fn(&Load) -> bool) -> bool {
        let deadline = Instant::now() + within;
        loop {
            if done(self) {
                return true;
            }
            if Instant::now() > deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Lets the users chat for `d`.
    pub async fn run_for(&self, d: Duration) {
        tokio::time::sleep(d).await;
    }

    /// Stops new sends, waits (bounded) until everything is acked, reads
    /// history, waits (bounded) until every member received its room's last
    /// message, stops the users, checks the invariants and prints the
    /// summary line; panics with every violation.
    pub async fn finish(self, cluster: &Cluster) -> Outcome {
        self.finish_with(cluster, |_, _| ExtraCheck::default())
            .await
    }

    /// [`Load::finish`] with the checks of a scenario: `extra` gets the
    /// load and history once the traffic stopped; its violations are
    /// reported (and fail the test) with the invariants', its summary is
    /// appended to the summary line.
    pub async fn finish_with(
        mut self,
        cluster: &Cluster,
        extra: impl FnOnce(&Load, &BTreeMap<String, Vec<HistMsg>>) -> ExtraCheck,
    ) -> Outcome {
        let scenario = cluster.scenario.clone();
        let _ = self.phase.send(Phase::Drain);
        let t_drain = Instant::now();
        let drained = self
            .wait_until(Duration::from_secs(90), |l| {
                (0..l.users.len()).all(|k| {
                    let s = l.user(k);
                    s.open.is_empty() && s.connected
                })
            })
            .await;
        println!(
            "[{scenario}] drain: {} in {} ms",
            if drained {
                "every send acked"
            } else {
                "NOT everything acked"
            },
            ms(t_drain.elapsed())
        );

        // History: every room, read until it holds every acked seq (history
        // is written behind, and a room may be moving).
        let rooms = self.rooms();
        let token_of: BTreeMap<String, String> = (0..self.users.len())
            .map(|k| {
                let s = self.user(k);
                (s.room.clone(), s.token.clone())
            })
            .collect();
        let max_acked: BTreeMap<String, u64> = {
            let mut m = BTreeMap::new();
            for k in 0..self.users.len() {
                for a in self.user(k).acks.values() {
                    let e = m.entry(a.room.clone()).or_insert(0);
                    *e = a.seq.max(*e);
                }
            }
            m
        };
        let mut history: BTreeMap<String, Vec<HistMsg>> = BTreeMap::new();
        let mut history_errors: Vec<String> = Vec::new();
        for room in &rooms {
            let deadline = Instant::now() + Duration::from_secs(30);
            loop {
                match cluster.history(room, &token_of[room]).await {
                    Ok(h) => {
                        let last = h.iter().map(|m| m.seq).max().unwrap_or(0);
                        let enough = last >= max_acked.get(room).copied().unwrap_or(0);
                        if enough || Instant::now() > deadline {
                            history.insert(room.clone(), h);
                            break;
                        }
                    }
                    Err(e) => {
                        if Instant::now() > deadline {
                            history_errors.push(format!("history of {room}: {e}"));
                            history.insert(room.clone(), Vec::new());
                            break;
                        }
                    }
                }
                tokio::time::sleep(Duration::from_millis(300)).await;
            }
        }
        let last_of: BTreeMap<String, u64> = history
            .iter()
            .map(|(r, h)| (r.clone(), h.iter().map(|m| m.seq).max().unwrap_or(0)))
            .collect();

        // Let deliveries settle: every member up to its room's last seq.
        let t_settle = Instant::now();
        let settled = self
            .wait_until(Duration::from_secs(30), |l| {
                (0..l.users.len()).all(|k| {
                    let s = l.user(k);
                    s.seen.get(&s.room).copied().unwrap_or(0)
                        >= last_of.get(&s.room).copied().unwrap_or(0)
                })
            })
            .await;
        // A little longer, so late duplicates show up too.
        tokio::time::sleep(Duration::from_millis(500)).await;
        println!(
            "[{scenario}] deliveries {} in {} ms",
            if settled { "settled" } else { "did NOT settle" },
            ms(t_settle.elapsed())
        );
        let _ = self.phase.send(Phase::Stop);
        for task in self.tasks.drain(..) {
            if tokio::time::timeout(Duration::from_secs(10), task)
                .await
                .is_err()
            {
                eprintln!("[{scenario}] a user task did not stop within 10 s");
            }
        }
        let extra = extra(&self, &history);
        let guards: Vec<_> = (0..self.users.len()).map(|k| self.user(k)).collect();
        let ledgers: Vec<&Ledger> = guards.iter().map(|s| &s.ledger).collect();
        let mut report = check(&ledgers, &history, self.started);
        for e in history_errors {
            report.violations.push("history could not be read", e);
        }
        for (what, msg) in extra.violations {
            report.violations.push(what, msg);
        }
        let (majority, switches) = guards
            .iter()
            .fold((0, 0), |(m, s), u| (m + u.majority, s + u.switches));
        let summary = format!(
            "scenario={scenario} {} no_majority={majority} node_switches={switches}{}",
            report.counts(),
            extra.summary
        );
        drop(guards);
        println!("{summary}");
        report.assert_clean(&format!("[{scenario}]"));
        Outcome {
            acked: report.acked,
            delivered: report.delivered,
            lost: report.lost,
            duplicated: report.duplicated,
            resumes: report.resumes,
            summary,
        }
    }
}

impl Drop for Load {
    fn drop(&mut self) {
        let _ = self.phase.send(Phase::Stop);
        for task in &self.tasks {
            task.abort();
        }
    }
}

/// Scenario-specific checks (see [`Load::finish_with`]).
/// Scenario-specific checks (see [`Load::finish_with`]).
#[derive(Debug, Default)]
pub struct ExtraCheck {
    /// (what is broken, the case)
    pub violations: Vec<(&'static str, String)>,
    /// Appended to the summary line (` key=value ...`).
    pub summary: String,
}

/// The counts of a finished scenario (it passed the invariants).
#[derive(Debug, Clone)]
pub struct Outcome {
    pub acked: usize,
    pub delivered: usize,
    pub lost: usize,
    pub duplicated: usize,
    pub resumes: usize,
    pub summary: String,
}

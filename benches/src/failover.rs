//! The `failover` scenario: M rooms of K members spread over the nodes of a
//! cluster, every member sending continuously; then `kill -9` of the node
//! that owns the most rooms. Its clients reconnect to the other nodes and
//! `resume`; everyone resends what was answered `unavailable` (or not
//! answered at all) with the same `client_id`. Measured: from the kill to
//! the first `ack` of a send into each room the dead node owned, from the
//! kill to each of its clients' `resumed`, and, after the traffic settled,
//! whether every acked message reached every member once and in order.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use anyhow::{anyhow, Context};
use futures_util::{SinkExt, StreamExt};
use hdrhistogram::Histogram;
use serde::Serialize;
use serde_json::{json, Value};
use tokio::sync::watch;
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::Message;

use crate::cli::Env;
use crate::cluster::{log_events, ms_between, Cluster};
use crate::load::run_limited;
use crate::net::{client_config, connect_ws, Ws};
use crate::proto::{self, Stamp};
use crate::report::{new_histogram, Latency};
use crate::sys::self_cpu;

/// At most this many problem descriptions are kept.
const MAX_PROBLEMS: usize = 30;
/// A client that cannot resume anywhere for this long gives up.
const GIVE_UP: Duration = Duration::from_secs(60);

#[derive(Debug, Clone)]
pub struct FailoverSpec {
    pub rooms: usize,
    pub members: usize,
    /// Messages/s of each member.
    pub rate: f64,
    /// Sending before the kill.
    pub before: Duration,
    /// Sending after the kill.
    pub after: Duration,
    /// After sending stops: at most this long for every ack and delivery.
    pub drain: Duration,
    /// A send with no answer for this long is sent again (same client_id).
    pub resend_after: Duration,
    /// A send answered `unavailable` is sent again after this long.
    pub retry_unavailable: Duration,
    /// Unanswered sends a member keeps at once; past it, it skips new ones.
    pub window: usize,
    pub payload: usize,
    /// The node to kill (default: the one owning the most of the rooms).
    pub victim: Option<String>,
    /// Every member sends a message at the kill (one on the killed node:
    /// once it resumed), whatever its rate: with a slow rate, a room's time
    /// to serve again is then not the wait for its next message.
    pub probe_at_kill: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Run,
    Drain,
    Stop,
}

/// Counters and settings every member task shares.
struct Shared {
    start: Instant,
    addrs: Vec<SocketAddr>,
    env: Env,
    spec: FailoverSpec,
    rooms: Vec<String>,
    padding: String,
    sent: AtomicU64,
    resends: AtomicU64,
    acks: AtomicU64,
    delivered: AtomicU64,
    unavailable: AtomicU64,
    errors: AtomicU64,
    skipped: AtomicU64,
    connected: AtomicUsize,
    pending: AtomicUsize,
    /// The highest acked seq of each room.
    max_acked: Vec<AtomicU64>,
    /// Each member's last in-order seq.
    last_seq: Vec<AtomicU64>,
    /// Each member's current node.
    node_of: Vec<AtomicUsize>,
    /// ns since `start` of the kill; u64::MAX before it.
    kill_ns: AtomicU64,
    /// Rooms the killed node owned (set before the kill).
    dead_room: Vec<AtomicU64>,
    /// Per room: ns from the kill to the first ack of a send transmitted after the kill.
    first_ack_after_kill: Vec<AtomicU64>,
    /// Per room: ns from the kill to the first send written after it.
    first_tx_after_kill: Vec<AtomicU64>,
    window_max: AtomicU64,
    /// `resumed` frames whose seq differs from what the replay delivered.
    resumed_mismatch: AtomicU64,
    /// `resumed` frames that do not list the member's room.
    resumed_without_room: AtomicU64,
    notes: Mutex<Vec<String>>,
    latency: Mutex<Histogram<u64>>,
    ack_latency: Mutex<Histogram<u64>>,
    problems: Mutex<Vec<String>>,
}

impl Shared {
    fn now_ns(&self) -> u64 {
        self.start.elapsed().as_nanos() as u64
    }

    fn problem(&self, text: String) {
        let mut p = self.problems.lock().unwrap_or_else(|e| e.into_inner());
        if p.len() < MAX_PROBLEMS {
            p.push(text);
        }
    }

    /// Something the protocol does not promise, that loses nothing.
    fn note(&self, text: String) {
        let mut p = self.notes.lock().unwrap_or_else(|e| e.into_inner());
        if p.len() < MAX_PROBLEMS {
            p.push(text);
        }
    }

    fn killed_at(&self) -> Option<u64> {
        match self.kill_ns.load(Relaxed) {
            u64::MAX => None,
            ns => Some(ns),
        }
    }
}

struct Pending {
    frame: String,
    first_ns: u64,
    last_ns: u64,
    retry_at: Option<Instant>,
    last_sent: Instant,
}

/// One member: its room, its connection's state, what it saw.
struct Member {
    idx: usize,
    room: usize,
    /// Index of the member in its room (the `publisher` of its bodies).
    local: u32,
    node: usize,
    resume_token: String,
    join_seq: u64,
    next_n: u64,
    pending: BTreeMap<u64, Pending>,
    /// client n -> seq.
    acks: HashMap<u64, u64>,
    /// (seq, publisher, n) in arrival order.
    received: Vec<(u64, u32, u64)>,
    last_seq: u64,
    ahead: BTreeSet<u64>,
    seen: BTreeSet<u64>,
    /// (when, node it was on, why).
    disconnects: Vec<(u64, usize, String)>,
    /// (when `resumed` arrived, ns since the connection was lost, attempts).
    resumes: Vec<(u64, u64, u32)>,
    failed_attempts: u32,
    /// It sent its message of the kill (`probe_at_kill`).
    probed: bool,
}

enum Outcome {
    Stop,
    Lost(String),
}

impl Member {
    fn on_text(&mut self, sh: &Shared, text: &str) -> Option<Value> {
        let v: Value = match serde_json::from_str(text) {
            Ok(v) => v,
            Err(_) => {
                sh.problem(format!(
                    "member {}: a frame that is not JSON: {text}",
                    self.idx
                ));
                return None;
            }
        };
        let now_ns = sh.now_ns();
        match v["type"].as_str().unwrap_or_default() {
            "message" => {
                let room = v["room"].as_str().unwrap_or_default();
                if room != sh.rooms[self.room] {
                    sh.problem(format!(
                        "member {}: a message of another room: {text}",
                        self.idx
                    ));
                    return None;
                }
                let seq = v["seq"].as_u64().unwrap_or(0);
                let stamp = v["body"].as_str().and_then(proto::parse_body);
                let Some(stamp) = stamp.filter(|s| s.room as usize == self.room) else {
                    sh.problem(format!("member {}: a message not ours: {text}", self.idx));
                    return None;
                };
                self.received.push((seq, stamp.publisher, stamp.n));
                if self.seen.insert(seq) {
                    sh.delivered.fetch_add(1, Relaxed);
                    let latency = now_ns.saturating_sub(stamp.t_ns);
                    sh.window_max.fetch_max(latency, Relaxed);
                    sh.latency
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .saturating_record(latency.max(1));
                    if seq == self.last_seq + 1 {
                        self.last_seq = seq;
                        while self.ahead.remove(&(self.last_seq + 1)) {
                            self.last_seq += 1;
                        }
                        sh.last_seq[self.idx].store(self.last_seq, Relaxed);
                    } else if seq > self.last_seq + 1 {
                        self.ahead.insert(seq);
                    }
                }
            }
            "ack" => {
                let n = client_n(&v["client_id"]);
                let seq = v["seq"].as_u64().unwrap_or(0);
                let Some(n) = n else {
                    sh.problem(format!(
                        "member {}: an ack of no client_id of ours: {text}",
                        self.idx
                    ));
                    return None;
                };
                match self.pending.remove(&n) {
                    Some(p) => {
                        sh.pending.fetch_sub(1, Relaxed);
                        sh.acks.fetch_add(1, Relaxed);
                        sh.max_acked[self.room].fetch_max(seq, Relaxed);
                        sh.ack_latency
                            .lock()
                            .unwrap_or_else(|e| e.into_inner())
                            .saturating_record(now_ns.saturating_sub(p.first_ns).max(1));
                        if let Some(kill) = sh.killed_at() {
                            // Only a transmission after the kill proves a
                            // live owner (the dead one answers nothing more).
                            if p.last_ns > kill {
                                sh.first_ack_after_kill[self.room]
                                    .fetch_min(now_ns - kill, Relaxed);
                            }
                        }
                        self.acks.insert(n, seq);
                    }
                    None => match self.acks.get(&n) {
                        Some(&first) if first != seq => sh.problem(format!(
                            "member {}: c{n} acked as #{first} and again as #{seq}",
                            self.idx
                        )),
                        Some(_) => {}
                        None => sh.problem(format!(
                            "member {}: an ack for a send never made: {text}",
                            self.idx
                        )),
                    },
                }
            }
            "error" => {
                let code = v["code"].as_str().unwrap_or_default();
                let reference = &v["ref"];
                if let Some(n) = client_n(reference) {
                    if let Some(p) = self.pending.get_mut(&n) {
                        if code == "unavailable" {
                            sh.unavailable.fetch_add(1, Relaxed);
                            p.retry_at = Some(Instant::now() + sh.spec.retry_unavailable);
                            return Some(v);
                        }
                    } else if self.acks.contains_key(&n) && code == "unavailable" {
                        // An answer to a resend of an acked message.
                        return Some(v);
                    }
                } else if reference == "send" && code == "unavailable" {
                    // A room restarted: what waited in it is never answered.
                    sh.unavailable.fetch_add(1, Relaxed);
                    let now = Instant::now();
                    for p in self.pending.values_mut() {
                        p.retry_at = Some(now);
                    }
                    return Some(v);
                }
                sh.errors.fetch_add(1, Relaxed);
                sh.problem(format!("member {}: {text}", self.idx));
            }
            "session" => {
                if let Some(t) = v["resume_token"].as_str() {
                    self.resume_token = t.to_string();
                }
            }
            _ => {}
        }
        Some(v)
    }

    /// The frames due now: a new message (when it is time and the window
    /// allows), and resends.
    fn due(&mut self, sh: &Shared, now: Instant, new: bool) -> Vec<String> {
        let mut out = Vec::new();
        let now_ns = sh.now_ns();
        if new {
            if self.pending.len() < sh.spec.window {
                let n = self.next_n;
                self.next_n += 1;
                let mut body = String::new();
                proto::write_body(
                    &mut body,
                    Stamp {
                        room: self.room as u32,
                        publisher: self.local,
                        n,
                        t_ns: now_ns,
                    },
                    &sh.padding,
                );
                let mut frame = String::new();
                proto::send_frame(&mut frame, &sh.rooms[self.room], &body, n);
                out.push(frame.clone());
                self.pending.insert(
                    n,
                    Pending {
                        frame,
                        first_ns: now_ns,
                        last_ns: now_ns,
                        retry_at: None,
                        last_sent: now,
                    },
                );
                sh.pending.fetch_add(1, Relaxed);
                sh.sent.fetch_add(1, Relaxed);
            } else {
                sh.skipped.fetch_add(1, Relaxed);
            }
        }
        for p in self.pending.values_mut() {
            let due = match p.retry_at {
                Some(at) => at <= now,
                None => now.duration_since(p.last_sent) >= sh.spec.resend_after,
            };
            if due {
                p.retry_at = None;
                p.last_sent = now;
                p.last_ns = now_ns;
                sh.resends.fetch_add(1, Relaxed);
                out.push(p.frame.clone());
            }
        }
        out
    }

    /// Notes a transmission into the room (for the first one after the kill).
    fn sent_now(&self, sh: &Shared, now_ns: u64) {
        if let Some(kill) = sh.killed_at() {
            if now_ns > kill {
                sh.first_tx_after_kill[self.room].fetch_min(now_ns - kill, Relaxed);
            }
        }
    }

    /// When something is next due (a resend), if anything is pending.
    fn next_resend(&self, sh: &Shared) -> Option<Instant> {
        self.pending
            .values()
            .map(|p| p.retry_at.unwrap_or(p.last_sent + sh.spec.resend_after))
            .min()
    }
}

/// `c<n>` -> n.
fn client_n(v: &Value) -> Option<u64> {
    v.as_str()?.strip_prefix('c')?.parse().ok()
}

/// Sends the frames; false when the socket broke.
async fn send_all(ws: &mut Ws, frames: Vec<String>) -> Result<(), String> {
    if frames.is_empty() {
        return Ok(());
    }
    let write = async {
        for f in frames {
            ws.feed(Message::text(f)).await?;
        }
        ws.flush().await
    };
    match tokio::time::timeout(Duration::from_secs(5), write).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) => Err(format!("send failed: {e}")),
        Err(_) => Err("send blocked for 5 s".into()),
    }
}

/// Runs one connection until it breaks or the run stops.
async fn connected(
    sh: &Shared,
    m: &mut Member,
    ws: &mut Ws,
    next_new: &mut Instant,
    phase: &mut watch::Receiver<Phase>,
) -> Outcome {
    let period = Duration::from_secs_f64(1.0 / sh.spec.rate);
    loop {
        let ph = *phase.borrow();
        if ph == Phase::Stop {
            return Outcome::Stop;
        }
        let now = Instant::now();
        let probe = sh.spec.probe_at_kill && !m.probed && sh.killed_at().is_some();
        let new = ph == Phase::Run && (now >= *next_new || probe);
        m.probed |= new && probe;
        if new && now >= *next_new {
            *next_new += period;
            if *next_new < now {
                // Behind (a reconnect): no burst of catch-up sends.
                *next_new = now + period;
            }
        }
        let frames = m.due(sh, now, new);
        let wrote = !frames.is_empty();
        if let Err(e) = send_all(ws, frames).await {
            return Outcome::Lost(e);
        }
        if wrote {
            m.sent_now(sh, sh.now_ns());
        }
        let mut wake = m.next_resend(sh);
        if ph == Phase::Run {
            wake = Some(wake.map_or(*next_new, |w| w.min(*next_new)));
        }
        let wake = wake.unwrap_or(now + Duration::from_secs(1));
        tokio::select! {
            biased;
            _ = phase.changed() => {}
            frame = ws.next() => match frame {
                Some(Ok(Message::Text(t))) => {
                    m.on_text(sh, t.as_str());
                }
                Some(Ok(Message::Close(c))) => {
                    return Outcome::Lost(match c {
                        Some(c) => format!("closed by the server: {} {}", u16::from(c.code), c.reason),
                        None => "closed by the server".into(),
                    });
                }
                Some(Ok(_)) => {}
                Some(Err(e)) => return Outcome::Lost(format!("socket error: {e}")),
                None => return Outcome::Lost("connection ended".into()),
            },
            _ = tokio::time::sleep_until(wake) => {}
        }
    }
}

/// Connects to node `target` and resumes there: the socket once `resumed` came.
async fn try_resume(sh: &Shared, m: &mut Member, target: usize) -> Result<Ws, String> {
    let addr = sh.addrs[target];
    let config = client_config(sh.env.common.read_buffer.unwrap_or(4 * 1024));
    let mut ws = tokio::time::timeout(
        Duration::from_secs(5),
        connect_ws(addr, sh.env.sources.pick(), "/ws", config),
    )
    .await
    .map_err(|_| format!("connect {addr}: timed out"))?
    .map_err(|e| format!("connect {addr}: {e:#}"))?;
    let mut rooms = serde_json::Map::new();
    rooms.insert(sh.rooms[m.room].clone(), json!(m.last_seq));
    let frame =
        json!({"type": "resume", "resume_token": m.resume_token, "rooms": rooms}).to_string();
    send_all(&mut ws, vec![frame]).await?;
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let next = tokio::time::timeout_at(deadline, ws.next())
            .await
            .map_err(|_| format!("no `resumed` from {addr} within 15 s"))?;
        match next {
            Some(Ok(Message::Text(t))) => {
                let t = t.as_str();
                if proto::frame_type(t) == Some("error") && t.contains("\"ref\":\"resume\"") {
                    return Err(format!("resume refused by {addr}: {t}"));
                }
                if let Some(v) = m.on_text(sh, t) {
                    if v["type"] == "resumed" {
                        let room = &sh.rooms[m.room];
                        match v["rooms"][room].as_u64() {
                            Some(claimed) if claimed != m.last_seq => {
                                sh.resumed_mismatch.fetch_add(1, Relaxed);
                                sh.note(format!(
                                    "member {}: `resumed` on {addr} says {room} is caught up through #{claimed}, but the client had received through #{} in order when it came",
                                    m.idx, m.last_seq
                                ));
                            }
                            Some(_) => {}
                            None => {
                                sh.resumed_without_room.fetch_add(1, Relaxed);
                                sh.note(format!(
                                    "member {}: `resumed` on {addr} does not list {room}: {t}",
                                    m.idx
                                ));
                            }
                        }
                        return Ok(ws);
                    }
                }
            }
            Some(Ok(Message::Close(c))) => {
                return Err(format!(
                    "{addr} closed while resuming: {:?}",
                    c.map(|c| u16::from(c.code))
                ))
            }
            Some(Ok(_)) => {}
            Some(Err(e)) => return Err(format!("{addr}: error while resuming: {e}")),
            None => return Err(format!("{addr}: ended while resuming")),
        }
    }
}

/// After a lost connection: the next nodes in turn until one resumes. None
/// when told to stop or after [`GIVE_UP`].
async fn reconnect(sh: &Shared, m: &mut Member, phase: &watch::Receiver<Phase>) -> Option<Ws> {
    let lost_at = Instant::now();
    let lost_ns = sh.now_ns();
    let n = sh.addrs.len();
    let mut target = m.node;
    let mut attempts = 0u32;
    let mut last_error = String::new();
    loop {
        if *phase.borrow() == Phase::Stop {
            return None;
        }
        if lost_at.elapsed() > GIVE_UP {
            sh.problem(format!(
                "member {}: could not resume on any node within {GIVE_UP:?} ({attempts} attempts; last: {last_error})",
                m.idx
            ));
            return None;
        }
        target = (target + 1) % n;
        attempts += 1;
        match try_resume(sh, m, target).await {
            Ok(ws) => {
                let now_ns = sh.now_ns();
                m.node = target;
                sh.node_of[m.idx].store(target, Relaxed);
                m.resumes.push((now_ns, now_ns - lost_ns, attempts));
                let now = Instant::now();
                for p in m.pending.values_mut() {
                    p.retry_at = Some(now);
                }
                return Some(ws);
            }
            Err(e) => {
                m.failed_attempts += 1;
                last_error = e;
                // A refused connection costs nothing: try the next node at
                // once, and pause only after a whole round of them.
                if (attempts as usize).is_multiple_of(n) {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        }
    }
}

async fn member_task(
    sh: Arc<Shared>,
    mut m: Member,
    mut ws: Ws,
    mut phase: watch::Receiver<Phase>,
    first_send: Instant,
) -> Member {
    let mut next_new = first_send;
    sh.connected.fetch_add(1, Relaxed);
    loop {
        match connected(&sh, &mut m, &mut ws, &mut next_new, &mut phase).await {
            Outcome::Stop => {
                sh.connected.fetch_sub(1, Relaxed);
                let _ = tokio::time::timeout(Duration::from_secs(1), ws.close(None)).await;
                return m;
            }
            Outcome::Lost(why) => {
                sh.connected.fetch_sub(1, Relaxed);
                m.disconnects.push((sh.now_ns(), m.node, why));
                match reconnect(&sh, &mut m, &phase).await {
                    Some(new) => {
                        ws = new;
                        sh.connected.fetch_add(1, Relaxed);
                    }
                    None => return m,
                }
            }
        }
    }
}

/// A figure in ms that may be missing.
#[derive(Debug, Clone, Serialize)]
pub struct RoomFirstAck {
    pub room: String,
    /// The killed node owned it.
    pub moved: bool,
    /// From the kill to the first send written into it after the kill.
    pub first_send_ms: Option<f64>,
    /// From the kill to the first ack of a send (transmitted after the kill) into it.
    pub ms: Option<f64>,
    /// From the kill to its "room lease taken" in a surviving node's log.
    pub lease_taken_ms: Option<f64>,
    pub new_owner: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct NodeDetection {
    pub node: String,
    /// From the kill to its first "cluster membership changed" without the dead node.
    pub ms: Option<f64>,
}

#[derive(Debug, Clone, Serialize)]
pub struct FailoverTick {
    pub t_s: f64,
    pub sent: u64,
    pub acked: u64,
    pub delivered: u64,
    pub connected: usize,
    pub max_latency_ms: f64,
}

/// What the `failover` scenario measured.
#[derive(Debug, Clone, Serialize)]
pub struct FailoverResult {
    pub nodes: Vec<String>,
    pub victim: String,
    /// Rooms each node owned right before the kill.
    pub rooms_per_node: BTreeMap<String, usize>,
    pub victim_rooms: Vec<String>,
    pub clients: usize,
    pub clients_on_victim: usize,
    /// From the kill to the first ack of a send into a room the dead node
    /// owned: the first such room, and the last one (every room serves again).
    pub first_ack_ms_first_room: Option<f64>,
    pub first_ack_ms_all_rooms: Option<f64>,
    /// The same for the rooms that did not move (their clients on the dead node reconnect too).
    pub first_ack_ms_other_rooms_max: Option<f64>,
    /// From the kill until every room (moved or not) acked a send made
    /// after it: the whole cluster serves again.
    pub first_ack_ms_every_room: Option<f64>,
    pub rooms: Vec<RoomFirstAck>,
    /// From the kill to `resumed` of the dead node's clients.
    pub resumed_clients: usize,
    pub resume_ms: Latency,
    pub resume_attempts_max: u32,
    /// `resumed` frames naming a seq other than the last one the client had
    /// received before it (a live message overtook `resumed`): against the
    /// protocol's order, though nothing is lost or repeated.
    pub resumed_mismatch: u64,
    /// `resumed` frames that do not list the client's room (the protocol
    /// says every room of the session): a note; the deliveries are checked
    /// anyway.
    pub resumed_without_room: u64,
    /// Connections of the surviving nodes' clients that were lost meanwhile.
    pub other_disconnects: usize,
    /// From the node logs: detection per surviving node, and the last of them.
    pub detection: Vec<NodeDetection>,
    pub detection_ms_max: Option<f64>,
    /// From the node logs: the last "room lease taken" of the dead node's rooms.
    pub lease_taken_ms_max: Option<f64>,
    pub sent: u64,
    pub resends: u64,
    pub unavailable: u64,
    pub skipped_window_full: u64,
    pub acked: u64,
    pub unacked: u64,
    pub expected_deliveries: u64,
    pub delivered: u64,
    pub lost: u64,
    pub duplicated: u64,
    /// One client_id stored under two seqs (de-duplication failed).
    pub duplicate_messages: u64,
    pub out_of_order: u64,
    /// Two members saw different messages under one seq, or an ack named a seq holding another message.
    pub conflicts: u64,
    pub errors: u64,
    /// Send (first transmission) to delivery, every distinct delivery.
    pub latency: Latency,
    /// Send (first transmission) to ack.
    pub ack_latency: Latency,
    pub generator_cpu_pct: f64,
    pub drain_s: f64,
    pub timeline: Vec<FailoverTick>,
}

/// What a failover run found: the figures, the violations (none: the run is
/// ok) and notes (deviations from the protocol that lose nothing).
pub struct Findings {
    pub result: FailoverResult,
    pub problems: Vec<String>,
    pub notes: Vec<String>,
}

/// Sets up the members, runs the traffic, kills the victim, settles and
/// checks.
pub async fn run(
    env: &Env,
    cluster: &mut Cluster,
    spec: &FailoverSpec,
) -> anyhow::Result<Findings> {
    anyhow::ensure!(cluster.nodes.len() >= 2, "failover needs at least 2 nodes");
    anyhow::ensure!(
        spec.rooms >= 1 && spec.members >= 1,
        "at least one room and one member"
    );
    anyhow::ensure!(
        spec.rate.is_finite() && spec.rate > 0.0,
        "--rate must be positive"
    );
    let n_nodes = cluster.nodes.len();
    let addrs: Vec<SocketAddr> = cluster.nodes.iter().map(|n| n.http).collect();
    let rooms: Vec<String> = (0..spec.rooms)
        .map(|r| format!("{}f{r}", env.run_id))
        .collect();
    let total = spec.rooms * spec.members;

    // Accounts and connections: member (r, k) first on node (r * K + k) mod N.
    env.progress(format!("setup: {total} members register and log in"));
    let tokens = run_limited(env, "login", total, |g| {
        let env = env.clone();
        let addr = addrs[g % n_nodes];
        async move {
            let user = format!("{}f{g}", env.run_id);
            proto::register_and_login(addr, env.sources.pick(), &user).await
        }
    })
    .await?;
    env.progress(format!("setup: {total} members join {} rooms", spec.rooms));
    let read_buffer = env.common.read_buffer.unwrap_or(4 * 1024);
    let joined = run_limited(env, "connect", total, |g| {
        let env = env.clone();
        let addr = addrs[g % n_nodes];
        let token = tokens[g].clone();
        let room = rooms[g / spec.members].clone();
        async move {
            let mut ws = connect_ws(
                addr,
                env.sources.pick(),
                &format!("/ws?token={token}"),
                client_config(read_buffer),
            )
            .await?;
            let session =
                proto::expect_frame(&mut ws, "session", |_| true, Duration::from_secs(30)).await?;
            let v: Value = serde_json::from_str(&session)?;
            let resume_token = v["resume_token"]
                .as_str()
                .ok_or_else(|| anyhow!("a session frame without resume_token: {session}"))?
                .to_string();
            let joined = proto::join_frame(&mut ws, &room).await?;
            let v: Value = serde_json::from_str(&joined)?;
            let join_seq = v["last_seq"].as_u64().unwrap_or(0);
            anyhow::Ok((ws, resume_token, join_seq))
        }
    })
    .await?;

    // Every room has an owner once its members joined.
    let mut owners = Vec::new();
    for room in &rooms {
        owners.push(cluster.owner_of(room, Duration::from_secs(10)).await?);
    }

    let (phase_tx, phase_rx) = watch::channel(Phase::Run);
    let sh = Arc::new(Shared {
        start: Instant::now(),
        addrs: addrs.clone(),
        env: env.clone(),
        spec: spec.clone(),
        rooms: rooms.clone(),
        padding: if spec.payload == 0 {
            String::new()
        } else {
            "x".repeat(spec.payload)
        },
        sent: AtomicU64::new(0),
        resends: AtomicU64::new(0),
        acks: AtomicU64::new(0),
        delivered: AtomicU64::new(0),
        unavailable: AtomicU64::new(0),
        errors: AtomicU64::new(0),
        skipped: AtomicU64::new(0),
        connected: AtomicUsize::new(0),
        pending: AtomicUsize::new(0),
        max_acked: (0..spec.rooms).map(|_| AtomicU64::new(0)).collect(),
        last_seq: joined.iter().map(|j| AtomicU64::new(j.2)).collect(),
        node_of: (0..total).map(|g| AtomicUsize::new(g % n_nodes)).collect(),
        kill_ns: AtomicU64::new(u64::MAX),
        dead_room: (0..spec.rooms).map(|_| AtomicU64::new(0)).collect(),
        first_ack_after_kill: (0..spec.rooms).map(|_| AtomicU64::new(u64::MAX)).collect(),
        first_tx_after_kill: (0..spec.rooms).map(|_| AtomicU64::new(u64::MAX)).collect(),
        window_max: AtomicU64::new(0),
        resumed_mismatch: AtomicU64::new(0),
        resumed_without_room: AtomicU64::new(0),
        notes: Mutex::new(Vec::new()),
        latency: Mutex::new(new_histogram()),
        ack_latency: Mutex::new(new_histogram()),
        problems: Mutex::new(Vec::new()),
    });
    let settle = Duration::from_millis(env.common.settle_ms);
    env.progress(format!(
        "setup: {total} members ready; room owners {}; settling for {settle:?}",
        summarize_owners(&owners)
    ));
    tokio::time::sleep(settle).await;

    let t0 = Instant::now() + Duration::from_millis(20);
    let period = 1.0 / spec.rate;
    let mut tasks = Vec::with_capacity(total);
    for (g, (ws, resume_token, join_seq)) in joined.into_iter().enumerate() {
        let m = Member {
            idx: g,
            room: g / spec.members,
            local: (g % spec.members) as u32,
            node: g % n_nodes,
            resume_token,
            join_seq,
            next_n: 0,
            pending: BTreeMap::new(),
            acks: HashMap::new(),
            received: Vec::new(),
            last_seq: join_seq,
            ahead: BTreeSet::new(),
            seen: BTreeSet::new(),
            disconnects: Vec::new(),
            resumes: Vec::new(),
            probed: false,
            failed_attempts: 0,
        };
        // Members spread evenly over the send interval, each room's
        // interleaved with the others': a room gets a send every
        // 1 / (K * r) s, not K of them at once every 1 / r s.
        let slot = (g % spec.members) * spec.rooms + g / spec.members;
        let first = t0 + Duration::from_secs_f64(period * slot as f64 / total as f64);
        tasks.push(tokio::spawn(member_task(
            sh.clone(),
            m,
            ws,
            phase_rx.clone(),
            first,
        )));
    }

    // The run: progress every second; the kill after `before`; the drain after `after`.
    let cpu0 = self_cpu();
    let kill_due = t0 + spec.before;
    let drain_due = kill_due + spec.after;
    let mut drain_limit: Option<Instant> = None;
    let mut next_tick = t0 + Duration::from_secs(1);
    let mut last = (0u64, 0u64, 0u64);
    let mut timeline = Vec::new();
    let mut victim: Option<(usize, SystemTime)> = None;
    let mut victim_rooms: Vec<usize> = Vec::new();
    let mut on_victim: Vec<usize> = Vec::new();
    let mut rooms_per_node: BTreeMap<String, usize> =
        cluster.nodes.iter().map(|n| (n.name.clone(), 0)).collect();
    let drain_started;
    loop {
        tokio::time::sleep(Duration::from_millis(10)).await;
        let now = Instant::now();
        if victim.is_none() && now >= kill_due {
            let owners = cluster.owners(&rooms).await?;
            for owner in owners.iter().flatten() {
                *rooms_per_node.entry(owner.clone()).or_insert(0) += 1;
            }
            let name = match &spec.victim {
                Some(name) => name.clone(),
                None => rooms_per_node
                    .iter()
                    .max_by_key(|(name, count)| (**count, std::cmp::Reverse((*name).clone())))
                    .map(|(name, _)| name.clone())
                    .ok_or_else(|| anyhow!("no node owns any room"))?,
            };
            let i = cluster
                .index_of(&name)
                .ok_or_else(|| anyhow!("no node {name} to kill"))?;
            victim_rooms = (0..spec.rooms)
                .filter(|&r| owners[r].as_deref() == Some(name.as_str()))
                .collect();
            for &r in &victim_rooms {
                sh.dead_room[r].store(1, Relaxed);
            }
            on_victim = (0..total)
                .filter(|&g| sh.node_of[g].load(Relaxed) == i)
                .collect();
            sh.kill_ns.store(sh.now_ns(), Relaxed);
            let at = cluster.kill9(i)?;
            if spec.probe_at_kill {
                // Wakes every member: each sends its message of the kill.
                let _ = phase_tx.send(Phase::Run);
            }
            env.progress(format!(
                "[failover] t={:.1}s kill -9 {name}: it owned {} of {} rooms and served {} of {total} members",
                (now - t0).as_secs_f64(),
                victim_rooms.len(),
                spec.rooms,
                on_victim.len(),
            ));
            victim = Some((i, at));
        }
        if drain_limit.is_none() && now >= drain_due {
            let _ = phase_tx.send(Phase::Drain);
            drain_limit = Some(now + spec.drain);
        }
        if now >= next_tick {
            next_tick += Duration::from_secs(1);
            let c = (
                sh.sent.load(Relaxed),
                sh.acks.load(Relaxed),
                sh.delivered.load(Relaxed),
            );
            let tick = FailoverTick {
                t_s: (now - t0).as_secs_f64(),
                sent: c.0 - last.0,
                acked: c.1 - last.1,
                delivered: c.2 - last.2,
                connected: sh.connected.load(Relaxed),
                max_latency_ms: sh.window_max.swap(0, Relaxed) as f64 / 1e6,
            };
            env.progress(format!(
                "[failover] t={:>5.1}s sent {:>6}/s acked {:>6}/s delivered {:>7}/s max latency {:>8.2} ms | pending {} unavailable {} resends {} errors {} | connected {}/{total} | gen CPU {:.0}%",
                tick.t_s,
                tick.sent,
                tick.acked,
                tick.delivered,
                tick.max_latency_ms,
                sh.pending.load(Relaxed),
                sh.unavailable.load(Relaxed),
                sh.resends.load(Relaxed),
                sh.errors.load(Relaxed),
                tick.connected,
                (self_cpu() - cpu0).as_secs_f64() / (now - t0).as_secs_f64().max(1e-3) * 100.0,
            ));
            timeline.push(tick);
            last = c;
        }
        if let Some(limit) = drain_limit {
            let settled = sh.pending.load(Relaxed) == 0
                && sh.connected.load(Relaxed) == total
                && (0..total).all(|g| {
                    sh.last_seq[g].load(Relaxed) >= sh.max_acked[g / spec.members].load(Relaxed)
                });
            if settled || now >= limit {
                drain_started = limit - spec.drain;
                break;
            }
        }
    }
    let drain_s = drain_started.elapsed().as_secs_f64();
    let wall = (Instant::now() - t0).as_secs_f64();
    let cpu = (self_cpu() - cpu0).as_secs_f64();
    let _ = phase_tx.send(Phase::Stop);
    let mut members = Vec::with_capacity(total);
    for t in tasks {
        members.push(t.await.context("a member task failed")?);
    }
    let (victim_i, kill_wall) = victim.ok_or_else(|| anyhow!("the run ended before the kill"))?;
    let kill_ns = sh.kill_ns.load(Relaxed);
    let mut problems = sh
        .problems
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .clone();

    // The checks.
    let check = check_deliveries(spec, &members);
    let unacked: u64 = members.iter().map(|m| m.pending.len() as u64).sum();

    // Resumes of the dead node's clients, counted from the kill.
    let mut resume_hist = new_histogram();
    let mut resume_attempts_max = 0;
    let mut resumed_clients = 0;
    for &g in &on_victim {
        let m = &members[g];
        match m.resumes.iter().find(|r| r.0 > kill_ns) {
            Some(&(at, _, attempts)) => {
                resumed_clients += 1;
                resume_hist.saturating_record((at - kill_ns).max(1));
                resume_attempts_max = resume_attempts_max.max(attempts);
            }
            None => problems.push(format!(
                "member {g} (on the killed node) never resumed: disconnects {:?}",
                m.disconnects
            )),
        }
    }
    let victim_set: BTreeSet<usize> = on_victim.iter().copied().collect();
    let other_disconnects = members
        .iter()
        .filter(|m| !victim_set.contains(&m.idx))
        .map(|m| m.disconnects.len())
        .sum::<usize>();

    // The node logs: detection and lease takeover.
    let victim_name = cluster.nodes[victim_i].name.clone();
    let mut detection = Vec::new();
    let mut lease_taken: HashMap<String, (f64, String)> = HashMap::new();
    for (i, node) in cluster.nodes.iter().enumerate() {
        if i == victim_i {
            continue;
        }
        let Some(log) = &node.log else {
            continue;
        };
        let events = log_events(log, &["cluster membership changed", "room lease taken"]);
        let mut detected = None;
        for e in &events {
            if e.at < kill_wall {
                continue;
            }
            let ms = ms_between(kill_wall, e.at);
            match e.message.as_str() {
                "cluster membership changed" if detected.is_none() => {
                    let live = e.fields["live"].to_string();
                    if !live.contains(&format!("\"{victim_name}\"")) {
                        detected = Some(ms);
                    }
                }
                "room lease taken" => {
                    if let Some(room) = e.fields["room"].as_str() {
                        let entry = lease_taken
                            .entry(room.to_string())
                            .or_insert((ms, node.name.clone()));
                        if ms < entry.0 {
                            *entry = (ms, node.name.clone());
                        }
                    }
                }
                _ => {}
            }
        }
        detection.push(NodeDetection {
            node: node.name.clone(),
            ms: detected,
        });
    }
    let detection_ms_max = if detection.iter().all(|d| d.ms.is_some()) && !detection.is_empty() {
        detection.iter().filter_map(|d| d.ms).reduce(f64::max)
    } else {
        None
    };

    let ms_after_kill = |v: &AtomicU64| match v.load(Relaxed) {
        u64::MAX => None,
        ns => Some(ns as f64 / 1e6),
    };
    let mut room_rows = Vec::new();
    for (r, name) in rooms.iter().enumerate() {
        let moved = victim_rooms.contains(&r);
        let taken = lease_taken.get(name).filter(|_| moved);
        let first = ms_after_kill(&sh.first_ack_after_kill[r]);
        room_rows.push(RoomFirstAck {
            room: name.clone(),
            moved,
            first_send_ms: ms_after_kill(&sh.first_tx_after_kill[r]),
            ms: first,
            lease_taken_ms: taken.map(|t| t.0),
            new_owner: taken.map(|t| t.1.clone()),
        });
        if first.is_none() {
            problems.push(format!(
                "room {name}{} never acked a send after the kill",
                if moved {
                    " (owned by the killed node)"
                } else {
                    ""
                }
            ));
        }
    }
    let dead_acks: Vec<f64> = room_rows
        .iter()
        .filter(|r| r.moved)
        .filter_map(|r| r.ms)
        .collect();
    let all_served = dead_acks.len() == victim_rooms.len();
    let lease_ms: Vec<f64> = room_rows.iter().filter_map(|r| r.lease_taken_ms).collect();
    let other_max = room_rows
        .iter()
        .filter(|r| !r.moved)
        .map(|r| r.ms)
        .try_fold(None::<f64>, |acc, v| {
            v.map(|v| Some(acc.map_or(v, |a: f64| a.max(v))))
        })
        .flatten();

    for (what, v) in [
        ("deliveries missing (lost)", check.lost),
        ("deliveries duplicated", check.duplicated),
        (
            "messages stored twice (one client_id under two seqs)",
            check.duplicate_messages,
        ),
        ("deliveries out of order", check.out_of_order),
        (
            "seqs holding different messages for different members, or acks naming another message",
            check.conflicts,
        ),
        ("sends never acked after the drain", unacked),
    ] {
        if v > 0 {
            problems.push(format!("{v} {what}"));
        }
    }
    let lat =
        |h: &Mutex<Histogram<u64>>| Latency::from_ns(&h.lock().unwrap_or_else(|e| e.into_inner()));
    let result = FailoverResult {
        nodes: cluster.nodes.iter().map(|n| n.name.clone()).collect(),
        victim: victim_name,
        rooms_per_node,
        victim_rooms: victim_rooms.iter().map(|&r| rooms[r].clone()).collect(),
        clients: total,
        clients_on_victim: on_victim.len(),
        first_ack_ms_first_room: dead_acks.iter().copied().reduce(f64::min),
        first_ack_ms_all_rooms: if all_served {
            dead_acks.iter().copied().reduce(f64::max)
        } else {
            None
        },
        first_ack_ms_other_rooms_max: other_max,
        first_ack_ms_every_room: room_rows
            .iter()
            .map(|r| r.ms)
            .try_fold(None::<f64>, |acc, v| {
                v.map(|v| Some(acc.map_or(v, |a: f64| a.max(v))))
            })
            .flatten(),
        rooms: room_rows,
        resumed_clients,
        resume_ms: Latency::from_ns(&resume_hist),
        resume_attempts_max,
        resumed_mismatch: sh.resumed_mismatch.load(Relaxed),
        resumed_without_room: sh.resumed_without_room.load(Relaxed),
        other_disconnects,
        detection,
        detection_ms_max,
        lease_taken_ms_max: if lease_ms.len() == victim_rooms.len() {
            lease_ms.iter().copied().reduce(f64::max)
        } else {
            None
        },
        sent: sh.sent.load(Relaxed),
        resends: sh.resends.load(Relaxed),
        unavailable: sh.unavailable.load(Relaxed),
        skipped_window_full: sh.skipped.load(Relaxed),
        acked: sh.acks.load(Relaxed),
        unacked,
        expected_deliveries: check.expected,
        delivered: check.delivered,
        lost: check.lost,
        duplicated: check.duplicated,
        duplicate_messages: check.duplicate_messages,
        out_of_order: check.out_of_order,
        conflicts: check.conflicts,
        errors: sh.errors.load(Relaxed),
        latency: lat(&sh.latency),
        ack_latency: lat(&sh.ack_latency),
        generator_cpu_pct: cpu / wall.max(1e-9) * 100.0,
        drain_s,
        timeline,
    };
    problems.extend(check.examples);
    // Where the members that miss deliveries were, to find them in the node logs.
    let rel = |ns: u64| (ns as f64 - kill_ns as f64) / 1e6;
    for &g in check.losers.iter().take(5) {
        let m = &members[g];
        problems.push(format!(
            "member {g} (user {}f{g}) misses deliveries: first on {}, now on {}; lost connections at {:?} ms after the kill; resumed at {:?} ms; its sends acked: {}",
            env.run_id,
            cluster.nodes[g % n_nodes].name,
            cluster.nodes[m.node].name,
            m.disconnects.iter().map(|d| rel(d.0).round()).collect::<Vec<_>>(),
            m.resumes.iter().map(|r| rel(r.0).round()).collect::<Vec<_>>(),
            m.acks.len(),
        ));
    }
    let notes = sh.notes.lock().unwrap_or_else(|e| e.into_inner()).clone();
    env.progress(format!(
        "[failover] killed {} ({} rooms, {} clients): first ack in a moved room after {} ms, all its rooms after {} ms, every room after {} ms; its clients resumed within {:.0} ms (p50 {:.0}); detection {} ms; leases taken within {} ms | sent {} acked {} delivered {}/{} lost {} dup {} unacked {} | gen CPU {:.0}%",
        result.victim,
        result.victim_rooms.len(),
        result.clients_on_victim,
        opt(result.first_ack_ms_first_room),
        opt(result.first_ack_ms_all_rooms),
        opt(result.first_ack_ms_every_room),
        result.resume_ms.max_ms,
        result.resume_ms.p50_ms,
        opt(result.detection_ms_max),
        opt(result.lease_taken_ms_max),
        result.sent,
        result.acked,
        result.delivered,
        result.expected_deliveries,
        result.lost,
        result.duplicated,
        result.unacked,
        result.generator_cpu_pct,
    ));
    Ok(Findings {
        result,
        problems,
        notes,
    })
}

fn opt(v: Option<f64>) -> String {
    v.map_or("-".into(), |v| format!("{v:.0}"))
}

fn summarize_owners(owners: &[String]) -> String {
    let mut count: BTreeMap<&str, usize> = BTreeMap::new();
    for o in owners {
        *count.entry(o.as_str()).or_insert(0) += 1;
    }
    count
        .iter()
        .map(|(n, c)| format!("{n}: {c}"))
        .collect::<Vec<_>>()
        .join(", ")
}

struct Check {
    expected: u64,
    delivered: u64,
    lost: u64,
    duplicated: u64,
    duplicate_messages: u64,
    out_of_order: u64,
    conflicts: u64,
    examples: Vec<String>,
    /// Members with deliveries missing.
    losers: Vec<usize>,
}

/// Every member must have received every seq of its room after its join,
/// once and in order; one seq is one message for everyone; every ack names
/// the seq that holds its message; no message is stored twice.
fn check_deliveries(spec: &FailoverSpec, members: &[Member]) -> Check {
    let mut c = Check {
        expected: 0,
        delivered: 0,
        lost: 0,
        duplicated: 0,
        duplicate_messages: 0,
        out_of_order: 0,
        conflicts: 0,
        examples: Vec::new(),
        losers: Vec::new(),
    };
    let example = |c: &mut Check, text: String| {
        if c.examples.len() < 10 {
            c.examples.push(text);
        }
    };
    for r in 0..spec.rooms {
        let room: Vec<&Member> = members.iter().filter(|m| m.room == r).collect();
        // seq -> (publisher, n), from every receipt.
        let mut canon: BTreeMap<u64, (u32, u64)> = BTreeMap::new();
        for m in &room {
            for &(seq, publisher, n) in &m.received {
                match canon.get(&seq) {
                    Some(&first) if first != (publisher, n) => {
                        c.conflicts += 1;
                        example(&mut c, format!("room {r}: #{seq} is {first:?} for one member, ({publisher}, {n}) for member {}", m.idx));
                    }
                    Some(_) => {}
                    None => {
                        canon.insert(seq, (publisher, n));
                    }
                }
            }
        }
        // Acks against what was delivered.
        let mut max_seq = canon.keys().next_back().copied().unwrap_or(0);
        for m in &room {
            for (&n, &seq) in &m.acks {
                max_seq = max_seq.max(seq);
                match canon.get(&seq) {
                    Some(&held) if held != (m.local, n) => {
                        c.conflicts += 1;
                        example(
                            &mut c,
                            format!(
                                "room {r}: member {} c{n} acked as #{seq}, which holds {held:?}",
                                m.idx
                            ),
                        );
                    }
                    _ => {}
                }
            }
        }
        let mut where_stored: HashMap<(u32, u64), u64> = HashMap::new();
        for (&seq, &key) in &canon {
            if let Some(other) = where_stored.insert(key, seq) {
                c.duplicate_messages += 1;
                example(
                    &mut c,
                    format!("room {r}: message {key:?} stored as #{other} and #{seq}"),
                );
            }
        }
        for m in &room {
            let mut seen = BTreeSet::new();
            let mut high = m.join_seq;
            for &(seq, _, _) in &m.received {
                if !seen.insert(seq) {
                    c.duplicated += 1;
                    example(
                        &mut c,
                        format!("room {r}: member {} got #{seq} twice", m.idx),
                    );
                } else if seq < high {
                    c.out_of_order += 1;
                    example(
                        &mut c,
                        format!("room {r}: member {} got #{seq} after #{high}", m.idx),
                    );
                }
                high = high.max(seq);
            }
            let owed = max_seq.saturating_sub(m.join_seq);
            c.expected += owed;
            let got = seen.range(m.join_seq + 1..=max_seq).count() as u64;
            c.delivered += got;
            if got < owed {
                c.lost += owed - got;
                c.losers.push(m.idx);
                let missing: Vec<u64> = (m.join_seq + 1..=max_seq)
                    .filter(|s| !seen.contains(s))
                    .take(5)
                    .collect();
                example(
                    &mut c,
                    format!(
                        "room {r}: member {} misses {} of #{}..=#{max_seq}, e.g. {missing:?}",
                        m.idx,
                        owed - got,
                        m.join_seq + 1
                    ),
                );
            }
        }
    }
    c
}

//! The message load engine behind `fanout` and `rooms`: connects every
//! client (and joins its room), then runs rounds of publishing at a fixed
//! rate, counting every delivery, its latency, losses and duplicates.

use std::collections::BTreeSet;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::stream::{SplitSink, SplitStream};
use futures_util::{SinkExt, StreamExt};
use hdrhistogram::Histogram;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::{Error as WsError, Message};

use crate::cli::{Env, Target};
use crate::net::{client_config, connect_ws, Ws};
use crate::proto::{self, Stamp};
use crate::report::{new_histogram, GroupResult, Latency, RoundResult, ServerRound, Tick};
use crate::sys::self_cpu;

/// Latency histograms are sharded by client so that recording stays cheap.
const SHARDS: usize = 16;
/// Most messages one publisher writes before it flushes.
const MAX_BATCH: u64 = 512;
/// At most this many problem descriptions are kept.
const MAX_PROBLEMS: usize = 20;

/// One connection of the load: its room (an index into the room names),
/// whether it publishes (its index among the room's publishers) and whether
/// it counts the room's messages.
#[derive(Debug, Clone, Copy)]
pub struct ClientSpec {
    pub room: u32,
    pub publisher: Option<u32>,
    pub subscriber: bool,
    /// Where it connects (and logs in): an index into [`LoadSpec::addrs`].
    pub node: usize,
    /// Which latency histogram its deliveries go to: an index into
    /// [`LoadSpec::groups`] (0 when there are none).
    pub group: usize,
}

impl ClientSpec {
    /// A client of the one server at `--url`, in no latency group.
    pub fn new(room: u32, publisher: Option<u32>, subscriber: bool) -> Self {
        Self {
            room,
            publisher,
            subscriber,
            node: 0,
            group: 0,
        }
    }
}

#[derive(Debug, Clone)]
pub struct LoadSpec {
    pub rooms: Vec<String>,
    pub clients: Vec<ClientSpec>,
    /// Extra characters in every body.
    pub payload: usize,
    /// The servers clients connect to (a cluster's nodes); empty: `--url` alone.
    pub addrs: Vec<SocketAddr>,
    /// Names of the latency groups reported apart (e.g. same-node and
    /// cross-node subscribers); empty: only the overall latency.
    pub groups: Vec<String>,
    /// Prefix of the usernames (default `<run id>u`): two loads on one
    /// server need different ones, or their users would share rooms.
    pub user_prefix: Option<String>,
}

impl LoadSpec {
    /// Clients of the one server at `--url`.
    pub fn single(rooms: Vec<String>, clients: Vec<ClientSpec>, payload: usize) -> Self {
        Self {
            rooms,
            clients,
            payload,
            addrs: Vec::new(),
            groups: Vec::new(),
            user_prefix: None,
        }
    }
}

/// Counters shared by every task of the load.
pub struct Shared {
    target: Target,
    /// The instant message timestamps count from.
    start: Instant,
    delivered: AtomicU64,
    duplicated: AtomicU64,
    misrouted: AtomicU64,
    acks: AtomicU64,
    errors: AtomicU64,
    closed: AtomicU64,
    /// Messages each publisher (global index) has written so far.
    sent: Vec<AtomicU64>,
    /// Room of each publisher (global index).
    pub_room: Vec<u32>,
    subscribers_in_room: Vec<u64>,
    /// Largest latency since the last progress tick, ns.
    window_max: AtomicU64,
    /// Per latency group, per shard.
    hist: Vec<Vec<Mutex<Histogram<u64>>>>,
    /// Deliveries per latency group.
    group_delivered: Vec<AtomicU64>,
    problems: Mutex<Vec<String>>,
    publishers_done: AtomicUsize,
    stopping: AtomicBool,
}

impl Shared {
    fn problem(&self, text: String) {
        let mut p = self.problems.lock().unwrap_or_else(|e| e.into_inner());
        if p.len() < MAX_PROBLEMS {
            p.push(text);
        }
    }

    fn now_ns(&self) -> u64 {
        self.start.elapsed().as_nanos() as u64
    }

    fn sent_total(&self) -> u64 {
        self.sent.iter().map(|s| s.load(Relaxed)).sum()
    }

    /// Deliveries owed for everything published so far.
    fn expected_total(&self) -> u64 {
        self.sent
            .iter()
            .zip(&self.pub_room)
            .map(|(s, &room)| s.load(Relaxed) * self.subscribers_in_room[room as usize])
            .sum()
    }
}

/// What publishers are told to do.
#[derive(Debug, Clone, Copy)]
enum Ctl {
    Idle,
    Round {
        start: Instant,
        duration: Duration,
        /// Messages/s of each publisher.
        rate: f64,
    },
    Stop,
}

/// Which of one room's publishers have sent up to which message; handles
/// (unexpected) reordering.
#[derive(Default)]
struct Track {
    next: u64,
    ahead: BTreeSet<u64>,
}

impl Track {
    /// True the first time `n` is seen.
    fn see(&mut self, n: u64) -> bool {
        if n == self.next {
            self.next += 1;
            while self.ahead.remove(&self.next) {
                self.next += 1;
            }
            true
        } else if n < self.next {
            false
        } else {
            self.ahead.insert(n)
        }
    }
}

struct ReaderInfo {
    client: usize,
    group: usize,
    room: u32,
    subscriber: bool,
    publishers: usize,
}

type Sink = SplitSink<Ws, Message>;
type Stream = SplitStream<Ws>;

/// One connection's tasks.
enum Client {
    /// A subscriber: one task owns the whole socket.
    Whole(JoinHandle<Ws>),
    /// A publisher: its reader drains (and counts acks), its writer publishes.
    Split {
        reader: JoinHandle<Stream>,
        publisher: JoinHandle<Sink>,
    },
}

/// Reads one connection until told to stop; answers the stream. `S` is the
/// whole socket for subscribers (no lock between halves) or the read half
/// for publishers.
async fn reader<S>(
    mut stream: S,
    sh: Arc<Shared>,
    info: ReaderInfo,
    mut stop: watch::Receiver<bool>,
) -> S
where
    S: futures_util::Stream<Item = Result<Message, WsError>> + Unpin,
{
    let mut tracks: Vec<Track> = (0..info.publishers).map(|_| Track::default()).collect();
    let shard = info.client % SHARDS;
    let stopped = stop.wait_for(|s| *s);
    tokio::pin!(stopped);
    loop {
        let next = tokio::select! {
            biased;
            next = stream.next() => next,
            _ = &mut stopped => break,
        };
        let why = match next {
            Some(Ok(Message::Text(text))) => {
                on_text(&sh, &info, &mut tracks, shard, text.as_str());
                continue;
            }
            Some(Ok(Message::Close(frame))) => match frame {
                Some(f) => format!("closed by the server: {} {}", u16::from(f.code), f.reason),
                None => "closed by the server".to_string(),
            },
            Some(Ok(_)) => continue,
            Some(Err(e)) => format!("socket error: {e}"),
            None => "connection ended".to_string(),
        };
        if !sh.stopping.load(Relaxed) {
            sh.closed.fetch_add(1, Relaxed);
            sh.problem(format!("client {}: {why}", info.client));
        }
        break;
    }
    stream
}

fn on_text(sh: &Shared, info: &ReaderInfo, tracks: &mut [Track], shard: usize, text: &str) {
    let body = match sh.target {
        Target::Bare => text,
        Target::Troupe => match proto::frame_type(text) {
            Some("message") => match proto::str_field(text, "body") {
                Some(body) => body,
                None => {
                    sh.misrouted.fetch_add(1, Relaxed);
                    return;
                }
            },
            Some("ack") => {
                sh.acks.fetch_add(1, Relaxed);
                return;
            }
            Some("error") => {
                sh.errors.fetch_add(1, Relaxed);
                sh.problem(format!("client {}: {text}", info.client));
                return;
            }
            _ => return,
        },
    };
    if !info.subscriber {
        return;
    }
    let stamp = match proto::parse_body(body) {
        Some(s) if s.room == info.room && (s.publisher as usize) < tracks.len() => s,
        _ => {
            sh.misrouted.fetch_add(1, Relaxed);
            return;
        }
    };
    if tracks[stamp.publisher as usize].see(stamp.n) {
        let latency = sh.now_ns().saturating_sub(stamp.t_ns);
        sh.delivered.fetch_add(1, Relaxed);
        sh.window_max.fetch_max(latency, Relaxed);
        sh.group_delivered[info.group].fetch_add(1, Relaxed);
        sh.hist[info.group][shard]
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .saturating_record(latency);
    } else {
        sh.duplicated.fetch_add(1, Relaxed);
    }
}

struct PubInfo {
    /// Index among all publishers.
    global: usize,
    room: u32,
    /// Index among the room's publishers.
    local: u32,
    room_name: String,
    /// Where in the send interval this publisher sends, 0..1 (spreads them out).
    phase: f64,
    padding: String,
}

async fn publisher(
    mut sink: Sink,
    sh: Arc<Shared>,
    info: PubInfo,
    mut ctl: watch::Receiver<Ctl>,
) -> Sink {
    let mut n: u64 = 0;
    let mut body = String::with_capacity(64 + info.padding.len());
    let mut frame = String::with_capacity(128 + info.padding.len());
    while ctl.changed().await.is_ok() {
        let cmd = *ctl.borrow_and_update();
        match cmd {
            Ctl::Idle => continue,
            Ctl::Stop => break,
            Ctl::Round {
                start,
                duration,
                rate,
            } => {
                publish_round(
                    &mut sink, &sh, &info, start, duration, rate, &mut n, &mut body, &mut frame,
                )
                .await;
                sh.publishers_done.fetch_add(1, Relaxed);
            }
        }
    }
    sink
}

/// Sends `rate * duration` messages, each at its due time (late ones at once,
/// in batches); stops at the end of the round whatever is left.
#[allow(clippy::too_many_arguments)]
async fn publish_round(
    sink: &mut Sink,
    sh: &Shared,
    info: &PubInfo,
    start: Instant,
    duration: Duration,
    rate: f64,
    n: &mut u64,
    body: &mut String,
    frame: &mut String,
) {
    let quota = (rate * duration.as_secs_f64()).round() as u64;
    if quota == 0 {
        return;
    }
    let interval = 1.0 / rate;
    let phase = info.phase * interval;
    // The last message is due before start + duration; allow a little for its flush.
    let deadline = start + duration + Duration::from_millis(200);
    let mut k: u64 = 0;
    while k < quota {
        let due = start + Duration::from_secs_f64(phase + k as f64 * interval);
        tokio::time::sleep_until(due).await;
        let now = Instant::now();
        if now >= deadline {
            break;
        }
        let elapsed = (now - start).as_secs_f64() - phase;
        let upto = ((elapsed / interval).floor().max(0.0) as u64 + 1)
            .clamp(k + 1, k + MAX_BATCH)
            .min(quota);
        let written = async {
            while k < upto {
                let stamp = Stamp {
                    room: info.room,
                    publisher: info.local,
                    n: *n,
                    t_ns: sh.now_ns(),
                };
                proto::write_body(body, stamp, &info.padding);
                let text = match sh.target {
                    Target::Bare => body.clone(),
                    Target::Troupe => {
                        proto::send_frame(frame, &info.room_name, body, *n);
                        frame.clone()
                    }
                };
                sink.feed(Message::text(text)).await?;
                *n += 1;
                k += 1;
                sh.sent[info.global].store(*n, Relaxed);
            }
            sink.flush().await
        };
        match tokio::time::timeout_at(deadline, written).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                sh.problem(format!("publisher {}: {e}", info.global));
                return;
            }
            Err(_) => return, // the server did not take them in time: the round shows it
        }
    }
}

enum Connected {
    Whole(JoinHandle<Ws>),
    Split(Sink, JoinHandle<Stream>),
}

/// A connected load, ready for rounds.
pub struct Load {
    env: Env,
    /// Names of the latency groups, and the subscribers in each.
    groups: Vec<String>,
    group_subscribers: Vec<usize>,
    sh: Arc<Shared>,
    clients: Vec<Client>,
    publishers: usize,
    ctl: watch::Sender<Ctl>,
    stop: watch::Sender<bool>,
}

/// Runs `make(i)` for i in 0..n, `concurrency` at a time, with a progress
/// line every second; the results in order, or the first error.
pub async fn run_limited<T, F, Fut>(
    env: &Env,
    what: &str,
    n: usize,
    make: F,
) -> anyhow::Result<Vec<T>>
where
    F: Fn(usize) -> Fut,
    Fut: Future<Output = anyhow::Result<T>>,
{
    let concurrency = env.common.setup_concurrency.max(1);
    let started = Instant::now();
    let mut results: Vec<Option<T>> = (0..n).map(|_| None).collect();
    let mut pending = futures_util::stream::iter((0..n).map(|i| {
        let fut = make(i);
        async move { (i, fut.await) }
    }))
    .buffer_unordered(concurrency);
    let mut done = 0;
    let mut last = Instant::now();
    while let Some((i, result)) = pending.next().await {
        results[i] = Some(result.map_err(|e| e.context(format!("{what} #{i}")))?);
        done += 1;
        if last.elapsed() >= Duration::from_secs(1) {
            last = Instant::now();
            env.progress(format!(
                "  {what}: {done}/{n} ({:.0}/s)",
                done as f64 / started.elapsed().as_secs_f64()
            ));
        }
    }
    Ok(results.into_iter().flatten().collect())
}

impl Load {
    /// Logs in (troupe), connects and joins every client; starts their readers.
    pub async fn connect(env: &Env, spec: &LoadSpec) -> anyhow::Result<Load> {
        let n = spec.clients.len();
        let rooms = spec.rooms.len();
        let mut subscribers_in_room = vec![0u64; rooms];
        let mut publishers_in_room = vec![0usize; rooms];
        let mut pub_room = Vec::new();
        for c in &spec.clients {
            if c.subscriber {
                subscribers_in_room[c.room as usize] += 1;
            }
            if c.publisher.is_some() {
                publishers_in_room[c.room as usize] += 1;
                pub_room.push(c.room);
            }
        }
        let publishers = pub_room.len();
        let groups = spec.groups.len().max(1);
        let addrs: Vec<SocketAddr> = if spec.addrs.is_empty() {
            vec![env.addr]
        } else {
            spec.addrs.clone()
        };
        for c in &spec.clients {
            anyhow::ensure!(
                c.node < addrs.len(),
                "client of node #{} of {}",
                c.node,
                addrs.len()
            );
            anyhow::ensure!(
                c.group < groups,
                "client of latency group #{} of {groups}",
                c.group
            );
        }
        let user_prefix = spec
            .user_prefix
            .clone()
            .unwrap_or_else(|| format!("{}u", env.run_id));
        let sh = Arc::new(Shared {
            target: env.common.target,
            start: Instant::now(),
            delivered: AtomicU64::new(0),
            duplicated: AtomicU64::new(0),
            misrouted: AtomicU64::new(0),
            acks: AtomicU64::new(0),
            errors: AtomicU64::new(0),
            closed: AtomicU64::new(0),
            sent: (0..publishers).map(|_| AtomicU64::new(0)).collect(),
            pub_room,
            subscribers_in_room,
            window_max: AtomicU64::new(0),
            hist: (0..groups)
                .map(|_| (0..SHARDS).map(|_| Mutex::new(new_histogram())).collect())
                .collect(),
            group_delivered: (0..groups).map(|_| AtomicU64::new(0)).collect(),
            problems: Mutex::new(Vec::new()),
            publishers_done: AtomicUsize::new(0),
            stopping: AtomicBool::new(false),
        });

        let tokens: Vec<Option<String>> = match env.common.target {
            Target::Troupe => {
                env.progress(format!("setup: {n} users register and log in"));
                run_limited(env, "login", n, |i| {
                    let env = env.clone();
                    let addr = addrs[spec.clients[i].node];
                    let user = format!("{user_prefix}{i}");
                    async move {
                        proto::register_and_login(addr, env.sources.pick(), &user)
                            .await
                            .map(Some)
                    }
                })
                .await?
            }
            Target::Bare => vec![None; n],
        };

        env.progress(format!("setup: {n} connections join {rooms} room(s)"));
        let (stop, stop_rx) = watch::channel(false);
        let read_buffer = env.common.read_buffer.unwrap_or(4 * 1024);
        let connected = run_limited(env, "connect", n, |i| {
            let env = env.clone();
            let sh = sh.clone();
            let spec_client = spec.clients[i];
            let room = spec.rooms[spec_client.room as usize].clone();
            let token = tokens[i].clone();
            let stop_rx = stop_rx.clone();
            let room_publishers = publishers_in_room[spec_client.room as usize];
            let addr = addrs[spec_client.node];
            async move {
                let config = client_config(read_buffer);
                let source = env.sources.pick();
                let ws = match &token {
                    Some(token) => {
                        let mut ws =
                            connect_ws(addr, source, &format!("/ws?token={token}"), config).await?;
                        proto::await_session(&mut ws).await?;
                        proto::join(&mut ws, &room).await?;
                        ws
                    }
                    None => connect_ws(addr, source, &format!("/ws?room={room}"), config).await?,
                };
                let info = ReaderInfo {
                    client: i,
                    group: spec_client.group,
                    room: spec_client.room,
                    subscriber: spec_client.subscriber,
                    publishers: room_publishers,
                };
                Ok(match spec_client.publisher {
                    None => Connected::Whole(tokio::spawn(reader(ws, sh, info, stop_rx))),
                    Some(_) => {
                        let (sink, stream) = ws.split();
                        Connected::Split(sink, tokio::spawn(reader(stream, sh, info, stop_rx)))
                    }
                })
            }
        })
        .await?;

        let (ctl, ctl_rx) = watch::channel(Ctl::Idle);
        let padding = "x".repeat(spec.payload);
        let mut clients = Vec::with_capacity(n);
        let mut global = 0;
        for (i, connected) in connected.into_iter().enumerate() {
            let c = spec.clients[i];
            clients.push(match (connected, c.publisher) {
                (Connected::Whole(task), _) => Client::Whole(task),
                (Connected::Split(sink, reader), Some(local)) => {
                    let info = PubInfo {
                        global,
                        room: c.room,
                        local,
                        room_name: spec.rooms[c.room as usize].clone(),
                        phase: global as f64 / publishers.max(1) as f64,
                        padding: padding.clone(),
                    };
                    global += 1;
                    let publisher = tokio::spawn(publisher(sink, sh.clone(), info, ctl_rx.clone()));
                    Client::Split { reader, publisher }
                }
                (Connected::Split(..), None) => unreachable!("only publishers are split"),
            });
        }
        let settle = Duration::from_millis(env.common.settle_ms);
        env.progress(format!("setup: {n} clients ready; settling for {settle:?}"));
        tokio::time::sleep(settle).await;
        let mut group_subscribers = vec![0usize; groups];
        for c in spec.clients.iter().filter(|c| c.subscriber) {
            group_subscribers[c.group] += 1;
        }
        Ok(Load {
            env: env.clone(),
            groups: spec.groups.clone(),
            group_subscribers,
            sh,
            clients,
            publishers,
            ctl,
            stop,
        })
    }

    pub fn publishers(&self) -> usize {
        self.publishers
    }

    /// Publishes at `total_rate` messages/s (spread over every publisher) for
    /// `duration`, waits for stragglers, and sums it up. `max_p99_ms` decides `held`.
    pub async fn round(
        &mut self,
        label: &str,
        total_rate: f64,
        duration: Duration,
        max_p99_ms: f64,
    ) -> RoundResult {
        let sh = self.sh.clone();
        let env = &self.env;
        for h in sh.hist.iter().flatten() {
            h.lock().unwrap_or_else(|e| e.into_inner()).reset();
        }
        let group0: Vec<u64> = sh.group_delivered.iter().map(|d| d.load(Relaxed)).collect();
        sh.problems
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clear();
        sh.publishers_done.store(0, Relaxed);
        let c0 = Counts::take(&sh);
        let server0 = env.server_sample();
        let cpu0 = self_cpu();
        let rate = total_rate / self.publishers.max(1) as f64;
        let start = Instant::now() + Duration::from_millis(20);
        let _ = self.ctl.send(Ctl::Round {
            start,
            duration,
            rate,
        });

        let mut timeline = Vec::new();
        let mut last = c0;
        let mut next_tick = start + Duration::from_secs(1);
        sh.window_max.store(0, Relaxed);
        let publish_limit = start + duration + Duration::from_secs(2);
        let mut drain_limit: Option<Instant> = None;
        let drain = Duration::from_secs_f64(env.common.drain_secs.max(0.0));
        let end = loop {
            tokio::time::sleep(Duration::from_millis(2)).await;
            let now = Instant::now();
            if now >= next_tick {
                next_tick += Duration::from_secs(1);
                let c = Counts::take(&sh);
                let max_ms = sh.window_max.swap(0, Relaxed) as f64 / 1e6;
                let tick = Tick {
                    t_s: (now - start).as_secs_f64(),
                    published: c.sent - last.sent,
                    delivered: c.delivered - last.delivered,
                    max_latency_ms: max_ms,
                };
                env.progress(format!(
                    "[{label}] t={:>5.1}s published {:>8}/s delivered {:>9}/s max latency {:>8.2} ms | lost-so-far {} dup {} err {} closed {} | gen CPU {:.0}%",
                    tick.t_s,
                    tick.published,
                    tick.delivered,
                    max_ms,
                    (c.expected - c0.expected).saturating_sub(c.delivered - c0.delivered),
                    c.duplicated - c0.duplicated,
                    c.errors - c0.errors,
                    c.closed - c0.closed,
                    (self_cpu() - cpu0).as_secs_f64() / (now - start).as_secs_f64().max(1e-3) * 100.0,
                ));
                timeline.push(tick);
                last = c;
            }
            match drain_limit {
                None => {
                    let done = sh.publishers_done.load(Relaxed) >= self.publishers;
                    if done || now >= publish_limit {
                        drain_limit = Some(now + drain);
                    }
                }
                Some(limit) => {
                    let c = Counts::take(&sh);
                    let all_delivered = c.delivered - c0.delivered >= c.expected - c0.expected;
                    let all_acked = match sh.target {
                        Target::Troupe => c.acks - c0.acks >= c.sent - c0.sent,
                        Target::Bare => true,
                    };
                    if (all_delivered && all_acked) || now >= limit {
                        break now;
                    }
                }
            }
        };
        // The last, partial second.
        let c = Counts::take(&sh);
        if c.sent > last.sent || c.delivered > last.delivered {
            timeline.push(Tick {
                t_s: (end - start).as_secs_f64(),
                published: c.sent - last.sent,
                delivered: c.delivered - last.delivered,
                max_latency_ms: sh.window_max.swap(0, Relaxed) as f64 / 1e6,
            });
        }
        let elapsed = (end - start).as_secs_f64().max(1e-9);
        let cpu = (self_cpu() - cpu0).as_secs_f64();
        let server1 = env.server_sample();
        let c1 = Counts::take(&sh);
        let mut hist = new_histogram();
        let mut groups = Vec::new();
        for (g, shards) in sh.hist.iter().enumerate() {
            let mut group = new_histogram();
            for h in shards {
                let _ = group.add(&*h.lock().unwrap_or_else(|e| e.into_inner()));
            }
            let _ = hist.add(&group);
            if let Some(name) = self.groups.get(g) {
                groups.push(GroupResult {
                    name: name.clone(),
                    subscribers: self.group_subscribers[g],
                    delivered: sh.group_delivered[g].load(Relaxed) - group0[g],
                    latency: Latency::from_ns(&group),
                    latency_percentiles: crate::plot::percentile_curve(&group),
                });
            }
        }
        let latency = Latency::from_ns(&hist);

        let published = c1.sent - c0.sent;
        let expected = c1.expected - c0.expected;
        let delivered = c1.delivered - c0.delivered;
        let lost = expected.saturating_sub(delivered);
        let duplicated = c1.duplicated - c0.duplicated;
        let misrouted = c1.misrouted - c0.misrouted;
        let errors = c1.errors - c0.errors;
        let closed = c1.closed - c0.closed;
        let (acks, unacked) = match sh.target {
            Target::Troupe => {
                let acks = c1.acks - c0.acks;
                (Some(acks), Some(published.saturating_sub(acks)))
            }
            Target::Bare => (None, None),
        };
        let asked = (rate * duration.as_secs_f64()).round() * self.publishers as f64;
        let fell_behind = (published as f64) < 0.95 * asked;
        let mut problems = sh
            .problems
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        if lost > 0 {
            problems.push(format!(
                "{lost} of {expected} deliveries missing after a {drain:?} drain"
            ));
        }
        if duplicated > 0 {
            problems.push(format!("{duplicated} duplicated deliveries"));
        }
        if misrouted > 0 {
            problems.push(format!(
                "{misrouted} deliveries not ours or to the wrong room"
            ));
        }
        if unacked.unwrap_or(0) > 0 {
            problems.push(format!(
                "{} published messages never acked",
                unacked.unwrap_or(0)
            ));
        }
        if fell_behind {
            problems.push(format!(
                "publishers fell behind: {published} of {asked:.0} messages sent in {duration:?}"
            ));
        }
        let clean = lost == 0
            && duplicated == 0
            && misrouted == 0
            && errors == 0
            && closed == 0
            && unacked.unwrap_or(0) == 0;
        let held = clean && !fell_behind && latency.p99_ms <= max_p99_ms;
        let server = match (server0, server1) {
            (Some(a), Some(b)) => Some(ServerRound {
                cpu_pct: (b.cpu_s - a.cpu_s) / elapsed * 100.0,
                rss_kib: b.rss_kib,
                hwm_kib: b.hwm_kib,
            }),
            _ => None,
        };
        let result = RoundResult {
            target_rate: total_rate,
            duration_s: duration.as_secs_f64(),
            published,
            publish_rate: published as f64 / duration.as_secs_f64().max(1e-9),
            expected_deliveries: expected,
            delivered,
            deliveries_per_s: delivered as f64 / elapsed,
            lost,
            duplicated,
            misrouted,
            errors,
            acks,
            unacked,
            closed,
            latency,
            latency_percentiles: crate::plot::percentile_curve(&hist),
            groups,
            generator_cpu_pct: cpu / elapsed * 100.0,
            server,
            fell_behind,
            clean,
            held,
            problems,
            timeline,
        };
        env.progress(format!(
            "[{label}] rate {:.0}/s: published {}, delivered {}/{} ({:.0}/s), p50 {:.3} ms p99 {:.3} ms p99.9 {:.3} ms max {:.3} ms, lost {}, dup {}, errors {}, closed {}, gen CPU {:.0}%{}",
            total_rate,
            published,
            delivered,
            expected,
            result.deliveries_per_s,
            result.latency.p50_ms,
            result.latency.p99_ms,
            result.latency.p999_ms,
            result.latency.max_ms,
            lost,
            duplicated,
            errors,
            closed,
            result.generator_cpu_pct,
            result
                .server
                .as_ref()
                .map(|s| format!(", server CPU {:.0}%, RSS {:.1} MiB", s.cpu_pct, s.rss_kib as f64 / 1024.0))
                .unwrap_or_default(),
        ));
        result
    }

    /// Stops every task and closes every connection politely (bounded).
    pub async fn shutdown(self) {
        self.sh.stopping.store(true, Relaxed);
        let _ = self.ctl.send(Ctl::Stop);
        let _ = self.stop.send(true);
        let mut closing = tokio::task::JoinSet::new();
        for client in self.clients {
            closing.spawn(async move {
                let mut ws = match client {
                    Client::Whole(task) => task.await.ok()?,
                    Client::Split { reader, publisher } => {
                        let stream = reader.await.ok()?;
                        publisher.await.ok()?.reunite(stream).ok()?
                    }
                };
                let _ = ws.close(None).await;
                while let Some(Ok(_)) = ws.next().await {}
                Some(())
            });
        }
        let _ = tokio::time::timeout(Duration::from_secs(5), async {
            while closing.join_next().await.is_some() {}
        })
        .await;
        closing.abort_all();
    }
}

#[derive(Clone, Copy)]
struct Counts {
    sent: u64,
    expected: u64,
    delivered: u64,
    duplicated: u64,
    misrouted: u64,
    acks: u64,
    errors: u64,
    closed: u64,
}

impl Counts {
    fn take(sh: &Shared) -> Self {
        Self {
            sent: sh.sent_total(),
            expected: sh.expected_total(),
            delivered: sh.delivered.load(Relaxed),
            duplicated: sh.duplicated.load(Relaxed),
            misrouted: sh.misrouted.load(Relaxed),
            acks: sh.acks.load(Relaxed),
            errors: sh.errors.load(Relaxed),
            closed: sh.closed.load(Relaxed),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::Track;

    #[test]
    fn tracks_firsts_and_repeats() {
        let mut t = Track::default();
        assert!(t.see(0));
        assert!(t.see(1));
        assert!(!t.see(1));
        assert!(t.see(3));
        assert!(!t.see(3));
        assert!(t.see(2));
        assert_eq!(t.next, 4);
        assert!(t.ahead.is_empty());
        assert!(!t.see(0));
    }
}

//! Process-wide metrics, rendered for `GET /metrics` in the Prometheus text
//! exposition format (version 0.0.4). Every metric is documented in
//! `docs/metrics.md`.
//!
//! These statics are write-only instrumentation: code bumps them where
//! things happen (a room acks, a store call fails, a socket opens) and only
//! [`render`] reads them. They are not state shared between actors: no actor
//! ever reads one to decide anything. Relaxed atomics are enough for that.

use std::fmt::Write;
use std::future::Future;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering::Relaxed};
use std::time::{Duration, Instant};

/// A monotonically increasing count.
pub struct Counter(AtomicU64);

impl Counter {
    pub const fn new() -> Self {
        Counter(AtomicU64::new(0))
    }

    pub fn inc(&self) {
        self.add(1);
    }

    pub fn add(&self, n: u64) {
        self.0.fetch_add(n, Relaxed);
    }

    pub fn get(&self) -> u64 {
        self.0.load(Relaxed)
    }
}

impl Default for Counter {
    fn default() -> Self {
        Self::new()
    }
}

/// A value that goes up and down.
pub struct Gauge(AtomicI64);

impl Gauge {
    pub const fn new(value: i64) -> Self {
        Gauge(AtomicI64::new(value))
    }

    pub fn add(&self, n: i64) {
        self.0.fetch_add(n, Relaxed);
    }

    pub fn sub(&self, n: i64) {
        self.0.fetch_sub(n, Relaxed);
    }

    pub fn set(&self, value: i64) {
        self.0.store(value, Relaxed);
    }

    pub fn get(&self) -> i64 {
        self.0.load(Relaxed)
    }

    /// Counts one up until the guard is dropped (an open connection).
    pub fn track(&'static self) -> GaugeGuard {
        self.add(1);
        GaugeGuard(self)
    }
}

/// Takes its one back from the gauge when dropped.
pub struct GaugeGuard(&'static Gauge);

impl Drop for GaugeGuard {
    fn drop(&mut self) {
        self.0.sub(1);
    }
}

/// Upper bounds of the latency buckets, in nanoseconds, and as rendered
/// (seconds): 100 µs to 5 s. Above the last: only `+Inf`.
const BUCKETS: [(u64, &str); 15] = [
    (100_000, "0.0001"),
    (250_000, "0.00025"),
    (500_000, "0.0005"),
    (1_000_000, "0.001"),
    (2_500_000, "0.0025"),
    (5_000_000, "0.005"),
    (10_000_000, "0.01"),
    (25_000_000, "0.025"),
    (50_000_000, "0.05"),
    (100_000_000, "0.1"),
    (250_000_000, "0.25"),
    (500_000_000, "0.5"),
    (1_000_000_000, "1"),
    (2_500_000_000, "2.5"),
    (5_000_000_000, "5"),
];

/// A latency histogram with fixed buckets (seconds).
pub struct Histogram {
    /// Observations per bucket (not cumulative); the last one is above 5 s.
    counts: [AtomicU64; BUCKETS.len() + 1],
    sum_nanos: AtomicU64,
}

/// A histogram read at one moment: cumulative bucket counts, sum, count.
#[derive(Debug, Clone, PartialEq)]
pub struct HistogramSnapshot {
    /// (upper bound as rendered, observations at or below it), then `+Inf`.
    pub buckets: Vec<(&'static str, u64)>,
    pub sum_seconds: f64,
    pub count: u64,
}

impl Histogram {
    pub const fn new() -> Self {
        Histogram {
            counts: [const { AtomicU64::new(0) }; BUCKETS.len() + 1],
            sum_nanos: AtomicU64::new(0),
        }
    }

    pub fn observe(&self, took: Duration) {
        let nanos = u64::try_from(took.as_nanos()).unwrap_or(u64::MAX);
        let i = BUCKETS.partition_point(|(bound, _)| *bound < nanos);
        self.counts[i].fetch_add(1, Relaxed);
        self.sum_nanos.fetch_add(nanos, Relaxed);
    }

    /// Awaits `work` and observes how long it took.
    pub async fn time<F: Future>(&self, work: F) -> F::Output {
        let started = Instant::now();
        let out = work.await;
        self.observe(started.elapsed());
        out
    }

    pub fn snapshot(&self) -> HistogramSnapshot {
        let mut buckets = Vec::with_capacity(BUCKETS.len() + 1);
        let mut cumulative = 0;
        for (i, count) in self.counts.iter().enumerate() {
            cumulative += count.load(Relaxed);
            let le = BUCKETS.get(i).map_or("+Inf", |(_, le)| *le);
            buckets.push((le, cumulative));
        }
        HistogramSnapshot {
            buckets,
            sum_seconds: self.sum_nanos.load(Relaxed) as f64 / 1e9,
            // `+Inf` and `_count` agree even while observations land.
            count: cumulative,
        }
    }
}

impl Default for Histogram {
    fn default() -> Self {
        Self::new()
    }
}

// Gauges.
/// Open WebSocket connections.
pub static CONNECTIONS: Gauge = Gauge::new(0);
/// Live Session actors.
pub static SESSIONS: Gauge = Gauge::new(0);
/// Room actors running on this node (not proxies).
pub static ROOMS_OWNED: Gauge = Gauge::new(0);
/// Frames queued in local outboxes and not yet taken by a socket writer.
pub static OUTBOX_QUEUED_FRAMES: Gauge = Gauge::new(0);
/// Bytes queued in local outboxes (or in their writers' hands), not yet written to a socket.
pub static OUTBOX_QUEUED_BYTES: Gauge = Gauge::new(0);
/// Live cluster members this node sees (itself included); 1 when alone.
pub static CLUSTER_MEMBERS: Gauge = Gauge::new(1);

// Counters.
/// `send` requests (group, DM, broadcast) that reached a room.
pub static MESSAGES_RECEIVED: Counter = Counter::new();
/// `ack` frames pushed to senders.
pub static MESSAGES_ACKED: Counter = Counter::new();
/// `message` frames pushed to sessions (live fan-out and replays).
pub static MESSAGES_DELIVERED: Counter = Counter::new();
/// Connections closed with 4008 (slow consumer).
pub static SLOW_CONSUMER_CLOSES: Counter = Counter::new();
/// Rooms handed off to another owner (membership change, leaving).
pub static ROOM_HANDOFFS: Counter = Counter::new();
/// Rooms taken over from another node that had not released their lease.
pub static ROOM_FAILOVERS: Counter = Counter::new();
/// Room leases taken.
pub static LEASE_ACQUISITIONS: Counter = Counter::new();
/// Crashed rooms the RoomSupervisor restarted.
pub static ROOM_RESTARTS: Counter = Counter::new();
/// Crashed sessions (their clients reconnect and resume).
pub static SESSION_RESTARTS: Counter = Counter::new();
/// Errors returned by the SQL store (directory, history, checkpoints, leases).
pub static STORE_ERRORS_SQL: Counter = Counter::new();
/// Errors returned by the message log (SQL table or Kafka).
pub static STORE_ERRORS_LOG: Counter = Counter::new();
/// Errors returned by the ephemeral store (Redis: tokens, rate limits, presence).
pub static STORE_ERRORS_PRESENCE: Counter = Counter::new();

/// Why the node refused or cut off a connection or a request (the HTTP
/// layer's limits, `[http]`): the label of `troupe_connections_refused_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// Over `http.max_connections`: closed at accept (503).
    NodeCap,
    /// Over `http.max_connections_per_address`: closed at accept (503).
    AddressCap,
    /// Over `http.max_sessions_per_user`: error frame, close 1008.
    UserSessions,
    /// A WebSocket upgrade from an origin not in `http.allowed_origins` (403).
    Origin,
    /// No complete request header within `http.header_timeout_ms`.
    HeaderTimeout,
    /// No complete body within `http.body_timeout_ms` (408).
    BodyTimeout,
    /// A body over the limit, refused before it is read (413).
    BodyTooLarge,
    /// A WebSocket without a session after `http.ws_auth_timeout_ms` (1008).
    AuthTimeout,
    /// A WebSocket protocol violation (1002).
    WsProtocol,
    /// A text frame that is not UTF-8 (1007).
    WsUtf8,
}

impl Refusal {
    const ALL: [Refusal; 10] = [
        Refusal::NodeCap,
        Refusal::AddressCap,
        Refusal::UserSessions,
        Refusal::Origin,
        Refusal::HeaderTimeout,
        Refusal::BodyTimeout,
        Refusal::BodyTooLarge,
        Refusal::AuthTimeout,
        Refusal::WsProtocol,
        Refusal::WsUtf8,
    ];

    fn label(self) -> &'static str {
        match self {
            Refusal::NodeCap => "reason=\"node_cap\"",
            Refusal::AddressCap => "reason=\"address_cap\"",
            Refusal::UserSessions => "reason=\"user_sessions\"",
            Refusal::Origin => "reason=\"origin\"",
            Refusal::HeaderTimeout => "reason=\"header_timeout\"",
            Refusal::BodyTimeout => "reason=\"body_timeout\"",
            Refusal::BodyTooLarge => "reason=\"body_too_large\"",
            Refusal::AuthTimeout => "reason=\"auth_timeout\"",
            Refusal::WsProtocol => "reason=\"ws_protocol\"",
            Refusal::WsUtf8 => "reason=\"ws_utf8\"",
        }
    }
}

static REFUSED: [Counter; Refusal::ALL.len()] = [const { Counter::new() }; Refusal::ALL.len()];

/// Counts one refusal of the HTTP layer.
pub fn refused(reason: Refusal) {
    REFUSED[reason as usize].inc();
}

// Histograms.
/// Message log append latency (one append per group-commit batch).
pub static LOG_APPEND_SECONDS: Histogram = Histogram::new();

/// Counts `frames` message frames as delivered when `pushed`; returns `pushed`.
pub fn delivered(frames: usize, pushed: bool) -> bool {
    if pushed {
        MESSAGES_DELIVERED.add(frames as u64);
    }
    pushed
}

/// Every metric of this process, in the Prometheus text format.
pub fn render(node: &str) -> String {
    let mut out = String::with_capacity(4096);
    let o = &mut out;
    gauge(
        o,
        "troupe_connections",
        "Open WebSocket connections.",
        CONNECTIONS.get(),
    );
    gauge(o, "troupe_sessions", "Live session actors.", SESSIONS.get());
    gauge(
        o,
        "troupe_rooms_owned",
        "Room actors running on this node.",
        ROOMS_OWNED.get(),
    );
    gauge(
        o,
        "troupe_outbox_queued_frames",
        "Frames queued in connection outboxes, not yet taken by their socket writers.",
        OUTBOX_QUEUED_FRAMES.get(),
    );
    gauge(
        o,
        "troupe_outbox_queued_bytes",
        "Bytes queued in connection outboxes or held by their socket writers, not yet written to a socket.",
        OUTBOX_QUEUED_BYTES.get(),
    );
    gauge(
        o,
        "troupe_cluster_members",
        "Live cluster members this node sees, itself included (1 when alone).",
        CLUSTER_MEMBERS.get(),
    );
    counter(
        o,
        "troupe_messages_received_total",
        "Send requests (group, DM, broadcast) that reached a room.",
        &[("", MESSAGES_RECEIVED.get())],
    );
    counter(
        o,
        "troupe_messages_acked_total",
        "Ack frames pushed to senders.",
        &[("", MESSAGES_ACKED.get())],
    );
    counter(
        o,
        "troupe_messages_delivered_total",
        "Message frames pushed to sessions (live fan-out and replays).",
        &[("", MESSAGES_DELIVERED.get())],
    );
    counter(
        o,
        "troupe_slow_consumer_closes_total",
        "Connections closed with 4008 because their outbox was full (in frames or bytes).",
        &[("", SLOW_CONSUMER_CLOSES.get())],
    );
    counter(
        o,
        "troupe_room_handoffs_total",
        "Rooms handed off to another owner (membership change or leaving).",
        &[("", ROOM_HANDOFFS.get())],
    );
    counter(
        o,
        "troupe_room_failovers_total",
        "Rooms taken over from another node that had not released their lease.",
        &[("", ROOM_FAILOVERS.get())],
    );
    counter(
        o,
        "troupe_lease_acquisitions_total",
        "Room leases taken by this node.",
        &[("", LEASE_ACQUISITIONS.get())],
    );
    counter(
        o,
        "troupe_actor_restarts_total",
        "Crashed actors: rooms restarted by their supervisor, sessions whose client must resume.",
        &[
            ("kind=\"room\"", ROOM_RESTARTS.get()),
            ("kind=\"session\"", SESSION_RESTARTS.get()),
        ],
    );
    counter(
        o,
        "troupe_store_errors_total",
        "Errors returned by the store adapters.",
        &[
            ("store=\"sql\"", STORE_ERRORS_SQL.get()),
            ("store=\"log\"", STORE_ERRORS_LOG.get()),
            ("store=\"presence\"", STORE_ERRORS_PRESENCE.get()),
        ],
    );
    let refusals: Vec<(&str, u64)> = Refusal::ALL
        .iter()
        .map(|r| (r.label(), REFUSED[*r as usize].get()))
        .collect();
    counter(
        o,
        "troupe_connections_refused_total",
        "Connections and requests the HTTP layer refused or cut off, by reason.",
        &refusals,
    );
    let limited: Vec<(String, u64)> = crate::rate_limits::refusals()
        .into_iter()
        .map(|(kind, n)| (format!("kind=\"{kind}\""), n))
        .collect();
    let limited: Vec<(&str, u64)> = limited.iter().map(|(l, n)| (l.as_str(), *n)).collect();
    counter(
        o,
        "troupe_rate_limited_total",
        "Requests refused with rate_limited, by kind of action.",
        &limited,
    );
    histogram(
        o,
        "troupe_log_append_seconds",
        "Message log append latency, one append per group-commit batch.",
        &LOG_APPEND_SECONDS.snapshot(),
    );
    header(
        o,
        "troupe_store_seconds",
        "Latency of store calls by store and operation, errors included.",
        "histogram",
    );
    for op in crate::store::timed::Op::ALL {
        let (store, name) = op.labels();
        let labels = format!("store=\"{store}\",op=\"{name}\"");
        histogram_samples(
            o,
            "troupe_store_seconds",
            &labels,
            &crate::store::timed::STORE_SECONDS[op as usize].snapshot(),
        );
    }
    process(o);
    header(
        o,
        "troupe_build_info",
        "The running build and node name.",
        "gauge",
    );
    let _ = writeln!(
        o,
        "troupe_build_info{{version=\"{}\",node=\"{}\"}} 1",
        escape(env!("CARGO_PKG_VERSION")),
        escape(node)
    );
    out
}

fn header(out: &mut String, name: &str, help: &str, kind: &str) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
}

fn gauge(out: &mut String, name: &str, help: &str, value: i64) {
    header(out, name, help, "gauge");
    // A gauge counted up and down from several threads may dip for an instant.
    let _ = writeln!(out, "{name} {}", value.max(0));
}

/// `samples`: (labels without braces, or empty; value).
fn counter(out: &mut String, name: &str, help: &str, samples: &[(&str, u64)]) {
    header(out, name, help, "counter");
    for (labels, value) in samples {
        if labels.is_empty() {
            let _ = writeln!(out, "{name} {value}");
        } else {
            let _ = writeln!(out, "{name}{{{labels}}} {value}");
        }
    }
}

fn histogram(out: &mut String, name: &str, help: &str, h: &HistogramSnapshot) {
    header(out, name, help, "histogram");
    for (le, count) in &h.buckets {
        let _ = writeln!(out, "{name}_bucket{{le=\"{le}\"}} {count}");
    }
    let _ = writeln!(out, "{name}_sum {}", h.sum_seconds);
    let _ = writeln!(out, "{name}_count {}", h.count);
}

/// A histogram's series with `labels` (without braces) on each.
fn histogram_samples(out: &mut String, name: &str, labels: &str, h: &HistogramSnapshot) {
    for (le, count) in &h.buckets {
        let _ = writeln!(out, "{name}_bucket{{{labels},le=\"{le}\"}} {count}");
    }
    let _ = writeln!(out, "{name}_sum{{{labels}}} {}", h.sum_seconds);
    let _ = writeln!(out, "{name}_count{{{labels}}} {}", h.count);
}

/// The standard `process_*` metrics of this process, read from /proc
/// (Linux; elsewhere they are left out). Hand-written: the metrics crates'
/// process collectors each belong to another metrics stack.
fn process(out: &mut String) {
    let Ok(stat) = std::fs::read_to_string("/proc/self/stat") else {
        return;
    };
    // Fields after the command name, which is in parentheses and may hold spaces.
    let Some(rest) = stat.rsplit_once(')').map(|(_, r)| r) else {
        return;
    };
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // `rest` starts at field 3 (state): field N is fields[N - 3].
    let field = |n: usize| fields.get(n - 3).and_then(|v| v.parse::<u64>().ok());
    let ticks = 100.0; // USER_HZ: 100 on every Linux ABI troupe runs on.
    let page = 4096.0;
    if let (Some(utime), Some(stime)) = (field(14), field(15)) {
        header(
            out,
            "process_cpu_seconds_total",
            "Total user and system CPU time spent in seconds.",
            "counter",
        );
        let _ = writeln!(
            out,
            "process_cpu_seconds_total {}",
            (utime + stime) as f64 / ticks
        );
    }
    if let Some(rss) = field(24) {
        header(
            out,
            "process_resident_memory_bytes",
            "Resident memory size in bytes.",
            "gauge",
        );
        let _ = writeln!(out, "process_resident_memory_bytes {}", rss as f64 * page);
    }
    if let Some(vsize) = field(23) {
        header(
            out,
            "process_virtual_memory_bytes",
            "Virtual memory size in bytes.",
            "gauge",
        );
        let _ = writeln!(out, "process_virtual_memory_bytes {vsize}");
    }
    if let Some(threads) = field(20) {
        header(
            out,
            "process_threads",
            "Number of OS threads in the process.",
            "gauge",
        );
        let _ = writeln!(out, "process_threads {threads}");
    }
    if let Ok(fds) = std::fs::read_dir("/proc/self/fd") {
        header(
            out,
            "process_open_fds",
            "Number of open file descriptors.",
            "gauge",
        );
        let _ = writeln!(out, "process_open_fds {}", fds.count());
    }
    let boot = std::fs::read_to_string("/proc/stat").ok().and_then(|s| {
        s.lines()
            .find_map(|l| l.strip_prefix("btime "))
            .and_then(|v| v.trim().parse::<u64>().ok())
    });
    if let (Some(boot), Some(start)) = (boot, field(22)) {
        header(
            out,
            "process_start_time_seconds",
            "Start time of the process since the Unix epoch in seconds.",
            "gauge",
        );
        let _ = writeln!(
            out,
            "process_start_time_seconds {}",
            boot as f64 + start as f64 / ticks
        );
    }
}

/// A label value: backslash, double quote and newline escaped.
fn escape(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::{BTreeMap, HashSet};

    #[test]
    fn a_histogram_counts_each_observation_in_its_bucket_and_cumulates() {
        let h = Histogram::new();
        h.observe(Duration::from_micros(50)); // <= 0.0001
        h.observe(Duration::from_micros(100)); // on the bound: still <= 0.0001
        h.observe(Duration::from_millis(3)); // <= 0.005
        h.observe(Duration::from_secs(2)); // <= 2.5
        h.observe(Duration::from_secs(60)); // only +Inf
        let s = h.snapshot();
        let bucket = |le: &str| s.buckets.iter().find(|(b, _)| *b == le).unwrap().1;
        assert_eq!(bucket("0.0001"), 2);
        assert_eq!(bucket("0.00025"), 2);
        assert_eq!(bucket("0.0025"), 2);
        assert_eq!(bucket("0.005"), 3);
        assert_eq!(bucket("2.5"), 4);
        assert_eq!(bucket("5"), 4);
        assert_eq!(bucket("+Inf"), 5);
        assert_eq!(s.count, 5);
        assert_eq!(s.buckets.len(), 16);
        assert_eq!(s.buckets.first().unwrap().0, "0.0001");
        assert_eq!(s.buckets[14].0, "5");
        let expected = 0.00005 + 0.0001 + 0.003 + 2.0 + 60.0;
        assert!((s.sum_seconds - expected).abs() < 1e-9, "{}", s.sum_seconds);
        // Bounds rise and counts never fall.
        for pair in s.buckets.windows(2) {
            assert!(pair[0].1 <= pair[1].1);
        }
        for pair in BUCKETS.windows(2) {
            assert!(pair[0].0 < pair[1].0);
            let (a, b): (f64, f64) = (pair[0].1.parse().unwrap(), pair[1].1.parse().unwrap());
            assert!(a < b);
            assert_eq!(pair[0].0 as f64 / 1e9, a);
        }
    }

    #[tokio::test]
    async fn time_observes_the_awaited_work() {
        let h = Histogram::new();
        let v = h
            .time(async {
                tokio::time::sleep(Duration::from_millis(2)).await;
                7
            })
            .await;
        assert_eq!(v, 7);
        let s = h.snapshot();
        assert_eq!(s.count, 1);
        assert!(s.sum_seconds >= 0.002);
        assert_eq!(
            s.buckets.iter().find(|(le, _)| *le == "0.001").unwrap().1,
            0
        );
    }

    #[test]
    fn a_gauge_guard_gives_its_one_back() {
        static G: Gauge = Gauge::new(0);
        let a = G.track();
        let b = G.track();
        assert_eq!(G.get(), 2);
        drop(a);
        assert_eq!(G.get(), 1);
        drop(b);
        assert_eq!(G.get(), 0);
    }

    /// Checks the exposition format line by line: every sample belongs to
    /// a family announced by one `# HELP` and one `# TYPE` line before it,
    /// names and labels are well formed, values parse, a histogram's
    /// buckets are cumulative and end in `+Inf` equal to its `_count`.
    #[test]
    fn render_is_valid_prometheus_text() {
        LOG_APPEND_SECONDS.observe(Duration::from_millis(1));
        let text = render("node \"a\"\\b");
        assert!(text.ends_with('\n'));
        let mut helped = HashSet::new();
        let mut types: BTreeMap<String, String> = BTreeMap::new();
        let mut samples: BTreeMap<String, Vec<(String, f64)>> = BTreeMap::new();
        let name_ok = |n: &str| {
            !n.is_empty()
                && n.chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
                && !n.starts_with(|c: char| c.is_ascii_digit())
        };
        for line in text.lines() {
            if let Some(rest) = line.strip_prefix("# HELP ") {
                let (name, help) = rest.split_once(' ').expect("HELP has text");
                assert!(name_ok(name) && !help.is_empty(), "{line}");
                assert!(helped.insert(name.to_string()), "HELP twice: {line}");
                continue;
            }
            if let Some(rest) = line.strip_prefix("# TYPE ") {
                let (name, kind) = rest.split_once(' ').expect("TYPE has a kind");
                assert!(helped.contains(name), "TYPE before HELP: {line}");
                assert!(["counter", "gauge", "histogram"].contains(&kind), "{line}");
                assert!(
                    types.insert(name.to_string(), kind.to_string()).is_none(),
                    "TYPE twice: {line}"
                );
                continue;
            }
            assert!(!line.starts_with('#'), "{line}");
            let (series, value) = line.rsplit_once(' ').expect("a sample has a value");
            let value: f64 = value.parse().expect("a numeric value");
            assert!(value >= 0.0, "{line}");
            let (name, labels) = match series.split_once('{') {
                Some((name, labels)) => {
                    let labels = labels.strip_suffix('}').expect("labels close");
                    (name, labels.to_string())
                }
                None => (series, String::new()),
            };
            assert!(name_ok(name), "{line}");
            let family = ["_bucket", "_sum", "_count"]
                .iter()
                .find_map(|s| {
                    name.strip_suffix(s)
                        .filter(|f| types.get(*f).is_some_and(|k| k == "histogram"))
                })
                .unwrap_or(name);
            assert!(types.contains_key(family), "no TYPE for {line}");
            if types[family] == "counter" {
                assert!(name.ends_with("_total"), "{line}");
            }
            samples
                .entry(name.to_string())
                .or_default()
                .push((labels, value));
        }
        for family in [
            "troupe_connections",
            "troupe_sessions",
            "troupe_rooms_owned",
            "troupe_outbox_queued_frames",
            "troupe_cluster_members",
            "troupe_build_info",
        ] {
            assert_eq!(types[family], "gauge", "{family}");
        }
        for family in [
            "troupe_messages_received_total",
            "troupe_messages_acked_total",
            "troupe_messages_delivered_total",
            "troupe_slow_consumer_closes_total",
            "troupe_room_handoffs_total",
            "troupe_room_failovers_total",
            "troupe_lease_acquisitions_total",
            "troupe_actor_restarts_total",
            "troupe_store_errors_total",
            "troupe_connections_refused_total",
        ] {
            assert_eq!(types[family], "counter", "{family}");
        }
        assert_eq!(types["troupe_log_append_seconds"], "histogram");
        let labels =
            |name: &str| -> Vec<String> { samples[name].iter().map(|(l, _)| l.clone()).collect() };
        assert_eq!(
            labels("troupe_actor_restarts_total"),
            ["kind=\"room\"", "kind=\"session\""]
        );
        assert_eq!(
            labels("troupe_store_errors_total"),
            ["store=\"sql\"", "store=\"log\"", "store=\"presence\""]
        );
        assert_eq!(
            labels("troupe_connections_refused_total").len(),
            Refusal::ALL.len()
        );
        assert_eq!(
            labels("troupe_build_info"),
            [format!(
                "version=\"{}\",node=\"node \\\"a\\\"\\\\b\"",
                env!("CARGO_PKG_VERSION")
            )]
        );
        // The histogram: 16 cumulative buckets, the last +Inf = _count >= 1.
        let buckets = &samples["troupe_log_append_seconds_bucket"];
        assert_eq!(buckets.len(), 16);
        assert_eq!(buckets[0].0, "le=\"0.0001\"");
        assert_eq!(buckets[15].0, "le=\"+Inf\"");
        for pair in buckets.windows(2) {
            assert!(pair[0].1 <= pair[1].1, "{pair:?}");
        }
        let count = samples["troupe_log_append_seconds_count"][0].1;
        assert_eq!(buckets[15].1, count);
        assert!(count >= 1.0);
        assert!(samples["troupe_log_append_seconds_sum"][0].1 >= 0.001);
    }
}

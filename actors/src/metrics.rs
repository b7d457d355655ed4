//! Process-wide metrics on `prometheus-client`, rendered for `GET /metrics`
//! in the OpenMetrics text format (which Prometheus scrapes natively).
//! Every metric is documented in `docs/metrics.md`.
//!
//! The statics below are write-only instrumentation: code bumps them where
//! things happen (a room acks, a store call fails, a socket opens) and only
//! [`render`] reads them. They are not state shared between actors: no actor
//! ever reads one to decide anything. A labelled series that code bumps on a
//! hot path is a static handle into its family (a clone sharing the same
//! atomic), so bumping it never looks a label set up.

use std::future::Future;
use std::sync::LazyLock;
use std::time::Instant;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::registry::Registry;

pub use prometheus_client::metrics::counter::Counter;
pub use prometheus_client::metrics::gauge::Gauge;
pub use prometheus_client::metrics::histogram::Histogram;

/// One label: (name, value).
pub type Label = [(&'static str, &'static str); 1];
/// Two labels.
pub type Labels2 = [(&'static str, &'static str); 2];

/// Upper bounds of the latency buckets, in seconds: 100 µs to 5 s.
pub const BUCKETS: [f64; 15] = [
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
];

/// A latency histogram with [`BUCKETS`].
pub fn latency_histogram() -> Histogram {
    Histogram::new(BUCKETS)
}

/// Awaits `work` and observes how long it took, in seconds.
pub async fn time<F: Future>(histogram: &Histogram, work: F) -> F::Output {
    let started = Instant::now();
    let out = work.await;
    histogram.observe(started.elapsed().as_secs_f64());
    out
}

/// Counts one up on `gauge` until the guard is dropped (an open connection).
pub fn track(gauge: &Gauge) -> GaugeGuard {
    gauge.inc();
    GaugeGuard(gauge.clone())
}

/// Takes its one back from the gauge when dropped.
pub struct GaugeGuard(Gauge);

impl Drop for GaugeGuard {
    fn drop(&mut self) {
        self.0.dec();
    }
}

// Gauges.
/// Open WebSocket connections.
pub static CONNECTIONS: LazyLock<Gauge> = LazyLock::new(Gauge::default);
/// Live Session actors.
pub static SESSIONS: LazyLock<Gauge> = LazyLock::new(Gauge::default);
/// Room actors running on this node (not proxies).
pub static ROOMS_OWNED: LazyLock<Gauge> = LazyLock::new(Gauge::default);
/// Rooms whose start (restore from checkpoint and log) is running or queued.
pub static ROOMS_RESTORING: LazyLock<Gauge> = LazyLock::new(Gauge::default);
/// Frames queued in connection outboxes, not yet taken by their writers.
pub static OUTBOX_QUEUED_FRAMES: LazyLock<Gauge> = LazyLock::new(Gauge::default);
/// Bytes queued in outboxes or held by their writers, not yet on a socket.
pub static OUTBOX_QUEUED_BYTES: LazyLock<Gauge> = LazyLock::new(Gauge::default);
/// Live cluster members this node sees, itself included.
pub static CLUSTER_MEMBERS: LazyLock<Gauge> = LazyLock::new(|| {
    let g = Gauge::default();
    g.set(1);
    g
});

// Counters.
/// Send requests that reached a room.
pub static MESSAGES_RECEIVED: LazyLock<Counter> = LazyLock::new(Counter::default);
/// Ack frames pushed to senders.
pub static MESSAGES_ACKED: LazyLock<Counter> = LazyLock::new(Counter::default);
/// Message frames pushed to sessions (live fan-out and replays).
pub static MESSAGES_DELIVERED: LazyLock<Counter> = LazyLock::new(Counter::default);
/// Connections closed with 4008.
pub static SLOW_CONSUMER_CLOSES: LazyLock<Counter> = LazyLock::new(Counter::default);
/// Rooms handed off to another owner.
pub static ROOM_HANDOFFS: LazyLock<Counter> = LazyLock::new(Counter::default);
/// Rooms taken over from a node that had not released their lease.
pub static ROOM_FAILOVERS: LazyLock<Counter> = LazyLock::new(Counter::default);
/// Domain events dropped because the queue to their sink was full.
pub static EVENTS_DROPPED: LazyLock<Counter> = LazyLock::new(Counter::default);
/// Room leases taken by this node.
pub static LEASE_ACQUISITIONS: LazyLock<Counter> = LazyLock::new(Counter::default);

/// `troupe_actor_restarts_total{kind}`.
static ACTOR_RESTARTS: LazyLock<Family<Label, Counter>> = LazyLock::new(Family::default);
/// Rooms restarted by their supervisor after a crash.
pub static ROOM_RESTARTS: LazyLock<Counter> =
    LazyLock::new(|| ACTOR_RESTARTS.get_or_create_owned(&[("kind", "room")]));
/// Sessions that crashed (their client must resume).
pub static SESSION_RESTARTS: LazyLock<Counter> =
    LazyLock::new(|| ACTOR_RESTARTS.get_or_create_owned(&[("kind", "session")]));

/// `troupe_store_errors_total{store}`.
static STORE_ERRORS: LazyLock<Family<Label, Counter>> = LazyLock::new(Family::default);
/// Errors returned by the SQL store.
pub static STORE_ERRORS_SQL: LazyLock<Counter> =
    LazyLock::new(|| STORE_ERRORS.get_or_create_owned(&[("store", "sql")]));
/// Errors returned by the message log.
pub static STORE_ERRORS_LOG: LazyLock<Counter> =
    LazyLock::new(|| STORE_ERRORS.get_or_create_owned(&[("store", "log")]));
/// Errors returned by the ephemeral store (Redis: tokens, rate limits, presence).
pub static STORE_ERRORS_PRESENCE: LazyLock<Counter> =
    LazyLock::new(|| STORE_ERRORS.get_or_create_owned(&[("store", "presence")]));

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
            Refusal::NodeCap => "node_cap",
            Refusal::AddressCap => "address_cap",
            Refusal::UserSessions => "user_sessions",
            Refusal::Origin => "origin",
            Refusal::HeaderTimeout => "header_timeout",
            Refusal::BodyTimeout => "body_timeout",
            Refusal::BodyTooLarge => "body_too_large",
            Refusal::AuthTimeout => "auth_timeout",
            Refusal::WsProtocol => "ws_protocol",
            Refusal::WsUtf8 => "ws_utf8",
        }
    }
}

/// `troupe_connections_refused_total{reason}`.
static REFUSED: LazyLock<Family<Label, Counter>> = LazyLock::new(Family::default);

/// Counts one refusal of the HTTP layer.
pub fn refused(reason: Refusal) {
    REFUSED.get_or_create(&[("reason", reason.label())]).inc();
}

/// `troupe_rate_limited_total{kind}`: requests refused with `rate_limited`.
pub static RATE_LIMITED: LazyLock<Family<Label, Counter>> = LazyLock::new(Family::default);

// Histograms.
/// Message log append latency (one append per group-commit batch).
pub static LOG_APPEND_SECONDS: LazyLock<Histogram> = LazyLock::new(latency_histogram);

type HistogramFamily = Family<Labels2, Histogram, fn() -> Histogram>;

/// `troupe_store_seconds{store,op}`: see [`crate::store::timed`].
pub static STORE_SECONDS: LazyLock<HistogramFamily> =
    LazyLock::new(|| Family::new_with_constructor(latency_histogram as fn() -> Histogram));

/// `troupe_build_info{version,node}`, always 1.
static BUILD_INFO: LazyLock<Family<[(&'static str, String); 2], Gauge>> =
    LazyLock::new(Family::default);

/// Counts `frames` message frames as delivered when `pushed`; returns `pushed`.
pub fn delivered(frames: usize, pushed: bool) -> bool {
    if pushed {
        MESSAGES_DELIVERED.inc_by(frames as u64);
    }
    pushed
}

/// Every metric of this process, registered once. Series whose labels are
/// known up front are created here, so a scrape shows them at 0.
static REGISTRY: LazyLock<Registry> = LazyLock::new(|| {
    let mut r = Registry::default();
    r.register(
        "troupe_connections",
        "Open WebSocket connections",
        CONNECTIONS.clone(),
    );
    r.register("troupe_sessions", "Live session actors", SESSIONS.clone());
    r.register(
        "troupe_rooms_owned",
        "Room actors running on this node",
        ROOMS_OWNED.clone(),
    );
    r.register(
        "troupe_rooms_restoring",
        "Rooms whose start (restore from checkpoint and log) is running or waiting for a restore slot",
        ROOMS_RESTORING.clone(),
    );
    r.register(
        "troupe_outbox_queued_frames",
        "Frames queued in connection outboxes, not yet taken by their socket writers",
        OUTBOX_QUEUED_FRAMES.clone(),
    );
    r.register(
        "troupe_outbox_queued_bytes",
        "Bytes queued in connection outboxes or held by their socket writers, not yet written to a socket",
        OUTBOX_QUEUED_BYTES.clone(),
    );
    r.register(
        "troupe_cluster_members",
        "Live cluster members this node sees, itself included (1 when alone)",
        CLUSTER_MEMBERS.clone(),
    );
    r.register(
        "troupe_messages_received",
        "Send requests (group, DM, broadcast) that reached a room",
        MESSAGES_RECEIVED.clone(),
    );
    r.register(
        "troupe_messages_acked",
        "Ack frames pushed to senders",
        MESSAGES_ACKED.clone(),
    );
    r.register(
        "troupe_messages_delivered",
        "Message frames pushed to sessions (live fan-out and replays)",
        MESSAGES_DELIVERED.clone(),
    );
    r.register(
        "troupe_slow_consumer_closes",
        "Connections closed with 4008 because their outbox was full (in frames or bytes)",
        SLOW_CONSUMER_CLOSES.clone(),
    );
    r.register(
        "troupe_room_handoffs",
        "Rooms handed off to another owner (membership change or leaving)",
        ROOM_HANDOFFS.clone(),
    );
    r.register(
        "troupe_room_failovers",
        "Rooms taken over from another node that had not released their lease",
        ROOM_FAILOVERS.clone(),
    );
    r.register(
        "troupe_lease_acquisitions",
        "Room leases taken by this node",
        LEASE_ACQUISITIONS.clone(),
    );
    r.register(
        "troupe_events_dropped",
        "Domain events dropped because the queue to the events topic or table was full",
        EVENTS_DROPPED.clone(),
    );
    LazyLock::force(&ROOM_RESTARTS);
    LazyLock::force(&SESSION_RESTARTS);
    r.register(
        "troupe_actor_restarts",
        "Crashed actors: rooms restarted by their supervisor, sessions whose client must resume",
        ACTOR_RESTARTS.clone(),
    );
    LazyLock::force(&STORE_ERRORS_SQL);
    LazyLock::force(&STORE_ERRORS_LOG);
    LazyLock::force(&STORE_ERRORS_PRESENCE);
    r.register(
        "troupe_store_errors",
        "Errors returned by the store adapters",
        STORE_ERRORS.clone(),
    );
    for reason in Refusal::ALL {
        let _ = REFUSED.get_or_create(&[("reason", reason.label())]);
    }
    r.register(
        "troupe_connections_refused",
        "Connections and requests the HTTP layer refused or cut off, by reason",
        REFUSED.clone(),
    );
    for kind in crate::rate_limits::Kind::ALL {
        let _ = RATE_LIMITED.get_or_create(&[("kind", kind.name())]);
    }
    r.register(
        "troupe_rate_limited",
        "Requests refused with rate_limited, by kind of action",
        RATE_LIMITED.clone(),
    );
    r.register(
        "troupe_log_append_seconds",
        "Message log append latency, one append per group-commit batch",
        LOG_APPEND_SECONDS.clone(),
    );
    for op in crate::store::timed::Op::ALL {
        let (store, name) = op.labels();
        let _ = STORE_SECONDS.get_or_create(&[("store", store), ("op", name)]);
    }
    r.register(
        "troupe_store_seconds",
        "Latency of store calls by store and operation, errors included",
        STORE_SECONDS.clone(),
    );
    r.register(
        "troupe_build_info",
        "The running build and node name",
        BUILD_INFO.clone(),
    );
    r.register_collector(Box::new(ProcessCollector));
    r
});

/// Every metric of this process, in the OpenMetrics text format.
pub fn render(node: &str) -> String {
    BUILD_INFO
        .get_or_create(&[
            ("version", env!("CARGO_PKG_VERSION").to_string()),
            ("node", node.to_string()),
        ])
        .set(1);
    let mut out = String::with_capacity(8192);
    // Writing to a String cannot fail.
    let _ = prometheus_client::encoding::text::encode(&mut out, &REGISTRY);
    out
}

/// The standard `process_*` metrics of this process, read from /proc on
/// each scrape (Linux; elsewhere they are left out). Written here because
/// prometheus-client has no process collector of its own.
#[derive(Debug)]
struct ProcessCollector;

impl Collector for ProcessCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let Ok(stat) = std::fs::read_to_string("/proc/self/stat") else {
            return Ok(());
        };
        // Fields after the command name, which is in parentheses and may hold spaces.
        let Some(rest) = stat.rsplit_once(')').map(|(_, r)| r) else {
            return Ok(());
        };
        let fields: Vec<&str> = rest.split_whitespace().collect();
        // `rest` starts at field 3 (state): field N is fields[N - 3].
        let field = |n: usize| fields.get(n - 3).and_then(|v| v.parse::<u64>().ok());
        let ticks = 100.0; // USER_HZ: 100 on every Linux ABI troupe runs on.
        let page = 4096.0;
        let mut gauge = |name: &str, help: &str, value: f64| -> Result<(), std::fmt::Error> {
            let g = ConstGauge::new(value);
            g.encode(encoder.encode_descriptor(name, help, None, g.metric_type())?)
        };
        if let Some(rss) = field(24) {
            gauge(
                "process_resident_memory_bytes",
                "Resident memory size in bytes",
                rss as f64 * page,
            )?;
        }
        if let Some(vsize) = field(23) {
            gauge(
                "process_virtual_memory_bytes",
                "Virtual memory size in bytes",
                vsize as f64,
            )?;
        }
        if let Some(threads) = field(20) {
            gauge(
                "process_threads",
                "Number of OS threads in the process",
                threads as f64,
            )?;
        }
        if let Ok(fds) = std::fs::read_dir("/proc/self/fd") {
            gauge(
                "process_open_fds",
                "Number of open file descriptors",
                fds.count() as f64,
            )?;
        }
        let boot = std::fs::read_to_string("/proc/stat").ok().and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("btime "))
                .and_then(|v| v.trim().parse::<u64>().ok())
        });
        if let (Some(boot), Some(start)) = (boot, field(22)) {
            gauge(
                "process_start_time_seconds",
                "Start time of the process since the Unix epoch in seconds",
                boot as f64 + start as f64 / ticks,
            )?;
        }
        if let (Some(utime), Some(stime)) = (field(14), field(15)) {
            let c = ConstCounter::new((utime + stime) as f64 / ticks);
            c.encode(encoder.encode_descriptor(
                "process_cpu_seconds",
                "Total user and system CPU time spent in seconds",
                None,
                c.metric_type(),
            )?)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::{BTreeMap, HashSet};
    use std::time::Duration;

    #[tokio::test]
    async fn time_observes_the_awaited_work() {
        let h = latency_histogram();
        let v = time(&h, async {
            tokio::time::sleep(Duration::from_millis(2)).await;
            7
        })
        .await;
        assert_eq!(v, 7);
        let mut text = String::new();
        let mut r = Registry::default();
        r.register("t", "t", h);
        prometheus_client::encoding::text::encode(&mut text, &r).unwrap();
        assert!(text.contains("t_count 1\n"), "{text}");
        // It slept 2 ms: never in the buckets below that.
        assert!(text.contains("t_bucket{le=\"0.001\"} 0\n"), "{text}");
        assert!(text.contains("t_bucket{le=\"+Inf\"} 1\n"), "{text}");
    }

    #[test]
    fn a_gauge_guard_gives_its_one_back() {
        let g = Gauge::default();
        let a = track(&g);
        let b = track(&g);
        assert_eq!(g.get(), 2);
        drop(a);
        assert_eq!(g.get(), 1);
        drop(b);
        assert_eq!(g.get(), 0);
    }

    /// Checks the OpenMetrics text line by line: every sample belongs to a
    /// family announced by one `# HELP` and one `# TYPE` line before it,
    /// counters' samples end in `_total`, values parse, a histogram's
    /// buckets are cumulative and end in `+Inf` equal to its `_count`, and
    /// the text ends with `# EOF`.
    #[test]
    fn render_is_valid_openmetrics_text() {
        LOG_APPEND_SECONDS.observe(0.001);
        let text = render("node \"a\"\\b");
        assert!(text.ends_with("# EOF\n"), "{text}");
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
            if line == "# EOF" {
                continue;
            }
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
            let family = ["_bucket", "_sum", "_count", "_total"]
                .iter()
                .find_map(|s| name.strip_suffix(s).filter(|f| types.contains_key(*f)))
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
            "process_resident_memory_bytes",
        ] {
            assert_eq!(types[family], "gauge", "{family}");
        }
        for family in [
            "troupe_messages_received",
            "troupe_messages_acked",
            "troupe_messages_delivered",
            "troupe_slow_consumer_closes",
            "troupe_room_handoffs",
            "troupe_room_failovers",
            "troupe_lease_acquisitions",
            "troupe_events_dropped",
            "troupe_actor_restarts",
            "troupe_store_errors",
            "troupe_connections_refused",
            "troupe_rate_limited",
            "process_cpu_seconds",
        ] {
            assert_eq!(types[family], "counter", "{family}");
        }
        assert_eq!(types["troupe_log_append_seconds"], "histogram");
        assert_eq!(types["troupe_store_seconds"], "histogram");
        let labels = |name: &str| -> Vec<String> {
            let mut l: Vec<String> = samples[name].iter().map(|(l, _)| l.clone()).collect();
            l.sort();
            l
        };
        assert_eq!(
            labels("troupe_actor_restarts_total"),
            ["kind=\"room\"", "kind=\"session\""]
        );
        assert_eq!(
            labels("troupe_store_errors_total"),
            ["store=\"log\"", "store=\"presence\"", "store=\"sql\""]
        );
        assert_eq!(
            labels("troupe_connections_refused_total").len(),
            Refusal::ALL.len()
        );
        assert_eq!(
            labels("troupe_rate_limited_total").len(),
            crate::rate_limits::Kind::ALL.len()
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

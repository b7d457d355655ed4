//! Results: latency summaries, one round of load, the JSON summary of a run,
//! its Markdown table, and the troupe/bare comparison.

use std::fmt::Write as _;
use std::path::Path;

use anyhow::Context;
use hdrhistogram::Histogram;
use serde::Serialize;
use serde_json::Value;

use crate::sys::ProcSample;

/// A latency distribution in milliseconds.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Latency {
    pub count: u64,
    pub mean_ms: f64,
    pub p50_ms: f64,
    pub p90_ms: f64,
    pub p99_ms: f64,
    pub p999_ms: f64,
    pub max_ms: f64,
}

impl Latency {
    /// From a histogram of nanoseconds.
    pub fn from_ns(h: &Histogram<u64>) -> Self {
        if h.is_empty() {
            return Self::default();
        }
        let ms = |ns: u64| ns as f64 / 1e6;
        Self {
            count: h.len(),
            mean_ms: h.mean() / 1e6,
            p50_ms: ms(h.value_at_quantile(0.50)),
            p90_ms: ms(h.value_at_quantile(0.90)),
            p99_ms: ms(h.value_at_quantile(0.99)),
            p999_ms: ms(h.value_at_quantile(0.999)),
            max_ms: ms(h.max()),
        }
    }
}

/// A histogram of nanoseconds from 1 ns to 10 minutes, 3 significant digits.
pub fn new_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 600_000_000_000, 3).expect("valid histogram bounds")
}

/// One second of a round, as the progress line showed it.
#[derive(Debug, Clone, Serialize)]
pub struct Tick {
    /// Seconds since the round started.
    pub t_s: f64,
    /// Messages published during this second.
    pub published: u64,
    /// Deliveries (first copies) during this second.
    pub delivered: u64,
    /// The largest latency seen during this second, ms.
    pub max_latency_ms: f64,
}

/// What the server's process did during a round.
#[derive(Debug, Clone, Serialize)]
pub struct ServerRound {
    /// CPU time over wall time, percent of one core.
    pub cpu_pct: f64,
    pub rss_kib: u64,
    pub hwm_kib: u64,
}

/// One round of publishing at a fixed rate, then the drain.
#[derive(Debug, Clone, Serialize)]
pub struct RoundResult {
    /// Total publish rate asked for, messages/s.
    pub target_rate: f64,
    /// Publishing time, s.
    pub duration_s: f64,
    /// Messages written to the sockets.
    pub published: u64,
    /// published / duration_s.
    pub publish_rate: f64,
    /// Deliveries that should happen: every message to every subscriber of its room.
    pub expected_deliveries: u64,
    /// Distinct deliveries that did happen (duplicates not counted).
    pub delivered: u64,
    /// delivered / (publishing time + time until the last straggler or the drain limit).
    pub deliveries_per_s: f64,
    /// expected - delivered after the drain.
    pub lost: u64,
    /// Deliveries of a message a subscriber had already seen.
    pub duplicated: u64,
    /// Deliveries that were not ours or came to a client of another room.
    pub misrouted: u64,
    /// `error` frames received (troupe).
    pub errors: u64,
    /// `ack` frames received (troupe).
    pub acks: Option<u64>,
    /// Published but never acknowledged (troupe).
    pub unacked: Option<u64>,
    /// Connections that the server closed or that broke during the round.
    pub closed: u64,
    /// Send-to-deliver latency of every distinct delivery.
    pub latency: Latency,
    /// The same distribution as `[percentile, ms]` pairs (for the plots:
    /// see `plot::percentile_curve`).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub latency_percentiles: Vec<[f64; 2]>,
    /// The same, per group of subscribers (cluster: same node as the
    /// publishers, other nodes); empty when the load has no groups.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub groups: Vec<GroupResult>,
    /// The generator's CPU time over wall time, percent of one core.
    pub generator_cpu_pct: f64,
    pub server: Option<ServerRound>,
    /// Publishers sent fewer than 95% of the messages asked for.
    pub fell_behind: bool,
    /// Nothing lost, duplicated, misrouted, unacked, refused or closed.
    pub clean: bool,
    /// Clean, kept up, and p99 within the limit (what --find-max looks for).
    pub held: bool,
    pub problems: Vec<String>,
    pub timeline: Vec<Tick>,
}

/// The deliveries of one group of subscribers during a round.
#[derive(Debug, Clone, Serialize)]
pub struct GroupResult {
    pub name: String,
    pub subscribers: usize,
    pub delivered: u64,
    pub latency: Latency,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub latency_percentiles: Vec<[f64; 2]>,
}

/// The JSON summary of a run.
#[derive(Debug, Clone, Serialize)]
pub struct Summary {
    pub scenario: String,
    pub target: crate::cli::Target,
    pub url: String,
    pub params: Value,
    pub ok: bool,
    pub problems: Vec<String>,
    /// fanout --find-max: the highest total publish rate that held, msgs/s.
    pub max_rate_held: Option<f64>,
    /// The round the headline figures come from (the last one, or the best held one).
    pub result: Option<RoundResult>,
    pub rounds: Vec<RoundResult>,
    /// The `connections` scenario.
    pub connections: Option<ConnectionsResult>,
    /// The `coldrooms` scenario.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub coldrooms: Option<crate::coldrooms::ColdRoomsResult>,
    /// The `cluster` scenario: latency by where the subscribers are.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cluster: Option<ClusterFanout>,
    /// The `failover` scenario.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub failover: Option<crate::failover::FailoverResult>,
    pub generator: GeneratorUsage,
    pub server_before: Option<ProcSample>,
    pub server_after: Option<ProcSample>,
}

/// The `cluster` scenario's headline: one room fanned out from the
/// publishers' node to subscribers on every node (round `spread`), and the
/// same load with every subscriber on the publishers' node (round
/// `single-node`), in the same cluster and the same run.
#[derive(Debug, Clone, Serialize)]
pub struct ClusterFanout {
    pub nodes: Vec<String>,
    /// The spread round's room, the node owning it, and the node its publishers use.
    pub room: String,
    pub owner: Option<String>,
    pub publisher_node: String,
    pub subscribers_per_node: std::collections::BTreeMap<String, usize>,
    /// The single-node round's room and node (its owner, publishers and subscribers).
    pub single_room: String,
    pub single_node: String,
    /// Spread round: subscribers on the publishers' node, and on the other nodes.
    pub same_node: Option<GroupResult>,
    pub cross_node: Option<GroupResult>,
    /// Single-node round: every subscriber.
    pub single: Option<GroupResult>,
    pub spread_deliveries_per_s: f64,
    pub single_deliveries_per_s: f64,
    /// cross-node / single-node latency.
    pub ratio_p50: Option<f64>,
    pub ratio_p99: Option<f64>,
    pub ratio_p999: Option<f64>,
    pub ratio_max: Option<f64>,
    /// Changes of a node's view during the run (none expected: each is a
    /// peer that missed its heartbeat deadline, or a link that closed).
    pub membership_changes: Vec<crate::cluster::MembershipChange>,
}

#[derive(Debug, Clone, Serialize)]
pub struct GeneratorUsage {
    pub threads: usize,
    pub cpu_s: f64,
    pub wall_s: f64,
    /// cpu_s / wall_s over the whole run (setup included), percent of one core.
    pub cpu_pct: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct ConnectionsResult {
    pub requested: usize,
    pub connected: usize,
    pub failed: usize,
    /// Connections closed by the server while they were held.
    pub closed_while_held: u64,
    /// Seconds from the first connect to the last connection ready.
    pub connect_s: f64,
    /// connected / connect_s.
    pub connects_per_s: f64,
    /// Time of one connect (TCP + upgrade + `session` for troupe).
    pub connect_latency: Latency,
    pub server_rss_before_kib: Option<u64>,
    pub server_rss_after_kib: Option<u64>,
    /// (RSS after - RSS before) / connected, bytes.
    pub server_bytes_per_connection: Option<f64>,
    pub generator_cpu_pct_connecting: f64,
}

fn f(v: f64) -> String {
    if v == 0.0 {
        "0".into()
    } else if v.abs() >= 100.0 {
        format!("{v:.0}")
    } else if v.abs() >= 1.0 {
        format!("{v:.2}")
    } else {
        format!("{v:.3}")
    }
}

impl Summary {
    pub fn markdown(&self) -> String {
        let mut s = String::new();
        let target = match self.target {
            crate::cli::Target::Troupe => "troupe",
            crate::cli::Target::Bare => "bare",
        };
        let _ = writeln!(s, "### {} against {target} ({})\n", self.scenario, self.url);
        let _ = writeln!(s, "params: `{}`\n", self.params);
        if let Some(rate) = self.max_rate_held {
            let _ = writeln!(s, "highest rate that held: **{} msgs/s**\n", f(rate));
        }
        if !self.rounds.is_empty() {
            s.push_str("| rate asked | published/s | deliveries/s | p50 ms | p99 ms | p99.9 ms | max ms | lost | dup | errors | closed | gen CPU % | server CPU % | server RSS MiB | held |\n");
            s.push_str(
                "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|:-:|\n",
            );
            for r in &self.rounds {
                let (cpu, rss) = match &r.server {
                    Some(sv) => (f(sv.cpu_pct), f(sv.rss_kib as f64 / 1024.0)),
                    None => ("-".into(), "-".into()),
                };
                let _ = writeln!(
                    s,
                    "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
                    f(r.target_rate),
                    f(r.publish_rate),
                    f(r.deliveries_per_s),
                    f(r.latency.p50_ms),
                    f(r.latency.p99_ms),
                    f(r.latency.p999_ms),
                    f(r.latency.max_ms),
                    r.lost,
                    r.duplicated,
                    r.errors,
                    r.closed,
                    f(r.generator_cpu_pct),
                    cpu,
                    rss,
                    if r.held { "yes" } else { "no" },
                );
            }
            s.push('\n');
        }
        if let Some(c) = &self.connections {
            s.push_str("| connections | connected | failed | connects/s | connect p50 ms | connect p99 ms | server RSS before MiB | after MiB | bytes/connection | closed while held |\n");
            s.push_str("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n");
            let mib = |v: Option<u64>| v.map_or("-".into(), |k| f(k as f64 / 1024.0));
            let _ = writeln!(
                s,
                "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |\n",
                c.requested,
                c.connected,
                c.failed,
                f(c.connects_per_s),
                f(c.connect_latency.p50_ms),
                f(c.connect_latency.p99_ms),
                mib(c.server_rss_before_kib),
                mib(c.server_rss_after_kib),
                c.server_bytes_per_connection.map_or("-".into(), f),
                c.closed_while_held,
            );
        }
        if let Some(c) = &self.coldrooms {
            coldrooms_markdown(&mut s, c);
        }
        if let Some(c) = &self.cluster {
            self.cluster_markdown(&mut s, c);
        }
        if let Some(fo) = &self.failover {
            failover_markdown(&mut s, fo);
        }
        let _ = writeln!(
            s,
            "generator: {} thread(s), {} CPU s over {} s ({} % of one core)\n",
            self.generator.threads,
            f(self.generator.cpu_s),
            f(self.generator.wall_s),
            f(self.generator.cpu_pct)
        );
        if !self.problems.is_empty() {
            s.push_str("problems:\n\n");
            for p in &self.problems {
                let _ = writeln!(s, "- {p}");
            }
            s.push('\n');
        }
        s
    }

    fn cluster_markdown(&self, s: &mut String, c: &ClusterFanout) {
        let _ = writeln!(
            s,
            "cluster of {} nodes ({}); rounds in order: `spread` (room {} owned by {}, publishers on {}, subscribers per node {:?}), then `single-node` (room {}, everything on {})\n",
            c.nodes.len(),
            c.nodes.join(", "),
            c.room,
            c.owner.as_deref().unwrap_or("?"),
            c.publisher_node,
            c.subscribers_per_node,
            c.single_room,
            c.single_node,
        );
        s.push_str("| round | subscribers | where | deliveries | p50 ms | p90 ms | p99 ms | p99.9 ms | max ms |\n");
        s.push_str("|---|---:|---|---:|---:|---:|---:|---:|---:|\n");
        for (round, g, place) in [
            ("spread", &c.same_node, "publishers' node"),
            ("spread", &c.cross_node, "other nodes (cross-node)"),
            ("single-node", &c.single, "publishers' node, alone"),
        ] {
            if let Some(g) = g {
                let _ = writeln!(
                    s,
                    "| {round} | {} | {place} | {} | {} | {} | {} | {} | {} |",
                    g.subscribers,
                    g.delivered,
                    f(g.latency.p50_ms),
                    f(g.latency.p90_ms),
                    f(g.latency.p99_ms),
                    f(g.latency.p999_ms),
                    f(g.latency.max_ms),
                );
            }
        }
        let r = |v: Option<f64>| v.map_or("-".into(), |v| format!("{v:.2}"));
        let _ = writeln!(
            s,
            "\ncross-node / single-node: p50 **{}**, p99 **{}**, p99.9 {}, max {}; deliveries/s spread {} vs single-node {}\n",
            r(c.ratio_p50),
            r(c.ratio_p99),
            r(c.ratio_p999),
            r(c.ratio_max),
            f(c.spread_deliveries_per_s),
            f(c.single_deliveries_per_s),
        );
        if !c.membership_changes.is_empty() {
            let _ = writeln!(
                s,
                "**{} membership changes during the run** (a node's view lost or regained a peer; ms after the cluster was ready): {}\n",
                c.membership_changes.len(),
                c.membership_changes
                    .iter()
                    .map(|m| format!("{} at {:.0}: live {} quorum {}", m.node, m.at_ms, m.live, m.quorum))
                    .collect::<Vec<_>>()
                    .join("; ")
            );
        }
    }

    /// Writes the JSON (to --json or stdout) and the Markdown (to --markdown).
    pub fn write(&self, json: Option<&Path>, markdown: Option<&Path>) -> anyhow::Result<()> {
        let text = serde_json::to_string_pretty(self)?;
        match json {
            Some(path) => std::fs::write(path, text + "\n")
                .with_context(|| format!("writing {}", path.display()))?,
            None => println!("{text}"),
        }
        if let Some(path) = markdown {
            std::fs::write(path, self.markdown())
                .with_context(|| format!("writing {}", path.display()))?;
        }
        Ok(())
    }
}

fn coldrooms_markdown(s: &mut String, c: &crate::coldrooms::ColdRoomsResult) {
    let _ = writeln!(
        s,
        "{} rooms ({} seed message(s) each) created at {}/s; the node stopped them in {} s (rooms running: {} before, {} after the set-up, {} once cold); {} posts in flight\n",
        c.rooms,
        c.seed_messages,
        f(c.created_per_s),
        f(c.cooled_s),
        c.rooms_owned[0],
        c.rooms_owned[1],
        c.rooms_owned[2],
        c.concurrency,
    );
    s.push_str("| pass | rooms served | failed | s | rooms/s | p50 ms | p99 ms | max ms | retried attempts | server CPU % |\n");
    s.push_str("|---|---:|---:|---:|---:|---:|---:|---:|---|---:|\n");
    for (name, p) in [
        ("first message, cold rooms", &c.cold),
        ("second message, running rooms", &c.warm),
    ] {
        let retried = if p.retried.is_empty() {
            "0".to_string()
        } else {
            p.retried
                .iter()
                .map(|(why, n)| format!("{n} {why}"))
                .collect::<Vec<_>>()
                .join(", ")
        };
        let _ = writeln!(
            s,
            "| {name} | {} | {} | {} | **{}** | {} | {} | {} | {retried} | {} |",
            p.served,
            p.failed,
            f(p.elapsed_s),
            f(p.rooms_per_s),
            f(p.latency.p50_ms),
            f(p.latency.p99_ms),
            f(p.latency.max_ms),
            p.server_cpu_pct.map_or("-".into(), f),
        );
    }
    s.push('\n');
}

/// A figure of two summaries, and which way is better.
struct Row {
    name: &'static str,
    pointer: &'static str,
    higher_is_better: bool,
}

const ROWS: &[Row] = &[
    Row {
        name: "highest rate that held, msgs/s",
        pointer: "/max_rate_held",
        higher_is_better: true,
    },
    Row {
        name: "published, msgs/s",
        pointer: "/result/publish_rate",
        higher_is_better: true,
    },
    Row {
        name: "deliveries/s",
        pointer: "/result/deliveries_per_s",
        higher_is_better: true,
    },
    Row {
        name: "latency p50, ms",
        pointer: "/result/latency/p50_ms",
        higher_is_better: false,
    },
    Row {
        name: "latency p99, ms",
        pointer: "/result/latency/p99_ms",
        higher_is_better: false,
    },
    Row {
        name: "latency p99.9, ms",
        pointer: "/result/latency/p999_ms",
        higher_is_better: false,
    },
    Row {
        name: "latency max, ms",
        pointer: "/result/latency/max_ms",
        higher_is_better: false,
    },
    Row {
        name: "lost",
        pointer: "/result/lost",
        higher_is_better: false,
    },
    Row {
        name: "duplicated",
        pointer: "/result/duplicated",
        higher_is_better: false,
    },
    Row {
        name: "server CPU, % of a core",
        pointer: "/result/server/cpu_pct",
        higher_is_better: false,
    },
    Row {
        name: "generator CPU, % of a core",
        pointer: "/result/generator_cpu_pct",
        higher_is_better: false,
    },
    Row {
        name: "connects/s",
        pointer: "/connections/connects_per_s",
        higher_is_better: true,
    },
    Row {
        name: "connect p99, ms",
        pointer: "/connections/connect_latency/p99_ms",
        higher_is_better: false,
    },
    Row {
        name: "server bytes/connection",
        pointer: "/connections/server_bytes_per_connection",
        higher_is_better: false,
    },
    Row {
        name: "server RSS at the end of the run, MiB",
        pointer: "/server_after/rss_kib",
        higher_is_better: false,
    },
];

/// The Markdown table of troupe's figures next to the bare baseline's, with
/// the ratio troupe/bare.
pub fn compare(troupe: &Value, bare: &Value) -> String {
    let mut s = String::new();
    let scenario = troupe["scenario"].as_str().unwrap_or("?");
    let _ = writeln!(
        s,
        "### {scenario}: troupe vs the bare baseline (same run)\n\nparams: `{}`\n",
        troupe["params"]
    );
    s.push_str("| figure | troupe | bare | troupe/bare |\n|---|---:|---:|---:|\n");
    for row in ROWS {
        let t = troupe.pointer(row.pointer).and_then(Value::as_f64);
        let b = bare.pointer(row.pointer).and_then(Value::as_f64);
        if t.is_none() && b.is_none() {
            continue;
        }
        let value = |v: Option<f64>| v.map_or("-".to_string(), f);
        let ratio = match (t, b) {
            (Some(t), Some(b)) if b != 0.0 => format!("{:.2}", t / b),
            _ => "-".into(),
        };
        let (tv, bv) = if row.pointer == "/server_after/rss_kib" {
            (value(t.map(|k| k / 1024.0)), value(b.map(|k| k / 1024.0)))
        } else {
            (value(t), value(b))
        };
        let _ = writeln!(
            s,
            "| {} ({}) | {} | {} | {} |",
            row.name,
            if row.higher_is_better {
                "higher is better"
            } else {
                "lower is better"
            },
            tv,
            bv,
            ratio
        );
    }
    for (name, v) in [("troupe", troupe), ("bare", bare)] {
        if v["ok"] != Value::Bool(true) {
            let _ = writeln!(s, "\n**{name} run not ok**: {}", v["problems"]);
        }
    }
    s
}

fn failover_markdown(s: &mut String, r: &crate::failover::FailoverResult) {
    let ms = |v: Option<f64>| v.map_or("-".to_string(), |v| format!("{v:.0}"));
    let _ = writeln!(
        s,
        "cluster of {} nodes ({}); rooms per node before the kill {:?}; killed **{}** (kill -9): {} of its rooms, {} of {} clients\n",
        r.nodes.len(),
        r.nodes.join(", "),
        r.rooms_per_node,
        r.victim,
        r.victim_rooms.len(),
        r.clients_on_victim,
        r.clients,
    );
    s.push_str("| figure | value |\n|---|---:|\n");
    let rows: Vec<(&str, String)> = vec![
        (
            "detection: kill to \"cluster membership changed\" on every survivor (logs), ms",
            ms(r.detection_ms_max),
        ),
        (
            "kill to \"room lease taken\" of the last of its rooms (logs), ms",
            ms(r.lease_taken_ms_max),
        ),
        (
            "kill to the first ack in one of its rooms, ms",
            ms(r.first_ack_ms_first_room),
        ),
        (
            "kill to the first ack in every one of its rooms, ms (target <= 2000; <= 3000 when it owned 1,000)",
            ms(r.first_ack_ms_all_rooms),
        ),
        (
            "kill to the first ack in the other rooms (max), ms",
            ms(r.first_ack_ms_other_rooms_max),
        ),
        (
            "kill to the first ack in every room of the cluster, ms",
            ms(r.first_ack_ms_every_room),
        ),
        (
            "its clients resumed",
            format!("{} of {}", r.resumed_clients, r.clients_on_victim),
        ),
        (
            "kill to `resumed`, p50 / max ms (target max <= 5000)",
            format!("{} / {}", f(r.resume_ms.p50_ms), f(r.resume_ms.max_ms)),
        ),
        (
            "connection attempts to resume, at most",
            r.resume_attempts_max.to_string(),
        ),
        (
            "`resumed` frames naming another seq than the client had (protocol deviation)",
            r.resumed_mismatch.to_string(),
        ),
        (
            "`resumed` frames not listing the client's room (protocol deviation)",
            r.resumed_without_room.to_string(),
        ),
        (
            "other clients' lost connections",
            r.other_disconnects.to_string(),
        ),
        (
            "messages sent / resends / `unavailable` answers",
            format!("{} / {} / {}", r.sent, r.resends, r.unavailable),
        ),
        (
            "acked / never acked",
            format!("{} / {}", r.acked, r.unacked),
        ),
        (
            "deliveries owed / delivered",
            format!("{} / {}", r.expected_deliveries, r.delivered),
        ),
        (
            "lost / duplicated / stored twice / out of order / conflicting",
            format!(
                "{} / {} / {} / {} / {}",
                r.lost, r.duplicated, r.duplicate_messages, r.out_of_order, r.conflicts
            ),
        ),
        (
            "delivery latency p50 / p99 / p99.9 / max ms",
            format!(
                "{} / {} / {} / {}",
                f(r.latency.p50_ms),
                f(r.latency.p99_ms),
                f(r.latency.p999_ms),
                f(r.latency.max_ms)
            ),
        ),
        (
            "ack latency p50 / p99 / max ms",
            format!(
                "{} / {} / {}",
                f(r.ack_latency.p50_ms),
                f(r.ack_latency.p99_ms),
                f(r.ack_latency.max_ms)
            ),
        ),
        (
            "error frames (other than `unavailable`)",
            r.errors.to_string(),
        ),
        ("drain after sending stopped, s", f(r.drain_s)),
        ("generator CPU, % of a core", f(r.generator_cpu_pct)),
    ];
    for (k, v) in rows {
        let _ = writeln!(s, "| {k} | {v} |");
    }
    s.push('\n');
    if !r.rooms.is_empty() {
        s.push_str("| room | owned by the killed node | new owner | lease taken | first send after the kill | first ack after the kill |\n|---|:-:|---|---:|---:|---:|\n");
        for room in &r.rooms {
            let _ = writeln!(
                s,
                "| {} | {} | {} | {} | {} | {} |",
                room.room,
                if room.moved { "yes" } else { "" },
                room.new_owner.as_deref().unwrap_or("-"),
                ms(room.lease_taken_ms),
                ms(room.first_send_ms),
                ms(room.ms)
            );
        }
        s.push_str("\n(ms after the kill)\n\n");
    }
    if !r.detection.is_empty() {
        let _ = writeln!(
            s,
            "detection per node (ms after the kill): {}\n",
            r.detection
                .iter()
                .map(|d| format!("{} {}", d.node, ms(d.ms)))
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
}

//! `troupe-bench <scenario>`: the load generator. See `benches/README.md`.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::{Args, Parser, Subcommand};
use serde_json::{json, Value};
use troupe_bench::cli::{unique_run_id, Common, Env, Target};
use troupe_bench::cluster::{Cluster, ClusterArgs};
use troupe_bench::coldrooms::{self, ColdRoomsSpec};
use troupe_bench::connections::{self, ConnectionsSpec};
use troupe_bench::failover::{self, FailoverSpec};
use troupe_bench::load::{ClientSpec, Load, LoadSpec};
use troupe_bench::report::{self, ClusterFanout, GeneratorUsage, RoundResult, Summary};
use troupe_bench::sys::{raise_nofile, self_cpu, ProcSample};
use troupe_bench::{plot, proto};

#[derive(Parser)]
#[command(
    name = "troupe-bench",
    about = "Load generator for troupe (and the bare broadcast baseline), over real WebSockets on loopback"
)]
struct Cli {
    #[command(subcommand)]
    scenario: Scenario,
}

#[derive(Subcommand)]
enum Scenario {
    /// One room: S subscribers, P publishers at a total rate R for D seconds.
    Fanout(FanoutArgs),
    /// M rooms of K members each, every member publishing at r msgs/s.
    Rooms(RoomsArgs),
    /// N idle authenticated connections: server RSS per connection, connect rate.
    Connections(ConnectionsArgs),
    /// The first message into M rooms the node has stopped (rooms/s), then into the running ones.
    Coldrooms(ColdRoomsArgs),
    /// A cluster: fan-out to subscribers on every node vs all on one node.
    Cluster(ClusterScenarioArgs),
    /// A cluster: kill -9 of the node owning the most rooms, under traffic.
    Failover(FailoverArgs),
    /// Compares two JSON summaries (troupe and bare): a Markdown table with ratios.
    Compare(CompareArgs),
    /// Draws the SVG plots of kept JSON summaries (as --plots does).
    Plot(PlotArgs),
}

#[derive(Args)]
struct FanoutArgs {
    #[command(flatten)]
    common: Common,
    /// Subscribers (they count deliveries).
    #[arg(long, short = 's', default_value_t = 100)]
    subscribers: usize,
    /// Publishers (separate connections; their own copies are not counted).
    #[arg(long, short = 'p', default_value_t = 1)]
    publishers: usize,
    /// Total publish rate, messages/s (the start rate with --find-max).
    #[arg(long, short = 'r', default_value_t = 1000.0)]
    rate: f64,
    /// Publishing time, s.
    #[arg(long, short = 'd', default_value_t = 5.0)]
    duration: f64,
    /// Extra characters in every message body.
    #[arg(long, default_value_t = 0)]
    payload: usize,
    /// Raise the rate round after round until p99 > --max-p99-ms or anything is lost.
    #[arg(long)]
    find_max: bool,
    /// --find-max: rate factor between rounds.
    #[arg(long, default_value_t = 1.5)]
    step: f64,
    /// --find-max: publishing time of each round, s.
    #[arg(long, default_value_t = 3.0)]
    round_secs: f64,
    /// --find-max: at most this many rounds.
    #[arg(long, default_value_t = 15)]
    max_rounds: usize,
    /// --find-max: never ask for more than this rate.
    #[arg(long, default_value_t = 10_000_000.0)]
    max_rate: f64,
    /// A round holds only with p99 at most this, ms.
    #[arg(long, default_value_t = 50.0)]
    max_p99_ms: f64,
}

#[derive(Args)]
struct RoomsArgs {
    #[command(flatten)]
    common: Common,
    /// Rooms.
    #[arg(long, short = 'm', default_value_t = 10)]
    rooms: usize,
    /// Members of each room (each publishes and counts its room's messages, its own included).
    #[arg(long, short = 'k', default_value_t = 10)]
    members: usize,
    /// Messages/s of each member.
    #[arg(long, short = 'r', default_value_t = 10.0)]
    rate: f64,
    /// Publishing time, s.
    #[arg(long, short = 'd', default_value_t = 5.0)]
    duration: f64,
    /// Extra characters in every message body.
    #[arg(long, default_value_t = 0)]
    payload: usize,
    /// The run holds only with p99 at most this, ms.
    #[arg(long, default_value_t = 50.0)]
    max_p99_ms: f64,
}

#[derive(Args)]
struct ConnectionsArgs {
    #[command(flatten)]
    common: Common,
    /// Idle connections to open.
    #[arg(long, short = 'n', default_value_t = 1000)]
    connections: usize,
    /// Distinct users (troupe); connections share their logins in turn. Default: one each.
    #[arg(long)]
    users: Option<usize>,
    /// Keep them open this long after the last one is ready, then read the RSS, s.
    #[arg(long, default_value_t = 2.0)]
    hold_secs: f64,
}

#[derive(Args)]
struct ColdRoomsArgs {
    #[command(flatten)]
    common: Common,
    /// Rooms.
    #[arg(long, short = 'm', default_value_t = 10_000)]
    rooms: usize,
    /// Posts in flight at once while measuring (one kept-alive connection each).
    #[arg(long, short = 'c', default_value_t = 64)]
    concurrency: usize,
    /// Messages posted into each room before it goes cold.
    #[arg(long, default_value_t = 1)]
    seed_messages: usize,
    /// Longest wait for the node to stop the rooms after the set-up, s.
    #[arg(long, default_value_t = 300.0)]
    cold_timeout_secs: f64,
    /// One post's deadline, s (then it is posted again, same client_id).
    #[arg(long, default_value_t = 30.0)]
    post_timeout_secs: f64,
    /// Give up on a room after this long, s.
    #[arg(long, default_value_t = 120.0)]
    give_up_secs: f64,
}

#[derive(Args)]
struct ClusterScenarioArgs {
    #[command(flatten)]
    common: Common,
    #[command(flatten)]
    cluster: ClusterArgs,
    /// Subscribers, spread round-robin over the nodes (they count deliveries).
    #[arg(long, short = 's', default_value_t = 100)]
    subscribers: usize,
    /// Publishers, all on one node (--publisher-node).
    #[arg(long, short = 'p', default_value_t = 1)]
    publishers: usize,
    /// Total publish rate, messages/s.
    #[arg(long, short = 'r', default_value_t = 1000.0)]
    rate: f64,
    /// Publishing time of each round, s.
    #[arg(long, short = 'd', default_value_t = 5.0)]
    duration: f64,
    /// Extra characters in every message body.
    #[arg(long, default_value_t = 0)]
    payload: usize,
    /// The node the publishers use: a node name, or `owner` (the node owning the room).
    #[arg(long, default_value = "owner")]
    publisher_node: String,
    /// Skip the single-node round (every subscriber on the publishers' node).
    #[arg(long)]
    no_single: bool,
    /// A round holds only with p99 at most this, ms.
    #[arg(long, default_value_t = 50.0)]
    max_p99_ms: f64,
}

#[derive(Args)]
struct FailoverArgs {
    #[command(flatten)]
    common: Common,
    #[command(flatten)]
    cluster: ClusterArgs,
    /// Rooms.
    #[arg(long, short = 'm', default_value_t = 10)]
    rooms: usize,
    /// Members of each room, spread over the nodes (each sends and counts its room's messages).
    #[arg(long, short = 'k', default_value_t = 10)]
    members: usize,
    /// Messages/s of each member.
    #[arg(long, short = 'r', default_value_t = 2.0)]
    rate: f64,
    /// Sending before the kill, s.
    #[arg(long, default_value_t = 3.0)]
    before_secs: f64,
    /// Sending after the kill, s.
    #[arg(long, default_value_t = 7.0)]
    after_secs: f64,
    /// A send with no answer for this long is sent again (same client_id), ms.
    #[arg(long, default_value_t = 1000)]
    resend_after_ms: u64,
    /// A send answered `unavailable` is sent again after this long, ms.
    #[arg(long, default_value_t = 100)]
    retry_unavailable_ms: u64,
    /// Unanswered sends a member keeps at once (past it, it skips new ones).
    #[arg(long, default_value_t = 64)]
    window: usize,
    /// Extra characters in every message body.
    #[arg(long, default_value_t = 0)]
    payload: usize,
    /// The node to kill (default: the one owning the most rooms).
    #[arg(long)]
    kill: Option<String>,
    /// Every member sends one message at the kill (a member of the killed
    /// node: once it resumed), so that a slow `-r` does not add the wait for
    /// a room's next message to its time to serve again.
    #[arg(long)]
    probe_at_kill: bool,
}

#[derive(Args)]
struct CompareArgs {
    /// troupe's JSON summary.
    #[arg(long)]
    troupe: PathBuf,
    /// The bare baseline's JSON summary.
    #[arg(long)]
    bare: PathBuf,
    /// Also write the table here.
    #[arg(long)]
    markdown: Option<PathBuf>,
    /// Write SVG plots of both runs into this directory: compare-latency.svg
    /// and compare-deliveries.svg.
    #[arg(long, value_name = "DIR")]
    plots: Option<PathBuf>,
}

#[derive(Args)]
struct PlotArgs {
    /// JSON summaries (`--json` of a run); each gives TARGET-latency.svg and
    /// TARGET-deliveries.svg, TARGET its target (troupe, bare).
    #[arg(required = true)]
    summaries: Vec<PathBuf>,
    /// Where the SVG files go.
    #[arg(long, value_name = "DIR")]
    out: PathBuf,
}

impl Scenario {
    fn common(&self) -> Option<&Common> {
        match self {
            Scenario::Fanout(a) => Some(&a.common),
            Scenario::Rooms(a) => Some(&a.common),
            Scenario::Connections(a) => Some(&a.common),
            Scenario::Coldrooms(a) => Some(&a.common),
            Scenario::Cluster(a) => Some(&a.common),
            Scenario::Failover(a) => Some(&a.common),
            Scenario::Compare(_) | Scenario::Plot(_) => None,
        }
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let threads = cli
        .scenario
        .common()
        .and_then(|c| c.threads)
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
        .max(1);
    let offline = match &cli.scenario {
        Scenario::Compare(args) => Some(compare(args)),
        Scenario::Plot(args) => Some(replot(args)),
        _ => None,
    };
    if let Some(outcome) = offline {
        return match outcome {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("troupe-bench: {e:#}");
                ExitCode::FAILURE
            }
        };
    }
    raise_nofile();
    // One thread: a current-thread runtime (no work stealing, no cross-thread wake-ups).
    let mut builder = if threads == 1 {
        tokio::runtime::Builder::new_current_thread()
    } else {
        let mut b = tokio::runtime::Builder::new_multi_thread();
        b.worker_threads(threads);
        b
    };
    let runtime = match builder.enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("troupe-bench: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let outcome = runtime.block_on(async {
        // Ctrl-C or SIGTERM: the scenario is dropped, which stops a cluster
        // the generator started and drops its database and keys.
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
        tokio::select! {
            r = run(cli.scenario, threads) => r,
            _ = tokio::signal::ctrl_c() => Err(anyhow::anyhow!("interrupted")),
            _ = term.recv() => Err(anyhow::anyhow!("terminated")),
        }
    });
    // Stragglers (closing sockets) must not hold the exit.
    runtime.shutdown_timeout(Duration::from_secs(1));
    match outcome {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => {
            eprintln!("troupe-bench: run NOT ok (see problems in the summary)");
            ExitCode::FAILURE
        }
        Err(e) => {
            eprintln!("troupe-bench: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn read_json(p: &PathBuf) -> anyhow::Result<Value> {
    let text = std::fs::read_to_string(p).with_context(|| format!("reading {}", p.display()))?;
    serde_json::from_str(&text).with_context(|| format!("parsing {}", p.display()))
}

fn replot(args: &PlotArgs) -> anyhow::Result<()> {
    for path in &args.summaries {
        let summary = read_json(path)?;
        let prefix = summary["target"].as_str().unwrap_or("run").to_string();
        plot::write_plots(&args.out, &plot::summary_plots(&summary, &prefix))?;
    }
    Ok(())
}

fn compare(args: &CompareArgs) -> anyhow::Result<()> {
    let (troupe, bare) = (read_json(&args.troupe)?, read_json(&args.bare)?);
    let table = report::compare(&troupe, &bare);
    print!("{table}");
    if let Some(path) = &args.markdown {
        std::fs::write(path, &table).with_context(|| format!("writing {}", path.display()))?;
    }
    if let Some(dir) = &args.plots {
        plot::write_plots(dir, &plot::compare_plots(&troupe, &bare))?;
    }
    Ok(())
}

/// Runs one scenario; true when it was ok.
async fn run(scenario: Scenario, threads: usize) -> anyhow::Result<bool> {
    let wall0 = Instant::now();
    let cpu0 = self_cpu();
    let (env, name, params, outcome) = match scenario {
        Scenario::Fanout(a) => {
            let env = Env::new(a.common.clone())?;
            let mut params = json!({
                "subscribers": a.subscribers, "publishers": a.publishers, "rate": a.rate,
                "payload": a.payload, "find_max": a.find_max, "max_p99_ms": a.max_p99_ms,
                "threads": threads, "source_ips": a.common.source_ips,
            });
            if a.find_max {
                params["step"] = json!(a.step);
                params["round_s"] = json!(a.round_secs);
                params["max_rounds"] = json!(a.max_rounds);
            } else {
                params["duration_s"] = json!(a.duration);
            }
            let outcome = fanout(&env, &a).await?;
            (env, "fanout", params, outcome)
        }
        Scenario::Rooms(a) => {
            let env = Env::new(a.common.clone())?;
            let params = json!({
                "rooms": a.rooms, "members": a.members, "rate_per_member": a.rate,
                "total_rate": a.rate * (a.rooms * a.members) as f64,
                "duration_s": a.duration, "payload": a.payload, "max_p99_ms": a.max_p99_ms,
                "threads": threads, "source_ips": a.common.source_ips,
            });
            let outcome = rooms(&env, &a).await?;
            (env, "rooms", params, outcome)
        }
        Scenario::Connections(a) => {
            let env = Env::new(a.common.clone())?;
            let users = a.users.unwrap_or(a.connections);
            let params = json!({
                "connections": a.connections, "users": users, "hold_s": a.hold_secs,
                "threads": threads, "source_ips": a.common.source_ips,
                "setup_concurrency": a.common.setup_concurrency,
            });
            let server_before = env.server_sample();
            let spec = ConnectionsSpec {
                connections: a.connections,
                users,
                hold_secs: a.hold_secs,
            };
            let (result, mut problems) = connections::run(&env, &spec).await?;
            if result.failed > 0 {
                problems.insert(0, format!("{} connections failed", result.failed));
            }
            if result.closed_while_held > 0 {
                problems.insert(
                    0,
                    format!("{} connections closed while held", result.closed_while_held),
                );
            }
            let ok = result.failed == 0 && result.closed_while_held == 0;
            env.progress(format!(
                "connections: {} of {} at {:.0}/s, server {} bytes/connection",
                result.connected,
                result.requested,
                result.connects_per_s,
                result
                    .server_bytes_per_connection
                    .map_or("-".into(), |b| format!("{b:.0}"))
            ));
            let outcome = Outcome {
                connections: Some(result),
                server_before,
                server_after: env.server_sample(),
                ..Outcome::new(ok, problems)
            };
            (env, "connections", params, outcome)
        }
        Scenario::Coldrooms(a) => {
            let env = Env::new(a.common.clone())?;
            let params = json!({
                "rooms": a.rooms, "concurrency": a.concurrency, "seed_messages": a.seed_messages,
                "post_timeout_s": a.post_timeout_secs, "give_up_s": a.give_up_secs,
                "threads": threads, "source_ips": a.common.source_ips,
                "setup_concurrency": a.common.setup_concurrency,
            });
            let spec = ColdRoomsSpec {
                rooms: a.rooms,
                concurrency: a.concurrency,
                seed_messages: a.seed_messages,
                cold_timeout_secs: a.cold_timeout_secs,
                post_timeout_secs: a.post_timeout_secs,
                give_up_secs: a.give_up_secs,
            };
            let server_before = env.server_sample();
            let (result, problems) = coldrooms::run(&env, &spec).await?;
            let ok = problems.is_empty();
            let outcome = Outcome {
                coldrooms: Some(result),
                server_before,
                server_after: env.server_sample(),
                ..Outcome::new(ok, problems)
            };
            (env, "coldrooms", params, outcome)
        }
        Scenario::Cluster(a) => {
            let params = json!({
                "nodes": a.cluster.nodes, "subscribers": a.subscribers, "publishers": a.publishers,
                "rate": a.rate, "duration_s": a.duration, "payload": a.payload,
                "publisher_node": a.publisher_node, "single_round": !a.no_single,
                "max_p99_ms": a.max_p99_ms, "threads": threads, "source_ips": a.common.source_ips,
                "server_cpus": a.cluster.server_cpus,
            });
            let (env, outcome) = cluster_fanout(&a).await?;
            (env, "cluster", params, outcome)
        }
        Scenario::Failover(a) => {
            let params = json!({
                "nodes": a.cluster.nodes, "rooms": a.rooms, "members": a.members,
                "rate_per_member": a.rate, "total_rate": a.rate * (a.rooms * a.members) as f64,
                "before_s": a.before_secs, "after_s": a.after_secs,
                "resend_after_ms": a.resend_after_ms, "retry_unavailable_ms": a.retry_unavailable_ms,
                "window": a.window, "payload": a.payload, "kill": a.kill,
                "threads": threads, "source_ips": a.common.source_ips,
                "server_cpus": a.cluster.server_cpus,
            });
            let (env, outcome) = failover_run(&a).await?;
            (env, "failover", params, outcome)
        }
        Scenario::Compare(_) | Scenario::Plot(_) => {
            unreachable!("handled before the runtime starts")
        }
    };
    let common = &env.common;
    let wall_s = wall0.elapsed().as_secs_f64();
    let cpu_s = (self_cpu() - cpu0).as_secs_f64();
    let summary = Summary {
        scenario: name.into(),
        target: common.target,
        url: outcome.url.unwrap_or_else(|| common.effective_url()),
        params,
        ok: outcome.ok,
        problems: outcome.problems,
        max_rate_held: outcome.max_rate_held,
        result: outcome.result,
        rounds: outcome.rounds,
        connections: outcome.connections,
        coldrooms: outcome.coldrooms,
        cluster: outcome.cluster,
        failover: outcome.failover,
        generator: GeneratorUsage {
            threads,
            cpu_s,
            wall_s,
            cpu_pct: cpu_s / wall_s.max(1e-9) * 100.0,
        },
        server_before: outcome.server_before,
        server_after: outcome.server_after,
    };
    summary.write(common.json.as_deref(), common.markdown.as_deref())?;
    if let Some(dir) = &common.plots {
        let prefix = match common.target {
            Target::Troupe => "troupe",
            Target::Bare => "bare",
        };
        let plots = plot::summary_plots(&serde_json::to_value(&summary)?, prefix);
        plot::write_plots(dir, &plots)?;
        env.progress(format!("{} plots in {}", plots.len(), dir.display()));
    }
    Ok(summary.ok)
}

struct Outcome {
    ok: bool,
    problems: Vec<String>,
    max_rate_held: Option<f64>,
    result: Option<RoundResult>,
    rounds: Vec<RoundResult>,
    connections: Option<report::ConnectionsResult>,
    coldrooms: Option<coldrooms::ColdRoomsResult>,
    cluster: Option<ClusterFanout>,
    failover: Option<failover::FailoverResult>,
    server_before: Option<ProcSample>,
    server_after: Option<ProcSample>,
    /// What the summary names as the server (a cluster: every node).
    url: Option<String>,
}

impl Outcome {
    fn new(ok: bool, problems: Vec<String>) -> Self {
        Self {
            ok,
            problems,
            max_rate_held: None,
            result: None,
            rounds: Vec::new(),
            connections: None,
            coldrooms: None,
            cluster: None,
            failover: None,
            server_before: None,
            server_after: None,
            url: None,
        }
    }
}

fn check_rate(rate: f64, duration: f64) -> anyhow::Result<()> {
    anyhow::ensure!(
        rate.is_finite() && rate > 0.0,
        "--rate must be a positive number"
    );
    anyhow::ensure!(
        duration.is_finite() && duration > 0.0 && duration <= 3600.0,
        "durations must be between 0 and 3600 s"
    );
    Ok(())
}

async fn fanout(env: &Env, a: &FanoutArgs) -> anyhow::Result<Outcome> {
    check_rate(a.rate, if a.find_max { a.round_secs } else { a.duration })?;
    anyhow::ensure!(
        a.subscribers >= 1 && a.publishers >= 1,
        "at least one subscriber and one publisher"
    );
    anyhow::ensure!(a.step > 1.0, "--step must be above 1");
    let mut clients = vec![ClientSpec::new(0, None, true); a.subscribers];
    clients.extend((0..a.publishers).map(|j| ClientSpec::new(0, Some(j as u32), false)));
    let spec = LoadSpec::single(vec![format!("{}fanout", env.run_id)], clients, a.payload);
    let server_before = env.server_sample();
    let mut load = Load::connect(env, &spec).await?;
    let mut rounds: Vec<RoundResult> = Vec::new();
    let mut best: Option<usize> = None;
    let mut problems = Vec::new();
    if a.find_max {
        let mut rate = a.rate;
        for i in 0..a.max_rounds {
            let label = format!("fanout round {} @ {rate:.0}/s", i + 1);
            let r = load
                .round(
                    &label,
                    rate,
                    Duration::from_secs_f64(a.round_secs),
                    a.max_p99_ms,
                )
                .await;
            let held = r.held;
            if !held {
                problems.push(format!(
                    "stopped at {rate:.0} msgs/s: p99 {:.3} ms (limit {} ms){}{}",
                    r.latency.p99_ms,
                    a.max_p99_ms,
                    if r.problems.is_empty() { "" } else { "; " },
                    r.problems.join("; ")
                ));
            }
            rounds.push(r);
            if !held {
                break;
            }
            best = Some(rounds.len() - 1);
            rate *= a.step;
            if rate > a.max_rate {
                problems.push(format!("stopped at --max-rate {}", a.max_rate));
                break;
            }
        }
        if best.is_none() {
            problems.insert(0, "no rate held, not even the first".into());
        }
    } else {
        let r = load
            .round(
                "fanout",
                a.rate,
                Duration::from_secs_f64(a.duration),
                a.max_p99_ms,
            )
            .await;
        problems.extend(r.problems.iter().cloned());
        rounds.push(r);
        best = Some(0);
    }
    load.shutdown().await;
    let (ok, result, max_rate_held) = if a.find_max {
        let result = best.map(|i| rounds[i].clone());
        let held = result.as_ref().map(|r| r.target_rate);
        (best.is_some(), result, held)
    } else {
        let r = rounds[0].clone();
        (r.clean, Some(r), None)
    };
    Ok(Outcome {
        max_rate_held,
        result,
        rounds,
        server_before,
        server_after: env.server_sample(),
        ..Outcome::new(ok, problems)
    })
}

async fn rooms(env: &Env, a: &RoomsArgs) -> anyhow::Result<Outcome> {
    check_rate(a.rate, a.duration)?;
    anyhow::ensure!(
        a.rooms >= 1 && a.members >= 1,
        "at least one room and one member"
    );
    let clients = (0..a.rooms)
        .flat_map(|room| {
            (0..a.members).map(move |m| ClientSpec::new(room as u32, Some(m as u32), true))
        })
        .collect();
    let spec = LoadSpec::single(
        (0..a.rooms)
            .map(|i| format!("{}room{i}", env.run_id))
            .collect(),
        clients,
        a.payload,
    );
    let server_before = env.server_sample();
    let mut load = Load::connect(env, &spec).await?;
    let total = a.rate * load.publishers() as f64;
    let r = load
        .round(
            "rooms",
            total,
            Duration::from_secs_f64(a.duration),
            a.max_p99_ms,
        )
        .await;
    load.shutdown().await;
    Ok(Outcome {
        result: Some(r.clone()),
        rounds: vec![r.clone()],
        server_before,
        server_after: env.server_sample(),
        ..Outcome::new(r.clean, r.problems)
    })
}

/// Starts (or adopts) the cluster of a cluster scenario and the generator's
/// view of it: `--url` becomes the first node, the server pids every node's.
async fn start_cluster(common: &Common, args: &ClusterArgs) -> anyhow::Result<(Env, Cluster)> {
    anyhow::ensure!(
        common.target == Target::Troupe,
        "the cluster scenarios run against troupe only"
    );
    let run_id = common.run_id.clone().unwrap_or_else(unique_run_id);
    let quiet = common.quiet;
    let cluster = Cluster::start(args, &run_id, &|line| {
        if !quiet {
            eprintln!("{line}");
        }
    })
    .await?;
    let mut common = common.clone();
    common.url = cluster.urls().into_iter().next();
    common.run_id = Some(run_id);
    let mut env = Env::new(common)?;
    env.server_pids = cluster.pids();
    Ok((env, cluster))
}

/// Logs `user` in on `addr`, joins `room` (creating it) and leaves the
/// connection: the room then has a lease, and so an owner.
async fn create_room(
    env: &Env,
    addr: std::net::SocketAddr,
    user: &str,
    room: &str,
) -> anyhow::Result<()> {
    let token = proto::register_and_login(addr, env.sources.pick(), user).await?;
    let config = troupe_bench::net::client_config(4096);
    let mut ws = troupe_bench::net::connect_ws(
        addr,
        env.sources.pick(),
        &format!("/ws?token={token}"),
        config,
    )
    .await?;
    proto::await_session(&mut ws).await?;
    proto::join(&mut ws, room).await?;
    let _ = tokio::time::timeout(Duration::from_secs(2), ws.close(None)).await;
    Ok(())
}

async fn cluster_fanout(a: &ClusterScenarioArgs) -> anyhow::Result<(Env, Outcome)> {
    check_rate(a.rate, a.duration)?;
    anyhow::ensure!(
        a.subscribers >= 1 && a.publishers >= 1,
        "at least one subscriber and one publisher"
    );
    let (env, mut cluster) = start_cluster(&a.common, &a.cluster).await?;
    let outcome = cluster_rounds(&env, &cluster, a).await;
    if !matches!(&outcome, Ok(o) if o.ok) {
        cluster.keep_logs();
        if let Some(dir) = cluster.logs_dir() {
            eprintln!("troupe-bench: node logs kept in {}", dir.display());
        }
    }
    Ok((env, outcome?))
}

async fn cluster_rounds(
    env: &Env,
    cluster: &Cluster,
    a: &ClusterScenarioArgs,
) -> anyhow::Result<Outcome> {
    let names: Vec<String> = cluster.nodes.iter().map(|n| n.name.clone()).collect();
    let addrs: Vec<std::net::SocketAddr> = cluster.nodes.iter().map(|n| n.http).collect();
    let n = names.len();
    let known_owners = cluster.database_url.is_some();
    let node_index = |name: &str| -> anyhow::Result<usize> {
        cluster
            .index_of(name)
            .ok_or_else(|| anyhow::anyhow!("no node {name} (nodes: {})", names.join(", ")))
    };

    // The two rooms, and who owns them.
    let spread_room = format!("{}spread", env.run_id);
    let single_room = format!("{}single", env.run_id);
    create_room(env, addrs[0], &format!("{}owner", env.run_id), &spread_room).await?;
    let owner = if known_owners {
        Some(
            cluster
                .owner_of(&spread_room, Duration::from_secs(10))
                .await?,
        )
    } else {
        None
    };
    let publisher = match (a.publisher_node.as_str(), &owner) {
        ("owner", Some(owner)) => node_index(owner)?,
        ("owner", None) => 0,
        (name, _) => node_index(name)?,
    };
    let mut subscribers_per_node: std::collections::BTreeMap<String, usize> =
        names.iter().map(|n| (n.clone(), 0)).collect();
    let mut clients: Vec<ClientSpec> = (0..a.subscribers)
        .map(|i| {
            let node = i % n;
            *subscribers_per_node.entry(names[node].clone()).or_insert(0) += 1;
            ClientSpec {
                node,
                group: usize::from(node != publisher),
                ..ClientSpec::new(0, None, true)
            }
        })
        .collect();
    clients.extend((0..a.publishers).map(|j| ClientSpec {
        node: publisher,
        ..ClientSpec::new(0, Some(j as u32), false)
    }));
    let spread = LoadSpec {
        addrs: addrs.clone(),
        groups: vec!["same-node".into(), "cross-node".into()],
        user_prefix: Some(format!("{}s", env.run_id)),
        ..LoadSpec::single(vec![spread_room.clone()], clients, a.payload)
    };
    env.progress(format!(
        "cluster: room {spread_room} owned by {}; publishers on {}; subscribers per node {subscribers_per_node:?}",
        owner.as_deref().unwrap_or("? (no --database-url)"),
        names[publisher]
    ));

    let server_before = env.server_sample();
    let duration = Duration::from_secs_f64(a.duration);
    let mut load = Load::connect(env, &spread).await?;
    let spread_round = load
        .round("cluster spread", a.rate, duration, a.max_p99_ms)
        .await;
    load.shutdown().await;
    let mut problems: Vec<String> = spread_round
        .problems
        .iter()
        .map(|p| format!("spread: {p}"))
        .collect();
    if let Some(owner) = &owner {
        let now = cluster
            .owner_of(&spread_room, Duration::from_secs(5))
            .await?;
        if &now != owner {
            problems.push(format!(
                "room {spread_room} moved from {owner} to {now} during the round"
            ));
        }
    }

    let mut rounds = vec![spread_round.clone()];
    let mut single_node = names[publisher].clone();
    let mut single_group = None;
    if !a.no_single {
        create_room(env, addrs[0], &format!("{}owner", env.run_id), &single_room).await?;
        let single = if known_owners {
            node_index(
                &cluster
                    .owner_of(&single_room, Duration::from_secs(10))
                    .await?,
            )?
        } else {
            publisher
        };
        single_node = names[single].clone();
        let mut clients: Vec<ClientSpec> = (0..a.subscribers)
            .map(|_| ClientSpec {
                node: single,
                ..ClientSpec::new(0, None, true)
            })
            .collect();
        clients.extend((0..a.publishers).map(|j| ClientSpec {
            node: single,
            ..ClientSpec::new(0, Some(j as u32), false)
        }));
        let spec = LoadSpec {
            addrs: addrs.clone(),
            groups: vec!["single-node".into()],
            user_prefix: Some(format!("{}b", env.run_id)),
            ..LoadSpec::single(vec![single_room.clone()], clients, a.payload)
        };
        env.progress(format!(
            "cluster: single-node round: room {single_room} owned by {single_node}, every client there"
        ));
        let mut load = Load::connect(env, &spec).await?;
        let r = load
            .round("cluster single-node", a.rate, duration, a.max_p99_ms)
            .await;
        load.shutdown().await;
        problems.extend(r.problems.iter().map(|p| format!("single-node: {p}")));
        single_group = r.groups.first().cloned();
        rounds.push(r);
    }

    let group = |name: &str| spread_round.groups.iter().find(|g| g.name == name).cloned();
    let same = group("same-node");
    let cross = group("cross-node").filter(|g| g.delivered > 0);
    let ratio = |pick: fn(&report::Latency) -> f64| match (&cross, &single_group) {
        (Some(c), Some(s)) if pick(&s.latency) > 0.0 => Some(pick(&c.latency) / pick(&s.latency)),
        _ => None,
    };
    let fanout = ClusterFanout {
        nodes: names.clone(),
        room: spread_room,
        owner,
        publisher_node: names[publisher].clone(),
        subscribers_per_node,
        single_room,
        single_node,
        ratio_p50: ratio(|l| l.p50_ms),
        ratio_p99: ratio(|l| l.p99_ms),
        ratio_p999: ratio(|l| l.p999_ms),
        ratio_max: ratio(|l| l.max_ms),
        same_node: same,
        cross_node: cross,
        spread_deliveries_per_s: spread_round.deliveries_per_s,
        single_deliveries_per_s: rounds.get(1).map_or(0.0, |r| r.deliveries_per_s),
        single: single_group,
        membership_changes: cluster.membership_changes(),
    };
    if !fanout.membership_changes.is_empty() {
        problems.push(format!(
            "{} changes of a node's view of the cluster during the run (heartbeats missed or links closed; see cluster.membership_changes)",
            fanout.membership_changes.len()
        ));
    }
    if let (Some(c), Some(s)) = (&fanout.cross_node, &fanout.single) {
        env.progress(format!(
            "cluster: cross-node p99 {:.3} ms vs single-node p99 {:.3} ms: x{:.2} (p50 {:.3} vs {:.3} ms)",
            c.latency.p99_ms,
            s.latency.p99_ms,
            fanout.ratio_p99.unwrap_or(f64::NAN),
            c.latency.p50_ms,
            s.latency.p50_ms,
        ));
    }
    let ok = rounds.iter().all(|r| r.clean) && problems.iter().all(|p| !p.contains("moved from"));
    Ok(Outcome {
        result: Some(spread_round),
        rounds,
        cluster: Some(fanout),
        server_before,
        server_after: env.server_sample(),
        url: Some(cluster.urls().join(",")),
        ..Outcome::new(ok, problems)
    })
}

async fn failover_run(a: &FailoverArgs) -> anyhow::Result<(Env, Outcome)> {
    for (what, v) in [
        ("--before-secs", a.before_secs),
        ("--after-secs", a.after_secs),
    ] {
        anyhow::ensure!(
            v.is_finite() && v > 0.0 && v <= 3600.0,
            "{what} must be between 0 and 3600 s"
        );
    }
    anyhow::ensure!(a.window >= 1, "--window must be at least 1");
    let (env, mut cluster) = start_cluster(&a.common, &a.cluster).await?;
    let spec = FailoverSpec {
        rooms: a.rooms,
        members: a.members,
        rate: a.rate,
        before: Duration::from_secs_f64(a.before_secs),
        after: Duration::from_secs_f64(a.after_secs),
        // Settling takes resends and restarts: never less than 15 s.
        drain: Duration::from_secs_f64(a.common.drain_secs.max(15.0)),
        resend_after: Duration::from_millis(a.resend_after_ms.max(1)),
        retry_unavailable: Duration::from_millis(a.retry_unavailable_ms),
        window: a.window,
        payload: a.payload,
        victim: a.kill.clone(),
        probe_at_kill: a.probe_at_kill,
    };
    let server_before = env.server_sample();
    let run = failover::run(&env, &mut cluster, &spec).await;
    let server_after = env.server_sample();
    let outcome = match run {
        Ok(found) => {
            let ok = found.problems.is_empty();
            let mut problems = found.problems;
            problems.extend(
                found
                    .notes
                    .into_iter()
                    .map(|n| format!("note (not a failure): {n}")),
            );
            Outcome {
                failover: Some(found.result),
                server_before,
                server_after,
                url: Some(cluster.urls().join(",")),
                ..Outcome::new(ok, problems)
            }
        }
        Err(e) => {
            cluster.keep_logs();
            if let Some(dir) = cluster.logs_dir() {
                eprintln!("troupe-bench: node logs kept in {}", dir.display());
            }
            return Err(e);
        }
    };
    if !outcome.ok {
        cluster.keep_logs();
        if let Some(dir) = cluster.logs_dir() {
            eprintln!("troupe-bench: node logs kept in {}", dir.display());
        }
    }
    Ok((env, outcome))
}

//! `troupe-bench <scenario>`: the load generator. See `benches/README.md`.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::{Args, Parser, Subcommand};
use serde_json::{json, Value};
use troupe_bench::cli::{Common, Env};
use troupe_bench::connections::{self, ConnectionsSpec};
use troupe_bench::load::{ClientSpec, Load, LoadSpec};
use troupe_bench::report::{self, GeneratorUsage, RoundResult, Summary};
use troupe_bench::sys::{proc_sample, raise_nofile, self_cpu};

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
    /// Fan-out with subscribers spread over several nodes (not yet: needs the cluster).
    Cluster(StubArgs),
    /// kill -9 of a room's owner under traffic (not yet: needs the cluster).
    Failover(StubArgs),
    /// Compares two JSON summaries (troupe and bare): a Markdown table with ratios.
    Compare(CompareArgs),
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
struct StubArgs {
    #[arg(trailing_var_arg = true, allow_hyphen_values = true, hide = true)]
    rest: Vec<String>,
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
}

impl Scenario {
    fn common(&self) -> Option<&Common> {
        match self {
            Scenario::Fanout(a) => Some(&a.common),
            Scenario::Rooms(a) => Some(&a.common),
            Scenario::Connections(a) => Some(&a.common),
            _ => None,
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
    match &cli.scenario {
        Scenario::Cluster(_) | Scenario::Failover(_) => {
            eprintln!(
                "troupe-bench: this scenario needs the cluster (issue 4); not implemented yet"
            );
            return ExitCode::from(2);
        }
        Scenario::Compare(args) => {
            return match compare(args) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("troupe-bench: {e:#}");
                    ExitCode::FAILURE
                }
            };
        }
        _ => {}
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
    let outcome = runtime.block_on(run(cli.scenario, threads));
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

fn compare(args: &CompareArgs) -> anyhow::Result<()> {
    let read = |p: &PathBuf| -> anyhow::Result<Value> {
        let text =
            std::fs::read_to_string(p).with_context(|| format!("reading {}", p.display()))?;
        serde_json::from_str(&text).with_context(|| format!("parsing {}", p.display()))
    };
    let table = report::compare(&read(&args.troupe)?, &read(&args.bare)?);
    print!("{table}");
    if let Some(path) = &args.markdown {
        std::fs::write(path, &table).with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(())
}

/// Runs one scenario; true when it was ok.
async fn run(scenario: Scenario, threads: usize) -> anyhow::Result<bool> {
    let wall0 = Instant::now();
    let cpu0 = self_cpu();
    let (common, name, params, outcome) = match scenario {
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
            (a.common, "fanout", params, outcome)
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
            (a.common, "rooms", params, outcome)
        }
        Scenario::Connections(a) => {
            let env = Env::new(a.common.clone())?;
            let users = a.users.unwrap_or(a.connections);
            let params = json!({
                "connections": a.connections, "users": users, "hold_s": a.hold_secs,
                "threads": threads, "source_ips": a.common.source_ips,
                "setup_concurrency": a.common.setup_concurrency,
            });
            let server_before = a.common.server_pid.and_then(proc_sample);
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
                ok,
                problems,
                max_rate_held: None,
                result: None,
                rounds: Vec::new(),
                connections: Some(result),
                server_before,
            };
            (a.common, "connections", params, outcome)
        }
        Scenario::Cluster(_) | Scenario::Failover(_) | Scenario::Compare(_) => {
            unreachable!("handled before the runtime starts")
        }
    };
    let wall_s = wall0.elapsed().as_secs_f64();
    let cpu_s = (self_cpu() - cpu0).as_secs_f64();
    let summary = Summary {
        scenario: name.into(),
        target: common.target,
        url: common.effective_url(),
        params,
        ok: outcome.ok,
        problems: outcome.problems,
        max_rate_held: outcome.max_rate_held,
        result: outcome.result,
        rounds: outcome.rounds,
        connections: outcome.connections,
        generator: GeneratorUsage {
            threads,
            cpu_s,
            wall_s,
            cpu_pct: cpu_s / wall_s.max(1e-9) * 100.0,
        },
        server_before: outcome.server_before,
        server_after: common.server_pid.and_then(proc_sample),
    };
    summary.write(common.json.as_deref(), common.markdown.as_deref())?;
    Ok(summary.ok)
}

struct Outcome {
    ok: bool,
    problems: Vec<String>,
    max_rate_held: Option<f64>,
    result: Option<RoundResult>,
    rounds: Vec<RoundResult>,
    connections: Option<report::ConnectionsResult>,
    server_before: Option<troupe_bench::sys::ProcSample>,
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
    let mut clients = vec![
        ClientSpec {
            room: 0,
            publisher: None,
            subscriber: true,
        };
        a.subscribers
    ];
    clients.extend((0..a.publishers).map(|j| ClientSpec {
        room: 0,
        publisher: Some(j as u32),
        subscriber: false,
    }));
    let spec = LoadSpec {
        rooms: vec![format!("{}fanout", env.run_id)],
        clients,
        payload: a.payload,
    };
    let server_before = env.common.server_pid.and_then(proc_sample);
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
        ok,
        problems,
        max_rate_held,
        result,
        rounds,
        connections: None,
        server_before,
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
            (0..a.members).map(move |m| ClientSpec {
                room: room as u32,
                publisher: Some(m as u32),
                subscriber: true,
            })
        })
        .collect();
    let spec = LoadSpec {
        rooms: (0..a.rooms)
            .map(|i| format!("{}room{i}", env.run_id))
            .collect(),
        clients,
        payload: a.payload,
    };
    let server_before = env.common.server_pid.and_then(proc_sample);
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
        ok: r.clean,
        problems: r.problems.clone(),
        max_rate_held: None,
        result: Some(r.clone()),
        rounds: vec![r],
        connections: None,
        server_before,
    })
}

//! A troupe cluster for the `cluster` and `failover` scenarios: N `troupe
//! serve` nodes on their own loopback addresses (127.0.0.11, .12, ...)
//! sharing one fresh Postgres database, one Kafka topic on a tansu broker the
//! generator starts (memory storage) and one fresh Redis key prefix. Or,
//! with `--node-url`, a cluster somebody else runs.
//!
//! Everything started here is stopped when the [`Cluster`] is dropped: the
//! nodes and the broker are killed (they also die with the generator:
//! PR_SET_PDEATHSIG), the database is dropped and the Redis keys deleted.
//! Node logs (JSON lines) are kept under `--logs`, or in a temporary
//! directory that is removed unless [`Cluster::keep_logs`] was called.

use std::collections::BTreeSet;
use std::fs::File;
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpListener};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{anyhow, bail, Context};
use clap::Args;
use serde_json::Value;
use tokio::time::Instant;

use crate::net::{self, loopback_addr};

/// The settings every node gets unless the environment sets them: the same
/// as `benches/lib.sh` (limits that never throttle a benchmark, a cheap
/// password hash for the set-up). Every other
/// `TROUPE_*` variable of the generator's environment reaches the nodes too
/// (say `TROUPE_CLUSTER__DEADLINE_MS`); the stores, names, addresses and
/// the cookie are always the generator's.
const NODE_DEFAULTS: &[(&str, &str)] = &[
    ("TROUPE_LIMITS__MESSAGES_PER_SECOND", "1000000"),
    ("TROUPE_LIMITS__MESSAGE_BURST", "1000000"),
    ("TROUPE_LIMITS__OUTBOUND_QUEUE", "65536"),
    ("TROUPE_LIMITS__OUTBOUND_QUEUE_BYTES", "268435456"),
    ("TROUPE_LIMITS__LOGINS_PER_MINUTE", "1000000"),
    ("TROUPE_RATE_LIMITS__REGISTER__BURST", "1000000"),
    ("TROUPE_AUTH__SCRYPT_LOG_N", "10"),
    ("RUST_LOG", "info"),
];

/// Where the cluster comes from; shared by `cluster` and `failover`.
#[derive(Debug, Clone, Args)]
pub struct ClusterArgs {
    /// Nodes to start.
    #[arg(long, default_value_t = 3)]
    pub nodes: usize,
    /// The troupe binary (default: `troupe` next to this generator).
    #[arg(long)]
    pub troupe_bin: Option<PathBuf>,
    /// The tansu broker binary (scripts/install-tansu.sh prints it).
    #[arg(long, env = "TEST_TANSU")]
    pub tansu: Option<PathBuf>,
    /// Use these Kafka brokers (comma-separated) instead of starting tansu.
    #[arg(long)]
    pub kafka: Option<String>,
    /// Postgres, without the database: a fresh database is created there per run.
    #[arg(
        long,
        env = "TEST_POSTGRES",
        default_value = "postgres://root@127.0.0.1:5432"
    )]
    pub postgres: String,
    /// Redis: a fresh key prefix per run, deleted at the end.
    #[arg(long, env = "TEST_REDIS", default_value = "redis://127.0.0.1:6379")]
    pub redis: String,
    /// Pin the nodes (and tansu) to these CPUs (`0`, `0,1`, `0-1`); default: not pinned.
    #[arg(long)]
    pub server_cpus: Option<String>,
    /// Keep the node logs here (default: a temporary directory, removed when the run is ok).
    #[arg(long)]
    pub logs: Option<PathBuf>,
    /// Use a running cluster instead: its nodes' HTTP URLs (repeat, or comma-separated).
    #[arg(long, value_delimiter = ',')]
    pub node_url: Vec<String>,
    /// With --node-url: the cluster's database, to read which node owns a room.
    #[arg(long)]
    pub database_url: Option<String>,
    /// With --node-url: the nodes' process ids, in the same order (CPU and
    /// memory; `failover` kills one).
    #[arg(long, value_delimiter = ',')]
    pub node_pid: Vec<u32>,
}

pub struct Node {
    pub name: String,
    pub http: SocketAddr,
    pub pid: Option<u32>,
    pub log: Option<PathBuf>,
    child: Option<Child>,
}

pub struct Cluster {
    pub nodes: Vec<Node>,
    /// The database the nodes share (room_leases), when known.
    pub database_url: Option<String>,
    /// Postgres base URL and the database we created (dropped at the end).
    created_db: Option<(String, String)>,
    /// Redis URL and the prefix we used (its keys deleted at the end).
    redis_prefix: Option<(String, String)>,
    tansu: Option<Child>,
    logs: Option<PathBuf>,
    remove_logs: bool,
    /// When every node had joined.
    pub ready_at: SystemTime,
}

/// A node's view of the cluster changed (from its log).
#[derive(Debug, Clone, serde::Serialize)]
pub struct MembershipChange {
    pub node: String,
    /// Since the cluster was ready.
    pub at_ms: f64,
    pub live: String,
    pub quorum: bool,
}

/// Parses `0`, `0,1`, `0-3`, `0,2-3` into CPU numbers.
pub fn parse_cpus(list: &str) -> anyhow::Result<Vec<usize>> {
    let mut cpus = Vec::new();
    for part in list.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        match part.split_once('-') {
            Some((a, b)) => {
                let (a, b): (usize, usize) = (a.trim().parse()?, b.trim().parse()?);
                anyhow::ensure!(a <= b, "bad CPU range {part}");
                cpus.extend(a..=b);
            }
            None => cpus.push(part.parse()?),
        }
    }
    anyhow::ensure!(!cpus.is_empty(), "no CPU in {list:?}");
    anyhow::ensure!(
        cpus.iter().all(|&c| c < 1024),
        "CPU number out of range in {list:?}"
    );
    Ok(cpus)
}

/// Makes a child die with the generator, and pins it to `cpus`.
fn prepare_child(cmd: &mut Command, cpus: Option<Vec<usize>>) {
    // SAFETY: only async-signal-safe calls (prctl, sched_setaffinity) on
    // memory prepared before the fork.
    unsafe {
        cmd.pre_exec(move || {
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
            if let Some(cpus) = &cpus {
                let mut set: libc::cpu_set_t = std::mem::zeroed();
                for &c in cpus {
                    libc::CPU_SET(c, &mut set);
                }
                if libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
            }
            Ok(())
        });
    }
}

/// A free TCP port on `ip` (bound and released: good enough on loopback).
fn free_port(ip: Ipv4Addr) -> anyhow::Result<u16> {
    let l = TcpListener::bind((ip, 0)).with_context(|| format!("no free port on {ip}"))?;
    Ok(l.local_addr()?.port())
}

/// Runs a command to completion (async); its stdout, or an error with its output.
async fn run(what: &str, cmd: &mut tokio::process::Command) -> anyhow::Result<String> {
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .await
        .with_context(|| format!("{what}: cannot run {cmd:?}"))?;
    if !out.status.success() {
        bail!(
            "{what} failed ({}): {}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout).trim(),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

fn tail_file(path: &Path, lines: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

fn default_tansu() -> PathBuf {
    let home = std::env::var("HOME").unwrap_or_default();
    PathBuf::from(format!("{home}/.cache/troupe/tansu-0.6.0/bin/tansu"))
}

fn default_troupe_bin() -> anyhow::Result<PathBuf> {
    let me = std::env::current_exe().context("where is this generator?")?;
    let bin = me.with_file_name("troupe");
    anyhow::ensure!(
        bin.is_file(),
        "no troupe binary next to the generator ({}): build it (cargo build -p troupe) or pass --troupe-bin",
        bin.display()
    );
    Ok(bin)
}

impl Cluster {
    /// Starts the cluster the options ask for (or adopts `--node-url`) and
    /// waits until every node is ready and sees every other.
    pub async fn start(
        args: &ClusterArgs,
        run_id: &str,
        progress: &dyn Fn(String),
    ) -> anyhow::Result<Cluster> {
        if !args.node_url.is_empty() {
            return Self::adopt(args, progress).await;
        }
        anyhow::ensure!(
            (1..=100).contains(&args.nodes),
            "--nodes must be between 1 and 100"
        );
        let cpus = args.server_cpus.as_deref().map(parse_cpus).transpose()?;
        let troupe = match &args.troupe_bin {
            Some(p) => p.clone(),
            None => default_troupe_bin()?,
        };
        anyhow::ensure!(
            troupe.is_file(),
            "--troupe-bin {} is not a file",
            troupe.display()
        );
        let (logs, remove_logs) = match &args.logs {
            Some(dir) => (dir.clone(), false),
            None => (
                std::env::temp_dir().join(format!("troupe-bench-{run_id}-logs")),
                true,
            ),
        };
        std::fs::create_dir_all(&logs)
            .with_context(|| format!("creating the log directory {}", logs.display()))?;
        let mut cluster = Cluster {
            nodes: Vec::new(),
            database_url: None,
            created_db: None,
            redis_prefix: None,
            tansu: None,
            logs: Some(logs.clone()),
            remove_logs,
            ready_at: SystemTime::now(),
        };

        // Kafka: a broker of our own unless --kafka names one.
        let brokers = match &args.kafka {
            Some(b) => b.clone(),
            None => {
                let bin = args.tansu.clone().unwrap_or_else(default_tansu);
                anyhow::ensure!(
                    bin.is_file(),
                    "no tansu broker at {} (set TEST_TANSU=$(scripts/install-tansu.sh), or pass --tansu or --kafka)",
                    bin.display()
                );
                let port = free_port(Ipv4Addr::LOCALHOST)?;
                let url = format!("tcp://127.0.0.1:{port}");
                let log = logs.join("tansu.log");
                let out = File::create(&log)?;
                let mut cmd = Command::new(&bin);
                cmd.args([
                    "broker",
                    "--listener-url",
                    &url,
                    "--advertised-listener-url",
                    &url,
                ])
                .args(["--storage-engine", "memory://tansu/"])
                // Not the nodes' RUST_LOG: at info, tansu logs every span of
                // every request (hundreds of MB a run, on the server core).
                .env(
                    "RUST_LOG",
                    std::env::var("BENCH_TANSU_LOG").unwrap_or_else(|_| "warn".into()),
                )
                .stdin(Stdio::null())
                .stdout(out.try_clone()?)
                .stderr(out);
                prepare_child(&mut cmd, cpus.clone());
                let child = cmd
                    .spawn()
                    .with_context(|| format!("starting tansu ({})", bin.display()))?;
                cluster.tansu = Some(child);
                let addr = SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), port);
                let deadline = Instant::now() + Duration::from_secs(30);
                loop {
                    if tokio::net::TcpStream::connect(addr).await.is_ok() {
                        break;
                    }
                    if let Some(status) = cluster
                        .tansu
                        .as_mut()
                        .and_then(|c| c.try_wait().ok().flatten())
                    {
                        bail!("tansu exited at start ({status}):\n{}", tail_file(&log, 20));
                    }
                    if Instant::now() > deadline {
                        bail!(
                            "tansu does not listen on {addr} after 30 s:\n{}",
                            tail_file(&log, 20)
                        );
                    }
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                format!("127.0.0.1:{port}")
            }
        };

        // Postgres: a fresh database.
        let db = format!("troupe_bench_{}", run_id.to_ascii_lowercase());
        anyhow::ensure!(
            db.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'),
            "--run-id makes a bad database name {db:?}"
        );
        let base = args.postgres.trim_end_matches('/').to_string();
        run(
            &format!("creating database {db} at {base} (is Postgres running, and may this user create databases?)"),
            tokio::process::Command::new("psql")
                .arg(format!("{base}/postgres"))
                .args(["-qc", &format!("CREATE DATABASE {db}")]),
        )
        .await?;
        cluster.created_db = Some((base.clone(), db.clone()));
        let database_url = format!("{base}/{db}");
        cluster.database_url = Some(database_url.clone());

        // Redis: a fresh prefix.
        let pong = run(
            &format!("redis-cli ping at {} (is Redis running?)", args.redis),
            tokio::process::Command::new("redis-cli").args(["-u", &args.redis, "ping"]),
        )
        .await?;
        anyhow::ensure!(
            pong.contains("PONG"),
            "Redis at {} answered {pong:?}",
            args.redis
        );
        let prefix = format!("troupe-bench-{run_id}:");
        cluster.redis_prefix = Some((args.redis.clone(), prefix.clone()));

        let mut shared: Vec<(String, String)> = NODE_DEFAULTS
            .iter()
            .filter(|(k, _)| std::env::var_os(k).is_none())
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        shared.extend(
            [
                ("TROUPE_DATABASE__URL", database_url.clone()),
                ("TROUPE_LOG__KIND", "kafka".to_string()),
                ("TROUPE_KAFKA__BROKERS", brokers),
                ("TROUPE_KAFKA__TOPIC", format!("troupe-bench-{run_id}")),
                ("TROUPE_REDIS__URL", args.redis.clone()),
                ("TROUPE_REDIS__PREFIX", prefix),
            ]
            .into_iter()
            .map(|(k, v)| (k.to_string(), v)),
        );

        // The tables and the topic, once, before the nodes race to make them.
        let data = logs.join("data");
        std::fs::create_dir_all(&data)?;
        run(
            "troupe migrate",
            tokio::process::Command::new(&troupe)
                .arg("migrate")
                .env("TROUPE_DATA_DIR", &data)
                .envs(shared.iter().map(|(k, v)| (k, v))),
        )
        .await?;

        // The nodes.
        let mut planned = Vec::new();
        for i in 0..args.nodes {
            let ip = Ipv4Addr::new(127, 0, 0, 11 + i as u8);
            let http = SocketAddr::new(IpAddr::V4(ip), free_port(ip)?);
            let mesh = SocketAddr::new(IpAddr::V4(ip), free_port(ip)?);
            planned.push((format!("bench-{}", i + 1), http, mesh));
        }
        let seeds = planned
            .iter()
            .map(|(_, _, m)| m.to_string())
            .collect::<Vec<_>>()
            .join(",");
        let cookie = format!("bench-cookie-{run_id}");
        for (name, http, mesh) in planned {
            let log = logs.join(format!("{name}.log"));
            let out = File::create(&log)?;
            let dir = data.join(&name);
            std::fs::create_dir_all(&dir)?;
            let mut cmd = Command::new(&troupe);
            cmd.args(["serve", "--log-format", "json"])
                .envs(shared.iter().map(|(k, v)| (k, v)))
                .env("TROUPE_NODE__NAME", &name)
                .env("TROUPE_LISTEN", http.to_string())
                .env("TROUPE_DATA_DIR", &dir)
                .env("TROUPE_CLUSTER__LISTEN", mesh.to_string())
                .env("TROUPE_CLUSTER__SEEDS", &seeds)
                .env("TROUPE_CLUSTER__COOKIE", &cookie)
                .stdin(Stdio::null())
                .stdout(out.try_clone()?)
                .stderr(out);
            prepare_child(&mut cmd, cpus.clone());
            let child = cmd
                .spawn()
                .with_context(|| format!("starting {name} ({})", troupe.display()))?;
            progress(format!(
                "cluster: {name} pid {} on http://{http} (mesh {mesh}), log {}",
                child.id(),
                log.display()
            ));
            cluster.nodes.push(Node {
                name,
                http,
                pid: Some(child.id()),
                log: Some(log),
                child: Some(child),
            });
        }
        let t0 = Instant::now();
        let all: BTreeSet<String> = cluster.nodes.iter().map(|n| n.name.clone()).collect();
        cluster.wait_ready(&all, Duration::from_secs(90)).await?;
        cluster.ready_at = SystemTime::now();
        progress(format!(
            "cluster: {} nodes ready and joined in {:.1} s",
            cluster.nodes.len(),
            t0.elapsed().as_secs_f64()
        ));
        Ok(cluster)
    }

    /// A cluster someone else runs: names from each node's `/ready`.
    async fn adopt(args: &ClusterArgs, progress: &dyn Fn(String)) -> anyhow::Result<Cluster> {
        anyhow::ensure!(
            args.node_pid.is_empty() || args.node_pid.len() == args.node_url.len(),
            "--node-pid needs one pid per --node-url, in the same order"
        );
        let mut cluster = Cluster {
            nodes: Vec::new(),
            database_url: args.database_url.clone(),
            created_db: None,
            redis_prefix: None,
            tansu: None,
            logs: None,
            remove_logs: false,
            ready_at: SystemTime::now(),
        };
        for (i, url) in args.node_url.iter().enumerate() {
            let http = loopback_addr(url)?;
            let (_, body) = ready(http).await?;
            let name = body["node"]
                .as_str()
                .ok_or_else(|| anyhow!("{url}/ready names no node: {body}"))?
                .to_string();
            cluster.nodes.push(Node {
                name,
                http,
                pid: args.node_pid.get(i).copied(),
                log: None,
                child: None,
            });
        }
        let all: BTreeSet<String> = cluster.nodes.iter().map(|n| n.name.clone()).collect();
        anyhow::ensure!(
            all.len() == cluster.nodes.len(),
            "two --node-url name the same node"
        );
        cluster.wait_ready(&all, Duration::from_secs(30)).await?;
        cluster.ready_at = SystemTime::now();
        progress(format!(
            "cluster: using {} running nodes: {}",
            cluster.nodes.len(),
            cluster
                .nodes
                .iter()
                .map(|n| format!("{} (http://{})", n.name, n.http))
                .collect::<Vec<_>>()
                .join(", ")
        ));
        Ok(cluster)
    }

    /// Until every node in `expected` answers `/ready` 200 with exactly
    /// `expected` live.
    pub async fn wait_ready(
        &mut self,
        expected: &BTreeSet<String>,
        within: Duration,
    ) -> anyhow::Result<()> {
        let deadline = Instant::now() + within;
        loop {
            let mut last = Vec::new();
            let mut all = true;
            for i in 0..self.nodes.len() {
                if !expected.contains(&self.nodes[i].name) {
                    continue;
                }
                if let Some(status) = self.nodes[i]
                    .child
                    .as_mut()
                    .and_then(|c| c.try_wait().ok().flatten())
                {
                    let node = &mut self.nodes[i];
                    node.child = None;
                    bail!(
                        "{} exited ({status}):\n{}",
                        node.name,
                        node.log
                            .as_deref()
                            .map(|l| tail_file(l, 20))
                            .unwrap_or_default()
                    );
                }
                let node = &self.nodes[i];
                let answer = ready(node.http).await;
                let ok = match &answer {
                    Ok((200, body)) => live_set(body) == *expected,
                    _ => false,
                };
                all &= ok;
                last.push(match answer {
                    Ok((status, body)) => format!("{}: {status} {body}", node.name),
                    Err(e) => format!("{}: {e:#}", node.name),
                });
            }
            if all {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!(
                    "the nodes did not all report live = {expected:?} within {within:?}; last /ready answers:\n{}",
                    last.join("\n")
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    pub fn urls(&self) -> Vec<String> {
        self.nodes
            .iter()
            .map(|n| format!("http://{}", n.http))
            .collect()
    }

    pub fn pids(&self) -> Vec<u32> {
        self.nodes.iter().filter_map(|n| n.pid).collect()
    }

    pub fn index_of(&self, name: &str) -> Option<usize> {
        self.nodes.iter().position(|n| n.name == name)
    }

    /// `room -> owner` from `room_leases` for `rooms` (an owner of None: the
    /// room is between owners, or has no lease yet).
    pub async fn owners(&self, rooms: &[String]) -> anyhow::Result<Vec<Option<String>>> {
        let url = self.database_url.as_ref().ok_or_else(|| {
            anyhow!("which node owns a room is read from the database: pass --database-url")
        })?;
        let out = run(
            "reading room_leases",
            tokio::process::Command::new("psql")
                .arg(url)
                .args(["-Atc", "SELECT room, coalesce(owner, '') FROM room_leases"]),
        )
        .await?;
        let mut found = std::collections::HashMap::new();
        for line in out.lines() {
            if let Some((room, owner)) = line.split_once('|') {
                found.insert(room.to_string(), owner.to_string());
            }
        }
        Ok(rooms
            .iter()
            .map(|r| found.get(r).filter(|o| !o.is_empty()).cloned())
            .collect())
    }

    /// Polls `room_leases` until `room` has an owner (at most `within`).
    pub async fn owner_of(&self, room: &str, within: Duration) -> anyhow::Result<String> {
        let deadline = Instant::now() + within;
        loop {
            if let Some(Some(owner)) = self.owners(&[room.to_string()]).await?.pop() {
                return Ok(owner);
            }
            if Instant::now() > deadline {
                bail!("room {room} has no owner in room_leases after {within:?}");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// `kill -9` node `i`; the wall-clock time just before the signal.
    pub fn kill9(&mut self, i: usize) -> anyhow::Result<SystemTime> {
        let node = &mut self.nodes[i];
        let pid = node
            .pid
            .ok_or_else(|| anyhow!("{}: its process id is unknown (--node-pid)", node.name))?;
        let at = SystemTime::now();
        // SAFETY: a plain syscall.
        if unsafe { libc::kill(pid as libc::pid_t, libc::SIGKILL) } != 0 {
            bail!(
                "kill -9 {pid} ({}): {}",
                node.name,
                std::io::Error::last_os_error()
            );
        }
        if let Some(mut child) = node.child.take() {
            let _ = child.wait();
        }
        node.pid = None;
        Ok(at)
    }

    /// Every change of a node's view after the cluster was ready, from the
    /// logs of the nodes started here (none for --node-url).
    pub fn membership_changes(&self) -> Vec<MembershipChange> {
        let mut out = Vec::new();
        for node in &self.nodes {
            let Some(log) = &node.log else { continue };
            for e in log_events(log, &["cluster membership changed"]) {
                if e.at > self.ready_at {
                    out.push(MembershipChange {
                        node: node.name.clone(),
                        at_ms: ms_between(self.ready_at, e.at),
                        live: e.fields["live"].as_str().unwrap_or_default().to_string(),
                        quorum: e.fields["quorum"].as_bool().unwrap_or(false),
                    });
                }
            }
        }
        out.sort_by(|a, b| a.at_ms.total_cmp(&b.at_ms));
        out
    }

    /// Keep the node logs (a failed run).
    pub fn keep_logs(&mut self) {
        self.remove_logs = false;
    }

    pub fn logs_dir(&self) -> Option<&Path> {
        self.logs.as_deref()
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for node in &mut self.nodes {
            if let Some(mut child) = node.child.take() {
                let _ = child.kill();
                let _ = child.wait();
            }
        }
        if let Some(mut tansu) = self.tansu.take() {
            let _ = tansu.kill();
            let _ = tansu.wait();
        }
        if let Some((base, db)) = self.created_db.take() {
            let _ = Command::new("psql")
                .arg(format!("{base}/postgres"))
                .args(["-qc", &format!("DROP DATABASE IF EXISTS {db} WITH (FORCE)")])
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
        }
        if let Some((url, prefix)) = self.redis_prefix.take() {
            let script = format!(
                "redis-cli -u '{url}' --scan --pattern '{prefix}*' | xargs -r -n 500 redis-cli -u '{url}' del"
            );
            let _ = Command::new("sh")
                .args(["-c", &script])
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
        }
        if self.remove_logs {
            if let Some(dir) = &self.logs {
                let _ = std::fs::remove_dir_all(dir);
            }
        }
    }
}

/// GET /ready: (status, JSON body).
pub async fn ready(http: SocketAddr) -> anyhow::Result<(u16, Value)> {
    let (status, body) =
        net::get(http, Ipv4Addr::LOCALHOST, "/ready", Duration::from_secs(5)).await?;
    let v: Value =
        serde_json::from_str(&body).with_context(|| format!("/ready of {http}: {body}"))?;
    Ok((status, v))
}

fn live_set(body: &Value) -> BTreeSet<String> {
    body["cluster"]["live"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|s| s.as_str().map(String::from))
                .collect()
        })
        .unwrap_or_default()
}

/// One line of a node's JSON log that we look for.
#[derive(Debug, Clone)]
pub struct LogEvent {
    pub at: SystemTime,
    pub message: String,
    pub fields: Value,
}

/// The lines of a JSON-lines log whose message is one of `messages`.
pub fn log_events(path: &Path, messages: &[&str]) -> Vec<LogEvent> {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let mut out = Vec::new();
    for line in text.lines() {
        if !messages.iter().any(|m| line.contains(m)) {
            continue;
        }
        let Ok(v) = serde_json::from_str::<Value>(line) else {
            continue;
        };
        let fields = if v["fields"].is_object() {
            v["fields"].clone()
        } else {
            v.clone()
        };
        let Some(message) = fields["message"].as_str() else {
            continue;
        };
        if !messages.contains(&message) {
            continue;
        }
        let Some(at) = v["timestamp"].as_str().and_then(parse_utc) else {
            continue;
        };
        out.push(LogEvent {
            at,
            message: message.to_string(),
            fields,
        });
    }
    out
}

/// `2026-11-23T01:51:17.017290Z` (what tracing writes) as a time.
pub fn parse_utc(s: &str) -> Option<SystemTime> {
    let s = s.strip_suffix('Z')?;
    let (date, time) = s.split_once('T')?;
    let mut d = date.split('-');
    let (y, m, day): (i64, i64, i64) = (
        d.next()?.parse().ok()?,
        d.next()?.parse().ok()?,
        d.next()?.parse().ok()?,
    );
    let (hms, frac) = match time.split_once('.') {
        Some((hms, frac)) => (hms, frac),
        None => (time, ""),
    };
    let mut t = hms.split(':');
    let (hh, mm, ss): (i64, i64, i64) = (
        t.next()?.parse().ok()?,
        t.next()?.parse().ok()?,
        t.next()?.parse().ok()?,
    );
    let nanos: u64 = if frac.is_empty() {
        0
    } else {
        let digits: String = frac.chars().take(9).collect();
        let v: u64 = digits.parse().ok()?;
        v * 10u64.pow(9 - digits.len() as u32)
    };
    // Days from the civil date (Howard Hinnant's algorithm).
    let y = if m <= 2 { y - 1 } else { y };
    let era = if y >= 0 { y } else { y - 399 } / 400;
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    let secs = days * 86_400 + hh * 3600 + mm * 60 + ss;
    let secs = u64::try_from(secs).ok()?;
    Some(UNIX_EPOCH + Duration::new(secs, nanos as u32))
}

/// `b - a` in ms, negative when b is earlier.
pub fn ms_between(a: SystemTime, b: SystemTime) -> f64 {
    match b.duration_since(a) {
        Ok(d) => d.as_secs_f64() * 1e3,
        Err(e) => -e.duration().as_secs_f64() * 1e3,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_lists() {
        assert_eq!(parse_cpus("0").unwrap(), vec![0]);
        assert_eq!(parse_cpus("0,2-3").unwrap(), vec![0, 2, 3]);
        assert!(parse_cpus("").is_err());
        assert!(parse_cpus("3-1").is_err());
    }

    #[test]
    fn log_timestamps() {
        let t = parse_utc("1970-01-02T00:00:01.5Z").unwrap();
        assert_eq!(
            t.duration_since(UNIX_EPOCH).unwrap(),
            Duration::from_millis(86_401_500)
        );
        let t = parse_utc("2026-11-23T01:51:17.017290Z").unwrap();
        // date -u -d 2026-11-23T01:51:17Z +%s
        assert_eq!(
            t.duration_since(UNIX_EPOCH).unwrap().as_secs(),
            1_795_398_677
        );
        assert_eq!(
            t.duration_since(UNIX_EPOCH).unwrap().subsec_micros(),
            17_290
        );
        assert!(parse_utc("yesterday").is_none());
    }
}

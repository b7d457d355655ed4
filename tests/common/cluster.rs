//! A cluster of `troupe` processes: N nodes on their own loopback
//! addresses (127.0.0.11, .12, ...) sharing one Postgres database, one Kafka
//! topic (on a tansu broker started for the test) and one Redis key prefix
//! (the fixtures of `services.rs` and `servers.rs`). [`Cluster::start`]
//! waits until every node's `/ready` lists all of them as live; the test
//! then kills ([`Cluster::kill9`]), stops, restarts and adds nodes, cuts one
//! off ([`ClusterOptions::isolated`], `netns.rs`), and reads the room leases
//! and their history (a trigger of the test's records every lease change).
//! Simulated users chat on it with the load driver (`load.rs`); they learn
//! which nodes are up from the cluster's [`NodeBook`].
//!
//! Node logs go to files under `target/tmp/cluster-logs/<scenario>-<pid>/`;
//! when a test fails, the tail of every node's log is printed and the
//! directory is kept (it is removed after a passing test). The database and
//! the Redis keys are dropped at the end either way.
//!
//! Services: Postgres (`TEST_POSTGRES`, default postgres://root@127.0.0.1:5432),
//! Redis (`TEST_REDIS`, default redis://127.0.0.1:6379) and the tansu binary
//! (`TEST_TANSU`, default ~/.cache/troupe/tansu-0.6.0/bin/tansu). Any of them
//! missing fails the test loudly; nothing is skipped.

use std::collections::{BTreeSet, HashMap};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use super::invariants::{read_history, HistMsg};
use super::netns::{url_endpoint, NetLab};
use super::procs::{free_port_on, note_in_log, run, strip_ansi, tail, warnings, Proc};
use super::servers::Tansu;
use super::services::{redis_url, unique, Database, RedisPrefix};

pub use super::client::{Ws, PASSWORD};

/// Heartbeat and deadline of the test clusters (fast failure detection).
const HEARTBEAT_MS: &str = "200";
const DEADLINE_MS: &str = "1000";
const JOIN_TIMEOUT_MS: &str = "3000";

/// Cluster tests are heavy (several node processes each): they never run at
/// the same time, whatever `--test-threads` says.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

fn ms(d: Duration) -> u128 {
    d.as_millis()
}

/// Where the nodes are and which are up, as the load driver's users see it.
pub struct NodeBook {
    nodes: RwLock<Vec<(SocketAddr, bool)>>,
}

impl NodeBook {
    fn set_up(&self, i: usize, up: bool) {
        self.nodes.write().expect("book")[i].1 = up;
    }

    fn push(&self, addr: SocketAddr, up: bool) {
        self.nodes.write().expect("book").push((addr, up));
    }

    pub fn addr(&self, i: usize) -> SocketAddr {
        self.nodes.read().expect("book")[i].0
    }

    pub fn is_up(&self, i: usize) -> bool {
        self.nodes.read().expect("book")[i].1
    }

    /// The first node up after `after` in round-robin order (`after` itself last).
    pub fn next_up(&self, after: usize) -> Option<usize> {
        let nodes = self.nodes.read().expect("book");
        let n = nodes.len();
        (1..=n).map(|k| (after + k) % n).find(|&i| nodes[i].1)
    }
}

pub struct ClusterNode {
    pub name: String,
    pub http: SocketAddr,
    pub cluster: SocketAddr,
    data_dir: PathBuf,
    pub log: PathBuf,
    proc: Option<Proc>,
    /// Started with `troupe join --seed <this>` instead of `serve`.
    join_seed: Option<String>,
    starts: u32,
    /// The troupe binary, through a link of the test's own (see [`node_binary`]).
    binary: PathBuf,
    /// Run in this network namespace (`ip netns exec`).
    pub netns: Option<String>,
    /// This node's own settings, over the shared environment (its store URLs
    /// when it reaches the stores through forwarders, a wrong cookie, ...).
    env_extra: Vec<(String, String)>,
    /// Not a member of the cluster (a wrong cookie): not expected in any
    /// view, and users never connect to it.
    pub outsider: bool,
}

/// `CARGO_BIN_EXE_troupe` through a symlink named `cluster-node` in `dir`: the
/// test's nodes then neither show up as `troupe` in the process list nor
/// have it in their command line, so a `pkill troupe` (or `pkill -f "troupe
/// serve"`) aimed at other nodes on the machine does not stop them mid-test.
fn node_binary(dir: &Path) -> PathBuf {
    let link = dir.join("cluster-node");
    if !link.exists() {
        std::os::unix::fs::symlink(env!("CARGO_BIN_EXE_troupe"), &link)
            .unwrap_or_else(|e| panic!("linking the troupe binary to {}: {e}", link.display()));
    }
    link
}

impl ClusterNode {
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.http, path)
    }

    pub fn running(&self) -> bool {
        self.proc.as_ref().is_some_and(Proc::running)
    }

    pub fn pid(&self) -> u32 {
        self.proc.as_ref().expect("running").pid()
    }

    pub fn log_text(&self) -> String {
        strip_ansi(&std::fs::read_to_string(&self.log).unwrap_or_default())
    }

    fn spawn(&mut self, env: &[(String, String)], seeds: &str) {
        assert!(!self.running(), "{} is running already", self.name);
        self.starts += 1;
        let how = match &self.join_seed {
            Some(seed) => format!("troupe join --seed {seed}"),
            None => format!("troupe serve (seeds {seeds})"),
        };
        note_in_log(
            &self.log,
            &format!("start #{} of {}: {how}", self.starts, self.name),
        );
        let mut cmd = match &self.netns {
            Some(ns) => {
                // `ip netns exec` execs the binary: the child's pid is the node's.
                let mut cmd = Command::new("ip");
                cmd.args(["netns", "exec", ns]).arg(&self.binary);
                cmd
            }
            None => Command::new(&self.binary),
        };
        match &self.join_seed {
            Some(seed) => {
                cmd.args(["join", "--seed", seed]);
            }
            None => {
                cmd.arg("serve").env("TROUPE_CLUSTER__SEEDS", seeds);
            }
        }
        // Nothing from the caller's environment may configure the node.
        for (key, _) in std::env::vars() {
            if key.starts_with("TROUPE_") {
                cmd.env_remove(key);
            }
        }
        // TEST_CLUSTER_RUST_LOG: more detail in the node logs when debugging.
        let filter = std::env::var("TEST_CLUSTER_RUST_LOG").unwrap_or_else(|_| "info".into());
        cmd.env("RUST_LOG", filter)
            .env("TROUPE_NODE__NAME", &self.name)
            .env("TROUPE_LISTEN", self.http.to_string())
            .env("TROUPE_DATA_DIR", &self.data_dir)
            .env("TROUPE_CLUSTER__LISTEN", self.cluster.to_string());
        for (k, v) in env.iter().chain(&self.env_extra) {
            cmd.env(k, v);
        }
        self.proc = Some(Proc::spawn(&self.name, cmd, &self.log));
    }

    /// Waits for `/health`; panics with the log when the process exits.
    async fn wait_health(&mut self, http: &reqwest::Client) {
        let url = self.url("/health");
        let proc = self.proc.as_mut().expect("started");
        proc.wait_http(http, &url, Duration::from_secs(60)).await;
    }

    fn kill9(&mut self) {
        if let Some(mut proc) = self.proc.take() {
            if proc.running() {
                proc.kill();
                note_in_log(&self.log, &format!("kill -9 {}", self.name));
            }
        }
    }
}

/// What a node's `/ready` answered.
#[derive(Debug, Clone)]
pub struct Readiness {
    pub status: u16,
    pub live: BTreeSet<String>,
    pub quorum: bool,
    pub body: String,
}

pub struct Cluster {
    pub scenario: String,
    pub nodes: Vec<ClusterNode>,
    pub book: Arc<NodeBook>,
    /// The environment every node shares (stores, cookie, timings).
    env: Vec<(String, String)>,
    /// The cluster listeners of the nodes started by [`Cluster::start`].
    seeds: String,
    pub logs: PathBuf,
    data: tempfile::TempDir,
    http: reqwest::Client,
    db: Database,
    _redis: RedisPrefix,
    tansu: Tansu,
    /// The namespace of the isolated node (deleted after the nodes stopped).
    pub net: Option<NetLab>,
    /// An instant and the wall clock then (ms since the epoch).
    clock: (Instant, f64),
    _serial: tokio::sync::MutexGuard<'static, ()>,
}

/// The admin token of every cluster node (`/admin/actors`, `troupe inspect`).
pub const ADMIN_TOKEN: &str = "cluster-admin-token-0123456789";

/// How [`Cluster::start_with`] lays the nodes out.
#[derive(Debug, Clone, Default)]
pub struct ClusterOptions {
    /// Run this node in a network namespace of its own (see [`NetLab`]), so
    /// that [`Cluster::cut`] can partition it from the others. The other
    /// nodes then listen for the cluster on the host end of its cluster link
    /// (and keep their HTTP listeners on 127.0.0.11, ...).
    pub isolated: Option<usize>,
    /// Settings every node gets on top of the harness's (e.g.
    /// `TROUPE_CLUSTER__FORGET_AFTER_S` for a two-node cluster that must
    /// carry on after losing one).
    pub env: Vec<(String, String)>,
}

fn node_ip(i: usize) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(127, 0, 0, 11 + i as u8))
}

/// Ports of the isolated node: its namespace is fresh, so any are free.
const ISOLATED_HTTP_PORT: u16 = 18080;
const ISOLATED_CLUSTER_PORT: u16 = 18081;

impl Cluster {
    /// Starts `n` nodes (`node1`..) on 127.0.0.11.. with shared stores and waits
    /// until every node's `/ready` lists all of them as live.
    pub async fn start(scenario: &str, n: usize) -> Cluster {
        Cluster::start_with(scenario, n, ClusterOptions::default()).await
    }

    /// [`Cluster::start`], laid out as `options` say.
    pub async fn start_with(scenario: &str, n: usize, options: ClusterOptions) -> Cluster {
        let serial = SERIAL.lock().await;
        let clock = (
            Instant::now(),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .expect("a clock after 1970")
                .as_secs_f64()
                * 1000.0,
        );
        let logs = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
            .join("cluster-logs")
            .join(format!("{scenario}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&logs);
        std::fs::create_dir_all(&logs).expect("a log directory");
        let mut net = options.isolated.map(|i| {
            assert!(i < n, "the isolated node {i} is not one of the {n} nodes");
            NetLab::create()
        });
        // With a namespace, tansu listens on the host end of the service link:
        // the host's nodes reach it there as a local address, the isolated
        // node through the link.
        let tansu_ip = net.as_ref().map_or(IpAddr::V4(Ipv4Addr::LOCALHOST), |l| {
            IpAddr::V4(l.service_host)
        });
        let tansu = Tansu::start_on(tansu_ip, &logs).await;
        let db = Database::create("troupe_tcluster");
        let redis = RedisPrefix::new("troupe-tcluster");
        let env: Vec<(String, String)> = [
            ("TROUPE_DATABASE__URL", db.url()),
            ("TROUPE_LOG__KIND", "kafka".into()),
            ("TROUPE_KAFKA__BROKERS", tansu.broker()),
            ("TROUPE_KAFKA__TOPIC", unique("troupe-tcluster-")),
            ("TROUPE_KAFKA__PARTITIONS", "8".into()),
            ("TROUPE_REDIS__URL", redis_url()),
            ("TROUPE_REDIS__PREFIX", redis.prefix.clone()),
            ("TROUPE_CLUSTER__COOKIE", format!("cookie-{}", unique("c"))),
            ("TROUPE_CLUSTER__HEARTBEAT_MS", HEARTBEAT_MS.into()),
            ("TROUPE_CLUSTER__DEADLINE_MS", DEADLINE_MS.into()),
            ("TROUPE_CLUSTER__JOIN_TIMEOUT_MS", JOIN_TIMEOUT_MS.into()),
            // Every login of a test comes from 127.0.0.1.
            ("TROUPE_LIMITS__LOGINS_PER_MINUTE", "100000".into()),
            ("TROUPE_RATE_LIMITS__REGISTER__BURST", "100000".into()),
            // Fast password hashes: dozens of accounts per test.
            ("TROUPE_AUTH__SCRYPT_LOG_N", "10".into()),
            ("TROUPE_ADMIN__TOKEN", ADMIN_TOKEN.into()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .chain(options.env.iter().cloned())
        .collect();
        // The isolated node reaches Postgres and Redis (on host loopback)
        // through forwarders on the host end of its service link.
        let mut isolated_env = Vec::new();
        if let Some(lab) = net.as_mut() {
            let (pg, pg_template) = url_endpoint(&db.url(), 5432);
            let pg_fwd = lab.forward(pg).await;
            let (redis, redis_template) = url_endpoint(&redis_url(), 6379);
            let redis_fwd = lab.forward(redis).await;
            isolated_env.push((
                "TROUPE_DATABASE__URL".to_string(),
                pg_template.replace("{}", &pg_fwd.to_string()),
            ));
            isolated_env.push((
                "TROUPE_REDIS__URL".to_string(),
                redis_template.replace("{}", &redis_fwd.to_string()),
            ));
        }
        let data = tempfile::tempdir().expect("a temp dir");
        let mut cluster = Cluster {
            scenario: scenario.to_string(),
            nodes: Vec::new(),
            book: Arc::new(NodeBook {
                nodes: RwLock::new(Vec::new()),
            }),
            env,
            seeds: String::new(),
            logs,
            data,
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(15))
                .build()
                .expect("an HTTP client"),
            db,
            _redis: redis,
            tansu,
            net,
            clock,
            _serial: serial,
        };
        for i in 0..n {
            let mut node = cluster.new_node(i, None);
            if let Some(lab) = &cluster.net {
                if options.isolated == Some(i) {
                    node.http = SocketAddr::new(IpAddr::V4(lab.service_ns), ISOLATED_HTTP_PORT);
                    node.cluster =
                        SocketAddr::new(IpAddr::V4(lab.cluster_ns), ISOLATED_CLUSTER_PORT);
                    node.netns = Some(lab.ns.clone());
                    node.env_extra = isolated_env.clone();
                } else {
                    let ip = IpAddr::V4(lab.cluster_host);
                    node.cluster = SocketAddr::new(ip, free_port_on(ip));
                }
            }
            cluster.nodes.push(node);
        }
        cluster.seeds = cluster
            .nodes
            .iter()
            .map(|n| n.cluster.to_string())
            .collect::<Vec<_>>()
            .join(",");
        for i in 0..n {
            let seeds = cluster.seeds.clone();
            cluster.nodes[i].spawn(&cluster.env, &seeds);
        }
        for i in 0..n {
            let http = cluster.http.clone();
            cluster.nodes[i].wait_health(&http).await;
        }
        let t0 = Instant::now();
        cluster.wait_converged(Duration::from_secs(60)).await;
        for node in &cluster.nodes {
            cluster.book.push(node.http, true);
        }
        // The nodes have migrated the database: audit the leases from now on.
        run(
            "installing the lease audit trigger",
            Command::new("psql")
                .arg(cluster.db.url())
                .args(["-qc", LEASE_AUDIT]),
        );
        println!(
            "[{scenario}] {n} nodes converged in {} ms: {}",
            ms(t0.elapsed()),
            cluster
                .nodes
                .iter()
                .map(|n| format!(
                    "{}=http://{} cluster={}{}",
                    n.name,
                    n.http,
                    n.cluster,
                    n.netns
                        .as_ref()
                        .map_or(String::new(), |ns| format!(" (netns {ns})"))
                ))
                .collect::<Vec<_>>()
                .join(" ")
        );
        cluster
    }

    fn new_node(&self, i: usize, join_seed: Option<String>) -> ClusterNode {
        let ip = node_ip(i);
        let name = format!("node{}", i + 1);
        let data_dir = self.data.path().join(&name);
        std::fs::create_dir_all(&data_dir).expect("a data dir");
        ClusterNode {
            http: SocketAddr::new(ip, free_port_on(ip)),
            cluster: SocketAddr::new(ip, free_port_on(ip)),
            data_dir,
            log: self.logs.join(format!("{name}.log")),
            name,
            proc: None,
            join_seed,
            starts: 0,
            binary: node_binary(self.data.path()),
            netns: None,
            env_extra: Vec::new(),
            outsider: false,
        }
    }

    pub fn http(&self) -> &reqwest::Client {
        &self.http
    }

    pub fn database_url(&self) -> String {
        self.db.url()
    }

    /// Names of the members (not outsiders) whose process runs.
    pub fn running_names(&self) -> BTreeSet<String> {
        self.nodes
            .iter()
            .filter(|n| n.running() && !n.outsider)
            .map(|n| n.name.clone())
            .collect()
    }

    pub fn index_of(&self, name: &str) -> usize {
        self.nodes
            .iter()
            .position(|n| n.name == name)
            .unwrap_or_else(|| panic!("no node {name}"))
    }

    /// One node's `/ready`.
    pub async fn ready(&self, i: usize) -> Option<Readiness> {
        let r = self
            .http
            .get(self.nodes[i].url("/ready"))
            .send()
            .await
            .ok()?;
        let status = r.status().as_u16();
        let body = r.text().await.ok()?;
        let v: Value = serde_json::from_str(&body).unwrap_or(Value::Null);
        let live = v["cluster"]["live"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|s| s.as_str().map(String::from))
                    .collect()
            })
            .unwrap_or_default();
        Some(Readiness {
            status,
            live,
            quorum: v["cluster"]["quorum"].as_bool().unwrap_or(false),
            body,
        })
    }

    /// Waits until every running node's `/ready` is 200 and lists exactly
    /// the running nodes as live.
    pub async fn wait_converged(&self, within: Duration) {
        let expected = self.running_names();
        let deadline = Instant::now() + within;
        loop {
            let mut last = Vec::new();
            let mut all = true;
            for (i, node) in self.nodes.iter().enumerate() {
                if !node.running() || node.outsider {
                    continue;
                }
                let r = self.ready(i).await;
                let ok = r
                    .as_ref()
                    .is_some_and(|r| r.status == 200 && r.live == expected);
                all &= ok;
                last.push(format!(
                    "{}: {}",
                    node.name,
                    r.map(|r| format!("{} {}", r.status, r.body))
                        .unwrap_or_else(|| "no answer".into())
                ));
            }
            if all {
                return;
            }
            if Instant::now() > deadline {
                panic!(
                    "[{}] the nodes did not all report live = {expected:?} within {within:?}; last /ready answers:\n{}",
                    self.scenario,
                    last.join("\n")
                );
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// `kill -9` node `i`; the moment it died. Users stop reconnecting to it.
    pub fn kill9(&mut self, i: usize) -> Instant {
        self.book.set_up(i, false);
        self.nodes[i].kill9();
        Instant::now()
    }

    /// SIGTERM node `i` and waits for it to exit (at most 60 s); its exit
    /// status. Users stop reconnecting to it first.
    pub async fn sigterm(&mut self, i: usize) -> ExitStatus {
        self.book.set_up(i, false);
        let node = &mut self.nodes[i];
        note_in_log(&node.log, &format!("SIGTERM {}", node.name));
        let mut proc = node.proc.take().expect("running");
        proc.terminate_within(Duration::from_secs(60)).await
    }

    /// Starts node `i` again (same name, addresses, command) and waits until
    /// every running node lists it; then users may reconnect to it.
    pub async fn restart(&mut self, i: usize) {
        let seeds = self.seeds.clone();
        self.nodes[i].spawn(&self.env, &seeds);
        let http = self.http.clone();
        self.nodes[i].wait_health(&http).await;
        self.wait_converged(Duration::from_secs(60)).await;
        self.book.set_up(i, true);
    }

    /// `troupe join --seed <the first running node's cluster listener>` a new node; waits until
    /// every running node lists it. Its index.
    pub async fn add_node_with_join(&mut self) -> usize {
        let i = self.nodes.len();
        let seed = self
            .nodes
            .iter()
            .find(|n| n.running())
            .expect("a running node to join through")
            .cluster
            .to_string();
        let mut node = self.new_node(i, Some(seed));
        node.spawn(&self.env, "");
        let http = self.http.clone();
        node.wait_health(&http).await;
        self.nodes.push(node);
        self.wait_converged(Duration::from_secs(60)).await;
        self.book.push(self.nodes[i].http, true);
        i
    }

    /// Starts a node that is not a member: seeded with the cluster's nodes,
    /// with `env` over the shared environment (e.g. another cookie). It is
    /// kept out of [`Cluster::running_names`] and users never connect to it.
    /// Waits for its `/health`; its index.
    pub async fn start_outsider(&mut self, env: &[(&str, &str)]) -> usize {
        let i = self.nodes.len();
        let mut node = self.new_node(i, None);
        node.outsider = true;
        node.env_extra = env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let seeds = self.seeds.clone();
        node.spawn(&self.env, &seeds);
        let http = self.http.clone();
        node.wait_health(&http).await;
        self.book.push(node.http, false);
        self.nodes.push(node);
        i
    }

    /// The cluster's cookie (to check that no log shows it).
    pub fn cookie(&self) -> String {
        self.env
            .iter()
            .find(|(k, _)| k == "TROUPE_CLUSTER__COOKIE")
            .map(|(_, v)| v.clone())
            .expect("a cookie")
    }

    /// Cuts node `i` (the isolated one) off from the others: its cluster
    /// link goes down; users stop reconnecting to it (as a load balancer
    /// that follows `/ready`'s quorum would), but its open connections stay.
    /// The moment of the cut.
    pub fn cut(&self, i: usize) -> Instant {
        let lab = self.isolated_lab(i);
        self.book.set_up(i, false);
        lab.cut();
        let t = Instant::now();
        self.note(i, "cluster link cut");
        t
    }

    /// Brings node `i`'s cluster link back up; the moment. Users reconnect
    /// to it again after [`Cluster::set_reachable`].
    pub fn heal(&self, i: usize) -> Instant {
        self.isolated_lab(i).heal();
        let t = Instant::now();
        self.note(i, "cluster link healed");
        t
    }

    /// Whether users may (re)connect to node `i`.
    pub fn set_reachable(&self, i: usize, up: bool) {
        self.book.set_up(i, up);
    }

    fn isolated_lab(&self, i: usize) -> &NetLab {
        let lab = self
            .net
            .as_ref()
            .expect("a cluster started with ClusterOptions::isolated");
        assert_eq!(
            self.nodes[i].netns.as_deref(),
            Some(lab.ns.as_str()),
            "{} is not the isolated node",
            self.nodes[i].name
        );
        lab
    }

    /// A line in every node's log (what the harness did, and when).
    pub fn note(&self, i: usize, what: &str) {
        for node in &self.nodes {
            note_in_log(&node.log, &format!("{}: {what}", self.nodes[i].name));
        }
    }

    /// Every change of `room_leases` since the cluster started, in order
    /// (recorded by a trigger of the test's, see [`Cluster::start_with`]).
    pub fn lease_history(&self) -> Vec<LeaseChange> {
        let out = run(
            "reading harness_lease_log",
            Command::new("psql").arg(self.db.url()).args([
                "-Atc",
                "SELECT room, coalesce(owner, ''), epoch, \
                 (extract(epoch FROM at) * 1000)::double precision \
                 FROM harness_lease_log ORDER BY id",
            ]),
        );
        out.lines()
            .filter(|l| !l.is_empty())
            .map(|l| {
                let parts: Vec<&str> = l.split('|').collect();
                assert_eq!(parts.len(), 4, "harness_lease_log row {l:?}");
                LeaseChange {
                    room: parts[0].to_string(),
                    owner: (!parts[1].is_empty()).then(|| parts[1].to_string()),
                    epoch: parts[2].parse().unwrap_or(0),
                    at_ms: parts[3].parse().unwrap_or(0.0),
                }
            })
            .collect()
    }

    /// [`Cluster::lease_history`] with each lease taken dated no earlier than
    /// its taker logged "room lease taken" (after the commit). The audit
    /// trigger stamps a change before its transaction commits, and other
    /// nodes see it only from the commit, which a loaded Postgres delays by
    /// 100 ms and more: a node that checks its lease in between still holds
    /// it, rightly.
    pub fn lease_history_committed(&self) -> Vec<LeaseChange> {
        let mut taken: HashMap<(String, String, u64), f64> = HashMap::new();
        for node in &self.nodes {
            for line in node.log_text().lines() {
                if !line.contains("room lease taken") {
                    continue;
                }
                let Some(at) = line
                    .split_whitespace()
                    .next()
                    .and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok())
                else {
                    continue;
                };
                let field = |key: &str| {
                    line.split_whitespace()
                        .find_map(|w| w.strip_prefix(key)?.strip_prefix('='))
                };
                let epoch = field("epoch").and_then(|e| e.parse::<u64>().ok());
                if let (Some(room), Some(owner), Some(epoch)) =
                    (field("room"), field("node"), epoch)
                {
                    let ms = at.timestamp_micros() as f64 / 1000.0;
                    taken.insert((room.to_string(), owner.to_string(), epoch), ms);
                }
            }
        }
        let mut changes = self.lease_history();
        for c in &mut changes {
            if let Some(owner) = &c.owner {
                if let Some(&logged) = taken.get(&(c.room.clone(), owner.clone(), c.epoch)) {
                    c.at_ms = c.at_ms.max(logged);
                }
            }
        }
        changes
    }

    /// `t` on the wall clock (ms since the epoch), as Postgres stamps it.
    pub fn wall_ms(&self, t: Instant) -> f64 {
        let (base, base_ms) = self.clock;
        if t >= base {
            base_ms + t.duration_since(base).as_secs_f64() * 1000.0
        } else {
            base_ms - base.duration_since(t).as_secs_f64() * 1000.0
        }
    }

    /// `room_leases` rows: (room, owner, epoch).
    pub fn room_leases(&self) -> Vec<(String, Option<String>, u64)> {
        let out = run(
            "reading room_leases",
            Command::new("psql").arg(self.db.url()).args([
                "-Atc",
                "SELECT room, coalesce(owner, ''), epoch FROM room_leases ORDER BY room",
            ]),
        );
        parse_leases(&out)
    }

    /// Rooms whose lease `node` holds.
    pub fn rooms_owned_by(&self, node: &str) -> BTreeSet<String> {
        self.room_leases()
            .into_iter()
            .filter(|(_, owner, _)| owner.as_deref() == Some(node))
            .map(|(room, _, _)| room)
            .collect()
    }

    fn any_up(&self) -> usize {
        (0..self.nodes.len())
            .find(|&i| self.book.is_up(i))
            .expect("a node up")
    }

    /// Registers `user` and logs in through node `i`; the login token.
    pub async fn account(&self, i: usize, user: &str) -> String {
        let node = &self.nodes[i];
        let body = json!({"username": user, "password": PASSWORD});
        let r = self
            .http
            .post(node.url("/api/v1/register"))
            .json(&body)
            .send()
            .await
            .unwrap_or_else(|e| panic!("register {user} on {}: {e}", node.name));
        let status = r.status();
        assert_eq!(
            status,
            201,
            "register {user} on {}: {}",
            node.name,
            r.text().await.unwrap_or_default()
        );
        let r = self
            .http
            .post(node.url("/api/v1/login"))
            .json(&body)
            .send()
            .await
            .unwrap_or_else(|e| panic!("login {user} on {}: {e}", node.name));
        let status = r.status();
        let text = r.text().await.unwrap_or_default();
        assert_eq!(status, 200, "login {user} on {}: {text}", node.name);
        let v: Value = serde_json::from_str(&text).expect("login JSON");
        v["token"].as_str().expect("a token").to_string()
    }

    /// Every message of `room` (REST, pages of 200, through any live node).
    pub async fn history(&self, room: &str, token: &str) -> Result<Vec<HistMsg>, String> {
        let node = &self.nodes[self.any_up()];
        read_history(&self.http, &node.url(""), token, room).await
    }

    /// (name, text) of every node's log and of tansu's.
    pub fn all_logs(&self) -> Vec<(String, String)> {
        let mut logs: Vec<(String, String)> = self
            .nodes
            .iter()
            .map(|n| (n.name.clone(), n.log_text()))
            .collect();
        logs.push((
            "tansu".into(),
            strip_ansi(&std::fs::read_to_string(self.tansu.log()).unwrap_or_default()),
        ));
        logs
    }

    /// Every node's log tail (warnings and errors, then the last lines).
    pub fn dump_logs(&self) {
        for node in &self.nodes {
            let text = node.log_text();
            eprintln!(
                "\n===== {} ({}), log {} =====\n--- last warnings/errors ---\n{}\n--- last lines ---\n{}",
                node.name,
                if node.running() { "running" } else { "stopped" },
                node.log.display(),
                warnings(&text, 30),
                tail(&text, 40)
            );
        }
        eprintln!(
            "\n===== tansu, log {} =====\n{}",
            self.tansu.log().display(),
            tail(
                &strip_ansi(&std::fs::read_to_string(self.tansu.log()).unwrap_or_default()),
                15
            )
        );
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let failed = std::thread::panicking();
        for node in &mut self.nodes {
            node.kill9();
        }
        if failed {
            self.dump_logs();
            eprintln!(
                "\n[{}] node logs kept in {}",
                self.scenario,
                self.logs.display()
            );
        } else {
            let _ = std::fs::remove_dir_all(&self.logs);
        }
    }
}

fn parse_leases(out: &str) -> Vec<(String, Option<String>, u64)> {
    out.lines()
        .filter(|l| !l.is_empty())
        .map(|l| {
            let parts: Vec<&str> = l.split('|').collect();
            assert_eq!(parts.len(), 3, "room_leases row {l:?}");
            let owner = (!parts[1].is_empty()).then(|| parts[1].to_string());
            (parts[0].to_string(), owner, parts[2].parse().unwrap_or(0))
        })
        .collect()
}

/// One write to `room_leases`, stamped by Postgres (`clock_timestamp()`).
#[derive(Debug, Clone)]
pub struct LeaseChange {
    pub room: String,
    pub owner: Option<String>,
    pub epoch: u64,
    /// Wall clock, ms since the epoch (compare with [`Cluster::wall_ms`]).
    pub at_ms: f64,
}

/// Records every write to `room_leases` (they run on the shared Postgres'
/// clock, which is this machine's) into `harness_lease_log`.
const LEASE_AUDIT: &str = "\
CREATE TABLE harness_lease_log (id bigserial PRIMARY KEY, room text NOT NULL, owner text, \
  epoch bigint NOT NULL, at timestamptz NOT NULL DEFAULT clock_timestamp()); \
CREATE FUNCTION harness_lease_log() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN \
  INSERT INTO harness_lease_log (room, owner, epoch) VALUES (NEW.room, NEW.owner, NEW.epoch); \
  RETURN NEW; END $$; \
CREATE TRIGGER harness_lease_log AFTER INSERT OR UPDATE ON room_leases \
  FOR EACH ROW EXECUTE FUNCTION harness_lease_log();";

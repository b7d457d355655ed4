//! A multi-process cluster harness: N `troupe` nodes on their own loopback
//! addresses (127.0.0.11, .12, ...) sharing one Postgres database, one Kafka
//! topic (on a tansu broker started for the test) and one Redis key prefix,
//! plus a load driver: simulated users, one tokio task and one real WebSocket
//! each, that chat continuously, resend what was not acked (same client_id),
//! reconnect round-robin to the next live node and `resume` there, and record
//! everything they see. [`Load::finish`] drains the traffic, reads history
//! through REST and checks the delivery invariants.
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
//!
//! Partitions ([`ClusterOptions::isolated`], needs root and `ip netns`): one
//! node runs in a network namespace of its own, reached through two veth
//! pairs, a *cluster link* (its `cluster.listen`, and the other nodes'
//! listeners on the host end of that link) and a *service link* (its HTTP
//! listener, and the stores: tansu listens on the host end, Postgres and
//! Redis through TCP forwarders in the test process). [`Cluster::cut`] takes
//! the cluster link down, [`Cluster::heal`] brings it back; the service link
//! stays up, so the cut-off node keeps its stores and its clients. The
//! namespace and the links are deleted at the end, even after a panic.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio::net::{TcpListener as TokioListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

pub type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

pub const PASSWORD: &str = "correct horse";
/// Heartbeat and deadline of the test clusters (fast failure detection).
const HEARTBEAT_MS: &str = "200";
const DEADLINE_MS: &str = "1000";
const JOIN_TIMEOUT_MS: &str = "3000";
/// Unanswered sends a user keeps at once; past it, it skips new sends.
const WINDOW: usize = 16;
/// A send with no answer for this long is sent again (same client_id).
const RESEND_AFTER: Duration = Duration::from_secs(4);
/// After an `unavailable` answer, the send is retried after this long.
const RETRY_UNAVAILABLE: Duration = Duration::from_millis(150);
/// After this many `unavailable` answers in a row to the same send (or one
/// saying the node cannot reach a majority), the user moves to the next node.
const SWITCH_AFTER_UNAVAILABLE: u32 = 3;
/// A `resume` must be answered with `resumed` within this long.
const RESUME_WITHIN: Duration = Duration::from_secs(20);
/// A user that cannot resume anywhere for this long gives up (and the
/// invariants report it).
const RECONNECT_GIVE_UP: Duration = Duration::from_secs(90);

/// Cluster tests are heavy (several node processes each): they never run at
/// the same time, whatever `--test-threads` says.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());
static UNIQUE: AtomicU32 = AtomicU32::new(0);

fn unique(what: &str) -> String {
    format!(
        "{what}{}_{}",
        std::process::id(),
        UNIQUE.fetch_add(1, Ordering::Relaxed)
    )
}

fn postgres_base() -> String {
    std::env::var("TEST_POSTGRES").unwrap_or_else(|_| "postgres://root@127.0.0.1:5432".into())
}

fn redis_url() -> String {
    std::env::var("TEST_REDIS").unwrap_or_else(|_| "redis://127.0.0.1:6379".into())
}

fn tansu_binary() -> String {
    let bin = match std::env::var("TEST_TANSU") {
        Ok(bin) => bin,
        Err(_) => {
            let home = std::env::var("HOME").unwrap_or_default();
            let default = format!("{home}/.cache/troupe/tansu-0.6.0/bin/tansu");
            if !Path::new(&default).is_file() {
                panic!(
                    "TEST_TANSU is not set and {default} does not exist: the cluster tests need the \
                     tansu broker (TEST_TANSU=$(scripts/install-tansu.sh) cargo test --test cluster)"
                );
            }
            default
        }
    };
    assert!(
        Path::new(&bin).is_file(),
        "TEST_TANSU={bin} is not a file (scripts/install-tansu.sh installs tansu and prints its path)"
    );
    bin
}

/// A free port on `ip`.
fn free_port(ip: IpAddr) -> u16 {
    TcpListener::bind((ip, 0))
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap_or_else(|e| panic!("no free port on {ip}: {e}"))
}

/// Runs a command to completion; panics with its output when it fails.
fn run(what: &str, cmd: &mut Command) -> String {
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("{what}: cannot run {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{what} failed ({}):\n{}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn strip_ansi(text: &str) -> String {
    let mut plain = String::with_capacity(text.len());
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for c in chars.by_ref() {
                if c == 'm' {
                    break;
                }
            }
        } else {
            plain.push(c);
        }
    }
    plain
}

fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

fn ms(d: Duration) -> u128 {
    d.as_millis()
}

// ---------------------------------------------------------------------------
// Shared servers

/// The tansu broker of one test (`memory://` storage), killed at the end.
struct Tansu {
    ip: IpAddr,
    port: u16,
    child: Option<Child>,
    log: PathBuf,
}

impl Tansu {
    /// Listens on (and advertises) `ip`: Kafka clients connect to the
    /// advertised address after the bootstrap, so it must be one every node
    /// reaches.
    async fn start(logs: &Path, ip: IpAddr) -> Tansu {
        let port = free_port(ip);
        let url = format!("tcp://{ip}:{port}");
        let log = logs.join("tansu.log");
        let out = File::create(&log).expect("a log file");
        let err = out.try_clone().expect("a log file");
        let bin = tansu_binary();
        let child = Command::new(&bin)
            .args([
                "broker",
                "--listener-url",
                &url,
                "--advertised-listener-url",
            ])
            .arg(&url)
            .args(["--storage-engine", "memory://tansu/"])
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .unwrap_or_else(|e| panic!("tansu ({bin}) does not start: {e}"));
        let mut tansu = Tansu {
            ip,
            port,
            child: Some(child),
            log,
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let connect = TcpStream::connect((ip, port));
            if let Ok(Ok(_)) = tokio::time::timeout(Duration::from_millis(300), connect).await {
                return tansu;
            }
            if let Some(status) = tansu
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                panic!(
                    "tansu exited with {status} at start:\n{}",
                    tail(&std::fs::read_to_string(&tansu.log).unwrap_or_default(), 40)
                );
            }
            if Instant::now() > deadline {
                panic!(
                    "tansu does not accept connections on {ip}:{port} within 20 s:\n{}",
                    tail(&std::fs::read_to_string(&tansu.log).unwrap_or_default(), 40)
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    fn broker(&self) -> String {
        SocketAddr::new(self.ip, self.port).to_string()
    }
}

impl Drop for Tansu {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// A fresh database on the shared Postgres, dropped at the end.
struct Database {
    name: String,
}

impl Database {
    fn create() -> Database {
        let base = postgres_base();
        let name = unique("troupe_tcluster");
        run(
            &format!("creating database {name} on the shared Postgres at {base} (is it running?)"),
            Command::new("psql")
                .arg(format!("{base}/postgres"))
                .args(["-qc", &format!("CREATE DATABASE {name}")]),
        );
        Database { name }
    }

    fn url(&self) -> String {
        format!("{}/{}", postgres_base(), self.name)
    }
}

impl Drop for Database {
    fn drop(&mut self) {
        let _ = Command::new("psql")
            .arg(format!("{}/postgres", postgres_base()))
            .args([
                "-qc",
                &format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.name),
            ])
            .stdin(Stdio::null())
            .output();
    }
}

/// A key prefix on the shared Redis; its keys are deleted at the end.
struct RedisPrefix {
    prefix: String,
}

impl RedisPrefix {
    fn new() -> RedisPrefix {
        let url = redis_url();
        let out = Command::new("redis-cli")
            .args(["-u", &url, "ping"])
            .stdin(Stdio::null())
            .output()
            .expect("redis-cli runs (the cluster tests need the Redis client)");
        assert!(
            String::from_utf8_lossy(&out.stdout).contains("PONG"),
            "the shared Redis at {url} does not answer: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        RedisPrefix {
            prefix: format!("{}:", unique("troupe-tcluster")),
        }
    }
}

impl Drop for RedisPrefix {
    fn drop(&mut self) {
        let url = redis_url();
        let script = format!(
            "redis-cli -u {url} --scan --pattern '{}*' | xargs -r -n 500 redis-cli -u {url} del",
            self.prefix
        );
        let _ = Command::new("sh")
            .args(["-c", &script])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}

// ---------------------------------------------------------------------------
// Network namespaces (partitions)

/// `host:port` of a `scheme://[user@]host[:port][/...]` URL, and the URL with
/// that part replaced by `{}`.
fn url_endpoint(url: &str, default_port: u16) -> (SocketAddr, String) {
    let (scheme, rest) = url
        .split_once("://")
        .unwrap_or_else(|| panic!("{url}: not a scheme://host URL"));
    let end = rest.find(['/', '?']).unwrap_or(rest.len());
    let authority = &rest[..end];
    let at = authority.rfind('@').map_or(0, |i| i + 1);
    let hostport = &authority[at..];
    let (host, port) = match hostport.rsplit_once(':') {
        Some((h, p)) => (h, p.parse().unwrap_or_else(|_| panic!("{url}: bad port"))),
        None => (hostport, default_port),
    };
    let ip: IpAddr = match host {
        "localhost" => IpAddr::V4(Ipv4Addr::LOCALHOST),
        h => h
            .parse()
            .unwrap_or_else(|_| panic!("{url}: the partition tests need an IP address host")),
    };
    let template = format!("{scheme}://{}{{}}{}", &authority[..at], &rest[end..]);
    (SocketAddr::new(ip, port), template)
}

/// Runs `ip ARGS`; panics loudly (never skips) when it fails.
fn ip_cmd(args: &[&str]) {
    run(
        &format!(
            "`ip {}` (the partition tests need root and iproute2 with `ip netns`)",
            args.join(" ")
        ),
        Command::new("ip").args(args),
    );
}

/// `ip ARGS`, ignoring failure (clean-up).
fn ip_quiet(args: &[&str]) {
    let _ = Command::new("ip")
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
}

/// A network namespace for one node, with a cluster link and a service link
/// (veth pairs) to the host, and TCP forwarders from the host end of the
/// service link to the stores on host loopback. Everything is deleted on drop.
pub struct NetLab {
    pub ns: String,
    /// Host end and namespace end of the cluster link.
    pub cluster_host_if: String,
    pub cluster_ns_if: String,
    pub service_host_if: String,
    pub service_ns_if: String,
    pub cluster_host: Ipv4Addr,
    pub cluster_ns: Ipv4Addr,
    pub service_host: Ipv4Addr,
    pub service_ns: Ipv4Addr,
    forwarders: Vec<JoinHandle<()>>,
}

impl NetLab {
    /// Namespace `tp<pid>`; subnets 10.A.B.0/24 (cluster) and 10.A.B+1.0/24
    /// (service), derived from the pid.
    pub fn create() -> NetLab {
        let pid = std::process::id();
        let k = pid % 4096;
        let (a, b) = (100 + (k >> 7) as u8, 2 * (k & 127) as u8);
        let lab = NetLab {
            ns: format!("tp{pid}"),
            cluster_host_if: format!("tpc{pid}h"),
            cluster_ns_if: format!("tpc{pid}n"),
            service_host_if: format!("tps{pid}h"),
            service_ns_if: format!("tps{pid}n"),
            cluster_host: Ipv4Addr::new(10, a, b, 1),
            cluster_ns: Ipv4Addr::new(10, a, b, 2),
            service_host: Ipv4Addr::new(10, a, b + 1, 1),
            service_ns: Ipv4Addr::new(10, a, b + 1, 2),
            forwarders: Vec::new(),
        };
        // Left over by a run of the same pid that was killed: start clean.
        lab.delete();
        let ns = lab.ns.as_str();
        ip_cmd(&["netns", "add", ns]);
        ip_cmd(&["-n", ns, "link", "set", "lo", "up"]);
        for (host_if, ns_if, host_ip, ns_ip) in [
            (
                &lab.cluster_host_if,
                &lab.cluster_ns_if,
                lab.cluster_host,
                lab.cluster_ns,
            ),
            (
                &lab.service_host_if,
                &lab.service_ns_if,
                lab.service_host,
                lab.service_ns,
            ),
        ] {
            ip_cmd(&[
                "link", "add", host_if, "type", "veth", "peer", "name", ns_if,
            ]);
            ip_cmd(&["link", "set", ns_if, "netns", ns]);
            ip_cmd(&["addr", "add", &format!("{host_ip}/24"), "dev", host_if]);
            ip_cmd(&["link", "set", host_if, "up"]);
            ip_cmd(&[
                "-n",
                ns,
                "addr",
                "add",
                &format!("{ns_ip}/24"),
                "dev",
                ns_if,
            ]);
            ip_cmd(&["-n", ns, "link", "set", ns_if, "up"]);
        }
        lab
    }

    fn delete(&self) {
        // Deleting one end of a veth pair deletes both.
        ip_quiet(&["link", "del", &self.cluster_host_if]);
        ip_quiet(&["link", "del", &self.service_host_if]);
        ip_quiet(&["netns", "del", &self.ns]);
    }

    /// Cuts the cluster link: packets between the namespace and the host
    /// end are dropped from now on (established TCP connections hang, no
    /// RST). The namespace end goes down, not the host end: with the host end
    /// down, the host's route to the link's subnet goes away and connections
    /// to the cut-off node leave through the default route, whose gateway (in
    /// this sandbox) accepts any TCP connection. This way the host keeps its
    /// own address on the link (the other nodes listen there) and reaches
    /// the namespace end no more (new connections: "no route to host").
    pub fn cut(&self) {
        ip_cmd(&["-n", &self.ns, "link", "set", &self.cluster_ns_if, "down"]);
    }

    pub fn heal(&self) {
        ip_cmd(&["-n", &self.ns, "link", "set", &self.cluster_ns_if, "up"]);
    }

    /// A TCP forwarder from the host end of the service link to `target`;
    /// the address it listens on.
    pub async fn forward(&mut self, target: SocketAddr) -> SocketAddr {
        let listener = TokioListener::bind((self.service_host, 0))
            .await
            .unwrap_or_else(|e| panic!("a forwarder on {}: {e}", self.service_host));
        let addr = listener.local_addr().expect("a local address");
        self.forwarders.push(tokio::spawn(async move {
            // Dropped (and its connections with it) when the forwarder is aborted.
            let mut conns = tokio::task::JoinSet::new();
            loop {
                let Ok((mut inbound, _)) = listener.accept().await else {
                    continue;
                };
                conns.spawn(async move {
                    if let Ok(mut outbound) = TcpStream::connect(target).await {
                        let _ = inbound.set_nodelay(true);
                        let _ = outbound.set_nodelay(true);
                        let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                    }
                });
                while conns.try_join_next().is_some() {}
            }
        }));
        addr
    }
}

impl Drop for NetLab {
    fn drop(&mut self) {
        for f in &self.forwarders {
            f.abort();
        }
        self.delete();
    }
}

// ---------------------------------------------------------------------------
// Nodes

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
    child: Option<Child>,
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
        self.child.is_some()
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("running").id()
    }

    pub fn log_text(&self) -> String {
        strip_ansi(&std::fs::read_to_string(&self.log).unwrap_or_default())
    }

    fn spawn(&mut self, env: &[(String, String)], seeds: &str) {
        assert!(self.child.is_none(), "{} is running already", self.name);
        self.starts += 1;
        let mut log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .expect("a log file");
        let how = match &self.join_seed {
            Some(seed) => format!("troupe join --seed {seed}"),
            None => format!("troupe serve (seeds {seeds})"),
        };
        let _ = writeln!(
            log,
            "===== harness: start #{} of {}: {how} =====",
            self.starts, self.name
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
        let err = log.try_clone().expect("a log file");
        cmd.stdin(Stdio::null()).stdout(log).stderr(err);
        self.child =
            Some(cmd.spawn().unwrap_or_else(|e| {
                panic!("{}: the troupe binary does not start: {e}", self.name)
            }));
    }

    /// Waits for `/health`; panics with the log when the process exits.
    async fn wait_health(&mut self, http: &reqwest::Client) {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Ok(r) = http.get(self.url("/health")).send().await {
                if r.status().is_success() {
                    return;
                }
            }
            if let Some(status) = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                self.child = None;
                panic!(
                    "{} exited with {status} at start:\n{}",
                    self.name,
                    tail(&self.log_text(), 40)
                );
            }
            if Instant::now() > deadline {
                panic!(
                    "{} did not answer /health within 60 s:\n{}",
                    self.name,
                    tail(&self.log_text(), 40)
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
            if let Ok(mut log) = OpenOptions::new().append(true).open(&self.log) {
                let _ = writeln!(log, "===== harness: kill -9 {} =====", self.name);
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
        let tansu = Tansu::start(&logs, tansu_ip).await;
        let db = Database::create();
        let redis = RedisPrefix::new();
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
                    node.cluster = SocketAddr::new(ip, free_port(ip));
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
            http: SocketAddr::new(ip, free_port(ip)),
            cluster: SocketAddr::new(ip, free_port(ip)),
            data_dir,
            log: self.logs.join(format!("{name}.log")),
            name,
            child: None,
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
        if let Ok(mut log) = OpenOptions::new().append(true).open(&node.log) {
            let _ = writeln!(log, "===== harness: SIGTERM {} =====", node.name);
        }
        run(
            "kill -TERM",
            Command::new("kill")
                .arg("-TERM")
                .arg(node.pid().to_string()),
        );
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let status = node
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten());
            if let Some(status) = status {
                node.child = None;
                return status;
            }
            if Instant::now() > deadline {
                node.kill9();
                panic!("{} did not exit within 60 s of SIGTERM", node.name);
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
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
            if let Ok(mut log) = OpenOptions::new().append(true).open(&node.log) {
                let _ = writeln!(log, "===== harness: {}: {what} =====", self.nodes[i].name);
            }
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
        let mut out: Vec<HistMsg> = Vec::new();
        let mut after = 0u64;
        let i = self.any_up();
        loop {
            let url = self.nodes[i].url(&format!(
                "/api/v1/rooms/{room}/messages?after={after}&limit=200"
            ));
            let r = self
                .http
                .get(&url)
                .bearer_auth(token)
                .send()
                .await
                .map_err(|e| format!("GET {url}: {e}"))?;
            let status = r.status();
            let text = r.text().await.unwrap_or_default();
            if status != 200 {
                return Err(format!("GET {url}: {status} {text}"));
            }
            let v: Value =
                serde_json::from_str(&text).map_err(|e| format!("GET {url}: {e}: {text}"))?;
            let page = v["messages"].as_array().cloned().unwrap_or_default();
            if page.is_empty() {
                return Ok(out);
            }
            for m in &page {
                let seq = m["seq"].as_u64().unwrap_or(0);
                out.push(HistMsg {
                    seq,
                    client_id: m["client_id"].as_str().unwrap_or_default().to_string(),
                    from: m["from"].as_str().unwrap_or_default().to_string(),
                });
                after = after.max(seq);
            }
            if page.len() < 200 {
                return Ok(out);
            }
        }
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
            strip_ansi(&std::fs::read_to_string(&self.tansu.log).unwrap_or_default()),
        ));
        logs
    }

    /// Every node's log tail (warnings and errors, then the last lines).
    pub fn dump_logs(&self) {
        for node in &self.nodes {
            let text = node.log_text();
            let problems: Vec<&str> = text
                .lines()
                .filter(|l| l.contains(" WARN ") || l.contains(" ERROR ") || l.contains("panicked"))
                .collect();
            eprintln!(
                "\n===== {} ({}), log {} =====\n--- last warnings/errors ---\n{}\n--- last lines ---\n{}",
                node.name,
                if node.running() { "running" } else { "stopped" },
                node.log.display(),
                tail(&problems.join("\n"), 30),
                tail(&text, 40)
            );
        }
        eprintln!(
            "\n===== tansu, log {} =====\n{}",
            self.tansu.log.display(),
            tail(
                &strip_ansi(&std::fs::read_to_string(&self.tansu.log).unwrap_or_default()),
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

/// A message as history lists it.
#[derive(Debug, Clone)]
pub struct HistMsg {
    pub seq: u64,
    pub client_id: String,
    pub from: String,
}

// ---------------------------------------------------------------------------
// The load driver

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

#[derive(Debug, Clone)]
pub struct Pending {
    pub room: String,
    pub body: String,
    pub first_sent: Instant,
    pub last_sent: Instant,
    pub retry_at: Option<Instant>,
    pub tries: u32,
    /// `unavailable` answers in a row on this connection.
    pub unavailable_streak: u32,
}

#[derive(Debug, Clone)]
pub struct AckRec {
    pub room: String,
    pub seq: u64,
    pub at: Instant,
    /// The node of the connection it arrived on.
    pub node: usize,
    /// When the send it answers last went out.
    pub sent_at: Instant,
}

#[derive(Debug, Clone)]
pub struct Delivery {
    pub room: String,
    pub seq: u64,
    pub client_id: String,
    pub at: Instant,
    /// The node of the connection it arrived on.
    pub node: usize,
}

#[derive(Debug, Clone)]
pub struct Disconnect {
    pub at: Instant,
    pub node: usize,
    pub reason: String,
    pub voluntary: bool,
}

#[derive(Debug, Clone)]
pub struct ResumeRec {
    pub at: Instant,
    pub node: usize,
    /// From the disconnect to `resumed`.
    pub took: Duration,
    /// Connection attempts it took.
    pub attempts: u32,
    /// The room's seq the `resume` gave (the last one received).
    pub from: u64,
    /// The room's seq `resumed` said the connection is caught up through.
    pub claimed: Option<u64>,
    /// The room's last seq received when `resumed` arrived.
    pub seen_then: u64,
}

/// What one user did and saw; the load driver's task updates it, the test
/// reads it at any time.
#[derive(Debug)]
pub struct UserState {
    pub user: String,
    pub token: String,
    pub room: String,
    /// The room's last seq when the user joined: it must receive every later one.
    pub join_seq: u64,
    pub resume_token: String,
    /// The node of the current (or last) connection.
    pub node: usize,
    pub connected: bool,
    next_id: u64,
    pub pending: BTreeMap<String, Pending>,
    /// client_id -> its ack.
    pub acks: BTreeMap<String, AckRec>,
    /// `message` frames in arrival order.
    pub deliveries: Vec<Delivery>,
    /// Highest seq received per room.
    pub seen: BTreeMap<String, u64>,
    pub disconnects: Vec<Disconnect>,
    pub resumes: Vec<ResumeRec>,
    pub sent: u64,
    pub resends: u64,
    /// Resends because a send had no answer at all for [`RESEND_AFTER`].
    pub timeouts: u64,
    pub unavailable: u64,
    /// `unavailable` answers saying the node cannot reach a majority.
    pub majority: u64,
    /// Set when the node keeps answering `unavailable`: the user moves on.
    pub switch: Option<String>,
    /// Moves to another node because of `unavailable` answers.
    pub switches: u64,
    pub ack_ms: Vec<u64>,
    /// Broken promises seen on the wire, and failed resumes.
    pub problems: Vec<String>,
    /// Connection attempts that failed (node down, refused, closed mid-resume).
    pub failed_attempts: Vec<String>,
}

impl UserState {
    fn new_send(&mut self, now: Instant) -> String {
        self.next_id += 1;
        let id = format!("{}-{}", self.user, self.next_id);
        let body = format!("{} says {}", self.user, self.next_id);
        let frame = json!({"type": "send", "room": self.room, "body": body, "client_id": id});
        self.pending.insert(
            id,
            Pending {
                room: self.room.clone(),
                body,
                first_sent: now,
                last_sent: now,
                retry_at: None,
                tries: 1,
                unavailable_streak: 0,
            },
        );
        self.sent += 1;
        frame.to_string()
    }

    /// Frames of the sends due again: answered `unavailable`, or unanswered
    /// for [`RESEND_AFTER`].
    fn due_resends(&mut self, now: Instant) -> Vec<String> {
        let mut out = Vec::new();
        for (id, p) in self.pending.iter_mut() {
            let due = match p.retry_at {
                Some(at) => at <= now,
                None => {
                    let silent = now.duration_since(p.last_sent) >= RESEND_AFTER;
                    self.timeouts += u64::from(silent);
                    silent
                }
            };
            if due {
                p.retry_at = None;
                p.last_sent = now;
                p.tries += 1;
                self.resends += 1;
                out.push(
                    json!({"type": "send", "room": p.room, "body": p.body, "client_id": id})
                        .to_string(),
                );
            }
        }
        out
    }

    fn on_frame(&mut self, f: &Value, now: Instant) {
        let s = |k: &str| f[k].as_str().unwrap_or_default().to_string();
        match f["type"].as_str().unwrap_or_default() {
            "message" => {
                let (room, seq) = (s("room"), f["seq"].as_u64().unwrap_or(0));
                let seen = self.seen.entry(room.clone()).or_insert(0);
                *seen = (*seen).max(seq);
                self.deliveries.push(Delivery {
                    room,
                    seq,
                    client_id: s("client_id"),
                    at: now,
                    node: self.node,
                });
            }
            "ack" => {
                let (id, room, seq) = (s("client_id"), s("room"), f["seq"].as_u64().unwrap_or(0));
                let pending = self.pending.remove(&id);
                if let Some(p) = &pending {
                    self.ack_ms
                        .push(now.duration_since(p.first_sent).as_millis() as u64);
                    if p.room != room {
                        self.problems.push(format!(
                            "{}: {id} was sent to {} but acked in {room}",
                            self.user, p.room
                        ));
                    }
                }
                match self.acks.get(&id) {
                    Some(a) if a.room != room || a.seq != seq => self.problems.push(format!(
                        "{}: {id} acked as {} #{} and again as {room} #{seq}",
                        self.user, a.room, a.seq
                    )),
                    Some(_) => {}
                    None if pending.is_none() => self.problems.push(format!(
                        "{}: an ack for a client_id never sent: {f}",
                        self.user
                    )),
                    None => {
                        let sent_at = pending.as_ref().map_or(now, |p| p.last_sent);
                        let node = self.node;
                        self.acks.insert(
                            id,
                            AckRec {
                                room,
                                seq,
                                at: now,
                                node,
                                sent_at,
                            },
                        );
                    }
                }
            }
            "error" => {
                let (code, reference) = (s("code"), s("ref"));
                if let Some(p) = self.pending.get_mut(&reference) {
                    let wait = match code.as_str() {
                        "unavailable" => {
                            self.unavailable += 1;
                            p.unavailable_streak += 1;
                            let message = s("message");
                            let majority = message.contains("majority");
                            self.majority += u64::from(majority);
                            if (majority || p.unavailable_streak >= SWITCH_AFTER_UNAVAILABLE)
                                && self.switch.is_none()
                            {
                                self.switch = Some(format!(
                                    "node{} answered {reference} `unavailable` {} time(s) in a row: {message}",
                                    self.node + 1,
                                    p.unavailable_streak
                                ));
                            }
                            RETRY_UNAVAILABLE
                        }
                        "rate_limited" => Duration::from_millis(500),
                        _ => {
                            self.problems.push(format!(
                                "{}: unexpected error for {reference}: {f}",
                                self.user
                            ));
                            Duration::from_secs(1)
                        }
                    };
                    p.retry_at = Some(now + wait);
                } else if self.acks.contains_key(&reference) {
                    // An answer to a resend of an acked message: nothing to do.
                } else if reference == "send" && code == "unavailable" {
                    // A room restarted: what waited in it is never answered.
                    for p in self.pending.values_mut() {
                        p.retry_at = Some(now);
                    }
                } else {
                    self.problems
                        .push(format!("{}: unexpected error frame {f}", self.user));
                }
            }
            "session" => {
                if let Some(t) = f["resume_token"].as_str() {
                    self.resume_token = t.to_string();
                }
            }
            _ => {}
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
        let last = s.seen.get(&s.room).copied().unwrap_or(s.join_seq);
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
                    let seen_then = s.seen.get(&s.room).copied().unwrap_or(s.join_seq);
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
                tail_vec(&s.failed_attempts, 3)
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
                s.node = target;
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
                for p in s.pending.values_mut() {
                    p.retry_at = Some(now);
                    p.unavailable_streak = 0;
                }
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

fn tail_vec(v: &[String], n: usize) -> Vec<String> {
    v[v.len().saturating_sub(n)..].to_vec()
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
                            if s.pending.len() < WINDOW {
                                frames.push(s.new_send(now));
                            }
                        }
                    }
                    frames.extend(s.due_resends(now));
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
        for &k in first_of_room.values() {
            conns[k] = Some(connect_and_join(cluster, &specs[k], &tokens[k]).await);
        }
        let rest: Vec<usize> = (0..specs.len()).filter(|k| conns[*k].is_none()).collect();
        for chunk in rest.chunks(10) {
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
            let st = Arc::new(Mutex::new(UserState {
                user: spec.name.clone(),
                token: tokens[k].clone(),
                room: spec.room.clone(),
                join_seq,
                resume_token,
                node: spec.node,
                connected: true,
                next_id: 0,
                pending: BTreeMap::new(),
                acks: BTreeMap::new(),
                deliveries: Vec::new(),
                seen: BTreeMap::from([(spec.room.clone(), join_seq)]),
                disconnects: Vec::new(),
                resumes: Vec::new(),
                sent: 0,
                resends: 0,
                timeouts: 0,
                unavailable: 0,
                majority: 0,
                switch: None,
                switches: 0,
                ack_ms: Vec::new(),
                problems: Vec::new(),
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
                    s.pending.is_empty() && s.connected
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
        let outcome = check(&scenario, &self, &history, history_errors, extra);
        println!("{}", outcome.summary);
        if outcome.violation_count > 0 {
            panic!(
                "[{scenario}] {} invariant violation(s):\n{}\n{}",
                outcome.violation_count,
                outcome.violations.join("\n"),
                outcome.summary
            );
        }
        outcome
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
#[derive(Debug, Default)]
pub struct ExtraCheck {
    /// (what is broken, the case)
    pub violations: Vec<(&'static str, String)>,
    /// Appended to the summary line (` key=value ...`).
    pub summary: String,
}

/// The counts of a finished scenario.
#[derive(Debug, Clone)]
pub struct Outcome {
    pub acked: usize,
    pub delivered: usize,
    pub lost: usize,
    pub duplicated: usize,
    pub resumes: usize,
    /// The report of the violations, by kind (empty: none).
    pub violations: Vec<String>,
    pub violation_count: usize,
    pub summary: String,
}

/// Violations, grouped by the invariant they break.
#[derive(Default)]
struct Violations(BTreeMap<&'static str, Vec<String>>);

impl Violations {
    fn push(&mut self, what: &'static str, msg: String) {
        self.0.entry(what).or_default().push(msg);
    }

    fn count(&self) -> usize {
        self.0.values().map(Vec::len).sum()
    }

    /// Per kind: how many, then the first few.
    fn report(&self, each: usize) -> Vec<String> {
        let mut out = Vec::new();
        for (what, msgs) in &self.0 {
            out.push(format!("== {what}: {} violation(s)", msgs.len()));
            out.extend(msgs.iter().take(each).map(|m| format!("   {m}")));
            if msgs.len() > each {
                out.push(format!("   ... and {} more", msgs.len() - each));
            }
        }
        out
    }
}

fn check(
    scenario: &str,
    load: &Load,
    history: &BTreeMap<String, Vec<HistMsg>>,
    history_errors: Vec<String>,
    extra: ExtraCheck,
) -> Outcome {
    let mut v = Violations::default();
    for e in history_errors {
        v.push("history could not be read", e);
    }
    for (what, msg) in extra.violations {
        v.push(what, msg);
    }
    let mut lost_acked = 0usize;
    let mut missing_deliveries = 0usize;
    let mut dup_deliveries = 0usize;
    let mut dup_history = 0usize;

    // (2) history: seqs 1..=last, each once; no (sender, client_id) twice.
    let mut by_seq: BTreeMap<&str, BTreeMap<u64, &HistMsg>> = BTreeMap::new();
    for (room, msgs) in history {
        let map = by_seq.entry(room.as_str()).or_default();
        let mut ids: BTreeMap<(&str, &str), u64> = BTreeMap::new();
        for m in msgs {
            if let Some(prev) = map.insert(m.seq, m) {
                v.push(
                    "(2) history seq listed twice",
                    format!("{room} #{}: {} and {}", m.seq, prev.client_id, m.client_id),
                );
            }
            if let Some(first) = ids.insert((m.from.as_str(), m.client_id.as_str()), m.seq) {
                dup_history += 1;
                v.push(
                    "(2) duplicate message in history (same sender and client_id)",
                    format!(
                        "{room}: {} / {} stored as #{first} and #{}",
                        m.from, m.client_id, m.seq
                    ),
                );
            }
        }
        let last = map.keys().next_back().copied().unwrap_or(0);
        let gaps: Vec<u64> = (1..=last).filter(|s| !map.contains_key(s)).collect();
        if !gaps.is_empty() {
            v.push(
                "(2) history seq gaps",
                format!(
                    "{room}: {} missing seqs in 1..={last}: {:?}",
                    gaps.len(),
                    &gaps[..gaps.len().min(20)]
                ),
            );
        }
    }

    let mut acked = 0usize;
    let mut delivered = 0usize;
    let mut resumes = 0usize;
    let mut sent = 0u64;
    let mut resends = 0u64;
    let mut timeouts = 0u64;
    let mut unavailable = 0u64;
    let mut majority = 0u64;
    let mut switches = 0u64;
    let mut unacked = 0usize;
    let mut ack_ms: Vec<u64> = Vec::new();
    let mut disconnects = 0usize;
    for k in 0..load.users.len() {
        let s = load.user(k);
        acked += s.acks.len();
        delivered += s.deliveries.len();
        resumes += s.resumes.len();
        disconnects += s.disconnects.len();
        sent += s.sent;
        resends += s.resends;
        timeouts += s.timeouts;
        unavailable += s.unavailable;
        majority += s.majority;
        switches += s.switches;
        ack_ms.extend(s.ack_ms.iter().copied());
        for p in &s.problems {
            v.push("broken promises on the wire", p.clone());
        }

        for (id, p) in &s.pending {
            unacked += 1;
            v.push(
                "sends never acked (after the drain)",
                format!(
                    "{}: {id} to {} ({} tries, first sent {} ms before the check)",
                    s.user,
                    p.room,
                    p.tries,
                    ms(p.first_sent.elapsed())
                ),
            );
        }

        // (1) every ack is in history with its seq.
        for (id, a) in &s.acks {
            match by_seq.get(a.room.as_str()).and_then(|m| m.get(&a.seq)) {
                Some(m) if m.client_id == *id && m.from == s.user => {}
                Some(m) => {
                    lost_acked += 1;
                    v.push(
                        "(1) acked message not in history with its seq",
                        format!(
                            "{} {id} acked as {} #{}, but history has #{} = {} / {}",
                            s.user, a.room, a.seq, a.seq, m.from, m.client_id
                        ),
                    );
                }
                None => {
                    lost_acked += 1;
                    v.push(
                        "(1) acked message not in history with its seq",
                        format!(
                            "{} {id} acked as {} #{}: no such seq in history",
                            s.user, a.room, a.seq
                        ),
                    );
                }
            }
        }

        // (3) every message of the room from the join on, once, in order.
        let room_hist = by_seq.get(s.room.as_str());
        let last = room_hist
            .and_then(|m| m.keys().next_back().copied())
            .unwrap_or(0);
        let mut prev = s.join_seq;
        let mut got: BTreeSet<u64> = BTreeSet::new();
        for d in &s.deliveries {
            if d.room != s.room {
                v.push(
                    "(3) message of a foreign room delivered",
                    format!(
                        "{} (member of {}): {} #{} ({})",
                        s.user, s.room, d.room, d.seq, d.client_id
                    ),
                );
                continue;
            }
            if !got.insert(d.seq) {
                dup_deliveries += 1;
                v.push(
                    "(3) message delivered twice to a member",
                    format!(
                        "{}: {} #{} ({}), the second time on node{}",
                        s.user,
                        d.room,
                        d.seq,
                        d.client_id,
                        d.node + 1
                    ),
                );
            } else if d.seq <= prev {
                v.push(
                    "(3) message delivered out of order",
                    format!(
                        "{}: {} #{} arrived after #{prev} (on node{})",
                        s.user,
                        d.room,
                        d.seq,
                        d.node + 1
                    ),
                );
            }
            prev = prev.max(d.seq);
            match room_hist.and_then(|m| m.get(&d.seq)) {
                Some(m) if m.client_id == d.client_id => {}
                Some(m) => v.push(
                    "(3) delivered message differs from history",
                    format!(
                        "{}: {} #{} delivered as {} but history has {}",
                        s.user, d.room, d.seq, d.client_id, m.client_id
                    ),
                ),
                None => v.push(
                    "(3) delivered message not in history",
                    format!("{}: {} #{} ({})", s.user, d.room, d.seq, d.client_id),
                ),
            }
        }
        let missing: Vec<u64> = (s.join_seq + 1..=last)
            .filter(|q| !got.contains(q))
            .collect();
        if !missing.is_empty() {
            missing_deliveries += missing.len();
            let last_before_gap = s
                .deliveries
                .iter()
                .find(|d| d.room == s.room && d.seq == missing[0] - 1)
                .map(|d| d.at);
            // Its own sends acked after the gap began: the connection (and
            // the way to the room) worked, only the deliveries stopped.
            let acked_since = last_before_gap.map_or(0, |t| {
                s.acks
                    .values()
                    .filter(|a| a.room == s.room && a.at > t)
                    .count()
            });
            v.push(
                "(3) member missed messages of its room",
                format!(
                    "{}: missed {} of the {} messages of {} after its join (#{}): {:?}{}; connected to node{} (at the end); before the first gap it last got #{} at +{} ms into the run ({acked_since} of its own sends acked since); its disconnects: {:?}",
                    s.user,
                    missing.len(),
                    last - s.join_seq,
                    s.room,
                    s.join_seq,
                    &missing[..missing.len().min(20)],
                    if missing.len() > 20 { " ..." } else { "" },
                    s.node + 1,
                    missing[0] - 1,
                    last_before_gap
                        .map_or(-1, |t| t.duration_since(load.started).as_millis() as i64),
                    s.disconnects
                        .iter()
                        .map(|d| format!(
                            "node{} at +{} ms: {}",
                            d.node + 1,
                            ms(d.at.duration_since(load.started)),
                            d.reason
                        ))
                        .collect::<Vec<_>>()
                ),
            );
        }

        // (4) a resume replays every missed message, then `resumed`, then
        // live traffic: `resumed` names exactly the last seq that arrived.
        for r in &s.resumes {
            let Some(claimed) = r.claimed else { continue };
            if claimed < r.seen_then {
                v.push(
                    "(4) resume: a live message arrived before `resumed`",
                    format!(
                        "{}: resumed on node{} with {}: {}; `resumed` said caught up through #{claimed}, but #{} had arrived already",
                        s.user,
                        r.node + 1,
                        s.room,
                        r.from,
                        r.seen_then
                    ),
                );
                continue;
            }
            if claimed == r.seen_then {
                continue;
            }
            let late: Vec<String> = (r.seen_then + 1..=claimed)
                .map(
                    |q| match s.deliveries.iter().find(|d| d.room == s.room && d.seq == q) {
                        Some(d) if d.at >= r.at => {
                            format!("#{q} +{}ms", ms(d.at.duration_since(r.at)))
                        }
                        Some(_) => format!("#{q} before"),
                        None => format!("#{q} never"),
                    },
                )
                .collect();
            v.push(
                "(4) resume: `resumed` arrived before the replay was complete",
                format!(
                    "{}: resumed on node{} with {}: {}; `resumed` said caught up through #{claimed}, but only #{} had arrived; the rest arrived after `resumed`: [{}]",
                    s.user,
                    r.node + 1,
                    s.room,
                    r.from,
                    r.seen_then,
                    late.join(", ")
                ),
            );
        }

        // (4) every disconnect was followed by a successful resume.
        if s.resumes.len() != s.disconnects.len() {
            v.push(
                "(4) disconnected user did not resume",
                format!(
                    "{}: disconnected {} times, resumed {} times (last failed attempts: {:?})",
                    s.user,
                    s.disconnects.len(),
                    s.resumes.len(),
                    tail_vec(&s.failed_attempts, 3)
                ),
            );
        }
    }
    let lost = lost_acked + missing_deliveries;
    let duplicated = dup_deliveries + dup_history;
    ack_ms.sort_unstable();
    let pct = |p: f64| -> u64 {
        if ack_ms.is_empty() {
            0
        } else {
            ack_ms[((ack_ms.len() as f64 * p) as usize).min(ack_ms.len() - 1)]
        }
    };
    let history_total: usize = history.values().map(Vec::len).sum();
    let summary = format!(
        "scenario={scenario} acked={acked} delivered={delivered} lost={lost} duplicated={duplicated} resumes={resumes} \
         (sent={sent} history={history_total} unacked={unacked} resends={resends} unanswered_4s={timeouts} unavailable={unavailable} \
         no_majority={majority} node_switches={switches} disconnects={disconnects} lost_acked={lost_acked} missed_deliveries={missing_deliveries} \
         ack_p50_ms={} ack_p99_ms={} ack_max_ms={} violations={}){}",
        pct(0.5),
        pct(0.99),
        ack_ms.last().copied().unwrap_or(0),
        v.count(),
        extra.summary
    );
    Outcome {
        acked,
        delivered,
        lost,
        duplicated,
        resumes,
        violations: v.report(12),
        violation_count: v.count(),
        summary,
    }
}

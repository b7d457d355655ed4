//! One `troupe serve` process on a free loopback port, in a fresh data dir.
//!
//! [`Node::start`] runs it on the embedded default (SQLite, the log in the
//! database, presence in memory), or, when the suite runs against real
//! servers (`TEST_STORES=real`, see scripts/test.sh), on a fresh Postgres
//! database, Kafka topic and Redis prefix of its own. [`Node::start_with`]
//! adds settings (`TROUPE_*` variables); a test's own settings win over the
//! real-store defaults. A node that does not come up fails the test with
//! its log. Dropped, the node is killed (`kill -9`).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use super::client::http;
use super::procs::{free_port, strip_ansi, warnings, Proc};
use super::services::postgres_database;

pub struct Node {
    proc: Option<Proc>,
    pub addr: SocketAddr,
    pub data_dir: PathBuf,
    log: PathBuf,
    _tmp: Option<tempfile::TempDir>,
    env: Vec<(String, String)>,
}

/// The store configuration a node gets when the suite runs against real
/// servers (`TEST_STORES=real`): a fresh Postgres database, Kafka topic
/// and Redis key prefix per node, so tests never see each other's data.
/// An unreachable server fails the node's start, and so the test, loudly.
fn real_stores() -> Option<Vec<(String, String)>> {
    match std::env::var("TEST_STORES").as_deref() {
        Ok("real") => {}
        Ok("embedded") | Err(_) => return None,
        Ok(other) => panic!("TEST_STORES={other}: expected real or embedded"),
    }
    let (unique, database) = postgres_database();
    let kafka = std::env::var("TEST_KAFKA")
        .expect("TEST_KAFKA names the test broker (scripts/test.sh starts one)");
    Some(vec![
        ("TROUPE_DATABASE__URL".into(), database),
        ("TROUPE_LOG__KIND".into(), "kafka".into()),
        ("TROUPE_KAFKA__BROKERS".into(), kafka),
        ("TROUPE_KAFKA__TOPIC".into(), format!("troupe-{unique}")),
        (
            "TROUPE_KAFKA__EVENTS_TOPIC".into(),
            format!("troupe-{unique}-events"),
        ),
        ("TROUPE_KAFKA__PARTITIONS".into(), "4".into()),
        ("TROUPE_REDIS__URL".into(), super::services::redis_url()),
        ("TROUPE_REDIS__PREFIX".into(), format!("troupe-{unique}:")),
    ])
}

/// Whether this run uses real servers.
pub fn real() -> bool {
    std::env::var("TEST_STORES").as_deref() == Ok("real")
}

impl Node {
    /// A node on the embedded default, in a fresh data dir.
    pub async fn start() -> Node {
        Self::start_with(&[]).await
    }

    pub async fn start_with(env: &[(&str, &str)]) -> Node {
        let tmp = tempfile::tempdir().expect("a temp dir");
        let dir = tmp.path().to_path_buf();
        let mut env: Vec<(String, String)> = env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        if let Some(real) = real_stores() {
            // Explicit settings of a test win over the real-store defaults.
            let own: Vec<String> = env.iter().map(|(k, _)| k.clone()).collect();
            env.extend(real.into_iter().filter(|(k, _)| !own.contains(k)));
        }
        let mut node = Node {
            proc: None,
            addr: SocketAddr::from(([127, 0, 0, 1], free_port())),
            data_dir: dir.clone(),
            log: dir.join("node.log"),
            _tmp: Some(tmp),
            env,
        };
        node.spawn().await;
        node
    }

    async fn spawn(&mut self) {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_troupe"));
        cmd.arg("serve")
            .arg("--listen")
            .arg(self.addr.to_string())
            .arg("--data-dir")
            .arg(&self.data_dir)
            .env("RUST_LOG", "info")
            // Many logins and registrations come from 127.0.0.1 in a test
            // run; the limits have their own tests.
            .env("TROUPE_LIMITS__LOGINS_PER_MINUTE", "100000")
            .env("TROUPE_RATE_LIMITS__REGISTER__BURST", "100000");
        for (k, v) in &self.env {
            cmd.env(k, v);
        }
        let mut proc = Proc::spawn("troupe", cmd, &self.log);
        proc.wait_http(&http(), &self.url("/health"), Duration::from_secs(30))
            .await;
        self.proc = Some(proc);
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The last warnings and errors of its log, without colours (for
    /// failure messages).
    pub fn warnings(&self) -> String {
        warnings(&strip_ansi(&self.log_text()), 12)
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    pub fn ws_url(&self) -> String {
        format!("ws://{}/ws", self.addr)
    }

    pub fn pid(&self) -> u32 {
        self.proc.as_ref().expect("running").pid()
    }

    /// `kill -9`: no flush, no goodbye.
    pub fn kill9(&mut self) {
        if let Some(mut proc) = self.proc.take() {
            proc.kill();
        }
    }

    /// SIGTERM, and the exit status.
    pub fn sigterm(&mut self) -> std::process::ExitStatus {
        let mut proc = self.proc.take().expect("running");
        proc.terminate()
    }

    /// Starts again on the same data dir and address.
    pub async fn restart(&mut self) {
        assert!(self.proc.is_none(), "stop the node first");
        self.spawn().await;
    }

    /// A setting the node was started with (its environment), if any.
    pub fn setting(&self, key: &str) -> Option<String> {
        self.env
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.clone())
    }

    /// The URL of the node's SQL database: its SQLite file, or the
    /// Postgres database of `TEST_STORES=real`.
    pub fn database_url(&self) -> String {
        self.setting("TROUPE_DATABASE__URL")
            .unwrap_or_else(|| format!("sqlite://{}", self.data_dir.join("troupe.db").display()))
    }

    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }

    /// The node process's resident memory, in bytes.
    pub fn rss_bytes(&self) -> u64 {
        rss_bytes_of(self.pid())
    }

    /// One sample of `GET /metrics`: `name` with exactly these labels
    /// (`kind="history"`, or "" for none); 0 when the node has no such line.
    pub async fn metric(&self, name: &str, labels: &str) -> f64 {
        let text = http()
            .get(self.url("/metrics"))
            .send()
            .await
            .expect("/metrics answers")
            .text()
            .await
            .expect("/metrics text");
        let series = if labels.is_empty() {
            format!("{name} ")
        } else {
            format!("{name}{{{labels}}} ")
        };
        text.lines()
            .find_map(|l| l.strip_prefix(&series))
            .map(|v| v.trim().parse().expect("a number"))
            .unwrap_or(0.0)
    }
}

/// A process's resident memory (`VmRSS` of /proc/PID/status), in bytes.
pub fn rss_bytes_of(pid: u32) -> u64 {
    let status =
        std::fs::read_to_string(format!("/proc/{pid}/status")).expect("the node's /proc status");
    let kib: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("a VmRSS line");
    kib * 1024
}

//! Servers a test starts itself, so that it may pause, kill or restart them
//! without disturbing any other test:
//!
//! - [`Tansu`]: a Kafka-compatible broker (tansu, `memory://` storage) on a
//!   free port. The binary is `TEST_TANSU`, or where
//!   `scripts/install-tansu.sh` puts it; missing, the test fails with how to
//!   install it.
//! - [`RedisServer`]: a `redis-server` without persistence.
//! - [`PgCluster`]: a throw-away Postgres cluster (PostgreSQL 15's server
//!   binaries, run as the `postgres` OS user; `root` has trust access).
//!
//! Each is a [`Proc`]: dropped, it is killed. A restart reuses the port, as
//! a server that comes back at the same address.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use super::procs::{free_port, free_port_on, note_in_log, run, Proc};

/// The tansu binary: `TEST_TANSU`, else `~/.cache/troupe/tansu-0.6.0/bin/tansu`
/// when it exists. Missing: the test fails, saying how to install it.
pub fn tansu_binary() -> String {
    let bin = match std::env::var("TEST_TANSU") {
        Ok(bin) => bin,
        Err(_) => {
            let home = std::env::var("HOME").unwrap_or_default();
            let default = format!("{home}/.cache/troupe/tansu-0.6.0/bin/tansu");
            if !Path::new(&default).is_file() {
                panic!(
                    "TEST_TANSU is not set and {default} does not exist: this test needs the \
                     tansu broker (TEST_TANSU=$(scripts/install-tansu.sh) cargo test ...)"
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

/// A tansu broker of the test's own (`memory://` storage: a restart starts
/// empty).
pub struct Tansu {
    ip: IpAddr,
    port: u16,
    log: PathBuf,
    proc: Option<Proc>,
    _dir: Option<tempfile::TempDir>,
}

impl Tansu {
    /// On 127.0.0.1, logging into a temp dir of its own.
    pub async fn start() -> Tansu {
        let dir = tempfile::tempdir().expect("a temp dir");
        let log = dir.path().join("tansu.log");
        Tansu::start_logging(IpAddr::V4(Ipv4Addr::LOCALHOST), log, Some(dir)).await
    }

    /// Listening on (and advertising) `ip`, logging to `dir/tansu.log`.
    /// Kafka clients connect to the advertised address after the bootstrap,
    /// so it must be one every node reaches.
    pub async fn start_on(ip: IpAddr, dir: &Path) -> Tansu {
        Tansu::start_logging(ip, dir.join("tansu.log"), None).await
    }

    async fn start_logging(ip: IpAddr, log: PathBuf, dir: Option<tempfile::TempDir>) -> Tansu {
        let mut tansu = Tansu {
            ip,
            port: free_port_on(ip),
            log,
            proc: None,
            _dir: dir,
        };
        tansu.spawn().await;
        tansu
    }

    /// Starts it (again) on its port; waits until it accepts connections.
    pub async fn spawn(&mut self) {
        assert!(self.proc.is_none(), "tansu is running already");
        let url = format!("tcp://{}:{}", self.ip, self.port);
        let mut cmd = Command::new(tansu_binary());
        cmd.args([
            "broker",
            "--listener-url",
            &url,
            "--advertised-listener-url",
        ])
        .arg(&url)
        .args(["--storage-engine", "memory://tansu/"]);
        note_in_log(&self.log, &format!("tansu broker on {url}"));
        let mut proc = Proc::spawn("tansu", cmd, &self.log);
        proc.wait_port(self.ip, self.port, Duration::from_secs(20))
            .await;
        self.proc = Some(proc);
    }

    /// `host:port` for `kafka.brokers`.
    pub fn broker(&self) -> String {
        SocketAddr::new(self.ip, self.port).to_string()
    }

    /// The running broker process (to pause it).
    pub fn running(&self) -> &Proc {
        self.proc.as_ref().expect("tansu is running")
    }

    /// SIGKILL; [`Tansu::spawn`] starts it again, empty.
    pub fn kill(&mut self) {
        if let Some(mut proc) = self.proc.take() {
            proc.kill();
        }
    }

    pub fn log(&self) -> &Path {
        &self.log
    }
}

/// A redis-server of the test's own, without persistence.
pub struct RedisServer {
    port: u16,
    dir: tempfile::TempDir,
    proc: Option<Proc>,
}

impl RedisServer {
    pub async fn start() -> RedisServer {
        let mut redis = RedisServer {
            port: free_port(),
            dir: tempfile::tempdir().expect("a temp dir"),
            proc: None,
        };
        redis.spawn().await;
        redis
    }

    /// Starts it (again, empty) on its port.
    pub async fn spawn(&mut self) {
        assert!(self.proc.is_none(), "redis-server is running already");
        let mut cmd = Command::new("redis-server");
        cmd.args(["--port", &self.port.to_string()])
            .args(["--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .arg("--dir")
            .arg(self.dir.path());
        let log = self.dir.path().join("redis.log");
        let mut proc = Proc::spawn("redis-server", cmd, &log);
        proc.wait_port(
            IpAddr::V4(Ipv4Addr::LOCALHOST),
            self.port,
            Duration::from_secs(10),
        )
        .await;
        self.proc = Some(proc);
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    pub fn kill(&mut self) {
        if let Some(mut proc) = self.proc.take() {
            proc.kill();
        }
    }

    /// The members of a sorted set (`None` when redis does not answer).
    pub fn zrange(&self, key: &str) -> Option<Vec<String>> {
        let out = Command::new("redis-cli")
            .args(["-p", &self.port.to_string(), "--raw"])
            .args(["ZRANGE", key, "0", "-1"])
            .stdin(Stdio::null())
            .output()
            .ok()?;
        out.status.success().then(|| {
            String::from_utf8_lossy(&out.stdout)
                .lines()
                .filter(|l| !l.is_empty())
                .map(String::from)
                .collect()
        })
    }
}

/// Where PostgreSQL 15's server binaries are (Debian's package).
const PG_BIN: &str = "/usr/lib/postgresql/15/bin";

/// A throw-away Postgres cluster in a temp dir with one database, `troupe`.
pub struct PgCluster {
    port: u16,
    tmp: tempfile::TempDir,
    data: PathBuf,
    running: bool,
}

fn as_postgres(what: &str, shell: &str, dir: &Path) -> String {
    run(
        what,
        Command::new("su")
            .args(["-s", "/bin/sh", "postgres", "-c", shell])
            .current_dir(dir),
    )
}

impl PgCluster {
    /// `initdb`, start, `CREATE DATABASE troupe`.
    pub fn create() -> PgCluster {
        assert!(
            Path::new(PG_BIN).join("initdb").exists(),
            "{PG_BIN}/initdb is missing: this test needs PostgreSQL 15's server binaries"
        );
        let tmp = tempfile::tempdir().expect("a temp dir");
        // initdb refuses root: the cluster belongs to the postgres user.
        run(
            "chown of the Postgres temp dir",
            Command::new("chown")
                .arg("postgres:postgres")
                .arg(tmp.path()),
        );
        let data = tmp.path().join("data");
        let mut cluster = PgCluster {
            port: free_port(),
            tmp,
            data,
            running: false,
        };
        as_postgres(
            "initdb",
            &format!(
                "{PG_BIN}/initdb -D {} -A trust -U root --no-sync",
                cluster.data.display()
            ),
            cluster.tmp.path(),
        );
        cluster.start();
        run(
            "CREATE DATABASE troupe",
            Command::new("psql")
                .arg(format!("{}/postgres", cluster.base_url()))
                .args(["-qc", "CREATE DATABASE troupe"]),
        );
        cluster
    }

    pub fn base_url(&self) -> String {
        format!("postgres://root@127.0.0.1:{}", self.port)
    }

    /// The URL of its `troupe` database.
    pub fn url(&self) -> String {
        format!("{}/troupe", self.base_url())
    }

    fn pg_ctl(&self, args: &str) -> String {
        format!(
            "{PG_BIN}/pg_ctl -D {} -l {} -t 30 {args}",
            self.data.display(),
            self.tmp.path().join("postgres.log").display()
        )
    }

    pub fn start(&mut self) {
        let options = format!(
            "-o '-p {} -k {} -c listen_addresses=127.0.0.1'",
            self.port,
            self.data.display()
        );
        as_postgres(
            "pg_ctl start",
            &self.pg_ctl(&format!("{options} -w start")),
            self.tmp.path(),
        );
        self.running = true;
    }

    /// `pg_ctl -m fast stop`: sessions are cut, the server shuts down cleanly.
    pub fn stop(&mut self) {
        as_postgres(
            "pg_ctl stop",
            &self.pg_ctl("-m fast -w stop"),
            self.tmp.path(),
        );
        self.running = false;
    }
}

impl Drop for PgCluster {
    fn drop(&mut self) {
        if self.running {
            let _ = Command::new("su")
                .args(["-s", "/bin/sh", "postgres", "-c"])
                .arg(self.pg_ctl("-m immediate -w stop"))
                .current_dir(self.tmp.path())
                .stdin(Stdio::null())
                .output();
        }
    }
}

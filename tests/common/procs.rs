//! Processes a test starts, and the small helpers around them.
//!
//! [`Proc`] is one child process (a troupe node, a broker, a redis-server, a
//! busy loop) with its output in a log file. Dropping it kills it, after a
//! `SIGCONT` in case the test paused it, so nothing outlives a test that
//! panics. Waiting for a process to come up ([`Proc::wait_port`],
//! [`Proc::wait_http`]) panics with the tail of its log when it exits or
//! does not answer in time: a server that does not start fails the test,
//! loudly, it never skips it.
//!
//! The rest: free ports ([`free_port`], [`free_port_on`]), running a command
//! to completion ([`run`]), and reading logs ([`strip_ansi`], [`tail`],
//! [`warnings`]).

use std::fs::OpenOptions;
use std::io::Write;
use std::net::{IpAddr, Ipv4Addr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use tokio::net::TcpStream;

/// A free port on 127.0.0.1.
pub fn free_port() -> u16 {
    free_port_on(IpAddr::V4(Ipv4Addr::LOCALHOST))
}

/// A free port on `ip` (the OS picks it; a process may still race for it,
/// which then fails its start loudly).
pub fn free_port_on(ip: IpAddr) -> u16 {
    TcpListener::bind((ip, 0))
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap_or_else(|e| panic!("no free port on {ip}: {e}"))
}

/// Runs a command to completion; its stdout. Panics with its output when it
/// cannot run or fails: `what` says what the test was doing.
pub fn run(what: &str, cmd: &mut Command) -> String {
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

/// `text` without ANSI colour sequences (`ESC [ ... m`).
pub fn strip_ansi(text: &str) -> String {
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

/// The last `lines` lines of `text`.
pub fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// The last `lines` warnings, errors and panics of a log.
pub fn warnings(log: &str, lines: usize) -> String {
    let problems: Vec<&str> = log
        .lines()
        .filter(|l| l.contains(" WARN ") || l.contains(" ERROR ") || l.contains("panicked"))
        .collect();
    tail(&problems.join("\n"), lines)
}

/// A line in a log file, marking what the test did (a kill, a restart).
pub fn note_in_log(log: &Path, what: &str) {
    if let Ok(mut file) = OpenOptions::new().create(true).append(true).open(log) {
        let _ = writeln!(file, "===== harness: {what} =====");
    }
}

/// A process a test started, its stdout and stderr appended to `log`.
pub struct Proc {
    what: String,
    child: Option<Child>,
    log: PathBuf,
}

impl Proc {
    /// Starts `cmd` (stdin closed, output appended to `log`); panics when
    /// it cannot.
    pub fn spawn(what: &str, mut cmd: Command, log: &Path) -> Proc {
        let out = OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .unwrap_or_else(|e| panic!("the log file {}: {e}", log.display()));
        let err = out.try_clone().expect("a log file");
        cmd.stdin(Stdio::null()).stdout(out).stderr(err);
        let child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("{what} does not start ({cmd:?}): {e}"));
        Proc {
            what: what.to_string(),
            child: Some(child),
            log: log.to_path_buf(),
        }
    }

    pub fn pid(&self) -> u32 {
        self.child
            .as_ref()
            .unwrap_or_else(|| panic!("{} is not running", self.what))
            .id()
    }

    /// Whether it was started and not killed or reaped yet.
    pub fn running(&self) -> bool {
        self.child.is_some()
    }

    pub fn log(&self) -> &Path {
        &self.log
    }

    /// Its log as written (a test checks that a node writes no colours).
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Its exit status if it has exited (it is reaped then).
    pub fn exited(&mut self) -> Option<ExitStatus> {
        let status = self.child.as_mut()?.try_wait().ok().flatten()?;
        self.child = None;
        Some(status)
    }

    /// `kill -SIGNAL`; panics when it fails.
    pub fn signal(&self, signal: &str) {
        run(
            &format!("kill -{signal} {}", self.what),
            Command::new("kill")
                .arg(format!("-{signal}"))
                .arg(self.pid().to_string()),
        );
    }

    /// SIGSTOP: the process keeps its sockets but answers nothing.
    pub fn pause(&self) {
        self.signal("STOP");
    }

    /// SIGCONT after [`Proc::pause`].
    pub fn resume(&self) {
        self.signal("CONT");
    }

    /// SIGKILL, and reap it. Nothing when it is not running. A paused
    /// process dies as it is: no SIGCONT first, which would let it run (and
    /// answer what waited on it) for the moment before the SIGKILL.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// SIGTERM, then blocks until it exits; its exit status.
    pub fn terminate(&mut self) -> ExitStatus {
        self.signal("TERM");
        let mut child = self.child.take().expect("running");
        child.wait().expect("an exit status")
    }

    /// SIGTERM, then waits (without blocking the runtime) at most `within`
    /// for it to exit; its exit status. Killed, and the test fails, when it
    /// does not exit in time.
    pub async fn terminate_within(&mut self, within: Duration) -> ExitStatus {
        self.signal("TERM");
        let deadline = Instant::now() + within;
        loop {
            if let Some(status) = self.exited() {
                return status;
            }
            if Instant::now() > deadline {
                self.kill();
                panic!("{} did not exit within {within:?} of SIGTERM", self.what);
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Panics with the log's tail when the process has exited.
    fn fail_if_exited(&mut self, doing: &str) {
        if let Some(status) = self.exited() {
            panic!(
                "{} exited with {status} {doing}:\n{}",
                self.what,
                tail(&strip_ansi(&self.log_text()), 40)
            );
        }
    }

    /// Waits until `ip:port` accepts connections; panics with the log when
    /// the process exits or the port stays closed for `within`.
    pub async fn wait_port(&mut self, ip: IpAddr, port: u16, within: Duration) {
        let deadline = Instant::now() + within;
        loop {
            let connect = TcpStream::connect((ip, port));
            if let Ok(Ok(_)) = tokio::time::timeout(Duration::from_millis(300), connect).await {
                return;
            }
            self.fail_if_exited("at start");
            if Instant::now() > deadline {
                panic!(
                    "{} does not accept connections on {ip}:{port} within {within:?}:\n{}",
                    self.what,
                    tail(&strip_ansi(&self.log_text()), 40)
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Waits until `GET url` answers 2xx; panics with the log when the
    /// process exits or it does not answer for `within`.
    pub async fn wait_http(&mut self, http: &reqwest::Client, url: &str, within: Duration) {
        let deadline = Instant::now() + within;
        loop {
            if let Ok(r) = http.get(url).send().await {
                if r.status().is_success() {
                    return;
                }
            }
            self.fail_if_exited("at start");
            if Instant::now() > deadline {
                panic!(
                    "{} did not answer {url} within {within:?}:\n{}",
                    self.what,
                    tail(&strip_ansi(&self.log_text()), 40)
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill();
    }
}

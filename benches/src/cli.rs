//! Command-line options shared by the scenarios.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use clap::{Args, ValueEnum};
use serde::Serialize;

use crate::net::{loopback_addr, Sources};
use crate::sys::{proc_sample_sum, ProcSample};

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Target {
    /// A troupe node: REST accounts, `/ws?token=`, `join`, `send`, `message` frames.
    Troupe,
    /// The bare broadcast baseline: `/ws?room=R`, raw text frames.
    Bare,
}

#[derive(Debug, Clone, Args)]
pub struct Common {
    /// Which server speaks at --url.
    #[arg(long, value_enum, default_value_t = Target::Troupe)]
    pub target: Target,
    /// The server: http://127.0.0.1:8080 (troupe) or ws://127.0.0.1:9000 (bare). Loopback only.
    #[arg(long)]
    pub url: Option<String>,
    /// The server's process id: its RSS and CPU time are read from /proc/PID.
    #[arg(long)]
    pub server_pid: Option<u32>,
    /// Write the JSON summary here (default: stdout).
    #[arg(long)]
    pub json: Option<PathBuf>,
    /// Also write a Markdown table here.
    #[arg(long)]
    pub markdown: Option<PathBuf>,
    /// Bind client sockets to 127.0.0.1 ..= 127.0.0.N in turn.
    #[arg(long, default_value_t = 8)]
    pub source_ips: usize,
    /// Tokio worker threads of the generator (default: the CPUs it may run on).
    #[arg(long)]
    pub threads: Option<usize>,
    /// Connections (and REST calls) set up at once.
    #[arg(long, default_value_t = 64)]
    pub setup_concurrency: usize,
    /// Client WebSocket read buffer, bytes.
    #[arg(long)]
    pub read_buffer: Option<usize>,
    /// Pause after every client is connected and joined, before measuring, ms.
    #[arg(long, default_value_t = 1000)]
    pub settle_ms: u64,
    /// After publishing stops, wait at most this long for stragglers (then missing = lost), s.
    #[arg(long, default_value_t = 5.0)]
    pub drain_secs: f64,
    /// Prefix of user and room names (default: unique per run).
    #[arg(long)]
    pub run_id: Option<String>,
    /// No progress line on stderr.
    #[arg(long)]
    pub quiet: bool,
    /// Write SVG plots into this directory: TARGET-latency.svg (the latency
    /// distribution) and TARGET-deliveries.svg (deliveries/s over time).
    #[arg(long, value_name = "DIR")]
    pub plots: Option<PathBuf>,
}

impl Common {
    /// --url, or the target's default address.
    pub fn effective_url(&self) -> String {
        match (&self.url, self.target) {
            (Some(url), _) => url.clone(),
            (None, Target::Troupe) => "http://127.0.0.1:8080".into(),
            (None, Target::Bare) => "ws://127.0.0.1:9000".into(),
        }
    }
}

/// The options resolved once: where to connect and from where.
#[derive(Clone)]
pub struct Env {
    pub common: Common,
    pub addr: SocketAddr,
    pub sources: Arc<Sources>,
    pub run_id: String,
    /// The server processes whose CPU and memory are reported (summed):
    /// --server-pid, or the nodes of a cluster the generator started.
    pub server_pids: Vec<u32>,
}

impl Env {
    pub fn new(common: Common) -> anyhow::Result<Self> {
        let addr = loopback_addr(&common.effective_url())?;
        let run_id = match &common.run_id {
            Some(id) => id.clone(),
            None => unique_run_id(),
        };
        Ok(Self {
            sources: Arc::new(Sources::new(common.source_ips)),
            addr,
            run_id,
            server_pids: common.server_pid.into_iter().collect(),
            common,
        })
    }

    /// The server processes now (summed over a cluster's nodes); None without any.
    pub fn server_sample(&self) -> Option<ProcSample> {
        proc_sample_sum(&self.server_pids)
    }

    pub fn progress(&self, line: impl AsRef<str>) {
        if !self.common.quiet {
            eprintln!("{}", line.as_ref());
        }
    }
}

/// `tb` and six base-36 characters from the clock and the pid.
pub fn unique_run_id() -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0);
    let mut v = nanos ^ (u64::from(std::process::id()) << 40);
    let mut s = String::from("tb");
    for _ in 0..6 {
        let d = (v % 36) as u32;
        s.push(char::from_digit(d, 36).unwrap_or('0'));
        v /= 36;
    }
    s
}

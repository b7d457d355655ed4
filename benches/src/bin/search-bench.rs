//! `search-bench`: the latency of `GET /api/v1/search` on a node whose
//! index `benches/search.sh` filled (100,000 messages by default). One
//! client, one request at a time on a kept-alive connection: each figure
//! is the time from the request's first byte to the response's last.

use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context};
use clap::Parser;
use hdrhistogram::Histogram;
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

#[derive(Parser)]
#[command(name = "search-bench", about = "Latency of troupe's full-text search")]
struct Args {
    /// The node's address, e.g. 127.0.0.1:8080.
    #[arg(long)]
    addr: String,
    /// A login token of the user whose rooms are searched.
    #[arg(long)]
    token: String,
    /// Timed searches per query.
    #[arg(long, default_value_t = 200)]
    count: u32,
    /// Untimed searches per query first.
    #[arg(long, default_value_t = 20)]
    warmup: u32,
    /// A label for the report (the store).
    #[arg(long, default_value = "")]
    label: String,
}

/// What is searched: (name, query string). The words and how often they
/// occur are those `benches/search.sh` seeds.
const QUERIES: &[(&str, &str)] = &[
    ("rare word (10 matches)", "q=zephyr"),
    ("1% of messages (1,000)", "q=ipsum"),
    ("10% of messages (10,000)", "q=lorem"),
    ("every message (100,000)", "q=hello"),
    ("two words (1,000)", "q=lorem%20ipsum"),
    ("10% word, one room", "q=lorem&room=bench3"),
    ("no match", "q=nowhere"),
];

struct Conn {
    stream: TcpStream,
    addr: String,
    buf: Vec<u8>,
}

impl Conn {
    async fn open(addr: &str) -> anyhow::Result<Conn> {
        let stream = TcpStream::connect(addr)
            .await
            .with_context(|| format!("connecting to {addr}"))?;
        stream.set_nodelay(true)?;
        Ok(Conn {
            stream,
            addr: addr.to_string(),
            buf: Vec::with_capacity(64 * 1024),
        })
    }

    /// `GET path` with the token: (status, body).
    async fn get(&mut self, path: &str, token: &str) -> anyhow::Result<(u16, Vec<u8>)> {
        let request = format!(
            "GET {path} HTTP/1.1\r\nHost: {}\r\nAuthorization: Bearer {token}\r\n\r\n",
            self.addr
        );
        self.stream.write_all(request.as_bytes()).await?;
        self.buf.clear();
        let head_end = loop {
            if let Some(i) = self.buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break i + 4;
            }
            self.read_more().await?;
        };
        let head = String::from_utf8_lossy(&self.buf[..head_end]).to_string();
        let status = head
            .split(' ')
            .nth(1)
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| anyhow!("bad status line: {head}"))?;
        let length: usize = head
            .lines()
            .find_map(|l| {
                let (k, v) = l.split_once(':')?;
                k.eq_ignore_ascii_case("content-length")
                    .then(|| v.trim().parse().ok())?
            })
            .ok_or_else(|| anyhow!("no content-length: {head}"))?;
        while self.buf.len() < head_end + length {
            self.read_more().await?;
        }
        Ok((status, self.buf[head_end..head_end + length].to_vec()))
    }

    async fn read_more(&mut self) -> anyhow::Result<()> {
        let mut chunk = [0u8; 64 * 1024];
        let n = self.stream.read(&mut chunk).await?;
        if n == 0 {
            bail!("the node closed the connection");
        }
        self.buf.extend_from_slice(&chunk[..n]);
        Ok(())
    }
}

fn ms(ns: u64) -> f64 {
    ns as f64 / 1e6
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let mut conn = Conn::open(&args.addr).await?;
    println!(
        "| store | query | results/page | p50 ms | p99 ms | max ms |\n|---|---|---:|---:|---:|---:|"
    );
    for (name, query) in QUERIES {
        let path = format!("/api/v1/search?{query}&limit=20");
        let mut results = 0;
        for _ in 0..args.warmup {
            let (status, body) = conn.get(&path, &args.token).await?;
            if status != 200 {
                bail!("{path}: {status} {}", String::from_utf8_lossy(&body));
            }
            let v: Value = serde_json::from_slice(&body)?;
            results = v["results"].as_array().map_or(0, Vec::len);
        }
        // Every query but the last finds something in the seeded index.
        if results == 0 && !query.contains("nowhere") {
            bail!("{path}: no results: is the index seeded?");
        }
        let mut h = Histogram::<u64>::new_with_bounds(1_000, 60_000_000_000, 3)?;
        for _ in 0..args.count {
            let start = Instant::now();
            let (status, _) = conn.get(&path, &args.token).await?;
            let took = start.elapsed().max(Duration::from_micros(1));
            if status != 200 {
                bail!("{path}: {status}");
            }
            h.record(took.as_nanos() as u64)?;
        }
        println!(
            "| {} | {name} | {results} | {:.2} | {:.2} | {:.2} |",
            args.label,
            ms(h.value_at_quantile(0.5)),
            ms(h.value_at_quantile(0.99)),
            ms(h.max())
        );
    }
    Ok(())
}

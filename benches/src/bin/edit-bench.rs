//! `edit-bench`: the latency of changing a message, as `benches/edit.sh`
//! runs it: `PATCH /api/v1/rooms/{room}/messages/{seq}` (an edit: a room
//! event appended to the log, durable before the answer, then the view read
//! back) and `PUT .../reactions/{emoji}`, one request at a time on a
//! kept-alive connection, on recent messages (their views in the room's
//! memory) and on old ones (read from history first). Each figure is the
//! time from the request's first byte to the response's last.

use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context};
use clap::Parser;
use hdrhistogram::Histogram;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

#[derive(Parser)]
#[command(
    name = "edit-bench",
    about = "Latency of troupe's message edits and reactions"
)]
struct Args {
    /// The node's address, e.g. 127.0.0.1:8080.
    #[arg(long)]
    addr: String,
    /// A login token of the messages' author.
    #[arg(long)]
    token: String,
    /// The room of the messages.
    #[arg(long, default_value = "bench")]
    room: String,
    /// Seqs of recent messages (comma-separated).
    #[arg(long)]
    recent: String,
    /// Seqs of old messages, beyond the room's cache (comma-separated).
    #[arg(long)]
    old: String,
    /// Timed requests per row.
    #[arg(long, default_value_t = 300)]
    count: u32,
    /// Untimed requests per row first.
    #[arg(long, default_value_t = 20)]
    warmup: u32,
    /// A label for the report (the store).
    #[arg(long, default_value = "")]
    label: String,
}

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

    /// `METHOD path` with the token and a JSON body: (status, body).
    async fn call(
        &mut self,
        method: &str,
        path: &str,
        token: &str,
        body: &str,
    ) -> anyhow::Result<(u16, Vec<u8>)> {
        let request = format!(
            "{method} {path} HTTP/1.1\r\nHost: {}\r\nAuthorization: Bearer {token}\r\n\
             Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            self.addr,
            body.len()
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
        // A 204 has no body and no Content-Length.
        let no_content = status == 204;
        let length: usize = head
            .lines()
            .find_map(|l| {
                let (k, v) = l.split_once(':')?;
                k.eq_ignore_ascii_case("content-length")
                    .then(|| v.trim().parse().ok())?
            })
            .or(no_content.then_some(0))
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

fn seqs(list: &str) -> anyhow::Result<Vec<u64>> {
    list.split(',')
        .map(|s| s.trim().parse().with_context(|| format!("bad seq {s:?}")))
        .collect()
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let mut conn = Conn::open(&args.addr).await?;
    let recent = seqs(&args.recent)?;
    let old = seqs(&args.old)?;
    println!("| store | request | p50 ms | p99 ms | max ms |\n|---|---|---:|---:|---:|");
    let mut n = 0u64;
    for (name, targets, react) in [
        ("edit a recent message (PATCH)", &recent, false),
        ("edit an old message (PATCH)", &old, false),
        ("react to a recent message (PUT)", &recent, true),
    ] {
        let mut h = Histogram::<u64>::new_with_bounds(1_000, 60_000_000_000, 3)?;
        for i in 0..args.warmup + args.count {
            n += 1;
            let seq = targets[i as usize % targets.len()];
            let (method, path, body) = if react {
                // 20 distinct emoji per message at most: cycle through 15.
                let emoji = format!(":e{}:", n % 15);
                let path = format!(
                    "/api/v1/rooms/{}/messages/{seq}/reactions/{emoji}",
                    args.room
                );
                ("PUT", path, String::new())
            } else {
                let path = format!("/api/v1/rooms/{}/messages/{seq}", args.room);
                ("PATCH", path, format!("{{\"body\":\"edited {n}\"}}"))
            };
            let start = Instant::now();
            let (status, answer) = conn.call(method, &path, &args.token, &body).await?;
            let took = start.elapsed().max(Duration::from_micros(1));
            if !(200..300).contains(&status) {
                bail!(
                    "{method} {path}: {status} {}",
                    String::from_utf8_lossy(&answer)
                );
            }
            if i >= args.warmup {
                h.record(took.as_nanos() as u64)?;
            }
        }
        println!(
            "| {} | {name} | {:.2} | {:.2} | {:.2} |",
            args.label,
            ms(h.value_at_quantile(0.5)),
            ms(h.value_at_quantile(0.99)),
            ms(h.max()),
        );
    }
    Ok(())
}

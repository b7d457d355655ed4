//! The `connections` scenario: N idle authenticated connections; the
//! server's RSS per connection and the connect rate.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::StreamExt;
use tokio::sync::watch;
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::Message;

use crate::cli::{Env, Target};
use crate::load::run_limited;
use crate::net::{client_config, connect_ws, Ws};
use crate::proto;
use crate::report::{new_histogram, ConnectionsResult, Latency};
use crate::sys::self_cpu;

pub struct ConnectionsSpec {
    pub connections: usize,
    /// Distinct users (connections share their tokens in turn).
    pub users: usize,
    /// How long the connections stay open after the last one is ready, s.
    pub hold_secs: f64,
}

pub async fn run(
    env: &Env,
    spec: &ConnectionsSpec,
) -> anyhow::Result<(ConnectionsResult, Vec<String>)> {
    let n = spec.connections;
    let users = spec.users.clamp(1, n.max(1));
    let tokens: Vec<Option<String>> = match env.common.target {
        Target::Troupe => {
            env.progress(format!("setup: {users} users register and log in"));
            run_limited(env, "login", users, |i| {
                let env = env.clone();
                async move {
                    let user = format!("{}c{i}", env.run_id);
                    proto::register_and_login(env.addr, env.sources.pick(), &user)
                        .await
                        .map(Some)
                }
            })
            .await?
        }
        Target::Bare => vec![None],
    };
    // Let the server's allocator settle after the logins before the baseline.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let before = env.server_sample();

    env.progress(format!("connecting {n} idle connections"));
    let closed = Arc::new(AtomicU64::new(0));
    let problems = Arc::new(Mutex::new(Vec::<String>::new()));
    let (stop, stop_rx) = watch::channel(false);
    let room = format!("{}idle", env.run_id);
    let read_buffer = env.common.read_buffer.unwrap_or(4 * 1024);
    let cpu0 = self_cpu();
    let started = Instant::now();
    let attempts = run_limited(env, "connect", n, |i| {
        let env = env.clone();
        let token = tokens[i % tokens.len()].clone();
        let closed = closed.clone();
        let problems = problems.clone();
        let stop_rx = stop_rx.clone();
        let room = room.clone();
        async move {
            let attempt = async {
                let t0 = Instant::now();
                let config = client_config(read_buffer);
                let source = env.sources.pick();
                let mut ws = match &token {
                    Some(token) => {
                        let mut ws =
                            connect_ws(env.addr, source, &format!("/ws?token={token}"), config)
                                .await?;
                        proto::await_session(&mut ws).await?;
                        ws
                    }
                    None => {
                        connect_ws(env.addr, source, &format!("/ws?room={room}"), config).await?
                    }
                };
                let took = t0.elapsed();
                let holder = tokio::spawn(async move {
                    hold(&mut ws, stop_rx, &closed, &problems, i).await;
                    ws
                });
                anyhow::Ok((took, holder))
            };
            // A failed connect is counted, not fatal.
            Ok(attempt.await.map_err(|e| format!("connection {i}: {e:#}")))
        }
    })
    .await?;
    let connect_s = started.elapsed().as_secs_f64();
    let cpu = (self_cpu() - cpu0).as_secs_f64();
    let mut notes = Vec::new();
    let mut connected = Vec::with_capacity(n);
    for attempt in attempts {
        match attempt {
            Ok(ok) => connected.push(ok),
            Err(e) => {
                if notes.len() < 20 {
                    notes.push(e);
                }
            }
        }
    }
    let failed = n - connected.len();
    let mut hist = new_histogram();
    for (took, _) in &connected {
        hist.saturating_record(took.as_nanos() as u64);
    }
    env.progress(format!(
        "{} connected in {connect_s:.2} s ({:.0}/s); holding {:.1} s",
        connected.len(),
        connected.len() as f64 / connect_s,
        spec.hold_secs
    ));
    tokio::time::sleep(Duration::from_secs_f64(spec.hold_secs.max(0.0))).await;
    let after = env.server_sample();
    let closed_while_held = closed.load(Relaxed);
    let _ = stop.send(true);
    let mut closing = tokio::task::JoinSet::new();
    let count = connected.len();
    for (_, holder) in connected {
        closing.spawn(async move {
            if let Ok(mut ws) = holder.await {
                let _ = ws.close(None).await;
                while let Some(Ok(_)) = ws.next().await {}
            }
        });
    }
    let _ = tokio::time::timeout(Duration::from_secs(10), async {
        while closing.join_next().await.is_some() {}
    })
    .await;
    closing.abort_all();
    notes.extend(problems.lock().unwrap_or_else(|e| e.into_inner()).drain(..));
    let per_connection = match (before, after) {
        (Some(b), Some(a)) if count > 0 => {
            Some((a.rss_kib as f64 - b.rss_kib as f64) * 1024.0 / count as f64)
        }
        _ => None,
    };
    let result = ConnectionsResult {
        requested: n,
        connected: count,
        failed,
        closed_while_held,
        connect_s,
        connects_per_s: count as f64 / connect_s.max(1e-9),
        connect_latency: Latency::from_ns(&hist),
        server_rss_before_kib: before.map(|s| s.rss_kib),
        server_rss_after_kib: after.map(|s| s.rss_kib),
        server_bytes_per_connection: per_connection,
        generator_cpu_pct_connecting: cpu / connect_s.max(1e-9) * 100.0,
    };
    Ok((result, notes))
}

/// Keeps one idle connection open (answering pings) until told to stop.
async fn hold(
    ws: &mut Ws,
    mut stop: watch::Receiver<bool>,
    closed: &AtomicU64,
    problems: &Mutex<Vec<String>>,
    i: usize,
) {
    let stopped = stop.wait_for(|s| *s);
    tokio::pin!(stopped);
    loop {
        let next = tokio::select! {
            biased;
            _ = &mut stopped => return,
            next = ws.next() => next,
        };
        let why = match next {
            Some(Ok(Message::Close(frame))) => format!("closed by the server: {frame:?}"),
            Some(Ok(_)) => continue,
            Some(Err(e)) => format!("socket error: {e}"),
            None => "connection ended".into(),
        };
        closed.fetch_add(1, Relaxed);
        let mut p = problems.lock().unwrap_or_else(|e| e.into_inner());
        if p.len() < 20 {
            p.push(format!("connection {i}: {why}"));
        }
        return;
    }
}

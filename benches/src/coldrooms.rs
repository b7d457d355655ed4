//! The `coldrooms` scenario: the first message into M rooms that are not
//! running on the node (rooms/s).
//!
//! Set-up: one user creates M rooms over REST and posts `--seed-messages`
//! into each (so each has history and a checkpoint), then the generator waits
//! until the node has stopped them (`troupe_rooms_owned` back to where it was
//! before; the node needs a short `rooms.idle_stop_secs`, which `run.sh`
//! sets for this scenario). Measured: `--concurrency` kept-alive HTTP
//! connections post the first message into every room, each room once, as
//! fast as the node answers (`POST /api/v1/rooms/{room}/messages`); every
//! room must restore before it can take its message. A post answered with
//! anything but 201 (a `503 unavailable`, a timeout) is posted again, same
//! `client_id`, after 100 ms: a room counts as served at its first 201, and
//! its latency runs from its first attempt. Then the same again into the
//! now running rooms (`warm`), for the cost of a post without a restore.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::Serialize;
use serde_json::json;
use tokio::time::Instant;

use crate::cli::{Env, Target};
use crate::load::run_limited;
use crate::net::{get, HttpConn};
use crate::proto::{self, REST_TIMEOUT};
use crate::report::{new_histogram, Latency};

pub struct ColdRoomsSpec {
    pub rooms: usize,
    /// Posts in flight at once while measuring (one connection each).
    pub concurrency: usize,
    /// Messages posted into each room before it goes cold.
    pub seed_messages: usize,
    /// Longest wait for the node to stop the rooms, s.
    pub cold_timeout_secs: f64,
    /// One attempt's deadline, s (past it the post is sent again).
    pub post_timeout_secs: f64,
    /// Give up on a room after this long, s.
    pub give_up_secs: f64,
}

/// One pass of first posts over every room.
#[derive(Debug, Clone, Serialize)]
pub struct ColdPhase {
    pub rooms: usize,
    /// Rooms whose post was answered 201.
    pub served: usize,
    /// Rooms given up on (no 201 within --give-up-secs).
    pub failed: usize,
    /// From the first post to the last room served, s.
    pub elapsed_s: f64,
    /// served / elapsed_s.
    pub rooms_per_s: f64,
    /// From a room's first attempt to its 201.
    pub latency: Latency,
    /// Attempts answered otherwise (then posted again), by answer.
    pub retried: std::collections::BTreeMap<String, u64>,
    /// The node's CPU during the pass, percent of one core.
    pub server_cpu_pct: Option<f64>,
}

#[derive(Debug, Clone, Serialize)]
pub struct ColdRoomsResult {
    pub rooms: usize,
    pub concurrency: usize,
    pub seed_messages: usize,
    /// Rooms created per second during the set-up (each create starts the room).
    pub created_per_s: f64,
    /// How long the node took to stop the rooms after the set-up, s.
    pub cooled_s: f64,
    /// `troupe_rooms_owned` before the set-up, after it, and once cold.
    pub rooms_owned: [i64; 3],
    pub cold: ColdPhase,
    pub warm: ColdPhase,
}

pub async fn run(
    env: &Env,
    spec: &ColdRoomsSpec,
) -> anyhow::Result<(ColdRoomsResult, Vec<String>)> {
    anyhow::ensure!(
        env.common.target == Target::Troupe,
        "coldrooms runs against troupe only (the baseline has no rooms to restore)"
    );
    anyhow::ensure!(
        spec.rooms >= 1 && spec.concurrency >= 1,
        "at least one room and a concurrency of one"
    );
    let mut problems = Vec::new();
    let user = format!("{}cold", env.run_id);
    let token = proto::register_and_login(env.addr, env.sources.pick(), &user).await?;
    let owned_before = rooms_owned(env).await?;
    let names: Vec<String> = (0..spec.rooms)
        .map(|i| format!("{}cold{i}", env.run_id))
        .collect();

    env.progress(format!(
        "setup: creating {} rooms, {} message(s) each",
        spec.rooms, spec.seed_messages
    ));
    let started = Instant::now();
    let conns = Arc::new(ConnPool::default());
    run_limited(env, "create", spec.rooms, |i| {
        let (env, conns, token, room) =
            (env.clone(), conns.clone(), token.clone(), names[i].clone());
        let seeds = spec.seed_messages;
        async move {
            let mut conn = conns.take(&env).await?;
            let body = json!({ "name": room }).to_string();
            let (status, answer) = conn
                .request(
                    "POST",
                    "/api/v1/rooms",
                    Some(&token),
                    Some(&body),
                    REST_TIMEOUT,
                )
                .await?;
            anyhow::ensure!(status == 201, "creating {room}: HTTP {status}: {answer}");
            for k in 0..seeds {
                let (status, answer) =
                    post(&mut conn, &token, &room, &format!("seed{k}"), REST_TIMEOUT).await?;
                anyhow::ensure!(status == 201, "seeding {room}: HTTP {status}: {answer}");
            }
            conns.give(conn);
            Ok(())
        }
    })
    .await?;
    let created_per_s = spec.rooms as f64 / started.elapsed().as_secs_f64();
    drop(conns);
    let owned_after = rooms_owned(env).await?;

    env.progress(format!(
        "waiting for the node to stop the rooms ({owned_after} running, {owned_before} before)"
    ));
    let cooling = Instant::now();
    let deadline = cooling + Duration::from_secs_f64(spec.cold_timeout_secs);
    let mut owned_cold = owned_after;
    while owned_cold > owned_before {
        anyhow::ensure!(
            Instant::now() < deadline,
            "the node still runs {owned_cold} rooms after {} s (was {owned_before}): \
             set rooms.idle_stop_secs low (run.sh sets TROUPE_ROOMS__IDLE_STOP_SECS=2)",
            spec.cold_timeout_secs
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
        owned_cold = rooms_owned(env).await?;
    }
    let cooled_s = cooling.elapsed().as_secs_f64();
    // Let the last stops' writes finish before measuring.
    tokio::time::sleep(Duration::from_millis(500)).await;

    env.progress(format!(
        "cold: first message into {} rooms, {} at a time",
        spec.rooms, spec.concurrency
    ));
    let cold = pass(env, spec, &token, &names, "first").await?;
    env.progress(format!(
        "cold: {:.0} rooms/s, p50 {:.1} ms, p99 {:.1} ms",
        cold.rooms_per_s, cold.latency.p50_ms, cold.latency.p99_ms
    ));
    let warm = pass(env, spec, &token, &names, "second").await?;
    env.progress(format!(
        "warm: {:.0} rooms/s, p50 {:.1} ms, p99 {:.1} ms",
        warm.rooms_per_s, warm.latency.p50_ms, warm.latency.p99_ms
    ));
    for (what, phase) in [("cold", &cold), ("warm", &warm)] {
        if phase.failed > 0 {
            problems.push(format!(
                "{what}: {} rooms never took their message within {} s",
                phase.failed, spec.give_up_secs
            ));
        }
    }
    Ok((
        ColdRoomsResult {
            rooms: spec.rooms,
            concurrency: spec.concurrency,
            seed_messages: spec.seed_messages,
            created_per_s,
            cooled_s,
            rooms_owned: [owned_before, owned_after, owned_cold],
            cold,
            warm,
        },
        problems,
    ))
}

/// Kept-alive connections shared by the set-up's tasks.
#[derive(Default)]
struct ConnPool(Mutex<Vec<HttpConn>>);

impl ConnPool {
    async fn take(&self, env: &Env) -> anyhow::Result<HttpConn> {
        let kept = self.0.lock().unwrap_or_else(|e| e.into_inner()).pop();
        match kept {
            Some(conn) => Ok(conn),
            None => HttpConn::connect(env.addr, env.sources.pick()).await,
        }
    }

    fn give(&self, conn: HttpConn) {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).push(conn);
    }
}

async fn post(
    conn: &mut HttpConn,
    token: &str,
    room: &str,
    client_id: &str,
    timeout: Duration,
) -> anyhow::Result<(u16, String)> {
    let body = json!({ "body": "hello", "client_id": client_id }).to_string();
    conn.request(
        "POST",
        &format!("/api/v1/rooms/{room}/messages"),
        Some(token),
        Some(&body),
        timeout,
    )
    .await
}

/// Posts one message into every room, `spec.concurrency` at a time.
async fn pass(
    env: &Env,
    spec: &ColdRoomsSpec,
    token: &str,
    names: &[String],
    client_id: &str,
) -> anyhow::Result<ColdPhase> {
    let next = Arc::new(AtomicUsize::new(0));
    let served = Arc::new(AtomicU64::new(0));
    let failed = Arc::new(AtomicU64::new(0));
    let latencies = Arc::new(Mutex::new(new_histogram()));
    let retried = Arc::new(Mutex::new(std::collections::BTreeMap::<String, u64>::new()));
    let names: Arc<[String]> = names.into();
    let attempt_timeout = Duration::from_secs_f64(spec.post_timeout_secs);
    let give_up = Duration::from_secs_f64(spec.give_up_secs);
    // Connections first, so the pass measures posts, not connects.
    let mut conns = Vec::with_capacity(spec.concurrency);
    for _ in 0..spec.concurrency.min(names.len()) {
        conns.push(HttpConn::connect(env.addr, env.sources.pick()).await?);
    }
    let server0 = env.server_sample();
    let started = Instant::now();
    let last_done = Arc::new(Mutex::new(started));
    let mut workers = Vec::new();
    for mut conn in conns {
        let (next, served, failed) = (next.clone(), served.clone(), failed.clone());
        let (latencies, retried, names) = (latencies.clone(), retried.clone(), names.clone());
        let (token, client_id, env) = (token.to_string(), client_id.to_string(), env.clone());
        let last_done = last_done.clone();
        workers.push(tokio::spawn(async move {
            loop {
                let i = next.fetch_add(1, Relaxed);
                let Some(room) = names.get(i) else { break };
                let first = Instant::now();
                loop {
                    let answer = post(&mut conn, &token, room, &client_id, attempt_timeout).await;
                    let why = match answer {
                        Ok((201, _)) => {
                            let ns = first.elapsed().as_nanos() as u64;
                            let _ = latencies
                                .lock()
                                .unwrap_or_else(|e| e.into_inner())
                                .record(ns.max(1));
                            served.fetch_add(1, Relaxed);
                            *last_done.lock().unwrap_or_else(|e| e.into_inner()) = Instant::now();
                            break;
                        }
                        Ok((status, body)) => {
                            let code = serde_json::from_str::<serde_json::Value>(&body)
                                .ok()
                                .and_then(|v| v["code"].as_str().map(str::to_string))
                                .unwrap_or_default();
                            format!("HTTP {status} {code}")
                        }
                        Err(e) => {
                            // The connection is unusable after an error: a new one.
                            match HttpConn::connect(env.addr, env.sources.pick()).await {
                                Ok(c) => conn = c,
                                Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
                            }
                            if e.to_string().contains("no answer within") {
                                "timeout".to_string()
                            } else {
                                "connection error".to_string()
                            }
                        }
                    };
                    *retried
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .entry(why)
                        .or_default() += 1;
                    if first.elapsed() >= give_up {
                        failed.fetch_add(1, Relaxed);
                        break;
                    }
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        }));
    }
    let progress = {
        let (env, served, n) = (env.clone(), served.clone(), names.len());
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_secs(1)).await;
                let done = served.load(Relaxed);
                env.progress(format!(
                    "  {done}/{n} rooms ({:.0}/s)",
                    done as f64 / started.elapsed().as_secs_f64()
                ));
            }
        })
    };
    for w in workers {
        w.await?;
    }
    progress.abort();
    let elapsed_s = last_done
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .duration_since(started)
        .as_secs_f64();
    let server_cpu_pct = match (server0, env.server_sample()) {
        (Some(a), Some(b)) => Some((b.cpu_s - a.cpu_s) / elapsed_s.max(1e-9) * 100.0),
        _ => None,
    };
    let served = served.load(Relaxed) as usize;
    let latency = Latency::from_ns(&latencies.lock().unwrap_or_else(|e| e.into_inner()));
    let retried = retried.lock().unwrap_or_else(|e| e.into_inner()).clone();
    Ok(ColdPhase {
        rooms: names.len(),
        served,
        failed: failed.load(Relaxed) as usize,
        elapsed_s,
        rooms_per_s: served as f64 / elapsed_s.max(1e-9),
        latency,
        retried,
        server_cpu_pct,
    })
}

/// The node's `troupe_rooms_owned` gauge.
async fn rooms_owned(env: &Env) -> anyhow::Result<i64> {
    let (status, text) = get(env.addr, env.sources.pick(), "/metrics", REST_TIMEOUT).await?;
    anyhow::ensure!(status == 200, "GET /metrics: HTTP {status}");
    text.lines()
        .find_map(|line| {
            let rest = line.strip_prefix("troupe_rooms_owned")?;
            let value = rest.split_whitespace().last()?;
            value.parse::<f64>().ok().map(|v| v as i64)
        })
        .ok_or_else(|| anyhow::anyhow!("no troupe_rooms_owned in /metrics"))
}

//! A node no client can exhaust: outbound queues bounded in bytes (a client
//! that stops reading is closed with 4008, whatever it asked for), and rate
//! limits on every kind of client action (`rate_limited` with
//! `retry_after_ms`, HTTP 429 with `Retry-After`, counted by kind).

mod common;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::{account, read_until_closed, rss_bytes_of, stalled_connection, Client, Node};
use futures_util::SinkExt;
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::Message;

const MIB: u64 = 1024 * 1024;

/// A message body at the size limit: 4,000 emoji, 16,000 bytes of UTF-8.
fn large_body() -> String {
    "\u{1F600}".repeat(4000)
}

/// Keeps the largest resident size of process `pid` seen until `stop`.
fn sample_rss(pid: u32, stop: Arc<AtomicBool>) -> Arc<AtomicU64> {
    let max = Arc::new(AtomicU64::new(0));
    let out = max.clone();
    tokio::spawn(async move {
        while !stop.load(Ordering::Relaxed) {
            max.fetch_max(rss_bytes_of(pid), Ordering::Relaxed);
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    });
    out
}

fn is_rate_limited(f: &Value) -> bool {
    f["type"] == "error" && f["code"] == "rate_limited"
}

/// The amplification of issue 10: one user, 200 large messages, three
/// connections that never read asking 120 times each for a 3.2 MB page.
#[tokio::test]
async fn history_asked_by_clients_that_never_read_cannot_grow_the_node() {
    let node = Node::start_with(&[
        ("TROUPE_LIMITS__MESSAGE_BURST", "100000"),
        ("TROUPE_LIMITS__MESSAGES_PER_SECOND", "100000"),
        // The history rate limit and the outbound budget keep their defaults.
    ])
    .await;
    let mut ann = Client::new_user(&node, "ann").await;
    ann.join("big").await;
    let body = large_body();
    for i in 0..200 {
        let ack = ann.say("big", &body, &format!("fill{i}")).await;
        assert_eq!(ack["type"], "ack", "{ack}");
        ann.drain_for(Duration::ZERO).await;
    }
    // One page read normally first: what a page costs once is the baseline.
    ann.send(json!({"type": "history", "room": "big", "limit": 200}))
        .await;
    let page = ann.expect("history").await;
    assert_eq!(page["messages"].as_array().map(Vec::len), Some(200));
    let baseline = node.rss_bytes();

    let stop = Arc::new(AtomicBool::new(false));
    let peak = sample_rss(node.pid(), stop.clone());
    let mut stalled = Vec::new();
    for _ in 0..3 {
        stalled.push(stalled_connection(&node, &ann.token).await);
    }
    let ask = json!({"type": "history", "room": "big", "limit": 200}).to_string();
    for ws in &mut stalled {
        for _ in 0..120 {
            ws.send(Message::Text(ask.clone().into()))
                .await
                .expect("the request is sent");
        }
    }
    // The node works through the 360 requests meanwhile (today, each one
    // queued a 3.2 MB answer, and the node grew until it had answered them
    // all): watch until its memory stops growing or has grown too much.
    let started = tokio::time::Instant::now();
    let (mut high, mut rose) = (0, started);
    loop {
        tokio::time::sleep(Duration::from_millis(200)).await;
        let now = peak.load(Ordering::Relaxed);
        if now > high + MIB {
            (high, rose) = (now, tokio::time::Instant::now());
        }
        if now.saturating_sub(baseline) >= 100 * MIB || rose.elapsed() >= Duration::from_secs(3) {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(120),
            "the node's memory kept growing for 2 minutes"
        );
    }
    let grown = peak.load(Ordering::Relaxed).saturating_sub(baseline);
    assert!(
        grown < 100 * MIB,
        "the node's RSS grew by {} MiB (from {} MiB)",
        grown / MIB,
        baseline / MIB
    );

    // Each connection was closed as a slow consumer, or refused.
    let reads = stalled
        .iter_mut()
        .map(|ws| read_until_closed(ws, is_rate_limited));
    for (i, (frames, code)) in futures_util::future::join_all(reads)
        .await
        .into_iter()
        .enumerate()
    {
        let limited = frames.last().filter(|f| is_rate_limited(f));
        if let Some(e) = limited {
            assert!(e["retry_after_ms"].as_u64().unwrap_or(0) > 0, "{e}");
        } else {
            assert_eq!(
                code,
                Some(4008),
                "connection {i}: neither 4008 nor rate_limited after {} frames",
                frames.len()
            );
        }
    }
    let grown = peak.load(Ordering::Relaxed).saturating_sub(baseline);
    stop.store(true, Ordering::Relaxed);
    assert!(
        grown < 100 * MIB,
        "the node's RSS grew by {} MiB",
        grown / MIB
    );
    eprintln!(
        "RSS: baseline {} MiB, grew by at most {} MiB",
        baseline / MIB,
        grown / MIB
    );

    // The node still serves a normal client.
    let mut bob = Client::new_user(&node, "bob").await;
    bob.join("big").await;
    bob.send(json!({"type": "history", "room": "big", "limit": 5}))
        .await;
    let page = bob.expect("history").await;
    assert_eq!(page["messages"].as_array().map(Vec::len), Some(5), "{page}");
    assert_eq!(bob.say("big", "still here", "b1").await["type"], "ack");
}

/// Problem 2 of issue 10: a member that never reads, in a room where six
/// users each send 230 large messages. A queue item holds a whole commit
/// batch, so only a bound in bytes catches it.
#[tokio::test]
async fn a_member_that_never_reads_is_closed_4008_under_room_traffic() {
    let node = Node::start_with(&[
        ("TROUPE_LIMITS__MESSAGE_BURST", "100000"),
        ("TROUPE_LIMITS__MESSAGES_PER_SECOND", "100000"),
    ])
    .await;
    let mut senders = Vec::new();
    for i in 0..6 {
        let mut c = Client::new_user(&node, &format!("sender{i}")).await;
        c.join("busy").await;
        senders.push(c);
    }
    let slow_token = account(&node, "slow").await;
    let mut slow = Client::connect(&node, "slow", &slow_token).await;
    slow.join("busy").await;
    slow.close().await;
    let mut stalled = stalled_connection(&node, &slow_token).await;
    // Any frame ends the resume grace: the session is live.
    stalled
        .send(Message::Text(json!({"type": "ping"}).to_string().into()))
        .await
        .expect("ping");
    let closes = node.metric("troupe_slow_consumer_closes_total", "").await;

    let body = large_body();
    let done = AtomicBool::new(false);
    let send_all = async {
        let runs = senders.iter_mut().enumerate().map(|(i, c)| {
            let body = &body;
            async move {
                for n in 0..230 {
                    let ack = c.say("busy", body, &format!("s{i}-{n}")).await;
                    assert_eq!(ack["type"], "ack", "sender{i} message {n}: {ack}");
                    c.drain_for(Duration::ZERO).await;
                }
            }
        });
        futures_util::future::join_all(runs).await;
        done.store(true, Ordering::Relaxed);
    };
    // Reads the stalled connection once the node has closed it (while its
    // close frame still waits to be sent), or once every message was sent.
    let watch = async {
        while !done.load(Ordering::Relaxed)
            && node.metric("troupe_slow_consumer_closes_total", "").await <= closes
        {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        read_until_closed(&mut stalled, |_| false).await
    };
    let ((), (frames, code)) = tokio::join!(send_all, watch);
    assert_eq!(
        code,
        Some(4008),
        "the member that never read was not closed as a slow consumer ({} frames came)",
        frames.len()
    );
    assert_eq!(
        node.metric("troupe_slow_consumer_closes_total", "").await - closes,
        1.0,
        "/metrics counts the close"
    );
}

/// A `rate_limited` error frame's `retry_after_ms`, checked.
fn retry_after(e: &Value) -> Duration {
    assert_eq!(e["code"], "rate_limited", "{e}");
    let ms = e["retry_after_ms"].as_u64().expect("retry_after_ms");
    assert!((1..=60_000).contains(&ms), "{e}");
    Duration::from_millis(ms)
}

/// A 429 answer: its `Retry-After` (seconds, rounded up) agrees with the
/// JSON error's `retry_after_ms`.
async fn too_many(response: reqwest::Response) -> Duration {
    assert_eq!(response.status(), 429, "{}", response.url());
    let header: u64 = response
        .headers()
        .get("retry-after")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
        .expect("a Retry-After header in seconds");
    let body: Value = response.json().await.expect("a JSON error");
    let wait = retry_after(&body["error"]);
    assert_eq!(header, (wait.as_millis() as u64).div_ceil(1000), "{body}");
    wait
}

#[tokio::test]
async fn every_kind_of_action_is_rate_limited_with_a_retry_after() {
    let admin = "an-admin-token-of-16+";
    let node = Node::start_with(&[
        ("TROUPE_ADMIN__TOKEN", admin),
        ("TROUPE_RATE_LIMITS__HISTORY__BURST", "2"),
        ("TROUPE_RATE_LIMITS__HISTORY__PER_SECOND", "2"),
        ("TROUPE_RATE_LIMITS__TYPING__BURST", "2"),
        ("TROUPE_RATE_LIMITS__TYPING__PER_SECOND", "2"),
        ("TROUPE_RATE_LIMITS__JOIN__BURST", "3"),
        ("TROUPE_RATE_LIMITS__JOIN__PER_SECOND", "2"),
        ("TROUPE_RATE_LIMITS__CREATE_ROOM__BURST", "1"),
        ("TROUPE_RATE_LIMITS__CREATE_ROOM__PER_SECOND", "1"),
        ("TROUPE_RATE_LIMITS__REGISTER__BURST", "3"),
        ("TROUPE_RATE_LIMITS__REGISTER__PER_SECOND", "1"),
        ("TROUPE_RATE_LIMITS__ADMIN_AUTH__BURST", "2"),
        ("TROUPE_RATE_LIMITS__ADMIN_AUTH__PER_SECOND", "0.5"),
    ])
    .await;
    let mut ann = Client::new_user(&node, "ann").await; // registration 1 of 3
    let refused = |kind: &str| format!("kind=\"{kind}\"");

    // join: lobby, a and b; c is refused until the bucket refills.
    for room in ["lobby", "a", "b"] {
        ann.join(room).await;
    }
    ann.send(json!({"type": "join", "room": "c"})).await;
    let e = ann.expect_error("rate_limited").await;
    assert_eq!(e["ref"], "join");
    tokio::time::sleep(retry_after(&e)).await;
    ann.join("c").await;

    // history
    for _ in 0..2 {
        ann.send(json!({"type": "history", "room": "lobby"})).await;
        ann.expect("history").await;
    }
    ann.send(json!({"type": "history", "room": "lobby"})).await;
    let e = ann.expect_error("rate_limited").await;
    assert_eq!(e["ref"], "history");
    tokio::time::sleep(retry_after(&e)).await;
    ann.send(json!({"type": "history", "room": "lobby"})).await;
    ann.expect("history").await;

    // typing: the third notice in a row is refused; later ones go again.
    let typing = json!({"type": "typing", "room": "lobby", "active": true});
    for _ in 0..3 {
        ann.send(typing.clone()).await;
    }
    let e = ann.expect_error("rate_limited").await;
    assert_eq!(e["ref"], "typing");
    tokio::time::sleep(retry_after(&e)).await;
    ann.send(typing.clone()).await;
    ann.send(json!({"type": "ping", "nonce": 1})).await;
    ann.expect("pong").await;
    assert!(
        !ann.saw(|f| f["type"] == "error"),
        "typing works again after the wait"
    );

    // Room creation over REST: 429 with Retry-After.
    let create = |name: &str| {
        common::http()
            .post(node.url("/api/v1/rooms"))
            .bearer_auth(&ann.token)
            .json(&json!({"name": name}))
            .send()
    };
    let mut made = 0;
    let refused_create = loop {
        let r = create(&format!("made{made}")).await.expect("answers");
        if r.status() != 201 {
            break r;
        }
        made += 1;
        assert!(made <= 2, "a burst of 1 created {made} rooms");
    };
    let wait = too_many(refused_create).await;
    tokio::time::sleep(wait).await;
    let r = create(&format!("made{made}")).await.expect("answers");
    assert_eq!(r.status(), 201);

    // Registration, per address (the bucket refilled a little meanwhile).
    let mut registered = 0;
    let refused_register = loop {
        let r = common::register(&node, &format!("reg{registered}"), common::PASSWORD).await;
        if r.status() != 201 {
            break r;
        }
        registered += 1;
        assert!(
            registered <= 4,
            "a burst of 3 registered {registered} users"
        );
    };
    let wait = too_many(refused_register).await;
    tokio::time::sleep(wait).await;
    let r = common::register(&node, &format!("reg{registered}"), common::PASSWORD).await;
    assert_eq!(r.status(), 201);

    // Admin-token failures, per address: after two, even the right token
    // is refused until the bucket refills (nobody guesses at speed).
    let admin_get = |token: &str| {
        common::http()
            .get(node.url("/admin/nodes"))
            .bearer_auth(token)
            .send()
    };
    for _ in 0..2 {
        let r = admin_get("a-wrong-token-of-16++").await.expect("answers");
        assert_eq!(r.status(), 401);
    }
    let wait = too_many(admin_get(admin).await.expect("answers")).await;
    assert!(
        node.log_text().contains("127.0.0.1"),
        "the failures are logged with the client address"
    );
    tokio::time::sleep(wait).await;
    assert_eq!(admin_get(admin).await.expect("answers").status(), 200);

    for kind in [
        "join",
        "history",
        "typing",
        "create_room",
        "register",
        "admin_auth",
    ] {
        let n = node
            .metric("troupe_rate_limited_total", &refused(kind))
            .await;
        assert!(
            n >= 1.0,
            "troupe_rate_limited_total{{kind=\"{kind}\"}} is {n}"
        );
    }
    assert_eq!(
        node.metric("troupe_rate_limited_total", &refused("members"))
            .await,
        0.0,
        "kinds nobody exceeded stay at 0"
    );
}

//! `GET /metrics` as an operator's scraper sees it: OpenMetrics text, parsed
//! with a Prometheus text parser (after the one renaming a Prometheus server
//! does itself: see [`openmetrics_to_prometheus`]); every metric documented in docs/metrics.md
//! is there with its type, and chat traffic moves the counters by what was
//! sent.

mod common;

use std::time::Duration;

use common::{http, Client, Node, WAIT};
use prometheus_parse::{Sample, Scrape, Value};
use serde_json::json;

/// (name, type) of every metric in docs/metrics.md's table.
fn documented() -> Vec<(String, String)> {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/docs/metrics.md");
    let text = std::fs::read_to_string(path).expect("docs/metrics.md");
    let rows: Vec<(String, String)> = text
        .lines()
        .filter_map(|line| {
            let (prefix, rest) = ["troupe_", "process_"]
                .into_iter()
                .find_map(|p| Some((p, line.strip_prefix(&format!("| `{p}"))?)))?;
            let mut cells = rest.split('|');
            let name = format!("{prefix}{}", cells.next()?.trim().trim_end_matches('`'));
            let kind = cells.next()?.trim().to_string();
            Some((name, kind))
        })
        .collect();
    assert!(
        rows.len() >= 16,
        "docs/metrics.md documents {} metrics: {rows:?}",
        rows.len()
    );
    rows
}

async fn scrape(node: &Node) -> Scrape {
    let response = http()
        .get(node.url("/metrics"))
        .send()
        .await
        .expect("/metrics answers");
    assert_eq!(response.status(), 200);
    let content_type = response
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string();
    assert!(
        content_type.starts_with("application/openmetrics-text; version=1.0.0"),
        "{content_type}"
    );
    let body = response.text().await.expect("a body");
    assert!(
        body.ends_with("# EOF\n"),
        "OpenMetrics text ends with # EOF"
    );
    let text = openmetrics_to_prometheus(&body);
    Scrape::parse(text.lines().map(|l| Ok(l.to_string()))).expect("Prometheus text")
}

/// OpenMetrics names a counter family `x` and its sample `x_total`; the
/// Prometheus text format (which `prometheus-parse` reads) names both
/// `x_total`. Renames the counters' HELP and TYPE lines and drops `# EOF`,
/// as Prometheus does when it scrapes OpenMetrics.
fn openmetrics_to_prometheus(body: &str) -> String {
    let counters: Vec<&str> = body
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE ")?.strip_suffix(" counter"))
        .collect();
    let mut out = String::with_capacity(body.len());
    for line in body.lines() {
        if line == "# EOF" || line.starts_with("# UNIT ") {
            continue;
        }
        let renamed = ["# HELP ", "# TYPE "].iter().find_map(|prefix| {
            let rest = line.strip_prefix(prefix)?;
            let (name, tail) = rest.split_once(' ')?;
            counters
                .contains(&name)
                .then(|| format!("{prefix}{name}_total {tail}"))
        });
        out.push_str(renamed.as_deref().unwrap_or(line));
        out.push('\n');
    }
    out
}

/// Scrapes until `done` holds (the node's actors update some metrics just
/// after the frames the client already saw), at most [`WAIT`]; the last
/// scrape either way, for the caller's assertions to judge.
async fn scrape_until(node: &Node, done: impl Fn(&Scrape) -> bool) -> Scrape {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let s = scrape(node).await;
        if done(&s) || tokio::time::Instant::now() >= deadline {
            return s;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn samples<'a>(s: &'a Scrape, name: &str) -> Vec<&'a Sample> {
    s.samples.iter().filter(|x| x.metric == name).collect()
}

/// The value of the one sample of `name` whose labels include `labels`.
fn value(s: &Scrape, name: &str, labels: &[(&str, &str)]) -> f64 {
    let found: Vec<&Sample> = samples(s, name)
        .into_iter()
        .filter(|x| labels.iter().all(|(k, v)| x.labels.get(k) == Some(*v)))
        .collect();
    assert_eq!(found.len(), 1, "{name} {labels:?}: {found:?}");
    match &found[0].value {
        Value::Counter(v) | Value::Gauge(v) | Value::Untyped(v) => *v,
        other => panic!("{name}: not a single value: {other:?}"),
    }
}

/// A histogram's observation count, from its `+Inf` bucket (the parser
/// folds the buckets into one sample named after the family).
fn histogram_count(s: &Scrape, name: &str) -> f64 {
    let found = samples(s, name);
    assert_eq!(found.len(), 1, "{name}: {found:?}");
    let Value::Histogram(buckets) = &found[0].value else {
        panic!("{name} is not a histogram: {:?}", found[0]);
    };
    let inf = buckets
        .iter()
        .find(|b| b.less_than.is_infinite())
        .expect("a +Inf bucket");
    assert_eq!(inf.count, value(s, &format!("{name}_count"), &[]));
    inf.count
}

/// The observation count of the labelled histogram `name{labels}`.
fn labelled_histogram_count(s: &Scrape, name: &str, labels: &[(&str, &str)]) -> f64 {
    let found: Vec<&Sample> = samples(s, name)
        .into_iter()
        .filter(|x| labels.iter().all(|(k, v)| x.labels.get(k) == Some(*v)))
        .collect();
    assert_eq!(found.len(), 1, "{name} {labels:?}: {found:?}");
    let Value::Histogram(buckets) = &found[0].value else {
        panic!("{name} is not a histogram: {:?}", found[0]);
    };
    buckets
        .iter()
        .find(|b| b.less_than.is_infinite())
        .expect("a +Inf bucket")
        .count
}

#[tokio::test]
async fn store_calls_and_the_process_are_measured() {
    let node = Node::start().await;
    let store = |s: &Scrape, store: &str, op: &str| {
        labelled_histogram_count(s, "troupe_store_seconds", &[("store", store), ("op", op)])
    };
    let before = scrape(&node).await;
    let appends_before = histogram_count(&before, "troupe_log_append_seconds");
    let store_appends_before = store(&before, "log", "append");
    let mut ann = Client::new_user(&node, "ann").await;
    ann.join("lobby").await;
    for i in 0..5 {
        let ack = ann.say("lobby", &format!("m{i}"), &format!("c{i}")).await;
        assert_eq!(ack["type"], "ack", "{ack}");
    }
    let after = scrape_until(&node, |s| {
        histogram_count(s, "troupe_log_append_seconds") - appends_before
            == store(s, "log", "append") - store_appends_before
    })
    .await;
    // The room's appends and the store's appends are the same calls.
    let appends = histogram_count(&after, "troupe_log_append_seconds") - appends_before;
    assert!(appends >= 1.0, "{appends}");
    assert_eq!(
        store(&after, "log", "append") - store_appends_before,
        appends
    );
    // Registration and login read the directory; the session's token and the
    // sends' rate limits went to the ephemeral store.
    assert!(store(&after, "directory", "read") > store(&before, "directory", "read"));
    assert!(store(&after, "directory", "write") > store(&before, "directory", "write"));
    assert!(store(&after, "ephemeral", "token") > store(&before, "ephemeral", "token"));
    assert!(store(&after, "ephemeral", "rate_limit") > store(&before, "ephemeral", "rate_limit"));

    let rss = value(&after, "process_resident_memory_bytes", &[]);
    let expected = node.rss_bytes() as f64;
    assert!(
        rss > 1e6 && (rss - expected).abs() < expected * 0.5,
        "process_resident_memory_bytes {rss}, /proc says {expected}"
    );
    assert!(value(&after, "process_open_fds", &[]) >= 3.0);
    assert!(value(&after, "process_threads", &[]) >= 1.0);
    assert!(value(&after, "process_cpu_seconds_total", &[]) > 0.0);
    let start = value(&after, "process_start_time_seconds", &[]);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    assert!(
        start <= now && start > now - 600.0,
        "started at {start}, now {now}"
    );
}

#[tokio::test]
async fn every_documented_metric_is_exposed_with_its_type() {
    let node = Node::start().await;
    let s = scrape(&node).await;
    for (name, kind) in documented() {
        let found = samples(&s, &name);
        assert!(!found.is_empty(), "{name} is documented but not exposed");
        assert!(s.docs.contains_key(&name), "{name} has no # HELP");
        for sample in found {
            let ok = match kind.as_str() {
                "counter" => matches!(sample.value, Value::Counter(_)),
                "gauge" => matches!(sample.value, Value::Gauge(_)),
                "histogram" => matches!(sample.value, Value::Histogram(_)),
                other => panic!("{name}: unknown type {other} in docs/metrics.md"),
            };
            assert!(ok, "{name} should be a {kind}: {sample:?}");
        }
    }
    // Nothing is exposed that the docs do not describe.
    let names: Vec<String> = documented().into_iter().map(|(n, _)| n).collect();
    for name in s.docs.keys() {
        assert!(names.contains(name), "{name} is exposed but not documented");
    }
    // Histogram buckets: 100 µs .. 5 s, then +Inf.
    let Value::Histogram(buckets) = &samples(&s, "troupe_log_append_seconds")[0].value else {
        panic!("troupe_log_append_seconds is not a histogram");
    };
    let bounds: Vec<f64> = buckets.iter().map(|b| b.less_than).collect();
    assert_eq!(bounds.len(), 16, "{bounds:?}");
    assert!(
        bounds.contains(&0.0001) && bounds.contains(&5.0),
        "{bounds:?}"
    );
    // Labelled families expose every label value from the start.
    for kind in ["room", "session"] {
        assert_eq!(
            value(&s, "troupe_actor_restarts_total", &[("kind", kind)]),
            0.0
        );
    }
    for store in ["sql", "log", "presence"] {
        value(&s, "troupe_store_errors_total", &[("store", store)]);
    }
    // A node alone: one member, no connections yet.
    assert_eq!(value(&s, "troupe_cluster_members", &[]), 1.0);
    assert_eq!(value(&s, "troupe_connections", &[]), 0.0);
    assert_eq!(value(&s, "troupe_sessions", &[]), 0.0);
    let health: serde_json::Value = http()
        .get(node.url("/health"))
        .send()
        .await
        .expect("/health answers")
        .json()
        .await
        .expect("JSON");
    let node_name = health["node"].as_str().expect("a node name");
    assert_eq!(
        value(&s, "troupe_build_info", &[("node", node_name)]),
        1.0,
        "build_info names the node"
    );
    assert_eq!(
        samples(&s, "troupe_build_info")[0].labels.get("version"),
        Some(env!("CARGO_PKG_VERSION"))
    );
}

#[tokio::test]
async fn chat_traffic_moves_the_counters_and_gauges() {
    const N: usize = 12;
    let node = Node::start().await;
    let mut ann = Client::new_user(&node, "ann").await;
    let mut bob = Client::new_user(&node, "bob").await;
    ann.join("lobby").await;
    bob.join("lobby").await;
    let gauges = |s: &Scrape| {
        (
            value(s, "troupe_connections", &[]),
            value(s, "troupe_sessions", &[]),
        )
    };
    let before = scrape_until(&node, |s| gauges(s) == (2.0, 2.0)).await;
    assert_eq!(gauges(&before), (2.0, 2.0), "two users connected");
    assert!(
        value(&before, "troupe_rooms_owned", &[]) >= 1.0,
        "lobby runs"
    );
    let received = value(&before, "troupe_messages_received_total", &[]);
    let acked = value(&before, "troupe_messages_acked_total", &[]);
    let delivered = value(&before, "troupe_messages_delivered_total", &[]);
    let appends = histogram_count(&before, "troupe_log_append_seconds");

    // N messages, alternating senders; each one is acked.
    for i in 0..N {
        let sender = if i % 2 == 0 { &mut ann } else { &mut bob };
        let ack = sender
            .say("lobby", &format!("m{i}"), &format!("c{i}"))
            .await;
        assert_eq!(ack["type"], "ack", "{ack}");
    }
    // Both members get all N, their own included.
    for client in [&mut ann, &mut bob] {
        for _ in 0..N {
            client.expect_message("lobby").await;
        }
    }
    // A retry of an acked client_id: received and acked again, delivered not.
    let again = ann.say("lobby", "m0", "c0").await;
    assert_eq!(again["type"], "ack", "{again}");
    assert_eq!(again["seq"], 1, "{again}");
    let n = N as f64;
    let after = scrape_until(&node, |s| {
        value(s, "troupe_messages_delivered_total", &[]) >= delivered + 2.0 * n
            && value(s, "troupe_messages_acked_total", &[]) >= acked + n + 1.0
            && value(s, "troupe_outbox_queued_frames", &[]) == 0.0
    })
    .await;
    assert_eq!(
        value(&after, "troupe_messages_received_total", &[]) - received,
        n + 1.0,
        "N sends and one retry reached the room"
    );
    assert_eq!(
        value(&after, "troupe_messages_acked_total", &[]) - acked,
        n + 1.0,
        "each send and the retry were acked"
    );
    assert_eq!(
        value(&after, "troupe_messages_delivered_total", &[]) - delivered,
        2.0 * n,
        "each message reached both members' sessions"
    );
    let appended = histogram_count(&after, "troupe_log_append_seconds") - appends;
    assert!(
        appended >= 1.0 && appended <= n,
        "N messages took between 1 and N log appends (group commit): {appended}"
    );
    assert!(value(&after, "troupe_log_append_seconds_sum", &[]) > 0.0);
    assert_eq!(
        value(&after, "troupe_outbox_queued_frames", &[]),
        0.0,
        "the clients read everything"
    );
    assert_eq!(value(&after, "troupe_slow_consumer_closes_total", &[]), 0.0);
    assert_eq!(gauges(&after), (2.0, 2.0));

    // One user leaves: the gauges follow.
    bob.close().await;
    let closed = scrape_until(&node, |s| gauges(s) == (1.0, 1.0)).await;
    assert_eq!(
        gauges(&closed),
        (1.0, 1.0),
        "bob's connection and session are gone"
    );
    // The remaining user still chats.
    ann.send(json!({"type": "ping", "nonce": "n1"})).await;
    ann.expect("pong").await;
}

#[tokio::test]
async fn a_slow_consumer_shows_in_the_counter_and_the_queue_depth() {
    let node = Node::start_with(&[
        ("TROUPE_LIMITS__OUTBOUND_QUEUE", "64"),
        ("TROUPE_LIMITS__MESSAGE_BURST", "100000"),
    ])
    .await;
    let mut ann = Client::new_user(&node, "ann").await;
    let mut slow = Client::new_user(&node, "slow").await;
    ann.join("lobby").await;
    slow.join("lobby").await;
    let closes = value(
        &scrape(&node).await,
        "troupe_slow_consumer_closes_total",
        &[],
    );

    // slow stops reading: large messages fill its socket buffers, then its
    // outbox, and the node closes it with 4008.
    let stalled = slow.into_stalled();
    let body = "x".repeat(3900);
    let mut sent = 0u64;
    loop {
        sent += 1;
        assert!(sent < 20_000, "the stalled client was never closed");
        let ack = ann.say("lobby", &body, &format!("c{sent}")).await;
        assert_eq!(ack["type"], "ack", "{ack}");
        // ann keeps reading (its own copies), so only slow falls behind.
        ann.drain_for(Duration::ZERO).await;
        if sent.is_multiple_of(10)
            && value(
                &scrape(&node).await,
                "troupe_slow_consumer_closes_total",
                &[],
            ) > closes
        {
            break;
        }
    }
    drop(stalled);
    let gauges = |s: &Scrape| {
        (
            value(s, "troupe_connections", &[]),
            value(s, "troupe_sessions", &[]),
            value(s, "troupe_outbox_queued_frames", &[]),
        )
    };
    let after = scrape_until(&node, |s| gauges(s) == (1.0, 1.0, 0.0)).await;
    assert_eq!(
        value(&after, "troupe_slow_consumer_closes_total", &[]) - closes,
        1.0,
        "one connection was closed as a slow consumer"
    );
    assert_eq!(
        gauges(&after),
        (1.0, 1.0, 0.0),
        "the slow connection is gone, and what it never read left the queue depth"
    );
}

#[cfg(feature = "test-hooks")]
#[tokio::test]
async fn a_crashed_room_counts_as_a_room_restart() {
    let node = Node::start().await;
    let mut ann = Client::new_user(&node, "ann").await;
    ann.join("lobby").await;
    ann.say("lobby", "before the crash", "c1").await;
    let room = [("kind", "room")];
    let session = [("kind", "session")];
    let before = scrape(&node).await;
    let restarts = value(&before, "troupe_actor_restarts_total", &room);
    ann.send(json!({"type": "debug_panic_room", "room": "lobby"}))
        .await;
    let after = scrape_until(&node, |s| {
        value(s, "troupe_actor_restarts_total", &room) > restarts
    })
    .await;
    assert_eq!(
        value(&after, "troupe_actor_restarts_total", &room) - restarts,
        1.0,
        "the crashed room was restarted once"
    );
    assert_eq!(
        value(&after, "troupe_actor_restarts_total", &session),
        value(&before, "troupe_actor_restarts_total", &session),
        "no session crashed"
    );
    assert!(value(&after, "troupe_rooms_owned", &[]) >= 1.0);
}

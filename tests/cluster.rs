//! Cluster tests: several `troupe` processes on their own loopback addresses
//! (127.0.0.11, .12, ...) sharing Postgres, a Kafka topic (a tansu broker of
//! the test's own) and Redis, under continuous chat traffic from dozens of
//! simulated users (tests/common/load.rs). Nodes are killed, stopped,
//! restarted and added while the users chat; afterwards, what the users saw
//! and what history holds must agree:
//!
//! 1. every acked message is in history with its acked seq;
//! 2. per room, history's seqs run 1..=last without a gap or a duplicate;
//! 3. every member received every message of its room from its join on,
//!    exactly once, in increasing seq order;
//! 4. every user that was disconnected resumed (on another node).
//!
//! Scenarios: `kill -9` of a node and its restart, `kill -9` of the node
//! owning the most of 300 rooms (failover at scale), a fourth node joining,
//! SIGTERM, a client roaming over every node, a node with a wrong cookie
//! (never let in), and a partition: one node cut off from the two others
//! by a network namespace (root and `ip netns` needed), fenced while cut
//! off, back after the heal.
//!
//! Each test prints `scenario=<name> acked=.. delivered=.. lost=..
//! duplicated=.. resumes=..` (run with `--nocapture`):
//!
//! ```sh
//! TEST_TANSU=$(scripts/install-tansu.sh) cargo test --test cluster -- --nocapture --test-threads=1
//! ```
//!
//! Needs Postgres (trust, user root) on 127.0.0.1:5432 and Redis on
//! 127.0.0.1:6379 (or `TEST_POSTGRES` / `TEST_REDIS`), `psql`, `redis-cli`
//! and the tansu binary; a missing one fails the test.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use common::cluster::{Cluster, ClusterOptions, LeaseChange};
use common::load::{standard_users, ExtraCheck, Load, Roam, UserSpec};
use common::Client;

/// 60 users in 10 rooms (6 members each), spread over the nodes.
const USERS: usize = 60;
const ROOMS: usize = 10;
/// Traffic before, between and after the faults.
const WARMUP: Duration = Duration::from_secs(5);
const BETWEEN: Duration = Duration::from_secs(8);

/// The node (index) holding the most leases of `rooms`, and those rooms.
fn busiest_owner(cluster: &Cluster, rooms: &BTreeSet<String>) -> (usize, BTreeSet<String>) {
    let mut owned: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for (room, owner, _) in cluster.room_leases() {
        if let Some(owner) = owner {
            if rooms.contains(&room) {
                owned.entry(owner).or_default().insert(room);
            }
        }
    }
    let (name, rooms) = owned
        .into_iter()
        .filter(|(name, _)| cluster.running_names().contains(name))
        .max_by_key(|(name, rooms)| (rooms.len(), std::cmp::Reverse(name.clone())))
        .unwrap_or_else(|| {
            panic!(
                "no running node holds a lease of the traffic rooms: {:?}",
                cluster.room_leases()
            )
        });
    (cluster.index_of(&name), rooms)
}

/// The sum of the samples of `metric` (all label sets) in node `i`'s `/metrics`.
async fn metric(cluster: &Cluster, i: usize, metric: &str) -> f64 {
    let url = cluster.nodes[i].url("/metrics");
    let text = cluster
        .http()
        .get(&url)
        .send()
        .await
        .unwrap_or_else(|e| panic!("GET {url}: {e}"))
        .text()
        .await
        .expect("a body");
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter(|l| l.split(['{', ' ']).next() == Some(metric))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

fn leases_text(cluster: &Cluster) -> String {
    cluster
        .room_leases()
        .iter()
        .map(|(room, owner, epoch)| format!("{room}={}@{epoch}", owner.as_deref().unwrap_or("-")))
        .collect::<Vec<_>>()
        .join(" ")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_kill9_one_of_three_then_rejoin() {
    let name = "cluster_kill9_one_of_three_then_rejoin";
    let mut cluster = Cluster::start(name, 3).await;
    let load = Load::start(&cluster, standard_users("k", USERS, ROOMS, 3)).await;
    load.run_for(WARMUP).await;

    let rooms = load.rooms();
    let (victim, owned) = busiest_owner(&cluster, &rooms);
    let victim_name = cluster.nodes[victim].name.clone();
    let clients = load.connected_to(victim);
    println!(
        "[{name}] leases before the kill: {}; killing {victim_name} (owns {owned:?}, {} users connected to it)",
        leases_text(&cluster),
        clients.len()
    );
    let killed_at = cluster.kill9(victim);
    println!(
        "[{name}] killed {victim_name} at +{} ms into the run",
        killed_at.duration_since(load.started).as_millis()
    );

    let all_resumed = load
        .wait_until(Duration::from_secs(60), |l| {
            clients
                .iter()
                .all(|&k| l.resumed_after(k, killed_at).is_some())
        })
        .await;
    let resumed_ms = all_resumed.then(|| {
        clients
            .iter()
            .filter_map(|&k| load.resumed_after(k, killed_at))
            .max()
            .map_or(0, |t| t.duration_since(killed_at).as_millis())
    });
    let acked_again = load
        .wait_until(Duration::from_secs(60), |l| {
            l.first_ack_after(&owned, killed_at).is_some()
        })
        .await;
    let first_ack_ms = acked_again.then(|| {
        load.first_ack_after(&owned, killed_at)
            .map_or(0, |t| t.duration_since(killed_at).as_millis())
    });
    println!(
        "[{name}] failover of {victim_name}: kill -> first ack in a room it owned: {} ms; kill -> all {} of its users resumed: {} ms",
        first_ack_ms.map_or("never (60 s)".into(), |m| m.to_string()),
        clients.len(),
        resumed_ms.map_or("never (60 s)".into(), |m| m.to_string()),
    );
    println!(
        "[{name}] users of {victim_name}: {}",
        load.resume_report(&clients, killed_at)
    );
    cluster.wait_converged(Duration::from_secs(30)).await;
    println!("[{name}] leases after the kill: {}", leases_text(&cluster));
    load.run_for(BETWEEN).await;
    // The survivors' metrics show the death: two members each, and the dead
    // node's rooms taken over while its leases still named it.
    let mut failovers = 0.0;
    for i in (0..3).filter(|&i| i != victim) {
        assert_eq!(metric(&cluster, i, "troupe_cluster_members").await, 2.0);
        failovers += metric(&cluster, i, "troupe_room_failovers_total").await;
    }
    println!("[{name}] failovers counted by the survivors: {failovers}");
    assert!(
        failovers >= owned.len() as f64,
        "{} rooms of {victim_name} were taken over, the survivors count {failovers} failovers",
        owned.len()
    );

    let t = Instant::now();
    cluster.restart(victim).await;
    println!(
        "[{name}] {victim_name} restarted and rejoined in {} ms",
        t.elapsed().as_millis()
    );
    load.run_for(BETWEEN).await;
    println!(
        "[{name}] leases after the rejoin: {}",
        leases_text(&cluster)
    );

    let outcome = load.finish(&cluster).await;
    println!(
        "scenario={name} failover_first_ack_ms={} failover_all_resumed_ms={} victim_users={}",
        first_ack_ms.map_or(-1, |m| m as i64),
        resumed_ms.map_or(-1, |m| m as i64),
        clients.len()
    );
    assert!(outcome.acked > 0);
    assert!(
        first_ack_ms.is_some(),
        "no message of the rooms {victim_name} owned ({owned:?}) was acked within 60 s of its kill"
    );
    assert!(
        resumed_ms.is_some(),
        "the users of {victim_name} did not all resume within 60 s of its kill"
    );
}

/// Rooms of the failover at scale: a few hundred, two chatting members each.
const SCALE_ROOMS: usize = 300;

/// Failover at scale (issue 15; `benches/run.sh failover` measures it with
/// 1,000 rooms): 3 nodes, 300 rooms with two members each on two different
/// nodes, every member chatting (one message every 2 to 4 s), so most rooms
/// are followed from another node than their owner's.
/// The node that owns the most rooms is killed (-9). Every room serves
/// again (a send made after the kill is acked), every user of the dead node
/// resumes on a surviving one, and nothing acknowledged is lost, duplicated
/// or reordered (the invariants of `Load::finish`). The deadlines only
/// bound how long a broken run takes to fail; the times are printed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_failover_of_the_node_with_the_most_of_300_rooms() {
    let name = "cluster_failover_of_the_node_with_the_most_of_300_rooms";
    let mut cluster = Cluster::start(name, 3).await;
    // Two members per room, on two different nodes.
    let specs: Vec<UserSpec> = (0..2 * SCALE_ROOMS)
        .map(|k| UserSpec {
            name: format!("f{k:03}"),
            room: format!("big-{:03}", k % SCALE_ROOMS),
            node: (k + k / SCALE_ROOMS) % 3,
            pace_ms: Some((2000, 4000)),
            roam: None,
        })
        .collect();
    let load = Load::start(&cluster, specs).await;
    load.run_for(WARMUP).await;

    let rooms = load.rooms();
    let (victim, owned) = busiest_owner(&cluster, &rooms);
    let victim_name = cluster.nodes[victim].name.clone();
    let users = load.connected_to(victim);
    let killed_at = cluster.kill9(victim);
    println!(
        "[{name}] killed {victim_name}: it owned {} of the {} rooms, {} users were connected to it",
        owned.len(),
        rooms.len(),
        users.len()
    );

    let all_served = load
        .wait_until(Duration::from_secs(90), |l| {
            l.served_after(killed_at).len() == rooms.len()
        })
        .await;
    let served = load.served_after(killed_at);
    let owned_served_ms = owned
        .iter()
        .filter_map(|r| served.get(r))
        .map(|t| t.duration_since(killed_at).as_millis())
        .max();
    let all_resumed = load
        .wait_until(Duration::from_secs(90), |l| {
            users
                .iter()
                .all(|&k| l.resumed_after(k, killed_at).is_some())
        })
        .await;
    let resumed_ms = users
        .iter()
        .filter_map(|&k| load.resumed_after(k, killed_at))
        .map(|t| t.duration_since(killed_at).as_millis())
        .max();
    println!(
        "[{name}] kill -> every room of {victim_name} served again: {} ms; kill -> all {} of its users resumed: {} ms",
        owned_served_ms.map_or(-1, |m| m as i64),
        users.len(),
        resumed_ms.map_or(-1, |m| m as i64)
    );
    println!(
        "[{name}] users of {victim_name}: {}",
        load.resume_report(&users, killed_at)
    );
    let silent: Vec<&String> = rooms.iter().filter(|r| !served.contains_key(*r)).collect();
    assert!(
        all_served,
        "{} rooms acked no send made after the kill within 90 s ({} of them owned by {victim_name}): {:?}",
        silent.len(),
        silent.iter().filter(|r| owned.contains(**r)).count(),
        &silent[..silent.len().min(20)]
    );
    assert!(
        all_resumed,
        "the users of {victim_name} did not all resume within 90 s of its kill: {}",
        load.resume_report(&users, killed_at)
    );
    for &k in &users {
        let s = load.user(k);
        let resume = s
            .resumes
            .iter()
            .find(|r| r.at >= killed_at)
            .expect("resumed");
        assert_ne!(
            resume.node, victim,
            "{} resumed on the node that was killed",
            s.user
        );
    }

    load.run_for(Duration::from_secs(3)).await;
    let outcome = load.finish(&cluster).await;
    println!(
        "scenario={name} rooms={} victim_rooms={} victim_users={} kill_to_rooms_served_ms={} kill_to_users_resumed_ms={}",
        rooms.len(),
        owned.len(),
        users.len(),
        owned_served_ms.map_or(-1, |m| m as i64),
        resumed_ms.map_or(-1, |m| m as i64)
    );
    assert!(outcome.acked > 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_join_fourth_node_under_traffic() {
    let name = "cluster_join_fourth_node_under_traffic";
    let mut cluster = Cluster::start(name, 3).await;
    let load = Load::start(&cluster, standard_users("j", USERS, ROOMS, 3)).await;
    load.run_for(WARMUP).await;
    println!("[{name}] leases before the join: {}", leases_text(&cluster));

    let t = Instant::now();
    let added = cluster.add_node_with_join().await;
    let new_name = cluster.nodes[added].name.clone();
    println!(
        "[{name}] {new_name} joined (every /ready lists 4 live) in {} ms",
        t.elapsed().as_millis()
    );
    let rooms = load.rooms();
    let moved = load
        .wait_until(Duration::from_secs(30), |_| {
            cluster
                .rooms_owned_by(&new_name)
                .iter()
                .any(|r| rooms.contains(r))
        })
        .await;
    let owned: BTreeSet<String> = cluster
        .rooms_owned_by(&new_name)
        .intersection(&rooms)
        .cloned()
        .collect();
    println!(
        "[{name}] {} ms after the join, {new_name} owns {owned:?}; leases: {}",
        t.elapsed().as_millis(),
        leases_text(&cluster)
    );
    load.run_for(BETWEEN).await;
    // The rooms that moved were handed off, or taken over before their old
    // owner let go (a race the lease settles): either way, counted.
    let mut handoffs = 0.0;
    let mut failovers = 0.0;
    for i in 0..3 {
        handoffs += metric(&cluster, i, "troupe_room_handoffs_total").await;
        failovers += metric(&cluster, i, "troupe_room_failovers_total").await;
    }
    failovers += metric(&cluster, added, "troupe_room_failovers_total").await;
    println!("[{name}] handoffs={handoffs} failovers={failovers}");
    assert!(
        handoffs + failovers >= owned.len() as f64,
        "{new_name} took {owned:?}: {handoffs} handoffs and {failovers} failovers counted"
    );
    assert_eq!(metric(&cluster, added, "troupe_cluster_members").await, 4.0);
    let outcome = load.finish(&cluster).await;
    assert!(outcome.acked > 0);
    assert!(
        moved,
        "no traffic room moved onto {new_name} within 30 s of the join; leases: {}",
        leases_text(&cluster)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_sigterm_under_traffic() {
    let name = "cluster_sigterm_under_traffic";
    let mut cluster = Cluster::start(name, 3).await;
    let load = Load::start(&cluster, standard_users("s", USERS, ROOMS, 3)).await;
    load.run_for(WARMUP).await;

    let rooms = load.rooms();
    let (victim, owned) = busiest_owner(&cluster, &rooms);
    let victim_name = cluster.nodes[victim].name.clone();
    let clients = load.connected_to(victim);
    println!(
        "[{name}] SIGTERM {victim_name} (owns {owned:?}, {} users connected to it)",
        clients.len()
    );
    let t = Instant::now();
    println!(
        "[{name}] SIGTERM at +{} ms into the run",
        t.duration_since(load.started).as_millis()
    );
    let status = cluster.sigterm(victim).await;
    println!(
        "[{name}] {victim_name} exited with {status} after {} ms",
        t.elapsed().as_millis()
    );
    let all_resumed = load
        .wait_until(Duration::from_secs(60), |l| {
            clients.iter().all(|&k| l.resumed_after(k, t).is_some())
        })
        .await;
    println!(
        "[{name}] all {} users of {victim_name} resumed elsewhere: {all_resumed} ({} ms after the SIGTERM)",
        clients.len(),
        t.elapsed().as_millis()
    );
    println!(
        "[{name}] users of {victim_name}: {}",
        load.resume_report(&clients, t)
    );
    cluster.wait_converged(Duration::from_secs(30)).await;
    println!("[{name}] leases after: {}", leases_text(&cluster));
    load.run_for(BETWEEN).await;
    let outcome = load.finish(&cluster).await;
    assert!(outcome.acked > 0);
    assert_eq!(
        status.code(),
        Some(0),
        "{victim_name} did not exit 0 on SIGTERM: {status}"
    );
    assert!(all_resumed, "the users of {victim_name} did not all resume");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_client_roams_every_reconnect() {
    let name = "cluster_client_roams_every_reconnect";
    let cluster = Cluster::start(name, 3).await;
    let mut users = standard_users("w", USERS, ROOMS, 3);
    let roamer = users.len();
    users.push(UserSpec {
        name: "roamer".into(),
        room: "roaming".into(),
        node: 1,
        pace_ms: Some((150, 250)),
        roam: Some(Roam {
            every: Duration::from_millis(300),
            times: 100,
        }),
    });
    users.push(UserSpec {
        name: "steady".into(),
        room: "roaming".into(),
        node: 0,
        pace_ms: Some((100, 200)),
        roam: None,
    });
    let load = Load::start(&cluster, users).await;
    let t = Instant::now();
    let done = load
        .wait_until(Duration::from_secs(240), |l| {
            l.user(roamer).resumes.len() >= 100
        })
        .await;
    let (resumes, nodes, mean_ms, max_ms) = {
        let s = load.user(roamer);
        let nodes: BTreeSet<String> = s
            .resumes
            .iter()
            .map(|r| format!("node{}", r.node + 1))
            .collect();
        let took: Vec<u128> = s.resumes.iter().map(|r| r.took.as_millis()).collect();
        (
            s.resumes.len(),
            nodes,
            took.iter().sum::<u128>() / took.len().max(1) as u128,
            took.iter().max().copied().unwrap_or(0),
        )
    };
    println!(
        "[{name}] the roamer resumed {resumes} times in {} ms on nodes {nodes:?}; resume took {mean_ms} ms on average, {max_ms} ms at most",
        t.elapsed().as_millis()
    );
    println!(
        "[{name}] owner of the roaming room: {:?}",
        cluster
            .room_leases()
            .into_iter()
            .find(|(room, _, _)| room == "roaming")
    );
    let outcome = load.finish(&cluster).await;
    assert!(outcome.acked > 0);
    assert!(done, "the roamer resumed only {resumes} times within 240 s");
    assert_eq!(nodes.len(), 3, "the roamer visited only nodes {nodes:?}");
}

/// A rolling upgrade: a node of the previous wire version joins a cluster
/// of the current one and serves; a node two versions away is refused with
/// one clear log line and never becomes a member.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_adjacent_wire_versions_link_distant_ones_are_refused() {
    let name = "cluster_adjacent_wire_versions_link_distant_ones_are_refused";
    let mut cluster = Cluster::start(name, 2).await;
    let current: u32 = 5; // actors/src/cluster/wire.rs WIRE_VERSION
    let previous = (current - 1).to_string();
    let distant = (current + 2).to_string();
    let old = cluster
        .start_outsider(&[("TROUPE_TEST_WIRE_VERSION", previous.as_str())])
        .await;
    let far = cluster
        .start_outsider(&[("TROUPE_TEST_WIRE_VERSION", distant.as_str())])
        .await;
    let old_name = cluster.nodes[old].name.clone();
    let far_name = cluster.nodes[far].name.clone();

    // The previous version becomes live on both members and on itself.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let mut all = true;
        for i in [0, 1, old] {
            let live = cluster.ready(i).await.map(|r| r.live).unwrap_or_default();
            all &= live.contains(&old_name) && live.contains(&cluster.nodes[0].name);
            assert!(
                !live.contains(&far_name),
                "{far_name} became live on node {i}: {live:?}"
            );
        }
        if all {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{old_name} (wire {previous}) never joined"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // The distant one is told why, and sees nobody.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let logs = cluster.all_logs();
        let refused = logs.iter().any(|(node, text)| {
            *node != far_name
                && text.lines().any(|l| {
                    l.contains("cluster peer refused: its wire version")
                        && l.contains(&far_name)
                        && l.contains(&format!("peer_wire_version={distant}"))
                })
        });
        if refused {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no member logged the refusal of {far_name}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    for i in [0, 1, old] {
        let live = cluster.ready(i).await.map(|r| r.live).unwrap_or_default();
        assert!(
            !live.contains(&far_name),
            "{far_name} live on node {i}: {live:?}"
        );
    }
    let far_live = cluster.ready(far).await.map(|r| r.live).unwrap_or_default();
    assert!(
        far_live.iter().all(|n| *n == far_name),
        "{far_name} sees {far_live:?}"
    );
    // The old node serves: a room created there is placed across the versions.
    let ann = cluster.account(old, "ann").await;
    let r = cluster
        .http()
        .post(cluster.nodes[old].url("/api/v1/rooms"))
        .bearer_auth(&ann)
        .json(&serde_json::json!({"name": "mixed"}))
        .send()
        .await
        .expect("answered");
    assert_eq!(r.status(), 201, "{}", r.text().await.unwrap_or_default());

    // Messages cross between the versions both ways: in a room the old node
    // owns (its deliveries to a current node) and in one a current node owns
    // (deliveries to the old node), each with the sender's ack.
    let live = [
        cluster.nodes[0].name.as_str(),
        cluster.nodes[1].name.as_str(),
        old_name.as_str(),
    ];
    let owned_by = |old: bool| {
        (0..)
            .map(|k| format!("mixed_{k}"))
            .find(|room| {
                let owner = troupe_actors::cluster::owner(room, live).expect("an owner");
                (owner == old_name) == old
            })
            .expect("a room name")
    };
    let mut ann_ws = client_with(&cluster, old, "ann", &ann).await;
    let mut bob = client_on(&cluster, 0, "bob").await;
    for room in [owned_by(true), owned_by(false)] {
        let r = cluster
            .http()
            .post(cluster.nodes[old].url("/api/v1/rooms"))
            .bearer_auth(&ann)
            .json(&serde_json::json!({ "name": room }))
            .send()
            .await
            .expect("answered");
        assert_eq!(r.status(), 201, "{}", r.text().await.unwrap_or_default());
        for c in [&mut ann_ws, &mut bob] {
            c.send(serde_json::json!({"type": "join", "room": room}))
                .await;
            c.expect_with("joined", |f| f["room"] == room).await;
        }
        say_across(&mut bob, &mut ann_ws, &room).await;
        say_across(&mut ann_ws, &mut bob, &room).await;
    }
}

/// A node with another cookie, seeded with a running cluster, is never let
/// in: no member lists it, it sees only itself and never starts serving
/// (`/ready` stays 503 `joining`: serving alone on the shared stores would
/// take rooms from the cluster), the handshake failure is logged as
/// `refused`, and no log shows a cookie. The cluster chats on meanwhile.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_wrong_cookie_is_refused() {
    let name = "cluster_wrong_cookie_is_refused";
    let mut cluster = Cluster::start(name, 3).await;
    let load = Load::start(&cluster, standard_users("c", 30, 6, 3)).await;
    load.run_for(Duration::from_secs(2)).await;
    let members = cluster.running_names();
    let cookie = cluster.cookie();
    let wrong = format!("not-our-cookie-{}", std::process::id());

    let t = Instant::now();
    let out = cluster
        .start_outsider(&[("TROUPE_CLUSTER__COOKIE", wrong.as_str())])
        .await;
    let out_name = cluster.nodes[out].name.clone();
    println!(
        "[{name}] started {out_name} with a wrong cookie, seeded with {members:?} (up after {} ms)",
        t.elapsed().as_millis()
    );

    // Join timeout (3 s) and a few reconnect rounds (backoff up to 5 s).
    let mut failures: Vec<String> = Vec::new();
    let mut alone_after: Option<Duration> = None;
    let mut last_outsider = String::new();
    while t.elapsed() < Duration::from_secs(15) {
        for i in 0..cluster.nodes.len() {
            if i == out {
                continue;
            }
            if let Some(r) = cluster.ready(i).await {
                if r.live.contains(&out_name) {
                    failures.push(format!(
                        "+{} ms: {} lists {out_name} as live: {}",
                        t.elapsed().as_millis(),
                        cluster.nodes[i].name,
                        r.body
                    ));
                }
            }
        }
        if let Some(r) = cluster.ready(out).await {
            if r.live.iter().any(|n| *n != out_name) {
                failures.push(format!(
                    "+{} ms: {out_name} sees other nodes: {}",
                    t.elapsed().as_millis(),
                    r.body
                ));
            }
            let alone = r.status == 200
                && r.live == BTreeSet::from([out_name.clone()])
                && r.body.contains(r#""status":"ready""#);
            if alone && alone_after.is_none() {
                alone_after = Some(t.elapsed());
            }
            last_outsider = format!("{} {}", r.status, r.body);
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    println!(
        "[{name}] {out_name} served alone (200 ready) after {} (expected: never); its last /ready: {last_outsider}",
        alone_after.map_or("never".into(), |d| format!("{} ms", d.as_millis()))
    );
    // The members still see exactly each other.
    cluster.wait_converged(Duration::from_secs(10)).await;

    // Which side logs the refused handshake.
    let refused = |cluster: &Cluster| -> Vec<String> {
        cluster
            .all_logs()
            .into_iter()
            .filter(|(_, text)| text.contains("cluster peer refused"))
            .map(|(node, text)| {
                let line = text
                    .lines()
                    .find(|l| l.contains("cluster peer refused"))
                    .unwrap_or_default()
                    .to_string();
                format!("{node}: {line}")
            })
            .collect()
    };
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut logged = refused(&cluster);
    while logged.is_empty() && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(200)).await;
        logged = refused(&cluster);
    }
    println!("[{name}] logs with `refused`:\n  {}", logged.join("\n  "));
    let leaks: Vec<String> = cluster
        .all_logs()
        .into_iter()
        .flat_map(|(node, text)| {
            [
                ("the cluster's cookie", &cookie),
                ("the wrong cookie", &wrong),
            ]
            .into_iter()
            .filter(|(_, c)| text.contains(c.as_str()))
            .map(|(what, _)| format!("{node}'s log shows {what}"))
            .collect::<Vec<_>>()
        })
        .collect();

    let outcome = load.finish(&cluster).await;
    println!(
        "scenario={name} outsider_alone_ms={} refused_logged_by={} cookie_leaks={} views_with_outsider={}",
        alone_after.map_or(-1, |d| d.as_millis() as i64),
        logged
            .iter()
            .map(|l| l.split(':').next().unwrap_or_default().to_string())
            .collect::<Vec<_>>()
            .join(","),
        leaks.len(),
        failures.len()
    );
    assert!(outcome.acked > 0);
    assert!(
        failures.is_empty(),
        "the node with the wrong cookie got into a view:\n{}",
        failures.join("\n")
    );
    assert!(
        alone_after.is_none(),
        "{out_name} started serving alone after {alone_after:?} although no seed let it in; last: {last_outsider}"
    );
    assert!(
        last_outsider.contains(r#""status":"joining""#),
        "{out_name} should still be joining; last /ready: {last_outsider}"
    );
    assert!(
        !logged.is_empty(),
        "no log says `refused` about the wrong cookie within 25 s of {out_name}'s start"
    );
    assert!(leaks.is_empty(), "a cookie leaked into a log: {leaks:?}");
}

/// How long the cut-off node stays cut off.
const PARTITION: Duration = Duration::from_secs(8);

/// Who held each room's lease when, from the lease audit.
struct LeaseTimeline(BTreeMap<String, Vec<(f64, Option<String>, u64)>>);

impl LeaseTimeline {
    fn new(changes: &[LeaseChange]) -> LeaseTimeline {
        let mut rooms: BTreeMap<String, Vec<(f64, Option<String>, u64)>> = BTreeMap::new();
        for c in changes {
            rooms
                .entry(c.room.clone())
                .or_default()
                .push((c.at_ms, c.owner.clone(), c.epoch));
        }
        for changes in rooms.values_mut() {
            changes.sort_by(|a, b| a.0.total_cmp(&b.0));
        }
        LeaseTimeline(rooms)
    }

    /// The holders of `room`'s lease over `[from, to]` (wall ms): the one at
    /// `from`, then every later one up to `to`.
    fn holders(&self, room: &str, from: f64, to: f64) -> Vec<(Option<String>, u64)> {
        let Some(changes) = self.0.get(room) else {
            return vec![(None, 0)];
        };
        let mut out = vec![changes
            .iter()
            .take_while(|(at, _, _)| *at <= from)
            .last()
            .map_or((None, 0), |(_, o, e)| (o.clone(), *e))];
        out.extend(
            changes
                .iter()
                .filter(|(at, _, _)| *at > from && *at <= to)
                .map(|(_, o, e)| (o.clone(), *e)),
        );
        out
    }
}

/// Node3 runs in a network namespace; its cluster link is cut for 8 s under
/// traffic (60 users in 10 rooms over the three nodes), while it keeps its
/// stores and its clients. The majority (node1, node2) drops it and takes
/// its rooms over (lease epoch + 1); node3 sees itself alone without quorum,
/// takes no room over, is fenced (acks nothing for a room whose lease is
/// elsewhere) and answers `unavailable`, so its users move on. After the
/// heal it rejoins; then every invariant must hold.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_partition_minority_is_fenced() {
    let name = "cluster_partition_minority_is_fenced";
    const C: usize = 2;
    let cluster = Cluster::start_with(
        name,
        3,
        ClusterOptions {
            isolated: Some(C),
            ..Default::default()
        },
    )
    .await;
    let c_name = cluster.nodes[C].name.clone();
    let majority_names: BTreeSet<String> = [0, 1]
        .iter()
        .map(|&i| cluster.nodes[i].name.clone())
        .collect();
    let all_names = cluster.running_names();
    let load = Load::start(&cluster, standard_users("p", USERS, ROOMS, 3)).await;
    load.run_for(WARMUP).await;

    let rooms = load.rooms();
    let before: BTreeMap<String, (Option<String>, u64)> = cluster
        .room_leases()
        .into_iter()
        .map(|(room, owner, epoch)| (room, (owner, epoch)))
        .collect();
    let owned_c: BTreeMap<String, u64> = before
        .iter()
        .filter(|(room, (owner, _))| rooms.contains(*room) && owner.as_deref() == Some(&c_name))
        .map(|(room, (_, epoch))| (room.clone(), *epoch))
        .collect();
    let owned_c_rooms: BTreeSet<String> = owned_c.keys().cloned().collect();
    let users_c = load.connected_to(C);
    println!(
        "[{name}] leases before the cut: {}; {c_name} owns {owned_c:?} (room -> epoch); {} users connected to it",
        leases_text(&cluster),
        users_c.len()
    );
    assert!(
        !owned_c.is_empty(),
        "{c_name} owns none of the traffic rooms: nothing to fence; leases {}",
        leases_text(&cluster)
    );

    // Problems found along the way: reported with the invariants.
    let mut problems: Vec<(&'static str, String)> = Vec::new();

    let t_cut = cluster.cut(C);
    println!(
        "[{name}] cut {c_name}'s cluster link at +{} ms into the run",
        t_cut.duration_since(load.started).as_millis()
    );
    // Views during the partition, sampled.
    let mut majority_view_at: Option<Duration> = None;
    let mut minority_view_at: Option<Duration> = None;
    let mut samples = 0;
    let mut last_views: Vec<String> = Vec::new();
    while t_cut.elapsed() < PARTITION {
        let mut views = Vec::new();
        for i in 0..3 {
            views.push(cluster.ready(i).await);
        }
        samples += 1;
        let at = t_cut.elapsed();
        let majority_ok = views[..2].iter().all(|r| {
            r.as_ref()
                .is_some_and(|r| r.live == majority_names && r.quorum)
        });
        let minority_ok = views[C]
            .as_ref()
            .is_some_and(|r| r.live == BTreeSet::from([c_name.clone()]) && !r.quorum);
        if majority_ok && majority_view_at.is_none() {
            majority_view_at = Some(at);
        }
        if minority_ok && minority_view_at.is_none() {
            minority_view_at = Some(at);
        }
        // Once settled, the views must stay so until the heal.
        if majority_view_at.is_some() && !majority_ok {
            problems.push((
                "(partition) the majority's view changed during the partition",
                format!("+{} ms: {views:?}", at.as_millis()),
            ));
        }
        if minority_view_at.is_some() && !minority_ok {
            problems.push((
                "(partition) the cut-off node's view changed during the partition",
                format!("+{} ms: {:?}", at.as_millis(), views[C]),
            ));
        }
        last_views = views
            .iter()
            .enumerate()
            .map(|(i, r)| {
                format!(
                    "{}: {}",
                    cluster.nodes[i].name,
                    r.as_ref()
                        .map_or("no answer".into(), |r| format!("{} {}", r.status, r.body))
                )
            })
            .collect();
        tokio::time::sleep(Duration::from_millis(150)).await;
    }
    println!(
        "[{name}] {samples} /ready samples while cut off: the majority saw {majority_names:?} with quorum after {}; {c_name} saw itself alone without quorum after {}; last: {last_views:?}",
        majority_view_at.map_or("never".into(), |d| format!("{} ms", d.as_millis())),
        minority_view_at.map_or("never".into(), |d| format!("{} ms", d.as_millis())),
    );
    if majority_view_at.is_none() {
        problems.push((
            "(partition) the majority never dropped the cut-off node",
            format!("within {PARTITION:?}; last /ready: {last_views:?}"),
        ));
    }
    if minority_view_at.is_none() {
        problems.push((
            "(partition) the cut-off node never saw itself alone without quorum",
            format!("within {PARTITION:?}; last /ready: {last_views:?}"),
        ));
    }
    // The majority holds every room the cut-off node had, under a newer epoch.
    let during: BTreeMap<String, (Option<String>, u64)> = cluster
        .room_leases()
        .into_iter()
        .map(|(room, owner, epoch)| (room, (owner, epoch)))
        .collect();
    for (room, epoch) in &owned_c {
        match during.get(room) {
            Some((Some(owner), e)) if majority_names.contains(owner) && e > epoch => {}
            other => problems.push((
                "(partition) the majority did not take over a room of the cut-off node",
                format!(
                    "{room}: {c_name} held it at epoch {epoch} at the cut; {} ms later the lease is {other:?}",
                    t_cut.elapsed().as_millis()
                ),
            )),
        }
    }
    // Sent after the cut (and the packets in flight), acked through node1 or
    // node2: acked by the majority's new owner, not by the cut-off node.
    let first_majority_ack = load.first_ack_sent_after_via(
        &owned_c_rooms,
        t_cut + Duration::from_millis(50),
        &BTreeSet::from([0, 1]),
    );
    let moved_on: Vec<(String, Option<Instant>)> = users_c
        .iter()
        .map(|&k| {
            let s = load.user(k);
            let d = s.disconnects.iter().find(|d| d.at >= t_cut && d.node == C);
            if let Some(d) = d {
                println!(
                    "[{name}]   {} ({}) left {c_name} +{} ms after the cut: {}",
                    s.user,
                    s.room,
                    d.at.duration_since(t_cut).as_millis(),
                    d.reason
                );
            }
            (s.user.clone(), d.map(|d| d.at))
        })
        .collect();
    let stayed: Vec<&String> = moved_on
        .iter()
        .filter(|(_, at)| at.is_none())
        .map(|(u, _)| u)
        .collect();
    let moved_ms = moved_on
        .iter()
        .filter_map(|(_, at)| at.map(|t| t.duration_since(t_cut).as_millis()))
        .max();
    println!(
        "[{name}] leases before the heal: {}; {} of {c_name}'s {} users moved to another node (the last {} ms after the cut); still on it: {stayed:?}",
        leases_text(&cluster),
        users_c.len() - stayed.len(),
        users_c.len(),
        moved_ms.map_or(-1, |m| m as i64)
    );
    for u in &stayed {
        problems.push((
            "(partition) a user of the cut-off node was not turned away (`unavailable`) while cut off",
            format!("{u}: still connected to {c_name} at the heal"),
        ));
    }

    let t_heal = cluster.heal(C);
    let deadline = t_heal + Duration::from_secs(60);
    let mut live_again: Option<Duration> = None;
    while Instant::now() < deadline {
        let mut all = true;
        for i in 0..3 {
            all &= cluster
                .ready(i)
                .await
                .is_some_and(|r| r.status == 200 && r.live == all_names);
        }
        if all {
            live_again = Some(t_heal.elapsed());
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    println!(
        "[{name}] healed: every /ready lists {all_names:?} after {}",
        live_again.map_or("never (60 s)".into(), |d| format!("{} ms", d.as_millis()))
    );
    if live_again.is_some() {
        cluster.set_reachable(C, true);
    } else {
        problems.push((
            "(partition) the cut-off node did not rejoin after the heal",
            "not every /ready listed all three nodes within 60 s".into(),
        ));
    }
    load.run_for(BETWEEN).await;
    println!("[{name}] leases at the end: {}", leases_text(&cluster));

    // The lease history: the cut-off node takes no room over while cut off.
    let (cut_ms, heal_ms) = (cluster.wall_ms(t_cut), cluster.wall_ms(t_heal));
    let changes = cluster.lease_history_committed();
    let stamped = cluster.lease_history();
    let later: Vec<f64> = changes
        .iter()
        .zip(&stamped)
        .map(|(c, s)| c.at_ms - s.at_ms)
        .filter(|d| *d > 0.0)
        .collect();
    println!(
        "[{name}] {} of {} lease changes visible later than their trigger stamp (by up to {:.1} ms)",
        later.len(),
        changes.len(),
        later.iter().copied().fold(0.0, f64::max)
    );
    let timeline = LeaseTimeline::new(&changes);
    let mut taken_while_cut: BTreeMap<String, u64> = BTreeMap::new();
    for c in &changes {
        if c.owner.as_deref() == Some(&c_name) && c.at_ms > cut_ms && c.at_ms < heal_ms {
            let previous = timeline.holders(&c.room, c.at_ms - 0.001, c.at_ms - 0.001);
            if previous[0] == (Some(c_name.clone()), c.epoch) {
                continue; // a re-write of its own lease (same epoch)
            }
            taken_while_cut.insert(c.room.clone(), c.epoch);
            problems.push((
                "(partition) the cut-off node took a room over while cut off",
                format!(
                    "{}: lease {:?} -> {c_name}@{} at +{:.0} ms after the cut",
                    c.room,
                    previous[0],
                    c.epoch,
                    c.at_ms - cut_ms
                ),
            ));
        }
    }
    let minority_views: Vec<String> = cluster.nodes[C]
        .log_text()
        .lines()
        .skip_while(|l| !l.contains("cluster link cut"))
        .take_while(|l| !l.contains("cluster link healed"))
        .filter(|l| {
            l.contains("membership changed") || l.contains("lease taken") || l.contains("fenced")
        })
        .map(|l| l.to_string())
        .collect();
    println!(
        "[{name}] {c_name} while cut off (membership, leases, fencing):\n  {}",
        minority_views.join("\n  ")
    );

    let problems_cell = std::cell::RefCell::new(problems);
    let outcome = load
        .finish_with(&cluster, |load, history| {
            let mut v = problems_cell.take();
            // Acks received over a connection to the cut-off node while it was
            // cut off.
            let (mut minority, mut without_lease, mut racing, mut unverified, mut in_taken) =
                (0, 0, 0, 0, 0);
            for k in 0..load.users.len() {
                let s = load.user(k);
                for (id, a) in &s.acks {
                    if a.node != C || a.at <= t_cut || a.at >= t_heal {
                        continue;
                    }
                    minority += 1;
                    let in_history = history
                        .get(&a.room)
                        .and_then(|h| h.iter().find(|m| m.seq == a.seq))
                        .is_some_and(|m| m.client_id == *id && m.from == s.user);
                    let (sent_ms, at_ms) = (cluster.wall_ms(a.sent_at), cluster.wall_ms(a.at));
                    let case = format!(
                        "{} {id}: {} #{} sent at +{:.0} ms, acked by {c_name} at +{:.0} ms after the cut",
                        s.user,
                        a.room,
                        a.seq,
                        sent_ms - cut_ms,
                        at_ms - cut_ms
                    );
                    if !in_history {
                        unverified += 1;
                        v.push((
                            "(fencing) an ack from the cut-off node is not in history with its seq",
                            case.clone(),
                        ));
                    }
                    if a.sent_at <= t_cut {
                        // It may have reached another node's room before the
                        // cut and its ack only have passed through.
                        continue;
                    }
                    // Sent after the cut, it was acked by the cut-off node's
                    // own room: the room's lease holders between the send and
                    // the ack (the lease check ran in between).
                    let holders = timeline.holders(&a.room, sent_ms, at_ms);
                    let mine = |h: &(Option<String>, u64)| h.0.as_deref() == Some(c_name.as_str());
                    if !holders.iter().any(mine) {
                        without_lease += 1;
                        v.push((
                            "(fencing) the cut-off node acked while another node (or none) held the room's lease",
                            format!("{case}; lease holders meanwhile {holders:?}"),
                        ));
                    } else if !holders.iter().all(mine) {
                        racing += 1;
                    }
                    if taken_while_cut.contains_key(&a.room) {
                        in_taken += 1;
                    }
                }
            }
            ExtraCheck {
                violations: v,
                summary: format!(
                    " partition_acks_from_minority={without_lease} minority_acks_during_partition={minority} \
                     minority_acks_racing_takeover={racing} minority_acks_not_in_history={unverified} \
                     minority_takeovers={} minority_acks_in_rooms_taken_while_cut_off={in_taken} \
                     cut_to_majority_first_ack_ms={} cut_to_users_moved_ms={} heal_to_live_ms={} minority_users={}",
                    taken_while_cut.len(),
                    first_majority_ack.map_or(-1, |t| t.duration_since(t_cut).as_millis() as i64),
                    moved_ms.map_or(-1, |m| m as i64),
                    live_again.map_or(-1, |d| d.as_millis() as i64),
                    users_c.len()
                ),
            }
        })
        .await;
    assert!(outcome.acked > 0);
    assert!(
        first_majority_ack.is_some(),
        "the majority acked nothing in {c_name}'s rooms ({owned_c_rooms:?}) during the partition"
    );
}

/// `GET path` on node `i` with the admin token, as JSON.
async fn admin_get(cluster: &Cluster, i: usize, path: &str) -> serde_json::Value {
    let url = cluster.nodes[i].url(path);
    let resp = cluster
        .http()
        .get(&url)
        .bearer_auth(common::cluster::ADMIN_TOKEN)
        .send()
        .await
        .unwrap_or_else(|e| panic!("GET {url}: {e}"));
    let status = resp.status();
    let body = resp.text().await.unwrap_or_default();
    assert_eq!(status.as_u16(), 200, "GET {url}: {body}");
    serde_json::from_str(&body).unwrap_or_else(|e| panic!("GET {url}: {e}: {body}"))
}

/// The entry of `node` in an `/admin/actors` or `/admin/nodes` answer.
fn node_entry<'a>(answer: &'a serde_json::Value, node: &str) -> &'a serde_json::Value {
    answer["nodes"]
        .as_array()
        .and_then(|nodes| nodes.iter().find(|n| n["node"] == node))
        .unwrap_or_else(|| panic!("{node} is not in the answer: {answer}"))
}

/// The actors of kind `kind` in one node's entry.
fn actors_of<'a>(entry: &'a serde_json::Value, kind: &str) -> Vec<&'a serde_json::Value> {
    entry["actors"]
        .as_array()
        .map(|a| a.iter().filter(|x| x["kind"] == kind).collect())
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_admin_sees_every_node() {
    let name = "cluster_admin_sees_every_node";
    let mut cluster = Cluster::start(name, 3).await;
    let specs = standard_users("a", 18, 6, 3);
    let users: BTreeSet<String> = specs.iter().map(|u| u.name.clone()).collect();
    let mut room_members: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for u in &specs {
        room_members
            .entry(u.room.clone())
            .or_default()
            .insert(u.name.clone());
    }
    let load = Load::start(&cluster, specs).await;
    load.run_for(Duration::from_secs(3)).await;
    let rooms = load.rooms();
    let leases: BTreeMap<String, String> = cluster
        .room_leases()
        .into_iter()
        .filter_map(|(room, owner, _)| Some((room, owner?)))
        .collect();
    let names: BTreeSet<String> = cluster.nodes.iter().map(|n| n.name.clone()).collect();

    // Whichever node is asked, it answers for all three, with their rooms and sessions.
    for i in 0..3 {
        let answer = admin_get(&cluster, i, "/admin/actors").await;
        assert_eq!(answer["answered_by"], cluster.nodes[i].name.as_str());
        let listed: BTreeSet<String> = answer["nodes"]
            .as_array()
            .expect("nodes")
            .iter()
            .map(|n| n["node"].as_str().unwrap_or_default().to_string())
            .collect();
        assert_eq!(listed, names, "node {i} lists {listed:?}");
        let mut owners: BTreeMap<String, String> = BTreeMap::new();
        let mut connected = BTreeSet::new();
        for node in &cluster.nodes {
            let entry = node_entry(&answer, &node.name);
            assert!(
                entry.get("error").is_none(),
                "{} failed: {entry}",
                node.name
            );
            assert_eq!(entry["addr"], node.http.to_string().as_str());
            for kind in ["node", "presence", "router", "mesh", "supervisor"] {
                assert!(
                    !actors_of(entry, kind).is_empty(),
                    "no {kind} on {}: {entry}",
                    node.name
                );
            }
            for room in actors_of(entry, "room") {
                assert_eq!(room["supervisor"], "rooms");
                assert_eq!(room["state"]["owner"], node.name.as_str(), "{room}");
                let room_name = room["state"]["room"]
                    .as_str()
                    .expect("room name")
                    .to_string();
                if let Some(other) = owners.insert(room_name.clone(), node.name.clone()) {
                    panic!("{room_name} runs on {other} and on {}", node.name);
                }
            }
            for session in actors_of(entry, "session") {
                connected.insert(
                    session["state"]["user"]
                        .as_str()
                        .unwrap_or_default()
                        .to_string(),
                );
            }
        }
        for room in &rooms {
            assert_eq!(
                owners.get(room),
                leases.get(room),
                "room {room}: the admin answer of node {i} and the lease table disagree"
            );
        }
        assert!(
            users.is_subset(&connected),
            "users without a session in node {i}'s answer: {:?}",
            users.difference(&connected).collect::<Vec<_>>()
        );
    }

    // A room looked up by name: its owner and who is in it, from any node.
    let room = rooms.iter().next().expect("a traffic room").clone();
    let answer = admin_get(&cluster, 2, &format!("/admin/actors?name={room}")).await;
    let found: Vec<&serde_json::Value> = cluster
        .nodes
        .iter()
        .flat_map(|n| actors_of(node_entry(&answer, &n.name), "room"))
        .collect();
    assert_eq!(found.len(), 1, "{room} by name: {answer}");
    assert_eq!(
        found[0]["node"].as_str(),
        leases.get(&room).map(String::as_str)
    );
    let members: BTreeSet<String> = found[0]["state"]["member_list"]
        .as_array()
        .expect("a room looked up by name lists its members")
        .iter()
        .filter_map(|m| m["user"].as_str().map(str::to_string))
        .collect();
    assert_eq!(Some(&members), room_members.get(&room), "members of {room}");
    assert!(
        found[0]["state"]["last_seq"].as_u64().unwrap_or(0) > 0,
        "{room} has traffic: {}",
        found[0]
    );

    // /admin/nodes agrees with the leases.
    let nodes = admin_get(&cluster, 1, "/admin/nodes").await;
    for node in &cluster.nodes {
        let entry = node_entry(&nodes, &node.name);
        let listed: BTreeSet<String> = entry["rooms"]
            .as_array()
            .expect("rooms")
            .iter()
            .filter_map(|r| r.as_str().map(str::to_string))
            .filter(|r| rooms.contains(r))
            .collect();
        let leased: BTreeSet<String> = leases
            .iter()
            .filter(|(r, owner)| rooms.contains(*r) && **owner == node.name)
            .map(|(r, _)| r.clone())
            .collect();
        assert_eq!(listed, leased, "/admin/nodes rooms of {}", node.name);
        assert!(entry["sessions"].as_u64().unwrap_or(0) > 0, "{entry}");
    }

    // `troupe inspect` against the cluster: one node answers for all three.
    let inspect = |args: &[&str]| {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_troupe"))
            .arg("inspect")
            .args([
                "--url",
                &cluster.nodes[1].url(""),
                "--token",
                common::cluster::ADMIN_TOKEN,
            ])
            .args(args)
            .env_remove("TROUPE_ADMIN__TOKEN")
            .output()
            .expect("troupe inspect runs");
        let stdout = String::from_utf8_lossy(&out.stdout).to_string();
        assert!(
            out.status.success(),
            "troupe inspect {args:?} failed: {stdout}{}",
            String::from_utf8_lossy(&out.stderr)
        );
        stdout
    };
    let tree = inspect(&[]);
    println!("[{name}] troupe inspect:\n{tree}");
    for node in &cluster.nodes {
        assert!(
            tree.contains(&node.name),
            "{} missing from:\n{tree}",
            node.name
        );
    }
    assert!(
        tree.contains(&format!("room:{room}")),
        "room:{room} missing from:\n{tree}"
    );
    let json: serde_json::Value =
        serde_json::from_str(&inspect(&["--json", "--kind", "room", "--name", &room]))
            .expect("--json prints JSON");
    let owners: Vec<&str> = json["nodes"]
        .as_array()
        .expect("nodes")
        .iter()
        .flat_map(|n| n["actors"].as_array().into_iter().flatten())
        .filter_map(|a| a["node"].as_str())
        .collect();
    assert_eq!(owners, [leases[&room].as_str()], "{json}");

    let outcome = load.finish(&cluster).await;
    assert!(outcome.acked > 0);

    // A node frozen, then killed, while the request waits on it: the answer
    // comes anyway, with an error entry for that node.
    let victim = 2;
    let victim_name = cluster.nodes[victim].name.clone();
    let pid = cluster.nodes[victim].pid();
    let stop = std::process::Command::new("kill")
        .args(["-STOP", &pid.to_string()])
        .status()
        .expect("kill -STOP");
    assert!(stop.success());
    let request = {
        let url = cluster.nodes[0].url("/admin/actors");
        let http = cluster.http().clone();
        tokio::spawn(async move {
            let t = Instant::now();
            let resp = http
                .get(&url)
                .bearer_auth(common::cluster::ADMIN_TOKEN)
                .send()
                .await
                .expect("GET /admin/actors");
            assert_eq!(resp.status().as_u16(), 200);
            let body: serde_json::Value = resp.json().await.expect("JSON");
            (body, t.elapsed())
        })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    cluster.kill9(victim);
    let (answer, took) = request.await.expect("the request task");
    println!(
        "[{name}] answer with {victim_name} frozen then killed after {} ms",
        took.as_millis()
    );
    let dead = node_entry(&answer, &victim_name);
    assert!(
        dead["error"].as_str().is_some_and(|e| !e.is_empty()),
        "{victim_name} should be an error entry: {dead}"
    );
    for i in 0..2 {
        let entry = node_entry(&answer, &cluster.nodes[i].name);
        assert!(entry.get("error").is_none(), "{entry}");
        assert!(!actors_of(entry, "node").is_empty(), "{entry}");
    }
}

/// `from` says something in `room`: acked to it, heard by `to`.
async fn say_across(from: &mut Client, to: &mut Client, room: &str) {
    let client_id = format!("{}-{room}", from.user);
    from.send(serde_json::json!({
        "type": "send", "room": room, "body": "across versions", "client_id": client_id
    }))
    .await;
    from.expect_with("ack", |f| f["client_id"] == client_id.as_str())
        .await;
    let m = to
        .expect_with("message", |f| f["client_id"] == client_id.as_str())
        .await;
    assert_eq!(m["room"], room, "{m}");
}

/// A client of the presence, kick and friends tests: registers `user` on
/// node `i` and connects there.
async fn client_on(cluster: &Cluster, i: usize, user: &str) -> Client {
    let token = cluster.account(i, user).await;
    client_with(cluster, i, user, &token).await
}

/// Connects to node `i` with a token the caller already has. It waits up to
/// 30 s for each frame: some follow a node's death.
async fn client_with(cluster: &Cluster, i: usize, user: &str, token: &str) -> Client {
    Client::connect_at(cluster.nodes[i].http, user, token)
        .await
        .waiting(Duration::from_secs(30))
}

/// Asks `who` until `pred` holds for the online users (or 30 s pass).
async fn who_until(c: &mut Client, what: &str, pred: impl Fn(&BTreeSet<String>) -> bool) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        c.send(serde_json::json!({"type": "who"})).await;
        let users = c.expect("users").await;
        let online: BTreeSet<String> = users["users"]
            .as_array()
            .expect("users")
            .iter()
            .filter(|u| u["online"] == true)
            .filter_map(|u| u["user"].as_str().map(str::to_string))
            .collect();
        if pred(&online) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{}: {what}; online: {online:?}",
            c.user
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_presence_is_cluster_wide() {
    let name = "cluster_presence_is_cluster_wide";
    let mut cluster = Cluster::start(name, 3).await;
    let mut ann = client_on(&cluster, 0, "ann_p").await;
    let mut bob = client_on(&cluster, 1, "bob_p").await;
    let mut cat = client_on(&cluster, 2, "cat_p").await;
    for c in [&mut ann, &mut bob, &mut cat] {
        c.send(serde_json::json!({"type": "join", "room": "porch"}))
            .await;
        c.expect_with("joined", |f| f["room"] == "porch").await;
    }
    let all: BTreeSet<String> = ["ann_p", "bob_p", "cat_p"].map(String::from).into();

    // `who`, `members` and REST on any node list the users of every node.
    who_until(&mut ann, "everyone online", |online| all.is_subset(online)).await;
    cat.send(serde_json::json!({"type": "members", "room": "porch"}))
        .await;
    let members = cat.expect_with("members", |f| f["room"] == "porch").await;
    for user in &all {
        let m = members["members"]
            .as_array()
            .and_then(|m| m.iter().find(|m| m["user"] == user.as_str()))
            .unwrap_or_else(|| panic!("{user} missing from {members}"));
        assert_eq!(m["online"], true, "{members}");
    }
    let token = cluster.account(1, "dan_p").await;
    let online: serde_json::Value = cluster
        .http()
        .get(cluster.nodes[1].url("/api/v1/users/online"))
        .bearer_auth(&token)
        .send()
        .await
        .expect("users/online")
        .json()
        .await
        .expect("JSON");
    let listed: BTreeSet<String> = online["users"]
        .as_array()
        .expect("users")
        .iter()
        .filter_map(|u| u["user"].as_str().map(str::to_string))
        .collect();
    assert!(all.is_subset(&listed), "{online}");

    // Bob leaves: the members on the two other nodes hear it, with a last seen.
    drop(bob);
    for c in [&mut ann, &mut cat] {
        let news = c
            .expect_with("presence", |f| f["user"] == "bob_p" && f["online"] == false)
            .await;
        assert!(news["last_seen"].as_i64().is_some_and(|t| t > 0), "{news}");
    }

    // Cat's node dies: cat goes offline everywhere once its heartbeat lapses.
    cluster.kill9(2);
    who_until(&mut ann, "cat offline after its node died", |online| {
        !online.contains("cat_p") && online.contains("ann_p")
    })
    .await;
    ann.send(serde_json::json!({"type": "members", "room": "porch"}))
        .await;
    let members = ann.expect_with("members", |f| f["room"] == "porch").await;
    let cat_entry = members["members"]
        .as_array()
        .and_then(|m| m.iter().find(|m| m["user"] == "cat_p"))
        .unwrap_or_else(|| panic!("cat missing from {members}"));
    assert_eq!(cat_entry["online"], false, "{members}");
    assert!(
        cat_entry["last_seen"].as_i64().is_some_and(|t| t > 0),
        "a dead node's user keeps a last seen: {members}"
    );
}

/// A change over REST through the live nodes of `via` (in turn), retried
/// with the same `client_id` (when it has one) until it is answered 2xx: a
/// node killed mid-request, a room moving, answer nothing or 503. A 4xx
/// other than those fails the test. The answer's JSON (Null for 204).
async fn change_until_done(
    cluster: &Cluster,
    via: &[usize],
    method: &str,
    path: &str,
    token: &str,
    body: Option<serde_json::Value>,
) -> serde_json::Value {
    let deadline = Instant::now() + Duration::from_secs(60);
    let method = reqwest::Method::from_bytes(method.as_bytes()).expect("a method");
    let mut turn = 0;
    loop {
        let live: Vec<usize> = via
            .iter()
            .copied()
            .filter(|i| cluster.nodes[*i].running())
            .collect();
        assert!(
            !live.is_empty(),
            "{method} {path}: no live node among {via:?}"
        );
        let i = live[turn % live.len()];
        turn += 1;
        let mut req = cluster
            .http()
            .request(method.clone(), cluster.nodes[i].url(path))
            .bearer_auth(token)
            .timeout(Duration::from_secs(15));
        if let Some(body) = &body {
            req = req.json(body);
        }
        let last = match req.send().await {
            Ok(r) => {
                let status = r.status().as_u16();
                let text = r.text().await.unwrap_or_default();
                if (200..300).contains(&status) {
                    return serde_json::from_str(&text).unwrap_or(serde_json::Value::Null);
                }
                assert!(
                    status == 503 || status == 404 && text.contains("no room"),
                    "{method} {path} on node {i}: {status} {text}"
                );
                format!("{status} {text}")
            }
            Err(e) => e.to_string(),
        };
        assert!(
            Instant::now() < deadline,
            "{method} {path}: not done within 60 s; last: {last}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The views of `seqs` of `room` as node `i` answers them.
async fn views_on(
    cluster: &Cluster,
    i: usize,
    token: &str,
    room: &str,
    seqs: &[u64],
) -> Vec<serde_json::Value> {
    let mut out = Vec::new();
    for seq in seqs {
        let url = cluster.nodes[i].url(&format!("/api/v1/rooms/{room}/messages/{seq}"));
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let r = cluster.http().get(&url).bearer_auth(token).send().await;
            if let Ok(r) = r {
                if r.status() == 200 {
                    out.push(r.json().await.expect("a view"));
                    break;
                }
            }
            assert!(Instant::now() < deadline, "GET {url}: no view within 30 s");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    out
}

/// `count` changes from `start` on: ann edits a message through one node of
/// `nodes`, bob and cat react to it through others; each done before the
/// next. What was done: (room, seq, the new body, the emoji).
async fn change_round(
    cluster: &Cluster,
    tokens: &[String; 3],
    targets: &BTreeMap<String, Vec<u64>>,
    phase: &str,
    nodes: &[usize],
    start: usize,
    count: usize,
) -> Vec<(String, u64, String, String)> {
    let rooms: Vec<&String> = targets.keys().collect();
    let mut done = Vec::new();
    for n in start..start + count {
        let room = rooms[n % rooms.len()];
        let seq = targets[room][n % 3];
        let one = format!("/api/v1/rooms/{room}/messages/{seq}");
        let text = format!("{phase} edit {n}");
        let a = [nodes[n % nodes.len()]];
        let body = serde_json::json!({"body": text, "client_id": format!("edit-{n}")});
        change_until_done(cluster, &a, "PATCH", &one, &tokens[0], Some(body)).await;
        let emoji = format!(":{phase}{}:", n % 3);
        let reaction = format!("{one}/reactions/{emoji}");
        let b = [nodes[(n + 1) % nodes.len()]];
        change_until_done(cluster, &b, "PUT", &reaction, &tokens[1], None).await;
        let c = [nodes[(n + 2) % nodes.len()]];
        change_until_done(cluster, &c, "PUT", &reaction, &tokens[2], None).await;
        done.push((room.clone(), seq, text, emoji));
    }
    done
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_message_changes_survive_a_kill_and_a_join() {
    let name = "cluster_message_changes_survive_a_kill_and_a_join";
    let mut cluster = Cluster::start(name, 3).await;
    let ann = cluster.account(0, "ann_m").await;
    let bob = cluster.account(1, "bob_m").await;
    let cat = cluster.account(2, "cat_m").await;
    let rooms: Vec<String> = (0..4).map(|k| format!("life{k}")).collect();
    let mut targets: BTreeMap<String, Vec<u64>> = BTreeMap::new();
    for room in &rooms {
        change_until_done(
            &cluster,
            &[0],
            "POST",
            "/api/v1/rooms",
            &ann,
            Some(serde_json::json!({"name": room})),
        )
        .await;
        for user in ["bob_m", "cat_m"] {
            let path = format!("/api/v1/rooms/{room}/members");
            change_until_done(
                &cluster,
                &[0],
                "POST",
                &path,
                &ann,
                Some(serde_json::json!({"user": user})),
            )
            .await;
        }
        for k in 0..3 {
            let path = format!("/api/v1/rooms/{room}/messages");
            let body = serde_json::json!({"body": format!("{room} base {k}"), "client_id": format!("{room}-b{k}")});
            let sent = change_until_done(&cluster, &[0], "POST", &path, &ann, Some(body)).await;
            targets
                .entry(room.clone())
                .or_default()
                .push(sent["seq"].as_u64().expect("a seq"));
        }
    }
    // What every view must end up as: ann's last edit, bob's and cat's reactions.
    let mut last_edit: BTreeMap<(String, u64), String> = BTreeMap::new();
    let mut edits: BTreeMap<(String, u64), u64> = BTreeMap::new();
    let mut reacted: BTreeMap<(String, u64), BTreeMap<String, BTreeSet<String>>> = BTreeMap::new();
    let tokens = [ann.clone(), bob.clone(), cat.clone()];
    let mut apply = |done: Vec<(String, u64, String, String)>| {
        for (room, seq, text, emoji) in done {
            last_edit.insert((room.clone(), seq), text);
            *edits.entry((room.clone(), seq)).or_default() += 1;
            let users = reacted
                .entry((room, seq))
                .or_default()
                .entry(emoji)
                .or_default();
            users.insert("bob_m".into());
            users.insert("cat_m".into());
        }
    };
    apply(change_round(&cluster, &tokens, &targets, "warm", &[0, 1, 2], 0, 8).await);
    // Kill -9 a node in the middle of a round of changes that go through
    // the two others (its rooms fail over meanwhile).
    let victim = cluster.nodes[2].pid().to_string();
    let killer = async {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let killed = std::process::Command::new("kill")
            .args(["-9", &victim])
            .status()
            .expect("kill runs");
        assert!(killed.success(), "kill -9 {victim}");
        println!("[{name}] kill -9 node 2 during the round");
    };
    let (done, ()) = tokio::join!(
        change_round(&cluster, &tokens, &targets, "dead", &[0, 1], 8, 40),
        killer
    );
    cluster.kill9(2);
    apply(done);
    // A fourth node joins: rooms move to it while the changes go on.
    let fourth = cluster.add_node_with_join().await;
    apply(change_round(&cluster, &tokens, &targets, "join", &[fourth, 0, 1], 48, 24).await);

    // Every live node answers the same views, and they hold every change.
    let live: Vec<usize> = (0..cluster.nodes.len())
        .filter(|i| cluster.nodes[*i].running())
        .collect();
    for room in &rooms {
        let seqs = &targets[room];
        let first = views_on(&cluster, live[0], &ann, room, seqs).await;
        for view in &first {
            let key = (room.clone(), view["seq"].as_u64().unwrap());
            if let Some(text) = last_edit.get(&key) {
                assert_eq!(view["body"], text.as_str(), "{view}");
                assert_eq!(view["version"], 1 + edits[&key], "{view}");
                let want: BTreeMap<String, Vec<String>> = reacted[&key]
                    .iter()
                    .map(|(e, users)| (e.clone(), users.iter().cloned().collect()))
                    .collect();
                assert_eq!(view["reactions"], serde_json::json!(want), "{view}");
            }
        }
        for i in &live[1..] {
            let other = views_on(&cluster, *i, &bob, room, seqs).await;
            assert_eq!(other, first, "node {i} answers other views of {room}");
        }
    }
    println!(
        "[{name}] {} messages changed {} times over a kill and a join; every node answers the same views",
        last_edit.len(),
        edits.values().sum::<u64>()
    );
}

/// Sends a frame with a `client_id`; the seq of its ack (an error fails the test).
async fn acked_seq(c: &mut Client, frame: serde_json::Value) -> u64 {
    let id = frame["client_id"].as_str().expect("an id").to_string();
    c.send(frame).await;
    let f = c
        .expect_where(&id, |f| {
            (f["type"] == "ack" && f["client_id"] == id.as_str())
                || (f["type"] == "error" && f["ref"] == id.as_str())
        })
        .await;
    assert_eq!(f["type"], "ack", "{id}: {f}");
    f["seq"].as_u64().expect("a seq")
}

/// Collects the `message` frames of `room` a client receives until seq
/// `last`: (seq, event kind or "message").
async fn frames_until(c: &mut Client, room: &str, last: u64) -> Vec<(u64, String)> {
    let mut seen = Vec::new();
    loop {
        let f = c.expect_with("message", |f| f["room"] == room).await;
        let seq = f["seq"].as_u64().expect("a seq");
        let kind = f["event"]["kind"].as_str().unwrap_or("message").to_string();
        seen.push((seq, kind));
        if seq >= last {
            return seen;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_message_events_reach_members_on_every_node_in_seq_order() {
    let name = "cluster_message_events_reach_members_on_every_node_in_seq_order";
    let cluster = Cluster::start(name, 3).await;
    let mut ann = client_on(&cluster, 0, "ann_e").await;
    let mut bob = client_on(&cluster, 1, "bob_e").await;
    let mut cat = client_on(&cluster, 2, "cat_e").await;
    for c in [&mut ann, &mut bob, &mut cat] {
        c.send(serde_json::json!({"type": "join", "room": "agora"}))
            .await;
        c.expect_with("joined", |f| f["room"] == "agora").await;
    }
    let first = acked_seq(
        &mut ann,
        serde_json::json!({"type": "send", "room": "agora", "body": "hello agora", "client_id": "a1"}),
    )
    .await;
    // Each change through another node: frames on nodes 0, 1 and 2, REST on 2.
    let mut done = vec![(first, "message".to_string())];
    done.push((
        acked_seq(&mut ann, serde_json::json!({"type": "edit", "room": "agora", "seq": first, "body": "hello, agora", "client_id": "a2"})).await,
        "edit".into(),
    ));
    done.push((
        acked_seq(&mut bob, serde_json::json!({"type": "react", "room": "agora", "seq": first, "emoji": "👋", "client_id": "b1"})).await,
        "react".into(),
    ));
    done.push((
        acked_seq(&mut cat, serde_json::json!({"type": "send", "room": "agora", "body": "hi ann", "reply_to": first, "client_id": "c1"})).await,
        "message".into(),
    ));
    let pin = format!("/api/v1/rooms/agora/pins/{first}");
    let (status, body) = rest_on(&cluster, 2, reqwest::Method::PUT, &pin, &ann.token, None).await;
    assert_eq!(status, 204, "{body}");
    // A pin answers no seq: it is the next one.
    let pinned = done.last().unwrap().0 + 1;
    done.push((pinned, "pin".into()));
    done.push((
        acked_seq(&mut bob, serde_json::json!({"type": "unreact", "room": "agora", "seq": first, "emoji": "👋", "client_id": "b2"})).await,
        "unreact".into(),
    ));
    let last = done.last().unwrap().0;
    let seqs: Vec<u64> = done.iter().map(|(s, _)| *s).collect();
    assert_eq!(
        seqs,
        (first..=last).collect::<Vec<_>>(),
        "gapless: {done:?}"
    );
    for c in [&mut ann, &mut bob, &mut cat] {
        let seen = frames_until(c, "agora", last).await;
        assert_eq!(
            seen, done,
            "{} sees every change once, in seq order",
            c.user
        );
    }
    // Every node answers the same view, and bob's unread count (ann's
    // message and cat's reply: events are not counted).
    let one = format!("/api/v1/rooms/agora/messages/{first}");
    let mut views = Vec::new();
    for i in 0..3 {
        let (status, view) =
            rest_on(&cluster, i, reqwest::Method::GET, &one, &bob.token, None).await;
        assert_eq!(status, 200, "node {i}: {view}");
        views.push(view);
        let (status, list) = rest_on(
            &cluster,
            i,
            reqwest::Method::GET,
            "/api/v1/rooms",
            &bob.token,
            None,
        )
        .await;
        assert_eq!(status, 200, "node {i}: {list}");
        let agora = list["rooms"]
            .as_array()
            .and_then(|r| r.iter().find(|r| r["name"] == "agora"))
            .unwrap_or_else(|| panic!("node {i}: no agora in {list}"));
        assert_eq!(
            (&agora["unread"], &agora["last_read_seq"]),
            (&serde_json::json!(2), &serde_json::json!(0)),
            "node {i}: {agora}"
        );
    }
    let v = &views[0];
    assert_eq!(
        (
            &v["body"],
            &v["version"],
            &v["pinned"],
            &v["reply_count"],
            &v["reactions"]
        ),
        (
            &serde_json::json!("hello, agora"),
            &serde_json::json!(2),
            &serde_json::json!(true),
            &serde_json::json!(1),
            &serde_json::json!({})
        ),
        "{v}"
    );
    assert!(
        views.iter().all(|w| w == v),
        "every node answers the same view: {views:?}"
    );
}

/// A REST call on node `i`: (status, JSON or Null).
async fn rest_on(
    cluster: &Cluster,
    i: usize,
    method: reqwest::Method,
    path: &str,
    token: &str,
    body: Option<serde_json::Value>,
) -> (u16, serde_json::Value) {
    let mut request = cluster
        .http()
        .request(method, cluster.nodes[i].url(path))
        .bearer_auth(token);
    if let Some(body) = body {
        request = request.json(&body);
    }
    let r = request.send().await.expect("an answer");
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(serde_json::Value::Null))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_kick_and_room_deletion_reach_members_on_every_node() {
    use reqwest::Method;
    let name = "cluster_kick_and_room_deletion_reach_members_on_every_node";
    let cluster = Cluster::start(name, 2).await;
    let ann = cluster.account(0, "ann_k").await;
    let mut bob = client_on(&cluster, 1, "bob_k").await;
    let mut cat = client_on(&cluster, 0, "cat_k").await;
    let body = serde_json::json!({"name": "hall_k"});
    let (status, created) =
        rest_on(&cluster, 1, Method::POST, "/api/v1/rooms", &ann, Some(body)).await;
    assert_eq!(status, 201, "{created}");
    // The owner follows the room from node 0 too.
    let mut owner = client_with(&cluster, 0, "ann_k", &ann).await;
    for c in [&mut bob, &mut cat, &mut owner] {
        c.send(serde_json::json!({"type": "join", "room": "hall_k"}))
            .await;
        c.expect_with("joined", |f| f["room"] == "hall_k").await;
    }

    // A kick asked on node 0 is seen by the members on both nodes; the
    // kicked user's connection (node 0) leaves the room.
    let (status, body) = rest_on(
        &cluster,
        0,
        Method::DELETE,
        "/api/v1/rooms/hall_k/members/cat_k",
        &ann,
        None,
    )
    .await;
    assert_eq!(status, 204, "{body}");
    for c in [&mut bob, &mut cat, &mut owner] {
        let kicked = c.expect_with("kicked", |f| f["room"] == "hall_k").await;
        assert_eq!(
            (&kicked["user"], &kicked["by"], &kicked["members"]),
            (
                &serde_json::json!("cat_k"),
                &serde_json::json!("ann_k"),
                &serde_json::json!(2)
            )
        );
    }
    let (status, members) = rest_on(
        &cluster,
        1,
        Method::GET,
        "/api/v1/rooms/hall_k/members",
        &ann,
        None,
    )
    .await;
    assert_eq!(status, 200, "{members}");
    let users: Vec<&str> = members["members"]
        .as_array()
        .expect("members")
        .iter()
        .filter_map(|m| m["user"].as_str())
        .collect();
    assert_eq!(users, ["ann_k", "bob_k"]);

    // The room deleted through node 1 is gone on both nodes.
    let (status, body) = rest_on(
        &cluster,
        1,
        Method::DELETE,
        "/api/v1/rooms/hall_k",
        &ann,
        None,
    )
    .await;
    assert_eq!(status, 204, "{body}");
    // Seen by the members connected to either node.
    for c in [&mut bob, &mut owner] {
        let gone = c
            .expect_with("room_deleted", |f| f["room"] == "hall_k")
            .await;
        assert_eq!(gone["by"], "ann_k");
    }
    for i in 0..2 {
        let (status, body) = rest_on(
            &cluster,
            i,
            Method::GET,
            "/api/v1/rooms/hall_k/messages",
            &ann,
            None,
        )
        .await;
        assert_eq!(status, 404, "node {i}: {body}");
    }
    bob.send(
        serde_json::json!({"type": "send", "room": "hall_k", "body": "anyone?", "client_id": "k1"}),
    )
    .await;
    let refused = bob.expect_with("error", |f| f["ref"] == "k1").await;
    assert_eq!(refused["code"], "not_found", "{refused}");
}

/// Friends who share no room hear each other across nodes: a request made
/// on one node reaches the other's connection on the other node, and so
/// do the answer and each one's presence changes (the Router's `ToUsers`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_friends_hear_each_other_across_nodes_without_a_shared_room() {
    use reqwest::Method;
    let name = "cluster_friends_hear_each_other_across_nodes_without_a_shared_room";
    let cluster = Cluster::start(name, 2).await;
    let ann_token = cluster.account(0, "ann_f").await;
    let dan_token = cluster.account(1, "dan_f").await;
    let mut ann = client_with(&cluster, 0, "ann_f", &ann_token).await;

    // dan asks through node 1; ann, on node 0, is told.
    let (status, body) = rest_on(
        &cluster,
        1,
        Method::POST,
        "/api/v1/friends/ann_f",
        &dan_token,
        None,
    )
    .await;
    assert_eq!(status, 201, "{body}");
    ann.expect_with("friend", |f| {
        f["user"] == "dan_f" && f["status"] == "incoming"
    })
    .await;

    // dan comes online on node 1, then ann accepts through node 0: dan hears it.
    let mut dan = client_with(&cluster, 1, "dan_f", &dan_token).await;
    let (status, body) = rest_on(
        &cluster,
        0,
        Method::POST,
        "/api/v1/friends/dan_f",
        &ann_token,
        None,
    )
    .await;
    assert_eq!(status, 200, "{body}");
    dan.expect_with("friend", |f| {
        f["user"] == "ann_f" && f["status"] == "friends"
    })
    .await;

    // Now friends: dan's going offline on node 1 reaches ann on node 0, and
    // his coming back too.
    drop(dan);
    let offline = ann
        .expect_with("presence", |f| f["user"] == "dan_f" && f["online"] == false)
        .await;
    assert!(offline["last_seen"].as_i64().is_some(), "{offline}");
    let _dan = client_with(&cluster, 1, "dan_f", &dan_token).await;
    ann.expect_with("presence", |f| f["user"] == "dan_f" && f["online"] == true)
        .await;
    let (_, lists) = rest_on(
        &cluster,
        0,
        Method::GET,
        "/api/v1/friends",
        &ann_token,
        None,
    )
    .await;
    assert_eq!(lists["friends"][0]["user"], "dan_f", "{lists}");
}

//! Cluster tests: several `troupe` processes on their own loopback addresses
//! (127.0.0.11, .12, ...) sharing Postgres, a Kafka topic (a tansu broker of
//! the test's own) and Redis, under continuous chat traffic from dozens of
//! simulated users (tests/common/cluster.rs). Nodes are killed, stopped,
//! restarted and added while the users chat; afterwards, what the users saw
//! and what history holds must agree:
//!
//! 1. every acked message is in history with its acked seq;
//! 2. per room, history's seqs run 1..=last without a gap or a duplicate;
//! 3. every member received every message of its room from its join on,
//!    exactly once, in increasing seq order;
//! 4. every user that was disconnected resumed (on another node).
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

// Only the cluster harness: the other test crates do not compile it.
#[allow(dead_code)]
mod common {
    pub mod cluster;
}

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use common::cluster::{standard_users, Cluster, Load, Roam, UserSpec};

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

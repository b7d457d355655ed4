//! Offline notifications by webhook, against a real HTTP receiver on
//! 127.0.0.1 (an axum server in the test): a DM or a mention of a user who
//! is online nowhere is POSTed once, signed; an online user gets none; a
//! failing receiver gets it again until it takes it; a node killed while
//! the receiver holds the POST delivers it again after its restart, with
//! the same id. Runs on the embedded default and on real stores
//! (`TEST_STORES=real`). The cluster test (`cluster_*`: Postgres, Redis
//! and the tansu broker, as tests/cluster.rs) runs with the cluster tests
//! in scripts/test.sh: the node that holds the POST is killed and the other
//! one delivers it.

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::http::{HeaderMap, StatusCode};
use common::{account, http, Client, Node};
use hmac::{Hmac, Mac};
use serde_json::{json, Value};
use sha2::Sha256;

const SECRET: &str = "webhook-test-secret";

/// One POST the receiver got.
#[derive(Debug, Clone)]
struct Got {
    id_header: String,
    node: String,
    signature: String,
    raw: Vec<u8>,
    body: Value,
    /// What the receiver answered (0: it never did).
    answered: u16,
}

#[derive(Default)]
struct Receiver {
    got: Mutex<Vec<Got>>,
    /// POSTs to answer 500 before answering 200.
    fail_first: AtomicUsize,
    /// POSTs to hold without an answer (until the node goes away).
    hold_first: AtomicUsize,
    arrived: tokio::sync::Notify,
}

impl Receiver {
    async fn start() -> (Arc<Receiver>, String) {
        let state = Arc::new(Receiver::default());
        let shared = state.clone();
        let app = axum::Router::new().route(
            "/hook",
            axum::routing::post(move |headers: HeaderMap, raw: axum::body::Bytes| {
                let state = shared.clone();
                async move { state.take(headers, raw).await }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("a receiver port");
        let url = format!("http://{}/hook", listener.local_addr().expect("an address"));
        tokio::spawn(async move { axum::serve(listener, app).await });
        (state, url)
    }

    async fn take(&self, headers: HeaderMap, raw: axum::body::Bytes) -> StatusCode {
        let header = |name: &str| {
            headers
                .get(name)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("")
                .to_string()
        };
        let take_one = |n: &AtomicUsize| {
            n.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |k| k.checked_sub(1))
                .is_ok()
        };
        let hold = take_one(&self.hold_first);
        let status = if hold {
            0
        } else if take_one(&self.fail_first) {
            500
        } else {
            200
        };
        self.got.lock().unwrap().push(Got {
            id_header: header("x-troupe-notification"),
            node: header("x-troupe-node"),
            signature: header("x-troupe-signature"),
            raw: raw.to_vec(),
            body: serde_json::from_slice(&raw).unwrap_or(Value::Null),
            answered: status,
        });
        self.arrived.notify_waiters();
        if hold {
            std::future::pending::<()>().await;
        }
        StatusCode::from_u16(status).expect("a status")
    }

    fn got(&self) -> Vec<Got> {
        self.got.lock().unwrap().clone()
    }

    /// Waits until `done` holds for what arrived (a test failure after 30 s).
    async fn wait_for(&self, what: &str, done: impl Fn(&[Got]) -> bool) -> Vec<Got> {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        loop {
            let arrived = self.arrived.notified();
            let got = self.got();
            if done(&got) {
                return got;
            }
            if tokio::time::timeout_at(deadline, arrived).await.is_err() {
                panic!("the webhook did not get {what}; it got {got:#?}");
            }
        }
    }

    /// Waits for a POST whose preview is `preview`; returns all POSTs so far.
    async fn wait_preview(&self, preview: &str) -> Vec<Got> {
        self.wait_for(&format!("a notification of {preview:?}"), |got| {
            got.iter()
                .any(|g| g.body["preview"] == preview && g.answered == 200)
        })
        .await
    }
}

fn sign(raw: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(SECRET.as_bytes()).expect("a key");
    mac.update(raw);
    let hex: String = mac
        .finalize()
        .into_bytes()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    format!("sha256={hex}")
}

fn webhook_env(url: &str) -> Vec<(String, String)> {
    [
        ("TROUPE_NOTIFICATIONS__WEBHOOK_URL", url),
        ("TROUPE_NOTIFICATIONS__SECRET", SECRET),
        ("TROUPE_NOTIFICATIONS__POLL_MS", "100"),
        ("TROUPE_NOTIFICATIONS__BACKOFF_MS", "200"),
        ("TROUPE_NOTIFICATIONS__TIMEOUT_MS", "3000"),
    ]
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .to_vec()
}

async fn node_with_webhook(url: &str) -> Node {
    let env = webhook_env(url);
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    Node::start_with(&env).await
}

async fn post(node: &Node, path: &str, token: &str, body: Value) -> (u16, Value) {
    let r = http()
        .post(node.url(path))
        .bearer_auth(token)
        .json(&body)
        .send()
        .await
        .expect("an answer");
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Value::Null))
}

/// Sends a DM from `from` and waits for its ack; its seq.
async fn dm(from: &mut Client, to: &str, body: &str, client_id: &str) -> u64 {
    from.send(json!({"type": "dm", "to": to, "body": body, "client_id": client_id}))
        .await;
    let ack = from
        .expect_where(&format!("ack of {client_id}"), |f| {
            (f["type"] == "ack" || f["type"] == "error")
                && (f["client_id"] == client_id || f["ref"] == client_id)
        })
        .await;
    assert_eq!(ack["type"], "ack", "{ack}");
    ack["seq"].as_u64().expect("a seq")
}

async fn wait_online(node: &Node, token: &str, user: &str) {
    for _ in 0..300 {
        let v: Value = http()
            .get(node.url("/api/v1/users/online"))
            .bearer_auth(token)
            .send()
            .await
            .expect("an answer")
            .json()
            .await
            .expect("JSON");
        if v["users"]
            .as_array()
            .is_some_and(|u| u.iter().any(|x| x["user"] == user))
        {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("{user} never showed as online");
}

#[tokio::test]
async fn a_dm_to_an_offline_user_is_posted_once_signed() {
    let (receiver, url) = Receiver::start().await;
    let node = node_with_webhook(&url).await;
    let ann_token = account(&node, "ann").await;
    account(&node, "bob").await;
    let mut ann = Client::connect_live(&node, "ann", &ann_token).await;

    let long = format!("hello bob {}", "x".repeat(300));
    let seq = dm(&mut ann, "bob", &long, "d1").await;
    let preview: String = long.chars().take(140).collect();
    let got = receiver.wait_preview(&preview).await;
    assert_eq!(got.len(), 1, "{got:#?}");
    let g = &got[0];
    assert_eq!(
        g.signature,
        sign(&g.raw),
        "the signature is the body's HMAC"
    );
    let id = format!("bob:dm:ann:bob:{seq}");
    assert_eq!(g.id_header, id);
    assert_eq!(g.body["id"], id.as_str());
    assert_eq!(g.body["user"], "bob");
    assert_eq!(g.body["room"], "dm:ann:bob");
    assert_eq!(g.body["seq"], seq);
    assert_eq!(g.body["from"], "ann");
    assert_eq!(g.body["unread"], 1);

    // The next DM is a second notification, with the unread count grown;
    // the first was not sent again meanwhile.
    let seq2 = dm(&mut ann, "bob", "and again", "d2").await;
    let got = receiver.wait_preview("and again").await;
    assert_eq!(got.len(), 2, "{got:#?}");
    assert_eq!(got[1].body["seq"], seq2);
    assert_eq!(got[1].body["unread"], 2);
    assert_eq!(got[1].signature, sign(&got[1].raw));
}

#[tokio::test]
async fn a_mention_of_an_offline_member_is_posted_and_others_are_not() {
    let (receiver, url) = Receiver::start().await;
    let node = node_with_webhook(&url).await;
    let ann = account(&node, "ann").await;
    account(&node, "bob").await;
    account(&node, "carol").await;
    let (status, _) = post(&node, "/api/v1/rooms", &ann, json!({"name": "lobby"})).await;
    assert_eq!(status, 201);
    let (status, _) = post(
        &node,
        "/api/v1/rooms/lobby/members",
        &ann,
        json!({"user": "bob"}),
    )
    .await;
    assert_eq!(status, 204);

    let say = |body: &str| {
        let body = body.to_string();
        let ann = ann.clone();
        let node = &node;
        async move {
            let (status, v) = post(
                node,
                "/api/v1/rooms/lobby/messages",
                &ann,
                json!({"body": body}),
            )
            .await;
            assert_eq!(status, 201, "{v}");
            v["seq"].as_u64().expect("a seq")
        }
    };
    // No mention; a mention of a non-member; a mention of oneself.
    say("good morning").await;
    say("hi @carol").await;
    say("note to @ann").await;
    let seq = say("@Bob, look at this").await;
    let got = receiver.wait_preview("@Bob, look at this").await;
    // One worker delivers in the order rows were added: anything the
    // earlier messages had added would have come first.
    assert_eq!(got.len(), 1, "{got:#?}");
    let g = &got[0];
    assert_eq!(g.signature, sign(&g.raw));
    assert_eq!(g.body["user"], "bob");
    assert_eq!(g.body["room"], "lobby");
    assert_eq!(g.body["seq"], seq);
    assert_eq!(g.body["from"], "ann");
    assert_eq!(
        g.body["unread"], 4,
        "every message of the others since bob joined"
    );
}

#[tokio::test]
async fn an_online_user_gets_no_notification() {
    let (receiver, url) = Receiver::start().await;
    let node = node_with_webhook(&url).await;
    let ann_token = account(&node, "ann").await;
    let bob_token = account(&node, "bob").await;
    account(&node, "carol").await;
    let mut ann = Client::connect_live(&node, "ann", &ann_token).await;
    let mut bob = Client::connect_live(&node, "bob", &bob_token).await;
    wait_online(&node, &ann_token, "bob").await;

    dm(&mut ann, "bob", "you are here", "d1").await;
    bob.expect_message("dm:ann:bob").await;
    // Carol is offline: hers comes, and bob's would have come before it.
    dm(&mut ann, "carol", "you are not", "d2").await;
    let got = receiver.wait_preview("you are not").await;
    assert_eq!(got.len(), 1, "{got:#?}");
    assert_eq!(got[0].body["user"], "carol");
}

#[tokio::test]
async fn a_failing_receiver_gets_it_again_until_it_takes_it() {
    let (receiver, url) = Receiver::start().await;
    receiver.fail_first.store(2, Ordering::SeqCst);
    let node = node_with_webhook(&url).await;
    let ann_token = account(&node, "ann").await;
    account(&node, "bob").await;
    let mut ann = Client::connect_live(&node, "ann", &ann_token).await;

    let seq = dm(&mut ann, "bob", "third time lucky", "d1").await;
    let got = receiver.wait_preview("third time lucky").await;
    let answers: Vec<u16> = got.iter().map(|g| g.answered).collect();
    assert_eq!(answers, [500, 500, 200], "{got:#?}");
    let id = format!("bob:dm:ann:bob:{seq}");
    assert!(got.iter().all(|g| g.id_header == id && g.raw == got[0].raw));
    assert!(got.iter().all(|g| g.signature == sign(&g.raw)));

    // Delivered means done: the next one comes alone.
    dm(&mut ann, "bob", "and then", "d2").await;
    let got = receiver.wait_preview("and then").await;
    assert_eq!(got.len(), 4, "{got:#?}");
}

#[tokio::test]
async fn a_node_killed_mid_delivery_delivers_it_after_restart_with_the_same_id() {
    let (receiver, url) = Receiver::start().await;
    receiver.hold_first.store(1, Ordering::SeqCst);
    let mut node = node_with_webhook(&url).await;
    let ann_token = account(&node, "ann").await;
    account(&node, "bob").await;
    let mut ann = Client::connect_live(&node, "ann", &ann_token).await;

    let seq = dm(&mut ann, "bob", "are you there", "d1").await;
    // The receiver holds the first POST: kill -9 the node meanwhile.
    receiver
        .wait_for("the first POST", |got| !got.is_empty())
        .await;
    node.kill9();
    node.restart().await;

    let got = receiver.wait_preview("are you there").await;
    let id = format!("bob:dm:ann:bob:{seq}");
    assert!(got.iter().all(|g| g.id_header == id), "{got:#?}");
    assert_eq!(got[0].answered, 0, "the first POST was never answered");
    let delivered: Vec<&Got> = got.iter().filter(|g| g.answered == 200).collect();
    assert_eq!(delivered.len(), 1, "{got:#?}");
    assert_eq!(
        delivered[0].raw, got[0].raw,
        "the same notification, byte for byte"
    );

    // Delivered once: a later DM comes after it, and nothing of the first again.
    let token = common::login_token(&node, "ann").await;
    let mut ann = Client::connect_live(&node, "ann", &token).await;
    dm(&mut ann, "bob", "still there?", "d2").await;
    let got = receiver.wait_preview("still there?").await;
    let ok: Vec<String> = got
        .iter()
        .filter(|g| g.answered == 200)
        .map(|g| g.id_header.clone())
        .collect();
    assert_eq!(ok, [id, format!("bob:dm:ann:bob:{}", seq + 1)], "{got:#?}");
}

#[tokio::test]
async fn a_webhook_without_a_secret_is_refused_at_start() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_troupe"))
        .args(["config", "check"])
        .env(
            "TROUPE_NOTIFICATIONS__WEBHOOK_URL",
            "http://127.0.0.1:9/hook",
        )
        .output()
        .expect("troupe runs");
    let text =
        String::from_utf8_lossy(&out.stderr).to_string() + &String::from_utf8_lossy(&out.stdout);
    assert!(!out.status.success(), "{text}");
    assert!(text.contains("notifications.secret"), "{text}");
}

/// Two nodes share the outbox: the node whose POST the receiver holds is
/// killed with `kill -9`, and the other one delivers the notification once
/// its claim ran out, with the same id and body.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_the_other_node_delivers_what_a_killed_node_held() {
    let (receiver, url) = Receiver::start().await;
    receiver.hold_first.store(1, Ordering::SeqCst);
    let mut env = webhook_env(&url);
    env.push(("TROUPE_CLUSTER__FORGET_AFTER_S".into(), "2".into()));
    let options = common::cluster::ClusterOptions {
        env,
        ..Default::default()
    };
    let mut cluster = common::cluster::Cluster::start_with("notify-failover", 2, options).await;
    let ann = cluster.account(0, "ann").await;
    cluster.account(1, "bob").await;
    let r = cluster
        .http()
        .post(cluster.nodes[0].url("/api/v1/rooms"))
        .bearer_auth(&ann)
        .json(&json!({"name": "lobby"}))
        .send()
        .await
        .expect("create a room");
    assert_eq!(r.status(), 201);
    let r = cluster
        .http()
        .post(cluster.nodes[0].url("/api/v1/rooms/lobby/members"))
        .bearer_auth(&ann)
        .json(&json!({"user": "bob"}))
        .send()
        .await
        .expect("add bob");
    assert_eq!(r.status(), 204);
    let r = cluster
        .http()
        .post(cluster.nodes[0].url("/api/v1/rooms/lobby/messages"))
        .bearer_auth(&ann)
        .json(&json!({"body": "@bob the build is red"}))
        .send()
        .await
        .expect("send");
    assert_eq!(r.status(), 201);
    let seq = r.json::<Value>().await.expect("JSON")["seq"]
        .as_u64()
        .expect("a seq");

    let got = receiver
        .wait_for("the first POST", |got| !got.is_empty())
        .await;
    let holder = got[0].node.clone();
    let killed = cluster.index_of(&holder);
    cluster.kill9(killed);
    println!("{holder} held the POST and was killed");

    let got = receiver.wait_preview("@bob the build is red").await;
    let id = format!("bob:lobby:{seq}");
    assert!(got.iter().all(|g| g.id_header == id), "{got:#?}");
    let delivered: Vec<&Got> = got.iter().filter(|g| g.answered == 200).collect();
    assert_eq!(delivered.len(), 1, "{got:#?}");
    assert_ne!(delivered[0].node, holder, "the survivor delivered it");
    assert_eq!(
        delivered[0].raw, got[0].raw,
        "the same notification, byte for byte"
    );
    assert_eq!(delivered[0].signature, sign(&delivered[0].raw));
}

/// "Offline" means offline on every node: ann, through node 0, mentions bob
/// (connected to node 1 only) and carol (connected nowhere) in one message;
/// only carol is notified. Both rows would be written by the one history
/// write of that message, so once carol's POST arrived the outbox shows
/// that bob had none.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_a_user_online_on_another_node_is_not_notified() {
    let (receiver, url) = Receiver::start().await;
    let options = common::cluster::ClusterOptions {
        env: webhook_env(&url),
        ..Default::default()
    };
    let cluster = common::cluster::Cluster::start_with("notify-online-elsewhere", 2, options).await;
    let ann = cluster.account(0, "ann").await;
    let bob = cluster.account(1, "bob").await;
    cluster.account(0, "carol").await;
    let call = |path: &str, body: Value| {
        cluster
            .http()
            .post(cluster.nodes[0].url(path))
            .bearer_auth(&ann)
            .json(&body)
            .send()
    };
    let r = call("/api/v1/rooms", json!({"name": "lobby"}))
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    for user in ["bob", "carol"] {
        let r = call("/api/v1/rooms/lobby/members", json!({ "user": user }))
            .await
            .unwrap();
        assert_eq!(r.status(), 204);
    }
    let _bob = Client::connect_at(cluster.nodes[1].http, "bob", &bob).await;
    // Node 0 sees bob online.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let v: Value = cluster
            .http()
            .get(cluster.nodes[0].url("/api/v1/users/online"))
            .bearer_auth(&ann)
            .send()
            .await
            .expect("an answer")
            .json()
            .await
            .expect("JSON");
        if v["users"]
            .as_array()
            .is_some_and(|u| u.iter().any(|x| x["user"] == "bob"))
        {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "node 0 never saw bob online: {v}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    let r = call(
        "/api/v1/rooms/lobby/messages",
        json!({"body": "@bob @carol the deploy is done"}),
    )
    .await
    .unwrap();
    assert_eq!(r.status(), 201);
    let got = receiver
        .wait_preview("@bob @carol the deploy is done")
        .await;
    let users: Vec<&Value> = got.iter().map(|g| &g.body["user"]).collect();
    assert_eq!(users, [&json!("carol")], "{got:#?}");
    let rows = common::services::psql(
        "the outbox",
        &cluster.database_url(),
        "select \"user\" from notifications order by \"user\"",
    );
    assert_eq!(rows.trim(), "carol", "the outbox holds only carol's");
}

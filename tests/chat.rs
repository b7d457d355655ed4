//! The core of chat through one real node: rooms, ordered delivery, acks,
//! idempotent retries, DMs, history, presence, typing and read receipts.

mod common;

use common::{Client, Node};
use serde_json::json;

#[tokio::test]
async fn fifty_messages_arrive_in_order_with_gapless_seq() {
    let node = Node::start().await;
    let mut ann = Client::new_user(&node, "ann").await;
    let mut bob = Client::new_user(&node, "bob").await;
    ann.join("lobby").await;
    bob.join("lobby").await;
    for i in 1..=50 {
        ann.send(json!({"type": "send", "room": "lobby", "body": format!("m{i}"), "client_id": format!("c{i}")}))
            .await;
    }
    for i in 1..=50u64 {
        let m = bob.expect_message("lobby").await;
        assert_eq!(m["seq"], i, "{m}");
        assert_eq!(m["body"], format!("m{i}"));
        assert_eq!(m["from"], "ann");
        assert_eq!(m["client_id"], format!("c{i}"));
        assert!(m["ts"].as_i64().unwrap() > 1_700_000_000_000);
    }
    // The sender gets each ack before its own copy of the message.
    for i in 1..=50u64 {
        let f = ann
            .expect_where("ack or message", |f| {
                (f["type"] == "ack" || f["type"] == "message") && f["room"] == "lobby"
            })
            .await;
        assert_eq!(f["type"], "ack", "{f}");
        assert_eq!(f["seq"], i);
        let m = ann.expect_message("lobby").await;
        assert_eq!(m["seq"], i);
    }
}

#[tokio::test]
async fn a_resent_client_id_answers_the_first_ack_and_creates_nothing() {
    let node = Node::start().await;
    let mut ann = Client::new_user(&node, "ann").await;
    ann.join("lobby").await;
    let first = ann.say("lobby", "hello", "same-id").await;
    assert_eq!(first["type"], "ack");
    let again = ann.say("lobby", "hello (retry)", "same-id").await;
    assert_eq!(again["type"], "ack");
    assert_eq!(again["seq"], first["seq"]);
    assert_eq!(again["ts"], first["ts"]);
    let next = ann.say("lobby", "another", "other-id").await;
    assert_eq!(next["seq"], 2);
    ann.send(json!({"type": "history", "room": "lobby"})).await;
    let h = ann.expect("history").await;
    let bodies: Vec<&str> = h["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["body"].as_str().unwrap())
        .collect();
    assert_eq!(bodies, ["hello", "another"]);
}

#[tokio::test]
async fn every_connection_of_a_member_receives_messages() {
    let node = Node::start().await;
    let token = common::account(&node, "ann").await;
    let mut tab1 = Client::connect(&node, "ann", &token).await;
    // A tab that only listens: live at once.
    let mut tab2 = Client::connect_live(&node, "ann", &token).await;
    let mut bob = Client::new_user(&node, "bob").await;
    tab1.join("lobby").await;
    // The other tab is told about the join too.
    tab2.expect_where("joined", |f| f["type"] == "joined" && f["room"] == "lobby")
        .await;
    bob.join("lobby").await;
    bob.say("lobby", "hi ann", "b1").await;
    assert_eq!(tab1.expect_message("lobby").await["body"], "hi ann");
    assert_eq!(tab2.expect_message("lobby").await["body"], "hi ann");
}

#[tokio::test]
async fn join_and_leave_tell_the_room() {
    let node = Node::start().await;
    let mut ann = Client::new_user(&node, "ann").await;
    let mut bob = Client::new_user(&node, "bob").await;
    let joined = ann.join("lobby").await;
    assert_eq!(joined["members"], 1);
    assert_eq!(joined["last_seq"], 0);
    ann.say("lobby", "first", "a1").await;
    let joined = bob.join("lobby").await;
    assert_eq!(joined["members"], 2);
    assert_eq!(joined["last_seq"], 1);
    let uj = ann.expect("user_joined").await;
    assert_eq!(
        (uj["room"].as_str(), uj["user"].as_str()),
        (Some("lobby"), Some("bob"))
    );
    bob.send(json!({"type": "leave", "room": "lobby"})).await;
    let left = bob.expect("left").await;
    assert_eq!(left["room"], "lobby");
    assert_eq!(left["members"], 1);
    let ul = ann.expect("user_left").await;
    assert_eq!(ul["user"], "bob");
    // Gone from the room: no more messages, and sending is refused.
    ann.say("lobby", "after bob left", "a2").await;
    let e = bob.say("lobby", "still here?", "b1").await;
    assert_eq!(e["type"], "error");
    assert_eq!(e["code"], "forbidden");
    let rest = bob.drain_for(std::time::Duration::from_millis(300)).await;
    assert!(rest.iter().all(|f| f["type"] != "message"), "{rest:?}");
}

#[tokio::test]
async fn direct_messages_reach_both_sides_in_a_two_member_room() {
    let node = Node::start().await;
    let mut ann = Client::new_user(&node, "ann").await;
    // Bob listens before he answers: live at once.
    let mut bob = Client::new_live_user(&node, "bob").await;
    ann.send(json!({"type": "dm", "to": "bob", "body": "psst", "client_id": "d1"}))
        .await;
    let ack = ann.expect("ack").await;
    assert_eq!(ack["room"], "dm:ann:bob");
    assert_eq!(ack["seq"], 1);
    let m = bob.expect_message("dm:ann:bob").await;
    assert_eq!(m["body"], "psst");
    assert_eq!(m["from"], "ann");
    // Bob answers in the same room, by `dm` or by `send`.
    bob.send(json!({"type": "send", "room": "dm:ann:bob", "body": "yes?", "client_id": "d2"}))
        .await;
    let reply = ann
        .expect_where("bob's reply", |f| {
            f["type"] == "message" && f["from"] == "bob"
        })
        .await;
    assert_eq!(
        (reply["room"].as_str(), reply["body"].as_str()),
        (Some("dm:ann:bob"), Some("yes?"))
    );
    // Nobody else can join or read it.
    let mut eve = Client::new_user(&node, "eve").await;
    eve.send(json!({"type": "join", "room": "dm:ann:bob"}))
        .await;
    eve.expect_error("bad_request").await;
    eve.send(json!({"type": "history", "room": "dm:ann:bob"}))
        .await;
    eve.expect_error("forbidden").await;
    // A DM has exactly its two members, for good.
    ann.send(json!({"type": "leave", "room": "dm:ann:bob"}))
        .await;
    ann.expect_error("bad_request").await;
    // A DM to nobody.
    ann.send(json!({"type": "dm", "to": "nobody", "body": "hi", "client_id": "d3"}))
        .await;
    let e = ann.expect_error("not_found").await;
    assert_eq!(e["ref"], "d3");
}

#[tokio::test]
async fn broadcast_reaches_every_online_user() {
    let node = Node::start().await;
    let mut ann = Client::new_user(&node, "ann").await;
    // Listeners: they never send a frame, so they ask to go live at once.
    let mut bob = Client::new_live_user(&node, "bob").await;
    let mut cy = Client::new_live_user(&node, "cyd").await;
    ann.send(json!({"type": "broadcast", "body": "hello all", "client_id": "b1"}))
        .await;
    assert_eq!(ann.expect("ack").await["client_id"], "b1");
    for c in [&mut ann, &mut bob, &mut cy] {
        let m = c
            .expect_where("broadcast", |f| {
                f["type"] == "message" && f["body"] == "hello all"
            })
            .await;
        assert_eq!(m["from"], "ann");
        assert_eq!(m["room"], "!broadcast");
    }
}

#[tokio::test]
async fn history_pages_before_and_after() {
    let node = Node::start().await;
    let mut ann = Client::new_user(&node, "ann").await;
    ann.join("lobby").await;
    for i in 1..=30 {
        ann.say("lobby", &format!("m{i}"), &format!("c{i}")).await;
    }
    let seqs = |h: &serde_json::Value| -> Vec<u64> {
        h["messages"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m["seq"].as_u64().unwrap())
            .collect()
    };
    ann.send(json!({"type": "history", "room": "lobby", "limit": 5}))
        .await;
    assert_eq!(seqs(&ann.expect("history").await), [26, 27, 28, 29, 30]);
    ann.send(json!({"type": "history", "room": "lobby", "before": 10, "limit": 3}))
        .await;
    assert_eq!(seqs(&ann.expect("history").await), [7, 8, 9]);
    ann.send(json!({"type": "history", "room": "lobby", "after": 27}))
        .await;
    assert_eq!(seqs(&ann.expect("history").await), [28, 29, 30]);
    ann.send(json!({"type": "history", "room": "lobby", "after": 0, "limit": 2}))
        .await;
    assert_eq!(seqs(&ann.expect("history").await), [1, 2]);
    // The same pages over REST.
    let r: serde_json::Value = common::http()
        .get(node.url("/api/v1/rooms/lobby/messages?before=10&limit=3"))
        .bearer_auth(&ann.token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(seqs(&r), [7, 8, 9]);
    ann.send(json!({"type": "history", "room": "lobby", "limit": 500}))
        .await;
    ann.expect_error("bad_request").await;
}

#[tokio::test]
async fn typing_read_receipts_members_and_who() {
    let node = Node::start().await;
    let mut ann = Client::new_user(&node, "ann").await;
    let mut bob = Client::new_user(&node, "bob").await;
    ann.join("lobby").await;
    bob.join("lobby").await;
    ann.send(json!({"type": "typing", "room": "lobby", "active": true}))
        .await;
    let t = bob.expect("typing").await;
    assert_eq!(
        (t["user"].as_str(), t["active"].as_bool()),
        (Some("ann"), Some(true))
    );
    let ack = ann.say("lobby", "read me", "r1").await;
    bob.expect_message("lobby").await;
    bob.send(json!({"type": "read", "room": "lobby", "seq": ack["seq"]}))
        .await;
    let r = ann.expect("read").await;
    assert_eq!(
        (r["user"].as_str(), r["seq"].as_u64()),
        (Some("bob"), Some(1))
    );
    bob.send(json!({"type": "read", "room": "lobby", "seq": 99}))
        .await;
    bob.expect_error("bad_request").await;

    ann.send(json!({"type": "members", "room": "lobby"})).await;
    let m = ann.expect("members").await;
    let members = m["members"].as_array().unwrap();
    assert_eq!(members.len(), 2);
    let bob_entry = members.iter().find(|u| u["user"] == "bob").unwrap();
    assert_eq!(bob_entry["online"], true);
    assert_eq!(bob_entry["read_seq"], 1);

    ann.send(json!({"type": "who"})).await;
    let w = ann.expect("users").await;
    let names: Vec<&str> = w["users"]
        .as_array()
        .unwrap()
        .iter()
        .map(|u| u["user"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["ann", "bob"]);

    // Bob goes away: ann sees him offline with a last-seen time.
    bob.close().await;
    let p = ann
        .expect_where("bob offline", |f| {
            f["type"] == "presence" && f["user"] == "bob"
        })
        .await;
    assert_eq!(p["online"], false);
    assert!(p["last_seen"].as_i64().is_some());
    ann.send(json!({"type": "members", "room": "lobby"})).await;
    let m = ann.expect("members").await;
    let bob_entry = m["members"]
        .as_array()
        .unwrap()
        .iter()
        .find(|u| u["user"] == "bob")
        .unwrap()
        .clone();
    assert_eq!(bob_entry["online"], false);
    assert!(bob_entry["last_seen"].as_i64().is_some());
}

#[tokio::test]
async fn private_rooms_need_an_invitation() {
    let node = Node::start().await;
    let mut ann = Client::new_user(&node, "ann").await;
    let mut bob = Client::new_user(&node, "bob").await;
    let r = common::http()
        .post(node.url("/api/v1/rooms"))
        .bearer_auth(&ann.token)
        .json(&json!({"name": "secret", "private": true}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    ann.expect_where("joined secret", |f| {
        f["type"] == "joined" && f["room"] == "secret"
    })
    .await;
    bob.send(json!({"type": "join", "room": "secret"})).await;
    bob.expect_error("forbidden").await;
    // A member invites bob (frame), and bob is in.
    ann.send(json!({"type": "invite", "room": "secret", "user": "bob"}))
        .await;
    bob.expect_where("joined secret", |f| {
        f["type"] == "joined" && f["room"] == "secret"
    })
    .await;
    ann.say("secret", "welcome", "s1").await;
    assert_eq!(bob.expect_message("secret").await["body"], "welcome");
    // A non-member cannot invite; an unknown user cannot be invited.
    let mut eve = Client::new_user(&node, "eve").await;
    eve.send(json!({"type": "invite", "room": "secret", "user": "eve"}))
        .await;
    eve.expect_error("forbidden").await;
    let r = common::http()
        .post(node.url("/api/v1/rooms/secret/members"))
        .bearer_auth(&ann.token)
        .json(&json!({"user": "nobody"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    let r = common::http()
        .post(node.url("/api/v1/rooms/secret/members"))
        .bearer_auth(&ann.token)
        .json(&json!({"user": "eve"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
    eve.expect_where("joined secret", |f| {
        f["type"] == "joined" && f["room"] == "secret"
    })
    .await;
}

#[tokio::test]
async fn presence_goes_only_to_rooms_the_user_is_in() {
    let node = Node::start().await;
    let mut ann = Client::new_user(&node, "ann").await;
    ann.join("lobby").await;
    let mut carl = Client::new_user(&node, "carl").await;
    // Asking about a room he is not in does not make carl part of it.
    carl.send(json!({"type": "history", "room": "lobby"})).await;
    carl.expect_error("forbidden").await;
    carl.close().await;
    let frames = ann.drain_for(std::time::Duration::from_millis(500)).await;
    assert!(
        frames
            .iter()
            .all(|f| !(f["type"] == "presence" && f["user"] == "carl")),
        "ann heard of carl: {frames:?}"
    );
}

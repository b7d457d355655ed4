//! Durability and recovery on one node: `kill -9` mid-traffic, restart on the
//! same data dir, retries with the same `client_id`, `resume`; a room actor
//! that panics; a client that stops reading.

mod common;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::Duration;

use common::{Client, Node};
use futures_util::SinkExt;
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::Message;

async fn history_all(client: &mut Client, room: &str) -> Vec<Value> {
    let mut out = Vec::new();
    let mut after = 0;
    loop {
        client
            .send(json!({"type": "history", "room": room, "after": after, "limit": 200}))
            .await;
        let page = client.expect("history").await;
        let messages = page["messages"].as_array().unwrap().clone();
        if messages.is_empty() {
            return out;
        }
        after = messages.last().unwrap()["seq"].as_u64().unwrap();
        out.extend(messages);
    }
}

#[tokio::test]
async fn kill_9_mid_traffic_loses_no_acked_message_and_retries_create_each_once() {
    let mut node = Node::start_with(&[("TROUPE_LIMITS__MESSAGE_BURST", "100000")]).await;
    let mut ann = Client::new_user(&node, "ann").await;
    let mut bob = Client::new_user(&node, "bob").await;
    ann.join("lobby").await;
    bob.join("lobby").await;

    // Bob reads a little, then his connection drops with the node.
    const TOTAL: usize = 300;
    for i in 0..TOTAL {
        ann.send(json!({"type": "send", "room": "lobby", "body": format!("m{i}"), "client_id": format!("c{i}")}))
            .await;
    }
    let mut bob_seen = 0u64;
    for _ in 0..20 {
        bob_seen = bob.expect_message("lobby").await["seq"].as_u64().unwrap();
    }
    // Collect some acks, then kill the node while the rest are in flight.
    let mut acked: HashMap<String, u64> = HashMap::new();
    while acked.len() < 40 {
        let f = ann.expect("ack").await;
        acked.insert(
            f["client_id"].as_str().unwrap().to_string(),
            f["seq"].as_u64().unwrap(),
        );
    }
    node.kill9();
    // Acks that were already on the wire still count.
    for f in ann.drain_for(Duration::from_millis(200)).await {
        if f["type"] == "ack" {
            acked.insert(
                f["client_id"].as_str().unwrap().to_string(),
                f["seq"].as_u64().unwrap(),
            );
        }
    }
    node.restart().await;

    // Tokens lived in memory: log in again, and retry every unacked send.
    let token = common::login_token(&node, "ann").await;
    let mut ann = Client::connect(&node, "ann", &token).await;
    let mut retried: HashMap<String, u64> = HashMap::new();
    for i in 0..TOTAL {
        let id = format!("c{i}");
        let ack = ann.say("lobby", &format!("m{i}"), &id).await;
        assert_eq!(ack["type"], "ack", "{ack}");
        retried.insert(id, ack["seq"].as_u64().unwrap());
    }
    // Every ack from before the crash is still the same message.
    for (id, seq) in &acked {
        assert_eq!(retried[id], *seq, "{id} changed its seq across the crash");
    }
    // History: exactly TOTAL messages, seq 1..=TOTAL without a gap, each client_id once.
    let history = history_all(&mut ann, "lobby").await;
    let seqs: Vec<u64> = history.iter().map(|m| m["seq"].as_u64().unwrap()).collect();
    assert_eq!(seqs, (1..=TOTAL as u64).collect::<Vec<_>>());
    let ids: BTreeSet<&str> = history
        .iter()
        .map(|m| m["client_id"].as_str().unwrap())
        .collect();
    assert_eq!(ids.len(), TOTAL);
    for m in &history {
        assert_eq!(
            retried[m["client_id"].as_str().unwrap()],
            m["seq"].as_u64().unwrap()
        );
    }

    // Bob resumes from what he saw and gets exactly the rest, in order, then `resumed`.
    let token = common::login_token(&node, "bob").await;
    let old_resume = bob.resume_token();
    let mut bob = Client::connect(&node, "bob", &token).await;
    bob.send(json!({"type": "resume", "resume_token": old_resume, "rooms": {"lobby": bob_seen}}))
        .await;
    let mut replayed = Vec::new();
    loop {
        let f = bob
            .expect_where("replay", |f| {
                f["type"] == "resumed" || (f["type"] == "message" && f["room"] == "lobby")
            })
            .await;
        if f["type"] == "resumed" {
            assert_eq!(f["rooms"]["lobby"], TOTAL as u64, "{f}");
            break;
        }
        replayed.push(f["seq"].as_u64().unwrap());
    }
    assert_eq!(
        replayed,
        ((bob_seen + 1)..=TOTAL as u64).collect::<Vec<_>>()
    );
}

/// The next frame of a raw connection, as JSON (within `common::WAIT`).
async fn next_frame(
    ws: &mut tokio_tungstenite::WebSocketStream<
        tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>,
    >,
) -> Value {
    let msg = tokio::time::timeout(common::WAIT, futures_util::StreamExt::next(ws))
        .await
        .expect("frames")
        .unwrap()
        .unwrap();
    serde_json::from_str(msg.to_text().unwrap()).unwrap()
}

/// The first answer to `resume` as the first frame of a fresh connection.
async fn resume_on_a_new_connection(node: &Node, resume_token: &str) -> Value {
    let mut ws = Client::raw(node).await;
    let frame = json!({"type": "resume", "resume_token": resume_token, "rooms": {}});
    ws.send(Message::Text(frame.to_string().into()))
        .await
        .unwrap();
    let msg = tokio::time::timeout(common::WAIT, futures_util::StreamExt::next(&mut ws))
        .await
        .expect("an answer")
        .expect("an open socket")
        .expect("a frame");
    serde_json::from_str(msg.to_text().unwrap()).unwrap()
}

#[tokio::test]
async fn resume_as_first_frame_replays_exactly_what_was_missed() {
    let node = Node::start().await;
    let mut ann = Client::new_user(&node, "ann").await;
    let mut bob = Client::new_user(&node, "bob").await;
    ann.join("lobby").await;
    ann.join("side").await;
    bob.join("lobby").await;
    bob.join("side").await;
    ann.say("lobby", "l1", "l1").await;
    ann.say("side", "s1", "s1").await;
    assert_eq!(bob.expect_message("lobby").await["seq"], 1);
    assert_eq!(bob.expect_message("side").await["seq"], 1);
    let resume_token = bob.resume_token();
    let bob_token = bob.token.clone();
    bob.close().await;
    for i in 2..=5 {
        ann.say("lobby", &format!("l{i}"), &format!("l{i}")).await;
    }
    ann.say("side", "s2", "s2").await;
    // No token at the upgrade: the resume token authenticates.
    let mut ws = Client::raw(&node).await;
    let frame =
        json!({"type": "resume", "resume_token": resume_token, "rooms": {"lobby": 1, "side": 1}});
    ws.send(Message::Text(frame.to_string().into()))
        .await
        .unwrap();
    let mut got: BTreeMap<String, Vec<u64>> = BTreeMap::new();
    let mut session_seen = false;
    loop {
        let f = next_frame(&mut ws).await;
        match f["type"].as_str().unwrap() {
            "session" => session_seen = true,
            "message" => got
                .entry(f["room"].as_str().unwrap().into())
                .or_default()
                .push(f["seq"].as_u64().unwrap()),
            "resumed" => {
                assert_eq!(f["rooms"]["lobby"], 5);
                assert_eq!(f["rooms"]["side"], 2);
                break;
            }
            _ => {}
        }
    }
    assert!(session_seen);
    assert_eq!(got["lobby"], [2, 3, 4, 5]);
    assert_eq!(got["side"], [2]);
    // A resume token dies with the login it came from.
    common::http()
        .post(node.url("/api/v1/logout"))
        .bearer_auth(&bob_token)
        .send()
        .await
        .unwrap();
    assert_eq!(
        resume_on_a_new_connection(&node, &resume_token).await["code"],
        "unauthorized"
    );
    // A forged one neither.
    assert_eq!(
        resume_on_a_new_connection(&node, "forged").await["code"],
        "unauthorized"
    );
}

#[tokio::test]
async fn resumed_comes_after_every_replay_and_before_any_live_message() {
    const ROOMS: [&str; 6] = ["r1", "r2", "r3", "r4", "r5", "r6"];
    // A cache of one message: each replay reads history, so every room's
    // replay takes a while, with live traffic in the rooms replayed before.
    let node = Node::start_with(&[("TROUPE_ROOMS__RECENT", "1")]).await;
    let mut ann = Client::new_user(&node, "ann").await;
    let mut bob = Client::new_user(&node, "bob").await;
    for room in ROOMS {
        ann.join(room).await;
        bob.join(room).await;
        ann.say(room, "first", &format!("{room}-0")).await;
        assert_eq!(bob.expect_message(room).await["seq"], 1);
    }
    let resume_token = bob.resume_token();
    bob.close().await;
    for room in ROOMS {
        for i in 1..=3 {
            ann.say(room, "missed", &format!("{room}-{i}")).await;
        }
    }
    // Ann keeps talking in every room while Bob resumes: each room has live
    // traffic while the others are still replaying.
    let stop = tokio_util::sync::CancellationToken::new();
    let talker = {
        let stop = stop.clone();
        tokio::spawn(async move {
            let mut i = 100;
            while !stop.is_cancelled() {
                for room in ROOMS {
                    ann.send(json!({"type": "send", "room": room, "body": "live", "client_id": format!("{room}-{i}")}))
                        .await;
                }
                i += 1;
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
            ann
        })
    };
    tokio::time::sleep(Duration::from_millis(50)).await;
    let mut ws = Client::raw(&node).await;
    let positions: BTreeMap<&str, u64> = ROOMS.iter().map(|r| (*r, 1)).collect();
    let frame = json!({"type": "resume", "resume_token": resume_token, "rooms": positions});
    ws.send(Message::Text(frame.to_string().into()))
        .await
        .unwrap();
    let mut before: BTreeMap<String, Vec<u64>> = BTreeMap::new();
    let mut after: BTreeMap<String, Vec<u64>> = BTreeMap::new();
    let mut resumed: Option<Value> = None;
    // Until `resumed`, then until every room has had a few live messages.
    while resumed.is_none()
        || ROOMS
            .iter()
            .any(|r| after.get(*r).is_none_or(|v| v.len() < 3))
    {
        let f = next_frame(&mut ws).await;
        match f["type"].as_str().unwrap() {
            "message" => {
                let room = f["room"].as_str().unwrap().to_string();
                let seq = f["seq"].as_u64().unwrap();
                let into = if resumed.is_some() {
                    &mut after
                } else {
                    &mut before
                };
                into.entry(room).or_default().push(seq);
            }
            "resumed" => resumed = Some(f),
            _ => {}
        }
    }
    stop.cancel();
    let _ann = talker.await.unwrap();
    let resumed = resumed.unwrap();
    for room in ROOMS {
        let through = resumed["rooms"][room]
            .as_u64()
            .expect("every room in `resumed`");
        assert!(
            through >= 4,
            "{room}: the missed messages are replayed: {resumed}"
        );
        // Before `resumed`: exactly the replay, 2..=through.
        assert_eq!(
            before.get(room).cloned().unwrap_or_default(),
            (2..=through).collect::<Vec<_>>(),
            "{room}: only the replay comes before `resumed` ({resumed})"
        );
        // After it: live traffic, from through + 1 on, without a gap.
        let live = &after[room];
        assert_eq!(
            *live,
            (through + 1..through + 1 + live.len() as u64).collect::<Vec<_>>(),
            "{room}: live traffic continues right after `resumed`"
        );
    }
}

/// A client that authenticated at the upgrade and sends `resume` late (here
/// a whole second after `session`, as a client of a node under a reconnect
/// storm may): nothing live reaches it before its replay, however long it
/// took. Its subscriptions stay pending until its first frame.
#[tokio::test]
async fn a_late_resume_after_a_token_upgrade_still_replays_before_anything_live() {
    let node = Node::start().await;
    let mut ann = Client::new_user(&node, "ann").await;
    let mut bob = Client::new_user(&node, "bob").await;
    for room in ["lobby", "side"] {
        ann.join(room).await;
        bob.join(room).await;
        ann.say(room, "seen", &format!("{room}-1")).await;
        assert_eq!(bob.expect_message(room).await["seq"], 1);
    }
    let resume_token = bob.resume_token();
    let bob_token = bob.token.clone();
    bob.close().await;
    for i in 2..=4 {
        ann.say("lobby", "missed", &format!("lobby-{i}")).await;
    }
    ann.say("side", "missed", "side-2").await;

    // Bob is back, authenticated by his login token at the upgrade.
    let url = format!("{}?token={bob_token}", node.ws_url());
    let (mut ws, _) = tokio_tungstenite::connect_async(url).await.unwrap();
    assert_eq!(next_frame(&mut ws).await["type"], "session");
    // Live traffic into his rooms while he takes his time (the old grace
    // period was 300 ms).
    ann.say("lobby", "live while bob waits", "lobby-5").await;
    ann.say("side", "live while bob waits", "side-3").await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    ann.say("lobby", "live while bob waits", "lobby-6").await;
    let frame =
        json!({"type": "resume", "resume_token": resume_token, "rooms": {"lobby": 1, "side": 1}});
    ws.send(Message::Text(frame.to_string().into()))
        .await
        .unwrap();

    let mut before: BTreeMap<String, Vec<u64>> = BTreeMap::new();
    let resumed = loop {
        let f = next_frame(&mut ws).await;
        match f["type"].as_str().unwrap() {
            "message" => before
                .entry(f["room"].as_str().unwrap().into())
                .or_default()
                .push(f["seq"].as_u64().unwrap()),
            "resumed" => break f,
            "error" => panic!("unexpected error: {f}"),
            _ => {}
        }
    };
    // Everything after seq 1, in order, the live ones included, then `resumed`.
    assert_eq!(before["lobby"], [2, 3, 4, 5, 6], "resumed: {resumed}");
    assert_eq!(before["side"], [2, 3], "resumed: {resumed}");
    assert_eq!(resumed["rooms"]["lobby"], 6);
    assert_eq!(resumed["rooms"]["side"], 3);
    // And then live.
    ann.say("lobby", "after", "lobby-7").await;
    let f = next_frame(&mut ws).await;
    assert_eq!(
        (f["type"].as_str(), f["seq"].as_u64()),
        (Some("message"), Some(7)),
        "{f}"
    );
}

/// Bob's connection waits for its `resume` (authenticated at the upgrade)
/// while the room restarts after a crash, and while Bob joins the room again
/// on another connection: neither turns the waiting session live, so the
/// replay still comes first.
#[cfg(feature = "test-hooks")]
#[tokio::test]
async fn a_room_restart_or_a_join_elsewhere_does_not_put_live_traffic_before_the_replay() {
    let node = Node::start().await;
    let mut ann = Client::new_user(&node, "ann").await;
    let bob_token = common::account(&node, "bob").await;
    let mut bob = Client::connect(&node, "bob", &bob_token).await;
    ann.join("lobby").await;
    bob.join("lobby").await;
    ann.say("lobby", "seen", "c1").await;
    assert_eq!(bob.expect_message("lobby").await["seq"], 1);
    let resume_token = bob.resume_token();
    bob.close().await;
    ann.say("lobby", "missed", "c2").await;

    let url = format!("{}?token={bob_token}", node.ws_url());
    let (mut ws, _) = tokio_tungstenite::connect_async(url).await.unwrap();
    assert_eq!(next_frame(&mut ws).await["type"], "session");
    // The room crashes and restarts; its members' sessions are subscribed again.
    ann.send(json!({"type": "debug_panic_room", "room": "lobby"}))
        .await;
    // A send that reached the crashed actor is never acked: resend it.
    let send =
        json!({"type": "send", "room": "lobby", "body": "after the crash", "client_id": "c3"});
    let mut ack = Value::Null;
    for _ in 0..10 {
        ann.send(send.clone()).await;
        let f = ann
            .expect_where("ack of c3 or a restart notice", |f| {
                (f["type"] == "ack" && f["client_id"] == "c3") || f["type"] == "error"
            })
            .await;
        if f["type"] == "ack" {
            ack = f;
            break;
        }
        assert_eq!(f["code"], "unavailable", "{f}");
    }
    assert_eq!(ack["seq"], 3, "the restarted room takes sends again: {ack}");
    // Bob joins the room again from another connection.
    let mut bob2 = Client::connect(&node, "bob", &bob_token).await;
    bob2.join("lobby").await;
    ann.say("lobby", "after the join", "c30").await;
    tokio::time::sleep(Duration::from_millis(500)).await;

    let frame = json!({"type": "resume", "resume_token": resume_token, "rooms": {"lobby": 1}});
    ws.send(Message::Text(frame.to_string().into()))
        .await
        .unwrap();
    let mut before = Vec::new();
    let resumed = loop {
        let f = next_frame(&mut ws).await;
        match f["type"].as_str().unwrap() {
            "message" => before.push(f["seq"].as_u64().unwrap()),
            "resumed" => break f,
            _ => {}
        }
    };
    assert_eq!(before, [2, 3, 4], "resumed: {resumed}");
    assert_eq!(resumed["rooms"]["lobby"], 4);
}

/// Without `resume`, a session started by a token goes live at its first
/// frame, whatever it is, with what arrived since it authenticated; with
/// `?live=1` at once, for a client that only listens.
#[tokio::test]
async fn a_token_session_goes_live_at_its_first_frame_or_at_once_with_live_1() {
    let node = Node::start().await;
    let mut ann = Client::new_user(&node, "ann").await;
    ann.join("lobby").await;
    let bob_token = common::account(&node, "bob").await;
    let mut bob = Client::connect(&node, "bob", &bob_token).await;
    bob.join("lobby").await;
    bob.close().await;
    let mut bob = Client::connect(&node, "bob", &bob_token).await;
    let mut listener = Client::connect_live(&node, "bob", &bob_token).await;
    ann.say("lobby", "one", "c1").await;
    assert_eq!(listener.expect_message("lobby").await["seq"], 1);
    tokio::time::sleep(Duration::from_secs(1)).await;
    ann.say("lobby", "two", "c2").await;
    assert_eq!(listener.expect_message("lobby").await["seq"], 2);
    // Bob sent nothing yet: nothing live reached him.
    let early = bob.drain_for(Duration::from_millis(500)).await;
    assert!(
        !early.iter().any(|f| f["type"] == "message"),
        "no live message before the first frame: {early:?}"
    );
    bob.send(json!({"type": "ping", "nonce": "n"})).await;
    assert_eq!(bob.expect_message("lobby").await["seq"], 1);
    assert_eq!(bob.expect_message("lobby").await["seq"], 2);
    assert_eq!(bob.expect("pong").await["nonce"], "n");
}

#[cfg(feature = "test-hooks")]
#[tokio::test]
async fn a_room_that_panics_restarts_with_members_seq_and_history() {
    let node = Node::start().await;
    let mut ann = Client::new_user(&node, "ann").await;
    let mut bob = Client::new_user(&node, "bob").await;
    ann.join("lobby").await;
    bob.join("lobby").await;
    for i in 1..=5 {
        ann.say("lobby", &format!("m{i}"), &format!("c{i}")).await;
    }
    ann.send(json!({"type": "debug_panic_room", "room": "lobby"}))
        .await;
    // The node keeps serving and the room comes back: seq continues, both still members.
    // A send that reached the crashed actor is never acked; the restarted room
    // says so, and the client resends with the same client_id.
    let send =
        json!({"type": "send", "room": "lobby", "body": "after the crash", "client_id": "c6"});
    ann.send(send.clone()).await;
    let mut ack = Value::Null;
    for _ in 0..10 {
        let f = ann
            .expect_where("ack of c6 or a restart notice", |f| {
                (f["type"] == "ack" && f["client_id"] == "c6") || f["type"] == "error"
            })
            .await;
        if f["type"] == "ack" {
            ack = f;
            break;
        }
        assert_eq!(f["code"], "unavailable", "{f}");
        ann.send(send.clone()).await;
    }
    assert_eq!(ack["seq"], 6, "{ack}");
    let m = bob
        .expect_where("the post-crash message", |f| {
            f["type"] == "message" && f["seq"] == 6
        })
        .await;
    assert_eq!(m["body"], "after the crash");
    bob.send(json!({"type": "members", "room": "lobby"})).await;
    assert_eq!(
        bob.expect("members").await["members"]
            .as_array()
            .unwrap()
            .len(),
        2
    );
    let history = history_all(&mut bob, "lobby").await;
    assert_eq!(history.len(), 6);
    assert!(
        node.log_text().contains("room crashed"),
        "the crash is logged"
    );
}

#[tokio::test]
async fn a_client_that_stops_reading_is_closed_4008_and_the_room_keeps_flowing() {
    let node = Node::start_with(&[
        ("TROUPE_LIMITS__OUTBOUND_QUEUE", "64"),
        ("TROUPE_LIMITS__MESSAGE_BURST", "100000"),
    ])
    .await;
    let mut ann = Client::new_user(&node, "ann").await;
    let mut bob = Client::new_user(&node, "bob").await;
    let mut slow = Client::new_user(&node, "slow").await;
    for c in [&mut ann, &mut bob, &mut slow] {
        c.join("lobby").await;
    }
    let stalled = slow.into_stalled();
    // Large bodies fill the socket buffers, then the queue; the node then
    // closes the slow connection, and ann sees slow go offline.
    let body = "x".repeat(3900);
    let is_slow_offline =
        |f: &Value| f["type"] == "presence" && f["user"] == "slow" && f["online"] == false;
    let sender = async {
        let mut sent = 0u64;
        while !ann.saw(is_slow_offline) {
            sent += 1;
            assert!(sent < 20_000, "the stalled client was never closed");
            // Waiting for each ack also keeps ann's own connection drained.
            assert_eq!(
                ann.say("lobby", &body, &format!("c{sent}")).await["type"],
                "ack"
            );
        }
        ann.say("lobby", "last", "last").await;
        sent + 1
    };
    let reader = async {
        let mut seq = 0;
        loop {
            let m = bob.expect_message("lobby").await;
            seq += 1;
            assert_eq!(m["seq"], seq, "bob missed nothing");
            if m["body"] == "last" {
                return seq;
            }
        }
    };
    let (sent, received) = tokio::join!(sender, reader);
    assert_eq!(sent, received);
    // The stalled client now reads: what was buffered, then the close.
    let mut slow = stalled;
    let code = loop {
        let next = tokio::time::timeout(common::WAIT, futures_util::StreamExt::next(&mut slow))
            .await
            .expect("a close");
        match next {
            Some(Ok(Message::Close(frame))) => break frame.map(|f| u16::from(f.code)),
            Some(Ok(_)) => continue,
            other => panic!("expected a close frame, got {other:?}"),
        }
    };
    assert_eq!(code, Some(4008));
}

/// Several senders in several rooms, `kill -9` mid-traffic, restart: every
/// acked message is in history under its acked seq, seqs are gapless, retries
/// create each message once, and members and recent messages come back.
#[tokio::test]
async fn kill_9_with_several_rooms_and_senders_keeps_every_acked_message() {
    let mut node = Node::start_with(&[("TROUPE_LIMITS__MESSAGE_BURST", "100000")]).await;
    const ROOMS: [&str; 3] = ["r1", "r2", "r3"];
    const PER_ROOM: usize = 60;
    let mut senders = Vec::new();
    for name in ["ann", "cyd"] {
        let mut c = Client::new_user(&node, name).await;
        for room in ROOMS {
            c.join(room).await;
        }
        senders.push(c);
    }
    // Both send to every room without waiting; the node dies while acks flow.
    for (s, c) in senders.iter_mut().enumerate() {
        for i in 0..PER_ROOM {
            for room in ROOMS {
                let id = format!("{}-{room}-{i}", c.user);
                c.send(json!({"type": "send", "room": room, "body": format!("{s}/{i}"), "client_id": id}))
                    .await;
            }
        }
    }
    let mut acked: HashMap<(String, String), u64> = HashMap::new();
    while acked.len() < 60 {
        for c in senders.iter_mut() {
            let f = c.expect("ack").await;
            acked.insert(
                (
                    f["room"].as_str().unwrap().into(),
                    f["client_id"].as_str().unwrap().into(),
                ),
                f["seq"].as_u64().unwrap(),
            );
        }
    }
    node.kill9();
    for c in senders.iter_mut() {
        for f in c.drain_for(Duration::from_millis(200)).await {
            if f["type"] == "ack" {
                acked.insert(
                    (
                        f["room"].as_str().unwrap().into(),
                        f["client_id"].as_str().unwrap().into(),
                    ),
                    f["seq"].as_u64().unwrap(),
                );
            }
        }
    }
    node.restart().await;

    // Everyone retries everything with the same client_ids.
    let mut final_seq: HashMap<(String, String), u64> = HashMap::new();
    for (s, name) in ["ann", "cyd"].into_iter().enumerate() {
        let token = common::login_token(&node, name).await;
        let mut c = Client::connect(&node, name, &token).await;
        for i in 0..PER_ROOM {
            for room in ROOMS {
                let id = format!("{name}-{room}-{i}");
                let ack = c.say(room, &format!("{s}/{i}"), &id).await;
                assert_eq!(ack["type"], "ack", "{ack}");
                final_seq.insert((room.to_string(), id), ack["seq"].as_u64().unwrap());
            }
        }
    }
    for (key, seq) in &acked {
        assert_eq!(
            final_seq[key], *seq,
            "{key:?} changed its seq across the crash"
        );
    }
    let token = common::login_token(&node, "ann").await;
    let mut ann = Client::connect(&node, "ann", &token).await;
    for room in ROOMS {
        let history = history_all(&mut ann, room).await;
        let seqs: Vec<u64> = history.iter().map(|m| m["seq"].as_u64().unwrap()).collect();
        assert_eq!(
            seqs,
            (1..=2 * PER_ROOM as u64).collect::<Vec<_>>(),
            "room {room}"
        );
        let ids: BTreeSet<&str> = history
            .iter()
            .map(|m| m["client_id"].as_str().unwrap())
            .collect();
        assert_eq!(ids.len(), 2 * PER_ROOM, "room {room}: a client_id twice");
        for m in &history {
            let key = (
                room.to_string(),
                m["client_id"].as_str().unwrap().to_string(),
            );
            assert_eq!(final_seq[&key], m["seq"].as_u64().unwrap());
        }
        ann.send(json!({"type": "members", "room": room})).await;
        let members = ann.expect("members").await;
        assert_eq!(
            members["members"].as_array().unwrap().len(),
            2,
            "room {room} kept its members"
        );
    }
}

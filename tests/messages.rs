//! Messages that live, as clients use them: edits with versions, deletes,
//! reactions, pins, threads and unread counts, over WebSocket frames and
//! REST, on real nodes (the embedded default, or real stores with
//! `TEST_STORES=real`). Every change is a room event with its own seq:
//! acked when durable, delivered in seq order, replayed by `resume`, kept
//! across `kill -9`, followed by search.

mod common;

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use common::{Client, Node, WAIT};
use serde_json::{json, Value};

/// A node whose message and search rate limits no test reaches.
async fn node() -> Node {
    Node::start_with(&[
        ("TROUPE_LIMITS__MESSAGE_BURST", "100000"),
        ("TROUPE_LIMITS__MESSAGES_PER_SECOND", "100000"),
        ("TROUPE_RATE_LIMITS__SEARCH__BURST", "100000"),
        ("TROUPE_RATE_LIMITS__SEARCH__PER_SECOND", "100000"),
        ("TROUPE_RATE_LIMITS__REST_READ__BURST", "100000"),
        ("TROUPE_RATE_LIMITS__REST_READ__PER_SECOND", "100000"),
    ])
    .await
}

/// One HTTP call: (status, JSON body or Null when empty).
async fn api(
    node: &Node,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: Option<Value>,
) -> (u16, Value) {
    let method = reqwest::Method::from_bytes(method.as_bytes()).expect("a method");
    let mut req = common::http().request(method.clone(), node.url(path));
    if let Some(token) = token {
        req = req.bearer_auth(token);
    }
    if let Some(body) = body {
        req = req.json(&body);
    }
    let r = req.send().await.expect("the node answers");
    let status = r.status().as_u16();
    let text = r.text().await.expect("a body");
    if text.is_empty() {
        return (status, Value::Null);
    }
    let body = serde_json::from_str(&text)
        .unwrap_or_else(|e| panic!("{method} {path}: {status}: not JSON ({e}): {text:?}"));
    (status, body)
}

/// Asserts an error answer: its status and code, and a message.
fn assert_error(what: &str, got: (u16, Value), status: u16, code: &str) {
    assert_eq!(got.0, status, "{what}: {}", got.1);
    assert_eq!(got.1["error"]["code"], code, "{what}: {}", got.1);
    assert!(
        got.1["error"]["message"]
            .as_str()
            .is_some_and(|m| !m.is_empty()),
        "{what}: an error needs a message: {}",
        got.1
    );
}

/// Sends a frame with a `client_id` and waits for its ack or error.
async fn act(client: &mut Client, frame: Value) -> Value {
    let id = frame["client_id"]
        .as_str()
        .expect("a client_id")
        .to_string();
    client.send(frame).await;
    client
        .expect_where(&format!("the answer to {id}"), |f| {
            (f["type"] == "ack" && f["client_id"] == id.as_str())
                || (f["type"] == "error" && f["ref"] == id.as_str())
        })
        .await
}

fn acked(answer: &Value) -> u64 {
    assert_eq!(answer["type"], "ack", "{answer}");
    answer["seq"].as_u64().expect("a seq")
}

fn refused(answer: &Value, code: &str) {
    assert_eq!(answer["type"], "error", "{answer}");
    assert_eq!(answer["code"], code, "{answer}");
}

async fn view(node: &Node, token: &str, room: &str, seq: u64) -> Value {
    let (status, body) = api(
        node,
        "GET",
        &format!("/api/v1/rooms/{room}/messages/{seq}"),
        Some(token),
        None,
    )
    .await;
    assert_eq!(status, 200, "view of {room}#{seq}: {body}");
    body
}

/// Ann and bob in a public room `room` that ann created (its owner).
async fn pair(node: &Node, room: &str) -> (Client, Client) {
    let mut ann = Client::new_user(node, "ann").await;
    let mut bob = Client::new_user(node, "bob").await;
    let (status, body) = api(
        node,
        "POST",
        "/api/v1/rooms",
        Some(&ann.token),
        Some(json!({"name": room})),
    )
    .await;
    assert_eq!(status, 201, "{body}");
    ann.expect_where("joined", |f| f["type"] == "joined").await;
    bob.join(room).await;
    (ann, bob)
}

#[tokio::test]
async fn frames_change_messages_and_refuse_what_is_not_allowed() {
    let node = node().await;
    let (mut ann, mut bob) = pair(&node, "lobby").await;
    let first = acked(&ann.say("lobby", "hello wrold", "m1").await);
    assert_eq!(bob.expect_message("lobby").await["seq"], first);

    // Only the author edits.
    let edit = |id: &str, body: &str| json!({"type": "edit", "room": "lobby", "seq": first, "body": body, "client_id": id});
    refused(
        &act(&mut bob, edit("b-edit", "hijacked")).await,
        "forbidden",
    );
    let edited = acked(&act(&mut ann, edit("a-edit", "hello world")).await);
    assert_eq!(edited, first + 1, "an event takes the next seq");
    // The same client_id again: the same ack, nothing appended twice.
    assert_eq!(
        acked(&act(&mut ann, edit("a-edit", "hello world")).await),
        edited
    );
    let event = bob.expect_message("lobby").await;
    assert_eq!(event["seq"], edited);
    assert_eq!(event["from"], "ann");
    assert_eq!(event["event"]["kind"], "edit");
    assert_eq!(event["event"]["target"], first);
    assert_eq!(event["event"]["body"], "hello world");

    // Members react: one grapheme or a :short_name:.
    let react = |id: &str, emoji: &str| json!({"type": "react", "room": "lobby", "seq": first, "emoji": emoji, "client_id": id});
    let thumbs = acked(&act(&mut bob, react("b-r1", "👍")).await);
    acked(&act(&mut ann, react("a-r1", ":tada:")).await);
    refused(
        &act(&mut bob, react("b-r2", "thumbs up")).await,
        "bad_request",
    );
    refused(
        &act(&mut bob, react("b-r3", &format!(":{}:", "x".repeat(40)))).await,
        "bad_request",
    );
    // Unknown seqs, and seq 0.
    let on = |kind: &str, seq: u64, id: &str| json!({"type": kind, "room": "lobby", "seq": seq, "emoji": "👍", "body": "x", "client_id": id});
    refused(&act(&mut ann, on("edit", 999, "u1")).await, "not_found");
    refused(&act(&mut ann, on("react", 0, "u2")).await, "not_found");
    // An event is not a message: it cannot be edited or reacted to.
    refused(&act(&mut ann, on("react", thumbs, "u3")).await, "not_found");

    // Replies: to a message that exists.
    let reply = |id: &str, to: u64| json!({"type": "send", "room": "lobby", "body": "me too", "client_id": id, "reply_to": to});
    let answer = acked(&act(&mut bob, reply("b-reply", first)).await);
    refused(&act(&mut bob, reply("b-reply2", 999)).await, "not_found");
    let frame = ann
        .expect_where("the reply", |f| {
            f["type"] == "message" && f["seq"] == answer
        })
        .await;
    assert_eq!(frame["reply_to"], first);

    // Pins and deletes: the author or the room's owner (ann created it).
    let bob_msg = acked(&bob.say("lobby", "bob's own words", "b-own").await);
    let pin = |kind: &str, seq: u64, id: &str| json!({"type": kind, "room": "lobby", "seq": seq, "client_id": id});
    refused(
        &act(&mut bob, pin("pin", first, "b-pin")).await,
        "forbidden",
    );
    refused(
        &act(&mut bob, pin("delete", first, "b-del")).await,
        "forbidden",
    );
    acked(&act(&mut ann, pin("pin", first, "a-pin")).await);
    acked(&act(&mut ann, pin("pin", bob_msg, "a-pin-bob")).await);
    acked(&act(&mut bob, pin("unpin", bob_msg, "b-unpin")).await);

    let v = view(&node, &ann.token, "lobby", first).await;
    assert_eq!(v["body"], "hello world");
    assert_eq!(v["version"], 2);
    assert!(v["edited_at"].as_i64().is_some(), "{v}");
    assert_eq!(v["deleted"], false);
    assert_eq!(v["pinned"], true);
    assert_eq!(v["reply_count"], 1);
    assert_eq!(v["reactions"], json!({"👍": ["bob"], ":tada:": ["ann"]}));
    assert_eq!(
        view(&node, &ann.token, "lobby", bob_msg).await["pinned"],
        false
    );

    // The owner deletes bob's message; the author deletes her own.
    acked(&act(&mut ann, pin("delete", bob_msg, "a-del-bob")).await);
    acked(&act(&mut ann, pin("delete", first, "a-del")).await);
    let v = view(&node, &bob.token, "lobby", first).await;
    assert_eq!(v["deleted"], true);
    assert_eq!(v["body"], Value::Null);
    assert_eq!(v["reactions"], json!({}));
    // A deleted message takes no more changes.
    refused(&act(&mut ann, edit("a-edit2", "back")).await, "not_found");
    refused(&act(&mut bob, react("b-r4", "👍")).await, "not_found");
    refused(&act(&mut bob, reply("b-reply3", first)).await, "not_found");

    // A non-member changes nothing.
    let mut eve = Client::new_user(&node, "eve").await;
    refused(&act(&mut eve, on("react", answer, "e1")).await, "forbidden");
    // Unknown frame fields of before are still refused clearly.
    eve.send(json!({"type": "edit", "room": "lobby", "client_id": "e2"}))
        .await;
    refused(&eve.expect("error").await, "bad_request");
}

#[tokio::test]
async fn rest_calls_and_their_errors() {
    let node = node().await;
    let (ann, bob) = pair(&node, "desk").await;
    let eve = Client::new_user(&node, "eve").await;
    let (a, b, e) = (ann.token.clone(), bob.token.clone(), eve.token.clone());
    let messages = "/api/v1/rooms/desk/messages";

    // Send over REST: 201 with the seq; the same client_id is the same message.
    let (status, sent) = api(
        &node,
        "POST",
        messages,
        Some(&a),
        Some(json!({"body": "first draft", "client_id": "r1"})),
    )
    .await;
    assert_eq!(status, 201, "{sent}");
    let seq = sent["seq"].as_u64().unwrap();
    let (_, again) = api(
        &node,
        "POST",
        messages,
        Some(&a),
        Some(json!({"body": "first draft", "client_id": "r1"})),
    )
    .await;
    assert_eq!(again["seq"], seq);
    assert_error(
        "no token",
        api(&node, "POST", messages, None, Some(json!({"body": "x"}))).await,
        401,
        "unauthorized",
    );
    assert_error(
        "not a member",
        api(
            &node,
            "POST",
            messages,
            Some(&e),
            Some(json!({"body": "x"})),
        )
        .await,
        403,
        "forbidden",
    );
    assert_error(
        "empty body",
        api(&node, "POST", messages, Some(&a), Some(json!({"body": ""}))).await,
        400,
        "bad_request",
    );
    assert_error(
        "reply to nothing",
        api(
            &node,
            "POST",
            messages,
            Some(&b),
            Some(json!({"body": "x", "reply_to": 77})),
        )
        .await,
        404,
        "not_found",
    );

    let one = format!("{messages}/{seq}");
    let v = api(&node, "GET", &one, Some(&b), None).await;
    assert_eq!(v.0, 200, "{}", v.1);
    for key in [
        "seq",
        "from",
        "body",
        "ts",
        "version",
        "edited_at",
        "deleted",
        "reactions",
        "pinned",
        "reply_to",
        "reply_count",
    ] {
        assert!(v.1.get(key).is_some(), "a view has {key}: {}", v.1);
    }
    assert_eq!(v.1["from"], "ann");
    assert_eq!(v.1["version"], 1);
    assert_error(
        "view, no token",
        api(&node, "GET", &one, None, None).await,
        401,
        "unauthorized",
    );
    assert_error(
        "view, not a member",
        api(&node, "GET", &one, Some(&e), None).await,
        403,
        "forbidden",
    );
    assert_error(
        "view, unknown seq",
        api(&node, "GET", &format!("{messages}/999"), Some(&a), None).await,
        404,
        "not_found",
    );
    assert_error(
        "view, not a seq",
        api(&node, "GET", &format!("{messages}/abc"), Some(&a), None).await,
        400,
        "bad_request",
    );
    assert_error(
        "view, unknown room",
        api(
            &node,
            "GET",
            "/api/v1/rooms/nowhere/messages/1",
            Some(&a),
            None,
        )
        .await,
        404,
        "not_found",
    );

    // Edits: the author only; the view and the versions follow.
    assert_error(
        "edit by another",
        api(
            &node,
            "PATCH",
            &one,
            Some(&b),
            Some(json!({"body": "mine now"})),
        )
        .await,
        403,
        "forbidden",
    );
    assert_error(
        "edit, unknown seq",
        api(
            &node,
            "PATCH",
            &format!("{messages}/999"),
            Some(&a),
            Some(json!({"body": "x"})),
        )
        .await,
        404,
        "not_found",
    );
    assert_error(
        "edit, empty body",
        api(&node, "PATCH", &one, Some(&a), Some(json!({"body": ""}))).await,
        400,
        "bad_request",
    );
    let (status, edited) = api(
        &node,
        "PATCH",
        &one,
        Some(&a),
        Some(json!({"body": "second draft"})),
    )
    .await;
    assert_eq!(status, 200, "{edited}");
    assert_eq!(edited["body"], "second draft");
    assert_eq!(edited["version"], 2);
    let (_, edited) = api(
        &node,
        "PATCH",
        &one,
        Some(&a),
        Some(json!({"body": "final text"})),
    )
    .await;
    assert_eq!(edited["version"], 3);
    let (status, versions) = api(&node, "GET", &format!("{one}/versions"), Some(&b), None).await;
    assert_eq!(status, 200, "{versions}");
    let bodies: Vec<&str> = versions["versions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["body"].as_str().unwrap())
        .collect();
    assert_eq!(bodies, ["first draft", "second draft"]);
    assert!(versions["versions"][0]["ts"].as_i64().is_some());
    assert_error(
        "versions, not a member",
        api(&node, "GET", &format!("{one}/versions"), Some(&e), None).await,
        403,
        "forbidden",
    );

    // Reactions: idempotent PUT and DELETE; bad emoji; at most 20 distinct.
    let reaction = |emoji: &str| format!("{one}/reactions/{}", urlencode(emoji));
    assert_eq!(
        api(&node, "PUT", &reaction("🎉"), Some(&b), None).await.0,
        204
    );
    assert_eq!(
        api(&node, "PUT", &reaction("🎉"), Some(&b), None).await.0,
        204
    );
    assert_eq!(
        api(&node, "PUT", &reaction("🎉"), Some(&a), None).await.0,
        204
    );
    assert_eq!(
        view(&node, &a, "desk", seq).await["reactions"],
        json!({"🎉": ["ann", "bob"]})
    );
    assert_eq!(
        api(&node, "DELETE", &reaction("🎉"), Some(&a), None)
            .await
            .0,
        204
    );
    assert_eq!(
        api(&node, "DELETE", &reaction("🎉"), Some(&a), None)
            .await
            .0,
        204
    );
    assert_eq!(
        view(&node, &a, "desk", seq).await["reactions"],
        json!({"🎉": ["bob"]})
    );
    assert_error(
        "bad emoji",
        api(&node, "PUT", &reaction("ab"), Some(&b), None).await,
        400,
        "bad_request",
    );
    assert_error(
        "react, not a member",
        api(&node, "PUT", &reaction("👍"), Some(&e), None).await,
        403,
        "forbidden",
    );
    assert_error(
        "react, no token",
        api(&node, "PUT", &reaction("👍"), None, None).await,
        401,
        "unauthorized",
    );
    assert_error(
        "react, unknown seq",
        api(
            &node,
            "PUT",
            &format!("{messages}/999/reactions/x"),
            Some(&b),
            None,
        )
        .await,
        404,
        "not_found",
    );
    for i in 1..20 {
        let status = api(&node, "PUT", &reaction(&format!(":e{i}:")), Some(&b), None)
            .await
            .0;
        assert_eq!(status, 204, "reaction {i}");
    }
    assert_error(
        "a 21st emoji",
        api(&node, "PUT", &reaction(":one_more:"), Some(&a), None).await,
        409,
        "conflict",
    );
    // One of the twenty is still open to everyone.
    assert_eq!(
        api(&node, "PUT", &reaction(":e1:"), Some(&a), None).await.0,
        204
    );
    assert_eq!(
        view(&node, &a, "desk", seq).await["reactions"]
            .as_object()
            .unwrap()
            .len(),
        20
    );

    // Pins: the author or the owner; the list shows views.
    let (_, bobs) = api(
        &node,
        "POST",
        messages,
        Some(&b),
        Some(json!({"body": "bob here"})),
    )
    .await;
    let bob_seq = bobs["seq"].as_u64().unwrap();
    let pins = "/api/v1/rooms/desk/pins";
    assert_error(
        "pin another's",
        api(&node, "PUT", &format!("{pins}/{seq}"), Some(&b), None).await,
        403,
        "forbidden",
    );
    assert_eq!(
        api(&node, "PUT", &format!("{pins}/{seq}"), Some(&a), None)
            .await
            .0,
        204
    );
    assert_eq!(
        api(&node, "PUT", &format!("{pins}/{bob_seq}"), Some(&b), None)
            .await
            .0,
        204
    );
    assert_error(
        "pin unknown",
        api(&node, "PUT", &format!("{pins}/999"), Some(&a), None).await,
        404,
        "not_found",
    );
    let (status, list) = api(&node, "GET", pins, Some(&b), None).await;
    assert_eq!(status, 200, "{list}");
    let pinned: Vec<u64> = list["pins"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["seq"].as_u64().unwrap())
        .collect();
    assert_eq!(pinned, [seq, bob_seq]);
    assert_eq!(list["pins"][0]["body"], "final text");
    assert_error(
        "pins, not a member",
        api(&node, "GET", pins, Some(&e), None).await,
        403,
        "forbidden",
    );
    assert_eq!(
        api(
            &node,
            "DELETE",
            &format!("{pins}/{bob_seq}"),
            Some(&a),
            None
        )
        .await
        .0,
        204
    );
    let (_, list) = api(&node, "GET", pins, Some(&a), None).await;
    assert_eq!(list["pins"].as_array().unwrap().len(), 1, "{list}");

    // Threads.
    let mut replies = Vec::new();
    for i in 0..3 {
        let (status, r) = api(
            &node,
            "POST",
            messages,
            Some(&b),
            Some(json!({"body": format!("reply {i}"), "reply_to": seq})),
        )
        .await;
        assert_eq!(status, 201, "{r}");
        replies.push(r["seq"].as_u64().unwrap());
    }
    let (status, thread) = api(&node, "GET", &format!("{one}/thread"), Some(&a), None).await;
    assert_eq!(status, 200, "{thread}");
    let got: Vec<u64> = thread["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["seq"].as_u64().unwrap())
        .collect();
    assert_eq!(got, replies);
    assert_eq!(thread["messages"][0]["reply_to"], seq);
    let (_, page) = api(
        &node,
        "GET",
        &format!("{one}/thread?after={}&limit=1", replies[0]),
        Some(&a),
        None,
    )
    .await;
    let got: Vec<u64> = page["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["seq"].as_u64().unwrap())
        .collect();
    assert_eq!(got, [replies[1]]);
    assert_eq!(view(&node, &a, "desk", seq).await["reply_count"], 3);
    assert_error(
        "thread, bad limit",
        api(
            &node,
            "GET",
            &format!("{one}/thread?limit=0"),
            Some(&a),
            None,
        )
        .await,
        400,
        "bad_request",
    );
    assert_error(
        "thread, unknown seq",
        api(
            &node,
            "GET",
            &format!("{messages}/999/thread"),
            Some(&a),
            None,
        )
        .await,
        404,
        "not_found",
    );
    assert_error(
        "thread, not a member",
        api(&node, "GET", &format!("{one}/thread"), Some(&e), None).await,
        403,
        "forbidden",
    );

    // Deletes: the author or the owner; the view keeps the seq.
    assert_error(
        "delete another's",
        api(&node, "DELETE", &one, Some(&b), None).await,
        403,
        "forbidden",
    );
    assert_eq!(api(&node, "DELETE", &one, Some(&a), None).await.0, 204);
    let v = view(&node, &b, "desk", seq).await;
    assert_eq!(
        (v["deleted"].clone(), v["body"].clone()),
        (json!(true), Value::Null)
    );
    let (_, versions) = api(&node, "GET", &format!("{one}/versions"), Some(&a), None).await;
    assert_eq!(versions["versions"], json!([]), "versions go with the body");
    assert_error(
        "delete again",
        api(&node, "DELETE", &one, Some(&a), None).await,
        404,
        "not_found",
    );
    assert_error(
        "edit deleted",
        api(&node, "PATCH", &one, Some(&a), Some(json!({"body": "x"}))).await,
        404,
        "not_found",
    );
    let (_, list) = api(&node, "GET", pins, Some(&a), None).await;
    assert_eq!(
        list["pins"],
        json!([]),
        "a deleted message is not pinned: {list}"
    );
}

fn urlencode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

#[tokio::test]
async fn unread_counts_and_last_read_seq_in_the_room_list() {
    let node = node().await;
    let (mut ann, mut bob) = pair(&node, "news").await;
    for i in 0..3 {
        acked(&ann.say("news", &format!("n{i}"), &format!("n{i}")).await);
    }
    let own = acked(&bob.say("news", "mine", "b1").await);
    // An event is not a message to read.
    acked(
        &act(
            &mut ann,
            json!({"type": "react", "room": "news", "seq": own, "emoji": "👍", "client_id": "r"}),
        )
        .await,
    );
    let rooms = |token: String| {
        let node = &node;
        async move {
            let (status, body) = api(node, "GET", "/api/v1/rooms", Some(&token), None).await;
            assert_eq!(status, 200, "{body}");
            body["rooms"]
                .as_array()
                .unwrap()
                .iter()
                .find(|r| r["name"] == "news")
                .cloned()
                .unwrap()
        }
    };
    let r = rooms(bob.token.clone()).await;
    assert_eq!(
        (r["unread"].clone(), r["last_read_seq"].clone()),
        (json!(3), json!(0)),
        "{r}"
    );
    let r = rooms(ann.token.clone()).await;
    assert_eq!(r["unread"], 1, "{r}");
    bob.send(json!({"type": "read", "room": "news", "seq": 2}))
        .await;
    bob.expect_where("read", |f| f["type"] == "read" && f["user"] == "bob")
        .await;
    let r = rooms(bob.token.clone()).await;
    assert_eq!(
        (r["unread"].clone(), r["last_read_seq"].clone()),
        (json!(1), json!(2)),
        "{r}"
    );
}

#[tokio::test]
async fn events_reach_other_members_in_seq_order() {
    let node = node().await;
    let (mut ann, mut bob) = pair(&node, "race").await;
    let mut carl = Client::new_user(&node, "carl").await;
    carl.join("race").await;
    let mut targets = Vec::new();
    for i in 0..5 {
        targets.push(acked(
            &ann.say("race", &format!("t{i}"), &format!("t{i}")).await,
        ));
    }
    // Ann edits while bob reacts, without waiting for acks.
    const N: usize = 60;
    for i in 0..N {
        let target = targets[i % targets.len()];
        ann.send(json!({"type": "edit", "room": "race", "seq": target, "body": format!("v{i}"), "client_id": format!("e{i}")})).await;
        bob.send(json!({"type": "react", "room": "race", "seq": target, "emoji": format!(":r{}:", i % 7), "client_id": format!("r{i}")})).await;
    }
    let mut seqs = Vec::new();
    while seqs.len() < targets.len() + 2 * N {
        let f = carl.expect_message("race").await;
        seqs.push(f["seq"].as_u64().unwrap());
    }
    let expected: Vec<u64> = (1..=(targets.len() + 2 * N) as u64).collect();
    assert_eq!(seqs, expected, "carl sees every seq once, in order");
    // Every change acked; the final views agree with the last edit of each.
    for i in 0..N {
        let id = format!("e{i}");
        let f = ann
            .expect_where(&id, |f| {
                f["client_id"] == id.as_str() || f["ref"] == id.as_str()
            })
            .await;
        acked(&f);
    }
    for (k, target) in targets.iter().enumerate() {
        let last = (0..N).filter(|i| i % targets.len() == k).max().unwrap();
        let v = view(&node, &carl.token, "race", *target).await;
        assert_eq!(v["body"], format!("v{last}"), "{v}");
    }
}

#[tokio::test]
async fn resume_replays_missed_edits_deletes_and_reactions() {
    let node = node().await;
    let (mut ann, mut bob) = pair(&node, "den").await;
    let m1 = acked(&ann.say("den", "one", "m1").await);
    let m2 = acked(&ann.say("den", "two", "m2").await);
    assert_eq!(bob.expect_message("den").await["seq"], m1);
    assert_eq!(bob.expect_message("den").await["seq"], m2);
    let resume_token = bob.resume_token();
    let token = bob.token.clone();
    bob.close().await;
    let mut done = Vec::new();
    done.push(acked(
        &act(
            &mut ann,
            json!({"type": "edit", "room": "den", "seq": m1, "body": "uno", "client_id": "e"}),
        )
        .await,
    ));
    done.push(acked(
        &act(
            &mut ann,
            json!({"type": "react", "room": "den", "seq": m1, "emoji": "🔥", "client_id": "r"}),
        )
        .await,
    ));
    done.push(acked(
        &act(
            &mut ann,
            json!({"type": "delete", "room": "den", "seq": m2, "client_id": "d"}),
        )
        .await,
    ));
    let mut bob = Client::connect(&node, "bob", &token).await;
    bob.send(json!({"type": "resume", "resume_token": resume_token, "rooms": {"den": m2}}))
        .await;
    let mut kinds = Vec::new();
    loop {
        let f = bob
            .expect_where("replay", |f| {
                f["type"] == "resumed" || (f["type"] == "message" && f["room"] == "den")
            })
            .await;
        if f["type"] == "resumed" {
            assert_eq!(f["rooms"]["den"], *done.last().unwrap(), "{f}");
            break;
        }
        kinds.push((
            f["seq"].as_u64().unwrap(),
            f["event"]["kind"].as_str().unwrap().to_string(),
        ));
    }
    assert_eq!(
        kinds,
        [
            (done[0], "edit".to_string()),
            (done[1], "react".to_string()),
            (done[2], "delete".to_string())
        ]
    );
    // History pages carry the events too, and the messages as they are now.
    bob.send(json!({"type": "history", "room": "den"})).await;
    let page = bob.expect("history").await;
    let messages = page["messages"].as_array().unwrap();
    assert_eq!(messages.len(), 5, "{page}");
    assert_eq!(messages[0]["body"], "uno");
    assert!(messages[0]["edited_at"].as_i64().is_some(), "{page}");
    assert_eq!(messages[1]["deleted"], true);
    assert_eq!(messages[4]["event"]["kind"], "delete");
}

/// Waits until `q` finds exactly these seqs (search follows history, written behind the log).
async fn search_until(node: &Node, token: &str, q: &str, want: &[u64]) {
    let deadline = Instant::now() + WAIT;
    loop {
        let url =
            reqwest::Url::parse_with_params(&node.url("/api/v1/search"), &[("q", q)]).unwrap();
        let r = common::http()
            .get(url)
            .bearer_auth(token)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        let body: Value = r.json().await.unwrap();
        let mut got: Vec<u64> = body["results"]
            .as_array()
            .unwrap()
            .iter()
            .map(|h| h["seq"].as_u64().unwrap())
            .collect();
        got.sort_unstable();
        if got == want {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "search {q:?}: {got:?}, want {want:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn search_follows_edits_and_deletes() {
    let node = node().await;
    let (mut ann, _bob) = pair(&node, "lib").await;
    let m1 = acked(&ann.say("lib", "the quick brown fox", "s1").await);
    let m2 = acked(&ann.say("lib", "a lazy brown dog", "s2").await);
    search_until(&node, &ann.token, "brown", &[m1, m2]).await;
    acked(&act(&mut ann, json!({"type": "edit", "room": "lib", "seq": m1, "body": "the quick red panda", "client_id": "e1"})).await);
    search_until(&node, &ann.token, "panda", &[m1]).await;
    // The hit shows the message as it is now.
    let (status, found) = api(
        &node,
        "GET",
        "/api/v1/search?q=panda",
        Some(&ann.token),
        None,
    )
    .await;
    assert_eq!(status, 200, "{found}");
    assert_eq!(
        (&found["results"][0]["body"], &found["results"][0]["from"]),
        (&json!("the quick red panda"), &json!("ann")),
        "{found}"
    );
    search_until(&node, &ann.token, "fox", &[]).await;
    search_until(&node, &ann.token, "brown", &[m2]).await;
    acked(
        &act(
            &mut ann,
            json!({"type": "delete", "room": "lib", "seq": m2, "client_id": "d2"}),
        )
        .await,
    );
    search_until(&node, &ann.token, "lazy", &[]).await;
    search_until(&node, &ann.token, "quick", &[m1]).await;
}

#[tokio::test]
async fn kill_9_during_a_burst_of_edits_and_reactions_loses_no_acked_change() {
    let mut node = node().await;
    let (mut ann, mut bob) = pair(&node, "vault").await;
    // Enough messages that the first ones are older than any cache.
    let mut targets = Vec::new();
    for i in 0..10 {
        targets.push(acked(
            &ann.say("vault", &format!("base {i}"), &format!("b{i}"))
                .await,
        ));
    }
    const N: usize = 200;
    for i in 0..N {
        let target = targets[i % targets.len()];
        ann.send(json!({"type": "edit", "room": "vault", "seq": target, "body": format!("edit {i}"), "client_id": format!("e{i}")})).await;
        bob.send(json!({"type": "react", "room": "vault", "seq": target, "emoji": format!(":k{}:", i % 15), "client_id": format!("r{i}")})).await;
    }
    let mut acks: HashMap<String, u64> = HashMap::new();
    for client in [&mut ann, &mut bob] {
        while acks.len() < 30 {
            let f = client.expect("ack").await;
            acks.insert(
                f["client_id"].as_str().unwrap().to_string(),
                f["seq"].as_u64().unwrap(),
            );
        }
    }
    node.kill9();
    for client in [&mut ann, &mut bob] {
        for f in client.drain_for(Duration::from_millis(200)).await {
            if f["type"] == "ack" {
                acks.insert(
                    f["client_id"].as_str().unwrap().to_string(),
                    f["seq"].as_u64().unwrap(),
                );
            }
        }
    }
    node.restart().await;
    let ann_token = common::login_token(&node, "ann").await;
    let bob_token = common::login_token(&node, "bob").await;
    let mut ann = Client::connect(&node, "ann", &ann_token).await;
    let mut bob = Client::connect(&node, "bob", &bob_token).await;
    // Retry every change with its client_id: an acked one keeps its seq.
    let mut seqs: BTreeMap<u64, String> = BTreeMap::new();
    for i in 0..N {
        let target = targets[i % targets.len()];
        let id = format!("e{i}");
        let seq = acked(&act(&mut ann, json!({"type": "edit", "room": "vault", "seq": target, "body": format!("edit {i}"), "client_id": id})).await);
        if let Some(before) = acks.get(&id) {
            assert_eq!(*before, seq, "{id} changed its seq across the crash");
        }
        seqs.insert(seq, id);
        let id = format!("r{i}");
        let seq = acked(&act(&mut bob, json!({"type": "react", "room": "vault", "seq": target, "emoji": format!(":k{}:", i % 15), "client_id": id})).await);
        if let Some(before) = acks.get(&id) {
            assert_eq!(*before, seq, "{id} changed its seq across the crash");
        }
        seqs.insert(seq, id);
    }
    assert_eq!(seqs.len(), 2 * N, "each change once");
    // The views: every message's last edit (by seq) and every reaction.
    for (k, target) in targets.iter().enumerate() {
        let last_edit = seqs
            .iter()
            .filter(|(_, id)| {
                id.starts_with('e') && id[1..].parse::<usize>().unwrap() % targets.len() == k
            })
            .map(|(_, id)| id[1..].to_string())
            .next_back()
            .unwrap();
        let v = view(&node, &ann_token, "vault", *target).await;
        assert_eq!(v["body"], format!("edit {last_edit}"), "{v}");
        let edits = seqs
            .values()
            .filter(|id| {
                id.starts_with('e') && id[1..].parse::<usize>().unwrap() % targets.len() == k
            })
            .count();
        assert_eq!(v["version"], 1 + edits as u64, "{v}");
        let emoji: Vec<String> = (0..N)
            .filter(|i| i % targets.len() == k)
            .map(|i| format!(":k{}:", i % 15))
            .collect();
        for e in &emoji {
            assert_eq!(v["reactions"][e], json!(["bob"]), "{v}");
        }
    }
    // Versions survive too: the versions of the first target are every body before its last.
    let (status, versions) = api(
        &node,
        "GET",
        &format!("/api/v1/rooms/vault/messages/{}/versions", targets[0]),
        Some(&bob_token),
        None,
    )
    .await;
    assert_eq!(status, 200, "{versions}");
    let count = versions["versions"].as_array().unwrap().len();
    assert_eq!(count, N / targets.len(), "{versions}");
    assert_eq!(versions["versions"][0]["body"], "base 0");
}

#[tokio::test]
async fn old_messages_beyond_the_room_cache_change_like_recent_ones() {
    // A room that keeps few views in memory: older ones come from history.
    let node = Node::start_with(&[
        ("TROUPE_LIMITS__MESSAGE_BURST", "100000"),
        ("TROUPE_LIMITS__MESSAGES_PER_SECOND", "100000"),
        ("TROUPE_ROOMS__RECENT", "2"),
    ])
    .await;
    let (mut ann, mut bob) = pair(&node, "attic").await;
    let old = acked(&ann.say("attic", "an old message", "old").await);
    for i in 0..60 {
        acked(
            &bob.say("attic", &format!("filler {i}"), &format!("f{i}"))
                .await,
        );
    }
    // Refusals need the old message's state too.
    refused(
        &act(
            &mut bob,
            json!({"type": "edit", "room": "attic", "seq": old, "body": "x", "client_id": "b-e"}),
        )
        .await,
        "forbidden",
    );
    acked(&act(&mut ann, json!({"type": "edit", "room": "attic", "seq": old, "body": "an old message, edited", "client_id": "a-e"})).await);
    acked(
        &act(
            &mut bob,
            json!({"type": "react", "room": "attic", "seq": old, "emoji": "🕰", "client_id": "b-r"}),
        )
        .await,
    );
    acked(&act(&mut bob, json!({"type": "send", "room": "attic", "body": "I remember", "reply_to": old, "client_id": "b-reply"})).await);
    for i in 0..60 {
        acked(
            &bob.say("attic", &format!("more {i}"), &format!("g{i}"))
                .await,
        );
    }
    let v = view(&node, &bob.token, "attic", old).await;
    assert_eq!(v["body"], "an old message, edited", "{v}");
    assert_eq!(v["version"], 2);
    assert_eq!(v["reactions"], json!({"🕰": ["bob"]}));
    assert_eq!(v["reply_count"], 1);
    acked(
        &act(
            &mut ann,
            json!({"type": "delete", "room": "attic", "seq": old, "client_id": "a-d"}),
        )
        .await,
    );
    refused(
        &act(&mut bob, json!({"type": "react", "room": "attic", "seq": old, "emoji": "👍", "client_id": "b-r2"})).await,
        "not_found",
    );
    assert_eq!(view(&node, &ann.token, "attic", old).await["deleted"], true);
}

/// Uploads `bytes` as a PNG to `room`; the attachment's id.
async fn upload(node: &Node, token: &str, room: &str, bytes: &[u8]) -> String {
    let r = common::http()
        .post(node.url(&format!("/api/v1/rooms/{room}/attachments?filename=a.png")))
        .bearer_auth(token)
        .header("content-type", "image/png")
        .body(bytes.to_vec())
        .send()
        .await
        .expect("the node answers");
    let status = r.status().as_u16();
    let body: Value = r.json().await.expect("JSON");
    assert_eq!(status, 201, "{body}");
    body["id"].as_str().expect("an id").to_string()
}

#[tokio::test]
async fn attachments_are_checked_on_send_and_deleted_with_their_message() {
    let node = node().await;
    let (mut ann, mut bob) = pair(&node, "album").await;
    let id = upload(&node, &ann.token, "album", b"\x89PNG not really").await;
    let send = |cid: &str, ids: Value| json!({"type": "send", "room": "album", "body": "look", "client_id": cid, "attachments": ids});
    // Only the uploader references an upload, only in its room, each once.
    refused(&act(&mut bob, send("b1", json!([id]))).await, "forbidden");
    refused(
        &act(
            &mut ann,
            send("a0", json!(["0123456789abcdef0123456789abcdef"])),
        )
        .await,
        "not_found",
    );
    refused(
        &act(&mut ann, send("a00", json!([id, id]))).await,
        "bad_request",
    );
    let seq = acked(&act(&mut ann, send("a1", json!([id]))).await);
    let frame = bob
        .expect_where("the message", |f| f["type"] == "message" && f["seq"] == seq)
        .await;
    assert_eq!(frame["attachments"], json!([id]));
    assert_eq!(
        view(&node, &bob.token, "album", seq).await["attachments"],
        json!([id])
    );
    let file = format!("/api/v1/attachments/{id}");
    let r = common::http()
        .get(node.url(&file))
        .bearer_auth(&bob.token)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    // Deleting the message deletes its attachments.
    acked(
        &act(
            &mut ann,
            json!({"type": "delete", "room": "album", "seq": seq, "client_id": "a2"}),
        )
        .await,
    );
    gone(&node, &ann.token, &file).await;
    assert_eq!(
        view(&node, &ann.token, "album", seq).await["attachments"],
        json!([])
    );
}

/// Waits until `file` answers 404 to `token` (a test failure after WAIT).
async fn gone(node: &Node, token: &str, file: &str) {
    let deadline = Instant::now() + WAIT;
    loop {
        let r = common::http()
            .get(node.url(file))
            .bearer_auth(token)
            .send()
            .await
            .unwrap();
        if r.status() == 404 {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "the attachment outlived its message: {}",
            r.status()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn an_old_message_deleted_beyond_the_room_cache_takes_its_attachments() {
    // The room keeps 16 views in memory; the message's is read back from
    // history for the delete, and its attachment goes with it all the same.
    let node = Node::start_with(&[
        ("TROUPE_LIMITS__MESSAGE_BURST", "100000"),
        ("TROUPE_LIMITS__MESSAGES_PER_SECOND", "100000"),
        ("TROUPE_ROOMS__RECENT", "2"),
    ])
    .await;
    let (mut ann, mut bob) = pair(&node, "attic").await;
    let id = upload(&node, &ann.token, "attic", b"\x89PNG an old picture").await;
    let old = acked(
        &act(
            &mut ann,
            json!({"type": "send", "room": "attic", "body": "then", "client_id": "old", "attachments": [id]}),
        )
        .await,
    );
    for i in 0..60 {
        acked(
            &bob.say("attic", &format!("filler {i}"), &format!("f{i}"))
                .await,
        );
    }
    let file = format!("/api/v1/attachments/{id}");
    let r = common::http()
        .get(node.url(&file))
        .bearer_auth(&bob.token)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    acked(
        &act(
            &mut ann,
            json!({"type": "delete", "room": "attic", "seq": old, "client_id": "a-d"}),
        )
        .await,
    );
    gone(&node, &bob.token, &file).await;
    assert_eq!(view(&node, &ann.token, "attic", old).await["deleted"], true);
}

/// Every endpoint of messages that live, with the refusals they all share:
/// no token, a stranger to the room, an unknown room, an unknown seq, a seq
/// that is a room event (not a message), a seq that is not a number.
#[tokio::test]
async fn every_endpoint_refuses_strangers_unknown_rooms_and_seqs() {
    let node = node().await;
    let (mut ann, _bob) = pair(&node, "hall").await;
    let eve = Client::new_user(&node, "eve").await;
    let first = acked(&ann.say("hall", "a message", "m1").await);
    // A room event: a reaction, whose seq is not a message's.
    let event = acked(
        &act(
            &mut ann,
            json!({"type": "react", "room": "hall", "seq": first, "emoji": "👍", "client_id": "r1"}),
        )
        .await,
    );
    let edit = || Some(json!({"body": "new words"}));
    // (method, path with {room} and {seq}, body).
    type Call = (&'static str, &'static str, Option<Value>);
    let calls: Vec<Call> = vec![
        ("GET", "/api/v1/rooms/{room}/messages/{seq}", None),
        ("PATCH", "/api/v1/rooms/{room}/messages/{seq}", edit()),
        ("DELETE", "/api/v1/rooms/{room}/messages/{seq}", None),
        ("GET", "/api/v1/rooms/{room}/messages/{seq}/versions", None),
        ("GET", "/api/v1/rooms/{room}/messages/{seq}/thread", None),
        (
            "PUT",
            "/api/v1/rooms/{room}/messages/{seq}/reactions/%F0%9F%8E%89",
            None,
        ),
        (
            "DELETE",
            "/api/v1/rooms/{room}/messages/{seq}/reactions/%F0%9F%8E%89",
            None,
        ),
        ("PUT", "/api/v1/rooms/{room}/pins/{seq}", None),
        ("DELETE", "/api/v1/rooms/{room}/pins/{seq}", None),
    ];
    let path = |template: &str, room: &str, seq: &str| {
        template.replace("{room}", room).replace("{seq}", seq)
    };
    for (method, template, body) in &calls {
        let at = |room: &str, seq: &str| path(template, room, seq);
        let one = at("hall", &first.to_string());
        assert_error(
            &format!("{method} {template}, no token"),
            api(&node, method, &one, None, body.clone()).await,
            401,
            "unauthorized",
        );
        assert_error(
            &format!("{method} {template}, a bad token"),
            api(&node, method, &one, Some("not-a-token"), body.clone()).await,
            401,
            "unauthorized",
        );
        assert_error(
            &format!("{method} {template}, not a member"),
            api(&node, method, &one, Some(&eve.token), body.clone()).await,
            403,
            "forbidden",
        );
        assert_error(
            &format!("{method} {template}, no such room"),
            api(
                &node,
                method,
                &at("nowhere", "1"),
                Some(&ann.token),
                body.clone(),
            )
            .await,
            404,
            "not_found",
        );
        for seq in ["999", &event.to_string()] {
            assert_error(
                &format!("{method} {template}, seq {seq} is not a message"),
                api(
                    &node,
                    method,
                    &at("hall", seq),
                    Some(&ann.token),
                    body.clone(),
                )
                .await,
                404,
                "not_found",
            );
        }
        for seq in ["abc", "0", "-1"] {
            assert_error(
                &format!("{method} {template}, seq {seq:?}"),
                api(
                    &node,
                    method,
                    &at("hall", seq),
                    Some(&ann.token),
                    body.clone(),
                )
                .await,
                400,
                "bad_request",
            );
        }
    }
    // The room-wide ones: pins and sending.
    for (method, path, body) in [
        ("GET", "/api/v1/rooms/{room}/pins", None),
        (
            "POST",
            "/api/v1/rooms/{room}/messages",
            Some(json!({"body": "hi"})),
        ),
    ] {
        let here = path.replace("{room}", "hall");
        assert_error(
            &format!("{method} {path}, no token"),
            api(&node, method, &here, None, body.clone()).await,
            401,
            "unauthorized",
        );
        assert_error(
            &format!("{method} {path}, not a member"),
            api(&node, method, &here, Some(&eve.token), body.clone()).await,
            403,
            "forbidden",
        );
        assert_error(
            &format!("{method} {path}, no such room"),
            api(
                &node,
                method,
                &path.replace("{room}", "nowhere"),
                Some(&ann.token),
                body,
            )
            .await,
            404,
            "not_found",
        );
    }
    // None of it changed the message.
    let v = view(&node, &ann.token, "hall", first).await;
    assert_eq!(
        (&v["body"], &v["version"], &v["pinned"], &v["deleted"]),
        (&json!("a message"), &json!(1), &json!(false), &json!(false)),
        "{v}"
    );
    assert_eq!(v["reactions"], json!({"👍": ["ann"]}), "{v}");
}

/// The room's admins delete and pin other members' messages, as its owner
/// does; they edit only their own. The node's admins (`admin.users`) delete
/// and pin in any room they are a member of.
#[tokio::test]
async fn room_and_node_admins_delete_and_pin_other_members_messages() {
    let node = Node::start_with(&[
        ("TROUPE_LIMITS__MESSAGE_BURST", "100000"),
        ("TROUPE_LIMITS__MESSAGES_PER_SECOND", "100000"),
        ("TROUPE_ADMIN__USERS", "[root]"),
    ])
    .await;
    let (ann, mut bob) = pair(&node, "club").await;
    let mut cat = Client::new_user(&node, "cat").await;
    cat.join("club").await;
    let mut root = Client::new_user(&node, "root").await;
    root.join("club").await;
    let cats = acked(&cat.say("club", "cat's words", "c1").await);
    let bobs = acked(&bob.say("club", "bob's words", "b1").await);
    let one = |seq: u64| format!("/api/v1/rooms/club/messages/{seq}");
    let pin = |seq: u64| format!("/api/v1/rooms/club/pins/{seq}");

    // A plain member: neither pins nor deletes another's message.
    assert_error(
        "a member pins another's",
        api(&node, "PUT", &pin(cats), Some(&bob.token), None).await,
        403,
        "forbidden",
    );
    assert_error(
        "a member deletes another's",
        api(&node, "DELETE", &one(cats), Some(&bob.token), None).await,
        403,
        "forbidden",
    );
    // The owner makes bob an admin: now he does both, but edits only his own.
    let (status, body) = api(
        &node,
        "PUT",
        "/api/v1/rooms/club/members/bob/role",
        Some(&ann.token),
        Some(json!({"role": "admin"})),
    )
    .await;
    assert_eq!(status, 204, "{body}");
    assert_eq!(
        api(&node, "PUT", &pin(cats), Some(&bob.token), None)
            .await
            .0,
        204
    );
    assert_eq!(view(&node, &ann.token, "club", cats).await["pinned"], true);
    assert_error(
        "an admin edits another's",
        api(
            &node,
            "PATCH",
            &one(cats),
            Some(&bob.token),
            Some(json!({"body": "admin's words"})),
        )
        .await,
        403,
        "forbidden",
    );
    assert_eq!(
        api(&node, "DELETE", &pin(cats), Some(&bob.token), None)
            .await
            .0,
        204
    );
    assert_eq!(
        api(&node, "DELETE", &one(cats), Some(&bob.token), None)
            .await
            .0,
        204
    );
    assert_eq!(view(&node, &ann.token, "club", cats).await["deleted"], true);
    // cat, a member, cannot touch the admin's message.
    refused(
        &act(
            &mut cat,
            json!({"type": "delete", "room": "club", "seq": bobs, "client_id": "c-del"}),
        )
        .await,
        "forbidden",
    );
    // The node's admin, a plain member of the room, pins and deletes it.
    acked(
        &act(
            &mut root,
            json!({"type": "pin", "room": "club", "seq": bobs, "client_id": "r-pin"}),
        )
        .await,
    );
    assert_eq!(view(&node, &ann.token, "club", bobs).await["pinned"], true);
    refused(
        &act(
            &mut root,
            json!({"type": "edit", "room": "club", "seq": bobs, "body": "x", "client_id": "r-edit"}),
        )
        .await,
        "forbidden",
    );
    acked(
        &act(
            &mut root,
            json!({"type": "delete", "room": "club", "seq": bobs, "client_id": "r-del"}),
        )
        .await,
    );
    let v = view(&node, &ann.token, "club", bobs).await;
    assert_eq!((&v["deleted"], &v["pinned"]), (&json!(true), &json!(false)));
}

/// A delete is kept behind the log, not only in the room's memory: after a
/// restart the message has no body, no earlier versions, no reactions, no
/// pin, and search finds it by none of its words.
#[tokio::test]
async fn a_deleted_message_stays_deleted_without_its_versions_after_a_restart() {
    let mut node = node().await;
    let (mut ann, mut bob) = pair(&node, "shed").await;
    let doomed = acked(&ann.say("shed", "walrus one", "m1").await);
    let kept = acked(&ann.say("shed", "walrus kept", "m2").await);
    for (i, body) in ["walrus two", "walrus three"].iter().enumerate() {
        acked(&act(&mut ann, json!({"type": "edit", "room": "shed", "seq": doomed, "body": body, "client_id": format!("e{i}")})).await);
    }
    acked(&act(&mut ann, json!({"type": "edit", "room": "shed", "seq": kept, "body": "walrus kept, edited", "client_id": "e-kept"})).await);
    acked(
        &act(
            &mut bob,
            json!({"type": "react", "room": "shed", "seq": doomed, "emoji": "🦭", "client_id": "r"}),
        )
        .await,
    );
    acked(
        &act(
            &mut ann,
            json!({"type": "pin", "room": "shed", "seq": doomed, "client_id": "p"}),
        )
        .await,
    );
    let versions = |seq: u64| format!("/api/v1/rooms/shed/messages/{seq}/versions");
    let (_, before) = api(&node, "GET", &versions(doomed), Some(&ann.token), None).await;
    assert_eq!(before["versions"].as_array().unwrap().len(), 2, "{before}");
    acked(
        &act(
            &mut ann,
            json!({"type": "delete", "room": "shed", "seq": doomed, "client_id": "d"}),
        )
        .await,
    );
    search_until(&node, &ann.token, "walrus", &[kept]).await;
    drop((ann, bob));
    assert!(node.sigterm().success(), "a clean stop");
    node.restart().await;
    let token = common::login_token(&node, "bob").await;

    let v = view(&node, &token, "shed", doomed).await;
    assert_eq!(
        (&v["deleted"], &v["body"], &v["pinned"], &v["reactions"]),
        (&json!(true), &Value::Null, &json!(false), &json!({})),
        "{v}"
    );
    let (status, after) = api(&node, "GET", &versions(doomed), Some(&token), None).await;
    assert_eq!(status, 200, "{after}");
    assert_eq!(
        after["versions"],
        json!([]),
        "versions are dropped: {after}"
    );
    // The other edited message kept its versions: the store drops only the deleted one's.
    let (_, other) = api(&node, "GET", &versions(kept), Some(&token), None).await;
    assert_eq!(other["versions"][0]["body"], "walrus kept", "{other}");
    let (_, pins) = api(&node, "GET", "/api/v1/rooms/shed/pins", Some(&token), None).await;
    assert_eq!(pins["pins"], json!([]), "{pins}");
    for word in ["walrus", "one", "two", "three"] {
        let want: &[u64] = if word == "walrus" { &[kept] } else { &[] };
        search_until(&node, &token, word, want).await;
    }
    // And it takes no change.
    assert_error(
        "react to a deleted message",
        api(
            &node,
            "PUT",
            &format!("/api/v1/rooms/shed/messages/{doomed}/reactions/%F0%9F%A6%AD"),
            Some(&token),
            None,
        )
        .await,
        404,
        "not_found",
    );
}

/// The emoji rule at its edges: a `:short_name:` of 32 characters (colons
/// included) is taken, 33 is not; one grapheme of several code points is
/// taken, two graphemes are not.
#[tokio::test]
async fn the_emoji_rule_at_its_edges() {
    let node = node().await;
    let (ann, _bob) = pair(&node, "edge").await;
    let (status, sent) = api(
        &node,
        "POST",
        "/api/v1/rooms/edge/messages",
        Some(&ann.token),
        Some(json!({"body": "react to me"})),
    )
    .await;
    assert_eq!(status, 201, "{sent}");
    let seq = sent["seq"].as_u64().unwrap();
    let put = |emoji: &str| {
        let path = format!(
            "/api/v1/rooms/edge/messages/{seq}/reactions/{}",
            urlencode(emoji)
        );
        let token = ann.token.clone();
        let node = &node;
        async move { api(node, "PUT", &path, Some(&token), None).await }
    };
    let longest = format!(":{}:", "x".repeat(30));
    assert_eq!(longest.chars().count(), 32);
    let too_long = format!(":{}:", "x".repeat(31));
    for ok in [longest.as_str(), "👩‍👩‍👧", "🇫🇷", "👍🏽", ":+1:"] {
        let got = put(ok).await;
        assert_eq!(got.0, 204, "{ok:?}: {}", got.1);
    }
    for bad in [too_long.as_str(), "👍👍", "🇫🇷🇫🇷", "::", ":a b:", " ", "a b"] {
        let (status, body) = put(bad).await;
        assert_eq!(
            (status, &body["error"]["code"]),
            (400, &json!("bad_request")),
            "{bad:?}: {body}"
        );
    }
    let v = view(&node, &ann.token, "edge", seq).await;
    assert_eq!(v["reactions"].as_object().unwrap().len(), 5, "{v}");
    assert!(v["reactions"].get(&longest).is_some(), "{v}");
}

/// Changes to old messages (state read from history) while the room is busy
/// with other members' sends: each is acked, none is refused for want of the
/// message's state (the room keeps the views its queued changes need), and
/// one user's changes take seqs in the order they were sent (a change that
/// waits for a message's state holds back the user's later ones), so the
/// last edit sent is the body.
#[tokio::test]
async fn old_messages_change_while_the_room_is_busy() {
    let node = Node::start_with(&[
        ("TROUPE_LIMITS__MESSAGE_BURST", "100000"),
        ("TROUPE_LIMITS__MESSAGES_PER_SECOND", "100000"),
        ("TROUPE_ROOMS__RECENT", "2"),
    ])
    .await;
    let (mut ann, mut bob) = pair(&node, "mill").await;
    let mut old = Vec::new();
    for i in 0..10 {
        old.push(acked(
            &ann.say("mill", &format!("old {i}"), &format!("o{i}")).await,
        ));
    }
    for i in 0..40 {
        acked(
            &bob.say("mill", &format!("filler {i}"), &format!("f{i}"))
                .await,
        );
    }
    // bob keeps the room busy while ann edits and reacts to the old ones.
    const ROUNDS: usize = 30;
    for i in 0..ROUNDS {
        for k in 0..5 {
            bob.send(json!({"type": "send", "room": "mill", "body": format!("busy {i}.{k}"), "client_id": format!("busy{i}.{k}")})).await;
        }
        let target = old[i % old.len()];
        ann.send(json!({"type": "edit", "room": "mill", "seq": target, "body": format!("old, edit {i}"), "client_id": format!("e{i}")})).await;
        ann.send(json!({"type": "react", "room": "mill", "seq": target, "emoji": format!(":m{i}:"), "client_id": format!("r{i}")})).await;
    }
    let mut refusals = Vec::new();
    // The seq of each edit: the last one by seq is the body.
    let mut edits: BTreeMap<u64, usize> = BTreeMap::new();
    let mut in_order = Vec::new();
    for i in 0..ROUNDS {
        for id in [format!("e{i}"), format!("r{i}")] {
            let f = ann
                .expect_where(&id, |f| {
                    (f["type"] == "ack" && f["client_id"] == id.as_str())
                        || (f["type"] == "error" && f["ref"] == id.as_str())
                })
                .await;
            if f["type"] != "ack" {
                refusals.push(f);
                continue;
            }
            let seq = f["seq"].as_u64().unwrap();
            in_order.push((seq, id.clone()));
            if id.starts_with('e') {
                edits.insert(seq, i);
            }
        }
    }
    assert!(
        refusals.is_empty(),
        "{} refused: {refusals:?}",
        refusals.len()
    );
    // ann's requests took seqs in the order she sent them, though some
    // waited for an old message's state and others did not.
    assert!(
        in_order.windows(2).all(|w| w[0].0 < w[1].0),
        "one user's requests keep their order: {in_order:?}"
    );
    for (k, target) in old.iter().enumerate() {
        let mine: Vec<(u64, usize)> = edits
            .iter()
            .filter(|(_, i)| *i % old.len() == k)
            .map(|(s, i)| (*s, *i))
            .collect();
        let rounds: Vec<usize> = mine.iter().map(|(_, i)| *i).collect();
        let mut sorted = rounds.clone();
        sorted.sort_unstable();
        assert_eq!(
            rounds, sorted,
            "one connection's edits of one message keep their order: {mine:?}"
        );
        let last = mine.last().unwrap().1;
        let v = view(&node, &ann.token, "mill", *target).await;
        assert_eq!(
            v["body"],
            format!("old, edit {last}"),
            "edits (seq, round): {mine:?}: {v}"
        );
        assert_eq!(
            v["reactions"].as_object().unwrap().len(),
            ROUNDS / old.len(),
            "{v}"
        );
    }
}

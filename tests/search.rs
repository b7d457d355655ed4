//! Full-text search as a client uses it: `GET /api/v1/search` and the
//! `/search` line command, over real nodes (the embedded default, or real
//! stores with `TEST_STORES=real`). Messages are found once history holds
//! them (written behind the log), so a test waits for what it sent to
//! become searchable before it checks anything else.

mod common;

use std::time::Instant;

use common::{Client, Node, WAIT};
use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::Message;

/// A node whose search rate limit no test reaches (one test sets its own).
async fn node() -> Node {
    Node::start_with(&[
        ("TROUPE_RATE_LIMITS__SEARCH__BURST", "100000"),
        ("TROUPE_RATE_LIMITS__SEARCH__PER_SECOND", "100000"),
        ("TROUPE_LIMITS__MESSAGE_BURST", "100000"),
        ("TROUPE_LIMITS__MESSAGES_PER_SECOND", "100000"),
    ])
    .await
}

/// `GET /api/v1/search` with these query parameters: (status, JSON body).
async fn search(node: &Node, token: Option<&str>, params: &[(&str, &str)]) -> (u16, Value) {
    let url =
        reqwest::Url::parse_with_params(&node.url("/api/v1/search"), params).expect("a search URL");
    let mut req = common::http().get(url);
    if let Some(token) = token {
        req = req.bearer_auth(token);
    }
    let r = req.send().await.expect("the node answers");
    let status = r.status().as_u16();
    let text = r.text().await.expect("a body");
    let body = serde_json::from_str(&text)
        .unwrap_or_else(|e| panic!("{status}: not JSON ({e}): {text:?}"));
    (status, body)
}

/// The results of a successful search.
async fn results(
    node: &Node,
    token: &str,
    params: &[(&str, &str)],
) -> (Vec<Value>, Option<String>) {
    let (status, body) = search(node, Some(token), params).await;
    assert_eq!(status, 200, "{params:?}: {body}");
    let results = body["results"].as_array().expect("results").clone();
    let next = body.get("next_before").map(|n| {
        n.as_str()
            .unwrap_or_else(|| panic!("next_before is a string: {body}"))
            .to_string()
    });
    (results, next)
}

/// Searches until `q` finds `count` messages (history is written behind
/// the ack); the results then.
async fn wait_for(node: &Node, token: &str, q: &str, count: usize) -> Vec<Value> {
    let deadline = Instant::now() + WAIT;
    loop {
        let (found, _) = results(node, token, &[("q", q), ("limit", "100")]).await;
        if found.len() >= count {
            assert_eq!(found.len(), count, "{q}: more than expected: {found:?}");
            return found;
        }
        assert!(
            Instant::now() < deadline,
            "{q}: {} of {count} messages found within {WAIT:?}: {found:?}",
            found.len()
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

fn seqs(results: &[Value]) -> Vec<u64> {
    results
        .iter()
        .map(|r| r["seq"].as_u64().expect("a seq"))
        .collect()
}

fn rooms(results: &[Value]) -> Vec<&str> {
    results
        .iter()
        .map(|r| r["room"].as_str().expect("a room"))
        .collect()
}

async fn assert_error(
    node: &Node,
    token: Option<&str>,
    params: &[(&str, &str)],
    status: u16,
    code: &str,
) {
    let (got, body) = search(node, token, params).await;
    assert_eq!(got, status, "{params:?}: {body}");
    assert_eq!(body["error"]["code"], code, "{params:?}: {body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .is_some_and(|m| !m.is_empty()),
        "an error needs a message: {body}"
    );
}

#[tokio::test]
async fn finds_messages_by_their_words_newest_first() {
    let node = node().await;
    let mut ann = Client::new_user(&node, "ann").await;
    ann.join("kitchen").await;
    ann.say("kitchen", "Apple pie for dessert", "c1").await;
    ann.say("kitchen", "bread and butter", "c2").await;
    ann.say("kitchen", "who ate my APPLE?", "c3").await;
    ann.say("kitchen", "apples are not apple pie", "c4").await;

    let found = wait_for(&node, &ann.token, "apple", 3).await;
    // Whole words in any case, newest first.
    assert_eq!(seqs(&found), [4, 3, 1], "{found:?}");
    let first = &found[0];
    assert_eq!(first["room"], "kitchen");
    assert_eq!(first["from"], "ann");
    assert_eq!(first["body"], "apples are not apple pie");
    assert!(first["ts"].as_i64().is_some_and(|ts| ts > 0), "{first}");

    // Every word must be there.
    let (found, next) = results(&node, &ann.token, &[("q", "apple pie")]).await;
    assert_eq!(seqs(&found), [4, 1], "{found:?}");
    assert_eq!(next, None, "a page that is not full has no next");
    let (found, _) = results(&node, &ann.token, &[("q", "butter")]).await;
    assert_eq!(seqs(&found), [2]);
    let (found, _) = results(&node, &ann.token, &[("q", "apple banana")]).await;
    assert!(found.is_empty(), "{found:?}");
    // Query syntax of the backends is plain text here.
    let (found, _) = results(&node, &ann.token, &[("q", "\"apple\" OR -bread* NEAR(")]).await;
    assert!(found.is_empty(), "{found:?}");
}

#[tokio::test]
async fn pages_follow_next_before_across_rooms_and_within_one() {
    let node = node().await;
    let mut ann = Client::new_user(&node, "ann").await;
    ann.join("red").await;
    ann.join("blue").await;
    for i in 0..7 {
        let room = if i % 2 == 0 { "red" } else { "blue" };
        ann.say(room, &format!("ticket number {i}"), &format!("c{i}"))
            .await;
        // Newest first is by time across rooms: give each message its own ms.
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
    let all = wait_for(&node, &ann.token, "ticket", 7).await;
    let expected: Vec<(String, u64)> = all
        .iter()
        .map(|r| {
            (
                r["room"].as_str().unwrap().to_string(),
                r["seq"].as_u64().unwrap(),
            )
        })
        .collect();
    let ts: Vec<i64> = all.iter().map(|r| r["ts"].as_i64().unwrap()).collect();
    assert!(ts.windows(2).all(|w| w[0] >= w[1]), "{ts:?}");
    // Newest first across rooms: the bodies count down.
    let bodies: Vec<&str> = all.iter().map(|r| r["body"].as_str().unwrap()).collect();
    let want: Vec<String> = (0..7).rev().map(|i| format!("ticket number {i}")).collect();
    assert_eq!(bodies, want);

    // Pages of 3 across both rooms: every message once, in the same order.
    let mut paged = Vec::new();
    let mut before: Option<String> = None;
    for _ in 0..10 {
        let mut params = vec![("q", "ticket"), ("limit", "3")];
        if let Some(b) = &before {
            params.push(("before", b.as_str()));
        }
        let (page, next) = results(&node, &ann.token, &params).await;
        assert!(page.len() <= 3, "{page:?}");
        paged.extend(page.iter().map(|r| {
            (
                r["room"].as_str().unwrap().to_string(),
                r["seq"].as_u64().unwrap(),
            )
        }));
        match next {
            Some(n) => before = Some(n),
            None => break,
        }
    }
    assert_eq!(paged, expected);

    // Within one room: only its messages, and `before` is a seq.
    let (red, next) = results(
        &node,
        &ann.token,
        &[("q", "ticket"), ("room", "red"), ("limit", "2")],
    )
    .await;
    assert_eq!(rooms(&red), ["red", "red"]);
    assert_eq!(seqs(&red), [4, 3]);
    let next = next.expect("a full page has a next");
    assert_eq!(next, "3");
    let (red, next) = results(
        &node,
        &ann.token,
        &[
            ("q", "ticket"),
            ("room", "red"),
            ("before", &next),
            ("limit", "2"),
        ],
    )
    .await;
    assert_eq!(seqs(&red), [2, 1]);
    let (red, _) = results(
        &node,
        &ann.token,
        &[
            ("q", "ticket"),
            ("room", "red"),
            ("before", &next.unwrap()),
            ("limit", "2"),
        ],
    )
    .await;
    assert!(red.is_empty(), "{red:?}");
    let (blue, _) = results(&node, &ann.token, &[("q", "ticket"), ("room", "blue")]).await;
    assert_eq!(rooms(&blue), ["blue", "blue", "blue"]);
}

#[tokio::test]
async fn never_returns_a_room_the_user_cannot_read() {
    let node = node().await;
    let mut ann = Client::new_user(&node, "ann").await;
    let mut bob = Client::new_user(&node, "bob").await;
    let carol = common::account(&node, "carol").await;
    ann.join("shared").await;
    bob.join("shared").await;
    // bob's private room, a public room ann never joined, and a DM she is not in.
    let r = common::http()
        .post(node.url("/api/v1/rooms"))
        .bearer_auth(&bob.token)
        .json(&json!({"name": "bob-secret", "private": true}))
        .send()
        .await
        .expect("the node answers");
    assert_eq!(r.status(), 201);
    bob.expect_where("joined bob-secret", |f| {
        f["type"] == "joined" && f["room"] == "bob-secret"
    })
    .await;
    bob.join("bob-public").await;
    bob.say("bob-secret", "the treasure is buried", "b1").await;
    bob.say("bob-public", "treasure maps for sale", "b2").await;
    bob.send(json!({"type": "dm", "to": "carol", "body": "treasure for two", "client_id": "b3"}))
        .await;
    bob.expect_where("ack of b3", |f| {
        f["type"] == "ack" && f["client_id"] == "b3"
    })
    .await;
    bob.say("shared", "treasure hunt tonight", "b4").await;
    ann.say("shared", "count me in for the treasure", "a1")
        .await;

    // bob reads all four of his rooms; carol only the DM.
    wait_for(&node, &bob.token, "treasure", 5).await;
    let found = wait_for(&node, &carol, "treasure", 1).await;
    assert_eq!(found[0]["body"], "treasure for two");
    assert_eq!(found[0]["from"], "bob");

    // ann: the shared room only.
    let (found, _) = results(&node, &ann.token, &[("q", "treasure")]).await;
    assert_eq!(rooms(&found), ["shared", "shared"], "{found:?}");
    assert_eq!(found[0]["body"], "count me in for the treasure");

    // Asking for a room she cannot read: as history answers.
    assert_error(
        &node,
        Some(&ann.token),
        &[("q", "treasure"), ("room", "bob-secret")],
        403,
        "forbidden",
    )
    .await;
    assert_error(
        &node,
        Some(&ann.token),
        &[("q", "treasure"), ("room", "bob-public")],
        403,
        "forbidden",
    )
    .await;
    assert_error(
        &node,
        Some(&ann.token),
        &[("q", "treasure"), ("room", "dm:bob:carol")],
        403,
        "forbidden",
    )
    .await;
    assert_error(
        &node,
        Some(&ann.token),
        &[("q", "treasure"), ("room", "nowhere")],
        404,
        "not_found",
    )
    .await;
    assert_error(
        &node,
        Some(&ann.token),
        &[("q", "treasure"), ("room", "no spaces!")],
        400,
        "bad_request",
    )
    .await;

    // A cursor naming another room reveals nothing either.
    let (found, _) = results(&node, &ann.token, &[("q", "treasure"), ("limit", "1")]).await;
    assert_eq!(found.len(), 1);
    let (_, next) = results(&node, &bob.token, &[("q", "treasure"), ("limit", "1")]).await;
    let (found, _) = results(
        &node,
        &ann.token,
        &[("q", "treasure"), ("before", &next.unwrap())],
    )
    .await;
    assert!(found.iter().all(|r| r["room"] == "shared"), "{found:?}");
}

#[tokio::test]
async fn bad_queries_are_400_and_a_missing_token_401() {
    let node = node().await;
    let mut ann = Client::new_user(&node, "ann").await;
    ann.join("lobby").await;
    for i in 0..105 {
        ann.send(json!({"type": "send", "room": "lobby", "body": format!("note {i}"), "client_id": format!("c{i}")}))
            .await;
    }
    ann.expect_where("the last ack", |f| {
        f["type"] == "ack" && f["client_id"] == "c104"
    })
    .await;
    wait_for(&node, &ann.token, "note", 100).await;
    let t = Some(ann.token.as_str());

    assert_error(&node, t, &[("q", "")], 400, "bad_request").await;
    assert_error(&node, t, &[("q", "   ")], 400, "bad_request").await;
    assert_error(&node, t, &[], 400, "bad_request").await;
    assert_error(&node, t, &[("q", "?! ...")], 400, "bad_request").await;
    let long = "word ".repeat(60);
    assert_error(&node, t, &[("q", &long)], 400, "bad_request").await;
    assert_error(
        &node,
        t,
        &[("q", "note"), ("before", "%%garbage")],
        400,
        "bad_request",
    )
    .await;
    // A bare seq means nothing across rooms.
    assert_error(
        &node,
        t,
        &[("q", "note"), ("before", "5")],
        400,
        "bad_request",
    )
    .await;
    assert_error(
        &node,
        t,
        &[("q", "note"), ("limit", "many")],
        400,
        "bad_request",
    )
    .await;

    assert_error(&node, None, &[("q", "note")], 401, "unauthorized").await;
    assert_error(
        &node,
        Some("not-a-token"),
        &[("q", "note")],
        401,
        "unauthorized",
    )
    .await;

    // Limits are clamped: at most 100, at least 1.
    let (found, next) = results(&node, &ann.token, &[("q", "note"), ("limit", "100000")]).await;
    assert_eq!(found.len(), 100);
    assert!(next.is_some());
    let (found, _) = results(&node, &ann.token, &[("q", "note"), ("limit", "0")]).await;
    assert_eq!(found.len(), 1);
    assert_eq!(found[0]["body"], "note 104");
    let (found, _) = results(&node, &ann.token, &[("q", "note")]).await;
    assert_eq!(found.len(), 20, "the default page");
}

#[tokio::test]
async fn searches_are_rate_limited_per_user() {
    let node = Node::start_with(&[
        ("TROUPE_RATE_LIMITS__SEARCH__BURST", "3"),
        ("TROUPE_RATE_LIMITS__SEARCH__PER_SECOND", "0.01"),
    ])
    .await;
    let ann = common::account(&node, "ann").await;
    for _ in 0..3 {
        let (status, body) = search(&node, Some(&ann), &[("q", "anything")]).await;
        assert_eq!(status, 200, "{body}");
    }
    let (status, body) = search(&node, Some(&ann), &[("q", "anything")]).await;
    assert_eq!(status, 429, "{body}");
    assert_eq!(body["error"]["code"], "rate_limited");
    assert!(body["error"]["retry_after_ms"].as_u64().is_some(), "{body}");
    let refused = node
        .metric("troupe_rate_limited_total", "kind=\"search\"")
        .await;
    assert_eq!(refused, 1.0, "counted by kind");
}

type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// The next text line that contains `needle`; the others go to `seen`.
async fn next_line(ws: &mut Ws, seen: &mut Vec<String>, needle: &str) -> String {
    loop {
        match tokio::time::timeout(WAIT, ws.next()).await {
            Ok(Some(Ok(Message::Text(t)))) if t.contains(needle) => return t.to_string(),
            Ok(Some(Ok(Message::Text(t)))) => seen.push(t.to_string()),
            Ok(Some(Ok(_))) => continue,
            other => panic!("no line with {needle:?}: {other:?}; seen {seen:?}"),
        }
    }
}

#[tokio::test]
async fn the_search_line_command_lists_matches() {
    let node = node().await;
    let (mut ws, _) = tokio_tungstenite::connect_async(node.ws_url())
        .await
        .expect("ws connects");
    let seen = &mut Vec::new();
    for (line, answer) in [
        ("/register dora secret1", "registered"),
        ("/login dora secret1", "welcome"),
        ("/group_create garden", "created group"),
    ] {
        ws.send(Message::Text(line.into())).await.unwrap();
        next_line(&mut ws, seen, answer).await;
    }
    for body in ["tulips in spring", "roses\nare red", "more tulips, please"] {
        ws.send(Message::Text(format!("/group_msg garden {body}").into()))
            .await
            .unwrap();
    }
    next_line(&mut ws, seen, "more tulips, please").await;

    // Found once history holds them: ask until both are there.
    let deadline = Instant::now() + WAIT;
    let answer = loop {
        ws.send(Message::Text("/search TULIPS".into()))
            .await
            .unwrap();
        let answer = next_line(&mut ws, seen, "search \"TULIPS\"").await;
        if answer.lines().count() == 3 || Instant::now() > deadline {
            break answer;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    };
    let lines: Vec<&str> = answer.lines().collect();
    assert_eq!(
        lines,
        [
            "search \"TULIPS\": 2 newest matches",
            "[garden] #3 dora: more tulips, please",
            "[garden] #1 dora: tulips in spring",
        ],
        "{answer}"
    );
    // A body's newline stays escaped: one result, one line.
    ws.send(Message::Text("/search red".into())).await.unwrap();
    let answer = next_line(&mut ws, seen, "search \"red\"").await;
    assert_eq!(
        answer.lines().nth(1),
        Some("[garden] #2 dora: roses\\nare red"),
        "{answer}"
    );
    ws.send(Message::Text("/search cactus".into()))
        .await
        .unwrap();
    let answer = next_line(&mut ws, seen, "search \"cactus\"").await;
    assert_eq!(answer, "search \"cactus\": no messages found");
    ws.send(Message::Text("/search".into())).await.unwrap();
    next_line(&mut ws, seen, "usage: /search <words>").await;
    ws.send(Message::Text("/search !!!".into())).await.unwrap();
    let answer = next_line(&mut ws, seen, "error (bad_request)").await;
    assert!(answer.contains("no words"), "{answer}");
}

#[tokio::test]
async fn a_search_before_login_is_refused_on_a_line_connection() {
    let node = node().await;
    let (mut ws, _) = tokio_tungstenite::connect_async(node.ws_url())
        .await
        .expect("ws connects");
    ws.send(Message::Text("/search anything".into()))
        .await
        .unwrap();
    match tokio::time::timeout(WAIT, ws.next()).await {
        Ok(Some(Ok(Message::Text(t)))) => assert_eq!(t.as_str(), "error: /login first"),
        other => panic!("no answer: {other:?}"),
    }
}

/// Reading a room ends with membership: a room the user left, or was
/// kicked from, is searched no more (its messages were found before), and
/// asking for it by name is refused as for a stranger.
#[tokio::test]
async fn a_room_left_or_kicked_from_is_searched_no_more() {
    let node = node().await;
    let mut ann = Client::new_user(&node, "ann").await;
    let mut bob = Client::new_user(&node, "bob").await;
    ann.join("porch").await;
    ann.join("attic").await;
    bob.join("porch").await;
    bob.join("attic").await;
    ann.say("porch", "the lantern is on the porch", "a1").await;
    ann.say("attic", "the lantern of the attic", "a2").await;
    bob.say("porch", "bob likes lantern light", "b1").await;
    let found = wait_for(&node, &bob.token, "lantern", 3).await;
    assert_eq!(rooms(&found).len(), 3);

    // bob leaves the porch himself.
    bob.send(json!({"type": "leave", "room": "porch"})).await;
    bob.expect_where("left porch", |f| {
        f["type"] == "left" && f["room"] == "porch"
    })
    .await;
    let (found, _) = results(&node, &bob.token, &[("q", "lantern")]).await;
    assert_eq!(rooms(&found), ["attic"], "{found:?}");
    assert_error(
        &node,
        Some(&bob.token),
        &[("q", "lantern"), ("room", "porch")],
        403,
        "forbidden",
    )
    .await;

    // The attic's first member (its owner) kicks bob out of it.
    let r = common::http()
        .delete(node.url("/api/v1/rooms/attic/members/bob"))
        .bearer_auth(&ann.token)
        .send()
        .await
        .expect("the node answers");
    assert_eq!(r.status(), 204, "{:?}", r.text().await);
    let (found, next) = results(&node, &bob.token, &[("q", "lantern")]).await;
    assert_eq!((found.len(), next), (0, None), "{found:?}");
    assert_error(
        &node,
        Some(&bob.token),
        &[("q", "lantern"), ("room", "attic")],
        403,
        "forbidden",
    )
    .await;
    // ann still reads both.
    let (found, _) = results(&node, &ann.token, &[("q", "lantern")]).await;
    assert_eq!(found.len(), 3, "{found:?}");
}

//! The REST API as a client uses it: status codes, JSON bodies, and JSON
//! errors `{"error":{"code","message"}}` with the matching status.

mod common;

use common::{Client, Node, PASSWORD, WAIT};
use serde_json::{json, Value};

/// Status and JSON body of a response; panics when the body is not JSON.
async fn answer(r: reqwest::Response) -> (u16, Value) {
    let status = r.status().as_u16();
    let text = r.text().await.expect("a body");
    let body = serde_json::from_str(&text)
        .unwrap_or_else(|e| panic!("{status}: not JSON ({e}): {text:?}"));
    (status, body)
}

/// Asserts a JSON error answer with this status and code.
async fn assert_error(r: reqwest::Response, status: u16, code: &str) -> Value {
    let (got, body) = answer(r).await;
    assert_eq!(got, status, "{body}");
    assert_eq!(body["error"]["code"], code, "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .is_some_and(|m| !m.is_empty()),
        "an error needs a message: {body}"
    );
    body
}

async fn post_raw(node: &Node, path: &str, body: &str) -> reqwest::Response {
    common::http()
        .post(node.url(path))
        .header("content-type", "application/json")
        .body(body.to_string())
        .send()
        .await
        .expect("the node answers")
}

async fn get(node: &Node, path: &str, token: Option<&str>) -> reqwest::Response {
    let mut req = common::http().get(node.url(path));
    if let Some(token) = token {
        req = req.bearer_auth(token);
    }
    req.send().await.expect("the node answers")
}

async fn create_room(node: &Node, token: Option<&str>, body: Value) -> reqwest::Response {
    let mut req = common::http().post(node.url("/api/v1/rooms")).json(&body);
    if let Some(token) = token {
        req = req.bearer_auth(token);
    }
    req.send().await.expect("the node answers")
}

#[tokio::test]
async fn register_answers_201_then_409_for_a_taken_name() {
    let node = Node::start().await;
    let (status, body) = answer(common::register(&node, "ann", PASSWORD).await).await;
    assert_eq!(status, 201, "{body}");
    assert_eq!(body["username"], "ann");
    assert!(body["user_id"].as_i64().is_some(), "{body}");

    let (status, bob) = answer(common::register(&node, "bob", PASSWORD).await).await;
    assert_eq!(status, 201, "{bob}");
    assert_ne!(bob["user_id"], body["user_id"], "two users, two ids");

    assert_error(
        common::register(&node, "ann", "another password").await,
        409,
        "conflict",
    )
    .await;
    // The taken name kept its first password.
    assert_eq!(common::login(&node, "ann", PASSWORD).await.status(), 200);
    assert_eq!(
        common::login(&node, "ann", "another password")
            .await
            .status(),
        401
    );
}

/// `alice` and `ALICE` cannot both exist; the name is found in any case and
/// always used as registered (sessions, memberships).
#[tokio::test]
async fn usernames_are_unique_regardless_of_case() {
    let node = Node::start().await;
    let (status, body) = answer(common::register(&node, "alice", PASSWORD).await).await;
    assert_eq!(status, 201, "{body}");
    for other in ["ALICE", "Alice", "aLiCe"] {
        let body = assert_error(
            common::register(&node, other, "another password").await,
            409,
            "conflict",
        )
        .await;
        assert!(
            body["error"]["message"].as_str().unwrap().contains(other),
            "{body}"
        );
    }
    // Login in any case finds the account; the session carries the registered name.
    let (status, login) = answer(common::login(&node, "ALICE", PASSWORD).await).await;
    assert_eq!(status, 200, "{login}");
    assert_eq!(login["username"], "alice");
    let alice_token = login["token"].as_str().unwrap().to_string();
    let alice = Client::connect(&node, "alice", &alice_token).await;
    assert_eq!(alice.session["user"], "alice");
    assert_eq!(
        common::login(&node, "Alice", "another password")
            .await
            .status(),
        401
    );

    // An invitation in another case adds the one account, once.
    let bob_token = common::account(&node, "bob").await;
    let r = create_room(
        &node,
        Some(&bob_token),
        json!({"name": "club", "private": true}),
    )
    .await;
    assert_eq!(r.status(), 201);
    for name in ["ALICE", "alice"] {
        let r = common::http()
            .post(node.url("/api/v1/rooms/club/members"))
            .bearer_auth(&bob_token)
            .json(&json!({"user": name}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 204, "invite {name}");
    }
    let (_, rooms) = answer(get(&node, "/api/v1/rooms", Some(&alice_token)).await).await;
    assert_eq!(rooms["rooms"][0]["name"], "club", "{rooms}");
    assert_eq!(rooms["rooms"][0]["members"], 2, "{rooms}");

    // A DM room's name holds the names as registered: another spelling is refused.
    let mut bob = Client::connect(&node, "bob", &bob_token).await;
    bob.send(json!({"type": "dm", "to": "ALICE", "body": "hi", "client_id": "d1"}))
        .await;
    let e = bob.expect_error("not_found").await;
    assert!(e["message"].as_str().unwrap().contains("alice"), "{e}");
}

#[tokio::test]
async fn register_refuses_invalid_usernames_and_short_passwords_with_400() {
    let node = Node::start().await;
    for name in [
        "ab",
        "has space",
        "semi;colon",
        "ümlaut",
        &"x".repeat(33),
        "",
    ] {
        let body = assert_error(
            common::register(&node, name, PASSWORD).await,
            400,
            "bad_request",
        )
        .await;
        assert!(body["error"]["message"].is_string(), "{name:?}: {body}");
    }
    assert_error(
        common::register(&node, "ann", "12345").await,
        400,
        "bad_request",
    )
    .await;
    assert_error(common::register(&node, "ann", "").await, 400, "bad_request").await;
    // None of these created an account.
    assert_eq!(common::login(&node, "ann", "12345").await.status(), 401);
    // The bounds are fine: a 3- and a 32-character name, a 6-character password.
    let (status, body) = answer(common::register(&node, "ann", "123456").await).await;
    assert_eq!(status, 201, "{body}");
    let (status, body) = answer(common::register(&node, &"a".repeat(32), PASSWORD).await).await;
    assert_eq!(status, 201, "{body}");
    let (status, body) = answer(common::register(&node, "A_b.c-1", PASSWORD).await).await;
    assert_eq!(status, 201, "{body}");
    assert_eq!(common::login(&node, "ann", "123456").await.status(), 200);
}

#[tokio::test]
async fn malformed_json_bodies_are_400_with_a_json_error() {
    let node = Node::start().await;
    assert_error(
        post_raw(&node, "/api/v1/register", "{nope").await,
        400,
        "bad_request",
    )
    .await;
    assert_error(
        post_raw(&node, "/api/v1/register", "").await,
        400,
        "bad_request",
    )
    .await;
    assert_error(
        post_raw(&node, "/api/v1/register", "[1,2]").await,
        400,
        "bad_request",
    )
    .await;
    assert_error(
        post_raw(&node, "/api/v1/register", r#"{"username":"ann"}"#).await,
        400,
        "bad_request",
    )
    .await;
    assert_error(
        post_raw(
            &node,
            "/api/v1/register",
            r#"{"username":5,"password":"123456"}"#,
        )
        .await,
        400,
        "bad_request",
    )
    .await;
    assert_error(
        post_raw(&node, "/api/v1/login", "{nope").await,
        400,
        "bad_request",
    )
    .await;
    let token = common::account(&node, "ann").await;
    let r = common::http()
        .post(node.url("/api/v1/rooms"))
        .bearer_auth(&token)
        .header("content-type", "application/json")
        .body("{\"name\":")
        .send()
        .await
        .unwrap();
    assert_error(r, 400, "bad_request").await;
}

#[tokio::test]
async fn login_answers_a_token_and_refuses_wrong_credentials_with_401() {
    let node = Node::start().await;
    let (_, registered) = answer(common::register(&node, "ann", PASSWORD).await).await;
    let before = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64;
    let (status, body) = answer(common::login(&node, "ann", PASSWORD).await).await;
    assert_eq!(status, 200, "{body}");
    let token = body["token"].as_str().expect("a token");
    assert!(token.len() >= 16, "a guessable token: {token:?}");
    assert!(
        body["expires_at"].as_i64().expect("expires_at") > before,
        "{body}"
    );
    assert_eq!(body["user_id"], registered["user_id"]);
    assert_eq!(body["username"], "ann");
    // The token works.
    assert_eq!(get(&node, "/api/v1/rooms", Some(token)).await.status(), 200);
    // Each login is a new token.
    let (_, again) = answer(common::login(&node, "ann", PASSWORD).await).await;
    assert_ne!(again["token"], body["token"]);

    let wrong = assert_error(
        common::login(&node, "ann", "wrong password").await,
        401,
        "unauthorized",
    )
    .await;
    let unknown = assert_error(
        common::login(&node, "nobody", PASSWORD).await,
        401,
        "unauthorized",
    )
    .await;
    // The answer does not tell which of the two was wrong.
    assert_eq!(wrong["error"]["message"], unknown["error"]["message"]);
    assert!(wrong.get("token").is_none() && wrong["error"].get("token").is_none());
}

#[tokio::test]
async fn the_fourth_login_attempt_in_a_minute_is_rate_limited() {
    let node = Node::start_with(&[("TROUPE_LIMITS__LOGINS_PER_MINUTE", "3")]).await;
    let r = common::register(&node, "ann", PASSWORD).await;
    assert_eq!(r.status(), 201);
    // Failed attempts count too.
    assert_eq!(
        common::login(&node, "ann", "wrong password").await.status(),
        401
    );
    assert_eq!(
        common::login(&node, "ann", "wrong password").await.status(),
        401
    );
    assert_eq!(common::login(&node, "ann", PASSWORD).await.status(), 200);
    // The fourth, even with the right password.
    assert_error(
        common::login(&node, "ann", PASSWORD).await,
        429,
        "rate_limited",
    )
    .await;
    assert_error(
        common::login(&node, "ann", "wrong password").await,
        429,
        "rate_limited",
    )
    .await;
}

/// People behind one address (a NAT, an office) who log in fine never lock
/// each other out: the address limit counts failures only.
#[tokio::test]
async fn one_address_is_limited_by_its_failed_logins_not_its_logins() {
    let node = Node::start_with(&[("TROUPE_LIMITS__LOGINS_PER_MINUTE", "3")]).await;
    let users = ["ann", "bob", "cid", "dee", "eve", "fay"];
    for user in users {
        assert_eq!(common::register(&node, user, PASSWORD).await.status(), 201);
    }
    // Six good logins from 127.0.0.1, over the limit of three a minute.
    for user in users {
        assert_eq!(
            common::login(&node, user, PASSWORD).await.status(),
            200,
            "{user}"
        );
    }
    // Three wrong passwords from this address, each for another account...
    for user in &users[..3] {
        assert_eq!(
            common::login(&node, user, "wrong password").await.status(),
            401
        );
    }
    // ...and the address is refused, for an account that had no failure too.
    let r = common::login(&node, "fay", PASSWORD).await;
    let retry_after = r
        .headers()
        .get("retry-after")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok())
        .expect("a Retry-After in seconds");
    assert!((1..=60).contains(&retry_after), "{retry_after}");
    assert_error(r, 429, "rate_limited").await;
}

#[tokio::test]
async fn logout_answers_204_and_the_token_is_refused_afterwards() {
    let node = Node::start().await;
    let token = common::account(&node, "ann").await;
    let other = {
        let (_, v) = answer(common::login(&node, "ann", PASSWORD).await).await;
        v["token"].as_str().unwrap().to_string()
    };
    assert_eq!(
        get(&node, "/api/v1/rooms", Some(&token)).await.status(),
        200
    );
    let r = common::http()
        .post(node.url("/api/v1/logout"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
    assert!(r.bytes().await.unwrap().is_empty(), "204 has no body");
    assert_error(
        get(&node, "/api/v1/rooms", Some(&token)).await,
        401,
        "unauthorized",
    )
    .await;
    // A second logout with the same token is refused too.
    let r = common::http()
        .post(node.url("/api/v1/logout"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_error(r, 401, "unauthorized").await;
    // Only that token: another login of the same user still works.
    assert_eq!(
        get(&node, "/api/v1/rooms", Some(&other)).await.status(),
        200
    );
    // No token at all.
    let r = common::http()
        .post(node.url("/api/v1/logout"))
        .send()
        .await
        .unwrap();
    assert_error(r, 401, "unauthorized").await;
}

#[tokio::test]
async fn rooms_are_created_and_listed() {
    let node = Node::start().await;
    let ann_token = common::account(&node, "ann").await;
    let bob_token = common::account(&node, "bob").await;

    let (status, body) = answer(get(&node, "/api/v1/rooms", Some(&ann_token)).await).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body["rooms"],
        json!([]),
        "a new user belongs to no room: {body}"
    );

    let (status, room) =
        answer(create_room(&node, Some(&ann_token), json!({"name": "lobby"})).await).await;
    assert_eq!(status, 201, "{room}");
    assert_eq!(room["name"], "lobby");
    assert_eq!(room["members"], 1);
    assert_eq!(room["last_seq"], 0);
    assert_eq!(room["private"], false);

    let (status, room) = answer(
        create_room(
            &node,
            Some(&ann_token),
            json!({"name": "secret", "private": true}),
        )
        .await,
    )
    .await;
    assert_eq!(status, 201, "{room}");
    assert_eq!(room["private"], true);

    assert_error(
        create_room(&node, Some(&bob_token), json!({"name": "lobby"})).await,
        409,
        "conflict",
    )
    .await;
    assert_error(
        create_room(&node, Some(&ann_token), json!({"name": "lobby"})).await,
        409,
        "conflict",
    )
    .await;
    for name in ["bad name", "", "a/b", "dm:ann:bob", &"r".repeat(65)] {
        assert_error(
            create_room(&node, Some(&ann_token), json!({"name": name})).await,
            400,
            "bad_request",
        )
        .await;
    }
    assert_error(
        create_room(&node, None, json!({"name": "anon"})).await,
        401,
        "unauthorized",
    )
    .await;
    assert_error(
        create_room(&node, Some("nope"), json!({"name": "anon"})).await,
        401,
        "unauthorized",
    )
    .await;

    // A message in the lobby shows in the list's last_seq; bob joins and counts.
    let mut ann = Client::connect(&node, "ann", &ann_token).await;
    let mut bob = Client::connect(&node, "bob", &bob_token).await;
    bob.join("lobby").await;
    let ack = ann.say("lobby", "hello", "r-1").await;
    assert_eq!(ack["type"], "ack", "{ack}");

    let (status, body) = answer(get(&node, "/api/v1/rooms", Some(&ann_token)).await).await;
    assert_eq!(status, 200, "{body}");
    let rooms = body["rooms"].as_array().expect("a room list");
    let names: Vec<&str> = rooms.iter().filter_map(|r| r["name"].as_str()).collect();
    assert_eq!(names, ["lobby", "secret"], "{body}");
    assert_eq!(rooms[0]["members"], 2, "{body}");
    assert_eq!(rooms[0]["last_seq"], 1, "{body}");
    assert_eq!(rooms[1]["members"], 1, "{body}");
    assert_eq!(rooms[1]["last_seq"], 0, "{body}");

    let (_, body) = answer(get(&node, "/api/v1/rooms", Some(&bob_token)).await).await;
    let names: Vec<&str> = body["rooms"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|r| r["name"].as_str())
        .collect();
    assert_eq!(names, ["lobby"], "bob is not in the private room: {body}");

    assert_error(get(&node, "/api/v1/rooms", None).await, 401, "unauthorized").await;
}

#[tokio::test]
async fn room_messages_need_membership_an_existing_room_and_a_valid_query() {
    let node = Node::start().await;
    let mut ann = Client::new_user(&node, "ann").await;
    let bob_token = common::account(&node, "bob").await;
    ann.join("lobby").await;
    for i in 1..=3 {
        ann.say("lobby", &format!("m{i}"), &format!("c{i}")).await;
    }
    let (status, body) =
        answer(get(&node, "/api/v1/rooms/lobby/messages", Some(&ann.token)).await).await;
    assert_eq!(status, 200, "{body}");
    let bodies: Vec<&str> = body["messages"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|m| m["body"].as_str())
        .collect();
    assert_eq!(bodies, ["m1", "m2", "m3"]);
    let first = &body["messages"][0];
    assert_eq!(first["seq"], 1);
    assert_eq!(first["from"], "ann");
    assert_eq!(first["room"], "lobby");
    assert_eq!(first["client_id"], "c1");
    assert!(first["ts"].as_i64().is_some(), "{first}");

    let (status, body) = answer(
        get(
            &node,
            "/api/v1/rooms/lobby/messages?after=1&limit=1",
            Some(&ann.token),
        )
        .await,
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["messages"][0]["seq"], 2, "{body}");
    assert_eq!(body["messages"].as_array().unwrap().len(), 1, "{body}");

    assert_error(
        get(&node, "/api/v1/rooms/lobby/messages", Some(&bob_token)).await,
        403,
        "forbidden",
    )
    .await;
    assert_error(
        get(&node, "/api/v1/rooms/nowhere/messages", Some(&ann.token)).await,
        404,
        "not_found",
    )
    .await;
    for query in [
        "?limit=abc",
        "?limit=0",
        "?limit=201",
        "?before=x",
        "?limit=-1",
    ] {
        let r = get(
            &node,
            &format!("/api/v1/rooms/lobby/messages{query}"),
            Some(&ann.token),
        )
        .await;
        assert_error(r, 400, "bad_request").await;
    }
    assert_error(
        get(&node, "/api/v1/rooms/lobby/messages", None).await,
        401,
        "unauthorized",
    )
    .await;
}

#[tokio::test]
async fn users_online_lists_the_connected_users() {
    let node = Node::start().await;
    let ann = Client::new_user(&node, "ann").await;
    let bob = Client::new_user(&node, "bob").await;
    let cyd_token = common::account(&node, "cyd").await; // registered, never connected

    let online = |body: &Value| -> Vec<String> {
        let mut names: Vec<String> = body["users"]
            .as_array()
            .expect("a user list")
            .iter()
            .filter(|u| u["online"] == true)
            .filter_map(|u| u["user"].as_str().map(str::to_string))
            .collect();
        names.sort();
        names
    };
    let (status, body) = answer(get(&node, "/api/v1/users/online", Some(&cyd_token)).await).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(online(&body), ["ann", "bob"], "{body}");
    for u in body["users"].as_array().unwrap() {
        assert!(
            u.get("last_seen").is_some(),
            "each entry has last_seen: {u}"
        );
    }

    // Bob goes away: he is no longer listed as online.
    bob.close().await;
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let (_, body) = answer(get(&node, "/api/v1/users/online", Some(&ann.token)).await).await;
        if online(&body) == ["ann"] {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "bob still online: {body}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert_error(
        get(&node, "/api/v1/users/online", None).await,
        401,
        "unauthorized",
    )
    .await;
    drop(ann);
}

#[tokio::test]
async fn health_names_the_node_and_ready_answers_200() {
    let node = Node::start_with(&[("TROUPE_NODE__NAME", "alpha-7")]).await;
    let (status, body) = answer(get(&node, "/health", None).await).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["status"], "ok");
    assert_eq!(body["node"], "alpha-7");
    let r = get(&node, "/ready", None).await;
    assert_eq!(r.status(), 200);
}

#[tokio::test]
async fn an_unknown_path_is_a_json_404() {
    let node = Node::start().await;
    for path in ["/nope", "/api/v1/nope", "/api/v2/rooms"] {
        assert_error(get(&node, path, None).await, 404, "not_found").await;
    }
}

#[tokio::test]
async fn a_plain_get_of_the_websocket_endpoint_is_a_json_400() {
    let node = Node::start().await;
    assert_error(get(&node, "/ws", None).await, 400, "bad_request").await;
}

/// PROTOCOL.md: "Errors on REST: JSON `{"error":{"code","message"}}` with the
/// matching HTTP status" — a wrong method too.
#[tokio::test]
async fn a_wrong_method_is_a_json_405() {
    let node = Node::start().await;
    let r = get(&node, "/api/v1/register", None).await;
    let (status, body) = answer(r).await;
    assert_eq!(status, 405, "{body}");
    assert!(body["error"]["code"].is_string(), "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .is_some_and(|m| !m.is_empty()),
        "{body}"
    );
}

/// A request body over the frame limit (64 KiB) is refused as `too_large`, in JSON.
#[tokio::test]
async fn a_body_over_the_limit_is_a_json_413() {
    let node = Node::start().await;
    let huge = json!({"username": "ann", "password": "p".repeat(70 * 1024)}).to_string();
    assert_error(
        post_raw(&node, "/api/v1/register", &huge).await,
        413,
        "too_large",
    )
    .await;
    // Nothing was registered.
    assert_eq!(common::register(&node, "ann", PASSWORD).await.status(), 201);
}

/// Every response carries a request id (the client's own, or a new one), and
/// the access log has one line per request naming the route's template and
/// status, never the path's user data nor a query string's token.
#[tokio::test]
async fn requests_get_an_id_and_an_access_log_line_without_secrets() {
    let node = Node::start().await;
    let token = common::account(&node, "ann").await;
    let r = common::http()
        .get(node.url("/api/v1/rooms/secret-plans/messages"))
        .bearer_auth(&token)
        .header("x-request-id", "trace-me-42")
        .send()
        .await
        .expect("answered");
    assert_eq!(
        r.headers()
            .get("x-request-id")
            .and_then(|v| v.to_str().ok()),
        Some("trace-me-42")
    );
    let status = r.status().as_u16();
    let r = get(&node, "/health", None).await;
    let id = r
        .headers()
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .expect("a generated request id")
        .to_string();
    assert_eq!(id.len(), 36, "a UUID: {id}");
    // A WebSocket upgrade with the token in its query string.
    let mut client = common::Client::connect(&node, "ann", &token).await;
    client.send(json!({"type": "ping"})).await;
    client.expect("pong").await;

    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
    let log = loop {
        let log = node.log_text();
        if log.contains("trace-me-42") && log.contains(&id) && log.contains("route=/ws") {
            break log;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no access lines:\n{log}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    };
    let line = log
        .lines()
        .find(|l| l.contains("trace-me-42") && l.contains("status="))
        .unwrap_or_else(|| panic!("an access line for trace-me-42:\n{log}"));
    assert!(
        line.contains("route=/api/v1/rooms/{room}/messages"),
        "{line}"
    );
    assert!(line.contains(&format!("status={status}")), "{line}");
    assert!(
        !log.contains("secret-plans"),
        "a path's user data in the log:\n{log}"
    );
    assert!(!log.contains(&token), "a token in the log:\n{log}");
    assert!(
        !log.contains('\u{1b}'),
        "colour codes in a log file:\n{log}"
    );
}

/// A connection's log lines carry its node, peer, user and session.
#[tokio::test]
async fn a_connections_log_lines_name_its_node_user_and_session() {
    let node = Node::start_with(&[("RUST_LOG", "info,troupe::gateway::ws=debug")]).await;
    let token = common::account(&node, "ann").await;
    let mut client = common::Client::connect(&node, "ann", &token).await;
    // Over the frame limit (64 KiB): logged by the connection, then closed.
    client.send_text(&"x".repeat(70 * 1024)).await;
    let _ = client.expect_close().await;
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let log = node.log_text();
        if let Some(line) = log.lines().find(|l| l.contains("frame over the limit")) {
            assert!(line.contains("ws{node=troupe-1 peer=127.0.0.1:"), "{line}");
            assert!(line.contains("user=ann session="), "{line}");
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "no line:\n{log}");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

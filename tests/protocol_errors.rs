//! What a client sees when it sends something wrong over the WebSocket: an
//! `error` frame with the right code and `ref`, and a connection that stays
//! open (a `ping` still gets its `pong`) — except for frames over the size
//! limit (close 1009) and refused tokens (HTTP 401 at the upgrade).

mod common;

use common::{Client, Node, WAIT};
use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::{Error as WsError, Message};
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

/// A bare WebSocket: sends whatever it is told, reads JSON frames.
struct Raw {
    ws: WebSocketStream<MaybeTlsStream<TcpStream>>,
}

impl Raw {
    async fn connect(node: &Node) -> Raw {
        Raw {
            ws: Client::raw(node).await,
        }
    }

    async fn connect_with_token(node: &Node, token: &str) -> Raw {
        let url = format!("{}?token={}", node.ws_url(), token);
        let (ws, _) = tokio_tungstenite::connect_async(url)
            .await
            .expect("ws connects");
        Raw { ws }
    }

    async fn send(&mut self, frame: Value) {
        self.send_text(&frame.to_string()).await;
    }

    async fn send_text(&mut self, text: &str) {
        self.ws
            .send(Message::Text(text.into()))
            .await
            .expect("send a frame");
    }

    async fn send_binary(&mut self, bytes: &[u8]) {
        self.ws
            .send(Message::Binary(bytes.to_vec().into()))
            .await
            .expect("send a binary frame");
    }

    /// The next JSON text frame; panics on a close or a timeout.
    async fn next(&mut self) -> Value {
        loop {
            match tokio::time::timeout(WAIT, self.ws.next()).await {
                Err(_) => panic!("no frame within {WAIT:?}"),
                Ok(Some(Ok(Message::Text(t)))) => {
                    return serde_json::from_str(&t)
                        .unwrap_or_else(|e| panic!("not JSON ({e}): {t}"))
                }
                Ok(Some(Ok(Message::Close(f)))) => panic!("closed: {f:?}"),
                Ok(Some(Ok(_))) => continue,
                Ok(Some(Err(e))) => panic!("socket error: {e}"),
                Ok(None) => panic!("socket ended"),
            }
        }
    }

    /// The next frame of type `ty`, dropping others (presence and the like).
    async fn expect(&mut self, ty: &str) -> Value {
        let mut skipped = Vec::new();
        loop {
            let f = self.next().await;
            if f["type"] == ty {
                return f;
            }
            skipped.push(f);
            assert!(skipped.len() < 100, "no {ty} frame; got {skipped:?}");
        }
    }

    async fn expect_error(&mut self, code: &str) -> Value {
        let e = self.expect("error").await;
        assert_eq!(e["code"], code, "unexpected error {e}");
        e
    }

    /// The connection still answers: a `ping` with this nonce gets its `pong`.
    async fn assert_alive(&mut self, nonce: &str) {
        self.send(json!({"type": "ping", "nonce": nonce})).await;
        let pong = self.expect("pong").await;
        assert_eq!(pong["nonce"], nonce, "{pong}");
    }
}

/// The connection still answers: a `ping` with this nonce gets its `pong`.
async fn assert_alive(client: &mut Client, nonce: &str) {
    client.send(json!({"type": "ping", "nonce": nonce})).await;
    let pong = client
        .expect_where(&format!("pong {nonce}"), |f| {
            f["type"] == "pong" && f["nonce"] == nonce
        })
        .await;
    assert_eq!(pong["nonce"], nonce);
}

/// The HTTP status of a refused upgrade.
fn upgrade_status(result: Result<impl Sized, WsError>) -> u16 {
    match result {
        Ok(_) => panic!("the upgrade was accepted"),
        Err(WsError::Http(response)) => {
            if let Some(body) = response.body() {
                let v: Value = serde_json::from_slice(body).expect("a JSON error body");
                assert_eq!(v["error"]["code"], "unauthorized", "{v}");
            }
            response.status().as_u16()
        }
        Err(e) => panic!("expected an HTTP answer to the upgrade, got {e}"),
    }
}

async fn history(client: &mut Client, room: &str) -> Vec<Value> {
    client.send(json!({"type": "history", "room": room})).await;
    let h = client
        .expect_where("history", |f| f["type"] == "history" && f["room"] == room)
        .await;
    h["messages"].as_array().expect("a message list").clone()
}

#[tokio::test]
async fn malformed_frames_get_bad_request_and_the_connection_stays_open() {
    let node = Node::start().await;
    let mut ann = Client::new_user(&node, "ann").await;

    ann.send_text("{nope").await;
    let e = ann.expect_error("bad_request").await;
    assert!(
        e["ref"].is_null(),
        "malformed JSON has nothing to refer to: {e}"
    );
    assert!(e["message"].as_str().is_some_and(|m| !m.is_empty()), "{e}");
    assert_alive(&mut ann, "after-malformed").await;

    ann.send_text("[1,2,3]").await;
    ann.expect_error("bad_request").await;
    assert_alive(&mut ann, "after-array").await;

    ann.send(json!({"room": "lobby", "body": "no type"})).await;
    ann.expect_error("bad_request").await;
    assert_alive(&mut ann, "after-missing-type").await;

    ann.send(json!({"type": 5})).await;
    ann.expect_error("bad_request").await;
    assert_alive(&mut ann, "after-numeric-type").await;

    ann.send(json!({"type": "fly", "room": "lobby"})).await;
    let e = ann.expect_error("bad_request").await;
    assert_eq!(e["ref"], "fly", "{e}");
    assert_alive(&mut ann, "after-unknown-type").await;

    ann.send(json!({"type": "send", "room": "lobby", "client_id": "no-body-1"}))
        .await;
    let e = ann.expect_error("bad_request").await;
    assert_eq!(e["ref"], "no-body-1", "{e}");
    assert_alive(&mut ann, "after-missing-body").await;

    // A field of the wrong type.
    ann.send(json!({"type": "join", "room": 42})).await;
    let e = ann.expect_error("bad_request").await;
    assert_eq!(e["ref"], "join", "{e}");
    assert_alive(&mut ann, "after-wrong-field-type").await;

    // Still a working chat connection.
    ann.join("lobby").await;
    let ack = ann.say("lobby", "still here", "ok-1").await;
    assert_eq!(ack["type"], "ack", "{ack}");
    assert_eq!(ack["seq"], 1);
}

#[tokio::test]
async fn frames_before_authentication_are_unauthorized_until_auth() {
    let node = Node::start().await;
    let token = common::account(&node, "ann").await;
    let mut raw = Raw::connect(&node).await;

    // A ping is answered before authentication.
    raw.assert_alive("pre-auth").await;

    raw.send(json!({"type": "join", "room": "lobby"})).await;
    raw.expect_error("unauthorized").await;
    raw.assert_alive("after-join").await;

    raw.send(json!({"type": "send", "room": "lobby", "body": "hi", "client_id": "c1"}))
        .await;
    raw.expect_error("unauthorized").await;
    raw.assert_alive("after-send").await;

    raw.send(json!({"type": "who"})).await;
    raw.expect_error("unauthorized").await;

    raw.send(json!({"type": "resume", "resume_token": "bogus", "rooms": {}}))
        .await;
    let e = raw.expect_error("unauthorized").await;
    assert_eq!(e["ref"], "resume", "{e}");
    raw.assert_alive("after-bad-resume").await;

    // Malformed frames are still bad requests before authentication.
    raw.send_text("{nope").await;
    raw.expect_error("bad_request").await;
    raw.assert_alive("after-malformed").await;

    // Now authenticate on the same connection: it works from here.
    raw.send(json!({"type": "auth", "token": token})).await;
    let session = raw.expect("session").await;
    assert_eq!(session["user"], "ann", "{session}");
    assert!(
        session["resume_token"]
            .as_str()
            .is_some_and(|t| !t.is_empty()),
        "{session}"
    );
    raw.send(json!({"type": "join", "room": "lobby"})).await;
    let joined = raw.expect("joined").await;
    assert_eq!(joined["room"], "lobby");
    assert_eq!(joined["members"], 1);
}

/// PROTOCOL.md: the `ref` of an error is "the offending `client_id` or `type`".
#[tokio::test]
async fn errors_before_authentication_refer_to_the_offending_frame() {
    let node = Node::start().await;
    let mut raw = Raw::connect(&node).await;
    raw.send(json!({"type": "join", "room": "lobby"})).await;
    let e = raw.expect_error("unauthorized").await;
    assert_eq!(e["ref"], "join", "{e}");
    raw.send(json!({"type": "send", "room": "lobby", "body": "hi", "client_id": "pre-1"}))
        .await;
    let e = raw.expect_error("unauthorized").await;
    assert_eq!(e["ref"], "pre-1", "{e}");
}

#[tokio::test]
async fn auth_with_a_bad_token_is_refused_then_a_good_token_works() {
    let node = Node::start().await;
    let token = common::account(&node, "ann").await;
    let mut raw = Raw::connect(&node).await;

    raw.send(json!({"type": "auth", "token": "nope"})).await;
    let e = raw.expect_error("unauthorized").await;
    assert_eq!(e["ref"], "auth", "{e}");
    raw.assert_alive("after-bad-auth").await;

    // Still unauthenticated.
    raw.send(json!({"type": "who"})).await;
    raw.expect_error("unauthorized").await;

    raw.send(json!({"type": "auth", "token": token})).await;
    let session = raw.expect("session").await;
    assert_eq!(session["user"], "ann", "{session}");
    raw.send(json!({"type": "who"})).await;
    let users = raw.expect("users").await;
    let names: Vec<&str> = users["users"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|u| u["user"].as_str())
        .collect();
    assert!(names.contains(&"ann"), "{users}");
}

#[tokio::test]
async fn a_bad_token_is_refused_at_the_upgrade_with_401() {
    let node = Node::start().await;
    let status = upgrade_status(
        tokio_tungstenite::connect_async(format!("{}?token=nope", node.ws_url())).await,
    );
    assert_eq!(status, 401);

    let mut request = node.ws_url().into_client_request().unwrap();
    request
        .headers_mut()
        .insert("Authorization", "Bearer nope".parse().unwrap());
    let status = upgrade_status(tokio_tungstenite::connect_async(request).await);
    assert_eq!(status, 401);

    // A good token in the header is accepted.
    let token = common::account(&node, "ann").await;
    let mut request = node.ws_url().into_client_request().unwrap();
    request
        .headers_mut()
        .insert("Authorization", format!("Bearer {token}").parse().unwrap());
    let (ws, _) = tokio_tungstenite::connect_async(request)
        .await
        .expect("a good token is accepted");
    let mut raw = Raw { ws };
    assert_eq!(raw.expect("session").await["user"], "ann");
}

#[tokio::test]
async fn a_bad_live_parameter_is_refused_at_the_upgrade_with_400() {
    let node = Node::start().await;
    let token = common::account(&node, "ann").await;
    for bad in ["yes", "2", ""] {
        let url = format!("{}?token={token}&live={bad}", node.ws_url());
        match tokio_tungstenite::connect_async(url).await {
            Err(WsError::Http(response)) => {
                assert_eq!(response.status().as_u16(), 400, "live={bad}");
                let body = response.body().as_deref().expect("an error body");
                let v: Value = serde_json::from_slice(body).expect("a JSON error body");
                assert_eq!(v["error"]["code"], "bad_request", "{v}");
                assert!(
                    v["error"]["message"].as_str().unwrap().contains("live"),
                    "{v}"
                );
            }
            Ok(_) => panic!("live={bad} was accepted"),
            Err(e) => panic!("expected an HTTP answer to the upgrade, got {e}"),
        }
    }
    let ann = Client::connect_live(&node, "ann", &token).await;
    assert_eq!(ann.session["user"], "ann");
}

#[tokio::test]
async fn a_revoked_token_is_refused_at_the_upgrade_and_by_auth() {
    let node = Node::start().await;
    let token = common::account(&node, "ann").await;
    // The token works before the logout.
    let ann = Client::connect(&node, "ann", &token).await;
    assert_eq!(ann.session["user"], "ann");
    ann.close().await;

    let r = common::http()
        .post(node.url("/api/v1/logout"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);

    let status = upgrade_status(
        tokio_tungstenite::connect_async(format!("{}?token={token}", node.ws_url())).await,
    );
    assert_eq!(status, 401);

    let mut raw = Raw::connect(&node).await;
    raw.send(json!({"type": "auth", "token": token})).await;
    let e = raw.expect_error("unauthorized").await;
    assert_eq!(e["ref"], "auth", "{e}");
    raw.assert_alive("after-revoked-auth").await;

    // A fresh login works again.
    let r = common::login(&node, "ann", common::PASSWORD).await;
    assert_eq!(r.status(), 200);
    let fresh: Value = r.json().await.unwrap();
    let fresh = fresh["token"].as_str().unwrap();
    assert_ne!(fresh, token);
    raw.send(json!({"type": "auth", "token": fresh})).await;
    assert_eq!(raw.expect("session").await["user"], "ann");
}

#[tokio::test]
async fn a_body_over_4000_characters_is_too_large_and_not_stored() {
    let node = Node::start().await;
    let mut ann = Client::new_user(&node, "ann").await;
    let mut bob = Client::new_user(&node, "bob").await;
    ann.join("lobby").await;
    bob.join("lobby").await;

    let e = ann.say("lobby", &"x".repeat(4001), "big-1").await;
    assert_eq!(e["type"], "error", "{e}");
    assert_eq!(e["code"], "too_large", "{e}");
    assert_eq!(e["ref"], "big-1", "{e}");
    assert_alive(&mut ann, "after-too-large").await;
    assert!(
        history(&mut ann, "lobby").await.is_empty(),
        "a refused message was stored"
    );

    // Characters, not bytes: 4000 two-byte characters fit.
    let body = "é".repeat(4000);
    let ack = ann.say("lobby", &body, "fits-1").await;
    assert_eq!(ack["type"], "ack", "{ack}");
    assert_eq!(ack["seq"], 1, "{ack}");
    let m = bob.expect_message("lobby").await;
    assert_eq!(m["body"], body.as_str());
    let h = history(&mut ann, "lobby").await;
    assert_eq!(h.len(), 1);
    assert_eq!(h[0]["client_id"], "fits-1");
}

#[tokio::test]
async fn a_client_id_over_64_characters_is_too_large() {
    let node = Node::start().await;
    let mut ann = Client::new_user(&node, "ann").await;
    ann.join("lobby").await;
    let long = "c".repeat(65);
    let e = ann.say("lobby", "hello", &long).await;
    assert_eq!(e["type"], "error", "{e}");
    assert_eq!(e["code"], "too_large", "{e}");
    assert_eq!(e["ref"], long.as_str(), "{e}");
    assert_alive(&mut ann, "after-long-client-id").await;
    assert!(history(&mut ann, "lobby").await.is_empty());

    let e = ann.say("lobby", "hello", "").await;
    assert_eq!(e["type"], "error", "an empty client_id is refused: {e}");
    assert_eq!(e["code"], "bad_request", "{e}");
    assert_alive(&mut ann, "after-empty-client-id").await;
    assert!(history(&mut ann, "lobby").await.is_empty());

    let just = "d".repeat(64);
    let ack = ann.say("lobby", "hello", &just).await;
    assert_eq!(ack["type"], "ack", "{ack}");
    assert_eq!(ack["client_id"], just.as_str());
}

#[tokio::test]
async fn an_empty_body_is_bad_request() {
    let node = Node::start().await;
    let mut ann = Client::new_user(&node, "ann").await;
    ann.join("lobby").await;
    let e = ann.say("lobby", "", "empty-1").await;
    assert_eq!(e["type"], "error", "{e}");
    assert_eq!(e["code"], "bad_request", "{e}");
    assert_eq!(e["ref"], "empty-1", "{e}");
    assert_alive(&mut ann, "after-empty").await;
    assert!(history(&mut ann, "lobby").await.is_empty());
}

#[tokio::test]
async fn sending_to_a_room_not_joined_is_forbidden_and_to_no_room_not_found() {
    let node = Node::start().await;
    let mut ann = Client::new_user(&node, "ann").await;
    let mut bob = Client::new_user(&node, "bob").await;
    bob.join("club").await;

    let e = ann.say("club", "let me in", "f-1").await;
    assert_eq!(e["type"], "error", "{e}");
    assert_eq!(e["code"], "forbidden", "{e}");
    assert_eq!(e["ref"], "f-1", "{e}");
    assert_alive(&mut ann, "after-forbidden").await;

    let e = ann.say("nowhere", "anyone?", "n-1").await;
    assert_eq!(e["type"], "error", "{e}");
    assert_eq!(e["code"], "not_found", "{e}");
    assert_eq!(e["ref"], "n-1", "{e}");
    assert_alive(&mut ann, "after-not-found").await;

    // Nothing reached the club, and the send did not create "nowhere".
    bob.send(json!({"type": "history", "room": "club"})).await;
    let h = bob.expect("history").await;
    assert_eq!(h["messages"].as_array().unwrap().len(), 0, "{h}");
    let e = ann.say("nowhere", "still nobody?", "n-2").await;
    assert_eq!(e["code"], "not_found", "{e}");
}

#[tokio::test]
async fn invalid_room_names_on_join_are_bad_request() {
    let node = Node::start().await;
    let mut ann = Client::new_user(&node, "ann").await;
    let too_long = "r".repeat(65);
    for (i, name) in [
        "",
        "has space",
        "a/b",
        "ümlaut",
        "semi;colon",
        too_long.as_str(),
        "!broadcast",
    ]
    .into_iter()
    .enumerate()
    {
        ann.send(json!({"type": "join", "room": name})).await;
        let e = ann.expect("error").await;
        assert_eq!(e["code"], "bad_request", "join {name:?}: {e}");
        assert_eq!(e["ref"], "join", "join {name:?}: {e}");
        assert_alive(&mut ann, &format!("after-bad-name-{i}")).await;
    }
    // The longest valid name, with every allowed character class.
    let longest = format!("Aa0_.-{}", "z".repeat(58));
    assert_eq!(longest.len(), 64);
    let joined = ann.join(&longest).await;
    assert_eq!(joined["members"], 1);
}

#[tokio::test]
async fn a_text_frame_over_64_kib_closes_the_socket_with_1009() {
    let node = Node::start().await;
    let mut ann = Client::new_user(&node, "ann").await;
    ann.join("lobby").await;

    // Just under the frame limit: an error (the body is too long), not a close.
    let body = "u".repeat(60 * 1024);
    let under = json!({"type": "send", "room": "lobby", "body": body, "client_id": "under"});
    assert!(under.to_string().len() < 64 * 1024);
    ann.send(under).await;
    let e = ann.expect_error("too_large").await;
    assert_eq!(e["ref"], "under", "{e}");
    assert_alive(&mut ann, "under-the-limit").await;

    let body = "o".repeat(70 * 1024);
    let over = json!({"type": "send", "room": "lobby", "body": body, "client_id": "over"});
    assert!(over.to_string().len() > 64 * 1024);
    ann.send(over).await;
    assert_eq!(ann.expect_close().await, Some(1009));
}

#[tokio::test]
async fn a_binary_frame_is_bad_request_and_the_connection_stays_open() {
    let node = Node::start().await;
    let token = common::account(&node, "ann").await;
    let mut raw = Raw::connect_with_token(&node, &token).await;
    assert_eq!(raw.expect("session").await["user"], "ann");

    raw.send_binary(br#"{"type":"ping","nonce":"in-binary"}"#)
        .await;
    let e = raw.expect_error("bad_request").await;
    assert!(e["message"].as_str().is_some_and(|m| !m.is_empty()), "{e}");
    raw.assert_alive("after-binary").await;

    // Also before authentication.
    let mut anon = Raw::connect(&node).await;
    anon.send_binary(&[0, 159, 146, 150]).await;
    anon.expect_error("bad_request").await;
    anon.assert_alive("anon-after-binary").await;
}

#[tokio::test]
async fn the_sixth_quick_send_past_a_burst_of_five_is_rate_limited() {
    let node = Node::start_with(&[
        ("TROUPE_LIMITS__MESSAGE_BURST", "5"),
        ("TROUPE_LIMITS__MESSAGES_PER_SECOND", "1"),
    ])
    .await;
    let mut ann = Client::new_user(&node, "ann").await;
    ann.join("lobby").await;
    for i in 1..=6 {
        let (body, id) = (format!("m{i}"), format!("rl-{i}"));
        ann.send(json!({"type": "send", "room": "lobby", "body": body, "client_id": id}))
            .await;
    }
    for i in 1..=6 {
        let id = format!("rl-{i}");
        let f = ann
            .expect_where(&format!("answer to {id}"), |f| {
                (f["type"] == "ack" && f["client_id"] == id.as_str())
                    || (f["type"] == "error" && f["ref"] == id.as_str())
            })
            .await;
        if i <= 5 {
            assert_eq!(f["type"], "ack", "send {i}: {f}");
        } else {
            assert_eq!(f["type"], "error", "send {i}: {f}");
            assert_eq!(f["code"], "rate_limited", "send {i}: {f}");
        }
    }
    assert_alive(&mut ann, "after-rate-limit").await;
    let h = history(&mut ann, "lobby").await;
    let ids: Vec<&str> = h.iter().filter_map(|m| m["client_id"].as_str()).collect();
    assert_eq!(ids, ["rl-1", "rl-2", "rl-3", "rl-4", "rl-5"]);
}

#[tokio::test]
async fn history_with_a_limit_of_0_or_201_is_bad_request() {
    let node = Node::start().await;
    let mut ann = Client::new_user(&node, "ann").await;
    ann.join("lobby").await;
    ann.say("lobby", "one", "h-1").await;
    for limit in [0, 201] {
        ann.send(json!({"type": "history", "room": "lobby", "limit": limit}))
            .await;
        let e = ann.expect("error").await;
        assert_eq!(e["code"], "bad_request", "limit {limit}: {e}");
        assert_eq!(e["ref"], "history", "limit {limit}: {e}");
        assert_alive(&mut ann, &format!("after-limit-{limit}")).await;
    }
    // Negative and non-numeric limits are malformed too.
    ann.send(json!({"type": "history", "room": "lobby", "limit": -1}))
        .await;
    ann.expect_error("bad_request").await;
    ann.send(json!({"type": "history", "room": "lobby", "limit": "ten"}))
        .await;
    ann.expect_error("bad_request").await;
    // The bounds themselves are fine.
    for limit in [1, 200] {
        ann.send(json!({"type": "history", "room": "lobby", "limit": limit}))
            .await;
        let h = ann.expect("history").await;
        assert_eq!(
            h["messages"].as_array().unwrap().len(),
            1,
            "limit {limit}: {h}"
        );
    }
}

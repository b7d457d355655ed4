//! Friends and blocks, as two or three people use them: requests and
//! answers over REST, pushed as `friend` frames to the other user's open
//! connections; friends' presence without a shared room; a block that
//! ends a friendship and stops DMs both ways and requests. Runs on the
//! embedded default and on real stores (`TEST_STORES=real`).

mod common;

use common::{account, http, Client, Node};
use serde_json::{json, Value};

async fn call(node: &Node, method: &str, path: &str, token: &str) -> (u16, Value) {
    let url = node.url(path);
    let req = match method {
        "POST" => http().post(&url),
        "PUT" => http().put(&url),
        "DELETE" => http().delete(&url),
        _ => http().get(&url),
    };
    let r = req.bearer_auth(token).send().await.expect("an answer");
    let status = r.status().as_u16();
    let text = r.text().await.unwrap_or_default();
    (status, serde_json::from_str(&text).unwrap_or(Value::Null))
}

async fn expect_friend(client: &mut Client, user: &str, status: &str) {
    client
        .expect_where(&format!("friend {user} {status}"), |f| {
            f["type"] == "friend" && f["user"] == user && f["status"] == status
        })
        .await;
}

fn names(list: &Value) -> Vec<String> {
    list.as_array()
        .expect("a list")
        .iter()
        .map(|v| v["user"].as_str().expect("a user").to_string())
        .collect()
}

#[tokio::test]
async fn a_request_and_its_answer_reach_both_users_and_make_them_friends() {
    let node = Node::start().await;
    let ann_token = account(&node, "ann").await;
    let bob_token = account(&node, "bob").await;
    let mut ann = Client::connect_live(&node, "ann", &ann_token).await;
    let mut bob = Client::connect_live(&node, "bob", &bob_token).await;

    let (status, body) = call(&node, "POST", "/api/v1/friends/bob", &ann_token).await;
    assert_eq!((status, body["status"].as_str()), (201, Some("requested")));
    expect_friend(&mut bob, "ann", "incoming").await;
    expect_friend(&mut ann, "bob", "outgoing").await;
    // Asking again changes nothing.
    let (status, body) = call(&node, "POST", "/api/v1/friends/bob", &ann_token).await;
    assert_eq!((status, body["status"].as_str()), (200, Some("requested")));

    let (_, lists) = call(&node, "GET", "/api/v1/friends", &bob_token).await;
    assert_eq!(names(&lists["incoming"]), ["ann"]);
    assert!(names(&lists["friends"]).is_empty() && names(&lists["outgoing"]).is_empty());
    let (_, lists) = call(&node, "GET", "/api/v1/friends", &ann_token).await;
    assert_eq!(names(&lists["outgoing"]), ["bob"]);

    // Bob answers by asking back (any case of the name).
    let (status, body) = call(&node, "POST", "/api/v1/friends/Ann", &bob_token).await;
    assert_eq!((status, body["status"].as_str()), (200, Some("friends")));
    expect_friend(&mut ann, "bob", "friends").await;
    expect_friend(&mut bob, "ann", "friends").await;
    let (_, lists) = call(&node, "GET", "/api/v1/friends", &ann_token).await;
    assert_eq!(names(&lists["friends"]), ["bob"]);
    assert_eq!(lists["friends"][0]["online"], true, "{lists}");
    assert!(names(&lists["incoming"]).is_empty() && names(&lists["outgoing"]).is_empty());
    let (status, body) = call(&node, "POST", "/api/v1/friends/bob", &ann_token).await;
    assert_eq!((status, body["status"].as_str()), (200, Some("friends")));

    // Removing ends it for both; there is nothing left to remove.
    let (status, _) = call(&node, "DELETE", "/api/v1/friends/bob", &ann_token).await;
    assert_eq!(status, 204);
    expect_friend(&mut bob, "ann", "none").await;
    let (_, lists) = call(&node, "GET", "/api/v1/friends", &bob_token).await;
    assert!(names(&lists["friends"]).is_empty());
    let (status, body) = call(&node, "DELETE", "/api/v1/friends/bob", &ann_token).await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (404, Some("not_found"))
    );
}

#[tokio::test]
async fn friend_requests_refuse_what_makes_no_sense() {
    let node = Node::start().await;
    let ann = account(&node, "ann").await;
    for (path, code, error) in [
        ("/api/v1/friends/nobody", 404, "not_found"),
        ("/api/v1/friends/ann", 400, "bad_request"),
        ("/api/v1/friends/ANN", 400, "bad_request"),
        ("/api/v1/friends/no%20spaces", 400, "bad_request"),
        ("/api/v1/blocks/nobody", 404, "not_found"),
    ] {
        let method = if path.starts_with("/api/v1/blocks") {
            "PUT"
        } else {
            "POST"
        };
        let (status, body) = call(&node, method, path, &ann).await;
        assert_eq!(status, code, "{method} {path}: {body}");
        assert_eq!(body["error"]["code"], error, "{method} {path}: {body}");
    }
    let (status, _) = call(&node, "GET", "/api/v1/friends", "not-a-token").await;
    assert_eq!(status, 401);
    let r = http().get(node.url("/api/v1/blocks")).send().await.unwrap();
    assert_eq!(r.status(), 401);
    let (_, lists) = call(&node, "GET", "/api/v1/friends", &ann).await;
    assert_eq!(
        lists,
        json!({"friends": [], "incoming": [], "outgoing": []})
    );
}

#[tokio::test]
async fn friends_see_each_others_presence_without_a_shared_room() {
    let node = Node::start().await;
    let ann_token = account(&node, "ann").await;
    let carl_token = account(&node, "carl").await;
    assert_eq!(
        call(&node, "POST", "/api/v1/friends/carl", &ann_token)
            .await
            .0,
        201
    );
    assert_eq!(
        call(&node, "POST", "/api/v1/friends/ann", &carl_token)
            .await
            .0,
        200
    );
    let mut ann = Client::connect_live(&node, "ann", &ann_token).await;
    let carl = Client::connect_live(&node, "carl", &carl_token).await;
    ann.expect_where("carl online", |f| {
        f["type"] == "presence" && f["user"] == "carl" && f["online"] == true
    })
    .await;
    carl.close().await;
    let offline = ann
        .expect_where("carl offline", |f| {
            f["type"] == "presence" && f["user"] == "carl" && f["online"] == false
        })
        .await;
    assert!(offline["last_seen"].as_i64().is_some(), "{offline}");
    let (_, lists) = call(&node, "GET", "/api/v1/friends", &ann_token).await;
    assert_eq!(lists["friends"][0]["online"], false, "{lists}");
    assert!(
        lists["friends"][0]["last_seen"].as_i64().is_some(),
        "{lists}"
    );

    // Not a friend any more: no presence.
    assert_eq!(
        call(&node, "DELETE", "/api/v1/friends/carl", &ann_token)
            .await
            .0,
        204
    );
    let carl = Client::connect_live(&node, "carl", &carl_token).await;
    let seen = ann.drain_for(std::time::Duration::from_millis(500)).await;
    assert!(
        !seen
            .iter()
            .any(|f| f["type"] == "presence" && f["user"] == "carl"),
        "{seen:?}"
    );
    drop(carl);
}

#[tokio::test]
async fn a_block_ends_the_friendship_and_stops_dms_and_requests_both_ways() {
    let node = Node::start().await;
    let ann_token = account(&node, "ann").await;
    let bob_token = account(&node, "bob").await;
    let mut ann = Client::connect_live(&node, "ann", &ann_token).await;
    let mut bob = Client::connect_live(&node, "bob", &bob_token).await;
    call(&node, "POST", "/api/v1/friends/bob", &ann_token).await;
    call(&node, "POST", "/api/v1/friends/ann", &bob_token).await;
    ann.send(json!({"type": "dm", "to": "bob", "body": "hi", "client_id": "d1"}))
        .await;
    ann.expect("ack").await;
    bob.expect_where("ann's dm", |f| f["type"] == "message" && f["body"] == "hi")
        .await;

    let (status, _) = call(&node, "PUT", "/api/v1/blocks/ann", &bob_token).await;
    assert_eq!(status, 204);
    expect_friend(&mut bob, "ann", "blocked").await;
    expect_friend(&mut ann, "bob", "none").await;
    let (_, lists) = call(&node, "GET", "/api/v1/friends", &ann_token).await;
    assert!(names(&lists["friends"]).is_empty(), "{lists}");
    let (_, blocks) = call(&node, "GET", "/api/v1/blocks", &bob_token).await;
    assert_eq!(blocks, json!({"blocked": ["ann"]}));

    // No DMs either way, by `dm` or by `send` to the DM room; no requests.
    ann.send(json!({"type": "dm", "to": "bob", "body": "hello?", "client_id": "d2"}))
        .await;
    let e = ann.expect_error("forbidden").await;
    assert_eq!(e["ref"], "d2", "{e}");
    bob.send(json!({"type": "send", "room": "dm:ann:bob", "body": "x", "client_id": "d3"}))
        .await;
    bob.expect_error("forbidden").await;
    // Nor over REST, a message or a reaction to the DM sent before.
    for (token, path, body) in [
        (
            &ann_token,
            "/api/v1/rooms/dm:ann:bob/messages",
            json!({"body": "rest?"}),
        ),
        (
            &bob_token,
            "/api/v1/rooms/dm:ann:bob/messages",
            json!({"body": "rest!"}),
        ),
    ] {
        let r = http()
            .post(node.url(path))
            .bearer_auth(token)
            .json(&body)
            .send()
            .await
            .expect("an answer");
        assert_eq!(r.status(), 403, "{path} {body}");
    }
    let r = http()
        .put(node.url("/api/v1/rooms/dm:ann:bob/messages/1/reactions/:wave:"))
        .bearer_auth(&ann_token)
        .send()
        .await
        .expect("an answer");
    assert_eq!(r.status(), 403, "a reaction across the block");
    let (status, body) = call(&node, "POST", "/api/v1/friends/bob", &ann_token).await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (403, Some("forbidden"))
    );
    let (status, _) = call(&node, "POST", "/api/v1/friends/ann", &bob_token).await;
    assert_eq!(status, 403);
    let history = http()
        .get(node.url("/api/v1/rooms/dm:ann:bob/messages"))
        .bearer_auth(&ann_token)
        .send()
        .await
        .unwrap()
        .json::<Value>()
        .await
        .unwrap();
    let bodies: Vec<&str> = history["messages"]
        .as_array()
        .expect("messages")
        .iter()
        .filter_map(|m| m["body"].as_str())
        .collect();
    assert_eq!(bodies, ["hi"], "nothing sent across the block was stored");

    // Unblocked: DMs flow again; unblocking twice finds nothing.
    assert_eq!(
        call(&node, "DELETE", "/api/v1/blocks/ann", &bob_token)
            .await
            .0,
        204
    );
    assert_eq!(
        call(&node, "DELETE", "/api/v1/blocks/ann", &bob_token)
            .await
            .0,
        404
    );
    ann.send(json!({"type": "dm", "to": "bob", "body": "again", "client_id": "d4"}))
        .await;
    ann.expect_where("ack d4", |f| f["type"] == "ack" && f["client_id"] == "d4")
        .await;
}

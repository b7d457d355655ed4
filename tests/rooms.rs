//! Discovering rooms: `GET /api/v1/rooms/public` lists public group rooms
//! (never private ones, DMs or `!broadcast`) with member counts, filtered by
//! name and paged. Runs on the embedded default and on real stores.

mod common;

use common::{account, http, Client, Node};
use serde_json::{json, Value};

async fn public(node: &Node, token: &str, query: &str) -> (u16, Value) {
    let r = http()
        .get(node.url(&format!("/api/v1/rooms/public{query}")))
        .bearer_auth(token)
        .send()
        .await
        .expect("an answer");
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Value::Null))
}

fn names(body: &Value) -> Vec<&str> {
    body["rooms"]
        .as_array()
        .expect("rooms")
        .iter()
        .map(|r| r["name"].as_str().expect("a name"))
        .collect()
}

#[tokio::test]
async fn public_rooms_are_listed_filtered_and_paged_with_member_counts() {
    let node = Node::start().await;
    let ann = account(&node, "ann").await;
    let bob = account(&node, "bob").await;
    for (name, private) in [
        ("book-club", false),
        ("Chess_Club", false),
        ("garden", false),
        ("secret-club", true),
        ("100%club", false),
    ] {
        let body = json!({"name": name, "private": private});
        let r = http()
            .post(node.url("/api/v1/rooms"))
            .bearer_auth(&ann)
            .json(&body)
            .send()
            .await
            .unwrap();
        // `%` is not allowed in a room name: that create is refused.
        let expected = if name.contains('%') { 400 } else { 201 };
        assert_eq!(r.status(), expected, "{name}");
    }
    let mut b = Client::connect(&node, "bob", &bob).await;
    b.join("garden").await;
    b.send(json!({"type": "dm", "to": "ann", "body": "hi", "client_id": "d"}))
        .await;
    b.expect("ack").await;

    let (status, all) = public(&node, &bob, "").await;
    assert_eq!(status, 200);
    assert_eq!(names(&all), ["Chess_Club", "book-club", "garden"]);
    assert!(all.get("next_after").is_none(), "{all}");
    let garden = &all["rooms"][2];
    assert_eq!(
        (&garden["members"], &garden["created_by"]),
        (&json!(2), &json!("ann"))
    );
    assert_eq!(all["rooms"][0]["members"], 1);

    // Any case; wildcards are plain characters.
    let (_, clubs) = public(&node, &bob, "?q=CLUB").await;
    assert_eq!(names(&clubs), ["Chess_Club", "book-club"]);
    let (_, none) = public(&node, &bob, "?q=%25").await;
    assert!(names(&none).is_empty(), "{none}");
    let (_, underscore) = public(&node, &bob, "?q=s_c").await;
    assert_eq!(names(&underscore), ["Chess_Club"]);

    // A page at a time.
    let mut after = String::new();
    let mut walked = Vec::new();
    loop {
        let (status, page) = public(&node, &bob, &format!("?limit=2&after={after}")).await;
        assert_eq!(status, 200);
        walked.extend(names(&page).into_iter().map(String::from));
        match page["next_after"].as_str() {
            Some(next) => after = next.to_string(),
            None => break,
        }
    }
    assert_eq!(walked, ["Chess_Club", "book-club", "garden"]);

    for bad in [
        "?limit=0",
        "?limit=101",
        "?limit=x",
        &format!("?q={}", "a".repeat(65)),
    ] {
        let (status, body) = public(&node, &bob, bad).await;
        assert_eq!(
            (status, &body["error"]["code"]),
            (400, &json!("bad_request")),
            "{bad}"
        );
    }
    let r = http()
        .get(node.url("/api/v1/rooms/public"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
}

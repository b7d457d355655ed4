//! Domain events for other services, as a consumer reads them: on the
//! embedded default from `GET /api/v1/events` (admin token), on real stores
//! from the Kafka events topic with a real Kafka client (rskafka). What
//! people do (register, create and join rooms, befriend, come online and
//! leave) appears there once each, in order per key, with the documented
//! fields.

mod common;

use std::collections::{BTreeMap, HashSet};
use std::time::Duration;

use common::{account, http, real, Client, Node, WAIT};
use serde_json::{json, Value};

const ADMIN: &str = "events-admin-token";

/// Every event published so far, oldest first (per key, on Kafka).
async fn events(node: &Node) -> Vec<Value> {
    if real() {
        kafka_events(node).await
    } else {
        table_events(node).await
    }
}

async fn table_events(node: &Node) -> Vec<Value> {
    let mut all = Vec::new();
    let mut after = 0;
    loop {
        let r = http()
            .get(node.url(&format!("/api/v1/events?after={after}&limit=3")))
            .bearer_auth(ADMIN)
            .send()
            .await
            .expect("an answer");
        assert_eq!(r.status(), 200);
        let page: Value = r.json().await.expect("JSON");
        let page = page["events"].as_array().expect("events").clone();
        if page.is_empty() {
            return all;
        }
        assert!(page.len() <= 3, "a page holds at most limit events");
        for e in &page {
            let position = e["position"].as_i64().expect("a position");
            assert!(position > after, "positions rise: {e}");
            after = position;
        }
        all.extend(page);
    }
}

async fn kafka_events(node: &Node) -> Vec<Value> {
    use rskafka::client::partition::{OffsetAt, UnknownTopicHandling};
    let brokers = std::env::var("TEST_KAFKA").expect("TEST_KAFKA");
    let topic = node
        .setting("TROUPE_KAFKA__EVENTS_TOPIC")
        .expect("the node's events topic");
    let client = rskafka::client::ClientBuilder::new(vec![brokers])
        .build()
        .await
        .expect("a Kafka client");
    let topics = client.list_topics().await.expect("topics");
    let partitions = topics
        .iter()
        .find(|t| t.name == topic)
        .unwrap_or_else(|| panic!("no topic {topic}"))
        .partitions
        .len() as i32;
    let mut all = Vec::new();
    for partition in 0..partitions {
        let pc = client
            .partition_client(topic.clone(), partition, UnknownTopicHandling::Retry)
            .await
            .expect("a partition client");
        let end = pc.get_offset(OffsetAt::Latest).await.expect("an offset");
        let mut offset = 0;
        while offset < end {
            let (records, _) = pc
                .fetch_records(offset, 1..1_000_000, 1_000)
                .await
                .expect("records");
            for r in records {
                offset = r.offset + 1;
                let value = r.record.value.expect("a value");
                let event: Value = serde_json::from_slice(&value).expect("JSON");
                let key = String::from_utf8(r.record.key.expect("a key")).expect("UTF-8");
                assert_eq!(event["key"], key, "the record key is the event's key");
                all.push(event);
            }
        }
    }
    all
}

/// Waits until the events hold every (type, key) of `wanted`; returns them.
async fn wait_for(node: &Node, wanted: &[(&str, &str)]) -> Vec<Value> {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let all = events(node).await;
        let missing: Vec<_> = wanted
            .iter()
            .filter(|(ty, key)| !all.iter().any(|e| e["type"] == *ty && e["key"] == *key))
            .collect();
        if missing.is_empty() {
            return all;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "missing {missing:?} in {all:#?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn what_people_do_is_published_once_each_with_its_fields() {
    let node = Node::start_with(&[("TROUPE_ADMIN__TOKEN", ADMIN)]).await;
    let ann = account(&node, "ann").await;
    let bob = account(&node, "bob").await;
    let r = http()
        .post(node.url("/api/v1/rooms"))
        .bearer_auth(&ann)
        .json(&json!({"name": "club"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let mut b = Client::connect(&node, "bob", &bob).await;
    b.join("club").await;
    b.send(json!({"type": "leave", "room": "club"})).await;
    b.expect("left").await;
    for (token, other) in [(&ann, "bob"), (&bob, "ann")] {
        let r = http()
            .post(node.url(&format!("/api/v1/friends/{other}")))
            .bearer_auth(token)
            .send()
            .await
            .unwrap();
        assert!(r.status().is_success());
    }
    b.close().await;

    let all = wait_for(
        &node,
        &[
            ("user.registered", "ann"),
            ("user.registered", "bob"),
            ("room.created", "club"),
            ("room.joined", "club"),
            ("room.left", "club"),
            ("friend.requested", "ann"),
            ("friend.accepted", "bob"),
            ("presence.online", "bob"),
            ("presence.offline", "bob"),
        ],
    )
    .await;

    // Each once: unique ids, and no (type, key, user) twice.
    let ids: HashSet<&str> = all.iter().map(|e| e["id"].as_str().unwrap()).collect();
    assert_eq!(ids.len(), all.len(), "an id twice: {all:#?}");
    let mut seen = BTreeMap::new();
    for e in &all {
        assert_eq!(e["id"].as_str().unwrap().len(), 32, "{e}");
        assert!(e["ts"].as_i64().is_some(), "{e}");
        *seen
            .entry((
                e["type"].to_string(),
                e["key"].to_string(),
                e["user"].to_string(),
            ))
            .or_insert(0) += 1;
    }
    assert!(seen.values().all(|n| *n == 1), "{seen:?}");

    // Per key, in the order it happened, with the documented fields.
    let club: Vec<&Value> = all.iter().filter(|e| e["key"] == "club").collect();
    let types: Vec<&str> = club.iter().map(|e| e["type"].as_str().unwrap()).collect();
    assert_eq!(types, ["room.created", "room.joined", "room.left"]);
    assert_eq!(club[0]["by"], "ann");
    assert_eq!(club[0]["private"], false);
    assert_eq!(
        (&club[1]["user"], &club[1]["members"]),
        (&json!("bob"), &json!(2))
    );
    assert_eq!(
        (&club[2]["user"], &club[2]["members"]),
        (&json!("bob"), &json!(1))
    );
    let bob_events: Vec<&str> = all
        .iter()
        .filter(|e| e["key"] == "bob")
        .map(|e| e["type"].as_str().unwrap())
        .collect();
    assert_eq!(
        bob_events,
        [
            "user.registered",
            "presence.online",
            "friend.accepted",
            "presence.offline"
        ]
    );
    let accepted = all.iter().find(|e| e["type"] == "friend.accepted").unwrap();
    assert_eq!(
        (&accepted["user"], &accepted["other"]),
        (&json!("bob"), &json!("ann"))
    );
    let offline = all
        .iter()
        .find(|e| e["type"] == "presence.offline")
        .unwrap();
    assert!(offline["last_seen"].as_i64().is_some() && offline["node"].is_string());
}

#[tokio::test]
async fn the_events_endpoint_needs_the_admin_token_and_sane_paging() {
    let node = Node::start_with(&[("TROUPE_ADMIN__TOKEN", ADMIN)]).await;
    account(&node, "ann").await;
    let get = |path: &'static str, token: Option<&'static str>| {
        let mut req = http().get(node.url(path));
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        req.send()
    };
    assert_eq!(get("/api/v1/events", None).await.unwrap().status(), 401);
    assert_eq!(
        get("/api/v1/events", Some("wrong")).await.unwrap().status(),
        401
    );
    if real() {
        // On Kafka the events are in the topic, not behind this endpoint.
        let r = get("/api/v1/events", Some(ADMIN)).await.unwrap();
        assert_eq!(r.status(), 404);
        let body: Value = r.json().await.unwrap();
        assert!(
            body["error"]["message"]
                .as_str()
                .unwrap()
                .contains("-events"),
            "{body}"
        );
        return;
    }
    for bad in [
        "/api/v1/events?limit=0",
        "/api/v1/events?after=-1",
        "/api/v1/events?after=x",
    ] {
        let r = http()
            .get(node.url(bad))
            .bearer_auth(ADMIN)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 400, "{bad}");
    }
    let r = get("/api/v1/events?after=0&limit=1000", Some(ADMIN))
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
}

async fn rest(node: &Node, method: reqwest::Method, path: &str, token: &str, body: Option<Value>) {
    let mut request = http().request(method, node.url(path)).bearer_auth(token);
    if let Some(body) = body {
        request = request.json(&body);
    }
    let r = request.send().await.expect("an answer");
    let status = r.status();
    assert!(
        status.is_success(),
        "{path}: {status} {}",
        r.text().await.unwrap_or_default()
    );
}

#[tokio::test]
async fn running_a_room_and_changing_messages_are_published() {
    use reqwest::Method;
    let node = Node::start_with(&[("TROUPE_ADMIN__TOKEN", ADMIN)]).await;
    let ann = account(&node, "ann").await;
    let bob = account(&node, "bob").await;
    let cat = account(&node, "cat").await;
    rest(
        &node,
        Method::POST,
        "/api/v1/rooms",
        &ann,
        Some(json!({"name": "hall"})),
    )
    .await;
    let mut b = Client::connect(&node, "bob", &bob).await;
    b.join("hall").await;
    let mut c = Client::connect(&node, "cat", &cat).await;
    c.join("hall").await;
    let seq = c.say("hall", "helo", "m1").await["seq"]
        .as_u64()
        .expect("a seq");
    rest(
        &node,
        Method::PUT,
        "/api/v1/rooms/hall/members/bob/role",
        &ann,
        Some(json!({"role": "admin"})),
    )
    .await;
    rest(
        &node,
        Method::PATCH,
        "/api/v1/rooms/hall",
        &bob,
        Some(json!({"topic": "halls"})),
    )
    .await;
    let message = format!("/api/v1/rooms/hall/messages/{seq}");
    rest(
        &node,
        Method::PATCH,
        &message,
        &cat,
        Some(json!({"body": "hello"})),
    )
    .await;
    rest(
        &node,
        Method::PUT,
        &format!("{message}/reactions/:tada:"),
        &bob,
        None,
    )
    .await;
    rest(&node, Method::DELETE, &message, &bob, None).await;
    rest(
        &node,
        Method::DELETE,
        "/api/v1/rooms/hall/members/cat",
        &bob,
        None,
    )
    .await;
    rest(&node, Method::DELETE, "/api/v1/rooms/hall", &ann, None).await;

    let all = wait_for(
        &node,
        &[
            ("room.role_changed", "hall"),
            ("room.topic_changed", "hall"),
            ("message.edited", "hall"),
            ("message.reacted", "hall"),
            ("message.deleted", "hall"),
            ("room.kicked", "hall"),
            ("room.deleted", "hall"),
        ],
    )
    .await;
    let ids: HashSet<&str> = all.iter().map(|e| e["id"].as_str().unwrap()).collect();
    assert_eq!(ids.len(), all.len(), "an id twice: {all:#?}");
    let hall: Vec<&Value> = all.iter().filter(|e| e["key"] == "hall").collect();
    let types: Vec<&str> = hall.iter().map(|e| e["type"].as_str().unwrap()).collect();
    assert_eq!(
        types,
        [
            "room.created",
            "room.joined",
            "room.joined",
            "room.role_changed",
            "room.topic_changed",
            "message.edited",
            "message.reacted",
            "message.deleted",
            "room.kicked",
            "room.deleted"
        ]
    );
    let field = |ty: &str, name: &str| {
        hall.iter()
            .find(|e| e["type"] == ty)
            .map(|e| e[name].clone())
            .unwrap_or(Value::Null)
    };
    assert_eq!(field("room.role_changed", "role"), "admin");
    assert_eq!(field("room.topic_changed", "topic"), "halls");
    assert_eq!(field("message.edited", "body"), "hello");
    assert_eq!(field("message.edited", "seq"), seq);
    assert_eq!(field("message.reacted", "emoji"), ":tada:");
    assert_eq!(field("message.deleted", "by"), "bob");
    assert_eq!(field("room.kicked", "user"), "cat");
    assert_eq!(field("room.kicked", "members"), 2);
    assert_eq!(field("room.deleted", "by"), "ann");
}

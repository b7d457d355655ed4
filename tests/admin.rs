//! The admin endpoints on one node: the token guard (none configured, wrong,
//! right), the actor tree with its filters, a room and a user looked up by
//! name, and `/admin/nodes`. The cluster-wide answers are in tests/cluster.rs
//! (`cluster_admin_sees_every_node`).

mod common;

use common::{http, Client, Node};
use serde_json::Value;

const TOKEN: &str = "admin-token-for-tests-0123";

async fn get(node: &Node, path: &str, token: Option<&str>) -> (u16, Value) {
    let mut req = http().get(node.url(path));
    if let Some(token) = token {
        req = req.bearer_auth(token);
    }
    let resp = req.send().await.expect("a response");
    let status = resp.status().as_u16();
    let text = resp.text().await.expect("a body");
    let body =
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("{status} {path}: {e}: {text}"));
    (status, body)
}

fn actors(answer: &Value) -> Vec<&Value> {
    answer["nodes"][0]["actors"]
        .as_array()
        .map(|a| a.iter().collect())
        .unwrap_or_default()
}

fn named<'a>(answer: &'a Value, name: &str) -> Option<&'a Value> {
    actors(answer).into_iter().find(|a| a["name"] == name)
}

#[tokio::test]
async fn admin_endpoints_are_off_without_a_token() {
    let node = Node::start().await;
    for path in ["/admin/actors", "/admin/nodes"] {
        let (status, body) = get(&node, path, Some(TOKEN)).await;
        assert_eq!(status, 404, "{path}: {body}");
        assert_eq!(body["error"]["code"], "not_found");
    }
}

#[tokio::test]
async fn admin_endpoints_need_the_right_token() {
    let node = Node::start_with(&[("TROUPE_ADMIN__TOKEN", TOKEN)]).await;
    for path in ["/admin/actors", "/admin/nodes"] {
        let (status, body) = get(&node, path, None).await;
        assert_eq!(status, 401, "{path} without a token: {body}");
        let (status, body) = get(&node, path, Some("admin-token-for-tests-0124")).await;
        assert_eq!(status, 401, "{path} with a wrong token: {body}");
        assert_eq!(body["error"]["code"], "unauthorized");
        assert!(
            body.get("nodes").is_none(),
            "nothing leaks with a wrong token: {body}"
        );
        let (status, body) = get(&node, path, Some(TOKEN)).await;
        assert_eq!(status, 200, "{path} with the token: {body}");
    }
    assert!(
        !node.log_text().contains(TOKEN),
        "the admin token must never be logged"
    );
}

#[tokio::test]
async fn the_actor_tree_shows_rooms_sessions_and_their_state() {
    let node = Node::start_with(&[("TROUPE_ADMIN__TOKEN", TOKEN)]).await;
    let mut ann = Client::new_user(&node, "ann_adm").await;
    let mut bob = Client::new_user(&node, "bob_adm").await;
    ann.join("lobby").await;
    bob.join("lobby").await;
    for i in 0..3 {
        ann.say("lobby", &format!("hello {i}"), &format!("c{i}"))
            .await;
    }
    bob.expect_message("lobby").await;

    let (status, tree) = get(&node, "/admin/actors", Some(TOKEN)).await;
    assert_eq!(status, 200, "{tree}");
    let nodes = tree["nodes"].as_array().expect("nodes");
    assert_eq!(nodes.len(), 1, "one node alone: {tree}");
    let me = &nodes[0];
    assert_eq!(me["addr"], node.addr.to_string().as_str());
    assert!(me["uptime_s"].as_f64().is_some_and(|u| u >= 0.0), "{me}");
    assert!(me.get("error").is_none());
    let node_name = me["node"].as_str().expect("a node name");

    // The supervision tree: node -> presence, router, rooms, sessions -> ...
    let root = named(&tree, "node").expect("the node actor");
    assert_eq!(root["kind"], "node");
    assert!(root["supervisor"].is_null());
    for (name, kind) in [
        ("presence", "presence"),
        ("router", "router"),
        ("rooms", "supervisor"),
        ("sessions", "supervisor"),
    ] {
        let a = named(&tree, name).unwrap_or_else(|| panic!("no {name}: {tree}"));
        assert_eq!(a["kind"], kind);
        assert_eq!(a["supervisor"], "node");
        assert_eq!(a["node"], node_name);
    }
    assert_eq!(named(&tree, "presence").unwrap()["state"]["online"], 2);
    assert_eq!(named(&tree, "sessions").unwrap()["state"]["children"], 2);

    let room = named(&tree, "room:lobby").expect("the lobby's actor");
    assert_eq!(room["kind"], "room");
    assert_eq!(room["supervisor"], "rooms");
    assert_eq!(room["restarts"], 0);
    let state = &room["state"];
    assert_eq!(state["owner"], node_name);
    assert_eq!(state["members"], 2);
    assert_eq!(state["subscribers"], 2);
    assert_eq!(state["last_seq"], 3);
    assert!(state["epoch"].as_u64().is_some(), "{state}");
    assert!(state["checkpoint_seq"].as_u64().is_some(), "{state}");
    assert!(state["checkpoint_age_s"].as_f64().is_some(), "{state}");
    assert_eq!(state["queued_sends"], 0);
    assert!(
        state.get("member_list").is_none(),
        "details only by name: {state}"
    );

    let sessions: Vec<&Value> = actors(&tree)
        .into_iter()
        .filter(|a| a["kind"] == "session")
        .collect();
    assert_eq!(sessions.len(), 2, "{tree}");
    for s in &sessions {
        assert_eq!(s["supervisor"], "sessions");
        // Every session also follows the broadcast room.
        assert_eq!(
            s["state"]["rooms"],
            serde_json::json!(["!broadcast", "lobby"])
        );
        assert!(s["state"]["queued_frames"].as_u64().is_some());
        assert!(s["state"]["connected_since"]
            .as_i64()
            .is_some_and(|t| t > 0));
        let id = s["state"]["id"].as_str().expect("session ids are strings");
        assert_eq!(s["name"], format!("session:{id}").as_str());
    }

    // Filters.
    let (_, rooms) = get(&node, "/admin/actors?kind=room", Some(TOKEN)).await;
    let kinds: Vec<&Value> = actors(&rooms).iter().map(|a| &a["kind"]).collect();
    assert!(
        !kinds.is_empty() && kinds.iter().all(|k| *k == "room"),
        "{rooms}"
    );

    let (_, lobby) = get(&node, "/admin/actors?name=lobby", Some(TOKEN)).await;
    let found = actors(&lobby);
    assert_eq!(found.len(), 1, "{lobby}");
    let members: Vec<&str> = found[0]["state"]["member_list"]
        .as_array()
        .expect("detail by name")
        .iter()
        .filter_map(|m| m["user"].as_str())
        .collect();
    assert_eq!(members, ["ann_adm", "bob_adm"]);
    let reads: Vec<u64> = found[0]["state"]["subscriber_list"]
        .as_array()
        .expect("subscribers by name")
        .iter()
        .map(|s| s["from_seq"].as_u64().expect("from_seq"))
        .collect();
    assert_eq!(reads.len(), 2);

    let (_, ann_sessions) = get(&node, "/admin/actors?name=ann_adm", Some(TOKEN)).await;
    let found = actors(&ann_sessions);
    assert_eq!(found.len(), 1, "{ann_sessions}");
    assert_eq!(found[0]["kind"], "session");
    assert_eq!(found[0]["state"]["user"], "ann_adm");

    let (_, by_node) = get(
        &node,
        &format!("/admin/actors?node={node_name}&kind=presence"),
        Some(TOKEN),
    )
    .await;
    assert_eq!(actors(&by_node).len(), 1, "{by_node}");

    // Bad filters are clear errors.
    let (status, body) = get(&node, "/admin/actors?kind=planet", Some(TOKEN)).await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["error"]["code"], "bad_request");
    let (status, body) = get(&node, "/admin/actors?node=nosuchnode", Some(TOKEN)).await;
    assert_eq!(status, 404, "{body}");
    let (status, body) = get(&node, "/admin/actors?colour=red", Some(TOKEN)).await;
    assert_eq!(status, 400, "{body}");

    // /admin/nodes: this node and the rooms it owns.
    let (status, nodes) = get(&node, "/admin/nodes", Some(TOKEN)).await;
    assert_eq!(status, 200, "{nodes}");
    let entry = &nodes["nodes"][0];
    assert_eq!(entry["node"], node_name);
    assert_eq!(entry["rooms"], serde_json::json!(["!broadcast", "lobby"]));
    assert_eq!(entry["sessions"], 2);
    assert_eq!(entry["online_users"], 2);
    ann.close().await;
}

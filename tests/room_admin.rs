//! Rooms that people run: roles (owner, admin, member), the member list,
//! the topic, kicks and leaving, deleting a room, and paging the caller's
//! rooms; with the frames members receive. Real nodes, real WebSocket and
//! HTTP clients; runs on the embedded default and on real stores.

mod common;

use common::{account, http, Client, Node};
use serde_json::{json, Value};

async fn call(
    node: &Node,
    method: reqwest::Method,
    path: &str,
    token: &str,
    body: Option<Value>,
) -> (u16, Value) {
    let mut request = http().request(method, node.url(path)).bearer_auth(token);
    if let Some(body) = body {
        request = request.json(&body);
    }
    let r = request.send().await.expect("an answer");
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Value::Null))
}

async fn get(node: &Node, path: &str, token: &str) -> (u16, Value) {
    call(node, reqwest::Method::GET, path, token, None).await
}

async fn delete(node: &Node, path: &str, token: &str) -> (u16, Value) {
    call(node, reqwest::Method::DELETE, path, token, None).await
}

async fn set_role(node: &Node, room: &str, user: &str, role: &str, token: &str) -> (u16, Value) {
    let path = format!("/api/v1/rooms/{room}/members/{user}/role");
    call(
        node,
        reqwest::Method::PUT,
        &path,
        token,
        Some(json!({ "role": role })),
    )
    .await
}

async fn set_topic(node: &Node, room: &str, topic: Value, token: &str) -> (u16, Value) {
    let path = format!("/api/v1/rooms/{room}");
    call(
        node,
        reqwest::Method::PATCH,
        &path,
        token,
        Some(json!({ "topic": topic })),
    )
    .await
}

async fn create_room(node: &Node, name: &str, token: &str) {
    let (status, body) = call(
        node,
        reqwest::Method::POST,
        "/api/v1/rooms",
        token,
        Some(json!({ "name": name })),
    )
    .await;
    assert_eq!(status, 201, "{body}");
}

fn roles(members: &Value) -> Vec<(String, String)> {
    members["members"]
        .as_array()
        .unwrap_or_else(|| panic!("members in {members}"))
        .iter()
        .map(|m| {
            (
                m["user"].as_str().expect("user").to_string(),
                m["role"].as_str().expect("role").to_string(),
            )
        })
        .collect()
}

fn pairs(list: &[(&str, &str)]) -> Vec<(String, String)> {
    list.iter()
        .map(|(u, r)| (u.to_string(), r.to_string()))
        .collect()
}

#[tokio::test]
async fn owners_and_admins_run_the_room_and_members_see_it() {
    let node = Node::start().await;
    let ann = account(&node, "ann").await;
    let bob = account(&node, "bob").await;
    let cat = account(&node, "cat").await;
    let _dan = account(&node, "dan").await;
    create_room(&node, "club", &ann).await;
    let mut b = Client::connect(&node, "bob", &bob).await;
    b.join("club").await;
    let mut c = Client::connect(&node, "cat", &cat).await;
    c.join("club").await;
    // The join event every member receives carries the member count.
    let joined = b
        .expect_where("cat joined", |f| {
            f["type"] == "user_joined" && f["user"] == "cat"
        })
        .await;
    assert_eq!(joined["members"], 3, "{joined}");

    // The member list: roles, presence, read positions.
    let (status, members) = get(&node, "/api/v1/rooms/club/members", &cat).await;
    assert_eq!(status, 200, "{members}");
    assert_eq!(
        roles(&members),
        pairs(&[("ann", "owner"), ("bob", "member"), ("cat", "member")])
    );
    let bob_entry = &members["members"][1];
    assert_eq!(bob_entry["online"], true, "{members}");
    assert_eq!(bob_entry["last_read_seq"], 0, "{members}");
    assert_eq!(members["members"][0]["online"], false, "{members}");
    let (status, _) = get(
        &node,
        "/api/v1/rooms/club/members",
        &account(&node, "eve").await,
    )
    .await;
    assert_eq!(status, 403, "a non-member does not see the members");
    let (status, _) = get(&node, "/api/v1/rooms/nowhere/members", &ann).await;
    assert_eq!(status, 404);

    // Only the owner names roles; a bad role is refused with nothing changed.
    assert_eq!(set_role(&node, "club", "cat", "admin", &bob).await.0, 403);
    assert_eq!(set_role(&node, "club", "bob", "root", &ann).await.0, 400);
    assert_eq!(set_role(&node, "club", "dan", "admin", &ann).await.0, 404);
    assert_eq!(
        set_role(&node, "club", "nobody", "admin", &ann).await.0,
        404
    );
    let (status, body) = set_role(&node, "club", "BOB", "admin", &ann).await;
    assert_eq!(status, 204, "{body}");
    let changed = c
        .expect_where("bob's role", |f| f["type"] == "role_changed")
        .await;
    assert_eq!(
        (
            &changed["room"],
            &changed["user"],
            &changed["role"],
            &changed["by"]
        ),
        (
            &json!("club"),
            &json!("bob"),
            &json!("admin"),
            &json!("ann")
        )
    );

    // The topic: owner and admins; members are refused; it shows in the listings.
    assert_eq!(set_topic(&node, "club", json!("mine"), &cat).await.0, 403);
    let (status, info) = set_topic(&node, "club", json!("  Books and tea "), &bob).await;
    assert_eq!(status, 200, "{info}");
    assert_eq!(info["topic"], "Books and tea");
    let topic = c.expect("topic_changed").await;
    assert_eq!(
        (&topic["topic"], &topic["by"]),
        (&json!("Books and tea"), &json!("bob"))
    );
    let (_, rooms) = get(&node, "/api/v1/rooms", &cat).await;
    let club = &rooms["rooms"][0];
    assert_eq!(
        (&club["topic"], &club["role"]),
        (&json!("Books and tea"), &json!("member"))
    );
    let long = "x".repeat(513);
    assert_eq!(set_topic(&node, "club", json!(long), &ann).await.0, 400);
    let (status, _) = call(
        &node,
        reqwest::Method::PATCH,
        "/api/v1/rooms/club",
        &ann,
        Some(json!({"topic": 7})),
    )
    .await;
    assert_eq!(status, 400);
    let (_, info) = get(&node, "/api/v1/rooms", &ann).await;
    assert_eq!(
        info["rooms"][0]["topic"], "Books and tea",
        "refusals changed nothing"
    );

    // Kicks: owner/admin only, never the owner, an admin not another admin.
    assert_eq!(
        delete(&node, "/api/v1/rooms/club/members/bob", &cat)
            .await
            .0,
        403
    );
    assert_eq!(
        delete(&node, "/api/v1/rooms/club/members/ann", &bob)
            .await
            .0,
        403
    );
    assert_eq!(
        delete(&node, "/api/v1/rooms/club/members/dan", &bob)
            .await
            .0,
        404
    );
    let (status, body) = delete(&node, "/api/v1/rooms/club/members/cat", &bob).await;
    assert_eq!(status, 204, "{body}");
    let kicked = c.expect("kicked").await;
    assert_eq!(
        (&kicked["user"], &kicked["by"], &kicked["members"]),
        (&json!("cat"), &json!("bob"), &json!(2))
    );
    let seen = b.expect("kicked").await;
    assert_eq!(seen["user"], "cat");
    // Out of the room: no members, no messages, no sending.
    assert_eq!(get(&node, "/api/v1/rooms/club/members", &cat).await.0, 403);
    assert_eq!(get(&node, "/api/v1/rooms/club/messages", &cat).await.0, 403);
    let refused = c.say("club", "still here?", "k1").await;
    assert_eq!(refused["type"], "error", "{refused}");

    // Handing the room over: the old owner becomes an admin.
    let (status, _) = set_role(&node, "club", "bob", "owner", &ann).await;
    assert_eq!(status, 204);
    let (_, members) = get(&node, "/api/v1/rooms/club/members", &ann).await;
    assert_eq!(
        roles(&members),
        pairs(&[("ann", "admin"), ("bob", "owner")])
    );
    assert_eq!(set_role(&node, "club", "bob", "member", &ann).await.0, 403);
    let (status, _) = set_role(&node, "club", "ann", "owner", &bob).await;
    assert_eq!(status, 204);
    // Leaving: oneself; an owner who leaves passes the room to an admin.
    let (status, _) = delete(&node, "/api/v1/rooms/club/members/ann", &ann).await;
    assert_eq!(status, 204);
    let left = b
        .expect_where("ann left", |f| {
            f["type"] == "user_left" && f["user"] == "ann"
        })
        .await;
    let heir = b
        .expect_where("the new owner", |f| {
            f["type"] == "role_changed" && f["role"] == "owner" && f["by"] == "ann"
        })
        .await;
    assert_eq!(heir["user"], "bob", "{heir}");
    assert_eq!(left["members"], 1, "{left}");

    // Roles survive a restart of the node (they are stored with the membership).
    drop((b, c));
    let mut node = node;
    assert!(node.sigterm().success());
    node.restart().await;
    let bob = common::login_token(&node, "bob").await;
    let (_, members) = get(&node, "/api/v1/rooms/club/members", &bob).await;
    assert_eq!(roles(&members), pairs(&[("bob", "owner")]));
    let (_, rooms) = get(&node, "/api/v1/rooms", &bob).await;
    assert_eq!(rooms["rooms"][0]["topic"], "Books and tea");
}

#[tokio::test]
async fn admins_delete_and_pin_other_members_messages() {
    let node = Node::start().await;
    let ann = account(&node, "ann").await;
    let bob = account(&node, "bob").await;
    let cat = account(&node, "cat").await;
    create_room(&node, "desk", &ann).await;
    let mut c = Client::connect(&node, "cat", &cat).await;
    c.join("desk").await;
    let mut b = Client::connect(&node, "bob", &bob).await;
    b.join("desk").await;
    let seq = c.say("desk", "hello", "m1").await["seq"]
        .as_u64()
        .expect("a seq");

    let path = format!("/api/v1/rooms/desk/messages/{seq}");
    assert_eq!(delete(&node, &path, &bob).await.0, 403, "a member may not");
    let pin = format!("/api/v1/rooms/desk/pins/{seq}");
    assert_eq!(
        call(&node, reqwest::Method::PUT, &pin, &bob, None).await.0,
        403
    );
    assert_eq!(set_role(&node, "desk", "bob", "admin", &ann).await.0, 204);
    let (status, body) = call(&node, reqwest::Method::PUT, &pin, &bob, None).await;
    assert!(status == 200 || status == 204, "{status} {body}");
    let (status, body) = delete(&node, &path, &bob).await;
    assert!(status == 200 || status == 204, "{status} {body}");
    let (_, view) = get(&node, &path, &cat).await;
    assert_eq!(view["deleted"], true, "{view}");
}

#[tokio::test]
async fn the_owner_deletes_a_room_for_everyone() {
    let node = Node::start().await;
    let ann = account(&node, "ann").await;
    let bob = account(&node, "bob").await;
    create_room(&node, "doomed", &ann).await;
    create_room(&node, "kept", &ann).await;
    let mut b = Client::connect(&node, "bob", &bob).await;
    b.join("doomed").await;
    b.join("kept").await;
    b.say("doomed", "soon gone", "d1").await;
    b.say("doomed", "also gone", "d2").await;

    assert_eq!(delete(&node, "/api/v1/rooms/doomed", &bob).await.0, 403);
    assert_eq!(delete(&node, "/api/v1/rooms/nowhere", &ann).await.0, 404);
    let (status, body) = delete(&node, "/api/v1/rooms/doomed", &ann).await;
    assert_eq!(status, 204, "{body}");
    let gone = b.expect("room_deleted").await;
    assert_eq!(
        (&gone["room"], &gone["by"]),
        (&json!("doomed"), &json!("ann"))
    );

    // Gone for everyone: history, members, the listings.
    let (status, body) = get(&node, "/api/v1/rooms/doomed/messages", &bob).await;
    assert_eq!(status, 404, "{body}");
    assert_eq!(
        get(&node, "/api/v1/rooms/doomed/members", &ann).await.0,
        404
    );
    let (_, rooms) = get(&node, "/api/v1/rooms", &bob).await;
    let names: Vec<&str> = rooms["rooms"]
        .as_array()
        .expect("rooms")
        .iter()
        .map(|r| r["name"].as_str().expect("name"))
        .collect();
    assert_eq!(names, ["kept"]);
    let refused = b.say("doomed", "hello?", "d3").await;
    assert_eq!(refused["type"], "error", "{refused}");
    // The other room is untouched.
    assert_eq!(b.say("kept", "still here", "k1").await["type"], "ack");

    // The name is free again, for a room that starts empty.
    create_room(&node, "doomed", &bob).await;
    let (status, history) = get(&node, "/api/v1/rooms/doomed/messages", &bob).await;
    assert_eq!(status, 200, "{history}");
    let bodies: Vec<&str> = history["messages"]
        .as_array()
        .expect("messages")
        .iter()
        .filter_map(|m| m["body"].as_str())
        .collect();
    assert!(!bodies.contains(&"soon gone"), "{history}");
    let (_, members) = get(&node, "/api/v1/rooms/doomed/members", &bob).await;
    assert_eq!(roles(&members), pairs(&[("bob", "owner")]));
}

#[tokio::test]
async fn a_users_rooms_come_a_page_at_a_time() {
    let node = Node::start().await;
    let ann = account(&node, "ann").await;
    for name in ["r1", "r2", "r3", "r4", "r5"] {
        create_room(&node, name, &ann).await;
    }
    let mut after = String::new();
    let mut walked = Vec::new();
    loop {
        let (status, page) =
            get(&node, &format!("/api/v1/rooms?limit=2&after={after}"), &ann).await;
        assert_eq!(status, 200, "{page}");
        for room in page["rooms"].as_array().expect("rooms") {
            walked.push(room["name"].as_str().expect("name").to_string());
            assert_eq!(room["role"], "owner");
        }
        match page["next_after"].as_str() {
            Some(next) => after = next.to_string(),
            None => break,
        }
    }
    assert_eq!(walked, ["r1", "r2", "r3", "r4", "r5"]);
    assert_eq!(get(&node, "/api/v1/rooms?limit=0", &ann).await.0, 400);
    assert_eq!(get(&node, "/api/v1/rooms?limit=x", &ann).await.0, 400);
}

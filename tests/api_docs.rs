//! The API documents against a running node: `/api/openapi.json` lists
//! exactly the routes the node serves (each documented method answers
//! something other than the fallback, with a documented status; each other
//! method is 405; no route is added in the source outside the documented
//! registrations), passes openapi-spec-validator, and describes the real
//! answers of the REST API; `/api/frames.schema.json` accepts every frame a
//! real session exchanges, and refuses frames the node refuses.

mod common;

use std::collections::BTreeSet;
use std::path::Path;
use std::time::Duration;

use common::{account, http, Node, PASSWORD, WAIT};
use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::Message;

const ADMIN_TOKEN: &str = "admin-token-for-api-docs-0123";
const METHODS: [&str; 5] = ["get", "post", "put", "patch", "delete"];

async fn node() -> Node {
    Node::start_with(&[("TROUPE_ADMIN__TOKEN", ADMIN_TOKEN)]).await
}

async fn get_json(node: &Node, path: &str) -> Value {
    let r = http().get(node.url(path)).send().await.expect("an answer");
    assert_eq!(r.status(), 200, "GET {path}");
    let text = r.text().await.expect("a body");
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("GET {path}: {e}: {text}"))
}

/// A path of the document with sample values for its parameters.
fn concrete(path: &str) -> String {
    path.replace("{room}", "general")
        .replace("{id}", "0123456789abcdef0123456789abcdef")
        .replace("{user}", "nobody")
        .replace("{path}", "app.css")
        .replace("{seq}", "1")
        .replace("{emoji}", ":wave:")
}

/// `#/components/<kind>/<name>` of the document, followed.
fn follow<'a>(doc: &'a Value, value: &'a Value) -> &'a Value {
    match value.get("$ref").and_then(Value::as_str) {
        Some(target) => {
            let pointer = target.trim_start_matches('#');
            doc.pointer(pointer)
                .unwrap_or_else(|| panic!("dangling reference {target}"))
        }
        None => value,
    }
}

/// The documented response of an operation for a status, if any.
fn documented<'a>(doc: &'a Value, path: &str, method: &str, status: u16) -> Option<&'a Value> {
    let response = doc["paths"][path][method]["responses"].get(status.to_string())?;
    Some(follow(doc, response))
}

/// Checks `body` against the JSON schema the document gives for this
/// answer (when it has one). OpenAPI 3.1 schemas are JSON Schema 2020-12;
/// their references point into the document's components.
fn check_body(doc: &Value, path: &str, method: &str, status: u16, body: &Value) {
    let response = documented(doc, path, method, status)
        .unwrap_or_else(|| panic!("{method} {path} answered {status}, not documented: {body}"));
    let Some(schema) = response.pointer("/content/application~1json/schema") else {
        return;
    };
    let root = json!({ "components": doc["components"], "allOf": [schema] });
    let validator = jsonschema::draft202012::new(&root).expect("a valid schema");
    let errors: Vec<String> = validator
        .iter_errors(body)
        .map(|e| format!("{e} at {}", e.instance_path()))
        .collect();
    assert!(
        errors.is_empty(),
        "{method} {path} {status}: the body does not match its schema: {errors:?}\n{body:#}"
    );
}

/// Sends a request and checks its answer against the document: a
/// documented status, and a body of the documented schema.
async fn call(
    doc: &Value,
    node: &Node,
    method: &str,
    path: &str,
    concrete_path: &str,
    token: Option<&str>,
    body: Option<Value>,
) -> (u16, Value) {
    let method_ = reqwest::Method::from_bytes(method.to_uppercase().as_bytes()).expect("method");
    let mut req = http().request(method_, node.url(concrete_path));
    if let Some(token) = token {
        req = req.bearer_auth(token);
    }
    if let Some(body) = body {
        req = req.json(&body);
    }
    let r = req.send().await.expect("an answer");
    let status = r.status().as_u16();
    let is_json = r
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|t| t.starts_with("application/json"));
    let text = r.text().await.expect("a body");
    let value = if is_json {
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("{method} {path}: {e}: {text}"))
    } else {
        Value::String(text)
    };
    if is_json {
        check_body(doc, path, method, status, &value);
    } else {
        assert!(
            documented(doc, path, method, status).is_some(),
            "{method} {path} answered {status}, not documented"
        );
    }
    (status, value)
}

fn is_fallback(status: u16, body: &Value) -> bool {
    status == 405 || (status == 404 && body["error"]["message"] == "no such endpoint")
}

/// Every `.rs` file under `dir`.
fn rust_files(dir: &Path, out: &mut Vec<std::path::PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("a source dir") {
        let path = entry.expect("an entry").path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

#[tokio::test]
async fn every_route_is_documented_and_every_documented_route_is_served() {
    let node = node().await;
    let doc = get_json(&node, "/api/openapi.json").await;
    assert_eq!(doc["openapi"], "3.1.0");
    let paths = doc["paths"].as_object().expect("paths");
    for expected in [
        "/ws",
        "/api/v1/register",
        "/api/v1/rooms",
        "/api/v1/rooms/{room}/attachments",
        "/api/v1/attachments/{id}",
        "/health",
        "/admin/actors",
        "/api/openapi.json",
        "/api/frames.schema.json",
        "/api/docs",
        "/",
        "/web/{path}",
        "/api/v1/friends/{user}",
        "/api/v1/blocks/{user}",
        "/api/v1/rooms/{room}/messages/{seq}",
        "/api/v1/rooms/{room}/pins/{seq}",
        "/api/v1/rooms/public",
        "/api/v1/events",
    ] {
        assert!(paths.contains_key(expected), "{expected} is not documented");
    }
    let mut operations = 0;
    for (path, item) in paths {
        let url = concrete(path);
        for method in METHODS {
            let (status, body) = if item.get(method).is_some() {
                operations += 1;
                // No token, no body: the answer must still be the endpoint's
                // own (a documented status), not the router's fallback.
                let (status, body) = call(&doc, &node, method, path, &url, None, None).await;
                assert!(
                    !is_fallback(status, &body),
                    "{method} {path} is documented but not routed: {status} {body}"
                );
                (status, body)
            } else {
                let m = reqwest::Method::from_bytes(method.to_uppercase().as_bytes()).unwrap();
                let r = http().request(m, node.url(&url)).send().await.unwrap();
                let status = r.status().as_u16();
                let body: Value = r.json().await.unwrap_or(Value::Null);
                assert_eq!(
                    status, 405,
                    "{method} {path} is routed but not documented: {body}"
                );
                (status, body)
            };
            let _ = (status, body);
        }
    }
    assert!(operations >= 20, "only {operations} operations documented");
    // The fallback is recognised (so the checks above can fail).
    let r = http().get(node.url("/api/v1/nope")).send().await.unwrap();
    assert_eq!(r.status(), 404);
    let body: Value = r.json().await.unwrap();
    assert!(is_fallback(404, &body), "{body}");

    // Routes are added only through `routes!` (which documents them): no
    // plain axum routing call anywhere in the node's source.
    let mut files = Vec::new();
    rust_files(
        &Path::new(env!("CARGO_MANIFEST_DIR")).join("src"),
        &mut files,
    );
    assert!(files.len() > 10, "the source was not found");
    let plain = [
        ".route(",
        ".route_service(",
        ".nest(",
        ".nest_service(",
        "Router::new()",
    ];
    for file in files {
        let text = std::fs::read_to_string(&file).expect("a source file");
        for (n, line) in text.lines().enumerate() {
            let code = line.split("//").next().unwrap_or_default();
            for call in plain {
                // `OpenApiRouter::new()` is the documented kind.
                let found = code.match_indices(call).any(|(at, _)| {
                    !code[..at].ends_with(|c: char| c.is_alphanumeric() || c == '_')
                });
                assert!(
                    !found,
                    "{}:{}: `{call}` adds a route the OpenAPI document does not know: \
                     register it with `.routes(routes!(handler))` (see src/gateway/api/mod.rs)",
                    file.display(),
                    n + 1
                );
            }
        }
    }
}

/// The validator: `TEST_OPENAPI_VALIDATOR`, or what the install script prints.
fn validator_binary() -> String {
    if let Ok(bin) = std::env::var("TEST_OPENAPI_VALIDATOR") {
        return bin;
    }
    let script = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/scripts/install-openapi-validator.sh"
    );
    let out = std::process::Command::new("bash")
        .arg(script)
        .stderr(std::process::Stdio::inherit())
        .output()
        .expect("scripts/install-openapi-validator.sh runs");
    assert!(
        out.status.success(),
        "scripts/install-openapi-validator.sh failed: this test needs openapi-spec-validator"
    );
    String::from_utf8(out.stdout)
        .expect("a path")
        .trim()
        .to_string()
}

#[tokio::test]
async fn the_document_passes_openapi_spec_validator() {
    let node = node().await;
    let r = http()
        .get(node.url("/api/openapi.json"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert!(r.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("application/json"));
    let text = r.text().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("openapi.json");
    std::fs::write(&file, &text).unwrap();
    let out = std::process::Command::new(validator_binary())
        .args(["--schema", "3.1"])
        .arg(&file)
        .output()
        .expect("openapi-spec-validator runs");
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success(),
        "openapi-spec-validator refused the document: {said}"
    );
    assert!(said.contains("OK"), "{said}");

    // And it does refuse a broken one (a reference to nothing).
    let mut broken: Value = serde_json::from_str(&text).unwrap();
    broken["paths"]["/health"]["get"]["responses"]["200"] =
        json!({"$ref": "#/components/responses/Nothing"});
    std::fs::write(&file, broken.to_string()).unwrap();
    let out = std::process::Command::new(validator_binary())
        .args(["--schema", "3.1"])
        .arg(&file)
        .output()
        .expect("openapi-spec-validator runs");
    assert!(!out.status.success(), "a broken document passed");
}

#[tokio::test]
async fn rest_answers_match_their_documented_schemas() {
    let node = node().await;
    let doc = get_json(&node, "/api/openapi.json").await;
    let d = &doc;
    let n = &node;
    let creds = json!({"username": "ada", "password": PASSWORD});

    let (s, _) = call(
        d,
        n,
        "post",
        "/api/v1/register",
        "/api/v1/register",
        None,
        Some(creds.clone()),
    )
    .await;
    assert_eq!(s, 201);
    let (s, b) = call(
        d,
        n,
        "post",
        "/api/v1/register",
        "/api/v1/register",
        None,
        Some(creds.clone()),
    )
    .await;
    assert_eq!(s, 409, "{b}");
    let (s, _) = call(
        d,
        n,
        "post",
        "/api/v1/register",
        "/api/v1/register",
        None,
        Some(json!({"username": 5})),
    )
    .await;
    assert_eq!(s, 400);
    let (s, login) = call(
        d,
        n,
        "post",
        "/api/v1/login",
        "/api/v1/login",
        None,
        Some(creds.clone()),
    )
    .await;
    assert_eq!(s, 200);
    let token = login["token"].as_str().expect("a token").to_string();
    let t = Some(token.as_str());
    let wrong = json!({"username": "ada", "password": "not the password"});
    let (s, _) = call(
        d,
        n,
        "post",
        "/api/v1/login",
        "/api/v1/login",
        None,
        Some(wrong),
    )
    .await;
    assert_eq!(s, 401);

    let (s, room) = call(
        d,
        n,
        "post",
        "/api/v1/rooms",
        "/api/v1/rooms",
        t,
        Some(json!({"name": "docs"})),
    )
    .await;
    assert_eq!(s, 201, "{room}");
    let (s, _) = call(
        d,
        n,
        "post",
        "/api/v1/rooms",
        "/api/v1/rooms",
        t,
        Some(json!({"name": "docs"})),
    )
    .await;
    assert_eq!(s, 409);
    let (s, rooms) = call(d, n, "get", "/api/v1/rooms", "/api/v1/rooms", t, None).await;
    assert_eq!(s, 200);
    assert_eq!(rooms["rooms"][0]["name"], "docs");

    // A message, so that history and search have something to describe.
    let mut ws = connect(n, &token).await;
    send(
        &mut ws,
        json!({"type": "send", "room": "docs", "body": "hello documents", "client_id": "c1"}),
    )
    .await;
    read_until(&mut ws, "ack").await;

    let messages = "/api/v1/rooms/{room}/messages";
    let (s, page) = call(
        d,
        n,
        "get",
        messages,
        "/api/v1/rooms/docs/messages?limit=10",
        t,
        None,
    )
    .await;
    assert_eq!(s, 200);
    assert_eq!(page["messages"][0]["body"], "hello documents");
    let (s, _) = call(
        d,
        n,
        "get",
        messages,
        "/api/v1/rooms/docs/messages?limit=0",
        t,
        None,
    )
    .await;
    assert_eq!(s, 400);
    let (s, _) = call(
        d,
        n,
        "get",
        messages,
        "/api/v1/rooms/nowhere/messages",
        t,
        None,
    )
    .await;
    assert_eq!(s, 404);

    // Messages that live, over REST.
    let m = "/api/v1/rooms/{room}/messages";
    let body = json!({"body": "over REST", "client_id": "r1"});
    let (s, sent) = call(
        d,
        n,
        "post",
        m,
        "/api/v1/rooms/docs/messages",
        t,
        Some(body),
    )
    .await;
    assert_eq!(s, 201, "{sent}");
    let seq = sent["seq"].as_u64().expect("a seq");
    let one = "/api/v1/rooms/{room}/messages/{seq}";
    let url = format!("/api/v1/rooms/docs/messages/{seq}");
    let (s, view) = call(d, n, "get", one, &url, t, None).await;
    assert_eq!((s, view["body"].as_str()), (200, Some("over REST")));
    let (s, edited) = call(d, n, "patch", one, &url, t, Some(json!({"body": "edited"}))).await;
    assert_eq!((s, edited["version"].as_u64()), (200, Some(2)), "{edited}");
    let (s, _) = call(d, n, "get", one, "/api/v1/rooms/docs/messages/x", t, None).await;
    assert_eq!(s, 400);
    let versions = "/api/v1/rooms/{room}/messages/{seq}/versions";
    let (s, v) = call(d, n, "get", versions, &format!("{url}/versions"), t, None).await;
    assert_eq!(s, 200, "{v}");
    let reaction = "/api/v1/rooms/{room}/messages/{seq}/reactions/{emoji}";
    let (s, _) = call(
        d,
        n,
        "put",
        reaction,
        &format!("{url}/reactions/:wave:"),
        t,
        None,
    )
    .await;
    assert_eq!(s, 204);
    let (s, _) = call(
        d,
        n,
        "delete",
        reaction,
        &format!("{url}/reactions/:wave:"),
        t,
        None,
    )
    .await;
    assert_eq!(s, 204);
    let pin = "/api/v1/rooms/{room}/pins/{seq}";
    let (s, _) = call(
        d,
        n,
        "put",
        pin,
        &format!("/api/v1/rooms/docs/pins/{seq}"),
        t,
        None,
    )
    .await;
    assert_eq!(s, 204);
    let pins = "/api/v1/rooms/{room}/pins";
    let (s, p) = call(d, n, "get", pins, "/api/v1/rooms/docs/pins", t, None).await;
    assert_eq!((s, p["pins"][0]["seq"].as_u64()), (200, Some(seq)), "{p}");
    let (s, _) = call(
        d,
        n,
        "delete",
        pin,
        &format!("/api/v1/rooms/docs/pins/{seq}"),
        t,
        None,
    )
    .await;
    assert_eq!(s, 204);
    let reply = json!({"body": "a reply", "reply_to": seq});
    let (s, _) = call(
        d,
        n,
        "post",
        m,
        "/api/v1/rooms/docs/messages",
        t,
        Some(reply),
    )
    .await;
    assert_eq!(s, 201);
    let thread = "/api/v1/rooms/{room}/messages/{seq}/thread";
    let (s, th) = call(d, n, "get", thread, &format!("{url}/thread"), t, None).await;
    assert_eq!(
        (s, th["messages"][0]["body"].as_str()),
        (200, Some("a reply")),
        "{th}"
    );
    let (s, _) = call(d, n, "delete", one, &url, t, None).await;
    assert_eq!(s, 204);
    let public = "/api/v1/rooms/public";
    let (s, found) = call(d, n, "get", public, "/api/v1/rooms/public?q=DOC", t, None).await;
    assert_eq!(
        (s, found["rooms"][0]["name"].as_str()),
        (200, Some("docs")),
        "{found}"
    );
    let (s, _) = call(d, n, "get", public, "/api/v1/rooms/public?limit=0", t, None).await;
    assert_eq!(s, 400);

    account(n, "bea").await;
    let members = "/api/v1/rooms/{room}/members";
    let (s, _) = call(
        d,
        n,
        "post",
        members,
        "/api/v1/rooms/docs/members",
        t,
        Some(json!({"user": "bea"})),
    )
    .await;
    assert_eq!(s, 204);
    let (s, listed) = call(d, n, "get", members, "/api/v1/rooms/docs/members", t, None).await;
    assert_eq!(s, 200);
    let roles: Vec<(&str, &str)> = listed["members"]
        .as_array()
        .expect("members")
        .iter()
        .map(|m| (m["user"].as_str().unwrap(), m["role"].as_str().unwrap()))
        .collect();
    assert!(
        roles.contains(&("bea", "member")) && roles.iter().any(|r| r.1 == "owner"),
        "{listed}"
    );

    let (s, online) = call(
        d,
        n,
        "get",
        "/api/v1/users/online",
        "/api/v1/users/online",
        t,
        None,
    )
    .await;
    assert_eq!(s, 200);
    assert!(
        online["users"].as_array().is_some_and(|u| !u.is_empty()),
        "{online}"
    );

    let search = "/api/v1/search";
    let (s, found) = call(d, n, "get", search, "/api/v1/search?q=documents", t, None).await;
    assert_eq!(s, 200);
    assert_eq!(found["results"][0]["body"], "hello documents", "{found}");
    let (s, _) = call(
        d,
        n,
        "get",
        search,
        "/api/v1/search?q=x&room=nowhere",
        t,
        None,
    )
    .await;
    assert_eq!(s, 404);

    // An attachment: raw upload, download, range past the end, delete.
    let upload = "/api/v1/rooms/{room}/attachments";
    let r = http()
        .post(n.url("/api/v1/rooms/docs/attachments?filename=a.txt"))
        .bearer_auth(&token)
        .header("content-type", "text/plain")
        .body("some text")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let info: Value = r.json().await.unwrap();
    check_body(d, upload, "post", 201, &info);
    let r = http()
        .post(n.url("/api/v1/rooms/docs/attachments"))
        .bearer_auth(&token)
        .header("content-type", "text/html")
        .body("<p>")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 415);
    let refused: Value = r.json().await.unwrap();
    check_body(d, upload, "post", 415, &refused);
    let file = "/api/v1/attachments/{id}";
    let url = info["url"].as_str().unwrap().to_string();
    let (s, _) = call(d, n, "get", file, &url, t, None).await;
    assert_eq!(s, 200);
    let r = http()
        .get(n.url(&url))
        .bearer_auth(&token)
        .header("range", "bytes=100-")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 416);
    let refused: Value = r.json().await.unwrap();
    check_body(d, file, "get", 416, &refused);
    let (s, _) = call(d, n, "delete", file, &url, t, None).await;
    assert_eq!(s, 204);

    // Friends and blocks (bea exists, see the invitation above).
    let friend = "/api/v1/friends/{user}";
    let (s, asked) = call(d, n, "post", friend, "/api/v1/friends/bea", t, None).await;
    assert_eq!((s, asked["status"].as_str()), (201, Some("requested")));
    let (s, _) = call(d, n, "post", friend, "/api/v1/friends/nobody", t, None).await;
    assert_eq!(s, 404);
    let (s, lists) = call(d, n, "get", "/api/v1/friends", "/api/v1/friends", t, None).await;
    assert_eq!(s, 200);
    assert_eq!(lists["outgoing"][0]["user"], "bea", "{lists}");
    let block = "/api/v1/blocks/{user}";
    let (s, _) = call(d, n, "put", block, "/api/v1/blocks/bea", t, None).await;
    assert_eq!(s, 204);
    let (s, blocked) = call(d, n, "get", "/api/v1/blocks", "/api/v1/blocks", t, None).await;
    assert_eq!((s, &blocked["blocked"][0]), (200, &json!("bea")));
    let (s, _) = call(d, n, "delete", block, "/api/v1/blocks/bea", t, None).await;
    assert_eq!(s, 204);
    let (s, _) = call(d, n, "delete", friend, "/api/v1/friends/bea", t, None).await;
    assert_eq!(s, 404);

    let (s, _) = call(d, n, "get", "/", "/", None, None).await;
    assert_eq!(s, 200);
    let (s, _) = call(d, n, "get", "/web/{path}", "/web/js/main.js", None, None).await;
    assert_eq!(s, 200);
    let (s, _) = call(d, n, "get", "/web/{path}", "/web/nothing.js", None, None).await;
    assert_eq!(s, 404);

    let (s, _) = call(d, n, "get", "/health", "/health", None, None).await;
    assert_eq!(s, 200);
    let (s, _) = call(d, n, "get", "/ready", "/ready", None, None).await;
    assert_eq!(s, 200);
    let admin = Some(ADMIN_TOKEN);
    let (s, tree) = call(d, n, "get", "/admin/actors", "/admin/actors", admin, None).await;
    assert_eq!(s, 200);
    assert!(tree["nodes"][0]["actors"]
        .as_array()
        .is_some_and(|a| !a.is_empty()));
    let (s, _) = call(
        d,
        n,
        "get",
        "/admin/actors",
        "/admin/actors?kind=nonsense",
        admin,
        None,
    )
    .await;
    assert_eq!(s, 400);
    let (s, _) = call(d, n, "get", "/admin/nodes", "/admin/nodes", admin, None).await;
    assert_eq!(s, 200);
    let (s, _) = call(
        d,
        n,
        "get",
        "/admin/nodes",
        "/admin/nodes",
        Some("wrong"),
        None,
    )
    .await;
    assert_eq!(s, 401);
    // Domain events: in the events table on the embedded default; with
    // Kafka (real stores) a 404 naming the topic. Both documented.
    let events = "/api/v1/events";
    let url = "/api/v1/events?after=0&limit=50";
    let (mut s, mut page) = call(d, n, "get", events, url, admin, None).await;
    if common::real() {
        assert_eq!(s, 404, "{page}");
    } else {
        // Events are written by a background task: wait for the first.
        for _ in 0..100 {
            if s != 200 || page["events"].as_array().is_some_and(|e| !e.is_empty()) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
            (s, page) = call(d, n, "get", events, url, admin, None).await;
        }
        assert_eq!(s, 200, "{page}");
        let first = &page["events"][0];
        assert_eq!(first["type"], "user.registered", "{page}");
        assert!(first["position"].as_i64().is_some(), "{page}");
    }
    let (s, _) = call(d, n, "get", events, "/api/v1/events?limit=0", admin, None).await;
    assert!(s == 400 || (common::real() && s == 404), "{s}");

    let (s, _) = call(d, n, "post", "/api/v1/logout", "/api/v1/logout", t, None).await;
    assert_eq!(s, 204);
    let (s, _) = call(d, n, "get", "/api/v1/rooms", "/api/v1/rooms", t, None).await;
    assert_eq!(s, 401);
}

type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

async fn connect(node: &Node, token: &str) -> Ws {
    let url = format!("{}?token={token}", node.ws_url());
    let (ws, _) = tokio_tungstenite::connect_async(url)
        .await
        .expect("ws connects");
    ws
}

async fn send(ws: &mut Ws, frame: Value) {
    ws.send(Message::Text(frame.to_string().into()))
        .await
        .expect("send a frame");
}

/// Frames until one of type `ty` (included).
async fn read_until(ws: &mut Ws, ty: &str) -> Vec<Value> {
    let mut frames = Vec::new();
    loop {
        let next = tokio::time::timeout(WAIT, ws.next())
            .await
            .unwrap_or_else(|_| panic!("no {ty} frame within {WAIT:?}; got {frames:?}"));
        match next {
            Some(Ok(Message::Text(text))) => {
                let frame: Value = serde_json::from_str(&text).expect("a JSON frame");
                let done = frame["type"] == ty;
                frames.push(frame);
                if done {
                    return frames;
                }
            }
            Some(Ok(Message::Ping(_) | Message::Pong(_))) => {}
            other => panic!("waiting for {ty}: {other:?}; got {frames:?}"),
        }
    }
}

/// Frames that arrive within `d`.
async fn read_for(ws: &mut Ws, d: Duration) -> Vec<Value> {
    let mut frames = Vec::new();
    let end = tokio::time::Instant::now() + d;
    while let Ok(Some(Ok(message))) = tokio::time::timeout_at(end, ws.next()).await {
        if let Message::Text(text) = message {
            frames.push(serde_json::from_str(&text).expect("a JSON frame"));
        }
    }
    frames
}

/// The frames document with `$ref` set to one of its definitions.
fn validator(schema: &Value, def: Option<&str>) -> jsonschema::Validator {
    let mut root = schema.clone();
    if let Some(def) = def {
        assert!(
            schema["$defs"].get(def).is_some(),
            "no $defs/{def} in the frames schema"
        );
        root.as_object_mut().unwrap().remove("anyOf");
        root["$ref"] = json!(format!("#/$defs/{def}"));
    }
    jsonschema::draft202012::new(&root).expect("a valid schema")
}

fn check_frame(schema: &Value, side: &str, frame: &Value) {
    let ty = frame["type"].as_str().expect("a typed frame");
    let def = format!("{side}.{ty}");
    for v in [validator(schema, Some(&def)), validator(schema, None)] {
        let errors: Vec<String> = v.iter_errors(frame).map(|e| e.to_string()).collect();
        assert!(
            errors.is_empty(),
            "{def}: {frame} does not match: {errors:?}"
        );
    }
}

#[tokio::test]
async fn real_frames_match_the_frame_schemas() {
    let node = node().await;
    let r = http()
        .get(node.url("/api/frames.schema.json"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let schema: Value = r.json().await.unwrap();
    assert_eq!(
        schema["$schema"],
        "https://json-schema.org/draft/2020-12/schema"
    );
    let ann = account(&node, "ann").await;
    let ben = account(&node, "ben").await;
    let mut a = connect(&node, &ann).await;
    let mut seen: Vec<Value> = read_until(&mut a, "session").await;
    let session = seen[0].clone();
    let mut b = connect(&node, &ben).await;
    seen.extend(read_until(&mut b, "session").await);

    // What ann sends, each frame checked against its client schema first.
    let script = [
        (json!({"type": "join", "room": "lobby"}), "joined"),
        (
            json!({"type": "send", "room": "lobby", "body": "hi", "client_id": "m1"}),
            "ack",
        ),
        (
            json!({"type": "typing", "room": "lobby", "active": true}),
            "",
        ),
        (json!({"type": "read", "room": "lobby", "seq": 1}), ""),
        (
            json!({"type": "history", "room": "lobby", "before": 10, "limit": 5}),
            "history",
        ),
        (json!({"type": "members", "room": "lobby"}), "members"),
        (json!({"type": "who"}), "users"),
        (json!({"type": "ping", "nonce": {"n": [1, 2]}}), "pong"),
        (
            json!({"type": "dm", "to": "ben", "body": "psst", "client_id": "m2"}),
            "ack",
        ),
        (
            json!({"type": "broadcast", "body": "all", "client_id": "m3"}),
            "ack",
        ),
        (json!({"type": "leave", "room": "lobby"}), "left"),
    ];
    // ben is in the room first, to see ann's typing, read and messages.
    send(&mut b, json!({"type": "join", "room": "lobby"})).await;
    seen.extend(read_until(&mut b, "joined").await);
    for (frame, answer) in script {
        check_frame(&schema, "client", &frame);
        send(&mut a, frame).await;
        if !answer.is_empty() {
            seen.extend(read_until(&mut a, answer).await);
        }
    }
    // ben saw ann join, type and read.
    seen.extend(read_until(&mut b, "typing").await);
    seen.extend(read_until(&mut b, "read").await);
    // An error: a frame both the schema and the node refuse.
    let bad = json!({"type": "send", "room": "lobby", "client_id": "m4"});
    assert!(
        !validator(&schema, Some("client.send")).is_valid(&bad),
        "the schema accepts a send without body"
    );
    assert!(!validator(&schema, None).is_valid(&json!({"type": "fly"})));
    send(&mut a, bad).await;
    let errors = read_until(&mut a, "error").await;
    assert_eq!(errors.last().unwrap()["ref"], "m4");
    seen.extend(errors);
    // ben leaves: ann (back in the room) sees it; then a resume.
    send(&mut a, json!({"type": "join", "room": "lobby"})).await;
    seen.extend(read_until(&mut a, "joined").await);
    send(&mut b, json!({"type": "leave", "room": "lobby"})).await;
    seen.extend(read_until(&mut a, "user_left").await);
    seen.extend(read_until(&mut b, "left").await);
    drop(b);
    seen.extend(read_until(&mut a, "presence").await);
    seen.extend(read_for(&mut a, Duration::from_millis(200)).await);
    drop(a);
    // A resume as the first frame of a new connection.
    let (mut again, _) = tokio_tungstenite::connect_async(node.ws_url())
        .await
        .expect("ws connects");
    let resume = json!({
        "type": "resume",
        "resume_token": session["resume_token"],
        "rooms": {"lobby": 1}
    });
    check_frame(&schema, "client", &resume);
    send(&mut again, resume).await;
    seen.extend(read_until(&mut again, "resumed").await);

    let mut types = BTreeSet::new();
    for frame in &seen {
        check_frame(&schema, "server", frame);
        types.insert(frame["type"].as_str().unwrap().to_string());
    }
    for expected in [
        "session",
        "resumed",
        "joined",
        "left",
        "message",
        "ack",
        "user_joined",
        "user_left",
        "presence",
        "typing",
        "read",
        "history",
        "members",
        "users",
        "error",
        "pong",
    ] {
        assert!(
            types.contains(expected),
            "no {expected} frame seen: {types:?}"
        );
    }
}

/// `/api/docs` in Debian's headless chromium (scripts/install-chromium.sh;
/// without it this test fails, it does not skip): the page's script runs
/// under its own Content-Security-Policy and renders both documents.
#[tokio::test]
async fn the_reference_page_renders_both_documents_in_a_browser() {
    const CHROMIUM: &str = "/usr/bin/chromium";
    assert!(
        Path::new(CHROMIUM).exists(),
        "{CHROMIUM} is missing: run scripts/install-chromium.sh (as root) first"
    );
    let node = node().await;
    let r = http().get(node.url("/api/docs")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let csp = r.headers()["content-security-policy"]
        .to_str()
        .unwrap()
        .to_string();
    assert!(csp.contains("script-src 'sha256-"), "{csp}");
    assert!(!csp.contains("unsafe-inline"), "{csp}");
    let profile = tempfile::tempdir().unwrap();
    let mut cmd = tokio::process::Command::new(CHROMIUM);
    cmd.args([
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--disable-background-networking",
        "--disable-extensions",
        "--disable-component-update",
        "--no-first-run",
        // Virtual time waits for the page's fetches before the dump.
        "--virtual-time-budget=5000",
        "--dump-dom",
    ])
    .arg(format!("--user-data-dir={}", profile.path().display()))
    .arg(node.url("/api/docs"))
    .stdin(std::process::Stdio::null())
    .kill_on_drop(true);
    // Not a timing check: only a bound on a browser that hangs.
    let out = tokio::time::timeout(Duration::from_secs(120), cmd.output())
        .await
        .expect("chromium finished within 120 s")
        .expect("chromium runs");
    assert!(out.status.success(), "chromium failed: {}", out.status);
    let dom = String::from_utf8_lossy(&out.stdout);
    let paths = get_json(&node, "/api/openapi.json").await["paths"]
        .as_object()
        .unwrap()
        .len();
    assert!(
        dom.contains(&format!("OpenAPI 3.1.0 · {paths} paths")),
        "the page's script did not render the document: {dom}"
    );
    for rendered in [
        r#"id="op-create_room""#,
        r#"id="op-upload_attachment""#,
        r#"id="schema-ErrorBody""#,
        r#"id="frame-client.send""#,
        r#"id="frame-server.message""#,
        "/api/v1/rooms/{room}/messages",
    ] {
        assert!(dom.contains(rendered), "{rendered} not rendered");
    }
}

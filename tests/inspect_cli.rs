//! `troupe inspect` against a real node: the tree, `--json`, filters, and its
//! errors (wrong token, admin endpoints off, nothing listening).

mod common;

use std::process::{Output, Stdio};
use std::time::Duration;

use common::{Client, Node};
use serde_json::Value;

const TOKEN: &str = "inspect-cli-test-token-0123";
const NODE: &str = "inspnode";
const ROOM: &str = "insproom";

async fn inspect(args: &[&str], env_token: Option<&str>) -> Output {
    let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_troupe"));
    cmd.arg("inspect")
        .args(args)
        .env_remove("TROUPE_ADMIN__TOKEN")
        .stdin(Stdio::null())
        .kill_on_drop(true);
    if let Some(t) = env_token {
        cmd.env("TROUPE_ADMIN__TOKEN", t);
    }
    // Not a timing check: a bound on a command that hangs.
    tokio::time::timeout(Duration::from_secs(60), cmd.output())
        .await
        .expect("troupe inspect finished within 60 s")
        .expect("troupe inspect runs")
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn ok(out: &Output) -> String {
    assert!(
        out.status.success(),
        "troupe inspect failed: {}\n{}",
        out.status,
        stderr(out)
    );
    stdout(out)
}

async fn node_with_a_room() -> (Node, Vec<Client>) {
    common::admin_node_with_a_room(TOKEN, NODE, ROOM).await
}

#[tokio::test]
async fn inspect_prints_the_tree_of_a_running_node() {
    let (node, _clients) = node_with_a_room().await;
    let url = node.url("");
    let out = ok(&inspect(&["--url", &url, "--token", TOKEN], None).await);
    let lines: Vec<&str> = out.lines().collect();
    let node_line = lines[0];
    assert!(
        node_line.starts_with(&format!("{NODE}  http {}", node.addr)) && node_line.contains(" up "),
        "{out}"
    );
    let room = lines
        .iter()
        .find(|l| l.trim_start().starts_with(&format!("room:{ROOM} ")))
        .unwrap_or_else(|| panic!("no room:{ROOM} in\n{out}"));
    assert!(room.starts_with("  "), "not under the node: {room:?}");
    assert!(
        room.contains(&format!("owner {NODE}"))
            && room.contains("members 2")
            && room.contains("seq 3"),
        "{room:?}"
    );
    // Under the rooms supervisor, deeper than it.
    let indent = |l: &str| l.len() - l.trim_start().len();
    let rooms_sup = lines
        .iter()
        .position(|l| l.trim_start().starts_with("rooms "))
        .unwrap_or_else(|| panic!("no rooms supervisor in\n{out}"));
    let room_at = lines.iter().position(|l| l == room).unwrap();
    assert!(
        rooms_sup < room_at && indent(room) > indent(lines[rooms_sup]),
        "{out}"
    );
    assert!(
        lines
            .iter()
            .any(|l| l.contains("session") && l.contains("user ann")),
        "{out}"
    );

    // The token may come from the environment.
    let from_env = ok(&inspect(&["--url", &url], Some(TOKEN)).await);
    assert!(from_env.contains(&format!("room:{ROOM} ")), "{from_env}");
}

#[tokio::test]
async fn inspect_json_and_filters() {
    let (node, _clients) = node_with_a_room().await;
    let url = node.url("");

    let out = ok(&inspect(&["--url", &url, "--token", TOKEN, "--json"], None).await);
    let v: Value = serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}"));
    let nodes = v["nodes"].as_array().expect("nodes");
    assert_eq!(nodes.len(), 1, "{v}");
    assert_eq!(nodes[0]["node"], NODE);
    let room = format!("room:{ROOM}");
    let actors = nodes[0]["actors"].as_array().expect("actors");
    assert!(
        actors
            .iter()
            .any(|a| a["name"] == room.as_str() && a["kind"] == "room"),
        "{v}"
    );
    assert!(actors.iter().any(|a| a["kind"] == "session"), "{v}");

    // --kind room: the room, and nothing but rooms.
    let out = ok(&inspect(&["--url", &url, "--token", TOKEN, "--kind", "room"], None).await);
    let lines: Vec<&str> = out.lines().collect();
    assert!(lines[0].starts_with(NODE), "{out}");
    assert!(lines.len() > 1, "{out}");
    for l in &lines[1..] {
        let mut cols = l.split_whitespace();
        let (name, kind) = (cols.next().unwrap_or(""), cols.next().unwrap_or(""));
        assert_eq!(kind, "room", "{l:?} in\n{out}");
        assert!(name.starts_with("room:"), "{l:?}");
    }
    assert!(out.contains(&format!("{room} ")), "{out}");

    // --kind room --json: the same filter for scripts.
    let out = ok(&inspect(
        &["--url", &url, "--token", TOKEN, "--kind", "room", "--json"],
        None,
    )
    .await);
    let v: Value = serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}"));
    let actors = v["nodes"][0]["actors"].as_array().expect("actors");
    assert!(
        !actors.is_empty() && actors.iter().all(|a| a["kind"] == "room"),
        "{v}"
    );

    // --name: that actor, with every state field on a line of its own.
    let out = ok(&inspect(&["--url", &url, "--token", TOKEN, "--name", &room], None).await);
    assert!(out.contains(&format!("{room} ")), "{out}");
    assert!(out.contains("last_seq: 3"), "{out}");
    assert!(
        !out.lines().any(|l| l.trim_start().starts_with("session:")),
        "{out}"
    );
}

#[tokio::test]
async fn inspect_errors_are_clear_and_exit_non_zero() {
    let (node, _clients) = node_with_a_room().await;
    let url = node.url("");

    let out = inspect(
        &["--url", &url, "--token", "not-the-admin-token-at-all"],
        None,
    )
    .await;
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("wrong admin token"),
        "{}",
        stderr(&out)
    );
    assert!(stdout(&out).is_empty(), "{}", stdout(&out));

    let out = inspect(&["--url", &url], None).await;
    assert!(!out.status.success());
    assert!(stderr(&out).contains("no admin token"), "{}", stderr(&out));

    // A request the node refuses: its message, not the JSON around it.
    let out = inspect(&["--url", &url, "--token", TOKEN, "--kind", "bogus"], None).await;
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(
        err.contains("answered 400 Bad Request: ") && err.contains("bogus") && !err.contains("{\""),
        "{err}"
    );

    // A node without admin.token has no admin endpoints.
    let plain = Node::start().await;
    let out = inspect(&["--url", &plain.url(""), "--token", TOKEN], None).await;
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("admin endpoints are off on this node (set admin.token)"),
        "{}",
        stderr(&out)
    );

    // Nothing listening: the message names the URL.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port();
    let dead = format!("http://127.0.0.1:{port}");
    let out = inspect(&["--url", &dead, "--token", TOKEN], None).await;
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(err.contains(&format!("cannot connect to {dead}")), "{err}");
}

//! The `troupe` command line: configuration errors, `migrate`, and a graceful
//! stop on SIGTERM.

mod common;

use std::process::Command;

use common::{Client, Node};
use serde_json::json;

fn troupe() -> Command {
    Command::new(env!("CARGO_BIN_EXE_troupe"))
}

#[test]
fn a_bad_config_value_stops_the_node_with_one_line_naming_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let out = troupe()
        .args(["serve", "--data-dir"])
        .arg(dir.path())
        .env("TROUPE_LIMITS__MAX_BODY_CHARS", "lots")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    let last = stderr.lines().last().unwrap_or_default();
    assert!(
        last.starts_with("error: ") && last.contains("limits.max_body_chars"),
        "{stderr}"
    );

    let config = dir.path().join("bad.toml");
    std::fs::write(
        &config,
        "listen = \"127.0.0.1:1\"\n[limits]\nno_such_key = 1\n",
    )
    .unwrap();
    let out = troupe()
        .args(["serve", "--config"])
        .arg(&config)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("no_such_key"), "{stderr}");

    let out = troupe()
        .args(["serve", "--listen", "not-an-address"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("listen"));
}

#[test]
fn migrate_creates_the_database_and_exits() {
    let dir = tempfile::tempdir().unwrap();
    let out = troupe()
        .args(["migrate", "--data-dir"])
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(dir.path().join("troupe.db").exists());
    // Twice is fine.
    let out = troupe()
        .args(["migrate", "--data-dir"])
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(out.status.success());
}

#[tokio::test]
async fn sigterm_closes_sockets_with_1012_keeps_everything_and_exits_0() {
    let mut node = Node::start().await;
    let mut ann = Client::new_user(&node, "ann").await;
    ann.join("lobby").await;
    for i in 1..=20 {
        ann.say("lobby", &format!("m{i}"), &format!("c{i}")).await;
    }
    let status = node.sigterm();
    assert!(status.success(), "exit status {status}");
    assert_eq!(ann.expect_close().await, Some(1012));
    assert!(node.log_text().contains("stopped"));

    node.restart().await;
    let token = common::login_token(&node, "ann").await;
    let mut ann = Client::connect(&node, "ann", &token).await;
    ann.send(json!({"type": "history", "room": "lobby", "limit": 200}))
        .await;
    let h = ann.expect("history").await;
    assert_eq!(h["messages"].as_array().unwrap().len(), 20);
    let ack = ann.say("lobby", "after restart", "c21").await;
    assert_eq!(ack["seq"], 21);
}

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

/// The exit status and stderr of `troupe serve`; a node still running after
/// 30 s (it started when it should not have) is killed and fails the test.
fn serve_expecting_exit(dir: &std::path::Path, url: &str) -> (std::process::ExitStatus, String) {
    let mut child = troupe()
        .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(dir)
        .env("TROUPE_DATABASE__URL", url)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        if child.try_wait().unwrap().is_some() {
            let out = child.wait_with_output().unwrap();
            return (
                out.status,
                String::from_utf8_lossy(&out.stderr).into_owned(),
            );
        }
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            let out = child.wait_with_output().unwrap();
            panic!(
                "the node started and kept running:\n{}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
}

/// A database of the version before usernames were unique regardless of
/// case, holding `alice` and `ALICE`: the node refuses to start with one line
/// naming them, and changes nothing; once the operator renamed them, it
/// upgrades, and the database itself refuses a new pair. SQLite on the
/// embedded run, Postgres on the real-server run.
#[tokio::test]
async fn a_database_with_usernames_differing_only_in_case_refuses_to_upgrade_and_names_them() {
    use sea_orm::ConnectionTrait;
    use troupe_migration::{Migrator, MigratorTrait};

    let dir = tempfile::tempdir().unwrap();
    let url = if common::real() {
        common::postgres_database().1
    } else {
        format!(
            "sqlite://{}?mode=rwc",
            dir.path().join("troupe.db").display()
        )
    };
    let db = sea_orm::Database::connect(&url).await.unwrap();
    // The schema as the previous version left it: its two migrations.
    Migrator::up(&db, Some(2)).await.unwrap();
    for (i, name) in ["alice", "ALICE", "bob", "Bob", "BOB", "carol"]
        .iter()
        .enumerate()
    {
        db.execute_unprepared(&format!(
            "INSERT INTO users (username, password_hash, created_at) VALUES ('{name}', 'x', {i})"
        ))
        .await
        .unwrap();
    }

    let (status, stderr) = serve_expecting_exit(dir.path(), &url);
    assert!(!status.success(), "{stderr}");
    let last = stderr.lines().last().unwrap_or_default();
    assert!(
        last.starts_with("error: ")
            && last.contains(
                "usernames differ only in case: ALICE, alice; BOB, Bob, bob; \
                 rename all but one of each before upgrading"
            )
            && !last.contains("carol"),
        "{stderr}"
    );
    assert!(
        !stderr.contains("retrying"),
        "a refusal is not a race: {stderr}"
    );
    // Nothing changed: the rows are there, the migration is still to run.
    let users = db
        .query_all_raw(sea_orm::Statement::from_string(
            db.get_database_backend(),
            "SELECT username FROM users",
        ))
        .await
        .unwrap();
    assert_eq!(users.len(), 6);
    // Nothing after the first two ran: the refused one and those after it wait.
    assert_eq!(
        Migrator::get_pending_migrations(&db).await.unwrap().len(),
        Migrator::migrations().len() - 2
    );

    // The operator renames; the upgrade goes through.
    for (from, to) in [("ALICE", "alice2"), ("Bob", "bob2"), ("BOB", "bob3")] {
        db.execute_unprepared(&format!(
            "UPDATE users SET username = '{to}' WHERE username = '{from}'"
        ))
        .await
        .unwrap();
    }
    let out = troupe()
        .args(["migrate", "--data-dir"])
        .arg(dir.path())
        .env("TROUPE_DATABASE__URL", &url)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let again = db
        .execute_unprepared(
            "INSERT INTO users (username, password_hash, created_at) VALUES ('CAROL', 'x', 9)",
        )
        .await;
    assert!(again.is_err(), "the database took CAROL next to carol");
}

/// `migrate` touches only the database: Kafka and Redis configured but down
/// do not stop it, and flags of `serve` are refused, not silently ignored.
/// Three at once on a fresh Postgres database take turns (an advisory lock):
/// each succeeds and none reports a failure or a retry.
#[test]
fn migrate_needs_only_the_database_and_runs_concurrently() {
    let (_, url) = common::postgres_database();
    let dir = tempfile::tempdir().unwrap();
    let spawn = || {
        troupe()
            .args(["migrate", "--data-dir"])
            .arg(dir.path())
            .env("TROUPE_DATABASE__URL", &url)
            .env("TROUPE_LOG__KIND", "kafka")
            .env("TROUPE_KAFKA__BROKERS", "127.0.0.1:1")
            .env("TROUPE_REDIS__URL", "redis://127.0.0.1:1")
            .env("RUST_LOG", "info")
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap()
    };
    let runs: Vec<_> = (0..3).map(|_| spawn()).collect();
    for run in runs {
        let out = run.wait_with_output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{stderr}");
        assert!(
            !stderr.contains("WARN") && !stderr.contains("ERROR"),
            "{stderr}"
        );
    }

    let out = troupe()
        .args(["migrate", "--listen", "127.0.0.1:9"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("--listen"), "{stderr}");
}

/// An unreachable database stops `serve` with one line that gives the cause once.
#[test]
fn an_unreachable_database_is_one_line_with_its_cause_once() {
    let dir = tempfile::tempdir().unwrap();
    let out = troupe()
        .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(dir.path())
        .env(
            "TROUPE_DATABASE__URL",
            "postgres://troupe:s3cret@127.0.0.1:1/troupe",
        )
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    let last = stderr.lines().last().unwrap_or_default();
    assert!(
        last.starts_with("error: database postgres://troupe:***@127.0.0.1:1/troupe unreachable"),
        "{stderr}"
    );
    assert!(!stderr.contains("s3cret"), "{stderr}");
    // The driver's words appear once, not once per layer of wrapping.
    let cause = last.rsplit(": ").next().unwrap_or_default();
    assert!(
        !cause.is_empty() && last.matches(cause).count() == 1,
        "{last}"
    );
}

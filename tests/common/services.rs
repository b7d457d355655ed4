//! The machine's shared servers, and a test's own part of them.
//!
//! Tests on real stores share one Postgres (`TEST_POSTGRES`, default
//! `postgres://root@127.0.0.1:5432`, user root with trust) and one Redis
//! (`TEST_REDIS`, default `redis://127.0.0.1:6379`). Each test takes a part
//! nobody else uses, named by [`unique`]:
//!
//! - [`Database`]: a fresh database, dropped (`WITH (FORCE)`) when the
//!   value is dropped; [`postgres_database`] one that stays until
//!   scripts/test.sh drops every `troupe_t*` database at the end of a run
//!   (nodes of a test that restart keep finding it);
//! - [`RedisPrefix`]: a key prefix, whose keys are deleted on drop.
//!
//! A server that does not answer fails the test at once, with what to start;
//! nothing is skipped. Servers a test starts and stops itself (its own
//! broker, redis-server or Postgres cluster) are in `servers.rs`.

use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};

use super::procs::run;

static UNIQUE: AtomicU32 = AtomicU32::new(0);

/// `{what}{pid}_{n}`: a name no other test of this run or of another one
/// running at the same time uses.
pub fn unique(what: &str) -> String {
    format!(
        "{what}{}_{}",
        std::process::id(),
        UNIQUE.fetch_add(1, Ordering::Relaxed)
    )
}

/// The shared Postgres server's URL, without a database.
pub fn postgres_base() -> String {
    std::env::var("TEST_POSTGRES").unwrap_or_else(|_| "postgres://root@127.0.0.1:5432".into())
}

/// The shared Redis server's URL.
pub fn redis_url() -> String {
    std::env::var("TEST_REDIS").unwrap_or_else(|_| "redis://127.0.0.1:6379".into())
}

/// `psql URL -Atc SQL`; `None` when the server does not answer or the
/// statement fails (for polls that expect a server to come and go).
pub fn psql_query(url: &str, sql: &str) -> Option<String> {
    let out = Command::new("psql")
        .arg(url)
        .args(["-Atc", sql])
        .stdin(Stdio::null())
        .output()
        .ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
}

/// `psql URL -Atc SQL`, failing the test (with `what`) when it fails.
pub fn psql(what: &str, url: &str, sql: &str) -> String {
    run(what, Command::new("psql").arg(url).args(["-Atc", sql]))
}

fn create_database(base: &str, name: &str) {
    run(
        &format!(
            "creating database {name} on the shared Postgres at {base} \
             (is it running? the real-store tests need it and the psql client)"
        ),
        Command::new("psql")
            .arg(format!("{base}/postgres"))
            .args(["-qc", &format!("CREATE DATABASE {name}")]),
    );
}

/// A fresh database on the shared Postgres, dropped at the end.
pub struct Database {
    name: String,
}

impl Database {
    /// `CREATE DATABASE {prefix}{pid}_{n}`.
    pub fn create(prefix: &str) -> Database {
        let name = unique(prefix);
        create_database(&postgres_base(), &name);
        Database { name }
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn url(&self) -> String {
        format!("{}/{}", postgres_base(), self.name)
    }
}

impl Drop for Database {
    fn drop(&mut self) {
        let _ = Command::new("psql")
            .arg(format!("{}/postgres", postgres_base()))
            .args([
                "-qc",
                &format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.name),
            ])
            .stdin(Stdio::null())
            .output();
    }
}

/// A fresh, empty Postgres database of this test run that outlives the
/// test (`scripts/test.sh` drops them at the end): its unique suffix
/// (`t{pid}_{n}`, for the other names of the same test) and its URL.
pub fn postgres_database() -> (String, String) {
    let unique = unique("t");
    let base = postgres_base();
    create_database(&base, &format!("troupe_{unique}"));
    let url = format!("{base}/troupe_{unique}");
    (unique, url)
}

/// A key prefix (`{what}{pid}_{n}:`) on the shared Redis; its keys are
/// deleted at the end.
pub struct RedisPrefix {
    pub prefix: String,
}

impl RedisPrefix {
    /// Checks that the shared Redis answers (failing the test if not).
    pub fn new(what: &str) -> RedisPrefix {
        let url = redis_url();
        let out = Command::new("redis-cli")
            .args(["-u", &url, "ping"])
            .stdin(Stdio::null())
            .output()
            .expect("redis-cli runs (the real-store tests need the Redis client)");
        assert!(
            String::from_utf8_lossy(&out.stdout).contains("PONG"),
            "the shared Redis at {url} does not answer: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        RedisPrefix {
            prefix: format!("{}:", unique(what)),
        }
    }
}

impl Drop for RedisPrefix {
    fn drop(&mut self) {
        let url = redis_url();
        let script = format!(
            "redis-cli -u {url} --scan --pattern '{}*' | xargs -r -n 500 redis-cli -u {url} del",
            self.prefix
        );
        let _ = Command::new("sh")
            .args(["-c", &script])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}

//! The test kit: real `troupe` processes on loopback, real servers, real
//! WebSocket and HTTP clients. Every test crate declares `mod common;` and
//! takes what it needs. One concern per file:
//!
//! | file | what |
//! | --- | --- |
//! | `procs.rs` | [`procs::Proc`]: a process of the test's own, killed on drop; free ports, running commands, reading logs |
//! | `services.rs` | the machine's shared Postgres and Redis: a fresh [`services::Database`], a [`services::RedisPrefix`] |
//! | `servers.rs` | servers a test starts and breaks itself: [`servers::Tansu`], [`servers::RedisServer`], [`servers::PgCluster`] |
//! | `node.rs` | [`Node`]: one `troupe serve` (embedded default, or real stores with `TEST_STORES=real`) |
//! | `client.rs` | HTTP helpers and accounts; [`Client`], a WebSocket the test drives frame by frame |
//! | `ledger.rs` | [`ledger::Ledger`]: what one chatting user sent, had acked and received |
//! | `chatter.rs` | [`chatter::Chatter`]: chatting clients on one node (the fault tests) |
//! | `cluster.rs` | [`cluster::Cluster`]: N nodes on shared Postgres, Redis and a tansu of their own |
//! | `netns.rs` | [`netns::NetLab`]: a node in a network namespace, to partition it |
//! | `load.rs` | [`load::Load`]: simulated users that chat on a cluster, reconnect and resume |
//! | `invariants.rs` | the one invariant checker: ledgers against history |
//! | `browser.rs`, `s3.rs` | headless Chromium; moto's S3 server |
//!
//! Nothing is ever skipped: a server, binary or tool that is missing or does
//! not start fails the test with what to install or start, and a node that
//! does not come up fails it with its log. Tests assert what a user would
//! check, never timings; deadlines only bound how long a broken run takes to
//! fail.

// Each test crate uses a part of the kit.
#![allow(dead_code, unused_imports)]

pub mod browser;
pub mod chatter;
pub mod client;
pub mod cluster;
pub mod invariants;
pub mod ledger;
pub mod load;
pub mod netns;
pub mod node;
pub mod procs;
pub mod s3;
pub mod servers;
pub mod services;

pub use client::{
    account, admin_node_with_a_room, http, login, login_token, read_until_closed, register,
    stalled_connection, Client, PASSWORD, WAIT,
};
pub use node::{real, rss_bytes_of, Node};
pub use procs::free_port;
pub use services::postgres_database;

//! Test harness: real `troupe` processes on loopback, real WebSocket clients
//! and HTTP. A node that does not come up fails the test with its log.

#![allow(dead_code)]

pub mod browser;
pub mod s3;

use std::collections::VecDeque;
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

/// How long a test waits for any one expected frame.
pub const WAIT: Duration = Duration::from_secs(15);

pub struct Node {
    child: Option<Child>,
    pub addr: SocketAddr,
    pub data_dir: PathBuf,
    log: PathBuf,
    _tmp: Option<tempfile::TempDir>,
    env: Vec<(String, String)>,
}

/// The store configuration a node gets when the suite runs against real
/// servers (`TEST_STORES=real`): a fresh Postgres database, Kafka topic
/// and Redis key prefix per node, so tests never see each other's data.
/// An unreachable server fails the node's start, and so the test, loudly.
fn real_stores() -> Option<Vec<(String, String)>> {
    match std::env::var("TEST_STORES").as_deref() {
        Ok("real") => {}
        Ok("embedded") | Err(_) => return None,
        Ok(other) => panic!("TEST_STORES={other}: expected real or embedded"),
    }
    let (unique, database) = postgres_database();
    let kafka = std::env::var("TEST_KAFKA")
        .expect("TEST_KAFKA names the test broker (scripts/test.sh starts one)");
    let redis = std::env::var("TEST_REDIS").unwrap_or_else(|_| "redis://127.0.0.1:6379".into());
    Some(vec![
        ("TROUPE_DATABASE__URL".into(), database),
        ("TROUPE_LOG__KIND".into(), "kafka".into()),
        ("TROUPE_KAFKA__BROKERS".into(), kafka),
        ("TROUPE_KAFKA__TOPIC".into(), format!("troupe-{unique}")),
        (
            "TROUPE_KAFKA__EVENTS_TOPIC".into(),
            format!("troupe-{unique}-events"),
        ),
        ("TROUPE_KAFKA__PARTITIONS".into(), "4".into()),
        ("TROUPE_REDIS__URL".into(), redis),
        ("TROUPE_REDIS__PREFIX".into(), format!("troupe-{unique}:")),
    ])
}

/// A fresh, empty Postgres database of this test run (`scripts/test.sh`
/// drops them at the end): its unique suffix and its URL.
pub fn postgres_database() -> (String, String) {
    let unique = format!(
        "t{}_{}",
        std::process::id(),
        NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
    );
    let pg =
        std::env::var("TEST_POSTGRES").unwrap_or_else(|_| "postgres://root@127.0.0.1:5432".into());
    let out = Command::new("psql")
        .arg(format!("{pg}/postgres"))
        .args(["-qc", &format!("CREATE DATABASE troupe_{unique}")])
        .output()
        .expect("psql runs (the real-store tests need the PostgreSQL client)");
    assert!(
        out.status.success(),
        "creating a test database on {pg} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let url = format!("{pg}/troupe_{unique}");
    (unique, url)
}

static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);

/// Whether this run uses real servers.
pub fn real() -> bool {
    std::env::var("TEST_STORES").as_deref() == Ok("real")
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free loopback port")
}

impl Node {
    /// A node on the embedded default, in a fresh data dir.
    pub async fn start() -> Node {
        Self::start_with(&[]).await
    }

    pub async fn start_with(env: &[(&str, &str)]) -> Node {
        let tmp = tempfile::tempdir().expect("a temp dir");
        let dir = tmp.path().to_path_buf();
        let mut env: Vec<(String, String)> = env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        if let Some(real) = real_stores() {
            // Explicit settings of a test win over the real-store defaults.
            let own: Vec<String> = env.iter().map(|(k, _)| k.clone()).collect();
            env.extend(real.into_iter().filter(|(k, _)| !own.contains(k)));
        }
        let mut node = Node {
            child: None,
            addr: SocketAddr::from(([127, 0, 0, 1], free_port())),
            data_dir: dir.clone(),
            log: dir.join("node.log"),
            _tmp: Some(tmp),
            env,
        };
        node.spawn().await;
        node
    }

    async fn spawn(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .expect("a log file");
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_troupe"));
        cmd.arg("serve")
            .arg("--listen")
            .arg(self.addr.to_string())
            .arg("--data-dir")
            .arg(&self.data_dir)
            .env("RUST_LOG", "info")
            // Many logins and registrations come from 127.0.0.1 in a test
            // run; the limits have their own tests.
            .env("TROUPE_LIMITS__LOGINS_PER_MINUTE", "100000")
            .env("TROUPE_RATE_LIMITS__REGISTER__BURST", "100000")
            .stdout(Stdio::null())
            .stderr(Stdio::from(log));
        for (k, v) in &self.env {
            cmd.env(k, v);
        }
        self.child = Some(cmd.spawn().expect("the troupe binary starts"));
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(r) = reqwest::get(self.url("/health")).await {
                if r.status().is_success() {
                    return;
                }
            }
            if let Some(status) = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                panic!("troupe exited with {status} at start:\n{}", self.log_text());
            }
            if tokio::time::Instant::now() > deadline {
                panic!(
                    "troupe did not answer /health within 30 s:\n{}",
                    self.log_text()
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    pub fn ws_url(&self) -> String {
        format!("ws://{}/ws", self.addr)
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("running").id()
    }

    /// `kill -9`: no flush, no goodbye.
    pub fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// SIGTERM, and the exit status.
    pub fn sigterm(&mut self) -> std::process::ExitStatus {
        let mut child = self.child.take().expect("running");
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(child.id().to_string())
            .status();
        child.wait().expect("exit status")
    }

    /// Starts again on the same data dir and address.
    pub async fn restart(&mut self) {
        assert!(self.child.is_none(), "stop the node first");
        self.spawn().await;
    }

    /// A setting the node was started with (its environment), if any.
    pub fn setting(&self, key: &str) -> Option<String> {
        self.env
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.clone())
    }

    /// The URL of the node's SQL database: its SQLite file, or the
    /// Postgres database of `TEST_STORES=real`.
    pub fn database_url(&self) -> String {
        self.env
            .iter()
            .find(|(k, _)| k == "TROUPE_DATABASE__URL")
            .map(|(_, v)| v.clone())
            .unwrap_or_else(|| format!("sqlite://{}", self.data_dir.join("troupe.db").display()))
    }

    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }

    /// The node process's resident memory, in bytes.
    pub fn rss_bytes(&self) -> u64 {
        rss_bytes_of(self.pid())
    }

    /// One sample of `GET /metrics`: `name` with exactly these labels
    /// (`kind="history"`, or "" for none); 0 when the node has no such line.
    pub async fn metric(&self, name: &str, labels: &str) -> f64 {
        let text = http()
            .get(self.url("/metrics"))
            .send()
            .await
            .expect("/metrics answers")
            .text()
            .await
            .expect("/metrics text");
        let series = if labels.is_empty() {
            format!("{name} ")
        } else {
            format!("{name}{{{labels}}} ")
        };
        text.lines()
            .find_map(|l| l.strip_prefix(&series))
            .map(|v| v.trim().parse().expect("a number"))
            .unwrap_or(0.0)
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// A process's resident memory (`VmRSS` of /proc/PID/status), in bytes.
pub fn rss_bytes_of(pid: u32) -> u64 {
    let status =
        std::fs::read_to_string(format!("/proc/{pid}/status")).expect("the node's /proc status");
    let kib: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("a VmRSS line");
    kib * 1024
}

pub fn http() -> reqwest::Client {
    reqwest::Client::new()
}

pub async fn register(node: &Node, user: &str, password: &str) -> reqwest::Response {
    http()
        .post(node.url("/api/v1/register"))
        .json(&json!({"username": user, "password": password}))
        .send()
        .await
        .expect("register answers")
}

pub async fn login(node: &Node, user: &str, password: &str) -> reqwest::Response {
    http()
        .post(node.url("/api/v1/login"))
        .json(&json!({"username": user, "password": password}))
        .send()
        .await
        .expect("login answers")
}

pub const PASSWORD: &str = "correct horse";

/// Logs `user` (password [`PASSWORD`]) in; the token.
pub async fn login_token(node: &Node, user: &str) -> String {
    let r = login(node, user, PASSWORD).await;
    assert_eq!(r.status(), 200, "login {user}");
    let v: Value = r.json().await.expect("login JSON");
    v["token"].as_str().expect("a token").to_string()
}

/// Registers `user` and returns a login token.
pub async fn account(node: &Node, user: &str) -> String {
    let r = register(node, user, PASSWORD).await;
    assert_eq!(
        r.status(),
        201,
        "register {user}: {}",
        r.text().await.unwrap_or_default()
    );
    let r = login(node, user, PASSWORD).await;
    assert_eq!(r.status(), 200);
    let v: Value = r.json().await.expect("login JSON");
    v["token"].as_str().expect("a token").to_string()
}

pub struct Client {
    ws: WebSocketStream<MaybeTlsStream<TcpStream>>,
    pub user: String,
    pub token: String,
    /// Frames read while looking for another.
    backlog: VecDeque<Value>,
    pub session: Value,
}

impl Client {
    /// Connects without a token.
    pub async fn raw(node: &Node) -> WebSocketStream<MaybeTlsStream<TcpStream>> {
        let (ws, _) = tokio_tungstenite::connect_async(node.ws_url())
            .await
            .expect("ws connects");
        ws
    }

    /// Connects with `?token=` and waits for the `session` frame. Its
    /// session goes live at its first frame (a `resume` replays first).
    pub async fn connect(node: &Node, user: &str, token: &str) -> Client {
        Self::connect_url(node, user, token, "").await
    }

    /// Connects with `?token=…&live=1`: live at once, for a client that
    /// only listens.
    pub async fn connect_live(node: &Node, user: &str, token: &str) -> Client {
        Self::connect_url(node, user, token, "&live=1").await
    }

    async fn connect_url(node: &Node, user: &str, token: &str, extra: &str) -> Client {
        let url = format!("{}?token={}{}", node.ws_url(), token, extra);
        let (ws, _) = tokio_tungstenite::connect_async(url)
            .await
            .expect("ws connects");
        let mut client = Client {
            ws,
            user: user.to_string(),
            token: token.to_string(),
            backlog: VecDeque::new(),
            session: Value::Null,
        };
        client.session = client.expect("session").await;
        client
    }

    /// Registers, logs in and connects.
    pub async fn new_user(node: &Node, user: &str) -> Client {
        let token = account(node, user).await;
        Client::connect(node, user, &token).await
    }

    /// Registers, logs in and connects with `?live=1` (a listener).
    pub async fn new_live_user(node: &Node, user: &str) -> Client {
        let token = account(node, user).await;
        Client::connect_live(node, user, &token).await
    }

    pub async fn send(&mut self, frame: Value) {
        self.ws
            .send(Message::Text(frame.to_string().into()))
            .await
            .expect("send a frame");
    }

    pub async fn send_text(&mut self, text: &str) {
        self.ws
            .send(Message::Text(text.into()))
            .await
            .expect("send a frame");
    }

    async fn read(&mut self) -> Option<Value> {
        match tokio::time::timeout(WAIT, self.ws.next()).await {
            Err(_) => None,
            Ok(Some(Ok(Message::Text(t)))) => {
                Some(serde_json::from_str(&t).unwrap_or(Value::String(t.to_string())))
            }
            Ok(Some(Ok(Message::Close(frame)))) => {
                Some(json!({"type": "__closed", "code": frame.map(|f| u16::from(f.code))}))
            }
            Ok(Some(Ok(_))) => Some(json!({"type": "__control"})),
            Ok(Some(Err(e))) => Some(json!({"type": "__error", "error": e.to_string()})),
            Ok(None) => Some(json!({"type": "__closed", "code": null})),
        }
    }

    /// The next frame of type `ty`, skipping (and keeping) others.
    pub async fn expect(&mut self, ty: &str) -> Value {
        if let Some(i) = self.backlog.iter().position(|f| f["type"] == ty) {
            return self.backlog.remove(i).expect("present");
        }
        loop {
            match self.read().await {
                None => panic!(
                    "{}: no {ty} frame within {WAIT:?}; got meanwhile: {:?}",
                    self.user, self.backlog
                ),
                Some(f) if f["type"] == ty => return f,
                Some(f) if f["type"] == "__closed" => {
                    panic!(
                        "{}: closed ({}) while waiting for {ty}; backlog {:?}",
                        self.user, f, self.backlog
                    )
                }
                Some(f) => self.backlog.push_back(f),
            }
        }
    }

    /// The next frame matching `pred`.
    pub async fn expect_where(&mut self, what: &str, pred: impl Fn(&Value) -> bool) -> Value {
        if let Some(i) = self.backlog.iter().position(&pred) {
            return self.backlog.remove(i).expect("present");
        }
        loop {
            match self.read().await {
                None => panic!(
                    "{}: no {what} within {WAIT:?}; got meanwhile: {:?}",
                    self.user, self.backlog
                ),
                Some(f) if pred(&f) => return f,
                Some(f) if f["type"] == "__closed" => {
                    panic!("{}: closed ({f}) while waiting for {what}", self.user)
                }
                Some(f) => self.backlog.push_back(f),
            }
        }
    }

    /// Whether a frame matching `pred` has been read (and kept) already.
    pub fn saw(&self, pred: impl Fn(&Value) -> bool) -> bool {
        self.backlog.iter().any(pred)
    }

    /// The next error frame.
    pub async fn expect_error(&mut self, code: &str) -> Value {
        let e = self.expect("error").await;
        assert_eq!(e["code"], code, "{}: unexpected error {e}", self.user);
        e
    }

    /// The next `message` frame of `room`.
    pub async fn expect_message(&mut self, room: &str) -> Value {
        self.expect_where(&format!("a message in {room}"), |f| {
            f["type"] == "message" && f["room"] == room
        })
        .await
    }

    /// Joins and waits for `joined`.
    pub async fn join(&mut self, room: &str) -> Value {
        self.send(json!({"type": "join", "room": room})).await;
        self.expect_where(&format!("joined {room}"), |f| {
            f["type"] == "joined" && f["room"] == room
        })
        .await
    }

    /// Sends a message and waits for its ack.
    pub async fn say(&mut self, room: &str, body: &str, client_id: &str) -> Value {
        self.send(json!({"type": "send", "room": room, "body": body, "client_id": client_id}))
            .await;
        self.expect_where(&format!("ack of {client_id}"), |f| {
            (f["type"] == "ack" || f["type"] == "error")
                && (f["client_id"] == client_id || f["ref"] == client_id)
        })
        .await
    }

    /// Waits until the connection is closed; its close code.
    pub async fn expect_close(&mut self) -> Option<u16> {
        loop {
            match self.read().await {
                None => panic!("{}: not closed within {WAIT:?}", self.user),
                Some(f) if f["type"] == "__closed" => return f["code"].as_u64().map(|c| c as u16),
                Some(f) if f["type"] == "__error" => return None,
                Some(f) => self.backlog.push_back(f),
            }
        }
    }

    /// Frames that arrive within `d` (for "nothing more came" checks).
    pub async fn drain_for(&mut self, d: Duration) -> Vec<Value> {
        let mut out: Vec<Value> = self.backlog.drain(..).collect();
        let deadline = tokio::time::Instant::now() + d;
        while let Ok(Some(Ok(msg))) = tokio::time::timeout_at(deadline, self.ws.next()).await {
            if let Message::Text(t) = msg {
                out.push(serde_json::from_str(&t).unwrap_or(Value::String(t.to_string())));
            }
        }
        out
    }

    pub async fn close(mut self) {
        let _ = self
            .ws
            .close(Some(CloseFrame {
                code: 1000.into(),
                reason: "bye".into(),
            }))
            .await;
    }

    pub fn resume_token(&self) -> String {
        self.session["resume_token"]
            .as_str()
            .expect("a resume token")
            .to_string()
    }

    /// Stops reading without closing: the socket stays open.
    pub fn into_stalled(self) -> WebSocketStream<MaybeTlsStream<TcpStream>> {
        self.ws
    }
}

/// A connection authenticated with `token` at the upgrade whose client will
/// not read: its socket's receive buffer is 4 KiB, so the node's writes stall
/// as soon as the kernel buffers are full. Read it later to see what came.
pub async fn stalled_connection(node: &Node, token: &str) -> WebSocketStream<TcpStream> {
    let socket = tokio::net::TcpSocket::new_v4().expect("a socket");
    socket
        .set_recv_buffer_size(4096)
        .expect("a small receive buffer");
    let tcp = socket.connect(node.addr).await.expect("tcp connects");
    let url = format!("{}?token={}", node.ws_url(), token);
    let (ws, _) = tokio_tungstenite::client_async(url, tcp)
        .await
        .expect("ws connects");
    ws
}

/// What a stalled connection received once read: its frames, up to a close
/// frame (its code), the end of the stream, or `stop` matching a frame.
pub async fn read_until_closed(
    ws: &mut WebSocketStream<TcpStream>,
    stop: impl Fn(&Value) -> bool,
) -> (Vec<Value>, Option<u16>) {
    let mut frames: Vec<Value> = Vec::new();
    loop {
        match tokio::time::timeout(WAIT, ws.next()).await {
            Err(_) => panic!(
                "no frame and no close within {WAIT:?}; got {} frames, the last of type {}",
                frames.len(),
                frames.last().map_or(Value::Null, |f| f["type"].clone())
            ),
            Ok(Some(Ok(Message::Text(t)))) => {
                let v: Value = serde_json::from_str(&t).unwrap_or(Value::String(t.to_string()));
                let done = stop(&v);
                frames.push(v);
                if done {
                    return (frames, None);
                }
            }
            Ok(Some(Ok(Message::Close(frame)))) => {
                return (frames, frame.map(|f| u16::from(f.code)))
            }
            Ok(Some(Ok(_))) => {}
            Ok(Some(Err(_))) | Ok(None) => return (frames, None),
        }
    }
}

/// A node named `node` with the admin token `token`, and two users (ann and
/// bob) in `room` with three messages. The clients stay connected so their
/// sessions are live actors (the admin tests inspect them).
pub async fn admin_node_with_a_room(token: &str, node: &str, room: &str) -> (Node, Vec<Client>) {
    let node =
        Node::start_with(&[("TROUPE_ADMIN__TOKEN", token), ("TROUPE_NODE__NAME", node)]).await;
    let mut ann = Client::new_user(&node, "ann").await;
    let mut bob = Client::new_user(&node, "bob").await;
    ann.join(room).await;
    bob.join(room).await;
    for i in 0..3 {
        let ack = ann.say(room, &format!("hello {i}"), &format!("m{i}")).await;
        assert_eq!(ack["type"], "ack", "{ack}");
    }
    (node, vec![ann, bob])
}

//! How a test talks to a node, step by step: HTTP ([`http`], accounts:
//! [`register`], [`login`], [`account`]) and [`Client`], one WebSocket that
//! the test drives frame by frame. [`Client::expect`] waits (at most
//! [`WAIT`], or what [`Client::waiting`] sets) for a frame of a type and
//! keeps the frames it skipped, so a test states what must arrive, not in
//! which order unrelated frames interleave. A frame that never comes fails
//! the test with what came instead.
//!
//! Clients that chat by themselves and record everything for the invariant
//! checker are in `chatter.rs` (one node) and `load.rs` (a cluster).

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

use super::node::Node;

/// How long a test waits for any one expected frame.
pub const WAIT: Duration = Duration::from_secs(15);

/// A WebSocket to a node.
pub type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

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
    ws: Ws,
    pub user: String,
    pub token: String,
    /// Frames read while looking for another.
    backlog: VecDeque<Value>,
    pub session: Value,
    /// How long it waits for one expected frame.
    wait: Duration,
}

impl Client {
    /// Connects without a token.
    pub async fn raw(node: &Node) -> Ws {
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
        Self::connect_ws(
            &format!("{}?token={token}{extra}", node.ws_url()),
            user,
            token,
        )
        .await
    }

    /// Connects to the node listening at `addr` (a cluster's node) with
    /// `?token=` and waits for the `session` frame.
    pub async fn connect_at(addr: SocketAddr, user: &str, token: &str) -> Client {
        Self::connect_ws(&format!("ws://{addr}/ws?token={token}"), user, token).await
    }

    async fn connect_ws(url: &str, user: &str, token: &str) -> Client {
        let (ws, _) = tokio_tungstenite::connect_async(url)
            .await
            .unwrap_or_else(|e| panic!("{user}: the WebSocket to {url} does not connect: {e}"));
        let mut client = Client {
            ws,
            user: user.to_string(),
            token: token.to_string(),
            backlog: VecDeque::new(),
            session: Value::Null,
            wait: WAIT,
        };
        client.session = client.expect("session").await;
        client
    }

    /// Waits up to `wait` for each expected frame from now on (instead of
    /// [`WAIT`]), for frames that follow a slow event (a node's death).
    pub fn waiting(mut self, wait: Duration) -> Client {
        self.wait = wait;
        self
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
        match tokio::time::timeout(self.wait, self.ws.next()).await {
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
                    "{}: no {ty} frame within {:?}; got meanwhile: {:?}",
                    self.user, self.wait, self.backlog
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
                    "{}: no {what} within {:?}; got meanwhile: {:?}",
                    self.user, self.wait, self.backlog
                ),
                Some(f) if pred(&f) => return f,
                Some(f) if f["type"] == "__closed" => {
                    panic!("{}: closed ({f}) while waiting for {what}", self.user)
                }
                Some(f) => self.backlog.push_back(f),
            }
        }
    }

    /// The next frame of type `ty` that `pred` accepts.
    pub async fn expect_with(&mut self, ty: &str, pred: impl Fn(&Value) -> bool) -> Value {
        self.expect_where(ty, |f| f["type"] == ty && pred(f)).await
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
                None => panic!("{}: not closed within {:?}", self.user, self.wait),
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
    pub fn into_stalled(self) -> Ws {
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

//! The HTTP layer as a hostile client meets it (`[http]`): connections that
//! never finish a request are closed, oversized bodies are refused before
//! they are read, connections are capped per node, per address and per user,
//! WebSocket protocol errors close with the RFC 6455 codes, only allowed
//! origins may upgrade, and every refusal shows in `/metrics`.

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use common::{account, http, Client, Node, WAIT};
use futures_util::StreamExt;
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::Role;
use tokio_tungstenite::tungstenite::{Error as WsError, Message};
use tokio_tungstenite::WebSocketStream;

/// A raw TCP connection to the node from `source` (a loopback address).
async fn tcp_from(node: &Node, source: [u8; 4]) -> TcpStream {
    let socket = TcpSocket::new_v4().expect("a socket");
    socket
        .bind(SocketAddr::from((source, 0)))
        .expect("bind a loopback source");
    socket.connect(node.addr).await.expect("tcp connects")
}

async fn tcp(node: &Node) -> TcpStream {
    tcp_from(node, [127, 0, 0, 1]).await
}

/// Everything the node sends until it closes the connection; panics if it
/// is still open after `wait`.
async fn read_until_closed(tcp: &mut TcpStream, wait: Duration) -> String {
    let mut got = Vec::new();
    let read = tokio::time::timeout(wait, async {
        let mut buf = [0u8; 4096];
        loop {
            match tcp.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => got.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await;
    let text = String::from_utf8_lossy(&got).to_string();
    assert!(
        read.is_ok(),
        "the node kept the connection open for {wait:?}; it sent {text:?}"
    );
    text
}

/// The status code of a raw HTTP response.
fn status(response: &str) -> u16 {
    response
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("not an HTTP response: {response:?}"))
}

/// `troupe_connections_refused_total{reason}` as /metrics shows it now
/// (retried while the node is still full).
async fn refused(node: &Node, reason: &str) -> u64 {
    let deadline = tokio::time::Instant::now() + WAIT;
    let text = loop {
        let r = http()
            .get(node.url("/metrics"))
            .send()
            .await
            .expect("/metrics answers");
        if r.status() == 200 {
            break r.text().await.expect("a body");
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "/metrics: {}",
            r.status()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let series = format!("troupe_connections_refused_total{{reason=\"{reason}\"}} ");
    text.lines()
        .find_map(|l| l.strip_prefix(&series))
        .unwrap_or_else(|| panic!("no {series} in /metrics"))
        .parse()
        .expect("a count")
}

/// Node settings that make the timeouts short enough to wait for.
const SHORT: &[(&str, &str)] = &[
    ("TROUPE_HTTP__HEADER_TIMEOUT_MS", "1000"),
    ("TROUPE_HTTP__BODY_TIMEOUT_MS", "1000"),
    ("TROUPE_HTTP__WS_AUTH_TIMEOUT_MS", "1000"),
];

#[tokio::test]
async fn a_connection_that_sends_nothing_is_closed_after_the_header_timeout() {
    let node = Node::start_with(SHORT).await;
    let mut silent = tcp(&node).await;
    let sent = read_until_closed(&mut silent, WAIT).await;
    assert_eq!(sent, "", "nothing to answer");
    assert!(refused(&node, "header_timeout").await >= 1);
}

#[tokio::test]
async fn a_request_whose_headers_never_end_is_closed() {
    let node = Node::start_with(SHORT).await;
    let mut slow = tcp(&node).await;
    slow.write_all(b"GET /health HTTP/1.1\r\nHost: t\r\nX-Slow: 1\r\n")
        .await
        .expect("write");
    // One more header line after a while: no header ever completes.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let _ = slow.write_all(b"X-Slower: 2\r\n").await;
    let sent = read_until_closed(&mut slow, WAIT).await;
    assert!(!sent.contains("200 OK"), "{sent}");
    // An idle keep-alive connection is bounded the same way.
    let mut idle = tcp(&node).await;
    idle.write_all(b"GET /health HTTP/1.1\r\nHost: t\r\n\r\n")
        .await
        .expect("write");
    let answered = read_until_closed(&mut idle, WAIT).await;
    assert_eq!(status(&answered), 200, "{answered}");
    assert!(refused(&node, "header_timeout").await >= 1);
}

#[tokio::test]
async fn a_partial_body_is_answered_408_and_closed() {
    let node = Node::start_with(SHORT).await;
    let mut partial = tcp(&node).await;
    partial
        .write_all(
            b"POST /api/v1/login HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\n\
              Content-Length: 100\r\n\r\n{\"username\":",
        )
        .await
        .expect("write");
    let response = read_until_closed(&mut partial, WAIT).await;
    assert_eq!(status(&response), 408, "{response}");
    let body: Value = serde_json::from_str(response.split("\r\n\r\n").nth(1).unwrap_or(""))
        .unwrap_or_else(|e| panic!("a JSON error ({e}): {response}"));
    assert_eq!(body["error"]["code"], "bad_request", "{body}");
    assert_eq!(refused(&node, "body_timeout").await, 1);
    // A whole body still works.
    let r = common::register(&node, "whole", common::PASSWORD).await;
    assert_eq!(r.status(), 201);
}

#[tokio::test]
async fn a_content_length_over_the_limit_is_refused_413_before_the_body() {
    let node = Node::start().await;
    for path in ["/api/v1/register", "/api/v1/login", "/health"] {
        let mut huge = tcp(&node).await;
        let head = format!(
            "POST {path} HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\n\
             Content-Length: 99999999999\r\n\r\n"
        );
        huge.write_all(head.as_bytes()).await.expect("write");
        // Not one byte of body is sent: the answer comes from the header.
        let response = read_until_closed(&mut huge, WAIT).await;
        assert_eq!(status(&response), 413, "{path}: {response}");
        assert!(response.contains("too_large"), "{response}");
    }
    assert_eq!(refused(&node, "body_too_large").await, 3);
}

#[tokio::test]
async fn connections_over_the_address_and_node_caps_are_refused_until_one_closes() {
    let node = Node::start_with(&[
        ("TROUPE_HTTP__MAX_CONNECTIONS", "4"),
        ("TROUPE_HTTP__MAX_CONNECTIONS_PER_ADDRESS", "2"),
        // The held keep-alive connections must outlive the test.
        ("TROUPE_HTTP__HEADER_TIMEOUT_MS", "120000"),
    ])
    .await;
    // Two from 127.0.0.1: a keep-alive connection and a WebSocket, which
    // keeps its place after the upgrade. (Retried: the fixture's /health
    // polls may not have closed yet.)
    let a1 = hold(&node, [127, 0, 0, 1]).await;
    let ws = websocket_once_admitted(&node).await;
    let response = refused_at_once(&node, [127, 0, 0, 1]).await;
    assert!(response.contains("unavailable"), "{response}");
    // Two from 127.0.0.2 fill the node: 127.0.0.3 is refused too.
    let b1 = hold(&node, [127, 0, 0, 2]).await;
    let b2 = hold(&node, [127, 0, 0, 2]).await;
    refused_at_once(&node, [127, 0, 0, 3]).await;
    // One closes: a connection from another address gets in.
    drop(b1);
    let c = hold(&node, [127, 0, 0, 3]).await;
    // The WebSocket closes: 127.0.0.1 has a place again.
    drop(ws);
    let a2 = hold(&node, [127, 0, 0, 1]).await;
    drop((a1, a2, b2, c));
    assert!(refused(&node, "address_cap").await >= 1);
    assert!(refused(&node, "node_cap").await >= 1);
}

/// A connection from `source` that the node admitted: a keep-alive request
/// on it was answered 200, and it stays open. `None` when refused.
async fn try_hold(node: &Node, source: [u8; 4]) -> Option<TcpStream> {
    let mut tcp = tcp_from(node, source).await;
    if tcp
        .write_all(b"GET /health HTTP/1.1\r\nHost: t\r\n\r\n")
        .await
        .is_err()
    {
        return None;
    }
    let mut buf = [0u8; 4096];
    match tokio::time::timeout(WAIT, tcp.read(&mut buf)).await {
        Ok(Ok(n)) if n > 0 && status(&String::from_utf8_lossy(&buf[..n])) == 200 => Some(tcp),
        Ok(_) => None,
        Err(_) => panic!("no answer from the node within {WAIT:?}"),
    }
}

/// [`try_hold`] until admitted (a closed connection's place is given back
/// once the node sees the close).
async fn hold(node: &Node, source: [u8; 4]) -> TcpStream {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        if let Some(tcp) = try_hold(node, source).await {
            return tcp;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{source:?} still refused after {WAIT:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A WebSocket from 127.0.0.1, retried while the node answers 503.
async fn websocket_once_admitted(
    node: &Node,
) -> WebSocketStream<tokio_tungstenite::MaybeTlsStream<TcpStream>> {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        match tokio_tungstenite::connect_async(node.ws_url()).await {
            Ok((ws, _)) => return ws,
            Err(WsError::Http(r)) if r.status() == 503 => {}
            Err(e) => panic!("the upgrade failed: {e}"),
        }
        assert!(tokio::time::Instant::now() < deadline, "still refused");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A connection from `source` that the node refuses at once: a 503
/// without a request, then closed. The response.
async fn refused_at_once(node: &Node, source: [u8; 4]) -> String {
    let mut tcp = tcp_from(node, source).await;
    let response = read_until_closed(&mut tcp, WAIT).await;
    assert_eq!(status(&response), 503, "{source:?}: {response}");
    response
}

#[tokio::test]
async fn a_user_over_the_session_cap_gets_rate_limited_and_a_1008_close() {
    let node = Node::start_with(&[("TROUPE_HTTP__MAX_SESSIONS_PER_USER", "2")]).await;
    let token = account(&node, "tabs").await;
    let first = Client::connect(&node, "tabs", &token).await;
    let _second = Client::connect(&node, "tabs", &token).await;
    let url = format!("{}?token={token}", node.ws_url());
    let (mut third, _) = tokio_tungstenite::connect_async(&url)
        .await
        .expect("the upgrade itself is accepted");
    let mut error = None;
    let code = loop {
        match tokio::time::timeout(WAIT, third.next()).await {
            Ok(Some(Ok(Message::Text(t)))) => {
                let v: Value = serde_json::from_str(&t).expect("JSON");
                assert_ne!(v["type"], "session", "a third session started: {v}");
                if v["type"] == "error" {
                    error = Some(v);
                }
            }
            Ok(Some(Ok(Message::Close(frame)))) => break frame.map(|f| u16::from(f.code)),
            Ok(Some(Ok(_))) => {}
            other => panic!("no close frame: {other:?}"),
        }
    };
    let error = error.expect("an error frame before the close");
    assert_eq!(error["code"], "rate_limited", "{error}");
    assert_eq!(error["ref"], "session", "{error}");
    assert_eq!(code, Some(1008));
    // Another user is not concerned.
    let _other = Client::new_user(&node, "other").await;
    // One tab closes: the user may open one again.
    first.close().await;
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let (mut ws, _) = tokio_tungstenite::connect_async(&url)
            .await
            .expect("ws connects");
        let frame = tokio::time::timeout(WAIT, ws.next()).await;
        if let Ok(Some(Ok(Message::Text(t)))) = &frame {
            if t.contains("\"session\"") {
                break;
            }
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "still refused: {frame:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(refused(&node, "user_sessions").await >= 1);
}

/// Upgrades `/ws`, with `origin` if given; the HTTP status (101 on success).
async fn upgrade_with_origin(node: &Node, origin: Option<&str>) -> u16 {
    let mut request = node.ws_url().into_client_request().expect("a request");
    if let Some(origin) = origin {
        request
            .headers_mut()
            .insert("origin", origin.parse().expect("a header value"));
    }
    match tokio_tungstenite::connect_async(request).await {
        Ok((_, response)) => response.status().as_u16(),
        Err(WsError::Http(response)) => response.status().as_u16(),
        Err(e) => panic!("no HTTP answer to the upgrade: {e}"),
    }
}

#[tokio::test]
async fn an_upgrade_from_an_origin_not_allowed_is_forbidden() {
    let node = Node::start_with(&[(
        "TROUPE_HTTP__ALLOWED_ORIGINS",
        "https://chat.example.com,http://localhost:8080",
    )])
    .await;
    assert_eq!(
        upgrade_with_origin(&node, Some("https://evil.example")).await,
        403
    );
    assert_eq!(
        upgrade_with_origin(&node, Some("https://chat.example.com")).await,
        101
    );
    assert_eq!(
        upgrade_with_origin(&node, Some("http://localhost:8080")).await,
        101
    );
    assert_eq!(upgrade_with_origin(&node, None).await, 101);
    assert_eq!(refused(&node, "origin").await, 1);
    // The default allows every origin.
    let open = Node::start().await;
    assert_eq!(
        upgrade_with_origin(&open, Some("https://evil.example")).await,
        101
    );
}

/// A WebSocket opened by hand, so that the test can send frames no client
/// library would.
async fn raw_websocket(node: &Node) -> TcpStream {
    let mut tcp = tcp(node).await;
    tcp.write_all(
        b"GET /ws HTTP/1.1\r\nHost: t\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
          Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
    )
    .await
    .expect("write");
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        let n = tokio::time::timeout(WAIT, tcp.read(&mut byte))
            .await
            .expect("an upgrade answer")
            .expect("read");
        assert_eq!(n, 1, "closed during the upgrade");
        head.push(byte[0]);
    }
    let head = String::from_utf8_lossy(&head);
    assert_eq!(status(&head), 101, "{head}");
    tcp
}

/// Sends `frame` raw on a fresh WebSocket; the close code the node answers.
async fn close_code_after(node: &Node, frame: &[u8]) -> Option<u16> {
    let mut tcp = raw_websocket(node).await;
    tcp.write_all(frame).await.expect("write the frame");
    let mut ws = WebSocketStream::from_raw_socket(tcp, Role::Client, None).await;
    loop {
        match tokio::time::timeout(WAIT, ws.next()).await {
            Ok(Some(Ok(Message::Close(frame)))) => return frame.map(|f| u16::from(f.code)),
            Ok(Some(Ok(_))) => {}
            other => panic!("no close frame for {frame:02x?}: {other:?}"),
        }
    }
}

#[tokio::test]
async fn websocket_protocol_errors_close_with_1002_and_invalid_utf8_with_1007() {
    let node = Node::start().await;
    // Masked with the all-zero key: the payload goes as is.
    let unmasked_text = [0x81, 0x02, b'h', b'i'];
    let reserved_bit = [0xC1, 0x82, 0, 0, 0, 0, b'h', b'i'];
    let unknown_opcode = [0x83, 0x80, 0, 0, 0, 0];
    let continuation_first = [0x80, 0x82, 0, 0, 0, 0, b'h', b'i'];
    for frame in [
        &unmasked_text[..],
        &reserved_bit,
        &unknown_opcode,
        &continuation_first,
    ] {
        assert_eq!(
            close_code_after(&node, frame).await,
            Some(1002),
            "{frame:02x?}"
        );
    }
    let invalid_utf8 = [0x81, 0x82, 0, 0, 0, 0, 0xff, 0xfe];
    assert_eq!(close_code_after(&node, &invalid_utf8).await, Some(1007));
    assert_eq!(refused(&node, "ws_protocol").await, 4);
    assert_eq!(refused(&node, "ws_utf8").await, 1);
    // A well-formed connection is not affected.
    let _fine = Client::new_user(&node, "fine").await;
}

#[tokio::test]
async fn a_websocket_without_a_session_is_closed_with_1008_after_the_auth_timeout() {
    let node = Node::start_with(SHORT).await;
    let mut idle = Client::raw(&node).await;
    let code = loop {
        match tokio::time::timeout(WAIT, idle.next()).await {
            Ok(Some(Ok(Message::Close(frame)))) => break frame.map(|f| u16::from(f.code)),
            Ok(Some(Ok(_))) => {}
            other => panic!("not closed with a close frame: {other:?}"),
        }
    };
    assert_eq!(code, Some(1008));
    assert_eq!(refused(&node, "auth_timeout").await, 1);
    // An authenticated connection stays past the timeout.
    let mut chatty = Client::new_user(&node, "chatty").await;
    tokio::time::sleep(Duration::from_millis(2_000)).await;
    chatty
        .send(serde_json::json!({"type": "ping", "nonce": "still"}))
        .await;
    chatty.expect("pong").await;
}

/// A REST request whose store hangs is answered 503 after
/// `http.request_timeout_ms`, not held open; once the store is free again
/// the same request works. The hang is real: another connection holds a
/// lock on the rooms table (Postgres) or the database's write lock (SQLite).
#[tokio::test]
async fn a_request_whose_store_hangs_is_answered_503_after_the_request_timeout() {
    use sea_orm::{ConnectionTrait, Database, TransactionTrait};

    let node = Node::start_with(&[("TROUPE_HTTP__REQUEST_TIMEOUT_MS", "1s")]).await;
    let token = account(&node, "ann").await;
    let create = |name: &'static str| {
        http()
            .post(node.url("/api/v1/rooms"))
            .bearer_auth(&token)
            .json(&serde_json::json!({ "name": name }))
            .send()
    };

    let db = Database::connect(node.database_url())
        .await
        .expect("the node's database");
    let lock = db.begin().await.expect("a transaction");
    let statement = match db.get_database_backend() {
        sea_orm::DatabaseBackend::Postgres => "LOCK TABLE rooms IN ACCESS EXCLUSIVE MODE",
        // A write statement takes SQLite's one write lock until commit.
        _ => "DELETE FROM rooms WHERE name = ''",
    };
    lock.execute_unprepared(statement).await.expect("the lock");

    let started = std::time::Instant::now();
    let r = create("held").await.expect("an answer");
    assert_eq!(r.status(), 503, "{:?}", r.text().await);
    assert!(
        started.elapsed() < WAIT,
        "answered after {:?}",
        started.elapsed()
    );

    lock.rollback().await.expect("the lock released");
    let r = create("free").await.expect("an answer");
    assert_eq!(r.status(), 201, "{:?}", r.text().await);
}

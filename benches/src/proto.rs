//! What goes over the wire: the timestamped message bodies, troupe's frames
//! (PROTOCOL.md) and its REST account calls.

use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;

use anyhow::{anyhow, bail, Context};
use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::Message;

use crate::net::{post_json, Ws};

/// Every benchmark user has this password.
pub const PASSWORD: &str = "bench-password";

/// REST calls wait this long at most (password hashes queue on the server).
pub const REST_TIMEOUT: Duration = Duration::from_secs(120);

/// What a message body says about itself: `room:publisher:n:nanos[:padding]`,
/// with `nanos` counted from the generator's shared start instant.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stamp {
    pub room: u32,
    pub publisher: u32,
    pub n: u64,
    pub t_ns: u64,
}

/// Writes a body into `out` (cleared first).
pub fn write_body(out: &mut String, stamp: Stamp, padding: &str) {
    use std::fmt::Write;
    out.clear();
    let _ = write!(
        out,
        "{}:{}:{}:{}",
        stamp.room, stamp.publisher, stamp.n, stamp.t_ns
    );
    if !padding.is_empty() {
        out.push(':');
        out.push_str(padding);
    }
}

fn parse_u64(s: &[u8]) -> Option<u64> {
    if s.is_empty() || s.len() > 20 {
        return None;
    }
    let mut v: u64 = 0;
    for &b in s {
        if !b.is_ascii_digit() {
            return None;
        }
        v = v.checked_mul(10)?.checked_add(u64::from(b - b'0'))?;
    }
    Some(v)
}

/// Reads a body written by [`write_body`]; None for anything else.
pub fn parse_body(body: &str) -> Option<Stamp> {
    let mut parts = body.as_bytes().splitn(5, |&b| b == b':');
    let room = parse_u64(parts.next()?)?;
    let publisher = parse_u64(parts.next()?)?;
    let n = parse_u64(parts.next()?)?;
    let t_ns = parse_u64(parts.next()?)?;
    Some(Stamp {
        room: u32::try_from(room).ok()?,
        publisher: u32::try_from(publisher).ok()?,
        n,
        t_ns,
    })
}

/// The value of a string field `"key":"value"` of a flat JSON object, without
/// a full parse. Only for values without escapes (types, our bodies, rooms).
pub fn str_field<'a>(text: &'a str, key: &str) -> Option<&'a str> {
    let bytes = text.as_bytes();
    let mut from = 0;
    while let Some(pos) = text[from..].find(key) {
        let at = from + pos;
        let after = at + key.len();
        // `"key":"` with the quotes right around the key.
        if at > 0
            && bytes[at - 1] == b'"'
            && bytes.get(after) == Some(&b'"')
            && bytes.get(after + 1) == Some(&b':')
            && bytes.get(after + 2) == Some(&b'"')
        {
            let start = after + 3;
            let end = start + text[start..].find('"')?;
            return Some(&text[start..end]);
        }
        from = after;
    }
    None
}

/// The `type` of a server frame; the tag is written first, so this is cheap.
pub fn frame_type(text: &str) -> Option<&str> {
    if let Some(rest) = text.strip_prefix("{\"type\":\"") {
        return rest.find('"').map(|end| &rest[..end]);
    }
    str_field(text, "type")
}

/// A `send` frame; `client_id` is unique per sender (`c<n>`).
pub fn send_frame(out: &mut String, room: &str, body: &str, n: u64) {
    use std::fmt::Write;
    out.clear();
    let _ = write!(
        out,
        r#"{{"type":"send","room":"{room}","body":"{body}","client_id":"c{n}"}}"#
    );
}

/// Registers `username` (an existing one is fine) and logs in: the token.
pub async fn register_and_login(
    target: SocketAddr,
    source: Ipv4Addr,
    username: &str,
) -> anyhow::Result<String> {
    let creds = json!({"username": username, "password": PASSWORD}).to_string();
    let (status, body) = post_json(target, source, "/api/v1/register", &creds, REST_TIMEOUT)
        .await
        .context("register")?;
    if status != 201 && status != 409 {
        bail!("register {username}: HTTP {status}: {body}");
    }
    let (status, body) = post_json(target, source, "/api/v1/login", &creds, REST_TIMEOUT)
        .await
        .context("login")?;
    if status != 200 {
        bail!("login {username}: HTTP {status}: {body}");
    }
    let answer: Value = serde_json::from_str(&body).context("login answer")?;
    answer["token"]
        .as_str()
        .map(str::to_string)
        .ok_or_else(|| anyhow!("login {username}: no token in {body}"))
}

/// Reads frames until one of type `kind` (for which `accept` holds) arrives;
/// an `error` frame or a close first is an error. Bounded by `timeout`.
pub async fn expect_frame(
    ws: &mut Ws,
    kind: &str,
    accept: impl Fn(&str) -> bool,
    timeout: Duration,
) -> anyhow::Result<String> {
    let wait = async {
        loop {
            match ws.next().await {
                Some(Ok(Message::Text(text))) => {
                    let text = text.as_str();
                    match frame_type(text) {
                        Some(t) if t == kind && accept(text) => return Ok(text.to_string()),
                        Some("error") => bail!("waiting for {kind}: {text}"),
                        _ => {}
                    }
                }
                Some(Ok(Message::Close(frame))) => {
                    bail!("closed while waiting for {kind}: {frame:?}")
                }
                Some(Ok(_)) => {}
                Some(Err(e)) => bail!("socket error while waiting for {kind}: {e}"),
                None => bail!("connection ended while waiting for {kind}"),
            }
        }
    };
    tokio::time::timeout(timeout, wait)
        .await
        .map_err(|_| anyhow!("no {kind} frame within {timeout:?}"))?
}

/// After an authenticated upgrade: waits for `session`.
pub async fn await_session(ws: &mut Ws) -> anyhow::Result<()> {
    expect_frame(ws, "session", |_| true, Duration::from_secs(30)).await?;
    Ok(())
}

/// Joins `room` and waits for its `joined`.
pub async fn join(ws: &mut Ws, room: &str) -> anyhow::Result<()> {
    join_frame(ws, room).await.map(|_| ())
}

/// Joins `room`; its `joined` frame. A join answered `unavailable` (in a
/// cluster: a room moving, a node without quorum for a moment) is sent
/// again every 250 ms, for at most 30 s, as the protocol asks.
pub async fn join_frame(ws: &mut Ws, room: &str) -> anyhow::Result<String> {
    let frame = json!({"type": "join", "room": room}).to_string();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        ws.send(Message::text(frame.clone())).await?;
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        match expect_frame(ws, "joined", |t| str_field(t, "room") == Some(room), left).await {
            Ok(joined) => return Ok(joined),
            Err(e)
                if e.to_string().contains(r#""code":"unavailable""#)
                    && tokio::time::Instant::now() < deadline =>
            {
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
            Err(e) => return Err(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bodies_round_trip() {
        let stamp = Stamp {
            room: 3,
            publisher: 7,
            n: 12345,
            t_ns: 987_654_321,
        };
        let mut s = String::new();
        write_body(&mut s, stamp, "");
        assert_eq!(s, "3:7:12345:987654321");
        assert_eq!(parse_body(&s), Some(stamp));
        write_body(&mut s, stamp, "xxxx");
        assert_eq!(parse_body(&s), Some(stamp));
        assert_eq!(parse_body("hello"), None);
        assert_eq!(parse_body("1:2:3"), None);
        assert_eq!(parse_body("1:2:x:4"), None);
    }

    #[test]
    fn reads_troupe_frames_without_a_parser() {
        let m = r#"{"type":"message","room":"r","seq":4,"from":"u","body":"0:0:1:99","ts":1,"client_id":"c1"}"#;
        assert_eq!(frame_type(m), Some("message"));
        assert_eq!(str_field(m, "body"), Some("0:0:1:99"));
        assert_eq!(str_field(m, "room"), Some("r"));
        assert_eq!(str_field(m, "nope"), None);
        assert_eq!(frame_type(r#"{"seq":1,"type":"ack"}"#), Some("ack"));
        // A key inside a value is not a key.
        assert_eq!(str_field(r#"{"a":"body","body":"x"}"#, "body"), Some("x"));
        let mut f = String::new();
        send_frame(&mut f, "lobby", "0:0:1:2", 1);
        let v: Value = serde_json::from_str(&f).unwrap();
        assert_eq!(v["type"], "send");
        assert_eq!(v["client_id"], "c1");
        assert_eq!(v["body"], "0:0:1:2");
    }
}

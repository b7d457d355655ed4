//! Loopback-only addressing, source addresses taken in turn, TCP and
//! WebSocket connects, and a tiny HTTP/1.1 client for troupe's REST calls.

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use anyhow::{anyhow, bail, Context};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::WebSocketStream;

pub type Ws = WebSocketStream<TcpStream>;

/// Parses `http://127.0.0.1:8080`, `ws://127.0.0.1:9000/ws` or `127.0.0.1:9000`
/// into the address to connect to. Anything but a 127.x.x.x address (or
/// `localhost`) is refused: the generator only ever loads this machine.
pub fn loopback_addr(url: &str) -> anyhow::Result<SocketAddr> {
    let rest = match url.split_once("://") {
        Some((scheme, rest)) => {
            if !matches!(scheme, "http" | "ws") {
                bail!("unsupported scheme {scheme:?} in {url:?}: use http:// or ws://");
            }
            rest
        }
        None => url,
    };
    let authority = rest.split(['/', '?']).next().unwrap_or_default();
    let (host, port) = match authority.rsplit_once(':') {
        Some((host, port)) => (
            host,
            port.parse::<u16>()
                .with_context(|| format!("bad port in {url:?}"))?,
        ),
        None => (authority, 80),
    };
    let ip = if host.eq_ignore_ascii_case("localhost") {
        Ipv4Addr::LOCALHOST
    } else {
        host.parse::<Ipv4Addr>().map_err(|_| {
            anyhow!("refusing target {host:?}: only 127.x.x.x addresses (or localhost) are allowed")
        })?
    };
    if ip.octets()[0] != 127 {
        bail!("refusing target {ip}: only loopback 127.x.x.x addresses are allowed");
    }
    Ok(SocketAddr::new(ip.into(), port))
}

/// Client source addresses 127.0.0.1 ..= 127.0.0.N, handed out in turn, so
/// that many connections never run out of ephemeral ports.
pub struct Sources {
    ips: Vec<Ipv4Addr>,
    next: AtomicUsize,
}

impl Sources {
    pub fn new(count: usize) -> Self {
        let count = count.clamp(1, 254);
        Self {
            ips: (1..=count as u8)
                .map(|i| Ipv4Addr::new(127, 0, 0, i))
                .collect(),
            next: AtomicUsize::new(0),
        }
    }

    pub fn pick(&self) -> Ipv4Addr {
        let i = self.next.fetch_add(1, Ordering::Relaxed);
        self.ips[i % self.ips.len()]
    }
}

/// A TCP connection from `source` (port chosen by the kernel) with NODELAY.
pub async fn connect_tcp(target: SocketAddr, source: Ipv4Addr) -> anyhow::Result<TcpStream> {
    let socket = TcpSocket::new_v4()?;
    socket
        .bind(SocketAddr::new(source.into(), 0))
        .with_context(|| format!("bind {source}:0"))?;
    let stream = socket
        .connect(target)
        .await
        .with_context(|| format!("connect {target} from {source}"))?;
    stream.set_nodelay(true)?;
    Ok(stream)
}

/// Client-side socket buffers: `read_buffer` bytes read at a time.
pub fn client_config(read_buffer: usize) -> WebSocketConfig {
    WebSocketConfig::default()
        .read_buffer_size(read_buffer)
        .write_buffer_size(16 * 1024)
        .max_write_buffer_size(16 * 1024 * 1024)
        .max_message_size(Some(1 << 20))
        .max_frame_size(Some(1 << 20))
}

/// Opens a WebSocket to `ws://target{path}` from `source`.
pub async fn connect_ws(
    target: SocketAddr,
    source: Ipv4Addr,
    path: &str,
    config: WebSocketConfig,
) -> anyhow::Result<Ws> {
    let tcp = connect_tcp(target, source).await?;
    let url = format!("ws://{target}{path}");
    let (ws, _response) = tokio_tungstenite::client_async_with_config(url, tcp, Some(config))
        .await
        .with_context(|| format!("WebSocket handshake with {target}"))?;
    Ok(ws)
}

/// `POST path` with a JSON body; answers (status, body). One connection per
/// request (`Connection: close`), bounded by `timeout`.
pub async fn post_json(
    target: SocketAddr,
    source: Ipv4Addr,
    path: &str,
    body: &str,
    timeout: Duration,
) -> anyhow::Result<(u16, String)> {
    request(target, source, "POST", path, Some(body), timeout).await
}

/// `GET path`; answers (status, body). One connection, bounded by `timeout`.
pub async fn get(
    target: SocketAddr,
    source: Ipv4Addr,
    path: &str,
    timeout: Duration,
) -> anyhow::Result<(u16, String)> {
    request(target, source, "GET", path, None, timeout).await
}

async fn request(
    target: SocketAddr,
    source: Ipv4Addr,
    method: &str,
    path: &str,
    body: Option<&str>,
    timeout: Duration,
) -> anyhow::Result<(u16, String)> {
    let exchange = async {
        let mut stream = connect_tcp(target, source).await?;
        let request = match body {
            Some(body) => format!(
                "{method} {path} HTTP/1.1\r\nHost: {target}\r\nContent-Type: application/json\r\n\
                 Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            ),
            None => {
                format!("{method} {path} HTTP/1.1\r\nHost: {target}\r\nConnection: close\r\n\r\n")
            }
        };
        stream.write_all(request.as_bytes()).await?;
        let mut answer = Vec::new();
        stream.read_to_end(&mut answer).await?;
        parse_response(&answer)
    };
    tokio::time::timeout(timeout, exchange)
        .await
        .map_err(|_| anyhow!("{method} {path}: no answer within {timeout:?}"))?
}

/// One kept-alive HTTP/1.1 connection for many requests in turn (answers
/// with a `Content-Length`, as troupe's REST answers are).
pub struct HttpConn {
    target: SocketAddr,
    stream: tokio::io::BufReader<TcpStream>,
}

impl HttpConn {
    pub async fn connect(target: SocketAddr, source: Ipv4Addr) -> anyhow::Result<HttpConn> {
        Ok(HttpConn {
            target,
            stream: tokio::io::BufReader::new(connect_tcp(target, source).await?),
        })
    }

    /// `method path` with an optional bearer token and JSON body; (status,
    /// body), bounded by `timeout`. An error leaves the connection unusable.
    pub async fn request(
        &mut self,
        method: &str,
        path: &str,
        token: Option<&str>,
        body: Option<&str>,
        timeout: Duration,
    ) -> anyhow::Result<(u16, String)> {
        use std::fmt::Write as _;
        use tokio::io::AsyncBufReadExt;
        let mut head = format!("{method} {path} HTTP/1.1\r\nHost: {}\r\n", self.target);
        if let Some(token) = token {
            let _ = write!(head, "Authorization: Bearer {token}\r\n");
        }
        let body = body.unwrap_or("");
        if !body.is_empty() {
            head.push_str("Content-Type: application/json\r\n");
        }
        let _ = write!(head, "Content-Length: {}\r\n\r\n{body}", body.len());
        let exchange = async {
            self.stream.get_mut().write_all(head.as_bytes()).await?;
            let mut line = String::new();
            self.stream.read_line(&mut line).await?;
            let status = line
                .split(' ')
                .nth(1)
                .and_then(|s| s.parse::<u16>().ok())
                .ok_or_else(|| anyhow!("bad HTTP status line: {line:?}"))?;
            let mut length = 0usize;
            loop {
                line.clear();
                if self.stream.read_line(&mut line).await? == 0 {
                    bail!("connection closed in the answer's head");
                }
                let header = line.trim_end();
                if header.is_empty() {
                    break;
                }
                let lower = header.to_ascii_lowercase();
                if let Some(v) = lower.strip_prefix("content-length:") {
                    length = v.trim().parse().context("content-length")?;
                } else if lower.starts_with("transfer-encoding:") {
                    bail!("a chunked answer on a kept-alive connection is not supported");
                }
            }
            let mut answer = vec![0; length];
            self.stream.read_exact(&mut answer).await?;
            Ok((status, String::from_utf8_lossy(&answer).into_owned()))
        };
        tokio::time::timeout(timeout, exchange)
            .await
            .map_err(|_| anyhow!("{method} {path}: no answer within {timeout:?}"))?
    }
}

fn parse_response(raw: &[u8]) -> anyhow::Result<(u16, String)> {
    let text = String::from_utf8_lossy(raw);
    let (head, body) = text
        .split_once("\r\n\r\n")
        .ok_or_else(|| anyhow!("truncated HTTP answer"))?;
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse::<u16>().ok())
        .ok_or_else(|| anyhow!("bad HTTP status line: {:?}", head.lines().next()))?;
    let chunked = head.lines().any(|line| {
        let line = line.to_ascii_lowercase();
        line.starts_with("transfer-encoding:") && line.contains("chunked")
    });
    let body = if chunked {
        dechunk(body)
    } else {
        body.to_string()
    };
    Ok((status, body))
}

fn dechunk(mut body: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = body.split_once("\r\n") {
        let Ok(size) = usize::from_str_radix(size.trim(), 16) else {
            break;
        };
        if size == 0 || rest.len() < size {
            break;
        }
        out.push_str(&rest[..size]);
        body = rest[size..].trim_start_matches("\r\n");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_loopback_targets() {
        assert_eq!(
            loopback_addr("http://127.0.0.1:8080").unwrap(),
            "127.0.0.1:8080".parse().unwrap()
        );
        assert_eq!(
            loopback_addr("ws://127.3.2.1:9000/ws?room=a").unwrap(),
            "127.3.2.1:9000".parse().unwrap()
        );
        assert_eq!(
            loopback_addr("localhost:1").unwrap(),
            "127.0.0.1:1".parse().unwrap()
        );
        assert!(loopback_addr("http://10.0.0.1:8080").is_err());
        assert!(loopback_addr("http://example.com:8080").is_err());
        assert!(loopback_addr("http://[::1]:8080").is_err());
        assert!(loopback_addr("https://127.0.0.1:8080").is_err());
    }

    #[test]
    fn sources_round_robin() {
        let s = Sources::new(2);
        assert_eq!(s.pick(), Ipv4Addr::new(127, 0, 0, 1));
        assert_eq!(s.pick(), Ipv4Addr::new(127, 0, 0, 2));
        assert_eq!(s.pick(), Ipv4Addr::new(127, 0, 0, 1));
    }

    #[test]
    fn http_answers() {
        let (status, body) =
            parse_response(b"HTTP/1.1 201 Created\r\ncontent-length: 2\r\n\r\n{}").unwrap();
        assert_eq!((status, body.as_str()), (201, "{}"));
        let (status, body) = parse_response(
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n",
        )
        .unwrap();
        assert_eq!((status, body.as_str()), (200, "abcde"));
    }
}

//! The accept loop: caps on open TCP connections (per node and per IP
//! address, counted from accept to close, WebSockets included), then one
//! hyper HTTP/1 connection per socket with a header read timeout, upgrades
//! allowed (`/ws`), and a graceful stop when the node shuts down.

use std::collections::HashMap;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::Router;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tower::ServiceExt;
use troupe_actors::metrics::{self, Refusal};

use crate::config::HttpSection;

/// Serves `router` on `listener` until `shutdown` fires; then stops
/// accepting, lets requests in flight finish, and returns once every plain
/// HTTP connection is closed (upgraded ones belong to the WebSocket tasks).
pub async fn serve(
    listener: TcpListener,
    router: Router,
    config: &HttpSection,
    shutdown: CancellationToken,
) -> io::Result<()> {
    let caps = Arc::new(Caps::new(
        config.max_connections,
        config.max_connections_per_address,
    ));
    let mut http = http1::Builder::new();
    // hyper starts this timer when it starts reading a request head: at the
    // connection's start and after each response, so it also closes
    // connections that send nothing and idle keep-alive ones.
    http.timer(TokioTimer::new())
        .header_read_timeout(config.header_timeout());
    let http = Arc::new(http);
    let tasks = TaskTracker::new();
    loop {
        let (tcp, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    // Out of file descriptors and the like: pause, not spin.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = shutdown.cancelled() => break,
        };
        let permit = match caps.admit(peer.ip()) {
            Ok(permit) => permit,
            Err(reason) => {
                refuse(tcp, peer, reason);
                continue;
            }
        };
        // Chat frames are small and latency matters: no Nagle (with the peer's
        // delayed ACK it holds small writes back by ~40 ms).
        if let Err(e) = tcp.set_nodelay(true) {
            tracing::debug!(error = %e, "TCP_NODELAY");
        }
        let io = Counted {
            tcp,
            _permit: permit,
        };
        tasks.spawn(connection(
            io,
            peer,
            router.clone(),
            http.clone(),
            shutdown.clone(),
        ));
    }
    drop(listener);
    tasks.close();
    tasks.wait().await;
    Ok(())
}

async fn connection(
    io: Counted,
    peer: SocketAddr,
    router: Router,
    http: Arc<http1::Builder>,
    shutdown: CancellationToken,
) {
    let service = hyper::service::service_fn(move |request: hyper::Request<Incoming>| {
        let mut request = request.map(Body::new);
        request.extensions_mut().insert(ConnectInfo(peer));
        router.clone().oneshot(request)
    });
    let conn = http
        .serve_connection(TokioIo::new(io), service)
        .with_upgrades();
    tokio::pin!(conn);
    let ended = tokio::select! {
        ended = conn.as_mut() => ended,
        _ = shutdown.cancelled() => {
            conn.as_mut().graceful_shutdown();
            conn.await
        }
    };
    if let Err(e) = ended {
        if e.is_timeout() {
            metrics::refused(Refusal::HeaderTimeout);
            tracing::debug!(%peer, "no complete request header in time: closed");
        } else {
            tracing::debug!(%peer, error = %e, "HTTP connection ended with an error");
        }
    }
}

/// Over a cap: a 503 if the socket takes it at once (the client has not
/// spoken yet, so nothing waits to be read), then closed. Never waits.
fn refuse(tcp: TcpStream, peer: SocketAddr, reason: Refusal) {
    metrics::refused(reason);
    tracing::debug!(%peer, ?reason, "connection refused: over the cap");
    const BODY: &str =
        r#"{"error":{"code":"unavailable","message":"too many connections; try again later"}}"#;
    let response = format!(
        "HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\n\
         content-length: {}\r\nconnection: close\r\nretry-after: 1\r\n\r\n{BODY}",
        BODY.len()
    );
    let _ = tcp.try_write(response.as_bytes());
}

/// The connection caps. Hand-written: tower's concurrency limits count
/// requests, not sockets, and an upgraded WebSocket must keep its place
/// until it closes; the permit rides inside the socket for that.
struct Caps {
    max_total: usize,
    max_per_address: usize,
    total: AtomicUsize,
    per_address: Mutex<HashMap<IpAddr, usize>>,
}

impl Caps {
    fn new(max_total: usize, max_per_address: usize) -> Self {
        Caps {
            max_total,
            max_per_address,
            total: AtomicUsize::new(0),
            per_address: Mutex::new(HashMap::new()),
        }
    }

    /// Only the accept loop admits, so check-then-add does not race.
    fn admit(self: &Arc<Self>, ip: IpAddr) -> Result<Permit, Refusal> {
        if self.max_total > 0 && self.total.load(Ordering::Relaxed) >= self.max_total {
            return Err(Refusal::NodeCap);
        }
        let ip = if self.max_per_address > 0 {
            let mut per = self.per_address.lock().unwrap_or_else(|e| e.into_inner());
            let n = per.entry(ip).or_default();
            if *n >= self.max_per_address {
                return Err(Refusal::AddressCap);
            }
            *n += 1;
            Some(ip)
        } else {
            None
        };
        self.total.fetch_add(1, Ordering::Relaxed);
        Ok(Permit {
            caps: self.clone(),
            ip,
        })
    }
}

/// One admitted connection; gives its place back when dropped.
struct Permit {
    caps: Arc<Caps>,
    /// Counted per address (unset when that cap is off).
    ip: Option<IpAddr>,
}

impl Drop for Permit {
    fn drop(&mut self) {
        self.caps.total.fetch_sub(1, Ordering::Relaxed);
        if let Some(ip) = self.ip {
            let mut per = self
                .caps
                .per_address
                .lock()
                .unwrap_or_else(|e| e.into_inner());
            if let Some(n) = per.get_mut(&ip) {
                *n -= 1;
                if *n == 0 {
                    per.remove(&ip);
                }
            }
        }
    }
}

/// A socket that holds its permit: hyper hands it to the WebSocket task on
/// an upgrade, so the connection counts until the socket is dropped.
struct Counted {
    tcp: TcpStream,
    _permit: Permit,
}

impl AsyncRead for Counted {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.tcp).poll_read(cx, buf)
    }
}

impl AsyncWrite for Counted {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.tcp).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.tcp).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.tcp).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.tcp).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.tcp.is_write_vectored()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn caps_refuse_over_the_limit_and_admit_again_after_a_close() {
        let caps = Arc::new(Caps::new(3, 2));
        let a: IpAddr = "127.0.0.1".parse().unwrap();
        let b: IpAddr = "127.0.0.2".parse().unwrap();
        let a1 = caps.admit(a).unwrap();
        let _a2 = caps.admit(a).unwrap();
        assert_eq!(caps.admit(a).err(), Some(Refusal::AddressCap));
        let _b1 = caps.admit(b).unwrap();
        assert_eq!(caps.admit(b).err(), Some(Refusal::NodeCap));
        drop(a1);
        let _b2 = caps.admit(b).unwrap();
        assert_eq!(caps.total.load(Ordering::Relaxed), 3);
    }

    #[test]
    fn zero_means_no_cap() {
        let caps = Arc::new(Caps::new(0, 0));
        let ip: IpAddr = "::1".parse().unwrap();
        let permits: Vec<_> = (0..100).map(|_| caps.admit(ip).unwrap()).collect();
        assert_eq!(caps.total.load(Ordering::Relaxed), 100);
        drop(permits);
        assert_eq!(caps.total.load(Ordering::Relaxed), 0);
        assert!(caps.per_address.lock().unwrap().is_empty());
    }
}

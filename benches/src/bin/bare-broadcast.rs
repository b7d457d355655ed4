//! `bare-broadcast`: the baseline. A minimal broadcast server on tokio and
//! tokio-tungstenite, no auth and no persistence: `GET /ws?room=R` (or, without
//! `room`, a first text frame naming the room); every text frame a client sends
//! goes to every client of its room, the sender included. It is the ceiling of
//! this stack on this machine.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use clap::Parser;
use futures_util::{SinkExt, StreamExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::broadcast;
use tokio_tungstenite::tungstenite::handshake::server::{ErrorResponse, Request, Response};
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, WebSocketConfig};
use tokio_tungstenite::tungstenite::{Message, Utf8Bytes};

#[derive(Parser, Clone)]
#[command(
    name = "bare-broadcast",
    about = "Minimal tokio-tungstenite broadcast server: the baseline of troupe's benchmarks"
)]
struct Cli {
    /// Listen address.
    #[arg(long, default_value = "127.0.0.1:9000")]
    listen: SocketAddr,
    /// Tokio worker threads (default: the CPUs it may run on).
    #[arg(long)]
    threads: Option<usize>,
    /// Frames queued per room; a client that falls this far behind is closed (4008).
    #[arg(long, default_value_t = 16_384)]
    queue: usize,
    /// Largest frame, bytes (larger: closed with 1009).
    #[arg(long, default_value_t = 64 * 1024)]
    max_frame: usize,
    /// tungstenite's read buffer per connection, bytes (troupe read with
    /// 4 KiB until it went to 512 bytes; kept at 4 KiB here by default so
    /// that the baseline stays comparable with earlier runs).
    #[arg(long, default_value_t = 4 * 1024)]
    read_buffer: usize,
}

/// Socket buffers for many idle connections: `read_buffer` (4 KiB by default;
/// tungstenite's default of 128 KiB costs ~128 KiB per idle connection),
/// 16 KiB write buffer, as troupe.
fn socket_config(max_frame: usize, read_buffer: usize) -> WebSocketConfig {
    WebSocketConfig::default()
        .read_buffer_size(read_buffer)
        .write_buffer_size(16 * 1024)
        .max_write_buffer_size(4 * 1024 * 1024)
        .max_message_size(Some(max_frame))
        .max_frame_size(Some(max_frame))
}

type Rooms = Arc<Mutex<HashMap<String, broadcast::Sender<Utf8Bytes>>>>;

fn room_sender(rooms: &Rooms, name: &str, queue: usize) -> broadcast::Sender<Utf8Bytes> {
    let mut rooms = rooms.lock().unwrap_or_else(|e| e.into_inner());
    // Forget rooms nobody listens to any more.
    if rooms.len() > 1024 {
        rooms.retain(|_, tx| tx.receiver_count() > 0);
    }
    rooms
        .entry(name.to_string())
        .or_insert_with(|| broadcast::channel(queue).0)
        .clone()
}

fn room_of(uri: &str) -> Option<String> {
    let query = uri.split_once('?')?.1;
    query.split('&').find_map(|kv| {
        let (k, v) = kv.split_once('=')?;
        (k == "room" && !v.is_empty()).then(|| v.to_string())
    })
}

fn main() {
    let cli = Cli::parse();
    let threads = cli
        .threads
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
        .max(1);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(threads)
        .enable_all()
        .build()
        .expect("tokio runtime");
    if let Err(e) = runtime.block_on(serve(cli, threads)) {
        eprintln!("bare-broadcast: {e}");
        std::process::exit(1);
    }
}

async fn serve(cli: Cli, threads: usize) -> std::io::Result<()> {
    let listener = TcpListener::bind(cli.listen).await?;
    eprintln!(
        "bare-broadcast: listening on ws://{}/ws?room=R ({threads} thread(s))",
        listener.local_addr()?
    );
    let rooms: Rooms = Arc::new(Mutex::new(HashMap::new()));
    let mut shutdown = Box::pin(shutdown_signal());
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            _ = &mut shutdown => {
                eprintln!("bare-broadcast: stopping");
                return Ok(());
            }
        };
        match accepted {
            Ok((stream, _peer)) => {
                let rooms = rooms.clone();
                let cli = cli.clone();
                tokio::spawn(async move {
                    let _ = stream.set_nodelay(true);
                    connection(stream, rooms, cli.queue, cli.max_frame, cli.read_buffer).await;
                });
            }
            // Out of file descriptors and the like: wait a little, keep serving.
            Err(_) => tokio::time::sleep(Duration::from_millis(10)).await,
        }
    }
}

async fn shutdown_signal() {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .expect("SIGTERM handler");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}

// The handshake callback's error type is tungstenite's, large or not.
#[allow(clippy::result_large_err)]
async fn connection(
    stream: TcpStream,
    rooms: Rooms,
    queue: usize,
    max_frame: usize,
    read_buffer: usize,
) {
    // The room is subscribed to before the 101 answer goes out, so a client
    // that has its answer already receives everything sent after it.
    let mut subscription: Option<(broadcast::Sender<Utf8Bytes>, broadcast::Receiver<Utf8Bytes>)> =
        None;
    let callback = |request: &Request, response: Response| -> Result<Response, ErrorResponse> {
        if let Some(room) = room_of(&request.uri().to_string()) {
            let tx = room_sender(&rooms, &room, queue);
            let rx = tx.subscribe();
            subscription = Some((tx, rx));
        }
        Ok(response)
    };
    let Ok(ws) = tokio_tungstenite::accept_hdr_async_with_config(
        stream,
        callback,
        Some(socket_config(max_frame, read_buffer)),
    )
    .await
    else {
        return;
    };
    let (mut sink, mut source) = ws.split();
    let (tx, rx) = match subscription {
        Some(s) => s,
        None => loop {
            // No ?room=: the first text frame names it.
            match source.next().await {
                Some(Ok(Message::Text(name))) => {
                    let tx = room_sender(&rooms, name.as_str().trim(), queue);
                    let rx = tx.subscribe();
                    break (tx, rx);
                }
                Some(Ok(Message::Close(_))) | Some(Err(_)) | None => return,
                Some(Ok(_)) => {}
            }
        },
    };
    let mut writer = tokio::spawn(async move {
        let mut rx = rx;
        loop {
            let first = match rx.recv().await {
                Ok(frame) => frame,
                Err(broadcast::error::RecvError::Closed) => return sink,
                Err(broadcast::error::RecvError::Lagged(_)) => {
                    let _ = sink
                        .send(Message::Close(Some(CloseFrame {
                            code: CloseCode::from(4008),
                            reason: "slow consumer".into(),
                        })))
                        .await;
                    return sink;
                }
            };
            if sink.feed(Message::Text(first)).await.is_err() {
                return sink;
            }
            // Everything already queued goes out with one flush.
            let mut batch = 0;
            while batch < 256 {
                match rx.try_recv() {
                    Ok(frame) => {
                        if sink.feed(Message::Text(frame)).await.is_err() {
                            return sink;
                        }
                        batch += 1;
                    }
                    Err(broadcast::error::TryRecvError::Empty) => break,
                    Err(broadcast::error::TryRecvError::Closed) => return sink,
                    Err(broadcast::error::TryRecvError::Lagged(_)) => {
                        let _ = sink
                            .send(Message::Close(Some(CloseFrame {
                                code: CloseCode::from(4008),
                                reason: "slow consumer".into(),
                            })))
                            .await;
                        return sink;
                    }
                }
            }
            if sink.flush().await.is_err() {
                return sink;
            }
        }
    });
    loop {
        tokio::select! {
            next = source.next() => match next {
                Some(Ok(Message::Text(text))) => {
                    let _ = tx.send(text);
                }
                Some(Ok(Message::Close(_))) | Some(Err(_)) | None => break,
                Some(Ok(_)) => {} // binary is ignored; pings are answered by tungstenite
            },
            // The writer stopped (slow consumer, or the socket broke).
            _ = &mut writer => return,
        }
    }
    writer.abort();
}

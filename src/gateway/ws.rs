//! `GET /ws`: the upgrade, then one gateway task per connection that owns
//! the socket, both ways. Before authentication it answers `auth`, `resume`,
//! `ping` and the account line commands itself; afterwards every frame goes
//! to the connection's Session actor. The same task drains the outbox to the
//! socket: one task per connection, not a reader and a writer, so an idle
//! connection holds one task's state and no lock between two socket halves.

use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::time::Duration;

use axum::extract::{ConnectInfo, Query, Request, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use futures_util::{SinkExt, StreamExt};
use hyper_util::rt::TokioIo;
use ractor::ActorRef;
use tokio_tungstenite::tungstenite::error::ProtocolError;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, Role, WebSocketConfig};
use tokio_tungstenite::tungstenite::{Error as WsError, Message, Utf8Bytes};
use tokio_tungstenite::WebSocketStream;
use tokio_util::sync::WaitForCancellationFuture;
use tracing::Instrument;
use troupe_actors::ask;
use troupe_actors::frames::{ChatError, ClientFrame, ErrorCode, ServerFrame};
use troupe_actors::metrics::{self, Refusal};
use troupe_actors::outbox::{Outbound, Outbox, OutboxReceiver};
use troupe_actors::rate_limits::Kind;
use troupe_actors::session::supervisor::SessionSupervisorMsg;
use troupe_actors::session::{ResumeRequest, SessionMsg};
use troupe_actors::store::TokenInfo;

use super::api::responses::{BadRequest, ErrorBody, Unavailable};
use super::lines::{self, Line};
use super::origin;
use super::rest::{bearer_token, ApiError};
use crate::app::App;

type Socket = WebSocketStream<TokioIo<hyper::upgrade::Upgraded>>;

/// tungstenite's read buffer: allocated when the socket is made and kept for
/// its life, so it is paid by every idle connection. Client frames are small
/// (a `send` is ~100-300 bytes); a larger one is read in several reads.
const READ_BUFFER: usize = 512;

/// Items taken from the outbox per socket flush.
const MAX_BATCH: usize = 256;

/// Socket buffers sized for many idle connections, not for bulk throughput.
/// The write buffer is a target, not an allocation: frames are gathered up to
/// it before a socket write.
fn socket_config(app: &App) -> WebSocketConfig {
    let max = app.config.limits.max_frame_bytes;
    WebSocketConfig::default()
        .read_buffer_size(READ_BUFFER)
        .write_buffer_size(16 * 1024)
        .max_write_buffer_size(4 * 1024 * 1024)
        .max_message_size(Some(max))
        .max_frame_size(Some(max))
}

/// The chat connection: a WebSocket (version 13) whose text frames are the
/// JSON frames of `/api/frames.schema.json`. Authenticate with a bearer
/// token (header or `token`), or later with an `auth` or `resume` frame.
#[utoipa::path(
    get,
    path = "/ws",
    operation_id = "websocket",
    tag = "websocket",
    security((), ("bearer" = [])),
    params(
        ("token" = Option<String>, Query, description = "A session token, for clients that cannot set headers"),
        ("live" = Option<bool>, Query, description = "`1`: a new session goes live at once rather than at its first frame"),
    ),
    responses(
        (status = 101, description = "Switching to the WebSocket protocol"),
        (status = 400, response = BadRequest),
        (status = 401, description = "`unauthorized`: the token given is unknown or expired", body = ErrorBody),
        (status = 403, description = "`forbidden`: the Origin is not in `http.allowed_origins`", body = ErrorBody),
        (status = 503, response = Unavailable),
    )
)]
pub async fn upgrade(
    State(app): State<App>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Query(params): Query<HashMap<String, String>>,
    mut request: Request,
) -> Response {
    let headers = request.headers();
    let request_id = headers.get("x-request-id").cloned();
    let is_upgrade = headers
        .get(header::UPGRADE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case("websocket"));
    let version_ok = headers
        .get(header::SEC_WEBSOCKET_VERSION)
        .is_some_and(|v| v.as_bytes() == b"13");
    let Some(key) = headers.get(header::SEC_WEBSOCKET_KEY).cloned() else {
        return ApiError(ChatError::bad_request(
            "a WebSocket upgrade is expected here",
        ))
        .into_response();
    };
    if !is_upgrade || !version_ok {
        return ApiError(ChatError::bad_request(
            "a WebSocket (version 13) upgrade is expected here",
        ))
        .into_response();
    }
    if app.shutdown.is_cancelled() {
        return ApiError(ChatError::unavailable("the node is shutting down")).into_response();
    }
    if !origin::allowed(
        &app.config.http.allowed_origins,
        headers.get(header::ORIGIN),
    ) {
        metrics::refused(Refusal::Origin);
        tracing::info!(%peer, origin = ?headers.get(header::ORIGIN), "upgrade from an origin not allowed");
        return ApiError(ChatError::forbidden(
            "this origin may not open a WebSocket here (http.allowed_origins)",
        ))
        .into_response();
    }
    let live = match live_param(params.get("live").map(String::as_str)) {
        Ok(live) => live,
        Err(e) => return ApiError(e).into_response(),
    };
    let token = bearer_token(headers)
        .map(str::to_string)
        .or_else(|| params.get("token").cloned());
    let auth = match token {
        Some(token) => match app.accounts.authenticate(&token).await {
            Ok(info) => Some((info, token)),
            Err(e) => return ApiError(e).into_response(),
        },
        None => None,
    };
    let Some(on_upgrade) = request
        .extensions_mut()
        .remove::<hyper::upgrade::OnUpgrade>()
    else {
        return ApiError(ChatError::bad_request("this connection cannot be upgraded"))
            .into_response();
    };
    let accept = derive_accept_key(key.as_bytes());
    let tracker = app.connections.clone();
    // Boxed: the task lives as long as the connection, and a future keeps
    // its own slot for every value it captures or takes, even once moved on.
    let start = Box::new(Start {
        app,
        auth,
        peer,
        live,
    });
    // Every log line of this connection carries the node, the peer and the
    // upgrade's request id, and once it has a session, the user and the
    // session id. A root span: as a child it would keep the request's span
    // (and its fields) alive for the connection's life.
    let request_id = request_id
        .as_ref()
        .and_then(|v| v.to_str().ok())
        .unwrap_or("-");
    let span = tracing::info_span!(
        parent: None,
        "ws",
        node = %start.app.node_name(),
        peer = %start.peer,
        request_id = %request_id,
        user = tracing::field::Empty,
        session = tracing::field::Empty,
    );
    let task = async move {
        match on_upgrade.await {
            // Boxed: an argument keeps its slot in the task for the
            // connection's life (48 bytes; a pointer so).
            Ok(upgraded) => run(start, Box::new(upgraded)).await,
            Err(e) => tracing::debug!(error = %e, "upgrade failed"),
        }
    }
    .instrument(span);
    tracker.spawn(task);
    let mut response = StatusCode::SWITCHING_PROTOCOLS.into_response();
    let h = response.headers_mut();
    h.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
    h.insert(header::CONNECTION, HeaderValue::from_static("Upgrade"));
    if let Ok(accept) = HeaderValue::from_str(&accept) {
        h.insert(header::SEC_WEBSOCKET_ACCEPT, accept);
    }
    response
}

/// `?live=`: whether a session not started by `resume` goes live at once
/// instead of at the connection's first frame.
fn live_param(value: Option<&str>) -> Result<bool, ChatError> {
    match value {
        None | Some("0") | Some("false") => Ok(false),
        Some("1") | Some("true") => Ok(true),
        Some(other) => Err(ChatError::bad_request(format!(
            "live={other}: expected 1 or 0 (true or false)"
        ))),
    }
}

/// What a connection task starts from.
struct Start {
    app: App,
    auth: Option<(TokenInfo, String)>,
    peer: SocketAddr,
    live: bool,
}

impl Start {
    /// Frees the box now: a plain `*start` frees it when the connection ends.
    /// (Boxed although small: the task keeps an argument's slot for its life,
    /// ~130 bytes unboxed.)
    #[allow(clippy::boxed_local)]
    fn unbox(self: Box<Self>) -> Self {
        *self
    }
}

/// One connection: what it knows, and what it answers before its session.
struct Connection {
    app: App,
    peer: SocketAddr,
    outbox: Outbox,
    session: Option<ActorRef<SessionMsg>>,
    /// The login token this connection authenticated with, for `/logout`.
    token: Option<String>,
    /// A close frame is queued: it ends the connection once written.
    closing: bool,
    /// `?live=1`: a session started by a token or `auth` goes live at once.
    /// Otherwise it stays pending until the first frame after `session`,
    /// with no deadline, so that a `resume` replays before anything live.
    live: bool,
}

/// How a connection ends.
enum End {
    /// Send this close frame (what was queued before it is written).
    Close(u16, &'static str),
    /// The node is shutting down: write what is queued, then close with 1012.
    Shutdown,
    /// The client left or the session is gone: close without writing what is queued.
    Stop,
    /// The socket is gone: nothing more to write.
    Gone,
}

/// What the connection task does next.
enum Next {
    Read(Option<Result<Message, WsError>>),
    Write(VecDeque<Outbound>),
    /// The authentication deadline passed, or the queued close frame did not
    /// come out in time.
    Deadline,
}

async fn run(start: Box<Start>, upgraded: Box<hyper::upgrade::Upgraded>) {
    let _open = metrics::track(&metrics::CONNECTIONS);
    // Boxed: only awaited here, yet inline it sized the whole task.
    let mut socket = Box::pin(WebSocketStream::from_raw_socket(
        TokioIo::new(*upgraded),
        Role::Server,
        Some(socket_config(&start.app)),
    ))
    .await;
    let Start {
        app,
        auth,
        peer,
        live,
    } = Start::unbox(start);
    let limits = &app.config.limits;
    let (outbox, mut out) = Outbox::channel(limits.outbound_queue, limits.outbound_queue_bytes);
    // Waited on by reference: a fresh `cancelled()` per wake-up would take
    // the node-wide shutdown token's lock each time.
    let shutdown = app.shutdown.clone();
    let overflow = out.overflow();
    let shutting_down = shutdown.cancelled();
    let overflowed = overflow.cancelled();
    tokio::pin!(shutting_down, overflowed);
    // A connection that does not authenticate within this time is closed.
    // Boxed and dropped once authenticated: an idle connection holds no timer.
    let mut deadline = Some(Box::pin(tokio::time::sleep(
        app.config.http.ws_auth_timeout(),
    )));
    let mut conn = Connection {
        app,
        peer,
        outbox,
        session: None,
        token: None,
        closing: false,
        live,
    };
    // Set by the first line command: frames are rendered as text from then on.
    let mut text_mode = false;
    // Until the connection closes from its side (reading stops, the close
    // frame it queued still goes out, within `deadline`).
    let mut reading = true;
    let mut end = None;
    if let Some((info, token)) = auth {
        conn.token = Some(token);
        let live = conn.live;
        // Boxed, like every long await here: a future is as large as its
        // largest await, and this task lives as long as the connection.
        let work = conn.start_session(info, None, live);
        let signals = (overflowed.as_mut(), shutting_down.as_mut());
        end = Box::pin(while_writing(
            work,
            &mut socket,
            &mut out,
            text_mode,
            signals,
        ))
        .await
        .1;
    }
    let end = loop {
        if let Some(end) = end.take() {
            break end;
        }
        if reading && conn.session.is_some() {
            deadline = None;
        }
        let next = tokio::select! {
            biased;
            _ = &mut overflowed => break End::Close(4008, "slow consumer"),
            _ = &mut shutting_down => break End::Shutdown,
            items = out.recv_many(MAX_BATCH) => match items {
                Some(items) => Next::Write(items),
                None => break End::Stop,
            },
            next = socket.next(), if reading => Next::Read(next),
            _ = until(&mut deadline) => Next::Deadline,
        };
        match next {
            Next::Write(items) => {
                let write =
                    write_batch(&mut socket, &mut out, items, text_mode, overflowed.as_mut());
                if let Err(e) = Box::pin(write).await {
                    break e;
                }
            }
            Next::Deadline if reading => {
                metrics::refused(Refusal::AuthTimeout);
                conn.close(1008, "authentication timeout");
            }
            // The close frame queued did not come out in time.
            Next::Deadline => break End::Stop,
            Next::Read(Some(Ok(Message::Text(text)))) => {
                if text.starts_with('/') {
                    text_mode = true;
                }
                // While the frame is handled (a session start, a resume
                // replaying into the outbox), what it queues is written.
                let work = conn.on_text(text.as_str());
                let signals = (overflowed.as_mut(), shutting_down.as_mut());
                let (open, ended) = Box::pin(while_writing(
                    work,
                    &mut socket,
                    &mut out,
                    text_mode,
                    signals,
                ))
                .await;
                end = ended;
                if !open && !conn.closing && reading {
                    // The session is gone (one that crashed had its close,
                    // 1011, queued): what is queued goes out, briefly.
                    reading = false;
                    conn.stop_session();
                    deadline = Some(Box::pin(tokio::time::sleep(Duration::from_secs(1))));
                }
            }
            Next::Read(Some(Ok(Message::Binary(_)))) => conn.push_error(
                &ChatError::bad_request("binary frames are not supported; send JSON text frames"),
                None,
            ),
            Next::Read(Some(Ok(Message::Close(_))) | None) => break End::Stop,
            Next::Read(Some(Ok(_))) => {} // ping/pong: tungstenite answers pings itself
            Next::Read(Some(Err(WsError::Capacity(e)))) => {
                tracing::debug!(peer = %conn.peer, error = %e, "frame over the limit");
                conn.close(1009, "frame too large");
            }
            // RFC 6455 7.4.1: a frame we cannot accept fails the connection
            // with the code that says why (reading stops; the close frame
            // goes out after what is queued).
            Next::Read(Some(Err(WsError::Utf8(e)))) => {
                tracing::debug!(peer = %conn.peer, error = %e, "text frame not UTF-8");
                metrics::refused(Refusal::WsUtf8);
                conn.close(1007, "invalid UTF-8");
            }
            Next::Read(Some(Err(WsError::Protocol(e)))) if fails_the_connection(&e) => {
                tracing::debug!(peer = %conn.peer, error = %e, "WebSocket protocol error");
                metrics::refused(Refusal::WsProtocol);
                conn.close(1002, "protocol error");
            }
            Next::Read(Some(Err(e))) => {
                tracing::debug!(peer = %conn.peer, error = %e, "socket error");
                break End::Stop;
            }
        }
        // A close frame is queued: stop reading and the session; the frames
        // before it, then it, go out (at most 10 s more).
        if conn.closing && reading {
            reading = false;
            conn.stop_session();
            deadline = Some(Box::pin(tokio::time::sleep(Duration::from_secs(10))));
        }
    };
    conn.stop_session();
    match end {
        End::Close(code, reason) => Box::pin(close(&mut socket, code, reason)).await,
        End::Shutdown => {
            // Send what is queued, then say goodbye.
            if let Some(items) = out.try_recv_many(usize::MAX) {
                let _ = Box::pin(write_frames(&mut socket, items, text_mode)).await;
                out.written();
            }
            Box::pin(close(&mut socket, 1012, "service restart")).await
        }
        End::Stop => {
            let _ = Box::pin(tokio::time::timeout(
                Duration::from_secs(1),
                SinkExt::close(&mut socket),
            ))
            .await;
        }
        End::Gone => {}
    }
}

/// Completes when the deadline passes, never without one.
async fn until(deadline: &mut Option<Pin<Box<tokio::time::Sleep>>>) {
    match deadline {
        Some(sleep) => sleep.await,
        None => std::future::pending().await,
    }
}

/// Runs `work` (the handling of one frame) while writing what gets queued
/// meanwhile: a session start or a resume may replay more than the outbox
/// holds. Returns how the connection ends if it ended meanwhile (the work
/// still runs to its end, nothing more is written then).
async fn while_writing<T>(
    work: impl Future<Output = T>,
    socket: &mut Socket,
    out: &mut OutboxReceiver,
    text_mode: bool,
    (mut overflowed, mut shutting_down): (Signal<'_, '_>, Signal<'_, '_>),
) -> (T, Option<End>) {
    tokio::pin!(work);
    let mut end = None;
    loop {
        tokio::select! {
            biased;
            done = &mut work => return (done, end),
            _ = &mut overflowed, if end.is_none() => end = Some(End::Close(4008, "slow consumer")),
            _ = &mut shutting_down, if end.is_none() => end = Some(End::Shutdown),
            items = out.recv_many(MAX_BATCH), if end.is_none() => match items {
                Some(items) => {
                    let write = write_batch(socket, out, items, text_mode, overflowed.as_mut());
                    end = write.await.err();
                }
                None => end = Some(End::Stop),
            },
        }
    }
}

/// A cancellation (overflow, shutdown) waited on by reference.
type Signal<'a, 'b> = Pin<&'a mut WaitForCancellationFuture<'b>>;

/// A protocol error of the peer's frames (answered 1002), not the peer
/// being gone or the connection already closing (nobody to answer).
fn fails_the_connection(e: &ProtocolError) -> bool {
    !matches!(
        e,
        ProtocolError::ResetWithoutClosingHandshake
            | ProtocolError::ReceivedAfterClosing
            | ProtocolError::SendAfterClosing
    )
}

impl Connection {
    fn push(&self, frame: &ServerFrame) {
        self.outbox.push_frame(frame);
    }

    fn push_error(&self, error: &ChatError, reference: Option<String>) {
        self.push(&ServerFrame::error(error, reference));
    }

    fn push_line(&self, line: impl Into<String>) {
        self.outbox.push(Utf8Bytes::from(line.into()));
    }

    fn close(&mut self, code: u16, reason: &'static str) {
        self.outbox.close(code, reason);
        self.closing = true;
    }

    fn stop_session(&mut self) {
        if let Some(session) = self.session.take() {
            session.stop(Some("connection closed".into()));
        }
    }

    /// Handles one text frame; false when the connection should close.
    async fn on_text(&mut self, text: &str) -> bool {
        if text.starts_with('/') {
            return self.on_line(text).await;
        }
        match ClientFrame::decode(text) {
            Ok(frame) => self.on_frame(frame).await,
            Err(e) => {
                self.push_error(&e.error, e.reference);
                true
            }
        }
    }

    async fn on_frame(&mut self, frame: ClientFrame) -> bool {
        if let Some(session) = &self.session {
            return session.cast(SessionMsg::Frame(Box::new(frame))).is_ok();
        }
        match frame {
            ClientFrame::Auth { token } => match self.app.accounts.authenticate(&token).await {
                Ok(info) => {
                    self.token = Some(token);
                    self.start_session(info, None, self.live).await;
                }
                Err(e) => self.push_error(&e, Some("auth".into())),
            },
            ClientFrame::Resume {
                resume_token,
                rooms,
            } => match self.app.accounts.authenticate_resume(&resume_token).await {
                Ok(info) => {
                    // The new session's resume token hangs off the same login.
                    self.token = info.parent.clone();
                    let resume = ResumeRequest {
                        token: resume_token,
                        rooms,
                    };
                    self.start_session(info, Some(resume), false).await
                }
                Err(e) => self.push_error(&e, Some("resume".into())),
            },
            ClientFrame::Ping { nonce } => self.push(&ServerFrame::Pong { nonce }),
            other => self.push_error(
                &ChatError::new(
                    ErrorCode::Unauthorized,
                    "authenticate first: send an auth frame, or connect with a token",
                ),
                Some(other.reference()),
            ),
        }
        true
    }

    async fn on_line(&mut self, text: &str) -> bool {
        let line = match lines::parse(text) {
            Ok(line) => line,
            Err(usage) => {
                self.push_line(format!("error: {usage}"));
                return true;
            }
        };
        match line {
            Line::Help => self.push_line(lines::HELP),
            Line::Register { user, password } => {
                let addr = format!("addr:{}", self.peer.ip());
                let registered = match self.app.allow(Kind::Register, &addr).await {
                    Ok(()) => self.app.accounts.register(&user, &password).await,
                    Err(e) => Err(e),
                };
                match registered {
                    Ok(user) => self.push_line(format!(
                        "registered {}; now /login {} <password>",
                        user.username, user.username
                    )),
                    Err(e) => self.push_error(&e, Some("register".into())),
                }
            }
            Line::Login { user, password } => {
                if self.session.is_some() {
                    self.push_line("error: already logged in on this connection");
                    return true;
                }
                match self
                    .app
                    .accounts
                    .login(&user, &password, self.peer.ip())
                    .await
                {
                    Ok(login) => {
                        let info = TokenInfo {
                            user_id: login.user_id,
                            username: login.username.clone(),
                            expires_at: login.expires_at,
                            parent: None,
                        };
                        self.token = Some(login.token);
                        // Interactive: a text client cannot send `resume`,
                        // so its session goes live at once.
                        self.start_session(info, None, true).await;
                    }
                    Err(e) => self.push_error(&e, Some("login".into())),
                }
            }
            Line::Logout => {
                if let Some(token) = self.token.take() {
                    if let Err(e) = self.app.accounts.logout(&token).await {
                        tracing::debug!(error = %e, "logout of an already invalid token");
                    }
                }
                self.push_line("logged out");
                self.close(1000, "logged out");
                return false;
            }
            Line::CreateGroup { name } => {
                let Some(user) = self.user().await else {
                    self.push_line("error: /login first");
                    return true;
                };
                let created = match self
                    .app
                    .allow(Kind::CreateRoom, &format!("user:{user}"))
                    .await
                {
                    Ok(()) => self.app.create_room(&user, &name, false).await,
                    Err(e) => Err(e),
                };
                match created {
                    Ok(room) => self.push_line(format!("created group {}", room.name)),
                    Err(e) => self.push_error(&e, Some("group_create".into())),
                }
            }
            Line::Manage { room, action } => {
                let Some(user) = self.user().await else {
                    self.push_line("error: /login first");
                    return true;
                };
                // The room's frame (`kicked`, `topic_changed`) is the answer.
                if let Err(e) = super::room_admin::line(&self.app, &user, &room, action).await {
                    self.push_error(&e, Some("manage".into()));
                }
            }
            Line::Search { text } => {
                let Some(user) = self.user().await else {
                    self.push_line("error: /login first");
                    return true;
                };
                match super::search::line(&self.app, &user, &text).await {
                    Ok(lines) => self.push_line(lines),
                    Err(e) => self.push_error(&e, Some("search".into())),
                }
            }
            Line::Frame(frame) => {
                if self.session.is_none() {
                    self.push_line("error: /login first (or /register <user> <password>)");
                    return true;
                }
                return self.on_frame(frame).await;
            }
        }
        true
    }

    async fn user(&self) -> Option<String> {
        let session = self.session.as_ref()?;
        ask(session, |reply| SessionMsg::Describe { reply })
            .await
            .ok()
            .map(|(user, _)| user)
    }

    async fn start_session(&mut self, info: TokenInfo, resume: Option<ResumeRequest>, live: bool) {
        let outbox = self.outbox.clone();
        let started = ask(&self.app.refs.sessions, |reply| {
            SessionSupervisorMsg::Start {
                user: info.username.clone(),
                user_id: info.user_id,
                login_token: self.token.clone(),
                outbox,
                resume,
                live,
                max_per_user: self.app.config.http.max_sessions_per_user,
                reply,
            }
        })
        .await
        .and_then(|r| r);
        match started {
            Ok(session) => {
                let span = tracing::Span::current();
                span.record("user", tracing::field::display(&info.username));
                span.record("session", tracing::field::display(session.get_id()));
                self.session = Some(session);
            }
            // Over the per-user session cap: say so, then close.
            Err(e) if e.code == ErrorCode::RateLimited => {
                self.push_error(&e, Some("session".into()));
                self.close(1008, "too many sessions");
            }
            Err(e) => self.push_error(&e, Some("session".into())),
        }
    }
}

/// Writes one batch taken from the outbox, unless the client turns out too
/// slow meanwhile; its bytes then leave the outbox's budget.
async fn write_batch(
    socket: &mut Socket,
    out: &mut OutboxReceiver,
    items: VecDeque<Outbound>,
    text_mode: bool,
    overflowed: Signal<'_, '_>,
) -> Result<(), End> {
    let written = tokio::select! {
        biased;
        _ = overflowed => Err(End::Close(4008, "slow consumer")),
        r = write_frames(socket, items, text_mode) => r,
    };
    if written.is_ok() {
        out.written();
    }
    written
}

/// Writes frames, then flushes; `Err` when a close item came (after
/// flushing what came before it) or the socket is gone.
async fn write_frames(
    socket: &mut Socket,
    items: VecDeque<Outbound>,
    text_mode: bool,
) -> Result<(), End> {
    for item in items {
        match item {
            Outbound::Text(text) => feed(socket, text, text_mode).await?,
            Outbound::Batch(batch) => {
                for text in batch.iter() {
                    feed(socket, text.clone(), text_mode).await?;
                }
            }
            Outbound::Close(code, reason) => {
                socket.flush().await.map_err(|_| End::Gone)?;
                return Err(End::Close(code, reason));
            }
        }
    }
    socket.flush().await.map_err(|_| End::Gone)
}

/// Queues one frame on the socket (as a text line in text mode).
async fn feed(socket: &mut Socket, text: Utf8Bytes, text_mode: bool) -> Result<(), End> {
    let text = if text_mode {
        match lines::render(text.as_str()) {
            Some(line) => Utf8Bytes::from(line),
            None => return Ok(()),
        }
    } else {
        text
    };
    socket
        .feed(Message::Text(text))
        .await
        .map_err(|_| End::Gone)
}

async fn close(socket: &mut Socket, code: u16, reason: &'static str) {
    if code == 4008 {
        metrics::SLOW_CONSUMER_CLOSES.inc();
    }
    let frame = CloseFrame {
        code: CloseCode::from(code),
        reason: reason.into(),
    };
    // A client that stopped reading may never take the close frame: give up after a while.
    let _ = tokio::time::timeout(Duration::from_secs(10), async {
        if socket.send(Message::Close(Some(frame))).await.is_err() {
            return;
        }
        // RFC 6455 7.1.1: the server closes TCP after the peer's close
        // frame. Closing with the peer's frames unread in the kernel makes
        // it send a reset, and a reset throws away what the peer has not
        // read yet: the last frames and the close frame with its code.
        while let Some(Ok(_)) = socket.next().await {}
    })
    .await;
}

//! REST handlers of `/api/v1`, `/health` and `/ready`. Every error is JSON
//! `{"error":{"code","message"}}` with the matching status.

use std::net::SocketAddr;

use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, QueryRejection};
use axum::extract::{ConnectInfo, Path, Query, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use troupe_actors::ask;
use troupe_actors::cluster::mesh::MeshMsg;
use troupe_actors::frames::{ChatError, ChatMessage, ErrorCode, HistoryQuery, UserStatus};
use troupe_actors::presence::PresenceMsg;
use troupe_actors::rate_limits::Kind;
use troupe_actors::room::RoomInfo;
use troupe_actors::store::TokenInfo;
use utoipa::{IntoParams, ToSchema};

use super::api::responses::{
    BadRequest, BodyTimeout, Conflict, ErrorBody, Forbidden, NotFound, RateLimited, TooLarge,
    Unauthorized, Unavailable,
};
use crate::app::App;
use crate::auth::Login;

/// A [`ChatError`] answered over HTTP.
pub struct ApiError(pub ChatError);

impl From<ChatError> for ApiError {
    fn from(e: ChatError) -> Self {
        ApiError(e)
    }
}

pub fn status_of(code: ErrorCode) -> StatusCode {
    match code {
        ErrorCode::BadRequest => StatusCode::BAD_REQUEST,
        ErrorCode::Unauthorized => StatusCode::UNAUTHORIZED,
        ErrorCode::Forbidden => StatusCode::FORBIDDEN,
        ErrorCode::NotFound => StatusCode::NOT_FOUND,
        ErrorCode::Conflict => StatusCode::CONFLICT,
        ErrorCode::TooLarge => StatusCode::PAYLOAD_TOO_LARGE,
        ErrorCode::RateLimited => StatusCode::TOO_MANY_REQUESTS,
        ErrorCode::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = ErrorBody::from(&self.0);
        let mut response = (status_of(self.0.code), Json(body)).into_response();
        if let Some(ms) = self.0.retry_after_ms {
            // Whole seconds, rounded up (RFC 9110 delay-seconds).
            let seconds = ms.div_ceil(1000).max(1);
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(seconds));
        }
        response
    }
}

type ApiResult<T> = Result<T, ApiError>;

/// The bearer token of a request, if any.
pub fn bearer_token(headers: &HeaderMap) -> Option<&str> {
    let value = headers
        .get(axum::http::header::AUTHORIZATION)?
        .to_str()
        .ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then_some(token.trim())
}

pub(super) async fn user_of(app: &App, headers: &HeaderMap) -> ApiResult<TokenInfo> {
    let token = bearer_token(headers).ok_or_else(|| {
        ChatError::new(
            ErrorCode::Unauthorized,
            "missing Authorization: Bearer <token>",
        )
    })?;
    Ok(app.accounts.authenticate(token).await?)
}

/// The registered spelling of `user` (members are keyed by it); 404 if none.
pub(super) async fn registered(app: &App, user: &str) -> ApiResult<String> {
    troupe_actors::limits::check_username(user)?;
    let found = app
        .stores
        .directory
        .find_user(user)
        .await
        .map_err(|e| ChatError::unavailable(e.to_string()))?;
    match found {
        Some(found) => Ok(found.username),
        None => Err(ChatError::not_found(format!("no user {user}")).into()),
    }
}

/// The request's user, once it may take one `kind` action.
pub(super) async fn limited_user(
    app: &App,
    headers: &HeaderMap,
    kind: Kind,
) -> ApiResult<TokenInfo> {
    let user = user_of(app, headers).await?;
    app.allow(kind, &format!("user:{}", user.username)).await?;
    Ok(user)
}

/// A JSON body; axum's own rejections (too large, unreadable) as JSON errors too.
pub(super) fn parse_body<T: DeserializeOwned>(body: Result<Bytes, BytesRejection>) -> ApiResult<T> {
    let body = body.map_err(|e| {
        if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
            ChatError::new(ErrorCode::TooLarge, "request body over the size limit")
        } else {
            ChatError::bad_request(format!("unreadable body: {e}"))
        }
    })?;
    serde_json::from_slice(&body)
        .map_err(|e| ApiError(ChatError::bad_request(format!("invalid JSON body: {e}"))))
}

/// A username and its password.
#[derive(Deserialize, ToSchema)]
pub(super) struct Credentials {
    /// 1 to 32 characters: letters, digits, `_`, `-`, `.`.
    #[schema(example = "alice")]
    pub(super) username: String,
    /// 6 to 1024 characters.
    #[schema(example = "correct horse battery")]
    pub(super) password: String,
}

/// The account just made.
#[derive(Serialize, ToSchema)]
pub struct Registered {
    pub user_id: i64,
    pub username: String,
}

/// Makes an account. Limited per client address (`rate_limits.register`).
#[utoipa::path(
    post,
    path = "/api/v1/register",
    tag = "accounts",
    request_body = Credentials,
    responses(
        (status = 201, description = "Registered", body = Registered),
        (status = 400, response = BadRequest),
        (status = 408, response = BodyTimeout),
        (status = 409, description = "`conflict`: the username is taken", body = ErrorBody),
        (status = 413, response = TooLarge),
        (status = 429, response = RateLimited),
        (status = 503, response = Unavailable),
    )
)]
pub async fn register(
    State(app): State<App>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult<(StatusCode, Json<Registered>)> {
    let c: Credentials = parse_body(body)?;
    app.allow(Kind::Register, &format!("addr:{}", peer.ip()))
        .await?;
    let user = app.accounts.register(&c.username, &c.password).await?;
    Ok((
        StatusCode::CREATED,
        Json(Registered {
            user_id: user.id,
            username: user.username,
        }),
    ))
}

/// Trades a username and password for a session token (the `bearer`
/// scheme). Failures are limited per username and per address
/// (`rate_limits.login`).
#[utoipa::path(
    post,
    path = "/api/v1/login",
    tag = "accounts",
    request_body = Credentials,
    responses(
        (status = 200, description = "Logged in", body = Login),
        (status = 400, response = BadRequest),
        (status = 401, description = "`unauthorized`: wrong username or password", body = ErrorBody),
        (status = 408, response = BodyTimeout),
        (status = 413, response = TooLarge),
        (status = 429, response = RateLimited),
        (status = 503, response = Unavailable),
    )
)]
pub async fn login(
    State(app): State<App>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult<Json<Login>> {
    let c: Credentials = parse_body(body)?;
    let login = app
        .accounts
        .login(&c.username, &c.password, peer.ip())
        .await?;
    Ok(Json(login))
}

/// Revokes the request's token (its WebSocket sessions end too).
#[utoipa::path(
    post,
    path = "/api/v1/logout",
    tag = "accounts",
    security(("bearer" = [])),
    responses(
        (status = 204, description = "Logged out"),
        (status = 401, response = Unauthorized),
        (status = 503, response = Unavailable),
    )
)]
pub async fn logout(State(app): State<App>, headers: HeaderMap) -> ApiResult<StatusCode> {
    let token = bearer_token(&headers).ok_or_else(|| {
        ChatError::new(
            ErrorCode::Unauthorized,
            "missing Authorization: Bearer <token>",
        )
    })?;
    app.accounts.logout(token).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// A page of the rooms a user belongs to.
#[derive(Serialize, ToSchema)]
pub struct RoomList {
    /// By name.
    pub rooms: Vec<RoomInfo>,
    /// The next page's `after`; absent on the last page.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_after: Option<String>,
}

/// The rooms the user is a member of (DMs included), with member counts and
/// last seq.
#[utoipa::path(
    get,
    path = "/api/v1/rooms",
    tag = "rooms",
    security(("bearer" = [])),
    params(RoomsPage),
    responses(
        (status = 200, description = "A page of the user's rooms", body = RoomList),
        (status = 400, response = BadRequest),
        (status = 401, response = Unauthorized),
        (status = 429, response = RateLimited),
        (status = 503, response = Unavailable),
    )
)]
pub async fn list_rooms(
    State(app): State<App>,
    headers: HeaderMap,
    query: Result<Query<RoomsPage>, QueryRejection>,
) -> ApiResult<Json<RoomList>> {
    let Query(page) = query.map_err(|e| ChatError::bad_request(format!("invalid query: {e}")))?;
    let limit = page.limit.unwrap_or(ROOMS_PAGE);
    if !(1..=ROOMS_PAGE).contains(&limit) {
        return Err(
            ChatError::bad_request(format!("limit must be between 1 and {ROOMS_PAGE}")).into(),
        );
    }
    let user = limited_user(&app, &headers, Kind::RestRead).await?;
    let rooms = app.rooms_of(&user.username, &page.after, limit).await?;
    let next_after = (rooms.len() == limit)
        .then(|| rooms.last().map(|r| r.name.clone()))
        .flatten();
    Ok(Json(RoomList { rooms, next_after }))
}

/// Rooms a page of `GET /api/v1/rooms` holds at most (and by default).
const ROOMS_PAGE: usize = 200;

/// Paging of `GET /api/v1/rooms`.
#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct RoomsPage {
    /// Rooms after this name (byte order): the previous page's `next_after`.
    #[serde(default)]
    after: String,
    /// 1 to 200 (default 200).
    limit: Option<usize>,
}

/// A room to create.
#[derive(Deserialize, ToSchema)]
pub(super) struct NewRoom {
    /// 1 to 64 characters: letters, digits, `_`, `-`, `.`.
    #[schema(example = "general")]
    pub(super) name: String,
    /// Private rooms are joined by invitation only.
    #[serde(default)]
    pub(super) private: bool,
}

/// Creates a room with the user as its first member.
#[utoipa::path(
    post,
    path = "/api/v1/rooms",
    tag = "rooms",
    security(("bearer" = [])),
    request_body = NewRoom,
    responses(
        (status = 201, description = "Created", body = RoomInfo),
        (status = 400, response = BadRequest),
        (status = 401, response = Unauthorized),
        (status = 408, response = BodyTimeout),
        (status = 409, response = Conflict),
        (status = 413, response = TooLarge),
        (status = 429, response = RateLimited),
        (status = 503, response = Unavailable),
    )
)]
pub async fn create_room(
    State(app): State<App>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult<(StatusCode, Json<RoomInfo>)> {
    let new: NewRoom = parse_body(body)?;
    let user = limited_user(&app, &headers, Kind::CreateRoom).await?;
    let room = app
        .create_room(&user.username, &new.name, new.private)
        .await?;
    Ok((StatusCode::CREATED, Json(room)))
}

/// A page of a room's history.
#[derive(Serialize, ToSchema)]
pub struct RoomMessages {
    pub room: String,
    /// Newest first (oldest first with `after`).
    pub messages: Vec<ChatMessage>,
}

/// A page of a room's history (members only; anyone for the broadcast room).
#[utoipa::path(
    get,
    path = "/api/v1/rooms/{room}/messages",
    tag = "rooms",
    security(("bearer" = [])),
    params(("room" = String, Path, description = "The room's name (`@a:b` for a DM)"), HistoryQuery),
    responses(
        (status = 200, description = "A page of messages", body = RoomMessages),
        (status = 400, response = BadRequest),
        (status = 401, response = Unauthorized),
        (status = 403, description = "`forbidden`: not a member of the room", body = ErrorBody),
        (status = 404, response = NotFound),
        (status = 429, response = RateLimited),
        (status = 503, response = Unavailable),
    )
)]
pub async fn room_messages(
    State(app): State<App>,
    headers: HeaderMap,
    Path(room): Path<String>,
    query: Result<Query<HistoryQuery>, QueryRejection>,
) -> ApiResult<Json<RoomMessages>> {
    let Query(query) = query.map_err(|e| ChatError::bad_request(format!("invalid query: {e}")))?;
    let user = limited_user(&app, &headers, Kind::History).await?;
    let messages = app.history(&user.username, &room, query).await?;
    Ok(Json(RoomMessages { room, messages }))
}

/// Who to invite.
#[derive(Deserialize, ToSchema)]
pub(super) struct Invitation {
    #[schema(example = "bob")]
    pub(super) user: String,
}

/// Invites a user into a room the caller is a member of (how private rooms
/// are joined).
#[utoipa::path(
    post,
    path = "/api/v1/rooms/{room}/members",
    tag = "rooms",
    security(("bearer" = [])),
    params(("room" = String, Path, description = "The room's name")),
    request_body = Invitation,
    responses(
        (status = 204, description = "Invited"),
        (status = 400, response = BadRequest),
        (status = 401, response = Unauthorized),
        (status = 403, response = Forbidden),
        (status = 404, response = NotFound),
        (status = 408, response = BodyTimeout),
        (status = 413, response = TooLarge),
        (status = 429, response = RateLimited),
        (status = 503, response = Unavailable),
    )
)]
pub async fn invite(
    State(app): State<App>,
    headers: HeaderMap,
    Path(room): Path<String>,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult<StatusCode> {
    let invitation: Invitation = parse_body(body)?;
    let user = limited_user(&app, &headers, Kind::Invite).await?;
    app.invite(&user.username, &room, &invitation.user).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// The users online now.
#[derive(Serialize, ToSchema)]
pub struct OnlineUsers {
    pub users: Vec<UserStatus>,
}

/// Every user online in the cluster.
#[utoipa::path(
    get,
    path = "/api/v1/users/online",
    tag = "users",
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The users online", body = OnlineUsers),
        (status = 401, response = Unauthorized),
        (status = 429, response = RateLimited),
        (status = 503, response = Unavailable),
    )
)]
pub async fn users_online(
    State(app): State<App>,
    headers: HeaderMap,
) -> ApiResult<Json<OnlineUsers>> {
    limited_user(&app, &headers, Kind::RestRead).await?;
    let users = ask(&app.refs.presence, |reply| PresenceMsg::Online { reply }).await?;
    Ok(Json(OnlineUsers { users }))
}

/// The node is up.
#[derive(Serialize, ToSchema)]
pub struct Health {
    /// Always `ok`.
    #[schema(example = "ok")]
    pub status: &'static str,
    pub node: String,
}

/// Liveness: answers while the process serves HTTP at all.
#[utoipa::path(
    get,
    path = "/health",
    tag = "operations",
    responses((status = 200, description = "Alive", body = Health))
)]
pub async fn health(State(app): State<App>) -> Json<Health> {
    Json(Health {
        status: "ok",
        node: app.node_name().to_string(),
    })
}

/// Whether the node takes traffic, and why not.
#[derive(Serialize, ToSchema)]
pub struct Readiness {
    pub status: ReadyStatus,
    pub node: String,
    /// The cluster as this node sees it (null on a single node); absent when
    /// shutting down or unavailable.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cluster: Option<Option<ClusterView>>,
    /// With `unavailable`: the store that failed its probe, and how.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ReadyStatus {
    /// Serving (200).
    Ready,
    /// Not in a cluster view with a quorum yet (503).
    Joining,
    /// Draining for a stop (503).
    ShuttingDown,
    /// A store does not answer its probe (503).
    Unavailable,
}

/// The cluster as this node sees it.
#[derive(Serialize, ToSchema)]
pub struct ClusterView {
    /// Live members by name, this node included.
    pub live: Vec<String>,
    /// This node sees a majority and its view has settled.
    pub quorum: bool,
}

/// Readiness: 200 once the node has joined its cluster and its stores
/// answer; 503 otherwise (and while it shuts down).
#[utoipa::path(
    get,
    path = "/ready",
    tag = "operations",
    responses(
        (status = 200, description = "Ready", body = Readiness),
        (status = 503, description = "Not ready: joining, shutting down or a store unavailable", body = Readiness),
    )
)]
pub async fn ready(State(app): State<App>) -> Response {
    let node = app.node_name().to_string();
    let answer = |status, cluster, reason| Readiness {
        status,
        node: node.clone(),
        cluster,
        reason,
    };
    if app.shutdown.is_cancelled() {
        let body = answer(ReadyStatus::ShuttingDown, None, None);
        return (StatusCode::SERVICE_UNAVAILABLE, Json(body)).into_response();
    }
    let mut cluster = None;
    if let Some(mesh) = &app.refs.mesh {
        let status = ask(mesh, |reply| MeshMsg::Status { reply }).await;
        let joined = status.as_ref().is_ok_and(|s| s.ready);
        if let Ok(s) = &status {
            cluster = Some(ClusterView {
                live: s.membership.live.iter().cloned().collect(),
                quorum: s.membership.quorum,
            });
        }
        if !joined {
            let body = answer(ReadyStatus::Joining, Some(cluster), None);
            return (StatusCode::SERVICE_UNAVAILABLE, Json(body)).into_response();
        }
    }
    match app.probes.check().await {
        Ok(()) => Json(answer(ReadyStatus::Ready, Some(cluster), None)).into_response(),
        Err(reason) => {
            let body = answer(ReadyStatus::Unavailable, None, Some(reason));
            (StatusCode::SERVICE_UNAVAILABLE, Json(body)).into_response()
        }
    }
}

pub async fn not_found() -> ApiError {
    ApiError(ChatError::not_found("no such endpoint"))
}

pub async fn method_not_allowed() -> Response {
    let body = ErrorBody::new(ErrorCode::BadRequest, "method not allowed on this endpoint");
    (StatusCode::METHOD_NOT_ALLOWED, Json(body)).into_response()
}

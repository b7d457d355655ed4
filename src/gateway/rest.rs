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
use serde::Deserialize;
use serde_json::{json, Value};
use troupe_actors::ask;
use troupe_actors::cluster::mesh::MeshMsg;
use troupe_actors::frames::{ChatError, ErrorCode, HistoryQuery};
use troupe_actors::presence::PresenceMsg;
use troupe_actors::rate_limits::Kind;
use troupe_actors::store::TokenInfo;

use crate::app::App;

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
        let mut body = json!({"error": {"code": self.0.code, "message": self.0.message}});
        if let Some(ms) = self.0.retry_after_ms {
            body["error"]["retry_after_ms"] = json!(ms);
        }
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

#[derive(Deserialize)]
pub(super) struct Credentials {
    pub(super) username: String,
    pub(super) password: String,
}

pub async fn register(
    State(app): State<App>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult<(StatusCode, Json<Value>)> {
    let c: Credentials = parse_body(body)?;
    app.allow(Kind::Register, &format!("addr:{}", peer.ip()))
        .await?;
    let user = app.accounts.register(&c.username, &c.password).await?;
    Ok((
        StatusCode::CREATED,
        Json(json!({"user_id": user.id, "username": user.username})),
    ))
}

pub async fn login(
    State(app): State<App>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult<Json<Value>> {
    let c: Credentials = parse_body(body)?;
    let login = app
        .accounts
        .login(&c.username, &c.password, peer.ip())
        .await?;
    Ok(Json(json!(login)))
}

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

/// Rooms a page of `GET /api/v1/rooms` holds at most (and by default).
const ROOMS_PAGE: usize = 200;

#[derive(Deserialize)]
pub struct RoomsPage {
    #[serde(default)]
    after: String,
    limit: Option<usize>,
}

/// The caller's rooms by name, a page at a time: `next_after` (absent on
/// the last page) is the next page's `after`.
pub async fn list_rooms(
    State(app): State<App>,
    headers: HeaderMap,
    query: Result<Query<RoomsPage>, QueryRejection>,
) -> ApiResult<Json<Value>> {
    let Query(page) = query.map_err(|e| ChatError::bad_request(format!("invalid query: {e}")))?;
    let limit = page.limit.unwrap_or(ROOMS_PAGE);
    if !(1..=ROOMS_PAGE).contains(&limit) {
        return Err(
            ChatError::bad_request(format!("limit must be between 1 and {ROOMS_PAGE}")).into(),
        );
    }
    let user = limited_user(&app, &headers, Kind::RestRead).await?;
    let rooms = app.rooms_of(&user.username, &page.after, limit).await?;
    let mut body = json!({"rooms": rooms});
    if rooms.len() == limit {
        if let Some(last) = rooms.last() {
            body["next_after"] = json!(last.name);
        }
    }
    Ok(Json(body))
}

#[derive(Deserialize)]
pub(super) struct NewRoom {
    pub(super) name: String,
    #[serde(default)]
    pub(super) private: bool,
}

pub async fn create_room(
    State(app): State<App>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult<(StatusCode, Json<Value>)> {
    let new: NewRoom = parse_body(body)?;
    let user = limited_user(&app, &headers, Kind::CreateRoom).await?;
    let room = app
        .create_room(&user.username, &new.name, new.private)
        .await?;
    Ok((StatusCode::CREATED, Json(json!(room))))
}

pub async fn room_messages(
    State(app): State<App>,
    headers: HeaderMap,
    Path(room): Path<String>,
    query: Result<Query<HistoryQuery>, QueryRejection>,
) -> ApiResult<Json<Value>> {
    let Query(query) = query.map_err(|e| ChatError::bad_request(format!("invalid query: {e}")))?;
    let user = limited_user(&app, &headers, Kind::History).await?;
    let messages = app.history(&user.username, &room, query).await?;
    Ok(Json(json!({"room": room, "messages": messages})))
}

#[derive(Deserialize)]
pub(super) struct Invitation {
    pub(super) user: String,
}

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

pub async fn users_online(State(app): State<App>, headers: HeaderMap) -> ApiResult<Json<Value>> {
    limited_user(&app, &headers, Kind::RestRead).await?;
    let users = ask(&app.refs.presence, |reply| PresenceMsg::Online { reply }).await?;
    Ok(Json(json!({"users": users})))
}

pub async fn health(State(app): State<App>) -> Json<Value> {
    Json(json!({"status": "ok", "node": app.node_name()}))
}

pub async fn ready(State(app): State<App>) -> Response {
    if app.shutdown.is_cancelled() {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({"status": "shutting_down", "node": app.node_name()})),
        )
            .into_response();
    }
    let mut cluster = Value::Null;
    if let Some(mesh) = &app.refs.mesh {
        let status = ask(mesh, |reply| MeshMsg::Status { reply }).await;
        let joined = status.as_ref().is_ok_and(|s| s.ready);
        if let Ok(s) = &status {
            cluster = json!({"live": s.membership.live, "quorum": s.membership.quorum});
        }
        if !joined {
            return (
                StatusCode::SERVICE_UNAVAILABLE,
                Json(json!({"status": "joining", "node": app.node_name(), "cluster": cluster})),
            )
                .into_response();
        }
    }
    match app.probes.check().await {
        Ok(()) => Json(json!({"status": "ready", "node": app.node_name(), "cluster": cluster}))
            .into_response(),
        Err(reason) => (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({"status": "unavailable", "node": app.node_name(), "reason": reason})),
        )
            .into_response(),
    }
}

pub async fn not_found() -> ApiError {
    ApiError(ChatError::not_found("no such endpoint"))
}

pub async fn method_not_allowed() -> Response {
    let body =
        json!({"error": {"code": "bad_request", "message": "method not allowed on this endpoint"}});
    (StatusCode::METHOD_NOT_ALLOWED, Json(body)).into_response()
}

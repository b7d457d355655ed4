//! Rooms that people run, over REST: the member list with roles and
//! presence, the topic, roles, kicks and leaving, and deleting a room. The
//! room actor (wherever its node) checks the caller's role and tells every
//! member's connections; these handlers only parse, resolve names and shape
//! the answers.

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::Json;
use serde::{Deserialize, Serialize};
use troupe_actors::frames::ChatError;
use troupe_actors::rate_limits::Kind;
use troupe_actors::roles::Role;
use troupe_actors::room::{ManageAction, ManageAnswer, RoomInfo};

use super::api::responses::{ErrorBody, RateLimited, Unauthorized, Unavailable};
use super::rest::{limited_user, parse_body, registered, ApiError};
use crate::app::App;

type ApiResult<T> = Result<T, ApiError>;

/// A member of a room: role, presence and read position.
#[derive(Serialize, utoipa::ToSchema)]
pub struct RoomMember {
    #[schema(example = "ann")]
    user: String,
    role: Role,
    /// Connected to some node now.
    online: bool,
    /// When they were last connected (ms since the epoch); null when never.
    last_seen: Option<i64>,
    /// Their read receipt: the highest seq they have read.
    last_read_seq: u64,
}

/// The answer of `GET /api/v1/rooms/{room}/members`.
#[derive(Serialize, utoipa::ToSchema)]
pub struct RoomMembers {
    room: String,
    members: Vec<RoomMember>,
}

/// `GET /api/v1/rooms/{room}/members`: every member with role, presence
/// and read position.
#[utoipa::path(
    get,
    path = "/api/v1/rooms/{room}/members",
    operation_id = "room_members",
    tag = "rooms",
    security(("bearer" = [])),
    params(("room" = String, Path, description = "The room's name")),
    responses(
        (status = 200, description = "The members", body = RoomMembers),
        (status = 400, description = "`bad_request`: a malformed room name", body = ErrorBody),
        (status = 401, response = Unauthorized),
        (status = 403, description = "`forbidden`: not a member", body = ErrorBody),
        (status = 404, description = "`not_found`: no such room", body = ErrorBody),
        (status = 429, response = RateLimited),
        (status = 503, response = Unavailable),
    )
)]
pub async fn members(
    State(app): State<App>,
    headers: HeaderMap,
    Path(room): Path<String>,
) -> ApiResult<Json<RoomMembers>> {
    let user = limited_user(&app, &headers, Kind::Members).await?;
    let ManageAnswer::Members(members) = app
        .manage(&user.username, &room, ManageAction::Members)
        .await?
    else {
        return Err(ChatError::unavailable("the room answered something else").into());
    };
    let names: Vec<String> = members.iter().map(|m| m.user.clone()).collect();
    let unavailable = |e: troupe_actors::store::StoreError| ChatError::unavailable(e.to_string());
    let online = app.stores.ephemeral.online().await.map_err(unavailable)?;
    let last_seen = app
        .stores
        .ephemeral
        .last_seen(&names)
        .await
        .map_err(unavailable)?;
    let members = members
        .into_iter()
        .map(|m| RoomMember {
            online: online.binary_search(&m.user).is_ok(),
            last_seen: last_seen.get(&m.user).copied(),
            user: m.user,
            role: m.role,
            last_read_seq: m.last_read_seq,
        })
        .collect();
    Ok(Json(RoomMembers { room, members }))
}

/// What to change in a room.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RoomPatch {
    /// Absent: unchanged; null or "": cleared.
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<String>)]
    topic: Option<Option<String>>,
}

/// A field that is present, even as null.
fn present<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<Option<String>>, D::Error> {
    Option::<String>::deserialize(d).map(Some)
}

/// `PATCH /api/v1/rooms/{room}` `{"topic"?}` (owner or admin): answers the
/// room's info.
#[utoipa::path(
    patch,
    path = "/api/v1/rooms/{room}",
    operation_id = "room_patch",
    tag = "rooms",
    security(("bearer" = [])),
    params(("room" = String, Path, description = "The room's name")),
    request_body = RoomPatch,
    responses(
        (status = 200, description = "The room's info", body = RoomInfo),
        (status = 400, description = "`bad_request`: an unreadable body or a topic too long", body = ErrorBody),
        (status = 401, response = Unauthorized),
        (status = 403, description = "`forbidden`: not the owner or an admin", body = ErrorBody),
        (status = 404, description = "`not_found`: no such room", body = ErrorBody),
        (status = 429, response = RateLimited),
        (status = 503, response = Unavailable),
    )
)]
pub async fn patch(
    State(app): State<App>,
    headers: HeaderMap,
    Path(room): Path<String>,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult<Json<RoomInfo>> {
    let patch: RoomPatch = parse_body(body)?;
    let user = limited_user(&app, &headers, Kind::Invite).await?;
    if let Some(topic) = patch.topic {
        app.manage(&user.username, &room, ManageAction::SetTopic { topic })
            .await?;
    }
    Ok(Json(app.info(&user.username, &room).await?))
}

/// A member's new role.
#[derive(Deserialize, utoipa::ToSchema)]
pub struct NewRole {
    /// `admin` or `member` (or `owner`, which passes the room on).
    role: String,
}

/// `PUT /api/v1/rooms/{room}/members/{user}/role` `{"role"}` (owner only).
#[utoipa::path(
    put,
    path = "/api/v1/rooms/{room}/members/{user}/role",
    operation_id = "room_set_role",
    tag = "rooms",
    security(("bearer" = [])),
    params(
        ("room" = String, Path, description = "The room's name"),
        ("user" = String, Path, description = "The member"),
    ),
    request_body = NewRole,
    responses(
        (status = 204, description = "Done"),
        (status = 400, description = "`bad_request`: an unknown role or an unreadable body", body = ErrorBody),
        (status = 401, response = Unauthorized),
        (status = 403, description = "`forbidden`: not the owner", body = ErrorBody),
        (status = 404, description = "`not_found`: no such room, user or member", body = ErrorBody),
        (status = 429, response = RateLimited),
        (status = 503, response = Unavailable),
    )
)]
pub async fn set_role(
    State(app): State<App>,
    headers: HeaderMap,
    Path((room, target)): Path<(String, String)>,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult<StatusCode> {
    let new: NewRole = parse_body(body)?;
    let role = Role::parse(&new.role)?;
    let user = limited_user(&app, &headers, Kind::Invite).await?;
    let target = registered(&app, &target).await?;
    app.manage(
        &user.username,
        &room,
        ManageAction::SetRole { user: target, role },
    )
    .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// `DELETE /api/v1/rooms/{room}/members/{user}`: leaves (oneself) or kicks
/// (owner or admin).
#[utoipa::path(
    delete,
    path = "/api/v1/rooms/{room}/members/{user}",
    operation_id = "room_remove_member",
    tag = "rooms",
    security(("bearer" = [])),
    params(
        ("room" = String, Path, description = "The room's name"),
        ("user" = String, Path, description = "The member to remove (yourself: leave)"),
    ),
    responses(
        (status = 204, description = "Done"),
        (status = 400, description = "`bad_request`: a malformed name", body = ErrorBody),
        (status = 401, response = Unauthorized),
        (status = 403, description = "`forbidden`: not allowed to kick that member", body = ErrorBody),
        (status = 404, description = "`not_found`: no such room, user or member", body = ErrorBody),
        (status = 429, response = RateLimited),
        (status = 503, response = Unavailable),
    )
)]
pub async fn remove_member(
    State(app): State<App>,
    headers: HeaderMap,
    Path((room, target)): Path<(String, String)>,
) -> ApiResult<StatusCode> {
    let user = limited_user(&app, &headers, Kind::Invite).await?;
    let target = registered(&app, &target).await?;
    if target == user.username {
        app.leave(&user.username, &room).await?;
    } else {
        app.manage(&user.username, &room, ManageAction::Kick { user: target })
            .await?;
    }
    Ok(StatusCode::NO_CONTENT)
}

/// `DELETE /api/v1/rooms/{room}` (owner only): the room is gone everywhere.
#[utoipa::path(
    delete,
    path = "/api/v1/rooms/{room}",
    operation_id = "room_delete",
    tag = "rooms",
    security(("bearer" = [])),
    params(("room" = String, Path, description = "The room's name")),
    responses(
        (status = 204, description = "Deleted"),
        (status = 400, description = "`bad_request`: a malformed room name", body = ErrorBody),
        (status = 401, response = Unauthorized),
        (status = 403, description = "`forbidden`: not the owner", body = ErrorBody),
        (status = 404, description = "`not_found`: no such room", body = ErrorBody),
        (status = 429, response = RateLimited),
        (status = 503, response = Unavailable),
    )
)]
pub async fn delete(
    State(app): State<App>,
    headers: HeaderMap,
    Path(room): Path<String>,
) -> ApiResult<StatusCode> {
    let user = limited_user(&app, &headers, Kind::Invite).await?;
    app.manage(&user.username, &room, ManageAction::Delete)
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// `/kick` and `/topic`: the same checks as their REST calls.
pub async fn line(
    app: &App,
    user: &str,
    room: &str,
    action: ManageAction,
) -> Result<(), ChatError> {
    app.allow(Kind::Invite, &format!("user:{user}")).await?;
    let action = match action {
        ManageAction::Kick { user: target } => ManageAction::Kick {
            user: registered(app, &target).await.map_err(|e| e.0)?,
        },
        other => other,
    };
    app.manage(user, room, action).await.map(|_| ())
}

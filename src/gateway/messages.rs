//! Messages that live over REST: send, view, edit, delete, versions,
//! reactions, pins and threads (`/api/v1/rooms/{room}/messages/...`,
//! `/api/v1/rooms/{room}/pins/...`). Each change goes to the room's owner
//! like the frame of the same name (`RoomMsg::Post`: through the room's
//! proxy and the owner's router in a cluster), so it is a room event with
//! its own seq, durable before it is answered; reads ask the room, which
//! answers from its views and history.

use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::Json;
use serde::{Deserialize, Serialize};
use troupe_actors::frames::{ChatError, MessageEvent, HISTORY_DEFAULT_LIMIT, HISTORY_MAX_LIMIT};
use troupe_actors::life::{MessageView, Version};
use troupe_actors::limits::check_room_ref;
use troupe_actors::rate_limits::{self, Kind, Rate};
use troupe_actors::room::{dm_members, MessageQuery, PostRequest, Posted, QueryAnswer};
use troupe_actors::session::{new_token, Outgoing};
use troupe_actors::store::TokenInfo;

use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::api::responses::{
    BadRequest, BodyTimeout, ErrorBody, Forbidden, NotFound, RateLimited, TooLarge, Unauthorized,
    Unavailable,
};
use super::rest::{limited_user, parse_body, user_of, ApiError};
use crate::app::App;

type ApiResult<T> = Result<T, ApiError>;

/// The routes of this module, with their documentation (one `routes!` per
/// path). `POST .../messages` shares its path with history: it is
/// registered next to it in `gateway/mod.rs`.
pub fn routes() -> OpenApiRouter<App> {
    OpenApiRouter::new()
        .routes(routes!(view, edit, delete))
        .routes(routes!(versions))
        .routes(routes!(thread))
        .routes(routes!(react, unreact))
        .routes(routes!(pins))
        .routes(routes!(pin, unpin))
}

/// The answer to a message posted over REST.
#[derive(Serialize, ToSchema)]
pub struct Sent {
    pub room: String,
    pub seq: u64,
    /// When the room accepted it, ms since the epoch.
    pub ts: i64,
    /// The one given, or one made for it (`rest-...`).
    pub client_id: String,
}

/// A message's earlier bodies.
#[derive(Serialize, ToSchema)]
pub struct Versions {
    pub room: String,
    pub seq: u64,
    /// Oldest first.
    pub versions: Vec<Version>,
}

/// The pinned messages of a room.
#[derive(Serialize, ToSchema)]
pub struct Pins {
    pub room: String,
    /// By seq.
    pub pins: Vec<MessageView>,
}

/// A page of a thread: the replies to a message.
#[derive(Serialize, ToSchema)]
pub struct Thread {
    pub room: String,
    pub seq: u64,
    /// Oldest first.
    pub messages: Vec<MessageView>,
}

fn seq_of(text: &str) -> Result<u64, ChatError> {
    match text.parse::<u64>() {
        Ok(seq) if seq > 0 => Ok(seq),
        _ => Err(ChatError::bad_request(format!(
            "{text:?} is not a message seq (a number from 1)"
        ))),
    }
}

/// The user of a change, once the message rate lets them (the bucket of
/// `send` frames: REST and WebSocket share it).
async fn writer(app: &App, headers: &HeaderMap) -> ApiResult<TokenInfo> {
    let user = user_of(app, headers).await?;
    let limits = &app.config.limits;
    let rate = Rate::new(limits.messages_per_second, limits.message_burst);
    let key = format!("msg:{}", user.username);
    rate_limits::take(&*app.stores.ephemeral, Kind::Message, &key, rate, 1).await?;
    Ok(user)
}

/// Posts a message or an event for `user` after the checks its frame gets.
async fn post(
    app: &App,
    user: &str,
    room: &str,
    out: Outgoing,
    client_id: Option<String>,
) -> Result<(Posted, String), ChatError> {
    check_room_ref(room)?;
    let client_id = client_id.unwrap_or_else(|| format!("rest-{}", new_token(12)));
    app.config.limits.check_client_id(&client_id)?;
    out.check(&app.config.limits)?;
    check_not_blocked(app, user, room).await?;
    if !out.attachments.is_empty() {
        app.stores
            .attachments
            .check(&out.attachments, room, user)
            .await?;
    }
    let request = PostRequest {
        user: user.to_string(),
        client_id: client_id.clone(),
        body: out.body,
        reply_to: out.reply_to,
        attachments: out.attachments,
        event: out.event,
    };
    Ok((app.post(room, request).await?, client_id))
}

/// A DM room between two users of whom one blocked the other takes no
/// messages nor events, whichever of them writes (as on the `send` frame).
async fn check_not_blocked(app: &App, user: &str, room: &str) -> Result<(), ChatError> {
    let Some((a, b)) = dm_members(room) else {
        return Ok(());
    };
    let other = if a == user { b } else { a };
    match app.stores.friends.blocked_between(user, other).await {
        Ok(false) => Ok(()),
        Ok(true) => Err(ChatError::forbidden(format!(
            "you cannot message {other}: one of you blocked the other"
        ))),
        Err(e) => Err(ChatError::unavailable(e.to_string())),
    }
}

async fn post_event(
    app: &App,
    headers: &HeaderMap,
    room: &str,
    event: MessageEvent,
) -> ApiResult<(TokenInfo, Posted)> {
    let user = writer(app, headers).await?;
    let out = Outgoing {
        body: String::new(),
        reply_to: None,
        attachments: Vec::new(),
        event: Some(event),
    };
    let (posted, _) = post(app, &user.username, room, out, None).await?;
    Ok((user, posted))
}

async fn view_of(app: &App, user: &str, room: &str, seq: u64) -> ApiResult<Json<MessageView>> {
    match app.query(user, room, MessageQuery::View { seq }).await? {
        QueryAnswer::View(view) => Ok(Json(view)),
        _ => Err(ChatError::unavailable("unexpected answer from the room").into()),
    }
}

/// A message to post.
#[derive(Deserialize, ToSchema)]
pub struct NewMessage {
    body: String,
    /// Makes a resend a no-op, as on the `send` frame.
    #[serde(default)]
    client_id: Option<String>,
    /// The message this one answers (a thread).
    #[serde(default)]
    reply_to: Option<u64>,
    /// Ids of the sender's uploads to this room (at most 10).
    #[serde(default)]
    attachments: Vec<String>,
}

/// Posts a message, as the `send` frame does (the same checks and rate).
#[utoipa::path(
    post,
    path = "/api/v1/rooms/{room}/messages",
    operation_id = "send_message",
    tag = "messages",
    security(("bearer" = [])),
    params(("room" = String, Path, description = "The room's name")),
    request_body = NewMessage,
    responses(
        (status = 201, description = "Posted (durable)", body = Sent),
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
pub async fn send(
    State(app): State<App>,
    headers: HeaderMap,
    Path(room): Path<String>,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult<(StatusCode, Json<Sent>)> {
    let new: NewMessage = parse_body(body)?;
    let user = writer(&app, &headers).await?;
    let out = Outgoing {
        body: new.body,
        reply_to: new.reply_to,
        attachments: new.attachments,
        event: None,
    };
    let (posted, client_id) = post(&app, &user.username, &room, out, new.client_id).await?;
    Ok((
        StatusCode::CREATED,
        Json(Sent {
            room,
            seq: posted.seq,
            ts: posted.ts,
            client_id,
        }),
    ))
}

/// A message as it is now: edits, reactions, pin, replies.
#[utoipa::path(
    get,
    path = "/api/v1/rooms/{room}/messages/{seq}",
    operation_id = "message",
    tag = "messages",
    security(("bearer" = [])),
    params(
        ("room" = String, Path, description = "The room's name"),
        ("seq" = u64, Path, minimum = 1, description = "The message's seq (a number from 1)"),
    ),
    responses(
        (status = 200, description = "The message's view", body = MessageView),
        (status = 400, response = BadRequest),
        (status = 401, response = Unauthorized),
        (status = 403, response = Forbidden),
        (status = 404, response = NotFound),
        (status = 429, response = RateLimited),
        (status = 503, response = Unavailable),
    )
)]
pub async fn view(
    State(app): State<App>,
    headers: HeaderMap,
    Path((room, seq)): Path<(String, String)>,
) -> ApiResult<Json<MessageView>> {
    let seq = seq_of(&seq)?;
    let user = limited_user(&app, &headers, Kind::RestRead).await?;
    view_of(&app, &user.username, &room, seq).await
}

/// A message's new body.
#[derive(Deserialize, ToSchema)]
pub struct Edit {
    body: String,
    #[serde(default)]
    client_id: Option<String>,
}

/// Edits a message (its sender only).
#[utoipa::path(
    patch,
    path = "/api/v1/rooms/{room}/messages/{seq}",
    operation_id = "edit_message",
    tag = "messages",
    security(("bearer" = [])),
    params(
        ("room" = String, Path, description = "The room's name"),
        ("seq" = u64, Path, minimum = 1, description = "The message's seq (a number from 1)"),
    ),
    request_body = Edit,
    responses(
        (status = 200, description = "The message's new view", body = MessageView),
        (status = 400, response = BadRequest),
        (status = 401, response = Unauthorized),
        (status = 403, description = "`forbidden`: not its sender, or not a member", body = ErrorBody),
        (status = 404, response = NotFound),
        (status = 408, response = BodyTimeout),
        (status = 413, response = TooLarge),
        (status = 429, response = RateLimited),
        (status = 503, response = Unavailable),
    )
)]
pub async fn edit(
    State(app): State<App>,
    headers: HeaderMap,
    Path((room, seq)): Path<(String, String)>,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult<Json<MessageView>> {
    let seq = seq_of(&seq)?;
    let edit: Edit = parse_body(body)?;
    let user = writer(&app, &headers).await?;
    let out = Outgoing {
        body: String::new(),
        reply_to: None,
        attachments: Vec::new(),
        event: Some(MessageEvent::Edit {
            target: seq,
            body: edit.body,
        }),
    };
    post(&app, &user.username, &room, out, edit.client_id).await?;
    view_of(&app, &user.username, &room, seq).await
}

/// Deletes a message (its sender, or an admin); its attachments go with it.
#[utoipa::path(
    delete,
    path = "/api/v1/rooms/{room}/messages/{seq}",
    operation_id = "delete_message",
    tag = "messages",
    security(("bearer" = [])),
    params(
        ("room" = String, Path, description = "The room's name"),
        ("seq" = u64, Path, minimum = 1, description = "The message's seq (a number from 1)"),
    ),
    responses(
        (status = 204, description = "Deleted"),
        (status = 400, response = BadRequest),
        (status = 401, response = Unauthorized),
        (status = 403, response = Forbidden),
        (status = 404, response = NotFound),
        (status = 429, response = RateLimited),
        (status = 503, response = Unavailable),
    )
)]
pub async fn delete(
    State(app): State<App>,
    headers: HeaderMap,
    Path((room, seq)): Path<(String, String)>,
) -> ApiResult<StatusCode> {
    let target = seq_of(&seq)?;
    post_event(&app, &headers, &room, MessageEvent::Delete { target }).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// A message's earlier bodies, oldest first.
#[utoipa::path(
    get,
    path = "/api/v1/rooms/{room}/messages/{seq}/versions",
    operation_id = "message_versions",
    tag = "messages",
    security(("bearer" = [])),
    params(
        ("room" = String, Path, description = "The room's name"),
        ("seq" = u64, Path, minimum = 1, description = "The message's seq (a number from 1)"),
    ),
    responses(
        (status = 200, description = "The versions", body = Versions),
        (status = 400, response = BadRequest),
        (status = 401, response = Unauthorized),
        (status = 403, response = Forbidden),
        (status = 404, response = NotFound),
        (status = 429, response = RateLimited),
        (status = 503, response = Unavailable),
    )
)]
pub async fn versions(
    State(app): State<App>,
    headers: HeaderMap,
    Path((room, seq)): Path<(String, String)>,
) -> ApiResult<Json<Versions>> {
    let seq = seq_of(&seq)?;
    let user = limited_user(&app, &headers, Kind::RestRead).await?;
    match app
        .query(&user.username, &room, MessageQuery::Versions { seq })
        .await?
    {
        QueryAnswer::Versions(versions) => Ok(Json(Versions {
            room,
            seq,
            versions,
        })),
        _ => Err(ChatError::unavailable("unexpected answer from the room").into()),
    }
}

/// Adds the user's reaction to a message.
#[utoipa::path(
    put,
    path = "/api/v1/rooms/{room}/messages/{seq}/reactions/{emoji}",
    operation_id = "react",
    tag = "messages",
    security(("bearer" = [])),
    params(
        ("room" = String, Path, description = "The room's name"),
        ("seq" = u64, Path, minimum = 1, description = "The message's seq (a number from 1)"),
        ("emoji" = String, Path, description = "The reaction: one emoji, or a `:short_name:` (at most 32 characters)"),
    ),
    responses(
        (status = 204, description = "Reacted"),
        (status = 400, response = BadRequest),
        (status = 401, response = Unauthorized),
        (status = 403, response = Forbidden),
        (status = 404, response = NotFound),
        (status = 429, response = RateLimited),
        (status = 503, response = Unavailable),
    )
)]
pub async fn react(
    State(app): State<App>,
    headers: HeaderMap,
    Path((room, seq, emoji)): Path<(String, String, String)>,
) -> ApiResult<StatusCode> {
    let target = seq_of(&seq)?;
    post_event(&app, &headers, &room, MessageEvent::React { target, emoji }).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Takes the user's reaction back.
#[utoipa::path(
    delete,
    path = "/api/v1/rooms/{room}/messages/{seq}/reactions/{emoji}",
    operation_id = "unreact",
    tag = "messages",
    security(("bearer" = [])),
    params(
        ("room" = String, Path, description = "The room's name"),
        ("seq" = u64, Path, minimum = 1, description = "The message's seq (a number from 1)"),
        ("emoji" = String, Path, description = "The reaction: one emoji, or a `:short_name:` (at most 32 characters)"),
    ),
    responses(
        (status = 204, description = "Reaction removed"),
        (status = 400, response = BadRequest),
        (status = 401, response = Unauthorized),
        (status = 403, response = Forbidden),
        (status = 404, response = NotFound),
        (status = 429, response = RateLimited),
        (status = 503, response = Unavailable),
    )
)]
pub async fn unreact(
    State(app): State<App>,
    headers: HeaderMap,
    Path((room, seq, emoji)): Path<(String, String, String)>,
) -> ApiResult<StatusCode> {
    let target = seq_of(&seq)?;
    post_event(
        &app,
        &headers,
        &room,
        MessageEvent::Unreact { target, emoji },
    )
    .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Pins a message in its room.
#[utoipa::path(
    put,
    path = "/api/v1/rooms/{room}/pins/{seq}",
    operation_id = "pin",
    tag = "messages",
    security(("bearer" = [])),
    params(
        ("room" = String, Path, description = "The room's name"),
        ("seq" = u64, Path, minimum = 1, description = "The message's seq (a number from 1)"),
    ),
    responses(
        (status = 204, description = "Pinned"),
        (status = 400, response = BadRequest),
        (status = 401, response = Unauthorized),
        (status = 403, response = Forbidden),
        (status = 404, response = NotFound),
        (status = 429, response = RateLimited),
        (status = 503, response = Unavailable),
    )
)]
pub async fn pin(
    State(app): State<App>,
    headers: HeaderMap,
    Path((room, seq)): Path<(String, String)>,
) -> ApiResult<StatusCode> {
    let target = seq_of(&seq)?;
    post_event(&app, &headers, &room, MessageEvent::Pin { target }).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Unpins a message.
#[utoipa::path(
    delete,
    path = "/api/v1/rooms/{room}/pins/{seq}",
    operation_id = "unpin",
    tag = "messages",
    security(("bearer" = [])),
    params(
        ("room" = String, Path, description = "The room's name"),
        ("seq" = u64, Path, minimum = 1, description = "The message's seq (a number from 1)"),
    ),
    responses(
        (status = 204, description = "Unpinned"),
        (status = 400, response = BadRequest),
        (status = 401, response = Unauthorized),
        (status = 403, response = Forbidden),
        (status = 404, response = NotFound),
        (status = 429, response = RateLimited),
        (status = 503, response = Unavailable),
    )
)]
pub async fn unpin(
    State(app): State<App>,
    headers: HeaderMap,
    Path((room, seq)): Path<(String, String)>,
) -> ApiResult<StatusCode> {
    let target = seq_of(&seq)?;
    post_event(&app, &headers, &room, MessageEvent::Unpin { target }).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// The pinned messages of a room, by seq.
#[utoipa::path(
    get,
    path = "/api/v1/rooms/{room}/pins",
    operation_id = "pins",
    tag = "messages",
    security(("bearer" = [])),
    params(("room" = String, Path, description = "The room's name")),
    responses(
        (status = 200, description = "The pins", body = Pins),
        (status = 400, response = BadRequest),
        (status = 401, response = Unauthorized),
        (status = 403, response = Forbidden),
        (status = 404, response = NotFound),
        (status = 429, response = RateLimited),
        (status = 503, response = Unavailable),
    )
)]
pub async fn pins(
    State(app): State<App>,
    headers: HeaderMap,
    Path(room): Path<String>,
) -> ApiResult<Json<Pins>> {
    let user = limited_user(&app, &headers, Kind::RestRead).await?;
    match app.query(&user.username, &room, MessageQuery::Pins).await? {
        QueryAnswer::Views(pins) => Ok(Json(Pins { room, pins })),
        _ => Err(ChatError::unavailable("unexpected answer from the room").into()),
    }
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ThreadQuery {
    /// Only replies with a larger seq.
    #[serde(default)]
    after: Option<u64>,
    /// Page size: 1 to 200, 50 when absent.
    #[serde(default)]
    #[param(minimum = 1, maximum = 200)]
    limit: Option<u32>,
}

/// The replies to a message, oldest first.
#[utoipa::path(
    get,
    path = "/api/v1/rooms/{room}/messages/{seq}/thread",
    operation_id = "thread",
    tag = "messages",
    security(("bearer" = [])),
    params(
        ("room" = String, Path, description = "The room's name"),
        ("seq" = u64, Path, minimum = 1, description = "The message's seq (a number from 1)"),
        ThreadQuery,
    ),
    responses(
        (status = 200, description = "A page of replies", body = Thread),
        (status = 400, response = BadRequest),
        (status = 401, response = Unauthorized),
        (status = 403, response = Forbidden),
        (status = 404, response = NotFound),
        (status = 429, response = RateLimited),
        (status = 503, response = Unavailable),
    )
)]
pub async fn thread(
    State(app): State<App>,
    headers: HeaderMap,
    Path((room, seq)): Path<(String, String)>,
    query: Result<Query<ThreadQuery>, QueryRejection>,
) -> ApiResult<Json<Thread>> {
    let seq = seq_of(&seq)?;
    let Query(query) = query.map_err(|e| ChatError::bad_request(format!("invalid query: {e}")))?;
    let limit = match query.limit {
        None => HISTORY_DEFAULT_LIMIT,
        Some(n) if (1..=HISTORY_MAX_LIMIT).contains(&n) => n,
        Some(_) => {
            return Err(ChatError::bad_request(format!(
                "limit must be from 1 to {HISTORY_MAX_LIMIT}"
            ))
            .into())
        }
    };
    let user = limited_user(&app, &headers, Kind::RestRead).await?;
    let question = MessageQuery::Thread {
        seq,
        after: query.after.unwrap_or(0),
        limit: limit as usize,
    };
    match app.query(&user.username, &room, question).await? {
        QueryAnswer::Views(messages) => Ok(Json(Thread {
            room,
            seq,
            messages,
        })),
        _ => Err(ChatError::unavailable("unexpected answer from the room").into()),
    }
}

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
use axum::routing::{get, put};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{json, Value};
use troupe_actors::frames::{ChatError, MessageEvent, HISTORY_DEFAULT_LIMIT, HISTORY_MAX_LIMIT};
use troupe_actors::limits::check_room_ref;
use troupe_actors::rate_limits::{self, Kind, Rate};
use troupe_actors::room::{MessageQuery, PostRequest, Posted, QueryAnswer};
use troupe_actors::session::{new_token, Outgoing};
use troupe_actors::store::TokenInfo;

use super::rest::{limited_user, parse_body, user_of, ApiError};
use crate::app::App;

type ApiResult<T> = Result<T, ApiError>;

/// The routes of this module.
pub fn routes() -> Router<App> {
    Router::new()
        .route(
            "/api/v1/rooms/{room}/messages/{seq}",
            get(view).patch(edit).delete(delete),
        )
        .route(
            "/api/v1/rooms/{room}/messages/{seq}/versions",
            get(versions),
        )
        .route("/api/v1/rooms/{room}/messages/{seq}/thread", get(thread))
        .route(
            "/api/v1/rooms/{room}/messages/{seq}/reactions/{emoji}",
            put(react).delete(unreact),
        )
        .route("/api/v1/rooms/{room}/pins", get(pins))
        .route("/api/v1/rooms/{room}/pins/{seq}", put(pin).delete(unpin))
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

async fn view_of(app: &App, user: &str, room: &str, seq: u64) -> ApiResult<Json<Value>> {
    match app.query(user, room, MessageQuery::View { seq }).await? {
        QueryAnswer::View(view) => Ok(Json(json!(view))),
        _ => Err(ChatError::unavailable("unexpected answer from the room").into()),
    }
}

#[derive(Deserialize)]
pub struct NewMessage {
    body: String,
    #[serde(default)]
    client_id: Option<String>,
    #[serde(default)]
    reply_to: Option<u64>,
    #[serde(default)]
    attachments: Vec<String>,
}

/// `POST /api/v1/rooms/{room}/messages` -> 201 `{room, seq, ts, client_id}`.
pub async fn send(
    State(app): State<App>,
    headers: HeaderMap,
    Path(room): Path<String>,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult<(StatusCode, Json<Value>)> {
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
        Json(json!({"room": room, "seq": posted.seq, "ts": posted.ts, "client_id": client_id})),
    ))
}

/// `GET /api/v1/rooms/{room}/messages/{seq}` -> the message's view.
pub async fn view(
    State(app): State<App>,
    headers: HeaderMap,
    Path((room, seq)): Path<(String, String)>,
) -> ApiResult<Json<Value>> {
    let seq = seq_of(&seq)?;
    let user = limited_user(&app, &headers, Kind::RestRead).await?;
    view_of(&app, &user.username, &room, seq).await
}

#[derive(Deserialize)]
pub struct Edit {
    body: String,
    #[serde(default)]
    client_id: Option<String>,
}

/// `PATCH /api/v1/rooms/{room}/messages/{seq}` `{"body"}` -> 200 the new view.
pub async fn edit(
    State(app): State<App>,
    headers: HeaderMap,
    Path((room, seq)): Path<(String, String)>,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult<Json<Value>> {
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

/// `DELETE /api/v1/rooms/{room}/messages/{seq}` -> 204.
pub async fn delete(
    State(app): State<App>,
    headers: HeaderMap,
    Path((room, seq)): Path<(String, String)>,
) -> ApiResult<StatusCode> {
    let target = seq_of(&seq)?;
    post_event(&app, &headers, &room, MessageEvent::Delete { target }).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// `GET .../messages/{seq}/versions` -> `{"versions":[{version, body, ts}]}`, oldest first.
pub async fn versions(
    State(app): State<App>,
    headers: HeaderMap,
    Path((room, seq)): Path<(String, String)>,
) -> ApiResult<Json<Value>> {
    let seq = seq_of(&seq)?;
    let user = limited_user(&app, &headers, Kind::RestRead).await?;
    match app
        .query(&user.username, &room, MessageQuery::Versions { seq })
        .await?
    {
        QueryAnswer::Versions(versions) => Ok(Json(
            json!({"room": room, "seq": seq, "versions": versions}),
        )),
        _ => Err(ChatError::unavailable("unexpected answer from the room").into()),
    }
}

/// `PUT .../messages/{seq}/reactions/{emoji}` -> 204.
pub async fn react(
    State(app): State<App>,
    headers: HeaderMap,
    Path((room, seq, emoji)): Path<(String, String, String)>,
) -> ApiResult<StatusCode> {
    let target = seq_of(&seq)?;
    post_event(&app, &headers, &room, MessageEvent::React { target, emoji }).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// `DELETE .../messages/{seq}/reactions/{emoji}` -> 204.
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

/// `PUT /api/v1/rooms/{room}/pins/{seq}` -> 204.
pub async fn pin(
    State(app): State<App>,
    headers: HeaderMap,
    Path((room, seq)): Path<(String, String)>,
) -> ApiResult<StatusCode> {
    let target = seq_of(&seq)?;
    post_event(&app, &headers, &room, MessageEvent::Pin { target }).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// `DELETE /api/v1/rooms/{room}/pins/{seq}` -> 204.
pub async fn unpin(
    State(app): State<App>,
    headers: HeaderMap,
    Path((room, seq)): Path<(String, String)>,
) -> ApiResult<StatusCode> {
    let target = seq_of(&seq)?;
    post_event(&app, &headers, &room, MessageEvent::Unpin { target }).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// `GET /api/v1/rooms/{room}/pins` -> `{"pins":[view...]}`, by seq.
pub async fn pins(
    State(app): State<App>,
    headers: HeaderMap,
    Path(room): Path<String>,
) -> ApiResult<Json<Value>> {
    let user = limited_user(&app, &headers, Kind::RestRead).await?;
    match app.query(&user.username, &room, MessageQuery::Pins).await? {
        QueryAnswer::Views(pins) => Ok(Json(json!({"room": room, "pins": pins}))),
        _ => Err(ChatError::unavailable("unexpected answer from the room").into()),
    }
}

#[derive(Deserialize)]
pub struct ThreadQuery {
    #[serde(default)]
    after: Option<u64>,
    #[serde(default)]
    limit: Option<u32>,
}

/// `GET .../messages/{seq}/thread?after=&limit=` -> `{"messages":[view...]}`:
/// the replies to `seq`, oldest first, after `after`.
pub async fn thread(
    State(app): State<App>,
    headers: HeaderMap,
    Path((room, seq)): Path<(String, String)>,
    query: Result<Query<ThreadQuery>, QueryRejection>,
) -> ApiResult<Json<Value>> {
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
        QueryAnswer::Views(messages) => Ok(Json(
            json!({"room": room, "seq": seq, "messages": messages}),
        )),
        _ => Err(ChatError::unavailable("unexpected answer from the room").into()),
    }
}

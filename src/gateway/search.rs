//! Full-text search: `GET /api/v1/search?q=&room=&before=&limit=` and the
//! `/search <words>` line command. Only rooms the user can read are
//! searched: the rooms they are a member of (DMs included) and the
//! broadcast room. Results come from the index behind history (see
//! `troupe_actors::store::search`), newest first.

use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::http::HeaderMap;
use axum::Json;
use serde::{Deserialize, Serialize};
use troupe_actors::frames::ChatError;
use troupe_actors::limits::check_room_ref;
use troupe_actors::rate_limits::Kind;
use troupe_actors::room::BROADCAST_ROOM;
use troupe_actors::store::search::{check_text, SearchHit, SearchQuery};

use utoipa::{IntoParams, ToSchema};

use super::api::responses::{BadRequest, ErrorBody, RateLimited, Unauthorized, Unavailable};
use super::lines::{escape, room_label};
use super::rest::{user_of, ApiError};
use crate::app::App;

/// Results the line command shows.
const LINE_RESULTS: u64 = 10;

/// A page of results, and where the next one starts (when this one is full).
pub struct Page {
    pub results: Vec<SearchHit>,
    pub next_before: Option<String>,
}

/// Searches the rooms `user` can read (only `room`, when given) after
/// taking one `search` token of theirs.
pub async fn search(
    app: &App,
    user: &str,
    text: &str,
    room: Option<&str>,
    before: Option<&str>,
    limit: Option<u64>,
) -> Result<Page, ChatError> {
    // Bad input is refused before it costs a token or a store query.
    check_text(text)?;
    if let Some(room) = room {
        check_room_ref(room)?;
    }
    app.allow(Kind::Search, &format!("user:{user}")).await?;
    let unavailable = |e: troupe_actors::store::StoreError| ChatError::unavailable(e.to_string());
    let mut rooms = app
        .stores
        .directory
        .rooms_of(user)
        .await
        .map_err(unavailable)?;
    rooms.push(BROADCAST_ROOM.to_string());
    let rooms = match room {
        None => rooms,
        Some(room) if rooms.iter().any(|r| r == room) => vec![room.to_string()],
        Some(room) => {
            // As history answers: forbidden for a room that exists.
            let exists = app
                .stores
                .directory
                .find_room(room)
                .await
                .map_err(unavailable)?;
            return Err(match exists {
                Some(_) => ChatError::forbidden(format!("not a member of room {room}")),
                None => ChatError::not_found(format!("no room {room}")),
            });
        }
    };
    let query = SearchQuery::new(text, rooms, room.is_some(), before, limit)?;
    let results = app
        .stores
        .search
        .search(&query)
        .await
        .map_err(unavailable)?;
    let next_before = query.next_before(&results);
    Ok(Page {
        results,
        next_before,
    })
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct SearchParams {
    /// The words to find (all of them): up to 256 characters, 16 words.
    #[serde(default)]
    #[param(required = true)]
    q: String,
    /// Only this room.
    room: Option<String>,
    /// Where the page starts: the `next_before` of the previous page.
    before: Option<String>,
    /// Page size, 20 when absent; clamped to 1..=100.
    limit: Option<u64>,
}

/// A page of search results.
#[derive(Serialize, ToSchema)]
pub struct SearchResults {
    /// Newest first.
    pub results: Vec<SearchHit>,
    /// Present when there may be more: pass it as `before` for the next page.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_before: Option<String>,
}

/// Searches the messages of the rooms the user can read (the rooms they are
/// a member of, DMs included, and the broadcast room).
#[utoipa::path(
    get,
    path = "/api/v1/search",
    operation_id = "search",
    tag = "search",
    security(("bearer" = [])),
    params(SearchParams),
    responses(
        (status = 200, description = "A page of matches", body = SearchResults),
        (status = 400, response = BadRequest),
        (status = 401, response = Unauthorized),
        (status = 403, description = "`forbidden`: not a member of `room`", body = ErrorBody),
        (status = 404, description = "`not_found`: no such `room`", body = ErrorBody),
        (status = 429, response = RateLimited),
        (status = 503, response = Unavailable),
    )
)]
pub async fn rest(
    State(app): State<App>,
    headers: HeaderMap,
    params: Result<Query<SearchParams>, QueryRejection>,
) -> Result<Json<SearchResults>, ApiError> {
    let user = user_of(&app, &headers).await?;
    let Query(p) = params.map_err(|e| ChatError::bad_request(format!("invalid query: {e}")))?;
    let room = p.room.as_deref().filter(|r| !r.is_empty());
    let before = p.before.as_deref().filter(|b| !b.is_empty());
    let page = search(&app, &user.username, &p.q, room, before, p.limit).await?;
    Ok(Json(SearchResults {
        results: page.results,
        next_before: page.next_before,
    }))
}

/// `/search <words>`: the newest matches as text lines.
pub async fn line(app: &App, user: &str, text: &str) -> Result<String, ChatError> {
    let page = search(app, user, text, None, None, Some(LINE_RESULTS)).await?;
    let text = escape(text.trim());
    if page.results.is_empty() {
        return Ok(format!("search \"{text}\": no messages found"));
    }
    let mut out = format!(
        "search \"{text}\": {} newest matches{}",
        page.results.len(),
        if page.next_before.is_some() {
            " (there are more: add words to narrow it down)"
        } else {
            ""
        }
    );
    for hit in &page.results {
        out.push_str(&format!(
            "\n[{}] #{} {}: {}",
            room_label(&escape(&hit.room)),
            hit.seq,
            escape(&hit.from),
            escape(&hit.body)
        ));
    }
    Ok(out)
}

//! Rooms to discover: `GET /api/v1/rooms/public?q=&after=&limit=` lists the
//! public group rooms whose name contains `q` (any case), by name, with
//! their member counts, a page at a time (`next_after` is the `after` of the
//! next page; absent on the last).

use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::http::HeaderMap;
use axum::Json;
use serde::{Deserialize, Serialize};
use troupe_actors::frames::ChatError;
use troupe_actors::rate_limits::Kind;
use utoipa::{IntoParams, ToSchema};

use super::api::responses::{BadRequest, RateLimited, Unauthorized, Unavailable};
use super::rest::{limited_user, ApiError};
use crate::app::App;

/// Rooms one page holds at most (and by default).
const PAGE: u64 = 100;
/// The longest `q`.
const MAX_QUERY: usize = 64;

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct PublicParams {
    /// Only rooms whose name contains this (any case), at most 64 characters.
    #[serde(default)]
    q: String,
    /// Where the page starts: the `next_after` of the previous page.
    #[serde(default)]
    after: String,
    /// Page size: 1 to 100, 100 when absent.
    #[param(minimum = 1, maximum = 100)]
    limit: Option<u64>,
}

/// A public group room.
#[derive(Serialize, ToSchema)]
pub struct PublicRoom {
    pub name: String,
    pub members: u64,
    pub created_by: String,
    /// Ms since the epoch.
    pub created_at: i64,
}

/// A page of public rooms, by name.
#[derive(Serialize, ToSchema)]
pub struct PublicRooms {
    pub rooms: Vec<PublicRoom>,
    /// Present when there may be more: pass it as `after`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_after: Option<String>,
}

/// The public group rooms whose name contains `q`, by name.
#[utoipa::path(
    get,
    path = "/api/v1/rooms/public",
    operation_id = "public_rooms",
    tag = "rooms",
    security(("bearer" = [])),
    params(PublicParams),
    responses(
        (status = 200, description = "A page of rooms", body = PublicRooms),
        (status = 400, response = BadRequest),
        (status = 401, response = Unauthorized),
        (status = 429, response = RateLimited),
        (status = 503, response = Unavailable),
    )
)]
pub async fn public(
    State(app): State<App>,
    headers: HeaderMap,
    query: Result<Query<PublicParams>, QueryRejection>,
) -> Result<Json<PublicRooms>, ApiError> {
    limited_user(&app, &headers, Kind::RestRead).await?;
    let Query(p) = query.map_err(|e| ChatError::bad_request(format!("bad query: {e}")))?;
    let limit = p.limit.unwrap_or(PAGE);
    if !(1..=PAGE).contains(&limit) {
        return Err(ChatError::bad_request(format!("limit must be between 1 and {PAGE}")).into());
    }
    let q = p.q.trim();
    if q.chars().count() > MAX_QUERY {
        return Err(
            ChatError::bad_request(format!("q is longer than {MAX_QUERY} characters")).into(),
        );
    }
    let rooms = app
        .stores
        .directory
        .public_rooms(q, &p.after, limit)
        .await
        .map_err(|e| ChatError::unavailable(e.to_string()))?;
    let next_after = (rooms.len() as u64 == limit)
        .then(|| rooms.last().map(|(r, _)| r.name.clone()))
        .flatten();
    let rooms = rooms
        .into_iter()
        .map(|(r, members)| PublicRoom {
            name: r.name,
            members,
            created_by: r.created_by,
            created_at: r.created_at,
        })
        .collect();
    Ok(Json(PublicRooms { rooms, next_after }))
}

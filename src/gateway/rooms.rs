//! Rooms to discover: `GET /api/v1/rooms/public?q=&after=&limit=` lists the
//! public group rooms whose name contains `q` (any case), by name, with
//! their member counts, a page at a time (`next_after` is the `after` of the
//! next page; absent on the last).

use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::http::HeaderMap;
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Value};
use troupe_actors::frames::ChatError;
use troupe_actors::rate_limits::Kind;

use super::rest::{user_of, ApiError};
use crate::app::App;

/// Rooms one page holds at most (and by default).
const PAGE: u64 = 100;
/// The longest `q`.
const MAX_QUERY: usize = 64;

#[derive(Deserialize)]
pub struct PublicParams {
    #[serde(default)]
    q: String,
    #[serde(default)]
    after: String,
    limit: Option<u64>,
}

pub async fn public(
    State(app): State<App>,
    headers: HeaderMap,
    query: Result<Query<PublicParams>, QueryRejection>,
) -> Result<Json<Value>, ApiError> {
    let user = user_of(&app, &headers).await?;
    app.allow(Kind::RestRead, &format!("user:{}", user.username))
        .await?;
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
    let rooms: Vec<Value> = rooms
        .into_iter()
        .map(|(r, members)| {
            json!({
                "name": r.name,
                "members": members,
                "created_by": r.created_by,
                "created_at": r.created_at,
            })
        })
        .collect();
    let mut body = json!({ "rooms": rooms });
    if let Some(next) = next_after {
        body["next_after"] = json!(next);
    }
    Ok(Json(body))
}

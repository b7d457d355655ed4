//! Friends and blocks over REST:
//!
//! - `POST /api/v1/friends/{user}`: 201 a request sent, 200 when it accepts
//!   `user`'s pending request (or nothing changed: already asked, already
//!   friends); 403 when one of the two blocked the other.
//! - `DELETE /api/v1/friends/{user}`: 204 rejects, cancels or removes; 404
//!   when there was nothing between the two.
//! - `GET /api/v1/friends`: friends with presence, incoming and outgoing
//!   requests.
//! - `PUT` / `DELETE /api/v1/blocks/{user}` (204; the delete 404s when
//!   there was no block), `GET /api/v1/blocks`.
//!
//! Every change is pushed as a `friend` frame to both users' sessions on
//! every node (through the Router), so each of their devices follows.

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::Json;
use serde::Serialize;
use serde_json::json;
use troupe_actors::ask;
use troupe_actors::cluster::router::RouterMsg;
use troupe_actors::frames::{ChatError, ServerFrame, UserStatus};
use troupe_actors::limits::{check_username, now_ms};
use troupe_actors::presence::PresenceMsg;
use troupe_actors::rate_limits::Kind;
use troupe_actors::store::events::DomainEvent;
use troupe_actors::store::friends::RequestOutcome;

use utoipa::ToSchema;

use super::api::responses::{
    BadRequest, ErrorBody, NotFound, RateLimited, Unauthorized, Unavailable,
};
use super::rest::{limited_user, registered, ApiError};
use crate::app::App;

/// Your relation with a user, after a friend request.
#[derive(Serialize, ToSchema)]
pub struct Relation {
    pub user: String,
    /// `requested` (waiting for their answer) or `friends`.
    #[schema(example = "requested")]
    pub status: &'static str,
}

/// A user, by name.
#[derive(Serialize, ToSchema)]
pub struct Named {
    pub user: String,
}

/// Your friends, with presence, and the requests waiting for an answer.
#[derive(Serialize, ToSchema)]
pub struct FriendLists {
    pub friends: Vec<UserStatus>,
    /// Requests to you.
    pub incoming: Vec<Named>,
    /// Your requests.
    pub outgoing: Vec<Named>,
}

/// Whom you blocked.
#[derive(Serialize, ToSchema)]
pub struct BlockList {
    /// Sorted.
    pub blocked: Vec<String>,
}

type ApiResult<T> = Result<T, ApiError>;

/// `other`'s name as registered (names are unique regardless of case): an
/// existing user who is not `me`.
async fn other_user(app: &App, me: &str, other: &str) -> ApiResult<String> {
    let other = registered(app, other).await?;
    if other == me {
        return Err(ChatError::bad_request("that is you").into());
    }
    Ok(other)
}

/// Tells `to`'s sessions, on every node, their relation with `user` now.
fn push(app: &App, to: &str, user: &str, status: &str) {
    let frame = ServerFrame::Friend {
        user: user.to_string(),
        status: status.to_string(),
    };
    let _ = app.refs.router.cast(RouterMsg::ToUsers {
        users: vec![to.to_string()],
        frame: frame.encode().to_string(),
    });
}

/// A domain event about `user` and `other` (docs/events.md), keyed by `user`.
fn event(app: &App, kind: &str, user: &str, other: &str) {
    app.stores.events.publish(DomainEvent::new(
        kind,
        user,
        json!({ "user": user, "other": other }),
    ));
}

fn unavailable(e: impl std::fmt::Display) -> ApiError {
    ChatError::unavailable(e.to_string()).into()
}

/// Asks `user` to be friends, or accepts their pending request.
#[utoipa::path(
    post,
    path = "/api/v1/friends/{user}",
    operation_id = "friend_request",
    tag = "friends",
    security(("bearer" = [])),
    params(("user" = String, Path, description = "The other user's name")),
    responses(
        (status = 201, description = "Request sent", body = Relation),
        (status = 200, description = "Now friends (it answered their request), or nothing changed", body = Relation),
        (status = 400, description = "`bad_request`: yourself, or a malformed name", body = ErrorBody),
        (status = 401, response = Unauthorized),
        (status = 403, description = "`forbidden`: one of the two blocked the other", body = ErrorBody),
        (status = 404, description = "`not_found`: no such user", body = ErrorBody),
        (status = 429, response = RateLimited),
        (status = 503, response = Unavailable),
    )
)]
pub async fn request(
    State(app): State<App>,
    headers: HeaderMap,
    Path(other): Path<String>,
) -> ApiResult<(StatusCode, Json<Relation>)> {
    let me = limited_user(&app, &headers, Kind::Invite).await?.username;
    let other = other_user(&app, &me, &other).await?;
    let outcome = app
        .stores
        .friends
        .request(&me, &other, now_ms())
        .await
        .map_err(unavailable)?;
    let (code, status) = match outcome {
        RequestOutcome::Requested => {
            push(&app, &me, &other, "outgoing");
            push(&app, &other, &me, "incoming");
            event(&app, "friend.requested", &me, &other);
            (StatusCode::CREATED, "requested")
        }
        RequestOutcome::Accepted => {
            push(&app, &me, &other, "friends");
            push(&app, &other, &me, "friends");
            event(&app, "friend.accepted", &me, &other);
            (StatusCode::OK, "friends")
        }
        RequestOutcome::AlreadyRequested => (StatusCode::OK, "requested"),
        RequestOutcome::AlreadyFriends => (StatusCode::OK, "friends"),
        RequestOutcome::Blocked => {
            return Err(ChatError::forbidden(format!(
                "you cannot befriend {other}: one of you blocked the other"
            ))
            .into())
        }
    };
    Ok((
        code,
        Json(Relation {
            user: other,
            status,
        }),
    ))
}

/// Rejects their request, cancels yours, or ends the friendship.
#[utoipa::path(
    delete,
    path = "/api/v1/friends/{user}",
    operation_id = "friend_remove",
    tag = "friends",
    security(("bearer" = [])),
    params(("user" = String, Path, description = "The other user's name")),
    responses(
        (status = 204, description = "Done"),
        (status = 400, response = BadRequest),
        (status = 401, response = Unauthorized),
        (status = 404, description = "`not_found`: nothing between the two", body = ErrorBody),
        (status = 429, response = RateLimited),
        (status = 503, response = Unavailable),
    )
)]
pub async fn remove(
    State(app): State<App>,
    headers: HeaderMap,
    Path(other): Path<String>,
) -> ApiResult<StatusCode> {
    let me = limited_user(&app, &headers, Kind::Invite).await?.username;
    check_username(&other)?;
    let removed = app
        .stores
        .friends
        .remove(&me, &other)
        .await
        .map_err(unavailable)?;
    if !removed {
        return Err(ChatError::not_found(format!("no friendship or request with {other}")).into());
    }
    push(&app, &me, &other, "none");
    push(&app, &other, &me, "none");
    event(&app, "friend.removed", &me, &other);
    Ok(StatusCode::NO_CONTENT)
}

/// Your friends with presence, and the requests waiting for an answer.
#[utoipa::path(
    get,
    path = "/api/v1/friends",
    operation_id = "friends",
    tag = "friends",
    security(("bearer" = [])),
    responses(
        (status = 200, description = "Each list sorted by name", body = FriendLists),
        (status = 401, response = Unauthorized),
        (status = 429, response = RateLimited),
        (status = 503, response = Unavailable),
    )
)]
pub async fn list(State(app): State<App>, headers: HeaderMap) -> ApiResult<Json<FriendLists>> {
    let me = limited_user(&app, &headers, Kind::RestRead).await?.username;
    let lists = app.stores.friends.lists(&me).await.map_err(unavailable)?;
    let friends = ask(&app.refs.presence, |reply| PresenceMsg::Status {
        users: lists.friends.clone(),
        reply,
    })
    .await?;
    let named = |users: Vec<String>| -> Vec<Named> {
        users.into_iter().map(|user| Named { user }).collect()
    };
    Ok(Json(FriendLists {
        friends,
        incoming: named(lists.incoming),
        outgoing: named(lists.outgoing),
    }))
}

/// Blocks `user`: ends any friendship or request between the two; neither
/// can DM the other nor ask to be friends until it is lifted.
#[utoipa::path(
    put,
    path = "/api/v1/blocks/{user}",
    operation_id = "block",
    tag = "friends",
    security(("bearer" = [])),
    params(("user" = String, Path, description = "The user to block")),
    responses(
        (status = 204, description = "Blocked (also when already blocked)"),
        (status = 400, description = "`bad_request`: yourself, or a malformed name", body = ErrorBody),
        (status = 401, response = Unauthorized),
        (status = 404, response = NotFound),
        (status = 429, response = RateLimited),
        (status = 503, response = Unavailable),
    )
)]
pub async fn block(
    State(app): State<App>,
    headers: HeaderMap,
    Path(other): Path<String>,
) -> ApiResult<StatusCode> {
    let me = limited_user(&app, &headers, Kind::Invite).await?.username;
    let other = other_user(&app, &me, &other).await?;
    let lists = app.stores.friends.lists(&me).await.map_err(unavailable)?;
    let related = [&lists.friends, &lists.incoming, &lists.outgoing]
        .iter()
        .any(|l| l.contains(&other));
    app.stores
        .friends
        .block(&me, &other, now_ms())
        .await
        .map_err(unavailable)?;
    push(&app, &me, &other, "blocked");
    event(&app, "user.blocked", &me, &other);
    if related {
        // They learn that the relation ended, not that they are blocked.
        push(&app, &other, &me, "none");
    }
    Ok(StatusCode::NO_CONTENT)
}

/// Lifts a block.
#[utoipa::path(
    delete,
    path = "/api/v1/blocks/{user}",
    operation_id = "unblock",
    tag = "friends",
    security(("bearer" = [])),
    params(("user" = String, Path, description = "The blocked user")),
    responses(
        (status = 204, description = "Unblocked"),
        (status = 400, response = BadRequest),
        (status = 401, response = Unauthorized),
        (status = 404, description = "`not_found`: not blocked", body = ErrorBody),
        (status = 429, response = RateLimited),
        (status = 503, response = Unavailable),
    )
)]
pub async fn unblock(
    State(app): State<App>,
    headers: HeaderMap,
    Path(other): Path<String>,
) -> ApiResult<StatusCode> {
    let me = limited_user(&app, &headers, Kind::Invite).await?.username;
    check_username(&other)?;
    let removed = app
        .stores
        .friends
        .unblock(&me, &other)
        .await
        .map_err(unavailable)?;
    if !removed {
        return Err(ChatError::not_found(format!("{other} is not blocked")).into());
    }
    push(&app, &me, &other, "none");
    event(&app, "user.unblocked", &me, &other);
    Ok(StatusCode::NO_CONTENT)
}

/// Whom you blocked.
#[utoipa::path(
    get,
    path = "/api/v1/blocks",
    operation_id = "blocks",
    tag = "friends",
    security(("bearer" = [])),
    responses(
        (status = 200, description = "Your blocks", body = BlockList),
        (status = 401, response = Unauthorized),
        (status = 429, response = RateLimited),
        (status = 503, response = Unavailable),
    )
)]
pub async fn blocks(State(app): State<App>, headers: HeaderMap) -> ApiResult<Json<BlockList>> {
    let me = limited_user(&app, &headers, Kind::RestRead).await?.username;
    let blocked = app
        .stores
        .friends
        .blocked_by(&me)
        .await
        .map_err(unavailable)?;
    Ok(Json(BlockList { blocked }))
}

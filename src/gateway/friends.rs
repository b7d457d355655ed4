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
use serde_json::{json, Value};
use troupe_actors::ask;
use troupe_actors::cluster::router::RouterMsg;
use troupe_actors::frames::{ChatError, ServerFrame};
use troupe_actors::limits::{check_username, now_ms};
use troupe_actors::presence::PresenceMsg;
use troupe_actors::rate_limits::Kind;
use troupe_actors::store::events::DomainEvent;
use troupe_actors::store::friends::RequestOutcome;

use super::rest::{user_of, ApiError};
use crate::app::App;

type ApiResult<T> = Result<T, ApiError>;

/// The caller, once they may take one `kind` action.
async fn caller(app: &App, headers: &HeaderMap, kind: Kind) -> ApiResult<String> {
    let user = user_of(app, headers).await?;
    app.allow(kind, &format!("user:{}", user.username)).await?;
    Ok(user.username)
}

/// `other`'s name as registered (names are unique regardless of case): an
/// existing user who is not `me`.
async fn other_user(app: &App, me: &str, other: &str) -> ApiResult<String> {
    check_username(other)?;
    let found = app
        .stores
        .directory
        .find_user(other)
        .await
        .map_err(|e| ChatError::unavailable(e.to_string()))?;
    match found {
        Some(u) if u.username == me => Err(ChatError::bad_request("that is you").into()),
        Some(u) => Ok(u.username),
        None => Err(ChatError::not_found(format!("no user {other}")).into()),
    }
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

pub async fn request(
    State(app): State<App>,
    headers: HeaderMap,
    Path(other): Path<String>,
) -> ApiResult<(StatusCode, Json<Value>)> {
    let me = caller(&app, &headers, Kind::Invite).await?;
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
    Ok((code, Json(json!({"user": other, "status": status}))))
}

pub async fn remove(
    State(app): State<App>,
    headers: HeaderMap,
    Path(other): Path<String>,
) -> ApiResult<StatusCode> {
    let me = caller(&app, &headers, Kind::Invite).await?;
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

pub async fn list(State(app): State<App>, headers: HeaderMap) -> ApiResult<Json<Value>> {
    let me = caller(&app, &headers, Kind::RestRead).await?;
    let lists = app.stores.friends.lists(&me).await.map_err(unavailable)?;
    let friends = ask(&app.refs.presence, |reply| PresenceMsg::Status {
        users: lists.friends.clone(),
        reply,
    })
    .await?;
    let named = |users: Vec<String>| -> Vec<Value> {
        users.into_iter().map(|u| json!({"user": u})).collect()
    };
    Ok(Json(json!({
        "friends": friends,
        "incoming": named(lists.incoming),
        "outgoing": named(lists.outgoing),
    })))
}

pub async fn block(
    State(app): State<App>,
    headers: HeaderMap,
    Path(other): Path<String>,
) -> ApiResult<StatusCode> {
    let me = caller(&app, &headers, Kind::Invite).await?;
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

pub async fn unblock(
    State(app): State<App>,
    headers: HeaderMap,
    Path(other): Path<String>,
) -> ApiResult<StatusCode> {
    let me = caller(&app, &headers, Kind::Invite).await?;
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

pub async fn blocks(State(app): State<App>, headers: HeaderMap) -> ApiResult<Json<Value>> {
    let me = caller(&app, &headers, Kind::RestRead).await?;
    let blocked = app
        .stores
        .friends
        .blocked_by(&me)
        .await
        .map_err(unavailable)?;
    Ok(Json(json!({ "blocked": blocked })))
}

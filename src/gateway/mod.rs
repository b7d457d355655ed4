//! The HTTP/WebSocket gateway: one listener for REST, `/ws`, health and readiness.

pub mod access;
pub mod admin;
pub mod admin_page;
pub mod attachments;
pub mod body;
pub mod friends;
#[cfg(test)]
mod fuzz;
pub mod lines;
pub mod messages;
pub mod metrics;
pub mod origin;
pub mod rest;
pub mod room_admin;
pub mod rooms;
pub mod search;
pub mod server;
pub mod web;
pub mod ws;

use axum::extract::DefaultBodyLimit;
use axum::middleware;
use axum::routing::{get, patch, post, put};
use axum::Router;
use tokio::net::TcpListener;

use crate::app::App;

pub fn router(app: App) -> Router {
    let body_limit = app.config.limits.max_frame_bytes;
    let body_rules = body::BodyRules {
        max_bytes: body_limit,
        timeout: app.config.http.body_timeout(),
    };
    let router = Router::new()
        .route("/", get(web::index))
        .route("/web/{*path}", get(web::asset))
        .route("/ws", get(ws::upgrade))
        .route("/api/v1/register", post(rest::register))
        .route("/api/v1/login", post(rest::login))
        .route("/api/v1/logout", post(rest::logout))
        .route(
            "/api/v1/rooms",
            get(rest::list_rooms).post(rest::create_room),
        )
        .route("/api/v1/rooms/public", get(rooms::public))
        .route(
            "/api/v1/rooms/{room}/messages",
            get(rest::room_messages).post(messages::send),
        )
        .route(
            "/api/v1/rooms/{room}",
            patch(room_admin::patch).delete(room_admin::delete),
        )
        .route(
            "/api/v1/rooms/{room}/members",
            get(room_admin::members).post(rest::invite),
        )
        .route(
            "/api/v1/rooms/{room}/members/{user}",
            axum::routing::delete(room_admin::remove_member),
        )
        .route(
            "/api/v1/rooms/{room}/members/{user}/role",
            put(room_admin::set_role),
        )
        .route("/api/v1/users/online", get(rest::users_online))
        .route("/api/v1/search", get(search::rest))
        .merge(messages::routes())
        .route("/api/v1/friends", get(friends::list))
        .route(
            "/api/v1/friends/{user}",
            post(friends::request).delete(friends::remove),
        )
        .route("/api/v1/blocks", get(friends::blocks))
        .route(
            "/api/v1/blocks/{user}",
            put(friends::block).delete(friends::unblock),
        )
        .route("/health", get(rest::health))
        .route("/ready", get(rest::ready))
        .route("/metrics", get(metrics::metrics))
        .route("/admin", get(admin::page))
        .route("/admin/actors", get(admin::actors))
        .route("/admin/nodes", get(admin::nodes))
        .route("/api/v1/events", get(admin::events))
        .fallback(rest::not_found)
        .method_not_allowed_fallback(rest::method_not_allowed)
        .layer(DefaultBodyLimit::max(body_limit))
        // Inside the body layer: the clock starts once the body is in.
        .layer(access::request_timeout(app.config.http.request_timeout()))
        .layer(middleware::from_fn_with_state(body_rules, body::read_body))
        // After the body layer: uploads stream, with limits of their own.
        .merge(attachments::routes());
    access::layers(router).with_state(app)
}

/// Serves until the app's shutdown token fires; then stops accepting.
pub async fn serve(listener: TcpListener, app: App) -> std::io::Result<()> {
    let shutdown = app.shutdown.clone();
    let config = app.config.clone();
    server::serve(listener, router(app), &config.http, shutdown).await
}

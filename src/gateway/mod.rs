//! The HTTP/WebSocket gateway: one listener for REST, `/ws`, health and readiness.

pub mod admin;
pub mod admin_page;
#[cfg(test)]
mod fuzz;
pub mod lines;
pub mod metrics;
pub mod rest;
pub mod ws;

use std::net::SocketAddr;

use axum::extract::DefaultBodyLimit;
use axum::routing::{get, post};
use axum::serve::ListenerExt;
use axum::Router;
use tokio::net::TcpListener;

use crate::app::App;

pub fn router(app: App) -> Router {
    let body_limit = app.config.limits.max_frame_bytes;
    Router::new()
        .route("/ws", get(ws::upgrade))
        .route("/api/v1/register", post(rest::register))
        .route("/api/v1/login", post(rest::login))
        .route("/api/v1/logout", post(rest::logout))
        .route(
            "/api/v1/rooms",
            get(rest::list_rooms).post(rest::create_room),
        )
        .route("/api/v1/rooms/{room}/messages", get(rest::room_messages))
        .route("/api/v1/rooms/{room}/members", post(rest::invite))
        .route("/api/v1/users/online", get(rest::users_online))
        .route("/health", get(rest::health))
        .route("/ready", get(rest::ready))
        .route("/metrics", get(metrics::metrics))
        .route("/admin", get(admin::page))
        .route("/admin/actors", get(admin::actors))
        .route("/admin/nodes", get(admin::nodes))
        .fallback(rest::not_found)
        .method_not_allowed_fallback(rest::method_not_allowed)
        .layer(DefaultBodyLimit::max(body_limit))
        .with_state(app)
}

/// Serves until the app's shutdown token fires; then stops accepting.
pub async fn serve(listener: TcpListener, app: App) -> std::io::Result<()> {
    let shutdown = app.shutdown.clone();
    // Chat frames are small and latency matters: no Nagle (with the peer's
    // delayed ACK it holds small writes back by ~40 ms).
    let listener = listener.tap_io(|tcp| {
        if let Err(e) = tcp.set_nodelay(true) {
            tracing::debug!(error = %e, "TCP_NODELAY");
        }
    });
    axum::serve(
        listener,
        router(app).into_make_service_with_connect_info::<SocketAddr>(),
    )
    .with_graceful_shutdown(async move { shutdown.cancelled().await })
    .await
}

//! The HTTP/WebSocket gateway: one listener for REST, `/ws`, health and readiness.

pub mod access;
pub mod admin;
pub mod admin_page;
pub mod api;
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
use axum::Router;
use tokio::net::TcpListener;
use utoipa::OpenApi;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::app::App;

/// Every endpoint but the streaming ones (attachments), each registered
/// with its documentation: `routes!` takes the method and path from the
/// handler's `#[utoipa::path]`. To add an endpoint, annotate its handler
/// and add one line here (see `api`); never a plain `.route(...)`. One
/// `routes!` per path (handlers of one path together).
fn endpoints() -> OpenApiRouter<App> {
    OpenApiRouter::with_openapi(api::ApiDoc::openapi())
        .routes(routes!(web::index))
        .routes(routes!(web::asset))
        .routes(routes!(ws::upgrade))
        .routes(routes!(rest::register))
        .routes(routes!(rest::login))
        .routes(routes!(rest::logout))
        .routes(routes!(rest::list_rooms, rest::create_room))
        .routes(routes!(rooms::public))
        .routes(routes!(rest::room_messages, messages::send))
        .routes(routes!(room_admin::patch, room_admin::delete))
        .routes(routes!(room_admin::members, rest::invite))
        .routes(routes!(room_admin::remove_member))
        .routes(routes!(room_admin::set_role))
        .routes(routes!(rest::users_online))
        .routes(routes!(search::rest))
        .merge(messages::routes())
        .routes(routes!(friends::list))
        .routes(routes!(friends::request, friends::remove))
        .routes(routes!(friends::blocks))
        .routes(routes!(friends::block, friends::unblock))
        .routes(routes!(rest::health))
        .routes(routes!(rest::ready))
        .routes(routes!(metrics::metrics))
        .routes(routes!(admin::page))
        .routes(routes!(admin::actors))
        .routes(routes!(admin::nodes))
        .routes(routes!(admin::events))
        .routes(routes!(api::openapi_json))
        .routes(routes!(api::frames_schema))
        .routes(routes!(api::page::page))
}

/// The OpenAPI document of everything [`router`] serves: the same
/// registrations, without the layers.
pub fn openapi() -> utoipa::openapi::OpenApi {
    let mut doc = endpoints().merge(attachments::routes()).into_openapi();
    // axum's catch-all `{*name}` is an ordinary `{name}` in OpenAPI.
    let paths = std::mem::take(&mut doc.paths.paths);
    doc.paths.paths = paths
        .into_iter()
        .map(|(path, item)| (path.replace("{*", "{"), item))
        .collect();
    doc
}

pub fn router(app: App) -> Router {
    let body_limit = app.config.limits.max_frame_bytes;
    let body_rules = body::BodyRules {
        max_bytes: body_limit,
        timeout: app.config.http.body_timeout(),
    };
    let (buffered, _) = endpoints().split_for_parts();
    let (streaming, _) = attachments::routes().split_for_parts();
    let router = buffered
        .fallback(rest::not_found)
        .method_not_allowed_fallback(rest::method_not_allowed)
        .layer(DefaultBodyLimit::max(body_limit))
        // Inside the body layer: the clock starts once the body is in.
        .layer(access::request_timeout(app.config.http.request_timeout()))
        .layer(middleware::from_fn_with_state(body_rules, body::read_body))
        // After the body layer: uploads stream, with limits of their own.
        .merge(streaming);
    access::layers(router).with_state(app)
}

/// Serves until the app's shutdown token fires; then stops accepting.
pub async fn serve(listener: TcpListener, app: App) -> std::io::Result<()> {
    let shutdown = app.shutdown.clone();
    let config = app.config.clone();
    server::serve(listener, router(app), &config.http, shutdown).await
}

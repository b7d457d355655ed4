//! The HTTP layers every request goes through (tower-http): a request id
//! (`x-request-id`: the client's, or a new UUID; echoed in the response), a
//! span per request carrying it, and one access-log line per response.
//!
//! A REST request whose answer is not ready within `http.request_timeout_ms`
//! is answered 503 (the WebSocket upgrade answers at once, and attachment
//! transfers are outside this layer with timeouts of their own).
//!
//! The access log names the route's template (`/api/v1/rooms/{room}`), not
//! the path, and never the query string: a room name is a user's data, and
//! `/ws?token=` would put a credential in the logs.

use std::time::Duration;

use axum::extract::MatchedPath;
use axum::http::{HeaderName, Request, Response, StatusCode};
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::timeout::TimeoutLayer;
use tower_http::trace::TraceLayer;
use tracing::Span;

const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// Answers 503 when the handler has not answered within `timeout`.
pub fn request_timeout(timeout: Duration) -> TimeoutLayer {
    TimeoutLayer::with_status_code(StatusCode::SERVICE_UNAVAILABLE, timeout)
}

/// Adds the request-id, span and access-log layers to `router`.
pub fn layers<S: Clone + Send + Sync + 'static>(router: axum::Router<S>) -> axum::Router<S> {
    let trace = TraceLayer::new_for_http()
        .make_span_with(|request: &Request<_>| {
            let route = request
                .extensions()
                .get::<MatchedPath>()
                .map(|p| p.as_str().to_string())
                .unwrap_or_else(|| "unmatched".to_string());
            let id = request
                .headers()
                .get(&REQUEST_ID)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("-");
            tracing::info_span!("http", method = %request.method(), route = %route, request_id = %id)
        })
        .on_request(())
        .on_response(|response: &Response<_>, latency: Duration, _span: &Span| {
            tracing::info!(
                target: "troupe::access",
                status = response.status().as_u16(),
                latency_ms = latency.as_secs_f64() * 1000.0,
                "request"
            );
        })
        .on_failure(());
    // Outermost first: the id is set before the span reads it, and copied to
    // the response after.
    router
        .layer(PropagateRequestIdLayer::new(REQUEST_ID))
        .layer(trace)
        .layer(SetRequestIdLayer::new(REQUEST_ID, MakeRequestUuid))
}

//! `GET /metrics`: every metric of this node in the OpenMetrics text format
//! (no auth), for an operator's scraper. What each one means: docs/metrics.md.

use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;

use crate::app::App;

/// Every metric of this node, in the Prometheus text format.
#[utoipa::path(
    get,
    path = "/metrics",
    tag = "operations",
    responses((status = 200, description = "Prometheus text exposition (docs/metrics.md)",
        content_type = "text/plain; version=0.0.4", body = String))
)]
pub async fn metrics(State(app): State<App>) -> impl IntoResponse {
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        troupe_actors::metrics::render(app.node_name()),
    )
}

//! Request bodies: refused before they are read when they say they are
//! over the size limit (413), read whole within `http.body_timeout_ms`
//! (408 otherwise), then handed to the handlers buffered.
//!
//! Hand-written rather than tower-http's layers: `RequestBodyLimitLayer`
//! answers a plain-text 413 (our errors are JSON), and
//! `RequestBodyTimeoutLayer` restarts its timer at each chunk, so a client
//! dripping a byte at a time holds a request open forever; a deadline for
//! the whole body needs the body read here. Every handler buffers its
//! (small JSON) body anyway.

use std::time::Duration;

use axum::body::{Body, HttpBody};
use axum::extract::{Request, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::Json;
use http_body_util::{BodyExt, LengthLimitError, Limited};
use troupe_actors::frames::ErrorCode;
use troupe_actors::metrics::{self, Refusal};

use super::api::responses::ErrorBody;

/// What a request body may be.
#[derive(Debug, Clone, Copy)]
pub struct BodyRules {
    pub max_bytes: usize,
    pub timeout: Duration,
}

pub async fn read_body(State(rules): State<BodyRules>, request: Request, next: Next) -> Response {
    if request.body().is_end_stream() {
        return next.run(request).await;
    }
    let declared = request
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > rules.max_bytes as u64) {
        return too_large(rules.max_bytes);
    }
    let (parts, body) = request.into_parts();
    let read = tokio::time::timeout(rules.timeout, Limited::new(body, rules.max_bytes).collect());
    let body = match read.await {
        Ok(Ok(body)) => body.to_bytes(),
        Ok(Err(e)) if e.is::<LengthLimitError>() => return too_large(rules.max_bytes),
        Ok(Err(e)) => {
            tracing::debug!(error = %e, "request body unreadable");
            return error(
                StatusCode::BAD_REQUEST,
                ErrorCode::BadRequest,
                "the request body could not be read",
            );
        }
        Err(_) => {
            metrics::refused(Refusal::BodyTimeout);
            return error(
                StatusCode::REQUEST_TIMEOUT,
                ErrorCode::BadRequest,
                &format!(
                    "the request body did not arrive within {} ms",
                    rules.timeout.as_millis()
                ),
            );
        }
    };
    next.run(Request::from_parts(parts, Body::from(body))).await
}

fn too_large(max: usize) -> Response {
    metrics::refused(Refusal::BodyTooLarge);
    error(
        StatusCode::PAYLOAD_TOO_LARGE,
        ErrorCode::TooLarge,
        &format!("request body over the size limit ({max} bytes)"),
    )
}

/// A JSON error, and the connection closed after it: the rest of the body
/// is never read, so the connection cannot carry another request.
fn error(status: StatusCode, code: ErrorCode, message: &str) -> Response {
    let body = ErrorBody::new(code, message);
    let mut response = (status, Json(body)).into_response();
    response
        .headers_mut()
        .insert(header::CONNECTION, HeaderValue::from_static("close"));
    response
}

//! The error body every REST endpoint answers with, and the error responses
//! the endpoints share, as reusable OpenAPI response components: an
//! endpoint lists `(status = 401, response = Unauthorized)` rather than
//! describing the body again.

use serde::Serialize;
use troupe_actors::frames::{ChatError, ErrorCode};
use utoipa::{ToResponse, ToSchema};

/// `{"error": {"code", "message", "retry_after_ms"?}}`: every error of the
/// REST API, whatever its status.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

/// What went wrong.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ErrorDetail {
    pub code: HttpErrorCode,
    /// For people; may change between versions (match on `code`).
    pub message: String,
    /// Only with `rate_limited`: when to retry, in milliseconds (the
    /// `Retry-After` header says the same in whole seconds).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub retry_after_ms: Option<u64>,
}

/// The protocol's error codes (the same as in WebSocket `error` frames), and
/// two that only HTTP has.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
#[serde(untagged)]
pub enum HttpErrorCode {
    Protocol(ErrorCode),
    Http(HttpOnlyCode),
}

/// Error codes of attachment transfers only.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum HttpOnlyCode {
    /// 415: the upload's type is not in `attachments.allowed_types`.
    UnsupportedType,
    /// 416: the `Range` asked for starts past the end of the file.
    RangeNotSatisfiable,
}

impl ErrorBody {
    pub fn new(code: impl Into<HttpErrorCode>, message: impl Into<String>) -> Self {
        ErrorBody {
            error: ErrorDetail {
                code: code.into(),
                message: message.into(),
                retry_after_ms: None,
            },
        }
    }
}

impl From<ErrorCode> for HttpErrorCode {
    fn from(code: ErrorCode) -> Self {
        HttpErrorCode::Protocol(code)
    }
}

impl From<HttpOnlyCode> for HttpErrorCode {
    fn from(code: HttpOnlyCode) -> Self {
        HttpErrorCode::Http(code)
    }
}

impl From<&ChatError> for ErrorBody {
    fn from(e: &ChatError) -> Self {
        ErrorBody {
            error: ErrorDetail {
                code: e.code.into(),
                message: e.message.clone(),
                retry_after_ms: e.retry_after_ms,
            },
        }
    }
}

/// `bad_request`: a malformed body, query or path (the message says which).
#[derive(ToResponse)]
#[allow(dead_code)]
pub struct BadRequest(ErrorBody);

/// `unauthorized`: no `Authorization: Bearer` token, or one that is unknown
/// or expired.
#[derive(ToResponse)]
#[allow(dead_code)]
pub struct Unauthorized(ErrorBody);

/// `forbidden`: the user may not do this (not a member of the room, ...).
#[derive(ToResponse)]
#[allow(dead_code)]
pub struct Forbidden(ErrorBody);

/// `not_found`: no such room, user or attachment.
#[derive(ToResponse)]
#[allow(dead_code)]
pub struct NotFound(ErrorBody);

/// `conflict`: it exists already.
#[derive(ToResponse)]
#[allow(dead_code)]
pub struct Conflict(ErrorBody);

/// `bad_request`: the request body did not arrive within
/// `http.body_timeout_ms`; the connection is closed.
#[derive(ToResponse)]
#[allow(dead_code)]
pub struct BodyTimeout(ErrorBody);

/// `too_large`: the request body is over `limits.max_frame_bytes`; the
/// connection is closed.
#[derive(ToResponse)]
#[allow(dead_code)]
pub struct TooLarge(ErrorBody);

/// `rate_limited`: over this user's (or address's) rate for this action;
/// retry after `Retry-After` seconds.
#[derive(ToResponse)]
#[response(headers(("Retry-After" = u64, description = "Seconds to wait (rounded up)")))]
#[allow(dead_code)]
pub struct RateLimited(ErrorBody);

/// `unavailable`: a store or the room's node does not answer, the request
/// took longer than `http.request_timeout_ms`, or the node is shutting down
/// or over its connection cap; try again.
#[derive(ToResponse)]
#[allow(dead_code)]
pub struct Unavailable(ErrorBody);

/// `not_found`: the admin endpoints exist only when `admin.token` is set.
#[derive(ToResponse)]
#[allow(dead_code)]
pub struct AdminOff(ErrorBody);

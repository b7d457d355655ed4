//! `POST /api/v1/rooms/{room}/attachments` and `GET /api/v1/attachments/{id}`.
//!
//! These routes stream their bodies: they sit outside `body.rs`'s layer
//! (which buffers every other request whole) and enforce their own limit
//! (`attachments.max_bytes`: from `Content-Length` before reading, then on
//! the bytes as they arrive) and their own deadline
//! (`attachments.upload_timeout_ms`). An upload is the request body with its
//! `Content-Type`, or the file part of a `multipart/form-data` body.

use std::time::Duration;

use axum::body::BodyDataStream;
use axum::body::{Body, Bytes};
use axum::extract::{Path, Query, Request, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use futures_util::{Stream, StreamExt};
use serde::{Deserialize, Serialize};
use troupe_actors::ask;
use troupe_actors::frames::{ChatError, ErrorCode};
use troupe_actors::limits::check_room_ref;
use troupe_actors::rate_limits::Kind;
use troupe_actors::room::supervisor::RoomSupervisorMsg;
use troupe_actors::room::RoomMsg;
use troupe_entity::attachment;

use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::api::responses::{
    BadRequest, ErrorBody, Forbidden, HttpErrorCode, HttpOnlyCode, NotFound, RateLimited,
    Unauthorized, Unavailable,
};
use super::rest::bearer_token;
use crate::app::App;
use crate::attachments::{AttachmentError, Upload};

/// Room for the multipart framing (boundaries, part headers, other small
/// fields) on top of the file itself.
const MULTIPART_OVERHEAD: u64 = 64 * 1024;
/// How long an upload refused midway keeps reading (and discarding) the
/// client's body, so that the client is sending nothing when the
/// connection closes and gets the answer rather than a reset.
const DRAIN_FOR: Duration = Duration::from_secs(5);

/// The attachment routes; merged into the router after `body.rs`'s layer.
pub fn routes() -> OpenApiRouter<App> {
    OpenApiRouter::new()
        .routes(routes!(upload))
        .routes(routes!(download, remove))
}

/// A JSON error of the usual shape.
fn error(
    status: StatusCode,
    code: impl Into<HttpErrorCode>,
    message: impl Into<String>,
) -> Response {
    (status, Json(ErrorBody::new(code, message))).into_response()
}

fn chat_error(e: ChatError) -> Response {
    super::rest::ApiError(e).into_response()
}

/// The answer to a request whose body was not read to the end: the
/// connection cannot carry another request.
fn closing(mut response: Response) -> Response {
    response
        .headers_mut()
        .insert(header::CONNECTION, HeaderValue::from_static("close"));
    response
}

fn too_large(max: u64) -> Response {
    troupe_actors::metrics::refused(troupe_actors::metrics::Refusal::BodyTooLarge);
    error(
        StatusCode::PAYLOAD_TOO_LARGE,
        ErrorCode::TooLarge,
        format!("the file is over the size limit ({max} bytes)"),
    )
}

fn unsupported(what: &str) -> Response {
    error(
        StatusCode::UNSUPPORTED_MEDIA_TYPE,
        HttpOnlyCode::UnsupportedType,
        format!("{what} is not an allowed attachment type (attachments.allowed_types)"),
    )
}

async fn user_of(app: &App, headers: &HeaderMap, kind: Kind) -> Result<String, ChatError> {
    let token = bearer_token(headers).ok_or_else(|| {
        ChatError::new(
            ErrorCode::Unauthorized,
            "missing Authorization: Bearer <token>",
        )
    })?;
    let user = app.accounts.authenticate(token).await?;
    app.allow(kind, &format!("user:{}", user.username)).await?;
    Ok(user.username)
}

/// Forbidden unless `user` may read `room` (asked of the room itself, on
/// whichever node owns it: the same rule as history).
async fn check_member(app: &App, user: &str, room: &str) -> Result<(), ChatError> {
    check_room_ref(room)?;
    let name = room.to_string();
    let actor = ask(&app.refs.rooms, |reply| RoomSupervisorMsg::Get {
        name,
        create: None,
        reply,
    })
    .await??;
    let user = user.to_string();
    ask(&actor, |reply| RoomMsg::Info { user, reply }).await??;
    Ok(())
}

/// A file name safe to store and to put in a header: its last path
/// component, without control characters, quotes or separators, at most
/// 200 bytes; None when nothing is left.
pub fn sanitize_filename(name: &str) -> Option<String> {
    let base = name.rsplit(['/', '\\']).next().unwrap_or_default();
    let mut out = String::new();
    for c in base.chars() {
        if c.is_control() || matches!(c, '"' | ';' | ':' | '*' | '?' | '<' | '>' | '|') {
            continue;
        }
        // Bidi controls would show the name reversed.
        if matches!(c, '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}') {
            continue;
        }
        if out.len() + c.len_utf8() > 200 {
            break;
        }
        out.push(c);
    }
    let out = out.trim().trim_start_matches('.').to_string();
    (!out.is_empty()).then_some(out)
}

/// `type/subtype` (lowercase) and the value to store, from a Content-Type.
fn parse_type(value: &str) -> Option<(String, String)> {
    let parsed: mime::Mime = value.parse().ok()?;
    let essence = parsed.essence_str().to_ascii_lowercase();
    // Only the charset is kept: it matters for text, nothing else does.
    let stored = match parsed.get_param(mime::CHARSET) {
        Some(charset) if charset.as_str().len() <= 40 => {
            format!(
                "{essence}; charset={}",
                charset.as_str().to_ascii_lowercase()
            )
        }
        _ => essence.clone(),
    };
    Some((essence, stored))
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct UploadQuery {
    /// The file's name, for a raw body (a multipart part names itself).
    filename: Option<String>,
}

/// Uploads a file into a room the user is a member of: the request body is
/// the file with its `Content-Type`, or the file part of a
/// `multipart/form-data` body. Post the answer's `url` in a message to
/// share it. Limits: `attachments.max_bytes`, `attachments.allowed_types`,
/// `attachments.upload_timeout_ms`.
#[utoipa::path(
    post,
    path = "/api/v1/rooms/{room}/attachments",
    operation_id = "upload_attachment",
    tag = "attachments",
    security(("bearer" = [])),
    params(("room" = String, Path, description = "The room's name"), UploadQuery),
    request_body(
        description = "The file (any allowed type), or a multipart form with a file part",
        content(("application/octet-stream"), ("image/*"), ("multipart/form-data"))
    ),
    responses(
        (status = 201, description = "Stored", body = AttachmentInfo),
        (status = 400, response = BadRequest),
        (status = 401, response = Unauthorized),
        (status = 403, response = Forbidden),
        (status = 404, response = NotFound),
        (status = 408, description = "`bad_request`: the upload did not arrive within `attachments.upload_timeout_ms`", body = ErrorBody),
        (status = 413, description = "`too_large`: over `attachments.max_bytes`", body = ErrorBody),
        (status = 415, description = "`unsupported_type`: not in `attachments.allowed_types`", body = ErrorBody),
        (status = 429, response = RateLimited),
        (status = 503, response = Unavailable),
    )
)]
async fn upload(
    State(app): State<App>,
    Path(room): Path<String>,
    query: Result<Query<UploadQuery>, axum::extract::rejection::QueryRejection>,
    request: Request,
) -> Response {
    let max = app.attachments.config().max_bytes;
    let (parts, body) = request.into_parts();
    let headers = parts.headers;
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string();
    let parsed = parse_type(&content_type);
    let multipart = parsed
        .as_ref()
        .is_some_and(|(essence, _)| essence == "multipart/form-data");
    let allowance = if multipart {
        max + MULTIPART_OVERHEAD
    } else {
        max
    };
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > allowance) {
        // Refused unread: the connection closes rather than take it in.
        return closing(too_large(max));
    }
    // From here on a refusal reads what the client still sends (see `Limit`).
    let body = Limit::new(body.into_data_stream(), allowance);
    let Ok(Query(query)) = query else {
        return error(
            StatusCode::BAD_REQUEST,
            ErrorCode::BadRequest,
            "invalid query string",
        );
    };
    let user = match user_of(&app, &headers, Kind::Message).await {
        Ok(user) => user,
        Err(e) => return chat_error(e),
    };
    let Some((essence, stored_type)) = parsed else {
        return unsupported(if content_type.is_empty() {
            "a body without Content-Type"
        } else {
            "this Content-Type"
        });
    };
    if !multipart && !app.attachments.allows(&essence) {
        return unsupported(&essence);
    }
    if let Err(e) = check_member(&app, &user, &room).await {
        return chat_error(e);
    }
    let deadline = app.attachments.config().upload_timeout();
    let result = if multipart {
        let Ok(boundary) = multer::parse_boundary(&content_type) else {
            return error(
                StatusCode::BAD_REQUEST,
                ErrorCode::BadRequest,
                "multipart/form-data without a boundary",
            );
        };
        let upload = from_multipart(&app, &room, &user, body, boundary, query.filename);
        tokio::time::timeout(deadline, upload).await
    } else {
        let filename = query.filename.as_deref().and_then(sanitize_filename);
        let upload = from_body(&app, &room, &user, stored_type, filename, body);
        tokio::time::timeout(deadline, upload).await
    };
    match result {
        Ok(Ok(row)) => {
            tracing::info!(attachment = %row.id, room = %row.room, user = %row.uploader, bytes = row.size, "attachment uploaded");
            (StatusCode::CREATED, Json(describe(&row))).into_response()
        }
        Ok(Err(refused)) => refused.into_response(max),
        Err(_) => error(
            StatusCode::REQUEST_TIMEOUT,
            ErrorCode::BadRequest,
            format!(
                "the upload did not arrive within {} ms",
                deadline.as_millis()
            ),
        ),
    }
}

/// An upload refused or failed on the way.
enum Refused {
    TooLarge,
    Unsupported(String),
    Bad(String),
    Unavailable(String),
}

impl Refused {
    fn into_response(self, max: u64) -> Response {
        match self {
            Refused::TooLarge => too_large(max),
            Refused::Unsupported(t) => unsupported(&t),
            Refused::Bad(why) => error(StatusCode::BAD_REQUEST, ErrorCode::BadRequest, why),
            Refused::Unavailable(why) => {
                tracing::warn!(error = %why, "an upload failed");
                error(StatusCode::SERVICE_UNAVAILABLE, ErrorCode::Unavailable, why)
            }
        }
    }
}

impl From<AttachmentError> for Refused {
    fn from(e: AttachmentError) -> Self {
        match e {
            AttachmentError::TooLarge(_) => Refused::TooLarge,
            AttachmentError::Empty => Refused::Bad("the file is empty".into()),
            e => Refused::Unavailable(e.to_string()),
        }
    }
}

/// A raw body: the file itself.
async fn from_body(
    app: &App,
    room: &str,
    user: &str,
    content_type: String,
    filename: Option<String>,
    mut stream: Limit<BodyDataStream>,
) -> Result<attachment::Model, Refused> {
    let mut upload = app
        .attachments
        .begin(room, user, content_type, filename)
        .await?;
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|e| {
            if e.is::<OverLimit>() {
                Refused::TooLarge
            } else {
                Refused::Bad(format!("the body could not be read: {e}"))
            }
        })?;
        upload.push(chunk).await?;
    }
    Ok(upload.finish().await?)
}

/// A `multipart/form-data` body: the first part with a file name (or the
/// part named `file`) is the file; other parts are skipped.
async fn from_multipart(
    app: &App,
    room: &str,
    user: &str,
    body: Limit<BodyDataStream>,
    boundary: String,
    query_name: Option<String>,
) -> Result<attachment::Model, Refused> {
    let mut parts = multer::Multipart::new(body, boundary);
    let mut upload: Option<Upload> = None;
    let mut done = None;
    loop {
        let field = match parts.next_field().await {
            Ok(Some(field)) => field,
            Ok(None) => break,
            Err(e) => return Err(multipart_error(e)),
        };
        let is_file = field.file_name().is_some() || field.name() == Some("file");
        if !is_file || done.is_some() || upload.is_some() {
            // Skipped, but read: the body goes on after it.
            let mut field = field;
            while field.chunk().await.map_err(multipart_error)?.is_some() {}
            continue;
        }
        let filename = query_name
            .as_deref()
            .or(field.file_name())
            .and_then(sanitize_filename);
        let Some((essence, stored)) = field.content_type().and_then(|t| parse_type(t.as_ref()))
        else {
            return Err(Refused::Unsupported(
                "a file part without Content-Type".into(),
            ));
        };
        if !app.attachments.allows(&essence) {
            return Err(Refused::Unsupported(essence));
        }
        let mut started = app.attachments.begin(room, user, stored, filename).await?;
        let mut field = field;
        while let Some(chunk) = field.chunk().await.map_err(multipart_error)? {
            started.push(chunk).await?;
        }
        upload = Some(started);
        // The rest of the body is read before the upload counts: a
        // malformed end refuses it.
        done = Some(());
    }
    match upload {
        Some(upload) => Ok(upload.finish().await?),
        None => Err(Refused::Bad(
            "no file part (a part with a filename, or named \"file\")".into(),
        )),
    }
}

fn multipart_error(e: multer::Error) -> Refused {
    if let multer::Error::StreamReadFailed(inner) = &e {
        if inner.is::<OverLimit>() {
            return Refused::TooLarge;
        }
    }
    Refused::Bad(format!("invalid multipart body: {e}"))
}

/// The body stream went past the limit.
#[derive(Debug, thiserror::Error)]
#[error("over the size limit")]
struct OverLimit;

/// The request body, failing once more than `max` bytes went through.
/// Dropped before its end (any refusal), it reads and discards what the
/// client still sends, for a while and up to `max` bytes, in the
/// background: the client then gets the answer instead of a connection
/// reset under its feet.
struct Limit<S>
where
    S: Stream<Item = Result<Bytes, axum::Error>> + Send + Unpin + 'static,
{
    /// None once the body ended.
    inner: Option<S>,
    left: u64,
    max: u64,
}

impl<S> Limit<S>
where
    S: Stream<Item = Result<Bytes, axum::Error>> + Send + Unpin + 'static,
{
    fn new(inner: S, max: u64) -> Self {
        Limit {
            inner: Some(inner),
            left: max,
            max,
        }
    }
}

impl<S> Stream for Limit<S>
where
    S: Stream<Item = Result<Bytes, axum::Error>> + Send + Unpin + 'static,
{
    type Item = Result<Bytes, Box<dyn std::error::Error + Send + Sync>>;

    fn poll_next(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Self::Item>> {
        use std::task::Poll;
        let Some(inner) = self.inner.as_mut() else {
            return Poll::Ready(None);
        };
        match inner.poll_next_unpin(cx) {
            Poll::Ready(Some(Ok(chunk))) => {
                let n = chunk.len() as u64;
                if n > self.left {
                    self.left = 0;
                    return Poll::Ready(Some(Err(Box::new(OverLimit))));
                }
                self.left -= n;
                Poll::Ready(Some(Ok(chunk)))
            }
            Poll::Ready(Some(Err(e))) => {
                // The client is gone or broke the framing: nothing to drain.
                self.inner = None;
                Poll::Ready(Some(Err(Box::new(e))))
            }
            Poll::Ready(None) => {
                self.inner = None;
                Poll::Ready(None)
            }
            Poll::Pending => Poll::Pending,
        }
    }
}

impl<S> Drop for Limit<S>
where
    S: Stream<Item = Result<Bytes, axum::Error>> + Send + Unpin + 'static,
{
    fn drop(&mut self) {
        let (Some(mut rest), Ok(runtime)) =
            (self.inner.take(), tokio::runtime::Handle::try_current())
        else {
            return;
        };
        let budget = self.max;
        runtime.spawn(async move {
            let mut read = 0u64;
            let _ = tokio::time::timeout(DRAIN_FOR, async {
                while let Some(Ok(chunk)) = rest.next().await {
                    read += chunk.len() as u64;
                    if read > budget {
                        break;
                    }
                }
            })
            .await;
        });
    }
}

/// A stored attachment.
#[derive(Debug, Serialize, ToSchema)]
pub struct AttachmentInfo {
    /// 32 lowercase hex characters.
    pub id: String,
    /// Where to download it (`GET`), relative to the node.
    #[schema(example = "/api/v1/attachments/0123456789abcdef0123456789abcdef")]
    pub url: String,
    /// Bytes.
    pub size: i64,
    pub content_type: String,
    /// Lowercase hex of the SHA-256 of the bytes (also the download's ETag).
    pub sha256: String,
    /// The sanitised name it was uploaded under, if any.
    pub filename: Option<String>,
    pub room: String,
    pub uploader: String,
    /// Unix milliseconds.
    pub created_at: i64,
}

/// The JSON of an attachment.
pub fn describe(row: &attachment::Model) -> AttachmentInfo {
    AttachmentInfo {
        id: row.id.clone(),
        url: format!("/api/v1/attachments/{}", row.id),
        size: row.size,
        content_type: row.content_type.clone(),
        sha256: row.sha256.clone(),
        filename: row.filename.clone(),
        room: row.room.clone(),
        uploader: row.uploader.clone(),
        created_at: row.created_at,
    }
}

/// What a `Range` header asks of a file of `size` bytes.
#[derive(Debug, PartialEq, Eq)]
pub enum Ranged {
    /// No usable range: the whole file (200).
    Whole,
    /// One satisfiable range, `start..end` (206).
    Part(u64, u64),
    /// 416.
    Unsatisfiable,
}

/// One `bytes=` range (RFC 9110 14.1.2); several ranges, other units or a
/// malformed header are served whole, as the RFC allows.
pub fn parse_range(value: Option<&str>, size: u64) -> Ranged {
    let Some(spec) = value.and_then(|v| v.trim().strip_prefix("bytes=")) else {
        return Ranged::Whole;
    };
    if spec.contains(',') {
        return Ranged::Whole;
    }
    let Some((first, last)) = spec.trim().split_once('-') else {
        return Ranged::Whole;
    };
    let number = |s: &str| -> Option<u64> {
        let s = s.trim();
        (!s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()))
            .then(|| s.parse().ok())
            .flatten()
    };
    match (first.trim().is_empty(), number(first), number(last)) {
        // `-N`: the last N bytes.
        (true, _, Some(n)) => {
            if n == 0 || size == 0 {
                Ranged::Unsatisfiable
            } else {
                Ranged::Part(size.saturating_sub(n), size)
            }
        }
        (false, Some(start), end) if last.trim().is_empty() || end.is_some() => {
            if start >= size {
                return Ranged::Unsatisfiable;
            }
            match end {
                Some(end) if end < start => Ranged::Whole,
                Some(end) => Ranged::Part(start, end.min(size - 1) + 1),
                None => Ranged::Part(start, size),
            }
        }
        _ => Ranged::Whole,
    }
}

/// `attachment` (or `inline` for media a browser shows safely) with the
/// file name, ASCII and RFC 8187 UTF-8.
fn disposition(row: &attachment::Model) -> HeaderValue {
    let inline = [
        "image/png",
        "image/jpeg",
        "image/gif",
        "image/webp",
        "image/avif",
    ]
    .contains(&row.content_type.as_str())
        || row.content_type.starts_with("audio/")
        || row.content_type.starts_with("video/");
    let kind = if inline { "inline" } else { "attachment" };
    let name = row.filename.clone().unwrap_or_else(|| row.id.clone());
    let ascii: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_graphic() && c != '"' && c != '\\' || c == ' ' {
                c
            } else {
                '_'
            }
        })
        .collect();
    let encoded = percent_encoding::utf8_percent_encode(&name, percent_encoding::NON_ALPHANUMERIC);
    let value = format!("{kind}; filename=\"{ascii}\"; filename*=UTF-8''{encoded}");
    HeaderValue::from_str(&value).unwrap_or_else(|_| HeaderValue::from_static("attachment"))
}

/// Downloads an attachment (members of its room only), whole or one
/// `Range` of it.
#[utoipa::path(
    get,
    path = "/api/v1/attachments/{id}",
    operation_id = "download_attachment",
    tag = "attachments",
    security(("bearer" = [])),
    params(
        ("id" = String, Path, description = "The attachment's id"),
        ("Range" = Option<String>, Header, description = "One `bytes=start-end` range"),
    ),
    responses(
        (status = 200, description = "The file, with its Content-Type, ETag and Content-Disposition",
            content_type = "application/octet-stream", body = Vec<u8>),
        (status = 206, description = "The range asked for, with Content-Range",
            content_type = "application/octet-stream", body = Vec<u8>),
        (status = 401, response = Unauthorized),
        (status = 403, description = "`forbidden`: not a member of the attachment's room", body = ErrorBody),
        (status = 404, description = "`not_found`: no such attachment", body = ErrorBody),
        (status = 416, description = "`range_not_satisfiable`: the range starts past the end",
            body = ErrorBody, headers(("Content-Range" = String, description = "`bytes */<size>`"))),
        (status = 429, response = RateLimited),
        (status = 503, response = Unavailable),
    )
)]
async fn download(State(app): State<App>, Path(id): Path<String>, headers: HeaderMap) -> Response {
    let user = match user_of(&app, &headers, Kind::RestRead).await {
        Ok(user) => user,
        Err(e) => return chat_error(e),
    };
    let row = match app.attachments.find(&id).await {
        Ok(Some(row)) => row,
        Ok(None) => return chat_error(ChatError::not_found(format!("no attachment {id}"))),
        Err(e) => return chat_error(ChatError::unavailable(e.to_string())),
    };
    if let Err(e) = check_member(&app, &user, &row.room).await {
        // A room that no longer exists hides its files like any other.
        let e = if e.code == ErrorCode::NotFound {
            ChatError::forbidden(format!("not a member of room {}", row.room))
        } else {
            e
        };
        return chat_error(e);
    }
    let size = row.size as u64;
    let range = headers.get(header::RANGE).and_then(|v| v.to_str().ok());
    let (status, start, end) = match parse_range(range, size) {
        Ranged::Whole => (StatusCode::OK, 0, size),
        Ranged::Part(start, end) => (StatusCode::PARTIAL_CONTENT, start, end),
        Ranged::Unsatisfiable => {
            let mut r = error(
                StatusCode::RANGE_NOT_SATISFIABLE,
                HttpOnlyCode::RangeNotSatisfiable,
                format!("the file has {size} bytes"),
            );
            r.headers_mut().insert(
                header::CONTENT_RANGE,
                HeaderValue::from_str(&format!("bytes */{size}")).expect("ascii"),
            );
            return r;
        }
    };
    let stream = match app.attachments.read(&row, start..end).await {
        Ok(stream) => stream,
        Err(AttachmentError::Blob(crate::attachments::BlobError::NotFound)) => {
            tracing::warn!(attachment = %row.id, "the attachment's bytes are missing from the store");
            return chat_error(ChatError::not_found(format!("no attachment {id}")));
        }
        Err(e) => return chat_error(ChatError::unavailable(e.to_string())),
    };
    let mut response = Response::new(Body::from_stream(stream));
    *response.status_mut() = status;
    let h = response.headers_mut();
    let ct = HeaderValue::from_str(&row.content_type)
        .unwrap_or_else(|_| HeaderValue::from_static("application/octet-stream"));
    h.insert(header::CONTENT_TYPE, ct);
    h.insert(header::CONTENT_LENGTH, HeaderValue::from(end - start));
    h.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
    h.insert(header::CONTENT_DISPOSITION, disposition(&row));
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    // Opened directly, the file runs no script and reaches nothing of ours.
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static("sandbox; default-src 'none'"),
    );
    h.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("private, max-age=31536000, immutable"),
    );
    if let Ok(etag) = HeaderValue::from_str(&format!("\"{}\"", row.sha256)) {
        h.insert(header::ETAG, etag);
    }
    if status == StatusCode::PARTIAL_CONTENT {
        let value = format!("bytes {start}-{}/{size}", end - 1);
        h.insert(
            header::CONTENT_RANGE,
            HeaderValue::from_str(&value).expect("ascii"),
        );
    }
    response
}

/// Its uploader takes an attachment back.
#[utoipa::path(
    delete,
    path = "/api/v1/attachments/{id}",
    operation_id = "delete_attachment",
    tag = "attachments",
    security(("bearer" = [])),
    params(("id" = String, Path, description = "The attachment's id")),
    responses(
        (status = 204, description = "Deleted"),
        (status = 401, response = Unauthorized),
        (status = 403, description = "`forbidden`: only its uploader may delete it", body = ErrorBody),
        (status = 404, response = NotFound),
        (status = 429, response = RateLimited),
        (status = 503, response = Unavailable),
    )
)]
async fn remove(State(app): State<App>, Path(id): Path<String>, headers: HeaderMap) -> Response {
    let user = match user_of(&app, &headers, Kind::Message).await {
        Ok(user) => user,
        Err(e) => return chat_error(e),
    };
    let row = match app.attachments.find(&id).await {
        Ok(Some(row)) => row,
        Ok(None) => return chat_error(ChatError::not_found(format!("no attachment {id}"))),
        Err(e) => return chat_error(ChatError::unavailable(e.to_string())),
    };
    if row.uploader != user {
        return chat_error(ChatError::forbidden(
            "only its uploader may delete an attachment",
        ));
    }
    match app.attachments.delete(&row.id).await {
        Ok(_) => StatusCode::NO_CONTENT.into_response(),
        Err(e) => chat_error(ChatError::unavailable(e.to_string())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges() {
        assert_eq!(parse_range(None, 10), Ranged::Whole);
        assert_eq!(parse_range(Some("bytes=0-3"), 10), Ranged::Part(0, 4));
        assert_eq!(parse_range(Some("bytes=5-"), 10), Ranged::Part(5, 10));
        assert_eq!(parse_range(Some("bytes=-3"), 10), Ranged::Part(7, 10));
        assert_eq!(parse_range(Some("bytes=-30"), 10), Ranged::Part(0, 10));
        assert_eq!(parse_range(Some("bytes=8-100"), 10), Ranged::Part(8, 10));
        assert_eq!(parse_range(Some("bytes=10-"), 10), Ranged::Unsatisfiable);
        assert_eq!(parse_range(Some("bytes=-0"), 10), Ranged::Unsatisfiable);
        assert_eq!(parse_range(Some("bytes=0-1,3-4"), 10), Ranged::Whole);
        assert_eq!(parse_range(Some("bytes=5-2"), 10), Ranged::Whole);
        assert_eq!(parse_range(Some("items=0-1"), 10), Ranged::Whole);
        assert_eq!(parse_range(Some("bytes=x-1"), 10), Ranged::Whole);
        assert_eq!(parse_range(Some("bytes=+1-2"), 10), Ranged::Whole);
    }

    #[test]
    fn file_names() {
        assert_eq!(sanitize_filename("a.png").as_deref(), Some("a.png"));
        assert_eq!(
            sanitize_filename("../../etc/passwd").as_deref(),
            Some("passwd")
        );
        assert_eq!(
            sanitize_filename("C:\\x\\report \"final\".pdf").as_deref(),
            Some("report final.pdf")
        );
        assert_eq!(
            sanitize_filename("a\r\nb\u{202e}gnp.exe").as_deref(),
            Some("abgnp.exe")
        );
        assert_eq!(sanitize_filename(".."), None);
        assert_eq!(sanitize_filename(".hidden").as_deref(), Some("hidden"));
        assert_eq!(
            sanitize_filename("é".repeat(300).as_str()).unwrap().len(),
            200
        );
    }

    #[test]
    fn content_types() {
        assert_eq!(
            parse_type("Text/Plain; Charset=UTF-8"),
            Some(("text/plain".into(), "text/plain; charset=utf-8".into()))
        );
        assert_eq!(
            parse_type("image/png; name=x"),
            Some(("image/png".into(), "image/png".into()))
        );
        assert_eq!(parse_type("nonsense"), None);
    }
}

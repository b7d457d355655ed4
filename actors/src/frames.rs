//! The wire frames of `docs/protocol.md`: what clients send, what the node answers.
//!
//! Decoding never panics: anything malformed becomes a [`ChatError`] with the
//! `ref` the client needs to match it to its request.
//!
//! The same types describe themselves (`utoipa::ToSchema`): the node serves
//! their JSON Schemas at `/api/frames.schema.json` and the REST types that
//! reuse them in `/api/openapi.json`, so the documents cannot drift from the
//! code that parses and writes the frames.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;
use tokio_tungstenite::tungstenite::Utf8Bytes;
use utoipa::{IntoParams, ToSchema};

/// Error codes of the protocol, shared by frames and REST.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    BadRequest,
    Unauthorized,
    Forbidden,
    NotFound,
    Conflict,
    TooLarge,
    RateLimited,
    Unavailable,
}

/// An error answered to one request; the connection stays open.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, Serialize, Deserialize, ToSchema)]
#[error("{code:?}: {message}")]
pub struct ChatError {
    pub code: ErrorCode,
    pub message: String,
    /// For `rate_limited`: when to retry, in milliseconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_after_ms: Option<u64>,
}

impl ChatError {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
            retry_after_ms: None,
        }
    }
    /// The same error, telling the client to retry after `ms` milliseconds.
    pub fn retry_after(mut self, ms: u64) -> Self {
        self.retry_after_ms = Some(ms);
        self
    }
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::BadRequest, message)
    }
    pub fn forbidden(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::Forbidden, message)
    }
    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::NotFound, message)
    }
    pub fn unavailable(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::Unavailable, message)
    }
}

/// Query of a page of history, shared by the `history` frame and REST.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema, IntoParams,
)]
#[into_params(parameter_in = Query)]
pub struct HistoryQuery {
    /// Only messages with a smaller seq (older), newest first.
    pub before: Option<u64>,
    /// Only messages with a larger seq (newer), oldest first.
    pub after: Option<u64>,
    /// Page size: 1 to 200, 50 when absent.
    #[param(minimum = 1, maximum = 200)]
    #[schema(minimum = 1, maximum = 200)]
    pub limit: Option<u32>,
}

pub const HISTORY_DEFAULT_LIMIT: u32 = 50;
pub const HISTORY_MAX_LIMIT: u32 = 200;

impl HistoryQuery {
    /// The effective page size, or an error when the client asked for too much.
    pub fn checked_limit(&self) -> Result<usize, ChatError> {
        match self.limit {
            None => Ok(HISTORY_DEFAULT_LIMIT as usize),
            Some(0) => Err(ChatError::bad_request("limit must be at least 1")),
            Some(n) if n > HISTORY_MAX_LIMIT => Err(ChatError::bad_request(format!(
                "limit must be at most {HISTORY_MAX_LIMIT}"
            ))),
            Some(n) => Ok(n as usize),
        }
    }
}

/// Frames a client sends. `Serialize` is for clients written in Rust and for
/// the fuzz targets' round trip (decode, encode, decode: the same frame).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ClientFrame {
    /// Authenticate with a login token.
    Auth { token: String },
    /// Authenticate (as the first frame) and/or replay what was missed:
    /// `rooms` maps a room to the last seq this client has.
    Resume {
        resume_token: String,
        #[serde(default)]
        rooms: BTreeMap<String, u64>,
    },
    /// Join a group room; creates it (public) when it does not exist.
    Join { room: String },
    /// Leave a group room.
    Leave { room: String },
    /// A member adds `user` to a group room (the way into a private one).
    Invite { room: String, user: String },
    /// Post a message; `client_id` makes a resend a no-op.
    Send {
        room: String,
        body: String,
        client_id: String,
        /// The message this one answers (a thread).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        reply_to: Option<u64>,
        /// Ids of uploaded attachments of this room.
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        attachments: Vec<String>,
    },
    /// A change to message `seq` of `room` (edit, delete, react, ...): a room
    /// event with its own seq, acked like a message.
    Edit {
        room: String,
        seq: u64,
        body: String,
        client_id: String,
    },
    /// Delete message `seq` (its sender, or an admin).
    Delete {
        room: String,
        seq: u64,
        client_id: String,
    },
    /// Add the user's `emoji` reaction to message `seq`.
    React {
        room: String,
        seq: u64,
        emoji: String,
        client_id: String,
    },
    /// Take the user's `emoji` reaction back.
    Unreact {
        room: String,
        seq: u64,
        emoji: String,
        client_id: String,
    },
    /// Pin message `seq` in the room.
    Pin {
        room: String,
        seq: u64,
        client_id: String,
    },
    /// Unpin message `seq`.
    Unpin {
        room: String,
        seq: u64,
        client_id: String,
    },
    /// A direct message to user `to`.
    Dm {
        to: String,
        body: String,
        client_id: String,
    },
    /// Post to the broadcast room `!broadcast`.
    Broadcast { body: String, client_id: String },
    /// A typing indicator.
    Typing { room: String, active: bool },
    /// A read receipt up to `seq`.
    Read { room: String, seq: u64 },
    /// A page of past messages.
    History {
        room: String,
        #[serde(flatten)]
        query: HistoryQuery,
    },
    /// The member list with presence and read receipts.
    Members { room: String },
    /// The users online.
    Who,
    /// A `pong` with the same `nonce`; served before authentication too.
    Ping {
        /// Any JSON value, echoed in the `pong`.
        #[serde(default)]
        #[schema(value_type = Option<Value>)]
        nonce: Option<Value>,
    },
    /// Test-only fault trigger: makes the room's actor panic.
    #[cfg(feature = "test-hooks")]
    DebugPanicRoom { room: String },
}

const CLIENT_TYPES: &[&str] = &[
    "auth",
    "resume",
    "join",
    "leave",
    "invite",
    "send",
    "edit",
    "delete",
    "react",
    "unreact",
    "pin",
    "unpin",
    "dm",
    "broadcast",
    "typing",
    "read",
    "history",
    "members",
    "who",
    "ping",
];

/// A frame that could not be decoded, with the `ref` to answer it with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DecodeError {
    pub error: ChatError,
    pub reference: Option<String>,
}

impl ClientFrame {
    /// The `ref` of an error about this frame: its client_id, else its type.
    pub fn reference(&self) -> String {
        match self {
            ClientFrame::Send { client_id, .. }
            | ClientFrame::Edit { client_id, .. }
            | ClientFrame::Delete { client_id, .. }
            | ClientFrame::React { client_id, .. }
            | ClientFrame::Unreact { client_id, .. }
            | ClientFrame::Pin { client_id, .. }
            | ClientFrame::Unpin { client_id, .. }
            | ClientFrame::Dm { client_id, .. }
            | ClientFrame::Broadcast { client_id, .. } => client_id.clone(),
            ClientFrame::Auth { .. } => "auth".into(),
            ClientFrame::Resume { .. } => "resume".into(),
            ClientFrame::Join { .. } => "join".into(),
            ClientFrame::Leave { .. } => "leave".into(),
            ClientFrame::Invite { .. } => "invite".into(),
            ClientFrame::Typing { .. } => "typing".into(),
            ClientFrame::Read { .. } => "read".into(),
            ClientFrame::History { .. } => "history".into(),
            ClientFrame::Members { .. } => "members".into(),
            ClientFrame::Who => "who".into(),
            ClientFrame::Ping { .. } => "ping".into(),
            #[cfg(feature = "test-hooks")]
            ClientFrame::DebugPanicRoom { .. } => "debug_panic_room".into(),
        }
    }

    /// Decodes one JSON text frame.
    pub fn decode(text: &str) -> Result<Self, DecodeError> {
        let value: Value = serde_json::from_str(text).map_err(|e| DecodeError {
            error: ChatError::bad_request(format!("malformed JSON: {e}")),
            reference: None,
        })?;
        let Some(object) = value.as_object() else {
            return Err(DecodeError {
                error: ChatError::bad_request("a frame must be a JSON object"),
                reference: None,
            });
        };
        let kind = match object.get("type") {
            Some(Value::String(kind)) => kind.clone(),
            _ => {
                return Err(DecodeError {
                    error: ChatError::bad_request("a frame needs a string \"type\""),
                    reference: None,
                })
            }
        };
        // The `ref` of an error is the offending client_id, else the type.
        let reference = match object.get("client_id") {
            Some(Value::String(id)) => id.clone(),
            _ => kind.clone(),
        };
        let known = CLIENT_TYPES.contains(&kind.as_str()) || cfg!(feature = "test-hooks");
        if !known {
            return Err(DecodeError {
                error: ChatError::bad_request(format!("unknown frame type {kind:?}")),
                reference: Some(reference),
            });
        }
        serde_json::from_value(value).map_err(|e| DecodeError {
            error: ChatError::bad_request(format!("invalid {kind} frame: {e}")),
            reference: Some(reference),
        })
    }
}

/// A change to an earlier message of the room, carried by a room event (a
/// record of the log with its own seq). `target` is the changed message's seq.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum MessageEvent {
    Edit { target: u64, body: String },
    Delete { target: u64 },
    React { target: u64, emoji: String },
    Unreact { target: u64, emoji: String },
    Pin { target: u64 },
    Unpin { target: u64 },
}

impl MessageEvent {
    pub fn target(&self) -> u64 {
        match self {
            MessageEvent::Edit { target, .. }
            | MessageEvent::Delete { target }
            | MessageEvent::React { target, .. }
            | MessageEvent::Unreact { target, .. }
            | MessageEvent::Pin { target }
            | MessageEvent::Unpin { target } => *target,
        }
    }

    /// Its name, as in the `kind` of its JSON and the `kind` column of history.
    pub fn kind(&self) -> &'static str {
        match self {
            MessageEvent::Edit { .. } => "edit",
            MessageEvent::Delete { .. } => "delete",
            MessageEvent::React { .. } => "react",
            MessageEvent::Unreact { .. } => "unreact",
            MessageEvent::Pin { .. } => "pin",
            MessageEvent::Unpin { .. } => "unpin",
        }
    }
}

fn is_false(b: &bool) -> bool {
    !*b
}

/// One chat message as clients see it (in `message` frames, `history` and REST).
/// A room event is one too: `event` says what it changes, `body` is empty.
/// Every field after `client_id` is optional on the wire, so records and
/// rows written before they existed still decode.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct ChatMessage {
    pub room: String,
    pub seq: u64,
    pub from: String,
    pub body: String,
    pub ts: i64,
    pub client_id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reply_to: Option<u64>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub attachments: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub event: Option<MessageEvent>,
    /// In history: when the body was last edited.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub edited_at: Option<i64>,
    /// In history: the message was deleted (its body is empty).
    #[serde(default, skip_serializing_if = "is_false")]
    pub deleted: bool,
}

/// A user and whether they are online.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct UserStatus {
    pub user: String,
    pub online: bool,
    pub last_seen: Option<i64>,
}

/// A member of a room, with presence and how far they have read.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct MemberStatus {
    pub user: String,
    pub online: bool,
    pub last_seen: Option<i64>,
    pub read_seq: u64,
}

/// Frames the node sends.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ServerFrame {
    /// The connection is authenticated.
    Session {
        session_id: String,
        resume_token: String,
        user: String,
        node: String,
    },
    /// After a `resume`: every room of the session with the seq through
    /// which this connection is caught up.
    Resumed { rooms: BTreeMap<String, u64> },
    /// This user joined a room (`members`: the count after the change).
    Joined {
        room: String,
        members: usize,
        last_seq: u64,
    },
    /// This user left a room.
    Left {
        room: String,
        members: usize,
        last_seq: u64,
    },
    /// A message in one of the user's rooms.
    Message(ChatMessage),
    /// The message with this `client_id` is stored as `seq`.
    Ack {
        client_id: String,
        room: String,
        seq: u64,
        ts: i64,
    },
    /// Another user joined one of the user's rooms (`members`: the count
    /// after the change).
    UserJoined {
        room: String,
        user: String,
        members: usize,
    },
    /// Another user left one of the user's rooms.
    UserLeft {
        room: String,
        user: String,
        members: usize,
    },
    /// `user` was removed from the room by `by` (sent to every member, the
    /// kicked user's connections included, which then leave the room).
    Kicked {
        room: String,
        user: String,
        by: String,
        members: usize,
    },
    RoleChanged {
        room: String,
        user: String,
        role: crate::roles::Role,
        by: String,
    },
    TopicChanged {
        room: String,
        topic: Option<String>,
        by: String,
    },
    /// The room no longer exists: its connections leave it.
    RoomDeleted { room: String, by: String },
    Presence {
        user: String,
        online: bool,
        last_seen: Option<i64>,
    },
    /// Another member is typing (or stopped).
    Typing {
        room: String,
        user: String,
        active: bool,
    },
    /// A member has read up to `seq`.
    Read {
        room: String,
        user: String,
        seq: u64,
    },
    /// A page of past messages, ascending seq.
    History {
        room: String,
        messages: Vec<ChatMessage>,
    },
    /// A room's members, sorted by user.
    Members {
        room: String,
        members: Vec<MemberStatus>,
    },
    /// The users online, sorted by user.
    Users { users: Vec<UserStatus> },
    /// The relation with `user` changed, as the receiver sees it:
    /// `incoming` (they asked you), `outgoing` (you asked them), `friends`,
    /// `none` (removed, rejected or cancelled), `blocked` (you blocked them).
    Friend { user: String, status: String },
    /// A request failed; `ref` is its `client_id`, else its type.
    Error {
        code: ErrorCode,
        message: String,
        #[serde(rename = "ref")]
        reference: Option<String>,
        /// Only on `rate_limited`: when to retry, in milliseconds.
        #[serde(skip_serializing_if = "Option::is_none")]
        retry_after_ms: Option<u64>,
    },
    /// The answer to `ping`.
    Pong {
        #[schema(value_type = Option<Value>)]
        nonce: Option<Value>,
    },
}

impl ServerFrame {
    pub fn error(error: &ChatError, reference: Option<String>) -> Self {
        ServerFrame::Error {
            code: error.code,
            message: error.message.clone(),
            reference,
            retry_after_ms: error.retry_after_ms,
        }
    }

    /// Serialises once; the result is cheap to clone for fan-out.
    pub fn encode(&self) -> Utf8Bytes {
        // Serialising these plain structs cannot fail.
        Utf8Bytes::from(serde_json::to_string(self).unwrap_or_default())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_a_send() {
        let frame =
            ClientFrame::decode(r#"{"type":"send","room":"a","body":"hi","client_id":"c1"}"#)
                .unwrap();
        assert_eq!(
            frame,
            ClientFrame::Send {
                room: "a".into(),
                body: "hi".into(),
                client_id: "c1".into(),
                reply_to: None,
                attachments: vec![],
            }
        );
    }

    #[test]
    fn malformed_frames_are_errors_with_a_ref() {
        let e = ClientFrame::decode("{nope").unwrap_err();
        assert_eq!(e.error.code, ErrorCode::BadRequest);
        assert_eq!(e.reference, None);
        let e = ClientFrame::decode(r#"{"type":"fly"}"#).unwrap_err();
        assert_eq!(e.reference.as_deref(), Some("fly"));
        let e = ClientFrame::decode(r#"{"type":"send","room":"a","client_id":"x"}"#).unwrap_err();
        assert_eq!(e.reference.as_deref(), Some("x"));
        assert!(e.error.message.contains("body"), "{}", e.error.message);
        assert!(ClientFrame::decode("[1,2]").is_err());
        assert!(ClientFrame::decode(r#"{"type":5}"#).is_err());
    }

    #[test]
    fn history_flattens_its_query() {
        let frame =
            ClientFrame::decode(r#"{"type":"history","room":"a","before":9,"limit":3}"#).unwrap();
        let ClientFrame::History { query, .. } = frame else {
            panic!("not history")
        };
        assert_eq!(query.before, Some(9));
        assert_eq!(query.checked_limit().unwrap(), 3);
        let too_many = HistoryQuery {
            limit: Some(201),
            ..Default::default()
        };
        assert!(too_many.checked_limit().is_err());
    }

    /// The `type`s a frame schema's variants fix (see `/api/frames.schema.json`).
    fn schema_types<T: utoipa::PartialSchema>() -> Vec<String> {
        let schema = serde_json::to_value(T::schema()).unwrap();
        let mut types: Vec<String> = schema["oneOf"]
            .as_array()
            .expect("a oneOf of variants")
            .iter()
            .map(|variant| {
                let tag = |v: &Value| {
                    v["properties"]["type"]["enum"][0]
                        .as_str()
                        .map(String::from)
                };
                tag(variant)
                    .or_else(|| variant["allOf"].as_array()?.iter().find_map(tag))
                    .unwrap_or_else(|| panic!("a variant without its type: {variant}"))
            })
            .collect();
        types.sort();
        types
    }

    #[test]
    fn the_schema_knows_exactly_the_frame_types_decode_accepts() {
        let mut known: Vec<String> = CLIENT_TYPES.iter().map(|t| t.to_string()).collect();
        if cfg!(feature = "test-hooks") {
            known.push("debug_panic_room".into());
        }
        known.sort();
        assert_eq!(schema_types::<ClientFrame>(), known);
        let server = schema_types::<ServerFrame>();
        for ty in ["session", "message", "ack", "error", "pong", "history"] {
            assert!(server.iter().any(|t| t == ty), "{ty} missing: {server:?}");
        }
    }

    #[test]
    fn server_frames_carry_their_type() {
        let text = ServerFrame::Message(ChatMessage {
            room: "a".into(),
            seq: 1,
            from: "u".into(),
            body: "b".into(),
            ts: 5,
            client_id: "c".into(),
            ..Default::default()
        })
        .encode();
        let v: Value = serde_json::from_str(&text).unwrap();
        assert_eq!(v["type"], "message");
        assert_eq!(v["seq"], 1);
        let e = ServerFrame::error(&ChatError::forbidden("no"), Some("c".into())).encode();
        let v: Value = serde_json::from_str(&e).unwrap();
        assert_eq!(v["code"], "forbidden");
        assert_eq!(v["ref"], "c");
    }
}

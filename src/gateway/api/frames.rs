//! `GET /api/frames.schema.json`: the WebSocket frames as one JSON Schema
//! (2020-12) document, generated from [`ClientFrame`] and [`ServerFrame`],
//! the types that decode and encode them.
//!
//! Each frame type gets a schema of its own in `$defs` (`client.send`,
//! `server.message`, ...), taken from the variant's schema in the enum's
//! `oneOf`; `ClientFrame` and `ServerFrame` are the unions, and the
//! document itself accepts any frame of either side. The types the frames
//! share (`ChatMessage`, `ErrorCode`, ...) are in `$defs` too, and every
//! `$ref` points inside the document.

use serde_json::{json, Map, Value};
use troupe_actors::frames::{ClientFrame, ServerFrame};
use utoipa::openapi::{RefOr, Schema};
use utoipa::{PartialSchema, ToSchema};

const COMPONENTS: &str = "#/components/schemas/";
const DEFS: &str = "#/$defs/";

/// The document.
pub fn document() -> Value {
    let mut defs = Map::new();
    let mut shared: Vec<(String, RefOr<Schema>)> = Vec::new();
    ClientFrame::schemas(&mut shared);
    ServerFrame::schemas(&mut shared);
    for (name, schema) in shared {
        defs.insert(name, to_json(&schema));
    }
    let sides = [
        ("client", "ClientFrame", ClientFrame::schema()),
        ("server", "ServerFrame", ServerFrame::schema()),
    ];
    for (side, union, schema) in sides {
        let schema = to_json(&schema);
        let variants = schema["oneOf"].as_array().cloned().unwrap_or_default();
        let mut refs = Vec::new();
        for variant in variants {
            let Some(kind) = frame_type(&variant) else {
                tracing::error!(%side, ?variant, "a frame variant without a type");
                continue;
            };
            let name = format!("{side}.{kind}");
            refs.push(json!({ "$ref": format!("{DEFS}{name}") }));
            defs.insert(name, variant);
        }
        let mut union_schema = json!({ "oneOf": refs });
        if let Some(description) = schema.get("description") {
            union_schema["description"] = description.clone();
        }
        defs.insert(union.to_string(), union_schema);
    }
    let mut document = json!({
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "title": "troupe WebSocket frames",
        "description": "Every frame of the WebSocket protocol at /ws (see docs/protocol.md): \
                        one JSON object per text message, its kind in \"type\". \
                        $defs/client.<type> are the frames a client sends, \
                        $defs/server.<type> the frames the node sends.",
        "anyOf": [
            { "$ref": format!("{DEFS}ClientFrame") },
            { "$ref": format!("{DEFS}ServerFrame") }
        ],
        "$defs": defs,
    });
    point_refs_inside(&mut document);
    document
}

fn to_json(schema: &RefOr<Schema>) -> Value {
    serde_json::to_value(schema).unwrap_or(Value::Null)
}

/// The `type` a variant's schema fixes: its `properties.type` enum of one
/// value (or const), on the object itself or on one of its `allOf` parts
/// (a variant wrapping another struct).
pub fn frame_type(variant: &Value) -> Option<String> {
    let own = variant.get("properties").and_then(|p| p.get("type"));
    if let Some(tag) = own {
        if let Some(kind) = tag.get("const").and_then(Value::as_str) {
            return Some(kind.to_string());
        }
        if let Some([kind]) = tag.get("enum").and_then(Value::as_array).map(Vec::as_slice) {
            return kind.as_str().map(str::to_string);
        }
    }
    variant
        .get("allOf")
        .and_then(Value::as_array)?
        .iter()
        .find_map(frame_type)
}

/// utoipa writes references for an OpenAPI document
/// (`#/components/schemas/X`); here they live in `$defs`.
fn point_refs_inside(value: &mut Value) {
    match value {
        Value::Object(map) => {
            for (key, v) in map.iter_mut() {
                match v {
                    Value::String(target) if key == "$ref" => {
                        if let Some(name) = target.strip_prefix(COMPONENTS) {
                            *target = format!("{DEFS}{name}");
                        }
                    }
                    _ => point_refs_inside(v),
                }
            }
        }
        Value::Array(items) => items.iter_mut().for_each(point_refs_inside),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use troupe_actors::frames::{ChatError, ChatMessage, MemberStatus, UserStatus};

    fn message(seq: u64) -> ChatMessage {
        ChatMessage {
            room: "lobby".into(),
            seq,
            from: "ann".into(),
            body: "hi".into(),
            ts: 1_700_000_000_000,
            client_id: format!("c{seq}"),
            ..ChatMessage::default()
        }
    }

    /// A message with every optional field set: a reply with attachments,
    /// and an edit event.
    fn full_message(seq: u64) -> ChatMessage {
        ChatMessage {
            reply_to: Some(1),
            attachments: vec!["0123456789abcdef0123456789abcdef".into()],
            event: Some(troupe_actors::frames::MessageEvent::Edit {
                target: 1,
                body: "new".into(),
            }),
            edited_at: Some(9),
            deleted: true,
            ..message(seq)
        }
    }

    /// One frame of every kind the node writes, with the optional fields
    /// both set and unset.
    fn server_samples() -> Vec<ServerFrame> {
        let user = |online, last_seen| UserStatus {
            user: "ann".into(),
            online,
            last_seen,
        };
        vec![
            ServerFrame::Session {
                session_id: "s".into(),
                resume_token: "r".into(),
                user: "ann".into(),
                node: "n1".into(),
            },
            ServerFrame::Resumed {
                rooms: [("lobby".to_string(), 3), ("!broadcast".to_string(), 0)].into(),
            },
            ServerFrame::Joined {
                room: "lobby".into(),
                members: 2,
                last_seq: 0,
            },
            ServerFrame::Left {
                room: "lobby".into(),
                members: 1,
                last_seq: 9,
            },
            ServerFrame::Message(message(1)),
            ServerFrame::Message(full_message(2)),
            ServerFrame::Ack {
                client_id: "c1".into(),
                room: "lobby".into(),
                seq: 1,
                ts: 5,
            },
            ServerFrame::UserJoined {
                room: "lobby".into(),
                user: "ben".into(),
                members: 2,
            },
            ServerFrame::UserLeft {
                room: "lobby".into(),
                user: "ben".into(),
                members: 1,
            },
            ServerFrame::Kicked {
                room: "lobby".into(),
                user: "ben".into(),
                by: "ann".into(),
                members: 1,
            },
            ServerFrame::RoleChanged {
                room: "lobby".into(),
                user: "ben".into(),
                role: troupe_actors::roles::Role::Admin,
                by: "ann".into(),
            },
            ServerFrame::TopicChanged {
                room: "lobby".into(),
                topic: Some("weekly".into()),
                by: "ann".into(),
            },
            ServerFrame::TopicChanged {
                room: "lobby".into(),
                topic: None,
                by: "ann".into(),
            },
            ServerFrame::RoomDeleted {
                room: "lobby".into(),
                by: "ann".into(),
            },
            ServerFrame::Presence {
                user: "ben".into(),
                online: false,
                last_seen: Some(7),
            },
            ServerFrame::Presence {
                user: "ben".into(),
                online: true,
                last_seen: None,
            },
            ServerFrame::Typing {
                room: "lobby".into(),
                user: "ben".into(),
                active: true,
            },
            ServerFrame::Read {
                room: "lobby".into(),
                user: "ben".into(),
                seq: 1,
            },
            ServerFrame::History {
                room: "lobby".into(),
                messages: vec![message(1), full_message(2)],
            },
            ServerFrame::Members {
                room: "lobby".into(),
                members: vec![MemberStatus {
                    user: "ann".into(),
                    online: true,
                    last_seen: None,
                    read_seq: 2,
                }],
            },
            ServerFrame::Users {
                users: vec![user(true, None), user(false, Some(3))],
            },
            ServerFrame::Friend {
                user: "ben".into(),
                status: "incoming".into(),
            },
            ServerFrame::error(&ChatError::forbidden("no"), Some("c1".into())),
            ServerFrame::error(&ChatError::bad_request("malformed"), None),
            ServerFrame::error(
                &ChatError::new(troupe_actors::frames::ErrorCode::RateLimited, "slow down")
                    .retry_after(250),
                Some("send".into()),
            ),
            ServerFrame::Pong { nonce: None },
            ServerFrame::Pong {
                nonce: Some(serde_json::json!({"n": [1, "x"]})),
            },
        ]
    }

    /// The `type` of a frame. Exhaustive on purpose: a new kind of server
    /// frame does not compile here until it is added to the samples above.
    fn kind(frame: &ServerFrame) -> &'static str {
        match frame {
            ServerFrame::Session { .. } => "session",
            ServerFrame::Resumed { .. } => "resumed",
            ServerFrame::Joined { .. } => "joined",
            ServerFrame::Left { .. } => "left",
            ServerFrame::Message(_) => "message",
            ServerFrame::Ack { .. } => "ack",
            ServerFrame::UserJoined { .. } => "user_joined",
            ServerFrame::UserLeft { .. } => "user_left",
            ServerFrame::Presence { .. } => "presence",
            ServerFrame::Typing { .. } => "typing",
            ServerFrame::Read { .. } => "read",
            ServerFrame::History { .. } => "history",
            ServerFrame::Members { .. } => "members",
            ServerFrame::Users { .. } => "users",
            ServerFrame::Friend { .. } => "friend",
            ServerFrame::Kicked { .. } => "kicked",
            ServerFrame::RoleChanged { .. } => "role_changed",
            ServerFrame::TopicChanged { .. } => "topic_changed",
            ServerFrame::RoomDeleted { .. } => "room_deleted",
            ServerFrame::Error { .. } => "error",
            ServerFrame::Pong { .. } => "pong",
        }
    }

    fn validator(def: &str) -> jsonschema::Validator {
        let mut root = document();
        root.as_object_mut().unwrap().remove("anyOf");
        root["$ref"] = json!(format!("{DEFS}{def}"));
        jsonschema::draft202012::new(&root).expect("the frames schema compiles")
    }

    #[test]
    fn every_server_frame_the_node_writes_matches_its_schema() {
        let doc = document();
        let samples = server_samples();
        let union = validator("ServerFrame");
        for frame in &samples {
            let value: Value = serde_json::from_str(&frame.encode()).unwrap();
            assert_eq!(value["type"], kind(frame));
            let own = validator(&format!("server.{}", kind(frame)));
            for (name, v) in [("own", &own), ("union", &union)] {
                let errors: Vec<String> = v.iter_errors(&value).map(|e| e.to_string()).collect();
                assert!(errors.is_empty(), "{name}: {value} {errors:?}");
            }
            // And a frame missing a field its schema requires is refused.
            let own_schema = &doc["$defs"][format!("server.{}", kind(frame))];
            if let Some(required) = own_schema["required"].as_array() {
                for field in required.iter().filter_map(Value::as_str) {
                    let mut without = value.clone();
                    without.as_object_mut().unwrap().remove(field);
                    assert!(!own.is_valid(&without), "{without} lacks {field}");
                }
            }
        }
        // Every server frame type of the schema has a sample.
        let defs = doc["$defs"].as_object().unwrap();
        for name in defs.keys().filter_map(|k| k.strip_prefix("server.")) {
            assert!(
                samples.iter().any(|f| kind(f) == name),
                "no sample of server.{name}"
            );
        }
    }

    #[test]
    fn every_frame_type_has_its_schema() {
        let doc = document();
        let defs = doc["$defs"].as_object().unwrap();
        for name in [
            "client.auth",
            "client.send",
            "client.history",
            "client.who",
            "client.ping",
            "server.message",
            "server.error",
            "server.session",
            "server.pong",
            "ChatMessage",
            "ErrorCode",
        ] {
            assert!(defs.contains_key(name), "no $defs/{name}: {doc:#}");
        }
        let text = doc.to_string();
        assert!(!text.contains(COMPONENTS), "a reference outside: {doc:#}");
    }
}

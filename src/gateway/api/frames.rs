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

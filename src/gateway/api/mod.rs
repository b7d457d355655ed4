//! The machine-readable API, generated from the code so it cannot drift:
//!
//! - `GET /api/openapi.json`: the OpenAPI 3.1 document of every REST
//!   endpoint. The router and the document come from the same
//!   registrations (`utoipa_axum::routes!` in `gateway/mod.rs`): a route is
//!   documented by being routed.
//! - `GET /api/frames.schema.json`: a JSON Schema per WebSocket frame type,
//!   from the types that parse and write the frames ([`frames`]).
//! - `GET /api/docs`: a reference page that renders both ([`page`]).
//!
//! Adding an endpoint: give its handler a `#[utoipa::path(...)]` (method,
//! path, parameters, body, every response with its status: the shared
//! errors are in [`responses`]) and register it with
//! `.routes(routes!(module::handler))` in `gateway/mod.rs` (or in a module's
//! own `OpenApiRouter`, merged there); nothing else. One `routes!` per path:
//! handlers of the same path (`GET` and `POST /api/v1/rooms`) share one,
//! handlers of different paths must not (utoipa-axum would route each of
//! them on every path of the call). `tests/api_docs.rs` fails on a route
//! added any other way, on a documented route that is not served, and on an
//! answer whose status or body the document does not describe.

pub mod frames;
pub mod page;
pub mod responses;

use std::sync::LazyLock;

use axum::http::header;
use axum::response::{IntoResponse, Response};
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::openapi::OpenApi as Document;
use utoipa::{Modify, OpenApi};

use responses::{
    AdminOff, BadRequest, BodyTimeout, Conflict, ErrorBody, Forbidden, NotFound, RateLimited,
    TooLarge, Unauthorized, Unavailable,
};

/// What the document says besides its paths: the title, the security
/// schemes, the shared error responses and the tags.
#[derive(OpenApi)]
#[openapi(
    info(
        title = "troupe",
        description = "The REST API of a troupe node. Chat itself (sending, receiving, \
                       presence, typing) goes over the WebSocket at `/ws`: its frames are \
                       described by `/api/frames.schema.json` and docs/protocol.md. Every \
                       error is `{\"error\": {\"code\", \"message\"}}` with the matching status.",
        license(name = "MIT", identifier = "MIT")
    ),
    modifiers(&SecuritySchemes),
    components(
        schemas(ErrorBody),
        responses(
            BadRequest,
            Unauthorized,
            Forbidden,
            NotFound,
            Conflict,
            BodyTimeout,
            TooLarge,
            RateLimited,
            Unavailable,
            AdminOff
        )
    ),
    tags(
        (name = "accounts", description = "Registration, login and logout"),
        (name = "rooms", description = "Rooms, their history and members"),
        (name = "messages", description = "Messages that live: send, edit, delete, reactions, pins, threads"),
        (name = "users", description = "Who is online"),
        (name = "search", description = "Full-text search of the rooms a user can read"),
        (name = "friends", description = "Friends and blocks"),
        (name = "attachments", description = "Files shared in rooms"),
        (name = "websocket", description = "The chat connection"),
        (name = "operations", description = "Health, readiness and metrics for orchestrators"),
        (name = "admin", description = "The cluster's actors, for operators (needs `admin.token`)"),
        (name = "web", description = "The web chat page"),
        (name = "api", description = "These documents")
    )
)]
pub struct ApiDoc;

/// Names of the security schemes, as the endpoints refer to them.
pub const BEARER: &str = "bearer";
pub const ADMIN: &str = "admin";

struct SecuritySchemes;

impl Modify for SecuritySchemes {
    fn modify(&self, openapi: &mut Document) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            BEARER,
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some(
                        "A session token from `POST /api/v1/login` (`token`), valid until its \
                         `expires_at`; revoked by `POST /api/v1/logout`.",
                    ))
                    .build(),
            ),
        );
        components.add_security_scheme(
            ADMIN,
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some(
                        "The node's `admin.token` (configuration). Wrong tokens are rate \
                         limited per address (`rate_limits.admin_auth`).",
                    ))
                    .build(),
            ),
        );
    }
}

/// The OpenAPI document, built once.
static OPENAPI_JSON: LazyLock<String> = LazyLock::new(|| {
    serde_json::to_string_pretty(&super::openapi()).unwrap_or_else(|e| {
        tracing::error!(error = %e, "the OpenAPI document does not serialise");
        String::from("{}")
    })
});

/// The frames' JSON Schema document, built once.
static FRAMES_JSON: LazyLock<String> = LazyLock::new(|| {
    serde_json::to_string_pretty(&frames::document()).unwrap_or_else(|e| {
        tracing::error!(error = %e, "the frames schema does not serialise");
        String::from("{}")
    })
});

fn json(body: &'static str, content_type: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, content_type),
            (header::CACHE_CONTROL, "no-cache"),
            (header::ACCESS_CONTROL_ALLOW_ORIGIN, "*"),
        ],
        body,
    )
        .into_response()
}

/// The OpenAPI 3.1 document of this node's REST API.
#[utoipa::path(
    get,
    path = "/api/openapi.json",
    tag = "api",
    responses((status = 200, description = "The OpenAPI 3.1 document (this one)",
        content_type = "application/json", body = Object))
)]
pub async fn openapi_json() -> Response {
    json(&OPENAPI_JSON, "application/json")
}

/// The JSON Schema (2020-12) of every WebSocket frame: `$defs` holds one
/// schema per frame type (`client.send`, `server.message`, ...), and
/// `ClientFrame`/`ServerFrame` are the union of each side's.
#[utoipa::path(
    get,
    path = "/api/frames.schema.json",
    tag = "api",
    responses((status = 200, description = "The frames' JSON Schema document",
        content_type = "application/schema+json", body = Object))
)]
pub async fn frames_schema() -> Response {
    json(&FRAMES_JSON, "application/schema+json")
}

#[cfg(test)]
mod tests {
    use serde_json::Value;

    fn document() -> Value {
        serde_json::to_value(super::super::openapi()).expect("the document serialises")
    }

    #[test]
    fn the_document_is_openapi_3_1_with_both_security_schemes() {
        let doc = document();
        assert_eq!(doc["openapi"], "3.1.0");
        let schemes = &doc["components"]["securitySchemes"];
        for name in [super::BEARER, super::ADMIN] {
            assert_eq!(schemes[name]["type"], "http", "{name}");
            assert_eq!(schemes[name]["scheme"], "bearer", "{name}");
        }
    }

    /// What a new endpoint must say to be documented well: a success, a
    /// 401 when it needs a token, a 400 when it takes a body, and only
    /// tags and security schemes that exist.
    #[test]
    fn every_operation_documents_its_answers_and_errors() {
        let doc = document();
        let tags: Vec<&str> = doc["tags"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|t| t["name"].as_str())
            .collect();
        let mut operations = 0;
        for (path, item) in doc["paths"].as_object().unwrap() {
            for (method, op) in item.as_object().unwrap() {
                operations += 1;
                let name = format!("{method} {path}");
                let responses = op["responses"].as_object().expect("responses");
                assert!(
                    responses.keys().any(|s| s.starts_with('2') || s == "101"),
                    "{name}: no success response"
                );
                let tag = op["tags"][0].as_str().unwrap_or_default();
                assert!(tags.contains(&tag), "{name}: tag {tag:?} is not declared");
                let security: Vec<&str> = op["security"]
                    .as_array()
                    .map(|s| {
                        s.iter()
                            .filter_map(|r| r.as_object())
                            .flat_map(|r| r.keys().map(String::as_str))
                            .collect()
                    })
                    .unwrap_or_default();
                for scheme in &security {
                    assert!(
                        [super::BEARER, super::ADMIN].contains(scheme),
                        "{name}: unknown security scheme {scheme}"
                    );
                }
                if !security.is_empty() {
                    assert!(responses.contains_key("401"), "{name}: no 401");
                }
                if op.get("requestBody").is_some() {
                    assert!(responses.contains_key("400"), "{name}: no 400");
                }
                // Answers are Rust types with their schema, not ad hoc JSON
                // (a bare `object`); only the two documents are free-form.
                let free_form = ["/api/openapi.json", "/api/frames.schema.json"];
                for (status, response) in responses {
                    let schema = &response["content"]["application/json"]["schema"];
                    if status.starts_with('2') && !free_form.contains(&path.as_str()) {
                        assert!(
                            !(schema["type"] == "object"
                                && schema.get("properties").is_none()
                                && schema.get("$ref").is_none()),
                            "{name} {status}: a bare object; give it a type with ToSchema"
                        );
                    }
                }
            }
        }
        assert!(operations >= 25, "{operations} operations");
    }
}

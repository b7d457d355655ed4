//! `GET /api/docs`: the API reference for people, one static page compiled
//! into the binary (`reference.html`: its HTML, CSS and JavaScript, no
//! build step, nothing fetched from elsewhere). Its script reads
//! `/api/openapi.json` and `/api/frames.schema.json` and renders them, every
//! string as text (no `innerHTML`). The Content-Security-Policy allows only
//! this page's own script and style, by their SHA-256, and requests to this
//! origin.

use std::sync::LazyLock;

use axum::http::header::{
    HeaderName, CACHE_CONTROL, CONTENT_SECURITY_POLICY, REFERRER_POLICY, X_CONTENT_TYPE_OPTIONS,
    X_FRAME_OPTIONS,
};
use axum::response::{Html, IntoResponse, Response};
use base64::Engine;
use sha2::{Digest, Sha256};

const PAGE: &str = include_str!("reference.html");

/// The text between the first `<tag>` and its `</tag>`.
fn inline(tag: &str) -> &'static str {
    let open = format!("<{tag}>");
    let close = format!("</{tag}>");
    PAGE.split_once(open.as_str())
        .and_then(|(_, rest)| rest.split_once(close.as_str()))
        .map_or("", |(inner, _)| inner)
}

fn sha256(text: &str) -> String {
    let digest = Sha256::digest(text.as_bytes());
    format!(
        "'sha256-{}'",
        base64::engine::general_purpose::STANDARD.encode(digest)
    )
}

/// Only the page's own inline script and style (by hash), requests to this
/// origin only, no frames, no forms, no plugins.
static CSP: LazyLock<String> = LazyLock::new(|| {
    format!(
        "default-src 'none'; script-src {}; style-src {}; connect-src 'self'; img-src 'self'; \
         base-uri 'none'; form-action 'none'; frame-ancestors 'none'",
        sha256(inline("script")),
        sha256(inline("style")),
    )
});

/// The reference page of the REST API and the WebSocket frames.
#[utoipa::path(
    get,
    path = "/api/docs",
    operation_id = "api_docs",
    tag = "api",
    responses((status = 200, description = "The API reference (HTML), rendered from the two documents",
        content_type = "text/html", body = String))
)]
pub async fn page() -> Response {
    let headers: [(HeaderName, &str); 5] = [
        (CACHE_CONTROL, "no-cache"),
        (CONTENT_SECURITY_POLICY, CSP.as_str()),
        (REFERRER_POLICY, "no-referrer"),
        (X_CONTENT_TYPE_OPTIONS, "nosniff"),
        (X_FRAME_OPTIONS, "DENY"),
    ];
    (headers, Html(PAGE)).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_policy_names_the_page_s_own_script_and_style() {
        let script = inline("script");
        let style = inline("style");
        assert!(script.contains("fetch("), "no script found");
        assert!(!style.is_empty(), "no style found");
        assert!(CSP.contains(&sha256(script)));
        assert!(CSP.contains(&sha256(style)));
        assert!(!CSP.contains("unsafe-inline"));
        // Exactly one of each: a second one would be blocked by the policy.
        assert_eq!(PAGE.matches("<script").count(), 1);
        assert_eq!(PAGE.matches("<style").count(), 1);
    }

    #[test]
    fn user_strings_are_never_html() {
        for banned in [
            "innerHTML",
            "outerHTML",
            "insertAdjacentHTML",
            "document.write",
        ] {
            assert!(!PAGE.contains(banned), "reference.html uses {banned}");
        }
    }
}

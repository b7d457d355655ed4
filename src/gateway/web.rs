//! The chat page: `GET /` (the page) and `GET /web/*` (its scripts and style
//! sheet). The files live in `web/` at the root of the repository, plain
//! JavaScript modules and CSS with no build step, and are compiled into the
//! binary so that a node needs nothing next to it to serve them. The page
//! talks to the node over the same REST endpoints and WebSocket frames as any
//! client (see docs/web.md).
//!
//! The Content-Security-Policy allows scripts and styles from this origin
//! only (no inline code, no `eval`), requests to this origin only
//! (`connect-src 'self'` covers the same-host WebSocket), and images from
//! this origin or `blob:` (attachment previews are fetched with the bearer
//! token and shown from a blob URL).

use axum::extract::Path;
use axum::http::header::{
    HeaderName, CACHE_CONTROL, CONTENT_SECURITY_POLICY, CONTENT_TYPE, REFERRER_POLICY,
    X_CONTENT_TYPE_OPTIONS, X_FRAME_OPTIONS,
};
use axum::response::{IntoResponse, Response};

use super::rest;

pub const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
                       connect-src 'self'; img-src 'self' blob:; base-uri 'none'; \
                       form-action 'none'; frame-ancestors 'none'";

/// Every file of `web/` but the page itself, by its path under `/web/`. A
/// unit test checks that this list and the directory agree.
const ASSETS: &[(&str, &[u8])] = &[
    ("app.css", include_bytes!("../../web/app.css")),
    ("icon.svg", include_bytes!("../../web/icon.svg")),
    ("js/api.js", include_bytes!("../../web/js/api.js")),
    ("js/conn.js", include_bytes!("../../web/js/conn.js")),
    ("js/dom.js", include_bytes!("../../web/js/dom.js")),
    ("js/main.js", include_bytes!("../../web/js/main.js")),
    ("js/members.js", include_bytes!("../../web/js/members.js")),
    ("js/outbox.js", include_bytes!("../../web/js/outbox.js")),
    ("js/store.js", include_bytes!("../../web/js/store.js")),
    (
        "js/features/attachments.js",
        include_bytes!("../../web/js/features/attachments.js"),
    ),
    (
        "js/features/changes.js",
        include_bytes!("../../web/js/features/changes.js"),
    ),
    (
        "js/features/deletes.js",
        include_bytes!("../../web/js/features/deletes.js"),
    ),
    (
        "js/features/dms.js",
        include_bytes!("../../web/js/features/dms.js"),
    ),
    (
        "js/features/edits.js",
        include_bytes!("../../web/js/features/edits.js"),
    ),
    (
        "js/features/friends.js",
        include_bytes!("../../web/js/features/friends.js"),
    ),
    (
        "js/features/login.js",
        include_bytes!("../../web/js/features/login.js"),
    ),
    (
        "js/features/people.js",
        include_bytes!("../../web/js/features/people.js"),
    ),
    (
        "js/features/pins.js",
        include_bytes!("../../web/js/features/pins.js"),
    ),
    (
        "js/features/public.js",
        include_bytes!("../../web/js/features/public.js"),
    ),
    (
        "js/features/reactions.js",
        include_bytes!("../../web/js/features/reactions.js"),
    ),
    (
        "js/features/receipts.js",
        include_bytes!("../../web/js/features/receipts.js"),
    ),
    (
        "js/features/rooms.js",
        include_bytes!("../../web/js/features/rooms.js"),
    ),
    (
        "js/features/search.js",
        include_bytes!("../../web/js/features/search.js"),
    ),
    (
        "js/features/threads.js",
        include_bytes!("../../web/js/features/threads.js"),
    ),
    (
        "js/features/timeline.js",
        include_bytes!("../../web/js/features/timeline.js"),
    ),
    (
        "js/features/typing.js",
        include_bytes!("../../web/js/features/typing.js"),
    ),
];

const INDEX: &[u8] = include_bytes!("../../web/index.html");

fn content_type(path: &str) -> &'static str {
    match path.rsplit('.').next() {
        Some("html") => "text/html; charset=utf-8",
        Some("js") => "text/javascript; charset=utf-8",
        Some("css") => "text/css; charset=utf-8",
        Some("svg") => "image/svg+xml",
        Some("png") => "image/png",
        _ => "application/octet-stream",
    }
}

fn serve(path: &str, body: &'static [u8]) -> Response {
    let headers: [(HeaderName, &str); 6] = [
        (CONTENT_TYPE, content_type(path)),
        // Revalidated on every load: the files change with the binary.
        (CACHE_CONTROL, "no-cache"),
        (CONTENT_SECURITY_POLICY, CSP),
        (REFERRER_POLICY, "no-referrer"),
        (X_CONTENT_TYPE_OPTIONS, "nosniff"),
        (X_FRAME_OPTIONS, "DENY"),
    ];
    (headers, body).into_response()
}

/// The web chat page (HTML; see docs/web.md).
#[utoipa::path(
    get,
    path = "/",
    operation_id = "web_page",
    tag = "web",
    responses((status = 200, description = "The chat page, with a strict Content-Security-Policy",
        content_type = "text/html", body = String))
)]
pub async fn index() -> Response {
    serve("index.html", INDEX)
}

/// One of the chat page's files (scripts, style sheet, icon), embedded in
/// the binary; anything else is the usual JSON 404.
#[utoipa::path(
    get,
    path = "/web/{*path}",
    operation_id = "web_asset",
    tag = "web",
    params(("path" = String, Path, description = "The file under `web/`, e.g. `js/main.js`")),
    responses(
        (status = 200, description = "The file (`text/javascript`, `text/css`, `image/svg+xml`)",
            content_type = "text/javascript", body = String),
        (status = 404, description = "`not_found`: no such file", body = super::api::responses::ErrorBody),
    )
)]
pub async fn asset(Path(path): Path<String>) -> Response {
    match ASSETS.iter().find(|(name, _)| *name == path) {
        Some((name, body)) => serve(name, body),
        None => rest::not_found().await.into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    fn web_dir() -> PathBuf {
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("web")
    }

    fn files_under(dir: &std::path::Path, prefix: &str, out: &mut Vec<String>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let entry = entry.unwrap();
            let name = format!("{prefix}{}", entry.file_name().to_string_lossy());
            if entry.file_type().unwrap().is_dir() {
                files_under(&entry.path(), &format!("{name}/"), out);
            } else {
                out.push(name);
            }
        }
    }

    #[test]
    fn every_file_of_web_is_embedded_and_nothing_else() {
        let mut on_disk = Vec::new();
        files_under(&web_dir(), "", &mut on_disk);
        on_disk.retain(|f| f != "index.html");
        on_disk.sort();
        let mut embedded: Vec<String> = ASSETS.iter().map(|(n, _)| n.to_string()).collect();
        embedded.sort();
        assert_eq!(on_disk, embedded, "web/ and ASSETS differ");
    }

    #[test]
    fn no_script_writes_markup() {
        // User strings are rendered with textContent only: no HTML parsing
        // of anything, so nothing a message says can become markup.
        for (name, body) in ASSETS.iter().filter(|(n, _)| n.ends_with(".js")) {
            let text = std::str::from_utf8(body).unwrap();
            for banned in [
                "innerHTML",
                "outerHTML",
                "insertAdjacentHTML",
                "document.write",
                "eval(",
                "new Function",
                "localStorage",
            ] {
                assert!(!text.contains(banned), "{name} uses {banned}");
            }
        }
        let page = std::str::from_utf8(INDEX).unwrap();
        assert!(!page.contains("<script>"), "inline script in index.html");
        assert!(!page.contains("style="), "inline style in index.html");
    }

    #[tokio::test]
    async fn files_have_their_types_and_the_policy() {
        let r = index().await;
        assert_eq!(r.status(), 200);
        assert!(r.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/html"));
        assert_eq!(r.headers()["content-security-policy"], CSP);
        let r = asset(Path("js/main.js".into())).await;
        assert_eq!(
            r.headers()["content-type"],
            "text/javascript; charset=utf-8"
        );
        let r = asset(Path("app.css".into())).await;
        assert_eq!(r.headers()["content-type"], "text/css; charset=utf-8");
        let r = asset(Path("../Cargo.toml".into())).await;
        assert_eq!(r.status(), 404);
        assert!(!CSP.contains("unsafe"));
    }
}

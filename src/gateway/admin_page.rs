//! `GET /admin`: the live admin page, one static file (`admin.html`: HTML,
//! CSS and JavaScript, no build step) compiled into the binary. It is served
//! without authentication because it holds no data: the page asks for the
//! admin token, keeps it in a JavaScript variable only, and reads the actor
//! tree from `/admin/actors` with it every 1.5 s.

use axum::http::header::{
    HeaderName, CACHE_CONTROL, CONTENT_SECURITY_POLICY, REFERRER_POLICY, X_CONTENT_TYPE_OPTIONS,
    X_FRAME_OPTIONS,
};
use axum::response::{Html, IntoResponse, Response};

const PAGE: &str = include_str!("admin.html");

/// Its own inline script and style, requests to this origin only, no frames,
/// no form posting anywhere (the token form is handled by the script).
const CSP: &str = "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; \
                   connect-src 'self'; img-src 'self'; base-uri 'none'; form-action 'none'; \
                   frame-ancestors 'none'";

pub async fn page() -> Response {
    let headers: [(HeaderName, &str); 5] = [
        (CACHE_CONTROL, "no-store"),
        (CONTENT_SECURITY_POLICY, CSP),
        (REFERRER_POLICY, "no-referrer"),
        (X_CONTENT_TYPE_OPTIONS, "nosniff"),
        (X_FRAME_OPTIONS, "DENY"),
    ];
    (headers, Html(PAGE)).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_page_is_html_and_never_cached() {
        let r = page().await;
        assert_eq!(r.status(), 200);
        let h = r.headers();
        assert!(h["content-type"].to_str().unwrap().starts_with("text/html"));
        assert_eq!(h["cache-control"], "no-store");
        assert!(h["content-security-policy"]
            .to_str()
            .unwrap()
            .contains("connect-src 'self'"));
    }

    #[test]
    fn the_token_never_leaves_the_script() {
        // Kept in a variable only: no storage, no cookie, no query string.
        for banned in [
            "localStorage",
            "sessionStorage",
            "document.cookie",
            "indexedDB",
            "?token=",
        ] {
            assert!(!PAGE.contains(banned), "admin.html uses {banned}");
        }
        assert!(PAGE.contains(r#""Authorization": "Bearer " + token"#));
        // A token given in the fragment is removed from the address bar.
        assert!(PAGE.contains("history.replaceState"));
    }
}

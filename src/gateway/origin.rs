//! The `Origin` allow-list of the WebSocket upgrade (`http.allowed_origins`):
//! a browser page from another site must not open a chat connection with the
//! user's credentials. Clients that send no `Origin` (not browsers) are not
//! concerned and stay allowed.

use axum::http::HeaderValue;

/// An entry of the list: `*`, or an origin as browsers send it,
/// `scheme://host[:port]` (http or https, no path, no trailing slash).
pub fn is_valid_entry(entry: &str) -> bool {
    if entry == "*" {
        return true;
    }
    let Some((scheme, host)) = entry.split_once("://") else {
        return false;
    };
    (scheme.eq_ignore_ascii_case("http") || scheme.eq_ignore_ascii_case("https"))
        && !host.is_empty()
        && !host
            .chars()
            .any(|c| matches!(c, '/' | '?' | '#' | '@') || c.is_whitespace() || c.is_control())
}

/// Whether an upgrade with this `Origin` header may proceed.
pub fn allowed(list: &[String], origin: Option<&HeaderValue>) -> bool {
    let Some(origin) = origin else {
        return true;
    };
    if list.is_empty() || list.iter().any(|o| o == "*") {
        return true;
    }
    // Scheme and host are case-insensitive; browsers send them lowercase.
    origin
        .to_str()
        .is_ok_and(|origin| list.iter().any(|o| o.eq_ignore_ascii_case(origin)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_are_bare_origins() {
        for ok in ["*", "https://chat.example.com", "http://localhost:8080"] {
            assert!(is_valid_entry(ok), "{ok}");
        }
        for bad in [
            "",
            "chat.example.com",
            "https://",
            "https://chat.example.com/",
            "https://chat.example.com/path",
            "ftp://x",
            "https://a b",
        ] {
            assert!(!is_valid_entry(bad), "{bad}");
        }
    }

    #[test]
    fn only_listed_origins_pass_a_non_empty_list() {
        let list = vec!["https://chat.example.com".to_string()];
        let h = |s: &'static str| HeaderValue::from_static(s);
        assert!(allowed(&list, None));
        assert!(allowed(&list, Some(&h("https://chat.example.com"))));
        assert!(allowed(&list, Some(&h("HTTPS://Chat.Example.com"))));
        assert!(!allowed(&list, Some(&h("https://evil.example"))));
        assert!(!allowed(&list, Some(&h("null"))));
        assert!(allowed(&[], Some(&h("https://evil.example"))));
        assert!(allowed(&["*".into()], Some(&h("null"))));
    }
}

//! The web client at `/` (docs/web-client.md), with the headers a page holding a bearer token
//! needs.
//!
//! The client is three files under `node/web/` (markup, style, script: no build step), joined
//! into one page once at start-up with the style and the script inline, so the page loads in one
//! request. Its Content-Security-Policy allows exactly that one style and that one script (by
//! their SHA-256, computed from the page as served, so an edit cannot forget to update the
//! policy), connections to this origin only, and no framing: an injected script or a hostile
//! page framing this one gets nowhere.

use std::sync::LazyLock;

use axum::http::header;
use axum::response::{Html, IntoResponse, Response};
use base64::Engine;
use sha2::{Digest, Sha256};

/// The markup, with the placeholders `STYLE_SLOT` and `SCRIPT_SLOT`.
const MARKUP: &str = include_str!("../../web/index.html");
/// The style sheet.
const APP_CSS: &str = include_str!("../../web/app.css");
/// The script.
const APP_JS: &str = include_str!("../../web/app.js");
/// Where the style goes in `MARKUP`.
const STYLE_SLOT: &str = "<style>/* app.css */</style>";
/// Where the script goes in `MARKUP`.
const SCRIPT_SLOT: &str = "<script>/* app.js */</script>";

/// The page as served: the markup with the style and the script inline.
static INDEX_HTML: LazyLock<String> = LazyLock::new(|| {
    MARKUP
        .replacen(STYLE_SLOT, &format!("<style>\n{APP_CSS}</style>"), 1)
        .replacen(SCRIPT_SLOT, &format!("<script>\n{APP_JS}</script>"), 1)
});

/// `'sha256-…'` of the text between `open` and `close` in `html`, if both are there.
fn inline_hash(html: &str, open: &str, close: &str) -> Option<String> {
    let start = html.find(open)? + open.len();
    let end = start + html[start..].find(close)?;
    let digest = Sha256::digest(&html.as_bytes()[start..end]);
    Some(format!(
        "'sha256-{}'",
        base64::engine::general_purpose::STANDARD.encode(digest)
    ))
}

/// The page's Content-Security-Policy.
pub fn content_security_policy() -> &'static str {
    static CSP: LazyLock<String> = LazyLock::new(|| {
        let script = inline_hash(&INDEX_HTML, "<script>", "</script>").unwrap_or_else(|| "'none'".into());
        let style = inline_hash(&INDEX_HTML, "<style>", "</style>").unwrap_or_else(|| "'none'".into());
        format!(
            "default-src 'none'; script-src {script}; style-src {style}; connect-src 'self'; \
             img-src 'self' data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
        )
    });
    &CSP
}

/// `GET /`.
pub async fn index() -> Response {
    (
        [
            (header::CONTENT_SECURITY_POLICY, content_security_policy()),
            (header::X_FRAME_OPTIONS, "DENY"),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
            (header::REFERRER_POLICY, "no-referrer"),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        Html(INDEX_HTML.as_str()),
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_policy_names_the_hash_of_the_pages_own_script_and_style() {
        let csp = content_security_policy();
        let script = inline_hash(&INDEX_HTML, "<script>", "</script>").expect("the page has a script");
        let style = inline_hash(&INDEX_HTML, "<style>", "</style>").expect("the page has a style");
        assert!(csp.contains(&format!("script-src {script};")), "{csp}");
        assert!(csp.contains(&format!("style-src {style};")), "{csp}");
        assert!(csp.contains("frame-ancestors 'none'"));
        assert_eq!(
            INDEX_HTML.matches("<script").count(),
            1,
            "one inline script, no others to allow"
        );
    }

    #[test]
    fn the_style_and_the_script_are_inlined_whole() {
        assert!(MARKUP.contains(STYLE_SLOT) && MARKUP.contains(SCRIPT_SLOT));
        // A closing tag inside them would end the inline element early.
        assert!(!APP_JS.contains("</script") && !APP_CSS.contains("</style"));
        assert!(INDEX_HTML.contains(APP_JS) && INDEX_HTML.contains(APP_CSS));
        assert_eq!(INDEX_HTML.matches("<style").count(), 1, "one inline style");
    }
}

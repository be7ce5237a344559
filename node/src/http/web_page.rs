//! The demo web client at `/`, with the headers a page holding a bearer token needs.
//!
//! The page is one file with an inline `<style>` and `<script>`. Its Content-Security-Policy
//! allows exactly those two (by their SHA-256, computed once from the embedded file, so an
//! edit of the page cannot forget to update the policy), connections to this origin only, and
//! no framing: an injected script or a hostile page framing this one gets nowhere.

use std::sync::LazyLock;

use axum::http::header;
use axum::response::{Html, IntoResponse, Response};
use base64::Engine;
use sha2::{Digest, Sha256};

/// The page, embedded at build time.
const INDEX_HTML: &str = include_str!("../../web/index.html");

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
        let script = inline_hash(INDEX_HTML, "<script>", "</script>").unwrap_or_else(|| "'none'".into());
        let style = inline_hash(INDEX_HTML, "<style>", "</style>").unwrap_or_else(|| "'none'".into());
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
        Html(INDEX_HTML),
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_policy_names_the_hash_of_the_pages_own_script_and_style() {
        let csp = content_security_policy();
        let script = inline_hash(INDEX_HTML, "<script>", "</script>").expect("the page has a script");
        let style = inline_hash(INDEX_HTML, "<style>", "</style>").expect("the page has a style");
        assert!(csp.contains(&format!("script-src {script};")), "{csp}");
        assert!(csp.contains(&format!("style-src {style};")), "{csp}");
        assert!(csp.contains("frame-ancestors 'none'"));
        assert_eq!(
            INDEX_HTML.matches("<script").count(),
            1,
            "one inline script, no others to allow"
        );
    }
}

//! Input validation, done once at the edge (HTTP and WebSocket share it).

use crate::error::{ApiError, ErrorCode};

/// Longest id, device name, `client_msg_id` (bytes).
pub const MAX_ID_BYTES: usize = 64;
/// Longest message text (Unicode scalar values).
pub const MAX_TEXT_CHARS: usize = 100_000;
/// Longest group name (chars).
pub const MAX_GROUP_NAME_CHARS: usize = 200;
/// Largest history page.
pub const MAX_PAGE: u32 = 500;
/// Default history page.
pub const DEFAULT_PAGE: u32 = 50;

/// Lowercases and checks a username: 3–32 of `a-z 0-9 _ . -`. Only ASCII letters are
/// lowercased: Unicode lowercasing maps look-alikes such as the Kelvin sign (U+212A) to `k`,
/// which would let `\u{212A}ate` sign up as (or log in to) `kate`.
pub fn username(raw: &str) -> Result<String, ApiError> {
    let name = raw.to_ascii_lowercase();
    let ok = (3..=32).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'_' | b'.' | b'-'));
    if ok {
        Ok(name)
    } else {
        Err(ApiError::invalid("username must be 3-32 characters of a-z 0-9 _ . -"))
    }
}

/// Checks a password: 8–1024 bytes.
pub fn password(p: &str) -> Result<(), ApiError> {
    if (8..=1024).contains(&p.len()) {
        Ok(())
    } else {
        Err(ApiError::invalid("password must be 8-1024 bytes"))
    }
}

/// Checks message text: 1–100,000 chars (not bytes).
pub fn text(t: &str) -> Result<(), ApiError> {
    if t.is_empty() {
        return Err(ApiError::invalid("text must not be empty"));
    }
    // Count only as far as needed: a huge text is rejected without walking all of it.
    if t.len() > MAX_TEXT_CHARS && t.chars().nth(MAX_TEXT_CHARS).is_some() {
        return Err(ApiError::new(
            ErrorCode::TooLarge,
            format!("text is longer than {MAX_TEXT_CHARS} characters"),
        ));
    }
    Ok(())
}

/// Checks an opaque id or key supplied by a client (non-empty, ≤ 64 bytes).
pub fn id(what: &str, v: &str) -> Result<(), ApiError> {
    if v.is_empty() || v.len() > MAX_ID_BYTES {
        Err(ApiError::invalid(format!("{what} must be 1-{MAX_ID_BYTES} bytes")))
    } else {
        Ok(())
    }
}

/// Checks a group name: 1–200 chars after trimming, none of them invisible or reordering.
pub fn group_name(n: &str) -> Result<String, ApiError> {
    let n = n.trim();
    if n.is_empty() || n.chars().count() > MAX_GROUP_NAME_CHARS {
        return Err(ApiError::invalid(format!(
            "name must be 1-{MAX_GROUP_NAME_CHARS} characters"
        )));
    }
    shown_text("name", n)?;
    Ok(n.to_string())
}

/// Refuses control characters (NUL, newlines, escapes) and the bidirectional overrides and
/// isolates (U+202A–U+202E, U+2066–U+2069) in text shown as a label (group and device names):
/// they hide or reorder what other members see (a name that reads as someone else's).
pub fn shown_text(what: &str, v: &str) -> Result<(), ApiError> {
    let bad = v
        .chars()
        .any(|c| c.is_control() || matches!(c, '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}'));
    if bad {
        Err(ApiError::invalid(format!(
            "{what} must not contain control or bidirectional-override characters"
        )))
    } else {
        Ok(())
    }
}

/// Resolves a page size: default 50, 1–500.
pub fn limit(l: Option<u64>) -> Result<u32, ApiError> {
    match l {
        None => Ok(DEFAULT_PAGE),
        Some(n) if (1..=u64::from(MAX_PAGE)).contains(&n) => Ok(n as u32),
        Some(_) => Err(ApiError::invalid(format!("limit must be 1-{MAX_PAGE}"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_counts_chars_not_bytes() {
        let max = "é".repeat(MAX_TEXT_CHARS);
        assert!(text(&max).is_ok());
        let over = "é".repeat(MAX_TEXT_CHARS + 1);
        assert_eq!(text(&over).unwrap_err().code, ErrorCode::TooLarge);
        assert_eq!(text("").unwrap_err().code, ErrorCode::Invalid);
        let emoji = "😀".repeat(MAX_TEXT_CHARS);
        assert!(text(&emoji).is_ok());
    }

    #[test]
    fn usernames_are_lowercased_and_checked() {
        assert_eq!(username("Alice.B-1_").unwrap(), "alice.b-1_");
        assert!(username("ab").is_err());
        assert!(username(&"a".repeat(33)).is_err());
        assert!(username("al ice").is_err());
        assert!(username("ålice").is_err());
        assert!(username("\u{212A}ate").is_err(), "the Kelvin sign is not a k");
    }

    #[test]
    fn names_refuse_control_and_bidi_override_characters() {
        assert_eq!(group_name("  Team 🚀 ").unwrap(), "Team 🚀");
        assert!(group_name("a\0b").is_err());
        assert!(group_name("evil\u{202E}gnp.exe").is_err());
        assert!(group_name("x\u{2066}y").is_err());
        assert!(group_name("line\nbreak").is_err());
        assert!(shown_text("device_name", "Pixel 8").is_ok());
    }

    #[test]
    fn limits_default_and_bound() {
        assert_eq!(limit(None).unwrap(), 50);
        assert_eq!(limit(Some(500)).unwrap(), 500);
        assert!(limit(Some(0)).is_err());
        assert!(limit(Some(501)).is_err());
    }
}

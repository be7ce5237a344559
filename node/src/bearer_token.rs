//! A bearer token as a client presents it, in `Authorization: Bearer <token>` or in a `hello`
//! frame. Tokens are opaque (32 random bytes in base64url, `auth::new_token`), so only their
//! shape is checked here: what the server could never have issued is refused before it costs a
//! hash and a storage lookup.

/// Longest token accepted: issued tokens have 43 characters; the rest is room for a longer
/// format without refusing tokens already handed out.
pub const MAX_TOKEN_LEN: usize = 256;

/// The token in an `Authorization` header value (scheme `Bearer`, any case, RFC 7235), or
/// `None` when the value is not a bearer token of a valid shape.
pub fn from_authorization(value: &[u8]) -> Option<&str> {
    let value = std::str::from_utf8(value).ok()?;
    let (scheme, token) = value.split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("bearer") {
        return None;
    }
    checked(token.trim_matches([' ', '\t']))
}

/// `token` when it has the shape of an issued token: 1 to `MAX_TOKEN_LEN` base64url characters.
pub fn checked(token: &str) -> Option<&str> {
    let base64url = |b: u8| b.is_ascii_alphanumeric() || b == b'-' || b == b'_';
    let fits = !token.is_empty() && token.len() <= MAX_TOKEN_LEN && token.bytes().all(base64url);
    fits.then_some(token)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_issued_token_passes_in_a_header_and_alone() {
        let token = crate::auth::new_token();
        assert_eq!(checked(&token), Some(token.as_str()));
        for header in [
            format!("Bearer {token}"),
            format!("bearer  {token} "),
            format!("BEARER {token}"),
        ] {
            assert_eq!(from_authorization(header.as_bytes()), Some(token.as_str()), "{header}");
        }
    }

    #[test]
    fn what_no_server_issued_is_refused() {
        for header in [
            "Bearer ",
            "Bearer",
            "Basic dXNlcjpwYXNz",
            "Bearer a b",
            "Bearer a\u{0}b",
            "Bearer tok=en",
            "Bearer t\u{212A}n",
            "Token abc",
        ] {
            assert_eq!(from_authorization(header.as_bytes()), None, "{header:?}");
        }
        assert_eq!(from_authorization(b"Bearer \xff\xfe"), None);
        assert_eq!(checked(&"a".repeat(MAX_TOKEN_LEN + 1)), None);
        assert!(checked(&"a".repeat(MAX_TOKEN_LEN)).is_some());
    }
}

//! A bearer token as a client presents it (an `Authorization` header value, a `hello` frame's
//! token): the shape check must answer every input, never panic, and what it lets through
//! must be a token the server could have issued, which then hashes to a storage key.
#![no_main]

use libfuzzer_sys::fuzz_target;
use ringchat_node::{auth, bearer_token};

fuzz_target!(|data: &[u8]| {
    if let Some(token) = bearer_token::from_authorization(data) {
        assert_eq!(bearer_token::checked(token), Some(token));
        let hash = auth::token_hash(token);
        assert!(hash.len() == 64 && hash.bytes().all(|b| b.is_ascii_hexdigit()));
    }
    if let Ok(text) = std::str::from_utf8(data) {
        if let Some(token) = bearer_token::checked(text) {
            assert!(token.len() <= bearer_token::MAX_TOKEN_LEN && !token.contains(char::is_whitespace));
        }
    }
});

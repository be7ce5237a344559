//! Every JSON request body the HTTP API accepts, through the same parser its handlers use.
#![no_main]

use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use ringchat_node::http::extract::parse_json;
use ringchat_node::http::{channels, messages, sessions, users};

fuzz_target!(|data: &[u8]| {
    let body = Bytes::copy_from_slice(data);
    let _ = parse_json::<messages::SendBody>(&body);
    let _ = parse_json::<users::SignupBody>(&body);
    let _ = parse_json::<sessions::LoginBody>(&body);
    let _ = parse_json::<sessions::PushBody>(&body);
    let _ = parse_json::<channels::UserBody>(&body);
    let _ = parse_json::<channels::GroupBody>(&body);
});

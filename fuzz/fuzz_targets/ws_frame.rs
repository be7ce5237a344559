//! A client's WebSocket text frame: strict JSON checks and the frame parser must answer every
//! input with a frame or an error, never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use ringchat_node::gateway::frames;

fuzz_target!(|data: &[u8]| {
    // tungstenite hands the gateway only valid UTF-8 text frames.
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = frames::parse(text);
    }
});

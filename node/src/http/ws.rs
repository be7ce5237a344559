//! `GET /v1/ws`: origin check, then the upgrade with deliberately small tungstenite buffers
//! (the defaults cost ~256 KiB per connection) and a 1 MiB frame/message limit.

use std::sync::Arc;

use axum::extract::ws::WebSocketUpgrade;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};

use crate::app::AppState;
use crate::error::ApiError;
use crate::gateway::connection;

/// Largest frame or message a client may send.
pub const MAX_FRAME_BYTES: usize = 1 << 20;

/// Bytes read from the socket per call, and the read buffer every connection keeps for its
/// lifetime. Most client frames (a `send` with a chat-sized text) fit; a 100,000-character
/// text takes more reads, but tungstenite reserves room for a whole frame once it has read
/// its header. Each KiB here costs a KiB per idle connection.
const READ_BUFFER_BYTES: usize = 512;

/// Outgoing frames collect in tungstenite's write buffer up to this size before they are
/// written; the connection's writer flushes after each run of queued frames
/// (`gateway::connection`), so a run costs one `write` instead of one per frame. 0 (a write per
/// frame) made the syscalls of a group fan-out the server's largest cost. The buffer only
/// grows on connections that receive runs of frames; idle ones keep a small one.
const WRITE_BUFFER_BYTES: usize = 8 * 1024;

/// Upgrades to a WebSocket unless the `Origin` is not allowed (403).
pub async fn upgrade(State(app): State<Arc<AppState>>, headers: HeaderMap, ws: WebSocketUpgrade) -> Response {
    if !app.config.allowed_origins.is_empty() {
        if let Some(origin) = headers.get(axum::http::header::ORIGIN) {
            let ok = origin
                .to_str()
                .map(|o| app.config.allowed_origins.iter().any(|a| a == o))
                .unwrap_or(false);
            if !ok {
                return ApiError::forbidden("origin not allowed").into_response();
            }
        }
    }
    ws.read_buffer_size(READ_BUFFER_BYTES)
        .write_buffer_size(WRITE_BUFFER_BYTES)
        .max_write_buffer_size(2 * MAX_FRAME_BYTES)
        .max_message_size(MAX_FRAME_BYTES)
        .max_frame_size(MAX_FRAME_BYTES)
        // No `async move` here: an async block keeps what it captures (the 368 B socket) for
        // the connection's whole life; `serve` splits the socket before its future exists.
        .on_upgrade(move |socket| {
            let tracker = app.tracker.clone();
            tracker.track_future(connection::serve(socket, app))
        })
}

//! The one error type of the SDK.

/// What went wrong with a call.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The server answered with a PROTOCOL error (`{"error":{"code","message"}}`) or refused a
    /// WebSocket upgrade with this HTTP status.
    #[error("{status} {code}: {message}")]
    Api {
        /// HTTP status.
        status: u16,
        /// PROTOCOL error code (empty if the body was not a PROTOCOL error).
        code: String,
        /// Human text.
        message: String,
    },
    /// The WebSocket was closed; `code` is the close code if the server sent one.
    #[error("connection closed (code {code:?}): {reason}")]
    Closed {
        /// Close code (4001, 4002, 4008, 1001, 1009…), if a close frame arrived.
        code: Option<u16>,
        /// Close reason text.
        reason: String,
    },
    /// Nothing arrived within the time given.
    #[error("timed out")]
    Timeout,
    /// Transport failure of an HTTP call.
    #[error("http: {0}")]
    Http(#[from] reqwest::Error),
    /// Transport failure of the WebSocket.
    #[error("websocket: {0}")]
    Ws(#[from] tokio_tungstenite::tungstenite::Error),
    /// TLS could not be set up (the trusted roots or a CA file).
    #[error("tls: {0}")]
    Tls(String),
    /// The server sent something this SDK could not decode.
    #[error("decode: {0}")]
    Decode(String),
}

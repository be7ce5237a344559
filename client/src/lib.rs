//! Rust SDK for ringchat (PROTOCOL.md §2–3): an HTTP client for the REST calls and a WebSocket
//! client for the live protocol. Used by the integration tests, the benchmarks and tools, so it
//! exposes the wire as it is (status codes, raw frames) as well as typed helpers. `https://` bases
//! are reached over TLS (the system's roots, or `Trust::with_ca_pem` for a private CA).

mod error;
mod http;
mod tls;
mod types;
mod ws;

pub use error::ClientError;
pub use http::HttpClient;
pub use tls::Trust;
pub use types::{ChannelSummary, HistoryPage, Message, Presence, SentMessage, Session, UserInfo};
pub use ws::WsClient;

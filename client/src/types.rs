//! Typed bodies of the HTTP API (PROTOCOL §1–2).

use serde::{Deserialize, Serialize};

/// `POST /v1/users` and `GET /v1/users/by-name/…`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserInfo {
    /// Opaque id.
    pub user_id: String,
    /// Lowercase username.
    pub username: String,
}

/// `POST /v1/sessions`: a logged-in device.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Session {
    /// Bearer token.
    pub token: String,
    /// The user.
    pub user_id: String,
    /// The device this login is.
    pub device_id: String,
}

/// Channel summary.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChannelSummary {
    /// Opaque id.
    pub channel_id: String,
    /// `dm` or `group`.
    pub kind: String,
    /// Group name; `None` for DMs.
    pub name: Option<String>,
    /// Member user ids.
    pub members: Vec<String>,
    /// Highest committed seq (0 when empty).
    pub last_seq: u64,
}

/// A committed message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Message {
    /// Channel.
    pub channel_id: String,
    /// Gap-free position in the channel.
    pub seq: u64,
    /// Author.
    pub sender_id: String,
    /// Text.
    pub text: String,
    /// Commit time, Unix ms.
    pub ts: u64,
    /// The sender's idempotency key, if it gave one.
    #[serde(default)]
    pub client_msg_id: Option<String>,
}

/// Answer to a send: where the message landed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SentMessage {
    /// Channel.
    pub channel_id: String,
    /// Its seq.
    pub seq: u64,
    /// Commit time, Unix ms.
    pub ts: u64,
}

/// A page of history.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HistoryPage {
    /// Ascending by seq.
    pub messages: Vec<Message>,
    /// More messages exist beyond this page in the direction asked.
    pub has_more: bool,
}

/// `GET /v1/users/{uid}/presence`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Presence {
    /// The user.
    pub user_id: String,
    /// `online` or `offline`.
    pub status: String,
    /// When the last connection ended (Unix ms), if ever.
    pub last_seen: Option<u64>,
}

//! Domain records stored in partition state machines. Each is persisted with a format version
//! (see `ringchat_storage::record`); fields are documented because they are on disk.

use serde::{Deserialize, Serialize};

/// A user, stored in the user's home partition (`partition_of(user_id)`).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct UserRecord {
    /// Opaque id, `u_…`.
    pub user_id: String,
    /// Lowercase username.
    pub username: String,
    /// Creation time, Unix ms.
    pub created_ms: u64,
    /// When the user's last connection ended, Unix ms; `None` if never connected.
    pub last_seen: Option<u64>,
}

/// A username claim with the credential, stored in `partition_of(username)` so that sign-up
/// uniqueness and login are decided by one partition.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct UsernameRecord {
    /// The user who owns the name.
    pub user_id: String,
    /// Argon2id PHC string (salted); the password itself is never stored.
    pub password_hash: String,
}

/// Push registration of one device.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct PushTarget {
    /// `apns`, `fcm`, `webpush` or `test`.
    pub platform: String,
    /// The platform's device token.
    pub token: String,
}

/// A device of a user (one per login unless re-used), in the user's home partition.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct DeviceRecord {
    /// Opaque id, `dv_…`.
    pub device_id: String,
    /// Client-chosen label.
    pub name: Option<String>,
    /// Creation time, Unix ms.
    pub created_ms: u64,
    /// Where to push when the user is offline.
    pub push: Option<PushTarget>,
}

/// A login session, stored under the SHA-256 of its token in `partition_of(token_hash)`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct SessionRecord {
    /// The authenticated user.
    pub user_id: String,
    /// The device this session speaks for.
    pub device_id: String,
    /// Creation time, Unix ms.
    pub created_ms: u64,
}

/// `dm` or `group`.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum ChannelKind {
    /// Two fixed members.
    Dm,
    /// Up to the configured member limit.
    Group,
}

/// A channel, stored in `partition_of(channel_id)`; the source of truth for membership.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ChannelRecord {
    /// Opaque id: `d_…` for DMs (derived from the pair), `g_…` for groups.
    pub channel_id: String,
    /// DM or group.
    pub kind: ChannelKind,
    /// Group name; `None` for DMs.
    pub name: Option<String>,
    /// Who created it (may remove anyone from a group).
    pub creator: String,
    /// Current members, in join order.
    pub members: Vec<String>,
    /// Highest committed seq (0 before the first message).
    pub last_seq: u64,
    /// Creation time, Unix ms.
    pub created_ms: u64,
    /// `ts` of the newest message: the next one is never stamped below it, whatever the
    /// clock of the leader that stamps it (0 before the first, and in records written before
    /// this field existed).
    #[serde(default)]
    pub last_ts: u64,
}

/// One committed message; also the wire `message` object.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct MessageRecord {
    /// Channel it belongs to.
    pub channel_id: String,
    /// Position in the channel, 1, 2, 3… without gaps.
    pub seq: u64,
    /// Author.
    pub sender_id: String,
    /// 1 to 100,000 Unicode scalar values.
    pub text: String,
    /// Commit time, Unix ms (chosen by the leader before proposing, so replicas agree).
    pub ts: u64,
    /// The sender's idempotency key.
    pub client_msg_id: Option<String>,
}

/// A user's membership as seen from the user's home partition.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct UserChannelRecord {
    /// The channel's `last_seq` when the user joined: devices start reading after it.
    pub join_seq: u64,
}

/// A message awaiting push delivery to offline members (durable outbox, at-least-once).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct PushOutboxRecord {
    /// Channel of the message.
    pub channel_id: String,
    /// Seq of the message.
    pub seq: u64,
    /// Author (never pushed to).
    pub sender_id: String,
    /// Members other than the sender at commit time.
    pub recipients: Vec<String>,
    /// First 100 chars of the text.
    pub preview: String,
}

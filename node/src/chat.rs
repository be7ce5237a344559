//! Chat operations shared by the HTTP API and the WebSocket gateway: validation, the writes to
//! the partitions they touch, and the events they cause. One function per protocol action.

use std::collections::HashSet;
use std::sync::Arc;

use ringchat_cluster::{
    ChannelKind, ChannelRecord, Cluster, Command, DeviceRecord, MessageRecord, PushTarget, Response, SessionRecord,
    UserRecord, UsernameRecord,
};
use serde_json::{json, Value};

use crate::auth::{
    dm_channel_id, legacy_dm_channel_id, new_dm_id_key, new_id, new_token, token_hash, PasswordHasherPool,
};
use crate::error::{ApiError, ErrorCode};
use crate::fanout::Fanout;
use crate::gateway::frames;
use crate::gateway::registry::Registry;
use crate::gateway::revoked::RevokedSession;
use crate::validate;

/// How long a logout waits for every peer to close the session's sockets.
const LOGOUT_WAIT: std::time::Duration = std::time::Duration::from_secs(2);

/// Who a request speaks for.
#[derive(Debug, Clone)]
pub struct AuthContext {
    /// User.
    pub user_id: String,
    /// Device.
    pub device_id: String,
    /// Hash of the bearer token (the session key).
    pub token_hash: String,
}

/// A new session.
#[derive(Debug, Clone, serde::Serialize)]
pub struct NewSession {
    /// Bearer token (shown once).
    pub token: String,
    /// User.
    pub user_id: String,
    /// Device.
    pub device_id: String,
}

/// A page of history.
#[derive(Debug, Clone)]
pub struct HistoryPage {
    /// Ascending by seq.
    pub messages: Vec<MessageRecord>,
    /// More exist in the direction paged.
    pub has_more: bool,
}

/// Presence of one user.
#[derive(Debug, Clone)]
pub struct PresenceState {
    /// User.
    pub user_id: String,
    /// Online now.
    pub online: bool,
    /// End of the last connection, Unix ms.
    pub last_seen: Option<u64>,
}

impl PresenceState {
    /// The wire object `{user_id, status, last_seen}`.
    pub fn to_json(&self) -> Value {
        json!({
            "user_id": self.user_id,
            "status": if self.online { "online" } else { "offline" },
            "last_seen": self.last_seen,
        })
    }
}

/// The chat service of a node.
pub struct Chat {
    /// Partitions.
    pub cluster: Arc<Cluster>,
    /// Local connections.
    pub registry: Arc<Registry>,
    /// Local and cross-node fan-out.
    pub fanout: Arc<Fanout>,
    hasher: PasswordHasherPool,
    max_group_members: usize,
    /// A push gateway is configured: sends leave push outbox entries.
    push_enabled: bool,
    /// The cluster's DM id key, read (or created) on the first DM opened here.
    dm_id_key: tokio::sync::OnceCell<Vec<u8>>,
}

/// Current time, Unix ms.
pub use ringchat_cluster::clock::unix_ms as now_ms;

impl Chat {
    /// A chat service over `cluster`; `push_enabled` if a push gateway is configured.
    pub fn new(
        cluster: Arc<Cluster>,
        registry: Arc<Registry>,
        fanout: Arc<Fanout>,
        max_group_members: usize,
        push_enabled: bool,
    ) -> Self {
        let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(2);
        Chat {
            cluster,
            registry,
            fanout,
            hasher: PasswordHasherPool::new(cores),
            max_group_members,
            push_enabled,
            dm_id_key: tokio::sync::OnceCell::new(),
        }
    }

    /// `POST /v1/users`.
    pub async fn signup(&self, username: &str, password: &str) -> Result<UserRecord, ApiError> {
        let username = validate::username(username)?;
        validate::password(password)?;
        if self.cluster.get_username(&username).await?.is_some() {
            return Err(ApiError::new(ErrorCode::Conflict, "username is taken"));
        }
        let password_hash = self.hasher.hash(password.to_string()).await?;
        let user_id = new_id("u_");
        let claim = Command::ClaimUsername {
            username: username.clone(),
            record: UsernameRecord {
                user_id: user_id.clone(),
                password_hash,
            },
        };
        self.cluster
            .write(&username, claim)
            .await
            .map_err(|e| match ApiError::from(e) {
                e if e.code == ErrorCode::Conflict => ApiError::new(ErrorCode::Conflict, "username is taken"),
                e => e,
            })?;
        let user = UserRecord {
            user_id: user_id.clone(),
            username,
            created_ms: now_ms(),
            last_seen: None,
        };
        self.cluster
            .write(&user_id, Command::EnsureUser { user: user.clone() })
            .await?;
        Ok(user)
    }

    /// `POST /v1/sessions`.
    pub async fn login(
        &self,
        username: &str,
        password: &str,
        device_name: Option<String>,
        device_id: Option<String>,
    ) -> Result<NewSession, ApiError> {
        let bad = || ApiError::new(ErrorCode::Unauthorized, "wrong username or password");
        let username = validate::username(username).map_err(|_| bad())?;
        validate::password(password).map_err(|_| bad())?;
        if let Some(name) = &device_name {
            if name.chars().count() > 200 {
                return Err(ApiError::invalid("device_name must be at most 200 characters"));
            }
            validate::shown_text("device_name", name)?;
        }
        if let Some(d) = &device_id {
            validate::id("device_id", d)?;
        }
        let Some(claim) = self.cluster.get_username(&username).await? else {
            self.hasher.verify_nobody(password.to_string()).await?;
            return Err(bad());
        };
        if !self
            .hasher
            .verify(password.to_string(), claim.password_hash.clone())
            .await?
        {
            return Err(bad());
        }
        let user_id = claim.user_id;
        if self.cluster.get_user(&user_id).await?.is_none() {
            // Sign-up stopped between its two writes: finish it now.
            let user = UserRecord {
                user_id: user_id.clone(),
                username: username.clone(),
                created_ms: now_ms(),
                last_seen: None,
            };
            self.cluster.write(&user_id, Command::EnsureUser { user }).await?;
        }
        let device_id = match device_id {
            Some(d) => {
                if self.cluster.get_device(&user_id, &d).await?.is_none() {
                    return Err(ApiError::not_found("no such device for this user"));
                }
                d
            }
            None => {
                let device_id = new_id("dv_");
                let mut cursors = Vec::new();
                for (cid, _) in self.cluster.get_user_channels(&user_id).await? {
                    if let Some(c) = self.cluster.get_channel(&cid).await? {
                        cursors.push((cid, c.last_seq));
                    }
                }
                let cmd = Command::CreateDevice {
                    user_id: user_id.clone(),
                    device: DeviceRecord {
                        device_id: device_id.clone(),
                        name: device_name,
                        created_ms: now_ms(),
                        push: None,
                    },
                    cursors,
                };
                self.cluster.write(&user_id, cmd).await?;
                device_id
            }
        };
        let token = new_token();
        let hash = token_hash(&token);
        let cmd = Command::CreateSession {
            token_hash: hash.clone(),
            session: SessionRecord {
                user_id: user_id.clone(),
                device_id: device_id.clone(),
                created_ms: now_ms(),
            },
        };
        self.cluster.write(&hash, cmd).await?;
        Ok(NewSession {
            token,
            user_id,
            device_id,
        })
    }

    /// Resolves a bearer token to its session.
    pub async fn authenticate(&self, token: &str) -> Result<AuthContext, ApiError> {
        let token = crate::bearer_token::checked(token).ok_or_else(ApiError::unauthorized)?;
        let hash = token_hash(token);
        match self.cluster.get_session(&hash).await? {
            Some(s) => Ok(AuthContext {
                user_id: s.user_id,
                device_id: s.device_id,
                token_hash: hash,
            }),
            None => Err(ApiError::unauthorized()),
        }
    }

    /// `DELETE /v1/sessions/current`: revokes the token and closes its sockets.
    pub async fn logout(&self, auth: &AuthContext) -> Result<(), ApiError> {
        self.cluster
            .write(
                &auth.token_hash,
                Command::DeleteSession {
                    token_hash: auth.token_hash.clone(),
                },
            )
            .await?;
        let session = RevokedSession {
            user_id: auth.user_id.clone(),
            token_hash: auth.token_hash.clone(),
        };
        self.fanout.revoke_session_everywhere(session, LOGOUT_WAIT).await;
        Ok(())
    }

    /// `GET /v1/users/by-name/{username}`.
    pub async fn user_by_name(&self, name: &str) -> Result<UserRecord, ApiError> {
        let name = validate::username(name).map_err(|_| ApiError::not_found("no such user"))?;
        let claim = self
            .cluster
            .get_username(&name)
            .await?
            .ok_or_else(|| ApiError::not_found("no such user"))?;
        Ok(self.cluster.get_user(&claim.user_id).await?.unwrap_or(UserRecord {
            user_id: claim.user_id,
            username: name,
            created_ms: 0,
            last_seen: None,
        }))
    }

    async fn require_user(&self, user_id: &str) -> Result<UserRecord, ApiError> {
        validate::id("user_id", user_id)?;
        self.cluster
            .get_user(user_id)
            .await?
            .ok_or_else(|| ApiError::not_found(format!("no such user: {user_id}")))
    }

    /// A channel the caller is a member of; 403 otherwise, whether or not it exists
    /// (PROTOCOL v1.1: outsiders cannot learn which channels, e.g. which DMs, exist).
    pub async fn member_channel(&self, auth: &AuthContext, channel_id: &str) -> Result<ChannelRecord, ApiError> {
        validate::id("channel_id", channel_id)?;
        match self.cluster.get_channel(channel_id).await? {
            Some(channel) if channel.members.contains(&auth.user_id) => Ok(channel),
            _ => Err(ApiError::forbidden("not a member of this channel")),
        }
    }

    /// Links members to the channel in their home partitions (idempotent, retried by callers).
    async fn link(&self, users: &[String], channel: &ChannelRecord, join_seq: u64) -> Result<(), ApiError> {
        for u in users {
            let cmd = Command::LinkUserChannel {
                user_id: u.clone(),
                channel_id: channel.channel_id.clone(),
                join_seq,
            };
            self.cluster.write(u, cmd).await?;
        }
        Ok(())
    }

    fn channel_event(&self, users: &[String], event: &str, channel: &ChannelRecord) {
        let frame = frames::text(&json!({"type": "channel", "event": event, "channel": frames::summary(channel)}));
        self.fanout.send_to_users(users, &frame, None);
    }

    /// `POST /v1/dms`.
    pub async fn open_dm(&self, auth: &AuthContext, other: &str) -> Result<ChannelRecord, ApiError> {
        self.require_user(other).await?;
        if other == auth.user_id {
            return Err(ApiError::invalid("cannot open a DM with yourself"));
        }
        let channel_id = self.dm_id(&auth.user_id, other).await?;
        let channel = ChannelRecord {
            channel_id: channel_id.clone(),
            kind: ChannelKind::Dm,
            name: None,
            creator: auth.user_id.clone(),
            members: vec![auth.user_id.clone(), other.to_string()],
            last_seq: 0,
            created_ms: now_ms(),
            last_ts: 0,
        };
        let cmd = Command::CreateChannel {
            channel,
            max_members: 2,
        };
        let Response::Channel { channel, changed } = self.cluster.write(&channel_id, cmd).await? else {
            return Err(ApiError::internal("unexpected response to CreateChannel"));
        };
        // Linking again on every call repairs a link lost to a crash between the two writes.
        self.link(&channel.members, &channel, 0).await?;
        if changed {
            self.channel_event(&channel.members, "joined", &channel);
        }
        Ok(channel)
    }

    /// The pair's DM id: the one it was opened with before keyed ids if that DM exists, else
    /// the keyed id.
    async fn dm_id(&self, a: &str, b: &str) -> Result<String, ApiError> {
        let legacy = legacy_dm_channel_id(a, b);
        if let Some(c) = self.cluster.get_channel(&legacy).await? {
            if c.kind == ChannelKind::Dm && c.members.iter().any(|m| m == a) && c.members.iter().any(|m| m == b) {
                return Ok(legacy);
            }
        }
        let key = self
            .dm_id_key
            .get_or_try_init(|| async {
                let cmd = Command::EnsureDmIdKey { key: new_dm_id_key() };
                match self
                    .cluster
                    .write(ringchat_cluster::command::DM_ID_KEY_ROUTE, cmd)
                    .await?
                {
                    Response::Key(key) => Ok(key),
                    _ => Err(ApiError::internal("unexpected response to EnsureDmIdKey")),
                }
            })
            .await?;
        Ok(dm_channel_id(key, a, b))
    }

    /// `POST /v1/groups`.
    pub async fn create_group(
        &self,
        auth: &AuthContext,
        name: &str,
        members: &[String],
    ) -> Result<ChannelRecord, ApiError> {
        let name = validate::group_name(name)?;
        let mut all = vec![auth.user_id.clone()];
        let mut seen: HashSet<&str> = HashSet::from([auth.user_id.as_str()]);
        for m in members {
            validate::id("member", m)?;
            if seen.insert(m.as_str()) {
                all.push(m.clone());
            }
        }
        if all.len() > self.max_group_members {
            return Err(ApiError::new(
                ErrorCode::GroupFull,
                format!("a group has at most {} members", self.max_group_members),
            ));
        }
        for m in &all[1..] {
            self.require_user(m).await?;
        }
        let channel_id = new_id("g_");
        let channel = ChannelRecord {
            channel_id: channel_id.clone(),
            kind: ChannelKind::Group,
            name: Some(name),
            creator: auth.user_id.clone(),
            members: all,
            last_seq: 0,
            created_ms: now_ms(),
            last_ts: 0,
        };
        let cmd = Command::CreateChannel {
            channel,
            max_members: self.max_group_members,
        };
        let Response::Channel { channel, .. } = self.cluster.write(&channel_id, cmd).await? else {
            return Err(ApiError::internal("unexpected response to CreateChannel"));
        };
        self.link(&channel.members, &channel, 0).await?;
        self.channel_event(&channel.members, "joined", &channel);
        Ok(channel)
    }

    /// `POST /v1/channels/{cid}/members`.
    pub async fn add_member(&self, auth: &AuthContext, channel_id: &str, user_id: &str) -> Result<(), ApiError> {
        validate::id("channel_id", channel_id)?;
        self.require_user(user_id).await?;
        let cmd = Command::AddMember {
            channel_id: channel_id.to_string(),
            actor: auth.user_id.clone(),
            user_id: user_id.to_string(),
            max_members: self.max_group_members,
        };
        let Response::Channel { channel, changed } = self.cluster.write(channel_id, cmd).await? else {
            return Err(ApiError::internal("unexpected response to AddMember"));
        };
        let newcomer = [user_id.to_string()];
        self.link(&newcomer, &channel, channel.last_seq).await?;
        if changed {
            self.channel_event(&newcomer, "joined", &channel);
            let others: Vec<String> = channel.members.iter().filter(|m| *m != user_id).cloned().collect();
            self.channel_event(&others, "updated", &channel);
        }
        Ok(())
    }

    /// `DELETE /v1/channels/{cid}/members/{uid}`.
    pub async fn remove_member(&self, auth: &AuthContext, channel_id: &str, user_id: &str) -> Result<(), ApiError> {
        validate::id("channel_id", channel_id)?;
        validate::id("user_id", user_id)?;
        let cmd = Command::RemoveMember {
            channel_id: channel_id.to_string(),
            actor: auth.user_id.clone(),
            user_id: user_id.to_string(),
        };
        let Response::Channel { channel, .. } = self.cluster.write(channel_id, cmd).await? else {
            return Err(ApiError::internal("unexpected response to RemoveMember"));
        };
        self.cluster
            .write(
                user_id,
                Command::UnlinkUserChannel {
                    user_id: user_id.to_string(),
                    channel_id: channel_id.to_string(),
                },
            )
            .await?;
        self.channel_event(&[user_id.to_string()], "left", &channel);
        self.channel_event(&channel.members, "updated", &channel);
        Ok(())
    }

    /// The user's channels with the seq each was joined at (membership verified against the
    /// channel record, which is the source of truth).
    pub async fn channels_with_join(&self, user_id: &str) -> Result<Vec<(ChannelRecord, u64)>, ApiError> {
        let mut out = Vec::new();
        for (cid, join_seq) in self.cluster.get_user_channels(user_id).await? {
            if let Some(c) = self.cluster.get_channel(&cid).await? {
                if c.members.iter().any(|m| m == user_id) {
                    out.push((c, join_seq));
                }
            }
        }
        Ok(out)
    }

    /// `GET /v1/channels`.
    pub async fn list_channels(&self, auth: &AuthContext) -> Result<Vec<ChannelRecord>, ApiError> {
        Ok(self
            .channels_with_join(&auth.user_id)
            .await?
            .into_iter()
            .map(|(c, _)| c)
            .collect())
    }

    /// Sends a message: validates, commits durably, fans out, queues push. Returns the message
    /// and whether it was a retry of an earlier `client_msg_id`.
    pub async fn send_message(
        &self,
        auth: &AuthContext,
        channel_id: &str,
        text: &str,
        client_msg_id: Option<String>,
    ) -> Result<(MessageRecord, bool), ApiError> {
        validate::id("channel_id", channel_id)?;
        validate::text(text)?;
        if let Some(c) = &client_msg_id {
            validate::id("client_msg_id", c)?;
        }
        let cmd = Command::SendMessage {
            channel_id: channel_id.to_string(),
            sender_id: auth.user_id.clone(),
            text: text.to_string(),
            client_msg_id,
            ts: now_ms(),
            push: self.push_enabled,
        };
        let resp = self
            .cluster
            .write(channel_id, cmd)
            .await
            .map_err(|e| match ApiError::from(e) {
                e if e.code == ErrorCode::Forbidden => ApiError::forbidden("not a member of this channel"),
                e => e,
            })?;
        // The partition's leader delivers the message to every member and starts the pushes
        // (`commit_delivery.rs`); this node only answers with the message's position.
        let Response::Sent { message, duplicate, .. } = resp else {
            return Err(ApiError::internal("unexpected response to SendMessage"));
        };
        Ok((message, duplicate))
    }

    /// History page, exactly as PROTOCOL §2: `after` pages forward (seq > after), `before`
    /// returns the newest below it, neither returns the newest; both bound the range (after, before).
    pub async fn history(
        &self,
        auth: &AuthContext,
        channel_id: &str,
        before: Option<u64>,
        after: Option<u64>,
        limit: Option<u64>,
    ) -> Result<HistoryPage, ApiError> {
        let limit = u64::from(validate::limit(limit)?);
        let channel = self.member_channel(auth, channel_id).await?;
        let last = channel.last_seq;
        let upper = match before {
            Some(b) => b.saturating_sub(1).min(last),
            None => last,
        };
        let (lo, hi, has_more) = match after {
            Some(a) => {
                let lo = a.saturating_add(1);
                let hi = upper.min(lo.saturating_add(limit - 1));
                (lo, hi, hi < upper)
            }
            None => {
                let lo = upper.saturating_sub(limit - 1).max(1);
                (lo, upper, lo > 1)
            }
        };
        let messages = if lo > hi || hi == 0 {
            Vec::new()
        } else {
            self.cluster.get_messages(channel_id, lo, hi).await?
        };
        let has_more = has_more && !messages.is_empty();
        Ok(HistoryPage { messages, has_more })
    }

    /// The set of users sharing at least one channel with `user_id` is checked lazily: true if
    /// `other` is `user_id` or a member of one of `my_channels`.
    pub async fn shares_channel(&self, my_channels: &HashSet<String>, me: &str, other: &str) -> Result<bool, ApiError> {
        if me == other {
            return Ok(true);
        }
        for (cid, _) in self.cluster.get_user_channels(other).await? {
            if my_channels.contains(&cid) {
                if let Some(c) = self.cluster.get_channel(&cid).await? {
                    if c.members.iter().any(|m| m == me) && c.members.iter().any(|m| m == other) {
                        return Ok(true);
                    }
                }
            }
        }
        Ok(false)
    }

    /// Presence of `user_id`, as seen by this node.
    pub async fn presence_of(&self, user_id: &str) -> Result<PresenceState, ApiError> {
        let user = self.require_user(user_id).await?;
        Ok(PresenceState {
            online: self.registry.is_online(user_id),
            last_seen: user.last_seen,
            user_id: user.user_id,
        })
    }

    /// Ids of the channels `user_id` is linked to (for `shares_channel`).
    pub async fn channel_ids(&self, user_id: &str) -> Result<HashSet<String>, ApiError> {
        Ok(self
            .cluster
            .get_user_channels(user_id)
            .await?
            .into_iter()
            .map(|(c, _)| c)
            .collect())
    }

    /// `GET /v1/users/{uid}/presence`.
    pub async fn presence(&self, auth: &AuthContext, user_id: &str) -> Result<PresenceState, ApiError> {
        let state = self.presence_of(user_id).await?;
        let mine = self.channel_ids(&auth.user_id).await?;
        if !self.shares_channel(&mine, &auth.user_id, user_id).await? {
            return Err(ApiError::forbidden("you share no channel with this user"));
        }
        Ok(state)
    }

    /// `PUT /v1/devices/current/push`.
    pub async fn register_push(&self, auth: &AuthContext, platform: &str, token: &str) -> Result<(), ApiError> {
        if !matches!(platform, "apns" | "fcm" | "webpush" | "test") {
            return Err(ApiError::invalid("platform must be apns, fcm, webpush or test"));
        }
        if token.is_empty() || token.len() > 4096 {
            return Err(ApiError::invalid("token must be 1-4096 bytes"));
        }
        let cmd = Command::SetPush {
            user_id: auth.user_id.clone(),
            device_id: auth.device_id.clone(),
            push: PushTarget {
                platform: platform.to_string(),
                token: token.to_string(),
            },
        };
        self.cluster.write(&auth.user_id, cmd).await?;
        Ok(())
    }

    /// WS `ack`: moves this device's cursor forward (never back, never past `last_seq`).
    pub async fn ack(&self, auth: &AuthContext, channel_id: &str, seq: u64) -> Result<(), ApiError> {
        let channel = self.member_channel(auth, channel_id).await?;
        if seq > channel.last_seq {
            return Err(ApiError::invalid("seq is beyond the channel's last message"));
        }
        let cmd = Command::Ack {
            user_id: auth.user_id.clone(),
            device_id: auth.device_id.clone(),
            channel_id: channel_id.to_string(),
            seq,
        };
        self.cluster.write(&auth.user_id, cmd).await?;
        Ok(())
    }

    /// WS `read`: stores the read marker and tells the members' devices.
    pub async fn read(&self, auth: &AuthContext, channel_id: &str, seq: u64) -> Result<(), ApiError> {
        let channel = self.member_channel(auth, channel_id).await?;
        if seq > channel.last_seq {
            return Err(ApiError::invalid("seq is beyond the channel's last message"));
        }
        let cmd = Command::SetReadMarker {
            channel_id: channel_id.to_string(),
            user_id: auth.user_id.clone(),
            seq,
        };
        let Response::Position(pos) = self.cluster.write(channel_id, cmd).await? else {
            return Err(ApiError::internal("unexpected response to SetReadMarker"));
        };
        let frame =
            frames::text(&json!({"type": "read", "channel_id": channel_id, "user_id": auth.user_id, "seq": pos}));
        self.fanout.send_to_users(&channel.members, &frame, None);
        Ok(())
    }

    /// WS `typing`: tells the other members' devices; not stored.
    pub async fn typing(&self, auth: &AuthContext, channel_id: &str) -> Result<(), ApiError> {
        let channel = self.member_channel(auth, channel_id).await?;
        let frame = frames::text(&json!({"type": "typing", "channel_id": channel_id, "user_id": auth.user_id}));
        self.fanout.send_to_users(&channel.members, &frame, Some(&auth.user_id));
        Ok(())
    }
}

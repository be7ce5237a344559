//! Reads of partition state by id. Each names its `Query` and goes through `Cluster::read`,
//! which answers at the partition's leader: from this node's store when it leads (or runs
//! alone), otherwise forwarded (`router.rs`). A write returns only after the leader applied it,
//! so a read that follows an acknowledged write sees it.

use std::collections::HashMap;

use crate::cluster::Cluster;
use crate::error::ClusterError;
use crate::model::*;
use crate::query::{Query, QueryResult};

/// The error for an answer of the wrong kind (a peer running incompatible code).
fn mismatch(wanted: &str, got: &QueryResult) -> ClusterError {
    ClusterError::Internal(format!("expected a {wanted} answer, got {}", got.kind()))
}

impl Cluster {
    /// A user by id.
    pub async fn get_user(&self, user_id: &str) -> Result<Option<UserRecord>, ClusterError> {
        let query = Query::User {
            user_id: user_id.to_string(),
        };
        match self.read(self.partition_of(user_id), query).await? {
            QueryResult::User(user) => Ok(user),
            other => Err(mismatch("User", &other)),
        }
    }

    /// A username claim (with the credential).
    pub async fn get_username(&self, username: &str) -> Result<Option<UsernameRecord>, ClusterError> {
        let query = Query::Username {
            username: username.to_string(),
        };
        match self.read(self.partition_of(username), query).await? {
            QueryResult::Username(claim) => Ok(claim),
            other => Err(mismatch("Username", &other)),
        }
    }

    /// A session by token hash.
    pub async fn get_session(&self, token_hash: &str) -> Result<Option<SessionRecord>, ClusterError> {
        let query = Query::Session {
            token_hash: token_hash.to_string(),
        };
        match self.read(self.partition_of(token_hash), query).await? {
            QueryResult::Session(session) => Ok(session),
            other => Err(mismatch("Session", &other)),
        }
    }

    /// A user's devices.
    pub async fn get_devices(&self, user_id: &str) -> Result<Vec<DeviceRecord>, ClusterError> {
        let query = Query::Devices {
            user_id: user_id.to_string(),
        };
        match self.read(self.partition_of(user_id), query).await? {
            QueryResult::Devices(devices) => Ok(devices),
            other => Err(mismatch("Devices", &other)),
        }
    }

    /// One device of a user.
    pub async fn get_device(&self, user_id: &str, device_id: &str) -> Result<Option<DeviceRecord>, ClusterError> {
        let query = Query::Device {
            user_id: user_id.to_string(),
            device_id: device_id.to_string(),
        };
        match self.read(self.partition_of(user_id), query).await? {
            QueryResult::Device(device) => Ok(device),
            other => Err(mismatch("Device", &other)),
        }
    }

    /// A device's stored cursors by channel.
    pub async fn get_cursors(&self, user_id: &str, device_id: &str) -> Result<HashMap<String, u64>, ClusterError> {
        let query = Query::Cursors {
            user_id: user_id.to_string(),
            device_id: device_id.to_string(),
        };
        match self.read(self.partition_of(user_id), query).await? {
            QueryResult::Cursors(cursors) => Ok(cursors),
            other => Err(mismatch("Cursors", &other)),
        }
    }

    /// The channels a user is in, with the seq they joined at.
    pub async fn get_user_channels(&self, user_id: &str) -> Result<Vec<(String, u64)>, ClusterError> {
        let query = Query::UserChannels {
            user_id: user_id.to_string(),
        };
        match self.read(self.partition_of(user_id), query).await? {
            QueryResult::UserChannels(channels) => Ok(channels),
            other => Err(mismatch("UserChannels", &other)),
        }
    }

    /// A channel.
    pub async fn get_channel(&self, channel_id: &str) -> Result<Option<ChannelRecord>, ClusterError> {
        let query = Query::Channel {
            channel_id: channel_id.to_string(),
        };
        match self.read(self.partition_of(channel_id), query).await? {
            QueryResult::Channel(channel) => Ok(channel),
            other => Err(mismatch("Channel", &other)),
        }
    }

    /// A user's read marker in a channel.
    pub async fn get_read_marker(&self, channel_id: &str, user_id: &str) -> Result<u64, ClusterError> {
        let query = Query::ReadMarker {
            channel_id: channel_id.to_string(),
            user_id: user_id.to_string(),
        };
        match self.read(self.partition_of(channel_id), query).await? {
            QueryResult::ReadMarker(seq) => Ok(seq),
            other => Err(mismatch("ReadMarker", &other)),
        }
    }

    /// Messages `from..=to` of a channel, ascending (a page: callers bound the range).
    ///
    /// Committed messages never change, so the local message cache answers what it can (on
    /// any node) and only the rest is read at the leader; what comes back is cached here.
    pub async fn get_messages(&self, channel_id: &str, from: u64, to: u64) -> Result<Vec<MessageRecord>, ClusterError> {
        if from > to {
            return Ok(Vec::new());
        }
        let wanted = to.saturating_sub(from).saturating_add(1);
        let mut out = Vec::with_capacity(wanted.min(1000) as usize);
        for seq in from..=to {
            match self.cache.get(channel_id, seq).await {
                Some(m) => out.push(m),
                None => break,
            }
        }
        if out.len() as u64 == wanted {
            return Ok(out);
        }
        let query = Query::Messages {
            channel_id: channel_id.to_string(),
            from: from + out.len() as u64,
            to,
        };
        match self.read(self.partition_of(channel_id), query).await? {
            QueryResult::Messages(messages) => {
                for m in &messages {
                    self.cache.insert(m);
                }
                out.extend(messages);
                Ok(out)
            }
            other => Err(mismatch("Messages", &other)),
        }
    }

    /// Every pending push outbox entry of every partition this node leads (each leader sends
    /// its partitions' pushes, so no push goes out twice). A single node leads every partition
    /// it has, and reads them all as before.
    pub async fn pending_pushes(&self) -> Result<Vec<PushOutboxRecord>, ClusterError> {
        let mut out = Vec::new();
        for p in 0..self.partitions() {
            if !self.leads_or_runs_alone(p) {
                continue;
            }
            match self.read(p, Query::PushOutbox).await {
                Ok(QueryResult::PushOutbox(records)) => out.extend(records),
                Ok(other) => return Err(mismatch("PushOutbox", &other)),
                Err(e) => return Err(e),
            }
        }
        Ok(out)
    }
}

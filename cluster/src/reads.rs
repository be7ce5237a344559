//! Reads of partition state. Today they read this node's replica directly (it is every
//! partition's only voter, and a write returns only after it is applied here, so reads see
//! every acknowledged write); in a cluster they go to the partition leader.

use std::collections::HashMap;

use ringchat_storage::{decode_record, KeyReader, StorageError};
use serde::de::DeserializeOwned;

use crate::cluster::Cluster;
use crate::error::ClusterError;
use crate::model::*;
use crate::partition::tables as t;

impl Cluster {
    fn get<T: DeserializeOwned>(&self, key: Vec<u8>) -> Result<Option<T>, ClusterError> {
        match self.store.sm.get(key).map_err(StorageError::from)? {
            Some(v) => Ok(Some(decode_record(&v)?)),
            None => Ok(None),
        }
    }

    /// Scans `prefix`, decoding each value with the key reader positioned after the prefix.
    fn scan<T: DeserializeOwned>(&self, prefix: Vec<u8>, skip: usize) -> Result<Vec<(Vec<String>, T)>, ClusterError> {
        let mut out = Vec::new();
        for item in self.store.sm.prefix(&prefix) {
            let (k, v) = item.into_inner().map_err(StorageError::from)?;
            let mut r = KeyReader::after_header(&k).ok_or_else(|| StorageError::Corrupt("short key".into()))?;
            let mut parts = Vec::new();
            while !r.is_empty() {
                match r.str() {
                    Some(s) => parts.push(s.to_string()),
                    None => return Err(StorageError::Corrupt("bad key".into()).into()),
                }
            }
            out.push((parts.split_off(skip.min(parts.len())), decode_record(&v)?));
        }
        Ok(out)
    }

    /// A user by id.
    pub async fn get_user(&self, user_id: &str) -> Result<Option<UserRecord>, ClusterError> {
        self.get(t::user(self.partition_of(user_id), user_id))
    }

    /// A username claim (with the credential).
    pub async fn get_username(&self, username: &str) -> Result<Option<UsernameRecord>, ClusterError> {
        self.get(t::username(self.partition_of(username), username))
    }

    /// A session by token hash.
    pub async fn get_session(&self, token_hash: &str) -> Result<Option<SessionRecord>, ClusterError> {
        self.get(t::session(self.partition_of(token_hash), token_hash))
    }

    /// A user's devices.
    pub async fn get_devices(&self, user_id: &str) -> Result<Vec<DeviceRecord>, ClusterError> {
        let p = self.partition_of(user_id);
        Ok(self
            .scan::<DeviceRecord>(t::devices(p, user_id), 1)?
            .into_iter()
            .map(|(_, d)| d)
            .collect())
    }

    /// One device of a user.
    pub async fn get_device(&self, user_id: &str, device_id: &str) -> Result<Option<DeviceRecord>, ClusterError> {
        self.get(t::device(self.partition_of(user_id), user_id, device_id))
    }

    /// A device's stored cursors by channel.
    pub async fn get_cursors(&self, user_id: &str, device_id: &str) -> Result<HashMap<String, u64>, ClusterError> {
        let p = self.partition_of(user_id);
        Ok(self
            .scan::<u64>(t::cursors(p, user_id, device_id), 2)?
            .into_iter()
            .filter_map(|(mut k, v)| k.pop().map(|c| (c, v)))
            .collect())
    }

    /// The channels a user is in, with the seq they joined at.
    pub async fn get_user_channels(&self, user_id: &str) -> Result<Vec<(String, u64)>, ClusterError> {
        let p = self.partition_of(user_id);
        Ok(self
            .scan::<UserChannelRecord>(t::user_channels(p, user_id), 1)?
            .into_iter()
            .filter_map(|(mut k, v)| k.pop().map(|c| (c, v.join_seq)))
            .collect())
    }

    /// A channel.
    pub async fn get_channel(&self, channel_id: &str) -> Result<Option<ChannelRecord>, ClusterError> {
        self.get(t::channel(self.partition_of(channel_id), channel_id))
    }

    /// A user's read marker in a channel.
    pub async fn get_read_marker(&self, channel_id: &str, user_id: &str) -> Result<u64, ClusterError> {
        Ok(self
            .get(t::read_marker(self.partition_of(channel_id), channel_id, user_id))?
            .unwrap_or(0))
    }

    /// Messages `from..=to` of a channel, ascending (a page: callers bound the range).
    pub async fn get_messages(&self, channel_id: &str, from: u64, to: u64) -> Result<Vec<MessageRecord>, ClusterError> {
        if from > to {
            return Ok(Vec::new());
        }
        let mut out = Vec::with_capacity((to - from + 1).min(1000) as usize);
        for seq in from..=to {
            match self.cache.get(channel_id, seq).await {
                Some(m) => out.push(m),
                None => break,
            }
        }
        if out.len() as u64 == to - from + 1 {
            return Ok(out);
        }
        let start = from + out.len() as u64;
        let p = self.partition_of(channel_id);
        for item in self
            .store
            .sm
            .range(t::message(p, channel_id, start)..=t::message(p, channel_id, to))
        {
            let (_, v) = item.into_inner().map_err(StorageError::from)?;
            let m: MessageRecord = decode_record(&v)?;
            self.cache.insert(&m);
            out.push(m);
        }
        Ok(out)
    }

    /// Every pending push outbox entry of every partition this node leads.
    pub async fn pending_pushes(&self) -> Result<Vec<PushOutboxRecord>, ClusterError> {
        let mut out = Vec::new();
        for p in 0..self.partitions() {
            for item in self.store.sm.prefix(t::push_outbox_all(p)) {
                let (_, v) = item.into_inner().map_err(StorageError::from)?;
                out.push(decode_record(&v)?);
            }
        }
        Ok(out)
    }
}
